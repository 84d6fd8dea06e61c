/* tests/test_clip.c — the CLIP vision tower and mm_projector (model/clip_vit.c).
 *
 * 1. PyTorch float64 parity (tests/ref/clip_ref.py -> tests/fixtures/clip.h5,
 *    written from Hugging Face modeling_clip semantics and checked once against
 *    the real CLIPVisionModel by tests/ref/check_clip_hf.py): a tiny tower
 *    (image 32, patch 8 -> 16 patches + CLS, width 32, 3 layers, 4 heads, MLP 64)
 *    on 2 images, weights loaded by LLaVA's names
 *    (model.vision_tower.vision_tower.vision_model.*):
 *      - every hidden state hidden_states[0..3] (one tower per select_layer,
 *        counted from the front) for quick-GELU and for exact GELU;
 *      - LLaVA's selection: select_layer -2 with CLS dropped = hidden[2][:, 1:],
 *        -1 with CLS kept = hidden[3], each bit-identical to the tower counted
 *        from the front;
 *      - batching: one image through a tower made for two equals image 0 of
 *        the batch (to 1e-6: BLAS may block a different row count differently).
 *    Tolerance 2e-5 of each tensor's scale (three float32 layers; observed ~1e-6).
 *    Both projector forms (linear, mlp2x_gelu; model.mm_projector.*) on the
 *    reference's selected features: output, input gradient and every weight
 *    gradient of L = Σ out·r. Tolerance 1e-5 (observed ~1e-7).
 * 2. Finite differences of the projector backward (both forms) into its input and
 *    each tensor; backward accumulates; a frozen projector has no gradients and
 *    still gives the same input gradient.
 * 3. Errors (bad sizes, select_layer out of range, batch over the maximum, an
 *    unknown projector type) and the CLIPImageProcessor normalisation helper.
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/clip_vit.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/clip.h5"
#define PFX "clip "
#define TOL_VIT 2e-5
#define TOL_PROJ 1e-5

enum { IMG = 32, PATCH = 8, CH = 3, W = 32, L = 3, H = 4, MLP = 64, N = 2, D = 24,
       G = (IMG / PATCH) * (IMG / PATCH), T = G + 1 };
static const char *VIT_PREFIX = "model.vision_tower.vision_tower.vision_model.";

static clip_vit_cfg tiny_cfg(int select_layer, int keep_cls, clip_act act) {
    clip_vit_cfg c = {.image_size = IMG, .patch = PATCH, .channels = CH, .width = W, .layers = L, .heads = H,
                      .mlp_dim = MLP, .eps = 1e-5f, .act = act, .select_layer = select_layer,
                      .keep_cls = keep_cls, .prefix = VIT_PREFIX};
    return c;
}

/* Runs a tower built with cfg on the N images; returns the host copy of
 * n_floats of the hidden state (want_hidden) or of the output. NULL on failure. */
static float *run_tower(const h5fixture *fx, const clip_vit_cfg *cfg, ar_params *ps, const float *pixels, int n,
                        int want_hidden, size_t n_floats) {
    clip_vit *v = clip_vit_create(cfg, ps, N);
    if (!v) { t_fail(PFX "create", "%s", ar_error()); return NULL; }
    float *out = clip_vit_forward(v, pixels, n), *h = NULL;
    if (!out) t_fail(PFX "forward", "%s", ar_error());
    else h = fx_download(fx, want_hidden ? clip_vit_hidden(v) : out, n_floats);
    clip_vit_free(v);
    return h;
}

/* Reads dataset ds as float32 and uploads it to a fresh backend buffer of n floats. */
static float *upload_ds(const h5fixture *fx, const char *ds, int ndim, const int *shape, size_t n) {
    float *h = fx_alloc(fx, n * sizeof(float)), *d = k_malloc(n * sizeof(float));
    if (!fx_read(fx, ds, H5T_NATIVE_FLOAT, h, ndim, shape) || !d) { free(h); k_free(d); return NULL; }
    k_upload(d, h, n * sizeof(float));
    free(h);
    return d;
}

