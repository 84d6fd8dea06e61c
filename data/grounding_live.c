/* data/grounding_live.c — a grounding_dataset over the live loader (see
 * grounding_live.h): built samples turned into gds_batch views, the row hook
 * adapted, the reader settings checked against the loader's. */
#include "data/grounding_live.h"
#include "core/dist.h"
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

struct gds_live {
    ldr *l;
    int B, T, use_sam;
    gds_row_hook hook;
    void *hook_ctx;
    const ldr_item **items;      /* [B] the batch's samples */
    const float **img, **masks, **clip, **ref_data, **sam;
    int *orig_hw, *mask_hw, *mask_sample, *ref_kind;
    float *ref_box;
    /* data parallel (gl_dp_setup): this step's positions, the next to take */
    int64_t *dp_mine;
    int dp_per, dp_next;
    double *dp_status;
};

gds_live *gl_new(ldr *l) {
    gds_live *g = calloc(1, sizeof *g);
    if (!g) { ldr_free(l); ar_errorf("out of memory"); return NULL; }
    g->l = l;
    return g;
}

static void free_batch(gds_live *g) {
    free(g->items); free(g->img); free(g->masks); free(g->clip); free(g->ref_data); free(g->sam);
    free(g->orig_hw); free(g->mask_hw); free(g->mask_sample); free(g->ref_kind); free(g->ref_box);
}

void gl_close(gds_live *g) {
    if (!g) return;
    ldr_free(g->l);
    free_batch(g);
    free(g->dp_mine);
    free(g->dp_status);
    free(g);
}

ldr *gl_loader(const gds_live *g) { return g->l; }
const ldr_item *gl_item(const gds_live *g, int b) { return b >= 0 && b < g->B && g->items ? g->items[b] : NULL; }
int64_t gl_rows(const gds_live *g) { return ldr_rows(g->l); }
int gl_seq_len(const gds_live *g) { return ldr_cfg_T(g->l); }
int gl_seg_token(const gds_live *g) {
    ldr_markers m;
    ldr_get_markers(g->l, &m);
    return m.seg;
}

void gl_mm(const gds_live *g, gds_mm_info *out) {
    ldr_markers m;
    ldr_get_markers(g->l, &m);
    memset(out, 0, sizeof *out);
    ldr_input_sides(g->l, &out->clip_S, &out->sam_S);
    out->has_refs = 1;
    if (ldr_has_audio(g->l)) {
        out->n_audio = 1;   /* "audio references possible": the loader decodes them per sample */
        ldr_fbank_hw(&out->fbank_h, &out->fbank_w);
    }
    out->image_token = m.image; out->im_start = m.im_start; out->im_end = m.im_end;
    out->ref_start = m.ref_start; out->ref_end = m.ref_end; out->audio_start = m.audio_start; out->audio_end = m.audio_end;
}

/* ldr_hook -> the trainer's gds_row_hook */
static int hook_adapter(void *ctx, const ldr_item *it) {
    gds_live *g = ctx;
    return g->hook(g->hook_ctx, it->position, it->tokens, it->targets, g->T, it->ref_kind, it->n_masks);
}

void gl_set_hook(gds_live *g, gds_row_hook hook, void *ctx) {
    g->hook = hook;
    g->hook_ctx = ctx;
    ldr_set_hook(g->l, hook ? hook_adapter : NULL, g);
}

int gl_use_sam_pixels(gds_live *g, int on) {
    int c, s;
    ldr_input_sides(g->l, &c, &s);
    if (!on) return ar_errorf("data sources: the loader decodes images, it has no stored SAM embeddings: set sam_encoder.model");
    if (s <= 0) return ar_errorf("data sources: the loader was opened without SAM inputs");
    g->use_sam = 1;
    return 0;
}

void gl_limits(const gds_live *g, int *max_h, int *max_w, int *max_masks) {
    int h, w, k;
    ldr_limits(g->l, &h, &w, &k);
    if (max_h) *max_h = h;
    if (max_w) *max_w = w;
    if (max_masks) *max_masks = k;
}

int gl_configure(gds_live *g, int seg_token, int B, int max_h, int max_w) {
    if (seg_token != gl_seg_token(g))
        return ar_errorf("data sources: seg.token = %d, but the tokenizer's [SEG] is %d (leave seg.token = -1)", seg_token,
                         gl_seg_token(g));
    if (!g->use_sam) return ar_errorf("data sources: the loader decodes images, it has no stored SAM embeddings: set sam_encoder.model");
    g->B = B;
    g->T = ldr_cfg_T(g->l);
    free_batch(g);
    g->items = calloc((size_t)B, sizeof *g->items);
    g->img = calloc((size_t)B, sizeof *g->img);
    g->masks = calloc((size_t)B, sizeof *g->masks);
    g->clip = calloc((size_t)B, sizeof *g->clip);
    g->ref_data = calloc((size_t)B, sizeof *g->ref_data);
    g->sam = calloc((size_t)B, sizeof *g->sam);
    g->orig_hw = calloc(2 * (size_t)B, sizeof(int));
    g->mask_hw = calloc(2 * (size_t)B, sizeof(int));
    g->mask_sample = calloc((size_t)B, sizeof(int));
    g->ref_kind = calloc((size_t)B, sizeof(int));
    g->ref_box = calloc(4 * (size_t)B, sizeof(float));
    if (!g->items || !g->img || !g->masks || !g->clip || !g->ref_data || !g->sam || !g->orig_hw || !g->mask_hw ||
        !g->mask_sample || !g->ref_kind || !g->ref_box)
        return ar_errorf("out of memory");
    return ldr_start(g->l, B, max_h, max_w);
}

