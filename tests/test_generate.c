/* tests/test_generate.c — generation (model/generate.c) and the KV cache
 * (model/llama.c llama_step) on tiny random AnyRef models (tests/tiny_anyref.h:
 * LLaMA dim 16, 2 layers, 2 heads / 1 kv head (GQA), LoRA rank 2 on all seven
 * projections with dropout 0.1 — generation must switch it off — every LLM
 * weight and LoRA factor redrawn with a large std so the logits are O(1)).
 *  1. cached greedy == uncached greedy token for token, 12 random batches of 6
 *     rows (prompt lengths 0..7, feature rows as negative ids in some rows, one
 *     empty row), generating to T (no stop id) and with a stop id;
 *     llama_step logits against the full-forward logits at the same positions
 *     (max relative error reported, bound 1e-4);
 *  2. beam width 1 == greedy exactly (cached and uncached, with stop ids);
 *     beam width 3 cached == uncached (samples in groups of B / W);
 *  3. beam search against exhaustive enumeration: vocab 4 (one stop id), 4 new
 *     tokens, width 27 = every live prefix, length penalty 1, 0 and 2: same
 *     best sequence as the enumeration of every continuation (scores
 *     sum log p / generated_len^lp from full-forward log-softmax in double);
 *  4. sampling: temperature 0 and top_p 1e-6 give greedy; a fixed seed
 *     reproduces; a row's tokens do not change when the other rows change or
 *     are removed; cached == uncached; 200000 draws of gen_sample_token at
 *     temperature 0.7 / top_p 0.8 match softmax(logits / 0.7) restricted to an
 *     independently computed nucleus (chi-square far below its tail, no draw
 *     outside the nucleus); generation's first tokens equal gen_sample_token's;
 *  5. errors: beam width over B or 0, unknown strategy strings.
 * Depends on model/generate.h, model/anyref.h, tests/tiny_anyref.h. */
#include "kernels/kernels.h"
#include "model/generate.h"
#include "model/llama.h"
#include "core/error.h"
#include "core/rng.h"
#include "tests/testlib.h"
#include "tests/tiny_anyref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PFX "generate "
enum { DM = 16, NFEAT = 5 };

typedef struct {
    ar_params ps;
    anyref *m;
    int V, T, B;
    float *feat;   /* [NFEAT, DM] backend */
} model;

static int mk_ex(model *md, int V, int T, int B, uint64_t seed, int bf16, int flash) {
    memset(md, 0, sizeof *md);
    md->V = V; md->T = T; md->B = B;
    anyref_cfg c = tiny_anyref_cfg(V, T, V - 1, 0.0f, 0.1f);
    c.llm.frozen_half = bf16 ? LLAMA_FROZEN_BF16 : 0;   /* model.frozen_weights = bf16 */
    c.llm.flash_attention = flash;   /* model.attention = flash (the prefill's full forward) */
    params_init_empty(&md->ps);
    if (anyref_declare(&c, &md->ps) || params_alloc(&md->ps)) return -1;
    params_randomize(&md->ps, seed);
    for (int i = 0; i < md->ps.n; i++) {   /* O(1) logits: larger LLM weights, non-zero LoRA */
        const ar_param *p = &md->ps.p[i];
        int llm = !strncmp(p->name, "model.", 6) || !strncmp(p->name, "lm_head", 7);
        if (!llm || strstr(p->name, "norm")) continue;
        float std = strstr(p->name, "lora") ? 0.3f : strstr(p->name, "embed") || strstr(p->name, "lm_head") ? 0.6f : 0.35f;
        float *h = t_alloc(p->numel);   /* through k_upload: the test runs on either backend */
        t_fill_normal(h, p->numel, std, seed * 131 + (uint64_t)i);
        params_upload(&md->ps, p, h);
        free(h);
    }
    if (!(md->m = anyref_create(&c, &md->ps, B, T, 1))) return -1;
    float h[NFEAT * DM];
    t_fill_normal(h, NFEAT * DM, 1.0f, seed + 7);
    md->feat = k_malloc(sizeof h);
    k_upload(md->feat, h, sizeof h);
    return 0;
}

static int mk(model *md, int V, int T, int B, uint64_t seed) { return mk_ex(md, V, T, B, seed, 0, 0); }

static void rm(model *md) {
    anyref_free(md->m);
    params_free(&md->ps);
    k_free(md->feat);
}

