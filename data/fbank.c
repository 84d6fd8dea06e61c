/* data/fbank.c — Kaldi filter bank (FFTW), resampling (libsoxr) and
 * ImageBind's audio clips; see fbank.h for the exact definitions. */
#include "data/fbank.h"

#include "core/error.h"

#include <fftw3.h>
#include <soxr.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* FFTW's planner is not thread-safe; execution of distinct plans is. */
static pthread_mutex_t g_fftw_lock = PTHREAD_MUTEX_INITIALIZER;

struct ar_fbank {
    ar_fbank_opts o;
    int win, shift, padded, bins, nfft;   /* nfft = padded/2 + 1 spectrum bins */
    double *window;                       /* [win] */
    double *frame;                        /* [padded], FFTW input */
    fftw_complex *spec;                   /* [nfft], FFTW output */
    double *power;                        /* [nfft] */
    fftw_plan plan;
    int *first, *count;                   /* per mel bin: first FFT bin with weight, how many */
    double *weights;                      /* [bins][nfft] (rows sparse, read via first/count) */
};

void ar_fbank_opts_imagebind(ar_fbank_opts *o) {
    *o = (ar_fbank_opts){.sample_frequency = 16000.0,
                         .frame_length_ms = 25.0,
                         .frame_shift_ms = 10.0,
                         .num_mel_bins = 128,
                         .low_freq = 20.0,
                         .high_freq = 0.0,
                         .preemphasis = 0.97,
                         .remove_dc_offset = 1,
                         .round_to_power_of_two = 1,
                         .window = AR_WIN_HANNING};
}

static double mel_scale(double f) { return 1127.0 * log(1.0 + f / 700.0); }

void ar_fbank_free(ar_fbank *fb) {
    if (!fb) return;
    if (fb->plan) {
        pthread_mutex_lock(&g_fftw_lock);
        fftw_destroy_plan(fb->plan);
        pthread_mutex_unlock(&g_fftw_lock);
    }
    fftw_free(fb->frame);
    fftw_free(fb->spec);
    free(fb->window);
    free(fb->power);
    free(fb->first);
    free(fb->count);
    free(fb->weights);
    free(fb);
}

