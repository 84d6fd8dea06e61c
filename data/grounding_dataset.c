/* data/grounding_dataset.c — see grounding_dataset.h. */
#include "data/grounding_dataset.h"
#include "data/grounding_live.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/h5util.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct grounding_dataset {
    gds_live *live;               /* gds_open_loader: everything goes there */
    char path[1024];
    token_dataset *tds;
    hid_t f, emb;                 /* file, /image_embeddings */
    int64_t n, m, nmask;          /* rows, embeddings, bytes of /masks */
    int C, H, W, T;
    int seg_attr;
    int *image_index, *orig, *msize, *count;   /* [N], [2N], [2N], [N] */
    int64_t *offset;                            /* [N] */
    int lim_h, lim_w, lim_masks;                /* over the rows (gds_limits) */
    /* gds_configure */
    int seg, B, max_h, max_w;
    int T_cur;                                  /* sequence length of the read in progress */
    int probe;                                  /* gds_skip_batch: decide usability, read no pixels */
    /* images and references (gds_mm_info) */
    gds_mm_info mm;
    hid_t clip, crops, fbank, sam;              /* optional datasets, -1 if absent */
    size_t sam_n;                               /* floats per SAM input */
    int use_sam;                                /* gds_use_sam_pixels */
    float *sam_buf;                             /* [B, sam_n] */
    const float **sam_ptr;
    int *ref_kind, *ref_index;                  /* [N] */
    float *ref_box;                             /* [4N] */
    size_t clip_n, ref_n;                       /* floats per CLIP input, per reference input */
    float *clip_buf, *ref_buf;                  /* [B, clip_n], [B, ref_n] */
    int *slot_ref_kind, *slot_has_clip;
    float *slot_box;
    const float **clip_ptr, **ref_ptr;
    gds_row_hook hook;
    void *hook_ctx;
    float *img_buf, *mask_buf;                  /* [B, C*H*W], [B, lim_masks, max_h*max_w] */
    uint8_t *bytes;                             /* one mask's bytes */
    int *slot_row_masks;                        /* [B] masks of the row in each slot */
    int *slot_has_img;
    const float **img;
    const float **masks;
    int *orig_hw, *mask_hw, *mask_sample;
};

static int fail(grounding_dataset *g, const char *ds, const char *fmt, const char *detail) {
    return ar_errorf("grounding dataset %s: %s: %s%s%s", g->path, ds, fmt, detail ? ": " : "", detail ? detail : "");
}

/* Reads integer dataset `name` of shape [N] (cols 0) or [N, cols] into a new
 * int array (int64 when wide). Absent and optional: *out = NULL, 0. */
