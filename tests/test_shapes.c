/* tests/test_shapes.c — the shapes world (data/shapes.c) written into a
 * mkdtemp directory and read back through the real loaders:
 *   REFER   refer_join_load of every split (refcoco layout, REFER images):
 *           nothing skipped, counts as generated, each record's size,
 *           category, box and mask equal to the scene's polygon rasterised
 *           (rle_from_poly), the JPEG decodes at that size and shows the
 *           object's colour on its visible pixels, every sentence one of
 *           shapes_expressions, its tokens and raw as written, and TRUE OF
 *           EXACTLY ITS OBJECT by an evaluator written here from the grammar
 *           (attributes, superlatives, relations; crowds count as small
 *           circles); COCO areas = rle_area(annToRLE), crowds as counts RLEs
 *   AVS     avs_load of train/val/test: categories, frames pixel-exact (PNG)
 *           against the rendered scene, masks (frame 1 only in train) equal
 *           to the sounding object's mask, the WAV equal to the synthesised
 *           samples, avs_load_audio finite, each class's tone at its pitch
 *   JSONL   cj_load with decode: nothing bad, counts, boxes = extents,
 *           masks (cj_record_mask) = the objects' masks, crops decodable
 *   TOKENS  tok_load: the vocabulary size, every sentence word one token,
 *           round trips, the system prompt free of <unk>
 *   LOADER  ldr_open over the three sets with every reference kind, a few
 *           batches: nothing broken, masks = the records' masks, no <unk>
 *           inside the text
 *   SEEDS   the same seed gives byte-identical files, another seed others;
 *           bad arguments and unwritable directories are errors.
 */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/avsbench.h"
#include "data/custom_jsonl.h"
#include "data/grounding_dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/refer_samples.h"
#include "data/shapes.h"
#include "data/tokenizer.h"
#include "data/wav.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[256], g_dir2[300], g_dir3[300];
static shapes_cfg g_cfg;
static shapes_stats g_st;
static shapes_scene *g_scene;   /* every image's scene */
static int64_t *g_first_ann;    /* per image */
static int g_n;

static const char *const k_splits[4] = {"train", "val", "testA", "testB"};

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long L = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)L + 1);
    if (b && fread(b, 1, (size_t)L, f) != (size_t)L) { free(b); b = NULL; }
    fclose(f);
    if (b) *n = (size_t)L;
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return same;
}

static int rle_equal(const rle_mask *a, const rle_mask *b) {
    return a->h == b->h && a->w == b->w && a->m == b->m && !memcmp(a->cnts, b->cnts, a->m * sizeof *a->cnts);
}

/* (image, object) of an annotation id. */
static int find_ann(int64_t ann, int *img, int *k) {
    for (int i = 0; i < g_n; i++)
        if (ann >= g_first_ann[i] && ann < g_first_ann[i] + g_scene[i].n) {
            *img = i, *k = (int)(ann - g_first_ann[i]);
            return 0;
        }
    return -1;
}

/* ---------------------------------------------------------------- evaluator */
static int word_index(const char *w, const char *(*name)(int), int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(w, name(i))) return i;
    return -1;
}

/* The objects the sentence denotes, as a bit set; -1 when it does not parse.
 * Independent of data/shapes.c's generator: literal meanings, and
 * superlatives only when they win by a visible margin. */
