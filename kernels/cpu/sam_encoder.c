/* kernels/cpu/sam_encoder.c — CPU backend of the SAM image encoder primitives
 * of kernels.h: patchify (the patch embedding's im2col), window partition with
 * padding and its inverse, get_rel_pos (with linear resizing of the table), and
 * attention with decomposed relative positions; the backward of each but
 * patchify (for the optionally trainable encoder; no input gradient is wanted).
 *
 * Attention works on query blocks of SQB rows of one (grid, head): logits for
 * the block [SQB, T] live in a per-thread slot of the caller's scratch, so a
 * 64x64 global-attention grid never materialises its 4096 x 4096 logits per
 * head. Q K^T and P V are strided sgemm calls straight on the qkv Linear's
 * output (row stride 3C); OpenMP OpenBLAS runs them single-threaded inside the
 * parallel region. Its backward runs one job per (grid, head), recomputing
 * each query block's probabilities (the forward's own code) so that no T x T
 * matrix is kept; the relative tables' gradients go to per-thread
 * accumulators summed at the end. The bf16 variant (frozen 16-bit encoder in
 * bf16 GEMM mode) instead runs its two products as batched bf16 products from
 * the main thread (kernels/cpu/bf16_mm.h: oneDNN) over chunks of grids.
 * Layouts and shapes are in kernels.h.
 * Depends on: kernels/kernels.h, kernels/cpu/vmath.h, kernels/cpu/bf16_mm.h,
 * kernels/half_bits.h, OpenBLAS (cblas), OpenMP. */
#include "kernels/kernels.h"
#include "kernels/cpu/bf16_mm.h"
#include "kernels/cpu/vmath.h"
#include "kernels/half_bits.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
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

