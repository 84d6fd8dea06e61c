/* kernels/cpu/refocus.c — AnyRef's refocusing weighted sum (SPEC 2.5):
 * h = hid[p] + λ Σ_{i∈[s,p)} a_i hid[i], a_i = P_i / Σ P, P = head-mean of att[:, p, :]. */
#include "kernels/kernels.h"
#include <string.h>

/* The probabilities of query row p are arow[h * hs + i] (head h, key i): the
 * full matrix att[Hq,T,S] gives arow = att + p*S, hs = T*S; a row set
 * prow[Hq,S] (attention_rows_forward) gives arow = prow, hs = S. */

/* P_i (head mean) for i in [s, p); returns Σ P. */
static double span_weights(float *P, const float *arow, size_t hs, int p, int s, int Hq) {
    double z = 0.0;
    for (int i = s; i < p; i++) {
        double acc = 0.0;
        for (int h = 0; h < Hq; h++) acc += arow[(size_t)h * hs + i];
        P[i - s] = (float)(acc / Hq);
        z += P[i - s];
    }
    return z;
}

static void forward_rows(float *out, const float *hid, const float *arow, size_t hs, int p, int s, float lambda,
                         int Hq, int D) {
    memcpy(out, hid + (size_t)p * D, (size_t)D * sizeof(float));
    if (s < 0) s = 0;
    if (s >= p) return;
    float P[p - s];
    double z = span_weights(P, arow, hs, p, s, Hq);
    if (!(z > 0.0)) return;
    for (int i = s; i < p; i++) {
        float c = lambda * (float)(P[i - s] / z);
        const float *x = hid + (size_t)i * D;
        for (int d = 0; d < D; d++) out[d] += c * x[d];
    }
}

static void backward_rows(float *dhid, float *darow, const float *dout, const float *hid, const float *arow, size_t hs,
                          int p, int s, float lambda, int Hq, int D) {
    if (dhid) for (int d = 0; d < D; d++) dhid[(size_t)p * D + d] += dout[d];
    if (s < 0) s = 0;
    if (s >= p) return;
    int L = p - s;
    float P[L], g[L];
    double z = span_weights(P, arow, hs, p, s, Hq);
    if (!(z > 0.0)) return;
    /* g_i = λ dout·hid[i] (gradient on a_i); dP_i = (g_i - Σ_j a_j g_j) / z */
    double ga = 0.0;
    for (int i = s; i < p; i++) {
        const float *x = hid + (size_t)i * D;
        double dot = 0.0;
        for (int d = 0; d < D; d++) dot += (double)dout[d] * x[d];
        g[i - s] = lambda * (float)dot;
        ga += (P[i - s] / z) * g[i - s];
        if (dhid) {
            float c = lambda * (float)(P[i - s] / z);
            float *dx = dhid + (size_t)i * D;
            for (int d = 0; d < D; d++) dx[d] += c * dout[d];
        }
    }
    if (!darow) return;
    for (int i = s; i < p; i++) {
        float dP = (float)((g[i - s] - ga) / z) / (float)Hq;
        for (int h = 0; h < Hq; h++) darow[(size_t)h * hs + i] += dP;
    }
}

void refocus_forward(float *out, const float *hid, const float *att, int p, int s,
                     float lambda, int T, int S, int Hq, int D) {
    forward_rows(out, hid, att ? att + (size_t)p * S : NULL, (size_t)T * S, p, s, lambda, Hq, D);
}
void refocus_backward(float *dhid, float *datt, const float *dout, const float *hid,
                      const float *att, int p, int s, float lambda, int T, int S, int Hq, int D) {
    backward_rows(dhid, datt ? datt + (size_t)p * S : NULL, dout, hid, att ? att + (size_t)p * S : NULL, (size_t)T * S,
                  p, s, lambda, Hq, D);
}
void refocus_row_forward(float *out, const float *hid, const float *prow, int p, int s, float lambda, int T, int S,
                         int Hq, int D) {
    (void)T;
    forward_rows(out, hid, prow, (size_t)S, p, s, lambda, Hq, D);
}
void refocus_row_backward(float *dhid, float *dprow, const float *dout, const float *hid, const float *prow, int p,
                          int s, float lambda, int T, int S, int Hq, int D) {
    (void)T;
    backward_rows(dhid, dprow, dout, hid, prow, (size_t)S, p, s, lambda, Hq, D);
}
