/* tests/test_peft.c — PEFT adapter export and LoRA merge:
 * the adapter holds every LoRA and trainable tensor under PEFT's names with
 * the exact values and a config PEFT understands; a merged model (in memory
 * and through a safetensors file) gives the logits of the LoRA model. */
#include "checkpoints/peft.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/llama.h"
#include "tests/testlib.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llama_cfg base_cfg(void) {
    llama_cfg c = {.vocab = 29, .dim = 16, .layers = 2, .heads = 4, .kv_heads = 2, .mlp_hidden = 24,
                   .max_seq = 7, .norm_eps = 1e-6f, .rope_theta = 10000.0f};
    return c;
}

int main(void) {
    char dir[] = "/tmp/anyref_test_peft_XXXXXX";
    if (!mkdtemp(dir)) { t_fail("peft.tmpdir", "mkdtemp"); return 1; }
    llama_cfg lc = base_cfg();
    lc.lora_rank = 4; lc.lora_alpha = 8; lc.lora_dropout = 0.1f; lc.train_embed = lc.train_lm_head = 1;
    if (llama_parse_lora_targets("q_proj,v_proj,down_proj", &lc.lora_targets)) { t_fail("peft.targets", "%s", ar_error()); return 1; }
    ar_params lp; params_init_empty(&lp);
    if (llama_declare(&lc, &lp) || params_alloc(&lp)) { t_fail("peft.setup", "%s", ar_error()); return 1; }
    params_randomize(&lp, 5);
    ar_rng r; rng_seed(&r, 6);
    for (int i = 0; i < lp.n; i++)   /* non-zero B so the merge changes something */
        if (strstr(lp.p[i].name, "lora_B")) rng_fill_normal(&r, lp.w + lp.p[i].off, lp.p[i].numel, 0.0f, 0.3f);

    /* ---- export ---- */
    peft_info info = {.r = 4, .alpha = 8, .dropout = 0.1f, .base_model = "meta-llama/Llama-2-7b-hf"};
    int rc = peft_export(dir, &lp, &info);
    char path[256];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_file *f = rc ? NULL : st_open(path);
    int expect = 0, found = 0, exact = 1;
    for (int i = 0; f && i < lp.n; i++) {
        const ar_param *p = &lp.p[i];
        if (!p->trainable) continue;
        expect++;
        char nm[200];
        snprintf(nm, sizeof nm, "base_model.model.%s", p->name);
        int j = st_find(f, nm);
        if (j < 0) continue;
        found++;
        float *buf = t_alloc(p->numel);
        if (st_read_f32(f, j, buf, p->numel) || memcmp(buf, lp.w + p->off, p->numel * sizeof(float))) exact = 0;
        free(buf);
    }
    t_check(f && found == expect && st_count(f) == expect && exact, "peft adapter tensors: PEFT names, exact values",
            "%d of %d trainable tensors as base_model.model.<name>, file has %d, bitwise %s%s%s", found, expect,
            f ? st_count(f) : -1, exact ? "yes" : "NO", rc ? ": " : "", rc ? ar_error() : "");
    st_close(f);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    json_doc *d = json_parse_file(path);
    const json_value *root = d ? json_root(d) : NULL;
    const json_value *tm = root ? json_get(root, "target_modules") : NULL, *ms = root ? json_get(root, "modules_to_save") : NULL;
    int64_t rr = 0; double alpha = 0; const char *pt = NULL, *tt = NULL; size_t l;
    int ok = root && !json_get_int64(root, "r", &rr, "cfg") && !json_get_number(root, "lora_alpha", &alpha, "cfg") &&
             !json_get_string(root, "peft_type", &pt, &l, "cfg") && !json_get_string(root, "task_type", &tt, &l, "cfg") &&
             rr == 4 && alpha == 8 && !strcmp(pt, "LORA") && !strcmp(tt, "CAUSAL_LM") && tm && tm->n == 3 && ms && ms->n == 2 &&
             !strcmp(json_at(tm, 0)->str, "q_proj") && !strcmp(json_at(tm, 1)->str, "v_proj") && !strcmp(json_at(tm, 2)->str, "down_proj") &&
             !strcmp(json_at(ms, 0)->str, "embed_tokens") && !strcmp(json_at(ms, 1)->str, "lm_head");
    t_check(ok, "peft adapter_config.json", "r %lld, alpha %g, type %s/%s, targets %zu, modules_to_save %zu",
            (long long)rr, alpha, pt ? pt : "?", tt ? tt : "?", tm ? tm->n : 0, ms ? ms->n : 0);
    json_free(d);

    /* ---- merge: LoRA model logits (no dropout) == merged plain model logits ---- */
    int tok[2 * 7];
    for (int i = 0; i < 14; i++) tok[i] = (i * 11 + 3) % 29;
    llama *m1 = llama_create(&lc, &lp, 2, 7);
    llama_set_training(m1, 0);
    llama_forward(m1, tok, NULL, 2, 7, 0, NULL);
    float *l1 = t_alloc(14 * 29);
    k_download(l1, llama_logits(m1), 14 * 29 * sizeof(float));
    /* the base weights alone (before merging) give other logits: the merge must matter */
    char bpath[256];
    snprintf(bpath, sizeof bpath, "%s/base.safetensors", dir);
    int brc = peft_save_merged(bpath, &lp);
    int n = peft_merge(&lp, 8, 4);
    snprintf(path, sizeof path, "%s/merged.safetensors", dir);
    int src = n > 0 ? peft_save_merged(path, &lp) : -1;
    llama_cfg pc = base_cfg();
    pc.train_base = 1;
    ar_params pp; params_init_empty(&pp);
    llama_declare(&pc, &pp); params_alloc(&pp);
    st_report rep;
    int lrc = src ? -1 : st_load_params(path, &pp, 0, &rep);
    llama *m2 = llama_create(&pc, &pp, 2, 7);
    llama_forward(m2, tok, NULL, 2, 7, 0, NULL);
    float *l2 = t_alloc(14 * 29);
    k_download(l2, llama_logits(m2), 14 * 29 * sizeof(float));
    double e = t_max_rel_err(l2, l1, 14 * 29);
    ar_params bp; params_init_empty(&bp);
    llama_declare(&pc, &bp); params_alloc(&bp);
    double change = (!brc && !st_load_params(bpath, &bp, 0, NULL)) ? 0 : -1;
    if (change == 0) {
        llama *m0 = llama_create(&pc, &bp, 2, 7);
        llama_forward(m0, tok, NULL, 2, 7, 0, NULL);
        float *l0 = t_alloc(14 * 29);
        k_download(l0, llama_logits(m0), 14 * 29 * sizeof(float));
        change = t_max_rel_err(l0, l1, 14 * 29);
        free(l0); llama_free(m0);
    }
    params_free(&bp);
    t_check(change > 1e-2, "peft merge changes the base model", "base vs LoRA logits differ by %.2e (rel)", change);
    t_check(n == 6 && src == 0 && lrc == 0 && rep.n_unexpected == 0 && e < 1e-5, "peft merge == LoRA model",
            "%d projections merged, file loads with %d unexpected, max rel logit diff %.2e%s%s", n, rep.n_unexpected, e,
            (n < 0 || src || lrc) ? ": " : "", (n < 0 || src || lrc) ? ar_error() : "");
    llama_free(m1); llama_free(m2);
    free(l1); free(l2);
    params_free(&lp); params_free(&pp);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_exit_code();
}
