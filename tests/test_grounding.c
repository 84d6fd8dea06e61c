/* tests/test_grounding.c — the AnyRef step inside `anyref train`: the grounding
 * HDF5 format (data/grounding_dataset.h), the planted data set
 * (data/planted.h) and training with model.kind = anyref.
 * 1. Round trip: a planted file read back row by row — tokens, the number of
 *    masks (= [SEG]s), original and AVSBench mask sizes, and every mask pixel
 *    against an independent redraw from the stored embedding.
 * 2. Broken rows are skipped and counted with their reason (mask_count
 *    mismatch, image index out of range, masks without an image, a size over
 *    the maximum); files whose datasets disagree are refused naming the dataset.
 * 3. Training end to end on planted data (configs/grounding-tiny.cfg, 300
 *    steps): the validation gIoU must beat the whole-image baseline (about
 *    0.5: the masks cover half the image) by 0.2, BCE and Dice must fall by
 *    20%. Why 0.2: a model that ignores the text and draws one fixed object
 *    scores about 0.25 * 1 + 0.75 * 1/3 = 0.5 with 4 objects, so the bar needs
 *    the [SEG] embedding to carry the referred object (measured: 0.78). Every
 *    loss term is in metrics.jsonl; a run stopped after 6 steps
 *    and resumed to 12 reproduces the uninterrupted run bit for bit.
 * 4. Config errors: model.kind = anyref without grounding data and the reverse.
 * Run from the repo root. */
#include "core/config.h"
#include "core/error.h"
#include "data/grounding_dataset.h"
#include "data/planted.h"
#include "tests/testlib.h"
#include "kernels/kernels.h"
#include "train/train.h"
#include "checkpoints/safetensors.h"
#include "model/params.h"
#include "model/sam_decoder.h"
#include "model/sam_prompt.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_tmp[256];
enum { C = 8, G = 4, K = 3 };

/* The mask of object k by the rule of planted.h, written independently. */
static int planted_pixel(const float *chan, int H0, int W0, int Hm, int Wm, int y, int x) {
    const int S = 16 * G, L = H0 > W0 ? H0 : W0;
    const int rh = (int)(H0 * ((double)S / L) + 0.5), rw = (int)(W0 * ((double)S / L) + 0.5);
    int gy = (int)(((y + 0.5) * H0 / Hm) * rh / H0 / 16), gx = (int)(((x + 0.5) * W0 / Wm) * rw / W0 / 16);
    gy = gy < G ? gy : G - 1;
    gx = gx < G ? gx : G - 1;
    return chan[gy * G + gx] > 0;
}

static void test_round_trip(void) {
    char p[400];
    snprintf(p, sizeof p, "%s/planted.h5", g_tmp);
    planted_cfg pc = {.C = C, .G = G, .K = K, .n = 64, .seed = 5};
    if (planted_write(p, &pc)) { t_fail("grounding planted write", "%s", ar_error()); return; }
    /* the stored embeddings, for the redraw (read before the reader holds the file) */
    float *emb = t_alloc((size_t)64 * C * G * G);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "image_embeddings", H5P_DEFAULT);
    herr_t er = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, emb);
    H5Dclose(d); H5Fclose(f);
    grounding_dataset *g = er < 0 ? NULL : gds_open(p, PLANTED_VOCAB_BASE + K, C, G, G);
    if (!g) { t_fail("grounding open", "%s", er < 0 ? "cannot read image_embeddings" : ar_error()); free(emb); return; }
    int mh, mw, mk;
    gds_limits(g, &mh, &mw, &mk);
    t_check(gds_rows(g) == 64 && gds_seq_len(g) == PLANTED_T && gds_seg_token(g) == PLANTED_SEG && mk == 2 &&
            mh <= 16 * G && mw <= 16 * G && mh >= 8 * G,
            "grounding planted header", "%lld rows, T %d, seg %d, max %d x %d, max masks %d", (long long)gds_rows(g),
            gds_seq_len(g), gds_seg_token(g), mh, mw, mk);
    gds_configure(g, PLANTED_SEG, 1, mh, mw);
    int tok[PLANTED_T], tgt[PLANTED_T], bad_px = 0, bad_rows = 0, nmask[3] = {0, 0, 0}, avs = 0;
    long px = 0;
    for (int64_t i = 0; i < 64; i++) {
        if (gds_read_row(g, i, PLANTED_T, 0, tok, tgt) != 0) { bad_rows++; continue; }
        gds_batch b;
        gds_finish_batch(g, 1, &b);
        int segs = 0, words[2], nw = 0;
        for (int t = 0; t < PLANTED_T; t++) {
            if (t > 0 && tok[t] == PLANTED_SEG) { segs++; if (nw < 2) words[nw++] = tok[t - 1] - PLANTED_VOCAB_BASE; }
        }
        nmask[b.n_masks < 3 ? b.n_masks : 2]++;
        if (segs != b.n_masks || (b.n_masks && !b.img[0])) bad_rows++;
        const int H0 = b.orig_hw[0], W0 = b.orig_hw[1];
        const int Hm = b.mask_hw[0] > 0 ? b.mask_hw[0] : H0, Wm = b.mask_hw[0] > 0 ? b.mask_hw[1] : W0;
        avs += b.mask_hw[0] > 0 && b.n_masks > 0;
        for (int k = 0; k < b.n_masks; k++) {
            const float *chan = emb + ((size_t)i * C + words[k]) * G * G;
            for (int y = 0; y < Hm; y++)
                for (int x = 0; x < Wm; x++, px++)
                    bad_px += (b.masks[k][y * Wm + x] > 0.5f) != planted_pixel(chan, H0, W0, Hm, Wm, y, x);
        }
    }
    t_check(bad_rows == 0 && bad_px == 0 && nmask[0] && nmask[1] && nmask[2] && avs > 0,
            "grounding planted round trip", "64 rows (%d / %d / %d with 0 / 1 / 2 masks, %d at AVSBench mask sizes): "
            "%d rows wrong, %d of %ld mask pixels differ from the redraw", nmask[0], nmask[1], nmask[2], avs, bad_rows,
            bad_px, px);
    free(emb);
    gds_close(g);
}

