/* data/image.c — JPEG/PNG decoding, the PNG writer, Pillow-exact resampling
 * and the SAM / CLIP preprocessing (semantics and sources in data/image.h).
 *
 * libjpeg and libpng report errors by calling a handler that must not
 * return; ours longjmp back into the decode function, which frees what it
 * allocated and returns -1 with the library's message and the file's name.
 * Every variable that changes after setjmp and is read after the longjmp is
 * volatile.
 *
 * Depends on core/error.h, core/fs.h, libjpeg-turbo, libpng.
 */
/* Pillow is built without FMA contraction; the filter weights and the float
 * normalisations below must round exactly as its (and PyTorch's) do. */
#pragma GCC optimize("fp-contract=off")

#include "data/image.h"

#include "core/error.h"
#include "core/fs.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
/* after stdio.h: jpeglib.h needs FILE */
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* format sniffing                                                          */
/* ------------------------------------------------------------------------ */
static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

const char *image_format(const void *buf, size_t len) {
    const uint8_t *b = buf;
    if (!b) return NULL;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return "jpeg";
    if (len >= 8 && !memcmp(b, PNG_MAGIC, 8)) return "png";
    return NULL;
}

void image_free(ar_image *im) {
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

static int check_size(const char *name, long w, long h, size_t max_pixels) {
    if (w <= 0 || h <= 0) return ar_errorf("%s: image has no pixels (%ld x %ld)", name, w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (size_t)w * (size_t)h > max_pixels)
        return ar_errorf("%s: image of %ld x %ld pixels is larger than the limit (%d per side, %zu pixels)", name,
                         w, h, IMAGE_MAX_SIDE, max_pixels);
    return 0;
}

/* PIL's RGB -> L (Convert.c rgb2l), in place from [n, 3] to [n]. */
static void rgb_to_l(uint8_t *px, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = px + 3 * i;
        px[i] = (uint8_t)(((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u + (uint32_t)p[2] * 7471u + 0x8000u) >> 16);
    }
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                     */
/* ------------------------------------------------------------------------ */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr_t;

static void jpeg_fail(j_common_ptr cinfo) {
    jerr_t *e = (jerr_t *)cinfo->err;
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are ignored as Pillow ignores them, except running out of data:
 * libjpeg would pad with grey, Pillow reports a truncated file. */
static void jpeg_message(j_common_ptr cinfo, int level) {
    jerr_t *e = (jerr_t *)cinfo->err;
    if (level < 0 && e->pub.msg_code == JWRN_JPEG_EOF) {
        snprintf(e->msg, sizeof e->msg, "file is truncated (%s)", "premature end of JPEG data");
        longjmp(e->jb, 1);
    }
}

static int decode_jpeg(ar_image *out, const uint8_t *buf, size_t len, image_mode mode, const char *name,
                       size_t max_pixels) {
    struct jpeg_decompress_struct cinfo;
    jerr_t err;
    uint8_t *volatile px = NULL;
    uint8_t *volatile row = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_fail;
    err.pub.emit_message = jpeg_message;
    err.pub.output_message = NULL;
    err.msg[0] = '\0';
    if (setjmp(err.jb)) {
        jpeg_destroy_decompress(&cinfo);
        free(px);
        free(row);
        return ar_errorf("%s: JPEG: %s", name, err.msg[0] ? err.msg : "decoding failed");
    }
    if (len > (size_t)0xffffffffu) {
        jpeg_destroy_decompress(&cinfo);
        return ar_errorf("%s: JPEG of %zu bytes is too large", name, len);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);

    const int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    const int grey = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    if (cmyk) cinfo.out_color_space = JCS_CMYK;
    else if (grey) cinfo.out_color_space = JCS_GRAYSCALE;
    else cinfo.out_color_space = JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    if (cinfo.num_components != 1 && cinfo.num_components != 3 && cinfo.num_components != 4) {
        snprintf(err.msg, sizeof err.msg, "%d colour components are not supported", cinfo.num_components);
        longjmp(err.jb, 1);
    }
    if (check_size(name, (long)cinfo.image_width, (long)cinfo.image_height, max_pixels) < 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_start_decompress(&cinfo);
    const int W = (int)cinfo.output_width, H = (int)cinfo.output_height, nc = cinfo.output_components;
    const int oc = mode == IMAGE_GRAY_RAW ? 1 : 3;
    /* 3 bytes per pixel even for grey output so RGB -> L can run in place. */
    px = malloc((size_t)W * H * 3);
    row = malloc((size_t)W * (size_t)nc);
    if (!px || !row) {
        snprintf(err.msg, sizeof err.msg, "out of memory for %d x %d pixels", W, H);
        longjmp(err.jb, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        const int y = (int)cinfo.output_scanline;
        JSAMPROW rp = row;
        if (jpeg_read_scanlines(&cinfo, &rp, 1) != 1) {
            snprintf(err.msg, sizeof err.msg, "file is truncated (no data for row %d)", y);
            longjmp(err.jb, 1);
        }
        uint8_t *o = px + (size_t)y * W * 3;
        if (nc == 1) {
            if (oc == 1) memcpy(px + (size_t)y * W, row, (size_t)W);
            else
                for (int x = 0; x < W; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = row[x];
        } else if (nc == 3) {
            memcpy(o, row, (size_t)W * 3);
        } else {
            /* Pillow: rawmode CMYK;I inverts the stored values, then cmyk2rgb. */
            for (int x = 0; x < W; x++) {
                const int nk = row[4 * x + 3]; /* 255 - inverted K */
                for (int ch = 0; ch < 3; ch++) {
                    const int c = 255 - row[4 * x + ch];
                    int t = c * nk + 128;
                    t = ((t >> 8) + t) >> 8;
                    int v = nk - t;
                    o[3 * x + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    if (oc == 1 && nc != 1) rgb_to_l(px, (size_t)W * H);
    uint8_t *shrunk = realloc(px, (size_t)W * H * oc);
    out->px = shrunk ? shrunk : px;
    out->h = H;
    out->w = W;
    out->c = oc;
    out->palette = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                      */
/* ------------------------------------------------------------------------ */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char msg[256];
} png_src;

static void png_fail(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}
static void png_quiet(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        snprintf(s->msg, sizeof s->msg, "file is truncated (needed %zu bytes at offset %zu of %zu)", (size_t)n,
                 s->pos, s->len);
        png_longjmp(png, 1);
    }
    memcpy(dst, s->buf + s->pos, n);
    s->pos += n;
}

static int decode_png(ar_image *out, const uint8_t *buf, size_t len, image_mode mode, const char *name,
                      size_t max_pixels) {
    png_src src = {buf, len, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_quiet);
    if (!png) return ar_errorf("%s: PNG: out of memory", name);
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    volatile int too_big = 0;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ar_errorf("%s: PNG: out of memory", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(px);
        free(rows);
        if (too_big) return -1;
        return ar_errorf("%s: PNG: %s", name, src.msg[0] ? src.msg : "decoding failed");
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* we check sizes ourselves, with a clearer message */
    png_set_chunk_malloc_max(png, (png_alloc_size_t)64 << 20);
    png_read_info(png, info);
    png_uint_32 W = 0, H = 0;
    int depth = 0, ctype = 0, interlace = 0;
    png_get_IHDR(png, info, &W, &H, &depth, &ctype, &interlace, NULL, NULL);
    if (check_size(name, (long)W, (long)H, max_pixels) < 0) {
        too_big = 1;
        png_longjmp(png, 1);
    }
    int palette_out = 0;
    int to_l = 0; /* RGB decoded, converted to L afterwards */
    if (mode == IMAGE_RGB) {
        if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png); /* tRNS becomes alpha, stripped below */
        if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) {
            if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
            png_set_gray_to_rgb(png);
        }
    } else {
        if (ctype == PNG_COLOR_TYPE_PALETTE) {
            if (depth < 8) png_set_packing(png);
            palette_out = 1;
        } else if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) {
            if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        } else {
            to_l = 1;
        }
    }
    if (depth == 16) png_set_strip_16(png); /* the high byte */
    png_set_strip_alpha(png);
    const int passes = png_set_interlace_handling(png);
    (void)passes;
    png_read_update_info(png, info);
    const int nc = png_get_channels(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    const int want = mode == IMAGE_RGB ? 3 : (to_l ? 3 : 1);
    if (nc != want || rowbytes != (size_t)W * (size_t)nc) {
        snprintf(src.msg, sizeof src.msg, "unexpected layout after conversion (%d channels, %zu bytes a row)", nc,
                 rowbytes);
        png_longjmp(png, 1);
    }
    px = malloc((size_t)W * H * nc);
    rows = malloc(sizeof(png_bytep) * H);
    if (!px || !rows) {
        snprintf(src.msg, sizeof src.msg, "out of memory for %u x %u pixels", (unsigned)W, (unsigned)H);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < H; y++) rows[y] = px + (size_t)y * rowbytes;
    png_read_image(png, rows);
    /* The image data is complete; what follows (text chunks, IEND) is read
     * too, so a damaged trailer is reported like Pillow's CRC checks do. */
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    uint8_t *p = px;
    if (to_l) {
        rgb_to_l(p, (size_t)W * H);
        uint8_t *shrunk = realloc(p, (size_t)W * H);
        if (shrunk) p = shrunk;
    }
    out->px = p;
    out->h = (int)H;
    out->w = (int)W;
    out->c = mode == IMAGE_RGB ? 3 : 1;
    out->palette = palette_out;
    return 0;
}

int image_decode_limit(ar_image *out, const void *buf, size_t len, image_mode mode, const char *name,
                       size_t max_pixels) {
    if (!name) name = "<memory>";
    if (!out) return ar_errorf("%s: image_decode: NULL output", name);
    memset(out, 0, sizeof *out);
    if (!buf && len) return ar_errorf("%s: image_decode: NULL buffer", name);
    if (mode != IMAGE_RGB && mode != IMAGE_GRAY_RAW) return ar_errorf("%s: image_decode: unknown mode %d", name, (int)mode);
    if (!max_pixels || max_pixels > IMAGE_MAX_PIXELS) max_pixels = IMAGE_MAX_PIXELS;
    const char *fmt = image_format(buf, len);
    int rc;
    if (!fmt) {
        if (len == 0) return ar_errorf("%s: empty file, not an image", name);
        return ar_errorf("%s: not a JPEG or PNG file (unknown leading bytes)", name);
    } else if (fmt[0] == 'j') {
        rc = decode_jpeg(out, buf, len, mode, name, max_pixels);
    } else {
        rc = decode_png(out, buf, len, mode, name, max_pixels);
    }
    if (rc < 0) memset(out, 0, sizeof *out);
    return rc;
}

int image_decode(ar_image *out, const void *buf, size_t len, image_mode mode, const char *name) {
    return image_decode_limit(out, buf, len, mode, name, 0);
}

int image_load(ar_image *out, const char *path, image_mode mode) {
    if (out) memset(out, 0, sizeof *out);
    if (!path) return ar_errorf("image_load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 16;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return ar_errorf("%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ar_errorf("%s: read error", path);
    }
    int rc = image_decode(out, buf, len, mode, path);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* PNG writer                                                               */
/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* encoders into memory, and the atomic JPEG writer                          */
/* ------------------------------------------------------------------------ */
int image_encode_jpeg(const uint8_t *px, int h, int w, int c, int quality, uint8_t **out, size_t *len) {
    if (!px || !out || !len) return ar_errorf("image_encode_jpeg: NULL argument");
    *out = NULL;
    *len = 0;
    if (c != 1 && c != 3) return ar_errorf("image_encode_jpeg: %d channels (expected 1 or 3)", c);
    if (quality < 1 || quality > 100) return ar_errorf("image_encode_jpeg: quality %d (expected 1..100)", quality);
    if (check_size("image_encode_jpeg", w, h, IMAGE_MAX_PIXELS) < 0) return -1;
    struct jpeg_compress_struct cinfo;
    jerr_t err;
    /* libjpeg's memory destination (re)allocates *b with malloc and keeps *b
     * current, also when an error longjmps out: b lives in memory (its
     * address is taken), so the handler frees what is there. */
    unsigned char *b = NULL;
    unsigned long size = 0;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_fail;
    err.pub.emit_message = jpeg_message;
    err.msg[0] = 0;
    if (setjmp(err.jb)) {
        jpeg_destroy_compress(&cinfo);
        free(*(unsigned char *volatile *)&b);
        return ar_errorf("image_encode_jpeg: %s", err.msg[0] ? err.msg : "failed");
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &b, &size);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = c;
    cinfo.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)cinfo.next_scanline * w * c);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = (uint8_t *)b;
    *len = (size_t)size;
    return 0;
}

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    char msg[256];
} png_sink;

static void png_sink_write(png_structp png, png_bytep data, png_size_t n) {
    png_sink *s = png_get_io_ptr(png);
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n) cap *= 2;
        uint8_t *nb = realloc(s->buf, cap);
        if (!nb) png_error(png, "out of memory");
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}
static void png_sink_flush(png_structp png) { (void)png; }
static void png_sink_fail(png_structp png, png_const_charp msg) {
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

int image_encode_png(const uint8_t *px, int h, int w, int c, uint8_t **out, size_t *len) {
    if (!px || !out || !len) return ar_errorf("image_encode_png: NULL argument");
    *out = NULL;
    *len = 0;
    if (c != 1 && c != 3) return ar_errorf("image_encode_png: %d channels (expected 1 or 3)", c);
    if (check_size("image_encode_png", w, h, IMAGE_MAX_PIXELS) < 0) return -1;
    png_sink *s = calloc(1, sizeof *s);
    if (!s) return ar_errorf("image_encode_png: out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, png_sink_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        if (png) png_destroy_write_struct(&png, NULL);
        free(s);
        return ar_errorf("image_encode_png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        ar_errorf("image_encode_png: %s", s->msg[0] ? s->msg : "failed");
        free(s->buf);
        free(s);
        return -1;
    }
    png_set_write_fn(png, s, png_sink_write, png_sink_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(px + (size_t)y * w * c));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = s->buf;
    *len = s->len;
    free(s);
    return 0;
}

/* buf[len] (freed here) into path through "<path>.tmp<pid>", renamed over
 * path once complete (ar_commit_file). 0, or -1 + ar_error naming the file. */
static int write_atomic(const char *path, uint8_t *buf, size_t len) {
    if (ar_mkdir_parent(path) < 0) {
        free(buf);
        return -1;
    }
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) {
        free(buf);
        return ar_errorf("%s: out of memory", path);
    }
    snprintf(tmp, n, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        ar_errorf("%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(buf);
        return -1;
    }
    const int bad = fwrite(buf, 1, len, f) != len || fflush(f) != 0 || ferror(f);
    free(buf);
    if (fclose(f) != 0 || bad) {
        ar_errorf("%s: write error: %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    int rc = ar_commit_file(tmp, path);
    free(tmp);
    return rc;
}

int image_write_jpeg(const char *path, const uint8_t *px, int h, int w, int c, int quality) {
    if (!path || !px) return ar_errorf("image_write_jpeg: NULL argument");
    uint8_t *buf;
    size_t len;
    if (image_encode_jpeg(px, h, w, c, quality, &buf, &len) < 0) return ar_error_prefix("%s: ", path);
    return write_atomic(path, buf, len);
}

int image_write_png(const char *path, const uint8_t *px, int h, int w, int c) {
    if (!path || !px) return ar_errorf("image_write_png: NULL argument");
    if (c != 1 && c != 3) return ar_errorf("%s: image_write_png: %d channels (expected 1 or 3)", path, c);
    if (check_size(path, w, h, IMAGE_MAX_PIXELS) < 0) return -1;
    uint8_t *buf;
    size_t len;
    if (image_encode_png(px, h, w, c, &buf, &len) < 0) return ar_error_prefix("%s: ", path);
    return write_atomic(path, buf, len);
}

/* ------------------------------------------------------------------------ */
/* Pillow's resampling (libImaging/Resample.c semantics, 8 bits per channel) */
/* ------------------------------------------------------------------------ */
#define PRECISION_BITS (32 - 8 - 2)

static double filter_bilinear(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double filter_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Per output index: the first input index bounds[2i], the tap count
 * bounds[2i+1], and ksize fixed-point weights kk[i * ksize ...]. */
static int coeffs(int in_size, int out_size, image_filter f, int **boundsp, int32_t **kkp) {
    double (*filt)(double) = f == IMAGE_BICUBIC ? filter_bicubic : filter_bilinear;
    const double fsupport = f == IMAGE_BICUBIC ? 2.0 : 1.0;
    const double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = fsupport * filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    double *k = malloc(sizeof(double) * (size_t)ksize);
    int32_t *kk = malloc(sizeof(int32_t) * (size_t)out_size * ksize);
    if (!bounds || !k || !kk) {
        free(bounds), free(k), free(kk);
        return ar_errorf("image_resize: out of memory for %d x %d coefficients", out_size, ksize);
    }
    const double ss = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x = 0;
        for (; x < xmax; x++) {
            const double w = filt((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        for (x = 0; x < ksize; x++)
            kk[(size_t)xx * ksize + x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << PRECISION_BITS))
                                                  : (int32_t)(0.5 + k[x] * (1 << PRECISION_BITS));
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(k);
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

int image_resize_u8(uint8_t *dst, int oh, int ow, const uint8_t *src, int h, int w, int c, image_filter f) {
    if (!dst || !src) return ar_errorf("image_resize: NULL argument");
    if (c < 1 || c > 4) return ar_errorf("image_resize: %d channels (expected 1..4)", c);
    if (f != IMAGE_BILINEAR && f != IMAGE_BICUBIC) return ar_errorf("image_resize: unknown filter %d", (int)f);
    if (h <= 0 || w <= 0 || oh <= 0 || ow <= 0 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE || oh > IMAGE_MAX_SIDE ||
        ow > IMAGE_MAX_SIDE)
        return ar_errorf("image_resize: bad sizes %d x %d -> %d x %d", w, h, ow, oh);
    if (oh == h && ow == w) {
        memcpy(dst, src, (size_t)h * w * c);
        return 0;
    }
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL;
    int kvs = 0, khs = 0;
    /* Rows of the input that the vertical pass reads (all of them if none). */
    int y0 = 0, y1 = h;
    if (oh != h) {
        if ((kvs = coeffs(h, oh, f, &bv, &kv)) < 0) return -1;
        y0 = bv[0];
        y1 = bv[2 * (oh - 1)] + bv[2 * (oh - 1) + 1];
    }
    const uint8_t *mid = src + (size_t)y0 * w * c; /* [y1 - y0, ow', c] */
    int midw = w;
    uint8_t *tmp = NULL;
    if (ow != w) {
        if ((khs = coeffs(w, ow, f, &bh, &kh)) < 0) {
            free(bv), free(kv);
            return -1;
        }
        uint8_t *hout = oh != h ? (tmp = malloc((size_t)(y1 - y0) * ow * c)) : dst;
        if (!hout) {
            free(bv), free(kv), free(bh), free(kh);
            return ar_errorf("image_resize: out of memory");
        }
        for (int y = y0; y < y1; y++) {
            const uint8_t *in = src + (size_t)y * w * c;
            uint8_t *o = hout + (size_t)(y - y0) * ow * c;
            for (int xx = 0; xx < ow; xx++) {
                const int xmin = bh[2 * xx], xn = bh[2 * xx + 1];
                const int32_t *k = kh + (size_t)xx * khs;
                for (int ch = 0; ch < c; ch++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < xn; x++) ss += (int32_t)in[(size_t)(xmin + x) * c + ch] * k[x];
                    o[(size_t)xx * c + ch] = clip8(ss);
                }
            }
        }
        mid = hout;
        midw = ow;
    }
    if (oh != h) {
        const size_t rs = (size_t)midw * c;
        for (int yy = 0; yy < oh; yy++) {
            const int ymin = bv[2 * yy] - y0, yn = bv[2 * yy + 1];
            const int32_t *k = kv + (size_t)yy * kvs;
            uint8_t *o = dst + (size_t)yy * rs;
            for (size_t i = 0; i < rs; i++) {
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int y = 0; y < yn; y++) ss += (int32_t)mid[(size_t)(ymin + y) * rs + i] * k[y];
                o[i] = clip8(ss);
            }
        }
    }
    free(tmp);
    free(bh), free(kh), free(bv), free(kv);
    return 0;
}

int image_resize(ar_image *out, const ar_image *in, int oh, int ow, image_filter f) {
    if (!out || !in || !in->px) return ar_errorf("image_resize: NULL argument");
    memset(out, 0, sizeof *out);
    if (oh <= 0 || ow <= 0 || oh > IMAGE_MAX_SIDE || ow > IMAGE_MAX_SIDE || (size_t)oh * ow > IMAGE_MAX_PIXELS)
        return ar_errorf("image_resize: bad output size %d x %d", ow, oh);
    uint8_t *px = malloc((size_t)oh * ow * (in->c > 0 ? in->c : 1));
    if (!px) return ar_errorf("image_resize: out of memory for %d x %d", ow, oh);
    if (image_resize_u8(px, oh, ow, in->px, in->h, in->w, in->c, f) < 0) {
        free(px);
        return -1;
    }
    out->px = px;
    out->h = oh;
    out->w = ow;
    out->c = in->c;
    out->palette = in->palette;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* SAM and CLIP inputs                                                      */
/* ------------------------------------------------------------------------ */
static const float SAM_MEAN[3] = {123.675f, 116.28f, 103.53f};
static const float SAM_STD[3] = {58.395f, 57.12f, 57.375f};
static const float CLIPP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float CLIPP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

void image_sam_shape(int h, int w, int S, int *oh, int *ow) {
    const double scale = S * 1.0 / (h > w ? h : w);
    *oh = (int)(h * scale + 0.5);
    *ow = (int)(w * scale + 0.5);
}

static int check_rgb(const ar_image *im, const char *who) {
    if (!im || !im->px) return ar_errorf("%s: NULL image", who);
    if (im->c != 3 || im->h <= 0 || im->w <= 0) return ar_errorf("%s: expected an RGB image, got %d x %d x %d", who, im->h, im->w, im->c);
    return 0;
}

int image_sam_preprocess(float *out, const ar_image *rgb, int S, int *rh, int *rw) {
    if (check_rgb(rgb, "image_sam_preprocess") < 0) return -1;
    if (!out || S <= 0 || S > IMAGE_MAX_SIDE) return ar_errorf("image_sam_preprocess: bad output (size %d)", S);
    int oh, ow;
    image_sam_shape(rgb->h, rgb->w, S, &oh, &ow);
    if (oh < 1 || ow < 1) return ar_errorf("image_sam_preprocess: %d x %d image resizes to nothing at %d", rgb->w, rgb->h, S);
    ar_image r;
    if (image_resize(&r, rgb, oh, ow, IMAGE_BILINEAR) < 0) return -1;
    const size_t SS = (size_t)S * S;
    for (int ch = 0; ch < 3; ch++) {
        float *o = out + ch * SS;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                o[(size_t)y * S + x] = (y < oh && x < ow)
                                           ? ((float)r.px[((size_t)y * ow + x) * 3 + ch] - SAM_MEAN[ch]) / SAM_STD[ch]
                                           : 0.0f;
    }
    image_free(&r);
    if (rh) *rh = oh;
    if (rw) *rw = ow;
    return 0;
}

void image_clip_shape(int h, int w, int S, int *oh, int *ow) {
    const int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* transformers' get_resize_output_image_size: unchanged when the short
     * side already is S; else int(S * long / short) (true division). */
    const int nlong = shorter == S ? longer : (int)((double)S * longer / shorter);
    if (w <= h) {
        *ow = S;
        *oh = nlong;
    } else {
        *oh = S;
        *ow = nlong;
    }
}

/* x = float32(v * (1/255)) in double, then (x - mean) / std in float32. */
static inline float clip_norm(uint8_t v, int ch) {
    const float x = (float)((double)v * (1.0 / 255.0));
    return (x - CLIPP_MEAN[ch]) / CLIPP_STD[ch];
}

int image_clip_preprocess(float *out, const ar_image *rgb, int S, int center_crop) {
    if (check_rgb(rgb, "image_clip_preprocess") < 0) return -1;
    if (!out || S <= 0 || S > IMAGE_MAX_SIDE) return ar_errorf("image_clip_preprocess: bad output (size %d)", S);
    int oh, ow;
    image_clip_shape(rgb->h, rgb->w, S, &oh, &ow);
    ar_image r;
    if (image_resize(&r, rgb, oh, ow, IMAGE_BICUBIC) < 0) return -1;
    const size_t SS = (size_t)S * S;
    if (center_crop) {
        const int top = (oh - S) / 2, left = (ow - S) / 2; /* both >= 0 */
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    out[ch * SS + (size_t)y * S + x] = clip_norm(r.px[((size_t)(y + top) * ow + x + left) * 3 + ch], ch);
        image_free(&r);
        return 0;
    }
    /* torch's upsample_bilinear2d, align_corners=False, float32 values:
     * src = scale * (dst + 0.5) - 0.5 in double from the float scale in / out,
     * clamped at 0; w1 = float(src - floor(src)), w0 = 1 - w1 (an axis of
     * unchanged size gets w0 = 1 exactly: src = dst);
     * out = (x00 w0 + x01 w1) h0 + (x10 w0 + x11 w1) h1. */
    int *xi = malloc(sizeof(int) * 2 * S), *yi = malloc(sizeof(int) * 2 * S);
    float *xl = malloc(sizeof(float) * 2 * S), *yl = malloc(sizeof(float) * 2 * S);
    float *norm = malloc(sizeof(float) * (size_t)oh * ow * 3);
    if (!xi || !yi || !xl || !yl || !norm) {
        free(xi), free(yi), free(xl), free(yl), free(norm);
        image_free(&r);
        return ar_errorf("image_clip_preprocess: out of memory");
    }
    for (size_t i = 0; i < (size_t)oh * ow; i++)
        for (int ch = 0; ch < 3; ch++) norm[ch * (size_t)oh * ow + i] = clip_norm(r.px[3 * i + ch], ch);
    image_free(&r);
    for (int pass = 0; pass < 2; pass++) {
        const int in = pass ? ow : oh;
        int *id = pass ? xi : yi;
        float *lam = pass ? xl : yl;
        const float scale = (float)in / (float)S;
        for (int d = 0; d < S; d++) {
            /* area_pixel_compute_source_index: dst + 0.5 is a double, so the
             * source coordinate is a double (from the float scale); only the
             * weight is rounded to float (checked against torch 1.13). */
            double src = (double)scale * ((double)d + 0.5) - 0.5;
            if (src < 0) src = 0;
            const int i0 = (int)src;
            const int off = i0 < in - 1 ? 1 : 0;
            float l1 = (float)(src - i0);
            l1 = l1 > 1 ? 1 : l1;
            id[2 * d] = i0;
            id[2 * d + 1] = i0 + off;
            lam[2 * d] = 1.0f - l1;
            lam[2 * d + 1] = l1;
        }
    }
    for (int ch = 0; ch < 3; ch++) {
        const float *p = norm + ch * (size_t)oh * ow;
        for (int y = 0; y < S; y++) {
            const float *r0 = p + (size_t)yi[2 * y] * ow, *r1 = p + (size_t)yi[2 * y + 1] * ow;
            for (int x = 0; x < S; x++) {
                const int x0 = xi[2 * x], x1 = xi[2 * x + 1];
                const float t0 = r0[x0] * xl[2 * x] + r0[x1] * xl[2 * x + 1];
                const float t1 = r1[x0] * xl[2 * x] + r1[x1] * xl[2 * x + 1];
                out[ch * SS + (size_t)y * S + x] = t0 * yl[2 * y] + t1 * yl[2 * y + 1];
            }
        }
    }
    free(xi), free(yi), free(xl), free(yl), free(norm);
    return 0;
}

/* ---- size probe ------------------------------------------------------------------------------ */

int image_probe_size(const char *path, int *h, int *w) {
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("%s: cannot open: %s", path, strerror(errno));
    uint8_t b[24];
    size_t n = fread(b, 1, sizeof b, f);
    int rc = -1;
    if (n == 24 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
        if (memcmp(b + 12, "IHDR", 4) != 0) { rc = ar_errorf("%s: PNG without IHDR first", path); goto out; }
        uint32_t pw = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
        uint32_t ph = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
        if (pw == 0 || ph == 0 || pw > IMAGE_MAX_SIDE || ph > IMAGE_MAX_SIDE) {
            rc = ar_errorf("%s: PNG size %ux%u out of range", path, (unsigned)pw, (unsigned)ph);
            goto out;
        }
        *h = (int)ph, *w = (int)pw, rc = 0;
        goto out;
    }
    if (n >= 2 && b[0] == 0xFF && b[1] == 0xD8) {
        if (fseek(f, 2, SEEK_SET) != 0) goto trunc;
        for (int seg = 0; seg < 100000; seg++) {
            int c = fgetc(f);
            if (c == EOF) goto trunc;
            if (c != 0xFF) { rc = ar_errorf("%s: JPEG: no marker where one was expected", path); goto out; }
            int m;
            do m = fgetc(f); while (m == 0xFF);
            if (m == EOF) goto trunc;
            if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;   /* no length */
            if (m == 0xD9 || m == 0xDA) { rc = ar_errorf("%s: JPEG without a frame header", path); goto out; }
            uint8_t l[2];
            if (fread(l, 1, 2, f) != 2) goto trunc;
            int len = l[0] << 8 | l[1];
            if (len < 2) { rc = ar_errorf("%s: JPEG segment length %d", path, len); goto out; }
            if ((m >= 0xC0 && m <= 0xCF) && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                uint8_t s[5];
                if (len < 7 || fread(s, 1, 5, f) != 5) goto trunc;
                int jh = s[1] << 8 | s[2], jw = s[3] << 8 | s[4];
                if (jh == 0 || jw == 0) { rc = ar_errorf("%s: JPEG size %dx%d", path, jw, jh); goto out; }
                *h = jh, *w = jw, rc = 0;
                goto out;
            }
            if (fseek(f, len - 2, SEEK_CUR) != 0) goto trunc;
        }
        rc = ar_errorf("%s: JPEG: too many segments", path);
        goto out;
    }
    rc = ar_errorf("%s: not a JPEG or PNG file", path);
    goto out;
trunc:
    rc = ar_errorf("%s: JPEG cut short before its frame header", path);
out:
    fclose(f);
    return rc;
}
