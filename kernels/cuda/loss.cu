/* kernels/cuda/loss.cu — fused softmax cross-entropy, BCE with logits, Dice.
 * Forward losses reduce on the device in double (deterministically) and copy
 * the scalar back; backward reads any saved sums from device memory, so it
 * does not wait for the device. */
#include "kernels/cuda/common.cuh"
#include <math.h>

/* ---- softmax cross-entropy: one block per row ------------------------------ */
__global__ static void xent_fwd_k(float *lse, double *rowloss, const float *logits, const int *targets,
                                  int V, int ignore_index) {
    const size_t row = blockIdx.x;
    const float *x = logits + row * V;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, x[j]);
    m = kc_block_max(m);
    double s = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(x[j] - m);
    s = kc_block_sum(s);
    if (threadIdx.x == 0) {
        const float l = m + (float)log(s);
        if (lse) lse[row] = l;
        const int t = targets[row];
        /* targets outside [0,V) are the caller's to reject; never read out of bounds */
        rowloss[row] = (t != ignore_index && t >= 0 && t < V) ? (double)l - (double)x[t] : 0.0;
    }
}
struct XentSumOp {
    const double *rowloss;
    const int *targets;
    int V, ignore_index;
    __device__ void operator()(size_t i, double *v) const {
        const int t = targets[i];
        const bool counted = t != ignore_index && t >= 0 && t < V;
        v[0] = rowloss[i];
        v[1] = counted ? 1.0 : 0.0;
    }
};
float softmax_xent_forward(float *lse, int *count, const float *logits, const int *targets,
                           int N, int V, int ignore_index) {
    if (count) *count = 0;
    if (N <= 0 || V <= 0) return 0.0f;
    double *rowloss = (double *)kc_workspace(KC_WS_TEMP, (size_t)N * sizeof(double));
    xent_fwd_k<<<N, KC_BLOCK>>>(lse, rowloss, logits, targets, V, ignore_index);
    KC_LAUNCHED();
    double *d = kc_reduce_sums<2>((size_t)N, XentSumOp{rowloss, targets, V, ignore_index});
    double h[2];
    KC_CUDA(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    const int cnt = (int)(h[1] + 0.5);
    if (count) *count = cnt;
    return cnt > 0 ? (float)(h[0] / cnt) : 0.0f;
}

/* dlogits[n] += dloss/count * (softmax(logits[n]) - onehot(targets[n])) */
__global__ static void xent_bwd_k(float *dlogits, const float *logits, const float *lse, const int *targets,
                                  float c, int N, int V, int ignore_index) {
    const size_t total = (size_t)N * V;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / V;
        const int j = (int)(i % V), t = targets[row];
        if (t == ignore_index || t < 0 || t >= V) continue;
        const float p = expf(logits[i] - lse[row]);
        dlogits[i] += c * (p - (j == t ? 1.0f : 0.0f));
    }
}
void softmax_xent_backward(float *dlogits, const float *logits, const float *lse,
                           const int *targets, float dloss, int count,
                           int N, int V, int ignore_index) {
    if (!dlogits || count <= 0 || N <= 0 || V <= 0) return;
    const float c = dloss / (float)count;
    xent_bwd_k<<<kc_blocks((size_t)N * V), KC_BLOCK>>>(dlogits, logits, lse, targets, c, N, V, ignore_index);
    KC_LAUNCHED();
}

/* ---- BCE with logits: mean(softplus(x) - x y) -------------------------------- */
struct BceOp {
    const float *x, *y;
    __device__ void operator()(size_t i, double *v) const {
        const float xi = x[i];
        /* softplus(x) = max(x,0) + log1p(exp(-|x|)), stable for large |x| */
        v[0] = (double)fmaxf(xi, 0.0f) + (double)log1pf(expf(-fabsf(xi))) - (double)xi * y[i];
    }
};
float bce_logits_forward(const float *x, const float *y, size_t n) {
    if (n == 0) return 0.0f;
    double *d = kc_reduce_sums<1>(n, BceOp{x, y});
    double h = 0.0;
    KC_CUDA(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost));
    return (float)(h / (double)n);
}
__global__ static void bce_bwd_k(float *dx, const float *x, const float *y, float c, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] += c * (kc_sigmoid(x[i]) - y[i]);
}
void bce_logits_backward(float *dx, const float *x, const float *y, float dloss, size_t n) {
    if (!dx || n == 0) return;
    bce_bwd_k<<<kc_blocks(n), KC_BLOCK>>>(dx, x, y, dloss / (float)n, n);
    KC_LAUNCHED();
}

/* ---- Dice: 1 - (2 Σσ(x)y + s) / (Σσ(x) + Σy + s), s = DICE_SMOOTH ------------ */
struct DiceOp {
    const float *x, *y;
    __device__ void operator()(size_t i, double *v) const {
        const double s = 1.0 / (1.0 + exp(-(double)x[i])), yi = y[i];
        v[0] = s * yi; /* intersection */
        v[1] = s;
        v[2] = yi;
    }
};
float dice_forward(const float *x, const float *y, size_t n) {
    if (n == 0) return 0.0f; /* (0 + s) / (0 + 0 + s) = 1 */
    double *d = kc_reduce_sums<3>(n, DiceOp{x, y});
    double h[3];
    KC_CUDA(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    return (float)(1.0 - (2.0 * h[0] + DICE_SMOOTH) / (h[1] + h[2] + DICE_SMOOTH));
}
/* L = 1 - num/den, num = 2I+1, den = Sσ+Sy+1:
 * dL/dσ_i = -2 y_i / den + num / den^2;  dσ/dx = σ(1-σ). sums[3] is on the device. */
__global__ static void dice_bwd_k(float *dx, const float *x, const float *y, const double *sums,
                                  float dloss, size_t n) {
    const double num = 2.0 * sums[0] + DICE_SMOOTH, den = sums[1] + sums[2] + DICE_SMOOTH;
    const float a = (float)(-2.0 * dloss / den), b = (float)(dloss * num / (den * den));
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float s = kc_sigmoid(x[i]);
        dx[i] += (a * y[i] + b) * s * (1.0f - s);
    }
}
void dice_backward(float *dx, const float *x, const float *y, float dloss, size_t n) {
    if (!dx || n == 0) return;
    const double *sums = kc_reduce_sums<3>(n, DiceOp{x, y});
    dice_bwd_k<<<kc_blocks(n), KC_BLOCK>>>(dx, x, y, sums, dloss, n);
    KC_LAUNCHED();
}
