/* data/samples.h — the text side of a training sample: one record of a
 * referring data set (REFER join, AVSBench, custom JSON lines) turned into
 * the question and answer of SPEC 2.4, the reference kind and box, the image
 * file and size, and the area of each ground-truth mask. `anyref data
 * inspect` (train/inspect_cmd.h) prints these; the live loader (data/loader.h)
 * builds its training tensors from the same samples.
 *
 * TEMPLATES (sample_options, defaults from sample_options_default; "{ref}"
 * and "{expr}" are replaced by the reference text and the expression):
 *   question = image_token + "\n" + one of
 *     q_seg      "Can you segment the {ref} in this image?"         text / box / image reference, segmentation
 *     q_audio    "Can you segment object with the following audio {ref} in this image?"   audio, segmentation
 *     q_caption  "Can you provide a description of the region {ref} in this image?"      region captioning
 *   answer =
 *     a_seg       "{expr}[SEG]."    or   a_seg_plain "It is [SEG]."  (segmentation)
 *     a_caption   "{expr}."                                           (captioning; no mask)
 *   {ref} of a box or image reference is image_ref_start + image_ref_end
 *   ("<img_ref_start><img_ref_end>": the feature tokens go between them later),
 *   of an audio reference audio_ref_start + audio_ref_end; of a text
 *   reference the text itself.
 *
 * PER DATA SET
 *   REFER (sample_from_refer), record i of a refer_join:
 *     seg:     a sentence s of the ref, question q_seg with {ref} = s, answer
 *              a_seg with {expr} = s or a_seg_plain; the ref's mask.
 *     caption: box reference (the ann's bbox, as x0 y0 x1 y1), question
 *              q_caption, answer a_caption with {expr} = a sentence; no mask.
 *   AVSBench (sample_from_avs), sample i as avs_sample defines it (record,
 *     frame): audio reference, question q_audio; answer a_seg with {expr} =
 *     avs_class_name(category) for S4 (a_avs_plain for a category outside
 *     AnyRef's 23), a_avs_plain for MS3 (AnyRef's lower-case "it is [SEG]."); the frame's mask (decoded:
 *     avs_load_mask). Image = the frame, its size read from the file header.
 *   Custom JSON lines (sample_from_custom), record i:
 *     literal question/answer: kept as is (image_token + "\n" is put before
 *              the question unless it already holds image_token);
 *     "seg":   text -> q_seg with {ref} = text; box / ref_image -> q_seg with
 *              the image marker; audio -> q_audio. Answer a_seg with {expr} =
 *              the record's expression (else the text, for a text reference)
 *              or a_seg_plain; a record with neither gets a_seg_plain;
 *     "caption": q_caption with {ref} = the text or the marker, answer
 *              a_caption with {expr} = the expression.
 *     Its mask, when it has one (cj_record_mask), for every kind.
 * CHOICES: which sentence and which of a_seg / a_seg_plain (probability
 *   plain_p of the plain one) are drawn from an
 *   ar_rng seeded with rng_derive(seed, i) (i = the record index, or the
 *   AVSBench sample index): the same seed gives the same samples.
 *
 * Errors (a mask or image that cannot be read): -1 + ar_error naming the
 * file; the caller skips and counts the sample.
 *
 * Depends on data/refer_samples.h, data/avsbench.h, data/custom_jsonl.h,
 * data/image.h, data/rle.h, core/rng.h, core/json.h, core/error.h.
 */
#ifndef ANYREF_DATA_SAMPLES_H
#define ANYREF_DATA_SAMPLES_H

#include "data/avsbench.h"
#include "data/custom_jsonl.h"
#include "data/refer_samples.h"

#include <stdint.h>
#include <stdio.h>

typedef enum { SAMPLE_REF_TEXT, SAMPLE_REF_BOX, SAMPLE_REF_IMAGE, SAMPLE_REF_AUDIO } sample_ref;

typedef struct {
    uint64_t seed;
    const char *image_token;                      /* "<image>" */
    const char *image_ref_start, *image_ref_end;  /* "<img_ref_start>", "<img_ref_end>" */
    const char *audio_ref_start, *audio_ref_end;  /* "<audio_ref_start>", "<audio_ref_end>" */
    const char *q_seg, *q_audio, *q_caption;      /* TEMPLATES above */
    const char *a_seg, *a_seg_plain, *a_caption;
    const char *a_avs_plain;   /* AVSBench without a class: "it is [SEG]." (AnyRef utils/avsbench.py) */
    double plain_p;            /* probability of a_seg_plain where a_seg could be used
                                  (default 0.5: LISA's and AnyRef's coin) */
    int no_mask_area;          /* 1: leave mask_area 0 instead of decoding the masks (the
                                  loader decodes them itself; n_masks is still set) */
} sample_options;

#define SAMPLE_MAX_MASKS 4

typedef struct {
    char dataset[64];
    char *split, *image;            /* malloc'd */
    int height, width;
    char *question, *answer;        /* malloc'd */
    sample_ref ref;
    int has_box;
    double box[4];                  /* x0, y0, x1, y1 (pixels) when has_box */
    int n_masks;
    uint64_t mask_area[SAMPLE_MAX_MASKS];   /* pixels set in each ground-truth mask */
    size_t record;                  /* index of the record in its set */
    int frame;                      /* AVSBench: 0-based frame; -1 otherwise */
} ar_sample;

void sample_options_default(sample_options *o);
/* "text", "box", "image", "audio". */
const char *sample_ref_name(sample_ref r);
void ar_sample_free(ar_sample *s);   /* frees and zeroes; NULL ok */

/* Record i of j (caption = 0: segmentation, 1: region captioning). */
int sample_from_refer(const refer_join *j, size_t i, int caption, const sample_options *o, ar_sample *out);
/* The same with sentence `sent` of the ref (0..n_sentences-1) instead of a
 * seeded one (-1: seeded, = sample_from_refer). */
int sample_from_refer_sentence(const refer_join *j, size_t i, int sent, int caption, const sample_options *o,
                               ar_sample *out);
/* Sample i (< avs_num_samples(s)). */
int sample_from_avs(const avs_set *s, size_t i, const sample_options *o, ar_sample *out);
/* Record i of ds (its mask and image size may be filled in on the record);
 * dataset names the set in the output. */
int sample_from_custom(cj_dataset *ds, size_t i, const char *dataset, const sample_options *o, ar_sample *out);

/* One JSON line (see train/inspect_cmd.h); tokens < 0 prints null. 0 or -1 + ar_error. */
int sample_write_json(FILE *f, const ar_sample *s, long tokens);

#endif
