/* core/dist.c — see dist.h. With ANYREF_MPI: MPI_COMM_WORLD through OpenMPI;
 * without: one rank, the reducer a no-op. Depends on core/error.h, core/timer.h
 * and, with ANYREF_MPI, <mpi.h>. */
#include "core/dist.h"
#include "core/error.h"
#include "core/timer.h"
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef ANYREF_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_inited = 0, g_mpi = 0;   /* g_mpi: MPI_Init was called */
static double g_timeout = 0;   /* seconds a collective may wait (0: forever) */

void dist_set_timeout(double seconds) { g_timeout = seconds > 0 ? seconds : 0; }

int dist_mpi_built(void) {
#ifdef ANYREF_MPI
    return 1;
#else
    return 0;
#endif
}

#ifdef ANYREF_MPI
static int mpi_fail(int err, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", err);
    return ar_errorf("%s: %s", what, s);
}
#endif

#ifdef ANYREF_MPI
/* Waits for n requests; with a time-out, by polling (MPI_Testall, then short
 * sleeps once a millisecond has passed) so a stalled rank becomes an error. */
static int wait_reqs(int n, MPI_Request *req, const char *what) {
    int err;
    if (g_timeout <= 0) {
        if ((err = MPI_Waitall(n, req, MPI_STATUSES_IGNORE)) != MPI_SUCCESS) return mpi_fail(err, what);
        return 0;
    }
    const double t0 = ar_now();
    for (;;) {
        int flag = 0;
        if ((err = MPI_Testall(n, req, &flag, MPI_STATUSES_IGNORE)) != MPI_SUCCESS) return mpi_fail(err, what);
        if (flag) return 0;
        const double el = ar_now() - t0;
        if (el > g_timeout)
            return ar_errorf("%s: not every rank answered within %g s (dist.timeout_s): a rank is stalled or gone",
                             what, g_timeout);
        if (el > 1e-3) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
}
#endif

int dist_init(int *argc, char ***argv) {
    (void)g_mpi;
    if (g_inited) return 0;
    g_inited = 1;
#ifdef ANYREF_MPI
    /* a process not started by a launcher (mpirun, srun with PMI/PMIx) is one
     * rank: no singleton MPI_Init, which would start a daemon */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK"))
        return 0;
    g_mpi = 1;
    int provided = 0, err;
    if ((err = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)) != MPI_SUCCESS) return mpi_fail(err, "MPI_Init_thread");
    /* errors come back as codes (reported through ar_error), not the default abort */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
    (void)argc; (void)argv;
#endif
    return 0;
}

void dist_finalize(void) {
#ifdef ANYREF_MPI
    int fin = 0;
    if (g_mpi && (MPI_Finalized(&fin), !fin)) MPI_Finalize();
#endif
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

int dist_sum(double *v, int n) {
#ifdef ANYREF_MPI
    if (g_size > 1) {
        MPI_Request q;
        int err = MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &q);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Iallreduce (losses)");
        return wait_reqs(1, &q, "all-reduce of the losses");
    }
#else
    (void)v; (void)n;
#endif
    return 0;
}

int dist_barrier(void) {
#ifdef ANYREF_MPI
    if (g_size > 1) {
        MPI_Request q;
        int err = MPI_Ibarrier(MPI_COMM_WORLD, &q);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Ibarrier");
        return wait_reqs(1, &q, "barrier");
    }
#endif
    return 0;
}

