/* tests/cuda/test_cuda_parity.c — the CUDA backend against plain-C double-precision
 * references written here, on random data uploaded with k_upload().
 *
 * Build with the CUDA library (needs a GPU to run):
 *   make BUILD=build-cuda CUDA=1 build-cuda/libanyref.a build-cuda/tests/testlib.o
 *   gcc -O2 -std=gnu11 -I. tests/cuda/test_cuda_parity.c build-cuda/tests/testlib.o build-cuda/libanyref.a \
 *       -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcublas -lcudart -lstdc++ -lm \
 *       -o build-cuda/test_cuda_parity && build-cuda/test_cuda_parity
 * or, without the Makefile:
 *   mkdir -p /tmp/kcuda && for f in kernels/cuda/[a-z]*.cu; do /usr/local/cuda/bin/nvcc -O3 -std=c++17 \
 *       -gencode arch=compute_90,code=sm_90 -I. -c $f -o /tmp/kcuda/$(basename $f .cu).o; done && \
 *   gcc -O2 -std=gnu11 -I. tests/cuda/test_cuda_parity.c tests/testlib.c /tmp/kcuda/[a-z]*.o \
 *       -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcublas -lcudart -lstdc++ -lm -o /tmp/test_cuda_parity
 * It only uses the kernels.h API, so linking it against the CPU library instead
 * checks the references themselves. Prints ok/FAIL lines (tests/testlib.h);
 * exits 1 on any failure. */
#include "kernels/kernels.h"
#include "model/llama.h"
#include "model/params.h"
#include "tests/testlib.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- device helpers -------------------------------------------------------- */
static float *dev_up(const float *h, size_t n) {
    float *d = k_malloc(n * sizeof(float));
    if (!d) { printf("FAIL k_malloc of %zu floats (no device?)\n", n); exit(1); }
    k_upload(d, h, n * sizeof(float));
    return d;
}
static int *dev_upi(const int *h, size_t n) {
    int *d = k_malloc(n * sizeof(int));
    if (!d) { printf("FAIL k_malloc of %zu ints (no device?)\n", n); exit(1); }
    k_upload(d, h, n * sizeof(int));
    return d;
}
static float *host_down(const float *d, size_t n) {
    float *h = t_alloc(n);
    k_download(h, d, n * sizeof(float));
    return h;
}
static float *rnd(size_t n, float std, uint64_t seed) {
    float *x = t_alloc(n);
    t_fill_normal(x, n, std, seed);
    return x;
}
static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) { printf("FAIL out of memory\n"); exit(1); }
    return p;
}
/* Downloads d[n] and compares with ref[n]; prints one line. */
static void cmp(const char *name, const float *d, const double *ref, size_t n, double tol) {
    float *h = host_down(d, n);
    double e = t_max_rel_err_d(h, ref, n);
    t_check(e <= tol, name, "max rel err %.2e (tol %.0e, n %zu)", e, tol, n);
    free(h);
}
/* ref[i] = (double)x[i] (starting value of an accumulating gradient). */
static double *dcopy(const float *x, size_t n) {
    double *r = dalloc(n);
    for (size_t i = 0; i < n; i++) r[i] = x[i];
    return r;
}

/* ---- matmul ----------------------------------------------------------------- */
static double opA(const float *A, int ta, int M, int K, int i, int k) { return ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]; }
static double opB(const float *B, int tb, int K, int N, int k, int j) { return tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j]; }

static void test_matmul(void) {
    const int M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            char name[64];
            float *A = rnd((size_t)M * K, 1.0f, 11 + ta), *B = rnd((size_t)K * N, 1.0f, 21 + tb);
            float *C0 = rnd((size_t)M * N, 1.0f, 31), *dC = rnd((size_t)M * N, 1.0f, 41);
            float *dA0 = rnd((size_t)M * K, 1.0f, 51), *dB0 = rnd((size_t)K * N, 1.0f, 61);
            float *dA_ = dev_up(A, (size_t)M * K), *dB_ = dev_up(B, (size_t)K * N), *dCm = dev_up(C0, (size_t)M * N);
            float *ddC = dev_up(dC, (size_t)M * N), *ddA = dev_up(dA0, (size_t)M * K), *ddB = dev_up(dB0, (size_t)K * N);
            const float alpha = 0.7f, beta = -0.3f;
            double *ref = dalloc((size_t)M * N);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++) s += opA(A, ta, M, K, i, k) * opB(B, tb, K, N, k, j);
                    ref[(size_t)i * N + j] = alpha * s + beta * C0[(size_t)i * N + j];
                }
            matmul(dCm, dA_, dB_, M, N, K, ta, tb, alpha, beta);
            snprintf(name, sizeof name, "matmul ta=%d tb=%d alpha/beta", ta, tb);
            cmp(name, dCm, ref, (size_t)M * N, 2e-5);
            for (size_t i = 0; i < (size_t)M * N; i++) ref[i] = (ref[i] - beta * C0[i]) / alpha;
            matmul_forward(dCm, dA_, dB_, M, N, K, ta, tb);
            snprintf(name, sizeof name, "matmul_forward ta=%d tb=%d", ta, tb);
            cmp(name, dCm, ref, (size_t)M * N, 2e-5);
            /* backward: d op(A)[i,k] = Σ_j dC[i,j] op(B)[k,j]; d op(B)[k,j] = Σ_i op(A)[i,k] dC[i,j] */
            double *rA = dcopy(dA0, (size_t)M * K), *rB = dcopy(dB0, (size_t)K * N);
            for (int i = 0; i < M; i++)
                for (int k = 0; k < K; k++) {
                    double s = 0;
                    for (int j = 0; j < N; j++) s += dC[(size_t)i * N + j] * opB(B, tb, K, N, k, j);
                    rA[ta ? (size_t)k * M + i : (size_t)i * K + k] += s;
                }
            for (int k = 0; k < K; k++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int i = 0; i < M; i++) s += opA(A, ta, M, K, i, k) * dC[(size_t)i * N + j];
                    rB[tb ? (size_t)j * K + k : (size_t)k * N + j] += s;
                }
            matmul_backward(ddA, ddB, ddC, dA_, dB_, M, N, K, ta, tb);
            snprintf(name, sizeof name, "matmul_backward dA ta=%d tb=%d", ta, tb);
            cmp(name, ddA, rA, (size_t)M * K, 2e-5);
            snprintf(name, sizeof name, "matmul_backward dB ta=%d tb=%d", ta, tb);
            cmp(name, ddB, rB, (size_t)K * N, 2e-5);
            free(A); free(B); free(C0); free(dC); free(dA0); free(dB0); free(ref); free(rA); free(rB);
            k_free(dA_); k_free(dB_); k_free(dCm); k_free(ddC); k_free(ddA); k_free(ddB);
        }
}

/* ---- linear ------------------------------------------------------------------- */
static void test_linear(void) {
    const int N = 600, IN = 70, OUT = 45; /* N > 256: several row chunks in the bias reduction */
    float *x = rnd((size_t)N * IN, 1.0f, 101), *w = rnd((size_t)OUT * IN, 0.2f, 102), *b = rnd(OUT, 1.0f, 103);
    float *g = rnd((size_t)N * OUT, 1.0f, 104);
    float *dx0 = rnd((size_t)N * IN, 1.0f, 105), *dw0 = rnd((size_t)OUT * IN, 1.0f, 106), *db0 = rnd(OUT, 1.0f, 107);
    float *d_x = dev_up(x, (size_t)N * IN), *d_w = dev_up(w, (size_t)OUT * IN), *d_b = dev_up(b, OUT);
    float *d_g = dev_up(g, (size_t)N * OUT), *d_out = dev_up(g, (size_t)N * OUT);
    float *d_dx = dev_up(dx0, (size_t)N * IN), *d_dw = dev_up(dw0, (size_t)OUT * IN), *d_db = dev_up(db0, OUT);
    double *ref = dalloc((size_t)N * OUT);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            for (int i = 0; i < IN; i++) s += (double)x[(size_t)n * IN + i] * w[(size_t)o * IN + i];
            ref[(size_t)n * OUT + o] = s;
        }
    linear_forward(d_out, d_x, d_w, d_b, N, IN, OUT);
    cmp("linear_forward", d_out, ref, (size_t)N * OUT, 2e-5);
    double *rdx = dcopy(dx0, (size_t)N * IN), *rdw = dcopy(dw0, (size_t)OUT * IN), *rdb = dcopy(db0, OUT);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double go = g[(size_t)n * OUT + o];
            rdb[o] += go;
            for (int i = 0; i < IN; i++) {
                rdx[(size_t)n * IN + i] += go * w[(size_t)o * IN + i];
                rdw[(size_t)o * IN + i] += go * x[(size_t)n * IN + i];
            }
        }
    linear_backward(d_dx, d_dw, d_db, d_g, d_x, d_w, N, IN, OUT);
    cmp("linear_backward din", d_dx, rdx, (size_t)N * IN, 2e-5);
    cmp("linear_backward dw", d_dw, rdw, (size_t)OUT * IN, 2e-5);
    cmp("linear_backward db", d_db, rdb, OUT, 2e-5);
    free(x); free(w); free(b); free(g); free(dx0); free(dw0); free(db0); free(ref); free(rdx); free(rdw); free(rdb);
    k_free(d_x); k_free(d_w); k_free(d_b); k_free(d_g); k_free(d_out); k_free(d_dx); k_free(d_dw); k_free(d_db);
}

