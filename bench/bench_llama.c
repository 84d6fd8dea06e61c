/* bench/bench_llama.c — training throughput of a ~100M-parameter LLaMA.
 *
 * The model of the AnyRef recipe at a size a CPU can train: vocab 32000,
 * dim 768, 12 layers of 12 heads (kv_heads 12), MLP 2048, 512-token sequences,
 * LoRA rank 8 (alpha 2·rank = 16, dropout 0.05) on q_proj and v_proj, trainable
 * embed_tokens and lm_head, every other base weight frozen. Random weights
 * and random tokens/targets; each training step is what train/train.c does:
 * params_zero_grad, llama_forward (with a fresh dropout seed), llama_backward,
 * optim_step (AdamW, global-norm clipping at 1.0).
 *
 * Output (bench/run_llama.sh reads it; '#' lines describe the run):
 *   kernel=sgemm shape=MxNxK ...          the GEMM ceiling, as bench_kernels.c measures it
 *   gemm=<what> shape=... ms=.. gflops=.. pct=..   the model's own GEMM shapes through
 *                                          linear_forward / linear_backward (din only)
 *   step=<i> ms=.. fwd_ms=.. bwd_ms=.. opt_ms=.. loss=..
 *   result side=c tokens_per_s=.. step_ms=.. ... mfu_exec_pct=.. mfu_6n_pct=.. peak_rss_mib=..
 * tokens_per_s and the phase times are medians over the timed steps; *_best is
 * the fastest step (less sensitive to other processes on a shared machine).
 *
 * FLOP accounting (per step; the same numbers serve the PyTorch side):
 *   executed: the work the model needs with this freezing —
 *     forward: 2·N·in·out per projection and for lm_head, LoRA 2·N·r·(in+out),
 *       attention 4·hd per visible (query, key) pair (causal: B·H·T(T+1)/2 pairs);
 *     backward: input gradients of every projection (2·N·in·out; the frozen
 *       weights get no weight gradient), lm_head input AND weight gradient
 *       (4·N·D·V, it is trainable), LoRA 4·N·r·(in+out) (dA, dB, the low-rank
 *       input gradient), attention 8·hd per visible pair (dP, dQ, dK, dV).
 *     Norms, RoPE, SwiGLU, softmax, the loss, the embedding and AdamW are not counted.
 *   6N: the conventional estimate (Kaplan et al.; PaLM appendix B; nanoGPT's
 *     estimate_mfu): 6·N_matmul per token plus 12·L·T·D per token for attention
 *     (non-causal), N_matmul = the weights that multiply (all projections and
 *     lm_head; the embedding table is a lookup). It assumes every weight gets a
 *     gradient, so with a frozen base it is ~1.4x the executed work.
 *   MFU = FLOPs / step time / GEMM ceiling (best cblas_sgemm GFLOP/s, same process).
 *
 *   bench_llama [--steps=N] [--warmup=N] [--batch=B] [--seq=T] [--layers=L] [--dim=D]
 *               [--heads=H] [--kv-heads=H] [--mlp=F] [--vocab=V] [--rank=R]
 *               [--ceiling-target=SECONDS] [--no-ceiling] [--no-gemm] [--frozen-bf16] [--flash]
 *               [--act-bf16] [--checkpoint]
 *   --frozen-bf16: the frozen projections stored as bf16 (model.frozen_weights
 *   = bf16); with ANYREF_GEMM=bf16 their products run bf16 x bf16.
 *   --flash: memory-efficient attention (model.attention = flash).
 *   --act-bf16: the activations kept for backward rounded to and stored in
 *   bf16 (model.activations = bf16). --checkpoint: gradient checkpointing per
 *   layer (model.checkpoint_layers = 1).
 * Depends on model/llama.h, model/params.h, optim/optim.h, kernels/kernels.h,
 * core/ (rng, timer, error) and OpenBLAS' cblas.h.
 */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/kernels.h"
#include "model/llama.h"
#include "model/params.h"
#include "optim/optim.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double g_ceiling = 0.0;   /* best sgemm GFLOP/s */
static ar_rng g_rng;

