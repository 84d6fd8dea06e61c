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
 *                   float64 on disk; read as float32). M >= 1. Optional when
 *                   /sam_pixels is present.
 *   /sam_pixels     float [M, 3, S, S]  optional: the SAM image encoder's input
 *                   (normalised, padded; model/sam_image_encoder.h); with
 *                   gds_use_sam_pixels the reader returns these instead of
 *                   the embeddings and the trainer runs the encoder.
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
 * Images and references as LLM tokens (optional; model/references.h):
 *   /clip_pixels    float [M, 3, S, S]  CLIP input of each image (normalised,
 *                                 same rows as /image_embeddings). A sample whose
 *                                 input_ids hold the image token gets the
 *                                 image's CLIP tokens spliced there.
 *   /ref_kind       int32 [N]     the sample's reference: -1 none (or a text
 *                                 reference, which is just text), 0 box,
 *                                 1 image crop, 2 audio; it is spliced at the
 *                                 sample's (adjacent) ref_start ref_end pair.
 *   /ref_index      int32 [N]     crop: row of /crop_pixels; audio: row of /audio_fbank
 *   /ref_box        float [N, 4]  box: (x1, y1, x2, y2) in CLIP input pixels of
 *                                 the sample's image
 *   /crop_pixels    float [Mc, 3, S, S]   CLIP input of each image crop
 *   /audio_fbank    float [Ma, 3, 1, H, W] normalised fbank of the 3 clips of each audio
 *   root attributes image_token_id, im_start_id, im_end_id, ref_start_id,
 *                   ref_end_id, audio_start_id, audio_end_id: the marker ids
 *                   (required with the datasets that use them; box and crop
 *                   references sit between ref_start ref_end, audio ones
 *                   between audio_start audio_end, as model/references.h).
 *
 * A ROW IS BROKEN (skipped and counted like a broken token row, with the
 * reason in the warning) when its token part is broken, or: a [SEG] sits at
 * position 0 or the number of [SEG] tokens within the first T positions
 * differs from mask_count; image_index is outside [-1, M), or -1 with masks;
 * a size is not positive or exceeds the maximum given at open; its masks run
 * past the end of /masks or the offset is negative; it holds an image token
 * without CLIP pixels (or two), a number of ref_start ref_end pairs other than
 * its references, a reference index out of range, a box that is empty or not
 * finite; or the caller's row hook (gds_configure) refuses it.
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
#include "data/loader.h"

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
    /* images and references (all NULL / -1 without them) */
    const float **clip;         /* [B] CLIP pixels [3*S*S] of the sample's image, or NULL */
    const int *ref_kind;        /* [B] -1, GDS_REF_BOX, _CROP, _AUDIO */
    const float *ref_box;       /* [4B] */
    const float **ref_data;     /* [B] crop pixels [3*S*S] or fbank [3*H*W] */
    const float **sam_pixels;   /* [B] SAM inputs (gds_use_sam_pixels), else NULL */
} gds_batch;

enum { GDS_REF_NONE = -1, GDS_REF_BOX = 0, GDS_REF_CROP = 1, GDS_REF_AUDIO = 2 };

/* What the file holds besides tokens, masks and SAM embeddings. */
typedef struct {
    int clip_S;                 /* CLIP input side, 0 without /clip_pixels */
    int sam_S;                  /* SAM input side, 0 without /sam_pixels */
    int64_t n_crops, n_audio;   /* rows of /crop_pixels, /audio_fbank */
    int fbank_h, fbank_w;
    int has_refs;               /* /ref_kind present */
    int image_token, im_start, im_end, ref_start, ref_end, audio_start, audio_end;   /* -1 if absent */
} gds_mm_info;
void gds_mm(const grounding_dataset *g, gds_mm_info *out);
/* Rows of /image_embeddings (= rows of /clip_pixels). */
int64_t gds_images(const grounding_dataset *g);
/* One encoder input by its own row (the feature cache fills from these):
 * GDS_IN_CLIP row of /clip_pixels, GDS_IN_CROP of /crop_pixels ([3*S*S]),
 * GDS_IN_FBANK of /audio_fbank ([3*H*W]). 0, or -1 + ar_error. */
enum { GDS_IN_CLIP, GDS_IN_CROP, GDS_IN_FBANK, GDS_IN_SAM };
int gds_read_input(grounding_dataset *g, int which, int64_t row, float *out);

/* A caller's extra check of a row, after the file's own (e.g. that it still
 * holds all its [SEG]s after splicing to the model's length): 0 keep, 1 broken
 * (ar_error says why), -1 error. */
typedef int (*gds_row_hook)(void *ctx, int64_t row, const int *tokens, const int *targets, int T, int ref_kind,
                            int n_masks);

/* Opens path for a model with vocab tokens and C x H x W image embeddings.
 * NULL + ar_error. */
