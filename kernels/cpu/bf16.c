/* kernels/cpu/bf16.c — bf16 storage of frozen weights (kernels.h "bf16
 * storage"): the conversions (the host helpers of kernels/bf16_host.c), and
 * the linear product with a bf16 weight, widened to fp32 in row blocks into an internal buffer of at most WIDE_FLOATS floats
 * and multiplied by OpenBLAS sgemm. The buffer is the backend's own and grows
 * once to the largest block used (kernels are called from one thread). The
 * CPU backend's GEMM mode lives here too: fp32, or bf16 emulated.
 * Depends on kernels/kernels.h, OpenBLAS (cblas), OpenMP. */
#include "kernels/kernels.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIDE_FLOATS = 1 << 22 };   /* 16 MiB: 1024 rows of 4096 */

static inline float from_bf16(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* On this backend, backend memory is host memory (kernels/bf16_host.c). */
void convert_f32_to_bf16(bf16_t *dst, const float *src, size_t n) { convert_f32_to_bf16_host(dst, src, n); }
void convert_bf16_to_f32(float *dst, const bf16_t *src, size_t n) { convert_bf16_to_f32_host(dst, src, n); }

/* The GEMM mode (kernels.h k_set_gemm_mode): fp32, or bf16 emulated (the
 * activation operand of linear_bf16_* rounded to bf16; every product fp32). */
static int g_mode_init, g_bf16;
static void mode_init(void) {
    if (g_mode_init) return;
    g_mode_init = 1;
    const char *m = getenv("ANYREF_GEMM");
    if (m && *m && k_set_gemm_mode(m))
        fprintf(stderr, "warning: ANYREF_GEMM=%s: the cpu backend has fp32 and bf16 (emulated); GEMMs stay fp32\n", m);
}
int k_set_gemm_mode(const char *mode) {
    g_mode_init = 1;
    if (mode && !strcmp(mode, "fp32")) { g_bf16 = 0; return 0; }
    if (mode && !strcmp(mode, "bf16")) { g_bf16 = 1; return 0; }
    return -1;
}
const char *k_gemm_mode(void) {
    mode_init();
    return g_bf16 ? "bf16" : "fp32";
}

/* bf16 mode: x[n] rounded to bf16 (as floats) into a buffer of this backend
 * (grows once; NULL when the heap has no room: the caller then keeps fp32). */
static float *g_act;
static size_t g_act_n;
static const float *rounded(const float *x, size_t n) {
    if (n > g_act_n) {
        float *p = realloc(g_act, n * sizeof(float));
        if (!p) return NULL;
        g_act = p;
        g_act_n = n;
    }
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        if ((u & 0x7fffffffu) <= 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
        else u |= 0x00400000u;
        u &= 0xffff0000u;
        memcpy(&g_act[i], &u, sizeof u);
    }
    return g_act;
}

static float *g_wide;
static size_t g_wide_n;
static float g_small[1 << 16];   /* when the heap has no 16 MiB left: smaller blocks */
/* Rows per block for a row length of IN, and the block buffer. */
static float *wide_buffer(int IN, int OUT, int *rows) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb < 1) rb = 1;
    if (rb > OUT) rb = OUT;
    const size_t need = (size_t)rb * (size_t)IN;
    if (need > g_wide_n) {
        float *p = realloc(g_wide, need * sizeof(float));
        if (p) {
            g_wide = p;
            g_wide_n = need;
        }
    }
    if (need <= g_wide_n) {
        *rows = rb;
        return g_wide;
    }
    rb = (int)((sizeof g_small / sizeof g_small[0]) / (size_t)IN);
    *rows = rb < 1 ? 0 : rb > OUT ? OUT : rb;
    return g_small;
}

/* out[n, o] (+)= Σ_i in[n,i] w[o,i] without a block buffer (a row longer than
 * the fallback buffer and no heap: slow but right). */
static void forward_rows(float *out, const float *in, const bf16_t *w, int acc, int N, int IN, int OUT) {
    #pragma omp parallel for
    for (int o = 0; o < OUT; o++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int i = 0; i < IN; i++) s += (double)in[(size_t)n * IN + i] * from_bf16(w[(size_t)o * IN + i]);
            out[(size_t)n * OUT + o] = (float)(acc ? out[(size_t)n * OUT + o] + s : s);
        }
}

void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (b) {
        #pragma omp parallel for if ((long)N * OUT > 32768)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, b, (size_t)OUT * sizeof(float));
    }
    if (IN <= 0) {
        if (!b) memset(out, 0, (size_t)N * OUT * sizeof(float));
        return;
    }
    mode_init();
    if (g_bf16) {   /* bf16 x bf16 products: the activations rounded too */
        const float *r = rounded(in, (size_t)N * IN);
        if (r) in = r;
    }
    int rb;
    float *wf = wide_buffer(IN, OUT, &rb);
    if (!rb) { forward_rows(out, in, w, b != NULL, N, IN, OUT); return; }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        convert_bf16_to_f32_host(wf, w + (size_t)o0 * IN, (size_t)nr * IN);
        /* out[:, o0:o0+nr] (row stride OUT) = in[N,IN] @ wf[nr,IN]^T (+ the bias already there) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, IN, 1.0f, in, IN, wf, IN, b ? 1.0f : 0.0f,
                    out + o0, OUT);
    }
}

void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    if (db) linear_backward(NULL, NULL, db, dout, NULL, NULL, N, IN, OUT);
    if (!din || N <= 0 || IN <= 0 || OUT <= 0) return;
    mode_init();
    if (g_bf16) {   /* bf16 x bf16 products: the output gradient rounded too */
        const float *r = rounded(dout, (size_t)N * OUT);
        if (r) dout = r;
    }
    int rb;
    float *wf = wide_buffer(IN, OUT, &rb);
    if (!rb) {   /* no block buffer: din[n,i] += Σ_o dout[n,o] w[o,i] directly */
        #pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                const float g = dout[(size_t)n * OUT + o];
                for (int i = 0; i < IN; i++) din[(size_t)n * IN + i] += g * from_bf16(w[(size_t)o * IN + i]);
            }
        return;
    }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        convert_bf16_to_f32_host(wf, w + (size_t)o0 * IN, (size_t)nr * IN);
        /* din[N,IN] += dout[:, o0:o0+nr] (row stride OUT) @ wf[nr,IN] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, nr, 1.0f, dout + o0, OUT, wf, IN, 1.0f, din, IN);
    }
}
