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

/* IEEE binary16, as kernels/bf16_host.c's to_f16 / from_f16 */
__device__ static inline uint16_t to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        if (ax < 0x33000000u) return (uint16_t)sign;
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u;
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}
__device__ static inline float from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e != 0) bits = sign | ((e + 112u) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {
        uint32_t ex = 113;
        do { m <<= 1; ex--; } while (!(m & 0x400u));
        bits = sign | (ex << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
__global__ static void to_f16_kernel(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_f16(src[i]);
}
__global__ static void from_f16_kernel(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f16(src[i]);
}
void convert_f32_to_f16(f16_t *dst, const float *src, size_t n) {
    if (!n) return;
    to_f16_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n);
    KC_LAUNCHED();
}
void convert_f16_to_f32(float *dst, const f16_t *src, size_t n) {
    if (!n) return;
    from_f16_kernel<<<kc_blocks(n), KC_BLOCK>>>(dst, src, n);
    KC_LAUNCHED();
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
static void gemm16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, const uint16_t *B,
                   int ldb, float beta, float *C, int ldc, int f16) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    KC_CUBLAS(cublasGemmEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                           B, t, ldb, A, t, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* src[n] of format f16 (else bf16) -> fp32, and fp32 -> that format. */
static void widen16(float *dst, const uint16_t *src, size_t n, int f16) {
    if (f16) convert_f16_to_f32(dst, src, n);
    else convert_bf16_to_f32(dst, src, n);
}
static void narrow16(uint16_t *dst, const float *src, size_t n, int f16) {
    if (f16) convert_f32_to_f16(dst, src, n);
    else convert_f32_to_bf16(dst, src, n);
}

static int block_rows(int IN, int OUT) {
    int rb = WIDE_FLOATS / (IN > 0 ? IN : 1);
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
void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, 0);
}
void linear_f16_forward(float *out, const float *in, const f16_t *w, const float *b, int N, int IN, int OUT) {
    linear16_forward(out, in, w, b, N, IN, OUT, 1);
}
void linear_f16_backward(float *din, float *db, const float *dout, const f16_t *w, int N, int IN, int OUT) {
    linear16_backward(din, db, dout, w, N, IN, OUT, 1);
}
