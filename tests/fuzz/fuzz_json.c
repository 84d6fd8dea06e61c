/* tests/fuzz/fuzz_json.c — libFuzzer target for core/json.c.
 *
 * Parses the input (an exactly sized buffer, so ASan catches any read past
 * the end). When it parses, checks properties of the tree (strings are
 * NUL-terminated at len, offsets inside the input, is_int values agree with
 * number), writes it back out with a small writer (strings through
 * json_write_string, numbers as exact integers or %.17g), parses that again
 * and checks the two trees are equal, down to the bits of every double.
 * Traps on any mismatch.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_json -max_total_time=60
 */
#include "core/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator.
 * Weak, so a build that also links kernels/cpu/mem.c uses the real one. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

static void check_value(const json_value *v, size_t len) {
    if (v->offset >= len) __builtin_trap();
    switch (v->type) {
    case JSON_NULL: break;
    case JSON_BOOL: if (v->boolean != 0 && v->boolean != 1) __builtin_trap(); break;
    case JSON_NUMBER:
        if (!isfinite(v->number)) __builtin_trap();
        if (v->is_int && v->number != (double)v->integer) __builtin_trap();
        break;
    case JSON_STRING: if (!v->str || v->str[v->len] != '\0') __builtin_trap(); break;
    case JSON_ARRAY:
        for (size_t i = 0; i < v->n; i++) check_value(&v->items[i], len);
        break;
    case JSON_OBJECT:
        for (size_t i = 0; i < v->n; i++) {
            if (!v->members[i].key || v->members[i].key[v->members[i].key_len] != '\0') __builtin_trap();
            check_value(&v->members[i].value, len);
        }
        break;
    }
}

/* Writes v as JSON; a non-integer number always carries '.' or 'e' so it reads back with is_int = 0. */
static int write_value(FILE *f, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: return fputs("null", f) < 0 ? -1 : 0;
    case JSON_BOOL: return fputs(v->boolean ? "true" : "false", f) < 0 ? -1 : 0;
    case JSON_NUMBER: {
        if (v->is_int) return fprintf(f, "%s%" PRId64, signbit(v->number) && !v->integer ? "-" : "", v->integer) < 0 ? -1 : 0;
        char buf[64];
        snprintf(buf, sizeof buf, "%.17g", v->number);
        if (!strpbrk(buf, ".e")) strcat(buf, ".0");
        return fputs(buf, f) < 0 ? -1 : 0;
    }
    case JSON_STRING: return json_write_string(f, v->str, v->len);
    case JSON_ARRAY:
        if (fputc('[', f) == EOF) return -1;
        for (size_t i = 0; i < v->n; i++) {
            if (i && fputc(',', f) == EOF) return -1;
            if (write_value(f, &v->items[i]) < 0) return -1;
        }
        return fputc(']', f) == EOF ? -1 : 0;
    case JSON_OBJECT:
        if (fputc('{', f) == EOF) return -1;
        for (size_t i = 0; i < v->n; i++) {
            if (i && fputc(',', f) == EOF) return -1;
            if (json_write_string(f, v->members[i].key, v->members[i].key_len) < 0) return -1;
            if (fputc(':', f) == EOF) return -1;
            if (write_value(f, &v->members[i].value) < 0) return -1;
        }
        return fputc('}', f) == EOF ? -1 : 0;
    }
    return -1;
}

static int same(const json_value *a, const json_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case JSON_NULL: return 1;
    case JSON_BOOL: return a->boolean == b->boolean;
    case JSON_NUMBER:
        return a->is_int == b->is_int && a->integer == b->integer && memcmp(&a->number, &b->number, sizeof a->number) == 0;
    case JSON_STRING: return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    case JSON_ARRAY:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!same(&a->items[i], &b->items[i])) return 0;
        return 1;
    case JSON_OBJECT:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++) {
            const json_member *x = &a->members[i], *y = &b->members[i];
            if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0) return 0;
            if (!same(&x->value, &y->value)) return 0;
            /* json_get agrees on both trees (the last member with this key). */
            if (x->key_len == strlen(x->key) && !same(json_get(a, x->key), json_get(b, y->key))) return 0;
        }
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_doc *d = json_parse((const char *)data, size, "fuzz.json");
    if (!d) return 0;
    const json_value *r = json_root(d);
    check_value(r, size);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        int rc = write_value(f, r);
        fclose(f);
        if (rc != 0) __builtin_trap();   /* every parsed tree is valid UTF-8 and writable */
        json_doc *e = json_parse(buf, len, "rewritten.json");
        if (!e || !same(r, json_root(e))) __builtin_trap();
        json_free(e);
    }
    free(buf);
    json_free(d);
    return 0;
}
