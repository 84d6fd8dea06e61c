/* tests/test_llama_recipe_parity.c — the AnyRef training recipe (model/llama.c +
 * optim/optim.c) against PyTorch.
 *
 * tests/ref/llama_recipe_ref.py (`make fixtures`) writes tests/fixtures/llama_recipe.h5:
 * a 2-layer GQA LLaMA decoder with the base weights frozen, LoRA (rank 4,
 * alpha 8, dropout 0.1) on all seven projections and embed_tokens + lm_head
 * trainable, written independently in PyTorch float64 autograd. The batch has
 * two spliced rows (token id -1 here, given feature vectors in the reference),
 * ignored targets and a right-padded sequence. The fixture holds the random
 * float32-representable weights under their Hugging Face names, the step-0
 * loss, logits, LoRA dropout masks, gradient of every trainable tensor and
 * d loss / d(input embeddings), then 5 training steps (clip_grad_norm_ at 1.0
 * + torch.optim.AdamW): each step's loss and gradient norm and the trainable
 * tensors after the last step.
 *
 * This test declares the recipe through the registry (the trainable set is
 * checked), loads every tensor by name (shapes checked both ways), writes the
 * features through llama_embeds() after llama_embed() and prints one line per
 * comparison, e.g.
 *     ok   llama_recipe grad.lm_head.weight   max rel err 3.1e-07 (tol 1e-04, ref max 2.2e-01)
 * Errors are max|c - ref| / max|ref| per tensor (t_max_rel_err_d). Run from the repo root.
 */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/llama.h"
#include "optim/optim.h"
#include "core/error.h"
#include "core/rng.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/llama_recipe.h5"
#define PFX "llama_recipe "

/* float32 forward/backward through two layers against float64: ~1e-6 observed
 * (see tests/test_llama_parity.c). 1e-4 leaves room for another backend's
 * summation order, not for a wrong formula or a missing gradient path. */
#define TOL 1e-4
/* The bound on each training step's loss. */
#define LOSS_TOL 1e-5
/* Trainable tensors after 5 AdamW steps: Adam divides each gradient entry by
 * its own running RMS, so an entry's float32 rounding error relative to itself
 * (not to the tensor's scale) reaches the update, times lr = 1e-2. Observed
 * <= 2.1e-6 of the tensor scale (losses <= 1e-7); 1e-4 is the gradients' bound.
 * The fixture's LoRA init (std 0.1) keeps the trajectory smooth: with 0.3 the
 * steps turn sharp and even PyTorch float32 drifts ~1e-4 from float64. */
#define FINAL_TOL 1e-4

static const llama_cfg CFG = {
    .vocab = 41, .dim = 32, .layers = 2, .heads = 4, .kv_heads = 2, .mlp_hidden = 48, .max_seq = 16,
    .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 4, .lora_alpha = 8.0f, .lora_dropout = 0.1f,
    .lora_targets = (1u << LLAMA_NPROJ) - 1,   /* q k v o gate up down */
    .train_base = 0, .train_embed = 1, .train_lm_head = 1,
};
static const ar_optim_cfg OPT = {
    .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f,
    .warmup_steps = 0, .total_steps = 0, .schedule = OPTIM_CONSTANT,
};
enum { BATCH = 2, SEQ = 10, N = BATCH * SEQ, STEPS = 5, MAX_SPLICE = 8 };
static const char *const PROJ[LLAMA_NPROJ] = {"q", "k", "v", "o", "gate", "up", "down"};

static h5fixture FX;

