/* model/generate.c — greedy, sampling and beam-search generation over the
 * AnyRef decoder, with or without the KV cache; see model/generate.h.
 * Host-side bookkeeping (token rows, beam scores, hypotheses) is plain C; the
 * decoder runs through model/llama.h only (full forwards, llama_step), so it
 * works on either backend. Shapes: B rows of T tokens, vocabulary V. */
#include "model/generate.h"
#include "model/llama.h"
#include "kernels/kernels.h"
#include "core/error.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

gen_cfg gen_default_cfg(void) {
    gen_cfg g;
    memset(&g, 0, sizeof g);
    g.strategy = GEN_GREEDY;
    g.max_new = 32;
    g.beam_width = 1;
    g.length_penalty = 1.0f;
    g.temperature = 1.0f;
    g.top_p = 1.0f;
    return g;
}

int gen_parse_strategy(const char *s, int *strategy) {
    static const char *const names[] = {"greedy", "beam", "sample"};
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, names[i])) { *strategy = i; return 0; }
    return ar_errorf("unknown generation strategy '%s' (expected greedy, beam or sample)", s ? s : "(null)");
}

/* ---- the decoder: next-token logits of every active row ---------------- */
typedef struct {
    llama *m;
    int B, T, V, cached, primed;
    const float *feat;
    int n_feat;
    int *tok, *len;      /* host [B*T], [B]: the rows being generated */
    float *logits;       /* host [B*V] */
    int *stok, *spos;    /* host [B]: llama_step inputs */
} dec_run;

/* logits[b] = the logits predicting position len[b] of each row with active[b]. */
static int next_logits(dec_run *r, const int *active) {
    const int B = r->B, T = r->T, V = r->V;
    if (!r->cached || !r->primed) {
        if (llama_embed_feat(r->m, r->tok, r->feat, r->n_feat)) return -1;
        llama_forward_embeds(r->m, NULL, 0, NULL);
        const float *lg = llama_logits(r->m);
        for (int b = 0; b < B; b++)
            if (active[b])
                k_download(r->logits + (size_t)b * V, lg + ((size_t)b * T + r->len[b] - 1) * V, (size_t)V * sizeof(float));
        r->primed = r->cached;   /* that forward filled the cache (evaluation mode) */
        return 0;
    }
    for (int b = 0; b < B; b++) {
        r->spos[b] = active[b] ? r->len[b] - 1 : -1;
        r->stok[b] = active[b] ? r->tok[(size_t)b * T + r->len[b] - 1] : 0;
    }
    if (llama_step(r->m, r->stok, r->spos, r->feat, r->n_feat)) return -1;
    k_download(r->logits, llama_step_logits(r->m), (size_t)B * V * sizeof(float));
    return 0;
}

static int argmax(const float *x, int V) {
    int best = 0;
    for (int v = 1; v < V; v++) if (x[v] > x[best]) best = v;
    return best;
}

static int is_stop(const gen_cfg *g, int t) {
    for (int i = 0; i < g->n_stop; i++) if (g->stop[i] == t) return 1;
    return 0;
}

/* ---- sampling ---------------------------------------------------------- */
static const float *g_sort_x;   /* qsort has no context argument; one sort at a time */
static int by_logit_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float xi = g_sort_x[i], xj = g_sort_x[j];
    if (xi != xj) return xi > xj ? -1 : 1;
    return (i > j) - (i < j);
}

