/* model/sam_prompt.c — SAM prompt encoder, dense parts (see sam_prompt.h). */
#include "model/sam_prompt.h"
#include "kernels/kernels.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define NAME_GAUSS "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
#define NAME_NOMASK "prompt_encoder.no_mask_embed.weight"

static int check_cfg(const sam_prompt_cfg *c) {
    if (c->embed_dim <= 0 || c->embed_dim % 2 || c->grid_h <= 0 || c->grid_w <= 0)
        return ar_errorf("sam_prompt: embed_dim must be even and positive, grid positive "
                         "(got C=%d, %dx%d)", c->embed_dim, c->grid_h, c->grid_w);
    return 0;
}

static void full_name(char *dst, size_t n, const sam_prompt_cfg *c, const char *name) {
    snprintf(dst, n, "%s%s", c->prefix ? c->prefix : "", name);
}

int sam_prompt_declare(const sam_prompt_cfg *c, ar_params *ps) {
    if (check_cfg(c)) return -1;
    char nm[112];
    int gshape[2] = {2, c->embed_dim / 2}, eshape[2] = {1, c->embed_dim};
    full_name(nm, sizeof nm, c, NAME_GAUSS);
    if (params_add(ps, nm, 2, gshape, 0, INIT_NORMAL, 1.0f)) return -1;
    full_name(nm, sizeof nm, c, NAME_NOMASK);
    return params_add(ps, nm, 2, eshape, 0, INIT_ZEROS, 0.0f);
}

/* Host copy of a declared tensor with exactly n floats, or NULL + ar_error. */
static float *host_tensor(const sam_prompt_cfg *c, const ar_params *ps, const char *name, size_t n) {
    char nm[112];
    full_name(nm, sizeof nm, c, name);
    const ar_param *p = params_find(ps, nm);
    if (!p || p->numel != n) {
        ar_errorf("sam_prompt: tensor %s %s", nm, p ? "has the wrong size" : "is not declared");
        return NULL;
    }
    float *h = malloc(n * sizeof(float));
    if (!h) { ar_errorf("sam_prompt: out of host memory"); return NULL; }
    k_download(h, params_w(ps, nm), n * sizeof(float));
    return h;
}

int sam_prompt_dense_pe(const sam_prompt_cfg *c, const ar_params *ps, float *out) {
    if (check_cfg(c)) return -1;
    const int C = c->embed_dim, F = C / 2, H = c->grid_h, W = c->grid_w;
    const size_t HW = (size_t)H * W;
    float *g = host_tensor(c, ps, NAME_GAUSS, (size_t)2 * F);
    if (!g) return -1;
    float *h = malloc((size_t)C * HW * sizeof(float));
    if (!h) { free(g); return ar_errorf("sam_prompt: out of host memory"); }
    const double twopi = 2.0 * M_PI;
    for (int y = 0; y < H; y++) {
        double v = 2.0 * ((y + 0.5) / H) - 1.0;
        for (int x = 0; x < W; x++) {
            double u = 2.0 * ((x + 0.5) / W) - 1.0;
            size_t cell = (size_t)y * W + x;
            for (int k = 0; k < F; k++) {
                double a = twopi * (u * g[k] + v * g[F + k]);
                h[(size_t)k * HW + cell] = (float)sin(a);
                h[(size_t)(F + k) * HW + cell] = (float)cos(a);
            }
        }
    }
    k_upload(out, h, (size_t)C * HW * sizeof(float));
    free(h);
    free(g);
    return 0;
}

int sam_prompt_dense_embed(const sam_prompt_cfg *c, const ar_params *ps, float *out) {
    if (check_cfg(c)) return -1;
    const int C = c->embed_dim;
    const size_t HW = (size_t)c->grid_h * c->grid_w;
    float *e = host_tensor(c, ps, NAME_NOMASK, (size_t)C);
    if (!e) return -1;
    float *h = malloc((size_t)C * HW * sizeof(float));
    if (!h) { free(e); return ar_errorf("sam_prompt: out of host memory"); }
    for (int k = 0; k < C; k++)
        for (size_t i = 0; i < HW; i++) h[(size_t)k * HW + i] = e[k];
    k_upload(out, h, (size_t)C * HW * sizeof(float));
    free(h);
    free(e);
    return 0;
}
