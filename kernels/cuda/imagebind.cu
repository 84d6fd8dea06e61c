/* kernels/cuda/imagebind.cu — CUDA primitives added for the ImageBind audio
 * encoder (model/imagebind_audio.c): a batched transpose of the last two dims,
 * in[B, R, C] -> out[B, C, R], and its accumulating backward. Classic 32 x 32
 * shared-memory tiles (one padding column against bank conflicts), grid
 * (C tiles, R tiles, B): R up to 65535 tiles (2,097,120 rows); B is chunked by
 * the grid.z limit. Depends on kernels/cuda/common.cuh. */
#include "kernels/cuda/common.cuh"

enum { TT = 32, TROWS = 8 };

/* dst[b, c, r] (+)= src[b, r, c] */
__global__ static void transpose_k(float *dst, const float *src, int R, int C, int accumulate) {
    __shared__ float tile[TT][TT + 1];
    const size_t RC = (size_t)R * C;
    const float *s = src + (size_t)blockIdx.z * RC;
    float *d = dst + (size_t)blockIdx.z * RC;
    const int c0 = blockIdx.x * TT, r0 = blockIdx.y * TT;
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        if (r < R && c < C) tile[i][threadIdx.x] = s[(size_t)r * C + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < TT; i += TROWS) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (r < R && c < C) {
            float *p = d + (size_t)c * R + r;
            *p = accumulate ? *p + tile[threadIdx.x][i] : tile[threadIdx.x][i];
        }
    }
}

static void transpose_launch(float *dst, const float *src, int B, int R, int C, int accumulate) {
    if (B <= 0 || R <= 0 || C <= 0) return;
    const size_t RC = (size_t)R * C;
    for (int b0 = 0; b0 < B; b0 += 65535) {   /* grid.z limit */
        const int nb = B - b0 < 65535 ? B - b0 : 65535;
        dim3 grid((unsigned)((C + TT - 1) / TT), (unsigned)((R + TT - 1) / TT), (unsigned)nb);
        transpose_k<<<grid, dim3(TT, TROWS)>>>(dst + (size_t)b0 * RC, src + (size_t)b0 * RC, R, C, accumulate);
        KC_LAUNCHED();
    }
}

void transpose_forward(float *out, const float *in, int B, int R, int C) {
    transpose_launch(out, in, B, R, C, 0);
}

/* din[b, r, c] += dout[b, c, r] */
void transpose_backward(float *din, const float *dout, int B, int R, int C) {
    if (!din) return;
    transpose_launch(din, dout, B, C, R, 1);
}
