/* train/train.c — see train.h.
 *
 * One optimiser step = grad_accum micro-batches of batch_size sequences of
 * seq_len tokens; each micro-batch's mean CE loss is weighted 1/grad_accum.
 * Everything that decides a step's numbers — the data order, the dropout
 * masks (rng_derive(seed, step)), AdamW's t — derives from the seed and the
 * step, and the CPU kernels are bitwise deterministic, so a resumed run
 * reproduces the uninterrupted one exactly.
 *
 * Data parallel (core/dist.h, `make MPI=1`, launched by mpirun / srun): a step
 * is nranks x grad_accum micro-batches; rank k runs the global micro-batches
 * k*accum .. k*accum+accum-1 of the step (it reads the whole step's stream
 * and keeps its own share, so the cursor at every step boundary is the
 * single-process one and a checkpoint resumes on any number of ranks), the
 * dropout seed is a function of the global micro-batch index, each rank's
 * backward is scaled 1/(nranks*accum) and the gradient block is summed over
 * the ranks (bucketed MPI_Iallreduce) before the norm and the update: the
 * same step as one process with nranks*accum micro-batches. Rank 0 alone
 * writes config.cfg, metrics.jsonl and checkpoints. */
#include "train/train.h"
#include "train/run.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/peft.h"
#include "checkpoints/names.h"
#include "checkpoints/safetensors.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/synthetic.h"
#include "data/grounding_dataset.h"
#include "data/loader.h"
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
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

const char *train_program = "anyref";

/* The keys of one data set of data.kind = sources (source, source2..4). */
#define SOURCE_KEYS(p, what) \
    {p ".kind", CFG_STRING, "", what ": refer (REFER refs + instances.json) | avsbench (S4 / MS3) | jsonl (your own JSON lines)"}, \
    {p ".root", CFG_STRING, "", "refer: the directory holding <dataset>/refs(<split_by>).p and instances.json; avsbench: the directory holding s4_meta_data.csv / ms3_meta_data.csv"}, \
    {p ".dataset", CFG_STRING, "refcoco", "refer: refcoco | refcoco+ | refcocog | refclef; avsbench: s4 | ms3"}, \
    {p ".split_by", CFG_STRING, "", "refer: unc | umd | google | berkeley (empty: umd for refcocog, unc otherwise)"}, \
    {p ".split", CFG_STRING, "", "refer: train | val | testA | testB | test ...; avsbench: train | val | test (empty: train); jsonl: keep only records of this split (empty: all)"}, \
    {p ".val_split", CFG_STRING, "", "data.kind = sources: the split validated on (e.g. val; empty: this set is not validated)"}, \
    {p ".eval_splits", CFG_STRING, "", "anyref eval: the splits evaluated, comma separated (e.g. val,testA,testB; empty: val_split)"}, \
    {p ".images", CFG_STRING, "", "refer: image root (images/mscoco/images/train2014/..., images/saiapr_tc-12/...)"}, \
    {p ".image_layout", CFG_STRING, "refer", "refer: refer (refer.py's data_root layout) | coco2017 (AnyRef: coco/train2017/<id>.jpg)"}, \
    {p ".file", CFG_STRING, "", "jsonl: the .jsonl file (paths in it relative to its directory)"}, \
    {p ".task", CFG_STRING, "seg", "refer: seg (text reference -> [SEG] answer) | caption (box reference -> the sentence as the answer)"}, \
    {p ".weight", CFG_FLOAT, "1", "data.kind = sources: sampling weight; each epoch gives this set weight / (sum of weights) of its samples"}

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
    {"model.attention", CFG_STRING, "full", "LLaMA attention: full (keeps each layer's [B,H,T,T] probabilities for backward) or flash (memory-efficient: keeps the rows' log-sum-exp and recomputes the probabilities block by block in backward; with refocusing the last layer keeps its probabilities)"},
    {"model.frozen_weights", CFG_STRING, "fp32", "storage of the frozen LLaMA projection weights (q/k/v/o/gate/up/down): fp32, or bf16 (half the memory: LLaMA-7B 24.1 -> 12.1 GiB; widened to fp32 inside each product, so results are those of the bf16-rounded weights; LoRA, embeddings, lm_head, norms and optimiser state stay fp32)"},
    {"model.activations", CFG_STRING, "fp32", "storage of the LLaMA activations kept for backward: fp32, or bf16 (each layer's kept tensors rounded to bf16 where the training forward makes them and stored in 16 bits, one fp32 work set; norms' rstd, log-sum-exp, attention probabilities, LoRA dropout masks, logits and gradients stay fp32; with model.checkpoint_layers only each layer's input is stored, in bf16; bitwise the same step with or without checkpointing)"},
    {"model.init", CFG_STRING, "", "initial weights: .safetensors or PyTorch .bin/.pth file, sharded index .json or HF model directory (empty: random)"},
    {"model.strict_load", CFG_BOOL, "0", "model.init / sam.init / clip.init / ...: any tensor of the file the model lacks (other than the ones checkpoints/names.h documents unused), or a partly present LoRA, is an error naming them"},
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
    {"sam_encoder.frozen_weights", CFG_STRING, "fp32", "anyref, frozen encoder: storage of the blocks' qkv / proj / lin1 / lin2 weights (ViT-H: 629 of 637 M parameters): fp32, or bf16 / fp16 (half their memory; widened inside each product, or multiplied in 16 bits with train.gemm of the same format, with bf16 the attention's products too; must match model.frozen_weights when both are 16-bit)"},
    {"sam_encoder.checkpoint", CFG_BOOL, "0", "with sam_encoder.trainable: gradient checkpointing per ViT block (keep each block's input, recompute its forward in backward: less memory, about a third more encoder work, the same gradients bit for bit)"},
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
    {"clip.frozen_weights", CFG_STRING, "fp32", "anyref, frozen tower: storage of the layers' q/k/v/out_proj and fc1/fc2 weights (ViT-L: 302 of 304 M parameters): fp32, or bf16 / fp16 (half their memory; multiplied in 16 bits with train.gemm of the same format; one format with the other frozen_weights keys)"},
    {"clip.checkpoint", CFG_BOOL, "0", "with clip.trainable: gradient checkpointing per CLIP layer (keep each layer's input, recompute its forward in backward: less memory, about a third more tower work, the same gradients bit for bit)"},
    {"clip.init", CFG_STRING, "", "anyref: CLIP and mm_projector weights (.safetensors: vision_model.*, model.mm_projector.*; empty: random)"},
    {"projector.type", CFG_STRING, "linear", "anyref: mm_projector: linear | mlp2x_gelu"},
    {"projector.trainable", CFG_BOOL, "0", "anyref: train the mm_projector (AnyRef: frozen)"},
    {"audio.embed_dim", CFG_INT, "0", "anyref: ImageBind audio width (0: no audio references; 768 for imagebind_huge)"},
    {"audio.depth", CFG_INT, "12", "anyref: ImageBind audio blocks"},
    {"audio.frozen_weights", CFG_STRING, "fp32", "anyref: storage of the ImageBind audio blocks' in_proj / out_proj / fc1 / fc2 weights (imagebind_huge: 85 of 86 M parameters): fp32, or bf16 / fp16 (half their memory; multiplied in 16 bits with train.gemm of the same format; one format with the other frozen_weights keys)"},
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
    {"train.deterministic", CFG_BOOL, "0", "require bitwise-repeatable results (both backends give them: no atomics, fixed reduction orders)"},
    {"train.gemm", CFG_STRING, "", "GEMM arithmetic: fp32; tf32 (CUDA only: inputs rounded to TF32 inside cuBLAS, fp32 accumulation); bf16 (with model.frozen_weights = bf16, or sam_encoder. / clip. / audio.frozen_weights = bf16: the products with those 16-bit weights bf16 x bf16 with fp32 accumulation, on the GPU's tensor cores, on the CPU oneDNN's bf16 matmuls where it has bf16 instructions, else emulated; lm_head's three products too, from a bf16 copy of its fp32 weight made each forward; other GEMMs as tf32 / fp32); fp16 (the same for fp16 weights; emulated on the CPU); empty: $ANYREF_GEMM, else fp32"},
    {"train.eval_every", CFG_INT, "100", "steps between validations (0: at the end only)"},
    {"train.eval_batches", CFG_INT, "8", "micro-batches per validation"},
    {"train.save_every", CFG_INT, "0", "steps between checkpoints (0: at the end only)"},
    {"train.keep_checkpoints", CFG_INT, "3", "checkpoints kept in the run directory (0: all); the newest that verifies is resumed from"},
    {"train.loss_scale", CFG_STRING, "auto", "loss scaling for fp16 products: auto (dynamic with train.gemm = fp16, else off), dynamic (the scale halves when the gradients overflow, that step skipped and not counted as bad, down to 1: at 1 or below non-finite gradients are a bad step; doubles after train.loss_scale_window finite steps), off, or a fixed number"},
    {"train.loss_scale_init", CFG_FLOAT, "65536", "dynamic loss scaling: the first scale (a resumed run keeps its checkpoint's)"},
    {"train.loss_scale_window", CFG_INT, "2000", "dynamic loss scaling: finite steps in a row before the scale doubles"},
    {"train.max_bad_steps", CFG_INT, "5", "a step with a NaN/Inf loss or gradient is skipped (no update, logged as bad_steps); this many in a row stop the run (0: never stop)"},
    {"test.poison_grad_steps", CFG_STRING, "", "TEST HOOK (fault injection, leave empty): comma-separated 1-based steps whose first trainable gradient is set to NaN after backward"},
    {"dist.bucket_mb", CFG_FLOAT, "16", "MPI (make MPI=1, several ranks): MiB of gradients per non-blocking all-reduce bucket"},
    {"dist.timeout_s", CFG_FLOAT, "1800", "MPI, several ranks: a collective (gradient or loss all-reduce, barrier) waiting longer than this fails the rank, which then ends every rank (0: wait forever)"},
    {"test.stall_rank", CFG_STRING, "", "TEST HOOK (leave empty): RANK,STEP — that rank stops answering (sleeps until signalled) before that 1-based step's all-reduce"},
    {"dist.share_samples", CFG_BOOL, "1", "several ranks on live sources (data.kind = sources): each rank decodes about its own share of a step's samples and the ranks exchange which were usable (the same batches); 0: every rank decodes every sample, stepping over the others'"},
    {"dist.backend", CFG_STRING, "auto", "several ranks: how gradients are summed — auto (NCCL in device memory when the CUDA backend is built with MPI=1 and every rank has a GPU of its own, else MPI), mpi (MPI; device gradients through a host copy), nccl (NCCL or fail; also with one rank, as a check)"},
    {"dist.overlap", CFG_BOOL, "1", "several ranks, CPU backend or NCCL: start each bucket's all-reduce during the step's last backward as soon as its gradients are final (lm_head, mask decoder, [SEG] head, then layer by layer; 0: all after backward)"},
    {"train.resume", CFG_STRING, "auto", "auto (newest checkpoint of run.dir, if any) | never (start afresh) | a checkpoint path"},
    {"train.stop_after", CFG_INT, "0", "stop (with a checkpoint) after this many steps of this run (0: run to train.steps)"},
    {"train.timing", CFG_BOOL, "false", "time each step's phases (data, encoders + upload, forward, backward, gradient sync + optimizer), the backend synchronised at each boundary so that they add up; the mean over the run's steps but its first goes to the log and run.dir/timing.json"},
    {"train.min_accuracy", CFG_FLOAT, "0", "synthetic data: exit 1 if the final accuracy is below this"},
    {"train.min_val_giou", CFG_FLOAT, "0", "anyref: exit 1 if the final validation gIoU is below this"},
    {"data.kind", CFG_STRING, "synthetic", "synthetic (the demo tasks) | tokens (pre-tokenized HDF5) | conversations (LLaVA JSON, tokenized into run.dir/data/ first) | grounding (HDF5 with SAM image embeddings and masks, for model.kind = anyref) | sources (real data sets read live: source.*, source2.* ..., for model.kind = anyref)"},
    {"data.train", CFG_STRING, "", "tokens/grounding: training file (HDF5: input_ids, labels[, attention_mask], ...); conversations: LLaVA JSON"},
    {"data.val", CFG_STRING, "", "validation file of the same kind (empty: no validation loss)"},
    {"data.tokenizer", CFG_STRING, "", "conversations, sources: tokenizer.model or tokenizer.json"},
    {"data.template", CFG_STRING, "llava_v1", "conversations, sources: llava_v1 | vicuna_v1_1"},
    {"data.add_tokens", CFG_STRING, "", "conversations, sources: added tokens, comma separated (e.g. [SEG]; sources add [SEG], <im_start>, <im_end> and the reference markers themselves), whitespace around them stripped as transformers 4.31 did"},
    {"data.cache", CFG_STRING, "", "grounding with sam_encoder.* or clip.*: feature cache file for the frozen SAM / CLIP / ImageBind outputs (HDF5; empty: off; fill it ahead with `anyref cache`)"},
    {"data.workers", CFG_INT, "2", "sources: decode threads building samples while the model trains (0: in the training thread)"},
    {"data.prefetch", CFG_INT, "0", "sources: samples built ahead of the step (0: two batches; several ranks: beyond the step's window, which is held whole)"},
    {"data.deterministic", CFG_BOOL, "1", "sources: hand samples out in stream order (the same batches for any data.workers, exact resume); 0: whichever is decoded first (one rank; several ranks always take their exact share)"},
    {"data.epoch_samples", CFG_INT, "0", "sources: samples per epoch (0: every sample of every set once); the weights split it between the sets"},
    {"data.plain_answers", CFG_FLOAT, "0.5", "sources, data inspect: probability of the plain answer \"It is [SEG].\" instead of \"{expression}[SEG].\" for segmentation samples (LISA / AnyRef: 0.5; small models trained from scratch learn references far better with 0)"},
    {"data.clip_crop", CFG_BOOL, "0", "sources: CLIP input by CLIPImageProcessor's centre crop (1) or AnyRef's clip_resize_wo_crop (0)"},
    {"data.task", CFG_STRING, "reverse", "synthetic: reverse | copy | sort"},
    {"data.digits", CFG_INT, "6", "synthetic: digits per prompt"},
    {"data.base", CFG_INT, "10", "synthetic: distinct digit tokens"},
    {"data.eval_samples", CFG_INT, "256", "synthetic: fresh sequences for greedy exact-match accuracy"},
    SOURCE_KEYS("source", "real data set read by `anyref data inspect` and by data.kind = sources"),
    {"source.seed", CFG_INT, "0", "`anyref data inspect`: seed of the sample builder's choices (sentence, answer template), per record (training: train.seed and the stream position)"},
    SOURCE_KEYS("source2", "data.kind = sources: a second data set mixed in (empty: none)"),
    SOURCE_KEYS("source3", "data.kind = sources: a third data set (empty: none)"),
    SOURCE_KEYS("source4", "data.kind = sources: a fourth data set (empty: none)"),
    {"run.dir", CFG_STRING, "runs/demo", "run directory: config.cfg, metrics.jsonl, checkpoints/"},
};
const int train_schema_len = (int)(sizeof train_schema / sizeof train_schema[0]);

