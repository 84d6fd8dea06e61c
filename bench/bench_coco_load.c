/* bench/bench_coco_load.c — load time of a COCO instances file (data/coco.c)
 * and the rate of annToRLE (polygon rasterisation + merge, crowd RLEs).
 *
 * Writes a synthetic instances file of about --mb megabytes (COCO-like:
 * 640x480-class images, 1-12 annotations each, 1-2 polygons of 3-60 points
 * with two-decimal coordinates, 1% crowd masks as uncompressed RLE,
 * COCO's extra image fields) unless --file names an existing one, then
 * prints one line per timed load and a result line:
 *   result mb=.. images=.. anns=.. load_s=<median> load_s_best=.. load_cpu_s=<median>
 *          mb_per_s=.. to_rle_per_s=.. to_rle_per_cpu_s=.. peak_rss_mib=..
 * (cpu_s: process CPU time, steadier than wall time on a shared machine). The
 * synthetic polygons are random points in a box (self-intersecting, with
 * long edges), much slower to rasterise than COCO's outlines.
 *
 *   bench_coco_load [--mb=100] [--reps=3] [--file=PATH] [--keep]
 * Depends on data/coco.h, core/ (error, timer). Not part of `make bench`;
 * build by hand after `make`:
 *   cc -O3 -march=native -std=gnu11 -fopenmp -I. bench/bench_coco_load.c build/libanyref.a -o build/bench/bench_coco_load \
 *      -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 -lz -lm -fopenmp \
 *      -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas */
