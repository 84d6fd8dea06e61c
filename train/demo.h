/* train/demo.h — the embedded demo: a tiny LLaMA-style decoder trained from
 * scratch through the kernels on a synthetic sequence task, with the real
 * training loop (AdamW, warm-up + decay, clipping, JSONL metrics, progress). */
#ifndef ANYREF_DEMO_H
#define ANYREF_DEMO_H
#include "core/config.h"

extern const cfg_key demo_schema[];
extern const int demo_schema_len;
/* Runs the demo training described by cfg; 0 on success, -1 + ar_error. */
int demo_train(const ar_config *cfg);
#endif
