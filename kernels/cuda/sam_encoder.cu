/* kernels/cuda/sam_encoder.cu — CUDA backend of the SAM image encoder
 * primitives of kernels.h: patchify, window partition and unpartition,
 * get_rel_pos, and attention with decomposed relative positions, and the
 * backward of all but patchify (the optionally trainable encoder).
 *
 * get_rel_pos is one thread per output element; the window partition and
 * unpartition one block per row of C channels.
 * Attention processes a chunk of nb grids (all heads) at a time, nb sized by
 * the caller's scratch: per head, Q K^T over the chunk's grids is one cuBLAS
 * strided-batched GEMM straight on the qkv Linear's output (row stride 3C) into
 * logits [nb, heads, T, T]; a kernel computes the rows' q·Rh and q·Rw terms
 * [nb, heads, T, h+w] (one warp per row); one warp per row adds them and takes
 * the softmax in place (bf16: into the bf16 probabilities); P V is again one
 * batched GEMM per head, written into out[B,T,C]. In bf16 (the frozen bf16
 * encoder in train.gemm = bf16) qkv is narrowed head-major first, so each
 * product is one GEMM over every (grid, head) pair of the chunk.
 * Attention backward recomputes P the same way per chunk, then dP = dO V^T,
 * dS = P (dP - Σ P dP) one warp per row, and dV, dQ, dK by batched GEMMs that
 * accumulate into dqkv; the relative terms' row sums give dq (one thread per
 * element) and the tables' gradients (one thread per table entry, no atomics).
 * Depends on: kernels/cuda/common.cuh (cuBLAS helpers, error recording). */
#include "kernels/cuda/common.cuh"
#include "kernels/half_bits.h"
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

/* Window partition and unpartition: one block per window cell (output row),
 * its threads over the C channels, so the cell's coordinates are worked out
 * once per row rather than per element (64-bit divisions per element made the
 * element-per-thread version ~20x slower than its memory traffic on an H200)
 * and both the read and the write stay coalesced. */
static unsigned rows_grid(size_t rows) {
    return (unsigned)(rows < 1 ? 1 : rows < ((size_t)1 << 20) ? rows : ((size_t)1 << 20));
}

__global__ static void partition_k(float *out, const float *in, const float *pad,
                                   int B, int H, int W, int C, int ws, int nh, int nw) {
    const size_t cells = (size_t)B * nh * nw * ws * ws;
    for (size_t cell = blockIdx.x; cell < cells; cell += gridDim.x) {
        const int wx = (int)(cell % ws), wy = (int)(cell / ws % ws);
        const size_t win = cell / ((size_t)ws * ws);
        const int j = (int)(win % nw), i = (int)(win / nw % nh);
        const size_t b = win / ((size_t)nw * nh);
        const int y = i * ws + wy, x = j * ws + wx;
        float *o = out + cell * C;
        if (y < H && x < W) {
            const float *src = in + ((b * H + y) * W + x) * C;
            for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = src[c];
        } else {
            for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = pad ? pad[c] : 0.0f;
        }
    }
}
void sam_window_partition_forward(float *out, const float *in, const float *pad,
                                  int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    partition_k<<<rows_grid((size_t)B * nh * nw * ws * ws), KC_BLOCK>>>(out, in, pad, B, H, W, C, ws, nh, nw);
    KC_LAUNCHED();
}

__global__ static void unpartition_k(float *out, const float *in, int B, int H, int W, int C, int ws,
                                     int nh, int nw) {
    const size_t pixels = (size_t)B * H * W;
    for (size_t pix = blockIdx.x; pix < pixels; pix += gridDim.x) {
        const int x = (int)(pix % W), y = (int)(pix / W % H);
        const size_t b = pix / ((size_t)W * H);
        const size_t win = (b * nh + y / ws) * nw + x / ws;
        const float *src = in + ((win * ws + y % ws) * ws + x % ws) * C;
        float *o = out + pix * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = src[c];
    }
}
void sam_window_unpartition_forward(float *out, const float *in, int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    unpartition_k<<<rows_grid((size_t)B * H * W), KC_BLOCK>>>(out, in, B, H, W, C, ws, nh, nw);
    KC_LAUNCHED();
}

