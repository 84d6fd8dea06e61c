/* tests/test_names.c — the official-name table (checkpoints/names.h) and the
 * export to AnyRef's files (checkpoints/export.h), on the tiny AnyRef model of
 * tests/tiny_anyref.h with references, ImageBind audio and a SAM image encoder
 * (every component of the table):
 *   - round trips ours -> official -> ours for every tensor in every layout,
 *     and explicit names from the public AnyRef / LISA / PEFT code;
 *   - a safetensors file written with official names loads through the table
 *     (every value, per-component report counts, unused / unknown tensors);
 *   - missing tensors and strict mode fail naming the tensors, weights unchanged;
 *   - the export: adapter (PEFT names, config), non_lora_trainables, merged model
 *     (= W + alpha/r B A to 1e-6, every name of AnyRefForCausalLM), sharded merge;
 *   - every exported name and shape equals the state_dict keys the reference
 *     script tests/ref/names_ref.py lists for the same config
 *     (tests/fixtures/names_anyref_keys.txt). */
#include "checkpoints/export.h"
#include "checkpoints/names.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/json.h"
#include "model/sam_image_encoder.h"
#include "tests/testlib.h"
#include "tests/tiny_anyref.h"
#include "core/config.h"
#include "train/export_cmd.h"
#include "train/train.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int declare_tiny(ar_params *ps, const char *const *extra, int n_extra) {
    anyref_cfg ac = tiny_anyref_cfg(40, 12, 39, 0.0f, 0.0f);
    refs_cfg rc = tiny_refs_cfg(1, 1, 1, 1);
    sam_encoder_cfg e = sam_encoder_vit_b(NULL);
    e.img_size = 64; e.patch = 16; e.dim = 16; e.depth = 2; e.heads = 2; e.mlp_dim = 64; e.out_chans = 16;
    e.window = 3;
    memset(e.global_attn, 0, sizeof e.global_attn);
    e.global_attn[1] = 1;
    params_init_empty(ps);
    if (anyref_declare(&ac, ps) || refs_declare(&rc, ps) || sam_encoder_declare(&e, ps)) return -1;
    for (int i = 0; i < n_extra; i++) {
        int sh[1] = {3};
        if (params_add(ps, extra[i], 1, sh, 0, INIT_NORMAL, 1.0f)) return -1;
    }
    return params_alloc(ps);
}

static int rename_or_keep(void *ctx, const char *name, char *out, size_t cap) {
    if (nm_to_official(name, *(const int *)ctx, out, cap) == 0) return 0;
    ar_error_clear();
    snprintf(out, cap, "%s", name);
    return 0;
}

static const char *skip_name;
static int all_but(void *ctx, const ar_param *p) { (void)ctx; return !skip_name || strcmp(p->name, skip_name) != 0; }

static int same_weights(const ar_params *a, const ar_params *b, const char **first_diff) {
    for (int i = 0; i < a->n; i++) {
        const ar_param *q = params_find(b, a->p[i].name);
        if (!q || memcmp(a->w + a->p[i].off, b->w + q->off, a->p[i].numel * sizeof(float))) {
            *first_diff = a->p[i].name;
            return 0;
        }
    }
    return 1;
}

static int has_str(const json_value *arr, const char *s) {
    if (!arr || arr->type != JSON_ARRAY) return 0;
    for (size_t i = 0; i < arr->n; i++) if (arr->items[i].type == JSON_STRING && !strcmp(arr->items[i].str, s)) return 1;
    return 0;
}

