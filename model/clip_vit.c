/* model/clip_vit.c — the CLIP vision tower (forward; backward when trainable) and
 * mm_projector (see clip_vit.h).
 * Touches tensor memory only through kernels.h, so it runs on either backend.
 * Shapes: N images, S x S pixels, C channels, patch p, g = S/p, G = g*g
 * patches, T = 1 + G tokens, W width, H heads of hd = W/H, M MLP width,
 * NT = N*T token rows (image-major, CLS first). The patch convolution gives
 * channel-major [N, W, G]; the transpose to token rows [G, W] is a product
 * with a W x W identity (matmul), as in sam_decoder.c, and so is its backward
 * (d conv [W, G] = I @ d rows^T), followed by conv2d_backward for the weight.
 * Frozen: one residual stream updated in place, one region shared by every
 * layer (forward only). Trainable: each layer keeps its input, the residual
 * after attention, q/k/v, the attention output and probabilities, the fc1
 * pre-activation and both LayerNorms' mean/rstd; backward recomputes the
 * LayerNorm outputs and the MLP activation from those. Activation memory is
 * indexed by image slot (row i*T of every [max_images*T, .] buffer). */
#include "model/clip_vit.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_LEN 160   /* a built name; params_add refuses one longer than ar_param.name */
#define TAIL_LEN 64    /* "self_attn.out_proj.weight" and the like */

/* ------------------------------------------------------------------------ */
/* CLIP vision tower                                                        */
/* ------------------------------------------------------------------------ */
/* nn.Linear / LayerNorm: weights, and their gradients (NULL: frozen in the registry). */
typedef struct { const float *w, *b; float *gw, *gb; const uint16_t *w16; } lin_w;   /* w16: cfg.frozen_half */

typedef struct {
    lin_w ln1, q, k, v, o, ln2, fc1, fc2;
} layer_w;

/* Where layer l of the images from `first` on reads and writes (see layer_bufs). */
typedef struct {
    float *in, *mid;                    /* [NT, W] hidden_states[l]; after the attention residual */
    float *q, *k, *v, *ao;              /* [NT, W] */
    float *att;                         /* [N, H, T, T] */
    float *h1, *ha;                     /* [NT, M] fc1 output, activation */
    float *m1, *r1, *m2, *r2;           /* [NT] layer_norm1 / layer_norm2 statistics */
} lbuf;

struct clip_vit {
    clip_vit_cfg c;
    int max_images, n_run;              /* layers run: hidden_states[n_run] is selected */
    int g, G, T, P;                     /* grid side, patches, tokens, output tokens per image */
    int last_first, last_n;             /* the images of the last forward */
    const float *patch_w, *cls, *pos;   /* embeddings */
    float *patch_g, *cls_g, *pos_g;     /* their gradients (NULL: frozen) */
    lin_w pre;                          /* pre_layrnorm */
    layer_w *L;                         /* host array [n_run] */
    unsigned char *done;                /* host [max_images]: trainable, image slot holds a forward */
    float *block;                       /* one k_malloc for everything below */
    size_t block_floats;
    /* both modes; rows are [max_images * T] (NTm), an image slot i starts at row i*T */
    float *ln, *tmp;                    /* [NTm, W] LayerNorm output, branch output */
    float *region;                      /* frozen: q,k,v,ao [NTm,W] x4 | h1,ha [NTm,M] x2 | conv out;
                                           trainable: ha [NTm,M] | conv out */
    float *eye;                         /* [W, W] identity */
    float *scratch;                     /* conv2d scratch (one image) */
    float *out;                         /* [max_images, G, W] (keep_cls: NULL, the output is the hidden state) */
    /* frozen only: one residual stream updated in place */
    float *x;                           /* [NTm, W] */
    float *mean, *rstd;                 /* [NTm] */
    float *att;                         /* [max_images, H, T, T] */
    /* trainable only: what backward reads, per layer, plus the backward's work buffers */
    float *pix;                         /* [max_images, C, S, S] copy of the pixels */
    float *emb;                         /* [NTm, W] pre_layrnorm input */
    float *hs;                          /* [n_run + 1, NTm, W] hidden_states[0..n_run] */
    float *mid;                         /* [n_run, NTm, W] */
    float *qkvo;                        /* [n_run, 4, NTm, W] q, k, v, attention output */
    float *h1;                          /* [n_run, NTm, M] fc1 output (pre-activation) */
    float *atts;                        /* [n_run, max_images, H, T, T] probabilities */
    float *stats;                       /* [1 + 2 n_run, 2, NTm] mean, rstd: pre, then ln1, ln2 per layer */
    float *rm, *rr;                     /* [NTm] statistics of the recomputed LayerNorms */
    float *dx, *dln, *dao, *dq, *dk, *dv;   /* [NTm, W] */
    float *dha, *dh1;                   /* [NTm, M] */
    float *ascr;                        /* attention_backward scratch */
    /* checkpoint_layers: mid, qkvo, h1, atts and the ln1/ln2 statistics hold one
     * layer (n_keep = 1), hs still every layer's input; held[i] = the layer whose
     * forward the shared buffers hold for image slot i (host [max_images]) */
    int n_keep;                         /* layers with their own buffers: n_run, or 1 checkpointed */
    int *held;
};

static const char *vit_prefix(const clip_vit_cfg *c) { return c->prefix ? c->prefix : "vision_model."; }

clip_vit_cfg clip_vit_large_cfg(void) {
    clip_vit_cfg c = {.image_size = 224, .patch = 14, .channels = 3, .width = 1024, .layers = 24,
                      .heads = 16, .mlp_dim = 4096, .eps = 1e-5f, .act = CLIP_ACT_QUICK_GELU,
                      .select_layer = -2, .keep_cls = 0, .prefix = NULL, .trainable = 0};
    return c;
}

