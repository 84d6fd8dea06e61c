/* data/planted.h — "planted": a synthetic referring-segmentation data set in
 * the grounding HDF5 format (data/grounding_dataset.h), for training and
 * testing the AnyRef step before the image encoders exist.
 *
 * Each image is a random SAM image embedding [C, G, G] (normal, std 1). The
 * object "c_k" of an image is where channel k (k < K) of its embedding is
 * positive, seen through SAM's geometry: pixel (y, x) of an H0 x W0 original
 * lies in the resized image of (rh, rw) = ResizeLongestSide(H0, W0, S) at
 * ((y + 0.5) rh / H0, (x + 0.5) rw / W0), i.e. in grid cell (floor(./16),
 * floor(./16)) of the S = 16 G padded frame. The mask of c_k is 1 where that
 * cell's channel k is > 0. So a mask depends on the image (the embedding) and
 * on the text (which k), and the [SEG] embedding must carry k to the decoder.
 *
 * Vocabulary (ids): 0 <pad>, 1 <s>, 2 </s>, 3 [SEG], 4 "segment", 5
 * "describe", 6 "and", 7 .. 7+K-1 the object words c_0 .. c_{K-1}.
 * Samples (prompt | answer, the answer and </s> supervised):
 *   one object   <s> segment c_i        | c_i [SEG] </s>            (50%)
 *   two objects  <s> segment c_i and c_j | c_i [SEG] c_j [SEG] </s>  (25%)
 *   no mask      <s> describe c_i       | c_i c_i </s>              (25%)
 * Original sizes are uniform in [S/2, S] per side; one sample in four has its
 * masks at another size (uniform in [S/4, S/2] per side: the AVSBench variant).
 * T = 12 tokens, right-padded with <pad>.
 *
 * With clip_S > 0 the file also exercises images and references as tokens
 * (data/grounding_dataset.h, model/references.h): random CLIP inputs [3, S, S]
 * per image and, after the object words, <image> (id 7+K) in every prompt;
 * markers im_start 8+K, im_end 9+K, ref_start 10+K, ref_end 11+K, audio_start
 * 12+K, audio_end 13+K. One sample in four carries a box reference (random box
 * on its image), one in eight an image-crop reference (random crop pixels) and,
 * with fbank_h/w > 0, one in eight an audio reference (random fbank of 3
 * clips), each as a marker pair before the answer. The references carry no
 * information about the answer here: they test the machinery (splicing,
 * encoders, projector gradients, the feature cache), not learning.
 * T = 16 then. */
#ifndef ANYREF_DATA_PLANTED_H
#define ANYREF_DATA_PLANTED_H
#include <stdint.h>

enum { PLANTED_VOCAB_BASE = 7, PLANTED_SEG = 3, PLANTED_T = 12, PLANTED_T_MM = 16, PLANTED_MARKERS = 7 };

typedef struct {
    int C, G, K;          /* embedding channels and grid; object words (K <= C) */
    int64_t n;            /* samples (one image each) */
    uint64_t seed;
    int clip_S;           /* > 0: CLIP inputs and references (above) */
    int fbank_h, fbank_w; /* > 0 with clip_S: audio references too */
    int sam_pixels;       /* 1: also random SAM encoder inputs [3, 16G, 16G] per image
                             (/sam_pixels: exercises sam_encoder.*; the masks stay
                             defined by the stored embeddings) */
} planted_cfg;

/* Writes one file. 0, or -1 + ar_error. */
int planted_write(const char *path, const planted_cfg *c);
/* `anyref data planted --out DIR [--seed N] [--dim C] [--grid G] [--objects K]
 *  [--train N] [--val N] [--clip S] [--fbank HxW] [--sam]`: DIR/train.h5 and DIR/val.h5. argv[0] is "planted".
 * Returns the exit status (0, 1 error, 2 usage). */
int planted_main(int argc, char **argv);
#endif