static int read_ints(grounding_dataset *g, const char *name, int cols, int wide, int optional, void **out) {
    *out = NULL;
    if (H5Lexists(g->f, name, H5P_DEFAULT) <= 0) {
        if (optional) return 0;
        return fail(g, name, "missing", NULL);
    }
    hid_t d = H5Dopen2(g->f, name, H5P_DEFAULT);
    if (d < 0) return fail(g, name, "cannot open", h5_detail());
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    int nd = H5Sget_simple_extent_ndims(sp), rc = -1;
    hsize_t dims[2] = {0, 0};
    char want[64], got[64], tys[32];
    if (nd >= 1 && nd <= 2) H5Sget_simple_extent_dims(sp, dims, NULL);
    int want_nd = cols ? 2 : 1;
    snprintf(want, sizeof want, cols ? "[%lld, %d]" : "[%lld]", (long long)g->n, cols);
    h5_shape_str(got, sizeof got, nd, dims);
    if (H5Tget_class(ty) != H5T_INTEGER) {
        h5_dtype_str(tys, sizeof tys, ty);
        char msg[128];
        snprintf(msg, sizeof msg, "has type %s, expected an integer type", tys);
        fail(g, name, msg, NULL);
    } else if (nd != want_nd || (int64_t)dims[0] != g->n || (cols && (int)dims[1] != cols)) {
        char msg[200];
        snprintf(msg, sizeof msg, "has shape %s, expected %s (one entry per row of /input_ids)", got, want);
        fail(g, name, msg, NULL);
    } else {
        size_t n = (size_t)g->n * (cols ? cols : 1);
        void *buf = malloc((n ? n : 1) * (wide ? sizeof(int64_t) : sizeof(int)));
        if (!buf) ar_errorf("grounding dataset %s: out of memory for %s", g->path, name);
        else if (H5Dread(d, wide ? H5T_NATIVE_INT64 : H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            free(buf);
            fail(g, name, "cannot read", h5_detail());
        } else {
            *out = buf;
            rc = 0;
        }
    }
    H5Tclose(ty); H5Sclose(sp); H5Dclose(d);
    return rc;
}

/* Optional float dataset `name` whose shape after the first dimension is
 * tail[nt] (a tail entry 0 = any, filled in); *rows = its first dimension.
 * Absent: *d = -1, 0. */
static int open_floats(grounding_dataset *g, const char *name, int nt, int *tail, int64_t *rows, hid_t *d) {
    *d = -1;
    if (H5Lexists(g->f, name, H5P_DEFAULT) <= 0) return 0;
    *d = H5Dopen2(g->f, name, H5P_DEFAULT);
    if (*d < 0) return fail(g, name, "cannot open", h5_detail());
    hid_t sp = H5Dget_space(*d), ty = H5Dget_type(*d);
    int nd = H5Sget_simple_extent_ndims(sp), ok = H5Tget_class(ty) == H5T_FLOAT && nd == nt + 1;
    hsize_t dims[8] = {0};
    if (nd >= 1 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Tclose(ty); H5Sclose(sp);
    for (int i = 0; ok && i < nt; i++) {
        if (tail[i] == 0) tail[i] = (int)dims[i + 1];
        ok = (int)dims[i + 1] == tail[i] && tail[i] > 0;
    }
    if (!ok || dims[0] < 1) {
        char got[96], msg[320];
        h5_shape_str(got, sizeof got, nd, dims);
        snprintf(msg, sizeof msg, "has shape %s or a non-float type; expected float [rows >= 1, ...] with %d more "
                 "dimensions (data/grounding_dataset.h)", got, nt);
        return fail(g, name, msg, NULL);
    }
    *rows = (int64_t)dims[0];
    return 0;
}

static int read_attr_int(grounding_dataset *g, const char *name, int *out) {
    *out = -1;
    if (H5Aexists(g->f, name) <= 0) return 0;
    hid_t a = H5Aopen(g->f, name, H5P_DEFAULT), at = H5Aget_type(a);
    long long v = -1;
    int ok = H5Tget_class(at) == H5T_INTEGER && H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0 && v >= 0 && v <= 0x7fffffff;
    H5Tclose(at); H5Aclose(a);
    if (!ok) return fail(g, name, "attribute: expected a non-negative integer", NULL);
    *out = (int)v;
    return 0;
}

/* The optional image and reference datasets (gds_mm_info). */
static int open_mm(grounding_dataset *g) {
    gds_mm_info *mm = &g->mm;
    int64_t rows;
    int ct[3] = {3, 0, 0};
    if (open_floats(g, "clip_pixels", 3, ct, &rows, &g->clip)) return -1;
    if (g->clip >= 0) {
        if (ct[1] != ct[2]) return fail(g, "clip_pixels", "expected square images [M, 3, S, S]", NULL);
        if (rows != g->m) return fail(g, "clip_pixels", "must have one row per row of /image_embeddings", NULL);
        mm->clip_S = ct[1];
        g->clip_n = (size_t)3 * ct[1] * ct[1];
    }
    int pt[3] = {3, mm->clip_S, mm->clip_S};
    if (open_floats(g, "crop_pixels", 3, pt, &mm->n_crops, &g->crops)) return -1;
    if (g->crops >= 0 && !mm->clip_S) return fail(g, "crop_pixels", "needs /clip_pixels (the same CLIP input side)", NULL);
    int ft[4] = {3, 1, 0, 0};
    if (open_floats(g, "audio_fbank", 4, ft, &mm->n_audio, &g->fbank)) return -1;
    if (g->fbank >= 0) { mm->fbank_h = ft[2]; mm->fbank_w = ft[3]; }
    if (H5Lexists(g->f, "ref_kind", H5P_DEFAULT) > 0) {
        mm->has_refs = 1;
        if (read_ints(g, "ref_kind", 0, 0, 0, (void **)&g->ref_kind) ||
            read_ints(g, "ref_index", 0, 0, 0, (void **)&g->ref_index))
            return -1;
        hid_t d = H5Dopen2(g->f, "ref_box", H5P_DEFAULT);
        if (d < 0) return fail(g, "ref_box", "missing (required with /ref_kind)", NULL);
        hid_t sp = H5Dget_space(d);
        hsize_t dims[2] = {0, 0};
        int nd = H5Sget_simple_extent_ndims(sp);
        if (nd == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Sclose(sp);
        g->ref_box = malloc((size_t)(g->n ? g->n : 1) * 4 * sizeof(float));
        int ok = nd == 2 && (int64_t)dims[0] == g->n && dims[1] == 4 && g->ref_box &&
                 H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, g->ref_box) >= 0;
        H5Dclose(d);
        if (!ok) return fail(g, "ref_box", "expected float [N, 4] (x1, y1, x2, y2)", NULL);
    }
    g->ref_n = g->clip_n;
    if (g->fbank >= 0 && (size_t)3 * mm->fbank_h * mm->fbank_w > g->ref_n) g->ref_n = (size_t)3 * mm->fbank_h * mm->fbank_w;
    if (read_attr_int(g, "image_token_id", &mm->image_token) || read_attr_int(g, "im_start_id", &mm->im_start) ||
        read_attr_int(g, "im_end_id", &mm->im_end) || read_attr_int(g, "ref_start_id", &mm->ref_start) ||
        read_attr_int(g, "ref_end_id", &mm->ref_end) || read_attr_int(g, "audio_start_id", &mm->audio_start) ||
        read_attr_int(g, "audio_end_id", &mm->audio_end))
        return -1;
    if ((g->clip >= 0 || mm->has_refs) && (mm->image_token < 0 || mm->im_start < 0 || mm->im_end < 0))
        return fail(g, "attributes", "image_token_id, im_start_id and im_end_id are required with /clip_pixels or "
                    "references", NULL);
    if (mm->has_refs && (mm->ref_start < 0 || mm->ref_end < 0 || (g->fbank >= 0 && (mm->audio_start < 0 || mm->audio_end < 0))))
        return fail(g, "attributes", "ref_start_id and ref_end_id (and audio_start_id, audio_end_id with "
                    "/audio_fbank) are required with /ref_kind", NULL);
    return 0;
}

static int open_rest(grounding_dataset *g);
static int open_parts(grounding_dataset *g, int C, int H, int W) {
    /* the token reader holds the same file open with a strong close degree;
     * HDF5 refuses a second open of one file with another degree */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return fail(g, "file", "cannot create HDF5 file-access properties", h5_detail());
    }
    g->f = H5Fopen(g->path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (g->f < 0) return fail(g, "file", "cannot open", h5_detail());
    /* /sam_pixels [M, 3, S, S] (optional), /image_embeddings [M, C, H, W] */
    int st[3] = {3, 0, 0};
    int64_t srows = 0;
    if (open_floats(g, "sam_pixels", 3, st, &srows, &g->sam)) return -1;
    if (g->sam >= 0) {
        if (st[1] != st[2]) return fail(g, "sam_pixels", "expected square inputs [M, 3, S, S]", NULL);
        g->mm.sam_S = st[1];
        g->sam_n = (size_t)3 * st[1] * st[1];
    }
    if (H5Lexists(g->f, "image_embeddings", H5P_DEFAULT) <= 0) {
        if (g->sam < 0) return fail(g, "image_embeddings", "missing (and no /sam_pixels for the SAM image encoder)", NULL);
        g->m = srows;
        return open_rest(g);
    }
    g->emb = H5Dopen2(g->f, "image_embeddings", H5P_DEFAULT);
    if (g->emb < 0) return fail(g, "image_embeddings", "cannot open", h5_detail());
    hid_t sp = H5Dget_space(g->emb), ty = H5Dget_type(g->emb);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t d[4] = {0, 0, 0, 0};
    if (nd == 4) H5Sget_simple_extent_dims(sp, d, NULL);
    int isfloat = H5Tget_class(ty) == H5T_FLOAT;
    H5Tclose(ty); H5Sclose(sp);
    if (!isfloat) return fail(g, "image_embeddings", "has a non-float type, expected float32", NULL);
    if (nd != 4 || d[0] < 1 || (int)d[1] != C || (int)d[2] != H || (int)d[3] != W) {
        char got[64], msg[200];
        h5_shape_str(got, sizeof got, nd, d);
        snprintf(msg, sizeof msg, "has shape %s, expected [M >= 1, %d, %d, %d] (the model's sam.dim x sam.grid x sam.grid)",
                 got, C, H, W);
        return fail(g, "image_embeddings", msg, NULL);
    }
    g->m = (int64_t)d[0];
    if (g->sam >= 0 && srows != g->m) return fail(g, "sam_pixels", "must have one row per row of /image_embeddings", NULL);
    return open_rest(g);
}

/* Everything after the images: masks, per-row arrays, attributes, the
 * optional image and reference part. */
static int open_rest(grounding_dataset *g) {
    hid_t sp, ty;
    int nd;
    /* /masks [K] */
    if (H5Lexists(g->f, "masks", H5P_DEFAULT) <= 0) return fail(g, "masks", "missing", NULL);
    hid_t md = H5Dopen2(g->f, "masks", H5P_DEFAULT);
    if (md < 0) return fail(g, "masks", "cannot open", h5_detail());
    sp = H5Dget_space(md); ty = H5Dget_type(md);
    nd = H5Sget_simple_extent_ndims(sp);
    hsize_t k = 0;
    if (nd == 1) H5Sget_simple_extent_dims(sp, &k, NULL);
    int isint = H5Tget_class(ty) == H5T_INTEGER;
    H5Tclose(ty); H5Sclose(sp); H5Dclose(md);
    if (nd != 1 || !isint) return fail(g, "masks", "expected a 1-D integer (uint8) dataset", NULL);
    g->nmask = (int64_t)k;
    if (read_ints(g, "image_index", 0, 0, 0, (void **)&g->image_index) ||
        read_ints(g, "orig_size", 2, 0, 0, (void **)&g->orig) ||
        read_ints(g, "mask_size", 2, 0, 1, (void **)&g->msize) ||
        read_ints(g, "mask_count", 0, 0, 0, (void **)&g->count) ||
        read_ints(g, "mask_offset", 0, 1, 0, (void **)&g->offset))
        return -1;
    g->seg_attr = -1;
    if (H5Aexists(g->f, "seg_token_id") > 0) {
        hid_t a = H5Aopen(g->f, "seg_token_id", H5P_DEFAULT);
        hid_t at = H5Aget_type(a);
        long long v = -1;
        int ok = H5Tget_class(at) == H5T_INTEGER && H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0;
        H5Tclose(at); H5Aclose(a);
        if (!ok || v < 0 || v > 0x7fffffff) return fail(g, "attribute seg_token_id", "expected a non-negative integer", NULL);
        g->seg_attr = (int)v;
    }
    return open_mm(g);
}

static void row_mask_hw(const grounding_dataset *g, int64_t i, int *hm, int *wm) {
    *hm = g->orig[2 * i]; *wm = g->orig[2 * i + 1];
    if (g->msize && g->msize[2 * i] > 0 && g->msize[2 * i + 1] > 0) { *hm = g->msize[2 * i]; *wm = g->msize[2 * i + 1]; }
}

grounding_dataset *gds_open(const char *path, int vocab, int C, int H, int W) {
    grounding_dataset *g = calloc(1, sizeof *g);
    if (!g) { ar_errorf("out of memory"); return NULL; }
    snprintf(g->path, sizeof g->path, "%s", path);
    g->f = g->emb = g->clip = g->crops = g->fbank = g->sam = -1;
    if (!(g->tds = tds_open(path, vocab))) { free(g); return NULL; }
    g->n = tds_rows(g->tds);
    g->T = tds_seq_len(g->tds);
    g->C = C; g->H = H; g->W = W;
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = open_parts(g, C, H, W);
    h5_quiet_end(&q);
    if (rc) { gds_close(g); return NULL; }
    for (int64_t i = 0; i < g->n; i++) {   /* limits over the plausible rows */
        int hm, wm;
        row_mask_hw(g, i, &hm, &wm);
        int h0 = g->orig[2 * i], w0 = g->orig[2 * i + 1];
        if (h0 <= 0 || w0 <= 0 || hm <= 0 || wm <= 0 || h0 > 16384 || w0 > 16384 || hm > 16384 || wm > 16384) continue;
        if (h0 > g->lim_h) g->lim_h = h0;
        if (w0 > g->lim_w) g->lim_w = w0;
        if (hm > g->lim_h) g->lim_h = hm;
        if (wm > g->lim_w) g->lim_w = wm;
        if (g->count[i] > g->lim_masks && g->count[i] <= 1024) g->lim_masks = g->count[i];
    }
    return g;
}

void gds_close(grounding_dataset *g) {
    if (!g) return;
    if (g->live) { gl_close(g->live); free(g); return; }
    if (g->emb >= 0) H5Dclose(g->emb);
    if (g->clip >= 0) H5Dclose(g->clip);
    if (g->crops >= 0) H5Dclose(g->crops);
    if (g->fbank >= 0) H5Dclose(g->fbank);
    if (g->sam >= 0) H5Dclose(g->sam);
    free(g->sam_buf); free(g->sam_ptr);
    free(g->ref_kind); free(g->ref_index); free(g->ref_box); free(g->clip_buf); free(g->ref_buf);
    free(g->slot_ref_kind); free(g->slot_has_clip); free(g->slot_box); free(g->clip_ptr); free(g->ref_ptr);
    if (g->f >= 0) H5Fclose(g->f);
    tds_close(g->tds);
    free(g->image_index); free(g->orig); free(g->msize); free(g->count); free(g->offset);
    free(g->img_buf); free(g->mask_buf); free(g->bytes); free(g->slot_row_masks); free(g->slot_has_img);
    free(g->img); free(g->masks); free(g->orig_hw); free(g->mask_hw); free(g->mask_sample);
    free(g);
}

grounding_dataset *gds_open_loader(ldr *l, const char *name) {
    grounding_dataset *g = calloc(1, sizeof *g);
    if (!g || !(g->live = gl_new(l))) {
        if (!g) { ldr_free(l); ar_errorf("out of memory"); }
        free(g);
        return NULL;
    }
    snprintf(g->path, sizeof g->path, "%s", name);
    g->f = g->emb = g->clip = g->crops = g->fbank = g->sam = -1;
    return g;
}

const ldr_item *gds_live_item(const grounding_dataset *g, int b) { return g->live ? gl_item(g->live, b) : NULL; }

ldr *gds_loader(const grounding_dataset *g) { return g->live ? gl_loader(g->live) : NULL; }

int64_t gds_rows(const grounding_dataset *g) { return g->live ? gl_rows(g->live) : g->n; }
int gds_seq_len(const grounding_dataset *g) { return g->live ? gl_seq_len(g->live) : g->T; }
int gds_seg_token(const grounding_dataset *g) { return g->live ? gl_seg_token(g->live) : g->seg_attr; }
void gds_mm(const grounding_dataset *g, gds_mm_info *out) {
    if (g->live) gl_mm(g->live, out);
    else *out = g->mm;
}
void gds_set_hook(grounding_dataset *g, gds_row_hook hook, void *ctx) {
    if (g->live) gl_set_hook(g->live, hook, ctx);
    g->hook = hook;
    g->hook_ctx = ctx;
}
int64_t gds_images(const grounding_dataset *g) { return g->live ? 0 : g->m; }

int gds_use_sam_pixels(grounding_dataset *g, int on) {
    if (g->live) return gl_use_sam_pixels(g->live, on);
    if (on && g->sam < 0) return ar_errorf("grounding dataset %s: no /sam_pixels for the SAM image encoder", g->path);
    if (!on && g->emb < 0)
        return ar_errorf("grounding dataset %s: no /image_embeddings: set the SAM image encoder (sam_encoder.model)", g->path);
    g->use_sam = on;
    return 0;
}

void gds_limits(const grounding_dataset *g, int *max_h, int *max_w, int *max_masks) {
    if (g->live) { gl_limits(g->live, max_h, max_w, max_masks); return; }
    if (max_h) *max_h = g->lim_h;
    if (max_w) *max_w = g->lim_w;
    if (max_masks) *max_masks = g->lim_masks;
}

int gds_configure(grounding_dataset *g, int seg_token, int B, int max_h, int max_w) {
    if (g->live) return gl_configure(g->live, seg_token, B, max_h, max_w);
    if (seg_token < 0 || B < 1 || max_h < 1 || max_w < 1)
        return ar_errorf("grounding dataset %s: bad reader settings ([SEG] id %d, batch %d, max size %d x %d)", g->path,
                         seg_token, B, max_h, max_w);
    g->seg = seg_token; g->B = B; g->max_h = max_h; g->max_w = max_w;
    const int pm = g->lim_masks > 0 ? g->lim_masks : 1;
    const size_t chw = (size_t)g->C * g->H * g->W, hw = (size_t)max_h * max_w;
    free(g->img_buf); free(g->mask_buf); free(g->bytes); free(g->slot_row_masks); free(g->slot_has_img);
    free(g->img); free(g->masks); free(g->orig_hw); free(g->mask_hw); free(g->mask_sample);
    g->img_buf = malloc((size_t)B * chw * sizeof(float));
    g->mask_buf = malloc((size_t)B * pm * hw * sizeof(float));
    g->bytes = malloc(hw);
    g->slot_row_masks = calloc(B, sizeof(int));
    g->slot_has_img = calloc(B, sizeof(int));
    g->img = calloc(B, sizeof(float *));
    g->masks = calloc((size_t)B * pm, sizeof(float *));
    g->orig_hw = calloc(2 * (size_t)B, sizeof(int));
    g->mask_hw = calloc(2 * (size_t)B, sizeof(int));
    g->mask_sample = calloc((size_t)B * pm, sizeof(int));
    free(g->clip_buf); free(g->ref_buf); free(g->slot_ref_kind); free(g->slot_has_clip); free(g->slot_box);
    free(g->clip_ptr); free(g->ref_ptr);
    g->clip_buf = malloc((size_t)B * (g->clip_n ? g->clip_n : 1) * sizeof(float));
    g->ref_buf = malloc((size_t)B * (g->ref_n ? g->ref_n : 1) * sizeof(float));
    g->slot_ref_kind = calloc(B, sizeof(int));
    g->slot_has_clip = calloc(B, sizeof(int));
    g->slot_box = calloc((size_t)4 * B, sizeof(float));
    g->clip_ptr = calloc(B, sizeof(float *));
    free(g->sam_buf); free(g->sam_ptr);
    g->sam_buf = g->use_sam ? malloc((size_t)B * g->sam_n * sizeof(float)) : NULL;
    g->sam_ptr = calloc(B, sizeof(float *));
    if ((g->use_sam && !g->sam_buf) || !g->sam_ptr) return ar_errorf("grounding dataset %s: out of memory for SAM inputs", g->path);
    g->ref_ptr = calloc(B, sizeof(float *));
    if (!g->img_buf || !g->mask_buf || !g->bytes || !g->slot_row_masks || !g->slot_has_img || !g->img || !g->masks ||
        !g->orig_hw || !g->mask_hw || !g->mask_sample || !g->clip_buf || !g->ref_buf || !g->slot_ref_kind ||
        !g->slot_has_clip || !g->slot_box || !g->clip_ptr || !g->ref_ptr)
        return ar_errorf("grounding dataset %s: out of memory for batch buffers (%d samples)", g->path, B);
    return 0;
}

/* Validates row i's extra fields against its tokens and loads its embedding
 * and masks into `slot`. 0 ok, 1 broken (ar_error), -1 I/O error. */
/* One slab [1, ...] of row `row` of a float dataset into dst (n floats). */
static int read_row_floats(grounding_dataset *g, hid_t d, const char *name, int64_t row, float *dst, size_t n) {
    hid_t fs = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[8], start[8] = {0};
    H5Sget_simple_extent_dims(fs, dims, NULL);
    dims[0] = 1;
    start[0] = (hsize_t)row;
    hsize_t mn = (hsize_t)n;
    hid_t ms = H5Screate_simple(1, &mn, NULL);
    int rc = 0;
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, dst) < 0)
        rc = fail(g, name, "cannot read", h5_detail());
    (void)nd;
    H5Sclose(ms); H5Sclose(fs);
    return rc;
}

