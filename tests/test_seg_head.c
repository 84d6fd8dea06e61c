/* tests/test_seg_head.c — the [SEG] head (model/seg_head.c): refocusing + text_hidden_fcs.
 *
 * One batch (B = 4, T = 10, D = 16, out 8, 2 heads) mixes a sample with one
 * [SEG] (a target 0 before the first positive one: the span starts at the first
 * target > 0, as AnyRef's labels > 0), one with two [SEG]s, one with none and one
 * whose span is empty (first answer after the [SEG]).
 * 1. Finite differences of L = Σ out·r into xf, att and the four fcs tensors,
 *    for λ = 0 (and then no gradient may reach att) and λ = 0.1; backward must
 *    accumulate; error paths ([SEG] at position 0, too many [SEG]s). Steps:
 *    1e-2 on xf and att, 2e-3 on the fcs tensors (a step of 1e-2 on the first
 *    Linear moves some ReLU pre-activations across zero with these seeds and
 *    the difference then measures the kink, not the gradient).
 * 2. PyTorch float64 parity (tests/ref/seg_head_ref.py -> tests/fixtures/seg_head.h5,
 *    written from AnyRef's code on unshifted labels): the (sample, p, s) table,
 *    the embeddings and every gradient, for λ = 0 and 0.1. Tolerance 1e-5 of
 *    each tensor's scale (a handful of float32 ops; observed ~1e-7).
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/seg_head.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/seg_head.h5"
#define PFX "seg_head "
#define TOL 1e-5

enum { D = 16, O = 8, HQ = 2, B = 4, T = 10, SEG = 29, MAXSEG = 8 };

static const int TOKENS[B * T] = {
    20, 21, 14, 23, 16, 12, 28, SEG, 25, 18,
    11, 28, 17, 2,  3,  SEG, 15, 25, SEG, 23,
    17, 25, 4,  4,  25, 17, 8,  4,  11, 11,
    16, 13, 25, SEG, 10, 5,  25, 24, 14, 25,
};
#define I -100
static const int TARGETS[B * T] = {
    I, 0, I, 16, 12, 28, 29, 25, I, I,
    I, I, 2, 3,  29, 15, 25, 29, 23, I,
    I, I, I, I,  17, 8,  4,  11, 11, I,
    I, I, I, I,  5,  25, 24, 14, 25, I,
};
#undef I
/* (sample, p, s) of each [SEG], torch.where order */
static const int WANT_SEGS[4][3] = {{0, 6, 3}, {1, 4, 2}, {1, 7, 2}, {3, 2, 2}};
static const char *TAILS[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};

typedef struct {
    seg_head *h;
    float *xf, *att, *r;
    int n;
} fd_ctx;

static double fd_loss(void *vc) {
    fd_ctx *c = vc;
    seg_head_forward(c->h, TOKENS, TARGETS, c->xf, c->att);
    return t_dot(seg_head_out(c->h), c->r, (size_t)c->n * O);
}

static void causal_softmax_rows(float *att, uint64_t seed) {
    t_fill_normal(att, (size_t)B * HQ * T * T, 2.0f, seed);
    for (int bh = 0; bh < B * HQ; bh++)
        for (int i = 0; i < T; i++) {
            float *row = att + ((size_t)bh * T + i) * T;
            double z = 0;
            for (int j = 0; j <= i; j++) z += exp(row[j]);
            for (int j = 0; j < T; j++) row[j] = j <= i ? (float)(exp(row[j]) / z) : 0.0f;
        }
}

static int make_head(const seg_head_cfg *cfg, ar_params *ps, seg_head **h) {
    params_init_empty(ps);
    if (seg_head_declare(cfg, ps) || params_alloc(ps)) return -1;
    *h = seg_head_create(cfg, ps, B, T, HQ, MAXSEG);
    return *h ? 0 : -1;
}

