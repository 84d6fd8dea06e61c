/* data/loader.c — the live loader (see loader.h): sources, the weighted
 * stream, the sample -> tensor builder, and the decode-thread pool with its
 * bounded ring of sample slots. */
#include "data/loader.h"

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/conversation.h"
#include "data/fbank.h"
#include "data/grounding_dataset.h"
#include "data/image.h"
#include "data/rle.h"
#include "data/wav.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ state */

typedef struct {
    ldr_kind kind;
    char name[96];
    double weight;
    int caption;
    refer_join *rj;
    avs_set *avs;
    cj_dataset cj;
    int have_cj;
    size_t *idx;           /* jsonl: the records of the split */
    int64_t *sent_off;     /* refer with every_sentence: [refs + 1] first sample of each ref */
    int64_t n;             /* samples */
    int64_t n_epoch;       /* n_k: slots per epoch */
    int32_t *perm[2];      /* cached permutations of its own stream */
    int64_t perm_e[2];
} source;

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_HELD };

typedef struct {
    ldr_item it;
    int state, status;     /* status: 0 built, 1 broken */
    int checked;           /* data parallel: the hook has judged it (status final) */
    int64_t pos, gen;
    char err[768];
    /* buffers */
    uint8_t *u8;           /* one mask's bytes */
    size_t mask_cap;       /* floats of it.masks */
    float *clip_buf, *sam_buf, *ref_buf;   /* it.clip / it.sam / it.ref_data point here when present */
} slot;

typedef struct {
    ldr *l;
    ar_fbank *fb;
    pthread_t th;
    int started;
} worker;

struct ldr {
    ldr_cfg cfg;
    char *strs[LDR_MAX_SOURCES][6];
    char *tokpath, *tplname, *addtok;
    source src[LDR_MAX_SOURCES];
    int n_src;
    int64_t E;             /* epoch size (training) or samples (validation) */
    int64_t off[LDR_MAX_SOURCES + 1];   /* validation: concatenated offsets */
    tokenizer *tok;
    conv_encoder *enc;
    ldr_markers mk;
    int pad, vocab;
    ar_audio_opts aopt;
    int lim_h, lim_w;
    /* ldr_start */
    int B, max_h, max_w, started;
    size_t clip_n, sam_n, ref_n;
    ldr_hook hook;
    void *hook_ctx;
    /* the epoch map (under mu) */
    int64_t map_e;
    int32_t *map_src, *map_rank;
    /* slots and threads */
    int nslots, prefetch, n_alloc;   /* ring slots; + B row slots = n_alloc */
    slot *slots;
    worker *wk;
    int n_wk;
    ar_fbank *fb_main;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int stop;
    int64_t gen, next_claim, consume_pos;
    int primed;
    uint8_t *taken;        /* nondeterministic: taken ahead, by pos % nslots */
    int64_t warned;
    ldr_stats stats;
    /* data parallel (ldr_dp_setup; dp_per = 0: off). The workers build the
       keep positions (this step's samples not built yet), then plan[0] (the
       window), under mu. */
    int dp_rank, dp_ranks, dp_per, dp_slack;
    int64_t plan_lo, plan_hi;   /* [lo, hi): the window being built */
    int64_t *keep;              /* [dp_per] the step's positions still to take, -1 once taken */
    int n_keep;
};

