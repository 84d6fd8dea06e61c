/* data/loader.h — the live loader: real referring data sets (REFER joins,
 * AVSBench, custom JSON lines; data/samples.h) turned into training tensors
 * while the trainer runs, by a pool of decode threads with a bounded
 * prefetch queue, several data sets mixed with sampling weights.
 *
 * WHAT ONE SAMPLE BECOMES (ldr_build, ldr_item)
 *   text      the record's question and answer (data/samples.h, seeded per
 *             stream position) through the conversation template
 *             (data/conversation.h) into ids and Hugging Face labels, then
 *             tokens[t] = ids[t] and targets[t] = labels[t + 1] (the next
 *             token's label; -100 = no loss), padded to T with the encoder's
 *             pad id / -100. The conversation is truncated to T as LLaVA
 *             truncates to model_max_length (data/conversation.h: a
 *             truncated sample whose counts then disagree keeps no label and
 *             is broken below). The image placeholder
 *             (sample_options.image_token, "<image>") stays as conv_encoder's
 *             placeholder id -1 (the trainer splices the CLIP tokens there,
 *             model/references.h); without CLIP (clip_S = 0) it is dropped.
 *             "[SEG]", <im_start>, <im_end> and the reference markers are the
 *             tokenizer's added tokens (ldr_markers).
 *   CLIP      clip[3, S, S]: image_clip_preprocess of the decoded image
 *             (clip_crop = 1: CLIPImageProcessor; 0: AnyRef's
 *             clip_resize_wo_crop). Absent when clip_S = 0.
 *   SAM       sam[3, Ss, Ss]: image_sam_preprocess (ResizeLongestSide,
 *             normalise, pad), only for a sample with a mask (a captioning
 *             sample has none and needs no SAM input). Absent when sam_S = 0.
 *   masks     at the original image size (orig_hw), row-major floats 0/1:
 *             REFER: the annotation's RLE; AVSBench: the frame's mask
 *             (avs_load_mask), whose size goes to mask_hw when it differs
 *             from the frame's; custom: cj_record_mask.
 *   reference box: the record's box (x0 y0 x1 y1, original pixels) mapped
 *             into CLIP input pixels: x * S / W, y * S / H without the crop;
 *             with the crop, scaled by the shortest-side resize and shifted
 *             by the crop's offset, then clipped to [0, S] (a box left empty
 *             by the crop breaks the sample).
 *             crop: the crop image file through the CLIP preprocessing.
 *             audio: the WAV's three ImageBind clips (data/fbank.h,
 *             [3, 1, 128, 204]).
 *
 * A SAMPLE IS BROKEN (skipped: counted, and the first LDR_MAX_WARNINGS per
 * loader reported with log_warn naming the data set, record and file) when a
 * file is missing, truncated or undecodable (image, mask, crop, WAV), its
 * image exceeds max_h x max_w, the text has no supervised label after
 * truncation, or the number of [SEG] tokens within T differs from its
 * masks.
 *
 * THE STREAM (training; ldr_next_batch)
 *   Position p of the stream is epoch e = p / E, slot j = p % E, where E
 *   (the epoch size) = epoch_samples, or the sum of the sources' sizes when
 *   0. Source k gets n_k = E * w_k / sum(w) of an epoch's slots (largest
 *   remainders rounded up), placed by a permutation seeded with (seed, e);
 *   source k's r-th slot of epoch e is draw q = e * n_k + r of its own
 *   stream, record perm_k(q / N_k)[q % N_k], a permutation of its N_k
 *   records seeded with (seed, k, q / N_k). So weights decide the mix, every
 *   source is visited in a fresh order each pass over it, and everything is
 *   a pure function of (seed, p): the same seed and cursor give the same
 *   batches, for any thread count, after a restart too.
 *   The cursor is data/token_dataset.h's tds_cursor (epoch, position in the
 *   epoch, skipped; its seed field is not used: cfg.seed is); a batch may
 *   span two epochs.
 * THREADS
 *   threads = 0 builds in the caller. threads >= 1 starts that many decode
 *   threads at ldr_start; they build the positions after the consumer's,
 *   at most `prefetch` samples ahead (a bounded queue of sample slots),
 *   while the caller trains. deterministic = 1 (the default) hands samples
 *   out in stream order, so the batches are exactly those of threads = 0;
 *   deterministic = 0 hands out whichever prefetched sample is ready first
 *   (a slow file does not stall the batch); the same samples are drawn,
 *   only their order within the prefetch window varies, and a resumed run
 *   may repeat up to `prefetch` samples.
 * VALIDATION (ldr_build on the val loader in order: ldr_rows samples, the
 *   sources concatenated, no shuffling, seeded with (seed, i)).
 *
 * Errors: -1 / NULL with ar_error; nothing exits. One consumer thread.
 * Depends on data/samples.h, data/conversation.h, data/image.h, data/rle.h,
 * data/fbank.h, data/wav.h, core/ and pthreads.
 */
