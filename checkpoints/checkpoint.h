/* checkpoints/checkpoint.h — HDF5 training checkpoints: save and resume a run.
 *
 * A checkpoint holds the parameter registry (model/params.h) and the training
 * state needed to continue a run exactly where it stopped: the step, the
 * epoch, the position in the data order, the seed, the data-order RNG state
 * and the resolved configuration text.
 *
 * FILE LAYOUT (format "anyref-checkpoint", version 1)
 *
 *   /                           root group, attributes:
 *     format          string    "anyref-checkpoint"
 *     version         int32     1
 *     step            int64     optimiser steps completed (AdamW's next t is step+1)
 *     epoch           int64     epoch of the next sample
 *     data_position   int64     index of the next sample within that epoch's order
 *     data_skipped    int64     broken samples skipped so far (optional: 0 when absent)
 *     seed            uint64    the run's seed
 *     rng_state       uint64[4] xoshiro256** state of the data-order RNG (core/rng.h)
 *     created         string    UTC time of the save, ISO 8601 ("2024-06-07T12:34:56Z")
 *     frozen_included int32     1: every tensor is in /weights; 0: trainable ones only
 *     loss_scale      float64   dynamic loss scaling's current scale (optional: only
 *                               runs that use it; not in state_checksum)
 *     loss_scale_good int64     finite steps since that scale last changed (with it)
 *     checksums       string    "xxh3-64": every tensor and /config carry an 'xxh3_64'
 *                               attribute (absent in files written before checksums,
 *                               which load unverified)
 *     state_checksum  uint64    XXH3-64 of 11 little-endian 64-bit words: step, epoch,
 *                               data_position, data_skipped, seed, rng_state[0..3],
 *                               frozen_included, version
 *     complete        int32     1, written last: marks a save that finished
 *   /config                     string dataset (scalar): the resolved config text;
 *                               attribute xxh3_64 (uint64): XXH3-64 of its UTF-8 bytes
 *   /weights/<name>             float32, the tensor's shape (C order, as in PyTorch)
 *   /adam_m/<name>              float32, AdamW first moment, trainable tensors only
 *   /adam_v/<name>              float32, AdamW second moment, trainable tensors only
 *     every tensor: attribute xxh3_64 (uint64), XXH3-64 (seed 0) of its float32
 *     little-endian bytes in C order (Python: xxhash.xxh3_64_intdigest(a.tobytes()))
 *
 * Strings are variable-length UTF-8 (h5py reads them as str); the reader also
 * accepts fixed-length strings. Datasets are stored little-endian, contiguous,
 * uncompressed. <name> is the registry's name verbatim, e.g.
 * "model.layers.0.self_attn.q_proj.lora_A.weight": dots are ordinary
 * characters in HDF5 link names. A name containing '/' (HDF5's path
 * separator), the name "." and the empty name are REJECTED by ckpt_save (no
 * escaping: official checkpoint names never contain them, and a verbatim
 * name is what h5py and PyTorch tooling expect).
 *
 * Reading with h5py (tests/ref/read_checkpoint.py prints a whole file):
 *     f = h5py.File("step_000100.h5"); f.attrs["step"]; f["config"][()].decode()
 *     w = f["weights"]["model.layers.0.self_attn.q_proj.lora_A.weight"][()]
 *
 * ATOMICITY. ckpt_save first creates "<path>.tmp", writes and fsyncs a block
 * and reserves the tensors' size (posix_fallocate), so a full disk or an
 * unwritable directory fails before HDF5 touches the file; should a write
 * still fail inside HDF5, the descriptor is moved to an anonymous memory file
 * so that HDF5 can close cleanly. It then writes "<path>.tmp", flushes and
 * closes it, fsyncs the file, renames it over <path> and fsyncs the
 * directory. A save killed at any point leaves <path> as it was (the
 * previous checkpoint, or nothing) plus at most a stale .tmp, which the next
 * save overwrites and ckpt_latest never returns. The root attribute
 * 'complete' is written last, so even a copied half-file is recognised.
 *
 * RUN DIRECTORY. A run keeps its checkpoints as
 *     <run_dir>/checkpoints/step_<step, at least 6 digits>.h5
 * (ckpt_path builds the name, ckpt_latest finds the newest).
 *
 * Depends on core/ (error, fs, log, rng), kernels/kernels.h (k_upload,
 * k_download: the registry's blocks may live in device memory), model/params.h
 * and the HDF5 C library (1.10+).
 */
#ifndef ANYREF_CHECKPOINT_H
#define ANYREF_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "model/params.h"

#define CKPT_FORMAT "anyref-checkpoint"
#define CKPT_VERSION 1
#define CKPT_CHECKSUM_ALGO "xxh3-64"
#define CKPT_CHECKSUM_ATTR "xxh3_64"

