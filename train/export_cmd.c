/* train/export_cmd.c — `anyref export RUN_DIR|CKPT --out DIR [--merged]
 * [--shard-mb N] [section.key=value ...]`: a training checkpoint as the files
 * the official AnyRef code loads (checkpoints/export.h): the PEFT adapter with
 * the trained non-LoRA modules (adapter_model.safetensors, adapter_config.json,
 * non_lora_trainables.safetensors) and, with --merged, the full model with the
 * LoRA merged (model.safetensors, or HF shards + index with --shard-mb).
 *
 * RUN_DIR means its newest checkpoint. The model is rebuilt from the config
 * stored in the checkpoint (plus the overrides), so the run's data files must
 * still be readable; --merged also reads the base weights (model.init,
 * sam.init, clip.init, ...) because the checkpoint holds only the trained tensors.
 * Depends on train/run.h, checkpoints/{checkpoint,export}.h. */
#include "train/export_cmd.h"
#include "train/run.h"
#include "train/train.h"
#include "checkpoints/export.h"
#include "core/error.h"
#include "core/log.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: anyref export RUN_DIR|CKPT.h5 --out DIR [--merged] [--shard-mb N] [section.key=value ...]\n"
               "  DIR/adapter_model.safetensors + adapter_config.json   LoRA + trained modules, PEFT / AnyRef names\n"
               "  DIR/non_lora_trainables.safetensors                    the trained non-LoRA modules alone\n"
               "  --merged: DIR/model.safetensors (or model-0000i-of-0000n.safetensors + index with --shard-mb N)\n"
               "            every tensor with the LoRA merged, AnyRefForCausalLM names\n");
}

static int run_export(const char *src, const char *out, int merged, long shard_mb, char **over, int n_over) {
    char ck[PATH_MAX];
    snprintf(ck, sizeof ck, "%s", src);
    size_t n = strlen(ck);
    if (n < 3 || strcmp(ck + n - 3, ".h5") != 0) {   /* a run directory: its newest checkpoint */
        int rc = ckpt_latest(src, ck, sizeof ck);
        if (rc < 0) return -1;
        if (rc == 1) return ar_errorf("%s: no checkpoint in %s/checkpoints", src, src);
    }
    int64_t step = 0;
    char *text = ckpt_read_config(ck, &step);
    if (!text) return -1;
    ar_config *cfg = cfg_new(train_schema, train_schema_len);
    run_t r;
    memset(&r, 0, sizeof r);
    r.skip_init = !merged;   /* the adapter needs only the trained tensors */
    int rc = -1;
    if (!cfg || cfg_load_string(cfg, text, strlen(text), ck)) goto out;
    for (int i = 0; i < n_over; i++)
        if (cfg_override(cfg, over[i])) { ar_error_prefix("%s: ", over[i]); goto out; }
    /* the merge adds the LoRA product into the float32 base as loaded from
     * model.init, also for a run that kept its frozen weights in bf16; the
     * encoders' weights go out as loaded too */
    if (merged && (cfg_override(cfg, "model.frozen_weights=fp32") ||
                   cfg_override(cfg, "sam_encoder.frozen_weights=fp32") || cfg_override(cfg, "clip.frozen_weights=fp32") ||
                   cfg_override(cfg, "audio.frozen_weights=fp32")))
        goto out;
    if (run_setup(&r, cfg)) goto out;
    ar_train_state st;
    memset(&st, 0, sizeof st);
    if (ckpt_load(ck, &r.ps, &st, 0)) { ckpt_state_free(&st); goto out; }
    ckpt_state_free(&st);
    char base[PATH_MAX];
    const char *init = cfg_str(cfg, "model.init");
    if (!init[0] || !realpath(init, base)) snprintf(base, sizeof base, "%s", init);
    peft_info info = {.r = r.mc.lora_rank, .alpha = r.mc.lora_alpha, .dropout = r.mc.lora_dropout, .base_model = base};
    if (r.mc.lora_rank > 0) {
        if (export_adapter(out, &r.ps, &info)) goto out;
        printf("adapter: %s/adapter_model.safetensors, adapter_config.json, non_lora_trainables.safetensors "
               "(%s step %lld)\n", out, ck, (long long)step);
    } else if (!merged) {
        ar_errorf("%s: the run has no LoRA (lora.rank = 0): export it with --merged", ck);
        goto out;
    }
    if (merged) {
        int m = export_merged(out, &r.ps, &info, shard_mb > 0 ? (size_t)shard_mb << 20 : 0);
        if (m < 0) goto out;
        printf("merged: %s/%s (%d LoRA projections merged)\n", out,
               shard_mb > 0 ? "model.safetensors.index.json" : "model.safetensors", m);
    }
    rc = 0;
out:
    run_teardown(&r);
    cfg_free(cfg);
    free(text);
    return rc;
}

int export_main(int argc, char **argv) {
    const char *src = NULL, *out = NULL;
    int merged = 0;
    long shard_mb = 0;
    char **over = calloc((size_t)argc + 1, sizeof *over);
    int n_over = 0;
    if (!over) { log_error("out of memory"); return 1; }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--merged")) merged = 1;
        else if (!strcmp(argv[i], "--shard-mb") && i + 1 < argc) {
            char *e;
            shard_mb = strtol(argv[++i], &e, 10);
            if (*e || shard_mb <= 0) { fprintf(stderr, "anyref export: --shard-mb %s (expected a positive integer)\n", argv[i]); free(over); return 2; }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); free(over); return 0; }
        else if (argv[i][0] == '-') { fprintf(stderr, "anyref export: unknown option %s\n", argv[i]); usage(stderr); free(over); return 2; }
        else if (!src) src = argv[i];
        else over[n_over++] = argv[i];
    }
    if (!src || !out) { usage(stderr); free(over); return 2; }
    if (shard_mb && !merged) { fprintf(stderr, "anyref export: --shard-mb needs --merged\n"); free(over); return 2; }
    int rc = run_export(src, out, merged, shard_mb, over, n_over);
    if (rc) log_error("%s", ar_error());
    free(over);
    return rc ? 1 : 0;
}