/* ---- dropout mask (bit-identical hash) and LoRA --------------------------------- */
static float ref_mask(size_t i, float p, uint64_t seed) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 40) * (1.0 / 16777216.0) >= p ? 1.0f / (1.0f - p) : 0.0f;
}
static void test_lora(void) {
    const int N = 40, IN = 50, OUT = 30, R = 4;
    const float p = 0.3f, scale = 2.0f;
    const uint64_t seed = 1234567;
    float *d_mask = k_malloc((size_t)N * IN * sizeof(float));
    dropout_mask(d_mask, (size_t)N * IN, p, seed);
    float *mask = host_down(d_mask, (size_t)N * IN);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)N * IN; i++) bad += memcmp(&mask[i], &(float){ref_mask(i, p, seed)}, sizeof(float)) != 0;
    t_check(bad == 0, "dropout_mask bit-identical", "%zu of %d differ", bad, N * IN);

    float *x = rnd((size_t)N * IN, 1.0f, 201), *w = rnd((size_t)OUT * IN, 0.2f, 202), *b = rnd(OUT, 1.0f, 203);
    float *A = rnd((size_t)R * IN, 0.2f, 204), *B = rnd((size_t)OUT * R, 0.2f, 205), *g = rnd((size_t)N * OUT, 1.0f, 206);
    float *dx0 = rnd((size_t)N * IN, 1.0f, 207), *dA0 = rnd((size_t)R * IN, 1.0f, 208), *dB0 = rnd((size_t)OUT * R, 1.0f, 209);
    float *d_x = dev_up(x, (size_t)N * IN), *d_w = dev_up(w, (size_t)OUT * IN), *d_b = dev_up(b, OUT);
    float *d_A = dev_up(A, (size_t)R * IN), *d_B = dev_up(B, (size_t)OUT * R), *d_g = dev_up(g, (size_t)N * OUT);
    float *d_out = k_malloc((size_t)N * OUT * sizeof(float)), *d_xd = k_malloc((size_t)N * IN * sizeof(float));
    float *d_u = k_malloc((size_t)N * R * sizeof(float));
    float *d_dx = dev_up(dx0, (size_t)N * IN), *d_dA = dev_up(dA0, (size_t)R * IN), *d_dB = dev_up(dB0, (size_t)OUT * R);
    double *u = dalloc((size_t)N * R), *out = dalloc((size_t)N * OUT);
    for (int n = 0; n < N; n++)
        for (int r = 0; r < R; r++) {
            double s = 0;
            for (int i = 0; i < IN; i++) s += (double)x[(size_t)n * IN + i] * mask[(size_t)n * IN + i] * A[(size_t)r * IN + i];
            u[(size_t)n * R + r] = s;
        }
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            for (int i = 0; i < IN; i++) s += (double)x[(size_t)n * IN + i] * w[(size_t)o * IN + i];
            for (int r = 0; r < R; r++) s += scale * u[(size_t)n * R + r] * B[(size_t)o * R + r];
            out[(size_t)n * OUT + o] = s;
        }
    lora_forward(d_out, d_xd, d_u, d_x, d_mask, d_w, d_b, d_A, d_B, scale, N, IN, OUT, R);
    cmp("lora_forward out (dropout mask)", d_out, out, (size_t)N * OUT, 2e-5);
    cmp("lora_forward u", d_u, u, (size_t)N * R, 2e-5);
    /* du = s g B; dA += du^T xd; dB += s g^T u; din += g w + (du A) ⊙ mask */
    double *rdx = dcopy(dx0, (size_t)N * IN), *rdA = dcopy(dA0, (size_t)R * IN), *rdB = dcopy(dB0, (size_t)OUT * R);
    for (int n = 0; n < N; n++) {
        double du[4];
        for (int r = 0; r < R; r++) {
            double s = 0;
            for (int o = 0; o < OUT; o++) s += (double)g[(size_t)n * OUT + o] * B[(size_t)o * R + r];
            du[r] = scale * s;
        }
        for (int o = 0; o < OUT; o++)
            for (int r = 0; r < R; r++) rdB[(size_t)o * R + r] += scale * g[(size_t)n * OUT + o] * u[(size_t)n * R + r];
        for (int i = 0; i < IN; i++) {
            double s = 0, t = 0, xd = (double)x[(size_t)n * IN + i] * mask[(size_t)n * IN + i];
            for (int o = 0; o < OUT; o++) s += (double)g[(size_t)n * OUT + o] * w[(size_t)o * IN + i];
            for (int r = 0; r < R; r++) { t += du[r] * A[(size_t)r * IN + i]; rdA[(size_t)r * IN + i] += du[r] * xd; }
            rdx[(size_t)n * IN + i] += s + t * mask[(size_t)n * IN + i];
        }
    }
    lora_backward(d_dx, NULL, NULL, d_dA, d_dB, d_g, d_x, d_xd, d_u, d_mask, d_w, d_A, d_B, scale, N, IN, OUT, R);
    cmp("lora_backward din (masked)", d_dx, rdx, (size_t)N * IN, 2e-5);
    cmp("lora_backward dA", d_dA, rdA, (size_t)R * IN, 2e-5);
    cmp("lora_backward dB", d_dB, rdB, (size_t)OUT * R, 2e-5);
    free(mask); free(x); free(w); free(b); free(A); free(B); free(g); free(dx0); free(dA0); free(dB0);
    free(u); free(out); free(rdx); free(rdA); free(rdB);
    k_free(d_mask); k_free(d_x); k_free(d_w); k_free(d_b); k_free(d_A); k_free(d_B); k_free(d_g);
    k_free(d_out); k_free(d_xd); k_free(d_u); k_free(d_dx); k_free(d_dA); k_free(d_dB);
}

/* ---- attention -------------------------------------------------------------------- */
static void test_attention_case(const char *tag, int B, int T, int S, int Hq, int Hkv, int hd,
                                int causal, const int *key_len, int use_extra) {
    const int G = Hq / Hkv;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t nq = (size_t)B * T * Hq * hd, nk = (size_t)B * S * Hkv * hd, na = (size_t)B * Hq * T * S;
    float *q = rnd(nq, 1.0f, 301), *k = rnd(nk, 1.0f, 302), *v = rnd(nk, 1.0f, 303), *g = rnd(nq, 1.0f, 304);
    float *ex = rnd(na, 1.0f, 305);
    float *dq0 = rnd(nq, 1.0f, 306), *dk0 = rnd(nk, 1.0f, 307), *dv0 = rnd(nk, 1.0f, 308);
    float *d_q = dev_up(q, nq), *d_k = dev_up(k, nk), *d_v = dev_up(v, nk), *d_g = dev_up(g, nq), *d_ex = dev_up(ex, na);
    float *d_dq = dev_up(dq0, nq), *d_dk = dev_up(dk0, nk), *d_dv = dev_up(dv0, nk);
    float *d_out = k_malloc(nq * sizeof(float)), *d_att = k_malloc(na * sizeof(float));
    float *d_scr = k_malloc(attention_scratch_floats(B, T, S, Hq) * sizeof(float));
    int *d_kl = key_len ? dev_upi(key_len, B) : NULL;
    double *P = dalloc(na), *out = dalloc(nq);
    double *rdq = dcopy(dq0, nq), *rdk = dcopy(dk0, nk), *rdv = dcopy(dv0, nk);
    unsigned char *vis = calloc(na, 1);
#define Q_(b, t, h, d) q[(((size_t)(b) * T + (t)) * Hq + (h)) * hd + (d)]
#define K_(b, s, h, d) k[(((size_t)(b) * S + (s)) * Hkv + (h)) * hd + (d)]
#define V_(b, s, h, d) v[(((size_t)(b) * S + (s)) * Hkv + (h)) * hd + (d)]
#define G_(b, t, h, d) g[(((size_t)(b) * T + (t)) * Hq + (h)) * hd + (d)]
#define IQ(b, t, h, d) ((((size_t)(b) * T + (t)) * Hq + (h)) * hd + (d))
#define IK(b, s, h, d) ((((size_t)(b) * S + (s)) * Hkv + (h)) * hd + (d))
#define IA(b, h, t, s) ((((size_t)(b) * Hq + (h)) * T + (t)) * S + (s))
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++) {
            const int kh = h / G;
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0;
                double sc[64];
                for (int s = 0; s < S; s++) {
                    int ok = (!key_len || s < key_len[b]) && (!causal || s <= t + (S - T));
                    vis[IA(b, h, t, s)] = (unsigned char)ok;
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)Q_(b, t, h, i) * K_(b, s, kh, i);
                    sc[s] = d * scale;
                    if (ok && sc[s] > mx) mx = sc[s];
                }
                for (int s = 0; s < S; s++) if (vis[IA(b, h, t, s)]) sum += exp(sc[s] - mx);
                for (int s = 0; s < S; s++) P[IA(b, h, t, s)] = vis[IA(b, h, t, s)] ? exp(sc[s] - mx) / sum : 0.0;
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int s = 0; s < S; s++) o += P[IA(b, h, t, s)] * V_(b, s, kh, i);
                    out[IQ(b, t, h, i)] = o;
                }
                /* backward */
                double dP[64], dot = 0;
                for (int s = 0; s < S; s++) {
                    double d = use_extra ? ex[IA(b, h, t, s)] : 0.0;
                    for (int i = 0; i < hd; i++) d += (double)G_(b, t, h, i) * V_(b, s, kh, i);
                    dP[s] = d;
                    dot += d * P[IA(b, h, t, s)];
                }
                for (int s = 0; s < S; s++) {
                    double pv = P[IA(b, h, t, s)], dS = pv * (dP[s] - dot);
                    for (int i = 0; i < hd; i++) {
                        rdq[IQ(b, t, h, i)] += scale * dS * K_(b, s, kh, i);
                        rdk[IK(b, s, kh, i)] += scale * dS * Q_(b, t, h, i);
                        rdv[IK(b, s, kh, i)] += pv * G_(b, t, h, i);
                    }
                }
            }
        }
    char name[96];
    attention_forward(d_out, d_att, d_q, d_k, d_v, d_kl, causal, scale, B, T, S, Hq, Hkv, hd);
    snprintf(name, sizeof name, "attention_forward out %s", tag);
    cmp(name, d_out, out, nq, 2e-5);
    snprintf(name, sizeof name, "attention_forward att %s", tag);
    cmp(name, d_att, P, na, 2e-5);
    float *att = host_down(d_att, na);
    size_t nonzero_masked = 0;
    for (size_t i = 0; i < na; i++) nonzero_masked += !vis[i] && att[i] != 0.0f;
    snprintf(name, sizeof name, "attention_forward masked exactly 0 %s", tag);
    t_check(nonzero_masked == 0, name, "%zu masked entries nonzero", nonzero_masked);
    attention_backward(d_dq, d_dk, d_dv, d_scr, d_g, use_extra ? d_ex : NULL, d_att, d_q, d_k, d_v, scale,
                       B, T, S, Hq, Hkv, hd);
    snprintf(name, sizeof name, "attention_backward dq %s", tag);
    cmp(name, d_dq, rdq, nq, 2e-5);
    snprintf(name, sizeof name, "attention_backward dk %s", tag);
    cmp(name, d_dk, rdk, nk, 2e-5);
    snprintf(name, sizeof name, "attention_backward dv %s", tag);
    cmp(name, d_dv, rdv, nk, 2e-5);
