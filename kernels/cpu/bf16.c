/* kernels/cpu/bf16.c — 16-bit storage of frozen weights (kernels.h "16-bit
 * storage", bf16 and IEEE fp16): the conversions (the host helpers of
 * kernels/bf16_host.c), and the linear product with a 16-bit weight, widened
 * to fp32 in row blocks into an internal buffer of at most WIDE_FLOATS floats
 * and multiplied by OpenBLAS sgemm. The buffers are the backend's own and
 * grow once to the largest size used (kernels are called from one thread).
 * The CPU backend's GEMM mode lives here too: fp32, or bf16 / fp16 (the
 * activation operand of a product with a weight of that format rounded to it
 * first). In bf16 mode, built with oneDNN (ANYREF_DNNL, the default), those
 * products run as oneDNN bf16 matmuls (bf16 x bf16, fp32 accumulation: its
 * AVX512-BF16 / AMX kernels where the CPU has them) straight from the stored
 * bf16 weight; where oneDNN has no fast kernel for a shape (its reference
 * implementation), without oneDNN, with ANYREF_CPU_BF16=emulate, and for fp16,
 * they are emulated: the weight widened, the rounded activations multiplied
 * in fp32 by OpenBLAS — the same numbers up to summation order. The batched
 * bf16 product the other CPU kernels use (kernels/cpu/bf16_mm.h) is here too.
 * Depends on kernels/kernels.h, OpenBLAS (cblas), OpenMP, oneDNN (optional). */
#include "kernels/kernels.h"
#include "kernels/cpu/bf16_mm.h"
#include "kernels/half_bits.h"
#include <cblas.h>
#ifdef ANYREF_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif
#include <omp.h>
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

/* The GEMM mode (kernels.h k_set_gemm_mode): fp32, bf16 (oneDNN where it has a fast kernel, else
 * emulated) or fp16 (emulated). */
static int g_mode_init, g_round = -1;   /* the format activations are rounded to (-1: none) */
static void mode_init(void) {
    if (g_mode_init) return;
    g_mode_init = 1;
    const char *m = getenv("ANYREF_GEMM");
    if (m && *m && k_set_gemm_mode(m))
        fprintf(stderr, "warning: ANYREF_GEMM=%s: the cpu backend has fp32, bf16 and fp16; GEMMs stay fp32\n", m);
}
int k_set_gemm_mode(const char *mode) {
    g_mode_init = 1;
    if (mode && !strcmp(mode, "fp32")) { g_round = -1; return 0; }
    if (mode && !strcmp(mode, "bf16")) { g_round = FMT_BF16; return 0; }
    if (mode && !strcmp(mode, "fp16")) { g_round = FMT_F16; return 0; }
    return -1;
}
void k_set_gemm_rest_fp32(int on) { (void)on; }   /* the CPU's other GEMMs are fp32 always */
const char *k_gemm_mode(void) {
    mode_init();
    return g_round == FMT_BF16 ? "bf16" : g_round == FMT_F16 ? "fp16" : "fp32";
}

/* kernels/cpu/bf16_mm.h */
void *cpu_grow(void **buf, size_t *cap, size_t n, size_t sz) {
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
static void *g_act[2], *g_act16;
static size_t g_act_n[2], g_act16_n;
static const float *rounded_in(const float *x, size_t n, int fmt, int slot) {
    mode_init();
    if (g_round != fmt) return x;
    float *a = cpu_grow(&g_act[slot], &g_act_n[slot], n, sizeof(float));
    uint16_t *h = cpu_grow(&g_act16, &g_act16_n, n, sizeof(uint16_t));
    if (!a || !h) return x;
    if (fmt == FMT_F16) { convert_f32_to_f16_host(h, x, n); convert_f16_to_f32_host(a, h, n); }
    else { convert_f32_to_bf16_host(h, x, n); convert_bf16_to_f32_host(a, h, n); }
    return a;
}
static const float *rounded(const float *x, size_t n, int fmt) { return rounded_in(x, n, fmt, 0); }

static void *g_wide;
static size_t g_wide_n;
static float g_small[1 << 16];   /* when the heap has no 16 MiB left: smaller blocks */
/* Rows per block for a row length of IN (0: not even one row fits), and the block buffer. */
static float *wide_buffer(int IN, int OUT, int *rows) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb < 1) rb = 1;
    if (rb > OUT) rb = OUT;
    float *w = cpu_grow(&g_wide, &g_wide_n, (size_t)rb * (size_t)IN, sizeof(float));
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

