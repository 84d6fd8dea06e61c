/* train/plan.c — the memory plan of a training run (train/plan.h): weights
 * by component from the run's own *_declare calls into a registry that is
 * never allocated, gradients and AdamW state, activations from the modules'
 * *_plan_bytes (the sizing code their create functions call), the batch
 * buffers from plan_batch_floats (the table grounding_create allocates from).
 * Depends on train/run.h, model/, core/config, core/error. */
#include "train/plan.h"
#include "train/run.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "kernels/kernels.h"
#include "model/clip_vit.h"
#include "model/imagebind_audio.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const plan_component_name[PC_N] = {
    "LLM (LLaMA + LoRA)", "CLIP vision tower", "mm_projector", "SAM image encoder",
    "SAM prompt enc. + mask decoder", "[SEG] head (text_hidden_fcs)", "ImageBind audio", "audio_projector", "other"};

static int component_of(const char *n) {
    if (strstr(n, "text_hidden_fcs")) return PC_SEG_HEAD;
    if (strstr(n, "audio_projector")) return PC_AUDIO_PROJ;
    if (!strncmp(n, "model.mm_projector.", 19)) return PC_PROJ;
    if (!strncmp(n, "model.", 6) || !strncmp(n, "lm_head.", 8)) return PC_LLM;
    if (!strncmp(n, "vision_model.", 13)) return PC_CLIP;
    if (!strncmp(n, "image_encoder.", 14)) return PC_SAM_ENC;
    if (!strncmp(n, "mask_decoder.", 13) || !strncmp(n, "prompt_encoder.", 15)) return PC_SAM_DEC;
    if (!strncmp(n, "modality_", 9)) return PC_AUDIO;
    return PC_OTHER;
}

void plan_batch_floats(const plan_shape *s, size_t n[PB_N]) {
    memset(n, 0, PB_N * sizeof n[0]);
    if (!s->is_anyref) return;
    const size_t B = (size_t)s->B, chw = (size_t)s->ac.dec.dim * s->ac.dec.H * s->ac.dec.W;
    n[PB_IMG] = B * chw;
    n[PB_MASK] = (size_t)s->max_seg * s->ac.max_orig_h * s->ac.max_orig_w;
    if (s->use_senc) {
        n[PB_SAM_IN] = B * s->sam_n;
        if (s->senc.trainable) n[PB_DIMG] = B * chw;
    }
    if (s->use_refs) {
        n[PB_CLIP] = n[PB_CROP] = B * s->clip_n;
        n[PB_BOXES] = B * 5;
        n[PB_FBANK] = B * (s->fbank_n ? s->fbank_n : 1);
    }
}

int plan_shape_from_run(const run_t *r, plan_shape *s) {
    memset(s, 0, sizeof *s);
    s->is_anyref = r->is_anyref;
    s->llm = r->mc;
    s->ac = r->ac;
    s->B = r->B; s->T = r->T; s->max_seg = r->is_anyref ? r->max_seg : 0;
    s->use_refs = r->use_refs; s->refs = r->rcfg; s->clip_n = r->clip_n; s->fbank_n = r->fbank_n;
    s->use_senc = r->use_senc; s->senc = r->scfg; s->sam_n = r->sam_n;
    s->gemm_bf16 = !strcmp(k_gemm_mode(), "bf16");
    return 0;
}

