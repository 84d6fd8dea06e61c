/* tests/h5fixture.c — see tests/h5fixture.h. */
#include "tests/h5fixture.h"
#include "kernels/kernels.h"
#include "tests/testlib.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fx_name(char *buf, size_t len, const h5fixture *fx, const char *label) {
    snprintf(buf, len, "%s%s", fx->prefix, label);
}

int fx_open(h5fixture *fx, const char *path, const char *prefix) {
    fx->path = path;
    fx->prefix = prefix;
    fx->loose = NULL;
    fx->loose_tol = 0;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    fx->file = fp ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (fx->file < 0) {
        char nm[128];
        fx_name(nm, sizeof nm, fx, "fixtures");
        t_fail(nm, "%s %s: run from the repo root, regenerate it with `make fixtures`", path,
               fp ? "unreadable" : "missing");
        return 0;
    }
    return 1;
}

void fx_close(h5fixture *fx) {
    if (fx->file >= 0) H5Fclose(fx->file);
    fx->file = -1;
}

void fx_bad(const h5fixture *fx, const char *what, const char *why) {
    char nm[128];
    fx_name(nm, sizeof nm, fx, "fixtures");
    t_fail(nm, "%s: %s in %s (regenerate with `make fixtures`)", what, why, fx->path);
}

int fx_read(const h5fixture *fx, const char *ds, hid_t memtype, void *dst, int ndim, const int *shape) {
    if (H5Lexists(fx->file, ds, H5P_DEFAULT) <= 0) { fx_bad(fx, ds, "dataset missing"); return 0; }
    hid_t d = H5Dopen2(fx->file, ds, H5P_DEFAULT);
    if (d < 0) { fx_bad(fx, ds, "cannot open dataset"); return 0; }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int nd = H5Sget_simple_extent_ndims(sp);
    int got = nd >= 0 && nd <= 8 && H5Sget_simple_extent_dims(sp, dims, NULL) == nd;
    int ok = got && nd == ndim;
    for (int i = 0; ok && i < nd; i++) ok = dims[i] == (hsize_t)shape[i];
    H5Sclose(sp);
    if (!ok) {
        char want[64] = "", have[64] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? "x" : "", shape[i]);
        if (!got) snprintf(have, sizeof have, "%d dimensions", nd);
        for (int i = 0; got && i < nd; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", i ? "x" : "",
                     (unsigned long long)dims[i]);
        char why[160];
        snprintf(why, sizeof why, "shape [%s], this test expects [%s]", have, want);
        fx_bad(fx, ds, why);
    } else if (H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        fx_bad(fx, ds, "read failed");
        ok = 0;
    }
    H5Dclose(d);
    return ok;
}

int fx_len(const h5fixture *fx, const char *ds) {
    if (H5Lexists(fx->file, ds, H5P_DEFAULT) <= 0) { fx_bad(fx, ds, "dataset missing"); return -1; }
    hid_t d = H5Dopen2(fx->file, ds, H5P_DEFAULT);
    if (d < 0) { fx_bad(fx, ds, "cannot open dataset"); return -1; }
    hid_t sp = H5Dget_space(d);
    hsize_t dim = 0;
    int ok = H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &dim, NULL) == 1;
    H5Sclose(sp);
    H5Dclose(d);
    if (!ok) { fx_bad(fx, ds, "not 1-D"); return -1; }
    return (int)dim;
}

int fx_attr(const h5fixture *fx, const char *name, hid_t memtype, void *dst) {
    if (H5Aexists(fx->file, name) <= 0) { fx_bad(fx, name, "attribute missing"); return 0; }
    hid_t a = H5Aopen(fx->file, name, H5P_DEFAULT);
    int ok = a >= 0 && H5Aread(a, memtype, dst) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) fx_bad(fx, name, "attribute unreadable");
    return ok;
}

int fx_check_config(const h5fixture *fx, const fx_int_attr *iv, size_t ni, const fx_float_attr *fv,
                    size_t nf) {
    int ok = 1;
    for (size_t i = 0; i < ni; i++) {
        int v = 0;
        if (!fx_attr(fx, iv[i].name, H5T_NATIVE_INT, &v)) { ok = 0; continue; }
        if (v != iv[i].value) {
            char why[96];
            snprintf(why, sizeof why, "is %d, this test uses %d", v, iv[i].value);
            fx_bad(fx, iv[i].name, why);
            ok = 0;
        }
    }
    for (size_t i = 0; i < nf; i++) {
        double v = 0;
        if (!fx_attr(fx, fv[i].name, H5T_NATIVE_DOUBLE, &v)) { ok = 0; continue; }
        if ((float)v != fv[i].value) {
            char why[96];
            snprintf(why, sizeof why, "is %g, this test uses %g", v, (double)fv[i].value);
            fx_bad(fx, fv[i].name, why);
            ok = 0;
        }
    }
    return ok;
}