/* The image and reference checks of row i (0 ok, 1 broken + ar_error). */
static int check_mm(const grounding_dataset *g, int64_t i, const int *tok, int T, int idx) {
    const gds_mm_info *mm = &g->mm;
    int images = 0, pairs = 0, apairs = 0;
    for (int t = 0; t < T; t++) {
        if (mm->image_token >= 0 && tok[t] == mm->image_token) images++;
        if (t + 1 < T && mm->ref_start >= 0 && tok[t] == mm->ref_start && tok[t + 1] == mm->ref_end) pairs++;
        if (t + 1 < T && mm->audio_start >= 0 && tok[t] == mm->audio_start && tok[t + 1] == mm->audio_end) apairs++;
    }
    if (images > 1) { ar_errorf("%d image tokens (id %d); a sample has one image", images, mm->image_token); return 1; }
    if (images && (g->clip < 0 || idx < 0)) {
        ar_errorf("an image token (id %d) but %s", mm->image_token, g->clip < 0 ? "the file has no /clip_pixels" : "image_index = -1");
        return 1;
    }
    const int kind = g->ref_kind ? g->ref_kind[i] : GDS_REF_NONE, ri = g->ref_index ? g->ref_index[i] : -1;
    const int want_pairs = kind == GDS_REF_BOX || kind == GDS_REF_CROP, want_apairs = kind == GDS_REF_AUDIO;
    if (kind < GDS_REF_NONE || kind > GDS_REF_AUDIO) { ar_errorf("ref_kind = %d (expected -1, 0 box, 1 crop, 2 audio)", kind); return 1; }
    if (pairs != want_pairs || apairs != want_apairs) {
        ar_errorf("%d image-reference and %d audio-reference marker pairs, but ref_kind = %d", pairs, apairs, kind);
        return 1;
    }
    if (kind == GDS_REF_BOX) {
        const float *b = g->ref_box + 4 * i;
        if (!images) { ar_errorf("a box reference needs the sample's image token (the box is read on its CLIP grid)"); return 1; }
        if (!(isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]) && b[2] > b[0] && b[3] > b[1])) {
            ar_errorf("ref_box (%g, %g, %g, %g) is not a finite box with x2 > x1, y2 > y1", b[0], b[1], b[2], b[3]);
            return 1;
        }
    }
    if (kind == GDS_REF_CROP && (g->crops < 0 || ri < 0 || ri >= mm->n_crops)) {
        ar_errorf("ref_index = %d outside the %lld rows of /crop_pixels", ri, (long long)mm->n_crops);
        return 1;
    }
    if (kind == GDS_REF_AUDIO && (g->fbank < 0 || ri < 0 || ri >= mm->n_audio)) {
        ar_errorf("ref_index = %d outside the %lld rows of /audio_fbank", ri, (long long)mm->n_audio);
        return 1;
    }
    return 0;
}

