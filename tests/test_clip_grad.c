/* tests/test_clip_grad.c — the trainable CLIP vision tower's backward
 * (model/clip_vit.c, clip_vit_cfg.trainable = 1).
 *
 * 1. PyTorch float64 autograd parity (tests/ref/clip_grad_ref.py ->
 *    tests/fixtures/clip_grad.h5, the tower of tests/ref/clip_ref.py): the tiny
 *    tower (image 32, patch 8 -> 16 patches + CLS, width 32, 3 layers, 4 heads,
 *    MLP 64) on 2 images, L = Σ features·r. For quick-GELU and exact GELU with
 *    LLaVA's selection (select_layer -2, CLS dropped) and for quick-GELU with
 *    -1 and CLS kept: the features, and the gradient of every trainable tensor
 *    (the registry's trainable set must equal the fixture's gradient set: the
 *    layers after the selected one and post_layernorm are frozen). Each tensor's
 *    max relative error is printed; tolerance 1e-4 of its scale (observed
 *    <= 2e-6). The key biases' gradients are zero in exact arithmetic (softmax
 *    is shift-invariant): checked as |g| <= 1e-4 of the key weight gradient's scale.
 * 2. Image slots: image 0 into slot 0 and image 1 into slot 1 by two forwards,
 *    one backward over both slots = the batch backward (to 1e-5: BLAS blocks
 *    other row counts differently); a second backward accumulates (2x).
 * 3. Central finite differences (float32) of L through the whole tower into a
 *    few tensors per activation: patch embedding, class and position
 *    embeddings, pre_layrnorm, a q projection, a LayerNorm, fc1/fc2.
 * 3b. checkpoint_layers (each variant): a checkpointed tower over the same
 *    parameters gives the same features and gradients bit for bit (memcmp),
 *    also after a second backward (which must recompute the top layer the
 *    first left as layer 0), from a smaller block that clip_vit_plan_bytes
 *    predicts exactly; two forwards into slots 0 and 1 and one backward over
 *    both match the batch's gradients to 1e-5. Skipping the recompute makes
 *    the gradients differ (checked by hand when this was written).
 * 4. The frozen tower is exactly as before: nothing trainable, the activation
 *    block of the forward-only layout (same formula as before this backward
 *    existed), backward refused; a trainable tower refuses a backward of a slot
 *    no forward filled.
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

#define FIXTURE "tests/fixtures/clip_grad.h5"
#define PFX "clip_grad "
#define TOL_FEAT 2e-5
#define TOL_GRAD 1e-4

enum { IMG = 32, PATCH = 8, CH = 3, W = 32, L = 3, H = 4, MLP = 64, N = 2,
       G = (IMG / PATCH) * (IMG / PATCH), T = G + 1 };
static const char *VIT_PREFIX = "model.vision_tower.vision_tower.vision_model.";

typedef struct { const char *name; clip_act act; int select_layer, keep_cls; } variant;
static const variant VARIANTS[3] = {{"quick_gelu", CLIP_ACT_QUICK_GELU, -2, 0},
                                    {"gelu", CLIP_ACT_GELU, -2, 0},
                                    {"quick_gelu_last", CLIP_ACT_QUICK_GELU, -1, 1}};

static clip_vit_cfg tiny_cfg(const variant *va, int trainable) {
    clip_vit_cfg c = {.image_size = IMG, .patch = PATCH, .channels = CH, .width = W, .layers = L, .heads = H,
                      .mlp_dim = MLP, .eps = 1e-5f, .act = va->act, .select_layer = va->select_layer,
                      .keep_cls = va->keep_cls, .prefix = VIT_PREFIX, .trainable = trainable};
    return c;
}

static float *upload_ds(const h5fixture *fx, const char *ds, int ndim, const int *shape, size_t n) {
    float *h = fx_alloc(fx, n * sizeof(float)), *d = k_malloc(n * sizeof(float));
    if (!fx_read(fx, ds, H5T_NATIVE_FLOAT, h, ndim, shape) || !d) { free(h); k_free(d); return NULL; }
    k_upload(d, h, n * sizeof(float));
    free(h);
    return d;
}

/* Host copy of the whole gradient block. */
static float *grads_host(const ar_params *ps) {
    float *h = t_alloc(ps->ng ? ps->ng : 1);
    k_sync();
    if (ps->ng) k_download(h, ps->g, ps->ng * sizeof(float));
    return h;
}

