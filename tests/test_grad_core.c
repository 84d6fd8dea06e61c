/* tests/test_grad_core.c — finite-difference gradient checks for the dense,
 * normalisation, attention, element-wise, loss and refocusing kernels.
 * Every differentiated input and parameter of each kernel is checked; the
 * scalar is L = Σ out·r for a fixed random r, so dout = r. */
#include "kernels/kernels.h"
#include "tests/testlib.h"
#include "kernels/cpu/vmath.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One forward under test: fwd() recomputes `out` from the current inputs. */
static void (*g_fwd)(void);
static float *g_out; static const float *g_r; static size_t g_nout;
static double fd_loss(void *unused) { (void)unused; g_fwd(); return t_dot(g_out, g_r, g_nout); }
static void setup(void (*fwd)(void), float *out, const float *r, size_t nout) {
    g_fwd = fwd; g_out = out; g_r = r; g_nout = nout;
}
static void check(const char *name, float *x, const float *g, size_t n) {
    t_gradcheck(name, fd_loss, NULL, x, g, n, 1e-2f, 2e-2, 400);
}
static void check_eps(const char *name, float *x, const float *g, size_t n, float eps, double tol) {
    t_gradcheck(name, fd_loss, NULL, x, g, n, eps, tol, 400);
}
static float *rnd(size_t n, float std, uint64_t seed) { float *p = t_alloc(n); t_fill_normal(p, n, std, seed); return p; }
static float *zeros(size_t n) { return t_alloc(n); }

/* ---------------- matmul, linear, LoRA ---------------- */
static struct { float *A, *B, *C; int M, N, K, ta, tb; } MM;
static void mm_fwd(void) { matmul_forward(MM.C, MM.A, MM.B, MM.M, MM.N, MM.K, MM.ta, MM.tb); }
static void test_matmul(void) {
    MM.M = 5; MM.N = 7; MM.K = 6;
    for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++) {
        MM.ta = ta; MM.tb = tb;
        MM.A = rnd(30, 1, 1 + ta); MM.B = rnd(42, 1, 3 + tb); MM.C = zeros(35);
        float *r = rnd(35, 1, 9), *dA = zeros(30), *dB = zeros(42);
        mm_fwd(); matmul_backward(dA, dB, r, MM.A, MM.B, MM.M, MM.N, MM.K, ta, tb);
        setup(mm_fwd, MM.C, r, 35);
        char n1[64], n2[64];
        snprintf(n1, sizeof n1, "grad matmul ta=%d tb=%d dA", ta, tb);
        snprintf(n2, sizeof n2, "grad matmul ta=%d tb=%d dB", ta, tb);
        check(n1, MM.A, dA, 30); check(n2, MM.B, dB, 42);
        free(MM.A); free(MM.B); free(MM.C); free(r); free(dA); free(dB);
    }
}

