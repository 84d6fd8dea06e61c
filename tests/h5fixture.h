/* tests/h5fixture.h — reading the PyTorch reference fixtures (tests/fixtures/<name>.h5,
 * written by tests/ref/ through `make fixtures`) in the parity tests.
 *
 * Every helper that finds the fixture unusable (missing, damaged, shaped or
 * configured unlike the model the test builds) prints one FAIL line named
 * "<prefix>fixtures" that says what is wrong and to regenerate the file, and
 * returns failure; the comparisons print "ok"/"FAIL <prefix><label>" lines
 * through tests/testlib.h. Run from the repo root (the paths are relative). */
#ifndef ANYREF_H5FIXTURE_H
#define ANYREF_H5FIXTURE_H
#include "model/params.h"

#include <hdf5.h>
#include <stddef.h>

typedef struct {
    hid_t file;          /* the open fixture, -1 when closed */
    const char *path;    /* e.g. "tests/fixtures/llama.h5" */
    const char *prefix;  /* check-name prefix, with its trailing space: "llama_parity " */
    /* fx_check_step: gradients of the tensors whose names start with one of
     * these (NULL-terminated; NULL: none) are held to loose_tol instead */
    const char *const *loose;
    double loose_tol;
} h5fixture;

/* Opens path read-only and switches off HDF5's automatic error printing.
 * Returns 1, or 0 after a FAIL line (missing or unreadable: `make fixtures`). */
/* Dataset name under loc, whatever its shape, as floats: *out malloc'd (caller
 * frees), *n elements. 0, or -1 when it is missing or unreadable. */
int   h5_read_floats(hid_t loc, const char *name, float **out, hssize_t *n);
int   fx_open(h5fixture *fx, const char *path, const char *prefix);
void  fx_close(h5fixture *fx);

/* FAIL "<prefix>fixtures": "<what>: <why> in <path> (regenerate with `make fixtures`)". */
void  fx_bad(const h5fixture *fx, const char *what, const char *why);

/* Reads dataset ds into dst as memtype after checking it has exactly the
 * dimensions shape[ndim]. Returns 1, or 0 after a FAIL line. */
int   fx_read(const h5fixture *fx, const char *ds, hid_t memtype, void *dst, int ndim, const int *shape);
/* Length of the 1-D dataset ds, or -1 after a FAIL line. */
int   fx_len(const h5fixture *fx, const char *ds);
/* Reads the file's attribute name as memtype. Returns 1, or 0 after a FAIL line. */
int   fx_attr(const h5fixture *fx, const char *name, hid_t memtype, void *dst);

/* The fixture must describe the model the test builds: each int attribute
 * must equal its value, each float attribute (stored as a double) must round
 * to its value. One FAIL line per mismatch; returns 1 if all match. */
typedef struct { const char *name; int value; } fx_int_attr;
typedef struct { const char *name; float value; } fx_float_attr;
int   fx_check_config(const h5fixture *fx, const fx_int_attr *iv, size_t ni, const fx_float_attr *fv,
                      size_t nf);

/* Uploads every registry tensor from params/<name> (float32, shape checked),
 * then checks that every tensor in params/ is in the registry and, for each
 * group in the NULL-terminated list grad_groups (may be NULL), that every
 * tensor in it is trainable in the registry. Prints "ok <prefix>load" and
 * returns 1 if all of it holds; 0 after FAIL lines otherwise. */
int   fx_load_params(const h5fixture *fx, ar_params *ps, const char *const *grad_groups);

/* malloc that ends the test ("FAIL <prefix>out of memory") on failure. */
void *fx_alloc(const h5fixture *fx, size_t bytes);
/* Fixture-free copies for device-capable tests: a new backend buffer holding
 * host[n] (k_free it), and a new host buffer holding the backend's dev[n]
 * after k_sync (free it). Both end the test on out-of-memory. */
float *t_dev_copy(const float *host, size_t n);
float *t_host_copy(const float *dev, size_t n);
/* A new backend buffer of n 0/1 floats, 1 where a uniform draw (t_fill_uniform,
 * seed) is below p: the planted ground-truth masks of the AnyRef step tests. */
float *t_dev_mask(size_t n, uint64_t seed, float p);
/* The 16-bit weight storage of a frozen module (cfg.frozen_half). a and b hold
 * the same declarations and draws, b with some tensors in 16 bits: t_round_like
 * gives a's copies of b's 16-bit tensors b's rounded values and returns how
 * many there are. t_check_half then runs fwd(ctx, 0) (a), fwd(ctx, 1) (b) and,
 * in the GEMM mode `fmt` ("bf16" / "fp16"), fwd(ctx, 1) again (each returns the
 * module's backend output of n floats, NULL + ar_error on failure) and checks:
 * n16 == want16, b's output equals a's (the CPU: bitwise; the GPU: 1e-6), b's
 * weights take fewer bytes, and the 16-bit GEMM mode's output is within 2e-2
 * of it and not equal (the activations were rounded). */
int  t_round_like(ar_params *a, const ar_params *b);
void t_check_half(const char *name, const char *fmt, float *(*fwd)(void *ctx, int which), void *ctx, size_t n,
                  int n16, int want16, const ar_params *a, const ar_params *b);
/* The n floats at backend pointer dev, after k_sync, in a new host buffer (free it). */
float *fx_download(const h5fixture *fx, const float *dev, size_t n);

/* "<prefix><label>": host h[n] against reference ref[n], ok when
 * t_max_rel_err_d <= tol and the reference is not all zeros; prints
 * "max rel err E (tol T, ref max M)". */
void  fx_report(const h5fixture *fx, const char *label, const float *h, const double *ref, size_t n,
                double tol);
/* Backend tensor dev (shape[ndim]) against float64 dataset ds, as fx_report. */
void  fx_check(const h5fixture *fx, const char *label, const char *ds, const float *dev, int ndim,
               const int *shape, double tol);
/* One training step's results against group grp of the fixture: grp/losses
 * [4] (ce, bce, dice, total; got[4] in that order, rel err <= loss_tol each)
 * and, for every trainable registry tensor, grp/grads/<name> (fx_report with
 * grad_tol; a reference that is all zeros requires exactly zero on the C side
 * too). Reports the counts of trainable and exactly-zero tensors and the worst
 * gradient rel err. Labels "<prefix><grp> <what>". */
void  fx_check_step(const h5fixture *fx, const char *grp, const ar_params *ps, const double got[4],
                    double loss_tol, double grad_tol, int *n_trainable, int *n_zero, double *worst);
#endif