/* The key bias's gradient is zero in exact arithmetic: q·b_k adds the same
 * logit to every key of a query row, and softmax ignores that. PyTorch's
 * float64 value is rounding (~1e-14), so a relative comparison would compare
 * noise with noise: |g| and the reference are measured against the scale of
 * the same projection's weight gradient instead. */
static void kbias_check(const h5fixture *fx, const ar_params *ps, const char *lab, const char *ds,
                        const ar_param *p) {
    char dw[200], nm[240];
    snprintf(dw, sizeof dw, "%.*sweight", (int)(strlen(ds) - 4), ds);   /* .../k_proj.bias -> .weight */
    const int wshape[2] = {W, W};
    double *ref = fx_alloc(fx, W * sizeof(double)), *refw = fx_alloc(fx, (size_t)W * W * sizeof(double));
    float *g = fx_download(fx, params_g(ps, p->name), W);
    if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, ref, 1, p->shape) && fx_read(fx, dw, H5T_NATIVE_DOUBLE, refw, 2, wshape)) {
        double gm = 0, rm = 0, sc = 0;
        for (int i = 0; i < W; i++) { gm = fmax(gm, fabs(g[i])); rm = fmax(rm, fabs(ref[i])); }
        for (int i = 0; i < W * W; i++) sc = fmax(sc, fabs(refw[i]));
        snprintf(nm, sizeof nm, PFX "%s", lab);
        t_check(sc > 0 && gm <= TOL_GRAD * sc && rm <= 1e-10 * sc, nm,
                "zero in exact arithmetic: max |g| %.1e, reference %.1e, = %.1e / %.1e of the weight "
                "gradient's scale %.2e (tol %.0e)", gm, rm, gm / sc, rm / sc, sc, TOL_GRAD);
    }
    free(ref); free(refw); free(g);
}

/* ---- finite differences ---- */
typedef struct { clip_vit *v; const float *px; const float *r; size_t n; } fd_ctx;

static double fd_loss(void *vc) {
    fd_ctx *c = vc;
    return t_dot(clip_vit_forward(c->v, c->px, N), c->r, c->n);
}

static void fd_checks(const variant *va, ar_params *ps, clip_vit *v, const float *px, const float *r) {
    fd_ctx c = {.v = v, .px = px, .r = r, .n = (size_t)N * clip_vit_tokens(v) * W};
    static const char *tails[] = {"embeddings.patch_embedding.weight", "embeddings.class_embedding",
                                  "embeddings.position_embedding.weight", "pre_layrnorm.weight",
                                  "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.layer_norm1.bias",
                                  "encoder.layers.1.mlp.fc1.bias", "encoder.layers.1.mlp.fc2.weight"};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        char nm[160], lab[200];
        snprintf(nm, sizeof nm, "%s%s", VIT_PREFIX, tails[i]);
        const ar_param *p = params_find(ps, nm);
        float *w = params_w(ps, nm), *g = params_g(ps, nm);
        if (!p || !w || !g) { t_fail(PFX "fd", "%s missing or frozen", nm); continue; }
        snprintf(lab, sizeof lab, PFX "fd %s d.%s", va->name, tails[i]);
        t_gradcheck(lab, fd_loss, &c, w, g, p->numel, 1e-2f, 1e-2, 12);
    }
}

/* checkpoint_layers: a second tower over the same parameters, each layer's
 * forward recomputed in backward from its kept input. v holds a forward of px
 * and g1 the gradients of one backward from it. */
