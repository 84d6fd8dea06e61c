/* tests/test_loader.c — the live loader (data/loader.c) against the modules it
 * is built from, on the committed fixtures (tests/fixtures/refer_join,
 * avsbench/ms3, custom, tok_bpe.model) plus JPEG images written here with
 * libjpeg into a mkdtemp directory (the REFER fixture has annotations only).
 * The reference side rebuilds each sample from data/samples.h with
 * sample_options.seed = rng_derive(cfg.seed ^ 0x73616d706c65 ("sample"), p),
 * p = the stream position or validation row (data/loader.c's derivation),
 * and an encoder made as the loader makes it (placeholder "<image>", then
 * [SEG], <im_start>, <im_end>, the four reference markers, strip = 1).
 *   1. every field of every validation row (CLIP 16 with and without the
 *      centre crop + SAM 32; text only with T = 250 cutting [SEG] off) equals
 *      what the modules give directly: tokens[t] = ids[t], targets[t] =
 *      labels[t + 1] of conv_tokenize (placeholder dropped without CLIP),
 *      clip = image_clip_preprocess, sam = image_sam_preprocess (only with a
 *      mask), masks pixel by pixel (rle_decode_hw, avs_load_mask,
 *      cj_record_mask), orig_hw / mask_hw, the box mapped into CLIP pixels by
 *      hand, crop = CLIP preprocessing of the crop file, audio = avs_load_audio
 *      / ar_audio_clips; markers, pad, vocab, ldr_limits; a box the crop
 *      leaves empty breaks the sample; audio = 0 and clip_S = 0 build no
 *      such references;
 *   2. the stream (4 mixed sources): threads 0, 1, 2 identical (deterministic),
 *      deterministic = 0 hands out the same samples of the same positions,
 *      a restart from a saved cursor continues exactly, a rewound cursor on a
 *      running loader too, one source's epoch is a permutation of its
 *      records, weighted sources get the exact n_k (3:1 of 12, 2:1 of 10 with
 *      the largest remainder) and every pass over a source is a permutation,
 *      a hook refusing a record skips and counts it (consumer thread);
 *   3. broken samples (oversized image, truncated JPEG, missing image, PNG
 *      mask with a CRC error, undecodable PNG; a malformed JSON line dropped
 *      at load) are skipped, counted in the cursor and ldr_get_stats, named
 *      ("<set> sample <i>: <file>: ...") and never returned, every other
 *      record still comes, with 0 and 2 threads;
 *   4. validation order: ldr_build_row row i is the i-th record of the
 *      concatenated sources.
 * Corruptions are made on copies in the temporary directory; the committed
 * fixtures are never written.
 * Depends on data/loader.h, data/samples.h, data/conversation.h,
 * data/image.h, data/rle.h, data/avsbench.h, data/custom_jsonl.h,
 * data/fbank.h, data/wav.h, core/rng.h, libjpeg, pthreads, tests/testlib.h.
 */
#include "core/error.h"
#include "core/rng.h"
#include "data/avsbench.h"
#include "data/conversation.h"
#include "data/custom_jsonl.h"
#include "data/fbank.h"
#include "data/grounding_dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/rle.h"
#include "data/samples.h"
#include "data/tokenizer.h"
#include "data/wav.h"
#include "tests/testlib.h"

#include <errno.h>
#include <inttypes.h>
#include <jpeglib.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures"
#define CLIP_S 16
#define SAM_S 32
#define TT 288   /* tokens per sample: the longest fixture prompt (270 with tok_bpe) fits */

static char g_tmp[256];

/* ------------------------------------------------------------- files */
static int mkdirs_for(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return 0;
}

/* A baseline JPEG of a deterministic pattern, written with libjpeg. */
static int write_jpeg(const char *path, int h, int w, unsigned seed) {
    if (mkdirs_for(path)) return -1;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)w * 3);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < 3; ch++) {
                unsigned v = (unsigned)(x * 23 + y * 41 + ch * 70) + seed * 57u;
                v ^= (unsigned)((x * 7 + y * 13 + (int)seed) % 5) * 29u;
                row[x * 3 + ch] = (unsigned char)(v & 255);
            }
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    return fclose(f);
}

static int copy_tree(const char *from, const char *to) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp -r '%s'/. '%s'/", to, from, to);
    return system(cmd);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) ? -1 : (long)st.st_size;
}

/* ------------------------------------------------------------- reference side */
typedef struct {
    ldr_kind kind;
    int caption;
    refer_join *rj;
    avs_set *avs;
    cj_dataset cj;
    int have_cj;
    const char *name;   /* the dataset name sample_from_custom gets */
    size_t n;
} ref_src;

typedef struct {
    int n;
    ref_src s[LDR_MAX_SOURCES];
    tokenizer *tok;
    conv_encoder *enc;
    int seg_id, pad_id;
    int marker[7];   /* [SEG], <im_start>, <im_end>, image ref start/end, audio ref start/end */
    ar_fbank *fb;
} oracle;

static int oracle_add(oracle *o, const ldr_source *src) {
    ref_src *r = &o->s[o->n];
    memset(r, 0, sizeof *r);
    r->kind = src->kind;
    r->caption = src->caption;
    if (src->kind == LDR_REFER) {
        r->rj = refer_join_load(src->root, src->dataset, src->split_by && *src->split_by ? src->split_by : NULL,
                                src->split && *src->split ? src->split : "train", src->images,
                                (refer_image_layout)src->image_layout);
        if (!r->rj) return -1;
        r->n = r->rj->n;
    } else if (src->kind == LDR_AVS) {
        r->avs = avs_load(src->root, src->dataset, src->split && *src->split ? src->split : "train", NULL);
        if (!r->avs) return -1;
        r->n = avs_num_samples(r->avs);
    } else {
        cj_options co = {.check_files = 1, .decode = 0};   /* as data/loader.c loads it */
        if (cj_load(src->file, &co, &r->cj)) return -1;
        r->have_cj = 1;
        r->name = "data";
        /* split "" = every record (else only that split's: not used here) */
        r->n = r->cj.n;
    }
    o->n++;
    return 0;
}

static void oracle_free(oracle *o) {
    for (int k = 0; k < o->n; k++) {
        refer_join_free(o->s[k].rj);
        avs_free(o->s[k].avs);
        if (o->s[k].have_cj) cj_free(&o->s[k].cj);
    }
    conv_encoder_free(o->enc);
    tok_free(o->tok);
    ar_fbank_free(o->fb);
    memset(o, 0, sizeof *o);
}

/* The encoder as data/loader.c builds it: the template truncating at T as
 * LLaVA's model_max_length (a truncated sample then keeps no label), "<image>" as
 * placeholder -1, then cfg.add_tokens, then [SEG], <im_start>, <im_end> and
 * the four reference markers, in that order, each with strip = 1. */
static int oracle_text(oracle *o, const ldr_cfg *c) {
    o->tok = tok_load(c->tokenizer);
    if (!o->tok) return -1;
    o->enc = conv_encoder_new(o->tok, c->template_name, c->T);
    if (!o->enc) return -1;
    if (conv_encoder_add_placeholder(o->enc, c->so.image_token) != -1) return -1;
    if (c->add_tokens && *c->add_tokens) return ar_errorf("test: add_tokens unsupported here");
    const char *added[] = {"[SEG]", "<im_start>", "<im_end>", c->so.image_ref_start, c->so.image_ref_end,
                           c->so.audio_ref_start, c->so.audio_ref_end};
    for (int i = 0; i < 7; i++) {
        int id = conv_encoder_add_token(o->enc, added[i], 1);
        if (id < 0) return -1;
        o->marker[i] = id;
    }
    o->seg_id = o->marker[0];
    o->pad_id = conv_encoder_pad_id(o->enc);
    ar_fbank_opts fo;
    ar_fbank_opts_imagebind(&fo);
    o->fb = ar_fbank_create(&fo);
    return o->fb ? 0 : -1;
}

/* What one sample must be. */
typedef struct {
    int broken;
    char why[1024];   /* for the test's output */
    char msg[900];   /* what the loader's message must contain: the module's error, or the file */
    int tokens[TT], targets[TT];
    float *clip, *sam, *masks, *ref_data;
    size_t n_ref;
    int orig_hw[2], mask_hw[2], n_masks, ref_kind;
    float ref_box[4];
} expect;

static void expect_free(expect *e) {
    free(e->clip);
    free(e->sam);
    free(e->masks);
    free(e->ref_data);
    memset(e, 0, sizeof *e);
}

#define BROKEN(...) do { e->broken = 1; snprintf(e->why, sizeof e->why, __VA_ARGS__); goto done; } while (0)

/* The reference box x0 y0 x1 y1 (original pixels) in CLIP input pixels, as
 * data/loader.h defines it; 1 when the crop leaves it empty. */
static int map_box(const double b[4], int H, int W, int S, int crop, float out[4]) {
    if (!crop) {
        out[0] = (float)(b[0] * S / W);
        out[1] = (float)(b[1] * S / H);
        out[2] = (float)(b[2] * S / W);
        out[3] = (float)(b[3] * S / H);
        return 0;
    }
    int oh, ow;
    image_clip_shape(H, W, S, &oh, &ow);
    double top = (oh - S) / 2, left = (ow - S) / 2;
    double v[4] = {b[0] * ow / W - left, b[1] * oh / H - top, b[2] * ow / W - left, b[3] * oh / H - top};
    for (int i = 0; i < 4; i++) {
        v[i] = v[i] < 0 ? 0 : v[i] > S ? S : v[i];
        out[i] = (float)v[i];
    }
    return !(v[2] > v[0] && v[3] > v[1]);
}

static int too_large(int h, int w, int max_h, int max_w) { return (max_h > 0 && h > max_h) || (max_w > 0 && w > max_w); }

