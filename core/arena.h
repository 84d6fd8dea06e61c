/* core/arena.h — bump allocators for per-step memory (activations, scratch).
 *
 * Memory comes from k_malloc() (kernels/kernels.h), so on the CUDA backend an
 * arena holds device memory and its pointers go straight to the kernels.
 * Every allocation is 64-byte aligned (sizes are rounded up to 64 bytes).
 *
 * Sizing without guessing: run the model's allocation code once on an arena
 * from arena_init_measure(); it allocates nothing and returns NULL pointers
 * (NOT an error: ar_error is not touched), and afterwards `high` holds the
 * bytes needed. Then arena_init() that many bytes and run it for real.
 * The measuring pass must not dereference what arena_alloc returns.
 *
 *     ar_arena m; arena_init_measure(&m); plan(&m); size_t need = m.high;
 *     ar_arena a; if (arena_init(&a, need) < 0) return -1; plan(&a);
 *
 * Nothing is freed individually: arena_mark()/arena_release() pop back to an
 * earlier point, arena_reset() empties the arena, arena_free() returns it.
 * An arena is used by one thread at a time. Depends on kernels/kernels.h
 * (k_malloc, k_free) and core/error.h.
 */
#ifndef ANYREF_CORE_ARENA_H
#define ANYREF_CORE_ARENA_H

#include <stddef.h>

#define AR_ARENA_ALIGN 64

typedef struct {
    char  *base;      /* k_malloc'd block (NULL when measuring) */
    size_t cap;       /* bytes in the block */
    size_t used;      /* bytes handed out, a multiple of AR_ARENA_ALIGN */
    size_t high;      /* high-water mark of used */
    int    measuring; /* 1: count bytes only, allocations return NULL */
} ar_arena;

/* 0, or -1 + ar_error (naming the MiB requested) when k_malloc fails. */
int    arena_init(ar_arena *a, size_t bytes);
void   arena_init_measure(ar_arena *a);
/* 64-byte aligned; NULL + ar_error("arena exhausted: need X MiB, have Y MiB")
 * when the arena is full. In measuring mode: counts and returns NULL, no error. */
void  *arena_alloc(ar_arena *a, size_t bytes);
float *arena_floats(ar_arena *a, size_t n);
size_t arena_mark(const ar_arena *a);
/* Pops back to a mark from arena_mark() (a mark beyond `used` is ignored). */
void   arena_release(ar_arena *a, size_t mark);
void   arena_reset(ar_arena *a);
void   arena_free(ar_arena *a);     /* k_free + zeroes the struct; safe twice */

#endif