static struct { float *in, *w, *b, *out, *mask, *xd, *u, *A, *B; int N, IN, OUT, R; float scale; } L;
static void lin_fwd(void) { linear_forward(L.out, L.in, L.w, L.b, L.N, L.IN, L.OUT); }
static void lora_fwd(void) {
    lora_forward(L.out, L.xd, L.u, L.in, L.mask, L.w, L.b, L.A, L.B, L.scale, L.N, L.IN, L.OUT, L.R);
}
static void test_linear_lora(void) {
    L.N = 6; L.IN = 9; L.OUT = 5; L.R = 3; L.scale = 2.0f;
    size_t ni = L.N * L.IN, nw = L.OUT * L.IN, no = L.N * L.OUT;
    for (int bias = 0; bias < 2; bias++) {
        L.in = rnd(ni, 1, 11); L.w = rnd(nw, 0.5, 12); L.b = bias ? rnd(L.OUT, 1, 13) : NULL;
        L.out = zeros(no);
        float *r = rnd(no, 1, 14), *din = zeros(ni), *dw = zeros(nw), *db = zeros(L.OUT);
        lin_fwd(); linear_backward(din, dw, bias ? db : NULL, r, L.in, L.w, L.N, L.IN, L.OUT);
        setup(lin_fwd, L.out, r, no);
        check(bias ? "grad linear(bias) din" : "grad linear(no bias) din", L.in, din, ni);
        check(bias ? "grad linear(bias) dw" : "grad linear(no bias) dw", L.w, dw, nw);
        if (bias) check("grad linear(bias) db", L.b, db, L.OUT);
        /* accumulation: a second backward doubles the gradient */
        float *dw2 = zeros(nw);
        linear_backward(NULL, dw2, NULL, r, L.in, L.w, L.N, L.IN, L.OUT);
        linear_backward(NULL, dw2, NULL, r, L.in, L.w, L.N, L.IN, L.OUT);
        for (size_t i = 0; i < nw; i++) dw2[i] *= 0.5f;
        if (!bias) t_check(t_max_rel_err(dw2, dw, nw) < 1e-6, "linear backward accumulates (+=)",
                           "rel err of (2 passes)/2 vs 1 pass %.1e", t_max_rel_err(dw2, dw, nw));
        free(L.in); free(L.w); free(L.b); free(L.out); free(r); free(din); free(dw); free(db); free(dw2);
    }
    for (int use_mask = 0; use_mask < 2; use_mask++) {
        L.in = rnd(ni, 1, 21); L.w = rnd(nw, 0.5, 22); L.b = rnd(L.OUT, 1, 23);
        L.A = rnd(L.R * L.IN, 0.5, 24); L.B = rnd(L.OUT * L.R, 0.5, 25);
        L.out = zeros(no); L.xd = zeros(ni); L.u = zeros(L.N * L.R);
        L.mask = NULL;
        if (use_mask) { L.mask = zeros(ni); dropout_mask(L.mask, ni, 0.3f, 77); }
        float *r = rnd(no, 1, 26), *din = zeros(ni), *dw = zeros(nw), *db = zeros(L.OUT);
        float *dA = zeros(L.R * L.IN), *dB = zeros(L.OUT * L.R);
        lora_fwd();
        lora_backward(din, dw, db, dA, dB, r, L.in, L.xd, L.u, L.mask, L.w, L.A, L.B, L.scale,
                      L.N, L.IN, L.OUT, L.R);
        setup(lora_fwd, L.out, r, no);
        const char *tag = use_mask ? "grad lora(dropout)" : "grad lora";
        char nm[64];
        snprintf(nm, sizeof nm, "%s din", tag); check(nm, L.in, din, ni);
        snprintf(nm, sizeof nm, "%s dw", tag);  check(nm, L.w, dw, nw);
        snprintf(nm, sizeof nm, "%s db", tag);  check(nm, L.b, db, L.OUT);
        snprintf(nm, sizeof nm, "%s dA", tag);  check(nm, L.A, dA, L.R * L.IN);
        snprintf(nm, sizeof nm, "%s dB", tag);  check(nm, L.B, dB, L.OUT * L.R);
        free(L.in); free(L.w); free(L.b); free(L.A); free(L.B); free(L.out); free(L.xd); free(L.u);
        free(L.mask); free(r); free(din); free(dw); free(db); free(dA); free(dB);
    }
}

static void test_dropout_mask(void) {
    size_t n = 200000;
    float *m1 = zeros(n), *m2 = zeros(n);
    dropout_mask(m1, n, 0.25f, 123); dropout_mask(m2, n, 0.25f, 123);
    int same = memcmp(m1, m2, n * sizeof(float)) == 0;
    size_t kept = 0; int values_ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (m1[i] != 0.0f) { kept++; values_ok &= fabsf(m1[i] - 1.0f / 0.75f) < 1e-6f; }
    }
    double frac = (double)kept / n;
    t_check(same && values_ok && fabs(frac - 0.75) < 0.005, "dropout_mask deterministic, p=0.25",
            "kept %.4f (expect 0.75), values 0 or 1/(1-p): %s", frac, values_ok ? "yes" : "no");
    dropout_mask(m2, n, 0.25f, 124);
    t_check(memcmp(m1, m2, n * sizeof(float)) != 0, "dropout_mask seeds differ", "seed 123 vs 124");
    free(m1); free(m2);
}

/* ---------------- embedding ---------------- */
static struct { float *table, *out; int *ids; int N, D; } E;
static void emb_fwd(void) { embedding_forward(E.out, E.ids, E.table, E.N, E.D); }
static void test_embedding(void) {
    int ids[7] = {3, 0, 3, 5, 1, 3, 0};
    E.N = 7; E.D = 4; E.ids = ids; E.table = rnd(6 * 4, 1, 31); E.out = zeros(28);
    float *r = rnd(28, 1, 32), *dt = zeros(24);
    emb_fwd(); embedding_backward(dt, r, ids, E.N, E.D);
    setup(emb_fwd, E.out, r, 28);
    check("grad embedding dtable (repeated ids)", E.table, dt, 24);
    free(E.table); free(E.out); free(r); free(dt);
}

