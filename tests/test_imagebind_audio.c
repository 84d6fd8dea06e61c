/* tests/test_imagebind_audio.c — the ImageBind audio encoder and AnyRef's
 * audio_projector (model/imagebind_audio.c), and the transpose primitive it added.
 *
 * 1. transpose_forward/backward (kernels.h): forward exact against a naive loop on
 *    a shape that is no multiple of the tile; backward by finite differences,
 *    accumulation and NULL.
 * 2. Config: imagebind_huge's grid is 12 x 19 (T = 229); its declared names and
 *    shapes equal the 176 parameters of the official module tree plus the
 *    projector (tests/fixtures/imagebind_audio.h5 huge/names, built by the
 *    reference on the meta device); error paths (bad config, too many clips,
 *    projector absent).
 * 3. PyTorch float64 parity (tests/ref/imagebind_audio_ref.py, a tiny config: fbank
 *    32 x 40, kernel 8 stride 6 -> 5 x 6 patches, D 32, 2 blocks, 4 heads, out 48,
 *    projector to 24, 3 clips): stem tokens, each block's output, the head before
 *    normalisation, the final embedding (x 20), the projector output and its
 *    gradients (weight, bias, d emb). Tolerance 1e-5 of each tensor's scale.
 * 4. Finite differences of the projector backward (weight, bias, emb).
 * 5. cfg.frozen_half (bf16, fp16): the blocks' in_proj / out_proj / fc1 / fc2
 *    in 16 bits; the embedding equals the fp32 encoder's over the rounded
 *    weights bit for bit (CPU) and moves, within 2e-2, in the matching 16-bit
 *    GEMM mode (t_check_half).
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/imagebind_audio.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/imagebind_audio.h5"
#define PFX "imagebind_audio "
#define TOL 1e-5

enum { TD_ = 32, DEPTH = 2, HEADS = 4, MLP = 4, KER = 8, STR = 6, MELS = 32, LEN = 40, OUT = 48, LLM = 24,
       CLIPS = 3, GH = 5, GW = 6, TOK = GH * GW + 1 };

static imagebind_audio_cfg tiny_cfg(void) {
    imagebind_audio_cfg c = {.embed_dim = TD_, .depth = DEPTH, .heads = HEADS, .mlp_ratio = MLP, .kernel = KER,
                             .stride = STR, .n_mels = MELS, .target_len = LEN, .out_dim = OUT,
                             .logit_scale = 20.0f, .llm_dim = LLM, .proj_trainable = 1};
    return c;
}

/* ---- 1. transpose ------------------------------------------------------- */
typedef struct { float *in, *out, *r; int B, R, C; } tr_ctx;

static double tr_loss(void *vc) {
    tr_ctx *c = vc;
    transpose_forward(c->out, c->in, c->B, c->R, c->C);
    return t_dot(c->out, c->r, (size_t)c->B * c->R * c->C);
}

static void transpose_checks(void) {
    const int B = 2, R = 37, C = 45;
    const size_t n = (size_t)B * R * C;
    tr_ctx c = {t_alloc(n), t_alloc(n), t_alloc(n), B, R, C};
    t_fill_normal(c.in, n, 1.0f, 1);
    t_fill_normal(c.r, n, 1.0f, 2);
    transpose_forward(c.out, c.in, B, R, C);
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++)
                bad += c.out[((size_t)b * C + j) * R + i] != c.in[((size_t)b * R + i) * C + j];
    t_check(bad == 0, PFX "transpose forward", "[%d, %d, %d] -> [%d, %d, %d]: %zu entries differ from the naive loop",
            B, R, C, B, C, R, bad);
    float *din = t_alloc(n);
    transpose_backward(din, c.r, B, R, C);
    t_gradcheck(PFX "transpose backward", tr_loss, &c, c.in, din, n, 1e-2f, 1e-3, 200);
    float *din2 = t_alloc(n);
    memcpy(din2, din, n * sizeof(float));
    transpose_backward(din2, c.r, B, R, C);
    transpose_backward(NULL, c.r, B, R, C);
    double dev = 0;
    for (size_t i = 0; i < n; i++) dev = fmax(dev, fabs(din2[i] - 2.0f * din[i]));
    t_check(dev == 0.0, PFX "transpose accumulate", "second backward adds the same (max dev %.1e); NULL skipped", dev);
    free(c.in); free(c.out); free(c.r); free(din); free(din2);
}