static void checkpoint_check(const variant *va, ar_params *ps, const clip_vit_cfg *cfg, clip_vit *v,
                             const float *px, const float *r, const float *f, const float *g1, size_t nf) {
    char lab[200];
    clip_vit_cfg ck = *cfg;
    ck.checkpoint_layers = 1;
    float *o1 = t_alloc(nf), *o2 = t_alloc(nf), *gc1 = NULL, *gc2 = NULL, *gn2 = NULL, *gs = NULL;
    k_sync();
    k_download(o1, f, nf * sizeof(float));
    clip_vit *v2 = clip_vit_create(&ck, ps, N);
    const float *f2 = v2 ? clip_vit_forward(v2, px, N) : NULL;
    snprintf(lab, sizeof lab, PFX "%s checkpoint_layers", va->name);
    if (!f2) { t_fail(lab, "%s", ar_error()); goto done; }
    k_sync();
    k_download(o2, f2, nf * sizeof(float));
    /* one backward; then a second one, which must refill the top layer the first left as layer 0 */
    params_zero_grad(ps);
    const int rc1 = clip_vit_backward(v2, r);
    gc1 = grads_host(ps);
    const int rc2 = clip_vit_backward(v2, r);
    gc2 = grads_host(ps);
    params_zero_grad(ps);
    clip_vit_backward(v, r);
    clip_vit_backward(v, r);
    gn2 = grads_host(ps);
    const size_t b1 = clip_vit_activation_bytes(v), b2 = clip_vit_activation_bytes(v2),
                 pb = clip_vit_plan_bytes(&ck, N);
    const int same_o = !memcmp(o1, o2, nf * sizeof(float)), same_g = !memcmp(g1, gc1, ps->ng * sizeof(float)),
              same_g2 = !memcmp(gn2, gc2, ps->ng * sizeof(float));
    t_check(rc1 == 0 && rc2 == 0 && same_o && same_g && same_g2 && b2 < b1 && pb == b2, lab,
            "features %s, %zu gradients %s, after a second backward %s; activations %zu -> %zu bytes "
            "(plan %zu) for %d images", same_o ? "identical" : "DIFFER", ps->ng, same_g ? "identical" : "DIFFER",
            same_g2 ? "identical" : "DIFFER", b1, b2, pb, N);
    /* image slots: two forwards, one backward over both = the batch's gradients (1e-5: other row counts) */
    params_zero_grad(ps);
    const size_t img = (size_t)CH * IMG * IMG;
    const int fw = clip_vit_forward_at(v2, px, 1, 0) && clip_vit_forward_at(v2, px + img, 1, 1);
    const int rc3 = fw ? clip_vit_backward_at(v2, r, 2, 0) : -1;
    gs = grads_host(ps);
    const double e = t_max_rel_err(gs, g1, ps->ng);
    snprintf(lab, sizeof lab, PFX "%s checkpoint_layers slots", va->name);
    t_check(rc3 == 0 && e <= 1e-5, lab, "images in slots 0 and 1 by two forwards, one backward over both: "
            "gradients vs the batch's max rel err %.1e", e);
done:
    params_zero_grad(ps);
    free(o1); free(o2); free(gc1); free(gc2); free(gn2); free(gs);
    clip_vit_free(v2);
}

/* One variant: parity of the features and every gradient, then (quick_gelu) slots and accumulation,
 * then finite differences. */