/* ---------------- norms ---------------- */
static struct { float *in, *w, *b, *out, *mean, *rstd; int N, D; } NRM;
static void rms_fwd(void) { rmsnorm_forward(NRM.out, NRM.rstd, NRM.in, NRM.w, 1e-6f, NRM.N, NRM.D); }
static void ln_fwd(void) { layernorm_forward(NRM.out, NRM.mean, NRM.rstd, NRM.in, NRM.w, NRM.b, 1e-5f, NRM.N, NRM.D); }
static void test_norms(void) {
    NRM.N = 5; NRM.D = 300; size_t n = 1500;
    NRM.in = rnd(n, 1, 41); NRM.w = rnd(NRM.D, 1, 42); NRM.b = rnd(NRM.D, 1, 43);
    NRM.out = zeros(n); NRM.mean = zeros(NRM.N); NRM.rstd = zeros(NRM.N);
    for (size_t i = 0; i < n; i++) NRM.in[i] += 0.5f;
    float *r = rnd(n, 1, 44), *din = zeros(n), *dw = zeros(NRM.D), *db = zeros(NRM.D);
    rms_fwd(); rmsnorm_backward(din, dw, r, NRM.in, NRM.w, NRM.rstd, NRM.N, NRM.D);
    setup(rms_fwd, NRM.out, r, n);
    check("grad rmsnorm din", NRM.in, din, n);
    check("grad rmsnorm dw", NRM.w, dw, NRM.D);
    memset(din, 0, n * 4); memset(dw, 0, NRM.D * 4);
    ln_fwd(); layernorm_backward(din, dw, db, r, NRM.in, NRM.w, NRM.mean, NRM.rstd, NRM.N, NRM.D);
    setup(ln_fwd, NRM.out, r, n);
    check("grad layernorm din", NRM.in, din, n);
    check("grad layernorm dw", NRM.w, dw, NRM.D);
    check("grad layernorm db", NRM.b, db, NRM.D);
    float *w = NRM.w, *b = NRM.b;
    NRM.w = NULL; NRM.b = NULL; memset(din, 0, n * 4);
    ln_fwd(); layernorm_backward(din, NULL, NULL, r, NRM.in, NULL, NRM.mean, NRM.rstd, NRM.N, NRM.D);
    check("grad layernorm(no affine) din", NRM.in, din, n);
    free(w); free(b); free(NRM.in); free(NRM.out); free(NRM.mean); free(NRM.rstd);
    free(r); free(din); free(dw); free(db);
}

/* ---------------- RoPE, softmax ---------------- */
static struct { float *in, *out; int *pos; int N, H, hd; } RP;
static void rope_fwd(void) { rope_forward(RP.out, RP.in, RP.pos, 10000.0f, RP.N, RP.H, RP.hd); }
static void test_rope(void) {
    int pos[4] = {0, 7, 3, 1000};
    RP.N = 4; RP.H = 3; RP.hd = 8; RP.pos = pos; size_t n = 96;
    RP.in = rnd(n, 1, 51); RP.out = zeros(n);
    float *r = rnd(n, 1, 52), *din = zeros(n);
    rope_fwd(); rope_backward(din, r, pos, 10000.0f, RP.N, RP.H, RP.hd);
    setup(rope_fwd, RP.out, r, n);
    check("grad rope din", RP.in, din, n);
    /* position 0 is the identity; norms are preserved */
    double e0 = t_max_rel_err(RP.out, RP.in, 24), nin = 0, nout = 0;
    for (size_t i = 0; i < n; i++) { nin += RP.in[i] * RP.in[i]; nout += RP.out[i] * RP.out[i]; }
    t_check(e0 < 1e-7 && fabs(nin - nout) / nin < 1e-5, "rope identity at pos 0, norm-preserving",
            "pos0 err %.1e, |norm change| %.1e", e0, fabs(nin - nout) / nin);
    free(RP.in); free(RP.out); free(r); free(din);
    /* long positions: the vectorised cos/sin must agree with libm on HF's float32 angle */
    enum { LN = 3000, LHD = 128 };
    float *x = t_alloc(LN * LHD), *y = t_alloc(LN * LHD);
    int *lp = malloc(LN * sizeof(int));
    for (int n = 0; n < LN; n++) { lp[n] = n * 13; for (int i = 0; i < LHD; i++) x[n * LHD + i] = i < LHD / 2 ? 1.0f : 0.0f; }
    rope_forward(y, x, lp, 10000.0f, LN, 1, LHD);
    double md = 0;
    for (int n = 0; n < LN; n++) for (int i = 0; i < LHD / 2; i++) {
        float inv = (float)(1.0 / pow(10000.0, (2.0 * i) / LHD)), ang = (float)lp[n] * inv;
        md = fmax(md, fabs(y[n * LHD + i] - (float)cos((double)ang)));
        md = fmax(md, fabs(y[n * LHD + i + LHD / 2] - (float)sin((double)ang)));
    }
    t_check(md <= 1.2e-7, "rope cos/sin vs libm, positions to 39000", "max abs diff %.2e", md);
    free(x); free(y); free(lp);
}