/* Checks the sizes; on success *n_run = the hidden-state index selected. */
static int vit_check(const clip_vit_cfg *c, int *n_run) {
    if (c->image_size <= 0 || c->patch <= 0 || c->channels <= 0 || c->width <= 0 || c->layers <= 0 ||
        c->heads <= 0 || c->mlp_dim <= 0)
        return ar_errorf("clip_vit: image %d, patch %d, channels %d, width %d, layers %d, heads %d, mlp %d "
                         "must be positive", c->image_size, c->patch, c->channels, c->width, c->layers,
                         c->heads, c->mlp_dim);
    if (c->image_size % c->patch)
        return ar_errorf("clip_vit: image size %d is not a multiple of the patch %d", c->image_size, c->patch);
    if (c->width % c->heads)
        return ar_errorf("clip_vit: width %d is not a multiple of the %d heads", c->width, c->heads);
    if (!(c->eps > 0.0f)) return ar_errorf("clip_vit: LayerNorm eps %g must be positive", (double)c->eps);
    if (c->act != CLIP_ACT_QUICK_GELU && c->act != CLIP_ACT_GELU)
        return ar_errorf("clip_vit: unknown activation %d", (int)c->act);
    if (c->select_layer < -(c->layers + 1) || c->select_layer > c->layers)
        return ar_errorf("clip_vit: select_layer %d outside [-%d, %d] (hidden_states has %d entries)",
                         c->select_layer, c->layers + 1, c->layers, c->layers + 1);
    const int g = c->image_size / c->patch;
    if ((size_t)(1 + g * g) * c->width > (size_t)1 << 31 || (size_t)c->mlp_dim * c->width > (size_t)1 << 31)
        return ar_errorf("clip_vit: sizes too large (%d tokens x width %d, mlp %d)", 1 + g * g, c->width,
                         c->mlp_dim);
    if (c->frozen_half < 0 || c->frozen_half > CLIP_HALF_F16)
        return ar_errorf("clip_vit: frozen_half %d (expected 0, CLIP_HALF_BF16 or CLIP_HALF_F16)", c->frozen_half);
    if (c->frozen_half && c->trainable)
        return ar_errorf("clip_vit: 16-bit weights need a frozen tower (it is trainable)");
    *n_run = c->select_layer < 0 ? c->layers + 1 + c->select_layer : c->select_layer;
    return 0;
}

static void vname(char *n, const clip_vit_cfg *c, int layer, const char *tail) {
    if (layer < 0) snprintf(n, NAME_LEN, "%s%s", vit_prefix(c), tail);
    else snprintf(n, NAME_LEN, "%sencoder.layers.%d.%s", vit_prefix(c), layer, tail);
}

static int vadd(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int tr, int ndim, int d0,
                int d1, int d2, int d3, ar_init init, float std) {
    char n[NAME_LEN];
    vname(n, c, layer, tail);
    const int shape[4] = {d0, d1, d2, d3};
    return params_add(ps, n, ndim, shape, tr, init, std);
}

/* A LayerNorm (ones, zeros) pair "<tail>.weight/.bias". */
static int vadd_norm(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int tr, int W) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vadd(ps, c, layer, t, tr, 1, W, 0, 0, 0, INIT_ONES, 0.0f)) return -1;
    snprintf(t, sizeof t, "%s.bias", tail);
    return vadd(ps, c, layer, t, tr, 1, W, 0, 0, 0, INIT_ZEROS, 0.0f);
}

/* A Linear (normal std, zero bias) pair. */
static int vadd_lin(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int tr, int out, int in,
                    float std) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vadd(ps, c, layer, t, tr, 2, out, in, 0, 0, INIT_NORMAL, std)) return -1;
    snprintf(t, sizeof t, "%s.bias", tail);
    return vadd(ps, c, layer, t, tr, 1, out, 0, 0, 0, INIT_ZEROS, 0.0f);
}

