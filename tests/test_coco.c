/* tests/test_coco.c — data/rle.c and data/coco.c against pycocotools 2.0.7.
 *
 * tests/fixtures/coco.h5 and coco_instances.json come from
 * tests/ref/coco_ref.py (its docstring has the contract): every reference
 * mask as pycocotools' compressed string, area, toBbox and decoded bits.
 * Checked here, all exactly (strings byte for byte, doubles bit for bit):
 * string -> counts -> string round trips, decode (column- and row-major)
 * pixel by pixel, area and bbox of every mask; polygons (convex, concave,
 * self-intersecting, self-touching, tiny, outside, half-integer, repeated
 * points, odd lengths, 1x1 ... 640x480 images), multi-polygon annotations
 * (merge), boxes, uncompressed crowd RLEs, encode of masks, union and
 * intersection merges, RLE and box IoUs with crowd flags; the JSON loader's
 * fields, imgToAnns order and annToRLE on the small file; malformed strings,
 * records and files giving errors that name the field. */
#include "core/error.h"
#include "data/coco.h"
#include "data/rle.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *FX = "tests/fixtures/coco.h5";
static const char *JS = "tests/fixtures/coco_instances.json";

typedef struct {
    int R;
    int64_t *hw, *str_off, *bits_off;
    uint8_t *str, *bits;
    uint32_t *area;
    double *bbox;
} table;

/* A 1-D dataset of any length, read as memtype (elem bytes each). */
static void *rd(h5fixture *fx, const char *name, hid_t memtype, size_t elem, int *n_out) {
    int n = fx_len(fx, name);
    if (n < 0) exit(t_exit_code() | 1);
    void *p = fx_alloc(fx, (size_t)(n ? n : 1) * elem);
    int shape[1] = {n};
    if (n && !fx_read(fx, name, memtype, p, 1, shape)) exit(1);
    if (n_out) *n_out = n;
    return p;
}

/* An [n, k] dataset of n rows. */
static void *rd2(h5fixture *fx, const char *name, hid_t memtype, size_t elem, int k, int *n_out) {
    hid_t d = H5Dopen2(fx->file, name, H5P_DEFAULT);
    if (d < 0) { fx_bad(fx, name, "missing"); exit(1); }
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s), H5Dclose(d);
    int shape[2] = {(int)dims[0], k};
    void *p = fx_alloc(fx, (size_t)(dims[0] ? dims[0] : 1) * k * elem);
    if (dims[0] && !fx_read(fx, name, memtype, p, 2, shape)) exit(1);
    *n_out = (int)dims[0];
    return p;
}

static int same_str(const rle_mask *r, const table *T, int64_t i) {
    size_t len;
    char *s = rle_to_string(r, &len);
    int ok = s && (int64_t)len == T->str_off[i + 1] - T->str_off[i] && memcmp(s, T->str + T->str_off[i], len) == 0 &&
             r->h == (uint32_t)T->hw[2 * i] && r->w == (uint32_t)T->hw[2 * i + 1];
    free(s);
    return ok;
}

static int from_table(rle_mask *r, const table *T, int64_t i) {
    return rle_from_string(r, (const char *)T->str + T->str_off[i], (size_t)(T->str_off[i + 1] - T->str_off[i]),
                           (uint32_t)T->hw[2 * i], (uint32_t)T->hw[2 * i + 1]);
}

