/* model/references.c — images and references as LLM feature rows; see references.h. */
#include "model/references.h"
#include "kernels/kernels.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

struct refs {
    refs_cfg c;
    clip_vit *clip;
    mm_projector *proj;
    imagebind_audio *audio;
    int G, g, W, D, S, audio_out;
    size_t max_rows;
    float *x;               /* [(max_images + max_crops) * G, W]: the projector's input */
    float *dp;              /* its output gradient */
    float *dx;              /* d CLIP features (trainable tower) */
    float *q;               /* [4, G] crop pooling matrix */
    float *feat, *dfeat;    /* [max_rows, D] */
    float *emb;             /* [max_audio * 3, out]: ImageBind output */
    /* the last forward */
    refs_batch b;
    refs_offsets o;
    const float *p;         /* projected rows [(nI + nC) * G, D] */
    const float *audio_in;  /* the audio embeddings the projector saw */
    int valid;
};

int refs_declare(const refs_cfg *c, ar_params *ps) {
    if (c->proj.in_dim != c->clip.width)
        return ar_errorf("references: mm_projector in_dim %d differs from the CLIP width %d", c->proj.in_dim, c->clip.width);
    if (c->use_audio && c->audio.llm_dim != c->proj.out_dim)
        return ar_errorf("references: audio_projector width %d differs from the LLM width %d", c->audio.llm_dim,
                         c->proj.out_dim);
    if (clip_vit_declare(&c->clip, ps) || mm_projector_declare(&c->proj, ps)) return -1;
    if (c->use_audio && imagebind_audio_declare(&c->audio, ps)) return -1;
    return 0;
}

static float *dalloc(size_t n, int *fail) {
    float *p = k_malloc((n ? n : 1) * sizeof(float));
    if (!p) *fail = 1;
    else k_zero(p, (n ? n : 1) * sizeof(float));
    return p;
}

/* refs_create's sizes: CLIP slots, projected rows, and its own feature
 * buffers (floats each; dx only with a trainable tower). */
enum { RB_X, RB_DP, RB_DX, RB_Q, RB_FEAT, RB_DFEAT, RB_EMB, RB_N };
static void rb_sizes(const refs_cfg *c, int *nclip, int *prow, size_t n[RB_N]) {
    /* a trainable tower keeps every image's activations in its own slot: the
     * images in slots 0..nI-1, the crops after them */
    *nclip = c->clip.trainable ? c->max_images + c->max_crops
                               : c->max_images > c->max_crops ? c->max_images : c->max_crops;
    const size_t G = c->clip.patch > 0 ? (size_t)(c->clip.image_size / c->clip.patch) * (c->clip.image_size / c->clip.patch) : 0;
    const size_t W = (size_t)c->clip.width, D = (size_t)c->proj.out_dim;
    *prow = (c->max_images + c->max_crops) * (int)G;
    const size_t max_rows = (size_t)c->max_images * G + (size_t)REFS_BOX_ROWS * c->max_boxes +
                            (size_t)REFS_CROP_ROWS * c->max_crops + (size_t)REFS_AUDIO_CLIPS * c->max_audio;
    n[RB_X] = (size_t)*prow * W;
    n[RB_DP] = (size_t)*prow * D;
    n[RB_DX] = c->clip.trainable ? (size_t)*prow * W : 0;
    n[RB_Q] = 4 * G;
    n[RB_FEAT] = n[RB_DFEAT] = max_rows * D;
    n[RB_EMB] = (size_t)c->max_audio * REFS_AUDIO_CLIPS * (c->use_audio ? (size_t)c->audio.out_dim : 1);
}

static size_t rb_bytes(const refs_cfg *c, const size_t n[RB_N]) {
    size_t b = 0;
    for (int i = 0; i < RB_N; i++)
        if (i != RB_DX || c->clip.trainable) b += (n[i] ? n[i] : 1) * sizeof(float);
    return b;
}

void refs_plan(const refs_cfg *c, refs_mem *out) {
    int nclip, prow;
    size_t n[RB_N];
    memset(out, 0, sizeof *out);
    rb_sizes(c, &nclip, &prow, n);
    if (nclip > 0) out->clip = clip_vit_plan_bytes(&c->clip, nclip);
    if (prow > 0) out->projector = mm_projector_plan_bytes(&c->proj, prow);
    if (c->use_audio && c->max_audio > 0) out->audio = imagebind_audio_plan_bytes(&c->audio, c->max_audio * REFS_AUDIO_CLIPS);
    out->buffers = rb_bytes(c, n);
}

