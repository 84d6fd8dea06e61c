/* tests/test_llama_parity.c — the whole LLaMA decoder (model/llama.c) against PyTorch.
 *
 * tests/ref/llama_ref.py (`make fixtures`) writes tests/fixtures/llama.h5: a
 * 2-layer LLaMA-style decoder with GQA and LoRA (dropout on) written
 * independently in PyTorch float64 autograd (HF modeling_llama semantics), with
 * random float32-representable weights under their Hugging Face names, tokens,
 * targets (some -100), the dropout seed, and the reference loss, logits, LoRA
 * dropout masks and the gradient of every parameter.
 *
 * This test declares the same model through the registry, loads every
 * parameter by name (shapes checked both ways), runs llama_forward and
 * llama_backward(1.0) on the active backend and prints one line per tensor:
 *     ok   llama_parity grad.model.layers.0.mlp.up_proj.weight   max rel err 4.1e-07 (tol 1e-04)
 * The error is max|c - ref| / max|ref| (t_max_rel_err_d). Run from the repo root.
 */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/llama.h"
#include "core/error.h"
#include "core/rng.h"
#include "tests/testlib.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/llama.h5"
#define PFX "llama_parity "

/* float32 forward and backward through two layers against a float64 reference:
 * rounding gives ~1e-7 of each tensor's scale per op and the chain (norms,
 * softmaxes, products of weights) amplifies it by a small factor; the largest
 * observed is ~1e-6. 1e-4 leaves room for another backend's summation order,
 * not for a wrong formula (a missing path or a misplaced scale moves a
 * gradient by far more than 1e-2 of its scale). */
#define TOL 1e-4

static const llama_cfg CFG = {
    .vocab = 37, .dim = 32, .layers = 2, .heads = 4, .kv_heads = 2, .mlp_hidden = 48, .max_seq = 16,
    .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 4, .lora_alpha = 8.0f, .lora_dropout = 0.1f,
    .train_base = 1,
};
enum { BATCH = 2, SEQ = 9 };

static hid_t g_file = -1;

static void bad_fixture(const char *what, const char *why) {
    t_fail(PFX "fixtures", "%s: %s in %s (regenerate with `make fixtures`)", what, why, FIXTURE);
}

/* Reads dataset `path` into dst as memtype after checking it has exactly the
 * dimensions shape[ndim]. Prints a FAIL line and returns 0 otherwise. */
static int ds_read(const char *path, hid_t memtype, void *dst, int ndim, const int *shape) {
    if (H5Lexists(g_file, path, H5P_DEFAULT) <= 0) { bad_fixture(path, "dataset missing"); return 0; }
    hid_t d = H5Dopen2(g_file, path, H5P_DEFAULT);
    if (d < 0) { bad_fixture(path, "cannot open dataset"); return 0; }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int nd = H5Sget_simple_extent_ndims(sp);
    int ok = nd == ndim && nd <= 8 && H5Sget_simple_extent_dims(sp, dims, NULL) == nd;
    for (int i = 0; ok && i < nd; i++) ok = dims[i] == (hsize_t)shape[i];
    H5Sclose(sp);
    if (!ok) {
        char want[64] = "", have[64] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? "x" : "", shape[i]);
        for (int i = 0; i < nd && i < 8; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", i ? "x" : "",
                     (unsigned long long)dims[i]);
        char why[160];
        snprintf(why, sizeof why, "shape [%s], the registry expects [%s]", have, want);
        bad_fixture(path, why);
    } else if (H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        bad_fixture(path, "read failed");
        ok = 0;
    }
    H5Dclose(d);
    return ok;
}

static int attr_read(const char *name, hid_t memtype, void *dst) {
    if (H5Aexists(g_file, name) <= 0) { bad_fixture(name, "attribute missing"); return 0; }
    hid_t a = H5Aopen(g_file, name, H5P_DEFAULT);
    int ok = a >= 0 && H5Aread(a, memtype, dst) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) bad_fixture(name, "attribute unreadable");
    return ok;
}

