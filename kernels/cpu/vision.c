/* kernels/cpu/vision.c — CPU backend of the vision primitives of kernels.h:
 * LayerNorm2d (SAM), bilinear resize (align_corners=False), 2x2/stride-2
 * transposed convolution, general Conv2d (im2col + sgemm) and channels-last
 * RoIAlign (torchvision semantics).
 *
 * Every backward accumulates (+=) and skips NULL gradients (see kernels.h).
 * Parallel scatters are arranged so that each thread owns the memory it
 * writes: no atomics, and the scatter sums run in a fixed order whatever the
 * thread count.
 * GEMMs go to OpenBLAS; the OpenMP build runs sgemm single-threaded when it
 * is called inside an omp region and multi-threaded outside one.
 * Depends on: kernels/kernels.h, OpenBLAS (cblas), OpenMP. */
#include "kernels/kernels.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* LayerNorm2d                                                              */
/* ------------------------------------------------------------------------ */
/* Pixels per tile: the inner (vector) loop runs over a tile's pixels while the
 * outer loop walks the C channel rows, each a contiguous run of LN2D_TILE. */
#define LN2D_TILE 256

/* in/out[B,C,HW], w[C], b[C] (either may be NULL: 1 and 0), mean/rstd[B,HW]. */
void layernorm2d_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, float eps, int B, int C, int HW) {
    if (B <= 0 || C <= 0 || HW <= 0) return;
    const int ntile = (HW + LN2D_TILE - 1) / LN2D_TILE;
    const float invC = 1.0f / (float)C;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int t = 0; t < ntile; t++) {
            const int p0 = t * LN2D_TILE;
            const int np = HW - p0 < LN2D_TILE ? HW - p0 : LN2D_TILE;
            const float *x = in + (size_t)bi * C * HW + p0;      /* x[c*HW + p] */
            float *y = out + (size_t)bi * C * HW + p0;
            float m[LN2D_TILE], v[LN2D_TILE];
            for (int p = 0; p < np; p++) { m[p] = 0.0f; v[p] = 0.0f; }
            for (int c = 0; c < C; c++) {
                const float *xc = x + (size_t)c * HW;
                for (int p = 0; p < np; p++) m[p] += xc[p];
            }
            for (int p = 0; p < np; p++) m[p] *= invC;
            for (int c = 0; c < C; c++) {                        /* two-pass variance */
                const float *xc = x + (size_t)c * HW;
                for (int p = 0; p < np; p++) { float d = xc[p] - m[p]; v[p] += d * d; }
            }
            for (int p = 0; p < np; p++) v[p] = 1.0f / sqrtf(v[p] * invC + eps);
            for (int c = 0; c < C; c++) {
                const float *xc = x + (size_t)c * HW;
                float *yc = y + (size_t)c * HW;
                const float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
                for (int p = 0; p < np; p++) yc[p] = (xc[p] - m[p]) * v[p] * wc + bc;
            }
            float *ms = mean + (size_t)bi * HW + p0, *rs = rstd + (size_t)bi * HW + p0;
            for (int p = 0; p < np; p++) { ms[p] = m[p]; rs[p] = v[p]; }
        }
    }
}

/* xhat = (x-mean)*rstd, dy = dout*w:
 *   din += rstd * (dy - mean_c(dy) - xhat * mean_c(dy*xhat))
 *   dw[c] += Σ_{b,p} dout*xhat;  db[c] += Σ_{b,p} dout */
