/* tests/test_faults.c — what a training run survives (issue 9, "Faults").
 *
 * Runs the real `build/anyref` binary (fork + exec, stderr to a log file) on
 * the synthetic demo config made tiny (dim 64, batch 16, a few hundred steps
 * in about a second) and checks:
 *   - checksums: a flipped byte inside a tensor, a changed state attribute and
 *     a truncated file are refused naming the file and the tensor / state;
 *     resume falls back to the newest checkpoint that verifies and says so;
 *     pruning keeps the newest train.keep_checkpoints and removes stale .tmp;
 *   - SIGTERM mid-run: exit 0, a checkpoint, the printed resume command works;
 *     SIGKILL at seeded random moments, 8 times, then resume to the end: the
 *     metrics (every key but the timing ones) and the final checkpoint's
 *     tensors are IDENTICAL to an uninterrupted run's;
 *   - NaN gradients injected with the test hook test.poison_grad_steps: the
 *     steps are skipped and logged (bad_steps), the weights stay finite, and
 *     train.max_bad_steps in a row stop the run with an error naming the
 *     checkpoint from before the problem, which is identical to the clean
 *     run's and from which the run resumes;
 *   - disk: a run directory that cannot be created, a read-only one (tmpfs
 *     remounted ro) and one too small for a checkpoint are refused before
 *     the first step; a save failing mid-write (a real ENOSPC on a small
 *     tmpfs, and EFBIG from RLIMIT_FSIZE, which needs no mount) exits 1 with
 *     a clear error, leaves no .tmp and keeps the previous checkpoint intact.
 * The tmpfs checks need mount(8) as root; where it is refused they print
 * "skipped" (the RLIMIT_FSIZE check covers the failing save everywhere).
 * Depends on build/anyref (make test builds it), checkpoints/checkpoint.h, HDF5. */
#include "checkpoints/checkpoint.h"
#include "core/error.h"
#include "core/rng.h"
#include "tests/testlib.h"
#include "tests/h5fixture.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* the binary under test: build/anyref, or $ANYREF_BIN (make CUDA=1 test points it at build/cuda/anyref) */
static const char *bin_path(void) {
    const char *b = getenv("ANYREF_BIN");
    return b && *b ? b : "build/anyref";
}
#define BIN bin_path()

static char g_dir[256];

/* The tiny deterministic run every check uses (plus run.dir and extras). */
static const char *const k_base[] = {
    "train.batch_size=16", "train.eval_every=50", "data.eval_samples=32", "train.min_accuracy=0",
    "train.threads=1", "train.resume=auto",
};
#define NBASE (int)(sizeof k_base / sizeof k_base[0])

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int exists(const char *p) { return access(p, F_OK) == 0; }
static long fsize(const char *p) { struct stat sb; return stat(p, &sb) == 0 ? (long)sb.st_size : -1; }

/* Starts `anyref train configs/demo.cfg run.dir=DIR <base> <extra...>` with
 * stderr and stdout to log (appended). fsize_limit > 0: RLIMIT_FSIZE in the child. */