void ldr_cfg_default(ldr_cfg *c) {
    memset(c, 0, sizeof *c);
    c->template_name = "llava_v1";
    c->add_tokens = "";
    c->T = 512;
    sample_options_default(&c->so);
    c->threads = 2;
    c->prefetch = 0;
    c->deterministic = 1;
    c->shuffle = 1;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* ------------------------------------------------------------------ open */

static int open_source(ldr *l, int k) {
    const ldr_source *c = &l->cfg.src[k];
    source *s = &l->src[k];
    s->kind = c->kind;
    s->weight = c->weight;
    s->caption = c->caption;
    s->perm_e[0] = s->perm_e[1] = -1;
    const char *split = c->split && c->split[0] ? c->split : NULL;
    if (!(c->weight > 0) || !isfinite(c->weight)) return ar_errorf("weight = %g (expected > 0)", c->weight);
    if (c->kind == LDR_REFER) {
        s->rj = refer_join_load(c->root, c->dataset, c->split_by && c->split_by[0] ? c->split_by : NULL,
                                split ? split : "train", c->images, (refer_image_layout)c->image_layout);
        if (!s->rj) return -1;
        s->n = (int64_t)s->rj->n;
        if (c->every_sentence && !c->caption) {
            if (!(s->sent_off = malloc((s->rj->n + 1) * sizeof *s->sent_off))) return ar_errorf("out of memory");
            s->sent_off[0] = 0;
            for (size_t i = 0; i < s->rj->n; i++)
                s->sent_off[i + 1] = s->sent_off[i] + (s->rj->recs[i].n_sentences > 0 ? s->rj->recs[i].n_sentences : 1);
            s->n = s->sent_off[s->rj->n];
        }
        snprintf(s->name, sizeof s->name, "%s/%s%s", s->rj->refs->name, s->rj->split, c->caption ? " (caption)" : "");
        l->stats.bad_records += (int64_t)s->rj->n_skipped;
        if (s->rj->n_skipped)
            log_warn("%s: %zu refs of the split did not join with instances.json (skipped)", s->name, s->rj->n_skipped);
    } else if (c->kind == LDR_AVS) {
        s->avs = avs_load(c->root, c->dataset, split ? split : "train", NULL);
        if (!s->avs) return -1;
        s->n = (int64_t)avs_num_samples(s->avs);
        snprintf(s->name, sizeof s->name, "%s/%s", s->avs->subset == AVS_S4 ? "s4" : "ms3", s->avs->split);
        l->stats.bad_records += (int64_t)(s->avs->n_bad_rows + s->avs->n_skipped_lines);
        if (s->avs->n_bad_rows + s->avs->n_skipped_lines)
            log_warn("%s: %zu CSV rows skipped", s->name, s->avs->n_bad_rows + s->avs->n_skipped_lines);
    } else if (c->kind == LDR_JSONL) {
        if (!c->file || !c->file[0]) return ar_errorf("a jsonl source needs its file");
        cj_options o = {.check_files = 1, .decode = 0};
        if (cj_load(c->file, &o, &s->cj)) return -1;
        s->have_cj = 1;
        if (!(s->idx = malloc((s->cj.n ? s->cj.n : 1) * sizeof *s->idx))) return ar_errorf("out of memory");
        for (size_t i = 0; i < s->cj.n; i++)
            if (!split || !strcmp(s->cj.recs[i].split, split)) s->idx[s->n++] = i;
        const char *b = strrchr(c->file, '/');
        snprintf(s->name, sizeof s->name, "%s%s%s", b ? b + 1 : c->file, split ? "/" : "", split ? split : "");
        l->stats.bad_records += (int64_t)s->cj.n_bad;
        if (s->cj.n_bad) log_warn("%s: %zu lines skipped (malformed records)", s->name, s->cj.n_bad);
    } else {
        return ar_errorf("unknown source kind %d", (int)c->kind);
    }
    if (s->n == 0) return ar_errorf("%s: no samples%s%s", s->name, split ? " in split " : "", split ? split : "");
    return 0;
}

/* The largest image (and AVSBench mask) side over the source's samples. */
static void source_limits(source *s, int *h, int *w) {
    int mh = 0, mw = 0;
    if (s->rj) {
        for (size_t i = 0; i < s->rj->n; i++) {
            if ((int)s->rj->recs[i].height > mh) mh = (int)s->rj->recs[i].height;
            if ((int)s->rj->recs[i].width > mw) mw = (int)s->rj->recs[i].width;
        }
    } else if (s->avs) {
        for (int64_t i = 0; i < s->n; i++) {
            size_t r;
            int k, ih, iw;
            if (avs_sample(s->avs, (size_t)i, &r, &k)) continue;
            const avs_record *rec = &s->avs->records[r];
            if (!image_probe_size(rec->frame[k], &ih, &iw)) { if (ih > mh) mh = ih; if (iw > mw) mw = iw; }
            if (rec->mask[k] && !image_probe_size(rec->mask[k], &ih, &iw)) { if (ih > mh) mh = ih; if (iw > mw) mw = iw; }
        }
    } else {
        for (int64_t i = 0; i < s->n; i++) {
            const cj_record *r = &s->cj.recs[s->idx[i]];
            if (r->height > mh) mh = r->height;
            if (r->width > mw) mw = r->width;
        }
    }
    *h = mh;
    *w = mw;
}

static int add_tokens(ldr *l) {
    const sample_options *o = &l->cfg.so;
    if (conv_encoder_add_placeholder(l->enc, o->image_token) == 0) return -1;
    char list[4096];
    snprintf(list, sizeof list, "%s", l->cfg.add_tokens ? l->cfg.add_tokens : "");
    for (char *sv = NULL, *t = strtok_r(list, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
        while (*t == ' ' || *t == '\t') t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) t[--n] = 0;
        if (n && conv_encoder_add_token(l->enc, t, 1) < 0) return ar_error_prefix("data.add_tokens: ");
    }
    const char *names[] = {"[SEG]", "<im_start>", "<im_end>", o->image_ref_start, o->image_ref_end,
                           o->audio_ref_start, o->audio_ref_end};
    int *ids[] = {&l->mk.seg, &l->mk.im_start, &l->mk.im_end, &l->mk.ref_start, &l->mk.ref_end,
                  &l->mk.audio_start, &l->mk.audio_end};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if ((*ids[i] = conv_encoder_add_token(l->enc, names[i], 1)) < 0) return ar_error_prefix("added token %s: ", names[i]);
    l->mk.image = -1;
    l->vocab = tok_vocab_size(l->tok);
    l->pad = conv_encoder_pad_id(l->enc);
    return 0;
}

ldr *ldr_open(const ldr_cfg *cfg) {
    if (cfg->n_sources < 1 || cfg->n_sources > LDR_MAX_SOURCES) {
        ar_errorf("loader: %d data sources (expected 1..%d)", cfg->n_sources, LDR_MAX_SOURCES);
        return NULL;
    }
    if (cfg->T < 2) { ar_errorf("loader: T = %d (expected >= 2)", cfg->T); return NULL; }
    if (!cfg->tokenizer || !cfg->tokenizer[0]) { ar_errorf("loader: no tokenizer (data.tokenizer)"); return NULL; }
    ldr *l = calloc(1, sizeof *l);
    if (!l) { ar_errorf("out of memory"); return NULL; }
    l->cfg = *cfg;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->map_e = -1;
    /* own copies of every string */
    l->tokpath = dup_or_empty(cfg->tokenizer);
    l->tplname = dup_or_empty(cfg->template_name ? cfg->template_name : "llava_v1");
    l->addtok = dup_or_empty(cfg->add_tokens);
    l->cfg.tokenizer = l->tokpath;
    l->cfg.template_name = l->tplname;
    l->cfg.add_tokens = l->addtok;
    for (int k = 0; k < cfg->n_sources; k++) {
        ldr_source *c = &l->cfg.src[k];
        const char **f[] = {&c->root, &c->dataset, &c->split_by, &c->split, &c->images, &c->file};
        for (int j = 0; j < 6; j++) { l->strs[k][j] = dup_or_empty(*f[j]); *f[j] = l->strs[k][j]; }
    }
    l->n_src = cfg->n_sources;
    const char *sname[] = {"source", "source2", "source3", "source4"};
    for (int k = 0; k < l->n_src; k++) {
        if (open_source(l, k)) { ar_error_prefix("%s: ", sname[k]); goto fail; }
        int h, w;
        source_limits(&l->src[k], &h, &w);
        if (h > l->lim_h) l->lim_h = h;
        if (w > l->lim_w) l->lim_w = w;
    }
    if (!(l->tok = tok_load(l->tokpath))) { ar_error_prefix("data.tokenizer: "); goto fail; }
    if (!(l->enc = conv_encoder_new(l->tok, l->tplname, cfg->T))) { ar_error_prefix("data.template: "); goto fail; }
    if (add_tokens(l)) goto fail;
    ar_audio_opts_imagebind(&l->aopt);
    /* the epoch: n_k by largest remainders */
    int64_t total = 0;
    double wsum = 0;
    for (int k = 0; k < l->n_src; k++) { total += l->src[k].n; wsum += l->src[k].weight; l->off[k + 1] = total; }
    if (!cfg->shuffle) {
        l->E = total;
    } else {
        l->E = cfg->epoch_samples > 0 ? cfg->epoch_samples : total;
        if (l->E > INT32_MAX) { ar_errorf("loader: an epoch of %lld samples is too large", (long long)l->E); goto fail; }
        int64_t given = 0;
        double rem[LDR_MAX_SOURCES];
        for (int k = 0; k < l->n_src; k++) {
            double x = (double)l->E * l->src[k].weight / wsum;
            l->src[k].n_epoch = (int64_t)floor(x);
            rem[k] = x - floor(x);
            given += l->src[k].n_epoch;
        }
        while (given < l->E) {   /* largest remainder first, ties to the lower index */
            int best = 0;
            for (int k = 1; k < l->n_src; k++) if (rem[k] > rem[best]) best = k;
            l->src[best].n_epoch++;
            rem[best] = -1;
            given++;
        }
    }
    return l;
fail:
    ldr_free(l);
    return NULL;
}

static void stop_threads(ldr *l) {
    if (!l->wk) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->n_wk; i++) {
        if (l->wk[i].started) pthread_join(l->wk[i].th, NULL);
        ar_fbank_free(l->wk[i].fb);
    }
    free(l->wk);
    l->wk = NULL;
}