static void vit_parity(h5fixture *fx, const float *pixels, ar_params *ps, double *hid) {
    const size_t TW = (size_t)T * W, hs = (size_t)N * TW;
    char label[96];
    const char *acts[2] = {"quick_gelu", "gelu"};
    for (int a = 0; a < 2; a++) {
        char ds[64];
        snprintf(ds, sizeof ds, "%s/hidden", acts[a]);
        const int shp[4] = {L + 1, N, T, W};
        if (!fx_read(fx, ds, H5T_NATIVE_DOUBLE, hid, 4, shp)) return;
        for (int l = 0; l <= L; l++) {
            clip_vit_cfg cfg = tiny_cfg(l, 1, a ? CLIP_ACT_GELU : CLIP_ACT_QUICK_GELU);
            float *h = run_tower(fx, &cfg, ps, pixels, N, 1, hs);
            if (!h) return;
            snprintf(label, sizeof label, "%s hidden_states[%d]", acts[a], l);
            fx_report(fx, label, h, hid + l * hs, hs, TOL_VIT);
            free(h);
        }
    }
    /* quick_gelu again (hid now holds gelu): LLaVA's selection, negative indices, batching */
    const int shp[4] = {L + 1, N, T, W};
    if (!fx_read(fx, "quick_gelu/hidden", H5T_NATIVE_DOUBLE, hid, 4, shp)) return;
    clip_vit_cfg llava = tiny_cfg(-2, 0, CLIP_ACT_QUICK_GELU), front = tiny_cfg(L - 1, 0, CLIP_ACT_QUICK_GELU),
                 last = tiny_cfg(-1, 1, CLIP_ACT_QUICK_GELU), lastf = tiny_cfg(L, 1, CLIP_ACT_QUICK_GELU);
    float *f2 = run_tower(fx, &llava, ps, pixels, N, 0, (size_t)N * G * W);
    float *f2f = run_tower(fx, &front, ps, pixels, N, 0, (size_t)N * G * W);
    float *f1 = run_tower(fx, &last, ps, pixels, N, 0, hs);
    float *f1f = run_tower(fx, &lastf, ps, pixels, N, 0, hs);
    float *one = run_tower(fx, &llava, ps, pixels, 1, 0, (size_t)G * W);
    if (f2 && f2f && f1 && f1f && one) {
        double *ref = fx_alloc(fx, (size_t)N * G * W * sizeof(double));
        for (int n = 0; n < N; n++)   /* hidden_states[-2][:, 1:] */
            memcpy(ref + (size_t)n * G * W, hid + (L - 1) * hs + n * TW + W, (size_t)G * W * sizeof(double));
        fx_report(fx, "select -2 patch features", f2, ref, (size_t)N * G * W, TOL_VIT);
        fx_report(fx, "select -1 cls_patch features", f1, hid + L * hs, hs, TOL_VIT);
        int same = !memcmp(f2, f2f, (size_t)N * G * W * 4) && !memcmp(f1, f1f, hs * 4);
        t_check(same, PFX "negative select_layer", "-2 / -1 %s layers %d / %d counted from the front",
                same ? "equal" : "differ from", L - 1, L);
        fx_report(fx, "batch of one image", one, ref, (size_t)G * W, TOL_VIT);
        double be = t_max_rel_err(one, f2, (size_t)G * W);
        t_check(be <= 1e-6, PFX "batch independence", "image 0 alone vs image 0 of the batch of 2: max rel err %.1e",
                be);
        free(ref);
    }
    free(f2); free(f2f); free(f1); free(f1f); free(one);
}

