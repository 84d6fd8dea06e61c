/* model/sam_image_encoder.h — SAM's image encoder (SPEC 2.6, ImageEncoderViT of
 * segment-anything), batched, through kernels.h only, so it runs on either
 * backend. Frozen (forward only) by default; with cfg.trainable every tensor is
 * trainable and sam_encoder_backward accumulates their gradients (for small
 * models trained from scratch, issue 5 part 6).
 *
 *   image [B,3,S,S] (already normalised and padded, S = img_size)
 *   -> patch_embed (Conv p x p, stride p) -> tokens [B,G,G,C], G = S/p, + pos_embed [1,G,G,C]
 *   -> depth blocks: x += proj(attn(LN1(x))), x += lin2(GELU(lin1(LN2(x)))), LayerNorm eps 1e-6,
 *      attention over ws x ws windows (zero padding after LN1, padded tokens take part)
 *      or over the whole grid (global blocks), with decomposed relative positions
 *   -> neck: Conv1x1 (no bias) -> LayerNorm2d -> Conv3x3 pad 1 (no bias) -> LayerNorm2d (eps 1e-6)
 *   -> image embedding [B, out_chans, G, G].
 *
 * Parameter names are segment-anything's under a configurable prefix
 * ("image_encoder." in SAM checkpoints, "model.visual_model.image_encoder." in
 * LISA/AnyRef ones): patch_embed.proj.{weight,bias}, pos_embed [1,G,G,C],
 * blocks.N.norm1/norm2.{weight,bias}, blocks.N.attn.qkv/proj.{weight,bias},
 * blocks.N.attn.rel_pos_h/rel_pos_w [L, head_dim], blocks.N.mlp.lin1/lin2.
 * {weight,bias}, neck.0.weight, neck.1.{weight,bias}, neck.2.weight,
 * neck.3.{weight,bias}. All are frozen, or all trainable (cfg.trainable).
 *
 * Activations live in one arena sized at create time for max_batch images by a
 * measuring pass; nothing is allocated per forward. Frozen, the blocks share
 * one set of buffers. Trainable, the forward keeps per block what backward
 * reads (no recomputation of whole blocks): the block input and the
 * post-attention residual [B,N,C], both LayerNorms' mean/rstd, the qkv the
 * attention read ([B*N,3C] global, [B*Np,3C] windowed), the attention output
 * [B,N,C] and the MLP's pre-GELU [B,N,M], about (4 + 3 Np/N) C + M floats per
 * token per block, plus the patches and the neck's intermediates; backward
 * recomputes only LN outputs, GELU and the attention probabilities (in query
 * blocks, never a whole T x T matrix on CPU). ViT-B at 1024 px keeps about
 * 1.6 GB per image plus 0.25 GB of gradient buffers; with checkpoint_blocks
 * only each block's input [B,N,C] stays per block and one block's set is
 * shared (its forward runs again during backward, about a third more work); the CUDA attention
 * backward's scratch holds at least one grid's P and dP (1.6 GB for a ViT-B
 * global block). Depends on kernels/,
 * model/params, core/ (errors, arena). */
#ifndef ANYREF_SAM_IMAGE_ENCODER_H
#define ANYREF_SAM_IMAGE_ENCODER_H
#include <stddef.h>
#include "model/params.h"

#define SAM_ENC_MAX_DEPTH 64

