/* tests/test_parity.c — every primitive of kernels/kernels.h against PyTorch.
 *
 * tests/ref/kernels_ref.py (`make fixtures`) builds each op in PyTorch float64
 * with autograd and writes tests/fixtures/kernels.h5: one group per case with
 * the inputs (float32-representable values), the upstream gradients r_<out>,
 * the outputs and every gradient grad_<in>, and the shape parameters as
 * attributes. This test reads a case, runs the float32 kernels of the active
 * backend on the same inputs (through k_malloc/k_upload, so the CUDA build is
 * checked the same way), backpropagates r_<out> into zeroed gradient buffers
 * and prints one line per tensor:
 *     ok   parity <case>.<tensor>   max rel err 3.1e-07 (tol 1e-04)
 * The error is max|c - ref| / max|ref| (t_max_rel_err_d). Run from the repo root.
 */
#include "kernels/kernels.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/kernels.h5"

/* float32 against a float64 reference: rounding alone gives ~1e-7 relative to
 * the tensor's scale, and the longest reductions here (V=1000 log-sum-exp,
 * 768-term patch-embedding dot products, weight gradients summed over every
 * output pixel) stay below ~1e-6 with float32 accumulation. 1e-4 leaves room
 * for another backend's summation order, not for a wrong formula: each case's
 * inputs are chosen so that a misplaced eps or a missing gradient path moves
 * the result by more than 1e-2 of its scale. */
#define TOL 1e-4

/* ---------------------------------------------------------------- fixtures */

#define MAX_BUFS 64
typedef struct {
    char name[64];
    hid_t g;
    int bad;              /* a dataset or attribute was missing or mis-sized */
    void *dev[MAX_BUFS];  /* backend buffers, freed by case_close */
    int ndev;
} Case;

/* Only the file is shared (tests/h5fixture.h): the cases below read their
 * datasets by element count and name their failures per case. */
static h5fixture FX;

static Case *case_open(const char *name) {
    if (H5Lexists(FX.file, name, H5P_DEFAULT) <= 0) {
        t_fail("parity fixtures", "case %s missing from %s: regenerate it with `make fixtures`",
               name, FIXTURE);
        return NULL;
    }
    Case *c = calloc(1, sizeof *c);
    if (!c) { t_fail("parity fixtures", "out of memory"); return NULL; }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->g = H5Gopen2(FX.file, name, H5P_DEFAULT);
    if (c->g < 0) { t_fail("parity fixtures", "cannot open group %s", name); free(c); return NULL; }
    return c;
}

static void case_close(Case *c) {
    for (int i = 0; i < c->ndev; i++) k_free(c->dev[i]);
    H5Gclose(c->g);
    free(c);
}

static void tname(char *buf, size_t len, const Case *c, const char *tensor) {
    snprintf(buf, len, "parity %s.%s", c->name, tensor);
}

static void case_bad(Case *c, const char *what, const char *why) {
    char nm[256];
    tname(nm, sizeof nm, c, what);
    t_fail(nm, "%s in %s (regenerate with `make fixtures`)", why, FIXTURE);
    c->bad = 1;
}

/* Reads dataset `ds` of exactly n elements into dst, converted to memtype. */
static int ds_read(Case *c, const char *ds, hid_t memtype, void *dst, size_t n) {
    if (H5Lexists(c->g, ds, H5P_DEFAULT) <= 0) { case_bad(c, ds, "dataset missing"); return 0; }
    hid_t d = H5Dopen2(c->g, ds, H5P_DEFAULT);
    if (d < 0) { case_bad(c, ds, "cannot open dataset"); return 0; }
    hid_t sp = H5Dget_space(d);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    int ok = np >= 0 && (size_t)np == n;
    if (!ok) {
        char why[96];
        snprintf(why, sizeof why, "has %lld elements, expected %zu", (long long)np, n);
        case_bad(c, ds, why);
    } else if (H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        case_bad(c, ds, "read failed");
        ok = 0;
    }
    H5Dclose(d);
    return ok;
}

static double attr(Case *c, const char *name) {
    double v = 0;
    if (H5Aexists(c->g, name) <= 0) { case_bad(c, name, "attribute missing"); return 0; }
    hid_t a = H5Aopen(c->g, name, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) case_bad(c, name, "attribute unreadable");
    if (a >= 0) H5Aclose(a);
    return v;
}
static int ai(Case *c, const char *name) { return (int)lrint(attr(c, name)); }
static float af(Case *c, const char *name) { return (float)attr(c, name); }

static void *dev_alloc(Case *c, size_t bytes) {
    void *p = k_malloc(bytes ? bytes : 1);
    if (!p || c->ndev == MAX_BUFS) {
        printf("FAIL parity %s: out of backend memory\n", c->name);
        exit(1);
    }
    k_zero(p, bytes ? bytes : 1);
    c->dev[c->ndev++] = p;
    return p;
}

/* A zeroed backend buffer of n floats (outputs, gradient buffers, scratch). */
static float *zbuf(Case *c, size_t n) { return dev_alloc(c, n * sizeof(float)); }