static void test_broken_rows(void) {
    /* 6 rows of T = 4: <s> c [SEG] </s>, one mask each of 3 x 4 */
    enum { N = 6, T = 4 };
    int ids[N * T], lab[N * T], idx[N], ohw[2 * N], cnt[N];
    for (int i = 0; i < N; i++) {
        const int row[T] = {1, 7, 3, 2};
        for (int t = 0; t < T; t++) { ids[i * T + t] = row[t]; lab[i * T + t] = t >= 2 ? row[t] : -100; }
        idx[i] = i % 2; ohw[2 * i] = 3; ohw[2 * i + 1] = 4; cnt[i] = 1;
    }
    cnt[1] = 2;       /* one [SEG], two masks */
    idx[2] = 5;       /* no such image */
    idx[3] = -1;      /* masks without an image */
    ohw[8] = 30;      /* row 4: 30 x 4, over the maximum 8 x 8 */
    uint8_t masks[8 * 30 * 4];
    memset(masks, 1, sizeof masks);
    float emb[2 * C * G * G];
    t_fill_normal(emb, 2 * C * G * G, 1.0f, 3);
    char p[400];
    snprintf(p, sizeof p, "%s/broken.h5", g_tmp);
    if (gds_write(p, ids, lab, N, T, 10, 0, 3, emb, 2, C, G, G, idx, ohw, NULL, cnt, masks, NULL)) {
        t_fail("grounding broken write", "%s", ar_error());
        return;
    }
    grounding_dataset *g = gds_open(p, 10, C, G, G);
    if (!g || gds_configure(g, 3, 2, 8, 8)) { t_fail("grounding broken open", "%s", ar_error()); gds_close(g); return; }
    const char *want[N] = {NULL, "mask_count = 2", "image_index = 5", "image_index = -1", "exceeds the largest size", NULL};
    int tok[2 * T], tgt[2 * T], ok = 1;
    char msgs[1200] = "";
    for (int i = 0; i < N; i++) {
        int rc = gds_read_row(g, i, T, 0, tok, tgt);
        int good = want[i] ? rc == 1 && strstr(ar_error(), want[i]) != NULL : rc == 0;
        ok &= good;
        if (rc == 1 && strlen(msgs) < 900) snprintf(msgs + strlen(msgs), sizeof msgs - strlen(msgs), " [%s]", ar_error());
    }
    t_check(ok, "grounding broken rows named", "%s", msgs);
    tds_cursor cur = {.seed = 9};
    gds_batch b;
    int rc = gds_next_batch(g, &cur, T, tok, tgt, &b);
    int rc2 = gds_next_batch(g, &cur, T, tok, tgt, &b);
    t_check(rc == 0 && rc2 == 0 && b.n_masks == 2 && cur.skipped >= 4, "grounding broken rows skipped and counted",
            "two batches of 2 from 2 good rows of 6: %lld skipped, %d masks in the last batch", (long long)cur.skipped,
            b.n_masks);
    /* a data-parallel rank steps over the others' batches without reading
     * pixels: the same rows judged broken, the cursor where reading leaves it
     * (through epoch boundaries: 2 good rows of 6, 7 batches) */
    tds_cursor ca = {.seed = 4}, cb = {.seed = 4};
    int same = 1, rs = 0;
    char first_diff[200] = "";
    for (int k = 0; k < 7 && same && !rs; k++) {
        rs = gds_next_batch(g, &ca, T, tok, tgt, &b) || gds_skip_batch(g, &cb, T, tok, tgt);
        same = ca.epoch == cb.epoch && ca.position == cb.position && ca.skipped == cb.skipped;
        if (!same)
            snprintf(first_diff, sizeof first_diff, "batch %d: read (%lld, %lld, %lld) skip (%lld, %lld, %lld)", k + 1,
                     (long long)ca.epoch, (long long)ca.position, (long long)ca.skipped, (long long)cb.epoch,
                     (long long)cb.position, (long long)cb.skipped);
    }
    t_check(!rs && same && ca.epoch >= 2, "grounding skip_batch leaves the cursor where reading does",
            "7 batches: cursor (epoch %lld, position %lld, skipped %lld) %s", (long long)ca.epoch, (long long)ca.position,
            (long long)ca.skipped, same ? "both" : first_diff);
    gds_close(g);
    /* refused at open: wrong embedding size; a token-only file */
    grounding_dataset *g2 = gds_open(p, 10, C + 1, G, G);
    char e1[400];
    snprintf(e1, sizeof e1, "%s", ar_error());
    snprintf(p, sizeof p, "%s/tokens_only.h5", g_tmp);
    tds_write(p, ids, lab, NULL, N, T, 10, 0);
    grounding_dataset *g3 = gds_open(p, 10, C, G, G);
    t_check(!g2 && !g3 && strstr(e1, "image_embeddings") && strstr(e1, "[2,8,4,4]") &&
            strstr(ar_error(), "image_embeddings: missing"), "grounding files refused at open", "%s | %s", e1, ar_error());
}

