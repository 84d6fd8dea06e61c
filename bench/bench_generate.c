/* bench/bench_generate.c — tokens/s of greedy generation with the KV cache
 * (model/generate.h: one full forward for the prompts, then llama_step per
 * token) against recomputing the whole prefix (no_cache: one full B x T
 * forward per new token, the method before the cache).
 *
 * Settings (random weights, evaluation mode, random prompt tokens):
 *   demo   the LLM of configs/shapes-tiny.cfg: dim 96, 2 layers, 4 heads /
 *          2 kv heads, MLP 256, no LoRA (trainable = full), T 128 (train.seq_len),
 *          batch 8 (train.batch_size), vocabulary --demo-vocab (default 256:
 *          the shapes tokenizer's size depends on the generated world);
 *   large  dim 1024, 8 layers, 16 heads / 16 kv heads, MLP 2816, vocab 32000,
 *          LoRA rank 8 on q_proj, v_proj, T 512, batch 4.
 * Prompts are T/4 tokens; generation runs to T (3T/4 new tokens per row, no
 * stop id). The cached run is timed whole (prefill included) after an
 * untimed 4-token warm-up (allocates the cache); the uncached run costs one full B x T forward per new token
 * whatever the prefix length, so for the large setting it is timed over
 * --uncached-steps steps (default 3) and its tokens/s is B x steps / time; the
 * demo setting times it whole. The tokens of both runs are compared (same
 * greedy path expected). One line per setting:
 *   setting=.. model=.. B=.. T=.. prompt=.. new=.. cached_tok_s=.. uncached_tok_s=.. ratio=..
 *   cached_s=.. uncached_s=.. uncached_steps=.. same_tokens=.. threads=.. coretype=..
 *
 *   bench_generate [--only=demo|large] [--uncached-steps=N] [--demo-vocab=V]
 * Depends on model/generate.h, model/anyref.h, kernels/kernels.h, core/. */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "kernels/kernels.h"
#include "model/anyref.h"
#include "model/generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int vocab, dim, layers, heads, kv_heads, mlp, T, B, lora_rank;
} setting;

