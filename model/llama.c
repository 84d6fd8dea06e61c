/* model/llama.c — see llama.h. Like every model file it touches tensor memory
 * only through kernels.h (k_upload for host inputs), so it runs on either backend.
 * Shapes: N = B*T tokens, D = dim, KVd = kv_heads*hd, F = mlp_hidden, R = LoRA rank. */
#include "model/llama.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PROJ_NAME[LLAMA_NPROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

typedef struct {            /* one projection: base weight [out,in] and optional LoRA */
    int in, out;
    float *w, *gw;          /* gw NULL: frozen */
    const uint16_t *w16;    /* the frozen base stored in 16 bits instead of w (llama_cfg.frozen_half) */
    int f16;                /* w16 is IEEE fp16 (else bf16) */
    float *A, *B, *gA, *gB; /* A NULL: no LoRA on this projection */
} proj_w;

typedef struct { float *xd, *u, *mask; } proj_a;   /* LoRA saved tensors */

typedef struct {
    float *attn_norm, *g_attn_norm, *mlp_norm, *g_mlp_norm;
    proj_w p[LLAMA_NPROJ];
} layer_w;

typedef struct {   /* saved activations of one layer */
    float *x;                    /* [N,D] residual stream entering the layer */
    float *xn1, *rstd1;          /* [N,D], [N] */
    float *q, *k, *v;            /* [N,D], [N,KVd], [N,KVd] before RoPE */
    float *qr, *kr;              /* after RoPE */
    float *att;                  /* [B,H,T,T] (NULL in layers with flash attention) */
    float *lse;                  /* [B,H,T] rows' log-sum-exp (flash attention) */
    float *ao;                   /* [N,D] attention output before o_proj */
    float *xm;                   /* [N,D] residual after attention */
    float *xn2, *rstd2;
    float *g, *u, *h;            /* [N,F] */
    proj_a pa[LLAMA_NPROJ];
} layer_a;

/* bf16 activations (llama_cfg.act_half): one layer's kept tensors in 16 bits.
 * Without checkpoint_layers every field is set (no q, k: backward never reads
 * the pre-RoPE q and k, so they are rounded through qr's and kr's slots and
 * not kept); with it only x. NULL fields round through m->hscratch. */
typedef struct {
    bf16_t *x, *xn1, *qr, *kr, *v, *xm, *xn2, *g, *u, *h;   /* not ao: it stays fp32 per layer */
    bf16_t *xd[LLAMA_NPROJ], *lu[LLAMA_NPROJ];   /* LoRA's dropout output and u */
} layer_h;

struct llama {
    llama_cfg c;
    int B, T, N, hd, kvd;
    layer_w *lw;
    layer_a *la;
    layer_h *lh;                   /* act_half: per-layer bf16 stores (all NULL without it) */
    bf16_t *hscratch;              /* act_half with checkpointing: bf16 buffer for rounding */
    int rounding;                  /* the current / last full forward rounds its activations */
    float *embed, *norm, *lm_head, *g_embed, *g_norm, *g_lm_head;
    bf16_t *head16;                /* GEMM mode bf16: lm_head rounded to bf16, remade every full forward */
    int head16_on;                 /* the last full forward ran lm_head from head16 */
    float *x_final, *xf, *rstdf, *logits, *lse;
    /* gradient work buffers, reused across layers; dx ends as d(input embeddings) */
    float *dx, *dxn, *dq, *dk, *dv, *dqr, *dkr, *dao, *dg, *du, *dh, *scratch, *dlogits;
    int *tokens, *targets, *pos;   /* backend memory (k_malloc) */
    int count;
    uint64_t seed;                 /* dropout seed of the last forward */
    int training;                  /* 0: no dropout (evaluation) */
    void (*grad_hook)(void *ctx, int layer);   /* llama_set_grad_hook */
    void *grad_ctx;
    int dropped;                   /* the last forward applied dropout */
    float scale_lora;
    ar_arena arena;
    /* feature splicing (llama_embed_feat): device [N] feature row per position, host copy */
    int *fid, *h_fid;
    /* incremental decoding (llama_cache_enable): per layer K and V caches
     * [(B+1), T, KVd] (row B a spare for permutations), post-RoPE keys; and the
     * one-token-per-row step buffers, all in cache_arena */
    int cache_on;
    float **kc, **vc;
    float *s_x, *s_xn, *s_rstd, *s_q, *s_k, *s_v, *s_qr, *s_ao, *s_xm, *s_g, *s_u, *s_h, *s_lu, *s_att, *s_logits;
    int *s_tok, *s_fid, *s_pos, *s_klen;         /* device [B] */
    int *hs_tok, *hs_fid, *hs_pos, *hs_klen;     /* host [B] */
    ar_arena cache_arena;
};

int llama_parse_lora_targets(const char *list, unsigned *mask) {
    *mask = 0;
    const char *s = list;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t') s++;
        if (!*s) break;
        size_t n = strcspn(s, ", \t");
        int found = -1;
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            const char *short_name = strchr(PROJ_NAME[i], '.') + 1;
            if (strlen(short_name) == n && strncmp(s, short_name, n) == 0) found = i;
        }
        if (found < 0)
            return ar_errorf("unknown LoRA target '%.*s' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)",
                             (int)n, s);
        *mask |= 1u << found;
        s += n;
    }
    if (!*mask) return ar_errorf("empty LoRA target list");
    return 0;
}

static unsigned lora_mask(const llama_cfg *c) {
    if (c->lora_rank <= 0) return 0;
    return c->lora_targets ? c->lora_targets : LLAMA_LORA_QV;
}

static void proj_dims(const llama_cfg *c, int i, int *in, int *out) {
    int D = c->dim, F = c->mlp_hidden, kvd = c->kv_heads * (c->dim / c->heads);
    static const int kind[LLAMA_NPROJ] = {0, 1, 1, 0, 2, 2, 3}; /* D->D, D->kvd, D->F, F->D */
    switch (kind[i]) {
    case 0: *in = D; *out = D; break;
    case 1: *in = D; *out = kvd; break;
    case 2: *in = D; *out = F; break;
    default: *in = F; *out = D; break;
    }
}

static int add(ar_params *ps, const char *name, int r, int c, int trainable, ar_init init, float std) {
    int shape[2] = {r, c};
    return params_add(ps, name, c ? 2 : 1, shape, trainable, init, std);
}

