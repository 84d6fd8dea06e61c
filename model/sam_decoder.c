/* model/sam_decoder.c — see sam_decoder.h. Touches tensor memory only through
 * kernels.h, so it runs on either backend.
 * Shapes: P prompts, C = dim, N = H*W image tokens, Nt = 1 + num_mask_tokens +
 * n_sparse tokens per prompt, Ci = C / downsample (cross-attention width),
 * C4 = C/4, C8 = C/8 (upscaling channels), U = 16 N (low-res mask pixels).
 * Token rows are [P*Nt, C] (prompt-major), image rows [P*N, C]; the
 * upscaling runs channel-major [P, C, H, W]. Transposes between the two are
 * products with a C x C identity (matmul), the only layout change needed. */
#include "model/sam_decoder.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PFX "mask_decoder."

/* Parameter names: the longest SAM name is ~75 characters, well inside
 * ar_param.name; params_fmt_name bounds every write. */
#define NAME_LEN AR_PARAM_NAME_LEN

typedef struct { float *w, *b, *gw, *gb; int in, out; } lin_w;     /* nn.Linear */
typedef struct { float *w, *b, *gw, *gb; } norm_w;                  /* LayerNorm(2d) */
typedef struct { lin_w q, k, v, o; int ci; } attn_w;                /* SAM Attention */
typedef struct { lin_w l[3]; } mlp3_w;                               /* SAM MLP, 3 layers */

typedef struct {           /* saved by one attention call */
    const float *xq, *xk, *xv;  /* the inputs of q_proj, k_proj, v_proj */
    float *Q, *K, *V;           /* projections [B*T,Ci], [B*S,Ci] */
    float *att;                 /* [B,heads,T,S] */
    float *ao;                  /* [B*T,Ci] before out_proj */
    int T, S;
} attn_a;

typedef struct {
    attn_w sa, t2i, i2t;
    norm_w n1, n2, n3, n4;
    lin_w lin1, lin2;
} block_w;

typedef struct {           /* saved activations of one two-way block */
    float *q_in, *k_in;         /* queries [P*Nt,C] and keys [P*N,C] entering the block */
    float *xqq;                 /* q_in + qpe (blocks after the first) */
    attn_a sa, t2i, i2t;
    float *r1, *m1, *s1, *qa;   /* residual sum, LN mean/rstd, LN out */
    float *xq2, *xk2;           /* qa + qpe, k_in + kpe */
    float *r2, *m2, *s2, *qb;
    float *h, *hr;              /* MLP hidden [P*Nt,M] before/after ReLU */
    float *r3, *m3, *s3, *qc;
    float *xq4;                 /* qc + qpe */
    float *r4, *m4, *s4, *k_out;
} block_a;

typedef struct { float *x, *h0, *h0r, *h1, *h1r, *out; } mlp3_a;

struct sam_decoder {
    sam_decoder_cfg c;
    int maxP, P, N, Nt, C, Ci, C4, C8, U;
    block_w *bw;
    block_a *ba;
    attn_w fin;
    norm_w nfin;
    float *iou_token, *g_iou_token, *mask_tokens, *g_mask_tokens;
    lin_w ct1, ct2;            /* ConvTranspose 2x2: w [Cin,Cout,2,2] (in/out = Cin/Cout) */
    norm_w ln2d;
    mlp3_w hyper0, iouh;
    /* forward activations */
    float *eye;                /* [C,C] identity */
    float *srccn;              /* [C,N] image + dense */
    float *kpe;                /* [N,C] image PE, token rows */
    float *tokens;             /* [P*Nt,C] = qpe */
    float *keys0;              /* [P*N,C] */
    attn_a fa;
    float *xqf, *xkf, *rf, *mf, *sf, *hs;
    float *srct;               /* [P,C,N] final keys, channel-major */
    float *up1, *lm, *ls, *ln, *g1, *up2, *up;   /* [P,C4,4N] x4 and [P,C8,U] x2 */
    mlp3_a hy, io;
    float *masks;              /* [P,U] */
    /* backward work */
    float *dq, *dqpe, *dkeys, *tq, *tqq, *tk, *dh, *dh2;
    float *dQ, *dK, *dV, *dao, *scratch;
    float *dup, *dup2, *dc4a, *dc4b, *dsrc;
    float *dpc1, *dpc2, *dhyper;
    ar_arena arena;
};

sam_decoder_cfg sam_decoder_default_cfg(void) {
    sam_decoder_cfg c = {.dim = 256, .depth = 2, .heads = 8, .mlp_dim = 2048, .downsample = 2,
                         .num_mask_tokens = 4, .iou_hidden = 256, .H = 64, .W = 64, .n_sparse = 1};
    return c;
}

/* ------------------------------------------------------------------ declaration */

static int preset_trainable(const char *preset, const char *name) {
    if (!strcmp(preset, "lisa")) return 1;
    if (!strcmp(preset, "none")) return 0;
    return !strncmp(name, PFX "mask_tokens.", strlen(PFX "mask_tokens.")) ||
           !strncmp(name, PFX "output_upscaling.", strlen(PFX "output_upscaling.")) ||
           !strncmp(name, PFX "output_hypernetworks_mlps.", strlen(PFX "output_hypernetworks_mlps."));
}

static int decl(ar_params *ps, const char *preset, const char *name, int ndim, int a, int b, int c2, int d,
                ar_init init, float std) {
    int shape[4] = {a, b, c2, d};
    return params_add(ps, name, ndim, shape, preset_trainable(preset, name), init, std);
}

