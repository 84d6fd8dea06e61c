/* eval/avs_metrics.c — AVSBench J and F (beta^2 = 0.3) as the public
 * AVSBench scripts compute them; the semantics are spelled out in
 * avs_metrics.h. Depends on core/error.h only.
 *
 * The F curve uses a histogram instead of 255 passes: the thresholds are
 * sorted, so pixel p is predicted positive at exactly the thresholds t_i <=
 * p, i.e. i < k(p) with k(p) = #{i : t_i <= p} (float32 comparisons, as
 * p >= t_i in the script). Counting pixels and gt mass per k and taking
 * suffix sums gives sum(y) and tp for every threshold at once. */
#include "eval/avs_metrics.h"

#include "core/error.h"

#include <math.h>
#include <string.h>

float avs_sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

void avs_thresholds(float th[AVS_PR_NUM]) {
    const float start = 0.0f, end = (float)(1.0 - 1e-10);
    const float step = (end - start) / (float)(AVS_PR_NUM - 1);
    const int halfway = AVS_PR_NUM / 2;
    for (int i = 0; i < AVS_PR_NUM; i++)
        th[i] = i < halfway ? start + step * (float)i : end - step * (float)(AVS_PR_NUM - 1 - i);
}

static int check_args(const char *fn, const float *logits, const float *gt, int n, int h, int w) {
    if (!logits || !gt) return ar_errorf("%s: NULL prediction or ground truth", fn);
    if (n <= 0 || h <= 0 || w <= 0) return ar_errorf("%s: bad shape [%d, %d, %d]", fn, n, h, w);
    return 0;
}

double avs_frame_iou(const float *logits, const float *gt, long hw) {
    double gsum = 0, inter = 0, uni = 0, inter_empty = 0;
    for (long i = 0; i < hw; i++) {
        double b = avs_sigmoidf(logits[i]) > 0.5f ? 1.0 : 0.0;
        double g = gt[i];
        gsum += g;
        inter += b * g;
        uni += b > g ? b : g;
        inter_empty += (1.0 - g) * (1.0 - b);
    }
    if (gsum == 0) return inter_empty / ((double)hw + AVS_IOU_EPS);
    return inter / (uni + AVS_IOU_EPS);
}

int avs_mask_iou(const float *logits, const float *gt, int n, int h, int w, double *j) {
    if (check_args("avs_mask_iou", logits, gt, n, h, w) < 0) return -1;
    long hw = (long)h * w;
    double s = 0;
    for (int f = 0; f < n; f++) s += avs_frame_iou(logits + f * hw, gt + f * hw, hw);
    *j = s / n;
    return 0;
}

/* k(p) = #{i : th[i] <= p}; NaN -> 0 (never positive). */
static int n_below(const float th[AVS_PR_NUM], float p) {
    if (!(p >= th[0])) return 0;
    int lo = 1, hi = AVS_PR_NUM; /* th[lo-1] <= p; find first index with th > p */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (th[mid] <= p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void avs_frame_pr(const float *logits, const float *gt, long hw, double *prec, double *recall) {
    float th[AVS_PR_NUM];
    avs_thresholds(th);
    double cnt[AVS_PR_NUM + 1], mass[AVS_PR_NUM + 1], gsum = 0;
    memset(cnt, 0, sizeof cnt);
    memset(mass, 0, sizeof mass);
    for (long i = 0; i < hw; i++) {
        int k = n_below(th, avs_sigmoidf(logits[i]));
        cnt[k] += 1.0;
        mass[k] += gt[i];
        gsum += gt[i];
    }
    /* threshold i is passed by the pixels with k > i */
    double ysum = 0, tp = 0;
    for (int i = AVS_PR_NUM - 1; i >= 0; i--) {
        ysum += cnt[i + 1];
        tp += mass[i + 1];
        prec[i] = tp / (ysum + AVS_PR_EPS);
        recall[i] = tp / (gsum + AVS_PR_EPS);
    }
}

int avs_fmeasure(const float *logits, const float *gt, int n, int h, int w, double *f, double *curve,
                 int *n_kept) {
    if (check_args("avs_fmeasure", logits, gt, n, h, w) < 0) return -1;
    long hw = (long)h * w;
    double sum[AVS_PR_NUM], prec[AVS_PR_NUM], rec[AVS_PR_NUM];
    memset(sum, 0, sizeof sum);
    int kept = 0;
    for (int fr = 0; fr < n; fr++) {
        const float *g = gt + fr * hw;
        double gs = 0;
        for (long i = 0; i < hw; i++) gs += g[i];
        if (gs == 0) continue; /* mean(gt) == 0: left out */
        avs_frame_pr(logits + fr * hw, g, hw, prec, rec);
        for (int i = 0; i < AVS_PR_NUM; i++) {
            double fs = (1.0 + AVS_BETA2) * prec[i] * rec[i] / (AVS_BETA2 * prec[i] + rec[i]);
            sum[i] += isnan(fs) ? 0.0 : fs;
        }
        kept++;
    }
    double best = 0;
    for (int i = 0; i < AVS_PR_NUM; i++) {
        double m = kept ? sum[i] / kept : 0.0;
        if (curve) curve[i] = m;
        if (i == 0 || m > best) best = m;
    }
    *f = best;
    if (n_kept) *n_kept = kept;
    return 0;
}

void avs_meter_init(avs_meter *m) {
    memset(m, 0, sizeof *m);
}

int avs_meter_add(avs_meter *m, const float *logits, const float *gt, int n, int h, int w, double *j,
                  double *f) {
    double bj, bf;
    if (avs_mask_iou(logits, gt, n, h, w, &bj) < 0) return -1;
    if (avs_fmeasure(logits, gt, n, h, w, &bf, NULL, NULL) < 0) return -1;
    m->j_sum += bj;
    m->f_sum += bf;
    m->batches++;
    if (j) *j = bj;
    if (f) *f = bf;
    return 0;
}

double avs_meter_j(const avs_meter *m) {
    return m->batches ? m->j_sum / m->batches : NAN;
}

double avs_meter_f(const avs_meter *m) {
    return m->batches ? m->f_sum / m->batches : NAN;
}
