/* model/params.h — the parameter registry.
 * Each module declares its tensors (official checkpoint name, shape, trainable
 * or frozen, initialiser); the registry lays them out in one weight block, one
 * gradient block for the trainable tensors and the AdamW state. Loading,
 * saving, freezing and optimiser groups are lookups by name.
 * Memory comes from k_malloc, so the blocks live on the active backend. */
#ifndef ANYREF_PARAMS_H
#define ANYREF_PARAMS_H
#include <stddef.h>
#include "core/rng.h"

typedef enum { INIT_ZEROS, INIT_ONES, INIT_NORMAL, INIT_KAIMING_UNIFORM } ar_init;

/* Longest parameter name (with its NUL). */
#define AR_PARAM_NAME_LEN 112

/* printf into n[AR_PARAM_NAME_LEN] (truncating); returns n. For building
 * checkpoint names like "blocks.%d.attn.qkv.weight". */
char *params_fmt_name(char *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct {
    char name[AR_PARAM_NAME_LEN];
    int ndim, shape[4];
    size_t numel;
    int trainable;
    ar_init init;
    float std;          /* INIT_NORMAL standard deviation */
    size_t off;         /* offset in the weight block (floats) */
    size_t goff;        /* offset in the gradient/optimiser blocks, if trainable */
} ar_param;

typedef struct {
    ar_param *p;
    int n, cap;
    size_t nw, ng;      /* floats in the weight block, in the trainable blocks */
    float *w, *g, *m, *v;
} ar_params;

void   params_init_empty(ar_params *ps);
/* Declares a tensor; shape has ndim (1..4) entries. -1 + ar_error on a duplicate name. */
int    params_add(ar_params *ps, const char *name, int ndim, const int *shape, int trainable,
                  ar_init init, float std);
/* Allocates the blocks (after every params_add); gradients and moments zeroed. */
int    params_alloc(ar_params *ps);
/* Fills every tensor from its initialiser, in declaration order, from one seed. */
void   params_randomize(ar_params *ps, uint64_t seed);
const ar_param *params_find(const ar_params *ps, const char *name);
float *params_w(const ar_params *ps, const char *name);   /* NULL if unknown */
float *params_g(const ar_params *ps, const char *name);   /* NULL if unknown or frozen */
size_t params_numel(const ar_params *ps, int trainable_only);
void   params_zero_grad(ar_params *ps);
void   params_free(ar_params *ps);
#endif