/* Builds the expectation of source k's sample `rec` with sample seed `sseed`. */
static void build_expect(oracle *o, const ldr_cfg *c, int k, size_t rec, uint64_t sseed, int max_h, int max_w,
                         expect *e) {
    memset(e, 0, sizeof *e);
    e->ref_kind = GDS_REF_NONE;
    ref_src *r = &o->s[k];
    sample_options so = c->so;
    so.seed = sseed;
    ar_sample s;
    memset(&s, 0, sizeof s);
    ar_image im = {0}, mk = {0};
    conv_sample cs;
    memset(&cs, 0, sizeof cs);
    int rc = r->kind == LDR_REFER ? sample_from_refer(r->rj, rec, r->caption, &so, &s)
             : r->kind == LDR_AVS ? sample_from_avs(r->avs, rec, &so, &s)
                                  : sample_from_custom(&r->cj, rec, r->name, &so, &s);
    if (rc) { snprintf(e->msg, sizeof e->msg, "%s", ar_error()); BROKEN("sample: %s", e->msg); }
    /* text */
    const char *msgs[2] = {s.question, s.answer};
    if (conv_tokenize(o->enc, msgs, NULL, 2, &cs)) BROKEN("tokenize: %s", ar_error());
    {
        int j = 0, nsup = 0, nseg = 0;
        int *ids = malloc(sizeof(int) * (size_t)(cs.n + 1)), *lab = malloc(sizeof(int) * (size_t)(cs.n + 1));
        for (int t = 0; t < cs.n; t++) {
            if (cs.ids[t] < 0 && !c->clip_S) continue;   /* placeholder dropped without CLIP */
            ids[j] = cs.ids[t];
            lab[j++] = cs.labels[t];
        }
        for (int t = 0; t < c->T; t++) {
            e->tokens[t] = t < j ? ids[t] : o->pad_id;
            e->targets[t] = t + 1 < j ? lab[t + 1] : CONV_IGNORE;
            nsup += e->targets[t] != CONV_IGNORE;
            nseg += e->tokens[t] == o->seg_id;
        }
        free(ids);
        free(lab);
        if (!nsup) {
            snprintf(e->msg, sizeof e->msg, "no supervised token");
            BROKEN("no supervised label within T = %d", c->T);
        }
        if (nseg != s.n_masks) {
            snprintf(e->msg, sizeof e->msg, "[SEG] token");
            BROKEN("%d [SEG] within T = %d for %d masks", nseg, c->T, s.n_masks);
        }
    }
    /* image: decoded when CLIP or SAM needs it (else the size the sample
     * builder read from the annotation or the file header) */
    e->orig_hw[0] = s.height;
    e->orig_hw[1] = s.width;
    if (c->clip_S || (c->sam_S && s.n_masks)) {
        if (image_load(&im, s.image, IMAGE_RGB)) {
            snprintf(e->msg, sizeof e->msg, "%s", ar_error());
            BROKEN("%s", e->msg);
        }
        e->orig_hw[0] = im.h;
        e->orig_hw[1] = im.w;
    }
    if (too_large(e->orig_hw[0], e->orig_hw[1], max_h, max_w)) {
        snprintf(e->msg, sizeof e->msg, "%s", s.image);
        BROKEN("%s: %dx%d above %dx%d", s.image, e->orig_hw[0], e->orig_hw[1], max_h, max_w);
    }
    if (c->clip_S) {
        e->clip = malloc(sizeof(float) * 3 * c->clip_S * c->clip_S);
        if (image_clip_preprocess(e->clip, &im, c->clip_S, c->clip_crop)) BROKEN("clip: %s", ar_error());
    }
    /* masks */
    e->n_masks = s.n_masks;
    if (s.n_masks) {
        int h = im.h, w = im.w;
        uint8_t *m8 = NULL;
        if (r->kind == LDR_REFER) {
            const rle_mask *m = &r->rj->recs[rec].mask;
            h = (int)m->h;
            w = (int)m->w;
            m8 = malloc((size_t)h * w);
            rle_decode_hw(m, m8);
        } else if (r->kind == LDR_AVS) {
            size_t ri;
            int fr;
            avs_sample(r->avs, rec, &ri, &fr);
            if (avs_load_mask(&r->avs->records[ri], fr, &mk)) {
                snprintf(e->msg, sizeof e->msg, "%s", ar_error());
                BROKEN("mask: %s", e->msg);
            }
            h = mk.h;
            w = mk.w;
            m8 = malloc((size_t)h * w);
            memcpy(m8, mk.px, (size_t)h * w);
        } else {
            rle_mask m = {0};
            if (cj_record_mask(&r->cj.recs[rec], &m)) BROKEN("mask: %s", ar_error());
            h = (int)m.h;
            w = (int)m.w;
            m8 = malloc((size_t)h * w);
            rle_decode_hw(&m, m8);
            rle_free(&m);
        }
        if (h != e->orig_hw[0] || w != e->orig_hw[1]) {
            e->mask_hw[0] = h;
            e->mask_hw[1] = w;
        }
        e->masks = malloc(sizeof(float) * (size_t)h * w);
        for (size_t i = 0; i < (size_t)h * w; i++) e->masks[i] = m8[i] ? 1.0f : 0.0f;
        free(m8);
        if (c->sam_S) {
            e->sam = malloc(sizeof(float) * 3 * c->sam_S * c->sam_S);
            if (image_sam_preprocess(e->sam, &im, c->sam_S, NULL, NULL)) BROKEN("sam: %s", ar_error());
        }
    }
    /* reference */
    if (s.ref == SAMPLE_REF_BOX && c->clip_S) {
        e->ref_kind = GDS_REF_BOX;
        if (map_box(s.box, e->orig_hw[0], e->orig_hw[1], c->clip_S, c->clip_crop, e->ref_box)) {
            snprintf(e->msg, sizeof e->msg, "outside the CLIP crop");
            BROKEN("box [%g %g %g %g] left empty by the crop", s.box[0], s.box[1], s.box[2], s.box[3]);
        }
    } else if (s.ref == SAMPLE_REF_IMAGE && c->clip_S) {
        e->ref_kind = GDS_REF_CROP;
        ar_image cr = {0};
        if (image_load(&cr, r->cj.recs[rec].ref_path, IMAGE_RGB)) {
            snprintf(e->msg, sizeof e->msg, "%s", ar_error());
            BROKEN("crop: %s", e->msg);
        }
        e->n_ref = (size_t)3 * c->clip_S * c->clip_S;
        e->ref_data = malloc(sizeof(float) * e->n_ref);
        int crc = image_clip_preprocess(e->ref_data, &cr, c->clip_S, c->clip_crop);
        image_free(&cr);
        if (crc) BROKEN("crop: %s", ar_error());
    } else if (s.ref == SAMPLE_REF_AUDIO && c->audio) {
        e->ref_kind = GDS_REF_AUDIO;
        e->n_ref = AVS_AUDIO_FLOATS;
        e->ref_data = malloc(sizeof(float) * e->n_ref);
        if (r->kind == LDR_AVS) {
            size_t ri;
            int fr;
            avs_sample(r->avs, rec, &ri, &fr);
            if (avs_load_audio(&r->avs->records[ri], o->fb, e->ref_data)) BROKEN("audio: %s", ar_error());
        } else {
            ar_wav w;
            ar_audio_opts ao;
            ar_audio_opts_imagebind(&ao);
            if (ar_wav_read(r->cj.recs[rec].ref_path, &w)) BROKEN("wav: %s", ar_error());
            int arc = ar_audio_clips(&w, &ao, o->fb, r->cj.recs[rec].ref_path, e->ref_data);
            ar_wav_free(&w);
            if (arc) BROKEN("audio: %s", ar_error());
        }
    }
done:
    image_free(&im);
    image_free(&mk);
    conv_sample_free(&cs);
    ar_sample_free(&s);
}

/* Field by field; returns the number of wrong fields and describes the first. */
static int compare_item(const ldr_item *it, const expect *e, const ldr_cfg *c, char *why, size_t n) {
    int bad = 0;
#define WRONG(...) do { if (!bad++) snprintf(why, n, __VA_ARGS__); } while (0)
    for (int t = 0; t < c->T; t++)
        if (it->tokens[t] != e->tokens[t] || it->targets[t] != e->targets[t]) {
            WRONG("t %d: token %d target %d, expected %d %d", t, it->tokens[t], it->targets[t], e->tokens[t],
                  e->targets[t]);
            break;
        }
    if (it->orig_hw[0] != e->orig_hw[0] || it->orig_hw[1] != e->orig_hw[1])
        WRONG("orig_hw %dx%d, expected %dx%d", it->orig_hw[0], it->orig_hw[1], e->orig_hw[0], e->orig_hw[1]);
    if (it->mask_hw[0] != e->mask_hw[0] || it->mask_hw[1] != e->mask_hw[1])
        WRONG("mask_hw %dx%d, expected %dx%d", it->mask_hw[0], it->mask_hw[1], e->mask_hw[0], e->mask_hw[1]);
    size_t nc = (size_t)3 * c->clip_S * c->clip_S, ns = (size_t)3 * c->sam_S * c->sam_S;
    if (!c->clip_S ? it->clip != NULL : !it->clip || memcmp(it->clip, e->clip, nc * sizeof(float)))
        WRONG("clip %s", it->clip ? "differs from image_clip_preprocess" : "missing");
    if (!e->sam ? it->sam != NULL : !it->sam || memcmp(it->sam, e->sam, ns * sizeof(float)))
        WRONG("sam %s", !e->sam ? "present without a mask" : it->sam ? "differs from image_sam_preprocess" : "missing");
    if (it->n_masks != e->n_masks) WRONG("n_masks %d, expected %d", it->n_masks, e->n_masks);
    else if (e->n_masks) {
        size_t hw = (size_t)(e->mask_hw[0] ? e->mask_hw[0] * e->mask_hw[1] : e->orig_hw[0] * e->orig_hw[1]);
        size_t diff = 0;
        for (size_t i = 0; i < hw; i++) diff += !it->masks || it->masks[i] != e->masks[i];
        if (diff) WRONG("mask: %zu of %zu pixels differ", diff, hw);
    }
    if (it->ref_kind != e->ref_kind) WRONG("ref_kind %d, expected %d", it->ref_kind, e->ref_kind);
    else if (e->ref_kind == GDS_REF_BOX) {
        for (int i = 0; i < 4; i++)
            if (fabsf(it->ref_box[i] - e->ref_box[i]) > 1e-4f * (1 + fabsf(e->ref_box[i]))) {
                WRONG("box [%g %g %g %g], expected [%g %g %g %g]", it->ref_box[0], it->ref_box[1], it->ref_box[2],
                      it->ref_box[3], e->ref_box[0], e->ref_box[1], e->ref_box[2], e->ref_box[3]);
                break;
            }
    } else if (e->ref_kind == GDS_REF_CROP || e->ref_kind == GDS_REF_AUDIO) {
        if (!it->ref_data || memcmp(it->ref_data, e->ref_data, e->n_ref * sizeof(float)))
            WRONG("ref_data (%s) %s", e->ref_kind == GDS_REF_CROP ? "crop" : "audio",
                  it->ref_data ? "differs" : "missing");
    }
#undef WRONG
    return bad;
}

