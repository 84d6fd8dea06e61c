/* model/llama.h — the LLaMA decoder (SPEC 2.1): pre-RMSNorm, RoPE (HF rotate-half),
 * grouped-query causal attention, SwiGLU MLP, final RMSNorm, untied lm_head, and
 * LoRA (SPEC 2.2) on any subset of the seven projections. Forward and hand-written
 * backward through kernels.h only, so it runs on either backend; sizes from a
 * 2-layer toy (the demo) to 7B. Parameter names follow Hugging Face
 * (model.layers.N.self_attn.q_proj.weight, ...; LoRA tensors add
 * .lora_A.weight / .lora_B.weight after the projection name).
 *
 * Batches are B sequences of T tokens, right-padded: pad positions carry any
 * valid token id and target -100; causal attention keeps them invisible to
 * the real tokens before them.
 *
 * Splicing (for image/audio feature tokens, later issues): llama_embed() fills
 * the input embeddings from token ids, leaving rows whose id is negative
 * untouched; the caller writes those rows through llama_embeds(), then
 * llama_forward_embeds() runs the decoder. After llama_backward(),
 * llama_embeds_grad() holds dL/d(input embeddings) for every row, and the
 * embedding table received the gradient of the rows with id >= 0 only. */
#ifndef ANYREF_LLAMA_H
#define ANYREF_LLAMA_H
#include "core/arena.h"
#include "model/params.h"

/* The projections LoRA can target (bit i of llama_cfg.lora_targets). */
enum { LLAMA_Q, LLAMA_K, LLAMA_V, LLAMA_O, LLAMA_GATE, LLAMA_UP, LLAMA_DOWN, LLAMA_NPROJ };
#define LLAMA_LORA_QV ((1u << LLAMA_Q) | (1u << LLAMA_V))

typedef struct {
    int vocab, dim, layers, heads, kv_heads, mlp_hidden, max_seq;
    float norm_eps, rope_theta;
    int lora_rank;          /* 0: no LoRA */
    float lora_alpha, lora_dropout;
    unsigned lora_targets;  /* bit mask over LLAMA_Q..LLAMA_DOWN; 0 with lora_rank > 0 means q,v */
    int train_base;         /* 1: every base weight trainable (pre-training / full fine-tune) */
    int train_embed;        /* with train_base 0: embed_tokens trainable (AnyRef recipe) */
    int train_lm_head;      /* with train_base 0: lm_head trainable (AnyRef recipe) */
    int checkpoint_layers;  /* gradient checkpointing: keep each layer's input only and
                               recompute the layer's forward during backward (7B configs) */
    int flash_attention;    /* memory-efficient attention (attention_flash_*): per layer the
                               rows' log-sum-exp instead of the [B,H,T,T] probabilities */
    int frozen_half;        /* frozen projection weights (q/k/v/o/gate/up/down) stored in 16 bits,
                               LLAMA_FROZEN_BF16 or LLAMA_FROZEN_F16 (0: fp32): half their memory,
                               widened to fp32 inside each product */
    int act_half;           /* LLAMA_ACT_BF16: bf16 activations (model.activations = bf16), below */
} llama_cfg;

