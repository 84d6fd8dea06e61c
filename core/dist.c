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
#ifdef ANYREF_NCCL   /* make CUDA=1 MPI=1: the toolkit's NCCL for device buffers */
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

static int g_rank = 0, g_size = 1, g_inited = 0, g_mpi = 0;   /* g_mpi: MPI_Init was called */
static double g_timeout = 0;   /* seconds a collective may wait (0: forever) */
#ifdef ANYREF_NCCL
static int g_own_gpu = 0;      /* every rank has a GPU of its own (dist_init) */
static int g_device = -1;      /* this rank's CUDA device */
static ncclComm_t g_nccl;      /* created by the first device reducer */
#endif

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

#ifdef ANYREF_NCCL
/* One GPU per rank: the rank's index among the ranks of its machine picks the
 * device, before the CUDA backend makes its first call. A rank has a GPU of
 * its own when no other rank of its machine uses the same device, compared by
 * UUID: ranks that each see every GPU (lsize <= ndev) qualify, and so do ranks
 * that each see only their own (CUDA_VISIBLE_DEVICES per rank, srun
 * --gpus-per-task=1: ndev = 1, device 0 everywhere, but different GPUs). When
 * ranks do share devices, gradients go through host memory and MPI instead
 * (NCCL refuses two ranks on one device). */
