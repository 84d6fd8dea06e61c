/* model/imagebind_audio.c — ImageBind audio encoder (frozen, forward only) and
 * AnyRef's audio_projector (see imagebind_audio.h).
 * Shapes: N clips, D = embed_dim, F = mlp_ratio*D, H heads of hd = D/H,
 * L = GH*GW patches, T = L + 1 tokens, S = T + 1 keys (bias_k/bias_v),
 * O = out_dim, P = llm_dim. Depends on kernels/, core/error, model/params. */
#include "model/imagebind_audio.h"
#include "kernels/kernels.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEM_LN_EPS 1e-5f   /* nn.LayerNorm(normalized_shape=D) in the stem */
#define LN_EPS 1e-6f        /* SimpleTransformer's _LAYER_NORM and the head LayerNorm */

typedef struct {
    const float *ln1w, *ln1b, *in_w, *in_b, *bk, *bv, *out_w, *out_b;
    const float *ln2w, *ln2b, *fc1w, *fc1b, *fc2w, *fc2b;
    const uint16_t *in_w16, *out_w16, *fc1w16, *fc2w16;   /* cfg.frozen_half: these instead of the fp32 four */
} ib_block;

struct imagebind_audio {
    imagebind_audio_cfg c;
    int max_clips, GH, GW, L, T, S, D, F, H, hd, O, P;
    const float *conv_w, *stem_lnw, *stem_lnb, *cls, *pos, *head_lnw, *head_lnb, *head_w;
    ib_block *blk;                 /* host [depth] */
    const float *proj_w, *proj_b;  /* NULL without a projector */
    float *gproj_w, *gproj_b;      /* NULL when frozen */
    float *block;                  /* one k_malloc for everything below */
    float *conv, *scratch;         /* [N, D, L], conv2d scratch */
    float *x, *h, *q, *ao;         /* [N*T, D] each (h and q also hold the stem's [N*L, D]) */
    float *k, *v;                  /* [N, S, D] */
    float *att;                    /* [N, H, T, S] */
    float *f1, *f2;                /* [N*T, F] */
    float *mean, *rstd;            /* [N*T] */
    float *cls_x, *cls_n, *head;   /* [N, D], [N, D], [N, O] */
    float *nscale;                 /* [O] = logit_scale / sqrt(O) (rmsnorm weight) */
};

imagebind_audio_cfg imagebind_audio_huge(int llm_dim) {
    imagebind_audio_cfg c = {.embed_dim = 768, .depth = 12, .heads = 12, .mlp_ratio = 4,
                             .kernel = 16, .stride = 10, .n_mels = 128, .target_len = 204,
                             .out_dim = 1024, .logit_scale = 20.0f, .llm_dim = llm_dim,
                             .proj_trainable = 1, .prefix = NULL, .proj_prefix = NULL};
    return c;
}

int imagebind_audio_grid(const imagebind_audio_cfg *c, int *gh, int *gw, int *tokens) {
    if (c->embed_dim <= 0 || c->depth < 0 || c->heads <= 0 || c->embed_dim % c->heads ||
        c->mlp_ratio <= 0 || c->kernel <= 0 || c->stride <= 0 || c->out_dim <= 0 || c->llm_dim < 0)
        return ar_errorf("imagebind_audio: bad config (D %d, depth %d, heads %d, mlp_ratio %d, kernel %d, "
                         "stride %d, out_dim %d, llm_dim %d): sizes must be positive and D a multiple of heads",
                         c->embed_dim, c->depth, c->heads, c->mlp_ratio, c->kernel, c->stride, c->out_dim,
                         c->llm_dim);
    if (c->n_mels < c->kernel || c->target_len < c->kernel)
        return ar_errorf("imagebind_audio: fbank %d x %d is smaller than the %d x %d stem kernel", c->n_mels,
                         c->target_len, c->kernel, c->kernel);
    int a = (c->n_mels - c->kernel) / c->stride + 1, b = (c->target_len - c->kernel) / c->stride + 1;
    if (gh) *gh = a;
    if (gw) *gw = b;
    if (tokens) *tokens = a * b + 1;
    return 0;
}

static const char *pfx(const imagebind_audio_cfg *c) { return c->prefix ? c->prefix : ""; }
static const char *qfx(const imagebind_audio_cfg *c) { return c->proj_prefix ? c->proj_prefix : "model."; }

