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
 * tokens only. Both give SAM's values while skipping the padding's GEMM rows.
 * Backward follows the same route: the partition's adjoint sends the padded
 * cells' d(q,k,v) to the qkv bias (their only dependence), the real cells' to
 * the qkv Linear's output.
 *
 * Frozen, every block reads and writes one token buffer x in place and shares
 * one set of buffers. Trainable, block l reads xs[l] and writes xs[l+1], and
 * its saved activations (block_act) are its own; backward runs the blocks in
 * reverse with one gradient buffer dx [B*N,C] that carries the residual
 * stream. */
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
    const uint16_t *qkvw16, *projw16, *l1w16, *l2w16;   /* cfg.frozen_half: these instead of the fp32 four */
    int global, size, Lh, Lw;   /* attention grid side (window or G), rel_pos rows */
} block_w;

/* What block_forward writes and (trainable) backward reads; frozen, these are
 * the shared buffers. */
typedef struct {
    float *xmid;                 /* [B*N,C] x after the attention residual */
    float *mean1, *rstd1, *mean2, *rstd2;  /* [B*N] */
    float *qkv;                  /* the attention's input: [B*N,3C] global, [B*Np,3C] windowed */
    float *ao;                   /* [B*N,C] attention output (unpartitioned), the proj's input */
    float *h;                    /* [B*N,M] lin1 output, before GELU */
} block_act;

/* Gradient buffers of the trainable encoder (NULL when frozen). */
typedef struct {
    float *dx, *dxn, *dao, *daow, *dqkv, *dqkvw, *dh, *dhg, *dRh, *dRw;
    float *dn1, *dn1n, *dn2;
} enc_grads;

struct sam_image_encoder {
    sam_encoder_cfg c;
    int maxB, G, N, C, hd, M, OC, ws, nW, Np;
    block_w *bw, *bg;            /* weights; gradients (trainable) */
    block_act *act;              /* per block (trainable) or depth copies of the shared set */
    float *pe_w, *pe_b, *pos, *neck0, *neck1w, *neck1b, *neck2, *neck3w, *neck3b;
    float *gpe_w, *gpe_b, *gpos, *gneck0, *gneck1w, *gneck1b, *gneck2, *gneck3w, *gneck3b;
    int tr, last_B;              /* trainable; batch of the last full forward (0: none) */
    int held;                    /* checkpoint_blocks: the block whose activations the shared buffers hold */
    float **xs;                  /* [depth+1]: block inputs / outputs (all e->x when frozen) */
    float *patches, *nmean1, *nrstd1;   /* trainable: kept for backward */
    enc_grads g;
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
    if (c->frozen_half < 0 || c->frozen_half > SAM_ENC_HALF_F16)
        return ar_errorf("sam_image_encoder: frozen_half %d (expected 0, SAM_ENC_HALF_BF16 or SAM_ENC_HALF_F16)",
                         c->frozen_half);
    if (c->frozen_half && c->trainable)
        return ar_errorf("sam_image_encoder: 16-bit weights need a frozen encoder (it is trainable)");
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
    return params_add(ps, n, ndim, shape, c->trainable ? 1 : 0, init, std);
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
        if (c->frozen_half) {   /* the four big matrices in 16 bits */
            static const char *const big[] = {"attn.qkv.weight", "attn.proj.weight", "mlp.lin1.weight", "mlp.lin2.weight"};
            for (int i = 0; i < 4; i++) {
                char n[NAME_LEN];
                fmt_name(n, "%sblocks.%d.%s", c->prefix, l, big[i]);
                if (params_store_half(ps, n, c->frozen_half == SAM_ENC_HALF_F16)) return -1;
            }
        }
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
    return p->half ? NULL : ps->w + p->off;   /* a 16-bit tensor: bind16 */
}