/* Random prompts: row b gets len 1..maxlen (row `empty` none), ids 0..V-2,
 * some positions of rows 1 and 3 feature rows. */
static void prompts(const model *md, ar_rng *r, int *tok, int *len, int maxlen, int empty) {
    for (int b = 0; b < md->B; b++) {
        len[b] = b == empty ? 0 : 1 + (int)rng_below(r, (uint64_t)maxlen);
        for (int t = 0; t < md->T; t++) tok[b * md->T + t] = (int)rng_below(r, (uint64_t)md->V - 1);
        if ((b == 1 || b == 3) && len[b] > 1) {
            tok[b * md->T] = -1 - (int)rng_below(r, NFEAT);
            tok[b * md->T + len[b] / 2] = -1 - (int)rng_below(r, NFEAT);
        }
    }
}

static int same(const int *a, const int *la, const int *b, const int *lb, int B, int T) {
    return !memcmp(a, b, (size_t)B * T * sizeof(int)) && !memcmp(la, lb, (size_t)B * sizeof(int));
}

/* generate a copy of (tok, len) into (out, olen) */
static int gen(model *md, const gen_cfg *g, const int *tok, const int *len, int *out, int *olen) {
    memcpy(out, tok, (size_t)md->B * md->T * sizeof(int));
    memcpy(olen, len, (size_t)md->B * sizeof(int));
    return anyref_generate_ex(md->m, g, out, olen, 0, md->feat, NFEAT);
}