/* din[B,H,W,C] += dout at the real cells of the windows */
__global__ static void partition_back_k(float *din, const float *dout, int B, int H, int W, int C, int ws,
                                        int nh, int nw) {
    KC_FOR(idx, (size_t)B * H * W * C) {
        const int c = (int)(idx % C);
        const size_t pix = idx / C;
        const int x = (int)(pix % W), y = (int)(pix / W % H);
        const size_t b = pix / ((size_t)W * H);
        const size_t win = (b * nh + y / ws) * nw + x / ws;
        din[idx] += dout[((win * ws + y % ws) * ws + x % ws) * C + c];
    }
}
/* dpad[c] += Σ over the padded cells; one thread per channel (deterministic) */
__global__ static void partition_pad_back_k(float *dpad, const float *dout, int B, int H, int W, int C, int ws,
                                            int nh, int nw) {
    KC_FOR(c, (size_t)C) {
        double acc = 0.0;
        for (size_t win = 0; win < (size_t)B * nh * nw; win++) {
            const int j = (int)(win % nw), i = (int)(win / nw % nh);
            for (int wy = 0; wy < ws; wy++)
                for (int wx = 0; wx < ws; wx++)
                    if (i * ws + wy >= H || j * ws + wx >= W)
                        acc += dout[((win * ws + wy) * ws + wx) * C + c];
        }
        dpad[c] += (float)acc;
    }
}
void sam_window_partition_backward(float *din, float *dpad, const float *dout,
                                   int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    if (din) {
        partition_back_k<<<kc_blocks((size_t)B * H * W * C), KC_BLOCK>>>(din, dout, B, H, W, C, ws, nh, nw);
        KC_LAUNCHED();
    }
    if (dpad && (nh * ws > H || nw * ws > W)) {
        partition_pad_back_k<<<kc_blocks((size_t)C), KC_BLOCK>>>(dpad, dout, B, H, W, C, ws, nh, nw);
        KC_LAUNCHED();
    }
}