static int load_extra(grounding_dataset *g, int64_t i, int slot, const int *tok, const int *tgt, int T) {
    int nseg = 0;
    for (int t = 0; t < T; t++) {
        if (tok[t] != g->seg) continue;
        if (t == 0) { ar_errorf("a [SEG] token (id %d) at position 0 has no position before it to predict it", g->seg); return 1; }
        nseg++;
    }
    const int cnt = g->count[i], idx = g->image_index[i];
    const int h0 = g->orig[2 * i], w0 = g->orig[2 * i + 1];
    int hm, wm;
    row_mask_hw(g, i, &hm, &wm);
    if (cnt != nseg) {
        ar_errorf("%d [SEG] token%s (id %d) within the first %d positions, but mask_count = %d", nseg, nseg == 1 ? "" : "s",
                  g->seg, T, cnt);
        return 1;
    }
    if (idx < -1 || idx >= g->m) { ar_errorf("image_index = %d outside [-1, %lld)", idx, (long long)g->m); return 1; }
    if (idx < 0 && cnt > 0) { ar_errorf("image_index = -1 (no image) but %d mask%s", cnt, cnt == 1 ? "" : "s"); return 1; }
    if (check_mm(g, i, tok, T, idx)) return 1;
    const int kind = g->ref_kind ? g->ref_kind[i] : GDS_REF_NONE;
    if (g->hook) {
        int hr = g->hook(g->hook_ctx, i, tok, tgt, T, kind, cnt);
        if (hr) return hr;
    }
    if (cnt > 0) {
        if (h0 <= 0 || w0 <= 0 || hm <= 0 || wm <= 0) {
            ar_errorf("orig_size %d x %d / mask size %d x %d: sizes must be positive", h0, w0, hm, wm);
            return 1;
        }
        if (h0 > g->max_h || w0 > g->max_w || hm > g->max_h || wm > g->max_w) {
            ar_errorf("orig_size %d x %d / mask size %d x %d exceeds the largest size %d x %d the model was sized for",
                      h0, w0, hm, wm, g->max_h, g->max_w);
            return 1;
        }
        const int64_t need = (int64_t)cnt * hm * wm, off = g->offset[i];
        if (off < 0 || off > g->nmask || need > g->nmask - off) {
            ar_errorf("mask_offset %lld + %d masks of %d x %d runs past the end of /masks (%lld bytes)", (long long)off,
                      cnt, hm, wm, (long long)g->nmask);
            return 1;
        }
    }
    /* every reason a row is broken is decided above, from the row's metadata;
     * the reads below either succeed or fail the run (-1) */
    if (g->probe) return 0;
    g->slot_row_masks[slot] = cnt;
    g->slot_has_img[slot] = idx >= 0;
    g->slot_ref_kind[slot] = kind;
    g->slot_has_clip[slot] = g->clip >= 0 && idx >= 0;
    if (kind == GDS_REF_BOX) memcpy(g->slot_box + 4 * slot, g->ref_box + 4 * i, 4 * sizeof(float));
    g->orig_hw[2 * slot] = h0; g->orig_hw[2 * slot + 1] = w0;
    const int avs = hm != h0 || wm != w0;
    g->mask_hw[2 * slot] = avs ? hm : 0; g->mask_hw[2 * slot + 1] = avs ? wm : 0;
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = 0;
    if (idx >= 0 && g->use_sam) {
        rc = read_row_floats(g, g->sam, "sam_pixels", idx, g->sam_buf + (size_t)slot * g->sam_n, g->sam_n);
    } else if (idx >= 0) {
        const size_t chw = (size_t)g->C * g->H * g->W;
        hsize_t start[4] = {(hsize_t)idx, 0, 0, 0}, cnt4[4] = {1, (hsize_t)g->C, (hsize_t)g->H, (hsize_t)g->W};
        hid_t fs = H5Dget_space(g->emb), ms = H5Screate_simple(4, cnt4, NULL);
        if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt4, NULL) < 0 ||
            H5Dread(g->emb, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, g->img_buf + (size_t)slot * chw) < 0)
            rc = fail(g, "image_embeddings", "cannot read", h5_detail());
        H5Sclose(ms); H5Sclose(fs);
    }
    if (!rc && g->slot_has_clip[slot])
        rc = read_row_floats(g, g->clip, "clip_pixels", idx, g->clip_buf + (size_t)slot * g->clip_n, g->clip_n);
    if (!rc && kind == GDS_REF_CROP)
        rc = read_row_floats(g, g->crops, "crop_pixels", g->ref_index[i], g->ref_buf + (size_t)slot * g->ref_n, g->clip_n);
    if (!rc && kind == GDS_REF_AUDIO)
        rc = read_row_floats(g, g->fbank, "audio_fbank", g->ref_index[i], g->ref_buf + (size_t)slot * g->ref_n,
                             (size_t)3 * g->mm.fbank_h * g->mm.fbank_w);
    if (!rc && cnt > 0) {
        hid_t md = H5Dopen2(g->f, "masks", H5P_DEFAULT);
        const size_t hw = (size_t)hm * wm, cap = (size_t)g->max_h * g->max_w;
        const int pm = g->lim_masks > 0 ? g->lim_masks : 1;
        for (int j = 0; j < cnt && !rc; j++) {
            hsize_t start = (hsize_t)(g->offset[i] + (int64_t)j * (int64_t)hw), n = hw;
            hid_t fs = H5Dget_space(md), ms = H5Screate_simple(1, &n, NULL);
            if (md < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL) < 0 ||
                H5Dread(md, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, g->bytes) < 0)
                rc = fail(g, "masks", "cannot read", h5_detail());
            H5Sclose(ms); H5Sclose(fs);
            float *dst = g->mask_buf + ((size_t)slot * pm + j) * cap;
            for (size_t p = 0; p < hw && !rc; p++) dst[p] = g->bytes[p] ? 1.0f : 0.0f;
        }
        if (md >= 0) H5Dclose(md);
    }
    h5_quiet_end(&q);
    return rc;
}

