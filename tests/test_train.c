/* tests/test_train.c — the training command end to end: a run stopped after
 * 10 steps and resumed to 20 reproduces the uninterrupted 20-step run bit for
 * bit (loss, lr, grad_norm of every step), the trainable set and checkpoints
 * of a LoRA run, and config errors. */
#include "core/config.h"
#include "core/error.h"
#include "tests/testlib.h"
#include "train/train.h"
#include "data/synthetic.h"
#include "data/token_dataset.h"
#include "core/rng.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/safetensors.h"
#include "model/llama.h"
#include "kernels/kernels.h"
#include "core/dist.h"
#include "data/conversation.h"
#include "data/tokenizer.h"
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

static int run(const char *const *overrides, int n) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c) return -1;
    int rc = cfg_load_file(c, "configs/demo.cfg");
    for (int i = 0; i < n && rc == 0; i++) rc = cfg_override(c, overrides[i]);
    if (rc == 0) rc = train_run(c);
    cfg_free(c);
    return rc;
}


static void test_resume_bitwise(void) {
    char a[300], b[300], ra[320], rb[320];
    snprintf(a, sizeof a, "%s/full", g_tmp); snprintf(b, sizeof b, "%s/split", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b);
    const char *common[] = {"train.steps=20", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                            "train.trainable=lora+embed", "train.threads=2", "train.grad_accum=2", "train.batch_size=8"};
    const char *o1[10], *o2[11], *o3[11];
    memcpy(o1, common, sizeof common); memcpy(o2, common, sizeof common); memcpy(o3, common, sizeof common);
    o1[8] = ra; o2[8] = rb; o3[8] = rb;
    o2[9] = "train.stop_after=10"; o3[9] = "train.resume=auto";
    int rc1 = run(o1, 9), rc2 = run(o2, 10);
    char p10[400];
    snprintf(p10, sizeof p10, "%s/checkpoints/step_000010.h5", b);
    struct stat sb;
    int have10 = stat(p10, &sb) == 0;
    int rc3 = run(o3, 10);
    int rc4 = run(o3, 10);   /* the run is complete: a rerun trains nothing and changes nothing */
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    int lines = 0;
    for (char *s = ma; s && *s; s++) lines += *s == '\n';
    t_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && rc4 == 0 && have10 && ma && mb && lines == 20 && strcmp(ma, mb) == 0,
            "train resume: 10 + 10 steps == 20 steps, bitwise",
            "runs %d/%d/%d, checkpoint at 10: %s, %d metric lines, identical: %s%s%s", rc1, rc2, rc3,
            have10 ? "yes" : "no", lines, ma && mb && !strcmp(ma, mb) ? "yes" : "NO",
            rc1 || rc2 || rc3 ? " error: " : "", rc1 || rc2 || rc3 ? ar_error() : "");
    free(ma); free(mb);
}

static void test_learns_below_baseline(void) {
    char d[300], rd[320];
    snprintf(d, sizeof d, "%s/learn", g_tmp); snprintf(rd, sizeof rd, "run.dir=%s", d);
    const char *o[] = {rd, "train.steps=150", "train.eval_every=0", "train.min_accuracy=0"};
    int rc = run(o, 4);
    char *m = t_metrics_core(d);
    double first = 0, last = 0;
    int n = 0;
    for (char *s = m; s && (s = strstr(s, "\"loss\":")); s++, n++) {
        double v = atof(s + 7);
        if (n == 0) first = v;
        last = v;
    }
    /* the answer digits are uniform over 10 (ln 10 = 2.30); EOS is certain */
    t_check(rc == 0 && n == 150 && first > 2.0 && last < 0.5, "train learns: loss far below the uniform baseline",
            "%d steps, loss %.3f -> %.3f (uniform over digits: 2.303)", n, first, last);
    free(m);
}

/* The same task through the HDF5 token format (HF label convention: labels are
 * the tokens themselves on the answer, -100 elsewhere): training learns, the
 * validation loss is reported, and a resumed run matches an uninterrupted one. */
