/* bench/bench_sam_encoder.c — forward time of SAM's frozen image encoder
 * (model/sam_image_encoder.c) at the real sizes: ViT-B, ViT-L or ViT-H on
 * 1024 x 1024 images, random weights (the registry's initialisers) and a
 * random image batch.
 *
 * Output ('#' lines describe the run):
 *   step=<i> ms=..
 *   result side=c model=<b|l|h> batch=B fwd_ms=.. fwd_ms_best=.. gflop=.. gflops=.. reps=.. warmup=..
 *          peak_rss_mib=..
 * fwd_ms is the median over the timed forwards, gflop the multiply-adds x 2 of
 * the Linear layers, attention products (windows padded as computed), the patch
 * embedding and the neck; gflops = gflop / median time. --ceiling also prints
 * the sgemm ceiling of this machine (bench/bench_util.h) for comparison.
 *
 *   bench_sam_encoder [--model=b|l|h] [--batch=B] [--reps=N] [--warmup=N] [--ceiling]
 * Depends on model/sam_image_encoder.h, model/params.h, kernels/kernels.h,
 * bench/bench_util.h and core/ (rng, timer, error). Build: make
 * build/bench/bench_sam_encoder (not run by `make bench`). */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/sam_image_encoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int int_opt(const char *arg, const char *name, int *dst, int lo) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end || v < lo || v > 100000) { fprintf(stderr, "bench_sam_encoder: bad value in %s\n", arg); exit(2); }
    *dst = (int)v;
    return 1;
}

/* Multiply-adds x 2 of one forward of B images. */
static double forward_gflop(const sam_encoder_cfg *c, int B) {
    const double G = c->img_size / c->patch, N = G * G, C = c->dim, M = c->mlp_dim, OC = c->out_chans;
    const double ws = c->window, nside = (double)((int)((G + ws - 1) / ws));
    const double Np = nside * nside * ws * ws;
    double macs = N * C * c->in_chans * c->patch * c->patch;                      /* patch embedding */
    for (int l = 0; l < c->depth; l++) {
        macs += N * (3 * C * C + C * C + 2 * C * M);                               /* qkv, proj, MLP */
        macs += c->global_attn[l] ? 2 * N * N * C : 2 * Np * ws * ws * C;        /* QK^T and PV */
    }
    macs += N * C * OC + N * OC * OC * 9;                                          /* neck */
    return 2.0 * macs * B / 1e9;
}

int main(int argc, char **argv) {
    int B = 1, reps = 3, warmup = 1, ceiling = 0;
    char model = 'b';
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (int_opt(a, "--batch", &B, 1) || int_opt(a, "--reps", &reps, 1) || int_opt(a, "--warmup", &warmup, 0))
            continue;
        if (!strcmp(a, "--ceiling")) { ceiling = 1; continue; }
        if (!strncmp(a, "--model=", 8) && strchr("blh", a[8]) && a[8] && !a[9]) { model = a[8]; continue; }
        fprintf(stderr, "usage: %s [--model=b|l|h] [--batch=B] [--reps=N] [--warmup=N] [--ceiling]\n", argv[0]);
        return 2;
    }
    const sam_encoder_cfg c = model == 'h' ? sam_encoder_vit_h(NULL) : model == 'l' ? sam_encoder_vit_l(NULL)
                                                                                     : sam_encoder_vit_b(NULL);
    printf("# c.backend=%s\n# c.threads=%d\n# c.compiler=%s\n", k_backend_name(), k_num_threads(), __VERSION__);
    ar_params ps;
    params_init_empty(&ps);
    if (sam_encoder_declare(&c, &ps) || params_alloc(&ps)) {
        fprintf(stderr, "bench_sam_encoder: %s\n", ar_error());
        return 1;
    }
    params_randomize(&ps, 1234);
    sam_image_encoder *e = sam_encoder_create(&c, &ps, B);
    if (!e) { fprintf(stderr, "bench_sam_encoder: %s\n", ar_error()); return 1; }
    printf("# sam_encoder.config=vit_%c,dim=%d,depth=%d,heads=%d,window=%d,img=%d,batch=%d\n", model, c.dim,
           c.depth, c.heads, c.window, c.img_size, B);
    printf("# sam_encoder.params=%zu\n# sam_encoder.activation_bytes=%zu\n", params_numel(&ps, 0),
           sam_encoder_activation_bytes(e));
    ar_rng r;
    rng_seed(&r, 42);
    if (ceiling) bu_sgemm_ceiling(&r, 1.0);       /* prints its lines and # c.ceiling_gflops */
    fflush(stdout);

    const size_t nimg = (size_t)B * c.in_chans * c.img_size * c.img_size;
    float *h = malloc(nimg * sizeof *h), *img = k_malloc(nimg * sizeof *img);
    if (!h || !img) { fprintf(stderr, "bench_sam_encoder: out of memory\n"); return 1; }
    rng_fill_normal(&r, h, nimg, 0.0f, 1.0f);
    k_upload(img, h, nimg * sizeof *h);
    free(h);

    const int total = warmup + reps;
    double *t = calloc((size_t)total, sizeof *t);
    if (!t) { fprintf(stderr, "bench_sam_encoder: out of memory\n"); return 1; }
    for (int s = 0; s < total; s++) {
        k_sync();
        double t0 = ar_now();
        if (!sam_encoder_forward(e, img, B)) { fprintf(stderr, "bench_sam_encoder: %s\n", ar_error()); return 1; }
        k_sync();
        t[s] = (ar_now() - t0) * 1e3;
        printf("step=%d ms=%.1f%s\n", s, t[s], s < warmup ? " (warm-up)" : "");
        fflush(stdout);
    }
    if (k_error()) { fprintf(stderr, "bench_sam_encoder: backend error: %s\n", k_error()); return 1; }
    const double med = bu_median(t + warmup, reps), gf = forward_gflop(&c, B);
    double best = t[warmup];
    for (int s = warmup; s < total; s++) best = t[s] < best ? t[s] : best;
    printf("result side=c model=%c batch=%d fwd_ms=%.1f fwd_ms_best=%.1f gflop=%.1f gflops=%.1f reps=%d warmup=%d "
           "peak_rss_mib=%.0f\n", model, B, med, best, gf, gf / (med / 1e3), reps, warmup, bu_peak_rss_mib());
    free(t);
    k_free(img);
    sam_encoder_free(e);
    params_free(&ps);
    return 0;
}