/* ---- 2. config, names, errors ------------------------------------------ */
/* Every "name d0,d1,..." line of huge/names must be declared with that shape, and nothing else. */
static void huge_names(void) {
    imagebind_audio_cfg c = imagebind_audio_huge(4096);
    int gh = 0, gw = 0, t = 0;
    int rc = imagebind_audio_grid(&c, &gh, &gw, &t);
    t_check(rc == 0 && gh == 12 && gw == 19 && t == 229, PFX "huge grid",
            "128 x 204 fbank, kernel 16 stride 10 -> %d x %d patches, %d tokens (want 12 x 19, 229)", gh, gw, t);
    ar_params ps;
    params_init_empty(&ps);
    if (imagebind_audio_declare(&c, &ps)) { t_fail(PFX "huge declare", "%s", ar_error()); params_free(&ps); return; }
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) { params_free(&ps); return; }
    int len = fx_len(&fx, "huge/names");
    char *txt = len > 0 ? fx_alloc(&fx, (size_t)len + 1) : NULL;
    const int shp[1] = {len};
    if (!txt || !fx_read(&fx, "huge/names", H5T_NATIVE_UCHAR, txt, 1, shp)) goto done;
    txt[len] = 0;
    int lines = 0, missing = 0, wrong = 0;
    char first_bad[200] = "";
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = 0;
        lines++;
        const ar_param *p = params_find(&ps, line);
        int shape[4] = {0}, nd = 0;
        for (char *s = sp + 1; *s && nd < 4; nd++) {
            shape[nd] = (int)strtol(s, &s, 10);
            if (*s == ',') s++;
        }
        int same = p && p->ndim == nd;
        for (int i = 0; same && i < nd; i++) same = p->shape[i] == shape[i];
        if (!p) missing++;
        else if (!same) wrong++;
        if ((!p || !same) && !first_bad[0]) snprintf(first_bad, sizeof first_bad, " (first: %s)", line);
    }
    size_t numel = params_numel(&ps, 0), want = 86235648 + (size_t)4096 * 1024 + 4096;
    t_check(lines == ps.n && !missing && !wrong && numel == want, PFX "huge names",
            "%d reference tensors, %d declared, %d missing, %d shaped differently%s; %zu floats (want %zu)", lines,
            ps.n, missing, wrong, first_bad, numel, want);
    t_check(params_find(&ps, "model.audio_projector.weight") && params_g(&ps, "model.audio_projector.weight") == NULL,
            PFX "huge projector", "declared as model.audio_projector.* (gradients exist only after params_alloc)");
done:
    free(txt);
    fx_close(&fx);
    params_free(&ps);
}