#ifndef ANYREF_DATA_LOADER_H
#define ANYREF_DATA_LOADER_H

#include "data/samples.h"
#include "data/token_dataset.h"

#include <stdint.h>

#define LDR_MAX_SOURCES 4
#define LDR_MAX_WARNINGS 10

typedef enum { LDR_REFER, LDR_AVS, LDR_JSONL } ldr_kind;

/* One data set (the strings are copied at ldr_open). */
typedef struct {
    ldr_kind kind;
    const char *root;          /* refer: the REFER root; avs: the AVSBench root */
    const char *dataset;       /* refer: refcoco ...; avs: s4 | ms3 */
    const char *split_by;      /* refer: "" = the set's default */
    const char *split;         /* refer / avs: "" = train; jsonl: "" = every record */
    const char *images;        /* refer: the image root */
    int image_layout;          /* refer: refer_image_layout */
    int caption;               /* refer: 1 = region captioning instead of segmentation */
    const char *file;          /* jsonl */
    double weight;             /* sampling weight (> 0) */
    int every_sentence;        /* refer segmentation, evaluation: one sample per
                                  (ref, sentence) pair, sentences in order, as
                                  LISA's validation counts them (0: one sample
                                  per ref, a seeded sentence) */
} ldr_source;

typedef struct {
    int n_sources;
    ldr_source src[LDR_MAX_SOURCES];
    /* text */
    const char *tokenizer;     /* tokenizer.model / tokenizer.json */
    const char *template_name; /* "llava_v1" */
    const char *add_tokens;    /* comma separated, besides [SEG] and the markers */
    int T;                     /* tokens per sample */
    sample_options so;         /* templates and marker strings (seed: ignored) */
    /* tensors */
    int clip_S, clip_crop;     /* CLIP input side (0: none); 1 = centre crop */
    int sam_S;                 /* SAM input side (0: none) */
    int audio;                 /* 1: build audio references (the model has an audio
                                  encoder); 0: their markers stay plain tokens */
    int max_h, max_w;          /* largest image accepted, which sizes the mask
                                  buffers (0: the largest of the data, ldr_limits;
                                  ldr_start's arguments override both) */
    /* stream */
    uint64_t seed;
    int64_t epoch_samples;     /* 0: the sum of the sources' sizes */
    int threads;               /* decode threads (0: build in the caller) */
    int prefetch;              /* samples built ahead (0: two batches) */
    int deterministic;
    int shuffle;               /* 0: the validation order (concatenated, in order) */
} ldr_cfg;

/* Defaults: llava_v1, T 512, sample_options_default, no CLIP / SAM /
 * audio, 2 threads, prefetch two batches, deterministic, shuffled. */
void ldr_cfg_default(ldr_cfg *c);

/* The token ids of the markers (-1 when unused); image is the placeholder's -1. */
typedef struct {
    int seg, image, im_start, im_end, ref_start, ref_end, audio_start, audio_end;
} ldr_markers;

