/* data/shapes.h — the "shapes" world: a synthetic referring data set written
 * in the REAL file formats (COCO instances.json, REFER refs(unc).p, an
 * AVSBench S4 tree, custom JSON lines, a tokenizer.json), so the demo and the
 * tests run every loader of data/ on data that needs no download.
 * `anyref data shapes --out DIR [--seed N] [--size tiny|small|medium]
 *  [--images N] [--videos N]` writes it.
 *
 * THE WORLD (all of it a pure function of the seed; every image and video
 * has its own random stream, rng_derive(seed, stream), so changing the
 * counts leaves the other scenes as they were)
 *   images   h x w, each side a multiple of 8 in [min_side, max_side]
 *            (64..128 by default); background: a grey of random level and
 *            tint with a linear gradient and per-pixel noise.
 *   objects  2..4 per image: class (circle, square, triangle, diamond,
 *            star), colour (red, green, blue, yellow, purple, white), size
 *            class (small: scale s in [0.09, 0.13] m, large: [0.19, 0.26] m,
 *            m = min(h, w)), position uniform where the polygon fits in the
 *            image; triangles and stars turned by up to ±17°. Each object is
 *            a polygon (circles: 16..40 vertices) with coordinates rounded to
 *            0.01 px; its mask is that polygon rasterised by pycocotools'
 *            rule (data/rle.h rle_from_poly) and the image is painted from
 *            those masks in order (later objects on top), colour plus ±4
 *            noise: the pixels of an object are exactly its mask except where
 *            a later object covers it. Overlaps are allowed as long as every
 *            object keeps >= 75% of its mask visible; masks (and COCO
 *            polygons) are the whole shape, as in amodal annotation.
 *   crowds   with probability crowd_p an image also gets a cluster of 4..7
 *            small dots (circles of one colour, radius 1.6..2.4 px): one
 *            COCO annotation with iscrowd 1 and an uncompressed RLE, the
 *            union of the dots. Crowds are never referred to, but count as
 *            (small) circles of their colour when expressions are checked.
 *   sentences for each non-crowd object every expression below that is true
 *            of it and of no other object of the image (crowds included),
 *            without a leading article (SPEC 2.4's question already says
 *            "Can you segment the {ref} in this image?"; the answer
 *            "{expr}[SEG]." reads "large red circle[SEG]."):
 *              {size} {colour} {class}   {colour} {class}
 *              {size} {class}            {class}
 *              {colour} shape            {size} {colour} shape
 *              smallest|largest|leftmost|rightmost|highest|lowest shape
 *              smallest|largest|leftmost|rightmost|highest|lowest {class}
 *              {class} left of|right of|above|below the {colour} {class}
 *            Superlatives need a margin over the runner-up (area ratio 1.6,
 *            or 0.12 m in position); a relation "X left of the A" needs the
 *            anchor A to be the only {colour} {class}, the target's centre
 *            at least 0.1 m left of A's with |dx| >= |dy|, and no other
 *            object of the target's class with its centre left of A's at
 *            all (above/below alike with y). A ref keeps 2 or 3 of them
 *            (1 when only one exists; an object with none gets no ref),
 *            drawn so that different kinds come first.
 *   videos   S4 "videos" of 5 frames: 2..3 objects of distinct classes,
 *            each moving by a constant velocity of up to 2.5 px per frame;
 *            one of them "sounds": its category is "<class>_<verb>"
 *            (circle_humming, square_buzzing, triangle_ringing,
 *            diamond_chiming, star_twinkling), its mask is the ground truth,
 *            and the WAV (16 kHz, mono, 16-bit, 5 s) is its class's tone:
 *              circle   sine, 262 Hz        square  odd harmonics 1..9, 196 Hz
 *              triangle triangle wave 330 Hz  diamond two sines 440 and 554 Hz
 *              star     880 Hz sine gated on/off at 6 Hz
 *            each with its pitch moved by up to ±3%, 20 ms fades, amplitude
 *            0.35 and uniform noise of 0.01. These categories are not among
 *            AnyRef's 23 (data/avsbench.h avs_class_name), so the S4 answer
 *            is the plain "it is [SEG]."; the audio alone says which object.
 *
 * ON DISK (DIR = --out)
 *   DIR/refer_seg/refcoco/instances.json   COCO: images (id, file_name,
 *       height, width), annotations (id, image_id, category_id, bbox x y w h
 *       = the polygon's extent, area = rle_area of the rasterised polygon,
 *       iscrowd, segmentation = [[polygon]] or {"size": [h, w], "counts":
 *       [...]} for crowds), categories (id 1..5, name, supercategory "shape")
 *   DIR/refer_seg/refcoco/refs(unc).p      REFER refs, pickle protocol 2
 *       (as Python 2's pickle.dump(refs, f, 2) lays it out, strings as
 *       BINUNICODE, no memo): a list of dicts image_id, split, sentences
 *       [{tokens, raw, sent_id, sent}], file_name
 *       ("COCO_train2014_<image_id:012>_<ref_id>.jpg"), category_id, ann_id,
 *       sent_ids, ref_id; splits train, val, testA, testB (by image: the
 *       first n_train images are train, then val, testA, testB; testA and
 *       testB are drawn alike — unlike RefCOCO's people / objects split)
 *   DIR/refer_seg/images/mscoco/images/train2014/COCO_train2014_<id:012>.jpg
 *       the images, JPEG quality 92 (refer_join_load(DIR/refer_seg,
 *       "refcoco", NULL, split, DIR/refer_seg, REFER_IMAGES_REFER) reads it)
 *   DIR/avsbench/s4_meta_data.csv          name,category,split
 *   DIR/avsbench/s4_data/visual_frames/<split>/<category>/<v>/<v>_<k>.png
 *   DIR/avsbench/s4_data/gt_masks/<split>/<category>/<v>/<v>_<k>.png  grey
 *       0/255; train has frame 1 only, as the release
 *   DIR/avsbench/s4_data/audio_wav/<split>/<category>/<v>.wav   (splits
 *       train, val, test; v = "sv<index:04>")
 *   DIR/custom/shapes.jsonl                data/custom_jsonl.h records over
 *       the train and val images (split train / val), per non-crowd object:
 *       a box reference ("box" = its extent, "polygon", "expression"
 *       "{colour} {class}": answer "red circle[SEG]."), a region caption
 *       ("box", "template": "caption", "expression": "a {size} {colour}
 *       {class}"), and per image at most one image-crop reference
 *       ("ref_image": a crop of an object of the same class from another
 *       image of the same split, "polygon", "expression" "{class}"), for an
 *       object whose class is unique in its image
 *   DIR/custom/crops/crop_<ann_id:06>.png  the crops (RGB PNG)
 *   DIR/tokenizer.json                     a Hugging Face LLaMA-layout BPE
 *       (data/tokenizer.h): <unk> <s> </s>, '▁', '\n' and the printable
 *       ASCII characters, then every word of the world, of the SPEC 2.4
 *       templates and of the llava_v1 system prompt as one '▁word' token,
 *       built by a chain of merges; no byte fallback (other characters are
 *       <unk>). About 430 ids.
 *   DIR/README.md                          what is where, parameters, counts
 *   DIR/shapes.json                        parameters and counts (JSON),
 *       written LAST: its presence means the generation finished
 * Files are written directly (no fsync per file: a few thousand fsyncs
 * would take seconds); an interrupted run leaves no shapes.json.
 *
 * Depends on data/rle.h, data/image.h (encoders), core/rng.h, core/json.h,
 * core/fs.h, core/error.h, core/log.h.
 */