static int decl_linear(ar_params *ps, const char *preset, const char *pre, int in, int out) {
    char n[NAME_LEN];
    params_fmt_name(n, "%s.weight", pre);
    if (decl(ps, preset, n, 2, out, in, 0, 0, INIT_KAIMING_UNIFORM, 0)) return -1;
    params_fmt_name(n, "%s.bias", pre);
    return decl(ps, preset, n, 1, out, 0, 0, 0, INIT_ZEROS, 0);
}

static int decl_norm(ar_params *ps, const char *preset, const char *pre, int d) {
    char n[NAME_LEN];
    params_fmt_name(n, "%s.weight", pre);
    if (decl(ps, preset, n, 1, d, 0, 0, 0, INIT_ONES, 0)) return -1;
    params_fmt_name(n, "%s.bias", pre);
    return decl(ps, preset, n, 1, d, 0, 0, 0, INIT_ZEROS, 0);
}

static int decl_attn(ar_params *ps, const char *preset, const char *pre, int C, int ci) {
    static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
    char n[NAME_LEN];
    for (int i = 0; i < 3; i++) {
        params_fmt_name(n, "%s.%s", pre, proj[i]);
        if (decl_linear(ps, preset, n, C, ci)) return -1;
    }
    params_fmt_name(n, "%s.out_proj", pre);
    return decl_linear(ps, preset, n, ci, C);
}

static int decl_mlp3(ar_params *ps, const char *preset, const char *pre, int in, int hid, int out) {
    char n[NAME_LEN];
    for (int j = 0; j < 3; j++) {
        params_fmt_name(n, "%s.layers.%d", pre, j);
        if (decl_linear(ps, preset, n, j ? hid : in, j == 2 ? out : hid)) return -1;
    }
    return 0;
}

static int check_cfg(const sam_decoder_cfg *c) {
    if (c->dim <= 0 || c->depth <= 0 || c->heads <= 0 || c->mlp_dim <= 0 || c->downsample <= 0 ||
        c->num_mask_tokens <= 0 || c->iou_hidden <= 0 || c->H <= 0 || c->W <= 0 || c->n_sparse < 0)
        return ar_errorf("sam_decoder: sizes must be positive (dim %d, depth %d, heads %d, mlp_dim %d, downsample %d, "
                         "num_mask_tokens %d, iou_hidden %d, grid %dx%d, n_sparse %d)",
                         c->dim, c->depth, c->heads, c->mlp_dim, c->downsample, c->num_mask_tokens,
                         c->iou_hidden, c->H, c->W, c->n_sparse);
    if (c->dim % 8 || c->dim % c->heads || c->dim % c->downsample || (c->dim / c->downsample) % c->heads)
        return ar_errorf("sam_decoder: dim %d, heads %d, downsample %d: need dim %% 8 == 0, and heads dividing "
                         "dim and dim / downsample", c->dim, c->heads, c->downsample);
    return 0;
}

int sam_decoder_declare(const sam_decoder_cfg *c, ar_params *ps, const char *preset) {
    if (check_cfg(c)) return -1;
    if (!preset || (strcmp(preset, "anyref") && strcmp(preset, "lisa") && strcmp(preset, "none")))
        return ar_errorf("sam_decoder: unknown trainable preset '%s' (expected anyref, lisa or none)",
                         preset ? preset : "(null)");
    const int C = c->dim, Ci = c->dim / c->downsample, NM = c->num_mask_tokens;
    char n[NAME_LEN];
    for (int l = 0; l < c->depth; l++) {
#define SUB(s) (params_fmt_name(n, PFX "transformer.layers.%d." s, l), n)
        if (decl_attn(ps, preset, SUB("self_attn"), C, C) || decl_norm(ps, preset, SUB("norm1"), C) ||
            decl_attn(ps, preset, SUB("cross_attn_token_to_image"), C, Ci) ||
            decl_norm(ps, preset, SUB("norm2"), C) ||
            decl_linear(ps, preset, SUB("mlp.lin1"), C, c->mlp_dim) ||
            decl_linear(ps, preset, SUB("mlp.lin2"), c->mlp_dim, C) ||
            decl_norm(ps, preset, SUB("norm3"), C) || decl_norm(ps, preset, SUB("norm4"), C) ||
            decl_attn(ps, preset, SUB("cross_attn_image_to_token"), C, Ci))
            return -1;
#undef SUB
    }
    if (decl_attn(ps, preset, PFX "transformer.final_attn_token_to_image", C, Ci) ||
        decl_norm(ps, preset, PFX "transformer.norm_final_attn", C) ||
        decl(ps, preset, PFX "iou_token.weight", 2, 1, C, 0, 0, INIT_NORMAL, 1.0f) ||
        decl(ps, preset, PFX "mask_tokens.weight", 2, NM, C, 0, 0, INIT_NORMAL, 1.0f) ||
        decl(ps, preset, PFX "output_upscaling.0.weight", 4, C, C / 4, 2, 2, INIT_KAIMING_UNIFORM, 0) ||
        decl(ps, preset, PFX "output_upscaling.0.bias", 1, C / 4, 0, 0, 0, INIT_ZEROS, 0) ||
        decl_norm(ps, preset, PFX "output_upscaling.1", C / 4) ||
        decl(ps, preset, PFX "output_upscaling.3.weight", 4, C / 4, C / 8, 2, 2, INIT_KAIMING_UNIFORM, 0) ||
        decl(ps, preset, PFX "output_upscaling.3.bias", 1, C / 8, 0, 0, 0, INIT_ZEROS, 0))
        return -1;
    for (int i = 0; i < NM; i++) {
        params_fmt_name(n, PFX "output_hypernetworks_mlps.%d", i);
        if (decl_mlp3(ps, preset, n, C, C, C / 8)) return -1;
    }
    return decl_mlp3(ps, preset, PFX "iou_prediction_head", C, c->iou_hidden, NM);
}

