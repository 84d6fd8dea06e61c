/* tests/fuzz/fuzz_jsonl.c — libFuzzer target for data/custom_jsonl.c, the
 * JSON-lines record parser for users' own data (without file checks, so
 * nothing is opened). The input is a whole .jsonl buffer for
 * cj_load_buffer; every record that loads must be self-consistent (one
 * reference kind, a box with x0 < x1 and y0 < y1, polygons of even counts
 * >= 6, an RLE whose counts sum to its size, literal question and answer
 * together), every skipped line must have left a message naming the file,
 * and the counts must add up. Traps on any broken invariant.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_jsonl -max_total_time=60
 */
#include "core/error.h"
#include "data/custom_jsonl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

/* image_probe_size / image_load / ar_wav_* are not reached without file checks */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cj_dataset ds;
    if (cj_load_buffer((const char *)data, size, "dir/f.jsonl", NULL, &ds) < 0) return 0;
    if (ds.n + ds.n_bad + ds.n_blank != ds.n_lines) __builtin_trap();
    if (ds.n_messages != (int)(ds.n_bad < CJ_MAX_MESSAGES ? ds.n_bad : CJ_MAX_MESSAGES)) __builtin_trap();
    for (int i = 0; i < ds.n_messages; i++)
        if (strncmp(ds.messages[i], "dir/f.jsonl:", 12) != 0) __builtin_trap();
    for (size_t i = 0; i < ds.n; i++) {
        const cj_record *r = &ds.recs[i];
        if (!r->image || !r->split || !r->id || strncmp(r->image, "dir/", 4) && r->image[0] != '/') __builtin_trap();
        if (r->line < 1 || (size_t)r->line > ds.n_lines) __builtin_trap();
        if (r->ref == CJ_REF_TEXT && (!r->text || !r->text[0])) __builtin_trap();
        if (r->ref == CJ_REF_BOX && !(r->box[0] < r->box[2] && r->box[1] < r->box[3])) __builtin_trap();
        if ((r->ref == CJ_REF_IMAGE || r->ref == CJ_REF_AUDIO) != (r->ref_path != NULL)) __builtin_trap();
        if ((r->qa == CJ_LITERAL) != (r->question != NULL) || (r->question != NULL) != (r->answer != NULL))
            __builtin_trap();
        if (r->qa == CJ_TEMPLATE_CAPTION && !r->expression) __builtin_trap();
        if (r->qa == CJ_TEMPLATE_SEG && r->mask == CJ_MASK_NONE) __builtin_trap();
        if (r->mask == CJ_MASK_POLYGON) {
            if (r->n_poly < 1) __builtin_trap();
            for (uint32_t k = 0; k < r->n_poly; k++)
                if (r->poly_len[k] < 6 || r->poly_len[k] % 2) __builtin_trap();
        }
        if (r->mask == CJ_MASK_RLE) {
            uint64_t sum = 0;
            for (size_t k = 0; k < r->rle.m; k++) sum += r->rle.cnts[k];
            if (sum != (uint64_t)r->rle.h * r->rle.w) __builtin_trap();
        }
    }
    cj_free(&ds);
    return 0;
}
