/* data/rle.c — COCO run-length masks (see data/rle.h for the contract).
 *
 * Written from the semantics of cocoapi's maskApi.c (rleEncode, rleDecode,
 * rleMerge, rleArea, rleIou, bbIou, rleToBbox, rleFrBbox, rleFrPoly,
 * rleToString, rleFrString) as PyPI's pycocotools builds it (from the
 * ppwwyyxx/cocoapi fork, whose rleToBbox differs from the original on RLEs
 * with zero-length runs); tests/test_coco.c compares every result with
 * pycocotools 2.0.7. Masks are column-major; counts are uint32.
 *
 * Floating point: the reference is compiled without fused multiply-add; GCC
 * with -march=native would contract a*b + c into an FMA (rounding once) and
 * move polygon edges or IoUs by an ulp, so contraction is off in this file. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

#include "data/rle.h"

#include "core/error.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void rle_free(rle_mask *r) {
    if (!r) return;
    free(r->cnts);
    memset(r, 0, sizeof *r);
}

/* Sets *r to h x w with m counts (uninitialised), or -1. */
static int rle_alloc(rle_mask *r, uint32_t h, uint32_t w, size_t m) {
    memset(r, 0, sizeof *r);
    if ((uint64_t)h * w > UINT32_MAX) return ar_errorf("rle: mask %ux%u is larger than 2^32-1 pixels", h, w);
    r->cnts = malloc((m ? m : 1) * sizeof *r->cnts);
    if (!r->cnts) return ar_errorf("rle: out of memory (%zu counts)", m);
    r->h = h, r->w = w, r->m = m;
    return 0;
}

int rle_copy(rle_mask *dst, const rle_mask *src) {
    if (rle_alloc(dst, src->h, src->w, src->m) < 0) return -1;
    if (src->m) memcpy(dst->cnts, src->cnts, src->m * sizeof *src->cnts);
    return 0;
}

/* Sum of the counts in 64 bits. */
static uint64_t rle_total(const rle_mask *r) {
    uint64_t s = 0;
    for (size_t i = 0; i < r->m; i++) s += r->cnts[i];
    return s;
}

/* ---- encode / decode ------------------------------------------------------ */

/* Pixel j of the mask in column-major order. */
static inline int px(const uint8_t *M, uint32_t h, uint32_t w, int rowmajor, uint64_t j) {
    if (!rowmajor) return M[j] != 0;
    uint64_t x = j / h, y = j - x * h;
    return M[y * w + x] != 0;
}

static int encode(rle_mask *r, const uint8_t *M, uint32_t h, uint32_t w, int rowmajor) {
    uint64_t a = (uint64_t)h * w;
    if (a > UINT32_MAX) return ar_errorf("rle: mask %ux%u is larger than 2^32-1 pixels", h, w);
    /* counts = 1 + number of value changes, starting from background */
    size_t m = 1;
    int p = 0;
    for (uint64_t j = 0; j < a; j++) {
        int v = px(M, h, w, rowmajor, j);
        if (v != p) m++, p = v;
    }
    if (rle_alloc(r, h, w, m) < 0) return -1;
    size_t k = 0;
    uint32_t c = 0;
    p = 0;
    for (uint64_t j = 0; j < a; j++) {
        int v = px(M, h, w, rowmajor, j);
        if (v != p) r->cnts[k++] = c, c = 0, p = v;
        c++;
    }
    r->cnts[k++] = c;
    return 0;
}

int rle_encode(rle_mask *r, const uint8_t *M, uint32_t h, uint32_t w) { return encode(r, M, h, w, 0); }
int rle_encode_hw(rle_mask *r, const uint8_t *M, uint32_t h, uint32_t w) { return encode(r, M, h, w, 1); }

int rle_decode(const rle_mask *r, uint8_t *M) {
    if (rle_total(r) != (uint64_t)r->h * r->w)
        return ar_errorf("rle: counts sum to %llu, not %ux%u", (unsigned long long)rle_total(r), r->h, r->w);
    uint8_t v = 0;
    for (size_t i = 0; i < r->m; i++, v = !v) {
        memset(M, v, r->cnts[i]);
        M += r->cnts[i];
    }
    return 0;
}