#undef Q_
#undef K_
#undef V_
#undef G_
#undef IQ
#undef IK
#undef IA
    free(q); free(k); free(v); free(g); free(ex); free(dq0); free(dk0); free(dv0); free(att); free(vis);
    free(P); free(out); free(rdq); free(rdk); free(rdv);
    k_free(d_q); k_free(d_k); k_free(d_v); k_free(d_g); k_free(d_ex); k_free(d_dq); k_free(d_dk); k_free(d_dv);
    k_free(d_out); k_free(d_att); k_free(d_scr);
    if (d_kl) k_free(d_kl);
}
static void test_attention(void) {
    const int kl[3] = {7, 4, 0}; /* the third batch item sees no key at all */
    test_attention_case("(GQA 4/2, causal, key_len, datt_extra)", 3, 5, 7, 4, 2, 8, 1, kl, 1);
    test_attention_case("(MHA, no mask)", 2, 6, 6, 3, 3, 16, 0, NULL, 0);
    test_attention_case("(MQA 4/1, long rows)", 1, 3, 50, 4, 1, 8, 1, NULL, 1);
}

/* ---- softmax cross-entropy ------------------------------------------------------------ */
static void test_xent(void) {
    const int N = 13, V = 1000, ign = -100;
    float *x = rnd((size_t)N * V, 2.0f, 401), *dl0 = rnd((size_t)N * V, 1.0f, 402);
    int tg[13];
    for (int n = 0; n < N; n++) tg[n] = (n % 4 == 3) ? ign : (n * 397 + 11) % V;
    float *d_x = dev_up(x, (size_t)N * V), *d_dl = dev_up(dl0, (size_t)N * V), *d_lse = k_malloc(N * sizeof(float));
    int *d_t = dev_upi(tg, N);
    double *lse = dalloc(N), loss = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) if (x[(size_t)n * V + j] > mx) mx = x[(size_t)n * V + j];
        for (int j = 0; j < V; j++) s += exp(x[(size_t)n * V + j] - mx);
        lse[n] = mx + log(s);
        if (tg[n] != ign) { loss += lse[n] - x[(size_t)n * V + tg[n]]; cnt++; }
    }
    loss /= cnt;
    int got_cnt = -1;
    float got = softmax_xent_forward(d_lse, &got_cnt, d_x, d_t, N, V, ign);
    t_check(got_cnt == cnt, "softmax_xent_forward count", "%d (want %d)", got_cnt, cnt);
    t_check(fabs(got - loss) <= 1e-5 * fabs(loss), "softmax_xent_forward loss", "%.7f vs %.7f", got, loss);
    cmp("softmax_xent_forward lse", d_lse, lse, N, 1e-6);
    const float dloss = 1.7f;
    double *rdl = dcopy(dl0, (size_t)N * V);
    for (int n = 0; n < N; n++) {
        if (tg[n] == ign) continue;
        for (int j = 0; j < V; j++)
            rdl[(size_t)n * V + j] += dloss / cnt * (exp(x[(size_t)n * V + j] - lse[n]) - (j == tg[n]));
    }
    softmax_xent_backward(d_dl, d_x, d_lse, d_t, dloss, cnt, N, V, ign);
    cmp("softmax_xent_backward", d_dl, rdl, (size_t)N * V, 1e-5);
    free(x); free(dl0); free(lse); free(rdl);
    k_free(d_x); k_free(d_dl); k_free(d_lse); k_free(d_t);
}

/* ---- BCE and Dice ----------------------------------------------------------------------- */
static void test_bce_dice(void) {
    const size_t n = 5000;
    float *x = rnd(n, 3.0f, 451), *y = t_alloc(n), *dx0 = rnd(n, 1.0f, 452);
    t_fill_uniform(y, n, 0.0f, 1.0f, 453);
    for (size_t i = 0; i < n; i++) y[i] = y[i] > 0.6f ? 1.0f : 0.0f;
    float *d_x = dev_up(x, n), *d_y = dev_up(y, n), *d_dx = dev_up(dx0, n);
    double bce = 0, I = 0, Ss = 0, Y = 0;
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], s = 1.0 / (1.0 + exp(-xi));
        bce += log1p(exp(xi)) - xi * y[i];
        I += s * y[i]; Ss += s; Y += y[i];
    }
    bce /= n;
    const double dice = 1.0 - (2 * I + DICE_SMOOTH) / (Ss + Y + DICE_SMOOTH);
    float gb = bce_logits_forward(d_x, d_y, n), gd = dice_forward(d_x, d_y, n);
    t_check(fabs(gb - bce) <= 1e-5 * fabs(bce), "bce_logits_forward", "%.7f vs %.7f", gb, bce);
    t_check(fabs(gd - dice) <= 1e-5 * fabs(dice), "dice_forward", "%.7f vs %.7f", gd, dice);
    const float wb = 2.0f, wd = 0.5f;
    double *r = dcopy(dx0, n);
    const double num = 2 * I + DICE_SMOOTH, den = Ss + Y + DICE_SMOOTH;
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        r[i] += wb / n * (s - y[i]) + wd * (-(2 * y[i] * den - num) / (den * den)) * s * (1 - s);
    }
    bce_logits_backward(d_dx, d_x, d_y, wb, n);
    dice_backward(d_dx, d_x, d_y, wd, n);
    cmp("bce_logits_backward + dice_backward", d_dx, r, n, 1e-5);
    free(x); free(y); free(dx0); free(r);
    k_free(d_x); k_free(d_y); k_free(d_dx);
}

/* ---- LayerNorm and RMSNorm ------------------------------------------------------------ */
static void test_norms(void) {
    const int N = 300, D = 300;
    const float eps = 1e-5f;
    const size_t nd = (size_t)N * D;
    float *x = rnd(nd, 1.5f, 501), *w = rnd(D, 1.0f, 502), *b = rnd(D, 1.0f, 503), *g = rnd(nd, 1.0f, 504);
    for (size_t i = 0; i < nd; i++) x[i] += 0.5f; /* a nonzero mean */
    float *dx0 = rnd(nd, 1.0f, 505), *dw0 = rnd(D, 1.0f, 506), *db0 = rnd(D, 1.0f, 507);
    float *d_x = dev_up(x, nd), *d_w = dev_up(w, D), *d_b = dev_up(b, D), *d_g = dev_up(g, nd);
    float *d_out = k_malloc(nd * sizeof(float)), *d_m = k_malloc(N * sizeof(float)), *d_r = k_malloc(N * sizeof(float));
    float *d_dx = dev_up(dx0, nd), *d_dw = dev_up(dw0, D), *d_db = dev_up(db0, D);
    double *out = dalloc(nd), *mean = dalloc(N), *rstd = dalloc(N);
    double *rdx = dcopy(dx0, nd), *rdw = dcopy(dw0, D), *rdb = dcopy(db0, D);
    /* LayerNorm */
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        const float *gr = g + (size_t)n * D;
        double mu = 0, var = 0;
        for (int d = 0; d < D; d++) mu += xr[d];
        mu /= D;
        for (int d = 0; d < D; d++) var += (xr[d] - mu) * (xr[d] - mu);
        double r = 1.0 / sqrt(var / D + eps);
        mean[n] = mu; rstd[n] = r;
        double mg = 0, mgx = 0;
        for (int d = 0; d < D; d++) {
            double xh = (xr[d] - mu) * r;
            out[(size_t)n * D + d] = xh * w[d] + b[d];
            mg += gr[d] * w[d]; mgx += gr[d] * w[d] * xh;
            rdw[d] += gr[d] * xh; rdb[d] += gr[d];
        }
        mg /= D; mgx /= D;
        for (int d = 0; d < D; d++) {
            double xh = (xr[d] - mu) * r;
            rdx[(size_t)n * D + d] += r * (gr[d] * w[d] - mg - xh * mgx);
        }
    }
    layernorm_forward(d_out, d_m, d_r, d_x, d_w, d_b, eps, N, D);
    cmp("layernorm_forward out", d_out, out, nd, 1e-5);
    cmp("layernorm_forward mean", d_m, mean, N, 1e-5);
    cmp("layernorm_forward rstd", d_r, rstd, N, 1e-5);
    layernorm_backward(d_dx, d_dw, d_db, d_g, d_x, d_w, d_m, d_r, N, D);
    cmp("layernorm_backward din", d_dx, rdx, nd, 1e-5);
    cmp("layernorm_backward dw", d_dw, rdw, D, 1e-5);
    cmp("layernorm_backward db", d_db, rdb, D, 1e-5);
    /* RMSNorm */
    k_upload(d_dx, dx0, nd * sizeof(float));
    k_upload(d_dw, dw0, D * sizeof(float));
    for (size_t i = 0; i < nd; i++) rdx[i] = dx0[i];
    for (int d = 0; d < D; d++) rdw[d] = dw0[d];
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        const float *gr = g + (size_t)n * D;
        double ss = 0, dot = 0;
        for (int d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
        double r = 1.0 / sqrt(ss / D + eps);
        rstd[n] = r;
        for (int d = 0; d < D; d++) {
            out[(size_t)n * D + d] = xr[d] * r * w[d];
            dot += (double)gr[d] * w[d] * xr[d];
            rdw[d] += gr[d] * xr[d] * r;
        }
        for (int d = 0; d < D; d++) rdx[(size_t)n * D + d] += r * gr[d] * w[d] - xr[d] * r * r * r * dot / D;
    }
    rmsnorm_forward(d_out, d_r, d_x, d_w, eps, N, D);
    cmp("rmsnorm_forward out", d_out, out, nd, 1e-5);
    cmp("rmsnorm_forward rstd", d_r, rstd, N, 1e-5);
    rmsnorm_backward(d_dx, d_dw, d_g, d_x, d_w, d_r, N, D);
    cmp("rmsnorm_backward din", d_dx, rdx, nd, 1e-5);
    cmp("rmsnorm_backward dw", d_dw, rdw, D, 1e-5);
    free(x); free(w); free(b); free(g); free(dx0); free(dw0); free(db0);
    free(out); free(mean); free(rstd); free(rdx); free(rdw); free(rdb);
    k_free(d_x); k_free(d_w); k_free(d_b); k_free(d_g); k_free(d_out); k_free(d_m); k_free(d_r);
    k_free(d_dx); k_free(d_dw); k_free(d_db);
}

