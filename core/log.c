/* core/log.c — stderr messages, JSONL metrics, progress bars (see log.h). */
#include "core/log.h"

#include "core/error.h"
#include "core/timer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct ar_log {
    FILE *f;       /* NULL: no metrics file */
    char *path;
};

/* Serialises everything written to stderr here, and guards the bar state. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static const ar_progress *g_bar;   /* progress drawn on the terminal now */
static char g_bar_line[512];       /* its last drawn text */

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */
/* ------------------------------------------------------------------------ */
static void vlog(const char *prefix, const char *fmt, va_list ap) {
    char small[1024], *msg = small;
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small) {
        char *big = malloc((size_t)n + 1);
        if (big) { vsnprintf(big, (size_t)n + 1, fmt, cp); msg = big; }
    }
    va_end(cp);
    if (n < 0) { small[0] = '\0'; n = 0; }
    size_t len = strlen(msg);
    if (len && msg[len - 1] == '\n') len--;

    pthread_mutex_lock(&g_lock);
    if (g_bar) fputs("\r\033[K", stderr);
    fprintf(stderr, "%s%.*s\n", prefix, (int)len, msg);
    if (g_bar) fprintf(stderr, "\r%s\033[K", g_bar_line);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
    if (msg != small) free(msg);
}

