/* model/clip_vit.h — the CLIP vision tower (SPEC 2.3; frozen, or optionally
 * trainable) and LLaVA's mm_projector, the path image -> 256 LLM tokens (also
 * the image and box references of SPEC 2.8, which pool or RoIAlign the
 * projected grid).
 *
 * CLIP ViT (Hugging Face CLIPVisionModel semantics; forward, and backward when trainable):
 *   pixels [N, 3, S, S] (already normalised, see clip_normalize_u8)
 *   patch embedding: Conv2d(3, W, kernel = stride = p, no bias) -> g x g grid,
 *     g = S/p, flattened row-major to g*g tokens; CLS token in front;
 *     + position_embedding (1 + g*g rows); pre_layrnorm.
 *   hidden_states[0] = that; layer l (pre-LayerNorm block):
 *     x += out_proj(MHA(layer_norm1(x)))   (q/k/v/out with bias, head dim W/heads,
 *                                            scale 1/sqrt(hd), no mask)
 *     x += fc2(act(fc1(layer_norm2(x))))   (act: quick-GELU x*sigmoid(1.702x) for
 *                                            OpenAI CLIP, or exact GELU)
 *   hidden_states[l + 1] = x. LLaVA takes hidden_states[select_layer] (default
 *   -2, the second-to-last: layers after the selected one are not run) and
 *   drops CLS (select_feature 'patch'): output [N, g*g, W], row-major over the
 *   grid, so the projected rows [N*g*g, D] are the channels-last grid
 *   [N, g, g, D] that roi_align_forward reads for box references.
 *   post_layernorm is declared (it is in every checkpoint) but unused, as in LLaVA.
 *   ViT-L/14 (openai/clip-vit-large-patch14): S 224, p 14, W 1024, 24 layers,
 *   16 heads, MLP 4096, eps 1e-5 -> output [N, 256, 1024].
 * Names: <prefix>embeddings.patch_embedding.weight [W,3,p,p],
 *   <prefix>embeddings.class_embedding [W], <prefix>embeddings.position_embedding.weight [T,W],
 *   <prefix>pre_layrnorm.{weight,bias}, <prefix>encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias},
 *   <prefix>encoder.layers.{i}.layer_norm{1,2}.{weight,bias}, <prefix>encoder.layers.{i}.mlp.fc{1,2}.{weight,bias},
 *   <prefix>post_layernorm.{weight,bias}; prefix "vision_model." (HF CLIPVisionModel)
 *   by default, "model.vision_tower.vision_tower.vision_model." in LLaVA/LISA/AnyRef checkpoints.
 *   Frozen by default (AnyRef, LLaVA). With clip_vit_cfg.trainable (SPEC issue 5:
 *   small models trained from scratch) the tensors that reach the output are
 *   trainable: the embeddings, pre_layrnorm and layers 0..n-1 for hidden_states[n];
 *   the layers after the selected one and post_layernorm are never run and stay
 *   frozen (no gradient memory, no weight decay on tensors nothing uses).
 * Memory: one k_malloc'd block sized at create for max_images images; nothing
 * is allocated per call. Frozen: the layers reuse the same buffers (the
 * attention and the MLP share one region), about (3W + max(4W, 2M)) T + H T^2
 * floats per image, T = 1 + g*g (ViT-L: ~16 MB per image), plus a W x W
 * identity and the patch-embedding scratch. Trainable: every run layer keeps
 * what backward reads (its input, the post-attention residual, q, k, v, the
 * attention output and probabilities, the fc1 pre-activation, the two
 * LayerNorms' statistics: (6W + M) T + H T^2 + 4T floats per image and layer;
 * the LayerNorm outputs and the MLP activation are recomputed in backward),
 * plus a copy of the pixels and the backward's work buffers ((7W + 3M) T + H T^2
 * per image): ViT-L with select -2 about 360 MB per image. With
 * checkpoint_layers only each run layer's input (W T per image and layer) stays
 * per layer and one layer's set of the rest is shared by all: backward runs
 * each layer's forward again (up to fc1) before its backward, about a third
 * more tower work, the same gradients bit for bit.
 * Image slots: the buffers hold max_images images; a forward fills slots
 * first..first+N-1 (clip_vit_forward: from 0), and a trainable tower keeps each
 * slot's activations until a later forward overwrites that slot, so two
 * forwards into disjoint slots (images, then crops) can be followed by one
 * backward over both (the tower treats every image independently).
 *
 * mm_projector (LLaVA build_vision_projector), on rows [n, W] -> [n, D]:
 *   MM_PROJ_LINEAR:     <prefix>mm_projector.{weight [D,W], bias [D]}  (LLaVA v1 / Lightning)
 *   MM_PROJ_MLP2X_GELU: <prefix>mm_projector.0.{weight [D,W], bias},
 *                       GELU (exact erf), <prefix>mm_projector.2.{weight [D,D], bias}  (LLaVA-1.5)
 *   prefix "model." by default. Frozen or trainable; backward accumulates into
 *   its weight gradients (when trainable) and into din (when not NULL).
 *
 * All tensors passed in and returned are backend memory (k_malloc); only
 * clip_normalize_u8 works on host memory. Errors: NULL / -1 + ar_error().
 * Depends on kernels/, core/ (errors), model/params. */
