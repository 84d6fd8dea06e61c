/* model/llama.c — see llama.h. Like every model file it touches tensor memory
 * only through kernels.h (k_upload for host inputs), so it runs on either backend. Shapes: N = B*T tokens, D = dim, KVd = kv_heads*hd, F = mlp_hidden. */
#include "model/llama.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {   /* parameter pointers of one layer (g* may be NULL: frozen) */
    float *attn_norm, *wq, *wk, *wv, *wo, *mlp_norm, *wg, *wu, *wd;
    float *g_attn_norm, *g_wq, *g_wk, *g_wv, *g_wo, *g_mlp_norm, *g_wg, *g_wu, *g_wd;
    float *qA, *qB, *vA, *vB, *g_qA, *g_qB, *g_vA, *g_vB;
} layer_w;

typedef struct {   /* saved activations of one layer */
    float *x;                    /* [N,D] residual stream entering the layer */
    float *xn1, *rstd1;          /* [N,D], [N] */
    float *q, *k, *v;            /* [N,D], [N,KVd], [N,KVd] before RoPE */
    float *qr, *kr;              /* after RoPE */
    float *att;                  /* [B,H,T,T] */
    float *ao;                   /* [N,D] attention output before o_proj */
    float *xm;                   /* [N,D] residual after attention */
    float *xn2, *rstd2;
    float *g, *u, *h;            /* [N,F] */
    float *qxd, *qu, *vxd, *vu, *qmask, *vmask; /* LoRA saved tensors */
} layer_a;

struct llama {
    llama_cfg c;
    int B, T, N, hd, kvd;
    layer_w *lw;
    layer_a *la;
    float *embed, *norm, *lm_head, *g_embed, *g_norm, *g_lm_head;
    float *x_final, *xf, *rstdf, *logits, *lse;
    /* gradient work buffers, reused across layers */
    float *dx, *dxn, *dq, *dk, *dv, *dqr, *dkr, *dao, *dg, *du, *dh, *scratch, *dlogits;
    int *tokens, *targets, *pos;   /* backend memory (k_malloc) */
    int count;
    float scale_lora;
    ar_arena arena;
};

static int add(ar_params *ps, const char *name, int r, int c, int trainable, ar_init init, float std) {
    int shape[2] = {r, c};
    return params_add(ps, name, c ? 2 : 1, shape, trainable, init, std);
}

int llama_declare(const llama_cfg *c, ar_params *ps) {
    if (c->dim % c->heads || c->heads % c->kv_heads || (c->dim / c->heads) % 2)
        return ar_errorf("llama: dim %d, heads %d, kv_heads %d: need dim %% heads == 0, heads %% kv_heads == 0 and an even head dim",
                         c->dim, c->heads, c->kv_heads);
    int D = c->dim, F = c->mlp_hidden, kvd = c->kv_heads * (c->dim / c->heads), tb = c->train_base;
    float std = 0.02f;
    char n[112];
    if (add(ps, "model.embed_tokens.weight", c->vocab, D, tb, INIT_NORMAL, std)) return -1;
    for (int l = 0; l < c->layers; l++) {
#define P(suffix, r, cc, init) do { snprintf(n, sizeof n, "model.layers.%d." suffix, l); \
        if (add(ps, n, r, cc, tb, init, std)) return -1; } while (0)
        P("input_layernorm.weight", D, 0, INIT_ONES);
        P("self_attn.q_proj.weight", D, D, INIT_NORMAL);
        P("self_attn.k_proj.weight", kvd, D, INIT_NORMAL);
        P("self_attn.v_proj.weight", kvd, D, INIT_NORMAL);
        P("self_attn.o_proj.weight", D, D, INIT_NORMAL);
        P("post_attention_layernorm.weight", D, 0, INIT_ONES);
        P("mlp.gate_proj.weight", F, D, INIT_NORMAL);
        P("mlp.up_proj.weight", F, D, INIT_NORMAL);
        P("mlp.down_proj.weight", D, F, INIT_NORMAL);
#undef P
        if (c->lora_rank > 0) {
            const char *t[2] = {"q_proj", "v_proj"};
            int outd[2] = {D, kvd};
            for (int i = 0; i < 2; i++) {
                snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.lora_A.weight", l, t[i]);
                if (add(ps, n, c->lora_rank, D, 1, INIT_KAIMING_UNIFORM, 0)) return -1;
                snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.lora_B.weight", l, t[i]);
                if (add(ps, n, outd[i], c->lora_rank, 1, INIT_ZEROS, 0)) return -1;
            }
        }
    }
    if (add(ps, "model.norm.weight", D, 0, tb, INIT_ONES, 0)) return -1;
    if (add(ps, "lm_head.weight", c->vocab, D, tb, INIT_NORMAL, std)) return -1;
    return 0;
}