static struct { float *in, *out; int N, C; } SM;
static void sm_fwd(void) { softmax_forward(SM.out, SM.in, SM.N, SM.C); }
static void test_softmax(void) {
    SM.N = 4; SM.C = 11; size_t n = 44;
    SM.in = rnd(n, 2, 61); SM.out = zeros(n);
    float *r = rnd(n, 1, 62), *din = zeros(n);
    sm_fwd(); softmax_backward(din, r, SM.out, SM.N, SM.C);
    setup(sm_fwd, SM.out, r, n);
    check("grad softmax din", SM.in, din, n);
    free(SM.in); free(SM.out); free(r); free(din);
}

/* ---------------- attention (+ refocus chain) ---------------- */
static float *g_extra; static size_t g_na; /* fixed gradient on the probabilities: L += Σ att·E */
static double at_loss(void *unused);
static double at_loss_extra(void *unused);
static struct {
    float *q, *k, *v, *out, *att, *ref_out, *ref_r; int *key_len;
    int B, T, S, Hq, Hkv, hd, causal, p, s; float scale; int with_refocus;
} AT;
/* When with_refocus, the scalar is Σ out·r + Σ refocus(out-as-hidden, att)·r2: the
 * refocusing reads batch 0's attention output rows as "hidden states". */
static void at_fwd(void) {
    attention_forward(AT.out, AT.att, AT.q, AT.k, AT.v, AT.key_len, AT.causal, AT.scale,
                      AT.B, AT.T, AT.S, AT.Hq, AT.Hkv, AT.hd);
}
static double at_loss(void *unused) {
    (void)unused;
    at_fwd();
    double l = t_dot(AT.out, g_r, g_nout);
    if (AT.with_refocus) {
        int D = AT.Hq * AT.hd;
        refocus_forward(AT.ref_out, AT.out, AT.att, AT.p, AT.s, 0.1f, AT.T, AT.S, AT.Hq, D);
        l += t_dot(AT.ref_out, AT.ref_r, D);
    }
    return l;
}
static double at_loss_extra(void *unused) { return at_loss(unused) + t_dot(AT.att, g_extra, g_na); }
static void run_attention_case(const char *tag, int B, int T, int S, int Hq, int Hkv, int hd,
                               int causal, const int *key_len, int with_extra, int with_refocus) {
    AT.B = B; AT.T = T; AT.S = S; AT.Hq = Hq; AT.Hkv = Hkv; AT.hd = hd; AT.causal = causal;
    AT.key_len = (int *)key_len; AT.scale = 1.0f / sqrtf((float)hd); AT.with_refocus = with_refocus;
    size_t nq = (size_t)B * T * Hq * hd, nk = (size_t)B * S * Hkv * hd, na = (size_t)B * Hq * T * S;
    AT.q = rnd(nq, 1, 71); AT.k = rnd(nk, 1, 72); AT.v = rnd(nk, 1, 73);
    AT.out = zeros(nq); AT.att = zeros(na);
    float *r = rnd(nq, 1, 74), *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    float *extra = NULL, *scratch = zeros(attention_scratch_floats(B, T, S, Hq));
    float *dout = zeros(nq);
    memcpy(dout, r, nq * sizeof(float));
    g_r = r; g_nout = nq;
    at_fwd();
    if (with_extra) { /* an arbitrary fixed gradient on the probabilities: L += Σ att·E */
        extra = rnd(na, 1, 75);
    }
    int D = Hq * hd;
    if (with_refocus) {
        AT.p = T - 1; AT.s = 1;
        AT.ref_out = zeros(D); AT.ref_r = rnd(D, 1, 76);
        extra = zeros(na);
        /* refocus backward: into the hidden rows (= attention output of batch 0) and the probabilities */
        refocus_forward(AT.ref_out, AT.out, AT.att, AT.p, AT.s, 0.1f, T, S, Hq, D);
        refocus_backward(dout, extra, AT.ref_r, AT.out, AT.att, AT.p, AT.s, 0.1f, T, S, Hq, D);
    }
    attention_backward(dq, dk, dv, scratch, dout, extra, AT.att, AT.q, AT.k, AT.v, AT.scale,
                       B, T, S, Hq, Hkv, hd);
    char nm[96];
    if (with_extra && !with_refocus) {
        /* the FD scalar must include Σ att·E: fold it in through a wrapper */
        g_extra = extra; g_na = na;
        t_loss_fn wrap = at_loss_extra;
        snprintf(nm, sizeof nm, "grad attention%s dq", tag); t_gradcheck(nm, wrap, NULL, AT.q, dq, nq, 1e-2f, 2e-2, 400);
        snprintf(nm, sizeof nm, "grad attention%s dk", tag); t_gradcheck(nm, wrap, NULL, AT.k, dk, nk, 1e-2f, 2e-2, 400);
        snprintf(nm, sizeof nm, "grad attention%s dv", tag); t_gradcheck(nm, wrap, NULL, AT.v, dv, nk, 1e-2f, 2e-2, 400);
    } else {
        snprintf(nm, sizeof nm, "grad attention%s dq", tag); t_gradcheck(nm, at_loss, NULL, AT.q, dq, nq, 1e-2f, 2e-2, 400);
        snprintf(nm, sizeof nm, "grad attention%s dk", tag); t_gradcheck(nm, at_loss, NULL, AT.k, dk, nk, 1e-2f, 2e-2, 400);
        snprintf(nm, sizeof nm, "grad attention%s dv", tag); t_gradcheck(nm, at_loss, NULL, AT.v, dv, nk, 1e-2f, 2e-2, 400);
    }
    free(AT.q); free(AT.k); free(AT.v); free(AT.out); free(AT.att); free(r); free(dq); free(dk);
    free(dv); free(extra); free(scratch); free(dout);
    if (with_refocus) { free(AT.ref_out); free(AT.ref_r); }
}
static void test_attention(void) {
    int kl[2] = {5, 3};
    run_attention_case("(causal)", 1, 6, 6, 2, 2, 4, 1, NULL, 0, 0);
    run_attention_case("(gqa 4/2, padding)", 2, 5, 5, 4, 2, 4, 0, kl, 0, 0);
    run_attention_case("(causal T<S)", 1, 3, 6, 2, 1, 4, 1, NULL, 0, 0);
    run_attention_case("(+datt_extra)", 1, 5, 5, 2, 2, 4, 1, NULL, 1, 0);
    run_attention_case("(->refocus chain)", 1, 7, 7, 2, 2, 4, 1, NULL, 0, 1);
    /* masks: probabilities of masked keys are exactly zero and rows sum to 1 */
    int B = 2, T = 4, S = 4, H = 2, hd = 3; int klen[2] = {4, 2};
    float *q = rnd(B * T * H * hd, 1, 81), *k = rnd(B * S * H * hd, 1, 82), *v = rnd(B * S * H * hd, 1, 83);
    float *o = zeros(B * T * H * hd), *att = zeros(B * H * T * S);
    attention_forward(o, att, q, k, v, klen, 1, 0.5f, B, T, S, H, H, hd);
    int ok = 1;
    for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int t = 0; t < T; t++) {
        float *row = att + (((size_t)b * H + h) * T + t) * S; double sum = 0;
        for (int j = 0; j < S; j++) {
            int vis = j <= t && j < klen[b];
            if (!vis && row[j] != 0.0f) ok = 0;
            sum += row[j];
        }
        if (fabs(sum - 1.0) > 1e-5) ok = 0;
    }
    t_check(ok, "attention masks exact (causal + padding)", "masked probabilities == 0, rows sum to 1");
    free(q); free(k); free(v); free(o); free(att);
}