#ifdef ANYREF_DNNL
/* oneDNN bf16 matmuls, one cached primitive per shape and layout: C (+)= A B,
 * A [M,K] and B [K,N] bf16 with explicit strides (batch, row, column), C fp32
 * dense [M,N] (accumulated through a sum post-op when acc; a bias [N] and a
 * GELU / quick-GELU eltwise post-op on the accumulator when the key asks for
 * them, linear_half_act_forward's epilogue); batch 0: one 2-D
 * product, else `batch` of them (3-D, C's batch stride M*N). The linear
 * products read A = the rounded activations (row-major), B = the stored weight
 * w [OUT,IN] with strides (1, K) forward (w^T) or (N, 1) backward (w); the
 * weight gradient reads A = dout^T, strides (1, M). A shape whose primitive is
 * oneDNN's reference implementation keeps p = NULL: emulated. */
typedef struct {
    long long batch, M, K, N, acc, sa[3], sb[3];
    long long bias, act;   /* a bias [N] added to the accumulator; act: K_ACT_* post-op after it (0: none) */
} dn_key;
typedef struct {
    dn_key k;
    dnnl_primitive_t p;
    dnnl_memory_t a, b, c, bias;
} dn_entry;
enum { DN_CACHE = 128 };   /* the LLaMA's, encoders' and attention chunks' shapes, with room */
static dn_entry g_dn[DN_CACHE];
static int g_dn_n, g_dn_next, g_dn_state;   /* state: 0 not tried, 1 usable, -1 not */
static dnnl_engine_t g_eng;
static dnnl_stream_t g_st;
static char g_dn_impl[96];                  /* the first fast primitive's implementation name */
static void *g_a16, *g_b16;
static size_t g_a16_n, g_b16_n;

static int dn_usable(void) {
    const char *e = getenv("ANYREF_CPU_BF16");   /* read on every call: tests switch it */
    if (e && !strcmp(e, "emulate")) return 0;
    if (g_dn_state) return g_dn_state > 0;
    g_dn_state = -1;
    if (dnnl_engine_create(&g_eng, dnnl_cpu, 0) != dnnl_success) return 0;
    if (dnnl_stream_create(&g_st, g_eng, dnnl_stream_default_flags) != dnnl_success) return 0;
    g_dn_state = 1;
    return 1;
}

static void dn_drop(dn_entry *e) {
    if (e->p) dnnl_primitive_destroy(e->p);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    if (e->bias) dnnl_memory_destroy(e->bias);
    memset(e, 0, sizeof *e);
}

/* The key of a 2-D product: A [M,K] read transposed (ta: strides (1, M)) or
 * not, B the weight read as w^T (bwd 0) or w (bwd 1). */
static dn_key dn_key2(int M, int K, int N, int bwd, int acc, int ta) {
    dn_key k;
    memset(&k, 0, sizeof k);   /* compared with memcmp */
    k.M = M; k.K = K; k.N = N; k.acc = acc;
    k.sa[1] = ta ? 1 : K; k.sa[2] = ta ? M : 1;
    k.sb[1] = bwd ? N : 1; k.sb[2] = bwd ? 1 : K;
    return k;
}

