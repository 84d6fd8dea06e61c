/* train/train.c — see train.h.
 *
 * One optimiser step = grad_accum micro-batches of batch_size sequences of
 * seq_len tokens; each micro-batch's mean CE loss is weighted 1/grad_accum.
 * Everything that decides a step's numbers — the data order, the dropout
 * masks (rng_derive(seed, step)), AdamW's t — derives from the seed and the
 * step, and the CPU kernels are bitwise deterministic, so a resumed run
 * reproduces the uninterrupted one exactly. */
#include "train/train.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/peft.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/synthetic.h"
#include "data/grounding_dataset.h"
#include "data/feature_cache.h"
#include "data/token_dataset.h"
#include "data/conversation.h"
#include "data/tokenizer.h"
#include "kernels/kernels.h"
#include "model/llama.h"
#include "model/anyref.h"
#include "model/references.h"
#include "model/sam_image_encoder.h"
#include "optim/optim.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const cfg_key train_schema[] = {
    {"model.kind", CFG_STRING, "llama", "llama (the decoder alone, CE) | anyref (decoder + [SEG] head + SAM mask decoder, CE + BCE + Dice)"},
    {"model.vocab", CFG_INT, "0", "vocabulary size (0: from the data)"},
    {"model.dim", CFG_INT, "64", "hidden size"},
    {"model.layers", CFG_INT, "2", "decoder layers"},
    {"model.heads", CFG_INT, "4", "attention heads"},
    {"model.kv_heads", CFG_INT, "0", "key/value heads, grouped-query attention (0: = heads)"},
    {"model.mlp_hidden", CFG_INT, "176", "SwiGLU hidden size"},
    {"model.max_seq", CFG_INT, "0", "longest sequence (0: = train.seq_len)"},
    {"model.norm_eps", CFG_FLOAT, "1e-6", "RMSNorm epsilon"},
    {"model.rope_theta", CFG_FLOAT, "10000", "RoPE base"},
    {"model.checkpoint_layers", CFG_BOOL, "0", "gradient checkpointing: recompute each layer in backward (activation memory / layers)"},
    {"model.init", CFG_STRING, "", "initial weights: .safetensors file, sharded index .json or HF model directory (empty: random)"},
    {"seg.token", CFG_INT, "-1", "anyref: the [SEG] token id (-1: the data file's seg_token_id attribute)"},
    {"seg.lambda", CFG_FLOAT, "0.1", "anyref: refocusing weight (rephrase_weight; 0 disables refocusing)"},
    {"sam.dim", CFG_INT, "256", "anyref: SAM prompt/mask-decoder width = image-embedding channels"},
    {"sam.grid", CFG_INT, "64", "anyref: image-embedding grid side (64 for SAM at 1024 px)"},
    {"sam.img_size", CFG_INT, "0", "anyref: SAM encoder input side (0: 16 * sam.grid)"},
    {"sam.depth", CFG_INT, "2", "anyref: two-way transformer blocks"},
    {"sam.heads", CFG_INT, "8", "anyref: mask-decoder attention heads"},
    {"sam.mlp_dim", CFG_INT, "2048", "anyref: two-way transformer MLP width"},
    {"sam.iou_hidden", CFG_INT, "256", "anyref: IoU-head hidden width"},
    {"sam.trainable", CFG_STRING, "anyref", "anyref: trainable mask-decoder parts: anyref (mask tokens, upscaling, hypernetworks) | lisa (whole decoder) | none"},
    {"sam.init", CFG_STRING, "", "anyref: SAM weights (.safetensors with prompt_encoder.* and mask_decoder.*; empty: random)"},
    {"sam_encoder.model", CFG_STRING, "none", "anyref: run the SAM image encoder on the data's /sam_pixels: none (use /image_embeddings) | vit_b | vit_l | vit_h | custom"},
    {"sam_encoder.img_size", CFG_INT, "1024", "anyref, custom: encoder input side"},
    {"sam_encoder.patch", CFG_INT, "16", "anyref, custom: patch size (img_size / patch = sam.grid)"},
    {"sam_encoder.dim", CFG_INT, "768", "anyref, custom: ViT width"},
    {"sam_encoder.depth", CFG_INT, "12", "anyref, custom: ViT blocks"},
    {"sam_encoder.heads", CFG_INT, "12", "anyref, custom: attention heads"},
    {"sam_encoder.window", CFG_INT, "14", "anyref, custom: window size of the windowed blocks"},
    {"sam_encoder.global", CFG_STRING, "2,5,8,11", "anyref, custom: blocks with global attention"},
    {"sam_encoder.trainable", CFG_BOOL, "0", "anyref: train the SAM image encoder too (full backward; for small models from scratch; no feature cache for it)"},
    {"sam_encoder.init", CFG_STRING, "", "anyref: SAM image-encoder weights (.safetensors, image_encoder.*; empty: random)"},
    {"clip.image_size", CFG_INT, "0", "anyref: CLIP input side (0: no images or references as tokens; 224 for ViT-L/14)"},
    {"clip.patch", CFG_INT, "14", "anyref: CLIP patch size"},
    {"clip.width", CFG_INT, "1024", "anyref: CLIP width"},
    {"clip.layers", CFG_INT, "24", "anyref: CLIP layers"},
    {"clip.heads", CFG_INT, "16", "anyref: CLIP attention heads"},
    {"clip.mlp_dim", CFG_INT, "4096", "anyref: CLIP MLP width"},
    {"clip.select_layer", CFG_INT, "-2", "anyref: CLIP hidden state fed to the projector (LLaVA: -2)"},
    {"clip.act", CFG_STRING, "quick_gelu", "anyref: CLIP activation: quick_gelu | gelu"},
    {"clip.trainable", CFG_BOOL, "0", "anyref: train the CLIP tower too (full backward; for small models from scratch; no feature cache for it)"},
    {"clip.init", CFG_STRING, "", "anyref: CLIP and mm_projector weights (.safetensors: vision_model.*, model.mm_projector.*; empty: random)"},
    {"projector.type", CFG_STRING, "linear", "anyref: mm_projector: linear | mlp2x_gelu"},
    {"projector.trainable", CFG_BOOL, "0", "anyref: train the mm_projector (AnyRef: frozen)"},
    {"audio.embed_dim", CFG_INT, "0", "anyref: ImageBind audio width (0: no audio references; 768 for imagebind_huge)"},
    {"audio.depth", CFG_INT, "12", "anyref: ImageBind audio blocks"},
    {"audio.heads", CFG_INT, "12", "anyref: ImageBind audio heads"},
    {"audio.kernel", CFG_INT, "16", "anyref: ImageBind audio stem kernel"},
    {"audio.stride", CFG_INT, "10", "anyref: ImageBind audio stem stride"},
    {"audio.out_dim", CFG_INT, "1024", "anyref: ImageBind audio embedding size"},
    {"audio.init", CFG_STRING, "", "anyref: ImageBind audio + audio_projector weights (.safetensors, official names; empty: random)"},
    {"loss.ce_weight", CFG_FLOAT, "1.0", "anyref: weight of the token cross-entropy"},
    {"loss.bce_weight", CFG_FLOAT, "2.0", "anyref: weight of the mask binary cross-entropy"},
    {"loss.dice_weight", CFG_FLOAT, "0.5", "anyref: weight of the mask Dice loss"},
    {"lora.rank", CFG_INT, "0", "LoRA rank (0: no LoRA)"},
    {"lora.alpha", CFG_FLOAT, "16", "LoRA alpha (scale = alpha / rank)"},
    {"lora.dropout", CFG_FLOAT, "0.05", "dropout on the LoRA input"},
    {"lora.targets", CFG_STRING, "q_proj,v_proj", "projections with LoRA: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj"},
    {"train.trainable", CFG_STRING, "full", "full (every weight) | lora (LoRA only) | lora+embed (LoRA, embed_tokens, lm_head: AnyRef)"},
    {"train.steps", CFG_INT, "400", "optimiser steps"},
    {"train.batch_size", CFG_INT, "32", "sequences per micro-batch"},
    {"train.grad_accum", CFG_INT, "1", "micro-batches per optimiser step"},
    {"train.seq_len", CFG_INT, "0", "tokens per sequence (0: from the data)"},
    {"train.lr", CFG_FLOAT, "3e-3", "peak learning rate"},
    {"train.schedule", CFG_STRING, "linear", "linear | cosine | constant (after warm-up)"},
    {"train.warmup_steps", CFG_INT, "30", "linear warm-up steps"},
    {"train.weight_decay", CFG_FLOAT, "0.0", "AdamW decoupled weight decay (matrices only)"},
    {"train.beta1", CFG_FLOAT, "0.9", "AdamW beta1"},
    {"train.beta2", CFG_FLOAT, "0.95", "AdamW beta2"},
    {"train.eps", CFG_FLOAT, "1e-8", "AdamW epsilon"},
    {"train.grad_clip", CFG_FLOAT, "1.0", "global gradient-norm clip (0: off)"},
    {"train.seed", CFG_INT, "1337", "seed for weights, data order and dropout"},
    {"train.threads", CFG_INT, "0", "CPU threads (0: all)"},
    {"train.deterministic", CFG_BOOL, "0", "require bitwise-repeatable results (CPU backend only)"},
    {"train.eval_every", CFG_INT, "100", "steps between validations (0: at the end only)"},
    {"train.eval_batches", CFG_INT, "8", "micro-batches per validation"},
    {"train.save_every", CFG_INT, "0", "steps between checkpoints (0: at the end only)"},
    {"train.keep_checkpoints", CFG_INT, "3", "checkpoints kept in the run directory (0: all)"},
    {"train.resume", CFG_STRING, "auto", "auto (newest checkpoint of run.dir, if any) | never (start afresh) | a checkpoint path"},
    {"train.stop_after", CFG_INT, "0", "stop (with a checkpoint) after this many steps of this run (0: run to train.steps)"},
    {"train.min_accuracy", CFG_FLOAT, "0", "synthetic data: exit 1 if the final accuracy is below this"},
    {"train.min_val_giou", CFG_FLOAT, "0", "anyref: exit 1 if the final validation gIoU is below this"},
    {"data.kind", CFG_STRING, "synthetic", "synthetic (the demo tasks) | tokens (pre-tokenized HDF5) | conversations (LLaVA JSON, tokenized into run.dir/data/ first) | grounding (HDF5 with SAM image embeddings and masks, for model.kind = anyref)"},
    {"data.train", CFG_STRING, "", "tokens/grounding: training file (HDF5: input_ids, labels[, attention_mask], ...); conversations: LLaVA JSON"},
    {"data.val", CFG_STRING, "", "validation file of the same kind (empty: no validation loss)"},
    {"data.tokenizer", CFG_STRING, "", "conversations: tokenizer.model or tokenizer.json"},
    {"data.template", CFG_STRING, "llava_v1", "conversations: llava_v1 | vicuna_v1_1"},
    {"data.add_tokens", CFG_STRING, "", "conversations: added tokens, comma separated (e.g. [SEG]), whitespace around them stripped as transformers 4.31 did"},
    {"data.cache", CFG_STRING, "", "grounding with sam_encoder.* or clip.*: feature cache file for the frozen SAM / CLIP / ImageBind outputs (HDF5; empty: off; fill it ahead with `anyref cache`)"},
    {"data.task", CFG_STRING, "reverse", "synthetic: reverse | copy | sort"},
    {"data.digits", CFG_INT, "6", "synthetic: digits per prompt"},
    {"data.base", CFG_INT, "10", "synthetic: distinct digit tokens"},
    {"data.eval_samples", CFG_INT, "256", "synthetic: fresh sequences for greedy exact-match accuracy"},
    {"run.dir", CFG_STRING, "runs/demo", "run directory: config.cfg, metrics.jsonl, checkpoints/"},
};
const int train_schema_len = (int)(sizeof train_schema / sizeof train_schema[0]);