int clip_vit_declare(const clip_vit_cfg *c, ar_params *ps) {
    int n_run;
    if (vit_check(c, &n_run)) return -1;
    const int W = c->width, M = c->mlp_dim, p = c->patch, g = c->image_size / p, T = 1 + g * g;
    const int tr = c->trainable != 0;
    /* Hugging Face CLIPPreTrainedModel._init_weights with factor 1, initializer_range 0.02. */
    const float in_std = 1.0f / sqrtf((float)W) / sqrtf(2.0f * (float)c->layers);
    if (vadd(ps, c, -1, "embeddings.class_embedding", tr, 1, W, 0, 0, 0, INIT_NORMAL, 1.0f / sqrtf((float)W)) ||
        vadd(ps, c, -1, "embeddings.patch_embedding.weight", tr, 4, W, c->channels, p, p, INIT_NORMAL, 0.02f) ||
        vadd(ps, c, -1, "embeddings.position_embedding.weight", tr, 2, T, W, 0, 0, INIT_NORMAL, 0.02f) ||
        vadd_norm(ps, c, -1, "pre_layrnorm", tr, W))
        return -1;
    for (int l = 0; l < c->layers; l++) {
        const int tl = tr && l < n_run;   /* layers after the selected hidden state never run */
        if (vadd_lin(ps, c, l, "self_attn.k_proj", tl, W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.v_proj", tl, W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.q_proj", tl, W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.out_proj", tl, W, W, 1.0f / sqrtf((float)W)) ||
            vadd_norm(ps, c, l, "layer_norm1", tl, W) ||
            vadd_lin(ps, c, l, "mlp.fc1", tl, M, W, 1.0f / sqrtf(2.0f * (float)W)) ||
            vadd_lin(ps, c, l, "mlp.fc2", tl, W, M, in_std) ||
            vadd_norm(ps, c, l, "layer_norm2", tl, W))
            return -1;
        if (c->frozen_half) {   /* the six big matrices in 16 bits */
            static const char *const big[] = {"self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                              "self_attn.q_proj.weight", "self_attn.out_proj.weight",
                                              "mlp.fc1.weight", "mlp.fc2.weight"};
            for (int i = 0; i < 6; i++) {
                char n[NAME_LEN];
                vname(n, c, l, big[i]);
                if (params_store_half(ps, n, c->frozen_half == CLIP_HALF_F16)) return -1;
            }
        }
    }
    return vadd_norm(ps, c, -1, "post_layernorm", 0, W);   /* unused by LLaVA: always frozen */
}

/* Looks up one tensor, checks its size, binds its weight and (NULL if frozen) gradient. */
static int vbind(const clip_vit_cfg *c, ar_params *ps, int layer, const char *tail, size_t numel,
                 const float **w, float **gr) {
    char n[NAME_LEN];
    vname(n, c, layer, tail);
    const ar_param *p = params_find(ps, n);
    if (!p || p->numel != numel)
        return ar_errorf("clip_vit: %s %s", n, p ? "has the wrong shape" : "is not declared");
    *w = params_w(ps, n);
    *gr = c->trainable ? params_g(ps, n) : NULL;
    return 0;
}

static int vbind_pair(const clip_vit_cfg *c, ar_params *ps, int layer, const char *tail, size_t wn, size_t bn,
                      lin_w *o) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vbind(c, ps, layer, t, wn, &o->w, &o->gw)) return -1;
    char n[NAME_LEN];
    vname(n, c, layer, t);
    o->w16 = params_w16(ps, n);   /* NULL unless stored in 16 bits (then o->w is NULL) */
    snprintf(t, sizeof t, "%s.bias", tail);
    return vbind(c, ps, layer, t, bn, &o->b, &o->gb);
}

/* every piece of the block rounded to 16 floats so each stays 64-byte aligned */
#define R16(n) (((n) + 15) & ~(size_t)15)
/* Carves n floats from *q (NULL stays NULL: the sizing pass). */
static float *carve(float **q, size_t n, size_t *total) {
    float *p = *q;
    *total += R16(n);
    if (*q) *q += R16(n);
    return p;
}

/* Lays out the block from base (NULL: only counts); returns its size in floats. */
static size_t vit_layout(clip_vit *v, float *base) {
    const clip_vit_cfg *c = &v->c;
    const size_t W = (size_t)c->width, M = (size_t)c->mlp_dim, T = (size_t)v->T, G = (size_t)v->G,
                 mi = (size_t)v->max_images, NTm = mi * T, nr = (size_t)v->n_run, nk = (size_t)v->n_keep,
                 H = (size_t)c->heads,
                 S = (size_t)c->image_size;
    const size_t scratch = conv2d_scratch_floats(c->channels, c->image_size, c->image_size, c->patch, c->patch,
                                                 c->patch, c->patch, 0, 0);
    const size_t outn = c->keep_cls ? 0 : mi * G * W, att = mi * H * T * T;
    size_t n = 0;
    float *q = base;
    if (!c->trainable) {   /* the frozen tower's layout, unchanged since the first version */
        size_t region = 4 * NTm * W;                              /* q, k, v, ao */
        if (2 * NTm * M > region) region = 2 * NTm * M;           /* fc1 out, activation */
        /* (the conv output [N, W, G] < NTm * W fits in the region too) */
        v->x = carve(&q, NTm * W, &n);
        v->ln = carve(&q, NTm * W, &n);
        v->tmp = carve(&q, NTm * W, &n);
        v->mean = carve(&q, NTm, &n);
        v->rstd = carve(&q, NTm, &n);
        v->region = carve(&q, region, &n);
        v->att = carve(&q, att, &n);
        v->eye = carve(&q, W * W, &n);
        v->scratch = carve(&q, scratch, &n);
        v->out = c->keep_cls ? NULL : carve(&q, outn, &n);
        return n;
    }
    v->ln = carve(&q, NTm * W, &n);
    v->tmp = carve(&q, NTm * W, &n);
    v->region = carve(&q, NTm * (M > W ? M : W), &n);             /* ha, or the conv output */
    v->eye = carve(&q, W * W, &n);
    v->scratch = carve(&q, scratch, &n);
    v->out = c->keep_cls ? NULL : carve(&q, outn, &n);
    v->pix = carve(&q, mi * (size_t)c->channels * S * S, &n);
    v->emb = carve(&q, NTm * W, &n);
    v->hs = carve(&q, (nr + 1) * NTm * W, &n);
    v->mid = carve(&q, nk * NTm * W, &n);              /* checkpointed: one layer's, shared */
    v->qkvo = carve(&q, nk * 4 * NTm * W, &n);
    v->h1 = carve(&q, nk * NTm * M, &n);
    v->atts = carve(&q, nk * att, &n);
    v->stats = carve(&q, (1 + 2 * nk) * 2 * NTm, &n);
    v->rm = carve(&q, NTm, &n);
    v->rr = carve(&q, NTm, &n);
    float **dw[6] = {&v->dx, &v->dln, &v->dao, &v->dq, &v->dk, &v->dv};
    for (int i = 0; i < 6; i++) *dw[i] = carve(&q, NTm * W, &n);
    v->dha = carve(&q, NTm * M, &n);
    v->dh1 = carve(&q, NTm * M, &n);
    v->ascr = carve(&q, attention_scratch_floats(v->max_images, v->T, v->T, c->heads), &n);
    return n;
}