grounding_dataset *gds_open(const char *path, int vocab, int C, int H, int W);
void    gds_close(grounding_dataset *g);
/* The same interface over the live loader (data/loader.h), which it takes
 * over (freed by gds_close, or here on failure): images are decoded per
 * sample, so there are no stored embeddings (gds_use_sam_pixels(1) is
 * required before gds_configure) and no stored encoder inputs
 * (gds_read_input, gds_images = 0); the [SEG] and marker ids are the
 * tokenizer's; gds_configure starts the loader's threads; the rows are its
 * epoch (ldr_rows). name is used in messages. NULL + ar_error. */
grounding_dataset *gds_open_loader(ldr *l, const char *name);
/* The loader behind a gds_open_loader handle, NULL for an HDF5 file. */
ldr *gds_loader(const grounding_dataset *g);
/* A gds_open_loader handle: the loader's sample in batch slot b of the last
 * gds_next_batch / gds_read_row (data/loader.h ldr_item: its image file,
 * question, answer, reference); NULL for an HDF5 file or an empty slot. */
const ldr_item *gds_live_item(const grounding_dataset *g, int b);
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
/* Read SAM inputs (/sam_pixels) instead of the stored embeddings: the batch's
 * img[] are NULL and sam_pixels[] hold them. Before gds_configure. 0, or -1 +
 * ar_error (no such dataset; or off without /image_embeddings). */
int     gds_use_sam_pixels(grounding_dataset *g, int on);
/* Optional: a row hook (NULL: none). */
void    gds_set_hook(grounding_dataset *g, gds_row_hook hook, void *ctx);

/* The next B usable rows of the shuffled stream (token_dataset.h's order and
 * cursor) into tokens/targets [B*T] and *out. 0, or -1 + ar_error. */
int gds_next_batch(grounding_dataset *g, tds_cursor *cur, int T, int *tokens, int *targets, gds_batch *out);
/* Moves *cur past the batch gds_next_batch would read (the same rows skipped
 * as broken, the same cursor after it), for data-parallel ranks stepping over
 * the other ranks' share: a prepared file's rows are judged on their
 * metadata and token rows, no pixels, masks or features are read; a live
 * source (gds_open_loader) builds the samples, since only decoding tells
 * whether an image is usable (gds_dp_setup shares that work out instead).
 * tokens/targets [B*T] are scratch. 0, or -1 + ar_error. */
int gds_skip_batch(grounding_dataset *g, tds_cursor *cur, int T, int *tokens, int *targets);
/* Data parallel over a live source (gds_open_loader; data/loader.h DATA
 * PARALLEL): each rank builds only about its own share of every step's
 * samples instead of every rank building them all. gds_dp_setup (before
 * gds_configure; per_rank = micro-batches per rank x B) returns 1 when it
 * engaged, 0 for an HDF5 file (its ranks keep stepping over the others'
 * share with gds_skip_batch, judged on metadata). Then at every step's start
 * on every rank gds_dp_begin (a collective: the ranks exchange which of
 * their samples are usable) moves *cur past the whole global step, and the
 * rank's gds_next_batch calls return its share in order (their cursor is
 * not used). 0 / 1, or -1 + ar_error. */
int gds_dp_setup(grounding_dataset *g, int rank, int nranks, int per_rank);
int gds_dp_begin(grounding_dataset *g, tds_cursor *cur);
/* Row i into batch slot `slot` (for validation in file order): 0 ok, 1 broken
 * (ar_error says why), -1 I/O error. Call gds_finish_batch after filling the
 * slots 0..B-1, before reading *out. */
int  gds_read_row(grounding_dataset *g, int64_t i, int T, int slot, int *tokens, int *targets);
void gds_finish_batch(grounding_dataset *g, int nslots, gds_batch *out);

/* The optional image/reference part for gds_write (NULL pointers and ids < 0
 * are left out). */
typedef struct {
    int sam_S;                      /* SAM input side (with sam_pixels) */
    const float *sam_pixels;        /* [M, 3, sam_S, sam_S]; emb may then be NULL */
    int S;                          /* CLIP input side */
    const float *clip_pixels;       /* [M, 3, S, S] */
    const int *ref_kind, *ref_index;/* [N] */
    const float *ref_box;           /* [N, 4] */
    int64_t n_crops;
    const float *crop_pixels;       /* [n_crops, 3, S, S] */
    int64_t n_audio;
    int fbank_h, fbank_w;
    const float *fbank;             /* [n_audio, 3, 1, fbank_h, fbank_w] */
    int image_token, im_start, im_end, ref_start, ref_end, audio_start, audio_end;
} gds_mm_data;

/* Writes a file in this format (atomic, like tds_write). ids/labels [N*T];
 * emb [M*C*H*W]; image_index [N]; orig_hw [2N]; mask_hw [2N] or NULL;
 * mask_count [N]; masks: every mask's Hm*Wm bytes concatenated in row order.
 * seg_token < 0: no attribute; mm: NULL or the image/reference part.
 * 0, or -1 + ar_error. */
int gds_write(const char *path, const int *ids, const int *labels, int64_t N, int T, int vocab, int pad_id,
              int seg_token, const float *emb, int64_t M, int C, int H, int W, const int *image_index,
              const int *orig_hw, const int *mask_hw, const int *mask_count, const uint8_t *masks,
              const gds_mm_data *mm);
#endif
