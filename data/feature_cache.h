/* data/feature_cache.h — the on-disk cache of frozen-encoder outputs: an
 * encoder's features for one preprocessed input are computed once, stored in
 * an HDF5 file under (encoder identity, content hash of the input), and read
 * back on later epochs and runs instead of running the encoder again. An
 * entry that is stale (another shape than the caller expects) or corrupt
 * (unreadable, or its checksum does not match) is never returned: the caller
 * recomputes and puts it again.
 *
 * HASHES
 *   Every identity is a 128-bit XXH3 hash (xxHash, used header-only, no link
 *   flag), written as 32 lower-case hex digits, high 64 bits first — the
 *   text `xxh128sum` prints, so fc_key_of() of a file's bytes and
 *   `xxh128sum file` agree. XXH3 is not cryptographic: it guards against
 *   mistakes and bit rot, not against an adversary crafting collisions.
 *
 *   key        fc_key_of(bytes) = XXH3-128 of the preprocessed input exactly as
 *              the encoder consumes it (e.g. the float32 pixels after resize
 *              and normalisation). A key of several buffers (pixels + shape)
 *              is the digest of an fc_hasher fed their concatenation; feed
 *              lengths/shapes too (fc_hasher_u64) so that boundaries count.
 *   encoder id what makes the features of one input differ: the encoder's
 *              config text (architecture, hidden-state selection, ... —
 *              whatever changes the output) and every weight tensor.
 *              fc_encoder_id() hashes host arrays; fc_encoder_id_params()
 *              hashes the tensors of a parameter registry. The two hash
 *              different byte streams (below, distinct leading tags), so
 *              their ids for the same weights differ.
 *
 * FILE FORMAT (one HDF5 file per cache; objects not named here are ignored)
 *
 *   /                     attribute "anyref_feature_cache": integer scalar,
 *                         the format version, 1. An HDF5 file without it
 *                         is not a cache and is never modified or moved.
 *   /<encoder id hex>     group, one per encoder; attributes "name" and
 *                         "config" (strings, for people and `h5dump` only:
 *                         nothing reads them back to decide anything).
 *   /<enc hex>/<key hex>  dataset, float32 (IEEE, little-endian as written;
 *                         any float32 byte order is read), rank 1..FC_MAX_NDIM,
 *                         every dimension >= 1; its shape is the feature's
 *                         shape. Written contiguous without filters; any
 *                         storage HDF5 can read is accepted.
 *       attribute "checksum"  uint64 [2] = {high64, low64} of the XXH3-128 of
 *                         the byte stream
 *                           "anyref-fc-entry-v1" (18 bytes), enc.hi, enc.lo,
 *                           key.hi, key.lo, ndim, dims[0..ndim) (each a
 *                           uint64, little-endian), then the values as
 *                           little-endian float32 bytes.
 *                         So a hit proves the values, the shape and that the
 *                         entry sits under its own encoder and key (an entry
 *                         copied to another name fails).
 *   Groups and links are only followed when they are hard links (an external
 *   or soft link is treated like a corrupt entry). The file is written with
 *   the HDF5 1.8+ object format, whose metadata carries checksums.
 *
 * WRITES AND INTERRUPTION
 *   fc_put writes the dataset, then its checksum attribute LAST, then
 *   flushes the file (H5Fflush: handed to the OS, not fsync'd). An entry
 *   without a valid checksum — a put cut short — is corrupt. HDF5 itself is
 *   not crash-consistent: a process killed inside a put can also leave a file
 *   HDF5 cannot open; fc_open then fails naming the file, and FC_RECREATE
 *   moves it aside and starts an empty cache. A new cache file is created
 *   under a temporary name and renamed into place, so a half-created file
 *   never appears. The space of a replaced or removed entry is reused within
 *   an open handle; `h5repack` compacts a file.
 *
 * READS
 *   fc_get(enc, key, shape) returns 1 (hit) with the values only when the
 *   entry exists, has exactly the expected shape, is float32, reads without
 *   error and its checksum matches. Otherwise 0 (miss), and the miss is
 *     absent   no such group or entry;
 *     stale    an entry of another rank/shape: counted, warned, left in place
 *              (the next fc_put for that key replaces it);
 *     corrupt  not a float32 dataset, rank or dimensions out of range, no or
 *              malformed checksum, checksum mismatch, a read error, a link
 *              that is not a hard link: counted, warned, and removed from the
 *              file (when the handle is writable) so the next put replaces it.
 *              An entry or encoder group whose HDF5 object header cannot be
 *              read (HDF5's metadata checksums catch most damage there) is
 *              corrupt too but never removed — HDF5 1.10 can leave its state
 *              broken after a failed removal — so fc_put / fc_add_encoder on it
 *              fail with "... is damaged ...; delete the file to rebuild the
 *              cache". The values of such entries are never returned.
 *   Warnings go through log_warn:
 *     "warning: feature cache <path>: entry <enc hex>/<key hex> <stale|corrupt>: <reason>[; removed]"
 *   for the first FC_WARN_LIMIT per handle; later ones are only counted and
 *   fc_close logs how many were not shown.
 *
 * DAMAGED FILES
 *   fc_open refuses (or, with FC_RECREATE, moves aside) a file HDF5 cannot
 *   open; every truncation of a cache fails there (HDF5 checks the stored end
 *   of file). What opens is used entry by entry as above. HDF5 1.10 is not
 *   hardened against arbitrary damage: the test checks truncations and
 *   single-byte flips across a small cache (no wrong value returned, no
 *   crash), which is evidence, not proof, for other damage.
 *
 * Errors: functions return -1 / NULL with a message in ar_error() that names
 * the file (and entry) and what was expected; nothing exits. HDF5 1.10 locks
 * the file: while one process has the cache open for writing, another
 * process's fc_open fails ("in use by another process"), read-only included;
 * several read-only opens may share it. Handles to one file inside one
 * process share HDF5's open file. HDF5's serial library is not thread-safe:
 * use a handle (and HDF5 at all) from one thread at a time.
 *
 * Depends on core/ (error, log, h5util), HDF5, xxHash's header (Debian
 * libxxhash-dev) and, for fc_encoder_id_params only, model/params.h and
 * k_download from kernels/kernels.h.
 */