/* The buffers of layer l (0 <= l < n_run) for images first.. : the frozen tower
 * updates one residual stream in place and reuses one region for every layer;
 * the trainable one keeps each layer's own (checkpoint_layers: only the input
 * in; the rest is one set every layer shares). */
static lbuf layer_bufs(const clip_vit *v, int l, int first) {
    const size_t W = (size_t)v->c.width, M = (size_t)v->c.mlp_dim, T = (size_t)v->T,
                 NTm = (size_t)v->max_images * T, o = (size_t)first * T, HTT = (size_t)v->c.heads * T * T,
                 att = (size_t)v->max_images * HTT;
    lbuf b;
    if (!v->c.trainable) {
        b.in = b.mid = v->x + o * W;
        b.q = v->region + o * W;
        b.k = v->region + (NTm + o) * W;
        b.v = v->region + (2 * NTm + o) * W;
        b.ao = v->region + (3 * NTm + o) * W;
        b.h1 = v->region + o * M;
        b.ha = v->region + (NTm + o) * M;
        b.att = v->att + first * HTT;
        b.m1 = b.m2 = v->mean + o;
        b.r1 = b.r2 = v->rstd + o;
        return b;
    }
    b.in = v->hs + ((size_t)l * NTm + o) * W;
    const size_t k = v->n_keep < v->n_run ? 0 : (size_t)l;   /* checkpointed: the shared set */
    b.mid = v->mid + (k * NTm + o) * W;
    float *q4 = v->qkvo + k * 4 * NTm * W;
    b.q = q4 + o * W;
    b.k = q4 + (NTm + o) * W;
    b.v = q4 + (2 * NTm + o) * W;
    b.ao = q4 + (3 * NTm + o) * W;
    b.h1 = v->h1 + (k * NTm + o) * M;
    b.ha = v->region + o * M;
    b.att = v->atts + k * att + first * HTT;
    float *st = v->stats + (1 + 2 * k) * 2 * NTm;   /* ln1 mean, rstd, ln2 mean, rstd */
    b.m1 = st + o;
    b.r1 = st + NTm + o;
    b.m2 = st + 2 * NTm + o;
    b.r2 = st + 3 * NTm + o;
    return b;
}

/* hidden_states[n_run] of images first.. ([N, T, W]). */
static float *final_hidden(const clip_vit *v, int first) {
    const size_t W = (size_t)v->c.width, o = (size_t)first * v->T, NTm = (size_t)v->max_images * v->T;
    return v->c.trainable ? v->hs + ((size_t)v->n_run * NTm + o) * W : v->x + o * W;
}

/* The sizes vit_layout reads, from the config alone (create and plan). */
static void vit_sizes(clip_vit *v, const clip_vit_cfg *c, int max_images, int n_run) {
    v->c = *c;
    v->c.trainable = c->trainable != 0;
    v->max_images = max_images;
    v->n_run = n_run;
    v->c.checkpoint_layers = v->c.trainable && c->checkpoint_layers;
    v->n_keep = v->c.checkpoint_layers && n_run > 0 ? 1 : n_run;
    v->g = c->image_size / c->patch;
    v->G = v->g * v->g;
    v->T = 1 + v->G;
    v->P = c->keep_cls ? v->T : v->G;
}

size_t clip_vit_plan_bytes(const clip_vit_cfg *c, int max_images) {
    int n_run = 0;
    if (max_images <= 0 || vit_check(c, &n_run)) return 0;
    clip_vit v;
    memset(&v, 0, sizeof v);
    vit_sizes(&v, c, max_images, n_run);
    return vit_layout(&v, NULL) * sizeof(float);
}

clip_vit *clip_vit_create(const clip_vit_cfg *c, ar_params *ps, int max_images) {
    int n_run;
    if (vit_check(c, &n_run)) return NULL;
    if (max_images <= 0) { ar_errorf("clip_vit: max_images %d must be positive", max_images); return NULL; }
    clip_vit *v = calloc(1, sizeof *v);
    if (!v) { ar_errorf("clip_vit: out of host memory"); return NULL; }
    vit_sizes(v, c, max_images, n_run);
    const size_t W = (size_t)c->width, M = (size_t)c->mlp_dim, p = (size_t)c->patch, T = (size_t)v->T;
    v->L = calloc(n_run ? (size_t)n_run : 1, sizeof *v->L);
    v->done = calloc((size_t)max_images, 1);
    v->held = calloc((size_t)max_images, sizeof *v->held);
    if (!v->L || !v->done || !v->held) { ar_errorf("clip_vit: out of host memory"); clip_vit_free(v); return NULL; }
    if (vbind(&v->c, ps, -1, "embeddings.patch_embedding.weight", W * c->channels * p * p, &v->patch_w,
              &v->patch_g) ||
        vbind(&v->c, ps, -1, "embeddings.class_embedding", W, &v->cls, &v->cls_g) ||
        vbind(&v->c, ps, -1, "embeddings.position_embedding.weight", T * W, &v->pos, &v->pos_g) ||
        vbind_pair(&v->c, ps, -1, "pre_layrnorm", W, W, &v->pre)) {
        clip_vit_free(v);
        return NULL;
    }
    for (int l = 0; l < n_run; l++) {
        layer_w *L = &v->L[l];
        if (vbind_pair(&v->c, ps, l, "layer_norm1", W, W, &L->ln1) ||
            vbind_pair(&v->c, ps, l, "self_attn.q_proj", W * W, W, &L->q) ||
            vbind_pair(&v->c, ps, l, "self_attn.k_proj", W * W, W, &L->k) ||
            vbind_pair(&v->c, ps, l, "self_attn.v_proj", W * W, W, &L->v) ||
            vbind_pair(&v->c, ps, l, "self_attn.out_proj", W * W, W, &L->o) ||
            vbind_pair(&v->c, ps, l, "layer_norm2", W, W, &L->ln2) ||
            vbind_pair(&v->c, ps, l, "mlp.fc1", M * W, M, &L->fc1) ||
            vbind_pair(&v->c, ps, l, "mlp.fc2", W * M, W, &L->fc2)) {
            clip_vit_free(v);
            return NULL;
        }
    }
    v->block_floats = vit_layout(v, NULL);
    v->block = k_malloc(v->block_floats * sizeof(float));
    float *eye = malloc(W * W * sizeof(float));
    if (!v->block || !eye) {
        ar_errorf("clip_vit: out of memory for %d images (%zu MB of %s)", max_images,
                  v->block_floats * sizeof(float) >> 20,
                  c->trainable ? "activations kept for backward" : "activations");
        free(eye);
        clip_vit_free(v);
        return NULL;
    }
    vit_layout(v, v->block);
    for (size_t i = 0; i < W * W; i++) eye[i] = (i / W == i % W) ? 1.0f : 0.0f;
    k_upload(v->eye, eye, W * W * sizeof(float));
    free(eye);
    return v;
}
#undef R16

