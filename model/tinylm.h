/* model/tinylm.h — a small LLaMA-style decoder (pre-RMSNorm, RoPE, grouped-query
 * attention, SwiGLU MLP, untied lm_head, optional LoRA on q_proj/v_proj) that
 * drives the embedded demo. It is the same block the real LLaMA model is built
 * from, at toy size: forward and hand-written backward through kernels.h only.
 * Parameter names follow Hugging Face (model.layers.N.self_attn.q_proj.weight...). */
#ifndef ANYREF_TINYLM_H
#define ANYREF_TINYLM_H
#include "core/arena.h"
#include "model/params.h"

typedef struct {
    int vocab, dim, layers, heads, kv_heads, mlp_hidden, max_seq;
    float norm_eps, rope_theta;
    int lora_rank;          /* 0: no LoRA; >0: LoRA on q_proj and v_proj */
    float lora_alpha, lora_dropout;
    int train_base;         /* 1: base weights trainable (pre-training); 0: frozen (LoRA tuning) */
} tinylm_cfg;

typedef struct tinylm tinylm;

/* Declares the parameters in ps (not yet allocated). */
int     tinylm_declare(const tinylm_cfg *c, ar_params *ps);
/* Binds to allocated parameters and sizes activations for B sequences of T tokens. */
tinylm *tinylm_create(const tinylm_cfg *c, ar_params *ps, int B, int T);
void    tinylm_free(tinylm *m);
/* Forward over tokens[B*T] (row-major). With targets (ignore -100) returns the mean
 * CE loss and keeps what backward needs; logits stay readable via tinylm_logits. */
float   tinylm_forward(tinylm *m, const int *tokens, const int *targets, int B, int T,
                       uint64_t dropout_seed, int *count);
/* Backward of the last forward (with targets), accumulating into the parameter gradients. */
void    tinylm_backward(tinylm *m, float loss_weight);
const float *tinylm_logits(const tinylm *m);   /* [B*T, vocab] of the last forward */
size_t  tinylm_activation_bytes(const tinylm *m);
#endif