int llama_declare(const llama_cfg *c, ar_params *ps) {
    if (c->dim <= 0 || c->heads <= 0 || c->kv_heads <= 0 || c->layers <= 0 || c->mlp_hidden <= 0 || c->vocab <= 0)
        return ar_errorf("llama: sizes must be positive (vocab %d, dim %d, layers %d, heads %d, kv_heads %d, mlp_hidden %d)",
                         c->vocab, c->dim, c->layers, c->heads, c->kv_heads, c->mlp_hidden);
    if (c->dim % c->heads || c->heads % c->kv_heads || (c->dim / c->heads) % 2)
        return ar_errorf("llama: dim %d, heads %d, kv_heads %d: need dim %% heads == 0, heads %% kv_heads == 0 and an even head dim",
                         c->dim, c->heads, c->kv_heads);
    if (c->lora_rank < 0 || c->lora_rank > 4096)
        return ar_errorf("llama: lora rank %d (expected 0..4096)", c->lora_rank);
    const int D = c->dim, tb = c->train_base;
    const unsigned lm = lora_mask(c);
    const float std = 0.02f;
    char n[112];
    if (add(ps, "model.embed_tokens.weight", c->vocab, D, tb || c->train_embed, INIT_NORMAL, std)) return -1;
    for (int l = 0; l < c->layers; l++) {
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        if (add(ps, n, D, 0, tb, INIT_ONES, 0)) return -1;
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            int in, out;
            proj_dims(c, i, &in, &out);
            if (i == LLAMA_GATE) {   /* HF order: attention, post-attention norm, MLP */
                snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
                if (add(ps, n, D, 0, tb, INIT_ONES, 0)) return -1;
            }
            snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, PROJ_NAME[i]);
            if (add(ps, n, out, in, tb, INIT_NORMAL, std)) return -1;
            if (c->frozen_half && !tb && params_store_half(ps, n, c->frozen_half == LLAMA_FROZEN_F16)) return -1;
            if (lm & (1u << i)) {
                snprintf(n, sizeof n, "model.layers.%d.%s.lora_A.weight", l, PROJ_NAME[i]);
                if (add(ps, n, c->lora_rank, in, 1, INIT_KAIMING_UNIFORM, 0)) return -1;
                snprintf(n, sizeof n, "model.layers.%d.%s.lora_B.weight", l, PROJ_NAME[i]);
                if (add(ps, n, out, c->lora_rank, 1, INIT_ZEROS, 0)) return -1;
            }
        }
    }
    if (add(ps, "model.norm.weight", D, 0, tb, INIT_ONES, 0)) return -1;
    if (add(ps, "lm_head.weight", c->vocab, D, tb || c->train_lm_head, INIT_NORMAL, std)) return -1;
    return 0;
}

/* Lays out every activation; with a measuring arena it only counts bytes. */

static void plan(llama *m, ar_arena *a) {
    const llama_cfg *c = &m->c;
    size_t N = m->N, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, V = c->vocab;
    size_t att = (size_t)m->B * c->heads * m->T * m->T, nlse = (size_t)m->B * c->heads * m->T;
    const int any_full = !c->flash_attention;   /* layers keep P (and backward needs the full scratch) */
    const int half = c->act_half == LLAMA_ACT_BF16;
    const unsigned lmask = lora_mask(c);
    for (int l = 0; l < c->layers; l++) {
        layer_a *s = &m->la[l];
        if (half && l > 0) {   /* one fp32 work set (layer 0's) for every layer; the kept tensors live in lh */
            *s = m->la[0];
            if (c->checkpoint_layers) continue;   /* rstd, P, lse, masks are recomputed too */
            s->rstd1 = arena_floats(a, N); s->rstd2 = arena_floats(a, N);   /* per layer, fp32 */
            s->ao = arena_floats(a, N * D);   /* fp32: flash backward's row term needs the exact output */
            s->att = any_full ? arena_floats(a, att) : NULL;
            s->lse = c->flash_attention ? arena_floats(a, nlse) : NULL;
            for (int i = 0; i < LLAMA_NPROJ; i++)
                if ((lmask & (1u << i)) && c->lora_dropout > 0) {
                    int in_i, out_i;
                    proj_dims(c, i, &in_i, &out_i);
                    s->pa[i].mask = arena_floats(a, N * (size_t)in_i);
                }
            continue;
        }
        if (c->checkpoint_layers && l > 0) {   /* every layer shares layer 0's work buffers */
            *s = m->la[0];
            s->x = arena_floats(a, N * D);
            continue;
        }
        s->x = arena_floats(a, N * D);
        s->xn1 = arena_floats(a, N * D); s->rstd1 = arena_floats(a, N);
        s->q = arena_floats(a, N * D); s->k = arena_floats(a, N * kvd); s->v = arena_floats(a, N * kvd);
        s->qr = arena_floats(a, N * D); s->kr = arena_floats(a, N * kvd);
        s->att = any_full ? arena_floats(a, att) : NULL;
        s->lse = c->flash_attention ? arena_floats(a, nlse) : NULL;
        s->ao = arena_floats(a, N * D); s->xm = arena_floats(a, N * D);
        s->xn2 = arena_floats(a, N * D); s->rstd2 = arena_floats(a, N);
        s->g = arena_floats(a, N * F); s->u = arena_floats(a, N * F); s->h = arena_floats(a, N * F);
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            if (!(lora_mask(c) & (1u << i))) continue;   /* llama_declare's LoRA set */
            int in_i, out_i;
            proj_dims(c, i, &in_i, &out_i);
            size_t in = (size_t)in_i;
            s->pa[i].u = arena_floats(a, N * (size_t)c->lora_rank);
            if (c->lora_dropout > 0) {
                s->pa[i].xd = arena_floats(a, N * in);
                s->pa[i].mask = arena_floats(a, N * in);
            }
        }
    }
    m->x_final = arena_floats(a, N * D); m->xf = arena_floats(a, N * D); m->rstdf = arena_floats(a, N);
    m->logits = arena_floats(a, N * V); m->lse = arena_floats(a, N);
    m->dx = arena_floats(a, N * D); m->dxn = arena_floats(a, N * D);
    m->dq = arena_floats(a, N * D); m->dk = arena_floats(a, N * kvd); m->dv = arena_floats(a, N * kvd);
    m->dqr = arena_floats(a, N * D); m->dkr = arena_floats(a, N * kvd); m->dao = arena_floats(a, N * D);
    m->dg = arena_floats(a, N * F); m->du = arena_floats(a, N * F); m->dh = arena_floats(a, N * F);
    size_t sc = any_full ? attention_scratch_floats(m->B, m->T, m->T, c->heads) : 0;
    if (c->flash_attention) {
        const size_t fs = attention_flash_scratch_floats(m->B, m->T, m->T, c->heads, c->kv_heads);
        if (fs > sc) sc = fs;
    }
    m->scratch = arena_floats(a, sc);
    m->dlogits = arena_floats(a, N * V);
    if (!half) return;
    /* the bf16 stores: 2 bytes a value */