/* ------------------------------------------------------------------------ */
/* Data sources                                                             */
/* ------------------------------------------------------------------------ */
typedef struct {
    int kind;                 /* DATA_SYNTH or DATA_TOKENS */
    int vocab, seq_len;       /* what the data needs: 0 = no constraint */
    synth_task task;
    ar_rng rng;               /* synthetic: the stream of training samples */
    token_dataset *train, *val;
    grounding_dataset *gtrain, *gval;
    tds_cursor cur;           /* tokens, grounding: epoch, position in the epoch's order */
} data_src;
enum { DATA_SYNTH, DATA_TOKENS, DATA_GROUNDING };

/* LLaVA-format JSON -> <run_dir>/data/<name>.h5 (the HDF5 token format),
 * reused while newer than the JSON. *vocab gets the tokenizer's vocabulary
 * with the added tokens. */
static int prepare_conversations(const ar_config *cfg, const char *json, const char *run_dir, const char *name,
                                 int T, char *out, size_t cap, int *vocab) {
    snprintf(out, cap, "%s/data/%s.h5", run_dir, name);
    tokenizer *tok = tok_load(cfg_str(cfg, "data.tokenizer"));
    if (!tok) return ar_error_prefix("data.tokenizer: ");
    conv_encoder *e = conv_encoder_new(tok, cfg_str(cfg, "data.template"), T);
    int rc = -1;
    if (!e) { ar_error_prefix("data.template: "); goto out; }
    char list[1024];
    snprintf(list, sizeof list, "%s", cfg_str(cfg, "data.add_tokens"));
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ') t[--n] = 0;
        if (n && conv_encoder_add_token(e, t, 1) < 0) { ar_error_prefix("data.add_tokens: "); goto out; }
    }
    *vocab = tok_vocab_size(tok);
    struct stat sj, sh;
    if (stat(json, &sj) != 0) { ar_errorf("data: cannot read %s: %s", json, strerror(errno)); goto out; }
    if (stat(out, &sh) == 0 && sh.st_mtime >= sj.st_mtime) {
        log_info("data: %s is up to date (delete it to tokenize %s again)", out, json);
        rc = 0;
        goto out;
    }
    conv_dataset ds;
    if (conv_load_json_with(json, e, &ds)) goto out;
    int64_t rows = conv_write_tokens(&ds, out, T, *vocab);
    if (rows >= 0)
        log_info("data: %s: %lld conversations, %lld written to %s (%lld skipped, %lld truncated, %lld mismatched; %lld supervised tokens)",
                 json, (long long)ds.n_input, (long long)rows, out, (long long)ds.n_skipped, (long long)ds.n_truncated,
                 (long long)ds.n_mismatch, (long long)ds.n_supervised);
    conv_dataset_free(&ds);
    rc = rows >= 0 ? 0 : -1;
out:
    conv_encoder_free(e);
    tok_free(tok);
    return rc;
}

static int data_open(data_src *d, const ar_config *cfg, int model_vocab) {
    memset(d, 0, sizeof *d);
    const char *kind = cfg_str(cfg, "data.kind");
    if (!strcmp(kind, "synthetic")) {
        d->kind = DATA_SYNTH;
        if (synth_init(&d->task, cfg_str(cfg, "data.task"), (int)cfg_int(cfg, "data.digits"), (int)cfg_int(cfg, "data.base")))
            return ar_error_prefix("config: ");
        d->vocab = d->task.vocab;
        d->seq_len = d->task.T;
        return 0;
    }
    char tbuf[1200], vbuf[1200];
    if (!strcmp(kind, "conversations")) {
        const char *tj = cfg_str(cfg, "data.train"), *vj = cfg_str(cfg, "data.val"), *rd = cfg_str(cfg, "run.dir");
        int T = (int)cfg_int(cfg, "train.seq_len"), vocab = 0;
        if (!tj[0] || !cfg_str(cfg, "data.tokenizer")[0])
            return ar_errorf("config: data.kind = conversations needs data.train (LLaVA JSON) and data.tokenizer");
        if (T < 2) return ar_errorf("config: data.kind = conversations needs train.seq_len (the token length of a sample)");
        if (prepare_conversations(cfg, tj, rd, "train", T, tbuf, sizeof tbuf, &vocab)) return -1;
        if (vj[0] && prepare_conversations(cfg, vj, rd, "val", T, vbuf, sizeof vbuf, &vocab)) return -1;
        if (model_vocab == 0) model_vocab = vocab;
        else if (model_vocab < vocab)
            return ar_errorf("config: model.vocab = %d is smaller than the tokenizer's %d (with data.add_tokens)", model_vocab, vocab);
        kind = "tokens";
    }
    if (!strcmp(kind, "tokens")) {
        d->kind = DATA_TOKENS;
        const char *tp = cfg_str(cfg, "data.train"), *vp = cfg_str(cfg, "data.val");
        if (!strcmp(cfg_str(cfg, "data.kind"), "conversations")) { tp = tbuf; vp = vp[0] ? vbuf : vp; }
        if (!tp[0]) return ar_errorf("config: data.kind = tokens needs data.train (an HDF5 file with input_ids and labels)");
        if (model_vocab <= 0) return ar_errorf("config: data.kind = tokens needs model.vocab (the tokenizer's vocabulary size)");
        if (!(d->train = tds_open(tp, model_vocab))) return -1;
        if (vp[0] && !(d->val = tds_open(vp, model_vocab))) return -1;
        d->vocab = model_vocab;
        d->seq_len = tds_seq_len(d->train);
        return 0;
    }
    if (!strcmp(kind, "grounding")) {
        d->kind = DATA_GROUNDING;
        const char *tp = cfg_str(cfg, "data.train"), *vp = cfg_str(cfg, "data.val");
        const int C = (int)cfg_int(cfg, "sam.dim"), G = (int)cfg_int(cfg, "sam.grid");
        if (strcmp(cfg_str(cfg, "model.kind"), "anyref") != 0)
            return ar_errorf("config: data.kind = grounding trains the mask decoder: set model.kind = anyref");
        if (!tp[0]) return ar_errorf("config: data.kind = grounding needs data.train (an HDF5 grounding file, data/grounding_dataset.h)");
        if (model_vocab <= 0) return ar_errorf("config: data.kind = grounding needs model.vocab (the tokenizer's vocabulary size)");
        if (!(d->gtrain = gds_open(tp, model_vocab, C, G, G))) return ar_error_prefix("data.train: ");
        if (vp[0] && !(d->gval = gds_open(vp, model_vocab, C, G, G))) return ar_error_prefix("data.val: ");
        d->vocab = model_vocab;
        d->seq_len = gds_seq_len(d->gtrain);
        return 0;
    }
    return ar_errorf("config: data.kind = '%s' (expected synthetic, tokens, conversations or grounding)", kind);
}

static void data_close(data_src *d) { tds_close(d->train); tds_close(d->val); gds_close(d->gtrain); gds_close(d->gval); }

/* B sequences of T tokens into tokens/targets; -1 + ar_error. */
static int data_next(data_src *d, int B, int T, int *tokens, int *targets) {
    if (d->kind == DATA_TOKENS) return tds_next_batch(d->train, &d->cur, B, T, tokens, targets);
    for (int b = 0; b < B; b++) synth_sample(&d->task, &d->rng, tokens + (size_t)b * T, targets + (size_t)b * T);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */
static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) { (void)sig; g_interrupted = 1; }

typedef struct {
    const ar_config *cfg;
    llama_cfg mc;
    ar_optim_cfg oc;
    ar_params ps;
    llama *m;
    data_src data;
    ar_log *log;
    ar_train_state st;
    char run_dir[1024], metrics[1100];
    int B, T, accum, steps;
    uint64_t seed;
    int *tok, *tgt;
    int skip_init;            /* export-peft: the adapter needs no base weights */
    /* model.kind = anyref */
    int is_anyref;
    anyref_cfg ac;
    anyref *ar;
    int max_seg;
    size_t chw, mask_cap;     /* floats per image embedding / per mask slot */
    float *d_img, *d_mask;    /* backend: B embeddings, max_seg masks */
    float *h_logits;          /* host: one mask's logits */
    const float **img_ptr, **mask_ptr;
    /* images and references as tokens (clip.image_size > 0) */
    refs_cfg rcfg;
    refs *refs;
    int use_refs;
    int Tf;                   /* the data file's sequence length (r->T: after splicing) */
    int *raw_tok, *raw_tgt;   /* [B*Tf] as read */
    float *d_clip, *d_crop, *d_fbank, *d_boxes, *h_boxes;
    size_t clip_n, fbank_n;
    int *slot_img;
    refs_markers mk;
    int *sp_tok, *sp_lab, *lab;   /* host splice scratch [T], [T], [Tf] */
    /* the SAM image encoder (sam_encoder.model) */
    sam_encoder_cfg scfg;
    sam_image_encoder *senc;
    int use_senc;
    size_t sam_n;
    float *d_sam_in, *d_dimg;   /* inputs; d image embeddings (trainable encoder) */
    float **dimg_ptr;
    int n_senc;                 /* images in the last encoder forward */
    /* the feature cache (data.cache) */
    fc_cache *fc;
    fc_hash enc_clip, enc_audio, enc_sam;
    float *d_img_feat, *d_crop_feat, *d_aud_feat, *d_scr_in, *d_scr_out, *h_feat;
    int *miss;
} run_t;

/* The resolved config as text (stored in every checkpoint). */
static char *config_text(const ar_config *cfg) {
    char *buf = NULL; size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) { ar_errorf("out of memory"); return NULL; }
    cfg_write(cfg, f);
    fclose(f);
    return buf;
}

/* Mean validation loss over the counted targets of eval_batches micro-batches:
 * a fixed synthetic stream, or the validation file's rows in file order (at
 * most one pass over the file; broken rows skipped). NaN when there is none. */
static double validate(run_t *r, int batches) {
    if (batches <= 0 || (r->data.kind == DATA_TOKENS && !r->data.val)) return NAN;
    llama_set_training(r->m, 0);
    ar_rng v; rng_seed(&v, rng_derive(r->seed, 3));
    int64_t rows = r->data.val ? tds_rows(r->data.val) : 0, next = 0;
    if (r->data.kind == DATA_TOKENS && (rows + r->B - 1) / r->B < batches) batches = (int)((rows + r->B - 1) / r->B);
    double sum = 0; long cnt = 0;
    for (int i = 0; i < batches; i++) {
        for (int b = 0; b < r->B; b++) {
            int *tk = r->tok + (size_t)b * r->T, *tg = r->tgt + (size_t)b * r->T;
            if (r->data.kind == DATA_SYNTH) { synth_sample(&r->data.task, &v, tk, tg); continue; }
            int rc = 1;
            for (int64_t tries = 0; rc == 1 && tries < rows; tries++, next = (next + 1) % rows)
                rc = tds_read_row(r->data.val, next, r->T, tk, tg);
            if (rc != 0) { llama_set_training(r->m, 1); return NAN; }  /* I/O error, or no usable row */
        }
        int c = 0;
        float l = llama_forward(r->m, r->tok, r->tgt, r->B, r->T, 0, &c);
        sum += (double)l * c; cnt += c;
    }
    llama_set_training(r->m, 1);
    return cnt ? sum / cnt : NAN;
}

/* ------------------------------------------------------------------------ */
/* model.kind = anyref                                                      */
/* ------------------------------------------------------------------------ */
static int is_llama_name(const char *n) {
    return !strncmp(n, "lm_head.", 8) ||
           (!strncmp(n, "model.", 6) && strncmp(n, "model.text_hidden_fcs", 21) != 0 &&
            strncmp(n, "model.mm_projector.", 19) != 0 && strncmp(n, "model.audio_projector.", 22) != 0);
}

/* Sample b of the rows read at Tf (shifted targets) spliced into r->tok/tgt
 * at T: labels[t] = targets[t-1], splice, shift back. */