typedef struct {
    int64_t  step;            /* optimiser steps completed */
    int64_t  epoch;           /* epoch of the next sample */
    int64_t  data_position;   /* next sample's index in this epoch's order */
    int64_t  data_skipped;    /* broken samples skipped so far */
    uint64_t seed;            /* the run's seed */
    ar_rng   rng;             /* data-order RNG state */
    double   loss_scale;      /* dynamic loss scaling (fp16): the current scale; 0 = not in use */
    int64_t  loss_scale_good; /* finite steps since the scale last changed */
    /* Resolved config text, NUL-terminated, malloc'd and owned by the struct:
     * ckpt_load replaces it (freeing the old one), ckpt_state_free releases it,
     * ckpt_save only reads it (NULL saves ""). Zero-initialise a new struct. */
    char    *config_text;
} ar_train_state;

/* Copies text into st->config_text (freeing the old one). -1 + ar_error on OOM. */
int  ckpt_state_set_config(ar_train_state *st, const char *text);
/* Frees config_text and zeroes the struct. */
void ckpt_state_free(ar_train_state *st);

/* Saves the registry and st to path, atomically (see above). include_frozen = 0
 * writes the trainable tensors only (LoRA checkpoints stay small), 1 writes all
 * of /weights. AdamW moments are written for every trainable tensor. Creates
 * missing parent directories. 0, or -1 + ar_error naming the file; on failure
 * <path> is untouched and the .tmp is removed. */
int ckpt_save(const char *path, const ar_params *ps, const ar_train_state *st, int include_frozen);

/* Loads path into the allocated registry ps and (if st is not NULL) st.
 * Refuses, with a message naming the file and the field, a file that is
 * missing, not HDF5, truncated or corrupt, of another format or version, or
 * incomplete; a tensor in the file that the registry lacks (a different
 * model); a trainable tensor missing from /weights (a frozen one only when the
 * file says frozen_included = 1; otherwise frozen tensors missing from the
 * file keep their current values); a dtype other than float32; a shape
 * mismatch; moments for a tensor the model has frozen; a tensor, the config
 * text or the state whose checksum does not match (the message names the
 * tensor: "tensor 'x' in /weights is corrupt: checksum ..."). Moments: when the file
 * has /adam_m and /adam_v they must cover every trainable tensor and are
 * loaded; when it has neither, require_moments = 1 is an error and
 * require_moments = 0 leaves ps->m / ps->v as they are.
 * Everything is checked and read into host memory (as much as the file holds)
 * before the first upload, so a failed load leaves ps and st unchanged.
 * 0, or -1 + ar_error. */
int ckpt_load(const char *path, ar_params *ps, ar_train_state *st, int require_moments);
/* The resolved config text the checkpoint was written with (malloc'd), and
 * its step (may be NULL); nothing else is read. NULL + ar_error naming the
 * file (not a checkpoint, incomplete, no config). */
char *ckpt_read_config(const char *path, int64_t *step);

/* out = "<run_dir>/checkpoints/step_%06lld.h5". 0, or -1 + ar_error (step < 0,
 * out too small). */
int ckpt_path(const char *run_dir, int64_t step, char *out, size_t cap);

/* Reads the whole file and checks it without a registry: format, version,
 * complete, and the checksum of the state, the config text and every tensor
 * of /weights, /adam_m and /adam_v. 0, or -1 + ar_error naming the file and
 * the tensor. A file without checksums (older) passes after the header checks. */
int ckpt_verify(const char *path);

/* Finds the newest checkpoint in <run_dir>/checkpoints that verifies: among
 * the files named exactly step_<digits>.h5 (so "*.tmp" leftovers never
 * match), the highest step whose file passes ckpt_verify; a newer file that
 * fails is skipped with a warning (log_warn) naming it and the reason. Writes
 * its path to out. 0 found, 1 none (also when the directory does not exist),
 * -1 + ar_error (directory unreadable, out too small). */
int ckpt_latest(const char *run_dir, char *out, size_t cap);

/* Resume: ckpt_load of the newest step_<digits>.h5 of <run_dir>/checkpoints
 * that loads (all of ckpt_load's checks, checksums included), falling back to
 * older ones; each refused file is reported with log_warn (file, tensor,
 * reason) and counted in *refused (may be NULL). Its path goes to out.
 * 0 loaded, 1 none loadable (or none at all), -1 + ar_error. */
int ckpt_load_latest(const char *run_dir, ar_params *ps, ar_train_state *st, int require_moments, char *out,
                     size_t cap, int *refused);

/* After a save of step `newest`: removes the leftovers of killed saves
 * (step_<digits>.h5.tmp) and, when keep > 0, every step_<digits>.h5 with a
 * step <= newest beyond the `keep` newest of them (files of later steps are
 * left alone). The number of files removed, or -1 + ar_error. */
int ckpt_prune(const char *run_dir, int64_t newest, int keep);

#endif
