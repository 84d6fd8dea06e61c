/* model/seg_head.c — [SEG] embeddings: refocusing + text_hidden_fcs (see seg_head.h).
 * Shapes: n [SEG]s, D = dim, O = out_dim, Hq heads, B x T tokens. */
#include "model/seg_head.h"
#include "kernels/kernels.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct seg_head {
    seg_head_cfg c;
    int B, T, Hq, max_seg, n;
    const float *w0, *b0, *w2, *b2;     /* text_hidden_fcs.0.0 / .0.2 */
    float *gw0, *gb0, *gw2, *gb2;       /* NULL when frozen */
    const float *xf, *att, *prow;       /* inputs of the last forward (kept for backward; att or prow) */
    float *block;                       /* one k_malloc for everything below */
    float *h, *a1, *r, *out;            /* [max_seg, D] x3, [max_seg, O] */
    float *dh, *da1, *dr, *dout;        /* [max_seg, D] x3, [max_seg, O] */
    int *seg_b, *seg_p, *seg_s;         /* host [max_seg] */
};

static const char *prefix(const seg_head_cfg *c) { return c->prefix ? c->prefix : "model."; }

static void pname(char *dst, size_t n, const seg_head_cfg *c, const char *tail) {
    snprintf(dst, n, "%stext_hidden_fcs.0.%s", prefix(c), tail);
}

int seg_head_declare(const seg_head_cfg *c, ar_params *ps) {
    if (c->dim <= 0 || c->out_dim <= 0)
        return ar_errorf("seg_head: dim %d and out_dim %d must be positive", c->dim, c->out_dim);
    const int D = c->dim, O = c->out_dim, t = c->trainable != 0;
    const float bstd = 1.0f / sqrtf(3.0f * (float)D);
    char nm[112];
    int s2[2] = {D, D}, s1[1] = {D};
    pname(nm, sizeof nm, c, "0.weight");
    if (params_add(ps, nm, 2, s2, t, INIT_KAIMING_UNIFORM, 0.0f)) return -1;
    pname(nm, sizeof nm, c, "0.bias");
    if (params_add(ps, nm, 1, s1, t, INIT_NORMAL, bstd)) return -1;
    s2[0] = O; s1[0] = O;
    pname(nm, sizeof nm, c, "2.weight");
    if (params_add(ps, nm, 2, s2, t, INIT_KAIMING_UNIFORM, 0.0f)) return -1;
    pname(nm, sizeof nm, c, "2.bias");
    return params_add(ps, nm, 1, s1, t, INIT_NORMAL, bstd);
}

/* Binds one tensor, checking its numel. */
static int bind(const seg_head_cfg *c, ar_params *ps, const char *tail, size_t numel, const float **w, float **g) {
    char nm[112];
    pname(nm, sizeof nm, c, tail);
    const ar_param *p = params_find(ps, nm);
    if (!p || p->numel != numel)
        return ar_errorf("seg_head: %s %s", nm, p ? "has the wrong shape" : "is not declared");
    *w = params_w(ps, nm);
    *g = params_g(ps, nm);
    return 0;
}

/* h, a1, r, dh, da1, dr [max_seg, dim]; out, dout [max_seg, out_dim]. */
size_t seg_head_plan_bytes(const seg_head_cfg *c, int max_seg) {
    const size_t D = (size_t)c->dim, O = (size_t)c->out_dim, M = (size_t)(max_seg > 0 ? max_seg : 0);
    return (6 * M * D + 2 * M * O) * sizeof(float);
}

seg_head *seg_head_create(const seg_head_cfg *c, ar_params *ps, int B, int T, int Hq, int max_seg) {
    if (B <= 0 || T <= 0 || Hq <= 0 || max_seg <= 0 || c->dim <= 0 || c->out_dim <= 0) {
        ar_errorf("seg_head: batch %dx%d, %d heads, max_seg %d, dim %d, out_dim %d must be positive", B, T, Hq,
                  max_seg, c->dim, c->out_dim);
        return NULL;
    }
    seg_head *h = calloc(1, sizeof *h);
    if (!h) { ar_errorf("seg_head: out of host memory"); return NULL; }
    h->c = *c;
    h->B = B; h->T = T; h->Hq = Hq; h->max_seg = max_seg;
    const size_t D = (size_t)c->dim, O = (size_t)c->out_dim, M = (size_t)max_seg;
    if (bind(c, ps, "0.weight", D * D, &h->w0, &h->gw0) || bind(c, ps, "0.bias", D, &h->b0, &h->gb0) ||
        bind(c, ps, "2.weight", O * D, &h->w2, &h->gw2) || bind(c, ps, "2.bias", O, &h->b2, &h->gb2)) {
        free(h);
        return NULL;
    }
    h->block = k_malloc(seg_head_plan_bytes(c, max_seg));
    h->seg_b = malloc(3 * M * sizeof(int));
    if (!h->block || !h->seg_b) {
        ar_errorf("seg_head: out of memory for %d [SEG]s of width %zu", max_seg, D);
        seg_head_free(h);
        return NULL;
    }
    float *q = h->block;
    h->h = q; q += M * D;
    h->a1 = q; q += M * D;
    h->r = q; q += M * D;
    h->dh = q; q += M * D;
    h->da1 = q; q += M * D;
    h->dr = q; q += M * D;
    h->out = q; q += M * O;
    h->dout = q;
    h->seg_p = h->seg_b + M;
    h->seg_s = h->seg_p + M;
    return h;
}

size_t seg_head_block_bytes(const seg_head *h) { return seg_head_plan_bytes(&h->c, h->max_seg); }