/* One built sample (buffers owned by the loader). */
typedef struct {
    int *tokens, *targets;     /* [T] */
    float *clip;               /* [3 S S] or NULL */
    float *sam;                /* [3 Ss Ss] or NULL (no mask, or sam_S = 0) */
    int orig_hw[2], mask_hw[2];/* mask_hw (0, 0) = the original size */
    int n_masks;
    float *masks;              /* [n_masks, h, w] (h, w = mask_hw or orig_hw) */
    int ref_kind;              /* GDS_REF_* of data/grounding_dataset.h (-1: none / text) */
    float ref_box[4];          /* GDS_REF_BOX: CLIP input pixels */
    float *ref_data;           /* GDS_REF_CROP: [3 S S]; GDS_REF_AUDIO: [3 128 204] */
    int source;                /* index into cfg.src */
    size_t record;             /* the source's sample index */
    int64_t position;          /* stream position (training) or row (validation) */
    /* what the sample was built from (reports, evaluation grids; truncated to fit) */
    char image[1024];          /* the image file */
    char ref_path[1024];       /* the crop / audio reference file, or "" */
    char question[512], answer[512];
    int ref;                   /* sample_ref of data/samples.h */
    double box[4];             /* the box reference in original pixels (x0 y0 x1 y1) */
    /* grouping, for evaluation: group = the ref (refer), the video (AVSBench:
       its record; part = the frame 0..4) or the record (jsonl); part = the
       sentence with every_sentence, else 0. image_id: the COCO image id
       (refer), else -1. */
    int64_t group, image_id;
    int part;
} ldr_item;

typedef struct ldr ldr;

/* Loads every source (their indexes; no image is decoded), the tokenizer and
 * its added tokens. NULL + ar_error naming the source ("source2: ..."). */
ldr *ldr_open(const ldr_cfg *cfg);
void ldr_free(ldr *l);   /* stops the threads; NULL ok */

int64_t ldr_rows(const ldr *l);           /* training: the epoch size; validation: the samples */
int64_t ldr_source_size(const ldr *l, int k);
const char *ldr_source_name(const ldr *l, int k);   /* "refcoco/train", "s4/train", "data.jsonl" */
/* The reference texts of group g of source k (ldr_item.group), for caption
 * metrics: every sentence of the ref (refer), the record's answer (jsonl);
 * up to max pointers into the loader's memory go to out. Returns how many
 * (0 for AVSBench or a bad index). */
int ldr_group_texts(const ldr *l, int k, int64_t g, const char **out, int max);
int ldr_vocab(const ldr *l);               /* the tokenizer's size with the added tokens */
int ldr_pad_id(const ldr *l);
void ldr_get_markers(const ldr *l, ldr_markers *out);
int ldr_fbank_hw(int *h, int *w);         /* the audio input's (128, 204); returns 3 clips */
int ldr_cfg_T(const ldr *l);               /* tokens per sample */
void ldr_input_sides(const ldr *l, int *clip_S, int *sam_S);
int ldr_has_audio(const ldr *l);           /* cfg.audio */
struct tokenizer;
struct tokenizer *ldr_tokenizer(const ldr *l);   /* with the added tokens; owned by the loader */
/* The largest image side over every record (from the annotations or file
 * headers; an unreadable header is skipped here and breaks its sample later):
 * *h, *w; *masks = the most masks of one sample (1). */
void ldr_limits(const ldr *l, int *h, int *w, int *masks);

/* A caller's check of a built sample (the trainer: every [SEG] still within
 * its length after splicing): 0 keep, 1 broken (ar_error says why). Called
 * in the consumer's thread. */
typedef int (*ldr_hook)(void *ctx, const ldr_item *it);
void ldr_set_hook(ldr *l, ldr_hook hook, void *ctx);
/* Sets the batch size and the size limit (after ldr_open, before reading;
 * h, w <= 0 keep the config's) and starts the threads. 0, or -1 + ar_error. */
int ldr_start(ldr *l, int B, int max_h, int max_w);

/* The next B usable samples of the stream at *cur (advanced; broken samples
 * counted in cur->skipped): items is the caller's array of B pointers, set to
 * the batch's samples (valid until the next call).
 * 0, or -1 + ar_error (a whole epoch without a usable sample, out of memory). */
