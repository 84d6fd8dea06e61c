/* kernels/cpu/sam_encoder.c — CPU backend of the SAM image encoder primitives
 * of kernels.h (forward only; the encoder is frozen): patchify (the patch
 * embedding's im2col), window partition with padding and its inverse,
 * get_rel_pos (with linear resizing of the table), and attention with
 * decomposed relative positions.
 *
 * Attention works on query blocks of SQB rows of one (grid, head): logits for
 * the block [SQB, T] live in a per-thread slot of the caller's scratch, so a
 * 64x64 global-attention grid never materialises its 4096 x 4096 logits per
 * head. Q K^T and P V are strided sgemm calls straight on the qkv Linear's
 * output (row stride 3C); OpenMP OpenBLAS runs them single-threaded inside the
 * parallel region. Layouts and shapes are in kernels.h.
 * Depends on: kernels/kernels.h, kernels/cpu/vmath.h, OpenBLAS (cblas), OpenMP. */
#include "kernels/kernels.h"
#include "kernels/cpu/vmath.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Data movement                                                            */
/* ------------------------------------------------------------------------ */

void sam_patchify_forward(float *out, const float *in, int B, int Cin, int H, int W, int p) {
    if (B <= 0 || Cin <= 0 || p <= 0 || H < p || W < p) return;
    const int gh = H / p, gw = W / p, K = Cin * p * p;
    const long rows = (long)B * gh * gw;
    #pragma omp parallel for schedule(static) if (rows * K > 32768)
    for (long r = 0; r < rows; r++) {
        const int gx = (int)(r % gw), gy = (int)(r / gw % gh), b = (int)(r / ((long)gw * gh));
        float *o = out + (size_t)r * K;
        for (int ci = 0; ci < Cin; ci++) {
            const float *src = in + (((size_t)b * Cin + ci) * H + (size_t)gy * p) * W + (size_t)gx * p;
            for (int ky = 0; ky < p; ky++, o += p) memcpy(o, src + (size_t)ky * W, sizeof(float) * p);
        }
    }
}

void sam_window_partition_forward(float *out, const float *in, const float *pad,
                                  int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    const long rows = (long)B * nh * nw * ws;          /* one window row each */
    #pragma omp parallel for schedule(static) if (rows * ws * C > 32768)
    for (long r = 0; r < rows; r++) {
        const int wy = (int)(r % ws);
        const long win = r / ws;
        const int j = (int)(win % nw), i = (int)(win / nw % nh), b = (int)(win / ((long)nw * nh));
        const int y = i * ws + wy;
        float *o = out + (size_t)r * ws * C;
        for (int wx = 0; wx < ws; wx++, o += C) {
            const int x = j * ws + wx;
            if (y < H && x < W) memcpy(o, in + (((size_t)b * H + y) * W + x) * C, sizeof(float) * C);
            else if (pad) memcpy(o, pad, sizeof(float) * C);
            else memset(o, 0, sizeof(float) * C);
        }
    }
}