static int run(const char *const *ov, int n) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c) return -1;
    int rc = cfg_load_file(c, "configs/grounding-tiny.cfg");
    for (int i = 0; i < n && rc == 0; i++) rc = cfg_override(c, ov[i]);
    if (rc == 0) rc = train_run(c);
    cfg_free(c);
    return rc;
}



/* gIoU of the whole-image mask over the validation masks (the trivial baseline). */
static double whole_image_giou(const char *path) {
    grounding_dataset *g = gds_open(path, PLANTED_VOCAB_BASE + 4, 32, 8, 8);
    if (!g) return NAN;
    int mh, mw;
    gds_limits(g, &mh, &mw, NULL);
    gds_configure(g, PLANTED_SEG, 1, mh, mw);
    int tok[PLANTED_T], tgt[PLANTED_T], n = 0;
    double s = 0;
    for (int64_t i = 0; i < gds_rows(g); i++) {
        if (gds_read_row(g, i, PLANTED_T, 0, tok, tgt)) continue;
        gds_batch b;
        gds_finish_batch(g, 1, &b);
        const int hw = b.mask_hw[0] > 0 ? b.mask_hw[0] * b.mask_hw[1] : b.orig_hw[0] * b.orig_hw[1];
        for (int k = 0; k < b.n_masks; k++, n++) {
            double on = 0;
            for (int p = 0; p < hw; p++) on += b.masks[k][p] > 0.5f;
            s += on / hw;   /* IoU of all-ones with y = |y| / |image| */
        }
    }
    gds_close(g);
    return n ? s / n : NAN;
}

