/* model/clip_vit.c — the CLIP vision tower and mm_projector (see clip_vit.h).
 * Touches tensor memory only through kernels.h, so it runs on either backend.
 * Shapes: N images, S x S pixels, C channels, patch p, g = S/p, G = g*g
 * patches, T = 1 + G tokens, W width, H heads of hd = W/H, M MLP width,
 * NT = N*T token rows (image-major, CLS first). The patch convolution gives
 * channel-major [N, W, G]; the transpose to token rows [G, W] is a product
 * with a W x W identity (matmul), as in sam_decoder.c. */
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
typedef struct { const float *w, *b; } lin_w;        /* nn.Linear / LayerNorm, frozen */

typedef struct {
    lin_w ln1, q, k, v, o, ln2, fc1, fc2;
} layer_w;

struct clip_vit {
    clip_vit_cfg c;
    int max_images, n_run;              /* layers run: hidden_states[n_run] is selected */
    int g, G, T, P;                     /* grid side, patches, tokens, output tokens per image */
    const float *patch_w, *cls, *pos;   /* embeddings */
    lin_w pre;                          /* pre_layrnorm */
    layer_w *L;                         /* host array [n_run] */
    float *block;                       /* one k_malloc for everything below */
    size_t block_floats;
    float *x;                           /* [NT, W] residual stream = the hidden state */
    float *ln, *tmp;                    /* [NT, W] LayerNorm output, branch output */
    float *mean, *rstd;                 /* [NT] */
    float *region;                      /* shared: q,k,v,ao [NT,W] x4 | h1,a [NT,M] x2 | conv out [N,W,G] */
    float *att;                         /* [N, H, T, T] */
    float *eye;                         /* [W, W] identity */
    float *scratch;                     /* conv2d scratch (one image) */
    float *out;                         /* [N, G, W] (unused with keep_cls: out = x) */
};

static const char *vit_prefix(const clip_vit_cfg *c) { return c->prefix ? c->prefix : "vision_model."; }

clip_vit_cfg clip_vit_large_cfg(void) {
    clip_vit_cfg c = {.image_size = 224, .patch = 14, .channels = 3, .width = 1024, .layers = 24,
                      .heads = 16, .mlp_dim = 4096, .eps = 1e-5f, .act = CLIP_ACT_QUICK_GELU,
                      .select_layer = -2, .keep_cls = 0, .prefix = NULL};
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
    *n_run = c->select_layer < 0 ? c->layers + 1 + c->select_layer : c->select_layer;
    return 0;
}

static void vname(char *n, const clip_vit_cfg *c, int layer, const char *tail) {
    if (layer < 0) snprintf(n, NAME_LEN, "%s%s", vit_prefix(c), tail);
    else snprintf(n, NAME_LEN, "%sencoder.layers.%d.%s", vit_prefix(c), layer, tail);
}

static int vadd(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int ndim, int d0, int d1,
                int d2, int d3, ar_init init, float std) {
    char n[NAME_LEN];
    vname(n, c, layer, tail);
    const int shape[4] = {d0, d1, d2, d3};
    return params_add(ps, n, ndim, shape, 0, init, std);
}

/* A LayerNorm (ones, zeros) or a Linear (normal std, zero bias) pair "<tail>.weight/.bias". */
static int vadd_norm(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int W) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vadd(ps, c, layer, t, 1, W, 0, 0, 0, INIT_ONES, 0.0f)) return -1;
    snprintf(t, sizeof t, "%s.bias", tail);
    return vadd(ps, c, layer, t, 1, W, 0, 0, 0, INIT_ZEROS, 0.0f);
}

static int vadd_lin(ar_params *ps, const clip_vit_cfg *c, int layer, const char *tail, int out, int in,
                    float std) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vadd(ps, c, layer, t, 2, out, in, 0, 0, INIT_NORMAL, std)) return -1;
    snprintf(t, sizeof t, "%s.bias", tail);
    return vadd(ps, c, layer, t, 1, out, 0, 0, 0, INIT_ZEROS, 0.0f);
}

int clip_vit_declare(const clip_vit_cfg *c, ar_params *ps) {
    int n_run;
    if (vit_check(c, &n_run)) return -1;
    const int W = c->width, M = c->mlp_dim, p = c->patch, g = c->image_size / p, T = 1 + g * g;
    /* Hugging Face CLIPPreTrainedModel._init_weights with factor 1, initializer_range 0.02. */
    const float in_std = 1.0f / sqrtf((float)W) / sqrtf(2.0f * (float)c->layers);
    if (vadd(ps, c, -1, "embeddings.class_embedding", 1, W, 0, 0, 0, INIT_NORMAL, 1.0f / sqrtf((float)W)) ||
        vadd(ps, c, -1, "embeddings.patch_embedding.weight", 4, W, c->channels, p, p, INIT_NORMAL, 0.02f) ||
        vadd(ps, c, -1, "embeddings.position_embedding.weight", 2, T, W, 0, 0, INIT_NORMAL, 0.02f) ||
        vadd_norm(ps, c, -1, "pre_layrnorm", W))
        return -1;
    for (int l = 0; l < c->layers; l++) {
        if (vadd_lin(ps, c, l, "self_attn.k_proj", W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.v_proj", W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.q_proj", W, W, in_std) ||
            vadd_lin(ps, c, l, "self_attn.out_proj", W, W, 1.0f / sqrtf((float)W)) ||
            vadd_norm(ps, c, l, "layer_norm1", W) ||
            vadd_lin(ps, c, l, "mlp.fc1", M, W, 1.0f / sqrtf(2.0f * (float)W)) ||
            vadd_lin(ps, c, l, "mlp.fc2", W, M, in_std) ||
            vadd_norm(ps, c, l, "layer_norm2", W))
            return -1;
    }
    return vadd_norm(ps, c, -1, "post_layernorm", W);
}

