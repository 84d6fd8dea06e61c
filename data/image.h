/* data/image.h — image decoding (JPEG, PNG), a PNG writer, and the resizes
 * and normalisations of the official preprocessing, matching Debian's
 * python3-pil (Pillow 9.4) and PyTorch pixel for pixel.
 *
 * IMAGES
 *   ar_image holds h rows of w pixels of c interleaved 8-bit channels:
 *   px[(y * w + x) * c + ch], c = 3 (RGB) or 1 (one channel). px is
 *   malloc'd by the decoders and resizes; image_free() releases it.
 *
 * DECODING (by content: the magic bytes decide, never the file name)
 *   JPEG through libjpeg-turbo, PNG through libpng. A file cut short
 *   anywhere is refused, as Pillow refuses a cut JPEG (even one missing only
 *   its EOI marker); a PNG cut after its image data (IEND missing) is
 *   refused too, where Pillow 9.4 accepts it. PNG chunk CRCs are checked as libpng does (critical
 *   chunks: an error; a damaged ancillary chunk is skipped). Errors of either library
 *   come back through setjmp/longjmp handlers as -1 + ar_error() naming the
 *   file and the problem; nothing is printed, nothing exits. Sizes are checked
 *   against IMAGE_MAX_SIDE / IMAGE_MAX_PIXELS (or the caller's limit) before
 *   the pixels are allocated.
 *
 *   IMAGE_RGB: what PIL's Image.open(f).convert("RGB") gives —
 *     JPEG  greyscale replicated, YCbCr/RGB as libjpeg-turbo decodes them
 *           (islow IDCT, fancy upsampling: PIL's settings, bit-exact), CMYK
 *           and YCCK inverted (PIL assumes Adobe's convention) and mapped as
 *           PIL's cmyk2rgb: c' = 255-c, k' = 255-k, r = k'-(c'k'/255 rounded).
 *           A JPEG cut short is an error (PIL: "image file is truncated");
 *           other libjpeg warnings (extraneous bytes, …) are ignored as PIL
 *           ignores them.
 *     PNG   grey (1/2/4-bit scaled to 0..255 as PIL does), palette (tRNS
 *           ignored: the palette colour), grey+alpha and RGBA (alpha dropped,
 *           not composited), RGB; interlaced too. gAMA/iCCP/sRGB are ignored
 *           (PIL ignores them too).
 *           16-bit samples keep their HIGH byte. That is exactly what PIL does
 *           for 16-bit RGB, RGBA and grey+alpha (rawmodes RGB;16B, RGBA;16B,
 *           LA;16B) and what OpenCV's imread (used by AnyRef's loaders) does
 *           for every 16-bit PNG. PIL itself opens 16-bit GREY as mode "I"
 *           and its convert("RGB") CLAMPS (values > 255 become 255, a Pillow
 *           quirk); we keep the high byte there too, deliberately.
 *     EXIF orientation is ignored (as PIL without ImageOps.exif_transpose,
 *     and as the COCO annotations assume; OpenCV's imread would rotate).
 *   IMAGE_GRAY_RAW: one channel, for masks —
 *     PNG palette: the palette INDEX (PIL mode "P" values, any bit depth);
 *     PNG grey: the grey value (1/2/4-bit scaled as above, 16-bit high byte),
 *     alpha dropped; PNG RGB/RGBA and colour JPEG: PIL's convert("L")
 *     (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16); grey JPEG: its
 *     value. out->palette says whether the values are palette indices.
 *
 * RESIZING (Pillow's Image.resize, exact)
 *   image_resize reproduces Pillow's ImagingResample for 8-bit images:
 *   separable, horizontal pass first (into an 8-bit intermediate holding only
 *   the rows the vertical pass reads), filter support scaled by the
 *   downscale factor (antialiasing), coefficients normalised in double and
 *   rounded to 22-bit fixed point, accumulation from 1 << 21, clamp to 0..255.
 *   An axis whose size does not change is copied, not filtered; an image of
 *   the requested size is copied. Verified equal (max abs diff 0) to PIL 9.4
 *   by tests/test_image.c.
 *
 * PREPROCESSING
 *   SAM (segment_anything ResizeLongestSide.apply_image + Sam.preprocess):
 *     the longest side to S with get_preprocess_shape's int(x * scale + 0.5),
 *     torchvision's resize of a PIL image = PIL BILINEAR (antialiased), then
 *     ((float)v - mean) / std in float32 with mean (123.675, 116.28, 103.53),
 *     std (58.395, 57.12, 57.375), zero padding bottom/right to S x S.
 *   CLIP (transformers CLIPImageProcessor, openai/clip-vit-large-patch14):
 *     shortest side to S (long side int(S * long / short)), PIL BICUBIC on
 *     the uint8 image (no resize when the short side already is S), centre
 *     crop S x S with top = (H - S) // 2, left = (W - S) // 2, then
 *     x = float32(v * (1/255 in double)), (x - mean) / std in float32.
 *   clip_resize_wo_crop (AnyRef's default; utils/refer_seg.py, avsbench.py
 *     and the others): the same CLIPImageProcessor with do_center_crop =
 *     False, i.e. the normalised [3, H', W'] shortest-side resize, then
 *     torch.nn.functional.interpolate(size=(S, S), mode="bilinear",
 *     align_corners=False) — no antialias — on the float32 values. (Not a
 *     one-step resize of the whole image; the bicubic pass comes first.)
 *
 * WRITING: image_write_png / image_write_jpeg (atomic: a temporary file made
 * the real one when complete), image_encode_png / image_encode_jpeg (memory).
 *
 * Depends on core/error.h, libjpeg-turbo (-ljpeg) and libpng (-lpng16).
 */