/* ---- 1 + 2 ------------------------------------------------------------- */
static void test_cache_greedy_beam(void) {
    model md;
    enum { V = 32, T = 24, B = 6 };
    if (mk(&md, V, T, B, 5)) { t_fail(PFX "setup", "%s", ar_error()); return; }
    int tok[B * T], len[B], a[B * T], la[B], c[B * T], lc[B];
    ar_rng r;
    rng_seed(&r, 99);
    int ok = 1, total = 0, batches = 0, stopped = 0;
    gen_cfg g = gen_default_cfg();
    for (int it = 0; it < 12 && ok; it++) {
        prompts(&md, &r, tok, len, 7, it % B);
        g.max_new = T;
        g.n_stop = it % 2;
        g.stop[0] = (int)rng_below(&r, V - 1);
        g.no_cache = 1;
        ok &= gen(&md, &g, tok, len, a, la) == 0;
        g.no_cache = 0;
        ok &= gen(&md, &g, tok, len, c, lc) == 0;
        ok &= same(a, la, c, lc, B, T);
        for (int b = 0; b < B; b++) { total += la[b] - len[b]; stopped += la[b] < T && la[b] > 0; }
        batches++;
    }
    t_check(ok, PFX "cached greedy == uncached greedy",
            "%d batches of %d rows (feature rows, an empty row, GQA, LoRA x7), %d tokens generated, %d rows ended by a stop id",
            batches, B, total, stopped);

    /* llama_step logits vs the full forward at the same positions */
    llama *lm = anyref_llama(md.m);
    llama_set_training(lm, 0);
    prompts(&md, &r, tok, len, 6, -1);
    g = gen_default_cfg();
    g.max_new = T;
    gen(&md, &g, tok, len, a, la);
    float *full = malloc((size_t)B * T * V * sizeof(float)), *step = malloc((size_t)B * V * sizeof(float));
    llama_embed_feat(lm, a, md.feat, NFEAT);
    llama_forward_embeds(lm, NULL, 0, NULL);
    k_download(full, llama_logits(lm), (size_t)B * T * V * sizeof(float));
    int pre[B * T];   /* prompts only, pad after: the prefill */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pre[b * T + t] = t < len[b] ? a[b * T + t] : 0;
    llama_embed_feat(lm, pre, md.feat, NFEAT);
    llama_forward_embeds(lm, NULL, 0, NULL);
    double err = 0;
    int n = 0, pos[B], st[B], bad = 0;
    for (int t = 1; t < T; t++) {
        for (int b = 0; b < B; b++) {
            pos[b] = t >= len[b] && t < la[b] ? t : -1;
            st[b] = pos[b] >= 0 ? a[b * T + t] : 0;
        }
        if (llama_step(lm, st, pos, md.feat, NFEAT)) { bad = 1; break; }
        k_download(step, llama_step_logits(lm), (size_t)B * V * sizeof(float));
        for (int b = 0; b < B; b++) {
            if (pos[b] < 0) continue;
            double e = t_max_rel_err(step + (size_t)b * V, full + ((size_t)b * T + t) * V, V);
            if (e > err) err = e;
            n++;
        }
    }
    t_check(!bad && n > 0 && err < 1e-4, PFX "llama_step logits == full forward",
            "%d (row, position) pairs, max rel err %.2e", n, err);
    free(full); free(step);
    int pidle[B];
    for (int b = 0; b < B; b++) pidle[b] = b == 0 ? T : -1;
    int e1 = llama_step(lm, st, pidle, md.feat, NFEAT);
    t_check(e1 < 0, PFX "llama_step refuses a position >= T", "%s", ar_error());

    /* beam width 1 == greedy; beam 3 cached == uncached */
    ok = 1;
    int groups_ok = 1, diff_greedy = 0;
    for (int it = 0; it < 8 && ok; it++) {
        prompts(&md, &r, tok, len, 7, it % B);
        gen_cfg gg = gen_default_cfg();
        gg.max_new = 5 + it * 2;
        gg.n_stop = 2; gg.stop[0] = (int)rng_below(&r, V - 1); gg.stop[1] = (int)rng_below(&r, V - 1);
        gg.no_cache = it % 2;
        gen_cfg gb = gg;
        gb.strategy = GEN_BEAM; gb.beam_width = 1; gb.length_penalty = 1.0f;
        ok &= gen(&md, &gg, tok, len, a, la) == 0 && gen(&md, &gb, tok, len, c, lc) == 0 && same(a, la, c, lc, B, T);
        int gr[B * T], lgr[B];
        memcpy(gr, a, sizeof gr); memcpy(lgr, la, sizeof lgr);
        gb.beam_width = 3;
        gb.no_cache = 1;
        ok &= gen(&md, &gb, tok, len, a, la) == 0;
        gb.no_cache = 0;
        ok &= gen(&md, &gb, tok, len, c, lc) == 0;
        groups_ok &= same(a, la, c, lc, B, T);
        for (int b = 0; b < B; b++)
            diff_greedy += la[b] != lgr[b] || memcmp(a + b * T, gr + b * T, T * sizeof(int)) != 0;
    }
    t_check(ok, PFX "beam width 1 == greedy", "8 batches, cached and uncached, two stop ids");
    t_check(groups_ok && diff_greedy > 0, PFX "beam cached == uncached",
            "width 3, 6 rows (two samples per group), 8 batches; %d of the rows differ from greedy", diff_greedy);

    /* the old API is the greedy wrapper */
    prompts(&md, &r, tok, len, 7, 2);
    g = gen_default_cfg(); g.max_new = 9; g.n_stop = 1; g.stop[0] = 3;
    gen(&md, &g, tok, len, a, la);
    memcpy(c, tok, sizeof tok); memcpy(lc, len, sizeof len);
    int rc = anyref_generate(md.m, c, lc, 9, 3, 0, md.feat, NFEAT);
    t_check(rc == 0 && same(a, la, c, lc, B, T), PFX "anyref_generate == greedy anyref_generate_ex", "rc %d", rc);
    rm(&md);
}

/* ---- 3 ------------------------------------------------------------------ */
enum { EV = 4, ET = 8, EB = 27, ESTOP = 3, ENEW = 4, EPL = 2 };
/* prefix (generated part, length n < ENEW, no stop) -> log-softmax of the next token */
typedef struct { int n, g[ENEW]; double lp[EV]; } prefix;

static int enum_prefixes(prefix *P, int n, int depth, const int *g) {
    memcpy(P[n].g, g, sizeof(int) * depth);
    P[n].n = depth;
    int k = n + 1;
    if (depth + 1 < ENEW)
        for (int v = 0; v < EV; v++) {
            if (v == ESTOP) continue;
            int h[ENEW];
            memcpy(h, g, sizeof(int) * depth);
            h[depth] = v;
            k = enum_prefixes(P, k, depth + 1, h);
        }
    return k;
}