static void test_table(const ar_params *ps) {
    int bad = 0, comps[NM_NCOMP] = {0};
    char off[1024], back[1024], lower[1024];
    for (int i = 0; i < ps->n; i++) {
        const char *n = ps->p[i].name;
        int c = nm_component_of(n);
        if (c < 0) { if (!bad++) t_fail("names.component", "'%s' has no component", n); continue; }
        comps[c]++;
        for (int l = 0; l < NM_NLAYOUTS; l++) {
            int lay = -1;
            if (nm_to_official(n, l, off, sizeof off)) { if (!bad++) t_fail("names.to", "%s", ar_error()); continue; }
            int want = l;   /* the detected layout: the first one spelling the name this way */
            for (int k = 0; k < l; k++) {
                nm_to_official(n, k, lower, sizeof lower);
                if (!strcmp(lower, off)) { want = k; break; }
            }
            int c2 = nm_from_official(off, back, sizeof back, &lay);
            if (c2 != c || strcmp(back, n) || lay != want) {
                if (!bad++) t_fail("names.roundtrip", "'%s' -> %s '%s' -> '%s' (component %d/%d, layout %d/%d)", n,
                                   nm_layout_name(l), off, back, c2, c, lay, want);
            }
        }
    }
    int missing_comp = 0;
    for (int c = 0; c < NM_NCOMP; c++) missing_comp += comps[c] == 0;
    t_check(!bad && !missing_comp, "names.roundtrip",
            "%d tensors x %d layouts: ours -> official -> ours; %d components, each with >= 1 tensor "
            "(lora %d, sam_encoder %d, clip %d, audio %d)", ps->n, NM_NLAYOUTS, NM_NCOMP - missing_comp,
            comps[NM_LORA], comps[NM_SAM_ENCODER], comps[NM_CLIP], comps[NM_AUDIO]);

    /* explicit names from the public code (anyref.py, LLaVA CLIPVisionTower, PEFT 0.4) */
    static const struct { const char *ours; int layout; const char *official; } EX[] = {
        {"mask_decoder.output_upscaling.0.weight", NM_LAYOUT_ANYREF, "model.visual_model.mask_decoder.output_upscaling.0.weight"},
        {"mask_decoder.output_upscaling.0.weight", NM_LAYOUT_PEFT,
         "base_model.model.model.visual_model.mask_decoder.output_upscaling.0.weight"},
        {"mask_decoder.output_upscaling.0.weight", NM_LAYOUT_PEFT_FULL,
         "base_model.model.model.visual_model.mask_decoder.output_upscaling.modules_to_save.default.0.weight"},
        {"mask_decoder.iou_token.weight", NM_LAYOUT_PEFT_FULL, "base_model.model.model.visual_model.mask_decoder.iou_token.weight"},
        {"mask_decoder.mask_tokens.weight", NM_LAYOUT_PEFT_FULL,
         "base_model.model.model.visual_model.mask_decoder.mask_tokens.modules_to_save.default.weight"},
        {"image_encoder.blocks.0.attn.qkv.weight", NM_LAYOUT_ANYREF, "model.visual_model.image_encoder.blocks.0.attn.qkv.weight"},
        {"prompt_encoder.no_mask_embed.weight", NM_LAYOUT_NATIVE, "prompt_encoder.no_mask_embed.weight"},
        {"model.layers.1.self_attn.q_proj.lora_A.weight", NM_LAYOUT_PEFT,
         "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"},
        {"model.layers.1.self_attn.q_proj.lora_B.weight", NM_LAYOUT_PEFT_FULL,
         "base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight"},
        {"model.layers.1.self_attn.q_proj.weight", NM_LAYOUT_PEFT_FULL, "base_model.model.model.layers.1.self_attn.q_proj.weight"},
        {"model.text_hidden_fcs.0.2.bias", NM_LAYOUT_PEFT_FULL,
         "base_model.model.model.text_hidden_fcs.modules_to_save.default.0.2.bias"},
        {"lm_head.weight", NM_LAYOUT_PEFT_FULL, "base_model.model.lm_head.modules_to_save.default.weight"},
        {"model.embed_tokens.weight", NM_LAYOUT_PEFT, "base_model.model.model.embed_tokens.weight"},
        {"vision_model.encoder.layers.0.self_attn.q_proj.weight", NM_LAYOUT_ANYREF,
         "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"},
        {"model.mm_projector.0.weight", NM_LAYOUT_ANYREF, "model.mm_projector.0.weight"},
        {"modality_trunks.audio.blocks.0.attn.in_proj_weight", NM_LAYOUT_ANYREF,
         "model.audio_encoder.modality_trunks.audio.blocks.0.attn.in_proj_weight"},
        {"modality_preprocessors.audio.rgbt_stem.proj.weight", NM_LAYOUT_NATIVE, "modality_preprocessors.audio.rgbt_stem.proj.weight"},
        {"model.audio_projector.weight", NM_LAYOUT_PEFT_FULL, "base_model.model.model.audio_projector.modules_to_save.default.weight"},
    };
    int ex_bad = 0;
    for (size_t i = 0; i < sizeof EX / sizeof *EX; i++) {
        if (nm_to_official(EX[i].ours, EX[i].layout, off, sizeof off) || strcmp(off, EX[i].official)) {
            if (!ex_bad++) t_fail("names.explicit", "'%s' as %s: '%s', expected '%s'", EX[i].ours,
                                  nm_layout_name(EX[i].layout), off, EX[i].official);
        }
    }
    if (!ex_bad) t_ok("names.explicit", "%zu names as the public AnyRef / LISA / PEFT code spells them", sizeof EX / sizeof *EX);

    static const struct { const char *official; int comp; } CL[] = {
        {"prompt_encoder.point_embeddings.0.weight", NM_UNUSED},
        {"model.visual_model.prompt_encoder.mask_downscaling.0.weight", NM_UNUSED},
        {"text_model.embeddings.token_embedding.weight", NM_UNUSED},
        {"logit_scale", NM_UNUSED},
        {"model.vision_tower.vision_tower.vision_model.embeddings.position_ids", NM_UNUSED},
        {"modality_trunks.vision.blocks.0.attn.in_proj_weight", NM_UNUSED},
        {"modality_postprocessors.audio.1.log_logit_scale", NM_UNUSED},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", NM_UNUSED},
        {"base_model.model.model.text_hidden_fcs.original_module.0.0.weight", NM_UNUSED},
        {"foo.bar", NM_UNKNOWN},
        {"mask_decoder.not_a_tensor", NM_SAM_DECODER},
        {"modality_heads.audio.2.weight", NM_AUDIO},
    };
    int cl_bad = 0;
    for (size_t i = 0; i < sizeof CL / sizeof *CL; i++) {
        int c = nm_from_official(CL[i].official, back, sizeof back, NULL);
        if (c != CL[i].comp && !cl_bad++)
            t_fail("names.classify", "'%s' is %s, expected %s", CL[i].official, nm_component_name(c), nm_component_name(CL[i].comp));
    }
    if (!cl_bad) t_ok("names.classify", "%zu official names: unused (SAM point prompts, CLIP text, other ImageBind "
                      "modalities, inv_freq, PEFT original_module), unknown, in a component", sizeof CL / sizeof *CL);
}