int ldr_next_batch(ldr *l, tds_cursor *cur, const ldr_item **items);
/* Sample i (validation order, or stream position i with shuffle) built in the
 * caller into *it (its own B slots, apart from the stream's: valid until the
 * next ldr_build_row on this slot; slot < B). Not counted in a cursor.
 * 0, 1 broken (ar_error says why), -1 error. */
int ldr_build_row(ldr *l, int64_t i, int slot, const ldr_item **it);

/* DATA PARALLEL (several ranks, one stream; ldr_dp_*): the step's global
 * batch is the next nranks x per_rank usable samples of the stream, rank k's
 * share the usable samples k*per_rank .. (k+1)*per_rank-1 of them, exactly
 * what one process reading the whole batch would give each micro-batch, and
 * each rank builds about its own share only:
 *   1. ldr_dp_window: this rank builds its window of the step starting at
 *      the cursor, G: the windows split the positions after G among the
 *      ranks, per_rank x f each, f = positions / usable samples read so far
 *      (the cursor's skipped count; 1 until a sample broke, at most 1.25), so
 *      that a window tends to hold its rank's share; the last rank's reaches
 *      per_rank / 8 + 1 further. It applies the row hook, and writes the
 *      window's status into status[ldr_dp_status_len] (position G + i:
 *      1 usable, 1024 broken; 0 outside the window: no sum of two
 *      ranks' reports is 1 or 1024, so overlapping windows are caught);
 *   2. the caller sums status over the ranks (dist_sum): every rank then
 *      knows every position of the step's windows;
 *   3. ldr_dp_assign: the positions of this rank's share into
 *      mine[per_rank] (ascending); when the windows hold fewer usable samples
 *      than the step needs, every rank builds the positions after them until
 *      it is full. The cursor moves past the step's last usable sample and
 *      its skipped count grows by the broken samples before it (the same
 *      cursor as one process's); each broken sample is reported by one rank.
 *      The threads start on the next step's window at once;
 *   4. ldr_dp_take: the samples at positions pos[n] (among this step's mine,
 *      in any order; valid until the next ldr_dp_take / ldr_dp_window). A
 *      sample of another rank's window (after broken samples shifted the
 *      shares) is built then.
 * data.deterministic does not apply: the shares are exact. The ring then
 * holds the largest window whole (1.25 per_rank + slack + 1) plus prefetch
 * samples (threads = 0: B; ldr_dp_slots), and the
 * sequential calls (ldr_next_batch) are refused. ldr_dp_setup goes between
 * ldr_open and ldr_start. 0, or -1 + ar_error (ldr_dp_take: also a sample
 * that another rank found usable and this one broken). */
int ldr_dp_setup(ldr *l, int rank, int nranks, int per_rank);
int64_t ldr_dp_status_len(const ldr *l);   /* the most positions of a step's windows: 1.25 nranks per_rank + slack + 1 */
int ldr_dp_slots(const ldr *l);            /* sample slots of the ring (0: not data parallel) */
int ldr_dp_slack(const ldr *l);            /* positions the last rank's window reaches further */
size_t ldr_slot_bytes(const ldr *l);       /* host bytes of one sample slot (after ldr_start) */
int ldr_dp_window(ldr *l, const tds_cursor *cur, double *status);
int ldr_dp_assign(ldr *l, tds_cursor *cur, const double *status, int64_t *mine);
int ldr_dp_take(ldr *l, const int64_t *pos, int n, const ldr_item **items);

/* Counters since ldr_open: samples built, broken, the time the consumer
 * waited for them (seconds; with threads = 0 the time spent building them),
 * and the records the sources' loaders skipped
 * at open (REFER refs that did not join, malformed AVSBench CSV rows,
 * malformed JSON lines); data parallel: the positions built past the
 * windows because they held too few usable samples (dp_past). */
typedef struct { int64_t built, broken; double wait_s; int64_t bad_records, dp_past; } ldr_stats;
void ldr_get_stats(const ldr *l, ldr_stats *out);

#endif
