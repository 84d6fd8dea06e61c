/* tests/fuzz/driver.c — a short, deterministic fuzz smoke of one libFuzzer
 * target, without clang: `make test` links this main() with one
 * tests/fuzz/fuzz_<target>.c and the parser sources it names in the
 * Makefile's FUZZ_EXTRA_fuzz_<target>, all built by gcc with
 * -fsanitize=address,undefined -fno-sanitize-recover=all, into
 * build/tests/test_fuzz_<target>.
 *
 * The target is named by the binary (test_fuzz_<target>). Seeds are the
 * committed fixtures listed for it in SEEDS below (files or glob patterns,
 * optionally split into lines, with a leading selector byte for targets whose
 * first byte picks a mode), the files under tests/fuzz/seeds/<target>/
 * (regression inputs: crash reproducers), the corpus of the last long
 * libFuzzer run under tests/fuzz/corpus/<target>/ (`make fuzz-long`), and a
 * few generic inputs. Each seed runs once as is;
 * then mutants run until the time budget is spent: stacked bit flips,
 * overwrites with interesting bytes / 16- and 32-bit values, text tokens,
 * truncations, inserted and deleted runs, and splices of two seeds, drawn
 * from a splitmix64 stream with a fixed seed (so a given iteration count
 * replays exactly). Every input is an exactly sized malloc'd copy, so ASan
 * sees a read one byte past its end.
 *
 * Output, one line that tests/run.sh counts:
 *   ok   fuzz <target>: N inputs in S s, no crash
 *   FAIL fuzz <target>: crash on input N (...), saved to build/fuzz-crashes/...
 * On a crash (sanitizer report, __builtin_trap, abort, signal) or a leak the
 * input is written to build/fuzz-crashes/<target>-<fnv64>.bin and its first
 * bytes are printed in hex; `build/tests/test_fuzz_<target> FILE...` runs
 * only the given files (to reproduce one).
 *
 * Environment: FUZZ_SMOKE_SECONDS (default 3) time budget per target,
 * FUZZ_SMOKE_ITERS (if set: exactly this many mutants, no time limit),
 * FUZZ_SMOKE_SEED (default 1) the mutation stream, FUZZ_SMOKE_TIMEOUT
 * (default 20) seconds one input may take, FUZZ_CRASH_DIR
 * (default build/fuzz-crashes), FUZZ_SMOKE_VERBOSE=1 keeps the parsers'
 * warnings (by default stdio's stderr is pointed at /dev/null while inputs
 * run; the sanitizers' reports write to fd 2 and still show),
 * FUZZ_DUMP_SEEDS=DIR writes every seed to DIR and exits (the starting
 * corpus of `make fuzz-long`). Runs from the repository root.
 * Depends on: the target's LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize
 * if it has one), libasan/libubsan's interface functions, POSIX glob.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
size_t __sanitizer_get_current_allocated_bytes(void);   /* libasan's; gcc ships no allocator_interface.h */

/* libFuzzer's defaults where they matter: a huge malloc is a bug, a leak too. */
const char *__asan_default_options(void) {
    return "max_allocation_size_mb=2048:allocator_may_return_null=0:detect_leaks=1:"
           "handle_abort=0:handle_sigill=0:print_summary=1";
}
const char *__ubsan_default_options(void) { return "print_stacktrace=1:halt_on_error=1"; }

/* ---- seeds ------------------------------------------------------------- */

enum { WHOLE = 0, LINES = 1 };
typedef struct {
    const char *target;
    int prefix;          /* -1: none; else a selector byte put in front */
    int skip;            /* bytes dropped from the start of the file */
    int split;           /* WHOLE or LINES (each line, with its newline, is a seed too) */
    const char *path;    /* a file or glob pattern, relative to the repository root */
} seed_spec;

