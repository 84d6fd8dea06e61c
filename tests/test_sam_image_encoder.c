/* tests/test_sam_image_encoder.c — SAM's image encoder (model/sam_image_encoder.c)
 * and its kernels (kernels/{cpu,cuda}/sam_encoder.*) against exact host
 * references and PyTorch float64.
 *
 * tests/ref/sam_image_encoder_ref.py (`make fixtures`) writes
 * tests/fixtures/sam_image_encoder.h5 from segment-anything's semantics,
 * written independently in plain PyTorch float64 (and checked once against the
 * official package by tests/ref/check_sam_encoder_official.py: 1e-15).
 *
 * Checks, one line each (max rel err = max|c - ref| / max|ref|):
 *   - patchify, window partition (zero and vector padding) and unpartition:
 *     exact against host loops, including a partition/unpartition round trip;
 *   - get_rel_pos (sam_rel_pos_forward) on 7 cases: copies, q != k in both
 *     directions (coordinate scaling), tables resized up and down;
 *   - the attention kernel on four 3 x 5 grids with and without relative
 *     positions, with full scratch and with scratch for a single slot;
 *   - its bf16 variant against float64 loops with and without its roundings
 *     (small grids, 60 windows, two 46 x 46 grids; on the CPU also emulated);
 *   - config a (image_encoder., 8x8 grid, window 3 so padding happens, block 1
 *     global, batch 2): the tokens after the embedding and after every block,
 *     and the neck output; the batch-1 forward of image 1 equals batch row 1;
 *   - config b (model.visual_model.image_encoder., rel_pos tables of other
 *     lengths, resized at run time; 6x6 grid with window 4, three heads):
 *     tokens per block and output;
 *   - errors: batch outside 1..max_batch, a registry whose rel_pos shape
 *     differs from the config's.
 * Run from the repo root. */
#include "core/error.h"
#include "kernels/half_bits.h"
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

#define FIXTURE "tests/fixtures/sam_image_encoder.h5"
#define PFX "sam_image_encoder "

/* float32 against float64 through at most three blocks and the neck: observed
 * ~1e-6 of each tensor's scale. 1e-4 leaves room for another backend's
 * summation order, not for a misplaced window, a missing relative term or a
 * swapped axis (those move outputs by > 1e-1). */
#define TOL 1e-4

static h5fixture FX;

