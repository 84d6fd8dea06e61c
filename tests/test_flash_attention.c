/* tests/test_flash_attention.c — the memory-efficient attention
 * (attention_flash_forward / _backward, kernels.h) against the attention that
 * keeps its probabilities (attention_forward / _backward, itself checked
 * against PyTorch by test_parity), on whichever backend is built
 * (device-capable: tensors move through k_upload / k_download):
 *   - out, and lse against log Σ exp of the reference's scores (recomputed
 *     here in double from q and k), to 1e-5;
 *   - dq, dk, dv accumulated onto non-zero starts, to 1e-5;
 *   - shapes: several query blocks (T > 128), grouped-query heads, causal
 *     with S > T (a KV prefix), key_len padding, a sample whose rows see no
 *     key (out 0, lse -inf, no gradient), non-causal;
 *   - finite differences of a loss through the flash forward, on dq / dk / dv;
 *   - selected rows of P recomputed from q, k and lse (attention_rows_forward)
 *     against the full matrix, and their gradient (attention_rows_backward)
 *     against attention_backward's datt_extra on those rows;
 *   - a LLaMA step with llama_cfg.flash_attention against the same model with
 *     full attention: loss and every trainable gradient, with and without
 *     layer checkpointing, no probabilities kept, and the smaller activation
 *     arena.
 * Depends on kernels/kernels.h, tests/testlib.h. */
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/llama.h"
#include "model/params.h"
#include "tests/testlib.h"
#include "tests/h5fixture.h"
#include "tests/llama_step.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    int B, T, S, Hq, Hkv, hd, causal;
    const int *key_len;   /* host, may be NULL */
} shape;

static int visible(const shape *s, int b, int t) {
    int lim = s->S;
    if (s->key_len && s->key_len[b] < lim) lim = s->key_len[b];
    if (s->causal && t + (s->S - s->T) + 1 < lim) lim = t + (s->S - s->T) + 1;
    return lim < 0 ? 0 : lim;
}

/* FD context: Σ out·r through the flash forward, from host q / k / v. */
typedef struct { const shape *s; float *q, *k, *v, *r, *out, *lse, *scratch; int *dkl; float scale; } fd_ctx;
static double fd_loss(void *p) {
    fd_ctx *c = p;
    const shape *s = c->s;
    const size_t nq = (size_t)s->B * s->T * s->Hq * s->hd, nk = (size_t)s->B * s->S * s->Hkv * s->hd;
    float *dq = t_dev_copy(c->q, nq), *dk = t_dev_copy(c->k, nk), *dv = t_dev_copy(c->v, nk);
    attention_flash_forward(c->out, c->lse, c->scratch, dq, dk, dv, c->dkl, s->causal, c->scale, s->B, s->T, s->S, s->Hq,
                            s->Hkv, s->hd);
    float *o = t_host_copy(c->out, nq);
    double sum = t_dot(o, c->r, nq);
    free(o);
    k_free(dq); k_free(dk); k_free(dv);
    return sum;
}