/* bf16 activations (llama_cfg.act_half = LLAMA_ACT_BF16), a training-memory
 * option. In a full forward (llama_forward_embeds) every per-layer tensor the
 * decoder keeps for backward is rounded to bf16 (round to nearest even, the
 * convert_f32_to_bf16 kernel) right where it is produced, and the forward
 * continues from the rounded value: the residual stream entering each layer
 * (x), xn1, q, k, v, qr, kr, xm, xn2, g, u, h, and LoRA's saved dropout
 * output xd and u (LoRA's term is then computed from the rounded xd and u).
 * fp32 stay: the attention output ao (attention_flash_backward takes its rows'
 * term from rowsum(dout ⊙ out), which a rounded out gets wrong: 5e-3 on the
 * AnyRef step's q/k LoRA gradients, tests/test_anyref_parity.c), rstd1/rstd2,
 * the log-sum-exp, the [B,H,T,T] probabilities, the
 * LoRA dropout masks (their value 1/(1-p) is not exact in bf16), x_final, the
 * final hidden states, the logits and every gradient buffer; backward takes
 * each rounding's derivative as 1. The rounding belongs to the forward
 * function whatever the storage, so a step is one well-defined function whose
 * backward reads exactly what forward used: with and without
 * checkpoint_layers, flash or not, the loss and gradients are bitwise equal.
 * Storage: the kernels compute in one fp32 work set of one layer; without
 * checkpoint_layers each layer's kept tensors live in a bf16 store (half the
 * bytes; the pre-RoPE q and k are rounded but not kept, backward never reads
 * them) and are widened back into the work set before that layer's backward;
 * ao, rstd, lse, P and the masks stay per layer in fp32. With checkpoint_layers
 * only each layer's input x is stored (bf16) and the recomputation rounds the
 * same way, reproducing the forward bit for bit.
 * Not rounded: llama_step (KV-cache decoding) and a prefill (a full forward in
 * evaluation mode while the KV cache is enabled) run in fp32, so generation is
 * the fp32 model's; evaluation forwards without the cache round like training
 * ones (the loss a training step would see; backward stays valid).
 * llama_last_attention(_rows) work as with fp32 activations (the rows are
 * recomputed from the last layer's rounded qr, kr). The input embeddings
 * (llama_embeds) are rounded in place by the forward. */
enum { LLAMA_ACT_FP32 = 0, LLAMA_ACT_BF16 = 1 };

enum { LLAMA_FROZEN_FP32 = 0, LLAMA_FROZEN_BF16 = 1, LLAMA_FROZEN_F16 = 2 };

typedef struct llama llama;

/* "q_proj,v_proj" (any of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj,
 * comma or space separated) -> bit mask; -1 + ar_error naming the unknown entry. */
int     llama_parse_lora_targets(const char *list, unsigned *mask);
/* Declares the parameters in ps (not yet allocated). */
int     llama_declare(const llama_cfg *c, ar_params *ps);
/* Binds to allocated parameters and sizes activations for B sequences of T tokens. */
llama  *llama_create(const llama_cfg *c, ar_params *ps, int B, int T);
void    llama_free(llama *m);
/* Token ids -> input embeddings (rows with id < 0 are left for the caller). */
void    llama_embed(llama *m, const int *tokens);
float  *llama_embeds(llama *m);                 /* [B*T, dim], backend memory */
/* Runs the decoder from the input embeddings. With targets (ignore -100) returns
 * the mean CE loss over the counted targets and keeps what backward needs. */
float   llama_forward_embeds(llama *m, const int *targets, uint64_t dropout_seed, int *count);
/* llama_embed + llama_forward_embeds. */
float   llama_forward(llama *m, const int *tokens, const int *targets, int B, int T,
                      uint64_t dropout_seed, int *count);
/* Backward of the last forward (with targets), accumulating into the parameter gradients;
 * loss_weight is the gradient of the objective with respect to the returned loss. */
void    llama_backward(llama *m, float loss_weight);
const float *llama_embeds_grad(const llama *m); /* [B*T, dim] after llama_backward */
/* Gradient-ready hook (data-parallel all-reduce overlapped with backward):
 * during llama_backward, fn(ctx, layers) once lm_head's and the final norm's
 * gradients are complete, fn(ctx, l) once layer l's are (l = layers-1 .. 0),
 * fn(ctx, -1) after the embedding's. The backend's work queued before a call
 * may still be running (synchronise before reading). fn NULL: none. */
void    llama_set_grad_hook(llama *m, void (*fn)(void *ctx, int layer), void *ctx);
/* For heads on top of the decoder (the [SEG] path, SPEC 2.5), after a forward:
 * the final hidden states (output of the final RMSNorm, HF hidden_states[-1])
 * and the last layer's attention probabilities [B, heads, T, T] (NULL with
 * flash_attention: llama_last_attention_rows recomputes the rows a head needs). */
