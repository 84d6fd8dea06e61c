/* kernels/bf16_host.c — float <-> bf16 and float <-> IEEE fp16 on host memory
 * (kernels.h "16-bit storage"; the rounding is kernels/half_bits.h's, which
 * the CUDA backend's device conversions share). Backend-neutral and free of
 * BLAS, so the parameter registry and the checkpoint code can use it in every
 * build, fuzz targets included. Depends on kernels/kernels.h,
 * kernels/half_bits.h. */
#include "kernels/kernels.h"
#include "kernels/half_bits.h"

void convert_f32_to_bf16_host(bf16_t *dst, const float *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = hb_to_bf16(src[i]);
}

void convert_bf16_to_f32_host(float *dst, const bf16_t *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = hb_from_bf16(src[i]);
}

void convert_f32_to_f16_host(f16_t *dst, const float *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = hb_to_f16(src[i]);
}

void convert_f16_to_f32_host(float *dst, const f16_t *src, size_t n) {
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = hb_from_f16(src[i]);
}
