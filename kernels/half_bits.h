/* kernels/half_bits.h — the bit-level conversions between float and the two
 * 16-bit formats (bf16, IEEE binary16), shared by the host helpers
 * (kernels/bf16_host.c) and the CUDA kernels (kernels/cuda/bf16.cu) so that
 * both round identically: to nearest even; ±Inf and signed zeros kept; NaN
 * made quiet; fp16 overflows to ±Inf (|x| >= 65520) and keeps subnormals.
 * Plain C (and CUDA C++: the functions are host + device there). */
#ifndef ANYREF_KERNELS_HALF_BITS_H
#define ANYREF_KERNELS_HALF_BITS_H
#include <stdint.h>
#include <string.h>
#ifdef __CUDACC__
#define HB_FN __host__ __device__ static inline
#else
#define HB_FN static inline
#endif

HB_FN uint16_t hb_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);   /* NaN, quiet */
    u += 0x7fffu + ((u >> 16) & 1u);   /* a carry into the exponent is right */
    return (uint16_t)(u >> 16);
}

HB_FN float hb_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

HB_FN uint16_t hb_to_f16(float f) {
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

HB_FN float hb_from_f16(uint16_t h) {
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
#endif
