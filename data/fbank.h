/* data/fbank.h — the audio half of the reference pipeline (SPEC 2.7):
 * resampling to 16 kHz, ImageBind's three 2-second clips, and the Kaldi
 * filter bank of torchaudio.compliance.kaldi.fbank, giving the
 * [clips, 1, 128, 204] float32 input of the ImageBind audio encoder.
 *
 * Depends on data/wav.h, core/error.h, FFTW (libfftw3, double precision)
 * and libsoxr. Host code only; no kernels.
 *
 * KALDI FBANK (ar_fbank_*), as torchaudio 0.13's kaldi.fbank with
 * snip_edges=True, dither=0, use_energy=False, use_power=True,
 * use_log_fbank=True, vtln_warp=1, subtract_mean=False:
 *   window_size  = int(fs * frame_length_ms * 0.001)   (400 at 16 kHz, 25 ms)
 *   window_shift = int(fs * frame_shift_ms * 0.001)    (160, 10 ms)
 *   frames m     = 1 + (n - window_size) / window_shift, 0 if n < window_size
 *   per frame: subtract the frame mean (remove_dc_offset), pre-emphasis
 *   x[j] -= p * x[max(j-1, 0)], window (hanning 0.5-0.5cos(2πj/(N-1)),
 *   hamming, povey = hanning^0.85, rectangular), zero-pad to the next power
 *   of two (512), |rfft|^2, mel banks of torchaudio's get_mel_banks (HTK mel
 *   1127 ln(1 + f/700), triangles between low_freq and high_freq, the Nyquist
 *   bin weighted 0), log(max(e, FLT_EPSILON)).
 *   Computed in double from float32 samples (torchaudio computes in float32).
 *
 * RESAMPLING (ar_resample): libsoxr, "very high quality" (SOXR_VHQ), one
 * channel at a time, output length ceil(n * out / in) as
 * torchaudio.functional.resample; any samples soxr does not deliver at the
 * end are zeros. ImageBind resamples with torchaudio's windowed-sinc
 * (Hann, lowpass_filter_width 6, rolloff 0.99); the two differ mostly near
 * the band edge and at the ends of the signal: tests/test_audio.c prints
 * the measured difference.
 *
 * IMAGEBIND CLIPS (ar_audio_clips), as imagebind/data.py
 * load_and_transform_audio_data with pytorchvideo's
 * ConstantClipsPerVideoSampler (the commit ImageBind and AnyRef pin):
 *   d = n / 16000 (a double); m = max(d - clip_seconds, 0);
 *   clip k (k = 0..clips-1) covers samples
 *     [floor(k * m / max(clips-1, 1) * 16000), that + clip_seconds * 16000)
 *   computed exactly (Python's Fraction), cut at n.
 *   Each clip: subtract the mean of the clip over all channels, IN PLACE in
 *   the waveform (ImageBind subtracts in place on a view, so an overlapping
 *   later clip sees the earlier subtraction), fbank of channel 0 (torchaudio's
 *   channel=-1 means channel 0: ImageBind does not mix stereo down),
 *   transpose to [128, frames], zero-pad on the right or cut to 204 frames,
 *   then (x - mean) / std with mean -4.268, std 9.138 in float32.
 *   opts.mix_channels = 1 instead averages the channels first (a mono mix),
 *   which is NOT what the pretrained ImageBind saw.
 */
#ifndef ANYREF_DATA_FBANK_H
#define ANYREF_DATA_FBANK_H
#include "data/wav.h"

#include <stddef.h>
#include <stdint.h>

enum { AR_WIN_HANNING, AR_WIN_HAMMING, AR_WIN_POVEY, AR_WIN_RECTANGULAR };

typedef struct {
    double sample_frequency;   /* Hz */
    double frame_length_ms;
    double frame_shift_ms;
    int num_mel_bins;          /* > 3 */
    double low_freq;           /* Hz, >= 0 */
    double high_freq;          /* Hz; <= 0 means Nyquist + high_freq */
    double preemphasis;        /* in [0, 1] */
    int remove_dc_offset;
    int round_to_power_of_two;
    int window;                /* AR_WIN_* */
} ar_fbank_opts;

/* ImageBind's settings: 16 kHz, 25 ms / 10 ms, 128 bins, 20 Hz..Nyquist,
 * pre-emphasis 0.97, DC removal, power-of-two FFT, hanning window. */
void ar_fbank_opts_imagebind(ar_fbank_opts *o);

typedef struct ar_fbank ar_fbank;
/* Precomputes window, mel banks and the FFT plan. NULL + ar_error on bad
 * options. One ar_fbank must not be used by two threads at once; create one
 * per thread (creation is thread-safe). */
ar_fbank *ar_fbank_create(const ar_fbank_opts *o);
void      ar_fbank_free(ar_fbank *fb);
int       ar_fbank_window_size(const ar_fbank *fb);
int       ar_fbank_num_bins(const ar_fbank *fb);
/* Frames produced for n samples (snip_edges): 0 if n < window size. */
int64_t   ar_fbank_num_frames(const ar_fbank *fb, int64_t n);
/* out[frames][num_mel_bins] = log mel energies of wave[n]. -1 + ar_error if
 * n < window size (torchaudio refuses it too). */
int       ar_fbank_compute(ar_fbank *fb, const float *wave, int64_t n, float *out);

/* torchaudio.functional.resample's output length: ceil(n * out_rate / in_rate). */
int64_t ar_resample_length(int64_t n, int in_rate, int out_rate);
/* Resamples in[n] (one channel) to out[ar_resample_length(n, ...)] with
 * libsoxr. 0, or -1 + ar_error. */
int     ar_resample(const float *in, int64_t n, int in_rate, int out_rate, float *out);

/* Clip bounds of ConstantClipsPerVideoSampler over n samples at rate Hz:
 * start[k], end[k] for k < clips (end already cut at n). */
void ar_clip_bounds(int64_t n, int rate, int clip_seconds, int clips, int64_t *start, int64_t *end);

typedef struct {
    int sample_rate;     /* 16000 */
    int clip_seconds;    /* 2 */
    int clips;           /* 3 */
    int target_frames;   /* 204 */
    float mean, std;     /* -4.268, 9.138 */
    int mix_channels;    /* 0: ImageBind (fbank of channel 0); 1: mono mix first */
} ar_audio_opts;
void ar_audio_opts_imagebind(ar_audio_opts *o);

/* The ImageBind audio input of one decoded file: resample to
 * opts->sample_rate if needed, then out[clips][1][num_mel_bins][target_frames].
 * fb must have been created with sample_frequency == opts->sample_rate
 * (NULL: one is made for the call with ar_fbank_opts_imagebind). name is used
 * in errors (a clip shorter than the fbank window, a failed resample).
 * 0, or -1 + ar_error "audio <name>: ...". */
int ar_audio_clips(const ar_wav *w, const ar_audio_opts *opts, ar_fbank *fb, const char *name, float *out);
#endif
