/* tests/test_grad_vision.c — the vision primitives of kernels.h: LayerNorm2d,
 * bilinear resize, ConvTranspose2d 2x2/s2, Conv2d, RoIAlign.
 * For each: the forward against a naive double-precision reference written
 * here (and, for resize and RoIAlign, against values printed by PyTorch /
 * torchvision), finite-difference checks of every gradient, and the gradient
 * convention (backward accumulates; NULL gradients are skipped and leave the
 * others unchanged). The loss is Σ out·r for a fixed random r, so dout = r. */
#include "kernels/kernels.h"
#include "tests/testlib.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FWD_TOL 2e-6      /* forward vs double reference, relative to the tensor's scale */

static float *randn(size_t n, uint64_t seed) {
    float *x = t_alloc(n);
    t_fill_normal(x, n, 1.0f, seed);
    return x;
}

/* ------------------------------------------------------------------------ */
/* Gradient convention, shared by every kernel                              */
/* ------------------------------------------------------------------------ */
/* bwd(ctx, g) runs the kernel's backward with dout = r into the ng gradient
 * buffers g[i] (any of which may be NULL). */
typedef void (*bwd_fn)(void *ctx, float **g);

/* Checks: a second backward into the same buffers doubles them; each gradient
 * computed alone (all others NULL) equals the one computed together; an
 * all-NULL call is accepted. */
static void check_convention(const char *name, bwd_fn bwd, void *ctx, const size_t *n, int ng) {
    float *ref[8], *g[8], *none[8] = {0};
    char label[160];
    for (int i = 0; i < ng; i++) { ref[i] = t_alloc(n[i]); g[i] = t_alloc(n[i]); }
    bwd(ctx, g);
    for (int i = 0; i < ng; i++) memcpy(ref[i], g[i], n[i] * sizeof(float));
    bwd(ctx, g);
    double worst = 0;
    for (int i = 0; i < ng; i++) {
        for (size_t j = 0; j < n[i]; j++) ref[i][j] *= 2.0f;
        double e = t_max_rel_err(g[i], ref[i], n[i]);
        if (e > worst) worst = e;
        for (size_t j = 0; j < n[i]; j++) ref[i][j] *= 0.5f;
    }
    snprintf(label, sizeof label, "%s accumulates", name);
    t_check(worst <= 1e-6, label, "twice = 2x once: max rel err %.2e", worst);
    worst = 0;
    for (int i = 0; i < ng; i++) {
        float *one[8] = {0};
        memset(g[i], 0, n[i] * sizeof(float));
        one[i] = g[i];
        bwd(ctx, one);
        double e = t_max_rel_err(g[i], ref[i], n[i]);
        if (e > worst) worst = e;
    }
    bwd(ctx, none);
    snprintf(label, sizeof label, "%s NULL grads", name);
    t_check(worst <= 1e-6, label, "each gradient alone = all together: max rel err %.2e", worst);
    for (int i = 0; i < ng; i++) { free(ref[i]); free(g[i]); }
}

/* Finite-difference checks of the ng gradients g[i] of the arrays x[i]. */
static void check_grads(const char *name, bwd_fn bwd, t_loss_fn loss, void *ctx, float **x,
                        const size_t *n, const char *const *xname, int ng,
                        float eps, double tol, size_t max_points) {
    float *g[8];
    char label[160];
    for (int i = 0; i < ng; i++) g[i] = t_alloc(n[i]);
    loss(ctx);
    bwd(ctx, g);
    for (int i = 0; i < ng; i++) {
        snprintf(label, sizeof label, "%s d%s", name, xname[i]);
        t_gradcheck(label, loss, ctx, x[i], g[i], n[i], eps, tol, max_points);
    }
    for (int i = 0; i < ng; i++) free(g[i]);
}

/* ------------------------------------------------------------------------ */
/* LayerNorm2d                                                              */
/* ------------------------------------------------------------------------ */
typedef struct {
    int B, C, HW; float eps;
    float *in, *w, *b, *out, *mean, *rstd, *r;
} ln2d_ctx;

static double ln2d_loss(void *p) {
    ln2d_ctx *c = p;
    layernorm2d_forward(c->out, c->mean, c->rstd, c->in, c->w, c->b, c->eps, c->B, c->C, c->HW);
    return t_dot(c->out, c->r, (size_t)c->B * c->C * c->HW);
}
static void ln2d_bwd(void *p, float **g) {
    ln2d_ctx *c = p;
    layernorm2d_backward(g[0], g[1], g[2], c->r, c->in, c->w, c->mean, c->rstd, c->B, c->C, c->HW);
}