/* The fixture must describe the model and optimiser this test runs. */
static int check_config(void) {
    const fx_int_attr iv[] = {
        {"vocab", CFG.vocab}, {"dim", CFG.dim}, {"layers", CFG.layers}, {"heads", CFG.heads},
        {"kv_heads", CFG.kv_heads}, {"mlp_hidden", CFG.mlp_hidden}, {"lora_rank", CFG.lora_rank},
        {"lora_targets", (int)CFG.lora_targets}, {"train_base", CFG.train_base},
        {"train_embed", CFG.train_embed}, {"train_lm_head", CFG.train_lm_head},
        {"B", BATCH}, {"T", SEQ}, {"steps", STEPS}};
    const fx_float_attr fv[] = {
        {"norm_eps", CFG.norm_eps}, {"rope_theta", CFG.rope_theta}, {"lora_alpha", CFG.lora_alpha},
        {"lora_dropout", CFG.lora_dropout}, {"lr", OPT.lr}, {"beta1", OPT.beta1}, {"beta2", OPT.beta2},
        {"eps", OPT.eps}, {"weight_decay", OPT.weight_decay}, {"grad_clip", OPT.grad_clip}};
    return fx_check_config(&FX, iv, sizeof iv / sizeof *iv, fv, sizeof fv / sizeof *fv);
}

/* The recipe: embed_tokens, lm_head and every LoRA tensor trainable (gradient
 * allocated), base projections and norms frozen (no gradient). */
static int check_trainable(const ar_params *ps) {
    int bad = 0, ntrain = 0, want = 2 + 2 * LLAMA_NPROJ * CFG.layers;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        int expect = !strcmp(p->name, "model.embed_tokens.weight") || !strcmp(p->name, "lm_head.weight") ||
                     strstr(p->name, ".lora_A.weight") || strstr(p->name, ".lora_B.weight");
        int has = params_g(ps, p->name) != NULL;
        if (expect != p->trainable || expect != has) {
            t_fail(PFX "trainable", "%s is %s, the recipe wants it %s", p->name,
                   p->trainable ? "trainable" : "frozen", expect ? "trainable" : "frozen");
            bad = 1;
        }
        ntrain += p->trainable;
    }
    if (!bad)
        t_check(ntrain == want, PFX "trainable", "%d of %d tensors trainable (%zu of %zu floats): embed, "
                "lm_head and LoRA A/B on all 7 projections x %d layers; %d expected",
                ntrain, ps->n, params_numel(ps, 1), params_numel(ps, 0), CFG.layers, want);
    return !bad && ntrain == want;
}

/* Every trainable tensor (weights if final, else gradients) against <group>/<name>. */
static void check_trainables(const ar_params *ps, const char *group, int final, double tol) {
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (!p->trainable) continue;
        char label[160], ds[160];
        snprintf(label, sizeof label, "%s.%s", final ? "final" : "grad", p->name);
        snprintf(ds, sizeof ds, "%s/%s", group, p->name);
        fx_check(&FX, label, ds, final ? ps->w + p->off : ps->g + p->goff, p->ndim, p->shape, tol);
    }
}

/* The LoRA dropout masks of projection i in layer l are dropout_mask(N*in, p,
 * rng_derive(seed, 7l + i)) (model/llama.c). The reference reproduces that hash
 * in Python; the backend's masks must match it bit for bit for the step-0 seed,
 * otherwise the other comparisons mean nothing. */
static void check_masks(uint64_t seed) {
    const int in_of[LLAMA_NPROJ] = {CFG.dim, CFG.dim, CFG.dim, CFG.dim, CFG.dim, CFG.dim, CFG.mlp_hidden};
    const size_t nmax = (size_t)N * CFG.mlp_hidden;
    float *d = k_malloc(nmax * sizeof(float));
    double *ref = fx_alloc(&FX, nmax * sizeof(double));
    if (!d) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    size_t diff = 0, drop = 0, total = 0;
    int all = 1;
    for (int l = 0; l < CFG.layers; l++) {
        for (int i = 0; i < LLAMA_NPROJ; i++) {
            const int shape[2] = {N, in_of[i]};
            const size_t n = (size_t)N * in_of[i];
            char ds[32];
            snprintf(ds, sizeof ds, "masks/%s.%d", PROJ[i], l);
            dropout_mask(d, n, CFG.lora_dropout, rng_derive(seed, (uint64_t)LLAMA_NPROJ * l + i));
            if (!fx_read(&FX, ds, H5T_NATIVE_DOUBLE, ref, 2, shape)) { all = 0; continue; }
            float *h = fx_download(&FX, d, n);
            size_t dd = 0;
            for (size_t j = 0; j < n; j++) { dd += (double)h[j] != ref[j]; drop += h[j] == 0.0f; }
            if (dd) t_fail(PFX "mask", "%s.%d: %zu of %zu entries differ from the reference", PROJ[i], l, dd, n);
            diff += dd; total += n;
            free(h);
        }
    }
    if (all)
        t_check(diff == 0, PFX "masks", "%d masks (%zu entries, %zu dropped) bit-exact with the reference: %zu differ",
                CFG.layers * LLAMA_NPROJ, total, drop, diff);
    free(ref);
    k_free(d);
}