/* ---- every reference mask ---------------------------------------------------- */
static void check_table(const table *T) {
    int bad_parse = 0, bad_rt = 0, bad_area = 0, bad_bbox = 0, bad_bits = 0, bad_hw = 0, bad_enc = 0, nbits = 0;
    uint64_t pixels = 0;
    for (int i = 0; i < T->R; i++) {
        rle_mask r;
        if (from_table(&r, T, i) < 0) { bad_parse++; printf("  table %d: %s\n", i, ar_error()); continue; }
        if (!same_str(&r, T, i)) bad_rt++;
        if (rle_area(&r) != T->area[i]) bad_area++;
        double bb[4];
        rle_to_bbox(&r, bb);
        if (memcmp(bb, T->bbox + 4 * i, sizeof bb)) bad_bbox++;
        size_t hw = (size_t)r.h * r.w;
        uint8_t *m = malloc(hw + 1), *mh = malloc(hw + 1);
        if (rle_decode(&r, m) < 0 || rle_decode_hw(&r, mh) < 0) { bad_bits++; goto next; }
        for (size_t y = 0; y < r.h; y++)
            for (size_t x = 0; x < r.w; x++)
                if (mh[y * r.w + x] != m[x * r.h + y]) { bad_hw++; goto enc; }
    enc:;
        /* encode(decode) gives the canonical counts: equal to the string's
         * unless it holds zero-length runs (legal in uncompressed RLEs) */
        rle_mask e, eh;
        if (rle_encode(&e, m, r.h, r.w) == 0 && rle_encode_hw(&eh, mh, r.h, r.w) == 0) {
            int zero_runs = 0;
            for (size_t j = 1; j < r.m; j++) zero_runs |= r.cnts[j] == 0;
            if (e.m != eh.m || memcmp(e.cnts, eh.cnts, e.m * 4)) bad_enc++;
            if (!zero_runs && !same_str(&e, T, i)) bad_enc++;
            if (rle_area(&e) != T->area[i]) bad_enc++;
            rle_free(&e), rle_free(&eh);
        } else bad_enc++;
        if (T->bits_off[i + 1] > T->bits_off[i]) {
            nbits++;
            const uint8_t *b = T->bits + T->bits_off[i];
            for (size_t j = 0; j < hw; j++)
                if (((b[j >> 3] >> (7 - (j & 7))) & 1) != m[j]) { bad_bits++; break; }
            pixels += hw;
        }
    next:
        free(m), free(mh);
        rle_free(&r);
    }
    t_check(bad_parse == 0, "coco_rle_string_parse", "%d of %d pycocotools strings refused", bad_parse, T->R);
    t_check(bad_rt == 0, "coco_rle_string_roundtrip", "%d of %d strings differ after string->counts->string", bad_rt, T->R);
    t_check(bad_area == 0, "coco_rle_area", "%d of %d areas differ from mask.area", bad_area, T->R);
    t_check(bad_bbox == 0, "coco_rle_bbox", "%d of %d boxes differ from mask.toBbox (bitwise)", bad_bbox, T->R);
    t_check(bad_bits == 0 && nbits > 200, "coco_rle_decode", "%d of %d decoded masks differ from mask.decode (%" PRIu64 " pixels compared)",
            bad_bits, nbits, pixels);
    t_check(bad_hw == 0, "coco_rle_decode_hw", "%d row-major decodes disagree with column-major", bad_hw);
    t_check(bad_enc == 0, "coco_rle_encode_roundtrip", "%d encode(decode) mismatches (column- and row-major)", bad_enc);
}