/* The 16-bit storage of tensor prefix+suffix (NULL when it is fp32; bind checked the shape). */
static const uint16_t *bind16(const ar_params *ps, const sam_encoder_cfg *c, const char *suffix) {
    char n[NAME_LEN];
    fmt_name(n, "%s%s", c->prefix, suffix);
    const ar_param *p = params_find(ps, n);
    return p && p->half && ps->w16 ? ps->w16 + p->off16 : NULL;
}

/* Its gradient (trainable encoders; the shape was checked by bind). */
static float *bind_g(const ar_params *ps, const sam_encoder_cfg *c, const char *suffix, int *bad) {
    if (*bad) return NULL;
    char n[NAME_LEN];
    fmt_name(n, "%s%s", c->prefix, suffix);
    float *g = params_g(ps, n);
    if (!g) {
        *bad = 1;
        ar_errorf("sam_image_encoder: %s is frozen in the registry but the config is trainable", n);
    }
    return g;
}

/* ------------------------------------------------------------------ memory plan */

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

/* Floats of the attention kernels' scratch for a batch of B images: the
 * largest of the windowed and global calls (and their backward, trainable). */
static size_t attn_scratch_floats(const sam_image_encoder *e, size_t B) {
    const sam_encoder_cfg *c = &e->c;
    int any_win = 0, any_glob = 0;
    for (int l = 0; l < c->depth; l++) { if (c->global_attn[l]) any_glob = 1; else any_win = 1; }
    size_t n = 0;
    if (any_win) n = sam_attention_scratch_floats((int)B * e->nW, e->ws, e->ws, c->heads);
    if (any_glob) n = max_z(n, sam_attention_scratch_floats((int)B, e->G, e->G, c->heads));
    if (e->tr && any_win)
        n = max_z(n, sam_attention_backward_scratch_floats((int)B * e->nW, e->ws, e->ws, c->heads, e->hd));
    if (e->tr && any_glob) n = max_z(n, sam_attention_backward_scratch_floats((int)B, e->G, e->G, c->heads, e->hd));
    return n;
}

