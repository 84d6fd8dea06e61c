/* data/synthetic.c — see synthetic.h. */
#include "data/synthetic.h"
#include "core/error.h"
#include <stdlib.h>
#include <string.h>

int synth_init(synth_task *t, const char *name, int k, int base) {
    memset(t, 0, sizeof *t);
    if (!strcmp(name, "reverse")) t->task = SYNTH_REVERSE;
    else if (!strcmp(name, "copy")) t->task = SYNTH_COPY;
    else if (!strcmp(name, "sort")) t->task = SYNTH_SORT;
    else return ar_errorf("data.task = '%s' (expected reverse, copy or sort)", name);
    if (k < 1 || k > 64) return ar_errorf("data.digits = %d (expected 1..64)", k);
    if (base < 2 || base > 1000) return ar_errorf("data.base = %d (expected 2..1000)", base);
    t->k = k; t->base = base;
    t->bos = base; t->sep = base + 1; t->eos = base + 2; t->vocab = base + 3;
    t->T = 2 * k + 3; t->prompt_len = k + 2;
    return 0;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

void synth_sample(const synth_task *t, ar_rng *r, int *tok, int *tgt) {
    int d[64], a[64];
    for (int i = 0; i < t->k; i++) d[i] = (int)rng_below(r, (uint64_t)t->base);
    for (int i = 0; i < t->k; i++) a[i] = t->task == SYNTH_REVERSE ? d[t->k - 1 - i] : d[i];
    if (t->task == SYNTH_SORT) qsort(a, (size_t)t->k, sizeof(int), cmp_int);
    int n = 0;
    tok[n++] = t->bos;
    for (int i = 0; i < t->k; i++) tok[n++] = d[i];
    tok[n++] = t->sep;
    for (int i = 0; i < t->k; i++) tok[n++] = a[i];
    tok[n++] = t->eos;
    /* position i predicts token i+1; only answer tokens and EOS are supervised */
    for (int i = 0; i < t->T; i++)
        tgt[i] = (i + 1 < t->T && i + 1 >= t->prompt_len) ? tok[i + 1] : -100;
}
