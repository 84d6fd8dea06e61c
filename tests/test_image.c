/* tests/test_image.c — data/image.c against Debian's python3-pil (Pillow 9.4),
 * torchvision and PyTorch (fixture tests/fixtures/image.h5 and the image files
 * in tests/fixtures/images/, both written by tests/ref/image_ref.py).
 *
 * 1. decode: every fixture image (PNG grey 1/2/4/8/16-bit, grey+tRNS, grey+
 *    alpha 8/16, RGB 8/16, RGBA 8/16, palette 1/4/8-bit with tRNS, Adam7
 *    interlaced, JPEG 4:2:0 / 4:2:2 / 4:4:4, progressive, grey, CMYK, EXIF
 *    rotation tag) decoded as RGB equals PIL's convert("RGB") exactly (max abs
 *    diff printed; must be 0), and in IMAGE_GRAY_RAW mode equals PIL's palette
 *    indices / grey values, palette flag included.
 * 2. resize: image_resize_u8 against Image.resize (bilinear and bicubic, down
 *    by up to 12x, up by 5x, one axis unchanged, 1x1 in and out), exact.
 * 3. SAM: ResizeLongestSide + sam_preprocess at S = 48 (resized uint8 exact,
 *    float output max abs diff) and the resized image at S = 1024 through row
 *    and column sums and a subsample; padding zero.
 * 4. CLIP: CLIPImageProcessor (crop) and AnyRef's clip_resize_wo_crop at S = 32
 *    (whole output) and 224 (subsample + row/column sums).
 * 5. Errors, never crashes: every truncation length of every fixture file, a
 *    sweep of byte flips, absurd sizes (refused before allocating), non-image
 *    bytes, empty and missing files; messages name the file.
 * 6. The PNG writer: grey and RGB round trips, and a refused write.
 * Run from the repo root. */
#include "data/image.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define FIXTURE "tests/fixtures/image.h5"
#define IMGDIR "tests/fixtures/images/"
#define PFX "image "

static h5fixture FX;

/* ------------------------------------------------------------------ helpers */
/* Reads dataset ds (any shape up to 4-D) as memtype into a new buffer. */
static void *read_any(const char *ds, hid_t memtype, size_t esize, int *ndim, hsize_t dims[4]) {
    hid_t d = H5Dopen2(FX.file, ds, H5P_DEFAULT);
    if (d < 0) { fx_bad(&FX, ds, "missing dataset"); return NULL; }
    hid_t s = H5Dget_space(d);
    *ndim = H5Sget_simple_extent_ndims(s);
    size_t n = 1;
    if (*ndim < 1 || *ndim > 4) { H5Sclose(s); H5Dclose(d); fx_bad(&FX, ds, "unexpected rank"); return NULL; }
    H5Sget_simple_extent_dims(s, dims, NULL);
    for (int i = 0; i < *ndim; i++) n *= dims[i];
    void *buf = fx_alloc(&FX, n * esize);
    int ok = H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
    H5Sclose(s);
    H5Dclose(d);
    if (!ok) { free(buf); fx_bad(&FX, ds, "unreadable"); return NULL; }
    return buf;
}

static int attr_int(const char *obj, const char *name) {
    int v = -1;
    hid_t a = H5Aopen_by_name(FX.file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT, &v) < 0) fx_bad(&FX, obj, "missing int attribute");
    if (a >= 0) H5Aclose(a);
    return v;
}

typedef struct { char names[64][64]; int n; } namelist;
static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    namelist *l = op;
    if (l->n < 64) snprintf(l->names[l->n++], 64, "%s", name);
    return 0;
}
static void list_group(const char *grp, namelist *l) {
    l->n = 0;
    hid_t g = H5Gopen2(FX.file, grp, H5P_DEFAULT);
    if (g < 0) { fx_bad(&FX, grp, "missing group"); return; }
    H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, collect, l);
    H5Gclose(g);
}