/* ---- bilinear resize, align_corners=False ----------------------------------------------- */
static void ref_taps(int o, int in, int out, int *i0, int *i1, double *l0, double *l1) {
    double src = (double)in / out * (o + 0.5) - 0.5;
    if (src < 0) src = 0;
    *i0 = (int)src;
    if (*i0 > in - 1) *i0 = in - 1;
    *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
    *l1 = src - *i0;
    *l0 = 1 - *l1;
}
static void test_resize_case(int C, int Hin, int Win, int Hout, int Wout) {
    const size_t ni = (size_t)C * Hin * Win, no = (size_t)C * Hout * Wout;
    float *x = rnd(ni, 1.0f, 601), *g = rnd(no, 1.0f, 602), *dx0 = rnd(ni, 1.0f, 603);
    float *d_x = dev_up(x, ni), *d_g = dev_up(g, no), *d_dx = dev_up(dx0, ni), *d_out = k_malloc(no * sizeof(float));
    double *out = dalloc(no), *rdx = dcopy(dx0, ni);
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < Hout; oy++)
            for (int ox = 0; ox < Wout; ox++) {
                int y0, y1, x0, x1;
                double a0, a1, b0, b1;
                ref_taps(oy, Hin, Hout, &y0, &y1, &a0, &a1);
                ref_taps(ox, Win, Wout, &x0, &x1, &b0, &b1);
                const float *p = x + (size_t)c * Hin * Win;
                double *dp = rdx + (size_t)c * Hin * Win;
                size_t o = ((size_t)c * Hout + oy) * Wout + ox;
                out[o] = a0 * (b0 * p[y0 * Win + x0] + b1 * p[y0 * Win + x1]) + a1 * (b0 * p[y1 * Win + x0] + b1 * p[y1 * Win + x1]);
                dp[y0 * Win + x0] += a0 * b0 * g[o]; dp[y0 * Win + x1] += a0 * b1 * g[o];
                dp[y1 * Win + x0] += a1 * b0 * g[o]; dp[y1 * Win + x1] += a1 * b1 * g[o];
            }
    char name[80];
    resize_bilinear_forward(d_out, d_x, C, Hin, Win, Hout, Wout);
    snprintf(name, sizeof name, "resize_bilinear_forward %dx%d->%dx%d", Hin, Win, Hout, Wout);
    cmp(name, d_out, out, no, 1e-5);
    resize_bilinear_backward(d_dx, d_g, C, Hin, Win, Hout, Wout);
    snprintf(name, sizeof name, "resize_bilinear_backward %dx%d->%dx%d", Hin, Win, Hout, Wout);
    cmp(name, d_dx, rdx, ni, 1e-5);
    free(x); free(g); free(dx0); free(out); free(rdx);
    k_free(d_x); k_free(d_g); k_free(d_dx); k_free(d_out);
}
static void test_resize(void) {
    test_resize_case(3, 7, 5, 12, 9);
    test_resize_case(2, 16, 13, 3, 4);
    test_resize_case(2, 6, 6, 6, 6);
}

/* ---- RoIAlign (torchvision rules; geometry in float as torchvision computes it) ------------ */
static void test_roi_case(int aligned, int sampling_ratio) {
    const int B = 2, H = 16, W = 16, C = 5, PH = 2, PW = 3, K = 4;
    const float ss = 0.5f;
    const float boxes[4 * 5] = {0, 3.0f, 5.0f, 20.0f, 17.0f,     /* inside */
                                1, -6.0f, -4.0f, 9.0f, 30.0f,    /* partly outside */
                                1, 10.0f, 10.0f, 10.5f, 11.0f,   /* tiny */
                                0, 28.0f, 2.0f, 40.0f, 33.0f};   /* right edge and beyond */
    const size_t ni = (size_t)B * H * W * C, no = (size_t)K * PH * PW * C;
    float *x = rnd(ni, 1.0f, 701), *g = rnd(no, 1.0f, 702), *dx0 = rnd(ni, 1.0f, 703);
    float *d_x = dev_up(x, ni), *d_g = dev_up(g, no), *d_dx = dev_up(dx0, ni), *d_b = dev_up(boxes, 4 * 5);
    float *d_out = k_malloc(no * sizeof(float));
    double *out = dalloc(no), *rdx = dcopy(dx0, ni);
    for (int k = 0; k < K; k++) {
        const float *bx = boxes + k * 5;
        const int bi = (int)bx[0];
        const float off = aligned ? 0.5f : 0.0f;
        const float x0 = bx[1] * ss - off, y0 = bx[2] * ss - off;
        float rw = bx[3] * ss - off - x0, rh = bx[4] * ss - off - y0;
        if (!aligned) { if (rw < 1) rw = 1; if (rh < 1) rh = 1; }
        const float bh = rh / PH, bw = rw / PW;
        const int gh = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rh / PH);
        const int gw = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rw / PW);
        const double count = gh * gw > 1 ? gh * gw : 1;
        for (int ph = 0; ph < PH; ph++)
            for (int pw = 0; pw < PW; pw++)
                for (int c = 0; c < C; c++) {
                    const size_t o = (((size_t)k * PH + ph) * PW + pw) * C + c;
                    double acc = 0;
                    for (int iy = 0; iy < gh; iy++) {
                        float y = y0 + ph * bh + (iy + 0.5f) * bh / gh;
                        for (int ix = 0; ix < gw; ix++) {
                            float xx = x0 + pw * bw + (ix + 0.5f) * bw / gw;
                            float yy = y;
                            if (yy < -1.0f || yy > H || xx < -1.0f || xx > W) continue;
                            if (yy <= 0) yy = 0;
                            if (xx <= 0) xx = 0;
                            int yl = (int)yy, xl = (int)xx, yh, xh;
                            if (yl >= H - 1) { yl = yh = H - 1; yy = (float)yl; } else yh = yl + 1;
                            if (xl >= W - 1) { xl = xh = W - 1; xx = (float)xl; } else xh = xl + 1;
                            double ly = yy - yl, lx = xx - xl, hy = 1 - ly, hx = 1 - lx;
                            const int py[4] = {yl, yl, yh, yh}, px[4] = {xl, xh, xl, xh};
                            const double wt[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
                            for (int t = 0; t < 4; t++) {
                                size_t ii = (((size_t)bi * H + py[t]) * W + px[t]) * C + c;
                                acc += wt[t] * x[ii];
                                rdx[ii] += wt[t] * g[o] / count;
                            }
                        }
                    }
                    out[o] = acc / count;
                }
    }
    char name[80];
    roi_align_forward(d_out, d_x, d_b, K, B, H, W, C, PH, PW, ss, sampling_ratio, aligned);
    snprintf(name, sizeof name, "roi_align_forward aligned=%d sampling=%d", aligned, sampling_ratio);
    cmp(name, d_out, out, no, 1e-5);
    roi_align_backward(d_dx, d_g, d_b, K, B, H, W, C, PH, PW, ss, sampling_ratio, aligned);
    snprintf(name, sizeof name, "roi_align_backward aligned=%d sampling=%d", aligned, sampling_ratio);
    cmp(name, d_dx, rdx, ni, 1e-5);
    free(x); free(g); free(dx0); free(out); free(rdx);
    k_free(d_x); k_free(d_g); k_free(d_dx); k_free(d_b); k_free(d_out);
}
static void test_roi_align(void) {
    test_roi_case(1, 2);
    test_roi_case(1, 0);
    test_roi_case(0, 0);
}