static void errors(void) {
    imagebind_audio_cfg c = tiny_cfg();
    c.heads = 5;
    int e0 = imagebind_audio_grid(&c, NULL, NULL, NULL);
    c = tiny_cfg();
    c.kernel = 41;
    int e1 = imagebind_audio_grid(&c, NULL, NULL, NULL);
    c = tiny_cfg();
    c.llm_dim = 0;
    ar_params ps;
    params_init_empty(&ps);
    int e2 = -2, e3 = -2, e4 = -2, n = -1;
    imagebind_audio *m = NULL;
    if (!imagebind_audio_declare(&c, &ps) && !params_alloc(&ps) && (m = imagebind_audio_create(&c, &ps, 2))) {
        n = ps.n;
        float *fb = k_malloc((size_t)3 * MELS * LEN * 4), *emb = k_malloc((size_t)3 * OUT * 4);
        e2 = imagebind_audio_encode(m, fb, 3, emb, NULL);
        e3 = imagebind_audio_project(m, emb, 1, emb);
        e4 = imagebind_audio_project_backward(m, emb, emb, 1, NULL);
        k_free(fb); k_free(emb);
    }
    imagebind_audio_free(m);
    params_free(&ps);
    /* create against a registry missing a tensor */
    params_init_empty(&ps);
    c = tiny_cfg();
    imagebind_audio_cfg c2 = c;
    c2.depth = 1;
    imagebind_audio *m2 = NULL;
    if (!imagebind_audio_declare(&c2, &ps) && !params_alloc(&ps)) m2 = imagebind_audio_create(&c, &ps, 1);
    t_check(e0 == -1 && e1 == -1 && e2 == -1 && e3 == -1 && e4 == -1 && n == 5 + DEPTH * 14 + 3 && !m2,
            PFX "errors", "heads 5 of D 32 -> %d, kernel 41 > 32 -> %d, 3 clips > 2 -> %d, project without "
            "projector -> %d / %d, undeclared block -> %s; %d tensors without projector", e0, e1, e2, e3, e4,
            m2 ? "created" : "NULL", n);
    imagebind_audio_free(m2);
    params_free(&ps);
}

/* ---- 3. parity ---------------------------------------------------------- */
/* Uploads the float64 dataset ds (shape[nd], n floats) as float32 into dev. */
static int upload(const h5fixture *fx, const char *ds, float *dev, int nd, const int *shape, size_t n) {
    double *hd = fx_alloc(fx, n * sizeof(double));
    float *hf = fx_alloc(fx, n * sizeof(float));
    int ok = fx_read(fx, ds, H5T_NATIVE_DOUBLE, hd, nd, shape);
    if (ok) {
        for (size_t i = 0; i < n; i++) hf[i] = (float)hd[i];
        k_upload(dev, hf, n * sizeof(float));
    }
    free(hd);
    free(hf);
    return ok;
}