void sam_window_partition_backward(float *din, float *dpad, const float *dout,
                                   int B, int H, int W, int C, int ws) {
    if (B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    if (din) {
        const long rows = (long)B * H;
        #pragma omp parallel for schedule(static) if (rows * W * C > 32768)
        for (long r = 0; r < rows; r++) {
            const int y = (int)(r % H), b = (int)(r / H);
            float *o = din + (size_t)r * W * C;
            for (int x = 0; x < W; x++, o += C) {
                const size_t win = ((size_t)b * nh + y / ws) * nw + x / ws;
                const float *g = dout + ((win * ws + y % ws) * ws + x % ws) * C;
                #pragma omp simd
                for (int c = 0; c < C; c++) o[c] += g[c];
            }
        }
    }
    if (dpad && (nh * ws > H || nw * ws > W)) {
        /* parallel over channel blocks: each thread owns its dpad entries */
        #pragma omp parallel for schedule(static) if ((long)B * nh * nw * ws * ws * C > 32768)
        for (int c0 = 0; c0 < C; c0 += 16) {
            const int c1 = c0 + 16 < C ? c0 + 16 : C;
            double acc[16] = {0};
            for (long win = 0; win < (long)B * nh * nw; win++) {
                const int j = (int)(win % nw), i = (int)(win / nw % nh);
                for (int wy = 0; wy < ws; wy++)
                    for (int wx = 0; wx < ws; wx++) {
                        if (i * ws + wy < H && j * ws + wx < W) continue;
                        const float *g = dout + (((size_t)win * ws + wy) * ws + wx) * C;
                        for (int c = c0; c < c1; c++) acc[c - c0] += g[c];
                    }
            }
            for (int c = c0; c < c1; c++) dpad[c] += (float)acc[c - c0];
        }
    }
}

void sam_window_unpartition_backward(float *din, const float *dout, int B, int H, int W, int C, int ws) {
    if (!din || B <= 0 || H <= 0 || W <= 0 || C <= 0 || ws <= 0) return;
    const int nh = (H + ws - 1) / ws, nw = (W + ws - 1) / ws;
    const long rows = (long)B * H;
    #pragma omp parallel for schedule(static) if (rows * W * C > 32768)
    for (long r = 0; r < rows; r++) {
        const int y = (int)(r % H), b = (int)(r / H);
        const float *g = dout + (size_t)r * W * C;
        for (int x = 0; x < W; x++, g += C) {
            const size_t win = ((size_t)b * nh + y / ws) * nw + x / ws;
            float *o = din + ((win * ws + y % ws) * ws + x % ws) * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) o[c] += g[c];
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Relative position table                                                  */
/* ------------------------------------------------------------------------ */

/* get_rel_pos's row geometry: qr, kr, off and M for qs x ks. */
typedef struct { float qr, kr, off; int M, L; double scale; } relgeom;

static relgeom rel_geom(int qs, int ks, int L) {
    relgeom g;
    g.M = 2 * (qs > ks ? qs : ks) - 1;
    g.L = L;
    /* PyTorch: arange(q)[:,None] * max(k/q, 1.0) and the offset (k-1)*max(q/k, 1.0)
     * are float32 tensors (python scalars cast to float32), then .long() truncates. */
    g.qr = (float)((double)ks / qs > 1.0 ? (double)ks / qs : 1.0);
    g.kr = (float)((double)qs / ks > 1.0 ? (double)qs / ks : 1.0);
    g.off = (float)((ks - 1) * ((double)qs / ks > 1.0 ? (double)qs / ks : 1.0));
    /* F.interpolate(mode="linear", align_corners=False) from L to M samples. */
    g.scale = (double)L / g.M;
    return g;
}

/* Output (i, j) = l0 * rel_pos[i0] + l1 * rel_pos[i1]. */
static void rel_src(const relgeom *g, int i, int j, int *i0, int *i1, double *l0, double *l1) {
    /* each product rounded to float32 on its own (no FMA contraction), as PyTorch's separate ops */
    volatile float qi = (float)i * g->qr, kj = (float)j * g->kr;
    const float rc = (qi - kj) + g->off;
    int m = (int)rc;
    m = m < 0 ? 0 : m >= g->M ? g->M - 1 : m;     /* never clamps for valid sizes */
    if (g->L == g->M) { *i0 = *i1 = m; *l0 = 1.0; *l1 = 0.0; return; }
    double src = g->scale * (m + 0.5) - 0.5;
    if (src < 0) src = 0;
    int a = (int)src;
    if (a > g->L - 1) a = g->L - 1;
    *i0 = a;
    *i1 = a < g->L - 1 ? a + 1 : a;
    *l1 = src - a;
    *l0 = 1.0 - *l1;
}

void sam_rel_pos_forward(float *out, const float *rel_pos, int qs, int ks, int L, int D) {
    if (qs <= 0 || ks <= 0 || L <= 0 || D <= 0) return;
    const relgeom g = rel_geom(qs, ks, L);
    #pragma omp parallel for schedule(static) if ((long)qs * ks * D > 32768)
    for (int i = 0; i < qs; i++) {
        for (int j = 0; j < ks; j++) {
            int i0, i1;
            double l0, l1;
            rel_src(&g, i, j, &i0, &i1, &l0, &l1);
            float *o = out + ((size_t)i * ks + j) * D;
            const float *a = rel_pos + (size_t)i0 * D, *b = rel_pos + (size_t)i1 * D;
            if (L == g.M) { memcpy(o, a, sizeof(float) * D); continue; }
            for (int d = 0; d < D; d++) o[d] = (float)(l0 * a[d] + l1 * b[d]);
        }
    }
}

void sam_rel_pos_backward(float *drel_pos, const float *dout, int qs, int ks, int L, int D) {
    if (!drel_pos || qs <= 0 || ks <= 0 || L <= 0 || D <= 0) return;
    const relgeom g = rel_geom(qs, ks, L);
    /* parallel over channels: each thread owns columns d of every row */
    #pragma omp parallel for schedule(static) if ((long)qs * ks * D > 32768)
    for (int d = 0; d < D; d++) {
        for (int i = 0; i < qs; i++) {
            for (int j = 0; j < ks; j++) {
                int i0, i1;
                double l0, l1;
                rel_src(&g, i, j, &i0, &i1, &l0, &l1);
                const float v = dout[((size_t)i * ks + j) * D + d];
                drel_pos[(size_t)i0 * D + d] += (float)(l0 * v);
                if (l1 != 0.0) drel_pos[(size_t)i1 * D + d] += (float)(l1 * v);
            }
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

/* out[i] = q · e[i] for the n rows e[i] of hd floats. */
static void dots(float *out, const float *q, const float *e, int n, int hd) {
    for (int i = 0; i < n; i++, e += hd) {
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (int c = 0; c < hd; c++) s += q[c] * e[c];
        out[i] = s;
    }
}

/* q·Rh[t_y, i] (i < h) into relh and q·Rw[t_x, j] (j < w) into relw. */
static void rel_terms(float *relh, float *relw, const float *q, const float *Rh, const float *Rw, int t, int h,
                      int w, int hd) {
    dots(relh, q, Rh + (size_t)(t / w) * h * hd, h, hd);
    dots(relw, q, Rw + (size_t)(t % w) * w * hd, w, hd);
}

/* One scaled logits row of query t (its q: unscaled, row of qkv) in place:
 * plus the relative terms when Rh and Rw are given (relh[h], relw[w]:
 * scratch), softmax. */
static void logit_row_softmax(float *lr, float *relh, float *relw, const float *q, const float *Rh, const float *Rw,
                              int t, int h, int w, int hd) {
    const int T = h * w;
    if (Rh && Rw) {
        rel_terms(relh, relw, q, Rh, Rw, t, h, w, hd);
        for (int i = 0; i < h; i++) {
            float *li = lr + (size_t)i * w;
            const float a = relh[i];
            #pragma omp simd
            for (int j = 0; j < w; j++) li[j] += a + relw[j];
        }
    }
    (void)vsoftmax(lr, T);
}

/* Softmax rows of one query block: L[nq,T] = softmax(scale Q K^T + rel terms)
 * for queries t0..t0+nq-1 of one (grid, head); relh[h], relw[w] are row scratch. */
static void prob_block(float *L, float *relh, float *relw, const float *Q, const float *K, int ld,
                       const float *Rh, const float *Rw, float scale, int t0, int nq, int h, int w, int hd) {
    const int T = h * w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, hd, scale, Q, ld, K, ld, 0.0f, L, T);
    for (int r = 0; r < nq; r++)
        logit_row_softmax(L + (size_t)r * T, relh, relw, Q + (size_t)r * ld, Rh, Rw, t0 + r, h, w, hd);
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
    const float *rh = Rh && Rw ? Rh : NULL, *rw = Rh && Rw ? Rw : NULL;
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
            prob_block(L, relh, relw, Q, K, ld, rh, rw, scale, t0, nq, h, w, hd);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, T, 1.0f, L, T, V, ld, 0.0f,
                        out + ((size_t)b * T + t0) * C + (size_t)hh * hd, C);
        }
    }
}

/* The bf16 path's row: lr[T] (unscaled logits of one query) times scale plus
 * its relative terms relh[h], relw[w] (NULL: none), softmax in fp32, rounded
 * to bf16 into pr[T]; three passes over the row. */
static void logit_row_bf16(uint16_t *pr, float *lr, const float *relh, const float *relw, float scale, int h,
                           int w) {
    const int T = h * w;
    float mx = -INFINITY;
    if (relh) {
        for (int i = 0; i < h; i++) {
            float *li = lr + (size_t)i * w;
            const float a = relh[i];
            #pragma omp simd reduction(max:mx)
            for (int j = 0; j < w; j++) {
                const float v = li[j] * scale + (a + relw[j]);
                li[j] = v;
                mx = v > mx ? v : mx;
            }
        }
    } else {
        #pragma omp simd reduction(max:mx)
        for (int s = 0; s < T; s++) {
            const float v = lr[s] * scale;
            lr[s] = v;
            mx = v > mx ? v : mx;
        }
    }
    float sum = 0.0f;
    #pragma omp simd reduction(+:sum)
    for (int s = 0; s < T; s++) { lr[s] = vexpf(lr[s] - mx); sum += lr[s]; }
    const float inv = 1.0f / sum;
    #pragma omp simd
    for (int s = 0; s < T; s++) pr[s] = hb_to_bf16(lr[s] * inv);
}

/* The bf16 products (kernels.h sam_attention_bf16_forward). Per chunk of
 * grids (and of query rows when one grid's logits do not fit): q, k, v rounded
 * to bf16 into head-major copies [grid*head, T, hd]; the relative terms of
 * all their queries as small fp32 products (from the unrounded q); S = Q K^T
 * (one batched bf16 product, fp32); each row scaled, the relative terms added,
 * softmax, rounded to bf16; O = P V (batched, fp32); O
 * scattered into out. The working set lives in the backend's own buffers
 * (the kernel runs from one thread); without heap room for them the call
 * computes in fp32 (sam_attention_forward). */
enum { ATT16_LOGITS = 1 << 22 };   /* logits per chunk: 16 MiB fp32 + 8 MiB bf16 */
static void *g_att_qkv, *g_att_s, *g_att_p, *g_att_o, *g_att_rel;
static size_t g_att_qkv_n, g_att_s_n, g_att_p_n, g_att_o_n, g_att_rel_n;
/* Grids (ng) and query rows (nq) per chunk. */
static void att16_chunk(int B, int T, int heads, int *ng, int *nq) {
    const size_t per_grid = (size_t)heads * T * T;
    if (per_grid <= ATT16_LOGITS) {
        *nq = T;
        *ng = (int)(ATT16_LOGITS / per_grid < (size_t)B ? ATT16_LOGITS / per_grid : (size_t)B);
    } else {
        *ng = 1;
        const size_t r = ATT16_LOGITS / ((size_t)heads * T);
        *nq = r < 1 ? 1 : r >= 32 ? (int)(r & ~(size_t)15) : (int)r;
    }
}

/* The five buffers below (q, k, v in bf16; logits fp32; probabilities bf16;
 * O; relative terms), each grown to its largest use over the shapes. */
size_t sam_attention_bf16_workspace_bytes(const sam_attn_shape *s, int n, int heads, int hd, size_t scratch_floats) {
    (void)scratch_floats;
    size_t mx[5] = {0};
    for (int i = 0; i < n; i++) {
        const int B = s[i].B, h = s[i].h, w = s[i].w, T = h * w;
        if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) continue;
        int ng, nq;
        att16_chunk(B, T, heads, &ng, &nq);
        const size_t nS = (size_t)ng * heads * nq * T, gh = (size_t)ng * heads;
        const size_t b[5] = {3 * gh * T * hd * 2, nS * 4, nS * 2, gh * nq * hd * 4, gh * T * (h + w) * 4};
        for (int j = 0; j < 5; j++) mx[j] = b[j] > mx[j] ? b[j] : mx[j];
    }
    return mx[0] + mx[1] + mx[2] + mx[3] + mx[4];
}

void sam_attention_bf16_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                                const float *Rh, const float *Rw, float scale,
                                int B, int h, int w, int heads, int hd) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    int ng, nq;
    att16_chunk(B, T, heads, &ng, &nq);
    const size_t hT = (size_t)ng * heads * T * hd, nS = (size_t)ng * heads * nq * T;
    uint16_t *q16 = cpu_grow(&g_att_qkv, &g_att_qkv_n, 3 * hT, sizeof(uint16_t));
    float *S = cpu_grow(&g_att_s, &g_att_s_n, nS, sizeof(float));
    uint16_t *P = cpu_grow(&g_att_p, &g_att_p_n, nS, sizeof(uint16_t));
    float *O = cpu_grow(&g_att_o, &g_att_o_n, (size_t)ng * heads * nq * hd, sizeof(float));
    const int rel = Rh && Rw;
    float *RH = rel ? cpu_grow(&g_att_rel, &g_att_rel_n, (size_t)ng * heads * T * (h + w), sizeof(float)) : NULL;
    if (!q16 || !S || !P || !O || (rel && !RH)) {
        sam_attention_forward(out, scratch, scratch_floats, qkv, Rh, Rw, scale, B, h, w, heads, hd);
        return;
    }
    uint16_t *k16 = q16 + hT, *v16 = k16 + hT;
    float *RW = rel ? RH + (size_t)ng * heads * T * h : NULL;
    for (int g0 = 0; g0 < B; g0 += ng) {
        const int n = B - g0 < ng ? B - g0 : ng, nb = n * heads;
        #pragma omp parallel for schedule(static)
        for (long gt = 0; gt < (long)n * T; gt++) {   /* head-major bf16 copies of q, k, v */
            const long g = gt / T, t = gt % T;
            const float *src = qkv + ((size_t)(g0 + g) * T + t) * ld;
            for (int part = 0; part < 3; part++)
                for (int hh = 0; hh < heads; hh++) {
                    uint16_t *d = q16 + part * hT + (((size_t)g * heads + hh) * T + t) * hd;
                    const float *x = src + (size_t)part * C + (size_t)hh * hd;
                    for (int c = 0; c < hd; c++) d[c] = hb_to_bf16(x[c]);
                }
        }
        if (rel) {
            /* the relative terms of every query of the chunk, as products (fp32, unrounded q):
             * RH[bb, t, i] = q_t . Rh[t_y, i], one [w, h] product per (bb, y);
             * RW[bb, t, j] = q_t . Rw[t_x, j], one [h, w] product per (bb, x) (query rows w apart) */
            #pragma omp parallel for schedule(static)
            for (long job = 0; job < (long)nb * (h + w); job++) {
                const long bb = job / (h + w);
                const int y = (int)(job % (h + w)), hh = (int)(bb % heads);
                const float *q = qkv + (size_t)(g0 + bb / heads) * T * ld + (size_t)hh * hd;
                if (y < h)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, w, h, hd, 1.0f, q + (size_t)y * w * ld, ld,
                                Rh + (size_t)y * h * hd, hd, 0.0f, RH + ((size_t)bb * T + (size_t)y * w) * h, h);
                else {
                    const int x = y - h;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, h, w, hd, 1.0f, q + (size_t)x * ld, w * ld,
                                Rw + (size_t)x * w * hd, hd, 0.0f, RW + ((size_t)bb * T + x) * w, w * w);
                }
            }
        }
        for (int t0 = 0; t0 < T; t0 += nq) {
            const int m = T - t0 < nq ? T - t0 : nq;
            cpu_bf16_bmm(S, q16 + (size_t)t0 * hd, (long long)T * hd, k16, (long long)T * hd, 1, nb, m, hd, T);
            #pragma omp parallel for schedule(static)
            for (long row = 0; row < (long)nb * m; row++) {
                const size_t bt = (size_t)(row / m) * T + t0 + row % m;   /* (grid*head, query) */
                logit_row_bf16(P + (size_t)row * T, S + (size_t)row * T, rel ? RH + bt * h : NULL,
                               rel ? RW + bt * w : NULL, scale, h, w);
            }
            cpu_bf16_bmm(O, P, (long long)m * T, v16, (long long)T * hd, 0, nb, m, T, hd);
            #pragma omp parallel for schedule(static)
            for (long row = 0; row < (long)nb * m; row++) {   /* O [grid*head, m, hd] -> out [grid, T, C] */
                const long bb = row / m;
                const int r = (int)(row % m), hh = (int)(bb % heads);
                memcpy(out + ((size_t)(g0 + bb / heads) * T + t0 + r) * C + (size_t)hh * hd, O + (size_t)row * hd,
                       (size_t)hd * sizeof(float));
            }
        }
    }
}

