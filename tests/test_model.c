/* tests/test_model.c — the demo decoder end to end: finite-difference check of
 * the composed backward (every tensor of a 2-layer model with LoRA and dropout),
 * the LoRA step-0 identity, and a short training run that must learn. */
#include "kernels/kernels.h"
#include "model/llama.h"
#include "optim/optim.h"
#include "core/rng.h"
#include "core/error.h"
#include "tests/testlib.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llama *g_m;
static int g_tok[2 * 6], g_tgt[2 * 6];
static double model_loss(void *u) {
    (void)u;
    return llama_forward(g_m, g_tok, g_tgt, 2, 6, 42, NULL);
}

static void test_gradients(void) {
    llama_cfg c = {.vocab = 11, .dim = 8, .layers = 2, .heads = 2, .kv_heads = 1, .mlp_hidden = 12,
                    .max_seq = 6, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 2,
                    .lora_alpha = 4.0f, .lora_dropout = 0.2f, .train_base = 1};
    ar_params ps; params_init_empty(&ps);
    if (llama_declare(&c, &ps) || params_alloc(&ps)) { t_fail("model.declare", "setup failed"); return; }
    params_randomize(&ps, 7);
    /* LoRA B starts at zero (step 0 == base); give it values so dA is non-zero here */
    ar_rng r; rng_seed(&r, 9);
    for (int i = 0; i < ps.n; i++)
        if (strstr(ps.p[i].name, "lora_B") || strstr(ps.p[i].name, "layernorm") || strstr(ps.p[i].name, "norm.weight"))
            for (size_t j = 0; j < ps.p[i].numel; j++) ps.w[ps.p[i].off + j] = (float)(0.8 + 0.4 * rng_uniform(&r));
    for (int i = 0; i < ps.n; i++)
        if (strstr(ps.p[i].name, "proj.weight") || strstr(ps.p[i].name, "embed") || strstr(ps.p[i].name, "lm_head"))
            for (size_t j = 0; j < ps.p[i].numel; j++) ps.w[ps.p[i].off + j] *= 20.0f; /* 0.02 std -> 0.4: visible gradients */
    g_m = llama_create(&c, &ps, 2, 6);
    for (int i = 0; i < 12; i++) { g_tok[i] = (i * 7 + 3) % 11; g_tgt[i] = i % 6 < 2 ? -100 : (i * 5 + 1) % 11; }
    params_zero_grad(&ps);
    llama_forward(g_m, g_tok, g_tgt, 2, 6, 42, NULL);
    llama_backward(g_m, 1.0f);
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        char nm[160];
        snprintf(nm, sizeof nm, "model grad %s", p->name + (strncmp(p->name, "model.", 6) ? 0 : 6));
        t_gradcheck(nm, model_loss, NULL, ps.w + p->off, ps.g + p->goff, p->numel, 3e-3f, 3e-2, 60);
    }
    llama_free(g_m);
    params_free(&ps);
}

/* The AnyRef recipe's trainable set: frozen base, LoRA on all seven projections,
 * trainable embed_tokens and lm_head; two rows of the input are spliced feature
 * rows (id -1) whose embeddings come from the caller. Checks every trainable
 * tensor and d(input embeddings) by finite differences. */
