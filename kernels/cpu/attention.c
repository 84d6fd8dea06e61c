/* kernels/cpu/attention.c — RoPE, row softmax, and multi-head attention with
 * grouped-query heads, causal/padding masks, exposed probabilities and an
 * extra gradient on them (for refocusing, SPEC 2.5). Per-head products are
 * strided sgemm calls; heads run in parallel (OpenMP OpenBLAS runs each call
 * single-threaded inside the region), or one at a time with a threaded sgemm
 * when there are fewer heads than threads. */
#include "kernels/kernels.h"
#include "kernels/cpu/vmath.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* HF computes inv_freq and the angle in float32; we do the same so that long
 * positions round the way a Hugging Face checkpoint was trained with. cos/sin of
 * that float angle are evaluated in double (reduction by pi/2, then Taylor
 * polynomials on [-pi/4, pi/4]) in a loop GCC vectorises, and rounded to float:
 * the same values as (float)cos((double)angle) to within 1 ulp. */
static void rope_inv_freq(float *inv, float theta, int hd) {
    for (int i = 0; i < hd / 2; i++) inv[i] = (float)(1.0 / pow((double)theta, (double)(2 * i) / (double)hd));
}

static void rope_angles(float *c, float *s, const float *inv, int pos, int half) {
    #pragma omp simd
    for (int i = 0; i < half; i++) {
        double a = (double)((float)pos * inv[i]);
        double k = __builtin_round(a * 0.63661977236758134308);          /* a / (pi/2) */
        double r = (a - k * 1.57079632679489655800) - k * 6.12323399573676603587e-17;
        double r2 = r * r;
        double sn = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880
                    + r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800.0)))))));
        double cs = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320
                    + r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600.0))))));
        long q = (long)k & 3;   /* rotate by q quarter turns */
        double cq = q == 0 ? cs : q == 1 ? -sn : q == 2 ? -cs : sn;
        double sq = q == 0 ? sn : q == 1 ? cs : q == 2 ? -sn : -cs;
        c[i] = (float)cq;
        s[i] = (float)sq;
    }
}