int gds_read_input(grounding_dataset *g, int which, int64_t row, float *out) {
    if (g->live) return ar_errorf("%s: the live loader has no stored encoder inputs (the trainer fills the feature cache as it goes)", g->path);
    hid_t d = which == GDS_IN_CLIP ? g->clip : which == GDS_IN_CROP ? g->crops : which == GDS_IN_SAM ? g->sam : g->fbank;
    const int64_t rows = which == GDS_IN_CLIP || which == GDS_IN_SAM ? g->m
                         : which == GDS_IN_CROP ? g->mm.n_crops : g->mm.n_audio;
    const char *name = which == GDS_IN_CLIP ? "clip_pixels" : which == GDS_IN_CROP ? "crop_pixels"
                       : which == GDS_IN_SAM ? "sam_pixels" : "audio_fbank";
    if (d < 0 || row < 0 || row >= rows)
        return ar_errorf("grounding dataset %s: %s row %lld does not exist", g->path, name, (long long)row);
    const size_t n = which == GDS_IN_FBANK ? (size_t)3 * g->mm.fbank_h * g->mm.fbank_w
                     : which == GDS_IN_SAM ? g->sam_n : g->clip_n;
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = read_row_floats(g, d, name, row, out, n);
    h5_quiet_end(&q);
    return rc;
}