/* ---------------- element-wise ---------------- */
static struct { float *a, *b, *out; size_t n; int which; } EW;
static void ew_fwd(void) {
    switch (EW.which) {
    case 0: silu_forward(EW.out, EW.a, EW.n); break;
    case 1: gelu_forward(EW.out, EW.a, EW.n); break;
    case 2: quick_gelu_forward(EW.out, EW.a, EW.n); break;
    case 3: relu_forward(EW.out, EW.a, EW.n); break;
    case 4: swiglu_forward(EW.out, EW.a, EW.b, EW.n); break;
    case 5: add_forward(EW.out, EW.a, EW.b, EW.n); break;
    }
}
static void test_elementwise(void) {
    const char *names[] = {"silu", "gelu", "quick_gelu", "relu", "swiglu", "add"};
    EW.n = 257;
    for (int w = 0; w < 6; w++) {
        EW.which = w; EW.a = rnd(EW.n, 2, 91 + w); EW.b = rnd(EW.n, 1, 97 + w); EW.out = zeros(EW.n);
        if (w == 3) for (size_t i = 0; i < EW.n; i++) if (fabsf(EW.a[i]) < 0.05f) EW.a[i] = 0.3f; /* keep off the kink */
        float *r = rnd(EW.n, 1, 99), *da = zeros(EW.n), *db = zeros(EW.n);
        ew_fwd();
        switch (w) {
        case 0: silu_backward(da, r, EW.a, EW.n); break;
        case 1: gelu_backward(da, r, EW.a, EW.n); break;
        case 2: quick_gelu_backward(da, r, EW.a, EW.n); break;
        case 3: relu_backward(da, r, EW.a, EW.n); break;
        case 4: swiglu_backward(da, db, r, EW.a, EW.b, EW.n); break;
        case 5: add_backward(da, db, r, EW.n); break;
        }
        setup(ew_fwd, EW.out, r, EW.n);
        char nm[64];
        snprintf(nm, sizeof nm, "grad %s d%s", names[w], w >= 4 ? (w == 4 ? "gate" : "a") : "in");
        check_eps(nm, EW.a, da, EW.n, 1e-2f, 2e-2);
        if (w >= 4) { snprintf(nm, sizeof nm, "grad %s d%s", names[w], w == 4 ? "up" : "b"); check(nm, EW.b, db, EW.n); }
        free(EW.a); free(EW.b); free(EW.out); free(r); free(da); free(db);
    }
}

