/* model/imagebind_audio.h — the frozen ImageBind audio encoder (imagebind_huge's
 * audio branch) and the trainable audio_projector of AnyRef (SPEC 2.7).
 *
 * Input: normalised log-mel fbank clips fbank[N, 1, n_mels, target_len] (the
 * waveform -> fbank step is data/'s; 128 x 204 for imagebind_huge), N clips
 * (3 per audio). Forward, as facebookresearch/ImageBind imagebind_model.py:
 *   stem   Conv2d(1 -> D, kernel k, stride s, no bias) -> [N, D, GH, GW],
 *          GH = (n_mels - k)/s + 1, GW = (target_len - k)/s + 1 (floor; 12 x 19
 *          for 128 x 204, k 16, s 10), flattened row-major to L = GH*GW patch
 *          tokens [N, L, D], LayerNorm (eps 1e-5, nn.LayerNorm's default);
 *          then CLS prepended (token 0) and pos_embed [1, T = L+1, D] added.
 *   trunk  no pre-transformer LayerNorm (Identity for audio); depth pre-LN blocks:
 *            x += out_proj(MHA(norm_1(x)))      nn.MultiheadAttention, bias,
 *                                               add_bias_kv: the learned
 *                                               bias_k/bias_v [1,1,D] are one extra
 *                                               key/value appended AFTER the
 *                                               in-projection (S = T + 1 keys)
 *            x += fc2(GELU(fc1(norm_2(x))))     exact GELU, hidden mlp_ratio*D
 *          block LayerNorms eps 1e-6; drop_path is the identity at eval.
 *   head   LayerNorm(eps 1e-6) -> token 0 (CLS) -> Linear(D -> out_dim, no bias).
 *   post   L2-normalise (F.normalize, dim -1) then x logit_scale (20: the frozen
 *          LearnableLogitScaling(20, learnable=False); its buffer
 *          modality_postprocessors.audio.1.log_logit_scale is not declared, the
 *          scale is the config's constant).
 * Output emb[N, out_dim] (one embedding per clip; AnyRef keeps the 3 clips as 3
 * tokens, no clip mean). Projector: tok[N, llm_dim] = emb @ W^T + b, with
 * forward and backward (gradients into W, b and optionally emb).
 *
 * Names (prefix "" = the official imagebind_huge.pth names; AnyRef nests the
 * encoder under "model.audio_encoder."):
 *   <p>modality_preprocessors.audio.rgbt_stem.proj.weight          [D, 1, k, k]
 *      (PatchEmbedGeneric with a one-element stem stores the Conv2d itself as
 *       .proj, so there is no Sequential index)
 *   <p>modality_preprocessors.audio.rgbt_stem.norm_layer.{weight,bias}   [D]
 *   <p>modality_preprocessors.audio.cls_token                      [1, 1, D]
 *   <p>modality_preprocessors.audio.pos_embedding_helper.pos_embed [1, T, D]
 *   <p>modality_trunks.audio.blocks.{i}.attn.in_proj_weight        [3D, D]  (q; k; v rows)
 *   <p>modality_trunks.audio.blocks.{i}.attn.in_proj_bias          [3D]
 *   <p>modality_trunks.audio.blocks.{i}.attn.bias_k / .bias_v      [1, 1, D]
 *   <p>modality_trunks.audio.blocks.{i}.attn.out_proj.{weight,bias} [D, D], [D]
 *   <p>modality_trunks.audio.blocks.{i}.norm_1 / norm_2.{weight,bias} [D]
 *   <p>modality_trunks.audio.blocks.{i}.mlp.fc1.{weight,bias}      [F, D], [F]
 *   <p>modality_trunks.audio.blocks.{i}.mlp.fc2.{weight,bias}      [D, F], [D]
 *   <p>modality_heads.audio.0.{weight,bias}                        [D]
 *   <p>modality_heads.audio.2.weight                               [out_dim, D]
 *   <q>audio_projector.{weight,bias}   [llm_dim, out_dim], [llm_dim]
 *      (AnyRefModel.audio_projector = nn.Linear(1024, hidden); q = "model.")
 *
 * All tensors are backend memory (k_malloc); activations live in one block
 * sized at creation for at most max_clips clips, nothing is allocated per call.
 * The encoder keeps no activations for a backward (it is frozen).
 * Depends on kernels/, core/ (errors), model/params. */
