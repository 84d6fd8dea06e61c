/* tests/test_sam_image_encoder_grad.c — the trainable SAM image encoder
 * (model/sam_image_encoder.c with cfg.trainable = 1) and the backward kernels
 * of kernels/{cpu,cuda}/sam_encoder.* against exact host loops, PyTorch float64
 * autograd and finite differences.
 *
 * tests/ref/sam_image_encoder_grad_ref.py (`make fixtures`) writes
 * tests/fixtures/sam_image_encoder_grad.h5: the forward of
 * tests/ref/sam_image_encoder_ref.py differentiated by autograd in float64,
 * for the loss sum(out * R).
 *
 * Checks, one line each (max rel err = max|c - ref| / max|ref| per tensor):
 *   - window partition / unpartition backward: exact against host loops (the
 *     real cells), the padded cells' sum into dpad, accumulation (+=);
 *   - get_rel_pos backward on 7 cases (copies, q != k both ways, tables
 *     resized up and down) against autograd, and that it accumulates;
 *   - attention backward on four 3 x 5 grids: dqkv, dRh, dRw against autograd,
 *     again with one slot of scratch, and finite differences of the float32
 *     forward with and without relative positions;
 *   - config a (8x8 grid, window 3: padding; block 1 global; batch 2) and
 *     config b (rel_pos tables of other lengths, resized at run time): every
 *     parameter gradient against autograd, a second backward doubling them;
 *   - finite differences through the whole encoder on pos_embed, a windowed
 *     block's qkv bias (it receives the padded cells' gradient), the rel_pos
 *     tables of a windowed and a global block (config b: resized), neck and
 *     patch-embedding weights;
 *   - frozen (trainable 0): no trainable tensors, the activation arena exactly
 *     the frozen plan (nothing extra), backward refused; a trainable config on
 *     a frozen registry and a backward after a partial forward are refused.
 * Run from the repo root. */
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/sam_image_encoder.h"
#include "tests/h5fixture.h"
#include "tests/sam_encoder_fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/sam_image_encoder_grad.h5"
#define PFX "sam_image_encoder_grad "

/* float32 gradients against float64 through three blocks and the neck: observed
 * ~1e-6 of each tensor's scale; a missing path, a lost padding adjoint or a
 * misplaced interpolation weight moves a tensor by > 1e-2. */
#define TOL 1e-4

static h5fixture FX;

static float *dev_alloc(size_t n) {
    float *p = k_malloc((n ? n : 1) * sizeof(float));
    if (!p) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    k_zero(p, (n ? n : 1) * sizeof(float));
    return p;
}
static float *dev_from(const float *h, size_t n) {
    float *d = dev_alloc(n);
    k_upload(d, h, n * sizeof(float));
    return d;
}

/* ------------------------------------------------------------------ data movement */