int rle_decode_hw(const rle_mask *r, uint8_t *M) {
    if (rle_total(r) != (uint64_t)r->h * r->w)
        return ar_errorf("rle: counts sum to %llu, not %ux%u", (unsigned long long)rle_total(r), r->h, r->w);
    const uint32_t h = r->h, w = r->w;
    uint32_t x = 0, y = 0;   /* position of the next pixel, walking columns */
    uint8_t v = 0;
    for (size_t i = 0; i < r->m; i++, v = !v) {
        for (uint32_t c = r->cnts[i]; c; c--) {
            M[(size_t)y * w + x] = v;
            if (++y == h) y = 0, x++;
        }
    }
    return 0;
}

int rle_from_counts(rle_mask *r, const uint32_t *cnts, size_t m, uint32_t h, uint32_t w) {
    memset(r, 0, sizeof *r);
    uint64_t s = 0;
    for (size_t i = 0; i < m; i++) s += cnts[i];
    if (s != (uint64_t)h * w)
        return ar_errorf("rle: counts sum to %llu, not %ux%u = %llu", (unsigned long long)s, h, w,
                         (unsigned long long)h * w);
    if (rle_alloc(r, h, w, m) < 0) return -1;
    if (m) memcpy(r->cnts, cnts, m * sizeof *cnts);
    return 0;
}

/* ---- polygons --------------------------------------------------------------- */

/* (int)v as x86-64's cvttsd2si gives it, which the reference relies on: NaN
 * and values outside int's range become INT_MIN (a 0/0 slope on a zero-length
 * edge produces NaN in maskApi.c). */
static inline int trunc_int(double v) {
    if (!(v > (double)INT_MIN - 1.0 && v < (double)INT_MAX + 1.0)) return INT_MIN;
    return (int)v;
}

typedef struct {
    uint32_t *a;
    size_t n, cap;
    int have_prev;
    int pu, pv;      /* previous boundary point at 5x */
    uint32_t h, w;
} crossings;

static int push_crossing(crossings *c, uint32_t v) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        uint32_t *a = realloc(c->a, cap * sizeof *a);
        if (!a) return ar_errorf("rle: out of memory (polygon crossings)");
        c->a = a, c->cap = cap;
    }
    c->a[c->n++] = v;
    return 0;
}

/* One point of the 5x boundary, in walking order. Where the column changes
 * from the previous point, the crossing goes into the list when it falls on
 * a pixel centre column inside the image, with its row rounded up and
 * clamped to [0, h]. */
static int visit(crossings *c, int u, int v) {
    if (c->have_prev && u != c->pu) {
        double xd = (double)(u < c->pu ? u : u - 1);
        xd = (xd + .5) / 5.0 - .5;
        if (floor(xd) == xd && xd >= 0 && xd <= (double)c->w - 1) {
            double yd = (double)(v < c->pv ? v : c->pv);
            yd = (yd + .5) / 5.0 - .5;
            if (yd < 0) yd = 0;
            else if (yd > c->h) yd = c->h;
            yd = ceil(yd);
            if (push_crossing(c, (uint32_t)xd * c->h + (uint32_t)yd) < 0) return -1;
        }
    }
    c->have_prev = 1, c->pu = u, c->pv = v;
    return 0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x > y ? 1 : x < y ? -1 : 0;
}