static void test_layernorm2d(int B, int C, int HW, uint64_t seed) {
    char name[96];
    snprintf(name, sizeof name, "layernorm2d B%d C%d HW%d", B, C, HW);
    const size_t n = (size_t)B * C * HW;
    ln2d_ctx c = { B, C, HW, 1e-6f, randn(n, seed), randn(C, seed + 1), randn(C, seed + 2),
                   t_alloc(n), t_alloc((size_t)B * HW), t_alloc((size_t)B * HW), randn(n, seed + 3) };
    for (size_t i = 0; i < n; i++) c.in[i] = 0.5f + 2.0f * c.in[i];   /* non-zero mean */
    ln2d_loss(&c);
    double *ref = malloc(n * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            double m = 0, v = 0;
            for (int ch = 0; ch < C; ch++) m += c.in[((size_t)b * C + ch) * HW + p];
            m /= C;
            for (int ch = 0; ch < C; ch++) { double d = c.in[((size_t)b * C + ch) * HW + p] - m; v += d * d; }
            double rs = 1.0 / sqrt(v / C + (double)c.eps);
            for (int ch = 0; ch < C; ch++) {
                size_t i = ((size_t)b * C + ch) * HW + p;
                ref[i] = (c.in[i] - m) * rs * c.w[ch] + c.b[ch];
            }
        }
    char label[128];
    snprintf(label, sizeof label, "%s forward", name);
    double e = t_max_rel_err_d(c.out, ref, n);
    t_check(e <= FWD_TOL, label, "vs double reference: max rel err %.2e", e);
    float *x[3] = { c.in, c.w, c.b };
    size_t ns[3] = { n, (size_t)C, (size_t)C };
    const char *xn[3] = { "in", "w", "b" };
    check_grads(name, ln2d_bwd, ln2d_loss, &c, x, ns, xn, 3, 1e-2f, 2e-2, 60);
    check_convention(name, ln2d_bwd, &c, ns, 3);
    free(ref); free(c.in); free(c.w); free(c.b); free(c.out); free(c.mean); free(c.rstd); free(c.r);
}

/* ------------------------------------------------------------------------ */
/* Bilinear resize                                                          */
/* ------------------------------------------------------------------------ */
typedef struct { int C, Hin, Win, Hout, Wout; float *in, *out, *r; } rs_ctx;

static double rs_loss(void *p) {
    rs_ctx *c = p;
    resize_bilinear_forward(c->out, c->in, c->C, c->Hin, c->Win, c->Hout, c->Wout);
    return t_dot(c->out, c->r, (size_t)c->C * c->Hout * c->Wout);
}
static void rs_bwd(void *p, float **g) {
    rs_ctx *c = p;
    resize_bilinear_backward(g[0], c->r, c->C, c->Hin, c->Win, c->Hout, c->Wout);
}

/* The align_corners=False source coordinate, in double. */
static void rs_src(int o, int in, int out, int *i0, int *i1, double *l1) {
    double s = (o + 0.5) * in / out - 0.5;
    if (s < 0) s = 0;
    *i0 = (int)floor(s);
    if (*i0 > in - 1) *i0 = in - 1;
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *l1 = s - *i0;
}

static void rs_reference(double *ref, const float *in, int C, int Hin, int Win, int Hout, int Wout) {
    for (int ch = 0; ch < C; ch++)
        for (int oy = 0; oy < Hout; oy++)
            for (int ox = 0; ox < Wout; ox++) {
                int y0, y1, x0, x1; double ly, lx;
                rs_src(oy, Hin, Hout, &y0, &y1, &ly);
                rs_src(ox, Win, Wout, &x0, &x1, &lx);
                const float *pl = in + (size_t)ch * Hin * Win;
                ref[((size_t)ch * Hout + oy) * Wout + ox] =
                    (1 - ly) * ((1 - lx) * pl[y0 * Win + x0] + lx * pl[y0 * Win + x1]) +
                    ly * ((1 - lx) * pl[y1 * Win + x0] + lx * pl[y1 * Win + x1]);
            }
}

static void test_resize(int C, int Hin, int Win, int Hout, int Wout, uint64_t seed) {
    char name[96], label[128];
    snprintf(name, sizeof name, "resize C%d %dx%d->%dx%d", C, Hin, Win, Hout, Wout);
    const size_t ni = (size_t)C * Hin * Win, no = (size_t)C * Hout * Wout;
    rs_ctx c = { C, Hin, Win, Hout, Wout, randn(ni, seed), t_alloc(no), randn(no, seed + 1) };
    rs_loss(&c);
    double *ref = malloc(no * sizeof(double));
    rs_reference(ref, c.in, C, Hin, Win, Hout, Wout);
    double e = t_max_rel_err_d(c.out, ref, no);
    snprintf(label, sizeof label, "%s forward", name);
    t_check(e <= FWD_TOL, label, "vs double reference: max rel err %.2e", e);
    float *x[1] = { c.in };
    size_t ns[1] = { ni };
    const char *xn[1] = { "in" };
    check_grads(name, rs_bwd, rs_loss, &c, x, ns, xn, 1, 1e-2f, 5e-3, 80);
    check_convention(name, rs_bwd, &c, ns, 1);
    free(ref); free(c.in); free(c.out); free(c.r);
}

