/* model/references.h — images and references as LLM feature rows (SPEC 2.3,
 * 2.4, 2.7, 2.8): the frozen CLIP tower + mm_projector for images, box and
 * image-crop references on top of them, the frozen ImageBind audio encoder +
 * audio_projector for audio references, and the splicing of those rows into
 * a token sequence.
 *
 * FEATURE ROWS of one batch: a matrix feat [R, D] (D = the LLM width), in this
 * order (refs_rows() gives the offsets):
 *   images  G rows each (G = g*g CLIP patch tokens, CLS dropped, row-major over
 *           the g x g grid): mm_projector(CLIP(pixels)).
 *   boxes   4 rows each: RoIAlign (torchvision semantics: aligned, bilinear,
 *           sampling ratio 2, 2 x 2 output, rows in (ph, pw) order) of the box
 *           on its image's projected g x g grid. Boxes are (image index, x1, y1,
 *           x2, y2) in CLIP input pixels (the data pipeline maps them from the
 *           original image); spatial scale g / S. AnyRef's public code leaves the
 *           box path out; this is SPEC 2.8's documented choice.
 *   crops   4 rows each: the crop through the same CLIP + mm_projector ([G, D]),
 *           then token i = the mean of rows [i G/4, (i+1) G/4). For G = 256
 *           this is AnyRef's reshape-mean (groups of 16 rows, then of 4): the
 *           crop's grid in four horizontal strips of 4 grid rows.
 *   audio   3 rows each: audio_projector(ImageBind(fbank)) of its three
 *           2-second clips, in clip order.
 * The encoders are frozen and run forward only unless clip.trainable (small
 * models trained from scratch); gradients (refs_backward) reach the
 * mm_projector when it is trainable (images, boxes, crops), the CLIP tower
 * when it is, and the audio_projector (AnyRef trains it).
 *
 * Precomputed frozen outputs (the feature cache) may replace the encoders:
 * refs_batch.image_clip / crop_clip / audio_emb.
 *
 * SPLICING (refs_splice): a tokenized sample holds marker pairs; the feature
 * rows go between them, as LLaVA's <im_start> <image> <im_end> and AnyRef's
 * reference start/end tokens:
 *   image:     an `image` token  ->  im_start, G feature tokens, im_end
 *   reference: ref_start ref_end (adjacent) -> ref_start, 4 feature tokens,
 *              ref_end for a box or image-crop reference; audio_start
 *              audio_end -> audio_start, 3 feature tokens, audio_end for an
 *              audio reference (AnyRef's IMG_REF_* and AUDIO_REF_* tokens);
 *              the sample's references are taken in order
 * A feature token is written as the id -(r + 1) for feature row r, with label
 * -100 (model/anyref.h reads such ids as rows of anyref_batch.feat).
 * With data/conversation.h, "<image>" is a placeholder (conv_encoder_add_placeholder:
 * id -1, as LLaVA's tokenizer_image_token uses -200) and the markers are
 * added tokens (conv_encoder_add_token); pass -1 as markers.image. The text
 * holds "<image>" alone: the im_start/im_end pair is inserted here
 * (tests/test_references.c walks one such conversation through).
 * The marker strings come from the tokenizer's added tokens; AnyRef's exact
 * strings (llava/constants.py) are not public, so the data pipeline picks
 * them (e.g. "<im_start>", "<im_end>", "<img_ref_start>", "<img_ref_end>",
 * "<audio_ref_start>", "<audio_ref_end>").
 *
 * Memory: everything sized by refs_create for the maxima given; nothing per
 * call. Tensors are backend memory except where marked host. Errors: -1 /
 * NULL + ar_error. Depends on model/clip_vit, model/imagebind_audio,
 * model/params, kernels/, core/. */
#ifndef ANYREF_REFERENCES_H
#define ANYREF_REFERENCES_H
#include "model/clip_vit.h"
#include "model/imagebind_audio.h"
#include "model/params.h"

typedef struct {
    clip_vit_cfg clip;
    mm_projector_cfg proj;          /* in_dim = clip.width, out_dim = D */
    int use_audio;                  /* declare the ImageBind audio branch */
    imagebind_audio_cfg audio;      /* audio.llm_dim = D (the audio_projector) */
    int max_images, max_boxes, max_crops, max_audio;   /* per batch */
} refs_cfg;

enum { REFS_BOX_ROWS = 4, REFS_CROP_ROWS = 4, REFS_AUDIO_CLIPS = 3 };

