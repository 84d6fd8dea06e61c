/* model/anyref.c — the AnyRef training step; see model/anyref.h. */
#include "model/anyref.h"
#include "model/sam_prompt.h"
#include "model/sam_post.h"
#include "model/generate.h"
#include "kernels/kernels.h"
#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct anyref {
    anyref_cfg c;
    ar_params *ps;
    int B, T, max_seg, Hq, S, Hl, Wl;
    llama *llm;
    seg_head *head;
    sam_decoder *dec;
    sam_prompt_cfg pc;
    int prompt_ready;
    float *pe, *dense;          /* [C,H,W] backend */
    float *logits, *dlogits;    /* loss-size logits of every [SEG], packed; their gradient */
    size_t logits_cap;
    float *dlow;                /* [max_seg, Hl, Wl] */
    float *scratch;             /* sam_post scratch */
    size_t scratch_cap;
    float *dxf, *datt;          /* [B*T, D], [B, Hq, T, T] */
    float *prow, *dprow;        /* rows mode: [max_seg, Hq, T] probabilities of the [SEG] rows, their gradient */
    int *h_rows, *d_rows;       /* rows mode: [max_seg] b*T + p of each [SEG] (host, backend) */
    /* host, per [SEG] of the last forward */
    int *seg_b, *h0, *w0, *hm, *wm;    /* sample, original size, loss-mask size */
    size_t *off;
    float *bce, *dice;
    const float **gt;
    /* host, per sample of the last forward */
    int *first, *count;         /* first [SEG] row and n_b */
    const float **img;
    int n, last_b, valid;
    double N;
    /* splicing: the feature row of each position (-1: a token) */
    int *h_fid, *d_fid;
    size_t step_bytes;          /* the device buffers above (anyref_memory) */
    int spliced;
    float *dfeat;
    float *const *dimg;
};

anyref_cfg anyref_default_cfg(void) {
    anyref_cfg c;
    memset(&c, 0, sizeof c);
    c.seg.lambda = 0.1f;
    c.seg.trainable = 1;
    c.dec = sam_decoder_default_cfg();
    c.dec_preset = "anyref";
    c.max_orig_h = c.max_orig_w = 1024;
    c.ce_w = 1.0f; c.bce_w = 2.0f; c.dice_w = 0.5f;
    return c;
}

static int fix_seg_cfg(const anyref_cfg *c, seg_head_cfg *s) {
    *s = c->seg;
    if (s->dim && s->dim != c->llm.dim)
        return ar_errorf("anyref: seg.dim %d differs from the decoder width %d", s->dim, c->llm.dim);
    if (s->out_dim && s->out_dim != c->dec.dim)
        return ar_errorf("anyref: seg.out_dim %d differs from the mask decoder width %d", s->out_dim, c->dec.dim);
    s->dim = c->llm.dim;
    s->out_dim = c->dec.dim;
    return 0;
}

static sam_prompt_cfg prompt_cfg(const anyref_cfg *c) {
    sam_prompt_cfg p = {.embed_dim = c->dec.dim, .grid_h = c->dec.H, .grid_w = c->dec.W, .prefix = c->prompt_prefix};
    return p;
}

int anyref_declare(const anyref_cfg *c, ar_params *ps) {
    seg_head_cfg s;
    if (c->dec.n_sparse != 1)
        return ar_errorf("anyref: the mask decoder takes one [SEG] embedding per prompt (n_sparse %d)", c->dec.n_sparse);
    if (fix_seg_cfg(c, &s)) return -1;
    sam_prompt_cfg pc = prompt_cfg(c);
    if (llama_declare(&c->llm, ps) || seg_head_declare(&s, ps) || sam_prompt_declare(&pc, ps) ||
        sam_decoder_declare(&c->dec, ps, c->dec_preset ? c->dec_preset : "anyref"))
        return -1;
    return 0;
}

static void *host_calloc(size_t n, size_t sz, int *fail) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) *fail = 1;
    return p;
}
static float *dev_alloc(size_t nfloats, int *fail) {
    float *p = k_malloc((nfloats ? nfloats : 1) * sizeof(float));
    if (!p) *fail = 1;
    return p;
}

