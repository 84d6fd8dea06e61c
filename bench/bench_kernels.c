/* bench/bench_kernels.c — how fast are anyref's kernels, against the hardware?
 *
 * Two parts, both printed as one line per case:
 *   1. the GEMM ceiling: OpenBLAS cblas_sgemm GFLOP/s at square and LLM-shaped
 *      sizes, best of several repetitions after a warm-up;
 *      kernel=sgemm shape=MxNxK fwd_ms=.. fwdbwd_ms=- gflops=.. coretype=.. corename=..
 *   2. every primitive of kernels/kernels.h on realistic shapes for the small
 *      CPU model (512 tokens, width 1024, vocab 32000, SAM-sized vision maps):
 *      forward alone, and forward followed by backward, median of several
 *      repetitions after a warm-up;
 *      kernel=<name> shape=<shape> fwd_ms=.. fwdbwd_ms=.. reps=.. [gflop_fwd=..
 *      fwd_gflops=.. fwd_pct=.. gflop_fwdbwd=.. fwdbwd_gflops=.. fwdbwd_pct=..]
 *      where the FLOP fields appear for GEMM-bound kernels (gflop_*: the work,
 *      *_gflops: the rate), and *_pct is that
 *      rate as a percentage of the best sgemm rate of part 1 (same process,
 *      same OPENBLAS_CORETYPE).
 * Lines starting with '#' describe the run (library, threads, environment).
 * bench/bench_torch.py times the same cases in PyTorch; bench/run.sh joins
 * both into bench.md / bench.jsonl. Shapes here and there must stay identical.
 *
 *   bench_kernels [--ceiling-only] [--only=name,name,...] [--target=SECONDS]
 *
 * Gradients: each backward asks for the gradients a training step would
 * (see the comment of each case); they accumulate over repetitions, which
 * costs the same as writing them. All buffers go through k_malloc/k_upload,
 * so the kernel part also runs on the CUDA backend (the ceiling stays CPU).
 * Depends on kernels/kernels.h, core/ (timer, rng) and OpenBLAS' cblas.h.
 */
#include "kernels/kernels.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARMUP   2
#define MIN_REPS 5
#define MAX_REPS 50

static double g_target_s = 0.6;      /* measured time to aim for per case */
static double g_ceiling = 0.0;       /* best sgemm GFLOP/s seen in part 1 */
static const char *g_only = NULL;    /* --only filter, comma-separated names */
static ar_rng g_rng;
static volatile float g_sink;        /* keeps loss values alive */

/* ---------------------------------------------------------------- helpers */

static int reps_for(double first_s, int lo, int hi, double target_s) {
    double r = target_s / (first_s > 1e-7 ? first_s : 1e-7);
    return r < lo ? lo : r > hi ? hi : (int)r;
}

/* MEDIAN_MS(ms, reps, statements): warm up, size the repetition count from
 * one timed run, then store the median wall time (ms) of the statements. */
#define MEDIAN_MS(ms_out, reps_out, ...)                                   \
    do {                                                                   \
        double ts_[MAX_REPS];                                              \
        for (int w_ = 0; w_ < WARMUP; w_++) { __VA_ARGS__; }               \
        k_sync();                                                          \
        double t0_ = ar_now();                                             \
        { __VA_ARGS__; }                                                   \
        k_sync();                                                          \
        int n_ = reps_for(ar_now() - t0_, MIN_REPS, MAX_REPS, g_target_s); \
        for (int r_ = 0; r_ < n_; r_++) {                                  \
            t0_ = ar_now();                                                \
            { __VA_ARGS__; }                                               \
            k_sync();                                                      \
            ts_[r_] = ar_now() - t0_;                                      \
        }                                                                  \
        (ms_out) = 1e3 * bu_median(ts_, n_);                                  \
        (reps_out) = n_;                                                   \
    } while (0)

