/* kernels/cuda/backend.cu — device memory, control, the cuBLAS handle, the
 * internal workspaces and the GEMM / column-sum helpers the other files share. */
#include "kernels/cuda/common.cuh"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first failure is kept (later ones are usually its consequences) and
 * reported through k_error(); library code never stops the process. */
static char g_err[512];
static int g_has_err;
void kc_fail(const char *what, const char *file, int line, const char *msg) {
    if (g_has_err) return;
    snprintf(g_err, sizeof g_err, "cuda backend: %s failed at %s:%d: %s", what, file, line, msg);
    g_has_err = 1;
}
const char *k_error(void) { return g_has_err ? g_err : NULL; }

static cublasHandle_t g_cublas;
/* The GEMM mode (kernels.h k_set_gemm_mode): fp32 uses cublasSgemm; tf32
 * cublasGemmEx with fp32 storage and COMPUTE_32F_FAST_TF32 (inputs rounded
 * inside cuBLAS, fp32 accumulation). */
static const char *g_gemm_mode = "fp32";
static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F;
static int g_gemm_init, g_half;   /* g_half: 1 bf16, 2 fp16 (the 16-bit products' format) */
static int g_rest_fp32 = -1;       /* k_set_gemm_rest_fp32; -1: $ANYREF_GEMM_REST not read yet */
static int rest_fp32(void) {
    if (g_rest_fp32 < 0) {
        const char *r = getenv("ANYREF_GEMM_REST");
        g_rest_fp32 = r && !strcmp(r, "fp32");
    }
    return g_rest_fp32;
}
void k_set_gemm_rest_fp32(int on) {
    g_rest_fp32 = on != 0;
    if (g_half) g_compute = on ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
}
int k_set_gemm_mode(const char *mode) {
    /* bf16 / fp16: the fp32 GEMMs as in tf32; linear_bf16_* / linear_f16_* on the tensor cores (bf16.cu) */
    static const struct { const char *name; cublasComputeType_t t; int half; } modes[] = {
        {"fp32", CUBLAS_COMPUTE_32F, 0}, {"tf32", CUBLAS_COMPUTE_32F_FAST_TF32, 0},
        {"bf16", CUBLAS_COMPUTE_32F_FAST_TF32, 1}, {"fp16", CUBLAS_COMPUTE_32F_FAST_TF32, 2}};
    g_gemm_init = 1;
    for (size_t i = 0; mode && i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(mode, modes[i].name)) {
            g_gemm_mode = modes[i].name;
            g_compute = modes[i].half && rest_fp32() ? CUBLAS_COMPUTE_32F : modes[i].t;
            g_half = modes[i].half;
            return 0;
        }
    return -1;
}
static void gemm_mode_init(void) {
    if (g_gemm_init) return;
    g_gemm_init = 1;
    const char *m = getenv("ANYREF_GEMM");
    if (m && *m && k_set_gemm_mode(m))
        fprintf(stderr, "warning: ANYREF_GEMM=%s is not fp32, tf32, bf16 or fp16; GEMMs stay fp32\n", m);
}
int kc_gemm_half_mode(void) {
    gemm_mode_init();
    return g_half;
}
const char *k_gemm_mode(void) {
    gemm_mode_init();
    return g_gemm_mode;
}
const char *k_gemm_detail(void) { return ""; }   /* the modes run natively (tensor cores) */
int k_mem_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) return -1;
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return 0;
}

cublasHandle_t kc_cublas(void) {
    if (!g_cublas) KC_CUBLAS(cublasCreate(&g_cublas));
    return g_cublas;
}

static void *g_ws[KC_WS_SLOTS];
static size_t g_ws_bytes[KC_WS_SLOTS];
static int g_ws_async = -1;   /* stream-ordered allocation usable (cudaDevAttrMemoryPoolsSupported) */
/* A workspace that grows is replaced in stream order on the compute stream
 * (cudaFreeAsync / cudaMallocAsync on stream 0): the old one is released once
 * the kernels queued before it are done, and the host does not wait. A plain
 * cudaFree would synchronise the whole device, NCCL's stream included, so a
 * rank whose all-reduce waits for a stalled peer would block here, where
 * dist.timeout_s cannot fire. Without memory pools: cudaFree / cudaMalloc. */
void *kc_workspace(int slot, size_t bytes) {
    if (bytes < 256) bytes = 256;
    if (bytes > g_ws_bytes[slot]) {
        size_t want = bytes + bytes / 4; /* headroom so slowly growing shapes do not realloc each call */
        if (g_ws_async < 0) {
            int dev = 0, pools = 0;
            g_ws_async = cudaGetDevice(&dev) == cudaSuccess &&
                         cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev) == cudaSuccess && pools;
            (void)cudaGetLastError();
        }
        if (g_ws[slot]) {
            if (g_ws_async) KC_CUDA(cudaFreeAsync(g_ws[slot], 0));
            else KC_CUDA(cudaFree(g_ws[slot])); /* waits for kernels still using it */
        }
        g_ws[slot] = NULL;
        g_ws_bytes[slot] = 0;
        if (g_ws_async) KC_CUDA(cudaMallocAsync(&g_ws[slot], want, 0));
        else KC_CUDA(cudaMalloc(&g_ws[slot], want));
        g_ws_bytes[slot] = want;
    }
    return g_ws[slot];
}

