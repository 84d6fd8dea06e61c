/* data/planted.c — the planted referring data set (see planted.h). */
#include "data/planted.h"
#include "data/grounding_dataset.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ResizeLongestSide.get_preprocess_shape (as model/sam_post.c; data/ does not
 * depend on model/, and this is one line). */
static void resize_shape(int H0, int W0, int S, int *rh, int *rw) {
    double scale = S * 1.0 / (H0 > W0 ? H0 : W0);
    *rh = (int)(H0 * scale + 0.5);
    *rw = (int)(W0 * scale + 0.5);
}

static void draw_mask(uint8_t *out, const float *chan, int G, int S, int H0, int W0, int Hm, int Wm) {
    int rh, rw;
    resize_shape(H0, W0, S, &rh, &rw);
    for (int y = 0; y < Hm; y++) {
        double yo = (y + 0.5) * H0 / Hm, yr = yo * rh / H0;
        int gy = (int)(yr / 16.0);
        if (gy >= G) gy = G - 1;
        for (int x = 0; x < Wm; x++) {
            double xo = (x + 0.5) * W0 / Wm, xr = xo * rw / W0;
            int gx = (int)(xr / 16.0);
            if (gx >= G) gx = G - 1;
            out[(size_t)y * Wm + x] = chan[gy * G + gx] > 0.0f;
        }
    }
}