static int wanted(const char *kernel) {
    if (!g_only) return 1;
    size_t len = strlen(kernel);
    for (const char *p = g_only; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, kernel, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

/* One result line. fwdbwd_ms < 0: no backward. flops <= 0: not GEMM-bound. */
static void report(const char *kernel, const char *shape, double fwd_ms, double fwdbwd_ms,
                   int reps, double flops_fwd, double flops_fwdbwd) {
    printf("kernel=%s shape=%s fwd_ms=%.4f ", kernel, shape, fwd_ms);
    if (fwdbwd_ms >= 0) printf("fwdbwd_ms=%.4f", fwdbwd_ms);
    else printf("fwdbwd_ms=-");
    printf(" reps=%d", reps);
    if (flops_fwd > 0) {
        double gf = flops_fwd / (fwd_ms * 1e6);
        printf(" gflop_fwd=%.4f fwd_gflops=%.1f", flops_fwd * 1e-9, gf);
        if (g_ceiling > 0) printf(" fwd_pct=%.1f", 100.0 * gf / g_ceiling);
    }
    if (flops_fwdbwd > 0 && fwdbwd_ms > 0) {
        double gf = flops_fwdbwd / (fwdbwd_ms * 1e6);
        printf(" gflop_fwdbwd=%.4f fwdbwd_gflops=%.1f", flops_fwdbwd * 1e-9, gf);
        if (g_ceiling > 0) printf(" fwdbwd_pct=%.1f", 100.0 * gf / g_ceiling);
    }
    printf("\n");
    fflush(stdout);
}

/* Backend buffers filled on the host, then uploaded. */
static float *buf_uniform(size_t n, float lo, float hi) {
    float *h = malloc(n * sizeof *h), *d = k_malloc(n * sizeof *d);
    if (!h || !d) { fprintf(stderr, "bench: out of memory (%zu floats)\n", n); exit(1); }
    rng_fill_uniform(&g_rng, h, n, lo, hi);
    k_upload(d, h, n * sizeof *h);
    free(h);
    return d;
}
static float *buf_normal(size_t n, float std) {
    float *h = malloc(n * sizeof *h), *d = k_malloc(n * sizeof *d);
    if (!h || !d) { fprintf(stderr, "bench: out of memory (%zu floats)\n", n); exit(1); }
    rng_fill_normal(&g_rng, h, n, 0.0f, std);
    k_upload(d, h, n * sizeof *h);
    free(h);
    return d;
}
static float *buf_zeros(size_t n) {
    float *d = k_malloc(n * sizeof *d);
    if (!d) { fprintf(stderr, "bench: out of memory (%zu floats)\n", n); exit(1); }
    k_zero(d, n * sizeof *d);
    return d;
}
static void *buf_copy(const void *host, size_t bytes) {
    void *d = k_malloc(bytes);
    if (!d) { fprintf(stderr, "bench: out of memory (%zu bytes)\n", bytes); exit(1); }
    k_upload(d, host, bytes);
    return d;
}
/* Frees a NULL-terminated list of backend buffers. */
static void free_all(void *first, ...) {
    va_list ap;
    va_start(ap, first);
    for (void *p = first; p; p = va_arg(ap, void *)) k_free(p);
    va_end(ap);
}

/* ------------------------------------------------------- 1. GEMM ceiling */

static void bench_ceiling(void) { g_ceiling = bu_sgemm_ceiling(&g_rng, 1.0); }

/* ------------------------------------------------------ 2. the kernels */

static void bench_matmul(void) {
    if (!wanted("matmul")) return;
    const int M = 512, N = 1024, K = 1024;           /* C[M,N] = A[M,K] @ B[K,N]; dA, dB */
    float *A = buf_uniform((size_t)M * K, -1, 1), *B = buf_uniform((size_t)K * N, -1, 1);
    float *C = buf_zeros((size_t)M * N), *dC = buf_normal((size_t)M * N, 1);
    float *dA = buf_zeros((size_t)M * K), *dB = buf_zeros((size_t)K * N);
    double f, fb; int r;
    MEDIAN_MS(f, r, matmul_forward(C, A, B, M, N, K, 0, 0));
    MEDIAN_MS(fb, r, matmul_forward(C, A, B, M, N, K, 0, 0);
                     matmul_backward(dA, dB, dC, A, B, M, N, K, 0, 0));
    double fl = 2.0 * M * N * K;
    char shape[64]; snprintf(shape, sizeof shape, "%dx%dx%d", M, N, K);
    report("matmul", shape, f, fb, r, fl, 3 * fl);
    free_all(A, B, C, dC, dA, dB, NULL);
}

static void bench_linear(void) {
    if (!wanted("linear")) return;
    static const int cases[][4] = {     /* N, IN, OUT, bias: din, dw, db */
        {512, 1024, 1024, 1}, {512, 1024, 4096, 1}, {512, 1024, 32000, 0}};
    for (int c = 0; c < 3; c++) {
        int N = cases[c][0], IN = cases[c][1], OUT = cases[c][2], bias = cases[c][3];
        float *x = buf_uniform((size_t)N * IN, -1, 1);
        float *w = buf_uniform((size_t)OUT * IN, -0.03f, 0.03f);
        float *b = bias ? buf_uniform(OUT, -0.1f, 0.1f) : NULL;
        float *y = buf_zeros((size_t)N * OUT), *dy = buf_normal((size_t)N * OUT, 1);
        float *dx = buf_zeros((size_t)N * IN), *dw = buf_zeros((size_t)OUT * IN);
        float *db = bias ? buf_zeros(OUT) : NULL;
        double f, fb; int r;
        MEDIAN_MS(f, r, linear_forward(y, x, w, b, N, IN, OUT));
        MEDIAN_MS(fb, r, linear_forward(y, x, w, b, N, IN, OUT);
                         linear_backward(dx, dw, db, dy, x, w, N, IN, OUT));
        double fl = 2.0 * N * IN * OUT;
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%d->%d%s", N, IN, OUT, bias ? "" : "_nobias");
        report("linear", shape, f, fb, r, fl, 3 * fl);
        free_all(x, w, y, dy, dx, dw, NULL);
        if (bias) free_all(b, db, NULL);
    }
}

static void bench_lora(void) {
    if (!wanted("lora")) return;
    /* q_proj with LoRA r=8, dropout 0.05: din, dA, dB (base weight frozen, no bias) */
    const int N = 512, IN = 1024, OUT = 1024, R = 8;
    const float scale = 2.0f, p = 0.05f;
    float *x = buf_uniform((size_t)N * IN, -1, 1);
    float *w = buf_uniform((size_t)OUT * IN, -0.03f, 0.03f);
    float *A = buf_uniform((size_t)R * IN, -0.03f, 0.03f), *B = buf_uniform((size_t)OUT * R, -0.01f, 0.01f);
    float *mask = buf_zeros((size_t)N * IN);
    dropout_mask(mask, (size_t)N * IN, p, 1234);
    float *xd = buf_zeros((size_t)N * IN), *u = buf_zeros((size_t)N * R);
    float *y = buf_zeros((size_t)N * OUT), *dy = buf_normal((size_t)N * OUT, 1);
    float *dx = buf_zeros((size_t)N * IN), *dA = buf_zeros((size_t)R * IN), *dB = buf_zeros((size_t)OUT * R);
    double f, fb; int r;
    MEDIAN_MS(f, r, lora_forward(y, xd, u, x, mask, w, NULL, A, B, scale, N, IN, OUT, R));
    MEDIAN_MS(fb, r, lora_forward(y, xd, u, x, mask, w, NULL, A, B, scale, N, IN, OUT, R);
                     lora_backward(dx, NULL, NULL, dA, dB, dy, x, xd, u, mask, w, A, B,
                                   scale, N, IN, OUT, R));
    double base = 2.0 * N * IN * OUT, low = 2.0 * N * R * (IN + OUT);
    report("lora", "512x1024->1024_r8", f, fb, r, base + low, 2 * base + 3 * low);
    free_all(x, w, A, B, mask, xd, u, y, dy, dx, dA, dB, NULL);
}

static void bench_embedding(void) {
    if (!wanted("embedding")) return;
    const int N = 512, D = 1024, V = 32000;          /* dtable */
    int *ids_h = malloc(N * sizeof *ids_h);
    for (int i = 0; i < N; i++) ids_h[i] = (int)rng_below(&g_rng, V);
    int *ids = buf_copy(ids_h, N * sizeof *ids_h);
    float *table = buf_normal((size_t)V * D, 0.02f), *dtable = buf_zeros((size_t)V * D);
    float *y = buf_zeros((size_t)N * D), *dy = buf_normal((size_t)N * D, 1);
    double f, fb; int r;
    MEDIAN_MS(f, r, embedding_forward(y, ids, table, N, D));
    MEDIAN_MS(fb, r, embedding_forward(y, ids, table, N, D);
                     embedding_backward(dtable, dy, ids, N, D));
    report("embedding", "512x1024_V32000", f, fb, r, 0, 0);
    free(ids_h);
    free_all(ids, table, dtable, y, dy, NULL);
}

static void bench_norms(void) {
    const int N = 512, D = 1024;
    float *x = buf_uniform((size_t)N * D, -2, 2), *y = buf_zeros((size_t)N * D);
    float *dy = buf_normal((size_t)N * D, 1), *dx = buf_zeros((size_t)N * D);
    float *w = buf_uniform(D, 0.9f, 1.1f), *b = buf_uniform(D, -0.1f, 0.1f);
    float *dw = buf_zeros(D), *db = buf_zeros(D), *mean = buf_zeros(N), *rstd = buf_zeros(N);
    double f, fb; int r;
    if (wanted("rmsnorm")) {                          /* din, dw */
        MEDIAN_MS(f, r, rmsnorm_forward(y, rstd, x, w, 1e-6f, N, D));
        MEDIAN_MS(fb, r, rmsnorm_forward(y, rstd, x, w, 1e-6f, N, D);
                         rmsnorm_backward(dx, dw, dy, x, w, rstd, N, D));
        report("rmsnorm", "512x1024", f, fb, r, 0, 0);
    }
    if (wanted("layernorm")) {                        /* din, dw, db */
        MEDIAN_MS(f, r, layernorm_forward(y, mean, rstd, x, w, b, 1e-5f, N, D));
        MEDIAN_MS(fb, r, layernorm_forward(y, mean, rstd, x, w, b, 1e-5f, N, D);
                         layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, N, D));
        report("layernorm", "512x1024", f, fb, r, 0, 0);
    }
    free_all(x, y, dy, dx, w, b, dw, db, mean, rstd, NULL);

    if (wanted("layernorm2d")) {                      /* SAM neck/upscaling: din, dw, db */
        const int B = 1, C = 256, HW = 64 * 64;
        float *x2 = buf_uniform((size_t)B * C * HW, -2, 2), *y2 = buf_zeros((size_t)B * C * HW);
        float *dy2 = buf_normal((size_t)B * C * HW, 1), *dx2 = buf_zeros((size_t)B * C * HW);
        float *w2 = buf_uniform(C, 0.9f, 1.1f), *b2 = buf_uniform(C, -0.1f, 0.1f);
        float *dw2 = buf_zeros(C), *db2 = buf_zeros(C);
        float *m2 = buf_zeros((size_t)B * HW), *r2 = buf_zeros((size_t)B * HW);
        MEDIAN_MS(f, r, layernorm2d_forward(y2, m2, r2, x2, w2, b2, 1e-6f, B, C, HW));
        MEDIAN_MS(fb, r, layernorm2d_forward(y2, m2, r2, x2, w2, b2, 1e-6f, B, C, HW);
                         layernorm2d_backward(dx2, dw2, db2, dy2, x2, w2, m2, r2, B, C, HW));
        report("layernorm2d", "1x256x64x64", f, fb, r, 0, 0);
        free_all(x2, y2, dy2, dx2, w2, b2, dw2, db2, m2, r2, NULL);
    }
}

static void bench_rope(void) {
    if (!wanted("rope")) return;
    const int N = 512, H = 8, hd = 128;              /* din */
    const size_t n = (size_t)N * H * hd;
    int *pos_h = malloc(N * sizeof *pos_h);
    for (int i = 0; i < N; i++) pos_h[i] = i;
    int *pos = buf_copy(pos_h, N * sizeof *pos_h);
    float *x = buf_uniform(n, -1, 1), *y = buf_zeros(n), *dy = buf_normal(n, 1), *dx = buf_zeros(n);
    double f, fb; int r;
    MEDIAN_MS(f, r, rope_forward(y, x, pos, 10000.0f, N, H, hd));
    MEDIAN_MS(fb, r, rope_forward(y, x, pos, 10000.0f, N, H, hd);
                     rope_backward(dx, dy, pos, 10000.0f, N, H, hd));
    report("rope", "512x8x128", f, fb, r, 0, 0);
    free(pos_h);
    free_all(pos, x, y, dy, dx, NULL);
}

static void bench_attention(void) {
    if (wanted("attention")) {
        /* causal self-attention, 8 heads of 128: dq, dk, dv */
        const int B = 1, T = 512, S = 512, H = 8, hd = 128;
        const size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * S * H * hd;
        const size_t na = (size_t)B * H * T * S;
        float *q = buf_uniform(nq, -1, 1), *k = buf_uniform(nk, -1, 1), *v = buf_uniform(nk, -1, 1);
        float *o = buf_zeros(nq), *att = buf_zeros(na), *dout = buf_normal(nq, 1);
        float *dq = buf_zeros(nq), *dk = buf_zeros(nk), *dv = buf_zeros(nk);
        float *scratch = buf_zeros(attention_scratch_floats(B, T, S, H));
        const float scale = 1.0f / sqrtf((float)hd);
        double f, fb; int r;
        MEDIAN_MS(f, r, attention_forward(o, att, q, k, v, NULL, 1, scale, B, T, S, H, H, hd));
        MEDIAN_MS(fb, r, attention_forward(o, att, q, k, v, NULL, 1, scale, B, T, S, H, H, hd);
                         attention_backward(dq, dk, dv, scratch, dout, NULL, att, q, k, v, scale,
                                            B, T, S, H, H, hd));
        /* useful work: the visible (query, key) pairs of the causal mask */
        double pairs = (double)B * H * T * (T + 1) / 2.0;
        double fl = 4.0 * pairs * hd;                /* QK^T and PV */
        report("attention", "B1_T512_S512_H8_hd128_causal", f, fb, r, fl, 3 * fl);
        free_all(q, k, v, o, att, dout, dq, dk, dv, scratch, NULL);
    }
    if (wanted("softmax")) {
        const int N = 4096, C = 512;                  /* din */
        const size_t n = (size_t)N * C;
        float *x = buf_uniform(n, -4, 4), *y = buf_zeros(n), *dy = buf_normal(n, 1), *dx = buf_zeros(n);
        double f, fb; int r;
        MEDIAN_MS(f, r, softmax_forward(y, x, N, C));
        MEDIAN_MS(fb, r, softmax_forward(y, x, N, C); softmax_backward(dx, dy, y, N, C));
        report("softmax", "4096x512", f, fb, r, 0, 0);
        free_all(x, y, dy, dx, NULL);
    }
}

static void bench_elementwise(void) {
    const size_t n = (size_t)512 * 4096;             /* MLP hidden of 512 tokens */
    const char *shape = "512x4096";
    float *x = buf_uniform(n, -4, 4), *y = buf_zeros(n), *dy = buf_normal(n, 1), *dx = buf_zeros(n);
    float *g = buf_uniform(n, -4, 4), *dg = buf_zeros(n);
    double f, fb; int r;
#define UNARY(name)                                                              \
    if (wanted(#name)) {                                                         \
        MEDIAN_MS(f, r, name##_forward(y, x, n));                                \
        MEDIAN_MS(fb, r, name##_forward(y, x, n); name##_backward(dx, dy, x, n)); \
        report(#name, shape, f, fb, r, 0, 0);                                    \
    }
    UNARY(silu)
    UNARY(gelu)
    UNARY(quick_gelu)
    UNARY(relu)
#undef UNARY
    if (wanted("swiglu")) {                           /* dgate, dup */
        MEDIAN_MS(f, r, swiglu_forward(y, g, x, n));
        MEDIAN_MS(fb, r, swiglu_forward(y, g, x, n); swiglu_backward(dg, dx, dy, g, x, n));
        report("swiglu", shape, f, fb, r, 0, 0);
    }
    if (wanted("add")) {                              /* da, db */
        MEDIAN_MS(f, r, add_forward(y, g, x, n));
        MEDIAN_MS(fb, r, add_forward(y, g, x, n); add_backward(dg, dx, dy, n));
        report("add", shape, f, fb, r, 0, 0);
    }
    free_all(x, y, dy, dx, g, dg, NULL);
}

static void bench_losses(void) {
    double f, fb; int r;
    if (wanted("softmax_xent")) {
        const int N = 512, V = 32000;                 /* dlogits; 64 prompt rows ignored */
        int *t_h = malloc(N * sizeof *t_h);
        for (int i = 0; i < N; i++) t_h[i] = i < 64 ? -100 : (int)rng_below(&g_rng, V);
        int *targets = buf_copy(t_h, N * sizeof *t_h);
        float *logits = buf_normal((size_t)N * V, 1), *dlogits = buf_zeros((size_t)N * V);
        float *lse = buf_zeros(N);
        int count = 0;
        MEDIAN_MS(f, r, g_sink = softmax_xent_forward(lse, &count, logits, targets, N, V, -100));
        MEDIAN_MS(fb, r, g_sink = softmax_xent_forward(lse, &count, logits, targets, N, V, -100);
                         softmax_xent_backward(dlogits, logits, lse, targets, 0.7f, count,
                                               N, V, -100));
        report("softmax_xent", "512x32000", f, fb, r, 0, 0);
        free(t_h);
        free_all(targets, logits, dlogits, lse, NULL);
    }
    const size_t n = (size_t)1024 * 1024;            /* one mask at 1024x1024: dx */
    float *x = buf_normal(n, 3), *y = buf_zeros(n), *dx = buf_zeros(n);
    {
        float *y_h = malloc(n * sizeof *y_h);
        for (size_t i = 0; i < n; i++) y_h[i] = rng_uniform(&g_rng) > 0.7 ? 1.0f : 0.0f;
        k_upload(y, y_h, n * sizeof *y_h);
        free(y_h);
    }
    if (wanted("bce")) {
        MEDIAN_MS(f, r, g_sink = bce_logits_forward(x, y, n));
        MEDIAN_MS(fb, r, g_sink = bce_logits_forward(x, y, n); bce_logits_backward(dx, x, y, 0.7f, n));
        report("bce", "1024x1024", f, fb, r, 0, 0);
    }
    if (wanted("dice")) {
        MEDIAN_MS(f, r, g_sink = dice_forward(x, y, n));
        MEDIAN_MS(fb, r, g_sink = dice_forward(x, y, n); dice_backward(dx, x, y, 0.7f, n));
        report("dice", "1024x1024", f, fb, r, 0, 0);
    }
    free_all(x, y, dx, NULL);
}

/* Deterministic RoI boxes (batch 0, x1, y1, x2, y2) in 224-pixel image
 * coordinates; bench_torch.py builds the same ones. */
static void roi_boxes(float *boxes, int K, int img) {
    for (int k = 0; k < K; k++) {
        float x1 = (float)(k * 37 % (img / 2)), y1 = (float)(k * 53 % (img / 2));
        float w = (float)(32 + k * 29 % 80), h = (float)(32 + k * 41 % 80);
        float *b = boxes + 5 * k;
        b[0] = 0; b[1] = x1; b[2] = y1; b[3] = x1 + w; b[4] = y1 + h;
    }
}

static void bench_vision(void) {
    double f, fb; int r;
    if (wanted("resize_bilinear")) {                 /* low-res mask to image size: din */
        const int C = 1, Hi = 256, Wi = 256, Ho = 1024, Wo = 1024;
        float *x = buf_uniform((size_t)C * Hi * Wi, -1, 1), *y = buf_zeros((size_t)C * Ho * Wo);
        float *dy = buf_normal((size_t)C * Ho * Wo, 1), *dx = buf_zeros((size_t)C * Hi * Wi);
        MEDIAN_MS(f, r, resize_bilinear_forward(y, x, C, Hi, Wi, Ho, Wo));
        MEDIAN_MS(fb, r, resize_bilinear_forward(y, x, C, Hi, Wi, Ho, Wo);
                         resize_bilinear_backward(dx, dy, C, Hi, Wi, Ho, Wo));
        report("resize_bilinear", "1x256x256->1024x1024", f, fb, r, 0, 0);
        free_all(x, y, dy, dx, NULL);
    }
    if (wanted("conv_transpose2x2")) {               /* SAM output_upscaling: din, dw, db */
        const int B = 1, Cin = 256, Cout = 64, H = 64, W = 64;
        const size_t nin = (size_t)B * Cin * H * W, nout = (size_t)B * Cout * 4 * H * W;
        float *x = buf_uniform(nin, -1, 1), *w = buf_uniform((size_t)Cin * Cout * 4, -0.03f, 0.03f);
        float *b = buf_uniform(Cout, -0.1f, 0.1f), *y = buf_zeros(nout), *dy = buf_normal(nout, 1);
        float *dx = buf_zeros(nin), *dw = buf_zeros((size_t)Cin * Cout * 4), *db = buf_zeros(Cout);
        MEDIAN_MS(f, r, conv_transpose2x2_forward(y, x, w, b, B, Cin, Cout, H, W));
        MEDIAN_MS(fb, r, conv_transpose2x2_forward(y, x, w, b, B, Cin, Cout, H, W);
                         conv_transpose2x2_backward(dx, dw, db, dy, x, w, B, Cin, Cout, H, W));
        double fl = 2.0 * B * Cin * Cout * H * W * 4;
        report("conv_transpose2x2", "256x64x64->64x128x128", f, fb, r, fl, 3 * fl);
        free_all(x, w, b, y, dy, dx, dw, db, NULL);
    }
    if (wanted("conv2d")) {
        static const struct { int Cin, H, W, Cout, K, s, p, din; const char *shape; } cs[] = {
            {3, 224, 224, 768, 16, 16, 0, 0, "3x224x224->768_k16s16"}, /* patch embed: dw, db */
            {64, 64, 64, 64, 3, 1, 1, 1, "64x64x64->64_k3p1"},         /* din, dw, db */
        };
        for (int c = 0; c < 2; c++) {
            const int B = 1, Cin = cs[c].Cin, H = cs[c].H, W = cs[c].W, Cout = cs[c].Cout;
            const int K = cs[c].K, s = cs[c].s, p = cs[c].p;
            const int OH = (H + 2 * p - K) / s + 1, OW = (W + 2 * p - K) / s + 1;
            const size_t nin = (size_t)B * Cin * H * W, nout = (size_t)B * Cout * OH * OW;
            const size_t nw = (size_t)Cout * Cin * K * K;
            float *x = buf_uniform(nin, -1, 1), *w = buf_uniform(nw, -0.05f, 0.05f);
            float *b = buf_uniform(Cout, -0.1f, 0.1f), *y = buf_zeros(nout), *dy = buf_normal(nout, 1);
            float *dx = cs[c].din ? buf_zeros(nin) : NULL, *dw = buf_zeros(nw), *db = buf_zeros(Cout);
            float *scratch = buf_zeros(conv2d_scratch_floats(Cin, H, W, K, K, s, s, p, p));
            MEDIAN_MS(f, r, conv2d_forward(y, scratch, x, w, b, B, Cin, H, W, Cout, K, K, s, s, p, p));
            MEDIAN_MS(fb, r, conv2d_forward(y, scratch, x, w, b, B, Cin, H, W, Cout, K, K, s, s, p, p);
                             conv2d_backward(dx, dw, db, scratch, dy, x, w,
                                             B, Cin, H, W, Cout, K, K, s, s, p, p));
            double fl = 2.0 * B * Cout * OH * OW * Cin * K * K;
            report("conv2d", cs[c].shape, f, fb, r, fl, (cs[c].din ? 3 : 2) * fl);
            free_all(x, w, b, y, dy, dw, db, scratch, NULL);
            if (dx) k_free(dx);
        }
    }
    if (wanted("roi_align")) {                        /* box reference on the CLIP grid: din */
        const int B = 1, H = 16, W = 16, C = 1024, K = 64, P = 2, img = 224;
        float boxes_h[64 * 5];
        roi_boxes(boxes_h, K, img);
        float *boxes = buf_copy(boxes_h, sizeof boxes_h);
        const size_t nin = (size_t)B * H * W * C, nout = (size_t)K * P * P * C;
        float *x = buf_uniform(nin, -1, 1), *y = buf_zeros(nout), *dy = buf_normal(nout, 1);
        float *dx = buf_zeros(nin);
        const float ss = (float)H / img;
        MEDIAN_MS(f, r, roi_align_forward(y, x, boxes, K, B, H, W, C, P, P, ss, 0, 1));
        MEDIAN_MS(fb, r, roi_align_forward(y, x, boxes, K, B, H, W, C, P, P, ss, 0, 1);
                         roi_align_backward(dx, dy, boxes, K, B, H, W, C, P, P, ss, 0, 1));
        report("roi_align", "16x16x1024_K64_2x2", f, fb, r, 0, 0);
        free_all(boxes, x, y, dy, dx, NULL);
    }
}

static void bench_refocus(void) {
    if (!wanted("refocus")) return;
    /* one [SEG] over a 100-token answer span: dhid, datt */
    const int T = 512, S = 512, H = 8, D = 1024, p = 500, s = 400;
    float *hid = buf_uniform((size_t)T * D, -1, 1), *att = buf_uniform((size_t)H * T * S, 0, 2.0f / S);
    float *y = buf_zeros(D), *dy = buf_normal(D, 1);
    float *dhid = buf_zeros((size_t)T * D), *datt = buf_zeros((size_t)H * T * S);
    double f, fb; int r;
    MEDIAN_MS(f, r, refocus_forward(y, hid, att, p, s, 1.0f, T, S, H, D));
    MEDIAN_MS(fb, r, refocus_forward(y, hid, att, p, s, 1.0f, T, S, H, D);
                     refocus_backward(dhid, datt, dy, hid, att, p, s, 1.0f, T, S, H, D));
    report("refocus", "T512_S512_H8_D1024_span100", f, fb, r, 0, 0);
    free_all(hid, att, y, dy, dhid, datt, NULL);
}

static void bench_adamw(void) {
    if (!wanted("adamw")) return;
    const size_t n = (size_t)1 << 24;                /* 16.8M parameters, one tensor */
    float *param = buf_normal(n, 0.02f), *grad = buf_normal(n, 1e-3f);
    float *m = buf_zeros(n), *v = buf_zeros(n);
    int t = 0;
    double f; int r;
    MEDIAN_MS(f, r, adamw_update(param, grad, m, v, n, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, ++t));
    report("adamw", "n16777216", f, -1, r, 0, 0);
    free_all(param, grad, m, v, NULL);
}

/* ------------------------------------------------------------------ main */

extern char **environ;

/* The threading and BLAS variables, set or not, then any other that matters. */
static void print_env(void) {
    static const char *always[] = {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                   "GOMP_SPINCOUNT"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
        const char *v = getenv(always[i]);
        printf("# env.%s=%s\n", always[i], v ? v : "(unset)");
    }
    static const char *prefixes[] = {"OMP_", "GOMP_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES",
                                     "LD_PRELOAD", "LD_LIBRARY_PATH"};
    for (char **e = environ; *e; e++) {
        int shown = 0;
        for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
            size_t n = strlen(always[i]);
            if (strncmp(*e, always[i], n) == 0 && (*e)[n] == '=') shown = 1;
        }
        if (shown) continue;
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
            if (strncmp(*e, prefixes[i], strlen(prefixes[i])) == 0) {
                printf("# env.%s\n", *e);
                break;
            }
    }
}

int main(int argc, char **argv) {
    int ceiling_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ceiling-only") == 0) ceiling_only = 1;
        else if (strncmp(argv[i], "--only=", 7) == 0) g_only = argv[i] + 7;
        else if (strncmp(argv[i], "--target=", 9) == 0) g_target_s = atof(argv[i] + 9);
        else {
            fprintf(stderr, "usage: %s [--ceiling-only] [--only=kernel,kernel,...] [--target=SECONDS]\n",
                    argv[0]);
            return 2;
        }
    }
    rng_seed(&g_rng, 42);
    printf("# c.backend=%s\n", k_backend_name());
    printf("# c.threads=%d\n", k_num_threads());
    printf("# c.openblas_config=%s\n", openblas_get_config());
    printf("# c.openblas_corename=%s\n", openblas_get_corename());
    printf("# c.compiler=%s\n", __VERSION__);
    print_env();
    fflush(stdout);

    double t0 = ar_now();
    bench_ceiling();
    if (strcmp(k_backend_name(), "cpu") != 0) {
        /* the ceiling is the CPU's: a share of it means nothing for GPU kernels */
        printf("# c.ceiling_note=CPU sgemm; kernels run on %s, no %% of ceiling\n", k_backend_name());
        g_ceiling = 0.0;
    }
    if (!ceiling_only) {
        bench_matmul();
        bench_linear();
        bench_lora();
        bench_embedding();
        bench_norms();
        bench_rope();
        bench_attention();
        bench_elementwise();
        bench_losses();
        bench_vision();
        bench_refocus();
        bench_adamw();
    }
    printf("# c.total_s=%.1f\n", ar_now() - t0);
    return 0;
}