/* din[window cell] += dout[B,H,W,C]: each real cell written by one thread */
__global__ static void unpartition_back_k(float *din, const float *dout, int B, int H, int W, int C, int ws,
                                          int nh, int nw) {
    KC_FOR(idx, (size_t)B * H * W * C) {
        const int c = (int)(idx % C);
        const size_t pix = idx / C;
        const int x = (int)(pix % W), y = (int)(pix / W % H);
        const size_t b = pix / ((size_t)W * H);
        const size_t win = (b * nh + y / ws) * nw + x / ws;
        din[((win * ws + y % ws) * ws + x % ws) * C + c] += dout[idx];
    }
}
void sam_window_unpartition_backward(float *din, const float *dout, int B, int H, int W, int C, int ws) {
    if (!din || B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    unpartition_back_k<<<kc_blocks((size_t)B * H * W * C), KC_BLOCK>>>(din, dout, B, H, W, C, ws, nh, nw);
    KC_LAUNCHED();
}

/* ---- get_rel_pos ----------------------------------------------------------- */
/* Output (i, j) = l0 * rel_pos[i0] + l1 * rel_pos[i1] (see kernels/cpu/sam_encoder.c). */
__device__ static void rel_src(int i, int j, int L, int M, float qr, float kr, float off, double scale,
                               int *i0, int *i1, double *l1) {
    const float rc = __fadd_rn(__fsub_rn(__fmul_rn((float)i, qr), __fmul_rn((float)j, kr)), off);
    int m = (int)rc;
    m = m < 0 ? 0 : m >= M ? M - 1 : m;
    if (L == M) { *i0 = *i1 = m; *l1 = 0.0; return; }
    double src = scale * (m + 0.5) - 0.5;
    if (src < 0) src = 0;
    int a = (int)src;
    if (a > L - 1) a = L - 1;
    *i0 = a;
    *i1 = a < L - 1 ? a + 1 : a;
    *l1 = src - a;
}

__global__ static void rel_pos_k(float *out, const float *rel_pos, int qs, int ks, int L, int D, int M,
                                 float qr, float kr, float off, double scale) {
    const size_t total = (size_t)qs * ks * D;
    KC_FOR(idx, total) {
        const int d = (int)(idx % D);
        const int j = (int)(idx / D % ks), i = (int)(idx / ((size_t)D * ks));
        int i0, i1;
        double l1;
        rel_src(i, j, L, M, qr, kr, off, scale, &i0, &i1, &l1);
        if (L == M) { out[idx] = rel_pos[(size_t)i0 * D + d]; continue; }
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

/* One thread per table entry (row l, channel d): gathers every (i, j) that reads
 * row l (deterministic, no atomics; qs*ks*L*D steps in all, small tables). */
__global__ static void rel_pos_back_k(float *drel, const float *dout, int qs, int ks, int L, int D, int M,
                                      float qr, float kr, float off, double scale) {
    KC_FOR(idx, (size_t)L * D) {
        const int d = (int)(idx % D), l = (int)(idx / D);
        double acc = 0.0;
        for (int i = 0; i < qs; i++)
            for (int j = 0; j < ks; j++) {
                int i0, i1;
                double l1;
                rel_src(i, j, L, M, qr, kr, off, scale, &i0, &i1, &l1);
                if (i0 != l && i1 != l) continue;
                const double v = dout[((size_t)i * ks + j) * D + d];
                if (i0 == l) acc += (1.0 - l1) * v;
                if (i1 == l) acc += l1 * v;
            }
        drel[idx] += (float)acc;
    }
}
void sam_rel_pos_backward(float *drel_pos, const float *dout, int qs, int ks, int L, int D) {
    if (!drel_pos || qs <= 0 || ks <= 0 || L <= 0 || D <= 0) return;
    const int M = 2 * (qs > ks ? qs : ks) - 1;
    const double rq = (double)ks / qs > 1.0 ? (double)ks / qs : 1.0;
    const double rk = (double)qs / ks > 1.0 ? (double)qs / ks : 1.0;
    rel_pos_back_k<<<kc_blocks((size_t)L * D), KC_BLOCK>>>(drel_pos, dout, qs, ks, L, D, M, (float)rq, (float)rk,
                                                          (float)((ks - 1) * rk), (double)L / M);
    KC_LAUNCHED();
}

/* ---- attention with decomposed relative positions -------------------------- */
enum { WARPS_PER_BLOCK = KC_BLOCK / 32 };

/* rel[job, t, i] = q_t · Rh[t_y, i] (i < h), q_t · Rw[t_x, i-h] (i >= h);
 * job = g*heads + hh over the chunk's grids g starting at grid b0. One warp
 * per row (job, t): the lanes split each dot product's hd terms (coalesced
 * reads of q and of the table's row), a butterfly sum gives every lane the
 * result, lane i % 32 keeps term i and the warp writes 32 terms at a time.
 * (One thread per term, reading its table row with a stride of hd floats
 * across the warp, took 380 us a window block of ViT-H on an H200.) */
__global__ static void rel_terms_k(float *rel, const float *qkv, const float *Rh, const float *Rw,
                                   long b0, int nb, int h, int w, int heads, int hd) {
    const int T = h * w, HW = h + w, C = heads * hd, lane = threadIdx.x & 31;
    const size_t rows = (size_t)nb * heads * T;
    for (size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5); row < rows;
         row += (size_t)gridDim.x * WARPS_PER_BLOCK) {   /* uniform per warp */
        const int t = (int)(row % T);
        const size_t job = row / T;
        const int hh = (int)(job % heads);
        const size_t g = job / heads;
        const float *q = qkv + ((size_t)(b0 + g) * T + t) * 3 * C + (size_t)hh * hd;
        const float *eh = Rh + (size_t)(t / w) * h * hd, *ew = Rw + (size_t)(t % w) * w * hd;
        float *r = rel + row * HW, mine = 0.0f;
        for (int i = 0; i < HW; i++) {
            const float *e = i < h ? eh + (size_t)i * hd : ew + (size_t)(i - h) * hd;
            float s = 0.0f;
            for (int c = lane; c < hd; c += 32) s += q[c] * e[c];
            s = kc_warp_sum(s);
            if (lane == (i & 31)) mine = s;
            if ((i & 31) == 31 || i == HW - 1) {
                if (lane <= (i & 31)) r[(i & ~31) + lane] = mine;
            }
        }
    }
}
static void rel_terms(float *R, const float *qkv, const float *Rh, const float *Rw, long b0, int nb, int h, int w,
                      int heads, int hd) {
    const size_t rows = (size_t)nb * heads * h * w, blocks = (rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;
    rel_terms_k<<<rows_grid(blocks), KC_BLOCK>>>(R, qkv, Rh, Rw, b0, nb, h, w, heads, hd);
    KC_LAUNCHED();
}

/* Logit s of a row with its relative terms (rel may be NULL). */
__device__ static inline float rel_logit(const float *x, const float *r, int s, int h, int w) {
    return r ? x[s] + r[s / w] + r[h + s % w] : x[s];
}

/* One warp per logits row (job, t): the softmax of the logits plus the
 * relative terms, in place, or, given p16, into p16 rounded to bf16 (the bf16
 * forward's probabilities; L is left as it was). Two passes over the row: an
 * online max and sum (each lane rescales its sum when its max grows; the lanes
 * then combine), then the probabilities (the relative terms added again), so
 * the row is read twice and written once (before: read three times, written
 * twice; the global blocks' rows are 16 KB each, 1 GiB of logits an image). */
__global__ static void rel_softmax_k(float *L, uint16_t *p16, const float *rel, size_t rows, int h, int w) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return; /* uniform per warp */
    const int T = h * w;
    float *x = L + row * T;
    const float *r = rel ? rel + row * (h + w) : NULL;
    float m = -INFINITY, sum = 0.0f;
    for (int s = lane; s < T; s += 32) {
        const float v = rel_logit(x, r, s, h, w);
        if (v > m) {
            sum = sum * expf(m - v) + 1.0f;   /* m = -inf at first: exp gives 0 */
            m = v;
        } else if (v > -INFINITY) {   /* a -inf logit adds nothing (and -inf - -inf is no number) */
            sum += expf(v - m);
        }
    }
    const float M = kc_warp_max(m);
    sum = kc_warp_sum(m == -INFINITY ? 0.0f : sum * expf(m - M));   /* a lane without elements adds 0 */
    const float inv = 1.0f / sum;
    if (p16) {
        uint16_t *p = p16 + row * T;
        for (int s = lane; s < T; s += 32) p[s] = hb_to_bf16(expf(rel_logit(x, r, s, h, w) - M) * inv);
    } else {
        for (int s = lane; s < T; s += 32) x[s] = expf(rel_logit(x, r, s, h, w) - M) * inv;
    }
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

/* bf16 forward: the chunk's qkv [nb, T, 3, heads, hd] narrowed head-major,
 * x16[which, g, hh, t, c] (which 0 q, 1 k, 2 v), so that Q K^T and P V are
 * one strided-batched GEMM each over all nb*heads (grid, head) pairs (a GEMM
 * per head with batch nb ran cuBLAS's small-tile kernels at ~15 TFLOP/s on
 * ViT-H's 14 x 14 windows on an H200). One block per (g, t) row. */
__global__ static void narrow_qkv_hm_k(uint16_t *x16, const float *qkv, int nb, int T, int heads, int hd) {
    const int C = heads * hd;
    const size_t rows = (size_t)nb * T, plane = rows * C;   /* one of q / k / v, all grids */
    for (size_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const size_t g = row / T;
        const int t = (int)(row % T);
        const float *src = qkv + row * 3 * C;
        for (int j = threadIdx.x; j < 3 * C; j += blockDim.x) {
            const int which = j / C, hh = (j % C) / hd, c = j % hd;
            x16[which * plane + ((g * heads + hh) * T + t) * hd + c] = hb_to_bf16(src[j]);
        }
    }
}
/* out[g, t, hh*hd + c] = o[g, hh, t, c]: one block per (g, t) row. */
__global__ static void heads_to_rows_k(float *out, const float *o, int nb, int T, int heads, int hd) {
    const int C = heads * hd;
    const size_t rows = (size_t)nb * T;
    for (size_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const size_t g = row / T;
        const int t = (int)(row % T);
        for (int j = threadIdx.x; j < C; j += blockDim.x)
            out[row * C + j] = o[((g * heads + j / hd) * T + t) * hd + j % hd];
    }
}

/* Both forwards, per chunk of grids: L = scale Q K^T, the relative terms,
 * softmax, out = P V. bf16 (sam_attention_bf16_forward): the chunk's qkv
 * narrowed head-major into the KC_WS_ACT16 workspace and the probabilities
 * into KC_WS_ACT16B (half the logits' bytes) by the softmax, both products
 * bf16 tensor-core GEMMs with fp32 accumulation, one call each for the whole
 * chunk; P V lands head-major in the logits' scratch (free once the softmax
 * has written the bf16 probabilities; T >= hd so it fits, else per head) and
 * is moved into out's rows. The relative terms and the softmax stay fp32. */
static void att_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv, const float *Rh,
                        const float *Rw, float scale, int B, int h, int w, int heads, int hd, int bf16) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    const size_t TT = (size_t)T * T, per = (size_t)heads * T * ((size_t)T + h + w);
    long nbmax = (long)(scratch_floats / per);
    if (nbmax < 1) {
        kc_fail(bf16 ? "sam_attention_bf16_forward" : "sam_attention_forward", __FILE__, __LINE__,
                "scratch smaller than one grid");
        return;
    }
    const int rel = Rh && Rw;
    for (long b0 = 0; b0 < B; b0 += nbmax) {
        const int nb = (int)(B - b0 < nbmax ? B - b0 : nbmax);
        float *L = scratch, *R = scratch + (size_t)nb * heads * TT;
        const float *base = qkv + (size_t)b0 * T * ld;
        uint16_t *x16 = NULL, *p16 = NULL;
        const size_t plane = (size_t)nb * T * C;   /* head-major bf16: one of q / k / v */
        const int pairs = nb * heads;
        if (bf16) {
            x16 = (uint16_t *)kc_workspace(KC_WS_ACT16, (size_t)nb * T * ld * sizeof(uint16_t));
            p16 = (uint16_t *)kc_workspace(KC_WS_ACT16B, (size_t)nb * heads * TT * sizeof(uint16_t));
            narrow_qkv_hm_k<<<rows_grid((size_t)nb * T), KC_BLOCK>>>(x16, base, nb, T, heads, hd);
            KC_LAUNCHED();
            /* L[g,hh] = scale Q K^T for every (grid, head) pair at once */
            kc_gemm_bf16_batched(0, 1, T, T, hd, scale, x16, hd, (long long)T * hd, x16 + plane, hd,
                                 (long long)T * hd, 0.0f, L, T, (long long)TT, pairs);
        } else {
            for (int hh = 0; hh < heads; hh++) { /* L[g,hh] = scale Q K^T over the chunk's grids g */
                const size_t q = (size_t)hh * hd, k = C + (size_t)hh * hd;
                kc_gemm_batched(0, 1, T, T, hd, scale, base + q, ld, (long long)T * ld, base + k, ld,
                                (long long)T * ld, 0.0f, L + hh * TT, T, (long long)heads * TT, nb);
            }
        }
        if (rel) rel_terms(R, qkv, Rh, Rw, b0, nb, h, w, heads, hd);
        const size_t rows = (size_t)nb * heads * T;
        rel_softmax_k<<<(unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK), KC_BLOCK>>>(
            L, p16, rel ? R : NULL, rows, h, w);   /* bf16: the probabilities straight into p16 */
        KC_LAUNCHED();
        float *ob = out + (size_t)b0 * T * C;
        if (bf16 && T >= hd) {   /* o[g, hh] = P V head-major into L's space, then into out's rows */
            kc_gemm_bf16_batched(0, 0, T, hd, T, 1.0f, p16, T, (long long)TT, x16 + 2 * plane, hd, (long long)T * hd,
                                 0.0f, L, hd, (long long)T * hd, pairs);
            heads_to_rows_k<<<rows_grid((size_t)nb * T), KC_BLOCK>>>(ob, L, nb, T, heads, hd);
            KC_LAUNCHED();
        } else {
            for (int hh = 0; hh < heads; hh++) { /* out[g, :, hh] = P V */
                float *o = ob + (size_t)hh * hd;
                if (bf16)   /* v of head hh: rows of hd in its (g, hh) blocks, grids heads*T*hd apart */
                    kc_gemm_bf16_batched(0, 0, T, hd, T, 1.0f, p16 + hh * TT, T, (long long)heads * TT,
                                         x16 + 2 * plane + (size_t)hh * T * hd, hd, (long long)heads * T * hd, 0.0f,
                                         o, C, (long long)T * C, nb);
                else
                    kc_gemm_batched(0, 0, T, hd, T, 1.0f, L + hh * TT, T, (long long)heads * TT,
                                    base + 2 * C + (size_t)hh * hd, ld, (long long)T * ld, 0.0f, o, C,
                                    (long long)T * C, nb);
            }
        }
    }
}

void sam_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                           const float *Rh, const float *Rw, float scale,
                           int B, int h, int w, int heads, int hd) {
    att_forward(out, scratch, scratch_floats, qkv, Rh, Rw, scale, B, h, w, heads, hd, 0);
}

