/* optim/optim.c — see optim.h. */
#include "optim/optim.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include <math.h>
#include <string.h>

int optim_parse_schedule(const char *s) {
    if (!strcmp(s, "linear")) return OPTIM_LINEAR;
    if (!strcmp(s, "cosine")) return OPTIM_COSINE;
    if (!strcmp(s, "constant")) return OPTIM_CONSTANT;
    return ar_errorf("unknown lr schedule '%s' (expected linear, cosine or constant)", s);
}

float optim_lr_at(const ar_optim_cfg *c, int step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps)
        return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    if (c->schedule == OPTIM_CONSTANT || c->total_steps <= c->warmup_steps) return c->lr;
    float frac = (float)(step - c->warmup_steps) / (float)(c->total_steps - c->warmup_steps);
    if (frac > 1.0f) frac = 1.0f;
    if (c->schedule == OPTIM_COSINE) return c->lr * 0.5f * (1.0f + cosf((float)M_PI * frac));
    return c->lr * (1.0f - frac);
}

double optim_grad_norm(const ar_params *ps) {
    double ss = 0.0;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].trainable) ss += sumsq(ps->g + ps->p[i].goff, ps->p[i].numel);
    return sqrt(ss);
}

double optim_step(ar_params *ps, const ar_optim_cfg *c, int t, float lr) {
    double norm = optim_grad_norm(ps);
    if (c->grad_clip > 0 && norm > c->grad_clip && isfinite(norm))
        scale_inplace(ps->g, (float)(c->grad_clip / (norm + 1e-6)), ps->ng);
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (!p->trainable) continue;
        float wd = p->ndim >= 2 ? c->weight_decay : 0.0f;
        adamw_update(ps->w + p->off, ps->g + p->goff, ps->m + p->goff, ps->v + p->goff, p->numel,
                     lr, c->beta1, c->beta2, c->eps, wd, t);
    }
    return norm;
}
