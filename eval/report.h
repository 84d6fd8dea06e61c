/* eval/report.h — the pictures a run leaves in its directory: the loss
 * curves of metrics.jsonl, and a grid of validation examples (image,
 * reference, predicted and ground-truth masks, generated text); and the
 * `anyref plot` command.
 *
 * LOSS PLOT (report_loss_plot)
 *   Reads metrics.jsonl (README "Runs, checkpoints, resume": one JSON object
 *   per line with "step" and values, null when absent) and writes an
 *   REPORT_PLOT_W x REPORT_PLOT_H RGB PNG:
 *     - x: step; left axis: the curves of "loss", "ce", "bce", "dice" (each
 *       present one as a line in its own colour; a null/absent value breaks
 *       the line, a lone value is a dot) and "val_loss" as points joined by a
 *       thin line; right axis 0..1: "val_giou", "val_ciou", "accuracy" as
 *       square points joined the same way (only when one of them is present);
 *     - ticks with numbers on both axes, light grid lines, a legend of the
 *       series present, a title naming the file;
 *     - the left axis is logarithmic when every left value is > 0 and the
 *       largest is at least REPORT_LOG_RATIO times the smallest (the left
 *       axis title then says "(log)"), else linear from 0 when all values
 *       are >= 0 and the smallest is under a quarter of the largest.
 *   Keys absent from every line are left out (of curves and legend). Lines
 *   that are blank, not JSON, not an object or without a numeric "step" are
 *   skipped (a run killed mid-write leaves a cut last line); a file with no
 *   usable line is an error, a file whose lines carry no value of any series
 *   gives a plot saying so. One step plots as dots on a range of 2 steps.
 *   The series colours are REPORT_RGB_* (the tests look for them).
 *
 * EXAMPLES GRID (report_grid_*)
 *   Each example is a cell: three tiles of tile x tile pixels side by side,
 *   REPORT_GRID_GAP apart —
 *     1. "reference": the image (aspect kept, centred on dark grey) with the
 *        box reference drawn as a yellow outline (box in the image's pixel
 *        coordinates x0 y0 x1 y1) and the image-crop reference as a
 *        thumbnail in its bottom-right corner;
 *     2. "prediction": the image with pred_mask blended in orange and its
 *        outline (or "no mask" when pred_mask is NULL);
 *     3. "ground truth": the image with gt_mask blended in blue and its
 *        outline (or "no ground truth");
 *   and under them REPORT_GRID_TEXT_H pixels of text wrapped to the cell's
 *   width: "ref: <reference_text>" (or "box x0,y0,x1,y1" / "image crop"
 *   when there is no text), 2 lines at most; "out: <generated_text>",
 *   3 lines at most; "#<k> IoU <iou, 3 decimals>" ("IoU -" when iou is NaN).
 *   Texts cut short end in "...".
 *   Cells fill rows of `cols` cells left to right. With n examples the PNG
 *   is (report_grid_size):
 *       cw = min(cols, n), rows = ceil(n / cw)
 *       width  = REPORT_GRID_PAD + cw   * (3 * tile + 2 * REPORT_GRID_GAP + REPORT_GRID_PAD)
 *       height = REPORT_GRID_PAD + rows * (tile + REPORT_GRID_TEXT_H + REPORT_GRID_PAD)
 *   Each example is drawn when added (its inputs are not kept: the caller
 *   may free them at once); a cell costs (3 tile + 8) (tile + 72) 3 bytes.
 *
 * Errors: -1 / NULL + ar_error (core/error.h) naming the file or argument.
 * Depends on data/draw.h (data/image.h: PNG), core/json.h, core/error.h.
 */
#ifndef ANYREF_TRAIN_REPORT_H
#define ANYREF_TRAIN_REPORT_H

#include <stdint.h>

#define REPORT_PLOT_W 800
#define REPORT_PLOT_H 500
#define REPORT_LOG_RATIO 100.0

/* Series colours (0xRRGGBB). */
#define REPORT_RGB_LOSS     0x1F4E9Au
#define REPORT_RGB_CE       0xE67E22u
#define REPORT_RGB_BCE      0x2CA02Cu
#define REPORT_RGB_DICE     0x9B59B6u
#define REPORT_RGB_VAL_LOSS 0xD62728u
#define REPORT_RGB_VAL_GIOU 0x17A2B8u
#define REPORT_RGB_VAL_CIOU 0x8C564Bu
#define REPORT_RGB_ACCURACY 0xE377C2u
/* Grid overlays. */
#define REPORT_RGB_PRED 0xFF8C00u
#define REPORT_RGB_GT   0x1E90FFu
#define REPORT_RGB_BOX  0xFFE000u

/* The loss plot of metrics_jsonl into png_path. 0, or -1 + ar_error. */
int report_loss_plot(const char *metrics_jsonl, const char *png_path);

#define REPORT_GRID_PAD 8
#define REPORT_GRID_GAP 4
#define REPORT_GRID_TEXT_H 72
#define REPORT_GRID_MIN_TILE 48
#define REPORT_GRID_MAX_TILE 1024
#define REPORT_GRID_MAX_COLS 64

typedef struct report_grid report_grid;

/* cols cells per row (1..REPORT_GRID_MAX_COLS), tiles of tile x tile
 * pixels (REPORT_GRID_MIN_TILE..REPORT_GRID_MAX_TILE). NULL + ar_error. */
report_grid *report_grid_new(int cols, int tile);
/* One example. rgb[h, w, 3]: the image. reference_text (may be NULL): the
 * text reference or a description; box (NULL: none): x0 y0 x1 y1 in the
 * image's pixels; ref_image_rgb[rh, rw, 3] (NULL: none): the image-crop
 * reference; pred_mask, gt_mask [h, w] (nonzero = object; NULL: none);
 * generated_text (may be NULL): the model's answer; iou: the example's IoU
 * (NaN: none). 0, or -1 + ar_error (the grid is unchanged). */
int report_grid_add(report_grid *g, const uint8_t *rgb, int h, int w, const char *reference_text,
                    const float *box, const uint8_t *ref_image_rgb, int rh, int rw,
                    const uint8_t *pred_mask, const uint8_t *gt_mask, const char *generated_text, double iou);
/* The number of examples added. */
int report_grid_count(const report_grid *g);
/* The PNG's size for n examples (formula above); 0 and 0 when n = 0. */
void report_grid_size(int cols, int tile, int n, int *width, int *height);
/* Writes the grid (at least one example) to png. 0, or -1 + ar_error. */
int report_grid_save(const report_grid *g, const char *png);
void report_grid_free(report_grid *g);   /* NULL ok */

/* `anyref plot RUN_DIR [--out FILE]`: argv[0] is "plot". RUN_DIR is a run
 * directory (its metrics.jsonl) or a metrics file itself; writes FILE
 * (default: loss.png beside the metrics file) and prints its path.
 * Returns the exit status: 0 done, 1 an error (message on stderr), 2 bad usage. */
int report_plot_main(int argc, char **argv);

#endif