void rope_forward(float *out, const float *in, const int *pos, float theta, int N, int H, int hd) {
    int half = hd / 2;
    float inv[half];
    rope_inv_freq(inv, theta, hd);
    #pragma omp parallel for if ((long)N * H * hd > 16384)
    for (int n = 0; n < N; n++) {
        float c[half], s[half];
        rope_angles(c, s, inv, pos[n], half);
        for (int h = 0; h < H; h++) {
            const float *x = in + ((size_t)n * H + h) * hd;
            float *o = out + ((size_t)n * H + h) * hd;
            #pragma omp simd
            for (int i = 0; i < half; i++) {
                float a = x[i], b = x[i + half];
                o[i] = a * c[i] - b * s[i];
                o[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void rope_backward(float *din, const float *dout, const int *pos, float theta, int N, int H, int hd) {
    int half = hd / 2;
    float inv[half];
    rope_inv_freq(inv, theta, hd);
    #pragma omp parallel for if ((long)N * H * hd > 16384)
    for (int n = 0; n < N; n++) {
        float c[half], s[half];
        rope_angles(c, s, inv, pos[n], half);
        for (int h = 0; h < H; h++) {
            const float *g = dout + ((size_t)n * H + h) * hd;
            float *dx = din + ((size_t)n * H + h) * hd;
            #pragma omp simd
            for (int i = 0; i < half; i++) {
                float ga = g[i], gb = g[i + half];
                dx[i] += ga * c[i] + gb * s[i];
                dx[i + half] += gb * c[i] - ga * s[i];
            }
        }
    }
}

/* In-place softmax of x[0..len), zero for [len..C) (len == 0 gives all
 * zeros); returns the row's log-sum-exp (-INFINITY when len == 0). */
static float softmax_row_lse(float *x, int len, int C) {
    const float lse = len > 0 ? vsoftmax(x, len) : -INFINITY;
    for (int j = len; j < C; j++) x[j] = 0.0f;
    return lse;
}
static void softmax_row(float *x, int len, int C) { (void)softmax_row_lse(x, len, C); }

void softmax_forward(float *out, const float *in, int N, int C) {
    #pragma omp parallel for if ((long)N * C > 16384)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        memcpy(o, in + (size_t)n * C, (size_t)C * sizeof(float));
        softmax_row(o, C, C);
    }
}

void softmax_backward(float *din, const float *dout, const float *out, int N, int C) {
    #pragma omp parallel for if ((long)N * C > 16384)
    for (int n = 0; n < N; n++) {
        const float *y = out + (size_t)n * C, *g = dout + (size_t)n * C;
        float *dx = din + (size_t)n * C;
        float dot = 0.0f;
        #pragma omp simd reduction(+:dot)
        for (int j = 0; j < C; j++) dot += g[j] * y[j];
        #pragma omp simd
        for (int j = 0; j < C; j++) dx[j] += y[j] * (g[j] - dot);
    }
}

/* Number of keys visible to query t of batch b: keys [0, visible). Masks are
 * prefix-shaped (causal limit and padding length), so one count describes a row. */
static inline int visible_keys(int t, int b, const int *key_len, int causal, int T, int S) {
    int lim = S;
    if (key_len) lim = key_len[b] < lim ? key_len[b] : lim;
    if (causal) { int c = t + (S - T) + 1; lim = c < lim ? c : lim; }
    return lim < 0 ? 0 : lim;
}

/* Queries are processed in blocks of QB rows; a block only multiplies against
 * the keys its last row can see (the causal limit and key_len), so causal
 * attention does about half the GEMM work of the full T x S products. */
enum { QB = 64 };

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const int *key_len, int causal, float scale,
                       int B, int T, int S, int Hq, int Hkv, int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const int jobs = B * Hq;
    #pragma omp parallel for schedule(dynamic) if (jobs >= omp_get_max_threads())
    for (int job = 0; job < jobs; job++) {
        int b = job / Hq, h = job % Hq, kh = h / group;
        const float *Q = q + (size_t)b * T * ldq + (size_t)h * hd;
        const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
        const float *V = v + (size_t)b * S * ldk + (size_t)kh * hd;
        float *P = att + (size_t)job * T * S;
        float *O = out + (size_t)b * T * ldq + (size_t)h * hd;
        for (int t0 = 0; t0 < T; t0 += QB) {
            int nt = T - t0 < QB ? T - t0 : QB;
            int kmax = visible_keys(t0 + nt - 1, b, key_len, causal, T, S);
            float *Pb = P + (size_t)t0 * S;
            if (kmax > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, kmax, hd, scale,
                            Q + (size_t)t0 * ldq, ldq, K, ldk, 0.0f, Pb, S);
            for (int t = t0; t < t0 + nt; t++)
                softmax_row(P + (size_t)t * S, visible_keys(t, b, key_len, causal, T, S), S);
            if (kmax > 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nt, hd, kmax, 1.0f, Pb, S, V, ldk,
                            0.0f, O + (size_t)t0 * ldq, ldq);
            } else {
                for (int t = t0; t < t0 + nt; t++) memset(O + (size_t)t * ldq, 0, (size_t)hd * sizeof(float));
            }
        }
    }
}

size_t attention_scratch_floats(int B, int T, int S, int Hq) { return (size_t)B * Hq * T * S; }

/* Per query head and query block: dP = dO V^T (+ extra), dS = P ⊙ (dP - rowsum(dP ⊙ P)),
 * dQ += scale dS K, dK += scale dS^T Q, dV += P^T dO, each over only the keys the
 * block can see (P is exactly 0 beyond them, so dS is too). Jobs are (batch,
 * kv head) so that the query heads sharing a kv head accumulate into dK/dV serially. */
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *datt_extra, const float *att,
                        const float *q, const float *k, const float *v, float scale,
                        int B, int T, int S, int Hq, int Hkv, int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const int jobs = B * Hkv;
    #pragma omp parallel for schedule(dynamic) if (jobs >= omp_get_max_threads())
    for (int job = 0; job < jobs; job++) {
        int b = job / Hkv, kh = job % Hkv;
        const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
        const float *V = v + (size_t)b * S * ldk + (size_t)kh * hd;
        float *dKh = dk ? dk + (size_t)b * S * ldk + (size_t)kh * hd : NULL;
        float *dVh = dv ? dv + (size_t)b * S * ldk + (size_t)kh * hd : NULL;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            size_t ph = ((size_t)b * Hq + h) * T * S;
            const float *Q = q + (size_t)b * T * ldq + (size_t)h * hd;
            const float *dO = dout + (size_t)b * T * ldq + (size_t)h * hd;
            float *dQh = dq ? dq + (size_t)b * T * ldq + (size_t)h * hd : NULL;
            for (int t0 = 0; t0 < T; t0 += QB) {
                int nt = T - t0 < QB ? T - t0 : QB;
                /* the widest row of the block: P rows are 0 beyond their visible keys */
                int kmax = 0;
                const float *Pb = att + ph + (size_t)t0 * S;
                for (int t = 0; t < nt; t++) {      /* vectorised: highest nonzero column + 1 */
                    const float *row = Pb + (size_t)t * S;
                    int hi = kmax;
                    #pragma omp simd reduction(max:hi)
                    for (int j = kmax; j < S; j++) hi = row[j] != 0.0f && j + 1 > hi ? j + 1 : hi;
                    kmax = hi;
                }
                if (kmax == 0) continue;
                const float *Qb = Q + (size_t)t0 * ldq, *dOb = dO + (size_t)t0 * ldq;
                if (dQh || dKh) {
                    float *dS = scratch + ph + (size_t)t0 * S;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, kmax, hd, 1.0f, dOb, ldq, V, ldk,
                                0.0f, dS, S);
                    for (int t = 0; t < nt; t++) {
                        float *row = dS + (size_t)t * S;
                        const float *p = Pb + (size_t)t * S;
                        if (datt_extra) {
                            const float *e = datt_extra + ph + (size_t)(t0 + t) * S;
                            #pragma omp simd
                            for (int j = 0; j < kmax; j++) row[j] += e[j];
                        }
                        float dot = 0.0f;
                        #pragma omp simd reduction(+:dot)
                        for (int j = 0; j < kmax; j++) dot += row[j] * p[j];
                        #pragma omp simd
                        for (int j = 0; j < kmax; j++) row[j] = p[j] * (row[j] - dot);
                    }
                    if (dQh) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nt, hd, kmax, scale, dS, S,
                                         K, ldk, 1.0f, dQh + (size_t)t0 * ldq, ldq);
                    if (dKh) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, hd, nt, scale, dS, S,
                                         Qb, ldq, 1.0f, dKh, ldk);
                }
                if (dVh) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, hd, nt, 1.0f, Pb, S,
                                     dOb, ldq, 1.0f, dVh, ldk);
            }
        }
    }
}