/* ---- Conv2d and ConvTranspose2d 2x2 ----------------------------------------------------- */
static void test_conv_case(int B, int Cin, int H, int W, int Cout, int KH, int KW, int sh, int sw, int ph, int pw) {
    const int OH = (H + 2 * ph - KH) / sh + 1, OW = (W + 2 * pw - KW) / sw + 1;
    const size_t ni = (size_t)B * Cin * H * W, no = (size_t)B * Cout * OH * OW, nw = (size_t)Cout * Cin * KH * KW;
    float *x = rnd(ni, 1.0f, 801), *w = rnd(nw, 0.3f, 802), *b = rnd(Cout, 1.0f, 803), *g = rnd(no, 1.0f, 804);
    float *dx0 = rnd(ni, 1.0f, 805), *dw0 = rnd(nw, 1.0f, 806), *db0 = rnd(Cout, 1.0f, 807);
    float *d_x = dev_up(x, ni), *d_w = dev_up(w, nw), *d_b = dev_up(b, Cout), *d_g = dev_up(g, no);
    float *d_dx = dev_up(dx0, ni), *d_dw = dev_up(dw0, nw), *d_db = dev_up(db0, Cout), *d_out = k_malloc(no * sizeof(float));
    size_t nscr = conv2d_scratch_floats(Cin, H, W, KH, KW, sh, sw, ph, pw);
    float *d_scr = k_malloc((nscr ? nscr : 1) * sizeof(float));
    double *out = dalloc(no), *rdx = dcopy(dx0, ni), *rdw = dcopy(dw0, nw), *rdb = dcopy(db0, Cout);
    for (int bi = 0; bi < B; bi++)
        for (int co = 0; co < Cout; co++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    const size_t o = (((size_t)bi * Cout + co) * OH + oy) * OW + ox;
                    double s = b[co];
                    rdb[co] += g[o];
                    for (int ci = 0; ci < Cin; ci++)
                        for (int kh = 0; kh < KH; kh++)
                            for (int kw = 0; kw < KW; kw++) {
                                int y = oy * sh - ph + kh, xx = ox * sw - pw + kw;
                                if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
                                size_t ii = (((size_t)bi * Cin + ci) * H + y) * W + xx;
                                size_t wi = (((size_t)co * Cin + ci) * KH + kh) * KW + kw;
                                s += (double)w[wi] * x[ii];
                                rdx[ii] += (double)w[wi] * g[o];
                                rdw[wi] += (double)x[ii] * g[o];
                            }
                    out[o] = s;
                }
    char name[96];
    conv2d_forward(d_out, d_scr, d_x, d_w, d_b, B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw);
    snprintf(name, sizeof name, "conv2d_forward k%dx%d s%d p%d", KH, KW, sh, ph);
    cmp(name, d_out, out, no, 2e-5);
    conv2d_backward(d_dx, d_dw, d_db, d_scr, d_g, d_x, d_w, B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw);
    snprintf(name, sizeof name, "conv2d_backward din k%dx%d s%d p%d", KH, KW, sh, ph);
    cmp(name, d_dx, rdx, ni, 2e-5);
    snprintf(name, sizeof name, "conv2d_backward dw k%dx%d s%d p%d", KH, KW, sh, ph);
    cmp(name, d_dw, rdw, nw, 2e-5);
    snprintf(name, sizeof name, "conv2d_backward db k%dx%d s%d p%d", KH, KW, sh, ph);
    cmp(name, d_db, rdb, Cout, 2e-5);
    free(x); free(w); free(b); free(g); free(dx0); free(dw0); free(db0); free(out); free(rdx); free(rdw); free(rdb);
    k_free(d_x); k_free(d_w); k_free(d_b); k_free(d_g); k_free(d_dx); k_free(d_dw); k_free(d_db); k_free(d_out); k_free(d_scr);
}
static void test_conv_transpose(void) {
    const int B = 2, Cin = 6, Cout = 5, H = 7, W = 9;
    const size_t ni = (size_t)B * Cin * H * W, no = (size_t)B * Cout * 4 * H * W, nw = (size_t)Cin * Cout * 4;
    float *x = rnd(ni, 1.0f, 901), *w = rnd(nw, 0.3f, 902), *b = rnd(Cout, 1.0f, 903), *g = rnd(no, 1.0f, 904);
    float *dx0 = rnd(ni, 1.0f, 905), *dw0 = rnd(nw, 1.0f, 906), *db0 = rnd(Cout, 1.0f, 907);
    float *d_x = dev_up(x, ni), *d_w = dev_up(w, nw), *d_b = dev_up(b, Cout), *d_g = dev_up(g, no);
    float *d_dx = dev_up(dx0, ni), *d_dw = dev_up(dw0, nw), *d_db = dev_up(db0, Cout), *d_out = k_malloc(no * sizeof(float));
    double *out = dalloc(no), *rdx = dcopy(dx0, ni), *rdw = dcopy(dw0, nw), *rdb = dcopy(db0, Cout);
    for (int bi = 0; bi < B; bi++)
        for (int co = 0; co < Cout; co++)
            for (int oy = 0; oy < 2 * H; oy++)
                for (int ox = 0; ox < 2 * W; ox++) {
                    const size_t o = (((size_t)bi * Cout + co) * 2 * H + oy) * 2 * W + ox;
                    double s = b[co];
                    rdb[co] += g[o];
                    for (int ci = 0; ci < Cin; ci++) {
                        size_t ii = (((size_t)bi * Cin + ci) * H + oy / 2) * W + ox / 2;
                        size_t wi = (((size_t)ci * Cout + co) * 2 + oy % 2) * 2 + ox % 2;
                        s += (double)w[wi] * x[ii];
                        rdx[ii] += (double)w[wi] * g[o];
                        rdw[wi] += (double)x[ii] * g[o];
                    }
                    out[o] = s;
                }
    conv_transpose2x2_forward(d_out, d_x, d_w, d_b, B, Cin, Cout, H, W);
    cmp("conv_transpose2x2_forward", d_out, out, no, 2e-5);
    conv_transpose2x2_backward(d_dx, d_dw, d_db, d_g, d_x, d_w, B, Cin, Cout, H, W);
    cmp("conv_transpose2x2_backward din", d_dx, rdx, ni, 2e-5);
    cmp("conv_transpose2x2_backward dw", d_dw, rdw, nw, 2e-5);
    cmp("conv_transpose2x2_backward db", d_db, rdb, Cout, 2e-5);
    free(x); free(w); free(b); free(g); free(dx0); free(dw0); free(db0); free(out); free(rdx); free(rdw); free(rdb);
    k_free(d_x); k_free(d_w); k_free(d_b); k_free(d_g); k_free(d_dx); k_free(d_dw); k_free(d_db); k_free(d_out);
}
static void test_conv(void) {
    test_conv_case(2, 3, 11, 9, 4, 3, 3, 2, 2, 1, 1);
    test_conv_case(2, 5, 6, 7, 3, 1, 1, 1, 1, 0, 0);   /* pointwise: no im2col */
    test_conv_case(1, 2, 20, 20, 3, 4, 4, 3, 3, 0, 0); /* ImageBind-like patchify, kernel > stride */
    test_conv_transpose();
}

/* ---- refocus ---------------------------------------------------------------------------- */
static void test_refocus(void) {
    const int T = 12, S = 14, Hq = 3, D = 40, p = 9, s = 3;
    const float lambda = 0.1f;
    const size_t na = (size_t)Hq * T * S;
    float *att = t_alloc(na), *hid = rnd((size_t)T * D, 1.0f, 1001), *g = rnd(D, 1.0f, 1002);
    t_fill_uniform(att, na, 0.0f, 1.0f, 1003);
    float *dh0 = rnd((size_t)T * D, 1.0f, 1004), *da0 = rnd(na, 1.0f, 1005);
    float *d_att = dev_up(att, na), *d_hid = dev_up(hid, (size_t)T * D), *d_g = dev_up(g, D);
    float *d_dh = dev_up(dh0, (size_t)T * D), *d_da = dev_up(da0, na), *d_out = k_malloc(D * sizeof(float));
    double P[16], z = 0, a[16], e[16], ae = 0;
    double *out = dalloc(D), *rdh = dcopy(dh0, (size_t)T * D), *rda = dcopy(da0, na);
    for (int i = s; i < p; i++) {
        P[i] = 0;
        for (int h = 0; h < Hq; h++) P[i] += att[((size_t)h * T + p) * S + i];
        P[i] /= Hq;
        z += P[i];
    }
    for (int d = 0; d < D; d++) out[d] = hid[(size_t)p * D + d];
    for (int i = s; i < p; i++) {
        a[i] = P[i] / z;
        e[i] = 0;
        for (int d = 0; d < D; d++) {
            out[d] += lambda * a[i] * hid[(size_t)i * D + d];
            e[i] += lambda * (double)g[d] * hid[(size_t)i * D + d];
            rdh[(size_t)i * D + d] += lambda * a[i] * g[d];
        }
        ae += a[i] * e[i];
    }
    for (int d = 0; d < D; d++) rdh[(size_t)p * D + d] += g[d];
    for (int i = s; i < p; i++)
        for (int h = 0; h < Hq; h++) rda[((size_t)h * T + p) * S + i] += (e[i] - ae) / z / Hq;
    refocus_forward(d_out, d_hid, d_att, p, s, lambda, T, S, Hq, D);
    cmp("refocus_forward", d_out, out, D, 1e-5);
    refocus_backward(d_dh, d_da, d_g, d_hid, d_att, p, s, lambda, T, S, Hq, D);
    cmp("refocus_backward dhid", d_dh, rdh, (size_t)T * D, 1e-5);
    cmp("refocus_backward datt", d_da, rda, na, 1e-5);
    free(att); free(hid); free(g); free(dh0); free(da0); free(out); free(rdh); free(rda);
    k_free(d_att); k_free(d_hid); k_free(d_g); k_free(d_dh); k_free(d_da); k_free(d_out);
}