static int max_diff_u8(const uint8_t *a, const uint8_t *b, size_t n, size_t *count) {
    int m = 0;
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d) c++;
        if (d > m) m = d;
    }
    if (count) *count = c;
    return m;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* ------------------------------------------------------------------ 1. decode */
static void test_decode(void) {
    namelist l;
    list_group("decode", &l);
    t_check(l.n >= 24, PFX "decode fixtures", "%d images in the fixture", l.n);
    for (int i = 0; i < l.n; i++) {
        char ds[160], path[160], nm[160];
        snprintf(ds, sizeof ds, "decode/%s", l.names[i]);
        snprintf(path, sizeof path, IMGDIR "%s", l.names[i]);
        int nd;
        hsize_t dims[4];
        uint8_t *ref = read_any(ds, H5T_NATIVE_UINT8, 1, &nd, dims);
        if (!ref) continue;
        ar_image im;
        snprintf(nm, sizeof nm, PFX "decode %s", l.names[i]);
        if (image_load(&im, path, IMAGE_RGB) < 0) {
            t_fail(nm, "%s", ar_error());
        } else if (nd != 3 || (hsize_t)im.h != dims[0] || (hsize_t)im.w != dims[1] || im.c != 3) {
            t_fail(nm, "shape %dx%dx%d, PIL %llux%llux%llu", im.h, im.w, im.c, (unsigned long long)dims[0],
                   (unsigned long long)dims[1], (unsigned long long)dims[2]);
        } else {
            size_t cnt;
            int m = max_diff_u8(im.px, ref, (size_t)im.h * im.w * 3, &cnt);
            t_check(m == 0, nm, "%dx%d RGB vs PIL: max abs diff %d (%zu values differ)", im.w, im.h, m, cnt);
        }
        image_free(&im);
        free(ref);

        snprintf(ds, sizeof ds, "raw/%s", l.names[i]);
        ref = read_any(ds, H5T_NATIVE_UINT8, 1, &nd, dims);
        if (!ref) continue;
        const int pal = attr_int(ds, "palette");
        snprintf(nm, sizeof nm, PFX "raw %s", l.names[i]);
        if (image_load(&im, path, IMAGE_GRAY_RAW) < 0) {
            t_fail(nm, "%s", ar_error());
        } else if (nd != 2 || (hsize_t)im.h != dims[0] || (hsize_t)im.w != dims[1] || im.c != 1) {
            t_fail(nm, "shape %dx%dx%d", im.h, im.w, im.c);
        } else {
            size_t cnt;
            int m = max_diff_u8(im.px, ref, (size_t)im.h * im.w, &cnt);
            t_check(m == 0 && im.palette == pal, nm, "%s values vs PIL: max abs diff %d (%zu differ), palette %d/%d",
                    pal ? "palette-index" : "grey", m, cnt, im.palette, pal);
        }
        image_free(&im);
        free(ref);
    }
}

/* Content, not the name, decides: PNG bytes under a .jpg name and back. */
static void test_by_content(void) {
    size_t len;
    uint8_t *png = read_file(IMGDIR "rgb_37x53.png", &len);
    ar_image a, b;
    int ok = png && image_decode(&a, png, len, IMAGE_RGB, "looks-like.jpg") == 0;
    char tmp[] = "/tmp/anyref_img_XXXXXX";
    int fd = mkstemp(tmp);
    ok = ok && fd >= 0 && write(fd, png, len) == (ssize_t)len;
    if (fd >= 0) close(fd);
    char named[64];
    snprintf(named, sizeof named, "%s.jpg", tmp);
    ok = ok && rename(tmp, named) == 0 && image_load(&b, named, IMAGE_RGB) == 0;
    ok = ok && a.h == 53 && a.w == 37 && b.h == a.h && !memcmp(a.px, b.px, (size_t)a.h * a.w * 3);
    t_check(ok, PFX "by content", "a PNG named .jpg decodes as PNG (format '%s')",
            png ? image_format(png, len) : "?");
    remove(named);
    if (ok) { image_free(&a); image_free(&b); }
    free(png);
}