typedef struct {
    int img_size;        /* 1024 */
    int patch;           /* 16 */
    int in_chans;        /* 3 */
    int dim;             /* embed_dim: 768 / 1024 / 1280 */
    int depth;           /* 12 / 24 / 32 (<= SAM_ENC_MAX_DEPTH) */
    int heads;           /* 12 / 16 / 16 */
    int mlp_dim;         /* dim * mlp_ratio (4) */
    int out_chans;       /* 256 */
    int window;          /* 14 */
    unsigned char global_attn[SAM_ENC_MAX_DEPTH]; /* 1: block attends over the whole grid */
    /* Rows of the declared rel_pos_h/w tables, 0 = SAM's 2*size-1 (size = window
     * for windowed blocks, the grid for global ones). Other lengths are resized
     * linearly at run time, as get_rel_pos does. */
    int rel_pos_len_window, rel_pos_len_global;
    char prefix[64];     /* parameter-name prefix, e.g. "image_encoder." */
    int trainable;       /* 0: frozen, forward only (default); 1: every tensor trainable, backward kept */
    int checkpoint_blocks; /* trainable only: keep each block's input alone and recompute the block's
                              forward during backward (one shared set of block buffers instead of one
                              per block; the same gradients, bit for bit) */
    int frozen_half;     /* frozen only: the blocks' qkv / proj / lin1 / lin2 weights (ViT-H: 629 of its
                            637 M parameters) stored in 16 bits, SAM_ENC_HALF_BF16 or _F16 (0: fp32);
                            their products are linear_bf16/f16_forward, so they run in the GEMM mode
                            (train.gemm = bf16: bf16 x bf16) and the rest stays fp32 */
} sam_encoder_cfg;

enum { SAM_ENC_HALF_BF16 = 1, SAM_ENC_HALF_F16 = 2 };   /* the values of llama.h's LLAMA_FROZEN_* */

/* SAM ViT-B / ViT-L / ViT-H (sam_vit_b/l/h_*.pth) with the given name prefix
 * (NULL: "image_encoder."). */
sam_encoder_cfg sam_encoder_vit_b(const char *prefix);
sam_encoder_cfg sam_encoder_vit_l(const char *prefix);
sam_encoder_cfg sam_encoder_vit_h(const char *prefix);

typedef struct sam_image_encoder sam_image_encoder;

/* Declares the parameters (frozen, or trainable when c->trainable). -1 + ar_error on bad sizes. */
int  sam_encoder_declare(const sam_encoder_cfg *c, ar_params *ps);
/* Binds to allocated parameters and sizes activations for up to max_batch
 * images. With c->trainable, also binds every gradient (NULL + ar_error if a
 * tensor was declared frozen) and sizes the backward's buffers. */
sam_image_encoder *sam_encoder_create(const sam_encoder_cfg *c, ar_params *ps, int max_batch);
void sam_encoder_free(sam_image_encoder *e);
/* image [B, in_chans, img_size, img_size] (backend memory). Returns the image
 * embeddings [B, out_chans, G, G], valid until the next call; NULL + ar_error
 * when B is out of 1..max_batch. */
float *sam_encoder_forward(sam_image_encoder *e, const float *image, int B);
/* The patch embedding and the first n_blocks blocks only (0..depth), no neck:
 * tokens [B, G, G, dim] (intermediate ViT features; the tests compare them
 * block by block). Valid until the next call; NULL + ar_error on bad B or n_blocks. */
float *sam_encoder_tokens(sam_image_encoder *e, const float *image, int B, int n_blocks);
/* Backward of the last sam_encoder_forward (trainable encoders only): dout is
 * d(image embeddings) [B, out_chans, G, G] for that forward's B (backend
 * memory, read only). ACCUMULATES into every parameter gradient in the
 * registry (patch_embed, pos_embed, every block's norms, qkv, proj, rel_pos_h/w
 * and MLP, the neck); no input gradient. Gradients are zeroed by the caller
 * (params_zero_grad), so micro-batches accumulate. -1 + ar_error when the
 * encoder is frozen or the last call was not a full forward. */
int sam_encoder_backward(sam_image_encoder *e, const float *dout);
size_t sam_encoder_activation_bytes(const sam_image_encoder *e);
/* What sam_encoder_create(c, ., max_batch) will take for its arena, without
 * allocating (the same layout code; `anyref plan`). 0 on a bad config. */
size_t sam_encoder_plan_bytes(const sam_encoder_cfg *c, int max_batch);
/* The bytes the attention kernel keeps besides the arena (its own buffers on
 * the CPU, workspaces on the GPU) for a frozen bf16 encoder in GEMM mode bf16
 * (gemm_bf16), where its products are bf16 (sam_attention_bf16_forward); 0
 * otherwise. */
size_t sam_encoder_kernel_workspace_bytes(const sam_encoder_cfg *c, int max_batch, int gemm_bf16);
#endif
