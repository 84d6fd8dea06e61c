/* tests/fuzz/fuzz_torch_ckpt.c — libFuzzer target for the PyTorch checkpoint
 * reader (checkpoints/torch_ckpt.h: zip directory, inflate, the permissive
 * pickle of data/pickle.h, views against storages).
 *
 * The first input byte picks how the rest is read:
 *   odd:  the rest is a whole torch.save zip file;
 *   even: the rest is a data.pkl; the target wraps it in a stored zip
 *         ("archive/data.pkl" with its right CRC-32, and storages
 *         "archive/data/0" ... "archive/data/15" of 256 bytes each), so that
 *         mutations reach the pickle and the tensor walk instead of dying at
 *         the zip checks and the CRC.
 * Whenever tc_open_memory accepts, every tensor's bytes are read (ASan checks
 * they lie inside the input or a buffer of the reader's), the byte count must
 * be numel times the element size, and the shape must multiply to numel.
 *
 *     make BUILD=build-fuzz fuzz
 *     build-fuzz/fuzz/fuzz_torch_ckpt -max_total_time=300 CORPUS_DIR tests/fuzz/seeds/torch_ckpt
 * Seeds: tests/fuzz/seeds/torch_ckpt/ (fixtures of tests/fixtures/torch_ckpt/
 * behind 0x01, their data.pkl behind 0x00, and any crash reproducers).
 */
#include "checkpoints/torch_ckpt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* `make fuzz` links core/ (its arena wants the backend's allocator); weak, so a
 * build that links kernels/cpu/mem.c uses the real ones. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

static const int ESIZE[] = {
    /* st_dtype order: BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ
     * I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64 */
    1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 8};

static void check(const tc_file *f) {
    for (int i = 0; i < tc_count(f); i++) {
        const tc_tensor *t = tc_get(f, i);
        if (!t || !t->name || !t->shape || t->ndim < 0) __builtin_trap();
        if (t->dtype < 0 || t->dtype >= (int)(sizeof ESIZE / sizeof *ESIZE) || !ESIZE[t->dtype]) __builtin_trap();
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
        if (n != t->numel || t->nbytes != n * (uint64_t)ESIZE[t->dtype]) __builtin_trap();
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < t->nbytes; k++) sink ^= t->data[k];
        (void)sink;
        (void)strlen(t->name);
    }
    if (tc_get(f, tc_count(f)) != NULL) __builtin_trap();
}

static uint8_t *put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); return p + 2; }
static uint8_t *put32(uint8_t *p, uint32_t v) { p = put16(p, v & 0xffff); return put16(p, v >> 16); }

/* A stored zip of (name, bytes) entries. */
static uint8_t *make_zip(const char **names, const uint8_t **data, const size_t *len, int n, size_t *out_len) {
    size_t cap = 22;
    for (int i = 0; i < n; i++) cap += 30 + 46 + 2 * strlen(names[i]) + len[i];
    uint8_t *z = malloc(cap), *p = z;
    uint32_t off[32];
    if (!z) return NULL;
    for (int i = 0; i < n; i++) {
        uint32_t crc = (uint32_t)crc32(0L, data[i], (uInt)len[i]);
        off[i] = (uint32_t)(p - z);
        p = put32(p, 0x04034b50u); p = put16(p, 20); p = put16(p, 0); p = put16(p, 0); p = put32(p, 0);
        p = put32(p, crc); p = put32(p, (uint32_t)len[i]); p = put32(p, (uint32_t)len[i]);
        p = put16(p, (unsigned)strlen(names[i])); p = put16(p, 0);
        memcpy(p, names[i], strlen(names[i])); p += strlen(names[i]);
        if (len[i]) memcpy(p, data[i], len[i]);
        p += len[i];
    }
    uint8_t *cd = p;
    for (int i = 0; i < n; i++) {
        uint32_t crc = (uint32_t)crc32(0L, data[i], (uInt)len[i]);
        p = put32(p, 0x02014b50u); p = put16(p, 20); p = put16(p, 20); p = put16(p, 0); p = put16(p, 0);
        p = put32(p, 0); p = put32(p, crc); p = put32(p, (uint32_t)len[i]); p = put32(p, (uint32_t)len[i]);
        p = put16(p, (unsigned)strlen(names[i])); p = put16(p, 0); p = put16(p, 0); p = put16(p, 0); p = put16(p, 0);
        p = put32(p, 0); p = put32(p, off[i]);
        memcpy(p, names[i], strlen(names[i])); p += strlen(names[i]);
    }
    uint32_t cd_size = (uint32_t)(p - cd), cd_off = (uint32_t)(cd - z);
    p = put32(p, 0x06054b50u); p = put16(p, 0); p = put16(p, 0); p = put16(p, (unsigned)n); p = put16(p, (unsigned)n);
    p = put32(p, cd_size); p = put32(p, cd_off); p = put16(p, 0);
    *out_len = (size_t)(p - z);
    return z;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        tc_file *f = tc_open_memory(body, n, "fuzz.pth");
        if (f) { check(f); tc_close(f); }
        return 0;
    }
    if (n > (1u << 24)) return 0;
    static uint8_t storage[256];
    for (int i = 0; i < 256; i++) storage[i] = (uint8_t)(i * 37 + 11);
    static char snames[16][32];
    const char *names[17];
    const uint8_t *bytes[17];
    size_t lens[17];
    names[0] = "archive/data.pkl"; bytes[0] = body; lens[0] = n;
    for (int i = 0; i < 16; i++) {
        snprintf(snames[i], sizeof snames[i], "archive/data/%d", i);
        names[i + 1] = snames[i]; bytes[i + 1] = storage; lens[i + 1] = sizeof storage;
    }
    size_t zl = 0;
    uint8_t *z = make_zip(names, bytes, lens, 17, &zl);
    if (!z) return 0;
    /* an exactly sized copy, so ASan sees a read past the end */
    uint8_t *exact = malloc(zl);
    if (exact) {
        memcpy(exact, z, zl);
        tc_file *f = tc_open_memory(exact, zl, "fuzz.pth");
        if (f) { check(f); tc_close(f); }
        free(exact);
    }
    free(z);
    return 0;
}
