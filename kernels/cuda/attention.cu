/* kernels/cuda/attention.cu — RoPE and multi-head (grouped-query) attention.
 *
 * Attention materialises the probabilities att[B,Hq,T,S] as the header asks.
 * The per-head products run as cuBLAS strided-batched GEMMs: for a batch b and
 * a position g inside a query group, the query heads h = kvh*G + g (kvh over
 * the Hkv key/value heads) are equally spaced in q, att and out, and their
 * key/value heads kvh are equally spaced in k and v, so one batched call covers
 * Hkv heads; B*G calls cover them all. The masked softmax and its backward are
 * one warp per row. */
#include "kernels/cuda/common.cuh"
#include <math.h>

/* ---- RoPE (rotate-half): one thread per (token, frequency), looping heads --- */
__global__ static void rope_k(float *out, const float *in, const int *pos, double theta,
                              int N, int H, int hd, int inverse_accumulate) {
    const int half = hd / 2;
    const size_t total = (size_t)N * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const size_t n = idx / half;
        const int i = (int)(idx % half);
        /* inv_freq and the angle in float32 as Hugging Face (and kernels/cpu) do */
        const float inv = (float)(1.0 / pow(theta, (double)(2 * i) / (double)hd));
        const float ang = (float)pos[n] * inv;
        double sd, cd;
        sincos((double)ang, &sd, &cd);
        const float s = (float)sd, c = (float)cd;
        for (int h = 0; h < H; h++) {
            const size_t o = (n * H + h) * (size_t)hd + i;
            const float x0 = in[o], x1 = in[o + half];
            if (!inverse_accumulate) {
                out[o] = x0 * c - x1 * s;
                out[o + half] = x1 * c + x0 * s;
            } else { /* transpose of the rotation, accumulated */
                out[o] += x0 * c + x1 * s;
                out[o + half] += x1 * c - x0 * s;
            }
        }
    }
}
void rope_forward(float *out, const float *in, const int *pos, float theta, int N, int H, int hd) {
    if (N <= 0 || H <= 0 || hd < 2) return;
    rope_k<<<kc_blocks((size_t)N * (hd / 2)), KC_BLOCK>>>(out, in, pos, (double)theta, N, H, hd, 0);
    KC_LAUNCHED();
}
void rope_backward(float *din, const float *dout, const int *pos, float theta, int N, int H, int hd) {
    if (!din || N <= 0 || H <= 0 || hd < 2) return;
    rope_k<<<kc_blocks((size_t)N * (hd / 2)), KC_BLOCK>>>(din, dout, pos, (double)theta, N, H, hd, 1);
    KC_LAUNCHED();
}

/* ---- attention ----------------------------------------------------------- */
enum { WARPS_PER_BLOCK = KC_BLOCK / 32 };
static unsigned warp_rows_grid(size_t rows) { return (unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK); }

/* One warp, in place on a row x[S] of scaled scores: softmax over the visible
 * prefix j < lim, exact zeros after it; returns the row's log-sum-exp
 * (-INFINITY when lim == 0, the row then all zero). */
__device__ static float warp_softmax(float *x, long lim, int S, int lane) {
    float m = -INFINITY;
    for (long j = lane; j < lim; j += 32) m = fmaxf(m, x[j]);
    m = kc_warp_max(m);
    float s = 0.0f;
    for (long j = lane; j < lim; j += 32) s += expf(x[j] - m);
    s = kc_warp_sum(s);
    const float inv = lim > 0 ? 1.0f / s : 0.0f;
    for (long j = lane; j < S; j += 32) x[j] = j < lim ? expf(x[j] - m) * inv : 0.0f;
    return lim > 0 ? m + logf(s) : -INFINITY;
}

/* In place on att rows (b, h, t) holding scaled scores: softmax over the visible
 * prefix j < lim, exact zeros elsewhere; a row with no visible key is all zero. */
