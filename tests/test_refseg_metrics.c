/* tests/test_refseg_metrics.c — gIoU / cIoU of eval/evaluate.h
 * (eval_cell_add, eval_cell_means: the numbers `anyref eval` reports for
 * referring segmentation) against tests/fixtures/refseg_metrics.h5, written
 * by tests/ref/refseg_metrics_ref.py, an independent numpy version of the
 * published definitions (LISA's validate: empty union counted as 1). 160
 * generated predictions of random sizes with empty, whole-image, empty-
 * prediction, perfect and missing ([SEG] not generated: scored as the empty
 * mask) cases, four reference types: the model's gIoU and cIoU and the two
 * baselines' (empty mask, whole image) per type, to 1e-12; plus hand cases.
 * Depends on tests/h5fixture.h. */
#include "eval/evaluate.h"

#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/refseg_metrics.h5"
#define PFX "refseg_metrics "
#define TOL 1e-12

static void hand_cases(void) {
    eval_cell c;
    memset(&c, 0, sizeof c);
    const float x[4] = {1, 1, -1, -1}, y[4] = {1, 0, 1, 0}, e[4] = {0, 0, 0, 0};
    uint8_t p[4], g[4];
    double iou = eval_cell_add(&c, x, y, 4, p, g);
    t_check(fabs(iou - 1.0 / 3.0) < 1e-15 && p[0] == 1 && p[2] == 0 && g[2] == 1, PFX "hand IoU 1/3", "%.17g", iou);
    iou = eval_cell_add(&c, NULL, e, 4, NULL, NULL);   /* no prediction, empty truth: 1 */
    t_check(iou == 1.0, PFX "hand empty vs empty = 1", "%g", iou);
    double v[6];
    eval_cell_means(&c, v);
    /* gIoU (1/3 + 1) / 2; cIoU 1 / 3; empty: gIoU (0 + 1) / 2, cIoU 0 / 2;
       whole: gIoU (2/4 + 0/4) / 2, cIoU 2 / 8 */
    const double want[6] = {(1.0 / 3.0 + 1.0) / 2, 1.0 / 3.0, 0.5, 0.0, 0.25, 0.25};
    double worst = 0;
    for (int i = 0; i < 6; i++) worst = fmax(worst, fabs(v[i] - want[i]));
    t_check(worst < 1e-15, PFX "hand means", "max abs err %.3g", worst);
    eval_cell z;
    memset(&z, 0, sizeof z);
    eval_cell_means(&z, v);
    t_check(isnan(v[0]) && v[1] == 1.0, PFX "empty cell: gIoU NaN, cIoU 1", "%g %g", v[0], v[1]);
}

int main(void) {
    hand_cases();
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return t_exit_code();
    const int n = fx_len(&fx, "h");
    const int np = fx_len(&fx, "logits");
    if (n <= 0 || np <= 0) { fx_close(&fx); return t_exit_code(); }
    int *h = fx_alloc(&fx, sizeof(int) * n), *w = fx_alloc(&fx, sizeof(int) * n);
    int *ref = fx_alloc(&fx, sizeof(int) * n), *has = fx_alloc(&fx, sizeof(int) * n);
    long long *off = fx_alloc(&fx, sizeof(long long) * (n + 1));
    float *x = fx_alloc(&fx, sizeof(float) * np), *y = fx_alloc(&fx, sizeof(float) * np);
    double expect[4 * 6];
    const int s1[1] = {n}, s2[1] = {n + 1}, sp[1] = {np}, se[2] = {4, 6};
    int ok = fx_read(&fx, "h", H5T_NATIVE_INT, h, 1, s1) && fx_read(&fx, "w", H5T_NATIVE_INT, w, 1, s1) &&
             fx_read(&fx, "ref", H5T_NATIVE_INT, ref, 1, s1) && fx_read(&fx, "has_pred", H5T_NATIVE_INT, has, 1, s1) &&
             fx_read(&fx, "offset", H5T_NATIVE_LLONG, off, 1, s2) && fx_read(&fx, "logits", H5T_NATIVE_FLOAT, x, 1, sp) &&
             fx_read(&fx, "gt", H5T_NATIVE_FLOAT, y, 1, sp) && fx_read(&fx, "expect", H5T_NATIVE_DOUBLE, expect, 2, se);
    if (ok) {
        eval_cell cells[EVAL_REFS];
        memset(cells, 0, sizeof cells);
        for (int i = 0; i < n; i++)
            eval_cell_add(&cells[ref[i]], has[i] ? x + off[i] : NULL, y + off[i], (size_t)h[i] * w[i], NULL, NULL);
        static const char *const what[6] = {"gIoU", "cIoU", "empty-mask gIoU", "empty-mask cIoU", "whole-image gIoU",
                                            "whole-image cIoU"};
        for (int k = 0; k < 6; k++) {
            double worst = 0;
            int types = 0;
            for (int r = 0; r < EVAL_REFS; r++) {
                double v[6];
                eval_cell_means(&cells[r], v);
                const double want = expect[r * 6 + k];
                if (isnan(want)) { worst = isnan(v[k]) ? worst : INFINITY; continue; }
                types++;
                worst = fmax(worst, fabs(v[k] - want));
            }
            char label[64];
            snprintf(label, sizeof label, PFX "%s per reference type", what[k]);
            t_check(worst <= TOL && types > 0, label, "%d types, %d samples: max abs err %.3g (tol %.0e)", types, n, worst,
                    TOL);
        }
    }
    free(h); free(w); free(ref); free(has); free(off); free(x); free(y);
    fx_close(&fx);
    return t_exit_code();
}