static void test_training(void) {
    char data[400], tr[450], va[450], dir[400], rdir[450];
    snprintf(data, sizeof data, "%s/planted", g_tmp);
    snprintf(tr, sizeof tr, "data.train=%s/train.h5", data);
    snprintf(va, sizeof va, "data.val=%s/val.h5", data);
    char *argv[] = {"planted", "--out", data, "--train", "256", "--val", "48", "--seed", "3"};
    if (planted_main(9, argv)) { t_fail("grounding train data", "%s", ar_error()); return; }
    snprintf(dir, sizeof dir, "%s/learn", g_tmp);
    snprintf(rdir, sizeof rdir, "run.dir=%s", dir);
    const int steps = 300;
    const char *ov[] = {tr, va, rdir, "train.steps=300", "train.min_val_giou=0", "train.eval_every=100", "train.save_every=0", "train.threads=2"};
    int rc = run(ov, 8);
    char vpath[450];
    snprintf(vpath, sizeof vpath, "%s/val.h5", data);
    const double base = whole_image_giou(vpath);
    const double g0 = t_metric(dir, 100, "val_giou"), g1 = t_metric(dir, steps, "val_giou"), c1 = t_metric(dir, steps, "val_ciou");
    const double b0 = t_metric(dir, 1, "bce"), b1 = t_metric(dir, steps, "bce"), d0 = t_metric(dir, 1, "dice"), d1 = t_metric(dir, steps, "dice");
    const double ce1 = t_metric(dir, steps, "val_ce");
    t_check(rc == 0 && g1 > base + 0.2 && b1 < 0.8 * b0 && d1 < 0.8 * d0 && ce1 < 0.3 && isfinite(c1),
            "grounding training learns the referred object",
            "%d steps: val gIoU %.3f (step 100: %.3f; whole-image baseline %.3f), cIoU %.3f; train bce %.3f -> %.3f, "
            "dice %.3f -> %.3f; val ce %.4f%s%s", steps, g1, g0, base, c1, b0, b1, d0, d1, ce1, rc ? "; " : "",
            rc ? ar_error() : "");

    /* resume: 6 + 6 == 12, bitwise (every loss term, lr, grad_norm) */
    char a[400], b[400], ra[450], rb[450];
    snprintf(a, sizeof a, "%s/full", g_tmp); snprintf(b, sizeof b, "%s/split", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b);
    const char *o1[] = {tr, va, ra, "train.steps=12", "train.eval_every=6", "train.grad_accum=2", "train.min_val_giou=0"};
    const char *o2[] = {tr, va, rb, "train.steps=12", "train.eval_every=6", "train.grad_accum=2", "train.min_val_giou=0",
                        "train.stop_after=6"};
    const char *o3[] = {tr, va, rb, "train.steps=12", "train.eval_every=6", "train.grad_accum=2", "train.min_val_giou=0",
                        "train.resume=auto"};
    int r1 = run(o1, 7), r2 = run(o2, 8), r3 = run(o3, 8);
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    int lines = 0;
    for (char *s = ma; s && *s; s++) lines += *s == '\n';
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && ma && mb && lines == 12 && !strcmp(ma, mb) && strstr(ma, "\"dice\":") &&
            isfinite(t_metric(b, 12, "val_giou")) && t_metric(a, 12, "val_giou") == t_metric(b, 12, "val_giou"), "grounding resume: 6 + 6 steps == 12 steps, bitwise",
            "runs %d/%d/%d, %d metric lines, identical: %s", r1, r2, r3, lines, ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    free(ma); free(mb);

    /* model.attention = flash: the AnyRef step (refocusing reads the last
     * layer's probabilities, which it keeps) gives the same curve */
    char f[400], rf[450];
    snprintf(f, sizeof f, "%s/flash", g_tmp);
    snprintf(rf, sizeof rf, "run.dir=%s", f);
    const char *o4[] = {tr, va, rf, "train.steps=12", "train.eval_every=6", "train.grad_accum=2", "train.min_val_giou=0",
                        "model.attention=flash"};
    int r4 = run(o4, 8);
    double worst = 0;
    const char *keys[] = {"loss", "bce", "dice", "grad_norm"};
    for (int st = 1; st <= 12; st++)
        for (int k = 0; k < 4; k++) {
            const double x = t_metric(f, st, keys[k]), y = t_metric(a, st, keys[k]);
            const double d = fabs(x - y) / (fabs(y) > 1e-12 ? fabs(y) : 1e-12);
            if (!(d <= worst)) worst = d;   /* NaN -> NaN */
        }
    t_check(r4 == 0 && worst <= 1e-5, "grounding with model.attention = flash: the full-attention curve",
            "12 steps: loss, bce, dice, grad_norm max rel diff %.1e (limit 1e-5)", worst);
}

/* sam.init: SAM's prompt encoder and mask decoder by their original names.
 * With every mask_decoder.* tensor zero the mask logits are exactly 0, so the
 * first step's BCE is ln 2 whatever the rest of the model does; a file that
 * lacks one tensor is refused. */