static int denote(const shapes_scene *s, const char *sent) {
    char buf[SHAPES_EXPR_LEN];
    snprintf(buf, sizeof buf, "%s", sent);
    const char *w[12];
    int n = 0;
    for (char *t = strtok(buf, " "); t && n < 12; t = strtok(NULL, " ")) w[n++] = t;
    if (n < 1) return -1;
    int m = s->h < s->w ? s->h : s->w, set = 0;
    static const char *sup[6] = {"smallest", "largest", "leftmost", "rightmost", "highest", "lowest"};
    static const char *rel[4] = {"left", "right", "above", "below"};
    int d = -1;
    for (int q = 0; q < 6; q++)
        if (!strcmp(w[0], sup[q])) d = q;
    if (d >= 0 && n == 2) {
        int cls = strcmp(w[1], "shape") ? word_index(w[1], shapes_class_name, SHAPES_CLASSES) : -1;
        if (cls < 0 && strcmp(w[1], "shape")) return -1;
        int best = -1;
        double bv = 0, second = INFINITY;
        for (int j = 0; j < s->n; j++) {
            const shapes_object *o = &s->obj[j];
            if (cls >= 0 && o->cls != cls) continue;
            double v = d == 0 ? log((double)o->area) : d == 1 ? -log((double)o->area) : d == 2 ? o->cx
                     : d == 3 ? -o->cx : d == 4 ? o->cy : -o->cy;   /* smaller wins */
            if (best < 0 || v < bv) {
                if (best >= 0) second = bv;
                best = j, bv = v;
            } else if (v < second) second = v;
        }
        double margin = d < 2 ? log(1.5) : 0.1 * m;
        if (best < 0 || !(second - bv >= margin)) return 0;
        return 1 << best;
    }
    /* CLASS REL the COLOUR CLASS ("left of" / "right of" are two words) */
    int r = -1;
    for (int q = 0; q < 4; q++)
        if (n >= 2 && !strcmp(w[1], rel[q])) r = q;
    if (r >= 0) {
        int at = r < 2 ? 3 : 2;   /* skip "of" */
        if (r < 2 && (n != 6 || strcmp(w[2], "of"))) return -1;
        if (r >= 2 && n != 5) return -1;
        if (strcmp(w[at], "the")) return -1;
        int cls = word_index(w[0], shapes_class_name, SHAPES_CLASSES);
        int acol = word_index(w[at + 1], shapes_colour_name, SHAPES_COLOURS);
        int acls = word_index(w[at + 2], shapes_class_name, SHAPES_CLASSES);
        if (cls < 0 || acol < 0 || acls < 0) return -1;
        int anchor = -1, na = 0;
        for (int j = 0; j < s->n; j++)
            if (s->obj[j].cls == acls && s->obj[j].col == acol) anchor = j, na++;
        if (na != 1 || s->obj[anchor].crowd) return 0;
        const shapes_object *A = &s->obj[anchor];
        for (int j = 0; j < s->n; j++) {
            const shapes_object *o = &s->obj[j];
            if (j == anchor || o->cls != cls) continue;
            double dx = o->cx - A->cx, dy = o->cy - A->cy;
            int on = r == 0 ? dx < 0 : r == 1 ? dx > 0 : r == 2 ? dy < 0 : dy > 0;
            if (on) set |= 1 << j;
        }
        return set;
    }
    /* [size] [colour] CLASS|shape */
    int big = -1, col = -1, cls = -1, i = 0;
    if (i < n - 1 && (!strcmp(w[i], "small") || !strcmp(w[i], "large"))) big = !strcmp(w[i++], "large");
    if (i < n - 1 && (col = word_index(w[i], shapes_colour_name, SHAPES_COLOURS)) >= 0) i++;
    if (i != n - 1) return -1;
    if (strcmp(w[i], "shape") && (cls = word_index(w[i], shapes_class_name, SHAPES_CLASSES)) < 0) return -1;
    if (!strcmp(w[i], "shape") && big < 0 && col < 0) return -1;
    for (int j = 0; j < s->n; j++) {
        const shapes_object *o = &s->obj[j];
        if ((cls < 0 || o->cls == cls) && (col < 0 || o->col == col) && (big < 0 || o->big == big)) set |= 1 << j;
    }
    return set;
}

/* ---------------------------------------------------------------- generation */
static int gen(const char *dir, uint64_t seed, shapes_stats *st, double *secs) {
    shapes_cfg c = g_cfg;
    c.seed = seed;
    double t0 = ar_now();
    int rc = shapes_generate(dir, &c, st);
    *secs = ar_now() - t0;
    return rc;
}

static void test_generate(void) {
    double secs;
    int rc = gen(g_dir, g_cfg.seed, &g_st, &secs);
    if (!t_check(rc == 0, "shapes generate", "tiny world in %.3f s, %d files, %.2f MB%s%s", secs, g_st.files,
                 g_st.bytes / 1e6, rc ? ": " : "", rc ? ar_error() : ""))
        return;
    g_n = shapes_n_images(&g_cfg);
    g_scene = calloc((size_t)g_n, sizeof *g_scene);
    g_first_ann = calloc((size_t)g_n, sizeof *g_first_ann);
    int64_t next = 1;
    int ok = 1, crowds = 0;
    for (int i = 0; i < g_n && ok; i++) {
        ok = !shapes_scene_make(&g_cfg, i, &g_scene[i]);
        g_first_ann[i] = next;
        next += g_scene[i].n;
        for (int k = 0; k < g_scene[i].n; k++) crowds += g_scene[i].obj[k].crowd;
    }
    t_check(ok && next - 1 == g_st.anns && crowds == g_st.crowds, "shapes scenes", "%d images, %lld anns (%d crowd)",
            g_n, (long long)(next - 1), crowds);
    int sizes_ok = 1, hmin = 1 << 30, hmax = 0, two_sizes = 0;
    for (int i = 0; i < g_n; i++) {
        const shapes_scene *s = &g_scene[i];
        if (s->h % 8 || s->w % 8 || s->h < g_cfg.min_side || s->w > g_cfg.max_side || s->n < 2 || s->n > 5) sizes_ok = 0;
        hmin = s->h < hmin ? s->h : hmin, hmax = s->h > hmax ? s->h : hmax;
        if (s->h != s->w) two_sizes = 1;
    }
    t_check(sizes_ok && hmax > hmin && two_sizes, "shapes image sizes", "heights %d..%d, non-square present", hmin, hmax);
}