/* Looks up one frozen tensor and checks its size. */
static int vbind(const clip_vit_cfg *c, ar_params *ps, int layer, const char *tail, size_t numel,
                 const float **w) {
    char n[NAME_LEN];
    vname(n, c, layer, tail);
    const ar_param *p = params_find(ps, n);
    if (!p || p->numel != numel)
        return ar_errorf("clip_vit: %s %s", n, p ? "has the wrong shape" : "is not declared");
    *w = params_w(ps, n);
    return 0;
}

static int vbind_pair(const clip_vit_cfg *c, ar_params *ps, int layer, const char *tail, size_t wn, size_t bn,
                      lin_w *o) {
    char t[TAIL_LEN];
    snprintf(t, sizeof t, "%s.weight", tail);
    if (vbind(c, ps, layer, t, wn, &o->w)) return -1;
    snprintf(t, sizeof t, "%s.bias", tail);
    return vbind(c, ps, layer, t, bn, &o->b);
}

clip_vit *clip_vit_create(const clip_vit_cfg *c, ar_params *ps, int max_images) {
    int n_run;
    if (vit_check(c, &n_run)) return NULL;
    if (max_images <= 0) { ar_errorf("clip_vit: max_images %d must be positive", max_images); return NULL; }
    clip_vit *v = calloc(1, sizeof *v);
    if (!v) { ar_errorf("clip_vit: out of host memory"); return NULL; }
    v->c = *c;
    v->max_images = max_images;
    v->n_run = n_run;
    v->g = c->image_size / c->patch;
    v->G = v->g * v->g;
    v->T = 1 + v->G;
    v->P = c->keep_cls ? v->T : v->G;
    const size_t W = (size_t)c->width, M = (size_t)c->mlp_dim, p = (size_t)c->patch, G = (size_t)v->G,
                 T = (size_t)v->T;
    v->L = calloc(n_run ? (size_t)n_run : 1, sizeof *v->L);
    if (!v->L) { ar_errorf("clip_vit: out of host memory"); clip_vit_free(v); return NULL; }
    if (vbind(c, ps, -1, "embeddings.patch_embedding.weight", W * c->channels * p * p, &v->patch_w) ||
        vbind(c, ps, -1, "embeddings.class_embedding", W, &v->cls) ||
        vbind(c, ps, -1, "embeddings.position_embedding.weight", T * W, &v->pos) ||
        vbind_pair(c, ps, -1, "pre_layrnorm", W, W, &v->pre)) {
        clip_vit_free(v);
        return NULL;
    }
    for (int l = 0; l < n_run; l++) {
        layer_w *L = &v->L[l];
        if (vbind_pair(c, ps, l, "layer_norm1", W, W, &L->ln1) ||
            vbind_pair(c, ps, l, "self_attn.q_proj", W * W, W, &L->q) ||
            vbind_pair(c, ps, l, "self_attn.k_proj", W * W, W, &L->k) ||
            vbind_pair(c, ps, l, "self_attn.v_proj", W * W, W, &L->v) ||
            vbind_pair(c, ps, l, "self_attn.out_proj", W * W, W, &L->o) ||
            vbind_pair(c, ps, l, "layer_norm2", W, W, &L->ln2) ||
            vbind_pair(c, ps, l, "mlp.fc1", M * W, M, &L->fc1) ||
            vbind_pair(c, ps, l, "mlp.fc2", W * M, W, &L->fc2)) {
            clip_vit_free(v);
            return NULL;
        }
    }
    const size_t NT = (size_t)max_images * T;
    size_t region = 4 * NT * W;                               /* q, k, v, ao */
    if (2 * NT * M > region) region = 2 * NT * M;             /* fc1 out, activation */
    /* (the conv output [N, W, G] < NT * W fits in the region too) */
    const size_t scratch = conv2d_scratch_floats(c->channels, c->image_size, c->image_size, c->patch, c->patch,
                                                 c->patch, c->patch, 0, 0);
    const size_t outn = c->keep_cls ? 0 : (size_t)max_images * G * W;
    const size_t att = (size_t)max_images * c->heads * T * T;
    /* every piece rounded to 16 floats so each stays 64-byte aligned */
#define R16(n) (((n) + 15) & ~(size_t)15)
    v->block_floats = 3 * R16(NT * W) + 2 * R16(NT) + R16(region) + R16(att) + R16(W * W) + R16(scratch) +
                      R16(outn);
    v->block = k_malloc(v->block_floats * sizeof(float));
    float *eye = malloc(W * W * sizeof(float));
    if (!v->block || !eye) {
        ar_errorf("clip_vit: out of memory for %d images (%zu MB of activations)", max_images,
                  v->block_floats * sizeof(float) >> 20);
        free(eye);
        clip_vit_free(v);
        return NULL;
    }
    float *q = v->block;
    v->x = q; q += R16(NT * W);
    v->ln = q; q += R16(NT * W);
    v->tmp = q; q += R16(NT * W);
    v->mean = q; q += R16(NT);
    v->rstd = q; q += R16(NT);
    v->region = q; q += R16(region);
    v->att = q; q += R16(att);
    v->eye = q; q += R16(W * W);
    v->scratch = q; q += R16(scratch);
    v->out = c->keep_cls ? v->x : q;
#undef R16
    for (size_t i = 0; i < W * W; i++) eye[i] = (i / W == i % W) ? 1.0f : 0.0f;
    k_upload(v->eye, eye, W * W * sizeof(float));
    free(eye);
    return v;
}

