/* kernels/cuda/norm.cu — RMSNorm, LayerNorm, LayerNorm2d and row softmax.
 * Row statistics are reduced in double (one block per row) like the CPU
 * backend; weight/bias gradients use the deterministic column reduction. */
#include "kernels/cuda/common.cuh"
#include <math.h>

/* ---- RMSNorm ------------------------------------------------------------- */
__global__ static void rmsnorm_fwd_k(float *out, float *rstd, const float *in, const float *w, float eps, int D) {
    const size_t row = blockIdx.x;
    const float *x = in + row * D;
    float *o = out + row * D;
    double ss = 0.0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) ss += (double)x[d] * x[d];
    ss = kc_block_sum(ss);
    const float r = (float)(1.0 / sqrt(ss / D + eps));
    if (threadIdx.x == 0 && rstd) rstd[row] = r;
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = x[d] * r * w[d];
}
void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, float eps, int N, int D) {
    if (N <= 0 || D <= 0) return;
    rmsnorm_fwd_k<<<N, KC_BLOCK>>>(out, rstd, in, w, eps, D);
    KC_LAUNCHED();
}

/* y = x r w, r = (mean x^2 + eps)^-1/2:
 * dx = r (g w) - x r^3/D Σ (g w x);  dw += Σ_n g x r */
__global__ static void rmsnorm_bwd_din_k(float *din, const float *dout, const float *in, const float *w,
                                         const float *rstd, int D) {
    const size_t row = blockIdx.x;
    const float *x = in + row * D, *g = dout + row * D;
    float *dx = din + row * D;
    const float r = rstd[row];
    double dot = 0.0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) dot += (double)g[d] * w[d] * x[d];
    dot = kc_block_sum(dot);
    const float c = (float)(dot * r * r * r / D);
    for (int d = threadIdx.x; d < D; d += blockDim.x) dx[d] += r * g[d] * w[d] - c * x[d];
}
struct RmsDwOp {
    const float *g, *x, *rstd;
    int D;
    __device__ float operator()(int n, int d) const {
        size_t i = (size_t)n * D + d;
        return g[i] * x[i] * rstd[n];
    }
};
void rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                      const float *rstd, int N, int D) {
    if (N <= 0 || D <= 0) return;
    if (din) {
        rmsnorm_bwd_din_k<<<N, KC_BLOCK>>>(din, dout, in, w, rstd, D);
        KC_LAUNCHED();
    }
    if (dw) kc_colreduce_acc(dw, N, D, RmsDwOp{dout, in, rstd, D});
}

/* ---- LayerNorm over the last dim ------------------------------------------- */
__global__ static void layernorm_fwd_k(float *out, float *mean, float *rstd, const float *in, const float *w,
                                       const float *b, float eps, int D) {
    const size_t row = blockIdx.x;
    const float *x = in + row * D;
    float *o = out + row * D;
    double s = 0.0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) s += x[d];
    const double mu = kc_block_sum(s) / D;
    double v = 0.0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) { double t = x[d] - mu; v += t * t; }
    v = kc_block_sum(v);
    const float r = (float)(1.0 / sqrt(v / D + eps)), m = (float)mu;
    if (threadIdx.x == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float xh = (x[d] - m) * r;
        o[d] = xh * (w ? w[d] : 1.0f) + (b ? b[d] : 0.0f);
    }
}
void layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                       const float *b, float eps, int N, int D) {
    if (N <= 0 || D <= 0) return;
    layernorm_fwd_k<<<N, KC_BLOCK>>>(out, mean, rstd, in, w, b, eps, D);
    KC_LAUNCHED();
}

/* xh = (x-m) r, gh = g w: dx = r (gh - mean(gh) - xh mean(gh xh)) */
__global__ static void layernorm_bwd_din_k(float *din, const float *dout, const float *in, const float *w,
                                           const float *mean, const float *rstd, int D) {
    const size_t row = blockIdx.x;
    const float *x = in + row * D, *g = dout + row * D;
    float *dx = din + row * D;
    const float m = mean[row], r = rstd[row];
    double sg = 0.0, sgx = 0.0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        double gh = (double)g[d] * (w ? w[d] : 1.0f);
        sg += gh;
        sgx += gh * (x[d] - m) * r;
    }
    sg = kc_block_sum(sg);
    sgx = kc_block_sum(sgx);
    const float mg = (float)(sg / D), mgx = (float)(sgx / D);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float gh = g[d] * (w ? w[d] : 1.0f);
        dx[d] += r * (gh - mg - (x[d] - m) * r * mgx);
    }
}
struct LnDwOp {
    const float *g, *x, *mean, *rstd;
    int D;
    __device__ float operator()(int n, int d) const {
        size_t i = (size_t)n * D + d;
        return g[i] * (x[i] - mean[n]) * rstd[n];
    }
};
void layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const float *mean, const float *rstd, int N, int D) {
    if (N <= 0 || D <= 0) return;
    if (din) {
        layernorm_bwd_din_k<<<N, KC_BLOCK>>>(din, dout, in, w, mean, rstd, D);
        KC_LAUNCHED();
    }
    if (dw) kc_colreduce_acc(dw, N, D, LnDwOp{dout, in, mean, rstd, D});
    if (db) kc_colsum_acc(db, dout, N, D);
}

/* ---- LayerNorm2d: in[B,C,HW], normalised over C at each pixel --------------
 * One thread per (b, pixel): neighbouring threads read neighbouring pixels of
 * the same channel, so the strided walk over C stays coalesced. */