int gen_sample_token(const float *logits, int V, float temperature, float top_p, uint64_t seed, int row, int step) {
    if (!(temperature > 0.0f)) return argmax(logits, V);
    double *p = malloc((size_t)V * sizeof *p);
    int *idx = malloc((size_t)V * sizeof *idx);
    if (!p || !idx) { free(p); free(idx); return ar_errorf("gen_sample_token: out of memory"); }
    double mx = logits[argmax(logits, V)], sum = 0;
    for (int v = 0; v < V; v++) { p[v] = exp(((double)logits[v] - mx) / temperature); sum += p[v]; }
    for (int v = 0; v < V; v++) { p[v] /= sum; idx[v] = v; }
    int keep = V;
    if (top_p < 1.0f) {   /* most probable first (the order of the logits; lower id on ties) */
        g_sort_x = logits;
        qsort(idx, (size_t)V, sizeof *idx, by_logit_desc);
        double cum = 0;
        keep = 0;
        do cum += p[idx[keep++]]; while (keep < V && cum < (double)top_p);
    }
    double mass = 0;
    for (int k = 0; k < keep; k++) mass += p[idx[k]];
    ar_rng r;
    rng_seed(&r, rng_derive(rng_derive(seed, (uint64_t)row), (uint64_t)step));
    double u = rng_uniform(&r) * mass, acc = 0;
    int tok = idx[keep - 1];
    for (int k = 0; k < keep; k++) {
        acc += p[idx[k]];
        if (u < acc) { tok = idx[k]; break; }
    }
    free(p);
    free(idx);
    return tok;
}

/* ---- greedy and sampling ---------------------------------------------- */
static int run_tokenwise(dec_run *r, const gen_cfg *g, int *active) {
    const int B = r->B, T = r->T, V = r->V;
    for (int b = 0; b < B; b++) active[b] = r->len[b] > 0 && r->len[b] < T;
    for (int step = 0; step < g->max_new; step++) {
        int any = 0;
        for (int b = 0; b < B; b++) any |= active[b];
        if (!any) break;
        if (next_logits(r, active)) return -1;
        for (int b = 0; b < B; b++) {
            if (!active[b]) continue;
            const float *lg = r->logits + (size_t)b * V;
            int t = g->strategy == GEN_SAMPLE ? gen_sample_token(lg, V, g->temperature, g->top_p, g->seed, b, step)
                                              : argmax(lg, V);
            if (t < 0) return -1;
            r->tok[(size_t)b * T + r->len[b]++] = t;
            if (is_stop(g, t) || r->len[b] >= T) active[b] = 0;
        }
    }
    return 0;
}

/* ---- beam search -------------------------------------------------------- */
typedef struct { double score; int beam, tok; } cand;
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->beam != y->beam) return x->beam - y->beam;
    return x->tok - y->tok;
}

typedef struct {         /* one sample's beams */
    int row0;            /* first of its W rows in the work batch */
    int src_row;         /* its row in the caller's batch */
    int plen;            /* prompt length */
    int live;            /* live beams (rows row0 .. row0+live-1) */
    int done;
    double *bscore;      /* [W] sum of log-probabilities of the live beams */
    int nhyp;            /* finished hypotheses, at most W */
    double *hscore;      /* [W+1] */
    int *hlen;           /* [W+1] generated length */
    int *htok;           /* [(W+1) * T] generated tokens */
} beam_sample;

/* BeamHypotheses.add: keep the W best. */
static void hyp_add(beam_sample *s, int W, int T, const int *gen, int glen, double sum, float lp) {
    double score = sum / pow((double)glen, (double)lp);
    if (s->nhyp == W) {
        int worst = 0;
        for (int k = 1; k < s->nhyp; k++) if (s->hscore[k] < s->hscore[worst]) worst = k;
        if (!(score > s->hscore[worst])) return;
        /* drop the worst, keeping the order of the others */
        for (int k = worst; k + 1 < s->nhyp; k++) {
            s->hscore[k] = s->hscore[k + 1]; s->hlen[k] = s->hlen[k + 1];
            memcpy(s->htok + (size_t)k * T, s->htok + (size_t)(k + 1) * T, (size_t)T * sizeof(int));
        }
        s->nhyp--;
    }
    s->hscore[s->nhyp] = score;
    s->hlen[s->nhyp] = glen;
    memcpy(s->htok + (size_t)s->nhyp * T, gen, (size_t)glen * sizeof(int));
    s->nhyp++;
}

static double hyp_worst(const beam_sample *s) {
    double w = s->hscore[0];
    for (int k = 1; k < s->nhyp; k++) if (s->hscore[k] < w) w = s->hscore[k];
    return w;
}