static void parity(void) {
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return;
    const fx_int_attr iv[] = {{"embed_dim", TD_}, {"depth", DEPTH}, {"heads", HEADS}, {"mlp_ratio", MLP},
                              {"kernel", KER},    {"stride", STR},  {"n_mels", MELS}, {"target_len", LEN},
                              {"out_dim", OUT},   {"llm_dim", LLM}, {"clips", CLIPS}, {"grid_h", GH},
                              {"grid_w", GW}};
    const fx_float_attr fv[] = {{"logit_scale", 20.0f}};
    imagebind_audio_cfg c = tiny_cfg();
    ar_params ps;
    params_init_empty(&ps);
    imagebind_audio *m = NULL;
    const size_t nfb = (size_t)CLIPS * MELS * LEN, ntok = (size_t)CLIPS * TOK * TD_;
    float *fb = k_malloc(nfb * 4), *emb = k_malloc(CLIPS * OUT * 4), *tok = k_malloc(CLIPS * LLM * 4);
    float *r = k_malloc(CLIPS * LLM * 4), *demb = k_malloc(CLIPS * OUT * 4), *head = k_malloc(CLIPS * OUT * 4);
    float *stem = k_malloc(ntok * 4), *blk[DEPTH];
    for (int i = 0; i < DEPTH; i++) blk[i] = k_malloc(ntok * 4);
    const char *const grads[] = {"grads", NULL};
    if (!fx_check_config(&fx, iv, sizeof iv / sizeof *iv, fv, 1)) goto done;
    if (imagebind_audio_declare(&c, &ps) || params_alloc(&ps) || !(m = imagebind_audio_create(&c, &ps, CLIPS))) {
        t_fail(PFX "create", "%s", ar_error());
        goto done;
    }
    if (!fx_load_params(&fx, &ps, grads)) goto done;
    const int fbs[4] = {CLIPS, 1, MELS, LEN}, ts[3] = {CLIPS, TOK, TD_}, os[2] = {CLIPS, OUT}, ps2[2] = {CLIPS, LLM};
    if (!upload(&fx, "fbank", fb, 4, fbs, nfb) || !upload(&fx, "r", r, 2, ps2, CLIPS * LLM)) goto done;
    imagebind_audio_taps taps = {.stem = stem, .blocks = blk, .head = head};
    if (imagebind_audio_encode(m, fb, CLIPS, emb, &taps)) { t_fail(PFX "encode", "%s", ar_error()); goto done; }
    fx_check(&fx, "stem tokens", "stem", stem, 3, ts, TOL);
    for (int i = 0; i < DEPTH; i++) {
        char label[32], ds[32];
        snprintf(label, sizeof label, "block %d", i);
        snprintf(ds, sizeof ds, "blocks/%d", i);
        fx_check(&fx, label, ds, blk[i], 3, ts, TOL);
    }
    fx_check(&fx, "head (before normalise)", "head", head, 2, os, TOL);
    fx_check(&fx, "embedding (x 20)", "emb", emb, 2, os, TOL);
    /* the projector runs on the reference's embedding so its check is independent of the encoder's */
    if (!upload(&fx, "emb", emb, 2, os, CLIPS * OUT)) goto done;
    params_zero_grad(&ps);
    k_zero(demb, CLIPS * OUT * 4);
    if (imagebind_audio_project(m, emb, CLIPS, tok) ||
        imagebind_audio_project_backward(m, r, emb, CLIPS, demb)) {
        t_fail(PFX "project", "%s", ar_error());
        goto done;
    }
    fx_check(&fx, "projector out", "tok", tok, 2, ps2, TOL);
    fx_check(&fx, "grad.emb", "demb", demb, 2, os, TOL);
    for (int i = 0; i < ps.n; i++) {
        if (!ps.p[i].trainable) continue;
        char label[160], ds[160];
        snprintf(label, sizeof label, "grad.%s", ps.p[i].name);
        snprintf(ds, sizeof ds, "grads/%s", ps.p[i].name);
        fx_check(&fx, label, ds, params_g(&ps, ps.p[i].name), ps.p[i].ndim, ps.p[i].shape, TOL);
    }
    /* frozen: only the projector has gradients */
    t_check(params_numel(&ps, 1) == (size_t)LLM * OUT + LLM, PFX "trainable",
            "%zu trainable floats (the projector's %d)", params_numel(&ps, 1), LLM * OUT + LLM);
done:
    imagebind_audio_free(m);
    params_free(&ps);
    k_free(fb); k_free(emb); k_free(tok); k_free(r); k_free(demb); k_free(head); k_free(stem);
    for (int i = 0; i < DEPTH; i++) k_free(blk[i]);
    fx_close(&fx);
}

/* ---- 4. projector finite differences ----------------------------------- */
typedef struct { imagebind_audio *m; float *emb, *tok, *r; } pj_ctx;

static double pj_loss(void *vc) {
    pj_ctx *c = vc;
    imagebind_audio_project(c->m, c->emb, CLIPS, c->tok);
    return t_dot(c->tok, c->r, CLIPS * LLM);
}