void refs_memory(const refs *r, refs_mem *out) {
    int nclip, prow;
    size_t n[RB_N];
    memset(out, 0, sizeof *out);
    rb_sizes(&r->c, &nclip, &prow, n);
    if (r->clip) out->clip = clip_vit_activation_bytes(r->clip);
    if (r->proj) out->projector = mm_projector_block_bytes(r->proj);
    if (r->audio) out->audio = imagebind_audio_activation_bytes(r->audio);
    out->buffers = rb_bytes(&r->c, n);
}

refs *refs_create(const refs_cfg *c, ar_params *ps) {
    if (c->max_images < 0 || c->max_boxes < 0 || c->max_crops < 0 || c->max_audio < 0 ||
        (c->max_boxes > 0 && c->max_images == 0) || (c->max_audio > 0 && !c->use_audio)) {
        ar_errorf("references: maxima images %d, boxes %d, crops %d, audio %d: negative, boxes without images or "
                  "audio without the audio branch", c->max_images, c->max_boxes, c->max_crops, c->max_audio);
        return NULL;
    }
    refs *r = calloc(1, sizeof *r);
    if (!r) { ar_errorf("references: out of memory"); return NULL; }
    r->c = *c;
    /* a trainable tower keeps every image's activations in its own slot: the
     * images in slots 0..nI-1, the crops after them */
    int nclip, prow;
    size_t n[RB_N];
    rb_sizes(c, &nclip, &prow, n);
    if (nclip > 0 && !(r->clip = clip_vit_create(&c->clip, ps, nclip))) goto fail;
    r->g = c->clip.image_size / c->clip.patch;
    r->G = r->g * r->g;
    r->W = c->clip.width;
    r->D = c->proj.out_dim;
    r->S = c->clip.image_size;
    if (c->max_crops > 0 && r->G % 4) {
        ar_errorf("references: image-crop pooling needs the CLIP token count (%d) to be a multiple of 4", r->G);
        goto fail;
    }
    if (prow > 0 && !(r->proj = mm_projector_create(&c->proj, ps, prow))) goto fail;
    if (c->use_audio && c->max_audio > 0 &&
        !(r->audio = imagebind_audio_create(&c->audio, ps, c->max_audio * REFS_AUDIO_CLIPS)))
        goto fail;
    r->audio_out = c->audio.out_dim;
    r->max_rows = (size_t)c->max_images * r->G + (size_t)REFS_BOX_ROWS * c->max_boxes +
                  (size_t)REFS_CROP_ROWS * c->max_crops + (size_t)REFS_AUDIO_CLIPS * c->max_audio;
    int fail = 0;
    float **dst[RB_N] = {&r->x, &r->dp, &r->dx, &r->q, &r->feat, &r->dfeat, &r->emb};
    for (int i = 0; i < RB_N; i++)
        if (i != RB_DX || c->clip.trainable) *dst[i] = dalloc(n[i], &fail);
    if (fail) { ar_errorf("references: out of memory for the feature buffers"); goto fail; }
    if (r->G % 4 == 0) {   /* token i = mean of rows [i G/4, (i+1) G/4) */
        float *h = calloc((size_t)4 * r->G, sizeof(float));
        if (!h) { ar_errorf("references: out of memory"); goto fail; }
        const int per = r->G / 4;
        for (int i = 0; i < 4; i++)
            for (int j = i * per; j < (i + 1) * per; j++) h[(size_t)i * r->G + j] = 1.0f / per;
        k_upload(r->q, h, (size_t)4 * r->G * sizeof(float));
        free(h);
    }
    return r;
fail:
    refs_free(r);
    return NULL;
}

void refs_free(refs *r) {
    if (!r) return;
    clip_vit_free(r->clip);
    mm_projector_free(r->proj);
    imagebind_audio_free(r->audio);
    float *bufs[] = {r->x, r->dp, r->dx, r->q, r->feat, r->dfeat, r->emb};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) if (bufs[i]) k_free(bufs[i]);
    free(r);
}

int refs_image_tokens(const refs *r) { return r->G; }
int refs_clip_width(const refs *r) { return r->W; }
int refs_audio_dim(const refs *r) { return r->c.use_audio ? r->audio_out : 0; }

int refs_encode_images(refs *r, const float *pixels, int n, float *out) {
    if (!r->clip) return ar_errorf("references: no CLIP tower (max_images and max_crops are 0)");
    const float *f = clip_vit_forward(r->clip, pixels, n);
    if (!f) return -1;
    k_copy(out, f, (size_t)n * r->G * r->W * sizeof(float));
    return 0;
}