ar_fbank *ar_fbank_create(const ar_fbank_opts *o) {
    double fs = o->sample_frequency;
    if (!(fs > 0.0) || !(fs <= 1e7)) { ar_errorf("fbank: sample frequency %g Hz out of range", fs); return NULL; }
    /* Same operation order as torchaudio: int(fs * ms * 0.001). */
    double wf = fs * o->frame_length_ms * 0.001, sf = fs * o->frame_shift_ms * 0.001;
    if (!(wf >= 2.0 && wf < 1e6) || !(sf >= 1.0 && sf < 1e6)) {
        ar_errorf("fbank: frame length %g ms / shift %g ms give %g / %g samples", o->frame_length_ms,
                  o->frame_shift_ms, wf, sf);
        return NULL;
    }
    int win = (int)wf, shift = (int)sf;
    int padded = win;
    if (o->round_to_power_of_two) { padded = 1; while (padded < win) padded *= 2; }
    if (padded % 2) { ar_errorf("fbank: padded window %d is odd (use round_to_power_of_two)", padded); return NULL; }
    if (o->num_mel_bins <= 3 || o->num_mel_bins > 4096) {
        ar_errorf("fbank: %d mel bins (4..4096)", o->num_mel_bins);
        return NULL;
    }
    if (!(o->preemphasis >= 0.0 && o->preemphasis <= 1.0)) {
        ar_errorf("fbank: pre-emphasis %g not in [0, 1]", o->preemphasis);
        return NULL;
    }
    if (o->window < AR_WIN_HANNING || o->window > AR_WIN_RECTANGULAR) {
        ar_errorf("fbank: unknown window type %d", o->window);
        return NULL;
    }
    double nyquist = 0.5 * fs, low = o->low_freq, high = o->high_freq;
    if (high <= 0.0) high += nyquist;
    if (!(low >= 0.0 && low < nyquist && high > 0.0 && high <= nyquist && low < high)) {
        ar_errorf("fbank: bad frequencies: low %g, high %g vs Nyquist %g", low, high, nyquist);
        return NULL;
    }

    ar_fbank *fb = calloc(1, sizeof *fb);
    if (!fb) { ar_errorf("fbank: out of memory"); return NULL; }
    fb->o = *o;
    fb->win = win;
    fb->shift = shift;
    fb->padded = padded;
    fb->bins = o->num_mel_bins;
    fb->nfft = padded / 2 + 1;
    fb->window = malloc((size_t)win * sizeof(double));
    fb->frame = fftw_malloc((size_t)padded * sizeof(double));
    fb->spec = fftw_malloc((size_t)fb->nfft * sizeof(fftw_complex));
    fb->power = malloc((size_t)fb->nfft * sizeof(double));
    fb->first = calloc((size_t)fb->bins, sizeof(int));
    fb->count = calloc((size_t)fb->bins, sizeof(int));
    fb->weights = calloc((size_t)fb->bins * (size_t)fb->nfft, sizeof(double));
    if (!fb->window || !fb->frame || !fb->spec || !fb->power || !fb->first || !fb->count || !fb->weights) {
        ar_fbank_free(fb);
        ar_errorf("fbank: out of memory");
        return NULL;
    }

    /* Window (torch.hann_window / hamming_window with periodic=False). */
    for (int j = 0; j < win; j++) {
        double c = cos(2.0 * M_PI * j / (double)(win - 1));
        switch (o->window) {
        case AR_WIN_HANNING: fb->window[j] = 0.5 - 0.5 * c; break;
        case AR_WIN_HAMMING: fb->window[j] = 0.54 - 0.46 * c; break;
        case AR_WIN_POVEY: fb->window[j] = pow(0.5 - 0.5 * c, 0.85); break;
        default: fb->window[j] = 1.0; break;
        }
    }

    /* Mel banks (torchaudio get_mel_banks, vtln_warp = 1): triangles in mel
     * between left/center/right; FFT bin k < padded/2 sits at mel(k * fs / padded);
     * the Nyquist bin has weight 0. */
    double mlow = mel_scale(low), mhigh = mel_scale(high);
    double delta = (mhigh - mlow) / (fb->bins + 1);
    double bin_width = fs / padded;
    for (int b = 0; b < fb->bins; b++) {
        double left = mlow + b * delta, center = mlow + (b + 1.0) * delta, right = mlow + (b + 2.0) * delta;
        int first = -1, last = -1;
        for (int k = 0; k < padded / 2; k++) {
            double m = mel_scale(bin_width * k);
            double up = (m - left) / (center - left), down = (right - m) / (right - center);
            double wgt = fmax(0.0, fmin(up, down));
            fb->weights[(size_t)b * fb->nfft + k] = wgt;
            if (wgt > 0.0) {
                if (first < 0) first = k;
                last = k;
            }
        }
        fb->first[b] = first < 0 ? 0 : first;
        fb->count[b] = first < 0 ? 0 : last - first + 1;
    }

    pthread_mutex_lock(&g_fftw_lock);
    fb->plan = fftw_plan_dft_r2c_1d(padded, fb->frame, fb->spec, FFTW_ESTIMATE);
    pthread_mutex_unlock(&g_fftw_lock);
    if (!fb->plan) {
        ar_fbank_free(fb);
        ar_errorf("fbank: FFTW could not plan a %d-point transform", padded);
        return NULL;
    }
    return fb;
}

int ar_fbank_window_size(const ar_fbank *fb) { return fb->win; }
int ar_fbank_num_bins(const ar_fbank *fb) { return fb->bins; }

int64_t ar_fbank_num_frames(const ar_fbank *fb, int64_t n) {
    return n < fb->win ? 0 : 1 + (n - fb->win) / fb->shift;
}