static void proj_parity(h5fixture *fx, const double *hid) {
    const char *forms[2] = {"linear", "mlp2x_gelu"};
    const int nr = N * G, fs[2] = {nr, W}, os[2] = {nr, D};
    const size_t TW = (size_t)T * W, hs = (size_t)N * TW;
    float *hx = fx_alloc(fx, (size_t)nr * W * sizeof(float));
    for (int n = 0; n < N; n++)
        for (size_t i = 0; i < (size_t)G * W; i++)
            hx[n * G * W + i] = (float)hid[(L - 1) * hs + n * TW + W + i];
    float *x = k_malloc((size_t)nr * W * 4), *dx = k_malloc((size_t)nr * W * 4);
    k_upload(x, hx, (size_t)nr * W * 4);
    free(hx);
    for (int f = 0; f < 2; f++) {
        mm_projector_cfg pc = {.type = (mm_proj_type)f, .in_dim = W, .out_dim = D, .trainable = 1};
        ar_params ps;
        params_init_empty(&ps);
        mm_projector *p = NULL;
        char ds[160], label[160];
        float *r = NULL;
        if (mm_projector_declare(&pc, &ps) || params_alloc(&ps) || !(p = mm_projector_create(&pc, &ps, nr))) {
            t_fail(PFX "projector create", "%s", ar_error());
            goto next;
        }
        int ok = 1;
        for (int i = 0; i < ps.n && ok; i++) {   /* weights from <form>/params/<name> */
            snprintf(ds, sizeof ds, "%s/params/%s", forms[f], ps.p[i].name);
            float *w = upload_ds(fx, ds, ps.p[i].ndim, ps.p[i].shape, ps.p[i].numel);
            if (!w) { ok = 0; break; }
            k_copy(params_w(&ps, ps.p[i].name), w, ps.p[i].numel * 4);
            k_free(w);
        }
        snprintf(ds, sizeof ds, "%s/r", forms[f]);
        if (!ok || !(r = upload_ds(fx, ds, 2, os, (size_t)nr * D))) goto next;
        float *out = mm_projector_forward(p, x, nr);
        if (!out) { t_fail(PFX "projector forward", "%s", ar_error()); goto next; }
        k_zero(dx, (size_t)nr * W * 4);
        mm_projector_backward(p, r, dx);
        snprintf(label, sizeof label, "%s out", forms[f]);
        snprintf(ds, sizeof ds, "%s/out", forms[f]);
        fx_check(fx, label, ds, out, 2, os, TOL_PROJ);
        snprintf(label, sizeof label, "%s grad in", forms[f]);
        snprintf(ds, sizeof ds, "%s/grads/in", forms[f]);
        fx_check(fx, label, ds, dx, 2, fs, TOL_PROJ);
        for (int i = 0; i < ps.n; i++) {
            snprintf(label, sizeof label, "%s grad %s", forms[f], ps.p[i].name);
            snprintf(ds, sizeof ds, "%s/grads/%s", forms[f], ps.p[i].name);
            fx_check(fx, label, ds, params_g(&ps, ps.p[i].name), ps.p[i].ndim, ps.p[i].shape, TOL_PROJ);
        }
    next:
        k_free(r);
        mm_projector_free(p);
        params_free(&ps);
    }
    k_free(x);
    k_free(dx);
}

static void parity(void) {
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return;
    const fx_int_attr iv[] = {{"image_size", IMG}, {"patch", PATCH}, {"channels", CH}, {"width", W},
                              {"layers", L}, {"heads", H}, {"mlp_dim", MLP}, {"N", N}, {"proj_dim", D}};
    const fx_float_attr fv[] = {{"eps", 1e-5f}};
    ar_params ps;
    params_init_empty(&ps);
    float *pixels = NULL;
    double *hid = NULL;
    if (!fx_check_config(&fx, iv, sizeof iv / sizeof *iv, fv, 1)) goto done;
    clip_vit_cfg cfg = tiny_cfg(-2, 0, CLIP_ACT_QUICK_GELU);
    if (clip_vit_declare(&cfg, &ps) || params_alloc(&ps)) { t_fail(PFX "declare", "%s", ar_error()); goto done; }
    if (!fx_load_params(&fx, &ps, NULL)) goto done;
    const int pshape[4] = {N, CH, IMG, IMG};
    if (!(pixels = upload_ds(&fx, "pixels", 4, pshape, (size_t)N * CH * IMG * IMG))) goto done;
    hid = fx_alloc(&fx, (size_t)(L + 1) * N * T * W * sizeof(double));
    vit_parity(&fx, pixels, &ps, hid);
    proj_parity(&fx, hid);   /* hid holds the quick_gelu hidden states */
done:
    free(hid);
    k_free(pixels);
    params_free(&ps);
    fx_close(&fx);
}