static void test_token_data(void) {
    synth_task t;
    synth_init(&t, "copy", 4, 10);
    enum { N = 96 };
    int ids[N * 11], labels[N * 11], tg[11];
    ar_rng r; rng_seed(&r, 77);
    for (int i = 0; i < N; i++) {
        synth_sample(&t, &r, ids + i * t.T, tg);
        for (int j = 0; j < t.T; j++) labels[i * t.T + j] = j >= t.prompt_len ? ids[i * t.T + j] : -100;
    }
    char tr[300], va[300], d1[300], d2[300];
    snprintf(tr, sizeof tr, "%s/train.h5", g_tmp); snprintf(va, sizeof va, "%s/val.h5", g_tmp);
    snprintf(d1, sizeof d1, "%s/tok_full", g_tmp); snprintf(d2, sizeof d2, "%s/tok_split", g_tmp);
    if (tds_write(tr, ids, labels, NULL, N - 16, t.T, t.vocab, -1) ||
        tds_write(va, ids + (N - 16) * t.T, labels + (N - 16) * t.T, NULL, 16, t.T, t.vocab, -1)) {
        t_fail("train tokens data", "writing the dataset: %s", ar_error()); return;
    }
    char a_tr[320], a_va[320], a_d1[320], a_d2[320];
    snprintf(a_tr, sizeof a_tr, "data.train=%s", tr); snprintf(a_va, sizeof a_va, "data.val=%s", va);
    snprintf(a_d1, sizeof a_d1, "run.dir=%s", d1); snprintf(a_d2, sizeof a_d2, "run.dir=%s", d2);
    const char *o1[] = {"data.kind=tokens", a_tr, a_va, "model.vocab=13", "train.steps=120", "train.batch_size=16",
                        "train.eval_every=60", "train.eval_batches=4", "train.min_accuracy=0", a_d1};
    int rc1 = run(o1, 10);
    char *m1 = t_metrics_core(d1);
    double first = 0, last = 0, val = 0;
    int n = 0;
    for (char *s = m1; s && (s = strstr(s, "\"loss\":")); s++, n++) { double v = atof(s + 7); if (!n) first = v; last = v; }
    char p[400];
    snprintf(p, sizeof p, "%s/metrics.jsonl", d1);
    FILE *f = fopen(p, "r"); char line[2048]; while (f && fgets(line, sizeof line, f)) { char *q = strstr(line, "\"val_loss\":"); if (q && q[11] != 'n') val = atof(q + 11); }
    if (f) fclose(f);
    t_check(rc1 == 0 && n == 120 && first > 2.0 && last < 0.6 && val > 0 && val < 0.8,
            "train on HDF5 tokens: learns, reports val_loss", "rc %d, %d steps, loss %.3f -> %.3f, val_loss %.3f%s%s",
            rc1, n, first, last, val, rc1 ? ": " : "", rc1 ? ar_error() : "");
    /* resume across an epoch boundary: 80 rows / 16 = 5 steps per epoch */
    const char *o2[] = {"data.kind=tokens", a_tr, a_va, "model.vocab=13", "train.steps=12", "train.batch_size=16",
                        "train.eval_every=0", "train.min_accuracy=0", a_d1, "train.resume=never"};
    const char *o3[] = {"data.kind=tokens", a_tr, a_va, "model.vocab=13", "train.steps=12", "train.batch_size=16",
                        "train.eval_every=0", "train.min_accuracy=0", a_d2, "train.stop_after=7"};
    const char *o4[] = {"data.kind=tokens", a_tr, a_va, "model.vocab=13", "train.steps=12", "train.batch_size=16",
                        "train.eval_every=0", "train.min_accuracy=0", a_d2, "train.resume=auto"};
    int r2 = run(o2, 10), r3 = run(o3, 10), r4 = run(o4, 10);
    char *ma = t_metrics_core(d1), *mb = t_metrics_core(d2);
    t_check(!r2 && !r3 && !r4 && ma && mb && !strcmp(ma, mb), "train on HDF5 tokens: 7 + 5 resumed steps == 12 steps",
            "runs %d/%d/%d, identical: %s", r2, r3, r4, ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    free(m1); free(ma); free(mb);
}

/* model.init: Hugging Face weights by name; a larger model.vocab adds rows that
 * are the mean of the checkpoint's rows (embed_tokens and lm_head). With lr 0
 * the step-1 checkpoint holds exactly the initial weights. */
static void test_model_init_resize(void) {
    llama_cfg c = {.vocab = 13, .dim = 64, .layers = 2, .heads = 4, .kv_heads = 2, .mlp_hidden = 176,
                   .max_seq = 15, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .train_base = 1};
    ar_params a; params_init_empty(&a);
    llama_declare(&c, &a); params_alloc(&a); params_randomize(&a, 99);
    char init[300], d[300], ai[320], ad[320];
    snprintf(init, sizeof init, "%s/init.safetensors", g_tmp); snprintf(d, sizeof d, "%s/resize", g_tmp);
    snprintf(ai, sizeof ai, "model.init=%s", init); snprintf(ad, sizeof ad, "run.dir=%s", d);
    if (st_save(init, &a, NULL, NULL, NULL, NULL, 0)) { t_fail("train model.init", "st_save: %s", ar_error()); return; }
    const char *o[] = {ai, ad, "model.vocab=15", "train.lr=0", "train.steps=1", "train.warmup_steps=0",
                       "train.eval_every=0", "train.min_accuracy=0", "data.eval_samples=1"};
    int rc = run(o, 9);
    llama_cfg cb = c; cb.vocab = 15;
    ar_params b; params_init_empty(&b);
    llama_declare(&cb, &b); params_alloc(&b);
    char ck[400];
    snprintf(ck, sizeof ck, "%s/checkpoints/step_000001.h5", d);
    int lrc = rc ? -1 : ckpt_load(ck, &b, NULL, 0);
    int same = 1, mean_ok = 1;
    /* the weights live on the backend (device memory under CUDA): compare host copies */
    float *ha = malloc(a.nw * sizeof(float)), *hb = malloc(b.nw * sizeof(float));
    if (!ha || !hb) lrc = -1;
    else { k_download(ha, a.w, a.nw * sizeof(float)); k_download(hb, b.w, b.nw * sizeof(float)); }
    for (int i = 0; !lrc && i < a.n; i++) {
        const ar_param *pa = &a.p[i], *pb = params_find(&b, pa->name);
        const float *wa = ha + pa->off, *wb = hb + pb->off;
        if (pa->numel == pb->numel) { same &= !memcmp(wa, wb, pa->numel * sizeof(float)); continue; }
        size_t D = (size_t)pa->shape[1];
        same &= !memcmp(wa, wb, pa->numel * sizeof(float));          /* rows 0..12 */
        for (size_t dd = 0; dd < D; dd++) {
            double m = 0;
            for (int v = 0; v < 13; v++) m += wa[v * D + dd];
            m /= 13;
            for (int v = 13; v < 15; v++) mean_ok &= fabs(wb[v * D + dd] - m) < 1e-6;
        }
    }
    t_check(rc == 0 && lrc == 0 && same && mean_ok, "train model.init with vocabulary resize 13 -> 15",
            "run %d, load %d, original weights kept: %s, new rows = mean row: %s%s%s", rc, lrc, same ? "yes" : "NO",
            mean_ok ? "yes" : "NO", rc || lrc ? ": " : "", rc || lrc ? ar_error() : "");
    free(ha); free(hb);
    params_free(&a); params_free(&b);
}

/* The toy run: a generated LLaVA-format conversation set (question about
 * an object's colour, answer naming it) through the tokenizer, the vicuna_v1_1
 * template and `prepare`'s writer, then trained as HDF5 tokens. The final loss
 * must fall well below the unigram entropy of the supervised tokens. */
static void test_conversations_learn(void) {
    static const char *obj[] = {"apple", "sky", "grass", "snow", "coal", "banana", "blood", "sea"};
    static const char *col[] = {"red", "blue", "green", "white", "black", "yellow", "red", "blue"};
    char json[300], h5[300], d[300];
    snprintf(json, sizeof json, "%s/conv.json", g_tmp); snprintf(h5, sizeof h5, "%s/conv.h5", g_tmp);
    snprintf(d, sizeof d, "%s/conv_run", g_tmp);
    FILE *f = fopen(json, "w");
    if (!f) { t_fail("train conversations", "cannot write %s", json); return; }
    fprintf(f, "[");
    for (int i = 0; i < 160; i++) {
        int k = (i * 5 + i / 8) % 8;
        fprintf(f, "%s{\"id\": \"c%d\", \"conversations\": [{\"from\": \"human\", \"value\": \"What colour is the %s?\"},"
                   " {\"from\": \"gpt\", \"value\": \"The %s is %s.\"}]}", i ? ", " : "", i, obj[k], obj[k], col[k]);
    }
    fprintf(f, "]\n");
    fclose(f);
    tokenizer *tok = tok_load("tests/fixtures/tok_bpe.model");
    conv_dataset ds;
    memset(&ds, 0, sizeof ds);
    int T = 192;
    int64_t rows = -1;
    if (tok && conv_load_json(json, tok, "vicuna_v1_1", T, &ds) == 0) rows = conv_write_tokens(&ds, h5, T, tok_vocab_size(tok));
    if (rows != 160) { t_fail("train conversations", "preparing: %lld rows: %s", (long long)rows, ar_error()); conv_dataset_free(&ds); tok_free(tok); return; }
    /* unigram entropy (nats) of the supervised next-token targets */
    int V = tok_vocab_size(tok);
    token_dataset *td = tds_open(h5, V);
    double *cnt = calloc((size_t)V, sizeof(double)), total = 0, H = 0;
    int tk[192], tg[192];
    for (int64_t i = 0; td && i < rows; i++)
        if (tds_read_row(td, i, T, tk, tg) == 0)
            for (int t = 0; t < T; t++) if (tg[t] >= 0) { cnt[tg[t]]++; total++; }
    for (int v = 0; v < V; v++) if (cnt[v] > 0) H -= cnt[v] / total * log(cnt[v] / total);
    tds_close(td); free(cnt);
    char ah5[320], ad[320], av[64];
    snprintf(ah5, sizeof ah5, "data.train=%s", h5); snprintf(ad, sizeof ad, "run.dir=%s", d); snprintf(av, sizeof av, "model.vocab=%d", V);
    const char *o[] = {"data.kind=tokens", ah5, av, ad, "train.steps=60", "train.batch_size=8", "train.lr=3e-3",
                       "train.eval_every=0", "train.min_accuracy=0", "train.threads=2"};
    int rc = run(o, 10);
    char *m = t_metrics_core(d);
    double last = 0; int n = 0;
    for (char *s = m; s && (s = strstr(s, "\"loss\":")); s++, n++) if (n >= 50) last += atof(s + 7) / 10;
    t_check(rc == 0 && n == 60 && total > 0 && last < 0.5 * H, "train on prepared conversations: loss << unigram entropy",
            "%lld conversations, %.0f supervised tokens, unigram entropy %.3f nats, mean loss of the last 10 steps %.3f%s%s",
            (long long)rows, total, H, last, rc ? ": " : "", rc ? ar_error() : "");
    free(m);
    /* the same JSON straight into the trainer: tokenized into run.dir/data/train.h5,
     * identical to what prepare wrote, and the first steps see the same loss */
    char d2[300], a_d2[320], a_js[320];
    snprintf(d2, sizeof d2, "%s/conv_direct", g_tmp);
    snprintf(a_d2, sizeof a_d2, "run.dir=%s", d2); snprintf(a_js, sizeof a_js, "data.train=%s", json);
    const char *o2[] = {"data.kind=conversations", a_js, "data.tokenizer=tests/fixtures/tok_bpe.model",
                        "data.template=vicuna_v1_1", "train.seq_len=192", a_d2, "train.steps=3", "train.batch_size=8",
                        "train.eval_every=0", "train.min_accuracy=0", "train.threads=2"};
    const char *o1b[] = {"data.kind=tokens", ah5, av, a_d2, "train.steps=3", "train.batch_size=8",
                         "train.eval_every=0", "train.min_accuracy=0", "train.threads=2", "train.resume=never"};
    int rc2 = run(o2, 11);
    char *mdirect = t_metrics_core(d2);
    int rc3 = run(o1b, 10);
    char *mtok = t_metrics_core(d2);
    char prepared[400];
    snprintf(prepared, sizeof prepared, "%s/data/train.h5", d2);
    token_dataset *pd = tds_open(prepared, V);
    t_check(rc2 == 0 && rc3 == 0 && pd && tds_rows(pd) == rows && mdirect && mtok && !strcmp(mdirect, mtok),
            "train data.kind=conversations == prepare + tokens", "runs %d/%d, %lld rows in run.dir/data/train.h5, metrics %s%s%s",
            rc2, rc3, pd ? (long long)tds_rows(pd) : -1LL, mdirect && mtok && !strcmp(mdirect, mtok) ? "identical" : "DIFFER",
            rc2 || rc3 ? ": " : "", rc2 || rc3 ? ar_error() : "");
    tds_close(pd);
    free(mdirect); free(mtok);
    conv_dataset_free(&ds);
    tok_free(tok);
}

/* Every shipped config parses against the schema (a typo there fails here). */
static void test_shipped_configs(void) {
    glob_t g;
    int found = glob("configs/*.cfg", 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
    t_check(found >= 2, "configs/ has the shipped configs", "%d files", found);
    for (int i = 0; i < found; i++) {
        ar_config *c = cfg_new(train_schema, train_schema_len);
        int rc = c ? cfg_load_file(c, g.gl_pathv[i]) : -1;
        t_check(rc == 0, "config parses", "%s%s%s", g.gl_pathv[i], rc ? ": " : "", rc ? ar_error() : "");
        cfg_free(c);
    }
    if (found) globfree(&g);
}

/* The options of the 16-bit runs below: 20 steps of the demo task with LoRA
 * rank 4, `opt` (o[6]) and run.dir (o[7]), room for one more (o[8]). */
#define RUN16_OPTS(opt, dir) {"train.steps=20", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4", \
                              "train.trainable=lora+embed", "train.threads=2", opt, dir, NULL}

/* 20 steps with `opt` (and opt2, if not NULL) in <tmp>/<tag>, then 10 + a
 * resume of 10 in <tmp>/<tag>split: rc[0..2] the three runs' codes; 1 when the
 * two metrics.jsonl agree bit for bit. dir gets <tmp>/<tag>. */
static int run_split16(const char *opt, const char *opt2, const char *tag, int rc[3], char *dir, size_t dir_n) {
    char b[300], ra[320], rb[320];
    snprintf(dir, dir_n, "%s/%s", g_tmp, tag);
    snprintf(b, sizeof b, "%s/%ssplit", g_tmp, tag);
    snprintf(ra, sizeof ra, "run.dir=%s", dir); snprintf(rb, sizeof rb, "run.dir=%s", b);
    const char *o[11] = RUN16_OPTS(opt, ra);
    int n = 8;
    if (opt2) { o[8] = o[7]; o[7] = opt2; n = 9; }   /* run.dir stays the last but one */
    rc[0] = run(o, n);
    o[n - 1] = rb; o[n] = "train.stop_after=10";
    rc[1] = run(o, n + 1);
    o[n] = "train.resume=auto";
    rc[2] = run(o, n + 1);
    char *ma = t_metrics_core(dir), *mb = t_metrics_core(b);
    const int same = ma && mb && !strcmp(ma, mb);
    free(ma); free(mb);
    return same;
}

/* model.frozen_weights = bf16: the run trains, resumes bit for bit (the
 * frozen weights are not in training checkpoints: they are made again, and
 * rounded again, at start-up), and its curve stays near the fp32 run's. */
static void test_bf16_weights(void) {
    int rc, r[3];
    char a[300], f[300], ra[320], rf[320];
    const int same = run_split16("model.frozen_weights=bf16", NULL, "bf16", r, a, sizeof a);
    snprintf(f, sizeof f, "%s/fp32", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rf, sizeof rf, "run.dir=%s", f);
    const char *o[] = RUN16_OPTS("model.frozen_weights=fp32", rf);
    int rc4 = run(o, 8);
    const double l1 = t_metric(a, 1, "loss"), l20 = t_metric(a, 20, "loss"), f1 = t_metric(f, 1, "loss"),
                 f20 = t_metric(f, 20, "loss");
    t_check(r[0] == 0 && r[1] == 0 && r[2] == 0 && rc4 == 0 && same && l20 < l1 &&
                fabs(l1 - f1) <= 1e-2 * fabs(f1) && fabs(l20 - f20) <= 5e-2 * fabs(f20),
            "train with model.frozen_weights = bf16", "rc %d/%d/%d/%d; 10 + 10 == 20 steps bitwise: %s; loss %.4f -> %.4f "
            "(fp32 weights: %.4f -> %.4f)", r[0], r[1], r[2], rc4, same ? "yes" : "NO", l1, l20, f1, f20);
    /* train.gemm = bf16: the frozen products bf16 x bf16 (oneDNN's bf16 matmuls where this CPU has them, else
     * emulated; tensor cores on the GPU); resumed runs stay exact */
    char gdir[300];
    int rg[3];
    const int gsame = run_split16("model.frozen_weights=bf16", "train.gemm=bf16", "bf16gemm", rg, gdir, sizeof gdir);
    const double g1 = t_metric(gdir, 1, "loss"), g20 = t_metric(gdir, 20, "loss");
    t_check(rg[0] == 0 && rg[1] == 0 && rg[2] == 0 && gsame && g20 < g1 && fabs(g1 - l1) <= 1e-3 * fabs(l1) &&
                fabs(g20 - l20) <= 2e-2 * fabs(l20),
            "train with train.gemm = bf16", "rc %d/%d/%d; 10 + 10 == 20 steps bitwise: %s; loss %.4f -> %.4f (fp32 "
            "products: %.4f -> %.4f)", rg[0], rg[1], rg[2], gsame ? "yes" : "NO", g1, g20, l1, l20);
    const char *o3[] = {"train.gemm=bf16", ra};
    rc = run(o3, 2);
    t_check(rc == -1 && strstr(ar_error(), "set model.frozen_weights = bf16"),
            "train refuses train.gemm = bf16 without bf16 weights", "%s", ar_error());
    const char *o2[] = {"train.trainable=full", "model.frozen_weights=bf16", ra};
    rc = run(o2, 3);
    t_check(rc == -1 && strstr(ar_error(), "train.trainable = full trains them all"),
            "train refuses frozen_weights = bf16 with every weight trainable", "%s", ar_error());
}

/* fp16: model.frozen_weights = fp16 with train.gemm = fp16 (emulated here)
 * and dynamic loss scaling. With a first scale far too large the fp16
 * products overflow: each such step is skipped and the scale halved, without
 * counting as a bad step (more of them than train.max_bad_steps), and then
 * the run trains; the scale is in the checkpoint, so 15 + 15 == 30 steps
 * bit for bit. */
static void test_fp16_loss_scaling(void) {
    char a[300], b[300], c[300], ra[320], rb[320], rc_[320];
    snprintf(a, sizeof a, "%s/fp16", g_tmp); snprintf(b, sizeof b, "%s/fp16split", g_tmp);
    snprintf(c, sizeof c, "%s/fp16plain", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b); snprintf(rc_, sizeof rc_, "run.dir=%s", c);
    const char *o[] = {"train.steps=30", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                       "train.trainable=lora+embed", "train.threads=2", "model.frozen_weights=fp16", "train.gemm=fp16",
                       "train.loss_scale_init=1e9", "train.save_every=15", ra, NULL};
    int r1 = run(o, 11);
    o[10] = rb; o[11] = "train.stop_after=15";
    int r2 = run(o, 12);
    o[11] = "train.resume=auto";
    int r3 = run(o, 12);
    o[8] = "train.loss_scale_init=65536"; o[10] = rc_;
    int r4 = run(o, 11);
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    int skipped = 0;
    for (int st = 1; st <= 30; st++)   /* the scale logged after step st halved: that step overflowed */
        skipped += t_metric(a, st, "loss_scale") < (st == 1 ? 1e9 : t_metric(a, st - 1, "loss_scale"));
    const double s1 = t_metric(a, 1, "loss_scale"), s30 = t_metric(a, 30, "loss_scale"), bad = t_metric(a, 30, "bad_steps");
    const double l1 = t_metric(a, 1, "loss"), l30 = t_metric(a, 30, "loss"), p30 = t_metric(c, 30, "loss");
    /* (the overflowing run trails the plain one: its first steps made no update) */
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && r4 == 0 && ma && mb && !strcmp(ma, mb) && s1 == 5e8 && skipped > 5 &&
                bad == 0 && s30 < 1e9 && l30 < l1 && p30 < t_metric(c, 1, "loss") && t_metric(c, 30, "loss_scale") == 65536,
            "fp16 with dynamic loss scaling", "rc %d/%d/%d/%d; first scale 1e9: %d overflowing steps skipped (scale "
            "%g at step 1, %g at step 30), bad_steps %g; loss %.4f -> %.4f (scale 65536 throughout: %.4f); 15 + 15 == "
            "30 bitwise: %s", r1, r2, r3, r4, skipped, s1, s30, bad, l1, l30, p30,
            ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    free(ma); free(mb);
    /* growth: every train.loss_scale_window finite steps the scale doubles */
    char d[300], rd[320];
    snprintf(d, sizeof d, "%s/fp16grow", g_tmp);
    snprintf(rd, sizeof rd, "run.dir=%s", d);
    const char *g[] = {"train.steps=8", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                       "train.trainable=lora+embed", "model.frozen_weights=fp16", "train.gemm=fp16",
                       "train.loss_scale_window=4", rd};
    int r5 = run(g, 9);
    const double g3 = t_metric(d, 3, "loss_scale"), g4 = t_metric(d, 4, "loss_scale"), g8 = t_metric(d, 8, "loss_scale");
    t_check(r5 == 0 && g3 == 65536 && g4 == 131072 && g8 == 262144, "fp16 loss scale grows after its window",
            "train.loss_scale_window = 4: scale %g at step 3, %g at step 4, %g at step 8", g3, g4, g8);
    /* a persistent NaN (test.poison_grad_steps) under dynamic scaling: the scale
     * halves only down to 1 (4 -> 2 -> 1: two skipped steps), after which each step
     * is bad, so train.max_bad_steps = 3 ends the run at step 5 (it used to halve
     * the scale for ever, every step skipped and none counted) */
    char f[300], rf[320];
    snprintf(f, sizeof f, "%s/fp16nan", g_tmp);
    snprintf(rf, sizeof rf, "run.dir=%s", f);
    const char *pn[] = {"train.steps=10", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                        "train.trainable=lora+embed", "model.frozen_weights=fp16", "train.gemm=fp16",
                        "train.loss_scale_init=4", "train.max_bad_steps=3",
                        "test.poison_grad_steps=1,2,3,4,5,6,7,8,9,10", rf};
    int rp = run(pn, 11);
    const double n1 = t_metric(f, 1, "loss_scale"), n2 = t_metric(f, 2, "loss_scale"), n5 = t_metric(f, 5, "loss_scale");
    t_check(rp == -1 && strstr(ar_error(), "steps 3..5: 3 bad steps in a row") && n1 == 2 && n2 == 1 && n5 == 1,
            "fp16 loss scaling stops at 1: a persistent NaN still reaches train.max_bad_steps",
            "rc %d, scale %g / %g / %g after steps 1 / 2 / 5: %s", rp, n1, n2, n5, ar_error());
    const char *e[] = {"train.loss_scale=lots", ra};
    int re = run(e, 2);
    t_check(re == -1 && strstr(ar_error(), "train.loss_scale = 'lots'"), "train refuses a bad train.loss_scale", "%s",
            ar_error());
}

static void test_config_errors(void) {
    const char *o1[] = {"train.trainable=lora", "lora.rank=0"};
    int rc = run(o1, 2);
    t_check(rc == -1 && strstr(ar_error(), "needs lora.rank > 0"), "train refuses LoRA mode without a rank", "%s", ar_error());
    const char *o2[] = {"lora.rank=4", "lora.targets=q_proj,x_proj"};
    rc = run(o2, 2);
    t_check(rc == -1 && strstr(ar_error(), "unknown LoRA target 'x_proj'"), "train refuses an unknown LoRA target", "%s", ar_error());
    const char *o3[] = {"data.kind=images"};
    rc = run(o3, 1);
    t_check(rc == -1 && strstr(ar_error(), "data.kind = 'images'"), "train refuses an unknown data kind", "%s", ar_error());
    /* NCCL needs the CUDA backend built with MPI=1 and a GPU; a build without
     * says which. Where it can run (make CUDA=1 MPI=1 on a GPU), a one-rank
     * communicator sums the gradient block (small buckets, started during
     * backward): the run must equal the run without it, bit for bit. */
    char dir[320], dir2[320];
    snprintf(dir, sizeof dir, "run.dir=%s/nccl", g_tmp);
    snprintf(dir2, sizeof dir2, "run.dir=%s/nonccl", g_tmp);
    const char *o4[] = {"dist.backend=nccl", "dist.bucket_mb=0.001953125", "train.steps=6", "train.eval_every=0",
                        "train.min_accuracy=0", "lora.rank=4", "train.trainable=lora+embed", dir};
    rc = run(o4, 8);
    if (dist_nccl_usable()) {
        o4[0] = "dist.backend=mpi";
        o4[7] = dir2;
        int rc2 = run(o4, 8);
        char *ma = t_metrics_core(dir + 8), *mb = t_metrics_core(dir2 + 8);
        t_check(rc == 0 && rc2 == 0 && ma && mb && !strcmp(ma, mb), "train: NCCL one-rank all-reduce == no all-reduce",
                "rc %d / %d, metrics %s", rc, rc2, ma && mb && !strcmp(ma, mb) ? "identical" : "DIFFER");
        free(ma); free(mb);
    } else {
        t_check(rc == -1 && strstr(ar_error(), "dist.backend = nccl needs") &&
                    strstr(ar_error(), dist_nccl_built() ? "a GPU of its own" : "make CUDA=1 MPI=1"),
                "train refuses dist.backend = nccl where NCCL cannot run", "%s", ar_error());
    }
    const char *o5[] = {"dist.backend=gloo", "train.steps=1", dir};
    rc = run(o5, 3);
    t_check(rc == -1 && strstr(ar_error(), "dist.backend = gloo; expected auto, mpi or nccl"),
            "train refuses an unknown dist.backend", "%s", ar_error());
}

/* model.activations = bf16: the run trains (loss falls), resumes bit for bit
 * (the rounding is part of the step: nothing about it lives outside the
 * weights and optimiser state), follows the fp32-activation curve, and with
 * model.checkpoint_layers = 1 gives the same run bit for bit (the
 * recomputation rounds as the forward did); an unknown value is refused. */
static void test_bf16_activations(void) {
    int r[3];
    char a[300], f[300], k[300], ra[320], rf[320], rk[320];
    const int same = run_split16("model.activations=bf16", NULL, "act16", r, a, sizeof a);
    snprintf(f, sizeof f, "%s/act32", g_tmp); snprintf(k, sizeof k, "%s/act16ckpt", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rf, sizeof rf, "run.dir=%s", f);
    snprintf(rk, sizeof rk, "run.dir=%s", k);
    const char *o[] = RUN16_OPTS("model.activations=bf16", rk);
    o[8] = "model.checkpoint_layers=1";
    int rc4 = run(o, 9);
    o[6] = "model.activations=fp32"; o[7] = rf;
    int rc5 = run(o, 8);
    char *ma = t_metrics_core(a), *mk = t_metrics_core(k);
    const double l1 = t_metric(a, 1, "loss"), l20 = t_metric(a, 20, "loss"), f1 = t_metric(f, 1, "loss"),
                 f20 = t_metric(f, 20, "loss");
    const int same_k = ma && mk && !strcmp(ma, mk);
    const int rc1 = r[0], rc2 = r[1], rc3 = r[2];
    t_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && rc4 == 0 && rc5 == 0 && same && same_k && l20 < l1 &&
                fabs(l1 - f1) <= 1e-2 * fabs(f1) && fabs(l20 - f20) <= 5e-2 * fabs(f20),
            "train with model.activations = bf16", "rc %d/%d/%d/%d/%d; 10 + 10 == 20 steps bitwise: %s; checkpoint_layers "
            "== stored, bitwise: %s; loss %.4f -> %.4f (fp32 activations: %.4f -> %.4f)", rc1, rc2, rc3, rc4, rc5,
            same ? "yes" : "NO", same_k ? "yes" : "NO", l1, l20, f1, f20);
    free(ma); free(mk);
    const char *o2[] = {"model.activations=fp16", ra};
    int rc = run(o2, 2);
    t_check(rc == -1 && strstr(ar_error(), "model.activations = 'fp16' (expected fp32 or bf16)"),
            "train refuses an unknown model.activations", "%s", ar_error());
}