const float *llama_final_hidden(const llama *m);   /* [B*T, dim] */
const float *llama_last_attention(const llama *m);
/* llama_backward plus extra gradients from such a head: dhidden_extra [B*T, dim]
 * on the final hidden states and datt_extra [B, heads, T, T] on the last layer's
 * attention probabilities (either may be NULL). */
void    llama_backward_ex(llama *m, float loss_weight, const float *dhidden_extra, const float *datt_extra);
/* With flash_attention: selected rows of the
 * last layer's probabilities after a forward, recomputed from its queries,
 * keys and log-sum-exp (attention_rows_forward): rows[n] (backend memory,
 * distinct) = b*T + t, prow[n, heads, T] (backend memory). 0, or -1 +
 * ar_error without flash_attention (llama_last_attention then has every row). */
int     llama_last_attention_rows(llama *m, const int *rows, int n, float *prow);
/* llama_backward_ex with the extra gradient dprow[n, heads, T] on those rows
 * (prow as llama_last_attention_rows gave them) instead of datt_extra. */
void    llama_backward_rows(llama *m, float loss_weight, const float *dhidden_extra, const int *rows, int n,
                            const float *prow, const float *dprow);
const float *llama_logits(const llama *m);      /* [B*T, vocab] of the last forward */
size_t  llama_activation_bytes(const llama *m);
/* What llama_create(c, ., B, T) will take for its activation arena, without
 * allocating anything (the same layout code; `anyref plan`). 0 on bad sizes. */
size_t  llama_plan_activation_bytes(const llama_cfg *c, int B, int T);
/* Training mode (the default) applies LoRA dropout; evaluation mode (0) does not. */
void    llama_set_training(llama *m, int training);
int     llama_training(const llama *m);
const llama_cfg *llama_config(const llama *m);
int     llama_batch(const llama *m);            /* B of llama_create */
int     llama_seq(const llama *m);              /* T of llama_create */
/* llama_embed, then rows with a negative id -(r + 1) take feat[r] ([n_feat, dim],
 * backend) as their input embedding. -1 + ar_error on a row beyond n_feat. */
int     llama_embed_feat(llama *m, const int *tokens, const float *feat, int n_feat);

/* Incremental decoding (model/generate.c). llama_cache_enable allocates, once,
 * a K and a V cache per layer, [(B+1), T, KVd] each (post-RoPE keys; row B is
 * a spare for permuting rows), and the step buffers (B rows of every
 * activation); llama_cache_disable frees them (llama_free does too). While the
 * cache is enabled, every full forward in evaluation mode (llama_set_training
 * 0) also writes each layer's post-RoPE keys and values of all B x T positions
 * into rows 0..B-1 of the cache: that forward is the prefill.
 * llama_cache_prefill is kept for callers that name the step; it has nothing
 * left to do.
 * llama_step runs one token per row: tokens[b] (host; a negative id -(r + 1)
 * takes feat[r] as its embedding) at position pos[b] (host; pos[b] < 0 leaves
 * row b idle), writes that position's key and value into the cache and attends
 * over cache positions 0..pos[b]; no dropout. Then llama_step_logits() holds
 * the next-token logits [B, vocab] (backend; idle rows meaningless).
 * -1 + ar_error (cache off, a position >= T, a bad id or feature row).
 * llama_cache_copy_row copies cache positions 0..len-1 of src_row to dst_row
 * (rows 0..B; B is the spare) — beam search reordering. */
int     llama_cache_enable(llama *m);
void    llama_cache_disable(llama *m);
int     llama_cache_enabled(const llama *m);
void    llama_cache_prefill(llama *m);
int     llama_step(llama *m, const int *tokens, const int *pos, const float *feat, int n_feat);
const float *llama_step_logits(const llama *m);
void    llama_cache_copy_row(llama *m, int dst_row, int src_row, int len);
#endif
