/* kernels/cpu/bf16.c — 16-bit storage of frozen weights (kernels.h "16-bit
 * storage", bf16 and IEEE fp16): the conversions (the host helpers of
 * kernels/bf16_host.c), and the linear product with a 16-bit weight, widened
 * to fp32 in row blocks into an internal buffer of at most WIDE_FLOATS floats
 * and multiplied by OpenBLAS sgemm. The buffers are the backend's own and
 * grow once to the largest size used (kernels are called from one thread).
 * The CPU backend's GEMM mode lives here too: fp32, or bf16 / fp16 emulated
 * (the activation operand of a product with a weight of that format rounded
 * to it first; the products stay fp32).
 * Depends on kernels/kernels.h, OpenBLAS (cblas), OpenMP. */
#include "kernels/kernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIDE_FLOATS = 1 << 22 };   /* 16 MiB: 1024 rows of 4096 */
enum { FMT_BF16 = 0, FMT_F16 = 1 };

/* On this backend, backend memory is host memory (kernels/bf16_host.c). */
void convert_f32_to_bf16(bf16_t *dst, const float *src, size_t n) { convert_f32_to_bf16_host(dst, src, n); }
void convert_bf16_to_f32(float *dst, const bf16_t *src, size_t n) { convert_bf16_to_f32_host(dst, src, n); }
void convert_f32_to_f16(f16_t *dst, const float *src, size_t n) { convert_f32_to_f16_host(dst, src, n); }
void convert_f16_to_f32(float *dst, const f16_t *src, size_t n) { convert_f16_to_f32_host(dst, src, n); }

static void widen(float *dst, const uint16_t *src, size_t n, int fmt) {
    if (fmt == FMT_F16) convert_f16_to_f32_host(dst, src, n);
    else convert_bf16_to_f32_host(dst, src, n);
}

/* The GEMM mode (kernels.h k_set_gemm_mode): fp32, or bf16 / fp16 emulated. */
static int g_mode_init, g_round = -1;   /* the format activations are rounded to (-1: none) */
static void mode_init(void) {
    if (g_mode_init) return;
    g_mode_init = 1;
    const char *m = getenv("ANYREF_GEMM");
    if (m && *m && k_set_gemm_mode(m))
        fprintf(stderr, "warning: ANYREF_GEMM=%s: the cpu backend has fp32, bf16 and fp16 (emulated); GEMMs stay fp32\n", m);
}
int k_set_gemm_mode(const char *mode) {
    g_mode_init = 1;
    if (mode && !strcmp(mode, "fp32")) { g_round = -1; return 0; }
    if (mode && !strcmp(mode, "bf16")) { g_round = FMT_BF16; return 0; }
    if (mode && !strcmp(mode, "fp16")) { g_round = FMT_F16; return 0; }
    return -1;
}
const char *k_gemm_mode(void) {
    mode_init();
    return g_round == FMT_BF16 ? "bf16" : g_round == FMT_F16 ? "fp16" : "fp32";
}

/* A grow-once buffer of n elements of size sz (NULL when the heap has no room). */
static void *grow(void **buf, size_t *cap, size_t n, size_t sz) {
    if (n > *cap) {
        void *p = realloc(*buf, n * sz);
        if (!p) return NULL;
        *buf = p;
        *cap = n;
    }
    return *buf;
}

/* In the mode of the weight's format: x[n] rounded to that format, as floats,
 * in a buffer of this backend; otherwise (or without heap room: the product
 * then stays fp32 for this call) x itself. */
static void *g_act, *g_act16;
static size_t g_act_n, g_act16_n;
static const float *rounded(const float *x, size_t n, int fmt) {
    mode_init();
    if (g_round != fmt) return x;
    float *a = grow(&g_act, &g_act_n, n, sizeof(float));
    uint16_t *h = grow(&g_act16, &g_act16_n, n, sizeof(uint16_t));
    if (!a || !h) return x;
    if (fmt == FMT_F16) { convert_f32_to_f16_host(h, x, n); convert_f16_to_f32_host(a, h, n); }
    else { convert_f32_to_bf16_host(h, x, n); convert_bf16_to_f32_host(a, h, n); }
    return a;
}