/* ------------------------------------------------------------------ 2. resize */
static void test_resize(void) {
    namelist l;
    list_group("resize", &l);
    t_check(l.n >= 10, PFX "resize fixtures", "%d cases", l.n);
    int worst = 0;
    for (int i = 0; i < l.n; i++) {
        char ds[96], nm[96];
        int nd, nd2;
        hsize_t d[4], od[4];
        snprintf(ds, sizeof ds, "resize/%s/src", l.names[i]);
        uint8_t *src = read_any(ds, H5T_NATIVE_UINT8, 1, &nd, d);
        snprintf(ds, sizeof ds, "resize/%s/out", l.names[i]);
        uint8_t *ref = read_any(ds, H5T_NATIVE_UINT8, 1, &nd2, od);
        snprintf(ds, sizeof ds, "resize/%s", l.names[i]);
        const int filt = attr_int(ds, "filter");
        if (!src || !ref || nd != 3 || nd2 != 3) { free(src); free(ref); continue; }
        uint8_t *out = fx_alloc(&FX, od[0] * od[1] * od[2]);
        snprintf(nm, sizeof nm, PFX "resize %s", l.names[i]);
        if (image_resize_u8(out, (int)od[0], (int)od[1], src, (int)d[0], (int)d[1], (int)d[2], (image_filter)filt) < 0) {
            t_fail(nm, "%s", ar_error());
        } else {
            size_t cnt;
            int m = max_diff_u8(out, ref, od[0] * od[1] * od[2], &cnt);
            if (m > worst) worst = m;
            t_check(m == 0, nm, "%s %llux%llux%llu -> %llux%llu vs PIL: max abs diff %d (%zu differ)",
                    filt == IMAGE_BICUBIC ? "bicubic" : "bilinear", (unsigned long long)d[1],
                    (unsigned long long)d[0], (unsigned long long)d[2], (unsigned long long)od[1],
                    (unsigned long long)od[0], m, cnt);
        }
        free(out);
        free(src);
        free(ref);
    }
    printf("     resize: worst max abs diff against PIL over all cases: %d grey levels\n", worst);
    /* refusals */
    uint8_t px[12] = {0};
    t_check(image_resize_u8(px, 2, 2, px, 0, 2, 3, IMAGE_BILINEAR) < 0 &&
                image_resize_u8(px, 2, 2, px, 2, 2, 3, (image_filter)7) < 0,
            PFX "resize refusals", "empty input and an unknown filter refused (%s)", ar_error());
}

/* ------------------------------------------------------------------ 3. SAM */
static int load_rgb(const char *name, ar_image *im) {
    char path[160];
    snprintf(path, sizeof path, IMGDIR "%s", name);
    if (image_load(im, path, IMAGE_RGB) < 0) { t_fail(PFX "load", "%s", ar_error()); return 0; }
    return 1;
}

