/* tests/test_avs_metrics.c — eval/avs_metrics.c (AVSBench J and F, beta^2
 * = 0.3) against tests/fixtures/avs_metrics.h5, written by
 * tests/ref/avs_metrics_ref.py: an independent float32 PyTorch version of
 * the public scripts' mask_iou / Eval_Fmeasure / _eval_pr / AverageMeter on
 * generated logits and 0/1 ground truths (ordinary, empty, all-ones,
 * saturated, perfect, two videos in one batch). Checks, to 1e-6: the
 * thresholds (within an ulp of torch's CPU linspace), the float32 sigmoid,
 * J, F, the mean F curve and the kept-frame count of every batch, the split
 * means; plus hand cases and argument errors. Depends on tests/h5fixture.h. */
#include "eval/avs_metrics.h"

#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define FIXTURE "tests/fixtures/avs_metrics.h5"
#define PFX "avs_metrics "
#define TOL 1e-6

static void hand_cases(void) {
    /* 2x2 frames: logit > 0 -> predicted */
    float x1[4] = {3, 3, -3, -3}, g1[4] = {1, 0, 1, 0};
    double j, f;
    avs_mask_iou(x1, g1, 1, 2, 2, &j);
    t_check(fabs(j - 1.0 / 3.0) < 1e-6, PFX "hand iou", "%.9f (1/3)", j);
    float ge[4] = {0, 0, 0, 0};
    avs_mask_iou(x1, ge, 1, 2, 2, &j);
    t_check(fabs(j - 0.5) < 1e-6, PFX "hand empty-gt iou = empty-pixel fraction", "%.9f (0.5)", j);
    int kept = -1;
    avs_fmeasure(x1, ge, 1, 2, 2, &f, NULL, &kept);
    t_check(f == 0 && kept == 0, PFX "hand empty gt skipped, F 0", "F %g kept %d", f, kept);
    /* all predicted at p = 1.0f: precision 1/2, recall 1 at every threshold */
    float xs[4] = {30, 30, 30, 30};
    avs_fmeasure(xs, g1, 1, 2, 2, &f, NULL, NULL);
    double want = 1.3 * 0.5 / (0.3 * 0.5 + 1.0);
    t_check(fabs(f - want) < 1e-12, PFX "hand saturated F", "%.12f (%.12f)", f, want);
    t_check(avs_mask_iou(x1, NULL, 1, 2, 2, &j) < 0 && avs_fmeasure(x1, g1, 0, 2, 2, &f, NULL, NULL) < 0,
            PFX "argument errors", "%s", ar_error());
    avs_meter m;
    avs_meter_init(&m);
    t_check(isnan(avs_meter_j(&m)) && isnan(avs_meter_f(&m)), PFX "empty meter NaN", " ");
}

