/* kernels/bf16_host.c — float <-> bf16 and float <-> IEEE fp16 on host memory
 * (kernels.h "16-bit storage": round to nearest even, ±Inf and signed zeros
 * kept, NaN made quiet; fp16 overflows to ±Inf and keeps subnormals). Backend-neutral and free of BLAS, so the parameter registry and the
 * checkpoint code can use it in every build, fuzz targets included; the CUDA
 * backend's device conversion (kernels/cuda/bf16.cu) rounds the same way.
 * Depends on kernels/kernels.h only. */
#include "kernels/kernels.h"
#include <string.h>

void convert_f32_to_bf16_host(bf16_t *dst, const float *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        if ((u & 0x7fffffffu) > 0x7f800000u) { dst[i] = (bf16_t)((u >> 16) | 0x0040u); continue; }   /* NaN */
        u += 0x7fffu + ((u >> 16) & 1u);   /* nearest, ties to even (a carry into the exponent is right) */
        dst[i] = (bf16_t)(u >> 16);
    }
}

void convert_bf16_to_f32_host(float *dst, const bf16_t *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

/* float -> IEEE binary16, round to nearest even. */
static uint16_t to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu));   /* NaN, quiet */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* >= 65520 (and Inf): Inf */
    if (ax < 0x38800000u) {   /* below 2^-14: a subnormal half (or zero) */
        if (ax < 0x33000000u) return (uint16_t)sign;   /* below 2^-25 (2^-25 itself ties to 0) */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;   /* 14..24 */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u;   /* exponent rebias 127 -> 15 */
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}

static float from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e != 0) bits = sign | ((e + 112u) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {   /* subnormal: m * 2^-24, normalised */
        uint32_t ex = 113;
        do { m <<= 1; ex--; } while (!(m & 0x400u));
        bits = sign | (ex << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void convert_f32_to_f16_host(f16_t *dst, const float *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = to_f16(src[i]);
}

void convert_f16_to_f32_host(float *dst, const f16_t *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = from_f16(src[i]);
}
