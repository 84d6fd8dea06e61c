/* data/pickle.h — a reader for Python pickles of plain data (protocols 0–5)
 * that builds a small value tree and never constructs objects.
 *
 * Written for the REFER annotation files (refs(unc).p, refs(umd).p, ...),
 * which Python 2 pickled with protocol 2 (or 0), and for what Python 3 writes
 * for the same data at protocols 0–5; a permissive mode (below) reads the
 * data.pkl of PyTorch checkpoints for checkpoints/torch_ckpt.c.
 *
 *     pk_doc *d = pk_load_file("refcoco/refs(unc).p");
 *     if (!d) return ar_error_prefix("loading refs: ");
 *     const pk_value *refs = pk_root(d);             // PK_LIST of PK_DICT
 *     const pk_value *s = pk_dict_get(refs->items[0], "split");
 *     pk_free(d);
 *
 * VALUES (what Python 3's pickle.load(f, encoding="latin1") would return):
 *   PK_NONE                   None
 *   PK_BOOL   b               True/False (NEWTRUE/NEWFALSE, and "I01\n"/"I00\n")
 *   PK_INT    i               int; one outside int64 is an error
 *   PK_FLOAT  f               float
 *   PK_STR    s, len          str as UTF-8, NUL-terminated at len (may hold NULs);
 *                             Python 2 byte strings (STRING, BINSTRING,
 *                             SHORT_BINSTRING) are decoded as latin-1
 *   PK_BYTES  s, len          bytes / bytearray (also NUL-terminated at len)
 *   PK_LIST   items, n        list
 *   PK_TUPLE  items, n        tuple
 *   PK_DICT   keys, vals, n   dict in insertion order; keys are str or int
 *                             (anything else is an error); a repeated key
 *                             overwrites the value in place, as Python does
 *
 * OPCODES read: PROTO (0–5), FRAME, STOP, MARK, POP, POP_MARK, DUP,
 *   NONE, NEWTRUE, NEWFALSE, INT, BININT, BININT1, BININT2, LONG, LONG1,
 *   LONG4, FLOAT, BINFLOAT, STRING, BINSTRING, SHORT_BINSTRING, UNICODE,
 *   SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, BINBYTES, SHORT_BINBYTES,
 *   BINBYTES8, BYTEARRAY8, EMPTY_LIST, LIST, APPEND, APPENDS, EMPTY_TUPLE,
 *   TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_DICT, DICT, SETITEM, SETITEMS,
 *   PUT, BINPUT, LONG_BINPUT, MEMOIZE, GET, BINGET, LONG_BINGET.
 * REFUSED (object construction, extension registry, persistent ids, sets,
 *   out-of-band buffers): GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ,
 *   NEWOBJ, NEWOBJ_EX, EXT1/2/4, PERSID, BINPERSID, EMPTY_SET, ADDITEMS,
 *   FROZENSET, NEXT_BUFFER, READONLY_BUFFER, and every unassigned byte:
 *   "<name>: unsupported opcode GLOBAL (0x63) at offset 12".
 *   Nothing in the input is ever executed or looked up.
 *
 * STRICTNESS: every length, count, memo index and line is checked against the
 * bytes left before it is read; a memo index may not exceed the input size;
 * stack underflow (also across a MARK), a GET of an unset memo key, APPEND to
 * a non-list, SETITEM on a non-dict, invalid UTF-8 (and UTF-8-encoded
 * surrogates, which have no UTF-8 form), bad escapes in STRING/UNICODE lines,
 * a FRAME longer than the rest of the input, more than PK_MAX_NODES values,
 * a value nested deeper than PK_MAX_DEPTH, a container that contains itself,
 * and input that ends before STOP are errors. Bytes after STOP are ignored
 * (as pickle.load does). Errors: NULL + ar_error()
 * "<name>: <what> at offset N" naming the opcode.
 *
 * PERMISSIVE MODE (pk_parse_ex with a pk_options; written for the data.pkl
 * of torch.save, checkpoints/torch_ckpt.h): still nothing is executed or
 * looked up; the calls a pickle asks for are recorded as nodes.
 *   GLOBAL / STACK_GLOBAL  a PK_GLOBAL node, s = "module.name", accepted only
 *                          when "module.name" is in options->globals; any
 *                          other is refused: "<name>: GLOBAL at offset N:
 *                          global 'posix.system' is not allowed (...)"
 *   REDUCE                 callable (a PK_GLOBAL) and args (a tuple) become a
 *                          PK_CALL node, items = {callable, args}, n = 2;
 *                          `collections.OrderedDict` called with () becomes an
 *                          empty PK_DICT (later SETITEMS fill it)
 *   BUILD                  on a PK_DICT or PK_CALL: the state is dropped
 *                          (e.g. a state_dict's _metadata attribute)
 *   BINPERSID / PERSID     (options->persistent_ids) a PK_PERSID node,
 *                          items[0] = the id (PERSID: a str), n = 1
 * Everything else stays refused as above.
 *
 * The tree is a DAG: a memoized value fetched twice (GET) is shared, so a
 * walker that visits every path may see a node more than once (pk_count
 * visits each node once). Everything lives until pk_free().
 * Depends on core/error.h and libc.
 */