size_t sam_attention_bf16_workspace_bytes(const sam_attn_shape *s, int n, int heads, int hd, size_t scratch_floats) {
    size_t x16 = 0, p16 = 0;   /* the two workspace slots, each at its largest request */
    for (int i = 0; i < n; i++) {
        const int B = s[i].B, h = s[i].h, w = s[i].w;
        if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) continue;
        const size_t T = (size_t)h * w, per = (size_t)heads * T * (T + h + w);
        size_t nb = scratch_floats / per;   /* the kernel's chunk of grids */
        if (nb > (size_t)B) nb = (size_t)B;
        const size_t a = nb * T * 3 * heads * hd * sizeof(uint16_t), b = nb * heads * T * T * sizeof(uint16_t);
        x16 = a > x16 ? a : x16;
        p16 = b > p16 ? b : p16;
    }
    return x16 + x16 / 4 + p16 + p16 / 4;   /* kc_workspace allocates a quarter more */
}

void sam_attention_bf16_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                                const float *Rh, const float *Rw, float scale,
                                int B, int h, int w, int heads, int hd) {
    att_forward(out, scratch, scratch_floats, qkv, Rh, Rw, scale, B, h, w, heads, hd, 1);
}

/* ---- attention backward ----------------------------------------------------- */
/* One warp per row: dS = P (dP - Σ P dP), in place over dP. */
__global__ static void softmax_back_rows_k(float *dP, const float *P, size_t rows, int T) {
    const size_t row = (size_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return; /* uniform per warp */
    const float *p = P + row * T;
    float *g = dP + row * T;
    float dot = 0.0f;
    for (int s = lane; s < T; s += 32) dot += p[s] * g[s];
    dot = kc_warp_sum(dot);
    for (int s = lane; s < T; s += 32) g[s] = p[s] * (g[s] - dot);
}

/* drel[row, i] = Σ_j dS[row, i*w + j] (i < h), Σ_i dS[row, i*w + (i'-h)] (i' >= h). */
__global__ static void rel_sums_k(float *drel, const float *dS, size_t rows, int h, int w) {
    const int HW = h + w, T = h * w;
    KC_FOR(idx, rows * HW) {
        const int i = (int)(idx % HW);
        const float *s = dS + (idx / HW) * T;
        float a = 0.0f;
        if (i < h) for (int j = 0; j < w; j++) a += s[i * w + j];
        else for (int y = 0; y < h; y++) a += s[y * w + (i - h)];
        drel[idx] = a;
    }
}

/* dq[g, t, hh, c] += Σ_i drel[.., t, i] Rh[t_y, i, c] + Σ_j drel[.., t, h+j] Rw[t_x, j, c] */
__global__ static void rel_dq_k(float *dqkv, const float *drel, const float *Rh, const float *Rw,
                                long b0, int nb, int h, int w, int heads, int hd) {
    const int T = h * w, HW = h + w, C = heads * hd;
    KC_FOR(idx, (size_t)nb * T * heads * hd) {
        const int c = (int)(idx % hd), hh = (int)(idx / hd % heads);
        const int t = (int)(idx / ((size_t)hd * heads) % T);
        const size_t g = idx / ((size_t)hd * heads * T);
        const float *r = drel + ((g * heads + hh) * T + t) * HW;
        const int ty = t / w, tx = t % w;
        float a = 0.0f;
        for (int i = 0; i < h; i++) a += r[i] * Rh[((size_t)ty * h + i) * hd + c];
        for (int j = 0; j < w; j++) a += r[h + j] * Rw[((size_t)tx * w + j) * hd + c];
        dqkv[((size_t)(b0 + g) * T + t) * 3 * C + (size_t)hh * hd + c] += a;
    }
}

/* dRh[y, i, c] += Σ_{g, hh, x} drel[g, hh, (y,x), i] q[g, (y,x), hh, c] (axis 0), and
 * dRw[x, j, c] += Σ_{g, hh, y} drel[g, hh, (y,x), h+j] q[...] (axis 1): one thread per entry. */
__global__ static void rel_dtable_k(float *dR, const float *drel, const float *qkv, long b0, int nb,
                                    int h, int w, int heads, int hd, int axis) {
    const int T = h * w, HW = h + w, C = heads * hd;
    const int n = axis ? w : h, other = axis ? h : w;
    KC_FOR(idx, (size_t)n * n * hd) {
        const int c = (int)(idx % hd), i = (int)(idx / hd % n), a = (int)(idx / ((size_t)hd * n));
        float acc = 0.0f;
        for (int g = 0; g < nb; g++)
            for (int hh = 0; hh < heads; hh++)
                for (int o = 0; o < other; o++) {
                    const int t = axis ? o * w + a : a * w + o;
                    acc += drel[(((size_t)g * heads + hh) * T + t) * HW + (axis ? h + i : i)] *
                           qkv[((size_t)(b0 + g) * T + t) * 3 * C + (size_t)hh * hd + c];
                }
        dR[idx] += acc;
    }
}

/* Grids per backward chunk: P, dP [nb, heads, T, T] and the row terms near 1 GiB. */
static long att_back_chunk(int B, int h, int w, int heads) {
    const size_t per = (size_t)heads * h * w * (2 * (size_t)h * w + h + w);
    long nb = (long)(((size_t)1 << 28) / per);
    if (nb < 1) nb = 1;
    return nb < B ? nb : B;
}

size_t sam_attention_backward_scratch_floats(int B, int h, int w, int heads, int hd) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return 0;
    return (size_t)att_back_chunk(B, h, w, heads) * heads * h * w * (2 * (size_t)h * w + h + w);
}