static void run_case(const char *name, const shape *s, int fd, uint64_t seed) {
    const int B = s->B, T = s->T, S = s->S, Hq = s->Hq, Hkv = s->Hkv, hd = s->hd;
    const size_t nq = (size_t)B * T * Hq * hd, nk = (size_t)B * S * Hkv * hd, nl = (size_t)B * Hq * T;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = t_alloc(nq), *k = t_alloc(nk), *v = t_alloc(nk), *g = t_alloc(nq);
    float *sq = t_alloc(nq), *sk = t_alloc(nk), *sv = t_alloc(nk);
    t_fill_normal(q, nq, 1.0f, seed); t_fill_normal(k, nk, 1.0f, seed + 1); t_fill_normal(v, nk, 1.0f, seed + 2);
    t_fill_normal(g, nq, 1.0f, seed + 3);
    t_fill_normal(sq, nq, 0.5f, seed + 4); t_fill_normal(sk, nk, 0.5f, seed + 5); t_fill_normal(sv, nk, 0.5f, seed + 6);
    int *dkl = NULL;
    if (s->key_len) { dkl = k_malloc((size_t)B * sizeof(int)); k_upload(dkl, s->key_len, (size_t)B * sizeof(int)); }
    float *dq = t_dev_copy(q, nq), *dk = t_dev_copy(k, nk), *dv = t_dev_copy(v, nk), *dg = t_dev_copy(g, nq);
    /* reference: the attention that keeps P */
    float *o1 = k_malloc(nq * 4), *att = k_malloc((size_t)B * Hq * T * S * 4);
    float *sc1 = k_malloc(attention_scratch_floats(B, T, S, Hq) * 4);
    float *gq1 = t_dev_copy(sq, nq), *gk1 = t_dev_copy(sk, nk), *gv1 = t_dev_copy(sv, nk);
    attention_forward(o1, att, dq, dk, dv, dkl, s->causal, scale, B, T, S, Hq, Hkv, hd);
    attention_backward(gq1, gk1, gv1, sc1, dg, NULL, att, dq, dk, dv, scale, B, T, S, Hq, Hkv, hd);
    /* flash */
    const size_t nsc = attention_flash_scratch_floats(B, T, S, Hq, Hkv);
    float *o2 = k_malloc(nq * 4), *lse = k_malloc(nl * 4), *sc2 = k_malloc(nsc * 4);
    float *gq2 = t_dev_copy(sq, nq), *gk2 = t_dev_copy(sk, nk), *gv2 = t_dev_copy(sv, nk);
    attention_flash_forward(o2, lse, sc2, dq, dk, dv, dkl, s->causal, scale, B, T, S, Hq, Hkv, hd);
    attention_flash_backward(gq2, gk2, gv2, sc2, dg, o2, lse, dq, dk, dv, dkl, s->causal, scale, B, T, S, Hq, Hkv, hd);
    float *h1 = t_host_copy(o1, nq), *h2 = t_host_copy(o2, nq), *hl = t_host_copy(lse, nl);
    float *a[3] = {t_host_copy(gq1, nq), t_host_copy(gk1, nk), t_host_copy(gv1, nk)};
    float *b2[3] = {t_host_copy(gq2, nq), t_host_copy(gk2, nk), t_host_copy(gv2, nk)};
    /* lse in double from q, k */
    double lerr = 0;
    int inf_ok = 1;
    const int G = Hq / Hkv;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
            for (int t = 0; t < T; t++) {
                const int vis = visible(s, b, t);
                const float got = hl[((size_t)b * Hq + h) * T + t];
                if (!vis) { inf_ok &= isinf(got) && got < 0; continue; }
                double mx = -INFINITY, sum = 0;
                double sc[4096];
                for (int j = 0; j < vis; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (double)q[(((size_t)b * T + t) * Hq + h) * hd + i] *
                             k[(((size_t)b * S + j) * Hkv + h / G) * hd + i];
                    sc[j] = d * scale;
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < vis; j++) sum += exp(sc[j] - mx);
                const double want = mx + log(sum), e = fabs(got - want) / (fabs(want) > 1 ? fabs(want) : 1);
                if (e > lerr) lerr = e;
            }
    const double eo = t_max_rel_err(h2, h1, nq);
    double eg = 0;
    const size_t ns[3] = {nq, nk, nk};
    for (int i = 0; i < 3; i++) { double e = t_max_rel_err(b2[i], a[i], ns[i]); if (e > eg) eg = e; }
    char label[160];
    snprintf(label, sizeof label, "flash attention %s", name);
    t_check(eo <= 1e-5 && lerr <= 1e-5 && inf_ok && eg <= 1e-5, label,
            "out %.1e, lse %.1e%s, dq/dk/dv (accumulated) %.1e against the attention that keeps P; scratch %zu floats "
            "vs P %zu", eo, lerr, inf_ok ? "" : " (a row without keys is not -inf)", eg, nsc, (size_t)B * Hq * T * S);
    {   /* selected rows of P from q, k, lse, and their gradient, against the full matrix and
         * attention_backward's datt_extra (with dout = 0: the extra term alone) */
        int hrows[6], nr = 0;
        for (int i = 0; i < 6 && nr < B * T; i++) {
            int cand = (int)(((uint64_t)i * 2654435761u + seed) % (uint64_t)(B * T));
            int dup = 0;
            for (int j = 0; j < nr; j++) dup |= hrows[j] == cand;
            if (!dup) hrows[nr++] = cand;
        }
        const size_t npr = (size_t)nr * Hq * S, natt = (size_t)B * Hq * T * S;
        int *drows = k_malloc((size_t)nr * sizeof(int));
        k_upload(drows, hrows, (size_t)nr * sizeof(int));
        float *prow = k_malloc(npr * 4);
        attention_rows_forward(prow, drows, nr, dq, dk, lse, dkl, s->causal, scale, B, T, S, Hq, Hkv, hd);
        float *hp = t_host_copy(prow, npr), *hatt = t_host_copy(att, natt), *want = t_alloc(npr), *gp = t_alloc(npr);
        for (int r = 0; r < nr; r++)
            for (int h = 0; h < Hq; h++)
                memcpy(want + ((size_t)r * Hq + h) * S,
                       hatt + (((size_t)(hrows[r] / T) * Hq + h) * T + hrows[r] % T) * S, (size_t)S * sizeof(float));
        double ep = 0;
        for (size_t i = 0; i < npr; i++) { double e = fabs(hp[i] - want[i]); if (e > ep) ep = e; }
        t_fill_normal(gp, npr, 1.0f, seed + 9);
        float *extra = t_alloc(natt), *zq = t_alloc(nq);
        for (int r = 0; r < nr; r++)
            for (int h = 0; h < Hq; h++)
                memcpy(extra + (((size_t)(hrows[r] / T) * Hq + h) * T + hrows[r] % T) * S, gp + ((size_t)r * Hq + h) * S,
                       (size_t)S * sizeof(float));
        float *dextra = t_dev_copy(extra, natt), *dz = t_dev_copy(zq, nq), *dgp = t_dev_copy(gp, npr);
        float *rq1 = t_dev_copy(sq, nq), *rk1 = t_dev_copy(sk, nk), *rq2 = t_dev_copy(sq, nq), *rk2 = t_dev_copy(sk, nk);
        attention_backward(rq1, rk1, NULL, sc1, dz, dextra, att, dq, dk, dv, scale, B, T, S, Hq, Hkv, hd);
        attention_rows_backward(rq2, rk2, dgp, prow, drows, nr, dq, dk, scale, B, T, S, Hq, Hkv, hd);
        float *x1 = t_host_copy(rq1, nq), *x2 = t_host_copy(rq2, nq), *y1 = t_host_copy(rk1, nk), *y2 = t_host_copy(rk2, nk);
        const double eq = t_max_rel_err(x2, x1, nq), ek = t_max_rel_err(y2, y1, nk);
        snprintf(label, sizeof label, "flash attention %s: rows", name);
        t_check(ep <= 1e-6 && eq <= 1e-5 && ek <= 1e-5, label,
                "%d rows: probabilities max abs err %.1e against att; their gradient into dq %.1e, dk %.1e against "
                "attention_backward's datt_extra", nr, ep, eq, ek);
        free(hp); free(hatt); free(want); free(gp); free(extra); free(zq); free(x1); free(x2); free(y1); free(y2);
        k_free(drows); k_free(prow); k_free(dextra); k_free(dz); k_free(dgp);
        k_free(rq1); k_free(rk1); k_free(rq2); k_free(rk2);
    }
    if (fd) {
        /* finite differences through the flash forward: the analytic gradients from zero */
        float *z1 = t_alloc(nq), *z2 = t_alloc(nk);
        float *fq = t_dev_copy(z1, nq), *fk = t_dev_copy(z2, nk), *fv = t_dev_copy(z2, nk);
        attention_flash_backward(fq, fk, fv, sc2, dg, o2, lse, dq, dk, dv, dkl, s->causal, scale, B, T, S, Hq, Hkv, hd);
        float *an[3] = {t_host_copy(fq, nq), t_host_copy(fk, nk), t_host_copy(fv, nk)};
        fd_ctx c = {.s = s, .q = q, .k = k, .v = v, .r = g, .out = o2, .lse = lse, .scratch = sc2, .dkl = dkl, .scale = scale};
        float *xs[3] = {q, k, v};
        const char *nm[3] = {"dq", "dk", "dv"};
        for (int i = 0; i < 3; i++) {
            snprintf(label, sizeof label, "flash attention %s finite differences %s", name, nm[i]);
            t_gradcheck(label, fd_loss, &c, xs[i], an[i], ns[i], 1e-2f, 5e-3, 48);
            free(an[i]);
        }
        free(z1); free(z2);
        k_free(fq); k_free(fk); k_free(fv);
    }
    for (int i = 0; i < 3; i++) { free(a[i]); free(b2[i]); }
    free(q); free(k); free(v); free(g); free(sq); free(sk); free(sv); free(h1); free(h2); free(hl);
    k_free(dkl); k_free(dq); k_free(dk); k_free(dv); k_free(dg); k_free(o1); k_free(att); k_free(sc1);
    k_free(gq1); k_free(gk1); k_free(gv1); k_free(o2); k_free(lse); k_free(sc2); k_free(gq2); k_free(gk2); k_free(gv2);
}