static void plan(sam_image_encoder *e, ar_arena *a) {
    const sam_encoder_cfg *c = &e->c;
    const size_t B = (size_t)e->maxB, N = e->N, C = e->C, M = e->M, OC = e->OC, Np = e->Np;
    const int tr = e->tr;
    int any_win = 0, any_glob = 0;
    for (int l = 0; l < c->depth; l++) { if (c->global_attn[l]) any_glob = 1; else any_win = 1; }
    e->x = arena_floats(a, B * N * C);
    e->xn = arena_floats(a, B * N * C);
    e->mean = tr ? NULL : arena_floats(a, B * N);
    e->rstd = tr ? NULL : arena_floats(a, B * N);
    e->qkv = arena_floats(a, B * N * 3 * C);
    e->qkvw = any_win && !tr ? arena_floats(a, B * Np * 3 * C) : NULL;
    e->ao = arena_floats(a, B * (any_win ? max_z(Np, N) : N) * C);
    e->tmp = arena_floats(a, B * N * C);
    e->h = tr ? NULL : arena_floats(a, B * N * M);
    /* hg also holds the patches [B*N, Cin*p*p] before the first block (frozen) */
    const size_t K = (size_t)c->in_chans * c->patch * c->patch;
    e->hg = arena_floats(a, B * N * (tr ? M : max_z(M, K)));
    const size_t side = (size_t)(any_glob && e->G > e->ws ? e->G : e->ws);
    e->Rh = arena_floats(a, side * side * e->hd);
    e->Rw = arena_floats(a, side * side * e->hd);
    e->nscratch = attn_scratch_floats(e, B);
    e->scratch = arena_floats(a, e->nscratch);
    e->n1 = arena_floats(a, B * OC * N);
    e->n1n = arena_floats(a, B * OC * N);
    e->n2 = arena_floats(a, B * OC * N);
    e->out = arena_floats(a, B * OC * N);
    e->nmean = arena_floats(a, B * N);
    e->nrstd = arena_floats(a, B * N);
    e->cscratch = arena_floats(a, conv2d_scratch_floats((int)OC, e->G, e->G, 3, 3, 1, 1, 1, 1));
    if (!tr) {      /* one shared set of buffers, x updated in place */
        for (int l = 0; l <= c->depth; l++) e->xs[l] = e->x;
        for (int l = 0; l < c->depth; l++)
            e->act[l] = (block_act){.xmid = e->x, .mean1 = e->mean, .rstd1 = e->rstd, .mean2 = e->mean,
                                    .rstd2 = e->rstd, .qkv = c->global_attn[l] ? e->qkv : e->qkvw,
                                    .ao = c->global_attn[l] ? e->ao : e->xn, .h = e->h};
        return;
    }
    /* trainable: what backward reads, per block (checkpoint_blocks: the block
     * inputs per block, one set of the rest, refilled by a recomputed forward) */
    e->xs[0] = e->x;
    for (int l = 1; l <= c->depth; l++) e->xs[l] = arena_floats(a, B * N * C);
    const int ck = c->checkpoint_blocks != 0;
    for (int l = 0; l < c->depth; l++) {
        block_act *ba = &e->act[l];
        if (ck && l > 0) { *ba = e->act[0]; continue; }
        const size_t rows = ck ? (any_win ? max_z(Np, N) : N) : (c->global_attn[l] ? N : Np);
        ba->xmid = arena_floats(a, B * N * C);
        ba->mean1 = arena_floats(a, B * N);
        ba->rstd1 = arena_floats(a, B * N);
        ba->mean2 = arena_floats(a, B * N);
        ba->rstd2 = arena_floats(a, B * N);
        ba->qkv = arena_floats(a, B * rows * 3 * C);
        ba->ao = arena_floats(a, B * N * C);
        ba->h = arena_floats(a, B * N * M);
    }
    e->patches = arena_floats(a, B * N * K);
    e->nmean1 = arena_floats(a, B * N);
    e->nrstd1 = arena_floats(a, B * N);
    enc_grads *g = &e->g;
    g->dx = arena_floats(a, B * N * C);
    g->dxn = arena_floats(a, B * N * C);
    g->dao = arena_floats(a, B * N * C);
    g->daow = any_win ? arena_floats(a, B * Np * C) : NULL;
    g->dqkv = arena_floats(a, B * N * 3 * C);
    g->dqkvw = any_win ? arena_floats(a, B * Np * 3 * C) : NULL;
    g->dh = arena_floats(a, B * N * M);
    g->dhg = arena_floats(a, B * N * M);
    g->dRh = arena_floats(a, side * side * e->hd);
    g->dRw = arena_floats(a, side * side * e->hd);
    g->dn1 = arena_floats(a, B * OC * N);
    g->dn1n = arena_floats(a, B * OC * N);
    g->dn2 = arena_floats(a, B * OC * N);
}

/* The sizes plan() reads, from the config alone (create and plan_bytes). */
static void enc_sizes(sam_image_encoder *e, const sam_encoder_cfg *c, int max_batch) {
    e->c = *c; e->maxB = max_batch; e->tr = c->trainable != 0;
    e->G = c->img_size / c->patch; e->N = e->G * e->G; e->C = c->dim; e->hd = c->dim / c->heads;
    e->M = c->mlp_dim; e->OC = c->out_chans; e->ws = c->window;
    const int nside = (e->G + e->ws - 1) / e->ws;
    e->nW = nside * nside; e->Np = e->nW * e->ws * e->ws;
}

size_t sam_encoder_plan_bytes(const sam_encoder_cfg *c, int max_batch) {
    if (max_batch <= 0 || check_cfg(c)) return 0;
    sam_image_encoder e;
    memset(&e, 0, sizeof e);
    enc_sizes(&e, c, max_batch);
    e.act = calloc((size_t)c->depth, sizeof *e.act);
    e.xs = calloc((size_t)c->depth + 1, sizeof *e.xs);
    size_t need = 0;
    if (e.act && e.xs) {
        ar_arena meas;
        arena_init_measure(&meas);
        plan(&e, &meas);
        need = meas.high;
    }
    free(e.act);
    free(e.xs);
    return need;
}

