/* tests/fuzz/fuzz_wav.c — libFuzzer target for data/wav.c.
 *
 * Decodes the input (an exactly sized copy, so ASan catches any read past
 * the end). A refusal must carry a message naming the file; a success must
 * describe a sane waveform (channels and rate in range, frames that fit in
 * the input, every PCM sample in [-1, 1] (32-bit 2^31-1 rounds to 1.0f)), and the mono mix
 * must stay within the range of its channels. Traps on any violation.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_wav -max_total_time=60 tests/fixtures/audio
 */
#include "core/error.h"
#include "data/wav.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    ar_wav w;
    int rc = ar_wav_decode(copy, size, "fuzz.wav", &w);
    free(copy);
    if (rc != 0) {
        if (!strstr(ar_error(), "fuzz.wav") || w.data) __builtin_trap();
        return 0;
    }
    if (w.channels < 1 || w.channels > AR_WAV_MAX_CHANNELS) __builtin_trap();
    if (w.sample_rate < AR_WAV_MIN_RATE || w.sample_rate > AR_WAV_MAX_RATE) __builtin_trap();
    if (w.frames < 0 || (uint64_t)w.frames * (uint64_t)w.channels * (uint64_t)(w.bits / 8) > size) __builtin_trap();
    size_t n = (size_t)w.frames * (size_t)w.channels;
    for (size_t i = 0; i < n; i++)
        if (w.format == AR_WAV_PCM && !(w.data[i] >= -1.0f && w.data[i] <= 1.0f)) __builtin_trap();
    if (w.channels > 1 && w.frames > 0) {
        float *mono = malloc((size_t)w.frames * sizeof(float));
        if (mono) {
            ar_wav_mix_mono(&w, mono);
            for (int64_t t = 0; t < w.frames; t++) {
                float lo = INFINITY, hi = -INFINITY;
                int finite = 1;
                for (int c = 0; c < w.channels; c++) {
                    float v = w.data[(size_t)c * (size_t)w.frames + (size_t)t];
                    finite &= isfinite(v);
                    lo = fminf(lo, v);
                    hi = fmaxf(hi, v);
                }
                if (w.format == AR_WAV_PCM && finite && !(mono[t] >= lo - 1e-6f && mono[t] <= hi + 1e-6f))
                    __builtin_trap();
            }
            free(mono);
        }
    }
    ar_wav_free(&w);
    return 0;
}