void ldr_free(ldr *l) {
    if (!l) return;
    stop_threads(l);
    for (int i = 0; i < l->n_alloc; i++) {
        slot *s = &l->slots[i];
        free(s->it.tokens); free(s->it.targets); free(s->clip_buf); free(s->sam_buf); free(s->it.masks);
        free(s->ref_buf); free(s->u8);
    }
    free(l->slots);
    free(l->taken);
    free(l->keep);
    ar_fbank_free(l->fb_main);
    for (int k = 0; k < l->n_src; k++) {
        source *s = &l->src[k];
        refer_join_free(s->rj);
        avs_free(s->avs);
        if (s->have_cj) cj_free(&s->cj);
        free(s->idx); free(s->sent_off); free(s->perm[0]); free(s->perm[1]);
    }
    for (int k = 0; k < LDR_MAX_SOURCES; k++) for (int j = 0; j < 6; j++) free(l->strs[k][j]);
    free(l->tokpath); free(l->tplname); free(l->addtok);
    free(l->map_src); free(l->map_rank);
    conv_encoder_free(l->enc);
    tok_free(l->tok);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    free(l);
}

int64_t ldr_rows(const ldr *l) { return l->E; }
int64_t ldr_source_size(const ldr *l, int k) { return k >= 0 && k < l->n_src ? l->src[k].n : 0; }
const char *ldr_source_name(const ldr *l, int k) { return k >= 0 && k < l->n_src ? l->src[k].name : ""; }

int ldr_group_texts(const ldr *l, int k, int64_t g, const char **out, int max) {
    if (k < 0 || k >= l->n_src || g < 0) return 0;
    const source *s = &l->src[k];
    int n = 0;
    if (s->rj) {
        if ((size_t)g >= s->rj->n) return 0;
        const refer_record *r = &s->rj->recs[g];
        for (int i = 0; i < r->n_sentences && n < max; i++) out[n++] = r->sentences[i].sent;
    } else if (s->have_cj) {
        if (g >= s->n) return 0;
        const cj_record *r = &s->cj.recs[s->idx[g]];
        const char *t = r->answer ? r->answer : r->expression;
        if (t && max > 0) out[n++] = t;
    }
    return n;
}

/* Sample rec of a refer source -> (ref, sentence): sentence -1 = seeded. */
static size_t ref_of_sample(const source *s, int64_t rec, int *sent) {
    *sent = -1;
    if (!s->sent_off) return (size_t)rec;
    size_t lo = 0, hi = s->rj->n;   /* the last ref with sent_off <= rec */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->sent_off[mid] <= rec) lo = mid; else hi = mid;
    }
    *sent = s->rj->recs[lo].n_sentences > 0 ? (int)(rec - s->sent_off[lo]) : -1;
    return lo;
}
int ldr_cfg_T(const ldr *l) { return l->cfg.T; }
void ldr_input_sides(const ldr *l, int *clip_S, int *sam_S) { *clip_S = l->cfg.clip_S; *sam_S = l->cfg.sam_S; }
int ldr_has_audio(const ldr *l) { return l->cfg.audio; }
struct tokenizer *ldr_tokenizer(const ldr *l) { return l->tok; }
int ldr_vocab(const ldr *l) { return l->vocab; }
int ldr_pad_id(const ldr *l) { return l->pad; }
void ldr_get_markers(const ldr *l, ldr_markers *out) { *out = l->mk; }
int ldr_fbank_hw(int *h, int *w) { *h = AVS_AUDIO_BINS; *w = AVS_AUDIO_FRAMES; return AVS_AUDIO_CLIPS; }
void ldr_limits(const ldr *l, int *h, int *w, int *masks) { *h = l->lim_h; *w = l->lim_w; *masks = 1; }
void ldr_set_hook(ldr *l, ldr_hook hook, void *ctx) { l->hook = hook; l->hook_ctx = ctx; }

void ldr_get_stats(const ldr *l, ldr_stats *out) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    *out = l->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

/* ------------------------------------------------------------------ stream */

/* Source k's permutation number se (cached, two at a time). Under mu. */
static const int32_t *source_perm(ldr *l, int k, int64_t se) {
    source *s = &l->src[k];
    for (int i = 0; i < 2; i++) if (s->perm_e[i] == se) return s->perm[i];
    int i = s->perm_e[0] < s->perm_e[1] ? 0 : 1;   /* replace the older */
    if (!s->perm[i] && !(s->perm[i] = malloc((size_t)s->n * sizeof(int32_t)))) return NULL;
    int32_t *p = s->perm[i];
    for (int64_t j = 0; j < s->n; j++) p[j] = (int32_t)j;
    ar_rng g;
    rng_seed(&g, rng_derive(rng_derive(l->cfg.seed, 0x736f75726365ull + (uint64_t)k), (uint64_t)se));
    for (int64_t j = s->n - 1; j > 0; j--) {
        int64_t r = (int64_t)rng_below(&g, (uint64_t)j + 1);
        int32_t t = p[j]; p[j] = p[r]; p[r] = t;
    }
    s->perm_e[i] = se;
    return p;
}

/* Position p -> (source, sample index). Under mu. 0 or -1 (out of memory). */
static int locate(ldr *l, int64_t p, int *k, int64_t *rec) {
    if (!l->cfg.shuffle) {
        int64_t i = p % l->E;
        int s = 0;
        while (s + 1 < l->n_src && i >= l->off[s + 1]) s++;
        *k = s;
        *rec = i - l->off[s];
        return 0;
    }
    const int64_t e = p / l->E, j = p % l->E;
    if (l->map_e != e) {
        if (!l->map_src && (!(l->map_src = malloc((size_t)l->E * sizeof(int32_t))) ||
                            !(l->map_rank = malloc((size_t)l->E * sizeof(int32_t)))))
            return ar_errorf("out of memory");
        int64_t o = 0;
        for (int s = 0; s < l->n_src; s++) for (int64_t r = 0; r < l->src[s].n_epoch; r++) l->map_src[o++] = s;
        ar_rng g;
        rng_seed(&g, rng_derive(l->cfg.seed, (uint64_t)e));
        for (int64_t a = l->E - 1; a > 0; a--) {
            int64_t r = (int64_t)rng_below(&g, (uint64_t)a + 1);
            int32_t t = l->map_src[a]; l->map_src[a] = l->map_src[r]; l->map_src[r] = t;
        }
        int64_t cnt[LDR_MAX_SOURCES] = {0};
        for (int64_t a = 0; a < l->E; a++) l->map_rank[a] = (int32_t)cnt[l->map_src[a]]++;
        l->map_e = e;
    }
    const int s = l->map_src[j];
    const int64_t q = e * l->src[s].n_epoch + l->map_rank[j];
    const int32_t *perm = source_perm(l, s, q / l->src[s].n);
    if (!perm) return ar_errorf("out of memory");
    *k = s;
    *rec = perm[q % l->src[s].n];
    return 0;
}