/* ---- batched transpose (ImageBind audio stem) ------------------------------- */
static void test_transpose_case(int B, int R, int C) {
    const size_t n = (size_t)B * R * C;
    float *x = rnd(n, 1.0f, 801), *g = rnd(n, 1.0f, 802), *dx0 = rnd(n, 1.0f, 803);
    float *d_x = dev_up(x, n), *d_g = dev_up(g, n), *d_dx = dev_up(dx0, n), *d_out = k_malloc(n * sizeof(float));
    double *out = dalloc(n), *rdx = dcopy(dx0, n);
    for (int b = 0; b < B; b++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                out[((size_t)b * C + c) * R + r] = x[((size_t)b * R + r) * C + c];
                rdx[((size_t)b * R + r) * C + c] += g[((size_t)b * C + c) * R + r];   /* g is [B, C, R] */
            }
    char name[80];
    transpose_forward(d_out, d_x, B, R, C);
    snprintf(name, sizeof name, "transpose_forward [%d,%d,%d]", B, R, C);
    cmp(name, d_out, out, n, 0.0);
    transpose_backward(d_dx, d_g, B, R, C);
    snprintf(name, sizeof name, "transpose_backward [%d,%d,%d]", B, R, C);
    cmp(name, d_dx, rdx, n, 1e-6);
    free(x); free(g); free(dx0); free(out); free(rdx);
    k_free(d_x); k_free(d_g); k_free(d_dx); k_free(d_out);
}
static void test_transpose(void) {
    test_transpose_case(3, 768, 228);   /* imagebind_huge stem: [D, 12*19] per clip */
    test_transpose_case(2, 37, 45);
    test_transpose_case(1, 1, 70);
}

/* ---- SAM image encoder primitives (forward only) --------------------------------------- */
/* get_rel_pos in double (index arithmetic in float32, as PyTorch). */
static void ref_rel_pos(double *out, const float *rel, int qs, int ks, int L, int D) {
    const int M = 2 * (qs > ks ? qs : ks) - 1;
    const float qr = (float)fmax((double)ks / qs, 1.0), kr = (float)fmax((double)qs / ks, 1.0);
    const float off = (float)((ks - 1) * fmax((double)qs / ks, 1.0));
    for (int i = 0; i < qs; i++)
        for (int j = 0; j < ks; j++) {
            const int m = (int)(((float)i * qr - (float)j * kr) + off);
            for (int d = 0; d < D; d++) {
                double v;
                if (L == M) v = rel[(size_t)m * D + d];
                else {
                    double src = fmax((double)L / M * (m + 0.5) - 0.5, 0.0);
                    int i0 = (int)src;
                    if (i0 > L - 1) i0 = L - 1;
                    const int i1 = i0 < L - 1 ? i0 + 1 : i0;
                    const double l1 = src - i0;
                    v = (1 - l1) * rel[(size_t)i0 * D + d] + l1 * rel[(size_t)i1 * D + d];
                }
                out[((size_t)i * ks + j) * D + d] = v;
            }
        }
}

static void test_sam_encoder(void) {
    /* patchify and window (un)partition: pure data movement, must be exact */
    {
        const int B = 2, Cin = 3, p = 4, H = 8, W = 12, gh = H / p, gw = W / p, K = Cin * p * p;
        const size_t n = (size_t)B * Cin * H * W;
        float *x = rnd(n, 1.0f, 901);
        double *ref = dalloc(n);
        for (int b = 0; b < B; b++)
            for (int gy = 0; gy < gh; gy++)
                for (int gx = 0; gx < gw; gx++)
                    for (int k = 0; k < K; k++)
                        ref[(((size_t)b * gh + gy) * gw + gx) * K + k] =
                            x[(((size_t)b * Cin + k / (p * p)) * H + gy * p + k / p % p) * W + gx * p + k % p];
        float *dx = dev_up(x, n), *dy = k_malloc(n * sizeof(float));
        sam_patchify_forward(dy, dx, B, Cin, H, W, p);
        cmp("sam_patchify_forward", dy, ref, n, 0.0);
        free(x); free(ref); k_free(dx); k_free(dy);
    }
    {
        const int B = 2, H = 7, W = 5, C = 6, ws = 3, nh = 3, nw = 2;
        const size_t nx = (size_t)B * H * W * C, nwin = (size_t)B * nh * nw * ws * ws * C;
        float *x = rnd(nx, 1.0f, 902), *pad = rnd(C, 1.0f, 903);
        double *ref = dalloc(nwin), *back = dalloc(nx);
        for (size_t o = 0; o < nwin; o++) {
            const int c = (int)(o % C), wx = (int)(o / C % ws), wy = (int)(o / C / ws % ws);
            const size_t win = o / C / ws / ws;
            const int j = (int)(win % nw), i = (int)(win / nw % nh), b = (int)(win / nw / nh);
            const int y = i * ws + wy, xx = j * ws + wx;
            ref[o] = y < H && xx < W ? x[(((size_t)b * H + y) * W + xx) * C + c] : pad[c];
        }
        for (size_t i = 0; i < nx; i++) back[i] = x[i];
        float *dx = dev_up(x, nx), *dp = dev_up(pad, C), *dw = k_malloc(nwin * sizeof(float));
        float *db = k_malloc(nx * sizeof(float));
        sam_window_partition_forward(dw, dx, dp, B, H, W, C, ws);
        cmp("sam_window_partition_forward (pad vector)", dw, ref, nwin, 0.0);
        sam_window_unpartition_forward(db, dw, B, H, W, C, ws);
        cmp("sam_window_unpartition_forward (round trip)", db, back, nx, 0.0);
        sam_window_partition_forward(dw, dx, NULL, B, H, W, C, ws);
        float *hw = host_down(dw, nwin);
        size_t bad = 0;
        for (size_t o = 0; o < nwin; o++) {
            const int wx = (int)(o / C % ws), wy = (int)(o / C / ws % ws);
            const size_t win = o / C / ws / ws;
            const int j = (int)(win % nw), i = (int)(win / nw % nh);
            if ((i * ws + wy >= H || j * ws + wx >= W) ? hw[o] != 0.0f : hw[o] != (float)ref[o]) bad++;
        }
        t_check(bad == 0, "sam_window_partition_forward (zero pad)", "%zu wrong of %zu", bad, nwin);
        free(x); free(pad); free(ref); free(back); free(hw);
        k_free(dx); k_free(dp); k_free(dw); k_free(db);
    }
    /* get_rel_pos: copies, q != k, resized tables */
    static const int cases[][3] = {{3, 3, 5}, {3, 5, 9}, {5, 3, 9}, {4, 6, 7}, {7, 3, 4}, {6, 6, 20}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int qs = cases[c][0], ks = cases[c][1], L = cases[c][2], D = 5;
        float *rel = rnd((size_t)L * D, 1.0f, 910 + c);
        double *ref = dalloc((size_t)qs * ks * D);
        ref_rel_pos(ref, rel, qs, ks, L, D);
        float *dr = dev_up(rel, (size_t)L * D), *dout = k_malloc((size_t)qs * ks * D * sizeof(float));
        sam_rel_pos_forward(dout, dr, qs, ks, L, D);
        char name[96];
        snprintf(name, sizeof name, "sam_rel_pos_forward (q %d, k %d, L %d)", qs, ks, L);
        cmp(name, dout, ref, (size_t)qs * ks * D, 1e-6);
        free(rel); free(ref); k_free(dr); k_free(dout);
    }
    /* attention with decomposed relative positions on 3 grids of 3 x 5 */
    {
        const int B = 3, h = 3, w = 5, heads = 2, hd = 8, T = h * w, C = heads * hd;
        const float scale = 1.0f / sqrtf((float)hd);
        const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
        float *qkv = rnd(nq, 1.0f, 920), *rh = rnd((size_t)h * h * hd, 0.7f, 921), *rw = rnd((size_t)w * w * hd, 0.7f, 922);
        double *ref = dalloc(no), *ref0 = dalloc(no);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < heads; hh++)
                for (int t = 0; t < T; t++) {
                    const float *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)hh * hd;
                    double lg[2][64], mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0, 0};
                    for (int s = 0; s < T; s++) {
                        const float *k = qkv + ((size_t)b * T + s) * 3 * C + C + (size_t)hh * hd;
                        double d = 0, bh = 0, bw = 0;
                        for (int i = 0; i < hd; i++) {
                            d += (double)q[i] * k[i];
                            bh += (double)q[i] * rh[(((size_t)(t / w)) * h + s / w) * hd + i];
                            bw += (double)q[i] * rw[(((size_t)(t % w)) * w + s % w) * hd + i];
                        }
                        lg[0][s] = d * scale + bh + bw;
                        lg[1][s] = d * scale;
                        for (int r = 0; r < 2; r++) mx[r] = fmax(mx[r], lg[r][s]);
                    }
                    for (int r = 0; r < 2; r++)
                        for (int s = 0; s < T; s++) { lg[r][s] = exp(lg[r][s] - mx[r]); sum[r] += lg[r][s]; }
                    for (int i = 0; i < hd; i++) {
                        double o[2] = {0, 0};
                        for (int s = 0; s < T; s++) {
                            const double v = qkv[((size_t)b * T + s) * 3 * C + 2 * C + (size_t)hh * hd + i];
                            for (int r = 0; r < 2; r++) o[r] += lg[r][s] / sum[r] * v;
                        }
                        ref[((size_t)b * T + t) * C + (size_t)hh * hd + i] = o[0];
                        ref0[((size_t)b * T + t) * C + (size_t)hh * hd + i] = o[1];
                    }
                }
        float *dq = dev_up(qkv, nq), *drh = dev_up(rh, (size_t)h * h * hd), *drw = dev_up(rw, (size_t)w * w * hd);
        float *dout = k_malloc(no * sizeof(float));
        const size_t ns = sam_attention_scratch_floats(B, h, w, heads), ns1 = sam_attention_scratch_floats(1, h, w, heads);
        float *scr = k_malloc(ns * sizeof(float));
        sam_attention_forward(dout, scr, ns, dq, drh, drw, scale, B, h, w, heads, hd);
        cmp("sam_attention_forward (rel pos)", dout, ref, no, 2e-5);
        sam_attention_forward(dout, scr, ns, dq, NULL, NULL, scale, B, h, w, heads, hd);
        cmp("sam_attention_forward (no rel pos)", dout, ref0, no, 2e-5);
        k_zero(dout, no * sizeof(float));
        sam_attention_forward(dout, scr, ns1, dq, drh, drw, scale, B, h, w, heads, hd);
        cmp("sam_attention_forward (one-grid scratch, chunked)", dout, ref, no, 2e-5);
        free(qkv); free(rh); free(rw); free(ref); free(ref0);
        k_free(dq); k_free(drh); k_free(drw); k_free(dout); k_free(scr);
    }
}

