/* kernels/cpu/loss.c — fused softmax cross-entropy, BCE with logits, Dice (SPEC 2.9).
 * Reductions accumulate in double (vectorised lanes of double partial sums),
 * so long rows and full-resolution masks stay accurate whether or not the
 * compiler vectorises the loop (float partial sums over 1024 elements were
 * off by 1e-5 relative when it did not, as under the sanitizers); sums across
 * threads go through reduce.h, so every value is bitwise reproducible
 * whatever the thread count. */
#include "kernels/kernels.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/vmath.h"
#include <math.h>

static float row_max(const float *x, int V) {
    float mx = -INFINITY;
    #pragma omp simd reduction(max:mx)
    for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

float softmax_xent_forward(float *lse, int *count, const float *logits, const int *targets,
                           int N, int V, int ignore_index) {
    #pragma omp parallel for if ((long)N * V > 65536)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float mx = row_max(x, V);
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int j = 0; j < V; j++) s += (double)vexpf(x[j] - mx);
        lse[n] = mx + (float)log(s);
    }
    double total = 0.0;   /* in row order: deterministic */
    int cnt = 0;
    for (int n = 0; n < N; n++)
        if (targets[n] != ignore_index) { total += (double)lse[n] - logits[(size_t)n * V + targets[n]]; cnt++; }
    if (count) *count = cnt;
    return cnt ? (float)(total / cnt) : 0.0f;
}

void softmax_xent_backward(float *dlogits, const float *logits, const float *lse,
                           const int *targets, float dloss, int count,
                           int N, int V, int ignore_index) {
    if (count <= 0) return;
    const float c = dloss / (float)count;
    #pragma omp parallel for if ((long)N * V > 65536)
    for (int n = 0; n < N; n++) {
        if (targets[n] == ignore_index) continue;
        const float *x = logits + (size_t)n * V;
        float *dx = dlogits + (size_t)n * V;
        float l = lse[n];
        #pragma omp simd
        for (int j = 0; j < V; j++) dx[j] += c * vexpf(x[j] - l);
        dx[targets[n]] -= c;
    }
}

/* mean(softplus(x) - x y) */
float bce_logits_forward(const float *x, const float *y, size_t n) {
    if (n == 0) return 0.0f;
    const size_t cs = det_chunk_size(n), nc = (n + cs - 1) / cs;
    double part[DET_CHUNKS];
    #pragma omp parallel for if (n > 32768)
    for (size_t k = 0; k < nc; k++) {
        size_t end = (k + 1) * cs < n ? (k + 1) * cs : n;
        double t = 0.0;
        #pragma omp simd reduction(+:t)
        for (size_t i = k * cs; i < end; i++) t += (double)(vsoftplusf(x[i]) - x[i] * y[i]);
        part[k] = t;
    }
    return (float)(det_add(part, nc) / (double)n);
}
void bce_logits_backward(float *dx, const float *x, const float *y, float dloss, size_t n) {
    if (n == 0) return;
    const float c = dloss / (float)n;
    #pragma omp parallel for simd if (n > 32768)
    for (size_t i = 0; i < n; i++) dx[i] += c * (vsigmoidf(x[i]) - y[i]);
}

static void dice_sums(const float *x, const float *y, size_t n, double *inter, double *ssum, double *ysum) {
    const size_t cs = det_chunk_size(n), nc = (n + cs - 1) / cs;
    double pa[DET_CHUNKS], pb[DET_CHUNKS], pc[DET_CHUNKS];
    #pragma omp parallel for if (n > 32768)
    for (size_t k = 0; k < nc; k++) {
        size_t end = (k + 1) * cs < n ? (k + 1) * cs : n;
        double a = 0.0, b = 0.0, c = 0.0;
        #pragma omp simd reduction(+:a, b, c)
        for (size_t i = k * cs; i < end; i++) {
            float s = vsigmoidf(x[i]);
            a += (double)(s * y[i]); b += (double)s; c += (double)y[i];
        }
        pa[k] = a; pb[k] = b; pc[k] = c;
    }
    *inter = det_add(pa, nc); *ssum = det_add(pb, nc); *ysum = det_add(pc, nc);
}

/* 1 - (2I + s) / (S + Y + s), s = DICE_SMOOTH */
float dice_forward(const float *x, const float *y, size_t n) {
    double I, S, Y;
    dice_sums(x, y, n, &I, &S, &Y);
    return (float)(1.0 - (2.0 * I + DICE_SMOOTH) / (S + Y + DICE_SMOOTH));
}
/* dL/dσ_i = -(2 y_i (S+Y+s) - (2I+s)) / (S+Y+s)^2, times σ(1-σ) */
void dice_backward(float *dx, const float *x, const float *y, float dloss, size_t n) {
    double I, S, Y;
    dice_sums(x, y, n, &I, &S, &Y);
    const double den = S + Y + DICE_SMOOTH, num = 2.0 * I + DICE_SMOOTH;
    const float a = (float)(-2.0 * dloss / den), b = (float)(dloss * num / (den * den));
    #pragma omp parallel for simd if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float s = vsigmoidf(x[i]);
        dx[i] += (a * y[i] + b) * s * (1.0f - s);
    }
}