int rle_from_poly(rle_mask *r, const double *xy, size_t k, uint32_t h, uint32_t w) {
    memset(r, 0, sizeof *r);
    if (k == 0) return ar_errorf("rle: polygon without points");
    if (h == 0 || w == 0) return ar_errorf("rle: polygon on an empty %ux%u image", h, w);
    if ((uint64_t)h * w > UINT32_MAX) return ar_errorf("rle: mask %ux%u is larger than 2^32-1 pixels", h, w);
    int *X = malloc((k + 1) * sizeof *X), *Y = malloc((k + 1) * sizeof *Y);
    crossings c = {.h = h, .w = w};
    int rc = -1;
    if (!X || !Y) { ar_errorf("rle: out of memory (polygon of %zu points)", k); goto done; }
    const double lim = 1073741824.0;   /* 2^30 */
    for (size_t j = 0; j < 2 * k; j++) {
        double s = 5.0 * xy[j] + .5;
        if (!(s > -lim && s < lim)) {
            ar_errorf("rle: polygon coordinate %zu (%g) out of range", j, xy[j]);
            goto done;
        }
        (j % 2 ? Y : X)[j / 2] = (int)s;
    }
    X[k] = X[0], Y[k] = Y[0];
    uint64_t steps = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t dx = (uint64_t)llabs((long long)X[j] - X[j + 1]), dy = (uint64_t)llabs((long long)Y[j] - Y[j + 1]);
        steps += (dx > dy ? dx : dy) + 1;
    }
    if (steps > RLE_POLY_MAX_STEPS) {
        ar_errorf("rle: polygon perimeter too long (%llu steps at 5x, limit %llu)", (unsigned long long)steps,
                  (unsigned long long)RLE_POLY_MAX_STEPS);
        goto done;
    }
    /* walk each edge in unit steps along its longer axis, from start to end
     * (an edge is generated from its lower end and listed in reverse when
     * flipped, as maskApi.c does, so the rounding is the same) */
    for (size_t j = 0; j < k; j++) {
        int xs = X[j], xe = X[j + 1], ys = Y[j], ye = Y[j + 1];
        int dx = abs(xe - xs), dy = abs(ys - ye);
        int flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if (flip) {
            int t = xs; xs = xe; xe = t;
            t = ys; ys = ye; ye = t;
        }
        double s = dx >= dy ? (double)(ye - ys) / dx : (double)(xe - xs) / dy;
        if (dx >= dy) {
            for (int d = 0; d <= dx; d++) {
                int t = flip ? dx - d : d;
                double st = s * t;
                if (visit(&c, t + xs, trunc_int(ys + st + .5)) < 0) goto done;
            }
        } else {
            for (int d = 0; d <= dy; d++) {
                int t = flip ? dy - d : d;
                double st = s * t;
                if (visit(&c, trunc_int(xs + st + .5), t + ys) < 0) goto done;
            }
        }
    }
    /* crossings -> sorted positions -> run lengths; equal positions give a
     * zero run, which cancels with the run after it */
    if (push_crossing(&c, h * w) < 0) goto done;
    qsort(c.a, c.n, sizeof *c.a, cmp_u32);
    uint32_t prev = 0;
    for (size_t j = 0; j < c.n; j++) {
        uint32_t t = c.a[j];
        c.a[j] -= prev;
        prev = t;
    }
    if (rle_alloc(r, h, w, c.n) < 0) goto done;
    size_t m = 0, j = 0;
    r->cnts[m++] = c.a[j++];
    while (j < c.n) {
        if (c.a[j] > 0) r->cnts[m++] = c.a[j++];
        else if (++j < c.n) r->cnts[m - 1] += c.a[j++];
    }
    r->m = m;
    rc = 0;
done:
    free(X), free(Y), free(c.a);
    return rc;
}

int rle_from_bbox(rle_mask *r, const double bb[4], uint32_t h, uint32_t w) {
    double xs = bb[0], xe = xs + bb[2], ys = bb[1], ye = ys + bb[3];
    double xy[8] = {xs, ys, xs, ye, xe, ye, xe, ys};
    return rle_from_poly(r, xy, 4, h, w);
}

/* ---- compressed strings ------------------------------------------------------ */

char *rle_to_string(const rle_mask *r, size_t *len) {
    /* a count or delta fits 33 bits + sign: at most 7 characters */
    char *s = malloc(r->m * 7 + 1);
    if (!s) { ar_errorf("rle: out of memory (string of %zu counts)", r->m); return NULL; }
    size_t p = 0;
    for (size_t i = 0; i < r->m; i++) {
        int64_t x = (int64_t)r->cnts[i];
        if (i > 2) x -= (int64_t)r->cnts[i - 2];
        for (int more = 1; more;) {
            int c = (int)(x & 0x1f);
            x >>= 5;   /* arithmetic: GCC defines >> of a negative value as floor division */
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            s[p++] = (char)(c + 48);
        }
    }
    s[p] = 0;
    if (len) *len = p;
    return s;
}

int rle_from_string(rle_mask *r, const char *s, size_t len, uint32_t h, uint32_t w) {
    memset(r, 0, sizeof *r);
    if ((uint64_t)h * w > UINT32_MAX) return ar_errorf("rle: mask %ux%u is larger than 2^32-1 pixels", h, w);
    /* every count takes at least one character */
    uint32_t *cnts = malloc((len ? len : 1) * sizeof *cnts);
    if (!cnts) return ar_errorf("rle: out of memory (string of %zu bytes)", len);
    size_t m = 0, p = 0;
    uint64_t sum = 0;
    while (p < len) {
        int64_t x = 0;
        int k = 0, more = 1;
        size_t start = p;
        while (more) {
            if (p >= len) { free(cnts); return ar_errorf("rle: string ends inside the count at character %zu", start); }
            int c = (unsigned char)s[p] - 48;
            if (c < 0 || c > 63) {
                free(cnts);
                return ar_errorf("rle: invalid character 0x%02x at %zu (expected '0'..'o')", (unsigned char)s[p], p);
            }
            if (k == 7) { free(cnts); return ar_errorf("rle: count at character %zu is longer than 7 characters", start); }
            x |= (int64_t)(c & 0x1f) << (5 * k);
            more = c & 0x20;
            p++, k++;
            if (!more && (c & 0x10)) x |= (int64_t)((uint64_t)-1 << (5 * k));
        }
        if (m > 2) x += (int64_t)cnts[m - 2];
        if (x < 0 || x > (int64_t)UINT32_MAX) {
            free(cnts);
            return ar_errorf("rle: count %zu (at character %zu) is %lld, outside [0, 2^32-1]", m, start, (long long)x);
        }
        cnts[m++] = (uint32_t)x;
        sum += (uint64_t)x;
    }
    if (sum != (uint64_t)h * w) {
        free(cnts);
        return ar_errorf("rle: counts sum to %llu, not %ux%u = %llu", (unsigned long long)sum, h, w,
                         (unsigned long long)h * w);
    }
    r->h = h, r->w = w, r->m = m, r->cnts = cnts;
    return 0;
}