static float *g_embeds;
static double splice_loss_from_ids(void *u) {
    (void)u;
    llama_embed(g_m, g_tok);
    memcpy(llama_embeds(g_m) + 3 * 8, g_embeds, 8 * sizeof(float));   /* row 3 */
    memcpy(llama_embeds(g_m) + 8 * 8, g_embeds + 8, 8 * sizeof(float)); /* row 8 */
    return llama_forward_embeds(g_m, g_tgt, 42, NULL);
}
static void test_recipe_and_splice(void) {
    llama_cfg c = {.vocab = 11, .dim = 8, .layers = 2, .heads = 2, .kv_heads = 1, .mlp_hidden = 12,
                   .max_seq = 6, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 2,
                   .lora_alpha = 4.0f, .lora_dropout = 0.1f, .train_base = 0, .train_embed = 1, .train_lm_head = 1};
    if (llama_parse_lora_targets("q_proj,k_proj v_proj,o_proj,gate_proj,up_proj,down_proj", &c.lora_targets)) {
        t_fail("model.lora_targets", "%s", ar_error()); return;
    }
    unsigned bad;
    int rc = llama_parse_lora_targets("q_proj,w_proj", &bad);
    t_check(rc == -1 && strstr(ar_error(), "unknown LoRA target 'w_proj'") != NULL, "model lora target list parsing",
            "all seven -> 0x%x; bad entry: %s", c.lora_targets, ar_error());
    ar_params ps; params_init_empty(&ps);
    if (llama_declare(&c, &ps) || params_alloc(&ps)) { t_fail("model.recipe", "setup: %s", ar_error()); return; }
    params_randomize(&ps, 17);
    ar_rng r; rng_seed(&r, 19);
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        float *w = ps.w + p->off;
        if (strstr(p->name, "lora_B")) for (size_t j = 0; j < p->numel; j++) w[j] = (float)(rng_uniform(&r) - 0.5);
        else if (strstr(p->name, "proj.weight") || strstr(p->name, "embed") || strstr(p->name, "lm_head"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= 20.0f;
    }
    size_t frozen_with_grad = 0, trainable = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        int want = strstr(p->name, "lora_") || strstr(p->name, "embed_tokens") || strstr(p->name, "lm_head");
        if (want != p->trainable) frozen_with_grad++;
        trainable += p->trainable;
    }
    t_check(frozen_with_grad == 0 && trainable == 2 + 2 * 7 * 2, "model recipe trainable set",
            "%zu trainable tensors (LoRA A/B x 7 x 2 layers + embed + lm_head), %zu misclassified", trainable, frozen_with_grad);
    g_m = llama_create(&c, &ps, 2, 6);
    for (int i = 0; i < 12; i++) { g_tok[i] = (i * 7 + 3) % 11; g_tgt[i] = i % 6 < 2 ? -100 : (i * 5 + 1) % 11; }
    g_tok[3] = -1; g_tok[8] = -1;                      /* spliced rows */
    float feat[16];
    t_fill_normal(feat, 16, 1.0f, 23);
    g_embeds = feat;
    params_zero_grad(&ps);
    splice_loss_from_ids(NULL);
    llama_backward(g_m, 1.0f);
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable) continue;
        char nm[160];
        snprintf(nm, sizeof nm, "recipe grad %s", p->name + (strncmp(p->name, "model.", 6) ? 0 : 6));
        t_gradcheck(nm, splice_loss_from_ids, NULL, ps.w + p->off, ps.g + p->goff, p->numel, 3e-3f, 3e-2, 40);
    }
    /* d(input embeddings) of the spliced rows, by perturbing the caller's features */
    float dfeat[16];
    memcpy(dfeat, llama_embeds_grad(g_m) + 3 * 8, 8 * sizeof(float));
    memcpy(dfeat + 8, llama_embeds_grad(g_m) + 8 * 8, 8 * sizeof(float));
    t_gradcheck("recipe grad spliced input embeddings", splice_loss_from_ids, NULL, feat, dfeat, 16, 3e-3f, 3e-2, 16);
    llama_free(g_m);
    params_free(&ps);
}

/* Gradient checkpointing recomputes each layer in backward: every gradient and
 * d(input embeddings) must be bitwise the same, with far less activation memory. */
static void test_checkpointing(void) {
    llama_cfg c = {.vocab = 23, .dim = 16, .layers = 3, .heads = 4, .kv_heads = 2, .mlp_hidden = 24,
                   .max_seq = 9, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 2,
                   .lora_alpha = 4.0f, .lora_dropout = 0.2f, .train_embed = 1, .train_lm_head = 1,
                   .lora_targets = 0x7f};
    int tok[2 * 9], tgt[2 * 9];
    for (int i = 0; i < 18; i++) { tok[i] = (i * 5 + 1) % 23; tgt[i] = i % 9 < 3 ? -100 : (i * 7 + 2) % 23; }
    float *grads[2] = {NULL, NULL}, *dembed[2] = {NULL, NULL};
    float loss[2];
    size_t bytes[2], ng = 0;
    for (int ck = 0; ck < 2; ck++) {
        llama_cfg cc = c; cc.checkpoint_layers = ck;
        ar_params ps; params_init_empty(&ps);
        llama_declare(&cc, &ps); params_alloc(&ps); params_randomize(&ps, 31);
        for (int i = 0; i < ps.n; i++)
            if (strstr(ps.p[i].name, "lora_B")) t_fill_normal(ps.w + ps.p[i].off, ps.p[i].numel, 0.3f, 32 + i);
        llama *m = llama_create(&cc, &ps, 2, 9);
        params_zero_grad(&ps);
        loss[ck] = llama_forward(m, tok, tgt, 2, 9, 77, NULL);
        llama_backward(m, 1.0f);
        ng = ps.ng;
        grads[ck] = t_alloc(ps.ng); memcpy(grads[ck], ps.g, ps.ng * sizeof(float));
        dembed[ck] = t_alloc(18 * 16); memcpy(dembed[ck], llama_embeds_grad(m), 18 * 16 * sizeof(float));
        bytes[ck] = llama_activation_bytes(m);
        llama_free(m); params_free(&ps);
    }
    int same = loss[0] == loss[1] && !memcmp(grads[0], grads[1], ng * sizeof(float)) &&
               !memcmp(dembed[0], dembed[1], 18 * 16 * sizeof(float));
    t_check(same && bytes[1] < bytes[0] * 2 / 3, "model gradient checkpointing: bitwise equal gradients",
            "loss %.7g vs %.7g, %zu gradients %s, activations %zu -> %zu bytes", loss[0], loss[1], ng,
            same ? "identical" : "DIFFER", bytes[0], bytes[1]);
    for (int i = 0; i < 2; i++) { free(grads[i]); free(dembed[i]); }
}

