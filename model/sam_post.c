/* model/sam_post.c — SAM mask post-processing, forward and backward (see sam_post.h). */
#include "model/sam_post.h"
#include "kernels/kernels.h"
#include "core/error.h"

void sam_resize_shape(int H0, int W0, int S, int *rh, int *rw) {
    double scale = S * 1.0 / (H0 > W0 ? H0 : W0);
    *rh = (int)(H0 * scale + 0.5);
    *rw = (int)(W0 * scale + 0.5);
}

int sam_post_init(sam_post_shape *sh, int P, int Hl, int Wl, int S, int H0, int W0, int Hm, int Wm) {
    if (P <= 0 || Hl <= 0 || Wl <= 0 || S <= 0 || H0 <= 0 || W0 <= 0)
        return ar_errorf("sam_post: sizes must be positive (P=%d, low-res %dx%d, S=%d, original %dx%d)",
                         P, Hl, Wl, S, H0, W0);
    sh->P = P; sh->Hl = Hl; sh->Wl = Wl; sh->S = S; sh->H0 = H0; sh->W0 = W0;
    sam_resize_shape(H0, W0, S, &sh->rh, &sh->rw);
    sh->Hm = Hm > 0 ? Hm : H0;
    sh->Wm = Wm > 0 ? Wm : W0;
    return 0;
}

static int has_mask_stage(const sam_post_shape *sh) { return sh->Hm != sh->H0 || sh->Wm != sh->W0; }

size_t sam_post_out_floats(const sam_post_shape *sh) { return (size_t)sh->P * sh->Hm * sh->Wm; }

/* Scratch: big[P,S,S] | crop[P,rh,rw] | orig[P,H0,W0] (AVSBench stage only). */
size_t sam_post_scratch_floats(const sam_post_shape *sh) {
    size_t n = (size_t)sh->P * sh->S * sh->S + (size_t)sh->P * sh->rh * sh->rw;
    if (has_mask_stage(sh)) n += (size_t)sh->P * sh->H0 * sh->W0;
    return n;
}

/* Top-left crop big[P,S,S] -> crop[P,rh,rw] (to_crop) or its adjoint into a
 * zeroed big (from crop); whole masks at once when the rows are full width. */
static void crop_copy(const sam_post_shape *sh, float *big, float *crop, int to_crop) {
    const size_t SS = (size_t)sh->S * sh->S, C = (size_t)sh->rh * sh->rw;
    for (int p = 0; p < sh->P; p++) {
        float *b = big + p * SS, *c = crop + p * C;
        if (sh->rw == sh->S) {
            if (to_crop) k_copy(c, b, C * sizeof(float));
            else k_copy(b, c, C * sizeof(float));
            continue;
        }
        for (int y = 0; y < sh->rh; y++) {
            if (to_crop) k_copy(c + (size_t)y * sh->rw, b + (size_t)y * sh->S, sh->rw * sizeof(float));
            else k_copy(b + (size_t)y * sh->S, c + (size_t)y * sh->rw, sh->rw * sizeof(float));
        }
    }
}

void sam_post_forward(const sam_post_shape *sh, float *out, float *scratch, const float *in) {
    const int P = sh->P;
    float *big = scratch, *crop = big + (size_t)P * sh->S * sh->S;
    float *orig = crop + (size_t)P * sh->rh * sh->rw;
    resize_bilinear_forward(big, in, P, sh->Hl, sh->Wl, sh->S, sh->S);
    crop_copy(sh, big, crop, 1);
    if (!has_mask_stage(sh)) {
        resize_bilinear_forward(out, crop, P, sh->rh, sh->rw, sh->H0, sh->W0);
        return;
    }
    resize_bilinear_forward(orig, crop, P, sh->rh, sh->rw, sh->H0, sh->W0);
    resize_bilinear_forward(out, orig, P, sh->H0, sh->W0, sh->Hm, sh->Wm);
}

void sam_post_backward(const sam_post_shape *sh, float *din, float *scratch, const float *dout) {
    if (!din) return;
    const int P = sh->P;
    const size_t nbig = (size_t)P * sh->S * sh->S, ncrop = (size_t)P * sh->rh * sh->rw;
    float *big = scratch, *crop = big + nbig, *orig = crop + ncrop;
    k_zero(crop, ncrop * sizeof(float));
    if (!has_mask_stage(sh)) {
        resize_bilinear_backward(crop, dout, P, sh->rh, sh->rw, sh->H0, sh->W0);
    } else {
        k_zero(orig, (size_t)P * sh->H0 * sh->W0 * sizeof(float));
        resize_bilinear_backward(orig, dout, P, sh->H0, sh->W0, sh->Hm, sh->Wm);
        resize_bilinear_backward(crop, orig, P, sh->rh, sh->rw, sh->H0, sh->W0);
    }
    k_zero(big, nbig * sizeof(float));
    crop_copy(sh, big, crop, 0);
    resize_bilinear_backward(din, big, P, sh->Hl, sh->Wl, sh->S, sh->S);
}