int ar_fbank_compute(ar_fbank *fb, const float *wave, int64_t n, float *out) {
    if (n < fb->win)
        return ar_errorf("fbank: %lld samples, fewer than one %d-sample window", (long long)n, fb->win);
    int64_t frames = ar_fbank_num_frames(fb, n);
    const int win = fb->win;
    const double p = fb->o.preemphasis;
    double *x = fb->frame;
    for (int64_t f = 0; f < frames; f++) {
        const float *src = wave + f * fb->shift;
        double mean = 0.0;
        for (int j = 0; j < win; j++) { x[j] = src[j]; mean += x[j]; }
        if (fb->o.remove_dc_offset) {
            mean /= win;
            for (int j = 0; j < win; j++) x[j] -= mean;
        }
        if (p != 0.0) {
            for (int j = win - 1; j > 0; j--) x[j] -= p * x[j - 1];
            x[0] -= p * x[0];
        }
        for (int j = 0; j < win; j++) x[j] *= fb->window[j];
        for (int j = win; j < fb->padded; j++) x[j] = 0.0;
        fftw_execute(fb->plan);
        for (int k = 0; k < fb->nfft; k++) fb->power[k] = fb->spec[k][0] * fb->spec[k][0] + fb->spec[k][1] * fb->spec[k][1];
        float *o = out + f * fb->bins;
        for (int b = 0; b < fb->bins; b++) {
            const double *w = fb->weights + (size_t)b * fb->nfft;
            double e = 0.0;
            for (int k = fb->first[b], end = fb->first[b] + fb->count[b]; k < end; k++) e += w[k] * fb->power[k];
            o[b] = (float)log(fmax(e, (double)FLT_EPSILON));
        }
    }
    return 0;
}

int64_t ar_resample_length(int64_t n, int in_rate, int out_rate) {
    int64_t a = in_rate, b = out_rate;
    while (b) { int64_t t = a % b; a = b; b = t; }   /* gcd, as torchaudio reduces the rates */
    int64_t in = in_rate / a, out = out_rate / a;
    return (n * out + in - 1) / in;
}

int ar_resample(const float *in, int64_t n, int in_rate, int out_rate, float *out) {
    if (in_rate <= 0 || out_rate <= 0) return ar_errorf("resample: rates %d -> %d Hz", in_rate, out_rate);
    int64_t olen = ar_resample_length(n, in_rate, out_rate);
    if (in_rate == out_rate) {
        memcpy(out, in, (size_t)n * sizeof(float));
        return 0;
    }
    size_t idone = 0, odone = 0;
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_VHQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);
    soxr_error_t e = soxr_oneshot((double)in_rate, (double)out_rate, 1, in, (size_t)n, &idone, out, (size_t)olen,
                                  &odone, &io, &q, &rt);
    if (e) return ar_errorf("resample %d -> %d Hz: libsoxr: %s", in_rate, out_rate, e);
    for (size_t i = odone; i < (size_t)olen; i++) out[i] = 0.0f;
    return 0;
}

/* floor(m * k / den * rate) in exact arithmetic, m a non-negative double
 * (what Python's Fraction(m) * k / den * rate then int() computes). */
static int64_t exact_floor(double m, int64_t k, int64_t rate, int64_t den) {
    if (!(m > 0.0) || k == 0) return 0;
    int e;
    double f = frexp(m, &e);                     /* m = f * 2^e, f in [0.5, 1) */
    unsigned __int128 num = (unsigned __int128)(uint64_t)ldexp(f, 53) * (uint64_t)k * (uint64_t)rate;
    e -= 53;                                     /* m = mantissa * 2^e exactly */
    if (e >= 0) {
        if (e > 30) return INT64_MAX;            /* durations beyond any file */
        return (int64_t)((num << e) / (unsigned __int128)den);
    }
    if (-e >= 120) return 0;                     /* num < 2^100 */
    return (int64_t)(num / ((unsigned __int128)den << -e));
}

void ar_clip_bounds(int64_t n, int rate, int clip_seconds, int clips, int64_t *start, int64_t *end) {
    double d = (double)n / (double)rate;
    double m = fmax(d - (double)clip_seconds, 0.0);
    int64_t den = clips - 1 > 1 ? clips - 1 : 1;
    int64_t len = (int64_t)clip_seconds * rate;
    for (int k = 0; k < clips; k++) {
        int64_t s = exact_floor(m, k, rate, den);
        if (s > n) s = n;
        start[k] = s;
        end[k] = s + len < n ? s + len : n;
    }
}

void ar_audio_opts_imagebind(ar_audio_opts *o) {
    *o = (ar_audio_opts){.sample_rate = 16000,
                         .clip_seconds = 2,
                         .clips = 3,
                         .target_frames = 204,
                         .mean = -4.268f,
                         .std = 9.138f,
                         .mix_channels = 0};
}