#define H16(n) ((bf16_t *)arena_alloc(a, (n) * sizeof(bf16_t)))
    const size_t R = c->lora_rank > 0 ? (size_t)c->lora_rank : 0;
    for (int l = 0; l < c->layers; l++) {
        layer_h *h = &m->lh[l];
        memset(h, 0, sizeof *h);
        h->x = H16(N * D);
        if (c->checkpoint_layers) continue;
        h->xn1 = H16(N * D); h->qr = H16(N * D); h->kr = H16(N * kvd); h->v = H16(N * kvd);
        h->xm = H16(N * D); h->xn2 = H16(N * D);
        h->g = H16(N * F); h->u = H16(N * F); h->h = H16(N * F);
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            if (!(lmask & (1u << i))) continue;
            int in_i, out_i;
            proj_dims(c, i, &in_i, &out_i);
            h->lu[i] = H16(N * R);
            if (c->lora_dropout > 0) h->xd[i] = H16(N * (size_t)in_i);
        }
    }
    /* with checkpointing, everything but x rounds through a bf16 scratch as
     * large as the largest such tensor: the dh gradient buffer (free during
     * forwards and recomputations) when it is large enough */
    if (c->checkpoint_layers) {
        size_t big = D > F ? D : F;
        if (R > big) big = R;
        m->hscratch = big <= 2 * F ? (bf16_t *)m->dh : H16(N * big);
    }
#undef H16
}

/* The arena bytes of llama_create(c, ps, B, T), without allocating: plan()
 * on a measuring arena over a model shell with only the sizes set. */
size_t llama_plan_activation_bytes(const llama_cfg *c, int B, int T) {
    if (B <= 0 || T <= 0 || c->layers <= 0 || c->heads <= 0) return 0;
    llama m;
    memset(&m, 0, sizeof m);
    m.c = *c; m.B = B; m.T = T; m.N = B * T; m.hd = c->dim / c->heads; m.kvd = c->kv_heads * m.hd;
    m.la = calloc((size_t)c->layers, sizeof *m.la);
    m.lh = calloc((size_t)c->layers, sizeof *m.lh);
    if (!m.la || !m.lh) { free(m.la); free(m.lh); return 0; }
    ar_arena meas;
    arena_init_measure(&meas);
    plan(&m, &meas);
    free(m.la); free(m.lh);
    return meas.used;
}

llama *llama_create(const llama_cfg *c, ar_params *ps, int B, int T) {
    if (B <= 0 || T <= 0) { ar_errorf("llama: batch %d x %d tokens", B, T); return NULL; }
    if (T > c->max_seq) { ar_errorf("llama: sequence length %d exceeds model.max_seq %d", T, c->max_seq); return NULL; }
    llama *m = calloc(1, sizeof *m);
    if (!m) { ar_errorf("llama: out of memory"); return NULL; }
    m->c = *c; m->B = B; m->T = T; m->N = B * T; m->training = 1; m->hd = c->dim / c->heads; m->kvd = c->kv_heads * m->hd;
    m->scale_lora = c->lora_rank > 0 ? c->lora_alpha / (float)c->lora_rank : 0.0f;
    m->lw = calloc((size_t)c->layers, sizeof *m->lw);
    m->la = calloc((size_t)c->layers, sizeof *m->la);
    m->lh = calloc((size_t)c->layers, sizeof *m->lh);
    m->tokens = k_malloc((size_t)m->N * sizeof(int));
    m->targets = k_malloc((size_t)m->N * sizeof(int));
    m->pos = k_malloc((size_t)m->N * sizeof(int));
    m->fid = k_malloc((size_t)m->N * sizeof(int));
    m->h_fid = malloc((size_t)m->N * sizeof(int));
    int *pos = malloc((size_t)m->N * sizeof(int));
    if (c->act_half != LLAMA_ACT_FP32 && c->act_half != LLAMA_ACT_BF16) {
        free(pos); llama_free(m); ar_errorf("llama: act_half %d (expected LLAMA_ACT_FP32 or LLAMA_ACT_BF16)", c->act_half);
        return NULL;
    }
    if (!m->lw || !m->la || !m->lh || !m->tokens || !m->targets || !m->pos || !m->fid || !m->h_fid || !pos) {
        free(pos); llama_free(m); ar_errorf("llama: out of memory"); return NULL;
    }
    for (int i = 0; i < m->N; i++) pos[i] = i % T;
    k_upload(m->pos, pos, (size_t)m->N * sizeof(int));
    free(pos);
    char n[112];
    for (int l = 0; l < c->layers; l++) {
        layer_w *w = &m->lw[l];
#define NORM(field, suffix) do { snprintf(n, sizeof n, "model.layers.%d." suffix, l); \
        w->field = params_w(ps, n); w->g_##field = params_g(ps, n); } while (0)
        NORM(attn_norm, "input_layernorm.weight");
        NORM(mlp_norm, "post_attention_layernorm.weight");
#undef NORM
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            proj_w *p = &w->p[i];
            proj_dims(c, i, &p->in, &p->out);
            snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, PROJ_NAME[i]);
            p->w = params_w(ps, n); p->gw = params_g(ps, n); p->w16 = params_w16(ps, n); p->f16 = ps->w16_fp16;
            snprintf(n, sizeof n, "model.layers.%d.%s.lora_A.weight", l, PROJ_NAME[i]);
            p->A = params_w(ps, n); p->gA = params_g(ps, n);
            snprintf(n, sizeof n, "model.layers.%d.%s.lora_B.weight", l, PROJ_NAME[i]);
            p->B = params_w(ps, n); p->gB = params_g(ps, n);
            if ((!p->w && !p->w16) || (p->A != NULL) != (p->B != NULL)) {
                llama_free(m);
                ar_errorf("llama: layer %d %s is not declared in the parameter registry", l, PROJ_NAME[i]);
                return NULL;
            }
        }
        if (!w->attn_norm || !w->mlp_norm) { llama_free(m); ar_errorf("llama: layer %d norms not declared", l); return NULL; }
    }
    m->embed = params_w(ps, "model.embed_tokens.weight"); m->g_embed = params_g(ps, "model.embed_tokens.weight");
    m->norm = params_w(ps, "model.norm.weight"); m->g_norm = params_g(ps, "model.norm.weight");
    m->lm_head = params_w(ps, "lm_head.weight"); m->g_lm_head = params_g(ps, "lm_head.weight");
    if (!m->embed || !m->norm || !m->lm_head) { llama_free(m); ar_errorf("llama: embeddings, final norm or lm_head not declared"); return NULL; }
    if (arena_init(&m->arena, llama_plan_activation_bytes(c, B, T))) { llama_free(m); return NULL; }
    plan(m, &m->arena);
    return m;
}