/* ------------------------------------------------------------------ binding */

static int bind_pair(const ar_params *ps, const char *pre, float **w, float **b, float **gw, float **gb) {
    char n[NAME_LEN];
    params_fmt_name(n, "%s.weight", pre);
    *w = params_w(ps, n); *gw = params_g(ps, n);
    params_fmt_name(n, "%s.bias", pre);
    *b = params_w(ps, n); *gb = params_g(ps, n);
    if (*w && *b) return 0;
    return ar_errorf("sam_decoder: %s.weight/.bias not declared in the parameter registry", pre);
}

static int bind_linear(const ar_params *ps, const char *pre, lin_w *l, int in, int out) {
    l->in = in; l->out = out;
    return bind_pair(ps, pre, &l->w, &l->b, &l->gw, &l->gb);
}

static int bind_norm(const ar_params *ps, const char *pre, norm_w *nw) {
    return bind_pair(ps, pre, &nw->w, &nw->b, &nw->gw, &nw->gb);
}

static int bind_attn(const ar_params *ps, const char *pre, attn_w *a, int C, int ci) {
    char n[NAME_LEN];
    a->ci = ci;
    lin_w *pl[3] = {&a->q, &a->k, &a->v};
    static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; i++) {
        params_fmt_name(n, "%s.%s", pre, proj[i]);
        if (bind_linear(ps, n, pl[i], C, ci)) return -1;
    }
    params_fmt_name(n, "%s.out_proj", pre);
    return bind_linear(ps, n, &a->o, ci, C);
}