static float *dev_alloc(size_t n) {
    float *p = k_malloc((n ? n : 1) * sizeof(float));
    if (!p) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    return p;
}
static float *dev_from(const float *h, size_t n) {
    float *d = dev_alloc(n);
    k_upload(d, h, n * sizeof(float));
    return d;
}
/* Exact comparison of a backend tensor with a host array. */
static void check_exact(const char *name, const float *dev, const float *want, size_t n) {
    float *h = fx_download(&FX, dev, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += h[i] != want[i];
    t_check(bad == 0, name, "%zu of %zu values differ from the host loop", bad, n);
    free(h);
}

/* ------------------------------------------------------------------ data movement */

static void check_movement(void) {
    const int B = 2, Cin = 3, p = 4, H = 12, W = 8;
    const size_t nin = (size_t)B * Cin * H * W;
    float *in = t_alloc(nin);
    t_fill_normal(in, nin, 1.0f, 11);
    const int gh = H / p, gw = W / p, K = Cin * p * p;
    float *want = t_alloc((size_t)B * gh * gw * K);
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++)
                for (int ci = 0; ci < Cin; ci++)
                    for (int ky = 0; ky < p; ky++)
                        for (int kx = 0; kx < p; kx++)
                            want[(((size_t)b * gh + gy) * gw + gx) * K + (ci * p + ky) * p + kx] =
                                in[(((size_t)b * Cin + ci) * H + gy * p + ky) * W + gx * p + kx];
    float *din = dev_from(in, nin), *dout = dev_alloc((size_t)B * gh * gw * K);
    sam_patchify_forward(dout, din, B, Cin, H, W, p);
    check_exact(PFX "patchify", dout, want, (size_t)B * gh * gw * K);
    k_free(din); k_free(dout); free(in); free(want);

    /* partition of [2, 7, 5, 6] into 3x3 windows: pads to 9 x 6 (3 x 2 windows) */
    const int Hh = 7, Ww = 5, C = 6, ws = 3, nh = 3, nw = 2;
    const size_t nx = (size_t)B * Hh * Ww * C, nwin = (size_t)B * nh * nw * ws * ws * C;
    float *x = t_alloc(nx), *pad = t_alloc(C), *wz = t_alloc(nwin), *wp = t_alloc(nwin);
    t_fill_normal(x, nx, 1.0f, 12);
    t_fill_normal(pad, C, 1.0f, 13);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < nh; i++)
            for (int j = 0; j < nw; j++)
                for (int wy = 0; wy < ws; wy++)
                    for (int wx = 0; wx < ws; wx++)
                        for (int c = 0; c < C; c++) {
                            const int y = i * ws + wy, xx = j * ws + wx;
                            const size_t o = (((((size_t)b * nh + i) * nw + j) * ws + wy) * ws + wx) * C + c;
                            const int in_img = y < Hh && xx < Ww;
                            const float v = in_img ? x[(((size_t)b * Hh + y) * Ww + xx) * C + c] : 0.0f;
                            wz[o] = v;
                            wp[o] = in_img ? v : pad[c];
                        }
    float *dx = dev_from(x, nx), *dpad = dev_from(pad, C), *dw = dev_alloc(nwin), *dback = dev_alloc(nx);
    sam_window_partition_forward(dw, dx, NULL, B, Hh, Ww, C, ws);
    check_exact(PFX "window_partition.zero_pad", dw, wz, nwin);
    sam_window_unpartition_forward(dback, dw, B, Hh, Ww, C, ws);
    check_exact(PFX "window_unpartition.round_trip", dback, x, nx);
    sam_window_partition_forward(dw, dx, dpad, B, Hh, Ww, C, ws);
    check_exact(PFX "window_partition.vector_pad", dw, wp, nwin);
    /* unpartition reads only real cells: scribble on the padding, get x back */
    for (size_t i = 0; i < nwin; i++) if (wz[i] == 0.0f) wz[i] = 1e30f;
    k_upload(dw, wz, nwin * sizeof(float));
    sam_window_unpartition_forward(dback, dw, B, Hh, Ww, C, ws);
    check_exact(PFX "window_unpartition.crop", dback, x, nx);
    k_free(dx); k_free(dpad); k_free(dw); k_free(dback);
    free(x); free(pad); free(wz); free(wp);
}

/* ------------------------------------------------------------------ get_rel_pos */

static void check_rel_pos(void) {
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
        if (d >= 0) { hid_t s = H5Dget_space(d); H5Sget_simple_extent_dims(s, dims, NULL); H5Sclose(s); H5Dclose(d); }
        const int L = (int)dims[0], D = (int)dims[1];
        if (L <= 0 || D <= 0) { fx_bad(&FX, ds, "missing or empty"); return; }
        const int ishape[2] = {L, D}, oshape[3] = {qs, ks, D};
        float *rel = t_alloc((size_t)L * D);
        if (!fx_read(&FX, ds, H5T_NATIVE_FLOAT, rel, 2, ishape)) { free(rel); return; }
        float *drel = dev_from(rel, (size_t)L * D), *dout = dev_alloc((size_t)qs * ks * D);
        sam_rel_pos_forward(dout, drel, qs, ks, L, D);
        snprintf(ds, sizeof ds, "relpos/%d_out", i);
        snprintf(label, sizeof label, "rel_pos.q%d_k%d_L%d%s", qs, ks, L,
                 L == 2 * (qs > ks ? qs : ks) - 1 ? "" : "_resized");
        fx_check(&FX, label, ds, dout, 3, oshape, 1e-6);
        k_free(drel); k_free(dout); free(rel);
    }
}

/* ------------------------------------------------------------------ attention kernel */