void clip_vit_free(clip_vit *v) {
    if (!v) return;
    k_free(v->block);
    free(v->L);
    free(v->done);
    free(v->held);
    free(v);
}

int clip_vit_tokens(const clip_vit *v) { return v->P; }
const float *clip_vit_hidden(const clip_vit *v) { return final_hidden(v, v->last_first); }
size_t clip_vit_activation_bytes(const clip_vit *v) { return v->block_floats * sizeof(float); }

float *clip_vit_forward(clip_vit *v, const float *pixels, int N) { return clip_vit_forward_at(v, pixels, N, 0); }

/* Layer l of images first..first+N-1: from hidden_states[l] (b.in) to
 * hidden_states[l + 1] (full), or (full = 0, the checkpointed backward's
 * recompute) only as far as what backward reads: mid, q, k, v, the attention
 * output and probabilities, the fc1 pre-activation and both LayerNorms'
 * statistics, the same kernels on the same inputs, so the same bits. */
/* out[N,OUT] = in W^T + b, W fp32 or in 16 bits (cfg.frozen_half). */
static void lin(const clip_vit *v, float *out, const float *in, const lin_w *w, int N, int IN, int OUT) {
    if (!w->w16) linear_forward(out, in, w->w, w->b, N, IN, OUT);
    else if (v->c.frozen_half == CLIP_HALF_F16) linear_f16_forward(out, in, w->w16, w->b, N, IN, OUT);
    else linear_bf16_forward(out, in, w->w16, w->b, N, IN, OUT);
}

static void layer_forward(clip_vit *v, int l, int first, int N, int full) {
    const clip_vit_cfg *c = &v->c;
    const int W = c->width, M = c->mlp_dim, H = c->heads, hd = W / H, T = v->T, NT = N * T;
    const size_t nw = (size_t)NT * W, o = (size_t)first * T;
    const float scale = 1.0f / sqrtf((float)hd);
    float *ln = v->ln + o * W, *tmp = v->tmp + o * W;
    const layer_w *L = &v->L[l];
    const lbuf b = layer_bufs(v, l, first);
    layernorm_forward(ln, b.m1, b.r1, b.in, L->ln1.w, L->ln1.b, c->eps, NT, W);
    lin(v, b.q, ln, &L->q, NT, W, W);
    lin(v, b.k, ln, &L->k, NT, W, W);
    lin(v, b.v, ln, &L->v, NT, W, W);
    attention_forward(b.ao, b.att, b.q, b.k, b.v, NULL, 0, scale, N, T, T, H, H, hd);
    lin(v, tmp, b.ao, &L->o, NT, W, W);
    add_forward(b.mid, b.in, tmp, nw);                                  /* frozen: in place */
    layernorm_forward(ln, b.m2, b.r2, b.mid, L->ln2.w, L->ln2.b, c->eps, NT, W);
    const int fused = L->fc1.w16 && full;   /* 16-bit (frozen): fc1 with its activation, h1 not kept */
    if (fused)
        linear_half_act_forward(b.ha, ln, L->fc1.w16, c->frozen_half == CLIP_HALF_F16, L->fc1.b, NT, W, M,
                                c->act == CLIP_ACT_QUICK_GELU ? K_ACT_QUICK_GELU : K_ACT_GELU);
    else
        lin(v, b.h1, ln, &L->fc1, NT, W, M);
    if (!full) return;
    float *x_out = l + 1 < v->n_run ? layer_bufs(v, l + 1, first).in : final_hidden(v, first);
    if (!fused) {
        if (c->act == CLIP_ACT_QUICK_GELU) quick_gelu_forward(b.ha, b.h1, (size_t)NT * M);
        else gelu_forward(b.ha, b.h1, (size_t)NT * M);
    }
    lin(v, tmp, b.ha, &L->fc2, NT, M, W);
    add_forward(x_out, b.mid, tmp, nw);                                 /* hidden_states[l + 1] */
}

