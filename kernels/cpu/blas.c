/* kernels/cpu/blas.c — GEMM-backed primitives: matmul, linear, LoRA linear,
 * plus the dropout mask and the embedding lookup that sit beside them. */
#include "kernels/kernels.h"
#include <cblas.h>
#include <string.h>

/* C[M,N] = alpha op(A) op(B) + beta C; A is [M,K] or [K,M], B is [K,N] or [N,K]. */
void matmul(float *C, const float *A, const float *B, int M, int N, int K,
            int ta, int tb, float alpha, float beta) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* op(A)op(B) is the zero matrix */
        for (long i = 0; i < (long)M * N; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

/* out[n,:] = b (the GEMM then accumulates onto it with beta = 1, like addmm) */
static void fill_bias_rows(float *out, const float *b, int N, int OUT) {
    #pragma omp parallel for if ((long)N * OUT > 32768)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, b, (size_t)OUT * sizeof(float));
}

/* db[j] += Σ_n dout[n,j]: threads own blocks of 256 columns and walk the rows,
 * so every read is contiguous. */
static void colsum_acc(float *db, const float *dout, int N, int OUT) {
    #pragma omp parallel for if ((long)N * OUT > 32768)
    for (int j0 = 0; j0 < OUT; j0 += 256) {
        int nj = OUT - j0 < 256 ? OUT - j0 : 256;
        float acc[256] = {0};
        for (int n = 0; n < N; n++) {
            const float *row = dout + (size_t)n * OUT + j0;
            #pragma omp simd
            for (int j = 0; j < nj; j++) acc[j] += row[j];
        }
        for (int j = 0; j < nj; j++) db[j0 + j] += acc[j];
    }
}

/* out[N,OUT] = in[N,IN] @ w[OUT,IN]^T + b */
void linear_forward(float *out, const float *in, const float *w, const float *b, int N, int IN, int OUT) {
    if (b) fill_bias_rows(out, b, N, OUT);
    matmul(out, in, w, N, OUT, IN, 0, 1, 1.0f, b ? 1.0f : 0.0f);
}

void linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, int N, int IN, int OUT) {
    if (din) matmul(din, dout, w, N, IN, OUT, 0, 0, 1.0f, 1.0f);  /* [N,IN] += dout[N,OUT] w[OUT,IN] */
    if (dw)  matmul(dw, dout, in, OUT, IN, N, 1, 0, 1.0f, 1.0f);  /* [OUT,IN] += dout^T in */
    if (db)  colsum_acc(db, dout, N, OUT);
}

/* out = in w^T + b + scale * ((in ⊙ mask) A^T) B^T;  saves xd = in ⊙ mask, u = xd A^T */
void lora_forward(float *out, float *xd, float *u, const float *in, const float *mask,
                  const float *w, const float *b, const float *A, const float *B,
                  float scale, int N, int IN, int OUT, int R) {
    const float *x = in;
    if (mask) {
        size_t n = (size_t)N * IN;
        #pragma omp parallel for if (n > 65536)
        for (size_t i = 0; i < n; i++) xd[i] = in[i] * mask[i];
        x = xd;
    }
    matmul(u, x, A, N, R, IN, 0, 1, 1.0f, 0.0f);        /* u[N,R] = x A^T */
    if (w) linear_forward(out, in, w, b, N, IN, OUT);   /* NULL: out holds the base product already */
    matmul(out, u, B, N, OUT, R, 0, 1, scale, 1.0f);    /* out += scale u B^T */
}

void lora_backward(float *din, float *dw, float *db, float *dA, float *dB,
                   const float *dout, const float *in, const float *xd, const float *u,
                   const float *mask, const float *w, const float *A, const float *B,
                   float scale, int N, int IN, int OUT, int R) {
    const float *x = mask ? xd : in;
    if (w) linear_backward(din, dw, db, dout, in, w, N, IN, OUT);   /* NULL: the caller's base */
    if (dB) matmul(dB, dout, u, OUT, R, N, 1, 0, scale, 1.0f);       /* [OUT,R] += s dout^T u */
    if (!dA && !din) return;
    /* du[rows,R] = s dout B, in row blocks on the stack (R is the small LoRA rank). */
    enum { DU_FLOATS = 4096 };
    float du[DU_FLOATS];
    int rows = R < DU_FLOATS ? DU_FLOATS / R : 1;
    for (int n0 = 0; n0 < N; n0 += rows) {
        int nr = N - n0 < rows ? N - n0 : rows;
        matmul(du, dout + (size_t)n0 * OUT, B, nr, R, OUT, 0, 0, scale, 0.0f);     /* [nr,R] */
        if (dA) matmul(dA, du, x + (size_t)n0 * IN, R, IN, nr, 1, 0, 1.0f, 1.0f);  /* [R,IN] += du^T x */
        if (!din) continue;
        if (!mask) {
            matmul(din + (size_t)n0 * IN, du, A, nr, IN, R, 0, 0, 1.0f, 1.0f);    /* += du A */
            continue;
        }
        /* din += (du A) ⊙ mask, row by row: t = Σ_r du[n,r] A[r,:] as R contiguous
         * vectorised axpys into a stack row (IN floats: 16 KiB at 4096), then one masked add. */
        #pragma omp parallel for if ((long)nr * IN * R > 65536)
        for (int n = 0; n < nr; n++) {
            float t[IN];
            float *dx = din + (size_t)(n0 + n) * IN;
            const float *mk = mask + (size_t)(n0 + n) * IN;
            const float *dun = du + (size_t)n * R;
            #pragma omp simd
            for (int i = 0; i < IN; i++) t[i] = dun[0] * A[i];
            for (int r = 1; r < R; r++) {
                const float *a = A + (size_t)r * IN;
                const float c = dun[r];
                #pragma omp simd
                for (int i = 0; i < IN; i++) t[i] += c * a[i];
            }
            #pragma omp simd
            for (int i = 0; i < IN; i++) dx[i] += t[i] * mk[i];
        }
    }
}

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void dropout_mask(float *mask, size_t n, float p, uint64_t seed) {
    if (p <= 0.0f) { for (size_t i = 0; i < n; i++) mask[i] = 1.0f; return; }
    if (p >= 1.0f) { memset(mask, 0, n * sizeof(float)); return; }
    const float keep_scale = 1.0f / (1.0f - p);
    #pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint64_t z = mix64(seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
        double uni = (double)(z >> 40) * (1.0 / 16777216.0);
        mask[i] = uni >= p ? keep_scale : 0.0f;
    }
}

void embedding_forward(float *out, const int *ids, const float *table, int N, int D) {
    #pragma omp parallel for if ((long)N * D > 65536)
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0) memcpy(out + (size_t)n * D, table + (size_t)ids[n] * D, (size_t)D * sizeof(float));
}

/* Rows with the same id must not race: parallelise over the feature dim instead. */
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    if (!dtable) return;
    #pragma omp parallel for if ((long)N * D > 65536)
    for (int d0 = 0; d0 < D; d0 += 64) {
        int d1 = d0 + 64 < D ? d0 + 64 : D;
        for (int n = 0; n < N; n++) {
            if (ids[n] < 0) continue;
            float *t = dtable + (size_t)ids[n] * D;
            const float *g = dout + (size_t)n * D;
            for (int d = d0; d < d1; d++) t[d] += g[d];
        }
    }
}
