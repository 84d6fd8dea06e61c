/* tests/test_llama_parity.c — the whole LLaMA decoder (model/llama.c) against PyTorch.
 *
 * tests/ref/llama_ref.py (`make fixtures`) writes tests/fixtures/llama.h5: a
 * 2-layer LLaMA-style decoder with GQA and LoRA (dropout on) written
 * independently in PyTorch float64 autograd (HF modeling_llama semantics), with
 * random float32-representable weights under their Hugging Face names, tokens,
 * targets (some -100), the dropout seed, and the reference loss, logits, LoRA
 * dropout masks and the gradient of every parameter.
 *
 * This test declares the same model through the registry, loads every
 * parameter by name (shapes checked both ways), runs llama_forward and
 * llama_backward(1.0) on the active backend and prints one line per tensor:
 *     ok   llama_parity grad.model.layers.0.mlp.up_proj.weight   max rel err 4.1e-07 (tol 1e-04)
 * The error is max|c - ref| / max|ref| (t_max_rel_err_d). Run from the repo root.
 */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/llama.h"
#include "core/error.h"
#include "core/rng.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/llama.h5"
#define PFX "llama_parity "

/* float32 forward and backward through two layers against a float64 reference:
 * rounding gives ~1e-7 of each tensor's scale per op and the chain (norms,
 * softmaxes, products of weights) amplifies it by a small factor; the largest
 * observed is ~1e-6. 1e-4 leaves room for another backend's summation order,
 * not for a wrong formula (a missing path or a misplaced scale moves a
 * gradient by far more than 1e-2 of its scale). */
#define TOL 1e-4

static const llama_cfg CFG = {
    .vocab = 37, .dim = 32, .layers = 2, .heads = 4, .kv_heads = 2, .mlp_hidden = 48, .max_seq = 16,
    .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 4, .lora_alpha = 8.0f, .lora_dropout = 0.1f,
    .train_base = 1,
};
enum { BATCH = 2, SEQ = 9 };

static h5fixture FX;

/* The fixture must describe the model this test builds. */
static int check_config(void) {
    const fx_int_attr iv[] = {
        {"vocab", CFG.vocab}, {"dim", CFG.dim}, {"layers", CFG.layers}, {"heads", CFG.heads},
        {"kv_heads", CFG.kv_heads}, {"mlp_hidden", CFG.mlp_hidden}, {"lora_rank", CFG.lora_rank},
        {"train_base", CFG.train_base}, {"B", BATCH}, {"T", SEQ}};
    const fx_float_attr fv[] = {
        {"norm_eps", CFG.norm_eps}, {"rope_theta", CFG.rope_theta}, {"lora_alpha", CFG.lora_alpha},
        {"lora_dropout", CFG.lora_dropout}};
    return fx_check_config(&FX, iv, sizeof iv / sizeof *iv, fv, sizeof fv / sizeof *fv);
}

/* The LoRA dropout masks llama_forward draws are dropout_mask(N*D, p,
 * rng_derive(seed, 7l)) for q and (.., 7l+2) for v (model/llama.c). The
 * reference reproduces that hash in Python; here the backend's masks must
 * match it bit for bit, otherwise the other comparisons mean nothing. */
static void check_masks(uint64_t seed) {
    const int N = BATCH * SEQ, D = CFG.dim, shape[2] = {N, D};
    const size_t n = (size_t)N * D;
    float *d = k_malloc(n * sizeof(float));
    double *ref = fx_alloc(&FX, n * sizeof(double));
    if (!d) { printf("FAIL " PFX "out of memory\n"); exit(1); }
    for (int l = 0; l < CFG.layers; l++) {
        for (int j = 0; j < 2; j++) {
            char ds[32], nm[64];
            snprintf(ds, sizeof ds, "masks/%c.%d", j ? 'v' : 'q', l);
            snprintf(nm, sizeof nm, PFX "mask.%c.%d", j ? 'v' : 'q', l);
            dropout_mask(d, n, CFG.lora_dropout, rng_derive(seed, 7 * (uint64_t)l + (j ? 2u : 0u)));
            if (!fx_read(&FX, ds, H5T_NATIVE_DOUBLE, ref, 2, shape)) continue;
            float *h = fx_download(&FX, d, n);
            size_t diff = 0, drop = 0;
            for (size_t i = 0; i < n; i++) { diff += (double)h[i] != ref[i]; drop += h[i] == 0.0f; }
            t_check(diff == 0, nm, "%zu of %zu entries differ from the reference (bit-exact), %zu dropped",
                    diff, n, drop);
            free(h);
        }
    }
    free(ref);
    k_free(d);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# llama decoder against PyTorch float64 autograd, backend %s\n", k_backend_name());
    if (!check_config()) { fx_close(&FX); return t_exit_code(); }

    ar_params ps;
    params_init_empty(&ps);
    if (llama_declare(&CFG, &ps) || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        fx_close(&FX);
        return t_exit_code();
    }
    const int N = BATCH * SEQ, V = CFG.vocab, nshape[1] = {N}, lshape[2] = {N, V}, one[1] = {1};
    int tokens[BATCH * SEQ], targets[BATCH * SEQ];
    uint64_t seed = 0;
    llama *m = NULL;
    if (!fx_load_params(&FX, &ps, NULL) || !fx_read(&FX, "tokens", H5T_NATIVE_INT, tokens, 1, nshape) ||
        !fx_read(&FX, "targets", H5T_NATIVE_INT, targets, 1, nshape) ||
        !fx_attr(&FX, "dropout_seed", H5T_NATIVE_UINT64, &seed))
        goto done;
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V || (targets[i] != -100 && (targets[i] < 0 || targets[i] >= V))) {
            fx_bad(&FX, "tokens/targets", "id out of range");
            goto done;
        }
    }
    m = llama_create(&CFG, &ps, BATCH, SEQ);
    if (!m) { t_fail(PFX "create", "%s", ar_error()); goto done; }

    check_masks(seed);

    params_zero_grad(&ps);
    int count = 0, want = 0;
    for (int i = 0; i < N; i++) want += targets[i] != -100;
    float loss = llama_forward(m, tokens, targets, BATCH, SEQ, seed, &count);
    llama_backward(m, 1.0f);
    k_sync();
    const char *kerr = k_error();
    t_check(kerr == NULL, PFX "backend", "%s", kerr ? kerr : "no backend error");
    t_check(count == want, PFX "count", "%d targets counted, %d not -100", count, want);

    double ref_loss;
    if (fx_read(&FX, "loss", H5T_NATIVE_DOUBLE, &ref_loss, 1, one)) {
        double e = fabs((double)loss - ref_loss) / fabs(ref_loss);
        t_check(e <= TOL, PFX "loss", "max rel err %.1e (tol %.0e)  (%.9g vs %.9g)", e, TOL,
                (double)loss, ref_loss);
    }
    fx_check(&FX, "logits", "logits", llama_logits(m), 2, lshape, TOL);

    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        char label[160], ds[160];
        snprintf(label, sizeof label, "grad.%s", p->name);
        snprintf(ds, sizeof ds, "grads/%s", p->name);
        const float *g = params_g(&ps, p->name);
        if (!g) { t_fail(PFX "grad", "%s is not trainable with train_base = 1", p->name); continue; }
        fx_check(&FX, label, ds, g, p->ndim, p->shape, TOL);
    }

done:
    llama_free(m);
    params_free(&ps);
    fx_close(&FX);
    return t_exit_code();
}