/* The live beams join the hypotheses (HF finalize). */
static void beam_finalize(dec_run *r, beam_sample *s, int W, float lp) {
    const int T = r->T;
    for (int j = 0; j < s->live; j++) {
        const int row = s->row0 + j, glen = r->len[row] - s->plen;
        if (glen > 0) hyp_add(s, W, T, r->tok + (size_t)row * T + s->plen, glen, s->bscore[j], lp);
    }
    s->done = 1;
}

/* Cache rows dst[q] <- src[q] for q < n (positions 0..len-1), any overlap:
 * copies rows no pending copy still reads first, breaks cycles through the spare row B. */
static void permute_cache(llama *m, int *dst, int *src, int n, int len, int spare) {
    int *pend = calloc((size_t)n, sizeof *pend);
    if (!pend) return;
    int left = 0;
    for (int q = 0; q < n; q++) { pend[q] = dst[q] != src[q]; left += pend[q]; }
    while (left) {
        int progressed = 0;
        for (int q = 0; q < n; q++) {
            if (!pend[q]) continue;
            int read = 0;
            for (int o = 0; o < n; o++) if (o != q && pend[o] && src[o] == dst[q]) read = 1;
            if (read) continue;
            llama_cache_copy_row(m, dst[q], src[q], len);
            pend[q] = 0; left--; progressed = 1;
        }
        if (progressed || !left) continue;
        int q0 = -1;   /* a cycle: park one source in the spare row */
        for (int q = 0; q < n && q0 < 0; q++) if (pend[q]) q0 = q;
        const int park = dst[q0];
        llama_cache_copy_row(m, spare, park, len);
        for (int o = 0; o < n; o++) if (pend[o] && src[o] == park) src[o] = spare;
    }
    free(pend);
}

/* One step of every undone sample of the group: candidates, hypotheses, new beams. */
static int beam_step(dec_run *r, const gen_cfg *g, beam_sample *S, int ns, int step, int *active, cand *cands,
                     double *lp_row, int *topk, int *newtok, int *rowbuf, int *dst, int *srcs) {
    const int T = r->T, V = r->V, W = g->beam_width;
    const int K = W + g->n_stop < V ? W + g->n_stop : V;   /* per beam: enough for W non-stop and rank < W */
    memset(active, 0, (size_t)r->B * sizeof(int));
    for (int i = 0; i < ns; i++)
        if (!S[i].done) for (int j = 0; j < S[i].live; j++) active[S[i].row0 + j] = 1;
    if (next_logits(r, active)) return -1;
    for (int i = 0; i < ns; i++) {
        beam_sample *s = &S[i];
        if (s->done) continue;
        const int cur = r->len[s->row0], glen = cur + 1 - s->plen;
        int nc = 0;
        for (int j = 0; j < s->live; j++) {
            const float *x = r->logits + (size_t)(s->row0 + j) * V;
            double mx = x[argmax(x, V)], se = 0;
            for (int v = 0; v < V; v++) se += exp((double)x[v] - mx);
            const double lse = mx + log(se);
            for (int v = 0; v < V; v++) lp_row[v] = (double)x[v] - lse;
            /* the K best tokens of this beam (insertion into a sorted list; lower id first on ties) */
            int nk = 0;
            for (int v = 0; v < V; v++) {
                if (nk == K && !(lp_row[v] > lp_row[topk[K - 1]])) continue;
                int at = nk < K ? nk++ : K - 1;
                while (at > 0 && lp_row[v] > lp_row[topk[at - 1]]) { topk[at] = topk[at - 1]; at--; }
                topk[at] = v;
            }
            for (int k = 0; k < nk; k++)
                cands[nc++] = (cand){s->bscore[j] + lp_row[topk[k]], j, topk[k]};
        }
        qsort(cands, (size_t)nc, sizeof *cands, cand_cmp);
        int nb = 0;
        for (int rk = 0; rk < nc && nb < W; rk++) {
            const cand *c = &cands[rk];
            const int *beam = r->tok + (size_t)(s->row0 + c->beam) * T + s->plen;
            if (is_stop(g, c->tok)) {
                if (rk >= W) continue;
                memcpy(rowbuf, beam, (size_t)(glen - 1) * sizeof(int));
                rowbuf[glen - 1] = c->tok;
                hyp_add(s, W, T, rowbuf, glen, c->score, g->length_penalty);
                continue;
            }
            srcs[nb] = c->beam; newtok[nb] = c->tok; lp_row[nb] = c->score;   /* lp_row reused: new scores */
            nb++;
        }
        if (s->nhyp >= W && hyp_worst(s) >= cands[0].score / pow((double)glen, (double)g->length_penalty)) {
            s->done = 1;
            continue;
        }
        /* the new beams: token rows (host) and cache rows follow their source */
        for (int q = 0; q < nb; q++)
            memcpy(rowbuf + (size_t)q * T, r->tok + (size_t)(s->row0 + srcs[q]) * T, (size_t)cur * sizeof(int));
        for (int q = 0; q < nb; q++) {
            int *row = r->tok + (size_t)(s->row0 + q) * T;
            memcpy(row, rowbuf + (size_t)q * T, (size_t)cur * sizeof(int));
            row[cur] = newtok[q];
            r->len[s->row0 + q] = cur + 1;
            s->bscore[q] = lp_row[q];
        }
        for (int q = nb; q < s->live; q++) r->len[s->row0 + q] = 0;   /* a beam that found no successor */
        if (r->cached && r->primed) {
            for (int q = 0; q < nb; q++) { dst[q] = s->row0 + q; srcs[q] += s->row0; }
            permute_cache(r->m, dst, srcs, nb, cur, r->B);
        }
        s->live = nb;
        if (nb == 0) { s->done = 1; continue; }
        if (step + 1 >= g->max_new || cur + 1 >= T) beam_finalize(r, s, W, g->length_penalty);
    }
    return 0;
}

