/* tests/test_core.c — the shared runtime: errors, config, RNG, arena, logging.
 * Every check compares against an exact expected value or a stated tolerance. */
#include "tests/testlib.h"

#include "core/arena.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmpdir[256];

static void tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", g_tmpdir, name);
}

/* Reads a whole file into a malloc'd NUL-terminated string (NULL on error). */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static int str_has(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */
static void *thread_sets_error(void *arg) {
    (void)arg;
    ar_errorf("set in another thread");
    return NULL;
}

static void test_error(void) {
    ar_error_clear();
    t_check(strcmp(ar_error(), "") == 0, "error.clear_is_empty", "'%s'", ar_error());
    int rc = ar_errorf("bad value %d in '%s'", 7, "x");
    t_check(rc == -1 && strcmp(ar_error(), "bad value 7 in 'x'") == 0, "error.format", "rc %d '%s'", rc, ar_error());
    rc = ar_error_prefix("reading %s: ", "foo.cfg");
    t_check(rc == -1 && strcmp(ar_error(), "reading foo.cfg: bad value 7 in 'x'") == 0, "error.prefix",
            "rc %d '%s'", rc, ar_error());
    ar_errorf("%s and more", ar_error());   /* argument aliases the buffer */
    t_check(strcmp(ar_error(), "reading foo.cfg: bad value 7 in 'x' and more") == 0, "error.self_reference",
            "'%s'", ar_error());
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ar_errorf("%s", big);
    size_t n1 = strlen(ar_error());
    ar_error_prefix("ctx: ");
    size_t n2 = strlen(ar_error());
    t_check(n1 == AR_ERROR_MAX - 1 && n2 == AR_ERROR_MAX - 1 && strncmp(ar_error(), "ctx: aaa", 8) == 0,
            "error.truncates_long", "len %zu then %zu after prefix, starts '%.8s'", n1, n2, ar_error());
    ar_errorf("main thread");
    pthread_t th;
    pthread_create(&th, NULL, thread_sets_error, NULL);
    pthread_join(th, NULL);
    t_check(strcmp(ar_error(), "main thread") == 0, "error.thread_local", "main sees '%s'", ar_error());
    ar_error_clear();
    t_check(ar_error()[0] == '\0', "error.clear", "'%s'", ar_error());
}

/* ------------------------------------------------------------------------ */
/* Config                                                                   */
/* ------------------------------------------------------------------------ */
static const cfg_key SCHEMA[] = {
    {"train.learning_rate", CFG_FLOAT, "3e-4", "peak learning rate"},
    {"train.steps", CFG_INT, "100", "optimizer steps"},
    {"train.batch_size", CFG_INT, "8", "samples per step"},
    {"train.bf16", CFG_BOOL, "false", "bfloat16 autocast"},
    {"train.run_name", CFG_STRING, "demo", "name of the run\nused for the output folder"},
    {"data.path", CFG_STRING, NULL, "data set root"},
    {"data.shuffle", CFG_BOOL, "true", "shuffle every epoch"},
    {"model.lora.r", CFG_INT, "8", "LoRA rank"},
    {"model.lora.alpha", CFG_FLOAT, "16", "LoRA alpha"},
};
#define NSCHEMA ((int)(sizeof SCHEMA / sizeof SCHEMA[0]))

/* Loads text into a fresh config; returns rc and leaves the config in *out. */
static int load(ar_config **out, const char *text, const char *origin) {
    *out = cfg_new(SCHEMA, NSCHEMA);
    if (!*out) return -2;
    return cfg_load_string(*out, text, strlen(text), origin);
}

/* Expects the load to fail with exactly the message `want`. */
static void expect_error(const char *name, const char *text, const char *want) {
    ar_config *c;
    int rc = load(&c, text, "bad.cfg");
    t_check(rc == -1 && strcmp(ar_error(), want) == 0, name, "rc %d msg '%s'", rc, ar_error());
    cfg_free(c);
}

static void test_config_parse(void) {
    ar_config *c = cfg_new(SCHEMA, NSCHEMA);
    t_check(c != NULL, "config.new", "%s", c ? "created" : ar_error());
    if (!c) return;
    t_check(cfg_int(c, "train.steps") == 100 && cfg_float(c, "train.learning_rate") == 3e-4 &&
                cfg_bool(c, "train.bf16") == 0 && cfg_bool(c, "data.shuffle") == 1 &&
                strcmp(cfg_str(c, "train.run_name"), "demo") == 0 && strcmp(cfg_str(c, "data.path"), "") == 0 &&
                cfg_float(c, "model.lora.alpha") == 16.0,
            "config.defaults", "steps %ld lr %g bf16 %d run '%s' path '%s'", cfg_int(c, "train.steps"),
            cfg_float(c, "train.learning_rate"), cfg_bool(c, "train.bf16"), cfg_str(c, "train.run_name"),
            cfg_str(c, "data.path"));
    t_check(strcmp(cfg_origin(c, "train.steps"), "default") == 0, "config.origin_default", "'%s'",
            cfg_origin(c, "train.steps"));
    cfg_free(c);

    const char *text =
        "\xEF\xBB\xBF# a comment line\r\n"
        "; another comment\n"
        "train.batch_size = 4\n"                                   /* full key before any section */
        "\n"
        "[ train ]   # section with a comment\n"
        "learning_rate = 1e-3   # trailing comment\n"
        "steps=250 ; trailing semicolon comment\n"
        "\tbf16 = YES\n"
        "run_name = \"a \\\"quoted\\\" # not a comment \\\\ done\"  # comment after quotes\n"
        "[data]\n"
        "path = /data/x#y;z   # '#' and ';' inside a word are kept\n"
        "shuffle = off\n"
        "[model.lora]\n"
        "r = -16\n"
        "alpha = 0x1p-2\n";
    int rc = load(&c, text, "t.cfg");
    t_check(rc == 0, "config.parse_ok", "rc %d %s", rc, ar_error());
    if (rc == 0) {
        t_check(cfg_int(c, "train.batch_size") == 4, "config.full_key_before_section", "%ld",
                cfg_int(c, "train.batch_size"));
        t_check(cfg_float(c, "train.learning_rate") == 1e-3, "config.float_trailing_comment", "%g",
                cfg_float(c, "train.learning_rate"));
        t_check(cfg_int(c, "train.steps") == 250, "config.int_semicolon_comment", "%ld", cfg_int(c, "train.steps"));
        t_check(cfg_bool(c, "train.bf16") == 1 && cfg_bool(c, "data.shuffle") == 0, "config.bool_words",
                "bf16 %d shuffle %d", cfg_bool(c, "train.bf16"), cfg_bool(c, "data.shuffle"));
        t_check(strcmp(cfg_str(c, "train.run_name"), "a \"quoted\" # not a comment \\ done") == 0,
                "config.quoted_escapes", "'%s'", cfg_str(c, "train.run_name"));
        t_check(strcmp(cfg_str(c, "data.path"), "/data/x#y;z") == 0, "config.bare_hash_inside_word", "'%s'",
                cfg_str(c, "data.path"));
        t_check(cfg_int(c, "model.lora.r") == -16 && cfg_float(c, "model.lora.alpha") == 0.25,
                "config.dotted_section", "r %ld alpha %g", cfg_int(c, "model.lora.r"),
                cfg_float(c, "model.lora.alpha"));
        t_check(strcmp(cfg_origin(c, "train.steps"), "t.cfg:7") == 0, "config.origin_file_line", "'%s'",
                cfg_origin(c, "train.steps"));
    }
    cfg_free(c);

    /* An empty quoted string and a value that is only a comment. */
    rc = load(&c, "[train]\nrun_name = \"\"\n[data]\npath = # nothing\n", "e.cfg");
    t_check(rc == 0 && strcmp(cfg_str(c, "train.run_name"), "") == 0 && strcmp(cfg_str(c, "data.path"), "") == 0,
            "config.empty_values", "rc %d run '%s' path '%s'", rc, c ? cfg_str(c, "train.run_name") : "",
            c ? cfg_str(c, "data.path") : "");
    cfg_free(c);
}

static void test_config_errors(void) {
    expect_error("config.unknown_key_suggestion",
                 "# demo\n\n[train]\nsteps = 3\n\n# lr\nlerning_rate = 1e-3\n",
                 "bad.cfg:7: unknown key 'train.lerning_rate' (did you mean 'train.learning_rate'?)");
    expect_error("config.key_in_wrong_section", "[data]\nsteps = 3\n",
                 "bad.cfg:2: unknown key 'data.steps' (did you mean 'train.steps'?)");
    expect_error("config.unknown_key_no_suggestion", "[train]\nzzzzzzzz = 3\n",
                 "bad.cfg:2: unknown key 'train.zzzzzzzz' ('anyref keys' lists the valid keys)");
    expect_error("config.unknown_section", "[trian]\nsteps = 3\n",
                 "bad.cfg:1: unknown section '[trian]' (did you mean '[train]'?)");
    expect_error("config.bad_int", "[train]\nsteps = 12abc\n",
                 "bad.cfg:2: invalid value '12abc' for 'train.steps': expected an integer");
    expect_error("config.int_is_not_float", "[train]\nsteps = 1.5\n",
                 "bad.cfg:2: invalid value '1.5' for 'train.steps': expected an integer");
    expect_error("config.int_overflow", "[train]\nsteps = 99999999999999999999\n",
                 "bad.cfg:2: invalid value '99999999999999999999' for 'train.steps': expected an integer "
                 "between -9223372036854775808 and 9223372036854775807");
    expect_error("config.empty_int", "[train]\nsteps =\n",
                 "bad.cfg:2: invalid value '' for 'train.steps': expected an integer");
    expect_error("config.bad_float", "[train]\nlearning_rate = 1e-3x\n",
                 "bad.cfg:2: invalid value '1e-3x' for 'train.learning_rate': expected a floating-point number");
    expect_error("config.nan_rejected", "[train]\nlearning_rate = nan\n",
                 "bad.cfg:2: invalid value 'nan' for 'train.learning_rate': expected a finite floating-point number");
    expect_error("config.inf_rejected", "[train]\nlearning_rate = -inf\n",
                 "bad.cfg:2: invalid value '-inf' for 'train.learning_rate': expected a finite floating-point number");
    expect_error("config.float_overflow_rejected", "[train]\nlearning_rate = 1e999\n",
                 "bad.cfg:2: invalid value '1e999' for 'train.learning_rate': expected a finite floating-point number");
    expect_error("config.bad_bool", "[train]\nbf16 = maybe\n",
                 "bad.cfg:2: invalid value 'maybe' for 'train.bf16': expected a boolean (true/false, yes/no, on/off, 1/0)");
    expect_error("config.duplicate_key", "[train]\nsteps = 1\nsteps = 2\n",
                 "bad.cfg:3: duplicate key 'train.steps' (already set on line 2)");
    expect_error("config.duplicate_key_across_forms", "train.steps = 1\n[train]\nsteps = 2\n",
                 "bad.cfg:3: duplicate key 'train.steps' (already set on line 1)");
    expect_error("config.garbage_line", "[train]\nthis is not valid\n",
                 "bad.cfg:2: expected '[section]', 'key = value' or a comment, got 'this is not valid'");
    expect_error("config.garbage_binary_escaped", "[train]\n\x01\x02zz\n",
                 "bad.cfg:2: expected '[section]', 'key = value' or a comment, got '\\x01\\x02zz'");
    expect_error("config.invalid_key_chars", "[train]\nlearning rate = 1\n",
                 "bad.cfg:2: invalid key 'learning rate' (use letters, digits, '_', '-', '.')");
    expect_error("config.missing_bracket", "[train\n", "bad.cfg:1: missing ']' in section header '[train'");
    expect_error("config.text_after_section", "[train] x\n", "bad.cfg:1: unexpected text after section header: 'x'");
    expect_error("config.unterminated_quote", "[train]\nrun_name = \"abc\n",
                 "bad.cfg:2: 'train.run_name': unterminated quoted string (missing closing '\"')");
    expect_error("config.unknown_escape", "[train]\nrun_name = \"a\\qb\"\n",
                 "bad.cfg:2: 'train.run_name': unknown escape '\\q' in quoted string (use \\\" \\\\ \\n \\t \\r)");
    expect_error("config.text_after_quote", "[train]\nrun_name = \"a\" b\n",
                 "bad.cfg:2: 'train.run_name': unexpected text after the closing quote: 'b'");
    expect_error("config.missing_key", "[train]\n = 3\n", "bad.cfg:2: missing key before '='");

    /* A NUL byte inside the text (cfg_load_string takes a length). */
    {
        const char text[] = "[train]\nsteps = 1\0 2\n";
        ar_config *c = cfg_new(SCHEMA, NSCHEMA);
        int rc = cfg_load_string(c, text, sizeof text - 1, "nul.cfg");
        t_check(rc == -1 && strcmp(ar_error(), "nul.cfg:2: line contains a NUL byte (binary file?)") == 0,
                "config.nul_byte", "rc %d '%s'", rc, ar_error());
        cfg_free(c);
    }

    /* Over-long line rejected; a long (but allowed) quoted value works. */
    {
        size_t n = CFG_MAX_LINE + 100;
        char *text = malloc(n + 64);
        int o = sprintf(text, "[train]\nrun_name = \"");
        memset(text + o, 'x', n);
        strcpy(text + o + n, "\"\n");
        char want[128];
        snprintf(want, sizeof want, "bad.cfg:2: line is too long (%zu bytes, the limit is %d)",
                 n + strlen("run_name = \"\""), CFG_MAX_LINE);
        expect_error("config.overlong_line", text, want);

        size_t m = 10000;
        memset(text + o, 'y', m);
        strcpy(text + o + m, "\"\n");
        ar_config *c;
        int rc = load(&c, text, "long.cfg");
        const char *v = rc == 0 ? cfg_str(c, "train.run_name") : "";
        t_check(rc == 0 && strlen(v) == m && v[0] == 'y' && v[m - 1] == 'y', "config.long_value_ok",
                "rc %d len %zu", rc, strlen(v));
        cfg_free(c);
        free(text);
    }

    /* A failing file changes nothing (two-pass load). */
    {
        ar_config *c = cfg_new(SCHEMA, NSCHEMA);
        const char *text = "[train]\nsteps = 5\nbatch_size = 2\nbf16 = sometimes\n";
        int rc = cfg_load_string(c, text, strlen(text), "atomic.cfg");
        t_check(rc == -1 && cfg_int(c, "train.steps") == 100 && cfg_int(c, "train.batch_size") == 8,
                "config.failed_load_changes_nothing", "rc %d steps %ld batch %ld", rc, cfg_int(c, "train.steps"),
                cfg_int(c, "train.batch_size"));
        cfg_free(c);
    }

    /* Missing file: the message names the path. */
    {
        ar_config *c = cfg_new(SCHEMA, NSCHEMA);
        char path[300];
        tmp_path(path, sizeof path, "does-not-exist.cfg");
        int rc = cfg_load_file(c, path);
        t_check(rc == -1 && str_has(ar_error(), path) && str_has(ar_error(), "cannot open config file"),
                "config.missing_file_names_path", "'%s'", ar_error());
        cfg_free(c);
    }

    /* Bad schemas. */
    {
        static const cfg_key bad_default[] = {{"train.steps", CFG_INT, "ten", "x"}};
        static const cfg_key dup[] = {{"a.b", CFG_INT, "1", ""}, {"a.b", CFG_INT, "2", ""}};
        static const cfg_key nosec[] = {{"steps", CFG_INT, "1", ""}};
        ar_config *c = cfg_new(bad_default, 1);
        t_check(!c && strcmp(ar_error(), "config schema default: invalid value 'ten' for 'train.steps': expected an integer") == 0,
                "config.schema_bad_default", "'%s'", ar_error());
        cfg_free(c);
        c = cfg_new(dup, 2);
        t_check(!c && str_has(ar_error(), "declared twice"), "config.schema_duplicate", "'%s'", ar_error());
        cfg_free(c);
        c = cfg_new(nosec, 1);
        t_check(!c && str_has(ar_error(), "section.key"), "config.schema_needs_section", "'%s'", ar_error());
        cfg_free(c);
    }
}

static void test_config_override_write(void) {
    ar_config *c = cfg_new(SCHEMA, NSCHEMA);
    int rc = cfg_override(c, "train.steps=42");
    t_check(rc == 0 && cfg_int(c, "train.steps") == 42 && strcmp(cfg_origin(c, "train.steps"), "command line") == 0,
            "config.override_int", "rc %d steps %ld origin '%s'", rc, cfg_int(c, "train.steps"),
            cfg_origin(c, "train.steps"));
    rc = cfg_override(c, " train.run_name = \"x \\\"y\\\"\" ");
    t_check(rc == 0 && strcmp(cfg_str(c, "train.run_name"), "x \"y\"") == 0, "config.override_quoted", "rc %d '%s'",
            rc, cfg_str(c, "train.run_name"));
    rc = cfg_override(c, "train.run_name=exp #1; v2");
    t_check(rc == 0 && strcmp(cfg_str(c, "train.run_name"), "exp #1; v2") == 0, "config.override_no_comments",
            "rc %d '%s'", rc, cfg_str(c, "train.run_name"));
    rc = cfg_override(c, "train.stepz=1");
    t_check(rc == -1 && strcmp(ar_error(), "command line: unknown key 'train.stepz' (did you mean 'train.steps'?)") == 0,
            "config.override_unknown_key", "'%s'", ar_error());
    rc = cfg_override(c, "train.steps=many");
    t_check(rc == -1 && strcmp(ar_error(), "command line: invalid value 'many' for 'train.steps': expected an integer") == 0,
            "config.override_bad_type", "'%s'", ar_error());
    rc = cfg_override(c, "train.steps");
    t_check(rc == -1 && str_has(ar_error(), "expected section.key=value"), "config.override_no_equals", "'%s'",
            ar_error());
    t_check(cfg_int(c, "train.steps") == 42, "config.override_errors_keep_value", "%ld", cfg_int(c, "train.steps"));
    rc = cfg_set(c, "model.lora.alpha", "2.5e1", "api", 0);
    t_check(rc == 0 && cfg_float(c, "model.lora.alpha") == 25.0, "config.set", "rc %d %g", rc,
            cfg_float(c, "model.lora.alpha"));

    /* Programming errors: unknown key / wrong type return 0 or NULL (message on stderr). */
    t_check(cfg_int(c, "train.nope") == 0 && cfg_str(c, "nope.nope") == NULL && cfg_bool(c, "train.steps") == 0 &&
                cfg_float(c, "train.steps") == 42.0,
            "config.getter_misuse", "unknown -> 0/NULL, wrong type -> 0, float of int key -> %g",
            cfg_float(c, "train.steps"));

    /* Round trip through cfg_write with awkward values. */
    cfg_override(c, "train.bf16=on");
    cfg_set(c, "train.run_name", "  lead \"q\" back\\slash # hash ; semi\ttab\nnewline\r  ", "api", 0);
    cfg_set(c, "data.path", "", "api", 0);
    cfg_set(c, "train.learning_rate", "0.1", "api", 0);
    char path[300];
    tmp_path(path, sizeof path, "roundtrip.cfg");
    FILE *f = fopen(path, "w");
    rc = f ? cfg_write(c, f) : -1;
    if (f) fclose(f);
    ar_config *d = cfg_new(SCHEMA, NSCHEMA);
    int rc2 = rc == 0 ? cfg_load_file(d, path) : -1;
    int same = rc2 == 0;
    for (int k = 0; k < NSCHEMA && same; k++) {
        const char *key = SCHEMA[k].key;
        if (strcmp(cfg_str(c, key), cfg_str(d, key)) != 0) same = 0;
        if (SCHEMA[k].type == CFG_FLOAT && cfg_float(c, key) != cfg_float(d, key)) same = 0;
    }
    t_check(same, "config.write_roundtrip", "write rc %d, load rc %d %s", rc, rc2, rc2 ? ar_error() : "all keys equal");
    char *w = slurp(path, NULL);
    t_check(str_has(w, "[train]\n# peak learning rate\nlearning_rate = 0.1\n") && str_has(w, "\n[model]\n") &&
                str_has(w, "lora.r = 8\n") && str_has(w, "# name of the run\n# used for the output folder\n"),
            "config.write_format", "sections grouped, help as comments");
    free(w);
    cfg_free(d);
    cfg_free(c);

    /* Help lists every key with type and default. */
    tmp_path(path, sizeof path, "help.txt");
    f = fopen(path, "w");
    cfg_print_help(SCHEMA, NSCHEMA, f);
    fclose(f);
    char *h = slurp(path, NULL);
    int all = h != NULL;
    for (int k = 0; k < NSCHEMA && all; k++)
        if (!str_has(h, SCHEMA[k].key)) all = 0;
    t_check(all && str_has(h, "train.steps          int     default 100") && str_has(h, "peak learning rate") &&
                str_has(h, "data.path            string  default \"\""),
            "config.help", "%s", all ? "every key listed" : "a key is missing");
    free(h);
}

/* ------------------------------------------------------------------------ */
/* RNG                                                                      */
/* ------------------------------------------------------------------------ */
static void test_rng(void) {
    ar_rng r;
    rng_seed(&r, 42);
    /* Reference: an independent Python implementation of splitmix64 seeding + xoshiro256**. */
    uint64_t want[3] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull, 0xae17533239e499a1ull};
    uint64_t got[3] = {rng_u64(&r), rng_u64(&r), rng_u64(&r)};
    t_check(memcmp(want, got, sizeof want) == 0, "rng.reference_values", "seed 42: %016llx %016llx %016llx",
            (unsigned long long)got[0], (unsigned long long)got[1], (unsigned long long)got[2]);

    ar_rng a, b;
    rng_seed(&a, 7);
    rng_seed(&b, 7);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_u64(&a) == rng_u64(&b);
    t_check(same, "rng.deterministic", "1000 draws equal for equal seeds");

    rng_seed(&a, 7);
    rng_seed(&b, 8);
    int eq = 0;
    for (int i = 0; i < 1000; i++) eq += rng_u64(&a) == rng_u64(&b);
    t_check(eq == 0, "rng.seeds_differ", "%d equal draws of 1000 for seeds 7, 8", eq);

    uint64_t s0 = rng_derive(1234, 0), s1 = rng_derive(1234, 1);
    rng_seed(&a, s0);
    rng_seed(&b, s1);
    eq = 0;
    for (int i = 0; i < 1000; i++) eq += rng_u64(&a) == rng_u64(&b);
    t_check(s0 != s1 && rng_derive(1234, 1) == s1 && rng_derive(1235, 0) != s0 && eq == 0, "rng.derive_streams",
            "streams 0/1: %016llx %016llx, %d equal draws", (unsigned long long)s0, (unsigned long long)s1, eq);

    const int N = 100000;
    rng_seed(&r, 99);
    double sum = 0, sq = 0, lo = 1, hi = 0;
    for (int i = 0; i < N; i++) {
        double u = rng_uniform(&r);
        sum += u; sq += u * u;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    double mean = sum / N, var = sq / N - mean * mean;
    t_check(fabs(mean - 0.5) < 0.005 && fabs(var - 1.0 / 12) < 0.002 && lo >= 0 && hi < 1, "rng.uniform_moments",
            "mean %.5f (0.5) var %.5f (0.08333) range [%.2g, %.6f]", mean, var, lo, hi);

    sum = sq = 0;
    for (int i = 0; i < N; i++) {
        double z = rng_normal(&r);
        sum += z; sq += z * z;
    }
    mean = sum / N;
    double sd = sqrt(sq / N - mean * mean);
    t_check(fabs(mean) < 0.015 && fabs(sd - 1) < 0.015, "rng.normal_moments", "mean %.5f std %.5f", mean, sd);

    float *x = t_alloc((size_t)N + 1);
    rng_fill_normal(&r, x, (size_t)N + 1, 2.0f, 3.0f);   /* odd count: exercises the tail */
    sum = sq = 0;
    for (int i = 0; i <= N; i++) { sum += x[i]; sq += (double)x[i] * x[i]; }
    mean = sum / (N + 1);
    sd = sqrt(sq / (N + 1) - mean * mean);
    t_check(fabs(mean - 2) < 0.045 && fabs(sd - 3) < 0.045, "rng.fill_normal", "mean %.4f (2) std %.4f (3)", mean, sd);

    rng_fill_uniform(&r, x, (size_t)N, -1.5f, 0.5f);
    sum = 0;
    float mn = 1e9f, mx = -1e9f;
    for (int i = 0; i < N; i++) {
        sum += x[i];
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
    }
    mean = sum / N;
    t_check(fabs(mean + 0.5) < 0.01 && mn >= -1.5f && mx < 0.5f, "rng.fill_uniform", "mean %.4f (-0.5) range [%g, %g]",
            mean, mn, mx);
    free(x);

    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[rng_below(&r, 7)]++;
    double chi = 0;
    for (int i = 0; i < 7; i++) chi += (counts[i] - 10000.0) * (counts[i] - 10000.0) / 10000.0;
    t_check(chi < 22.5, "rng.below_uniform", "chi2 %.2f over 7 bins (p=0.001 bound 22.5)", chi);

    int perm[50], seen[50] = {0}, moved = 0, ok = 1;
    for (int i = 0; i < 50; i++) perm[i] = i;
    rng_shuffle_int(&r, perm, 50);
    for (int i = 0; i < 50; i++) {
        if (perm[i] < 0 || perm[i] >= 50 || seen[perm[i]]++) ok = 0;
        moved += perm[i] != i;
    }
    t_check(ok && moved > 30, "rng.shuffle_permutation", "valid permutation, %d of 50 moved", moved);
}

/* ------------------------------------------------------------------------ */
/* Arena                                                                    */
/* ------------------------------------------------------------------------ */
/* The allocation plan of a pretend model, run once measuring and once for real. */
static int plan(ar_arena *a, void **p) {
    p[0] = arena_alloc(a, 1);
    p[1] = arena_floats(a, 100);   /* 400 bytes -> 448 */
    p[2] = arena_alloc(a, 64);
    p[3] = arena_alloc(a, 1000);   /* -> 1024 */
    return 0;
}

static void test_arena(void) {
    ar_arena a;
    int rc = arena_init(&a, 1 << 20);
    t_check(rc == 0 && a.cap == (1u << 20) && a.used == 0, "arena.init", "rc %d cap %zu", rc, a.cap);
    if (rc) return;
    void *p[4];
    plan(&a, p);
    int aligned = 1, order = 1;
    for (int i = 0; i < 4; i++) aligned &= p[i] && ((uintptr_t)p[i] % 64) == 0;
    size_t off[4];
    for (int i = 0; i < 4; i++) off[i] = (size_t)((char *)p[i] - a.base);
    order = off[0] == 0 && off[1] == 64 && off[2] == 64 + 448 && off[3] == 64 + 448 + 64;
    t_check(aligned && order && a.used == 64 + 448 + 64 + 1024, "arena.alignment",
            "offsets %zu %zu %zu %zu used %zu", off[0], off[1], off[2], off[3], a.used);
    memset(p[3], 0xab, 1000);   /* the memory is usable */

    size_t m = arena_mark(&a);
    void *q = arena_alloc(&a, 5000);
    size_t high = a.high;
    arena_release(&a, m);
    void *q2 = arena_alloc(&a, 10);
    t_check(q && q2 == q && a.used == m + 64 && a.high == high, "arena.mark_release",
            "same pointer after release, used %zu high %zu", a.used, a.high);

    ar_error_clear();
    void *big = arena_alloc(&a, (size_t)2 << 20);
    t_check(big == NULL && strncmp(ar_error(), "arena exhausted: need 2.00 MiB, have 1.00 MiB", 45) == 0,
            "arena.exhausted_error", "'%s'", ar_error());
    size_t rest = a.cap - a.used;
    void *last = arena_alloc(&a, rest);
    void *over = arena_alloc(&a, 1);
    t_check(last != NULL && over == NULL && a.used == a.cap, "arena.fills_exactly", "rest %zu bytes fit, 1 more fails",
            rest);
    arena_reset(&a);
    t_check(a.used == 0 && arena_alloc(&a, 1) == a.base, "arena.reset", "used %zu", a.used);
    arena_free(&a);
    arena_free(&a);   /* safe twice */
    t_check(a.base == NULL && a.cap == 0, "arena.free", "struct cleared");

    /* Measuring mode: counts, returns NULL, does not touch ar_error. */
    ar_arena meas;
    arena_init_measure(&meas);
    ar_errorf("sentinel");
    void *mp[4];
    plan(&meas, mp);
    t_check(meas.measuring && meas.high == 64 + 448 + 64 + 1024 && !mp[0] && !mp[1] && !mp[2] && !mp[3] &&
                strcmp(ar_error(), "sentinel") == 0,
            "arena.measure_counts", "high %zu (want 1600), error '%s'", meas.high, ar_error());
    ar_arena real;
    rc = arena_init(&real, meas.high);
    plan(&real, p);
    int fit = rc == 0 && p[3] != NULL && real.used == real.cap;
    t_check(fit && arena_alloc(&real, 1) == NULL, "arena.measured_size_fits", "cap %zu used %zu", real.cap, real.used);
    arena_free(&real);

    ar_arena huge;
    rc = arena_init(&huge, (size_t)1 << 62);
    t_check(rc == -1 && huge.base == NULL && str_has(ar_error(), "MiB"), "arena.init_failure_message", "'%s'",
            ar_error());
}

/* ------------------------------------------------------------------------ */
/* Log and progress                                                         */
/* ------------------------------------------------------------------------ */
static void test_log_metrics(void) {
    char path[300];
    tmp_path(path, sizeof path, "metrics.jsonl");
    ar_log *l = log_open(path);
    t_check(l != NULL, "log.open", "%s", l ? path : ar_error());
    if (!l) return;
    const char *keys[3] = {"loss", "lr", "we\"ird\\key\n\x01"};
    double v1[3] = {2.31, 3e-4, NAN};
    double v2[3] = {-0.5, 1e20, INFINITY};
    double t0 = ar_wall();
    int rc1 = log_metrics(l, 12, keys, v1, 3);
    int rc2 = log_metrics(l, 13, keys, v2, 2);
    log_close(l);
    l = log_open(path);   /* appends */
    int rc3 = log_metrics(l, 14, NULL, NULL, 0);
    int rc4 = log_metrics(l, 15, keys + 2, v2 + 2, 1);
    log_close(l);
    t_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && rc4 == 0, "log.metrics_rc", "%d %d %d %d", rc1, rc2, rc3, rc4);

    const char *want[4] = {
        "{\"step\":12,\"loss\":2.31,\"lr\":0.0003,\"we\\\"ird\\\\key\\n\\u0001\":null,\"time\":",
        "{\"step\":13,\"loss\":-0.5,\"lr\":1e+20,\"time\":",
        "{\"step\":14,\"time\":",
        "{\"step\":15,\"we\\\"ird\\\\key\\n\\u0001\":null,\"time\":",
    };
    char *text = slurp(path, NULL);
    int lines_ok = text != NULL, nlines = 0;
    double tmax = 0;
    for (char *s = text; s && *s && lines_ok; nlines++) {
        char *nl = strchr(s, '\n');
        if (!nl || nlines >= 4) { lines_ok = 0; break; }
        *nl = '\0';
        size_t wl = strlen(want[nlines]);
        char *end;
        double t = strncmp(s, want[nlines], wl) == 0 ? strtod(s + wl, &end) : 0;
        if (t == 0 || strcmp(end, "}") != 0 || fabs(t - t0) > 60) {
            printf("     line %d: '%s'\n", nlines + 1, s);
            lines_ok = 0;
        }
        if (t > tmax) tmax = t;
        s = nl + 1;
    }
    t_check(lines_ok && nlines == 4, "log.metrics_jsonl_exact", "%d lines, time %.3f within 60 s of now", nlines, tmax);
    free(text);

    ar_log *none = log_open(NULL);
    int rc = log_metrics(none, 1, keys, v1, 1);
    t_check(none != NULL && rc == 0, "log.no_file", "log_open(NULL) gives a log that writes nothing");
    log_close(none);

    tmp_path(path, sizeof path, "no/such/dir/m.jsonl");
    ar_log *bad = log_open(path);
    t_check(bad == NULL && str_has(ar_error(), path), "log.open_error_names_path", "'%s'", ar_error());
}

