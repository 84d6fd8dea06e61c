/* checkpoints/export.c — see export.h. */
#include "checkpoints/export.h"
#include "checkpoints/names.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_lora(const char *n) { return strstr(n, ".lora_A.weight") || strstr(n, ".lora_B.weight"); }

static int sel_adapter(void *ctx, const ar_param *p) { (void)ctx; return p->trainable || is_lora(p->name); }
static int sel_non_lora(void *ctx, const ar_param *p) { (void)ctx; return p->trainable && !is_lora(p->name); }

static int rename_layout(void *ctx, const char *name, char *out, size_t cap) {
    return nm_to_official(name, *(const int *)ctx, out, cap);
}

/* A list of distinct strings, kept sorted. */
typedef struct { char **v; int n, cap; } strlist;
static int sl_add(strlist *l, const char *s) {
    int lo = 0, hi = l->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, c = strcmp(l->v[mid], s);
        if (!c) return 0;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        char **nv = realloc(l->v, (size_t)cap * sizeof *nv);
        if (!nv) return ar_errorf("out of memory");
        l->v = nv; l->cap = cap;
    }
    char *d = strdup(s);
    if (!d) return ar_errorf("out of memory");
    memmove(l->v + lo + 1, l->v + lo, (size_t)(l->n - lo) * sizeof *l->v);
    l->v[lo] = d;
    l->n++;
    return 0;
}
static void sl_free(strlist *l) { for (int i = 0; i < l->n; i++) free(l->v[i]); free(l->v); }

int export_adapter(const char *dir, const ar_params *ps, const peft_info *info) {
    strlist targets = {0}, saves = {0};
    int rc = -1, n_lora = 0, n_other = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char m[1024];
        const char *a = strstr(p->name, ".lora_A.weight");
        if (a) {   /* the module path as AnyRefForCausalLM names it */
            char base[AR_PARAM_NAME_LEN + 16];
            snprintf(base, sizeof base, "%.*s.weight", (int)(a - p->name), p->name);
            if (nm_to_official(base, NM_LAYOUT_ANYREF, m, sizeof m)) goto out;
            m[strlen(m) - strlen(".weight")] = 0;
            if (sl_add(&targets, m)) goto out;
            n_lora++;
        } else if (p->trainable && !is_lora(p->name)) {
            if (nm_module_to_save(p->name, m, sizeof m) || sl_add(&saves, m)) goto out;
            n_other++;
        }
    }
    if (!n_lora) { ar_errorf("export: the model has no LoRA tensors (set lora.rank > 0)"); goto out; }
    int lay = NM_LAYOUT_PEFT;
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_save(path, ps, sel_adapter, rename_layout, &lay, NULL, 0)) goto out;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (peft_write_config(path, info, (const char *const *)targets.v, targets.n, (const char *const *)saves.v, saves.n))
        goto out;
    snprintf(path, sizeof path, "%s/non_lora_trainables.safetensors", dir);
    if (n_other && st_save(path, ps, sel_non_lora, rename_layout, &lay, NULL, 0)) goto out;
    rc = 0;
out:
    sl_free(&targets);
    sl_free(&saves);
    return rc;
}

/* Shard selection: tensors whose shard[] equals the one being written. */
typedef struct { const int *shard; int want; const ar_params *ps; } shard_sel;
static int sel_shard(void *ctx, const ar_param *p) {
    const shard_sel *s = ctx;
    return !is_lora(p->name) && s->shard[p - s->ps->p] == s->want;
}
typedef struct { shard_sel s; int layout; } shard_ctx;
static int sel_shard_ctx(void *ctx, const ar_param *p) { return sel_shard(&((shard_ctx *)ctx)->s, p); }
static int rename_shard_ctx(void *ctx, const char *name, char *out, size_t cap) {
    return nm_to_official(name, ((shard_ctx *)ctx)->layout, out, cap);
}

int export_merged(const char *dir, ar_params *ps, const peft_info *info, size_t shard_bytes) {
    int has_lora = 0;
    for (int i = 0; i < ps->n && !has_lora; i++) has_lora = is_lora(ps->p[i].name) != 0;
    int merged = 0;
    if (has_lora && (merged = peft_merge(ps, info->alpha, info->r)) < 0) return -1;
    int *shard = calloc(ps->n ? (size_t)ps->n : 1, sizeof *shard);
    if (!shard) return ar_errorf("out of memory");
    int nshard = 1, rc = -1;
    size_t cur = 0, total = 0;
    for (int i = 0; i < ps->n; i++) {
        if (is_lora(ps->p[i].name)) continue;
        size_t b = ps->p[i].numel * sizeof(float);
        if (shard_bytes && cur > 0 && cur + b > shard_bytes) { nshard++; cur = 0; }
        shard[i] = nshard - 1;
        cur += b;
        total += b;
    }
    char path[4096];
    shard_ctx c = {{shard, 0, ps}, NM_LAYOUT_ANYREF};
    if (!shard_bytes || nshard == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (st_save(path, ps, sel_shard_ctx, rename_shard_ctx, &c, NULL, 0)) goto out;
        rc = merged;
        goto out;
    }
    for (int s = 0; s < nshard; s++) {
        c.s.want = s;
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, nshard);
        if (st_save(path, ps, sel_shard_ctx, rename_shard_ctx, &c, NULL, 0)) goto out;
    }
    {
        char idx[4200], tmp[4300];
        snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
        snprintf(tmp, sizeof tmp, "%s.tmp", idx);
        FILE *f = fopen(tmp, "w");
        if (!f) { ar_errorf("cannot write %s: %s", tmp, strerror(errno)); goto out; }
        fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {", total);
        int first = 1;
        for (int i = 0; i < ps->n; i++) {
            if (is_lora(ps->p[i].name)) continue;
            char n[1024], file[64];
            if (nm_to_official(ps->p[i].name, NM_LAYOUT_ANYREF, n, sizeof n)) { fclose(f); unlink(tmp); goto out; }
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard[i] + 1, nshard);
            fprintf(f, "%s\n    ", first ? "" : ",");
            json_write_string(f, n, strlen(n));
            fprintf(f, ": ");
            json_write_string(f, file, strlen(file));
            first = 0;
        }
        fprintf(f, "\n  }\n}\n");
        if (fflush(f) || ferror(f)) { fclose(f); unlink(tmp); ar_errorf("cannot write %s: %s", tmp, strerror(errno)); goto out; }
        if (fclose(f)) { unlink(tmp); ar_errorf("cannot write %s: %s", tmp, strerror(errno)); goto out; }
        if (ar_commit_file(tmp, idx)) goto out;
    }
    rc = merged;
out:
    free(shard);
    return rc;
}
