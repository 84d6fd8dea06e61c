/* data/grounding_dataset.h — referring-segmentation training data with
 * precomputed SAM image embeddings: the HDF5 format, its reader (batches for
 * model/anyref.h, resumable like data/token_dataset.h) and its writer.
 *
 * Until the encoders run inside the trainer, this is how images reach the
 * AnyRef step: the SAM image encoder's output (C x H x W, 256 x 64 x 64 for
 * the real model) is stored per image, and every sample points at one.
 *
 * FILE FORMAT (one HDF5 file; a superset of the token format, so everything
 * data/token_dataset.h says about the token part holds here too)
 *
 *   /input_ids, /labels [N, T] int32, optional /attention_mask, attributes
 *                   vocab_size and pad_id: exactly as data/token_dataset.h.
 *   /image_embeddings  float [M, C, H, W]  SAM image embeddings (float32 or
 *                   float64 on disk; read as float32). M >= 1.
 *   /image_index    int32 [N]     row of /image_embeddings of sample i, or -1
 *                                 (no image: allowed only without [SEG]).
 *   /orig_size      int32 [N, 2]  (H0, W0): the original image size, which
 *                                 decides SAM's crop and the final resize.
 *   /mask_size      int32 [N, 2]  optional: (Hm, Wm), the size of sample i's
 *                                 masks when it differs from the original
 *                                 (AVSBench: the prediction is resized to it);
 *                                 (0, 0) or absent = the original size.
 *   /mask_count     int32 [N]     ground-truth masks of sample i: one per
 *                                 [SEG] token of its input_ids, in order.
 *   /mask_offset    int64 [N]     index in /masks of sample i's first mask.
 *   /masks          uint8 [K]     every mask, row-major Hm x Wm, concatenated;
 *                                 0 = background, anything else = object.
 *   root attribute  seg_token_id  optional integer: the [SEG] token id (the
 *                                 trainer's seg.token defaults to it).
 *
 * A ROW IS BROKEN (skipped and counted like a broken token row, with the
 * reason in the warning) when its token part is broken, or: a [SEG] sits at
 * position 0 or the number of [SEG] tokens within the first T positions
 * differs from mask_count; image_index is outside [-1, M), or -1 with masks;
 * a size is not positive or exceeds the maximum given at open; its masks run
 * past the end of /masks or the offset is negative.
 * Shapes are checked at open: a file whose datasets disagree with each other
 * or with the model's embedding size is refused with a message naming the
 * file and the dataset.
 *
 * Errors: -1 / NULL with ar_error() naming the file and dataset. One thread
 * at a time (HDF5 serial). Depends on data/token_dataset, core/ and HDF5. */
#ifndef ANYREF_DATA_GROUNDING_DATASET_H
#define ANYREF_DATA_GROUNDING_DATASET_H
#include <stdint.h>
#include "data/token_dataset.h"

typedef struct grounding_dataset grounding_dataset;

/* What a batch carries besides its tokens; host memory owned by the data set,
 * valid until the next read. Sample b's image embedding is img[b] ([C*H*W],
 * NULL when it has no image); the batch's n_masks ground-truth masks are
 * masks[k] ([Hm*Wm] floats 0/1), batch-major then by position — the order of
 * model/anyref.h's gt_masks. */
typedef struct {
    int B;
    const float **img;
    int *orig_hw, *mask_hw;     /* [2B]; mask_hw is (Hm, Wm) or (0, 0) */
    int n_masks;
    const float **masks;
    int *mask_sample;           /* [n_masks] the sample of each mask */
} gds_batch;

/* Opens path for a model with vocab tokens and C x H x W image embeddings.
 * NULL + ar_error. */
grounding_dataset *gds_open(const char *path, int vocab, int C, int H, int W);
void    gds_close(grounding_dataset *g);
int64_t gds_rows(const grounding_dataset *g);
int     gds_seq_len(const grounding_dataset *g);
/* The seg_token_id attribute, or -1 without one. */
int     gds_seg_token(const grounding_dataset *g);
/* The largest original and mask side over the rows, and the most masks in one
 * row (for sizing the model: anyref_cfg.max_orig_h/w, max_seg). */
void    gds_limits(const grounding_dataset *g, int *max_h, int *max_w, int *max_masks);
/* Fixes what the reader accepts: the [SEG] id, the batch size, and the largest
 * size (rows above it are broken). Must precede reading. 0, or -1 + ar_error. */
int     gds_configure(grounding_dataset *g, int seg_token, int B, int max_h, int max_w);

/* The next B usable rows of the shuffled stream (token_dataset.h's order and
 * cursor) into tokens/targets [B*T] and *out. 0, or -1 + ar_error. */
int gds_next_batch(grounding_dataset *g, tds_cursor *cur, int T, int *tokens, int *targets, gds_batch *out);
/* Row i into batch slot `slot` (for validation in file order): 0 ok, 1 broken
 * (ar_error says why), -1 I/O error. Call gds_finish_batch after filling the
 * slots 0..B-1, before reading *out. */
int  gds_read_row(grounding_dataset *g, int64_t i, int T, int slot, int *tokens, int *targets);
void gds_finish_batch(grounding_dataset *g, int nslots, gds_batch *out);

/* Writes a file in this format (atomic, like tds_write). ids/labels [N*T];
 * emb [M*C*H*W]; image_index [N]; orig_hw [2N]; mask_hw [2N] or NULL;
 * mask_count [N]; masks: every mask's Hm*Wm bytes concatenated in row order.
 * seg_token < 0: no attribute. 0, or -1 + ar_error. */
int gds_write(const char *path, const int *ids, const int *labels, int64_t N, int T, int vocab, int pad_id,
              int seg_token, const float *emb, int64_t M, int C, int H, int W, const int *image_index,
              const int *orig_hw, const int *mask_hw, const int *mask_count, const uint8_t *masks);
#endif