void clip_vit_free(clip_vit *v) {
    if (!v) return;
    k_free(v->block);
    free(v->L);
    free(v);
}

int clip_vit_tokens(const clip_vit *v) { return v->P; }
const float *clip_vit_hidden(const clip_vit *v) { return v->x; }
size_t clip_vit_activation_bytes(const clip_vit *v) { return v->block_floats * sizeof(float); }

float *clip_vit_forward(clip_vit *v, const float *pixels, int N) {
    if (N <= 0 || N > v->max_images) {
        ar_errorf("clip_vit: %d images, the tower was created for 1..%d", N, v->max_images);
        return NULL;
    }
    const clip_vit_cfg *c = &v->c;
    const int W = c->width, M = c->mlp_dim, H = c->heads, hd = W / H, T = v->T, G = v->G, NT = N * T;
    const size_t TW = (size_t)T * W, nw = (size_t)NT * W;

    /* Embeddings: conv -> [N, W, G]; token rows 1..G of each image are its transpose. */
    float *conv = v->region;
    conv2d_forward(conv, v->scratch, pixels, v->patch_w, NULL, N, c->channels, c->image_size, c->image_size, W,
                   c->patch, c->patch, c->patch, c->patch, 0, 0);
    for (int n = 0; n < N; n++) {
        float *e = v->tmp + n * TW;
        matmul(e + W, conv + (size_t)n * W * G, v->eye, G, W, W, 1, 0, 1.0f, 0.0f);   /* [G,W] = conv^T */
        k_copy(e, v->cls, (size_t)W * sizeof(float));
        add_forward(e, e, v->pos, TW);
    }
    layernorm_forward(v->x, v->mean, v->rstd, v->tmp, v->pre.w, v->pre.b, c->eps, NT, W);   /* hidden_states[0] */

    float *qb = v->region, *kb = qb + nw, *vb = kb + nw, *ao = vb + nw;   /* attention half */
    float *h1 = v->region, *ha = h1 + (size_t)NT * M;                     /* MLP half */
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < v->n_run; l++) {
        const layer_w *L = &v->L[l];
        layernorm_forward(v->ln, v->mean, v->rstd, v->x, L->ln1.w, L->ln1.b, c->eps, NT, W);
        linear_forward(qb, v->ln, L->q.w, L->q.b, NT, W, W);
        linear_forward(kb, v->ln, L->k.w, L->k.b, NT, W, W);
        linear_forward(vb, v->ln, L->v.w, L->v.b, NT, W, W);
        attention_forward(ao, v->att, qb, kb, vb, NULL, 0, scale, N, T, T, H, H, hd);
        linear_forward(v->tmp, ao, L->o.w, L->o.b, NT, W, W);
        add_forward(v->x, v->x, v->tmp, nw);
        layernorm_forward(v->ln, v->mean, v->rstd, v->x, L->ln2.w, L->ln2.b, c->eps, NT, W);
        linear_forward(h1, v->ln, L->fc1.w, L->fc1.b, NT, W, M);
        if (c->act == CLIP_ACT_QUICK_GELU) quick_gelu_forward(ha, h1, (size_t)NT * M);
        else gelu_forward(ha, h1, (size_t)NT * M);
        linear_forward(v->tmp, ha, L->fc2.w, L->fc2.b, NT, M, W);
        add_forward(v->x, v->x, v->tmp, nw);                                  /* hidden_states[l + 1] */
    }
    if (c->keep_cls) return v->x;
    for (int n = 0; n < N; n++)   /* select_feature 'patch': rows 1..G of each image */
        k_copy(v->out + (size_t)n * G * W, v->x + n * TW + W, (size_t)G * W * sizeof(float));
    return v->out;
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
    const size_t nbuf = c->type == MM_PROJ_LINEAR ? 1 : 5;
    p->block = k_malloc(nbuf * R * D * sizeof(float));
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
