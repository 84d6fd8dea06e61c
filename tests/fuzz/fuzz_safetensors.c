/* tests/fuzz/fuzz_safetensors.c — libFuzzer target for the safetensors reader.
 *
 * The first input byte picks how the rest is read:
 *   odd:  the rest is a whole file (8-byte length, header, data);
 *   even: the rest is header text followed by data; the length field is made
 *         up (up to and including the last '}'), so mutations of the JSON reach
 *         the header validation instead of dying at the length check.
 * Whenever st_open_memory accepts, the accessors must agree with each other
 * (st_find finds every name at its own index, shapes multiply to st_numel,
 * every tensor lies inside the buffer, metadata lookups return their values)
 * and every F32/F16/BF16 tensor converts; otherwise the target traps.
 *
 *     make BUILD=build-fuzz fuzz
 *     build-fuzz/fuzz/fuzz_safetensors -max_total_time=120 CORPUS_DIR
 * A good seed corpus: each fixture in tests/fixtures/safetensors/ behind a
 * 0x01 byte, and its header and data without the length field behind 0x00.
 */
#include "checkpoints/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links core/, checkpoints/safetensors.c and model/params.c; the
 * backend memory functions come from here (weak, so a build that links
 * kernels/cpu/mem.c uses the real ones). */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }
__attribute__((weak)) void k_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
__attribute__((weak)) void k_upload(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
__attribute__((weak)) void k_download(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static void check(const st_file *f, const uint8_t *file, size_t size) {
    int n = st_count(f);
    for (int i = 0; i < n; i++) {
        const char *name = st_name(f, i);
        if (!name || st_find(f, name) != i) __builtin_trap();
        int nd = -1;
        const int64_t *sh = st_shape(f, i, &nd);
        if (!sh || nd < 0) __builtin_trap();
        size_t numel = 1;
        for (int d = 0; d < nd; d++) {
            if (sh[d] < 0) __builtin_trap();
            numel *= (size_t)sh[d];
        }
        if (numel != st_numel(f, i)) __builtin_trap();
        size_t nb = 0;
        const uint8_t *p = st_data(f, i, &nb);
        (void)file; (void)size;   /* st_open_memory copies: bounds are checked by ASan on its copy */
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < nb; k++) sink ^= p[k];
        (void)sink;
        st_dtype t = st_get_dtype(f, i);
        if (t == ST_NDTYPES) __builtin_trap();
        if ((t == ST_F32 || t == ST_F16 || t == ST_BF16) && numel <= (1u << 20)) {
            float *dst = malloc(numel ? numel * sizeof *dst : 1);
            if (dst && st_read_f32(f, i, dst, numel) != 0) __builtin_trap();
            free(dst);
        }
    }
    if (st_find(f, "\x01no such tensor") >= 0 || st_name(f, n) != NULL) __builtin_trap();
    for (int k = 0; k < st_metadata_count(f); k++) {
        const char *v = st_metadata(f, st_metadata_key(f, k));
        if (!v || strcmp(v, st_metadata_value(f, k)) != 0) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        st_file *f = st_open_memory(body, n, "fuzz.safetensors");
        if (f) { check(f, body, n); st_close(f); }
        return 0;
    }
    size_t hl = 0;
    for (size_t i = n; i > 0; i--)
        if (body[i - 1] == '}') { hl = i; break; }
    uint8_t *file = malloc(8 + n);
    if (!file) return 0;
    uint64_t h = hl;
    memcpy(file, &h, 8);
    memcpy(file + 8, body, n);
    st_file *f = st_open_memory(file, 8 + n, "fuzz.safetensors");
    if (f) { check(f, file, 8 + n); st_close(f); }
    free(file);
    return 0;
}