static void run_variant(h5fixture *fx, const variant *va, const float *px) {
    char ds[200], lab[200];
    clip_vit_cfg cfg = tiny_cfg(va, 1);
    ar_params ps;
    params_init_empty(&ps);
    clip_vit *v = NULL;
    float *r = NULL, *g1 = NULL, *g2 = NULL;
    if (clip_vit_declare(&cfg, &ps) || params_alloc(&ps) || !(v = clip_vit_create(&cfg, &ps, N))) {
        t_fail(PFX "create", "%s", ar_error());
        goto done;
    }
    snprintf(ds, sizeof ds, "%s/grads", va->name);
    const char *groups[] = {ds, NULL};
    if (!fx_load_params(fx, &ps, groups)) goto done;
    const int P = clip_vit_tokens(v), fshape[3] = {N, P, W};
    const size_t nf = (size_t)N * P * W;
    snprintf(ds, sizeof ds, "%s/r", va->name);
    if (!(r = upload_ds(fx, ds, 3, fshape, nf))) goto done;

    float *f = clip_vit_forward(v, px, N);
    if (!f) { t_fail(PFX "forward", "%s", ar_error()); goto done; }
    snprintf(ds, sizeof ds, "%s/features", va->name);
    snprintf(lab, sizeof lab, "%s features", va->name);
    fx_check(fx, lab, ds, f, 3, fshape, TOL_FEAT);
    params_zero_grad(&ps);
    if (clip_vit_backward(v, r)) { t_fail(PFX "backward", "%s", ar_error()); goto done; }
    int ntr = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable) continue;
        ntr++;
        snprintf(ds, sizeof ds, "%s/grads/%s", va->name, p->name);
        snprintf(lab, sizeof lab, "%s grad %s", va->name, p->name + strlen(VIT_PREFIX));
        const size_t nl = strlen(p->name);
        if (nl > 11 && !strcmp(p->name + nl - 11, "k_proj.bias")) kbias_check(fx, &ps, lab, ds, p);
        else fx_check(fx, lab, ds, params_g(&ps, p->name), p->ndim, p->shape, TOL_GRAD);
    }
    const int n_run = va->select_layer < 0 ? L + 1 + va->select_layer : va->select_layer, want = 5 + 16 * n_run;
    snprintf(ds, sizeof ds, "%sencoder.layers.%d.mlp.fc2.weight", VIT_PREFIX, L - 1);
    const int last_frozen = params_g(&ps, ds) == NULL;
    snprintf(ds, sizeof ds, "%spost_layernorm.weight", VIT_PREFIX);
    const int post_frozen = params_g(&ps, ds) == NULL;
    t_check(ntr == want && post_frozen && last_frozen == (n_run < L), PFX "trainable set",
            "%s: %d trainable tensors (want %d: embeddings, pre_layrnorm, %d layers), layer %d %s, "
            "post_layernorm frozen", va->name, ntr, want, n_run, L - 1, last_frozen ? "frozen" : "trainable");

    g1 = grads_host(&ps);
    checkpoint_check(va, &ps, &cfg, v, px, r, f, g1, nf);
    if (va == &VARIANTS[0]) {
        /* two forwards into slots 0 and 1, one backward over both */
        const size_t img = (size_t)CH * IMG * IMG;
        params_zero_grad(&ps);
        float *a = clip_vit_forward_at(v, px, 1, 0), *b = clip_vit_forward_at(v, px + img, 1, 1);
        int rc = a && b ? clip_vit_backward_at(v, r, 2, 0) : -1;
        if (rc) { t_fail(PFX "slots", "%s", ar_error()); goto done; }
        g2 = grads_host(&ps);
        double e = t_max_rel_err(g2, g1, ps.ng);
        float *fa = t_alloc(nf);
        k_sync();
        k_download(fa, a, (size_t)P * W * sizeof(float));
        k_download(fa + (size_t)P * W, b, (size_t)P * W * sizeof(float));
        float *fb = t_alloc(nf);
        snprintf(ds, sizeof ds, "%s/features", va->name);
        double *fref = fx_alloc(fx, nf * sizeof(double));
        double fe = 1;
        if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, fref, 3, fshape)) fe = t_max_rel_err_d(fa, fref, nf);
        t_check(e <= 1e-5 && fe <= TOL_FEAT && b == a + (size_t)P * W, PFX "slots",
                "images in slots 0 and 1 by two forwards, one backward over both: gradients vs the batch's "
                "max rel err %.1e, features %.1e", e, fe);
        free(fa); free(fb); free(fref);
        /* accumulation: the kept activations give the same gradients again */
        if (clip_vit_backward_at(v, r, 2, 0)) { t_fail(PFX "accumulate", "%s", ar_error()); goto done; }
        float *g3 = grads_host(&ps);
        double d = 0, sc = 0;
        for (size_t i = 0; i < ps.ng; i++) { d = fmax(d, fabs(g3[i] - 2.0f * g2[i])); sc = fmax(sc, fabs(g2[i])); }
        t_check(d <= 1e-6 * sc, PFX "accumulate", "second backward adds the same gradients (max dev %.1e of %.2g)",
                d, sc);
        free(g3);
        /* a backward of a slot range reaching past the tower, or a slot no forward filled */
        clip_vit *u = clip_vit_create(&cfg, &ps, 3);
        int e1 = clip_vit_backward_at(v, r, 2, 1), e2 = -1, e3 = -1;
        const char *m2 = "";
        if (u && clip_vit_forward_at(u, px, 2, 0)) {
            e2 = clip_vit_backward_at(u, r, 2, 1);
            m2 = ar_error();
            e3 = clip_vit_backward_at(u, r, 2, 0);
        }
        t_check(e1 == -1 && e2 == -1 && strstr(m2, "slot 2") && e3 == 0, PFX "errors slots",
                "slots 1..2 of a 2-image tower refused; slot 2 never filled: \"%s\"", m2);
        clip_vit_free(u);
    }
    /* finite differences, from the gradients of one backward (they perturb weights from the host) */
    if (strcmp(k_backend_name(), "cpu")) {
        printf("# finite differences skipped on the %s backend\n", k_backend_name());
        goto done;
    }
    params_zero_grad(&ps);
    clip_vit_forward(v, px, N);
    clip_vit_backward(v, r);
    fd_checks(va, &ps, v, px, r);