static void check_movement(void) {
    /* [2, 7, 5, 6] in 3x3 windows: padded to 9 x 6, 3 x 2 windows per image */
    const int B = 2, H = 7, W = 5, C = 6, ws = 3, nh = 3, nw = 2;
    const size_t nx = (size_t)B * H * W * C, nwin = (size_t)B * nh * nw * ws * ws * C;
    float *gw = t_alloc(nwin), *gx = t_alloc(nx), *x0 = t_alloc(nx), *w0 = t_alloc(nwin), *p0 = t_alloc(C);
    t_fill_normal(gw, nwin, 1.0f, 21);
    t_fill_normal(gx, nx, 1.0f, 22);
    t_fill_normal(x0, nx, 1.0f, 23);
    t_fill_normal(w0, nwin, 1.0f, 24);
    t_fill_normal(p0, C, 1.0f, 25);
    float *wx = t_alloc(nx), *ww = t_alloc(nwin);   /* expected: start values + the adjoint */
    double *wp = calloc(C, sizeof(double));
    memcpy(wx, x0, nx * sizeof(float));
    memcpy(ww, w0, nwin * sizeof(float));
    for (int c = 0; c < C; c++) wp[c] = p0[c];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < nh; i++)
            for (int j = 0; j < nw; j++)
                for (int wy = 0; wy < ws; wy++)
                    for (int wxx = 0; wxx < ws; wxx++)
                        for (int c = 0; c < C; c++) {
                            const int y = i * ws + wy, xx = j * ws + wxx;
                            const size_t o = (((((size_t)b * nh + i) * nw + j) * ws + wy) * ws + wxx) * C + c;
                            if (y < H && xx < W) {
                                const size_t xi = (((size_t)b * H + y) * W + xx) * C + c;
                                wx[xi] = x0[xi] + gw[o];
                                ww[o] = w0[o] + gx[xi];
                            } else {
                                wp[c] += gw[o];
                            }
                        }
    float *dgw = dev_from(gw, nwin), *dgx = dev_from(gx, nx), *dx = dev_from(x0, nx), *dwn = dev_from(w0, nwin);
    float *dp = dev_from(p0, C);
    sam_window_partition_backward(dx, dp, dgw, B, H, W, C, ws);
    float *hx = fx_download(&FX, dx, nx), *hp = fx_download(&FX, dp, C);
    size_t bad = 0;
    for (size_t i = 0; i < nx; i++) bad += hx[i] != wx[i];
    double perr = 0, pmax = 0;
    for (int c = 0; c < C; c++) { perr = fmax(perr, fabs(hp[c] - wp[c])); pmax = fmax(pmax, fabs(wp[c])); }
    t_check(bad == 0 && perr <= 1e-6 * pmax, PFX "window_partition_backward",
            "%zu of %zu real cells differ from the host loop; dpad (sum of padded cells) err %.1e of %.2e", bad, nx,
            perr, pmax);
    sam_window_unpartition_backward(dwn, dgx, B, H, W, C, ws);
    float *hw = fx_download(&FX, dwn, nwin);
    bad = 0;
    for (size_t i = 0; i < nwin; i++) bad += hw[i] != ww[i];
    t_check(bad == 0, PFX "window_unpartition_backward", "%zu of %zu window cells differ (padding left as it was)",
            bad, nwin);
    k_free(dgw); k_free(dgx); k_free(dx); k_free(dwn); k_free(dp);
    free(gw); free(gx); free(x0); free(w0); free(p0); free(wx); free(ww); free(wp); free(hx); free(hp); free(hw);
}

/* ------------------------------------------------------------------ get_rel_pos */

static void check_rel_pos(void) {
    double worst = 0;
    for (int i = 0; i < 7; i++) {
        char a[64], ds[64], label[64];
        int qs, ks;
        snprintf(a, sizeof a, "relpos.%d.qs", i);
        if (!fx_attr(&FX, a, H5T_NATIVE_INT, &qs)) return;
        snprintf(a, sizeof a, "relpos.%d.ks", i);
        if (!fx_attr(&FX, a, H5T_NATIVE_INT, &ks)) return;
        snprintf(ds, sizeof ds, "relpos/%d_in", i);
        hid_t d = H5Dopen2(FX.file, ds, H5P_DEFAULT);
        hsize_t dims[2] = {0, 0};
        if (d >= 0) { hid_t sp = H5Dget_space(d); H5Sget_simple_extent_dims(sp, dims, NULL); H5Sclose(sp); H5Dclose(d); }
        const int L = (int)dims[0], D = (int)dims[1];
        if (L <= 0 || D <= 0 || L > 1000 || D > 1000) { fx_bad(&FX, ds, "missing or empty"); return; }
        const int gshape[3] = {qs, ks, D}, rshape[2] = {L, D};
        float *g = t_alloc((size_t)qs * ks * D);
        snprintf(ds, sizeof ds, "relpos/%d_dout", i);
        if (!fx_read(&FX, ds, H5T_NATIVE_FLOAT, g, 3, gshape)) { free(g); return; }
        float *dg = dev_from(g, (size_t)qs * ks * D), *dr = dev_alloc((size_t)L * D);
        sam_rel_pos_backward(dr, dg, qs, ks, L, D);
        snprintf(ds, sizeof ds, "relpos/%d_din", i);
        snprintf(label, sizeof label, "rel_pos_backward.q%d_k%d_L%d%s", qs, ks, L,
                 L == 2 * (qs > ks ? qs : ks) - 1 ? "" : "_resized");
        fx_check(&FX, label, ds, dr, 2, rshape, 1e-6);
        if (i == 4) {   /* a second call adds the same again */
            float *once = fx_download(&FX, dr, (size_t)L * D);
            sam_rel_pos_backward(dr, dg, qs, ks, L, D);
            float *twice = fx_download(&FX, dr, (size_t)L * D);
            for (size_t k = 0; k < (size_t)L * D; k++) once[k] *= 2.0f;
            worst = t_max_rel_err(twice, once, (size_t)L * D);
            t_check(worst <= 1e-6, PFX "rel_pos_backward.accumulates", "second call: 2x the first, max rel err %.1e",
                    worst);
            free(once); free(twice);
        }
        k_free(dg); k_free(dr); free(g);
    }
}

