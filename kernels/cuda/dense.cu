/* kernels/cuda/dense.cu — cuBLAS-backed primitives: matmul, linear, LoRA linear,
 * plus the dropout mask and the embedding lookup that sit beside them. */
#include "kernels/cuda/common.cuh"

/* C[M,N] = alpha op(A) op(B) + beta C; A is [M,K] or [K,M], B is [K,N] or [N,K]. */
void matmul(float *C, const float *A, const float *B, int M, int N, int K,
            int ta, int tb, float alpha, float beta) {
    kc_gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

/* out[n, j] = b[j] for every row (the GEMM then accumulates with beta = 1).
 * Wide rows (OUT >= 128): blocks over rows, threads over columns, with no
 * per-element 64-bit modulo (which made the element-per-thread fill take
 * ~30 us a call in ViT-H's blocks on an H200); narrow ones keep one thread per
 * element, so that a block does not idle most of its threads on a short row. */
__global__ static void fill_rows_kernel(float *out, const float *b, int N, int OUT) {
    for (size_t r = blockIdx.x; r < (size_t)N; r += gridDim.x) {
        float *o = out + r * OUT;
        for (int c = threadIdx.x; c < OUT; c += blockDim.x) o[c] = b[c];
    }
}
__global__ static void fill_elems_kernel(float *out, const float *b, int N, int OUT) {
    size_t total = (size_t)N * OUT;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = b[i % OUT];
}
static void fill_rows(float *out, const float *b, int N, int OUT) {
    if (OUT >= 128)
        fill_rows_kernel<<<(unsigned)(N < (1 << 20) ? N : (1 << 20)), KC_BLOCK>>>(out, b, N, OUT);
    else
        fill_elems_kernel<<<kc_blocks((size_t)N * OUT), KC_BLOCK>>>(out, b, N, OUT);
    KC_LAUNCHED();
}

/* out[N,OUT] = in[N,IN] @ w[OUT,IN]^T + b */
void linear_forward(float *out, const float *in, const float *w, const float *b, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (b) fill_rows(out, b, N, OUT);
    matmul(out, in, w, N, OUT, IN, 0, 1, 1.0f, b ? 1.0f : 0.0f);
}

void linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, int N, int IN, int OUT) {
    if (din) matmul(din, dout, w, N, IN, OUT, 0, 0, 1.0f, 1.0f);  /* [N,IN] += dout[N,OUT] w[OUT,IN] */
    if (dw)  matmul(dw, dout, in, OUT, IN, N, 1, 0, 1.0f, 1.0f);  /* [OUT,IN] += dout^T in */
    if (db)  kc_colsum_acc(db, dout, N, OUT);
}

__global__ static void mul_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] * b[i];
}

/* out = in w^T + b + scale * ((in ⊙ mask) A^T) B^T;  saves xd = in ⊙ mask, u = xd A^T */
void lora_forward(float *out, float *xd, float *u, const float *in, const float *mask,
                  const float *w, const float *b, const float *A, const float *B,
                  float scale, int N, int IN, int OUT, int R) {
    const float *x = in;
    if (mask) {
        size_t n = (size_t)N * IN;
        mul_kernel<<<kc_blocks(n), KC_BLOCK>>>(xd, in, mask, n);
        KC_LAUNCHED();
        x = xd;
    }
    matmul(u, x, A, N, R, IN, 0, 1, 1.0f, 0.0f);        /* u[N,R] = x A^T */
    if (w) linear_forward(out, in, w, b, N, IN, OUT);   /* NULL: out holds the base product already */
    matmul(out, u, B, N, OUT, R, 0, 1, scale, 1.0f);    /* out += scale u B^T */
}

/* din[n,i] += mask[n,i] * Σ_r du[n,r] A[r,i]  (R is the small LoRA rank) */
__global__ static void lora_din_masked_kernel(float *din, const float *du, const float *A,
                                              const float *mask, int N, int IN, int R) {
    size_t total = (size_t)N * IN;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        size_t n = idx / IN, i = idx % IN;
        const float *dun = du + n * R;
        float s = 0.0f;
        for (int r = 0; r < R; r++) s += dun[r] * A[(size_t)r * IN + i];
        din[idx] += s * mask[idx];
    }
}

