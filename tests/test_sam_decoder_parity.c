/* tests/test_sam_decoder_parity.c — the SAM mask decoder (model/sam_decoder.c) against PyTorch.
 *
 * tests/ref/sam_decoder_ref.py (`make fixtures`) writes tests/fixtures/sam_decoder.h5:
 * a tiny mask decoder (dim 24, 2 two-way blocks, 4 heads, MLP 40, 6x8 image
 * embedding, 3 prompts sharing it) written independently in PyTorch float64
 * with segment-anything's module tree, random float32-representable weights
 * under SAM's names, the inputs, the single-mask output and IoU predictions,
 * and the gradients of every parameter, of the sparse prompts and of the
 * image embedding for the loss Σ masks[:,0] * R (R = dmasks).
 *
 * Checks, one line each (max rel err = max|c - ref| / max|ref|):
 *   - masks, iou_pred; grad of every parameter under the "lisa" preset (all
 *     trainable); grad_sparse, grad_image;
 *   - the IoU head and hypernetwork MLPs 1..3 have exactly zero gradient in
 *     the reference and in C (single-mask output, SPEC 2.2);
 *   - central differences of the float32 forward against d(sparse);
 *   - the "anyref" preset: exactly mask_tokens, output_upscaling.* and
 *     output_hypernetworks_mlps.* are trainable, their gradients and d(sparse)
 *     still match the reference with the transformer frozen.
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/sam_decoder.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/sam_decoder.h5"
#define PFX "sam_decoder_parity "

/* float32 against a float64 reference through two blocks, three softmax
 * attentions per block and the upscaling: observed errors are ~1e-6 of each
 * tensor's scale. 1e-4 leaves room for another backend's summation order, not
 * for a wrong formula or a missing path (those move a gradient by >1e-2). */
#define TOL 1e-4

static const sam_decoder_cfg CFG = {
    .dim = 24, .depth = 2, .heads = 4, .mlp_dim = 40, .downsample = 2, .num_mask_tokens = 4,
    .iou_hidden = 16, .H = 6, .W = 8, .n_sparse = 1,
};
enum { NP = 3 };

static h5fixture FX;

static int check_config(void) {
    const fx_int_attr iv[] = {
        {"dim", CFG.dim}, {"depth", CFG.depth}, {"heads", CFG.heads}, {"mlp_dim", CFG.mlp_dim},
        {"downsample", CFG.downsample}, {"num_mask_tokens", CFG.num_mask_tokens},
        {"iou_hidden", CFG.iou_hidden}, {"H", CFG.H}, {"W", CFG.W}, {"n_sparse", CFG.n_sparse}, {"P", NP}};
    return fx_check_config(&FX, iv, sizeof iv / sizeof *iv, NULL, 0);
}

/* With the single-mask output nothing reaches the IoU head or hypernetwork MLPs 1..3. */
static int zero_grad_expected(const char *name) {
    if (!strncmp(name, "mask_decoder.iou_prediction_head.", 33)) return 1;
    const char *h = "mask_decoder.output_hypernetworks_mlps.";
    return !strncmp(name, h, strlen(h)) && name[strlen(h)] != '0';
}

/* softmax(q k^T) is unchanged when every key moves by the same vector, so the
 * gradient of a k_proj bias is zero in exact arithmetic: the reference holds
 * round-off (~1e-15) and the float32 value must be round-off too, measured
 * against the scale of the same projection's weight gradient. */
static int is_k_bias(const char *name) {
    size_t n = strlen(name);
    const size_t k = strlen("k_proj.bias");
    return n > k && !strcmp(name + n - k, "k_proj.bias");
}

static void check_k_bias(const ar_params *ps, const ar_param *p, const char *label, const char *ds,
                         const float *g) {
    char wds[160];
    snprintf(wds, sizeof wds, "%.*sweight", (int)(strlen(ds) - 4), ds);
    char wname[160];
    snprintf(wname, sizeof wname, "%.*sweight", (int)(strlen(p->name) - 4), p->name);
    const ar_param *pw = params_find(ps, wname);
    if (!pw) { t_fail(label, "no weight %s", wname); return; }
    double *ref = fx_alloc(&FX, p->numel * sizeof(double));
    double *wref = fx_alloc(&FX, pw->numel * sizeof(double));
    if (fx_read(&FX, ds, H5T_NATIVE_DOUBLE, ref, p->ndim, p->shape) &&
        fx_read(&FX, wds, H5T_NATIVE_DOUBLE, wref, pw->ndim, pw->shape)) {
        float *h = fx_download(&FX, g, p->numel);
        double mr = 0, mc = 0, sw = 0;
        for (size_t j = 0; j < p->numel; j++) { mr = fmax(mr, fabs(ref[j])); mc = fmax(mc, fabs(h[j])); }
        for (size_t j = 0; j < pw->numel; j++) sw = fmax(sw, fabs(wref[j]));
        char nm[200];
        snprintf(nm, sizeof nm, PFX "%s", label);
        t_check(sw > 0 && mr <= 1e-12 * sw && mc <= TOL * sw, nm,
                "zero by softmax shift invariance: ref max %.1e, C max %.1e (tol %.0e of weight-grad scale %.2e)",
                mr, mc, TOL, sw);
        free(h);
    }
    free(ref);
    free(wref);
}