/* Dataset -> backend float buffer (the file holds float32-representable
 * doubles, so the conversion is exact). Zeros if the dataset is unusable. */
static float *in_f(Case *c, const char *ds, size_t n) {
    float *d = zbuf(c, n), *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) { printf("FAIL parity %s: out of memory\n", c->name); exit(1); }
    if (ds_read(c, ds, H5T_NATIVE_FLOAT, h, n)) k_upload(d, h, n * sizeof(float));
    free(h);
    return d;
}
static int *in_i(Case *c, const char *ds, size_t n) {
    int *d = dev_alloc(c, n * sizeof(int)), *h = malloc((n ? n : 1) * sizeof(int));
    if (!h) { printf("FAIL parity %s: out of memory\n", c->name); exit(1); }
    if (ds_read(c, ds, H5T_NATIVE_INT, h, n)) k_upload(d, h, n * sizeof(int));
    free(h);
    return d;
}
static double *ref_d(Case *c, const char *ds, size_t n) {
    double *h = malloc((n ? n : 1) * sizeof(double));
    if (!h) { printf("FAIL parity %s: out of memory\n", c->name); exit(1); }
    if (!ds_read(c, ds, H5T_NATIVE_DOUBLE, h, n)) { free(h); return NULL; }
    return h;
}
static float *download(const float *dev, size_t n) { return fx_download(&FX, dev, n); }

/* Compares backend tensor `dev` with factor * reference dataset `ds`. */
static void check_as(Case *c, const char *label, const char *ds, const float *dev, size_t n,
                     double factor, double tol) {
    if (c->bad) return;
    double *ref = ref_d(c, ds, n);
    if (!ref) return;
    for (size_t i = 0; i < n; i++) ref[i] *= factor;
    float *h = download(dev, n);
    char nm[256];
    tname(nm, sizeof nm, c, label);
    double e = t_max_rel_err_d(h, ref, n);
    t_check(e <= tol, nm, "max rel err %.1e (tol %.0e)", e, tol);
    free(h);
    free(ref);
}
static void check(Case *c, const char *ds, const float *dev, size_t n, double tol) {
    check_as(c, ds, ds, dev, n, 1.0, tol);
}
/* A scalar (a loss value) against its one-element reference. */
static void check_val(Case *c, const char *ds, double v, double tol) {
    if (c->bad) return;
    double *ref = ref_d(c, ds, 1);
    if (!ref) return;
    char nm[256];
    tname(nm, sizeof nm, c, ds);
    double e = fabs(v - ref[0]) / (fabs(ref[0]) > 1e-12 ? fabs(ref[0]) : 1e-12);
    t_check(e <= tol, nm, "max rel err %.1e (tol %.0e)  (%.9g vs %.9g)", e, tol, v, ref[0]);
    free(ref);
}

#define SZ(a, b) ((size_t)(a) * (size_t)(b))

/* ---------------------------------------------------------------- dense algebra */

static void run_matmul(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int M = ai(c, "M"), N = ai(c, "N"), K = ai(c, "K"), ta = ai(c, "ta"), tb = ai(c, "tb");
    if (!c->bad) {
        float *A = in_f(c, "A", SZ(M, K)), *B = in_f(c, "B", SZ(K, N)), *r = in_f(c, "r_C", SZ(M, N));
        float *C = zbuf(c, SZ(M, N)), *dA = zbuf(c, SZ(M, K)), *dB = zbuf(c, SZ(K, N));
        matmul_forward(C, A, B, M, N, K, ta, tb);
        matmul_backward(dA, dB, r, A, B, M, N, K, ta, tb);
        check(c, "C", C, SZ(M, N), TOL);
        check(c, "grad_A", dA, SZ(M, K), TOL);
        check(c, "grad_B", dB, SZ(K, N), TOL);
    }
    case_close(c);
}

static void run_matmul_gemm(void) {
    Case *c = case_open("matmul_gemm");
    if (!c) return;
    int M = ai(c, "M"), N = ai(c, "N"), K = ai(c, "K"), ta = ai(c, "ta"), tb = ai(c, "tb");
    float alpha = af(c, "alpha"), beta = af(c, "beta");
    if (!c->bad) {
        float *A = in_f(c, "A", SZ(M, K)), *B = in_f(c, "B", SZ(K, N)), *C = in_f(c, "C0", SZ(M, N));
        matmul(C, A, B, M, N, K, ta, tb, alpha, beta);
        check(c, "C", C, SZ(M, N), TOL);
    }
    case_close(c);
}