/* ------------------------------------------------------------------ attention kernel */

enum { AB = 4, AH = 3, AW = 5, AHEADS = 2, AHD = 6 };
#define AT (AH * AW)
#define AC (AHEADS * AHD)

typedef struct {
    float *qkv, *rh, *rw, *r;       /* host: inputs and the loss weights */
    float *dq, *drh, *drw, *dout, *scr;
    size_t ns;
    int rel;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    k_upload(c->dq, c->qkv, (size_t)AB * AT * 3 * AC * sizeof(float));
    k_upload(c->drh, c->rh, (size_t)AH * AH * AHD * sizeof(float));
    k_upload(c->drw, c->rw, (size_t)AW * AW * AHD * sizeof(float));
    sam_attention_forward(c->dout, c->scr, c->ns, c->dq, c->rel ? c->drh : NULL, c->rel ? c->drw : NULL,
                          1.0f / sqrtf((float)AHD), AB, AH, AW, AHEADS, AHD);
    float *o = fx_download(&FX, c->dout, (size_t)AB * AT * AC);
    const double l = t_dot(o, c->r, (size_t)AB * AT * AC);
    free(o);
    return l;
}

static void check_attention(void) {
    const size_t nq = (size_t)AB * AT * 3 * AC, nh = (size_t)AH * AH * AHD, nw = (size_t)AW * AW * AHD;
    const size_t no = (size_t)AB * AT * AC;
    const int qshape[3] = {AB, AT, 3 * AC}, hshape[3] = {AH, AH, AHD}, wshape[3] = {AW, AW, AHD},
              oshape[3] = {AB, AT, AC};
    att_ctx c = {.qkv = t_alloc(nq), .rh = t_alloc(nh), .rw = t_alloc(nw), .r = t_alloc(no), .rel = 1};
    if (!fx_read(&FX, "attn/qkv", H5T_NATIVE_FLOAT, c.qkv, 3, qshape) ||
        !fx_read(&FX, "attn/Rh", H5T_NATIVE_FLOAT, c.rh, 3, hshape) ||
        !fx_read(&FX, "attn/Rw", H5T_NATIVE_FLOAT, c.rw, 3, wshape) ||
        !fx_read(&FX, "attn/dout", H5T_NATIVE_FLOAT, c.r, 3, oshape))
        goto done;
    c.dq = dev_from(c.qkv, nq); c.drh = dev_from(c.rh, nh); c.drw = dev_from(c.rw, nw);
    c.dout = dev_alloc(no);
    c.ns = sam_attention_scratch_floats(AB, AH, AW, AHEADS);
    const size_t nb = sam_attention_backward_scratch_floats(AB, AH, AW, AHEADS, AHD);
    float *bscr = dev_alloc(nb), *g = dev_from(c.r, no);
    c.scr = dev_alloc(c.ns);
    float *gq = dev_alloc(nq), *gh = dev_alloc(nh), *gw = dev_alloc(nw);
    const float scale = 1.0f / sqrtf((float)AHD);
    sam_attention_backward(gq, gh, gw, bscr, nb, g, c.dq, c.drh, c.drw, scale, AB, AH, AW, AHEADS, AHD);
    fx_check(&FX, "attention_backward.dqkv", "attn/dqkv", gq, 3, qshape, TOL);
    fx_check(&FX, "attention_backward.dRh", "attn/dRh", gh, 3, hshape, TOL);
    fx_check(&FX, "attention_backward.dRw", "attn/dRw", gw, 3, wshape, TOL);
    /* one grid's worth of scratch: the same gradients */
    const size_t nb1 = sam_attention_backward_scratch_floats(1, AH, AW, AHEADS, AHD);
    k_zero(gq, nq * sizeof(float)); k_zero(gh, nh * sizeof(float)); k_zero(gw, nw * sizeof(float));
    sam_attention_backward(gq, gh, gw, bscr, nb1, g, c.dq, c.drh, c.drw, scale, AB, AH, AW, AHEADS, AHD);
    fx_check(&FX, "attention_backward.small_scratch.dqkv", "attn/dqkv", gq, 3, qshape, TOL);
    fx_check(&FX, "attention_backward.small_scratch.dRh", "attn/dRh", gh, 3, hshape, TOL);
    /* finite differences of the float32 forward (smooth: step 1e-2, curvature ~1e-4),
     * on one thread: hundreds of tiny forwards, each a few parallel regions */
    const int nthreads = k_num_threads();
    k_set_num_threads(1);
    float *hq = fx_download(&FX, gq, nq), *hh = fx_download(&FX, gh, nh);
    t_gradcheck(PFX "attention_backward.fd.dqkv", att_loss, &c, c.qkv, hq, nq, 1e-2f, 2e-3, 60);
    t_gradcheck(PFX "attention_backward.fd.dRh", att_loss, &c, c.rh, hh, nh, 1e-2f, 2e-3, 30);
    free(hq); free(hh);
    /* no relative positions: only dqkv */
    c.rel = 0;
    k_zero(gq, nq * sizeof(float));
    sam_attention_backward(gq, NULL, NULL, bscr, nb, g, c.dq, NULL, NULL, scale, AB, AH, AW, AHEADS, AHD);
    hq = fx_download(&FX, gq, nq);
    t_gradcheck(PFX "attention_backward.fd.no_rel_pos", att_loss, &c, c.qkv, hq, nq, 1e-2f, 2e-3, 60);
    free(hq);
    k_set_num_threads(nthreads);
    k_free(c.dq); k_free(c.drh); k_free(c.drw); k_free(c.dout); k_free(c.scr);
    k_free(bscr); k_free(g); k_free(gq); k_free(gh); k_free(gw);
done:
    free(c.qkv); free(c.rh); free(c.rw); free(c.r);
}