void llama_free(llama *m) {
    if (!m) return;
    arena_free(&m->arena);
    arena_free(&m->cache_arena);
    free(m->kc); free(m->vc);
    free(m->hs_tok); free(m->hs_fid); free(m->hs_pos); free(m->hs_klen);
    free(m->lw); free(m->la); free(m->lh); k_free(m->tokens); k_free(m->targets); k_free(m->pos);
    k_free(m->head16);
    if (m->fid) k_free(m->fid);
    free(m->h_fid);
    free(m);
}

const float *llama_logits(const llama *m) { return m->logits; }
const float *llama_embeds_grad(const llama *m) { return m->dx; }
float *llama_embeds(llama *m) { return m->la[0].x; }
size_t llama_activation_bytes(const llama *m) { return m->arena.cap; }
void llama_set_training(llama *m, int training) { m->training = training != 0; }
int llama_training(const llama *m) { return m->training; }
const llama_cfg *llama_config(const llama *m) { return &m->c; }
int llama_batch(const llama *m) { return m->B; }
int llama_seq(const llama *m) { return m->T; }

/* Dropout stream of projection i of layer l: rng_derive(seed, 7 l + i). */
static uint64_t proj_seed(uint64_t seed, int l, int i) { return rng_derive(seed, (uint64_t)LLAMA_NPROJ * l + i); }

/* The base product out = in @ w^T of rows rows (fp32, bf16- or fp16-stored weight). */
static void base_forward(const proj_w *p, float *out, const float *in, int rows) {
    if (p->w16 && p->f16) linear_f16_forward(out, in, p->w16, NULL, rows, p->in, p->out);
    else if (p->w16) linear_bf16_forward(out, in, p->w16, NULL, rows, p->in, p->out);
    else linear_forward(out, in, p->w, NULL, rows, p->in, p->out);
}

/* act_half: t[n] rounded to bf16 in place (round to nearest even), through
 * the bf16 slot that keeps it (NULL: the scratch); nothing unless the current
 * forward rounds. */
static void keep16(llama *m, bf16_t *slot, float *t, size_t n) {
    if (!m->rounding) return;
    bf16_t *b = slot ? slot : m->hscratch;
    convert_f32_to_bf16(b, t, n);
    convert_bf16_to_f32(t, b, n);
}

/* act_half: a kept tensor back into the work set (exactly the rounded values). */
static void load16(float *t, const bf16_t *slot, size_t n) {
    if (slot) convert_bf16_to_f32(t, slot, n);
}

static void proj_forward(llama *m, const proj_w *p, proj_a *a, float *out, const float *in, uint64_t seed,
                         const layer_h *h, int i) {
    if (!p->A) { base_forward(p, out, in, m->N); return; }
    if (m->dropped) dropout_mask(a->mask, (size_t)m->N * p->in, m->c.lora_dropout, seed);
    if (m->rounding) {   /* the LoRA term step by step, rounding xd and u where they are made */
        const int N = m->N, R = m->c.lora_rank;
        if (p->w16) base_forward(p, out, in, N);
        else linear_forward(out, in, p->w, NULL, N, p->in, p->out);
        const float *x = in;
        if (m->dropped) {   /* xd = in ⊙ mask (lora_forward with scale 0 adds nothing to out) */
            lora_forward(out, a->xd, a->u, in, a->mask, NULL, NULL, p->A, p->B, 0.0f, N, p->in, p->out, R);
            keep16(m, h->xd[i], a->xd, (size_t)N * p->in);
            x = a->xd;
        }
        linear_forward(a->u, x, p->A, NULL, N, p->in, R);        /* u = xd A^T */
        keep16(m, h->lu[i], a->u, (size_t)N * R);
        matmul(out, a->u, p->B, N, p->out, R, 0, 1, m->scale_lora, 1.0f);   /* out += s u B^T */
        return;
    }
    if (p->w16) base_forward(p, out, in, m->N);   /* then the LoRA term is added to it (w = NULL) */
    lora_forward(out, a->xd, a->u, in, m->dropped ? a->mask : NULL, p->w, NULL, p->A, p->B,
                 m->scale_lora, m->N, p->in, p->out, m->c.lora_rank);
}

static void proj_backward(llama *m, const proj_w *p, const proj_a *a, float *din, const float *dout, const float *in) {
    if (p->w16 && p->f16) linear_f16_backward(din, NULL, dout, p->w16, m->N, p->in, p->out);   /* frozen: din only */
    else if (p->w16) linear_bf16_backward(din, NULL, dout, p->w16, m->N, p->in, p->out);
    if (!p->A) {
        if (!p->w16) linear_backward(din, p->gw, NULL, dout, in, p->w, m->N, p->in, p->out);
        return;
    }
    lora_backward(din, p->gw, NULL, p->gA, p->gB, dout, in, a->xd, a->u,
                  m->dropped ? a->mask : NULL, p->w, p->A, p->B, m->scale_lora,
                  m->N, p->in, p->out, m->c.lora_rank);
}

void llama_embed(llama *m, const int *tokens) {
    k_upload(m->tokens, tokens, (size_t)m->N * sizeof(int));
    embedding_forward(m->la[0].x, m->tokens, m->embed, m->N, m->c.dim);
}

