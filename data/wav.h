/* data/wav.h — WAV (RIFF/WAVE) decoding to float32 samples, for the audio
 * references (AVSBench, SPEC 2.7). Pure parsing: depends only on core/error.
 *
 * ACCEPTED
 *   "RIFF" <size> "WAVE" followed by chunks (4-byte id, 32-bit little-endian
 *   size, data, one pad byte after an odd-sized chunk). "fmt " and "data"
 *   may come in either order; every other chunk (LIST, fact, cue , bext,
 *   JUNK, ...) is skipped. Formats:
 *     WAVE_FORMAT_PCM (1)          8-bit unsigned, 16/24/32-bit signed
 *     WAVE_FORMAT_IEEE_FLOAT (3)   32 and 64-bit
 *     WAVE_FORMAT_EXTENSIBLE (0xFFFE) whose SubFormat GUID is PCM or
 *                                  IEEE float (same sample sizes; valid bits
 *                                  below the container size are read as the
 *                                  container, i.e. left-justified)
 *   1..AR_WAV_MAX_CHANNELS channels, rates AR_WAV_MIN_RATE..AR_WAV_MAX_RATE Hz.
 *
 * SAMPLE VALUES (what torchaudio.load(normalize=True) returns)
 *   8-bit  (u - 128) / 128      16-bit  s / 2^15     24-bit  s / 2^23
 *   32-bit (float)s / 2^31      float32 as stored     float64 rounded to float32
 *   All of these are exact in float32 except 32-bit PCM and float64, which
 *   are rounded to nearest. (torchaudio's sox backend passes float files
 *   through 32-bit integers: it clips them to [-1, 1) and rounds to 2^-31;
 *   here float samples are kept as stored.)
 *
 * REFUSED, with an error naming the file and the problem
 *   anything not RIFF/WAVE (RIFX, RF64, ...), a RIFF size beyond the end of
 *   the input, a chunk running past the RIFF end, missing/duplicate fmt or
 *   data chunks, an fmt chunk too short for its format, zero or too many
 *   channels, an out-of-range rate, a block align that is not
 *   channels x bytes per sample, unsupported formats and sample sizes.
 *   Tolerated: fewer than 8 stray bytes after the last chunk, a missing pad
 *   byte after the last chunk, a partial frame at the end of the data chunk
 *   (ignored, as sox and libsndfile do), and a RIFF size smaller than the
 *   input (bytes after the RIFF end are ignored).
 */
#ifndef ANYREF_DATA_WAV_H
#define ANYREF_DATA_WAV_H
#include <stddef.h>
#include <stdint.h>

#define AR_WAV_MAX_CHANNELS 64
#define AR_WAV_MIN_RATE     1000
#define AR_WAV_MAX_RATE     768000

enum { AR_WAV_PCM = 1, AR_WAV_FLOAT = 3 };

typedef struct {
    int sample_rate;   /* Hz */
    int channels;      /* >= 1 */
    int format;        /* AR_WAV_PCM or AR_WAV_FLOAT (EXTENSIBLE resolved) */
    int bits;          /* container bits per sample: 8, 16, 24, 32 or 64 */
    int64_t frames;    /* samples per channel (may be 0) */
    float *data;       /* planar [channels][frames], as torchaudio's [C, N] */
} ar_wav;

/* Decodes the WAV file held in bytes[len]; name is used in error messages.
 * On success fills *out (free with ar_wav_free) and returns 0; on error
 * returns -1 with ar_error() "wav <name>: <problem>" and *out zeroed. */
int  ar_wav_decode(const void *bytes, size_t len, const char *name, ar_wav *out);
/* Reads and decodes the file at path (at most AR_WAV_MAX_FILE bytes). */
#define AR_WAV_MAX_FILE ((size_t)1 << 31)
int  ar_wav_read(const char *path, ar_wav *out);
void ar_wav_free(ar_wav *w);

/* out[frames] = mean over channels of w (in float32, channel order), the
 * usual stereo-to-mono mixdown. */
void ar_wav_mix_mono(const ar_wav *w, float *out);
#endif