static void note(plan_shape *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(plan_shape *s, const char *fmt, ...) {
    size_t u = strlen(s->notes);
    if (u + 2 >= sizeof s->notes) return;
    if (u) { s->notes[u++] = ';'; s->notes[u++] = ' '; s->notes[u] = 0; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->notes + u, sizeof s->notes - u, fmt, ap);
    va_end(ap);
}

/* The loader's vocabulary without opening the data: the tokenizer's size, the
 * data.add_tokens and the loader's own added tokens ([SEG], <im_start>,
 * <im_end>, the two reference and two audio markers: data/loader.c add_tokens). */
#define PLAN_LOADER_ADDED 7
static int loader_vocab(const ar_config *cfg, plan_shape *s) {
    int added = strcmp(cfg_str(cfg, "data.kind"), "sources") ? 0 : PLAN_LOADER_ADDED;   /* conversations: add_tokens only */
    char list[4096];
    snprintf(list, sizeof list, "%s", cfg_str(cfg, "data.add_tokens"));
    for (char *sv = NULL, *t = strtok_r(list, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
        while (*t == ' ' || *t == '\t') t++;
        if (*t) added++;
    }
    const char *tp = cfg_str(cfg, "data.tokenizer");
    tokenizer *tok = tp[0] ? tok_load(tp) : NULL;
    if (tok) {
        int v = tok_vocab_size(tok) + added;
        tok_free(tok);
        return v;
    }
    note(s, "model.vocab = 0 and data.tokenizer (%s) unreadable: vocabulary assumed 32000 (LLaMA) + %d added tokens",
         tp[0] ? tp : "unset", added);
    return 32000 + added;
}

int plan_shape_from_config(const ar_config *cfg, plan_shape *s) {
    memset(s, 0, sizeof *s);
    llama_cfg *mc = &s->llm;
    const char *kind = cfg_str(cfg, "model.kind");
    s->is_anyref = !strcmp(kind, "anyref");
    if (!s->is_anyref && strcmp(kind, "llama") != 0) return ar_errorf("config: model.kind = '%s' (expected llama or anyref)", kind);
    mc->vocab = (int)cfg_int(cfg, "model.vocab");
    if (mc->vocab <= 0) {
        if (!strcmp(cfg_str(cfg, "data.kind"), "synthetic")) {
            synth_task t;
            if (synth_init(&t, cfg_str(cfg, "data.task"), (int)cfg_int(cfg, "data.digits"), (int)cfg_int(cfg, "data.base")))
                return ar_error_prefix("config: ");
            mc->vocab = t.vocab;
            if (cfg_int(cfg, "train.seq_len") == 0) s->T = t.T;
        } else {
            mc->vocab = loader_vocab(cfg, s);
        }
    }
    if (!s->T) s->T = (int)cfg_int(cfg, "train.seq_len");
    if (s->T <= 0) return ar_errorf("anyref plan: train.seq_len = 0 (the data decides it): set train.seq_len");
    if (train_llama_cfg(cfg, mc, s->T)) return -1;
    s->B = (int)cfg_int(cfg, "train.batch_size");
    if (s->B < 1) return ar_errorf("config: train.batch_size = %d", s->B);
    const char *gemm = cfg_str(cfg, "train.gemm"), *env = getenv("ANYREF_GEMM");
    s->gemm_bf16 = !strcmp(gemm[0] ? gemm : env ? env : "", "bf16");
    if (!s->is_anyref) return 0;

    anyref_cfg *ac = &s->ac;
    *ac = anyref_default_cfg();
    ac->llm = *mc;
    ac->seg.seg_token = (int)cfg_int(cfg, "seg.token");
    if (ac->seg.seg_token < 0) ac->seg.seg_token = mc->vocab - 1;   /* any id: sizes only */
    grounding_step_keys(cfg, ac);
    /* the data's largest image and masks per sample: not known without it */
    ac->max_orig_h = ac->max_orig_w = 1024;
    note(s, "images and masks up to %d x %d (the data decides)", ac->max_orig_h, ac->max_orig_w);
    s->max_seg = s->B;   /* the loader: one mask per sample (ldr_limits) */

    int senc_present = 0;
    if (grounding_sam_encoder_cfg(cfg, &s->senc, &senc_present)) return -1;
    if (senc_present) {
        sam_encoder_cfg *e = &s->senc;
        e->out_chans = ac->dec.dim;
        if (ac->img_size == 0) ac->img_size = e->img_size;
        s->use_senc = 1;
        s->sam_n = (size_t)3 * e->img_size * e->img_size;
    }
    const int S = (int)cfg_int(cfg, "clip.image_size");
    if (S > 0) {
        refs_cfg *rc = &s->refs;
        int fh, fw;
        ldr_fbank_hw(&fh, &fw);
        if (grounding_refs_cfg(cfg, mc->dim, fh, fw, rc)) return -1;
        if (rc->use_audio) {
            rc->max_audio = s->B;
            s->fbank_n = (size_t)REFS_AUDIO_CLIPS * rc->audio.n_mels * rc->audio.target_len;
        }
        rc->max_images = rc->max_boxes = rc->max_crops = s->B;
        s->clip_n = (size_t)3 * S * S;
        s->use_refs = 1;
    }
    return 0;
}

int plan_compute(const plan_shape *s, mem_plan *p) {
    memset(p, 0, sizeof *p);
    ar_params ps;
    params_init_empty(&ps);
    int rc = s->is_anyref ? anyref_declare(&s->ac, &ps) : llama_declare(&s->llm, &ps);
    if (!rc && s->is_anyref && s->use_refs) rc = refs_declare(&s->refs, &ps);
    if (!rc && s->is_anyref && s->use_senc) rc = sam_encoder_declare(&s->senc, &ps);
    if (rc) { params_free(&ps); return -1; }
    for (int i = 0; i < ps.n; i++) {
        const ar_param *q = &ps.p[i];
        const size_t padded = (q->numel + 15) & ~(size_t)15;   /* the registry's 64-byte layout */
        if (q->trainable) p->trainable[component_of(q->name)] += padded;
        else p->frozen[component_of(q->name)] += q->half ? padded / 2 : padded;   /* bf16 / fp16: 2 bytes a value */
    }
    p->nw = ps.nw; p->ng = ps.ng; p->nw16 = ps.nw16;
    p->weights_bytes = params_weight_bytes(&ps);
    params_free(&ps);
    p->grads_bytes = p->ng * sizeof(float);
    p->adam_bytes = 2 * p->ng * sizeof(float);

    const size_t ntok = (size_t)s->B * s->T;
    p->workspace = 4 * ntok * sizeof(int);   /* llama_create: tokens, targets, pos, fid */
    if (s->gemm_bf16) p->workspace += (size_t)s->llm.vocab * s->llm.dim * sizeof(uint16_t);   /* lm_head in bf16 */
    if (s->is_anyref) {
        anyref_mem am;
        if (anyref_plan(&s->ac, s->B, s->T, s->max_seg, &am)) return -1;
        p->act_llm = am.llm; p->act_seg_head = am.seg_head; p->act_decoder = am.decoder; p->act_step = am.step;
        if (s->use_refs) {
            refs_mem rm;
            refs_plan(&s->refs, &rm);
            p->act_clip = rm.clip; p->act_proj = rm.projector; p->act_audio = rm.audio; p->act_refs = rm.buffers;
        }
        if (s->use_senc && !(p->act_sam_enc = sam_encoder_plan_bytes(&s->senc, s->B)))
            return ar_errorf("anyref plan: bad SAM image encoder sizes");
        if (s->use_senc) p->workspace += p->ws_sam_attn = sam_encoder_kernel_workspace_bytes(&s->senc, s->B, s->gemm_bf16);
        size_t n[PB_N];
        plan_batch_floats(s, n);
        for (int i = 0; i < PB_N; i++) p->workspace += n[i] * sizeof(float);
    } else {
        if (!(p->act_llm = llama_plan_activation_bytes(&s->llm, s->B, s->T))) return ar_errorf("anyref plan: bad decoder sizes");
    }
    p->act_bytes = p->act_llm + p->act_seg_head + p->act_decoder + p->act_step + p->act_clip + p->act_proj +
                   p->act_audio + p->act_refs + p->act_sam_enc;
    p->total = p->weights_bytes + p->grads_bytes + p->adam_bytes + p->act_bytes + p->workspace;
    return 0;
}

/* "  12.345 GiB" or "  123.45 MiB" (10 columns + unit). */
static const char *sz(char *buf, size_t b) {
    if (b >= ((size_t)1 << 30)) snprintf(buf, 24, "%9.3f GiB", (double)b / 1073741824.0);
    else snprintf(buf, 24, "%9.2f MiB", (double)b / 1048576.0);
    return buf;
}

void plan_print(const plan_shape *s, const mem_plan *p, FILE *f, const char *in) {
    char x[24], y[24];
    if (!in) in = "";
    fprintf(f, "%smemory plan (float32 unless said; MiB/GiB = 2^20/2^30 bytes): batch %d x %d tokens%s\n", in, s->B, s->T,
            s->is_anyref ? ", AnyRef step" : "");
    if (p->nw16)
        fprintf(f, "%s  weights     %s  (%zu floats + %zu 16-bit values: the *.frozen_weights keys)\n", in,
                sz(x, p->weights_bytes), p->nw, p->nw16);
    else
        fprintf(f, "%s  weights     %s  (%zu floats)\n", in, sz(x, p->weights_bytes), p->nw);
    for (int c = 0; c < PC_N; c++) {
        if (!p->frozen[c] && !p->trainable[c]) continue;
        fprintf(f, "%s    %-31s frozen %s  trainable %s\n", in, plan_component_name[c],
                sz(x, p->frozen[c] * sizeof(float)), sz(y, p->trainable[c] * sizeof(float)));
    }
    fprintf(f, "%s  gradients   %s  AdamW m+v %s  (%zu trainable floats)\n", in, sz(x, p->grads_bytes),
            sz(y, p->adam_bytes), p->ng);
    fprintf(f, "%s  activations %s%s\n", in, sz(x, p->act_bytes),
            s->llm.act_half ? "  (the decoder's kept tensors in bf16: model.activations = bf16)" : "");
    const struct { const char *n; size_t b; } a[] = {
        {"LLM decoder arena", p->act_llm},       {"[SEG] head", p->act_seg_head},
        {"SAM mask decoder arena", p->act_decoder}, {"step buffers (mask logits, d attn)", p->act_step},
        {"SAM image encoder arena", p->act_sam_enc}, {"CLIP vision tower", p->act_clip},
        {"mm_projector", p->act_proj},           {"ImageBind audio", p->act_audio},
        {"reference feature buffers", p->act_refs}};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (a[i].b) fprintf(f, "%s    %-38s %s\n", in, a[i].n, sz(x, a[i].b));
    fprintf(f, "%s  workspace   %s  (batch inputs, token buffers%s%s)\n", in, sz(x, p->workspace),
            s->gemm_bf16 ? ", lm_head's bf16 copy: train.gemm = bf16" : "",
            p->ws_sam_attn ? ", the SAM encoder's bf16 attention buffers" : "");
    fprintf(f, "%s  total       %s  (%zu bytes)\n", in, sz(x, p->total), p->total);
    if (s->notes[0]) fprintf(f, "%s  assumed: %s\n", in, s->notes);
}

/* The memory knobs the plan does not use yet that would shrink it, each
 * alone and (when several) all together, with the totals they would give
 * (the same plan, recomputed). */
static void print_options(const plan_shape *s, const mem_plan *p, FILE *f) {
    enum { NK = 7 };
    static const char *const what[NK] = {"model.frozen_weights = bf16", "model.attention = flash",
                                         "model.checkpoint_layers = 1", "model.activations = bf16",
                                         "sam_encoder.frozen_weights = bf16", "clip.frozen_weights = bf16",
                                         "audio.frozen_weights = bf16"};
    plan_shape all = *s;
    int n = 0;
    char x[32], y[32];
    for (int k = 0; k <= NK; k++) {
        plan_shape t = k < NK ? *s : all;
        llama_cfg *lc = &t.llm;
        if (k == 0) { if (lc->frozen_half || lc->train_base) continue; lc->frozen_half = LLAMA_FROZEN_BF16; }
        if (k == 1) { if (lc->flash_attention) continue; lc->flash_attention = 1; }
        if (k == 2) { if (lc->checkpoint_layers) continue; lc->checkpoint_layers = 1; }
        if (k == 3) { if (lc->act_half) continue; lc->act_half = LLAMA_ACT_BF16; }
        if (k == 4) {   /* a frozen SAM encoder's big matrices; the registry holds one 16-bit format */
            if (!t.use_senc || t.senc.trainable || t.senc.frozen_half || lc->frozen_half == LLAMA_FROZEN_F16) continue;
            t.senc.frozen_half = SAM_ENC_HALF_BF16;
        }
        if (k == 5) {   /* a frozen CLIP tower's big matrices */
            if (!t.use_refs || t.refs.clip.trainable || t.refs.clip.frozen_half || lc->frozen_half == LLAMA_FROZEN_F16 ||
                t.senc.frozen_half == SAM_ENC_HALF_F16)
                continue;
            t.refs.clip.frozen_half = CLIP_HALF_BF16;
        }
        if (k == 6) {   /* the ImageBind audio blocks' big matrices */
            if (!t.use_refs || !t.refs.use_audio || t.refs.audio.frozen_half || lc->frozen_half == LLAMA_FROZEN_F16 ||
                t.senc.frozen_half == SAM_ENC_HALF_F16 || t.refs.clip.frozen_half == CLIP_HALF_F16)
                continue;
            t.refs.audio.frozen_half = IB_HALF_BF16;
        }
        if (k == NK && n < 2) break;   /* "all of them" only when more than one helps */
        t.ac.llm = t.llm;
        mem_plan q;
        if (plan_compute(&t, &q) || q.total >= p->total) continue;
        if (k < NK) {   /* it helps: it joins "all of them" */
            all.llm.frozen_half |= t.llm.frozen_half;
            all.llm.flash_attention |= t.llm.flash_attention;
            all.llm.checkpoint_layers |= t.llm.checkpoint_layers;
            all.llm.act_half |= t.llm.act_half;
            all.senc.frozen_half |= t.senc.frozen_half;
            all.refs.clip.frozen_half |= t.refs.clip.frozen_half;
            all.refs.audio.frozen_half |= t.refs.audio.frozen_half;
            if (++n == 1) fprintf(f, "  options that take less memory:\n");
        }
        fprintf(f, "    %-40s total %s (%s less)\n", k < NK ? what[k] : "all of them", sz(x, q.total),
                sz(y, p->total - q.total));
    }
}

int plan_main_cfg(const ar_config *cfg, FILE *f) {
    plan_shape s;
    mem_plan p;
    if (plan_shape_from_config(cfg, &s) || plan_compute(&s, &p)) return -1;
    plan_print(&s, &p, f, "");
    print_options(&s, &p, f);
    return 0;
}

void plan_log_run(const run_t *r) {
    plan_shape s;
    mem_plan p;
    plan_shape_from_run(r, &s);
    if (plan_compute(&s, &p)) { log_warn("memory plan: %s", ar_error()); return; }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return;
    plan_print(&s, &p, f, "");
    fclose(f);
    for (char *sv = NULL, *line = strtok_r(buf, "\n", &sv); line; line = strtok_r(NULL, "\n", &sv)) log_info("%s", line);
    free(buf);
}
