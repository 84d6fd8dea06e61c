/* data/prepare_cmd.c — `anyref prepare` (see prepare_cmd.h). */
#include "data/prepare_cmd.h"

#include "core/error.h"
#include "data/conversation.h"
#include "data/tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define PREPARE_DEFAULT_SEQ_LEN 512

static void usage(FILE *f) {
    fprintf(f,
            "usage: anyref prepare --tokenizer FILE [--template NAME] [--seq-len T]\n"
            "                      [--add-special TEXT]... [--no-strip] INPUT.json OUTPUT.h5\n"
            "\n"
            "  --tokenizer FILE    a SentencePiece tokenizer.model or a Hugging Face tokenizer.json\n"
            "  --template NAME     llava_v1 (default) or vicuna_v1_1\n"
            "  --seq-len T         truncate to and pad to T tokens (default %d)\n"
            "  --add-special TEXT  register an added token (e.g. \"[SEG]\"); repeatable, ids in the order given\n"
            "  --no-strip          keep the whitespace around added tokens (default: strip it, as\n"
            "                      transformers 4.31's slow LlamaTokenizer does)\n"
            "\n"
            "INPUT.json is LLaVA's format: [{\"id\": ..., \"conversations\": [{\"from\": \"human\", \"value\": ...},\n"
            "{\"from\": \"gpt\", \"value\": ...}, ...]}, ...]. Labels follow LLaVA's preprocess_v1: only the\n"
            "assistant answers and their </s> are learned. OUTPUT.h5 is the token dataset format.\n",
            PREPARE_DEFAULT_SEQ_LEN);
}

static int parse_int(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < INT_MIN || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

int prepare_run(int argc, char **argv, FILE *out, FILE *err) {
    const char *tok_path = NULL, *tpl = "llava_v1", *pos[2] = {NULL, NULL};
    int seq_len = PREPARE_DEFAULT_SEQ_LEN, strip = 1, n_pos = 0, n_special = 0, only_pos = 0;
    const char **specials = calloc((size_t)(argc > 0 ? argc : 1), sizeof *specials);
    if (!specials) {
        fprintf(err, "anyref prepare: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *opts[] = {"--tokenizer", "--template", "--seq-len", "--add-special"};
        int which = -1;
        if (!only_pos) {
            for (int k = 0; k < 4 && which < 0; k++) {
                size_t l = strlen(opts[k]);
                if (!strcmp(a, opts[k])) {
                    if (i + 1 >= argc) {
                        fprintf(err, "anyref prepare: %s needs a value\n", a);
                        usage(err);
                        free(specials);
                        return 2;
                    }
                    which = k;
                    val = argv[++i];
                } else if (!strncmp(a, opts[k], l) && a[l] == '=') {
                    which = k;
                    val = a + l + 1;
                }
            }
        }
        if (which == 0) tok_path = val;
        else if (which == 1) tpl = val;
        else if (which == 2) {
            if (parse_int(val, &seq_len) < 0 || seq_len < 2) {
                fprintf(err, "anyref prepare: --seq-len expects an integer >= 2, got '%s'\n", val);
                free(specials);
                return 2;
            }
        } else if (which == 3) specials[n_special++] = val;
        else if (!only_pos && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            usage(out);
            free(specials);
            return 0;
        } else if (!only_pos && !strcmp(a, "--no-strip")) strip = 0;
        else if (!only_pos && !strcmp(a, "--")) only_pos = 1;
        else if (!only_pos && a[0] == '-' && a[1]) {
            fprintf(err, "anyref prepare: unknown option '%s'\n", a);
            usage(err);
            free(specials);
            return 2;
        } else if (n_pos < 2) pos[n_pos++] = a;
        else {
            fprintf(err, "anyref prepare: unexpected argument '%s' (INPUT.json and OUTPUT.h5 are already given)\n", a);
            usage(err);
            free(specials);
            return 2;
        }
    }
    if (!tok_path || n_pos < 2) {
        fprintf(err, "anyref prepare: %s\n", !tok_path ? "--tokenizer FILE is required" : "INPUT.json and OUTPUT.h5 are required");
        usage(err);
        free(specials);
        return 2;
    }

    conv_dataset ds = {0};
    conv_encoder *enc = NULL;
    tokenizer *t = tok_load(tok_path);
    int rc = t ? 0 : 1;
    if (rc == 0 && !(enc = conv_encoder_new(t, tpl, seq_len))) rc = 1;
    for (int k = 0; rc == 0 && k < n_special; k++)
        if (conv_encoder_add_token(enc, specials[k], strip) < 0) rc = 1;
    if (rc == 0 && conv_load_json_with(pos[0], enc, &ds) < 0) rc = 1;
    int64_t written = 0;
    if (rc == 0 && (written = conv_write_tokens(&ds, pos[1], seq_len, tok_vocab_size(t))) < 0) rc = 1;
    if (rc == 0) {
        int64_t tokens = 0;
        for (int64_t i = 0; i < ds.n; i++) {
            int64_t sup = 0;
            for (int64_t p = ds.start[i]; p < ds.start[i + 1]; p++) sup += ds.labels[p] != CONV_IGNORE;
            if (sup) tokens += ds.start[i + 1] - ds.start[i];
        }
        fprintf(out, "input %s\noutput %s\ntemplate %s\nseq_len %d\nvocab_size %d\n", pos[0], pos[1], tpl, seq_len,
                tok_vocab_size(t));
        fprintf(out, "samples %" PRId64 "\n", ds.n_input);
        fprintf(out, "skipped %" PRId64 "\n", ds.n_skipped);
        for (int r = 0; r < CONV_SKIP_N; r++)
            if (ds.skip[r]) fprintf(out, "  %s %" PRId64 "\n", conv_skip_reason_name((conv_skip_reason)r), ds.skip[r]);
        fprintf(out, "truncated %" PRId64 "\n", ds.n_truncated);
        fprintf(out, "mismatched %" PRId64 "\n", ds.n_mismatch);
        fprintf(out, "unsupervised %" PRId64 "\n", ds.n_unsupervised);
        fprintf(out, "written %" PRId64 "\n", written);
        fprintf(out, "tokens %" PRId64 "\n", tokens);
        fprintf(out, "supervised tokens %" PRId64 "\n", ds.n_supervised);
    }
    if (rc) fprintf(err, "anyref prepare: %s\n", ar_error());
    if (rc == 0 && (fflush(out) != 0 || ferror(out))) {
        fprintf(err, "anyref prepare: write error on the output\n");
        rc = 1;
    }
    conv_dataset_free(&ds);
    conv_encoder_free(enc);
    tok_free(t);
    free(specials);
    return rc;
}

int prepare_main(int argc, char **argv) { return prepare_run(argc, argv, stdout, stderr); }