__global__ static void att_softmax_k(float *att, const int *key_len, int causal,
                                     int B, int Hq, int T, int S) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)B * Hq * T) return; /* uniform per warp */
    const int t = (int)(row % T);
    const int b = (int)(row / ((size_t)Hq * T));
    long lim = S;
    if (key_len && key_len[b] < lim) lim = key_len[b];
    if (causal && (long)t + (S - T) + 1 < lim) lim = (long)t + (S - T) + 1;
    if (lim < 0) lim = 0;
    warp_softmax(att + row * S, lim, S, lane);
}

size_t attention_scratch_floats(int B, int T, int S, int Hq) {
    return (size_t)B * Hq * T * S;
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const int *key_len, int causal, float scale,
                       int B, int T, int S, int Hq, int Hkv, int hd) {
    if (B <= 0 || T <= 0 || Hq <= 0 || Hkv <= 0 || hd <= 0) return;
    if (S <= 0) { k_zero(out, (size_t)B * T * Hq * hd * sizeof(float)); return; }
    const int G = Hq / Hkv;
    const size_t TS = (size_t)T * S;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) /* scores[T,S] = scale q_h[T,hd] k_kvh[S,hd]^T */
            kc_gemm_batched(0, 1, T, S, hd, scale,
                            q + (size_t)b * T * Hq * hd + (size_t)g * hd, Hq * hd, (long long)G * hd,
                            k + (size_t)b * S * Hkv * hd, Hkv * hd, (long long)hd,
                            0.0f, att + ((size_t)b * Hq + g) * TS, S, (long long)G * TS, Hkv);
    const size_t rows = (size_t)B * Hq * T;
    att_softmax_k<<<warp_rows_grid(rows), KC_BLOCK>>>(att, key_len, causal, B, Hq, T, S);
    KC_LAUNCHED();
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) /* out_h[T,hd] = P[T,S] v_kvh[S,hd] */
            kc_gemm_batched(0, 0, T, hd, S, 1.0f,
                            att + ((size_t)b * Hq + g) * TS, S, (long long)G * TS,
                            v + (size_t)b * S * Hkv * hd, Hkv * hd, (long long)hd,
                            0.0f, out + (size_t)b * T * Hq * hd + (size_t)g * hd, Hq * hd, (long long)G * hd, Hkv);
}

/* In place on dP rows: g = dP + datt_extra;  dS = P ⊙ (g - Σ_j P_j g_j). */
__global__ static void att_softmax_bwd_k(float *dP, const float *datt_extra, const float *att,
                                         size_t rows, int S) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *p = att + row * S;
    const float *e = datt_extra ? datt_extra + row * S : NULL;
    float *d = dP + row * S;
    float dot = 0.0f;
    for (int j = lane; j < S; j += 32) dot += p[j] * (d[j] + (e ? e[j] : 0.0f));
    dot = kc_warp_sum(dot);
    for (int j = lane; j < S; j += 32) {
        float gj = d[j] + (e ? e[j] : 0.0f);
        d[j] = p[j] * (gj - dot);
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *datt_extra, const float *att,
                        const float *q, const float *k, const float *v, float scale,
                        int B, int T, int S, int Hq, int Hkv, int hd) {
    if (B <= 0 || T <= 0 || S <= 0 || Hq <= 0 || Hkv <= 0 || hd <= 0) return;
    const int G = Hq / Hkv;
    const size_t TS = (size_t)T * S;
    const size_t qb = (size_t)T * Hq * hd, kb = (size_t)S * Hkv * hd; /* per-batch strides */
    if (dv)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++) /* dv_kvh[S,hd] += P^T[S,T] dout_h[T,hd] */
                kc_gemm_batched(1, 0, S, hd, T, 1.0f,
                                att + ((size_t)b * Hq + g) * TS, S, (long long)G * TS,
                                dout + b * qb + (size_t)g * hd, Hq * hd, (long long)G * hd,
                                1.0f, dv + b * kb, Hkv * hd, (long long)hd, Hkv);
    if (!dq && !dk) return;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) /* dP[T,S] = dout_h[T,hd] v_kvh[S,hd]^T */
            kc_gemm_batched(0, 1, T, S, hd, 1.0f,
                            dout + b * qb + (size_t)g * hd, Hq * hd, (long long)G * hd,
                            v + b * kb, Hkv * hd, (long long)hd,
                            0.0f, scratch + ((size_t)b * Hq + g) * TS, S, (long long)G * TS, Hkv);
    const size_t rows = (size_t)B * Hq * T;
    att_softmax_bwd_k<<<warp_rows_grid(rows), KC_BLOCK>>>(scratch, datt_extra, att, rows, S);
    KC_LAUNCHED();
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            const float *dS = scratch + ((size_t)b * Hq + g) * TS;
            if (dq) /* dq_h[T,hd] += scale dS[T,S] k_kvh[S,hd] */
                kc_gemm_batched(0, 0, T, hd, S, scale, dS, S, (long long)G * TS,
                                k + b * kb, Hkv * hd, (long long)hd,
                                1.0f, dq + b * qb + (size_t)g * hd, Hq * hd, (long long)G * hd, Hkv);
            if (dk) /* dk_kvh[S,hd] += scale dS^T[S,T] q_h[T,hd] */
                kc_gemm_batched(1, 0, S, hd, T, scale, dS, S, (long long)G * TS,
                                q + b * qb + (size_t)g * hd, Hq * hd, (long long)G * hd,
                                1.0f, dk + b * kb, Hkv * hd, (long long)hd, Hkv);
        }
}

