/* data/synthetic.h — the synthetic sequence tasks of the embedded demo:
 * BOS d1..dk SEP <answer> EOS over digit tokens, where the answer is the prompt
 * reversed ("reverse"), copied ("copy") or sorted ("sort"). Targets are
 * next-token labels, -100 on the prompt, so only the answer and EOS are
 * learned, as in instruction tuning. Vocabulary: base digits, then BOS, SEP, EOS. */
#ifndef ANYREF_SYNTHETIC_H
#define ANYREF_SYNTHETIC_H
#include "core/rng.h"

typedef struct { int task, k, base, bos, sep, eos, vocab, T, prompt_len; } synth_task;
enum { SYNTH_REVERSE, SYNTH_COPY, SYNTH_SORT };

/* name: reverse | copy | sort; k digits in 1..64; base in 2..1000. -1 + ar_error. */
int  synth_init(synth_task *t, const char *name, int k, int base);
/* One sequence of t->T tokens and targets. */
void synth_sample(const synth_task *t, ar_rng *r, int *tokens, int *targets);
#endif