static void test_resize_values(void) {
    /* A constant image stays constant, up and down. */
    {
        float *in = t_alloc(2 * 9 * 7), *out = t_alloc(2 * 31 * 4);
        for (int i = 0; i < 2 * 9 * 7; i++) in[i] = i < 63 ? 1.25f : -3.0f;
        resize_bilinear_forward(out, in, 2, 9, 7, 31, 4);
        double e = 0;
        for (int i = 0; i < 2 * 31 * 4; i++) e = fmax(e, fabs(out[i] - (i < 124 ? 1.25 : -3.0)));
        t_check(e <= 1e-6, "resize constant image", "9x7->31x4, max abs err %.2e", e);
        free(in); free(out);
    }
    /* Equal sizes: the identity. */
    {
        float *in = randn(3 * 5 * 6, 77), *out = t_alloc(3 * 5 * 6);
        resize_bilinear_forward(out, in, 3, 5, 6, 5, 6);
        t_check(memcmp(in, out, sizeof(float) * 90) == 0, "resize identity", "5x6->5x6 exact copy");
        free(in); free(out);
    }
    /* By hand: the row [0, 1] to width 4 samples at src 0 (clamped), 0.25, 0.75, 1 (edge). */
    {
        float in[2] = { 0.0f, 1.0f }, out[4];
        resize_bilinear_forward(out, in, 1, 1, 2, 1, 4);
        const float want[4] = { 0.0f, 0.25f, 0.75f, 1.0f };
        double e = 0;
        for (int i = 0; i < 4; i++) e = fmax(e, fabs(out[i] - want[i]));
        t_check(e <= 1e-7, "resize by hand", "[0,1] -> [0,.25,.75,1], max abs err %.2e", e);
    }
    /* Values printed by torch 1.13 F.interpolate(x[None], size, mode='bilinear',
     * align_corners=False) with x[c,y,x] = ((7c + 5y + 3x) % 13)/4 - 1.5, C=2, 3x4. */
    {
        static const float up[70] = {
            -1.5, -1.232143, -0.8035714, -0.375, 0.05357143, 0.4821429, 0.75, -1, -0.7321429,
            -0.3035714, 0.125, 0.4607143, 0.1464286, -0.05, -0.25, 0.01785714, 0.4464286, 0.875,
            1.071429, -0.3571429, -1.25, 0.5, 0.07142857, -0.6142857, -0.325, 0.01071429,
            -0.3035714, -0.5, 1, 0.1071429, -1.321429, -1.125, -0.6964286, -0.2678571, 0, 0.25,
            0.5178571, 0.9464286, -0.25, -1.446429, -1.017857, -0.75, 0.75, 0.5535714, 0.2392857,
            -0.4, -0.9464286, -0.5178571, -0.25, 1.5, 0.6071429, -0.8214286, -0.625, -0.1964286,
            0.2321429, 0.5, 0.3, 0.1035714, -0.2107143, 0.125, 0.4142857, -0.2714286, -0.7, -0.5,
            -0.2321429, 0.1964286, 0.625, 0.8214286, -0.6071429, -1.5 };
        static const float down[12] = {
            -1.0625, -0.0625, 0.2604167, 0.40625, -0.625, -0.3020833, 0.5520833, -0.34375,
            -0.5625, -0.01041667, 0.3125, -0.71875 };
        float in[24], out[70];
        for (int ch = 0; ch < 2; ch++)
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 4; x++) in[(ch * 3 + y) * 4 + x] = ((7 * ch + 5 * y + 3 * x) % 13) / 4.0f - 1.5f;
        resize_bilinear_forward(out, in, 2, 3, 4, 5, 7);
        double e1 = t_max_rel_err(out, up, 70);
        resize_bilinear_forward(out, in, 2, 3, 4, 2, 3);
        double e2 = t_max_rel_err(out, down, 12);
        t_check(e1 <= 2e-6 && e2 <= 2e-6, "resize vs PyTorch values",
                "3x4->5x7 %.2e, 3x4->2x3 %.2e", e1, e2);
    }
}

