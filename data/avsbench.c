/* data/avsbench.c — AVSBench S4 / MS3 records, frames, masks and audio (see
 * data/avsbench.h for the layouts and the rules followed). Depends on
 * data/csv.h, data/image.h, data/wav.h, data/fbank.h, core/error.h, core/log.h. */
#include "data/avsbench.h"

#include "core/error.h"
#include "core/log.h"
#include "data/wav.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *category, *name; } k_classes[] = {
    {"helicopter", "helicopter"},
    {"mynah_bird_singing", "bird"},
    {"typing_on_computer_keyboard", "keyboard"},
    {"playing_violin", "violin"},
    {"playing_glockenspiel", "glockenspiel"},
    {"playing_piano", "piano"},
    {"lions_roaring", "lion"},
    {"baby_laughter", "baby"},
    {"male_speech", "male"},
    {"lawn_mowing", "lawn mower"},
    {"playing_ukulele", "ukulele"},
    {"playing_tabla", "tabla"},
    {"driving_buses", "bus"},
    {"cap_gun_shooting", "cap gun"},
    {"chainsawing_trees", "chainsaw"},
    {"playing_acoustic_guitar", "guitar"},
    {"cat_meowing", "cat"},
    {"female_singing", "female"},
    {"ambulance_siren", "ambulance"},
    {"dog_barking", "dog"},
    {"horse_clip-clop", "horse"},
    {"coyote_howling", "coyote"},
    {"race_car", "car"},
};

const char *avs_class_name(const char *category) {
    if (!category) return NULL;
    for (size_t i = 0; i < sizeof k_classes / sizeof k_classes[0]; i++)
        if (!strcmp(k_classes[i].category, category)) return k_classes[i].name;
    return NULL;
}

static char *path_join(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *path_join(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void record_free(avs_record *r) {
    for (int k = 0; k < AVS_FRAMES; k++) {
        free(r->frame[k]);
        free(r->mask[k]);
    }
    free(r->wav);
}

void avs_free(avs_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_records; i++) record_free(&s->records[i]);
    free(s->records);
    ar_csv_free(s->csv);
    free(s);
}

/* Why a name or category cannot be a path component, or NULL. */
static const char *bad_component(const char *s) {
    if (!s[0]) return "empty";
    if (!strcmp(s, ".") || !strcmp(s, "..")) return "\".\" or \"..\"";
    if (strchr(s, '/') || strchr(s, '\\')) return "holds a path separator";
    return NULL;
}

avs_set *avs_load(const char *root, const char *subset, const char *split, const avs_layout *layout) {
    if (!root || !subset || !split) { ar_errorf("avsbench: NULL argument"); return NULL; }
    avs_subset sub;
    if (!strcmp(subset, "s4")) sub = AVS_S4;
    else if (!strcmp(subset, "ms3")) sub = AVS_MS3;
    else { ar_errorf("avsbench: unknown subset \"%s\" (s4 or ms3)", subset); return NULL; }
    if (strcmp(split, "train") && strcmp(split, "val") && strcmp(split, "test")) {
        ar_errorf("avsbench: unknown split \"%s\" (train, val or test)", split);
        return NULL;
    }
    avs_layout L = layout ? *layout : (avs_layout){0};
    if (!L.csv_file) L.csv_file = sub == AVS_S4 ? "s4_meta_data.csv" : "ms3_meta_data.csv";
    if (!L.data_subdir) L.data_subdir = sub == AVS_S4 ? "s4_data" : "ms3_data";
    if (!L.frames_subdir) L.frames_subdir = "visual_frames";
    if (!L.masks_subdir) L.masks_subdir = "gt_masks";
    if (!L.audio_subdir) L.audio_subdir = "audio_wav";

    avs_set *s = calloc(1, sizeof *s);
    if (!s) { ar_errorf("avsbench: out of memory"); return NULL; }
    s->subset = sub;
    snprintf(s->split, sizeof s->split, "%s", split);
    char *csv_path = path_join("%s/%s", root, L.csv_file);
    if (!csv_path) { ar_errorf("avsbench: out of memory"); goto fail; }
    s->csv = ar_csv_read(csv_path);
    free(csv_path);
    if (!s->csv) goto fail;
    const ar_csv *c = s->csv;
    s->n_csv_rows = c->n_rows;
    s->n_skipped_lines = c->n_skipped;
    s->skipped_lines = c->skipped_lines;

    const char *first = sub == AVS_S4 ? "name" : "video_id", *second = sub == AVS_S4 ? "video_id" : "name";
    int col_name = ar_csv_find(c, first);
    if (col_name < 0) col_name = ar_csv_find(c, second);
    if (col_name < 0) {
        ar_csv_col(c, first);
        ar_error_prefix("avsbench %s: ", subset);
        goto fail;
    }
    int col_split = ar_csv_col(c, "split");
    if (col_split < 0) { ar_error_prefix("avsbench %s: ", subset); goto fail; }
    int col_cat = sub == AVS_S4 ? ar_csv_col(c, "category") : ar_csv_find(c, "category");
    if (sub == AVS_S4 && col_cat < 0) { ar_error_prefix("avsbench %s: ", subset); goto fail; }

    s->records = calloc(c->n_rows ? c->n_rows : 1, sizeof *s->records);
    if (!s->records) { ar_errorf("avsbench: out of memory"); goto fail; }
    size_t warned = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        const char *sp = ar_csv_get(c, i, col_split);
        if (strcmp(sp, split)) continue;
        const char *v = ar_csv_get(c, i, col_name);
        const char *cat = col_cat >= 0 ? ar_csv_get(c, i, col_cat) : NULL;
        const char *why = bad_component(v), *what = "name";
        if (!why && sub == AVS_S4) { why = bad_component(cat); what = "category"; }
        if (!why && sub == AVS_MS3 && cat && cat[0] && (strchr(cat, '/') || strchr(cat, '\\'))) {
            why = "holds a path separator";
            what = "category";
        }
        if (why) {
            s->n_bad_rows++;
            if (warned++ < AVS_MAX_WARNINGS)
                log_warn("%s:%zu: row skipped: %s %s", c->name, c->row_line[i], what, why);
            continue;
        }
        avs_record *r = &s->records[s->n_records++];
        r->subset = sub;
        r->video = v;
        r->category = cat;
        r->split = sp;
        r->csv_line = c->row_line[i];
        const char *R = root, *D = L.data_subdir;
        int ok = 1;
        for (int k = 0; k < AVS_FRAMES && ok; k++) {
            if (sub == AVS_S4) {
                r->frame[k] = path_join("%s/%s/%s/%s/%s/%s/%s_%d.png", R, D, L.frames_subdir, split, cat, v, v, k + 1);
                if (k == 0 || strcmp(split, "train"))
                    ok &= !!(r->mask[k] = path_join("%s/%s/%s/%s/%s/%s/%s_%d.png", R, D, L.masks_subdir, split,
                                                    cat, v, v, k + 1));
            } else {
                r->frame[k] = path_join("%s/%s/%s/%s/%s.mp4_%d.png", R, D, L.frames_subdir, v, v, k + 1);
                ok &= !!(r->mask[k] = path_join("%s/%s/%s/%s/%s/%s_%d.png", R, D, L.masks_subdir, split, v, v, k + 1));
            }
            ok &= !!r->frame[k];
        }
        if (sub == AVS_S4) r->wav = path_join("%s/%s/%s/%s/%s/%s.wav", R, D, L.audio_subdir, split, cat, v);
        else r->wav = path_join("%s/%s/%s/%s/%s.wav", R, D, L.audio_subdir, split, v);
        if (!ok || !r->wav) { ar_errorf("avsbench: out of memory"); goto fail; }
    }
    if (warned > AVS_MAX_WARNINGS)
        log_warn("%s: %zu rows skipped in all (%zu warnings not shown)", c->name, s->n_bad_rows,
                 warned - AVS_MAX_WARNINGS);
    return s;
fail:
    avs_free(s);
    return NULL;
}