/* ------------------------------------------------------------------------ */
/* Data sources                                                             */
/* ------------------------------------------------------------------------ */

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

/* One data set of data.kind = sources from the keys of prefix p (source,
 * source2, ...): *present = 0 when p.kind is empty (or, for validation,
 * p.val_split is). */
static int source_from_keys(const ar_config *cfg, const char *p, int val, ldr_source *s, int *present) {
    char k[64];
#define KEY(x) (snprintf(k, sizeof k, "%s." x, p), k)
    memset(s, 0, sizeof *s);
    *present = 0;
    const char *kind = cfg_str(cfg, KEY("kind"));
    if (!kind[0]) return 0;
    if (!strcmp(kind, "refer")) s->kind = LDR_REFER;
    else if (!strcmp(kind, "avsbench")) s->kind = LDR_AVS;
    else if (!strcmp(kind, "jsonl")) s->kind = LDR_JSONL;
    else return ar_errorf("config: %s.kind = '%s' (expected refer, avsbench or jsonl)", p, kind);
    s->root = cfg_str(cfg, KEY("root"));
    s->dataset = cfg_str(cfg, KEY("dataset"));
    s->split_by = cfg_str(cfg, KEY("split_by"));
    s->split = cfg_str(cfg, val ? KEY("val_split") : KEY("split"));
    if (val && !s->split[0]) return 0;
    s->images = cfg_str(cfg, KEY("images"));
    s->file = cfg_str(cfg, KEY("file"));
    s->weight = cfg_float(cfg, KEY("weight"));
    const char *lay = cfg_str(cfg, KEY("image_layout")), *task = cfg_str(cfg, KEY("task"));
    if (!strcmp(lay, "refer")) s->image_layout = REFER_IMAGES_REFER;
    else if (!strcmp(lay, "coco2017")) s->image_layout = REFER_IMAGES_COCO2017;
    else return ar_errorf("config: %s.image_layout = '%s' (expected refer or coco2017)", p, lay);
    if (!strcmp(task, "caption")) s->caption = 1;
    else if (strcmp(task, "seg")) return ar_errorf("config: %s.task = '%s' (expected seg or caption)", p, task);
    if (s->kind != LDR_JSONL && !s->root[0]) return ar_errorf("config: %s.kind = %s needs %s.root", p, kind, p);
    if (s->kind == LDR_JSONL && !s->file[0]) return ar_errorf("config: %s.kind = jsonl needs %s.file", p, p);
    if (!(s->weight > 0)) return ar_errorf("config: %s.weight = %g (expected > 0)", p, s->weight);
#undef KEY
    *present = 1;
    return 0;
}

/* data.kind = sources: the live loader's settings from the keys (val: the
 * validation loader over the sets' val_split, in order, or n_sources = 0). */
