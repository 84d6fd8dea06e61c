/* model/sam_image_encoder.c — see sam_image_encoder.h. Touches tensor memory
 * only through kernels.h, so it runs on either backend.
 * Shapes: B images, G = img_size/patch grid side, N = G*G tokens per image,
 * C = dim, hd = C/heads, M = mlp_dim, ws = window, nW = ceil(G/ws)^2 windows
 * per image, Np = nW*ws*ws padded tokens per image, OC = out_chans.
 * Tokens are rows [B*N, C] (= [B,G,G,C], channels-last as in SAM's blocks);
 * the neck runs channel-major [B, OC, G, G].
 *
 * A windowed block partitions the qkv Linear's output rather than LN1's: a
 * padded token is zero after LN1 in SAM, so its q, k, v are exactly the qkv
 * bias, which is what the partition writes into padded cells. The output
 * projection is per token, so it runs after the unpartition on the N real
 * tokens only. Both give SAM's values while skipping the padding's GEMM rows. */
#include "model/sam_image_encoder.h"
#include "core/arena.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f
#define NAME_LEN 112

typedef struct {
    float *n1w, *n1b, *qkvw, *qkvb, *projw, *projb, *relh, *relw;
    float *n2w, *n2b, *l1w, *l1b, *l2w, *l2b;
    int global, size, Lh, Lw;   /* attention grid side (window or G), rel_pos rows */
} block_w;

struct sam_image_encoder {
    sam_encoder_cfg c;
    int maxB, G, N, C, hd, M, OC, ws, nW, Np;
    block_w *bw;
    float *pe_w, *pe_b, *pos, *neck0, *neck1w, *neck1b, *neck2, *neck3w, *neck3b;
    /* activations */
    float *x, *xn, *mean, *rstd, *qkv, *qkvw, *ao, *tmp, *h, *hg;
    float *Rh, *Rw, *scratch;
    size_t nscratch;
    float *n1, *n1n, *n2, *out, *nmean, *nrstd, *cscratch;
    ar_arena arena;
};

static char *fmt_name(char *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *fmt_name(char *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n, NAME_LEN, fmt, ap);
    va_end(ap);
    return n;
}

/* ------------------------------------------------------------------ configs */

static sam_encoder_cfg vit(const char *prefix, int dim, int depth, int heads, const int *glob, int nglob) {
    sam_encoder_cfg c = {.img_size = 1024, .patch = 16, .in_chans = 3, .dim = dim, .depth = depth,
                         .heads = heads, .mlp_dim = 4 * dim, .out_chans = 256, .window = 14};
    for (int i = 0; i < nglob; i++) c.global_attn[glob[i]] = 1;
    snprintf(c.prefix, sizeof c.prefix, "%s", prefix ? prefix : "image_encoder.");
    return c;
}
sam_encoder_cfg sam_encoder_vit_b(const char *prefix) {
    static const int g[] = {2, 5, 8, 11};
    return vit(prefix, 768, 12, 12, g, 4);
}
sam_encoder_cfg sam_encoder_vit_l(const char *prefix) {
    static const int g[] = {5, 11, 17, 23};
    return vit(prefix, 1024, 24, 16, g, 4);
}
sam_encoder_cfg sam_encoder_vit_h(const char *prefix) {
    static const int g[] = {7, 15, 23, 31};
    return vit(prefix, 1280, 32, 16, g, 4);
}

static int check_cfg(const sam_encoder_cfg *c) {
    if (c->img_size <= 0 || c->patch <= 0 || c->in_chans <= 0 || c->dim <= 0 || c->heads <= 0 ||
        c->mlp_dim <= 0 || c->out_chans <= 0 || c->window <= 0 || c->depth <= 0 ||
        c->depth > SAM_ENC_MAX_DEPTH || c->rel_pos_len_window < 0 || c->rel_pos_len_global < 0)
        return ar_errorf("sam_image_encoder: sizes must be positive (img_size %d, patch %d, in_chans %d, dim %d, "
                         "heads %d, mlp_dim %d, out_chans %d, window %d, rel_pos lengths %d/%d) and depth %d in 1..%d",
                         c->img_size, c->patch, c->in_chans, c->dim, c->heads, c->mlp_dim, c->out_chans,
                         c->window, c->rel_pos_len_window, c->rel_pos_len_global, c->depth, SAM_ENC_MAX_DEPTH);
    if (c->img_size % c->patch)
        return ar_errorf("sam_image_encoder: img_size %d is not a multiple of patch %d", c->img_size, c->patch);
    if (c->dim % c->heads)
        return ar_errorf("sam_image_encoder: dim %d is not a multiple of heads %d", c->dim, c->heads);
    if (strlen(c->prefix) + 40 > NAME_LEN)
        return ar_errorf("sam_image_encoder: name prefix '%s' too long", c->prefix);
    return 0;
}