static void test_sam(void) {
    namelist l;
    list_group("sam", &l);
    t_check(l.n >= 4, PFX "sam fixtures", "%d images", l.n);
    for (int i = 0; i < l.n; i++) {
        char grp[128], ds[160], nm[160];
        snprintf(grp, sizeof grp, "sam/%s", l.names[i]);
        ar_image im;
        if (!load_rgb(l.names[i], &im)) continue;
        const int S = attr_int(grp, "S"), rh_ref = attr_int(grp, "rh"), rw_ref = attr_int(grp, "rw");
        int rh, rw, nd;
        hsize_t d[4];
        float *out = fx_alloc(&FX, sizeof(float) * 3 * S * S);
        snprintf(nm, sizeof nm, PFX "sam %d %s", S, l.names[i]);
        if (image_sam_preprocess(out, &im, S, &rh, &rw) < 0) { t_fail(nm, "%s", ar_error()); goto next; }
        /* the resized uint8 image, through the same resize the preprocessing uses */
        snprintf(ds, sizeof ds, "%s/resized", grp);
        uint8_t *ref = read_any(ds, H5T_NATIVE_UINT8, 1, &nd, d);
        ar_image r;
        if (ref && rh == rh_ref && rw == rw_ref && image_resize(&r, &im, rh, rw, IMAGE_BILINEAR) == 0) {
            size_t cnt;
            int m = max_diff_u8(r.px, ref, (size_t)rh * rw * 3, &cnt);
            /* and the float output is (resized - mean) / std, zero padded */
            static const float mean[3] = {123.675f, 116.28f, 103.53f}, stdv[3] = {58.395f, 57.12f, 57.375f};
            double e = 0;
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < S; y++)
                    for (int x = 0; x < S; x++) {
                        float want = (y < rh && x < rw) ? ((float)r.px[((size_t)y * rw + x) * 3 + ch] - mean[ch]) / stdv[ch] : 0.0f;
                        e = fmax(e, fabs(out[((size_t)ch * S + y) * S + x] - want));
                    }
            t_check(m == 0 && e == 0, nm, "%dx%d -> %dx%d (PIL bilinear via torchvision): max abs diff %d (%zu differ); "
                    "normalised + padded output exact (%.1e)", im.w, im.h, rw, rh, m, cnt, e);
            image_free(&r);
        } else {
            t_fail(nm, "resized size %dx%d, reference %dx%d", rw, rh, rw_ref, rh_ref);
        }
        free(ref);
        snprintf(ds, sizeof ds, "%s/out", grp);
        if (H5Lexists(FX.file, ds, H5P_DEFAULT) > 0) {
            float *o = read_any(ds, H5T_NATIVE_FLOAT, 4, &nd, d);
            if (o) {
                double e = 0;
                for (size_t k = 0; k < (size_t)3 * S * S; k++) e = fmax(e, fabs(o[k] - out[k]));
                snprintf(nm, sizeof nm, PFX "sam_preprocess %s", l.names[i]);
                t_check(e <= 1e-6, nm, "[3, %d, %d] vs PyTorch's (x - mean) / std + F.pad: max abs diff %.2e", S, S, e);
                free(o);
            }
        }
    next:
        free(out);
        image_free(&im);
    }

    list_group("sam1024", &l);
    for (int i = 0; i < l.n; i++) {
        char grp[128], ds[160], nm[160];
        snprintf(grp, sizeof grp, "sam1024/%s", l.names[i]);
        ar_image im, r;
        if (!load_rgb(l.names[i], &im)) continue;
        int rh, rw, nd;
        hsize_t d[4];
        image_sam_shape(im.h, im.w, 1024, &rh, &rw);
        snprintf(nm, sizeof nm, PFX "sam 1024 %s", l.names[i]);
        if (rh != attr_int(grp, "rh") || rw != attr_int(grp, "rw") || image_resize(&r, &im, rh, rw, IMAGE_BILINEAR) < 0) {
            t_fail(nm, "shape %dx%d or %s", rw, rh, ar_error());
            image_free(&im);
            continue;
        }
        snprintf(ds, sizeof ds, "%s/rows", grp);
        int64_t *rows = read_any(ds, H5T_NATIVE_INT64, 8, &nd, d);
        snprintf(ds, sizeof ds, "%s/cols", grp);
        int64_t *cols = read_any(ds, H5T_NATIVE_INT64, 8, &nd, d);
        snprintf(ds, sizeof ds, "%s/sub", grp);
        uint8_t *sub = read_any(ds, H5T_NATIVE_UINT8, 1, &nd, d);
        int64_t worst = 0;
        int subm = 0;
        if (rows && cols && sub) {
            int64_t *cr = calloc((size_t)rh * 3, 8), *cc = calloc((size_t)rw * 3, 8);
            for (int y = 0; y < rh; y++)
                for (int x = 0; x < rw; x++)
                    for (int ch = 0; ch < 3; ch++) {
                        const int v = r.px[((size_t)y * rw + x) * 3 + ch];
                        cr[y * 3 + ch] += v;
                        cc[x * 3 + ch] += v;
                        if (y % 16 == 0 && x % 16 == 0) {
                            int dd = abs(v - sub[(((size_t)(y / 16)) * d[1] + x / 16) * 3 + ch]);
                            if (dd > subm) subm = dd;
                        }
                    }
            for (int k = 0; k < rh * 3; k++) worst = llabs(cr[k] - rows[k]) > worst ? llabs(cr[k] - rows[k]) : worst;
            for (int k = 0; k < rw * 3; k++) worst = llabs(cc[k] - cols[k]) > worst ? llabs(cc[k] - cols[k]) : worst;
            free(cr);
            free(cc);
        }
        t_check(rows && cols && sub && worst == 0 && subm == 0, nm,
                "%dx%d -> %dx%d: row/column sums differ by at most %lld, subsample max abs diff %d", im.w, im.h, rw, rh,
                (long long)worst, subm);
        free(rows), free(cols), free(sub);
        image_free(&r);
        image_free(&im);
    }
}