/* ---- memory-efficient (flash-style) attention ------------------------------
 * The same blocks of QB query rows as above, but a block's probabilities live
 * in the caller's scratch only while the block is worked on: forward keeps
 * out and the rows' log-sum-exp, backward recomputes each block's P from the
 * scores and lse (P = exp(s - lse)) and uses D = rowsum(dO ⊙ O) for the
 * softmax's row term. Scratch: forward jobs are (batch, query head) with one
 * block each; backward jobs are (batch, kv head) with a block for P and one
 * for dS (so dK / dV of a kv head are accumulated by one thread). */
size_t attention_flash_scratch_floats(int B, int T, int S, int Hq, int Hkv) {
    const size_t qb = (size_t)(T < QB ? T : QB), fwd = (size_t)B * Hq, bwd = 2 * (size_t)B * Hkv;
    return (fwd > bwd ? fwd : bwd) * qb * (size_t)(S > 0 ? S : 1);
}

void attention_flash_forward(float *out, float *lse, float *scratch, const float *q, const float *k, const float *v,
                             const int *key_len, int causal, float scale, int B, int T, int S, int Hq, int Hkv,
                             int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd, qb = T < QB ? T : QB;
    const int jobs = B * Hq;
    #pragma omp parallel for schedule(dynamic) if (jobs >= omp_get_max_threads())
    for (int job = 0; job < jobs; job++) {
        int b = job / Hq, h = job % Hq, kh = h / group;
        const float *Q = q + (size_t)b * T * ldq + (size_t)h * hd;
        const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
        const float *V = v + (size_t)b * S * ldk + (size_t)kh * hd;
        float *Pb = scratch + (size_t)job * qb * S, *L = lse + (size_t)job * T;
        float *O = out + (size_t)b * T * ldq + (size_t)h * hd;
        for (int t0 = 0; t0 < T; t0 += QB) {
            int nt = T - t0 < QB ? T - t0 : QB;
            int kmax = visible_keys(t0 + nt - 1, b, key_len, causal, T, S);
            if (kmax > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, kmax, hd, scale,
                            Q + (size_t)t0 * ldq, ldq, K, ldk, 0.0f, Pb, S);
            for (int t = 0; t < nt; t++)
                L[t0 + t] = softmax_row_lse(Pb + (size_t)t * S, visible_keys(t0 + t, b, key_len, causal, T, S), kmax);
            if (kmax > 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nt, hd, kmax, 1.0f, Pb, S, V, ldk,
                            0.0f, O + (size_t)t0 * ldq, ldq);
            } else {
                for (int t = t0; t < t0 + nt; t++) memset(O + (size_t)t * ldq, 0, (size_t)hd * sizeof(float));
            }
        }
    }
}