void sam_attention_backward(float *dqkv, float *dRh, float *dRw, float *scratch, size_t scratch_floats,
                            const float *dout, const float *qkv, const float *Rh, const float *Rw, float scale,
                            int B, int h, int w, int heads, int hd) {
    if (!dqkv || B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    const size_t TT = (size_t)T * T, per = (size_t)heads * T * (2 * (size_t)T + h + w);
    long nbmax = (long)(scratch_floats / per);
    if (nbmax < 1) { kc_fail("sam_attention_backward", __FILE__, __LINE__, "scratch smaller than one grid"); return; }
    const int rel = Rh && Rw;
    for (long b0 = 0; b0 < B; b0 += nbmax) {
        const int nb = (int)(B - b0 < nbmax ? B - b0 : nbmax);
        float *P = scratch, *dP = P + (size_t)nb * heads * TT, *R = dP + (size_t)nb * heads * TT;
        const float *base = qkv + (size_t)b0 * T * ld;
        float *dbase = dqkv + (size_t)b0 * T * ld;
        const float *dO = dout + (size_t)b0 * T * C;
        /* the forward's probabilities, recomputed as it computes them */
        for (int hh = 0; hh < heads; hh++)
            kc_gemm_batched(0, 1, T, T, hd, scale, base + (size_t)hh * hd, ld, (long long)T * ld,
                            base + C + (size_t)hh * hd, ld, (long long)T * ld,
                            0.0f, P + hh * TT, T, (long long)heads * TT, nb);
        if (rel) rel_terms(R, qkv, Rh, Rw, b0, nb, h, w, heads, hd);
        const size_t rows = (size_t)nb * heads * T;
        const unsigned rblocks = (unsigned)((rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
        rel_softmax_k<<<rblocks, KC_BLOCK>>>(P, NULL, rel ? R : NULL, rows, h, w);
        KC_LAUNCHED();
        for (int hh = 0; hh < heads; hh++) { /* dP = dO V^T;  dV += P^T dO */
            kc_gemm_batched(0, 1, T, T, hd, 1.0f, dO + (size_t)hh * hd, C, (long long)T * C,
                            base + 2 * C + (size_t)hh * hd, ld, (long long)T * ld,
                            0.0f, dP + hh * TT, T, (long long)heads * TT, nb);
            kc_gemm_batched(1, 0, T, hd, T, 1.0f, P + hh * TT, T, (long long)heads * TT,
                            dO + (size_t)hh * hd, C, (long long)T * C,
                            1.0f, dbase + 2 * C + (size_t)hh * hd, ld, (long long)T * ld, nb);
        }
        softmax_back_rows_k<<<rblocks, KC_BLOCK>>>(dP, P, rows, T);
        KC_LAUNCHED();
        for (int hh = 0; hh < heads; hh++) { /* dQ += scale dS K;  dK += scale dS^T Q */
            kc_gemm_batched(0, 0, T, hd, T, scale, dP + hh * TT, T, (long long)heads * TT,
                            base + C + (size_t)hh * hd, ld, (long long)T * ld,
                            1.0f, dbase + (size_t)hh * hd, ld, (long long)T * ld, nb);
            kc_gemm_batched(1, 0, T, hd, T, scale, dP + hh * TT, T, (long long)heads * TT,
                            base + (size_t)hh * hd, ld, (long long)T * ld,
                            1.0f, dbase + C + (size_t)hh * hd, ld, (long long)T * ld, nb);
        }
        if (!rel) continue;
        rel_sums_k<<<kc_blocks(rows * (h + w)), KC_BLOCK>>>(R, dP, rows, h, w);
        KC_LAUNCHED();
        rel_dq_k<<<kc_blocks((size_t)nb * T * C), KC_BLOCK>>>(dqkv, R, Rh, Rw, b0, nb, h, w, heads, hd);
        KC_LAUNCHED();
        if (dRh) {
            rel_dtable_k<<<kc_blocks((size_t)h * h * hd), KC_BLOCK>>>(dRh, R, qkv, b0, nb, h, w, heads, hd, 0);
            KC_LAUNCHED();
        }
        if (dRw) {
            rel_dtable_k<<<kc_blocks((size_t)w * w * hd), KC_BLOCK>>>(dRw, R, qkv, b0, nb, h, w, heads, hd, 1);
            KC_LAUNCHED();
        }
    }
}
