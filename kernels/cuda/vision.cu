/* kernels/cuda/vision.cu — bilinear resize, ConvTranspose2d 2x2/2, Conv2d
 * (im2col + cuBLAS, 1x1/stride-1 convolutions skip im2col) and RoIAlign
 * (torchvision semantics, channels-last). No atomics anywhere: the resize
 * backward gathers (each input pixel sums the outputs that read it), RoIAlign's
 * backward gives each channel one thread that walks every box in order, col2im
 * gathers; so every gradient has the same bits on every run. */
#include "kernels/cuda/common.cuh"
#include <math.h>

#define KC_FOR(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---- bilinear resize, align_corners=False (PyTorch upsample_bilinear2d) ---- */
struct Lerp {
    int i0, i1;
    float l0, l1;
};
/* src = scale (dst + 0.5) - 0.5 clamped at 0, scale = in/out (float, as PyTorch;
 * the product is rounded from double exactly like kernels/cpu/vision.c). */
static __device__ __forceinline__ Lerp lerp_index(int dst, int in_size, float scale) {
    float src = (float)((double)scale * ((double)dst + 0.5) - 0.5);
    if (src < 0.0f) src = 0.0f;
    Lerp r;
    r.i0 = (int)src;
    if (r.i0 > in_size - 1) r.i0 = in_size - 1;
    r.i1 = r.i0 + (r.i0 < in_size - 1 ? 1 : 0);
    r.l1 = fminf(fmaxf(src - (float)r.i0, 0.0f), 1.0f);
    r.l0 = 1.0f - r.l1;
    return r;
}

__global__ static void resize_fwd_k(float *out, const float *in, int C, int Hin, int Win, int Hout, int Wout,
                                    float sy, float sx) {
    const size_t total = (size_t)C * Hout * Wout;
    KC_FOR(idx, total) {
        const int ox = (int)(idx % Wout), oy = (int)((idx / Wout) % Hout);
        const size_t c = idx / ((size_t)Hout * Wout);
        const Lerp ly = lerp_index(oy, Hin, sy), lx = lerp_index(ox, Win, sx);
        const float *p = in + c * Hin * Win;
        out[idx] = ly.l0 * (lx.l0 * p[(size_t)ly.i0 * Win + lx.i0] + lx.l1 * p[(size_t)ly.i0 * Win + lx.i1]) +
                   ly.l1 * (lx.l0 * p[(size_t)ly.i1 * Win + lx.i0] + lx.l1 * p[(size_t)ly.i1 * Win + lx.i1]);
    }
}
/* The outputs that read input index i lie where src(o) = scale (o + 0.5) - 0.5
 * falls in [i - 1, i + 1) (plus the clamped borders); the range is widened by
 * one on each side and every candidate's weight recomputed exactly, so an
 * extra candidate adds zero. */