/* The decoder with a refocusing head on its outputs (SPEC 2.5), the path the
 * [SEG] embedding takes: L = CE + Σ r · refocus(final hidden, last-layer
 * attention) for one position per sample. llama_backward_ex carries the head's
 * gradients into the hidden states and through the last layer's attention
 * probabilities; finite differences over every trainable tensor, with
 * gradient checkpointing on and off. */
static float g_r[16];
static int g_ck;
static double refocus_loss(void *u) {
    (void)u;
    float loss = llama_forward(g_m, g_tok, g_tgt, 2, 6, 42, NULL);
    const float *h = llama_final_hidden(g_m), *att = llama_last_attention(g_m);
    double l = loss;
    for (int b = 0; b < 2; b++) {
        float out[8];
        refocus_forward(out, h + (size_t)b * 6 * 8, att + (size_t)b * 2 * 6 * 6, 4, 1, 0.1f, 6, 6, 2, 8);
        for (int d = 0; d < 8; d++) l += (double)out[d] * g_r[b * 8 + d];
    }
    return l;
}
static void test_refocus_through_decoder(void) {
    for (g_ck = 0; g_ck < 2; g_ck++) {
        llama_cfg c = {.vocab = 11, .dim = 8, .layers = 2, .heads = 2, .kv_heads = 1, .mlp_hidden = 12,
                       .max_seq = 6, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 2,
                       .lora_alpha = 4.0f, .lora_dropout = 0.1f, .train_embed = 1, .train_lm_head = 1,
                       .checkpoint_layers = g_ck};
        ar_params ps; params_init_empty(&ps);
        llama_declare(&c, &ps); params_alloc(&ps); params_randomize(&ps, 41);
        for (int i = 0; i < ps.n; i++) {
            const ar_param *p = &ps.p[i];
            if (strstr(p->name, "lora_B")) t_fill_normal(ps.w + p->off, p->numel, 0.5f, 42 + i);
            else if (strstr(p->name, "proj.weight") || strstr(p->name, "embed") || strstr(p->name, "lm_head"))
                for (size_t j = 0; j < p->numel; j++) ps.w[p->off + j] *= 20.0f;
        }
        t_fill_normal(g_r, 16, 1.0f, 43);
        g_m = llama_create(&c, &ps, 2, 6);
        for (int i = 0; i < 12; i++) { g_tok[i] = (i * 7 + 3) % 11; g_tgt[i] = i % 6 < 2 ? -100 : (i * 5 + 1) % 11; }
        params_zero_grad(&ps);
        llama_forward(g_m, g_tok, g_tgt, 2, 6, 42, NULL);
        const float *h = llama_final_hidden(g_m), *att = llama_last_attention(g_m);
        float *dh = t_alloc(12 * 8), *datt = t_alloc(2 * 2 * 6 * 6);
        for (int b = 0; b < 2; b++)
            refocus_backward(dh + (size_t)b * 6 * 8, datt + (size_t)b * 2 * 6 * 6, g_r + b * 8, h + (size_t)b * 6 * 8,
                             att + (size_t)b * 2 * 6 * 6, 4, 1, 0.1f, 6, 6, 2, 8);
        llama_backward_ex(g_m, 1.0f, dh, datt);
        for (int i = 0; i < ps.n; i++) {
            const ar_param *p = &ps.p[i];
            if (!p->trainable) continue;
            char nm[180];
            snprintf(nm, sizeof nm, "refocus head%s grad %s", g_ck ? " (ckpt)" : "", p->name + (strncmp(p->name, "model.", 6) ? 0 : 6));
            t_gradcheck(nm, refocus_loss, NULL, ps.w + p->off, ps.g + p->goff, p->numel, 1e-3f, 3e-2, 30);
        }
        free(dh); free(datt);
        llama_free(g_m); params_free(&ps);
    }
}