/* Attention grid side and rel_pos rows of block l. */
static void block_geom(const sam_encoder_cfg *c, int l, int *size, int *L) {
    const int G = c->img_size / c->patch;
    *size = c->global_attn[l] ? G : c->window;
    const int over = c->global_attn[l] ? c->rel_pos_len_global : c->rel_pos_len_window;
    *L = over ? over : 2 * *size - 1;
}

/* ------------------------------------------------------------------ declaration */

static int decl(ar_params *ps, const sam_encoder_cfg *c, const char *suffix, int ndim, int a, int b, int c2,
                int d, ar_init init, float std) {
    char n[NAME_LEN];
    fmt_name(n, "%s%s", c->prefix, suffix);
    const int shape[4] = {a, b, c2, d};
    return params_add(ps, n, ndim, shape, 0, init, std);
}

int sam_encoder_declare(const sam_encoder_cfg *c, ar_params *ps) {
    if (check_cfg(c)) return -1;
    const int C = c->dim, G = c->img_size / c->patch, hd = c->dim / c->heads, OC = c->out_chans;
    char s[NAME_LEN];
    if (decl(ps, c, "patch_embed.proj.weight", 4, C, c->in_chans, c->patch, c->patch, INIT_KAIMING_UNIFORM, 0) ||
        decl(ps, c, "patch_embed.proj.bias", 1, C, 0, 0, 0, INIT_ZEROS, 0) ||
        decl(ps, c, "pos_embed", 4, 1, G, G, C, INIT_NORMAL, 0.02f))
        return -1;
    for (int l = 0; l < c->depth; l++) {
        int size, L;
        block_geom(c, l, &size, &L);
#define B_(x) (fmt_name(s, "blocks.%d." x, l), s)
        if (decl(ps, c, B_("norm1.weight"), 1, C, 0, 0, 0, INIT_ONES, 0) ||
            decl(ps, c, B_("norm1.bias"), 1, C, 0, 0, 0, INIT_ZEROS, 0) ||
            decl(ps, c, B_("attn.qkv.weight"), 2, 3 * C, C, 0, 0, INIT_KAIMING_UNIFORM, 0) ||
            decl(ps, c, B_("attn.qkv.bias"), 1, 3 * C, 0, 0, 0, INIT_ZEROS, 0) ||
            decl(ps, c, B_("attn.proj.weight"), 2, C, C, 0, 0, INIT_KAIMING_UNIFORM, 0) ||
            decl(ps, c, B_("attn.proj.bias"), 1, C, 0, 0, 0, INIT_ZEROS, 0) ||
            decl(ps, c, B_("attn.rel_pos_h"), 2, L, hd, 0, 0, INIT_NORMAL, 0.02f) ||
            decl(ps, c, B_("attn.rel_pos_w"), 2, L, hd, 0, 0, INIT_NORMAL, 0.02f) ||
            decl(ps, c, B_("norm2.weight"), 1, C, 0, 0, 0, INIT_ONES, 0) ||
            decl(ps, c, B_("norm2.bias"), 1, C, 0, 0, 0, INIT_ZEROS, 0) ||
            decl(ps, c, B_("mlp.lin1.weight"), 2, c->mlp_dim, C, 0, 0, INIT_KAIMING_UNIFORM, 0) ||
            decl(ps, c, B_("mlp.lin1.bias"), 1, c->mlp_dim, 0, 0, 0, INIT_ZEROS, 0) ||
            decl(ps, c, B_("mlp.lin2.weight"), 2, C, c->mlp_dim, 0, 0, INIT_KAIMING_UNIFORM, 0) ||
            decl(ps, c, B_("mlp.lin2.bias"), 1, C, 0, 0, 0, INIT_ZEROS, 0))
            return -1;
#undef B_
    }
    return decl(ps, c, "neck.0.weight", 4, OC, C, 1, 1, INIT_KAIMING_UNIFORM, 0) ||
                   decl(ps, c, "neck.1.weight", 1, OC, 0, 0, 0, INIT_ONES, 0) ||
                   decl(ps, c, "neck.1.bias", 1, OC, 0, 0, 0, INIT_ZEROS, 0) ||
                   decl(ps, c, "neck.2.weight", 4, OC, OC, 3, 3, INIT_KAIMING_UNIFORM, 0) ||
                   decl(ps, c, "neck.3.weight", 1, OC, 0, 0, 0, INIT_ONES, 0) ||
                   decl(ps, c, "neck.3.bias", 1, OC, 0, 0, 0, INIT_ZEROS, 0)
               ? -1 : 0;
}