/* Host ids -> device feature-row ids (-1: a token row); 1 when any row is a feature. */
static int feature_ids(const int *tokens, int n, int n_feat, const float *feat, int *h_fid, int T,
                       const char *who) {
    int any = 0;
    for (int i = 0; i < n; i++) {
        h_fid[i] = tokens[i] < 0 ? -tokens[i] - 1 : -1;
        if (tokens[i] >= 0) continue;
        if (!feat || h_fid[i] >= n_feat)
            return ar_errorf("%s: sample %d position %d: feature row %d, but %d feature rows", who, i / T, i % T,
                             h_fid[i], feat ? n_feat : 0);
        any = 1;
    }
    return any;
}

int llama_embed_feat(llama *m, const int *tokens, const float *feat, int n_feat) {
    int any = feature_ids(tokens, m->N, n_feat, feat, m->h_fid, m->T, "llama_embed_feat");
    if (any < 0) return -1;
    llama_embed(m, tokens);
    if (any) {
        k_upload(m->fid, m->h_fid, (size_t)m->N * sizeof(int));
        embedding_forward(m->la[0].x, m->fid, feat, m->N, m->c.dim);
    }
    return 0;
}

/* One decoder layer: la[l].x -> the next layer's input (or x_final). */
static void layer_forward(llama *m, int l, uint64_t dropout_seed) {
    const llama_cfg *c = &m->c;
    const int N = m->N, D = c->dim, F = c->mlp_hidden, hd = m->hd;
    const size_t nd = (size_t)N * D, nk = (size_t)N * m->kvd, nf = (size_t)N * F;
    layer_w *w = &m->lw[l]; layer_a *s = &m->la[l]; const layer_h *hk = &m->lh[l];
    /* act_half: each kept tensor is rounded to bf16 where it is made (keep16) */
    keep16(m, hk->x, s->x, nd);
    rmsnorm_forward(s->xn1, s->rstd1, s->x, w->attn_norm, c->norm_eps, N, D);
    keep16(m, hk->xn1, s->xn1, nd);
    proj_forward(m, &w->p[LLAMA_Q], &s->pa[LLAMA_Q], s->q, s->xn1, proj_seed(dropout_seed, l, LLAMA_Q), hk, LLAMA_Q);
    proj_forward(m, &w->p[LLAMA_K], &s->pa[LLAMA_K], s->k, s->xn1, proj_seed(dropout_seed, l, LLAMA_K), hk, LLAMA_K);
    proj_forward(m, &w->p[LLAMA_V], &s->pa[LLAMA_V], s->v, s->xn1, proj_seed(dropout_seed, l, LLAMA_V), hk, LLAMA_V);
    keep16(m, hk->qr, s->q, nd);   /* q and k through qr's and kr's slots: backward does not read them */
    keep16(m, hk->kr, s->k, nk);
    keep16(m, hk->v, s->v, nk);
    rope_forward(s->qr, s->q, m->pos, c->rope_theta, N, c->heads, hd);
    rope_forward(s->kr, s->k, m->pos, c->rope_theta, N, c->kv_heads, hd);
    keep16(m, hk->qr, s->qr, nd);
    keep16(m, hk->kr, s->kr, nk);
    if (m->cache_on && !m->training) {   /* prefill: the cache layout is [B,T,KVd] */
        k_copy(m->kc[l], s->kr, (size_t)N * m->kvd * sizeof(float));
        k_copy(m->vc[l], s->v, (size_t)N * m->kvd * sizeof(float));
    }
    if (c->flash_attention)
        attention_flash_forward(s->ao, s->lse, m->scratch, s->qr, s->kr, s->v, NULL, 1, 1.0f / sqrtf((float)hd),
                                m->B, m->T, m->T, c->heads, c->kv_heads, hd);
    else
        attention_forward(s->ao, s->att, s->qr, s->kr, s->v, NULL, 1, 1.0f / sqrtf((float)hd),
                          m->B, m->T, m->T, c->heads, c->kv_heads, hd);
    /* ao stays fp32: attention_flash_backward takes its rows' term from
     * rowsum(dout ⊙ out), which a rounded out would get wrong by ~1e-2 */
    proj_forward(m, &w->p[LLAMA_O], &s->pa[LLAMA_O], s->xm, s->ao, proj_seed(dropout_seed, l, LLAMA_O), hk, LLAMA_O);
    add_forward(s->xm, s->xm, s->x, (size_t)N * D);
    keep16(m, hk->xm, s->xm, nd);
    rmsnorm_forward(s->xn2, s->rstd2, s->xm, w->mlp_norm, c->norm_eps, N, D);
    keep16(m, hk->xn2, s->xn2, nd);
    proj_forward(m, &w->p[LLAMA_GATE], &s->pa[LLAMA_GATE], s->g, s->xn2, proj_seed(dropout_seed, l, LLAMA_GATE), hk,
                 LLAMA_GATE);
    proj_forward(m, &w->p[LLAMA_UP], &s->pa[LLAMA_UP], s->u, s->xn2, proj_seed(dropout_seed, l, LLAMA_UP), hk, LLAMA_UP);
    keep16(m, hk->g, s->g, nf);
    keep16(m, hk->u, s->u, nf);
    swiglu_forward(s->h, s->g, s->u, nf);
    keep16(m, hk->h, s->h, nf);
    /* with act_half the next layer's x is this layer's work x (kept above) */
    float *next = l + 1 < c->layers ? m->la[l + 1].x : m->x_final;
    proj_forward(m, &w->p[LLAMA_DOWN], &s->pa[LLAMA_DOWN], next, s->h, proj_seed(dropout_seed, l, LLAMA_DOWN), hk,
                 LLAMA_DOWN);
    add_forward(next, next, s->xm, (size_t)N * D);
}