/* With LoRA B = 0 the model equals its base: same logits with and without LoRA. */
static void test_lora_identity(void) {
    llama_cfg c = {.vocab = 13, .dim = 16, .layers = 1, .heads = 2, .kv_heads = 2, .mlp_hidden = 24,
                    .max_seq = 5, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .train_base = 0};
    ar_params base, lora; params_init_empty(&base); params_init_empty(&lora);
    llama_declare(&c, &base); params_alloc(&base); params_randomize(&base, 3);
    llama_cfg cl = c; cl.lora_rank = 4; cl.lora_alpha = 8; cl.lora_dropout = 0.0f;
    llama_declare(&cl, &lora); params_alloc(&lora); params_randomize(&lora, 4);
    for (int i = 0; i < base.n; i++)  /* copy the base weights by name */
        memcpy(params_w(&lora, base.p[i].name), base.w + base.p[i].off, base.p[i].numel * sizeof(float));
    llama *a = llama_create(&c, &base, 1, 5), *b = llama_create(&cl, &lora, 1, 5);
    int tok[5] = {1, 4, 9, 2, 12};
    llama_forward(a, tok, NULL, 1, 5, 0, NULL);
    llama_forward(b, tok, NULL, 1, 5, 0, NULL);
    double e = t_max_rel_err(llama_logits(b), llama_logits(a), 5 * 13);
    size_t ntrain = params_numel(&lora, 1);
    t_check(e == 0.0 && ntrain == 1 * 2 * 4 * 16 * 2, "model lora step 0 equals base, only LoRA trainable",
            "logit diff %.1e, trainable %zu", e, ntrain);
    llama_free(a); llama_free(b); params_free(&base); params_free(&lora);
}

/* 150 AdamW steps on "copy" must bring the answer loss far below chance (ln 13 = 2.56). */
static void test_learns(void) {
    llama_cfg c = {.vocab = 13, .dim = 32, .layers = 1, .heads = 2, .kv_heads = 1, .mlp_hidden = 64,
                    .max_seq = 11, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .train_base = 1};
    ar_params ps; params_init_empty(&ps);
    llama_declare(&c, &ps); params_alloc(&ps); params_randomize(&ps, 11);
    int B = 16, T = 11;
    llama *m = llama_create(&c, &ps, B, T);
    ar_optim_cfg oc = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .grad_clip = 1.0f,
                       .warmup_steps = 10, .total_steps = 150, .schedule = OPTIM_LINEAR};
    ar_rng r; rng_seed(&r, 5);
    int tok[16 * 11], tgt[16 * 11];
    float first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
        for (int b = 0; b < B; b++) {  /* BOS d1..d4 SEP d1..d4 EOS */
            int *t = tok + b * T, d[4];
            for (int i = 0; i < 4; i++) d[i] = (int)rng_below(&r, 10);
            t[0] = 10; for (int i = 0; i < 4; i++) t[1 + i] = t[6 + i] = d[i];
            t[5] = 11; t[10] = 12;
            for (int i = 0; i < T; i++) tgt[b * T + i] = (i + 1 < T && i + 1 >= 6) ? t[i + 1] : -100;
        }
        float loss = llama_forward(m, tok, tgt, B, T, 0, NULL);
        params_zero_grad(&ps); llama_backward(m, 1.0f);
        optim_step(&ps, &oc, step + 1, optim_lr_at(&oc, step));
        if (step == 0) first = loss;
        last = loss;
    }
    t_check(first > 2.0f && last < 0.5f, "model learns copy task (150 AdamW steps)",
            "answer loss %.3f -> %.3f (chance 2.565)", first, last);
    llama_free(m); params_free(&ps);
}

int main(void) {
    k_set_num_threads(1);
    test_gradients();
    test_recipe_and_splice();
    test_checkpointing();
    test_refocus_through_decoder();
    test_lora_identity();
    test_learns();
    return t_exit_code();
}