/* Block tensor tails, in declaration order. */
enum { B_LN1W, B_LN1B, B_INW, B_INB, B_BK, B_BV, B_OUTW, B_OUTB, B_LN2W, B_LN2B, B_FC1W, B_FC1B, B_FC2W,
       B_FC2B, B_COUNT };
static const char *const BLOCK_TAILS[B_COUNT] = {
    "norm_1.weight", "norm_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.bias_k", "attn.bias_v",
    "attn.out_proj.weight", "attn.out_proj.bias", "norm_2.weight", "norm_2.bias", "mlp.fc1.weight",
    "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};

static void block_name(char *dst, size_t n, const imagebind_audio_cfg *c, int i, int t) {
    snprintf(dst, n, "%smodality_trunks.audio.blocks.%d.%s", pfx(c), i, BLOCK_TAILS[t]);
}

static int add(ar_params *ps, const char *name, int ndim, int d0, int d1, int d2, int d3, int trainable,
               ar_init init, float std) {
    const int shape[4] = {d0, d1, d2, d3};
    return params_add(ps, name, ndim, shape, trainable, init, std);
}

int imagebind_audio_declare(const imagebind_audio_cfg *c, ar_params *ps) {
    int T;
    if (imagebind_audio_grid(c, NULL, NULL, &T)) return -1;
    if (c->frozen_half < 0 || c->frozen_half > IB_HALF_F16)
        return ar_errorf("imagebind_audio: frozen_half %d (expected 0, IB_HALF_BF16 or IB_HALF_F16)", c->frozen_half);
    const int D = c->embed_dim, F = c->mlp_ratio * D, K = c->kernel, O = c->out_dim;
    const float tstd = 1.0f / sqrtf((float)D);
    const char *p = pfx(c);
    char nm[112];
#define NM(...) snprintf(nm, sizeof nm, __VA_ARGS__)
    NM("%smodality_preprocessors.audio.rgbt_stem.proj.weight", p);
    if (add(ps, nm, 4, D, 1, K, K, 0, INIT_KAIMING_UNIFORM, 0)) return -1;
    NM("%smodality_preprocessors.audio.rgbt_stem.norm_layer.weight", p);
    if (add(ps, nm, 1, D, 0, 0, 0, 0, INIT_ONES, 0)) return -1;
    NM("%smodality_preprocessors.audio.rgbt_stem.norm_layer.bias", p);
    if (add(ps, nm, 1, D, 0, 0, 0, 0, INIT_ZEROS, 0)) return -1;
    NM("%smodality_preprocessors.audio.cls_token", p);
    if (add(ps, nm, 3, 1, 1, D, 0, 0, INIT_NORMAL, tstd)) return -1;
    NM("%smodality_preprocessors.audio.pos_embedding_helper.pos_embed", p);
    if (add(ps, nm, 3, 1, T, D, 0, 0, INIT_NORMAL, tstd)) return -1;
    for (int i = 0; i < c->depth; i++) {
        static const struct { int ndim, rows, cols, mid; ar_init init; } spec[B_COUNT] = {
            /* rows: 0 = D, 1 = F, 3 = 3D; cols likewise; mid: [1,1,D] */
            {1, 0, 0, 0, INIT_ONES}, {1, 0, 0, 0, INIT_ZEROS}, {2, 3, 0, 0, INIT_KAIMING_UNIFORM},
            {1, 3, 0, 0, INIT_ZEROS}, {3, 0, 0, 1, INIT_NORMAL}, {3, 0, 0, 1, INIT_NORMAL},
            {2, 0, 0, 0, INIT_KAIMING_UNIFORM}, {1, 0, 0, 0, INIT_ZEROS}, {1, 0, 0, 0, INIT_ONES},
            {1, 0, 0, 0, INIT_ZEROS}, {2, 1, 0, 0, INIT_KAIMING_UNIFORM}, {1, 1, 0, 0, INIT_ZEROS},
            {2, 0, 1, 0, INIT_KAIMING_UNIFORM}, {1, 0, 0, 0, INIT_ZEROS}};
        for (int t = 0; t < B_COUNT; t++) {
            const int rows = spec[t].rows == 0 ? D : spec[t].rows == 1 ? F : 3 * D;
            const int cols = spec[t].cols == 0 ? D : F;
            block_name(nm, sizeof nm, c, i, t);
            int rc = spec[t].mid ? add(ps, nm, 3, 1, 1, D, 0, 0, spec[t].init, tstd)
                                 : add(ps, nm, spec[t].ndim, rows, cols, 0, 0, 0, spec[t].init, 0);
            if (rc) return -1;
        }
        static const int big[4] = {B_INW, B_OUTW, B_FC1W, B_FC2W};   /* the four matrices in 16 bits */
        for (int j = 0; c->frozen_half && j < 4; j++) {
            block_name(nm, sizeof nm, c, i, big[j]);
            if (params_store_half(ps, nm, c->frozen_half == IB_HALF_F16)) return -1;
        }
    }
    NM("%smodality_heads.audio.0.weight", p);
    if (add(ps, nm, 1, D, 0, 0, 0, 0, INIT_ONES, 0)) return -1;
    NM("%smodality_heads.audio.0.bias", p);
    if (add(ps, nm, 1, D, 0, 0, 0, 0, INIT_ZEROS, 0)) return -1;
    NM("%smodality_heads.audio.2.weight", p);
    if (add(ps, nm, 2, O, D, 0, 0, 0, INIT_KAIMING_UNIFORM, 0)) return -1;
    if (c->llm_dim > 0) {
        const int t = c->proj_trainable != 0;
        NM("%saudio_projector.weight", qfx(c));
        if (add(ps, nm, 2, c->llm_dim, O, 0, 0, t, INIT_KAIMING_UNIFORM, 0)) return -1;
        NM("%saudio_projector.bias", qfx(c));
        if (add(ps, nm, 1, c->llm_dim, 0, 0, 0, t, INIT_NORMAL, 1.0f / sqrtf(3.0f * (float)O))) return -1;
    }
#undef NM
    return 0;
}

/* Binds one declared tensor of exactly numel floats (g may be NULL). */
static int bind(ar_params *ps, const char *name, size_t numel, const float **w, float **g) {
    const ar_param *p = params_find(ps, name);
    if (!p || p->numel != numel)
        return ar_errorf("imagebind_audio: %s %s (want %zu floats)", name,
                         p ? "has the wrong shape" : "is not declared", numel);
    *w = params_w(ps, name);
    if (g) *g = params_g(ps, name);
    return 0;
}

/* The activation pieces of imagebind_audio_create (floats each, in block
 * order): conv, scratch, x, h, q, ao, k, v, att, f1, f2, mean, rstd, cls_x,
 * cls_n, head, nscale. Shared with imagebind_audio_plan_bytes. */
#define IB_NBUF 17
static int ib_sizes(const imagebind_audio_cfg *c, int max_clips, size_t sizes[IB_NBUF]) {
    int GH = 0, GW = 0, T = 0;
    if (imagebind_audio_grid(c, &GH, &GW, &T)) return -1;
    const size_t D = (size_t)c->embed_dim, F = (size_t)c->mlp_ratio * c->embed_dim, O = (size_t)c->out_dim;
    const size_t N = (size_t)max_clips, L = (size_t)GH * GW, Tn = (size_t)T, S = (size_t)T + 1, H = (size_t)c->heads;
    const size_t nscr = conv2d_scratch_floats(1, c->n_mels, c->target_len, c->kernel, c->kernel, c->stride,
                                              c->stride, 0, 0);
    const size_t v[IB_NBUF] = {
        N * D * L, nscr,                                   /* conv, scratch */
        N * Tn * D, N * Tn * D, N * Tn * D, N * Tn * D,    /* x, h, q, ao */
        N * S * D, N * S * D,                              /* k, v */
        N * H * Tn * S,                                    /* att */
        N * Tn * F, N * Tn * F,                            /* f1, f2 */
        N * Tn, N * Tn,                                    /* mean, rstd */
        N * D, N * D, N * O, O};                           /* cls_x, cls_n, head, nscale */
    memcpy(sizes, v, sizeof v);
    return 0;
}

size_t imagebind_audio_plan_bytes(const imagebind_audio_cfg *c, int max_clips) {
    size_t sizes[IB_NBUF], total = 0;
    if (max_clips <= 0 || ib_sizes(c, max_clips, sizes)) return 0;
    for (int i = 0; i < IB_NBUF; i++) total += (sizes[i] + 15) & ~(size_t)15;
    return total * sizeof(float);
}

imagebind_audio *imagebind_audio_create(const imagebind_audio_cfg *c, ar_params *ps, int max_clips) {
    int GH, GW, T;
    if (imagebind_audio_grid(c, &GH, &GW, &T)) return NULL;
    if (max_clips <= 0) { ar_errorf("imagebind_audio: max_clips %d must be positive", max_clips); return NULL; }
    imagebind_audio *m = calloc(1, sizeof *m);
    if (!m) { ar_errorf("imagebind_audio: out of host memory"); return NULL; }
    m->c = *c;
    m->max_clips = max_clips;
    m->GH = GH; m->GW = GW; m->L = GH * GW; m->T = T; m->S = T + 1;
    m->D = c->embed_dim; m->F = c->mlp_ratio * c->embed_dim; m->H = c->heads; m->hd = m->D / m->H;
    m->O = c->out_dim; m->P = c->llm_dim;
    m->blk = calloc((size_t)(c->depth > 0 ? c->depth : 1), sizeof *m->blk);
    if (!m->blk) { ar_errorf("imagebind_audio: out of host memory"); imagebind_audio_free(m); return NULL; }
    const size_t D = (size_t)m->D, F = (size_t)m->F, Kk = (size_t)c->kernel * c->kernel, O = (size_t)m->O;
    const char *p = pfx(c);
    char nm[112];
    int rc = 0;
#define BIND(ptr, n, ...) (snprintf(nm, sizeof nm, __VA_ARGS__), bind(ps, nm, (n), &(ptr), NULL))
    rc |= BIND(m->conv_w, D * Kk, "%smodality_preprocessors.audio.rgbt_stem.proj.weight", p);
    rc |= BIND(m->stem_lnw, D, "%smodality_preprocessors.audio.rgbt_stem.norm_layer.weight", p);
    rc |= BIND(m->stem_lnb, D, "%smodality_preprocessors.audio.rgbt_stem.norm_layer.bias", p);
    rc |= BIND(m->cls, D, "%smodality_preprocessors.audio.cls_token", p);
    rc |= BIND(m->pos, (size_t)T * D, "%smodality_preprocessors.audio.pos_embedding_helper.pos_embed", p);
    rc |= BIND(m->head_lnw, D, "%smodality_heads.audio.0.weight", p);
    rc |= BIND(m->head_lnb, D, "%smodality_heads.audio.0.bias", p);
    rc |= BIND(m->head_w, O * D, "%smodality_heads.audio.2.weight", p);
#undef BIND
    for (int i = 0; i < c->depth && !rc; i++) {
        const float **dst[B_COUNT] = {&m->blk[i].ln1w, &m->blk[i].ln1b, &m->blk[i].in_w, &m->blk[i].in_b,
                                      &m->blk[i].bk,   &m->blk[i].bv,   &m->blk[i].out_w, &m->blk[i].out_b,
                                      &m->blk[i].ln2w, &m->blk[i].ln2b, &m->blk[i].fc1w, &m->blk[i].fc1b,
                                      &m->blk[i].fc2w, &m->blk[i].fc2b};
        const size_t numel[B_COUNT] = {D, D, 3 * D * D, 3 * D, D, D, D * D, D, D, D, F * D, F, D * F, D};
        const uint16_t **d16[B_COUNT] = {[B_INW] = &m->blk[i].in_w16, [B_OUTW] = &m->blk[i].out_w16,
                                         [B_FC1W] = &m->blk[i].fc1w16, [B_FC2W] = &m->blk[i].fc2w16};
        for (int t = 0; t < B_COUNT && !rc; t++) {
            block_name(nm, sizeof nm, c, i, t);
            rc |= bind(ps, nm, numel[t], dst[t], NULL);
            if (!rc && d16[t]) *d16[t] = params_w16(ps, nm);   /* NULL unless stored in 16 bits (then the fp32 one is) */
        }
    }
    if (!rc && m->P > 0) {
        snprintf(nm, sizeof nm, "%saudio_projector.weight", qfx(c));
        rc |= bind(ps, nm, (size_t)m->P * O, &m->proj_w, &m->gproj_w);
        snprintf(nm, sizeof nm, "%saudio_projector.bias", qfx(c));
        if (!rc) rc |= bind(ps, nm, (size_t)m->P, &m->proj_b, &m->gproj_b);
    }
    if (rc) { imagebind_audio_free(m); return NULL; }

    float **ptrs[IB_NBUF] = {&m->conv, &m->scratch, &m->x, &m->h, &m->q, &m->ao, &m->k, &m->v, &m->att,
                             &m->f1, &m->f2, &m->mean, &m->rstd, &m->cls_x, &m->cls_n, &m->head, &m->nscale};
    size_t sizes[IB_NBUF];
    ib_sizes(c, max_clips, sizes);
    const int nb = IB_NBUF;
    size_t total = 0;
    for (int i = 0; i < nb; i++) total += (sizes[i] + 15) & ~(size_t)15;   /* 64-byte aligned pieces */
    m->block = k_malloc(total * sizeof(float));
    float *host = malloc(O * sizeof(float));
    if (!m->block || !host) {
        ar_errorf("imagebind_audio: out of memory for %d clips (%zu MiB of activations)", max_clips,
                  total * sizeof(float) >> 20);
        free(host);
        imagebind_audio_free(m);
        return NULL;
    }
    float *q = m->block;
    for (int i = 0; i < nb; i++) { *ptrs[i] = q; q += (sizes[i] + 15) & ~(size_t)15; }
    /* rmsnorm with weight s/sqrt(O) is s * x / ||x||: rstd = 1/sqrt(||x||^2/O + eps). */
    for (size_t o = 0; o < O; o++) host[o] = (float)((double)c->logit_scale / sqrt((double)O));
    k_upload(m->nscale, host, O * sizeof(float));
    free(host);
    return m;
}

size_t imagebind_audio_activation_bytes(const imagebind_audio *m) { return imagebind_audio_plan_bytes(&m->c, m->max_clips); }

void imagebind_audio_free(imagebind_audio *m) {
    if (!m) return;
    k_free(m->block);
    free(m->blk);
    free(m);
}

/* out[N,OUT] = in W^T + b with W rows r0.. of an fp32 (w) or 16-bit (w16, cfg.frozen_half) matrix of IN columns. */
static void lin(const imagebind_audio *m, float *out, const float *in, const float *w, const uint16_t *w16, size_t r0,
                const float *b, int N, int IN, int OUT) {
    const size_t o = r0 * (size_t)IN;
    if (!w16) linear_forward(out, in, w + o, b, N, IN, OUT);
    else if (m->c.frozen_half == IB_HALF_F16) linear_f16_forward(out, in, w16 + o, b, N, IN, OUT);
    else linear_bf16_forward(out, in, w16 + o, b, N, IN, OUT);
}

/* One pre-LN block on x[N*T, D], in place. */
static void block_forward(imagebind_audio *m, const ib_block *b, int N) {
    const int D = m->D, F = m->F, T = m->T, S = m->S, NT = N * T;
    const size_t TD = (size_t)T * D, SD = (size_t)S * D;
    layernorm_forward(m->h, m->mean, m->rstd, m->x, b->ln1w, b->ln1b, LN_EPS, NT, D);
    lin(m, m->q, m->h, b->in_w, b->in_w16, 0, b->in_b, NT, D, D);                 /* q rows of in_proj */
    for (int n = 0; n < N; n++) {                                                 /* k, v + bias_k/v row */
        lin(m, m->k + n * SD, m->h + n * TD, b->in_w, b->in_w16, D, b->in_b + D, T, D, D);
        lin(m, m->v + n * SD, m->h + n * TD, b->in_w, b->in_w16, 2 * (size_t)D, b->in_b + 2 * D, T, D, D);
        k_copy(m->k + n * SD + TD, b->bk, (size_t)D * sizeof(float));
        k_copy(m->v + n * SD + TD, b->bv, (size_t)D * sizeof(float));
    }
    attention_forward(m->ao, m->att, m->q, m->k, m->v, NULL, 0, 1.0f / sqrtf((float)m->hd), N, T, S, m->H,
                      m->H, m->hd);
    lin(m, m->h, m->ao, b->out_w, b->out_w16, 0, b->out_b, NT, D, D);
    add_forward(m->x, m->x, m->h, (size_t)NT * D);
    layernorm_forward(m->h, m->mean, m->rstd, m->x, b->ln2w, b->ln2b, LN_EPS, NT, D);
    if (b->fc1w16)   /* fc1 with its GELU, the pre-activation not kept */
        linear_half_act_forward(m->f2, m->h, b->fc1w16, m->c.frozen_half == IB_HALF_F16, b->fc1b, NT, D, F, K_ACT_GELU);
    else {
        lin(m, m->f1, m->h, b->fc1w, NULL, 0, b->fc1b, NT, D, F);
        gelu_forward(m->f2, m->f1, (size_t)NT * F);
    }
    lin(m, m->h, m->f2, b->fc2w, b->fc2w16, 0, b->fc2b, NT, F, D);
    add_forward(m->x, m->x, m->h, (size_t)NT * D);
}

int imagebind_audio_encode(imagebind_audio *m, const float *fbank, int N, float *emb,
                           const imagebind_audio_taps *taps) {
    if (N < 1 || N > m->max_clips)
        return ar_errorf("imagebind_audio: %d clips (between 1 and %d were planned)", N, m->max_clips);
    const imagebind_audio_cfg *c = &m->c;
    const int D = m->D, L = m->L, T = m->T, O = m->O;
    const size_t TD = (size_t)T * D, LD = (size_t)L * D, row = (size_t)D * sizeof(float);
    /* stem: conv -> [N, D, L] -> tokens [N, L, D] -> LayerNorm */
    conv2d_forward(m->conv, m->scratch, fbank, m->conv_w, NULL, N, 1, c->n_mels, c->target_len, D, c->kernel,
                   c->kernel, c->stride, c->stride, 0, 0);
    transpose_forward(m->h, m->conv, N, D, L);
    layernorm_forward(m->q, m->mean, m->rstd, m->h, m->stem_lnw, m->stem_lnb, STEM_LN_EPS, N * L, D);
    /* [CLS, patches] + pos_embed */
    for (int n = 0; n < N; n++) {
        float *xn = m->x + n * TD;
        k_copy(xn, m->cls, row);
        k_copy(xn + D, m->q + n * LD, LD * sizeof(float));
        add_forward(xn, xn, m->pos, TD);
    }
    if (taps && taps->stem) k_copy(taps->stem, m->x, (size_t)N * TD * sizeof(float));
    for (int i = 0; i < c->depth; i++) {
        block_forward(m, &m->blk[i], N);
        if (taps && taps->blocks && taps->blocks[i]) k_copy(taps->blocks[i], m->x, (size_t)N * TD * sizeof(float));
    }
    /* head: LayerNorm is per token, so normalising the CLS rows alone is the same */
    for (int n = 0; n < N; n++) k_copy(m->cls_x + (size_t)n * D, m->x + n * TD, row);
    layernorm_forward(m->cls_n, m->mean, m->rstd, m->cls_x, m->head_lnw, m->head_lnb, LN_EPS, N, D);
    linear_forward(m->head, m->cls_n, m->head_w, NULL, N, D, O);
    if (taps && taps->head) k_copy(taps->head, m->head, (size_t)N * O * sizeof(float));
    /* post: logit_scale * x / max(||x||, 1e-12), as rmsnorm (eps = 1e-24 / O on the mean square) */
    rmsnorm_forward(emb, m->rstd, m->head, m->nscale, 1e-24f / (float)O, N, O);
    return 0;
}

int imagebind_audio_project(imagebind_audio *m, const float *emb, int N, float *tok) {
    if (!m->proj_w) return ar_errorf("imagebind_audio: no audio_projector (llm_dim is 0)");
    if (N < 0) return ar_errorf("imagebind_audio: %d rows to project", N);
    if (N) linear_forward(tok, emb, m->proj_w, m->proj_b, N, m->O, m->P);
    return 0;
}

int imagebind_audio_project_backward(imagebind_audio *m, const float *dtok, const float *emb, int N,
                                     float *demb) {
    if (!m->proj_w) return ar_errorf("imagebind_audio: no audio_projector (llm_dim is 0)");
    if (N < 0) return ar_errorf("imagebind_audio: %d rows to project", N);
    if (N && (demb || m->gproj_w))
        linear_backward(demb, m->gproj_w, m->gproj_b, dtok, emb, m->proj_w, N, m->O, m->P);
    return 0;
}