float llama_forward_embeds(llama *m, const int *targets, uint64_t dropout_seed, int *count) {
    const llama_cfg *c = &m->c;
    const int N = m->N, D = c->dim;
    m->seed = dropout_seed;
    m->dropped = m->training && c->lora_dropout > 0;
    /* act_half: every full forward rounds, except a prefill (evaluation mode
     * with the KV cache on), which stays fp32 like llama_step */
    m->rounding = c->act_half == LLAMA_ACT_BF16 && (m->training || !m->cache_on);
    for (int l = 0; l < c->layers; l++) layer_forward(m, l, dropout_seed);
    rmsnorm_forward(m->xf, m->rstdf, m->x_final, m->norm, c->norm_eps, N, D);
    /* GEMM mode bf16: lm_head's products in bf16 too, from a copy of the fp32
     * (master) weight made here, so it follows every update (as autocast
     * casts it per forward); a prefill for generation stays fp32 like
     * llama_step. Without memory for the copy: fp32. */
    const size_t vd = (size_t)c->vocab * D;
    m->head16_on = (m->training || !m->cache_on) && !strcmp(k_gemm_mode(), "bf16") &&
                   (m->head16 || (m->head16 = k_malloc(vd * sizeof(bf16_t))));
    if (m->head16_on) {
        convert_f32_to_bf16(m->head16, m->lm_head, vd);
        linear_bf16_forward(m->logits, m->xf, m->head16, NULL, N, D, c->vocab);
    } else {
        linear_forward(m->logits, m->xf, m->lm_head, NULL, N, D, c->vocab);
    }
    if (!targets) { m->count = 0; if (count) *count = 0; return 0.0f; }
    k_upload(m->targets, targets, (size_t)N * sizeof(int));
    float loss = softmax_xent_forward(m->lse, &m->count, m->logits, m->targets, N, c->vocab, -100);
    if (count) *count = m->count;
    return loss;
}

float llama_forward(llama *m, const int *tokens, const int *targets, int B, int T,
                    uint64_t dropout_seed, int *count) {
    (void)B; (void)T;   /* fixed at llama_create; kept for call-site readability */
    llama_embed(m, tokens);
    return llama_forward_embeds(m, targets, dropout_seed, count);
}

const float *llama_final_hidden(const llama *m) { return m->xf; }
const float *llama_last_attention(const llama *m) { return m->la[m->c.layers - 1].att; }

void llama_backward(llama *m, float loss_weight) { llama_backward_ex(m, loss_weight, NULL, NULL); }

void llama_set_grad_hook(llama *m, void (*fn)(void *ctx, int layer), void *ctx) { m->grad_hook = fn; m->grad_ctx = ctx; }

/* Extra gradient on selected rows of the last layer's probabilities (flash). */
typedef struct { const int *rows; int n; const float *prow, *dprow; } rows_grad;

static void backward_impl(llama *m, float loss_weight, const float *dhidden_extra, const float *datt_extra,
                          const rows_grad *rg);

void llama_backward_ex(llama *m, float loss_weight, const float *dhidden_extra, const float *datt_extra) {
    backward_impl(m, loss_weight, dhidden_extra, datt_extra, NULL);
}

void llama_backward_rows(llama *m, float loss_weight, const float *dhidden_extra, const int *rows, int n,
                         const float *prow, const float *dprow) {
    const rows_grad rg = {rows, n, prow, dprow};
    backward_impl(m, loss_weight, dhidden_extra, NULL, n > 0 ? &rg : NULL);
}

int llama_last_attention_rows(llama *m, const int *rows, int n, float *prow) {
    const llama_cfg *c = &m->c;
    const layer_a *s = &m->la[c->layers - 1];
    if (!c->flash_attention || !s->lse)
        return ar_errorf("llama: attention rows need flash attention (llama_cfg.flash_attention); without it "
                         "llama_last_attention holds every row");
    if (m->rounding) {   /* act_half: the last layer's qr, kr from its store (with checkpointing the work set has them) */
        const layer_h *hk = &m->lh[c->layers - 1];
        load16(s->qr, hk->qr, (size_t)m->N * c->dim);
        load16(s->kr, hk->kr, (size_t)m->N * m->kvd);
    }
    attention_rows_forward(prow, rows, n, s->qr, s->kr, s->lse, NULL, 1, 1.0f / sqrtf((float)m->hd), m->B, m->T, m->T,
                           c->heads, c->kv_heads, m->hd);
    return 0;
}

