/* train/train.h — `anyref train`: the training loop for the LLaMA decoder
 * (model/llama.h) with LoRA, AdamW (optim/), gradient accumulation, periodic
 * validation, a run directory (resolved config, metrics.jsonl, checkpoints)
 * and exact resume from the newest checkpoint. Data: the synthetic demo tasks
 * (data/synthetic.h) or pre-tokenized HDF5 files (data/token_dataset.h).
 * With model.kind = anyref the step is model/anyref.h (LLaMA + [SEG] head +
 * SAM mask decoder, CE + BCE + Dice) on grounding files
 * (data/grounding_dataset.h), validated with gIoU / cIoU. */
#ifndef ANYREF_TRAIN_H
#define ANYREF_TRAIN_H
#include "core/config.h"

extern const cfg_key train_schema[];
extern const int train_schema_len;
/* Runs the training described by cfg; 0 on success, -1 + ar_error.
 * SIGINT / SIGTERM: the current step finishes, a checkpoint is written and
 * train_run returns 0 after printing the command that resumes (a second
 * signal ends the process at once). NaN/Inf loss or gradients skip the step
 * (no update, logged as bad_steps); train.max_bad_steps in a row stop the run
 * with an error, no checkpoint of that state written. Before the first step
 * the run directory is probed (create, write, fsync, delete a file) and its
 * free space compared with a checkpoint's size. */
int train_run(const ar_config *cfg);
/* The program name printed in the resume command ("anyref" unless main sets argv[0]). */
extern const char *train_program;
/* `anyref cache`: the frozen CLIP / ImageBind outputs of every image, crop and
 * audio of data.train and data.val into the feature cache data.cache
 * (data/feature_cache.h); entries already there (same inputs, same encoder
 * weights and settings) are kept. Training with data.cache then reads them. */
int train_cache(const ar_config *cfg);
/* `anyref export-peft`: the checkpoint (train.resume = PATH, else the newest
 * in run.dir) as a PEFT adapter directory (checkpoints/peft.h). */
int train_export_peft(const ar_config *cfg, const char *out_dir);
/* `anyref merge`: model.init plus the checkpoint's LoRA merged (W += s B A),
 * written as one safetensors file with Hugging Face names. */
int train_merge(const ar_config *cfg, const char *out_path);
#endif