int planted_write(const char *path, const planted_cfg *c) {
    if (c->C < 1 || c->G < 1 || c->K < 1 || c->K > c->C || c->n < 1 || c->G > 256)
        return ar_errorf("planted: dim %d, grid %d, objects %d (1..dim), samples %lld: out of range", c->C, c->G, c->K,
                         (long long)c->n);
    const int mmode = c->clip_S > 0, audio = mmode && c->fbank_h > 0 && c->fbank_w > 0;
    const int T = mmode ? PLANTED_T_MM : PLANTED_T, S = 16 * c->G;
    const int V = PLANTED_VOCAB_BASE + c->K + (mmode ? PLANTED_MARKERS : 0);
    const int IMG = PLANTED_VOCAB_BASE + c->K, IM_S = IMG + 1, IM_E = IMG + 2, REF_S = IMG + 3, REF_E = IMG + 4,
              AU_S = IMG + 5, AU_E = IMG + 6;
    const int64_t N = c->n;
    const size_t chw = (size_t)c->C * c->G * c->G;
    int *ids = calloc((size_t)N * T, sizeof(int)), *lab = malloc((size_t)N * T * sizeof(int));
    int *idx = malloc((size_t)N * sizeof(int)), *ohw = malloc((size_t)N * 2 * sizeof(int));
    int *mhw = calloc((size_t)N * 2, sizeof(int)), *cnt = calloc((size_t)N, sizeof(int));
    float *emb = malloc((size_t)N * chw * sizeof(float));
    size_t cap = (size_t)N * 2 * S * S;   /* at most two masks of at most S x S per sample */
    uint8_t *masks = malloc(cap ? cap : 1);
    const size_t cn = mmode ? (size_t)3 * c->clip_S * c->clip_S : 0, fn = audio ? (size_t)3 * c->fbank_h * c->fbank_w : 0;
    float *clip = mmode ? malloc((size_t)N * cn * sizeof(float)) : NULL;
    float *crops = mmode ? malloc((size_t)N * cn * sizeof(float)) : NULL;
    float *fb = audio ? malloc((size_t)N * fn * sizeof(float)) : NULL;
    float *box = calloc((size_t)N * 4, sizeof(float));
    int *rkind = malloc((size_t)N * sizeof(int)), *rindex = malloc((size_t)N * sizeof(int));
    const size_t sn = c->sam_pixels ? (size_t)3 * S * S : 0;
    float *sam = sn ? malloc((size_t)N * sn * sizeof(float)) : NULL;
    int64_t ncrop = 0, naudio = 0;
    int rc = -1;
    if (!ids || !lab || !idx || !ohw || !mhw || !cnt || !emb || !masks || !box || !rkind || !rindex ||
        (mmode && (!clip || !crops)) || (audio && !fb) || (sn && !sam)) {
        ar_errorf("planted: out of memory");
        goto out;
    }
    ar_rng r;
    rng_seed(&r, rng_derive(c->seed, 11));
    size_t used = 0;
    for (int64_t i = 0; i < N; i++) {
        float *e = emb + (size_t)i * chw;
        rng_fill_normal(&r, e, chw, 0.0f, 1.0f);
        if (sam) rng_fill_normal(&r, sam + (size_t)i * sn, sn, 0.0f, 1.0f);
        idx[i] = (int)i;
        int H0 = S / 2 + (int)rng_below(&r, (uint64_t)(S - S / 2 + 1));
        int W0 = S / 2 + (int)rng_below(&r, (uint64_t)(S - S / 2 + 1));
        ohw[2 * i] = H0; ohw[2 * i + 1] = W0;
        int Hm = H0, Wm = W0;
        if (rng_below(&r, 4) == 0) {
            Hm = S / 4 + (int)rng_below(&r, (uint64_t)(S / 2 - S / 4 + 1));
            Wm = S / 4 + (int)rng_below(&r, (uint64_t)(S / 2 - S / 4 + 1));
            if (Hm < 1) Hm = 1;
            if (Wm < 1) Wm = 1;
            mhw[2 * i] = Hm; mhw[2 * i + 1] = Wm;
        }
        int kind = (int)rng_below(&r, 4);   /* 0,1: one object; 2: two; 3: no mask */
        int a = (int)rng_below(&r, (uint64_t)c->K), b = (int)rng_below(&r, (uint64_t)c->K);
        if (c->K > 1) while (b == a) b = (int)rng_below(&r, (uint64_t)c->K);
        int *t = ids + (size_t)i * T, *l = lab + (size_t)i * T, n = 0, ans;
        const int wa = PLANTED_VOCAB_BASE + a, wb = PLANTED_VOCAB_BASE + b;
        t[n++] = 1;
        if (mmode) t[n++] = IMG;
        int rk = -1;
        if (mmode) {   /* a reference: box 1/4, crop 1/8, audio 1/8 (with audio) */
            const int u = (int)rng_below(&r, 8);
            rk = u < 2 ? 0 : u == 2 ? 1 : (u == 3 && audio) ? 2 : -1;
            rng_fill_normal(&r, clip + (size_t)i * cn, cn, 0.0f, 1.0f);
        }
        rkind[i] = rk; rindex[i] = -1;
        if (rk == 0) {
            const float S2 = (float)c->clip_S;
            float x1 = (float)rng_uniform(&r) * S2 * 0.6f, y1 = (float)rng_uniform(&r) * S2 * 0.6f;
            box[4 * i] = x1; box[4 * i + 1] = y1;
            box[4 * i + 2] = x1 + 1.0f + (float)rng_uniform(&r) * (S2 - 1.0f - x1);
            box[4 * i + 3] = y1 + 1.0f + (float)rng_uniform(&r) * (S2 - 1.0f - y1);
        } else if (rk == 1) {
            rng_fill_normal(&r, crops + (size_t)ncrop * cn, cn, 0.0f, 1.0f);
            rindex[i] = (int)ncrop++;
        } else if (rk == 2) {
            rng_fill_normal(&r, fb + (size_t)naudio * fn, fn, 0.0f, 1.0f);
            rindex[i] = (int)naudio++;
        }
#define REFPAIR() do { if (rk == 2) { t[n++] = AU_S; t[n++] = AU_E; } else if (rk >= 0) { t[n++] = REF_S; t[n++] = REF_E; } } while (0)
        if (kind <= 1) {
            t[n++] = 4; t[n++] = wa; REFPAIR(); ans = n;
            t[n++] = wa; t[n++] = PLANTED_SEG;
        } else if (kind == 2) {
            t[n++] = 4; t[n++] = wa; t[n++] = 6; t[n++] = wb; REFPAIR(); ans = n;
            t[n++] = wa; t[n++] = PLANTED_SEG; t[n++] = wb; t[n++] = PLANTED_SEG;
        } else {
            t[n++] = 5; t[n++] = wa; REFPAIR(); ans = n;
            t[n++] = wa; t[n++] = wa;
        }
        t[n++] = 2;
        for (int p = 0; p < T; p++) l[p] = (p >= ans && p < n) ? t[p] : -100;
        const int objs[2] = {a, b}, nobj = kind <= 1 ? 1 : kind == 2 ? 2 : 0;
        cnt[i] = nobj;
        for (int o = 0; o < nobj; o++) {
            draw_mask(masks + used, e + (size_t)objs[o] * c->G * c->G, c->G, S, H0, W0, Hm, Wm);
            used += (size_t)Hm * Wm;
        }
    }
#undef REFPAIR
    gds_mm_data mm = {.sam_S = S, .sam_pixels = sam, .S = c->clip_S, .clip_pixels = clip, .ref_kind = rkind, .ref_index = rindex, .ref_box = box,
                      .n_crops = ncrop, .crop_pixels = crops, .n_audio = naudio, .fbank_h = c->fbank_h,
                      .fbank_w = c->fbank_w, .fbank = fb, .image_token = IMG, .im_start = IM_S, .im_end = IM_E,
                      .ref_start = REF_S, .ref_end = REF_E, .audio_start = audio ? AU_S : -1, .audio_end = audio ? AU_E : -1};
    if (!mmode) {   /* only the SAM inputs: no reference datasets or markers */
        gds_mm_data only = {.sam_S = S, .sam_pixels = sam, .image_token = -1, .im_start = -1, .im_end = -1,
                            .ref_start = -1, .ref_end = -1, .audio_start = -1, .audio_end = -1};
        mm = only;
    }
    rc = gds_write(path, ids, lab, N, T, V, 0, PLANTED_SEG, emb, N, c->C, c->G, c->G, idx, ohw, mhw, cnt, masks,
                   mmode || sam ? &mm : NULL);
out:
    free(ids); free(lab); free(idx); free(ohw); free(mhw); free(cnt); free(emb); free(masks);
    free(clip); free(crops); free(fb); free(box); free(rkind); free(rindex); free(sam);
    return rc;
}