/* ---- memory-efficient (flash-style) attention ------------------------------
 * Blocks of QBC query rows; for each, the same batched GEMMs as above over
 * every (batch, head), into scratch laid out [B, Hq, QBC, S]: forward keeps
 * out and the rows' log-sum-exp, backward recomputes P = exp(s - lse) and
 * takes the softmax's row term from rowsum(dout ⊙ out). Scratch: P and dS,
 * 2·B·Hq·QBC·S floats. */
enum { QBC = 128 };

size_t attention_flash_scratch_floats(int B, int T, int S, int Hq, int Hkv) {
    (void)Hkv;
    return 2 * (size_t)B * Hq * (size_t)(T < QBC ? T : QBC) * (size_t)(S > 0 ? S : 1);
}

/* Visible keys of query t in batch b (prefix masks): [0, lim). */
__device__ static inline long flash_lim(const int *key_len, int causal, int b, int t, int T, int S) {
    long lim = S;
    if (key_len && key_len[b] < lim) lim = key_len[b];
    if (causal && (long)t + (S - T) + 1 < lim) lim = (long)t + (S - T) + 1;
    return lim < 0 ? 0 : lim;
}

/* Rows (b, h, t0 + tt) of the block: softmax over the visible prefix, zeros
 * after it; lse[b, h, t] = max + log(sum) (-INFINITY without a visible key). */
__global__ static void flash_softmax_k(float *P, float *lse, const int *key_len, int causal, int Hq, int T, int S,
                                       int t0, int nt, int qb, size_t rows) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const size_t bh = row / nt;
    const int tt = (int)(row % nt), b = (int)(bh / Hq), t = t0 + tt;
    const float l = warp_softmax(P + (bh * qb + tt) * (size_t)S, flash_lim(key_len, causal, b, t, T, S), S, lane);
    if (lane == 0) lse[bh * T + t] = l;
}

/* The block's scores -> probabilities again: exp(s - lse), zeros where masked. */
__global__ static void flash_probs_k(float *P, const float *lse, const int *key_len, int causal, int Hq, int T, int S,
                                     int t0, int nt, int qb, size_t rows) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const size_t bh = row / nt;
    const int tt = (int)(row % nt), b = (int)(bh / Hq), t = t0 + tt;
    const long lim = flash_lim(key_len, causal, b, t, T, S);
    const float l = lse[bh * T + t];
    float *x = P + (bh * qb + tt) * (size_t)S;
    for (long j = lane; j < S; j += 32) x[j] = j < lim ? expf(x[j] - l) : 0.0f;
}