int main(void) {
    hand_cases();
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return t_exit_code();
    int h = 0, w = 0, frames = 0, pr = 0;
    if (!fx_attr(&fx, "h", H5T_NATIVE_INT, &h) || !fx_attr(&fx, "w", H5T_NATIVE_INT, &w) ||
        !fx_attr(&fx, "frames", H5T_NATIVE_INT, &frames) || !fx_attr(&fx, "pr_num", H5T_NATIVE_INT, &pr)) {
        fx_close(&fx);
        return t_exit_code();
    }
    if (pr != AVS_PR_NUM) {
        fx_bad(&fx, "pr_num", "not 255");
        fx_close(&fx);
        return t_exit_code();
    }
    int nb = fx_len(&fx, "batch_n");
    if (nb <= 0) {
        fx_close(&fx);
        return t_exit_code();
    }
    size_t n = (size_t)frames * h * w;
    float *x = fx_alloc(&fx, n * sizeof(float)), *g = fx_alloc(&fx, n * sizeof(float));
    double *probs = fx_alloc(&fx, n * sizeof(double));
    int *bs = fx_alloc(&fx, nb * sizeof(int)), *bn = fx_alloc(&fx, nb * sizeof(int));
    int *bk = fx_alloc(&fx, nb * sizeof(int));
    double *bj = fx_alloc(&fx, nb * sizeof(double)), *bf = fx_alloc(&fx, nb * sizeof(double));
    double *bc = fx_alloc(&fx, (size_t)nb * AVS_PR_NUM * sizeof(double)), th_ref[AVS_PR_NUM], sj, sf;
    int s3[3] = {frames, h, w}, s1[1] = {nb}, s2[2] = {nb, AVS_PR_NUM}, sp[1] = {AVS_PR_NUM}, one[1] = {1};
    if (!fx_read(&fx, "logits", H5T_NATIVE_FLOAT, x, 3, s3) || !fx_read(&fx, "gt", H5T_NATIVE_FLOAT, g, 3, s3) ||
        !fx_read(&fx, "probs", H5T_NATIVE_DOUBLE, probs, 3, s3) ||
        !fx_read(&fx, "thresholds", H5T_NATIVE_DOUBLE, th_ref, 1, sp) ||
        !fx_read(&fx, "batch_start", H5T_NATIVE_INT, bs, 1, s1) ||
        !fx_read(&fx, "batch_n", H5T_NATIVE_INT, bn, 1, s1) ||
        !fx_read(&fx, "batch_kept", H5T_NATIVE_INT, bk, 1, s1) ||
        !fx_read(&fx, "batch_j", H5T_NATIVE_DOUBLE, bj, 1, s1) ||
        !fx_read(&fx, "batch_f", H5T_NATIVE_DOUBLE, bf, 1, s1) ||
        !fx_read(&fx, "batch_curve", H5T_NATIVE_DOUBLE, bc, 2, s2) ||
        !fx_read(&fx, "split_j", H5T_NATIVE_DOUBLE, &sj, 1, one) ||
        !fx_read(&fx, "split_f", H5T_NATIVE_DOUBLE, &sf, 1, one))
        goto done;

    float th[AVS_PR_NUM];
    avs_thresholds(th);
    double eth = 0;
    int th_exact = 0;
    for (int i = 0; i < AVS_PR_NUM; i++) {
        eth = fmax(eth, fabs(th[i] - th_ref[i]));
        th_exact += th[i] == (float)th_ref[i];
    }
    t_check(eth <= 6e-8 && th[0] == 0.0f && th[AVS_PR_NUM - 1] == 1.0f, PFX "thresholds",
            "max abs err %.3g vs torch CPU linspace (%d/255 identical; ends 0 and 1.0f)", eth, th_exact);
    double esig = 0;
    for (size_t i = 0; i < n; i++) esig = fmax(esig, fabs(avs_sigmoidf(x[i]) - probs[i]));
    t_check(esig <= 1.2e-7, PFX "sigmoid float32", "max abs err %.3g vs torch.sigmoid", esig);

    avs_meter m;
    avs_meter_init(&m);
    double ej = 0, ef = 0, ec = 0;
    int kept_ok = 1;
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)bs[b] * h * w, *gb = g + (size_t)bs[b] * h * w;
        double j, f, j2, f2, curve[AVS_PR_NUM];
        int kept;
        if (avs_mask_iou(xb, gb, bn[b], h, w, &j) < 0 || avs_fmeasure(xb, gb, bn[b], h, w, &f, curve, &kept) < 0 ||
            avs_meter_add(&m, xb, gb, bn[b], h, w, &j2, &f2) < 0) {
            t_fail(PFX "batch", "%s", ar_error());
            goto done;
        }
        ej = fmax(ej, fabs(j - bj[b]));
        ef = fmax(ef, fabs(f - bf[b]));
        for (int i = 0; i < AVS_PR_NUM; i++) ec = fmax(ec, fabs(curve[i] - bc[(size_t)b * AVS_PR_NUM + i]));
        kept_ok &= kept == bk[b] && j2 == j && f2 == f;
        printf("     batch %d: %d frames, %d kept; J %.7f (ref %.7f) F %.7f (ref %.7f)\n", b, bn[b], kept, j,
               bj[b], f, bf[b]);
    }
    t_check(ej <= TOL, PFX "batch J (mask_iou)", "max abs err %.3g over %d batches", ej, nb);
    t_check(ef <= TOL, PFX "batch F (Eval_Fmeasure)", "max abs err %.3g over %d batches", ef, nb);
    t_check(ec <= TOL, PFX "batch mean F curves", "max abs err %.3g over %d x 255", ec, nb);
    t_check(kept_ok, PFX "kept frames and meter per-batch values", " ");
    double mj = avs_meter_j(&m), mf = avs_meter_f(&m);
    t_check(fabs(mj - sj) <= TOL && fabs(mf - sf) <= TOL, PFX "split J and F (AverageMeter)",
            "J %.7f (ref %.7f, err %.3g) F %.7f (ref %.7f, err %.3g)", mj, sj, fabs(mj - sj), mf, sf,
            fabs(mf - sf));
done:
    free(x);
    free(g);
    free(probs);
    free(bs);
    free(bn);
    free(bk);
    free(bj);
    free(bf);
    free(bc);
    fx_close(&fx);
    return t_exit_code();
}