static void test_load(const char *dir, ar_params *src, ar_params *dst) {
    char path[512];
    snprintf(path, sizeof path, "%s/anyref_full.safetensors", dir);
    int lay = NM_LAYOUT_ANYREF;
    skip_name = NULL;
    if (st_save(path, src, NULL, rename_or_keep, &lay, NULL, 0)) { t_fail("names.load.write", "%s", ar_error()); return; }

    /* 1. everything through the table, auto layout */
    nm_report rep;
    nm_load_opts o = {.components = 0, .layout = NM_LAYOUT_AUTO};
    params_randomize(dst, 77);
    int rc = nm_load(path, dst, &o, &rep);
    const char *diff = NULL;
    char buf[4096];
    nm_report_format(&rep, buf, sizeof buf);
    int counts_ok = rc == 0 && rep.n_unused == 1 && rep.c[NM_SAM_DECODER].unexpected == 1 && rep.c[NM_NCOMP].unexpected == 1 &&
                    rep.n_other == 0 && rep.by_layout[NM_LAYOUT_NATIVE] + rep.by_layout[NM_LAYOUT_ANYREF] == dst->n;
    for (int c = 0; c < NM_NCOMP; c++) counts_ok &= rep.c[c].loaded == rep.c[c].declared && rep.c[c].missing == 0 && rep.c[c].declared > 0;
    t_check(counts_ok && same_weights(dst, src, &diff), "names.load.anyref",
            "%d tensors from AnyRefForCausalLM names, every value equal%s%s; report:\n%s", dst->n, diff ? ", differs: " : "",
            diff ? diff : "", buf);
    t_check(!strcmp(rep.c[NM_SAM_DECODER].unexpected_names[0], "model.visual_model.mask_decoder.extra.weight") &&
            !strcmp(rep.c[NM_NCOMP].unexpected_names[0], "foo.bar"),
            "names.load.report_names", "unexpected: '%s' (sam_decoder), '%s' (unknown)",
            rep.c[NM_SAM_DECODER].unexpected_names[0], rep.c[NM_NCOMP].unexpected_names[0]);

    /* 2. strict: the unexpected tensors are an error naming them, weights unchanged */
    params_randomize(dst, 78);
    float first = dst->w[0];
    o.strict = 1;
    rc = nm_load(path, dst, &o, &rep);
    const char *e = ar_error();
    t_check(rc == -1 && strstr(e, "strict") && strstr(e, "'foo.bar'") && strstr(e, "'model.visual_model.mask_decoder.extra.weight'") &&
            dst->w[0] == first, "names.load.strict_unexpected", "%s", e);

    /* 3. a subset of components (sam.init): the rest counted as other, untouched */
    params_randomize(dst, 79);
    float keep = params_w(dst, "model.layers.0.self_attn.q_proj.weight")[0];
    nm_load_opts os = {.components = NM_BIT(NM_SAM_PROMPT) | NM_BIT(NM_SAM_DECODER), .layout = NM_LAYOUT_AUTO};
    rc = nm_load(path, dst, &os, &rep);
    const float *dw = params_w(dst, "mask_decoder.iou_token.weight"), *sw = params_w(src, "mask_decoder.iou_token.weight");
    t_check(rc == 0 && rep.n_other > 0 && rep.c[NM_LLAMA].declared == 0 && dw[0] == sw[0] &&
            params_w(dst, "model.layers.0.self_attn.q_proj.weight")[0] == keep,
            "names.load.subset", "prompt encoder + mask decoder: loaded %d + %d, other components %d, LLaMA untouched",
            rep.c[NM_SAM_PROMPT].loaded, rep.c[NM_SAM_DECODER].loaded, rep.n_other);

    /* 4. missing: an error naming the tensor; allowed per component; strict still refuses */
    snprintf(path, sizeof path, "%s/peft_full_missing.safetensors", dir);
    lay = NM_LAYOUT_PEFT_FULL;
    skip_name = "mask_decoder.iou_token.weight";
    if (st_save(path, src, all_but, rename_or_keep, &lay, NULL, 0)) { t_fail("names.load.write2", "%s", ar_error()); return; }
    skip_name = NULL;
    params_randomize(dst, 80);
    first = dst->w[0];
    nm_load_opts om = {.components = 0, .layout = NM_LAYOUT_PEFT_FULL};
    rc = nm_load(path, dst, &om, &rep);
    e = ar_error();
    t_check(rc == -1 && strstr(e, "lacks 1 tensor") && strstr(e, "mask_decoder.iou_token.weight") && strstr(e,
            "base_model.model.model.visual_model.mask_decoder.iou_token.weight") && dst->w[0] == first,
            "names.load.missing", "%s", e);
    om.allow_missing = NM_BIT(NM_SAM_DECODER);
    rc = nm_load(path, dst, &om, &rep);
    nm_report_format(&rep, buf, sizeof buf);
    t_check(rc == 0 && rep.c[NM_SAM_DECODER].missing == 1 &&
            !strcmp(rep.c[NM_SAM_DECODER].missing_names[0], "mask_decoder.iou_token.weight") &&
            rep.by_layout[NM_LAYOUT_PEFT_FULL] == dst->n - 1 && params_w(dst, "lm_head.weight")[5] == params_w(src, "lm_head.weight")[5],
            "names.load.peft_full", "PeftModel.state_dict names (LoRA .default, modules_to_save.default), "
            "1 allowed missing; report:\n%s", buf);
    om.strict = 1;
    rc = nm_load(path, dst, &om, &rep);
    e = ar_error();
    t_check(rc == -1 && strstr(e, "strict") && strstr(e, "mask_decoder.iou_token.weight"), "names.load.strict_missing", "%s", e);
}

