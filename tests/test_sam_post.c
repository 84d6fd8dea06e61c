/* tests/test_sam_post.c — SAM mask post-processing (model/sam_post.c).
 *
 * 1. sam_resize_shape against ResizeLongestSide.get_preprocess_shape for a
 *    list of sizes (fixture), exact.
 * 2. Finite differences at small sizes (low-res 16x16, "1024" = 64, original
 *    37x23 and 23x37 — a partial-width crop and a full-width one — and the
 *    AVSBench variant 37x23 -> mask 19x29): the map is linear, so central
 *    differences of L = Σ out·r with a large step are exact up to rounding.
 *    Backward also must accumulate (run twice = 2x).
 * 3. PyTorch float64 parity at the real sizes, 256 -> 1024 -> crop -> 640x480
 *    (2 masks), 480x640, and 480x640 -> AVSBench mask 224x224:
 *    tests/ref/sam_post_ref.py writes tests/fixtures/sam_post.h5 with the loss,
 *    the row and column sums and a strided subsample of the output and of the
 *    input gradient; the input and r come from integer formulas evaluated here
 *    too. Tolerance 5e-5 of each tensor's scale: float32 bilinear source
 *    coordinates ((dst + 0.5) * scale - 0.5 at 1024 px) are off by ~1e-4 px, and
 *    the sawtooth input has slopes of ~1 per px, so each float32 resize chain
 *    lands ~1e-5 from float64 (PyTorch's own float32 F.interpolate of the same
 *    chain: 6.2e-6, 6.4e-6, 1.5e-5 of scale); observed here 6e-6 .. 2e-5. The
 *    loss is compared relative to Σ|out·r| (it is a sum with cancellation).
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/sam_post.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/sam_post.h5"
#define PFX "sam_post "
#define TOL 5e-5

/* ---------------------------------------------------------------- finite differences */
typedef struct {
    sam_post_shape sh;
    float *in, *out, *scratch, *r;
} fd_ctx;

static double fd_loss(void *vc) {
    fd_ctx *c = vc;
    sam_post_forward(&c->sh, c->out, c->scratch, c->in);
    return t_dot(c->out, c->r, sam_post_out_floats(&c->sh));
}

static void fd_case(const char *name, int H0, int W0, int Hm, int Wm, uint64_t seed) {
    fd_ctx c;
    if (sam_post_init(&c.sh, 2, 16, 16, 64, H0, W0, Hm, Wm)) { t_fail(name, "%s", ar_error()); return; }
    const size_t nin = (size_t)2 * 16 * 16, nout = sam_post_out_floats(&c.sh);
    c.in = t_alloc(nin);
    c.out = t_alloc(nout);
    c.r = t_alloc(nout);
    c.scratch = t_alloc(sam_post_scratch_floats(&c.sh));
    float *g = t_alloc(nin), *g2 = t_alloc(nin);
    t_fill_normal(c.in, nin, 1.0f, seed);
    t_fill_normal(c.r, nout, 1.0f, seed + 1);
    sam_post_forward(&c.sh, c.out, c.scratch, c.in);
    sam_post_backward(&c.sh, g, c.scratch, c.r);
    t_gradcheck(name, fd_loss, &c, c.in, g, nin, 0.5f, 1e-4, nin);
    /* accumulation: a second backward adds the same gradient again */
    memcpy(g2, g, nin * sizeof(float));
    sam_post_backward(&c.sh, g2, c.scratch, c.r);
    double e = 0.0;
    for (size_t i = 0; i < nin; i++) e = fmax(e, fabs(g2[i] - 2.0f * g[i]));
    char nm[96];
    snprintf(nm, sizeof nm, "%s accumulate", name);
    t_check(e <= 1e-5, nm, "second backward adds the same gradient (max dev %.1e)", e);
    free(c.in); free(c.out); free(c.r); free(c.scratch); free(g); free(g2);
}

/* ---------------------------------------------------------------- parity */
static int group_int(const h5fixture *fx, const char *grp, const char *attr, int *v) {
    if (!H5Aexists_by_name(fx->file, grp, attr, H5P_DEFAULT)) { fx_bad(fx, grp, "missing attribute"); return 0; }
    hid_t a = H5Aopen_by_name(fx->file, grp, attr, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Aread(a, H5T_NATIVE_INT, v) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) fx_bad(fx, grp, "unreadable attribute");
    return ok;
}