static void test_beam_exhaustive(void) {
    model md;
    if (mk(&md, EV, ET, EB, 21)) { t_fail(PFX "exhaustive setup", "%s", ar_error()); return; }
    llama *lm = anyref_llama(md.m);
    static prefix P[64];
    int h0[ENEW] = {0};
    const int np = enum_prefixes(P, 0, 0, h0);   /* 1 + 3 + 9 + 27 = 40 */
    static const int prompt[3][EPL] = {{0, 1}, {2, 2}, {-2, 1}};
    static const float lps[3] = {1.0f, 0.0f, 2.0f};
    int all_ok = 1, n_not_greedy = 0;
    char detail[512] = "";
    for (int pi = 0; pi < 3; pi++) {
        /* log-probabilities of every prefix from full forwards, B prefixes at a time */
        llama_set_training(lm, 0);
        int tok[EB * ET], len[EB];
        float lg[EV];
        for (int p0 = 0; p0 < np; p0 += EB) {
            for (int b = 0; b < EB; b++) {
                const prefix *p = &P[p0 + b < np ? p0 + b : 0];
                for (int t = 0; t < ET; t++) tok[b * ET + t] = 0;
                memcpy(tok + b * ET, prompt[pi], sizeof prompt[pi]);
                memcpy(tok + b * ET + EPL, p->g, sizeof(int) * p->n);
            }
            llama_embed_feat(lm, tok, md.feat, NFEAT);
            llama_forward_embeds(lm, NULL, 0, NULL);
            for (int b = 0; b < EB && p0 + b < np; b++) {
                prefix *p = &P[p0 + b];
                k_download(lg, llama_logits(lm) + ((size_t)b * ET + EPL + p->n - 1) * EV, sizeof lg);
                double mx = lg[0], s = 0;
                for (int v = 1; v < EV; v++) if (lg[v] > mx) mx = lg[v];
                for (int v = 0; v < EV; v++) s += exp(lg[v] - mx);
                for (int v = 0; v < EV; v++) p->lp[v] = lg[v] - mx - log(s);
            }
        }
        for (int li = 0; li < 3; li++) {
            const double lp = lps[li];
            /* every continuation: a prefix + one token, ending at the stop id or at ENEW tokens */
            double best = -INFINITY;
            int bg[ENEW], bn = 0;
            for (int k = 0; k < np; k++) {
                double sum = 0;   /* the prefix's own log-probability */
                for (int d = 0; d < P[k].n; d++) {
                    int j = 0;   /* the prefix of length d that this one extends */
                    while (!(P[j].n == d && !memcmp(P[j].g, P[k].g, sizeof(int) * d))) j++;
                    sum += P[j].lp[P[k].g[d]];
                }
                for (int v = 0; v < EV; v++) {
                    if (v != ESTOP && P[k].n + 1 < ENEW) continue;   /* not an end: continues below */
                    double sc = (sum + P[k].lp[v]) / pow(P[k].n + 1, lp);
                    if (sc > best) { best = sc; bn = P[k].n + 1; memcpy(bg, P[k].g, sizeof(int) * P[k].n); bg[P[k].n] = v; }
                }
            }
            {   /* greedy, to show the search matters */
                int gt[EB * ET] = {0}, gl[EB] = {0};
                memcpy(gt, prompt[pi], sizeof prompt[pi]);
                gl[0] = EPL;
                gen_cfg g = gen_default_cfg();
                g.max_new = ENEW; g.n_stop = 1; g.stop[0] = ESTOP;
                anyref_generate_ex(md.m, &g, gt, gl, 0, md.feat, NFEAT);
                n_not_greedy += gl[0] != EPL + bn || memcmp(gt + EPL, bg, sizeof(int) * bn) != 0;
            }
            for (int cache = 0; cache < 2; cache++) {
                gen_cfg g = gen_default_cfg();
                g.strategy = GEN_BEAM; g.beam_width = EB; g.max_new = ENEW; g.length_penalty = (float)lp;
                g.n_stop = 1; g.stop[0] = ESTOP; g.no_cache = !cache;
                for (int b = 0; b < EB; b++) len[b] = 0;
                memcpy(tok, prompt[pi], sizeof prompt[pi]);
                len[0] = EPL;
                int rc = anyref_generate_ex(md.m, &g, tok, len, 0, md.feat, NFEAT);
                int ok = rc == 0 && len[0] == EPL + bn && !memcmp(tok + EPL, bg, sizeof(int) * bn);
                all_ok &= ok;
                if (!ok || (cache && li == 0))
                    snprintf(detail + strlen(detail), sizeof detail - strlen(detail),
                             "%sprompt %d lp %.0f: best %.4f len %d beam len %d%s", *detail ? "; " : "", pi, lp, best,
                             bn, len[0] - EPL, ok ? "" : " MISMATCH");
            }
        }
    }
    t_check(all_ok && n_not_greedy > 0, PFX "beam search == exhaustive enumeration",
            "vocab %d, %d new tokens, width %d, %d prefixes, lp 1/0/2, cached and not (%d of 9 optima are not the "
            "greedy answer): %s", EV, ENEW, EB, np, n_not_greedy, detail);
    rm(&md);
}