/* The fixture must describe the model this test builds. */
static int check_config(void) {
    struct { const char *n; int v; } iv[] = {
        {"vocab", CFG.vocab}, {"dim", CFG.dim}, {"layers", CFG.layers}, {"heads", CFG.heads},
        {"kv_heads", CFG.kv_heads}, {"mlp_hidden", CFG.mlp_hidden}, {"lora_rank", CFG.lora_rank},
        {"train_base", CFG.train_base}, {"B", BATCH}, {"T", SEQ}};
    struct { const char *n; float v; } fv[] = {
        {"norm_eps", CFG.norm_eps}, {"rope_theta", CFG.rope_theta}, {"lora_alpha", CFG.lora_alpha},
        {"lora_dropout", CFG.lora_dropout}};
    int ok = 1;
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++) {
        int v = 0;
        if (!attr_read(iv[i].n, H5T_NATIVE_INT, &v)) { ok = 0; continue; }
        if (v != iv[i].v) {
            char why[96];
            snprintf(why, sizeof why, "is %d, this test builds %d", v, iv[i].v);
            bad_fixture(iv[i].n, why);
            ok = 0;
        }
    }
    for (size_t i = 0; i < sizeof fv / sizeof *fv; i++) {
        double v = 0;
        if (!attr_read(fv[i].n, H5T_NATIVE_DOUBLE, &v)) { ok = 0; continue; }
        if ((float)v != fv[i].v) {
            char why[96];
            snprintf(why, sizeof why, "is %g, this test builds %g", v, (double)fv[i].v);
            bad_fixture(fv[i].n, why);
            ok = 0;
        }
    }
    return ok;
}

/* H5Literate callback: every tensor in the fixture's params/ must be in the registry. */
static herr_t extra_param(hid_t grp, const char *name, const H5L_info_t *info, void *ps_) {
    (void)grp; (void)info;
    if (!params_find(ps_, name)) {
        char what[160];
        snprintf(what, sizeof what, "params/%s", name);
        bad_fixture(what, "tensor unknown to the llama registry");
        return 1;   /* stop: one such line is enough */
    }
    return 0;
}

/* Loads every registry tensor from params/<name>; returns 1 if all loaded. */
static int load_params(ar_params *ps) {
    int ok = 1;
    size_t maxn = 0;
    for (int i = 0; i < ps->n; i++) if (ps->p[i].numel > maxn) maxn = ps->p[i].numel;
    float *h = malloc(maxn * sizeof(float));
    if (!h) { t_fail(PFX "load", "out of memory"); return 0; }
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char path[160];
        snprintf(path, sizeof path, "params/%s", p->name);
        if (ds_read(path, H5T_NATIVE_FLOAT, h, p->ndim, p->shape))
            k_upload(ps->w + p->off, h, p->numel * sizeof(float));
        else
            ok = 0;
    }
    free(h);
    hid_t g = H5Gopen2(g_file, "params", H5P_DEFAULT);
    if (g < 0) { bad_fixture("params", "group missing"); return 0; }
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, extra_param, ps) != 0) ok = 0;
    H5Gclose(g);
    if (ok) t_ok(PFX "load", "%d tensors (%zu floats) loaded by name, shapes match the registry",
                 ps->n, params_numel(ps, 0));
    return ok;
}

static float *download(const float *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    k_sync();
    k_download(h, dev, n * sizeof(float));
    return h;
}

/* Backend tensor `dev` (shape[ndim]) against reference dataset `ds`. */
static void check(const char *label, const char *ds, const float *dev, int ndim, const int *shape,
                  double tol) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    double *ref = malloc(n * sizeof(double));
    if (!ref) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    if (ds_read(ds, H5T_NATIVE_DOUBLE, ref, ndim, shape)) {
        float *h = download(dev, n);
        double e = t_max_rel_err_d(h, ref, n), mref = 0;
        for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > mref) mref = fabs(ref[i]);
        char nm[200];
        snprintf(nm, sizeof nm, PFX "%s", label);
        t_check(e <= tol && mref > 0, nm, "max rel err %.1e (tol %.0e, ref max %.2e)", e, tol, mref);
        free(h);
    }
    free(ref);
}

/* The LoRA dropout masks llama_forward draws are dropout_mask(N*D, p,
 * rng_derive(seed, 7l)) for q and (.., 7l+2) for v (model/llama.c). The
 * reference reproduces that hash in Python; here the backend's masks must
 * match it bit for bit, otherwise the other comparisons mean nothing. */