/* ------------------------------------------------------------------------ */
/* ConvTranspose2d 2x2, stride 2                                            */
/* ------------------------------------------------------------------------ */
typedef struct { int B, Cin, Cout, H, W; float *in, *w, *b, *out, *r; } ct_ctx;

static size_t ct_nout(const ct_ctx *c) { return (size_t)c->B * c->Cout * 4 * c->H * c->W; }
static double ct_loss(void *p) {
    ct_ctx *c = p;
    conv_transpose2x2_forward(c->out, c->in, c->w, c->b, c->B, c->Cin, c->Cout, c->H, c->W);
    return t_dot(c->out, c->r, ct_nout(c));
}
static void ct_bwd(void *p, float **g) {
    ct_ctx *c = p;
    conv_transpose2x2_backward(g[0], g[1], g[2], c->r, c->in, c->w, c->B, c->Cin, c->Cout, c->H, c->W);
}

static void test_conv_transpose(int B, int Cin, int Cout, int H, int W, int grads, uint64_t seed) {
    char name[96], label[128];
    snprintf(name, sizeof name, "conv_transpose2x2 B%d %d->%d %dx%d", B, Cin, Cout, H, W);
    const size_t ni = (size_t)B * Cin * H * W, nw = (size_t)Cin * Cout * 4;
    ct_ctx c = { B, Cin, Cout, H, W, randn(ni, seed), randn(nw, seed + 1), randn(Cout, seed + 2), NULL, NULL };
    const size_t no = ct_nout(&c);
    c.out = t_alloc(no);
    c.r = randn(no, seed + 3);
    ct_loss(&c);
    double *ref = malloc(no * sizeof(double));
    const int OH = 2 * H, OW = 2 * W;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Cout; co++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = c.b[co];
                    for (int ci = 0; ci < Cin; ci++)
                        s += (double)c.in[(((size_t)b * Cin + ci) * H + oy / 2) * W + ox / 2] *
                             c.w[(((size_t)ci * Cout + co) * 2 + oy % 2) * 2 + ox % 2];
                    ref[(((size_t)b * Cout + co) * OH + oy) * OW + ox] = s;
                }
    double e = t_max_rel_err_d(c.out, ref, no);
    snprintf(label, sizeof label, "%s forward", name);
    t_check(e <= FWD_TOL, label, "vs double reference: max rel err %.2e", e);
    if (grads) {
        float *x[3] = { c.in, c.w, c.b };
        size_t ns[3] = { ni, nw, (size_t)Cout };
        const char *xn[3] = { "in", "w", "b" };
        check_grads(name, ct_bwd, ct_loss, &c, x, ns, xn, 3, 1e-2f, 5e-3, 40);
        check_convention(name, ct_bwd, &c, ns, 3);
    }
    free(ref); free(c.in); free(c.w); free(c.b); free(c.out); free(c.r);
}

/* ------------------------------------------------------------------------ */
/* Conv2d                                                                   */
/* ------------------------------------------------------------------------ */
typedef struct {
    int B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, OH, OW;
    float *in, *w, *b, *out, *r, *scratch;
} cv_ctx;

static size_t cv_nout(const cv_ctx *c) { return (size_t)c->B * c->Cout * c->OH * c->OW; }
static double cv_loss(void *p) {
    cv_ctx *c = p;
    conv2d_forward(c->out, c->scratch, c->in, c->w, c->b, c->B, c->Cin, c->H, c->W, c->Cout,
                   c->KH, c->KW, c->sh, c->sw, c->ph, c->pw);
    return t_dot(c->out, c->r, cv_nout(c));
}
static void cv_bwd(void *p, float **g) {
    cv_ctx *c = p;
    conv2d_backward(g[0], g[1], g[2], c->scratch, c->r, c->in, c->w, c->B, c->Cin, c->H, c->W,
                    c->Cout, c->KH, c->KW, c->sh, c->sw, c->ph, c->pw);
}

