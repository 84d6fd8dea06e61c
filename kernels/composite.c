/* kernels/composite.c — primitives defined purely in terms of other primitives,
 * shared by both backends (compiled into every build). */
#include "kernels/kernels.h"

void matmul_forward(float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb) {
    matmul(C, A, B, M, N, K, ta, tb, 1.0f, 0.0f);
}

/* C = op(A) op(B).  dop(A)[M,K] = dC @ op(B)^T, dop(B)[K,N] = op(A)^T @ dC,
 * each written in the stored layout of A / B. */
void matmul_backward(float *dA, float *dB, const float *dC, const float *A, const float *B,
                     int M, int N, int K, int ta, int tb) {
    if (dA) {
        if (!ta) matmul(dA, dC, B, M, K, N, 0, !tb, 1.0f, 1.0f);   /* [M,K] = dC[M,N] op(B)^T */
        else     matmul(dA, B, dC, K, M, N, tb, 1, 1.0f, 1.0f);    /* [K,M] = op(B)[K,N] dC^T */
    }
    if (dB) {
        if (!tb) matmul(dB, A, dC, K, N, M, !ta, 0, 1.0f, 1.0f);   /* [K,N] = op(A)^T dC */
        else     matmul(dB, dC, A, N, K, M, 1, ta, 1.0f, 1.0f);    /* [N,K] = dC^T op(A) */
    }
}
