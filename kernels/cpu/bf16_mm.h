/* kernels/cpu/bf16_mm.h — the CPU backend's batched bf16 product
 * (kernels/cpu/bf16.c), for its other kernels (the bf16 SAM attention). Not
 * part of kernels.h: the CUDA backend has its own (cublasGemmStridedBatchedEx). */
#ifndef ANYREF_KERNELS_CPU_BF16_MM_H
#define ANYREF_KERNELS_CPU_BF16_MM_H
#include <stddef.h>
#include <stdint.h>

/* A grow-once buffer of n elements of size sz (*buf, *cap elements; NULL when
 * the heap has no room, the old buffer kept). */
void *cpu_grow(void **buf, size_t *cap, size_t n, size_t sz);

/* C[i] = A[i] op(B[i]) for i < batch, fp32 accumulation:
 *   A[i]: bf16 [M,K], rows K apart, starting at A + i*sA;
 *   B[i]: bf16 [K,N], rows N apart (tb 0), or stored [N,K], rows K apart, and
 *         read transposed (tb 1); starting at B + i*sB;
 *   C[i]: fp32 [M,N] dense, starting at C + i*M*N (overwritten).
 * A oneDNN bf16 matmul where it has a fast kernel (ANYREF_DNNL builds, unless
 * ANYREF_CPU_BF16=emulate), else the operands widened and multiplied by
 * OpenBLAS: the same numbers up to summation order. Call it from one thread
 * (its buffers and primitive cache are the backend's own); it runs parallel
 * inside. */
void cpu_bf16_bmm(float *C, const uint16_t *A, long long sA, const uint16_t *B, long long sB, int tb, int batch,
                  int M, int K, int N);

#endif