/* Every exported name/shape vs the reference script's list: "full" keys in the
 * merged model, "adapter" keys in the adapter, nothing else in either;
 * "unused" keys classified unused by the table. */
static int shape_str(const st_file *m, int i, char *got, size_t cap) {
    int nd = 0;
    const int64_t *sh = st_shape(m, i, &nd);
    size_t at = 0;
    got[0] = 0;
    for (int d = 0; d < nd && at < cap; d++) at += (size_t)snprintf(got + at, cap - at, "%s%lld", d ? "," : "", (long long)sh[d]);
    return 0;
}

static void test_fixture(const char *fixture, const char *merged, const char *adapter) {
    FILE *f = fopen(fixture, "r");
    if (!f) { t_fail("names.fixture", "cannot open %s", fixture); return; }
    st_file *m = st_open(merged), *a = st_open(adapter);
    if (!m || !a) { fclose(f); st_close(m); st_close(a); t_fail("names.fixture", "%s", ar_error()); return; }
    char line[1024], kind[32], name[512], shape[256], ours[1024];
    int n[3] = {0}, bad[3] = {0}, seen[2] = {0};
    char first[3][1200] = {"", "", ""};
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%31s %511s %255s", kind, name, shape) != 3) continue;
        int k = !strcmp(kind, "full") ? 0 : !strcmp(kind, "adapter") ? 1 : !strcmp(kind, "unused") ? 2 : -1;
        if (k < 0) continue;
        n[k]++;
        if (k == 2) {
            if (nm_from_official(name, ours, sizeof ours, NULL) != NM_UNUSED && !bad[2]++)
                snprintf(first[2], sizeof first[2], "%s", name);
            continue;
        }
        const st_file *s = k ? a : m;
        int i = st_find(s, name);
        char got[256] = "";
        if (i >= 0) { shape_str(s, i, got, sizeof got); seen[k]++; }
        if ((i < 0 || strcmp(got, shape)) && !bad[k]++)
            snprintf(first[k], sizeof first[k], "%s [%s] (export has [%s])", name, shape, got);
    }
    fclose(f);
    t_check(n[0] > 0 && !bad[0] && seen[0] == st_count(m), "names.fixture.merged",
            "%d AnyRefForCausalLM state_dict keys (tests/ref/names_ref.py), each in the merged export with its shape, "
            "nothing else (%d tensors)%s%s", n[0], st_count(m), bad[0] ? "; first mismatch: " : "", first[0]);
    t_check(n[1] > 0 && !bad[1] && seen[1] == st_count(a), "names.fixture.adapter",
            "%d PEFT adapter keys, each in adapter_model.safetensors with its shape, nothing else (%d)%s%s", n[1],
            st_count(a), bad[1] ? "; first mismatch: " : "", first[1]);
    t_check(n[2] > 0 && !bad[2], "names.fixture.unused", "%d state_dict keys the C model lacks are documented unused "
            "(SAM point/mask prompts, ImageBind logit-scale buffer)%s%s", n[2], bad[2] ? "; not: " : "", first[2]);
    st_close(m);
    st_close(a);
}