static void parity_case(h5fixture *fx, const char *grp, int P, int H0, int W0, int Hm, int Wm) {
    sam_post_shape sh;
    if (sam_post_init(&sh, P, 256, 256, 1024, H0, W0, Hm, Wm)) { t_fail(PFX "parity", "%s", ar_error()); return; }
    Hm = sh.Hm;
    Wm = sh.Wm;
    const char *keys[] = {"P", "Hl", "Wl", "S", "H0", "W0", "Hm", "Wm", "rh", "rw"};
    const int want[] = {sh.P, sh.Hl, sh.Wl, sh.S, sh.H0, sh.W0, sh.Hm, sh.Wm, sh.rh, sh.rw};
    for (int k = 0; k < 10; k++) {
        int v;
        if (!group_int(fx, grp, keys[k], &v)) return;
        if (v != want[k]) {
            char why[96];
            snprintf(why, sizeof why, "%s = %d, the test builds %d", keys[k], v, want[k]);
            fx_bad(fx, grp, why);
            return;
        }
    }
    const size_t nin = (size_t)P * 256 * 256, nout = sam_post_out_floats(&sh);
    float *hin = t_alloc(nin), *hr = t_alloc(nout);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < 256; i++)
            for (int j = 0; j < 256; j++)
                hin[((size_t)p * 256 + i) * 256 + j] = (float)(((37 * i + 11 * j + 5 * p) % 23) - 11) / 4.0f;
    for (int p = 0; p < P; p++)
        for (int y = 0; y < Hm; y++)
            for (int x = 0; x < Wm; x++)
                hr[((size_t)p * Hm + y) * Wm + x] = (float)(((7 * y + 13 * x + 3 * p) % 17) - 8) / 8.0f;
    float *in = k_malloc(nin * 4), *out = k_malloc(nout * 4), *r = k_malloc(nout * 4), *din = k_malloc(nin * 4);
    float *scratch = k_malloc(sam_post_scratch_floats(&sh) * 4);
    if (!in || !out || !r || !din || !scratch) { t_fail(PFX "parity", "out of memory"); exit(1); }
    k_upload(in, hin, nin * 4);
    k_upload(r, hr, nout * 4);
    k_zero(din, nin * 4);
    sam_post_forward(&sh, out, scratch, in);
    sam_post_backward(&sh, din, scratch, r);
    float *ho = fx_download(fx, out, nout), *hd = fx_download(fx, din, nin);

    /* summaries, as the reference stores them */
    double loss = t_dot(ho, hr, nout), loss_abs = 0.0;
    for (size_t k = 0; k < nout; k++) loss_abs += fabs((double)ho[k] * hr[k]);
    const int osH = (Hm + 15) / 16, osW = (Wm + 15) / 16;
    float *osub = t_alloc((size_t)P * osH * osW), *orow = t_alloc((size_t)P * Hm), *ocol = t_alloc((size_t)P * Wm);
    float *dsub = t_alloc((size_t)P * 32 * 32), *drow = t_alloc((size_t)P * 256), *dcol = t_alloc((size_t)P * 256);
    for (int p = 0; p < P; p++) {
        for (int y = 0; y < Hm; y++) {
            double s = 0;
            for (int x = 0; x < Wm; x++) s += ho[((size_t)p * Hm + y) * Wm + x];
            orow[(size_t)p * Hm + y] = (float)s;
        }
        for (int x = 0; x < Wm; x++) {
            double s = 0;
            for (int y = 0; y < Hm; y++) s += ho[((size_t)p * Hm + y) * Wm + x];
            ocol[(size_t)p * Wm + x] = (float)s;
        }
        for (int y = 0; y < osH; y++)
            for (int x = 0; x < osW; x++)
                osub[((size_t)p * osH + y) * osW + x] = ho[((size_t)p * Hm + 16 * y) * Wm + 16 * x];
        for (int i = 0; i < 256; i++) {
            double sr = 0, sc = 0;
            for (int j = 0; j < 256; j++) {
                sr += hd[((size_t)p * 256 + i) * 256 + j];
                sc += hd[((size_t)p * 256 + j) * 256 + i];
            }
            drow[(size_t)p * 256 + i] = (float)sr;
            dcol[(size_t)p * 256 + i] = (float)sc;
        }
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                dsub[((size_t)p * 32 + y) * 32 + x] = hd[((size_t)p * 256 + 8 * y) * 256 + 8 * x];
    }
    struct { const char *ds; float *h; int ndim, shape[3]; } cmp[] = {
        {"out_sub", osub, 3, {P, osH, osW}}, {"out_rows", orow, 2, {P, Hm}}, {"out_cols", ocol, 2, {P, Wm}},
        {"din_sub", dsub, 3, {P, 32, 32}},   {"din_rows", drow, 2, {P, 256}}, {"din_cols", dcol, 2, {P, 256}},
    };
    for (size_t k = 0; k < sizeof cmp / sizeof *cmp; k++) {
        char ds[64], label[64];
        snprintf(ds, sizeof ds, "%s/%s", grp, cmp[k].ds);
        snprintf(label, sizeof label, "%s.%s", grp, cmp[k].ds);
        size_t n = 1;
        for (int d = 0; d < cmp[k].ndim; d++) n *= cmp[k].shape[d];
        double *ref = fx_alloc(fx, n * sizeof(double));
        if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, ref, cmp[k].ndim, cmp[k].shape))
            fx_report(fx, label, cmp[k].h, ref, n, TOL);
        free(ref);
    }
    double ref_loss;
    char ds[64], label[64];
    const int one[1] = {1};
    snprintf(ds, sizeof ds, "%s/loss", grp);
    snprintf(label, sizeof label, PFX "%s.loss", grp);
    if (fx_read(fx, ds, H5T_NATIVE_DOUBLE, &ref_loss, 1, one)) {
        double e = fabs(loss - ref_loss) / fmax(loss_abs, 1e-30);
        t_check(e <= TOL, label, "err %.1e of sum|out*r| (tol %.0e) (%.9g vs %.9g)", e, TOL, loss, ref_loss);
    }
    free(osub); free(orow); free(ocol); free(dsub); free(drow); free(dcol);
    free(ho); free(hd); free(hin); free(hr);
    k_free(in); k_free(out); k_free(r); k_free(din); k_free(scratch);
}

