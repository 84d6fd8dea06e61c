/* eval/avs_metrics.h — AVSBench's evaluation metrics, J (mIoU) and the
 * F-score with beta^2 = 0.3, computed as the public AVSBench test scripts
 * compute them. Pure C over host float arrays; depends only on core/error.h.
 *
 * WHAT IS FOLLOWED (read in OpenNLPLab/AVSBench avs_scripts/avs_s4/
 * utils/utility.py: mask_iou, Eval_Fmeasure, _eval_pr; utils/pyutils.py:
 * AverageMeter; avs_scripts/avs_s4/test.py: the loop; the same functions are
 * repeated in jwh97nn/AnyRef utils/pyutils.py and used by its
 * eval_avs_object.py). Written from those definitions, not copied.
 *
 * Inputs of one batch: pred[n][h][w] LOGITS (the scripts apply the sigmoid
 * themselves: passing probabilities would squash them a second time) and
 * gt[n][h][w] ground truths, 0/1 floats (used as multipliers, as the scripts
 * do). n frames of one video (AVSBench S4/MS3: 5; test.py runs batch size 1).
 *
 * mask_iou (J of one batch):
 *   - binary prediction b = (sigmoid(x) > 0.5), sigmoid in float32;
 *   - a frame with sum(gt) != 0: iou = sum(b*g) / (sum(max(b, g)) + 1e-7);
 *   - a frame with an EMPTY ground truth: iou = sum((1-g)(1-b)) / (h*w + 1e-7),
 *     i.e. the fraction of pixels correctly left empty (NOT skipped, NOT 1);
 *   - J(batch) = sum of the frame ious / n (mean over the batch's frames).
 *   (The eps 1e-7 vanishes in float32 against a union >= 1; we add it in
 *   double, a relative change of 1e-7 / union.)
 * Eval_Fmeasure (F of one batch), pr_num = 255, beta2 = 0.3:
 *   - p = sigmoid(x) in float32; thresholds t_i = torch.linspace(0, 1-1e-10,
 *     255) in float32 (the end rounds to 1.0f), i = 0..254;
 *   - frames whose gt has mean 0 (empty) are skipped;
 *   - per kept frame and threshold: y = (p >= t_i); tp = sum(y*g);
 *     prec = tp / (sum(y) + 1e-20), recall = tp / (sum(g) + 1e-20);
 *     f_i = (1 + beta2) prec recall / (beta2 prec + recall), NaN (0/0) -> 0;
 *   - the curve f_i is averaged over the kept frames, and F(batch) = max_i of
 *     that mean curve (the max of the mean, not the mean of per-frame maxima);
 *   - a batch with no kept frame gives F = 0 (the zero score vector).
 * Over a split (AverageMeter): J = mean over batches of J(batch), F = mean
 *   over batches of F(batch) — a video whose frames are all empty counts with
 *   F = 0. With one video per batch (test.py's batch size 1, and AnyRef's
 *   5-frame groups) this is the mean over videos.
 *
 * Arithmetic: the scripts work in float32 tensors; we count and divide in
 * double and take the sigmoid in float32 as 1/(1 + expf(-x)). Where torch's
 * vectorised expf differs by an ulp, a pixel whose probability lies within an
 * ulp of a threshold (or a logit within ~1e-7 of 0, or near 16.6 where the
 * sigmoid rounds to 1.0f) can fall on the other side; the fixtures keep away
 * from such ties. Otherwise the results agree with the scripts to ~1e-7. */
#ifndef ANYREF_EVAL_AVS_METRICS_H
#define ANYREF_EVAL_AVS_METRICS_H

#define AVS_PR_NUM 255
#define AVS_BETA2 0.3
#define AVS_IOU_EPS 1e-7
#define AVS_PR_EPS 1e-20

/* float32 sigmoid, 1 / (1 + expf(-x)). */
float avs_sigmoidf(float x);
/* th[AVS_PR_NUM] = torch.linspace(0, 1 - 1e-10, 255, dtype=float32) by
 * torch's scalar formula (float32 step = 1/254; start + i*step for i < 127,
 * end - (254-i)*step after; the formula of its CUDA kernel, where the script
 * runs _eval_pr by default, without FMA contraction). torch's vectorised CPU
 * kernel rounds 36 of the 255 values one ulp (<= 6e-8) differently; ends are
 * exactly 0 and 1.0f. */
void avs_thresholds(float th[AVS_PR_NUM]);

/* J of one batch (mask_iou): mean over the n frames of each frame's iou.
 * Returns 0 and sets *j, or -1 (ar_errorf) on bad arguments. */
int avs_mask_iou(const float *logits, const float *gt, int n, int h, int w, double *j);
/* One frame's iou as above. */
double avs_frame_iou(const float *logits, const float *gt, long hw);

/* prec[AVS_PR_NUM], recall[AVS_PR_NUM] of one frame (_eval_pr). */
void avs_frame_pr(const float *logits, const float *gt, long hw, double *prec, double *recall);
/* F of one batch (Eval_Fmeasure). curve (may be NULL) receives the mean
 * F curve over the kept frames (zeros if none). *n_kept (may be NULL): the
 * frames with a non-empty gt. Returns 0, or -1 on bad arguments. */
int avs_fmeasure(const float *logits, const float *gt, int n, int h, int w, double *f,
                 double *curve, int *n_kept);

/* A split: add batch after batch (one video each, as test.py), then read the
 * means (NaN before any batch). */
typedef struct {
    double j_sum, f_sum;
    long batches;
} avs_meter;
void avs_meter_init(avs_meter *m);
/* Computes J and F of the batch, adds them; *j, *f (may be NULL) get them. */
int avs_meter_add(avs_meter *m, const float *logits, const float *gt, int n, int h, int w, double *j,
                  double *f);
double avs_meter_j(const avs_meter *m);
double avs_meter_f(const avs_meter *m);
#endif