static int bind_mlp3(const ar_params *ps, const char *pre, mlp3_w *m, int in, int hid, int out) {
    char n[NAME_LEN];
    for (int j = 0; j < 3; j++) {
        params_fmt_name(n, "%s.layers.%d", pre, j);
        if (bind_linear(ps, n, &m->l[j], j ? hid : in, j == 2 ? out : hid)) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ memory plan */

static void plan_attn(ar_arena *a, attn_a *s, int B, int T, int S, int ci, int heads) {
    s->T = T; s->S = S;
    s->Q = arena_floats(a, (size_t)B * T * ci);
    s->K = arena_floats(a, (size_t)B * S * ci);
    s->V = arena_floats(a, (size_t)B * S * ci);
    s->att = arena_floats(a, (size_t)B * heads * T * S);
    s->ao = arena_floats(a, (size_t)B * T * ci);
}

static void plan_mlp3(ar_arena *a, mlp3_a *s, int B, int in, int hid, int out) {
    s->x = arena_floats(a, (size_t)B * in);
    s->h0 = arena_floats(a, (size_t)B * hid); s->h0r = arena_floats(a, (size_t)B * hid);
    s->h1 = arena_floats(a, (size_t)B * hid); s->h1r = arena_floats(a, (size_t)B * hid);
    s->out = arena_floats(a, (size_t)B * out);
}

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

static void plan(sam_decoder *d, ar_arena *a) {
    const sam_decoder_cfg *c = &d->c;
    const int P = d->maxP, H = c->heads, C = d->C, Ci = d->Ci, N = d->N, Nt = d->Nt, M = c->mlp_dim;
    const size_t tq = (size_t)P * Nt * C, tk = (size_t)P * N * C;
    d->eye = arena_floats(a, (size_t)C * C);
    d->srccn = arena_floats(a, (size_t)C * N);
    d->kpe = arena_floats(a, (size_t)N * C);
    d->tokens = arena_floats(a, tq);
    d->keys0 = arena_floats(a, tk);
    for (int l = 0; l < c->depth; l++) {
        block_a *s = &d->ba[l];
        s->q_in = l ? d->ba[l - 1].qc : d->tokens;
        s->k_in = l ? d->ba[l - 1].k_out : d->keys0;
        s->xqq = l ? arena_floats(a, tq) : NULL;
        plan_attn(a, &s->sa, P, Nt, Nt, C, H);
        s->r1 = arena_floats(a, tq); s->m1 = arena_floats(a, (size_t)P * Nt);
        s->s1 = arena_floats(a, (size_t)P * Nt); s->qa = arena_floats(a, tq);
        s->xq2 = arena_floats(a, tq); s->xk2 = arena_floats(a, tk);
        plan_attn(a, &s->t2i, P, Nt, N, Ci, H);
        s->r2 = arena_floats(a, tq); s->m2 = arena_floats(a, (size_t)P * Nt);
        s->s2 = arena_floats(a, (size_t)P * Nt); s->qb = arena_floats(a, tq);
        s->h = arena_floats(a, (size_t)P * Nt * M); s->hr = arena_floats(a, (size_t)P * Nt * M);
        s->r3 = arena_floats(a, tq); s->m3 = arena_floats(a, (size_t)P * Nt);
        s->s3 = arena_floats(a, (size_t)P * Nt); s->qc = arena_floats(a, tq);
        s->xq4 = arena_floats(a, tq);
        plan_attn(a, &s->i2t, P, N, Nt, Ci, H);
        s->r4 = arena_floats(a, tk); s->m4 = arena_floats(a, (size_t)P * N);
        s->s4 = arena_floats(a, (size_t)P * N); s->k_out = arena_floats(a, tk);
    }
    d->xqf = arena_floats(a, tq); d->xkf = arena_floats(a, tk);
    plan_attn(a, &d->fa, P, Nt, N, Ci, H);
    d->rf = arena_floats(a, tq); d->mf = arena_floats(a, (size_t)P * Nt);
    d->sf = arena_floats(a, (size_t)P * Nt); d->hs = arena_floats(a, tq);
    const size_t n4 = (size_t)P * d->C4 * 4 * N, n16 = (size_t)P * d->C8 * d->U;
    d->srct = arena_floats(a, tk);
    d->up1 = arena_floats(a, n4); d->lm = arena_floats(a, (size_t)P * 4 * N);
    d->ls = arena_floats(a, (size_t)P * 4 * N); d->ln = arena_floats(a, n4); d->g1 = arena_floats(a, n4);
    d->up2 = arena_floats(a, n16); d->up = arena_floats(a, n16);
    plan_mlp3(a, &d->hy, P, C, C, d->C8);
    plan_mlp3(a, &d->io, P, C, c->iou_hidden, c->num_mask_tokens);
    d->masks = arena_floats(a, (size_t)P * d->U);
    /* backward */
    d->dq = arena_floats(a, tq); d->dqpe = arena_floats(a, tq); d->dkeys = arena_floats(a, tk);
    d->tq = arena_floats(a, tq); d->tqq = arena_floats(a, tq); d->tk = arena_floats(a, tk);
    d->dh = arena_floats(a, (size_t)P * Nt * M); d->dh2 = arena_floats(a, (size_t)P * Nt * M);
    const size_t proj = (size_t)P * max_z((size_t)Nt * C, (size_t)N * Ci);
    d->dQ = arena_floats(a, proj); d->dK = arena_floats(a, proj); d->dV = arena_floats(a, proj);
    d->dao = arena_floats(a, proj);
    size_t sc = attention_scratch_floats(P, Nt, Nt, H);
    sc = max_z(sc, attention_scratch_floats(P, Nt, N, H));
    sc = max_z(sc, attention_scratch_floats(P, N, Nt, H));
    d->scratch = arena_floats(a, sc);
    d->dup = arena_floats(a, n16); d->dup2 = arena_floats(a, n16);
    d->dc4a = arena_floats(a, n4); d->dc4b = arena_floats(a, n4); d->dsrc = arena_floats(a, tk);
    d->dpc1 = arena_floats(a, (size_t)P * C); d->dpc2 = arena_floats(a, (size_t)P * C);
    d->dhyper = arena_floats(a, (size_t)P * d->C8);
}

/* The sizes plan() reads, from the config alone (create and plan_bytes). */
static void dec_sizes(sam_decoder *d, const sam_decoder_cfg *c, int max_prompts) {
    d->c = *c; d->maxP = max_prompts;
    d->C = c->dim; d->Ci = c->dim / c->downsample; d->C4 = c->dim / 4; d->C8 = c->dim / 8;
    d->N = c->H * c->W; d->U = 16 * d->N; d->Nt = 1 + c->num_mask_tokens + c->n_sparse;
}

size_t sam_decoder_plan_bytes(const sam_decoder_cfg *c, int max_prompts) {
    if (max_prompts <= 0 || check_cfg(c)) return 0;
    sam_decoder d;
    memset(&d, 0, sizeof d);
    dec_sizes(&d, c, max_prompts);
    d.ba = calloc((size_t)c->depth, sizeof *d.ba);
    size_t need = 0;
    if (d.ba) {
        ar_arena meas;
        arena_init_measure(&meas);
        plan(&d, &meas);
        need = meas.high;
    }
    free(d.ba);
    return need;
}

sam_decoder *sam_decoder_create(const sam_decoder_cfg *c, ar_params *ps, int max_prompts) {
    if (check_cfg(c)) return NULL;
    if (max_prompts <= 0) { ar_errorf("sam_decoder: max_prompts %d", max_prompts); return NULL; }
    sam_decoder *d = calloc(1, sizeof *d);
    if (!d) { ar_errorf("sam_decoder: out of memory"); return NULL; }
    dec_sizes(d, c, max_prompts);
    d->bw = calloc((size_t)c->depth, sizeof *d->bw);
    d->ba = calloc((size_t)c->depth, sizeof *d->ba);
    if (!d->bw || !d->ba) { sam_decoder_free(d); ar_errorf("sam_decoder: out of memory"); return NULL; }
    const int C = d->C, Ci = d->Ci, NM = c->num_mask_tokens;
    char n[NAME_LEN];
    int bad = 0;
    for (int l = 0; l < c->depth && !bad; l++) {
        block_w *w = &d->bw[l];
#define SUB(s) (params_fmt_name(n, PFX "transformer.layers.%d." s, l), n)
        bad = bind_attn(ps, SUB("self_attn"), &w->sa, C, C) || bind_norm(ps, SUB("norm1"), &w->n1) ||
              bind_attn(ps, SUB("cross_attn_token_to_image"), &w->t2i, C, Ci) ||
              bind_norm(ps, SUB("norm2"), &w->n2) ||
              bind_linear(ps, SUB("mlp.lin1"), &w->lin1, C, c->mlp_dim) ||
              bind_linear(ps, SUB("mlp.lin2"), &w->lin2, c->mlp_dim, C) ||
              bind_norm(ps, SUB("norm3"), &w->n3) || bind_norm(ps, SUB("norm4"), &w->n4) ||
              bind_attn(ps, SUB("cross_attn_image_to_token"), &w->i2t, C, Ci);
#undef SUB
    }
    bad = bad || bind_attn(ps, PFX "transformer.final_attn_token_to_image", &d->fin, C, Ci) ||
          bind_norm(ps, PFX "transformer.norm_final_attn", &d->nfin) ||
          bind_linear(ps, PFX "output_upscaling.0", &d->ct1, C, d->C4) ||
          bind_norm(ps, PFX "output_upscaling.1", &d->ln2d) ||
          bind_linear(ps, PFX "output_upscaling.3", &d->ct2, d->C4, d->C8) ||
          bind_mlp3(ps, PFX "output_hypernetworks_mlps.0", &d->hyper0, C, C, d->C8) ||
          bind_mlp3(ps, PFX "iou_prediction_head", &d->iouh, C, c->iou_hidden, NM);
    if (bad) { sam_decoder_free(d); return NULL; }
    d->iou_token = params_w(ps, PFX "iou_token.weight"); d->g_iou_token = params_g(ps, PFX "iou_token.weight");
    d->mask_tokens = params_w(ps, PFX "mask_tokens.weight"); d->g_mask_tokens = params_g(ps, PFX "mask_tokens.weight");
    if (!d->iou_token || !d->mask_tokens) {
        sam_decoder_free(d);
        ar_errorf("sam_decoder: iou_token/mask_tokens not declared in the parameter registry");
        return NULL;
    }
    if (arena_init(&d->arena, sam_decoder_plan_bytes(c, max_prompts))) { sam_decoder_free(d); return NULL; }
    plan(d, &d->arena);
    float *eye = calloc((size_t)C * C, sizeof(float));
    if (!eye) { sam_decoder_free(d); ar_errorf("sam_decoder: out of memory"); return NULL; }
    for (int i = 0; i < C; i++) eye[(size_t)i * C + i] = 1.0f;
    k_upload(d->eye, eye, (size_t)C * C * sizeof(float));
    free(eye);
    return d;
}

void sam_decoder_free(sam_decoder *d) {
    if (!d) return;
    arena_free(&d->arena);
    free(d->bw); free(d->ba);
    free(d);
}

size_t sam_decoder_activation_bytes(const sam_decoder *d) { return d->arena.cap; }
const float *sam_decoder_iou(const sam_decoder *d) { return d->io.out; }

/* ------------------------------------------------------------------ pieces */

/* out[B*T,C] = out_proj(softmax(q k^T / sqrt(hd)) v), q = q_proj(xq), k = k_proj(xk), v = v_proj(xv). */
static void attn_forward(const sam_decoder *d, const attn_w *w, attn_a *s, float *out,
                         const float *xq, const float *xk, const float *xv, int B) {
    const int T = s->T, S = s->S, C = d->C, ci = w->ci, H = d->c.heads, hd = ci / H;
    s->xq = xq; s->xk = xk; s->xv = xv;
    linear_forward(s->Q, xq, w->q.w, w->q.b, B * T, C, ci);
    linear_forward(s->K, xk, w->k.w, w->k.b, B * S, C, ci);
    linear_forward(s->V, xv, w->v.w, w->v.b, B * S, C, ci);
    attention_forward(s->ao, s->att, s->Q, s->K, s->V, NULL, 0, 1.0f / sqrtf((float)hd), B, T, S, H, H, hd);
    linear_forward(out, s->ao, w->o.w, w->o.b, B * T, ci, C);
}

/* dxq, dxk, dxv accumulate (they may alias each other). */
static void attn_backward(sam_decoder *d, const attn_w *w, const attn_a *s, const float *dout,
                          float *dxq, float *dxk, float *dxv, int B) {
    const int T = s->T, S = s->S, C = d->C, ci = w->ci, H = d->c.heads, hd = ci / H;
    k_zero(d->dao, (size_t)B * T * ci * sizeof(float));
    linear_backward(d->dao, w->o.gw, w->o.gb, dout, s->ao, w->o.w, B * T, ci, C);
    k_zero(d->dQ, (size_t)B * T * ci * sizeof(float));
    k_zero(d->dK, (size_t)B * S * ci * sizeof(float));
    k_zero(d->dV, (size_t)B * S * ci * sizeof(float));
    attention_backward(d->dQ, d->dK, d->dV, d->scratch, d->dao, NULL, s->att, s->Q, s->K, s->V,
                       1.0f / sqrtf((float)hd), B, T, S, H, H, hd);
    linear_backward(dxq, w->q.gw, w->q.gb, d->dQ, s->xq, w->q.w, B * T, C, ci);
    linear_backward(dxk, w->k.gw, w->k.gb, d->dK, s->xk, w->k.w, B * S, C, ci);
    linear_backward(dxv, w->v.gw, w->v.gb, d->dV, s->xv, w->v.w, B * S, C, ci);
}

/* SAM MLP with 3 layers, ReLU between them: out = l2(relu(l1(relu(l0(x))))). */
static void mlp3_forward(const mlp3_w *w, mlp3_a *s, int B) {
    linear_forward(s->h0, s->x, w->l[0].w, w->l[0].b, B, w->l[0].in, w->l[0].out);
    relu_forward(s->h0r, s->h0, (size_t)B * w->l[0].out);
    linear_forward(s->h1, s->h0r, w->l[1].w, w->l[1].b, B, w->l[1].in, w->l[1].out);
    relu_forward(s->h1r, s->h1, (size_t)B * w->l[1].out);
    linear_forward(s->out, s->h1r, w->l[2].w, w->l[2].b, B, w->l[2].in, w->l[2].out);
}

/* dx[B,in] accumulates; t1, t2 are [B,hidden] work buffers. */
static void mlp3_backward(const mlp3_w *w, const mlp3_a *s, const float *dout, float *dx,
                          float *t1, float *t2, int B) {
    const size_t nh = (size_t)B * w->l[1].out;
    k_zero(t1, nh * sizeof(float));
    linear_backward(t1, w->l[2].gw, w->l[2].gb, dout, s->h1r, w->l[2].w, B, w->l[2].in, w->l[2].out);
    k_zero(t2, nh * sizeof(float));
    relu_backward(t2, t1, s->h1, nh);
    k_zero(t1, nh * sizeof(float));
    linear_backward(t1, w->l[1].gw, w->l[1].gb, t2, s->h0r, w->l[1].w, B, w->l[1].in, w->l[1].out);
    k_zero(t2, nh * sizeof(float));
    relu_backward(t2, t1, s->h0, nh);
    linear_backward(dx, w->l[0].gw, w->l[0].gb, t2, s->x, w->l[0].w, B, w->l[0].in, w->l[0].out);
}

#define LN_EPS 1e-5f      /* nn.LayerNorm default, every transformer norm */
#define LN2D_EPS 1e-6f    /* LayerNorm2d in output_upscaling */

/* out[rows_p, C] = x[rows_p, C] + pe[rows, C] for each of P prompts (pe shared). */
static void add_pe(float *out, const float *x, const float *pe, int P, size_t per) {
    for (int p = 0; p < P; p++) add_forward(out + p * per, x + p * per, pe, per);
}

/* ------------------------------------------------------------------ forward */

float *sam_decoder_forward(sam_decoder *d, const float *image_emb, const float *image_pe,
                           const float *dense, const float *sparse, int P) {
    if (P <= 0 || P > d->maxP) {
        ar_errorf("sam_decoder: %d prompts (expected 1..%d, the max_prompts it was created for)", P, d->maxP);
        return NULL;
    }
    const sam_decoder_cfg *c = &d->c;
    const int C = d->C, N = d->N, Nt = d->Nt, NM = c->num_mask_tokens, ns = c->n_sparse, M = c->mlp_dim;
    const size_t nq = (size_t)P * Nt * C, nk = (size_t)N * C, fs = sizeof(float);
    d->P = P;
    /* src = image + dense, as token rows, one copy per prompt; kpe = image PE as token rows */
    add_forward(d->srccn, image_emb, dense, nk);
    matmul(d->keys0, d->srccn, d->eye, N, C, C, 1, 0, 1.0f, 0.0f);
    for (int p = 1; p < P; p++) k_copy(d->keys0 + p * nk, d->keys0, nk * fs);
    matmul(d->kpe, image_pe, d->eye, N, C, C, 1, 0, 1.0f, 0.0f);
    /* tokens = [iou_token, mask_tokens, sparse] per prompt; they are also the query PE */
    for (int p = 0; p < P; p++) {
        float *t = d->tokens + (size_t)p * Nt * C;
        k_copy(t, d->iou_token, (size_t)C * fs);
        k_copy(t + C, d->mask_tokens, (size_t)NM * C * fs);
        if (ns) k_copy(t + (size_t)(1 + NM) * C, sparse + (size_t)p * ns * C, (size_t)ns * C * fs);
    }
    const float *qpe = d->tokens;
    for (int l = 0; l < c->depth; l++) {
        const block_w *w = &d->bw[l];
        block_a *s = &d->ba[l];
        const int rq = P * Nt, rk = P * N;
        /* (1) token self-attention: the first block has no PE and no residual */
        if (l == 0) {
            attn_forward(d, &w->sa, &s->sa, s->r1, s->q_in, s->q_in, s->q_in, P);
        } else {
            add_forward(s->xqq, s->q_in, qpe, nq);
            attn_forward(d, &w->sa, &s->sa, s->r1, s->xqq, s->xqq, s->q_in, P);
            add_forward(s->r1, s->r1, s->q_in, nq);
        }
        layernorm_forward(s->qa, s->m1, s->s1, s->r1, w->n1.w, w->n1.b, LN_EPS, rq, C);
        /* (2) tokens attend to the image */
        add_forward(s->xq2, s->qa, qpe, nq);
        add_pe(s->xk2, s->k_in, d->kpe, P, nk);
        attn_forward(d, &w->t2i, &s->t2i, s->r2, s->xq2, s->xk2, s->k_in, P);
        add_forward(s->r2, s->r2, s->qa, nq);
        layernorm_forward(s->qb, s->m2, s->s2, s->r2, w->n2.w, w->n2.b, LN_EPS, rq, C);
        /* (3) MLP */
        linear_forward(s->h, s->qb, w->lin1.w, w->lin1.b, rq, C, M);
        relu_forward(s->hr, s->h, (size_t)rq * M);
        linear_forward(s->r3, s->hr, w->lin2.w, w->lin2.b, rq, M, C);
        add_forward(s->r3, s->r3, s->qb, nq);
        layernorm_forward(s->qc, s->m3, s->s3, s->r3, w->n3.w, w->n3.b, LN_EPS, rq, C);
        /* (4) the image attends to the tokens (keys + kpe is still xk2) */
        add_forward(s->xq4, s->qc, qpe, nq);
        attn_forward(d, &w->i2t, &s->i2t, s->r4, s->xk2, s->xq4, s->qc, P);
        add_forward(s->r4, s->r4, s->k_in, (size_t)rk * C);
        layernorm_forward(s->k_out, s->m4, s->s4, s->r4, w->n4.w, w->n4.b, LN_EPS, rk, C);
    }
    const float *qL = d->ba[c->depth - 1].qc, *kL = d->ba[c->depth - 1].k_out;
    add_forward(d->xqf, qL, qpe, nq);
    add_pe(d->xkf, kL, d->kpe, P, nk);
    attn_forward(d, &d->fin, &d->fa, d->rf, d->xqf, d->xkf, kL, P);
    add_forward(d->rf, d->rf, qL, nq);
    layernorm_forward(d->hs, d->mf, d->sf, d->rf, d->nfin.w, d->nfin.b, LN_EPS, P * Nt, C);
    /* upscaling of the final keys, channel-major */
    for (int p = 0; p < P; p++)
        matmul(d->srct + p * nk, d->eye, kL + p * nk, C, N, C, 0, 1, 1.0f, 0.0f);
    const size_t n4 = (size_t)P * d->C4 * 4 * N, n16 = (size_t)P * d->C8 * d->U;
    conv_transpose2x2_forward(d->up1, d->srct, d->ct1.w, d->ct1.b, P, C, d->C4, c->H, c->W);
    layernorm2d_forward(d->ln, d->lm, d->ls, d->up1, d->ln2d.w, d->ln2d.b, LN2D_EPS, P, d->C4, 4 * N);
    gelu_forward(d->g1, d->ln, n4);
    conv_transpose2x2_forward(d->up2, d->g1, d->ct2.w, d->ct2.b, P, d->C4, d->C8, 2 * c->H, 2 * c->W);
    gelu_forward(d->up, d->up2, n16);
    /* hypernetwork MLP 0 on mask token 0, IoU head on the IoU token */
    for (int p = 0; p < P; p++) {
        k_copy(d->hy.x + (size_t)p * C, d->hs + ((size_t)p * Nt + 1) * C, (size_t)C * fs);
        k_copy(d->io.x + (size_t)p * C, d->hs + (size_t)p * Nt * C, (size_t)C * fs);
    }
    mlp3_forward(&d->hyper0, &d->hy, P);
    mlp3_forward(&d->iouh, &d->io, P);
    /* mask 0 = hyper[p] @ upscaled[p] ([1,C8] x [C8,U]) */
    for (int p = 0; p < P; p++)
        matmul_forward(d->masks + (size_t)p * d->U, d->hy.out + (size_t)p * d->C8,
                       d->up + (size_t)p * d->C8 * d->U, 1, d->U, d->C8, 0, 0);
    return d->masks;
}

/* ------------------------------------------------------------------ backward */

/* t = dLN-input from dout (zeroed first), then dst := t (the residual path). */
static void ln_back(float *t, float *dst, const norm_w *w, const float *dout, const float *in,
                    const float *mean, const float *rstd, int rows, int C) {
    const size_t n = (size_t)rows * C * sizeof(float);
    k_zero(t, n);
    layernorm_backward(t, w->gw, w->gb, dout, in, w->w, mean, rstd, rows, C);
    k_copy(dst, t, n);
}

void sam_decoder_backward(sam_decoder *d, const float *dmasks, float *dsparse, float *dimage) {
    const sam_decoder_cfg *c = &d->c;
    const int P = d->P, C = d->C, N = d->N, Nt = d->Nt, NM = c->num_mask_tokens, ns = c->n_sparse;
    const int M = c->mlp_dim, C4 = d->C4, C8 = d->C8, U = d->U;
    const size_t nq = (size_t)P * Nt * C, nk = (size_t)N * C, fs = sizeof(float);
    const size_t n4 = (size_t)P * C4 * 4 * N, n16 = (size_t)P * C8 * U;
    /* masks -> hypernetwork output and upscaled embedding */
    k_zero(d->dhyper, (size_t)P * C8 * fs);
    k_zero(d->dup, n16 * fs);
    for (int p = 0; p < P; p++)
        matmul_backward(d->dhyper + (size_t)p * C8, d->dup + (size_t)p * C8 * U, dmasks + (size_t)p * U,
                        d->hy.out + (size_t)p * C8, d->up + (size_t)p * C8 * U, 1, U, C8, 0, 0);
    /* hypernetwork MLP 0 -> mask token 0 of hs */
    k_zero(d->tq, (size_t)P * C * fs);
    mlp3_backward(&d->hyper0, &d->hy, d->dhyper, d->tq, d->dpc1, d->dpc2, P);
    k_zero(d->dq, nq * fs);
    for (int p = 0; p < P; p++) axpy(d->dq + ((size_t)p * Nt + 1) * C, d->tq + (size_t)p * C, 1.0f, (size_t)C);
    /* upscaling -> final keys */
    k_zero(d->dup2, n16 * fs);
    gelu_backward(d->dup2, d->dup, d->up2, n16);
    k_zero(d->dc4a, n4 * fs);
    conv_transpose2x2_backward(d->dc4a, d->ct2.gw, d->ct2.gb, d->dup2, d->g1, d->ct2.w, P, C4, C8, 2 * c->H, 2 * c->W);
    k_zero(d->dc4b, n4 * fs);
    gelu_backward(d->dc4b, d->dc4a, d->ln, n4);
    k_zero(d->dc4a, n4 * fs);
    layernorm2d_backward(d->dc4a, d->ln2d.gw, d->ln2d.gb, d->dc4b, d->up1, d->ln2d.w, d->lm, d->ls, P, C4, 4 * N);
    k_zero(d->dsrc, (size_t)P * nk * fs);
    conv_transpose2x2_backward(d->dsrc, d->ct1.gw, d->ct1.gb, d->dc4a, d->srct, d->ct1.w, P, C, C4, c->H, c->W);
    for (int p = 0; p < P; p++)   /* [C,N] -> token rows [N,C] */
        matmul(d->dkeys + p * nk, d->dsrc + p * nk, d->eye, N, C, C, 1, 0, 1.0f, 0.0f);
    /* final token->image attention and its norm */
    k_zero(d->dqpe, nq * fs);
    ln_back(d->tq, d->dq, &d->nfin, d->dq, d->rf, d->mf, d->sf, P * Nt, C);
    k_zero(d->tqq, nq * fs);
    attn_backward(d, &d->fin, &d->fa, d->tq, d->tqq, d->dkeys, d->dkeys, P);
    axpy(d->dq, d->tqq, 1.0f, nq);
    axpy(d->dqpe, d->tqq, 1.0f, nq);
    for (int l = c->depth - 1; l >= 0; l--) {
        const block_w *w = &d->bw[l];
        const block_a *s = &d->ba[l];
        const int rq = P * Nt, rk = P * N;
        /* (4) keys = LN4(k_in + attn(k_in + kpe, qc + qpe, qc)) */
        ln_back(d->tk, d->dkeys, &w->n4, d->dkeys, s->r4, s->m4, s->s4, rk, C);
        k_zero(d->tqq, nq * fs);
        attn_backward(d, &w->i2t, &s->i2t, d->tk, d->dkeys, d->tqq, d->dq, P);
        axpy(d->dq, d->tqq, 1.0f, nq);
        axpy(d->dqpe, d->tqq, 1.0f, nq);
        /* (3) qc = LN3(qb + lin2(relu(lin1(qb)))) */
        ln_back(d->tq, d->dq, &w->n3, d->dq, s->r3, s->m3, s->s3, rq, C);
        k_zero(d->dh, (size_t)rq * M * fs);
        linear_backward(d->dh, w->lin2.gw, w->lin2.gb, d->tq, s->hr, w->lin2.w, rq, M, C);
        k_zero(d->dh2, (size_t)rq * M * fs);
        relu_backward(d->dh2, d->dh, s->h, (size_t)rq * M);
        linear_backward(d->dq, w->lin1.gw, w->lin1.gb, d->dh2, s->qb, w->lin1.w, rq, C, M);
        /* (2) qb = LN2(qa + attn(qa + qpe, k_in + kpe, k_in)) */
        ln_back(d->tq, d->dq, &w->n2, d->dq, s->r2, s->m2, s->s2, rq, C);
        k_zero(d->tqq, nq * fs);
        attn_backward(d, &w->t2i, &s->t2i, d->tq, d->tqq, d->dkeys, d->dkeys, P);
        axpy(d->dq, d->tqq, 1.0f, nq);
        axpy(d->dqpe, d->tqq, 1.0f, nq);
        /* (1) qa = LN1(q_in + attn(q_in + qpe, q_in + qpe, q_in)), first block LN1(attn(q_in, q_in, q_in)) */
        ln_back(d->tq, d->dq, &w->n1, d->dq, s->r1, s->m1, s->s1, rq, C);
        if (l == 0) {
            k_zero(d->dq, nq * fs);
            attn_backward(d, &w->sa, &s->sa, d->tq, d->dq, d->dq, d->dq, P);
        } else {
            k_zero(d->tqq, nq * fs);
            attn_backward(d, &w->sa, &s->sa, d->tq, d->tqq, d->tqq, d->dq, P);
            axpy(d->dq, d->tqq, 1.0f, nq);
            axpy(d->dqpe, d->tqq, 1.0f, nq);
        }
    }
    /* the tokens were both the first queries and the query PE */
    axpy(d->dqpe, d->dq, 1.0f, nq);
    for (int p = 0; p < P; p++) {
        const float *g = d->dqpe + (size_t)p * Nt * C;
        if (d->g_iou_token) axpy(d->g_iou_token, g, 1.0f, (size_t)C);
        if (d->g_mask_tokens) axpy(d->g_mask_tokens, g + C, 1.0f, (size_t)NM * C);
        if (dsparse && ns) axpy(dsparse + (size_t)p * ns * C, g + (size_t)(1 + NM) * C, 1.0f, (size_t)ns * C);
    }
    /* src = image + dense, repeated per prompt: d image = Σ_p d keys_p, channel-major */
    if (dimage)
        for (int p = 0; p < P; p++)
            matmul(dimage, d->eye, d->dkeys + p * nk, C, N, C, 0, 1, 1.0f, 1.0f);
}