#ifndef ANYREF_CLIP_VIT_H
#define ANYREF_CLIP_VIT_H
#include <stdint.h>
#include "model/params.h"

/* ------------------------------------------------------------------------ */
/* CLIP vision tower                                                        */
/* ------------------------------------------------------------------------ */
typedef enum { CLIP_ACT_QUICK_GELU = 0, CLIP_ACT_GELU = 1 } clip_act;

typedef struct {
    int image_size;     /* S, 224 */
    int patch;          /* p, 14 (S % p == 0) */
    int channels;       /* 3 */
    int width;          /* W, 1024 */
    int layers;         /* L, 24 */
    int heads;          /* 16 (W % heads == 0) */
    int mlp_dim;        /* 4096 */
    float eps;          /* LayerNorm eps, 1e-5 */
    clip_act act;       /* hidden_act: quick_gelu for OpenAI CLIP */
    int select_layer;   /* index into hidden_states[0..L]; negative counts from the end
                           (-1 = last layer, -2 = LLaVA's mm_vision_select_layer) */
    int keep_cls;       /* 0: 'patch' (drop CLS, LLaVA), 1: 'cls_patch' (keep it first) */
    const char *prefix; /* NULL = "vision_model." */
    int trainable;      /* 0: frozen, forward only (LLaVA/AnyRef); 1: declare the tensors
                           trainable, keep activations, allow clip_vit_backward */
    int checkpoint_layers; /* trainable only: keep each layer's input alone and recompute the
                              layer's forward during backward (one shared set of layer buffers
                              instead of one per layer; the same gradients, bit for bit) */
    int frozen_half;    /* frozen only: the layers' q/k/v/out_proj and fc1/fc2 weights (ViT-L: 302 of
                           its 304 M parameters) stored in 16 bits, CLIP_HALF_BF16 or CLIP_HALF_F16
                           (0: fp32); their products are linear_bf16/f16_forward and follow the GEMM
                           mode (train.gemm = bf16: bf16 x bf16) */
} clip_vit_cfg;

enum { CLIP_HALF_BF16 = 1, CLIP_HALF_F16 = 2 };   /* the values of llama.h's LLAMA_FROZEN_* */

/* openai/clip-vit-large-patch14 with LLaVA's selection (-2, patch) and HF prefix. */
clip_vit_cfg clip_vit_large_cfg(void);

typedef struct clip_vit clip_vit;

/* Declares every tower tensor (HF _init_weights initialisers): all frozen, or
 * with c->trainable those the selected hidden state depends on trainable.
 * -1 + ar_error on bad sizes or a select_layer outside [-(L+1), L]. */
int       clip_vit_declare(const clip_vit_cfg *c, ar_params *ps);
/* Binds to allocated parameters and sizes the activations for up to max_images
 * (with c->trainable also the activations backward needs and its buffers; a
 * tensor frozen in the registry then gets no gradient, backward still runs
 * through it). */
clip_vit *clip_vit_create(const clip_vit_cfg *c, ar_params *ps, int max_images);
void      clip_vit_free(clip_vit *v);
/* Tokens per image in the output: g*g, or 1 + g*g with keep_cls. */
int       clip_vit_tokens(const clip_vit *v);
/* pixels [N, C, S, S] -> features [N, clip_vit_tokens(v), W], valid until the
 * next forward; NULL + ar_error when N is outside 1..max_images. */