static int splice_sample(run_t *r, int b, int image_row, const refs_ref *rf, int n_refs) {
    const int *tk = r->raw_tok + (size_t)b * r->Tf, *tg = r->raw_tgt + (size_t)b * r->Tf;
    r->lab[0] = -100;
    for (int t = 1; t < r->Tf; t++) r->lab[t] = tg[t - 1];
    int n = refs_splice(tk, r->lab, r->Tf, &r->mk, refs_image_tokens(r->refs), image_row, rf, n_refs, r->T, 0,
                        r->sp_tok, r->sp_lab);
    if (n < 0) return -1;
    int *ot = r->tok + (size_t)b * r->T, *og = r->tgt + (size_t)b * r->T;
    for (int t = 0; t < r->T; t++) {
        ot[t] = r->sp_tok[t];
        og[t] = t + 1 < r->T ? r->sp_lab[t + 1] : -100;
    }
    return 0;
}

/* The frozen encoders the trainer runs (and caches). */
enum { ENC_CLIP, ENC_AUDIO, ENC_SAM };

/* Input and output sizes of encoder `e` per input; shape of one output. */
static void enc_sizes(const run_t *r, int e, size_t *per_in, int *shape, int *ndim) {
    if (e == ENC_SAM) {
        *per_in = r->sam_n;
        shape[0] = r->ac.dec.dim; shape[1] = r->ac.dec.H; shape[2] = r->ac.dec.W; *ndim = 3;
    } else if (e == ENC_AUDIO) {
        *per_in = r->fbank_n;
        shape[0] = REFS_AUDIO_CLIPS; shape[1] = refs_audio_dim(r->refs); *ndim = 2;
    } else {
        *per_in = r->clip_n;
        shape[0] = refs_image_tokens(r->refs); shape[1] = refs_clip_width(r->refs); *ndim = 2;
    }
}

/* Runs encoder e on n inputs in[n, per_in] into out[n, per_out] (backend). */
static int enc_run(run_t *r, int e, const float *in, int n, float *out, size_t per_out) {
    if (e == ENC_AUDIO) return refs_encode_audio(r->refs, in, n * REFS_AUDIO_CLIPS, out);
    if (e == ENC_CLIP) return refs_encode_images(r->refs, in, n, out);
    const float *f = sam_encoder_forward(r->senc, in, n);
    if (!f) return -1;
    k_copy(out, f, (size_t)n * per_out * sizeof(float));
    return 0;
}

/* The frozen encoder's outputs for n inputs, through the feature cache when
 * data.cache is set: host_in[i] (hashed: the key) is also at d_in + i * per_in
 * (backend); d_out [n, per_out] receives each output, from the cache when it
 * holds it, else computed (only the misses, in one batch) and stored.
 * 0, or -1 + ar_error. */
static int cached_encode(run_t *r, int e, const float *const *host_in, int n, const float *d_in, float *d_out) {
    size_t per_in;
    int shape[3], ndim;
    enc_sizes(r, e, &per_in, shape, &ndim);
    size_t per_out = 1;
    for (int i = 0; i < ndim; i++) per_out *= (size_t)shape[i];
    const int trainable = (e == ENC_SAM && r->scfg.trainable) || (e == ENC_CLIP && r->rcfg.clip.trainable);
    if (!r->fc || trainable) return enc_run(r, e, d_in, n, d_out, per_out);
    const fc_hash enc = e == ENC_AUDIO ? r->enc_audio : e == ENC_SAM ? r->enc_sam : r->enc_clip;
    int nm = 0;
    for (int i = 0; i < n; i++) {
        fc_hash key = fc_key_of(host_in[i], per_in * sizeof(float));
        int rc = fc_get(r->fc, enc, key, shape, ndim, r->h_feat);
        if (rc < 0) return -1;
        if (rc == 1) k_upload(d_out + (size_t)i * per_out, r->h_feat, per_out * sizeof(float));
        else r->miss[nm++] = i;
    }
    if (!nm) return 0;
    for (int j = 0; j < nm; j++)
        k_copy(r->d_scr_in + (size_t)j * per_in, d_in + (size_t)r->miss[j] * per_in, per_in * sizeof(float));
    if (enc_run(r, e, r->d_scr_in, nm, r->d_scr_out, per_out)) return -1;
    for (int j = 0; j < nm; j++) {
        const int i = r->miss[j];
        k_copy(d_out + (size_t)i * per_out, r->d_scr_out + (size_t)j * per_out, per_out * sizeof(float));
        k_download(r->h_feat, r->d_scr_out + (size_t)j * per_out, per_out * sizeof(float));
        if (fc_put(r->fc, enc, fc_key_of(host_in[i], per_in * sizeof(float)), r->h_feat, shape, ndim))
            log_warn("feature cache: %s (continuing without storing this entry)", ar_error());
    }
    return 0;
}

/* The batch's images and references into backend memory, the feature rows
 * (model/references.h) and every sample spliced; sets in->feat. */
static int prepare_refs(run_t *r, const gds_batch *gb, anyref_batch *in) {
    int nI = 0, nB = 0, nC = 0, nA = 0;
    const float *hin_img[gb->B > 0 ? gb->B : 1], *hin_crop[gb->B > 0 ? gb->B : 1], *hin_aud[gb->B > 0 ? gb->B : 1];
    for (int b = 0; b < gb->B; b++) {
        r->slot_img[b] = -1;
        if (gb->clip[b]) {
            k_upload(r->d_clip + (size_t)nI * r->clip_n, gb->clip[b], r->clip_n * sizeof(float));
            hin_img[nI] = gb->clip[b];
            r->slot_img[b] = nI++;
        }
        const int k = gb->ref_kind[b];
        if (k == GDS_REF_BOX) {
            float *h = r->h_boxes + 5 * (size_t)nB++;
            h[0] = (float)r->slot_img[b];
            memcpy(h + 1, gb->ref_box + 4 * b, 4 * sizeof(float));
        } else if (k == GDS_REF_CROP) {
            hin_crop[nC] = gb->ref_data[b];
            k_upload(r->d_crop + (size_t)nC++ * r->clip_n, gb->ref_data[b], r->clip_n * sizeof(float));
        } else if (k == GDS_REF_AUDIO) {
            if (!r->rcfg.use_audio) return ar_errorf("an audio reference, but audio.embed_dim = 0 (no audio encoder)");
            hin_aud[nA] = gb->ref_data[b];
            k_upload(r->d_fbank + (size_t)nA++ * r->fbank_n, gb->ref_data[b], r->fbank_n * sizeof(float));
        }
    }
    if (nB) k_upload(r->d_boxes, r->h_boxes, (size_t)5 * nB * sizeof(float));
    refs_batch rb = {.n_images = nI, .pixels = r->d_clip, .n_boxes = nB, .boxes = r->d_boxes, .n_crops = nC,
                     .crop_pixels = r->d_crop, .n_audio = nA, .fbank = r->d_fbank};
    if (r->fc && !r->rcfg.clip.trainable) {   /* the frozen CLIP outputs through the feature cache */
        if ((nI && cached_encode(r, ENC_CLIP, hin_img, nI, r->d_clip, r->d_img_feat)) ||
            (nC && cached_encode(r, ENC_CLIP, hin_crop, nC, r->d_crop, r->d_crop_feat)))
            return -1;
        rb.image_clip = r->d_img_feat;
        rb.crop_clip = r->d_crop_feat;
    }
    if (r->fc && nA) {
        if (cached_encode(r, ENC_AUDIO, hin_aud, nA, r->d_fbank, r->d_aud_feat)) return -1;
        rb.audio_emb = r->d_aud_feat;
    }
    const refs_offsets o = refs_rows(r->refs, &rb);
    const int G = refs_image_tokens(r->refs);
    int kb = 0, kc = 0, ka = 0;
    for (int b = 0; b < r->B; b++) {
        refs_ref rf = {REFS_BOX, 0};
        int nref = 0;
        if (b < gb->B) {
            const int k = gb->ref_kind[b];
            if (k == GDS_REF_BOX) { rf.kind = REFS_BOX; rf.row = o.box + REFS_BOX_ROWS * kb++; nref = 1; }
            else if (k == GDS_REF_CROP) { rf.kind = REFS_CROP; rf.row = o.crop + REFS_CROP_ROWS * kc++; nref = 1; }
            else if (k == GDS_REF_AUDIO) { rf.kind = REFS_AUDIO; rf.row = o.audio + REFS_AUDIO_CLIPS * ka++; nref = 1; }
        }
        const int img_row = b < gb->B && r->slot_img[b] >= 0 ? o.image + r->slot_img[b] * G : -1;
        if (splice_sample(r, b, img_row, &rf, nref)) return ar_error_prefix("sample %d: ", b);
    }
    in->feat = NULL; in->n_feat = 0; in->dfeat = NULL;
    if (o.total) {
        if (!(in->feat = refs_forward(r->refs, &rb))) return -1;
        in->n_feat = o.total;
        in->dfeat = refs_dfeat(r->refs);
    }
    return 0;
}

/* The data batch's embeddings and masks into backend memory; fills in. */
static int upload_batch(run_t *r, const gds_batch *gb, anyref_batch *in) {
    memset(in, 0, sizeof *in);
    for (int b = 0; b < r->B; b++) r->img_ptr[b] = NULL;
    if (r->use_senc) {   /* SAM image embeddings by the encoder (through the cache) */
        const float *hin[gb->B > 0 ? gb->B : 1];
        int slot[gb->B > 0 ? gb->B : 1], n = 0;
        for (int b = 0; b < gb->B; b++) {
            if (!gb->sam_pixels[b]) continue;
            k_upload(r->d_sam_in + (size_t)n * r->sam_n, gb->sam_pixels[b], r->sam_n * sizeof(float));
            hin[n] = gb->sam_pixels[b];
            slot[n++] = b;
        }
        if (n && cached_encode(r, ENC_SAM, hin, n, r->d_sam_in, r->d_img)) return -1;
        r->n_senc = n;
        for (int b = 0; b < r->B; b++) if (r->dimg_ptr) r->dimg_ptr[b] = NULL;
        for (int j = 0; j < n; j++) {
            r->img_ptr[slot[j]] = r->d_img + (size_t)j * r->chw;
            if (r->dimg_ptr) r->dimg_ptr[slot[j]] = r->d_dimg + (size_t)j * r->chw;
        }
        if (r->d_dimg && n) {   /* trainable encoder: anyref accumulates d embeddings here */
            k_zero(r->d_dimg, (size_t)n * r->chw * sizeof(float));
            in->dimage_emb = r->dimg_ptr;
        }
    }
    for (int b = 0; b < gb->B; b++) {
        if (!gb->img[b]) continue;
        k_upload(r->d_img + (size_t)b * r->chw, gb->img[b], r->chw * sizeof(float));
        r->img_ptr[b] = r->d_img + (size_t)b * r->chw;
    }
    for (int k = 0; k < gb->n_masks; k++) {
        const int b = gb->mask_sample[k];
        const int h = gb->mask_hw[2 * b] > 0 ? gb->mask_hw[2 * b] : gb->orig_hw[2 * b];
        const int w = gb->mask_hw[2 * b] > 0 ? gb->mask_hw[2 * b + 1] : gb->orig_hw[2 * b + 1];
        k_upload(r->d_mask + (size_t)k * r->mask_cap, gb->masks[k], (size_t)h * w * sizeof(float));
        r->mask_ptr[k] = r->d_mask + (size_t)k * r->mask_cap;
    }
    in->tokens = r->tok; in->targets = r->tgt;
    in->image_emb = r->img_ptr; in->orig_hw = gb->orig_hw; in->mask_hw = gb->mask_hw;
    in->gt_masks = gb->n_masks ? r->mask_ptr : NULL;
    return r->refs ? prepare_refs(r, gb, in) : 0;
}

/* Row hook (gds_configure): with splicing, every [SEG] must still be within
 * the model's T (train.seq_len) after the image and reference tokens. */
