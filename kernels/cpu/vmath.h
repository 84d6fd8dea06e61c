/* kernels/cpu/vmath.h — branch-free exp, sigmoid and erf that GCC vectorises
 * inside element-wise loops (glibc's expf/erff are scalar calls unless
 * -ffast-math, which we do not use). Accuracy, measured against double libm:
 * vexpf within 1.4 ulp on [-87, 88] (inputs are clamped to [-87.3, 88.7], so
 * it never returns NaN; 88.7 rounds to +inf); vsigmoidf relative error 1.2e-7;
 * verff absolute error 3.4e-7 (the Chebyshev erfc fit of Numerical Recipes
 * 6.2). tests/test_grad_core.c re-checks these bounds. */
#ifndef ANYREF_VMATH_H
#define ANYREF_VMATH_H
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

static inline float vsigmoidf(float x) { return 1.0f / (1.0f + vexpf(-x)); }

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
