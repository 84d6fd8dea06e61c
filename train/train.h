/* train/train.h — `anyref train`: the training loop for the LLaMA decoder
 * (model/llama.h) with LoRA, AdamW (optim/), gradient accumulation, periodic
 * validation, a run directory (resolved config, metrics.jsonl, checkpoints)
 * and exact resume from the newest checkpoint. Data: the synthetic demo tasks
 * (data/synthetic.h) or pre-tokenized HDF5 files (data/token_dataset.h). */
#ifndef ANYREF_TRAIN_H
#define ANYREF_TRAIN_H
#include "core/config.h"

extern const cfg_key train_schema[];
extern const int train_schema_len;
/* Runs the training described by cfg; 0 on success, -1 + ar_error. */
int train_run(const ar_config *cfg);
#endif