float *clip_vit_forward_at(clip_vit *v, const float *pixels, int N, int first) {
    if (N <= 0 || first < 0 || first > v->max_images - N) {
        ar_errorf("clip_vit: %d images from slot %d, the tower was created for 1..%d", N, first, v->max_images);
        return NULL;
    }
    const clip_vit_cfg *c = &v->c;
    const int W = c->width, T = v->T, G = v->G, NT = N * T;
    const size_t TW = (size_t)T * W, o = (size_t)first * T, img = (size_t)c->channels * c->image_size * c->image_size;
    if (c->trainable) {   /* backward needs the pixels for the patch-embedding gradient */
        memset(v->done + first, 0, (size_t)N);
        k_copy(v->pix + first * img, pixels, N * img * sizeof(float));
        pixels = v->pix + first * img;
    }
    float *tmp = v->tmp + o * W;

    /* Embeddings: conv -> [N, W, G]; token rows 1..G of each image are its transpose. */
    float *conv = v->region;
    conv2d_forward(conv, v->scratch, pixels, v->patch_w, NULL, N, c->channels, c->image_size, c->image_size, W,
                   c->patch, c->patch, c->patch, c->patch, 0, 0);
    float *emb = c->trainable ? v->emb + o * W : tmp;
    for (int n = 0; n < N; n++) {
        float *e = emb + n * TW;
        matmul(e + W, conv + (size_t)n * W * G, v->eye, G, W, W, 1, 0, 1.0f, 0.0f);   /* [G,W] = conv^T */
        k_copy(e, v->cls, (size_t)W * sizeof(float));
        add_forward(e, e, v->pos, TW);
    }
    {   /* hidden_states[0] */
        const size_t NTm = (size_t)v->max_images * T;
        float *h0 = c->trainable ? v->hs + o * W : v->x + o * W;
        float *m0 = c->trainable ? v->stats + o : v->mean + o, *r0 = c->trainable ? v->stats + NTm + o : v->rstd + o;
        layernorm_forward(h0, m0, r0, emb, v->pre.w, v->pre.b, c->eps, NT, W);
    }

    for (int l = 0; l < v->n_run; l++) layer_forward(v, l, first, N, 1);
    v->last_first = first;
    v->last_n = N;
    if (c->trainable) memset(v->done + first, 1, (size_t)N);
    for (int i = first; c->checkpoint_layers && i < first + N; i++) v->held[i] = v->n_run - 1;
    float *x = final_hidden(v, first);
    if (c->keep_cls) return x;
    float *out = v->out + (size_t)first * G * W;
    for (int n = 0; n < N; n++)   /* select_feature 'patch': rows 1..G of each image */
        k_copy(out + (size_t)n * G * W, x + n * TW + W, (size_t)G * W * sizeof(float));
    return out;
}

int clip_vit_backward(clip_vit *v, const float *dout) {
    return clip_vit_backward_at(v, dout, v->last_n, v->last_first);
}

/* The forward's steps in reverse. dx carries d(residual stream) from
 * hidden_states[n_run] down to hidden_states[0]; each LayerNorm's output and
 * the MLP activation are recomputed from the kept inputs (cheaper in memory
 * than keeping them, two element-wise passes per layer). */