static int run_beam(dec_run *r, const gen_cfg *g, int *tokens, int *len, int pad) {
    const int B = r->B, T = r->T, V = r->V, W = g->beam_width, G = B / W;
    int rc = -1;
    int *order = malloc((size_t)B * sizeof(int));
    beam_sample *S = calloc((size_t)G, sizeof *S);
    int K = W + g->n_stop < V ? W + g->n_stop : V;
    cand *cands = malloc((size_t)W * K * sizeof *cands);
    double *lp_row = malloc((size_t)(V > W ? V : W) * sizeof(double));
    int *topk = malloc((size_t)K * sizeof(int));
    int *newtok = malloc((size_t)W * sizeof(int)), *dst = malloc((size_t)W * sizeof(int));
    int *srcs = malloc((size_t)W * sizeof(int)), *active = malloc((size_t)B * sizeof(int));
    int *rowbuf = malloc((size_t)W * T * sizeof(int));
    int fail = !order || !S || !cands || !lp_row || !topk || !newtok || !dst || !srcs || !active || !rowbuf;
    for (int i = 0; i < G && !fail; i++) {
        S[i].bscore = malloc((size_t)W * sizeof(double));
        S[i].hscore = malloc((size_t)(W + 1) * sizeof(double));
        S[i].hlen = malloc((size_t)(W + 1) * sizeof(int));
        S[i].htok = malloc((size_t)(W + 1) * T * sizeof(int));
        fail |= !S[i].bscore || !S[i].hscore || !S[i].hlen || !S[i].htok;
    }
    if (fail) { ar_errorf("generate: out of memory for beam search"); goto out; }
    int n = 0;
    for (int b = 0; b < B; b++) if (len[b] > 0 && len[b] < T) order[n++] = b;
    for (int g0 = 0; g0 < n; g0 += G) {
        const int ns = n - g0 < G ? n - g0 : G;
        for (size_t i = 0; i < (size_t)B * T; i++) r->tok[i] = pad;
        memset(r->len, 0, (size_t)B * sizeof(int));
        for (int i = 0; i < ns; i++) {
            beam_sample *s = &S[i];
            s->src_row = order[g0 + i]; s->row0 = i * W; s->plen = len[s->src_row];
            s->live = 1; s->done = 0; s->nhyp = 0; s->bscore[0] = 0.0;
            for (int j = 0; j < W; j++) {   /* every beam row holds the prompt (the prefill fills them all) */
                memcpy(r->tok + (size_t)(s->row0 + j) * T, tokens + (size_t)s->src_row * T, (size_t)s->plen * sizeof(int));
                r->len[s->row0 + j] = s->plen;
            }
        }
        r->primed = 0;
        for (int step = 0; step < g->max_new; step++) {
            int undone = 0;
            for (int i = 0; i < ns; i++) undone += !S[i].done;
            if (!undone) break;
            if (beam_step(r, g, S, ns, step, active, cands, lp_row, topk, newtok, rowbuf, dst, srcs)) goto out;
        }
        for (int i = 0; i < ns; i++) {
            beam_sample *s = &S[i];
            if (!s->done) beam_finalize(r, s, W, g->length_penalty);
            int best = -1;
            for (int k = 0; k < s->nhyp; k++) if (best < 0 || s->hscore[k] > s->hscore[best]) best = k;
            int *row = tokens + (size_t)s->src_row * T;
            if (best >= 0) {
                memcpy(row + s->plen, s->htok + (size_t)best * T, (size_t)s->hlen[best] * sizeof(int));
                len[s->src_row] = s->plen + s->hlen[best];
            }
        }
    }
    rc = 0;
out:
    for (int i = 0; S && i < G; i++) { free(S[i].bscore); free(S[i].hscore); free(S[i].hlen); free(S[i].htok); }
    free(S); free(order); free(cands); free(lp_row); free(topk); free(newtok); free(dst); free(srcs);
    free(active); free(rowbuf);
    return rc;
}