float    *clip_vit_forward(clip_vit *v, const float *pixels, int N);
/* The same into image slots first..first+N-1 (first + N <= max_images); the
 * returned features are that slot range of the tower's output buffer. */
float    *clip_vit_forward_at(clip_vit *v, const float *pixels, int N, int first);
/* hidden_states[select_layer] of the last forward with CLS: [N, 1 + g*g, W]. */
const float *clip_vit_hidden(const clip_vit *v);
/* The whole k_malloc'd block (activations, and with trainable the backward's). */
size_t    clip_vit_activation_bytes(const clip_vit *v);
/* What clip_vit_create(c, ., max_images) will k_malloc, without allocating
 * (the same layout code; `anyref plan`). 0 on a bad config. */
size_t    clip_vit_plan_bytes(const clip_vit_cfg *c, int max_images);
/* Trainable towers only. dout [N, clip_vit_tokens(v), W] = d(features) of the
 * images in slots first..first+N-1 (each filled by a forward since create):
 * ACCUMULATES into the gradient of every trainable tower tensor (patch
 * embedding, class and position embeddings, pre_layrnorm, each run layer's
 * LayerNorms, q/k/v/out projections and fc1/fc2). No pixel gradient. The
 * activations are kept, so a second backward adds the same gradients again.
 * 0, or -1 + ar_error (a frozen tower, a slot range outside the tower, a slot
 * no forward filled). clip_vit_backward: the images of the last forward. */
int       clip_vit_backward(clip_vit *v, const float *dout);
int       clip_vit_backward_at(clip_vit *v, const float *dout, int N, int first);

/* CLIPImageProcessor's normalisation (SPEC 2.3), host memory: an S x S RGB
 * image, 8-bit interleaved rgb[S*S*3] (already resized/cropped to S x S by the
 * data pipeline) -> out[3, S, S] = (rgb/255 - mean[c]) / std[c]. */
extern const float CLIP_MEAN[3], CLIP_STD[3];
void clip_normalize_u8(float *out, const uint8_t *rgb, int S);

/* ------------------------------------------------------------------------ */
/* mm_projector                                                             */
/* ------------------------------------------------------------------------ */
typedef enum { MM_PROJ_LINEAR = 0, MM_PROJ_MLP2X_GELU = 1 } mm_proj_type;

typedef struct {
    mm_proj_type type;
    int in_dim;          /* the CLIP width, 1024 */
    int out_dim;         /* D, the LLM width (4096 for 7B) */
    int trainable;       /* 0: frozen (AnyRef's default) */
    const char *prefix;  /* NULL = "model." */
} mm_projector_cfg;

/* "linear" or "mlp2x_gelu" (LLaVA's mm_projector_type) -> *t; -1 + ar_error otherwise. */
int mm_projector_type_from_name(const char *name, mm_proj_type *t);

typedef struct mm_projector mm_projector;

/* Declares the projector tensors (nn.Linear initialisers: weights kaiming-uniform
 * bound 1/sqrt(fan_in), biases normal with the same variance). -1 + ar_error. */
int           mm_projector_declare(const mm_projector_cfg *c, ar_params *ps);
/* Binds to allocated parameters; activations for up to max_rows rows per forward. */
mm_projector *mm_projector_create(const mm_projector_cfg *c, ar_params *ps, int max_rows);
/* The block mm_projector_create(c, ., max_rows) k_mallocs (`anyref plan`). */
size_t        mm_projector_plan_bytes(const mm_projector_cfg *c, int max_rows);
size_t        mm_projector_block_bytes(const mm_projector *p);   /* of a created projector */
void          mm_projector_free(mm_projector *p);
/* in [n, in_dim] -> [n, out_dim], valid until the next forward. `in` is kept
 * for backward: leave it unchanged until then. NULL + ar_error when n is
 * outside 1..max_rows. */
float        *mm_projector_forward(mm_projector *p, const float *in, int n);
/* Backward of the last forward from dout [n, out_dim]: accumulates into the
 * projector's weight gradients (if trainable) and into din [n, in_dim] (may be
 * NULL: not wanted). With both absent it does nothing. */
void          mm_projector_backward(mm_projector *p, const float *dout, float *din);
#endif
