/* checkpoints/peft.c — see peft.h. */
#include "checkpoints/peft.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "kernels/kernels.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_lora(const char *name) { return strstr(name, ".lora_A.weight") || strstr(name, ".lora_B.weight"); }

static int select_adapter(void *ctx, const ar_param *p) { (void)ctx; return p->trainable || is_lora(p->name); }
static int select_merged(void *ctx, const ar_param *p) { (void)ctx; return !is_lora(p->name); }

static int peft_rename(void *ctx, const char *name, char *out, size_t cap) {
    (void)ctx;
    if ((size_t)snprintf(out, cap, "base_model.model.%s", name) >= cap) return ar_errorf("tensor name too long: '%s'", name);
    return 0;
}

/* "model.layers.3.self_attn.q_proj.lora_A.weight" -> "q_proj" */
static void module_of(const char *name, char *out, size_t cap) {
    const char *end = strstr(name, ".lora_A.weight");
    const char *start = end;
    while (start > name && start[-1] != '.') start--;
    snprintf(out, cap, "%.*s", (int)(end - start), start);
}

/* "model.embed_tokens.weight" -> "embed_tokens", "lm_head.weight" -> "lm_head" */
static void module_to_save(const char *name, char *out, size_t cap) {
    const char *end = strrchr(name, '.');
    const char *start = end;
    while (start > name && start[-1] != '.') start--;
    snprintf(out, cap, "%.*s", (int)(end - start), start);
}

static int add_unique(char list[][64], int *n, int max, const char *s) {
    for (int i = 0; i < *n; i++) if (!strcmp(list[i], s)) return 0;
    if (*n == max) return ar_errorf("too many distinct modules");
    snprintf(list[(*n)++], 64, "%s", s);
    return 0;
}

int peft_export(const char *dir, const ar_params *ps, const peft_info *info) {
    char targets[16][64], saves[16][64];
    int nt = 0, ns = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char m[64];
        if (strstr(p->name, ".lora_A.weight")) {
            module_of(p->name, m, sizeof m);
            if (add_unique(targets, &nt, 16, m)) return -1;
        } else if (p->trainable && !is_lora(p->name)) {
            module_to_save(p->name, m, sizeof m);
            if (add_unique(saves, &ns, 16, m)) return -1;
        }
    }
    if (nt == 0) return ar_errorf("peft export: the model has no LoRA tensors (set lora.rank > 0)");
    char path[2048];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_save(path, ps, select_adapter, peft_rename, NULL, NULL, 0)) return -1;

    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    const char *tv[16], *sv[16];
    for (int i = 0; i < nt; i++) tv[i] = targets[i];
    for (int i = 0; i < ns; i++) sv[i] = saves[i];
    return peft_write_config(path, info, tv, nt, sv, ns);
}

static void write_strings(FILE *f, const char *const *v, int n) {
    fprintf(f, "[");
    for (int i = 0; i < n; i++) { fprintf(f, i ? ", " : ""); json_write_string(f, v[i], strlen(v[i])); }
    fprintf(f, "]");
}

int peft_write_config(const char *path, const peft_info *info, const char *const *targets, int nt,
                      const char *const *saves, int ns) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ar_errorf("cannot write %s: %s", tmp, strerror(errno));
    const char *base = info->base_model ? info->base_model : "";
    fprintf(f, "{\n  \"base_model_name_or_path\": ");
    json_write_string(f, base, strlen(base));
    fprintf(f, ",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
               "  \"init_lora_weights\": true,\n  \"lora_alpha\": %.7g,\n  \"lora_dropout\": %.6g,\n"
               "  \"modules_to_save\": ", (double)info->alpha, (double)info->dropout);
    if (ns) write_strings(f, saves, ns); else fprintf(f, "null");
    fprintf(f, ",\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"target_modules\": ", info->r);
    write_strings(f, targets, nt);
    fprintf(f, ",\n  \"task_type\": \"CAUSAL_LM\"\n}\n");
    if (fflush(f) || ferror(f)) { fclose(f); unlink(tmp); return ar_errorf("cannot write %s: %s", tmp, strerror(errno)); }
    if (fclose(f)) { unlink(tmp); return ar_errorf("cannot write %s: %s", tmp, strerror(errno)); }
    return ar_commit_file(tmp, path);
}

int peft_merge(ar_params *ps, float alpha, int r) {
    if (r <= 0) return ar_errorf("peft merge: LoRA rank %d", r);
    const float scale = alpha / (float)r;
    int merged = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *A = &ps->p[i];
        const char *suffix = strstr(A->name, ".lora_A.weight");
        if (!suffix) continue;
        char base[160], bname[160];
        snprintf(base, sizeof base, "%.*s.weight", (int)(suffix - A->name), A->name);
        snprintf(bname, sizeof bname, "%.*s.lora_B.weight", (int)(suffix - A->name), A->name);
        const ar_param *W = params_find(ps, base), *B = params_find(ps, bname);
        if (!W || !B) return ar_errorf("peft merge: '%s' has no matching base weight or lora_B", A->name);
        int out = W->shape[0], in = W->shape[1];
        if (A->shape[0] != r || A->shape[1] != in || B->shape[0] != out || B->shape[1] != r)
            return ar_errorf("peft merge: shapes of '%s' [%d,%d], its lora_A [%d,%d] and lora_B [%d,%d] do not fit rank %d",
                             base, out, in, A->shape[0], A->shape[1], B->shape[0], B->shape[1], r);
        if (W->half)   /* the registry was built with model.frozen_weights = bf16 or fp16 */
            return ar_errorf("peft merge: '%s' is stored in 16 bits; merging needs a float32 base (build the model "
                             "with model.frozen_weights = fp32)", base);
        /* W[out,in] += scale * B[out,r] @ A[r,in] */
        matmul(ps->w + W->off, ps->w + B->off, ps->w + A->off, out, in, r, 0, 0, scale, 1.0f);
        merged++;
    }
    if (!merged) return ar_errorf("peft merge: the model has no LoRA tensors");
    return merged;
}

int peft_save_merged(const char *path, const ar_params *ps) {
    return st_save(path, ps, select_merged, NULL, NULL, NULL, 0);
}