/* ------------------------------------------------------------------ 4. CLIP */
static void test_clip(void) {
    namelist l;
    list_group("clip", &l);
    t_check(l.n >= 3, PFX "clip fixtures", "%d images", l.n);
    for (int i = 0; i < l.n; i++) {
        ar_image im;
        if (!load_rgb(l.names[i], &im)) continue;
        for (int S = 32; S <= 224; S += 192) {
            for (int crop = 1; crop >= 0; crop--) {
                char ds[192], nm[192];
                const char *kind = crop ? "crop" : "wocrop";
                snprintf(ds, sizeof ds, "clip/%s/%d/%s%s", l.names[i], S, kind, S == 224 ? "_sub" : "");
                if (H5Lexists(FX.file, ds, H5P_DEFAULT) <= 0) continue;
                float *out = fx_alloc(&FX, sizeof(float) * 3 * S * S);
                snprintf(nm, sizeof nm, PFX "clip %s %d %s", kind, S, l.names[i]);
                if (image_clip_preprocess(out, &im, S, crop) < 0) { t_fail(nm, "%s", ar_error()); free(out); continue; }
                int nd;
                hsize_t d[4];
                float *ref = read_any(ds, H5T_NATIVE_FLOAT, 4, &nd, d);
                double e = 0, es = 0;
                if (ref && S != 224) {
                    for (size_t k = 0; k < (size_t)3 * S * S; k++) e = fmax(e, fabs(out[k] - ref[k]));
                } else if (ref) {
                    for (int ch = 0; ch < 3; ch++)
                        for (int y = 0; y < S; y += 7)
                            for (int x = 0; x < S; x += 7)
                                e = fmax(e, fabs(out[((size_t)ch * S + y) * S + x] - ref[((size_t)ch * d[1] + y / 7) * d[2] + x / 7]));
                    for (int rc = 0; rc < 2; rc++) {
                        snprintf(ds, sizeof ds, "clip/%s/%d/%s_%s", l.names[i], S, kind, rc ? "cols" : "rows");
                        double *sums = read_any(ds, H5T_NATIVE_DOUBLE, 8, &nd, d);
                        if (!sums) continue;
                        for (int ch = 0; ch < 3; ch++)
                            for (int a = 0; a < S; a++) {
                                double s = 0;
                                for (int b = 0; b < S; b++)
                                    s += rc ? out[((size_t)ch * S + b) * S + a] : out[((size_t)ch * S + a) * S + b];
                                es = fmax(es, fabs(s - sums[ch * S + a]));
                            }
                        free(sums);
                    }
                }
                /* crop: the same float32 operations as transformers, exact;
                 * wocrop: PyTorch's float32 bilinear sums its two products in
                 * an order we do not reproduce: within 2 ulp (values < 2.7). */
                const double tol = crop ? 0.0 : 5e-7;
                t_check(ref && e <= tol && es <= 1e-4, nm,
                        "%dx%d -> [3, %d, %d] vs %s: max abs diff %.2e%s (row/col sums %.1e)", im.w, im.h, S, S,
                        crop ? "CLIPImageProcessor" : "CLIPImageProcessor(do_center_crop=False) + F.interpolate", e,
                        S == 224 ? " on every 7th pixel" : "", es);
                free(ref);
                free(out);
            }
        }
        image_free(&im);
    }
    int oh, ow;
    image_clip_shape(480, 640, 224, &oh, &ow);
    int ok = oh == 224 && ow == 298;
    image_clip_shape(427, 640, 224, &oh, &ow);
    ok = ok && oh == 224 && ow == 335; /* int(224 * 640 / 427) = int(335.7) */
    image_clip_shape(224, 1000, 224, &oh, &ow);
    ok = ok && oh == 224 && ow == 1000;
    t_check(ok, PFX "clip shape", "shortest side 224, long side truncated, untouched when already 224");
}