void layernorm2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, const float *mean, const float *rstd, int B, int C, int HW) {
    if (B <= 0 || C <= 0 || HW <= 0) return;
    if (din) {
        const int ntile = (HW + LN2D_TILE - 1) / LN2D_TILE;
        const float invC = 1.0f / (float)C;
        #pragma omp parallel for collapse(2) schedule(static)
        for (int bi = 0; bi < B; bi++) {
            for (int t = 0; t < ntile; t++) {
                const int p0 = t * LN2D_TILE;
                const int np = HW - p0 < LN2D_TILE ? HW - p0 : LN2D_TILE;
                const size_t off = (size_t)bi * C * HW + p0;
                const float *x = in + off, *g = dout + off;
                float *dx = din + off;
                const float *m = mean + (size_t)bi * HW + p0, *r = rstd + (size_t)bi * HW + p0;
                float s1[LN2D_TILE], s2[LN2D_TILE];
                for (int p = 0; p < np; p++) { s1[p] = 0.0f; s2[p] = 0.0f; }
                for (int c = 0; c < C; c++) {
                    const float *xc = x + (size_t)c * HW, *gc = g + (size_t)c * HW;
                    const float wc = w ? w[c] : 1.0f;
                    for (int p = 0; p < np; p++) {
                        float dy = gc[p] * wc;
                        s1[p] += dy;
                        s2[p] += dy * (xc[p] - m[p]) * r[p];
                    }
                }
                for (int p = 0; p < np; p++) { s1[p] *= invC; s2[p] *= invC; }
                for (int c = 0; c < C; c++) {
                    const float *xc = x + (size_t)c * HW, *gc = g + (size_t)c * HW;
                    float *dxc = dx + (size_t)c * HW;
                    const float wc = w ? w[c] : 1.0f;
                    for (int p = 0; p < np; p++) {
                        float xh = (xc[p] - m[p]) * r[p];
                        dxc[p] += r[p] * (gc[p] * wc - s1[p] - xh * s2[p]);
                    }
                }
            }
        }
    }
    if (dw || db) {
        #pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            double sw = 0.0, sb = 0.0;
            for (int bi = 0; bi < B; bi++) {
                const size_t off = ((size_t)bi * C + c) * HW;
                const float *xc = in + off, *gc = dout + off;
                const float *m = mean + (size_t)bi * HW, *r = rstd + (size_t)bi * HW;
                float aw = 0.0f, ab = 0.0f;
                #pragma omp simd reduction(+:aw, ab)
                for (int p = 0; p < HW; p++) {
                    aw += gc[p] * (xc[p] - m[p]) * r[p];
                    ab += gc[p];
                }
                sw += aw; sb += ab;
            }
            if (dw) dw[c] += (float)sw;
            if (db) db[c] += (float)sb;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Bilinear resize, align_corners=False                                     */
/* ------------------------------------------------------------------------ */
/* One output coordinate's two source taps, as PyTorch computes them:
 * src = max(in/out * (o + 0.5) - 0.5, 0), i0 = floor(src), i1 = min(i0+1, in-1),
 * l1 = src - i0, l0 = 1 - l1. The ratio is a float and src is formed in
 * double before l1 is rounded: this matches torch's float32 output to ~1e-7
 * at 1024 -> 683, where a float src would be off by ~1e-4. */
typedef struct { int i0, i1; float l0, l1; } lerp_tap;

static void resize_taps(lerp_tap *t, int in_size, int out_size) {
    const float scale = (float)in_size / (float)out_size;
    for (int o = 0; o < out_size; o++) {
        double src = (double)scale * ((double)o + 0.5) - 0.5;
        if (src < 0.0) src = 0.0;
        int i0 = (int)src;
        if (i0 > in_size - 1) i0 = in_size - 1;
        double l1 = src - (double)i0;
        if (l1 < 0.0) l1 = 0.0;
        if (l1 > 1.0) l1 = 1.0;
        t[o].i0 = i0;
        t[o].i1 = i0 < in_size - 1 ? i0 + 1 : i0;
        t[o].l1 = (float)l1;
        t[o].l0 = 1.0f - (float)l1;
    }
}

/* in[C,Hin,Win] -> out[C,Hout,Wout] */
void resize_bilinear_forward(float *out, const float *in, int C, int Hin, int Win, int Hout, int Wout) {
    if (C <= 0 || Hin <= 0 || Win <= 0 || Hout <= 0 || Wout <= 0) return;
    lerp_tap ty[Hout], tx[Wout];
    resize_taps(ty, Hin, Hout);
    resize_taps(tx, Win, Wout);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int c = 0; c < C; c++) {
        for (int oy = 0; oy < Hout; oy++) {
            const float *plane = in + (size_t)c * Hin * Win;
            const float *r0 = plane + (size_t)ty[oy].i0 * Win, *r1 = plane + (size_t)ty[oy].i1 * Win;
            const float a0 = ty[oy].l0, a1 = ty[oy].l1;
            float *o = out + ((size_t)c * Hout + oy) * Wout;
            for (int ox = 0; ox < Wout; ox++) {
                const lerp_tap t = tx[ox];
                o[ox] = a0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1])
                      + a1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1]);
            }
        }
    }
}

