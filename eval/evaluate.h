/* eval/evaluate.h — evaluation of a trained AnyRef run on referring data
 * (data.kind = sources): `anyref eval`, and the per-set pass it is built on.
 *
 * PER SET (eval_set): every sample of one data set and split in order,
 *   through the run's step as in validation (the ground-truth answer fed in,
 *   as LISA and AnyRef evaluate), each [SEG]'s mask = post-processed logits
 *   > 0 at the ground truth's size. Per reference type (text, box, image,
 *   audio), over the masks:
 *     gIoU = mean per-mask IoU (both empty: 1), cIoU = Σ I / Σ U (SPEC 4),
 *   and the same two for the trivial predictions, the empty mask and the
 *   whole image, beside them. Then the answer is generated greedily from the
 *   prompt (model/anyref.h anyref_generate, at most max_new tokens):
 *   region-captioning samples (no mask) count an exact match when the
 *   generated tokens equal the ground-truth answer's up to and including
 *   </s>; every sample's generated text goes to the example callback.
 * Depends on train/run.h, model/anyref.h, data/loader.h. */
#ifndef ANYREF_TRAIN_EVALUATE_H
#define ANYREF_TRAIN_EVALUATE_H
#include "train/run.h"

enum { EVAL_REF_TEXT, EVAL_REF_BOX, EVAL_REF_IMAGE, EVAL_REF_AUDIO, EVAL_REFS };

typedef struct {
    long masks;
    double iou, inter, uni;            /* model */
    double e_iou, e_inter, e_uni;      /* empty mask */
    double w_iou, w_inter, w_uni;      /* whole image */
} eval_cell;

typedef struct {
    eval_cell ref[EVAL_REFS];
    long samples, broken;
    long captions, caption_exact;
} eval_result;

/* One evaluated sample, for reports: the loader's record, the host masks
 * (h x w, 0/1 bytes; pred NULL without a mask), the generated answer. */
typedef struct {
    const ldr_item *item;
    const uint8_t *pred, *gt;
    int h, w;
    double iou;                        /* NaN without a mask */
    const char *generated;
    int exact;                         /* captions: 1 when exact */
} eval_example;
typedef int (*eval_example_fn)(void *ctx, const eval_example *ex);

/* Evaluates g (attached to r: grounding_attach) over at most max_samples
 * samples (0: all). cb may be NULL. 0, or -1 + ar_error. */
int eval_set(run_t *r, grounding_dataset *g, long max_samples, int max_new, eval_result *out, eval_example_fn cb,
             void *ctx);

/* `anyref eval CONFIG [k=v ...] [--checkpoint CKPT] [--splits a,b] [--samples N] [--examples N]` */
int eval_main(int argc, char **argv);
#endif
