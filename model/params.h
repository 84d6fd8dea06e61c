/* model/params.h — the parameter registry.
 * Each module declares its tensors (official checkpoint name, shape, trainable
 * or frozen, initialiser); the registry lays them out in one weight block, one
 * gradient block for the trainable tensors and the AdamW state. Loading,
 * saving, freezing and optimiser groups are lookups by name.
 * Memory comes from k_malloc, so the blocks live on the active backend. */
#ifndef ANYREF_PARAMS_H
#define ANYREF_PARAMS_H
#include <stddef.h>
#include <stdint.h>
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
    size_t off;         /* offset in the weight block (floats); (size_t)-1 when bf16 */
    int half;           /* stored in 16 bits in the w16 block (frozen only: params_store_half) */
    size_t off16;       /* offset in the w16 block, if half */
    size_t goff;        /* offset in the gradient/optimiser blocks, if trainable */
} ar_param;

typedef struct {
    ar_param *p;
    int n, cap;
    size_t nw, ng;      /* floats in the weight block, in the trainable blocks */
    float *w, *g, *m, *v;
    size_t nw16;        /* 16-bit values in the w16 block (frozen tensors stored as bf16 or fp16) */
    uint16_t *w16;
    int w16_fp16;       /* the w16 block's format: 0 bf16, 1 IEEE fp16 (one format per registry) */
} ar_params;

void   params_init_empty(ar_params *ps);
/* Declares a tensor; shape has ndim (1..4) entries. -1 + ar_error on a duplicate name. */
int    params_add(ar_params *ps, const char *name, int ndim, const int *shape, int trainable,
                  ar_init init, float std);
/* Stores the frozen tensor `name` in 16 bits, bf16 (fp16 = 0) or IEEE fp16
 * (fp16 = 1) (kernels.h "16-bit storage": half the memory; the modules that
 * read it use the matching kernels). Before params_alloc; -1 + ar_error for an
 * unknown or trainable tensor, or a format other than the registry's. */
int    params_store_half(ar_params *ps, const char *name, int fp16);
/* Allocates the blocks (after every params_add); gradients and moments zeroed. */
int    params_alloc(ar_params *ps);
/* Fills every tensor from its initialiser, tensor i from stream i of the seed
 * (the same values whatever the thread count; drawn on up to 16 threads).
 * 0, or -1 + ar_error when host memory runs out (nothing is left half-done
 * silently: the caller must not train on it). */
int    params_randomize(ar_params *ps, uint64_t seed);
const ar_param *params_find(const ar_params *ps, const char *name);
float *params_w(const ar_params *ps, const char *name);   /* NULL if unknown or stored in 16 bits */
uint16_t *params_w16(const ar_params *ps, const char *name); /* NULL if unknown or not in 16 bits */
/* One tensor's weights from / into host floats, converting when it is stored
 * in 16 bits (round to nearest even in, exact out). 0, or -1 + ar_error (out
 * of host memory). */
int    params_upload(ar_params *ps, const ar_param *p, const float *host);
int    params_download(const ar_params *ps, const ar_param *p, float *host);
/* Bytes of the weight blocks (fp32 + 16-bit). */
size_t params_weight_bytes(const ar_params *ps);
float *params_g(const ar_params *ps, const char *name);   /* NULL if unknown or frozen */
size_t params_numel(const ar_params *ps, int trainable_only);
void   params_zero_grad(ar_params *ps);
void   params_free(ar_params *ps);
#endif