/* ---- backend memory and control ---------------------------------------- */
const char *k_backend_name(void) { return "cuda"; }

void *k_malloc(size_t bytes) {
    void *p = NULL;
    /* cudaMalloc aligns to at least 256 bytes; round up like the CPU backend. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (cudaMalloc(&p, rounded ? rounded : 64) != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        return NULL;
    }
    return p;
}
void k_free(void *p) {
    if (p) KC_CUDA(cudaFree(p));
}
void k_zero(void *p, size_t bytes) {
    if (p && bytes) KC_CUDA(cudaMemset(p, 0, bytes));
}
void k_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    const char *d = (const char *)dst, *s = (const char *)src;
    if (d < s + bytes && s < d + bytes) { /* overlapping: go through the temp workspace */
        void *tmp = kc_workspace(KC_WS_TEMP, bytes);
        KC_CUDA(cudaMemcpy(tmp, src, bytes, cudaMemcpyDeviceToDevice));
        KC_CUDA(cudaMemcpy(dst, tmp, bytes, cudaMemcpyDeviceToDevice));
        return;
    }
    KC_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
void k_upload(void *dst, const void *host_src, size_t bytes) {
    if (bytes) KC_CUDA(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
}
void k_download(void *host_dst, const void *src, size_t bytes) {
    if (bytes) KC_CUDA(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
}
void k_sync(void) { KC_CUDA(cudaDeviceSynchronize()); }
/* Host threads do not matter on this backend: the GPU does the work. */
int k_num_threads(void) { return 1; }
void k_set_num_threads(int n) { (void)n; }

/* ---- GEMM ---------------------------------------------------------------- */
__global__ static void scale_rows_kernel(float *C, int M, int N, int ldc, float beta) {
    size_t total = (size_t)M * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float *c = C + (i / N) * (size_t)ldc + i % N;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: a row-major
 * matrix with row stride ld is the column-major transpose with leading dim ld,
 * so cuBLAS gets the operands swapped with their own transpose flags. */
void kc_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta != 1.0f) {
            scale_rows_kernel<<<kc_blocks((size_t)M * N), KC_BLOCK>>>(C, M, N, ldc, beta);
            KC_LAUNCHED();
        }
        return;
    }
    gemm_mode_init();
    if (g_compute == CUBLAS_COMPUTE_32F)
        KC_CUBLAS(cublasSgemm(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                              N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
    else
        KC_CUBLAS(cublasGemmEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                               N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc,
                               g_compute, CUBLAS_GEMM_DEFAULT));
}

void kc_gemm_batched(int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                     float beta, float *C, int ldc, long long sC, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < batch; i++) kc_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C + i * sC, ldc);
        return;
    }
    gemm_mode_init();
    if (g_compute == CUBLAS_COMPUTE_32F)
        KC_CUBLAS(cublasSgemmStridedBatched(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                            B, ldb, sB, A, lda, sA, &beta, C, ldc, sC, batch));
    else
        KC_CUBLAS(cublasGemmStridedBatchedEx(kc_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                             B, CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda, sA, &beta,
                                             C, CUDA_R_32F, ldc, sC, batch, g_compute, CUBLAS_GEMM_DEFAULT));
}

/* ---- column / channel sums ------------------------------------------------ */
struct ColsumOp {
    const float *x;
    int D;
    __device__ float operator()(int n, int d) const { return x[(size_t)n * D + d]; }
};
void kc_colsum_acc(float *dst, const float *src, int N, int C) {
    kc_colreduce_acc(dst, N, C, ColsumOp{src, C});
}

/* One block per channel; threads stride over (b, p). */
__global__ static void chansum_kernel(float *dst, const float *src, int B, int C, size_t P) {
    const int c = blockIdx.x;
    float s = 0.0f;
    for (int b = 0; b < B; b++) {
        const float *x = src + ((size_t)b * C + c) * P;
        for (size_t p = threadIdx.x; p < P; p += blockDim.x) s += x[p];
    }
    s = kc_block_sum(s);
    if (threadIdx.x == 0) dst[c] += s;
}
void kc_chansum_acc(float *dst, const float *src, int B, int C, size_t P) {
    if (!dst || B <= 0 || C <= 0) return;
    chansum_kernel<<<C, KC_BLOCK>>>(dst, src, B, C, P);
    KC_LAUNCHED();
}
