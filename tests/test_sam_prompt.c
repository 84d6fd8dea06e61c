/* tests/test_sam_prompt.c — SAM's dense prompt parts (model/sam_prompt.c) against PyTorch.
 *
 * tests/ref/sam_prompt_ref.py (`make fixtures`) writes tests/fixtures/sam_prompt.h5:
 * the gaussian matrix and no_mask_embed (float32-representable) under their SAM
 * names and the float64 PositionEmbeddingRandom image PE and broadcast dense
 * embedding of a non-square 6 x 9 grid (C = 32). Also checks the error paths.
 * Tolerance 1e-5 of the tensor's scale: the C side evaluates sin/cos in double
 * and rounds once (observed ~6e-8); float32 evaluation of 2*pi*x with |x| up
 * to ~5 would cost ~1e-6, still inside. Run from the repo root. */
#include "kernels/kernels.h"
#include "model/params.h"
#include "model/sam_prompt.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>

#define FIXTURE "tests/fixtures/sam_prompt.h5"
#define PFX "sam_prompt "
#define TOL 1e-5

int main(void) {
    h5fixture fx;
    if (!fx_open(&fx, FIXTURE, PFX)) return t_exit_code();
    const sam_prompt_cfg cfg = {.embed_dim = 32, .grid_h = 6, .grid_w = 9, .prefix = NULL};
    const fx_int_attr iv[] = {{"embed_dim", cfg.embed_dim}, {"grid_h", cfg.grid_h}, {"grid_w", cfg.grid_w}};
    if (!fx_check_config(&fx, iv, 3, NULL, 0)) { fx_close(&fx); return t_exit_code(); }

    ar_params ps;
    params_init_empty(&ps);
    if (sam_prompt_declare(&cfg, &ps) || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        fx_close(&fx);
        return t_exit_code();
    }
    t_check(params_numel(&ps, 1) == 0 && params_numel(&ps, 0) == 2 * 16 + 32, PFX "frozen",
            "%zu trainable floats of %zu (both tensors frozen)", params_numel(&ps, 1), params_numel(&ps, 0));
    const size_t n = (size_t)cfg.embed_dim * cfg.grid_h * cfg.grid_w;
    const int shape[3] = {cfg.embed_dim, cfg.grid_h, cfg.grid_w};
    float *pe = k_malloc(n * sizeof(float)), *de = k_malloc(n * sizeof(float));
    if (!pe || !de) { t_fail(PFX "alloc", "out of memory"); goto done; }
    if (!fx_load_params(&fx, &ps, NULL)) goto done;

    if (sam_prompt_dense_pe(&cfg, &ps, pe)) t_fail(PFX "dense_pe", "%s", ar_error());
    else fx_check(&fx, "dense_pe", "dense_pe", pe, 3, shape, TOL);
    if (sam_prompt_dense_embed(&cfg, &ps, de)) t_fail(PFX "dense_embed", "%s", ar_error());
    else fx_check(&fx, "dense_embed", "dense_embed", de, 3, shape, TOL);

    /* Error paths: an odd channel count, and a registry without the tensors. */
    sam_prompt_cfg odd = cfg;
    odd.embed_dim = 31;
    ar_params empty;
    params_init_empty(&empty);
    int e1 = sam_prompt_dense_pe(&odd, &ps, pe);
    int e2 = sam_prompt_dense_pe(&cfg, &empty, pe);
    t_check(e1 == -1 && e2 == -1, PFX "errors", "odd C -> %d, undeclared tensors -> %d (%s)", e1, e2,
            ar_error());
    params_free(&empty);
done:
    k_free(pe);
    k_free(de);
    params_free(&ps);
    fx_close(&fx);
    return t_exit_code();
}