/* ---- 4 ------------------------------------------------------------------ */
static void test_sampling(void) {
    model md;
    enum { V = 32, T = 20, B = 6 };
    if (mk(&md, V, T, B, 8)) { t_fail(PFX "sampling setup", "%s", ar_error()); return; }
    int tok[B * T], len[B], a[B * T], la[B], c[B * T], lc[B];
    ar_rng r;
    rng_seed(&r, 3);
    prompts(&md, &r, tok, len, 6, -1);
    gen_cfg gg = gen_default_cfg();
    gg.max_new = 12;
    gen(&md, &gg, tok, len, a, la);
    gen_cfg gs = gg;
    gs.strategy = GEN_SAMPLE; gs.temperature = 0.0f; gs.seed = 5;
    gen(&md, &gs, tok, len, c, lc);
    int t0 = same(a, la, c, lc, B, T);
    gs.temperature = 1.0f; gs.top_p = 1e-6f;
    gen(&md, &gs, tok, len, c, lc);
    t_check(t0 && same(a, la, c, lc, B, T), PFX "sampling limits are greedy", "temperature 0; top_p 1e-6");

    gs.top_p = 0.9f; gs.temperature = 1.3f; gs.seed = 77;
    gen(&md, &gs, tok, len, a, la);
    gen(&md, &gs, tok, len, c, lc);
    int rep = same(a, la, c, lc, B, T);
    gs.no_cache = 1;
    gen(&md, &gs, tok, len, c, lc);
    int cache_eq = same(a, la, c, lc, B, T);
    gs.no_cache = 0;
    gs.seed = 78;
    gen(&md, &gs, tok, len, c, lc);
    int differs = !same(a, la, c, lc, B, T);
    gs.seed = 77;
    /* row 2 alone, then with the other rows' prompts replaced */
    int tok2[B * T], len2[B], indep = 1;
    memcpy(tok2, tok, sizeof tok);
    for (int b = 0; b < B; b++) len2[b] = b == 2 ? len[2] : 0;
    gen(&md, &gs, tok2, len2, c, lc);
    indep &= lc[2] == la[2] && !memcmp(c + 2 * T, a + 2 * T, T * sizeof(int));
    prompts(&md, &r, tok2, len2, 6, -1);
    memcpy(tok2 + 2 * T, tok + 2 * T, T * sizeof(int));
    len2[2] = len[2];
    gen(&md, &gs, tok2, len2, c, lc);
    indep &= lc[2] == la[2] && !memcmp(c + 2 * T, a + 2 * T, T * sizeof(int));
    t_check(rep && differs && cache_eq, PFX "sampling: seed reproduces, cached == uncached",
            "temperature 1.3, top_p 0.9: same seed same tokens; seed 78 differs; no_cache gives the same tokens");
    t_check(indep, PFX "sampling independent of batch composition", "row 2 alone and among other prompts");

    /* distribution of the first draw */
    llama *lm = anyref_llama(md.m);
    llama_set_training(lm, 0);
    llama_embed_feat(lm, tok, md.feat, NFEAT);
    llama_forward_embeds(lm, NULL, 0, NULL);
    float lg[V];
    k_download(lg, llama_logits(lm) + (size_t)(len[0] - 1) * V, sizeof lg);
    const double temp = 0.7, top_p = 0.8;
    double p[V], mx = lg[0], s = 0;
    for (int v = 1; v < V; v++) if (lg[v] > mx) mx = lg[v];
    for (int v = 0; v < V; v++) s += p[v] = exp((lg[v] - mx) / temp);
    for (int v = 0; v < V; v++) p[v] /= s;
    /* nucleus: tokens whose more-probable mass is below top_p (selection by repeated max) */
    int in[V] = {0}, k = 0;
    double above = 0;
    while (above < top_p && k < V) {
        int best = -1;
        for (int v = 0; v < V; v++) if (!in[v] && (best < 0 || p[v] > p[best])) best = v;
        in[best] = 1; above += p[best]; k++;
    }
    enum { NDRAW = 200000 };
    static long cnt[V];
    int err = 0;
    for (int i = 0; i < NDRAW; i++) {
        int t = gen_sample_token(lg, V, (float)temp, (float)top_p, (uint64_t)i, 0, 0);
        if (t < 0 || t >= V) { err = 1; break; }
        cnt[t]++;
    }
    double chi = 0;
    long outside = 0;
    for (int v = 0; v < V; v++) {
        if (!in[v]) { outside += cnt[v]; continue; }
        double e = NDRAW * p[v] / above;
        chi += (cnt[v] - e) * (cnt[v] - e) / e;
    }
    const int dof = k - 1;
    const double bound = dof + 8.0 * sqrt(2.0 * dof) + 10.0;   /* ~ 6 sigma and more above the mean */
    t_check(!err && k >= 3 && outside == 0 && chi < bound, PFX "sampling distribution",
            "%d draws, nucleus %d of %d tokens (mass %.3f): chi-square %.1f with %d dof (bound %.1f), %ld outside",
            NDRAW, k, V, above, chi, dof, bound, outside);
    /* generation draws what gen_sample_token draws */
    int match = 1;
    gen_cfg g1 = gen_default_cfg();
    g1.strategy = GEN_SAMPLE; g1.temperature = (float)temp; g1.top_p = (float)top_p; g1.max_new = 1;
    for (int sd = 0; sd < 20; sd++) {
        g1.seed = (uint64_t)sd;
        gen(&md, &g1, tok, len, c, lc);
        match &= c[len[0]] == gen_sample_token(lg, V, (float)temp, (float)top_p, (uint64_t)sd, 0, 0);
    }
    t_check(match, PFX "generation samples with gen_sample_token", "20 seeds, first token of row 0");

    /* errors */
    gen_cfg ge = gen_default_cfg();
    ge.strategy = GEN_BEAM; ge.beam_width = B + 1;
    int e1 = gen(&md, &ge, tok, len, c, lc);
    char m1[256];
    snprintf(m1, sizeof m1, "%s", ar_error());
    ge.beam_width = 0;
    int e2 = gen(&md, &ge, tok, len, c, lc);
    int st = -1, e3 = gen_parse_strategy("beams", &st);
    char m3[256];
    snprintf(m3, sizeof m3, "%s", ar_error());
    int g_ok = !gen_parse_strategy("greedy", &st) && st == GEN_GREEDY && !gen_parse_strategy("beam", &st) &&
               st == GEN_BEAM && !gen_parse_strategy("sample", &st) && st == GEN_SAMPLE;
    t_check(e1 < 0 && e2 < 0 && e3 < 0 && g_ok && strstr(m3, "beams"), PFX "errors", "width %d: %s | %s", B + 1, m1, m3);
    rm(&md);
}