/* A digest of everything an item holds, for comparing runs. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t item_hash(const ldr_item *it, const ldr_cfg *c) {
    uint64_t h = 1469598103934665603ull;
    h = fnv(h, it->tokens, sizeof(int) * c->T);
    h = fnv(h, it->targets, sizeof(int) * c->T);
    if (it->clip) h = fnv(h, it->clip, sizeof(float) * 3 * c->clip_S * c->clip_S);
    if (it->sam) h = fnv(h, it->sam, sizeof(float) * 3 * c->sam_S * c->sam_S);
    h = fnv(h, it->orig_hw, sizeof it->orig_hw);
    h = fnv(h, it->mask_hw, sizeof it->mask_hw);
    h = fnv(h, &it->n_masks, sizeof it->n_masks);
    int mh = it->mask_hw[0] ? it->mask_hw[0] : it->orig_hw[0], mw = it->mask_hw[0] ? it->mask_hw[1] : it->orig_hw[1];
    if (it->n_masks && it->masks) h = fnv(h, it->masks, sizeof(float) * it->n_masks * mh * mw);
    h = fnv(h, &it->ref_kind, sizeof it->ref_kind);
    if (it->ref_kind == GDS_REF_BOX) h = fnv(h, it->ref_box, sizeof it->ref_box);
    if (it->ref_kind == GDS_REF_CROP && it->ref_data) h = fnv(h, it->ref_data, sizeof(float) * 3 * c->clip_S * c->clip_S);
    if (it->ref_kind == GDS_REF_AUDIO && it->ref_data) h = fnv(h, it->ref_data, sizeof(float) * AVS_AUDIO_FLOATS);
    h = fnv(h, &it->source, sizeof it->source);
    h = fnv(h, &it->record, sizeof it->record);
    h = fnv(h, &it->position, sizeof it->position);
    return h;
}

/* ------------------------------------------------------------- seeds */
/* The sample seed (sample_options.seed) of stream position p / validation
 * row p, as data/loader.c derives it from the loader's seed. */
static uint64_t sample_seed(uint64_t seed, int64_t p) { return rng_derive(seed ^ 0x73616d706c65ull, (uint64_t)p); }

/* ------------------------------------------------------------- fixtures */
static char g_img_ok[300], g_img_bad[300], g_ms3_bad[300], g_custom_bad[300];

/* JPEGs at every REFER image path of refcoco/refclef train under root. */
static int write_refer_images(const char *root) {
    const char *sets[2] = {"refcoco", "refclef"};
    for (int d = 0; d < 2; d++) {
        refer_join *j = refer_join_load(FIX "/refer_join/root", sets[d], NULL, "train", root, REFER_IMAGES_REFER);
        if (!j) return -1;
        for (size_t i = 0; i < j->n; i++)
            if (file_size(j->recs[i].image_path) < 0 &&
                write_jpeg(j->recs[i].image_path, (int)j->recs[i].height, (int)j->recs[i].width, (unsigned)(d * 10 + i))) {
                refer_join_free(j);
                return -1;
            }
        refer_join_free(j);
    }
    return 0;
}

static void base_cfg(ldr_cfg *c) {
    ldr_cfg_default(c);
    c->tokenizer = FIX "/tok_bpe.model";
    c->T = TT;
    c->clip_S = CLIP_S;
    c->clip_crop = 0;
    c->sam_S = SAM_S;
    c->audio = 1;
    c->seed = 11;
    c->threads = 0;
}

static ldr_source src_refer(const char *dataset, const char *images, int caption, double w) {
    ldr_source s = {.kind = LDR_REFER, .root = FIX "/refer_join/root", .dataset = dataset, .split_by = "",
                    .split = "train", .images = images, .image_layout = REFER_IMAGES_REFER, .caption = caption,
                    .weight = w};
    return s;
}

static ldr_source src_avs(const char *root, const char *subset, const char *split, double w) {
    ldr_source s = {.kind = LDR_AVS, .root = root, .dataset = subset, .split = split, .weight = w};
    return s;
}

static ldr_source src_jsonl(const char *file, double w) {
    ldr_source s = {.kind = LDR_JSONL, .file = file, .split = "", .weight = w};
    return s;
}

static ldr *open_started(const ldr_cfg *c, int B, int mh, int mw) {
    ldr *l = ldr_open(c);
    if (!l) { printf("  ldr_open: %s\n", ar_error()); return NULL; }
    if (ldr_start(l, B, mh, mw)) { printf("  ldr_start: %s\n", ar_error()); ldr_free(l); return NULL; }
    return l;
}

static int open_oracle(oracle *o, const ldr_cfg *c) {
    memset(o, 0, sizeof *o);
    for (int k = 0; k < c->n_sources; k++)
        if (oracle_add(o, &c->src[k])) return -1;
    return oracle_text(o, c);
}

/* The largest image (and AVSBench mask) over every record: annotation sizes,
 * file headers. */
static void oracle_limits(oracle *o, int *h, int *w) {
    *h = *w = 0;
    for (int k = 0; k < o->n; k++) {
        ref_src *r = &o->s[k];
        for (size_t i = 0; i < r->n; i++) {
            int ih = 0, iw = 0, mh = 0, mw = 0;
            if (r->rj) {
                ih = (int)r->rj->recs[i].height;
                iw = (int)r->rj->recs[i].width;
            } else if (r->avs) {
                size_t ri;
                int fr;
                avs_sample(r->avs, i, &ri, &fr);
                if (image_probe_size(r->avs->records[ri].frame[fr], &ih, &iw)) ih = iw = 0;
                if (r->avs->records[ri].mask[fr] && image_probe_size(r->avs->records[ri].mask[fr], &mh, &mw)) mh = mw = 0;
            } else {
                ih = r->cj.recs[i].height;
                iw = r->cj.recs[i].width;
            }
            *h = ih > *h ? ih : *h;
            *h = mh > *h ? mh : *h;
            *w = iw > *w ? iw : *w;
            *w = mw > *w ? mw : *w;
        }
    }
}

/* A broken sample's message names the data set, the record and the file (or
 * the module's reason). */
static int msg_ok(const char *m, const ldr *l, int k, size_t rec, const expect *e) {
    char pre[160];
    snprintf(pre, sizeof pre, "%s sample %zu: ", ldr_source_name(l, k), rec);
    return m && strstr(m, pre) && strstr(m, e->msg);
}

/* ------------------------------------------------------------- 1 + 4: fields, validation order */
static void test_fields(int crop, int clip_S, int sam_S, int T) {
    ldr_cfg c;
    base_cfg(&c);
    c.clip_crop = crop;
    c.clip_S = clip_S;
    c.sam_S = sam_S;
    c.T = T;
    c.shuffle = 0;
    c.n_sources = 4;
    c.src[0] = src_refer("refcoco", g_img_ok, 0, 1);
    c.src[1] = src_refer("refclef", g_img_ok, 1, 1);
    c.src[2] = src_avs(FIX "/avsbench/ms3", "ms3", "train", 1);
    c.src[3] = src_jsonl(FIX "/custom/data.jsonl", 1);
    char name[64];
    snprintf(name, sizeof name, "fields clip %d%s sam %d T %d", clip_S, clip_S ? (crop ? " crop" : " wo_crop") : "", sam_S, T);
    oracle o;
    ldr *l = NULL;
    if (open_oracle(&o, &c)) { t_fail(name, "reference side: %s", ar_error()); goto out; }
    l = open_started(&c, 2, 0, 0);
    if (!l) { t_fail(name, "loader did not open"); goto out; }
    int64_t rows = ldr_rows(l), want_rows = 0;
    int sizes_ok = 1;
    for (int k = 0; k < o.n; k++) {
        want_rows += (int64_t)o.s[k].n;
        sizes_ok &= ldr_source_size(l, k) == (int64_t)o.s[k].n;
    }
    t_check(rows == want_rows && sizes_ok, "validation rows",
            "ldr_rows %" PRId64 " (sources %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "), expected %zu + %zu + %zu + %zu",
            rows, ldr_source_size(l, 0), ldr_source_size(l, 1), ldr_source_size(l, 2), ldr_source_size(l, 3), o.s[0].n,
            o.s[1].n, o.s[2].n, o.s[3].n);
    ldr_markers mk;
    ldr_get_markers(l, &mk);
    int mk_ok = mk.seg == o.marker[0] && mk.im_start == o.marker[1] && mk.im_end == o.marker[2] &&
                mk.ref_start == o.marker[3] && mk.ref_end == o.marker[4] && mk.audio_start == o.marker[5] &&
                mk.audio_end == o.marker[6] && mk.image == -1;
    t_check(mk_ok && ldr_pad_id(l) == o.pad_id && ldr_vocab(l) == tok_vocab_size(o.tok), "markers",
            "seg %d im %d %d refs %d %d audio %d %d image %d (expected %d %d %d %d %d %d %d -1), pad %d (expected %d), "
            "vocab %d (expected %d)", mk.seg, mk.im_start, mk.im_end, mk.ref_start, mk.ref_end, mk.audio_start,
            mk.audio_end, mk.image, o.marker[0], o.marker[1], o.marker[2], o.marker[3], o.marker[4], o.marker[5],
            o.marker[6], ldr_pad_id(l), o.pad_id, ldr_vocab(l), tok_vocab_size(o.tok));
    /* every row: source / record in concatenated order, then every field */
    int order_bad = 0, field_bad = 0, broken_bad = 0, n_ok = 0, n_broken = 0, kinds[3] = {0, 0, 0}, n_masks = 0;
    int msg_bad = 0, lim_h = 0, lim_w = 0;
    char first[700] = "";
    int64_t i = 0;
    for (int k = 0; k < o.n; k++)
        for (size_t r = 0; r < o.s[k].n; r++, i++) {
            const ldr_item *it = NULL;
            int rc = ldr_build_row(l, i, (int)(i % 2), &it);
            char lmsg[1024];
            snprintf(lmsg, sizeof lmsg, "%s", rc ? ar_error() : "ok");
            expect e;
            build_expect(&o, &c, k, r, sample_seed(c.seed, i), 0, 0, &e);
            if (rc == 1 || e.broken) {
                n_broken++;
                if (rc == 1 && e.broken && !msg_ok(lmsg, l, k, r, &e)) {
                    msg_bad++;
                    if (!*first)
                        snprintf(first, sizeof first, "row %" PRId64 ": message \"%.250s\" should name \"%s sample %zu\" and \"%.200s\"", i,
                                 lmsg, ldr_source_name(l, k), r, e.msg);
                }
                if (!(rc == 1 && e.broken)) {
                    broken_bad++;
                    if (!*first)
                        snprintf(first, sizeof first, "row %" PRId64 " (source %d record %zu): loader rc %d (%.250s), reference %.250s", i,
                                 k, r, rc, lmsg, e.broken ? e.why : "fine");
                }
                expect_free(&e);
                continue;
            }
            if (rc != 0 || !it) {
                broken_bad++;
                if (!*first) snprintf(first, sizeof first, "row %" PRId64 ": rc %d: %.300s", i, rc, lmsg);
                expect_free(&e);
                continue;
            }
            if (it->source != k || it->record != r || it->position != i) {
                order_bad++;
                if (!*first)
                    snprintf(first, sizeof first, "row %" PRId64 ": source %d record %zu position %" PRId64 ", expected %d %zu",
                             i, it->source, it->record, it->position, k, r);
            }
            char why[512];
            if (compare_item(it, &e, &c, why, sizeof why)) {
                field_bad++;
                if (!*first) snprintf(first, sizeof first, "row %" PRId64 " (source %d record %zu): %s", i, k, r, why);
            }
            n_ok++;
            n_masks += it->n_masks;
            if (it->ref_kind >= 0 && it->ref_kind < 3) kinds[it->ref_kind]++;
            expect_free(&e);
        }
    /* with CLIP every reference kind occurs; text only, T cuts some [SEG] off */
    int cover = clip_S ? n_ok > 10 && kinds[0] && kinds[1] && kinds[2] : n_ok > 5 && n_broken > 1;
    t_check(order_bad == 0 && field_bad == 0 && broken_bad == 0 && msg_bad == 0 && cover, name,
            "%" PRId64 " rows: %d built (%d masks; box %d, crop %d, audio refs %d), %d broken on both sides; "
            "wrong order %d, wrong fields %d, broken disagreement %d, messages not naming set/record/file %d%s%s",
            i, n_ok, n_masks, kinds[0], kinds[1], kinds[2], n_broken, order_bad, field_bad, broken_bad, msg_bad,
            *first ? ": " : "", first);
    int lh, lw, lm;
    oracle_limits(&o, &lim_h, &lim_w);
    ldr_limits(l, &lh, &lw, &lm);
    t_check(lh == lim_h && lw == lim_w && lm == 1, "limits", "ldr_limits %dx%d, %d masks; largest image %dx%d, 1", lh, lw, lm,
            lim_h, lim_w);
