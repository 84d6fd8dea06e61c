/* core/config.h — typed configuration: files, command-line overrides, help.
 *
 * File format (the .cfg files in configs/):
 *     # comment            ; also a comment
 *     [train]
 *     learning_rate = 3e-4       # trailing comment (after whitespace)
 *     run_name = "demo \"one\""  # quoted: \" \\ \n \t \r escapes
 *     [model.lora]               # section names may contain dots
 *     r = 8                      # key "model.lora.r"
 * Before the first [section] a key must be written in full ("train.steps = 3").
 * An unquoted value is the text after '=' up to a '#' or ';' that starts it
 * or follows whitespace, trimmed. Lines end with \n or \r\n; any length up to
 * CFG_MAX_LINE bytes (longer lines are rejected with a message).
 *
 * A schema (a static array of cfg_key) declares every valid key, "section.key",
 * with its type, default and help text. Anything else is an error:
 * unknown keys and sections (with a "did you mean" suggestion), values of the
 * wrong type, non-finite floats, integers that overflow long, duplicate keys
 * in one file, malformed lines. Messages name origin:line, the key, the bad
 * value and what was expected. A file either loads completely or changes
 * nothing. The schema array and its strings are borrowed: they must outlive
 * the config. Depends on core/error.h and libc.
 *
 * Getters on a key that is not in the schema (or of another type) are a
 * programming error: they print to stderr and return 0 / NULL.
 */
#ifndef ANYREF_CORE_CONFIG_H
#define ANYREF_CORE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CFG_MAX_LINE 65536

typedef enum { CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING } cfg_type;

typedef struct {
    const char *key;            /* "section.key" */
    cfg_type    type;
    const char *default_value;  /* parsed like a command-line value; NULL = "" (strings only) */
    const char *help;
} cfg_key;

typedef struct ar_config ar_config;

/* All defaults applied. NULL + ar_error on OOM or a bad schema/default. */
ar_config *cfg_new(const cfg_key *schema, int nkeys);
void cfg_free(ar_config *c);

/* 0, or -1 with ar_error "path:line: problem". */
int cfg_load_file(ar_config *c, const char *path);
/* text[len] need not be NUL-terminated; origin names it in messages. */
int cfg_load_string(ar_config *c, const char *text, size_t len, const char *origin);
/* "section.key=value" from the command line; the value is taken literally
 * (no comments), or as a quoted string if it is wrapped in double quotes. */
int cfg_override(ar_config *c, const char *assignment);
/* Sets one key from its textual value; origin/line (line <= 0: none) are
 * used in error messages and remembered (cfg_origin). */
int cfg_set(ar_config *c, const char *key, const char *value, const char *origin, int line);

long        cfg_int(const ar_config *c, const char *key);
double      cfg_float(const ar_config *c, const char *key);  /* also reads CFG_INT keys */
int         cfg_bool(const ar_config *c, const char *key);   /* true/false/1/0/yes/no/on/off */
const char *cfg_str(const ar_config *c, const char *key);    /* any key: its value as text */
/* Where the current value came from: "default", "demo.cfg:7", "command line". */
const char *cfg_origin(const ar_config *c, const char *key);
/* 1 if key is in the schema. */
int cfg_has(const ar_config *c, const char *key);

/* A complete config that cfg_load_file reads back to the same values,
 * sections grouped, each key preceded by its help as a comment. 0 or -1. */
int  cfg_write(const ar_config *c, FILE *f);
void cfg_print_help(const cfg_key *schema, int nkeys, FILE *f);

#endif