/* H5Literate over one group: every tensor in params/ must be in the registry,
 * every tensor in a gradient group (grads/, final/) trainable in it. */
typedef struct { const h5fixture *fx; const ar_params *ps; const char *group; int grads; } fx_iter;

static herr_t fx_unknown(hid_t grp, const char *name, const H5L_info_t *info, void *it_) {
    (void)grp; (void)info;
    const fx_iter *it = it_;
    if (it->grads ? params_g(it->ps, name) != NULL : params_find(it->ps, name) != NULL) return 0;
    char what[160];
    snprintf(what, sizeof what, "%s/%s", it->group, name);
    fx_bad(it->fx, what, it->grads ? "trainable in the reference, not in the registry"
                                   : "tensor unknown to the registry");
    return 1;   /* stop: one such line is enough */
}

static int fx_iterate(const h5fixture *fx, const ar_params *ps, const char *group, int grads) {
    hid_t g = H5Gopen2(fx->file, group, H5P_DEFAULT);
    if (g < 0) { fx_bad(fx, group, "group missing"); return 0; }
    fx_iter it = {fx, ps, group, grads};
    int ok = H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, fx_unknown, &it) == 0;
    H5Gclose(g);
    return ok;
}

int fx_load_params(const h5fixture *fx, ar_params *ps, const char *const *grad_groups) {
    char nm[128];
    fx_name(nm, sizeof nm, fx, "load");
    int ok = 1;
    size_t maxn = 1;
    for (int i = 0; i < ps->n; i++) if (ps->p[i].numel > maxn) maxn = ps->p[i].numel;
    float *h = malloc(maxn * sizeof(float));
    if (!h) { t_fail(nm, "out of memory"); return 0; }
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char ds[160];
        snprintf(ds, sizeof ds, "params/%s", p->name);
        if (fx_read(fx, ds, H5T_NATIVE_FLOAT, h, p->ndim, p->shape))
            params_upload(ps, p, h);   /* a tensor stored in 16 bits is rounded as the loaders round it */
        else
            ok = 0;
    }
    free(h);
    ok = fx_iterate(fx, ps, "params", 0) && ok;
    for (const char *const *g = grad_groups; g && *g; g++) ok = fx_iterate(fx, ps, *g, 1) && ok;
    if (ok) t_ok(nm, "%d tensors (%zu floats) loaded by name, shapes match the registry", ps->n,
                 params_numel(ps, 0));
    return ok;
}

void *fx_alloc(const h5fixture *fx, size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { printf("FAIL %sout of memory\n", fx->prefix); exit(1); }
    return p;
}

float *t_dev_copy(const float *host, size_t n) {
    float *d = k_malloc((n ? n : 1) * sizeof(float));
    if (!d) { printf("FAIL out of backend memory (%zu floats)\n", n); exit(1); }
    k_upload(d, host, n * sizeof(float));
    return d;
}

float *t_dev_mask(size_t n, uint64_t seed, float p) {
    float *h = t_alloc(n ? n : 1);
    t_fill_uniform(h, n, 0.0f, 1.0f, seed);
    for (size_t i = 0; i < n; i++) h[i] = h[i] < p ? 1.0f : 0.0f;
    float *d = t_dev_copy(h, n);
    free(h);
    return d;
}

int t_round_like(ar_params *a, const ar_params *b) {
    int n16 = 0;
    for (int i = 0; i < b->n; i++) {
        if (!b->p[i].half) continue;
        const ar_param *p = params_find(a, b->p[i].name);
        if (!p || p->numel != b->p[i].numel) continue;
        float *h = t_alloc(p->numel);
        params_download(b, &b->p[i], h);
        params_upload(a, p, h);
        free(h);
        n16++;
    }
    return n16;
}

void t_check_half(const char *name, const char *fmt, float *(*fwd)(void *ctx, int which), void *ctx, size_t n,
                  int n16, int want16, const ar_params *a, const ar_params *b) {
    float *oa = NULL, *ob = NULL, *og = NULL, *r;
    if ((r = fwd(ctx, 0))) oa = t_host_copy(r, n);
    if ((r = fwd(ctx, 1))) ob = t_host_copy(r, n);
    char mode0[16], nm[160];
    snprintf(mode0, sizeof mode0, "%s", k_gemm_mode());
    if (!k_set_gemm_mode(fmt) && (r = fwd(ctx, 1))) og = t_host_copy(r, n);
    k_set_gemm_mode(mode0);
    const int cpu = !strcmp(k_backend_name(), "cpu");
    const double e = oa && ob ? t_max_rel_err(ob, oa, n) : 1, eg = oa && og ? t_max_rel_err(og, oa, n) : 1;
    snprintf(nm, sizeof nm, "%s %s weights", name, fmt);
    t_check(oa && ob && n16 == want16 && e <= (cpu ? 0.0 : 1e-6) && params_weight_bytes(b) < params_weight_bytes(a), nm,
            "%d tensors in 16 bits (want %d); output vs the fp32 module over the rounded weights: max rel err %.1e; "
            "weights %zu -> %zu bytes%s%s", n16, want16, e, params_weight_bytes(a), params_weight_bytes(b),
            oa && ob ? "" : ": ", oa && ob ? "" : ar_error());
    snprintf(nm, sizeof nm, "%s %s weights, %s GEMMs", name, fmt, fmt);
    t_check(og && eg > 0 && eg <= 2e-2, nm, "output vs fp32 products: max rel err %.1e (limit 2e-2, > 0: the "
            "activations were rounded)", eg);
    free(oa); free(ob); free(og);
}