static int check_cb(void *ctx, int64_t row, int slot, const int *tokens, const int *targets) {
    grounding_dataset *g = ctx;
    return load_extra(g, row, slot, tokens, targets, g->T_cur);
}

void gds_finish_batch(grounding_dataset *g, int nslots, gds_batch *out) {
    if (g->live) { gl_finish_batch(g->live, nslots, out); return; }
    const int pm = g->lim_masks > 0 ? g->lim_masks : 1;
    const size_t cap = (size_t)g->max_h * g->max_w, chw = (size_t)g->C * g->H * g->W;
    int k = 0;
    for (int b = 0; b < nslots; b++) {
        g->img[b] = g->slot_has_img[b] && !g->use_sam ? g->img_buf + (size_t)b * chw : NULL;
        g->sam_ptr[b] = g->slot_has_img[b] && g->use_sam ? g->sam_buf + (size_t)b * g->sam_n : NULL;
        for (int j = 0; j < g->slot_row_masks[b]; j++, k++) {
            g->masks[k] = g->mask_buf + ((size_t)b * pm + j) * cap;
            g->mask_sample[k] = b;
        }
    }
    out->B = nslots;
    out->img = g->img;
    out->orig_hw = g->orig_hw;
    out->mask_hw = g->mask_hw;
    out->n_masks = k;
    out->masks = g->masks;
    out->mask_sample = g->mask_sample;
    for (int b = 0; b < nslots; b++) {
        g->clip_ptr[b] = g->slot_has_clip[b] ? g->clip_buf + (size_t)b * g->clip_n : NULL;
        g->ref_ptr[b] = g->slot_ref_kind[b] == GDS_REF_CROP || g->slot_ref_kind[b] == GDS_REF_AUDIO
                            ? g->ref_buf + (size_t)b * g->ref_n : NULL;
    }
    out->clip = g->clip_ptr;
    out->sam_pixels = g->sam_ptr;
    out->ref_kind = g->slot_ref_kind;
    out->ref_box = g->slot_box;
    out->ref_data = g->ref_ptr;
}