/* ---------------------------------------------------------------- REFER / COCO */
static void test_refer(void) {
    char root[512];
    snprintf(root, sizeof root, "%s/refer_seg", g_dir);
    int total_sent = 0, bad_sent = 0, bad_mask = 0, bad_field = 0, bad_pixels = 0, bad_img = 0, ambiguous = 0;
    double worst_colour = 0;
    int n_interior = 0;
    for (int sp = 0; sp < 4; sp++) {
        refer_join *j = refer_join_load(root, "refcoco", NULL, k_splits[sp], root, REFER_IMAGES_REFER);
        if (!t_check(j != NULL, "shapes refer_join_load", "%s: %s", k_splits[sp], j ? "loaded" : ar_error())) continue;
        t_check(j->n > 0 && (int)j->n == g_st.refs[sp] && j->n_skipped == 0 && j->refs->n_skipped == 0,
                "shapes refer split", "%s: %zu refs (generated %d), %zu skipped", k_splits[sp], j->n, g_st.refs[sp],
                j->n_skipped);
        for (size_t q = 0; q < j->n; q++) {
            const refer_record *rc = &j->recs[q];
            int im = -1, k = -1;
            if (find_ann(rc->ann_id, &im, &k) || rc->image_id != im + 1) { bad_field++; continue; }
            const shapes_scene *s = &g_scene[im];
            const shapes_object *o = &s->obj[k];
            if ((int)rc->height != s->h || (int)rc->width != s->w || strcmp(rc->category, shapes_class_name(o->cls)) ||
                rc->category_id != o->cls + 1 || rc->iscrowd || o->crowd || strcmp(rc->split, k_splits[sp]) ||
                memcmp(rc->bbox, o->bbox, sizeof o->bbox))
                bad_field++;
            /* the mask is the polygon rasterised, independently of the file */
            rle_mask pm;
            if (rle_from_poly(&pm, o->xy, (size_t)o->nv, (uint32_t)s->h, (uint32_t)s->w) ||
                !rle_equal(&pm, &rc->mask) || rle_area(&pm) != o->area)
                bad_mask++;
            rle_free(&pm);
            /* the image shows the object's colour where it is visible */
            ar_image img;
            if (image_load(&img, rc->image_path, IMAGE_RGB) || img.h != s->h || img.w != s->w) {
                bad_img++;
            } else {
                uint8_t *mk = malloc((size_t)s->h * s->w), *cover = calloc((size_t)s->h * s->w, 1);
                for (int later = k + 1; later < s->n; later++) {
                    rle_decode_hw(&s->obj[later].mask, mk);
                    for (size_t p = 0; p < (size_t)s->h * s->w; p++) cover[p] |= mk[p];
                }
                rle_decode_hw(&o->mask, mk);
                /* visible and 2 px inside the shape (JPEG's 4:2:0 chroma
                 * blurs the edges of small shapes) */
                double sum[3] = {0}, cnt = 0, vis = 0;
                for (int y = 0; y < s->h; y++)
                    for (int x = 0; x < s->w; x++) {
                        size_t p = (size_t)y * s->w + x;
                        if (!mk[p] || cover[p]) continue;
                        vis++;
                        int in = 1;
                        for (int dy = -2; dy <= 2 && in; dy++)
                            for (int dx = -2; dx <= 2 && in; dx++) {
                                int yy = y + dy, xx = x + dx;
                                in = yy >= 0 && yy < s->h && xx >= 0 && xx < s->w && mk[(size_t)yy * s->w + xx] &&
                                     !cover[(size_t)yy * s->w + xx];
                            }
                        if (!in) continue;
                        for (int ch = 0; ch < 3; ch++) sum[ch] += img.px[p * 3 + ch];
                        cnt++;
                    }
                const uint8_t *want = shapes_colour_rgb(o->col);
                double err = 0;
                for (int ch = 0; ch < 3; ch++) err = fmax(err, fabs(sum[ch] / fmax(cnt, 1) - want[ch]));
                if (vis < 0.75 * o->area || cnt < 1 || err > 20) bad_pixels++;
                n_interior += cnt > 0;
                worst_colour = fmax(worst_colour, err);
                free(mk), free(cover);
                image_free(&img);
            }
            /* sentences */
            char ex[SHAPES_MAX_EXPR][SHAPES_EXPR_LEN];
            int ne = shapes_expressions(s, k, ex, SHAPES_MAX_EXPR);
            if (rc->n_sentences < 1 || rc->n_sentences > 3) bad_sent++;
            for (int t = 0; t < rc->n_sentences; t++) {
                const refer_sentence *se = &rc->sentences[t];
                total_sent++;
                int listed = 0;
                for (int e = 0; e < ne; e++) listed |= !strcmp(ex[e], se->sent);
                char joined[256] = "", raw[SHAPES_EXPR_LEN];
                for (int u = 0; u < se->n_tokens; u++)
                    snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", u ? " " : "", se->tokens[u]);
                snprintf(raw, sizeof raw, "%s", se->sent);
                raw[0] = (char)(raw[0] - 'a' + 'A');
                if (!listed || strcmp(joined, se->sent) || !se->raw || strcmp(se->raw, raw)) bad_sent++;
                if (denote(s, se->sent) != 1 << k) {
                    if (ambiguous++ < 3) printf("  ambiguous: image %d object %d: \"%s\" denotes 0x%x\n", im, k, se->sent, denote(s, se->sent));
                }
            }
        }
        /* COCO: every annotation's area and the crowds, once */
        if (sp == 0) {
            int bad_area = 0, n_crowd = 0, bad_crowd = 0;
            for (size_t a = 0; a < j->coco.n_anns; a++) {
                const coco_annotation *an = &j->coco.anns[a];
                rle_mask m;
                if (coco_ann_to_rle(&j->coco, an, &m)) { bad_area++; continue; }
                if (an->area != (double)rle_area(&m)) bad_area++;
                int im = 0, k = 0;
                if (find_ann(an->id, &im, &k) || !rle_equal(&m, &g_scene[im].obj[k].mask)) bad_area++;
                if (an->iscrowd) {
                    n_crowd++;
                    if (an->seg != COCO_SEG_COUNTS || !g_scene[im].obj[k].crowd) bad_crowd++;
                } else if (an->seg != COCO_SEG_POLYGONS || an->n_poly != 1) bad_crowd++;
                rle_free(&m);
            }
            t_check(j->coco.n_anns == (size_t)g_st.anns && !bad_area && !bad_crowd && n_crowd == g_st.crowds &&
                        n_crowd > 0 && j->coco.n_bad_anns == 0 && j->coco.n_images == (size_t)g_n && j->coco.n_cats == 5,
                    "shapes coco", "%zu anns, %d crowd (counts RLE), areas = rle_area(annToRLE) (bad %d), masks = scenes",
                    j->coco.n_anns, n_crowd, bad_area);
        }
        refer_join_free(j);
    }
    t_check(!bad_field && !bad_mask && !bad_img, "shapes refer records", "fields bad %d, masks != polygon %d, images bad %d",
            bad_field, bad_mask, bad_img);
    t_check(!bad_pixels, "shapes refer pixels",
            "%d objects >= 75%% visible, mean of the pixels 2 px inside within %.1f levels of the colour (bar 20)",
            n_interior, worst_colour);
    t_check(total_sent > 0 && !bad_sent && !ambiguous, "shapes refer sentences",
            "%d sentences: all generated expressions, tokens/raw as written (bad %d), each denoting only its object "
            "(ambiguous %d)", total_sent, bad_sent, ambiguous);
}