static void test_sam_init(void) {
    char data[400], tr[450], f1[400], f2[400], s1[450], s2[450], rd[450];
    snprintf(data, sizeof data, "%s/planted", g_tmp);
    snprintf(tr, sizeof tr, "data.train=%s/train.h5", data);
    snprintf(f1, sizeof f1, "%s/sam.safetensors", g_tmp);
    snprintf(f2, sizeof f2, "%s/sam_partial.safetensors", g_tmp);
    snprintf(s1, sizeof s1, "sam.init=%s", f1);
    snprintf(s2, sizeof s2, "sam.init=%s", f2);
    snprintf(rd, sizeof rd, "run.dir=%s/saminit", g_tmp);
    ar_params ps;
    params_init_empty(&ps);
    sam_prompt_cfg pc = {.embed_dim = 32, .grid_h = 8, .grid_w = 8};
    sam_decoder_cfg dc = {.dim = 32, .depth = 2, .heads = 4, .mlp_dim = 64, .downsample = 2, .num_mask_tokens = 4,
                          .iou_hidden = 32, .H = 8, .W = 8, .n_sparse = 1};
    if (sam_prompt_declare(&pc, &ps) || sam_decoder_declare(&dc, &ps, "lisa") || params_alloc(&ps)) {
        t_fail("grounding sam.init setup", "%s", ar_error());
        return;
    }
    params_randomize(&ps, 77);
    for (int i = 0; i < ps.n; i++)
        if (!strncmp(ps.p[i].name, "mask_decoder.", 13)) k_zero(ps.w + ps.p[i].off, ps.p[i].numel * sizeof(float));
    int w1 = st_save(f1, &ps, NULL, NULL, NULL, NULL, 0);
    ps.n--;   /* the last declared tensor left out */
    int w2 = st_save(f2, &ps, NULL, NULL, NULL, NULL, 0);
    ps.n++;
    params_free(&ps);
    const char *o1[] = {tr, "data.val=", rd, s1, "train.steps=1", "train.min_val_giou=0"};
    int rc = w1 || w2 ? -1 : run(o1, 6);
    char dir[450];
    snprintf(dir, sizeof dir, "%s/saminit", g_tmp);
    const double bce = t_metric(dir, 1, "bce");
    const char *o2[] = {tr, "data.val=", rd, s2, "train.steps=1", "train.min_val_giou=0"};
    int rc2 = run(o2, 6);
    t_check(rc == 0 && fabs(bce - log(2.0)) < 1e-6 && rc2 == -1 && strstr(ar_error(), "sam.init") &&
            strstr(ar_error(), "lacks 1 of the model's 122 tensors"), "grounding sam.init loads SAM by its names",
            "zero mask decoder: step-1 bce %.7f (ln 2 = %.7f); partial file: %s", bce, log(2.0), ar_error());
}

/* Images and references as tokens in `anyref train`: planted data with CLIP
 * inputs, box / crop / audio references (data/planted.h --clip/--fbank), a
 * tiny CLIP + trainable mlp2x projector + ImageBind audio: the run trains
 * (losses finite, nothing skipped), the spliced sequence length defaults to
 * the file's + the image and reference tokens, and 5 + 5 steps == 10 steps
 * bit for bit. */