#ifndef ANYREF_IMAGEBIND_AUDIO_H
#define ANYREF_IMAGEBIND_AUDIO_H
#include "model/params.h"

typedef struct {
    int embed_dim;          /* D: 768 */
    int depth;              /* blocks: 12 */
    int heads;              /* 12; D % heads == 0 */
    int mlp_ratio;          /* F = mlp_ratio * D: 4 */
    int kernel, stride;     /* stem Conv2d: 16, 10 */
    int n_mels, target_len; /* fbank H x W: 128 x 204 */
    int out_dim;            /* head output: 1024 */
    float logit_scale;      /* post-processing scale: 20 */
    int llm_dim;            /* audio_projector output width; 0 = no projector */
    int proj_trainable;     /* audio_projector trainable (1 in AnyRef) */
    int frozen_half;        /* the blocks' in_proj / out_proj / fc1 / fc2 weights (imagebind_huge: 85 of its 86 M
                               audio parameters) stored in 16 bits, IB_HALF_BF16 or IB_HALF_F16 (0: fp32); their
                               products then follow the GEMM mode like every 16-bit weight's (kernels.h) */
    const char *prefix;     /* encoder names; NULL = "" (official ImageBind) */
    const char *proj_prefix;/* projector names; NULL = "model." */
} imagebind_audio_cfg;
enum { IB_HALF_BF16 = 1, IB_HALF_F16 = 2 };   /* the values of llama.h's LLAMA_FROZEN_* */

/* imagebind_huge's audio branch with a projector to llm_dim (0: none). */
imagebind_audio_cfg imagebind_audio_huge(int llm_dim);
/* Patch grid of the stem (GH x GW) and token count T = GH*GW + 1. -1 + ar_error
 * on a bad config (non-positive sizes, D % heads, kernel larger than the fbank). */
int imagebind_audio_grid(const imagebind_audio_cfg *c, int *gh, int *gw, int *tokens);

typedef struct imagebind_audio imagebind_audio;

/* Declares the encoder (frozen) and, if llm_dim > 0, the projector. Initialisers
 * for use without a checkpoint: Linear/Conv weights kaiming-uniform (PyTorch's
 * default bound 1/sqrt(fan_in)), LayerNorms 1/0, other biases 0, cls/pos and
 * bias_k/bias_v normal(D^-1/2) (OpenCLIP-style), projector bias normal with
 * nn.Linear's variance 1/(3 fan_in). -1 + ar_error. */
int imagebind_audio_declare(const imagebind_audio_cfg *c, ar_params *ps);
/* Binds to the allocated parameters, for at most max_clips clips. NULL + ar_error. */
imagebind_audio *imagebind_audio_create(const imagebind_audio_cfg *c, ar_params *ps, int max_clips);
/* The activation block imagebind_audio_create(c, ., max_clips) k_mallocs,
 * without allocating (the same sizing code; `anyref plan`). 0 on a bad config. */
size_t imagebind_audio_plan_bytes(const imagebind_audio_cfg *c, int max_clips);
size_t imagebind_audio_activation_bytes(const imagebind_audio *m);   /* of a created encoder */
void imagebind_audio_free(imagebind_audio *m);

/* Optional copies of intermediate tensors (tests, debugging); any may be NULL. */
typedef struct {
    float *stem;    /* [N, T, D]: tokens entering block 0 (CLS + patches + pos_embed) */
    float **blocks; /* NULL or depth pointers (each may be NULL): [N, T, D] after block i */
    float *head;    /* [N, out_dim]: head output before the L2 normalisation */
} imagebind_audio_taps;

/* emb[N, out_dim] = the post-processed embedding of each fbank clip
 * fbank[N, 1, n_mels, target_len]; 1 <= N <= max_clips. -1 + ar_error. */
int imagebind_audio_encode(imagebind_audio *m, const float *fbank, int N, float *emb,
                           const imagebind_audio_taps *taps);
/* tok[N, llm_dim] = audio_projector(emb[N, out_dim]). -1 + ar_error (no projector, N). */
int imagebind_audio_project(imagebind_audio *m, const float *emb, int N, float *tok);
/* Backward of the projector from dtok[N, llm_dim]: ACCUMULATES into the
 * registry gradients of audio_projector (if trainable) and into demb[N, out_dim]
 * (may be NULL: the encoder is frozen). -1 + ar_error. */
int imagebind_audio_project_backward(imagebind_audio *m, const float *dtok, const float *emb, int N,
                                     float *demb);
#endif