size_t sam_encoder_kernel_workspace_bytes(const sam_encoder_cfg *c, int max_batch, int gemm_bf16) {
    if (max_batch <= 0 || check_cfg(c) || c->frozen_half != SAM_ENC_HALF_BF16 || !gemm_bf16) return 0;
    sam_image_encoder e;
    memset(&e, 0, sizeof e);
    enc_sizes(&e, c, max_batch);
    sam_attn_shape sh[2];   /* windowed blocks over the windows, global ones over whole grids */
    int n = 0, any_win = 0, any_glob = 0;
    for (int i = 0; i < c->depth; i++) { if (c->global_attn[i]) any_glob = 1; else any_win = 1; }
    if (any_win) sh[n++] = (sam_attn_shape){max_batch * e.nW, e.ws, e.ws};
    if (any_glob) sh[n++] = (sam_attn_shape){max_batch, e.G, e.G};
    return sam_attention_bf16_workspace_bytes(sh, n, c->heads, e.hd, attn_scratch_floats(&e, (size_t)max_batch));
}

sam_image_encoder *sam_encoder_create(const sam_encoder_cfg *c, ar_params *ps, int max_batch) {
    if (check_cfg(c)) return NULL;
    if (max_batch <= 0) { ar_errorf("sam_image_encoder: max_batch %d", max_batch); return NULL; }
    sam_image_encoder *e = calloc(1, sizeof *e);
    if (!e) { ar_errorf("sam_image_encoder: out of memory"); return NULL; }
    enc_sizes(e, c, max_batch);
    e->bw = calloc((size_t)c->depth, sizeof *e->bw);
    e->bg = calloc((size_t)c->depth, sizeof *e->bg);
    e->act = calloc((size_t)c->depth, sizeof *e->act);
    e->xs = calloc((size_t)c->depth + 1, sizeof *e->xs);
    if (!e->bw || !e->bg || !e->act || !e->xs) { sam_encoder_free(e); ar_errorf("sam_image_encoder: out of memory"); return NULL; }
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
        w->qkvw16 = bind16(ps, c, B_("attn.qkv.weight"));
        w->projw16 = bind16(ps, c, B_("attn.proj.weight"));
        w->l1w16 = bind16(ps, c, B_("mlp.lin1.weight"));
        w->l2w16 = bind16(ps, c, B_("mlp.lin2.weight"));
        if (!bad && ((!w->qkvw && !w->qkvw16) || (!w->projw && !w->projw16) || (!w->l1w && !w->l1w16) ||
                     (!w->l2w && !w->l2w16))) {
            bad = 1;
            ar_errorf("sam_image_encoder: block %d's weights are in no block of the registry", l);
        }
        if (!bad && e->tr && (w->qkvw16 || w->projw16 || w->l1w16 || w->l2w16)) {
            bad = 1;
            ar_errorf("sam_image_encoder: block %d's weights are stored in 16 bits but the encoder is trainable", l);
        }
#undef B_
    }
    e->neck0 = bind(ps, c, "neck.0.weight", 4, OC, C, 1, 1, &bad);
    e->neck1w = bind(ps, c, "neck.1.weight", 1, OC, 0, 0, 0, &bad);
    e->neck1b = bind(ps, c, "neck.1.bias", 1, OC, 0, 0, 0, &bad);
    e->neck2 = bind(ps, c, "neck.2.weight", 4, OC, OC, 3, 3, &bad);
    e->neck3w = bind(ps, c, "neck.3.weight", 1, OC, 0, 0, 0, &bad);
    e->neck3b = bind(ps, c, "neck.3.bias", 1, OC, 0, 0, 0, &bad);
    if (e->tr) {
        e->gpe_w = bind_g(ps, c, "patch_embed.proj.weight", &bad);
        e->gpe_b = bind_g(ps, c, "patch_embed.proj.bias", &bad);
        e->gpos = bind_g(ps, c, "pos_embed", &bad);
        for (int l = 0; l < c->depth; l++) {
            block_w *g = &e->bg[l];
            *g = e->bw[l];
#define B_(x) (fmt_name(s, "blocks.%d." x, l), s)
            g->n1w = bind_g(ps, c, B_("norm1.weight"), &bad);
            g->n1b = bind_g(ps, c, B_("norm1.bias"), &bad);
            g->qkvw = bind_g(ps, c, B_("attn.qkv.weight"), &bad);
            g->qkvb = bind_g(ps, c, B_("attn.qkv.bias"), &bad);
            g->projw = bind_g(ps, c, B_("attn.proj.weight"), &bad);
            g->projb = bind_g(ps, c, B_("attn.proj.bias"), &bad);
            g->relh = bind_g(ps, c, B_("attn.rel_pos_h"), &bad);
            g->relw = bind_g(ps, c, B_("attn.rel_pos_w"), &bad);
            g->n2w = bind_g(ps, c, B_("norm2.weight"), &bad);
            g->n2b = bind_g(ps, c, B_("norm2.bias"), &bad);
            g->l1w = bind_g(ps, c, B_("mlp.lin1.weight"), &bad);
            g->l1b = bind_g(ps, c, B_("mlp.lin1.bias"), &bad);
            g->l2w = bind_g(ps, c, B_("mlp.lin2.weight"), &bad);
            g->l2b = bind_g(ps, c, B_("mlp.lin2.bias"), &bad);
#undef B_
        }
        e->gneck0 = bind_g(ps, c, "neck.0.weight", &bad);
        e->gneck1w = bind_g(ps, c, "neck.1.weight", &bad);
        e->gneck1b = bind_g(ps, c, "neck.1.bias", &bad);
        e->gneck2 = bind_g(ps, c, "neck.2.weight", &bad);
        e->gneck3w = bind_g(ps, c, "neck.3.weight", &bad);
        e->gneck3b = bind_g(ps, c, "neck.3.bias", &bad);
    }
    if (bad) { sam_encoder_free(e); return NULL; }
    if (arena_init(&e->arena, sam_encoder_plan_bytes(c, max_batch))) { sam_encoder_free(e); return NULL; }
    plan(e, &e->arena);
    return e;
}