/* ------------------------------------------------------------------ the module */

static int read_cfg(const char *key, const char *prefix, sam_encoder_cfg *c, int *batch) {
    return sam_fx_read_cfg(&FX, key, prefix, c, batch);
}

static int load_params(const char *key, ar_params *ps) { return sam_fx_load_params(&FX, key, ps); }

typedef struct {
    sam_image_encoder *e;
    ar_params *ps;
    const ar_param *p;
    float *host;            /* host copy of the tensor being perturbed */
    const float *img, *R;   /* backend image, host R */
    int B;
    size_t nout;
} enc_ctx;

static double enc_loss(void *p) {
    enc_ctx *c = p;
    k_upload(c->ps->w + c->p->off, c->host, c->p->numel * sizeof(float));
    const float *out = sam_encoder_forward(c->e, c->img, c->B);
    float *h = fx_download(&FX, out, c->nout);
    const double l = t_dot(h, c->R, c->nout);
    free(h);
    return l;
}

/* Central differences of sum(out * R) on up to pts entries of tensor <name>. */
static void fd_check(enc_ctx *c, const char *key, const char *name, float eps, size_t pts) {
    char label[200];
    c->p = params_find(c->ps, name);
    if (!c->p) { t_fail(PFX "fd", "%s not declared", name); return; }
    c->host = fx_download(&FX, c->ps->w + c->p->off, c->p->numel);
    float *g = fx_download(&FX, params_g(c->ps, name), c->p->numel);
    snprintf(label, sizeof label, PFX "%s.fd.%s", key, name);
    /* smooth loss; step eps balances curvature against float32 round-off of
     * the loss (~1e-6 relative): a wrong or missing path is off by O(1) */
    t_gradcheck(label, enc_loss, c, c->host, g, c->p->numel, eps, 5e-3, pts);
    k_upload(c->ps->w + c->p->off, c->host, c->p->numel * sizeof(float));
    free(c->host); free(g);
}

