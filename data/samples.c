/* data/samples.c — records -> question/answer samples (see samples.h). */
#include "data/samples.h"

#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"
#include "data/image.h"
#include "data/rle.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void sample_options_default(sample_options *o) {
    memset(o, 0, sizeof *o);
    o->seed = 0;
    o->image_token = "<image>";
    o->image_ref_start = "<img_ref_start>";
    o->image_ref_end = "<img_ref_end>";
    o->audio_ref_start = "<audio_ref_start>";
    o->audio_ref_end = "<audio_ref_end>";
    o->q_seg = "Can you segment the {ref} in this image?";
    o->q_audio = "Can you segment object with the following audio {ref} in this image?";
    o->q_caption = "Can you provide a description of the region {ref} in this image?";
    o->a_seg = "{expr}[SEG].";
    o->a_seg_plain = "It is [SEG].";
    o->plain_p = 0.5;
    o->a_avs_plain = "it is [SEG].";
    o->a_caption = "{expr}.";
}

const char *sample_ref_name(sample_ref r) {
    switch (r) {
    case SAMPLE_REF_TEXT: return "text";
    case SAMPLE_REF_BOX: return "box";
    case SAMPLE_REF_IMAGE: return "image";
    case SAMPLE_REF_AUDIO: return "audio";
    }
    return "?";
}

void ar_sample_free(ar_sample *s) {
    if (!s) return;
    free(s->split);
    free(s->image);
    free(s->question);
    free(s->answer);
    memset(s, 0, sizeof *s);
}

/* prefix + tpl with "{ref}" -> ref and "{expr}" -> expr (NULL: ""). malloc'd. */
static char *fill(const char *prefix, const char *tpl, const char *ref, const char *expr) {
    size_t n = strlen(prefix) + 1, lr = ref ? strlen(ref) : 0, le = expr ? strlen(expr) : 0;
    for (const char *p = tpl; *p; p++) n += 1 + lr + le;   /* generous bound */
    char *s = malloc(n), *q = s;
    if (!s) { ar_errorf("out of memory"); return NULL; }
    q += sprintf(q, "%s", prefix);
    for (const char *p = tpl; *p;) {
        if (!strncmp(p, "{ref}", 5)) { memcpy(q, ref ? ref : "", lr); q += lr; p += 5; }
        else if (!strncmp(p, "{expr}", 6)) { memcpy(q, expr ? expr : "", le); q += le; p += 6; }
        else *q++ = *p++;
    }
    *q = 0;
    return s;
}

static char *dupstr(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) ar_errorf("out of memory");
    return d;
}

/* Whether a segmentation answer is the plain one: a fair coin at p = 0.5 (the
 * default: one draw of rng_below(g, 2), as before the option existed), else
 * a uniform draw against p (the coin is drawn either way, so the streams of
 * the later choices do not depend on p). */
static int draw_plain(ar_rng *g, double p) {
    const int coin = rng_below(g, 2) == 1;
    if (p == 0.5) return coin;
    if (p <= 0) return 0;
    if (p >= 1) return 1;
    return (double)(rng_u64(g) >> 11) * 0x1.0p-53 < p;
}

/* question = image_token + "\n" + q_tpl(ref); answer = a_tpl(expr). */
static int set_qa(ar_sample *s, const sample_options *o, const char *q_tpl, const char *ref, const char *a_tpl,
                  const char *expr) {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s\n", o->image_token);
    s->question = fill(prefix, q_tpl, ref, NULL);
    s->answer = fill("", a_tpl, NULL, expr);
    return s->question && s->answer ? 0 : -1;
}

static void marker(char *buf, size_t n, const char *a, const char *b) { snprintf(buf, n, "%s%s", a, b); }

static int start(ar_sample *out, const char *dataset, const char *split, const char *image, size_t record) {
    memset(out, 0, sizeof *out);
    snprintf(out->dataset, sizeof out->dataset, "%s", dataset);
    out->record = record;
    out->frame = -1;
    out->split = dupstr(split);
    out->image = dupstr(image);
    return out->split && out->image ? 0 : -1;
}

