/* tests/fuzz/fuzz_pickle.c — libFuzzer target for data/pickle.c and the
 * REFER record checks of data/refer.c.
 *
 * Parses the input (an exactly sized buffer, so ASan catches any read past
 * the end). When it parses, walks the tree and checks its properties: every
 * str/bytes NUL-terminated at len, every str valid UTF-8, dict keys str or
 * int and found again by pk_dict_get / pk_dict_get_int (the last value for
 * the key), nesting within PK_MAX_DEPTH, offsets inside the input. Then
 * writes the tree back as a protocol-2 pickle (a small writer here), parses
 * that and checks both trees are equal down to the bits of every float.
 * Finally runs the REFER loader on the input and checks the kept refs.
 * Traps on any mismatch.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_pickle -max_total_time=60 tests/fixtures/refer
 */
#include "data/pickle.h"
#include "data/refer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

static int utf8_ok(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], k, cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i <= k) return 0;
        for (unsigned j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += k + 1;
    }
    return 1;
}

/* visits at most *budget nodes (the tree is a DAG: shared nodes repeat) */
static void check(const pk_value *v, size_t len, int depth, size_t *budget) {
    if (!*budget) return;
    (*budget)--;
    /* PK_MAX_DEPTH counts containers: 100 nested lists may hold a scalar at depth 101
     * (tests/fuzz/seeds/pickle/depth100_scalar_leaf.p) */
    const int container = v->type == PK_LIST || v->type == PK_TUPLE || v->type == PK_DICT;
    if ((container && depth > PK_MAX_DEPTH) || v->offset >= len) __builtin_trap();
    switch (v->type) {
    case PK_STR:
        if (!utf8_ok((const unsigned char *)v->s, v->len)) __builtin_trap();
        /* fall through */
    case PK_BYTES:
        if (!v->s || v->s[v->len] != '\0') __builtin_trap();
        break;
    case PK_LIST: case PK_TUPLE:
        for (size_t i = 0; i < v->n; i++) check(v->items[i], len, depth + 1, budget);
        break;
    case PK_DICT:
        for (size_t i = 0; i < v->n; i++) {
            const pk_value *k = v->keys[i];
            if (k->type == PK_INT) {
                if (pk_dict_get_int(v, k->i) != v->vals[i]) __builtin_trap();
            } else if (k->type == PK_STR) {
                if (strlen(k->s) == k->len && pk_dict_get(v, k->s) != v->vals[i]) __builtin_trap();
            } else {
                __builtin_trap();
            }
            for (size_t j = 0; j < i && v->n < 64; j++)   /* keys are distinct */
                if (k->type == v->keys[j]->type && (k->type == PK_INT ? k->i == v->keys[j]->i
                        : k->len == v->keys[j]->len && !memcmp(k->s, v->keys[j]->s, k->len)))
                    __builtin_trap();
            check(v->vals[i], len, depth + 1, budget);
        }
        break;
    default: break;
    }
}

/* ---- a protocol-2 writer (no memo: shared nodes are written again) ---- */
static int w_put(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }
static int w_u32(FILE *f, uint8_t op, uint32_t x) {
    uint8_t b[5] = {op, (uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
    return w_put(f, b, 5);
}
static int write_value(FILE *f, const pk_value *v, size_t *budget) {
    if (!*budget) return -1;
    (*budget)--;
    switch (v->type) {
    case PK_NONE: return w_put(f, "N", 1);
    case PK_BOOL: return w_put(f, v->b ? "\x88" : "\x89", 1);
    case PK_INT: {
        uint8_t b[10] = {0x8a, 8};
        for (int i = 0; i < 8; i++) b[2 + i] = (uint8_t)((uint64_t)v->i >> (8 * i));
        return w_put(f, b, 10);
    }
    case PK_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->f, 8);
        uint8_t b[9] = {'G'};
        for (int i = 0; i < 8; i++) b[1 + i] = (uint8_t)(bits >> (56 - 8 * i));
        return w_put(f, b, 9);
    }
    case PK_STR: case PK_BYTES:
        if (v->len > UINT32_MAX) return -1;
        if (w_u32(f, v->type == PK_STR ? 'X' : 'B', (uint32_t)v->len) < 0) return -1;
        return w_put(f, v->s, v->len);
    case PK_LIST: case PK_TUPLE:
        if (w_put(f, v->type == PK_LIST ? "](" : "(", v->type == PK_LIST ? 2 : 1) < 0) return -1;
        for (size_t i = 0; i < v->n; i++)
            if (write_value(f, v->items[i], budget) < 0) return -1;
        return w_put(f, v->type == PK_LIST ? "e" : "t", 1);
    case PK_DICT:
        if (w_put(f, "}(", 2) < 0) return -1;
        for (size_t i = 0; i < v->n; i++)
            if (write_value(f, v->keys[i], budget) < 0 || write_value(f, v->vals[i], budget) < 0) return -1;
        return w_put(f, "u", 1);
    }
    return -1;
}

static int same(const pk_value *a, const pk_value *b, size_t *budget) {
    if (!*budget) return 1;
    (*budget)--;
    if (a->type != b->type) return 0;
    switch (a->type) {
    case PK_NONE: return 1;
    case PK_BOOL: return a->b == b->b;
    case PK_INT: return a->i == b->i;
    case PK_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case PK_STR: case PK_BYTES: return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    case PK_LIST: case PK_TUPLE:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!same(a->items[i], b->items[i], budget)) return 0;
        return 1;
    case PK_DICT:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!same(a->keys[i], b->keys[i], budget) || !same(a->vals[i], b->vals[i], budget)) return 0;
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pk_doc *d = pk_parse(data, size, "fuzz.p");
    if (d) {
        size_t budget = 1u << 16;
        check(pk_root(d), size, 1, &budget);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        budget = 1u << 16;
        int rc = f ? w_put(f, "\x80\x02", 2) : -1;
        if (rc == 0) rc = write_value(f, pk_root(d), &budget);
        if (rc == 0) rc = w_put(f, ".", 1);
        if (f) fclose(f);
        if (rc == 0) {   /* written completely (small enough): must read back equal */
            pk_doc *e = pk_parse(buf, len, "rewritten.p");
            budget = 1u << 16;
            if (!e || !same(pk_root(d), pk_root(e), &budget)) __builtin_trap();
            pk_free(e);
        }
        free(buf);
        pk_free(d);
    }
    refer_set *s = refer_from_pickle(data, size, "fuzz.p", "refcoco");
    if (s) {
        if (s->n_refs + s->n_skipped != s->n_total) __builtin_trap();
        for (size_t i = 0; i < s->n_refs; i++) {
            const refer_ref *r = &s->refs[i];
            if (!r->split || !*r->split || r->n_sentences < 1 || r->index >= s->n_total) __builtin_trap();
            for (int j = 0; j < r->n_sentences; j++) {
                const refer_sentence *q = &r->sentences[j];
                if (!q->sent || q->n_tokens < 0 || (q->n_tokens && !q->tokens)) __builtin_trap();
                for (int k = 0; k < q->n_tokens; k++)
                    if (!q->tokens[k]) __builtin_trap();
            }
            char p[256];
            refer_image_path(s, r, "/r", REFER_IMAGES_REFER, p, sizeof p);
            if (r->file_name) refer_strip_suffix(r->file_name, p, sizeof p);
        }
        size_t *idx = NULL;
        long m = refer_split(s, "testA", &idx);
        if (m < 0 || (size_t)m > s->n_refs) __builtin_trap();
        free(idx);
        refer_free(s);
    }
    return 0;
}
