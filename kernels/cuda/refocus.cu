/* kernels/cuda/refocus.cu — the refocusing mechanism (SPEC 2.5) for one [SEG].
 * The span is short (at most T), so the weights a_i are computed by a single
 * block into the temp workspace; the D-wide products run over many blocks. */
#include "kernels/cuda/common.cuh"

/* Row p's probabilities are arow[h * hs + i]: the full att[Hq,T,S] gives
 * arow = att + p*S, hs = T*S; a row set prow[Hq,S] gives arow = prow, hs = S. */

/* a[i] = P_i / Σ P over the span (0 when Σ P = 0), P_i = mean_h arow[h, s0+i];
 * *total = Σ P. Single block. */
__global__ static void refocus_weights_k(float *a, double *total, const float *arow, size_t hs, int s0, int span,
                                         int Hq) {
    double tot = 0.0;
    for (int i = threadIdx.x; i < span; i += blockDim.x) {
        double acc = 0.0;
        for (int h = 0; h < Hq; h++) acc += arow[(size_t)h * hs + s0 + i];
        const float P = (float)(acc / Hq);
        a[i] = P;
        tot += P;
    }
    tot = kc_block_sum(tot);
    for (int i = threadIdx.x; i < span; i += blockDim.x) a[i] = tot > 0.0 ? (float)(a[i] / tot) : 0.0f;
    if (threadIdx.x == 0) *total = tot;
}

/* out[d] = hid[p, d] + lambda Σ_i a_i hid[s0+i, d] */
__global__ static void refocus_out_k(float *out, const float *hid, const float *a, int p, int s0, int span,
                                     float lambda, int D) {
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < span; i++) acc += a[i] * hid[(size_t)(s0 + i) * D + d];
        out[d] = hid[(size_t)p * D + d] + lambda * acc;
    }
}

/* The span starts at max(s, 0); p must lie in [0, T) (the caller's to check). */
static void forward_rows(float *out, const float *hid, const float *arow, size_t hs, int p, int s, float lambda,
                         int T, int Hq, int D) {
    if (D <= 0 || p < 0 || p >= T) return;
    const int s0 = s > 0 ? s : 0, span = p > s0 ? p - s0 : 0;
    float *a = NULL;
    if (span > 0 && Hq > 0) { /* workspace: the total (one double), then a[span] */
        double *total = (double *)kc_workspace(KC_WS_TEMP, sizeof(double) + (size_t)span * sizeof(float));
        a = (float *)(total + 1);
        refocus_weights_k<<<1, KC_BLOCK>>>(a, total, arow, hs, s0, span, Hq);
        KC_LAUNCHED();
    }
    refocus_out_k<<<kc_blocks((size_t)D), KC_BLOCK>>>(out, hid, a, p, s0, a ? span : 0, lambda, D);
    KC_LAUNCHED();
}

/* e[i] = dout · hid[s0+i]: one warp per span position. */
__global__ static void refocus_dots_k(float *e, const float *dout, const float *hid, int s0, int span, int D) {
    const int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (i >= span) return; /* uniform per warp */
    const float *h = hid + (size_t)(s0 + i) * D;
    double acc = 0.0;
    for (int d = lane; d < D; d += 32) acc += (double)dout[d] * h[d];
    acc = kc_warp_sum(acc);
    if (lane == 0) e[i] = (float)acc;
}
/* darow[h, s0+i] += (1/Hq) lambda (e_i - Σ_j a_j e_j) / Σ P. Single block. */
__global__ static void refocus_datt_k(float *darow, size_t hs, const float *a, const float *e, const double *total,
                                      int s0, int span, float lambda, int Hq) {
    const double tot = *total;
    if (!(tot > 0.0)) return; /* uniform: zero total attention sends nothing back */
    double ae = 0.0; /* Σ_j a_j e_j */
    for (int i = threadIdx.x; i < span; i += blockDim.x) ae += (double)a[i] * e[i];
    ae = kc_block_sum(ae);
    for (int i = threadIdx.x; i < span; i += blockDim.x) {
        const float dP = (float)(lambda * ((double)e[i] - ae) / tot) / (float)Hq;
        for (int h = 0; h < Hq; h++) darow[(size_t)h * hs + s0 + i] += dP;
    }
}
/* dhid[s0+r] += lambda a_r dout for r < span; dhid[p] += dout. */
__global__ static void refocus_dhid_k(float *dhid, const float *dout, const float *a, int p, int s0, int span,
                                      float lambda, int D) {
    const size_t total = (size_t)(span + 1) * D;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(idx / D), d = (int)(idx % D);
        if (r < span) dhid[(size_t)(s0 + r) * D + d] += lambda * a[r] * dout[d];
        else dhid[(size_t)p * D + d] += dout[d];
    }
}

static void backward_rows(float *dhid, float *darow, const float *dout, const float *hid, const float *arow, size_t hs,
                          int p, int s, float lambda, int T, int Hq, int D) {
    if (D <= 0 || p < 0 || p >= T) return;
    const int s0 = s > 0 ? s : 0;
    const int span = (p > s0 && Hq > 0) ? p - s0 : 0;
    float *a = NULL, *e = NULL;
    double *total = NULL;
    if (span > 0) { /* workspace: the total (one double), then a[span], e[span] */
        total = (double *)kc_workspace(KC_WS_TEMP, sizeof(double) + 2 * (size_t)span * sizeof(float));
        a = (float *)(total + 1);
        e = a + span;
        refocus_weights_k<<<1, KC_BLOCK>>>(a, total, arow, hs, s0, span, Hq);
        KC_LAUNCHED();
    }
    if (dhid) {
        refocus_dhid_k<<<kc_blocks((size_t)(span + 1) * D), KC_BLOCK>>>(dhid, dout, a, p, s0, span, lambda, D);
        KC_LAUNCHED();
    }
    if (darow && span > 0) {
        const int warps = KC_BLOCK / 32;
        refocus_dots_k<<<(span + warps - 1) / warps, KC_BLOCK>>>(e, dout, hid, s0, span, D);
        KC_LAUNCHED();
        refocus_datt_k<<<1, KC_BLOCK>>>(darow, hs, a, e, total, s0, span, lambda, Hq);
        KC_LAUNCHED();
    }
}

void refocus_forward(float *out, const float *hid, const float *att, int p, int s,
                     float lambda, int T, int S, int Hq, int D) {
    forward_rows(out, hid, att ? att + (size_t)p * S : NULL, (size_t)T * S, p, s, lambda, T, Hq, D);
}
void refocus_backward(float *dhid, float *datt, const float *dout, const float *hid,
                      const float *att, int p, int s, float lambda, int T, int S, int Hq, int D) {
    backward_rows(dhid, datt ? datt + (size_t)p * S : NULL, dout, hid, att ? att + (size_t)p * S : NULL,
                  (size_t)T * S, p, s, lambda, T, Hq, D);
}
void refocus_row_forward(float *out, const float *hid, const float *prow, int p, int s, float lambda, int T, int S,
                         int Hq, int D) {
    forward_rows(out, hid, prow, (size_t)S, p, s, lambda, T, Hq, D);
}
void refocus_row_backward(float *dhid, float *dprow, const float *dout, const float *hid, const float *prow, int p,
                          int s, float lambda, int T, int S, int Hq, int D) {
    backward_rows(dhid, dprow, dout, hid, prow, (size_t)S, p, s, lambda, T, Hq, D);
}
