/* model/params.c — see params.h. */
#include <stdarg.h>
#include <stdio.h>
#include "model/params.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

void params_init_empty(ar_params *ps) { memset(ps, 0, sizeof *ps); }

int params_add(ar_params *ps, const char *name, int ndim, const int *shape, int trainable,
               ar_init init, float std) {
    if (ps->w) return ar_errorf("params: cannot add '%s' after params_alloc", name);
    if (ndim < 1 || ndim > 4) return ar_errorf("params: '%s' has %d dims (expected 1..4)", name, ndim);
    if (strlen(name) >= sizeof ps->p[0].name) return ar_errorf("params: name too long: '%s'", name);
    if (params_find(ps, name)) return ar_errorf("params: duplicate tensor name '%s'", name);
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 64;
        ar_param *np = realloc(ps->p, (size_t)cap * sizeof *np);
        if (!np) return ar_errorf("params: out of memory declaring '%s'", name);
        ps->p = np; ps->cap = cap;
    }
    ar_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->ndim = ndim; p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) { ps->n--; return ar_errorf("params: '%s' has dimension %d = %d", name, i, shape[i]); }
        p->shape[i] = shape[i]; p->numel *= (size_t)shape[i];
    }
    p->trainable = trainable; p->init = init; p->std = std;
    /* 16-float alignment for every tensor (64 bytes) */
    p->off = ps->nw; ps->nw += (p->numel + 15) & ~(size_t)15;
    if (trainable) { p->goff = ps->ng; ps->ng += (p->numel + 15) & ~(size_t)15; }
    return 0;
}

/* Offsets in declaration order: fp32 tensors in w, bf16 ones in w16. */
static void relayout(ar_params *ps) {
    ps->nw = ps->nw16 = 0;
    for (int i = 0; i < ps->n; i++) {
        ar_param *p = &ps->p[i];
        const size_t al = (p->numel + 15) & ~(size_t)15;
        if (p->half) { p->off = (size_t)-1; p->off16 = ps->nw16; ps->nw16 += al; }
        else { p->off = ps->nw; ps->nw += al; }
    }
}

int params_store_half(ar_params *ps, const char *name, int fp16) {
    ar_param *p = (ar_param *)params_find(ps, name);
    const char *fmt = fp16 ? "fp16" : "bf16";
    if (ps->w) return ar_errorf("params: cannot store '%s' as %s after params_alloc", name, fmt);
    if (!p) return ar_errorf("params: no tensor '%s' to store as %s", name, fmt);
    if (p->trainable) return ar_errorf("params: '%s' is trainable; only frozen tensors are stored in 16 bits", name);
    if (ps->nw16 && ps->w16_fp16 != (fp16 != 0))
        return ar_errorf("params: '%s' as %s, but the registry's 16-bit tensors are %s", name, fmt,
                         ps->w16_fp16 ? "fp16" : "bf16");
    ps->w16_fp16 = fp16 != 0;
    if (!p->half) { p->half = 1; relayout(ps); }
    return 0;
}

size_t params_weight_bytes(const ar_params *ps) { return ps->nw * sizeof(float) + ps->nw16 * sizeof(uint16_t); }

int params_upload(ar_params *ps, const ar_param *p, const float *host) {
    if (!p->half) { k_upload(ps->w + p->off, host, p->numel * sizeof(float)); return 0; }
    uint16_t *h = malloc(p->numel * sizeof(uint16_t));
    if (!h) return ar_errorf("params: out of host memory converting '%s' to 16 bits", p->name);
    if (ps->w16_fp16) convert_f32_to_f16_host(h, host, p->numel);
    else convert_f32_to_bf16_host(h, host, p->numel);
    k_upload(ps->w16 + p->off16, h, p->numel * sizeof(uint16_t));
    free(h);
    return 0;
}

int params_download(const ar_params *ps, const ar_param *p, float *host) {
    if (!p->half) { k_download(host, ps->w + p->off, p->numel * sizeof(float)); return 0; }
    uint16_t *h = malloc(p->numel * sizeof(uint16_t));
    if (!h) return ar_errorf("params: out of host memory widening '%s'", p->name);
    k_download(h, ps->w16 + p->off16, p->numel * sizeof(uint16_t));
    if (ps->w16_fp16) convert_f16_to_f32_host(host, h, p->numel);
    else convert_bf16_to_f32_host(host, h, p->numel);
    free(h);
    return 0;
}