void attention_flash_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v, const int *key_len,
                              int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd, qb = T < QB ? T : QB;
    const int jobs = B * Hkv;
    #pragma omp parallel for schedule(dynamic) if (jobs >= omp_get_max_threads())
    for (int job = 0; job < jobs; job++) {
        int b = job / Hkv, kh = job % Hkv;
        const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
        const float *V = v + (size_t)b * S * ldk + (size_t)kh * hd;
        float *dKh = dk ? dk + (size_t)b * S * ldk + (size_t)kh * hd : NULL;
        float *dVh = dv ? dv + (size_t)b * S * ldk + (size_t)kh * hd : NULL;
        float *Pb = scratch + (size_t)job * 2 * qb * S, *dS = Pb + (size_t)qb * S;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            const float *Q = q + (size_t)b * T * ldq + (size_t)h * hd;
            const float *dO = dout + (size_t)b * T * ldq + (size_t)h * hd;
            const float *O = out + (size_t)b * T * ldq + (size_t)h * hd;
            const float *L = lse + ((size_t)b * Hq + h) * T;
            float *dQh = dq ? dq + (size_t)b * T * ldq + (size_t)h * hd : NULL;
            for (int t0 = 0; t0 < T; t0 += QB) {
                int nt = T - t0 < QB ? T - t0 : QB;
                int kmax = visible_keys(t0 + nt - 1, b, key_len, causal, T, S);
                if (kmax == 0) continue;
                const float *Qb = Q + (size_t)t0 * ldq, *dOb = dO + (size_t)t0 * ldq;
                /* the block's probabilities again: P = exp(scale q k^T - lse), 0 where masked */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, kmax, hd, scale, Qb, ldq, K, ldk, 0.0f, Pb, S);
                for (int t = 0; t < nt; t++) {
                    float *row = Pb + (size_t)t * S;
                    const int vis = visible_keys(t0 + t, b, key_len, causal, T, S);
                    const float l = L[t0 + t];
                    #pragma omp simd
                    for (int j = 0; j < vis; j++) row[j] = vexpf(row[j] - l);
                    for (int j = vis; j < kmax; j++) row[j] = 0.0f;
                }
                if (dVh) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, hd, nt, 1.0f, Pb, S,
                                     dOb, ldq, 1.0f, dVh, ldk);
                if (!dQh && !dKh) continue;
                /* dS = P ⊙ (dO V^T - D), D = rowsum(dO ⊙ O) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nt, kmax, hd, 1.0f, dOb, ldq, V, ldk, 0.0f, dS, S);
                for (int t = 0; t < nt; t++) {
                    const float *go = dOb + (size_t)t * ldq, *o = O + (size_t)(t0 + t) * ldq;
                    float D = 0.0f;
                    #pragma omp simd reduction(+:D)
                    for (int i = 0; i < hd; i++) D += go[i] * o[i];
                    float *row = dS + (size_t)t * S;
                    const float *p = Pb + (size_t)t * S;
                    #pragma omp simd
                    for (int j = 0; j < kmax; j++) row[j] = p[j] * (row[j] - D);
                }
                if (dQh) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nt, hd, kmax, scale, dS, S,
                                     K, ldk, 1.0f, dQh + (size_t)t0 * ldq, ldq);
                if (dKh) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kmax, hd, nt, scale, dS, S,
                                     Qb, ldq, 1.0f, dKh, ldk);
            }
        }
    }
}

/* ---- selected rows of the flash attention's probabilities ---------------- */
void attention_rows_forward(float *prow, const int *rows, int n, const float *q, const float *k, const float *lse,
                            const int *key_len, int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    (void)B;
    #pragma omp parallel for collapse(2) if ((long)n * Hq * S * hd > 65536)
    for (int r = 0; r < n; r++)
        for (int h = 0; h < Hq; h++) {
            const int b = rows[r] / T, t = rows[r] % T, kh = h / group;
            const float *Q = q + ((size_t)b * T + t) * ldq + (size_t)h * hd;
            const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
            const float l = lse[((size_t)b * Hq + h) * T + t];
            const int vis = visible_keys(t, b, key_len, causal, T, S);
            float *p = prow + ((size_t)r * Hq + h) * S;
            for (int j = 0; j < S; j++) {
                if (j >= vis) { p[j] = 0.0f; continue; }
                const float *kj = K + (size_t)j * ldk;
                float d = 0.0f;
                #pragma omp simd reduction(+:d)
                for (int i = 0; i < hd; i++) d += Q[i] * kj[i];
                p[j] = expf(d * scale - l);
            }
        }
}

