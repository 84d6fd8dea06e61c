/* tests/test_train_sources.c — `anyref train` on real data-set layouts read
 * live (data.kind = sources, data/loader.h) with configs/sources-tiny.cfg:
 * the committed custom JSON-lines tree mixed 3:1 with the AVSBench S4 tree,
 * a tiny AnyRef with the SAM image encoder, CLIP and ImageBind audio.
 * 1. The same run with the samples built in the training thread
 *    (data.workers = 0) and by two decode threads gives the same metrics,
 *    bit for bit (deterministic mode), and the broken files of the trees (a
 *    truncated PNG image, a missing WAV) are skipped and counted in
 *    metrics.jsonl ("skipped"), with data_wait_s logged.
 * 2. A run stopped after 4 steps and resumed to 8 reproduces the
 *    uninterrupted run bit for bit (the loader's cursor is checkpointed).
 * 3. data.deterministic = 0 trains too (order within the prefetch window
 *    free).
 * 4. Config errors name the key: no SAM image encoder, an unknown source
 *    kind, no source, no train.seq_len, a model vocabulary smaller than the
 *    tokenizer's with its added tokens, a bad weight.
 * Run from the repo root. */
#include "core/config.h"
#include "core/error.h"
#include "tests/testlib.h"
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_tmp[256];

static int run(const char *dir, const char *const *ov, int n) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c) return -1;
    char rd[400];
    snprintf(rd, sizeof rd, "run.dir=%s/%s", g_tmp, dir);
    int rc = cfg_load_file(c, "configs/sources-tiny.cfg");
    if (rc == 0) rc = cfg_override(c, rd);
    for (int i = 0; i < n && rc == 0; i++) rc = cfg_override(c, ov[i]);
    if (rc == 0) rc = train_run(c);
    cfg_free(c);
    return rc;
}

static void path(char *out, size_t n, const char *dir) { snprintf(out, n, "%s/%s", g_tmp, dir); }

static void test_threads_and_skips(void) {
    const char *o0[] = {"data.workers=0"}, *o2[] = {"data.workers=2", "data.prefetch=3"};
    int r0 = run("w0", o0, 1), r2 = run("w2", o2, 2);
    char a[300], b[300];
    path(a, sizeof a, "w0");
    path(b, sizeof b, "w2");
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    int lines = 0;
    for (char *s = ma; s && *s; s++) lines += *s == '\n';
    t_check(r0 == 0 && r2 == 0 && ma && mb && lines == 8 && !strcmp(ma, mb) && strstr(ma, "\"bce\":"),
            "sources: 2 decode threads == samples built in the training thread, bitwise",
            "runs %d/%d, %d metric lines, identical: %s%s%s", r0, r2, lines, ma && mb && !strcmp(ma, mb) ? "yes" : "NO",
            r0 || r2 ? "; " : "", r0 || r2 ? ar_error() : "");
    free(ma);
    free(mb);
    const double s0 = t_metric(a, 8, "skipped"), s2 = t_metric(b, 8, "skipped"), w = t_metric(b, 8, "data_wait_s");
    const double g = t_metric(b, 8, "val_giou"), bce = t_metric(b, 8, "bce"), rec = t_metric(b, 8, "skipped_records");
    /* 8 steps x 2 samples over a 10-sample epoch with 2 broken samples: every
     * epoch skips both, so at least 2 are skipped */
    /* the records the loaders skip at open: 27 malformed JSON lines of
     * data.jsonl, 3 bad rows of the S4 CSV */
    t_check(s0 >= 2 && s0 == s2 && w >= 0 && isfinite(g) && isfinite(bce) && rec == 30,
            "sources: broken files skipped and counted in metrics.jsonl",
            "skipped %g (threads) / %g (inline), skipped_records %g, data_wait_s %.4f, val gIoU %.3f, bce %.4f", s2, s0,
            rec, w, g, bce);
}

static void test_resume(void) {
    const char *o1[] = {"data.workers=2"};
    const char *o2[] = {"data.workers=2", "train.stop_after=4"};
    const char *o3[] = {"data.workers=1", "train.resume=auto"};   /* another thread count on resume: same stream */
    int r1 = run("full", o1, 1), r2 = run("split", o2, 2), r3 = run("split", o3, 2);
    char a[300], b[300];
    path(a, sizeof a, "full");
    path(b, sizeof b, "split");
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && ma && mb && !strcmp(ma, mb) &&
            t_metric(a, 8, "skipped") == t_metric(b, 8, "skipped") && t_metric(a, 8, "val_giou") == t_metric(b, 8, "val_giou"),
            "sources: stopped after 4 steps and resumed to 8 == 8 steps, bitwise",
            "runs %d/%d/%d, identical: %s, skipped %g / %g", r1, r2, r3, ma && mb && !strcmp(ma, mb) ? "yes" : "NO",
            t_metric(a, 8, "skipped"), t_metric(b, 8, "skipped"));
    free(ma);
    free(mb);
}