static void backward_impl(llama *m, float loss_weight, const float *dhidden_extra, const float *datt_extra,
                          const rows_grad *rg) {
    const llama_cfg *c = &m->c;
    const int N = m->N, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, hd = m->hd, V = c->vocab;
    const size_t nd = (size_t)N * D, nf = (size_t)N * F, nk = (size_t)N * kvd;
    k_zero(m->dlogits, (size_t)N * V * sizeof(float));
    softmax_xent_backward(m->dlogits, m->logits, m->lse, m->targets, loss_weight, m->count, N, V, -100);
    k_zero(m->dxn, nd * sizeof(float));
    if (m->head16_on) {   /* the forward's bf16 lm_head: dW from bf16-rounded operands too */
        linear_bf16_backward(m->dxn, NULL, m->dlogits, m->head16, N, D, V);
        linear_bf16_backward_weight(m->g_lm_head, m->dlogits, m->xf, N, D, V);
    } else {
        linear_backward(m->dxn, m->g_lm_head, NULL, m->dlogits, m->xf, m->lm_head, N, D, V);
    }
    if (dhidden_extra) axpy(m->dxn, dhidden_extra, 1.0f, nd);
    k_zero(m->dx, nd * sizeof(float));
    rmsnorm_backward(m->dx, m->g_norm, m->dxn, m->x_final, m->norm, m->rstdf, N, D);
    if (m->grad_hook) m->grad_hook(m->grad_ctx, c->layers);
    /* m->dx now holds dL/d(residual stream); each layer's branches add into it. */
    for (int l = c->layers - 1; l >= 0; l--) {
        layer_w *w = &m->lw[l]; layer_a *s = &m->la[l];
        /* checkpointing: the shared buffers hold the last layer; recompute this one
         * (same dropout streams, so bitwise the same activations) */
        const layer_h *hk = &m->lh[l];
        if (c->checkpoint_layers && l < c->layers - 1) {
            if (m->rounding) load16(s->x, hk->x, nd);   /* act_half: the shared work x from this layer's store */
            layer_forward(m, l, m->seed);
            if (m->rounding) load16(s->x, hk->x, nd);   /* the recompute left the next layer's input there */
        } else if (m->rounding && !c->checkpoint_layers) {   /* act_half: the work set from layer l's store */
            load16(s->x, hk->x, nd); load16(s->xn1, hk->xn1, nd);
            load16(s->qr, hk->qr, nd); load16(s->kr, hk->kr, nk); load16(s->v, hk->v, nk);
            load16(s->xm, hk->xm, nd); load16(s->xn2, hk->xn2, nd);
            load16(s->g, hk->g, nf); load16(s->u, hk->u, nf); load16(s->h, hk->h, nf);
            for (int i = 0; i < LLAMA_NPROJ; i++) {
                const int in = w->p[i].in;
                load16(s->pa[i].u, hk->lu[i], (size_t)N * c->lora_rank);
                load16(s->pa[i].xd, hk->xd[i], (size_t)N * in);
            }
        }
        /* MLP branch: out = xm + down(swiglu(gate(xn2), up(xn2))) */
        k_zero(m->dh, nf * sizeof(float));
        proj_backward(m, &w->p[LLAMA_DOWN], &s->pa[LLAMA_DOWN], m->dh, m->dx, s->h);
        k_zero(m->dg, nf * sizeof(float)); k_zero(m->du, nf * sizeof(float));
        swiglu_backward(m->dg, m->du, m->dh, s->g, s->u, nf);
        k_zero(m->dxn, nd * sizeof(float));
        proj_backward(m, &w->p[LLAMA_GATE], &s->pa[LLAMA_GATE], m->dxn, m->dg, s->xn2);
        proj_backward(m, &w->p[LLAMA_UP], &s->pa[LLAMA_UP], m->dxn, m->du, s->xn2);
        rmsnorm_backward(m->dx, w->g_mlp_norm, m->dxn, s->xm, w->mlp_norm, s->rstd2, N, D);
        /* attention branch: xm = x + o(attn(rope(q), rope(k), v)) */
        k_zero(m->dao, nd * sizeof(float));
        proj_backward(m, &w->p[LLAMA_O], &s->pa[LLAMA_O], m->dao, m->dx, s->ao);
        k_zero(m->dqr, nd * sizeof(float)); k_zero(m->dkr, nk * sizeof(float)); k_zero(m->dv, nk * sizeof(float));
        if (c->flash_attention) {
            attention_flash_backward(m->dqr, m->dkr, m->dv, m->scratch, m->dao, s->ao, s->lse, s->qr, s->kr, s->v, NULL,
                                     1, 1.0f / sqrtf((float)hd), m->B, m->T, m->T, c->heads, c->kv_heads, hd);
            if (rg && l == c->layers - 1)   /* the refocusing rows' extra gradient (llama_backward_rows) */
                attention_rows_backward(m->dqr, m->dkr, rg->dprow, rg->prow, rg->rows, rg->n, s->qr, s->kr,
                                        1.0f / sqrtf((float)hd), m->B, m->T, m->T, c->heads, c->kv_heads, hd);
        } else
            attention_backward(m->dqr, m->dkr, m->dv, m->scratch, m->dao, l == c->layers - 1 ? datt_extra : NULL,
                               s->att, s->qr, s->kr, s->v,
                               1.0f / sqrtf((float)hd), m->B, m->T, m->T, c->heads, c->kv_heads, hd);
        k_zero(m->dq, nd * sizeof(float)); k_zero(m->dk, nk * sizeof(float));
        rope_backward(m->dq, m->dqr, m->pos, c->rope_theta, N, c->heads, hd);
        rope_backward(m->dk, m->dkr, m->pos, c->rope_theta, N, c->kv_heads, hd);
        k_zero(m->dxn, nd * sizeof(float));
        proj_backward(m, &w->p[LLAMA_Q], &s->pa[LLAMA_Q], m->dxn, m->dq, s->xn1);
        proj_backward(m, &w->p[LLAMA_K], &s->pa[LLAMA_K], m->dxn, m->dk, s->xn1);
        proj_backward(m, &w->p[LLAMA_V], &s->pa[LLAMA_V], m->dxn, m->dv, s->xn1);
        rmsnorm_backward(m->dx, w->g_attn_norm, m->dxn, s->x, w->attn_norm, s->rstd1, N, D);
        if (m->grad_hook) m->grad_hook(m->grad_ctx, l);
    }
    if (m->g_embed) embedding_backward(m->g_embed, m->dx, m->tokens, N, D);
    if (m->grad_hook) m->grad_hook(m->grad_ctx, -1);
}

/* ------------------------------------------------------------------------ */
/* Incremental decoding: KV cache and one token per row                     */
/* ------------------------------------------------------------------------ */
static void plan_cache(llama *m, ar_arena *a) {
    const llama_cfg *c = &m->c;
    const size_t B = m->B, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, V = c->vocab;
    const size_t R = c->lora_rank > 0 ? (size_t)c->lora_rank : 1;
    const size_t rows = (B + 1) * (size_t)m->T * kvd;
    for (int l = 0; l < c->layers; l++) { m->kc[l] = arena_floats(a, rows); m->vc[l] = arena_floats(a, rows); }
    m->s_x = arena_floats(a, B * D); m->s_xn = arena_floats(a, B * D); m->s_rstd = arena_floats(a, B);
    m->s_q = arena_floats(a, B * D); m->s_k = arena_floats(a, B * kvd); m->s_v = arena_floats(a, B * kvd);
    m->s_qr = arena_floats(a, B * D); m->s_ao = arena_floats(a, B * D); m->s_xm = arena_floats(a, B * D);
    m->s_g = arena_floats(a, B * F); m->s_u = arena_floats(a, B * F); m->s_h = arena_floats(a, B * F);
    m->s_lu = arena_floats(a, B * R);
    m->s_att = arena_floats(a, B * (size_t)c->heads * m->T);
    m->s_logits = arena_floats(a, B * V);
    m->s_tok = arena_alloc(a, B * sizeof(int)); m->s_fid = arena_alloc(a, B * sizeof(int));
    m->s_pos = arena_alloc(a, B * sizeof(int)); m->s_klen = arena_alloc(a, B * sizeof(int));
}

int llama_cache_enable(llama *m) {
    if (m->cache_on) return 0;
    const int L = m->c.layers, B = m->B;
    m->kc = calloc((size_t)L, sizeof *m->kc);
    m->vc = calloc((size_t)L, sizeof *m->vc);
    m->hs_tok = malloc((size_t)B * sizeof(int)); m->hs_fid = malloc((size_t)B * sizeof(int));
    m->hs_pos = malloc((size_t)B * sizeof(int)); m->hs_klen = malloc((size_t)B * sizeof(int));
    if (!m->kc || !m->vc || !m->hs_tok || !m->hs_fid || !m->hs_pos || !m->hs_klen) {
        llama_cache_disable(m);
        return ar_errorf("llama: out of host memory for the KV cache");
    }
    ar_arena meas;
    arena_init_measure(&meas);
    plan_cache(m, &meas);
    if (arena_init(&m->cache_arena, meas.high)) { llama_cache_disable(m); return -1; }
    plan_cache(m, &m->cache_arena);
    k_zero(m->cache_arena.base, m->cache_arena.cap);   /* idle rows compute on zeros, never garbage */
    m->cache_on = 1;
    return 0;
}