int ar_audio_clips(const ar_wav *w, const ar_audio_opts *opts, ar_fbank *fb, const char *name, float *out) {
    const char *nm = name ? name : "(memory)";
    ar_audio_opts def;
    if (!opts) { ar_audio_opts_imagebind(&def); opts = &def; }
    if (opts->sample_rate <= 0 || opts->clip_seconds <= 0 || opts->clips <= 0 || opts->clips > 1024 ||
        opts->target_frames <= 0 || !(opts->std != 0.0f))
        return ar_errorf("audio %s: bad clip options", nm);
    if (w->channels < 1 || w->frames < 0 || w->sample_rate <= 0 || (!w->data && w->frames))
        return ar_errorf("audio %s: empty or malformed waveform", nm);
    ar_fbank *own = NULL;
    if (!fb) {
        ar_fbank_opts fo;
        ar_fbank_opts_imagebind(&fo);
        fo.sample_frequency = opts->sample_rate;
        if (!(fb = own = ar_fbank_create(&fo))) return ar_error_prefix("audio %s: ", nm);
    } else if (fb->o.sample_frequency != (double)opts->sample_rate) {
        return ar_errorf("audio %s: fbank made for %g Hz, clips at %d Hz", nm, fb->o.sample_frequency,
                         opts->sample_rate);
    }

    int rc = -1;
    const int C = opts->mix_channels ? 1 : w->channels;
    const int64_t n0 = w->frames;
    const int64_t N = ar_resample_length(n0, w->sample_rate, opts->sample_rate);
    const int bins = fb->bins, T = opts->target_frames;
    float *work = malloc((size_t)(C * N + (opts->mix_channels ? n0 : 0) + 1) * sizeof(float));
    float *feat = NULL;
    if (!work) { ar_errorf("audio %s: out of memory for %lld samples", nm, (long long)N); goto done; }
    /* The waveform at the target rate, planar [C][N]. */
    if (opts->mix_channels) {
        float *mono = work + N;
        ar_wav_mix_mono(w, mono);
        if (ar_resample(mono, n0, w->sample_rate, opts->sample_rate, work) < 0) {
            ar_error_prefix("audio %s: ", nm);
            goto done;
        }
    } else {
        for (int c = 0; c < C; c++)
            if (ar_resample(w->data + (size_t)c * n0, n0, w->sample_rate, opts->sample_rate, work + (size_t)c * N) < 0) {
                ar_error_prefix("audio %s: ", nm);
                goto done;
            }
    }

    int64_t start[1024], end[1024];
    ar_clip_bounds(N, opts->sample_rate, opts->clip_seconds, opts->clips, start, end);
    int64_t max_frames = ar_fbank_num_frames(fb, (int64_t)opts->clip_seconds * opts->sample_rate);
    if (!(feat = malloc((size_t)(max_frames > 0 ? max_frames : 1) * bins * sizeof(float)))) {
        ar_errorf("audio %s: out of memory", nm);
        goto done;
    }
    for (int k = 0; k < opts->clips; k++) {
        int64_t s = start[k], L = end[k] - start[k];
        if (L < fb->win) {
            ar_errorf("audio %s: clip %d has %lld samples at %d Hz, fewer than one %d-sample fbank window "
                      "(file too short: %lld samples at %d Hz)",
                      nm, k, (long long)L, opts->sample_rate, fb->win, (long long)n0, w->sample_rate);
            goto done;
        }
        /* waveform_clip -= waveform_clip.mean(): over all channels, in place. */
        double sum = 0.0;
        for (int c = 0; c < C; c++)
            for (int64_t t = 0; t < L; t++) sum += work[(size_t)c * N + s + t];
        float mean = (float)(sum / ((double)C * (double)L));
        for (int c = 0; c < C; c++)
            for (int64_t t = 0; t < L; t++) work[(size_t)c * N + s + t] -= mean;
        int64_t F = ar_fbank_num_frames(fb, L);
        if (ar_fbank_compute(fb, work + s, L, feat) < 0) { ar_error_prefix("audio %s: ", nm); goto done; }
        float *o = out + (size_t)k * bins * T;
        for (int b = 0; b < bins; b++)
            for (int t = 0; t < T; t++) {
                float v = t < F ? feat[(size_t)t * bins + b] : 0.0f;
                o[(size_t)b * T + t] = (v - opts->mean) / opts->std;
            }
    }
    rc = 0;
done:
    free(feat);
    free(work);
    ar_fbank_free(own);
    return rc;
}
