/* checkpoints/names.c — the official-name table and the loader through it;
 * see names.h (the layouts and their sources are documented there). */
#include "checkpoints/names.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const COMP_NAMES[NM_NCOMP] = {
    "llama", "lora", "text_hidden_fcs", "sam_encoder", "sam_prompt", "sam_decoder",
    "clip", "mm_projector", "audio", "audio_projector"};
static const char *const LAYOUT_NAMES[NM_NLAYOUTS] = {"native", "anyref", "peft", "peft_full"};

const char *nm_component_name(int c) {
    if (c >= 0 && c < NM_NCOMP) return COMP_NAMES[c];
    return c == NM_UNUSED ? "unused" : "unknown";
}
const char *nm_layout_name(int l) {
    if (l >= 0 && l < NM_NLAYOUTS) return LAYOUT_NAMES[l];
    return l == NM_LAYOUT_AUTO ? "auto" : "?";
}
int nm_layout_from_name(const char *s, int *layout) {
    if (!strcmp(s, "auto")) { *layout = NM_LAYOUT_AUTO; return 0; }
    for (int l = 0; l < NM_NLAYOUTS; l++) if (!strcmp(s, LAYOUT_NAMES[l])) { *layout = l; return 0; }
    return ar_errorf("unknown checkpoint layout '%s' (expected auto, native, anyref, peft or peft_full)", s);
}

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }
static int ends(const char *s, const char *p) {
    size_t n = strlen(s), m = strlen(p);
    return n >= m && !strcmp(s + n - m, p);
}

/* The table: our-name prefix -> component, and where the AnyRef model nests it. */
static const struct { const char *prefix; int comp; const char *anyref_nest; } TABLE[] = {
    {"model.text_hidden_fcs.", NM_TEXT_FCS, ""},
    {"model.mm_projector.", NM_MM_PROJECTOR, ""},
    {"model.audio_projector.", NM_AUDIO_PROJECTOR, ""},
    {"model.embed_tokens.", NM_LLAMA, ""},
    {"model.layers.", NM_LLAMA, ""},
    {"model.norm.", NM_LLAMA, ""},
    {"lm_head.", NM_LLAMA, ""},
    {"image_encoder.", NM_SAM_ENCODER, "model.visual_model."},
    {"prompt_encoder.", NM_SAM_PROMPT, "model.visual_model."},
    {"mask_decoder.", NM_SAM_DECODER, "model.visual_model."},
    {"vision_model.", NM_CLIP, "model.vision_tower.vision_tower."},
    {"modality_preprocessors.audio.", NM_AUDIO, "model.audio_encoder."},
    {"modality_trunks.audio.", NM_AUDIO, "model.audio_encoder."},
    {"modality_heads.audio.", NM_AUDIO, "model.audio_encoder."},
};
#define NTABLE ((int)(sizeof TABLE / sizeof *TABLE))

/* Official tensors of the published checkpoints this implementation does not
 * model (written as our names, i.e. after the layout prefixes are removed):
 * inside a modelled component's namespace (checked first) ... */
static const char *const UNUSED_INSIDE[] = {
    "prompt_encoder.point_embeddings.", "prompt_encoder.not_a_point_embed.", "prompt_encoder.mask_downscaling.",
    "vision_model.embeddings.position_ids"};
/* ... and outside every modelled component (checked last). */
static const char *const UNUSED_OUTSIDE[] = {
    "text_model.", "text_projection.", "visual_projection.", "modality_preprocessors.", "modality_trunks.",
    "modality_heads.", "modality_postprocessors.", "model.loc_embeddings."};
static int has_prefix_in(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++) if (starts(s, list[i])) return 1;
    return 0;
}
static int is_unused_inside(const char *s) {
    return ends(s, ".rotary_emb.inv_freq") || has_prefix_in(s, UNUSED_INSIDE, sizeof UNUSED_INSIDE / sizeof *UNUSED_INSIDE);
}
static int is_unused_outside(const char *s) {
    return !strcmp(s, "logit_scale") || has_prefix_in(s, UNUSED_OUTSIDE, sizeof UNUSED_OUTSIDE / sizeof *UNUSED_OUTSIDE);
}

/* AnyRef's train.py modules_to_save, as module paths of AnyRefForCausalLM. */
static const char *const MODULES_TO_SAVE[] = {
    "model.visual_model.mask_decoder.mask_tokens.", "model.visual_model.mask_decoder.output_upscaling.",
    "model.visual_model.mask_decoder.output_hypernetworks_mlps.", "model.embed_tokens.", "lm_head.",
    "model.text_hidden_fcs.", "model.audio_projector."};
#define NMTS ((int)(sizeof MODULES_TO_SAVE / sizeof *MODULES_TO_SAVE))

static const char PEFT_PREFIX[] = "base_model.model.";