void seg_head_free(seg_head *h) {
    if (!h) return;
    k_free(h->block);
    free(h->seg_b);
    free(h);
}

int seg_head_find(int seg_token, const int *tokens, const int *targets, int B, int T,
                  int *seg_b, int *seg_p, int *seg_s, int max) {
    int n = 0;
    for (int b = 0; b < B; b++) {
        const int *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
        int s = -1;
        for (int t = 0; t < T && s < 0; t++) if (tgt[t] > 0) s = t;
        for (int t = 0; t < T; t++) {
            if (tok[t] != seg_token) continue;
            if (t == 0) return ar_errorf("seg_head: sample %d starts with [SEG] (nothing predicts it)", b);
            if (n == max) return ar_errorf("seg_head: more than %d [SEG] tokens in the batch", max);
            seg_b[n] = b;
            seg_p[n] = t - 1;
            seg_s[n] = s >= 0 && s < t - 1 ? s : t - 1;   /* empty span: s = p */
            n++;
        }
    }
    return n;
}

int seg_head_locate(seg_head *h, const int *tokens, const int *targets) {
    h->n = 0;
    int n = seg_head_find(h->c.seg_token, tokens, targets, h->B, h->T, h->seg_b, h->seg_p, h->seg_s, h->max_seg);
    if (n < 0) return -1;
    h->n = n;
    return n;
}

int seg_head_apply(seg_head *h, const float *xf, const float *att, const float *prow) {
    const int T = h->T, Hq = h->Hq, D = h->c.dim, O = h->c.out_dim, n = h->n;
    if (h->c.lambda != 0.0f && !att && !prow)
        return ar_errorf("seg_head: refocusing (lambda %g) needs the attention", (double)h->c.lambda);
    h->xf = xf;
    h->att = att;
    h->prow = prow;
    if (n == 0) return 0;
    const size_t TD = (size_t)T * D, HTT = (size_t)Hq * T * T, HT = (size_t)Hq * T;
    for (int k = 0; k < n; k++) {
        int b = h->seg_b[k], p = h->seg_p[k], s = h->c.lambda != 0.0f ? h->seg_s[k] : p;
        if (prow)
            refocus_row_forward(h->h + (size_t)k * D, xf + b * TD, prow + k * HT, p, s, h->c.lambda, T, T, Hq, D);
        else
            refocus_forward(h->h + (size_t)k * D, xf + b * TD, att ? att + b * HTT : NULL, p, s, h->c.lambda, T, T,
                            Hq, D);
    }
    linear_forward(h->a1, h->h, h->w0, h->b0, n, D, D);
    relu_forward(h->r, h->a1, (size_t)n * D);
    linear_forward(h->out, h->r, h->w2, h->b2, n, D, O);
    return n;
}

int seg_head_forward(seg_head *h, const int *tokens, const int *targets, const float *xf, const float *att) {
    if (seg_head_locate(h, tokens, targets) < 0) return -1;
    return seg_head_apply(h, xf, att, NULL);
}

/* Backward into dxf and the gradient on the probabilities the forward read:
 * datt [B, Hq, T, T] (full) or dprow [n, Hq, T] (rows). */
static void backward(seg_head *h, const float *dout, float *dxf, float *datt, float *dprow) {
    const int n = h->n, T = h->T, Hq = h->Hq, D = h->c.dim, O = h->c.out_dim;
    if (n == 0) return;
    const size_t nD = (size_t)n * D * sizeof(float);
    k_zero(h->dr, nD);
    linear_backward(h->dr, h->gw2, h->gb2, dout, h->r, h->w2, n, D, O);
    k_zero(h->da1, nD);
    relu_backward(h->da1, h->dr, h->a1, (size_t)n * D);
    if (!dxf && !datt && !dprow) {   /* only the fcs' parameters want gradients */
        linear_backward(NULL, h->gw0, h->gb0, h->da1, h->h, h->w0, n, D, D);
        return;
    }
    k_zero(h->dh, nD);
    linear_backward(h->dh, h->gw0, h->gb0, h->da1, h->h, h->w0, n, D, D);
    const size_t TD = (size_t)T * D, HTT = (size_t)Hq * T * T, HT = (size_t)Hq * T;
    for (int k = 0; k < n; k++) {
        int b = h->seg_b[k], p = h->seg_p[k], s = h->c.lambda != 0.0f ? h->seg_s[k] : p;
        if (h->prow)
            refocus_row_backward(dxf ? dxf + b * TD : NULL, dprow ? dprow + k * HT : NULL, h->dh + (size_t)k * D,
                                 h->xf + b * TD, h->prow + k * HT, p, s, h->c.lambda, T, T, Hq, D);
        else
            refocus_backward(dxf ? dxf + b * TD : NULL, datt ? datt + b * HTT : NULL, h->dh + (size_t)k * D,
                             h->xf + b * TD, h->att ? h->att + b * HTT : NULL, p, s, h->c.lambda, T, T, Hq, D);
    }
}

void seg_head_backward(seg_head *h, const float *dout, float *dxf, float *datt) { backward(h, dout, dxf, datt, NULL); }
void seg_head_backward_rows(seg_head *h, const float *dout, float *dxf, float *dprow) {
    backward(h, dout, dxf, NULL, dprow);
}

const float *seg_head_out(const seg_head *h) { return h->out; }
float *seg_head_dout(seg_head *h) { return h->dout; }
const int *seg_head_sample(const seg_head *h) { return h->seg_b; }
const int *seg_head_pos(const seg_head *h) { return h->seg_p; }
const int *seg_head_start(const seg_head *h) { return h->seg_s; }
int seg_head_count(const seg_head *h) { return h->n; }