#ifndef ANYREF_DATA_IMAGE_H
#define ANYREF_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAX_SIDE 65500                     /* JPEG's own limit */
#define IMAGE_MAX_PIXELS ((size_t)1 << 28)       /* 268 M pixels (~805 MB RGB) */

typedef struct {
    int h, w, c;      /* c = 3 (RGB) or 1 */
    int palette;      /* IMAGE_GRAY_RAW: 1 when px are palette indices */
    uint8_t *px;      /* [h, w, c], malloc'd */
} ar_image;

typedef enum { IMAGE_RGB = 0, IMAGE_GRAY_RAW = 1 } image_mode;

/* What the magic bytes say: "jpeg", "png" or NULL (unknown / too short). */
const char *image_format(const void *buf, size_t len);

/* Decodes buf[len] into *out (fields set, px malloc'd). name is used in error
 * messages only (a path, or "<memory>"). Returns 0, or -1 + ar_error() with
 * *out zeroed. */
int image_decode(ar_image *out, const void *buf, size_t len, image_mode mode, const char *name);
/* The same with a pixel-count limit of the caller's (0 = IMAGE_MAX_PIXELS). */
int image_decode_limit(ar_image *out, const void *buf, size_t len, image_mode mode, const char *name,
                       size_t max_pixels);
/* Reads the whole file and decodes it. */
int image_load(ar_image *out, const char *path, image_mode mode);
void image_free(ar_image *im);

/* Writes an 8-bit PNG of px[h, w, c] (c = 1 grey, 3 RGB) to path, through a
 * temporary file made the real one only when complete. 0, or -1 + ar_error. */
int image_write_png(const char *path, const uint8_t *px, int h, int w, int c);
/* The same for a baseline JPEG (libjpeg-turbo's defaults: 4:2:0 chroma
 * subsampling for RGB, islow DCT, optimised Huffman tables off) of the given
 * quality (1..100), through a temporary file. 0, or -1 + ar_error. */
int image_write_jpeg(const char *path, const uint8_t *px, int h, int w, int c, int quality);
/* The encoded file bytes in memory (*out malloc'd, *len bytes; the caller
 * frees), for writers that manage their own files (data/shapes.c writes
 * hundreds and does not fsync each). Same encodings as the writers above.
 * 0, or -1 + ar_error. */
int image_encode_jpeg(const uint8_t *px, int h, int w, int c, int quality, uint8_t **out, size_t *len);
int image_encode_png(const uint8_t *px, int h, int w, int c, uint8_t **out, size_t *len);

/* Pillow's resample filters, numbered as PIL numbers them. */
typedef enum { IMAGE_BILINEAR = 2, IMAGE_BICUBIC = 3 } image_filter;

/* dst[oh, ow, c] = PIL Image.resize((ow, oh), filter) of src[h, w, c]
 * (c = 1..4). Allocates only temporary rows/coefficients. 0, or -1 + ar_error. */
int image_resize_u8(uint8_t *dst, int oh, int ow, const uint8_t *src, int h, int w, int c, image_filter f);
/* The same into a new image (out->px malloc'd). */
int image_resize(ar_image *out, const ar_image *in, int oh, int ow, image_filter f);

/* SAM's get_preprocess_shape: longest side to S, int(x * S / max(h, w) + 0.5). */
void image_sam_shape(int h, int w, int S, int *oh, int *ow);
/* out[3, S, S] float32 = SAM's input for an RGB image (see PREPROCESSING).
 * *rh, *rw (may be NULL) receive the resized, unpadded size. 0 or -1. */
int image_sam_preprocess(float *out, const ar_image *rgb, int S, int *rh, int *rw);

/* CLIPImageProcessor's shortest-side size: *oh, *ow for an h x w image. */
void image_clip_shape(int h, int w, int S, int *oh, int *ow);
/* out[3, S, S] float32 = the CLIP tower's input for an RGB image:
 * center_crop = 1: CLIPImageProcessor (shortest side, bicubic, centre crop);
 * center_crop = 0: AnyRef's clip_resize_wo_crop. 0 or -1 + ar_error. */
int image_clip_preprocess(float *out, const ar_image *rgb, int S, int center_crop);

/* The size of a JPEG or PNG file from its header alone (PNG: IHDR; JPEG: the
 * first SOFn marker, segments skipped by their lengths), without decoding:
 * *h, *w. Cheap (a few reads); the file may still fail to decode. 0, or -1 +
 * ar_error naming the file (unreadable, unknown format, no size found). */
int image_probe_size(const char *path, int *h, int *w);

#endif