/* Lays out every activation; with a measuring arena it only counts bytes. */
static void plan(llama *m, ar_arena *a) {
    const llama_cfg *c = &m->c;
    size_t N = m->N, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, V = c->vocab;
    size_t att = (size_t)m->B * c->heads * m->T * m->T;
    for (int l = 0; l < c->layers; l++) {
        layer_a *s = &m->la[l];
        s->x = arena_floats(a, N * D);
        s->xn1 = arena_floats(a, N * D); s->rstd1 = arena_floats(a, N);
        s->q = arena_floats(a, N * D); s->k = arena_floats(a, N * kvd); s->v = arena_floats(a, N * kvd);
        s->qr = arena_floats(a, N * D); s->kr = arena_floats(a, N * kvd);
        s->att = arena_floats(a, att);
        s->ao = arena_floats(a, N * D); s->xm = arena_floats(a, N * D);
        s->xn2 = arena_floats(a, N * D); s->rstd2 = arena_floats(a, N);
        s->g = arena_floats(a, N * F); s->u = arena_floats(a, N * F); s->h = arena_floats(a, N * F);
        if (c->lora_rank > 0) {
            size_t R = c->lora_rank;
            s->qxd = arena_floats(a, N * D); s->qu = arena_floats(a, N * R);
            s->vxd = arena_floats(a, N * D); s->vu = arena_floats(a, N * R);
            s->qmask = arena_floats(a, N * D); s->vmask = arena_floats(a, N * D);
        }
    }
    m->x_final = arena_floats(a, N * D); m->xf = arena_floats(a, N * D); m->rstdf = arena_floats(a, N);
    m->logits = arena_floats(a, N * V); m->lse = arena_floats(a, N);
    m->dx = arena_floats(a, N * D); m->dxn = arena_floats(a, N * D);
    m->dq = arena_floats(a, N * D); m->dk = arena_floats(a, N * kvd); m->dv = arena_floats(a, N * kvd);
    m->dqr = arena_floats(a, N * D); m->dkr = arena_floats(a, N * kvd); m->dao = arena_floats(a, N * D);
    m->dg = arena_floats(a, N * F); m->du = arena_floats(a, N * F); m->dh = arena_floats(a, N * F);
    m->scratch = arena_floats(a, attention_scratch_floats(m->B, m->T, m->T, c->heads));
    m->dlogits = arena_floats(a, N * V);
}

llama *llama_create(const llama_cfg *c, ar_params *ps, int B, int T) {
    if (T > c->max_seq) { ar_errorf("llama: sequence length %d exceeds model.max_seq %d", T, c->max_seq); return NULL; }
    llama *m = calloc(1, sizeof *m);
    if (!m) { ar_errorf("llama: out of memory"); return NULL; }
    m->c = *c; m->B = B; m->T = T; m->N = B * T; m->hd = c->dim / c->heads; m->kvd = c->kv_heads * m->hd;
    m->scale_lora = c->lora_rank > 0 ? c->lora_alpha / (float)c->lora_rank : 0.0f;
    m->lw = calloc((size_t)c->layers, sizeof *m->lw);
    m->la = calloc((size_t)c->layers, sizeof *m->la);
    m->tokens = k_malloc((size_t)m->N * sizeof(int));
    m->targets = k_malloc((size_t)m->N * sizeof(int));
    m->pos = k_malloc((size_t)m->N * sizeof(int));
    int *pos = malloc((size_t)m->N * sizeof(int));
    if (!m->lw || !m->la || !m->tokens || !m->targets || !m->pos || !pos) {
        free(pos); llama_free(m); ar_errorf("llama: out of memory"); return NULL;
    }
    for (int i = 0; i < m->N; i++) pos[i] = i % T;
    k_upload(m->pos, pos, (size_t)m->N * sizeof(int));
    free(pos);
    char n[112];
#define W(field, suffix) do { snprintf(n, sizeof n, "model.layers.%d." suffix, l); \
        w->field = params_w(ps, n); w->g_##field = params_g(ps, n); } while (0)
    for (int l = 0; l < c->layers; l++) {
        layer_w *w = &m->lw[l];
        W(attn_norm, "input_layernorm.weight"); W(wq, "self_attn.q_proj.weight");
        W(wk, "self_attn.k_proj.weight"); W(wv, "self_attn.v_proj.weight");
        W(wo, "self_attn.o_proj.weight"); W(mlp_norm, "post_attention_layernorm.weight");
        W(wg, "mlp.gate_proj.weight"); W(wu, "mlp.up_proj.weight"); W(wd, "mlp.down_proj.weight");
        if (c->lora_rank > 0) {
            W(qA, "self_attn.q_proj.lora_A.weight"); W(qB, "self_attn.q_proj.lora_B.weight");
            W(vA, "self_attn.v_proj.lora_A.weight"); W(vB, "self_attn.v_proj.lora_B.weight");
        }
    }
#undef W
    m->embed = params_w(ps, "model.embed_tokens.weight"); m->g_embed = params_g(ps, "model.embed_tokens.weight");
    m->norm = params_w(ps, "model.norm.weight"); m->g_norm = params_g(ps, "model.norm.weight");
    m->lm_head = params_w(ps, "lm_head.weight"); m->g_lm_head = params_g(ps, "lm_head.weight");
    ar_arena meas;
    arena_init_measure(&meas);
    plan(m, &meas);
    if (arena_init(&m->arena, meas.used)) { llama_free(m); return NULL; }
    plan(m, &m->arena);
    return m;
}