static float *host_floats(size_t n) {
    float *p = malloc(n * sizeof *p);
    if (!p) { fprintf(stderr, "bench_llama: out of memory (%zu floats)\n", n); exit(1); }
    return p;
}

/* ------------------------------------------------- the GEMM ceiling */

static void bench_ceiling(double target_s) { g_ceiling = bu_sgemm_ceiling(&g_rng, target_s); }

/* ------------------------------------------------- the model's GEMM shapes */

/* linear_forward and linear_backward (din only, as for a frozen weight; dw too
 * for lm_head) at the model's shapes: the rate the GEMM library gives this
 * model, i.e. how close to the ceiling a perfect step could get. */
static void bench_model_gemms(int N, int D, int F, int V) {
    static const char *names[] = {"q/k/v/o", "gate/up", "down", "lm_head"};
    const int in[] = {D, D, F, D}, out[] = {D, F, D, V};
    for (int c = 0; c < 4; c++) {
        size_t nx = (size_t)N * in[c], nw = (size_t)out[c] * in[c], ny = (size_t)N * out[c];
        float *x = k_malloc(nx * 4), *w = k_malloc(nw * 4), *y = k_malloc(ny * 4), *dy = k_malloc(ny * 4);
        float *dx = k_malloc(nx * 4), *dw = c == 3 ? k_malloc(nw * 4) : NULL;
        float *h = host_floats(nw > ny ? nw : ny);
        if (!x || !w || !y || !dy || !dx || (c == 3 && !dw)) { fprintf(stderr, "bench_llama: out of memory\n"); exit(1); }
        rng_fill_uniform(&g_rng, h, nx, -1, 1); k_upload(x, h, nx * 4);
        rng_fill_uniform(&g_rng, h, nw, -0.03f, 0.03f); k_upload(w, h, nw * 4);
        rng_fill_normal(&g_rng, h, ny, 0, 1); k_upload(dy, h, ny * 4);
        free(h);
        k_zero(dx, nx * 4);
        if (dw) k_zero(dw, nw * 4);
        double fl = 2.0 * N * in[c] * out[c];
        for (int pass = 0; pass < (dw ? 3 : 2); pass++) {
            double best = 1e30;
            for (int r = 0; r < 6; r++) {
                double t0 = ar_now();
                if (pass == 0) linear_forward(y, x, w, NULL, N, in[c], out[c]);
                else if (pass == 1) linear_backward(dx, NULL, NULL, dy, x, w, N, in[c], out[c]);
                else linear_backward(NULL, dw, NULL, dy, x, w, N, in[c], out[c]);
                k_sync();
                double t = ar_now() - t0;
                if (r > 0 && t < best) best = t;   /* run 0 is the warm-up */
            }
            static const char *what[] = {"fwd", "bwd_din", "bwd_dw"};
            double gf = fl / best * 1e-9;
            printf("gemm=%s_%s shape=%dx%d->%d ms=%.3f gflops=%.1f pct=%.1f\n", names[c], what[pass],
                   N, in[c], out[c], best * 1e3, gf, g_ceiling > 0 ? 100.0 * gf / g_ceiling : 0.0);
        }
        fflush(stdout);
        k_free(x); k_free(w); k_free(y); k_free(dy); k_free(dx); if (dw) k_free(dw);
    }
}

/* ------------------------------------------------- FLOP counts */

typedef struct { double fwd, bwd, six_n, n_matmul; } flop_count;