done:
    free(g1);
    free(g2);
    k_free(r);
    clip_vit_free(v);
    params_free(&ps);
}

static void parity(void) {
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return;
    const fx_int_attr iv[] = {{"image_size", IMG}, {"patch", PATCH}, {"channels", CH}, {"width", W},
                              {"layers", L}, {"heads", H}, {"mlp_dim", MLP}, {"N", N}};
    const fx_float_attr fv[] = {{"eps", 1e-5f}};
    float *px = NULL;
    if (!fx_check_config(&fx, iv, sizeof iv / sizeof *iv, fv, 1)) goto done;
    const int pshape[4] = {N, CH, IMG, IMG};
    if (!(px = upload_ds(&fx, "pixels", 4, pshape, (size_t)N * CH * IMG * IMG))) goto done;
    for (int i = 0; i < 3; i++) run_variant(&fx, &VARIANTS[i], px);
done:
    k_free(px);
    fx_close(&fx);
}

/* The frozen tower: nothing trainable, the forward-only block, no backward. */
static void frozen(void) {
#define R16(n) (((size_t)(n) + 15) & ~(size_t)15)
    for (int kc = 0; kc < 2; kc++) {
        variant va = {"frozen", CLIP_ACT_QUICK_GELU, -2, kc};
        clip_vit_cfg c = tiny_cfg(&va, 0);
        ar_params ps;
        params_init_empty(&ps);
        clip_vit *v = NULL;
        const int MI = 3;
        if (clip_vit_declare(&c, &ps) || params_alloc(&ps) || !(v = clip_vit_create(&c, &ps, MI))) {
            t_fail(PFX "frozen", "%s", ar_error());
            params_free(&ps);
            continue;
        }
        /* the layout clip_vit_create had before the backward existed */
        const size_t NT = (size_t)MI * T, region = 4 * NT * W > 2 * NT * MLP ? 4 * NT * W : 2 * NT * MLP;
        const size_t want = (3 * R16(NT * W) + 2 * R16(NT) + R16(region) + R16((size_t)MI * H * T * T) +
                             R16(W * W) + R16((size_t)CH * PATCH * PATCH * G) + R16(kc ? 0 : (size_t)MI * G * W)) *
                            sizeof(float);
        float *px = k_malloc((size_t)MI * CH * IMG * IMG * sizeof(float)), *d = k_malloc((size_t)MI * T * W * 4);
        k_zero(px, (size_t)MI * CH * IMG * IMG * sizeof(float));
        k_zero(d, (size_t)MI * T * W * 4);
        int fw = clip_vit_forward(v, px, 2) != NULL, rc = clip_vit_backward(v, d);
        const char *msg = ar_error();
        t_check(params_numel(&ps, 1) == 0 && ps.g == NULL && clip_vit_activation_bytes(v) == want && fw &&
                    rc == -1 && strstr(msg, "frozen"),
                PFX "frozen", "keep_cls %d: %zu trainable floats, %zu activation bytes (forward-only layout %zu), "
                "backward refused: \"%s\"", kc, params_numel(&ps, 1), clip_vit_activation_bytes(v), want, msg);
        k_free(px);
        k_free(d);
        clip_vit_free(v);
        params_free(&ps);
    }
#undef R16
}

int main(void) {
    printf("# CLIP vision tower backward (trainable), backend %s\n", k_backend_name());
    parity();
    frozen();
    return t_exit_code();
}