/* The seed of the sample at position p (its sentence and answer choices). */
static uint64_t sample_seed(const ldr *l, int64_t p) { return rng_derive(l->cfg.seed ^ 0x73616d706c65ull, (uint64_t)p); }

/* ------------------------------------------------------------------ builder */

/* Box (x0 y0 x1 y1, pixels of an h x w image) into CLIP input pixels. */
static int map_box(const ldr *l, const double *b, int h, int w, float *out) {
    const int S = l->cfg.clip_S;
    double sx, sy, ox = 0, oy = 0;
    if (l->cfg.clip_crop) {
        int rh, rw;
        image_clip_shape(h, w, S, &rh, &rw);
        sx = (double)rw / w; sy = (double)rh / h;
        ox = (rw - S) / 2; oy = (rh - S) / 2;
    } else {
        sx = (double)S / w; sy = (double)S / h;
    }
    double v[4] = {b[0] * sx - ox, b[1] * sy - oy, b[2] * sx - ox, b[3] * sy - oy};
    for (int i = 0; i < 4; i++) v[i] = v[i] < 0 ? 0 : v[i] > S ? S : v[i];
    for (int i = 0; i < 4; i++) out[i] = (float)v[i];
    if (!(v[2] > v[0] && v[3] > v[1]))
        return ar_errorf("the box [%g, %g, %g, %g] lies outside the CLIP crop", b[0], b[1], b[2], b[3]);
    return 0;
}

static int set_mask_from_rle(slot *s, const rle_mask *m, int h, int w) {
    if ((int)m->h != h || (int)m->w != w)
        return ar_errorf("the mask is %ux%u, the image %dx%d", m->h, m->w, h, w);
    if (rle_decode_hw(m, s->u8)) return -1;
    for (size_t p = 0; p < (size_t)h * w; p++) s->it.masks[p] = s->u8[p] ? 1.0f : 0.0f;
    return 0;
}

static int set_tokens(ldr *l, slot *s, const ar_sample *smp) {
    const char *msgs[2] = {smp->question, smp->answer};
    conv_sample cs;
    if (conv_tokenize(l->enc, msgs, NULL, 2, &cs)) return -1;
    const int T = l->cfg.T;
    int n = 0;
    /* kept ids, the placeholder dropped without CLIP */
    for (int i = 0; i < cs.n && n < T; i++) {
        if (cs.ids[i] < 0 && l->cfg.clip_S <= 0) continue;
        s->it.tokens[n] = cs.ids[i];
        s->it.targets[n] = cs.labels[i];   /* unshifted for now */
        n++;
    }
    conv_sample_free(&cs);
    int sup = 0, segs = 0;
    for (int t = 0; t < T; t++) {
        int next = t + 1 < n ? s->it.targets[t + 1] : -100;
        if (t >= n) s->it.tokens[t] = l->pad;
        s->it.targets[t] = next;
        sup += next != -100;
        segs += t < n && s->it.tokens[t] == l->mk.seg;
    }
    if (!sup) return ar_errorf("no supervised token within the first %d", T);
    if (segs != smp->n_masks)
        return ar_errorf("%d [SEG] token%s within the first %d tokens for %d mask%s", segs, segs == 1 ? "" : "s", T,
                         smp->n_masks, smp->n_masks == 1 ? "" : "s");
    return 0;
}

/* Builds the sample of source k, index rec, with seed into s. 0, or -1 +
 * ar_error (the sample is broken). */
static int build(ldr *l, ar_fbank *fb, slot *s, int k, int64_t rec, uint64_t seed) {
    source *src = &l->src[k];
    sample_options so = l->cfg.so;
    so.seed = seed;
    so.no_mask_area = 1;   /* decoded once, below */
    ar_sample smp;
    int rc;
    const avs_record *avs = NULL;
    cj_record *cr = NULL;
    int frame = 0, sent = -1;
    size_t ref = 0;
    if (src->rj) {
        ref = ref_of_sample(src, rec, &sent);
        rc = sample_from_refer_sentence(src->rj, ref, sent, src->caption, &so, &smp);
    }
    else if (src->avs) {
        rc = sample_from_avs(src->avs, (size_t)rec, &so, &smp);
        size_t ri;
        if (!rc && !avs_sample(src->avs, (size_t)rec, &ri, &frame)) avs = &src->avs->records[ri];
    } else {
        cr = &src->cj.recs[src->idx[rec]];
        rc = sample_from_custom(&src->cj, src->idx[rec], src->name, &so, &smp);
        if (rc) ar_error_prefix("%s:%d: ", src->cj.path, cr->line);
    }
    if (rc) return ar_error_prefix("%s sample %lld: ", src->name, (long long)rec);   /* name the set and record */
    ldr_item *it = &s->it;
    it->source = k;
    it->record = (size_t)rec;
    it->group = src->rj ? (int64_t)ref : avs ? (int64_t)(avs - src->avs->records) : rec;
    it->part = src->rj ? (sent > 0 ? sent : 0) : frame;
    it->image_id = src->rj ? src->rj->recs[ref].image_id : -1;
    it->ref_kind = GDS_REF_NONE;
    it->mask_hw[0] = it->mask_hw[1] = 0;
    it->n_masks = 0;
    it->clip = NULL;
    it->sam = NULL;
    it->ref_data = NULL;
    snprintf(it->image, sizeof it->image, "%s", smp.image);
    snprintf(it->ref_path, sizeof it->ref_path, "%s", cr && cr->ref_path ? cr->ref_path : avs ? avs->wav : "");
    snprintf(it->question, sizeof it->question, "%s", smp.question);
    snprintf(it->answer, sizeof it->answer, "%s", smp.answer);
    it->ref = (int)smp.ref;
    memcpy(it->box, smp.box, sizeof it->box);
    ar_image img = {0};
    int ok = -1;
    if (set_tokens(l, s, &smp)) goto out;
    const int need_img = l->cfg.clip_S > 0 || (l->cfg.sam_S > 0 && smp.n_masks > 0);
    int H = smp.height, W = smp.width;
    if (need_img) {
        if (image_load(&img, smp.image, IMAGE_RGB)) goto out;
        if (img.h != H || img.w != W) {
            if (src->rj) { ar_errorf("%s is %dx%d, instances.json says %dx%d (width x height)", smp.image, img.w, img.h, W, H); goto out; }
            H = img.h; W = img.w;
        }
    } else if (H <= 0 || W <= 0) {
        if (image_probe_size(smp.image, &H, &W)) goto out;
    }
    if (H > l->max_h || W > l->max_w) {
        ar_errorf("%s is %dx%d, larger than the %dx%d the run was sized for", smp.image, W, H, l->max_w, l->max_h);
        goto out;
    }
    it->orig_hw[0] = H; it->orig_hw[1] = W;
    if (l->cfg.clip_S > 0) {
        if (image_clip_preprocess(s->clip_buf, &img, l->cfg.clip_S, l->cfg.clip_crop)) goto out;
        it->clip = s->clip_buf;
    }
    if (l->cfg.sam_S > 0 && smp.n_masks > 0) {
        if (image_sam_preprocess(s->sam_buf, &img, l->cfg.sam_S, NULL, NULL)) goto out;
        it->sam = s->sam_buf;
    }
    image_free(&img);
    /* masks at the original size */
    if (smp.n_masks > 0) {
        if (src->rj) {
            if (set_mask_from_rle(s, &src->rj->recs[ref].mask, H, W)) { ar_error_prefix("%s: ", smp.image); goto out; }
        } else if (avs) {
            ar_image m = {0};
            if (avs_load_mask(avs, frame, &m)) goto out;
            if (m.h > l->max_h || m.w > l->max_w) {
                ar_errorf("%s is %dx%d, larger than the %dx%d the run was sized for", avs->mask[frame], m.w, m.h, l->max_w, l->max_h);
                image_free(&m);
                goto out;
            }
            if (m.h != H || m.w != W) { it->mask_hw[0] = m.h; it->mask_hw[1] = m.w; }
            for (size_t p = 0; p < (size_t)m.h * m.w; p++) it->masks[p] = m.px[p] ? 1.0f : 0.0f;
            image_free(&m);
        } else {
            rle_mask m = {0};
            if (cj_record_mask(cr, &m)) { ar_error_prefix("%s:%d: ", src->cj.path, cr->line); goto out; }
            int r2 = set_mask_from_rle(s, &m, H, W);
            rle_free(&m);
            if (r2) { ar_error_prefix("%s:%d: ", src->cj.path, cr->line); goto out; }
        }
        it->n_masks = smp.n_masks;
    }
    /* the reference */
    if (smp.ref == SAMPLE_REF_BOX && l->cfg.clip_S > 0) {
        if (map_box(l, smp.box, H, W, it->ref_box)) { ar_error_prefix("%s: ", smp.image); goto out; }
        it->ref_kind = GDS_REF_BOX;
    } else if (smp.ref == SAMPLE_REF_IMAGE && l->cfg.clip_S > 0) {
        ar_image c = {0};
        if (image_load(&c, cr->ref_path, IMAGE_RGB)) goto out;
        int r2 = image_clip_preprocess(s->ref_buf, &c, l->cfg.clip_S, l->cfg.clip_crop);
        image_free(&c);
        if (r2) goto out;
        it->ref_data = s->ref_buf;
        it->ref_kind = GDS_REF_CROP;
    } else if (smp.ref == SAMPLE_REF_AUDIO && l->cfg.audio) {
        if (avs) {
            if (avs_load_audio(avs, fb, s->ref_buf)) goto out;
        } else {
            ar_wav w;
            if (ar_wav_read(cr->ref_path, &w)) goto out;
            int r2 = ar_audio_clips(&w, &l->aopt, fb, cr->ref_path, s->ref_buf);
            ar_wav_free(&w);
            if (r2) goto out;
        }
        it->ref_data = s->ref_buf;
        it->ref_kind = GDS_REF_AUDIO;
    }
    ok = 0;
out:
    if (ok) ar_error_prefix("%s sample %lld: ", src->name, (long long)rec);
    image_free(&img);
    ar_sample_free(&smp);
    return ok;
}

