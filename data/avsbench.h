/* data/avsbench.h — AVSBench (Zhou et al. 2022, OpenNLPLab/AVSBench) S4
 * (single source) and MS3 (multiple sources) as released, and the samples
 * AnyRef builds from them (jwh97nn/AnyRef utils/avsbench.py).
 *
 * Depends on data/csv.h, data/image.h, data/wav.h, data/fbank.h,
 * core/error.h, core/log.h.
 *
 * ON DISK (root = the directory holding the CSV, e.g. .../Single-source)
 *   S4   <root>/s4_meta_data.csv   columns by header name: "name" (or
 *                                  "video_id"), "category", "split"
 *        frames <root>/s4_data/visual_frames/<split>/<category>/<v>/<v>_<k>.png
 *        masks  <root>/s4_data/gt_masks/<split>/<category>/<v>/<v>_<k>.png
 *        audio  <root>/s4_data/audio_wav/<split>/<category>/<v>.wav
 *        k = 1..5. The train split has the mask of frame 1 only (the official
 *        loader's mask_num = 1 for train): mask[1..4] are NULL there.
 *   MS3  <root>/ms3_meta_data.csv  columns: "video_id" (or "name"), "split";
 *                                  "category" is read when present
 *        frames <root>/ms3_data/visual_frames/<v>/<v>.mp4_<k>.png  (NO split
 *               directory, and ".mp4" kept in the name, as the release and
 *               both loaders have it)
 *        masks  <root>/ms3_data/gt_masks/<split>/<v>/<v>_<k>.png  (all 5)
 *        audio  <root>/ms3_data/audio_wav/<split>/<v>.wav
 *   The official loaders read the CSV by position (column 0 = name, column
 *   2 = category); here columns are found by header name, and a missing one
 *   is an error naming the file and the column.
 *   ALTERNATIVE LAYOUT: AnyRef (original_resolution=True, its default) reads
 *   frames from "visual_frames_original_resolution" instead of
 *   "visual_frames" (frames it re-extracted at full size; same names); set
 *   avs_layout.frames_subdir to it. Masks and audio are the same.
 *
 * RECORDS: the CSV rows whose split equals the requested one, in file order.
 *   A row with an empty name (or an empty S4 category), or a name/category
 *   holding '/', '\\' or equal to "." / "..", is skipped, counted in
 *   n_bad_rows and warned with its CSV line. Malformed CSV lines: see
 *   data/csv.h (n_skipped_lines). Files are NOT opened by avs_load: a missing
 *   or broken frame, mask or WAV is reported by the load call of that file
 *   (an error naming it), and avs_validate checks a whole record for a loader
 *   that skips and counts.
 *
 * MASKS (avs_load_mask: out c = 1, values 0 or 1), as the loaders binarise:
 *   S4  Image.open(m).convert("1") then np.array -> 0/1 (both the official
 *       loader and AnyRef). Pillow 9.4 does this by source mode:
 *         palette PNG  -> p2bit: 1 where the palette colour's luminance
 *                         299 R + 587 G + 114 B >= 128000 (no dithering);
 *         everything else (grey, grey+alpha, RGB, RGBA, JPEG) -> Floyd-
 *                         Steinberg dithering (Pillow's tobilevel) of the
 *                         luminance L = (299 R + 587 G + 114 B) / 1000 (the
 *                         grey value itself for grey images), pixel set when
 *                         the diffused value > 128.
 *       For masks holding only 0 and 255 (the release's) this is value != 0;
 *       the dithering matters only for in-between values, and is reproduced.
 *       16-bit grey PNGs keep their high byte (data/image.h), where Pillow
 *       clamps mode "I" to 255 first.
 *   MS3 Image.open(m).convert("P") then != 0 (AnyRef; the official loader
 *       uses the same "P" image as a float tensor):
 *         palette PNG  -> 1 where the palette INDEX != 0;
 *         grey (and grey+alpha) -> 1 where the grey value != 0 (Pillow maps L
 *                         to P through the identity grey palette);
 *         RGB / RGBA / colour JPEG -> 1 where any channel != 0. Pillow would
 *                         dither onto its 216-colour web palette; that is NOT
 *                         reproduced (the release has no such masks).
 *
 * FRAMES (avs_load_frame): RGB as PIL's convert("RGB") (data/image.h). AnyRef
 *   reads them with cv2.imread + BGR2RGB, which gives the same pixels for the
 *   8-bit RGB PNGs of the release.
 *
 * AUDIO (avs_load_audio): AnyRef's load_and_transform_audio_data on the whole
 *   <v>.wav (5 s at 16 kHz in the release): ar_audio_clips with ImageBind's
 *   options, out [3, 1, 128, 204] float32. The same audio serves every frame
 *   of the video (AnyRef does not cut per-frame 1 s segments; the official
 *   AVS models' per-second VGGish log-mels are not used).
 *
 * SAMPLES (avs_num_samples / avs_sample, AnyRef's __len__ / __getitem__):
 *   S4 train: one sample per video, frame 1 (its only mask);
 *   S4 val/test and MS3 (every split): five per video, sample i is video
 *   i / 5, frame i % 5 + 1.
 *   Answers: S4 "<class>[SEG]." with AnyRef's avs_category_to_class name of
 *   the category (avs_class_name); MS3 "it is [SEG]." (no class).
 */