/* ---- polygons, annotations, boxes, crowd RLEs, encodes -------------------------- */
static void check_makers(h5fixture *fx, const table *T) {
    int P, A, B, U, E, n;
    int64_t *phw = rd2(fx, "poly/hw", H5T_NATIVE_INT64, 8, 2, &P);
    int64_t *plen = rd(fx, "poly/plen", H5T_NATIVE_INT64, 8, NULL);
    double *xy = rd(fx, "poly/xy", H5T_NATIVE_DOUBLE, 8, NULL);
    int64_t *prle = rd(fx, "poly/rle", H5T_NATIVE_INT64, 8, NULL);
    int64_t *pstart = fx_alloc(fx, (P + 1) * sizeof *pstart);
    pstart[0] = 0;
    for (int i = 0; i < P; i++) pstart[i + 1] = pstart[i] + plen[i];
    int bad = 0;
    for (int i = 0; i < P; i++) {
        rle_mask r;
        if (rle_from_poly(&r, xy + pstart[i], (size_t)plen[i] / 2, (uint32_t)phw[2 * i], (uint32_t)phw[2 * i + 1]) < 0 ||
            !same_str(&r, T, prle[i])) {
            if (bad++ < 5) printf("  polygon %d (%" PRId64 "x%" PRId64 ", %" PRId64 " numbers) differs\n", i, phw[2 * i], phw[2 * i + 1], plen[i]);
        }
        rle_free(&r);
    }
    t_check(bad == 0 && P > 300, "coco_rle_from_poly", "%d of %d polygons differ from frPyObjects (strings byte-exact)", bad, P);

    int64_t *ahw = rd2(fx, "ann/hw", H5T_NATIVE_INT64, 8, 2, &A);
    int64_t *anp = rd(fx, "ann/npoly", H5T_NATIVE_INT64, 8, NULL);
    int64_t *afirst = rd(fx, "ann/first", H5T_NATIVE_INT64, 8, NULL);
    int64_t *arle = rd(fx, "ann/rle", H5T_NATIVE_INT64, 8, NULL);
    bad = 0;
    for (int i = 0; i < A; i++) {
        rle_mask parts[8], out;
        int k = (int)anp[i];
        for (int j = 0; j < k; j++) {
            int64_t p = afirst[i] + j;
            rle_from_poly(&parts[j], xy + pstart[p], (size_t)plen[p] / 2, (uint32_t)ahw[2 * i], (uint32_t)ahw[2 * i + 1]);
        }
        if (rle_merge(&out, parts, k, 0) < 0 || !same_str(&out, T, arle[i])) bad++;
        for (int j = 0; j < k; j++) rle_free(&parts[j]);
        rle_free(&out);
    }
    t_check(bad == 0 && A > 40, "coco_rle_multipolygon", "%d of %d merged multi-polygon annotations differ", bad, A);

    int64_t *bhw = rd2(fx, "box/hw", H5T_NATIVE_INT64, 8, 2, &B);
    double *bb = rd2(fx, "box/bb", H5T_NATIVE_DOUBLE, 8, 4, &n);
    int64_t *brle = rd(fx, "box/rle", H5T_NATIVE_INT64, 8, NULL);
    bad = 0;
    for (int i = 0; i < B; i++) {
        rle_mask r;
        if (rle_from_bbox(&r, bb + 4 * i, (uint32_t)bhw[2 * i], (uint32_t)bhw[2 * i + 1]) < 0 || !same_str(&r, T, brle[i])) bad++;
        rle_free(&r);
    }
    t_check(bad == 0 && B > 0, "coco_rle_from_bbox", "%d of %d boxes differ from frPyObjects(Nx4)", bad, B);

    int64_t *uhw = rd2(fx, "uc/hw", H5T_NATIVE_INT64, 8, 2, &U);
    int64_t *uc = rd(fx, "uc/counts", H5T_NATIVE_INT64, 8, NULL);
    int64_t *uoff = rd(fx, "uc/off", H5T_NATIVE_INT64, 8, NULL);
    int64_t *urle = rd(fx, "uc/rle", H5T_NATIVE_INT64, 8, NULL);
    bad = 0;
    for (int i = 0; i < U; i++) {
        size_t m = (size_t)(uoff[i + 1] - uoff[i]);
        uint32_t *c = malloc((m + 1) * 4);
        for (size_t j = 0; j < m; j++) c[j] = (uint32_t)uc[uoff[i] + j];
        rle_mask r;
        if (rle_from_counts(&r, c, m, (uint32_t)uhw[2 * i], (uint32_t)uhw[2 * i + 1]) < 0 || !same_str(&r, T, urle[i])) bad++;
        rle_free(&r);
        free(c);
    }
    t_check(bad == 0 && U > 0, "coco_rle_uncompressed", "%d of %d crowd RLEs differ from frPyObjects(dict)", bad, U);

    int64_t *erle = rd(fx, "enc/rle", H5T_NATIVE_INT64, 8, &E);
    bad = 0;
    int big = 0;
    for (int i = 0; i < E; i++) {
        /* the mask from the reference string (decode is checked above), re-encoded */
        rle_mask r, e;
        if (from_table(&r, T, erle[i]) < 0) { bad++; continue; }
        uint8_t *m = malloc((size_t)r.h * r.w + 1);
        rle_decode(&r, m);
        if (rle_encode(&e, m, r.h, r.w) < 0 || !same_str(&e, T, erle[i])) bad++;
        for (size_t j = 0; j < e.m; j++) big |= e.cnts[j] >= (1u << 20);
        free(m);
        rle_free(&r), rle_free(&e);
    }
    t_check(bad == 0 && big, "coco_rle_encode", "%d of %d masks encode differently from mask.encode (counts >= 2^20 included)", bad, E);
    free(phw), free(plen), free(xy), free(prle), free(pstart), free(ahw), free(anp), free(afirst), free(arle);
    free(bhw), free(bb), free(brle), free(uhw), free(uc), free(uoff), free(urle), free(erle);
}