static int splice_hook(void *ctx, int64_t row, const int *tokens, const int *targets, int T, int ref_kind, int n_masks) {
    run_t *r = ctx;
    (void)row; (void)targets;
    const int G = refs_image_tokens(r->refs);
    int len = 0, segs = 0;
    for (int t = 0; t < T; t++) {
        const int tk = tokens[t];
        const int extra = tk == r->mk.image ? G + 1 :
                          (t + 1 < T && ((tk == r->mk.ref_start && tokens[t + 1] == r->mk.ref_end) ||
                                         (tk == r->mk.audio_start && tokens[t + 1] == r->mk.audio_end)))
                              ? (ref_kind == GDS_REF_AUDIO ? REFS_AUDIO_CLIPS : REFS_BOX_ROWS) : 0;
        len += 1 + extra;
        if (tk == r->ac.seg.seg_token && len <= r->T) segs++;
    }
    if (segs != n_masks) {
        ar_errorf("after splicing the image and reference tokens only %d of its %d [SEG]s lie within train.seq_len = %d",
                  segs, n_masks, r->T);
        return 1;
    }
    return 0;
}

/* Validation of the AnyRef step over the validation file in file order (at
 * most eval_batches batches, one pass, broken rows skipped): the mean CE per
 * target, the mean BCE and Dice per mask, the total with the loss weights,
 * and the mask metrics of SPEC 4 (logit > 0 against the ground truth):
 * gIoU = mean per-mask IoU (empty vs empty = 1), cIoU = Σ I / Σ U.
 * out: total, ce, bce, dice, giou, ciou (NaN without validation data). */
static void validate_anyref(run_t *r, int batches, double out[6]) {
    for (int i = 0; i < 6; i++) out[i] = NAN;
    grounding_dataset *g = r->data.gval;
    if (!g || batches <= 0) return;
    anyref_set_training(r->ar, 0);
    const int64_t rows = gds_rows(g);
    int64_t next = 0;
    double ce = 0, bce = 0, dice = 0, iou = 0, inter = 0, uni = 0;
    long ce_n = 0, masks = 0;
    for (int bi = 0; bi < batches && next < rows; bi++) {
        int filled = 0;
        while (filled < r->B && next < rows) {
            int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
            int *tk = rt + (size_t)filled * r->Tf, *tg = rg + (size_t)filled * r->Tf;
            int rc = gds_read_row(g, next++, r->Tf, filled, tk, tg);
            if (rc < 0) { log_warn("validation: %s", ar_error()); goto done; }
            if (rc == 0) filled++;
        }
        if (!filled) break;
        for (int b = filled; b < r->B; b++) {   /* a short last batch: padding rows without targets */
            int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
            for (int t = 0; t < r->Tf; t++) { rt[(size_t)b * r->Tf + t] = 0; rg[(size_t)b * r->Tf + t] = -100; }
        }
        gds_batch gb;
        gds_finish_batch(g, filled, &gb);
        anyref_batch in;
        if (upload_batch(r, &gb, &in)) { log_warn("validation: %s", ar_error()); goto done; }
        anyref_losses L;
        float l = anyref_forward(r->ar, &in, 0, &L);
        if (!isfinite(l)) { log_warn("validation: %s", isnan(l) ? ar_error() : "loss is not finite"); goto done; }
        ce += (double)L.ce * L.ce_count; ce_n += L.ce_count;
        for (int k = 0; k < L.n_seg; k++, masks++) {
            int h, w;
            const float *x = anyref_mask_logits(r->ar, k, &h, &w);
            bce += anyref_mask_bce(r->ar)[k];
            dice += anyref_mask_dice(r->ar)[k];
            k_download(r->h_logits, x, (size_t)h * w * sizeof(float));
            const float *y = gb.masks[k];
            double in_k = 0, un_k = 0;
            for (size_t p = 0; p < (size_t)h * w; p++) {
                const int pr = r->h_logits[p] > 0.0f, gt = y[p] > 0.5f;
                in_k += pr & gt; un_k += pr | gt;
            }
            iou += un_k > 0 ? in_k / un_k : 1.0;
            inter += in_k; uni += un_k;
        }
    }
    if (ce_n) out[1] = ce / ce_n;
    if (masks) {
        out[2] = bce / masks; out[3] = dice / masks; out[4] = iou / masks;
        out[5] = uni > 0 ? inter / uni : 1.0;
    }
    out[0] = (ce_n ? r->ac.ce_w * out[1] : 0) + (masks ? r->ac.bce_w * out[2] + r->ac.dice_w * out[3] : 0);
    if (!ce_n && !masks) out[0] = NAN;
done:
    anyref_set_training(r->ar, 1);
}

/* Greedy exact-match accuracy on fresh synthetic prompts (the demo's headline number). */
static double synth_accuracy(run_t *r, int samples) {
    const synth_task *t = &r->data.task;
    int B = r->B, T = r->T, V = r->mc.vocab;
    int *ref = malloc(sizeof(int) * (size_t)B * T);
    float *row = malloc(sizeof(float) * (size_t)V);
    if (!ref || !row) { free(ref); free(row); return NAN; }
    ar_rng g; rng_seed(&g, rng_derive(r->seed, 4));
    int correct = 0, total = 0;
    llama_set_training(r->m, 0);
    for (int done = 0; done < samples; done += B) {
        for (int b = 0; b < B; b++) synth_sample(t, &g, ref + (size_t)b * T, r->tgt + (size_t)b * T);
        memcpy(r->tok, ref, sizeof(int) * (size_t)B * T);
        for (int b = 0; b < B; b++)   /* blank the answer so nothing leaks */
            for (int i = t->prompt_len; i < T; i++) r->tok[b * T + i] = t->eos;
        for (int i = t->prompt_len; i < T; i++) {
            llama_forward(r->m, r->tok, NULL, B, T, 0, NULL);
            const float *lg = llama_logits(r->m);
            for (int b = 0; b < B; b++) {
                k_download(row, lg + ((size_t)b * T + i - 1) * V, sizeof(float) * (size_t)V);
                int best = 0;
                for (int v = 1; v < V; v++) if (row[v] > row[best]) best = v;
                r->tok[b * T + i] = best;
            }
        }
        for (int b = 0; b < B && done + b < samples; b++, total++)
            correct += memcmp(r->tok + (size_t)b * T, ref + (size_t)b * T, sizeof(int) * (size_t)T) == 0;
    }
    llama_set_training(r->m, 1);
    free(ref); free(row);
    return total ? (double)correct / total : NAN;
}

/* Keeps the metrics lines of steps <= step (a resumed run rewrites what came after). */
static int metrics_truncate(const char *path, int64_t step) {
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : ar_errorf("cannot read %s: %s", path, strerror(errno));
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) { fclose(f); return ar_errorf("cannot write %s: %s", tmp, strerror(errno)); }
    char *line = NULL; size_t cap = 0; ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        long long s;
        if (sscanf(line, "{\"step\":%lld", &s) == 1 && s > step) continue;
        fwrite(line, 1, (size_t)n, o);
    }
    free(line); fclose(f);
    if (fclose(o) || rename(tmp, path)) return ar_errorf("cannot rewrite %s: %s", path, strerror(errno));
    return 0;
}

/* Removes checkpoints beyond the newest `keep` (keep <= 0: keep all). */
static void prune_checkpoints(const char *run_dir, int64_t newest, int every, int keep) {
    if (keep <= 0 || every <= 0) return;
    for (int64_t s = newest - (int64_t)every * keep; s > 0; s -= every) {
        char p[1200];
        if (ckpt_path(run_dir, s, p, sizeof p)) return;
        if (unlink(p) != 0 && errno == ENOENT) break;
    }
}

static int save(run_t *r, int64_t step) {
    char p[1200];
    r->st.step = step;
    r->st.rng = r->data.rng;
    r->st.epoch = r->data.cur.epoch;
    r->st.data_position = r->data.cur.position;
    if (ckpt_path(r->run_dir, step, p, sizeof p) || ckpt_save(p, &r->ps, &r->st, 0)) return -1;
    prune_checkpoints(r->run_dir, step, (int)cfg_int(r->cfg, "train.save_every"), (int)cfg_int(r->cfg, "train.keep_checkpoints"));
    log_info("checkpoint %s", p);
    return 0;
}

/* The safetensors file of a checkpoint (file, sharded index or model directory)
 * that holds tensor `name`: writes its path to out. */
static int shard_of(const char *path, const char *name, char *out, size_t cap) {
    char idx[1200];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", path);
        if (stat(idx, &sb) != 0) { snprintf(out, cap, "%s/model.safetensors", path); return 0; }
        path = idx;
    }
    size_t n = strlen(path);
    if (n < 5 || strcmp(path + n - 5, ".json") != 0) { snprintf(out, cap, "%s", path); return 0; }
    json_doc *d = json_parse_file(path);
    if (!d) return -1;
    const json_value *wm = json_get(json_root(d), "weight_map"), *f = wm ? json_get(wm, name) : NULL;
    if (!f || f->type != JSON_STRING) { json_free(d); return ar_errorf("%s: weight_map has no string entry for '%s'", path, name); }
    const char *slash = strrchr(path, '/');
    snprintf(out, cap, "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, f->str);
    json_free(d);
    return 0;
}

/* Vocabulary resize (SPEC 2.1: added tokens such as [SEG]): rows [0, old) of
 * `name` come from the checkpoint, rows [old, V) are the mean of those rows. */
static int load_resized_rows(const char *path, ar_params *ps, const char *name, int *old_rows) {
    const ar_param *p = params_find(ps, name);
    char file[1200];
    if (!p || shard_of(path, name, file, sizeof file)) return -1;
    st_file *f = st_open(file);
    if (!f) return -1;
    int i = st_find(f, name), nd = 0;
    const int64_t *sh = i >= 0 ? st_shape(f, i, &nd) : NULL;
    int rc = -1;
    if (!sh || nd != 2 || sh[1] != p->shape[1] || sh[0] > p->shape[0]) {
        ar_errorf("%s: tensor '%s' %s (the model has [%d, %d])", file, name, sh ? "has another shape" : "is missing",
                  p->shape[0], p->shape[1]);
        goto out;
    }
    size_t V = (size_t)p->shape[0], D = (size_t)p->shape[1], old = (size_t)sh[0];
    float *host = malloc(V * D * sizeof(float));
    if (!host) { ar_errorf("out of memory"); goto out; }
    if (st_read_f32(f, i, host, old * D)) { free(host); goto out; }
    for (size_t d = 0; d < D; d++) {
        double m = 0;
        for (size_t v = 0; v < old; v++) m += host[v * D + d];
        for (size_t v = old; v < V; v++) host[v * D + d] = (float)(m / (double)old);
    }
    k_upload(ps->w + p->off, host, V * D * sizeof(float));
    free(host);
    *old_rows = (int)old;
    rc = 0;
out:
    st_close(f);
    return rc;
}

/* Hides from the bulk load the two vocabulary tensors when they are resized,
 * and (model.kind = anyref) everything that is not the LLaMA decoder. */
typedef struct { int resize, llama_only; } hide_ctx;
static int hide_vocab(void *ctx, const char *name, char *out, size_t cap) {
    const hide_ctx *h = ctx;
    int hide = (h->resize && (!strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "lm_head.weight"))) ||
               (h->llama_only && !is_llama_name(name));
    snprintf(out, cap, "%s%s", hide ? "\x01hidden\x01" : "", name);
    return 0;
}

/* Base weights from a Hugging Face checkpoint. Only LoRA tensors may be absent
 * (they start as A ~ Kaiming, B = 0, so step 0 is the base model); a larger
 * model.vocab than the checkpoint's adds rows initialised to the mean row. */