int refs_encode_audio(refs *r, const float *fbank, int n, float *out) {
    if (!r->audio) return ar_errorf("references: no audio encoder (use_audio 0 or max_audio 0)");
    return imagebind_audio_encode(r->audio, fbank, n, out, NULL);
}

refs_offsets refs_rows(const refs *r, const refs_batch *b) {
    refs_offsets o;
    o.image = 0;
    o.box = b->n_images * r->G;
    o.crop = o.box + REFS_BOX_ROWS * b->n_boxes;
    o.audio = o.crop + REFS_CROP_ROWS * b->n_crops;
    o.total = o.audio + REFS_AUDIO_CLIPS * b->n_audio;
    return o;
}

/* CLIP output of n images into dst [n, G, W]: the precomputed one or a
 * forward (into tower slots first.. when the tower is trainable). */
static int clip_rows(refs *r, float *dst, const float *pixels, const float *pre, int n, int first, const char *what) {
    const size_t sz = (size_t)n * r->G * r->W * sizeof(float);
    if (pre && r->c.clip.trainable)
        return ar_errorf("references: precomputed CLIP features for %s, but the CLIP tower is trainable", what);
    if (pre) { k_copy(dst, pre, sz); return 0; }
    if (!pixels) return ar_errorf("references: %d %s but neither pixels nor precomputed CLIP features", n, what);
    const float *f = r->c.clip.trainable ? clip_vit_forward_at(r->clip, pixels, n, first)
                                         : clip_vit_forward(r->clip, pixels, n);
    if (!f) return -1;
    k_copy(dst, f, sz);
    return 0;
}

float *refs_forward(refs *r, const refs_batch *b) {
    const refs_cfg *c = &r->c;
    r->valid = 0;
    if (b->n_images < 0 || b->n_images > c->max_images || b->n_boxes < 0 || b->n_boxes > c->max_boxes ||
        b->n_crops < 0 || b->n_crops > c->max_crops || b->n_audio < 0 || b->n_audio > c->max_audio) {
        ar_errorf("references: batch with %d images, %d boxes, %d crops, %d audio over the maxima %d, %d, %d, %d",
                  b->n_images, b->n_boxes, b->n_crops, b->n_audio, c->max_images, c->max_boxes, c->max_crops,
                  c->max_audio);
        return NULL;
    }
    if (b->n_boxes && (!b->boxes || !b->n_images)) {
        ar_errorf("references: %d boxes need their coordinates and at least one image", b->n_boxes);
        return NULL;
    }
    const int nI = b->n_images, nC = b->n_crops, G = r->G, D = r->D;
    const refs_offsets o = refs_rows(r, b);
    if (nI && clip_rows(r, r->x, b->pixels, b->image_clip, nI, 0, "images")) return NULL;
    if (nC && clip_rows(r, r->x + (size_t)nI * G * r->W, b->crop_pixels, b->crop_clip, nC, nI, "image-crop references"))
        return NULL;
    r->p = NULL;
    if (nI + nC) {
        if (!(r->p = mm_projector_forward(r->proj, r->x, (nI + nC) * G))) return NULL;
        if (nI) k_copy(r->feat, r->p, (size_t)nI * G * D * sizeof(float));
    }
    if (b->n_boxes)
        roi_align_forward(r->feat + (size_t)o.box * D, r->p, b->boxes, b->n_boxes, nI, r->g, r->g, D, 2, 2,
                          (float)r->g / (float)r->S, 2, 1);
    for (int k = 0; k < nC; k++)
        matmul_forward(r->feat + (size_t)(o.crop + REFS_CROP_ROWS * k) * D, r->q, r->p + (size_t)(nI + k) * G * D,
                       REFS_CROP_ROWS, D, G, 0, 0);
    r->audio_in = NULL;
    if (b->n_audio) {
        const int n = b->n_audio * REFS_AUDIO_CLIPS;
        if (b->audio_emb) {
            r->audio_in = b->audio_emb;
        } else {
            if (!b->fbank) { ar_errorf("references: %d audio references but no fbank", b->n_audio); return NULL; }
            if (imagebind_audio_encode(r->audio, b->fbank, n, r->emb, NULL)) return NULL;
            r->audio_in = r->emb;
        }
        if (imagebind_audio_project(r->audio, r->audio_in, n, r->feat + (size_t)o.audio * D)) return NULL;
    }
    k_zero(r->dfeat, (size_t)(o.total ? o.total : 1) * D * sizeof(float));
    r->b = *b;
    r->o = o;
    r->valid = 1;
    return r->feat;
}

