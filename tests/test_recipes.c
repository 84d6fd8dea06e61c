/* tests/test_recipes.c — the paper's 7B recipes (configs/anyref-7b-*.cfg) and
 * the memory plan (train/plan.h, `anyref plan`).
 *   1. Each recipe loads against the schema and holds SPEC 2.1-2.10's values:
 *      LLaMA-7B sizes, CLIP ViT-L/14 at 224, SAM ViT-H, ImageBind-huge audio
 *      where audio is used, LoRA r 8 / alpha 16 / dropout 0.05 on q,v, AdamW
 *      betas and weight decay 0, lr in 5e-5..3e-4, linear schedule with
 *      100-200 warm-up steps, batch 2-6, accumulation 8-10, 10 000 steps,
 *      loss weights 1 / 2 / 0.5, gradient checkpointing, placeholder paths.
 *   2. The plan of each recipe is computed from the config alone (no data, no
 *      weights, nothing allocated), its LLM parameter counts equal LLaMA-7B's
 *      by hand, and the total is printed (mixed: compared with 80 GB).
 *   3. For tiny configs actually set up (configs/demo.cfg: the LLaMA path;
 *      configs/sources-tiny.cfg: every AnyRef module, real loaders over the
 *      committed fixtures) the plan of the run equals what the created model
 *      allocated, part by part (registry floats, every module's activation
 *      bytes), and the plan from the config alone equals the run's plan once
 *      the data-dependent sizes (largest image, masks) are the same.
 * Depends on train/ (run.h, plan.h), model/, core/config, tests/testlib. */
#include "tests/testlib.h"
#include "core/config.h"
#include "core/error.h"
#include "model/sam_image_encoder.h"
#include "train/plan.h"
#include "train/run.h"
#include "train/train.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ar_config *load(const char *path, const char **ov, int n) {
    ar_config *c = cfg_new(train_schema, train_schema_len);
    if (!c || cfg_load_file(c, path)) { t_fail("recipes.load", "%s: %s", path, ar_error()); cfg_free(c); return NULL; }
    for (int i = 0; i < n; i++)
        if (cfg_override(c, ov[i])) { t_fail("recipes.load", "%s: %s", ov[i], ar_error()); cfg_free(c); return NULL; }
    return c;
}

static int feq(double a, double b) { return fabs(a - b) <= 1e-9 * fabs(b); }

typedef struct { const char *name; int audio; int batch, accum; double lr, beta2; int warmup; } recipe;