static void test_export(const char *dir, ar_params *ps) {
    /* non-zero B so the merge changes something */
    for (int i = 0; i < ps->n; i++)
        if (strstr(ps->p[i].name, "lora_B")) t_fill_normal(ps->w + ps->p[i].off, ps->p[i].numel, 0.3f, 900 + (uint64_t)i);
    peft_info info = {.r = 2, .alpha = 4.0f, .dropout = 0.05f, .base_model = "LLaVA-Lightning-7B-v1-1"};
    char out[512], path[700];
    snprintf(out, sizeof out, "%s/export", dir);
    if (export_adapter(out, ps, &info)) { t_fail("names.export.adapter", "%s", ar_error()); return; }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out);
    st_file *a = st_open(path);
    snprintf(path, sizeof path, "%s/non_lora_trainables.safetensors", out);
    st_file *nl = st_open(path);
    if (!a || !nl) { t_fail("names.export.adapter", "%s", ar_error()); st_close(a); st_close(nl); return; }
    int want = 0, want_nl = 0, bad = 0;
    char off[1024];
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        int lora = strstr(p->name, ".lora_") != NULL;
        if (!lora && !p->trainable) continue;
        want++;
        want_nl += !lora;
        nm_to_official(p->name, NM_LAYOUT_PEFT, off, sizeof off);
        int k = st_find(a, off), k2 = lora ? 0 : st_find(nl, off);
        float *h = t_alloc(p->numel);
        if (k < 0 || k2 < 0 || st_read_f32(a, k, h, p->numel) || memcmp(h, ps->w + p->off, p->numel * sizeof(float))) {
            if (!bad++) t_fail("names.export.adapter", "'%s' absent or different", off);
        }
        free(h);
    }
    t_check(!bad && st_count(a) == want && st_count(nl) == want_nl &&
            st_find(a, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") >= 0 &&
            st_find(a, "base_model.model.model.visual_model.mask_decoder.output_upscaling.0.weight") >= 0 &&
            st_find(a, "base_model.model.model.text_hidden_fcs.0.0.weight") >= 0,
            "names.export.adapter", "adapter_model.safetensors %d tensors (LoRA + trainables), non_lora_trainables %d, "
            "values exact, PEFT names", st_count(a), st_count(nl));
    st_close(a);
    st_close(nl);

    snprintf(path, sizeof path, "%s/adapter_config.json", out);
    json_doc *d = json_parse_file(path);
    const json_value *root = d ? json_root(d) : NULL;
    const json_value *tm = root ? json_get(root, "target_modules") : NULL, *ms = root ? json_get(root, "modules_to_save") : NULL;
    const json_value *r = root ? json_get(root, "r") : NULL;
    static const char *const SAVES[] = {"mask_decoder.mask_tokens", "output_upscaling", "output_hypernetworks_mlps",
                                        "embed_tokens", "lm_head", "text_hidden_fcs", "mm_projector", "audio_projector"};
    int saves_ok = ms && ms->type == JSON_ARRAY && ms->n == sizeof SAVES / sizeof *SAVES;
    for (size_t i = 0; saves_ok && i < sizeof SAVES / sizeof *SAVES; i++) saves_ok = has_str(ms, SAVES[i]);
    t_check(d && r && r->type == JSON_NUMBER && r->number == 2 && tm && tm->n == 2 * 7 &&
            has_str(tm, "model.layers.0.self_attn.q_proj") && has_str(tm, "model.layers.1.mlp.down_proj") && !has_str(tm, "q_proj") &&
            saves_ok, "names.export.config", "r 2, target_modules %zu full LLaMA module paths (no bare 'q_proj' that "
            "would also hit SAM/CLIP attention), modules_to_save = AnyRef's keys + mm_projector", tm ? tm->n : 0);
    json_free(d);

    /* merged: W + alpha/r B A, in double on the host */
    const ar_param *W = params_find(ps, "model.layers.1.self_attn.q_proj.weight");
    const ar_param *A = params_find(ps, "model.layers.1.self_attn.q_proj.lora_A.weight");
    const ar_param *B = params_find(ps, "model.layers.1.self_attn.q_proj.lora_B.weight");
    const int O = W->shape[0], I = W->shape[1], R = A->shape[0];
    double *ref = malloc(sizeof(double) * (size_t)O * I);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++) {
            double s = 0;
            for (int k = 0; k < R; k++) s += (double)ps->w[B->off + (size_t)o * R + k] * ps->w[A->off + (size_t)k * I + i];
            ref[(size_t)o * I + i] = ps->w[W->off + (size_t)o * I + i] + 2.0 * s;
        }
    ar_params copy;   /* the unmerged registry, for the sharded export */
    params_init_empty(&copy);
    if (declare_tiny(&copy, NULL, 0)) { t_fail("names.export.copy", "%s", ar_error()); free(ref); return; }
    memcpy(copy.w, ps->w, ps->nw * sizeof(float));
    int n = export_merged(out, ps, &info, 0);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    st_file *m = n > 0 ? st_open(path) : NULL;
    int k = m ? st_find(m, "model.layers.1.self_attn.q_proj.weight") : -1;
    double err = 1;
    if (k >= 0) {
        float *h = t_alloc((size_t)O * I);
        st_read_f32(m, k, h, (size_t)O * I);
        err = t_max_rel_err_d(h, ref, (size_t)O * I);
        free(h);
    }
    int lora_left = 0, names_ok = m != NULL;
    for (int i = 0; m && i < st_count(m); i++) lora_left += strstr(st_name(m, i), "lora_") != NULL;
    for (int i = 0; m && i < ps->n; i++) {
        if (strstr(ps->p[i].name, ".lora_")) continue;
        nm_to_official(ps->p[i].name, NM_LAYOUT_ANYREF, off, sizeof off);
        names_ok &= st_find(m, off) >= 0;
    }
    t_check(n == 14 && err < 1e-6 && !lora_left && names_ok &&
            st_find(m, "model.visual_model.mask_decoder.iou_token.weight") >= 0 &&
            st_find(m, "model.vision_tower.vision_tower.vision_model.post_layernorm.weight") >= 0 &&
            st_find(m, "model.audio_encoder.modality_heads.audio.2.weight") >= 0,
            "names.export.merged", "%d projections merged; q_proj = W + (alpha/r) B A max rel err %.2e (tol 1e-6); "
            "%d tensors under AnyRefForCausalLM names, no LoRA", n, err, m ? st_count(m) : 0);
    st_close(m);
    char apath[700];
    snprintf(apath, sizeof apath, "%s/adapter_model.safetensors", out);
    test_fixture("tests/fixtures/names_anyref_keys.txt", path, apath);

    /* sharded, read back through the index and the table */
    char out2[600];
    snprintf(out2, sizeof out2, "%s/export_sharded", dir);
    n = export_merged(out2, &copy, &info, 16384);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out2);
    ar_params back;
    params_init_empty(&back);
    nm_report rep;
    nm_load_opts o = {.components = NM_ALL & ~NM_BIT(NM_LORA), .layout = NM_LAYOUT_ANYREF, .strict = 1};
    int rc = n == 14 && !declare_tiny(&back, NULL, 0) ? nm_load(path, &back, &o, &rep) : -1;
    const char *diff = NULL;
    int same = 1;
    for (int i = 0; rc == 0 && i < back.n; i++) {
        if (strstr(back.p[i].name, ".lora_")) continue;
        const ar_param *q = params_find(ps, back.p[i].name);
        if (memcmp(back.w + back.p[i].off, ps->w + q->off, q->numel * sizeof(float))) { same = 0; diff = q->name; break; }
    }
    t_check(rc == 0 && same && rep.n_files > 2, "names.export.sharded", "%d shards + index, strict load of every "
            "non-LoRA tensor equals the single-file merge%s%s%s", rep.n_files, diff ? " except " : "", diff ? diff : "",
            rc ? ar_error() : "");
    params_free(&back);
    params_free(&copy);
    free(ref);
}