int avs_load_frame(const avs_record *r, int k, ar_image *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!r || k < 0 || k >= AVS_FRAMES) return ar_errorf("avsbench: frame %d out of range (0..%d)", k, AVS_FRAMES - 1);
    if (image_load(out, r->frame[k], IMAGE_RGB) < 0) return ar_error_prefix("avsbench frame: ");
    return 0;
}

static int read_file(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 0, n = 0;
    uint8_t *b = NULL;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : (size_t)1 << 16;
            uint8_t *nb = realloc(b, nc);
            if (!nb) { free(b); fclose(f); return ar_errorf("%s: out of memory reading the file", path); }
            b = nb;
            cap = nc;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (!got) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(b); return ar_errorf("%s: read error", path); }
    *buf = b;
    *len = n;
    return 0;
}

/* Pillow 9.4's tobilevel (Convert.c): Floyd-Steinberg error diffusion of a
 * luminance row by row, left to right, threshold "> 128". */
static int dither_bilevel(const uint8_t *lum, int h, int w, uint8_t *out) {
    int *errors = calloc((size_t)w + 1, sizeof *errors);
    if (!errors) return -1;
    for (int y = 0; y < h; y++) {
        const uint8_t *in = lum + (size_t)y * (size_t)w;
        uint8_t *o = out + (size_t)y * (size_t)w;
        int l = 0, l0 = 0, l1 = 0, l2, d2, x;
        for (x = 0; x < w; x++) {
            int v = in[x] + (l + errors[x + 1]) / 16;
            l = v < 0 ? 0 : v > 255 ? 255 : v;
            int bit = l > 128 ? 255 : 0;
            o[x] = bit ? 1 : 0;
            l -= bit;
            l2 = l;
            d2 = l + l;
            l += d2;
            errors[x] = l + l0;
            l += d2;
            l0 = l + l1;
            l1 = l2;
            l += d2;
        }
        errors[x] = l0;
    }
    free(errors);
    return 0;
}

