/* data/tokenize_cmd.c — `anyref tokenize` (see tokenize_cmd.h). */
#include "data/tokenize_cmd.h"

#include "core/error.h"
#include "data/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: anyref tokenize --tokenizer FILE [--add-bos] [--add-eos] [--special TEXT]... TEXT...\n"
            "       anyref tokenize --tokenizer FILE --decode [--special TEXT]... IDS...\n"
            "\n"
            "  --tokenizer FILE  a SentencePiece tokenizer.model or a Hugging Face tokenizer.json\n"
            "  --add-bos         start each encoding with the BOS id\n"
            "  --add-eos         end each encoding with the EOS id\n"
            "  --special TEXT    register an added token (e.g. \"[SEG]\") before encoding; repeatable\n"
            "  --decode          each argument is a list of ids (separated by spaces or commas): print its text\n"
            "\n"
            "Without --decode, prints the ids of each TEXT on one line, separated by spaces.\n");
}

/* Parses "1 2 3" (spaces, tabs, newlines or commas between ids) into a malloc'd array. */
static int parse_ids(const char *s, int **ids, int *n) {
    size_t cap = strlen(s) / 2 + 1, k = 0;
    int *v = malloc(cap * sizeof *v);
    if (!v) return ar_errorf("out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
        if (!*p) break;
        const char *tok = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ',') p++;
        char *end;
        errno = 0;
        long x = strtol(tok, &end, 10);
        if (end != p || end == tok || errno || x < INT_MIN || x > INT_MAX) {
            free(v);
            return ar_errorf("'%.*s' is not a token id", (int)(p - tok > 40 ? 40 : p - tok), tok);
        }
        v[k++] = (int)x;   /* k < cap: every id takes at least one character and one separator */
    }
    *ids = v;
    *n = (int)k;
    return 0;
}

int tokenize_run(int argc, char **argv, FILE *out, FILE *err) {
    const char *path = NULL;
    int add_bos = 0, add_eos = 0, decode = 0, first_text = -1;
    const char **specials = calloc((size_t)(argc > 0 ? argc : 1), sizeof *specials);
    int n_special = 0;
    if (!specials) {
        fprintf(err, "anyref tokenize: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc && first_text < 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(out);
            free(specials);
            return 0;
        } else if (!strcmp(a, "--tokenizer") || !strcmp(a, "--special")) {
            if (i + 1 >= argc) {
                fprintf(err, "anyref tokenize: %s needs a value\n", a);
                usage(err);
                free(specials);
                return 2;
            }
            if (a[2] == 't') path = argv[++i];
            else specials[n_special++] = argv[++i];
        } else if (!strncmp(a, "--tokenizer=", 12)) {
            path = a + 12;
        } else if (!strncmp(a, "--special=", 10)) {
            specials[n_special++] = a + 10;
        } else if (!strcmp(a, "--add-bos")) {
            add_bos = 1;
        } else if (!strcmp(a, "--add-eos")) {
            add_eos = 1;
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--")) {
            first_text = i + 1;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(err, "anyref tokenize: unknown option '%s'\n", a);
            usage(err);
            free(specials);
            return 2;
        } else {
            first_text = i;
        }
    }
    if (!path || first_text < 0 || first_text >= argc) {
        fprintf(err, "anyref tokenize: %s\n", !path ? "--tokenizer FILE is required" : "nothing to tokenize (no TEXT arguments)");
        usage(err);
        free(specials);
        return 2;
    }
    tokenizer *t = tok_load(path);
    int rc = t ? 0 : 1;
    for (int k = 0; rc == 0 && k < n_special; k++)
        if (tok_add_special(t, specials[k]) < 0) rc = 1;
    for (int i = first_text; rc == 0 && i < argc; i++) {
        int *ids = NULL, n = 0;
        if (decode) {
            char *text = NULL;
            size_t len = 0;
            if (parse_ids(argv[i], &ids, &n) < 0 || tok_decode(t, ids, n, &text, &len) < 0) {
                ar_error_prefix("argument %d: ", i);
                rc = 1;
            } else {
                fwrite(text, 1, len, out);
                fputc('\n', out);
            }
            free(text);
        } else {
            if (tok_encode(t, argv[i], strlen(argv[i]), add_bos, add_eos, &ids, &n) < 0) {
                rc = 1;
            } else {
                for (int k = 0; k < n; k++) fprintf(out, k ? " %d" : "%d", ids[k]);
                fputc('\n', out);
            }
        }
        free(ids);
    }
    if (rc) fprintf(err, "anyref tokenize: %s\n", ar_error());
    if (rc == 0 && (fflush(out) != 0 || ferror(out))) {
        fprintf(err, "anyref tokenize: write error on the output\n");
        rc = 1;
    }
    tok_free(t);
    free(specials);
    return rc;
}

int tokenize_main(int argc, char **argv) { return tokenize_run(argc, argv, stdout, stderr); }