static void run_linear(const char *name, int bias) {
    Case *c = case_open(name);
    if (!c) return;
    int N = ai(c, "N"), IN = ai(c, "IN"), OUT = ai(c, "OUT");
    if (!c->bad) {
        float *x = in_f(c, "x", SZ(N, IN)), *w = in_f(c, "w", SZ(OUT, IN));
        float *b = bias ? in_f(c, "b", OUT) : NULL, *r = in_f(c, "r_out", SZ(N, OUT));
        float *out = zbuf(c, SZ(N, OUT)), *dx = zbuf(c, SZ(N, IN)), *dw = zbuf(c, SZ(OUT, IN));
        float *db = bias ? zbuf(c, OUT) : NULL;
        linear_forward(out, x, w, b, N, IN, OUT);
        linear_backward(dx, dw, db, r, x, w, N, IN, OUT);
        check(c, "out", out, SZ(N, OUT), TOL);
        check(c, "grad_x", dx, SZ(N, IN), TOL);
        check(c, "grad_w", dw, SZ(OUT, IN), TOL);
        if (bias) check(c, "grad_b", db, OUT, TOL);
        if (bias) {
            /* The accumulation convention: a second backward adds the same again. */
            linear_backward(dx, dw, db, r, x, w, N, IN, OUT);
            check_as(c, "grad_x(2 backwards accumulate)", "grad_x", dx, SZ(N, IN), 2.0, TOL);
            check_as(c, "grad_w(2 backwards accumulate)", "grad_w", dw, SZ(OUT, IN), 2.0, TOL);
            check_as(c, "grad_b(2 backwards accumulate)", "grad_b", db, OUT, 2.0, TOL);
        }
    }
    case_close(c);
}

/* With the mask the frozen base weight's gradient is not requested (dw NULL);
 * without it, it is, so both NULL and non-NULL paths run. */
static void run_lora(const char *name, int masked) {
    Case *c = case_open(name);
    if (!c) return;
    int N = ai(c, "N"), IN = ai(c, "IN"), OUT = ai(c, "OUT"), R = ai(c, "R");
    float scale = af(c, "scale");
    if (!c->bad) {
        float *x = in_f(c, "x", SZ(N, IN)), *mask = masked ? in_f(c, "mask", SZ(N, IN)) : NULL;
        float *w = in_f(c, "w", SZ(OUT, IN)), *b = in_f(c, "b", OUT);
        float *A = in_f(c, "A", SZ(R, IN)), *B = in_f(c, "B", SZ(OUT, R)), *r = in_f(c, "r_out", SZ(N, OUT));
        float *out = zbuf(c, SZ(N, OUT)), *xd = masked ? zbuf(c, SZ(N, IN)) : NULL, *u = zbuf(c, SZ(N, R));
        float *dx = zbuf(c, SZ(N, IN)), *dw = masked ? NULL : zbuf(c, SZ(OUT, IN)), *db = zbuf(c, OUT);
        float *dA = zbuf(c, SZ(R, IN)), *dB = zbuf(c, SZ(OUT, R));
        lora_forward(out, xd, u, x, mask, w, b, A, B, scale, N, IN, OUT, R);
        lora_backward(dx, dw, db, dA, dB, r, x, xd, u, mask, w, A, B, scale, N, IN, OUT, R);
        check(c, "out", out, SZ(N, OUT), TOL);
        check(c, "u", u, SZ(N, R), TOL);
        if (masked) check(c, "xd", xd, SZ(N, IN), TOL);
        check(c, "grad_x", dx, SZ(N, IN), TOL);
        if (!masked) check(c, "grad_w", dw, SZ(OUT, IN), TOL);
        check(c, "grad_b", db, OUT, TOL);
        check(c, "grad_A", dA, SZ(R, IN), TOL);
        check(c, "grad_B", dB, SZ(OUT, R), TOL);
    }
    case_close(c);
}