int avs_binarise(avs_subset subset, const ar_image *rgb, const ar_image *raw, int png_color_type, ar_image *out) {
    memset(out, 0, sizeof *out);
    if (!rgb || rgb->c != 3 || !rgb->px) return ar_errorf("avs_binarise: need an RGB decode");
    size_t n = (size_t)rgb->h * (size_t)rgb->w;
    uint8_t *m = malloc(n ? n : 1);
    if (!m) return ar_errorf("avs_binarise: out of memory");
    const uint8_t *p = rgb->px;
    if (subset == AVS_S4) {
        if (png_color_type == 3) {
            for (size_t i = 0; i < n; i++)
                m[i] = 299 * p[3 * i] + 587 * p[3 * i + 1] + 114 * p[3 * i + 2] >= 128000;
        } else {
            uint8_t *lum = malloc(n ? n : 1);
            if (!lum) { free(m); return ar_errorf("avs_binarise: out of memory"); }
            for (size_t i = 0; i < n; i++)
                lum[i] = (uint8_t)((299 * p[3 * i] + 587 * p[3 * i + 1] + 114 * p[3 * i + 2]) / 1000);
            int drc = dither_bilevel(lum, rgb->h, rgb->w, m);
            free(lum);
            if (drc < 0) { free(m); return ar_errorf("avs_binarise: out of memory"); }
        }
    } else {
        if (png_color_type == 3 || png_color_type == 0 || png_color_type == 4) {
            if (!raw || raw->c != 1 || raw->h != rgb->h || raw->w != rgb->w) {
                free(m);
                return ar_errorf("avs_binarise: MS3 palette/grey masks need the raw decode");
            }
            for (size_t i = 0; i < n; i++) m[i] = raw->px[i] != 0;
        } else {
            for (size_t i = 0; i < n; i++) m[i] = (p[3 * i] | p[3 * i + 1] | p[3 * i + 2]) != 0;
        }
    }
    out->h = rgb->h;
    out->w = rgb->w;
    out->c = 1;
    out->palette = 0;
    out->px = m;
    return 0;
}

int avs_load_mask(const avs_record *r, int k, ar_image *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!r || k < 0 || k >= AVS_FRAMES) return ar_errorf("avsbench: mask %d out of range (0..%d)", k, AVS_FRAMES - 1);
    if (!r->mask[k])
        return ar_errorf("avsbench: video %s: no mask for frame %d in split %s", r->video, k + 1, r->split);
    const char *path = r->mask[k];
    uint8_t *buf;
    size_t len;
    if (read_file(path, &buf, &len) < 0) return ar_error_prefix("avsbench mask: ");
    ar_image rgb, raw = {0};
    int rc = image_decode(&rgb, buf, len, IMAGE_RGB, path);
    int ctype = -1;
    const char *fmt = image_format(buf, len);
    if (rc == 0 && fmt && !strcmp(fmt, "png") && len > 25) ctype = buf[25];
    if (rc == 0 && r->subset == AVS_MS3 && (ctype == 0 || ctype == 3 || ctype == 4))
        rc = image_decode(&raw, buf, len, IMAGE_GRAY_RAW, path);
    free(buf);
    if (rc == 0) rc = avs_binarise(r->subset, &rgb, &raw, ctype, out);
    image_free(&rgb);
    image_free(&raw);
    if (rc < 0) return ar_error_prefix("avsbench mask: ");
    return 0;
}

int avs_load_audio(const avs_record *r, ar_fbank *fb, float *out) {
    if (!r || !out) return ar_errorf("avsbench audio: NULL argument");
    ar_wav w;
    if (ar_wav_read(r->wav, &w) < 0) return ar_error_prefix("avsbench audio: ");
    ar_audio_opts o;
    ar_audio_opts_imagebind(&o);
    int rc = ar_audio_clips(&w, &o, fb, r->wav, out);
    ar_wav_free(&w);
    if (rc < 0) return ar_error_prefix("avsbench audio: ");
    return 0;
}

int avs_validate(const avs_record *r, ar_fbank *fb) {
    for (int k = 0; k < AVS_FRAMES; k++) {
        ar_image im;
        if (avs_load_frame(r, k, &im) < 0) return -1;
        image_free(&im);
        if (!r->mask[k]) continue;
        if (avs_load_mask(r, k, &im) < 0) return -1;
        image_free(&im);
    }
    float *a = malloc(AVS_AUDIO_FLOATS * sizeof(float));
    if (!a) return ar_errorf("avsbench: out of memory");
    int rc = avs_load_audio(r, fb, a);
    free(a);
    return rc;
}

size_t avs_num_samples(const avs_set *s) {
    if (s->subset == AVS_S4 && !strcmp(s->split, "train")) return s->n_records;
    return s->n_records * AVS_FRAMES;
}

int avs_sample(const avs_set *s, size_t i, size_t *record, int *frame) {
    size_t n = avs_num_samples(s);
    if (i >= n) return ar_errorf("avsbench: sample %zu out of range (%zu samples)", i, n);
    if (s->subset == AVS_S4 && !strcmp(s->split, "train")) {
        *record = i;
        *frame = 0;
    } else {
        *record = i / AVS_FRAMES;
        *frame = (int)(i % AVS_FRAMES);
    }
    return 0;
}