static void check_attention(void) {
    const int Bw = 4, h = 3, w = 5, heads = 2, hd = 6, T = h * w, C = heads * hd;
    const int qshape[3] = {Bw, T, 3 * C}, rhs[3] = {h, h, hd}, rws[3] = {w, w, hd}, oshape[3] = {Bw, T, C};
    float *qkv = t_alloc((size_t)Bw * T * 3 * C), *rh = t_alloc((size_t)h * h * hd), *rw = t_alloc((size_t)w * w * hd);
    if (!fx_read(&FX, "attn/qkv", H5T_NATIVE_FLOAT, qkv, 3, qshape) ||
        !fx_read(&FX, "attn/Rh", H5T_NATIVE_FLOAT, rh, 3, rhs) ||
        !fx_read(&FX, "attn/Rw", H5T_NATIVE_FLOAT, rw, 3, rws))
        goto done;
    float *dq = dev_from(qkv, (size_t)Bw * T * 3 * C), *drh = dev_from(rh, (size_t)h * h * hd);
    float *drw = dev_from(rw, (size_t)w * w * hd), *dout = dev_alloc((size_t)Bw * T * C);
    const size_t ns = sam_attention_scratch_floats(Bw, h, w, heads);
    float *scr = dev_alloc(ns);
    const float scale = 1.0f / sqrtf((float)hd);
    sam_attention_forward(dout, scr, ns, dq, drh, drw, scale, Bw, h, w, heads, hd);
    fx_check(&FX, "attention.rel_pos", "attn/out", dout, 3, oshape, TOL);
    sam_attention_forward(dout, scr, ns, dq, NULL, NULL, scale, Bw, h, w, heads, hd);
    fx_check(&FX, "attention.no_rel_pos", "attn/out_norel", dout, 3, oshape, TOL);
    /* one grid's worth of scratch (the least either backend accepts): same result */
    const size_t ns1 = sam_attention_scratch_floats(1, h, w, heads);
    k_zero(dout, (size_t)Bw * T * C * sizeof(float));
    sam_attention_forward(dout, scr, ns1, dq, drh, drw, scale, Bw, h, w, heads, hd);
    fx_check(&FX, "attention.small_scratch", "attn/out", dout, 3, oshape, TOL);
    k_free(dq); k_free(drh); k_free(drw); k_free(dout); k_free(scr);
done:
    free(qkv); free(rh); free(rw);
}

/* x rounded to bf16 and back (the rounding both backends share). */
static float bf16r(float x) { return hb_from_bf16(hb_to_bf16(x)); }

/* sam_attention_bf16_forward against a float64 loop that rounds what it
 * rounds (q, k, v, and the probabilities once in float) and against the same
 * loop unrounded: the kernel must sit far closer to the first (its error
 * under a quarter of the rounding's own effect), so a path that skips a
 * rounding, or rounds the wrong operand, fails. Cases: the fixture's small
 * grids with and without relative terms, 60 windows of 14 x 14 (more than
 * one chunk of grids on the CPU) and two 46 x 46 grids of two heads (more
 * than one chunk of query rows of a batched product). */
static void attn_bf16_case(const char *name, int B, int h, int w, int heads, int hd, int rel, uint64_t seed) {
    const int T = h * w, C = heads * hd;
    const size_t nq = (size_t)B * T * 3 * C, nr = (size_t)h * h * hd + (size_t)w * w * hd, no = (size_t)B * T * C;
    float *qkv = t_alloc(nq), *R = t_alloc(nr);
    double *ref = calloc(2 * no + 2 * (size_t)T, sizeof(double)), *raw = ref + no, *L = raw + no;
    if (!ref) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    t_fill_normal(qkv, nq, 1.0f, seed);
    t_fill_normal(R, nr, 0.3f, seed + 1);
    float *qr = t_alloc(nq);
    for (size_t i = 0; i < nq; i++) qr[i] = bf16r(qkv[i]);
    const float *Rh = R, *Rw = R + (size_t)h * h * hd;
    const double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < heads; hh++)
            for (int t = 0; t < T; t++) {
                const size_t qo = ((size_t)b * T + t) * 3 * C + (size_t)hh * hd;
                const float *q = qkv + qo, *q16 = qr + qo;
                double *Lr = L, *Lu = L + T, mr = -INFINITY, mu = -INFINITY, sr = 0, su = 0;
                for (int u = 0; u < T; u++) {
                    const size_t ko = ((size_t)b * T + u) * 3 * C + C + (size_t)hh * hd;
                    const float *k = qkv + ko, *k16 = qr + ko;
                    double dr = 0, du = 0, rl = 0;
                    for (int c = 0; c < hd; c++) {
                        dr += (double)q16[c] * k16[c];
                        du += (double)q[c] * k[c];
                        if (rel) rl += (double)q[c] * (Rh[((size_t)(t / w) * h + u / w) * hd + c] +
                                                       (double)Rw[((size_t)(t % w) * w + u % w) * hd + c]);
                    }
                    Lr[u] = scale * dr + rl; Lu[u] = scale * du + rl;
                    if (Lr[u] > mr) mr = Lr[u];
                    if (Lu[u] > mu) mu = Lu[u];
                }
                for (int u = 0; u < T; u++) { Lr[u] = exp(Lr[u] - mr); sr += Lr[u]; Lu[u] = exp(Lu[u] - mu); su += Lu[u]; }
                double *o = ref + ((size_t)b * T + t) * C + (size_t)hh * hd, *ou = raw + ((size_t)b * T + t) * C + (size_t)hh * hd;
                for (int c = 0; c < hd; c++) o[c] = ou[c] = 0;
                for (int u = 0; u < T; u++) {
                    const size_t vo = ((size_t)b * T + u) * 3 * C + 2 * C + (size_t)hh * hd;
                    const float *v = qkv + vo, *v16 = qr + vo;
                    const double pr = bf16r((float)(Lr[u] / sr)), pu = Lu[u] / su;
                    for (int c = 0; c < hd; c++) { o[c] += pr * v16[c]; ou[c] += pu * v[c]; }
                }
            }
    float *dq = dev_from(qkv, nq), *dR = dev_from(R, nr), *dout = dev_alloc(no);
    const size_t ns = sam_attention_scratch_floats(B, h, w, heads);
    float *scr = dev_alloc(ns);
    sam_attention_bf16_forward(dout, scr, ns, dq, rel ? dR : NULL, rel ? dR + (size_t)h * h * hd : NULL, (float)scale,
                               B, h, w, heads, hd);
    float *got = fx_download(&FX, dout, no);
    float *rawf = t_alloc(no);
    for (size_t i = 0; i < no; i++) rawf[i] = (float)raw[i];
    const double e = t_max_rel_err_d(got, ref, no), er = t_max_rel_err_d(rawf, ref, no);
    char nm[128];
    snprintf(nm, sizeof nm, PFX "attention_bf16.%s", name);
    t_check(e <= 2e-3 && e < er / 4, nm, "max rel err %.1e against the rounded float64 loop (limit 2e-3 and a "
            "quarter of the rounding's effect, %.1e)", e, er);
    k_free(dq); k_free(dR); k_free(dout); k_free(scr);
    free(got); free(rawf); free(qkv); free(qr); free(R); free(ref);
}