static void *g_wide;
static size_t g_wide_n;
static float g_small[1 << 16];   /* when the heap has no 16 MiB left: smaller blocks */
/* Rows per block for a row length of IN (0: not even one row fits), and the block buffer. */
static float *wide_buffer(int IN, int OUT, int *rows) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb < 1) rb = 1;
    if (rb > OUT) rb = OUT;
    float *w = grow(&g_wide, &g_wide_n, (size_t)rb * (size_t)IN, sizeof(float));
    if (w) {
        *rows = rb;
        return w;
    }
    rb = (int)((sizeof g_small / sizeof g_small[0]) / (size_t)IN);
    *rows = rb < 1 ? 0 : rb > OUT ? OUT : rb;
    return g_small;
}

/* One weight value, widened (the slow paths without a block buffer). */
static float wide1(const uint16_t *w, size_t i, int fmt) {
    float f;
    widen(&f, w + i, 1, fmt);
    return f;
}

static void linear16_forward(float *out, const float *in, const uint16_t *w, const float *b, int N, int IN, int OUT,
                             int fmt) {
    if (N <= 0 || OUT <= 0) return;
    if (b) {
        #pragma omp parallel for if ((long)N * OUT > 32768)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, b, (size_t)OUT * sizeof(float));
    }
    if (IN <= 0) {
        if (!b) memset(out, 0, (size_t)N * OUT * sizeof(float));
        return;
    }
    in = rounded(in, (size_t)N * IN, fmt);   /* emulated 16-bit products: the activations rounded too */
    int rb;
    float *wf = wide_buffer(IN, OUT, &rb);
    if (!rb) {   /* no block buffer: out[n, o] (+)= Σ_i in[n,i] w[o,i] directly */
        #pragma omp parallel for
        for (int o = 0; o < OUT; o++)
            for (int n = 0; n < N; n++) {
                double s = 0;
                for (int i = 0; i < IN; i++) s += (double)in[(size_t)n * IN + i] * wide1(w, (size_t)o * IN + i, fmt);
                out[(size_t)n * OUT + o] = (float)(b ? out[(size_t)n * OUT + o] + s : s);
            }
        return;
    }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        widen(wf, w + (size_t)o0 * IN, (size_t)nr * IN, fmt);
        /* out[:, o0:o0+nr] (row stride OUT) = in[N,IN] @ wf[nr,IN]^T (+ the bias already there) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, IN, 1.0f, in, IN, wf, IN, b ? 1.0f : 0.0f,
                    out + o0, OUT);
    }
}

static void linear16_backward(float *din, float *db, const float *dout, const uint16_t *w, int N, int IN, int OUT,
                              int fmt) {
    if (db) linear_backward(NULL, NULL, db, dout, NULL, NULL, N, IN, OUT);
    if (!din || N <= 0 || IN <= 0 || OUT <= 0) return;
    dout = rounded(dout, (size_t)N * OUT, fmt);   /* emulated 16-bit products: the output gradient rounded too */
    int rb;
    float *wf = wide_buffer(IN, OUT, &rb);
    if (!rb) {   /* no block buffer: din[n,i] += Σ_o dout[n,o] w[o,i] directly */
        #pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                const float g = dout[(size_t)n * OUT + o];
                for (int i = 0; i < IN; i++) din[(size_t)n * IN + i] += g * wide1(w, (size_t)o * IN + i, fmt);
            }
        return;
    }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        widen(wf, w + (size_t)o0 * IN, (size_t)nr * IN, fmt);
        /* din[N,IN] += dout[:, o0:o0+nr] (row stride OUT) @ wf[nr,IN] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, nr, 1.0f, dout + o0, OUT, wf, IN, 1.0f, din, IN);
    }
}

void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, FMT_BF16);
}
void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, FMT_BF16);
}
void linear_f16_forward(float *out, const float *in, const f16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, FMT_F16);
}
void linear_f16_backward(float *din, float *db, const float *dout, const f16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, FMT_F16);
}