out:
    ldr_free(l);
    oracle_free(&o);
}

/* A box the centre crop leaves empty breaks the sample (only with the crop);
 * audio = 0 leaves audio references unbuilt; clip_S = 0 builds no box/crop. */
static void test_options(void) {
    char path[400], cwd[300];
    snprintf(path, sizeof path, "%s/opts.jsonl", g_tmp);
    if (!getcwd(cwd, sizeof cwd)) { t_fail("options", "getcwd"); return; }
    FILE *f = fopen(path, "w");
    if (!f) { t_fail("options", "cannot write %s", path); return; }
    /* b.jpg is 14 wide, 9 high: the crop keeps x in [4, 20) of the 24 x 16 resize, i.e. x >= 2.33 of the original */
    fprintf(f, "{\"image\": \"%s/" FIX "/custom/img/b.jpg\", \"box\": [0, 0, 2, 9], \"template\": \"caption\", "
               "\"expression\": \"the left edge\"}\n", cwd);
    fprintf(f, "{\"image\": \"%s/" FIX "/custom/img/b.jpg\", \"box\": [5, 1, 9, 8], \"template\": \"caption\", "
               "\"expression\": \"the middle\"}\n", cwd);
    fprintf(f, "{\"image\": \"%s/" FIX "/custom/img/a.png\", \"audio\": \"%s/" FIX "/custom/wav/beep.wav\", "
               "\"template\": \"caption\", \"expression\": \"a beep\"}\n", cwd, cwd);
    fclose(f);
    struct { int crop, clip, audio; int want_rc[3], want_kind[3]; } cases[] = {
        {1, CLIP_S, 1, {1, 0, 0}, {-2, GDS_REF_BOX, GDS_REF_AUDIO}},
        {0, CLIP_S, 0, {0, 0, 0}, {GDS_REF_BOX, GDS_REF_BOX, GDS_REF_NONE}},
        {0, 0, 1, {0, 0, 0}, {GDS_REF_NONE, GDS_REF_NONE, GDS_REF_AUDIO}},
    };
    for (int ci = 0; ci < 3; ci++) {
        ldr_cfg c;
        base_cfg(&c);
        c.clip_crop = cases[ci].crop;
        c.clip_S = cases[ci].clip;
        c.audio = cases[ci].audio;
        c.shuffle = 0;
        c.n_sources = 1;
        c.src[0] = src_jsonl(path, 1);
        oracle o;
        char name[80];
        snprintf(name, sizeof name, "options crop %d clip %d audio %d", cases[ci].crop, cases[ci].clip, cases[ci].audio);
        ldr *l = NULL;
        if (open_oracle(&o, &c) || !(l = open_started(&c, 1, 0, 0))) {
            t_fail(name, "open: %s", ar_error());
            oracle_free(&o);
            ldr_free(l);
            continue;
        }
        int bad = 0;
        char got[300] = "";
        for (int i = 0; i < 3; i++) {
            const ldr_item *it = NULL;
            int rc = ldr_build_row(l, i, 0, &it);
            char lmsg[1024];
            snprintf(lmsg, sizeof lmsg, "%s", rc ? ar_error() : "ok");
            expect e;
            build_expect(&o, &c, 0, (size_t)i, sample_seed(c.seed, i), 0, 0, &e);
            char why[512] = "";
            int wrong = rc != cases[ci].want_rc[i] || e.broken != rc ||
                        (rc == 0 && (it->ref_kind != cases[ci].want_kind[i] || compare_item(it, &e, &c, why, sizeof why))) ||
                        (rc == 1 && !msg_ok(lmsg, l, 0, (size_t)i, &e));
            bad += wrong;
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s[rc %d kind %d%s%s]", i ? " " : "", rc,
                     rc ? -2 : it->ref_kind, *why ? ": " : "", why);
            if (rc == 1 && wrong) snprintf(got + strlen(got), sizeof got - strlen(got), " (%.200s)", lmsg);
            if (rc == 0 && it->ref_kind == GDS_REF_BOX)
                snprintf(got + strlen(got), sizeof got - strlen(got), " box [%.3g %.3g %.3g %.3g]", it->ref_box[0],
                         it->ref_box[1], it->ref_box[2], it->ref_box[3]);
            expect_free(&e);
        }
        t_check(bad == 0, name, "edge box / middle box / audio: %s (expected rc %d %d %d, kinds %d %d %d; -2 = broken)", got,
                cases[ci].want_rc[0], cases[ci].want_rc[1], cases[ci].want_rc[2], cases[ci].want_kind[0],
                cases[ci].want_kind[1], cases[ci].want_kind[2]);
        ldr_free(l);
        oracle_free(&o);
    }
}

/* ------------------------------------------------------------- 2: stream */
typedef struct {
    int64_t pos;
    int src;
    size_t rec;
    uint64_t hash;
} seen;

static void stream_cfg(ldr_cfg *c, double w0, double w1, int64_t E) {
    base_cfg(c);
    c->n_sources = 2;
    c->src[0] = src_refer("refcoco", g_img_ok, 0, w0);
    c->src[1] = src_refer("refclef", g_img_ok, 1, w1);
    c->epoch_samples = E;
    c->shuffle = 1;
}

/* Reads nb batches of B from a fresh loader; out[nb * B]. */
static int read_stream(const ldr_cfg *c, int B, int nb, tds_cursor *cur, seen *out) {
    ldr *l = open_started(c, B, 0, 0);
    if (!l) return -1;
    for (int b = 0; b < nb; b++) {
        const ldr_item *items[16];
        if (ldr_next_batch(l, cur, items)) { printf("  ldr_next_batch: %s\n", ar_error()); ldr_free(l); return -1; }
        for (int i = 0; i < B; i++) {
            seen *s = &out[b * B + i];
            s->pos = items[i]->position;
            s->src = items[i]->source;
            s->rec = items[i]->record;
            s->hash = item_hash(items[i], c);
        }
    }
    ldr_free(l);
    return 0;
}

static int cmp_pos(const void *a, const void *b) {
    int64_t x = ((const seen *)a)->pos, y = ((const seen *)b)->pos;
    return x < y ? -1 : x > y;
}

static const seen *find_pos(const seen *s, int n, int64_t pos) {
    for (int i = 0; i < n; i++)
        if (s[i].pos == pos) return &s[i];
    return NULL;
}

/* A hook that refuses refcoco record 1 and notes the calling thread. */
static pthread_t g_main_thread;
static int g_hook_calls, g_hook_other_thread;
static int hook_refuse(void *ctx, const ldr_item *it) {
    (void)ctx;
    g_hook_calls++;
    g_hook_other_thread += !pthread_equal(pthread_self(), g_main_thread);
    if (it->source == 0 && it->record == 1) { ar_errorf("hook: refcoco record 1 refused"); return 1; }
    return 0;
}

/* Every source kind mixed (the custom set has a broken record): threads,
 * the order modes, restarts. */
