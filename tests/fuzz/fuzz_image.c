/* tests/fuzz/fuzz_image.c — libFuzzer target for data/image.c (JPEG through
 * libjpeg-turbo, PNG through libpng, behind our setjmp/longjmp handlers).
 *
 * Decodes the input in both modes under a 1 M pixel limit (so that a forged
 * header cannot make every run allocate gigabytes), and checks properties:
 * a failed decode leaves the image zeroed with a message; a successful one
 * has a positive size within the limit, the channel count of its mode, and
 * the same size in both modes. A successful RGB decode is also resized
 * (Pillow bilinear and bicubic) to a small size derived from the input.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_image -max_total_time=60 tests/fixtures/images
 */
#include "data/image.h"
#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator.
 * Weak, so a build that also links kernels/cpu/mem.c uses the real one. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

#define LIMIT ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ar_image rgb, raw;
    const int a = image_decode_limit(&rgb, data, size, IMAGE_RGB, "fuzz", LIMIT);
    if (a < 0) {
        if (rgb.px || rgb.h || rgb.w || !ar_error()[0]) __builtin_trap();
    } else {
        if (rgb.h <= 0 || rgb.w <= 0 || rgb.c != 3 || !rgb.px || (size_t)rgb.h * rgb.w > LIMIT) __builtin_trap();
        /* touch every byte (ASan/MSan see uninitialised or short buffers) */
        unsigned sum = 0;
        for (size_t i = 0; i < (size_t)rgb.h * rgb.w * 3; i++) sum += rgb.px[i];
        (void)sum;
        ar_image r;
        const int oh = 1 + (int)(size % 23), ow = 1 + (int)(size % 17);
        if (image_resize(&r, &rgb, oh, ow, (size & 1) ? IMAGE_BICUBIC : IMAGE_BILINEAR) != 0) __builtin_trap();
        image_free(&r);
    }
    const int b = image_decode_limit(&raw, data, size, IMAGE_GRAY_RAW, "fuzz", LIMIT);
    if (b == 0) {
        if (raw.c != 1 || !raw.px || raw.h <= 0 || raw.w <= 0) __builtin_trap();
        if (a == 0 && (raw.h != rgb.h || raw.w != rgb.w)) __builtin_trap();
        image_free(&raw);
    }
    if (a == 0) image_free(&rgb);
    return 0;
}