/* ---------------- losses ---------------- */
static struct { float *x, *y, *lse; int *tg; int N, V; float val; int which; } LS;
static void loss_fwd(void) {
    int cnt;
    if (LS.which == 0) LS.val = softmax_xent_forward(LS.lse, &cnt, LS.x, LS.tg, LS.N, LS.V, -100);
    else if (LS.which == 1) LS.val = bce_logits_forward(LS.x, LS.y, (size_t)LS.N * LS.V);
    else LS.val = dice_forward(LS.x, LS.y, (size_t)LS.N * LS.V);
}
static void test_losses(void) {
    static const float one = 1.7f; /* dloss */
    int tg[6] = {3, -100, 0, 9, -100, 4};
    LS.N = 6; LS.V = 10; LS.tg = tg; size_t n = 60;
    LS.x = rnd(n, 2, 101); LS.y = zeros(n); LS.lse = zeros(LS.N);
    for (size_t i = 0; i < n; i++) LS.y[i] = (i * 7919) % 3 == 0 ? 1.0f : 0.0f;
    float *dx = zeros(n);
    int cnt;
    LS.which = 0; loss_fwd();
    softmax_xent_forward(LS.lse, &cnt, LS.x, tg, LS.N, LS.V, -100);
    softmax_xent_backward(dx, LS.x, LS.lse, tg, one, cnt, LS.N, LS.V, -100);
    setup(loss_fwd, &LS.val, &one, 1);
    check("grad softmax_xent dlogits (ignore -100)", LS.x, dx, n);
    /* reference value in double */
    double ref = 0; int c = 0;
    for (int i = 0; i < LS.N; i++) {
        if (tg[i] == -100) continue;
        double mx = -1e30, s = 0;
        for (int j = 0; j < LS.V; j++) mx = fmax(mx, LS.x[i * LS.V + j]);
        for (int j = 0; j < LS.V; j++) s += exp(LS.x[i * LS.V + j] - mx);
        ref += mx + log(s) - LS.x[i * LS.V + tg[i]]; c++;
    }
    ref /= c; loss_fwd();
    t_check(cnt == 4 && fabs(LS.val - ref) < 1e-5 * fabs(ref), "softmax_xent value and count",
            "loss %.7f ref %.7f count %d", LS.val, ref, cnt);
    int allign[2] = {-100, -100}; float lse2[2];
    float v0 = softmax_xent_forward(lse2, &cnt, LS.x, allign, 2, LS.V, -100);
    t_check(v0 == 0.0f && cnt == 0, "softmax_xent all ignored", "loss %g count %d", v0, cnt);

    memset(dx, 0, n * 4); LS.which = 1; loss_fwd();
    bce_logits_backward(dx, LS.x, LS.y, one, n);
    check("grad bce_logits dx", LS.x, dx, n);
    ref = 0;
    for (size_t i = 0; i < n; i++) ref += log1p(exp(LS.x[i])) - LS.x[i] * LS.y[i];
    ref /= n;
    t_check(fabs(LS.val - ref) < 1e-5 * ref, "bce_logits value", "%.7f ref %.7f", LS.val, ref);

    memset(dx, 0, n * 4); LS.which = 2; loss_fwd();
    dice_backward(dx, LS.x, LS.y, one, n);
    check("grad dice dx", LS.x, dx, n);
    double I = 0, S = 0, Y = 0;
    for (size_t i = 0; i < n; i++) { double s = 1 / (1 + exp(-LS.x[i])); I += s * LS.y[i]; S += s; Y += LS.y[i]; }
    ref = 1 - (2 * I + DICE_SMOOTH) / (S + Y + DICE_SMOOTH);
    t_check(fabs(LS.val - ref) < 1e-5, "dice value", "%.7f ref %.7f", LS.val, ref);
    free(LS.x); free(LS.y); free(LS.lse); free(dx);
}