static __device__ __forceinline__ void out_range(int i, int in_size, int out_size, float scale, int *lo, int *hi) {
    int a = (int)floorf(((float)i - 0.5f) / scale - 0.5f) - 1, b = (int)ceilf(((float)i + 1.5f) / scale - 0.5f) + 1;
    if (i == 0) a = 0;
    if (i == in_size - 1) b = out_size - 1;
    *lo = a < 0 ? 0 : a;
    *hi = b > out_size - 1 ? out_size - 1 : b;
}
static __device__ __forceinline__ float tap_weight(const Lerp &l, int i) {
    return (l.i0 == i ? l.l0 : 0.0f) + (l.i1 == i ? l.l1 : 0.0f);
}
__global__ static void resize_bwd_k(float *din, const float *dout, int C, int Hin, int Win, int Hout, int Wout,
                                    float sy, float sx) {
    const size_t total = (size_t)C * Hin * Win;
    KC_FOR(idx, total) {
        const int ix = (int)(idx % Win), iy = (int)((idx / Win) % Hin);
        const size_t c = idx / ((size_t)Hin * Win);
        int oy0, oy1, ox0, ox1;
        out_range(iy, Hin, Hout, sy, &oy0, &oy1);
        out_range(ix, Win, Wout, sx, &ox0, &ox1);
        const float *g = dout + c * Hout * Wout;
        float acc = 0.0f;
        for (int oy = oy0; oy <= oy1; oy++) {
            const float wy = tap_weight(lerp_index(oy, Hin, sy), iy);
            if (wy == 0.0f) continue;
            for (int ox = ox0; ox <= ox1; ox++) {
                const float wx = tap_weight(lerp_index(ox, Win, sx), ix);
                if (wx != 0.0f) acc += wy * wx * g[(size_t)oy * Wout + ox];
            }
        }
        din[idx] += acc;
    }
}
void resize_bilinear_forward(float *out, const float *in, int C, int Hin, int Win, int Hout, int Wout) {
    if (C <= 0 || Hin <= 0 || Win <= 0 || Hout <= 0 || Wout <= 0) return;
    resize_fwd_k<<<kc_blocks((size_t)C * Hout * Wout), KC_BLOCK>>>(out, in, C, Hin, Win, Hout, Wout,
                                                                   (float)Hin / (float)Hout, (float)Win / (float)Wout);
    KC_LAUNCHED();
}
void resize_bilinear_backward(float *din, const float *dout, int C, int Hin, int Win, int Hout, int Wout) {
    if (!din || C <= 0 || Hin <= 0 || Win <= 0 || Hout <= 0 || Wout <= 0) return;
    resize_bwd_k<<<kc_blocks((size_t)C * Hin * Win), KC_BLOCK>>>(din, dout, C, Hin, Win, Hout, Wout,
                                                                   (float)Hin / (float)Hout, (float)Win / (float)Wout);
    KC_LAUNCHED();
}

/* ---- ConvTranspose2d 2x2 stride 2 -------------------------------------------
 * Per image: Y[Cout*4, HW] = w[Cin, Cout*4]^T @ x[Cin, HW], then
 * out[co, 2y+i, 2x+j] = Y[co*4 + i*2 + j, y*W + x] + b[co]. Y lives in the
 * temp workspace. */