/* ------------------------------------------------------------------ binding */

/* The tensor prefix+suffix, which must have been declared with exactly ndim/shape. */
static float *bind(const ar_params *ps, const sam_encoder_cfg *c, const char *suffix, int ndim, int a, int b,
                   int c2, int d, int *bad) {
    if (*bad) return NULL;
    char n[NAME_LEN];
    fmt_name(n, "%s%s", c->prefix, suffix);
    const ar_param *p = params_find(ps, n);
    const int shape[4] = {a, b, c2, d};
    int same = p && p->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = p->shape[i] == shape[i];
    if (!same) {
        *bad = 1;
        ar_errorf("sam_image_encoder: %s %s", n, p ? "has a shape other than the config's" : "is not declared");
        return NULL;
    }
    return ps->w + p->off;
}

/* ------------------------------------------------------------------ memory plan */

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

static void plan(sam_image_encoder *e, ar_arena *a) {
    const sam_encoder_cfg *c = &e->c;
    const size_t B = (size_t)e->maxB, N = e->N, C = e->C, M = e->M, OC = e->OC;
    int any_win = 0, any_glob = 0;
    for (int l = 0; l < c->depth; l++) { if (c->global_attn[l]) any_glob = 1; else any_win = 1; }
    e->x = arena_floats(a, B * N * C);
    e->xn = arena_floats(a, B * N * C);
    e->mean = arena_floats(a, B * N);
    e->rstd = arena_floats(a, B * N);
    e->qkv = arena_floats(a, B * N * 3 * C);
    e->qkvw = any_win ? arena_floats(a, B * e->Np * 3 * C) : NULL;
    e->ao = arena_floats(a, B * (any_win ? max_z(e->Np, N) : N) * C);
    e->tmp = arena_floats(a, B * N * C);
    e->h = arena_floats(a, B * N * M);
    /* hg also holds the patches [B*N, Cin*p*p] before the first block */
    e->hg = arena_floats(a, B * N * max_z(M, (size_t)c->in_chans * c->patch * c->patch));
    const size_t side = (size_t)(any_glob && e->G > e->ws ? e->G : e->ws);
    e->Rh = arena_floats(a, side * side * e->hd);
    e->Rw = arena_floats(a, side * side * e->hd);
    e->nscratch = 0;
    if (any_win) e->nscratch = sam_attention_scratch_floats((int)B * e->nW, e->ws, e->ws, c->heads);
    if (any_glob) e->nscratch = max_z(e->nscratch, sam_attention_scratch_floats((int)B, e->G, e->G, c->heads));
    e->scratch = arena_floats(a, e->nscratch);
    e->n1 = arena_floats(a, B * OC * N);
    e->n1n = arena_floats(a, B * OC * N);
    e->n2 = arena_floats(a, B * OC * N);
    e->out = arena_floats(a, B * OC * N);
    e->nmean = arena_floats(a, B * N);
    e->nrstd = arena_floats(a, B * N);
    e->cscratch = arena_floats(a, conv2d_scratch_floats((int)OC, e->G, e->G, 3, 3, 1, 1, 1, 1));
}

