/* data/csv.h — a small, strict CSV reader for metadata tables (AVSBench's
 * s4_meta_data.csv / ms3_meta_data.csv). Columns are found by header name,
 * never by position. Depends on core/error.h and core/log.h only.
 *
 * ACCEPTED (RFC 4180 with the usual relaxations)
 *   - an optional UTF-8 byte-order mark (EF BB BF) at the very start;
 *   - records ended by LF or CRLF (the last one may lack its end);
 *   - fields separated by ','; a field may be quoted with '"': inside quotes
 *     ',' CR and LF are data and "" is one '"'; the closing quote must be
 *     followed by ',' or the end of the record;
 *   - blank lines (nothing between two line ends) are skipped, as pandas does.
 *   The first non-blank record is the header. Header names are taken as they
 *   are (no trimming); an empty or repeated name is an error.
 *
 * MALFORMED RECORDS (skipped, counted in n_skipped, their first physical line
 * numbers (1-based) kept in skipped_lines, the first CSV_MAX_WARNINGS warned
 * with log_warn as "<file>:<line>: record skipped: <why>", then a summary):
 *   a field count different from the header's; a '"' inside an unquoted
 *   field; anything but ',' or the record end after a closing quote; a lone
 *   CR; a NUL byte; a quote still open at the end of the input (the record
 *   from its line to the end is skipped).
 *
 * ERRORS (NULL + ar_error "csv <file>: ..."): an unreadable file, no header
 * (empty input), a malformed header, an empty or duplicate column name, a
 * file larger than CSV_MAX_FILE.
 */
#ifndef ANYREF_DATA_CSV_H
#define ANYREF_DATA_CSV_H

#include <stddef.h>

#define CSV_MAX_WARNINGS 10
#define CSV_MAX_FILE ((size_t)1 << 30)

typedef struct ar_csv {
    char    name[256];        /* the file name used in messages (cut if longer) */
    size_t  n_cols;
    const char **header;      /* n_cols names */
    size_t  n_rows;           /* well-formed data records */
    const char **cells;       /* [n_rows][n_cols], NUL-terminated strings */
    size_t *row_line;         /* [n_rows] physical line where each record starts */
    size_t  n_skipped;
    size_t *skipped_lines;    /* [n_skipped] */
    /* private */
    char   *store;
} ar_csv;

/* Parses buf[len]; name is used in messages. NULL + ar_error on error. */
ar_csv *ar_csv_parse(const void *buf, size_t len, const char *name);
/* Reads and parses the file at path. */
ar_csv *ar_csv_read(const char *path);
void    ar_csv_free(ar_csv *c);   /* NULL is fine */

/* Index of the column named name, or -1 (no error set). */
int ar_csv_find(const ar_csv *c, const char *name);
/* The same, but -1 + ar_error "csv <file>: no column "name" (columns: a, b)"
 * when it is missing. */
int ar_csv_col(const ar_csv *c, const char *name);
/* cells[row][col] (row < n_rows, col < n_cols). */
const char *ar_csv_get(const ar_csv *c, size_t row, int col);

#endif