static int table_row(const char *ours) {
    for (int i = 0; i < NTABLE; i++) if (starts(ours, TABLE[i].prefix)) return i;
    return -1;
}

static int is_lora_name(const char *s) { return strstr(s, ".lora_A.weight") || strstr(s, ".lora_B.weight"); }

int nm_component_of(const char *ours) {
    if (is_lora_name(ours)) return starts(ours, "model.layers.") ? NM_LORA : NM_UNKNOWN;
    int r = table_row(ours);
    return r < 0 ? NM_UNKNOWN : TABLE[r].comp;
}

int nm_to_official(const char *ours, int layout, char *out, size_t cap) {
    int comp = nm_component_of(ours), r = table_row(ours);
    if (comp == NM_UNKNOWN) return ar_errorf("names: '%s' is no tensor name the table knows", ours);
    if (layout < 0 || layout >= NM_NLAYOUTS) return ar_errorf("names: layout %d", layout);
    const char *nest = layout == NM_LAYOUT_NATIVE ? "" : TABLE[r].anyref_nest;
    const char *peft = layout >= NM_LAYOUT_PEFT ? PEFT_PREFIX : "";
    char anyref[512];
    if ((size_t)snprintf(anyref, sizeof anyref, "%s%s", nest, ours) >= sizeof anyref)
        return ar_errorf("names: '%s' too long", ours);
    if (layout == NM_LAYOUT_PEFT_FULL) {
        const char *lo = strstr(anyref, ".lora_A.weight");
        if (!lo) lo = strstr(anyref, ".lora_B.weight");
        if (lo) {   /* ....lora_A.weight -> ....lora_A.default.weight */
            if ((size_t)snprintf(out, cap, "%s%.*s.default.weight", peft, (int)(lo + 7 - anyref), anyref) >= cap)
                return ar_errorf("names: '%s' too long", ours);
            return 0;
        }
        for (int i = 0; i < NMTS; i++) {
            size_t m = strlen(MODULES_TO_SAVE[i]);
            if (strncmp(anyref, MODULES_TO_SAVE[i], m) != 0) continue;
            if ((size_t)snprintf(out, cap, "%s%.*smodules_to_save.default.%s", peft, (int)m, anyref, anyref + m) >= cap)
                return ar_errorf("names: '%s' too long", ours);
            return 0;
        }
    }
    if ((size_t)snprintf(out, cap, "%s%s", peft, anyref) >= cap) return ar_errorf("names: '%s' too long", ours);
    return 0;
}

/* Removes the first occurrence of `what` from s (in place); 1 if found. */
static int cut(char *s, const char *what) {
    char *p = strstr(s, what);
    if (!p) return 0;
    size_t m = strlen(what);
    memmove(p, p + m, strlen(p + m) + 1);
    return 1;
}

int nm_from_official(const char *official, char *out, size_t cap, int *layout) {
    char s[1024];
    int lay = NM_LAYOUT_NATIVE, unused = 0;
    if ((size_t)snprintf(s, sizeof s, "%s", official) >= sizeof s) {
        snprintf(out, cap, "%s", official);
        if (layout) *layout = lay;
        return NM_UNKNOWN;
    }
    if (starts(s, PEFT_PREFIX)) {
        memmove(s, s + strlen(PEFT_PREFIX), strlen(s) - strlen(PEFT_PREFIX) + 1);
        lay = NM_LAYOUT_PEFT;
        if (cut(s, "modules_to_save.default.")) lay = NM_LAYOUT_PEFT_FULL;
        else if (strstr(s, ".original_module.")) { lay = NM_LAYOUT_PEFT_FULL; unused = 1; }
        else if (strstr(s, ".lora_A.default.weight") || strstr(s, ".lora_B.default.weight")) {
            cut(s, ".default");
            lay = NM_LAYOUT_PEFT_FULL;
        }
    }
    for (int i = 0; i < NTABLE; i++) {   /* AnyRef nesting */
        const char *n = TABLE[i].anyref_nest;
        if (!n[0] || !starts(s, n)) continue;   /* also unknown / unused names under the nesting */
        memmove(s, s + strlen(n), strlen(s) - strlen(n) + 1);
        if (lay == NM_LAYOUT_NATIVE) lay = NM_LAYOUT_ANYREF;
        break;
    }
    if (layout) *layout = lay;
    snprintf(out, cap, "%s", s);
    if (unused || is_unused_inside(s)) return NM_UNUSED;
    int comp = nm_component_of(s);
    return comp == NM_UNKNOWN && is_unused_outside(s) ? NM_UNUSED : comp;
}