/* T = 200: longer than a query block on both backends (64 rows on the CPU, 128 on
 * the GPU, whose flash scratch is two blocks of scores), so the memory-efficient
 * attention must store less than the full probabilities, with checkpointing too. */
static void test_llama(int checkpoint) {
    llama_cfg c = {.vocab = 50, .dim = 48, .layers = 3, .heads = 6, .kv_heads = 2, .mlp_hidden = 64, .max_seq = 200,
                   .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 4, .lora_alpha = 8.0f, .lora_dropout = 0.1f,
                   .lora_targets = 0x7f, .train_embed = 1, .train_lm_head = 1, .checkpoint_layers = checkpoint};
    ar_params ps;
    params_init_empty(&ps);
    if (llama_declare(&c, &ps) || params_alloc(&ps)) { t_fail("flash llama set-up", "%s", ar_error()); params_free(&ps); return; }
    params_randomize(&ps, 21);
    float *g0 = t_alloc(ps.ng), *g1 = t_alloc(ps.ng), *a0 = NULL, *a1 = NULL;
    size_t b0 = 0, b1 = 0;
    const float l0 = t_llama_step(&ps, &c, 2, 200, g0, &a0, &b0);
    llama_cfg f = c;
    f.flash_attention = 1;
    const float l1 = t_llama_step(&ps, &f, 2, 200, g1, &a1, &b1);
    const double el = fabs((double)l1 - l0) / fabs((double)l0), eg = t_max_rel_err(g1, g0, ps.ng);
    const int att_ok = !a1 && a0;
    char name[120];
    snprintf(name, sizeof name, "flash attention llama step%s%s", checkpoint ? ", checkpoint_layers" : "",
             "");
    t_check(isfinite(l1) && el <= 1e-6 && eg <= 1e-5 && att_ok && b1 < b0, name,
            "loss %.7g vs %.7g (rel %.1e), %zu trainable gradients max rel err %.1e; last layer's probabilities %s; "
            "activations %zu -> %zu bytes", l1, l0, el, ps.ng, eg,
            a1 ? "KEPT" : "not kept", b0, b1);
    free(g0); free(g1); free(a0); free(a1);
    params_free(&ps);
}

int main(void) {
    const int kl[3] = {300, 0, 171};
    const shape cases[] = {
        {.B = 2, .T = 300, .S = 300, .Hq = 4, .Hkv = 2, .hd = 16, .causal = 1},                 /* 3 blocks, GQA */
        {.B = 3, .T = 150, .S = 300, .Hq = 2, .Hkv = 1, .hd = 8, .causal = 1, .key_len = kl},   /* KV prefix, padding, an empty sample */
        {.B = 2, .T = 70, .S = 90, .Hq = 3, .Hkv = 3, .hd = 12, .causal = 0},                   /* cross attention */
        {.B = 1, .T = 9, .S = 9, .Hq = 2, .Hkv = 1, .hd = 4, .causal = 1},                      /* tiny: finite differences */
    };
    const char *names[] = {"causal GQA, 3 query blocks", "KV prefix + key_len (one sample sees nothing)",
                           "non-causal", "tiny"};
    for (int i = 0; i < 4; i++) run_case(names[i], &cases[i], i == 3, 100 + 10 * (uint64_t)i);
    test_llama(0);
    test_llama(1);
    return t_exit_code();
}
