/* train/inspect_cmd.h — `anyref data inspect`: build the samples of the
 * config's source.* data set (data/samples.h) and print one JSON line each,
 * so users can check their data before a long run.
 *
 *   anyref data inspect CONFIG [section.key=value ...] [--limit N]
 *
 * Reads the training config format (core/config.h, train_schema): source.kind
 * (refer | avsbench | jsonl), source.root, source.dataset, source.split_by,
 * source.split, source.images, source.image_layout, source.file, source.task,
 * source.seed. When data.tokenizer is set the tokens of each sample are
 * counted: a conv_encoder for data.template, data.add_tokens + "[SEG]" + the
 * reference start/end markers as added tokens (whitespace stripped, as
 * transformers 4.31), "<image>" as a placeholder (one id), conv_tokenize of
 * (question, answer), untruncated: its n.
 *
 * Output, one line per sample (stdout):
 *   {"dataset":"refcoco","split":"train","image":"...jpg","height":480,"width":640,
 *    "question":"<image>\nCan you segment the man in red in this image?",
 *    "answer":"man in red[SEG].","reference":"text","box":null,"mask_area":[1234],"tokens":97}
 * box is [x0, y0, x1, y1] or null; tokens null without data.tokenizer.
 * jsonl records are loaded with cj_options.check_files (files exist, boxes,
 * polygons and mask sizes checked against the image's header size), not
 * decode: a broken image is not found here.
 * Summary on stderr: "inspect: N samples printed, M records skipped by the
 * loader, K samples skipped (unreadable image or mask)". Records the loaders
 * skip are warned and counted by them; a sample whose image or mask cannot
 * be read is warned on err (naming the file) and skipped.
 *
 * Depends on core/config.h, train/train.h (train_schema), data/samples.h,
 * data/conversation.h, data/tokenizer.h.
 */
#ifndef ANYREF_TRAIN_INSPECT_CMD_H
#define ANYREF_TRAIN_INSPECT_CMD_H

#include <stdio.h>

/* argv[0] is "inspect", argv[1] the config, then overrides and --limit N.
 * Returns the exit status: 0 done, 1 an error (message on err), 2 bad usage. */
int inspect_run(int argc, char **argv, FILE *out, FILE *err);
int inspect_main(int argc, char **argv);

#endif