static void test_references_run(void) {
    char data[400], tr[450], va[450], a[400], b[400], ra[450], rb[450];
    snprintf(data, sizeof data, "%s/planted_mm", g_tmp);
    char *argv[] = {"planted", "--out", data, "--train", "64", "--val", "16", "--clip", "32", "--fbank", "32x40"};
    if (planted_main(11, argv)) { t_fail("grounding references data", "%s", ar_error()); return; }
    snprintf(tr, sizeof tr, "data.train=%s/train.h5", data);
    snprintf(va, sizeof va, "data.val=%s/val.h5", data);
    snprintf(a, sizeof a, "%s/mm_full", g_tmp); snprintf(b, sizeof b, "%s/mm_split", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b);
#define MM_KEYS "model.vocab=18", "clip.image_size=32", "clip.patch=8", "clip.width=24", "clip.layers=2", \
        "clip.heads=4", "clip.mlp_dim=48", "projector.type=mlp2x_gelu", "projector.trainable=1", \
        "audio.embed_dim=32", "audio.depth=2", "audio.heads=4", "audio.kernel=8", "audio.stride=6", \
        "audio.out_dim=48", "train.steps=10", "train.eval_every=5", "train.min_val_giou=0", "train.batch_size=4"
    const char *o1[] = {tr, va, ra, MM_KEYS};
    const char *o2[] = {tr, va, rb, MM_KEYS, "train.stop_after=5"};
    const char *o3[] = {tr, va, rb, MM_KEYS, "train.resume=auto"};
#undef MM_KEYS
    const int n1 = (int)(sizeof o1 / sizeof *o1);
    int r1 = run(o1, n1), r2 = run(o2, n1 + 1), r3 = run(o3, n1 + 1);
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    const double l1 = t_metric(a, 1, "loss"), l10 = t_metric(a, 10, "loss"), sk = t_metric(a, 10, "skipped");
    const double vg = t_metric(a, 10, "val_giou");
    char cfgp[450], line[256];
    snprintf(cfgp, sizeof cfgp, "%s/config.cfg", a);
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && ma && mb && !strcmp(ma, mb) && isfinite(l1) && isfinite(l10) &&
            sk == 0 && isfinite(vg), "grounding with images and references (CLIP, box, crop, audio)",
            "runs %d/%d/%d%s%s; loss %.3f -> %.3f, val gIoU %.3f, %g rows skipped; 5 + 5 == 10 bitwise: %s", r1, r2, r3,
            r1 || r2 || r3 ? ": " : "", r1 || r2 || r3 ? ar_error() : "", l1, l10, vg, sk,
            ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    (void)line;
    free(ma); free(mb);

    /* the feature cache: `anyref cache` fills it (every image, crop and audio
     * of both files), a second fill finds everything; training that reads it
     * matches training without it; a cache filled under other CLIP/ImageBind
     * weights (another seed) is not used; resume with a cache is bitwise */
    char cpath[450], ck[470], cdir[450], rc1[470], rc2[470], rn[470];
    snprintf(cpath, sizeof cpath, "%s/features.h5", g_tmp);
    snprintf(ck, sizeof ck, "data.cache=%s", cpath);
    snprintf(cdir, sizeof cdir, "%s/mm_cache", g_tmp);
    snprintf(rc1, sizeof rc1, "run.dir=%s/c1", cdir); snprintf(rc2, sizeof rc2, "run.dir=%s/c2", cdir);
    snprintf(rn, sizeof rn, "run.dir=%s/n", cdir);
#define MM_KEYS2 "model.vocab=18", "clip.image_size=32", "clip.patch=8", "clip.width=24", "clip.layers=2", \
        "clip.heads=4", "clip.mlp_dim=48", "projector.type=mlp2x_gelu", "projector.trainable=1", \
        "audio.embed_dim=32", "audio.depth=2", "audio.heads=4", "audio.kernel=8", "audio.stride=6", \
        "audio.out_dim=48", "train.steps=6", "train.eval_every=3", "train.min_val_giou=0", "train.batch_size=4"
    const char *f1[] = {tr, va, rc1, ck, MM_KEYS2};
    const int nf = (int)(sizeof f1 / sizeof *f1);
    ar_config *c = cfg_new(train_schema, train_schema_len);
    int fill = cfg_load_file(c, "configs/grounding-tiny.cfg");
    for (int i = 0; i < nf && !fill; i++) fill = cfg_override(c, f1[i]);
    if (!fill) fill = train_cache(c);
    cfg_free(c);
    const char *t1[] = {tr, va, rc1, ck, MM_KEYS2};
    const char *t2[] = {tr, va, rn, MM_KEYS2};
    const char *t3[] = {tr, va, rc2, ck, MM_KEYS2, "train.seed=99"};
    char rn2[470];
    snprintf(rn2, sizeof rn2, "run.dir=%s/n2", cdir);
    const char *t4[] = {tr, va, rn2, MM_KEYS2, "train.seed=99"};
#undef MM_KEYS2
    int q1 = run(t1, nf), q2 = run(t2, nf - 1), q3 = run(t3, nf + 1), q4 = run(t4, nf);
    char d1[470], d2[470], d3[470], d4[470];
    snprintf(d1, sizeof d1, "%s/c1", cdir); snprintf(d2, sizeof d2, "%s/n", cdir);
    snprintf(d3, sizeof d3, "%s/c2", cdir); snprintf(d4, sizeof d4, "%s/n2", cdir);
    double e_same = 0, e_other = 0;
    for (int st = 1; st <= 6; st++) {
        e_same = fmax(e_same, fabs(t_metric(d1, st, "loss") - t_metric(d2, st, "loss")) / t_metric(d2, st, "loss"));
        e_other = fmax(e_other, fabs(t_metric(d3, st, "loss") - t_metric(d4, st, "loss")) / t_metric(d4, st, "loss"));
    }
    t_check(fill == 0 && q1 == 0 && q2 == 0 && q3 == 0 && q4 == 0 && e_same < 1e-4 && e_other < 1e-4,
            "grounding feature cache (anyref cache, training reads it, other weights miss)",
            "fill %d, runs %d/%d/%d/%d; 6 steps with the cache vs without: loss rel diff %.1e; with a cache of other "
            "encoder weights (seed 99) vs without: %.1e (a wrongly used entry would be far off)",
            fill, q1, q2, q3, q4, e_same, e_other);
}

/* First object name of an HDF5 group (H5Literate callback). */
static herr_t first_name(hid_t g, const char *name, const H5L_info_t *info, void *out) {
    (void)g; (void)info;
    snprintf(out, 200, "%s", name);
    return 1;
}

/* The SAM image encoder in `anyref train` (sam_encoder.* on /sam_pixels) and
 * the feature cache for it: `anyref cache` fills it; training from it equals
 * training without it; an entry whose values were overwritten on disk is
 * detected (checksum), recomputed and the run still equals the uncached one. */
