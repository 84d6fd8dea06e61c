/* kernels/cuda/bf16.cu — 16-bit storage of frozen weights (kernels.h "16-bit
 * storage": bf16 and IEEE fp16) on the device: conversions, and the linear
 * product with a 16-bit weight, widened to fp32 in row blocks of at most WIDE_FLOATS floats into
 * the KC_WS_WIDE workspace and multiplied by kc_gemm (so the GEMM mode, fp32
 * or tf32, applies as to any other product); in GEMM mode bf16 the other
 * operand is rounded to bf16 instead (KC_WS_ACT16) and one cublasGemmEx with
 * bf16 operands runs on the tensor cores, fp32 accumulation; the same with
 * fp16-stored weights in GEMM mode fp16 (CUDA_R_16F). Same rounding as the
 * CPU backend (kernels/bf16_host.c), bit for bit. */
#include "kernels/cuda/common.cuh"

enum { WIDE_FLOATS = 1 << 22 };   /* 16 MiB: 1024 rows of 4096 */

#include "kernels/half_bits.h"

/* dst[i] = src[i] in 16 bits (f16: fp16, else bf16), and back: the rounding of
 * kernels/half_bits.h, shared with the host helpers. */
__global__ static void narrow_kernel(uint16_t *dst, const float *src, size_t n, int f16) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f16 ? hb_to_f16(src[i]) : hb_to_bf16(src[i]);
}
__global__ static void widen_kernel(float *dst, const uint16_t *src, size_t n, int f16) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f16 ? hb_from_f16(src[i]) : hb_from_bf16(src[i]);
}
static void narrow16(uint16_t *dst, const float *src, size_t n, int f16) {
    if (!n) return;
    narrow_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n, f16);
    KC_LAUNCHED();
}
static void widen16(float *dst, const uint16_t *src, size_t n, int f16) {
    if (!n) return;
    widen_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n, f16);
    KC_LAUNCHED();
}
void convert_f32_to_bf16(bf16_t *dst, const float *src, size_t n) { narrow16(dst, src, n, 0); }
void convert_bf16_to_f32(float *dst, const bf16_t *src, size_t n) { widen16(dst, src, n, 0); }
void convert_f32_to_f16(f16_t *dst, const float *src, size_t n) { narrow16(dst, src, n, 1); }
void convert_f16_to_f32(float *dst, const f16_t *src, size_t n) { widen16(dst, src, n, 1); }

/* Row-major C[M,N] = alpha op(A) op(B) + beta C with bf16 A and B, fp32 C and
 * fp32 accumulation on the tensor cores (the kc_gemm operand swap: a row-major
 * matrix is the column-major transpose). */
static void gemm16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc, int f16) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    KC_CUBLAS(cublasGemmEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                           B, t, ldb, A, t, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* Rows per widened block: a multiple of 32 where more than 32 fit, so that
 * the column offset o0 of out (forward) and dout (backward) keeps the
 * operands 128-byte aligned for cuBLAS's vectorised kernels (IN = 11008, the
 * 7B down projection, would give 381 rows and 4-byte-aligned blocks). */
static int block_rows(int IN, int OUT) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
    if (rb > 32) rb &= ~31;
    if (rb < 1) rb = 1;
    return rb > OUT ? OUT : rb;
}

/* GEMM mode of the weight's format (bf16 or fp16) on: one tensor-core GEMM. */
static int half_mode(int f16) { return kc_gemm_half_mode() == (f16 ? 2 : 1); }

static void linear16_forward(float *out, const float *in, const uint16_t *w, const float *b, int N, int IN, int OUT,
                             int f16) {
    if (N <= 0 || OUT <= 0) return;
    if (b) linear_forward(out, in, NULL, b, N, 0, OUT);   /* out = b (a K = 0 product adds nothing) */
    if (half_mode(f16) && IN > 0) {   /* the activations in 16 bits too */
        uint16_t *x16 = (uint16_t *)kc_workspace(KC_WS_ACT16, (size_t)N * IN * sizeof(uint16_t));
        narrow16(x16, in, (size_t)N * IN, f16);
        gemm16(0, 1, N, OUT, IN, 1.0f, x16, IN, w, IN, b ? 1.0f : 0.0f, out, OUT, f16);
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
        widen16(wf, w + (size_t)o0 * IN, (size_t)nr * IN, f16);
        /* out[:, o0:o0+nr] (row stride OUT) = in[N,IN] @ wf[nr,IN]^T (+ the bias already there) */
        kc_gemm(0, 1, N, nr, IN, 1.0f, in, IN, wf, IN, b ? 1.0f : 0.0f, out + o0, OUT);
    }
}

