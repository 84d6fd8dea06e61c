/* model/sam_prompt.h — the dense half of SAM's prompt encoder (SPEC 2.6), frozen.
 *
 * Two frozen tensors under their segment-anything names (prefix "" gives the
 * original SAM checkpoint names; AnyRef's checkpoint nests them under
 * "model.visual_model."):
 *   <prefix>prompt_encoder.pe_layer.positional_encoding_gaussian_matrix  [2, C/2]
 *   <prefix>prompt_encoder.no_mask_embed.weight                          [1, C]
 * and the two dense tensors the mask decoder consumes (C = 256, 64 x 64 for SAM):
 *   - image PE (PositionEmbeddingRandom.forward((H, W))): for cell (y, x) the
 *     normalised centre u = (x + 0.5)/W, v = (y + 0.5)/H, mapped to [-1, 1]
 *     (2u - 1, 2v - 1), projected by the gaussian matrix G (row 0 multiplies the
 *     x coordinate, row 1 the y coordinate), scaled by 2*pi:
 *       a_c = 2*pi * ((2u-1) G[0,c] + (2v-1) G[1,c]),  c < C/2
 *       out[c, y, x] = sin(a_c),  out[C/2 + c, y, x] = cos(a_c).
 *   - dense prompt without a mask: out[c, y, x] = no_mask_embed[c].
 * Both are constants of the frozen weights: compute them once after loading.
 * Output pointers are backend memory (k_malloc); the computation runs on the
 * host (in double, then rounded) and is uploaded. Depends on kernels/, model/params. */
#ifndef ANYREF_SAM_PROMPT_H
#define ANYREF_SAM_PROMPT_H
#include "model/params.h"

typedef struct {
    int embed_dim;          /* C, even (256 for SAM) */
    int grid_h, grid_w;     /* image-embedding grid (64 x 64 for SAM) */
    const char *prefix;     /* prepended to the names; NULL = "" */
} sam_prompt_cfg;

/* Declares the two frozen tensors (INIT_NORMAL std 1 for the gaussian matrix, as
 * torch.randn; zeros for no_mask_embed until a checkpoint is loaded). -1 + ar_error. */
int sam_prompt_declare(const sam_prompt_cfg *c, ar_params *ps);
/* out[C, H, W] (backend memory) = the random-Fourier image PE. -1 + ar_error
 * (bad config, tensors not declared, host memory). */
int sam_prompt_dense_pe(const sam_prompt_cfg *c, const ar_params *ps, float *out);
/* out[C, H, W] (backend memory) = no_mask_embed broadcast over the grid. -1 + ar_error. */
int sam_prompt_dense_embed(const sam_prompt_cfg *c, const ar_params *ps, float *out);
#endif