/* dS = P ⊙ (dP - D), D = Σ_i dout[b, t, h, i] out[b, t, h, i]. */
__global__ static void flash_ds_k(float *dS, const float *P, const float *dout, const float *out, int Hq, int T, int S,
                                  int hd, int t0, int nt, int qb, size_t rows) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const size_t bh = row / nt;
    const int tt = (int)(row % nt), b = (int)(bh / Hq), h = (int)(bh % Hq), t = t0 + tt;
    const size_t o = (((size_t)b * T + t) * Hq + h) * hd;
    float D = 0.0f;
    for (int i = lane; i < hd; i += 32) D += dout[o + i] * out[o + i];
    D = kc_warp_sum(D);
    const size_t r = (bh * qb + tt) * (size_t)S;
    for (int j = lane; j < S; j += 32) dS[r + j] = P[r + j] * (dS[r + j] - D);
}

__global__ static void fill_neg_inf_k(float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = -INFINITY;
}

void attention_flash_forward(float *out, float *lse, float *scratch, const float *q, const float *k, const float *v,
                             const int *key_len, int causal, float scale, int B, int T, int S, int Hq, int Hkv,
                             int hd) {
    if (B <= 0 || T <= 0 || Hq <= 0 || Hkv <= 0 || hd <= 0) return;
    if (S <= 0) {   /* no keys: zeros, and every row's lse -INFINITY (as the CPU backend) */
        k_zero(out, (size_t)B * T * Hq * hd * sizeof(float));
        const size_t nl = (size_t)B * Hq * T;
        fill_neg_inf_k<<<kc_blocks(nl), KC_BLOCK>>>(lse, nl);
        KC_LAUNCHED();
        return;
    }
    const int G = Hq / Hkv, qb = T < QBC ? T : QBC;
    const size_t QS = (size_t)qb * S, qbs = (size_t)T * Hq * hd, kbs = (size_t)S * Hkv * hd;
    float *P = scratch;
    for (int t0 = 0; t0 < T; t0 += qb) {
        const int nt = T - t0 < qb ? T - t0 : qb;
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++)   /* scores[nt,S] = scale q_h[t0.., hd] k_kvh[S,hd]^T */
                kc_gemm_batched(0, 1, nt, S, hd, scale, q + b * qbs + (size_t)t0 * Hq * hd + (size_t)g * hd, Hq * hd,
                                (long long)G * hd, k + b * kbs, Hkv * hd, (long long)hd, 0.0f,
                                P + ((size_t)b * Hq + g) * QS, S, (long long)G * QS, Hkv);
        const size_t rows = (size_t)B * Hq * nt;
        flash_softmax_k<<<warp_rows_grid(rows), KC_BLOCK>>>(P, lse, key_len, causal, Hq, T, S, t0, nt, qb, rows);
        KC_LAUNCHED();
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++)   /* out_h[t0.., hd] = P[nt,S] v_kvh[S,hd] */
                kc_gemm_batched(0, 0, nt, hd, S, 1.0f, P + ((size_t)b * Hq + g) * QS, S, (long long)G * QS,
                                v + b * kbs, Hkv * hd, (long long)hd, 0.0f,
                                out + b * qbs + (size_t)t0 * Hq * hd + (size_t)g * hd, Hq * hd, (long long)G * hd, Hkv);
    }
}