/* ---------------------------------------------------------------- AVSBench */
static int video_index(const char *name) {
    int v = -1;
    return sscanf(name, "sv%d", &v) == 1 ? v : -1;
}

static void test_avs(void) {
    char root[512];
    snprintf(root, sizeof root, "%s/avsbench", g_dir);
    static const char *sp[3] = {"train", "val", "test"};
    shapes_video *V = malloc(sizeof *V);
    ar_fbank *fb = NULL;
    int audio_checked = 0, pitch_ok = 1;
    for (int s = 0; s < 3; s++) {
        avs_set *A = avs_load(root, "s4", sp[s], NULL);
        if (!t_check(A != NULL, "shapes avs_load", "%s: %s", sp[s], A ? "loaded" : ar_error())) continue;
        int bad = 0, frames = 0, masks = 0, plain = 0;
        for (size_t r = 0; r < A->n_records; r++) {
            const avs_record *rec = &A->records[r];
            int v = video_index(rec->video);
            if (v < 0 || shapes_video_make(&g_cfg, v, V)) { bad++; continue; }
            if (strcmp(rec->category, shapes_avs_category(V->cls)) || strcmp(shapes_video_split(&g_cfg, v), sp[s])) bad++;
            plain += avs_class_name(rec->category) == NULL;
            const shapes_scene *f0 = &V->frame[0];
            for (int k = 0; k < 5; k++) {
                ar_image im;
                if (avs_load_frame(rec, k, &im)) { bad++; continue; }
                if (im.h != f0->h || im.w != f0->w || memcmp(im.px, V->frame[k].px, (size_t)im.h * im.w * 3)) bad++;
                image_free(&im);
                frames++;
                if (s == 0 && k > 0) {
                    if (rec->mask[k]) bad++;
                    continue;
                }
                ar_image m;
                if (avs_load_mask(rec, k, &m)) { bad++; continue; }
                uint8_t *want = malloc((size_t)m.h * m.w);
                rle_decode_hw(&V->frame[k].obj[V->sounding].mask, want);
                if (m.h != f0->h || m.w != f0->w || memcmp(m.px, want, (size_t)m.h * m.w)) bad++;
                free(want);
                image_free(&m);
                masks++;
            }
            ar_wav wv;
            if (ar_wav_read(rec->wav, &wv)) { bad++; continue; }
            int wav_bad = wv.sample_rate != SHAPES_AUDIO_RATE || wv.channels != 1 || wv.frames != SHAPES_AUDIO_SAMPLES;
            for (int64_t q = 0; !wav_bad && q < wv.frames; q++) wav_bad = wv.data[q] != V->pcm[q] / 32768.0f;
            /* the tone's pitch: zero crossings of the samples' sign per second */
            if (!wav_bad && (V->cls == 0 || V->cls == 4)) {
                int zc = 0;
                for (int64_t q = 1; q < wv.frames; q++) zc += (wv.data[q - 1] < 0) != (wv.data[q] < 0);
                double hz = zc / 2.0 / 5.0;
                /* circle 262 Hz continuous; star 880 Hz gated half the time */
                if (V->cls == 0 && fabs(hz - 262) > 262 * 0.05) pitch_ok = 0;
                if (V->cls == 4 && (hz < 300 || hz > 900)) pitch_ok = 0;
            }
            bad += wav_bad;
            ar_wav_free(&wv);
            if (audio_checked < 2) {
                float *au = malloc(sizeof(float) * AVS_AUDIO_FLOATS);
                if (avs_load_audio(rec, fb, au)) bad++;
                else {
                    double sum = 0;
                    int fin = 1;
                    for (size_t q = 0; q < AVS_AUDIO_FLOATS; q++) fin &= isfinite(au[q]), sum += fabs(au[q]);
                    if (!fin || sum == 0) bad++;
                }
                free(au);
                audio_checked++;
            }
            shapes_video_free(V);
        }
        t_check(A->n_records > 0 && (int)A->n_records == g_st.videos[s] && !bad && A->n_bad_rows == 0 &&
                    plain == (int)A->n_records,
                "shapes avs", "%s: %zu videos, %d frames pixel-exact, %d masks = sounding object, WAVs = samples "
                "(bad %d); categories outside AnyRef's 23: plain answer", sp[s], A->n_records, frames, masks, bad);
        avs_free(A);
    }
    t_check(pitch_ok && audio_checked == 2, "shapes avs audio", "tone pitches by zero crossings, avs_load_audio of 2 WAVs finite");
    ar_fbank_free(fb);
    free(V);
}

