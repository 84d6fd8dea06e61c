/* kernels/cuda/bf16.cu — bf16 storage of frozen weights (kernels.h "bf16
 * storage") on the device: conversions, and the linear product with a bf16
 * weight, widened to fp32 in row blocks of at most WIDE_FLOATS floats into
 * the KC_WS_WIDE workspace and multiplied by kc_gemm (so the GEMM mode, fp32
 * or tf32, applies as to any other product). Same rounding as the CPU
 * backend, bit for bit. */
#include "kernels/cuda/common.cuh"
#include <string.h>

enum { WIDE_FLOATS = 1 << 22 };   /* 16 MiB: 1024 rows of 4096 */

/* the same rounding as kernels/bf16_host.c (the host helpers, linked in every build) */
__device__ static inline bf16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}
__device__ static inline float from_bf16(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

__global__ static void to_bf16_kernel(bf16_t *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_bf16(src[i]);
}
__global__ static void from_bf16_kernel(float *dst, const bf16_t *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_bf16(src[i]);
}

void convert_f32_to_bf16(bf16_t *dst, const float *src, size_t n) {
    if (!n) return;
    to_bf16_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n);
    KC_LAUNCHED();
}
void convert_bf16_to_f32(float *dst, const bf16_t *src, size_t n) {
    if (!n) return;
    from_bf16_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n);
    KC_LAUNCHED();
}
static int block_rows(int IN, int OUT) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb < 1) rb = 1;
    return rb > OUT ? OUT : rb;
}

void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (b) linear_forward(out, in, NULL, b, N, 0, OUT);   /* out = b (a K = 0 product adds nothing) */
    const int rb = block_rows(IN, OUT);
    float *wf = (float *)kc_workspace(KC_WS_WIDE, (size_t)rb * (IN > 0 ? IN : 1) * sizeof(float));
    if (IN <= 0) {
        if (!b) kc_gemm(0, 1, N, OUT, 0, 1.0f, in, 1, wf, 1, 0.0f, out, OUT);   /* zeros */
        return;
    }
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        convert_bf16_to_f32(wf, w + (size_t)o0 * IN, (size_t)nr * IN);
        /* out[:, o0:o0+nr] (row stride OUT) = in[N,IN] @ wf[nr,IN]^T (+ the bias already there) */
        kc_gemm(0, 1, N, nr, IN, 1.0f, in, IN, wf, IN, b ? 1.0f : 0.0f, out + o0, OUT);
    }
}

void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    if (db) kc_colsum_acc(db, dout, N, OUT);
    if (!din || N <= 0 || IN <= 0 || OUT <= 0) return;
    const int rb = block_rows(IN, OUT);
    float *wf = (float *)kc_workspace(KC_WS_WIDE, (size_t)rb * IN * sizeof(float));
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        convert_bf16_to_f32(wf, w + (size_t)o0 * IN, (size_t)nr * IN);
        /* din[N,IN] += dout[:, o0:o0+nr] (row stride OUT) @ wf[nr,IN] */
        kc_gemm(0, 0, N, IN, nr, 1.0f, dout + o0, OUT, wf, IN, 1.0f, din, IN);
    }
}