static void run_embedding(void) {
    Case *c = case_open("embedding");
    if (!c) return;
    int N = ai(c, "N"), D = ai(c, "D"), V = ai(c, "V");
    if (!c->bad) {
        int *ids = in_i(c, "ids", N);
        float *table = in_f(c, "table", SZ(V, D)), *r = in_f(c, "r_out", SZ(N, D));
        float *out = zbuf(c, SZ(N, D)), *dt = zbuf(c, SZ(V, D));
        embedding_forward(out, ids, table, N, D);
        embedding_backward(dt, r, ids, N, D);
        check(c, "out", out, SZ(N, D), TOL);
        check(c, "grad_table", dt, SZ(V, D), TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- normalisation */

static void run_rmsnorm(void) {
    Case *c = case_open("rmsnorm");
    if (!c) return;
    int N = ai(c, "N"), D = ai(c, "D");
    float eps = af(c, "eps");
    if (!c->bad) {
        float *x = in_f(c, "x", SZ(N, D)), *w = in_f(c, "w", D), *r = in_f(c, "r_out", SZ(N, D));
        float *out = zbuf(c, SZ(N, D)), *rstd = zbuf(c, N), *dx = zbuf(c, SZ(N, D)), *dw = zbuf(c, D);
        rmsnorm_forward(out, rstd, x, w, eps, N, D);
        rmsnorm_backward(dx, dw, r, x, w, rstd, N, D);
        check(c, "out", out, SZ(N, D), TOL);
        check(c, "rstd", rstd, N, TOL);
        check(c, "grad_x", dx, SZ(N, D), TOL);
        check(c, "grad_w", dw, D, TOL);
    }
    case_close(c);
}

static void run_layernorm(const char *name, int affine) {
    Case *c = case_open(name);
    if (!c) return;
    int N = ai(c, "N"), D = ai(c, "D");
    float eps = af(c, "eps");
    if (!c->bad) {
        float *x = in_f(c, "x", SZ(N, D)), *r = in_f(c, "r_out", SZ(N, D));
        float *w = affine ? in_f(c, "w", D) : NULL, *b = affine ? in_f(c, "b", D) : NULL;
        float *out = zbuf(c, SZ(N, D)), *mean = zbuf(c, N), *rstd = zbuf(c, N), *dx = zbuf(c, SZ(N, D));
        float *dw = affine ? zbuf(c, D) : NULL, *db = affine ? zbuf(c, D) : NULL;
        layernorm_forward(out, mean, rstd, x, w, b, eps, N, D);
        layernorm_backward(dx, dw, db, r, x, w, mean, rstd, N, D);
        check(c, "out", out, SZ(N, D), TOL);
        check(c, "mean", mean, N, TOL);
        check(c, "rstd", rstd, N, TOL);
        check(c, "grad_x", dx, SZ(N, D), TOL);
        if (affine) {
            check(c, "grad_w", dw, D, TOL);
            check(c, "grad_b", db, D, TOL);
        }
    }
    case_close(c);
}

static void run_layernorm2d(void) {
    Case *c = case_open("layernorm2d");
    if (!c) return;
    int B = ai(c, "B"), C = ai(c, "C"), HW = ai(c, "HW");
    float eps = af(c, "eps");
    if (!c->bad) {
        size_t n = SZ(B, C) * HW;
        float *x = in_f(c, "x", n), *w = in_f(c, "w", C), *b = in_f(c, "b", C), *r = in_f(c, "r_out", n);
        float *out = zbuf(c, n), *mean = zbuf(c, SZ(B, HW)), *rstd = zbuf(c, SZ(B, HW));
        float *dx = zbuf(c, n), *dw = zbuf(c, C), *db = zbuf(c, C);
        layernorm2d_forward(out, mean, rstd, x, w, b, eps, B, C, HW);
        layernorm2d_backward(dx, dw, db, r, x, w, mean, rstd, B, C, HW);
        check(c, "out", out, n, TOL);
        check(c, "mean", mean, SZ(B, HW), TOL);
        check(c, "rstd", rstd, SZ(B, HW), TOL);
        check(c, "grad_x", dx, n, TOL);
        check(c, "grad_w", dw, C, TOL);
        check(c, "grad_b", db, C, TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- rope, attention, softmax */

static void run_rope(void) {
    Case *c = case_open("rope");
    if (!c) return;
    int N = ai(c, "N"), H = ai(c, "H"), hd = ai(c, "hd");
    float theta = af(c, "theta");
    if (!c->bad) {
        size_t n = SZ(N, H) * hd;
        int *pos = in_i(c, "pos", N);
        float *x = in_f(c, "x", n), *r = in_f(c, "r_out", n), *out = zbuf(c, n), *dx = zbuf(c, n);
        rope_forward(out, x, pos, theta, N, H, hd);
        rope_backward(dx, r, pos, theta, N, H, hd);
        check(c, "out", out, n, TOL);
        check(c, "grad_x", dx, n, TOL);
    }
    case_close(c);
}

/* Masked probabilities must be exactly 0 (the header promises it). */
static void check_att_zeros(Case *c, const float *att, size_t n) {
    if (c->bad) return;
    double *ref = ref_d(c, "att", n);
    if (!ref) return;
    float *h = download(att, n);
    size_t masked = 0, wrong = 0;
    for (size_t i = 0; i < n; i++)
        if (ref[i] == 0.0) { masked++; if (h[i] != 0.0f) wrong++; }
    char nm[256];
    tname(nm, sizeof nm, c, "att(masked entries exactly 0)");
    t_check(wrong == 0, nm, "%zu of %zu masked entries nonzero", wrong, masked);
    free(h);
    free(ref);
}

static void run_attention(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int B = ai(c, "B"), T = ai(c, "T"), S = ai(c, "S"), Hq = ai(c, "Hq"), Hkv = ai(c, "Hkv"), hd = ai(c, "hd");
    int causal = ai(c, "causal"), has_kl = ai(c, "has_key_len"), dattx = ai(c, "dattx");
    float scale = af(c, "scale");
    if (!c->bad) {
        size_t nq = SZ(B, T) * Hq * hd, nk = SZ(B, S) * Hkv * hd, na = SZ(B, Hq) * T * S;
        float *q = in_f(c, "q", nq), *k = in_f(c, "k", nk), *v = in_f(c, "v", nk);
        int *key_len = has_kl ? in_i(c, "key_len", B) : NULL;
        float *r = in_f(c, "r_out", nq), *ratt = dattx ? in_f(c, "r_att", na) : NULL;
        float *out = zbuf(c, nq), *att = zbuf(c, na);
        float *dq = zbuf(c, nq), *dk = zbuf(c, nk), *dv = zbuf(c, nk);
        float *scratch = zbuf(c, attention_scratch_floats(B, T, S, Hq));
        attention_forward(out, att, q, k, v, key_len, causal, scale, B, T, S, Hq, Hkv, hd);
        attention_backward(dq, dk, dv, scratch, r, ratt, att, q, k, v, scale, B, T, S, Hq, Hkv, hd);
        check(c, "out", out, nq, TOL);
        check(c, "att", att, na, TOL);
        check_att_zeros(c, att, na);
        check(c, "grad_q", dq, nq, TOL);
        check(c, "grad_k", dk, nk, TOL);
        check(c, "grad_v", dv, nk, TOL);
    }
    case_close(c);
}

static void run_softmax(void) {
    Case *c = case_open("softmax");
    if (!c) return;
    int N = ai(c, "N"), C = ai(c, "C");
    if (!c->bad) {
        float *x = in_f(c, "x", SZ(N, C)), *r = in_f(c, "r_out", SZ(N, C));
        float *out = zbuf(c, SZ(N, C)), *dx = zbuf(c, SZ(N, C));
        softmax_forward(out, x, N, C);
        softmax_backward(dx, r, out, N, C);
        check(c, "out", out, SZ(N, C), TOL);
        check(c, "grad_x", dx, SZ(N, C), TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- element-wise */

typedef void (*unary_fwd)(float *, const float *, size_t);
typedef void (*unary_bwd)(float *, const float *, const float *, size_t);

static void run_unary(const char *name, unary_fwd fwd, unary_bwd bwd) {
    Case *c = case_open(name);
    if (!c) return;
    size_t n = (size_t)ai(c, "n");
    if (!c->bad) {
        float *x = in_f(c, "x", n), *r = in_f(c, "r_out", n), *out = zbuf(c, n), *dx = zbuf(c, n);
        fwd(out, x, n);
        bwd(dx, r, x, n);
        check(c, "out", out, n, TOL);
        check(c, "grad_x", dx, n, TOL);
    }
    case_close(c);
}

static void run_swiglu(void) {
    Case *c = case_open("swiglu");
    if (!c) return;
    size_t n = (size_t)ai(c, "n");
    if (!c->bad) {
        float *g = in_f(c, "gate", n), *u = in_f(c, "up", n), *r = in_f(c, "r_out", n);
        float *out = zbuf(c, n), *dg = zbuf(c, n), *du = zbuf(c, n);
        swiglu_forward(out, g, u, n);
        swiglu_backward(dg, du, r, g, u, n);
        check(c, "out", out, n, TOL);
        check(c, "grad_gate", dg, n, TOL);
        check(c, "grad_up", du, n, TOL);
    }
    case_close(c);
}

static void run_add_axpy(void) {
    Case *c = case_open("add");
    if (!c) return;
    size_t n = (size_t)ai(c, "n");
    if (!c->bad) {
        float *a = in_f(c, "a", n), *b = in_f(c, "b", n), *r = in_f(c, "r_out", n);
        float *out = zbuf(c, n), *da = zbuf(c, n), *db = zbuf(c, n);
        add_forward(out, a, b, n);
        add_backward(da, db, r, n);
        check(c, "out", out, n, TOL);
        check(c, "grad_a", da, n, TOL);
        check(c, "grad_b", db, n, TOL);
        add_forward(a, a, b, n); /* out may alias a */
        check_as(c, "out(aliasing a)", "out", a, n, 1.0, TOL);
    }
    case_close(c);

    c = case_open("axpy");
    if (!c) return;
    n = (size_t)ai(c, "n");
    float alpha = af(c, "alpha");
    if (!c->bad) {
        float *y = in_f(c, "y0", n), *x = in_f(c, "x", n);
        axpy(y, x, alpha, n);
        check(c, "y", y, n, TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- losses */

static void run_xent(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int N = ai(c, "N"), V = ai(c, "V"), ign = ai(c, "ignore_index"), want = ai(c, "count");
    float dloss = af(c, "dloss");
    if (!c->bad) {
        float *logits = in_f(c, "logits", SZ(N, V));
        int *tg = in_i(c, "targets", N);
        float *lse = zbuf(c, N), *dl = zbuf(c, SZ(N, V));
        int count = -1;
        float loss = softmax_xent_forward(lse, &count, logits, tg, N, V, ign);
        softmax_xent_backward(dl, logits, lse, tg, dloss, count, N, V, ign);
        char nm[256];
        tname(nm, sizeof nm, c, "count");
        if (!c->bad) t_check(count == want, nm, "%d counted targets (expected %d)", count, want);
        check_val(c, "loss", loss, TOL);
        check(c, "lse", lse, N, TOL);
        check(c, "grad_logits", dl, SZ(N, V), TOL);
    }
    case_close(c);
}

static void run_bce_dice(const char *name, int dice) {
    Case *c = case_open(name);
    if (!c) return;
    size_t n = (size_t)ai(c, "n");
    float dloss = af(c, "dloss");
    if (!c->bad) {
        float *x = in_f(c, "x", n), *y = in_f(c, "y", n), *dx = zbuf(c, n);
        float loss = dice ? dice_forward(x, y, n) : bce_logits_forward(x, y, n);
        if (dice) dice_backward(dx, x, y, dloss, n);
        else bce_logits_backward(dx, x, y, dloss, n);
        check_val(c, "loss", loss, TOL);
        check(c, "grad_x", dx, n, TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- vision */

static void run_resize(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int C = ai(c, "C"), Hi = ai(c, "Hin"), Wi = ai(c, "Win"), Ho = ai(c, "Hout"), Wo = ai(c, "Wout");
    if (!c->bad) {
        size_t ni = SZ(C, Hi) * Wi, no = SZ(C, Ho) * Wo;
        float *x = in_f(c, "x", ni), *r = in_f(c, "r_out", no), *out = zbuf(c, no), *dx = zbuf(c, ni);
        resize_bilinear_forward(out, x, C, Hi, Wi, Ho, Wo);
        resize_bilinear_backward(dx, r, C, Hi, Wi, Ho, Wo);
        check(c, "out", out, no, TOL);
        check(c, "grad_x", dx, ni, TOL);
    }
    case_close(c);
}

static void run_convt(const char *name, int bias) {
    Case *c = case_open(name);
    if (!c) return;
    int B = ai(c, "B"), Cin = ai(c, "Cin"), Cout = ai(c, "Cout"), H = ai(c, "H"), W = ai(c, "W");
    if (!c->bad) {
        size_t ni = SZ(B, Cin) * H * W, no = SZ(B, Cout) * 4 * H * W, nw = SZ(Cin, Cout) * 4;
        float *x = in_f(c, "x", ni), *w = in_f(c, "w", nw), *b = bias ? in_f(c, "b", Cout) : NULL;
        float *r = in_f(c, "r_out", no), *out = zbuf(c, no);
        float *dx = zbuf(c, ni), *dw = zbuf(c, nw), *db = bias ? zbuf(c, Cout) : NULL;
        conv_transpose2x2_forward(out, x, w, b, B, Cin, Cout, H, W);
        conv_transpose2x2_backward(dx, dw, db, r, x, w, B, Cin, Cout, H, W);
        check(c, "out", out, no, TOL);
        check(c, "grad_x", dx, ni, TOL);
        check(c, "grad_w", dw, nw, TOL);
        if (bias) check(c, "grad_b", db, Cout, TOL);
    }
    case_close(c);
}

static void run_conv2d(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int B = ai(c, "B"), Cin = ai(c, "Cin"), H = ai(c, "H"), W = ai(c, "W"), Cout = ai(c, "Cout");
    int KH = ai(c, "KH"), KW = ai(c, "KW"), sh = ai(c, "sh"), sw = ai(c, "sw"), ph = ai(c, "ph"), pw = ai(c, "pw");
    int OH = ai(c, "OH"), OW = ai(c, "OW"), bias = ai(c, "bias");
    if (!c->bad) {
        size_t ni = SZ(B, Cin) * H * W, no = SZ(B, Cout) * OH * OW, nw = SZ(Cout, Cin) * KH * KW;
        float *x = in_f(c, "x", ni), *w = in_f(c, "w", nw), *b = bias ? in_f(c, "b", Cout) : NULL;
        float *r = in_f(c, "r_out", no), *out = zbuf(c, no);
        float *dx = zbuf(c, ni), *dw = zbuf(c, nw), *db = bias ? zbuf(c, Cout) : NULL;
        float *scratch = zbuf(c, conv2d_scratch_floats(Cin, H, W, KH, KW, sh, sw, ph, pw));
        conv2d_forward(out, scratch, x, w, b, B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw);
        conv2d_backward(dx, dw, db, scratch, r, x, w, B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw);
        check(c, "out", out, no, TOL);
        check(c, "grad_x", dx, ni, TOL);
        check(c, "grad_w", dw, nw, TOL);
        if (bias) check(c, "grad_b", db, Cout, TOL);
    }
    case_close(c);
}

static void run_roi(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int K = ai(c, "K"), B = ai(c, "B"), H = ai(c, "H"), W = ai(c, "W"), C = ai(c, "C");
    int PH = ai(c, "PH"), PW = ai(c, "PW"), sr = ai(c, "sampling_ratio"), al = ai(c, "aligned");
    float ss = af(c, "spatial_scale");
    if (!c->bad) {
        size_t ni = SZ(B, H) * W * C, no = SZ(K, PH) * PW * C;
        float *x = in_f(c, "x", ni), *boxes = in_f(c, "boxes", SZ(K, 5)), *r = in_f(c, "r_out", no);
        float *out = zbuf(c, no), *dx = zbuf(c, ni);
        roi_align_forward(out, x, boxes, K, B, H, W, C, PH, PW, ss, sr, al);
        roi_align_backward(dx, r, boxes, K, B, H, W, C, PH, PW, ss, sr, al);
        check(c, "out", out, no, TOL);
        check(c, "grad_x", dx, ni, TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- refocusing */

static void run_refocus(const char *name) {
    Case *c = case_open(name);
    if (!c) return;
    int T = ai(c, "T"), S = ai(c, "S"), Hq = ai(c, "Hq"), D = ai(c, "D"), p = ai(c, "p"), s = ai(c, "s");
    float lam = af(c, "lam");
    if (!c->bad) {
        size_t na = SZ(Hq, T) * S;
        float *hid = in_f(c, "hid", SZ(T, D)), *att = in_f(c, "att", na), *r = in_f(c, "r_out", D);
        float *out = zbuf(c, D), *dhid = zbuf(c, SZ(T, D)), *datt = zbuf(c, na);
        refocus_forward(out, hid, att, p, s, lam, T, S, Hq, D);
        refocus_backward(dhid, datt, r, hid, att, p, s, lam, T, S, Hq, D);
        check(c, "out", out, D, TOL);
        check(c, "grad_hid", dhid, SZ(T, D), TOL);
        check(c, "grad_att", datt, na, TOL);
    }
    case_close(c);
}

/* attention -> refocus -> back: hid is the attention output itself, so the
 * refocus gradient joins the upstream one in dout (accumulation) and its
 * gradient on the probabilities enters attention_backward as datt_extra. */
static void run_attn_refocus(void) {
    Case *c = case_open("attn_refocus");
    if (!c) return;
    int B = ai(c, "B"), T = ai(c, "T"), S = ai(c, "S"), Hq = ai(c, "Hq"), Hkv = ai(c, "Hkv"), hd = ai(c, "hd");
    int D = ai(c, "D"), causal = ai(c, "causal"), p = ai(c, "p"), s = ai(c, "s");
    float scale = af(c, "scale"), lam = af(c, "lam");
    if (!c->bad && (B != 1 || D != Hq * hd)) case_bad(c, "attributes", "expected B=1 and D=Hq*hd");
    if (!c->bad) {
        size_t nq = SZ(T, Hq) * hd, nk = SZ(S, Hkv) * hd, na = SZ(Hq, T) * S;
        float *q = in_f(c, "q", nq), *k = in_f(c, "k", nk), *v = in_f(c, "v", nk);
        float *r_out = in_f(c, "r_out", nq), *r_h = in_f(c, "r_h", D);
        float *out = zbuf(c, nq), *att = zbuf(c, na), *h = zbuf(c, D);
        float *dout = zbuf(c, nq), *datt = zbuf(c, na);
        float *dq = zbuf(c, nq), *dk = zbuf(c, nk), *dv = zbuf(c, nk);
        float *scratch = zbuf(c, attention_scratch_floats(B, T, S, Hq));
        attention_forward(out, att, q, k, v, NULL, causal, scale, B, T, S, Hq, Hkv, hd);
        refocus_forward(h, out, att, p, s, lam, T, S, Hq, D);
        k_copy(dout, r_out, nq * sizeof(float));
        refocus_backward(dout, datt, r_h, out, att, p, s, lam, T, S, Hq, D);
        attention_backward(dq, dk, dv, scratch, dout, datt, att, q, k, v, scale, B, T, S, Hq, Hkv, hd);
        check(c, "out", out, nq, TOL);
        check(c, "att", att, na, TOL);
        check(c, "h", h, D, TOL);
        check(c, "grad_q", dq, nq, TOL);
        check(c, "grad_k", dk, nk, TOL);
        check(c, "grad_v", dv, nk, TOL);
    }
    case_close(c);
}

/* ---------------------------------------------------------------- optimiser */

/* The parameter moves by ~lr per step while it is O(1): its change (not its
 * value, which float32 already holds to 6e-8) is what is compared. */
static void check_delta(Case *c, const char *ds, const float *dev, const float *p0, size_t n, double tol) {
    if (c->bad) return;
    double *ref = ref_d(c, ds, n);
    if (!ref) return;
    float *h = download(dev, n), *h0 = download(p0, n);
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double dr = ref[i] - h0[i], dc = (double)h[i] - h0[i];
        if (fabs(dc - dr) > md || isnan(dc)) md = isnan(dc) ? INFINITY : fabs(dc - dr);
        if (fabs(dr) > mr) mr = fabs(dr);
    }
    double e = md / (mr > 1e-30 ? mr : 1e-30);
    char label[96], nm[256];
    snprintf(label, sizeof label, "%s(change from param0)", ds);
    tname(nm, sizeof nm, c, label);
    t_check(e <= tol, nm, "max rel err %.1e (tol %.0e)", e, tol);
    free(h);
    free(h0);
    free(ref);
}

static void run_adamw(void) {
    Case *c = case_open("adamw");
    if (!c) return;
    size_t n = (size_t)ai(c, "n");
    float lr = af(c, "lr"), b1 = af(c, "beta1"), b2 = af(c, "beta2"), eps = af(c, "eps");
    float wd = af(c, "weight_decay");
    if (!c->bad) {
        float *p0 = in_f(c, "param0", n), *p = in_f(c, "param0", n);
        float *g1 = in_f(c, "grad1", n), *g2 = in_f(c, "grad2", n), *m = zbuf(c, n), *v = zbuf(c, n);
        adamw_update(p, g1, m, v, n, lr, b1, b2, eps, wd, 1);
        check_delta(c, "param1", p, p0, n, TOL);
        check(c, "m1", m, n, TOL);
        check(c, "v1", v, n, TOL);
        adamw_update(p, g2, m, v, n, lr, b1, b2, eps, wd, 2);
        check_delta(c, "param2", p, p0, n, TOL);
        check(c, "m2", m, n, TOL);
        check(c, "v2", v, n, TOL);
    }
    case_close(c);

    c = case_open("sumsq_scale");
    if (!c) return;
    n = (size_t)ai(c, "n");
    float s = af(c, "s");
    if (!c->bad) {
        float *x = in_f(c, "x", n);
        /* float32 squares are exact in double: only the summation order differs. */
        check_val(c, "sumsq", sumsq(x, n), 1e-12);
        scale_inplace(x, s, n);
        check(c, "scaled", x, n, 1e-6);
    }
    case_close(c);
}

/* dropout_mask has no PyTorch counterpart (its hash is ours): check its
 * contract instead — values, rate, determinism, dependence on the seed. */
static void run_dropout_mask(void) {
    const size_t n = 200000;
    const float p = 0.25f, keep = 1.0f / (1.0f - p);
    float *d = k_malloc(n * sizeof(float)), *h = malloc(n * sizeof(float)), *h2 = malloc(n * sizeof(float));
    if (!d || !h || !h2) { t_fail("dropout_mask", "out of memory"); k_free(d); free(h); free(h2); return; }
    dropout_mask(d, n, p, 1234);
    k_sync();
    k_download(h, d, n * sizeof(float));
    size_t zeros = 0, odd = 0;
    for (size_t i = 0; i < n; i++) {
        if (h[i] == 0.0f) zeros++;
        else if (h[i] != keep) odd++;
    }
    double rate = (double)zeros / (double)n; /* binomial sd ~1e-3: 0.01 is ~10 sd */
    t_check(odd == 0, "dropout_mask.values", "%zu entries neither 0 nor 1/(1-p)", odd);
    t_check(fabs(rate - p) < 0.01, "dropout_mask.rate", "dropped %.4f (p %.2f)", rate, (double)p);
    dropout_mask(d, n, p, 1234);
    k_sync();
    k_download(h2, d, n * sizeof(float));
    t_check(memcmp(h, h2, n * sizeof(float)) == 0, "dropout_mask.deterministic", "same seed, same mask");
    dropout_mask(d, n, p, 1235);
    k_sync();
    k_download(h2, d, n * sizeof(float));
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += h[i] == h2[i];
    /* two independent masks agree on p^2 + (1-p)^2 = 62.5% of entries */
    t_check(fabs((double)same / n - 0.625) < 0.01, "dropout_mask.seed", "another seed agrees on %.4f",
            (double)same / n);
    k_free(d);
    free(h);
    free(h2);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, "parity ")) return t_exit_code();
    printf("# parity against PyTorch float64 autograd, backend %s\n", k_backend_name());

    run_matmul("matmul_t00");
    run_matmul("matmul_t01");
    run_matmul("matmul_t10");
    run_matmul("matmul_t11");
    run_matmul_gemm();
    run_linear("linear_bias", 1);
    run_linear("linear_nobias", 0);
    run_lora("lora_mask", 1);
    run_lora("lora_nomask", 0);
    run_dropout_mask();
    run_embedding();

    run_rmsnorm();
    run_layernorm("layernorm", 1);
    run_layernorm("layernorm_noaffine", 0);
    run_layernorm2d();

    run_rope();
    run_attention("attn_causal");
    run_attention("attn_pad");
    run_attention("attn_gqa");
    run_attention("attn_offset");
    run_attention("attn_dattx");
    run_softmax();

    run_unary("silu", silu_forward, silu_backward);
    run_unary("gelu", gelu_forward, gelu_backward);
    run_unary("quick_gelu", quick_gelu_forward, quick_gelu_backward);
    run_unary("relu", relu_forward, relu_backward);
    run_swiglu();
    run_add_axpy();

    run_xent("softmax_xent");
    run_xent("softmax_xent_allignored");
    run_bce_dice("bce_logits", 0);
    run_bce_dice("dice", 1);

    run_resize("resize_up");
    run_resize("resize_down");
    run_convt("convt2x2_bias", 1);
    run_convt("convt2x2_nobias", 0);
    run_conv2d("conv2d_3x3");
    run_conv2d("conv2d_4x4s2");
    run_conv2d("conv2d_patch16");
    run_conv2d("conv2d_k16s10");
    run_roi("roi_aligned");
    run_roi("roi_adaptive");

    run_refocus("refocus");
    run_refocus("refocus_empty");
    run_attn_refocus();

    run_adamw();

    fx_close(&FX);
    return t_exit_code();
}