/* The backward kernels of the trainable encoder: exact data movement, the
 * adjoint of get_rel_pos, and attention's gradients from a double-precision
 * backward written here (probabilities recomputed, dS = P (dP - Σ P dP)). */
static void test_sam_encoder_backward(void) {
    {
        const int B = 2, H = 7, W = 5, C = 6, ws = 3, nh = 3, nw = 2;
        const size_t nx = (size_t)B * H * W * C, nwin = (size_t)B * nh * nw * ws * ws * C;
        float *gw = rnd(nwin, 1.0f, 930), *gx = rnd(nx, 1.0f, 931);
        double *rx = dalloc(nx), *rw = dalloc(nwin), *rp = dalloc(C);
        for (size_t o = 0; o < nwin; o++) {
            const int c = (int)(o % C), wx = (int)(o / C % ws), wy = (int)(o / C / ws % ws);
            const size_t win = o / C / ws / ws;
            const int j = (int)(win % nw), i = (int)(win / nw % nh), b = (int)(win / nw / nh);
            const int y = i * ws + wy, xx = j * ws + wx;
            if (y < H && xx < W) {
                const size_t xi = (((size_t)b * H + y) * W + xx) * C + c;
                rx[xi] += gw[o];
                rw[o] += gx[xi];
            } else {
                rp[c] += gw[o];
            }
        }
        float *dgw = dev_up(gw, nwin), *dgx = dev_up(gx, nx);
        float *dx = k_malloc(nx * sizeof(float)), *dw = k_malloc(nwin * sizeof(float)), *dp = k_malloc(C * sizeof(float));
        k_zero(dx, nx * sizeof(float)); k_zero(dw, nwin * sizeof(float)); k_zero(dp, C * sizeof(float));
        sam_window_partition_backward(dx, dp, dgw, B, H, W, C, ws);
        cmp("sam_window_partition_backward (din)", dx, rx, nx, 0.0);
        cmp("sam_window_partition_backward (dpad)", dp, rp, C, 1e-6);
        sam_window_unpartition_backward(dw, dgx, B, H, W, C, ws);
        cmp("sam_window_unpartition_backward", dw, rw, nwin, 0.0);
        free(gw); free(gx); free(rx); free(rw); free(rp);
        k_free(dgw); k_free(dgx); k_free(dx); k_free(dw); k_free(dp);
    }
    /* get_rel_pos's adjoint: each output reads rows i0, i1 with weights 1-l1, l1 */
    static const int cases[][3] = {{3, 3, 5}, {3, 5, 9}, {5, 3, 9}, {4, 6, 7}, {7, 3, 4}, {6, 6, 20}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int qs = cases[c][0], ks = cases[c][1], L = cases[c][2], D = 5, M = 2 * (qs > ks ? qs : ks) - 1;
        const float qr = (float)fmax((double)ks / qs, 1.0), kr = (float)fmax((double)qs / ks, 1.0);
        const float off = (float)((ks - 1) * fmax((double)qs / ks, 1.0));
        float *g = rnd((size_t)qs * ks * D, 1.0f, 940 + c);
        double *ref = dalloc((size_t)L * D);
        for (int i = 0; i < qs; i++)
            for (int j = 0; j < ks; j++) {
                const int m = (int)(((float)i * qr - (float)j * kr) + off);
                for (int d = 0; d < D; d++) {
                    const double v = g[((size_t)i * ks + j) * D + d];
                    if (L == M) { ref[(size_t)m * D + d] += v; continue; }
                    double src = fmax((double)L / M * (m + 0.5) - 0.5, 0.0);
                    int i0 = (int)src;
                    if (i0 > L - 1) i0 = L - 1;
                    const int i1 = i0 < L - 1 ? i0 + 1 : i0;
                    const double l1 = src - i0;
                    ref[(size_t)i0 * D + d] += (1 - l1) * v;
                    ref[(size_t)i1 * D + d] += l1 * v;
                }
            }
        float *dg = dev_up(g, (size_t)qs * ks * D), *dr = k_malloc((size_t)L * D * sizeof(float));
        k_zero(dr, (size_t)L * D * sizeof(float));
        sam_rel_pos_backward(dr, dg, qs, ks, L, D);
        char name[96];
        snprintf(name, sizeof name, "sam_rel_pos_backward (q %d, k %d, L %d)", qs, ks, L);
        cmp(name, dr, ref, (size_t)L * D, 1e-6);
        free(g); free(ref); k_free(dg); k_free(dr);
    }
    /* attention backward on 3 grids of 3 x 5 */
    for (int rel = 1; rel >= 0; rel--) {
        const int B = 3, h = 3, w = 5, heads = 2, hd = 8, T = h * w, C = heads * hd;
        const float scale = 1.0f / sqrtf((float)hd);
        const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nh = (size_t)h * h * hd, nw = (size_t)w * w * hd;
        float *qkv = rnd(nq, 1.0f, 950), *rh = rnd(nh, 0.7f, 951), *rw = rnd(nw, 0.7f, 952), *go = rnd(no, 1.0f, 953);
        double *dq = dalloc(nq), *dh = dalloc(nh), *dw = dalloc(nw);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < heads; hh++)
                for (int t = 0; t < T; t++) {
                    const size_t rq = ((size_t)b * T + t) * 3 * C + (size_t)hh * hd;
                    const float *q = qkv + rq, *gt = go + ((size_t)b * T + t) * C + (size_t)hh * hd;
                    double P[64], dP[64], mx = -INFINITY, sum = 0, dot = 0;
                    for (int s = 0; s < T; s++) {
                        const float *k = qkv + ((size_t)b * T + s) * 3 * C + C + (size_t)hh * hd;
                        double d = 0, bias = 0;
                        for (int i = 0; i < hd; i++) {
                            d += (double)q[i] * k[i];
                            if (rel) bias += (double)q[i] * (rh[((size_t)(t / w) * h + s / w) * hd + i] +
                                                             (double)rw[((size_t)(t % w) * w + s % w) * hd + i]);
                        }
                        P[s] = d * scale + bias;
                        mx = fmax(mx, P[s]);
                    }
                    for (int s = 0; s < T; s++) { P[s] = exp(P[s] - mx); sum += P[s]; }
                    for (int s = 0; s < T; s++) {
                        P[s] /= sum;
                        const float *v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + (size_t)hh * hd;
                        dP[s] = 0;
                        for (int i = 0; i < hd; i++) dP[s] += (double)gt[i] * v[i];
                        dot += P[s] * dP[s];
                    }
                    for (int s = 0; s < T; s++) {
                        const double dS = P[s] * (dP[s] - dot);
                        const size_t rs = ((size_t)b * T + s) * 3 * C + (size_t)hh * hd;
                        const size_t eh = ((size_t)(t / w) * h + s / w) * hd, ew = ((size_t)(t % w) * w + s % w) * hd;
                        for (int i = 0; i < hd; i++) {
                            dq[rq + i] += dS * (scale * (double)qkv[rs + C + i] + (rel ? (double)rh[eh + i] + rw[ew + i] : 0));
                            dq[rs + C + i] += dS * scale * q[i];
                            dq[rs + 2 * C + i] += P[s] * gt[i];
                            if (rel) { dh[eh + i] += dS * q[i]; dw[ew + i] += dS * q[i]; }
                        }
                    }
                }
        float *dqkv = dev_up(qkv, nq), *drh = dev_up(rh, nh), *drw = dev_up(rw, nw), *dgo = dev_up(go, no);
        float *gq = k_malloc(nq * sizeof(float)), *gh = k_malloc(nh * sizeof(float)), *gw = k_malloc(nw * sizeof(float));
        const size_t ns = sam_attention_backward_scratch_floats(B, h, w, heads, hd);
        const size_t ns1 = sam_attention_backward_scratch_floats(1, h, w, heads, hd);
        float *scr = k_malloc(ns * sizeof(float));
        for (int small = 0; small < 2; small++) {
            k_zero(gq, nq * sizeof(float)); k_zero(gh, nh * sizeof(float)); k_zero(gw, nw * sizeof(float));
            sam_attention_backward(gq, gh, gw, scr, small ? ns1 : ns, dgo, dqkv, rel ? drh : NULL, rel ? drw : NULL,
                                   scale, B, h, w, heads, hd);
            char name[96];
            snprintf(name, sizeof name, "sam_attention_backward dqkv (%s%s)", rel ? "rel pos" : "no rel pos",
                     small ? ", one-grid scratch" : "");
            cmp(name, gq, dq, nq, 2e-5);
            if (rel) {
                snprintf(name, sizeof name, "sam_attention_backward dRh%s", small ? " (one-grid scratch)" : "");
                cmp(name, gh, dh, nh, 2e-5);
                snprintf(name, sizeof name, "sam_attention_backward dRw%s", small ? " (one-grid scratch)" : "");
                cmp(name, gw, dw, nw, 2e-5);
            }
        }
        free(qkv); free(rh); free(rw); free(go); free(dq); free(dh); free(dw);
        k_free(dqkv); k_free(drh); k_free(drw); k_free(dgo); k_free(gq); k_free(gh); k_free(gw); k_free(scr);
    }
}