int main(void) {
    printf("# SAM mask post-processing, backend %s\n", k_backend_name());
    fd_case(PFX "fd 16->64->crop 64x40->37x23", 37, 23, 0, 0, 11);
    fd_case(PFX "fd 16->64->crop 40x64->23x37", 23, 37, 0, 0, 12);
    fd_case(PFX "fd avs 37x23->19x29", 37, 23, 19, 29, 13);
    sam_post_shape bad;
    t_check(sam_post_init(&bad, 1, 0, 16, 64, 5, 5, 0, 0) == -1, PFX "errors", "zero size rejected: %s",
            ar_error());

    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return t_exit_code();
    int n = -1;
    hid_t d = H5Dopen2(fx.file, "resize_shapes", H5P_DEFAULT);
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        hsize_t dims[2] = {0, 0};
        if (H5Sget_simple_extent_ndims(sp) == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Sclose(sp);
        H5Dclose(d);
        n = dims[1] == 5 ? (int)dims[0] : -1;
    }
    if (n <= 0) fx_bad(&fx, "resize_shapes", "not an [K, 5] table");
    else {
        int *rs = fx_alloc(&fx, (size_t)n * 5 * sizeof(int)), shape[2] = {n, 5}, wrong = 0;
        if (fx_read(&fx, "resize_shapes", H5T_NATIVE_INT, rs, 2, shape)) {
            for (int k = 0; k < n; k++) {
                int rh, rw;
                sam_resize_shape(rs[5 * k], rs[5 * k + 1], rs[5 * k + 2], &rh, &rw);
                if (rh != rs[5 * k + 3] || rw != rs[5 * k + 4]) {
                    printf("#   %dx%d (S=%d): got %dx%d, want %dx%d\n", rs[5 * k], rs[5 * k + 1], rs[5 * k + 2],
                           rh, rw, rs[5 * k + 3], rs[5 * k + 4]);
                    wrong++;
                }
            }
            t_check(wrong == 0, PFX "resize_shape", "%d of %d sizes equal get_preprocess_shape", n - wrong, n);
        }
        free(rs);
    }
    parity_case(&fx, "portrait", 2, 640, 480, 0, 0);
    parity_case(&fx, "landscape", 1, 480, 640, 0, 0);
    parity_case(&fx, "avs", 1, 480, 640, 224, 224);
    fx_close(&fx);
    return t_exit_code();
}