/* ------------------------------------------------------------------ slots */

/* Bytes of one sample slot (after alloc_slots sized it). */
static size_t slot_bytes(const ldr *l) {
    const size_t T = (size_t)l->cfg.T, mask = (size_t)l->max_h * l->max_w;
    return T * 2 * sizeof(int) + (l->clip_n + l->sam_n + mask + l->ref_n) * sizeof(float) + mask;
}

static int alloc_slots(ldr *l) {
    const size_t T = (size_t)l->cfg.T, mask = (size_t)l->max_h * l->max_w;
    l->clip_n = l->cfg.clip_S > 0 ? (size_t)3 * l->cfg.clip_S * l->cfg.clip_S : 0;
    l->sam_n = l->cfg.sam_S > 0 ? (size_t)3 * l->cfg.sam_S * l->cfg.sam_S : 0;
    l->ref_n = l->clip_n > AVS_AUDIO_FLOATS ? l->clip_n : AVS_AUDIO_FLOATS;
    if (!l->cfg.audio && !l->clip_n) l->ref_n = 0;
    const int total = l->nslots + l->B + 1;   /* the ring, ldr_build_row's B slots, the data-parallel probe */
    if (!(l->slots = calloc((size_t)total, sizeof *l->slots)) ||
        !(l->taken = calloc((size_t)l->nslots, 1)))
        return ar_errorf("out of memory");
    l->n_alloc = total;
    for (int i = 0; i < total; i++) {
        slot *s = &l->slots[i];
        s->it.tokens = malloc(T * sizeof(int));
        s->it.targets = malloc(T * sizeof(int));
        s->clip_buf = l->clip_n ? malloc(l->clip_n * sizeof(float)) : NULL;
        s->sam_buf = l->sam_n ? malloc(l->sam_n * sizeof(float)) : NULL;
        s->it.masks = malloc(mask * sizeof(float));
        s->ref_buf = l->ref_n ? malloc(l->ref_n * sizeof(float)) : NULL;
        s->u8 = malloc(mask);
        s->mask_cap = mask;
        if (!s->it.tokens || !s->it.targets || (l->clip_n && !s->clip_buf) || (l->sam_n && !s->sam_buf) || !s->it.masks ||
            (l->ref_n && !s->ref_buf) || !s->u8)
            return ar_errorf("loader: out of memory for %d sample slots (%zu MB each)", total, slot_bytes(l) >> 20);
    }
    return 0;
}

/* Builds position p into s (any thread; the epoch map under mu). */
static void build_at(ldr *l, ar_fbank *fb, slot *s, int64_t p, int locked) {
    int k;
    int64_t rec;
    if (!locked) pthread_mutex_lock(&l->mu);
    int rc = locate(l, p, &k, &rec);
    if (!locked) pthread_mutex_unlock(&l->mu);
    s->it.position = p;
    if (rc == 0) rc = build(l, fb, s, k, rec, sample_seed(l, p));
    s->status = rc ? 1 : 0;
    if (rc) snprintf(s->err, sizeof s->err, "%s", ar_error());
}

static int64_t dp_claim(ldr *l);
static int dp_wanted(const ldr *l, int64_t p);
static int64_t dp_max_window(const ldr *l);