static void check_config(const char *key, const char *prefix, const char *const *fd_names) {
    sam_encoder_cfg c;
    int B;
    if (!read_cfg(key, prefix, &c, &B)) return;
    c.trainable = 1;
    char label[200], ds[200];
    ar_params ps;
    params_init_empty(&ps);
    if (sam_encoder_declare(&c, &ps) || params_alloc(&ps)) {
        snprintf(label, sizeof label, PFX "%s.declare", key);
        t_fail(label, "%s", ar_error());
        params_free(&ps);
        return;
    }
    snprintf(label, sizeof label, PFX "%s.trainable", key);
    t_check(params_numel(&ps, 1) == params_numel(&ps, 0) && ps.n == 3 + 14 * c.depth + 6, label,
            "%d tensors, %zu of %zu floats trainable", ps.n, params_numel(&ps, 1), params_numel(&ps, 0));
    const int G = c.img_size / c.patch, S = c.img_size;
    const size_t nimg = (size_t)3 * S * S, nout = (size_t)B * c.out_chans * G * G;
    float *img = NULL, *dR = NULL, *hR = NULL;
    sam_image_encoder *e = NULL;
    if (!load_params(key, &ps)) goto done;
    float *himg = fx_alloc(&FX, (size_t)B * nimg * sizeof(float));
    hR = fx_alloc(&FX, nout * sizeof(float));
    const int ishape[4] = {B, 3, S, S}, oshape[4] = {B, c.out_chans, G, G};
    snprintf(ds, sizeof ds, "%s/image", key);
    int ok = fx_read(&FX, ds, H5T_NATIVE_FLOAT, himg, 4, ishape);
    snprintf(ds, sizeof ds, "%s/R", key);
    ok = ok && fx_read(&FX, ds, H5T_NATIVE_FLOAT, hR, 4, oshape);
    if (ok) { img = dev_from(himg, (size_t)B * nimg); dR = dev_from(hR, nout); }
    free(himg);
    if (!ok) goto done;
    e = sam_encoder_create(&c, &ps, B + 1);    /* more room than used */
    if (!e) { snprintf(label, sizeof label, PFX "%s.create", key); t_fail(label, "%s", ar_error()); goto done; }
    const float *out = sam_encoder_forward(e, img, B);
    snprintf(label, sizeof label, "%s.out", key);
    snprintf(ds, sizeof ds, "%s/out", key);
    fx_check(&FX, label, ds, out, 4, oshape, TOL);
    params_zero_grad(&ps);
    int rc = sam_encoder_backward(e, dR);
    k_sync();
    snprintf(label, sizeof label, PFX "%s.backward", key);
    t_check(rc == 0 && !k_error(), label, "%s", rc ? ar_error() : k_error() ? k_error() : "ran");
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        snprintf(ds, sizeof ds, "%s_grads/%s", key, p->name);
        double *ref = fx_alloc(&FX, p->numel * sizeof(double));
        if (fx_read(&FX, ds, H5T_NATIVE_DOUBLE, ref, p->ndim, p->shape)) {
            float *h = fx_download(&FX, params_g(&ps, p->name), p->numel);
            snprintf(label, sizeof label, "%s.grad.%s", key, p->name);
            fx_report(&FX, label, h, ref, p->numel, TOL);
            const double err = t_max_rel_err_d(h, ref, p->numel);
            if (err > worst) { worst = err; worst_name = p->name; }
            free(h);
        }
        free(ref);
    }
    snprintf(label, sizeof label, PFX "%s.grad.all", key);
    t_check(worst <= TOL, label, "%d tensors, worst max rel err %.1e (%s)", ps.n, worst, worst_name);
    /* a second backward of the same forward adds the same gradients again */
    {
        float *once = fx_download(&FX, ps.g, ps.ng);
        sam_encoder_backward(e, dR);
        float *twice = fx_download(&FX, ps.g, ps.ng);
        for (size_t k = 0; k < ps.ng; k++) once[k] *= 2.0f;
        const double err = t_max_rel_err(twice, once, ps.ng);
        snprintf(label, sizeof label, PFX "%s.backward_accumulates", key);
        t_check(err <= 1e-6, label, "second backward: 2x the first, max rel err %.1e over %zu floats", err, ps.ng);
        free(once); free(twice);
        params_zero_grad(&ps);
        sam_encoder_backward(e, dR);   /* back to one backward's gradients for the fd checks */
    }
    /* checkpoint_blocks: the same output and gradients, bit for bit, from less memory */
    {
        sam_encoder_cfg ck = c;
        ck.checkpoint_blocks = 1;
        float *g1 = fx_download(&FX, ps.g, ps.ng), *o1 = fx_download(&FX, out, nout);
        sam_image_encoder *e2 = sam_encoder_create(&ck, &ps, B + 1);
        const float *out2 = e2 ? sam_encoder_forward(e2, img, B) : NULL;
        float *o2 = out2 ? fx_download(&FX, out2, nout) : NULL;
        params_zero_grad(&ps);
        const int rc2 = out2 ? sam_encoder_backward(e2, dR) : -1;
        float *g2 = fx_download(&FX, ps.g, ps.ng);
        const size_t b1 = sam_encoder_activation_bytes(e), b2 = e2 ? sam_encoder_activation_bytes(e2) : 0;
        const int same_o = o2 && !memcmp(o1, o2, nout * sizeof(float)), same_g = !memcmp(g1, g2, ps.ng * sizeof(float));
        snprintf(label, sizeof label, PFX "%s.checkpoint_blocks", key);
        t_check(e2 && rc2 == 0 && same_o && same_g && b2 < b1, label,
                "output %s, %zu gradients %s; activations %.2f MiB -> %.2f MiB for %d images%s%s",
                same_o ? "identical" : "DIFFER", ps.ng, same_g ? "identical" : "DIFFER", b1 / 1048576.0, b2 / 1048576.0,
                B + 1, e2 && rc2 == 0 ? "" : ": ", e2 && rc2 == 0 ? "" : ar_error());
        /* a second backward with no forward between: the shared buffers then
         * hold block 0, and the last block must be refilled too */
        const int rc3 = e2 ? sam_encoder_backward(e2, dR) : -1;
        float *g3 = fx_download(&FX, ps.g, ps.ng);
        for (size_t k = 0; k < ps.ng; k++) g1[k] *= 2.0f;
        const double err3 = t_max_rel_err(g3, g1, ps.ng);
        snprintf(label, sizeof label, PFX "%s.checkpoint_blocks_second_backward", key);
        t_check(rc3 == 0 && err3 <= 1e-6, label, "second backward: 2x the first, max rel err %.1e over %zu floats", err3,
                ps.ng);
        free(g1); free(g2); free(g3); free(o1); free(o2);
        sam_encoder_free(e2);
        params_zero_grad(&ps);
        sam_encoder_backward(e, dR);
    }
    enc_ctx fc = {.e = e, .ps = &ps, .img = img, .R = hR, .B = B, .nout = nout};
    const int nthreads = k_num_threads();   /* ~200 tiny forwards: one thread is fastest */
    k_set_num_threads(1);
    for (const char *const *n = fd_names; n && *n; n++) fd_check(&fc, key, *n, 1e-2f, 12);
    k_set_num_threads(nthreads);
    /* a partial forward leaves nothing to differentiate */
    sam_encoder_tokens(e, img, B, 1);
    snprintf(label, sizeof label, PFX "%s.backward_after_tokens", key);
    t_check(sam_encoder_backward(e, dR) == -1 && strstr(ar_error(), "full forward"), label, "%s", ar_error());
    snprintf(label, sizeof label, PFX "%s.activation_bytes", key);
    t_ok(label, "%.2f MiB for %d images (trainable)", sam_encoder_activation_bytes(e) / 1048576.0, B + 1);
