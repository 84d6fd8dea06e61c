/* train/inspect_cmd.c — `anyref data inspect` (see inspect_cmd.h). */
#include "train/inspect_cmd.h"

#include "core/config.h"
#include "core/error.h"
#include "data/conversation.h"
#include "data/samples.h"
#include "data/tokenizer.h"
#include "train/train.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INSPECT_MAX_WARNINGS 10
#define INSPECT_MAX_LEN (1 << 24)   /* no truncation: the count is the whole sample */

static void usage(FILE *f) {
    fprintf(f, "usage: anyref data inspect CONFIG [section.key=value ...] [--limit N] [--source 1..4]\n"
               "  prints one JSON line per sample of the config's source.* data set (--source 2: source2.*, ...;\n"
               "  see `anyref keys`)\n");
}

typedef struct {
    tokenizer *tok;
    conv_encoder *enc;
} counter;

static int counter_open(counter *c, const ar_config *cfg, const sample_options *o) {
    memset(c, 0, sizeof *c);
    const char *path = cfg_str(cfg, "data.tokenizer");
    if (!path[0]) return 0;
    if (!(c->tok = tok_load(path))) return ar_error_prefix("data.tokenizer: ");
    if (!(c->enc = conv_encoder_new(c->tok, cfg_str(cfg, "data.template"), INSPECT_MAX_LEN)))
        return ar_error_prefix("data.template: ");
    if (conv_encoder_add_placeholder(c->enc, o->image_token) == 0) return -1;
    char list[4096];
    snprintf(list, sizeof list, "%s", cfg_str(cfg, "data.add_tokens"));
    for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
        while (*t == ' ' || *t == '\t') t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) t[--n] = 0;
        if (n && conv_encoder_add_token(c->enc, t, 1) < 0) return ar_error_prefix("data.add_tokens: ");
    }
    const char *more[] = {"[SEG]", o->image_ref_start, o->image_ref_end, o->audio_ref_start, o->audio_ref_end};
    for (size_t i = 0; i < sizeof more / sizeof *more; i++)
        if (conv_encoder_add_token(c->enc, more[i], 1) < 0) return -1;
    return 0;
}

static void counter_close(counter *c) {
    conv_encoder_free(c->enc);
    tok_free(c->tok);
}

static long count_tokens(const counter *c, const ar_sample *s) {
    if (!c->enc) return -1;
    const char *msgs[2] = {s->question, s->answer};
    conv_sample cs;
    if (conv_tokenize(c->enc, msgs, NULL, 2, &cs)) return -2;
    long n = cs.n;
    conv_sample_free(&cs);
    return n;
}