#ifndef ANYREF_DATA_AVSBENCH_H
#define ANYREF_DATA_AVSBENCH_H

#include "data/csv.h"
#include "data/fbank.h"
#include "data/image.h"

#include <stddef.h>

#define AVS_FRAMES 5
#define AVS_MAX_WARNINGS 10
/* floats of one avs_load_audio output: 3 x 1 x 128 x 204 */
#define AVS_AUDIO_CLIPS 3
#define AVS_AUDIO_BINS 128
#define AVS_AUDIO_FRAMES 204
#define AVS_AUDIO_FLOATS ((size_t)AVS_AUDIO_CLIPS * AVS_AUDIO_BINS * AVS_AUDIO_FRAMES)

typedef enum { AVS_S4 = 0, AVS_MS3 = 1 } avs_subset;

typedef struct {
    avs_subset subset;
    const char *video;             /* the name column */
    const char *category;          /* S4: always; MS3: NULL without a category column */
    const char *split;
    size_t csv_line;               /* physical line of the row in the CSV */
    char *frame[AVS_FRAMES];       /* paths of frames 1..5 */
    char *mask[AVS_FRAMES];        /* paths, NULL where the release has no mask */
    char *wav;
} avs_record;

/* Directory names under root; NULL fields take the defaults of the subset. */
typedef struct {
    const char *csv_file;          /* "s4_meta_data.csv" / "ms3_meta_data.csv" */
    const char *data_subdir;       /* "s4_data" / "ms3_data" */
    const char *frames_subdir;     /* "visual_frames" (AnyRef: "visual_frames_original_resolution") */
    const char *masks_subdir;      /* "gt_masks" */
    const char *audio_subdir;      /* "audio_wav" */
} avs_layout;

typedef struct {
    avs_subset subset;
    char split[8];
    avs_record *records;           /* n_records, CSV order */
    size_t n_records;
    size_t n_csv_rows;             /* well-formed CSV rows, all splits */
    size_t n_bad_rows;             /* rows of this split skipped (bad name/category) */
    size_t n_skipped_lines;        /* malformed CSV records (data/csv.h) */
    const size_t *skipped_lines;   /* their line numbers */
    /* private */
    ar_csv *csv;
} avs_set;

/* subset "s4" or "ms3"; split "train", "val" or "test"; layout may be NULL.
 * NULL + ar_error on a bad argument, an unreadable or malformed CSV, or a
 * missing column ("csv <file>: no column ..."). */
avs_set *avs_load(const char *root, const char *subset, const char *split, const avs_layout *layout);
void     avs_free(avs_set *s);     /* NULL is fine */

/* Frame k (0-based: k = 0 is <v>_1.png) as RGB. 0, or -1 + ar_error naming the file. */
int avs_load_frame(const avs_record *r, int k, ar_image *out);
/* Mask k as out (c = 1, values 0/1, see MASKS). -1 + ar_error naming the
 * file when it is missing or broken, or "no mask for frame k" when the
 * release has none (mask[k] == NULL). */
int avs_load_mask(const avs_record *r, int k, ar_image *out);
/* The binarisation of MASKS on an already decoded image: rgb is the IMAGE_RGB
 * decode (c = 3) of a file whose PNG colour type was png_color_type (3 =
 * palette, 0/4 grey, 2/6 colour; -1 for JPEG), raw its IMAGE_GRAY_RAW decode
 * (needed by MS3 only, may be NULL for S4). out->px[h*w] 0/1. 0 or -1. */
int avs_binarise(avs_subset subset, const ar_image *rgb, const ar_image *raw, int png_color_type, ar_image *out);
/* out[AVS_AUDIO_FLOATS] = the ImageBind input of the record's WAV. fb: an
 * ImageBind fbank (ar_fbank_opts_imagebind; one per thread) or NULL (one made
 * per call).
 * 0, or -1 + ar_error naming the file. */
int avs_load_audio(const avs_record *r, ar_fbank *fb, float *out);
/* Decodes every frame, every present mask and the audio of r: 0 when all are
 * present and decodable, else -1 + the first load's error. */
int avs_validate(const avs_record *r, ar_fbank *fb);

/* AnyRef's class name of an S4 category ("mynah_bird_singing" -> "bird"), or
 * NULL for a category outside its 23. */
const char *avs_class_name(const char *category);
/* AnyRef's sample count and sample i -> (record index, 0-based frame). */
size_t avs_num_samples(const avs_set *s);
int    avs_sample(const avs_set *s, size_t i, size_t *record, int *frame);

#endif