/* ---------------------------------------------------------------- JSON lines */
static void test_jsonl(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/custom/shapes.jsonl", g_dir);
    cj_options opt = {.check_files = 1, .decode = 1};
    cj_dataset ds;
    if (!t_check(cj_load(path, &opt, &ds) == 0, "shapes cj_load", "%s", path)) return;
    int nbox = 0, ncap = 0, ncrop = 0, bad = 0, val = 0;
    for (size_t i = 0; i < ds.n; i++) {
        cj_record *r = &ds.recs[i];
        long long ann = -1;
        const char *dash = strchr(r->id, '-');
        if (dash) ann = atoll(dash + 1);
        int im, k;
        if (find_ann(ann, &im, &k)) { bad++; continue; }
        const shapes_scene *s = &g_scene[im];
        const shapes_object *o = &s->obj[k];
        val += !strcmp(r->split, "val");
        if (strcmp(r->split, shapes_image_split(&g_cfg, im)) || r->height != s->h || r->width != s->w) bad++;
        char want[64];
        if (!strncmp(r->id, "box-", 4) || !strncmp(r->id, "caption-", 8)) {
            int cap = r->id[0] == 'c';
            cap ? ncap++ : nbox++;
            double bb[4] = {o->bbox[0], o->bbox[1], o->bbox[0] + o->bbox[2], o->bbox[1] + o->bbox[3]};
            for (int q = 0; q < 4; q++)
                if (fabs(r->box[q] - bb[q]) > 0.006) bad++;
            if (cap) snprintf(want, sizeof want, "a %s %s %s", o->big ? "large" : "small", shapes_colour_name(o->col), shapes_class_name(o->cls));
            else snprintf(want, sizeof want, "%s %s", shapes_colour_name(o->col), shapes_class_name(o->cls));
            if (r->ref != CJ_REF_BOX || r->qa != (cap ? CJ_TEMPLATE_CAPTION : CJ_TEMPLATE_SEG) ||
                r->mask != (cap ? CJ_MASK_NONE : CJ_MASK_POLYGON) || !r->expression || strcmp(r->expression, want))
                bad++;
        } else if (!strncmp(r->id, "crop-", 5)) {
            ncrop++;
            int same = 0;
            for (int q = 0; q < s->n; q++) same += s->obj[q].cls == o->cls;
            if (r->ref != CJ_REF_IMAGE || r->mask != CJ_MASK_POLYGON || same != 1 || strcmp(r->expression, shapes_class_name(o->cls)))
                bad++;
            ar_image c;
            if (image_load(&c, r->ref_path, IMAGE_RGB)) bad++;
            else image_free(&c);
        } else {
            bad++;
        }
        if (r->mask == CJ_MASK_POLYGON) {
            rle_mask m;
            if (cj_record_mask(r, &m) || !rle_equal(&m, &o->mask)) bad++;
            rle_free(&m);
        }
    }
    t_check(ds.n_bad == 0 && !bad && nbox == g_st.jsonl_box && ncap == g_st.jsonl_caption && ncrop == g_st.jsonl_crop &&
                ncrop > 0 && val > 0,
            "shapes jsonl", "%d box + %d caption + %d crop records (%d val), boxes = extents, masks = objects (bad %d)",
            nbox, ncap, ncrop, val, bad);
    cj_free(&ds);
}