/* Rows are distinct query positions, but several may share a sample (and
 * the query heads of a group share a kv head), so dk is accumulated by one
 * thread per (sample, kv head): jobs are (b, kh), each walking every row of b. */
void attention_rows_backward(float *dq, float *dk, const float *dprow, const float *prow, const int *rows, int n,
                             const float *q, const float *k, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const int jobs = B * Hkv;
    #pragma omp parallel for schedule(dynamic) if ((long)n * Hq * S * hd > 65536)
    for (int job = 0; job < jobs; job++) {
        const int b = job / Hkv, kh = job % Hkv;
        const float *K = k + (size_t)b * S * ldk + (size_t)kh * hd;
        float *dK = dk ? dk + (size_t)b * S * ldk + (size_t)kh * hd : NULL;
        float ds[S > 0 ? S : 1];
        for (int r = 0; r < n; r++) {
            if (rows[r] / T != b) continue;
            const int t = rows[r] % T;
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                const float *p = prow + ((size_t)r * Hq + h) * S, *g = dprow + ((size_t)r * Hq + h) * S;
                const float *Q = q + ((size_t)b * T + t) * ldq + (size_t)h * hd;
                float dot = 0.0f;
                for (int j = 0; j < S; j++) dot += g[j] * p[j];
                for (int j = 0; j < S; j++) ds[j] = p[j] * (g[j] - dot) * scale;
                if (dq) {
                    float *dQ = dq + ((size_t)b * T + t) * ldq + (size_t)h * hd;
                    for (int j = 0; j < S; j++) {
                        if (ds[j] == 0.0f) continue;
                        const float *kj = K + (size_t)j * ldk;
                        #pragma omp simd
                        for (int i = 0; i < hd; i++) dQ[i] += ds[j] * kj[i];
                    }
                }
                if (dK)
                    for (int j = 0; j < S; j++) {
                        if (ds[j] == 0.0f) continue;
                        float *dkj = dK + (size_t)j * ldk;
                        #pragma omp simd
                        for (int i = 0; i < hd; i++) dkj[i] += ds[j] * Q[i];
                    }
            }
        }
    }
}