static const char *base_name(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    snprintf(buf, n, "%s", b ? b + 1 : path);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

/* cfg_str of "<prefix>.<name>" (source.kind, source2.kind, ...). */
static const char *kstr(const ar_config *cfg, const char *prefix, const char *name) {
    char k[64];
    snprintf(k, sizeof k, "%s.%s", prefix, name);
    return cfg_str(cfg, k);
}

int inspect_run(int argc, char **argv, FILE *out, FILE *err) {
    long limit = -1;
    const char *config = NULL, *prefix = "source";
    static const char *const prefixes[] = {"source", "source2", "source3", "source4"};
    char **over = calloc((size_t)argc + 1, sizeof *over);
    int n_over = 0;
    if (!over) { fprintf(err, "anyref data inspect: out of memory\n"); return 1; }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--limit") || !strncmp(argv[i], "--limit=", 8)) {
            const char *v = argv[i][7] == '=' ? argv[i] + 8 : (i + 1 < argc ? argv[++i] : NULL);
            char *end;
            errno = 0;
            limit = v ? strtol(v, &end, 10) : -1;
            if (!v || !*v || *end || errno || limit < 0) {
                fprintf(err, "anyref data inspect: --limit expects a count >= 0\n");
                free(over);
                return 2;
            }
        } else if (!strcmp(argv[i], "--source") || !strncmp(argv[i], "--source=", 9)) {
            const char *v = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            int k = v && v[0] >= '1' && v[0] <= '4' && !v[1] ? v[0] - '1' : -1;
            if (k < 0) {
                fprintf(err, "anyref data inspect: --source expects 1, 2, 3 or 4 (source.*, source2.* ...)\n");
                free(over);
                return 2;
            }
            prefix = prefixes[k];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(out);
            free(over);
            return 0;
        } else if (!config) config = argv[i];
        else over[n_over++] = argv[i];
    }
    if (!config) { usage(err); free(over); return 2; }

    int rc = 1;
    ar_config *cfg = cfg_new(train_schema, train_schema_len);
    refer_join *rj = NULL;
    avs_set *avs = NULL;
    cj_dataset cj;
    int have_cj = 0;
    counter cnt = {0};
    if (!cfg || cfg_load_file(cfg, config)) { fprintf(err, "anyref data inspect: %s\n", ar_error()); rc = 2; goto out; }
    for (int i = 0; i < n_over; i++)
        if (cfg_override(cfg, over[i])) { fprintf(err, "anyref data inspect: %s: %s\n", over[i], ar_error()); rc = 2; goto out; }

    sample_options o;
    sample_options_default(&o);
    o.seed = (uint64_t)cfg_int(cfg, "source.seed");
    o.plain_p = cfg_float(cfg, "data.plain_answers");
    if (counter_open(&cnt, cfg, &o)) { fprintf(err, "anyref data inspect: %s\n", ar_error()); goto out; }

    const char *kind = kstr(cfg, prefix, "kind"), *split = kstr(cfg, prefix, "split");
    size_t n = 0, skipped_records = 0;
    int caption = 0;
    char name[64] = "";
    if (!strcmp(kind, "refer")) {
        const char *lay = kstr(cfg, prefix, "image_layout"), *task = kstr(cfg, prefix, "task");
        refer_image_layout layout;
        if (!strcmp(lay, "refer")) layout = REFER_IMAGES_REFER;
        else if (!strcmp(lay, "coco2017")) layout = REFER_IMAGES_COCO2017;
        else { fprintf(err, "anyref data inspect: %s.image_layout = '%s' (expected refer or coco2017)\n", prefix, lay); rc = 2; goto out; }
        if (!strcmp(task, "caption")) caption = 1;
        else if (strcmp(task, "seg")) { fprintf(err, "anyref data inspect: %s.task = '%s' (expected seg or caption)\n", prefix, task); rc = 2; goto out; }
        const char *sb = kstr(cfg, prefix, "split_by");
        rj = refer_join_load(kstr(cfg, prefix, "root"), kstr(cfg, prefix, "dataset"), sb[0] ? sb : NULL,
                             split[0] ? split : "train", kstr(cfg, prefix, "images"), layout);
        if (!rj) { fprintf(err, "anyref data inspect: %s\n", ar_error()); goto out; }
        n = rj->n;
        skipped_records = rj->n_skipped;
    } else if (!strcmp(kind, "avsbench")) {
        avs = avs_load(kstr(cfg, prefix, "root"), kstr(cfg, prefix, "dataset"), split[0] ? split : "train", NULL);
        if (!avs) { fprintf(err, "anyref data inspect: %s\n", ar_error()); goto out; }
        n = avs_num_samples(avs);
        skipped_records = avs->n_bad_rows + avs->n_skipped_lines;
    } else if (!strcmp(kind, "jsonl")) {
        const char *file = kstr(cfg, prefix, "file");
        if (!file[0]) { fprintf(err, "anyref data inspect: %s.kind = jsonl needs %s.file\n", prefix, prefix); rc = 2; goto out; }
        cj_options copt = {.check_files = 1, .decode = 0};
        if (cj_load(file, &copt, &cj)) { fprintf(err, "anyref data inspect: %s\n", ar_error()); goto out; }
        have_cj = 1;
        n = cj.n;
        skipped_records = cj.n_bad;
        base_name(file, name, sizeof name);
    } else {
        fprintf(err, "anyref data inspect: %s.kind = '%s' (expected refer, avsbench or jsonl)\n", prefix, kind);
        rc = 2;
        goto out;
    }

    size_t printed = 0, skipped_samples = 0;
    for (size_t i = 0; i < n && (limit < 0 || printed < (size_t)limit); i++) {
        ar_sample s;
        int r;
        if (rj) r = sample_from_refer(rj, i, caption, &o, &s);
        else if (avs) r = sample_from_avs(avs, i, &o, &s);
        else {
            if (split[0] && strcmp(cj.recs[i].split, split)) continue;
            r = sample_from_custom(&cj, i, name, &o, &s);
            if (r) ar_error_prefix("%s:%d: ", cj.path, cj.recs[i].line);
        }
        if (r) {
            if (skipped_samples++ < INSPECT_MAX_WARNINGS) fprintf(err, "warning: sample %zu skipped: %s\n", i, ar_error());
            continue;
        }
        long t = count_tokens(&cnt, &s);
        if (t == -2 || sample_write_json(out, &s, t)) {
            fprintf(err, "anyref data inspect: sample %zu: %s\n", i, ar_error());
            ar_sample_free(&s);
            goto out;
        }
        ar_sample_free(&s);
        printed++;
    }
    fprintf(err, "inspect: %zu samples printed, %zu records skipped by the loader, %zu samples skipped (unreadable image or mask)\n",
            printed, skipped_records, skipped_samples);
    rc = 0;
out:
    refer_join_free(rj);
    avs_free(avs);
    if (have_cj) cj_free(&cj);
    counter_close(&cnt);
    cfg_free(cfg);
    free(over);
    return rc;
}

int inspect_main(int argc, char **argv) { return inspect_run(argc, argv, stdout, stderr); }
