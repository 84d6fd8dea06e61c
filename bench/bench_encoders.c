/* bench/bench_encoders.c — forward throughput of the two big frozen image
 * encoders at their real sizes: SAM's image encoder (model/sam_image_encoder.c,
 * ViT-B by default, also ViT-L/H, 1024 x 1024 images) and the CLIP ViT-L/14
 * vision tower (model/clip_vit.c, 224 x 224 images, LLaVA's select_layer -2:
 * 23 of the 24 layers run, CLS dropped). Random weights (the registry's
 * initialisers), a random image batch, the model's own activation arena.
 * bench/bench_encoders_torch.py does the same in PyTorch; bench/run_encoders.sh
 * joins them.
 *
 * Output ('#' lines describe the run):
 *   step=<i> ms=..
 *   result side=c model=<m> batch=B step_ms=.. fwd_ms_best=.. images_per_s=.. gflop=.. gflops=..
 *          reps=.. warmup=.. peak_rss_mib=..
 * step_ms is the median time of one forward of the batch over the timed
 * forwards (after the warm-up ones), images_per_s = B / median, gflop the
 * multiply-adds x 2 of one forward (Linear layers, attention products —
 * SAM's windows padded as computed, its relative-position terms, CLIP's CLS
 * token included — the patch embedding and SAM's neck), gflops = gflop /
 * median. --ceiling first prints the sgemm ceiling (bench/bench_util.h) and
 * "# c.ceiling_gflops=", the denominator of the runner's "% of ceiling".
 *
 *   bench_encoders [--model=sam_b|sam_l|sam_h|clip_l] [--batch=B] [--reps=N] [--warmup=N] [--ceiling]
 *                  [--frozen-bf16]   (SAM: its block matrices stored as bf16; with ANYREF_GEMM=bf16 bf16 products)
 * Depends on model/sam_image_encoder.h, model/clip_vit.h, model/params.h,
 * kernels/kernels.h, bench/bench_util.h and core/ (rng, timer, error). */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/kernels.h"
#include "model/clip_vit.h"
#include "model/params.h"
#include "model/sam_image_encoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int int_opt(const char *arg, const char *name, int *dst, int lo) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end || v < lo || v > 100000) { fprintf(stderr, "bench_encoders: bad value in %s\n", arg); exit(2); }
    *dst = (int)v;
    return 1;
}

/* Multiply-adds x 2 of one SAM encoder forward of B images, as the C side
 * executes them: qkv, proj and MLP on the G*G real tokens (a padded token's
 * q, k, v are the qkv bias: no GEMM rows for it; SAM's PyTorch code computes
 * them), attention over whole padded windows. */
static double sam_gflop(const sam_encoder_cfg *c, int B) {
    const double G = c->img_size / c->patch, N = G * G, C = c->dim, M = c->mlp_dim, OC = c->out_chans;
    const double ws = c->window, nside = (double)((int)((G + ws - 1) / ws));
    const double Np = nside * nside * ws * ws;                                    /* padded tokens */
    double macs = N * C * c->in_chans * c->patch * c->patch;                      /* patch embedding */
    for (int l = 0; l < c->depth; l++) {
        const double T = c->global_attn[l] ? N : Np, S = c->global_attn[l] ? G : ws;   /* tokens, side */
        macs += N * (4 * C * C + 2 * C * M);                                      /* qkv, proj, MLP */
        macs += T * S * S * 2 * C;                                                /* QK^T and PV, all heads */
        macs += T * 2 * S * C;                                                    /* q . Rh and q . Rw */
    }
    macs += N * C * OC + N * OC * OC * 9;                                         /* neck */
    return 2.0 * macs * B / 1e9;
}