/* ---------------- refocus ---------------- */
static struct { float *hid, *att, *out; int p, s, T, S, Hq, D; } RF;
static void rf_fwd(void) { refocus_forward(RF.out, RF.hid, RF.att, RF.p, RF.s, 0.1f, RF.T, RF.S, RF.Hq, RF.D); }
static void test_refocus(void) {
    RF.T = 8; RF.S = 8; RF.Hq = 3; RF.D = 10; RF.p = 6; RF.s = 2;
    size_t nh = RF.T * RF.D, na = RF.Hq * RF.T * RF.S;
    RF.hid = rnd(nh, 1, 111); RF.att = zeros(na); RF.out = zeros(RF.D);
    t_fill_uniform(RF.att, na, 0.05f, 1.0f, 112);
    float *r = rnd(RF.D, 1, 113), *dh = zeros(nh), *da = zeros(na);
    rf_fwd(); refocus_backward(dh, da, r, RF.hid, RF.att, RF.p, RF.s, 0.1f, RF.T, RF.S, RF.Hq, RF.D);
    setup(rf_fwd, RF.out, r, RF.D);
    check("grad refocus dhid", RF.hid, dh, nh);
    /* only row p's span entries carry gradient; check those through FD on the whole tensor */
    check_eps("grad refocus datt", RF.att, da, na, 1e-3f, 2e-2);
    /* empty span: out == hid[p] */
    RF.s = RF.p; rf_fwd();
    t_check(memcmp(RF.out, RF.hid + (size_t)RF.p * RF.D, RF.D * 4) == 0, "refocus empty span gives hid[p]", "s == p");
    free(RF.hid); free(RF.att); free(RF.out); free(r); free(dh); free(da);
}