void sam_encoder_free(sam_image_encoder *e) {
    if (!e) return;
    arena_free(&e->arena);
    free(e->bw);
    free(e->bg);
    free(e->act);
    free(e->xs);
    free(e);
}

size_t sam_encoder_activation_bytes(const sam_image_encoder *e) { return e->arena.cap; }

/* ------------------------------------------------------------------ forward */

/* out[N,OUT] = in W^T + b with W fp32 (w) or in 16 bits (w16, cfg.frozen_half). */
static void lin(const sam_image_encoder *e, float *out, const float *in, const float *w, const uint16_t *w16,
                const float *b, int N, int IN, int OUT) {
    if (!w16) linear_forward(out, in, w, b, N, IN, OUT);
    else if (e->c.frozen_half == SAM_ENC_HALF_F16) linear_f16_forward(out, in, w16, b, N, IN, OUT);
    else linear_bf16_forward(out, in, w16, b, N, IN, OUT);
}

/* Attention over B grids of h x w tokens: bf16 products where the weights are
 * bf16 and the GEMM mode is bf16 (the frozen encoder's products all bf16, as
 * in PyTorch's bf16 SAM), else fp32. */
static void attn(const sam_image_encoder *e, float *out, const float *qkv, float scale, int B, int hw) {
    const int heads = e->c.heads, hd = e->hd;
    if (e->c.frozen_half == SAM_ENC_HALF_BF16 && !strcmp(k_gemm_mode(), "bf16"))
        sam_attention_bf16_forward(out, e->scratch, e->nscratch, qkv, e->Rh, e->Rw, scale, B, hw, hw, heads, hd);
    else
        sam_attention_forward(out, e->scratch, e->nscratch, qkv, e->Rh, e->Rw, scale, B, hw, hw, heads, hd);
}