/* ---- finite differences of the projector ---- */
enum { FN = 7, FW = 12, FD = 10 };
typedef struct { mm_projector *p; float *x, *r; } fd_ctx;

static double fd_loss(void *vc) {
    fd_ctx *c = vc;
    return t_dot(mm_projector_forward(c->p, c->x, FN), c->r, (size_t)FN * FD);
}

static void fd_run(mm_proj_type type) {
    const char *form = type == MM_PROJ_LINEAR ? "linear" : "mlp2x_gelu";
    char nm[160];
    mm_projector_cfg pc = {.type = type, .in_dim = FW, .out_dim = FD, .trainable = 1, .prefix = "m."};
    mm_projector_cfg fc = pc;
    fc.trainable = 0;
    ar_params ps, pf;
    params_init_empty(&ps);
    params_init_empty(&pf);
    mm_projector *p = NULL, *q = NULL;
    if (mm_projector_declare(&pc, &ps) || params_alloc(&ps) || !(p = mm_projector_create(&pc, &ps, FN)) ||
        mm_projector_declare(&fc, &pf) || params_alloc(&pf) || !(q = mm_projector_create(&fc, &pf, FN))) {
        t_fail(PFX "fd create", "%s", ar_error());
        goto done;
    }
    params_randomize(&ps, 31);
    params_randomize(&pf, 31);
    fd_ctx c = {.p = p, .x = t_alloc(FN * FW), .r = t_alloc(FN * FD)};
    float *dx = t_alloc(FN * FW), *dx2 = t_alloc(FN * FW), *dxf = t_alloc(FN * FW);
    t_fill_normal(c.x, FN * FW, 1.0f, 32);
    t_fill_normal(c.r, FN * FD, 1.0f, 33);
    mm_projector_forward(p, c.x, FN);
    mm_projector_backward(p, c.r, dx);
    snprintf(nm, sizeof nm, PFX "fd %s d.in", form);
    t_gradcheck(nm, fd_loss, &c, c.x, dx, FN * FW, 1e-2f, 2e-3, FN * FW);
    for (int i = 0; i < ps.n; i++) {
        snprintf(nm, sizeof nm, PFX "fd %s d.%s", form, ps.p[i].name);
        t_gradcheck(nm, fd_loss, &c, params_w(&ps, ps.p[i].name), params_g(&ps, ps.p[i].name), ps.p[i].numel,
                    1e-2f, 2e-3, 256);
    }
    /* accumulation: a second backward adds the same input gradient again */
    memcpy(dx2, dx, sizeof(float) * FN * FW);
    mm_projector_forward(p, c.x, FN);
    mm_projector_backward(p, c.r, dx2);
    double e = 0, sc = 0;
    for (int i = 0; i < FN * FW; i++) { e = fmax(e, fabs(dx2[i] - 2.0f * dx[i])); sc = fmax(sc, fabs(dx[i])); }
    snprintf(nm, sizeof nm, PFX "fd %s accumulate", form);
    t_check(e <= 1e-6 * fmax(sc, 1.0), nm, "second backward adds the same d.in (max dev %.1e)", e);
    /* frozen: no gradient tensors, the same input gradient, and nothing at all without din */
    mm_projector_forward(q, c.x, FN);
    mm_projector_backward(q, c.r, NULL);
    mm_projector_backward(q, c.r, dxf);
    int nog = params_numel(&pf, 1) == 0 && pf.g == NULL;
    snprintf(nm, sizeof nm, PFX "fd %s frozen", form);
    t_check(nog && !memcmp(dxf, dx, sizeof(float) * FN * FW), nm,
            "frozen: %zu trainable floats, input gradient %s the trainable one's", params_numel(&pf, 1),
            !memcmp(dxf, dx, sizeof(float) * FN * FW) ? "equals" : "differs from");
    free(c.x); free(c.r); free(dx); free(dx2); free(dxf);
done:
    mm_projector_free(p);
    mm_projector_free(q);
    params_free(&ps);
    params_free(&pf);
}