/* ---- merge and IoU --------------------------------------------------------------- */
static void check_merge_iou(h5fixture *fx, const table *T) {
    int M, n;
    int64_t *idx = rd(fx, "merge/idx", H5T_NATIVE_INT64, 8, NULL);
    int64_t *off = rd(fx, "merge/off", H5T_NATIVE_INT64, 8, &n);
    int64_t *uni = rd(fx, "merge/union", H5T_NATIVE_INT64, 8, &M);
    int64_t *inter = rd(fx, "merge/inter", H5T_NATIVE_INT64, 8, NULL);
    int bad_u = 0, bad_i = 0;
    for (int i = 0; i < M; i++) {
        int k = (int)(off[i + 1] - off[i]);
        rle_mask R[8], o;
        for (int j = 0; j < k; j++) from_table(&R[j], T, idx[off[i] + j]);
        if (rle_merge(&o, R, k, 0) < 0 || !same_str(&o, T, uni[i])) bad_u++;
        rle_free(&o);
        if (rle_merge(&o, R, k, 1) < 0 || !same_str(&o, T, inter[i])) bad_i++;
        rle_free(&o);
        for (int j = 0; j < k; j++) rle_free(&R[j]);
    }
    t_check(bad_u == 0 && M > 20, "coco_rle_merge_union", "%d of %d unions differ from mask.merge", bad_u, M);
    t_check(bad_i == 0 && M > 20, "coco_rle_merge_intersect", "%d of %d intersections differ from mask.merge(intersect=1)", bad_i, M);
    free(idx), free(off), free(uni), free(inter);

    int I;
    int64_t *dt = rd(fx, "iou/dt", H5T_NATIVE_INT64, 8, NULL), *gt = rd(fx, "iou/gt", H5T_NATIVE_INT64, 8, NULL);
    int64_t *dto = rd(fx, "iou/dt_off", H5T_NATIVE_INT64, 8, &I), *gto = rd(fx, "iou/gt_off", H5T_NATIVE_INT64, 8, NULL);
    int64_t *crowd = rd(fx, "iou/crowd", H5T_NATIVE_INT64, 8, NULL), *oo = rd(fx, "iou/o_off", H5T_NATIVE_INT64, 8, NULL);
    double *o = rd(fx, "iou/o", H5T_NATIVE_DOUBLE, 8, NULL);
    int bad = 0, pairs = 0, neg = 0, crowd_nontrivial = 0;
    for (int s = 0; s + 1 < I; s++) {
        int m = (int)(dto[s + 1] - dto[s]), k = (int)(gto[s + 1] - gto[s]);
        rle_mask *D = calloc(m, sizeof *D), *G = calloc(k, sizeof *G);
        uint8_t *cr = calloc(k, 1);
        double *out = calloc((size_t)m * k, sizeof *out);
        for (int i = 0; i < m; i++) from_table(&D[i], T, dt[dto[s] + i]);
        for (int i = 0; i < k; i++) from_table(&G[i], T, gt[gto[s] + i]), cr[i] = (uint8_t)crowd[gto[s] + i];
        rle_iou(D, m, G, k, cr, out);
        for (int i = 0; i < m * k; i++) {
            pairs++;
            if (memcmp(&out[i], &o[oo[s] + i], sizeof(double))) bad++;
            neg += out[i] < 0;
            crowd_nontrivial += cr[i % k] && out[i] > 0 && out[i] < 1;
        }
        for (int i = 0; i < m; i++) rle_free(&D[i]);
        for (int i = 0; i < k; i++) rle_free(&G[i]);
        free(D), free(G), free(cr), free(out);
    }
    t_check(bad == 0 && neg > 0 && crowd_nontrivial > 0, "coco_rle_iou",
            "%d of %d IoUs differ from mask.iou (bitwise; %d size mismatches = -1, %d crowd pairs in (0,1))", bad, pairs,
            neg, crowd_nontrivial);
    free(dt), free(gt), free(dto), free(gto), free(crowd), free(oo), free(o);

    double *bdt = rd2(fx, "bbiou/dt", H5T_NATIVE_DOUBLE, 8, 4, &M), *bgt = rd2(fx, "bbiou/gt", H5T_NATIVE_DOUBLE, 8, 4, &n);
    int64_t *bc = rd(fx, "bbiou/crowd", H5T_NATIVE_INT64, 8, NULL);
    double *bo = rd2(fx, "bbiou/o", H5T_NATIVE_DOUBLE, 8, n, &I);
    uint8_t cr[64];
    for (int i = 0; i < n; i++) cr[i] = (uint8_t)bc[i];
    double out[64 * 64];
    bb_iou(bdt, M, bgt, n, cr, out);
    bad = memcmp(out, bo, sizeof(double) * M * n) != 0;
    t_check(!bad, "coco_bb_iou", "%dx%d box IoUs with crowd flags %s mask.iou (bitwise)", M, n, bad ? "differ from" : "equal");
    free(bdt), free(bgt), free(bc), free(bo);
}