#ifndef ANYREF_DATA_SHAPES_H
#define ANYREF_DATA_SHAPES_H

#include "data/rle.h"

#include <stddef.h>
#include <stdint.h>

#define SHAPES_CLASSES 5
#define SHAPES_COLOURS 6
#define SHAPES_MAX_OBJ 5          /* 4 shapes + a crowd */
#define SHAPES_MAX_V 40           /* polygon vertices */
#define SHAPES_MAX_DOTS 7
#define SHAPES_DOT_V 8            /* vertices of a crowd dot */
#define SHAPES_FRAMES 5
#define SHAPES_AUDIO_RATE 16000
#define SHAPES_AUDIO_SAMPLES (5 * SHAPES_AUDIO_RATE)
#define SHAPES_MAX_EXPR 64        /* expressions of one object */
#define SHAPES_EXPR_LEN 64

typedef struct {
    uint64_t seed;
    int n_train, n_val, n_testA, n_testB;      /* images */
    int v_train, v_val, v_test;                /* S4 videos */
    int min_side, max_side;                    /* image sides (multiples of 8) */
    double crowd_p;                            /* probability of a crowd per image */
    int jpeg_quality;
} shapes_cfg;

/* "tiny" (tests: 16/6/4/4 images, 6/3/3 videos, sides 64..96), "small" (the
 * default: 300/60/40/40 images, 24/6/6 videos, sides 64..128) or "medium"
 * (2000/200/150/150, 120/20/20, 64..160). -1 + ar_error for another name. */