static void test_nondeterministic(void) {
    const char *o[] = {"data.workers=2", "data.deterministic=0", "data.prefetch=6"};
    int rc = run("nd", o, 3);
    char a[300];
    path(a, sizeof a, "nd");
    const double l = t_metric(a, 8, "loss"), s = t_metric(a, 8, "skipped");
    t_check(rc == 0 && isfinite(l) && s >= 2, "sources: data.deterministic = 0 trains", "rc %d, loss %.4f, skipped %g%s%s",
            rc, l, s, rc ? ": " : "", rc ? ar_error() : "");
}

/* Frozen SAM image encoder, CLIP tower and ImageBind audio encoder with their
 * big matrices in bf16, beside bf16 LLaMA weights, in train.gemm = bf16:
 * trains and resumes bit for bit. */
static void test_bf16_encoder(void) {
    const char *o1[] = {"data.workers=2", "sam_encoder.trainable=0", "sam_encoder.frozen_weights=bf16",
                        "model.frozen_weights=bf16", "train.gemm=bf16", "lora.rank=4", "train.trainable=lora+embed",
                        "clip.trainable=0", "clip.frozen_weights=bf16", "audio.frozen_weights=bf16", NULL};
    int r1 = run("b16", o1, 10);
    o1[10] = "train.stop_after=4";
    int r2 = run("b16split", o1, 11);
    o1[10] = "train.resume=auto";
    int r3 = run("b16split", o1, 11);
    char a[300], b[300];
    path(a, sizeof a, "b16");
    path(b, sizeof b, "b16split");
    char *ma = t_metrics_core(a), *mb = t_metrics_core(b);
    const double l = t_metric(a, 8, "loss");
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && ma && mb && !strcmp(ma, mb) && isfinite(l),
            "sources: bf16 SAM encoder, CLIP, ImageBind and LLaMA weights, bf16 GEMMs", "runs %d/%d/%d, loss %.4f, 4 + 4 == 8 steps "
            "bitwise: %s", r1, r2, r3, l, ma && mb && !strcmp(ma, mb) ? "yes" : "NO");
    free(ma);
    free(mb);
}

static void expect_error(const char *name, const char *const *ov, int n, const char *needle) {
    int rc = run("err", ov, n);
    t_check(rc != 0 && strstr(ar_error(), needle), name, "rc %d: %s", rc, ar_error());
}

static void test_config_errors(void) {
    const char *a[] = {"sam_encoder.model=none"};
    expect_error("sources: refused without the SAM image encoder", a, 1, "sam_encoder.model");
    const char *b[] = {"source2.kind=coco"};
    expect_error("sources: unknown source kind named", b, 1, "source2.kind = 'coco'");
    const char *c[] = {"source.kind=", "source2.kind="};
    expect_error("sources: no source", c, 2, "source.kind");
    const char *d[] = {"train.seq_len=0"};
    expect_error("sources: train.seq_len required", d, 1, "train.seq_len");
    const char *e[] = {"model.vocab=100"};
    expect_error("sources: model.vocab below the tokenizer's", e, 1, "model.vocab = 100");
    const char *f[] = {"source2.weight=0"};
    expect_error("sources: weight must be positive", f, 1, "source2.weight");
    const char *g[] = {"source.file=tests/fixtures/custom/nope.jsonl"};
    expect_error("sources: a missing file is named", g, 1, "nope.jsonl");
    const char *h[] = {"sam_encoder.frozen_weights=bf16", "sam_encoder.trainable=1"};
    expect_error("sources: a trainable SAM encoder stays fp32", h, 2, "sam_encoder.trainable = 1");
    const char *i[] = {"sam_encoder.frozen_weights=bf16", "sam_encoder.trainable=0", "model.frozen_weights=fp16",
                       "lora.rank=4", "train.trainable=lora+embed"};
    expect_error("sources: one 16-bit format", i, 5, "share one format");
    const char *j[] = {"audio.frozen_weights=fp16", "clip.trainable=0", "clip.frozen_weights=bf16"};
    expect_error("sources: one 16-bit format (audio)", j, 3, "share one format");
    const char *l[] = {"train.gemm=bf16", "clip.image_size=0", "audio.frozen_weights=bf16"};
    expect_error("sources: bf16 GEMMs need 16-bit weights that run (no audio encoder without references)", l, 3,
                 "train.gemm = bf16 multiplies");
    const char *k[] = {"audio.frozen_weights=half"};
    expect_error("sources: audio.frozen_weights value named", k, 1, "audio.frozen_weights = 'half'");
}

int main(void) {
    setenv("ANYREF_PROGRESS", "off", 1);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/anyref_test_sources_XXXXXX");
    if (!mkdtemp(g_tmp)) { t_fail("sources tmpdir", "mkdtemp failed"); return 1; }
    test_threads_and_skips();
    test_resume();
    test_nondeterministic();
    test_bf16_encoder();
    test_config_errors();
    char cmd[400];
    if (getenv("KEEP")) return t_exit_code();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return t_exit_code();
}