typedef struct {
    int n_images;
    const float *pixels;        /* [n_images, 3, S, S] CLIP-normalised, or NULL with image_clip */
    const float *image_clip;    /* [n_images, G, W] precomputed CLIP output, or NULL */
    int n_boxes;
    const float *boxes;         /* [n_boxes, 5] (image, x1, y1, x2, y2) in CLIP pixels */
    int n_crops;
    const float *crop_pixels;   /* [n_crops, 3, S, S], or NULL with crop_clip */
    const float *crop_clip;     /* [n_crops, G, W] precomputed, or NULL */
    int n_audio;
    const float *fbank;         /* [n_audio * 3, 1, n_mels, target_len], or NULL with audio_emb */
    const float *audio_emb;     /* [n_audio * 3, out_dim] precomputed ImageBind output, or NULL */
} refs_batch;

/* Row offsets of a batch in feat: images at 0, then boxes, crops, audio; *total = R. */
typedef struct { int image, box, crop, audio, total; } refs_offsets;

typedef struct refs refs;

int   refs_declare(const refs_cfg *c, ar_params *ps);
refs *refs_create(const refs_cfg *c, ar_params *ps);
/* Device memory of refs_create(c) by part (bytes): the CLIP tower's block,
 * the mm_projector's block, the ImageBind audio block and the feature
 * buffers. refs_plan computes it without allocating (the same sizing code;
 * `anyref plan`); refs_memory reads it off a created object. */
typedef struct { size_t clip, projector, audio, buffers; } refs_mem;
void  refs_plan(const refs_cfg *c, refs_mem *out);
void  refs_memory(const refs *r, refs_mem *out);
void  refs_free(refs *r);
int   refs_image_tokens(const refs *r);              /* G */
refs_offsets refs_rows(const refs *r, const refs_batch *b);
/* Builds feat [R, D] (valid until the next forward). The inputs must stay
 * unchanged until refs_backward. NULL + ar_error (counts over the maxima,
 * a missing input, a box naming an image outside the batch is not checked
 * here: boxes are backend memory — the data pipeline validates them). */
float *refs_forward(refs *r, const refs_batch *b);
/* The gradient buffer matching the last forward's feat ([R, D], zeroed by
 * refs_forward): pass it as anyref_batch.dfeat, then call refs_backward. */
float *refs_dfeat(refs *r);
/* Backward of the last forward from refs_dfeat(): accumulates into the
 * projectors' gradients (those that are trainable) and, with clip.trainable,
 * through the CLIP tower into its weights (images and crops each in their own
 * tower slot). 0, or -1 + ar_error. */
int    refs_backward(refs *r);

/* The frozen encoders alone, for the feature cache: out[n, G, W] = CLIP of
 * pixels[n, 3, S, S] (n <= max(max_images, max_crops)); out[n, out_dim] =
 * ImageBind of fbank clips [n, 1, H, W] (n <= 3 max_audio). Backend memory.
 * 0, or -1 + ar_error. refs_clip_width: W; refs_audio_dim: out_dim (0 without audio). */
int refs_encode_images(refs *r, const float *pixels, int n, float *out);
int refs_encode_audio(refs *r, const float *fbank, int n, float *out);
int refs_clip_width(const refs *r);
int refs_audio_dim(const refs *r);

/* Marker ids for refs_splice (host). */
typedef struct { int image, im_start, im_end, ref_start, ref_end, audio_start, audio_end; } refs_markers;
/* One reference of a sample, in the order its ref_start/ref_end pairs appear:
 * kind REFS_BOX / REFS_CROP / REFS_AUDIO and its feature row offset (from
 * refs_rows: o.box + 4 * box index, ...). */
enum { REFS_BOX = 0, REFS_CROP = 1, REFS_AUDIO = 2 };
typedef struct { int kind, row; } refs_ref;
/* Expands ids/labels [n] (host; labels not shifted, -100 ignored) into
 * out_ids/out_labels [T], right-padded with pad_id / -100: every `image` token
 * becomes im_start + G feature tokens (rows image_row ..) + im_end (only one
 * image per sample), every adjacent ref_start ref_end / audio_start audio_end
 * pair takes the next of refs[0..n_refs) (its kind must match the pair).
 * Returns the spliced length before padding (> T: the sample
 * does not fit, and the output holds the first T positions), or -1 + ar_error
 * when the markers and the inputs disagree (an image token without
 * image_row >= 0, more or fewer reference pairs than n_refs). */
int refs_splice(const int *ids, const int *labels, int n, const refs_markers *mk, int G, int image_row,
                const refs_ref *refs, int n_refs, int T, int pad_id, int *out_ids, int *out_labels);
#endif
