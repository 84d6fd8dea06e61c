/* data/wav.c — RIFF/WAVE decoder (see wav.h for what is accepted and how
 * samples are scaled). Every read is preceded by a check that the bytes lie
 * inside the input; sizes are handled as uint64_t so that no sum overflows. */
#include "data/wav.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* The tail of KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT after the 2-byte format code. */
static const uint8_t k_guid_tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                        0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};

static const char *nm(const char *name) { return name ? name : "(memory)"; }

/* Parses the fmt chunk body p[n] into w (rate, channels, format, bits). */
static int parse_fmt(const uint8_t *p, uint64_t n, const char *name, ar_wav *w) {
    if (n < 16) return ar_errorf("wav %s: fmt chunk is %llu bytes, needs at least 16", nm(name), (unsigned long long)n);
    unsigned tag = rd_u16(p), ch = rd_u16(p + 2), align = rd_u16(p + 12), bits = rd_u16(p + 14);
    uint32_t rate = rd_u32(p + 4);
    if (tag == 0xFFFE) {
        if (n < 40)
            return ar_errorf("wav %s: WAVE_FORMAT_EXTENSIBLE fmt chunk is %llu bytes, needs 40", nm(name),
                             (unsigned long long)n);
        unsigned cb = rd_u16(p + 16), valid = rd_u16(p + 18);
        if (cb < 22) return ar_errorf("wav %s: WAVE_FORMAT_EXTENSIBLE cbSize %u, needs 22", nm(name), cb);
        if (valid > bits)
            return ar_errorf("wav %s: %u valid bits in a %u-bit container", nm(name), valid, bits);
        const uint8_t *g = p + 24;
        if (memcmp(g + 2, k_guid_tail, sizeof k_guid_tail) != 0)
            return ar_errorf("wav %s: WAVE_FORMAT_EXTENSIBLE with an unknown SubFormat GUID", nm(name));
        tag = rd_u16(g);
    }
    if (tag != AR_WAV_PCM && tag != AR_WAV_FLOAT)
        return ar_errorf("wav %s: unsupported format tag 0x%04x (PCM, IEEE float and EXTENSIBLE are read)", nm(name),
                         tag);
    if (tag == AR_WAV_PCM && bits != 8 && bits != 16 && bits != 24 && bits != 32)
        return ar_errorf("wav %s: unsupported PCM sample size %u bits (8, 16, 24, 32 are read)", nm(name), bits);
    if (tag == AR_WAV_FLOAT && bits != 32 && bits != 64)
        return ar_errorf("wav %s: unsupported float sample size %u bits (32, 64 are read)", nm(name), bits);
    if (ch < 1 || ch > AR_WAV_MAX_CHANNELS)
        return ar_errorf("wav %s: %u channels (1..%d are read)", nm(name), ch, AR_WAV_MAX_CHANNELS);
    if (rate < AR_WAV_MIN_RATE || rate > AR_WAV_MAX_RATE)
        return ar_errorf("wav %s: sample rate %u Hz (%d..%d are read)", nm(name), rate, AR_WAV_MIN_RATE,
                         AR_WAV_MAX_RATE);
    if (align != ch * (bits / 8))
        return ar_errorf("wav %s: block align %u, expected %u channels x %u bytes", nm(name), align, ch, bits / 8);
    w->format = (int)tag;
    w->bits = (int)bits;
    w->channels = (int)ch;
    w->sample_rate = (int)rate;
    return 0;
}

static float sample_at(const uint8_t *q, int format, int bits) {
    switch (bits) {
    case 8: return (float)((int)q[0] - 128) * (1.0f / 128.0f);
    case 16: return (float)(int16_t)rd_u16(q) * (1.0f / 32768.0f);
    case 24: {
        int32_t v = (int32_t)((uint32_t)q[0] << 8 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 24) >> 8;
        return (float)v * (1.0f / 8388608.0f);
    }
    case 32:
        if (format == AR_WAV_FLOAT) {
            uint32_t u = rd_u32(q);
            float f;
            memcpy(&f, &u, 4);
            return f;
        }
        return (float)(int32_t)rd_u32(q) * (1.0f / 2147483648.0f);
    default: {   /* 64-bit float */
        uint64_t u = (uint64_t)rd_u32(q) | (uint64_t)rd_u32(q + 4) << 32;
        double d;
        memcpy(&d, &u, 8);
        return (float)d;
    }
    }
}

