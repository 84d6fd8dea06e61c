/* model/sam_decoder.h — the SAM mask decoder (SPEC 2.6), trainable: two-way
 * transformer (token self-attention, token->image and image->token
 * cross-attention, ReLU MLP, post-LayerNorms eps 1e-5), final token->image
 * attention, output upscaling (ConvT 2x2 -> LayerNorm2d eps 1e-6 -> GELU ->
 * ConvT 2x2 -> GELU), hypernetwork MLPs and the IoU head. Forward and
 * hand-written backward through kernels.h only, so it runs on either backend.
 * Parameter names are segment-anything's (mask_decoder.transformer.layers.0.
 * self_attn.q_proj.weight, mask_decoder.output_upscaling.0.weight, ...).
 *
 * One image embedding is shared by P prompts (LISA/AnyRef: one prompt per
 * [SEG]); each prompt has n_sparse sparse embeddings (the [SEG] embedding).
 * Output is the single-mask output (multimask_output=False): mask 0 of the
 * four mask tokens, low resolution [P, 4H, 4W]. Its gradient reaches neither
 * the IoU head nor hypernetwork MLPs 1..3 (exactly zero, SPEC 2.2), so that
 * work is skipped; the IoU predictions [P, 4] are computed in the forward.
 *
 * Tensors passed in and returned are backend memory (k_malloc); activations
 * live in one arena sized for max_prompts by a measuring pass. */
#ifndef ANYREF_SAM_DECODER_H
#define ANYREF_SAM_DECODER_H
#include "core/arena.h"
#include "model/params.h"

typedef struct {
    int dim;             /* transformer_dim, 256 */
    int depth;           /* two-way blocks, 2 */
    int heads;           /* 8 */
    int mlp_dim;         /* 2048 */
    int downsample;      /* internal dim of the cross-attentions = dim / downsample, 2 */
    int num_mask_tokens; /* num_multimask_outputs + 1, 4 */
    int iou_hidden;      /* IoU head hidden width, 256 */
    int H, W;            /* image embedding grid, 64 x 64 */
    int n_sparse;        /* sparse prompt embeddings per prompt, 1 */
} sam_decoder_cfg;

/* SAM ViT-H/L/B mask decoder sizes with a 64x64 embedding and one sparse token. */
sam_decoder_cfg sam_decoder_default_cfg(void);

typedef struct sam_decoder sam_decoder;

/* Declares the parameters (not yet allocated). preset chooses what is trainable:
 *   "anyref": mask_tokens, output_upscaling.*, output_hypernetworks_mlps.* (SPEC 2.2)
 *   "lisa":   the whole mask decoder
 *   "none":   everything frozen
 * -1 + ar_error on bad sizes or an unknown preset. */
int          sam_decoder_declare(const sam_decoder_cfg *c, ar_params *ps, const char *preset);
/* Binds to allocated parameters and sizes activations for up to max_prompts prompts. */
sam_decoder *sam_decoder_create(const sam_decoder_cfg *c, ar_params *ps, int max_prompts);
void         sam_decoder_free(sam_decoder *d);
/* image_emb, image_pe, dense: [C,H,W]; sparse: [P, n_sparse, C] (backend memory).
 * Returns the low-resolution masks [P, 4H, 4W] (mask 0 of each prompt), valid
 * until the next forward; NULL + ar_error when P is out of 1..max_prompts. */
float       *sam_decoder_forward(sam_decoder *d, const float *image_emb, const float *image_pe,
                                 const float *dense, const float *sparse, int P);
/* IoU predictions [P, num_mask_tokens] of the last forward (column 0 is the
 * single-mask output's). */
const float *sam_decoder_iou(const sam_decoder *d);
/* Backward of the last forward: dmasks [P,4H,4W]. Accumulates into the
 * trainable parameter gradients, dsparse [P,n_sparse,C] and dimage [C,H,W]
 * (either may be NULL: not wanted). */
void         sam_decoder_backward(sam_decoder *d, const float *dmasks, float *dsparse, float *dimage);
size_t       sam_decoder_activation_bytes(const sam_decoder *d);
/* What sam_decoder_create(c, ., max_prompts) will take for its arena, without
 * allocating (the same layout code; `anyref plan`). 0 on a bad config. */
size_t       sam_decoder_plan_bytes(const sam_decoder_cfg *c, int max_prompts);
#endif