static void mixed_cfg(ldr_cfg *c) {   /* every source kind, the custom set with a broken record, epochs of 40 */
    base_cfg(c);
    c->n_sources = 4;
    c->src[0] = src_refer("refcoco", g_img_ok, 0, 3);
    c->src[1] = src_refer("refclef", g_img_ok, 1, 1);
    c->src[2] = src_avs(FIX "/avsbench/ms3", "ms3", "train", 1);
    c->src[3] = src_jsonl(FIX "/custom/data.jsonl", 1);
    c->epoch_samples = 40;
}

static void test_stream(void) {
    enum { B = 3, NB = 8, N = B * NB };
    ldr_cfg c;
    mixed_cfg(&c);
    seen ref[N], got[N];
    tds_cursor c0 = {.seed = c.seed};
    int ok0 = read_stream(&c, B, NB, &c0, ref) == 0;
    /* stream items are the samples of their positions, field by field */
    oracle o;
    int field_bad = 0, order_bad = 0, n_src[4] = {0};
    char first[600] = "";
    if (ok0 && open_oracle(&o, &c) == 0) {
        ldr *l = open_started(&c, B, 0, 0);
        tds_cursor cc = {.seed = c.seed};
        int64_t last = -1;
        for (int b = 0; l && b < NB; b++) {
            const ldr_item *items[B];
            if (ldr_next_batch(l, &cc, items)) { field_bad++; break; }
            for (int i = 0; i < B; i++) {
                order_bad += items[i]->position <= last;
                last = items[i]->position;
                if (items[i]->source >= 0 && items[i]->source < 4) n_src[items[i]->source]++;
                expect e;
                build_expect(&o, &c, items[i]->source, items[i]->record, sample_seed(c.seed, items[i]->position), 0, 0, &e);
                char why[512];
                if (e.broken || compare_item(items[i], &e, &c, why, sizeof why)) {
                    if (!field_bad++)
                        snprintf(first, sizeof first, "position %" PRId64 ": %.400s", items[i]->position, e.broken ? e.why : why);
                }
                expect_free(&e);
            }
        }
        ldr_free(l);
    } else field_bad++;
    oracle_free(&o);
    t_check(ok0 && field_bad == 0 && order_bad == 0 && n_src[0] && n_src[1] && n_src[2] && n_src[3], "stream fields",
            "%d batches of %d from 4 sources (%d/%d/%d/%d samples), %" PRId64 " skipped: every field as the modules give it "
            "with sample seed derive(seed ^ \"sample\", position): %d wrong, %d out of order %s",
            NB, B, n_src[0], n_src[1], n_src[2], n_src[3], c0.skipped, field_bad, order_bad, first);

    for (int th = 1; th <= 2; th++) {
        ldr_cfg ct = c;
        ct.threads = th;
        ct.prefetch = 4;
        ct.deterministic = 1;
        tds_cursor ci = {.seed = c.seed};
        int ok = read_stream(&ct, B, NB, &ci, got) == 0;
        int diff = 0;
        for (int i = 0; ok && i < N; i++) diff += got[i].pos != ref[i].pos || got[i].hash != ref[i].hash;
        char name[64];
        snprintf(name, sizeof name, "deterministic threads=%d", th);
        t_check(ok && diff == 0 && ci.epoch == c0.epoch && ci.position == c0.position && ci.skipped == c0.skipped, name,
                "%d batches of %d vs threads=0: %d samples differ; cursor (%" PRId64 ", %" PRId64 ", skipped %" PRId64
                ") vs (%" PRId64 ", %" PRId64 ", %" PRId64 ")",
                NB, B, diff, ci.epoch, ci.position, ci.skipped, c0.epoch, c0.position, c0.skipped);
    }
    /* deterministic = 0: the positions of the prefetch window, each the same sample */
    {
        ldr_cfg ct = c;
        ct.threads = 2;
        ct.prefetch = 4;
        ct.deterministic = 0;
        tds_cursor ci = {.seed = c.seed};
        int ok = read_stream(&ct, B, NB, &ci, got) == 0;
        int dup = 0, wrong = 0, outside = 0, missing = 0, reordered = 0;
        const int64_t last = ref[N - 1].pos;
        for (int i = 1; ok && i < N; i++) reordered += got[i].pos < got[i - 1].pos;
        if (ok) {
            qsort(got, N, sizeof(seen), cmp_pos);
            for (int i = 0; i < N; i++) {
                const seen *r = find_pos(ref, N, got[i].pos);
                if (i && got[i].pos == got[i - 1].pos) dup++;
                if (got[i].pos > last + ct.prefetch) outside++;
                else if (r ? r->hash != got[i].hash : got[i].pos <= last) wrong++;   /* a broken position came, or another sample */
            }
            for (int i = 0; i < N; i++)   /* every usable position before the last window came */
                if (ref[i].pos < last - ct.prefetch && !find_pos(got, N, ref[i].pos)) missing++;
        }
        t_check(ok && !dup && !wrong && !outside && !missing, "deterministic=0 window",
                "%d samples: %d repeated, %d not the sample of their position (or a broken one), %d beyond the last "
                "position %" PRId64 " + prefetch %d, %d usable positions before the last window missing; %d handed out of "
                "order this run (timing-dependent)",
                N, dup, wrong, outside, last, ct.prefetch, missing, reordered);
    }
    /* resume: 3 batches, save the cursor, reopen, the 4th batch; and a rewind
     * of the cursor on a running loader drops its prefetched samples */
    {
        ldr_cfg ct = c;
        ct.threads = 2;
        ct.prefetch = 4;
        tds_cursor ci = {.seed = c.seed};
        seen a[3 * B], b4[B];
        int ok = read_stream(&ct, B, 3, &ci, a) == 0;
        tds_cursor saved = ci;
        ok = ok && read_stream(&ct, B, 1, &ci, b4) == 0;
        int diff = 0;
        for (int i = 0; ok && i < B; i++) diff += b4[i].pos != ref[3 * B + i].pos || b4[i].hash != ref[3 * B + i].hash;
        t_check(ok && diff == 0, "resume",
                "cursor after 3 batches (epoch %" PRId64 ", position %" PRId64 "), reopened: batch 4 %s uninterrupted run's "
                "(%d of %d differ)", saved.epoch, saved.position, diff ? "differs from the" : "equals the", diff, B);
        ldr *l = open_started(&ct, B, 0, 0);
        int rdiff = 0;
        tds_cursor cr = {.seed = c.seed};
        for (int pass = 0; l && pass < 2; pass++) {
            if (pass) cr = (tds_cursor){.seed = c.seed};   /* rewind */
            for (int bb = 0; bb < 2; bb++) {
                const ldr_item *items[B];
                if (ldr_next_batch(l, &cr, items)) { rdiff++; break; }
                for (int i = 0; i < B; i++) rdiff += item_hash(items[i], &ct) != ref[bb * B + i].hash;
            }
        }
        t_check(l && rdiff == 0, "rewind", "2 batches, cursor reset to the start on the same loader (threads 2), "
                "2 batches again: %d samples differ from the uninterrupted run", rdiff);
        ldr_free(l);
    }
    /* a hook refusing a sample: skipped and counted, called in the consumer's thread */
    {
        ldr_cfg ct = c;
        ct.threads = 2;
        ct.prefetch = 4;
        ldr *l = ldr_open(&ct);
        g_main_thread = pthread_self();
        g_hook_calls = g_hook_other_thread = 0;
        if (l) ldr_set_hook(l, hook_refuse, NULL);
        int ok = l && ldr_start(l, B, 0, 0) == 0;
        tds_cursor ch = {.seed = c.seed};
        int refused_back = 0, n = 0;
        for (int bb = 0; ok && bb < 12; bb++) {
            const ldr_item *items[B];
            if (ldr_next_batch(l, &ch, items)) { ok = 0; break; }
            for (int i = 0; i < B; i++, n++) refused_back += items[i]->source == 0 && items[i]->record == 1;
        }
        ldr_stats st;
        if (l) ldr_get_stats(l, &st);
        /* the same positions without the hook: how many of them were refcoco record 1 */
        tds_cursor cn = {.seed = c.seed};
        seen *plain = calloc(64, sizeof *plain);
        int64_t hits = 0, consumed = ch.epoch * 40 + ch.position;
        int okp = read_stream(&c, 1, 64, &cn, plain) == 0;
        for (int i = 0; okp && i < 64; i++) hits += plain[i].pos < consumed && plain[i].src == 0 && plain[i].rec == 1;
        int64_t broken_plain = 0;   /* positions < consumed broken anyway (the custom set's broken image) */
        for (int64_t p = 0, i = 0; okp && p < consumed; p++) {
            while (i < 64 && plain[i].pos < p) i++;
            broken_plain += !(i < 64 && plain[i].pos == p);
        }
        t_check(ok && okp && refused_back == 0 && hits > 0 && ch.skipped == hits + broken_plain && st.broken == ch.skipped &&
                    g_hook_other_thread == 0 && g_hook_calls >= n,
                "hook", "%d samples: refused record returned %d times; skipped %" PRId64 " = %" PRId64 " refused + %" PRId64
                " broken; stats broken %" PRId64 "; %d hook calls, %d outside the consumer's thread",
                n, refused_back, ch.skipped, hits, broken_plain, l ? st.broken : -1, g_hook_calls, g_hook_other_thread);
        free(plain);
        ldr_free(l);
    }
}

/* Data parallel (ldr_dp_*): R ranks simulated by R loaders in one process,
 * their window statuses summed as dist_sum would. Every rank's share of every
 * step is the samples one loader hands out as R consecutive batches of
 * per_rank (the same positions and contents), the cursors agree with its
 * cursor, every broken sample is reported by exactly one rank, and each rank
 * builds about its own share. The stream of test_stream (4 sources, a broken
 * custom record) with a hook refusing refcoco record 1: about a fifth of the
 * samples are skipped, so shares shift and windows run short. */
static int hook_refcoco(void *ctx, const ldr_item *it) {
    (void)ctx;
    if (it->source == 0) { ar_errorf("hook: refcoco refused"); return 1; }
    return 0;
}

/* The edge cases of dp_case_ex: the epoch size (0: the config's), the
 * prefetch, the cursor the run starts from (a resumed run, mid-epoch, with
 * samples skipped before), and the step (>= 1) after which the run rewinds
 * to that cursor on the same loaders (0: none). */