void attention_flash_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v, const int *key_len,
                              int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    if (B <= 0 || T <= 0 || S <= 0 || Hq <= 0 || Hkv <= 0 || hd <= 0) return;
    const int G = Hq / Hkv, qb = T < QBC ? T : QBC;
    const size_t QS = (size_t)qb * S, qbs = (size_t)T * Hq * hd, kbs = (size_t)S * Hkv * hd;
    float *P = scratch, *dS = scratch + (size_t)B * Hq * QS;
    for (int t0 = 0; t0 < T; t0 += qb) {
        const int nt = T - t0 < qb ? T - t0 : qb;
        const size_t rows = (size_t)B * Hq * nt, tq = (size_t)t0 * Hq * hd;
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++)
                kc_gemm_batched(0, 1, nt, S, hd, scale, q + b * qbs + tq + (size_t)g * hd, Hq * hd, (long long)G * hd,
                                k + b * kbs, Hkv * hd, (long long)hd, 0.0f, P + ((size_t)b * Hq + g) * QS, S,
                                (long long)G * QS, Hkv);
        flash_probs_k<<<warp_rows_grid(rows), KC_BLOCK>>>(P, lse, key_len, causal, Hq, T, S, t0, nt, qb, rows);
        KC_LAUNCHED();
        if (dv)
            for (int b = 0; b < B; b++)
                for (int g = 0; g < G; g++)   /* dv_kvh[S,hd] += P^T[S,nt] dout_h[nt,hd] */
                    kc_gemm_batched(1, 0, S, hd, nt, 1.0f, P + ((size_t)b * Hq + g) * QS, S, (long long)G * QS,
                                    dout + b * qbs + tq + (size_t)g * hd, Hq * hd, (long long)G * hd, 1.0f,
                                    dv + b * kbs, Hkv * hd, (long long)hd, Hkv);
        if (!dq && !dk) continue;
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++)   /* dP[nt,S] = dout_h v_kvh^T */
                kc_gemm_batched(0, 1, nt, S, hd, 1.0f, dout + b * qbs + tq + (size_t)g * hd, Hq * hd,
                                (long long)G * hd, v + b * kbs, Hkv * hd, (long long)hd, 0.0f,
                                dS + ((size_t)b * Hq + g) * QS, S, (long long)G * QS, Hkv);
        flash_ds_k<<<warp_rows_grid(rows), KC_BLOCK>>>(dS, P, dout, out, Hq, T, S, hd, t0, nt, qb, rows);
        KC_LAUNCHED();
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++) {
                const float *dSb = dS + ((size_t)b * Hq + g) * QS;
                if (dq)   /* dq_h[t0.., hd] += scale dS k_kvh */
                    kc_gemm_batched(0, 0, nt, hd, S, scale, dSb, S, (long long)G * QS, k + b * kbs, Hkv * hd,
                                    (long long)hd, 1.0f, dq + b * qbs + tq + (size_t)g * hd, Hq * hd, (long long)G * hd,
                                    Hkv);
                if (dk)   /* dk_kvh[S,hd] += scale dS^T q_h[t0.., hd] */
                    kc_gemm_batched(1, 0, S, hd, nt, scale, dSb, S, (long long)G * QS,
                                    q + b * qbs + tq + (size_t)g * hd, Hq * hd, (long long)G * hd, 1.0f, dk + b * kbs,
                                    Hkv * hd, (long long)hd, Hkv);
            }
    }
}

/* ---- selected rows of the flash attention's probabilities ----------------
 * prow[r, h, j] one thread each; backward: one warp per (row, head) for the
 * softmax's row term into dS (the KC_WS_TEMP workspace), then dq by
 * (row, head, i) and dk by (sample, key, kv head, i), each summing in a fixed
 * order (no atomics). */
__global__ static void rows_fwd_k(float *prow, const int *rows, int n, const float *q, const float *k, const float *lse,
                                  const int *key_len, int causal, float scale, int T, int S, int Hq, int Hkv, int hd) {
    const size_t total = (size_t)n * Hq * S;
    const int G = Hq / Hkv;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(idx % S), h = (int)((idx / S) % Hq), r = (int)(idx / ((size_t)S * Hq));
        const int b = rows[r] / T, t = rows[r] % T, kh = h / G;
        if (j >= flash_lim(key_len, causal, b, t, T, S)) { prow[idx] = 0.0f; continue; }
        const float *Q = q + (((size_t)b * T + t) * Hq + h) * hd, *K = k + (((size_t)b * S + j) * Hkv + kh) * hd;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += Q[i] * K[i];
        prow[idx] = expf(d * scale - lse[((size_t)b * Hq + h) * T + t]);
    }
}