static void test_conv2d(int B, int Cin, int H, int W, int Cout, int KH, int KW,
                        int sh, int sw, int ph, int pw, uint64_t seed) {
    char name[128], label[160];
    snprintf(name, sizeof name, "conv2d B%d %d->%d %dx%d k%dx%d s%d,%d p%d,%d",
             B, Cin, Cout, H, W, KH, KW, sh, sw, ph, pw);
    const int OH = (H + 2 * ph - KH) / sh + 1, OW = (W + 2 * pw - KW) / sw + 1;
    const size_t ni = (size_t)B * Cin * H * W, nw = (size_t)Cout * Cin * KH * KW;
    cv_ctx c = { B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, OH, OW,
                 randn(ni, seed), randn(nw, seed + 1), randn(Cout, seed + 2), NULL, NULL, NULL };
    const size_t no = cv_nout(&c), ns_scr = conv2d_scratch_floats(Cin, H, W, KH, KW, sh, sw, ph, pw);
    t_check(ns_scr == (size_t)Cin * KH * KW * OH * OW, "conv2d_scratch_floats", "%s: %zu", name, ns_scr);
    c.out = t_alloc(no);
    c.r = randn(no, seed + 3);
    c.scratch = t_alloc(ns_scr);
    cv_loss(&c);
    double *ref = malloc(no * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Cout; co++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = c.b[co];
                    for (int ci = 0; ci < Cin; ci++)
                        for (int kh = 0; kh < KH; kh++)
                            for (int kw = 0; kw < KW; kw++) {
                                int iy = oy * sh - ph + kh, ix = ox * sw - pw + kw;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)c.in[(((size_t)b * Cin + ci) * H + iy) * W + ix] *
                                     c.w[(((size_t)co * Cin + ci) * KH + kh) * KW + kw];
                            }
                    ref[(((size_t)b * Cout + co) * OH + oy) * OW + ox] = s;
                }
    double e = t_max_rel_err_d(c.out, ref, no);
    snprintf(label, sizeof label, "%s forward", name);
    t_check(e <= FWD_TOL, label, "vs double reference: max rel err %.2e", e);
    float *x[3] = { c.in, c.w, c.b };
    size_t ns[3] = { ni, nw, (size_t)Cout };
    const char *xn[3] = { "in", "w", "b" };
    check_grads(name, cv_bwd, cv_loss, &c, x, ns, xn, 3, 1e-2f, 5e-3, 40);
    check_convention(name, cv_bwd, &c, ns, 3);
    free(ref); free(c.in); free(c.w); free(c.b); free(c.out); free(c.r); free(c.scratch);
}

/* ------------------------------------------------------------------------ */
/* RoIAlign                                                                 */
/* ------------------------------------------------------------------------ */
typedef struct {
    int K, B, H, W, C, PH, PW, sr, aligned; float scale;
    float *in, *boxes, *out, *r;
} roi_ctx;

static size_t roi_nout(const roi_ctx *c) { return (size_t)c->K * c->PH * c->PW * c->C; }
static double roi_loss(void *p) {
    roi_ctx *c = p;
    roi_align_forward(c->out, c->in, c->boxes, c->K, c->B, c->H, c->W, c->C, c->PH, c->PW,
                      c->scale, c->sr, c->aligned);
    return t_dot(c->out, c->r, roi_nout(c));
}
static void roi_bwd(void *p, float **g) {
    roi_ctx *c = p;
    roi_align_backward(g[0], c->r, c->boxes, c->K, c->B, c->H, c->W, c->C, c->PH, c->PW,
                       c->scale, c->sr, c->aligned);
}

/* torchvision's algorithm, written out per output element in double. The box
 * geometry is rounded to float as torchvision computes it for float tensors,
 * so that the adaptive grid size ceil(roi/bins) agrees at exact multiples. */
static void roi_reference(double *ref, const roi_ctx *c) {
    for (int k = 0; k < c->K; k++) {
        const float *bx = c->boxes + 5 * k;
        const float off = c->aligned ? 0.5f : 0.0f;
        const float x1 = bx[1] * c->scale - off, y1 = bx[2] * c->scale - off;
        float rw = (bx[3] * c->scale - off) - x1, rh = (bx[4] * c->scale - off) - y1;
        if (!c->aligned) { rw = fmaxf(rw, 1.0f); rh = fmaxf(rh, 1.0f); }
        const double bh = (double)rh / c->PH, bw = (double)rw / c->PW;
        const int gh = c->sr > 0 ? c->sr : (int)ceilf(rh / (float)c->PH);
        const int gw = c->sr > 0 ? c->sr : (int)ceilf(rw / (float)c->PW);
        const double cnt = gh * gw > 1 ? gh * gw : 1;
        const float *img = c->in + (size_t)(int)bx[0] * c->H * c->W * c->C;
        for (int ph = 0; ph < c->PH; ph++)
            for (int pw = 0; pw < c->PW; pw++)
                for (int ch = 0; ch < c->C; ch++) {
                    double s = 0;
                    for (int iy = 0; iy < gh; iy++)
                        for (int ix = 0; ix < gw; ix++) {
                            double y = y1 + ph * bh + (iy + 0.5) * bh / gh;
                            double x = x1 + pw * bw + (ix + 0.5) * bw / gw;
                            if (y < -1 || y > c->H || x < -1 || x > c->W) continue;
                            y = fmax(y, 0); x = fmax(x, 0);
                            int y0 = (int)y, x0 = (int)x, ya, xa;
                            if (y0 >= c->H - 1) { y0 = ya = c->H - 1; y = y0; } else ya = y0 + 1;
                            if (x0 >= c->W - 1) { x0 = xa = c->W - 1; x = x0; } else xa = x0 + 1;
                            double ly = y - y0, lx = x - x0;
#define PIX(yy, xx) ((double)img[(((size_t)(yy) * c->W) + (xx)) * c->C + ch])
                            s += (1 - ly) * (1 - lx) * PIX(y0, x0) + (1 - ly) * lx * PIX(y0, xa) +
                                 ly * (1 - lx) * PIX(ya, x0) + ly * lx * PIX(ya, xa);
#undef PIX
                        }
                    ref[(((size_t)k * c->PH + ph) * c->PW + pw) * c->C + ch] = s / cnt;
                }
    }
}