/* ---- measures ----------------------------------------------------------------- */

uint32_t rle_area(const rle_mask *r) {
    uint32_t a = 0;
    for (size_t j = 1; j < r->m; j += 2) a += r->cnts[j];
    return a;
}

void rle_to_bbox(const rle_mask *r, double bb[4]) {
    /* pycocotools >= 2.0.2 (ppwwyyxx/cocoapi, what PyPI ships): only
     * foreground runs of nonzero length count; one that crosses a column
     * makes the box full height. An RLE without such a run gives
     * (w, h, 1 - w, 1 - h) in uint32 arithmetic, as the reference does. */
    uint32_t h = r->h, w = r->w;
    size_t m = (r->m / 2) * 2;
    bb[0] = bb[1] = bb[2] = bb[3] = 0;
    if (m == 0 || h == 0) return;
    uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0;
    for (size_t j = 0; j < m; j++) {
        uint32_t start = cc;
        cc += r->cnts[j];
        if (j % 2 == 0 || r->cnts[j] == 0) continue;
        uint32_t y0 = start % h, x0 = (start - y0) / h;
        uint32_t y1 = (cc - 1) % h, x1 = (cc - 1 - y1) / h;
        if (x0 < xs) xs = x0;
        if (x1 > xe) xe = x1;
        if (x0 < x1) ys = 0, ye = h - 1;
        else {
            if (y0 < ys) ys = y0;
            if (y1 > ye) ye = y1;
        }
    }
    bb[0] = xs, bb[2] = (double)(uint32_t)(xe - xs + 1);
    bb[1] = ys, bb[3] = (double)(uint32_t)(ye - ys + 1);
}

/* Zero-length runs after the first make maskApi.c's merge and IoU loops stop
 * early (both inputs reaching a zero run at once ends the walk) and its merge
 * overflow its buffer; they meet the masks those runs decode to instead: a
 * zero run joins its neighbours. *use is r itself when it has none. */
static int canonical(const rle_mask *r, rle_mask *tmp, const rle_mask **use) {
    *use = r;
    memset(tmp, 0, sizeof *tmp);
    size_t j = 1;
    while (j < r->m && r->cnts[j]) j++;
    if (j >= r->m) return 0;
    if (rle_alloc(tmp, r->h, r->w, r->m) < 0) return -1;
    size_t m = 0;
    j = 0;
    tmp->cnts[m++] = r->cnts[j++];
    while (j < r->m) {
        if (r->cnts[j] > 0) tmp->cnts[m++] = r->cnts[j++];
        else if (++j < r->m) tmp->cnts[m - 1] += r->cnts[j++];
    }
    tmp->m = m;
    *use = tmp;
    return 0;
}

