/* tests/fuzz/fuzz_conversation.c — libFuzzer target for data/conversation.c,
 * the LLaVA-format conversation JSON loader (conv_load_json_with: the JSON
 * array of {"id", "conversations": [{"from", "value"}...]} samples, turn
 * checks, templates, tokenization and label masking).
 *
 * The input is written to a temporary file (the loader takes a path) and
 * loaded twice: llava_v1 with max_len 48 (truncation), [SEG] as an added
 * token and <image> as a placeholder on tests/fixtures/tok_bpe.model, and
 * vicuna_v1_1 with max_len 4096 on tests/fixtures/tok_bpe.json. Invariants
 * when it loads: kept + skipped = input samples, the skip counts add up,
 * sample offsets rise and end at n_tokens, no sample longer than max_len, every
 * id a token of the vocabulary or the placeholder's -1, every label either
 * -100 or the id at its position, the supervised count right, every problem
 * message naming the file; when it fails, the message names the file.
 * Traps on any broken invariant.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_conversation -max_total_time=60 tests/fuzz/corpus/conversation
 * Depends on: data/conversation.c, data/tokenizer*.c, data/protobuf.c, core/.
 */
#include "core/error.h"
#include "data/conversation.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }
/* conv_write_tokens (not fuzzed here) writes through data/token_dataset.c */
__attribute__((weak)) int tds_write(const char *path, const int *ids, const int *labels, const uint8_t *mask,
                                    int64_t rows, int T, int vocab, int pad) {
    (void)ids, (void)labels, (void)mask, (void)rows, (void)T, (void)vocab, (void)pad;
    return ar_errorf("%s: not written in the fuzz target", path);
}

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_conversation: %s failed (line %d)\n", #c, __LINE__); __builtin_trap(); } } while (0)

static char g_path[256];
static conv_encoder *g_enc[2];
static int g_max_len[2] = {48, 4096};

static tokenizer *load_fixed(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/%s", name);
    tokenizer *t = tok_load(path);
    if (!t) { fprintf(stderr, "fuzz_conversation: %s\n", ar_error()); abort(); }
    return t;
}

static void cleanup(void) { unlink(g_path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_path, sizeof g_path, "%s/fuzz_conversation.XXXXXX", base);
    int fd = mkstemp(g_path);
    if (fd < 0) { perror("fuzz_conversation: mkstemp"); abort(); }
    close(fd);
    atexit(cleanup);
    g_enc[0] = conv_encoder_new(load_fixed("tok_bpe.model"), "llava_v1", g_max_len[0]);
    g_enc[1] = conv_encoder_new(load_fixed("tok_bpe.json"), "vicuna_v1_1", g_max_len[1]);
    if (!g_enc[0] || !g_enc[1] || conv_encoder_add_token(g_enc[0], "[SEG]", 1) < 0 ||
        conv_encoder_add_placeholder(g_enc[0], "<image>") != -1) {
        fprintf(stderr, "fuzz_conversation: %s\n", ar_error());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0]) LLVMFuzzerInitialize(NULL, NULL);
    FILE *f = fopen(g_path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return 0;
    for (int k = 0; k < 2; k++) {
        conv_dataset ds;
        if (conv_load_json_with(g_path, g_enc[k], &ds) < 0) {
            CHECK(strstr(ar_error(), g_path) != NULL);
            CHECK(ds.n == 0 && ds.ids == NULL);
            continue;
        }
        CHECK(ds.n >= 0 && ds.n + ds.n_skipped == ds.n_input);
        int64_t sk = 0;
        for (int r = 0; r < CONV_SKIP_N; r++) sk += ds.skip[r];
        CHECK(sk == ds.n_skipped);
        CHECK(ds.start && ds.start[0] == 0 && ds.start[ds.n] == ds.n_tokens);
        int64_t sup = 0, unsup = 0, trunc = 0, mism = 0;
        for (int64_t i = 0; i < ds.n; i++) {
            int64_t a = ds.start[i], b = ds.start[i + 1];
            CHECK(b > a && b - a <= g_max_len[k]);
            CHECK(ds.index[i] >= 0 && ds.index[i] < ds.n_input && (i == 0 || ds.index[i] > ds.index[i - 1]));
            int64_t s = 0;
            for (int64_t t = a; t < b; t++) {
                CHECK(ds.ids[t] == -1 || (ds.ids[t] >= 0 && ds.ids[t] < ds.vocab_size));
                CHECK(ds.labels[t] == CONV_IGNORE || ds.labels[t] == ds.ids[t]);
                s += ds.labels[t] != CONV_IGNORE;
            }
            if (ds.flags[i] & CONV_F_MISMATCH) { CHECK(s == 0); mism++; }
            trunc += (ds.flags[i] & CONV_F_TRUNCATED) != 0;
            sup += s;
            unsup += s == 0;
        }
        CHECK(sup == ds.n_supervised && unsup == ds.n_unsupervised && trunc == ds.n_truncated && mism == ds.n_mismatch);
        CHECK(ds.n_messages >= 0 && ds.n_messages <= CONV_MAX_MESSAGES);
        for (int m = 0; m < ds.n_messages; m++) CHECK(ds.messages[m] && strstr(ds.messages[m], g_path));
        conv_dataset_free(&ds);
    }
    return 0;
}