/* ---- malformed strings -------------------------------------------------------------- */
static void check_bad_strings(void) {
    struct { const char *s; uint32_t h, w; const char *want; } cases[] = {
        {"84300000g1", 7, 13, NULL},              /* a valid one (a 4x4 square) */
        {"84300000g", 7, 13, "ends inside"},      /* 'g' (55) carries the continuation bit */
        {"84300000", 7, 13, "sum"},               /* counts short of h*w */
        {"84300000g1", 7, 14, "sum"},
        {"8430 000g1", 7, 13, "invalid character"},
        {"84300000gp", 7, 13, "invalid character"},
        {"843000h", 7, 13, "ends inside"},        /* 'h' = 56: a continuation flag with nothing after */
        {"0", 1, 1, "sum"},
        {"1", 1, 1, NULL},
        {"01", 1, 1, NULL},
        {"@", 1, 1, "outside"},                   /* 16 with the sign bit: -16 */
        {"hhhhhhhh1", 1, 1, "longer than 7"},
        {"", 1, 1, "sum"},
        {"", 0, 5, NULL},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rle_mask r;
        int rc = rle_from_string(&r, cases[i].s, strlen(cases[i].s), cases[i].h, cases[i].w);
        int ok = cases[i].want ? rc < 0 && strstr(ar_error(), cases[i].want) : rc == 0;
        if (!ok) { bad++; printf("  string \"%s\": rc %d, %s\n", cases[i].s, rc, rc ? ar_error() : "accepted"); }
        rle_free(&r);
    }
    t_check(bad == 0, "coco_rle_string_errors", "%d of %zu malformed/valid strings misjudged", bad, sizeof cases / sizeof *cases);
    /* every truncation of a real string is refused or decodes to a different sum */
    const char *s = "R[X1g0`0`0Q1\\Od4";
    rle_mask r;
    int nt = 0, acc = 0;
    for (size_t n = 0; n < strlen(s); n++, nt++)
        if (rle_from_string(&r, s, n, 480, 640) == 0) acc++, rle_free(&r);
    t_check(acc == 0, "coco_rle_string_truncations", "%d of %d truncations accepted", acc, nt);
    rle_mask a, b, o;
    uint32_t c1[] = {2, 3}, c2[] = {5, 1};
    rle_from_counts(&a, c1, 2, 5, 1);
    t_check(rle_from_counts(&b, c2, 2, 5, 1) < 0 && strstr(ar_error(), "sum"), "coco_rle_counts_errors", "%s", ar_error());
    rle_from_counts(&b, c1, 2, 1, 5);
    t_check(rle_merge(&o, (rle_mask[]){a, b}, 2, 0) < 0 && strstr(ar_error(), "different sizes"), "coco_rle_merge_errors", "%s", ar_error());
    /* zero-length runs after the first: merge and IoU see the decoded mask
     * (pycocotools stops early there: IoU 0 and a 0-pixel union for these) */
    uint32_t z1[] = {0, 0, 0, 1, 0}, z1c[] = {0, 1}, z2[] = {3, 0, 2, 20}, z2c[] = {5, 20}, z3[] = {1, 2, 0, 3, 19};
    rle_mask Z[5];
    rle_from_counts(&Z[0], z1, 5, 1, 1), rle_from_counts(&Z[1], z1c, 2, 1, 1);
    rle_from_counts(&Z[2], z2, 4, 5, 5), rle_from_counts(&Z[3], z2c, 2, 5, 5), rle_from_counts(&Z[4], z3, 5, 5, 5);
    double zo[4];
    rle_iou(&Z[0], 1, &Z[0], 1, NULL, &zo[0]);
    rle_iou(&Z[4], 1, &Z[4], 1, NULL, &zo[1]);
    rle_iou(&Z[4], 1, &Z[3], 1, NULL, &zo[2]);   /* pixels 1-5 against 5-24: 1 / 24 */
    rle_iou(&Z[2], 1, &Z[4], 1, NULL, &zo[3]);
    int zok = zo[0] == 1 && zo[1] == 1 && zo[2] == 1.0 / 24 && zo[3] == 1.0 / 24;
    if (rle_merge(&o, (rle_mask[]){Z[0], Z[0]}, 2, 0) == 0) zok &= o.m == 2 && o.cnts[0] == 0 && o.cnts[1] == 1, rle_free(&o);
    else zok = 0;
    if (rle_merge(&o, (rle_mask[]){Z[4], Z[4]}, 2, 1) == 0) zok &= rle_area(&o) == 5, rle_free(&o);
    else zok = 0;
    t_check(zok, "coco_rle_zero_runs", "IoU %g %g %g %g, merges read zero-length runs as the decoded mask", zo[0], zo[1], zo[2], zo[3]);
    for (int i = 0; i < 5; i++) rle_free(&Z[i]);
    double big[6] = {0, 0, 3e8, 0, 0, 3e8};
    t_check(rle_from_poly(&o, big, 3, 10, 10) < 0 && strstr(ar_error(), "out of range"), "coco_rle_poly_errors", "%s", ar_error());
    rle_free(&a), rle_free(&b);
}