/* Multiply-adds x 2 of one CLIP tower forward of B images (n_run layers). */
static double clip_gflop(const clip_vit_cfg *c, int n_run, int B) {
    const double g = c->image_size / c->patch, T = 1 + g * g, W = c->width, M = c->mlp_dim;
    double macs = g * g * W * c->channels * c->patch * c->patch;                  /* patch embedding */
    macs += n_run * (T * (4 * W * W + 2 * W * M) + 2 * T * T * W);                /* q,k,v,out, MLP; QK^T, PV */
    return 2.0 * macs * B / 1e9;
}

int main(int argc, char **argv) {
    int B = 1, reps = 3, warmup = 1, ceiling = 0, frozen_bf16 = 0;
    const char *model = "sam_b";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (int_opt(a, "--batch", &B, 1) || int_opt(a, "--reps", &reps, 1) || int_opt(a, "--warmup", &warmup, 0))
            continue;
        if (!strcmp(a, "--ceiling")) { ceiling = 1; continue; }
        if (!strcmp(a, "--frozen-bf16")) { frozen_bf16 = 1; continue; }   /* SAM: sam_encoder.frozen_weights = bf16 */
        if (!strncmp(a, "--model=", 8) && (!strcmp(a + 8, "sam_b") || !strcmp(a + 8, "sam_l") ||
                                           !strcmp(a + 8, "sam_h") || !strcmp(a + 8, "clip_l"))) {
            model = a + 8;
            continue;
        }
        fprintf(stderr, "usage: %s [--model=sam_b|sam_l|sam_h|clip_l] [--batch=B] [--reps=N] [--warmup=N] "
                        "[--ceiling]\n", argv[0]);
        return 2;
    }
    const int is_clip = !strcmp(model, "clip_l");
    printf("# c.backend=%s\n# c.threads=%d\n# c.compiler=%s\n", k_backend_name(), k_num_threads(), __VERSION__);
    static const char *envs[] = {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i]);
        printf("# env.%s=%s\n", envs[i], v ? v : "(unset)");
    }
    ar_rng r;
    rng_seed(&r, 42);
    if (ceiling) bu_sgemm_ceiling(&r, 0.6);       /* prints its lines and # c.ceiling_gflops */

    ar_params ps;
    params_init_empty(&ps);
    sam_encoder_cfg sc;
    clip_vit_cfg cc = clip_vit_large_cfg();
    sam_image_encoder *se = NULL;
    clip_vit *cv = NULL;
    size_t nimg;
    double gf;
    if (is_clip) {
        if (clip_vit_declare(&cc, &ps) || params_alloc(&ps)) { fprintf(stderr, "bench_encoders: %s\n", ar_error()); return 1; }
        params_randomize(&ps, 1234);
        if (!(cv = clip_vit_create(&cc, &ps, B))) { fprintf(stderr, "bench_encoders: %s\n", ar_error()); return 1; }
        const int n_run = cc.select_layer < 0 ? cc.layers + 1 + cc.select_layer : cc.select_layer;
        nimg = (size_t)B * cc.channels * cc.image_size * cc.image_size;
        gf = clip_gflop(&cc, n_run, B);
        printf("# enc.config=clip_vit_l14,image=%d,patch=%d,width=%d,layers=%d,layers_run=%d,heads=%d,mlp=%d,"
               "act=quick_gelu,select_layer=%d,tokens_out=%d,batch=%d\n", cc.image_size, cc.patch, cc.width,
               cc.layers, n_run, cc.heads, cc.mlp_dim, cc.select_layer, clip_vit_tokens(cv), B);
        printf("# enc.activation_bytes=%zu\n", clip_vit_activation_bytes(cv));
    } else {
        sc = model[4] == 'h' ? sam_encoder_vit_h(NULL) : model[4] == 'l' ? sam_encoder_vit_l(NULL) : sam_encoder_vit_b(NULL);
        sc.frozen_half = frozen_bf16 ? SAM_ENC_HALF_BF16 : 0;
        if (sam_encoder_declare(&sc, &ps) || params_alloc(&ps)) { fprintf(stderr, "bench_encoders: %s\n", ar_error()); return 1; }
        params_randomize(&ps, 1234);
        if (!(se = sam_encoder_create(&sc, &ps, B))) { fprintf(stderr, "bench_encoders: %s\n", ar_error()); return 1; }
        nimg = (size_t)B * sc.in_chans * sc.img_size * sc.img_size;
        gf = sam_gflop(&sc, B);
        char glob[128] = "";
        for (int l = 0, n = 0; l < sc.depth && n < (int)sizeof glob - 4; l++)
            if (sc.global_attn[l]) n += snprintf(glob + n, sizeof glob - n, "%s%d", n ? ":" : "", l);
        printf("# enc.config=sam_vit_%c,image=%d,patch=%d,dim=%d,depth=%d,heads=%d,mlp=%d,window=%d,global=%s,"
               "out_chans=%d,batch=%d\n", model[4], sc.img_size, sc.patch, sc.dim, sc.depth, sc.heads, sc.mlp_dim,
               sc.window, glob, sc.out_chans, B);
        printf("# enc.activation_bytes=%zu\n", sam_encoder_activation_bytes(se));
    }
    printf("# enc.params=%zu\n", params_numel(&ps, 0));
    fflush(stdout);

    float *h = malloc(nimg * sizeof *h), *img = k_malloc(nimg * sizeof *img);
    if (!h || !img) { fprintf(stderr, "bench_encoders: out of memory\n"); return 1; }
    rng_fill_normal(&r, h, nimg, 0.0f, 1.0f);
    k_upload(img, h, nimg * sizeof *h);

    const int total = warmup + reps;
    double *t = calloc((size_t)total, sizeof *t);
    if (!t) { fprintf(stderr, "bench_encoders: out of memory\n"); return 1; }
    const float *out = NULL;
    for (int s = 0; s < total; s++) {
        k_sync();
        double t0 = ar_now();
        out = is_clip ? clip_vit_forward(cv, img, B) : sam_encoder_forward(se, img, B);
        if (!out) { fprintf(stderr, "bench_encoders: %s\n", ar_error()); return 1; }
        k_sync();
        t[s] = (ar_now() - t0) * 1e3;
        printf("step=%d%s ms=%.1f\n", s + 1, s < warmup ? "(warmup)" : "", t[s]);
        fflush(stdout);
    }
    if (k_error()) { fprintf(stderr, "bench_encoders: backend error: %s\n", k_error()); return 1; }
    {   /* a finite check on the last output (outside the timing) */
        const size_t nout = is_clip ? (size_t)B * clip_vit_tokens(cv) * cc.width
                                    : (size_t)B * sc.out_chans * (sc.img_size / sc.patch) * (sc.img_size / sc.patch);
        float *ho = malloc(nout * sizeof *ho);
        if (!ho) { fprintf(stderr, "bench_encoders: out of memory\n"); return 1; }
        k_download(ho, out, nout * sizeof *ho);
        double sum = 0;
        for (size_t i = 0; i < nout; i++) sum += (double)ho[i] * ho[i];
        if (!isfinite(sum)) { fprintf(stderr, "bench_encoders: non-finite output\n"); return 1; }
        printf("# enc.out_rms=%.4g\n", sqrt(sum / (double)nout));
        free(ho);
    }
    const double med = bu_median(t + warmup, reps);
    double best = t[warmup];
    for (int s = warmup; s < total; s++) best = t[s] < best ? t[s] : best;
    printf("result side=c model=%s batch=%d step_ms=%.1f fwd_ms_best=%.1f images_per_s=%.4g gflop=%.1f gflops=%.1f "
           "reps=%d warmup=%d peak_rss_mib=%.0f\n", model, B, med, best, B / (med / 1e3), gf, gf / (med / 1e3),
           reps, warmup, bu_peak_rss_mib());
    free(t); free(h);
    k_free(img);
    if (se) sam_encoder_free(se);
    if (cv) clip_vit_free(cv);
    params_free(&ps);
    return 0;
}
