/* kernels/cpu/elementwise.c — activations, residual add, and the optimiser
 * primitives (sum of squares, scaling, AdamW). */
#include "kernels/kernels.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/vmath.h"
#include <math.h>

#define PAR _Pragma("omp parallel for simd if (n > 32768)")

static inline float sigm(float x) { return vsigmoidf(x); }

void silu_forward(float *out, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = in[i] * sigm(in[i]);
}
/* d/dx x σ(x) = σ(x) (1 + x (1 - σ(x))) */
void silu_backward(float *din, const float *dout, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) {
        float s = sigm(in[i]);
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

void gelu_forward(float *out, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = 0.5f * in[i] * (1.0f + verff(in[i] * (float)M_SQRT1_2));
}
/* d/dx x Φ(x) = Φ(x) + x φ(x) */
void gelu_backward(float *din, const float *dout, const float *in, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
    PAR for (size_t i = 0; i < n; i++) {
        float x = in[i];
        float cdf = 0.5f * (1.0f + verff(x * (float)M_SQRT1_2));
        din[i] += dout[i] * (cdf + x * inv_sqrt_2pi * vexpf(-0.5f * x * x));
    }
}

void quick_gelu_forward(float *out, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = in[i] * sigm(1.702f * in[i]);
}
void quick_gelu_backward(float *din, const float *dout, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) {
        float s = sigm(1.702f * in[i]);
        din[i] += dout[i] * s * (1.0f + 1.702f * in[i] * (1.0f - s));
    }
}

void relu_forward(float *out, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}
/* PyTorch convention: the gradient at exactly 0 is 0. */
void relu_backward(float *din, const float *dout, const float *in, size_t n) {
    PAR for (size_t i = 0; i < n; i++) din[i] += in[i] > 0.0f ? dout[i] : 0.0f;
}

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigm(gate[i]) * up[i];
}
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    PAR for (size_t i = 0; i < n; i++) {
        float s = sigm(gate[i]);
        if (dgate) dgate[i] += dout[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
        if (dup)   dup[i]   += dout[i] * gate[i] * s;
    }
}

void add_forward(float *out, const float *a, const float *b, size_t n) {
    PAR for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
void add_backward(float *da, float *db, const float *dout, size_t n) {
    if (da && db) {
        PAR for (size_t i = 0; i < n; i++) { da[i] += dout[i]; db[i] += dout[i]; }
    } else if (da || db) {
        axpy(da ? da : db, dout, 1.0f, n);
    }
}
void axpy(float *y, const float *x, float alpha, size_t n) {
    PAR for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

/* Deterministic for every thread count (reduce.h): gradient clipping depends on it. */
double sumsq(const float *x, size_t n) {
    if (n == 0) return 0.0;
    const size_t cs = det_chunk_size(n), nc = (n + cs - 1) / cs;
    double part[DET_CHUNKS];
    #pragma omp parallel for if (n > 32768)
    for (size_t k = 0; k < nc; k++) {
        size_t end = (k + 1) * cs < n ? (k + 1) * cs : n;
        double t = 0.0;
        for (size_t b = k * cs; b < end; b += DET_BLOCK) {
            size_t e = b + DET_BLOCK < end ? b + DET_BLOCK : end;
            double s = 0.0;
            #pragma omp simd reduction(+:s)
            for (size_t i = b; i < e; i++) s += (double)x[i] * x[i];
            t += s;
        }
        part[k] = t;
    }
    return det_add(part, nc);
}
void scale_inplace(float *x, float s, size_t n) {
    PAR for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* torch.optim.AdamW: p *= 1 - lr wd; m,v moments; p -= lr m̂ / (sqrt(v̂) + eps) */
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    const float decay = 1.0f - lr * weight_decay, step = lr / bc1, rbc2 = 1.0f / sqrtf(bc2);
    PAR for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        param[i] = param[i] * decay - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}