void llama_cache_disable(llama *m) {
    arena_free(&m->cache_arena);
    free(m->kc); free(m->vc);
    free(m->hs_tok); free(m->hs_fid); free(m->hs_pos); free(m->hs_klen);
    m->kc = m->vc = NULL;
    m->hs_tok = m->hs_fid = m->hs_pos = m->hs_klen = NULL;
    m->cache_on = 0;
}

int llama_cache_enabled(const llama *m) { return m->cache_on; }

void llama_cache_prefill(llama *m) { (void)m; /* the forward filled the cache (see llama.h) */ }

void llama_cache_copy_row(llama *m, int dst_row, int src_row, int len) {
    if (!m->cache_on || dst_row == src_row || len <= 0) return;
    const size_t row = (size_t)m->T * m->kvd, n = (size_t)len * m->kvd * sizeof(float);
    for (int l = 0; l < m->c.layers; l++) {
        k_copy(m->kc[l] + (size_t)dst_row * row, m->kc[l] + (size_t)src_row * row, n);
        k_copy(m->vc[l] + (size_t)dst_row * row, m->vc[l] + (size_t)src_row * row, n);
    }
}

/* A projection of the B step rows (no dropout). */
static void step_proj(llama *m, const proj_w *p, float *out, const float *in) {
    if (!p->A || p->w16) base_forward(p, out, in, m->B);
    if (!p->A) return;
    lora_forward(out, NULL, m->s_lu, in, NULL, p->w, NULL, p->A, p->B, m->scale_lora, m->B, p->in, p->out,
                 m->c.lora_rank);
}

int llama_step(llama *m, const int *tokens, const int *pos, const float *feat, int n_feat) {
    const llama_cfg *c = &m->c;
    const int B = m->B, T = m->T, D = c->dim, F = c->mlp_hidden, hd = m->hd, kvd = m->kvd;
    if (!m->cache_on) return ar_errorf("llama_step: the KV cache is not enabled (llama_cache_enable)");
    int any_feat = 0;
    for (int b = 0; b < B; b++) {
        if (pos[b] >= T) return ar_errorf("llama_step: row %d position %d beyond the sequence length %d", b, pos[b], T);
        if (pos[b] < 0) {   /* idle row: embeds nothing new (keeps finite values), sees no key */
            m->hs_tok[b] = -1; m->hs_fid[b] = -1; m->hs_pos[b] = 0; m->hs_klen[b] = 0;
            continue;
        }
        const int t = tokens[b];
        if (t >= c->vocab) return ar_errorf("llama_step: row %d token %d outside the vocabulary of %d", b, t, c->vocab);
        m->hs_tok[b] = t;
        m->hs_fid[b] = t < 0 ? -t - 1 : -1;
        if (t < 0 && (!feat || -t - 1 >= n_feat))
            return ar_errorf("llama_step: row %d: feature row %d, but %d feature rows", b, -t - 1, feat ? n_feat : 0);
        any_feat |= t < 0;
        m->hs_pos[b] = pos[b];
        m->hs_klen[b] = pos[b] + 1;
    }
    k_upload(m->s_tok, m->hs_tok, (size_t)B * sizeof(int));
    k_upload(m->s_pos, m->hs_pos, (size_t)B * sizeof(int));
    k_upload(m->s_klen, m->hs_klen, (size_t)B * sizeof(int));
    embedding_forward(m->s_x, m->s_tok, m->embed, B, D);
    if (any_feat) {
        k_upload(m->s_fid, m->hs_fid, (size_t)B * sizeof(int));
        embedding_forward(m->s_x, m->s_fid, feat, B, D);
    }
    const size_t bd = (size_t)B * D, row = (size_t)T * kvd;
    for (int l = 0; l < c->layers; l++) {
        const layer_w *w = &m->lw[l];
        rmsnorm_forward(m->s_xn, m->s_rstd, m->s_x, w->attn_norm, c->norm_eps, B, D);
        step_proj(m, &w->p[LLAMA_Q], m->s_q, m->s_xn);
        step_proj(m, &w->p[LLAMA_K], m->s_k, m->s_xn);
        step_proj(m, &w->p[LLAMA_V], m->s_v, m->s_xn);
        rope_forward(m->s_qr, m->s_q, m->s_pos, c->rope_theta, B, c->heads, hd);
        /* post-RoPE key (into s_k's place: the pre-RoPE key is not needed) and value
         * of each live row into the cache at its position */
        rope_forward(m->s_ao, m->s_k, m->s_pos, c->rope_theta, B, c->kv_heads, hd);
        for (int b = 0; b < B; b++) {
            if (pos[b] < 0) continue;
            const size_t at = (size_t)b * row + (size_t)pos[b] * kvd;
            k_copy(m->kc[l] + at, m->s_ao + (size_t)b * kvd, (size_t)kvd * sizeof(float));
            k_copy(m->vc[l] + at, m->s_v + (size_t)b * kvd, (size_t)kvd * sizeof(float));
        }
        attention_forward(m->s_ao, m->s_att, m->s_qr, m->kc[l], m->vc[l], m->s_klen, 0, 1.0f / sqrtf((float)hd),
                          B, 1, T, c->heads, c->kv_heads, hd);
        step_proj(m, &w->p[LLAMA_O], m->s_xm, m->s_ao);
        add_forward(m->s_xm, m->s_xm, m->s_x, bd);
        rmsnorm_forward(m->s_xn, m->s_rstd, m->s_xm, w->mlp_norm, c->norm_eps, B, D);
        step_proj(m, &w->p[LLAMA_GATE], m->s_g, m->s_xn);
        step_proj(m, &w->p[LLAMA_UP], m->s_u, m->s_xn);
        swiglu_forward(m->s_h, m->s_g, m->s_u, (size_t)B * F);
        step_proj(m, &w->p[LLAMA_DOWN], m->s_x, m->s_h);
        add_forward(m->s_x, m->s_x, m->s_xm, bd);
    }
    rmsnorm_forward(m->s_xn, m->s_rstd, m->s_x, m->norm, c->norm_eps, B, D);
    linear_forward(m->s_logits, m->s_xn, m->lm_head, NULL, B, D, c->vocab);
    return 0;
}

const float *llama_step_logits(const llama *m) { return m->s_logits; }