/* ---------------------------------------------------------------- tokenizer */
static void test_tokenizer(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", g_dir);
    tokenizer *t = tok_load(path);
    if (!t_check(t != NULL, "shapes tok_load", "%s", t ? path : ar_error())) return;
    int V = tok_vocab_size(t);
    t_check(V == g_st.vocab && V <= 512 && tok_unk(t) == 0 && tok_bos(t) == 1 && tok_eos(t) == 2, "shapes tokenizer ids",
            "vocab %d, <unk> 0, <s> 1, </s> 2", V);
    const char *e = "the large red circle";
    int *ids, n;
    int ok = !tok_encode(t, e, strlen(e), 1, 1, &ids, &n) && n == 6 && ids[0] == 1 && ids[5] == 2 &&
             !strcmp(tok_piece(t, ids[1]), "\xE2\x96\x81the") && !strcmp(tok_piece(t, ids[4]), "\xE2\x96\x81" "circle");
    char *back = NULL;
    size_t bl;
    ok = ok && !tok_decode(t, ids, n, &back, &bl) && !strcmp(back, e);
    free(ids), free(back);
    t_check(ok, "shapes tokenizer encode", "\"%s\" = <s> + 4 whole-word tokens + </s>, decodes back", e);
    /* every sentence's words are single tokens */
    int words = 0, bad = 0;
    for (int i = 0; i < g_n; i++)
        for (int k = 0; k < g_scene[i].n; k++) {
            char ex[SHAPES_MAX_EXPR][SHAPES_EXPR_LEN];
            int ne = shapes_expressions(&g_scene[i], k, ex, SHAPES_MAX_EXPR);
            for (int q = 0; q < ne; q++) {
                int nw = 1;
                for (const char *p = ex[q]; *p; p++) nw += *p == ' ';
                if (tok_encode(t, ex[q], strlen(ex[q]), 0, 0, &ids, &n) || n != nw) bad++;
                else free(ids);
                words += nw;
            }
        }
    const char *sys = "You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab.You are "
                      "able to understand the visual content that the user provides, and assist the user with a variety "
                      "of tasks using natural language.Follow the instructions carefully and explain your answers in "
                      "detail. USER: Can you segment the smallest shape in this image? ASSISTANT: It is";
    int unk = 0;
    if (!tok_encode(t, sys, strlen(sys), 0, 0, &ids, &n)) {
        for (int i = 0; i < n; i++) unk += ids[i] == tok_unk(t);
        free(ids);
    } else unk = -1;
    t_check(!bad && words > 0 && unk == 0 && n < 80, "shapes tokenizer words",
            "%d words of every expression one token each (bad %d); system prompt + question %d tokens, no <unk>", words,
            bad, n);
    tok_free(t);
}