done:
    sam_encoder_free(e);
    if (img) k_free(img);
    if (dR) k_free(dR);
    free(hR);
    params_free(&ps);
}

/* ------------------------------------------------------------------ frozen stays as it was */

static size_t r64(size_t nfloats) { return (nfloats * sizeof(float) + 63) / 64 * 64; }

/* The frozen plan's bytes, allocation by allocation (64-byte rounding):
 * a frozen encoder holds nothing of the trainable one's. */
static size_t frozen_bytes(const sam_encoder_cfg *c, int maxB) {
    const size_t B = (size_t)maxB, G = (size_t)c->img_size / c->patch, N = G * G, C = c->dim, M = c->mlp_dim,
                 OC = c->out_chans, ws = c->window, hd = (size_t)c->dim / c->heads, nside = (G + ws - 1) / ws;
    const size_t nW = nside * nside, Np = nW * ws * ws, K = (size_t)c->in_chans * c->patch * c->patch;
    int any_win = 0, any_glob = 0;
    for (int l = 0; l < c->depth; l++) { if (c->global_attn[l]) any_glob = 1; else any_win = 1; }
    const size_t side = any_glob && G > ws ? G : ws;
    size_t ns = 0;
    if (any_win) ns = sam_attention_scratch_floats((int)(B * nW), (int)ws, (int)ws, c->heads);
    if (any_glob) { const size_t g = sam_attention_scratch_floats((int)B, (int)G, (int)G, c->heads); ns = g > ns ? g : ns; }
    size_t t = 2 * r64(B * N * C) + 2 * r64(B * N) + r64(B * N * 3 * C) + (any_win ? r64(B * Np * 3 * C) : 0) +
               r64(B * (any_win && Np > N ? Np : N) * C) + r64(B * N * C) + r64(B * N * M) +
               r64(B * N * (M > K ? M : K)) + 2 * r64(side * side * hd) + r64(ns) + 4 * r64(B * OC * N) +
               2 * r64(B * N) + r64(conv2d_scratch_floats((int)OC, (int)G, (int)G, 3, 3, 1, 1, 1, 1));
    return t;
}