void sam_window_unpartition_forward(float *out, const float *in, int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    const long rows = (long)B * H;
    #pragma omp parallel for schedule(static) if (rows * W * C > 32768)
    for (long r = 0; r < rows; r++) {
        const int y = (int)(r % H), b = (int)(r / H);
        const int i = y / ws, wy = y % ws;
        float *o = out + (size_t)r * W * C;
        for (int x = 0; x < W; x++, o += C) {
            const int j = x / ws, wx = x % ws;
            const size_t win = ((size_t)b * nh + i) * nw + j;
            memcpy(o, in + ((win * ws + wy) * ws + wx) * C, sizeof(float) * C);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Relative position table                                                  */
/* ------------------------------------------------------------------------ */

void sam_rel_pos_forward(float *out, const float *rel_pos, int qs, int ks, int L, int D) {
    if (qs <= 0 || ks <= 0 || L <= 0 || D <= 0) return;
    const int M = 2 * (qs > ks ? qs : ks) - 1;
    /* PyTorch: arange(q)[:,None] * max(k/q, 1.0) and the offset (k-1)*max(q/k, 1.0)
     * are float32 tensors (python scalars cast to float32), then .long() truncates. */
    const float qr = (float)((double)ks / qs > 1.0 ? (double)ks / qs : 1.0);
    const float kr = (float)((double)qs / ks > 1.0 ? (double)qs / ks : 1.0);
    const float off = (float)((ks - 1) * ((double)qs / ks > 1.0 ? (double)qs / ks : 1.0));
    /* F.interpolate(mode="linear", align_corners=False) from L to M samples. */
    const double scale = (double)L / M;
    #pragma omp parallel for schedule(static) if ((long)qs * ks * D > 32768)
    for (int i = 0; i < qs; i++) {
        for (int j = 0; j < ks; j++) {
            /* each product rounded to float32 on its own (no FMA contraction), as PyTorch's separate ops */
            volatile float qi = (float)i * qr, kj = (float)j * kr;
            const float rc = (qi - kj) + off;
            int m = (int)rc;
            m = m < 0 ? 0 : m >= M ? M - 1 : m;     /* never clamps for valid sizes */
            float *o = out + ((size_t)i * ks + j) * D;
            if (L == M) {
                memcpy(o, rel_pos + (size_t)m * D, sizeof(float) * D);
                continue;
            }
            double src = scale * (m + 0.5) - 0.5;
            if (src < 0) src = 0;
            int i0 = (int)src;
            if (i0 > L - 1) i0 = L - 1;
            const int i1 = i0 < L - 1 ? i0 + 1 : i0;
            const double l1 = src - i0, l0 = 1.0 - l1;
            const float *a = rel_pos + (size_t)i0 * D, *b = rel_pos + (size_t)i1 * D;
            for (int d = 0; d < D; d++) o[d] = (float)(l0 * a[d] + l1 * b[d]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Attention with decomposed relative positions                             */
/* ------------------------------------------------------------------------ */

enum { SQB = 64 };   /* query rows per block */

/* One slot: logits [SQB, T] and the row's rel_h[h], rel_w[w]. */
static size_t slot_floats(int h, int w) { return (size_t)SQB * h * w + (size_t)h + w; }

size_t sam_attention_scratch_floats(int B, int h, int w, int heads) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0) return 0;
    const long jobs = (long)B * heads * ((h * w + SQB - 1) / SQB);
    const long nt = omp_get_max_threads();
    return (size_t)(jobs < nt ? jobs : nt) * slot_floats(h, w);
}

void sam_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                           const float *Rh, const float *Rw, float scale,
                           int B, int h, int w, int heads, int hd) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    const int nblk = (T + SQB - 1) / SQB;
    const long jobs = (long)B * heads * nblk;
    const size_t per = slot_floats(h, w);
    long slots = (long)(scratch_floats / per);
    if (slots < 1) return;                                  /* caller bug: scratch too small */
    int nt = omp_get_max_threads();
    if (nt > slots) nt = (int)slots;
    if (nt > jobs) nt = (int)jobs;
    const int rel = Rh && Rw;
    #pragma omp parallel num_threads(nt)
    {
        float *L = scratch + (size_t)omp_get_thread_num() * per;
        float *relh = L + (size_t)SQB * T, *relw = relh + h;
        #pragma omp for schedule(dynamic)
        for (long job = 0; job < jobs; job++) {
            const int blk = (int)(job % nblk), hh = (int)(job / nblk % heads);
            const long b = job / ((long)nblk * heads);
            const int t0 = blk * SQB, nq = T - t0 < SQB ? T - t0 : SQB;
            const float *base = qkv + (size_t)b * T * ld + (size_t)hh * hd;
            const float *Q = base + (size_t)t0 * ld, *K = base + C, *V = base + 2 * C;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, hd, scale, Q, ld, K, ld, 0.0f, L, T);
            for (int r = 0; r < nq; r++) {
                float *lr = L + (size_t)r * T;
                if (rel) {
                    const int t = t0 + r, ty = t / w, tx = t % w;
                    const float *q = Q + (size_t)r * ld;
                    for (int i = 0; i < h; i++) {
                        const float *e = Rh + ((size_t)ty * h + i) * hd;
                        float s = 0.0f;
                        #pragma omp simd reduction(+:s)
                        for (int c = 0; c < hd; c++) s += q[c] * e[c];
                        relh[i] = s;
                    }
                    for (int j = 0; j < w; j++) {
                        const float *e = Rw + ((size_t)tx * w + j) * hd;
                        float s = 0.0f;
                        #pragma omp simd reduction(+:s)
                        for (int c = 0; c < hd; c++) s += q[c] * e[c];
                        relw[j] = s;
                    }
                    for (int i = 0; i < h; i++) {
                        float *li = lr + (size_t)i * w;
                        const float a = relh[i];
                        #pragma omp simd
                        for (int j = 0; j < w; j++) li[j] += a + relw[j];
                    }
                }
                float mx = lr[0];
                #pragma omp simd reduction(max:mx)
                for (int s = 1; s < T; s++) mx = lr[s] > mx ? lr[s] : mx;
                float sum = 0.0f;
                #pragma omp simd reduction(+:sum)
                for (int s = 0; s < T; s++) { lr[s] = vexpf(lr[s] - mx); sum += lr[s]; }
                const float inv = 1.0f / sum;
                #pragma omp simd
                for (int s = 0; s < T; s++) lr[s] *= inv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, T, 1.0f, L, T, V, ld, 0.0f,
                        out + ((size_t)b * T + t0) * C + (size_t)hh * hd, C);
        }
    }
}