int params_alloc(ar_params *ps) {
    relayout(ps);
    ps->w = k_malloc((ps->nw ? ps->nw : 16) * sizeof(float));
    if (ps->nw16 && !(ps->w16 = k_malloc(ps->nw16 * sizeof(uint16_t))))
        return ar_errorf("params: out of memory allocating %.1f MiB of bf16 weights", ps->nw16 * 2.0 / 1048576);
    if (ps->ng) {
        ps->g = k_malloc(ps->ng * sizeof(float));
        ps->m = k_malloc(ps->ng * sizeof(float));
        ps->v = k_malloc(ps->ng * sizeof(float));
    }
    if (!ps->w || (ps->ng && (!ps->g || !ps->m || !ps->v)))
        return ar_errorf("params: out of memory allocating %.1f MiB of weights and %.1f MiB of trainable state",
                         ps->nw * 4.0 / 1048576, ps->ng * 12.0 / 1048576);
    k_zero(ps->w, ps->nw * sizeof(float));
    if (ps->nw16) k_zero(ps->w16, ps->nw16 * sizeof(uint16_t));
    if (ps->ng) {
        k_zero(ps->g, ps->ng * sizeof(float));
        k_zero(ps->m, ps->ng * sizeof(float));
        k_zero(ps->v, ps->ng * sizeof(float));
    }
    return 0;
}

/* One tensor's initial values into host[numel], from its own stream of the
 * seed: what it gets does not depend on the others or on the thread. */
static void init_tensor(const ar_param *p, int i, uint64_t seed, float *host) {
    ar_rng r;
    rng_seed(&r, rng_derive(seed, (uint64_t)i));
    switch (p->init) {
    case INIT_ZEROS: memset(host, 0, p->numel * sizeof(float)); break;
    case INIT_ONES: for (size_t j = 0; j < p->numel; j++) host[j] = 1.0f; break;
    case INIT_NORMAL: rng_fill_normal(&r, host, p->numel, 0.0f, p->std); break;
    case INIT_KAIMING_UNIFORM: { /* PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
        size_t fan_in = p->numel / (size_t)p->shape[0];
        float bound = 1.0f / sqrtf((float)(fan_in ? fan_in : 1));
        rng_fill_uniform(&r, host, p->numel, -bound, bound);
    } break;
    }
}

/* Tensors are drawn in groups of up to one per thread, in parallel (a 7B
 * model's 7.7 billion normals take minutes on one core), and uploaded by the
 * calling thread in declaration order: the upload stays on the thread that
 * picked the device, and host memory stays at most one tensor per thread. */
int params_randomize(ar_params *ps, uint64_t seed) {
#ifdef _OPENMP
    int G = omp_get_max_threads();
#else
    int G = 1;   /* a build without OpenMP (the fuzz targets) draws one tensor at a time */
#endif
    if (G > 16) G = 16;
    if (G < 1) G = 1;
    float *host[16] = {0};
    int err = 0;
    for (int i0 = 0; i0 < ps->n && !err; i0 += G) {
        const int n = ps->n - i0 < G ? ps->n - i0 : G;
        for (int j = 0; j < n; j++) {
            host[j] = malloc(ps->p[i0 + j].numel * sizeof(float));
            if (!host[j]) err = ar_errorf("params: out of host memory initialising '%s' (%.1f MiB)", ps->p[i0 + j].name,
                                          ps->p[i0 + j].numel * 4.0 / 1048576);
        }
        if (!err) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(n)
            for (int j = 0; j < n; j++) init_tensor(&ps->p[i0 + j], i0 + j, seed, host[j]);
            for (int j = 0; j < n && !err; j++) err = params_upload(ps, &ps->p[i0 + j], host[j]);
        }
        for (int j = 0; j < n; j++) { free(host[j]); host[j] = NULL; }
    }
    return err ? -1 : 0;
}

const ar_param *params_find(const ar_params *ps, const char *name) {
    for (int i = 0; i < ps->n; i++) if (strcmp(ps->p[i].name, name) == 0) return &ps->p[i];
    return NULL;
}
float *params_w(const ar_params *ps, const char *name) {
    const ar_param *p = params_find(ps, name);
    return p && ps->w && !p->half ? ps->w + p->off : NULL;
}
uint16_t *params_w16(const ar_params *ps, const char *name) {
    const ar_param *p = params_find(ps, name);
    return p && ps->w16 && p->half ? ps->w16 + p->off16 : NULL;
}
float *params_g(const ar_params *ps, const char *name) {
    const ar_param *p = params_find(ps, name);
    return p && p->trainable && ps->g ? ps->g + p->goff : NULL;
}
size_t params_numel(const ar_params *ps, int trainable_only) {
    size_t n = 0;
    for (int i = 0; i < ps->n; i++) if (!trainable_only || ps->p[i].trainable) n += ps->p[i].numel;
    return n;
}
void params_zero_grad(ar_params *ps) { if (ps->g) k_zero(ps->g, ps->ng * sizeof(float)); }
void params_free(ar_params *ps) {
    k_free(ps->w); k_free(ps->w16); k_free(ps->g); k_free(ps->m); k_free(ps->v);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

char *params_fmt_name(char *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n, AR_PARAM_NAME_LEN, fmt, ap);
    va_end(ap);
    return n;
}