static int pick_gpu(void) {
    MPI_Comm node;
    int lrank = 0, lsize = 1, ndev = 0, own = 0, err;
    if ((err = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Comm_split_type (ranks per machine)");
    MPI_Comm_rank(node, &lrank);
    MPI_Comm_size(node, &lsize);
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) ndev = 0;
    unsigned char uuid[16] = {0};
    if (ndev > 0) {
        g_device = lsize <= ndev ? lrank : lrank % ndev;
        cudaError_t ce = cudaSetDevice(g_device);
        if (ce != cudaSuccess) {
            MPI_Comm_free(&node);
            return ar_errorf("rank %d: cudaSetDevice(%d): %s", g_rank, g_device, cudaGetErrorString(ce));
        }
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, g_device) == cudaSuccess) {
            memcpy(uuid, &prop.uuid, sizeof uuid);
            own = 1;
        }
    }
    unsigned char *all = malloc(sizeof uuid * (size_t)lsize);
    if (!all) { MPI_Comm_free(&node); return ar_errorf("out of memory"); }
    err = MPI_Allgather(uuid, (int)sizeof uuid, MPI_BYTE, all, (int)sizeof uuid, MPI_BYTE, node);
    MPI_Comm_free(&node);
    if (err != MPI_SUCCESS) { free(all); return mpi_fail(err, "MPI_Allgather (GPU ids per machine)"); }
    for (int r = 0; r < lsize && own; r++)
        if (r != lrank && !memcmp(all + sizeof uuid * (size_t)r, uuid, sizeof uuid)) own = 0;
    free(all);
    if ((err = MPI_Allreduce(MPI_IN_PLACE, &own, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Allreduce (GPUs per rank)");
    g_own_gpu = own;
    return 0;
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
#ifdef ANYREF_NCCL
    if (pick_gpu()) return -1;
#endif
#else
    (void)argc; (void)argv;
#endif
    return 0;
}

void dist_finalize(void) {
#ifdef ANYREF_NCCL
    if (g_nccl) { ncclCommDestroy(g_nccl); g_nccl = NULL; }
#endif
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

/* ------------------------------------------------------ NCCL (GPUs): set-up */
int dist_nccl_built(void) {
#ifdef ANYREF_NCCL
    return 1;
#else
    return 0;
#endif
}

int dist_nccl_usable(void) {
#ifdef ANYREF_NCCL
    if (!g_mpi) {   /* one process started alone: a one-rank communicator */
        int ndev = 0;
        return cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
    }
    return g_own_gpu;
#else
    return 0;
#endif
}

#ifdef ANYREF_NCCL
static int nccl_fail(ncclResult_t r, const char *what) {
    const char *last = ncclGetLastError(g_nccl);
    return ar_errorf("%s: %s%s%s", what, ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}
static int cuda_fail(cudaError_t e, const char *what) { return ar_errorf("%s: %s", what, cudaGetErrorString(e)); }

/* The communicator: rank 0's unique id reaches the others over MPI (with the
 * module's time-out), then every rank joins. */
static int nccl_comm(void) {
    if (g_nccl) return 0;
    ncclUniqueId id;
    ncclResult_t nr;
    if (g_rank == 0 && (nr = ncclGetUniqueId(&id)) != ncclSuccess) return nccl_fail(nr, "ncclGetUniqueId");
#ifdef ANYREF_MPI
    if (g_size > 1) {
        MPI_Request q;
        int err = MPI_Ibcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD, &q);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Ibcast (NCCL id)");
        if (wait_reqs(1, &q, "NCCL set-up")) return -1;
    }
#endif
    if ((nr = ncclCommInitRank(&g_nccl, g_size, id, g_rank)) != ncclSuccess) {
        g_nccl = NULL;
        return nccl_fail(nr, "ncclCommInitRank");
    }
    return 0;
}
#endif

/* ------------------------------------------------------------ the reducer */
struct dist_reducer {
    float *buf;
    size_t n, bucket;
    int nb;           /* buckets */
    size_t *done;     /* [nb] floats of each bucket marked final this round */
    unsigned char *go;/* [nb] started this round */
    int *list;        /* [nb] scratch: the buckets one call starts */
    int nstarted;     /* buckets started this round */
    double wait_s;
    long rounds, early, started;   /* buckets started before dist_reducer_wait / in all */
    int in_wait;
#ifdef ANYREF_MPI
    MPI_Request *req;
#endif
    int dev;          /* device buffer, NCCL (dist_reducer_new_device) */
#ifdef ANYREF_NCCL
    cudaStream_t s;   /* the all-reduces' own stream */
    cudaEvent_t ev;   /* marks "gradients so far" on the compute stream */
#endif
};

static size_t bucket_lo(const dist_reducer *d, int b) { return (size_t)b * d->bucket; }
static size_t bucket_hi(const dist_reducer *d, int b) {
    size_t hi = (size_t)(b + 1) * d->bucket;
    return hi < d->n ? hi : d->n;
}

static dist_reducer *reducer_alloc(float *buf, size_t n, size_t bucket) {
    dist_reducer *d = calloc(1, sizeof *d);
    if (!d) { ar_errorf("out of memory"); return NULL; }
    d->buf = buf; d->n = n;
    d->bucket = bucket ? bucket : (size_t)4 << 20;
    if (d->bucket > ((size_t)1 << 30)) d->bucket = (size_t)1 << 30;   /* an int count (MPI) */
    d->nb = (int)((n + d->bucket - 1) / d->bucket);
    const size_t nb = (size_t)(d->nb ? d->nb : 1);
    d->done = calloc(nb, sizeof *d->done);
    d->go = calloc(nb, 1);
    d->list = malloc(nb * sizeof *d->list);
#ifdef ANYREF_MPI
    d->req = malloc(sizeof(MPI_Request) * nb);
    if (d->req) for (size_t i = 0; i < nb; i++) d->req[i] = MPI_REQUEST_NULL;
    if (!d->req) { free(d->done); d->done = NULL; }
#endif
    if (!d->done || !d->go || !d->list) {
        free(d->done); free(d->go); free(d->list);
#ifdef ANYREF_MPI
        free(d->req);
#endif
        free(d);
        ar_errorf("out of memory");
        return NULL;
    }
    return d;
}

dist_reducer *dist_reducer_new(float *buf, size_t n, size_t bucket) { return reducer_alloc(buf, n, bucket); }

void dist_reducer_free(dist_reducer *d) {
    if (!d) return;
#ifdef ANYREF_NCCL
    if (d->dev) {
        if (d->ev) cudaEventDestroy(d->ev);
        if (d->s) cudaStreamDestroy(d->s);
    }
#endif
#ifdef ANYREF_MPI
    /* buckets still in flight: a round that failed (a time-out), and the
     * process is about to end every rank (dist_abort); waiting could hang and
     * MPI may still write into the requests, so they are left alone */
    if (!d->dev && d->nstarted) { free(d->done); free(d->go); free(d->list); free(d); return; }
    free(d->req);
#endif
    free(d->done); free(d->go); free(d->list);
    free(d);
}

/* Starts the k buckets in d->list (in that order: every rank makes the same
 * calls in the same order, as collectives require). */
static int start_buckets(dist_reducer *d, int k) {
    if (!k) return 0;
#ifdef ANYREF_NCCL
    if (d->dev) {
        cudaError_t ce;
        ncclResult_t nr;
        /* everything the compute stream has queued so far (the backward
         * kernels that made these gradients) comes before the all-reduces */
        if ((ce = cudaEventRecord(d->ev, 0)) != cudaSuccess || (ce = cudaStreamWaitEvent(d->s, d->ev, 0)) != cudaSuccess)
            return cuda_fail(ce, "gradient all-reduce: ordering after backward");
        if ((nr = ncclGroupStart()) != ncclSuccess) return nccl_fail(nr, "ncclGroupStart");
        for (int i = 0; i < k; i++) {
            const int b = d->list[i];
            const size_t lo = bucket_lo(d, b), hi = bucket_hi(d, b);
            if ((nr = ncclAllReduce(d->buf + lo, d->buf + lo, hi - lo, ncclFloat, ncclSum, g_nccl, d->s)) != ncclSuccess) {
                ncclGroupEnd();
                return nccl_fail(nr, "ncclAllReduce (gradients)");
            }
            d->go[b] = 1;
            d->nstarted++;
            d->started++;
            d->early += !d->in_wait;
        }
        if ((nr = ncclGroupEnd()) != ncclSuccess) return nccl_fail(nr, "ncclGroupEnd (gradients)");
        return 0;
    }
#endif
#ifdef ANYREF_MPI
    for (int i = 0; i < k; i++) {
        const int b = d->list[i];
        const size_t lo = bucket_lo(d, b), hi = bucket_hi(d, b);
        int err = MPI_Iallreduce(MPI_IN_PLACE, d->buf + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &d->req[b]);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Iallreduce");
        d->go[b] = 1;
        d->nstarted++;
        d->started++;
        d->early += !d->in_wait;
    }
    int flag;   /* let the library move the ones in flight along */
    MPI_Testall(d->nb, d->req, &flag, MPI_STATUSES_IGNORE);
#endif
    return 0;
}

static int active(const dist_reducer *d) { return d && (d->dev || g_size > 1); }

int dist_reducer_mark(dist_reducer *d, size_t lo, size_t hi) {
    if (!active(d)) return 0;
    if (hi > d->n) hi = d->n;
    if (lo >= hi) return 0;
    int k = 0;
    const int b0 = (int)(lo / d->bucket), b1 = (int)((hi - 1) / d->bucket);
    for (int b = b1; b >= b0; b--) {   /* from the end: the order backward finalises the block */
        const size_t blo = bucket_lo(d, b), bhi = bucket_hi(d, b);
        const size_t a = lo > blo ? lo : blo, e = hi < bhi ? hi : bhi;
        d->done[b] += e - a;
        if (d->done[b] > bhi - blo)
            return ar_errorf("gradient all-reduce: floats [%zu, %zu) marked final twice in one step", lo, hi);
        if (d->done[b] == bhi - blo && !d->go[b]) d->list[k++] = b;
    }
    return start_buckets(d, k);
}


int dist_reducer_wait(dist_reducer *d) {
    if (!active(d)) return 0;
    int k = 0;
    for (int b = d->nb - 1; b >= 0; b--)
        if (!d->go[b]) d->list[k++] = b;
    d->in_wait = 1;
    int rc = start_buckets(d, k);
    d->in_wait = 0;
    if (rc) return -1;
    const double t0 = ar_now();
#ifdef ANYREF_NCCL
    if (d->dev) {   /* polls the stream: a stalled rank becomes an error (the communicator aborted) */
        for (;;) {
            cudaError_t ce = cudaStreamQuery(d->s);
            if (ce == cudaSuccess) break;
            if (ce != cudaErrorNotReady) return cuda_fail(ce, "gradient all-reduce");
            ncclResult_t ae = ncclSuccess;
            if (ncclCommGetAsyncError(g_nccl, &ae) == ncclSuccess && ae != ncclSuccess && ae != ncclInProgress) {
                ncclCommAbort(g_nccl);
                g_nccl = NULL;
                return ar_errorf("gradient all-reduce (NCCL): %s", ncclGetErrorString(ae));
            }
            const double el = ar_now() - t0;
            if (g_timeout > 0 && el > g_timeout) {
                ncclCommAbort(g_nccl);
                g_nccl = NULL;
                return ar_errorf("gradient all-reduce (NCCL): not every rank answered within %g s (dist.timeout_s): a "
                                 "rank is stalled or gone", g_timeout);
            }
            if (el > 1e-3) {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
            }
        }
    } else
#endif
    {
#ifdef ANYREF_MPI
        if (wait_reqs(d->nb, d->req, "gradient all-reduce")) return -1;
#endif
    }
    d->wait_s += ar_now() - t0;
    d->rounds++;
    d->nstarted = 0;
    memset(d->done, 0, sizeof *d->done * (size_t)(d->nb ? d->nb : 1));
    memset(d->go, 0, (size_t)(d->nb ? d->nb : 1));
    return 0;
}

dist_reducer *dist_reducer_new_device(float *dbuf, size_t n, size_t bucket) {
#ifdef ANYREF_NCCL
    if (!dist_nccl_usable()) {
        ar_errorf("NCCL: the ranks do not each have a GPU of their own (ranks on a machine share GPUs)");
        return NULL;
    }
    if (nccl_comm()) return NULL;
    dist_reducer *d = reducer_alloc(dbuf, n, bucket);
    if (!d) return NULL;
    d->dev = 1;
    cudaError_t ce;
    if ((ce = cudaStreamCreateWithFlags(&d->s, cudaStreamNonBlocking)) != cudaSuccess ||
        (ce = cudaEventCreateWithFlags(&d->ev, cudaEventDisableTiming)) != cudaSuccess) {
        cuda_fail(ce, "NCCL reducer: stream/event");
        dist_reducer_free(d);
        return NULL;
    }
    return d;
#else
    (void)dbuf; (void)n; (void)bucket;
    ar_errorf("NCCL is not built in (make CUDA=1 MPI=1)");
    return NULL;
#endif
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