/* ------------------------------------------------------------------ 5. errors */
static int names_file(const char *name) { return strstr(ar_error(), name) != NULL; }

static void test_errors(void) {
    namelist l;
    list_group("decode", &l);
    long truncs = 0, trunc_bad = 0, flips = 0, flip_ok = 0, flip_bad = 0;
    char badmsg[256] = "";
    for (int i = 0; i < l.n; i++) {
        char path[160];
        snprintf(path, sizeof path, IMGDIR "%s", l.names[i]);
        size_t len;
        uint8_t *buf = read_file(path, &len);
        if (!buf) { t_fail(PFX "errors", "cannot read %s", path); continue; }
        uint8_t *cp = malloc(len);
        /* every truncation (each length below the whole file) must fail */
        for (size_t n = 0; n < len; n++) {
            memcpy(cp, buf, n);
            for (int mode = 0; mode < 2; mode++) {
                ar_image im;
                int rc = image_decode(&im, cp, n, (image_mode)mode, path);
                truncs++;
                if (rc == 0 || !names_file(path) || im.px) {
                    if (!trunc_bad++) snprintf(badmsg, sizeof badmsg, "%s cut at %zu: rc %d '%s'", path, n, rc, ar_error());
                    if (rc == 0) image_free(&im);
                }
            }
        }
        /* byte flips: a decode or an error naming the file, never a crash */
        uint64_t s = 0x9e3779b97f4a7c15ull * (i + 1);
        for (int k = 0; k < 150; k++) {
            memcpy(cp, buf, len);
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            const size_t at = (size_t)(s % len);
            cp[at] ^= (uint8_t)(1u << ((s >> 32) % 8)) | (k % 3 == 0 ? 0x80 : 0);
            ar_image im;
            int rc = image_decode(&im, cp, len, (image_mode)(k & 1), path);
            flips++;
            if (rc == 0) {
                flip_ok++;
                if (im.h <= 0 || im.w <= 0 || !im.px) flip_bad++;
                image_free(&im);
            } else if (!names_file(path)) {
                flip_bad++;
            }
        }
        free(cp);
        free(buf);
    }
    t_check(trunc_bad == 0 && truncs > 10000, PFX "truncated files",
            "%ld truncations of %d files (every length, both modes): all refused with the file named%s%s", truncs, l.n,
            trunc_bad ? "; FIRST BAD: " : "", badmsg);
    t_check(flip_bad == 0, PFX "flipped bytes", "%ld decodes of damaged files: %ld decoded (JPEG is not checksummed), "
            "%ld refused naming the file, %ld bad", flips, flip_ok, flips - flip_ok - flip_bad, flip_bad);

    /* absurd sizes, refused from the header */
    size_t len;
    uint8_t *png = read_file(IMGDIR "rgb_37x53.png", &len);
    ar_image im;
    if (png) {
        png[16] = 0x00, png[17] = 0x01, png[18] = 0x86, png[19] = 0xa0; /* width 100000 */
        const uLong crc = crc32(0L, png + 12, 17);                        /* type + IHDR data */
        png[29] = (uint8_t)(crc >> 24), png[30] = (uint8_t)(crc >> 16), png[31] = (uint8_t)(crc >> 8), png[32] = (uint8_t)crc;
        int rc = image_decode(&im, png, len, IMAGE_RGB, "huge.png");
        t_check(rc < 0 && names_file("huge.png") && strstr(ar_error(), "limit"), PFX "png huge width", "%s", ar_error());
        free(png);
    }
    uint8_t *jpg = read_file(IMGDIR "jpeg420_q90_37x53.jpg", &len);
    if (jpg) {
        size_t sof = 0;
        for (size_t k = 2; k + 9 < len; k++)
            if (jpg[k] == 0xff && jpg[k + 1] == 0xc0) { sof = k; break; }
        int rc = image_decode_limit(&im, jpg, len, IMAGE_RGB, "small-limit.jpg", 100);
        int ok = rc < 0 && strstr(ar_error(), "limit");
        char m1[AR_ERROR_MAX];
        snprintf(m1, sizeof m1, "%s", ar_error());
        if (sof) {
            jpg[sof + 5] = 0xff, jpg[sof + 6] = 0xdc, jpg[sof + 7] = 0xff, jpg[sof + 8] = 0xdc; /* 65500 x 65500 */
            rc = image_decode(&im, jpg, len, IMAGE_RGB, "huge.jpg");
            ok = ok && rc < 0 && names_file("huge.jpg") && strstr(ar_error(), "limit");
        }
        t_check(ok && sof, PFX "jpeg limits", "'%s'; '%s'", m1, ar_error());
        free(jpg);
    }
    static const uint8_t junk[] = "GIF89a not supported";
    int ok = image_decode(&im, junk, sizeof junk, IMAGE_RGB, "a.gif") < 0 && names_file("a.gif");
    char m1[AR_ERROR_MAX];
    snprintf(m1, sizeof m1, "%s", ar_error());
    ok = ok && image_decode(&im, junk, 0, IMAGE_RGB, "empty.png") < 0 && names_file("empty.png");
    ok = ok && image_load(&im, IMGDIR "no-such-file.png", IMAGE_RGB) < 0 && names_file("no-such-file.png");
    t_check(ok, PFX "not images", "'%s'; '%s'", m1, ar_error());
}

