/* kernels/cpu/imagebind.c — CPU primitives added for the ImageBind audio
 * encoder (model/imagebind_audio.c): a batched transpose of the last two dims,
 * in[B, R, C] -> out[B, C, R], and its accumulating backward.
 * Cache-blocked in 32 x 32 tiles; OpenMP over (batch, tile row). Depends on
 * kernels/kernels.h only. */
#include "kernels/kernels.h"

#include <stddef.h>

enum { TILE = 32 };

/* dst[b, c, r] (+)= src[b, r, c] over all b, r < R, c < C. */
static void transpose_tiles(float *dst, const float *src, int B, int R, int C, int accumulate) {
    if (B <= 0 || R <= 0 || C <= 0) return;
    const int tr = (R + TILE - 1) / TILE;
    const size_t RC = (size_t)R * C;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * RC > 32768)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < tr; t++) {
            const float *s = src + (size_t)b * RC;
            float *d = dst + (size_t)b * RC;
            const int r0 = t * TILE, r1 = r0 + TILE < R ? r0 + TILE : R;
            for (int c0 = 0; c0 < C; c0 += TILE) {
                const int c1 = c0 + TILE < C ? c0 + TILE : C;
                for (int c = c0; c < c1; c++) {
                    float *dr = d + (size_t)c * R;
                    if (accumulate)
                        for (int r = r0; r < r1; r++) dr[r] += s[(size_t)r * C + c];
                    else
                        for (int r = r0; r < r1; r++) dr[r] = s[(size_t)r * C + c];
                }
            }
        }
}

void transpose_forward(float *out, const float *in, int B, int R, int C) {
    transpose_tiles(out, in, B, R, C, 0);
}

/* din[b, r, c] += dout[b, c, r]: the transpose of dout[B, C, R]. */
void transpose_backward(float *din, const float *dout, int B, int R, int C) {
    if (!din) return;
    transpose_tiles(din, dout, B, C, R, 1);
}
