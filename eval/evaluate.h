/* eval/evaluate.h — the evaluation suites of a trained AnyRef run on
 * referring data (data.kind = sources): `anyref eval`, and the per-set pass
 * it is built on (SPEC 4: the numbers papers report).
 *
 * PER SET AND SPLIT (eval_set), every sample in order (a REFER segmentation
 * set with every sentence of every ref as its own sample, as LISA's
 * validation counts them: eval_opts.every_sentence, set by the command):
 *   1. The answer is GENERATED from the prompt (model/generate.h: greedy by
 *      default, beam search or sampling, KV cache, stop at </s>, at most
 *      max_new tokens), for a batch of samples at once.
 *   2. Masks: the generated sequence runs through the model once more, the
 *      generated answer as the span the [SEG] refocusing reads (model/
 *      anyref.h), and the j-th generated [SEG] of a sample gives the
 *      prediction for its j-th ground-truth mask: post-processed logits > 0
 *      at the ground truth's size. A ground-truth mask without a generated
 *      [SEG] is scored as the empty prediction (counted as "missing"); [SEG]s
 *      beyond the ground-truth masks are counted ("extra") and not scored.
 *      With eval_opts.teacher the ground-truth answer is fed instead and its
 *      [SEG]s give the masks (LISA's validation loop; the answer is still
 *      generated for the text metrics).
 *   3. Referring segmentation, per reference type (text, box, image, audio):
 *        gIoU = mean per-mask IoU (both empty: 1), cIoU = Σ I / Σ U,
 *      beside the same two for the empty mask and the whole image.
 *   4. AVSBench sets (eval_opts.avs): the frames of one video (ldr_item.group,
 *      consecutive in validation order) make one batch of
 *      eval/avs_metrics.h: J (mask_iou) and F (beta^2 0.3, 255 thresholds),
 *      averaged over videos as the AVSBench test script does. A frame
 *      without a generated [SEG] gets logits of -1e4 everywhere
 *      (probability 0).
 *   5. Region captioning (samples without a mask): the generated text
 *      (without </s> and [SEG]) against every reference text of its group
 *      (the ref's sentences; data/loader.h ldr_group_texts): BLEU-1..4 and
 *      CIDEr-D as coco-caption (eval/caption_metrics.h, PTB tokenisation,
 *      df from the split's references), METEOR APPROXIMATED
 *      (eval/meteor.h: exact + stem + WordNet synonyms, no paraphrase
 *      table) when eval_opts.meteor is set, and the exact token match of
 *      the ground-truth answer.
 * SEVERAL RANKS (core/dist.h, `make MPI=1` under mpirun): eval_set is then a
 * collective; rank k evaluates batches k, k + N, ... of B consecutive rows,
 * rank 0 gathers the per-sample records after each round and scores them in
 * sample order, so its eval_result and callbacks are exactly one process's
 * (the other ranks' eval_result is not meaningful; eval_main writes on rank 0
 * only).
 * Depends on train/run.h, model/anyref.h, model/generate.h, data/loader.h,
 * eval/avs_metrics.h, eval/caption_metrics.h, eval/meteor.h, core/dist.h. */
#ifndef ANYREF_TRAIN_EVALUATE_H
#define ANYREF_TRAIN_EVALUATE_H
#include "train/run.h"
#include "model/generate.h"
#include "eval/avs_metrics.h"
#include "eval/caption_metrics.h"

enum { EVAL_REF_TEXT, EVAL_REF_BOX, EVAL_REF_IMAGE, EVAL_REF_AUDIO, EVAL_REFS };

typedef struct {
    long masks;
    double iou, inter, uni;            /* model */
    double e_iou, e_inter, e_uni;      /* empty mask */
    double w_iou, w_inter, w_uni;      /* whole image */
} eval_cell;

/* One prediction against its ground truth: logits x > 0 (x NULL: the empty
 * mask) against y (0/1 floats, > 0.5 is in), n pixels, into cell c (and the
 * empty / whole-image baselines); pred and gt (may be NULL) receive the 0/1
 * bytes. Returns the IoU (both empty: 1). */
double eval_cell_add(eval_cell *c, const float *x, const float *y, size_t n, uint8_t *pred, uint8_t *gt);
/* gIoU, cIoU, empty gIoU, empty cIoU, whole gIoU, whole cIoU of c (a cIoU
 * with no union at all: 1; NaN without masks). */
void eval_cell_means(const eval_cell *c, double out[6]);

struct meteor;

typedef struct {
    long max_samples;                  /* 0: all */
    gen_cfg gen;                       /* decoding; no stop ids: </s> (eval_resolve_stops) */
    const char *stop;                  /* more stop tokens, comma-separated pieces (may be NULL) */
    int teacher;                       /* 1: masks from the ground-truth answer's [SEG]s */
    int avs;                           /* 1: AVSBench J / F per video */
    struct meteor *meteor;             /* NULL: no METEOR */
} eval_opts;

typedef struct {
    eval_cell ref[EVAL_REFS];
    long samples, broken;
    long seg_missing;                  /* ground-truth masks without a generated [SEG] */
    long seg_extra;                    /* generated [SEG]s beyond the ground-truth masks */
    long seg_unasked;                  /* [SEG]s generated in caption answers */
    long gen_tokens;                   /* tokens generated */
    double gen_seconds, seconds;       /* time in generation; the whole pass */
    /* AVSBench */
    avs_meter avs;
    long avs_frames;
    /* captions */
    long captions, caption_exact;
    capm_scores cap;                   /* valid when captions > 0 */
    double meteor;                     /* NaN without METEOR */
    int meteor_wordnet;                /* METEOR used WordNet synonyms */
} eval_result;

/* One evaluated sample, for reports: the loader's record, its n ground-truth
 * masks (h x w each, 0/1 bytes) and the predictions scored against them
 * (0/1 bytes), their IoUs, the generated answer. */
typedef struct {
    const ldr_item *item;
    int n_masks, h, w;
    const uint8_t *const *pred, *const *gt;
    const double *iou;
    int n_seg;                         /* [SEG]s generated */
    const char *generated;
    int exact;                         /* captions: 1 when exact, else -1 */
} eval_example;
typedef int (*eval_example_fn)(void *ctx, const eval_example *ex);

/* Evaluates g (attached to r: grounding_attach) with options o. cb may be
 * NULL; label names the progress bar ("" = none). 0, or -1 + ar_error. */
int eval_set(run_t *r, grounding_dataset *g, const eval_opts *o, const char *label, eval_result *out,
             eval_example_fn cb, void *ctx);

/* The decoding options shared by `anyref eval` and `anyref infer`: when
 * argv[*i] is one of --decode greedy|beam|sample, --beam W, --length-penalty
 * X, --temperature X, --top-p X, --seed N, --max-new N, --no-cache, --stop
 * PIECES (into *stop), consumes it (and its value), updates g and returns 1; 0 when it is not one of them;
 * -1 + ar_error for a bad value. */
int eval_parse_gen_flag(int argc, char **argv, int *i, gen_cfg *g, const char **stop);
/* </s> as the stop id when g has none, then the comma-separated pieces of
 * list (may be NULL) added. 0, or -1 + ar_error naming an unknown piece. */
struct tokenizer;
int eval_resolve_stops(gen_cfg *g, const char *list, const struct tokenizer *tok);
/* The --help lines of those flags. */
extern const char eval_gen_usage[];

/* `anyref eval CONFIG [k=v ...] [--suite NAME] [--checkpoint CKPT] [--splits a,b] ...` */
int eval_main(int argc, char **argv);
#endif
