/* data/token_dataset.h — pre-tokenized training data: the HDF5 format, its
 * reader (rows, deterministic shuffled batches with a resumable cursor) and
 * its writer.
 *
 * FILE FORMAT (one HDF5 file; names are exact, everything else is ignored)
 *
 *   /input_ids       int32 [N, T]   token ids. N >= 1 rows, T >= 2 positions.
 *                                   Any byte order; other integer widths
 *                                   (int8/16/64, unsigned) are refused.
 *   /labels          int32 [N, T]   same shape. labels[i][t] is the target for
 *                                   *predicting token t* — NOT shifted, the
 *                                   Hugging Face convention (labels == ids on
 *                                   the supervised span, -100 elsewhere).
 *                                   -100 = no loss at that position.
 *   /attention_mask  optional, [N, T], any integer width (int8, uint8, int32,
 *                                   ...) or h5py's bool. 1 = real token,
 *                                   0 = padding. Pads are on the right: a row's
 *                                   mask must be 1...1 0...0 with at least one 1.
 *                                   Without this dataset every position is real.
 *   root attributes  optional integer scalars:
 *     vocab_size     the tokenizer's vocabulary size, >= 1. Larger than the
 *                    model's vocabulary -> tds_open refuses the file. When
 *                    present, ids and labels are checked against it (it is the
 *                    tighter bound), otherwise against the model's.
 *     pad_id         the token written into padded positions, in [0, vocab).
 *                    Default 0.
 *
 *   Storage is free (contiguous or chunked, any filter HDF5 can read); the
 *   writer here uses chunks of whole rows (about 16 KiB, at least one row) with the
 *   shuffle + gzip filters, so a random row costs one small decompression.
 *
 * WHAT THE READER RETURNS FOR ROW i AT SEQUENCE LENGTH Tc
 *   L = the row's real length (leading ones of the mask, or T).
 *   tokens[t]  = input_ids[i][t]      for t < min(L, Tc), else pad_id (or 0)
 *   targets[t] = labels[i][t + 1]     for t + 1 < L and t < Tc, else -100
 *   i.e. next-token targets: position t is trained to predict token t+1.
 *   Tc < L truncates the row (the last kept position still predicts token Tc,
 *   which exists in the row); Tc > T right-pads with pad_id / -100. Right
 *   padding under causal attention changes no real position, so the model
 *   needs no mask. labels[i][0] is never a target (nothing precedes token 0).
 *
 *   A row is BROKEN (skipped by tds_next_batch, reported by tds_read_row) if
 *   its mask holds a value other than 0/1, is not a prefix of ones, or is all
 *   zeros; a real position holds an id outside [0, vocab) or a label that is
 *   neither -100 nor inside [0, vocab); or it yields no supervised target at
 *   Tc (every label from position 1 on is -100, a single real token, or the
 *   supervised span lies beyond a truncation to Tc). Padded positions
 *   (mask 0) are never checked: their ids and labels are ignored.
 *
 * SHUFFLING AND RESUMING
 *   Epoch e visits the rows in the order of a permutation of [0, N): start
 *   from the identity, seed an ar_rng with rng_derive(seed, e), then for
 *   k = N-1 down to 1 swap order[k] with order[rng_below(rng, k + 1)].
 *   A tds_cursor (plain data: copy it into a checkpoint and back) says where
 *   the stream stands; the same file, seed and cursor give the same batches,
 *   bit for bit, across runs and after reopening the file.
 *
 * Errors: functions return -1 / NULL with a message in ar_error() naming the
 * file, the dataset or attribute and what was expected; nothing exits.
 * HDF5's serial library is not thread-safe: use a handle (and HDF5 at all)
 * from one thread at a time. Depends on core/ (error, log, rng, fs) and HDF5.
 */
#ifndef ANYREF_DATA_TOKEN_DATASET_H
#define ANYREF_DATA_TOKEN_DATASET_H

#include <stdint.h>

#define TDS_IGNORE (-100)   /* label / target with no loss */

