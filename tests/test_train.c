/* tests/test_train.c — the training command end to end: a run stopped after
 * 10 steps and resumed to 20 reproduces the uninterrupted 20-step run bit for
 * bit (loss, lr, grad_norm of every step), the trainable set and checkpoints
 * of a LoRA run, and config errors. */
#include "core/config.h"
#include "core/error.h"
#include "tests/testlib.h"
#include "train/train.h"
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

/* "step,loss,lr,grad_norm" of every metrics line (the timing fields differ by nature). */
static char *metrics_core(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    FILE *f = fopen(p, "r");
    if (!f) return NULL;
    char *out = NULL; size_t len = 0;
    FILE *o = open_memstream(&out, &len);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *cut = strstr(line, ",\"tokens_per_s\"");
        if (cut) *cut = 0;
        fprintf(o, "%s\n", line);
    }
    fclose(f); fclose(o);
    return out;
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
    char *ma = metrics_core(a), *mb = metrics_core(b);
    int lines = 0;
    for (char *s = ma; s && *s; s++) lines += *s == '\n';
    t_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && have10 && ma && mb && lines == 20 && strcmp(ma, mb) == 0,
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
    char *m = metrics_core(d);
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
}

int main(void) {
    setenv("ANYREF_PROGRESS", "off", 1);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/anyref_test_train_XXXXXX");
    if (!mkdtemp(g_tmp)) { t_fail("train.tmpdir", "mkdtemp failed"); return 1; }
    test_resume_bitwise();
    test_learns_below_baseline();
    test_config_errors();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return t_exit_code();
}
