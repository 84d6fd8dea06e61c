/* tests/sam_encoder_fixture.h — reading a SAM image-encoder config from the
 * attributes "<key>.<field>" that tests/ref/sam_image_encoder_ref.py and
 * sam_image_encoder_grad_ref.py write, and their weights (shared by the two
 * encoder tests). */
#ifndef ANYREF_TESTS_SAM_ENCODER_FIXTURE_H
#define ANYREF_TESTS_SAM_ENCODER_FIXTURE_H
#include <stdio.h>
#include <stdlib.h>
#include "kernels/kernels.h"
#include <string.h>
#include "model/sam_image_encoder.h"
#include "tests/h5fixture.h"

static inline int sam_fx_read_cfg(const h5fixture *fx, const char *key, const char *prefix, sam_encoder_cfg *c,
                                  int *batch) {
    memset(c, 0, sizeof *c);
    int *dst[] = {&c->img_size, &c->patch, &c->dim, &c->depth, &c->heads, &c->mlp_dim, &c->out_chans,
                  &c->window, batch, &c->rel_pos_len_window, &c->rel_pos_len_global};
    const char *names[] = {"img_size", "patch", "dim", "depth", "heads", "mlp_dim", "out_chans", "window", "batch",
                           "rel_len_window", "rel_len_global"};
    char a[64];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(a, sizeof a, "%s.%s", key, names[i]);
        if (!fx_attr(fx, a, H5T_NATIVE_INT, dst[i])) return 0;
    }
    int mask;
    snprintf(a, sizeof a, "%s.global_mask", key);
    if (!fx_attr(fx, a, H5T_NATIVE_INT, &mask)) return 0;
    if (c->depth < 1 || c->depth > 30 || *batch < 1) { fx_bad(fx, key, "config out of range"); return 0; }
    for (int l = 0; l < c->depth; l++) c->global_attn[l] = (mask >> l) & 1;
    c->in_chans = 3;
    snprintf(c->prefix, sizeof c->prefix, "%s", prefix);
    return 1;
}

/* Every registry tensor from <key>_params/<name> (uploaded). 1, or 0 after FAIL lines. */
static inline int sam_fx_load_params(const h5fixture *fx, const char *key, ar_params *ps) {
    int ok = 1;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char ds[200];
        snprintf(ds, sizeof ds, "%s_params/%s", key, p->name);
        float *h = fx_alloc(fx, p->numel * sizeof(float));
        if (fx_read(fx, ds, H5T_NATIVE_FLOAT, h, p->ndim, p->shape)) k_upload(ps->w + p->off, h, p->numel * sizeof(float));
        else ok = 0;
        free(h);
    }
    return ok;
}
#endif