static int sources_config(const ar_config *cfg, int val, ldr_cfg *c) {
    ldr_cfg_default(c);
    const char *pre[] = {"source", "source2", "source3", "source4"};
    for (int k = 0; k < LDR_MAX_SOURCES; k++) {
        int present;
        if (source_from_keys(cfg, pre[k], val, &c->src[c->n_sources], &present)) return -1;
        c->n_sources += present;
    }
    if (!val && !c->n_sources) return ar_errorf("config: data.kind = sources needs source.kind (and source.root / source.file)");
    c->tokenizer = cfg_str(cfg, "data.tokenizer");
    if (!c->tokenizer[0]) return ar_errorf("config: data.kind = sources needs data.tokenizer");
    c->template_name = cfg_str(cfg, "data.template");
    c->add_tokens = cfg_str(cfg, "data.add_tokens");
    c->T = (int)cfg_int(cfg, "train.seq_len");
    if (c->T < 2) return ar_errorf("config: data.kind = sources needs train.seq_len (tokens per sample, image tokens included)");
    c->clip_S = (int)cfg_int(cfg, "clip.image_size");
    c->clip_crop = cfg_bool(cfg, "data.clip_crop");
    c->so.plain_p = cfg_float(cfg, "data.plain_answers");
    if (!(c->so.plain_p >= 0 && c->so.plain_p <= 1))
        return ar_errorf("config: data.plain_answers = %g (expected a probability in [0, 1])", c->so.plain_p);
    const char *sm = cfg_str(cfg, "sam_encoder.model");
    if (!strcmp(sm, "none"))
        return ar_errorf("config: data.kind = sources decodes images, so the SAM image encoder must run: set sam_encoder.model");
    c->sam_S = !strcmp(sm, "custom") ? (int)cfg_int(cfg, "sam_encoder.img_size") : 1024;
    c->audio = cfg_int(cfg, "audio.embed_dim") > 0 && c->clip_S > 0;
    const uint64_t seed = (uint64_t)cfg_int(cfg, "train.seed");
    c->seed = rng_derive(seed, val ? 4 : 3);
    c->epoch_samples = cfg_int(cfg, "data.epoch_samples");
    c->threads = val ? 0 : (int)cfg_int(cfg, "data.workers");
    c->prefetch = (int)cfg_int(cfg, "data.prefetch");
    c->deterministic = cfg_bool(cfg, "data.deterministic");
    c->shuffle = !val;
    if (c->threads < 0 || c->prefetch < 0 || c->epoch_samples < 0)
        return ar_errorf("config: data.workers, data.prefetch and data.epoch_samples must be >= 0");
    return 0;
}

grounding_dataset *run_open_eval_set(run_t *r, int k, const char *split, int every_sentence, int *present) {
    static const char *const pre[] = {"source", "source2", "source3", "source4"};
    *present = 0;
    if (k < 0 || k >= LDR_MAX_SOURCES) return NULL;
    ldr_cfg c;
    if (sources_config(r->cfg, 1, &c)) return NULL;   /* the shared settings (validation: in order, no threads) */
    int here;
    if (source_from_keys(r->cfg, pre[k], 0, &c.src[0], &here)) return NULL;
    if (!here) return NULL;
    *present = 1;
    c.src[0].split = split;
    c.src[0].every_sentence = every_sentence;
    c.n_sources = 1;
    ldr *l = ldr_open(&c);
    if (!l) { ar_error_prefix("%s: ", pre[k]); return NULL; }
    char name[128];
    snprintf(name, sizeof name, "%s (%s)", pre[k], split);
    grounding_dataset *g = gds_open_loader(l, name);
    if (g && grounding_attach(r, g)) { gds_close(g); return NULL; }
    return g;
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
        /* several ranks: rank 0 tokenizes, the others then find the files up to date */
        for (int pass = 0; pass < 2; pass++) {
            if ((pass == 0) == (dist_rank() == 0)) {
                if (prepare_conversations(cfg, tj, rd, "train", T, tbuf, sizeof tbuf, &vocab)) return -1;
                if (vj[0] && prepare_conversations(cfg, vj, rd, "val", T, vbuf, sizeof vbuf, &vocab)) return -1;
            }
            if (pass == 0 && dist_barrier()) return -1;
        }
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
    if (!strcmp(kind, "sources")) {
        d->kind = DATA_GROUNDING;
        if (strcmp(cfg_str(cfg, "model.kind"), "anyref") != 0)
            return ar_errorf("config: data.kind = sources trains the mask decoder: set model.kind = anyref");
        ldr_cfg tc, vc;
        if (sources_config(cfg, 0, &tc) || sources_config(cfg, 1, &vc)) return -1;
        ldr *lt = ldr_open(&tc);
        if (!lt || !(d->gtrain = gds_open_loader(lt, "data sources"))) return -1;
        if (vc.n_sources) {
            ldr *lv = ldr_open(&vc);
            if (!lv) return ar_error_prefix("validation: ");
            if (!(d->gval = gds_open_loader(lv, "validation sources"))) return -1;
        }
        const int vocab = ldr_vocab(lt);
        if (model_vocab == 0) model_vocab = vocab;
        else if (model_vocab < vocab)
            return ar_errorf("config: model.vocab = %d is smaller than the tokenizer's %d (with [SEG], the markers and data.add_tokens)",
                             model_vocab, vocab);
        d->vocab = model_vocab;
        d->seq_len = tc.T;
        for (int k = 0; k < tc.n_sources; k++)
            log_info("data: %s: %lld samples, weight %g", ldr_source_name(lt, k), (long long)ldr_source_size(lt, k),
                     tc.src[k].weight);
        log_info("data: an epoch is %lld samples; %d decode thread%s", (long long)ldr_rows(lt), tc.threads,
                 tc.threads == 1 ? "" : "s");
        return 0;
    }
    return ar_errorf("config: data.kind = '%s' (expected synthetic, tokens, conversations, grounding or sources)", kind);
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
/* SIGINT / SIGTERM: finish the step, save, stop. A second one ends the process
 * at once (the default action), e.g. a Ctrl-C pressed twice. */
static void on_sigint(int sig) {
    if (g_interrupted) { signal(sig, SIG_DFL); raise(sig); return; }
    g_interrupted = sig;
}


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
 * most one pass over the file; broken rows skipped). NaN when there is none.
 * Several ranks: every rank reads the same batches, each runs the forward of
 * every nranks-th (batches rank, rank + nranks, ...), the sums are added. */
static double validate(run_t *r, int batches) {
    if (batches <= 0 || (r->data.kind == DATA_TOKENS && !r->data.val)) return NAN;
    llama_set_training(r->m, 0);
    ar_rng v; rng_seed(&v, rng_derive(r->seed, 3));
    int64_t rows = r->data.val ? tds_rows(r->data.val) : 0, next = 0;
    if (r->data.kind == DATA_TOKENS && (rows + r->B - 1) / r->B < batches) batches = (int)((rows + r->B - 1) / r->B);
    double sum = 0; long cnt = 0;
    const int R = r->nranks > 1 ? r->nranks : 1;
    int failed = 0;
    for (int i = 0; i < batches && !failed; i++) {
        for (int b = 0; b < r->B && !failed; b++) {
            int *tk = r->tok + (size_t)b * r->T, *tg = r->tgt + (size_t)b * r->T;
            if (r->data.kind == DATA_SYNTH) { synth_sample(&r->data.task, &v, tk, tg); continue; }
            int rc = 1;
            for (int64_t tries = 0; rc == 1 && tries < rows; tries++, next = (next + 1) % rows)
                rc = tds_read_row(r->data.val, next, r->T, tk, tg);
            failed = rc != 0;   /* I/O error, or no usable row */
        }
        if (failed || i % R != r->rank % R) continue;   /* another rank's batch */
        int c = 0;
        float l = llama_forward(r->m, r->tok, r->tgt, r->B, r->T, 0, &c);
        sum += (double)l * c; cnt += c;
    }
    llama_set_training(r->m, 1);
    if (R > 1) {   /* every rank joins the sum, also one that failed */
        double s3[3] = {sum, (double)cnt, failed};
        if (dist_sum(s3, 3)) { log_warn("validation: %s", ar_error()); return NAN; }
        sum = s3[0]; cnt = (long)s3[1]; failed = s3[2] > 0;
    }
    return cnt && !failed ? sum / cnt : NAN;
}

/* ------------------------------------------------------------------------ */
/* model.kind = anyref                                                      */
/* ------------------------------------------------------------------------ */










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
        if (line[n - 1] != '\n') continue;   /* a line cut off by a kill */
        if (sscanf(line, "{\"step\":%lld", &s) == 1 && s > step) continue;
        fwrite(line, 1, (size_t)n, o);
    }
    free(line); fclose(f);
    if (fclose(o) || rename(tmp, path)) return ar_errorf("cannot rewrite %s: %s", path, strerror(errno));
    return 0;
}

static int save(run_t *r, int64_t step) {
    char p[1200];
    r->st.step = step;
    r->st.rng = r->data.rng;
    r->st.epoch = r->data.cur.epoch;
    r->st.data_position = r->data.cur.position;
    r->st.data_skipped = r->data.cur.skipped;
    if (ckpt_path(r->run_dir, step, p, sizeof p)) return -1;
    if (ckpt_save(p, &r->ps, &r->st, 0)) {
        char why[1024], prev[1200];
        snprintf(why, sizeof why, "%s", ar_error());
        for (char *c = why; *c; c++) if (*c == '\n') *c = ' ';   /* HDF5's details hold a ctime() line */
        int have = ckpt_latest(r->run_dir, prev, sizeof prev) == 0;
        return ar_errorf("step %lld: %s; no checkpoint replaced (the newest good one: %s)", (long long)step, why,
                         have ? prev : "none");
    }
    if (ckpt_prune(r->run_dir, step, (int)cfg_int(r->cfg, "train.keep_checkpoints")) < 0)
        log_warn("%s", ar_error());
    log_info("checkpoint %s", p);
    return 0;
}

/* The safetensors file of a checkpoint (file, sharded index or model directory)
 * that holds tensor `name`: writes its path to out. */