int nm_module_to_save(const char *ours, char *out, size_t cap) {
    char a[1024];
    if (nm_to_official(ours, NM_LAYOUT_ANYREF, a, sizeof a)) return -1;
    const char *key = NULL;
    size_t keylen = 0;
    for (int i = 0; i < NMTS && !key; i++) {
        size_t m = strlen(MODULES_TO_SAVE[i]);
        if (strncmp(a, MODULES_TO_SAVE[i], m) != 0) continue;
        /* the module path without its trailing '.'; keep "mask_decoder.mask_tokens"
         * two components long as AnyRef does, the others one */
        const char *e = MODULES_TO_SAVE[i] + m - 1, *b = e;
        int comps = i == 0 ? 2 : 1;
        while (b > MODULES_TO_SAVE[i] && comps) { b--; if (*b == '.') comps--; }
        if (*b == '.') b++;
        key = b; keylen = (size_t)(e - b);
    }
    if (!key && starts(a, "model.mm_projector.")) { key = "mm_projector"; keylen = strlen(key); }
    if (!key) {   /* the module: the name without its last component */
        const char *dot = strrchr(a, '.');
        key = a; keylen = dot ? (size_t)(dot - a) : strlen(a);
    }
    if (keylen + 1 > cap) return ar_errorf("names: module of '%s' too long", ours);
    memcpy(out, key, keylen);
    out[keylen] = 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Loader                                                             */
/* ------------------------------------------------------------------ */
typedef struct { char **v; int n, cap, oom; } name_set;

static void collect(void *ctx, const char *name) {
    name_set *s = ctx;
    if (s->oom) return;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        char **nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv) { s->oom = 1; return; }
        s->v = nv; s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(name))) { s->oom = 1; return; }
    s->n++;
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int set_find(const name_set *s, const char *name) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(s->v[mid], name);
        if (!c) return mid;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

typedef struct { const ar_params *ps; char **resolved; } rename_ctx;

static int rename_resolved(void *ctx, const char *name, char *out, size_t cap) {
    const rename_ctx *r = ctx;
    const ar_param *p = params_find(r->ps, name);
    const char *m = p ? r->resolved[p - r->ps->p] : NULL;
    if ((size_t)snprintf(out, cap, "%s%s", m ? "" : "\x01hidden\x01", m ? m : name) >= cap)
        return ar_errorf("tensor name too long: '%s'", name);
    return 0;
}

static void note(char names[][NM_REPORT_NAME_MAX], int count, const char *s) {
    if (count < NM_REPORT_NAMES) snprintf(names[count], NM_REPORT_NAME_MAX, "%s", s);
}

/* Appends up to 8 names of one kind to an error message. */
static void list_names(char *buf, size_t cap, int *shown, const char *s) {
    size_t at = strlen(buf);
    if (*shown < 8 && at + strlen(s) + 8 < cap) snprintf(buf + at, cap - at, "%s'%s'", *shown ? ", " : "", s);
    else if (*shown == 8 && at + 8 < cap) snprintf(buf + at, cap - at, ", ...");
    (*shown)++;
}