/* The cached entry for a key (created on first use). */
static dn_entry *dn_get(const dn_key *k) {
    for (int i = 0; i < g_dn_n; i++)
        if (!memcmp(&g_dn[i].k, k, sizeof *k)) return &g_dn[i];
    dn_entry *e;
    if (g_dn_n < DN_CACHE) e = &g_dn[g_dn_n++];
    else { e = &g_dn[g_dn_next]; g_dn_next = (g_dn_next + 1) % DN_CACHE; }   /* round robin */
    dn_drop(e);
    e->k = *k;
    const int nd = k->batch ? 3 : 2, o = k->batch ? 0 : 1;   /* o: the first used entry of the 3-D arrays */
    dnnl_memory_desc_t da, db, dc, dbias;
    dnnl_dims_t sa = {k->batch, k->M, k->K}, sb = {k->batch, k->K, k->N}, sc = {k->batch, k->M, k->N};
    dnnl_dims_t sta = {k->sa[0], k->sa[1], k->sa[2]}, stb = {k->sb[0], k->sb[1], k->sb[2]};
    dnnl_dims_t stc = {k->M * k->N, k->N, 1}, sbias = {1, 1, k->N}, stbias = {k->N, k->N, 1};
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t md;
    int ok = dnnl_memory_desc_init_by_strides(&da, nd, sa + o, dnnl_bf16, sta + o) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&db, nd, sb + o, dnnl_bf16, stb + o) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&dc, nd, sc + o, dnnl_f32, stc + o) == dnnl_success &&
             (!k->bias || dnnl_memory_desc_init_by_strides(&dbias, nd, sbias + o, dnnl_f32, stbias + o) == dnnl_success) &&
             dnnl_matmul_desc_init(&md, &da, &db, k->bias ? &dbias : NULL, &dc) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && (k->acc || k->act)) {
        ok = dnnl_post_ops_create(&po) == dnnl_success;
        if (ok && k->acc) ok = dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success;
        if (ok && k->act == K_ACT_GELU)   /* 0.5 x (1 + erf(x / sqrt 2)) */
            ok = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f) == dnnl_success;
        if (ok && k->act == K_ACT_QUICK_GELU)   /* x sigmoid(1.702 x) */
            ok = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f) == dnnl_success;
        ok = ok && dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    ok = ok && dnnl_primitive_desc_create(&pd, &md, attr, g_eng, NULL) == dnnl_success;
    const char *impl = NULL;
    if (ok) ok = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl;
    if (ok && strncmp(impl, "ref", 3) != 0 && !strstr(impl, ":ref")) {   /* a fast kernel: keep it */
        ok = dnnl_primitive_create(&e->p, pd) == dnnl_success &&
             dnnl_memory_create(&e->a, &da, g_eng, DNNL_MEMORY_NONE) == dnnl_success &&
             dnnl_memory_create(&e->b, &db, g_eng, DNNL_MEMORY_NONE) == dnnl_success &&
             dnnl_memory_create(&e->c, &dc, g_eng, DNNL_MEMORY_NONE) == dnnl_success &&
             (!k->bias || dnnl_memory_create(&e->bias, &dbias, g_eng, DNNL_MEMORY_NONE) == dnnl_success);
        if (ok && !g_dn_impl[0]) snprintf(g_dn_impl, sizeof g_dn_impl, "%s", impl);
        if (!ok) {   /* keep the key, without a primitive: emulated */
            dn_drop(e);
            e->k = *k;
        }
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return e;
}

/* Runs an entry: C (+)= A B (+ bias, then the activation, as its key says),
 * A and B already bf16, bias fp32 [N] or NULL. 0 done, -1 not (emulate instead). */
static int dn_exec(dn_entry *e, float *c, const uint16_t *a, const uint16_t *b, const float *bias) {
    dnnl_memory_set_data_handle(e->a, (void *)a);
    dnnl_memory_set_data_handle(e->b, (void *)b);
    dnnl_memory_set_data_handle(e->c, c);
    if (e->bias) dnnl_memory_set_data_handle(e->bias, (void *)bias);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c},
                               {DNNL_ARG_BIAS, e->bias}};
    if (dnnl_primitive_execute(e->p, g_st, e->bias ? 4 : 3, args) != dnnl_success) return -1;
    return dnnl_stream_wait(g_st) == dnnl_success ? 0 : -1;
}

static int dn_matmul(float *c, const float *x, const uint16_t *w, const float *bias, int act, int M, int K, int N,
                     int bwd, int acc) {
    if (!dn_usable()) return -1;
    dn_key k = dn_key2(M, K, N, bwd, acc, 0);
    k.bias = bias != NULL;
    k.act = act;
    dn_entry *e = dn_get(&k);
    if (!e->p) return -1;
    uint16_t *a = cpu_grow(&g_a16, &g_a16_n, (size_t)M * K, sizeof(uint16_t));
    if (!a) return -1;
    convert_f32_to_bf16_host(a, x, (size_t)M * K);
    return dn_exec(e, c, a, w, bias);
}

