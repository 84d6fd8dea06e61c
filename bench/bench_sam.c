/* bench/bench_sam.c — forward+backward time of the SAM mask decoder with
 * mask post-processing, at the real sizes, for P prompts of one image.
 *
 * sam_decoder_default_cfg (dim 256, 64x64 embedding grid, 2 two-way blocks of
 * 8 heads, MLP 2048, one sparse embedding per prompt), the "anyref" trainable
 * preset (mask_tokens, output_upscaling.*, output_hypernetworks_mlps.*), random
 * weights (the registry's initialisers) and random inputs. One step:
 *   params_zero_grad; sam_decoder_forward (low-res [P,256,256]);
 *   sam_post_forward (256 -> 1024 -> crop -> original H0 x W0);
 *   sam_post_backward of a fixed random upstream gradient at the original size
 *   (no loss: the gradient a BCE/Dice loss would give, drawn once);
 *   sam_decoder_backward (parameter gradients and d sparse; no d image).
 * bench/bench_sam_torch.py does the same in PyTorch; bench/run_sam.sh joins them.
 *
 * Output ('#' lines describe the run):
 *   step=<i> ms=.. fwd_ms=.. bwd_ms=..
 *   result side=c prompts=P step_ms=.. step_ms_best=.. fwd_ms=.. bwd_ms=.. reps=.. warmup=.. peak_rss_mib=..
 * Times are medians over the timed steps (fwd = zero_grad + decoder + post
 * forward; bwd = post + decoder backward); step_ms_best the fastest step.
 *
 *   bench_sam [--prompts=P] [--reps=N] [--warmup=N] [--orig=HxW]
 * Depends on model/sam_decoder.h, model/sam_post.h, model/params.h,
 * kernels/kernels.h and core/ (rng, timer, error).
 */
#include "core/error.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/sam_decoder.h"
#include "model/sam_post.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Backend buffer of n floats from the given distribution (normal when lo > hi). */
static float *dev_random(ar_rng *r, size_t n, float lo, float hi) {
    float *h = malloc(n * sizeof *h), *d = k_malloc(n * sizeof *d);
    if (!h || !d) { fprintf(stderr, "bench_sam: out of memory (%zu floats)\n", n); exit(1); }
    if (lo > hi) rng_fill_normal(r, h, n, 0.0f, 1.0f);
    else rng_fill_uniform(r, h, n, lo, hi);
    k_upload(d, h, n * sizeof *h);
    free(h);
    return d;
}

static float *dev_floats(size_t n) {
    float *d = k_malloc(n * sizeof *d);
    if (!d) { fprintf(stderr, "bench_sam: out of memory (%zu floats)\n", n); exit(1); }
    return d;
}

static int int_opt(const char *arg, const char *name, int *dst, int lo) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end || v < lo || v > 100000) { fprintf(stderr, "bench_sam: bad value in %s\n", arg); exit(2); }
    *dst = (int)v;
    return 1;
}