/* ---- GEMM modes (k_set_gemm_mode) ------------------------------------------------
 * Norm-wise relative error ||x - ref|| / ||ref|| of (1) one 192x256x320 product
 * against the double reference and (2) a whole LLaMA training step (dim 256,
 * 4 layers, GQA, LoRA r 8 on all projections, trainable embed / lm_head,
 * B 2 x T 64, vocab 1000): the loss and the whole gradient vector against the
 * same step in fp32 mode. Tolerances: what TF32's 10 mantissa bits allow with
 * margin (H200, 2026-11-26: product 2.95e-4, loss 2.1e-6, gradients 9.6e-4).
 * bf16 / fp16 are refused (kernels.h says why). The CPU backend has fp32 only:
 * tf32 is refused there too. */
static double rel_norm(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return INFINITY;
        const double d = (double)x[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static float llama_step_grads(ar_params *ps, llama *m, const int *tok, const int *tgt, int B, int T, float *g) {
    params_zero_grad(ps);
    int count = 0;
    const float loss = llama_forward(m, tok, tgt, B, T, 77, &count);
    llama_backward(m, 1.0f);
    k_download(g, ps->g, ps->ng * sizeof(float));
    return loss;
}
static void test_gemm_modes(void) {
    static const char *modes[] = {"tf32"};
    static const double tol_gemm[] = {3e-3}, tol_loss[] = {1e-3}, tol_grad[] = {1e-2};
    const int nmodes = (int)(sizeof modes / sizeof modes[0]);
    t_check(k_set_gemm_mode("fp32") == 0 && !strcmp(k_gemm_mode(), "fp32"), "gemm mode fp32", "set: %s", k_gemm_mode());
    t_check(k_set_gemm_mode("fp8") == -1 && k_set_gemm_mode("int8") == -1 && k_set_gemm_mode(NULL) == -1 &&
            !strcmp(k_gemm_mode(), "fp32"),
            "gemm modes unknown refused", "fp8, int8, NULL -> -1, mode stays %s (bf16, fp16: test_bf16)", k_gemm_mode());
    if (k_set_gemm_mode("tf32") != 0) {
        t_check(1, "gemm mode tf32", "skipped: the %s backend has fp32 only", k_backend_name());
        return;
    }
    k_set_gemm_mode("fp32");
    /* (1) one product */
    const int M = 192, N = 256, K = 320;
    float *A = rnd((size_t)M * K, 1.0f, 901), *Bm = rnd((size_t)K * N, 1.0f, 902);
    double *ref = dalloc((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) acc += (double)A[(size_t)i * K + k] * Bm[(size_t)k * N + j];
            ref[(size_t)i * N + j] = acc;
        }
    float *dA = dev_up(A, (size_t)M * K), *dB = dev_up(Bm, (size_t)K * N), *dC = k_malloc((size_t)M * N * sizeof(float));
    float *hC = t_alloc((size_t)M * N);
    /* (2) a LLaMA step */
    llama_cfg c = {.vocab = 1000, .dim = 256, .layers = 4, .heads = 8, .kv_heads = 4, .mlp_hidden = 688, .max_seq = 64,
                   .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 8, .lora_alpha = 16.0f, .lora_dropout = 0.05f,
                   .lora_targets = 0x7f, .train_embed = 1, .train_lm_head = 1};
    const int Bs = 2, T = 64;
    ar_params ps;
    params_init_empty(&ps);
    llama *m = NULL;
    if (llama_declare(&c, &ps) || params_alloc(&ps) || (params_randomize(&ps, 4242), !(m = llama_create(&c, &ps, Bs, T)))) {
        t_fail("gemm modes llama setup", "could not build the model");
        return;
    }
    int tok[2 * 64], tgt[2 * 64];
    for (int i = 0; i < Bs * T; i++) { tok[i] = (i * 7919 + 13) % c.vocab; tgt[i] = i % 5 == 0 ? -100 : (i * 104729 + 7) % c.vocab; }
    float *g32 = t_alloc(ps.ng), *g = t_alloc(ps.ng);
    const float loss32 = llama_step_grads(&ps, m, tok, tgt, Bs, T, g32);
    matmul_forward(dC, dA, dB, M, N, K, 0, 0);
    k_download(hC, dC, (size_t)M * N * sizeof(float));
    double e32 = 0, n32 = 0;
    for (size_t i = 0; i < (size_t)M * N; i++) { e32 += ((double)hC[i] - ref[i]) * ((double)hC[i] - ref[i]); n32 += ref[i] * ref[i]; }
    t_check(sqrt(e32 / n32) < 1e-6, "gemm mode fp32 product", "rel norm err %.2e (tol 1e-06)", sqrt(e32 / n32));
    for (int mi = 0; mi < nmodes; mi++) {
        char name[80];
        k_set_gemm_mode(modes[mi]);
        matmul_forward(dC, dA, dB, M, N, K, 0, 0);
        k_download(hC, dC, (size_t)M * N * sizeof(float));
        double e = 0, nr = 0;
        for (size_t i = 0; i < (size_t)M * N; i++) { e += ((double)hC[i] - ref[i]) * ((double)hC[i] - ref[i]); nr += ref[i] * ref[i]; }
        e = sqrt(e / nr);
        snprintf(name, sizeof name, "gemm mode %s product", modes[mi]);
        t_check(e <= tol_gemm[mi] && e > 1e-6, name, "rel norm err %.2e vs double (tol %.0e; above fp32's 1e-6, so the mode took effect)", e, tol_gemm[mi]);
        const float loss = llama_step_grads(&ps, m, tok, tgt, Bs, T, g);
        const double el = fabs((double)loss - loss32) / fabs((double)loss32), eg = rel_norm(g, g32, ps.ng);
        snprintf(name, sizeof name, "gemm mode %s llama step", modes[mi]);
        t_check(el <= tol_loss[mi] && eg <= tol_grad[mi] && !k_error(), name,
                "loss %.6f vs fp32 %.6f (rel %.2e, tol %.0e); %zu gradients rel norm err %.2e (tol %.0e)%s%s", loss, loss32,
                el, tol_loss[mi], ps.ng, eg, tol_grad[mi], k_error() ? ": " : "", k_error() ? k_error() : "");
    }
    /* (3) bf16 mode's fp32 GEMMs: TF32 by default, plain fp32 after k_set_gemm_rest_fp32(1)
     * (test_anyref_parity's exact check of the 16-bit products relies on it), in either
     * order of the two calls, and the mode's name unchanged */
    const char *order[] = {"rest then mode", "mode then rest", "rest off again"};
    for (int o = 0; o < 3; o++) {
        if (o == 0) { k_set_gemm_rest_fp32(1); k_set_gemm_mode("bf16"); }
        else if (o == 1) { k_set_gemm_rest_fp32(0); k_set_gemm_mode("bf16"); k_set_gemm_rest_fp32(1); }
        else k_set_gemm_rest_fp32(0);
        matmul_forward(dC, dA, dB, M, N, K, 0, 0);
        k_download(hC, dC, (size_t)M * N * sizeof(float));
        double e = 0, nr = 0;
        for (size_t i = 0; i < (size_t)M * N; i++) { e += ((double)hC[i] - ref[i]) * ((double)hC[i] - ref[i]); nr += ref[i] * ref[i]; }
        e = sqrt(e / nr);
        char name[80];
        snprintf(name, sizeof name, "gemm mode bf16, fp32 rest: %s", order[o]);
        const int want_fp32 = o < 2;
        t_check((want_fp32 ? e < 1e-6 : e > 1e-6 && e <= 3e-3) && !strcmp(k_gemm_mode(), "bf16"), name,
                "an fp32 product's rel norm err %.2e (%s), mode %s", e,
                want_fp32 ? "plain fp32: < 1e-6" : "TF32 again: above 1e-6", k_gemm_mode());
    }
    k_set_gemm_rest_fp32(0);
    k_set_gemm_mode("fp32");
    free(A); free(Bm); free(ref); free(hC); free(g32); free(g);
    k_free(dA); k_free(dB); k_free(dC);
    llama_free(m);
    params_free(&ps);
}

int main(void) {
    printf("# backend: %s\n", k_backend_name());
    void *probe = k_malloc(64);
    if (!probe) { t_fail("device", "k_malloc failed: no usable device"); return t_exit_code(); }
    k_free(probe);
    test_matmul();
    test_linear();
    test_lora();
    test_attention();
    test_xent();
    test_bce_dice();
    test_norms();
    test_resize();
    test_roi_align();
    test_conv();
    test_refocus();
    test_transpose();
    test_sam_encoder();
    test_sam_encoder_backward();
    test_gemm_modes();
    k_sync();
    return t_exit_code();
}
