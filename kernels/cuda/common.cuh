/* kernels/cuda/common.cuh — shared plumbing of the CUDA backend (private to kernels/cuda/).
 *
 * Everything runs on the legacy default stream, so kernels, cuBLAS calls and
 * cudaMemcpy are ordered without explicit synchronisation; only functions that
 * return a host value (losses, sumsq) wait for the device.
 *
 * CUDA and cuBLAS failures are internal errors (a bad launch, a lost device,
 * a failed workspace allocation), never bad user input: kc_fail() records the
 * first one with where it happened, and k_error() reports it; the caller checks
 * once per step. k_malloc() reports failure by returning NULL.
 *
 * Internal scratch (reduction partials, small temporaries that the kernel
 * header gives no scratch argument for) lives in grow-only device workspaces,
 * one per slot, allocated on first use and reused afterwards, so a training
 * step allocates nothing once the first step has run. A pointer from
 * kc_workspace() is valid until the next kc_workspace() call on the SAME slot;
 * functions must not hold a slot across a call that may use it. */
#ifndef ANYREF_KERNELS_CUDA_COMMON_CUH
#define ANYREF_KERNELS_CUDA_COMMON_CUH

#include "kernels/kernels.h"
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>

void kc_fail(const char *what, const char *file, int line, const char *msg);