/* ---- the JSON loader ----------------------------------------------------------------- */
static void check_loader(h5fixture *fx, const table *T) {
    coco_dataset ds;
    if (coco_load(JS, &ds) < 0) { t_fail("coco_load", "%s", ar_error()); return; }
    int ok = ds.n_images == 4 && ds.n_anns == 6 && ds.n_cats == 4 && !ds.n_bad_images && !ds.n_bad_anns && !ds.n_bad_cats;
    const coco_image *im = coco_find_image(&ds, 3);
    ok = ok && im && !strcmp(im->file_name, "dir/\xc3\xa9t\xc3\xa9.jpg") && im->height == 480 && im->width == 640;
    im = coco_find_image(&ds, 25);
    ok = ok && im && !strcmp(im->file_name, "odd 1x1.jpg") && im->height == 1 && im->width == 1;
    ok = ok && ds.images[0].id == 9 && ds.images[0].height == 7 && ds.images[0].width == 13 && !coco_find_image(&ds, 5);
    const coco_category *cat = coco_find_category(&ds, 3);
    ok = ok && cat && !strcmp(cat->name, "\"quoted\" cat") && !strcmp(cat->supercategory, "animal");
    ok = ok && !strcmp(coco_find_category(&ds, 18)->name, "dog") && !coco_find_category(&ds, 4);
    const coco_annotation *a = coco_find_ann(&ds, 102);
    ok = ok && a && a->image_id == 3 && a->category_id == 18 && a->bbox[0] == 10.5 && a->bbox[1] == 20.25 &&
         a->bbox[2] == 100 && a->bbox[3] == 80.75 && a->area == 1234.5678 && a->iscrowd == 0 &&
         a->seg == COCO_SEG_POLYGONS && a->n_poly == 2 && a->poly_len[1] == 6 && a->poly_xy[a->poly_start[1] + 5] == 260.5;
    a = coco_find_ann(&ds, 103);
    ok = ok && a && a->iscrowd == 1 && a->seg == COCO_SEG_COUNTS && a->n_counts == 5 && a->counts[4] == 26 &&
         a->rle_h == 7 && a->rle_w == 13 && a->area == 40;
    a = coco_find_ann(&ds, 104);
    ok = ok && a && a->seg == COCO_SEG_STRING && a->rle_h == 480 && a->counts_len == strlen(a->counts_str);
    t_check(ok, "coco_load_fields", "images, categories and annotation fields as written");

    /* imgToAnns order and annToRLE / annToMask area */
    int n, ni;
    int64_t *img_ids = rd(fx, "inst/img_ids", H5T_NATIVE_INT64, 8, &ni);
    int64_t *img_off = rd(fx, "inst/img_ann_off", H5T_NATIVE_INT64, 8, NULL);
    int64_t *img_ann = rd(fx, "inst/img_ann_ids", H5T_NATIVE_INT64, 8, NULL);
    int64_t *ann_ids = rd(fx, "inst/ann_ids", H5T_NATIVE_INT64, 8, &n);
    int64_t *ann_rle = rd(fx, "inst/ann_rle", H5T_NATIVE_INT64, 8, NULL);
    int64_t *ann_area = rd(fx, "inst/ann_area", H5T_NATIVE_INT64, 8, NULL);
    int bad = 0;
    for (int i = 0; i < ni; i++) {
        im = coco_find_image(&ds, img_ids[i]);
        if (!im || (int64_t)im->n_anns != img_off[i + 1] - img_off[i]) { bad++; continue; }
        for (size_t j = 0; j < im->n_anns; j++)
            bad += ds.anns[ds.img_anns[im->first_ann + j]].id != img_ann[img_off[i] + j];
    }
    t_check(bad == 0, "coco_load_img_to_anns", "%d differences from COCO.imgToAnns", bad);
    bad = 0;
    for (int i = 0; i < n; i++) {
        rle_mask r;
        a = &ds.anns[i];
        if (a->id != ann_ids[i] || coco_ann_to_rle(&ds, a, &r) < 0) { bad++; continue; }
        bad += !same_str(&r, T, ann_rle[i]) || rle_area(&r) != (uint32_t)ann_area[i];
        rle_free(&r);
    }
    t_check(bad == 0, "coco_ann_to_rle", "%d of %d annotations differ from COCO.annToRLE / annToMask", bad, n);
    free(img_ids), free(img_off), free(img_ann), free(ann_ids), free(ann_rle), free(ann_area);
    coco_free(&ds);
}

