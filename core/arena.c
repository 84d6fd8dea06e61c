/* core/arena.c — bump allocator over one k_malloc'd block (see arena.h). */
#include "core/arena.h"

#include "core/error.h"
#include "kernels/kernels.h"

#include <stdint.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

/* Rounds n up to a multiple of AR_ARENA_ALIGN; 0 on overflow (with *ok = 0). */
static size_t round_up(size_t n, int *ok) {
    if (n > SIZE_MAX - (AR_ARENA_ALIGN - 1)) { *ok = 0; return 0; }
    *ok = 1;
    return (n + (AR_ARENA_ALIGN - 1)) & ~(size_t)(AR_ARENA_ALIGN - 1);
}

int arena_init(ar_arena *a, size_t bytes) {
    memset(a, 0, sizeof *a);
    int ok;
    size_t cap = round_up(bytes, &ok);
    if (!ok) return ar_errorf("cannot allocate an arena of %zu bytes: size overflows", bytes);
    if (cap == 0) return 0;             /* an empty arena: every non-empty alloc fails */
    a->base = k_malloc(cap);
    if (!a->base)
        return ar_errorf("cannot allocate an arena of %.1f MiB (%s backend out of memory)",
                         cap / MIB, k_backend_name());
    a->cap = cap;
    return 0;
}

void arena_init_measure(ar_arena *a) {
    memset(a, 0, sizeof *a);
    a->measuring = 1;
}

void *arena_alloc(ar_arena *a, size_t bytes) {
    int ok;
    size_t sz = round_up(bytes, &ok);
    if (!ok || sz > SIZE_MAX - a->used) {
        if (!a->measuring) ar_errorf("arena allocation of %zu bytes overflows size_t", bytes);
        return NULL;
    }
    if (a->measuring) {
        a->used += sz;
        if (a->used > a->high) a->high = a->used;
        return NULL;
    }
    if (sz > a->cap - a->used) {
        ar_errorf("arena exhausted: need %.2f MiB, have %.2f MiB (%.2f MiB in use, %.2f MiB requested)",
                  (a->used + sz) / MIB, a->cap / MIB, a->used / MIB, sz / MIB);
        return NULL;
    }
    void *p = a->base + a->used;
    a->used += sz;
    if (a->used > a->high) a->high = a->used;
    return p;
}

float *arena_floats(ar_arena *a, size_t n) {
    if (n > SIZE_MAX / sizeof(float)) {
        if (!a->measuring) ar_errorf("arena allocation of %zu floats overflows size_t", n);
        return NULL;
    }
    return (float *)arena_alloc(a, n * sizeof(float));
}

size_t arena_mark(const ar_arena *a) { return a->used; }

void arena_release(ar_arena *a, size_t mark) {
    if (mark <= a->used) a->used = mark & ~(size_t)(AR_ARENA_ALIGN - 1);
}

void arena_reset(ar_arena *a) { a->used = 0; }

void arena_free(ar_arena *a) {
    if (a->base) k_free(a->base);
    memset(a, 0, sizeof *a);
}