float *t_host_copy(const float *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) { printf("FAIL out of memory (%zu floats)\n", n); exit(1); }
    k_sync();
    k_download(h, dev, n * sizeof(float));
    return h;
}

float *fx_download(const h5fixture *fx, const float *dev, size_t n) {
    float *h = fx_alloc(fx, n * sizeof(float));
    k_sync();
    k_download(h, dev, n * sizeof(float));
    return h;
}

void fx_report(const h5fixture *fx, const char *label, const float *h, const double *ref, size_t n,
               double tol) {
    double e = t_max_rel_err_d(h, ref, n), mref = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > mref) mref = fabs(ref[i]);
    char nm[256];
    fx_name(nm, sizeof nm, fx, label);
    t_check(e <= tol && mref > 0, nm, "max rel err %.1e (tol %.0e, ref max %.2e)", e, tol, mref);
}

void fx_check(const h5fixture *fx, const char *label, const char *ds, const float *dev, int ndim,
              const int *shape, double tol) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    double *ref = fx_alloc(fx, n * sizeof(double));
    if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, ref, ndim, shape)) {
        float *h = fx_download(fx, dev, n);
        fx_report(fx, label, h, ref, n, tol);
        free(h);
    }
    free(ref);
}

void fx_check_step(const h5fixture *fx, const char *grp, const ar_params *ps, const double got[4],
                   double loss_tol, double grad_tol, int *n_trainable, int *n_zero, double *worst) {
    char nm[200], ds[300];
    double ref[4];
    const int four[1] = {4};
    snprintf(ds, sizeof ds, "%s/losses", grp);
    if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, ref, 1, four)) {
        const char *lname[4] = {"ce", "bce", "dice", "total"};
        for (int i = 0; i < 4; i++) {
            double e = fabs(got[i] - ref[i]) / fabs(ref[i]);
            snprintf(nm, sizeof nm, "%s%s %s", fx->prefix, grp, lname[i]);
            t_check(e <= loss_tol, nm, "%.9f vs torch %.9f  rel err %.1e (tol %.0e)", got[i], ref[i], e, loss_tol);
        }
    }
    *n_trainable = *n_zero = 0;
    *worst = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (!p->trainable) continue;
        (*n_trainable)++;
        snprintf(ds, sizeof ds, "%s/grads/%s", grp, p->name);
        snprintf(nm, sizeof nm, "%s grad.%s", grp, p->name);
        double *r = fx_alloc(fx, p->numel * sizeof(double));
        if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, r, p->ndim, p->shape)) {
            float *h = fx_download(fx, ps->g + p->goff, p->numel);
            int zr = 1;
            for (size_t j = 0; j < p->numel; j++) zr &= r[j] == 0.0;
            if (zr) {   /* e.g. the hypernetwork MLPs 1..3 of a single-mask decoder */
                int zc = 1;
                for (size_t j = 0; j < p->numel; j++) zc &= h[j] == 0.0f;
                char full[400];
                snprintf(full, sizeof full, "%s%s", fx->prefix, nm);
                t_check(zc, full, "exactly zero gradient on both sides: C %s", zc ? "yes" : "NO");
                (*n_zero)++;
            } else {
                double e = t_max_rel_err_d(h, r, p->numel), tol = grad_tol;
                for (const char *const *l = fx->loose; l && *l; l++)
                    if (!strncmp(p->name, *l, strlen(*l))) tol = fx->loose_tol;
                if (e > *worst) *worst = e;
                fx_report(fx, nm, h, r, p->numel, tol);
            }
            free(h);
        }
        free(r);
    }
}

int h5_read_floats(hid_t loc, const char *name, float **out, hssize_t *n) {
    *out = NULL;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    *n = H5Sget_simple_extent_npoints(sp);
    *out = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(float));
    herr_t r = *out ? H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) : -1;
    H5Sclose(sp);
    H5Dclose(d);
    return r < 0 ? -1 : 0;
}