#ifndef ANYREF_DATA_FEATURE_CACHE_H
#define ANYREF_DATA_FEATURE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "model/params.h"

#define FC_FORMAT_VERSION 1
#define FC_MAX_NDIM 8      /* rank of a stored feature */
#define FC_WARN_LIMIT 10   /* stale/corrupt warnings printed per handle */
#define FC_HEX_LEN 32      /* hex digits of a hash (buffer needs FC_HEX_LEN + 1) */

/* A 128-bit hash: a key or an encoder id. */
typedef struct { uint64_t hi, lo; } fc_hash;

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */
/* ------------------------------------------------------------------------ */
/* XXH3-128 of n bytes (bytes may be NULL when n == 0). */
fc_hash fc_key_of(const void *bytes, size_t n);

/* Streaming: the digest equals fc_key_of() of everything fed, concatenated.
 * Plain memory (stack is fine, no allocation, nothing to free); copy it to
 * fork a prefix. */
typedef struct { _Alignas(64) unsigned char opaque[640]; } fc_hasher;
void    fc_hasher_init(fc_hasher *h);
void    fc_hasher_update(fc_hasher *h, const void *bytes, size_t n);
void    fc_hasher_u64(fc_hasher *h, uint64_t v);    /* v as 8 little-endian bytes */
fc_hash fc_hasher_digest(const fc_hasher *h);       /* h may be fed further */

int     fc_hash_eq(fc_hash a, fc_hash b);
/* 32 hex digits + NUL into buf[FC_HEX_LEN + 1]; returns buf. */
char   *fc_hash_hex(fc_hash h, char *buf);
/* Parses exactly 32 hex digits (either case). 0, or -1 + ar_error. */
int     fc_hash_parse(const char *hex, fc_hash *out);

/* Encoder identity of host memory: XXH3-128 of
 *   "anyref-fc-encoder-v1" (20 bytes), u64 strlen(config), config bytes,
 *   u64 n, then for each tensor i: u64 counts[i], counts[i] float32 values.
 * config_text NULL counts as "". weights[i] may be NULL only if counts[i] == 0. */