sam_image_encoder *sam_encoder_create(const sam_encoder_cfg *c, ar_params *ps, int max_batch) {
    if (check_cfg(c)) return NULL;
    if (max_batch <= 0) { ar_errorf("sam_image_encoder: max_batch %d", max_batch); return NULL; }
    sam_image_encoder *e = calloc(1, sizeof *e);
    if (!e) { ar_errorf("sam_image_encoder: out of memory"); return NULL; }
    e->c = *c; e->maxB = max_batch;
    e->G = c->img_size / c->patch; e->N = e->G * e->G; e->C = c->dim; e->hd = c->dim / c->heads;
    e->M = c->mlp_dim; e->OC = c->out_chans; e->ws = c->window;
    const int nside = (e->G + e->ws - 1) / e->ws;
    e->nW = nside * nside; e->Np = e->nW * e->ws * e->ws;
    e->bw = calloc((size_t)c->depth, sizeof *e->bw);
    if (!e->bw) { sam_encoder_free(e); ar_errorf("sam_image_encoder: out of memory"); return NULL; }
    const int C = e->C, G = e->G, hd = e->hd, M = e->M, OC = e->OC, p = c->patch;
    int bad = 0;
    char s[NAME_LEN];
    e->pe_w = bind(ps, c, "patch_embed.proj.weight", 4, C, c->in_chans, p, p, &bad);
    e->pe_b = bind(ps, c, "patch_embed.proj.bias", 1, C, 0, 0, 0, &bad);
    e->pos = bind(ps, c, "pos_embed", 4, 1, G, G, C, &bad);
    for (int l = 0; l < c->depth; l++) {
        block_w *w = &e->bw[l];
        int size, L;
        block_geom(c, l, &size, &L);
        w->global = c->global_attn[l]; w->size = size; w->Lh = w->Lw = L;
#define B_(x) (fmt_name(s, "blocks.%d." x, l), s)
        w->n1w = bind(ps, c, B_("norm1.weight"), 1, C, 0, 0, 0, &bad);
        w->n1b = bind(ps, c, B_("norm1.bias"), 1, C, 0, 0, 0, &bad);
        w->qkvw = bind(ps, c, B_("attn.qkv.weight"), 2, 3 * C, C, 0, 0, &bad);
        w->qkvb = bind(ps, c, B_("attn.qkv.bias"), 1, 3 * C, 0, 0, 0, &bad);
        w->projw = bind(ps, c, B_("attn.proj.weight"), 2, C, C, 0, 0, &bad);
        w->projb = bind(ps, c, B_("attn.proj.bias"), 1, C, 0, 0, 0, &bad);
        w->relh = bind(ps, c, B_("attn.rel_pos_h"), 2, L, hd, 0, 0, &bad);
        w->relw = bind(ps, c, B_("attn.rel_pos_w"), 2, L, hd, 0, 0, &bad);
        w->n2w = bind(ps, c, B_("norm2.weight"), 1, C, 0, 0, 0, &bad);
        w->n2b = bind(ps, c, B_("norm2.bias"), 1, C, 0, 0, 0, &bad);
        w->l1w = bind(ps, c, B_("mlp.lin1.weight"), 2, M, C, 0, 0, &bad);
        w->l1b = bind(ps, c, B_("mlp.lin1.bias"), 1, M, 0, 0, 0, &bad);
        w->l2w = bind(ps, c, B_("mlp.lin2.weight"), 2, C, M, 0, 0, &bad);
        w->l2b = bind(ps, c, B_("mlp.lin2.bias"), 1, C, 0, 0, 0, &bad);
#undef B_
    }
    e->neck0 = bind(ps, c, "neck.0.weight", 4, OC, C, 1, 1, &bad);
    e->neck1w = bind(ps, c, "neck.1.weight", 1, OC, 0, 0, 0, &bad);
    e->neck1b = bind(ps, c, "neck.1.bias", 1, OC, 0, 0, 0, &bad);
    e->neck2 = bind(ps, c, "neck.2.weight", 4, OC, OC, 3, 3, &bad);
    e->neck3w = bind(ps, c, "neck.3.weight", 1, OC, 0, 0, 0, &bad);
    e->neck3b = bind(ps, c, "neck.3.bias", 1, OC, 0, 0, 0, &bad);
    if (bad) { sam_encoder_free(e); return NULL; }
    ar_arena meas;
    arena_init_measure(&meas);
    plan(e, &meas);
    if (arena_init(&e->arena, meas.high)) { sam_encoder_free(e); return NULL; }
    plan(e, &e->arena);
    return e;
}

void sam_encoder_free(sam_image_encoder *e) {
    if (!e) return;
    arena_free(&e->arena);
    free(e->bw);
    free(e);
}

size_t sam_encoder_activation_bytes(const sam_image_encoder *e) { return e->arena.cap; }

/* ------------------------------------------------------------------ forward */

