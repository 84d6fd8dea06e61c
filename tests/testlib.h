/* tests/testlib.h — the small test framework every tests/test_*.c uses.
 * A check prints one line: "ok   <name> <detail>" or "FAIL <name> <detail>";
 * tests/run.sh counts them. main() returns t_exit_code(). */
#ifndef ANYREF_TESTLIB_H
#define ANYREF_TESTLIB_H
#include <stddef.h>
#include <stdint.h>

void t_ok(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void t_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints ok or FAIL depending on cond; returns cond. */
int  t_check(int cond, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int  t_exit_code(void);           /* 1 if any check failed */

/* Deterministic test data (splitmix64-based). */
void t_fill_normal(float *x, size_t n, float std, uint64_t seed);
void t_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);
float *t_alloc(size_t n);          /* zeroed, aborts the test on OOM */

/* Relative error of a against reference b: max_i |a-b| / max(max_i |b|, tiny).
 * The denominator is the tensor's scale, so tiny entries do not dominate. */
double t_max_rel_err(const float *a, const float *b, size_t n);
double t_max_rel_err_d(const float *a, const double *b, size_t n);

/* Finite-difference gradient check.
 * loss(ctx) must run the forward from the current inputs and return a scalar
 * computed in double (typically Σ out·r for a fixed random r). For the array
 * x[n] with analytic gradient g[n] (already computed by the backward), checks
 * up to max_points evenly spaced entries with central differences of step eps.
 * Prints one ok/FAIL line named name, with the max relative error; returns it. */
typedef double (*t_loss_fn)(void *ctx);
double t_gradcheck(const char *name, t_loss_fn loss, void *ctx, float *x, const float *g,
                   size_t n, float eps, double tol, size_t max_points);
/* The same for losses that run through many ReLUs (whole-model steps): central
 * differences at steps h, h/2 and h/4, a point passing on the quotient nearest
 * the analytic gradient. A ReLU kink within one step makes that quotient
 * measure the kink, not the gradient; a smaller step avoids it (much below
 * h/4 float32 rounding of the loss dominates). A wrong gradient matches none
 * of the three. Also prints the error of step h alone. */
double t_gradcheck_kinked(const char *name, t_loss_fn loss, void *ctx, float *x, const float *g, size_t n,
                          float h, double tol, size_t max_points);
/* A training run's <dir>/metrics.jsonl (train/train.c): every line cut
 * before the timing fields ("tokens_per_s" on), which differ between runs by
 * nature; NULL if unreadable (free it). */
char  *t_metrics_core(const char *dir);
/* The value of "key" in the line of `step`; NaN if absent or null. */
double t_metric(const char *dir, int step, const char *key);
/* Σ out[i]*r[i] in double. */
double t_dot(const float *out, const float *r, size_t n);
#endif