#ifndef ANYREF_DATA_PICKLE_H
#define ANYREF_DATA_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#define PK_MAX_DEPTH 100            /* containers inside containers; deeper is an error */
#define PK_MAX_NODES (1u << 26)     /* values created (each costs ~64 bytes) */
#define PK_MAX_FILE  ((size_t)1 << 32)   /* pk_load_file refuses larger files */

typedef enum { PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES, PK_LIST, PK_TUPLE, PK_DICT,
               PK_GLOBAL, PK_CALL, PK_PERSID } pk_type;

typedef struct pk_value pk_value;
struct pk_value {
    pk_type type;
    size_t  offset;             /* byte offset of the opcode that made it */
    int     b;                  /* PK_BOOL */
    int64_t i;                  /* PK_INT */
    double  f;                  /* PK_FLOAT */
    char   *s;                  /* PK_STR (UTF-8) / PK_BYTES, NUL-terminated */
    size_t  len;                /* bytes in s, without the NUL */
    pk_value **items;           /* PK_LIST / PK_TUPLE: n items */
    pk_value **keys, **vals;    /* PK_DICT: n pairs */
    size_t  n;
    /* private */
    size_t  cap;
    uint32_t *index;            /* PK_DICT hash index (larger dicts) */
    size_t  index_cap;
    pk_value *next_alloc;
    int     mark, depth;
};

typedef struct pk_doc pk_doc;

/* Parses one pickle from data[0, len); name is used in messages (the file name). */
pk_doc *pk_parse(const void *data, size_t len, const char *name);
/* Permissive mode (see above); opt NULL is pk_parse. */
typedef struct {
    const char *const *globals;   /* NULL-terminated list of "module.name" that GLOBAL may name */
    int persistent_ids;           /* nonzero: PERSID / BINPERSID make PK_PERSID nodes */
} pk_options;
pk_doc *pk_parse_ex(const void *data, size_t len, const char *name, const pk_options *opt);
/* Reads and parses a whole file (up to PK_MAX_FILE bytes). */
pk_doc *pk_load_file(const char *path);
void    pk_free(pk_doc *d);                 /* NULL is fine */

const pk_value *pk_root(const pk_doc *d);
int         pk_protocol(const pk_doc *d);   /* from PROTO, 0 if none */
const char *pk_name(const pk_doc *d);
size_t      pk_count(const pk_doc *d);      /* values created */

/* dict lookups (NULL if d is not a dict or the key is missing) */
const pk_value *pk_dict_get(const pk_value *d, const char *key);
const pk_value *pk_dict_get_int(const pk_value *d, int64_t key);

const char *pk_type_name(pk_type t);        /* "None", "bool", "int", "float", "str", ... */
/* Name of an opcode byte ("GLOBAL"), or NULL for an unassigned byte. */
const char *pk_opcode_name(uint8_t op);

#endif