int clip_vit_backward_at(clip_vit *v, const float *dout, int N, int first) {
    const clip_vit_cfg *c = &v->c;
    if (!c->trainable) return ar_errorf("clip_vit: backward of a frozen tower (create it with trainable 1)");
    if (N <= 0 || first < 0 || first > v->max_images - N)
        return ar_errorf("clip_vit: backward of %d images from slot %d, the tower was created for 1..%d", N, first,
                         v->max_images);
    for (int i = first; i < first + N; i++)
        if (!v->done[i]) return ar_errorf("clip_vit: backward of image slot %d, which no forward filled", i);
    const int W = c->width, M = c->mlp_dim, H = c->heads, hd = W / H, T = v->T, G = v->G, NT = N * T;
    const size_t TW = (size_t)T * W, nw = (size_t)NT * W, nm = (size_t)NT * M, o = (size_t)first * T,
                 NTm = (size_t)v->max_images * T, img = (size_t)c->channels * c->image_size * c->image_size;
    const size_t fb = sizeof(float);
    const float scale = 1.0f / sqrtf((float)hd);
    float *dx = v->dx, *dln = v->dln;

    if (c->keep_cls) {
        k_copy(dx, dout, nw * fb);
    } else {   /* CLS rows were dropped: no gradient reaches them from the output */
        k_zero(dx, nw * fb);
        for (int n = 0; n < N; n++)
            k_copy(dx + n * TW + W, dout + (size_t)n * G * W, (size_t)G * W * fb);
    }
    for (int l = v->n_run - 1; l >= 0; l--) {
        if (c->checkpoint_layers) {   /* refill the shared buffers with layer l's forward (unless they hold it) */
            int held = 1;
            for (int i = first; i < first + N; i++) held &= v->held[i] == l;
            if (!held) layer_forward(v, l, first, N, 0);
            for (int i = first; i < first + N; i++) v->held[i] = l;
        }
        const layer_w *L = &v->L[l];
        const lbuf b = layer_bufs(v, l, first);
        /* x_out = mid + fc2(act(fc1(ln2(mid)))) */
        layernorm_forward(v->ln, v->rm, v->rr, b.mid, L->ln2.w, L->ln2.b, c->eps, NT, W);
        if (c->act == CLIP_ACT_QUICK_GELU) quick_gelu_forward(b.ha, b.h1, nm);
        else gelu_forward(b.ha, b.h1, nm);
        k_zero(v->dha, nm * fb);
        linear_backward(v->dha, L->fc2.gw, L->fc2.gb, dx, b.ha, L->fc2.w, NT, M, W);
        k_zero(v->dh1, nm * fb);
        if (c->act == CLIP_ACT_QUICK_GELU) quick_gelu_backward(v->dh1, v->dha, b.h1, nm);
        else gelu_backward(v->dh1, v->dha, b.h1, nm);
        k_zero(dln, nw * fb);
        linear_backward(dln, L->fc1.gw, L->fc1.gb, v->dh1, v->ln, L->fc1.w, NT, W, M);
        layernorm_backward(dx, L->ln2.gw, L->ln2.gb, dln, b.mid, L->ln2.w, b.m2, b.r2, NT, W);   /* dx: d mid */
        /* mid = in + out_proj(attn(ln1(in))) */
        k_zero(v->dao, nw * fb);
        linear_backward(v->dao, L->o.gw, L->o.gb, dx, b.ao, L->o.w, NT, W, W);
        k_zero(v->dq, nw * fb);
        k_zero(v->dk, nw * fb);
        k_zero(v->dv, nw * fb);
        attention_backward(v->dq, v->dk, v->dv, v->ascr, v->dao, NULL, b.att, b.q, b.k, b.v, scale, N, T, T, H, H,
                           hd);
        layernorm_forward(v->ln, v->rm, v->rr, b.in, L->ln1.w, L->ln1.b, c->eps, NT, W);
        k_zero(dln, nw * fb);
        linear_backward(dln, L->q.gw, L->q.gb, v->dq, v->ln, L->q.w, NT, W, W);
        linear_backward(dln, L->k.gw, L->k.gb, v->dk, v->ln, L->k.w, NT, W, W);
        linear_backward(dln, L->v.gw, L->v.gb, v->dv, v->ln, L->v.w, NT, W, W);
        layernorm_backward(dx, L->ln1.gw, L->ln1.gb, dln, b.in, L->ln1.w, b.m1, b.r1, NT, W);   /* dx: d in */
    }
    /* hidden_states[0] = pre_layrnorm(emb) */
    const float *emb = v->emb + o * W;
    k_zero(dln, nw * fb);
    layernorm_backward(dln, v->pre.gw, v->pre.gb, dx, emb, v->pre.w, v->stats + o, v->stats + NTm + o, NT, W);
    /* emb[n] = cat(cls, conv[n]^T) + pos: dln now holds d emb */
    float *dconv = v->dq;   /* [N, W, G] <= [NT, W] */
    for (int n = 0; n < N; n++) {
        const float *de = dln + n * TW;
        if (v->pos_g) axpy(v->pos_g, de, 1.0f, TW);
        if (v->cls_g) axpy(v->cls_g, de, 1.0f, (size_t)W);
        if (v->patch_g)   /* dconv[n] [W, G] = I_W @ de[1..G]^T */
            matmul(dconv + (size_t)n * W * G, v->eye, de + W, W, G, W, 0, 1, 1.0f, 0.0f);
    }
    if (v->patch_g)
        conv2d_backward(NULL, v->patch_g, NULL, v->scratch, dconv, v->pix + first * img, v->patch_w, N,
                        c->channels, c->image_size, c->image_size, W, c->patch, c->patch, c->patch, c->patch, 0, 0);
    return 0;
}

const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

void clip_normalize_u8(float *out, const uint8_t *rgb, int S) {
    const size_t HW = (size_t)S * S;
    for (int ch = 0; ch < 3; ch++)
        for (size_t i = 0; i < HW; i++)
            out[ch * HW + i] = ((float)rgb[3 * i + ch] * (1.0f / 255.0f) - CLIP_MEAN[ch]) / CLIP_STD[ch];
}

/* ------------------------------------------------------------------------ */
/* mm_projector                                                             */
/* ------------------------------------------------------------------------ */
struct mm_projector {
    mm_projector_cfg c;
    int max_rows, n;
    const float *w0, *b0, *w2, *b2;     /* linear: w0/b0 only */
    float *gw0, *gb0, *gw2, *gb2;       /* NULL when frozen */
    const float *in;                    /* input of the last forward */
    float *block;
    float *a1, *ga, *out, *dga, *da1;   /* [max_rows, D] each (mlp2x_gelu; linear: out only) */
};

static const char *proj_prefix(const mm_projector_cfg *c) { return c->prefix ? c->prefix : "model."; }

int mm_projector_type_from_name(const char *name, mm_proj_type *t) {
    if (name && !strcmp(name, "linear")) { *t = MM_PROJ_LINEAR; return 0; }
    if (name && !strcmp(name, "mlp2x_gelu")) { *t = MM_PROJ_MLP2X_GELU; return 0; }
    return ar_errorf("mm_projector: unknown type '%s' (expected linear or mlp2x_gelu)", name ? name : "(null)");
}

static int proj_check(const mm_projector_cfg *c) {
    if (c->in_dim <= 0 || c->out_dim <= 0)
        return ar_errorf("mm_projector: in_dim %d and out_dim %d must be positive", c->in_dim, c->out_dim);
    if (c->type != MM_PROJ_LINEAR && c->type != MM_PROJ_MLP2X_GELU)
        return ar_errorf("mm_projector: unknown type %d", (int)c->type);
    return 0;
}

/* "<prefix>mm_projector.<tail>" */
static void pname(char *n, const mm_projector_cfg *c, const char *tail) {
    snprintf(n, NAME_LEN, "%smm_projector.%s", proj_prefix(c), tail);
}