static const seed_spec SEEDS[] = {
    {"jsonl", -1, 0, LINES, "tests/fixtures/custom/data.jsonl"},
    {"json", -1, 0, WHOLE, "tests/fixtures/coco_instances.json"},
    {"json", -1, 0, WHOLE, "tests/fixtures/conversations.json"},
    {"json", -1, 0, WHOLE, "tests/fixtures/refer/root/*/refs(*).json"},
    {"json", -1, 0, WHOLE, "tests/fixtures/safetensors/sharded/model.safetensors.index.json"},
    {"json", -1, 0, LINES, "tests/fixtures/custom/data.jsonl"},
    {"pickle", -1, 0, WHOLE, "tests/fixtures/refer_join/root/*/refs(*).p"},
    {"pickle", -1, 0, WHOLE, "tests/fixtures/refer/root/*/refs(*).p"},
    {"pickle", -1, 0, WHOLE, "tests/fixtures/refer/values_*.p"},
    {"pickle", -1, 0, WHOLE, "tests/fixtures/refer/bad/*.p"},
    {"wav", -1, 0, WHOLE, "tests/fixtures/audio/*.wav"},
    {"wav", -1, 0, WHOLE, "tests/fixtures/custom/wav/*.wav"},
    {"wav", -1, 0, WHOLE, "tests/fixtures/avsbench/ms3/ms3_data/audio_wav/val/*.wav"},
    {"image", -1, 0, WHOLE, "tests/fixtures/images/*"},
    {"image", -1, 0, WHOLE, "tests/fixtures/custom/*/*.png"},
    {"image", -1, 0, WHOLE, "tests/fixtures/custom/img/*.jpg"},
    {"image", -1, 0, WHOLE, "tests/fixtures/avsbench/ms3/ms3_data/gt_masks/val/m2/*.png"},
    {"csv", -1, 0, WHOLE, "tests/fixtures/avsbench/*/*_meta_data.csv"},
    {"coco", 0, 0, WHOLE, "tests/fixtures/coco_instances.json"},
    {"coco", 0, 0, WHOLE, "tests/fixtures/refer_join/root/*/instances.json"},
    {"config", -1, 0, WHOLE, "configs/*.cfg"},
    {"conversation", -1, 0, WHOLE, "tests/fixtures/conversations.json"},
    {"config", -1, 0, LINES, "configs/sources-tiny.cfg"},
    {"safetensors", 1, 0, WHOLE, "tests/fixtures/safetensors/*.safetensors"},
    {"safetensors", 1, 0, WHOLE, "tests/fixtures/safetensors/sharded/*.safetensors"},
    {"safetensors", 0, 8, WHOLE, "tests/fixtures/safetensors/*.safetensors"},
    {"tokenizer", 0, 0, WHOLE, "tests/fixtures/tok_*.model"},
    {"tokenizer", 0, 0, WHOLE, "tests/fixtures/tok_bpe.json"},
    {"tokenizer", 1, 0, LINES, "tests/fixtures/custom/data.jsonl"},
    {"tokenizer", 2, 0, LINES, "tests/fixtures/custom/data.jsonl"},
    {"tokenizer", 3, 0, WHOLE, "tests/fixtures/custom/crops/c.png"},
};

/* inline seeds: selector-byte formats that no fixture holds */
typedef struct { const char *target; const char *data; size_t len; } inline_seed;
#define LIT(s) s, sizeof(s) - 1
static const inline_seed INLINE[] = {
    {"coco", LIT("\x01\x05\x05" "52203")},              /* RLE string for a 5x5 mask */
    {"coco", LIT("\x01\x07\x09" "0R2N1O2:")},
    {"coco", LIT("\x02\x10\x10" "\x04\x04\x30\x04\x30\x30\x04\x30")},   /* a square polygon */
    {"coco", LIT("\x02\x20\x11" "\x00\x00\x40\x10\x10\x40\x7f\x7f\x81\x05")},
    {"tokenizer", LIT("\x01Hello  world\n\xC3\xA9\xE4\xB8\xAD \xF0\x9F\x98\x80 12<s>[SEG]")},
    {"tokenizer", LIT("\x02" "a photo of the <image> dog")},
    {"tokenizer", LIT("\x03\x00\x00\x01\x00\x02\x00\xff\x00\x00\x01\xff\xff")},
    {"csv", LIT("a,b,\"c\"\r\n1,\"x,\"\"y\"\"\",3\n\n4,5\n")},
};