int rle_merge(rle_mask *out, const rle_mask *R, size_t n, int intersect) {
    memset(out, 0, sizeof *out);
    if (n == 0) return ar_errorf("rle: merge of no masks");
    uint32_t h = R[0].h, w = R[0].w;
    size_t cap = R[0].m + 1;
    for (size_t i = 1; i < n; i++) {
        if (R[i].h != h || R[i].w != w)
            return ar_errorf("rle: merge of masks of different sizes (%ux%u and %ux%u)", h, w, R[i].h, R[i].w);
        cap += R[i].m;
    }
    rle_mask A, tb;
    const rle_mask *r0;
    if (n == 1) return rle_copy(out, &R[0]);
    if (canonical(&R[0], &tb, &r0) < 0) return -1;
    int rc = rle_copy(&A, r0);
    rle_free(&tb);
    if (rc < 0) return -1;
    uint32_t *cnts = malloc(cap * sizeof *cnts);
    if (!cnts) { rle_free(&A); return ar_errorf("rle: out of memory (merge)"); }
    for (size_t i = 1; i < n; i++) {
        const rle_mask *B;
        if (canonical(&R[i], &tb, &B) < 0) { free(cnts); rle_free(&A); return -1; }
        uint32_t ca = A.m ? A.cnts[0] : 0, cb = B->m ? B->cnts[0] : 0, cc = 0;
        uint64_t ct = 1;   /* ca + cb: uint32 in maskApi.c, which wraps to 0 above 2^31 pixels */
        int v = 0, va = 0, vb = 0;
        size_t a = 1, b = 1, m = 0;
        while (ct > 0) {
            uint32_t c = ca < cb ? ca : cb;
            cc += c, ct = 0;
            ca -= c;
            if (!ca && a < A.m) ca = A.cnts[a++], va = !va;
            ct += ca;
            cb -= c;
            if (!cb && b < B->m) cb = B->cnts[b++], vb = !vb;
            ct += cb;
            int vp = v;
            v = intersect ? (va && vb) : (va || vb);
            if (v != vp || ct == 0) cnts[m++] = cc, cc = 0;
        }
        rle_free(&tb);
        uint32_t *na = malloc((m ? m : 1) * sizeof *na);
        if (!na) { free(cnts); rle_free(&A); return ar_errorf("rle: out of memory (merge)"); }
        memcpy(na, cnts, m * sizeof *na);
        free(A.cnts);
        A.cnts = na, A.m = m;
    }
    free(cnts);
    *out = A;
    return 0;
}

/* ---- IoU -------------------------------------------------------------------------- */

void bb_iou(const double *dt, size_t m, const double *gt, size_t n, const uint8_t *iscrowd, double *o) {
    for (size_t g = 0; g < n; g++) {
        const double *G = gt + 4 * g;
        double ga = G[2] * G[3];
        int crowd = iscrowd && iscrowd[g];
        for (size_t d = 0; d < m; d++) {
            const double *D = dt + 4 * d;
            double da = D[2] * D[3];
            o[d * n + g] = 0;
            double ww = fmin(D[2] + D[0], G[2] + G[0]) - fmax(D[0], G[0]);
            if (ww <= 0) continue;
            double hh = fmin(D[3] + D[1], G[3] + G[1]) - fmax(D[1], G[1]);
            if (hh <= 0) continue;
            double i = ww * hh, u = crowd ? da : da + ga - i;
            o[d * n + g] = i / u;
        }
    }
}

void rle_iou(const rle_mask *dt, size_t m, const rle_mask *gt, size_t n, const uint8_t *iscrowd, double *o) {
    for (size_t g = 0; g < n; g++) {
        double gb[4];
        rle_to_bbox(&gt[g], gb);
        for (size_t d = 0; d < m; d++) {
            double db[4];
            rle_to_bbox(&dt[d], db);
            bb_iou(db, 1, gb, 1, iscrowd ? &iscrowd[g] : NULL, &o[d * n + g]);
            if (!(o[d * n + g] > 0)) continue;
            if (dt[d].h != gt[g].h || dt[d].w != gt[g].w) { o[d * n + g] = -1; continue; }
            rle_mask ta, tb;
            const rle_mask *A, *B;
            if (canonical(&dt[d], &ta, &A) < 0 || canonical(&gt[g], &tb, &B) < 0) {
                rle_free(&ta);
                o[d * n + g] = NAN;   /* out of memory */
                continue;
            }
            uint32_t ca = A->cnts[0], cb = B->cnts[0], i = 0, u = 0;
            uint64_t ct = 1;
            size_t a = 1, b = 1;
            int va = 0, vb = 0;
            while (ct > 0) {
                uint32_t c = ca < cb ? ca : cb;
                if (va || vb) {
                    u += c;
                    if (va && vb) i += c;
                }
                ct = 0;
                ca -= c;
                if (!ca && a < A->m) ca = A->cnts[a++], va = !va;
                ct += ca;
                cb -= c;
                if (!cb && b < B->m) cb = B->cnts[b++], vb = !vb;
                ct += cb;
            }
            if (i == 0) u = 1;
            else if (iscrowd && iscrowd[g]) u = rle_area(A);
            o[d * n + g] = (double)i / (double)u;
            rle_free(&ta), rle_free(&tb);
        }
    }
}