#include "core/error.h"
#include "core/timer.h"
#include "data/coco.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(double lo, double hi) { return lo + (hi - lo) * (double)(rnd() >> 11) / 9007199254740992.0; }
static int irand(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

static int write_file(const char *path, double mb) {
    FILE *f = fopen(path, "w");
    if (!f) return ar_errorf("cannot write %s", path);
    const size_t target = (size_t)(mb * 1e6);
    static const int sizes[4][2] = {{480, 640}, {427, 640}, {640, 480}, {375, 500}};
    /* annotations first into a second stream, images as they come */
    char *abuf = NULL;
    size_t alen = 0;
    FILE *a = open_memstream(&abuf, &alen);
    fputs("{\"info\": {\"description\": \"synthetic\"}, \"licenses\": [{\"url\": \"x\", \"id\": 1, \"name\": \"l\"}], \"images\": [", f);
    long aid = 1;
    for (long img = 1;; img++) {
        fflush(a);
        if ((size_t)ftell(f) + alen > target) break;
        const int *s = sizes[rnd() % 4];
        int h = s[0], w = s[1];
        fprintf(f, "%s{\"license\": 1, \"file_name\": \"COCO_train2014_%012ld.jpg\", \"coco_url\": "
                   "\"http://images.cocodataset.org/train2014/COCO_train2014_%012ld.jpg\", \"height\": %d, \"width\": %d, "
                   "\"date_captured\": \"2013-11-14 16:28:13\", \"flickr_url\": \"http://farm4.staticflickr.com/1/x.jpg\", \"id\": %ld}",
                img > 1 ? ", " : "", img, img, h, w, img);
        for (int k = irand(1, 12); k > 0; k--, aid++) {
            int crowd = rnd() % 100 == 0;
            double x = unif(0, w - 50), y = unif(0, h - 50), bw = unif(1, w - x), bh = unif(1, h - y);
            fprintf(a, "%s{\"segmentation\": ", aid > 1 ? ", " : "");
            if (crowd) {
                int n = irand(20, 200);
                long left = (long)h * w;
                fputs("{\"counts\": [", a);
                for (int i = 0; i < n; i++) {
                    long c = irand(0, 300);
                    if (c > left) c = left;
                    fprintf(a, "%ld, ", c);
                    left -= c;
                }
                fprintf(a, "%ld], \"size\": [%d, %d]}", left, h, w);
            } else {
                int np = rnd() % 4 == 0 ? 2 : 1;
                fputc('[', a);
                for (int p = 0; p < np; p++) {
                    int pts = irand(3, 60);
                    fputs(p ? ", [" : "[", a);
                    for (int i = 0; i < pts; i++)
                        fprintf(a, "%s%.2f, %.2f", i ? ", " : "", unif(x, x + bw), unif(y, y + bh));
                    fputc(']', a);
                }
                fputc(']', a);
            }
            fprintf(a, ", \"area\": %.4f, \"iscrowd\": %d, \"image_id\": %ld, \"bbox\": [%.2f, %.2f, %.2f, %.2f], "
                       "\"category_id\": %d, \"id\": %ld}",
                    bw * bh * 0.6, crowd, img, x, y, bw, bh, irand(1, 90), aid);
        }
    }
    fclose(a);
    fputs("], \"annotations\": [", f);
    fwrite(abuf, 1, alen, f);
    free(abuf);
    fputs("], \"categories\": [", f);
    for (int c = 1; c <= 90; c++) fprintf(f, "%s{\"supercategory\": \"thing\", \"id\": %d, \"name\": \"cat%d\"}", c > 1 ? ", " : "", c, c);
    fputs("]}\n", f);
    return fclose(f) == 0 ? 0 : ar_errorf("writing %s failed", path);
}

/* CPU seconds of this process (all threads): on a shared, loaded machine a
 * steadier measure than wall time. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    double mb = 100;
    int reps = 3, keep = 0;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--mb=", 5)) mb = atof(argv[i] + 5);
        else if (!strncmp(argv[i], "--reps=", 7)) reps = atoi(argv[i] + 7);
        else if (!strncmp(argv[i], "--file=", 7)) file = argv[i] + 7;
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else { fprintf(stderr, "usage: %s [--mb=100] [--reps=3] [--file=PATH] [--keep]\n", argv[0]); return 2; }
    }
    if (reps < 1) reps = 1;
    char tmp[] = "/tmp/bench_coco_XXXXXX.json";
    if (!file) {
        int fd = mkstemps(tmp, 5);
        if (fd < 0) { perror("mkstemps"); return 1; }
        close(fd);
        double t0 = ar_now();
        if (write_file(tmp, mb) < 0) { fprintf(stderr, "%s\n", ar_error()); return 1; }
        printf("# wrote %s in %.1f s\n", tmp, ar_now() - t0);
        file = tmp;
    }
    FILE *f = fopen(file, "rb");
    if (!f) { perror(file); return 1; }
    fseek(f, 0, SEEK_END);
    double size_mb = ftell(f) / 1e6;
    fclose(f);
    double *t = calloc(reps, sizeof *t), *tc = calloc(reps, sizeof *tc);
    coco_dataset ds;
    for (int r = 0; r < reps; r++) {
        double t0 = ar_now(), c0 = cpu_now();
        if (coco_load(file, &ds) < 0) { fprintf(stderr, "%s\n", ar_error()); return 1; }
        t[r] = ar_now() - t0, tc[r] = cpu_now() - c0;
        printf("load=%d s=%.3f cpu_s=%.3f images=%zu anns=%zu bad=%lld\n", r, t[r], tc[r], ds.n_images, ds.n_anns,
               (long long)(ds.n_bad_images + ds.n_bad_anns + ds.n_bad_cats));
        if (r + 1 < reps) coco_free(&ds);
    }
    qsort(t, reps, sizeof *t, cmp_d);
    qsort(tc, reps, sizeof *tc, cmp_d);
    double t0 = ar_now(), c0 = cpu_now();
    size_t n_rle = 0;
    uint64_t pix = 0;
    for (size_t i = 0; i < ds.n_anns; i++) {
        rle_mask m;
        if (coco_ann_to_rle(&ds, &ds.anns[i], &m) < 0) { fprintf(stderr, "%s\n", ar_error()); return 1; }
        pix += rle_area(&m);
        n_rle++;
        rle_free(&m);
    }
    double t_rle = ar_now() - t0, c_rle = cpu_now() - c0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("result mb=%.1f images=%zu anns=%zu load_s=%.3f load_s_best=%.3f load_cpu_s=%.3f mb_per_s=%.0f "
           "to_rle_per_s=%.0f to_rle_per_cpu_s=%.0f peak_rss_mib=%.0f\n",
           size_mb, ds.n_images, ds.n_anns, t[reps / 2], t[0], tc[reps / 2], size_mb / t[reps / 2], n_rle / t_rle,
           n_rle / c_rle, ru.ru_maxrss / 1024.0);
    printf("# %llu mask pixels in total\n", (unsigned long long)pix);
    coco_free(&ds);
    free(t), free(tc);
    if (file == tmp && !keep) remove(tmp);
    else if (file == tmp) printf("# kept %s\n", tmp);
    return 0;
}
