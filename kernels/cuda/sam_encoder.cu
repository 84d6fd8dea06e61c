/* kernels/cuda/sam_encoder.cu — CUDA backend of the SAM image encoder
 * primitives of kernels.h (forward only): patchify, window partition and
 * unpartition, get_rel_pos, and attention with decomposed relative positions.
 *
 * The data movement and get_rel_pos are one thread per output element.
 * Attention processes a chunk of nb grids (all heads) at a time, nb sized by
 * the caller's scratch: per head, Q K^T over the chunk's grids is one cuBLAS
 * strided-batched GEMM straight on the qkv Linear's output (row stride 3C) into
 * logits [nb, heads, T, T]; a kernel computes the rows' q·Rh and q·Rw terms
 * [nb, heads, T, h+w]; one warp per row adds them and takes the softmax in
 * place; P V is again one batched GEMM per head, written into out[B,T,C].
 * Depends on: kernels/cuda/common.cuh (cuBLAS helpers, error recording). */
#include "kernels/cuda/common.cuh"
#include <math.h>

#define KC_FOR(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---- data movement --------------------------------------------------------- */
__global__ static void patchify_k(float *out, const float *in, int B, int Cin, int H, int W, int p) {
    const int gh = H / p, gw = W / p, K = Cin * p * p;
    const size_t total = (size_t)B * gh * gw * K;
    KC_FOR(idx, total) {
        const int k = (int)(idx % K);
        const size_t r = idx / K;
        const int gx = (int)(r % gw), gy = (int)(r / gw % gh);
        const size_t b = r / ((size_t)gw * gh);
        const int kx = k % p, ky = k / p % p, ci = k / (p * p);
        out[idx] = in[((b * Cin + ci) * H + (size_t)gy * p + ky) * W + (size_t)gx * p + kx];
    }
}
void sam_patchify_forward(float *out, const float *in, int B, int Cin, int H, int W, int p) {
    if (B <= 0 || Cin <= 0 || p <= 0 || H < p || W < p) return;
    const size_t total = (size_t)B * (H / p) * (W / p) * Cin * p * p;
    patchify_k<<<kc_blocks(total), KC_BLOCK>>>(out, in, B, Cin, H, W, p);
    KC_LAUNCHED();
}

__global__ static void partition_k(float *out, const float *in, const float *pad,
                                   int B, int H, int W, int C, int ws, int nh, int nw) {
    const size_t total = (size_t)B * nh * nw * ws * ws * C;
    KC_FOR(idx, total) {
        const int c = (int)(idx % C);
        const size_t cell = idx / C;
        const int wx = (int)(cell % ws), wy = (int)(cell / ws % ws);
        const size_t win = cell / ((size_t)ws * ws);
        const int j = (int)(win % nw), i = (int)(win / nw % nh);
        const size_t b = win / ((size_t)nw * nh);
        const int y = i * ws + wy, x = j * ws + wx;
        out[idx] = (y < H && x < W) ? in[((b * H + y) * W + x) * C + c] : (pad ? pad[c] : 0.0f);
    }
}
void sam_window_partition_forward(float *out, const float *in, const float *pad,
                                  int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    partition_k<<<kc_blocks((size_t)B * nh * nw * ws * ws * C), KC_BLOCK>>>(out, in, pad, B, H, W, C, ws, nh, nw);
    KC_LAUNCHED();
}

__global__ static void unpartition_k(float *out, const float *in, int B, int H, int W, int C, int ws,
                                     int nh, int nw) {
    const size_t total = (size_t)B * H * W * C;
    KC_FOR(idx, total) {
        const int c = (int)(idx % C);
        const size_t pix = idx / C;
        const int x = (int)(pix % W), y = (int)(pix / W % H);
        const size_t b = pix / ((size_t)W * H);
        const size_t win = (b * nh + y / ws) * nw + x / ws;
        out[idx] = in[((win * ws + y % ws) * ws + x % ws) * C + c];
    }
}
void sam_window_unpartition_forward(float *out, const float *in, int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    unpartition_k<<<kc_blocks((size_t)B * H * W * C), KC_BLOCK>>>(out, in, B, H, W, C, ws, nh, nw);
    KC_LAUNCHED();
}

/* ---- get_rel_pos ----------------------------------------------------------- */
__global__ static void rel_pos_k(float *out, const float *rel_pos, int qs, int ks, int L, int D, int M,
                                 float qr, float kr, float off, double scale) {
    const size_t total = (size_t)qs * ks * D;
    KC_FOR(idx, total) {
        const int d = (int)(idx % D);
        const int j = (int)(idx / D % ks), i = (int)(idx / ((size_t)D * ks));
        const float rc = __fadd_rn(__fsub_rn(__fmul_rn((float)i, qr), __fmul_rn((float)j, kr)), off);
        int m = (int)rc;
        m = m < 0 ? 0 : m >= M ? M - 1 : m;
        if (L == M) { out[idx] = rel_pos[(size_t)m * D + d]; continue; }
        double src = scale * (m + 0.5) - 0.5;
        if (src < 0) src = 0;
        int i0 = (int)src;
        if (i0 > L - 1) i0 = L - 1;
        const int i1 = i0 < L - 1 ? i0 + 1 : i0;
        const double l1 = src - i0;
        out[idx] = (float)((1.0 - l1) * rel_pos[(size_t)i0 * D + d] + l1 * rel_pos[(size_t)i1 * D + d]);
    }
}
void sam_rel_pos_forward(float *out, const float *rel_pos, int qs, int ks, int L, int D) {
    if (qs <= 0 || ks <= 0 || L <= 0 || D <= 0) return;
    const int M = 2 * (qs > ks ? qs : ks) - 1;
    const double rq = (double)ks / qs > 1.0 ? (double)ks / qs : 1.0;
    const double rk = (double)qs / ks > 1.0 ? (double)qs / ks : 1.0;
    rel_pos_k<<<kc_blocks((size_t)qs * ks * D), KC_BLOCK>>>(out, rel_pos, qs, ks, L, D, M, (float)rq, (float)rk,
                                                           (float)((ks - 1) * rk), (double)L / M);
    KC_LAUNCHED();
}