int gds_next_batch(grounding_dataset *g, tds_cursor *cur, int T, int *tokens, int *targets, gds_batch *out) {
    if (g->live) return gl_next_batch(g->live, cur, T, tokens, targets, out);
    if (!g->B) return ar_errorf("grounding dataset %s: gds_configure was not called", g->path);
    g->T_cur = T;
    if (tds_next_batch_ex(g->tds, cur, g->B, T, tokens, targets, NULL, check_cb, g)) return -1;
    gds_finish_batch(g, g->B, out);
    return 0;
}

int gds_dp_setup(grounding_dataset *g, int rank, int nranks, int per_rank) {
    if (!g->live) return 0;
    return gl_dp_setup(g->live, rank, nranks, per_rank) ? -1 : 1;
}

int gds_dp_begin(grounding_dataset *g, tds_cursor *cur) {
    if (!g->live) return ar_errorf("grounding dataset %s: data-parallel sharing is for live sources", g->path);
    return gl_dp_begin(g->live, cur);
}

int gds_skip_batch(grounding_dataset *g, tds_cursor *cur, int T, int *tokens, int *targets) {
    if (g->live) {   /* a row's usability is only known once its image is decoded (gds_dp_setup avoids this) */
        gds_batch gb;
        return gl_next_batch(g->live, cur, T, tokens, targets, &gb);
    }
    if (!g->B) return ar_errorf("grounding dataset %s: gds_configure was not called", g->path);
    g->T_cur = T;
    g->probe = 1;
    int rc = tds_next_batch_ex(g->tds, cur, g->B, T, tokens, targets, NULL, check_cb, g);
    g->probe = 0;
    return rc;
}