/* One annotation (or image) spliced into a minimal file: is it skipped, with a message naming want? */
static int bad_record(const char *image, const char *ann, const char *want, int fatal) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 7, \"width\": 13}%s%s],"
             " \"annotations\": [{\"id\": 5, \"image_id\": 1, \"category_id\": 1, \"bbox\": [0,0,1,1],"
             " \"segmentation\": [[1,1,5,1,5,5]]}%s%s],"
             " \"categories\": [{\"id\": 1, \"name\": \"x\"}]}",
             image ? ", " : "", image ? image : "", ann ? ", " : "", ann ? ann : "");
    coco_dataset ds;
    int rc = coco_load_buffer(buf, strlen(buf), "t.json", &ds);
    int ok;
    if (fatal) ok = rc < 0 && strstr(ar_error(), want) && strstr(ar_error(), "t.json");
    else
        ok = rc == 0 && ds.n_images == 1 && ds.n_anns == 1 && ds.n_bad_images + ds.n_bad_anns == 1 &&
             ds.n_messages == 1 && strstr(ds.messages[0], want) && strstr(ds.messages[0], "t.json");
    if (!ok) printf("  %s / %s: rc %d: %s\n", image ? image : "-", ann ? ann : "-", rc,
                    rc < 0 ? ar_error() : ds.n_messages ? ds.messages[0] : "(no message)");
    if (rc == 0) coco_free(&ds);
    return ok;
}

static void check_malformed(void) {
#define A(body) "{\"id\": 7, \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3,4]" body "}"
    struct { const char *img, *ann, *want; } cases[] = {
        {NULL, "{\"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3,4]}", "annotations[1]: missing field 'id'"},
        {NULL, "{\"id\": \"7\", \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3,4]}", "annotations[1]: id: expected an integer, found string"},
        {NULL, "{\"id\": 7.5, \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3,4]}", "id: expected an integer, found 7.5"},
        {NULL, "{\"id\": 7, \"image_id\": 1, \"bbox\": [1,2,3,4]}", "annotations[1] (id 7): missing field 'category_id'"},
        {NULL, "{\"id\": 7, \"image_id\": 1, \"category_id\": 2}", "(id 7): missing field 'bbox'"},
        {NULL, A(), NULL},
        {NULL, "{\"id\": 7, \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,\"3\",4]}", "(id 7): bbox[2]: expected a number, found string"},
        {NULL, "{\"id\": 7, \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3]}", "bbox: expected [x, y, width, height]"},
        {NULL, "{\"id\": 7, \"image_id\": 99, \"category_id\": 2, \"bbox\": [1,2,3,4]}", "(id 7): image_id 99 names no image"},
        {NULL, A(", \"iscrowd\": 2"), "iscrowd: expected 0 or 1, found 2"},
        {NULL, A(", \"area\": null"), "area: expected a number, found null"},
        {NULL, A(", \"segmentation\": \"abc\""), "segmentation: expected a list of polygons or an RLE object, found string"},
        {NULL, A(", \"segmentation\": [[1,2,3,4]]"), "segmentation[0]: a polygon needs at least 6 numbers"},
        {NULL, A(", \"segmentation\": [[1,2,3,4,5,6],[1]]"), "segmentation[1]: a polygon needs at least 2 numbers"},
        {NULL, A(", \"segmentation\": [[1,2,3,4,5,\"6\"]]"), "segmentation[0][5]: expected a number, found string"},
        {NULL, A(", \"segmentation\": [[1,2,3,4,5,1e300]]"), "segmentation[0][5]: coordinate 1.0000000000000001e+300 is out of range"},
        {NULL, A(", \"segmentation\": [5]"), "segmentation[0]: expected a polygon (a list of numbers), found 5"},
        {NULL, A(", \"segmentation\": {\"counts\": [91]}"), "segmentation: missing field 'size'"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13]}"), "segmentation: missing field 'counts'"},
        {NULL, A(", \"segmentation\": {\"size\": [7], \"counts\": [91]}"), "segmentation.size: expected [height, width]"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 0], \"counts\": []}"), "segmentation.size[1]: 0 is out of range"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": [90]}"), "segmentation.counts: the counts sum to 90, not 7x13 = 91"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": [90, -1, 2]}"), "segmentation.counts[1]: -1 is out of range"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": [90, true]}"), "segmentation.counts[1]: expected an integer, found boolean"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": \"84300000\"}"), "segmentation.counts: rle: counts sum to"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": \"8 \"}"), "segmentation.counts: rle: invalid character"},
        {NULL, A(", \"segmentation\": {\"size\": [7, 13], \"counts\": 5}"), "segmentation.counts: expected a list of integers or a string, found 5"},
        {NULL, "{\"id\": 5, \"image_id\": 1, \"category_id\": 2, \"bbox\": [1,2,3,4]}", "annotations[1] (id 5): duplicate id"},
        {NULL, "[1]", "annotations[1]: expected an object, found array"},
        {"{\"id\": 2, \"file_name\": \"b.jpg\", \"height\": 7}", NULL, "images[1] (id 2): missing field 'width'"},
        {"{\"id\": 2, \"file_name\": 3, \"height\": 7, \"width\": 1}", NULL, "images[1] (id 2): file_name: expected a string, found 3"},
        {"{\"id\": 2, \"file_name\": \"b\\u0000.jpg\", \"height\": 7, \"width\": 1}", NULL, "file_name: contains a NUL"},
        {"{\"id\": 2, \"file_name\": \"b.jpg\", \"height\": -7, \"width\": 1}", NULL, "height: -7 is out of range"},
        {"{\"id\": 2, \"file_name\": \"b.jpg\", \"height\": 70000, \"width\": 70000}", NULL, "over 2^32-1 pixels"},
        {"{\"id\": 1, \"file_name\": \"b.jpg\", \"height\": 7, \"width\": 13}", NULL, "images[1] (id 1): duplicate id"},
    };
    int bad = 0, n = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < n; i++) {
        if (!cases[i].want) {   /* the well-formed control: both records kept */
            char buf[1024];
            snprintf(buf, sizeof buf, "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"height\": 7, \"width\": 13}],"
                                      " \"annotations\": [%s]}", cases[i].ann);
            coco_dataset ds;
            if (coco_load_buffer(buf, strlen(buf), "t.json", &ds) < 0 || ds.n_anns != 1 || ds.n_bad_anns) bad++;
            else coco_free(&ds);
            continue;
        }
        /* annotation cases come second, so a duplicate-id case keeps the first */
        bad += !bad_record(cases[i].img, cases[i].ann, cases[i].want, 0);
    }
    t_check(bad == 0, "coco_load_malformed_records", "%d of %d malformed records not skipped with a message naming the field", bad, n);

    const char *fatal[][2] = {
        {"[1, 2]", "expected an object at the top, found array"},
        {"{\"annotations\": []}", "missing field 'images'"},
        {"{\"images\": [], \"annotations\": {}}", "annotations: expected an array, found object"},
        {"{\"images\": [], \"annotations\": [], \"categories\": 3}", "categories: expected an array, found number"},
        {"{\"images\": [{\"id\": 1", "line 1"},
        {"{\"images\": [], \"annotations\": [],}", "line 1"},
        {"", "expected"},
    };
    bad = 0;
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++) {
        coco_dataset ds;
        int rc = coco_load_buffer(fatal[i][0], strlen(fatal[i][0]), "t.json", &ds);
        if (!(rc < 0 && strstr(ar_error(), fatal[i][1]) && strstr(ar_error(), "t.json"))) {
            bad++;
            printf("  %s: rc %d %s\n", fatal[i][0], rc, ar_error());
            if (rc == 0) coco_free(&ds);
        }
    }
    t_check(bad == 0, "coco_load_malformed_files", "%d of %zu broken files not refused with the file named", bad,
            sizeof fatal / sizeof *fatal);

    /* every truncation of the small real file is refused, never crashes */
    FILE *f = fopen(JS, "rb");
    char *buf = malloc(1 << 16);
    size_t len = f ? fread(buf, 1, 1 << 16, f) : 0;
    if (f) fclose(f);
    int acc = 0, tried = 0;
    for (size_t n2 = 0; n2 + 2 < len; n2 += 7, tried++) {
        coco_dataset ds;
        char *cut = malloc(n2 + 1);
        memcpy(cut, buf, n2);
        if (coco_load_buffer(cut, n2, "cut.json", &ds) == 0) acc++, coco_free(&ds);
        free(cut);
    }
    t_check(len > 1000 && acc == 0, "coco_load_truncated", "%d of %d truncations accepted", acc, tried);
    free(buf);
    coco_free(NULL);