static void projector_fd(void) {
    imagebind_audio_cfg c = tiny_cfg();
    ar_params ps;
    params_init_empty(&ps);
    imagebind_audio *m = NULL;
    if (imagebind_audio_declare(&c, &ps) || params_alloc(&ps) || !(m = imagebind_audio_create(&c, &ps, CLIPS))) {
        t_fail(PFX "fd create", "%s", ar_error());
        params_free(&ps);
        return;
    }
    params_randomize(&ps, 7);
    pj_ctx x = {m, t_alloc(CLIPS * OUT), t_alloc(CLIPS * LLM), t_alloc(CLIPS * LLM)};
    t_fill_normal(x.emb, CLIPS * OUT, 3.0f, 8);
    t_fill_normal(x.r, CLIPS * LLM, 1.0f, 9);
    float *demb = t_alloc(CLIPS * OUT);
    imagebind_audio_project_backward(m, x.r, x.emb, CLIPS, demb);
    t_gradcheck(PFX "fd d.emb", pj_loss, &x, x.emb, demb, CLIPS * OUT, 1e-2f, 1e-3, CLIPS * OUT);
    const char *names[2] = {"model.audio_projector.weight", "model.audio_projector.bias"};
    for (int i = 0; i < 2; i++) {
        const ar_param *p = params_find(&ps, names[i]);
        char label[96];
        snprintf(label, sizeof label, PFX "fd d.%s", names[i] + 6);
        t_gradcheck(label, pj_loss, &x, params_w(&ps, names[i]), params_g(&ps, names[i]), p->numel, 1e-2f, 1e-3,
                    300);
    }
    /* accumulation: a second backward doubles the weight gradient */
    const ar_param *pw = params_find(&ps, names[0]);
    float *g1 = t_alloc(pw->numel);
    memcpy(g1, params_g(&ps, names[0]), pw->numel * 4);
    imagebind_audio_project_backward(m, x.r, x.emb, CLIPS, NULL);
    double dev = 0, sc = 0;
    for (size_t i = 0; i < pw->numel; i++) {
        dev = fmax(dev, fabs(params_g(&ps, names[0])[i] - 2.0f * g1[i]));
        sc = fmax(sc, fabs(g1[i]));
    }
    t_check(dev <= 1e-6 * fmax(sc, 1.0), PFX "fd accumulate", "second backward adds the same d.weight (max dev %.1e)",
            dev);
    free(g1); free(x.emb); free(x.tok); free(x.r); free(demb);
    imagebind_audio_free(m);
    params_free(&ps);
}

/* ---- 5. cfg.frozen_half: the blocks' four big matrices in 16 bits --------- */
typedef struct { imagebind_audio *m[2]; const float *fb; float *emb; int N; } half_ctx;
static float *half_fwd(void *ctx, int which) {
    half_ctx *h = ctx;
    return h->m[which] && !imagebind_audio_encode(h->m[which], h->fb, h->N, h->emb, NULL) ? h->emb : NULL;
}

static void half_encoder(int fmt) {
    imagebind_audio_cfg c = tiny_cfg(), ch = c;
    ch.frozen_half = fmt;
    ar_params pa, pb;
    params_init_empty(&pa); params_init_empty(&pb);
    if (imagebind_audio_declare(&c, &pa) || params_alloc(&pa) || imagebind_audio_declare(&ch, &pb) ||
        params_alloc(&pb) || params_randomize(&pa, 61) || params_randomize(&pb, 61)) {
        t_fail(PFX "16-bit weights", "%s", ar_error());
        params_free(&pa); params_free(&pb);
        return;
    }
    const int n16 = t_round_like(&pa, &pb);
    const size_t nfb = (size_t)CLIPS * MELS * LEN;
    float *fb = t_alloc(nfb);
    t_fill_normal(fb, nfb, 1.0f, 62);
    half_ctx h = {{imagebind_audio_create(&c, &pa, CLIPS), imagebind_audio_create(&ch, &pb, CLIPS)},
                  t_dev_copy(fb, nfb), k_malloc((size_t)CLIPS * OUT * sizeof(float)), CLIPS};
    t_check_half("imagebind_audio", fmt == IB_HALF_F16 ? "fp16" : "bf16", half_fwd, &h, (size_t)CLIPS * OUT, n16,
                 4 * DEPTH, &pa, &pb);
    free(fb);
    k_free((float *)h.fb); k_free(h.emb);
    imagebind_audio_free(h.m[0]); imagebind_audio_free(h.m[1]);
    params_free(&pa); params_free(&pb);
    /* a value outside the enum is refused */
    ch.frozen_half = 3;
    params_init_empty(&pb);
    const int rc = imagebind_audio_declare(&ch, &pb);
    t_check(rc == -1 && strstr(ar_error(), "frozen_half 3"), PFX "frozen_half out of range refused", "%s", ar_error());
    params_free(&pb);
}

int main(void) {
    printf("# ImageBind audio encoder + audio_projector, backend %s\n", k_backend_name());
    transpose_checks();
    huge_names();
    errors();
    parity();
    projector_fd();
    half_encoder(IB_HALF_BF16);
    half_encoder(IB_HALF_F16);
    return t_exit_code();
}