int ar_wav_decode(const void *bytes, size_t len, const char *name, ar_wav *out) {
    memset(out, 0, sizeof *out);
    const uint8_t *b = bytes;
    if (!b && len) return ar_errorf("wav %s: no data", nm(name));
    if (len < 12) return ar_errorf("wav %s: %zu bytes, too short for a RIFF/WAVE header", nm(name), len);
    if (memcmp(b, "RIFF", 4) != 0) {
        if (memcmp(b, "RIFX", 4) == 0 || memcmp(b, "RF64", 4) == 0)
            return ar_errorf("wav %s: %.4s files are not supported (little-endian RIFF only)", nm(name), (const char *)b);
        return ar_errorf("wav %s: not a RIFF file (no \"RIFF\" at offset 0)", nm(name));
    }
    if (memcmp(b + 8, "WAVE", 4) != 0) return ar_errorf("wav %s: RIFF file but not WAVE", nm(name));
    uint64_t riff_end = (uint64_t)rd_u32(b + 4) + 8;
    if (riff_end < 12) return ar_errorf("wav %s: RIFF size %u too small", nm(name), rd_u32(b + 4));
    if (riff_end > len)
        return ar_errorf("wav %s: truncated: RIFF header says %llu bytes, file has %zu", nm(name),
                         (unsigned long long)riff_end, len);

    ar_wav w = {0};
    int have_fmt = 0;
    const uint8_t *data = NULL;
    uint64_t data_len = 0, data_off = 0;
    uint64_t pos = 12;
    while (riff_end - pos >= 8) {
        const uint8_t *c = b + pos;
        uint64_t csize = rd_u32(c + 4);
        uint64_t body = pos + 8;
        if (csize > riff_end - body)
            return ar_errorf("wav %s: chunk \"%.4s\" at offset %llu claims %llu bytes, only %llu left", nm(name),
                             (const char *)c, (unsigned long long)pos, (unsigned long long)csize,
                             (unsigned long long)(riff_end - body));
        if (memcmp(c, "fmt ", 4) == 0) {
            if (have_fmt) return ar_errorf("wav %s: second fmt chunk at offset %llu", nm(name), (unsigned long long)pos);
            if (parse_fmt(b + body, csize, name, &w) < 0) return -1;
            have_fmt = 1;
        } else if (memcmp(c, "data", 4) == 0) {
            if (data) return ar_errorf("wav %s: second data chunk at offset %llu", nm(name), (unsigned long long)pos);
            data = b + body;
            data_len = csize;
            data_off = body;
        }
        pos = body + csize + (csize & 1);
        if (pos > riff_end) pos = riff_end;   /* missing pad byte after the last chunk */
    }
    if (!have_fmt) return ar_errorf("wav %s: no fmt chunk", nm(name));
    if (!data) return ar_errorf("wav %s: no data chunk", nm(name));
    (void)data_off;

    uint64_t bps = (uint64_t)w.bits / 8, frame_bytes = bps * (uint64_t)w.channels;
    uint64_t frames = data_len / frame_bytes;
    w.frames = (int64_t)frames;
    size_t n = (size_t)(frames * (uint64_t)w.channels);
    w.data = malloc((n ? n : 1) * sizeof(float));
    if (!w.data)
        return ar_errorf("wav %s: out of memory for %llu frames x %d channels", nm(name), (unsigned long long)frames,
                         w.channels);
    for (uint64_t t = 0; t < frames; t++) {
        const uint8_t *q = data + t * frame_bytes;
        for (int ch = 0; ch < w.channels; ch++)
            w.data[(size_t)ch * frames + t] = sample_at(q + (uint64_t)ch * bps, w.format, w.bits);
    }
    *out = w;
    return 0;
}

int ar_wav_read(const char *path, ar_wav *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("wav %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ar_errorf("wav %s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > AR_WAV_MAX_FILE) {
        fclose(f);
        return ar_errorf("wav %s: %lld bytes, larger than the %zu-byte limit", path, (long long)st.st_size,
                         AR_WAV_MAX_FILE);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(f);
        return ar_errorf("wav %s: out of memory for %zu bytes", path, len);
    }
    size_t got = fread(buf, 1, len, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != len) {
        free(buf);
        return ar_errorf("wav %s: read %zu of %zu bytes", path, got, len);
    }
    int rc = ar_wav_decode(buf, len, path, out);
    free(buf);
    return rc;
}

void ar_wav_free(ar_wav *w) {
    if (!w) return;
    free(w->data);
    memset(w, 0, sizeof *w);
}

void ar_wav_mix_mono(const ar_wav *w, float *out) {
    size_t n = (size_t)w->frames;
    for (size_t t = 0; t < n; t++) {
        float s = 0.0f;
        for (int c = 0; c < w->channels; c++) s += w->data[(size_t)c * n + t];
        out[t] = s / (float)w->channels;
    }
}