static void test_roi_align(int B, int H, int W, int C, int PH, int PW, float scale, int sr,
                           int aligned, uint64_t seed) {
    char name[128], label[160];
    snprintf(name, sizeof name, "roi_align %dx%dx%d P%dx%d scale%.2g sr%d al%d",
             H, W, C, PH, PW, scale, sr, aligned);
    /* Boxes in input coordinates (before scale): inside, partly outside on
     * every side, tiny (below one pixel), and the whole image. */
    const float fw = W / scale, fh = H / scale;
    const float boxes[6][5] = {
        { 0, 0.13f * fw, 0.21f * fh, 0.77f * fw, 0.64f * fh },
        { B - 1, -0.30f * fw, -0.20f * fh, 0.40f * fw, 0.55f * fh },
        { 0, 0.60f * fw, 0.50f * fh, 1.35f * fw, 1.20f * fh },
        { B - 1, 0.41f * fw, 0.37f * fh, 0.43f * fw, 0.40f * fh },
        { 0, 0.0f, 0.0f, fw, fh },
        { B - 1, -0.5f * fw, 0.3f * fh, 1.5f * fw, 0.9f * fh },
    };
    const int K = 6;
    const size_t ni = (size_t)B * H * W * C;
    roi_ctx c = { K, B, H, W, C, PH, PW, sr, aligned, scale, randn(ni, seed), t_alloc(5 * K), NULL, NULL };
    memcpy(c.boxes, boxes, sizeof boxes);
    const size_t no = roi_nout(&c);
    c.out = t_alloc(no);
    c.r = randn(no, seed + 1);
    roi_loss(&c);
    double *ref = malloc(no * sizeof(double));
    roi_reference(ref, &c);
    double e = t_max_rel_err_d(c.out, ref, no);
    snprintf(label, sizeof label, "%s forward", name);
    t_check(e <= 1e-5, label, "vs double reference: max rel err %.2e", e);
    float *x[1] = { c.in };
    size_t ns[1] = { ni };
    const char *xn[1] = { "in" };
    check_grads(name, roi_bwd, roi_loss, &c, x, ns, xn, 1, 1e-2f, 5e-3, 120);
    check_convention(name, roi_bwd, &c, ns, 1);
    free(ref); free(c.in); free(c.boxes); free(c.out); free(c.r);
}

/* A linear ramp v = a_c + bx_c x + by_c y is reproduced exactly by bilinear
 * sampling, and the average of a bin's regular grid of samples is the ramp at
 * the bin centre: out = a + bx cx + by cy with cx = x1 + (pw+0.5) bin_w. */
static void test_roi_ramp(int aligned, int sr) {
    const int B = 2, H = 12, W = 16, C = 3, PH = 3, PW = 4;
    const float scale = 0.5f, a[3] = { 1.0f, -2.0f, 0.5f }, bx[3] = { 0.25f, -0.5f, 0.125f },
                by[3] = { -0.75f, 0.375f, 1.0f };
    float *in = t_alloc((size_t)B * H * W * C);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int ch = 0; ch < C; ch++)
                    in[(((size_t)b * H + y) * W + x) * C + ch] = a[ch] + bx[ch] * x + by[ch] * y + 10.0f * b;
    const float boxes[2][5] = { { 1, 4.0f, 3.0f, 27.0f, 19.0f }, { 0, 2.6f, 5.2f, 9.8f, 20.4f } };
    float out[2 * 3 * 4 * 3];
    roi_align_forward(out, in, &boxes[0][0], 2, B, H, W, C, PH, PW, scale, sr, aligned);
    double e = 0;
    for (int k = 0; k < 2; k++) {
        const double off = aligned ? 0.5 : 0.0;
        const double x1 = boxes[k][1] * scale - off, y1 = boxes[k][2] * scale - off;
        const double bw = (boxes[k][3] * scale - off - x1) / PW, bh = (boxes[k][4] * scale - off - y1) / PH;
        for (int ph = 0; ph < PH; ph++)
            for (int pw = 0; pw < PW; pw++)
                for (int ch = 0; ch < C; ch++) {
                    double cx = x1 + (pw + 0.5) * bw, cy = y1 + (ph + 0.5) * bh;
                    double want = a[ch] + bx[ch] * cx + by[ch] * cy + 10.0 * boxes[k][0];
                    e = fmax(e, fabs(out[((k * PH + ph) * PW + pw) * C + ch] - want));
                }
    }
    char label[96];
    snprintf(label, sizeof label, "roi_align linear ramp al%d sr%d", aligned, sr);
    t_check(e <= 1e-5, label, "bin centres reproduced, max abs err %.2e", e);
    free(in);
}