/* Backward slot: P and dP/dS [SQB, T], relh[h], relw[w], then (when the
 * relative tables want gradients) this thread's dRh [h,h,hd] and dRw [w,w,hd]. */
static size_t bslot_floats(int h, int w, int hd, int rel) {
    return 2 * (size_t)SQB * h * w + (size_t)h + w + (rel ? ((size_t)h * h + (size_t)w * w) * hd : 0);
}

size_t sam_attention_backward_scratch_floats(int B, int h, int w, int heads, int hd) {
    if (B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return 0;
    const long jobs = (long)B * heads;
    const long nt = omp_get_max_threads();
    return (size_t)(jobs < nt ? jobs : nt) * bslot_floats(h, w, hd, 1);
}

/* One job per (grid, head): it owns that head's dk, dv (and dq) columns of the
 * grid, so query blocks run in order with no write conflicts; the probabilities
 * are recomputed block by block exactly as the forward computes them. */
void sam_attention_backward(float *dqkv, float *dRh, float *dRw, float *scratch, size_t scratch_floats,
                            const float *dout, const float *qkv, const float *Rh, const float *Rw, float scale,
                            int B, int h, int w, int heads, int hd) {
    if (!dqkv || B <= 0 || h <= 0 || w <= 0 || heads <= 0 || hd <= 0) return;
    const int T = h * w, C = heads * hd, ld = 3 * C;
    const int rel = Rh && Rw, relg = rel && (dRh || dRw);
    const long jobs = (long)B * heads;
    const size_t per = bslot_floats(h, w, hd, relg);
    long slots = (long)(scratch_floats / per);
    if (slots < 1) return;                                  /* caller bug: scratch too small */
    int nt = omp_get_max_threads();
    if (nt > slots) nt = (int)slots;
    if (nt > jobs) nt = (int)jobs;
    const size_t nrh = (size_t)h * h * hd, nrw = (size_t)w * w * hd, acc0 = 2 * (size_t)SQB * T + h + w;
    /* every slot's table accumulators start at 0, even a slot whose thread gets no job */
    if (relg) for (int t = 0; t < nt; t++) memset(scratch + (size_t)t * per + acc0, 0, sizeof(float) * (nrh + nrw));
    #pragma omp parallel num_threads(nt)
    {
        float *P = scratch + (size_t)omp_get_thread_num() * per;
        float *dS = P + (size_t)SQB * T, *relh = dS + (size_t)SQB * T, *relw = relh + h;
        float *aRh = relw + w, *aRw = aRh + nrh;
        /* static: each thread's set of jobs, and so its table partial sums, is
         * fixed for a thread count — the gradients are bitwise repeatable */
        #pragma omp for schedule(static)
        for (long job = 0; job < jobs; job++) {
            const int hh = (int)(job % heads);
            const long b = job / heads;
            const float *base = qkv + (size_t)b * T * ld + (size_t)hh * hd;
            const float *K = base + C, *V = base + 2 * C;
            float *dbase = dqkv + (size_t)b * T * ld + (size_t)hh * hd;
            float *dK = dbase + C, *dV = dbase + 2 * C;
            for (int t0 = 0; t0 < T; t0 += SQB) {
                const int nq = T - t0 < SQB ? T - t0 : SQB;
                const float *Q = base + (size_t)t0 * ld;
                const float *dO = dout + ((size_t)b * T + t0) * C + (size_t)hh * hd;
                float *dQ = dbase + (size_t)t0 * ld;
                prob_block(P, relh, relw, Q, K, ld, rel ? Rh : NULL, rel ? Rw : NULL, scale, t0, nq, h, w, hd);
                /* dP = dO V^T; dS = P (dP - rowsum(P dP)) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, hd, 1.0f, dO, C, V, ld, 0.0f, dS, T);
                for (int r = 0; r < nq; r++) {
                    const float *pr = P + (size_t)r * T;
                    float *sr = dS + (size_t)r * T;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int s = 0; s < T; s++) dot += pr[s] * sr[s];
                    #pragma omp simd
                    for (int s = 0; s < T; s++) sr[s] = pr[s] * (sr[s] - dot);
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, nq, 1.0f, P, T, dO, C, 1.0f, dV, ld);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, T, scale, dS, T, K, ld, 1.0f, dQ, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, nq, scale, dS, T, Q, ld, 1.0f, dK, ld);
                if (!rel) continue;
                for (int r = 0; r < nq; r++) {
                    const int t = t0 + r, ty = t / w, tx = t % w;
                    const float *sr = dS + (size_t)r * T, *q = Q + (size_t)r * ld;
                    float *dq = dQ + (size_t)r * ld;
                    for (int j = 0; j < w; j++) relw[j] = 0.0f;
                    for (int i = 0; i < h; i++) {     /* d(q.Rh[ty,i]) = Σ_j dS[i,j], d(q.Rw[tx,j]) = Σ_i dS[i,j] */
                        const float *si = sr + (size_t)i * w;
                        float a = 0.0f;
                        #pragma omp simd reduction(+:a)
                        for (int j = 0; j < w; j++) { a += si[j]; relw[j] += si[j]; }
                        relh[i] = a;
                    }
                    for (int i = 0; i < h; i++) {
                        const float g = relh[i], *e = Rh + ((size_t)ty * h + i) * hd;
                        #pragma omp simd
                        for (int c = 0; c < hd; c++) dq[c] += g * e[c];
                        if (relg) {
                            float *a = aRh + ((size_t)ty * h + i) * hd;
                            #pragma omp simd
                            for (int c = 0; c < hd; c++) a[c] += g * q[c];
                        }
                    }
                    for (int j = 0; j < w; j++) {
                        const float g = relw[j], *e = Rw + ((size_t)tx * w + j) * hd;
                        #pragma omp simd
                        for (int c = 0; c < hd; c++) dq[c] += g * e[c];
                        if (relg) {
                            float *a = aRw + ((size_t)tx * w + j) * hd;
                            #pragma omp simd
                            for (int c = 0; c < hd; c++) a[c] += g * q[c];
                        }
                    }
                }
            }
        }
    }
    if (!relg) return;
    /* the threads' table gradients, summed in thread order (deterministic for a thread count) */
    #pragma omp parallel for schedule(static) if ((nrh + nrw) * nt > 32768)
    for (size_t k = 0; k < nrh + nrw; k++) {
        float s = 0.0f;
        for (int t = 0; t < nt; t++) s += scratch[(size_t)t * per + acc0 + k];
        if (k < nrh) { if (dRh) dRh[k] += s; }
        else if (dRw) dRw[k - nrh] += s;
    }
}