static void check_masks(uint64_t seed) {
    const int N = BATCH * SEQ, D = CFG.dim, shape[2] = {N, D};
    const size_t n = (size_t)N * D;
    float *d = k_malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    if (!d || !ref) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    for (int l = 0; l < CFG.layers; l++) {
        for (int j = 0; j < 2; j++) {
            char ds[32], nm[64];
            snprintf(ds, sizeof ds, "masks/%c.%d", j ? 'v' : 'q', l);
            snprintf(nm, sizeof nm, PFX "mask.%c.%d", j ? 'v' : 'q', l);
            dropout_mask(d, n, CFG.lora_dropout, rng_derive(seed, 7 * (uint64_t)l + (j ? 2u : 0u)));
            if (!ds_read(ds, H5T_NATIVE_DOUBLE, ref, 2, shape)) continue;
            float *h = download(d, n);
            size_t diff = 0, drop = 0;
            for (size_t i = 0; i < n; i++) { diff += (double)h[i] != ref[i]; drop += h[i] == 0.0f; }
            t_check(diff == 0, nm, "%zu of %zu entries differ from the reference (bit-exact), %zu dropped",
                    diff, n, drop);
            free(h);
        }
    }
    free(ref);
    k_free(d);
}

int main(void) {
    FILE *fp = fopen(FIXTURE, "rb");
    if (fp) fclose(fp);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_file = fp ? H5Fopen(FIXTURE, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (g_file < 0) {
        t_fail(PFX "fixtures", "%s %s: run from the repo root, regenerate it with `make fixtures`",
               FIXTURE, fp ? "unreadable" : "missing");
        return t_exit_code();
    }
    printf("# llama decoder against PyTorch float64 autograd, backend %s\n", k_backend_name());
    if (!check_config()) { H5Fclose(g_file); return t_exit_code(); }

    ar_params ps;
    params_init_empty(&ps);
    if (llama_declare(&CFG, &ps) || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        H5Fclose(g_file);
        return t_exit_code();
    }
    const int N = BATCH * SEQ, V = CFG.vocab, nshape[1] = {N}, lshape[2] = {N, V}, one[1] = {1};
    int tokens[BATCH * SEQ], targets[BATCH * SEQ];
    uint64_t seed = 0;
    llama *m = NULL;
    if (!load_params(&ps) || !ds_read("tokens", H5T_NATIVE_INT, tokens, 1, nshape) ||
        !ds_read("targets", H5T_NATIVE_INT, targets, 1, nshape) ||
        !attr_read("dropout_seed", H5T_NATIVE_UINT64, &seed))
        goto done;
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V || (targets[i] != -100 && (targets[i] < 0 || targets[i] >= V))) {
            bad_fixture("tokens/targets", "id out of range");
            goto done;
        }
    }
    m = llama_create(&CFG, &ps, BATCH, SEQ);
    if (!m) { t_fail(PFX "create", "%s", ar_error()); goto done; }

    check_masks(seed);

    params_zero_grad(&ps);
    int count = 0, want = 0;
    for (int i = 0; i < N; i++) want += targets[i] != -100;
    float loss = llama_forward(m, tokens, targets, BATCH, SEQ, seed, &count);
    llama_backward(m, 1.0f);
    k_sync();
    const char *kerr = k_error();
    t_check(kerr == NULL, PFX "backend", "%s", kerr ? kerr : "no backend error");
    t_check(count == want, PFX "count", "%d targets counted, %d not -100", count, want);

    double ref_loss;
    if (ds_read("loss", H5T_NATIVE_DOUBLE, &ref_loss, 1, one)) {
        double e = fabs((double)loss - ref_loss) / fabs(ref_loss);
        t_check(e <= TOL, PFX "loss", "max rel err %.1e (tol %.0e)  (%.9g vs %.9g)", e, TOL,
                (double)loss, ref_loss);
    }
    check("logits", "logits", llama_logits(m), 2, lshape, TOL);

    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        char label[160], ds[160];
        snprintf(label, sizeof label, "grad.%s", p->name);
        snprintf(ds, sizeof ds, "grads/%s", p->name);
        const float *g = params_g(&ps, p->name);
        if (!g) { t_fail(PFX "grad", "%s is not trainable with train_base = 1", p->name); continue; }
        check(label, ds, g, p->ndim, p->shape, TOL);
    }

done:
    llama_free(m);
    params_free(&ps);
    H5Fclose(g_file);
    return t_exit_code();
}