__global__ static void convt_scatter_k(float *out, const float *Y, const float *bias, int B, int Cout, int H, int W) {
    const int OH = 2 * H, OW = 2 * W;
    const size_t total = (size_t)B * Cout * OH * OW;
    KC_FOR(idx, total) {
        const int ox = (int)(idx % OW), oy = (int)((idx / OW) % OH);
        const size_t bc = idx / ((size_t)OH * OW); /* b * Cout + co */
        const int co = (int)(bc % Cout);
        const size_t b = bc / Cout;
        const int r = co * 4 + (oy & 1) * 2 + (ox & 1);
        out[idx] = Y[(b * Cout * 4 + r) * (size_t)H * W + (size_t)(oy >> 1) * W + (ox >> 1)] + (bias ? bias[co] : 0.0f);
    }
}
/* The transpose: dY[b, co*4 + i*2 + j, y*W + x] = dout[b, co, 2y+i, 2x+j]. */
__global__ static void convt_gather_k(float *dY, const float *dout, int B, int Cout, int H, int W) {
    const size_t HW = (size_t)H * W;
    const size_t total = (size_t)B * Cout * 4 * HW;
    KC_FOR(idx, total) {
        const size_t p = idx % HW;
        const size_t br = idx / HW; /* b * Cout*4 + r */
        const int r = (int)(br % (Cout * 4));
        const size_t b = br / (Cout * 4);
        const int co = r >> 2, i = (r >> 1) & 1, j = r & 1;
        const size_t y = p / W, x = p % W;
        dY[idx] = dout[((b * Cout + co) * 2 * H + 2 * y + i) * (size_t)(2 * W) + 2 * x + j];
    }
}
void conv_transpose2x2_forward(float *out, const float *in, const float *w, const float *b,
                               int B, int Cin, int Cout, int H, int W) {
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    const size_t HW = (size_t)H * W;
    float *Y = (float *)kc_workspace(KC_WS_TEMP, (size_t)B * Cout * 4 * HW * sizeof(float));
    for (int bi = 0; bi < B; bi++)
        kc_gemm(1, 0, Cout * 4, (int)HW, Cin, 1.0f, w, Cout * 4, in + (size_t)bi * Cin * HW, (int)HW,
                0.0f, Y + (size_t)bi * Cout * 4 * HW, (int)HW);
    convt_scatter_k<<<kc_blocks((size_t)B * Cout * 4 * HW), KC_BLOCK>>>(out, Y, b, B, Cout, H, W);
    KC_LAUNCHED();
}
void conv_transpose2x2_backward(float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int B, int Cin, int Cout, int H, int W) {
    if (B <= 0 || Cout <= 0 || H <= 0 || W <= 0) return;
    const size_t HW = (size_t)H * W;
    if (din || dw) {
        float *dY = (float *)kc_workspace(KC_WS_TEMP, (size_t)B * Cout * 4 * HW * sizeof(float));
        convt_gather_k<<<kc_blocks((size_t)B * Cout * 4 * HW), KC_BLOCK>>>(dY, dout, B, Cout, H, W);
        KC_LAUNCHED();
        for (int bi = 0; bi < B; bi++) {
            const float *dYb = dY + (size_t)bi * Cout * 4 * HW;
            if (din) /* din_b[Cin,HW] += w[Cin,Cout*4] dY_b[Cout*4,HW] */
                kc_gemm(0, 0, Cin, (int)HW, Cout * 4, 1.0f, w, Cout * 4, dYb, (int)HW,
                        1.0f, din + (size_t)bi * Cin * HW, (int)HW);
            if (dw) /* dw[Cin,Cout*4] += x_b[Cin,HW] dY_b^T */
                kc_gemm(0, 1, Cin, Cout * 4, (int)HW, 1.0f, in + (size_t)bi * Cin * HW, (int)HW, dYb, (int)HW,
                        1.0f, dw, Cout * 4);
        }
    }
    if (db) kc_chansum_acc(db, dout, B, Cout, 4 * HW);
}

/* ---- Conv2d via im2col --------------------------------------------------- */
/* Output size; 0 for a kernel larger than the padded input or a bad stride. */
static int conv_out_size(int n, int k, int s, int p) {
    if (s <= 0 || k <= 0 || n + 2 * p < k) return 0;
    return (n + 2 * p - k) / s + 1;
}
size_t conv2d_scratch_floats(int Cin, int H, int W, int KH, int KW, int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (Cin <= 0 || OH <= 0 || OW <= 0) return 0;
    return (size_t)Cin * KH * KW * OH * OW;
}

/* col[(c*KH + kh)*KW + kw, oh*OW + ow] = x[c, oh*sh - ph + kh, ow*sw - pw + kw] (0 outside) */
__global__ static void im2col_k(float *col, const float *x, int Cin, int H, int W, int KH, int KW,
                                int sh, int sw, int ph, int pw, int OH, int OW) {
    const size_t OHW = (size_t)OH * OW;
    const size_t total = (size_t)Cin * KH * KW * OHW;
    KC_FOR(idx, total) {
        const size_t r = idx / OHW, p = idx % OHW;
        const int kw = (int)(r % KW), kh = (int)((r / KW) % KH);
        const size_t c = r / ((size_t)KH * KW);
        const int oh = (int)(p / OW), ow = (int)(p % OW);
        const int y = oh * sh - ph + kh, xx = ow * sw - pw + kw;
        col[idx] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[(c * H + y) * W + xx] : 0.0f;
    }
}
/* dx[c, y, x] += Σ_{kh,kw} dcol[(c*KH+kh)*KW+kw, oh*OW+ow] over the (oh, ow) that read (y, x). */
__global__ static void col2im_k(float *dx, const float *dcol, int Cin, int H, int W, int KH, int KW,
                                int sh, int sw, int ph, int pw, int OH, int OW) {
    const size_t OHW = (size_t)OH * OW;
    const size_t total = (size_t)Cin * H * W;
    KC_FOR(idx, total) {
        const int xx = (int)(idx % W), y = (int)((idx / W) % H);
        const size_t c = idx / ((size_t)H * W);
        float s = 0.0f;
        for (int kh = 0; kh < KH; kh++) {
            const int ty = y + ph - kh;
            if (ty < 0 || ty % sh) continue;
            const int oh = ty / sh;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; kw++) {
                const int tx = xx + pw - kw;
                if (tx < 0 || tx % sw) continue;
                const int ow = tx / sw;
                if (ow >= OW) continue;
                s += dcol[((c * KH + kh) * KW + kw) * OHW + (size_t)oh * OW + ow];
            }
        }
        dx[idx] += s;
    }
}
/* out[b, co, p] = bias[co] */
__global__ static void fill_channels_k(float *out, const float *bias, int B, int C, size_t P) {
    const size_t total = (size_t)B * C * P;
    KC_FOR(idx, total) out[idx] = bias[(idx / P) % C];
}