static void check_attention_bf16(void) {
    attn_bf16_case("rel_pos", 4, 3, 5, 2, 6, 1, 501);
    attn_bf16_case("no_rel_pos", 4, 3, 5, 2, 6, 0, 502);
    attn_bf16_case("windows_60x14x14", 60, 14, 14, 2, 8, 1, 503);
    attn_bf16_case("global_2x46x46x2heads", 2, 46, 46, 2, 8, 1, 504);   /* row chunks of a batched product */
    attn_bf16_case("grid_2x3_head_10", 3, 2, 3, 2, 10, 1, 508);   /* T < hd: the GPU's P V per head */
    if (!strcmp(k_backend_name(), "cpu")) {   /* the emulated products (no oneDNN kernel) */
        setenv("ANYREF_CPU_BF16", "emulate", 1);
        attn_bf16_case("emulated.rel_pos", 4, 3, 5, 2, 6, 1, 505);
        attn_bf16_case("emulated.windows_60x14x14", 60, 14, 14, 2, 8, 1, 506);
        attn_bf16_case("emulated.global_46x46", 1, 46, 46, 1, 8, 1, 507);   /* one product at a time */
        unsetenv("ANYREF_CPU_BF16");
    }
}

/* ------------------------------------------------------------------ the module */

/* Config <key> from the fixture's attributes. */
static int read_cfg(const char *key, const char *prefix, sam_encoder_cfg *c, int *batch) {
    return sam_fx_read_cfg(&FX, key, prefix, c, batch);
}

/* Every registry tensor from <key>_params/<name>. */
static int load_params(const char *key, ar_params *ps) { return sam_fx_load_params(&FX, key, ps); }