static int load_init(run_t *r, const char *path) {
    st_report rep;
    int resize = 0;
    /* probe the embedding's row count */
    char file[1200];
    if (shard_of(path, "model.embed_tokens.weight", file, sizeof file) == 0) {
        st_file *f = st_open(file);
        int i = f ? st_find(f, "model.embed_tokens.weight") : -1, nd = 0;
        const int64_t *sh = i >= 0 ? st_shape(f, i, &nd) : NULL;
        if (sh && nd == 2 && sh[0] < r->mc.vocab) resize = 1;
        st_close(f);
    }
    ar_error_clear();
    hide_ctx hc = {.resize = resize, .llama_only = r->is_anyref};
    if (st_load_params_ex(path, &r->ps, ST_ALLOW_MISSING_TRAINABLE | ST_ALLOW_MISSING_FROZEN, hide_vocab, &hc, &rep))
        return ar_error_prefix("model.init: ");
    int lora = 0, other = 0;
    for (int i = 0; i < r->ps.n; i++) {
        lora += strstr(r->ps.p[i].name, ".lora_") != NULL;
        other += hc.llama_only && !is_llama_name(r->ps.p[i].name);
    }
    char line[2048];
    st_report_format(&rep, line, sizeof line);
    if (rep.n_missing != lora + other + 2 * resize)
        return ar_errorf("model.init: %s lacks %d tensors of the LLaMA decoder besides its %d LoRA tensors (%s)",
                         path, rep.n_missing - lora - other - 2 * resize, lora, line);
    if (resize) {
        int old = 0;
        if (load_resized_rows(path, &r->ps, "model.embed_tokens.weight", &old) ||
            load_resized_rows(path, &r->ps, "lm_head.weight", &old))
            return ar_error_prefix("model.init: ");
        log_info("model.init: vocabulary resized from %d to %d tokens (new rows = mean of the old rows)", old, r->mc.vocab);
    }
    log_info("model.init %s: %s", path, line);
    return 0;
}

static int is_sam_name(const char *n) { return !strncmp(n, "prompt_encoder.", 15) || !strncmp(n, "mask_decoder.", 13); }
static int is_sam_enc_name(const char *n) { return !strncmp(n, "image_encoder.", 14); }
static int is_clip_name(const char *n) { return !strncmp(n, "vision_model.", 13) || !strncmp(n, "model.mm_projector.", 19); }
static int is_audio_name(const char *n) {
    return !strncmp(n, "modality_", 9) || !strncmp(n, "model.audio_projector.", 22);
}
typedef int (*name_pred)(const char *name);
/* Hides every registry tensor outside the branch (ctx: its name_pred). */
static int branch_only(void *ctx, const char *name, char *out, size_t cap) {
    name_pred in = *(name_pred *)ctx;
    snprintf(out, cap, "%s%s", in(name) ? "" : "\x01hidden\x01", name);
    return 0;
}

/* One branch of the model (SAM's prompt encoder + mask decoder, CLIP +
 * mm_projector, ImageBind audio + audio_projector) from a safetensors file by
 * the original names; every tensor of the branch must be there (the first
 * absent one is named). key names the config key in messages. */
static int load_branch(run_t *r, const char *path, const char *key, name_pred in) {
    st_file *f = st_open(path);
    if (!f) return ar_error_prefix("%s: ", key);
    int n = 0, absent = 0;
    const char *first = NULL;
    for (int i = 0; i < r->ps.n; i++) {
        if (!in(r->ps.p[i].name)) continue;
        n++;
        if (st_find(f, r->ps.p[i].name) < 0 && !absent++) first = r->ps.p[i].name;
    }
    st_close(f);
    if (absent)
        return ar_errorf("%s: %s lacks %d of the model's %d tensors of this part, e.g. '%s'", key, path, absent, n, first);
    st_report rep;
    if (st_load_params_ex(path, &r->ps, ST_ALLOW_MISSING, branch_only, &in, &rep)) return ar_error_prefix("%s: ", key);
    log_info("%s %s: %d tensors loaded%s", key, path, rep.n_loaded,
             rep.n_unexpected ? " (the file holds more tensors, ignored)" : "");
    return 0;
}

/* Images and references as tokens (clip.image_size > 0): the encoders' config
 * from the keys, checked against what the data holds. */
static int refs_setup(run_t *r, const ar_config *cfg) {
    gds_mm_info mm;
    gds_mm(r->data.gtrain, &mm);
    const int S = (int)cfg_int(cfg, "clip.image_size");
    if (S <= 0) {
        if (mm.clip_S > 0 || mm.has_refs)
            log_warn("%s holds CLIP inputs or references, but clip.image_size = 0: they are ignored; samples with an "
                     "image or reference token will be skipped", cfg_str(cfg, "data.train"));
        return 0;
    }
    if (mm.clip_S != S)
        return ar_errorf("config: clip.image_size = %d, but %s has %s", S, cfg_str(cfg, "data.train"),
                         mm.clip_S ? "CLIP inputs of another size" : "no /clip_pixels");
    refs_cfg *rc = &r->rcfg;
    memset(rc, 0, sizeof *rc);
    clip_vit_cfg c = {.image_size = S, .patch = (int)cfg_int(cfg, "clip.patch"), .channels = 3,
                      .width = (int)cfg_int(cfg, "clip.width"), .layers = (int)cfg_int(cfg, "clip.layers"),
                      .heads = (int)cfg_int(cfg, "clip.heads"), .mlp_dim = (int)cfg_int(cfg, "clip.mlp_dim"),
                      .eps = 1e-5f, .select_layer = (int)cfg_int(cfg, "clip.select_layer"),
                      .trainable = cfg_bool(cfg, "clip.trainable")};
    const char *act = cfg_str(cfg, "clip.act");
    if (!strcmp(act, "quick_gelu")) c.act = CLIP_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) c.act = CLIP_ACT_GELU;
    else return ar_errorf("config: clip.act = '%s' (expected quick_gelu or gelu)", act);
    rc->clip = c;
    if (mm_projector_type_from_name(cfg_str(cfg, "projector.type"), &rc->proj.type)) return ar_error_prefix("config: projector.type: ");
    rc->proj.in_dim = c.width;
    rc->proj.out_dim = r->mc.dim;
    rc->proj.trainable = cfg_bool(cfg, "projector.trainable");
    const int ad = (int)cfg_int(cfg, "audio.embed_dim");
    if (ad > 0) {
        if (mm.n_audio > 0 && (mm.fbank_h <= 0 || mm.fbank_w <= 0)) return ar_errorf("data: bad fbank size");
        imagebind_audio_cfg a = imagebind_audio_huge(r->mc.dim);
        a.embed_dim = ad; a.depth = (int)cfg_int(cfg, "audio.depth"); a.heads = (int)cfg_int(cfg, "audio.heads");
        a.kernel = (int)cfg_int(cfg, "audio.kernel"); a.stride = (int)cfg_int(cfg, "audio.stride");
        a.out_dim = (int)cfg_int(cfg, "audio.out_dim");
        if (mm.n_audio > 0) { a.n_mels = mm.fbank_h; a.target_len = mm.fbank_w; }
        rc->use_audio = 1;
        rc->audio = a;
        rc->max_audio = r->B;
        r->fbank_n = (size_t)REFS_AUDIO_CLIPS * a.n_mels * a.target_len;
    }
    rc->max_images = rc->max_boxes = rc->max_crops = r->B;
    r->clip_n = (size_t)3 * S * S;
    r->mk = (refs_markers){.image = mm.image_token, .im_start = mm.im_start, .im_end = mm.im_end,
                           .ref_start = mm.ref_start, .ref_end = mm.ref_end, .audio_start = mm.audio_start,
                           .audio_end = mm.audio_end};
    gds_set_hook(r->data.gtrain, splice_hook, r);
    if (r->data.gval) gds_set_hook(r->data.gval, splice_hook, r);
    return 1;   /* refs in use */
}

/* sam_encoder.model != none: the SAM image encoder computes the image
 * embeddings from the data's /sam_pixels. */
static int senc_setup(run_t *r, const ar_config *cfg) {
    const char *m = cfg_str(cfg, "sam_encoder.model");
    if (!strcmp(m, "none")) return 0;
    sam_encoder_cfg *e = &r->scfg;
    if (!strcmp(m, "vit_b")) *e = sam_encoder_vit_b(NULL);
    else if (!strcmp(m, "vit_l")) *e = sam_encoder_vit_l(NULL);
    else if (!strcmp(m, "vit_h")) *e = sam_encoder_vit_h(NULL);
    else if (!strcmp(m, "custom")) {
        *e = sam_encoder_vit_b(NULL);
        e->img_size = (int)cfg_int(cfg, "sam_encoder.img_size"); e->patch = (int)cfg_int(cfg, "sam_encoder.patch");
        e->dim = (int)cfg_int(cfg, "sam_encoder.dim"); e->depth = (int)cfg_int(cfg, "sam_encoder.depth");
        e->heads = (int)cfg_int(cfg, "sam_encoder.heads"); e->window = (int)cfg_int(cfg, "sam_encoder.window");
        e->mlp_dim = 4 * e->dim;
        if (e->depth < 1 || e->depth > SAM_ENC_MAX_DEPTH)
            return ar_errorf("config: sam_encoder.depth = %d (expected 1..%d)", e->depth, SAM_ENC_MAX_DEPTH);
        memset(e->global_attn, 0, sizeof e->global_attn);
        char list[256];
        snprintf(list, sizeof list, "%s", cfg_str(cfg, "sam_encoder.global"));
        for (char *sv = NULL, *tk = strtok_r(list, ", ", &sv); tk; tk = strtok_r(NULL, ", ", &sv)) {
            char *end;
            long b = strtol(tk, &end, 10);
            if (*end || b < 0 || b >= e->depth)
                return ar_errorf("config: sam_encoder.global: '%s' is not a block index in 0..%d", tk, e->depth - 1);
            e->global_attn[b] = 1;
        }
    } else {
        return ar_errorf("config: sam_encoder.model = '%s' (expected none, vit_b, vit_l, vit_h or custom)", m);
    }
    e->out_chans = r->ac.dec.dim;
    e->trainable = cfg_bool(cfg, "sam_encoder.trainable");
    if (e->patch <= 0 || e->img_size % e->patch || e->img_size / e->patch != r->ac.dec.H)
        return ar_errorf("config: sam_encoder img_size %d / patch %d must give the sam.grid %d", e->img_size, e->patch,
                         r->ac.dec.H);
    gds_mm_info mm;
    gds_mm(r->data.gtrain, &mm);
    if (mm.sam_S != e->img_size)
        return ar_errorf("config: sam_encoder.model = %s needs /sam_pixels of side %d in %s (it has %s)", m, e->img_size,
                         cfg_str(cfg, "data.train"), mm.sam_S ? "another side" : "none");
    if (gds_use_sam_pixels(r->data.gtrain, 1) || (r->data.gval && gds_use_sam_pixels(r->data.gval, 1))) return -1;
    r->use_senc = 1;
    r->sam_n = (size_t)3 * e->img_size * e->img_size;
    return 0;
}