/* train.timing: the step's phases timed (the backend synchronised between
 * them) without changing what is computed, summarised in run.dir/timing.json. */
static void test_timing(void) {
    char a[300], b[300], ra[320], rb[320], path[400];
    snprintf(a, sizeof a, "%s/untimed", g_tmp); snprintf(b, sizeof b, "%s/timed", g_tmp);
    snprintf(ra, sizeof ra, "run.dir=%s", a); snprintf(rb, sizeof rb, "run.dir=%s", b);
    const char *o1[] = {"train.steps=8", "train.eval_every=0", "train.min_accuracy=0", "train.threads=2", ra};
    const char *o2[] = {"train.steps=8", "train.eval_every=0", "train.min_accuracy=0", "train.threads=2", rb,
                        "train.timing=true"};
    const int rc1 = run(o1, 5), rc2 = run(o2, 6);
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    snprintf(path, sizeof path, "%s/timing.json", b);
    FILE *f = fopen(path, "r");
    char text[800] = "";
    if (f) { size_t n = fread(text, 1, sizeof text - 1, f); text[n] = 0; fclose(f); }
    long steps = -1;
    double ph[6] = {-1, -1, -1, -1, -1, -1};
    const char *keys[6] = {"\"data\": ", "\"encoders\": ", "\"forward\": ", "\"backward\": ", "\"optimizer\": ",
                           "\"total\": "};
    const char *p = strstr(text, "\"steps\": ");
    if (p) sscanf(p + 9, "%ld", &steps);
    for (int i = 0; i < 6; i++)
        if ((p = strstr(text, keys[i]))) sscanf(p + strlen(keys[i]), "%lf", &ph[i]);
    const double sum = ph[0] + ph[1] + ph[2] + ph[3] + ph[4];
    snprintf(path, sizeof path, "%s/timing.json", a);
    struct stat sb;
    const int untimed_file = stat(path, &sb) == 0;
    t_check(rc1 == 0 && rc2 == 0 && ma && mb && !strcmp(ma, mb) && steps == 7 && ph[2] > 0 && ph[3] > 0 &&
                ph[0] >= 0 && ph[1] >= 0 && ph[4] >= 0 && fabs(sum - ph[5]) <= 1e-2 && !untimed_file,
            "train.timing: phases timed, training unchanged",
            "rc %d/%d, metrics identical: %s; timing.json: %ld steps (7), ms data %.2f encoders %.2f forward %.2f "
            "backward %.2f optimizer %.2f total %.2f (sum %.2f); none without the key: %s",
            rc1, rc2, ma && mb && !strcmp(ma, mb) ? "yes" : "NO", steps, ph[0], ph[1], ph[2], ph[3], ph[4], ph[5], sum,
            untimed_file ? "NO" : "yes");
    free(ma); free(mb);
}

int main(void) {
    setenv("ANYREF_PROGRESS", "off", 1);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/anyref_test_train_XXXXXX");
    if (!mkdtemp(g_tmp)) { t_fail("train.tmpdir", "mkdtemp failed"); return 1; }
    test_resume_bitwise();
    test_learns_below_baseline();
    test_token_data();
    test_model_init_resize();
    test_conversations_learn();
    test_shipped_configs();
    test_config_errors();
    test_bf16_weights();
    test_bf16_activations();
    test_fp16_loss_scaling();
    test_timing();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return t_exit_code();
}
