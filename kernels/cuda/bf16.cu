/* kernels/cuda/bf16.cu — bf16 storage of frozen weights (kernels.h "bf16
 * storage") on the device: conversions, and the linear product with a bf16
 * weight, widened to fp32 in row blocks of at most WIDE_FLOATS floats into
 * the KC_WS_WIDE workspace and multiplied by kc_gemm (so the GEMM mode, fp32
 * or tf32, applies as to any other product); in GEMM mode bf16 the other
 * operand is rounded to bf16 instead (KC_WS_ACT16) and one cublasGemmEx with
 * bf16 operands runs on the tensor cores, fp32 accumulation. Same rounding as
 * the CPU backend, bit for bit. */
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
/* Row-major C[M,N] = alpha op(A) op(B) + beta C with bf16 A and B, fp32 C and
 * fp32 accumulation on the tensor cores (the kc_gemm operand swap: a row-major
 * matrix is the column-major transpose). */
static void gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const bf16_t *A, int lda, const bf16_t *B,
                      int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    KC_CUBLAS(cublasGemmEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                           B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
}

static int block_rows(int IN, int OUT) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb < 1) rb = 1;
    return rb > OUT ? OUT : rb;
}

void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (b) linear_forward(out, in, NULL, b, N, 0, OUT);   /* out = b (a K = 0 product adds nothing) */
    if (kc_gemm_bf16_mode() && IN > 0) {   /* the activations in bf16 too: one tensor-core GEMM */
        bf16_t *x16 = (bf16_t *)kc_workspace(KC_WS_ACT16, (size_t)N * IN * sizeof(bf16_t));
        convert_f32_to_bf16(x16, in, (size_t)N * IN);
        gemm_bf16(0, 1, N, OUT, IN, 1.0f, x16, IN, w, IN, b ? 1.0f : 0.0f, out, OUT);
        return;
    }
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
    if (kc_gemm_bf16_mode()) {   /* the output gradient in bf16 too */
        bf16_t *g16 = (bf16_t *)kc_workspace(KC_WS_ACT16, (size_t)N * OUT * sizeof(bf16_t));
        convert_f32_to_bf16(g16, dout, (size_t)N * OUT);
        gemm_bf16(0, 0, N, IN, OUT, 1.0f, g16, OUT, w, IN, 1.0f, din, IN);   /* din[N,IN] += dout[N,OUT] w[OUT,IN] */
        return;
    }
    const int rb = block_rows(IN, OUT);
    float *wf = (float *)kc_workspace(KC_WS_WIDE, (size_t)rb * IN * sizeof(float));
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        convert_bf16_to_f32(wf, w + (size_t)o0 * IN, (size_t)nr * IN);
        /* din[N,IN] += dout[:, o0:o0+nr] (row stride OUT) @ wf[nr,IN] */
        kc_gemm(0, 0, N, IN, nr, 1.0f, dout + o0, OUT, wf, IN, 1.0f, din, IN);
    }
}