static int shard_of(const char *path, const char *name, char *out, size_t cap) {
    char idx[1200];
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        /* the order of st_load_params: safetensors index, file, then PyTorch's */
        static const char *const cand[] = {"model.safetensors.index.json", "model.safetensors",
                                           "pytorch_model.bin.index.json", "pytorch_model.bin"};
        int k = 0;
        for (; k < 3; k++) {
            snprintf(idx, sizeof idx, "%s/%s", path, cand[k]);
            if (stat(idx, &sb) == 0) break;
        }
        if (k == 3) snprintf(idx, sizeof idx, "%s/%s", path, cand[3]);
        if (k == 1 || k == 3) { snprintf(out, cap, "%s", idx); return 0; }
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
static int load_resized_rows(const char *path, ar_params *ps, const char *ours, int layout, int *old_rows) {
    const ar_param *p = params_find(ps, ours);
    char file[1200], name[512];
    if (!p || nm_to_official(ours, layout, name, sizeof name) || shard_of(path, name, file, sizeof file)) return -1;
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
    if (params_upload(ps, p, host)) { free(host); goto out; }
    free(host);
    *old_rows = (int)old;
    rc = 0;
out:
    st_close(f);
    return rc;
}

/* Logs a load report (checkpoints/names.h), one line per component. */
void train_log_names_report(const char *key, const char *path, const nm_report *rep) {
    char buf[8192];
    nm_report_format(rep, buf, sizeof buf);
    for (char *line = buf, *nl; line && *line; line = nl) {
        if ((nl = strchr(line, '\n'))) *nl++ = 0;
        log_info("%s %s: %s", key, path, line);
    }
}

/* Base weights from a Hugging Face / LLaVA / AnyRef checkpoint through the
 * name table (checkpoints/names.h): the LLaMA decoder (model.kind = anyref:
 * only it; the other parts come from sam.init, clip.init, ...). LoRA tensors
 * may be absent (they start as A ~ Kaiming, B = 0, so step 0 is the base
 * model); a larger model.vocab than the checkpoint's adds rows initialised to
 * the mean row. model.strict_load: any unexpected tensor, or a partial LoRA,
 * is an error. */
static int load_init(run_t *r, const char *path) {
    int resize = 0, vocab_layout = NM_LAYOUT_NATIVE;
    /* probe the embedding's row count, under each layout's name */
    for (int l = 0; l < NM_NLAYOUTS; l++) {
        char file[1200], name[512];
        if (nm_to_official("model.embed_tokens.weight", l, name, sizeof name) || shard_of(path, name, file, sizeof file))
            continue;
        st_file *f = st_open(file);
        int i = f ? st_find(f, name) : -1, nd = 0;
        const int64_t *sh = i >= 0 ? st_shape(f, i, &nd) : NULL;
        if (sh && nd == 2 && sh[0] < r->mc.vocab) { resize = 1; vocab_layout = l; }
        st_close(f);
        if (i >= 0) break;
    }
    ar_error_clear();
    static const char *const vocab[] = {"model.embed_tokens.weight", "lm_head.weight"};
    nm_load_opts o = {.components = NM_BIT(NM_LLAMA) | NM_BIT(NM_LORA), .layout = NM_LAYOUT_AUTO,
                      .allow_missing = NM_BIT(NM_LORA), .strict = cfg_bool(r->cfg, "model.strict_load"),
                      .skip = vocab, .n_skip = resize ? 2 : 0};
    nm_report rep;
    if (nm_load(path, &r->ps, &o, &rep)) return ar_error_prefix("model.init: ");
    if (resize) {
        int old = 0;
        if (load_resized_rows(path, &r->ps, "model.embed_tokens.weight", vocab_layout, &old) ||
            load_resized_rows(path, &r->ps, "lm_head.weight", vocab_layout, &old))
            return ar_error_prefix("model.init: ");
        log_info("model.init: vocabulary resized from %d to %d tokens (new rows = mean of the old rows)", old, r->mc.vocab);
    }
    train_log_names_report("model.init", path, &rep);
    return 0;
}

/* model.*, lora.* and train.trainable -> *mc: shared by the run's set-up and
 * the memory plan (train/plan.c), so both size the same decoder. */
int train_llama_cfg(const ar_config *cfg, llama_cfg *mc, int T) {
    mc->dim = (int)cfg_int(cfg, "model.dim"); mc->layers = (int)cfg_int(cfg, "model.layers");
    mc->heads = (int)cfg_int(cfg, "model.heads"); mc->kv_heads = (int)cfg_int(cfg, "model.kv_heads");
    if (mc->kv_heads == 0) mc->kv_heads = mc->heads;
    mc->mlp_hidden = (int)cfg_int(cfg, "model.mlp_hidden");
    mc->max_seq = (int)cfg_int(cfg, "model.max_seq");
    if (mc->max_seq == 0) mc->max_seq = T;
    mc->norm_eps = (float)cfg_float(cfg, "model.norm_eps"); mc->rope_theta = (float)cfg_float(cfg, "model.rope_theta");
    mc->checkpoint_layers = cfg_bool(cfg, "model.checkpoint_layers");
    const char *at = cfg_str(cfg, "model.attention");
    if (strcmp(at, "full") && strcmp(at, "flash"))
        return ar_errorf("config: model.attention = '%s' (expected full or flash)", at);
    mc->flash_attention = !strcmp(at, "flash");
    const char *fw = cfg_str(cfg, "model.frozen_weights");
    if (strcmp(fw, "fp32") && strcmp(fw, "bf16") && strcmp(fw, "fp16"))
        return ar_errorf("config: model.frozen_weights = '%s' (expected fp32, bf16 or fp16)", fw);
    mc->frozen_half = !strcmp(fw, "bf16") ? LLAMA_FROZEN_BF16 : !strcmp(fw, "fp16") ? LLAMA_FROZEN_F16 : 0;
    const char *ac = cfg_str(cfg, "model.activations");
    if (strcmp(ac, "fp32") && strcmp(ac, "bf16"))
        return ar_errorf("config: model.activations = '%s' (expected fp32 or bf16)", ac);
    mc->act_half = !strcmp(ac, "bf16") ? LLAMA_ACT_BF16 : LLAMA_ACT_FP32;
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
    if (mc->frozen_half && mc->train_base)
        return ar_errorf("config: model.frozen_weights = %s stores the frozen LLaMA projections in 16 bits, but "
                         "train.trainable = full trains them all (use lora or lora+embed, or frozen_weights = fp32)", fw);
    return 0;
}

int run_setup(run_t *r, const ar_config *cfg) {
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
    if (train_llama_cfg(cfg, mc, r->T)) return -1;

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
    /* set for every run (a process may run several: the tests), from the key, else $ANYREF_GEMM, else fp32 */
    const char *gemm = cfg_str(cfg, "train.gemm"), *env = getenv("ANYREF_GEMM");
    if (!gemm[0]) gemm = env && env[0] ? env : "fp32";
    if (k_set_gemm_mode(gemm))
        return ar_errorf("config: train.gemm = '%s'%s: the %s backend has %s", gemm,
                         cfg_str(cfg, "train.gemm")[0] ? "" : " (from $ANYREF_GEMM)", k_backend_name(),
                         strcmp(k_backend_name(), "cpu") ? "fp32, tf32, bf16 and fp16" : "fp32, bf16 (oneDNN, or emulated) and fp16 (emulated); tf32 needs make CUDA=1");
    const int want_half = !strcmp(k_gemm_mode(), "bf16") ? LLAMA_FROZEN_BF16 : !strcmp(k_gemm_mode(), "fp16") ? LLAMA_FROZEN_F16 : 0;
    /* (read from the keys: the encoder is set up later) */
    const char *sfw = cfg_str(cfg, "sam_encoder.frozen_weights");
    const int sam_half = strcmp(cfg_str(cfg, "model.kind"), "anyref") || !strcmp(cfg_str(cfg, "sam_encoder.model"), "none")
                             ? 0 : !strcmp(sfw, "bf16") ? LLAMA_FROZEN_BF16 : !strcmp(sfw, "fp16") ? LLAMA_FROZEN_F16 : 0;
    const char *cfw = cfg_str(cfg, "clip.frozen_weights");
    const int clip_half = strcmp(cfg_str(cfg, "model.kind"), "anyref") || cfg_int(cfg, "clip.image_size") <= 0
                              ? 0 : !strcmp(cfw, "bf16") ? LLAMA_FROZEN_BF16 : !strcmp(cfw, "fp16") ? LLAMA_FROZEN_F16 : 0;
    const char *afw = cfg_str(cfg, "audio.frozen_weights");
    const int audio_half = strcmp(cfg_str(cfg, "model.kind"), "anyref") || cfg_int(cfg, "audio.embed_dim") <= 0 ||
                                   cfg_int(cfg, "clip.image_size") <= 0   /* no references: no audio encoder */
                               ? 0 : !strcmp(afw, "bf16") ? LLAMA_FROZEN_BF16 : !strcmp(afw, "fp16") ? LLAMA_FROZEN_F16 : 0;
    if (want_half && r->mc.frozen_half != want_half && sam_half != want_half && clip_half != want_half &&
        audio_half != want_half)
        return ar_errorf("config: train.gemm = %s multiplies the %s-stored frozen LLaMA weights in %s: set "
                         "model.frozen_weights = %s (or sam_encoder. / clip. / audio.frozen_weights = %s; otherwise "
                         "it would be tf32 on the GPU, fp32 here)", k_gemm_mode(), k_gemm_mode(), k_gemm_mode(),
                         k_gemm_mode(), k_gemm_mode());
    const char *ls = cfg_str(cfg, "train.loss_scale");
    r->scale_dynamic = !strcmp(ls, "dynamic") || (!strcmp(ls, "auto") && !strcmp(k_gemm_mode(), "fp16"));
    r->scale_fixed = 1.0;
    if (strcmp(ls, "dynamic") && strcmp(ls, "auto") && strcmp(ls, "off")) {
        char *end;
        r->scale_fixed = strtod(ls, &end);
        if (*end || !(r->scale_fixed > 0) || !isfinite(r->scale_fixed))
            return ar_errorf("config: train.loss_scale = '%s' (expected auto, dynamic, off or a positive number)", ls);
    }
    r->scale_window = (int)cfg_int(cfg, "train.loss_scale_window");
    if (r->scale_dynamic && (r->scale_window < 1 || !(cfg_float(cfg, "train.loss_scale_init") > 0)))
        return ar_errorf("config: dynamic loss scaling needs train.loss_scale_init > 0 and train.loss_scale_window >= 1");
    int threads = (int)cfg_int(cfg, "train.threads");
    if (threads > 0) k_set_num_threads(threads);
    r->seed = (uint64_t)cfg_int(cfg, "train.seed");
    r->rank = dist_rank(); r->nranks = dist_size();
    snprintf(r->run_dir, sizeof r->run_dir, "%s", cfg_str(cfg, "run.dir"));
    if (!r->run_dir[0]) return ar_errorf("config: run.dir is empty");
    snprintf(r->metrics, sizeof r->metrics, "%s/metrics.jsonl", r->run_dir);

    const char *kind = cfg_str(cfg, "model.kind");
    const int is_anyref = r->is_anyref = !strcmp(kind, "anyref");
    if (!is_anyref && strcmp(kind, "llama") != 0) return ar_errorf("config: model.kind = '%s' (expected llama or anyref)", kind);
    if (is_anyref && r->data.kind != DATA_GROUNDING)
        return ar_errorf("config: model.kind = anyref needs masks and image embeddings: set data.kind = grounding");
    if (is_anyref && grounding_setup(r, cfg)) return -1;
    params_init_empty(&r->ps);
    if ((is_anyref ? grounding_declare(r) : llama_declare(mc, &r->ps)) || params_alloc(&r->ps)) return -1;
    if (params_randomize(&r->ps, rng_derive(r->seed, 1))) return -1;
    const char *init = cfg_str(cfg, "model.init");
    if (init[0] && !r->skip_init && load_init(r, init)) return -1;
    if (is_anyref && !r->skip_init && grounding_load(r, cfg)) return -1;
    if (is_anyref) {
        if (grounding_create(r)) return -1;
    } else if (!(r->m = llama_create(mc, &r->ps, r->B, r->T))) {
        return -1;
    }
    r->tok = malloc(sizeof(int) * (size_t)r->B * r->T); r->tgt = malloc(sizeof(int) * (size_t)r->B * r->T);
    if (!r->tok || !r->tgt) return ar_errorf("out of memory");
    return 0;
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
    int loaded = 0, refused = 0;
    if (!strcmp(how, "auto")) {   /* the newest checkpoint that loads, older ones if newer are refused */
        int rc = ckpt_load_latest(r->run_dir, &r->ps, &r->st, 1, path, sizeof path, &refused);
        if (rc < 0) return -1;
        if (rc == 1 && refused)
            return ar_errorf("none of the %d checkpoint(s) in %s/checkpoints loads (see the warnings above); "
                             "move them away or set train.resume = never to start afresh",
                             refused, r->run_dir);
        if (rc == 1) path[0] = 0;
        loaded = rc == 0;
    } else if (strcmp(how, "never") != 0) {
        snprintf(path, sizeof path, "%s", how);
    }
    rng_seed(&r->data.rng, rng_derive(r->seed, 2));
    r->data.cur.seed = rng_derive(r->seed, 2);
    if (!path[0]) {   /* fresh: replace what a previous run left here */
        r->st.step = 0; r->st.seed = r->seed;
        if (r->rank != 0) return 0;   /* rank 0 alone owns the run directory */
        if (remove_checkpoints(r->run_dir)) return -1;
        if (ar_mkdir_parent(r->metrics)) return -1;
        FILE *f = fopen(r->metrics, "w");
        if (!f) return ar_errorf("cannot create %s: %s", r->metrics, strerror(errno));
        fclose(f);
        return 0;
    }
    if (!loaded && ckpt_load(path, &r->ps, &r->st, 1)) return -1;
    if (r->st.seed != r->seed)
        return ar_errorf("%s was written by a run with train.seed = %llu, this config has %llu", path,
                         (unsigned long long)r->st.seed, (unsigned long long)r->seed);
    r->data.rng = r->st.rng;
    r->data.cur.epoch = r->st.epoch;
    r->data.cur.position = r->st.data_position;
    r->data.cur.skipped = r->st.data_skipped;
    if (r->rank == 0 && metrics_truncate(r->metrics, r->st.step)) return -1;
    if (refused)
        log_info("resumed from %s at step %lld, the newest checkpoint that verifies (%d newer one(s) refused)", path,
                 (long long)r->st.step, refused);
    else
        log_info("resumed from %s at step %lld", path, (long long)r->st.step);
    return 0;
}

/* Before any step: the run directory takes a file (create, write, fsync,
 * delete a probe in <run_dir>/checkpoints) and has room for a checkpoint
 * (statvfs against the size of one: an error below one, a warning below the
 * most that exist at once: keep_checkpoints + 1, or every save of the run
 * when keep_checkpoints = 0). */
static int preflight(run_t *r) {
    char dir[1200], probe[1300];
    if (r->rank != 0) return 0;   /* rank 0 alone writes the run directory */
    snprintf(dir, sizeof dir, "%s/checkpoints/", r->run_dir);
    if (ar_mkdir_parent(dir)) return ar_error_prefix("run directory %s is not usable: ", r->run_dir);
    dir[strlen(dir) - 1] = 0;
    snprintf(probe, sizeof probe, "%s/.write_probe.%ld", dir, (long)getpid());
    char block[4096];
    memset(block, 0xA5, sizeof block);
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const char *what = "create";
    int err = 0;
    if (fd < 0) err = errno;
    else if (write(fd, block, sizeof block) != (ssize_t)sizeof block) { err = errno ? errno : EIO; what = "write"; }
    else if (fsync(fd) != 0) { err = errno; what = "fsync"; }
    if (fd >= 0 && close(fd) != 0 && !err) { err = errno; what = "close"; }
    if (fd >= 0 && unlink(probe) != 0 && !err) { err = errno; what = "delete"; }
    if (err)
        return ar_errorf("run directory %s is not writable: cannot %s the probe file %s: %s", r->run_dir, what, probe,
                         strerror(err));
    /* a checkpoint: trainable weights + two AdamW moments, float32, plus HDF5 metadata */
    double need = 12.0 * (double)params_numel(&r->ps, 1) + 64.0 * 1024 * (1 + r->ps.n / 64.0);
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0) {
        log_warn("cannot check the free space of %s: %s", dir, strerror(errno));
        return 0;
    }
    double avail = (double)vs.f_bavail * (double)vs.f_frsize;
    int keep = (int)cfg_int(r->cfg, "train.keep_checkpoints");
    if (avail < need)
        return ar_errorf("not enough space in %s: a checkpoint needs about %.1f MiB, %.1f MiB free", dir,
                         need / 1048576, avail / 1048576);
    /* at most keep + 1 at once (the new one before the oldest goes); keep = 0: every save of the run */
    int every = (int)cfg_int(r->cfg, "train.save_every");
    int saves = every > 0 ? r->steps / every + 1 : 1;
    int want = keep > 0 && keep + 1 < saves ? keep + 1 : saves;
    if (avail < need * want)
        log_warn("little space in %s: %.1f MiB free, room for %d checkpoint(s) of about %.1f MiB; this run may "
                 "need %d at once (train.keep_checkpoints = %d, train.save_every = %d)", dir, avail / 1048576,
                 (int)(avail / need), need / 1048576, want, keep, every);
    return 0;
}