/* The KV-cache step path with the frozen projections stored as bf16 and the
 * full forwards (prefill, uncached generation) with flash attention. */
static void test_cache_bf16(void) {
    model md;
    enum { V = 32, T = 24, B = 6 };
    if (mk_ex(&md, V, T, B, 8, 1, 1)) { t_fail(PFX "bf16 setup", "%s", ar_error()); return; }
    int tok[B * T], len[B], a[B * T], la[B], c[B * T], lc[B];
    ar_rng r;
    rng_seed(&r, 17);
    int ok = md.ps.nw16 > 0, total = 0;
    gen_cfg g = gen_default_cfg();
    g.max_new = T;
    for (int it = 0; it < 4 && ok; it++) {
        prompts(&md, &r, tok, len, 7, it % B);
        g.no_cache = 1;
        ok &= gen(&md, &g, tok, len, a, la) == 0;
        g.no_cache = 0;
        ok &= gen(&md, &g, tok, len, c, lc) == 0;
        ok &= same(a, la, c, lc, B, T);
        for (int b = 0; b < B; b++) total += la[b] - len[b];
    }
    t_check(ok, PFX "bf16 frozen weights, flash attention: cached greedy == uncached greedy",
            "4 batches of %d rows, %zu bf16 values, %d tokens generated", B, md.ps.nw16, total);
    rm(&md);
}

int main(void) {
    test_cache_greedy_beam();
    test_beam_exhaustive();
    test_sampling();
    test_cache_bf16();
    return t_exit_code();
}