int main(int argc, char **argv) {
    int P = 1, reps = 5, warmup = 1, H0 = 480, W0 = 640;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (int_opt(a, "--prompts", &P, 1) || int_opt(a, "--reps", &reps, 1) || int_opt(a, "--warmup", &warmup, 0))
            continue;
        if (strncmp(a, "--orig=", 7) == 0 && sscanf(a + 7, "%dx%d", &H0, &W0) == 2 && H0 > 0 && W0 > 0) continue;
        fprintf(stderr, "usage: %s [--prompts=P] [--reps=N] [--warmup=N] [--orig=HxW]\n", argv[0]);
        return 2;
    }
    const sam_decoder_cfg c = sam_decoder_default_cfg();
    const int C = c.dim, H = c.H, W = c.W, Hl = 4 * c.H, Wl = 4 * c.W, S = 1024;

    printf("# c.backend=%s\n# c.threads=%d\n# c.compiler=%s\n", k_backend_name(), k_num_threads(), __VERSION__);
    static const char *envs[] = {"OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i]);
        printf("# env.%s=%s\n", envs[i], v ? v : "(unset)");
    }

    ar_params ps;
    params_init_empty(&ps);
    if (sam_decoder_declare(&c, &ps, "anyref") || params_alloc(&ps)) {
        fprintf(stderr, "bench_sam: %s\n", ar_error());
        return 1;
    }
    params_randomize(&ps, 1234);
    sam_decoder *d = sam_decoder_create(&c, &ps, P);
    if (!d) { fprintf(stderr, "bench_sam: %s\n", ar_error()); return 1; }
    sam_post_shape sh;
    if (sam_post_init(&sh, P, Hl, Wl, S, H0, W0, 0, 0)) { fprintf(stderr, "bench_sam: %s\n", ar_error()); return 1; }

    printf("# sam.config=dim=%d,depth=%d,heads=%d,mlp_dim=%d,downsample=%d,grid=%dx%d,n_sparse=%d,"
           "lowres=%dx%d,S=%d,resized=%dx%d,orig=%dx%d,preset=anyref\n",
           c.dim, c.depth, c.heads, c.mlp_dim, c.downsample, H, W, c.n_sparse, Hl, Wl, S, sh.rh, sh.rw, H0, W0);
    printf("# sam.params_total=%zu\n# sam.params_trainable=%zu\n", params_numel(&ps, 0), params_numel(&ps, 1));
    printf("# sam.activation_bytes=%zu\n", sam_decoder_activation_bytes(d));
    fflush(stdout);

    ar_rng r;
    rng_seed(&r, 42);
    const size_t ni = (size_t)C * H * W, nsp = (size_t)P * c.n_sparse * C;
    const size_t nlow = (size_t)P * Hl * Wl, nout = sam_post_out_floats(&sh);
    float *img = dev_random(&r, ni, 1, 0), *pe = dev_random(&r, ni, -1, 1), *sparse = dev_random(&r, nsp, 1, 0);
    float *dense = dev_floats(ni);
    {   /* the no_mask_embed broadcast over the grid, as SAM's prompt encoder gives it */
        float *h = malloc(ni * sizeof *h), col[1024];
        if (!h || C > 1024) { fprintf(stderr, "bench_sam: out of memory\n"); return 1; }
        rng_fill_normal(&r, col, (size_t)C, 0.0f, 0.5f);
        for (int ch = 0; ch < C; ch++)
            for (int k = 0; k < H * W; k++) h[(size_t)ch * H * W + k] = col[ch];
        k_upload(dense, h, ni * sizeof *h);
        free(h);
    }
    float *dout = dev_random(&r, nout, 1, 0);     /* upstream gradient at the original size */
    float *out = dev_floats(nout), *dlow = dev_floats(nlow), *dsp = dev_floats(nsp);
    float *scratch = dev_floats(sam_post_scratch_floats(&sh));

    const int total = warmup + reps;
    double *t_step = calloc((size_t)total, sizeof(double)), *t_fwd = calloc((size_t)total, sizeof(double));
    double *t_bwd = calloc((size_t)total, sizeof(double));
    if (!t_step || !t_fwd || !t_bwd) { fprintf(stderr, "bench_sam: out of memory\n"); return 1; }
    for (int s = 0; s < total; s++) {
        k_sync();
        double t0 = ar_now();
        params_zero_grad(&ps);
        k_zero(dsp, nsp * sizeof(float));
        k_zero(dlow, nlow * sizeof(float));
        float *low = sam_decoder_forward(d, img, pe, dense, sparse, P);
        if (!low) { fprintf(stderr, "bench_sam: %s\n", ar_error()); return 1; }
        sam_post_forward(&sh, out, scratch, low);
        k_sync();
        double t1 = ar_now();
        sam_post_backward(&sh, dlow, scratch, dout);
        sam_decoder_backward(d, dlow, dsp, NULL);
        k_sync();
        double t2 = ar_now();
        if (k_error()) { fprintf(stderr, "bench_sam: %s\n", k_error()); return 1; }
        t_step[s] = t2 - t0; t_fwd[s] = t1 - t0; t_bwd[s] = t2 - t1;
        printf("step=%d%s ms=%.1f fwd_ms=%.1f bwd_ms=%.1f\n", s + 1, s < warmup ? "(warmup)" : "",
               1e3 * t_step[s], 1e3 * t_fwd[s], 1e3 * t_bwd[s]);
        fflush(stdout);
    }
    /* A finite check on what the step produced (outside the timing). */
    float probe[2];
    k_download(&probe[0], out, sizeof(float));
    k_download(&probe[1], dsp, sizeof(float));
    if (!isfinite(probe[0]) || !isfinite(probe[1])) { fprintf(stderr, "bench_sam: non-finite output\n"); return 1; }
    double best = t_step[warmup];
    for (int s = warmup; s < total; s++) if (t_step[s] < best) best = t_step[s];
    printf("result side=c prompts=%d step_ms=%.1f step_ms_best=%.1f fwd_ms=%.1f bwd_ms=%.1f reps=%d warmup=%d "
           "peak_rss_mib=%.0f\n", P, 1e3 * bu_median(t_step + warmup, reps), 1e3 * best,
           1e3 * bu_median(t_fwd + warmup, reps), 1e3 * bu_median(t_bwd + warmup, reps), reps, warmup, bu_peak_rss_mib());
    free(t_step); free(t_fwd); free(t_bwd);
    k_free(img); k_free(pe); k_free(sparse); k_free(dense); k_free(dout);
    k_free(out); k_free(dlow); k_free(dsp); k_free(scratch);
    sam_decoder_free(d);
    params_free(&ps);
    return 0;
}
