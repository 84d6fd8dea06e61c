/* kernels/cpu/refocus.c — AnyRef's refocusing weighted sum (SPEC 2.5):
 * h = hid[p] + λ Σ_{i∈[s,p)} a_i hid[i], a_i = P_i / Σ P, P = head-mean of att[:, p, :]. */
#include "kernels/kernels.h"
#include <string.h>

/* P_i (head mean) for i in [s, p); returns Σ P. */
static double span_weights(float *P, const float *att, int p, int s, int T, int S, int Hq) {
    double z = 0.0;
    for (int i = s; i < p; i++) {
        double acc = 0.0;
        for (int h = 0; h < Hq; h++) acc += att[((size_t)h * T + p) * S + i];
        P[i - s] = (float)(acc / Hq);
        z += P[i - s];
    }
    return z;
}

void refocus_forward(float *out, const float *hid, const float *att, int p, int s,
                     float lambda, int T, int S, int Hq, int D) {
    memcpy(out, hid + (size_t)p * D, (size_t)D * sizeof(float));
    if (s < 0) s = 0;
    if (s >= p) return;
    float P[p - s];
    double z = span_weights(P, att, p, s, T, S, Hq);
    if (!(z > 0.0)) return;
    for (int i = s; i < p; i++) {
        float c = lambda * (float)(P[i - s] / z);
        const float *x = hid + (size_t)i * D;
        for (int d = 0; d < D; d++) out[d] += c * x[d];
    }
}

void refocus_backward(float *dhid, float *datt, const float *dout, const float *hid,
                      const float *att, int p, int s, float lambda, int T, int S, int Hq, int D) {
    if (dhid) for (int d = 0; d < D; d++) dhid[(size_t)p * D + d] += dout[d];
    if (s < 0) s = 0;
    if (s >= p) return;
    int L = p - s;
    float P[L], g[L];
    double z = span_weights(P, att, p, s, T, S, Hq);
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
    if (!datt) return;
    for (int i = s; i < p; i++) {
        float dP = (float)((g[i - s] - ga) / z) / (float)Hq;
        for (int h = 0; h < Hq; h++) datt[((size_t)h * T + p) * S + i] += dP;
    }
}