static void test_sam_encoder_run(void) {
    char data[400], tr[450], va[450], ck[470], cpath[450], d1[450], d2[450], d3[450], r1[470], r2[470], r3[470];
    snprintf(data, sizeof data, "%s/planted_sam", g_tmp);
    char *argv[] = {"planted", "--out", data, "--train", "32", "--val", "8", "--sam"};
    if (planted_main(8, argv)) { t_fail("grounding sam encoder data", "%s", ar_error()); return; }
    snprintf(tr, sizeof tr, "data.train=%s/train.h5", data);
    snprintf(va, sizeof va, "data.val=%s/val.h5", data);
    snprintf(cpath, sizeof cpath, "%s/sam_features.h5", g_tmp);
    snprintf(ck, sizeof ck, "data.cache=%s", cpath);
    snprintf(d1, sizeof d1, "%s/sam_c", g_tmp); snprintf(d2, sizeof d2, "%s/sam_n", g_tmp);
    snprintf(d3, sizeof d3, "%s/sam_bad", g_tmp);
    snprintf(r1, sizeof r1, "run.dir=%s", d1); snprintf(r2, sizeof r2, "run.dir=%s", d2);
    snprintf(r3, sizeof r3, "run.dir=%s", d3);
#define SK "sam_encoder.model=custom", "sam_encoder.img_size=128", "sam_encoder.patch=16", "sam_encoder.dim=32", \
        "sam_encoder.depth=2", "sam_encoder.heads=2", "sam_encoder.window=3", "sam_encoder.global=1", \
        "train.steps=6", "train.eval_every=3", "train.min_val_giou=0"
    const char *fill[] = {tr, va, r1, ck, SK};
    const int nf = (int)(sizeof fill / sizeof *fill);
    ar_config *c = cfg_new(train_schema, train_schema_len);
    int rc = cfg_load_file(c, "configs/grounding-tiny.cfg");
    for (int i = 0; i < nf && !rc; i++) rc = cfg_override(c, fill[i]);
    if (!rc) rc = train_cache(c);
    cfg_free(c);
    const char *o1[] = {tr, va, r1, ck, SK};
    const char *o2[] = {tr, va, r2, SK};
    const char *o3[] = {tr, va, r3, ck, SK};
#undef SK
    int q1 = run(o1, nf), q2 = run(o2, nf - 1);
    /* overwrite the values of one cached embedding */
    int damaged = 0;
    hid_t f = H5Fopen(cpath, H5F_ACC_RDWR, H5P_DEFAULT);
    char grp[200] = "", ent[200] = "";
    if (f >= 0 && H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, first_name, grp) > 0) {
        hid_t g = H5Gopen2(f, grp, H5P_DEFAULT);
        if (g >= 0 && H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, first_name, ent) > 0) {
            hid_t d = H5Dopen2(g, ent, H5P_DEFAULT);
            float junk[32 * 8 * 8];
            for (int i = 0; i < 32 * 8 * 8; i++) junk[i] = 1e3f;
            damaged = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, junk) >= 0;
            if (d >= 0) H5Dclose(d);
        }
        if (g >= 0) H5Gclose(g);
    }
    if (f >= 0) H5Fclose(f);
    int q3 = run(o3, nf);
    double e1 = 0, e3 = 0;
    for (int st = 1; st <= 6; st++) {
        e1 = fmax(e1, fabs(t_metric(d1, st, "loss") - t_metric(d2, st, "loss")) / t_metric(d2, st, "loss"));
        e3 = fmax(e3, fabs(t_metric(d3, st, "loss") - t_metric(d2, st, "loss")) / t_metric(d2, st, "loss"));
    }
    /* the cache holds embeddings computed in `anyref cache`'s batches, so the
     * losses agree to float32 rounding, not bit for bit */
    t_check(rc == 0 && q1 == 0 && q2 == 0 && q3 == 0 && damaged && e1 < 1e-5 && e3 < 1e-5,
            "grounding SAM image encoder in training, through the feature cache",
            "fill %d, runs %d/%d/%d; loss rel diff with the cache vs without: %.1e; after overwriting one cached embedding "
            "(%s): %.1e (the checksum catches it, the entry is recomputed)", rc, q1, q2, q3, e1,
            damaged ? "done" : "NOT DONE", e3);
}

