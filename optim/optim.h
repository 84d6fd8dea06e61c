/* optim/optim.h — AdamW over a parameter registry, learning-rate schedules and
 * global gradient-norm clipping. Depends on model/params.h and kernels. */
#ifndef ANYREF_OPTIM_H
#define ANYREF_OPTIM_H
#include "model/params.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip; /* grad_clip <= 0: off */
    int warmup_steps, total_steps;
    int schedule;   /* OPTIM_LINEAR (paper: warm-up then linear decay), OPTIM_COSINE, OPTIM_CONSTANT */
} ar_optim_cfg;
enum { OPTIM_LINEAR, OPTIM_COSINE, OPTIM_CONSTANT };

/* Parses "linear", "cosine", "constant"; -1 + ar_error otherwise. */
int   optim_parse_schedule(const char *s);
/* Learning rate at 0-based step: linear warm-up from 0 over warmup_steps, then the schedule to 0 at total_steps. */
float optim_lr_at(const ar_optim_cfg *c, int step);
/* Global L2 norm of all trainable gradients (before clipping). */
double optim_grad_norm(const ar_params *ps);
/* Clips (if configured) and applies one AdamW step with 1-based step t at learning rate lr.
 * Weight decay applies to tensors of 2+ dims only (norm gains and biases are not decayed).
 * Returns the gradient norm before clipping. */
double optim_step(ar_params *ps, const ar_optim_cfg *c, int t, float lr);
#endif