/* Runs fn with stderr redirected to a file; returns the captured text. */
static char *capture_stderr(const char *name, void (*fn)(void)) {
    char path[300];
    tmp_path(path, sizeof path, name);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || saved < 0) return NULL;
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    return slurp(path, NULL);
}

static void run_progress(void) {
    ar_progress p;
    progress_start(&p, 1000, "train");
    for (long i = 1; i <= 1000; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "loss %.3f", 1.0 / (double)i);
        progress_update(&p, i, extra);
        if (i == 500) log_info("halfway at step %ld", i);
    }
    progress_finish(&p);
}

static const char *last_line(char *text) {
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n') text[--n] = '\0';
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

static void test_progress(void) {
    unsetenv("ANYREF_PROGRESS");
    char *out = capture_stderr("progress_plain.txt", run_progress);
    int lines = 0;
    for (const char *s = out; s && *s; s++) lines += *s == '\n';
    int no_cr = out && !strchr(out, '\r') && !strchr(out, '\033');
    int has_info = str_has(out, "\nhalfway at step 500\n");
    int first = str_has(out, "train: 1/1000 (0%) ");
    const char *last = out ? last_line(out) : "";
    t_check(no_cr && has_info && first && str_has(last, "train: 1000/1000 (100%)") && str_has(last, "| loss 0.001") &&
                lines >= 3 && lines <= 14,
            "progress.plain_non_tty", "%d lines, no \\r/ANSI %d, last '%s'", lines, no_cr, last);
    free(out);

    setenv("ANYREF_PROGRESS", "off", 1);
    out = capture_stderr("progress_off.txt", run_progress);
    t_check(out && strcmp(out, "halfway at step 500\n") == 0, "progress.env_off", "'%s'", out ? out : "(null)");
    free(out);

    setenv("ANYREF_PROGRESS", "bar", 1);
    out = capture_stderr("progress_bar.txt", run_progress);
    size_t n = out ? strlen(out) : 0;
    t_check(out && out[0] == '\r' && n && out[n - 1] == '\n' && str_has(out, "1000/1000") && str_has(out, "100%") &&
                str_has(out, "\r\033[Khalfway at step 500\n\rtrain"),
            "progress.env_bar", "%zu bytes, starts with \\r, info clears and redraws the bar", n);
    free(out);
    unsetenv("ANYREF_PROGRESS");
}

int main(void) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/anyref_test_core_XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        t_fail("core.tmpdir", "mkdtemp failed");
        return 1;
    }
    test_error();
    test_config_parse();
    test_config_errors();
    test_config_override_write();
    test_rng();
    test_arena();
    test_log_metrics();
    test_progress();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) printf("     (could not remove %s)\n", g_tmpdir);
    return t_exit_code();
}
