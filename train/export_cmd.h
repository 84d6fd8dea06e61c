/* train/export_cmd.h — `anyref export RUN_DIR|CKPT --out DIR [--merged]
 * [--shard-mb N] [section.key=value ...]`: a training checkpoint as the PEFT
 * adapter + trained non-LoRA modules and (--merged) the merged full model,
 * under the names the official AnyRef code expects (checkpoints/export.h).
 * Depends on train/run.h, checkpoints/export.h. */
#ifndef ANYREF_TRAIN_EXPORT_CMD_H
#define ANYREF_TRAIN_EXPORT_CMD_H
/* argv[0] is "export". Returns the exit status: 0 done, 1 an error (logged), 2 bad usage. */
int export_main(int argc, char **argv);
#endif