static void check_recipe(const recipe *rc, size_t *total_out) {
    char path[128], name[96];
    snprintf(path, sizeof path, "configs/anyref-7b-%s.cfg", rc->name);
    ar_config *c = load(path, NULL, 0);
    if (!c) return;
    int bad = 0;
    char why[256] = "";
#define WANT_I(k, v) do { if (cfg_int(c, k) != (v) && !bad++) snprintf(why, sizeof why, "%s = %ld, want %ld", k, cfg_int(c, k), (long)(v)); } while (0)
#define WANT_F(k, v) do { if (!feq(cfg_float(c, k), v) && !bad++) snprintf(why, sizeof why, "%s = %g, want %g", k, cfg_float(c, k), (double)(v)); } while (0)
#define WANT_B(k, v) do { if (cfg_bool(c, k) != (v) && !bad++) snprintf(why, sizeof why, "%s = %d, want %d", k, cfg_bool(c, k), (int)(v)); } while (0)
#define WANT_S(k, v) do { if (strcmp(cfg_str(c, k), v) && !bad++) snprintf(why, sizeof why, "%s = '%s', want '%s'", k, cfg_str(c, k), v); } while (0)
    /* SPEC 2.1: LLaMA-7B (Vicuna-7B v1.1 in LLaVA-7B) */
    WANT_S("model.kind", "anyref");
    WANT_I("model.vocab", 0);   /* 32000 + the loader's added tokens */
    WANT_I("model.dim", 4096); WANT_I("model.layers", 32); WANT_I("model.heads", 32); WANT_I("model.kv_heads", 32);
    WANT_I("model.mlp_hidden", 11008); WANT_F("model.norm_eps", 1e-6); WANT_F("model.rope_theta", 10000);
    WANT_B("model.checkpoint_layers", 1);
    /* SPEC 2.2 LoRA + AnyRef's trainable set */
    WANT_I("lora.rank", 8); WANT_F("lora.alpha", 16); WANT_F("lora.dropout", 0.05); WANT_S("lora.targets", "q_proj,v_proj");
    WANT_S("train.trainable", "lora+embed"); WANT_S("sam.trainable", "anyref");
    /* SPEC 2.3 CLIP ViT-L/14 at 224, frozen, LLaVA's second-to-last layer; frozen projector */
    WANT_I("clip.image_size", 224); WANT_I("clip.patch", 14); WANT_I("clip.width", 1024); WANT_I("clip.layers", 24);
    WANT_I("clip.heads", 16); WANT_I("clip.mlp_dim", 4096); WANT_I("clip.select_layer", -2);
    WANT_S("clip.act", "quick_gelu"); WANT_B("clip.trainable", 0); WANT_B("projector.trainable", 0);
    /* SPEC 2.5, 2.6: λ 0.1, SAM ViT-H (frozen), mask decoder 256 / 64x64 / depth 2 / 8 heads / 2048 */
    WANT_F("seg.lambda", 0.1);
    WANT_S("sam_encoder.model", "vit_h"); WANT_B("sam_encoder.trainable", 0);
    WANT_I("sam.dim", 256); WANT_I("sam.grid", 64); WANT_I("sam.depth", 2); WANT_I("sam.heads", 8);
    WANT_I("sam.mlp_dim", 2048); WANT_I("sam.iou_hidden", 256);
    /* SPEC 2.7 ImageBind-huge audio */
    if (rc->audio) {
        WANT_I("audio.embed_dim", 768); WANT_I("audio.depth", 12); WANT_I("audio.heads", 12);
        WANT_I("audio.kernel", 16); WANT_I("audio.stride", 10); WANT_I("audio.out_dim", 1024);
    } else {
        WANT_I("audio.embed_dim", 0);
    }
    /* SPEC 1 losses */
    WANT_F("loss.ce_weight", 1.0); WANT_F("loss.bce_weight", 2.0); WANT_F("loss.dice_weight", 0.5);
    /* SPEC 2.10 */
    WANT_F("train.beta1", 0.9); WANT_F("train.beta2", rc->beta2); WANT_F("train.weight_decay", 0.0);
    WANT_F("train.lr", rc->lr); WANT_S("train.schedule", "linear"); WANT_I("train.warmup_steps", rc->warmup);
    WANT_I("train.batch_size", rc->batch); WANT_I("train.grad_accum", rc->accum); WANT_I("train.steps", 10000);
    WANT_S("data.kind", "sources"); WANT_S("data.template", "llava_v1"); WANT_B("data.clip_crop", 0);
#undef WANT_I
#undef WANT_F
#undef WANT_S
#undef WANT_B
    /* within SPEC 2.10's ranges */
    const double lr = cfg_float(c, "train.lr"), b2 = cfg_float(c, "train.beta2");
    const long wu = cfg_int(c, "train.warmup_steps"), bs = cfg_int(c, "train.batch_size"), ga = cfg_int(c, "train.grad_accum");
    if (!(lr >= 5e-5 && lr <= 3e-4) || !(feq(b2, 0.95) || feq(b2, 0.999)) || wu < 100 || wu > 200 || bs < 2 || bs > 6 ||
        ga < 8 || ga > 10)
        if (!bad++) snprintf(why, sizeof why, "outside SPEC 2.10's ranges");
    /* every checkpoint / data path is a marked placeholder */
    const char *paths[] = {"model.init", "sam.init", "sam_encoder.init", "clip.init", "data.tokenizer", "source.root"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
        if (strncmp(cfg_str(c, paths[i]), "/path/to/", 9) && !bad++)
            snprintf(why, sizeof why, "%s = '%s' is not a /path/to/ placeholder", paths[i], cfg_str(c, paths[i]));
    if (rc->audio && strncmp(cfg_str(c, "audio.init"), "/path/to/", 9) && !bad++) snprintf(why, sizeof why, "audio.init");
    snprintf(name, sizeof name, "recipe %s has SPEC's values", rc->name);
    t_check(!bad, name, "%s", bad ? why : "LLaMA-7B, ViT-L/14, ViT-H, LoRA 8/16/0.05 q,v, AdamW, schedule, batch, losses");

    /* the plan from the config alone */
    plan_shape s;
    mem_plan p;
    int rc_plan = plan_shape_from_config(c, &s) || plan_compute(&s, &p);
    snprintf(name, sizeof name, "recipe %s plan (no data, nothing allocated)", rc->name);
    if (!t_check(rc_plan == 0, name, "%s", rc_plan ? ar_error() : "")) { cfg_free(c); return; }
    /* LLaMA-7B by hand: per layer 4 D^2 (q,k,v,o) + 3 D F (gate, up, down) + 2 D (norms), final norm D;
     * trainable: embed_tokens and lm_head rows (V = 32000 + 7 added tokens), LoRA A [8,D] and B [D,8] on q,v */
    const size_t D = 4096, F = 11008, L = 32, V = 32007;
    const size_t frozen = L * (4 * D * D + 3 * D * F + 2 * D) + D, train = 2 * V * D + L * 2 * (8 * D + D * 8);
    snprintf(name, sizeof name, "recipe %s plan: LLaMA-7B parameter counts", rc->name);
    t_check(p.frozen[PC_LLM] == frozen && p.trainable[PC_LLM] == train, name,
            "frozen %zu (want %zu), trainable %zu (want %zu)", p.frozen[PC_LLM], frozen, p.trainable[PC_LLM], train);
    snprintf(name, sizeof name, "recipe %s plan total", rc->name);
    t_ok(name, "%.2f GiB = weights %.2f + grads %.2f + AdamW %.2f + activations %.2f + workspace %.2f (batch %d x %d)",
         p.total / 1073741824.0, p.weights_bytes / 1073741824.0, p.grads_bytes / 1073741824.0,
         p.adam_bytes / 1073741824.0, p.act_bytes / 1073741824.0, p.workspace / 1073741824.0, s.B, s.T);
    *total_out = p.total;
    cfg_free(c);
}

/* Every field of two plans. */
static int plan_diff(const mem_plan *a, const mem_plan *b, char *why, size_t cap) {
    for (int i = 0; i < PC_N; i++)
        if (a->frozen[i] != b->frozen[i] || a->trainable[i] != b->trainable[i])
            return snprintf(why, cap, "%s weights differ", plan_component_name[i]), 1;
    const size_t *x = &a->nw, *y = &b->nw;
    const char *f[] = {"nw", "ng", "nw16", "act_llm", "act_seg_head", "act_decoder", "act_step", "act_clip", "act_proj",
                       "act_audio", "act_refs", "act_sam_enc", "workspace", "weights", "grads", "adam", "act", "total"};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (x[i] != y[i]) return snprintf(why, cap, "%s: %zu vs %zu", f[i], x[i], y[i]), 1;
    return 0;
}

static void check_tiny(const char *path, const char **ov, int n) {
    char name[128], why[256] = "";
    ar_config *c = load(path, ov, n);
    if (!c) return;
    run_t r;
    memset(&r, 0, sizeof r);
    if (run_setup(&r, c)) {
        t_fail("plan.tiny setup", "%s: %s", path, ar_error());
        run_teardown(&r);
        cfg_free(c);
        return;
    }
    plan_shape s, sc;
    mem_plan p, pc;
    if (plan_shape_from_run(&r, &s) || plan_compute(&s, &p)) { t_fail("plan.tiny", "%s", ar_error()); goto out; }
    /* what the run allocated */
    int ok = p.nw == r.ps.nw && p.ng == r.ps.ng && p.nw16 == r.ps.nw16 && p.weights_bytes == params_weight_bytes(&r.ps);
    snprintf(name, sizeof name, "plan %s: registry floats = allocated", path);
    t_check(ok, name, "plan nw %zu ng %zu nw16 %zu, registry nw %zu ng %zu nw16 %zu", p.nw, p.ng, p.nw16, r.ps.nw,
            r.ps.ng, r.ps.nw16);
    size_t got_llm = llama_activation_bytes(r.m);
    snprintf(name, sizeof name, "plan %s: LLM arena = llama_activation_bytes", path);
    t_check(p.act_llm == got_llm && got_llm > 0, name, "plan %zu, created %zu", p.act_llm, got_llm);
    if (r.is_anyref) {
        anyref_mem am;
        anyref_memory(r.ar, &am);
        snprintf(name, sizeof name, "plan %s: AnyRef step buffers = created", path);
        t_check(am.llm == p.act_llm && am.seg_head == p.act_seg_head && am.decoder == p.act_decoder && am.step == p.act_step,
                name, "llm %zu/%zu head %zu/%zu decoder %zu/%zu step %zu/%zu", p.act_llm, am.llm, p.act_seg_head,
                am.seg_head, p.act_decoder, am.decoder, p.act_step, am.step);
        if (r.refs) {
            refs_mem rm;
            refs_memory(r.refs, &rm);
            snprintf(name, sizeof name, "plan %s: CLIP / projector / ImageBind / reference buffers = created", path);
            t_check(rm.clip == p.act_clip && rm.projector == p.act_proj && rm.audio == p.act_audio &&
                    rm.buffers == p.act_refs && rm.clip && rm.audio,
                    name, "clip %zu/%zu proj %zu/%zu audio %zu/%zu buffers %zu/%zu", p.act_clip, rm.clip, p.act_proj,
                    rm.projector, p.act_audio, rm.audio, p.act_refs, rm.buffers);
        }
        if (r.senc) {
            snprintf(name, sizeof name, "plan %s: SAM image encoder arena = created", path);
            t_check(p.act_sam_enc == sam_encoder_activation_bytes(r.senc), name, "plan %zu, created %zu", p.act_sam_enc,
                    sam_encoder_activation_bytes(r.senc));
        }
    }
    /* the config-only plan: the same once the data's sizes are the same */
    if (plan_shape_from_config(c, &sc)) { t_fail("plan.tiny config", "%s", ar_error()); goto out; }
    if (r.is_anyref) {
        sc.ac.max_orig_h = s.ac.max_orig_h; sc.ac.max_orig_w = s.ac.max_orig_w;
        sc.max_seg = s.max_seg;
    }
    if (plan_compute(&sc, &pc)) { t_fail("plan.tiny config", "%s", ar_error()); goto out; }
    snprintf(name, sizeof name, "plan %s: config-only plan = the run's plan", path);
    t_check(!plan_diff(&pc, &p, why, sizeof why), name, "%s (total %zu bytes)", why[0] ? why : "every part", p.total);
out:
    run_teardown(&r);
    cfg_free(c);
}

int main(void) {
    setenv("ANYREF_PROGRESS", "off", 1);
    const recipe rs[] = {
        {"refseg", 0, 2, 10, 3e-4, 0.95, 100},
        {"avs", 1, 6, 8, 5e-5, 0.999, 200},
        {"caption", 0, 2, 10, 3e-4, 0.95, 100},
        {"mixed", 1, 6, 8, 5e-5, 0.999, 200},
    };
    size_t totals[4] = {0};
    for (int i = 0; i < 4; i++) check_recipe(&rs[i], &totals[i]);
    /* the target: the 7B step (batch 6, ~400 tokens) in one 80 GB GPU, here in float32 */
    t_check(totals[3] > 0 && totals[3] < (size_t)80e9, "mixed 7B plan fits one 80 GB GPU in float32",
            "%.2f GB (%.2f GiB)", totals[3] / 1e9, totals[3] / 1073741824.0);
    /* with the frozen LLaMA projections in bf16 (model.frozen_weights = bf16) */
    {
        const char *ov[] = {"model.frozen_weights=bf16"};
        ar_config *c = load("configs/anyref-7b-mixed.cfg", ov, 1);
        plan_shape s;
        mem_plan p;
        int ok = c && !plan_shape_from_config(c, &s) && !plan_compute(&s, &p);
        const double saved = ok ? ((double)totals[3] - (double)p.total) / 1073741824.0 : 0;
        /* 6,476,005,376 frozen projection values (32 layers of 4 x 4096^2 + 3 x 4096 x 11008) lose 2 bytes each */
        t_check(ok && p.nw16 == (size_t)32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) && p.total + 2 * p.nw16 == totals[3],
                "mixed 7B plan with model.frozen_weights = bf16", "%.2f GiB (%.2f GiB less: %zu bf16 values)%s%s",
                ok ? p.total / 1073741824.0 : 0.0, saved, ok ? p.nw16 : 0, ok ? "" : ": ", ok ? "" : ar_error());
        cfg_free(c);
    }

    /* the frozen bf16 SAM encoder in GEMM mode bf16: its attention's bf16 buffers are counted under
     * workspace (global ViT-H grid 64 x 64, 16 heads of 80: one grid per chunk on either backend) */
    {
        const char *o1[] = {"sam_encoder.frozen_weights=bf16", "train.gemm=fp32"};
        const char *o2[] = {"sam_encoder.frozen_weights=bf16", "train.gemm=bf16"};
        ar_config *c1 = load("configs/anyref-7b-mixed.cfg", o1, 2), *c2 = load("configs/anyref-7b-mixed.cfg", o2, 2);
        plan_shape s1, s2;
        mem_plan p1, p2;
        int ok = c1 && c2 && !plan_shape_from_config(c1, &s1) && !plan_compute(&s1, &p1) &&
                 !plan_shape_from_config(c2, &s2) && !plan_compute(&s2, &p2);
        const size_t want = ok ? sam_encoder_kernel_workspace_bytes(&s2.senc, s2.B, 1) : 0;
        const size_t lm = ok ? (size_t)s2.llm.vocab * s2.llm.dim * 2 : 0;   /* lm_head's bf16 copy */
        const size_t qkv16 = (size_t)4096 * 3 * 1280 * 2;                   /* one grid's q, k, v in bf16 */
        t_check(ok && p1.ws_sam_attn == 0 && p2.ws_sam_attn == want && want > qkv16 &&
                    p2.workspace == p1.workspace + lm + want,
                "mixed 7B plan counts the bf16 SAM attention's buffers", "%.1f MiB (none in fp32 mode)%s%s",
                want / 1048576.0, ok ? "" : ": ", ok ? "" : ar_error());
        cfg_free(c1);
        cfg_free(c2);
    }

    /* anyref plan lists the knobs that would shrink the plan, with their totals */
    {
        const char *none[] = {"model.frozen_weights=bf16", "model.attention=flash", "model.activations=bf16",
                              "sam_encoder.frozen_weights=bf16", "clip.frozen_weights=bf16",
                              "audio.frozen_weights=bf16"};
        for (int v = 0; v < 2; v++) {
            ar_config *c = load("configs/anyref-7b-mixed.cfg", v ? none : NULL, v ? 6 : 0);
            char *buf = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&buf, &len);
            int rc = c && f ? plan_main_cfg(c, f) : -1;
            if (f) fclose(f);
            const int listed = buf && strstr(buf, "options that take less memory") != NULL;
            if (!v)
                t_check(rc == 0 && listed && strstr(buf, "model.frozen_weights = bf16              total    27.631 GiB") &&
                            strstr(buf, "model.activations = bf16                 total    39.144 GiB") &&
                            strstr(buf, "sam_encoder.frozen_weights = bf16        total    38.521 GiB") &&
                            strstr(buf, "clip.frozen_weights = bf16               total    39.131 GiB") &&
                            strstr(buf, "audio.frozen_weights = bf16              total    39.535 GiB") &&
                            strstr(buf, "all of them                              total    24.883 GiB"),
                        "plan lists the memory options", "mixed 7B recipe: %s", listed ? "bf16 weights 27.631 GiB, bf16 "
                        "activations 39.144 GiB, bf16 SAM encoder 38.521 GiB, bf16 CLIP 39.131 GiB, bf16 ImageBind "
                        "audio 39.535 GiB, all of them 24.883 GiB (as listed)" : "NOT LISTED");
            else
                t_check(rc == 0 && !listed, "plan lists no option already in use",
                        "with bf16 weights, flash, bf16 activations, a bf16 SAM encoder, CLIP and ImageBind: %s",
                        listed ? "LISTED" : "none listed");
            free(buf);
            cfg_free(c);
        }
    }
    const char *demo[] = {"run.dir=/tmp/anyref_test_recipes_demo", "lora.rank=4", "train.trainable=lora"};
    check_tiny("configs/demo.cfg", demo, 3);
    check_tiny("configs/demo.cfg", demo, 1);   /* full training: every weight trainable */
    const char *ckp[] = {"run.dir=/tmp/anyref_test_recipes_demo", "model.checkpoint_layers=1", "lora.rank=8",
                         "train.trainable=lora", "lora.targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"};
    check_tiny("configs/demo.cfg", ckp, 5);
    const char *src[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0"};
    check_tiny("configs/sources-tiny.cfg", src, 2);
    const char *src2[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "lora.rank=4",
                          "train.trainable=lora+embed", "model.checkpoint_layers=1", "clip.trainable=0",
                          "sam_encoder.trainable=0", "projector.type=linear", "sam.trainable=anyref"};
    check_tiny("configs/sources-tiny.cfg", src2, 9);
    const char *src2h[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "lora.rank=4",
                           "train.trainable=lora+embed", "sam_encoder.trainable=0", "sam_encoder.frozen_weights=bf16",
                           "model.frozen_weights=bf16", "clip.trainable=0", "clip.frozen_weights=bf16"};
    check_tiny("configs/sources-tiny.cfg", src2h, 9);   /* all three in 16 bits: one registry format */
    const char *src3[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "clip.trainable=1",
                          "clip.layers=3", "clip.checkpoint=1"};   /* checkpointed: 2 run layers share a block */
    check_tiny("configs/sources-tiny.cfg", src3, 5);
    /* frozen LLaMA projections stored as bf16: the plan counts them at 2 bytes */
    const char *b16[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "lora.rank=4",
                         "train.trainable=lora+embed", "model.frozen_weights=bf16"};
    check_tiny("configs/sources-tiny.cfg", b16, 5);
    /* flash attention: the decoder keeps rows' log-sum-exp (and, for refocusing, the last layer's probabilities) */
    const char *fl[] = {"run.dir=/tmp/anyref_test_recipes_demo", "lora.rank=4", "train.trainable=lora", "model.attention=flash"};
    check_tiny("configs/demo.cfg", fl, 4);
    const char *fl2[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "model.attention=flash",
                         "model.checkpoint_layers=1"};
    check_tiny("configs/sources-tiny.cfg", fl2, 4);
    /* bf16 activations (model.activations = bf16): per-layer bf16 stores and one fp32 work set, with and
     * without checkpointing and flash attention */
    const char *ab[] = {"run.dir=/tmp/anyref_test_recipes_demo", "lora.rank=4", "train.trainable=lora", "model.activations=bf16",
                        "lora.targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"};
    check_tiny("configs/demo.cfg", ab, 5);
    const char *ab2[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "model.activations=bf16",
                         "model.attention=flash"};
    check_tiny("configs/sources-tiny.cfg", ab2, 4);
    const char *ab3[] = {"run.dir=/tmp/anyref_test_recipes_sources", "data.workers=0", "model.activations=bf16",
                         "model.checkpoint_layers=1"};
    check_tiny("configs/sources-tiny.cfg", ab3, 4);
    return t_exit_code();
}
