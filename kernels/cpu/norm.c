/* kernels/cpu/norm.c — RMSNorm and LayerNorm over the last dimension.
 * Statistics are accumulated in double for stability at D = 4096. */
#include "kernels/kernels.h"
#include <math.h>

void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, float eps, int N, int D) {
    #pragma omp parallel for if ((long)N * D > 16384)
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * D;
        float *o = out + (size_t)n * D;
        double ss = 0.0;
        #pragma omp simd reduction(+:ss)
        for (int d = 0; d < D; d++) ss += (double)x[d] * x[d];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        rstd[n] = r;
        #pragma omp simd
        for (int d = 0; d < D; d++) o[d] = x[d] * r * w[d];
    }
}

/* y = x r w, r = (mean x^2 + eps)^-1/2:
 * dx = r (g w) - x r^3/D Σ (g w x);  dw += Σ_n g x r */
void rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                      const float *rstd, int N, int D) {
    if (din) {
        #pragma omp parallel for if ((long)N * D > 16384)
        for (int n = 0; n < N; n++) {
            const float *x = in + (size_t)n * D, *g = dout + (size_t)n * D;
            float *dx = din + (size_t)n * D;
            float r = rstd[n];
            double dot = 0.0;
            #pragma omp simd reduction(+:dot)
            for (int d = 0; d < D; d++) dot += (double)g[d] * w[d] * x[d];
            float c = (float)(dot * r * r * r / D);
            #pragma omp simd
            for (int d = 0; d < D; d++) dx[d] += r * g[d] * w[d] - c * x[d];
        }
    }
    if (dw) {
        #pragma omp parallel for if ((long)N * D > 16384)
        for (int d0 = 0; d0 < D; d0 += 256) {
            int d1 = d0 + 256 < D ? d0 + 256 : D;
            float acc[256] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = in + (size_t)n * D, *g = dout + (size_t)n * D;
                float r = rstd[n];
                for (int d = d0; d < d1; d++) acc[d - d0] += g[d] * x[d] * r;
            }
            for (int d = d0; d < d1; d++) dw[d] += acc[d - d0];
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                       const float *b, float eps, int N, int D) {
    #pragma omp parallel for if ((long)N * D > 16384)
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * D;
        float *o = out + (size_t)n * D;
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int d = 0; d < D; d++) s += x[d];
        double mu = s / D, v = 0.0;
        #pragma omp simd reduction(+:v)
        for (int d = 0; d < D; d++) { double t = x[d] - mu; v += t * t; }
        float r = (float)(1.0 / sqrt(v / D + eps)), m = (float)mu;
        mean[n] = m; rstd[n] = r;
        if (w && b) {
            #pragma omp simd
            for (int d = 0; d < D; d++) o[d] = (x[d] - m) * r * w[d] + b[d];
        } else {
            for (int d = 0; d < D; d++) o[d] = (x[d] - m) * r * (w ? w[d] : 1.0f) + (b ? b[d] : 0.0f);
        }
    }
}

/* xh = (x-m) r, gh = g w: dx = r (gh - mean(gh) - xh mean(gh xh)) */
void layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const float *mean, const float *rstd, int N, int D) {
    if (din) {
        #pragma omp parallel for if ((long)N * D > 16384)
        for (int n = 0; n < N; n++) {
            const float *x = in + (size_t)n * D, *g = dout + (size_t)n * D;
            float *dx = din + (size_t)n * D;
            float m = mean[n], r = rstd[n];
            double sg = 0.0, sgx = 0.0;
            #pragma omp simd reduction(+:sg, sgx)
            for (int d = 0; d < D; d++) {
                double gh = (double)g[d] * (w ? w[d] : 1.0f);
                sg += gh; sgx += gh * (x[d] - m) * r;
            }
            float mg = (float)(sg / D), mgx = (float)(sgx / D);
            #pragma omp simd
            for (int d = 0; d < D; d++) {
                float gh = g[d] * (w ? w[d] : 1.0f);
                dx[d] += r * (gh - mg - (x[d] - m) * r * mgx);
            }
        }
    }
    if (dw || db) {
        #pragma omp parallel for if ((long)N * D > 16384)
        for (int d0 = 0; d0 < D; d0 += 256) {
            int d1 = d0 + 256 < D ? d0 + 256 : D;
            float aw[256] = {0}, ab[256] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = in + (size_t)n * D, *g = dout + (size_t)n * D;
                float m = mean[n], r = rstd[n];
                for (int d = d0; d < d1; d++) { aw[d - d0] += g[d] * (x[d] - m) * r; ab[d - d0] += g[d]; }
            }
            for (int d = d0; d < d1; d++) { if (dw) dw[d] += aw[d - d0]; if (db) db[d] += ab[d - d0]; }
        }
    }
}
