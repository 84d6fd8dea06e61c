/* core/error.h — error messages returned to the caller, never exit().
 *
 * Library functions that fail set a message with ar_errorf() and return -1
 * (or NULL). The message lives in a thread-local buffer of AR_ERROR_MAX bytes
 * (longer messages are truncated) and stays until the next ar_errorf() /
 * ar_error_clear() on the same thread. Callers add context on the way up:
 *
 *     if (parse(buf) < 0) return ar_error_prefix("reading %s: ", path);
 *
 * Only the command line decides to stop, after printing ar_error().
 */
#ifndef ANYREF_CORE_ERROR_H
#define ANYREF_CORE_ERROR_H

#define AR_ERROR_MAX 1024

/* Formats the message (arguments may point into the current message). Returns -1. */
int ar_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message on this thread, "" if none. */
const char *ar_error(void);
void ar_error_clear(void);
/* Prepends formatted context to the current message. Returns -1. */
int ar_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
