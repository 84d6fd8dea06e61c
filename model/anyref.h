/* model/anyref.h — the AnyRef training step (SPEC 1, 2.5, 2.6, 2.9): LLaMA
 * decoder (+ LoRA) -> [SEG] head (refocusing + text_hidden_fcs) -> SAM prompt
 * encoder (dense PE, no_mask dense embedding) + mask decoder -> post-processing
 * to the original image size -> joint loss
 *     total = ce_w * CE + bce_w * BCE + dice_w * Dice     (defaults 1.0, 2.0, 0.5)
 *
 * Aggregation (SPEC 2.9, the official LISA/AnyRef loop). For sample b with n_b
 * [SEG]s (n_b ground-truth masks) and N = Σ_b n_b in the batch, per-mask losses
 * l_bm (BCE: mean over pixels of softplus(x) - x*y; Dice: kernels.h dice_forward),
 *     BCE  = Σ_b [Σ_m l_bm / (n_b + 1e-8) * n_b] / (N + 1e-8)
 *     Dice = Σ_b [Σ_m l_bm / n_b       * n_b] / (N + 1e-8)
 * (computed in double). A sample without [SEG] adds only its tokens to CE; a
 * batch without any [SEG] has BCE = Dice = 0 and total = ce_w * CE. CE is the
 * decoder's mean token cross-entropy over the batch (model/llama.h).
 *
 * One step: anyref_forward (losses, every activation backward needs), then
 * anyref_backward, which accumulates into the registry's gradients in reverse:
 * dBCE/dDice on the original-size logits -> sam_post backward -> mask decoder
 * backward (d sparse = d [SEG] embeddings) -> seg_head backward (d final hidden
 * states, d last-layer attention) -> llama_backward_ex(ce_w, ...).
 *
 * The [SEG]s of one sample are P prompts sharing that sample's image embedding
 * (one decoder run per sample with [SEG]). The decoder keeps the activations of
 * its last run only, so backward re-runs the (deterministic, dropout-free)
 * decoder forward for every sample but the last one processed: one decoder for
 * the whole batch, at the price of (samples with [SEG]) - 1 extra decoder
 * forwards per step, small next to the LLM.
 *
 * Memory: everything (decoder arena, post-processed logits of every [SEG],
 * their gradients, sam_post scratch, d hidden / d attention for the LLM, the
 * dense prompt tensors) is allocated by anyref_create; nothing per step.
 * Tensors passed in (image embeddings, ground-truth masks) are backend memory
 * (k_malloc); token ids, targets and sizes are host arrays.
 * Depends on model/llama, model/seg_head, model/sam_prompt, model/sam_decoder,
 * model/sam_post, kernels/, core/error. */
#ifndef ANYREF_ANYREF_H
#define ANYREF_ANYREF_H
#include <stdint.h>
#include "model/params.h"
#include "model/llama.h"
#include "model/seg_head.h"
#include "model/sam_decoder.h"

typedef struct {
    llama_cfg llm;
    /* [SEG] head: seg.seg_token, seg.lambda (0.1 in the paper; 0 disables
     * refocusing), seg.trainable, seg.prefix. seg.dim and seg.out_dim are set
     * from llm.dim and dec.dim (a non-zero value that disagrees is an error). */
    seg_head_cfg seg;
    sam_decoder_cfg dec;        /* dec.n_sparse must be 1 (one [SEG] embedding per prompt) */
    const char *dec_preset;     /* sam_decoder_declare preset; NULL = "anyref" */
    const char *prompt_prefix;  /* sam_prompt names prefix; NULL = "" (as the decoder's names) */
    int img_size;               /* S, SAM encoder input side; 0 = 16 * dec.H (1024 for 64x64) */
    int max_orig_h, max_orig_w; /* largest original image (and loss-mask) size a step may carry */
    float ce_w, bce_w, dice_w;  /* 1.0, 2.0, 0.5 */
} anyref_cfg;

/* The paper's settings around a given decoder config: SAM decoder default
 * sizes, preset "anyref", λ 0.1, trainable fcs, loss weights 1/2/0.5,
 * max original (and mask) size 1024 x 1024. The caller fills llm and seg.seg_token. */
anyref_cfg anyref_default_cfg(void);

typedef struct {
    float total;        /* ce_w*ce + bce_w*bce + dice_w*dice */
    float ce;           /* mean token cross-entropy (unweighted) */
    float bce, dice;    /* aggregated mask losses (unweighted; 0 without [SEG]) */
    int ce_count;       /* targets counted by CE */
    int n_seg;          /* N: [SEG]s (= masks) in the batch */
    int n_seg_samples;  /* samples with at least one [SEG] */
} anyref_losses;

typedef struct anyref anyref;

/* Declares every tensor (LLaMA + LoRA, text_hidden_fcs, prompt encoder,
 * mask decoder) in ps. -1 + ar_error. */
int     anyref_declare(const anyref_cfg *c, ar_params *ps);
/* Binds to allocated parameters, for batches of B x T tokens and at most
 * max_seg [SEG]s per batch. NULL + ar_error. */