/* The input embeddings: token rows from llama_embed, the spliced rows (id -1)
 * written by the caller through llama_embeds() as llama.h documents. */
static void set_inputs(llama *m, const int *tokens, const float *feats, const int *rows, int S) {
    llama_embed(m, tokens);
    float *e = llama_embeds(m);
    for (int r = 0; r < S; r++)
        k_upload(e + (size_t)rows[r] * CFG.dim, feats + (size_t)r * CFG.dim, (size_t)CFG.dim * sizeof(float));
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# AnyRef recipe (frozen base, LoRA on q k v o gate up down, trainable embed + lm_head,\n"
           "# spliced feature rows, AdamW + clipping) against PyTorch float64, backend %s\n", k_backend_name());
    if (!check_config()) { fx_close(&FX); return t_exit_code(); }

    ar_params ps;
    params_init_empty(&ps);
    if (llama_declare(&CFG, &ps) || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        fx_close(&FX);
        return t_exit_code();
    }
    const int D = CFG.dim, V = CFG.vocab, nshape[1] = {N}, lshape[2] = {N, V}, eshape[2] = {N, D};
    const int one[1] = {1}, sshape[1] = {STEPS};
    int tokens[N], targets[N], rows[MAX_SPLICE];
    float feats[MAX_SPLICE * 32];
    uint64_t base_seed = 0;
    llama *m = NULL;
    int S = -1;
    /* grads/ and final/ must hold exactly the trainable tensors (each is checked below). */
    static const char *const grad_groups[] = {"grads", "final", NULL};
    if (!check_trainable(&ps) || !fx_load_params(&FX, &ps, grad_groups) ||
        !fx_read(&FX, "tokens", H5T_NATIVE_INT, tokens, 1, nshape) ||
        !fx_read(&FX, "targets", H5T_NATIVE_INT, targets, 1, nshape) ||
        !fx_attr(&FX, "base_seed", H5T_NATIVE_UINT64, &base_seed) || (S = fx_len(&FX, "splice_rows")) < 0)
        goto done;
    if (S < 1 || S > MAX_SPLICE || D > 32) { fx_bad(&FX, "splice_rows", "1..8 rows of dim <= 32 expected"); goto done; }
    {
        const int rshape[1] = {S}, fshape[2] = {S, D};
        if (!fx_read(&FX, "splice_rows", H5T_NATIVE_INT, rows, 1, rshape) ||
            !fx_read(&FX, "features", H5T_NATIVE_FLOAT, feats, 2, fshape))
            goto done;
    }
    /* Token ids in range except exactly the spliced rows, which must be -1. */
    for (int i = 0; i < N; i++) {
        int spliced = 0;
        for (int r = 0; r < S; r++) spliced |= rows[r] == i;
        if (spliced ? tokens[i] != -1 : (tokens[i] < 0 || tokens[i] >= V) ||
            (targets[i] != -100 && (targets[i] < 0 || targets[i] >= V))) {
            fx_bad(&FX, "tokens/targets/splice_rows", "id out of range or spliced row without id -1");
            goto done;
        }
    }
    m = llama_create(&CFG, &ps, BATCH, SEQ);
    if (!m) { t_fail(PFX "create", "%s", ar_error()); goto done; }

    /* ---- step 0: loss, logits, trainable gradients, d(input embeddings) */
    const uint64_t seed0 = rng_derive(base_seed, 0);
    check_masks(seed0);
    params_zero_grad(&ps);
    int count = 0, want = 0;
    for (int i = 0; i < N; i++) want += targets[i] != -100;
    set_inputs(m, tokens, feats, rows, S);
    float loss = llama_forward_embeds(m, targets, seed0, &count);
    llama_backward(m, 1.0f);
    k_sync();
    const char *kerr = k_error();
    t_check(kerr == NULL, PFX "backend", "%s", kerr ? kerr : "no backend error");
    t_check(count == want, PFX "count", "%d targets counted, %d not -100", count, want);
    double ref_loss;
    if (fx_read(&FX, "loss", H5T_NATIVE_DOUBLE, &ref_loss, 1, one)) {
        double e = fabs((double)loss - ref_loss) / fabs(ref_loss);
        t_check(e <= TOL, PFX "loss", "rel err %.1e (tol %.0e)  (%.9g vs %.9g)", e, TOL, (double)loss, ref_loss);
    }
    fx_check(&FX, "logits", "logits", llama_logits(m), 2, lshape, TOL);
    check_trainables(&ps, "grads", 0, TOL);
    {
        double *ref = fx_alloc(&FX, (size_t)N * D * sizeof(double));
        double *rref = fx_alloc(&FX, (size_t)S * D * sizeof(double));
        if (fx_read(&FX, "embeds_grad", H5T_NATIVE_DOUBLE, ref, 2, eshape)) {
            float *h = fx_download(&FX, llama_embeds_grad(m), (size_t)N * D);
            fx_report(&FX, "embeds_grad (all rows)", h, ref, (size_t)N * D, TOL);
            float *hr = fx_alloc(&FX, (size_t)S * D * sizeof(float));
            for (int r = 0; r < S; r++) {
                memcpy(hr + (size_t)r * D, h + (size_t)rows[r] * D, (size_t)D * sizeof(float));
                memcpy(rref + (size_t)r * D, ref + (size_t)rows[r] * D, (size_t)D * sizeof(double));
            }
            char label[64];
            snprintf(label, sizeof label, "embeds_grad (%d spliced rows)", S);
            fx_report(&FX, label, hr, rref, (size_t)S * D, TOL);
            free(hr);
            free(h);
        }
        free(rref);
        free(ref);
    }

    /* ---- 5 training steps: zero grads, forward (dropout seed rng_derive(base, s)),
     * backward(1), optim_step (clip 1.0, AdamW) at t = s + 1 */
    double ref_losses[STEPS], ref_norms[STEPS];
    if (!fx_read(&FX, "train/loss", H5T_NATIVE_DOUBLE, ref_losses, 1, sshape) ||
        !fx_read(&FX, "train/grad_norm", H5T_NATIVE_DOUBLE, ref_norms, 1, sshape))
        goto done;
    for (int s = 0; s < STEPS; s++) {
        params_zero_grad(&ps);
        set_inputs(m, tokens, feats, rows, S);
        float l = llama_forward_embeds(m, targets, rng_derive(base_seed, (uint64_t)s), NULL);
        llama_backward(m, 1.0f);
        double norm = optim_step(&ps, &OPT, s + 1, OPT.lr);
        k_sync();
        char nm[64];
        double e = fabs((double)l - ref_losses[s]) / fabs(ref_losses[s]);
        snprintf(nm, sizeof nm, PFX "step %d loss", s + 1);
        t_check(e <= LOSS_TOL, nm, "%.9f vs torch %.9f  rel err %.1e (tol %.0e)", (double)l, ref_losses[s], e,
                LOSS_TOL);
        e = fabs(norm - ref_norms[s]) / ref_norms[s];
        snprintf(nm, sizeof nm, PFX "step %d grad norm", s + 1);
        t_check(e <= TOL, nm, "%.6f vs torch %.6f  rel err %.1e (tol %.0e)%s", norm, ref_norms[s], e, TOL,
                norm > OPT.grad_clip ? ", clipped to 1.0" : "");
    }
    kerr = k_error();
    t_check(kerr == NULL, PFX "backend (training)", "%s", kerr ? kerr : "no backend error");
    check_trainables(&ps, "final", 1, FINAL_TOL);

done:
    llama_free(m);
    params_free(&ps);
    fx_close(&FX);
    return t_exit_code();
}
