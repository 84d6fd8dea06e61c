/* kernels/cuda/elementwise.cu — activations, residual add, axpy and the
 * optimiser primitives (sumsq, scale_inplace, adamw_update). One grid-stride
 * loop per function; backward accumulates into d* and skips NULL gradients. */
#include "kernels/cuda/common.cuh"
#include <math.h>

#define KC_FOR(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
#define KC_RUN(kernel, n, ...)                                       \
    do {                                                             \
        if ((n) == 0) return;                                        \
        kernel<<<kc_blocks(n), KC_BLOCK>>>(__VA_ARGS__);             \
        KC_LAUNCHED();                                               \
    } while (0)

/* ---- SiLU: x σ(x); d/dx = σ (1 + x (1-σ)) ---------------------------------- */
__global__ static void silu_fwd_k(float *out, const float *in, size_t n) {
    KC_FOR(i, n) { float x = in[i]; out[i] = x * kc_sigmoid(x); }
}
__global__ static void silu_bwd_k(float *din, const float *dout, const float *in, size_t n) {
    KC_FOR(i, n) {
        float x = in[i], s = kc_sigmoid(x);
        din[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}
void silu_forward(float *out, const float *in, size_t n) { KC_RUN(silu_fwd_k, n, out, in, n); }
void silu_backward(float *din, const float *dout, const float *in, size_t n) {
    if (!din) return;
    KC_RUN(silu_bwd_k, n, din, dout, in, n);
}

/* ---- GELU (exact): x Φ(x); d/dx = Φ(x) + x φ(x) ---------------------------- */
__global__ static void gelu_fwd_k(float *out, const float *in, size_t n) {
    KC_FOR(i, n) { float x = in[i]; out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
}
__global__ static void gelu_bwd_k(float *din, const float *dout, const float *in, size_t n) {
    KC_FOR(i, n) {
        float x = in[i];
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        din[i] += dout[i] * (cdf + x * pdf);
    }
}
void gelu_forward(float *out, const float *in, size_t n) { KC_RUN(gelu_fwd_k, n, out, in, n); }
void gelu_backward(float *din, const float *dout, const float *in, size_t n) {
    if (!din) return;
    KC_RUN(gelu_bwd_k, n, din, dout, in, n);
}

/* ---- QuickGELU: x σ(1.702x); d/dx = σ + 1.702 x σ (1-σ) ------------------ */
__global__ static void qgelu_fwd_k(float *out, const float *in, size_t n) {
    KC_FOR(i, n) { float x = in[i]; out[i] = x * kc_sigmoid(1.702f * x); }
}
__global__ static void qgelu_bwd_k(float *din, const float *dout, const float *in, size_t n) {
    KC_FOR(i, n) {
        float x = in[i], s = kc_sigmoid(1.702f * x);
        din[i] += dout[i] * (s + 1.702f * x * s * (1.0f - s));
    }
}
void quick_gelu_forward(float *out, const float *in, size_t n) { KC_RUN(qgelu_fwd_k, n, out, in, n); }
void quick_gelu_backward(float *din, const float *dout, const float *in, size_t n) {
    if (!din) return;
    KC_RUN(qgelu_bwd_k, n, din, dout, in, n);
}

/* ---- ReLU ------------------------------------------------------------------ */
__global__ static void relu_fwd_k(float *out, const float *in, size_t n) {
    KC_FOR(i, n) { float x = in[i]; out[i] = x > 0.0f ? x : 0.0f; }
}
__global__ static void relu_bwd_k(float *din, const float *dout, const float *in, size_t n) {
    KC_FOR(i, n) { if (in[i] > 0.0f) din[i] += dout[i]; }
}
void relu_forward(float *out, const float *in, size_t n) { KC_RUN(relu_fwd_k, n, out, in, n); }
void relu_backward(float *din, const float *dout, const float *in, size_t n) {
    if (!din) return;
    KC_RUN(relu_bwd_k, n, din, dout, in, n);
}

/* ---- SwiGLU: out = silu(gate) * up ---------------------------------------- */
__global__ static void swiglu_fwd_k(float *out, const float *gate, const float *up, size_t n) {
    KC_FOR(i, n) { float g = gate[i]; out[i] = g * kc_sigmoid(g) * up[i]; }
}
__global__ static void swiglu_bwd_k(float *dgate, float *dup, const float *dout, const float *gate,
                                    const float *up, size_t n) {
    KC_FOR(i, n) {
        float g = gate[i], s = kc_sigmoid(g), d = dout[i];
        if (dgate) dgate[i] += d * up[i] * s * (1.0f + g * (1.0f - s));
        if (dup) dup[i] += d * g * s;
    }
}
void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    KC_RUN(swiglu_fwd_k, n, out, gate, up, n);
}
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    if (!dgate && !dup) return;
    KC_RUN(swiglu_bwd_k, n, dgate, dup, dout, gate, up, n);
}

/* ---- residual add, axpy, scale -------------------------------------------- */
__global__ static void add_fwd_k(float *out, const float *a, const float *b, size_t n) {
    KC_FOR(i, n) out[i] = a[i] + b[i];
}
__global__ static void add_bwd_k(float *da, float *db, const float *dout, size_t n) {
    KC_FOR(i, n) {
        float g = dout[i];
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}
void add_forward(float *out, const float *a, const float *b, size_t n) { KC_RUN(add_fwd_k, n, out, a, b, n); }
void add_backward(float *da, float *db, const float *dout, size_t n) {
    if (!da && !db) return;
    KC_RUN(add_bwd_k, n, da, db, dout, n);
}

__global__ static void axpy_k(float *y, const float *x, float alpha, size_t n) {
    KC_FOR(i, n) y[i] += alpha * x[i];
}
void axpy(float *y, const float *x, float alpha, size_t n) {
    if (!y) return;
    KC_RUN(axpy_k, n, y, x, alpha, n);
}

__global__ static void scale_k(float *x, float s, size_t n) {
    KC_FOR(i, n) x[i] *= s;
}
void scale_inplace(float *x, float s, size_t n) { KC_RUN(scale_k, n, x, s, n); }

/* ---- optimiser --------------------------------------------------------------- */
struct SumsqOp {
    const float *x;
    __device__ void operator()(size_t i, double *v) const { double t = x[i]; v[0] = t * t; }
};
double sumsq(const float *x, size_t n) {
    if (n == 0) return 0.0;
    double *d = kc_reduce_sums<1>(n, SumsqOp{x});
    double h = 0.0;
    KC_CUDA(cudaMemcpy(&h, d, sizeof(double), cudaMemcpyDeviceToHost));
    return h;
}

/* torch.optim.AdamW (non-amsgrad): p *= 1 - lr wd; m, v moments;
 * p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), constants as kernels/cpu computes them. */
__global__ static void adamw_k(float *param, const float *grad, float *m, float *v, size_t n,
                               float b1, float b2, float eps, float decay,
                               float step_size, float rbc2) {
    KC_FOR(i, n) {
        float g = grad[i];
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = param[i] * decay;
        param[i] = p - step_size * mi / (sqrtf(vi) * rbc2 + eps);
    }
}
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
    if (n == 0) return;
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    const float decay = 1.0f - lr * weight_decay, step_size = lr / bc1, rbc2 = 1.0f / sqrtf(bc2);
    adamw_k<<<kc_blocks(n), KC_BLOCK>>>(param, grad, m, v, n, beta1, beta2, eps, decay,
                                         step_size, rbc2);
    KC_LAUNCHED();
}
