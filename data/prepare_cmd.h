/* data/prepare_cmd.h — `anyref prepare`: LLaVA-format conversations (JSON)
 * -> the pre-tokenized HDF5 training format (train/main.c dispatches here).
 *
 *   anyref prepare --tokenizer FILE [--template llava_v1|vicuna_v1_1]
 *                  [--seq-len T] [--add-special TEXT]... [--no-strip]
 *                  INPUT.json OUTPUT.h5
 *
 * Tokenizes every conversation as LLaVA's preprocess_v1 does
 * (data/conversation.h), truncated to T tokens (default 512), and writes the
 * samples that have a supervised token, right-padded to T, with
 * conv_write_tokens. --add-special registers an added token ("[SEG]", ...)
 * in the order given (ids after the vocabulary); by default the whitespace
 * around it is stripped as transformers 4.31's slow LlamaTokenizer does,
 * --no-strip keeps it. Broken samples are skipped and counted, never fatal.
 * Prints one "key value" line per count (samples, skipped and per reason,
 * truncated, mismatched, unsupervised, written, tokens, supervised tokens).
 */
#ifndef ANYREF_DATA_PREPARE_CMD_H
#define ANYREF_DATA_PREPARE_CMD_H

#include <stdio.h>

/* argv[0] is the command name ("prepare"); options start at argv[1].
 * Returns the exit status: 0 done, 1 an error (message on stderr), 2 bad usage. */
int prepare_main(int argc, char **argv);
/* The same writing to out / err (tests use memory streams). */
int prepare_run(int argc, char **argv, FILE *out, FILE *err);

#endif
