/* kernels/cpu/vmath.h — branch-free exp, sigmoid and erf that GCC vectorises
 * inside element-wise loops (glibc's expf/erff are scalar calls unless
 * -ffast-math, which we do not use). Accuracy, measured against double libm:
 * vexpf within 1.4 ulp on [-87, 88] (inputs are clamped to [-87.3, 88.7], so
 * it never returns NaN; 88.7 rounds to +inf); vsigmoidf relative error 1.2e-7;
 * verff absolute error 3.4e-7 (the Chebyshev erfc fit of Numerical Recipes
 * 6.2); vlogf within 2 ulp for normal inputs. tests/test_grad_core.c re-checks
 * these bounds. */
#ifndef ANYREF_VMATH_H
#define ANYREF_VMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float vexpf(float x) {
    /* e^x = 2^n e^r, n = round(x log2 e), r = x - n ln2 (Cody-Waite split) */
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    /* round to nearest via the 1.5*2^23 trick: vectorises, unlike roundf */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    /* minimax polynomial for e^r on [-ln2/2, ln2/2] */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* In-place softmax of x[0..n), n > 0 (max, exponentials with their sum,
 * one scale); returns the row's log-sum-exp. */
static inline float vsoftmax(float *x, int n) {
    float mx = x[0];
    #pragma omp simd reduction(max:mx)
    for (int j = 1; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    float sum = 0.0f;
    #pragma omp simd reduction(+:sum)
    for (int j = 0; j < n; j++) { x[j] = vexpf(x[j] - mx); sum += x[j]; }
    const float inv = 1.0f / sum;
    #pragma omp simd
    for (int j = 0; j < n; j++) x[j] *= inv;
    return mx + logf(sum);
}
static inline float vsigmoidf(float x) { return 1.0f / (1.0f + vexpf(-x)); }

/* Natural log for x > 0 (finite, normal): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m by the Cephes logf polynomial in m-1. */
static inline float vlogf(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126;           /* x = m 2^e, m in [0.5, 1) */
    int32_t mb = (bits & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &mb, sizeof m);
    int small = m < 0.70710678118654752f;
    e -= small;
    float f = (m - 1.0f) + (small ? m : 0.0f);        /* 2m-1 or m-1, branch-free */
    float fe = (float)e;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return f + y + 0.693359375f * fe;
}

/* log(1 + y) for y >= 0, with the (u-1)-y correction that keeps tiny y exact. */
static inline float vlog1pf(float y) {
    float u = 1.0f + y;
    float d = u - 1.0f;
    /* both sides computed unconditionally so the loop if-converts and vectorises */
    float r = vlogf(u) * (y / (d == 0.0f ? 1.0f : d));
    return d == 0.0f ? y : r;
}

/* softplus(x) = log(1 + e^x), stable for all x. */
static inline float vsoftplusf(float x) {
    float a = x < 0.0f ? -x : x;
    return (x > 0.0f ? x : 0.0f) + vlog1pf(vexpf(-a));
}

/* Sum of n floats: vectorised float partial sums over blocks of 1024, added in
 * double (error ~ 1024 eps / lanes instead of n eps). */
static inline double vsum_blocked(const float *x, size_t n) {
    double total = 0.0;
    for (size_t b = 0; b < n; b += 1024) {
        size_t e = b + 1024 < n ? b + 1024 : n;
        float s = 0.0f;
        _Pragma("omp simd reduction(+:s)")
        for (size_t i = b; i < e; i++) s += x[i];
        total += s;
    }
    return total;
}

static inline float verff(float x) {
    float z = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float erfc = t * vexpf(-z * z + p);
    float r = 1.0f - erfc;
    return x < 0.0f ? -r : r;
}
#endif
