/* model/sam_post.h — SAM mask post-processing with backward (SPEC 2.6, 2.9).
 *
 * segment-anything's Sam.postprocess_masks, for P masks of one image:
 *   low-res logits in[P, Hl, Wl] (256 x 256)
 *     -> bilinear (align_corners=False) to [P, S, S]     (S = encoder input side, 1024)
 *     -> crop the top-left [P, rh, rw]                   (the resized, unpadded image)
 *     -> bilinear to the original image size [P, H0, W0].
 * (rh, rw) is ResizeLongestSide.get_preprocess_shape(H0, W0, S): scale = S / max(H0, W0)
 * in double, rh = int(H0*scale + 0.5), rw = int(W0*scale + 0.5) (sam_resize_shape).
 * AVSBench (AnyRef's loss, SPEC 2.9): when the ground-truth mask's size (Hm, Wm)
 * differs from (H0, W0), the original-size prediction is bilinearly resized once
 * more, to [P, Hm, Wm]; the losses are taken there.
 *
 * Everything goes through kernels.h (resize_bilinear_*, k_copy/k_zero for the
 * crop), so it runs on either backend. Scratch (backend memory, caller's: an
 * arena or a buffer) holds sam_post_scratch_floats() floats; forward and
 * backward may share it. backward ACCUMULATES into din (kernels.h convention)
 * and overwrites the scratch. Depends on kernels/, core/error. */
#ifndef ANYREF_SAM_POST_H
#define ANYREF_SAM_POST_H
#include <stddef.h>

typedef struct {
    int P;              /* masks of this image */
    int Hl, Wl;         /* low-res logits (256 x 256) */
    int S;              /* encoder input side (1024) */
    int rh, rw;         /* resized unpadded size, from sam_resize_shape */
    int H0, W0;         /* original image size */
    int Hm, Wm;         /* loss-mask size: == (H0, W0) normally, AVSBench may differ */
} sam_post_shape;

/* ResizeLongestSide.get_preprocess_shape(H0, W0, S). */
void   sam_resize_shape(int H0, int W0, int S, int *rh, int *rw);
/* Fills sh; Hm or Wm <= 0 means "the original size". 0, or -1 + ar_error on a
 * non-positive size. */
int    sam_post_init(sam_post_shape *sh, int P, int Hl, int Wl, int S, int H0, int W0, int Hm, int Wm);
size_t sam_post_out_floats(const sam_post_shape *sh);      /* P * Hm * Wm */
size_t sam_post_scratch_floats(const sam_post_shape *sh);
/* out[P, Hm, Wm] from in[P, Hl, Wl]. */
void   sam_post_forward(const sam_post_shape *sh, float *out, float *scratch, const float *in);
/* din[P, Hl, Wl] += d out / d in applied to dout[P, Hm, Wm]. */
void   sam_post_backward(const sam_post_shape *sh, float *din, float *scratch, const float *dout);
#endif