/* dw[OUT,IN] += dout[N,OUT]^T in[N,IN], both rounded to bf16. 0 done, -1 not. */
static int dn_matmul_dw(float *dw, const float *dout, const float *in, int N, int IN, int OUT) {
    if (!dn_usable()) return -1;
    const dn_key k = dn_key2(OUT, N, IN, 1, 1, 1);
    dn_entry *e = dn_get(&k);
    if (!e->p) return -1;
    uint16_t *a = cpu_grow(&g_a16, &g_a16_n, (size_t)N * OUT, sizeof(uint16_t));
    uint16_t *b = cpu_grow(&g_b16, &g_b16_n, (size_t)N * IN, sizeof(uint16_t));
    if (!a || !b) return -1;
    convert_f32_to_bf16_host(a, dout, (size_t)N * OUT);
    convert_f32_to_bf16_host(b, in, (size_t)N * IN);
    return dn_exec(e, dw, a, b, NULL);
}
#endif

/* Which products bf16 mode runs natively (kernels.h k_gemm_detail). */
const char *k_gemm_detail(void) {
    mode_init();
    if (g_round < 0) return "";
#ifdef ANYREF_DNNL
    if (g_round == FMT_BF16 && dn_usable()) {
        if (!g_dn_impl[0]) {   /* a probe of a typical shape */
            const dn_key k = dn_key2(256, 256, 256, 0, 0, 0);
            dn_get(&k);
        }
        static char msg[160];
        if (g_dn_impl[0]) {
            snprintf(msg, sizeof msg, "oneDNN bf16 matmuls (%s) for the bf16 products", g_dn_impl);
            return msg;
        }
    }
#endif
    return "emulated: same numbers, no speed-up";
}

/* out (+ when acc: the bias already there) = in W^T, emulated (widened weight, rounded activations). */
static void linear16_product(float *out, const float *in, const uint16_t *w, int acc, int N, int IN, int OUT,
                             int fmt) {
    if (IN <= 0) {
        if (!acc) memset(out, 0, (size_t)N * OUT * sizeof(float));
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
                out[(size_t)n * OUT + o] = (float)(acc ? out[(size_t)n * OUT + o] + s : s);
            }
        return;
    }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        widen(wf, w + (size_t)o0 * IN, (size_t)nr * IN, fmt);
        /* out[:, o0:o0+nr] (row stride OUT) = in[N,IN] @ wf[nr,IN]^T (+ the bias already there) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, nr, IN, 1.0f, in, IN, wf, IN, acc ? 1.0f : 0.0f,
                    out + o0, OUT);
    }
}

/* act (K_ACT_*, 0: none) is applied after the bias: fused into the oneDNN
 * product (post-op), else by the activation kernel afterwards. */
static void linear16_forward(float *out, const float *in, const uint16_t *w, const float *b, int N, int IN, int OUT,
                             int fmt, int act) {
    if (N <= 0 || OUT <= 0) return;
#ifdef ANYREF_DNNL
    mode_init();   /* bias and activation in the product's epilogue */
    if (IN > 0 && g_round == FMT_BF16 && fmt == FMT_BF16 && dn_matmul(out, in, w, b, act, N, IN, OUT, 0, 0) == 0)
        return;
#endif
    if (b) {
        #pragma omp parallel for if ((long)N * OUT > 32768)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, b, (size_t)OUT * sizeof(float));
    }
    linear16_product(out, in, w, b != NULL, N, IN, OUT, fmt);
    if (act == K_ACT_GELU) gelu_forward(out, out, (size_t)N * OUT);
    else if (act == K_ACT_QUICK_GELU) quick_gelu_forward(out, out, (size_t)N * OUT);
}

static void linear16_backward(float *din, float *db, const float *dout, const uint16_t *w, int N, int IN, int OUT,
                              int fmt) {
    if (db) linear_backward(NULL, NULL, db, dout, NULL, NULL, N, IN, OUT);
    if (!din || N <= 0 || IN <= 0 || OUT <= 0) return;
#ifdef ANYREF_DNNL
    mode_init();
    if (g_round == FMT_BF16 && fmt == FMT_BF16 && dn_matmul(din, dout, w, NULL, 0, N, OUT, IN, 1, 1) == 0) return;
#endif
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
    linear16_forward(out, in, w, b, N, IN, OUT, FMT_BF16, 0);
}
void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, FMT_BF16);
}
void linear_f16_forward(float *out, const float *in, const f16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, FMT_F16, 0);
}
void linear_half_act_forward(float *out, const float *in, const uint16_t *w, int fp16, const float *b, int N, int IN,
                             int OUT, int act) {
    linear16_forward(out, in, w, b, N, IN, OUT, fp16 ? FMT_F16 : FMT_BF16, act);
}
void linear_f16_backward(float *din, float *db, const float *dout, const f16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, FMT_F16);
}