/* xout[B*N,C] = xmid + lin2(GELU(lin1(LN2(xmid)))), xmid = xin + proj(attn(LN1(xin))).
 * Frozen: xin, xmid and xout are all e->x (updated in place). */
static void block_forward(sam_image_encoder *e, const block_w *w, const block_act *a, const float *xin,
                          float *xout, int B) {
    const int N = e->N, C = e->C, G = e->G, M = e->M, hd = e->hd;
    const size_t BN = (size_t)B * N;
    const float scale = 1.0f / sqrtf((float)hd);
    layernorm_forward(e->xn, a->mean1, a->rstd1, xin, w->n1w, w->n1b, LN_EPS, (int)BN, C);
    lin(e, w->global ? a->qkv : e->qkv, e->xn, w->qkvw, w->qkvw16, w->qkvb, (int)BN, C, 3 * C);
    sam_rel_pos_forward(e->Rh, w->relh, w->size, w->size, w->Lh, hd);
    sam_rel_pos_forward(e->Rw, w->relw, w->size, w->size, w->Lw, hd);
    if (w->global) {
        attn(e, a->ao, a->qkv, scale, B, G);
    } else {
        const int ws = e->ws;
        /* padded cells: LN1 output 0 -> q, k, v = the qkv bias */
        sam_window_partition_forward(a->qkv, e->qkv, w->qkvb, B, G, G, 3 * C, ws);
        attn(e, e->ao, a->qkv, scale, B * e->nW, ws);
        sam_window_unpartition_forward(a->ao, e->ao, B, G, G, C, ws);
    }
    lin(e, e->tmp, a->ao, w->projw, w->projw16, w->projb, (int)BN, C, C);
    add_forward(a->xmid, xin, e->tmp, BN * C);
    layernorm_forward(e->xn, a->mean2, a->rstd2, a->xmid, w->n2w, w->n2b, LN_EPS, (int)BN, C);
    if (w->l1w16)   /* 16-bit (frozen): lin1 with its GELU, the pre-activation not kept */
        linear_half_act_forward(e->hg, e->xn, w->l1w16, e->c.frozen_half == SAM_ENC_HALF_F16, w->l1b, (int)BN, C, M,
                                K_ACT_GELU);
    else {
        lin(e, a->h, e->xn, w->l1w, NULL, w->l1b, (int)BN, C, M);
        gelu_forward(e->hg, a->h, BN * M);
    }
    lin(e, e->tmp, e->hg, w->l2w, w->l2w16, w->l2b, (int)BN, M, C);
    add_forward(xout, a->xmid, e->tmp, BN * C);
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
    e->last_B = 0;
    const sam_encoder_cfg *c = &e->c;
    const int N = e->N, C = e->C, p = c->patch, K = c->in_chans * p * p;
    float *patches = e->tr ? e->patches : e->hg;
    sam_patchify_forward(patches, image, B, c->in_chans, c->img_size, c->img_size, p);
    linear_forward(e->xs[0], patches, e->pe_w, e->pe_b, B * N, K, C);
    for (int b = 0; b < B; b++) {
        float *xb = e->xs[0] + (size_t)b * N * C;
        add_forward(xb, xb, e->pos, (size_t)N * C);
    }
    for (int l = 0; l < n_blocks; l++) block_forward(e, &e->bw[l], &e->act[l], e->xs[l], e->xs[l + 1], B);
    return e->xs[n_blocks];
}