static void linear16_backward(float *din, float *db, const float *dout, const uint16_t *w, int N, int IN, int OUT,
                              int f16) {
    if (db) kc_colsum_acc(db, dout, N, OUT);
    if (!din || N <= 0 || IN <= 0 || OUT <= 0) return;
    if (half_mode(f16)) {   /* the output gradient in 16 bits too */
        uint16_t *g16 = (uint16_t *)kc_workspace(KC_WS_ACT16, (size_t)N * OUT * sizeof(uint16_t));
        narrow16(g16, dout, (size_t)N * OUT, f16);
        gemm16(0, 0, N, IN, OUT, 1.0f, g16, OUT, w, IN, 1.0f, din, IN, f16);   /* din[N,IN] += dout[N,OUT] w[OUT,IN] */
        return;
    }
    const int rb = block_rows(IN, OUT);
    float *wf = (float *)kc_workspace(KC_WS_WIDE, (size_t)rb * IN * sizeof(float));
    for (int o0 = 0; o0 < OUT; o0 += rb) {
        const int nr = OUT - o0 < rb ? OUT - o0 : rb;
        widen16(wf, w + (size_t)o0 * IN, (size_t)nr * IN, f16);
        /* din[N,IN] += dout[:, o0:o0+nr] (row stride OUT) @ wf[nr,IN] */
        kc_gemm(0, 0, N, IN, nr, 1.0f, dout + o0, OUT, wf, IN, 1.0f, din, IN);
    }
}

void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, 0);
}
/* Not fused here: cuBLAS(Lt)'s GELU epilogue is the tanh approximation; the product, then the exact activation. */
void linear_half_act_forward(float *out, const float *in, const uint16_t *w, int fp16, const float *b, int N, int IN,
                             int OUT, int act) {
    linear16_forward(out, in, w, b, N, IN, OUT, fp16 != 0);
    if (act == K_ACT_GELU) gelu_forward(out, out, (size_t)N * OUT);
    else if (act == K_ACT_QUICK_GELU) quick_gelu_forward(out, out, (size_t)N * OUT);
}
void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, 0);
}
void linear_f16_forward(float *out, const float *in, const f16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, 1);
}
void linear_f16_backward(float *din, float *db, const float *dout, const f16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, 1);
}

void linear_bf16_backward_weight(float *dw, const float *dout, const float *in, int N, int IN, int OUT) {
    if (!dw || N <= 0 || IN <= 0 || OUT <= 0) return;
    if (!half_mode(0)) { linear_backward(NULL, dw, NULL, dout, in, NULL, N, IN, OUT); return; }
    uint16_t *g16 = (uint16_t *)kc_workspace(KC_WS_ACT16, (size_t)N * OUT * sizeof(uint16_t));
    uint16_t *x16 = (uint16_t *)kc_workspace(KC_WS_ACT16B, (size_t)N * IN * sizeof(uint16_t));
    narrow16(g16, dout, (size_t)N * OUT, 0);
    narrow16(x16, in, (size_t)N * IN, 0);
    gemm16(1, 0, OUT, IN, N, 1.0f, g16, OUT, x16, IN, 1.0f, dw, IN, 0);   /* dw[OUT,IN] += dout^T[OUT,N] in[N,IN] */
}

/* The bf16 product other kernels use (common.cuh). */
void kc_gemm_bf16_batched(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, long long sA,
                          const uint16_t *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                          int batch) {
    if (M <= 0 || N <= 0 || K <= 0 || batch <= 0) return;
    KC_CUBLAS(cublasGemmStridedBatchedEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         N, M, K, &alpha, B, CUDA_R_16BF, ldb, sB, A, CUDA_R_16BF, lda, sA, &beta, C,
                                         CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