void linear_bf16_backward_weight(float *dw, const float *dout, const float *in, int N, int IN, int OUT) {
    if (!dw || N <= 0 || IN <= 0 || OUT <= 0) return;
    mode_init();
    if (g_round != FMT_BF16) { linear_backward(NULL, dw, NULL, dout, in, NULL, N, IN, OUT); return; }
#ifdef ANYREF_DNNL
    if (dn_matmul_dw(dw, dout, in, N, IN, OUT) == 0) return;
#endif
    const float *g = rounded_in(dout, (size_t)N * OUT, FMT_BF16, 0), *x = rounded_in(in, (size_t)N * IN, FMT_BF16, 1);
    /* dw[OUT,IN] += g[N,OUT]^T @ x[N,IN] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, g, OUT, x, IN, 1.0f, dw, IN);
}

/* One emulated product of the batch: A_i, B_i widened into a and b, one sgemm. */
static void bmm_one(float *C, const uint16_t *A, const uint16_t *B, int tb, int M, int K, int N, float *a, float *b) {
    for (size_t j = 0; j < (size_t)M * K; j++) a[j] = hb_from_bf16(A[j]);
    for (size_t j = 0; j < (size_t)K * N; j++) b[j] = hb_from_bf16(B[j]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, a, K, b, tb ? K : N, 0.0f,
                C, N);
}

/* The batched product of kernels/cpu/bf16_mm.h. Emulated: with at least as
 * many products as threads, each thread widens and multiplies whole products
 * (single-threaded sgemm inside the parallel region), else one product at a
 * time with the threads inside sgemm. */
static void *g_bmm;
static size_t g_bmm_n;
void cpu_bf16_bmm(float *C, const uint16_t *A, long long sA, const uint16_t *B, long long sB, int tb, int batch,
                  int M, int K, int N) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0) {
        memset(C, 0, (size_t)batch * M * N * sizeof(float));
        return;
    }
#ifdef ANYREF_DNNL
    if (dn_usable()) {
        dn_key k;
        memset(&k, 0, sizeof k);
        k.batch = batch; k.M = M; k.K = K; k.N = N;
        k.sa[0] = sA; k.sa[1] = K; k.sa[2] = 1;
        k.sb[0] = sB; k.sb[1] = tb ? 1 : N; k.sb[2] = tb ? K : 1;
        dn_entry *e = dn_get(&k);
        if (e->p && dn_exec(e, C, A, B, NULL) == 0) return;
    }
#endif
    const int nt = omp_get_max_threads(), par = batch >= nt && nt > 1;
    const size_t per = (size_t)M * K + (size_t)K * N;
    float *w = cpu_grow(&g_bmm, &g_bmm_n, per * (par ? (size_t)nt : 1), sizeof(float));
    if (!w) {   /* no heap room for the widened operands: element by element */
        #pragma omp parallel for collapse(2)
        for (int i = 0; i < batch; i++)
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    float acc = 0.0f;
                    for (int c = 0; c < K; c++)
                        acc += hb_from_bf16(A[i * sA + (size_t)m * K + c]) *
                               hb_from_bf16(B[i * sB + (tb ? (size_t)n * K + c : (size_t)c * N + n)]);
                    C[((size_t)i * M + m) * N + n] = acc;
                }
        return;
    }
    if (par) {
        #pragma omp parallel num_threads(nt)
        {
            float *a = w + (size_t)omp_get_thread_num() * per;
            #pragma omp for schedule(static)
            for (int i = 0; i < batch; i++)
                bmm_one(C + (size_t)i * M * N, A + i * sA, B + i * sB, tb, M, K, N, a, a + (size_t)M * K);
        }
    } else {
        for (int i = 0; i < batch; i++)
            bmm_one(C + (size_t)i * M * N, A + i * sA, B + i * sB, tb, M, K, N, w, w + (size_t)M * K);
    }
}
