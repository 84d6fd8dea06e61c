/* data/tokenize_cmd.h — `anyref tokenize`: text -> ids and ids -> text from
 * the command line (train/main.c dispatches to tokenize_main).
 *
 *   anyref tokenize --tokenizer FILE [--add-bos] [--add-eos] [--special TEXT]... TEXT...
 *       prints the ids of each TEXT on one line, separated by spaces
 *   anyref tokenize --tokenizer FILE --decode [--special TEXT]... IDS...
 *       each argument is a list of ids separated by spaces (or commas); prints its text
 *
 * --special registers an added token ([SEG], <im_start>, ...) with
 * tok_add_special, in the order given, before anything is encoded.
 */
#ifndef ANYREF_DATA_TOKENIZE_CMD_H
#define ANYREF_DATA_TOKENIZE_CMD_H

#include <stdio.h>

/* argv[0] is the command name ("tokenize"); options start at argv[1].
 * Returns the exit status: 0 done, 1 an error (message on stderr), 2 bad usage. */
int tokenize_main(int argc, char **argv);
/* The same writing to out / err (tests use memory streams). */
int tokenize_run(int argc, char **argv, FILE *out, FILE *err);

#endif