static flop_count count_flops(const llama_cfg *c, int B, int T) {
    const double N = (double)B * T, D = c->dim, F = c->mlp_hidden, V = c->vocab, R = c->lora_rank;
    const double hd = D / c->heads, kvd = c->kv_heads * hd, L = c->layers;
    const unsigned lm = c->lora_targets ? c->lora_targets : LLAMA_LORA_QV;
    const double in[LLAMA_NPROJ] = {D, D, D, D, D, D, F}, out[LLAMA_NPROJ] = {D, kvd, kvd, D, F, F, D};
    flop_count f = {0, 0, 0, 0};
    double layer_w = 0, lora = 0;
    for (int i = 0; i < LLAMA_NPROJ; i++) {
        layer_w += in[i] * out[i];
        if (c->lora_rank > 0 && (lm & (1u << i))) lora += R * (in[i] + out[i]);
    }
    const double pairs = (double)B * c->heads * T * (T + 1) / 2.0;   /* causal (query, key) pairs */
    f.n_matmul = L * layer_w + D * V;
    /* train_base 1 would add the weight gradients of the layers (2·N·layer_w per layer) */
    const double base_bwd = c->train_base ? 4.0 : 2.0;
    f.fwd = L * (2.0 * N * layer_w + 2.0 * N * lora + 4.0 * hd * pairs) + 2.0 * N * D * V;
    f.bwd = L * (base_bwd * N * layer_w + 4.0 * N * lora + 8.0 * hd * pairs)
          + ((c->train_base || c->train_lm_head) ? 4.0 : 2.0) * N * D * V;
    f.six_n = N * (6.0 * f.n_matmul + 12.0 * L * T * D);
    return f;
}

/* ------------------------------------------------- main */

extern char **environ;

static void print_env(void) {
    static const char *always[] = {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
        const char *v = getenv(always[i]);
        printf("# env.%s=%s\n", always[i], v ? v : "(unset)");
    }
    static const char *prefixes[] = {"OMP_", "GOMP_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "LD_LIBRARY_PATH"};
    for (char **e = environ; *e; e++) {
        int shown = 0;
        for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
            size_t n = strlen(always[i]);
            if (strncmp(*e, always[i], n) == 0 && (*e)[n] == '=') shown = 1;
        }
        if (shown) continue;
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
            if (strncmp(*e, prefixes[i], strlen(prefixes[i])) == 0) { printf("# env.%s\n", *e); break; }
    }
}

static int int_opt(const char *arg, const char *name, int *dst) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end || v <= 0 || v > 1000000) { fprintf(stderr, "bench_llama: bad value in %s\n", arg); exit(2); }
    *dst = (int)v;
    return 1;
}