float *sam_encoder_forward(sam_image_encoder *e, const float *image, int B) {
    if (!sam_encoder_tokens(e, image, B, e->c.depth)) return NULL;
    const int N = e->N, C = e->C, OC = e->OC, G = e->G;
    const float *x = e->xs[e->c.depth];
    float *m1 = e->tr ? e->nmean1 : e->nmean, *r1 = e->tr ? e->nrstd1 : e->nrstd;
    for (int b = 0; b < B; b++)    /* neck.0, Conv1x1: n1[b][OC,N] = W[OC,C] @ x[b][N,C]^T */
        matmul(e->n1 + (size_t)b * OC * N, e->neck0, x + (size_t)b * N * C, OC, N, C, 0, 1, 1.0f, 0.0f);
    layernorm2d_forward(e->n1n, m1, r1, e->n1, e->neck1w, e->neck1b, LN_EPS, B, OC, N);
    conv2d_forward(e->n2, e->cscratch, e->n1n, e->neck2, NULL, B, OC, G, G, OC, 3, 3, 1, 1, 1, 1);
    layernorm2d_forward(e->out, e->nmean, e->nrstd, e->n2, e->neck3w, e->neck3b, LN_EPS, B, OC, N);
    e->last_B = B;
    e->held = e->c.depth - 1;
    return e->out;
}

/* ------------------------------------------------------------------ backward */

/* g->dx holds d(block output) [B*N,C]; on return d(block input). Accumulates
 * into the block's parameter gradients gw. */
static void block_backward(sam_image_encoder *e, const block_w *w, const block_w *gw, const block_act *a,
                           const float *xin, int B) {
    const int N = e->N, C = e->C, G = e->G, M = e->M, hd = e->hd, heads = e->c.heads, ws = e->ws;
    const size_t BN = (size_t)B * N, F = sizeof(float);
    const float scale = 1.0f / sqrtf((float)hd);
    const enc_grads *g = &e->g;
    /* MLP branch: xout = xmid + lin2(GELU(lin1(LN2(xmid)))) */
    layernorm_forward(e->xn, a->mean2, a->rstd2, a->xmid, w->n2w, w->n2b, LN_EPS, (int)BN, C);
    gelu_forward(e->hg, a->h, BN * M);
    k_zero(g->dhg, BN * M * F);
    linear_backward(g->dhg, gw->l2w, gw->l2b, g->dx, e->hg, w->l2w, (int)BN, M, C);
    k_zero(g->dh, BN * M * F);
    gelu_backward(g->dh, g->dhg, a->h, BN * M);
    k_zero(g->dxn, BN * C * F);
    linear_backward(g->dxn, gw->l1w, gw->l1b, g->dh, e->xn, w->l1w, (int)BN, C, M);
    layernorm_backward(g->dx, gw->n2w, gw->n2b, g->dxn, a->xmid, w->n2w, a->mean2, a->rstd2, (int)BN, C);
    /* attention branch: xmid = xin + proj(attn(LN1(xin))) */
    k_zero(g->dao, BN * C * F);
    linear_backward(g->dao, gw->projw, gw->projb, g->dx, a->ao, w->projw, (int)BN, C, C);
    const size_t nR = (size_t)w->size * w->size * hd;
    sam_rel_pos_forward(e->Rh, w->relh, w->size, w->size, w->Lh, hd);
    sam_rel_pos_forward(e->Rw, w->relw, w->size, w->size, w->Lw, hd);
    k_zero(g->dRh, nR * F);
    k_zero(g->dRw, nR * F);
    k_zero(g->dqkv, BN * 3 * C * F);
    if (w->global) {
        sam_attention_backward(g->dqkv, g->dRh, g->dRw, e->scratch, e->nscratch, g->dao, a->qkv, e->Rh, e->Rw,
                               scale, B, G, G, heads, hd);
    } else {
        const size_t BNp = (size_t)B * e->Np;
        k_zero(g->daow, BNp * C * F);
        sam_window_unpartition_backward(g->daow, g->dao, B, G, G, C, ws);
        k_zero(g->dqkvw, BNp * 3 * C * F);
        sam_attention_backward(g->dqkvw, g->dRh, g->dRw, e->scratch, e->nscratch, g->daow, a->qkv, e->Rh, e->Rw,
                               scale, B * e->nW, ws, ws, heads, hd);
        /* padded cells were the qkv bias */
        sam_window_partition_backward(g->dqkv, gw->qkvb, g->dqkvw, B, G, G, 3 * C, ws);
    }
    sam_rel_pos_backward(gw->relh, g->dRh, w->size, w->size, w->Lh, hd);
    sam_rel_pos_backward(gw->relw, g->dRw, w->size, w->size, w->Lw, hd);
    layernorm_forward(e->xn, a->mean1, a->rstd1, xin, w->n1w, w->n1b, LN_EPS, (int)BN, C);
    k_zero(g->dxn, BN * C * F);
    linear_backward(g->dxn, gw->qkvw, gw->qkvb, g->dqkv, e->xn, w->qkvw, (int)BN, C, 3 * C);
    layernorm_backward(g->dx, gw->n1w, gw->n1b, g->dxn, xin, w->n1w, a->mean1, a->rstd1, (int)BN, C);
}