/* End to end on the demo's tiny LLaMA: train 2 steps, `anyref export RUN
 * --out DIR --merged`, then model.init = the merged file with
 * model.strict_load = 1 (through the table; LoRA absent is fine) trains; the
 * same file with one foreign tensor is refused by the strict load, naming it. */
static int run_cfg(const char *const *ov, int n) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c) return -1;
    int rc = cfg_load_file(c, "configs/demo.cfg");
    for (int i = 0; i < n && rc == 0; i++) rc = cfg_override(c, ov[i]);
    if (rc == 0) rc = train_run(c);
    cfg_free(c);
    return rc;
}

static void test_cli(const char *dir) {
    char run1[400], run2[400], out[400], rd1[420], rd2[420], init[600], merged[480], adapter[480];
    snprintf(run1, sizeof run1, "%s/run1", dir); snprintf(run2, sizeof run2, "%s/run2", dir);
    snprintf(out, sizeof out, "%s/cli_export", dir);
    snprintf(rd1, sizeof rd1, "run.dir=%s", run1); snprintf(rd2, sizeof rd2, "run.dir=%s", run2);
    snprintf(merged, sizeof merged, "%s/model.safetensors", out);
    snprintf(adapter, sizeof adapter, "%s/adapter_model.safetensors", out);
    snprintf(init, sizeof init, "model.init=%s", merged);
    const char *o1[] = {rd1, "train.steps=2", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                        "train.trainable=lora+embed", "train.batch_size=4", "train.save_every=2"};
    int rc1 = run_cfg(o1, 8);
    char *argv[] = {"export", run1, "--out", out, "--merged"};
    int rc2 = rc1 ? -1 : export_main(5, argv);
    st_file *a = st_open(adapter), *m = st_open(merged);
    int na = a ? st_count(a) : -1, nm = m ? st_count(m) : -1;
    int names_ok = a && m && st_find(a, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") >= 0 &&
                   st_find(a, "base_model.model.model.embed_tokens.weight") >= 0 && st_find(m, "lm_head.weight") >= 0 &&
                   st_find(m, "model.layers.1.mlp.down_proj.weight") >= 0;
    st_close(a); st_close(m);
    const char *o2[] = {rd2, "train.steps=1", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                        "train.trainable=lora+embed", "train.batch_size=4", init, "model.strict_load=1"};
    int rc3 = rc2 ? -1 : run_cfg(o2, 9);
    t_check(rc1 == 0 && rc2 == 0 && rc3 == 0 && names_ok && na > 0 && nm > 0, "names.cli.export",
            "train 2 steps -> anyref export --merged: adapter %d tensors, merged %d; strict model.init from the merged "
            "file trains%s%s", na, nm, rc1 || rc2 || rc3 ? ": " : "", rc1 || rc2 || rc3 ? ar_error() : "");

    /* one foreign tensor: strict refuses it by name, the default only reports it */
    ar_params ps;
    params_init_empty(&ps);
    st_file *f = st_open(merged);
    int ok = f != NULL;
    for (int i = 0; ok && i < st_count(f); i++) {
        int nd, sh[4];
        const int64_t *d = st_shape(f, i, &nd);
        for (int k = 0; k < nd; k++) sh[k] = (int)d[k];
        ok = params_add(&ps, st_name(f, i), nd, sh, 0, INIT_ZEROS, 0) == 0;
    }
    int one[1] = {2};
    char extra[480];
    snprintf(extra, sizeof extra, "%s/with_extra.safetensors", dir);
    char pfull[480];
    snprintf(pfull, sizeof pfull, "%s/peft_full.safetensors", dir);
    int lay = NM_LAYOUT_PEFT_FULL;
    ok = ok && !params_alloc(&ps) && !st_load_params(merged, &ps, 0, NULL) &&
         !st_save(pfull, &ps, NULL, rename_or_keep, &lay, NULL, 0);
    params_free(&ps);
    params_init_empty(&ps);
    for (int i = 0; ok && i < st_count(f); i++) {
        int nd, sh[4];
        const int64_t *d = st_shape(f, i, &nd);
        for (int k = 0; k < nd; k++) sh[k] = (int)d[k];
        ok = params_add(&ps, st_name(f, i), nd, sh, 0, INIT_ZEROS, 0) == 0;
    }
    ok = ok && !params_add(&ps, "model.layers.0.self_attn.extra_bias", 1, one, 0, INIT_ZEROS, 0) && !params_alloc(&ps) &&
         !st_load_params(merged, &ps, ST_ALLOW_MISSING, NULL) && !st_save(extra, &ps, NULL, NULL, NULL, NULL, 0);
    st_close(f);
    params_free(&ps);
    /* PeftModel.state_dict names (embed_tokens / lm_head under modules_to_save.default)
     * with a larger vocabulary: found through the table, rows resized */
    snprintf(init, sizeof init, "model.init=%s", pfull);
    const char *o3[] = {rd2, "train.steps=1", "train.eval_every=0", "train.min_accuracy=0", "lora.rank=4",
                        "train.trainable=lora+embed", "train.batch_size=4", init, "model.strict_load=1", "model.vocab=15"};
    int rc6 = ok ? run_cfg(o3, 10) : -1;
    t_check(rc6 == 0, "names.cli.peft_full_resize", "model.init from PeftModel.state_dict names, vocabulary 13 -> 15, "
            "strict: %s", rc6 ? ar_error() : "trains");
    snprintf(init, sizeof init, "model.init=%s", extra);
    int rc4 = ok ? run_cfg(o2, 9) : 0;
    char e[1024];
    snprintf(e, sizeof e, "%s", ar_error());
    o2[8] = "model.strict_load=0";
    int rc5 = ok ? run_cfg(o2, 9) : -1;
    t_check(ok && rc4 == -1 && strstr(e, "model.init") && strstr(e, "strict") &&
            strstr(e, "'model.layers.0.self_attn.extra_bias'") && rc5 == 0, "names.cli.strict",
            "strict: %s; not strict: trains (rc %d)", e, rc5);
}

int main(void) {
    char dir[] = "/tmp/anyref_test_names_XXXXXX";
    if (!mkdtemp(dir)) { t_fail("names.tmpdir", "mkdtemp"); return 1; }
    ar_params src, dst;
    static const char *const EXTRA[] = {"prompt_encoder.point_embeddings.0.weight", "foo.bar", "mask_decoder.extra.weight"};
    if (declare_tiny(&src, EXTRA, 3) || declare_tiny(&dst, NULL, 0)) { t_fail("names.setup", "%s", ar_error()); return 1; }
    params_randomize(&src, 1);
    test_table(&dst);
    test_load(dir, &src, &dst);
    params_randomize(&dst, 5);
    test_export(dir, &dst);
    test_cli(dir);
    params_free(&src);
    params_free(&dst);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return t_exit_code();
}