int gds_read_row(grounding_dataset *g, int64_t i, int T, int slot, int *tokens, int *targets) {
    if (g->live) return gl_read_row(g->live, i, T, slot, tokens, targets);
    if (!g->B || slot < 0 || slot >= g->B)
        return ar_errorf("grounding dataset %s: slot %d outside the configured batch of %d", g->path, slot, g->B);
    g->slot_row_masks[slot] = 0;
    g->slot_has_img[slot] = 0;
    g->slot_has_clip[slot] = 0;
    g->slot_ref_kind[slot] = GDS_REF_NONE;
    int rc = tds_read_row(g->tds, i, T, tokens, targets);
    if (rc) return rc;
    rc = load_extra(g, i, slot, tokens, targets, T);
    if (rc == 1) ar_error_prefix("grounding dataset %s: row %lld: ", g->path, (long long)i);
    return rc;
}

/* ------------------------------------------------------------------ writer */
static int put(hid_t f, const char *name, hid_t ftype, hid_t mtype, int nd, const hsize_t *dims, const void *buf) {
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (d < 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) ? -1 : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

static int put_attr(hid_t f, const char *name, int v) {
    if (v < 0) return 0;
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    long long x = v;
    int rc = (a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &x) < 0) ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int put_mm(hid_t f, const gds_mm_data *mm, int64_t N, int64_t M) {
    const hsize_t S = (hsize_t)mm->S;
    if (mm->sam_pixels) {
        hsize_t d[4] = {(hsize_t)M, 3, (hsize_t)mm->sam_S, (hsize_t)mm->sam_S};
        if (put(f, "sam_pixels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d, mm->sam_pixels)) return -1;
    }
    if (mm->clip_pixels) {
        hsize_t d[4] = {(hsize_t)M, 3, S, S};
        if (put(f, "clip_pixels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d, mm->clip_pixels)) return -1;
    }
    if (mm->ref_kind) {
        hsize_t dn[2] = {(hsize_t)N, 4};
        if (put(f, "ref_kind", H5T_STD_I32LE, H5T_NATIVE_INT, 1, dn, mm->ref_kind) ||
            put(f, "ref_index", H5T_STD_I32LE, H5T_NATIVE_INT, 1, dn, mm->ref_index) ||
            put(f, "ref_box", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dn, mm->ref_box))
            return -1;
    }
    if (mm->crop_pixels && mm->n_crops > 0) {
        hsize_t d[4] = {(hsize_t)mm->n_crops, 3, S, S};
        if (put(f, "crop_pixels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d, mm->crop_pixels)) return -1;
    }
    if (mm->fbank && mm->n_audio > 0) {
        hsize_t d[5] = {(hsize_t)mm->n_audio, 3, 1, (hsize_t)mm->fbank_h, (hsize_t)mm->fbank_w};
        if (put(f, "audio_fbank", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 5, d, mm->fbank)) return -1;
    }
    return put_attr(f, "image_token_id", mm->image_token) || put_attr(f, "im_start_id", mm->im_start) ||
           put_attr(f, "im_end_id", mm->im_end) || put_attr(f, "ref_start_id", mm->ref_start) ||
           put_attr(f, "ref_end_id", mm->ref_end) || put_attr(f, "audio_start_id", mm->audio_start) ||
           put_attr(f, "audio_end_id", mm->audio_end) ? -1 : 0;
}

int gds_write(const char *path, const int *ids, const int *labels, int64_t N, int T, int vocab, int pad_id,
              int seg_token, const float *emb, int64_t M, int C, int H, int W, const int *image_index,
              const int *orig_hw, const int *mask_hw, const int *mask_count, const uint8_t *masks,
              const gds_mm_data *mm) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.part", path);
    if (tds_write(tmp, ids, labels, NULL, N, T, vocab, pad_id)) return -1;
    int64_t *off = malloc((size_t)(N ? N : 1) * sizeof(int64_t));
    if (!off) { remove(tmp); return ar_errorf("out of memory"); }
    int64_t K = 0;
    for (int64_t i = 0; i < N; i++) {
        off[i] = K;
        int hm = orig_hw[2 * i], wm = orig_hw[2 * i + 1];
        if (mask_hw && mask_hw[2 * i] > 0 && mask_hw[2 * i + 1] > 0) { hm = mask_hw[2 * i]; wm = mask_hw[2 * i + 1]; }
        K += (int64_t)mask_count[i] * hm * wm;
    }
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = -1;
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f >= 0) {
        hsize_t de[4] = {(hsize_t)M, (hsize_t)C, (hsize_t)H, (hsize_t)W}, dn[2] = {(hsize_t)N, 2}, dk = (hsize_t)K;
        rc = (emb && put(f, "image_embeddings", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, de, emb)) ||
             put(f, "image_index", H5T_STD_I32LE, H5T_NATIVE_INT, 1, dn, image_index) ||
             put(f, "orig_size", H5T_STD_I32LE, H5T_NATIVE_INT, 2, dn, orig_hw) ||
             (mask_hw && put(f, "mask_size", H5T_STD_I32LE, H5T_NATIVE_INT, 2, dn, mask_hw)) ||
             put(f, "mask_count", H5T_STD_I32LE, H5T_NATIVE_INT, 1, dn, mask_count) ||
             put(f, "mask_offset", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dn, off) ||
             put(f, "masks", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &dk, masks) ? -1 : 0;
        if (!rc && put_attr(f, "seg_token_id", seg_token)) rc = -1;
        if (!rc && mm && put_mm(f, mm, N, M)) rc = -1;
        if (H5Fclose(f) < 0) rc = -1;
    }
    if (rc) ar_errorf("grounding dataset %s: cannot write: %s", path, h5_detail());
    h5_quiet_end(&q);
    free(off);
    if (rc) { remove(tmp); return -1; }
    return ar_commit_file(tmp, path);
}