/* model.kind = anyref: the step's config from the keys and the data. */
static int anyref_setup(run_t *r, const ar_config *cfg) {
    anyref_cfg *ac = &r->ac;
    *ac = anyref_default_cfg();
    ac->llm = r->mc;
    grounding_dataset *gt = r->data.gtrain, *gv = r->data.gval;
    int seg = (int)cfg_int(cfg, "seg.token");
    if (seg < 0) seg = gds_seg_token(gt);
    if (seg < 0) return ar_errorf("config: seg.token is -1 and %s has no seg_token_id attribute: set seg.token", cfg_str(cfg, "data.train"));
    if (seg >= r->mc.vocab) return ar_errorf("config: seg.token = %d is outside the vocabulary (%d)", seg, r->mc.vocab);
    ac->seg.seg_token = seg;
    ac->seg.lambda = (float)cfg_float(cfg, "seg.lambda");
    ac->dec.dim = (int)cfg_int(cfg, "sam.dim");
    ac->dec.H = ac->dec.W = (int)cfg_int(cfg, "sam.grid");
    ac->dec.depth = (int)cfg_int(cfg, "sam.depth");
    ac->dec.heads = (int)cfg_int(cfg, "sam.heads");
    ac->dec.mlp_dim = (int)cfg_int(cfg, "sam.mlp_dim");
    ac->dec.iou_hidden = (int)cfg_int(cfg, "sam.iou_hidden");
    ac->img_size = (int)cfg_int(cfg, "sam.img_size");
    ac->dec_preset = cfg_str(cfg, "sam.trainable");
    ac->ce_w = (float)cfg_float(cfg, "loss.ce_weight");
    ac->bce_w = (float)cfg_float(cfg, "loss.bce_weight");
    ac->dice_w = (float)cfg_float(cfg, "loss.dice_weight");
    int h, w, k, vh = 0, vw = 0, vk = 0;
    gds_limits(gt, &h, &w, &k);
    if (gv) gds_limits(gv, &vh, &vw, &vk);
    ac->max_orig_h = h > vh ? h : vh;
    ac->max_orig_w = w > vw ? w : vw;
    if (ac->max_orig_h < 1) ac->max_orig_h = 1;
    if (ac->max_orig_w < 1) ac->max_orig_w = 1;
    if (vk > k) k = vk;
    r->max_seg = r->B * (k > 0 ? k : 1);
    if (senc_setup(r, cfg)) return -1;
    if (gds_configure(gt, seg, r->B, ac->max_orig_h, ac->max_orig_w) ||
        (gv && gds_configure(gv, seg, r->B, ac->max_orig_h, ac->max_orig_w)))
        return -1;
    r->chw = (size_t)ac->dec.dim * ac->dec.H * ac->dec.W;
    r->mask_cap = (size_t)ac->max_orig_h * ac->max_orig_w;
    int u = refs_setup(r, cfg);
    if (u < 0) return -1;
    r->use_refs = u;
    return 0;
    return 0;
}

static int setup(run_t *r, const ar_config *cfg) {
    r->cfg = cfg;
    llama_cfg *mc = &r->mc;
    mc->vocab = (int)cfg_int(cfg, "model.vocab");
    if (data_open(&r->data, cfg, mc->vocab)) return -1;
    if (mc->vocab == 0) mc->vocab = r->data.vocab;
    else if (mc->vocab < r->data.vocab)
        return ar_errorf("config: model.vocab = %d is smaller than the data's vocabulary (%d)", mc->vocab, r->data.vocab);
    r->T = (int)cfg_int(cfg, "train.seq_len");
    r->Tf = r->data.seq_len;
    const int clip_side = (int)cfg_int(cfg, "clip.image_size"), clip_patch = (int)cfg_int(cfg, "clip.patch");
    const int with_refs = r->data.kind == DATA_GROUNDING && clip_side > 0;
    if (with_refs && (clip_patch <= 0 || clip_side % clip_patch))
        return ar_errorf("config: clip.image_size = %d must be a multiple of clip.patch = %d", clip_side, clip_patch);
    /* spliced length: the image's G CLIP tokens + its two markers replace one
     * token; a reference adds at most 4 rows between its markers */
    if (r->T == 0) r->T = r->data.seq_len + (with_refs ? (clip_side / clip_patch) * (clip_side / clip_patch) + 1 + 4 : 0);
    if (!with_refs) r->Tf = r->T;
    if (r->data.kind == DATA_SYNTH && r->T != r->data.seq_len)
        return ar_errorf("config: train.seq_len = %d, but the synthetic task has sequences of %d tokens", r->T, r->data.seq_len);
    mc->dim = (int)cfg_int(cfg, "model.dim"); mc->layers = (int)cfg_int(cfg, "model.layers");
    mc->heads = (int)cfg_int(cfg, "model.heads"); mc->kv_heads = (int)cfg_int(cfg, "model.kv_heads");
    if (mc->kv_heads == 0) mc->kv_heads = mc->heads;
    mc->mlp_hidden = (int)cfg_int(cfg, "model.mlp_hidden");
    mc->max_seq = (int)cfg_int(cfg, "model.max_seq");
    if (mc->max_seq == 0) mc->max_seq = r->T;
    mc->norm_eps = (float)cfg_float(cfg, "model.norm_eps"); mc->rope_theta = (float)cfg_float(cfg, "model.rope_theta");
    mc->checkpoint_layers = cfg_bool(cfg, "model.checkpoint_layers");
    mc->lora_rank = (int)cfg_int(cfg, "lora.rank"); mc->lora_alpha = (float)cfg_float(cfg, "lora.alpha");
    mc->lora_dropout = (float)cfg_float(cfg, "lora.dropout");
    if (mc->lora_dropout < 0 || mc->lora_dropout >= 1) return ar_errorf("config: lora.dropout = %g (expected [0,1))", mc->lora_dropout);
    if (mc->lora_rank > 0 && llama_parse_lora_targets(cfg_str(cfg, "lora.targets"), &mc->lora_targets))
        return ar_error_prefix("config: lora.targets: ");
    const char *tr = cfg_str(cfg, "train.trainable");
    if (!strcmp(tr, "full")) mc->train_base = 1;
    else if (!strcmp(tr, "lora")) mc->train_base = 0;
    else if (!strcmp(tr, "lora+embed")) { mc->train_base = 0; mc->train_embed = mc->train_lm_head = 1; }
    else return ar_errorf("config: train.trainable = '%s' (expected full, lora or lora+embed)", tr);
    if (!mc->train_base && mc->lora_rank <= 0)
        return ar_errorf("config: train.trainable = %s needs lora.rank > 0", tr);

    r->steps = (int)cfg_int(cfg, "train.steps"); r->B = (int)cfg_int(cfg, "train.batch_size");
    r->accum = (int)cfg_int(cfg, "train.grad_accum");
    if (r->steps < 1 || r->B < 1 || r->accum < 1)
        return ar_errorf("config: train.steps (%d), train.batch_size (%d) and train.grad_accum (%d) must be >= 1", r->steps, r->B, r->accum);
    ar_optim_cfg *oc = &r->oc;
    oc->lr = (float)cfg_float(cfg, "train.lr"); oc->beta1 = (float)cfg_float(cfg, "train.beta1");
    oc->beta2 = (float)cfg_float(cfg, "train.beta2"); oc->eps = (float)cfg_float(cfg, "train.eps");
    oc->weight_decay = (float)cfg_float(cfg, "train.weight_decay"); oc->grad_clip = (float)cfg_float(cfg, "train.grad_clip");
    oc->warmup_steps = (int)cfg_int(cfg, "train.warmup_steps"); oc->total_steps = r->steps;
    if ((oc->schedule = optim_parse_schedule(cfg_str(cfg, "train.schedule"))) < 0) return ar_error_prefix("config: train.schedule: ");
    if (cfg_bool(cfg, "train.deterministic") && strcmp(k_backend_name(), "cpu") != 0)
        return ar_errorf("config: train.deterministic = 1 is only guaranteed on the CPU backend (this build uses %s)", k_backend_name());
    int threads = (int)cfg_int(cfg, "train.threads");
    if (threads > 0) k_set_num_threads(threads);
    r->seed = (uint64_t)cfg_int(cfg, "train.seed");
    snprintf(r->run_dir, sizeof r->run_dir, "%s", cfg_str(cfg, "run.dir"));
    if (!r->run_dir[0]) return ar_errorf("config: run.dir is empty");
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", r->run_dir);

    const char *kind = cfg_str(cfg, "model.kind");
    const int is_anyref = r->is_anyref = !strcmp(kind, "anyref");
    if (!is_anyref && strcmp(kind, "llama") != 0) return ar_errorf("config: model.kind = '%s' (expected llama or anyref)", kind);
    if (is_anyref && r->data.kind != DATA_GROUNDING)
        return ar_errorf("config: model.kind = anyref needs masks and image embeddings: set data.kind = grounding");
    if (is_anyref && anyref_setup(r, cfg)) return -1;
    params_init_empty(&r->ps);
    if ((is_anyref ? anyref_declare(&r->ac, &r->ps) : llama_declare(mc, &r->ps)) ||
        (r->use_refs && refs_declare(&r->rcfg, &r->ps)) || (r->use_senc && sam_encoder_declare(&r->scfg, &r->ps)) ||
        params_alloc(&r->ps))
        return -1;
    params_randomize(&r->ps, rng_derive(r->seed, 1));
    const char *init = cfg_str(cfg, "model.init"), *sinit = is_anyref ? cfg_str(cfg, "sam.init") : "";
    if (init[0] && !r->skip_init && load_init(r, init)) return -1;
    if (sinit[0] && !r->skip_init && load_branch(r, sinit, "sam.init", is_sam_name)) return -1;
    const char *sei = r->use_senc ? cfg_str(cfg, "sam_encoder.init") : "";
    if (sei[0] && !r->skip_init && load_branch(r, sei, "sam_encoder.init", is_sam_enc_name)) return -1;
    if (r->use_refs && !r->skip_init) {
        const char *ci = cfg_str(cfg, "clip.init"), *ai = cfg_str(cfg, "audio.init");
        if (ci[0] && load_branch(r, ci, "clip.init", is_clip_name)) return -1;
        if (ai[0] && r->rcfg.use_audio && load_branch(r, ai, "audio.init", is_audio_name)) return -1;
    }
    if (is_anyref) {
        if (!(r->ar = anyref_create(&r->ac, &r->ps, r->B, r->T, r->max_seg))) return -1;
        r->m = anyref_llama(r->ar);
        if (r->use_senc && (!(r->senc = sam_encoder_create(&r->scfg, &r->ps, r->B)) ||
                            !(r->d_sam_in = k_malloc((size_t)r->B * r->sam_n * sizeof(float)))))
            return r->senc ? ar_errorf("out of memory for the SAM encoder inputs") : -1;
        if (r->use_senc && r->scfg.trainable &&
            (!(r->d_dimg = k_malloc((size_t)r->B * r->chw * sizeof(float))) ||
             !(r->dimg_ptr = calloc((size_t)r->B, sizeof(float *)))))
            return ar_errorf("out of memory for the SAM encoder gradients");
        if (r->use_refs) {
            if (!(r->refs = refs_create(&r->rcfg, &r->ps))) return -1;
            const size_t B = (size_t)r->B;
            r->raw_tok = malloc(B * r->Tf * sizeof(int)); r->raw_tgt = malloc(B * r->Tf * sizeof(int));
            r->sp_tok = malloc((size_t)r->T * sizeof(int)); r->sp_lab = malloc((size_t)r->T * sizeof(int));
            r->lab = malloc((size_t)r->Tf * sizeof(int));
            r->slot_img = malloc(B * sizeof(int));
            r->h_boxes = malloc(B * 5 * sizeof(float));
            r->d_clip = k_malloc(B * r->clip_n * sizeof(float));
            r->d_crop = k_malloc(B * r->clip_n * sizeof(float));
            r->d_boxes = k_malloc(B * 5 * sizeof(float));
            r->d_fbank = k_malloc(B * (r->fbank_n ? r->fbank_n : 1) * sizeof(float));
            if (!r->raw_tok || !r->raw_tgt || !r->sp_tok || !r->sp_lab || !r->lab || !r->slot_img || !r->h_boxes ||
                !r->d_clip || !r->d_crop || !r->d_boxes || !r->d_fbank)
                return ar_errorf("out of memory for the image and reference buffers");
        }
        r->d_img = k_malloc((size_t)r->B * r->chw * sizeof(float));
        r->d_mask = k_malloc((size_t)r->max_seg * r->mask_cap * sizeof(float));
        r->h_logits = malloc(r->mask_cap * sizeof(float));
        r->img_ptr = calloc((size_t)r->B, sizeof(float *));
        r->mask_ptr = calloc((size_t)r->max_seg, sizeof(float *));
        if (!r->d_img || !r->d_mask || !r->h_logits || !r->img_ptr || !r->mask_ptr)
            return ar_errorf("out of memory for the AnyRef batch buffers (%d samples, %d masks of up to %d x %d)", r->B,
                             r->max_seg, r->ac.max_orig_h, r->ac.max_orig_w);
    } else if (!(r->m = llama_create(mc, &r->ps, r->B, r->T))) {
        return -1;
    }
    r->tok = malloc(sizeof(int) * (size_t)r->B * r->T); r->tgt = malloc(sizeof(int) * (size_t)r->B * r->T);
    if (!r->tok || !r->tgt) return ar_errorf("out of memory");
    return 0;
}