/* The steps of the test hook test.poison_grad_steps; 1 when step (1-based) is one. */
static int poisoned(const ar_config *cfg, int64_t step) {
    const char *s = cfg_str(cfg, "test.poison_grad_steps");
    while (s && *s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        if (v == step) return 1;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return 0;
}

/* The test hook test.stall_rank = "RANK,STEP": 1 when this is that rank and step. */
static int stalled(const ar_config *cfg, int rank, int64_t step) {
    int rk, st;
    const char *s = cfg_str(cfg, "test.stall_rank");
    return s[0] && sscanf(s, "%d,%d", &rk, &st) == 2 && rk == rank && st == step;
}

/* Writes text into path through a .tmp and a rename (a kill leaves the old file or the new one). */
static int write_atomic(const char *path, const char *text) {
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ar_errorf("cannot write %s: %s", tmp, strerror(errno));
    int bad = fputs(text, f) < 0;
    if (fclose(f) != 0 || bad) { unlink(tmp); return ar_errorf("cannot write %s: %s", tmp, strerror(errno)); }
    return ar_commit_file(tmp, path);
}

/* The resume command for a shell: program, "train", the run directory (quoted where needed). */
static void resume_command(const run_t *r, char *out, size_t cap) {
    char q[2200];
    size_t n = 0;
    int plain = 1;
    for (const char *c = r->run_dir; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+,:=", *c)) plain = 0;
    if (plain) {
        snprintf(q, sizeof q, "%s", r->run_dir);
    } else {
        q[n++] = '\'';
        for (const char *c = r->run_dir; *c && n + 5 < sizeof q; c++) {
            if (*c == '\'') { memcpy(q + n, "'\\''", 4); n += 4; }
            else q[n++] = *c;
        }
        q[n++] = '\'';
        q[n] = 0;
    }
    snprintf(out, cap, "%s train %s", train_program, q);
}

/* The checkpoint export/merge read: train.resume = PATH, else the newest in run.dir. */
static int find_checkpoint(run_t *r, char *path, size_t cap) {
    const char *how = cfg_str(r->cfg, "train.resume");
    if (strcmp(how, "auto") != 0 && strcmp(how, "never") != 0) { snprintf(path, cap, "%s", how); return 0; }
    int rc = ckpt_latest(r->run_dir, path, cap);
    if (rc == 1) return ar_errorf("no checkpoint in %s/checkpoints (train first, or set train.resume = PATH)", r->run_dir);
    return rc;
}

void run_teardown(run_t *r) {
    free(r->tok); free(r->tgt);
    dist_reducer_free(r->red); free(r->h_grad); free(r->ev_start); free(r->ev_lo); free(r->ev_hi);
    log_close(r->log);
    if (r->is_anyref) grounding_free(r);
    else llama_free(r->m);
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
    if (run_setup(&r, cfg) || find_checkpoint(&r, ck, sizeof ck) || ckpt_load(ck, &r.ps, &r.st, 0)) goto out;
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
    run_teardown(&r);
    return rc;
}

int train_merge(const ar_config *cfg, const char *out_path) {
    run_t r;
    memset(&r, 0, sizeof r);
    char ck[1200];
    int rc = -1, n;
    if (run_setup(&r, cfg) || find_checkpoint(&r, ck, sizeof ck) || ckpt_load(ck, &r.ps, &r.st, 0)) goto out;
    if ((n = peft_merge(&r.ps, r.mc.lora_alpha, r.mc.lora_rank)) < 0 || peft_save_merged(out_path, &r.ps)) goto out;
    log_info("merged %d LoRA projections of %s (step %lld) into %s", n, ck, (long long)r.st.step, out_path);
    rc = 0;
out:
    run_teardown(&r);
    return rc;
}



/* Data parallel: steps over n micro-batches of the training stream that other
 * ranks train on (the cursor and the synthetic stream then stand where one
 * process reading them all would). A prepared grounding file is judged on its
 * rows' metadata without reading pixels; token rows are read. (Live sources
 * do not come here: gds_dp_setup shares their samples out.) 0, or -1 +
 * ar_error. */
static int skip_micro(run_t *r, int n, int64_t step) {
    for (int i = 0; i < n; i++) {
        if (r->ar) {
            if (gds_skip_batch(r->data.gtrain, &r->data.cur, r->Tf, r->refs ? r->raw_tok : r->tok,
                               r->refs ? r->raw_tgt : r->tgt))
                return ar_error_prefix("step %lld: ", (long long)step + 1);
        } else if (data_next(&r->data, r->B, r->T, r->tok, r->tgt)) {
            return -1;
        }
    }
    return 0;
}

/* The llama gradient hook (last micro-batch of a step): the tensors that
 * became final at this point of backward (r->ev_*) are marked, and the
 * buckets now wholly final start their all-reduce while backward goes on. */
static void grad_ready(void *ctx, int layer) {
    run_t *r = ctx;
    if (!r->hook_live || layer < 0 || layer > r->mc.layers || r->hook_err) return;
    for (int i = r->ev_start[layer]; i < r->ev_start[layer + 1]; i++)
        if (dist_reducer_mark(r->red, r->ev_lo[i], r->ev_hi[i])) { r->hook_err = 1; return; }
}

/* The point of backward after which a trainable tensor's gradient is final,
 * as the llama hook numbers them: l after decoder layer l, L after the final
 * norm and lm_head — and, for the AnyRef step, the SAM mask decoder and the
 * [SEG] head, whose backward runs before the LLM's; -1: only at the end
 * (embeddings, projectors, encoders, the prompt encoder). */
static int grad_event(const char *name, int L, int anyref) {
    if (!strncmp(name, "model.layers.", 13)) {
        int l = atoi(name + 13);
        return l >= 0 && l < L ? l : -1;
    }
    if (!strcmp(name, "model.norm.weight") || !strcmp(name, "lm_head.weight")) return L;
    if (anyref && (strstr(name, "mask_decoder.") || strstr(name, "text_hidden_fcs."))) return L;
    return -1;
}

/* Data parallel: the gradient block's reducer. The CPU backend's block is
 * summed in place by MPI; a device block by NCCL when every rank has a GPU
 * of its own (dist.backend = auto or nccl; make CUDA=1 MPI=1), otherwise
 * through a host copy and MPI. With model.kind = llama (dist.overlap) the
 * buckets start during backward. */
static int setup_reducer(run_t *r) {
    const char *be = cfg_str(r->cfg, "dist.backend");
    const int host = !strcmp(k_backend_name(), "cpu"), force = !strcmp(be, "nccl");
    if (strcmp(be, "auto") && strcmp(be, "mpi") && !force)
        return ar_errorf("config: dist.backend = %s; expected auto, mpi or nccl", be);
    if (force && (host || !dist_nccl_usable()))
        return ar_errorf("config: dist.backend = nccl needs %s", host ? "the CUDA backend (make CUDA=1 MPI=1)"
                         : !dist_nccl_built() ? "NCCL, built in by make CUDA=1 MPI=1"
                         : "a GPU of its own for every rank (ranks on a machine share GPUs)");
    const int nccl = !host && (force || (!strcmp(be, "auto") && dist_nccl_usable()));
    if ((r->nranks <= 1 && !force) || !r->ps.ng) return 0;   /* one rank: nothing to sum (nccl: a one-rank check) */
    size_t bucket = (size_t)(cfg_float(r->cfg, "dist.bucket_mb") * 1048576.0 / sizeof(float));
    if (!bucket) bucket = 1;
    r->red_dev = nccl;
    if (nccl) {
        if (!(r->red = dist_reducer_new_device(r->ps.g, r->ps.ng, bucket))) return -1;
    } else {
        if (!host && !(r->h_grad = malloc(sizeof(float) * r->ps.ng))) return ar_errorf("out of memory");
        if (!(r->red = dist_reducer_new(host ? r->ps.g : r->h_grad, r->ps.ng, bucket))) return -1;
    }
    if (r->rank == 0)
        log_info("gradients: %.2f MiB summed over %d rank%s by %s, buckets of %g MiB", r->ps.ng * 4.0 / 1048576.0,
                 r->nranks, r->nranks == 1 ? "" : "s",
                 nccl ? "NCCL in device memory" : host ? "MPI" : "MPI through a host copy", cfg_float(r->cfg, "dist.bucket_mb"));
    llama *lm = r->ar ? anyref_llama(r->ar) : r->m;
    if ((!host && !nccl) || !lm || !cfg_bool(r->cfg, "dist.overlap")) return 0;
    /* the tensors of each hook event, as ranges of the gradient block (CSR) */
    const int L = r->mc.layers;
    int n = 0;
    for (int i = 0; i < r->ps.n; i++) n += r->ps.p[i].trainable;
    r->ev_start = calloc((size_t)L + 2, sizeof *r->ev_start);
    r->ev_lo = malloc(sizeof *r->ev_lo * (size_t)(n ? n : 1));
    r->ev_hi = malloc(sizeof *r->ev_hi * (size_t)(n ? n : 1));
    if (!r->ev_start || !r->ev_lo || !r->ev_hi) return ar_errorf("out of memory");
    int k = 0;
    for (int e = 0; e <= L; e++) {
        r->ev_start[e] = k;
        for (int i = 0; i < r->ps.n; i++) {
            const ar_param *p = &r->ps.p[i];
            if (p->trainable && grad_event(p->name, L, r->ar != NULL) == e) {
                r->ev_lo[k] = p->goff;
                r->ev_hi[k++] = p->goff + p->numel;
            }
        }
    }
    r->ev_start[L + 1] = k;
    llama_set_grad_hook(lm, grad_ready, r);
    return 0;
}

/* Data parallel: sums the gradient block over the ranks (the CPU backend's
 * block in place; another backend's through a host copy). */
static int reduce_grads(run_t *r) {
    if (!r->red) return 0;
    const int host = !strcmp(k_backend_name(), "cpu") || r->red_dev;
    if (r->hook_err) { r->hook_err = 0; return -1; }
    if (!host) k_download(r->h_grad, r->ps.g, sizeof(float) * r->ps.ng);
    if (dist_reducer_wait(r->red)) return -1;
    if (!host) k_upload(r->ps.g, r->h_grad, sizeof(float) * r->ps.ng);
    return 0;
}

/* train.timing: the wall time of each step's phases, the backend synchronised
 * at every boundary (so that queued device work is charged to the phase that
 * queued it); the run's first step (allocation, warm-up) is left out. */
enum { PH_DATA, PH_ENC, PH_FWD, PH_BWD, PH_OPT, PH_N };
static const char *const ph_names[PH_N] = {"data", "encoders", "forward", "backward", "optimizer"};
typedef struct { int on; double t, cur[PH_N], sum[PH_N]; long n; } step_timer;
static void timer_begin(step_timer *s) {
    if (!s->on) return;
    k_sync();
    s->t = ar_now();
    memset(s->cur, 0, sizeof s->cur);
}
static void timer_mark(step_timer *s, int phase) {
    if (!s->on) return;
    k_sync();
    const double now = ar_now();
    s->cur[phase] += now - s->t;
    s->t = now;
}
static void timer_end(step_timer *s, int count) {
    if (!s->on || !count) return;
    for (int i = 0; i < PH_N; i++) s->sum[i] += s->cur[i];
    s->n++;
}
/* The summary: a log line and run.dir/timing.json (ms per step). */
static int timer_report(const step_timer *s, const char *run_dir) {
    if (!s->on || !s->n) return 0;
    char line[400], json[600], path[1100];
    int nl = snprintf(line, sizeof line, "timing: ms per step over %ld step%s (the first left out; synchronised at "
                      "each phase):", s->n, s->n == 1 ? "" : "s");
    int nj = snprintf(json, sizeof json, "{\"steps\": %ld, \"ms_per_step\": {", s->n);
    double tot = 0;
    for (int i = 0; i < PH_N; i++) {
        const double ms = 1e3 * s->sum[i] / s->n;
        tot += ms;
        nl += snprintf(line + nl, sizeof line - nl, " %s %.1f,", ph_names[i], ms);
        nj += snprintf(json + nj, sizeof json - nj, "\"%s\": %.3f, ", ph_names[i], ms);
    }
    snprintf(line + nl, sizeof line - nl, " total %.1f", tot);
    snprintf(json + nj, sizeof json - nj, "\"total\": %.3f}, \"backend\": \"%s\"}\n", tot, k_backend_name());
    log_info("%s", line);
    snprintf(path, sizeof path, "%s/timing.json", run_dir);
    return write_atomic(path, json);
}

int train_run(const ar_config *cfg) {
    run_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (run_setup(&r, cfg)) goto done;
    dist_set_timeout(cfg_float(cfg, "dist.timeout_s"));
    if (preflight(&r) || start_or_resume(&r)) goto done;
    /* every rank has its start (a rank that failed ends them all: train/main.c) */
    if (dist_barrier() || setup_reducer(&r)) goto done;
    if (r.rank == 0) {
        char cfgpath[1100];
        snprintf(cfgpath, sizeof cfgpath, "%s/config.cfg", r.run_dir);
        char *text = config_text(cfg);
        if (!text || write_atomic(cfgpath, text) || ckpt_state_set_config(&r.st, text)) { free(text); goto done; }
        free(text);
    }
    if (r.rank == 0 && !(r.log = log_open(r.metrics))) goto done;
    if (grounding_open_cache(&r)) goto done;
    if (r.nranks > 1)
        log_info("rank %d of %d: global batch %d ranks x %d micro-batches x %d sequences", r.rank, r.nranks, r.nranks,
                 r.accum, r.B);
    if (r.dp_live && r.rank == 0) {
        const ldr *ld = gds_loader(r.data.gtrain);
        const int per = r.accum * r.B;
        log_info("data: live sources shared out (dist.share_samples): each rank builds a window of about its %d samples "
                 "of a step (up to 1.25x as many as samples break; the last rank %d further), then the ranks agree on "
                 "which were usable; %d sample slots per rank (%.1f MiB)", per, ldr_dp_slack(ld), ldr_dp_slots(ld),
                 ldr_dp_slots(ld) * (double)ldr_slot_bytes(ld) / 1048576.0);
    }
    log_info("anyref train: %s data, llama dim %d, %d layers, %d/%d heads, vocab %d; %zu parameters, %zu trainable",
             cfg_str(cfg, "data.kind"), r.mc.dim, r.mc.layers, r.mc.heads, r.mc.kv_heads, r.mc.vocab,
             params_numel(&r.ps, 0), params_numel(&r.ps, 1));
    const char *gd = k_gemm_detail();
    log_info("backend %s, %d threads, GEMMs %s%s%s%s, activations %.2f MiB, %d x %d x %d tokens per step, steps %lld..%d, run %s",
             k_backend_name(), k_num_threads(), k_gemm_mode(), gd[0] ? " (" : "", gd, gd[0] ? ")" : "",
             llama_activation_bytes(r.m) / 1048576.0, r.accum, r.B, r.T,
             (long long)r.st.step + 1, r.steps, r.run_dir);
    plan_log_run(&r);

    if (r.st.step >= r.steps) {
        log_info("%s is already complete at step %lld (train.steps = %d); nothing to train — raise train.steps to continue",
                 r.run_dir, (long long)r.st.step, r.steps);
        rc = 0;
        goto done;
    }
    g_interrupted = 0;
    void (*old_handler)(int) = signal(SIGINT, on_sigint);
    void (*old_term)(int) = signal(SIGTERM, on_sigint);
    const int max_bad = (int)cfg_int(cfg, "train.max_bad_steps");
    int bad_run = 0;           /* consecutive bad steps so far */
    int64_t first_bad = 0;     /* the first step of that run */
    const int eval_every = (int)cfg_int(cfg, "train.eval_every"), save_every = (int)cfg_int(cfg, "train.save_every");
    const int eval_batches = (int)cfg_int(cfg, "train.eval_batches"), stop_after = (int)cfg_int(cfg, "train.stop_after");
    const double t0 = ar_now();
    const int64_t first = r.st.step;
    if (r.scale_dynamic && !(r.st.loss_scale > 0)) {   /* a fresh run (a resumed one keeps its scale) */
        r.st.loss_scale = cfg_float(cfg, "train.loss_scale_init");
        r.st.loss_scale_good = 0;
    }
    if (!r.scale_dynamic) r.st.loss_scale = 0;
    if (r.scale_dynamic || r.scale_fixed != 1.0)
        log_info("loss scaling: %s, scale %g%s", r.scale_dynamic ? "dynamic" : "fixed",
                 r.scale_dynamic ? r.st.loss_scale : r.scale_fixed,
                 r.scale_dynamic ? "" : " (gradients divided by it before clipping and the update)");
    double loss_ema = NAN, acc = NAN, giou = NAN;
    ar_progress prog;
    progress_start(&prog, r.steps, "train");
    if (r.rank != 0) prog.mode = AR_PROGRESS_OFF;   /* one progress line per run: rank 0's */
    progress_update(&prog, (long)first, "");
    int64_t step = first;
    step_timer tm = {.on = cfg_bool(cfg, "train.timing")};
    while (step < r.steps) {
        timer_begin(&tm);
        double loss = 0, parts[3] = {0, 0, 0};   /* anyref: ce, bce, dice */
        /* loss scaling: backward starts from scale x the loss's gradient, so that small
         * gradients survive fp16 products; they are divided by it again below */
        const double scale = r.scale_dynamic ? r.st.loss_scale : r.scale_fixed;
        params_zero_grad(&r.ps);
        timer_mark(&tm, PH_OPT);
        const int R = r.nranks, micro = r.accum * R;   /* micro-batches in the global step */
        if (r.dp_live) {   /* live sources: the ranks agree on the step's samples, each builds its own */
            if (gds_dp_begin(r.data.gtrain, &r.data.cur)) {
                ar_error_prefix("step %lld: ", (long long)step + 1);
                goto interrupted;
            }
        } else if (skip_micro(&r, r.rank * r.accum, step)) {
            goto interrupted;   /* lower ranks' share */
        }
        for (int a = 0; a < r.accum; a++) {
            /* dropout: a function of the global micro-batch index alone */
            const uint64_t dseed = rng_derive(r.seed, 1000000 + ((uint64_t)step * R + r.rank) * r.accum + a);
            float l;
            if (r.ar) {
                gds_batch gb;
                anyref_batch in;
                anyref_losses L;
                int bad_in = gds_next_batch(r.data.gtrain, &r.data.cur, r.Tf, r.refs ? r.raw_tok : r.tok,
                                            r.refs ? r.raw_tgt : r.tgt, &gb);
                timer_mark(&tm, PH_DATA);
                if (!bad_in) bad_in = grounding_upload(&r, &gb, &in);   /* the frozen encoders run here */
                timer_mark(&tm, PH_ENC);
                if (bad_in) {
                    ar_error_prefix("step %lld: ", (long long)step + 1);
                    goto interrupted;
                }
                ar_error_clear();
                l = anyref_forward(r.ar, &in, dseed, &L);
                timer_mark(&tm, PH_FWD);
                if (isnan(l) && ar_error()[0]) { ar_error_prefix("step %lld: ", (long long)step + 1); goto interrupted; }
                if (isfinite(l)) {
                    r.hook_live = a == r.accum - 1;   /* the step's last backward: gradients become final */
                    anyref_backward(r.ar, (float)(scale / micro));
                    r.hook_live = 0;
                    if ((r.refs && refs_backward(r.refs)) ||
                        (in.dimage_emb && sam_encoder_backward(r.senc, r.d_dimg))) {
                        ar_error_prefix("step %lld: ", (long long)step + 1);
                        goto interrupted;
                    }
                    parts[0] += L.ce / micro; parts[1] += L.bce / micro; parts[2] += L.dice / micro;
                }
                timer_mark(&tm, PH_BWD);
            } else {
                if (data_next(&r.data, r.B, r.T, r.tok, r.tgt)) goto interrupted;
                timer_mark(&tm, PH_DATA);
                int count = 0;
                l = llama_forward(r.m, r.tok, r.tgt, r.B, r.T, dseed, &count);
                timer_mark(&tm, PH_FWD);
                r.hook_live = a == r.accum - 1;   /* the step's last backward: gradients become final */
                if (isfinite(l)) llama_backward(r.m, (float)(scale / micro));
                r.hook_live = 0;
                timer_mark(&tm, PH_BWD);
            }
            loss += l / micro;   /* a NaN/Inf micro-batch makes the step bad (below) */
        }
        if (!r.dp_live && skip_micro(&r, (R - 1 - r.rank) * r.accum, step)) goto interrupted;   /* higher ranks' share */
        if (stalled(cfg, r.rank, step + 1))   /* TEST HOOK test.stall_rank */
            for (int t = 0; t < 3600 && !g_interrupted; t++) sleep(1);
        int any_signal = g_interrupted != 0;
        if (R > 1 || r.red) {   /* the global step: gradients and losses summed over the ranks */
            double v[5] = {loss, parts[0], parts[1], parts[2], any_signal};
            if (reduce_grads(&r) || dist_sum(v, 5)) { ar_error_prefix("step %lld: ", (long long)step + 1); goto interrupted; }
            loss = v[0]; parts[0] = v[1]; parts[1] = v[2]; parts[2] = v[3]; any_signal = v[4] > 0;
        }
        if (poisoned(cfg, step + 1) && r.ps.ng) {   /* TEST HOOK test.poison_grad_steps */
            const float qnan = NAN;
            k_upload(r.ps.g, &qnan, sizeof qnan);
        }
        if (scale != 1.0 && r.ps.ng) scale_inplace(r.ps.g, (float)(1.0 / scale), r.ps.ng);
        float lr = optim_lr_at(&r.oc, (int)step);
        double gnorm = isfinite(loss) ? optim_grad_norm(&r.ps) : NAN;
        /* dynamic loss scaling: non-finite gradients at a scale above 1 are an overflow
         * (skipped, the scale halved, not a bad step); at 1 or below the scale is not what
         * makes them non-finite, so they are a bad step like any other — otherwise a
         * persistent NaN would halve the scale towards 0 forever without ever reaching
         * train.max_bad_steps (DeepSpeed's min_loss_scale = 1 likewise) */
        const int overflow = r.scale_dynamic && isfinite(loss) && !isfinite(gnorm) && scale > 1.0;
        const int bad = !overflow && (!isfinite(loss) || !isfinite(gnorm));
        if (overflow) {   /* dynamic loss scaling: skip the step, halve the scale (not a bad step) */
            params_zero_grad(&r.ps);
            log_info("step %lld: the gradients overflowed at loss scale %g; step skipped, scale %g",
                     (long long)step + 1, scale, scale / 2);
            r.st.loss_scale = scale / 2;
            r.st.loss_scale_good = 0;
        } else if (r.scale_dynamic && !bad && ++r.st.loss_scale_good >= r.scale_window) {
            r.st.loss_scale = scale * 2;
            r.st.loss_scale_good = 0;
        }
        if (overflow) {
        } else if (bad) {   /* skip: no update, gradients dropped */
            params_zero_grad(&r.ps);
            if (!bad_run) first_bad = step + 1;
            bad_run++;
            log_warn("step %lld: %s is %g; step skipped (no update), %d bad step(s) in a row", (long long)step + 1,
                     !isfinite(loss) ? "the loss" : "the gradient norm", !isfinite(loss) ? loss : gnorm, bad_run);
        } else {
            bad_run = 0;
            gnorm = optim_step(&r.ps, &r.oc, (int)step + 1, lr);
        }
        if (k_error()) { ar_errorf("step %lld: %s", (long long)step + 1, k_error()); goto interrupted; }
        timer_mark(&tm, PH_OPT);
        timer_end(&tm, step > first);
        step++;
        int last = step == r.steps;
        double vloss = NAN, vm[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
        acc = NAN;
        if ((eval_every > 0 && step % eval_every == 0) || last) {
            if (r.ar) {
                grounding_validate(&r, eval_batches, vm);
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
                                  "val_loss", "val_ce", "val_bce", "val_dice", "val_giou", "val_ciou", "data_wait_s",
                                  "skipped_records", "bad_steps", "loss_scale"};
            const ldr *ld = gds_loader(r.data.gtrain);
            ldr_stats ls = {0, 0, NAN, 0, 0};
            if (ld) ldr_get_stats(ld, &ls);
            double vals[] = {loss, parts[0], parts[1], parts[2], lr, gnorm, (double)(step - first) * r.accum * r.nranks * r.B * r.T / el,
                             el, (double)r.data.cur.skipped, vm[0], vm[1], vm[2], vm[3], vm[4], vm[5], ls.wait_s,
                             ld ? (double)ls.bad_records : NAN, (double)bad_run, r.st.loss_scale};
            if (log_metrics(r.log, (int)step, keys, vals, 18 + (r.scale_dynamic != 0))) goto interrupted;
        } else {
            const char *keys[] = {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_loss", "accuracy", "bad_steps",
                                  "loss_scale"};
            double vals[] = {loss, lr, gnorm, (double)(step - first) * r.accum * r.nranks * r.B * r.T / el, el, vloss, acc,
                             (double)bad_run, r.st.loss_scale};
            if (log_metrics(r.log, (int)step, keys, vals, 8 + (r.scale_dynamic != 0))) goto interrupted;
        }
        if (max_bad > 0 && bad_run >= max_bad) {
            char prev[1200];
            int have = ckpt_latest(r.run_dir, prev, sizeof prev) == 0;
            ar_errorf("steps %lld..%lld: %d bad steps in a row (NaN/Inf loss or gradients; train.max_bad_steps = %d): "
                      "stopping. The weights are not saved; the newest checkpoint from before the problem is %s. "
                      "Lower train.lr or check the data, then resume",
                      (long long)first_bad, (long long)step, bad_run, max_bad, have ? prev : "none (no checkpoint yet)");
            goto interrupted;
        }
        if (isfinite(loss)) loss_ema = isnan(loss_ema) ? loss : 0.9 * loss_ema + 0.1 * loss;
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
        if (R == 1) any_signal = g_interrupted != 0;   /* one process: a signal up to now counts */
        int stop = any_signal || (stop_after > 0 && step - first >= stop_after);
        /* no checkpoint inside a run of bad steps: the newest stays one from before it */
        if (((save_every > 0 && step % save_every == 0) || last || stop) && !bad_run) {
            if (r.rank == 0 && save(&r, step)) goto interrupted;
        }
        if (last && bad_run)
            log_warn("the run ends in %d bad step(s): no final checkpoint written (the newest is from before them)",
                     bad_run);
        if (stop && !last && r.rank != 0) {   /* rank 0 says it (and saved) */
            progress_finish(&prog);
            rc = 0;
            goto restore;
        }
        if (stop && !last) {
            progress_finish(&prog);
            char cmd[2400], prev[1200];
            resume_command(&r, cmd, sizeof cmd);
            if (bad_run && ckpt_latest(r.run_dir, prev, sizeof prev) == 0)
                log_info("%s after step %lld, in a run of bad steps: not saved, %s is the newest checkpoint",
                         g_interrupted ? "interrupted" : "stopped", (long long)step, prev);
            else
                log_info("%s after step %lld (checkpoint saved)", g_interrupted == SIGTERM ? "terminated (SIGTERM)"
                         : g_interrupted ? "interrupted (SIGINT)" : "stopped (train.stop_after)", (long long)step);
            log_info("resume with: %s", cmd);
            rc = 0;
            goto restore;
        }
    }
    progress_finish(&prog);
    if (r.red && r.rank == 0) {
        double w; long rounds, early, started; size_t bytes;
        dist_reducer_stats(r.red, &w, &rounds, &bytes, &early, &started);
        log_info("gradient all-reduce: %ld steps of %.2f MiB over %d ranks, buckets of %g MiB: %ld of %ld started "
                 "during backward; %.3f s waited after backward (%.2f ms per step)", rounds, bytes / 1048576.0,
                 r.nranks, cfg_float(cfg, "dist.bucket_mb"), early, started, w, rounds ? 1e3 * w / rounds : 0.0);
    }
    if (r.ar && gds_loader(r.data.gtrain)) {   /* live sources: the samples built, against those trained */
        ldr_stats ls;
        ldr_get_stats(gds_loader(r.data.gtrain), &ls);
        double v[2] = {(double)ls.built, (double)(r.steps - first) * r.accum * r.B};
        const double mine = v[0];
        if (r.nranks > 1 && dist_sum(v, 2)) goto interrupted;
        if (r.rank == 0)
            log_info("data: %s%d rank%s built %.0f samples for the %.0f trained on (%.3f each, the samples prefetched "
                     "past the last step included%s)", r.nranks > 1 ? "the " : "",
                     r.nranks, r.nranks > 1 ? "s" : "", v[0], v[1], v[1] > 0 ? v[0] / v[1] : 0.0,
                     r.nranks == 1 ? "" : r.dp_live ? "; dist.share_samples" : "; every rank decoding every sample");
        if (r.nranks > 1) log_info("data: rank %d built %.0f samples", r.rank, mine);
    }
    {
        double el = ar_now() - t0;
        if (r.rank == 0 && timer_report(&tm, r.run_dir)) goto restore;
        log_info("done: steps %lld..%d in %.1f s (%.0f tokens/s), final loss %.4f",
                 (long long)first + 1, r.steps, el, (double)(r.steps - first) * r.accum * r.nranks * r.B * r.T / (el > 0 ? el : 1), loss_ema);
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
    signal(SIGTERM, old_term);
done:
    run_teardown(&r);
    return rc;
}