static int parse_i64(const char *s, long long lo, long long hi, long long *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int planted_main(int argc, char **argv) {
    const char *out = NULL;
    long long seed = 1, dim = 32, grid = 8, objs = 4, ntrain = 512, nval = 64, clipS = 0;
    int fh = 0, fw = 0, sam = 0;
    struct { const char *name; long long *v; long long lo, hi; } opt[] = {
        {"--seed", &seed, 0, LLONG_MAX}, {"--dim", &dim, 1, 4096}, {"--grid", &grid, 1, 256},
        {"--objects", &objs, 1, 4096}, {"--train", &ntrain, 1, 100000000}, {"--val", &nval, 0, 100000000},
        {"--clip", &clipS, 0, 4096}};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) { out = argv[++i]; continue; }
        if (!strcmp(argv[i], "--sam")) { sam = 1; continue; }
        if (!strcmp(argv[i], "--fbank") && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &fh, &fw) != 2 || fh < 1 || fw < 1 || fh > 4096 || fw > 4096) {
                fprintf(stderr, "anyref data planted: --fbank needs HxW, e.g. 128x204\n");
                return 2;
            }
            continue;
        }
        int hit = 0;
        for (size_t k = 0; k < sizeof opt / sizeof opt[0]; k++) {
            if (strcmp(argv[i], opt[k].name)) continue;
            hit = 1;
            if (i + 1 >= argc || parse_i64(argv[i + 1], opt[k].lo, opt[k].hi, opt[k].v)) {
                fprintf(stderr, "anyref data planted: %s needs an integer in [%lld, %lld]\n", opt[k].name, opt[k].lo, opt[k].hi);
                return 2;
            }
            i++;
        }
        if (!hit) {
            fprintf(stderr, "anyref data planted: unknown argument '%s'\n"
                            "usage: anyref data planted --out DIR [--seed N] [--dim C] [--grid G] [--objects K] "
                            "[--train N] [--val N] [--clip S] [--fbank HxW] [--sam]\n", argv[i]);
            return 2;
        }
    }
    if (!out) { fprintf(stderr, "anyref data planted: --out DIR is required\n"); return 2; }
    char p[4096];
    if ((fh || fw) && !clipS) { fprintf(stderr, "anyref data planted: --fbank needs --clip\n"); return 2; }
    planted_cfg c = {.C = (int)dim, .G = (int)grid, .K = (int)objs, .n = ntrain, .seed = (uint64_t)seed,
                     .clip_S = (int)clipS, .fbank_h = fh, .fbank_w = fw, .sam_pixels = sam};
    snprintf(p, sizeof p, "%s/train.h5", out);
    if (planted_write(p, &c)) { log_error("%s", ar_error()); return 1; }
    log_info("planted: %lld training samples (embeddings %lld x %lld x %lld, %lld objects) -> %s", ntrain, dim, grid,
             grid, objs, p);
    if (nval > 0) {
        c.n = nval;
        c.seed = (uint64_t)seed ^ 0x5bd1e995u;
        snprintf(p, sizeof p, "%s/val.h5", out);
        if (planted_write(p, &c)) { log_error("%s", ar_error()); return 1; }
        log_info("planted: %lld validation samples -> %s", nval, p);
    }
    return 0;
}