/* ---------------------------------------------------------------- the live loader */
static void test_loader(void) {
    char refer[512], avs[512], jsonl[512], tok[512];
    snprintf(refer, sizeof refer, "%s/refer_seg", g_dir);
    snprintf(avs, sizeof avs, "%s/avsbench", g_dir);
    snprintf(jsonl, sizeof jsonl, "%s/custom/shapes.jsonl", g_dir);
    snprintf(tok, sizeof tok, "%s/tokenizer.json", g_dir);
    ldr_cfg c;
    ldr_cfg_default(&c);
    c.tokenizer = tok;
    c.T = 128;
    c.clip_S = 32;
    c.sam_S = 64;
    c.audio = 1;
    c.threads = 0;
    c.seed = 5;
    c.n_sources = 3;
    c.src[0] = (ldr_source){.kind = LDR_REFER, .root = refer, .dataset = "refcoco", .split_by = "", .split = "train",
                            .images = refer, .image_layout = REFER_IMAGES_REFER, .weight = 2};
    c.src[1] = (ldr_source){.kind = LDR_AVS, .root = avs, .dataset = "s4", .split = "train", .weight = 1};
    c.src[2] = (ldr_source){.kind = LDR_JSONL, .file = jsonl, .split = "train", .weight = 2};
    ldr *l = ldr_open(&c);
    if (!t_check(l != NULL, "shapes ldr_open", "%s", l ? "refcoco/train + s4/train + shapes.jsonl" : ar_error())) return;
    if (ldr_start(l, 4, 0, 0)) { t_fail("shapes ldr_start", "%s", ar_error()); ldr_free(l); return; }
    refer_join *j = refer_join_load(refer, "refcoco", NULL, "train", refer, REFER_IMAGES_REFER);
    tds_cursor cur;
    memset(&cur, 0, sizeof cur);
    int kinds[4] = {0}, srcs[3] = {0}, bad = 0, items = 0, seg_items = 0;
    int unk = ldr_pad_id(l);
    for (int b = 0; b < 6; b++) {
        const ldr_item *it[4];
        if (ldr_next_batch(l, &cur, it)) { bad++; break; }
        for (int q = 0; q < 4; q++) {
            const ldr_item *x = it[q];
            items++;
            srcs[x->source]++;
            kinds[x->ref_kind + 1]++;
            /* <unk> (= the pad id) only as the padding after the text */
            int t = c.T - 1;
            while (t >= 0 && x->tokens[t] == unk) t--;
            for (int u = 0; u <= t; u++)
                if (x->tokens[u] == unk) bad++;
            if (x->source == 0 && j) {
                const refer_record *rc = &j->recs[x->record];
                size_t N = (size_t)rc->height * rc->width;
                uint8_t *m = malloc(N);
                rle_decode_hw(&rc->mask, m);
                if (x->n_masks != 1 || x->orig_hw[0] != (int)rc->height || x->orig_hw[1] != (int)rc->width) bad++;
                else
                    for (size_t p = 0; p < N; p++)
                        if (x->masks[p] != (float)m[p]) { bad++; break; }
                free(m);
                seg_items++;
            }
            if (x->source == 1 && (x->ref_kind != GDS_REF_AUDIO || x->n_masks != 1)) bad++;
        }
    }
    ldr_stats st;
    ldr_get_stats(l, &st);
    t_check(!bad && cur.skipped == 0 && st.broken == 0 && st.bad_records == 0 && srcs[0] && srcs[1] && srcs[2] &&
                kinds[GDS_REF_BOX + 1] && kinds[GDS_REF_AUDIO + 1] && kinds[0],
            "shapes loader", "%d samples (refer %d, s4 %d, jsonl %d; text %d, box %d, crop %d, audio %d), nothing broken, "
            "%d REFER masks = records, no <unk> in the text (bad %d)",
            items, srcs[0], srcs[1], srcs[2], kinds[0], kinds[1], kinds[2], kinds[3], seg_items, bad);
    refer_join_free(j);
    ldr_free(l);
}

/* ---------------------------------------------------------------- seeds, errors */
static void test_determinism(void) {
    shapes_stats st2, st3;
    double s2, s3;
    int rc2 = gen(g_dir2, g_cfg.seed, &st2, &s2), rc3 = gen(g_dir3, g_cfg.seed + 1, &st3, &s3);
    static const char *files[] = {"refer_seg/refcoco/instances.json", "refer_seg/refcoco/refs(unc).p",
                                  "custom/shapes.jsonl", "avsbench/s4_meta_data.csv", "tokenizer.json", "shapes.json",
                                  "refer_seg/images/mscoco/images/train2014/COCO_train2014_000000000003.jpg",
                                  "avsbench/s4_data/audio_wav/train/%s/sv0000.wav"};
    int same = 0, differ = 0;
    char a[600], b[600], c3[600], rel[256];
    shapes_video *V = malloc(sizeof *V);
    int have_v = !shapes_video_make(&g_cfg, 0, V);
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        snprintf(rel, sizeof rel, files[f], have_v ? shapes_avs_category(V->cls) : "?");
        snprintf(a, sizeof a, "%s/%s", g_dir, rel);
        snprintf(b, sizeof b, "%s/%s", g_dir2, rel);
        snprintf(c3, sizeof c3, "%s/%s", g_dir3, rel);
        same += same_file(a, b);
        differ += !same_file(a, c3);
    }
    if (have_v) shapes_video_free(V);
    free(V);
    t_check(!rc2 && !rc3 && same == 8 && differ >= 5, "shapes determinism",
            "same seed: %d/8 files byte-identical; seed + 1: %d/8 differ (tokenizer and others may agree)", same, differ);

    shapes_cfg c;
    int e1 = shapes_cfg_preset(&c, "huge");
    char msg1[256], msg2[700];
    snprintf(msg1, sizeof msg1, "%s", ar_error());
    snprintf(a, sizeof a, "%s/refer_seg/refcoco/instances.json/x", g_dir);   /* a path under a file */
    int e2 = shapes_generate(a, &g_cfg, NULL);
    snprintf(msg2, sizeof msg2, "%s", ar_error());
    c = g_cfg;
    c.n_val = 0;
    int e3 = shapes_generate(g_dir2, &c, NULL);
    t_check(e1 == -1 && strstr(msg1, "huge") && e2 == -1 && strstr(msg2, "instances.json/x"), "shapes errors",
            "unknown size: %s; unwritable directory: %s", msg1, msg2);
    t_check(e3 == -1, "shapes errors config", "%s", ar_error());
}