int nm_load(const char *path, ar_params *ps, const nm_load_opts *o, nm_report *rep) {
    nm_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    const unsigned want = o->components ? o->components : NM_ALL;
    const int all = o->components == 0;
    name_set set = {0};
    char **resolved = calloc(ps->n ? (size_t)ps->n : 1, sizeof *resolved);
    char *used = NULL;
    int rc = -1;
    if (!resolved) { ar_errorf("%s: out of memory", path); goto out; }
    if (st_list_names(path, collect, &set)) goto out;
    if (set.oom) { ar_errorf("%s: out of memory listing the tensors", path); goto out; }
    qsort(set.v, (size_t)set.n, sizeof *set.v, cmp_str);
    if (!(used = calloc(set.n ? (size_t)set.n : 1, 1))) { ar_errorf("%s: out of memory", path); goto out; }

    char miss[900] = "", extra[900] = "";
    int nmiss_bad = 0, shown_m = 0, shown_x = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        int comp = nm_component_of(p->name);
        if (comp == NM_UNKNOWN ? !all : !(want & NM_BIT(comp))) continue;
        int skip = 0;
        for (int k = 0; k < o->n_skip; k++) skip |= !strcmp(o->skip[k], p->name);
        nm_comp_report *cr = &rep->c[comp == NM_UNKNOWN ? NM_NCOMP : comp];
        if (!skip) cr->declared++;
        int found = -1, lay = -1;
        char cand[1024];
        if (comp == NM_UNKNOWN) {
            found = set_find(&set, p->name);
            lay = NM_LAYOUT_NATIVE;
        } else {
            for (int l = 0; l < NM_NLAYOUTS && found < 0; l++) {
                if (o->layout != NM_LAYOUT_AUTO && l != o->layout) continue;
                if (nm_to_official(p->name, l, cand, sizeof cand)) goto out;
                if ((found = set_find(&set, cand)) >= 0) lay = l;
            }
        }
        if (found >= 0) {
            used[found] = 1;
            if (skip) continue;
            if (!(resolved[i] = strdup(set.v[found]))) { ar_errorf("%s: out of memory", path); goto out; }
            cr->loaded++;
            rep->by_layout[lay]++;
            continue;
        }
        if (skip) continue;
        note(cr->missing_names, cr->missing, p->name);
        cr->missing++;
    }
    /* the missing tensors that are errors: outside allow_missing, or (strict)
     * in a component the checkpoint holds only part of */
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        int comp = nm_component_of(p->name);
        if (resolved[i] || (comp == NM_UNKNOWN ? !all : !(want & NM_BIT(comp)))) continue;
        int skip = 0;
        for (int k = 0; k < o->n_skip; k++) skip |= !strcmp(o->skip[k], p->name);
        if (skip) continue;
        const nm_comp_report *cr = &rep->c[comp == NM_UNKNOWN ? NM_NCOMP : comp];
        int allowed = comp != NM_UNKNOWN && (o->allow_missing & NM_BIT(comp)) && !(o->strict && cr->loaded > 0);
        if (allowed) continue;
        char one[AR_PARAM_NAME_LEN + 1040], cand[1024];
        if (comp != NM_UNKNOWN && o->layout != NM_LAYOUT_AUTO) {
            nm_to_official(p->name, o->layout, cand, sizeof cand);
            snprintf(one, sizeof one, "%s (as '%s')", p->name, cand);
        } else {
            snprintf(one, sizeof one, "%s", p->name);
        }
        list_names(miss, sizeof miss, &shown_m, one);
        nmiss_bad++;
    }
    int nunexp = 0;
    for (int k = 0; k < set.n; k++) {
        if (used[k]) continue;
        char ours[1024];
        int comp = nm_from_official(set.v[k], ours, sizeof ours, NULL);
        if (comp == NM_UNUSED) { rep->n_unused++; continue; }
        if (comp >= 0 && !(want & NM_BIT(comp))) { rep->n_other++; continue; }
        nm_comp_report *cr = &rep->c[comp == NM_UNKNOWN ? NM_NCOMP : comp];
        note(cr->unexpected_names, cr->unexpected, set.v[k]);
        cr->unexpected++;
        nunexp++;
        list_names(extra, sizeof extra, &shown_x, set.v[k]);
    }
    if (nmiss_bad) {
        ar_errorf("%s: %sthe checkpoint lacks %d tensor%s of the model: %s", path, o->strict ? "strict load: " : "",
                  nmiss_bad, nmiss_bad == 1 ? "" : "s", miss);
        goto out;
    }
    if (o->strict && nunexp) {
        ar_errorf("%s: strict load: the checkpoint has %d tensor%s the model lacks: %s", path, nunexp,
                  nunexp == 1 ? "" : "s", extra);
        goto out;
    }
    rename_ctx rc_ = {ps, resolved};
    st_report sr;
    if (st_load_params_ex(path, ps, ST_ALLOW_MISSING, rename_resolved, &rc_, &sr)) goto out;
    rep->n_files = sr.n_shards;
    rc = 0;
out:
    for (int i = 0; resolved && i < ps->n; i++) free(resolved[i]);
    free(resolved);
    for (int k = 0; k < set.n; k++) free(set.v[k]);
    free(set.v);
    free(used);
    return rc;
}

void nm_report_format(const nm_report *rep, char *buf, size_t cap) {
    if (!cap) return;
    size_t at = 0;
    buf[0] = 0;
#define PUT(...) do { if (at < cap) { int k_ = snprintf(buf + at, cap - at, __VA_ARGS__); if (k_ > 0) at += (size_t)k_; } } while (0)
    for (int c = 0; c <= NM_NCOMP; c++) {
        const nm_comp_report *r = &rep->c[c];
        if (!r->declared && !r->unexpected) continue;
        PUT("%s%s: loaded %d/%d, missing %d", at ? "\n" : "", c < NM_NCOMP ? COMP_NAMES[c] : "unknown", r->loaded,
            r->declared, r->missing);
        for (int i = 0; i < r->missing && i < NM_REPORT_NAMES; i++) PUT("%s'%s'", i ? ", " : " (", r->missing_names[i]);
        if (r->missing) PUT("%s)", r->missing > NM_REPORT_NAMES ? ", ..." : "");
        PUT(", unexpected %d", r->unexpected);
        for (int i = 0; i < r->unexpected && i < NM_REPORT_NAMES; i++)
            PUT("%s'%s'", i ? ", " : " (", r->unexpected_names[i]);
        if (r->unexpected) PUT("%s)", r->unexpected > NM_REPORT_NAMES ? ", ..." : "");
    }
    PUT("%sunused %d, other components %d, from %d file%s", at ? "\n" : "", rep->n_unused, rep->n_other, rep->n_files,
        rep->n_files == 1 ? "" : "s");
#undef PUT
}