/* ---- state for the crash report --------------------------------------- */

static const char *g_target = "?";
static const uint8_t *g_cur;       /* the input being run */
static size_t g_cur_len;
static size_t g_count;             /* inputs run so far */
static const char *g_cur_what = "";
static char g_crash_dir[512] = "build/fuzz-crashes";
static volatile sig_atomic_t g_reported;

static uint64_t fnv64(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Saves the current input and prints the FAIL line and a hex dump; uses only
 * write(2)/open(2) and snprintf into stack buffers (runs from signal handlers
 * and from the sanitizer's death callback). */
static void report(const char *why) {
    if (g_reported) return;
    g_reported = 1;
    char path[768] = "";
    if (g_cur) {
        mkdir("build", 0777);
        mkdir(g_crash_dir, 0777);
        snprintf(path, sizeof path, "%s/%s-%016llx.bin", g_crash_dir, g_target,
                 (unsigned long long)fnv64(g_cur, g_cur_len));
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            size_t off = 0;
            while (off < g_cur_len) {
                ssize_t w = write(fd, g_cur + off, g_cur_len - off);
                if (w <= 0) break;
                off += (size_t)w;
            }
            close(fd);
        } else {
            snprintf(path, sizeof path, "(could not write to %s)", g_crash_dir);
        }
    }
    char line[1400];
    int n = snprintf(line, sizeof line,
                     "FAIL fuzz %s: %s on input %zu (%s, %zu bytes), saved to %s; rerun: build/tests/test_fuzz_%s %s\n",
                     g_target, why, g_count, g_cur_what, g_cur_len, path, g_target, path);
    if (n > 0) (void)!write(1, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    if (g_cur) {
        size_t show = g_cur_len < 256 ? g_cur_len : 256;
        char hex[4 * 256 + 64];
        size_t k = (size_t)snprintf(hex, sizeof hex, "  input (first %zu bytes, hex):", show);
        for (size_t i = 0; i < show; i++) {
            if (i % 32 == 0) hex[k++] = '\n', hex[k++] = ' ', hex[k++] = ' ';
            static const char digits[] = "0123456789abcdef";
            hex[k++] = digits[g_cur[i] >> 4];
            hex[k++] = digits[g_cur[i] & 15];
        }
        hex[k++] = '\n';
        (void)!write(1, hex, k);
    }
}

static void death_callback(void) { report("sanitizer error"); }

/* gcc links libasan and libubsan as two runtimes, each with its own death
 * callback: set both (the declaration above binds to libasan's). */
static void set_death_callbacks(void) {
    __sanitizer_set_death_callback(death_callback);
    void *h = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return;
    void (*set_cb)(void (*)(void)) = (void (*)(void (*)(void)))dlsym(h, "__sanitizer_set_death_callback");
    if (set_cb) set_cb(death_callback);
}

static void on_signal(int sig) {
    report(sig == SIGILL ? "trap (SIGILL)" : sig == SIGABRT ? "abort (SIGABRT)"
           : sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE"
           : sig == SIGALRM ? "timeout (SIGALRM)" : "signal");
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

/* ---- inputs ------------------------------------------------------------ */

typedef struct { uint8_t *p; size_t n; char name[160]; } buf;
static buf *g_seeds;
static size_t g_nseeds, g_capseeds;
static size_t g_nmutable;   /* seeds [0, g_nmutable) are mutated: not the generic ones */
#define MAX_INPUT ((size_t)1 << 20)

static void add_seed(const uint8_t *p, size_t n, int prefix, const char *name) {
    if (n + 1 > MAX_INPUT) return;
    if (g_nseeds == g_capseeds) {
        g_capseeds = g_capseeds ? 2 * g_capseeds : 64;
        g_seeds = realloc(g_seeds, g_capseeds * sizeof *g_seeds);
        if (!g_seeds) { perror("fuzz driver"); exit(2); }
    }
    size_t k = prefix >= 0;
    uint8_t *b = malloc(n + k + 1);
    if (!b) { perror("fuzz driver"); exit(2); }
    if (k) b[0] = (uint8_t)prefix;
    if (n) memcpy(b + k, p, n);
    g_seeds[g_nseeds].p = b, g_seeds[g_nseeds].n = n + k;
    snprintf(g_seeds[g_nseeds++].name, sizeof g_seeds->name, "%s", name);
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *nb = realloc(b, cap);
            if (!nb) { free(b); fclose(f); return NULL; }
            b = nb;
        }
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    fclose(f);
    *n = len;
    return b;
}

static size_t add_file(const char *path, int prefix, int skip, int split) {
    size_t n = 0, before = g_nseeds;
    uint8_t *b = read_file(path, &n);
    if (!b) return 0;
    size_t s = (size_t)skip < n ? (size_t)skip : n;
    char name[160];
    snprintf(name, sizeof name, "seed %.140s", path);
    add_seed(b + s, n - s, prefix, name);
    if (split == LINES)
        for (size_t i = 0, line = 1; i < n; line++) {
            size_t j = i;
            while (j < n && b[j] != '\n') j++;
            if (j < n) j++;
            snprintf(name, sizeof name, "seed %.130s line %zu", path, line);
            if (j - i > 1) add_seed(b + i, j - i, prefix, name);
            i = j;
        }
    free(b);
    return g_nseeds - before;
}

static int is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void load_seeds(void) {
    for (size_t i = 0; i < sizeof SEEDS / sizeof SEEDS[0]; i++) {
        const seed_spec *s = &SEEDS[i];
        if (strcmp(s->target, g_target)) continue;
        glob_t g;
        size_t got = 0;
        if (glob(s->path, 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++)
                if (is_regular(g.gl_pathv[k])) got += add_file(g.gl_pathv[k], s->prefix, s->skip, s->split);
            globfree(&g);
        }
        if (!got) fprintf(stderr, "fuzz %s: note: no seed from %s\n", g_target, s->path);
    }
    for (size_t i = 0; i < sizeof INLINE / sizeof INLINE[0]; i++)
        if (!strcmp(INLINE[i].target, g_target)) add_seed((const uint8_t *)INLINE[i].data, INLINE[i].len, -1, "inline seed");
    /* regression inputs committed for this target, then the corpus of the last long run (make fuzz-long) */
    static const char *const dirs[] = {"tests/fuzz/seeds", "tests/fuzz/corpus"};
    for (size_t d = 0; d < 2; d++) {
        char pat[256];
        snprintf(pat, sizeof pat, "%s/%s/*", dirs[d], g_target);
        glob_t g;
        if (glob(pat, 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++)
                if (is_regular(g.gl_pathv[k])) add_file(g.gl_pathv[k], -1, 0, WHOLE);
            globfree(&g);
        }
    }
    /* generic inputs every target gets (also the only ones mutated for a target with no entry above) */
    g_nmutable = g_nseeds ? g_nseeds : 8;
    static const uint8_t generic[][8] = {{0}, {1}, {2}, {3}, {0xff, 0xff, 0xff, 0xff}, {'{', '}'}, {'[', ']'}};
    add_seed(generic[0], 0, -1, "empty input");
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        add_seed(generic[i], i < 4 ? 1 : i == 4 ? 4 : 2, -1, "generic seed");
}

/* ---- mutations --------------------------------------------------------- */

static uint64_t g_rng;
static uint64_t rnd(void) {   /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static const uint8_t INTERESTING8[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x20, 0x40};
static const uint32_t INTERESTING32[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
                                         0x7fffffff, 0x80000000u, 0xffffffffu, 0xfffffffeu, 16000, 44100};
static const char *const TOKENS[] = {"\"", "\\", "{", "}", "[", "]", ",", ":", "\n", "\r\n", "-1", "0", "1e999",
                                     "-0.0", "99999999999999999999", "null", "true", "\\u0000", "\\ud800", "\xc3",
                                     "\xff", "=", "#", "NaN", "[[", "}}}", "\"\"", "RIFF", "WAVE", "fmt ", "data",
                                     "\x80\x02", ".", "(", "s", "d"};

/* a mutant of seed a (spliced with seed b) into out[], returns its length */
static size_t mutate(uint8_t *out, size_t cap, const buf *a, const buf *b) {
    size_t n = a->n;
    memcpy(out, a->p, n);
    int rounds = 1 + (int)below(4);
    for (int r = 0; r < rounds; r++) {
        switch (below(10)) {
        case 0: case 1:   /* bit flips */
            if (n) for (int k = 1 + (int)below(3); k > 0; k--) out[below(n)] ^= (uint8_t)(1u << below(8));
            break;
        case 2:           /* interesting byte */
            if (n) out[below(n)] = INTERESTING8[below(sizeof INTERESTING8)];
            break;
        case 3: {         /* interesting 16/32-bit value, either byte order */
            uint32_t v = INTERESTING32[below(sizeof INTERESTING32 / sizeof INTERESTING32[0])];
            size_t w = below(2) ? 4 : 2;
            if (n >= w) {
                size_t at = below(n - w + 1);
                int be = (int)below(2);
                for (size_t i = 0; i < w; i++) out[at + i] = (uint8_t)(v >> (8 * (be ? w - 1 - i : i)));
            }
            break;
        }
        case 4:           /* truncation */
            n = below(n + 1);
            break;
        case 5: {         /* delete a run */
            if (!n) break;
            size_t at = below(n), len = 1 + below(n - at < 16 ? n - at : 16);
            memmove(out + at, out + at + len, n - at - len);
            n -= len;
            break;
        }
        case 6: {         /* insert a run: a repeated byte, random bytes, or a copy of a part */
            size_t len = 1 + below(16), at = below(n + 1);
            if (n + len > cap) break;
            memmove(out + at + len, out + at, n - at);
            int kind = (int)below(3);
            uint8_t c = INTERESTING8[below(sizeof INTERESTING8)];
            for (size_t i = 0; i < len; i++)
                out[at + i] = kind == 0 ? c : kind == 1 || n == 0 ? (uint8_t)rnd() : out[(at + len + below(n - at + 1)) % (n + len)];
            n += len;
            break;
        }
        case 7: {         /* text token */
            const char *t = TOKENS[below(sizeof TOKENS / sizeof TOKENS[0])];
            size_t len = strlen(t), at = below(n + 1);
            if (below(2) && n >= at + len) { memcpy(out + at, t, len); break; }
            if (n + len > cap) break;
            memmove(out + at + len, out + at, n - at);
            memcpy(out + at, t, len);
            n += len;
            break;
        }
        case 8: {         /* splice: a prefix of this with a suffix of b */
            size_t cut = below(n + 1), from = below(b->n + 1), len = b->n - from;
            if (cut + len > cap) len = cap - cut;
            memcpy(out + cut, b->p + from, len);
            n = cut + len;
            break;
        }
        default:          /* random byte */
            if (n) out[below(n)] = (uint8_t)rnd();
            break;
        }
    }
    return n;
}

/* ---- running ----------------------------------------------------------- */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static size_t g_leak_checks;
static unsigned g_timeout = 20;   /* seconds per input */

/* Runs one input from an exactly sized heap copy; a leak is a failure too. */
static void run_one(const uint8_t *p, size_t n, const char *what) {
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) { perror("fuzz driver"); exit(2); }
    if (n) memcpy(copy, p, n);
    g_cur = copy, g_cur_len = n, g_cur_what = what;
    alarm(g_timeout);   /* a hang is a failure too (SIGALRM) */
    size_t before = __sanitizer_get_current_allocated_bytes();
    LLVMFuzzerTestOneInput(n ? copy : (const uint8_t *)"", n);
    /* more bytes live than before: maybe a leak; LSan decides (rarely needed) */
    if (__sanitizer_get_current_allocated_bytes() > before && g_leak_checks < 64) {
        g_leak_checks++;
        if (__lsan_do_recoverable_leak_check()) {
            report("memory leak");
            _exit(1);
        }
    }
    alarm(0);
    g_count++;
    g_cur = NULL;
    free(copy);
}

int main(int argc, char **argv) {
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    g_target = strncmp(base, "test_fuzz_", 10) == 0 ? base + 10 : base;
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *e = getenv("FUZZ_CRASH_DIR");
    if (e && *e) snprintf(g_crash_dir, sizeof g_crash_dir, "%s", e);
    if ((e = getenv("FUZZ_SMOKE_TIMEOUT")) && atoi(e) > 0) g_timeout = (unsigned)atoi(e);

    set_death_callbacks();
    const int sigs[] = {SIGILL, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(sigs[i], &sa, NULL);
    }
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    const double t0 = now();

    if (argc > 1) {   /* reproduce: run the given files only */
        for (int i = 1; i < argc; i++) {
            size_t n;
            uint8_t *b = read_file(argv[i], &n);
            if (!b) { printf("FAIL fuzz %s: cannot read %s: %s\n", g_target, argv[i], strerror(errno)); return 1; }
            run_one(b, n, argv[i]);
            free(b);
        }
        printf("ok   fuzz %s: %zu inputs in %.1f s, no crash\n", g_target, g_count, now() - t0);
        return 0;
    }

    double budget = 3.0;
    if ((e = getenv("FUZZ_SMOKE_SECONDS")) && *e) budget = atof(e);
    long long iters = -1;
    if ((e = getenv("FUZZ_SMOKE_ITERS")) && *e) iters = atoll(e);
    g_rng = 1;
    if ((e = getenv("FUZZ_SMOKE_SEED")) && *e) g_rng = strtoull(e, NULL, 0);
    g_rng ^= fnv64((const uint8_t *)g_target, strlen(g_target));   /* each target its own stream */

    load_seeds();
    if ((e = getenv("FUZZ_DUMP_SEEDS")) && *e) {   /* write the seeds to a directory (make fuzz-long) and stop */
        mkdir(e, 0777);
        for (size_t i = 0; i < g_nseeds; i++) {
            char path[600];
            snprintf(path, sizeof path, "%s/seed-%016llx", e, (unsigned long long)fnv64(g_seeds[i].p, g_seeds[i].n));
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(g_seeds[i].p, 1, g_seeds[i].n, f) != g_seeds[i].n) { perror(path); return 2; }
            fclose(f);
        }
        printf("fuzz %s: %zu seeds written to %s\n", g_target, g_nseeds, e);
        return 0;
    }
    /* mute the parsers' warnings (hundreds of thousands of them): they go through
     * stdio's stderr, the sanitizers' reports write to fd 2 directly */
    if (!((e = getenv("FUZZ_SMOKE_VERBOSE")) && *e == '1')) {
        FILE *null = fopen("/dev/null", "w");
        if (null) stderr = null;
    }
    for (size_t i = 0; i < g_nseeds; i++) run_one(g_seeds[i].p, g_seeds[i].n, g_seeds[i].name);

    size_t cap = 0;
    for (size_t i = 0; i < g_nseeds; i++) cap = g_seeds[i].n > cap ? g_seeds[i].n : cap;
    cap = 2 * cap + 64;
    uint8_t *out = malloc(cap);
    if (!out) { perror("fuzz driver"); return 2; }
    char what[200];
    for (long long it = 0; iters < 0 || it < iters; it++) {
        if (iters < 0 && (it & 15) == 0 && now() - t0 >= budget) break;
        const buf *a = &g_seeds[below(g_nmutable)], *b = &g_seeds[below(g_nseeds)];
        size_t n = mutate(out, cap, a, b);
        snprintf(what, sizeof what, "mutant %lld of %.80s", it, a->name);
        run_one(out, n, what);
    }
    free(out);
    for (size_t i = 0; i < g_nseeds; i++) free(g_seeds[i].p);
    free(g_seeds);
    printf("ok   fuzz %s: %zu inputs in %.1f s, no crash\n", g_target, g_count, now() - t0);
    if (getenv("FUZZ_SMOKE_STATS")) printf("  %zu seeds, %zu leak checks\n", g_nseeds, g_leak_checks);
    return 0;
}