/* ---------------------------------------------------------------- image encoders */
static void test_encoders(void) {
    int h = 37, w = 53;
    uint8_t *rgb = malloc((size_t)h * w * 3), *grey = malloc((size_t)h * w);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            for (int ch = 0; ch < 3; ch++) rgb[((size_t)y * w + x) * 3 + ch] = (uint8_t)(20 + 2 * x + y + 30 * ch);
            grey[(size_t)y * w + x] = (uint8_t)((x * 7 + y * 13) & 255);
        }
    uint8_t *buf;
    size_t n;
    ar_image im;
    int png_ok = 1;
    for (int c = 1; c <= 3; c += 2) {
        const uint8_t *src = c == 1 ? grey : rgb;
        png_ok &= !image_encode_png(src, h, w, c, &buf, &n) && !image_decode(&im, buf, n, c == 1 ? IMAGE_GRAY_RAW : IMAGE_RGB, "png") &&
                  im.h == h && im.w == w && im.c == c && !memcmp(im.px, src, (size_t)h * w * c);
        image_free(&im);
        free(buf);
    }
    t_check(png_ok, "shapes image_encode_png", "grey and RGB %dx%d decode back exactly", h, w);
    int maxd = 0, jpeg_ok = !image_encode_jpeg(rgb, h, w, 3, 95, &buf, &n) && !image_decode(&im, buf, n, IMAGE_RGB, "jpeg") &&
                             im.h == h && im.w == w;
    for (size_t i = 0; jpeg_ok && i < (size_t)h * w * 3; i++) maxd = abs((int)im.px[i] - rgb[i]) > maxd ? abs((int)im.px[i] - rgb[i]) : maxd;
    image_free(&im);
    free(buf);
    char path[400];
    snprintf(path, sizeof path, "%s/enc/x.jpg", g_dir);
    int wr = !image_write_jpeg(path, grey, h, w, 1, 90) && !image_load(&im, path, IMAGE_GRAY_RAW) && im.h == h && im.w == w;
    image_free(&im);
    int e1 = image_encode_jpeg(rgb, h, w, 2, 90, &buf, &n), e2 = image_encode_jpeg(rgb, h, w, 3, 0, &buf, &n);
    t_check(jpeg_ok && maxd <= 6 && wr && e1 == -1 && e2 == -1, "shapes image_encode_jpeg",
            "RGB q95 max abs diff %d (bar 6) on a smooth ramp; image_write_jpeg grey file decodes; 2 channels, quality 0 refused",
            maxd);
    free(rgb), free(grey);
}

int main(void) {
    shapes_cfg_preset(&g_cfg, "tiny");
    g_cfg.seed = 7;
    g_cfg.crowd_p = 0.4;   /* a few crowds in a tiny world */
    snprintf(g_dir, sizeof g_dir, "/tmp/anyref_shapes_XXXXXX");
    if (!mkdtemp(g_dir)) { t_fail("mkdtemp", "%s", g_dir); return t_exit_code(); }
    snprintf(g_dir2, sizeof g_dir2, "%s/again", g_dir);
    snprintf(g_dir3, sizeof g_dir3, "%s/other", g_dir);
    double t0 = ar_now();
    test_generate();
    if (g_scene) {
        test_refer();
        test_avs();
        test_jsonl();
        test_tokenizer();
        test_loader();
        test_determinism();
    }
    test_encoders();
    printf("  (%.2f s)\n", ar_now() - t0);
    for (int i = 0; g_scene && i < g_n; i++) shapes_scene_free(&g_scene[i]);
    free(g_scene);
    free(g_first_ann);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!getenv("KEEP") && system(cmd) != 0) t_fail("cleanup", "%s", cmd);
    return t_exit_code();
}