static void *worker_main(void *arg) {
    worker *w = arg;
    ldr *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->stop) break;
        slot *s = NULL;
        if (!l->dp_per && l->primed && l->next_claim < l->consume_pos + l->prefetch) {
            for (int i = 0; i < l->nslots && !s; i++) if (l->slots[i].state == SLOT_FREE) s = &l->slots[i];
        }
        int64_t p = -1;
        if (l->dp_per && l->primed && (p = dp_claim(l)) >= 0)
            for (int i = 0; i < l->nslots && !s; i++) if (l->slots[i].state == SLOT_FREE) s = &l->slots[i];
        if (!s) { pthread_cond_wait(&l->cv_work, &l->mu); continue; }
        if (p < 0) p = l->next_claim++;
        const int64_t gen = l->gen;
        s->state = SLOT_BUSY;
        s->pos = p;
        s->gen = gen;
        s->checked = 0;
        int k;
        int64_t rec;
        int rc = locate(l, p, &k, &rec);
        pthread_mutex_unlock(&l->mu);
        s->it.position = p;
        if (rc == 0) rc = build(l, w->fb, s, k, rec, sample_seed(l, p));
        s->status = rc ? 1 : 0;
        if (rc) snprintf(s->err, sizeof s->err, "%s", ar_error());
        pthread_mutex_lock(&l->mu);
        s->state = (l->dp_per ? dp_wanted(l, s->pos) : s->gen == l->gen) ? SLOT_READY : SLOT_FREE;
        l->stats.built++;
        pthread_cond_broadcast(&l->cv_done);
        if (s->state == SLOT_FREE) pthread_cond_broadcast(&l->cv_work);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int ldr_start(ldr *l, int B, int max_h, int max_w) {
    if (l->started) return ar_errorf("loader: started twice");
    if (B < 1) return ar_errorf("loader: batch size %d", B);
    l->B = B;
    l->max_h = max_h > 0 ? max_h : l->cfg.max_h > 0 ? l->cfg.max_h : l->lim_h;
    l->max_w = max_w > 0 ? max_w : l->cfg.max_w > 0 ? l->cfg.max_w : l->lim_w;
    if (l->max_h < 1) l->max_h = 1;
    if (l->max_w < 1) l->max_w = 1;
    l->prefetch = l->cfg.prefetch > 0 ? l->cfg.prefetch : 2 * B;
    l->n_wk = l->cfg.threads > 0 ? l->cfg.threads : 0;
    l->nslots = l->n_wk ? l->prefetch + B : B;
    if (l->dp_per) {   /* the window, held whole, and room to build the next one during the step */
        l->nslots = (int)dp_max_window(l) + (l->n_wk ? l->prefetch : B);
        if (!(l->keep = malloc((size_t)l->dp_per * sizeof *l->keep))) return ar_errorf("out of memory");
        l->primed = 1;
    }
    if (alloc_slots(l)) return -1;
    ar_fbank_opts fo;
    ar_fbank_opts_imagebind(&fo);
    if (l->cfg.audio && !(l->fb_main = ar_fbank_create(&fo))) return -1;
    if (l->n_wk) {
        if (!(l->wk = calloc((size_t)l->n_wk, sizeof *l->wk))) return ar_errorf("out of memory");
        for (int i = 0; i < l->n_wk; i++) {
            l->wk[i].l = l;
            if (l->cfg.audio && !(l->wk[i].fb = ar_fbank_create(&fo))) return -1;
        }
        for (int i = 0; i < l->n_wk; i++) {
            if (pthread_create(&l->wk[i].th, NULL, worker_main, &l->wk[i])) return ar_errorf("loader: cannot start thread %d", i);
            l->wk[i].started = 1;
        }
    }
    l->started = 1;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A broken sample: counted, the first LDR_MAX_WARNINGS reported. Under mu or single-threaded. */
static void report_broken(ldr *l, const char *why) {
    l->stats.broken++;
    if (l->warned++ < LDR_MAX_WARNINGS)
        log_warn("data: sample skipped: %s%s", why, l->warned == LDR_MAX_WARNINGS ? " (later ones are only counted)" : "");
}

static int hook_ok(ldr *l, slot *s) {
    if (!l->hook) return 1;
    int rc = l->hook(l->hook_ctx, &s->it);
    if (rc) snprintf(s->err, sizeof s->err, "%s", rc > 0 ? ar_error() : "row hook failed");
    return rc == 0;
}

int ldr_next_batch(ldr *l, tds_cursor *cur, const ldr_item **items) {
    if (!l->started) return ar_errorf("loader: ldr_start was not called");
    if (l->dp_per) return ar_errorf("loader: in data-parallel mode (ldr_dp_setup) the batches come from ldr_dp_take");
    /* the cursor may come from a checkpoint: p0 must not overflow or go negative */
    if (l->E <= 0 || cur->epoch < 0 || cur->position < 0 || cur->epoch >= (INT64_MAX - cur->position) / l->E - 1)
        return ar_errorf("loader: bad data cursor (epoch %lld, position %lld)", (long long)cur->epoch,
                         (long long)cur->position);
    const int64_t p0 = cur->epoch * l->E + cur->position;
    int64_t broken = 0, run = 0;
    int b = 0;
    double t0 = now_s();
    if (!l->n_wk) {   /* in the caller's thread */
        int64_t p = p0;
        while (b < l->B) {
            slot *s = &l->slots[b];
            build_at(l, l->fb_main, s, p++, 1);
            l->stats.built++;
            if (s->status == 0 && hook_ok(l, s)) { items[b++] = &s->it; run = 0; continue; }
            report_broken(l, s->err);
            broken++;
            if (++run > l->E) { ar_errorf("loader: every sample of an epoch is broken (last: %s)", s->err); return -1; }
        }
        l->stats.wait_s += now_s() - t0;
        cur->epoch = p / l->E;
        cur->position = p % l->E;
        cur->skipped += broken;
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->nslots; i++) if (l->slots[i].state == SLOT_HELD) l->slots[i].state = SLOT_FREE;
    if (!l->primed || p0 != l->consume_pos) {   /* a new stream position: drop what was prefetched */
        l->gen++;
        for (int i = 0; i < l->nslots; i++) if (l->slots[i].state == SLOT_READY) l->slots[i].state = SLOT_FREE;
        memset(l->taken, 0, (size_t)l->nslots);
        l->consume_pos = l->next_claim = p0;
        l->primed = 1;
    }
    pthread_cond_broadcast(&l->cv_work);
    int rc = 0;
    while (b < l->B) {
        slot *s = NULL;
        for (int i = 0; i < l->nslots && !s; i++) {
            slot *c = &l->slots[i];
            if (c->state != SLOT_READY || c->gen != l->gen) continue;
            if (l->cfg.deterministic ? c->pos == l->consume_pos : 1) s = c;
        }
        if (!s) { pthread_cond_wait(&l->cv_done, &l->mu); continue; }
        /* consumed: advance the lowest unconsumed position */
        if (s->pos == l->consume_pos) {
            l->consume_pos++;
            while (l->taken[l->consume_pos % l->nslots]) { l->taken[l->consume_pos % l->nslots] = 0; l->consume_pos++; }
        } else {
            l->taken[s->pos % l->nslots] = 1;
        }
        if (s->status == 0 && hook_ok(l, s)) {
            s->state = SLOT_HELD;
            items[b++] = &s->it;
            run = 0;
        } else {
            report_broken(l, s->err);
            broken++;
            s->state = SLOT_FREE;
            if (++run > l->E) { rc = ar_errorf("loader: every sample of an epoch is broken (last: %s)", s->err); break; }
        }
        pthread_cond_broadcast(&l->cv_work);
    }
    l->stats.wait_s += now_s() - t0;
    const int64_t p = l->consume_pos;
    pthread_mutex_unlock(&l->mu);
    cur->epoch = p / l->E;
    cur->position = p % l->E;
    cur->skipped += broken;
    return rc;
}

int ldr_build_row(ldr *l, int64_t i, int slot_i, const ldr_item **it) {
    if (!l->started) return ar_errorf("loader: ldr_start was not called");
    if (slot_i < 0 || slot_i >= l->B) return ar_errorf("loader: slot %d (batch size %d)", slot_i, l->B);
    if (i < 0 || (!l->cfg.shuffle && i >= l->E)) return ar_errorf("loader: row %lld of %lld", (long long)i, (long long)l->E);
    slot *s = &l->slots[l->nslots + slot_i];
    build_at(l, l->fb_main, s, i, 0);
    pthread_mutex_lock(&l->mu);
    l->stats.built++;
    pthread_mutex_unlock(&l->mu);
    if (s->status == 0 && hook_ok(l, s)) { *it = &s->it; return 0; }
    ar_errorf("%s", s->err);
    pthread_mutex_lock(&l->mu);
    l->stats.broken++;
    pthread_mutex_unlock(&l->mu);
    return 1;
}

/* ------------------------------------------------------------------ data parallel */

int ldr_dp_setup(ldr *l, int rank, int nranks, int per_rank) {
    if (l->started) return ar_errorf("loader: ldr_dp_setup after ldr_start");
    if (nranks < 1 || rank < 0 || rank >= nranks || per_rank < 1)
        return ar_errorf("loader: data parallel: rank %d of %d, %d samples per rank", rank, nranks, per_rank);
    if (!l->cfg.shuffle) return ar_errorf("loader: data parallel reads the training stream (shuffle = 1)");
    if ((int64_t)nranks * per_rank > INT32_MAX / 2) return ar_errorf("loader: data parallel: %d x %d samples per step", nranks, per_rank);
    l->dp_rank = rank;
    l->dp_ranks = nranks;
    l->dp_per = per_rank;
    l->dp_slack = per_rank / 8 + 1;
    return 0;
}

/* A position's status in the summed vector: exactly one rank writes it, and
 * no sum of two reports equals either value, so overlapping windows (ranks
 * that disagree on the cursor, the rank count or per_rank) are caught. */
#define DP_USABLE 1.0
#define DP_BROKEN 1024.0
#define DP_MAX_STRETCH 1.25   /* windows at most this many times the share (more broken: built past them) */

/* The most positions of one rank's window (the ring holds it whole). */
static int64_t dp_max_window(const ldr *l) { return (int64_t)floor(DP_MAX_STRETCH * l->dp_per) + 1 + l->dp_slack; }

int64_t ldr_dp_status_len(const ldr *l) {
    return (int64_t)floor(DP_MAX_STRETCH * (double)l->dp_ranks * l->dp_per) + 1 + l->dp_slack;
}

int ldr_dp_slots(const ldr *l) { return l->dp_per ? l->nslots : 0; }
int ldr_dp_slack(const ldr *l) { return l->dp_per ? l->dp_slack : 0; }
size_t ldr_slot_bytes(const ldr *l) { return l->started ? slot_bytes(l) : 0; }

/* The step starting at cursor position G: rank k's window starts at
 * G + floor(k * per * f), where f = positions / usable samples read so far
 * (the cursor's skipped count; 1 before any, at most DP_MAX_STRETCH), so the
 * windows follow the stream's broken fraction and each tends to hold its
 * rank's share; the last rank's window reaches dp_slack further. Every rank
 * computes the same from the same cursor. [*lo, *hi): this rank's window;
 * *end: the last window's end. */
static void dp_range(const ldr *l, const tds_cursor *cur, int64_t *lo, int64_t *hi, int64_t *end) {
    const int k = l->dp_rank;
    const int64_t G = cur->epoch * l->E + cur->position, used = G - cur->skipped;
    double f = used > 0 && cur->skipped > 0 ? (double)G / (double)used : 1.0;
    if (!(f <= DP_MAX_STRETCH)) f = DP_MAX_STRETCH;
    const int R = l->dp_ranks;
    *lo = G + (int64_t)floor((double)k * l->dp_per * f);
    *hi = k == R - 1 ? G + (int64_t)floor((double)R * l->dp_per * f) + l->dp_slack
                     : G + (int64_t)floor((double)(k + 1) * l->dp_per * f);
    *end = G + (int64_t)floor((double)R * l->dp_per * f) + l->dp_slack;
}

/* The ring slot holding position p in a state of `states` (bits 1 << SLOT_*), or NULL. Under mu. */
static slot *find_pos(ldr *l, int64_t p, int states) {
    for (int i = 0; i < l->nslots; i++)
        if ((states >> l->slots[i].state & 1) && l->slots[i].pos == p) return &l->slots[i];
    return NULL;
}

#define USED ((1 << SLOT_BUSY) | (1 << SLOT_READY) | (1 << SLOT_HELD))

static slot *free_slot(ldr *l) {
    for (int i = 0; i < l->nslots; i++) if (l->slots[i].state == SLOT_FREE) return &l->slots[i];
    return NULL;
}

static int dp_wanted(const ldr *l, int64_t p) {
    if (p >= l->plan_lo && p < l->plan_hi) return 1;
    for (int i = 0; i < l->n_keep; i++) if (l->keep[i] == p) return 1;
    return 0;
}

/* The next position for a worker: the step's samples not built yet (keep)
 * before the window's, so that they always find a free slot; -1 none. Under mu. */
static int64_t dp_claim(ldr *l) {
    for (int i = 0; i < l->n_keep; i++)
        if (l->keep[i] >= 0 && !find_pos(l, l->keep[i], USED)) return l->keep[i];
    for (int64_t p = l->plan_lo; p < l->plan_hi; p++)
        if (!find_pos(l, p, USED)) return p;
    return -1;
}

/* Frees what the consumer no longer needs: held samples (release_held), and
 * built ones neither in the window nor among the step's. Under mu. */
static void dp_sweep(ldr *l, int release_held) {
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        if ((s->state == SLOT_HELD && release_held) || (s->state == SLOT_READY && !dp_wanted(l, s->pos)))
            s->state = SLOT_FREE;
    }
    pthread_cond_broadcast(&l->cv_work);
}

