/* model/llama.h — a small LLaMA-style decoder (pre-RMSNorm, RoPE, grouped-query
 * attention, SwiGLU MLP, untied lm_head, optional LoRA on q_proj/v_proj) that
 * drives the embedded demo. It is the same block the real LLaMA model is built
 * from, at toy size: forward and hand-written backward through kernels.h only.
 * Parameter names follow Hugging Face (model.layers.N.self_attn.q_proj.weight...). */
#ifndef ANYREF_LLAMA_H
#define ANYREF_LLAMA_H
#include "core/arena.h"
#include "model/params.h"

typedef struct {
    int vocab, dim, layers, heads, kv_heads, mlp_hidden, max_seq;
    float norm_eps, rope_theta;
    int lora_rank;          /* 0: no LoRA; >0: LoRA on q_proj and v_proj */
    float lora_alpha, lora_dropout;
    int train_base;         /* 1: base weights trainable (pre-training); 0: frozen (LoRA tuning) */
} llama_cfg;

typedef struct llama llama;

/* Declares the parameters in ps (not yet allocated). */
int     llama_declare(const llama_cfg *c, ar_params *ps);
/* Binds to allocated parameters and sizes activations for B sequences of T tokens. */
llama *llama_create(const llama_cfg *c, ar_params *ps, int B, int T);
void    llama_free(llama *m);
/* Forward over tokens[B*T] (row-major). With targets (ignore -100) returns the mean
 * CE loss and keeps what backward needs; logits stay readable via llama_logits. */
float   llama_forward(llama *m, const int *tokens, const int *targets, int B, int T,
                       uint64_t dropout_seed, int *count);
/* Backward of the last forward (with targets), accumulating into the parameter gradients. */
void    llama_backward(llama *m, float loss_weight);
const float *llama_logits(const llama *m);   /* [B*T, vocab] of the last forward */
size_t  llama_activation_bytes(const llama *m);
#endif