/* ---- attention with decomposed relative positions -------------------------- */
enum { WARPS_PER_BLOCK = KC_BLOCK / 32 };

/* rel[job, t, i] = q_t · Rh[t_y, i] (i < h), q_t · Rw[t_x, i-h] (i >= h);
 * job = g*heads + hh over the chunk's grids g starting at grid b0. */
__global__ static void rel_terms_k(float *rel, const float *qkv, const float *Rh, const float *Rw,
                                   long b0, int nb, int h, int w, int heads, int hd) {
    const int T = h * w, HW = h + w, C = heads * hd;
    const size_t total = (size_t)nb * heads * T * HW;
    KC_FOR(idx, total) {
        const int i = (int)(idx % HW);
        const int t = (int)(idx / HW % T);
        const size_t job = idx / ((size_t)HW * T);
        const int hh = (int)(job % heads);
        const size_t g = job / heads;
        const float *q = qkv + ((size_t)(b0 + g) * T + t) * 3 * C + (size_t)hh * hd;
        const float *e = i < h ? Rh + ((size_t)(t / w) * h + i) * hd : Rw + ((size_t)(t % w) * w + (i - h)) * hd;
        float s = 0.0f;
        for (int c = 0; c < hd; c++) s += q[c] * e[c];
        rel[idx] = s;
    }
}

/* One warp per logits row (job, t): add the relative terms (rel may be NULL), softmax in place. */
__global__ static void rel_softmax_k(float *L, const float *rel, size_t rows, int h, int w) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return; /* uniform per warp */
    const int T = h * w;
    float *x = L + row * T;
    const float *r = rel ? rel + row * (h + w) : NULL;
    float m = -INFINITY;
    for (int s = lane; s < T; s += 32) {
        float v = x[s];
        if (r) v = v + r[s / w] + r[h + s % w];
        x[s] = v;
        m = fmaxf(m, v);
    }
    m = kc_warp_max(m);
    float sum = 0.0f;
    for (int s = lane; s < T; s += 32) sum += expf(x[s] - m);
    sum = kc_warp_sum(sum);
    const float inv = 1.0f / sum;
    for (int s = lane; s < T; s += 32) x[s] = expf(x[s] - m) * inv;
}

/* Grids per chunk so that the chunk's logits stay near 1 GiB (at least one grid). */
static long att_chunk(int B, int h, int w, int heads) {
    const size_t per = (size_t)heads * h * w * ((size_t)h * w + h + w);
    long nb = (long)(((size_t)1 << 28) / per);
    if (nb < 1) nb = 1;
    return nb < B ? nb : B;
}

size_t sam_attention_scratch_floats(int B, int h, int w, int heads) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0) return 0;
    return (size_t)att_chunk(B, h, w, heads) * heads * h * w * ((size_t)h * w + h + w);
}

void sam_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                           const float *Rh, const float *Rw, float scale,
                           int B, int h, int w, int heads, int hd) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    const size_t TT = (size_t)T * T, per = (size_t)heads * T * ((size_t)T + h + w);
    long nbmax = (long)(scratch_floats / per);
    if (nbmax < 1) { kc_fail("sam_attention_forward", __FILE__, __LINE__, "scratch smaller than one grid"); return; }
    const int rel = Rh && Rw;
    for (long b0 = 0; b0 < B; b0 += nbmax) {
        const int nb = (int)(B - b0 < nbmax ? B - b0 : nbmax);
        float *L = scratch, *R = scratch + (size_t)nb * heads * TT;
        const float *base = qkv + (size_t)b0 * T * ld;
        for (int hh = 0; hh < heads; hh++) /* L[g,hh] = scale Q K^T over the chunk's grids g */
            kc_gemm_batched(0, 1, T, T, hd, scale, base + (size_t)hh * hd, ld, (long long)T * ld,
                            base + C + (size_t)hh * hd, ld, (long long)T * ld,
                            0.0f, L + hh * TT, T, (long long)heads * TT, nb);
        if (rel) {
            rel_terms_k<<<kc_blocks((size_t)nb * heads * T * (h + w)), KC_BLOCK>>>(R, qkv, Rh, Rw, b0, nb, h, w,
                                                                                   heads, hd);
            KC_LAUNCHED();
        }
        const size_t rows = (size_t)nb * heads * T;
        rel_softmax_k<<<(unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK), KC_BLOCK>>>(
            L, rel ? R : NULL, rows, h, w);
        KC_LAUNCHED();
        for (int hh = 0; hh < heads; hh++) /* out[g, :, hh] = P V */
            kc_gemm_batched(0, 0, T, hd, T, 1.0f, L + hh * TT, T, (long long)heads * TT,
                            base + 2 * C + (size_t)hh * hd, ld, (long long)T * ld,
                            0.0f, out + (size_t)b0 * T * C + (size_t)hh * hd, C, (long long)T * C, nb);
    }
}