#undef A
}

int main(void) {
    h5fixture fx;
    if (!fx_open(&fx, FX, "coco ")) return 1;
    table T;
    T.hw = rd2(&fx, "rles/hw", H5T_NATIVE_INT64, 8, 2, &T.R);
    T.str = rd(&fx, "rles/str", H5T_NATIVE_UINT8, 1, NULL);
    T.str_off = rd(&fx, "rles/str_off", H5T_NATIVE_INT64, 8, NULL);
    T.bits = rd(&fx, "rles/bits", H5T_NATIVE_UINT8, 1, NULL);
    T.bits_off = rd(&fx, "rles/bits_off", H5T_NATIVE_INT64, 8, NULL);
    T.area = rd(&fx, "rles/area", H5T_NATIVE_UINT32, 4, NULL);
    int n;
    T.bbox = rd2(&fx, "rles/bbox", H5T_NATIVE_DOUBLE, 8, 4, &n);
    check_table(&T);
    check_makers(&fx, &T);
    check_merge_iou(&fx, &T);
    check_bad_strings();
    check_loader(&fx, &T);
    check_malformed();
    fx_close(&fx);
    free(T.hw), free(T.str), free(T.str_off), free(T.bits), free(T.bits_off), free(T.area), free(T.bbox);
    return t_exit_code();
}