/* ------------------------------------------------------------------ 6. PNG writer */
static void test_writer(void) {
    char dir[] = "/tmp/anyref_imgw_XXXXXX";
    if (!mkdtemp(dir)) { t_fail(PFX "png writer", "mkdtemp"); return; }
    const int H = 37, W = 53;
    uint8_t *px = malloc((size_t)H * W * 3);
    uint64_t s = 12345;
    for (int i = 0; i < H * W * 3; i++) s = s * 6364136223846793005ull + 1442695040888963407ull, px[i] = (uint8_t)(s >> 56);
    char path[128];
    int ok = 1;
    for (int c = 1; c <= 3; c += 2) {
        snprintf(path, sizeof path, "%s/sub/out_c%d.png", dir, c);
        ar_image im;
        int rc = image_write_png(path, px, H, W, c);
        rc = rc ? rc : image_load(&im, path, c == 3 ? IMAGE_RGB : IMAGE_GRAY_RAW);
        ok = ok && rc == 0 && im.h == H && im.w == W && im.c == c && !memcmp(im.px, px, (size_t)H * W * c) && !im.palette;
        if (rc == 0) image_free(&im);
        remove(path);
    }
    t_check(ok, PFX "png writer", "grey and RGB %dx%d written and read back bit for bit%s%s", W, H, ok ? "" : ": ",
            ok ? "" : ar_error());
    snprintf(path, sizeof path, "%s/sub", dir);
    ok = image_write_png(path, px, H, W, 3) < 0;                        /* a directory is in the way */
    ok = ok && image_write_png("/tmp/x.png", px, H, W, 2) < 0;         /* 2 channels */
    t_check(ok, PFX "png writer refusals", "%s", ar_error());
    rmdir(path);
    rmdir(dir);
    free(px);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    test_decode();
    test_by_content();
    test_resize();
    test_sam();
    test_clip();
    test_errors();
    test_writer();
    fx_close(&FX);
    return t_exit_code();
}