/* Refocusing with flash attention: the decoder keeps no probabilities; the
 * rows of its last layer that predict a [SEG] are recomputed from q, k and
 * the log-sum-exp (llama_last_attention_rows) and their gradient goes back
 * through them (llama_backward_rows). */
static int rows_mode(const anyref_cfg *c) { return c->llm.flash_attention && c->seg.lambda != 0.0f; }

/* The step's own device buffers (floats each): the dense PE and dense
 * embedding [C,H,W]; loss-size logits of every [SEG] and their gradient; the
 * low-res mask gradient [max_seg, 4H, 4W]; the sam_post scratch; d final
 * hidden [B*T, D]; d last-layer attention [B, heads, T, T] — or, refocusing
 * with flash attention, the [SEG] rows' probabilities and their gradient
 * [max_seg, heads, T] each. */
enum { AB_PE, AB_DENSE, AB_LOGITS, AB_DLOGITS, AB_DLOW, AB_SCRATCH, AB_DXF, AB_DATT, AB_PROW, AB_DPROW, AB_N };
static void step_sizes(const anyref_cfg *c, int B, int T, int max_seg, size_t n[AB_N]) {
    const size_t chw = (size_t)c->dec.dim * c->dec.H * c->dec.W, S = c->img_size > 0 ? c->img_size : 16 * c->dec.H;
    const size_t P = (size_t)max_seg, orig = (size_t)c->max_orig_h * c->max_orig_w;
    n[AB_PE] = n[AB_DENSE] = chw;
    n[AB_LOGITS] = n[AB_DLOGITS] = P * orig;
    n[AB_DLOW] = P * (4 * (size_t)c->dec.H) * (4 * (size_t)c->dec.W);
    /* worst case over the sizes (sam_post.c): big [P,S,S], crop [P,rh,rw] with
     * rh, rw <= S, and the original-size stage [P,H0,W0] of the AVSBench variant */
    n[AB_SCRATCH] = P * (2 * S * S + orig);
    n[AB_DXF] = (size_t)B * T * c->llm.dim;
    const int rows = rows_mode(c);
    n[AB_DATT] = rows ? 0 : (size_t)B * c->llm.heads * T * T;
    n[AB_PROW] = n[AB_DPROW] = rows ? P * c->llm.heads * T : 0;
}

/* Bytes of one dev_alloc / k_malloc'd int buffer of n elements. */
static size_t dev_bytes(size_t n, size_t elem) { return (n ? n : 1) * elem; }

int anyref_plan(const anyref_cfg *c, int B, int T, int max_seg, anyref_mem *out) {
    seg_head_cfg s;
    memset(out, 0, sizeof *out);
    if (B <= 0 || T <= 0 || max_seg <= 0) return ar_errorf("anyref: batch %d x %d, max_seg %d must be positive", B, T, max_seg);
    if (fix_seg_cfg(c, &s)) return -1;
    out->llm = llama_plan_activation_bytes(&c->llm, B, T);
    out->seg_head = seg_head_plan_bytes(&s, max_seg);
    out->decoder = sam_decoder_plan_bytes(&c->dec, max_seg);
    size_t n[AB_N];
    step_sizes(c, B, T, max_seg, n);
    for (int i = 0; i < AB_N; i++) out->step += dev_bytes(n[i], sizeof(float));
    out->step += dev_bytes((size_t)B * T, sizeof(int));   /* d_fid */
    if (rows_mode(c)) out->step += dev_bytes((size_t)max_seg, sizeof(int));   /* d_rows */
    if (!out->llm || !out->decoder) return ar_errorf("anyref: bad decoder or mask-decoder sizes");
    return 0;
}

void anyref_memory(const anyref *m, anyref_mem *out) {
    memset(out, 0, sizeof *out);
    out->llm = llama_activation_bytes(m->llm);
    out->seg_head = seg_head_block_bytes(m->head);
    out->decoder = sam_decoder_activation_bytes(m->dec);
    out->step = m->step_bytes;
}