static void check_config(const char *key, const char *prefix) {
    sam_encoder_cfg c;
    int B;
    if (!read_cfg(key, prefix, &c, &B)) return;
    char label[96];
    ar_params ps;
    params_init_empty(&ps);
    if (sam_encoder_declare(&c, &ps) || params_alloc(&ps)) {
        snprintf(label, sizeof label, PFX "%s.declare", key);
        t_fail(label, "%s", ar_error());
        params_free(&ps);
        return;
    }
    snprintf(label, sizeof label, PFX "%s.frozen", key);
    t_check(params_numel(&ps, 1) == 0 && ps.n == 3 + 14 * c.depth + 6, label, "%d tensors, %zu trainable floats",
            ps.n, params_numel(&ps, 1));
    const int G = c.img_size / c.patch, S = c.img_size;
    const size_t nimg = (size_t)3 * S * S;
    float *img = NULL;
    sam_image_encoder *e = NULL;
    if (!load_params(key, &ps)) goto done;
    float *himg = fx_alloc(&FX, (size_t)B * nimg * sizeof(float));
    const int ishape[4] = {B, 3, S, S};
    char ds[64];
    snprintf(ds, sizeof ds, "%s/image", key);
    if (!fx_read(&FX, ds, H5T_NATIVE_FLOAT, himg, 4, ishape)) { free(himg); goto done; }
    img = dev_from(himg, (size_t)B * nimg);
    free(himg);
    e = sam_encoder_create(&c, &ps, B + 1);       /* more room than used: the forward must honour B */
    if (!e) { snprintf(label, sizeof label, PFX "%s.create", key); t_fail(label, "%s", ar_error()); goto done; }
    const int tshape[4] = {B, G, G, c.dim}, oshape[4] = {B, c.out_chans, G, G};
    for (int l = 0; l <= c.depth; l++) {
        float *t = sam_encoder_tokens(e, img, B, l);
        snprintf(label, sizeof label, "%s.tokens_%d%s", key, l,
                 l == 0 ? "_embed" : c.global_attn[l - 1] ? "_global" : "_window");
        snprintf(ds, sizeof ds, "%s/tokens_%d", key, l);
        fx_check(&FX, label, ds, t, 4, tshape, TOL);
    }
    float *out = sam_encoder_forward(e, img, B);
    snprintf(label, sizeof label, "%s.out", key);
    snprintf(ds, sizeof ds, "%s/out", key);
    fx_check(&FX, label, ds, out, 4, oshape, TOL);
    if (B > 1) {   /* image B-1 alone gives row B-1 of the batch */
        const size_t no = (size_t)c.out_chans * G * G;
        float *all = fx_download(&FX, out, (size_t)B * no);
        float *one = sam_encoder_forward(e, img + (size_t)(B - 1) * nimg, 1);
        float *h1 = fx_download(&FX, one, no);
        double err = t_max_rel_err(h1, all + (size_t)(B - 1) * no, no);
        snprintf(label, sizeof label, PFX "%s.batch_independent", key);
        t_check(err <= 1e-5, label, "max rel err %.2e between batch-1 and batch-%d forwards", err, B);
        free(all); free(h1);
    }
    snprintf(label, sizeof label, PFX "%s.bad_batch", key);
    t_check(!sam_encoder_forward(e, img, B + 2) && !sam_encoder_forward(e, img, 0), label, "%s", ar_error());
    snprintf(label, sizeof label, PFX "%s.activation_bytes", key);
    t_ok(label, "%.2f MiB for %d images", sam_encoder_activation_bytes(e) / 1048576.0, B + 1);
done:
    sam_encoder_free(e);
    if (img) k_free(img);
    params_free(&ps);
}

/* A registry declared for other rel_pos lengths is refused by create. */
static void check_shape_mismatch(void) {
    sam_encoder_cfg c;
    int B;
    if (!read_cfg("b", "x.", &c, &B)) return;
    ar_params ps;
    params_init_empty(&ps);
    if (sam_encoder_declare(&c, &ps) || params_alloc(&ps)) { t_fail(PFX "shape_mismatch", "%s", ar_error()); return; }
    c.rel_pos_len_global = 0;
    sam_image_encoder *e = sam_encoder_create(&c, &ps, 1);
    t_check(!e && strstr(ar_error(), "rel_pos_h"), PFX "shape_mismatch", "%s", e ? "created" : ar_error());
    sam_encoder_free(e);
    params_free(&ps);
}