void attention_rows_forward(float *prow, const int *rows, int n, const float *q, const float *k, const float *lse,
                            const int *key_len, int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    (void)B;
    if (n <= 0 || S <= 0) return;
    rows_fwd_k<<<kc_blocks((size_t)n * Hq * S), KC_BLOCK>>>(prow, rows, n, q, k, lse, key_len, causal, scale, T, S, Hq,
                                                           Hkv, hd);
    KC_LAUNCHED();
}

__global__ static void rows_ds_k(float *ds, const float *dprow, const float *prow, size_t nrows, int S, float scale) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= nrows) return;
    const float *p = prow + row * S, *g = dprow + row * S;
    float dot = 0.0f;
    for (int j = lane; j < S; j += 32) dot += g[j] * p[j];
    dot = kc_warp_sum(dot);
    for (int j = lane; j < S; j += 32) ds[row * S + j] = p[j] * (g[j] - dot) * scale;
}
__global__ static void rows_dq_k(float *dq, const float *ds, const int *rows, int n, const float *k, int T, int S,
                                 int Hq, int Hkv, int hd) {
    const size_t total = (size_t)n * Hq * hd;
    const int G = Hq / Hkv;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % hd), h = (int)((idx / hd) % Hq), r = (int)(idx / ((size_t)hd * Hq));
        const int b = rows[r] / T, t = rows[r] % T, kh = h / G;
        const float *d = ds + ((size_t)r * Hq + h) * S;
        float acc = 0.0f;
        for (int j = 0; j < S; j++) acc += d[j] * k[(((size_t)b * S + j) * Hkv + kh) * hd + i];
        dq[(((size_t)b * T + t) * Hq + h) * hd + i] += acc;
    }
}
__global__ static void rows_dk_k(float *dk, const float *ds, const int *rows, int n, const float *q, int B, int T,
                                 int S, int Hq, int Hkv, int hd) {
    const size_t total = (size_t)B * S * Hkv * hd;
    const int G = Hq / Hkv;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % hd), kh = (int)((idx / hd) % Hkv), j = (int)((idx / ((size_t)hd * Hkv)) % S);
        const int b = (int)(idx / ((size_t)hd * Hkv * S));
        float acc = 0.0f;
        for (int r = 0; r < n; r++) {
            if (rows[r] / T != b) continue;
            const int t = rows[r] % T;
            for (int h = kh * G; h < (kh + 1) * G; h++)
                acc += ds[((size_t)r * Hq + h) * S + j] * q[(((size_t)b * T + t) * Hq + h) * hd + i];
        }
        dk[idx] += acc;
    }
}

void attention_rows_backward(float *dq, float *dk, const float *dprow, const float *prow, const int *rows, int n,
                             const float *q, const float *k, float scale, int B, int T, int S, int Hq, int Hkv, int hd) {
    if (n <= 0 || S <= 0 || (!dq && !dk)) return;
    const size_t nr = (size_t)n * Hq;
    float *ds = (float *)kc_workspace(KC_WS_TEMP, nr * S * sizeof(float));
    rows_ds_k<<<warp_rows_grid(nr), KC_BLOCK>>>(ds, dprow, prow, nr, S, scale);
    KC_LAUNCHED();
    if (dq) {
        rows_dq_k<<<kc_blocks(nr * hd), KC_BLOCK>>>(dq, ds, rows, n, k, T, S, Hq, Hkv, hd);
        KC_LAUNCHED();
    }
    if (dk) {
        rows_dk_k<<<kc_blocks((size_t)B * S * Hkv * hd), KC_BLOCK>>>(dk, ds, rows, n, q, B, T, S, Hq, Hkv, hd);
        KC_LAUNCHED();
    }
}
