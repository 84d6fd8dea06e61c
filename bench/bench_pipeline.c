/* bench/bench_pipeline.c — samples/s of the RefCOCO sample pipeline through
 * anyref's live loader (data/loader.h), the C side of bench/run_pipeline.sh
 * (bench/pipeline_ref.py is the PIL + numpy side).
 *
 * One LDR_REFER source: <root>/refcoco/refs(unc).p + instances.json, split
 * train, images under <root> in the REFER layout (bench/make_refer_tree.py
 * writes such a tree). Config: clip_S 224 without the crop (AnyRef's
 * clip_resize_wo_crop), sam_S 1024, the given tokenizer, llava_v1, T 512,
 * seed 0, shuffled, deterministic. Every sample: JPEG decode, SAM
 * ResizeLongestSide + normalise + pad to [3, 1024, 1024], CLIP [3, 224, 224],
 * the mask decoded from the annotation's RLE (the polygons were rasterised
 * into RLE once, at ldr_open: "open_s"), the question / answer tokenized into
 * tokens and targets [T].
 *
 * Timed: from ldr_start (threads started) to the last ldr_next_batch of
 * --samples samples (default: one epoch, ldr_rows; rounded down to batches of
 * B), i.e. thread start-up and first touch of the sample buffers included.
 * ldr_open is timed apart. --threads: 0 builds in the calling thread,
 * N >= 1 starts N decode threads (the caller only consumes).
 *
 * Output ('#' lines describe the run):
 *   result side=c threads=N samples=.. seconds=.. samples_per_s=.. step_ms=..
 *          open_s=.. broken=.. wait_s=.. cpu_s=.. mask_px=.. labels=.. peak_rss_mib=..
 * (mask_px: the sum of every ground-truth mask pixel handed out, labels: the
 * targets that are not -100; checks, not speeds.)
 *
 * --stages: instead of the loader, the pipeline's steps called one by one in
 * this thread on the first --samples records of the join (default 100), in
 * file order: image_load, image_sam_preprocess, image_clip_preprocess,
 * rle_decode_hw + bytes to floats, conv_tokenize of "<image>\nCan you segment
 * the {s} in this image?" / "{s}[SEG]." (first sentence); one line each
 *   stage name=<decode|sam|clip|mask|text> ms=<mean ms per sample> samples=N
 * (where the time goes; bench/pipeline_ref.py --stages prints the same).
 *
 *   bench_pipeline --root=DIR --tokenizer=FILE [--threads=N] [--batch=B]
 *                  [--samples=N] [--prefetch=P] [--T=512] [--clip=224] [--sam=1024]
 *                  [--deterministic=0|1] [--stages]
 * Depends on data/loader.h, data/refer_samples.h, data/image.h, data/rle.h,
 * data/conversation.h, core/ (error, timer), bench/bench_util.h.
 */
#include "bench/bench_util.h"
#include "core/error.h"
#include "core/timer.h"
#include "data/conversation.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/refer.h"
#include "data/refer_samples.h"
#include "data/rle.h"
#include "data/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int int_opt(const char *arg, const char *name, int *dst, int lo) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end || v < lo || v > 10000000) { fprintf(stderr, "bench_pipeline: bad value in %s\n", arg); exit(2); }
    *dst = (int)v;
    return 1;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

#define DIE(...) do { fprintf(stderr, "bench_pipeline: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* --stages (above). */
static void stages(const char *root, const char *tokpath, int N, int T, int clip, int sam) {
    refer_join *j = refer_join_load(root, "refcoco", NULL, "train", root, REFER_IMAGES_REFER);
    if (!j) DIE("%s", ar_error());
    tokenizer *tok = tok_load(tokpath);
    conv_encoder *e = tok ? conv_encoder_new(tok, "llava_v1", T) : NULL;
    if (!e || conv_encoder_add_placeholder(e, "<image>") != -1 || conv_encoder_add_token(e, "[SEG]", 1) < 0)
        DIE("%s", ar_error());
    if (N <= 0 || (size_t)N > j->n) N = j->n < 100 ? (int)j->n : 100;
    float *sbuf = malloc((size_t)3 * sam * sam * sizeof *sbuf), *cbuf = malloc((size_t)3 * clip * clip * sizeof *cbuf);
    if (!sbuf || !cbuf) DIE("out of memory");
    double t[5] = {0};
    static const char *names[5] = {"decode", "sam", "clip", "mask", "text"};
    double px = 0;
    for (int i = 0; i < N; i++) {
        const refer_record *r = &j->recs[i];
        ar_image im;
        double a = ar_now();
        if (image_load(&im, r->image_path, IMAGE_RGB)) DIE("%s", ar_error());
        double b = ar_now();
        if (image_sam_preprocess(sbuf, &im, sam, NULL, NULL)) DIE("%s", ar_error());
        double c = ar_now();
        if (image_clip_preprocess(cbuf, &im, clip, 0)) DIE("%s", ar_error());
        double d = ar_now();
        size_t hw = (size_t)r->height * r->width;
        uint8_t *m8 = malloc(hw);
        float *mf = malloc(hw * sizeof *mf);
        if (!m8 || !mf || rle_decode_hw(&r->mask, m8)) DIE("mask of ref %lld", (long long)r->ref_id);
        for (size_t p = 0; p < hw; p++) mf[p] = m8[p];
        double f = ar_now();
        char q[512], ans[512];
        snprintf(q, sizeof q, "<image>\nCan you segment the %s in this image?", r->sentences[0].sent);
        snprintf(ans, sizeof ans, "%s[SEG].", r->sentences[0].sent);
        const char *msgs[2] = {q, ans};
        conv_sample cs;
        if (conv_tokenize(e, msgs, NULL, 2, &cs)) DIE("%s", ar_error());
        double g = ar_now();
        t[0] += b - a; t[1] += c - b; t[2] += d - c; t[3] += f - d; t[4] += g - f;
        px += mf[hw / 2];
        conv_sample_free(&cs);
        free(m8);
        free(mf);
        image_free(&im);
    }
    for (int k = 0; k < 5; k++) printf("stage name=%s ms=%.3f samples=%d\n", names[k], 1e3 * t[k] / N, N);
    free(sbuf);
    free(cbuf);
    conv_encoder_free(e);
    tok_free(tok);
    refer_join_free(j);
}