int shapes_cfg_preset(shapes_cfg *c, const char *size);

typedef struct {
    int cls, col, big;         /* class, colour, 1 = large */
    int crowd;                 /* a cluster of dots (iscrowd 1) */
    int nv;                    /* not crowd: the polygon xy[2 nv] */
    double xy[2 * SHAPES_MAX_V];
    int n_dots;                /* crowd: dots[k][2 SHAPES_DOT_V] */
    double dots[SHAPES_MAX_DOTS][2 * SHAPES_DOT_V];
    rle_mask mask;             /* h x w: the polygon (crowd: union of the dots) */
    uint32_t area;             /* rle_area(mask) */
    double bbox[4];            /* x, y, w, h: the polygon's extent (crowd: rle_to_bbox) */
    double cx, cy;             /* centre of bbox */
} shapes_object;

typedef struct {
    int h, w, n;
    shapes_object obj[SHAPES_MAX_OBJ];
    uint8_t *px;               /* [h, w, 3] the rendered image */
} shapes_scene;

/* Class / colour names and colours. */
const char *shapes_class_name(int cls);
const char *shapes_colour_name(int col);
const uint8_t *shapes_colour_rgb(int col);
/* "circle_humming", ... (the S4 category of a class). */
const char *shapes_avs_category(int cls);

/* The split of image i ("train", "val", "testA", "testB"), and the number of
 * images. Image i has COCO id i + 1. */
int shapes_n_images(const shapes_cfg *c);
const char *shapes_image_split(const shapes_cfg *c, int i);
/* Image i's scene, rendered. 0, or -1 + ar_error. */
int shapes_scene_make(const shapes_cfg *c, int i, shapes_scene *s);
void shapes_scene_free(shapes_scene *s);
/* The expressions true of object k of s and of no other object (SENTENCES
 * above), in a fixed order: n written into out (at most max). */
int shapes_expressions(const shapes_scene *s, int k, char out[][SHAPES_EXPR_LEN], int max);

typedef struct {
    int sounding;              /* index of the sounding object */
    int cls;                   /* its class */
    shapes_scene frame[SHAPES_FRAMES];
    int16_t pcm[SHAPES_AUDIO_SAMPLES];
} shapes_video;
int shapes_n_videos(const shapes_cfg *c);
const char *shapes_video_split(const shapes_cfg *c, int v);   /* "train", "val", "test" */
/* Video v (frames rendered, audio synthesised). 0, or -1 + ar_error. */
int shapes_video_make(const shapes_cfg *c, int v, shapes_video *out);
void shapes_video_free(shapes_video *v);

typedef struct {
    int images[4];             /* per split: train, val, testA, testB */
    int anns, crowds;
    int refs[4], sents[4];
    int objects_without_ref;
    int videos[3];             /* train, val, test */
    int jsonl_box, jsonl_caption, jsonl_crop;
    int vocab;
    int files;
    double bytes;
    double seconds;
} shapes_stats;

/* Writes the whole world under dir (created). st may be NULL. 0, or -1 +
 * ar_error naming the file. */
int shapes_generate(const char *dir, const shapes_cfg *c, shapes_stats *st);

/* `anyref data shapes --out DIR [--seed N] [--size tiny|small|medium]
 *  [--images N] [--videos N]`; argv[0] is "shapes". --images N sets the
 * training images (val N/5, testA and testB 2N/15 each, at least 2), --videos
 * N the training videos (val and test N/4, at least 2). Exit status. */
int shapes_main(int argc, char **argv);

#endif