int sam_encoder_backward(sam_image_encoder *e, const float *dout) {
    if (!e->tr) return ar_errorf("sam_image_encoder: backward of a frozen encoder (set trainable in its config)");
    if (!e->last_B) return ar_errorf("sam_image_encoder: backward without a full forward before it");
    const sam_encoder_cfg *c = &e->c;
    const int B = e->last_B, N = e->N, C = e->C, OC = e->OC, G = e->G, p = c->patch, K = c->in_chans * p * p;
    const size_t F = sizeof(float), nOC = (size_t)B * OC * N;
    const enc_grads *g = &e->g;
    const float *x = e->xs[c->depth];
    /* neck, last layer first */
    k_zero(g->dn2, nOC * F);
    layernorm2d_backward(g->dn2, e->gneck3w, e->gneck3b, dout, e->n2, e->neck3w, e->nmean, e->nrstd, B, OC, N);
    k_zero(g->dn1n, nOC * F);
    conv2d_backward(g->dn1n, e->gneck2, NULL, e->cscratch, g->dn2, e->n1n, e->neck2, B, OC, G, G, OC, 3, 3, 1, 1,
                    1, 1);
    k_zero(g->dn1, nOC * F);
    layernorm2d_backward(g->dn1, e->gneck1w, e->gneck1b, g->dn1n, e->n1, e->neck1w, e->nmean1, e->nrstd1, B, OC, N);
    k_zero(g->dx, (size_t)B * N * C * F);
    for (int b = 0; b < B; b++) {  /* n1[b] = W0 x[b]^T: dW0 += dn1[b] x[b], dx[b] += dn1[b]^T W0 */
        const float *dn = g->dn1 + (size_t)b * OC * N, *xb = x + (size_t)b * N * C;
        matmul(e->gneck0, dn, xb, OC, C, N, 0, 0, 1.0f, 1.0f);
        matmul(g->dx + (size_t)b * N * C, dn, e->neck0, N, C, OC, 1, 0, 1.0f, 1.0f);
    }
    for (int l = c->depth - 1; l >= 0; l--) {
        /* checkpointed: the shared buffers hold one block's forward (after a
         * forward the last block's; after a backward the first's, so a second
         * backward refills the last too); refill them for block l (its output,
         * xs[l+1], is rewritten with the same bits) */
        if (c->checkpoint_blocks && e->held != l) block_forward(e, &e->bw[l], &e->act[l], e->xs[l], e->xs[l + 1], B);
        e->held = l;
        block_backward(e, &e->bw[l], &e->bg[l], &e->act[l], e->xs[l], B);
    }
    for (int b = 0; b < B; b++) axpy(e->gpos, g->dx + (size_t)b * N * C, 1.0f, (size_t)N * C);
    linear_backward(NULL, e->gpe_w, e->gpe_b, g->dx, e->patches, e->pe_w, B * N, K, C);
    return 0;
}