static int run(const setting *s, int uncached_steps) {
    anyref_cfg c = anyref_default_cfg();
    llama_cfg l = {.vocab = s->vocab, .dim = s->dim, .layers = s->layers, .heads = s->heads, .kv_heads = s->kv_heads,
                   .mlp_hidden = s->mlp, .max_seq = s->T, .norm_eps = 1e-6f, .rope_theta = 10000.0f,
                   .lora_rank = s->lora_rank, .lora_alpha = 2.0f * s->lora_rank, .lora_dropout = 0.05f,
                   .lora_targets = LLAMA_LORA_QV};
    c.llm = l;
    c.seg.seg_token = s->vocab - 1;
    c.seg.lambda = 0.0f;
    sam_decoder_cfg d = {.dim = 16, .depth = 1, .heads = 2, .mlp_dim = 16, .downsample = 2,
                         .num_mask_tokens = 4, .iou_hidden = 16, .H = 4, .W = 4, .n_sparse = 1};
    c.dec = d;   /* the mask decoder plays no part in generation: the smallest */
    c.max_orig_h = c.max_orig_w = 16;
    ar_params ps;
    params_init_empty(&ps);
    anyref *m = NULL;
    if (anyref_declare(&c, &ps) || params_alloc(&ps)) goto fail;
    params_randomize(&ps, 1);
    if (!(m = anyref_create(&c, &ps, s->B, s->T, 1))) goto fail;
    anyref_set_training(m, 0);
    const int B = s->B, T = s->T, P = T / 4, NEW = T - P;
    int *tok = malloc((size_t)B * T * sizeof(int)), *len = malloc((size_t)B * sizeof(int));
    int *ref = malloc((size_t)B * T * sizeof(int)), *rlen = malloc((size_t)B * sizeof(int));
    ar_rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) ref[i] = (int)rng_below(&r, (uint64_t)s->vocab - 1);
    gen_cfg g = gen_default_cfg();
    g.max_new = NEW;
    /* cached: a warm-up (allocates the cache, warms the caches), then timed */
    for (int pass = 0; pass < 2; pass++) {
        g.max_new = pass == 0 ? (NEW < 4 ? NEW : 4) : NEW;   /* a short warm-up */
        memcpy(tok, ref, (size_t)B * T * sizeof(int));
        for (int b = 0; b < B; b++) len[b] = P;
        double t0 = ar_now();
        if (anyref_generate_ex(m, &g, tok, len, 0, NULL, 0)) goto fail;
        k_sync();
        double dt = ar_now() - t0;
        if (pass == 1) {
            memcpy(rlen, len, (size_t)B * sizeof(int));
            memcpy(ref, tok, (size_t)B * T * sizeof(int));   /* the cached tokens, for the comparison */
            g.no_cache = 1;
            g.max_new = s->T >= 256 ? uncached_steps : NEW;
            int *t2 = malloc((size_t)B * T * sizeof(int)), *l2 = malloc((size_t)B * sizeof(int));
            memcpy(t2, ref, (size_t)B * T * sizeof(int));
            for (int b = 0; b < B; b++) l2[b] = P;
            double u0 = ar_now();
            if (anyref_generate_ex(m, &g, t2, l2, 0, NULL, 0)) goto fail;
            k_sync();
            double du = ar_now() - u0;
            int same = 1;
            for (int b = 0; b < B; b++)
                same &= !memcmp(t2 + (size_t)b * T, ref + (size_t)b * T, (size_t)l2[b] * sizeof(int));
            const double ctps = (double)B * NEW / dt, utps = (double)B * g.max_new / du;
            const char *ct = getenv("OPENBLAS_CORETYPE");
            printf("setting=%s model=dim%d,L%d,H%d/%d,F%d,V%d,lora%d B=%d T=%d prompt=%d new=%d cached_tok_s=%.1f "
                   "uncached_tok_s=%.2f ratio=%.1f cached_s=%.2f uncached_s=%.2f uncached_steps=%d same_tokens=%d "
                   "threads=%d coretype=%s backend=%s\n",
                   s->name, s->dim, s->layers, s->heads, s->kv_heads, s->mlp, s->vocab, s->lora_rank, B, T, P, NEW,
                   ctps, utps, ctps / utps, dt, du, g.max_new, same, k_num_threads(), ct ? ct : "unset",
                   k_backend_name());
            fflush(stdout);
            free(t2); free(l2);
        }
    }
    free(tok); free(len); free(ref); free(rlen);
    anyref_free(m);
    params_free(&ps);
    return 0;
fail:
    fprintf(stderr, "bench_generate: %s: %s\n", s->name, ar_error());
    anyref_free(m);
    params_free(&ps);
    return 1;
}

int main(int argc, char **argv) {
    const char *only = NULL;
    int steps = 3, demo_vocab = 256;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--only=", 7)) only = argv[i] + 7;
        else if (!strncmp(argv[i], "--uncached-steps=", 17)) steps = atoi(argv[i] + 17);
        else if (!strncmp(argv[i], "--demo-vocab=", 13)) demo_vocab = atoi(argv[i] + 13);
        else {
            fprintf(stderr, "usage: %s [--only=demo|large] [--uncached-steps=N] [--demo-vocab=V]\n", argv[0]);
            return 2;
        }
    }
    if (steps < 1) steps = 1;
    const setting set[] = {
        {"demo", demo_vocab, 96, 2, 4, 2, 256, 128, 8, 0},
        {"large", 32000, 1024, 8, 16, 16, 2816, 512, 4, 8},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (!only || !strcmp(only, set[i].name)) rc |= run(&set[i], steps);
    return rc;
}