/* data.cache: opens (creating) the feature cache and declares the two frozen
 * encoders by the hash of their config and weights, so a cache written with
 * other weights or settings is never read. */
/* Declares encoder `name` in the cache by the hash of its tensors (registry
 * names starting with prefix) and its settings text. */
static int declare_encoder(run_t *r, const char *name, const char *prefix, const char *text, fc_hash *id) {
    if (fc_encoder_id_params(&r->ps, prefix, text, id) || fc_add_encoder(r->fc, *id, name, text))
        return ar_error_prefix("data.cache: ");
    return 0;
}

static int open_cache(run_t *r) {
    const char *path = cfg_str(r->cfg, "data.cache");
    if (!path[0] || (!r->refs && !r->use_senc)) return 0;
    const refs_cfg *rc = &r->rcfg;
    char t[512];
    if (ar_mkdir_parent(path) || !(r->fc = fc_open(path, FC_WRITE | FC_RECREATE))) return ar_error_prefix("data.cache: ");
    size_t in_max = r->sam_n, out_max = r->use_senc ? r->chw : 1;
    if (r->use_senc) {
        const sam_encoder_cfg *e = &r->scfg;
        int n = snprintf(t, sizeof t, "sam_image_encoder img_size=%d patch=%d dim=%d depth=%d heads=%d mlp_dim=%d "
                         "out_chans=%d window=%d global=", e->img_size, e->patch, e->dim, e->depth, e->heads,
                         e->mlp_dim, e->out_chans, e->window);
        for (int i = 0; i < e->depth && n < (int)sizeof t - 8; i++)
            if (e->global_attn[i]) n += snprintf(t + n, sizeof t - n, "%d,", i);
        if (declare_encoder(r, "sam_image_encoder", e->prefix, t, &r->enc_sam)) return -1;
    }
    if (r->refs) {
        snprintf(t, sizeof t, "clip_vit image_size=%d patch=%d width=%d layers=%d heads=%d mlp_dim=%d eps=%g act=%d "
                 "select_layer=%d keep_cls=%d", rc->clip.image_size, rc->clip.patch, rc->clip.width, rc->clip.layers,
                 rc->clip.heads, rc->clip.mlp_dim, (double)rc->clip.eps, (int)rc->clip.act, rc->clip.select_layer,
                 rc->clip.keep_cls);
        if (declare_encoder(r, "clip_vit", "vision_model.", t, &r->enc_clip)) return -1;
        if (rc->use_audio) {
            const imagebind_audio_cfg *a = &rc->audio;
            snprintf(t, sizeof t, "imagebind_audio embed_dim=%d depth=%d heads=%d mlp_ratio=%d kernel=%d stride=%d "
                     "n_mels=%d target_len=%d out_dim=%d logit_scale=%g", a->embed_dim, a->depth, a->heads,
                     a->mlp_ratio, a->kernel, a->stride, a->n_mels, a->target_len, a->out_dim, (double)a->logit_scale);
            if (declare_encoder(r, "imagebind_audio", "modality_", t, &r->enc_audio)) return -1;
        }
        const int G = refs_image_tokens(r->refs), W = refs_clip_width(r->refs), A = refs_audio_dim(r->refs);
        const size_t gw = (size_t)G * W, au = (size_t)REFS_AUDIO_CLIPS * (A ? A : 1);
        r->d_img_feat = k_malloc((size_t)r->B * gw * sizeof(float));
        r->d_crop_feat = k_malloc((size_t)r->B * gw * sizeof(float));
        r->d_aud_feat = k_malloc((size_t)r->B * au * sizeof(float));
        if (!r->d_img_feat || !r->d_crop_feat || !r->d_aud_feat) return ar_errorf("out of memory for the feature-cache buffers");
        if (r->clip_n > in_max) in_max = r->clip_n;
        if (r->fbank_n > in_max) in_max = r->fbank_n;
        if (gw > out_max) out_max = gw;
        if (au > out_max) out_max = au;
    }
    r->d_scr_in = k_malloc((size_t)r->B * in_max * sizeof(float));
    r->d_scr_out = k_malloc((size_t)r->B * out_max * sizeof(float));
    r->h_feat = malloc(out_max * sizeof(float));
    r->miss = malloc((size_t)r->B * sizeof(int));
    if (!r->d_scr_in || !r->d_scr_out || !r->h_feat || !r->miss)
        return ar_errorf("out of memory for the feature-cache buffers");
    log_info("data.cache %s: encoders declared:%s%s%s", path, r->use_senc ? " SAM image encoder" : "",
             r->refs ? " CLIP" : "", rc->use_audio ? " ImageBind-audio" : "");
    return 0;
}

static void close_cache(run_t *r) {
    if (r->fc) {
        fc_stats st = fc_get_stats(r->fc);
        log_info("data.cache %s: %lld hits, %lld misses (%lld stale, %lld corrupt), %lld entries written",
                 fc_path(r->fc), (long long)st.hits, (long long)st.misses, (long long)st.stale, (long long)st.corrupt,
                 (long long)st.puts);
        if (fc_close(r->fc)) log_warn("%s", ar_error());
        r->fc = NULL;
    }
    float *dv[] = {r->d_img_feat, r->d_crop_feat, r->d_aud_feat, r->d_scr_in, r->d_scr_out};
    for (int i = 0; i < 5; i++) if (dv[i]) k_free(dv[i]);
    free(r->h_feat); free(r->miss);
}

/* A fresh start replaces the previous run's checkpoints (every step_*.h5 and
 * leftover .tmp in <run_dir>/checkpoints, broken ones included). */
static int remove_checkpoints(const char *run_dir) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : ar_errorf("cannot read %s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step_", 5) != 0 || !strstr(e->d_name, ".h5")) continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p)) { rc = ar_errorf("cannot remove old checkpoint %s: %s", p, strerror(errno)); break; }
    }
    closedir(d);
    return rc;
}

/* Fresh start or resume; leaves r->st.step at the first step to run. */
static int start_or_resume(run_t *r) {
    const char *how = cfg_str(r->cfg, "train.resume");
    char path[1200] = "";
    if (!strcmp(how, "auto")) {
        int rc = ckpt_latest(r->run_dir, path, sizeof path);
        if (rc < 0) return -1;
        if (rc == 1) path[0] = 0;
    } else if (strcmp(how, "never") != 0) {
        snprintf(path, sizeof path, "%s", how);
    }
    rng_seed(&r->data.rng, rng_derive(r->seed, 2));
    r->data.cur.seed = rng_derive(r->seed, 2);
    if (!path[0]) {   /* fresh: replace what a previous run left here */
        r->st.step = 0; r->st.seed = r->seed;
        if (remove_checkpoints(r->run_dir)) return -1;
        if (ar_mkdir_parent(r->metrics)) return -1;
        FILE *f = fopen(r->metrics, "w");
        if (!f) return ar_errorf("cannot create %s: %s", r->metrics, strerror(errno));
        fclose(f);
        return 0;
    }
    if (ckpt_load(path, &r->ps, &r->st, 1)) return -1;
    if (r->st.seed != r->seed)
        return ar_errorf("%s was written by a run with train.seed = %llu, this config has %llu", path,
                         (unsigned long long)r->st.seed, (unsigned long long)r->seed);
    r->data.rng = r->st.rng;
    r->data.cur.epoch = r->st.epoch;
    r->data.cur.position = r->st.data_position;
    if (metrics_truncate(r->metrics, r->st.step)) return -1;
    log_info("resumed from %s at step %lld", path, (long long)r->st.step);
    return 0;
}

/* The checkpoint export/merge read: train.resume = PATH, else the newest in run.dir. */
static int find_checkpoint(run_t *r, char *path, size_t cap) {
    const char *how = cfg_str(r->cfg, "train.resume");
    if (strcmp(how, "auto") != 0 && strcmp(how, "never") != 0) { snprintf(path, cap, "%s", how); return 0; }
    int rc = ckpt_latest(r->run_dir, path, cap);
    if (rc == 1) return ar_errorf("no checkpoint in %s/checkpoints (train first, or set train.resume = PATH)", r->run_dir);
    return rc;
}

static void teardown(run_t *r) {
    free(r->tok); free(r->tgt);
    close_cache(r);
    log_close(r->log);
    if (r->ar) anyref_free(r->ar);
    else llama_free(r->m);
    if (r->d_img) k_free(r->d_img);
    if (r->d_mask) k_free(r->d_mask);
    free(r->h_logits); free(r->img_ptr); free(r->mask_ptr);
    refs_free(r->refs);
    sam_encoder_free(r->senc);
    if (r->d_sam_in) k_free(r->d_sam_in);
    if (r->d_dimg) k_free(r->d_dimg);
    free(r->dimg_ptr);
    free(r->raw_tok); free(r->raw_tgt); free(r->sp_tok); free(r->sp_lab); free(r->lab); free(r->slot_img);
    free(r->h_boxes);
    float *dv[] = {r->d_clip, r->d_crop, r->d_boxes, r->d_fbank};
    for (int i = 0; i < 4; i++) if (dv[i]) k_free(dv[i]);
    params_free(&r->ps);
    data_close(&r->data);
    ckpt_state_free(&r->st);
}

int train_export_peft(const ar_config *cfg, const char *out_dir) {
    run_t r;
    memset(&r, 0, sizeof r);
    r.skip_init = 1;
    char ck[1200];
    int rc = -1;
    if (setup(&r, cfg) || find_checkpoint(&r, ck, sizeof ck) || ckpt_load(ck, &r.ps, &r.st, 0)) goto out;
    /* an absolute base path, so the adapter resolves from any working directory */
    char base[4096];
    const char *init = cfg_str(cfg, "model.init");
    if (!init[0] || !realpath(init, base)) snprintf(base, sizeof base, "%s", init);
    peft_info info = {.r = r.mc.lora_rank, .alpha = r.mc.lora_alpha, .dropout = r.mc.lora_dropout, .base_model = base};
    if (peft_export(out_dir, &r.ps, &info)) goto out;
    log_info("exported the adapter of %s (step %lld) to %s/adapter_model.safetensors and adapter_config.json",
             ck, (long long)r.st.step, out_dir);
    rc = 0;
out:
    teardown(&r);
    return rc;
}

int train_merge(const ar_config *cfg, const char *out_path) {
    run_t r;
    memset(&r, 0, sizeof r);
    char ck[1200];
    int rc = -1, n;
    if (setup(&r, cfg) || find_checkpoint(&r, ck, sizeof ck) || ckpt_load(ck, &r.ps, &r.st, 0)) goto out;
    if ((n = peft_merge(&r.ps, r.mc.lora_alpha, r.mc.lora_rank)) < 0 || peft_save_merged(out_path, &r.ps)) goto out;
    log_info("merged %d LoRA projections of %s (step %lld) into %s", n, ck, (long long)r.st.step, out_path);
    rc = 0;
out:
    teardown(&r);
    return rc;
}