/* ---------------- AdamW and clipping primitives ---------------- */
static void test_adamw(void) {
    size_t n = 50;
    float *p = rnd(n, 1, 121), *g1 = rnd(n, 1, 122), *g2 = rnd(n, 1, 123), *m = zeros(n), *v = zeros(n);
    double P[50], M[50] = {0}, V[50] = {0};
    for (size_t i = 0; i < n; i++) P[i] = p[i];
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    for (int t = 1; t <= 2; t++) {
        float *g = t == 1 ? g1 : g2;
        adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, t);
        for (size_t i = 0; i < n; i++) {
            P[i] *= 1 - lr * wd;
            M[i] = b1 * M[i] + (1 - b1) * g[i]; V[i] = b2 * V[i] + (1 - b2) * (double)g[i] * g[i];
            double mh = M[i] / (1 - pow(b1, t)), vh = V[i] / (1 - pow(b2, t));
            P[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    double e = t_max_rel_err_d(p, P, n);
    t_check(e < 1e-5, "adamw 2 steps vs double reference", "max rel err %.1e", e);
    double ss = sumsq(g1, n), ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)g1[i] * g1[i];
    t_check(fabs(ss - ref) < 1e-9 * ref, "sumsq", "%.9g ref %.9g", ss, ref);
    free(p); free(g1); free(g2); free(m); free(v);
}

/* The CPU backend's vectorisable exp/sigmoid/erf against double libm (bounds in vmath.h). */
static void test_vmath(void) {
    double me = 0, ms = 0, mr = 0;
    for (double x = -87.0; x < 88.0; x += 1.7e-3) {
        double r = fabs(vexpf((float)x) - exp((double)(float)x)) / exp((double)(float)x);
        if (r > me) me = r;
    }
    for (double x = -12.0; x < 12.0; x += 3.1e-4) {
        float xf = (float)x;
        double t = 1.0 / (1.0 + exp(-(double)xf));
        if (fabs(vsigmoidf(xf) - t) / t > ms) ms = fabs(vsigmoidf(xf) - t) / t;
        if (fabs(verff(xf) - erf((double)xf)) > mr) mr = fabs(verff(xf) - erf((double)xf));
    }
    double ml = 0, msp = 0;
    for (double x = 1e-30; x < 1e30; x *= 1.0007) {
        float xf = (float)x; double l = log((double)xf);
        if (fabs(l) > 1e-3 && fabs(vlogf(xf) - l) / fabs(l) > ml) ml = fabs(vlogf(xf) - l) / fabs(l);
    }
    for (double x = -40.0; x < 40.0; x += 7.3e-4) {
        float xf = (float)x; double t = log1p(exp((double)xf));
        if (fabs(vsoftplusf(xf) - t) / t > msp) msp = fabs(vsoftplusf(xf) - t) / t;
    }
    t_check(ml < 2e-7 && msp < 4e-7 && vlog1pf(1e-9f) == 1e-9f, "vmath log/softplus accuracy",
            "log max rel %.2e, softplus max rel %.2e, log1p(1e-9) %.3g", ml, msp, vlog1pf(1e-9f));
    int edges = vexpf(-1000.0f) >= 0.0f && vexpf(-1000.0f) < 1e-37f && isinf(vexpf(1000.0f)) && vexpf(0.0f) == 1.0f &&
                verff(0.0f) == 0.0f && verff(30.0f) == 1.0f && verff(-30.0f) == -1.0f;
    t_check(me < 1.5e-7 && ms < 2.5e-7 && mr < 5e-7 && edges, "vmath exp/sigmoid/erf accuracy",
            "exp max rel %.2e, sigmoid max rel %.2e, erf max abs %.2e, edges %s", me, ms, mr, edges ? "ok" : "WRONG");
}

/* The cross-thread sums are bitwise identical for any thread count (train.deterministic). */
static void test_deterministic_sums(void) {
    size_t n = 3000017;
    float *x = rnd(n, 2, 131), *y = t_alloc(n);
    for (size_t i = 0; i < n; i++) y[i] = (i % 3) == 0;
    int tg[64]; float lse[64];
    for (int i = 0; i < 64; i++) tg[i] = (i * 37) % 1000;
    double r1[4] = {0}, r[4];
    int same = 1, counts[3] = {1, 2, 3};
    int saved = k_num_threads();
    for (int c = 0; c < 3; c++) {
        k_set_num_threads(counts[c]);
        r[0] = sumsq(x, n); r[1] = bce_logits_forward(x, y, n); r[2] = dice_forward(x, y, n);
        r[3] = softmax_xent_forward(lse, NULL, x, tg, 64, 1000, -100);
        if (c == 0) memcpy(r1, r, sizeof r);
        else same &= memcmp(r1, r, sizeof r) == 0;
    }
    k_set_num_threads(saved);
    t_check(same, "sums bitwise equal with 1, 2 and 3 threads", "sumsq %.17g bce %.9g dice %.9g xent %.9g",
            r1[0], r1[1], r1[2], r1[3]);
    free(x); free(y);
}

int main(void) {
    test_deterministic_sums();
    test_vmath();
    test_matmul();
    test_linear_lora();
    test_dropout_mask();
    test_embedding();
    test_norms();
    test_rope();
    test_softmax();
    test_attention();
    test_elementwise();
    test_losses();
    test_refocus();
    test_adamw();
    return t_exit_code();
}