static void errors(void) {
    ar_params ps;
    params_init_empty(&ps);
    clip_vit_cfg c = tiny_cfg(-2, 0, CLIP_ACT_QUICK_GELU);
    c.image_size = 30;
    int e1 = clip_vit_declare(&c, &ps);
    c = tiny_cfg(-2, 0, CLIP_ACT_QUICK_GELU);
    c.heads = 5;
    int e2 = clip_vit_declare(&c, &ps);
    c = tiny_cfg(L + 1, 0, CLIP_ACT_QUICK_GELU);
    int e3 = clip_vit_declare(&c, &ps);
    c = tiny_cfg(-(L + 2), 0, CLIP_ACT_QUICK_GELU);
    int e4 = clip_vit_declare(&c, &ps);
    t_check(e1 == -1 && e2 == -1 && e3 == -1 && e4 == -1 && ps.n == 0, PFX "errors config",
            "image %% patch, width %% heads, select_layer %d and %d refused, nothing declared", L + 1, -(L + 2));
    c = tiny_cfg(-2, 0, CLIP_ACT_QUICK_GELU);
    clip_vit *v = NULL;
    float *px = k_malloc((size_t)3 * CH * IMG * IMG * 4);
    k_zero(px, (size_t)3 * CH * IMG * IMG * 4);
    int ok = clip_vit_declare(&c, &ps) == 0 && params_alloc(&ps) == 0 && (v = clip_vit_create(&c, &ps, 2));
    const char *msg = "";
    if (ok) {
        ok = !clip_vit_forward(v, px, 3) && !clip_vit_forward(v, px, 0) && clip_vit_forward(v, px, 2);
        clip_vit_forward(v, px, 3);
        msg = ar_error();
    }
    t_check(ok && strstr(msg, "3 images"), PFX "errors batch", "3 images for a tower of 2: \"%s\"", msg);
    /* a tower with -2 declares every layer (checkpoint completeness) and runs L - 1 of them */
    size_t want = (size_t)W * CH * PATCH * PATCH + W + (size_t)T * W + 2 * W +
                  (size_t)L * (4 * ((size_t)W * W + W) + 4 * W + 2 * (size_t)MLP * W + MLP + W) + 2 * W;
    t_check(params_numel(&ps, 0) == want && params_numel(&ps, 1) == 0, PFX "declare",
            "%d tensors, %zu floats (want %zu incl. post_layernorm), all frozen", ps.n, params_numel(&ps, 0), want);
    clip_vit_free(v);
    k_free(px);
    params_free(&ps);

    mm_proj_type t1 = MM_PROJ_LINEAR, t2 = MM_PROJ_LINEAR;
    int p1 = mm_projector_type_from_name("mlp2x_gelu", &t1), p2 = mm_projector_type_from_name("mlp3x_gelu", &t2);
    params_init_empty(&ps);
    mm_projector_cfg pc = {.type = MM_PROJ_LINEAR, .in_dim = W, .out_dim = D};
    mm_projector *p = NULL;
    int pok = !mm_projector_declare(&pc, &ps) && !params_alloc(&ps) && (p = mm_projector_create(&pc, &ps, 4));
    float *x = k_malloc((size_t)5 * W * 4);
    k_zero(x, (size_t)5 * W * 4);
    int rows = pok && !mm_projector_forward(p, x, 5) && mm_projector_forward(p, x, 4);
    int names = params_find(&ps, "model.mm_projector.weight") && params_find(&ps, "model.mm_projector.bias");
    t_check(p1 == 0 && t1 == MM_PROJ_MLP2X_GELU && p2 == -1 && rows && names, PFX "errors projector",
            "type names, 5 rows for max 4 refused, default names model.mm_projector.{weight,bias}");
    k_free(x);
    mm_projector_free(p);
    params_free(&ps);
}

