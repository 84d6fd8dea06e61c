/* core/log.h — human messages, metrics files and progress bars.
 *
 * log_info / log_warn / log_error write one line to stderr; if a progress bar
 * is being drawn on the terminal they clear it first and redraw it after.
 *
 * Metrics go to a JSON-lines file, one object per call, flushed each time:
 *     {"step":12,"loss":2.31,"lr":0.0003,"time":1712345678.123456}
 * "time" is unix seconds; nan/inf values are written as null; keys are
 * JSON-escaped; numbers use the shortest text that reads back exactly.
 *
 * Progress: on a terminal (isatty(2)) one line redrawn in place with '\r'
 * (label, bar, done/total, percent, elapsed<ETA, rate, extra), at most ~10
 * redraws a second. When stderr is not a terminal: plain lines, no '\r' and no
 * ANSI codes, at the first update, when a new 10% is reached (but not more
 * often than every AR_PROGRESS_PLAIN_MIN_S seconds), at least every
 * AR_PROGRESS_PLAIN_HEARTBEAT_S seconds, and always the final state.
 * The environment variable ANYREF_PROGRESS=plain|bar|off overrides detection.
 *
 * Output is serialised by a mutex, so any thread may log; one ar_progress is
 * driven by one thread. Depends on core/error.h, core/timer.h, libc, pthreads.
 */
#ifndef ANYREF_CORE_LOG_H
#define ANYREF_CORE_LOG_H

#include <stdio.h>

#define AR_PROGRESS_PLAIN_MIN_S 2.0
#define AR_PROGRESS_PLAIN_HEARTBEAT_S 30.0

typedef struct ar_log ar_log;

/* path NULL or "": a log without a metrics file (log_metrics does nothing).
 * Otherwise the file is opened for appending (its directory must exist);
 * NULL + ar_error if it cannot be opened. */
ar_log *log_open(const char *jsonl_path);
void    log_close(ar_log *l);              /* NULL is fine */
/* 0, or -1 + ar_error on a write error / bad arguments. l may be NULL (no-op). */
int     log_metrics(ar_log *l, int step, const char *const *keys, const double *vals, int n);

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* "warning: ..." */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* "error: ..." */

typedef enum { AR_PROGRESS_OFF, AR_PROGRESS_PLAIN, AR_PROGRESS_BAR } ar_progress_mode;

typedef struct {
    long   total;          /* <= 0: unknown (no bar, percent or ETA) */
    long   done;
    double t_start;        /* ar_now() at progress_start */
    double t_last;         /* last redraw (bar) or line (plain) */
    long   last_done;      /* done at the last plain line, -1 = none yet */
    int    last_decile;    /* 10% step of the last plain line */
    int    mode;           /* ar_progress_mode */
    int    active;
    char   label[48];
    char   extra[160];
} ar_progress;

/* Mode from ANYREF_PROGRESS or isatty(2). */
ar_progress_mode progress_mode_detect(void);
void progress_start(ar_progress *p, long total, const char *label);
/* extra (may be NULL), e.g. "loss 2.31 lr 3e-4", is shown after the numbers. */
void progress_update(ar_progress *p, long done, const char *extra);
/* Draws/prints the final state and ends the line. */
void progress_finish(ar_progress *p);

#endif