static void fd_run(float lambda) {
    char nm[96];
    seg_head_cfg cfg = {.dim = D, .out_dim = O, .seg_token = SEG, .lambda = lambda, .trainable = 1};
    ar_params ps;
    seg_head *h = NULL;
    if (make_head(&cfg, &ps, &h)) { t_fail(PFX "fd create", "%s", ar_error()); return; }
    params_randomize(&ps, 99);
    const size_t nx = (size_t)B * T * D, na = (size_t)B * HQ * T * T;
    fd_ctx c = {.h = h, .xf = t_alloc(nx), .att = t_alloc(na), .r = t_alloc(MAXSEG * O)};
    t_fill_normal(c.xf, nx, 1.0f, 5);
    causal_softmax_rows(c.att, 6);
    t_fill_normal(c.r, MAXSEG * O, 1.0f, 7);
    float *dxf = t_alloc(nx), *datt = t_alloc(na);
    c.n = seg_head_forward(h, TOKENS, TARGETS, c.xf, c.att);
    snprintf(nm, sizeof nm, PFX "lambda %g find", (double)lambda);
    int same = c.n == 4;
    for (int k = 0; same && k < 4; k++)
        same = seg_head_sample(h)[k] == WANT_SEGS[k][0] && seg_head_pos(h)[k] == WANT_SEGS[k][1] &&
               seg_head_start(h)[k] == WANT_SEGS[k][2];
    t_check(same, nm, "%d [SEG]s, (sample, p, s) as expected: %s", c.n, same ? "yes" : "no");
    if (c.n != 4) goto done;
    seg_head_backward(h, c.r, dxf, datt);
    snprintf(nm, sizeof nm, PFX "lambda %g d.xf", (double)lambda);
    t_gradcheck(nm, fd_loss, &c, c.xf, dxf, nx, 1e-2f, 2e-3, nx);
    if (lambda != 0.0f) {
        snprintf(nm, sizeof nm, PFX "lambda %g d.att", (double)lambda);
        t_gradcheck(nm, fd_loss, &c, c.att, datt, na, 1e-2f, 2e-3, na);
    } else {
        double m = 0;
        for (size_t i = 0; i < na; i++) m = fmax(m, fabs(datt[i]));
        snprintf(nm, sizeof nm, PFX "lambda 0 d.att");
        t_check(m == 0.0, nm, "no gradient reaches the attention without refocusing (max %.1e)", m);
    }
    for (int t = 0; t < 4; t++) {
        char pn[112];
        snprintf(pn, sizeof pn, "model.text_hidden_fcs.0.%s", TAILS[t]);
        const ar_param *p = params_find(&ps, pn);
        snprintf(nm, sizeof nm, PFX "lambda %g d.%s", (double)lambda, TAILS[t]);
        t_gradcheck(nm, fd_loss, &c, params_w(&ps, pn), params_g(&ps, pn), p->numel, 2e-3f, 2e-3, 256);
    }
    /* accumulation: a second backward adds the same again */
    float *dxf2 = t_alloc(nx);
    memcpy(dxf2, dxf, nx * sizeof(float));
    seg_head_forward(h, TOKENS, TARGETS, c.xf, c.att);
    seg_head_backward(h, c.r, dxf2, NULL);
    double e = 0, sc = 0;
    for (size_t i = 0; i < nx; i++) { e = fmax(e, fabs(dxf2[i] - 2.0f * dxf[i])); sc = fmax(sc, fabs(dxf[i])); }
    snprintf(nm, sizeof nm, PFX "lambda %g accumulate", (double)lambda);
    t_check(e <= 1e-6 * fmax(sc, 1.0), nm, "second backward adds the same d.xf (max dev %.1e)", e);
    free(dxf2);
done:
    free(c.xf); free(c.att); free(c.r); free(dxf); free(datt);
    seg_head_free(h);
    params_free(&ps);
}

static void errors(void) {
    int b[2], p[2], s[2], tok[T], tgt[T];
    for (int t = 0; t < T; t++) { tok[t] = 1; tgt[t] = -100; }
    tok[0] = SEG;
    int e0 = seg_head_find(SEG, tok, tgt, 1, T, b, p, s, 2);
    tok[0] = 1; tok[3] = tok[5] = tok[7] = SEG;
    int e1 = seg_head_find(SEG, tok, tgt, 1, T, b, p, s, 2);
    tok[7] = 1;
    int n2 = seg_head_find(SEG, tok, tgt, 1, T, b, p, s, 2);
    t_check(e0 == -1 && e1 == -1 && n2 == 2 && p[0] == 2 && s[0] == 2 && p[1] == 4 && s[1] == 4, PFX "errors",
            "[SEG] at 0 -> %d, 3 [SEG]s over max 2 -> %d, no targets -> empty spans (%d found)", e0, e1, n2);
}