void lora_backward(float *din, float *dw, float *db, float *dA, float *dB,
                   const float *dout, const float *in, const float *xd, const float *u,
                   const float *mask, const float *w, const float *A, const float *B,
                   float scale, int N, int IN, int OUT, int R) {
    const float *x = mask ? xd : in;
    if (w) linear_backward(din, dw, db, dout, in, w, N, IN, OUT);   /* NULL: the caller's base */
    if (dB) matmul(dB, dout, u, OUT, R, N, 1, 0, scale, 1.0f);       /* [OUT,R] += s dout^T u */
    if ((!dA && !din) || N <= 0 || R <= 0) return;
    /* du[N,R] = s dout B (internal temp; linear_backward above is done with its workspace) */
    float *du = (float *)kc_workspace(KC_WS_TEMP, (size_t)N * R * sizeof(float));
    matmul(du, dout, B, N, R, OUT, 0, 0, scale, 0.0f);
    if (dA) matmul(dA, du, x, R, IN, N, 1, 0, 1.0f, 1.0f);           /* [R,IN] += du^T x */
    if (din) {
        if (!mask) {
            matmul(din, du, A, N, IN, R, 0, 0, 1.0f, 1.0f);            /* [N,IN] += du A */
        } else {
            lora_din_masked_kernel<<<kc_blocks((size_t)N * IN), KC_BLOCK>>>(din, du, A, mask, N, IN, R);
            KC_LAUNCHED();
        }
    }
}

/* Bit-identical to kernels/cpu/blas.c: splitmix64 finaliser of seed + (i+1)·golden. */
__global__ static void dropout_mask_kernel(float *mask, size_t n, float p, float keep_scale, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        double uni = (double)(z >> 40) * (1.0 / 16777216.0);
        mask[i] = uni >= (double)p ? keep_scale : 0.0f;
    }
}
__global__ static void fill_kernel(float *x, float v, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

void dropout_mask(float *mask, size_t n, float p, uint64_t seed) {
    if (n == 0) return;
    if (p <= 0.0f) {
        fill_kernel<<<kc_blocks(n), KC_BLOCK>>>(mask, 1.0f, n);
        KC_LAUNCHED();
        return;
    }
    if (p >= 1.0f) { k_zero(mask, n * sizeof(float)); return; }
    const float keep_scale = 1.0f / (1.0f - p);
    dropout_mask_kernel<<<kc_blocks(n), KC_BLOCK>>>(mask, n, p, keep_scale, seed);
    KC_LAUNCHED();
}

__global__ static void embedding_forward_kernel(float *out, const int *ids, const float *table, int N, int D) {
    size_t total = (size_t)N * D;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / D, d = i % D;
        if (ids[n] >= 0) out[i] = table[(size_t)ids[n] * D + d]; /* < 0: spliced row, left as is */
    }
}
void embedding_forward(float *out, const int *ids, const float *table, int N, int D) {
    if (N <= 0 || D <= 0) return;
    embedding_forward_kernel<<<kc_blocks((size_t)N * D), KC_BLOCK>>>(out, ids, table, N, D);
    KC_LAUNCHED();
}

/* Repeated ids scatter into the same row. Deterministic (the same bits on every
 * run, so a resumed run matches an uninterrupted one): one thread per column d
 * walks the N ids in order, so no two threads ever touch the same element. */
__global__ static void embedding_backward_kernel(float *dtable, const float *dout, const int *ids, int N, int D) {
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x)
        for (int n = 0; n < N; n++) {
            const int id = ids[n];
            if (id >= 0) dtable[(size_t)id * D + d] += dout[(size_t)n * D + d];
        }
}
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    if (!dtable || N <= 0 || D <= 0) return;
    embedding_backward_kernel<<<kc_blocks((size_t)D), KC_BLOCK>>>(dtable, dout, ids, N, D);
    KC_LAUNCHED();
}