float *refs_dfeat(refs *r) { return r->dfeat; }

int refs_backward(refs *r) {
    if (!r->valid) return 0;
    const refs_batch *b = &r->b;
    const refs_offsets o = r->o;
    const int nI = b->n_images, nC = b->n_crops, G = r->G, D = r->D;
    if (nI + nC && (r->c.proj.trainable || r->c.clip.trainable)) {
        k_zero(r->dp, (size_t)(nI + nC) * G * D * sizeof(float));
        if (nI) axpy(r->dp, r->dfeat, 1.0f, (size_t)nI * G * D);
        if (b->n_boxes)
            roi_align_backward(r->dp, r->dfeat + (size_t)o.box * D, b->boxes, b->n_boxes, nI, r->g, r->g, D, 2, 2,
                               (float)r->g / (float)r->S, 2, 1);
        for (int k = 0; k < nC; k++)
            matmul_backward(NULL, r->dp + (size_t)(nI + k) * G * D, r->dfeat + (size_t)(o.crop + REFS_CROP_ROWS * k) * D,
                            r->q, r->p + (size_t)(nI + k) * G * D, REFS_CROP_ROWS, D, G, 0, 0);
        float *dx = r->c.clip.trainable ? r->dx : NULL;
        if (dx) k_zero(dx, (size_t)(nI + nC) * G * r->W * sizeof(float));
        mm_projector_backward(r->proj, r->dp, dx);          /* dx = d CLIP features [(nI+nC)*G, W] */
        if (dx && clip_vit_backward_at(r->clip, dx, nI + nC, 0)) return -1;
    }
    if (b->n_audio)
        imagebind_audio_project_backward(r->audio, r->dfeat + (size_t)o.audio * D, r->audio_in,
                                         b->n_audio * REFS_AUDIO_CLIPS, NULL);
    return 0;
}

int refs_splice(const int *ids, const int *labels, int n, const refs_markers *mk, int G, int image_row,
                const refs_ref *rf, int n_refs, int T, int pad_id, int *out_ids, int *out_labels) {
    int len = 0, used = 0, images = 0;
#define PUT(id, lab) do { if (len < T) { out_ids[len] = (id); out_labels[len] = (lab); } len++; } while (0)
    for (int i = 0; i < n; i++) {
        if (ids[i] == mk->image) {
            if (image_row < 0 || images++)
                return ar_errorf("splice: position %d: %s", i,
                                 image_row < 0 ? "an image token but the sample has no image" : "a second image token");
            PUT(mk->im_start, -100);
            for (int j = 0; j < G; j++) PUT(-(image_row + j) - 1, -100);
            PUT(mk->im_end, -100);
            continue;
        }
        const int img_pair = ids[i] == mk->ref_start && i + 1 < n && ids[i + 1] == mk->ref_end;
        const int aud_pair = ids[i] == mk->audio_start && i + 1 < n && ids[i + 1] == mk->audio_end;
        if (img_pair || aud_pair) {
            if (used >= n_refs)
                return ar_errorf("splice: position %d: reference pair %d, but the sample has %d references", i,
                                 used + 1, n_refs);
            const refs_ref *f = &rf[used++];
            if (f->kind < REFS_BOX || f->kind > REFS_AUDIO || f->row < 0)
                return ar_errorf("splice: reference %d: kind %d / row %d invalid", used - 1, f->kind, f->row);
            if ((f->kind == REFS_AUDIO && !aud_pair) || (f->kind != REFS_AUDIO && !img_pair))
                return ar_errorf("splice: position %d: reference %d is %s but sits between %s markers", i, used - 1,
                                 f->kind == REFS_AUDIO ? "audio" : f->kind == REFS_BOX ? "a box" : "an image crop",
                                 aud_pair ? "audio" : "image-reference");
            const int rows = f->kind == REFS_AUDIO ? REFS_AUDIO_CLIPS : f->kind == REFS_BOX ? REFS_BOX_ROWS : REFS_CROP_ROWS;
            PUT(ids[i], labels ? labels[i] : -100);
            for (int j = 0; j < rows; j++) PUT(-(f->row + j) - 1, -100);
            PUT(ids[i + 1], labels ? labels[i + 1] : -100);
            i++;
            continue;
        }
        PUT(ids[i], labels ? labels[i] : -100);
    }
#undef PUT
    if (used != n_refs) return ar_errorf("splice: %d reference pairs in the text, %d references given", used, n_refs);
    for (int t = len; t < T; t++) { out_ids[t] = pad_id; out_labels[t] = -100; }
    return len;
}