typedef struct {
    int64_t E;
    int prefetch;
    tds_cursor start;
    int rewind_at;
    const char *what;
} dp_opts;

static void dp_case_ex(int R, int per, int B, int threads, int steps, int mode, int64_t *past, const dp_opts *o) {
    const int clean = mode == 1;   /* 0: hook_refuse; 2: hook_refcoco (most samples broken) */
    const ldr_hook hook = mode == 2 ? hook_refcoco : hook_refuse;
    ldr_cfg c;
    if (clean) stream_cfg(&c, 3, 1, 40);   /* two REFER sets, no broken sample, no hook */
    else mixed_cfg(&c);
    c.threads = threads;
    c.prefetch = o && o->prefetch ? o->prefetch : 3;
    if (o && o->E) c.epoch_samples = o->E;
    g_main_thread = pthread_self();
    ldr *ref = ldr_open(&c), *l[4] = {0};
    int ok = ref != NULL;
    if (ok && !clean) ldr_set_hook(ref, hook, NULL);
    ok = ok && ldr_start(ref, per, 0, 0) == 0;
    for (int k = 0; k < R && ok; k++) {
        ok = (l[k] = ldr_open(&c)) != NULL;
        if (ok && !clean) ldr_set_hook(l[k], hook, NULL);
        ok = ok && ldr_dp_setup(l[k], k, R, per) == 0 && ldr_start(l[k], B, 0, 0) == 0;
    }
    if (!ok) printf("  set-up: %s\n", ar_error());
    const int64_t L = ok ? ldr_dp_status_len(l[0]) : 0;   /* the most positions of a step's windows */
    double *st = calloc((size_t)L + 1, sizeof *st), *sum = calloc((size_t)L + 1, sizeof *sum);
    int64_t *mine = calloc((size_t)per, sizeof *mine);
    tds_cursor g = {.seed = c.seed};
    if (o) { g = o->start; g.seed = c.seed; }
    const tds_cursor g0 = g;
    tds_cursor cr = g;
    int differ = 0, cur_bad = 0, n_cmp = 0;
    char first[300] = "";
    for (int s = 0; ok && s < steps; s++) {
        if (o && o->rewind_at && s == o->rewind_at) { g = g0; cr = g0; }   /* the same loaders, back to the start */
        memset(sum, 0, (size_t)L * sizeof *sum);
        for (int k = 0; k < R && ok; k++) {
            ok = ldr_dp_window(l[k], &g, st) == 0;
            for (int64_t i = 0; ok && i < L; i++) sum[i] += st[i];
        }
        tds_cursor next = g;
        for (int k = 0; k < R && ok; k++) {
            tds_cursor ck = g;
            ok = ldr_dp_assign(l[k], &ck, sum, mine) == 0;
            if (k == 0) next = ck;
            cur_bad += ck.epoch != next.epoch || ck.position != next.position || ck.skipped != next.skipped;
            const ldr_item *want[64], *got[64];
            ok = ok && ldr_next_batch(ref, &cr, want) == 0;
            for (int b0 = 0; ok && b0 < per; b0 += B) {
                ok = ldr_dp_take(l[k], mine + b0, B, got) == 0;
                for (int i = 0; ok && i < B; i++, n_cmp++) {
                    const int bad = got[i]->position != want[b0 + i]->position || item_hash(got[i], &c) != item_hash(want[b0 + i], &c);
                    if (bad && !differ++)
                        snprintf(first, sizeof first, "step %d rank %d sample %d: position %" PRId64 ", expected %" PRId64, s, k,
                                 b0 + i, got[i]->position, want[b0 + i]->position);
                }
            }
        }
        cur_bad += ok && (next.epoch != cr.epoch || next.position != cr.position || next.skipped != cr.skipped);
        g = next;
    }
    if (!ok) printf("  %s\n", ar_error());
    int64_t built = 0, broken = 0;
    for (int k = 0; k < R && ok; k++) {
        ldr_stats ls;
        ldr_get_stats(l[k], &ls);
        built += ls.built;
        broken += ls.broken;
        *past += ls.dp_past;
    }
    const double per_sample = (double)built / ((double)steps * R * per);
    /* clean: each rank builds its window, the last rank its slack, and after
     * the last step the threads build (part of) the next window */
    const int slack = per / 8 + 1;
    /* else: below every rank building every position of the stream */
    const double lim = clean ? 1 + (double)(slack * (steps + 1) + R * per) / ((double)steps * R * per)
                             : R * ((double)steps * R * per + cr.skipped) / ((double)steps * R * per);
    /* edge cases: the rewind repeats steps (every broken sample of them is
       reported again) and a resumed cursor's skipped count was not reported
       here; the build count is not checked */
    const int64_t want_broken = cr.skipped - g0.skipped;
    const int check_cost = !o;
    char name[160];
    snprintf(name, sizeof name, "data parallel: %d ranks x %d samples (threads %d%s%s%s) == one loader", R, per, threads,
             clean ? ", nothing broken" : mode == 2 ? ", most broken" : "", o ? ", " : "", o ? o->what : "");
    t_check(ok && !differ && !cur_bad && n_cmp == steps * R * per &&
                (o && o->rewind_at ? broken >= want_broken : broken == want_broken) &&
                (cr.skipped - g0.skipped > 0) != clean && (!check_cost || per_sample <= lim), name,
            "%d steps: %d samples compared, %d differ %s; cursors %s (skipped %" PRId64 "), broken samples reported %" PRId64
            " times; built %.3f per sample trained (limit %.3f)",
            steps, n_cmp, differ, first, cur_bad ? "DISAGREE" : "agree", cr.skipped, broken, per_sample, lim);
    /* a status vector no rank wrote; the sequential call refused */
    if (ok && R > 1 && clean && !o) {
        memset(sum, 0, (size_t)L * sizeof *sum);
        tds_cursor ck = g;
        int rc = ldr_dp_window(l[0], &g, st) == 0 ? ldr_dp_assign(l[0], &ck, sum, mine) : 0;
        char msg[300];
        snprintf(msg, sizeof msg, "%s", ar_error());
        /* two ranks' windows overlapping: a position reported twice sums to neither status */
        int rc2 = ldr_dp_window(l[0], &g, st);
        for (int64_t i = 0; rc2 == 0 && i < L; i++) sum[i] = 2 * st[i];
        tds_cursor ck2 = g;
        char msg2[300] = "";
        if (rc2 == 0) {
            rc2 = ldr_dp_assign(l[0], &ck2, sum, mine);
            snprintf(msg2, sizeof msg2, "%s", ar_error());
        }
        tds_cursor cn = g;
        const ldr_item *items[64];
        int rn = ldr_next_batch(l[0], &cn, items);
        t_check(rc == -1 && strstr(msg, "has status 0") && rc2 == -1 && strstr(msg2, "has status 2") && rn == -1 &&
                    strstr(ar_error(), "ldr_dp_take"),
                "data parallel: inconsistent status refused", "no report: assign %d: %s; reported twice: assign %d: %s; "
                "ldr_next_batch %d: %s", rc, msg, rc2, msg2, rn, ar_error());
    }
    free(st); free(sum); free(mine);
    ldr_free(ref);
    for (int k = 0; k < R; k++) ldr_free(l[k]);
}

static void dp_case(int R, int per, int B, int threads, int steps, int mode, int64_t *past) {
    dp_case_ex(R, per, B, threads, steps, mode, past, NULL);
}

/* A run of more than E consecutive broken samples: one loader refuses the
 * stream ("every sample of an epoch is broken"), so the ranks must refuse it
 * at the same step, every rank alike, rather than train on past it. Tiny
 * epochs (E 1..4) of the mixed stream with hook_refcoco: long runs of refused
 * samples. Returns the steps where they disagreed. */
static int dp_error_case(int R, int per, int B, int threads, int64_t E, int steps, char *first, size_t cap, int *refused) {
    ldr_cfg c;
    mixed_cfg(&c);
    c.threads = threads;
    c.prefetch = 2;
    c.epoch_samples = E;
    ldr *ref = ldr_open(&c), *l[4] = {0};
    int ok = ref != NULL;
    if (ok) ldr_set_hook(ref, hook_refcoco, NULL);
    ok = ok && ldr_start(ref, per, 0, 0) == 0;
    for (int k = 0; k < R && ok; k++) {
        ok = (l[k] = ldr_open(&c)) != NULL;
        if (ok) ldr_set_hook(l[k], hook_refcoco, NULL);
        ok = ok && ldr_dp_setup(l[k], k, R, per) == 0 && ldr_start(l[k], B, 0, 0) == 0;
    }
    if (!ok) { snprintf(first, cap, "set-up: %s", ar_error()); return 1; }
    const int64_t L = ldr_dp_status_len(l[0]);
    double *st = calloc((size_t)L, sizeof *st), *sum = calloc((size_t)L, sizeof *sum);
    int64_t *mine = calloc((size_t)per, sizeof *mine);
    tds_cursor g = {.seed = c.seed}, cr = g;
    int bad = 0;
    for (int s = 0; s < steps; s++) {
        int ref_rc = 0;
        for (int k = 0; k < R && !ref_rc; k++) {
            const ldr_item *want[64];
            ref_rc = ldr_next_batch(ref, &cr, want);
        }
        memset(sum, 0, (size_t)L * sizeof *sum);
        int wrc = 0;
        for (int k = 0; k < R && !wrc; k++) {
            wrc = ldr_dp_window(l[k], &g, st);
            for (int64_t i = 0; i < L; i++) sum[i] += st[i];
        }
        if (wrc) { snprintf(first, cap, "step %d: window: %s", s, ar_error()); bad++; break; }
        int arc[4] = {0};
        tds_cursor ck[4];
        for (int k = 0; k < R; k++) {
            ck[k] = g;
            arc[k] = ldr_dp_assign(l[k], &ck[k], sum, mine);
        }
        int agree = 1;
        for (int k = 1; k < R; k++) agree &= arc[k] == arc[0];
        if (!agree || (arc[0] != 0) != (ref_rc != 0)) {
            if (!bad++) snprintf(first, cap, "step %d: one loader rc %d, ranks' assign rc %d %d %d %d", s, ref_rc, arc[0],
                                 R > 1 ? arc[1] : 0, R > 2 ? arc[2] : 0, R > 3 ? arc[3] : 0);
            break;
        }
        if (ref_rc) { ++*refused; break; }   /* both refused the stream at this step */
        g = ck[0];   /* (the samples themselves are checked by dp_case; the next window drops them untaken) */
        if (g.epoch != cr.epoch || g.position != cr.position || g.skipped != cr.skipped) {
            if (!bad++) snprintf(first, cap, "step %d: cursors differ", s);
            break;
        }
    }
    free(st); free(sum); free(mine);
    ldr_free(ref);
    for (int k = 0; k < R; k++) ldr_free(l[k]);
    return bad;
}