/* The built sample at position p, the row hook applied once: waits for a
 * worker, or builds it here without threads. NULL + ar_error. Under mu. */
static slot *dp_ready(ldr *l, int64_t p) {
    slot *s;
    while (!(s = find_pos(l, p, 1 << SLOT_READY))) {
        if (l->n_wk) { pthread_cond_wait(&l->cv_done, &l->mu); continue; }
        if (!(s = free_slot(l))) { ar_errorf("loader: data parallel: no free sample slot (%d)", l->nslots); return NULL; }
        s->pos = p;
        s->gen = l->gen;
        s->checked = 0;
        build_at(l, l->fb_main, s, p, 1);
        s->state = SLOT_READY;
        l->stats.built++;
    }
    if (!s->checked) {
        s->checked = 1;
        if (s->status == 0 && !hook_ok(l, s)) s->status = 1;
    }
    return s;
}

static int bad_start(const ldr *l, int64_t epoch, int64_t position) {
    return l->E <= 0 || epoch < 0 || position < 0 || epoch >= (INT64_MAX - position) / l->E - 1;
}

int ldr_dp_window(ldr *l, const tds_cursor *cur, double *status) {
    if (!l->started || !l->dp_per) return ar_errorf("loader: ldr_dp_window needs ldr_dp_setup, then ldr_start");
    if (bad_start(l, cur->epoch, cur->position))
        return ar_errorf("loader: bad data cursor (epoch %lld, position %lld)", (long long)cur->epoch, (long long)cur->position);
    const int64_t G = cur->epoch * l->E + cur->position, L = ldr_dp_status_len(l);
    int64_t lo, hi, end;
    dp_range(l, cur, &lo, &hi, &end);
    memset(status, 0, (size_t)L * sizeof *status);
    const double t0 = now_s();
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    l->n_keep = 0;
    l->plan_lo = lo;
    l->plan_hi = hi;
    dp_sweep(l, 1);
    for (int64_t p = lo; p < hi; p++) {
        slot *s = dp_ready(l, p);
        if (!s) { rc = -1; break; }
        status[p - G] = s->status ? DP_BROKEN : DP_USABLE;
    }
    l->stats.wait_s += now_s() - t0;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int ldr_dp_assign(ldr *l, tds_cursor *cur, const double *status, int64_t *mine) {
    if (!l->started || !l->dp_per) return ar_errorf("loader: ldr_dp_assign needs ldr_dp_setup, then ldr_start");
    if (bad_start(l, cur->epoch, cur->position))
        return ar_errorf("loader: bad data cursor (epoch %lld, position %lld)", (long long)cur->epoch, (long long)cur->position);
    const int64_t G = cur->epoch * l->E + cur->position;
    const int64_t need = (int64_t)l->dp_ranks * l->dp_per;
    int64_t *u = malloc((size_t)need * sizeof *u);
    if (!u) return ar_errorf("out of memory");
    int64_t lo, hi, L, nu = 0, p = G;
    dp_range(l, cur, &lo, &hi, &L);
    L -= G;   /* the windows' positions, G .. G + L - 1 */
    const double t0 = now_s();
    int rc = 0;
    /* consecutive broken samples, counted through the windows and past them
       alike: ldr_next_batch refuses the stream after more than E in a row, so
       every rank must refuse it at the same position too (G follows a usable
       sample, or the stream's start, as a sequential call's first position) */
    int64_t run = 0;
    pthread_mutex_lock(&l->mu);
    /* the window: every rank's report, up to the step's last usable sample */
    for (; p < G + L && nu < need; p++) {
        const double st = status[p - G];
        if (st == DP_USABLE) { u[nu++] = p; run = 0; continue; }
        if (st != DP_BROKEN) {   /* nobody's, or two ranks' (1 + 1, 1 + 1024, 1024 + 1024 are neither) */
            rc = ar_errorf("loader: data parallel: stream position %lld has status %g (expected one rank to report it: "
                           "do the ranks agree on data.* and the number of ranks?)", (long long)p, st);
            break;
        }
        slot *s = p >= lo && p < hi ? find_pos(l, p, 1 << SLOT_READY) : NULL;
        if (s) report_broken(l, s->err);   /* each broken sample reported by the rank that built it */
        if (++run > l->E) {
            rc = ar_errorf("loader: every sample of an epoch is broken (last: %s)",
                           s ? s->err : "stream position broken on another rank");
            break;
        }
    }
    /* more broken samples than the window's slack: every rank builds on until the step is full */
    slot *probe = &l->slots[l->nslots + l->B];
    for (; !rc && nu < need; p++) {
        pthread_mutex_unlock(&l->mu);
        build_at(l, l->fb_main, probe, p, 0);
        pthread_mutex_lock(&l->mu);
        l->stats.built++;
        l->stats.dp_past++;
        if (probe->status == 0 && hook_ok(l, probe)) { u[nu++] = p; run = 0; continue; }
        if (l->dp_rank == l->dp_ranks - 1) report_broken(l, probe->err);
        if (++run > l->E) rc = ar_errorf("loader: every sample of an epoch is broken (last: %s)", probe->err);
    }
    if (!rc) {
        const int64_t end = u[need - 1] + 1;
        memcpy(l->keep, u + (int64_t)l->dp_rank * l->dp_per, (size_t)l->dp_per * sizeof *l->keep);
        memcpy(mine, l->keep, (size_t)l->dp_per * sizeof *mine);
        l->n_keep = l->dp_per;
        cur->epoch = end / l->E;
        cur->position = end % l->E;
        cur->skipped += (end - G) - need;
        int64_t e2;
        dp_range(l, cur, &l->plan_lo, &l->plan_hi, &e2);   /* the next step's window, built during this one */
        dp_sweep(l, 0);
    }
    l->stats.wait_s += now_s() - t0;
    pthread_mutex_unlock(&l->mu);
    free(u);
    return rc;
}

int ldr_dp_take(ldr *l, const int64_t *pos, int n, const ldr_item **items) {
    if (!l->started || !l->dp_per) return ar_errorf("loader: ldr_dp_take needs ldr_dp_setup, then ldr_start");
    const double t0 = now_s();
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    dp_sweep(l, 1);
    for (int i = 0; i < n && !rc; i++) {
        int k = 0;
        while (k < l->n_keep && l->keep[k] != pos[i]) k++;
        if (k == l->n_keep) {
            rc = ar_errorf("loader: data parallel: stream position %lld is not one of this step's samples", (long long)pos[i]);
            break;
        }
        slot *s = dp_ready(l, pos[i]);
        if (!s) { rc = -1; break; }
        if (s->status) {
            rc = ar_errorf("loader: data parallel: stream position %lld was usable for the rank that built it first, "
                           "broken here (do the ranks read the same files?): %s", (long long)pos[i], s->err);
            break;
        }
        s->state = SLOT_HELD;
        l->keep[k] = -1;
        items[i] = &s->it;
    }
    l->stats.wait_s += now_s() - t0;
    pthread_mutex_unlock(&l->mu);
    return rc;
}