void llama_free(llama *m) {
    if (!m) return;
    arena_free(&m->arena);
    free(m->lw); free(m->la); k_free(m->tokens); k_free(m->targets); k_free(m->pos);
    free(m);
}

const float *llama_logits(const llama *m) { return m->logits; }
size_t llama_activation_bytes(const llama *m) { return m->arena.cap; }

float llama_forward(llama *m, const int *tokens, const int *targets, int B, int T,
                     uint64_t dropout_seed, int *count) {
    const llama_cfg *c = &m->c;
    const int N = m->N, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, hd = m->hd, R = c->lora_rank;
    (void)B; (void)T;
    k_upload(m->tokens, tokens, (size_t)N * sizeof(int));
    embedding_forward(m->la[0].x, m->tokens, m->embed, N, D);
    for (int l = 0; l < c->layers; l++) {
        layer_w *w = &m->lw[l]; layer_a *s = &m->la[l];
        rmsnorm_forward(s->xn1, s->rstd1, s->x, w->attn_norm, c->norm_eps, N, D);
        if (R > 0) {
            float p = c->lora_dropout;
            dropout_mask(s->qmask, (size_t)N * D, p, rng_derive(dropout_seed, 2 * l));
            dropout_mask(s->vmask, (size_t)N * D, p, rng_derive(dropout_seed, 2 * l + 1));
            lora_forward(s->q, s->qxd, s->qu, s->xn1, p > 0 ? s->qmask : NULL, w->wq, NULL, w->qA, w->qB, m->scale_lora, N, D, D, R);
            lora_forward(s->v, s->vxd, s->vu, s->xn1, p > 0 ? s->vmask : NULL, w->wv, NULL, w->vA, w->vB, m->scale_lora, N, D, kvd, R);
        } else {
            linear_forward(s->q, s->xn1, w->wq, NULL, N, D, D);
            linear_forward(s->v, s->xn1, w->wv, NULL, N, D, kvd);
        }
        linear_forward(s->k, s->xn1, w->wk, NULL, N, D, kvd);
        rope_forward(s->qr, s->q, m->pos, c->rope_theta, N, c->heads, hd);
        rope_forward(s->kr, s->k, m->pos, c->rope_theta, N, c->kv_heads, hd);
        attention_forward(s->ao, s->att, s->qr, s->kr, s->v, NULL, 1, 1.0f / sqrtf((float)hd),
                          m->B, m->T, m->T, c->heads, c->kv_heads, hd);
        linear_forward(s->xm, s->ao, w->wo, NULL, N, D, D);
        add_forward(s->xm, s->xm, s->x, (size_t)N * D);
        rmsnorm_forward(s->xn2, s->rstd2, s->xm, w->mlp_norm, c->norm_eps, N, D);
        linear_forward(s->g, s->xn2, w->wg, NULL, N, D, F);
        linear_forward(s->u, s->xn2, w->wu, NULL, N, D, F);
        swiglu_forward(s->h, s->g, s->u, (size_t)N * F);
        float *next = l + 1 < c->layers ? m->la[l + 1].x : m->x_final;
        linear_forward(next, s->h, w->wd, NULL, N, F, D);
        add_forward(next, next, s->xm, (size_t)N * D);
    }
    rmsnorm_forward(m->xf, m->rstdf, m->x_final, m->norm, c->norm_eps, N, D);
    linear_forward(m->logits, m->xf, m->lm_head, NULL, N, D, c->vocab);
    if (!targets) { m->count = 0; if (count) *count = 0; return 0.0f; }
    k_upload(m->targets, targets, (size_t)N * sizeof(int));
    float loss = softmax_xent_forward(m->lse, &m->count, m->logits, m->targets, N, c->vocab, -100);
    if (count) *count = m->count;
    return loss;
}