static void copy_tokens(const gds_live *g, const ldr_item *it, int T, int *tokens, int *targets) {
    const int n = T < g->T ? T : g->T;
    memcpy(tokens, it->tokens, (size_t)n * sizeof(int));
    memcpy(targets, it->targets, (size_t)n * sizeof(int));
    for (int t = n; t < T; t++) { tokens[t] = ldr_pad_id(g->l); targets[t] = -100; }
}

void gl_finish_batch(gds_live *g, int nslots, gds_batch *out) {
    int k = 0;
    for (int b = 0; b < nslots; b++) {
        const ldr_item *it = g->items[b];
        g->img[b] = NULL;
        g->sam[b] = it->sam;
        g->clip[b] = it->clip;
        g->ref_data[b] = it->ref_data;
        g->ref_kind[b] = it->ref_kind;
        memcpy(g->ref_box + 4 * b, it->ref_box, 4 * sizeof(float));
        g->orig_hw[2 * b] = it->orig_hw[0]; g->orig_hw[2 * b + 1] = it->orig_hw[1];
        g->mask_hw[2 * b] = it->mask_hw[0]; g->mask_hw[2 * b + 1] = it->mask_hw[1];
        for (int j = 0; j < it->n_masks; j++, k++) {   /* one mask per sample (ldr_limits) */
            g->masks[k] = it->masks;
            g->mask_sample[k] = b;
        }
    }
    *out = (gds_batch){.B = nslots, .img = g->img, .orig_hw = g->orig_hw, .mask_hw = g->mask_hw, .n_masks = k,
                       .masks = g->masks, .mask_sample = g->mask_sample, .clip = g->clip, .ref_kind = g->ref_kind,
                       .ref_box = g->ref_box, .ref_data = g->ref_data, .sam_pixels = g->sam};
}

int gl_dp_setup(gds_live *g, int rank, int nranks, int per_rank) {
    if (ldr_dp_setup(g->l, rank, nranks, per_rank)) return -1;
    const int64_t n = ldr_dp_status_len(g->l);
    free(g->dp_mine);
    free(g->dp_status);
    g->dp_mine = malloc((size_t)per_rank * sizeof *g->dp_mine);
    g->dp_status = malloc((size_t)n * sizeof *g->dp_status);
    if (!g->dp_mine || !g->dp_status) return ar_errorf("out of memory");
    g->dp_per = per_rank;
    g->dp_next = per_rank;
    return 0;
}

int gl_dp_begin(gds_live *g, tds_cursor *cur) {
    if (!g->dp_per || !g->B) return ar_errorf("data sources: gl_dp_setup and gds_configure were not called");
    const int64_t n = ldr_dp_status_len(g->l);
    if (n > INT32_MAX) return ar_errorf("data sources: %lld stream positions per step", (long long)n);
    if (ldr_dp_window(g->l, cur, g->dp_status)) return -1;
    if (dist_sum(g->dp_status, (int)n)) return ar_error_prefix("data sources: the ranks' sample status: ");
    if (ldr_dp_assign(g->l, cur, g->dp_status, g->dp_mine)) return -1;
    g->dp_next = 0;
    return 0;
}

int gl_next_batch(gds_live *g, tds_cursor *cur, int T, int *tokens, int *targets, gds_batch *out) {
    if (!g->B) return ar_errorf("data sources: gds_configure was not called");
    if (g->dp_per) {   /* the next B of this rank's share of the step (gl_dp_begin moved the cursor) */
        if (g->dp_next + g->B > g->dp_per)
            return ar_errorf("data sources: a micro-batch beyond this rank's %d samples of the step", g->dp_per);
        if (ldr_dp_take(g->l, g->dp_mine + g->dp_next, g->B, g->items)) return -1;
        g->dp_next += g->B;
    } else if (ldr_next_batch(g->l, cur, g->items)) {
        return -1;
    }
    for (int b = 0; b < g->B; b++) copy_tokens(g, g->items[b], T, tokens + (size_t)b * T, targets + (size_t)b * T);
    gl_finish_batch(g, g->B, out);
    return 0;
}

int gl_read_row(gds_live *g, int64_t i, int T, int slot, int *tokens, int *targets) {
    if (!g->B || slot < 0 || slot >= g->B) return ar_errorf("data sources: slot %d outside the batch of %d", slot, g->B);
    const ldr_item *it;
    int rc = ldr_build_row(g->l, i, slot, &it);
    if (rc) return rc;
    g->items[slot] = it;
    copy_tokens(g, it, T, tokens, targets);
    return 0;
}