int main(int argc, char **argv) {
    const char *root = NULL, *tok = NULL;
    int threads = 2, B = 4, N = 0, prefetch = 0, T = 512, clip = 224, sam = 1024, det = 1, stage = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--root=", 7) == 0) { root = a + 7; continue; }
        if (strncmp(a, "--tokenizer=", 12) == 0) { tok = a + 12; continue; }
        if (strcmp(a, "--stages") == 0) { stage = 1; continue; }
        if (int_opt(a, "--threads", &threads, 0) || int_opt(a, "--batch", &B, 1) || int_opt(a, "--samples", &N, 0) ||
            int_opt(a, "--prefetch", &prefetch, 0) || int_opt(a, "--T", &T, 2) || int_opt(a, "--clip", &clip, 0) ||
            int_opt(a, "--sam", &sam, 0) || int_opt(a, "--deterministic", &det, 0))
            continue;
        root = NULL;
        break;
    }
    if (!root || !tok) {
        fprintf(stderr, "usage: %s --root=DIR --tokenizer=FILE [--threads=N] [--batch=B] [--samples=N] "
                        "[--prefetch=P] [--T=512] [--clip=224] [--sam=1024] [--deterministic=0|1] [--stages]\n", argv[0]);
        return 2;
    }
    if (stage) {
        stages(root, tok, N, T, clip, sam);
        return 0;
    }

    ldr_cfg c;
    ldr_cfg_default(&c);
    c.n_sources = 1;
    c.src[0] = (ldr_source){.kind = LDR_REFER, .root = root, .dataset = "refcoco", .split_by = "", .split = "train",
                            .images = root, .image_layout = REFER_IMAGES_REFER, .caption = 0, .weight = 1.0};
    c.tokenizer = tok;
    c.T = T;
    c.clip_S = clip;
    c.clip_crop = 0;
    c.sam_S = sam;
    c.seed = 0;
    c.threads = threads;
    c.prefetch = prefetch;
    c.deterministic = det ? 1 : 0;
    c.shuffle = 1;

    printf("# c.compiler=%s\n", __VERSION__);
    static const char *envs[] = {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MALLOC_ARENA_MAX"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i]);
        printf("# env.%s=%s\n", envs[i], v ? v : "(unset)");
    }
    printf("# c.config=threads=%d,prefetch=%d,batch=%d,deterministic=%d,T=%d,clip=%d,clip_crop=0,sam=%d,seed=0\n",
           threads, prefetch, B, c.deterministic, T, clip, sam);
    fflush(stdout);

    double t0 = ar_now();
    ldr *l = ldr_open(&c);
    if (!l) { fprintf(stderr, "bench_pipeline: %s\n", ar_error()); return 1; }
    double open_s = ar_now() - t0;
    int64_t rows = ldr_rows(l);
    printf("# c.source=%s\n# c.records=%lld\n# c.vocab=%d\n", ldr_source_name(l, 0), (long long)rows, ldr_vocab(l));
    if (N == 0) N = (int)rows;
    int nb = N / B;
    if (nb < 1) { fprintf(stderr, "bench_pipeline: fewer samples (%d) than a batch (%d)\n", N, B); return 2; }
    N = nb * B;

    double cpu0 = cpu_seconds();
    t0 = ar_now();
    if (ldr_start(l, B, 0, 0)) { fprintf(stderr, "bench_pipeline: %s\n", ar_error()); return 1; }
    tds_cursor cur = {.seed = 0};
    double mask_px = 0.0;
    long labels = 0;
    const ldr_item **items = calloc((size_t)B, sizeof *items);
    if (!items) DIE("out of memory");
    for (int b = 0; b < nb; b++) {
        if (ldr_next_batch(l, &cur, items)) { fprintf(stderr, "bench_pipeline: %s\n", ar_error()); return 1; }
        for (int k = 0; k < B; k++) {   /* cheap checks that the data is there (not part of a trainer's work) */
            const ldr_item *it = items[k];
            size_t hw = (size_t)(it->mask_hw[0] ? it->mask_hw[0] : it->orig_hw[0]) *
                        (size_t)(it->mask_hw[1] ? it->mask_hw[1] : it->orig_hw[1]);
            for (size_t p = 0; p < (size_t)it->n_masks * hw; p++) mask_px += it->masks[p];
            for (int t = 0; t < T; t++) labels += it->targets[t] != -100;
        }
    }
    double sec = ar_now() - t0, cpu = cpu_seconds() - cpu0;
    ldr_stats st;
    ldr_get_stats(l, &st);
    printf("result side=c threads=%d samples=%d seconds=%.4f samples_per_s=%.3f step_ms=%.4f open_s=%.4f broken=%lld "
           "skipped=%lld wait_s=%.4f cpu_s=%.3f mask_px=%.0f labels=%ld peak_rss_mib=%.0f\n",
           threads, N, sec, N / sec, 1e3 * sec / N, open_s, (long long)st.broken, (long long)cur.skipped,
           st.wait_s, cpu, mask_px, labels, bu_peak_rss_mib());
    ldr_free(l);
    free(items);
    return 0;
}