void log_info(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vlog("", fmt, ap); va_end(ap);
}
void log_warn(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vlog("warning: ", fmt, ap); va_end(ap);
}
void log_error(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vlog("error: ", fmt, ap); va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */
ar_log *log_open(const char *path) {
    ar_log *l = calloc(1, sizeof *l);
    if (!l) { ar_errorf("log_open: out of memory"); return NULL; }
    if (!path || !*path) return l;
    l->path = strdup(path);
    l->f = fopen(path, "a");
    if (!l->path || !l->f) {
        ar_errorf("cannot open metrics file '%s': %s", path, l->path ? strerror(errno) : "out of memory");
        if (l->f) fclose(l->f);
        free(l->path);
        free(l);
        return NULL;
    }
    return l;
}

void log_close(ar_log *l) {
    if (!l) return;
    if (l->f) fclose(l->f);
    free(l->path);
    free(l);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* Shortest %.Ng (N = 15..17) that reads back as exactly v; "null" if not finite. */
static void json_number(FILE *f, double v) {
    if (!isfinite(v)) { fputs("null", f); return; }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

int log_metrics(ar_log *l, int step, const char *const *keys, const double *vals, int n) {
    if (!l || !l->f) return 0;
    if (n < 0 || (n > 0 && (!keys || !vals))) return ar_errorf("log_metrics: bad arguments (n = %d)", n);
    for (int i = 0; i < n; i++)
        if (!keys[i]) return ar_errorf("log_metrics: key %d is NULL", i);
    FILE *f = l->f;
    flockfile(f);
    fprintf(f, "{\"step\":%d", step);
    for (int i = 0; i < n; i++) {
        fputc(',', f);
        json_string(f, keys[i]);
        fputc(':', f);
        json_number(f, vals[i]);
    }
    fprintf(f, ",\"time\":%.6f}\n", ar_wall());
    int bad = fflush(f) != 0 || ferror(f);
    int err = errno;
    funlockfile(f);
    if (bad) {
        clearerr(f);
        return ar_errorf("writing metrics file '%s': %s", l->path, strerror(err));
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Progress                                                                 */
/* ------------------------------------------------------------------------ */
ar_progress_mode progress_mode_detect(void) {
    const char *env = getenv("ANYREF_PROGRESS");
    if (env && *env) {
        if (strcasecmp(env, "plain") == 0) return AR_PROGRESS_PLAIN;
        if (strcasecmp(env, "bar") == 0) return AR_PROGRESS_BAR;
        if (strcasecmp(env, "off") == 0) return AR_PROGRESS_OFF;
    }
    return isatty(STDERR_FILENO) ? AR_PROGRESS_BAR : AR_PROGRESS_PLAIN;
}

static void copy_clean(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    dst[i] = '\0';
}

/* "MM:SS" or "H:MM:SS"; "--:--" when unknown. */
static void fmt_dur(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 3.6e8) { snprintf(buf, cap, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, cap, "%02ld:%02ld", t / 60, t % 60);
}

static void fmt_rate(char *buf, size_t cap, double done, double elapsed) {
    if (elapsed < 0.05 || done <= 0) { snprintf(buf, cap, "? it/s"); return; }
    double r = done / elapsed;
    if (r >= 100) snprintf(buf, cap, "%.0f it/s", r);
    else if (r >= 1) snprintf(buf, cap, "%.2f it/s", r);
    else snprintf(buf, cap, "%.2f s/it", 1.0 / r);
}

/* The numbers shared by both modes. */
typedef struct {
    char   count[64], pct[16], elapsed[24], eta[24], rate[32];
    double frac;
} prog_text;

static void prog_format(const ar_progress *p, double now, prog_text *t) {
    double el = now - p->t_start;
    fmt_dur(t->elapsed, sizeof t->elapsed, el);
    fmt_rate(t->rate, sizeof t->rate, (double)p->done, el);
    if (p->total > 0) {
        t->frac = (double)p->done / (double)p->total;
        snprintf(t->count, sizeof t->count, "%ld/%ld", p->done, p->total);
        snprintf(t->pct, sizeof t->pct, "%d%%", (int)(100.0 * t->frac));
        double eta = p->done > 0 && el > 0 ? (double)(p->total - p->done) * el / (double)p->done : -1;
        fmt_dur(t->eta, sizeof t->eta, eta);
    } else {
        t->frac = 0;
        snprintf(t->count, sizeof t->count, "%ld", p->done);
        t->pct[0] = '\0';
        snprintf(t->eta, sizeof t->eta, "?");
    }
}

static int term_cols(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

/* Caller holds g_lock. */
static void draw_bar(const ar_progress *p, double now) {
    prog_text t;
    prog_format(p, now, &t);
    int cols = term_cols();
    char tail[256];
    if (p->total > 0)
        snprintf(tail, sizeof tail, " %4s %s [%s<%s, %s]", t.pct, t.count, t.elapsed, t.eta, t.rate);
    else
        snprintf(tail, sizeof tail, " %s [%s, %s]", t.count, t.elapsed, t.rate);
    size_t lab = strlen(p->label), tl = strlen(tail), ex = strlen(p->extra);
    char *line = g_bar_line;
    size_t cap = sizeof g_bar_line, o = 0;
    o += (size_t)snprintf(line + o, cap - o, "%s", p->label);
    if (p->total > 0) {
        /* A fixed width, so the bar does not jitter as the text changes;
         * the extra text is what gets cut when the terminal is narrow. */
        int w = cols / 4 > 30 ? 30 : cols / 4;
        if (w >= 10 && (int)(lab + tl) + w + 3 < cols) {
            int fill = (int)(t.frac * w + 1e-9);
            if (fill > w) fill = w;
            if (fill < 0) fill = 0;
            line[o++] = ' ';
            line[o++] = '[';
            for (int i = 0; i < w; i++) line[o++] = i < fill ? '#' : '.';
            line[o++] = ']';
            line[o] = '\0';
        }
    }
    o += (size_t)snprintf(line + o, cap - o, "%s", tail);
    if (o < cap && ex) snprintf(line + o, cap - o, " %s", p->extra);
    size_t maxw = (size_t)cols - 1;
    if (maxw < cap && strlen(line) > maxw) line[maxw] = '\0';   /* never wrap: \r must reach the start */
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
}

/* Caller holds g_lock. */
static void print_plain(ar_progress *p, double now) {
    prog_text t;
    prog_format(p, now, &t);
    if (p->total > 0)
        fprintf(stderr, "%s: %s (%s) %s elapsed %s eta %s", p->label, t.count, t.pct, t.rate,
                t.elapsed, t.eta);
    else
        fprintf(stderr, "%s: %s %s elapsed %s", p->label, t.count, t.rate, t.elapsed);
    if (p->extra[0]) fprintf(stderr, " | %s", p->extra);
    fputc('\n', stderr);
    fflush(stderr);
    p->t_last = now;
    p->last_done = p->done;
    p->last_decile = p->total > 0 ? (int)(10.0 * t.frac) : 0;
}

void progress_start(ar_progress *p, long total, const char *label) {
    memset(p, 0, sizeof *p);
    p->total = total > 0 ? total : 0;
    p->mode = progress_mode_detect();
    p->t_start = ar_now();
    p->t_last = -1e30;
    p->last_done = -1;
    p->last_decile = -1;
    p->active = 1;
    copy_clean(p->label, sizeof p->label, label ? label : "");
}

void progress_update(ar_progress *p, long done, const char *extra) {
    if (!p->active) return;
    if (done < 0) done = 0;
    if (p->total > 0 && done > p->total) done = p->total;
    p->done = done;
    if (extra) copy_clean(p->extra, sizeof p->extra, extra);
    if (p->mode == AR_PROGRESS_OFF) return;
    double now = ar_now();
    int at_end = p->total > 0 && done == p->total;
    pthread_mutex_lock(&g_lock);
    if (p->mode == AR_PROGRESS_BAR) {
        if (now - p->t_last >= 0.1 || (at_end && p->last_done != done)) {
            g_bar = p;
            draw_bar(p, now);
            p->t_last = now;
            p->last_done = done;
        }
    } else {
        int decile = p->total > 0 ? (int)(10.0 * (double)done / (double)p->total) : 0;
        double since = now - p->t_last;
        int first = p->last_done < 0;
        int final = at_end && p->last_done != done;
        int step = decile > p->last_decile && since >= AR_PROGRESS_PLAIN_MIN_S;
        int beat = since >= AR_PROGRESS_PLAIN_HEARTBEAT_S && done != p->last_done;
        if (first || final || step || beat) print_plain(p, now);
    }
    pthread_mutex_unlock(&g_lock);
}

void progress_finish(ar_progress *p) {
    if (!p->active) return;
    double now = ar_now();
    pthread_mutex_lock(&g_lock);
    if (p->mode == AR_PROGRESS_BAR) {
        draw_bar(p, now);
        fputc('\n', stderr);
        fflush(stderr);
        if (g_bar == p) g_bar = NULL;
    } else if (p->mode == AR_PROGRESS_PLAIN && p->last_done != p->done) {
        print_plain(p, now);
    }
    p->active = 0;
    pthread_mutex_unlock(&g_lock);
}