static void test_data_parallel(void) {
    int64_t past = 0;
    dp_case(2, 6, 3, 0, 12, 0, &past);
    dp_case(2, 6, 2, 2, 12, 0, &past);
    dp_case(3, 1, 1, 2, 20, 0, &past);
    dp_case(4, 2, 1, 1, 12, 0, &past);
    dp_case(2, 8, 4, 2, 12, 1, &past);
    dp_case(3, 4, 2, 0, 12, 1, &past);
    dp_case(2, 4, 2, 2, 10, 2, &past);   /* windows stretched at most 1.25x: too short, built past */
    /* edge cases: an epoch smaller than a step (windows across several
       epochs), one rank, one sample per rank, a prefetch smaller than a
       rank's share (the ring below window + share), a cursor resumed
       mid-epoch with samples skipped before (f > 1, also clamped), a rewind
       on running loaders (stale prefetched slots) */
    dp_case_ex(2, 8, 4, 2, 6, 0, &past, &(dp_opts){.E = 3, .what = "epoch of 3"});
    dp_case_ex(2, 8, 4, 0, 6, 0, &past, &(dp_opts){.E = 3, .what = "epoch of 3"});
    dp_case_ex(3, 4, 1, 1, 6, 2, &past, &(dp_opts){.E = 2, .what = "epoch of 2"});
    dp_case_ex(1, 1, 1, 0, 12, 0, &past, &(dp_opts){.what = "one rank"});
    dp_case_ex(1, 6, 2, 2, 8, 0, &past, &(dp_opts){.what = "one rank"});
    dp_case_ex(2, 1, 1, 2, 16, 2, &past, &(dp_opts){.what = "per 1"});
    dp_case_ex(2, 16, 1, 2, 6, 0, &past, &(dp_opts){.prefetch = 1, .what = "prefetch 1"});
    dp_case_ex(2, 16, 2, 1, 6, 2, &past, &(dp_opts){.prefetch = 1, .what = "prefetch 1"});
    dp_case_ex(2, 6, 3, 2, 8, 0, &past, &(dp_opts){.start = {.epoch = 1, .position = 17, .skipped = 9}, .what = "resumed mid-epoch"});
    dp_case_ex(3, 4, 2, 0, 8, 2, &past, &(dp_opts){.start = {.epoch = 2, .position = 33, .skipped = 60}, .what = "resumed, f clamped"});
    dp_case_ex(2, 6, 2, 2, 8, 0, &past, &(dp_opts){.rewind_at = 3, .what = "rewound after 3 steps"});
    dp_case_ex(2, 4, 2, 2, 8, 1, &past, &(dp_opts){.start = {.epoch = 0, .position = 39}, .rewind_at = 2, .what = "resumed at the epoch's end, rewound"});
    t_check(past > 0, "data parallel: short windows extended", "%" PRId64 " positions built past the windows", past);
    int disagree = 0, cases = 0, refused = 0;
    char first[300] = "";
    const int err_cases[][5] = {{3, 3, 1, 3, 3}, {2, 2, 1, 2, 1}, {4, 3, 1, 2, 3}, {1, 9, 3, 1, 3}, {2, 4, 2, 0, 2}, {3, 2, 2, 1, 4}};
    for (size_t i = 0; i < sizeof err_cases / sizeof *err_cases; i++, cases++) {
        const int *e = err_cases[i];
        char f1[300] = "";
        if (dp_error_case(e[0], e[1], e[2], e[3], e[4], 6, f1, sizeof f1, &refused) && !disagree++)
            snprintf(first, sizeof first, "R %d per %d threads %d E %d: %s", e[0], e[1], e[3], e[4], f1);
    }
    t_check(!disagree && refused > 0, "data parallel: a stream refused where one loader refuses it",
            "%d cases (tiny epochs, runs of refused samples longer than the epoch): %d refused by both at the same step, "
            "%d disagree %s", cases, refused, disagree, first);
}

/* One source: each epoch a permutation of its records, epochs differing. */
static void test_epochs_single(void) {
    enum { B = 4, NB = 6 };   /* 24 samples = 4 epochs of 6 */
    ldr_cfg c;
    base_cfg(&c);
    c.clip_S = 0;
    c.sam_S = 0;
    c.n_sources = 1;
    c.src[0] = src_refer("refclef", g_img_ok, 1, 1);
    seen s[B * NB];
    tds_cursor cur = {.seed = c.seed};
    int ok = read_stream(&c, B, NB, &cur, s) == 0;
    int bad = 0, differ = 0;
    const int N = 6;
    for (int e = 0; ok && e < B * NB / N; e++) {
        int cnt[6] = {0};
        for (int i = 0; i < B * NB; i++)
            if (s[i].pos / N == e && s[i].rec < (size_t)N) cnt[s[i].rec]++;
        for (int r = 0; r < N; r++) bad += cnt[r] != 1;
        if (e) {
            for (int i = 0; i < N; i++) differ += s[e * N + i].rec != s[i].rec;
        }
    }
    for (int i = 0; ok && i < B * NB; i++) bad += s[i].pos != i;
    char order[128] = "";
    for (int i = 0; ok && i < 2 * N; i++)
        snprintf(order + strlen(order), sizeof order - strlen(order), "%zu%s", s[i].rec, i == N - 1 ? " | " : " ");
    t_check(ok && bad == 0 && differ > 0, "epoch permutation",
            "refclef train (6 records), 4 epochs: %d wrong counts / positions, %d slots differ from epoch 0; "
            "epochs 0 | 1: %s", bad, differ, order);
}

/* Weighted sources: n_k per epoch, every pass over a source a permutation. */
static void weighted_case(double w0, double w1, int64_t E, int n0_want, int n1_want) {
    enum { EPOCHS = 4 };
    ldr_cfg c;
    stream_cfg(&c, w0, w1, E);
    c.clip_S = 0;
    c.sam_S = 0;
    int B = 5, total = (int)(E * EPOCHS), nb = (total + B - 1) / B;
    seen *s = calloc((size_t)nb * B, sizeof *s);
    tds_cursor cur = {.seed = c.seed};
    int ok = read_stream(&c, B, nb, &cur, s) == 0;
    int bad_count = 0, bad_perm = 0, n[2][EPOCHS] = {{0}};
    size_t Nk[2] = {4, 6};
    size_t *seq[2] = {calloc((size_t)total, sizeof(size_t)), calloc((size_t)total, sizeof(size_t))};
    int len[2] = {0, 0};
    for (int i = 0; ok && i < total; i++) {
        if (s[i].pos != i || s[i].src < 0 || s[i].src > 1) { bad_count++; continue; }
        n[s[i].src][i / E]++;
        seq[s[i].src][len[s[i].src]++] = s[i].rec;
    }
    for (int e = 0; ok && e < EPOCHS; e++) bad_count += n[0][e] != n0_want || n[1][e] != n1_want;
    for (int k = 0; ok && k < 2; k++)
        for (int q0 = 0; q0 + (int)Nk[k] <= len[k]; q0 += (int)Nk[k]) {
            int cnt[8] = {0};
            for (size_t r = 0; r < Nk[k]; r++) {
                size_t rec = seq[k][q0 + r];
                if (rec < Nk[k]) cnt[rec]++;
            }
            for (size_t r = 0; r < Nk[k]; r++) bad_perm += cnt[r] != 1;
        }
    char name[64];
    snprintf(name, sizeof name, "weights %g:%g E=%" PRId64, w0, w1, E);
    t_check(ok && !bad_count && !bad_perm, name,
            "per epoch refcoco/refclef = %d/%d %d/%d %d/%d %d/%d (expected %d/%d); passes over a source "
            "not a permutation: %d",
            n[0][0], n[1][0], n[0][1], n[1][1], n[0][2], n[1][2], n[0][3], n[1][3], n0_want, n1_want, bad_perm);
    free(seq[0]);
    free(seq[1]);
    free(s);
}