/* x[B*N,C] += proj(attn(LN1(x))); x += lin2(GELU(lin1(LN2(x)))). */
static void block_forward(sam_image_encoder *e, const block_w *w, int B) {
    const int N = e->N, C = e->C, G = e->G, M = e->M, hd = e->hd, heads = e->c.heads;
    const size_t BN = (size_t)B * N;
    const float scale = 1.0f / sqrtf((float)hd);
    layernorm_forward(e->xn, e->mean, e->rstd, e->x, w->n1w, w->n1b, LN_EPS, (int)BN, C);
    linear_forward(e->qkv, e->xn, w->qkvw, w->qkvb, (int)BN, C, 3 * C);
    sam_rel_pos_forward(e->Rh, w->relh, w->size, w->size, w->Lh, hd);
    sam_rel_pos_forward(e->Rw, w->relw, w->size, w->size, w->Lw, hd);
    const float *ao;
    if (w->global) {
        sam_attention_forward(e->ao, e->scratch, e->nscratch, e->qkv, e->Rh, e->Rw, scale, B, G, G, heads, hd);
        ao = e->ao;
    } else {
        const int ws = e->ws;
        /* padded cells: LN1 output 0 -> q, k, v = the qkv bias */
        sam_window_partition_forward(e->qkvw, e->qkv, w->qkvb, B, G, G, 3 * C, ws);
        sam_attention_forward(e->ao, e->scratch, e->nscratch, e->qkvw, e->Rh, e->Rw, scale, B * e->nW, ws, ws,
                              heads, hd);
        sam_window_unpartition_forward(e->xn, e->ao, B, G, G, C, ws);
        ao = e->xn;
    }
    linear_forward(e->tmp, ao, w->projw, w->projb, (int)BN, C, C);
    add_forward(e->x, e->x, e->tmp, BN * C);
    layernorm_forward(e->xn, e->mean, e->rstd, e->x, w->n2w, w->n2b, LN_EPS, (int)BN, C);
    linear_forward(e->h, e->xn, w->l1w, w->l1b, (int)BN, C, M);
    gelu_forward(e->hg, e->h, BN * M);
    linear_forward(e->tmp, e->hg, w->l2w, w->l2b, (int)BN, M, C);
    add_forward(e->x, e->x, e->tmp, BN * C);
}

static int check_batch(const sam_image_encoder *e, int B) {
    if (B < 1 || B > e->maxB)
        return ar_errorf("sam_image_encoder: batch %d outside 1..%d (max_batch at create)", B, e->maxB);
    return 0;
}

float *sam_encoder_tokens(sam_image_encoder *e, const float *image, int B, int n_blocks) {
    if (check_batch(e, B)) return NULL;
    if (n_blocks < 0 || n_blocks > e->c.depth) {
        ar_errorf("sam_image_encoder: n_blocks %d outside 0..%d", n_blocks, e->c.depth);
        return NULL;
    }
    const sam_encoder_cfg *c = &e->c;
    const int N = e->N, C = e->C, p = c->patch, K = c->in_chans * p * p;
    sam_patchify_forward(e->hg, image, B, c->in_chans, c->img_size, c->img_size, p);
    linear_forward(e->x, e->hg, e->pe_w, e->pe_b, B * N, K, C);
    for (int b = 0; b < B; b++) {
        float *xb = e->x + (size_t)b * N * C;
        add_forward(xb, xb, e->pos, (size_t)N * C);
    }
    for (int l = 0; l < n_blocks; l++) block_forward(e, &e->bw[l], B);
    return e->x;
}

float *sam_encoder_forward(sam_image_encoder *e, const float *image, int B) {
    if (!sam_encoder_tokens(e, image, B, e->c.depth)) return NULL;
    const int N = e->N, C = e->C, OC = e->OC, G = e->G;
    for (int b = 0; b < B; b++)    /* neck.0, Conv1x1: n1[b][OC,N] = W[OC,C] @ x[b][N,C]^T */
        matmul(e->n1 + (size_t)b * OC * N, e->neck0, e->x + (size_t)b * N * C, OC, N, C, 0, 1, 1.0f, 0.0f);
    layernorm2d_forward(e->n1n, e->nmean, e->nrstd, e->n1, e->neck1w, e->neck1b, LN_EPS, B, OC, N);
    conv2d_forward(e->n2, e->cscratch, e->n1n, e->neck2, NULL, B, OC, G, G, OC, 3, 3, 1, 1, 1, 1);
    layernorm2d_forward(e->out, e->nmean, e->nrstd, e->n2, e->neck3w, e->neck3b, LN_EPS, B, OC, N);
    return e->out;
}