typedef struct {
    sam_decoder *d;
    const float *img, *pe, *dense;   /* backend */
    float *sparse_dev, *sparse_host, *R;
    size_t nsp, nm;
} fd_ctx;

static double fd_loss(void *vctx) {
    fd_ctx *c = vctx;
    k_upload(c->sparse_dev, c->sparse_host, c->nsp * sizeof(float));
    float *m = sam_decoder_forward(c->d, c->img, c->pe, c->dense, c->sparse_dev, NP);
    float *h = fx_download(&FX, m, c->nm);
    double s = t_dot(h, c->R, c->nm);
    free(h);
    return s;
}

static float *upload_ds(const char *ds, int ndim, const int *shape, size_t n, float **host_out) {
    float *h = fx_alloc(&FX, n * sizeof(float));
    if (!fx_read(&FX, ds, H5T_NATIVE_FLOAT, h, ndim, shape)) { free(h); return NULL; }
    float *dv = k_malloc(n * sizeof(float));
    if (!dv) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    k_upload(dv, h, n * sizeof(float));
    if (host_out) *host_out = h; else free(h);
    return dv;
}

/* The "anyref" preset with the same weights: trainable set, its gradients and d(sparse). */
static void check_anyref(const ar_params *lisa, const float *img, const float *pe, const float *dense,
                         const float *sparse, const float *dmasks) {
    ar_params ps;
    params_init_empty(&ps);
    if (sam_decoder_declare(&CFG, &ps, "anyref") || params_alloc(&ps)) {
        t_fail(PFX "anyref.declare", "%s", ar_error());
        return;
    }
    int wrong = 0, ntrain = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        int want = !strncmp(p->name, "mask_decoder.mask_tokens.", 25) ||
                   !strncmp(p->name, "mask_decoder.output_upscaling.", 30) ||
                   !strncmp(p->name, "mask_decoder.output_hypernetworks_mlps.", 39);
        if (want != p->trainable) { wrong++; printf("#   %s trainable %d\n", p->name, p->trainable); }
        ntrain += p->trainable;
        k_copy(ps.w + p->off, params_w(lisa, p->name), p->numel * sizeof(float));
    }
    t_check(wrong == 0 && ntrain > 0, PFX "anyref.trainable", "%d trainable tensors, %d misclassified", ntrain, wrong);
    sam_decoder *d = sam_decoder_create(&CFG, &ps, NP);
    if (!d) { t_fail(PFX "anyref.create", "%s", ar_error()); params_free(&ps); return; }
    const size_t nsp = (size_t)NP * CFG.n_sparse * CFG.dim;
    float *dsp = k_malloc(nsp * sizeof(float));
    k_zero(dsp, nsp * sizeof(float));
    params_zero_grad(&ps);
    sam_decoder_forward(d, img, pe, dense, sparse, NP);
    sam_decoder_backward(d, dmasks, dsp, NULL);
    const int sshape[3] = {NP, CFG.n_sparse, CFG.dim};
    fx_check(&FX, "anyref.grad_sparse", "grad_sparse", dsp, 3, sshape, TOL);
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable || zero_grad_expected(p->name)) continue;
        char label[160], ds[160];
        snprintf(label, sizeof label, "anyref.grad.%s", p->name);
        snprintf(ds, sizeof ds, "grads/%s", p->name);
        fx_check(&FX, label, ds, params_g(&ps, p->name), p->ndim, p->shape, TOL);
    }
    k_free(dsp);
    sam_decoder_free(d);
    params_free(&ps);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# SAM mask decoder against PyTorch float64 autograd, backend %s\n", k_backend_name());
    if (!check_config()) { fx_close(&FX); return t_exit_code(); }

    ar_params ps;
    params_init_empty(&ps);
    if (sam_decoder_declare(&CFG, &ps, "lisa") || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        fx_close(&FX);
        return t_exit_code();
    }
    const char *const groups[] = {"grads", NULL};
    const int C = CFG.dim, H = CFG.H, W = CFG.W, ns = CFG.n_sparse;
    const int ishape[3] = {C, H, W}, sshape[3] = {NP, ns, C}, mshape[3] = {NP, 4 * H, 4 * W};
    const int ioushape[2] = {NP, CFG.num_mask_tokens};
    const size_t ni = (size_t)C * H * W, nsp = (size_t)NP * ns * C, nm = (size_t)NP * 16 * H * W;
    float *img = NULL, *pe = NULL, *dense = NULL, *sparse = NULL, *dmasks = NULL;
    float *sparse_host = NULL, *R = NULL, *dsp = NULL, *dimg = NULL;
    sam_decoder *d = NULL;
    if (!fx_load_params(&FX, &ps, groups)) goto done;
    img = upload_ds("image_embedding", 3, ishape, ni, NULL);
    pe = upload_ds("image_pe", 3, ishape, ni, NULL);
    dense = upload_ds("dense", 3, ishape, ni, NULL);
    sparse = upload_ds("sparse", 3, sshape, nsp, &sparse_host);
    dmasks = upload_ds("dmasks", 3, mshape, nm, &R);
    if (!img || !pe || !dense || !sparse || !dmasks) goto done;

    /* created for more prompts than used: the forward must honour P */
    d = sam_decoder_create(&CFG, &ps, NP + 2);
    if (!d) { t_fail(PFX "create", "%s", ar_error()); goto done; }
    printf("# activation arena %.2f MiB for %d prompts\n", sam_decoder_activation_bytes(d) / 1048576.0, NP + 2);
    t_check(sam_decoder_forward(d, img, pe, dense, sparse, NP + 3) == NULL, PFX "too_many_prompts",
            "rejected: %s", ar_error());

    dsp = k_malloc(nsp * sizeof(float));
    dimg = k_malloc(ni * sizeof(float));
    if (!dsp || !dimg) { t_fail(PFX "alloc", "out of memory"); goto done; }
    k_zero(dsp, nsp * sizeof(float));
    k_zero(dimg, ni * sizeof(float));
    params_zero_grad(&ps);
    float *masks = sam_decoder_forward(d, img, pe, dense, sparse, NP);
    if (!masks) { t_fail(PFX "forward", "%s", ar_error()); goto done; }
    fx_check(&FX, "masks", "masks", masks, 3, mshape, TOL);
    fx_check(&FX, "iou_pred", "iou_pred", sam_decoder_iou(d), 2, ioushape, TOL);
    sam_decoder_backward(d, dmasks, dsp, dimg);
    k_sync();
    const char *kerr = k_error();
    t_check(kerr == NULL, PFX "backend", "%s", kerr ? kerr : "no backend error");

    int nzero = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        char label[160], ds[160];
        snprintf(label, sizeof label, "grad.%s", p->name);
        snprintf(ds, sizeof ds, "grads/%s", p->name);
        const float *g = params_g(&ps, p->name);
        if (!g) { t_fail(PFX "grad", "%s is not trainable with the lisa preset", p->name); continue; }
        if (is_k_bias(p->name)) { check_k_bias(&ps, p, label, ds, g); continue; }
        if (!zero_grad_expected(p->name)) { fx_check(&FX, label, ds, g, p->ndim, p->shape, TOL); continue; }
        double *ref = fx_alloc(&FX, p->numel * sizeof(double));
        if (fx_read(&FX, ds, H5T_NATIVE_DOUBLE, ref, p->ndim, p->shape)) {
            float *h = fx_download(&FX, g, p->numel);
            double mr = 0, mc = 0;
            for (size_t j = 0; j < p->numel; j++) { mr = fmax(mr, fabs(ref[j])); mc = fmax(mc, fabs(h[j])); }
            char nm[200];
            snprintf(nm, sizeof nm, PFX "%s", label);
            t_check(mr == 0 && mc == 0, nm, "exactly zero (single-mask output): ref max %.1e, C max %.1e", mr, mc);
            nzero++;
            free(h);
        }
        free(ref);
    }
    t_check(nzero == 6 * CFG.num_mask_tokens, PFX "zero_grads", "%d tensors with exactly zero gradient checked", nzero);
    fx_check(&FX, "grad_sparse", "grad_sparse", dsp, 3, sshape, TOL);
    fx_check(&FX, "grad_image", "grad_image", dimg, 3, ishape, TOL);

    /* central differences of the float32 forward against d(sparse): step 2e-3
     * balances curvature (3% at 1e-2) against float32 round-off of the loss
     * (~1e-6 / step); a missing or misrouted path is off by O(1). */
    {
        float *g = fx_download(&FX, dsp, nsp);
        fd_ctx ctx = {d, img, pe, dense, sparse, sparse_host, R, nsp, nm};
        t_gradcheck(PFX "fd.grad_sparse", fd_loss, &ctx, sparse_host, g, nsp, 2e-3f, 3e-2, 24);
        free(g);
    }

    check_anyref(&ps, img, pe, dense, sparse, dmasks);

done:
    sam_decoder_free(d);
    k_free(img); k_free(pe); k_free(dense); k_free(sparse); k_free(dmasks); k_free(dsp); k_free(dimg);
    free(sparse_host); free(R);
    params_free(&ps);
    fx_close(&FX);
    return t_exit_code();
}