static void parity(void) {
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return;
    const fx_int_attr iv[] = {{"dim", D}, {"out_dim", O}, {"heads", HQ}, {"B", B}, {"T", T}, {"seg_token", SEG}};
    ar_params ps;
    params_init_empty(&ps);
    seg_head *h = NULL;
    float *xf = NULL, *att = NULL, *r = NULL, *dxf = NULL, *datt = NULL;
    if (!fx_check_config(&fx, iv, sizeof iv / sizeof *iv, NULL, 0)) goto done;
    const int bt[2] = {B, T}, xs[2] = {B * T, D}, as[4] = {B, HQ, T, T}, ss[2] = {4, 3}, rs[2] = {4, O};
    int tokens[B * T], targets[B * T], segs[4][3];
    const size_t nx = (size_t)B * T * D, na = (size_t)B * HQ * T * T;
    xf = k_malloc(nx * 4); att = k_malloc(na * 4); r = k_malloc(4 * O * 4);
    dxf = k_malloc(nx * 4); datt = k_malloc(na * 4);
    double *hx = fx_alloc(&fx, na * sizeof(double));
    float *hf = fx_alloc(&fx, na * sizeof(float));
    if (!fx_read(&fx, "tokens", H5T_NATIVE_INT, tokens, 2, bt) ||
        !fx_read(&fx, "targets", H5T_NATIVE_INT, targets, 2, bt) ||
        !fx_read(&fx, "segs", H5T_NATIVE_INT, segs, 2, ss)) { free(hx); free(hf); goto done; }
    int tok_same = !memcmp(tokens, TOKENS, sizeof tokens) && !memcmp(targets, TARGETS, sizeof targets);
    t_check(tok_same, PFX "parity batch", "fixture tokens/targets %s the finite-difference batch",
            tok_same ? "equal" : "differ from");
    struct { const char *ds; float *dev; int nd; const int *shape; size_t n; } in[] = {
        {"xf", xf, 2, xs, nx}, {"att", att, 4, as, na}, {"r", r, 2, rs, 4 * O}};
    for (int k = 0; k < 3; k++) {
        if (!fx_read(&fx, in[k].ds, H5T_NATIVE_DOUBLE, hx, in[k].nd, in[k].shape)) { free(hx); free(hf); goto done; }
        for (size_t i = 0; i < in[k].n; i++) hf[i] = (float)hx[i];
        k_upload(in[k].dev, hf, in[k].n * 4);
    }
    free(hx);
    free(hf);
    const float lams[2] = {0.0f, 0.1f};
    const char *grps[2] = {"lam0", "lam0.1"};
    for (int l = 0; l < 2; l++) {
        seg_head_cfg cfg = {.dim = D, .out_dim = O, .seg_token = SEG, .lambda = lams[l], .trainable = 1};
        seg_head_free(h);
        h = NULL;
        params_free(&ps);
        if (make_head(&cfg, &ps, &h)) { t_fail(PFX "create", "%s", ar_error()); goto done; }
        if (!fx_load_params(&fx, &ps, NULL)) goto done;
        k_zero(dxf, nx * 4);
        k_zero(datt, na * 4);
        int n = seg_head_forward(h, tokens, targets, xf, att);
        int same = n == 4;
        for (int k = 0; same && k < 4; k++)
            same = seg_head_sample(h)[k] == segs[k][0] && seg_head_pos(h)[k] == segs[k][1] &&
                   seg_head_start(h)[k] == segs[k][2];
        char label[128], ds[160];
        snprintf(label, sizeof label, PFX "%s segs", grps[l]);
        t_check(same, label, "%d [SEG]s; (sample, p, s) %s AnyRef's rule on unshifted labels", n,
                same ? "equal" : "differ from");
        if (n != 4) continue;
        seg_head_backward(h, r, dxf, datt);
        const int os[2] = {4, O};
        snprintf(label, sizeof label, "%s.out", grps[l]);
        snprintf(ds, sizeof ds, "%s/out", grps[l]);
        fx_check(&fx, label, ds, seg_head_out(h), 2, os, TOL);
        snprintf(label, sizeof label, "%s.grad.xf", grps[l]);
        snprintf(ds, sizeof ds, "%s/grads/xf", grps[l]);
        fx_check(&fx, label, ds, dxf, 2, xs, TOL);
        if (lams[l] != 0.0f) {
            snprintf(label, sizeof label, "%s.grad.att", grps[l]);
            snprintf(ds, sizeof ds, "%s/grads/att", grps[l]);
            fx_check(&fx, label, ds, datt, 4, as, TOL);
        }
        for (int i = 0; i < ps.n; i++) {
            snprintf(label, sizeof label, "%s.grad.%s", grps[l], ps.p[i].name);
            snprintf(ds, sizeof ds, "%s/grads/%s", grps[l], ps.p[i].name);
            fx_check(&fx, label, ds, params_g(&ps, ps.p[i].name), ps.p[i].ndim, ps.p[i].shape, TOL);
        }
    }
done:
    seg_head_free(h);
    params_free(&ps);
    k_free(xf); k_free(att); k_free(r); k_free(dxf); k_free(datt);
    fx_close(&fx);
}

int main(void) {
    printf("# [SEG] head (refocusing + text_hidden_fcs), backend %s\n", k_backend_name());
    fd_run(0.0f);
    fd_run(0.1f);
    errors();
    parity();
    return t_exit_code();
}