/* ------------------------------------------------------------- 3: broken samples */
static void test_broken(int threads) {
    ldr_cfg c;
    base_cfg(&c);
    c.threads = threads;
    c.prefetch = 3;
    c.n_sources = 3;
    /* sizes: refcoco 4, ms3 train 5, custom as loaded; weights = sizes and
     * epoch_samples 0 make n_k = N_k: one epoch visits every record once */
    c.src[0] = src_refer("refcoco", g_img_bad, 0, 4);
    c.src[1] = src_avs(g_ms3_bad, "ms3", "train", 5);
    char jsonl[400];
    snprintf(jsonl, sizeof jsonl, "%s/data.jsonl", g_custom_bad);
    c.src[2] = src_jsonl(jsonl, 1);
    oracle o;
    char name[64];
    snprintf(name, sizeof name, "broken threads=%d", threads);
    if (open_oracle(&o, &c)) { t_fail(name, "reference side: %s", ar_error()); oracle_free(&o); return; }
    c.src[2].weight = (double)o.s[2].n;
    const int MH = 26, MW = 64;   /* the 27x11 refcoco image is above it */
    /* which records are broken, by the modules */
    int nbroken = 0, nrec = 0;
    int broken[3][64];
    char reasons[1200] = "";
    for (int k = 0; k < 3; k++)
        for (size_t r = 0; r < o.s[k].n && r < 64; r++) {
            expect e;
            build_expect(&o, &c, k, r, 0, MH, MW, &e);
            broken[k][r] = e.broken;
            nbroken += e.broken;
            nrec++;
            if (e.broken && strlen(reasons) < sizeof reasons - 200)
                snprintf(reasons + strlen(reasons), sizeof reasons - strlen(reasons), " [%d.%zu %.*s]", k, r, 140, e.why);
            expect_free(&e);
        }
    /* the deliberate ones: refcoco 0 (too large), 1 (truncated JPEG), 2 (missing); ms3 sample 2 (broken PNG mask) */
    int planted = broken[0][0] && broken[0][1] && broken[0][2] && !broken[0][3] && broken[1][2] && !broken[1][0];
    if (threads == 0)
        t_check(planted && nbroken >= 5, "broken fixtures", "%d of %d records broken per the modules:%s", nbroken, nrec,
                reasons);
    if (threads == 0) {   /* validation order: each broken row says why, naming set, record and file */
        ldr_cfg cv = c;
        cv.shuffle = 0;
        ldr *lv = open_started(&cv, 1, MH, MW);
        int vbad = 0, i = 0;
        char first[700] = "";
        for (int k = 0; lv && k < 3; k++)
            for (size_t r = 0; r < o.s[k].n && r < 64; r++, i++) {
                const ldr_item *it;
                int rc = ldr_build_row(lv, i, 0, &it);
                char lmsg[1024];
                snprintf(lmsg, sizeof lmsg, "%s", rc ? ar_error() : "ok");
                expect e;
                build_expect(&o, &c, k, r, 0, MH, MW, &e);
                int wrong = rc != broken[k][r] || (rc == 1 && !msg_ok(lmsg, lv, k, r, &e));
                if (wrong && !vbad++)
                    snprintf(first, sizeof first, "row %d: rc %d \"%.300s\", expected %d naming \"%s sample %zu\" and \"%.200s\"", i,
                             rc, lmsg, broken[k][r], ldr_source_name(lv, k), r, e.msg);
                expect_free(&e);
            }
        t_check(lv && vbad == 0 && i == nrec, "broken messages",
                "%d rows in validation order: %d wrong status or message (data set, record, file)%s%s", i, vbad,
                *first ? ": " : "", first);
        ldr_free(lv);
    }
    ldr *l = open_started(&c, 4, MH, MW);
    if (!l) { t_fail(name, "loader did not open"); oracle_free(&o); return; }
    int64_t E = ldr_rows(l);
    tds_cursor cur = {.seed = c.seed};
    int64_t returned = 0, ret_e0 = 0, bad_ret = 0, dup = 0;
    int got[3][64];
    memset(got, 0, sizeof got);
    int rc = 0, batches = 0;
    while (cur.epoch < 1 && batches < 100) {
        const ldr_item *items[4];
        if ((rc = ldr_next_batch(l, &cur, items))) break;
        batches++;
        for (int i = 0; i < 4; i++) {
            const ldr_item *it = items[i];
            returned++;
            if (it->source < 0 || it->source > 2 || it->record >= 64) { bad_ret++; continue; }
            if (broken[it->source][it->record]) bad_ret++;
            if (it->position < E) {
                ret_e0++;
                dup += got[it->source][it->record]++ > 0;
            }
        }
    }
    ldr_stats st;
    ldr_get_stats(l, &st);
    int missing = 0;
    for (int k = 0; k < 3; k++)
        for (size_t r = 0; r < o.s[k].n && r < 64; r++) missing += !broken[k][r] && !got[k][r];
    int64_t consumed = cur.epoch * E + cur.position;
    int stats_ok = st.broken == cur.skipped;
    t_check(rc == 0 && E == nrec && bad_ret == 0 && dup == 0 && missing == 0 && E - ret_e0 == nbroken &&
                returned + cur.skipped == consumed && stats_ok && st.built >= returned,
            name,
            "epoch of %" PRId64 " (records %d): %" PRId64 " returned in epoch 0 (expected %d), broken returned %" PRId64
            ", repeated %" PRId64 ", good records missing %d; cursor skipped %" PRId64 " (epoch 0: %" PRId64
            ", expected %d), returned + skipped %" PRId64 " = consumed %" PRId64 "; stats built %" PRId64 " broken %" PRId64 "%s%s",
            E, nrec, ret_e0, nrec - nbroken, bad_ret, dup, missing, cur.skipped, E - ret_e0, nbroken,
            returned + cur.skipped, consumed, st.built, st.broken, rc ? ": " : "", rc ? ar_error() : "");
    ldr_free(l);
    oracle_free(&o);
}

static int make_fixtures(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/anyref_loader_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    snprintf(g_img_ok, sizeof g_img_ok, "%s/ok", g_tmp);
    snprintf(g_img_bad, sizeof g_img_bad, "%s/bad", g_tmp);
    snprintf(g_ms3_bad, sizeof g_ms3_bad, "%s/ms3", g_tmp);
    snprintf(g_custom_bad, sizeof g_custom_bad, "%s/custom", g_tmp);
    if (write_refer_images(g_img_ok) || write_refer_images(g_img_bad)) return -1;
    /* refcoco train: record 1's image cut in half, record 2's deleted (record 0's, 27x11, exceeds 26 x 64) */
    refer_join *j = refer_join_load(FIX "/refer_join/root", "refcoco", NULL, "train", g_img_bad, REFER_IMAGES_REFER);
    if (!j || j->n != 4) { refer_join_free(j); return -1; }
    long sz = file_size(j->recs[1].image_path);
    int rc = truncate(j->recs[1].image_path, sz / 2) || unlink(j->recs[2].image_path) ||
             strcmp(j->recs[0].image_path, j->recs[1].image_path) == 0;   /* (records 0 and 1 must not share an image) */
    refer_join_free(j);
    if (rc) return -1;
    /* MS3 train: mask 3 of m1 with a damaged IDAT byte (CRC error) */
    if (copy_tree(FIX "/avsbench/ms3", g_ms3_bad)) return -1;
    char p[600];
    snprintf(p, sizeof p, "%s/ms3_data/gt_masks/train/m1/m1_3.png", g_ms3_bad);
    FILE *f = fopen(p, "r+b");
    if (!f) return -1;
    long n = file_size(p);
    fseek(f, n / 2, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, n / 2, SEEK_SET);
    fputc(ch ^ 0x5a, f);
    fclose(f);
    /* custom: a malformed JSON line appended, a record whose image is deleted after the load */
    if (copy_tree(FIX "/custom", g_custom_bad)) return -1;
    snprintf(p, sizeof p, "%s/data.jsonl", g_custom_bad);
    f = fopen(p, "ab");
    if (!f) return -1;
    fputs("\n{\"image\": \"img/a.png\", \"text\": \"x\" \"mask\": 3}\n", f);
    fclose(f);
    return 0;
}

/* Evaluation order with every_sentence: one sample per (ref, sentence), in
 * order; group = the ref, part = the sentence, image_id the ref's, the
 * question carrying that sentence; ldr_group_texts gives every sentence of
 * the ref. A caption source is not expanded. */
static void test_every_sentence(void) {
    ldr_cfg c;
    base_cfg(&c);
    c.shuffle = 0;
    c.n_sources = 1;
    c.src[0] = src_refer("refcoco", g_img_ok, 0, 1);
    c.src[0].every_sentence = 1;
    refer_join *j = refer_join_load(c.src[0].root, "refcoco", NULL, "train", g_img_ok, REFER_IMAGES_REFER);
    ldr *l = j ? open_started(&c, 1, 0, 0) : NULL;
    if (!j || !l) { t_fail("every_sentence", "open: %s", ar_error()); refer_join_free(j); ldr_free(l); return; }
    int64_t want = 0;
    for (size_t r = 0; r < j->n; r++) want += j->recs[r].n_sentences > 0 ? j->recs[r].n_sentences : 1;
    int bad = 0, texts_bad = 0;
    char why[300] = "";
    int64_t i = 0;
    for (size_t r = 0; r < j->n && !bad; r++)
        for (int k = 0; k < (j->recs[r].n_sentences > 0 ? j->recs[r].n_sentences : 1) && !bad; k++, i++) {
            const ldr_item *it = NULL;
            if (ldr_build_row(l, i, 0, &it) != 0 || !it) { snprintf(why, sizeof why, "row %lld: %s", (long long)i, ar_error()); bad = 1; break; }
            const char *sent = j->recs[r].n_sentences > 0 ? j->recs[r].sentences[k].sent : "";
            if (it->group != (int64_t)r || it->part != k || it->image_id != j->recs[r].image_id || !strstr(it->question, sent)) {
                snprintf(why, sizeof why, "row %lld: group %lld part %d image %lld, question \"%.80s\" (expected ref %zu sentence %d \"%.60s\")",
                         (long long)i, (long long)it->group, it->part, (long long)it->image_id, it->question, r, k, sent);
                bad = 1;
            }
            const char *t[64];
            int nt = ldr_group_texts(l, 0, it->group, t, 64);
            texts_bad += nt != j->recs[r].n_sentences || (nt > k && strcmp(t[k], sent));
        }
    t_check(!bad && ldr_rows(l) == want && i == want && texts_bad == 0, "every_sentence: one sample per (ref, sentence)",
            "%lld rows for %zu refs (expected %lld), group texts wrong %d%s%s", (long long)ldr_rows(l), j->n, (long long)want,
            texts_bad, why[0] ? "; " : "", why);
    ldr_free(l);
    c.src[0].caption = 1;   /* captions are scored per ref: not expanded */
    l = ldr_open(&c);
    t_check(l && ldr_rows(l) == (int64_t)j->n, "every_sentence: caption sources stay one sample per ref", "%lld rows, %zu refs",
            l ? (long long)ldr_rows(l) : -1LL, j->n);
    ldr_free(l);
    refer_join_free(j);
}

int main(void) {
    if (make_fixtures()) { t_fail("fixtures", "temporary tree %s: %s", g_tmp, ar_error()); return t_exit_code(); }
    test_fields(0, CLIP_S, SAM_S, TT);
    test_fields(1, CLIP_S, SAM_S, TT);
    test_fields(0, 0, 0, 250);   /* text only: nothing decoded, the placeholder dropped; T cuts some [SEG] off */
    test_options();
    test_every_sentence();
    test_stream();
    test_data_parallel();
    test_epochs_single();
    weighted_case(3, 1, 12, 9, 3);
    weighted_case(2, 1, 10, 7, 3);   /* 6.67 / 3.33: the remainder goes to the larger one */
    test_broken(0);
    test_broken(2);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd)) printf("  could not remove %s\n", g_tmp);
    return t_exit_code();
}