typedef struct token_dataset token_dataset;

/* Opens and validates path against a model with vocab_size tokens (>= 1):
 * both datasets present, int32, 2-D, equal shapes, N >= 1, T >= 2; the mask
 * (if any) an integer or bool of the same shape; the attributes integers in
 * range. NULL + ar_error on any problem. Row contents are checked when read. */
token_dataset *tds_open(const char *path, int vocab_size);
void    tds_close(token_dataset *ds);          /* NULL is fine */
int64_t tds_rows(const token_dataset *ds);     /* N */
int     tds_seq_len(const token_dataset *ds);  /* the file's T */
int     tds_pad_id(const token_dataset *ds);   /* pad_id attribute, or 0 */

/* Row i (0 <= i < N) at sequence length T (>= 1) into tokens[T], targets[T]
 * as described above. Returns 0 = ok; 1 = the row is broken (message
 * "token dataset <path>: row <i>: <reason>" in ar_error; the buffers then
 * hold padding only); -1 = I/O error or bad arguments (ar_error). */
int tds_read_row(token_dataset *ds, int64_t i, int T, int *tokens, int *targets);

/* Where a shuffled stream stands. Start with (tds_cursor){ .seed = s }. */
typedef struct {
    uint64_t seed;      /* picks the permutation of every epoch */
    int64_t  epoch;     /* current epoch, >= 0 */
    int64_t  position;  /* rows of this epoch already consumed, in [0, N] */
    int64_t  skipped;   /* broken rows skipped so far (all epochs) */
} tds_cursor;

/* The next B rows of the stream at sequence length T into tokens[B*T] and
 * targets[B*T] (row-major), advancing the cursor. Broken rows are skipped:
 * counted in cursor->skipped and reported with log_warn
 *   "warning: token dataset <path>: row <i> skipped: <reason>"
 * for the first 10 per open handle; later ones are only counted, and a
 * summary line follows at each epoch end (and at tds_close). At the end of an
 * epoch the stream continues with the next epoch's permutation, so a batch may
 * span two epochs. Returns 0, or -1 with the cursor unchanged on I/O error,
 * bad arguments, or when a whole epoch yields no usable row ("every row is
 * broken"). */
int tds_next_batch(token_dataset *ds, tds_cursor *cursor, int B, int T, int *tokens, int *targets);

/* tds_next_batch with two additions for data sets that carry more than tokens
 * per row (data/grounding_dataset.h):
 *   rows[B] (may be NULL) receives the row index of every batch slot;
 *   check (may be NULL) is called for each row that passed the token checks,
 *     with the batch slot it would fill and its tokens/targets; it returns 0
 *     (use it), 1 (the row is broken: its message in ar_error() becomes the
 *     skip reason, and the row is skipped and counted like any broken row) or
 *     -1 (an I/O error: the call fails with the cursor unchanged). */
typedef int (*tds_row_check)(void *ctx, int64_t row, int slot, const int *tokens, const int *targets);
int tds_next_batch_ex(token_dataset *ds, tds_cursor *cursor, int B, int T, int *tokens, int *targets,
                      int64_t *rows, tds_row_check check, void *ctx);

/* The visiting order of epoch `epoch` for `seed` into order[N] (the
 * permutation described above). 0, or -1 + ar_error. */
int tds_epoch_order(token_dataset *ds, uint64_t seed, int64_t epoch, int64_t *order);

/* Writes a file in this format: ids[N*T], labels[N*T] (row-major, as given —
 * nothing is checked, so broken rows can be written on purpose), mask[N*T]
 * (NULL: no attention_mask dataset; stored as uint8), the vocab_size
 * attribute (>= 1) and pad_id (< 0: no attribute). Chunked, shuffle + gzip.
 * Atomic: written to "<path>.tmp", synced, then renamed over path; creates
 * missing parent directories. 0, or -1 + ar_error (path left untouched). */
int tds_write(const char *path, const int *ids, const int *labels, const uint8_t *mask, int64_t N, int T,
              int vocab_size, int pad_id);

#endif