fc_hash fc_encoder_id(const char *config_text, const float *const *weights, const size_t *counts, int n);

/* Encoder identity of the tensors of a registry whose names start with
 * prefix ("" = all), in declaration order: XXH3-128 of
 *   "anyref-fc-params-v1" (19 bytes), u64 strlen(config), config bytes, then
 *   for each tensor: u64 strlen(name), name, u64 ndim, u64 shape[0..ndim),
 *   u64 numel, numel float32 values.
 * Names and shapes count, so renamed or reshaped weights change the id; the
 * trainable flag does not. The weights are read through k_download (any
 * backend) in pieces of at most 4 MiB. 0, or -1 + ar_error when nothing
 * matches prefix, the registry is not allocated, or memory runs out. */
int fc_encoder_id_params(const ar_params *ps, const char *prefix, const char *config_text, fc_hash *out);

/* ------------------------------------------------------------------------ */
/* The cache file                                                           */
/* ------------------------------------------------------------------------ */
typedef struct fc_cache fc_cache;

enum {
    FC_READ = 0,      /* read only: fc_put fails, bad entries are not removed */
    FC_WRITE = 1,     /* read and write; a missing file is created */
    FC_RECREATE = 2,  /* with FC_WRITE: a file that is not HDF5 or that HDF5
                       * cannot open (truncated, damaged) is renamed to
                       * "<path>.corrupt" (replacing an older one), with a
                       * warning, and a new cache is created. A readable HDF5
                       * file that is not a cache, or a cache of a newer format
                       * version, is still refused: it is not ours to move. */
};

/* Opens (FC_WRITE: creates when missing) the cache at path. NULL + ar_error
 * ("feature cache <path>: ...") when the file is missing (FC_READ), is a
 * directory, is not HDF5, cannot be opened (locked by another writer,
 * truncated, damaged), lacks the "anyref_feature_cache" attribute, or has a
 * newer format version; FC_RECREATE handles the unreadable ones as above. */
fc_cache *fc_open(const char *path, int flags);
/* Logs the number of warnings withheld (if any) and closes. NULL is fine.
 * 0, or -1 + ar_error if HDF5 reports an error closing (data may be lost). */
int fc_close(fc_cache *c);
const char *fc_path(const fc_cache *c);

/* Declares an encoder before its first fc_put: creates its group (if absent)
 * and writes the "name" and "config" attributes (replacing older ones).
 * name/config NULL count as "". A soft or external link, or a readable
 * object that is not a group, of that name is removed first. 0, or -1 +
 * ar_error (read-only handle, a damaged group, HDF5 error). */
int fc_add_encoder(fc_cache *c, fc_hash enc, const char *name, const char *config_text);

/* Looks up (enc, key) expecting a feature of rank ndim (1..FC_MAX_NDIM) and
 * shape[0..ndim) (each >= 1); out receives prod(shape) floats. Returns 1 =
 * hit (out holds the stored values, bit for bit), 0 = miss (absent, stale or
 * corrupt, as in READS above; out's contents are then unspecified), -1 = bad
 * arguments or an HDF5 error on the file itself (ar_error). */
int fc_get(fc_cache *c, fc_hash enc, fc_hash key, const int *shape, int ndim, float *out);

/* Stores data[prod(shape)] as the entry (enc, key), replacing any entry of
 * that name; the encoder must have been declared with fc_add_encoder (in this
 * or an earlier session). Dataset, then checksum, then flush. 0, or -1 +
 * ar_error (read-only handle, unknown encoder, bad shape, HDF5 error — then
 * the entry may be absent or corrupt, never valid-looking with wrong data). */
int fc_put(fc_cache *c, fc_hash enc, fc_hash key, const float *data, const int *shape, int ndim);

/* Counts since fc_open. Every fc_get is a hit or a miss; stale and corrupt
 * are the misses of those kinds (absent = misses - stale - corrupt). */
typedef struct {
    int64_t hits, misses, stale, corrupt, puts;
    int64_t removed;   /* corrupt entries deleted from the file */
} fc_stats;
fc_stats fc_get_stats(const fc_cache *c);

#endif
