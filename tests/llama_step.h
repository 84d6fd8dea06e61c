/* tests/llama_step.h — one LLaMA training step on a registry, for the tests
 * that compare two ways of computing it (test_bf16, test_flash_attention):
 * B x T tokens of a fixed pattern (every fifth target ignored), dropout seed
 * 77; returns the loss, leaves the trainable gradients in g (host,
 * ps->ng floats), and optionally the last layer's attention probabilities
 * (a new host buffer, NULL when the model keeps none) and the activation
 * arena's size. Depends on model/llama.h, model/params.h, kernels/kernels.h,
 * tests/h5fixture.h. */
#ifndef ANYREF_TESTS_LLAMA_STEP_H
#define ANYREF_TESTS_LLAMA_STEP_H
#include <math.h>
#include <stdlib.h>
#include "kernels/kernels.h"
#include "model/llama.h"
#include "model/params.h"
#include "tests/h5fixture.h"

static inline float t_llama_step(ar_params *ps, const llama_cfg *c, int B, int T, float *g, float **last_att,
                                 size_t *arena) {
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    llama *m = tok && tgt ? llama_create(c, ps, B, T) : NULL;
    if (!m) { free(tok); free(tgt); return NAN; }
    for (int i = 0; i < B * T; i++) { tok[i] = (i * 7 + 3) % c->vocab; tgt[i] = i % 5 == 0 ? -100 : (i * 11 + 1) % c->vocab; }
    int count = 0;
    params_zero_grad(ps);
    float loss = llama_forward(m, tok, tgt, B, T, 77, &count);
    if (last_att) {
        const float *att = llama_last_attention(m);
        *last_att = att ? t_host_copy(att, (size_t)B * c->heads * T * T) : NULL;
    }
    llama_backward(m, 1.0f);
    k_sync();
    k_download(g, ps->g, ps->ng * sizeof(float));
    if (arena) *arena = llama_activation_bytes(m);
    llama_free(m);
    free(tok); free(tgt);
    return loss;
}
#endif