#define KC_CUDA(call)                                                                  \
    do {                                                                               \
        cudaError_t kc_e_ = (call);                                                    \
        if (kc_e_ != cudaSuccess) kc_fail(#call, __FILE__, __LINE__, cudaGetErrorString(kc_e_)); \
    } while (0)
#define KC_CUBLAS(call)                                                                \
    do {                                                                               \
        cublasStatus_t kc_s_ = (call);                                                 \
        if (kc_s_ != CUBLAS_STATUS_SUCCESS)                                            \
            kc_fail(#call, __FILE__, __LINE__, cublasGetStatusString(kc_s_));          \
    } while (0)
/* After every kernel launch: catches bad launch configurations immediately. */
#define KC_LAUNCHED() KC_CUDA(cudaGetLastError())

/* WIDE: bf16 weights widened; ACT16: an operand rounded to bf16 (bf16.cu) */
enum { KC_WS_REDUCE = 0, KC_WS_TEMP = 1, KC_WS_WIDE = 2, KC_WS_ACT16 = 3, KC_WS_ACT16B = 4, KC_WS_SLOTS = 5 };
/* A device buffer of at least `bytes` bytes (256-byte aligned) for this slot. */
void *kc_workspace(int slot, size_t bytes);

cublasHandle_t kc_cublas(void);

enum { KC_BLOCK = 256 };
/* Blocks for a grid-stride loop over n items with KC_BLOCK threads (>= 1). */
static inline unsigned kc_blocks(size_t n) {
    size_t b = (n + KC_BLOCK - 1) / KC_BLOCK;
    if (b < 1) b = 1;
    if (b > (1u << 20)) b = 1u << 20;
    return (unsigned)b;
}

/* Row-major GEMM: C[M,N] = alpha op(A) op(B) + beta C, with explicit row strides
 * (lda, ldb, ldc = distance in floats between consecutive rows as stored).
 * A is stored [M,K] (ta=0) or [K,M] (ta=1); B is [K,N] (tb=0) or [N,K] (tb=1).
 * M, N <= 0: nothing; K <= 0: C = beta C. */
void kc_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);
/* The same for `batch` independent problems whose operands start sA, sB, sC floats apart. */
void kc_gemm_batched(int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                     float beta, float *C, int ldc, long long sC, int batch);

/* bf16.cu: the batched product of kc_gemm_batched with bf16 A and B (fp32 C,
 * fp32 accumulation on the tensor cores); callers round their operands with
 * kernels/half_bits.h's hb_to_bf16. */
void kc_gemm_bf16_batched(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda, long long sA,
                          const uint16_t *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                          int batch);

/* dst[c] += Σ_n src[n*C + c]  (column sums of a row-major [N,C]; deterministic). */
void kc_colsum_acc(float *dst, const float *src, int N, int C);
/* GEMM mode (k_set_gemm_mode) "bf16": 1, "fp16": 2 (linear_bf16_* / linear_f16_*
 * then multiply 16-bit x 16-bit on the tensor cores), else 0. */
int kc_gemm_half_mode(void);
/* dst[c] += Σ_b Σ_p src[(b*C + c)*P + p]  (per-channel sums of [B,C,P]; deterministic). */
void kc_chansum_acc(float *dst, const float *src, int B, int C, size_t P);

/* ---- device helpers ---------------------------------------------------- */
template <typename T>
static __device__ __forceinline__ T kc_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float kc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum over the whole block, returned to every thread. blockDim.x must be a
 * multiple of 32 (<= 1024) and every thread of the block must call it. */
template <typename T>
static __device__ __forceinline__ T kc_block_sum(T v) {
    __shared__ T kc_sh[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kc_warp_sum(v);
    __syncthreads(); /* a previous call's readers are done with kc_sh */
    if (lane == 0) kc_sh[wid] = v;
    __syncthreads();
    v = lane < nw ? kc_sh[lane] : (T)0;
    return kc_warp_sum(v);
}
static __device__ __forceinline__ float kc_block_max(float v) {
    __shared__ float kc_shm[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kc_warp_max(v);
    __syncthreads();
    if (lane == 0) kc_shm[wid] = v;
    __syncthreads();
    v = lane < nw ? kc_shm[lane] : -INFINITY;
    return kc_warp_max(v);
}
static __device__ __forceinline__ float kc_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---- deterministic column reduction ---------------------------------------
 * dst[d] += Σ_{n<N} op(n, d) for a row-major [N,D] family of values. Rows are
 * split into chunks; each (chunk, 32 columns) block writes a partial into the
 * KC_WS_REDUCE workspace and a second kernel adds the partials in a fixed
 * order, so the result does not depend on scheduling. */
enum { KC_COL_TX = 32, KC_COL_TY = 8 };
template <class Op>
__global__ void kc_colreduce_partial_kernel(float *partial, int N, int D, int rows_per_chunk, Op op) {
    __shared__ float sh[KC_COL_TY][KC_COL_TX + 1];
    const int d = blockIdx.x * KC_COL_TX + threadIdx.x;
    const int n0 = blockIdx.y * rows_per_chunk;
    int n1 = n0 + rows_per_chunk;
    if (n1 > N) n1 = N;
    float s = 0.0f;
    if (d < D)
        for (int n = n0 + threadIdx.y; n < n1; n += KC_COL_TY) s += op(n, d);
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && d < D) {
        float t = 0.0f;
        for (int i = 0; i < KC_COL_TY; i++) t += sh[i][threadIdx.x];
        partial[(size_t)blockIdx.y * D + d] = t;
    }
}
template <typename T>
__global__ void kc_colreduce_finish_kernel(float *dst, const T *partial, int chunks, int D) {
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x) {
        T s = 0;
        for (int c = 0; c < chunks; c++) s += partial[(size_t)c * D + d];
        dst[d] += s;
    }
}

template <class Op>
static void kc_colreduce_acc(float *dst, int N, int D, Op op) {
    if (!dst || N <= 0 || D <= 0) return;
    int chunks = (N + 255) / 256;
    if (chunks > 128) chunks = 128;
    const int rows_per_chunk = (N + chunks - 1) / chunks;
    chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    float *partial = (float *)kc_workspace(KC_WS_REDUCE, (size_t)chunks * D * sizeof(float));
    dim3 grid((D + KC_COL_TX - 1) / KC_COL_TX, chunks), block(KC_COL_TX, KC_COL_TY);
    kc_colreduce_partial_kernel<<<grid, block>>>(partial, N, D, rows_per_chunk, op);
    KC_LAUNCHED();
    kc_colreduce_finish_kernel<float><<<kc_blocks((size_t)D), KC_BLOCK>>>(dst, partial, chunks, D);
    KC_LAUNCHED();
}

/* ---- deterministic whole-array sums in double -----------------------------
 * Computes NV sums Σ_i op(i, v[0..NV)) over i < n into out_dev[0..NV) (device
 * doubles, in the KC_WS_REDUCE workspace after the partials). Returns out_dev. */
enum { KC_RED_MAXBLOCKS = 1024 };
template <int NV, class Op>
__global__ void kc_reduce_partial_kernel(double *partial, size_t n, Op op) {
    double acc[NV];
    for (int j = 0; j < NV; j++) acc[j] = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double v[NV];
        op(i, v);
        for (int j = 0; j < NV; j++) acc[j] += v[j];
    }
    for (int j = 0; j < NV; j++) {
        double t = kc_block_sum(acc[j]);
        if (threadIdx.x == 0) partial[(size_t)j * gridDim.x + blockIdx.x] = t;
    }
}
template <int NV>
__global__ void kc_reduce_finish_kernel(double *out, const double *partial, int nblocks) {
    for (int j = 0; j < NV; j++) {
        double s = 0.0;
        for (int i = threadIdx.x; i < nblocks; i += blockDim.x) s += partial[(size_t)j * nblocks + i];
        s = kc_block_sum(s);
        if (threadIdx.x == 0) out[j] = s;
    }
}
template <int NV, class Op>
static double *kc_reduce_sums(size_t n, Op op) {
    unsigned nb = kc_blocks(n);
    if (nb > KC_RED_MAXBLOCKS) nb = KC_RED_MAXBLOCKS;
    double *ws = (double *)kc_workspace(KC_WS_REDUCE, ((size_t)NV * nb + NV) * sizeof(double));
    double *out = ws + (size_t)NV * nb;
    kc_reduce_partial_kernel<NV><<<nb, KC_BLOCK>>>(ws, n, op);
    KC_LAUNCHED();
    kc_reduce_finish_kernel<NV><<<1, KC_BLOCK>>>(out, ws, (int)nb);
    KC_LAUNCHED();
    return out;
}

#endif