static pid_t spawn(const char *dir, const char *const *extra, int nextra, const char *log, long fsize_limit) {
    char rd[400];
    snprintf(rd, sizeof rd, "run.dir=%s", dir);
    const char *argv[64];
    int n = 0;
    argv[n++] = BIN; argv[n++] = "train"; argv[n++] = "configs/demo.cfg"; argv[n++] = rd;
    for (int i = 0; i < NBASE; i++) argv[n++] = k_base[i];
    for (int i = 0; i < nextra && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
    setenv("ANYREF_PROGRESS", "off", 1);
    if (fsize_limit > 0) {
        struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
        signal(SIGXFSZ, SIG_IGN);   /* write() then fails with EFBIG instead of killing */
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    execv(BIN, (char *const *)argv);
    _exit(127);
}

/* exit status, or 128 + signal */
static int wait_rc(pid_t pid) {
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_train(const char *dir, const char *const *extra, int nextra, const char *log) {
    pid_t p = spawn(dir, extra, nextra, log, 0);
    return p < 0 ? -1 : wait_rc(p);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static int log_has(const char *log, const char *needle) {
    char *s = slurp(log);
    int r = s && strstr(s, needle);
    free(s);
    return r;
}

/* metrics.jsonl without the timing keys (tokens_per_s, elapsed_s, time). */
static char *metrics_det(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    char *s = slurp(p);
    if (!s) return NULL;
    const char *drop[] = {",\"tokens_per_s\":", ",\"elapsed_s\":", ",\"time\":"};
    for (int k = 0; k < 3; k++)
        for (char *q; (q = strstr(s, drop[k]));) {
            char *e = q + strlen(drop[k]);
            while (*e && *e != ',' && *e != '}') e++;
            memmove(q, e, strlen(e) + 1);
        }
    return s;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* Every dataset of /weights, /adam_m, /adam_v and the root state attributes
 * of two checkpoints are the same bytes. Returns 1 same, 0 different (why in buf). */
static int ckpt_same(const char *a, const char *b, char *why, size_t cap, int *ntensors) {
    hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT), fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    int same = fa >= 0 && fb >= 0;
    if (!same) snprintf(why, cap, "cannot open %s or %s", a, b);
    *ntensors = 0;
    const char *attrs[] = {"step", "epoch", "data_position", "rng_state", "seed"};
    for (int k = 0; same && k < 5; k++) {
        uint64_t va[4] = {0}, vb[4] = {0};
        hid_t x = H5Aopen(fa, attrs[k], H5P_DEFAULT), y = H5Aopen(fb, attrs[k], H5P_DEFAULT);
        if (x < 0 || y < 0 || H5Aread(x, H5T_NATIVE_UINT64, va) < 0 || H5Aread(y, H5T_NATIVE_UINT64, vb) < 0 ||
            memcmp(va, vb, sizeof va) != 0) {
            same = 0;
            snprintf(why, cap, "attribute %s differs", attrs[k]);
        }
        if (x >= 0) H5Aclose(x);
        if (y >= 0) H5Aclose(y);
    }
    const char *groups[] = {"weights", "adam_m", "adam_v"};
    for (int k = 0; same && k < 3; k++) {
        hid_t ga = H5Gopen2(fa, groups[k], H5P_DEFAULT), gb = H5Gopen2(fb, groups[k], H5P_DEFAULT);
        H5G_info_t ia, ib;
        if (ga < 0 || gb < 0 || H5Gget_info(ga, &ia) < 0 || H5Gget_info(gb, &ib) < 0 || ia.nlinks != ib.nlinks) {
            same = 0;
            snprintf(why, cap, "group /%s differs", groups[k]);
        }
        for (hsize_t i = 0; same && i < ia.nlinks; i++) {
            char name[256];
            H5Lget_name_by_idx(ga, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
            float *x = NULL, *y = NULL;
            hssize_t nx = 0, ny = 0;
            if (h5_read_floats(ga, name, &x, &nx) < 0 || h5_read_floats(gb, name, &y, &ny) < 0 || nx != ny ||
                memcmp(x, y, (size_t)nx * sizeof(float)) != 0) {
                same = 0;
                snprintf(why, cap, "tensor /%s/%s differs", groups[k], name);
            }
            (*ntensors)++;
            free(x); free(y);
        }
        if (ga >= 0) H5Gclose(ga);
        if (gb >= 0) H5Gclose(gb);
    }
    if (fa >= 0) H5Fclose(fa);
    if (fb >= 0) H5Fclose(fb);
    return same;
}

/* All weights and moments of a checkpoint finite. */
static int ckpt_finite(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    int ok = 1;
    const char *groups[] = {"weights", "adam_m", "adam_v"};
    for (int k = 0; ok && k < 3; k++) {
        hid_t g = H5Gopen2(f, groups[k], H5P_DEFAULT);
        H5G_info_t info;
        if (g < 0 || H5Gget_info(g, &info) < 0) { ok = 0; break; }
        for (hsize_t i = 0; ok && i < info.nlinks; i++) {
            char name[256];
            H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
            float *x = NULL;
            hssize_t n = 0;
            if (h5_read_floats(g, name, &x, &n) < 0) ok = 0;
            for (hssize_t j = 0; ok && j < n; j++) ok = isfinite(x[j]);
            free(x);
        }
        H5Gclose(g);
    }
    H5Fclose(f);
    return ok;
}

static void ck(char *out, size_t cap, const char *dir, int step) { ckpt_path(dir, step, out, cap); }

static double g_baseline_s;   /* wall time of the uninterrupted 300-step run */
static char g_ref[300];       /* its run directory */
static const char *const k_long[] = {"train.steps=300", "train.save_every=7", "train.keep_checkpoints=3"};

/* ------------------------------------------------------------------------ */
static void test_baseline(void) {
    snprintf(g_ref, sizeof g_ref, "%s/ref", g_dir);
    char log[400];
    snprintf(log, sizeof log, "%s/ref.log", g_dir);
    double t0 = now_s();
    int rc = run_train(g_ref, k_long, 3, log);
    g_baseline_s = now_s() - t0;
    char *m = metrics_det(g_ref);
    t_check(rc == 0 && count_lines(m) == 300, "faults.baseline", "uninterrupted 300 steps: rc %d, %d metric lines, %.2f s",
            rc, count_lines(m), g_baseline_s);
    free(m);
}

/* The run dir's final state equals the baseline's: metrics and step-300 tensors. */
static void compare_with_baseline(const char *name, const char *dir, const char *how) {
    char *a = metrics_det(g_ref), *b = metrics_det(dir);
    char pa[600], pb[600], why[300] = "";
    ck(pa, sizeof pa, g_ref, 300);
    ck(pb, sizeof pb, dir, 300);
    int nt = 0;
    int same_w = ckpt_same(pa, pb, why, sizeof why, &nt);
    int same_m = a && b && strcmp(a, b) == 0;
    t_check(same_m && same_w && count_lines(b) == 300, name,
            "%s: metrics.jsonl (%d lines, all keys but timing) %s, step-300 checkpoint (%d tensors + state) %s%s%s", how,
            count_lines(b), same_m ? "IDENTICAL" : "DIFFERENT", nt, same_w ? "IDENTICAL" : "DIFFERENT",
            why[0] ? ": " : "", why);
    free(a); free(b);
}

static void test_sigterm(void) {
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/term", g_dir);
    snprintf(log, sizeof log, "%s/term.log", g_dir);
    int ok = 1, terms = 0;
    char cmd[600] = "";
    for (int round = 0; round < 2 && ok; round++) {
        unlink(log);
        pid_t p = spawn(dir, k_long, 3, log, 0);
        /* wait until it is training (a few metric lines past the last resume), then SIGTERM */
        char mp[400];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", dir);
        int want = 40 + 100 * round;
        double t0 = now_s();
        while (now_s() - t0 < 20) {
            char *m = slurp(mp);
            int n = count_lines(m);
            free(m);
            if (n >= want) break;
            usleep(2000);
        }
        kill(p, SIGTERM);
        int rc = wait_rc(p);
        char *s = slurp(log), *r = s ? strstr(s, "resume with: ") : NULL;
        if (r) {
            r += strlen("resume with: ");
            size_t n = strcspn(r, "\n");
            snprintf(cmd, sizeof cmd, "%.*s", (int)n, r);
        }
        int said = s && strstr(s, "terminated (SIGTERM) after step");
        free(s);
        if (rc != 0 || !r || !said) {
            ok = 0;
            t_fail("faults.sigterm_exit", "round %d: rc %d (want 0), resume command %s, message %s", round, rc,
                   r ? cmd : "MISSING", said ? "ok" : "MISSING");
        } else {
            terms++;
        }
    }
    if (!ok) return;
    t_ok("faults.sigterm_exit", "2 x SIGTERM mid-run: exit 0, checkpoint written, printed: %s", cmd);
    /* the printed command, as a user would paste it */
    char sh[800];
    snprintf(sh, sizeof sh, "ANYREF_PROGRESS=off %s > '%s' 2>&1", cmd, log);
    int rc = system(sh);
    t_check(rc == 0 && log_has(log, "resumed from"), "faults.sigterm_resume_cmd", "'%s': rc %d", cmd, rc);
    compare_with_baseline("faults.sigterm_identical", dir, "SIGTERM twice, resumed with the printed command");
}

static void test_sigkill_loop(void) {
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/kill", g_dir);
    snprintf(log, sizeof log, "%s/kill.log", g_dir);
    ar_rng g;
    rng_seed(&g, 20240607);
    int kills = 0, finished_early = 0, resumable = 1, mid_save = 0;
    char delays[400] = "";
    size_t dl = 0;
    for (int it = 0; it < 8; it++) {
        double span = g_baseline_s > 0.2 ? g_baseline_s : 0.2;
        double d = rng_uniform(&g) * span * 0.25;
        pid_t p = spawn(dir, k_long, 3, log, 0);
        usleep((useconds_t)(d * 1e6));
        kill(p, SIGKILL);
        int rc = wait_rc(p);
        if (rc == 128 + SIGKILL) kills++;
        else if (rc == 0) finished_early++;
        else resumable = 0;
        if (dl < sizeof delays - 16) dl += (size_t)snprintf(delays + dl, sizeof delays - dl, "%s%.0f", it ? "," : "", d * 1000);
        /* what a kill leaves: the newest checkpoint verifies (or there is none yet) */
        char latest[600];
        int lr = ckpt_latest(dir, latest, sizeof latest);
        if (lr < 0) resumable = 0;
        char pat[400];   /* a kill that landed inside a save leaves its .tmp */
        snprintf(pat, sizeof pat, "ls '%s'/checkpoints/*.tmp >/dev/null 2>&1", dir);
        if (rc == 128 + SIGKILL && system(pat) == 0) mid_save++;
    }
    int rc = run_train(dir, k_long, 3, log);
    t_check(rc == 0 && resumable && kills >= 5, "faults.sigkill_resumable",
            "%d SIGKILLs at seeded random moments (ms: %s; %d inside a save, a .tmp left), %d runs finished first; "
            "every kill left a checkpoint that verifies or none; the final resume rc %d", kills, delays, mid_save,
            finished_early, rc);
    compare_with_baseline("faults.sigkill_identical", dir, "8 x SIGKILL, resumed");
}

/* ------------------------------------------------------------------------ */
static void flip_tensor_byte(const char *path, const char *group, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT), d = H5Dopen2(g, name, H5P_DEFAULT);
    haddr_t off = H5Dget_offset(d);
    H5Dclose(d); H5Gclose(g); H5Fclose(f);
    int fd = open(path, O_RDWR);
    unsigned char b = 0;
    if (pread(fd, &b, 1, (off_t)off + 5) == 1) {
        b ^= 0x40;
        if (pwrite(fd, &b, 1, (off_t)off + 5) != 1) fprintf(stderr, "pwrite failed\n");
    }
    close(fd);
}

static void test_checksums(void) {
    char dir[300], log[400], p10[600], p20[600], p30[600], p40[600], tmpf[700];
    snprintf(dir, sizeof dir, "%s/sums", g_dir);
    snprintf(log, sizeof log, "%s/sums.log", g_dir);
    const char *ex[] = {"train.steps=40", "train.save_every=10", "train.keep_checkpoints=0"};
    int rc = run_train(dir, ex, 3, log);
    ck(p10, sizeof p10, dir, 10); ck(p20, sizeof p20, dir, 20); ck(p30, sizeof p30, dir, 30); ck(p40, sizeof p40, dir, 40);
    int v = ckpt_verify(p40);
    t_check(rc == 0 && v == 0, "faults.ckpt_verifies", "a fresh checkpoint verifies: rc %d %s", rc, v ? ar_error() : "");

    /* a flipped bit in a tensor's data: refused naming the file and the tensor */
    const char *tname = "model.layers.1.self_attn.q_proj.weight";
    flip_tensor_byte(p40, "weights", tname);
    v = ckpt_verify(p40);
    char want[300];
    snprintf(want, sizeof want, "tensor '%s' in /weights is corrupt", tname);
    t_check(v < 0 && strstr(ar_error(), p40) && strstr(ar_error(), want), "faults.ckpt_flipped_bit",
            "refused: %s", ar_error());

    /* a changed state attribute (step 30 -> 31) */
    hid_t f = H5Fopen(p30, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "step", H5P_DEFAULT);
    int64_t s31 = 31;
    H5Awrite(a, H5T_NATIVE_INT64, &s31);
    H5Aclose(a); H5Fclose(f);
    v = ckpt_verify(p30);
    t_check(v < 0 && strstr(ar_error(), p30) && strstr(ar_error(), "training state"), "faults.ckpt_state_changed",
            "refused: %s", ar_error());

    /* a truncated copy */
    snprintf(tmpf, sizeof tmpf, "%s/truncated.h5", g_dir);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "head -c %ld '%s' > '%s'", fsize(p20) * 2 / 3, p20, tmpf);
    int sr = system(cmd);
    v = ckpt_verify(tmpf);
    t_check(sr == 0 && v < 0 && strstr(ar_error(), tmpf), "faults.ckpt_truncated", "refused: %s", ar_error());

    /* resume: 40 and 30 refused, falls back to 20 and says so; then continues to 50 */
    unlink(log);
    const char *ex2[] = {"train.steps=50", "train.save_every=10", "train.keep_checkpoints=0"};
    rc = run_train(dir, ex2, 3, log);
    int said = log_has(log, "resumed from") && log_has(log, "step_000020.h5 at step 20, the newest checkpoint that verifies (2 newer one(s) refused)");
    int named = log_has(log, want);
    t_check(rc == 0 && said && named && ckpt_verify(p40) == 0, "faults.resume_fallback",
            "rc %d; log names the corrupt tensor: %s; resumed from step 20 saying so: %s; step 40 rewritten and verifies",
            rc, named ? "yes" : "NO", said ? "yes" : "NO");

    /* every checkpoint refused: an error, nothing deleted */
    flip_tensor_byte(p10, "adam_v", tname);
    for (int s = 20; s <= 50; s += 10) { char p[600]; ck(p, sizeof p, dir, s); flip_tensor_byte(p, "adam_m", tname); }
    unlink(log);
    rc = run_train(dir, ex2, 3, log);
    t_check(rc == 1 && log_has(log, "none of the 5 checkpoint(s)") && exists(p10) && exists(p20), "faults.resume_all_refused",
            "rc %d (want 1), the corrupt files are kept; log: %s", rc, log_has(log, "none of the 5") ? "says none loads" : "?");

    /* pruning: keep 3, stale .tmp removed */
    char pdir[300], stale[700];
    snprintf(pdir, sizeof pdir, "%s/prune", g_dir);
    const char *ex3[] = {"train.steps=30", "train.save_every=5", "train.keep_checkpoints=3", "train.stop_after=12"};
    rc = run_train(pdir, ex3, 4, log);
    ck(stale, sizeof stale, pdir, 7);
    strcat(stale, ".tmp");
    FILE *sf = fopen(stale, "w");
    if (sf) { fputs("half a checkpoint", sf); fclose(sf); }
    int rc2 = run_train(pdir, ex3, 3, log);
    int n = 0, which[8];
    for (int s = 1; s <= 30; s++) { char p[600]; ck(p, sizeof p, pdir, s); if (exists(p) && n < 8) which[n++] = s; }
    t_check(rc == 0 && rc2 == 0 && n == 3 && which[0] == 20 && which[1] == 25 && which[2] == 30 && !exists(stale),
            "faults.keep_checkpoints", "keep 3 after a stop at 12 and a resume: %d kept (%d,%d,%d), stale .tmp %s", n,
            n > 0 ? which[0] : -1, n > 1 ? which[1] : -1, n > 2 ? which[2] : -1, exists(stale) ? "LEFT" : "removed");
}

/* ------------------------------------------------------------------------ */
static void test_nan(void) {
    char clean[300], bad[300], stop[300], log[400], pc[600], pb[600], p60[600];
    snprintf(clean, sizeof clean, "%s/nan_clean", g_dir);
    snprintf(bad, sizeof bad, "%s/nan_skip", g_dir);
    snprintf(stop, sizeof stop, "%s/nan_stop", g_dir);
    snprintf(log, sizeof log, "%s/nan.log", g_dir);
    const char *c[] = {"train.steps=60", "train.save_every=10", "train.keep_checkpoints=0"};
    const char *b[] = {"train.steps=60", "train.save_every=10", "train.keep_checkpoints=0", "test.poison_grad_steps=15,16"};
    const char *s[] = {"train.steps=60", "train.save_every=10", "train.keep_checkpoints=0",
                       "test.poison_grad_steps=31,32,33,34,35,36,37", "train.max_bad_steps=5"};
    int rc1 = run_train(clean, c, 3, log);
    unlink(log);
    int rc2 = run_train(bad, b, 4, log);
    double b15 = t_metric(bad, 15, "bad_steps"), b16 = t_metric(bad, 16, "bad_steps"), b17 = t_metric(bad, 17, "bad_steps");
    double g16 = t_metric(bad, 16, "grad_norm"), g17 = t_metric(bad, 17, "grad_norm");
    ck(p60, sizeof p60, bad, 60);
    int fin = ckpt_finite(p60);
    int warned = log_has(log, "step 15: the gradient norm is nan; step skipped (no update)");
    t_check(rc1 == 0 && rc2 == 0 && b15 == 1 && b16 == 2 && b17 == 0 && isnan(g16) && isfinite(g17) && fin && warned,
            "faults.nan_skipped", "NaN gradients at steps 15,16: rc %d, bad_steps 15/16/17 = %g/%g/%g, grad_norm 16/17 "
            "= %g/%g, warning %s, step-60 weights and moments all finite: %s", rc2, b15, b16, b17, g16, g17,
            warned ? "yes" : "NO", fin ? "yes" : "NO");
    /* the checkpoint before the problem is the clean run's; the bad ones change nothing before them */
    char why[300] = "";
    int nt = 0;
    ck(pc, sizeof pc, clean, 10); ck(pb, sizeof pb, bad, 10);
    int same10 = ckpt_same(pc, pb, why, sizeof why, &nt);

    unlink(log);
    int rc3 = run_train(stop, s, 5, log);
    char p30[600], p40[600], pc30[600], msg[1000];
    ck(p30, sizeof p30, stop, 30); ck(p40, sizeof p40, stop, 40); ck(pc30, sizeof pc30, clean, 30);
    snprintf(msg, sizeof msg, "5 bad steps in a row (NaN/Inf loss or gradients; train.max_bad_steps = 5): stopping. "
             "The weights are not saved; the newest checkpoint from before the problem is %s", p30);
    int same30 = ckpt_same(pc30, p30, why, sizeof why, &nt);
    double b35 = t_metric(stop, 35, "bad_steps");
    t_check(rc3 == 1 && log_has(log, msg) && exists(p30) && !exists(p40) && same30 && same10 && b35 == 5,
            "faults.nan_stop", "NaN at 31..37, max_bad_steps 5: rc %d (want 1), message %s, bad_steps at 35 = %g, "
            "step 30 kept and IDENTICAL to the clean run's: %s, nothing saved after it: %s", rc3,
            log_has(log, msg) ? "names step_000030.h5" : "MISSING", b35, same30 ? "yes" : "NO", exists(p40) ? "NO" : "yes");
    /* resume without the fault: from step 30 to the end, the same as the clean run */
    unlink(log);
    int rc4 = run_train(stop, c, 3, log);
    char p60c[600], p60s[600];
    ck(p60c, sizeof p60c, clean, 60); ck(p60s, sizeof p60s, stop, 60);
    int same60 = ckpt_same(p60c, p60s, why, sizeof why, &nt);
    t_check(rc4 == 0 && log_has(log, "step_000030.h5 at step 30") && same60, "faults.nan_resume",
            "fault gone, resumed from step 30: rc %d, step-60 checkpoint identical to the clean run's: %s %s", rc4,
            same60 ? "yes" : "NO", why);
}

/* ------------------------------------------------------------------------ */
static int sh(const char *fmt, const char *a) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, fmt, a, a);
    return system(cmd);
}

static void test_disk(void) {
    char log[400], file[300], dir[400];
    snprintf(log, sizeof log, "%s/disk.log", g_dir);
    const char *ex[] = {"train.steps=60", "train.save_every=10", "train.keep_checkpoints=0"};

    /* run.dir below a regular file */
    snprintf(file, sizeof file, "%s/afile", g_dir);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    snprintf(dir, sizeof dir, "%s/run", file);
    int rc = run_train(dir, ex, 3, log);
    t_check(rc == 1 && log_has(log, "run directory") && log_has(log, "Not a directory") && !log_has(log, "step 1"),
            "faults.rundir_under_file", "rc %d (want 1): a clear error before training", rc);

    /* a failing save without mount: RLIMIT_FSIZE below a checkpoint's size -> EFBIG mid-write */
    char rl[300], p10[600], p20[600], p30[600], t20[700];
    snprintf(rl, sizeof rl, "%s/efbig", g_dir);
    const char *first[] = {"train.steps=60", "train.save_every=10", "train.keep_checkpoints=0", "train.stop_after=10"};
    int rc1 = run_train(rl, first, 4, log);
    ck(p10, sizeof p10, rl, 10); ck(p20, sizeof p20, rl, 20);
    snprintf(t20, sizeof t20, "%s.tmp", p20);
    long size10 = fsize(p10);
    unlink(log);
    pid_t p = spawn(rl, ex, 3, log, size10 / 2);
    int rc2 = p < 0 ? -1 : wait_rc(p);
    int intact = ckpt_verify(p10) == 0;
    t_check(rc1 == 0 && rc2 == 1 && log_has(log, "no checkpoint replaced (the newest good one:") &&
                log_has(log, "step_000010.h5") && !exists(p20) && !exists(t20) && intact,
            "faults.save_fails_efbig", "a save failing mid-write (EFBIG, file limit %ld of %ld bytes): rc %d (want 1), "
            "clear error, no .tmp left: %s, step 10 intact and verifies: %s", size10 / 2, size10, rc2,
            exists(t20) ? "NO" : "yes", intact ? "yes" : "NO");

    /* a failing save without mount: the .tmp is a symlink to /dev/full (ENOSPC on every write) */
    char fr[300], f10[600], f20[600], ft20[700];
    snprintf(fr, sizeof fr, "%s/devfull", g_dir);
    rc1 = run_train(fr, first, 4, log);
    ck(f10, sizeof f10, fr, 10); ck(f20, sizeof f20, fr, 20);
    snprintf(ft20, sizeof ft20, "%s.tmp", f20);
    int ln = symlink("/dev/full", ft20);
    unlink(log);
    rc2 = run_train(fr, ex, 3, log);
    struct stat lsb;
    intact = ckpt_verify(f10) == 0;
    t_check(rc1 == 0 && ln == 0 && rc2 == 1 && log_has(log, "No space left on device; no checkpoint replaced (the newest good one:") &&
                !exists(f20) && lstat(ft20, &lsb) != 0 && intact,
            "faults.save_fails_enospc_devfull", "the step-20 save writes into /dev/full: rc %d (want 1), clear error, "
            ".tmp removed, step 10 intact and verifies: %s", rc2, intact ? "yes" : "NO");

    /* tmpfs: read-only run dir, too small for a checkpoint, ENOSPC during the third save */
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/mnt", g_dir);
    mkdir(mnt, 0755);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=64k tmpfs '%s' 2>/dev/null && mkdir -p '%s/run/checkpoints' && "
             "mount -o remount,ro '%s' 2>/dev/null", mnt, mnt, mnt);
    if (system(cmd) != 0) {
        sh("umount '%s' 2>/dev/null; true", mnt);
        t_ok("faults.tmpfs_skipped", "skipped: mount(8) not permitted here (read-only dir, free-space and ENOSPC checks)");
        return;
    }
    snprintf(dir, sizeof dir, "%s/run", mnt);
    unlink(log);
    rc = run_train(dir, ex, 3, log);
    t_check(rc == 1 && log_has(log, "is not writable: cannot create the probe file") &&
                log_has(log, "Read-only file system"), "faults.rundir_readonly",
            "read-only run directory (tmpfs remounted ro; root ignores chmod): rc %d (want 1), error before training", rc);
    sh("umount '%s'; true", mnt);

    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=%ldk tmpfs '%s'", (size10 / 2) / 1024, mnt);
    int mrc = system(cmd);
    unlink(log);
    rc = run_train(dir, ex, 3, log);
    t_check(mrc == 0 && rc == 1 && log_has(log, "not enough space in") && !log_has(log, "step 1:"),
            "faults.rundir_no_space", "tmpfs of half a checkpoint: rc %d (want 1), refused before training", rc);
    sh("umount '%s'; true", mnt);

    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=%ldk tmpfs '%s'", (size10 * 5 / 2) / 1024, mnt);
    mrc = system(cmd);
    unlink(log);
    rc = run_train(dir, ex, 3, log);
    ck(p10, sizeof p10, dir, 10); ck(p20, sizeof p20, dir, 20); ck(p30, sizeof p30, dir, 30);
    char t30[700];
    snprintf(t30, sizeof t30, "%s.tmp", p30);
    int ok10 = ckpt_verify(p10) == 0, ok20 = ckpt_verify(p20) == 0;
    t_check(mrc == 0 && rc == 1 && log_has(log, "little space in") && log_has(log, "No space left on device") &&
                log_has(log, "no checkpoint replaced") && ok10 && ok20 && !exists(p30) && !exists(t30),
            "faults.save_enospc", "tmpfs of 2.5 checkpoints: warned before training, third save hit ENOSPC: rc %d (want 1), "
            "steps 10 and 20 verify: %s/%s, no step 30 and no .tmp: %s", rc, ok10 ? "yes" : "NO", ok20 ? "yes" : "NO",
            exists(p30) || exists(t30) ? "NO" : "yes");
    sh("umount '%s'; true", mnt);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(BIN, X_OK) != 0) {
        t_fail("faults.binary", "%s not built (make test builds it)", BIN);
        return t_exit_code();
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/anyref_test_faults_XXXXXX");
    if (!mkdtemp(g_dir)) {
        t_fail("faults.tmpdir", "mkdtemp failed");
        return t_exit_code();
    }
    double t0 = now_s();
    test_checksums();
    test_nan();
    test_disk();
    test_baseline();
    test_sigterm();
    test_sigkill_loop();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    fprintf(stderr, "test_faults: %.1f s\n", now_s() - t0);
    return t_exit_code();
}
