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
 * positions round the way a Hugging Face checkpoint was trained with. */
static void rope_angles(float *c, float *s, int pos, float theta, int hd) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float inv = (float)(1.0 / pow((double)theta, (double)(2 * i) / (double)hd));
        float ang = (float)pos * inv;
        c[i] = (float)cos((double)ang);
        s[i] = (float)sin((double)ang);
    }
}

void rope_forward(float *out, const float *in, const int *pos, float theta, int N, int H, int hd) {
    int half = hd / 2;
    #pragma omp parallel for if ((long)N * H * hd > 16384)
    for (int n = 0; n < N; n++) {
        float c[half], s[half];
        rope_angles(c, s, pos[n], theta, hd);
        for (int h = 0; h < H; h++) {
            const float *x = in + ((size_t)n * H + h) * hd;
            float *o = out + ((size_t)n * H + h) * hd;
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
    #pragma omp parallel for if ((long)N * H * hd > 16384)
    for (int n = 0; n < N; n++) {
        float c[half], s[half];
        rope_angles(c, s, pos[n], theta, hd);
        for (int h = 0; h < H; h++) {
            const float *g = dout + ((size_t)n * H + h) * hd;
            float *dx = din + ((size_t)n * H + h) * hd;
            for (int i = 0; i < half; i++) {
                float ga = g[i], gb = g[i + half];
                dx[i] += ga * c[i] + gb * s[i];
                dx[i + half] += gb * c[i] - ga * s[i];
            }
        }
    }
}

/* In-place softmax of x[0..len), zero for [len..C). len == 0 gives all zeros. */
static void softmax_row(float *x, int len, int C) {
    if (len > 0) {
        float mx = x[0];
        #pragma omp simd reduction(max:mx)
        for (int j = 1; j < len; j++) mx = x[j] > mx ? x[j] : mx;
        float sum = 0.0f;
        #pragma omp simd reduction(+:sum)
        for (int j = 0; j < len; j++) { x[j] = vexpf(x[j] - mx); sum += x[j]; }
        float inv = 1.0f / sum;
        #pragma omp simd
        for (int j = 0; j < len; j++) x[j] *= inv;
    }
    for (int j = len; j < C; j++) x[j] = 0.0f;
}

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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, hd, scale, Q, ldq, K, ldk, 0.0f, P, S);
        for (int t = 0; t < T; t++)
            softmax_row(P + (size_t)t * S, visible_keys(t, b, key_len, causal, T, S), S);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, S, 1.0f, P, S, V, ldk, 0.0f, O, ldq);
    }
}

size_t attention_scratch_floats(int B, int T, int S, int Hq) { return (size_t)B * Hq * T * S; }

/* Per query head: dP = dO V^T (+ extra), dS = P ⊙ (dP - rowsum(dP ⊙ P)),
 * dQ += scale dS K, dK += scale dS^T Q, dV += P^T dO. Jobs are (batch, kv head)
 * so that the query heads sharing a kv head accumulate into dK/dV serially. */
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
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            size_t ph = ((size_t)b * Hq + h) * T * S;
            const float *P = att + ph;
            const float *Q = q + (size_t)b * T * ldq + (size_t)h * hd;
            const float *dO = dout + (size_t)b * T * ldq + (size_t)h * hd;
            float *dS = scratch + ph;
            if (dq || dk) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, hd, 1.0f, dO, ldq, V, ldk,
                            0.0f, dS, S);
                if (datt_extra) {
                    const float *E = datt_extra + ph;
                    for (size_t i = 0; i < (size_t)T * S; i++) dS[i] += E[i];
                }
                for (int t = 0; t < T; t++) {
                    float *row = dS + (size_t)t * S;
                    const float *p = P + (size_t)t * S;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int j = 0; j < S; j++) dot += row[j] * p[j];
                    for (int j = 0; j < S; j++) row[j] = p[j] * (row[j] - dot);
                }
                if (dq) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, S, scale, dS, S, K, ldk,
                                    1.0f, dq + (size_t)b * T * ldq + (size_t)h * hd, ldq);
                if (dk) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, T, scale, dS, S, Q, ldq,
                                    1.0f, dk + (size_t)b * S * ldk + (size_t)kh * hd, ldk);
            }
            if (dv) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, hd, T, 1.0f, P, S, dO, ldq,
                                1.0f, dv + (size_t)b * S * ldk + (size_t)kh * hd, ldk);
        }
    }
}