int sample_from_refer(const refer_join *j, size_t i, int caption, const sample_options *o, ar_sample *out) {
    return sample_from_refer_sentence(j, i, -1, caption, o, out);
}

int sample_from_refer_sentence(const refer_join *j, size_t i, int sent_i, int caption, const sample_options *o,
                               ar_sample *out) {
    if (!j || i >= j->n) { memset(out, 0, sizeof *out); return ar_errorf("sample_from_refer: record %zu out of range", i); }
    const refer_record *r = &j->recs[i];
    if (sent_i >= r->n_sentences) {
        memset(out, 0, sizeof *out);
        return ar_errorf("sample_from_refer: ref %lld has %d sentences, not %d", (long long)r->ref_id, r->n_sentences, sent_i + 1);
    }
    if (start(out, j->refs->name, j->split, r->image_path, i)) goto fail;
    out->height = (int)r->height;
    out->width = (int)r->width;
    ar_rng g;
    rng_seed(&g, rng_derive(o->seed, i));
    const char *sent = r->n_sentences <= 0 ? ""
                       : sent_i >= 0 ? r->sentences[sent_i].sent
                                     : r->sentences[rng_below(&g, (uint64_t)r->n_sentences)].sent;
    if (caption) {
        char m[256];
        marker(m, sizeof m, o->image_ref_start, o->image_ref_end);
        out->ref = SAMPLE_REF_BOX;
        out->has_box = 1;
        out->box[0] = r->bbox[0];
        out->box[1] = r->bbox[1];
        out->box[2] = r->bbox[0] + r->bbox[2];
        out->box[3] = r->bbox[1] + r->bbox[3];
        if (set_qa(out, o, o->q_caption, m, o->a_caption, sent)) goto fail;
    } else {
        int plain = draw_plain(&g, o->plain_p);
        out->ref = SAMPLE_REF_TEXT;
        if (set_qa(out, o, o->q_seg, sent, plain ? o->a_seg_plain : o->a_seg, sent)) goto fail;
        out->n_masks = 1;
        out->mask_area[0] = rle_area(&r->mask);
    }
    return 0;
fail:
    ar_sample_free(out);
    return -1;
}

int sample_from_avs(const avs_set *s, size_t i, const sample_options *o, ar_sample *out) {
    size_t ri;
    int k;
    memset(out, 0, sizeof *out);
    if (!s || avs_sample(s, i, &ri, &k)) return ar_errorf("sample_from_avs: sample %zu out of range", i);
    const avs_record *r = &s->records[ri];
    if (start(out, s->subset == AVS_S4 ? "s4" : "ms3", s->split, r->frame[k], ri)) goto fail;
    out->frame = k;
    if (image_probe_size(r->frame[k], &out->height, &out->width)) goto fail;
    char m[256];
    marker(m, sizeof m, o->audio_ref_start, o->audio_ref_end);
    out->ref = SAMPLE_REF_AUDIO;
    const char *cls = s->subset == AVS_S4 && r->category ? avs_class_name(r->category) : NULL;
    if (set_qa(out, o, o->q_audio, m, cls ? o->a_seg : o->a_avs_plain, cls)) goto fail;
    out->n_masks = 1;
    if (!o->no_mask_area) {
        ar_image mk = {0};
        if (avs_load_mask(r, k, &mk)) goto fail;
        uint64_t a = 0;
        for (size_t p = 0; p < (size_t)mk.h * mk.w; p++) a += mk.px[p] != 0;
        image_free(&mk);
        out->mask_area[0] = a;
    }
    return 0;
fail:
    ar_sample_free(out);
    return -1;
}

