/* core/json.h — strict JSON (RFC 8259) DOM parser and a string writer.
 *
 * json_parse() reads a whole document from a buffer in one pass, O(n), and
 * builds a read-only tree owned by the returned json_doc: every node and every
 * string lives in a few large blocks (no malloc per node), all freed at once
 * by json_free(). Pointers into the tree stay valid until then.
 *
 *     json_doc *d = json_parse_file("tokenizer.json");
 *     if (!d) return ar_error_prefix("loading tokenizer: ");
 *     const json_value *vocab = json_get(json_get(json_root(d), "model"), "vocab");
 *     for (size_t i = 0; vocab && i < vocab->n; i++)
 *         use(vocab->members[i].key, vocab->members[i].value.integer);
 *     json_free(d);
 *
 * Strict: trailing commas, leading zeros, NaN/Infinity, unescaped control
 * characters, invalid escapes, lone or mis-ordered \u surrogates, invalid
 * UTF-8 anywhere (overlongs, UTF-8-encoded surrogates, > U+10FFFF, truncated
 * sequences), garbage after the root value, nesting deeper than
 * JSON_MAX_DEPTH and empty input are all errors. A UTF-8 byte order mark at
 * the start is skipped.
 *
 * Errors: NULL + ar_error() "<origin>: line L, column C: expected <what>,
 * found <what>". Lines count '\n' from 1; columns count characters (UTF-8
 * code points, not bytes) from 1, and a leading byte order mark is not a
 * character. Offsets (json_value.offset) are byte offsets into the input as
 * given (a byte order mark included).
 *
 * Only the fields of a value's own type are meaningful; the others are zero.
 */
#ifndef ANYREF_CORE_JSON_H
#define ANYREF_CORE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 512   /* nested arrays/objects; one more is an error */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    int boolean;                 /* JSON_BOOL: 0 or 1 */
    double number;               /* JSON_NUMBER: correctly rounded value of the text (-0 kept, underflow -> 0) */
    int is_int; int64_t integer; /* JSON_NUMBER whose text has no . e E and fits int64: is_int = 1, exact value */
    const char *str; size_t len; /* JSON_STRING: unescaped UTF-8, NUL-terminated; may hold NUL (\u0000): use len */
    json_value *items; size_t n; /* JSON_ARRAY: items[0..n). JSON_OBJECT: n = number of members */
    json_member *members;        /* JSON_OBJECT: members[0..n) in document order, duplicate keys all kept */
    size_t offset;               /* byte offset of the value's first character in the input */
};

struct json_member {
    const char *key; size_t key_len;   /* unescaped UTF-8, NUL-terminated, may hold NUL: use key_len */
    json_value value;
};

typedef struct json_doc json_doc;

/* Parses text[0..len) (need not be NUL-terminated). `origin` (a file name or
 * description, NULL = "JSON") starts every error message. NULL on error. */
json_doc *json_parse(const char *text, size_t len, const char *origin);
/* Reads the whole file and parses it; errors start with the path. */
json_doc *json_parse_file(const char *path);
/* The root value (NULL only for a NULL doc). */
const json_value *json_root(const json_doc *d);
void json_free(json_doc *d);   /* NULL ok */

/* The value of `key` in an object (the LAST member with that key, like
 * Python's json). NULL if obj is NULL, not an object, or has no such key.
 * Linear in the number of members: to read a large object, walk members. */
const json_value *json_get(const json_value *obj, const char *key);
/* items[i] of an array; NULL if arr is NULL, not an array, or i >= n. */
const json_value *json_at(const json_value *arr, size_t i);

/* Typed getters for required fields. 0 on success; -1 + ar_error naming the
 * field and the expected type, with `what` (may be NULL) prepended:
 *   "model.safetensors header, tensor 'x': expected 'dtype' to be a string, found number"
 *   "...: missing required field 'dtype' (expected a string)"
 * json_get_string: *out = value->str, *len = value->len (len may be NULL).
 * json_get_int64:  an integer number (is_int), or a number whose value is an
 *                  integer of magnitude <= 2^53 (e.g. 1e3, 4.0).
 * json_get_number: any number. */
int json_get_string(const json_value *obj, const char *key, const char **out, size_t *len, const char *what);
int json_get_int64(const json_value *obj, const char *key, int64_t *out, const char *what);
int json_get_number(const json_value *obj, const char *key, double *out, const char *what);

/* "null", "boolean", "number", "string", "array", "object" ("?" otherwise). */
const char *json_type_name(json_type t);

/* Appends s[0..len) to f as a quoted JSON string: '"' and '\\' escaped,
 * control characters as \b \f \n \r \t or \u00XX, everything else (UTF-8)
 * as is. s must be valid UTF-8 (embedded NUL allowed): otherwise -1 +
 * ar_error and nothing is written. -1 + ar_error on a write error. */
int json_write_string(FILE *f, const char *s, size_t len);

#endif