anyref *anyref_create(const anyref_cfg *c, ar_params *ps, int B, int T, int max_seg) {
    seg_head_cfg s;
    if (B <= 0 || T <= 0 || max_seg <= 0) {
        ar_errorf("anyref: batch %d x %d, max_seg %d must be positive", B, T, max_seg);
        return NULL;
    }
    if (c->dec.n_sparse != 1) {
        ar_errorf("anyref: the mask decoder takes one [SEG] embedding per prompt (n_sparse %d)", c->dec.n_sparse);
        return NULL;
    }
    if (c->max_orig_h <= 0 || c->max_orig_w <= 0) {
        ar_errorf("anyref: max original size %d x %d must be positive", c->max_orig_h, c->max_orig_w);
        return NULL;
    }
    if (fix_seg_cfg(c, &s)) return NULL;
    anyref *m = calloc(1, sizeof *m);
    if (!m) { ar_errorf("anyref: out of host memory"); return NULL; }
    m->c = *c;
    m->c.seg = s;
    m->ps = ps;
    m->B = B; m->T = T; m->max_seg = max_seg; m->Hq = c->llm.heads;
    m->S = c->img_size > 0 ? c->img_size : 16 * c->dec.H;
    m->Hl = 4 * c->dec.H; m->Wl = 4 * c->dec.W;
    m->pc = prompt_cfg(c);
    /* on failure each module's own message stays in ar_error */
    if (!(m->llm = llama_create(&c->llm, ps, B, T)) ||
        !(m->head = seg_head_create(&s, ps, B, T, m->Hq, max_seg)) ||
        !(m->dec = sam_decoder_create(&c->dec, ps, max_seg))) {
        anyref_free(m);
        return NULL;
    }

    int fail = 0;
    size_t n[AB_N];
    step_sizes(c, B, T, max_seg, n);
    float **dst[AB_N] = {&m->pe, &m->dense, &m->logits, &m->dlogits, &m->dlow, &m->scratch, &m->dxf, &m->datt,
                         &m->prow, &m->dprow};
    for (int i = 0; i < AB_N; i++) *dst[i] = dev_alloc(n[i], &fail);
    m->logits_cap = n[AB_LOGITS];
    m->scratch_cap = n[AB_SCRATCH];
    m->seg_b = host_calloc(max_seg, sizeof(int), &fail);
    m->h0 = host_calloc(max_seg, sizeof(int), &fail);
    m->w0 = host_calloc(max_seg, sizeof(int), &fail);
    m->hm = host_calloc(max_seg, sizeof(int), &fail);
    m->wm = host_calloc(max_seg, sizeof(int), &fail);
    m->off = host_calloc(max_seg, sizeof(size_t), &fail);
    m->bce = host_calloc(max_seg, sizeof(float), &fail);
    m->dice = host_calloc(max_seg, sizeof(float), &fail);
    m->gt = host_calloc(max_seg, sizeof(float *), &fail);
    m->first = host_calloc(B, sizeof(int), &fail);
    m->count = host_calloc(B, sizeof(int), &fail);
    m->img = host_calloc(B, sizeof(float *), &fail);
    m->h_fid = host_calloc((size_t)B * T, sizeof(int), &fail);
    m->d_fid = k_malloc((size_t)B * T * sizeof(int));
    if (!m->d_fid) fail = 1;
    for (int i = 0; i < AB_N; i++) m->step_bytes += dev_bytes(n[i], sizeof(float));
    m->step_bytes += dev_bytes((size_t)B * T, sizeof(int));
    if (rows_mode(c)) {
        m->h_rows = host_calloc(max_seg, sizeof(int), &fail);
        if (!(m->d_rows = k_malloc((size_t)max_seg * sizeof(int)))) fail = 1;
        m->step_bytes += dev_bytes((size_t)max_seg, sizeof(int));
    }
    if (fail) {
        ar_errorf("anyref: out of memory for the step buffers");
        anyref_free(m);
        return NULL;
    }
    return m;
}

void anyref_free(anyref *m) {
    if (!m) return;
    if (m->llm) llama_free(m->llm);
    if (m->head) seg_head_free(m->head);
    if (m->dec) sam_decoder_free(m->dec);
    float *dev[] = {m->pe, m->dense, m->logits, m->dlogits, m->dlow, m->scratch, m->dxf, m->datt, m->prow, m->dprow};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) if (dev[i]) k_free(dev[i]);
    free(m->seg_b); free(m->h0); free(m->w0); free(m->hm); free(m->wm); free(m->off); free(m->bce); free(m->dice);
    free(m->gt); free(m->first); free(m->count); free(m->img); free(m->h_fid);
    if (m->d_fid) k_free(m->d_fid);
    if (m->d_rows) k_free(m->d_rows);
    free(m->h_rows);
    free(m);
}