/* din[C,Hin,Win] += resize^T(dout[C,Hout,Wout]).
 * Gather over input rows: the output rows that read input row iy form the
 * range [lo[iy], hi[iy]) (taps are monotone in o), so each (c, iy) task owns
 * its din row and the scatter along x stays inside it. */
void resize_bilinear_backward(float *din, const float *dout, int C, int Hin, int Win, int Hout, int Wout) {
    if (!din || C <= 0 || Hin <= 0 || Win <= 0 || Hout <= 0 || Wout <= 0) return;
    lerp_tap ty[Hout], tx[Wout];
    int lo[Hin], hi[Hin];
    resize_taps(ty, Hin, Hout);
    resize_taps(tx, Win, Wout);
    for (int i = 0; i < Hin; i++) { lo[i] = Hout; hi[i] = 0; }
    for (int o = 0; o < Hout; o++) {
        const int r[2] = { ty[o].i0, ty[o].i1 };
        for (int k = 0; k < 2; k++) {
            if (o < lo[r[k]]) lo[r[k]] = o;
            if (o + 1 > hi[r[k]]) hi[r[k]] = o + 1;
        }
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int c = 0; c < C; c++) {
        for (int iy = 0; iy < Hin; iy++) {
            float *d = din + ((size_t)c * Hin + iy) * Win;
            for (int oy = lo[iy]; oy < hi[iy]; oy++) {
                const float a = (ty[oy].i0 == iy ? ty[oy].l0 : 0.0f) + (ty[oy].i1 == iy ? ty[oy].l1 : 0.0f);
                if (a == 0.0f) continue;
                const float *g = dout + ((size_t)c * Hout + oy) * Wout;
                for (int ox = 0; ox < Wout; ox++) {
                    const lerp_tap t = tx[ox];
                    const float ag = a * g[ox];
                    d[t.i0] += t.l0 * ag;
                    d[t.i1] += t.l1 * ag;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* ConvTranspose2d, kernel 2x2, stride 2                                    */
/* ------------------------------------------------------------------------ */
/* With w viewed as Wm[Cin, Cout*4] (columns (co,ky,kx)), one batch item is
 *   T[(co,ky,kx), p] = Wm^T @ in[b][Cin, H*W]   (a GEMM)
 *   out[b, co, 2y+ky, 2x+kx] = T[(co,ky,kx), y*W+x] + bias[co]   (depth-to-space)
 * and backward uses the inverse gather D = space-to-depth(dout[b]):
 *   din[b] += Wm @ D,  dWm += in[b] @ D^T.
 * T and D are built tile by tile (a chunk of output channels by a run of
 * pixels) in a fixed stack buffer, so nothing is allocated. */
#define CT_BUF 32768          /* floats per tile buffer (128 KiB) */
#define CT_MIN_PIX 16         /* at least this many pixels per tile */

/* cc output channels per block (nco blocks), np pixels per tile (npt tiles). */
typedef struct { int cc, np, nco, npt; } ct_tiling;

static ct_tiling ct_plan(int Cout, int HW) {
    ct_tiling t;
    t.cc = Cout;
    if ((size_t)4 * t.cc * CT_MIN_PIX > CT_BUF) t.cc = CT_BUF / (4 * CT_MIN_PIX);
    t.np = CT_BUF / (4 * t.cc);
    if (t.np > HW) t.np = HW;
    t.nco = (Cout + t.cc - 1) / t.cc;
    t.npt = (HW + t.np - 1) / t.np;
    return t;
}

/* Tile rows are T[(co-c0)*4 + ky*2 + kx][p - p0] for the pixels p0 <= p < p0+np;
 * one batch item's plane is [Cout, 2H, 2W]. Both helpers walk the tile's
 * pixels row segment by row segment (p = y*W + x). */

/* ob[co, 2y+ky, 2x+kx] = T[(co-c0)*4 + ky*2 + kx][p-p0] + bias[co] (depth-to-space) */
static void ct_scatter(float *ob, const float *T, const float *bias, int co, int c0,
                       int p0, int np, int H, int W) {
    const float bv = bias ? bias[co] : 0.0f;
    for (int ky = 0; ky < 2; ky++) {
        const float *t0 = T + ((size_t)(co - c0) * 4 + ky * 2) * np;   /* kx = 0 row */
        const float *t1 = t0 + np;                                       /* kx = 1 row */
        for (int p = p0; p < p0 + np; ) {
            const int y = p / W, x0 = p % W;
            const int len = W - x0 < p0 + np - p ? W - x0 : p0 + np - p;
            float *orow = ob + ((size_t)co * 2 * H + 2 * y + ky) * 2 * W + 2 * x0;
            const float *a = t0 + (p - p0), *b = t1 + (p - p0);
            for (int i = 0; i < len; i++) { orow[2 * i] = a[i] + bv; orow[2 * i + 1] = b[i] + bv; }
            p += len;
        }
    }
}

/* D[(co-c0)*4 + ky*2 + kx][p-p0] = gb[co, 2y+ky, 2x+kx] (space-to-depth) */
static void ct_gather(float *D, const float *gb, int co, int c0, int p0, int np, int H, int W) {
    for (int ky = 0; ky < 2; ky++) {
        float *d0 = D + ((size_t)(co - c0) * 4 + ky * 2) * np;
        float *d1 = d0 + np;
        for (int p = p0; p < p0 + np; ) {
            const int y = p / W, x0 = p % W;
            const int len = W - x0 < p0 + np - p ? W - x0 : p0 + np - p;
            const float *grow = gb + ((size_t)co * 2 * H + 2 * y + ky) * 2 * W + 2 * x0;
            float *a = d0 + (p - p0), *b = d1 + (p - p0);
            for (int i = 0; i < len; i++) { a[i] = grow[2 * i]; b[i] = grow[2 * i + 1]; }
            p += len;
        }
    }
}

/* in[B,Cin,H,W], w[Cin,Cout,2,2], b[Cout] -> out[B,Cout,2H,2W] */
void conv_transpose2x2_forward(float *out, const float *in, const float *w, const float *b,
                               int B, int Cin, int Cout, int H, int W) {
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    const int HW = H * W;
    if (Cin <= 0) {            /* empty sum: the output is the bias */
        #pragma omp parallel for collapse(2) schedule(static)
        for (int bi = 0; bi < B; bi++)
            for (int co = 0; co < Cout; co++) {
                float *o = out + ((size_t)bi * Cout + co) * 4 * HW;
                const float bv = b ? b[co] : 0.0f;
                for (int i = 0; i < 4 * HW; i++) o[i] = bv;
            }
        return;
    }
    const ct_tiling tl = ct_plan(Cout, HW);
    #pragma omp parallel for collapse(3) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int cb = 0; cb < tl.nco; cb++) {
            for (int pt = 0; pt < tl.npt; pt++) {
                float T[CT_BUF];
                const int c0 = cb * tl.cc, cn = Cout - c0 < tl.cc ? Cout - c0 : tl.cc;
                const int p0 = pt * tl.np, np = HW - p0 < tl.np ? HW - p0 : tl.np;
                /* T[cn*4, np] = Wm[:, c0*4 : (c0+cn)*4]^T @ in[b][:, p0 : p0+np] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cn * 4, np, Cin,
                            1.0f, w + (size_t)c0 * 4, Cout * 4,
                            in + (size_t)bi * Cin * HW + p0, HW, 0.0f, T, np);
                float *ob = out + (size_t)bi * Cout * 4 * HW;
                for (int co = c0; co < c0 + cn; co++)
                    ct_scatter(ob, T, b, co, c0, p0, np, H, W);
            }
        }
    }
}

/* din[B,Cin,H,W] += Wm @ D;  dw[Cin,Cout,2,2] += in @ D^T;  db[Cout] += Σ dout */
void conv_transpose2x2_backward(float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int B, int Cin, int Cout, int H, int W) {
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    const int HW = H * W;
    if (db) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < Cout; co++) {
            double s = 0.0;
            for (int bi = 0; bi < B; bi++) {
                const float *g = dout + ((size_t)bi * Cout + co) * 4 * HW;
                float a = 0.0f;
                #pragma omp simd reduction(+:a)
                for (int i = 0; i < 4 * HW; i++) a += g[i];
                s += a;
            }
            db[co] += (float)s;
        }
    }
    if ((!din && !dw) || Cin <= 0) return;
    const ct_tiling tl = ct_plan(Cout, HW);
    /* Each thread owns a slice of input channels [r0, r1): the rows of din and
     * dWm it writes. It walks every tile, gathers D itself (a cost ~1/(rows)
     * of its GEMMs) and runs single-threaded sgemms on its slice: one
     * parallel region, no shared writes, no reduction. */
    #pragma omp parallel
    {
        const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
        int ns = (Cin + 15) / 16;                        /* at least 16 rows per slice */
        if (ns > nt) ns = nt;
        const int rows = (Cin + ns - 1) / ns;
        const int r0 = tid * rows, r1 = r0 + rows < Cin ? r0 + rows : Cin;
        if (tid < ns && r0 < r1) {
            float D[CT_BUF];
            for (int bi = 0; bi < B; bi++) {
                const float *ib = in + ((size_t)bi * Cin + r0) * HW;
                const float *gb = dout + (size_t)bi * Cout * 4 * HW;
                float *dib = din ? din + ((size_t)bi * Cin + r0) * HW : NULL;
                for (int cb = 0; cb < tl.nco; cb++) {
                    for (int pt = 0; pt < tl.npt; pt++) {
                        const int c0 = cb * tl.cc, cn = Cout - c0 < tl.cc ? Cout - c0 : tl.cc;
                        const int p0 = pt * tl.np, np = HW - p0 < tl.np ? HW - p0 : tl.np;
                        for (int co = c0; co < c0 + cn; co++)
                            ct_gather(D, gb, co, c0, p0, np, H, W);
                        if (dib)  /* din[b][r0:r1, p0:p0+np] += Wm[r0:r1, cols] @ D[cn*4, np] */
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, np, cn * 4,
                                        1.0f, w + (size_t)r0 * Cout * 4 + (size_t)c0 * 4, Cout * 4,
                                        D, np, 1.0f, dib + p0, HW);
                        if (dw)   /* dWm[r0:r1, cols] += in[b][r0:r1, p0:p0+np] @ D^T */
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, cn * 4, np,
                                        1.0f, ib + p0, HW, D, np,
                                        1.0f, dw + (size_t)r0 * Cout * 4 + (size_t)c0 * 4, Cout * 4);
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Conv2d: im2col + sgemm                                                   */
/* ------------------------------------------------------------------------ */
static int conv_out_size(int n, int k, int s, int p) {
    if (s <= 0 || k <= 0 || n + 2 * p < k) return 0;
    return (n + 2 * p - k) / s + 1;
}

/* Output positions o in [*lo, *hi) whose input tap i = o*s - p + k lies in [0, n). */
static void conv_valid_range(int *lo, int *hi, int n, int k, int s, int p, int on) {
    int a = p - k;                                   /* need o*s >= a */
    int l = a <= 0 ? 0 : (a + s - 1) / s;
    int b = n - 1 + p - k;                           /* need o*s <= b */
    int h = b < 0 ? 0 : b / s + 1;
    if (h > on) h = on;
    if (l > h) l = h;
    *lo = l; *hi = h;
}

size_t conv2d_scratch_floats(int Cin, int H, int W, int KH, int KW, int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (Cin <= 0 || OH <= 0 || OW <= 0) return 0;
    return (size_t)Cin * KH * KW * OH * OW;
}

static int conv_is_pointwise(int KH, int KW, int sh, int sw, int ph, int pw) {
    return KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
}

/* col[(ci,kh,kw), (oy,ox)] = x[ci, oy*sh-ph+kh, ox*sw-pw+kw] (0 outside); x[Cin,H,W]. */
static void im2col(float *col, const float *x, int Cin, int H, int W, int KH, int KW,
                   int sh, int sw, int ph, int pw, int OH, int OW) {
    const int R = Cin * KH * KW;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) {
        const int kw = r % KW, kh = (r / KW) % KH, ci = r / (KW * KH);
        int ylo, yhi, xlo, xhi;
        conv_valid_range(&ylo, &yhi, H, kh, sh, ph, OH);
        conv_valid_range(&xlo, &xhi, W, kw, sw, pw, OW);
        float *c = col + (size_t)r * OH * OW;
        const float *xp = x + (size_t)ci * H * W;
        for (int oy = 0; oy < OH; oy++) {
            float *cr = c + (size_t)oy * OW;
            if (oy < ylo || oy >= yhi) { memset(cr, 0, sizeof(float) * OW); continue; }
            const float *xr = xp + (size_t)(oy * sh - ph + kh) * W;   /* input row iy */
            const int x0 = kw - pw;                                     /* ix = ox*sw + x0 */
            for (int ox = 0; ox < xlo; ox++) cr[ox] = 0.0f;
            if (sw == 1) memcpy(cr + xlo, xr + xlo + x0, sizeof(float) * (xhi - xlo));
            else for (int ox = xlo; ox < xhi; ox++) cr[ox] = xr[ox * sw + x0];
            for (int ox = xhi; ox < OW; ox++) cr[ox] = 0.0f;
        }
    }
}

/* x[ci, oy*sh-ph+kh, ox*sw-pw+kw] += col[(ci,kh,kw), (oy,ox)]; one thread per ci. */
static void col2im_add(float *x, const float *col, int Cin, int H, int W, int KH, int KW,
                       int sh, int sw, int ph, int pw, int OH, int OW) {
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < Cin; ci++) {
        float *xp = x + (size_t)ci * H * W;
        for (int kh = 0; kh < KH; kh++) {
            int ylo, yhi;
            conv_valid_range(&ylo, &yhi, H, kh, sh, ph, OH);
            for (int kw = 0; kw < KW; kw++) {
                int xlo, xhi;
                conv_valid_range(&xlo, &xhi, W, kw, sw, pw, OW);
                const float *c = col + (((size_t)ci * KH + kh) * KW + kw) * OH * OW;
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *cr = c + (size_t)oy * OW;
                    float *xr = xp + (size_t)(oy * sh - ph + kh) * W;    /* input row iy */
                    const int x0 = kw - pw;                               /* ix = ox*sw + x0 */
                    for (int ox = xlo; ox < xhi; ox++) xr[ox * sw + x0] += cr[ox];
                }
            }
        }
    }
}

/* in[B,Cin,H,W], w[Cout,Cin,KH,KW], b[Cout] -> out[B,Cout,OH,OW];
 * per batch item: out[b][Cout, OH*OW] = Wm[Cout, Cin*KH*KW] @ col + b.
 * A pointwise conv (1x1, stride 1, no padding) has col = in[b] and leaves
 * scratch untouched. */
void conv2d_forward(float *out, float *scratch, const float *in, const float *w, const float *b,
                    int B, int Cin, int H, int W, int Cout, int KH, int KW,
                    int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (B <= 0 || Cout <= 0 || OH <= 0 || OW <= 0) return;
    const int OHW = OH * OW, K = Cin * KH * KW;
    const int pointwise = conv_is_pointwise(KH, KW, sh, sw, ph, pw);
    for (int bi = 0; bi < B; bi++) {
        float *ob = out + (size_t)bi * Cout * OHW;
        if (K <= 0) {
            memset(ob, 0, sizeof(float) * Cout * OHW);
        } else {
            const float *col = in + (size_t)bi * Cin * H * W;
            if (!pointwise) {
                im2col(scratch, col, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
                col = scratch;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cout, OHW, K,
                        1.0f, w, K, col, OHW, 0.0f, ob, OHW);
        }
        if (b) {
            #pragma omp parallel for schedule(static) if ((size_t)Cout * OHW > 32768)
            for (int co = 0; co < Cout; co++) {
                float *o = ob + (size_t)co * OHW;
                for (int i = 0; i < OHW; i++) o[i] += b[co];
            }
        }
    }
}

/* per batch item: dw += dout[b] @ col^T;  din[b] += col2im(Wm^T @ dout[b]);  db += rowsum(dout[b]) */
void conv2d_backward(float *din, float *dw, float *db, float *scratch, const float *dout,
                     const float *in, const float *w,
                     int B, int Cin, int H, int W, int Cout, int KH, int KW,
                     int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (B <= 0 || Cout <= 0 || OH <= 0 || OW <= 0) return;
    const int OHW = OH * OW, K = Cin * KH * KW;
    const int pointwise = conv_is_pointwise(KH, KW, sh, sw, ph, pw);
    if (db) {
        #pragma omp parallel for schedule(static)
        for (int co = 0; co < Cout; co++) {
            double s = 0.0;
            for (int bi = 0; bi < B; bi++) {
                const float *g = dout + ((size_t)bi * Cout + co) * OHW;
                float a = 0.0f;
                #pragma omp simd reduction(+:a)
                for (int i = 0; i < OHW; i++) a += g[i];
                s += a;
            }
            db[co] += (float)s;
        }
    }
    if (K <= 0) return;
    for (int bi = 0; bi < B; bi++) {
        const float *gb = dout + (size_t)bi * Cout * OHW;
        const float *ib = in + (size_t)bi * Cin * H * W;
        float *dib = din ? din + (size_t)bi * Cin * H * W : NULL;
        if (dw) {
            const float *col = ib;
            if (!pointwise) {
                im2col(scratch, ib, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
                col = scratch;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cout, K, OHW,
                        1.0f, gb, OHW, col, OHW, 1.0f, dw, K);
        }
        if (dib) {
            if (pointwise) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, Cout,
                            1.0f, w, K, gb, OHW, 1.0f, dib, OHW);
            } else {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, Cout,
                            1.0f, w, K, gb, OHW, 0.0f, scratch, OHW);
                col2im_add(dib, scratch, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* RoIAlign, channels-last                                                  */
/* ------------------------------------------------------------------------ */
/* One box's geometry after scaling, as torchvision computes it (in float). */
typedef struct { int bi; float y0, x0, bin_h, bin_w; int gh, gw; float count; } roi_geom;

static roi_geom roi_setup(const float *box, int PH, int PW, float spatial_scale,
                          int sampling_ratio, int aligned) {
    roi_geom g;
    const float off = aligned ? 0.5f : 0.0f;
    g.bi = (int)box[0];
    g.x0 = box[1] * spatial_scale - off;
    g.y0 = box[2] * spatial_scale - off;
    float rw = box[3] * spatial_scale - off - g.x0;
    float rh = box[4] * spatial_scale - off - g.y0;
    if (!aligned) {                                   /* malformed boxes become 1x1 */
        if (!(rw >= 1.0f)) rw = 1.0f;
        if (!(rh >= 1.0f)) rh = 1.0f;
    }
    g.bin_h = rh / (float)PH;
    g.bin_w = rw / (float)PW;
    g.gh = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rh / (float)PH);
    g.gw = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rw / (float)PW);
    int n = g.gh * g.gw;
    g.count = (float)(n > 1 ? n : 1);
    return g;
}

/* Bilinear taps of sample (y, x) with torchvision's edge rules; returns 0 for a
 * sample outside [-1, H] x [-1, W] (including NaN), which contributes nothing. */
static int roi_taps(float y, float x, int H, int W, int pos[4], float wt[4]) {
    if (!(y >= -1.0f && y <= (float)H && x >= -1.0f && x <= (float)W)) return 0;
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    int yl = (int)y, xl = (int)x, yh, xh;
    if (yl >= H - 1) { yl = yh = H - 1; y = (float)yl; } else yh = yl + 1;
    if (xl >= W - 1) { xl = xh = W - 1; x = (float)xl; } else xh = xl + 1;
    const float ly = y - (float)yl, lx = x - (float)xl, hy = 1.0f - ly, hx = 1.0f - lx;
    pos[0] = yl * W + xl; pos[1] = yl * W + xh; pos[2] = yh * W + xl; pos[3] = yh * W + xh;
    wt[0] = hy * hx; wt[1] = hy * lx; wt[2] = ly * hx; wt[3] = ly * lx;
    return 1;
}

static float roi_sample_y(const roi_geom *g, int ph, int iy) {
    return g->y0 + (float)ph * g->bin_h + ((float)iy + 0.5f) * g->bin_h / (float)g->gh;
}
static float roi_sample_x(const roi_geom *g, int pw, int ix) {
    return g->x0 + (float)pw * g->bin_w + ((float)ix + 0.5f) * g->bin_w / (float)g->gw;
}

/* in[B,H,W,C], boxes[K,5] -> out[K,PH,PW,C]. A box whose batch index is not in
 * [0,B) yields zeros (the caller is expected to validate it). */
void roi_align_forward(float *out, const float *in, const float *boxes, int K,
                       int B, int H, int W, int C, int PH, int PW,
                       float spatial_scale, int sampling_ratio, int aligned) {
    if (K <= 0 || C <= 0 || PH <= 0 || PW <= 0) return;
    #pragma omp parallel for collapse(3) schedule(static)
    for (int k = 0; k < K; k++) {
        for (int ph = 0; ph < PH; ph++) {
            for (int pw = 0; pw < PW; pw++) {
                const roi_geom g = roi_setup(boxes + (size_t)k * 5, PH, PW, spatial_scale,
                                             sampling_ratio, aligned);
                float *o = out + (((size_t)k * PH + ph) * PW + pw) * C;
                for (int c = 0; c < C; c++) o[c] = 0.0f;
                if (g.bi < 0 || g.bi >= B || H <= 0 || W <= 0) continue;
                const float *img = in + (size_t)g.bi * H * W * C;
                for (int iy = 0; iy < g.gh; iy++) {
                    const float y = roi_sample_y(&g, ph, iy);
                    for (int ix = 0; ix < g.gw; ix++) {
                        int pos[4]; float wt[4];
                        if (!roi_taps(y, roi_sample_x(&g, pw, ix), H, W, pos, wt)) continue;
                        const float *v1 = img + (size_t)pos[0] * C, *v2 = img + (size_t)pos[1] * C;
                        const float *v3 = img + (size_t)pos[2] * C, *v4 = img + (size_t)pos[3] * C;
                        for (int c = 0; c < C; c++)
                            o[c] += wt[0] * v1[c] + wt[1] * v2[c] + wt[2] * v3[c] + wt[3] * v4[c];
                    }
                }
                const float inv = 1.0f / g.count;
                for (int c = 0; c < C; c++) o[c] *= inv;
            }
        }
    }
}

/* din[B,H,W,C] += RoIAlign^T(dout[K,PH,PW,C]). Each thread owns a slice of the
 * channels and walks every box and sample, so scatters never collide. */
void roi_align_backward(float *din, const float *dout, const float *boxes, int K,
                        int B, int H, int W, int C, int PH, int PW,
                        float spatial_scale, int sampling_ratio, int aligned) {
    if (!din || K <= 0 || C <= 0 || PH <= 0 || PW <= 0 || H <= 0 || W <= 0) return;
    #pragma omp parallel
    {
        const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
        int chunk = (C + nt - 1) / nt;
        chunk = (chunk + 15) / 16 * 16;                /* whole vectors per thread */
        const int c0 = tid * chunk, c1 = c0 + chunk < C ? c0 + chunk : C;
        if (c0 < c1) {
            for (int k = 0; k < K; k++) {
                const roi_geom g = roi_setup(boxes + (size_t)k * 5, PH, PW, spatial_scale,
                                             sampling_ratio, aligned);
                if (g.bi < 0 || g.bi >= B) continue;
                float *img = din + (size_t)g.bi * H * W * C;
                const float inv = 1.0f / g.count;
                for (int ph = 0; ph < PH; ph++) {
                    for (int pw = 0; pw < PW; pw++) {
                        const float *go = dout + (((size_t)k * PH + ph) * PW + pw) * C;
                        for (int iy = 0; iy < g.gh; iy++) {
                            const float y = roi_sample_y(&g, ph, iy);
                            for (int ix = 0; ix < g.gw; ix++) {
                                int pos[4]; float wt[4];
                                if (!roi_taps(y, roi_sample_x(&g, pw, ix), H, W, pos, wt)) continue;
                                for (int t = 0; t < 4; t++) {
                                    float *d = img + (size_t)pos[t] * C;
                                    const float a = wt[t] * inv;
                                    for (int c = c0; c < c1; c++) d[c] += a * go[c];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
