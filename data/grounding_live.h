/* data/grounding_live.h — private to data/: a grounding_dataset backed by
 * the live loader (data/loader.h) instead of an HDF5 file, so the trainer
 * reads real data sets through the same gds_* calls. grounding_dataset.c
 * forwards every public call of a live handle to these. */
#ifndef ANYREF_DATA_GROUNDING_LIVE_H
#define ANYREF_DATA_GROUNDING_LIVE_H
#include "data/grounding_dataset.h"
#include "data/loader.h"

typedef struct gds_live gds_live;

gds_live *gl_new(ldr *l);   /* takes l over */
void gl_close(gds_live *g);
ldr *gl_loader(const gds_live *g);
const ldr_item *gl_item(const gds_live *g, int b);
int64_t gl_rows(const gds_live *g);
int gl_seq_len(const gds_live *g);
int gl_seg_token(const gds_live *g);
void gl_mm(const gds_live *g, gds_mm_info *out);
void gl_set_hook(gds_live *g, gds_row_hook hook, void *ctx);
int gl_use_sam_pixels(gds_live *g, int on);
void gl_limits(const gds_live *g, int *max_h, int *max_w, int *max_masks);
int gl_configure(gds_live *g, int seg_token, int B, int max_h, int max_w);
int gl_next_batch(gds_live *g, tds_cursor *cur, int T, int *tokens, int *targets, gds_batch *out);
int gl_dp_setup(gds_live *g, int rank, int nranks, int per_rank);
int gl_dp_begin(gds_live *g, tds_cursor *cur);
int gl_read_row(gds_live *g, int64_t i, int T, int slot, int *tokens, int *targets);
void gl_finish_batch(gds_live *g, int nslots, gds_batch *out);
#endif