int sample_from_custom(cj_dataset *ds, size_t i, const char *dataset, const sample_options *o, ar_sample *out) {
    memset(out, 0, sizeof *out);
    if (!ds || i >= ds->n) return ar_errorf("sample_from_custom: record %zu out of range", i);
    cj_record *r = &ds->recs[i];
    if (start(out, dataset, r->split, r->image, i)) goto fail;
    if (!r->height || !r->width) {
        if (image_probe_size(r->image, &r->height, &r->width)) goto fail;
    }
    out->height = r->height;
    out->width = r->width;
    char m[256];
    switch (r->ref) {
    case CJ_REF_TEXT: out->ref = SAMPLE_REF_TEXT; snprintf(m, sizeof m, "%s", ""); break;
    case CJ_REF_BOX:
        out->ref = SAMPLE_REF_BOX;
        out->has_box = 1;
        memcpy(out->box, r->box, sizeof out->box);
        marker(m, sizeof m, o->image_ref_start, o->image_ref_end);
        break;
    case CJ_REF_IMAGE: out->ref = SAMPLE_REF_IMAGE; marker(m, sizeof m, o->image_ref_start, o->image_ref_end); break;
    case CJ_REF_AUDIO: out->ref = SAMPLE_REF_AUDIO; marker(m, sizeof m, o->audio_ref_start, o->audio_ref_end); break;
    }
    const char *ref = r->ref == CJ_REF_TEXT ? r->text : m;
    ar_rng g;
    rng_seed(&g, rng_derive(o->seed, i));
    if (r->qa == CJ_LITERAL) {
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%s\n", o->image_token);
        out->question = fill(strstr(r->question, o->image_token) ? "" : prefix, "{ref}", r->question, NULL);
        out->answer = dupstr(r->answer);
        if (!out->question || !out->answer) goto fail;
    } else if (r->qa == CJ_TEMPLATE_CAPTION) {
        if (set_qa(out, o, o->q_caption, ref, o->a_caption, r->expression)) goto fail;
    } else {
        const char *expr = r->expression ? r->expression : r->ref == CJ_REF_TEXT ? r->text : NULL;
        int plain = draw_plain(&g, o->plain_p) || !expr;
        if (set_qa(out, o, r->ref == CJ_REF_AUDIO ? o->q_audio : o->q_seg, ref, plain ? o->a_seg_plain : o->a_seg,
                   expr))
            goto fail;
    }
    if (r->mask != CJ_MASK_NONE) {
        out->n_masks = 1;
        if (!o->no_mask_area) {
            rle_mask rm = {0};
            if (cj_record_mask(r, &rm)) goto fail;
            out->mask_area[0] = rle_area(&rm);
            rle_free(&rm);
        }
    }
    return 0;
fail:
    ar_sample_free(out);
    return -1;
}

static int wstr(FILE *f, const char *key, const char *v) {
    fprintf(f, ",\"%s\":", key);
    return json_write_string(f, v, strlen(v));
}

int sample_write_json(FILE *f, const ar_sample *s, long tokens) {
    fputs("{\"dataset\":", f);
    if (json_write_string(f, s->dataset, strlen(s->dataset)) || wstr(f, "split", s->split) ||
        wstr(f, "image", s->image))
        return -1;
    fprintf(f, ",\"height\":%d,\"width\":%d", s->height, s->width);
    if (wstr(f, "question", s->question) || wstr(f, "answer", s->answer) || wstr(f, "reference", sample_ref_name(s->ref)))
        return -1;
    if (s->has_box) fprintf(f, ",\"box\":[%.17g,%.17g,%.17g,%.17g]", s->box[0], s->box[1], s->box[2], s->box[3]);
    else fputs(",\"box\":null", f);
    fputs(",\"mask_area\":[", f);
    for (int m = 0; m < s->n_masks; m++) fprintf(f, "%s%" PRIu64, m ? "," : "", s->mask_area[m]);
    fputs("]", f);
    if (tokens >= 0) fprintf(f, ",\"tokens\":%ld}\n", tokens);
    else fputs(",\"tokens\":null}\n", f);
    return ferror(f) ? ar_errorf("write error") : 0;
}