static void normalize(void) {
    enum { S = 4 };
    uint8_t rgb[S * S * 3];
    for (int i = 0; i < S * S * 3; i++) rgb[i] = (uint8_t)(i * 37 % 256);
    float out[3 * S * S];
    clip_normalize_u8(out, rgb, S);
    double e = 0;
    const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, sd[3] = {0.26862954, 0.26130258, 0.27577711};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++)
            e = fmax(e, fabs(out[c * S * S + i] - (rgb[3 * i + c] / 255.0 - mean[c]) / sd[c]));
    t_check(e < 1e-6, PFX "normalize", "HWC uint8 -> CHW (x/255 - mean)/std, max abs err %.1e", e);
}

/* cfg.frozen_half: the layers' six big matrices in 16 bits (t_check_half's
 * checks); a trainable tower is refused. */
typedef struct { clip_vit *v[2]; const float *px; int N; } half_ctx;
static float *half_fwd(void *ctx, int which) {
    half_ctx *h = ctx;
    return h->v[which] ? clip_vit_forward(h->v[which], h->px, h->N) : NULL;
}

static void half_tower(int fmt) {
    const char *fname = fmt == CLIP_HALF_F16 ? "fp16" : "bf16";
    char nm[96];
    clip_vit_cfg c = {.image_size = 32, .patch = 8, .channels = 3, .width = 24, .layers = 3, .heads = 4,
                      .mlp_dim = 48, .eps = 1e-5f, .act = CLIP_ACT_QUICK_GELU, .select_layer = -2};
    clip_vit_cfg ch = c;
    ch.frozen_half = fmt;
    ar_params pa, pb;
    params_init_empty(&pa); params_init_empty(&pb);
    if (clip_vit_declare(&c, &pa) || params_alloc(&pa) || clip_vit_declare(&ch, &pb) || params_alloc(&pb) ||
        params_randomize(&pa, 91) || params_randomize(&pb, 91)) {
        t_fail("clip 16-bit weights", "%s", ar_error());
        params_free(&pa); params_free(&pb);
        return;
    }
    const int n16 = t_round_like(&pa, &pb), N = 2;
    const size_t npx = (size_t)N * 3 * 32 * 32;
    float *px = t_alloc(npx);
    t_fill_normal(px, npx, 1.0f, 92);
    half_ctx h = {{clip_vit_create(&c, &pa, N), clip_vit_create(&ch, &pb, N)}, t_dev_copy(px, npx), N};
    const size_t nout = h.v[0] ? (size_t)N * clip_vit_tokens(h.v[0]) * c.width : 1;
    t_check_half("clip", fname, half_fwd, &h, nout, n16, 6 * c.layers, &pa, &pb);
    free(px);
    k_free((float *)h.px);
    clip_vit_free(h.v[0]); clip_vit_free(h.v[1]);
    params_free(&pa); params_free(&pb);
    ch.trainable = 1;
    params_init_empty(&pb);
    const int rc = clip_vit_declare(&ch, &pb);
    snprintf(nm, sizeof nm, "clip %s weights refused when trainable", fname);
    t_check(rc == -1 && strstr(ar_error(), "need a frozen tower"), nm, "%s", ar_error());
    params_free(&pb);
}

int main(void) {
    printf("# CLIP vision tower + mm_projector, backend %s\n", k_backend_name());
    parity();
    fd_run(MM_PROJ_LINEAR);
    fd_run(MM_PROJ_MLP2X_GELU);
    errors();
    normalize();
    half_tower(CLIP_HALF_BF16);
    half_tower(CLIP_HALF_F16);
    return t_exit_code();
}