static int padd_lin(ar_params *ps, const mm_projector_cfg *c, const char *stem, int out, int in) {
    char n[NAME_LEN], t[TAIL_LEN];
    const int sw[2] = {out, in}, sb[1] = {out}, tr = c->trainable != 0;
    snprintf(t, sizeof t, "%sweight", stem);
    pname(n, c, t);
    if (params_add(ps, n, 2, sw, tr, INIT_KAIMING_UNIFORM, 0.0f)) return -1;
    snprintf(t, sizeof t, "%sbias", stem);
    pname(n, c, t);
    return params_add(ps, n, 1, sb, tr, INIT_NORMAL, 1.0f / sqrtf(3.0f * (float)in));
}

int mm_projector_declare(const mm_projector_cfg *c, ar_params *ps) {
    if (proj_check(c)) return -1;
    if (c->type == MM_PROJ_LINEAR) return padd_lin(ps, c, "", c->out_dim, c->in_dim);
    if (padd_lin(ps, c, "0.", c->out_dim, c->in_dim)) return -1;
    return padd_lin(ps, c, "2.", c->out_dim, c->out_dim);
}

static int pbind(const mm_projector_cfg *c, ar_params *ps, const char *tail, size_t numel, const float **w,
                 float **g) {
    char n[NAME_LEN];
    pname(n, c, tail);
    const ar_param *p = params_find(ps, n);
    if (!p || p->numel != numel)
        return ar_errorf("mm_projector: %s %s", n, p ? "has the wrong shape" : "is not declared");
    *w = params_w(ps, n);
    *g = params_g(ps, n);
    return 0;
}

/* out (and a1, ga, dga, da1 for mlp2x_gelu), max_rows x out_dim each. */
size_t mm_projector_plan_bytes(const mm_projector_cfg *c, int max_rows) {
    const size_t nbuf = c->type == MM_PROJ_LINEAR ? 1 : 5;
    return nbuf * (size_t)(max_rows > 0 ? max_rows : 0) * (size_t)c->out_dim * sizeof(float);
}

mm_projector *mm_projector_create(const mm_projector_cfg *c, ar_params *ps, int max_rows) {
    if (proj_check(c)) return NULL;
    if (max_rows <= 0) { ar_errorf("mm_projector: max_rows %d must be positive", max_rows); return NULL; }
    mm_projector *p = calloc(1, sizeof *p);
    if (!p) { ar_errorf("mm_projector: out of host memory"); return NULL; }
    p->c = *c;
    p->max_rows = max_rows;
    const size_t Wi = (size_t)c->in_dim, D = (size_t)c->out_dim, R = (size_t)max_rows;
    int bad;
    if (c->type == MM_PROJ_LINEAR)
        bad = pbind(c, ps, "weight", D * Wi, &p->w0, &p->gw0) || pbind(c, ps, "bias", D, &p->b0, &p->gb0);
    else
        bad = pbind(c, ps, "0.weight", D * Wi, &p->w0, &p->gw0) || pbind(c, ps, "0.bias", D, &p->b0, &p->gb0) ||
              pbind(c, ps, "2.weight", D * D, &p->w2, &p->gw2) || pbind(c, ps, "2.bias", D, &p->b2, &p->gb2);
    if (bad) { mm_projector_free(p); return NULL; }
    p->block = k_malloc(mm_projector_plan_bytes(c, max_rows));
    if (!p->block) {
        ar_errorf("mm_projector: out of memory for %d rows of width %zu", max_rows, D);
        mm_projector_free(p);
        return NULL;
    }
    p->out = p->block;
    if (c->type == MM_PROJ_MLP2X_GELU) {
        p->a1 = p->out + R * D;
        p->ga = p->a1 + R * D;
        p->dga = p->ga + R * D;
        p->da1 = p->dga + R * D;
    }
    return p;
}

size_t mm_projector_block_bytes(const mm_projector *p) { return mm_projector_plan_bytes(&p->c, p->max_rows); }

void mm_projector_free(mm_projector *p) {
    if (!p) return;
    k_free(p->block);
    free(p);
}

float *mm_projector_forward(mm_projector *p, const float *in, int n) {
    p->n = 0;
    if (n <= 0 || n > p->max_rows) {
        ar_errorf("mm_projector: %d rows, created for 1..%d", n, p->max_rows);
        return NULL;
    }
    const int Wi = p->c.in_dim, D = p->c.out_dim;
    p->n = n;
    p->in = in;
    if (p->c.type == MM_PROJ_LINEAR) {
        linear_forward(p->out, in, p->w0, p->b0, n, Wi, D);
    } else {
        linear_forward(p->a1, in, p->w0, p->b0, n, Wi, D);
        gelu_forward(p->ga, p->a1, (size_t)n * D);
        linear_forward(p->out, p->ga, p->w2, p->b2, n, D, D);
    }
    return p->out;
}

void mm_projector_backward(mm_projector *p, const float *dout, float *din) {
    const int n = p->n, Wi = p->c.in_dim, D = p->c.out_dim;
    if (n == 0 || (!p->gw0 && !din)) return;   /* frozen and no input gradient wanted */
    if (p->c.type == MM_PROJ_LINEAR) {
        linear_backward(din, p->gw0, p->gb0, dout, p->in, p->w0, n, Wi, D);
        return;
    }
    const size_t nD = (size_t)n * D;
    k_zero(p->dga, nD * sizeof(float));
    linear_backward(p->dga, p->gw2, p->gb2, dout, p->ga, p->w2, n, D, D);
    k_zero(p->da1, nD * sizeof(float));
    gelu_backward(p->da1, p->dga, p->a1, nD);
    linear_backward(din, p->gw0, p->gb0, p->da1, p->in, p->w0, n, Wi, D);
}
