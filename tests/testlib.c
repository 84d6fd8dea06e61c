#include "tests/testlib.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;

static void vline(const char *tag, const char *name, const char *fmt, va_list ap) {
    printf("%-4s %-44s ", tag, name);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}
void t_ok(const char *name, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vline("ok", name, fmt, ap); va_end(ap);
}
void t_fail(const char *name, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vline("FAIL", name, fmt, ap); va_end(ap);
    g_failures++;
}
int t_check(int cond, const char *name, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt);
    vline(cond ? "ok" : "FAIL", name, fmt, ap);
    va_end(ap);
    if (!cond) g_failures++;
    return cond;
}
int t_exit_code(void) { return g_failures ? 1 : 0; }

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return ((splitmix(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void t_fill_normal(float *x, size_t n, float std, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        double u1 = unif(&s), u2 = unif(&s);
        x[i] = (float)(std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}
void t_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * unif(&s));
}
float *t_alloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) { printf("FAIL t_alloc out of memory (%zu floats)\n", n); exit(1); }
    return p;
}
double t_max_rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > 1e-12 ? mb : 1e-12);
}
double t_max_rel_err_d(const float *a, const double *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / (mb > 1e-12 ? mb : 1e-12);
}
double t_dot(const float *out, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * (double)r[i];
    return s;
}
double t_gradcheck(const char *name, t_loss_fn loss, void *ctx, float *x, const float *g,
                   size_t n, float eps, double tol, size_t max_points) {
    size_t pts = n < max_points ? n : max_points;
    double maxabs_num = 0, maxdiff = 0;
    size_t worst = 0;
    for (size_t k = 0; k < pts; k++) {
        size_t i = (pts == n) ? k : (size_t)((double)k * (double)(n - 1) / (double)(pts - 1 ? pts - 1 : 1));
        float x0 = x[i];
        x[i] = x0 + eps; double lp = loss(ctx);
        x[i] = x0 - eps; double lm = loss(ctx);
        x[i] = x0;
        double num = (lp - lm) / (2.0 * (double)eps);
        double d = fabs(num - (double)g[i]);
        if (fabs(num) > maxabs_num) maxabs_num = fabs(num);
        if (fabs(g[i]) > maxabs_num) maxabs_num = fabs(g[i]);
        if (d > maxdiff || isnan(d)) { maxdiff = isnan(d) ? INFINITY : d; worst = i; }
    }
    loss(ctx); /* leave the forward state matching the unperturbed inputs */
    double rel = maxdiff / (maxabs_num > 1e-12 ? maxabs_num : 1e-12);
    int good = rel <= tol && maxabs_num > 0;
    t_check(good, name, "fd max rel err %.2e (tol %.0e, %zu/%zu points, worst idx %zu, scale %.3g)",
            rel, tol, pts, n, worst, maxabs_num);
    return rel;
}

double t_gradcheck_kinked(const char *name, t_loss_fn loss, void *ctx, float *x, const float *g, size_t n,
                          float h, double tol, size_t max_points) {
    size_t pts = n < max_points ? n : max_points;
    double scale = 0, maxdiff = 0, maxdiff_h = 0;
    size_t worst = 0;
    for (size_t k = 0; k < pts; k++) {
        size_t i = pts == n ? k : (size_t)((double)k * (double)(n - 1) / (double)(pts - 1 ? pts - 1 : 1));
        const float x0 = x[i];
        double best = INFINITY, bestnum = 0;
        for (int r = 0; r < 3; r++) {
            const float e = h / (float)(1 << r);
            x[i] = x0 + e; double lp = loss(ctx);
            x[i] = x0 - e; double lm = loss(ctx);
            x[i] = x0;
            const double num = (lp - lm) / (double)((x0 + e) - (x0 - e)), diff = fabs(num - (double)g[i]);
            if (diff < best) { best = diff; bestnum = num; }
            if (r == 0) maxdiff_h = fmax(maxdiff_h, diff);
        }
        scale = fmax(scale, fmax(fabs(bestnum), fabs((double)g[i])));
        if (best > maxdiff || isnan(best)) { maxdiff = isnan(best) ? INFINITY : best; worst = i; }
    }
    loss(ctx);
    const double rel = maxdiff / (scale > 1e-12 ? scale : 1e-12);
    t_check(rel <= tol && scale > 0, name, "fd max rel err %.2e (tol %.0e, %zu/%zu points, worst idx %zu, scale %.3g; "
            "step h alone %.1e)", rel, tol, pts, n, worst, scale, maxdiff_h / (scale > 1e-12 ? scale : 1e-12));
    return rel;
}

char *t_metrics_core(const char *dir) {
    char p[1024], line[8192];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    FILE *f = fopen(p, "r");
    if (!f) return NULL;
    char *out = NULL;
    size_t len = 0;
    FILE *o = open_memstream(&out, &len);
    if (!o) { fclose(f); return NULL; }
    while (fgets(line, sizeof line, f)) {
        char *cut = strstr(line, ",\"tokens_per_s\"");
        if (cut) *cut = 0;
        fprintf(o, "%s\n", line);
    }
    fclose(f);
    fclose(o);
    return out;
}

double t_metric(const char *dir, int step, const char *key) {
    char p[1024], line[8192], pre[64], k[128];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    snprintf(pre, sizeof pre, "{\"step\":%d,", step);
    snprintf(k, sizeof k, "\"%s\":", key);
    FILE *f = fopen(p, "r");
    double v = NAN;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, pre, strlen(pre))) continue;
        const char *s = strstr(line, k);
        if (s && strncmp(s + strlen(k), "null", 4)) v = atof(s + strlen(k));
    }
    if (f) fclose(f);
    return v;
}