/* Values printed by torchvision 0.14 roi_align on x[b,y,x,c] =
 * ((7b + 5y + 3x + 11c) % 17)/4 - 2 (B=2, 5x6, C=3), output (2,3), scale 1,
 * permuted to channels-last [K,PH,PW,C]. Boxes 1, 3 reach outside the image. */
static void test_roi_torchvision(void) {
    static const float boxes[4][5] = { { 0, -1.5f, 0.5f, 3.2f, 4.7f }, { 1, 2.0f, -2.0f, 7.5f, 3.0f },
                                       { 1, 0.3f, 0.9f, 1.1f, 1.4f }, { 0, 4.0f, 3.0f, 9.0f, 8.0f } };
    static const float want[4][72] = {
        { /* aligned 0, sampling 2 */
          -0.03125, 0.2546875, 0.5140625, 0.4587891, -0.3638672, 0.1936198, 0.7494792, 0.1835937,
          -0.04140625, 0.03125, 0.4765625, -0.2734375, -0.6557943, -0.1525391, 0.090625, 0.015625,
          -0.3997396, 0.2695312, 0.5703125, 0.21875, -0.53125, -0.5078125, 0.8671875, 0.1171875, 0, 0,
          0, -0.2744141, -0.1142578, 0.2451172, 0.375, -0.328125, 0.03125, 0, 0, 0, 0.9, 0.0375,
          -1.4625, 1.15, 0.2875, -1.2125, 0.9183333, 0.4525, -0.9625, -0.6, 0.6625, -0.8375, -0.35,
          0.9125, -0.5875, -0.2983333, 0.7941667, -0.3375, -0.3990885, 0.546875, -0.7207031, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        { /* aligned 0, adaptive */
          -0.03125, 0.2458333, 0.4166667, 0.3167535, -0.2393924, 0.1279514, 0.6284722, 0.1024306,
          0.03680556, 0.03958333, 0.4583333, -0.25625, -0.6262153, -0.1502604, 0.07335069,
          0.02048611, -0.3756944, 0.2552083, 0.6992188, 0.3042535, -0.6736111, -0.6423611, 1.072917,
          0.1909722, 0, 0, 0, -0.1840278, -0.1640625, 0.2125289, 0.3454861, -0.2100694, -0.05729167,
          0, 0, 0, 0.9, 0.0375, -1.4625, 1.15, 0.2875, -1.2125, 0.9183333, 0.4525, -0.9625, -0.6,
          0.6625, -0.8375, -0.35, 0.9125, -0.5875, -0.2983333, 0.7941667, -0.3375, -0.1438079,
          0.2777778, -0.4811921, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        { /* aligned 1, sampling 2 */
          -0.34375, 0.4203125, 0.28125, -0.409375, 0.3701302, 0.387513, 0.5616276, -0.5102734,
          0.466901, 0.2515625, 0.21875, -0.1328125, 0.03263021, 0.1837109, -0.2830078, -0.2009766,
          0.129401, 0.1538672, 0.78125, 0.03125, -0.6744792, -0.4348958, 0.71875, -0.03125, -0.1875,
          0.5, 0.125, -0.2949219, -0.195638, 0.1416016, 0.3330078, -0.2871094, -0.1656901, 0.40625,
          0.0546875, 0.1015625, 0.40625, -1.09375, -0.575, 0.55625, -0.94375, -0.425, 0.75625,
          -0.74375, -0.225, 0.71875, -0.78125, -1.325, 0.86875, -0.63125, -1.175, 1.06875, -0.43125,
          -0.975, 0.5566406, -0.046875, -0.3847656, -0.21875, 0.2265625, -0.5234375, 0, 0, 0, 0, 0, 0,
          0, 0, 0, 0, 0, 0 },
        { /* aligned 1, adaptive */
          -0.34375, 0.4645833, 0.28125, -0.409375, 0.3930035, 0.4203472, 0.5752778, -0.5313021,
          0.5281424, 0.2604167, 0.21875, -0.1416667, 0.03720486, 0.1902778, -0.2941493, -0.2159549,
          0.1416493, 0.1565972, 0.5208333, 0.02083333, -0.4496528, -0.2899306, 0.4791667,
          -0.02083333, -0.125, 0.3333333, 0.08333333, -0.2641782, -0.1114005, 0.09056713, 0.2303241,
          -0.2514468, -0.09866898, 0.3472222, 0.06944444, 0.1458333, 0.40625, -1.09375, -0.575,
          0.55625, -0.94375, -0.425, 0.75625, -0.74375, -0.225, 0.71875, -0.78125, -1.325, 0.86875,
          -0.63125, -1.175, 1.06875, -0.43125, -0.975, 0.5147569, 0.01822917, -0.4045139, -0.2673611,
          0.2222222, -0.46875, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 } };
    float in[2 * 5 * 6 * 3], out[72];
    for (int b = 0; b < 2; b++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 6; x++)
                for (int ch = 0; ch < 3; ch++)
                    in[((b * 5 + y) * 6 + x) * 3 + ch] = ((7 * b + 5 * y + 3 * x + 11 * ch) % 17) / 4.0f - 2.0f;
    for (int cfg = 0; cfg < 4; cfg++) {
        const int aligned = cfg / 2, sr = cfg % 2 == 0 ? 2 : 0;
        roi_align_forward(out, in, &boxes[0][0], 4, 2, 5, 6, 3, 2, 3, 1.0f, sr, aligned);
        double e = t_max_rel_err(out, want[cfg], 72);
        t_check(e <= 2e-6, "roi_align vs torchvision values", "aligned %d sampling %d: max rel err %.2e",
                aligned, sr, e);
    }
}

int main(void) {
    test_layernorm2d(2, 5, 7, 11);
    test_layernorm2d(1, 32, 300, 12);          /* two pixel tiles, the second partial */

    test_resize_values();
    test_resize(2, 5, 7, 13, 11, 21);           /* upsample, non-square */
    test_resize(2, 13, 11, 5, 7, 22);           /* downsample */
    test_resize(1, 7, 7, 3, 3, 23);
    test_resize(3, 4, 6, 4, 6, 24);             /* equal sizes */
    test_resize(1, 16, 16, 64, 64, 25);         /* 4x, as 256 -> 1024 */
    test_resize(1, 24, 17, 16, 11, 26);         /* like 1024 -> 683 */
    test_resize(1, 2, 1024, 3, 683, 27);        /* long rows: the source index needs double precision */

    test_conv_transpose(2, 3, 4, 3, 5, 1, 31);
    test_conv_transpose(1, 8, 64, 20, 20, 1, 32);   /* several pixel tiles, row-split */
    test_conv_transpose(1, 2, 520, 3, 3, 1, 33);     /* output channels split in chunks */

    test_conv2d(2, 3, 6, 7, 4, 3, 3, 1, 1, 1, 1, 41);    /* 3x3 pad 1 */
    test_conv2d(2, 3, 9, 8, 5, 3, 3, 2, 2, 1, 1, 42);    /* stride 2 pad 1, odd size */
    test_conv2d(1, 3, 32, 48, 6, 16, 16, 16, 16, 0, 0, 43); /* patch embed */
    test_conv2d(2, 2, 5, 9, 3, 2, 3, 1, 2, 0, 1, 44);    /* non-square kernel and stride */
    test_conv2d(2, 6, 5, 4, 3, 1, 1, 1, 1, 0, 0, 45);    /* pointwise */
    test_conv2d(1, 4, 7, 7, 3, 5, 5, 3, 2, 2, 3, 46);    /* 5x5, padding wider than the stride */

    test_roi_torchvision();
    for (int al = 0; al < 2; al++) {
        test_roi_ramp(al, 2);
        test_roi_ramp(al, 0);
    }
    test_roi_align(2, 7, 9, 5, 2, 3, 1.0f, 2, 0, 51);
    test_roi_align(2, 7, 9, 5, 2, 3, 1.0f, 0, 1, 52);
    test_roi_align(1, 16, 16, 20, 4, 4, 0.25f, 0, 0, 53);
    test_roi_align(1, 6, 10, 33, 3, 2, 0.5f, 2, 1, 54);
    return t_exit_code();
}