void anyref_refresh_prompt(anyref *m) { m->prompt_ready = 0; }

static int ensure_prompt(anyref *m) {
    if (m->prompt_ready) return 0;
    if (sam_prompt_dense_pe(&m->pc, m->ps, m->pe) || sam_prompt_dense_embed(&m->pc, m->ps, m->dense)) return -1;
    m->prompt_ready = 1;
    return 0;
}

static float fail_nan(anyref *m) {
    m->valid = 0;
    return NAN;
}

float anyref_forward(anyref *m, const anyref_batch *in, uint64_t dropout_seed, anyref_losses *out) {
    const anyref_cfg *c = &m->c;
    const int *tokens = in->tokens, *targets = in->targets, *orig_hw = in->orig_hw;
    const float *const *image_emb = in->image_emb, *const *gt_masks = in->gt_masks;
    m->valid = 0;
    if (ensure_prompt(m)) return fail_nan(m);
    int ce_count = 0;
    float ce;
    m->spliced = 0;
    m->dfeat = in->dfeat;
    m->dimg = in->dimage_emb;
    for (int i = 0; i < m->B * m->T; i++) {
        m->h_fid[i] = tokens[i] < 0 ? -tokens[i] - 1 : -1;
        if (tokens[i] >= 0) continue;
        if (!in->feat || m->h_fid[i] >= in->n_feat) {
            ar_errorf("anyref: sample %d position %d: feature row %d, but the batch has %d feature rows", i / m->T,
                      i % m->T, m->h_fid[i], in->feat ? in->n_feat : 0);
            return fail_nan(m);
        }
        m->spliced = 1;
    }
    if (m->spliced) {
        llama_embed(m->llm, tokens);
        k_upload(m->d_fid, m->h_fid, (size_t)m->B * m->T * sizeof(int));
        embedding_forward(llama_embeds(m->llm), m->d_fid, in->feat, m->B * m->T, c->llm.dim);
        ce = llama_forward_embeds(m->llm, targets, dropout_seed, &ce_count);
    } else {
        ce = llama_forward(m->llm, tokens, targets, m->B, m->T, dropout_seed, &ce_count);
    }
    int n;
    if (rows_mode(c)) {   /* the [SEG] rows' probabilities, recomputed from the last layer's q, k and lse */
        n = seg_head_locate(m->head, tokens, targets);
        if (n > 0) {
            const int *sb = seg_head_sample(m->head), *sp = seg_head_pos(m->head);
            for (int k = 0; k < n; k++) m->h_rows[k] = sb[k] * m->T + sp[k];
            k_upload(m->d_rows, m->h_rows, (size_t)n * sizeof(int));
            if (llama_last_attention_rows(m->llm, m->d_rows, n, m->prow)) return fail_nan(m);
        }
        if (n >= 0) n = seg_head_apply(m->head, llama_final_hidden(m->llm), NULL, m->prow);
    } else {
        const float *att = c->seg.lambda != 0.0f ? llama_last_attention(m->llm) : NULL;
        n = seg_head_forward(m->head, tokens, targets, llama_final_hidden(m->llm), att);
    }
    if (n < 0) return fail_nan(m);
    m->n = n;
    memset(m->count, 0, (size_t)m->B * sizeof(int));
    const int *sb = seg_head_sample(m->head);
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        int b = sb[k];
        if (m->count[b]++ == 0) m->first[b] = k;
        int H0 = orig_hw[2 * b], W0 = orig_hw[2 * b + 1];
        if (H0 <= 0 || W0 <= 0 || H0 > c->max_orig_h || W0 > c->max_orig_w) {
            ar_errorf("anyref: sample %d: original size %d x %d outside 1..%d x 1..%d (anyref_cfg.max_orig_h/w)",
                      b, H0, W0, c->max_orig_h, c->max_orig_w);
            return fail_nan(m);
        }
        int Hm = H0, Wm = W0;
        if (in->mask_hw && in->mask_hw[2 * b] > 0 && in->mask_hw[2 * b + 1] > 0) {
            Hm = in->mask_hw[2 * b];
            Wm = in->mask_hw[2 * b + 1];
        }
        if (Hm > c->max_orig_h || Wm > c->max_orig_w) {
            ar_errorf("anyref: sample %d: mask size %d x %d over the maximum %d x %d (anyref_cfg.max_orig_h/w)",
                      b, Hm, Wm, c->max_orig_h, c->max_orig_w);
            return fail_nan(m);
        }
        if (!gt_masks || !gt_masks[k]) {
            ar_errorf("anyref: no ground-truth mask for [SEG] %d (sample %d)", k, b);
            return fail_nan(m);
        }
        m->seg_b[k] = b; m->h0[k] = H0; m->w0[k] = W0; m->hm[k] = Hm; m->wm[k] = Wm;
        m->off[k] = off; m->gt[k] = gt_masks[k];
        off += (size_t)Hm * Wm;
    }
    m->N = n;
    m->last_b = -1;
    double bce_sum = 0, dice_sum = 0;
    int nsamp = 0;
    const float *seg_out = seg_head_out(m->head);
    for (int b = 0; b < m->B; b++) {
        m->img[b] = image_emb ? image_emb[b] : NULL;
        const int P = m->count[b];
        if (!P) continue;
        if (!m->img[b]) {
            ar_errorf("anyref: sample %d has [SEG]s but no image embedding", b);
            return fail_nan(m);
        }
        const int k0 = m->first[b], H0 = m->h0[k0], W0 = m->w0[k0], Hm = m->hm[k0], Wm = m->wm[k0];
        float *low = sam_decoder_forward(m->dec, m->img[b], m->pe, m->dense,
                                         seg_out + (size_t)k0 * c->dec.dim, P);
        if (!low) return fail_nan(m);
        sam_post_shape sh;
        if (sam_post_init(&sh, P, m->Hl, m->Wl, m->S, H0, W0, Hm, Wm)) return fail_nan(m);
        if (sam_post_scratch_floats(&sh) > m->scratch_cap) {
            ar_errorf("anyref: sam_post scratch %zu floats over the %zu sized at creation",
                      sam_post_scratch_floats(&sh), m->scratch_cap);
            return fail_nan(m);
        }
        sam_post_forward(&sh, m->logits + m->off[k0], m->scratch, low);
        /* Σ_m l_bm / (n_b + 1e-8) * n_b for BCE; / n_b * n_b for Dice */
        double sb_bce = 0, sb_dice = 0;
        const size_t hw = (size_t)Hm * Wm;
        for (int j = 0; j < P; j++) {
            const int k = k0 + j;
            const float *x = m->logits + m->off[k];
            m->bce[k] = bce_logits_forward(x, m->gt[k], hw);
            m->dice[k] = dice_forward(x, m->gt[k], hw);
            sb_bce += m->bce[k];
            sb_dice += m->dice[k];
        }
        bce_sum += sb_bce / (P + 1e-8) * P;
        dice_sum += sb_dice / P * P;
        m->last_b = b;
        nsamp++;
    }
    double bce = n ? bce_sum / (m->N + 1e-8) : 0.0, dice = n ? dice_sum / (m->N + 1e-8) : 0.0;
    double total = (double)c->ce_w * ce + (double)c->bce_w * bce + (double)c->dice_w * dice;
    if (out) {
        out->total = (float)total;
        out->ce = ce;
        out->bce = (float)bce;
        out->dice = (float)dice;
        out->ce_count = ce_count;
        out->n_seg = n;
        out->n_seg_samples = nsamp;
    }
    m->valid = 1;
    return (float)total;
}