void conv2d_forward(float *out, float *scratch, const float *in, const float *w, const float *b,
                    int B, int Cin, int H, int W, int Cout, int KH, int KW,
                    int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (B <= 0 || Cout <= 0 || OH <= 0 || OW <= 0) return;
    const int OHW = OH * OW, CKK = Cin * KH * KW;
    const int direct = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    if (b) {
        fill_channels_k<<<kc_blocks((size_t)B * Cout * OHW), KC_BLOCK>>>(out, b, B, Cout, (size_t)OHW);
        KC_LAUNCHED();
    }
    for (int bi = 0; bi < B; bi++) {
        const float *x = in + (size_t)bi * Cin * H * W;
        const float *col = x;
        if (!direct) {
            im2col_k<<<kc_blocks((size_t)CKK * OHW), KC_BLOCK>>>(scratch, x, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
            KC_LAUNCHED();
            col = scratch;
        }
        /* out_b[Cout, OHW] (+)= w[Cout, CKK] col[CKK, OHW] */
        kc_gemm(0, 0, Cout, OHW, CKK, 1.0f, w, CKK, col, OHW, b ? 1.0f : 0.0f, out + (size_t)bi * Cout * OHW, OHW);
    }
}

void conv2d_backward(float *din, float *dw, float *db, float *scratch, const float *dout,
                     const float *in, const float *w,
                     int B, int Cin, int H, int W, int Cout, int KH, int KW,
                     int sh, int sw, int ph, int pw) {
    const int OH = conv_out_size(H, KH, sh, ph), OW = conv_out_size(W, KW, sw, pw);
    if (B <= 0 || Cout <= 0 || OH <= 0 || OW <= 0) return;
    const int OHW = OH * OW, CKK = Cin * KH * KW;
    const int direct = KH == 1 && KW == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    if (db) kc_chansum_acc(db, dout, B, Cout, (size_t)OHW);
    if (!din && !dw) return;
    for (int bi = 0; bi < B; bi++) {
        const float *x = in + (size_t)bi * Cin * H * W;
        const float *g = dout + (size_t)bi * Cout * OHW;
        float *dx = din ? din + (size_t)bi * Cin * H * W : NULL;
        if (dw) {
            const float *col = x;
            if (!direct) {
                im2col_k<<<kc_blocks((size_t)CKK * OHW), KC_BLOCK>>>(scratch, x, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
                KC_LAUNCHED();
                col = scratch;
            }
            /* dw[Cout, CKK] += g[Cout, OHW] col[CKK, OHW]^T */
            kc_gemm(0, 1, Cout, CKK, OHW, 1.0f, g, OHW, col, OHW, 1.0f, dw, CKK);
        }
        if (dx) {
            if (direct) { /* dx[Cin, HW] += w[Cout, Cin]^T g[Cout, HW] */
                kc_gemm(1, 0, Cin, OHW, Cout, 1.0f, w, CKK, g, OHW, 1.0f, dx, OHW);
            } else {      /* dcol[CKK, OHW] = w^T g, then gathered back onto the image */
                kc_gemm(1, 0, CKK, OHW, Cout, 1.0f, w, CKK, g, OHW, 0.0f, scratch, OHW);
                col2im_k<<<kc_blocks((size_t)Cin * H * W), KC_BLOCK>>>(dx, scratch, Cin, H, W, KH, KW, sh, sw, ph, pw, OH, OW);
                KC_LAUNCHED();
            }
        }
    }
}

/* ---- RoIAlign (torchvision), channels-last ---------------------------------- */
struct RoiGeom {
    int b, grid_h, grid_w;
    float start_h, start_w, bin_h, bin_w, count;
};
static __device__ RoiGeom roi_geom(const float *box, float spatial_scale, int sampling_ratio, int aligned,
                                   int PH, int PW) {
    RoiGeom g;
    const float offset = aligned ? 0.5f : 0.0f;
    g.b = (int)box[0];
    g.start_w = box[1] * spatial_scale - offset;
    g.start_h = box[2] * spatial_scale - offset;
    const float end_w = box[3] * spatial_scale - offset, end_h = box[4] * spatial_scale - offset;
    float rw = end_w - g.start_w, rh = end_h - g.start_h;
    if (!aligned) { /* legacy behaviour: force malformed RoIs to 1x1 */
        rw = fmaxf(rw, 1.0f);
        rh = fmaxf(rh, 1.0f);
    }
    g.bin_h = rh / (float)PH;
    g.bin_w = rw / (float)PW;
    g.grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rh / (float)PH);
    g.grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rw / (float)PW);
    const int cnt = g.grid_h * g.grid_w;
    g.count = (float)(cnt > 1 ? cnt : 1);
    return g;
}
/* Bilinear weights of the sample (y, x) on an H x W grid; returns 0 when the
 * sample lies outside [-1, H] x [-1, W] (it contributes nothing). Same edge
 * rules as torchvision's roi_align bilinear_interpolate. */