static void check_presets(void) {
    const sam_encoder_cfg b = sam_encoder_vit_b(NULL), l = sam_encoder_vit_l("model.visual_model.image_encoder."),
                          h = sam_encoder_vit_h(NULL);
    ar_params ps;
    params_init_empty(&ps);
    int ok = !sam_encoder_declare(&b, &ps);
    /* ViT-B image encoder of sam_vit_b_01ec64.pth: 89,670,912 parameters */
    const size_t nb = params_numel(&ps, 0);
    const ar_param *rg = params_find(&ps, "image_encoder.blocks.2.attn.rel_pos_h");
    const ar_param *rw = params_find(&ps, "image_encoder.blocks.3.attn.rel_pos_w");
    ok = ok && nb == 89670912 && rg && rg->shape[0] == 127 && rg->shape[1] == 64 && rw && rw->shape[0] == 27;
    const int rg_rows = rg ? rg->shape[0] : -1, rw_rows = rw ? rw->shape[0] : -1;   /* rg, rw die with ps */
    params_free(&ps);
    t_check(ok, PFX "vit_b.declare", "%zu floats (SAM ViT-B encoder: 89670912), global rel_pos %d rows, window %d",
            nb, rg_rows, rw_rows);
    params_init_empty(&ps);
    ok = !sam_encoder_declare(&l, &ps) && params_find(&ps, "model.visual_model.image_encoder.blocks.23.attn.rel_pos_h");
    const size_t nl = params_numel(&ps, 0);
    params_free(&ps);
    params_init_empty(&ps);
    ok = ok && !sam_encoder_declare(&h, &ps);
    const size_t nh = params_numel(&ps, 0);
    params_free(&ps);
    /* ViT-L 308,278,272 and ViT-H 637,026,048 encoder parameters */
    t_check(ok && nl == 308278272 && nh == 637026048, PFX "vit_l_h.declare", "ViT-L %zu, ViT-H %zu floats", nl, nh);
}

/* cfg.frozen_half: the blocks' four big matrices in 16 bits (t_check_half's
 * checks); a trainable encoder is refused. */
typedef struct { sam_image_encoder *e[2]; const float *img; int B; } half_ctx;
static float *half_fwd(void *ctx, int which) {
    half_ctx *h = ctx;
    return h->e[which] ? sam_encoder_forward(h->e[which], h->img, h->B) : NULL;
}

static void check_half(int fmt) {
    const char *fname = fmt == SAM_ENC_HALF_F16 ? "fp16" : "bf16";
    char nm[96];
    sam_encoder_cfg c = sam_encoder_vit_b("enc.");
    c.img_size = 64; c.patch = 8; c.dim = 32; c.depth = 3; c.heads = 2; c.mlp_dim = 128; c.out_chans = 16;
    c.window = 3;
    memset(c.global_attn, 0, sizeof c.global_attn);
    c.global_attn[1] = 1;
    const int B = 2;
    ar_params pa, pb;
    params_init_empty(&pa); params_init_empty(&pb);
    sam_encoder_cfg ch = c;
    ch.frozen_half = fmt;
    if (sam_encoder_declare(&c, &pa) || params_alloc(&pa) || sam_encoder_declare(&ch, &pb) || params_alloc(&pb) ||
        params_randomize(&pa, 77) || params_randomize(&pb, 77)) {
        t_fail(PFX "16-bit weights", "%s", ar_error());
        params_free(&pa); params_free(&pb);
        return;
    }
    const int n16 = t_round_like(&pa, &pb);
    const size_t nimg = (size_t)B * 3 * c.img_size * c.img_size, nout = (size_t)B * c.out_chans * 8 * 8;
    float *img = t_alloc(nimg);
    t_fill_normal(img, nimg, 1.0f, 78);
    half_ctx h = {{sam_encoder_create(&c, &pa, B), sam_encoder_create(&ch, &pb, B)}, t_dev_copy(img, nimg), B};
    t_check_half("sam_image_encoder", fname, half_fwd, &h, nout, n16, 4 * c.depth, &pa, &pb);
    free(img);
    k_free((float *)h.img);
    sam_encoder_free(h.e[0]); sam_encoder_free(h.e[1]);
    params_free(&pa); params_free(&pb);
    /* a trainable encoder cannot store its weights in 16 bits */
    ch.trainable = 1;
    params_init_empty(&pb);
    const int rc = sam_encoder_declare(&ch, &pb);
    snprintf(nm, sizeof nm, PFX "%s weights refused when trainable", fname);
    t_check(rc == -1 && strstr(ar_error(), "need a frozen encoder"), nm, "%s", ar_error());
    params_free(&pb);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# SAM image encoder against exact host loops and PyTorch float64, backend %s\n", k_backend_name());
    check_movement();
    check_rel_pos();
    check_attention();
    check_attention_bf16();
    check_config("a", "image_encoder.");
    check_config("b", "model.visual_model.image_encoder.");
    check_shape_mismatch();
    check_presets();
    check_half(SAM_ENC_HALF_BF16);
    check_half(SAM_ENC_HALF_F16);
    fx_close(&FX);
    return t_exit_code();
}
