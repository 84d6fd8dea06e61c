/* kernels/bf16_host.c — float <-> bf16 on host memory (kernels.h "bf16
 * storage": round to nearest even, ±Inf and signed zeros kept, NaN made
 * quiet). Backend-neutral and free of BLAS, so the parameter registry and the
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