void llama_backward(llama *m, float loss_weight) {
    const llama_cfg *c = &m->c;
    const int N = m->N, D = c->dim, F = c->mlp_hidden, kvd = m->kvd, hd = m->hd, R = c->lora_rank, V = c->vocab;
    const size_t nd = (size_t)N * D, nf = (size_t)N * F, nk = (size_t)N * kvd;
    k_zero(m->dlogits, (size_t)N * V * sizeof(float));
    softmax_xent_backward(m->dlogits, m->logits, m->lse, m->targets, loss_weight, m->count, N, V, -100);
    k_zero(m->dxn, nd * sizeof(float));
    linear_backward(m->dxn, m->g_lm_head, NULL, m->dlogits, m->xf, m->lm_head, N, D, V);
    k_zero(m->dx, nd * sizeof(float));
    rmsnorm_backward(m->dx, m->g_norm, m->dxn, m->x_final, m->norm, m->rstdf, N, D);
    /* m->dx now holds dL/d(residual stream); each layer's branches add into it. */
    for (int l = c->layers - 1; l >= 0; l--) {
        layer_w *w = &m->lw[l]; layer_a *s = &m->la[l];
        /* MLP branch: out = xm + down(swiglu(gate(xn2), up(xn2))) */
        k_zero(m->dh, nf * sizeof(float));
        linear_backward(m->dh, w->g_wd, NULL, m->dx, s->h, w->wd, N, F, D);
        k_zero(m->dg, nf * sizeof(float)); k_zero(m->du, nf * sizeof(float));
        swiglu_backward(m->dg, m->du, m->dh, s->g, s->u, nf);
        k_zero(m->dxn, nd * sizeof(float));
        linear_backward(m->dxn, w->g_wg, NULL, m->dg, s->xn2, w->wg, N, D, F);
        linear_backward(m->dxn, w->g_wu, NULL, m->du, s->xn2, w->wu, N, D, F);
        rmsnorm_backward(m->dx, w->g_mlp_norm, m->dxn, s->xm, w->mlp_norm, s->rstd2, N, D);
        /* attention branch: xm = x + o(attn(rope(q), rope(k), v)) */
        k_zero(m->dao, nd * sizeof(float));
        linear_backward(m->dao, w->g_wo, NULL, m->dx, s->ao, w->wo, N, D, D);
        k_zero(m->dqr, nd * sizeof(float)); k_zero(m->dkr, nk * sizeof(float)); k_zero(m->dv, nk * sizeof(float));
        attention_backward(m->dqr, m->dkr, m->dv, m->scratch, m->dao, NULL, s->att, s->qr, s->kr, s->v,
                           1.0f / sqrtf((float)hd), m->B, m->T, m->T, c->heads, c->kv_heads, hd);
        k_zero(m->dq, nd * sizeof(float)); k_zero(m->dk, nk * sizeof(float));
        rope_backward(m->dq, m->dqr, m->pos, c->rope_theta, N, c->heads, hd);
        rope_backward(m->dk, m->dkr, m->pos, c->rope_theta, N, c->kv_heads, hd);
        k_zero(m->dxn, nd * sizeof(float));
        if (R > 0) {
            int drop = c->lora_dropout > 0;
            lora_backward(m->dxn, w->g_wq, NULL, w->g_qA, w->g_qB, m->dq, s->xn1, s->qxd, s->qu,
                          drop ? s->qmask : NULL, w->wq, w->qA, w->qB, m->scale_lora, N, D, D, R);
            lora_backward(m->dxn, w->g_wv, NULL, w->g_vA, w->g_vB, m->dv, s->xn1, s->vxd, s->vu,
                          drop ? s->vmask : NULL, w->wv, w->vA, w->vB, m->scale_lora, N, D, kvd, R);
        } else {
            linear_backward(m->dxn, w->g_wq, NULL, m->dq, s->xn1, w->wq, N, D, D);
            linear_backward(m->dxn, w->g_wv, NULL, m->dv, s->xn1, w->wv, N, D, kvd);
        }
        linear_backward(m->dxn, w->g_wk, NULL, m->dk, s->xn1, w->wk, N, D, kvd);
        rmsnorm_backward(m->dx, w->g_attn_norm, m->dxn, s->x, w->attn_norm, s->rstd1, N, D);
    }
    if (m->g_embed) embedding_backward(m->g_embed, m->dx, m->tokens, N, D);
}