/* Max |w| of checkpoint tensor /weights/<name> (-1 when unreadable). */
static double ckpt_absmax(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    char ds[300];
    snprintf(ds, sizeof ds, "weights/%s", name);
    hid_t d = H5Dopen2(f, ds, H5P_DEFAULT);
    double m = -1;
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        hssize_t n = H5Sget_simple_extent_npoints(sp);
        float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        if (v && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) {
            m = 0;
            for (hssize_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
        }
        free(v);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    return m;
}

/* clip.trainable and sam_encoder.trainable: both encoders train with the rest
 * (their zero-initialised LayerNorm biases move off zero, so their gradients
 * arrived and the optimiser stepped them), and 3 + 3 steps == 6 bitwise. */
static void test_trainable_encoders_run(void) {
    char data[400], tr[450], va[450], a[400], b[400], ra[450], rb[450];
    snprintf(data, sizeof data, "%s/planted_all", g_tmp);
    char *argv[] = {"planted", "--out", data, "--train", "16", "--val", "4", "--clip", "32", "--sam"};
    if (planted_main(10, argv)) { t_fail("grounding trainable encoders data", "%s", ar_error()); return; }
    snprintf(tr, sizeof tr, "data.train=%s/train.h5", data);
    snprintf(va, sizeof va, "data.val=%s/val.h5", data);
    snprintf(a, sizeof a, "%s/tr_full", g_tmp); snprintf(b, sizeof b, "%s/tr_split", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b);
#define TK "model.vocab=18", "clip.image_size=32", "clip.patch=8", "clip.width=24", "clip.layers=2", "clip.heads=4", \
        "clip.mlp_dim=48", "clip.trainable=1", "sam_encoder.model=custom", "sam_encoder.img_size=128", \
        "sam_encoder.patch=16", "sam_encoder.dim=32", "sam_encoder.depth=2", "sam_encoder.heads=2", \
        "sam_encoder.window=3", "sam_encoder.global=1", "sam_encoder.trainable=1", "train.steps=6", \
        "train.eval_every=3", "train.min_val_giou=0", "train.batch_size=4"
    const char *o1[] = {tr, va, ra, TK};
    const char *o2[] = {tr, va, rb, TK, "train.stop_after=3"};
    const char *o3[] = {tr, va, rb, TK, "train.resume=auto"};
#undef TK
    const int n1 = (int)(sizeof o1 / sizeof *o1);
    int r1 = run(o1, n1), r2 = run(o2, n1 + 1), r3 = run(o3, n1 + 1);
    char ck[500];
    snprintf(ck, sizeof ck, "%s/checkpoints/step_000006.h5", a);
    const double clip_b = ckpt_absmax(ck, "vision_model.encoder.layers.0.layer_norm1.bias");
    const double sam_b = ckpt_absmax(ck, "image_encoder.neck.3.bias");
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && clip_b > 0 && sam_b > 0 && ma && mb && !strcmp(ma, mb),
            "grounding with trainable CLIP and SAM image encoders",
            "runs %d/%d/%d%s%s; after 6 steps max |bias| CLIP layer_norm1 %.2e, SAM neck.3 %.2e (initialised to 0); "
            "3 + 3 == 6 bitwise: %s", r1, r2, r3, r1 || r2 || r3 ? ": " : "", r1 || r2 || r3 ? ar_error() : "", clip_b,
            sam_b, ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    free(ma); free(mb);
}

/* `anyref cache` refuses when every encoder it could fill is trainable. */
static void test_cache_trainable_refused(void) {
    char tr[450], ck[470];
    snprintf(tr, sizeof tr, "data.train=%s/planted_sam/train.h5", g_tmp);
    snprintf(ck, sizeof ck, "data.cache=%s/never.h5", g_tmp);
    const char *ov[] = {tr, "data.val=", ck, "sam_encoder.model=custom", "sam_encoder.img_size=128", "sam_encoder.patch=16",
                        "sam_encoder.dim=32", "sam_encoder.depth=2", "sam_encoder.heads=2", "sam_encoder.window=3",
                        "sam_encoder.global=1", "sam_encoder.trainable=1"};
    ar_config *c = cfg_new(train_schema, train_schema_len);
    int rc = cfg_load_file(c, "configs/grounding-tiny.cfg");
    for (size_t i = 0; i < sizeof ov / sizeof *ov && !rc; i++) rc = cfg_override(c, ov[i]);
    if (!rc) rc = train_cache(c);
    cfg_free(c);
    t_check(rc == -1 && strstr(ar_error(), "trainable"), "grounding cache refuses trainable encoders", "%s", ar_error());
}

static void test_config_errors(void) {
    const char *o1[] = {"data.kind=synthetic", "model.vocab=0"};
    int rc = run(o1, 2);
    char e1[400];
    snprintf(e1, sizeof e1, "%s", ar_error());
    ar_config *c = cfg_new(train_schema, train_schema_len);
    int rc2 = cfg_load_file(c, "configs/demo.cfg") || cfg_override(c, "data.kind=grounding") || train_run(c);
    cfg_free(c);
    t_check(rc == -1 && rc2 && strstr(e1, "set data.kind = grounding") && strstr(ar_error(), "set model.kind = anyref"),
            "grounding config errors", "%s | %s", e1, ar_error());
}

int main(void) {
    setenv("ANYREF_PROGRESS", "off", 1);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/anyref_test_grounding_XXXXXX");
    if (!mkdtemp(g_tmp)) { t_fail("grounding tmpdir", "mkdtemp failed"); return 1; }
    test_round_trip();
    test_broken_rows();
    test_training();
    test_sam_init();
    test_references_run();
    test_sam_encoder_run();
    test_trainable_encoders_run();
    test_cache_trainable_refused();
    test_config_errors();
    char cmd[400];
    if (getenv("KEEP")) return t_exit_code();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return t_exit_code();
}
