/* tests/fuzz/fuzz_csv.c — libFuzzer target for data/csv.c.
 *
 * Parses the input (an exactly sized copy, so ASan catches any read past the
 * end). A refusal must carry a message naming the file; a success must give
 * a table whose every cell is a NUL-terminated string inside the store, row
 * and skipped line numbers that increase and stay within the input's line
 * count, and column lookups that agree with the header.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_csv -max_total_time=60 tests/fixtures/avsbench/s4
 */
#include "core/error.h"
#include "data/csv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    ar_csv *c = ar_csv_parse(copy, size, "fuzz.csv");
    if (!c) {
        free(copy);
        if (!strstr(ar_error(), "fuzz.csv")) __builtin_trap();
        return 0;
    }
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) lines += copy[i] == '\n';
    free(copy);
    if (c->n_cols == 0) __builtin_trap();
    size_t stored = 0;
    for (size_t k = 0; k < c->n_cols; k++) {
        if (!c->header[k][0]) __builtin_trap();
        if (ar_csv_find(c, c->header[k]) != (int)k) __builtin_trap();
        stored += strlen(c->header[k]) + 1;
    }
    for (size_t r = 0; r < c->n_rows; r++) {
        if (c->row_line[r] < 1 || c->row_line[r] > lines) __builtin_trap();
        if (r && c->row_line[r] <= c->row_line[r - 1]) __builtin_trap();
        for (size_t k = 0; k < c->n_cols; k++) stored += strlen(ar_csv_get(c, r, (int)k)) + 1;
    }
    if (stored > 2 * size + 2) __builtin_trap();
    for (size_t i = 0; i < c->n_skipped; i++) {
        if (c->skipped_lines[i] < 1 || c->skipped_lines[i] > lines) __builtin_trap();
        if (i && c->skipped_lines[i] <= c->skipped_lines[i - 1]) __builtin_trap();
    }
    if (ar_csv_find(c, "\x01no such column") < 0 &&
        (ar_csv_col(c, "\x01no such column") != -1 || !strstr(ar_error(), "fuzz.csv")))
        __builtin_trap();
    ar_csv_free(c);
    return 0;
}