static void check_frozen(void) {
    sam_encoder_cfg c;
    int B;
    if (!read_cfg("a", "image_encoder.", &c, &B)) return;
    ar_params ps;
    params_init_empty(&ps);
    if (sam_encoder_declare(&c, &ps) || params_alloc(&ps)) { t_fail(PFX "frozen", "%s", ar_error()); return; }
    sam_image_encoder *e = sam_encoder_create(&c, &ps, B);
    if (!e) { t_fail(PFX "frozen", "%s", ar_error()); params_free(&ps); return; }
    const size_t have = sam_encoder_activation_bytes(e), want = frozen_bytes(&c, B);
    t_check(params_numel(&ps, 1) == 0 && have == want, PFX "frozen.nothing_extra",
            "trainable 0: %zu trainable floats, arena %zu bytes (frozen plan %zu)", params_numel(&ps, 1), have, want);
    float *img = dev_alloc((size_t)B * 3 * c.img_size * c.img_size);
    const float *out = sam_encoder_forward(e, img, B);
    t_check(out && sam_encoder_backward(e, out) == -1 && strstr(ar_error(), "frozen"), PFX "frozen.no_backward",
            "%s", ar_error());
    k_free(img);
    sam_encoder_free(e);
    /* a trainable config on this frozen registry is refused by create */
    c.trainable = 1;
    e = sam_encoder_create(&c, &ps, B);
    t_check(!e && strstr(ar_error(), "frozen"), PFX "trainable_on_frozen_registry", "%s", e ? "created" : ar_error());
    sam_encoder_free(e);
    /* and the trainable encoder's arena is larger by what backward keeps */
    ar_params pt;
    params_init_empty(&pt);
    if (!sam_encoder_declare(&c, &pt) && !params_alloc(&pt) && (e = sam_encoder_create(&c, &pt, B))) {
        t_ok(PFX "trainable.activation_bytes", "%.2f MiB trainable vs %.2f MiB frozen for %d images",
             sam_encoder_activation_bytes(e) / 1048576.0, have / 1048576.0, B);
        sam_encoder_free(e);
    } else {
        t_fail(PFX "trainable.activation_bytes", "%s", ar_error());
    }
    params_free(&pt);
    params_free(&ps);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# trainable SAM image encoder against host loops, PyTorch float64 autograd and finite differences, "
           "backend %s\n", k_backend_name());
    check_movement();
    check_rel_pos();
    check_attention();
    static const char *const fd_a[] = {"image_encoder.pos_embed", "image_encoder.blocks.0.attn.qkv.bias",
                                       "image_encoder.blocks.1.attn.rel_pos_h", "image_encoder.blocks.2.attn.rel_pos_w",
                                       "image_encoder.neck.2.weight", "image_encoder.patch_embed.proj.weight", NULL};
    static const char *const fd_b[] = {"model.visual_model.image_encoder.blocks.0.attn.rel_pos_h",
                                       "model.visual_model.image_encoder.blocks.1.attn.rel_pos_w", NULL};
    check_config("a", "image_encoder.", fd_a);
    check_config("b", "model.visual_model.image_encoder.", fd_b);
    check_frozen();
    fx_close(&FX);
    return t_exit_code();
}