/* One input kind of one data file through the cache, B inputs at a time. */
static int cache_fill(run_t *r, grounding_dataset *g, int which, int64_t rows, const char *what) {
    const int e = which == GDS_IN_FBANK ? ENC_AUDIO : which == GDS_IN_SAM ? ENC_SAM : ENC_CLIP;
    const size_t per = e == ENC_AUDIO ? r->fbank_n : e == ENC_SAM ? r->sam_n : r->clip_n;
    float *host = malloc((size_t)r->B * per * sizeof(float));
    const float **hp = malloc((size_t)r->B * sizeof(float *));
    float *din = e == ENC_AUDIO ? r->d_fbank : e == ENC_SAM ? r->d_sam_in : which == GDS_IN_CROP ? r->d_crop : r->d_clip;
    float *dout = e == ENC_AUDIO ? r->d_aud_feat : e == ENC_SAM ? r->d_img : r->d_img_feat;
    int rc = host && hp ? 0 : ar_errorf("out of memory");
    ar_progress prog;
    progress_start(&prog, rows, what);
    for (int64_t i0 = 0; !rc && i0 < rows; i0 += r->B) {
        const int n = rows - i0 < r->B ? (int)(rows - i0) : r->B;
        for (int j = 0; j < n && !rc; j++) {
            hp[j] = host + (size_t)j * per;
            rc = gds_read_input(g, which, i0 + j, host + (size_t)j * per);
        }
        if (!rc) {
            k_upload(din, host, (size_t)n * per * sizeof(float));
            rc = cached_encode(r, e, hp, n, din, dout);
        }
        progress_update(&prog, (long)(i0 + n), "");
    }
    progress_finish(&prog);
    free(host); free(hp);
    return rc;
}

int train_cache(const ar_config *cfg) {
    run_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (setup(&r, cfg)) goto out;
    if (!r.refs && !r.use_senc) {
        ar_errorf("anyref cache: nothing to cache: the config runs no frozen encoder (sam_encoder.model, clip.image_size; "
                  "model.kind = anyref, data.kind = grounding)");
        goto out;
    }
    if (!cfg_str(cfg, "data.cache")[0]) { ar_errorf("anyref cache: set data.cache (the cache file)"); goto out; }
    if (open_cache(&r)) goto out;
    grounding_dataset *files[2] = {r.data.gtrain, r.data.gval};
    const char *names[2] = {"data.train", "data.val"};
    for (int f = 0; f < 2; f++) {
        if (!files[f]) continue;
        gds_mm_info mm;
        gds_mm(files[f], &mm);
        char what[64];
        snprintf(what, sizeof what, "%s SAM images", names[f]);
        if (r.use_senc && cache_fill(&r, files[f], GDS_IN_SAM, gds_images(files[f]), what)) goto out;
        snprintf(what, sizeof what, "%s CLIP images", names[f]);
        if (r.refs && cache_fill(&r, files[f], GDS_IN_CLIP, gds_images(files[f]), what)) goto out;
        snprintf(what, sizeof what, "%s crops", names[f]);
        if (r.refs && mm.n_crops && cache_fill(&r, files[f], GDS_IN_CROP, mm.n_crops, what)) goto out;
        snprintf(what, sizeof what, "%s audio", names[f]);
        if (r.refs && mm.n_audio && r.rcfg.use_audio && cache_fill(&r, files[f], GDS_IN_FBANK, mm.n_audio, what)) goto out;
    }
    rc = 0;
out:
    teardown(&r);
    return rc;
}

int train_run(const ar_config *cfg) {
    run_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (setup(&r, cfg) || start_or_resume(&r)) goto done;
    {
        char cfgpath[1100];
        snprintf(cfgpath, sizeof cfgpath, "%s/config.cfg", r.run_dir);
        char *text = config_text(cfg);
        FILE *f = text ? fopen(cfgpath, "w") : NULL;
        if (!f) { free(text); if (text) ar_errorf("cannot write %s: %s", cfgpath, strerror(errno)); goto done; }
        fputs(text, f); fclose(f);
        if (ckpt_state_set_config(&r.st, text)) { free(text); goto done; }
        free(text);
    }
    if (!(r.log = log_open(r.metrics)) || open_cache(&r)) goto done;
    log_info("anyref train: %s data, llama dim %d, %d layers, %d/%d heads, vocab %d; %zu parameters, %zu trainable",
             cfg_str(cfg, "data.kind"), r.mc.dim, r.mc.layers, r.mc.heads, r.mc.kv_heads, r.mc.vocab,
             params_numel(&r.ps, 0), params_numel(&r.ps, 1));
    log_info("backend %s, %d threads, activations %.2f MiB, %d x %d x %d tokens per step, steps %lld..%d, run %s",
             k_backend_name(), k_num_threads(), llama_activation_bytes(r.m) / 1048576.0, r.accum, r.B, r.T,
             (long long)r.st.step + 1, r.steps, r.run_dir);

    if (r.st.step >= r.steps) {
        log_info("%s is already complete at step %lld (train.steps = %d); nothing to train — raise train.steps to continue",
                 r.run_dir, (long long)r.st.step, r.steps);
        rc = 0;
        goto done;
    }
    g_interrupted = 0;
    void (*old_handler)(int) = signal(SIGINT, on_sigint);
    const int eval_every = (int)cfg_int(cfg, "train.eval_every"), save_every = (int)cfg_int(cfg, "train.save_every");
    const int eval_batches = (int)cfg_int(cfg, "train.eval_batches"), stop_after = (int)cfg_int(cfg, "train.stop_after");
    const double t0 = ar_now();
    const int64_t first = r.st.step;
    double loss_ema = NAN, acc = NAN, giou = NAN;
    ar_progress prog;
    progress_start(&prog, r.steps, "train");
    progress_update(&prog, (long)first, "");
    int64_t step = first;
    while (step < r.steps) {
        double loss = 0, parts[3] = {0, 0, 0};   /* anyref: ce, bce, dice */
        params_zero_grad(&r.ps);
        for (int a = 0; a < r.accum; a++) {
            const uint64_t dseed = rng_derive(r.seed, 1000000 + (uint64_t)step * r.accum + a);
            float l;
            if (r.ar) {
                gds_batch gb;
                anyref_batch in;
                anyref_losses L;
                if (gds_next_batch(r.data.gtrain, &r.data.cur, r.Tf, r.refs ? r.raw_tok : r.tok,
                                   r.refs ? r.raw_tgt : r.tgt, &gb) ||
                    upload_batch(&r, &gb, &in)) {
                    ar_error_prefix("step %lld: ", (long long)step + 1);
                    goto interrupted;
                }
                ar_error_clear();
                l = anyref_forward(r.ar, &in, dseed, &L);
                if (isnan(l) && ar_error()[0]) { ar_error_prefix("step %lld: ", (long long)step + 1); goto interrupted; }
                if (isfinite(l)) {
                    anyref_backward(r.ar, 1.0f / r.accum);
                    if ((r.refs && refs_backward(r.refs)) ||
                        (in.dimage_emb && sam_encoder_backward(r.senc, r.d_dimg))) {
                        ar_error_prefix("step %lld: ", (long long)step + 1);
                        goto interrupted;
                    }
                    parts[0] += L.ce / r.accum; parts[1] += L.bce / r.accum; parts[2] += L.dice / r.accum;
                }
            } else {
                if (data_next(&r.data, r.B, r.T, r.tok, r.tgt)) goto interrupted;
                int count = 0;
                l = llama_forward(r.m, r.tok, r.tgt, r.B, r.T, dseed, &count);
                if (isfinite(l)) llama_backward(r.m, 1.0f / r.accum);
            }
            if (!isfinite(l)) { ar_errorf("step %lld: loss is %g (diverged); lower train.lr", (long long)step + 1, l); goto interrupted; }
            loss += l / r.accum;
        }
        float lr = optim_lr_at(&r.oc, (int)step);
        double gnorm = optim_step(&r.ps, &r.oc, (int)step + 1, lr);
        if (k_error()) { ar_errorf("step %lld: %s", (long long)step + 1, k_error()); goto interrupted; }
        step++;
        int last = step == r.steps;
        double vloss = NAN, vm[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
        acc = NAN;
        if ((eval_every > 0 && step % eval_every == 0) || last) {
            if (r.ar) {
                validate_anyref(&r, eval_batches, vm);
                vloss = vm[0];
                giou = vm[4];
            } else {
                vloss = validate(&r, eval_batches);
            }
            if (r.data.kind == DATA_SYNTH) acc = synth_accuracy(&r, (int)cfg_int(cfg, "data.eval_samples"));
        }
        double el = ar_now() - t0;
        if (r.ar) {
            const char *keys[] = {"loss", "ce", "bce", "dice", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "skipped",
                                  "val_loss", "val_ce", "val_bce", "val_dice", "val_giou", "val_ciou"};
            double vals[] = {loss, parts[0], parts[1], parts[2], lr, gnorm, (double)(step - first) * r.accum * r.B * r.T / el,
                             el, (double)r.data.cur.skipped, vm[0], vm[1], vm[2], vm[3], vm[4], vm[5]};
            if (log_metrics(r.log, (int)step, keys, vals, 15)) goto interrupted;
        } else {
            const char *keys[] = {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "accuracy"};
            double vals[] = {loss, lr, gnorm, (double)(step - first) * r.accum * r.B * r.T / el, el, vloss, acc};
            if (log_metrics(r.log, (int)step, keys, vals, 7)) goto interrupted;
        }
        loss_ema = isnan(loss_ema) ? loss : 0.9 * loss_ema + 0.1 * loss;
        char extra[160];
        int n = snprintf(extra, sizeof extra, "loss %.4f lr %.2e", loss_ema, lr);
        if (!isnan(vloss)) n += snprintf(extra + n, sizeof extra - n, " val %.4f", vloss);
        if (!isnan(acc)) snprintf(extra + n, sizeof extra - n, " acc %.3f", acc);
        else if (!isnan(vm[4])) snprintf(extra + n, sizeof extra - n, " gIoU %.3f", vm[4]);
        progress_update(&prog, (long)step, extra);
        if (r.ar && !isnan(vloss)) {
            log_info("step %lld: val_loss %.4f (ce %.4f, bce %.4f, dice %.4f), gIoU %.3f, cIoU %.3f", (long long)step,
                     vloss, vm[1], vm[2], vm[3], vm[4], vm[5]);
        } else if (!isnan(vloss)) {
            if (isnan(acc)) log_info("step %lld: val_loss %.4f", (long long)step, vloss);
            else log_info("step %lld: val_loss %.4f, greedy exact-match accuracy %.3f", (long long)step, vloss, acc);
        }
        int stop = g_interrupted || (stop_after > 0 && step - first >= stop_after);
        if ((save_every > 0 && step % save_every == 0) || last || stop) {
            if (save(&r, step)) goto interrupted;
        }
        if (stop && !last) {
            progress_finish(&prog);
            log_info("%s after step %lld; continue with the same command (train.resume = auto)",
                     g_interrupted ? "interrupted" : "stopped (train.stop_after)", (long long)step);
            rc = 0;
            goto restore;
        }
    }
    progress_finish(&prog);
    {
        double el = ar_now() - t0;
        log_info("done: steps %lld..%d in %.1f s (%.0f tokens/s), final loss %.4f",
                 (long long)first + 1, r.steps, el, (double)(r.steps - first) * r.accum * r.B * r.T / (el > 0 ? el : 1), loss_ema);
        double need = cfg_float(cfg, "train.min_accuracy");
        if (r.data.kind == DATA_SYNTH && need > 0 && !(acc >= need)) {
            ar_errorf("final accuracy %.3f is below train.min_accuracy %.3f", acc, need);
            goto restore;
        }
        double need_iou = cfg_float(cfg, "train.min_val_giou");
        if (r.ar && need_iou > 0 && !(giou >= need_iou)) {
            ar_errorf("final validation gIoU %.3f is below train.min_val_giou %.3f", giou, need_iou);
            goto restore;
        }
    }
    rc = 0;
    goto restore;
interrupted:
    progress_finish(&prog);
restore:
    signal(SIGINT, old_handler);
done:
    teardown(&r);
    return rc;
}
