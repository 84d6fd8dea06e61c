/* core/dist.h — data-parallel processes: the one module that talks to MPI.
 *
 * Built with `make MPI=1` (-DANYREF_MPI=1, OpenMPI's mpicc flags) this wraps
 * MPI_COMM_WORLD; in the plain build it is a stub with one rank, so nothing
 * else in the tree includes <mpi.h> or needs MPI to build or run.
 *
 * What the trainer needs (train/train.c):
 *   - dist_init / dist_finalize around main (the command line only);
 *   - dist_rank / dist_size: which process this is, out of how many;
 *   - a dist_reducer: a float buffer (the gradient block) summed over the
 *     ranks in place by non-blocking all-reduces, one per bucket of `bucket`
 *     floats; dist_reducer_mark(lo, hi) tells it that floats [lo, hi) are
 *     final (backward produces gradients part by part), and every bucket
 *     whose floats are all final starts at once; dist_reducer_wait starts
 *     the rest and waits for all;
 *   - dist_sum: blocking sums of a few doubles (losses, counts, flags);
 *   - dist_barrier, dist_abort (ends every rank with this rank's message:
 *     the command line's answer to an error on one rank, instead of a hang);
 *   - dist_set_timeout: collectives that wait too long become errors;
 *   - dist_gather_bytes: variable-length byte buffers gathered to rank 0
 *     (the evaluation's per-sample results, eval/evaluate.c).
 * Depends on core/error.h; MPI only with ANYREF_MPI; NCCL and the CUDA
 * runtime only with ANYREF_NCCL (make CUDA=1 MPI=1). Thread use: call from the
 * training thread only (MPI_THREAD_FUNNELED). */
#ifndef ANYREF_CORE_DIST_H
#define ANYREF_CORE_DIST_H
#include <stddef.h>

/* Initialises MPI when built with it and started by a launcher (mpirun, or
 * srun: OMPI_COMM_WORLD_SIZE / PMI_SIZE / PMIX_RANK in the environment); a
 * process started alone is one rank of one without touching MPI. 0, or -1 +
 * ar_error. Later calls do nothing. */
int  dist_init(int *argc, char ***argv);
void dist_finalize(void);
int  dist_rank(void);                 /* 0 .. dist_size()-1 (0 without MPI) */
int  dist_size(void);                 /* 1 without MPI */
int  dist_mpi_built(void);            /* 1 when built with MPI=1 */

/* Collectives (dist_sum, dist_barrier, dist_reducer_wait) that wait longer
 * than this many seconds fail with an error naming the time-out, instead of
 * hanging on a stalled rank (0: wait forever, the default). */
void dist_set_timeout(double seconds);
/* Sums v[n] over the ranks in place (blocking). 0, or -1 + ar_error. */
int  dist_sum(double *v, int n);
int  dist_barrier(void);
/* Prints "rank r of n: msg" to stderr and ends every rank (MPI_Abort, exit
 * status 1). Without MPI, or with one rank, it prints nothing and returns:
 * the caller reports the error and exits as usual. */
void dist_abort(const char *msg);

/* Bucketed non-blocking sum-all-reduce of buf[n] (in place). */
typedef struct dist_reducer dist_reducer;
/* bucket: floats per MPI_Iallreduce (0: 4 Mi floats = 16 MiB). NULL + ar_error. */
dist_reducer *dist_reducer_new(float *buf, size_t n, size_t bucket);
void dist_reducer_free(dist_reducer *d);
/* Floats [lo, hi) of the buffer are final for this round: every bucket now
 * wholly final starts its all-reduce (higher buckets first). Every rank must
 * make the same calls in the same order; a float marked twice in a round is
 * an error. 0, or -1 + ar_error. */
int  dist_reducer_mark(dist_reducer *d, size_t lo, size_t hi);
/* Starts the remaining buckets and waits for every one; the next round may
 * then begin (buckets are started afresh). 0, or -1 + ar_error. */
int  dist_reducer_wait(dist_reducer *d);
/* Totals over the reducer's life: seconds spent inside dist_reducer_wait
 * (communication not hidden behind computation), rounds, bytes per round,
 * buckets started by dist_reducer_mark before the wait, buckets started.
 * Any pointer may be NULL. */
void dist_reducer_stats(const dist_reducer *d, double *wait_s, long *rounds, size_t *bytes, long *early, long *started);
/* GPUs: with `make CUDA=1 MPI=1` the toolkit's NCCL is built in
 * (dist_nccl_built) and dist_init gives each rank the GPU whose index is the
 * rank's index among the ranks of its machine (modulo the GPUs it sees).
 * dist_nccl_usable: NCCL is built in and every rank has a GPU of its own, no
 * other rank of its machine on the same device by UUID (so ranks that each
 * see one GPU through CUDA_VISIBLE_DEVICES qualify; a process started alone:
 * a GPU is present; NCCL refuses two ranks on one device, so ranks that share
 * GPUs sum through host memory and MPI instead). */
int  dist_nccl_built(void);
int  dist_nccl_usable(void);
/* A reducer over device memory: the same contract as dist_reducer_new (sums
 * over the ranks, dist_reducer_mark during backward,
 * dist_reducer_wait with the time-out), done by ncclAllReduce on a stream of
 * its own that waits for the work the compute stream had queued when the
 * bucket was made ready. Also for a single rank (a one-rank communicator).
 * NULL + ar_error when !dist_nccl_usable(). */
dist_reducer *dist_reducer_new_device(float *dbuf, size_t n, size_t bucket);

/* Gathers n bytes of buf from every rank to rank 0 (blocking; MPI_Igather of
 * the lengths, then MPI_Igatherv, with dist_set_timeout's time-out). On rank 0
 * *all (malloc'd, the caller frees) holds the ranks' buffers back to back in
 * rank order and counts[0 .. dist_size()-1] their lengths; on the other ranks
 * *all is NULL and counts is not touched (may be NULL). One rank: a copy of
 * buf. The total must stay below 2 GiB (MPI's int counts). 0, or -1 + ar_error. */
int  dist_gather_bytes(const void *buf, size_t n, char **all, size_t *counts);
#endif