anyref *anyref_create(const anyref_cfg *c, ar_params *ps, int B, int T, int max_seg);
void    anyref_free(anyref *m);
/* Device memory of the step's activations, by part (bytes): the decoder's
 * arena, the [SEG] head's block, the mask decoder's arena and the step's own
 * buffers (dense prompt tensors, mask logits and their gradients, sam_post
 * scratch, d hidden, d attention). anyref_plan computes it from the config
 * without allocating (the same sizing code as anyref_create; `anyref plan`);
 * anyref_memory reads it off a created step. */
typedef struct { size_t llm, seg_head, decoder, step; } anyref_mem;
int     anyref_plan(const anyref_cfg *c, int B, int T, int max_seg, anyref_mem *out);
void    anyref_memory(const anyref *m, anyref_mem *out);
/* The dense prompt tensors are constants of the frozen prompt-encoder weights,
 * computed at the first forward; call this after loading new weights into them. */
void    anyref_refresh_prompt(anyref *m);

/* One training batch of B samples (the B x T of anyref_create).
 *   tokens, targets [B*T] (host; targets shifted, -100 ignored, model/llama.h)
 *   image_emb[b]    [C, H, W] SAM image embedding of sample b (backend);
 *                   samples without [SEG] need none (entry may be NULL, and
 *                   image_emb itself may be NULL for a batch without [SEG])
 *   orig_hw         [B*2] (host) original image size (H0, W0) of each sample:
 *                   the crop and the resize of SAM's post-processing
 *   mask_hw         [B*2] (host) or NULL: the size (Hm, Wm) of sample b's
 *                   ground-truth masks when it differs from (H0, W0) (AVSBench,
 *                   SPEC 2.9: the original-size prediction is resized once more
 *                   to the mask's size and the losses are taken there); NULL or
 *                   an entry <= 0 means "the original size"
 *   gt_masks[k]     [Hm*Wm] ground-truth mask (0/1 floats, backend) of the k-th
 *                   [SEG] of the batch, batch-major then by position (torch.where
 *                   order); may be NULL when the batch holds no [SEG]
 *   feat, n_feat    [n_feat, D] feature rows (backend; model/references.h):
 *                   a token id -(r + 1) takes feat[r] as its input embedding
 *                   instead of an embed_tokens row (images and references
 *                   spliced into the sequence; their targets are -100). NULL
 *                   when no token is negative.
 *   dfeat           [n_feat, D] (backend) or NULL: anyref_backward ACCUMULATES
 *                   d total / d feat there (then refs_backward).
 *   dimage_emb      [B] (host array of backend pointers [C, H, W]) or NULL:
 *                   anyref_backward ACCUMULATES d total / d image_emb[b] into
 *                   dimage_emb[b] (entries may be NULL) — for a trainable SAM
 *                   image encoder.
 * image_emb, gt_masks and feat must stay valid until anyref_backward
 * (backward reads them again). */
typedef struct {
    const int *tokens, *targets;
    const float *feat;
    int n_feat;
    float *dfeat;
    float *const *dimage_emb;
    const float *const *image_emb;
    const int *orig_hw;
    const int *mask_hw;
    const float *const *gt_masks;
} anyref_batch;

/* One forward of the whole step. Returns the total loss and fills *out (may be
 * NULL); NAN + ar_error on bad input (too many [SEG]s, [SEG] at position 0,
 * original or mask size over the maximum, missing mask or image embedding). */
float   anyref_forward(anyref *m, const anyref_batch *in, uint64_t dropout_seed, anyref_losses *out);
/* Backward of the last successful forward, of scale * total (scale: 1, or
 * 1/grad_accum for gradient accumulation); accumulates into ps's gradients. */
void    anyref_backward(anyref *m, float scale);

/* After a forward: the mask logits of [SEG] k at its loss size ([Hm*Wm], the
 * original size unless mask_hw said otherwise; backend, valid until the next
 * forward) and that size; NULL when k is out of range. */
const float *anyref_mask_logits(const anyref *m, int k, int *Hm, int *Wm);
/* After a forward: per-[SEG] (unweighted) BCE and Dice, host [n_seg]. */
const float *anyref_mask_bce(const anyref *m);
const float *anyref_mask_dice(const anyref *m);
/* The sample of [SEG] k (host [n_seg]). */
const int   *anyref_seg_sample(const anyref *m);
/* Greedy decoding: model/generate.h anyref_generate_ex with GEN_GREEDY, the
 * KV cache, max_new new tokens and the one stop id stop_id (none when
 * negative). Row b of tokens [B*T] (host) holds a prompt of len[b] tokens
 * (feature rows as negative ids, as in anyref_batch, with feat [n_feat, D]
 * backend); each step appends the argmax of the next-token logits (lowest id
 * on ties) to every row not yet finished, until a row emits stop_id (kept),
 * reaches T, or max_new tokens were added; a row with len[b] <= 0 is skipped.
 * Positions after a row's end hold pad. Runs in evaluation mode (no LoRA
 * dropout; the previous mode is restored). On return len[b] is the new
 * length. 0, or -1 + ar_error (bad feature row). */
int          anyref_generate(anyref *m, int *tokens, int *len, int max_new, int stop_id, int pad,
                             const float *feat, int n_feat);
/* Marks the last forward as no training forward (anyref_backward then does
 * nothing until the next anyref_forward): after other uses of the decoder. */
void         anyref_forget_forward(anyref *m);
llama       *anyref_llama(anyref *m);
void         anyref_set_training(anyref *m, int training);   /* LoRA dropout on/off */
#endif