void dist_abort(const char *msg) {
#ifdef ANYREF_MPI
    if (g_size > 1) {
        fprintf(stderr, "anyref: rank %d of %d failed: %s\n", g_rank, g_size, msg);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#else
    (void)msg;
#endif
}

struct dist_reducer {
    float *buf;
    size_t n, bucket;
    int nb, next;     /* buckets; buckets started from the end (nb-1 down to nb-next) */
    double wait_s;
    long rounds, early, started;   /* buckets started before dist_reducer_wait / in all */
    int in_wait;
#ifdef ANYREF_MPI
    MPI_Request *req;
#endif
};

dist_reducer *dist_reducer_new(float *buf, size_t n, size_t bucket) {
    dist_reducer *d = calloc(1, sizeof *d);
    if (!d) { ar_errorf("out of memory"); return NULL; }
    d->buf = buf; d->n = n;
    d->bucket = bucket ? bucket : (size_t)4 << 20;
    if (d->bucket > ((size_t)1 << 30)) d->bucket = (size_t)1 << 30;   /* an int count */
    d->nb = (int)((n + d->bucket - 1) / d->bucket);
#ifdef ANYREF_MPI
    d->req = malloc(sizeof(MPI_Request) * (size_t)(d->nb ? d->nb : 1));
    if (!d->req) { free(d); ar_errorf("out of memory"); return NULL; }
    for (int i = 0; i < d->nb; i++) d->req[i] = MPI_REQUEST_NULL;
#endif
    return d;
}

void dist_reducer_free(dist_reducer *d) {
    if (!d) return;
#ifdef ANYREF_MPI
    /* buckets still in flight: a round that failed (a time-out), and the
     * process is about to end every rank (dist_abort); waiting could hang and
     * MPI may still write into the requests, so they are left alone */
    if (d->next) { free(d); return; }
    free(d->req);
#endif
    free(d);
}

/* Buckets are started from the last one down: the order backward finalises them. */
int dist_reducer_ready(dist_reducer *d, size_t from) {
    if (!d || g_size <= 1) return 0;
#ifdef ANYREF_MPI
    while (d->next < d->nb) {
        int b = d->nb - 1 - d->next;
        size_t lo = (size_t)b * d->bucket, hi = lo + d->bucket < d->n ? lo + d->bucket : d->n;
        if (lo < from) break;
        int err = MPI_Iallreduce(MPI_IN_PLACE, d->buf + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &d->req[b]);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Iallreduce");
        d->next++;
        d->started++;
        d->early += !d->in_wait;
    }
    if (d->next) {   /* let the library move the ones in flight along */
        int flag;
        MPI_Testall(d->nb, d->req, &flag, MPI_STATUSES_IGNORE);
    }
#else
    (void)from;
#endif
    return 0;
}

int dist_reducer_wait(dist_reducer *d) {
    if (!d || g_size <= 1) return 0;
    d->in_wait = 1;
    int rc = dist_reducer_ready(d, 0);
    d->in_wait = 0;
    if (rc) return -1;
    const double t0 = ar_now();
#ifdef ANYREF_MPI
    if (wait_reqs(d->nb, d->req, "gradient all-reduce")) return -1;
#endif
    d->wait_s += ar_now() - t0;
    d->rounds++;
    d->next = 0;
    return 0;
}

void dist_reducer_stats(const dist_reducer *d, double *wait_s, long *rounds, size_t *bytes, long *early, long *started) {
    if (early) *early = d ? d->early : 0;
    if (started) *started = d ? d->started : 0;
    if (wait_s) *wait_s = d ? d->wait_s : 0;
    if (rounds) *rounds = d ? d->rounds : 0;
    if (bytes) *bytes = d ? d->n * sizeof(float) : 0;
}

int dist_gather_bytes(const void *buf, size_t n, char **all, size_t *counts) {
    *all = NULL;
#ifdef ANYREF_MPI
    if (g_size > 1) {
        if (n > INT_MAX) return ar_errorf("gather: %zu bytes on rank %d (MPI counts are int)", n, g_rank);
        long long mine = (long long)n, *ln = NULL;
        int *cnt = NULL, *disp = NULL, err, rc = -1;
        MPI_Request q;
        if (g_rank == 0 && !(ln = malloc(sizeof *ln * (size_t)g_size))) return ar_errorf("out of memory");
        if ((err = MPI_Igather(&mine, 1, MPI_LONG_LONG, ln, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD, &q)) != MPI_SUCCESS) {
            free(ln);
            return mpi_fail(err, "MPI_Igather (lengths)");
        }
        if (wait_reqs(1, &q, "gather of the lengths")) { free(ln); return -1; }
        if (g_rank == 0) {
            long long tot = 0;
            for (int r = 0; r < g_size; r++) tot += ln[r];
            if (tot > INT_MAX) { ar_errorf("gather: %lld bytes in all (MPI counts are int)", tot); goto out; }
            cnt = malloc(sizeof *cnt * (size_t)g_size);
            disp = malloc(sizeof *disp * (size_t)g_size);
            *all = malloc(tot ? (size_t)tot : 1);
            if (!cnt || !disp || !*all) { ar_errorf("out of memory"); goto out; }
            for (int r = 0, off = 0; r < g_size; off += cnt[r], r++) {
                cnt[r] = (int)ln[r];
                disp[r] = off;
                counts[r] = (size_t)ln[r];
            }
        }
        if ((err = MPI_Igatherv(buf, (int)n, MPI_BYTE, *all, cnt, disp, MPI_BYTE, 0, MPI_COMM_WORLD, &q)) != MPI_SUCCESS) {
            mpi_fail(err, "MPI_Igatherv");
            goto out;
        }
        if (wait_reqs(1, &q, "gather of the results")) goto out;
        rc = 0;
    out:
        if (rc) { free(*all); *all = NULL; }
        free(ln); free(cnt); free(disp);
        return rc;
    }
#endif
    if (!(*all = malloc(n ? n : 1))) return ar_errorf("out of memory");
    if (n) memcpy(*all, buf, n);
    counts[0] = n;
    return 0;
}