int anyref_generate_ex(anyref *am, const gen_cfg *g, int *tokens, int *len, int pad, const float *feat, int n_feat) {
    llama *m = anyref_llama(am);
    const int B = llama_batch(m), T = llama_seq(m), V = llama_config(m)->vocab;
    if (g->strategy != GEN_GREEDY && g->strategy != GEN_BEAM && g->strategy != GEN_SAMPLE)
        return ar_errorf("generate: unknown strategy %d", g->strategy);
    if (g->n_stop < 0 || g->n_stop > GEN_MAX_STOP)
        return ar_errorf("generate: %d stop ids (at most %d)", g->n_stop, GEN_MAX_STOP);
    if (g->strategy == GEN_BEAM && (g->beam_width < 1 || g->beam_width > B))
        return ar_errorf("generate: beam width %d outside 1..%d (the batch size: the beams of a sample occupy "
                         "rows of the batch)", g->beam_width, B);
    if (g->max_new < 0) return ar_errorf("generate: max_new %d is negative", g->max_new);
    for (int b = 0; b < B; b++) {
        for (int t = len[b] > 0 ? len[b] : 0; t < T; t++) tokens[(size_t)b * T + t] = pad;
    }
    dec_run r = {.m = m, .B = B, .T = T, .V = V, .cached = !g->no_cache, .feat = feat, .n_feat = n_feat};
    int rc = -1;
    const int was_training = llama_training(m);
    if (r.cached && llama_cache_enable(m)) return -1;
    r.logits = malloc((size_t)B * V * sizeof(float));
    r.stok = malloc((size_t)B * sizeof(int));
    r.spos = malloc((size_t)B * sizeof(int));
    int *active = malloc((size_t)B * sizeof(int));
    if (!r.logits || !r.stok || !r.spos || !active) { ar_errorf("generate: out of memory"); goto out; }
    llama_set_training(m, 0);
    if (g->strategy == GEN_BEAM) {
        r.tok = malloc((size_t)B * T * sizeof(int));
        r.len = malloc((size_t)B * sizeof(int));
        if (!r.tok || !r.len) { ar_errorf("generate: out of memory"); goto out; }
        rc = run_beam(&r, g, tokens, len, pad);
    } else {
        r.tok = tokens;
        r.len = len;
        rc = run_tokenwise(&r, g, active);
    }
    llama_set_training(m, was_training);
out:
    if (g->strategy == GEN_BEAM) { free(r.tok); free(r.len); }
    free(r.logits); free(r.stok); free(r.spos); free(active);
    anyref_forget_forward(am);   /* the activations are not a training forward's */
    return rc;
}