int main(int argc, char **argv) {
    llama_cfg c = {
        .vocab = 32000, .dim = 768, .layers = 12, .heads = 12, .kv_heads = 12, .mlp_hidden = 2048,
        .max_seq = 512, .norm_eps = 1e-6f, .rope_theta = 10000.0f,
        .lora_rank = 8, .lora_alpha = 16.0f, .lora_dropout = 0.05f, .lora_targets = LLAMA_LORA_QV,
        .train_base = 0, .train_embed = 1, .train_lm_head = 1,
    };
    int steps = 5, warmup = 2, B = 1, T = 512, do_ceiling = 1, do_gemm = 1;
    double ceiling_target = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (int_opt(a, "--steps", &steps) || int_opt(a, "--batch", &B) || int_opt(a, "--seq", &T) ||
            int_opt(a, "--layers", &c.layers) || int_opt(a, "--dim", &c.dim) || int_opt(a, "--heads", &c.heads) ||
            int_opt(a, "--kv-heads", &c.kv_heads) || int_opt(a, "--mlp", &c.mlp_hidden) ||
            int_opt(a, "--vocab", &c.vocab) || int_opt(a, "--rank", &c.lora_rank))
            continue;
        if (strncmp(a, "--warmup=", 9) == 0) { warmup = atoi(a + 9); if (warmup < 0) warmup = 0; }
        else if (strncmp(a, "--ceiling-target=", 17) == 0) ceiling_target = atof(a + 17);
        else if (strcmp(a, "--no-ceiling") == 0) do_ceiling = 0;
        else if (strcmp(a, "--no-gemm") == 0) do_gemm = 0;
        else if (strcmp(a, "--frozen-bf16") == 0) c.frozen_half = LLAMA_FROZEN_BF16;
        else if (strcmp(a, "--flash") == 0) c.flash_attention = 1;
        else if (strcmp(a, "--act-bf16") == 0) c.act_half = LLAMA_ACT_BF16;
        else if (strcmp(a, "--checkpoint") == 0) c.checkpoint_layers = 1;
        else {
            fprintf(stderr, "usage: %s [--steps=N] [--warmup=N] [--batch=B] [--seq=T] [--layers=L] [--dim=D]\n"
                            "       [--heads=H] [--kv-heads=H] [--mlp=F] [--vocab=V] [--rank=R]\n"
                            "       [--ceiling-target=SECONDS] [--no-ceiling] [--no-gemm] [--frozen-bf16] [--flash]\n"
                            "       [--act-bf16] [--checkpoint]\n", argv[0]);
            return 2;
        }
    }
    c.max_seq = T;
    c.lora_alpha = 2.0f * (float)c.lora_rank;   /* scale alpha/r = 2, as bench_llama_torch.py */
    rng_seed(&g_rng, 42);
    printf("# c.backend=%s\n", k_backend_name());
    printf("# c.gemm_mode=%s\n", k_gemm_mode());
    printf("# c.gemm_detail=%s\n", k_gemm_detail());
    size_t mem_free0 = 0, mem_total = 0;
    const int have_mem = k_mem_info(&mem_free0, &mem_total) == 0;
    printf("# c.threads=%d\n", k_num_threads());
    printf("# c.openblas_config=%s\n", openblas_get_config());
    printf("# c.openblas_corename=%s\n", openblas_get_corename());
    printf("# c.compiler=%s\n", __VERSION__);
    print_env();
    fflush(stdout);

    if (do_ceiling) bench_ceiling(ceiling_target);
    if (do_gemm) bench_model_gemms(B * T, c.dim, c.mlp_hidden, c.vocab);

    ar_params ps;
    params_init_empty(&ps);
    if (llama_declare(&c, &ps) || params_alloc(&ps)) { fprintf(stderr, "bench_llama: %s\n", ar_error()); return 1; }
    params_randomize(&ps, 1234);
    llama *m = llama_create(&c, &ps, B, T);
    if (!m) { fprintf(stderr, "bench_llama: %s\n", ar_error()); return 1; }
    ar_optim_cfg oc = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f,
                       .grad_clip = 1.0f, .warmup_steps = 0, .total_steps = 0, .schedule = OPTIM_CONSTANT};

    const int N = B * T;
    int *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    if (!tok || !tgt) { fprintf(stderr, "bench_llama: out of memory\n"); return 1; }
    flop_count fc = count_flops(&c, B, T);
    const double exec_flops = fc.fwd + fc.bwd;
    printf("# llama.config=vocab=%d,dim=%d,layers=%d,heads=%d,kv_heads=%d,mlp_hidden=%d,batch=%d,seq=%d,"
           "lora_rank=%d,lora_alpha=%g,lora_dropout=%g,lora_targets=q_proj+v_proj,train_embed=1,train_lm_head=1,base=frozen%s%s%s%s\n",
           c.vocab, c.dim, c.layers, c.heads, c.kv_heads, c.mlp_hidden, B, T, c.lora_rank,
           (double)c.lora_alpha, (double)c.lora_dropout, c.frozen_half ? "_bf16" : "",
           c.flash_attention ? ",attention=flash" : "", c.act_half ? ",activations=bf16" : "",
           c.checkpoint_layers ? ",checkpoint_layers=1" : "");
    printf("# llama.params_total=%zu\n# llama.params_trainable=%zu\n# llama.params_matmul=%.0f\n",
           params_numel(&ps, 0), params_numel(&ps, 1), fc.n_matmul);
    printf("# llama.param_bytes=%zu\n# llama.activation_bytes=%zu\n",
           params_weight_bytes(&ps) + 3 * ps.ng * sizeof(float), llama_activation_bytes(m));
    printf("# llama.gflop_step_fwd=%.2f\n# llama.gflop_step_bwd=%.2f\n# llama.gflop_step_exec=%.2f\n# llama.gflop_step_6n=%.2f\n",
           fc.fwd * 1e-9, fc.bwd * 1e-9, exec_flops * 1e-9, fc.six_n * 1e-9);
    printf("# llama.flops_per_token_exec=%.0f\n# llama.flops_per_token_6n=%.0f\n", exec_flops / N, fc.six_n / N);
    fflush(stdout);

    const int total = warmup + steps;
    double *t_step = calloc((size_t)total, sizeof(double)), *t_fwd = calloc((size_t)total, sizeof(double));
    double *t_bwd = calloc((size_t)total, sizeof(double)), *t_opt = calloc((size_t)total, sizeof(double));
    if (!t_step || !t_fwd || !t_bwd || !t_opt) { fprintf(stderr, "bench_llama: out of memory\n"); return 1; }
    ar_rng data;
    rng_seed(&data, 7);
    double loss_last = 0;
    for (int s = 0; s < total; s++) {
        for (int i = 0; i < N; i++) { tok[i] = (int)rng_below(&data, (uint64_t)c.vocab); tgt[i] = (int)rng_below(&data, (uint64_t)c.vocab); }
        k_sync();
        double t0 = ar_now();
        params_zero_grad(&ps);
        int count = 0;
        float loss = llama_forward(m, tok, tgt, B, T, rng_derive(99, (uint64_t)s), &count);
        k_sync();
        double t1 = ar_now();
        llama_backward(m, 1.0f);
        k_sync();
        double t2 = ar_now();
        optim_step(&ps, &oc, s + 1, oc.lr);
        k_sync();
        double t3 = ar_now();
        if (k_error()) { fprintf(stderr, "bench_llama: %s\n", k_error()); return 1; }
        if (!isfinite(loss)) { fprintf(stderr, "bench_llama: loss %g at step %d\n", (double)loss, s + 1); return 1; }
        t_step[s] = t3 - t0; t_fwd[s] = t1 - t0; t_bwd[s] = t2 - t1; t_opt[s] = t3 - t2;
        loss_last = loss;
        printf("step=%d%s ms=%.1f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f loss=%.4f\n", s + 1, s < warmup ? "(warmup)" : "",
               1e3 * t_step[s], 1e3 * t_fwd[s], 1e3 * t_bwd[s], 1e3 * t_opt[s], (double)loss);
        fflush(stdout);
    }
    double step_s = bu_median(t_step + warmup, steps);
    double fwd_s = bu_median(t_fwd + warmup, steps), bwd_s = bu_median(t_bwd + warmup, steps), opt_s = bu_median(t_opt + warmup, steps);
    double sum = 0, best = t_step[warmup];
    for (int s = warmup; s < total; s++) { sum += t_step[s]; if (t_step[s] < best) best = t_step[s]; }
    double tps = N / step_s;
    size_t mem_free1 = 0;
    /* CUDA: everything is allocated up front, so device memory in use after the
     * steps (model, activations, cuBLAS and kernel workspaces) is the peak */
    if (have_mem && !strcmp(k_backend_name(), "cuda") && k_mem_info(&mem_free1, NULL) == 0)
        printf("# c.device_mem_used_gib=%.2f (of %.1f; %.2f in use before the model)\n",
               (double)(mem_total - mem_free1) / 1073741824.0, (double)mem_total / 1073741824.0,
               (double)(mem_total - mem_free0) / 1073741824.0);
    double exec_gf = exec_flops / step_s * 1e-9, six_gf = fc.six_n / step_s * 1e-9;
    printf("result side=c tokens_per_s=%.1f tokens_per_s_mean=%.1f tokens_per_s_best=%.1f step_ms=%.1f "
           "step_ms_best=%.1f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f "
           "steps=%d warmup=%d exec_gflops=%.1f mfu_exec_pct=%.1f gflops_6n=%.1f mfu_6n_pct=%.1f "
           "ceiling_gflops=%.1f peak_rss_mib=%.0f loss=%.4f\n",
           tps, N * steps / sum, N / best, 1e3 * step_s, 1e3 * best, 1e3 * fwd_s, 1e3 * bwd_s, 1e3 * opt_s, steps, warmup,
           exec_gf, g_ceiling > 0 ? 100 * exec_gf / g_ceiling : 0.0,
           six_gf, g_ceiling > 0 ? 100 * six_gf / g_ceiling : 0.0, g_ceiling, bu_peak_rss_mib(), loss_last);
    free(t_step); free(t_fwd); free(t_bwd); free(t_opt); free(tok); free(tgt);
    llama_free(m);
    params_free(&ps);
    return 0;
}
