/* bench/bench_util.h — what bench_kernels.c, bench_llama.c, bench_sam.c and bench_encoders.c share:
 * medians, peak RSS and the sgemm ceiling (the denominator of every "% of
 * ceiling" the benchmarks print). Header-only: each bench is one program. */
#ifndef ANYREF_BENCH_UTIL_H
#define ANYREF_BENCH_UTIL_H
#include "core/rng.h"
#include "core/timer.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static inline int bu_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of t[0..n) (t is left as it is). */
static inline double bu_median(const double *t, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    memcpy(s, t, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bu_cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static inline double bu_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;    /* Linux: KiB */
}

/* The GEMM ceiling: cblas_sgemm at square and LLM-shaped sizes, best of 3-20
 * runs (as many as fit in target_s) after a warm-up. Prints one
 * "kernel=sgemm ..." line per size and "# c.ceiling_gflops=..."; returns the
 * best GFLOP/s. */
static inline double bu_sgemm_ceiling(ar_rng *rng, double target_s) {
    static const int shapes[][3] = {   /* M, N, K: C[M,N] = A[M,K] @ B[K,N] */
        {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {2048, 2048, 2048},
        {512, 4096, 4096},    /* 512 tokens through a 4096x4096 projection (7B q/k/v/o) */
        {512, 11008, 4096},   /* 7B MLP gate/up */
        {512, 32000, 1024},   /* lm_head of the small model */
    };
    const char *ct = getenv("OPENBLAS_CORETYPE");
    double ceiling = 0.0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        float *A = malloc((size_t)M * K * sizeof(float));
        float *B = malloc((size_t)K * N * sizeof(float));
        float *C = calloc((size_t)M * N, sizeof(float));
        if (!A || !B || !C) { fprintf(stderr, "bench: out of memory (sgemm)\n"); exit(1); }
        rng_fill_uniform(rng, A, (size_t)M * K, -1, 1);
        rng_fill_uniform(rng, B, (size_t)K * N, -1, 1);
#define BU_SGEMM() cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, \
                               1.0f, A, K, B, N, 0.0f, C, N)
        BU_SGEMM();
        double t0 = ar_now();
        BU_SGEMM();
        double best = ar_now() - t0;
        double r = target_s / (best > 1e-7 ? best : 1e-7);
        int reps = r < 3 ? 3 : r > 20 ? 20 : (int)r;
        for (int k = 0; k < reps; k++) {
            t0 = ar_now();
            BU_SGEMM();
            double t = ar_now() - t0;
            if (t < best) best = t;
        }
#undef BU_SGEMM
        double gflops = 2.0 * M * N * K / best * 1e-9;
        if (gflops > ceiling) ceiling = gflops;
        printf("kernel=sgemm shape=%dx%dx%d fwd_ms=%.4f fwdbwd_ms=- reps=%d gflops=%.1f "
               "coretype=%s corename=%s\n", M, N, K, best * 1e3, reps, gflops,
               ct && *ct ? ct : "unset", openblas_get_corename());
        fflush(stdout);
        free(A); free(B); free(C);
    }
    printf("# c.ceiling_gflops=%.1f\n", ceiling);
    return ceiling;
}
#endif