__global__ static void layernorm2d_fwd_k(float *out, float *mean, float *rstd, const float *in, const float *w,
                                         const float *b, float eps, int B, int C, int HW) {
    const size_t total = (size_t)B * HW;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t bi = i / HW, p = i % HW;
        const float *x = in + bi * C * HW + p;
        float *o = out + bi * C * HW + p;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[(size_t)c * HW];
        const double mu = s / C;
        double v = 0.0;
        for (int c = 0; c < C; c++) { double t = x[(size_t)c * HW] - mu; v += t * t; }
        const float r = (float)(1.0 / sqrt(v / C + eps)), m = (float)mu;
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = r;
        for (int c = 0; c < C; c++) {
            float xh = (x[(size_t)c * HW] - m) * r;
            o[(size_t)c * HW] = xh * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
        }
    }
}
void layernorm2d_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, float eps, int B, int C, int HW) {
    if (B <= 0 || C <= 0 || HW <= 0) return;
    layernorm2d_fwd_k<<<kc_blocks((size_t)B * HW), KC_BLOCK>>>(out, mean, rstd, in, w, b, eps, B, C, HW);
    KC_LAUNCHED();
}

__global__ static void layernorm2d_bwd_din_k(float *din, const float *dout, const float *in, const float *w,
                                             const float *mean, const float *rstd, int B, int C, int HW) {
    const size_t total = (size_t)B * HW;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t bi = i / HW, p = i % HW, off = bi * C * HW + p;
        const float *x = in + off, *g = dout + off;
        float *dx = din + off;
        const float m = mean[i], r = rstd[i];
        double sg = 0.0, sgx = 0.0;
        for (int c = 0; c < C; c++) {
            size_t j = (size_t)c * HW;
            double gh = (double)g[j] * (w ? w[c] : 1.0f);
            sg += gh;
            sgx += gh * (x[j] - m) * r;
        }
        const float mg = (float)(sg / C), mgx = (float)(sgx / C);
        for (int c = 0; c < C; c++) {
            size_t j = (size_t)c * HW;
            float gh = g[j] * (w ? w[c] : 1.0f);
            dx[j] += r * (gh - mg - (x[j] - m) * r * mgx);
        }
    }
}
/* dw[c] += Σ_{b,p} g (x-m) r : one block per channel. */
__global__ static void layernorm2d_bwd_dw_k(float *dw, const float *dout, const float *in,
                                            const float *mean, const float *rstd, int B, int C, int HW) {
    const int c = blockIdx.x;
    float s = 0.0f;
    for (int bi = 0; bi < B; bi++) {
        const size_t off = ((size_t)bi * C + c) * HW;
        const float *ms = mean + (size_t)bi * HW, *rs = rstd + (size_t)bi * HW;
        for (int p = threadIdx.x; p < HW; p += blockDim.x) s += dout[off + p] * (in[off + p] - ms[p]) * rs[p];
    }
    s = kc_block_sum(s);
    if (threadIdx.x == 0) dw[c] += s;
}
void layernorm2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, const float *mean, const float *rstd, int B, int C, int HW) {
    if (B <= 0 || C <= 0 || HW <= 0) return;
    if (din) {
        layernorm2d_bwd_din_k<<<kc_blocks((size_t)B * HW), KC_BLOCK>>>(din, dout, in, w, mean, rstd, B, C, HW);
        KC_LAUNCHED();
    }
    if (dw) {
        layernorm2d_bwd_dw_k<<<C, KC_BLOCK>>>(dw, dout, in, mean, rstd, B, C, HW);
        KC_LAUNCHED();
    }
    if (db) kc_chansum_acc(db, dout, B, C, (size_t)HW);
}

/* ---- row softmax: one warp per row ---------------------------------------- */
enum { WARPS_PER_BLOCK = KC_BLOCK / 32 };
__global__ static void softmax_fwd_k(float *out, const float *in, int N, int C) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)N) return; /* uniform per warp */
    const float *x = in + row * C;
    float *o = out + row * C;
    float m = -INFINITY;
    for (int j = lane; j < C; j += 32) m = fmaxf(m, x[j]);
    m = kc_warp_max(m);
    float s = 0.0f;
    for (int j = lane; j < C; j += 32) s += expf(x[j] - m);
    s = kc_warp_sum(s);
    const float inv = 1.0f / s;
    for (int j = lane; j < C; j += 32) o[j] = expf(x[j] - m) * inv;
}
void softmax_forward(float *out, const float *in, int N, int C) {
    if (N <= 0 || C <= 0) return;
    softmax_fwd_k<<<(unsigned)(((size_t)N + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK), KC_BLOCK>>>(out, in, N, C);
    KC_LAUNCHED();
}

__global__ static void softmax_bwd_k(float *din, const float *dout, const float *out, int N, int C) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)N) return;
    const float *g = dout + row * C, *y = out + row * C;
    float *dx = din + row * C;
    float dot = 0.0f;
    for (int j = lane; j < C; j += 32) dot += g[j] * y[j];
    dot = kc_warp_sum(dot);
    for (int j = lane; j < C; j += 32) dx[j] += y[j] * (g[j] - dot);
}
void softmax_backward(float *din, const float *dout, const float *out, int N, int C) {
    if (!din || N <= 0 || C <= 0) return;
    softmax_bwd_k<<<(unsigned)(((size_t)N + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK), KC_BLOCK>>>(din, dout, out, N, C);
    KC_LAUNCHED();
}