/* d input embeddings of the feature positions -> dfeat rows. */
static void splice_backward(anyref *m) {
    if (m->spliced && m->dfeat)
        embedding_backward(m->dfeat, llama_embeds_grad(m->llm), m->d_fid, m->B * m->T, m->c.llm.dim);
}

void anyref_backward(anyref *m, float scale) {
    const anyref_cfg *c = &m->c;
    if (!m->valid) return;
    if (m->n == 0) {
        llama_backward_ex(m->llm, scale * c->ce_w, NULL, NULL);
        splice_backward(m);
        return;
    }
    const int C = c->dec.dim;
    float *dseg = seg_head_dout(m->head);
    k_zero(dseg, (size_t)m->n * C * sizeof(float));
    const float *seg_out = seg_head_out(m->head);
    const double inv_n = 1.0 / (m->N + 1e-8);
    for (int b = m->B - 1; b >= 0; b--) {
        const int P = m->count[b];
        if (!P) continue;
        const int k0 = m->first[b], H0 = m->h0[k0], W0 = m->w0[k0], Hm = m->hm[k0], Wm = m->wm[k0];
        const size_t hw = (size_t)Hm * Wm;
        /* the decoder holds the activations of its last run: re-run it for the others */
        if (b != m->last_b)
            sam_decoder_forward(m->dec, m->img[b], m->pe, m->dense, seg_out + (size_t)k0 * C, P);
        const float wb = (float)((double)scale * c->bce_w * P / (P + 1e-8) * inv_n);
        const float wd = (float)((double)scale * c->dice_w * inv_n);
        float *dx = m->dlogits + m->off[k0];
        k_zero(dx, (size_t)P * hw * sizeof(float));
        for (int j = 0; j < P; j++) {
            const int k = k0 + j;
            const float *x = m->logits + m->off[k];
            bce_logits_backward(dx + (size_t)j * hw, x, m->gt[k], wb, hw);
            dice_backward(dx + (size_t)j * hw, x, m->gt[k], wd, hw);
        }
        sam_post_shape sh;
        sam_post_init(&sh, P, m->Hl, m->Wl, m->S, H0, W0, Hm, Wm);
        k_zero(m->dlow, (size_t)P * m->Hl * m->Wl * sizeof(float));
        sam_post_backward(&sh, m->dlow, m->scratch, dx);
        sam_decoder_backward(m->dec, m->dlow, dseg + (size_t)k0 * C, m->dimg ? m->dimg[b] : NULL);
    }
    /* The decoder's last run is now the first sample's: the next backward without
     * a forward would need the re-run order again. */
    for (int b = 0; b < m->B; b++) if (m->count[b]) { m->last_b = b; break; }
    const int lam = c->seg.lambda != 0.0f;
    k_zero(m->dxf, (size_t)m->B * m->T * c->llm.dim * sizeof(float));
    if (rows_mode(c)) {
        k_zero(m->dprow, (size_t)m->n * m->Hq * m->T * sizeof(float));
        seg_head_backward_rows(m->head, dseg, m->dxf, m->dprow);
        llama_backward_rows(m->llm, scale * c->ce_w, m->dxf, m->d_rows, m->n, m->prow, m->dprow);
        splice_backward(m);
        return;
    }
    if (lam) k_zero(m->datt, (size_t)m->B * m->Hq * m->T * m->T * sizeof(float));
    seg_head_backward(m->head, dseg, m->dxf, lam ? m->datt : NULL);
    llama_backward_ex(m->llm, scale * c->ce_w, m->dxf, lam ? m->datt : NULL);
    splice_backward(m);
}

const float *anyref_mask_logits(const anyref *m, int k, int *Hm, int *Wm) {
    if (!m->valid || k < 0 || k >= m->n) return NULL;
    if (Hm) *Hm = m->hm[k];
    if (Wm) *Wm = m->wm[k];
    return m->logits + m->off[k];
}
const float *anyref_mask_bce(const anyref *m) { return m->bce; }
const float *anyref_mask_dice(const anyref *m) { return m->dice; }
const int *anyref_seg_sample(const anyref *m) { return m->seg_b; }
llama *anyref_llama(anyref *m) { return m->llm; }
void anyref_set_training(anyref *m, int training) { llama_set_training(m->llm, training); }

void anyref_forget_forward(anyref *m) { m->valid = 0; }

int anyref_generate(anyref *m, int *tokens, int *len, int max_new, int stop_id, int pad, const float *feat,
                    int n_feat) {
    gen_cfg g = gen_default_cfg();
    g.max_new = max_new;
    if (stop_id >= 0) { g.stop[0] = stop_id; g.n_stop = 1; }
    return anyref_generate_ex(m, &g, tokens, len, pad, feat, n_feat);
}