static __device__ int roi_bilinear(float y, float x, int H, int W, int *y0, int *y1, int *x0, int *x1,
                                   float *w1, float *w2, float *w3, float *w4) {
    if (!(y >= -1.0f && y <= (float)H && x >= -1.0f && x <= (float)W)) return 0; /* also NaN */
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    *y0 = (int)y;
    *x0 = (int)x;
    if (*y0 >= H - 1) { *y1 = *y0 = H - 1; y = (float)*y0; } else *y1 = *y0 + 1;
    if (*x0 >= W - 1) { *x1 = *x0 = W - 1; x = (float)*x0; } else *x1 = *x0 + 1;
    const float ly = y - (float)*y0, lx = x - (float)*x0, hy = 1.0f - ly, hx = 1.0f - lx;
    *w1 = hy * hx; *w2 = hy * lx; *w3 = ly * hx; *w4 = ly * lx;
    return 1;
}

__global__ static void roi_align_fwd_k(float *out, const float *in, const float *boxes, int K,
                                       int B, int H, int W, int C, int PH, int PW,
                                       float spatial_scale, int sampling_ratio, int aligned) {
    const size_t total = (size_t)K * PH * PW * C;
    KC_FOR(idx, total) {
        const int c = (int)(idx % C);
        const size_t cell = idx / C;
        const int pw = (int)(cell % PW), ph = (int)((cell / PW) % PH);
        const size_t k = cell / ((size_t)PW * PH);
        const RoiGeom g = roi_geom(boxes + k * 5, spatial_scale, sampling_ratio, aligned, PH, PW);
        float acc = 0.0f;
        if (g.b >= 0 && g.b < B) {
            const float *img = in + (size_t)g.b * H * W * C + c;
            for (int iy = 0; iy < g.grid_h; iy++) {
                const float y = g.start_h + ph * g.bin_h + ((float)iy + 0.5f) * g.bin_h / (float)g.grid_h;
                for (int ix = 0; ix < g.grid_w; ix++) {
                    const float x = g.start_w + pw * g.bin_w + ((float)ix + 0.5f) * g.bin_w / (float)g.grid_w;
                    int y0, y1, x0, x1;
                    float w1, w2, w3, w4;
                    if (!roi_bilinear(y, x, H, W, &y0, &y1, &x0, &x1, &w1, &w2, &w3, &w4)) continue;
                    acc += w1 * img[((size_t)y0 * W + x0) * C] + w2 * img[((size_t)y0 * W + x1) * C] +
                           w3 * img[((size_t)y1 * W + x0) * C] + w4 * img[((size_t)y1 * W + x1) * C];
                }
            }
        }
        out[idx] = acc / g.count;
    }
}
__global__ static void roi_align_bwd_k(float *din, const float *dout, const float *boxes, int K,
                                       int B, int H, int W, int C, int PH, int PW,
                                       float spatial_scale, int sampling_ratio, int aligned) {
    KC_FOR(cc, (size_t)C) {
        const int c = (int)cc;
        for (int k = 0; k < K; k++) {
            const RoiGeom g = roi_geom(boxes + (size_t)k * 5, spatial_scale, sampling_ratio, aligned, PH, PW);
            if (g.b < 0 || g.b >= B) continue;
            float *img = din + (size_t)g.b * H * W * C + c;
            for (int ph = 0; ph < PH; ph++)
                for (int pw = 0; pw < PW; pw++) {
                    const float gv = dout[(((size_t)k * PH + ph) * PW + pw) * C + c] / g.count;
                    for (int iy = 0; iy < g.grid_h; iy++) {
                        const float y = g.start_h + ph * g.bin_h + ((float)iy + 0.5f) * g.bin_h / (float)g.grid_h;
                        for (int ix = 0; ix < g.grid_w; ix++) {
                            const float x = g.start_w + pw * g.bin_w + ((float)ix + 0.5f) * g.bin_w / (float)g.grid_w;
                            int y0, y1, x0, x1;
                            float w1, w2, w3, w4;
                            if (!roi_bilinear(y, x, H, W, &y0, &y1, &x0, &x1, &w1, &w2, &w3, &w4)) continue;
                            img[((size_t)y0 * W + x0) * C] += w1 * gv;
                            img[((size_t)y0 * W + x1) * C] += w2 * gv;
                            img[((size_t)y1 * W + x0) * C] += w3 * gv;
                            img[((size_t)y1 * W + x1) * C] += w4 * gv;
                        }
                    }
                }
        }
    }
}
void roi_align_forward(float *out, const float *in, const float *boxes, int K,
                       int B, int H, int W, int C, int PH, int PW,
                       float spatial_scale, int sampling_ratio, int aligned) {
    if (K <= 0 || C <= 0 || PH <= 0 || PW <= 0 || H <= 0 || W <= 0) return;
    roi_align_fwd_k<<<kc_blocks((size_t)K * PH * PW * C), KC_BLOCK>>>(out, in, boxes, K, B, H, W, C, PH, PW,
                                                                     spatial_scale, sampling_ratio, aligned);
    KC_LAUNCHED();
}
void roi_align_backward(float *din, const float *dout, const float *boxes, int K,
                        int B, int H, int W, int C, int PH, int PW,
                        float spatial_scale, int sampling_ratio, int aligned) {
    if (!din || K <= 0 || C <= 0 || PH <= 0 || PW <= 0 || H <= 0 || W <= 0) return;
    roi_align_bwd_k<<<kc_blocks((size_t)C), KC_BLOCK>>>(din, dout, boxes, K, B, H, W, C, PH, PW,
                                                                     spatial_scale, sampling_ratio, aligned);
    KC_LAUNCHED();
}
