/* train/demo.c — see demo.h.
 * The task: BOS d1..dk SEP <answer> EOS over digit tokens, where the answer is
 * the prompt reversed ("reverse"), copied ("copy") or sorted ("sort"). Labels
 * are -100 on the prompt, so the loss is on the answer only, as in instruction
 * tuning. Accuracy is exact match of greedy decoding on fresh samples. */
#include "train/demo.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "kernels/kernels.h"
#include "model/llama.h"
#include "optim/optim.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const cfg_key demo_schema[] = {
    {"model.dim", CFG_INT, "64", "hidden size"},
    {"model.layers", CFG_INT, "2", "decoder layers"},
    {"model.heads", CFG_INT, "4", "attention heads"},
    {"model.kv_heads", CFG_INT, "2", "key/value heads (grouped-query attention)"},
    {"model.mlp_hidden", CFG_INT, "176", "SwiGLU hidden size"},
    {"model.norm_eps", CFG_FLOAT, "1e-6", "RMSNorm epsilon"},
    {"model.rope_theta", CFG_FLOAT, "10000", "RoPE base"},
    {"model.lora_rank", CFG_INT, "0", "LoRA rank on q_proj/v_proj (0: none)"},
    {"model.lora_alpha", CFG_FLOAT, "16", "LoRA alpha (scale = alpha / rank)"},
    {"model.lora_dropout", CFG_FLOAT, "0.05", "dropout on the LoRA input"},
    {"data.task", CFG_STRING, "reverse", "reverse | copy | sort"},
    {"data.digits", CFG_INT, "6", "digits in each prompt"},
    {"data.base", CFG_INT, "10", "number of distinct digit tokens"},
    {"train.steps", CFG_INT, "400", "optimiser steps"},
    {"train.batch_size", CFG_INT, "32", "sequences per step"},
    {"train.lr", CFG_FLOAT, "3e-3", "peak learning rate"},
    {"train.schedule", CFG_STRING, "linear", "linear | cosine | constant (after warm-up)"},
    {"train.warmup_steps", CFG_INT, "30", "linear warm-up steps"},
    {"train.weight_decay", CFG_FLOAT, "0.0", "AdamW decoupled weight decay (matrices only)"},
    {"train.beta1", CFG_FLOAT, "0.9", "AdamW beta1"},
    {"train.beta2", CFG_FLOAT, "0.95", "AdamW beta2"},
    {"train.eps", CFG_FLOAT, "1e-8", "AdamW epsilon"},
    {"train.grad_clip", CFG_FLOAT, "1.0", "global gradient-norm clip (0: off)"},
    {"train.seed", CFG_INT, "1337", "seed for weights, data and dropout"},
    {"train.threads", CFG_INT, "0", "CPU threads (0: all)"},
    {"train.log_every", CFG_INT, "10", "steps between metric lines"},
    {"train.eval_every", CFG_INT, "100", "steps between accuracy evaluations (0: end only)"},
    {"train.eval_samples", CFG_INT, "256", "fresh sequences per evaluation"},
    {"train.metrics", CFG_STRING, "runs/demo/metrics.jsonl", "JSONL metrics file (empty: none)"},
    {"train.min_accuracy", CFG_FLOAT, "0", "fail (exit 1) if the final accuracy is below this"},
};
const int demo_schema_len = (int)(sizeof demo_schema / sizeof demo_schema[0]);

typedef struct { int task, k, base, bos, sep, eos, vocab, T, prompt_len; } task_t;
enum { TASK_REVERSE, TASK_COPY, TASK_SORT };

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* One sequence: tokens[T] and targets[T] (next-token labels, -100 on the prompt). */
static void make_sample(const task_t *t, ar_rng *r, int *tok, int *tgt) {
    int d[64], a[64];
    for (int i = 0; i < t->k; i++) d[i] = (int)rng_below(r, (uint64_t)t->base);
    for (int i = 0; i < t->k; i++) a[i] = t->task == TASK_REVERSE ? d[t->k - 1 - i] : d[i];
    if (t->task == TASK_SORT) qsort(a, (size_t)t->k, sizeof(int), cmp_int);
    int n = 0;
    tok[n++] = t->bos;
    for (int i = 0; i < t->k; i++) tok[n++] = d[i];
    tok[n++] = t->sep;
    for (int i = 0; i < t->k; i++) tok[n++] = a[i];
    tok[n++] = t->eos;
    /* position i predicts token i+1; only answer tokens and EOS are supervised */
    for (int i = 0; i < t->T; i++)
        tgt[i] = (i + 1 < t->T && i + 1 >= t->prompt_len) ? tok[i + 1] : -100;
}

/* Greedy decoding of the answer for B fresh prompts; returns exact-match accuracy. */
static double evaluate(llama *m, const task_t *t, int B, int samples, uint64_t seed) {
    int *tok = malloc(sizeof(int) * (size_t)B * t->T), *tgt = malloc(sizeof(int) * (size_t)B * t->T);
    int *ref = malloc(sizeof(int) * (size_t)B * t->T);
    if (!tok || !tgt || !ref) { free(tok); free(tgt); free(ref); return NAN; }
    ar_rng r; rng_seed(&r, seed);
    int correct = 0, total = 0;
    float *host = malloc(sizeof(float) * (size_t)t->vocab);
    for (int done = 0; done < samples; done += B) {
        for (int b = 0; b < B; b++) make_sample(t, &r, ref + b * t->T, tgt + b * t->T);
        memcpy(tok, ref, sizeof(int) * (size_t)B * t->T);
        for (int b = 0; b < B; b++)   /* blank the answer so nothing leaks */
            for (int i = t->prompt_len; i < t->T; i++) tok[b * t->T + i] = t->eos;
        for (int i = t->prompt_len; i < t->T; i++) {
            llama_forward(m, tok, NULL, B, t->T, 0, NULL);
            const float *lg = llama_logits(m);
            for (int b = 0; b < B; b++) {
                k_download(host, lg + ((size_t)b * t->T + i - 1) * t->vocab, sizeof(float) * (size_t)t->vocab);
                int best = 0;
                for (int v = 1; v < t->vocab; v++) if (host[v] > host[best]) best = v;
                tok[b * t->T + i] = best;
            }
        }
        for (int b = 0; b < B && done + b < samples; b++) {
            correct += memcmp(tok + b * t->T, ref + b * t->T, sizeof(int) * (size_t)t->T) == 0;
            total++;
        }
    }
    free(tok); free(tgt); free(ref); free(host);
    return total ? (double)correct / total : NAN;
}

int demo_train(const ar_config *cfg) {
    task_t t = {0};
    const char *task = cfg_str(cfg, "data.task");
    if (!strcmp(task, "reverse")) t.task = TASK_REVERSE;
    else if (!strcmp(task, "copy")) t.task = TASK_COPY;
    else if (!strcmp(task, "sort")) t.task = TASK_SORT;
    else return ar_errorf("config: data.task = '%s' (expected reverse, copy or sort)", task);
    t.k = (int)cfg_int(cfg, "data.digits"); t.base = (int)cfg_int(cfg, "data.base");
    if (t.k < 1 || t.k > 64) return ar_errorf("config: data.digits = %d (expected 1..64)", t.k);
    if (t.base < 2 || t.base > 1000) return ar_errorf("config: data.base = %d (expected 2..1000)", t.base);
    t.bos = t.base; t.sep = t.base + 1; t.eos = t.base + 2; t.vocab = t.base + 3;
    t.T = 2 * t.k + 3; t.prompt_len = t.k + 2;

    llama_cfg mc = {
        .vocab = t.vocab, .dim = (int)cfg_int(cfg, "model.dim"), .layers = (int)cfg_int(cfg, "model.layers"),
        .heads = (int)cfg_int(cfg, "model.heads"), .kv_heads = (int)cfg_int(cfg, "model.kv_heads"),
        .mlp_hidden = (int)cfg_int(cfg, "model.mlp_hidden"), .max_seq = t.T,
        .norm_eps = (float)cfg_float(cfg, "model.norm_eps"), .rope_theta = (float)cfg_float(cfg, "model.rope_theta"),
        .lora_rank = (int)cfg_int(cfg, "model.lora_rank"), .lora_alpha = (float)cfg_float(cfg, "model.lora_alpha"),
        .lora_dropout = (float)cfg_float(cfg, "model.lora_dropout"), .train_base = 1,
    };
    if (mc.dim < 2 || mc.layers < 1 || mc.heads < 1 || mc.kv_heads < 1 || mc.mlp_hidden < 1)
        return ar_errorf("config: model sizes must be positive (dim %d, layers %d, heads %d, kv_heads %d, mlp_hidden %d)",
                         mc.dim, mc.layers, mc.heads, mc.kv_heads, mc.mlp_hidden);
    if (mc.lora_rank < 0 || mc.lora_rank > 4096) return ar_errorf("config: model.lora_rank = %d (expected 0..4096)", mc.lora_rank);
    if (mc.lora_dropout < 0 || mc.lora_dropout >= 1) return ar_errorf("config: model.lora_dropout = %g (expected [0,1))", mc.lora_dropout);
    int steps = (int)cfg_int(cfg, "train.steps"), B = (int)cfg_int(cfg, "train.batch_size");
    if (steps < 1 || B < 1) return ar_errorf("config: train.steps (%d) and train.batch_size (%d) must be >= 1", steps, B);
    ar_optim_cfg oc = {
        .lr = (float)cfg_float(cfg, "train.lr"), .beta1 = (float)cfg_float(cfg, "train.beta1"),
        .beta2 = (float)cfg_float(cfg, "train.beta2"), .eps = (float)cfg_float(cfg, "train.eps"),
        .weight_decay = (float)cfg_float(cfg, "train.weight_decay"), .grad_clip = (float)cfg_float(cfg, "train.grad_clip"),
        .warmup_steps = (int)cfg_int(cfg, "train.warmup_steps"), .total_steps = steps,
    };
    if ((oc.schedule = optim_parse_schedule(cfg_str(cfg, "train.schedule"))) < 0) return ar_error_prefix("config: train.schedule: ");
    int threads = (int)cfg_int(cfg, "train.threads");
    if (threads > 0) k_set_num_threads(threads);
    uint64_t seed = (uint64_t)cfg_int(cfg, "train.seed");
    int log_every = (int)cfg_int(cfg, "train.log_every"), eval_every = (int)cfg_int(cfg, "train.eval_every");
    int eval_samples = (int)cfg_int(cfg, "train.eval_samples");

    ar_params ps; params_init_empty(&ps);
    llama *m = NULL;
    ar_log *lg = NULL;
    int *tok = NULL, *tgt = NULL, rc = -1;
    if (llama_declare(&mc, &ps) || params_alloc(&ps)) goto done;
    params_randomize(&ps, rng_derive(seed, 1));
    if (!(m = llama_create(&mc, &ps, B, t.T))) goto done;
    const char *mpath = cfg_str(cfg, "train.metrics");
    if (mpath[0] && (ar_mkdir_parent(mpath) || !(lg = log_open(mpath)))) goto done;
    tok = malloc(sizeof(int) * (size_t)B * t.T); tgt = malloc(sizeof(int) * (size_t)B * t.T);
    if (!tok || !tgt) { ar_errorf("demo: out of memory"); goto done; }

    log_info("anyref demo: task '%s', %d digits; decoder dim %d, %d layers, %d/%d heads; %zu parameters (%zu trainable)",
             task, t.k, mc.dim, mc.layers, mc.heads, mc.kv_heads, params_numel(&ps, 0), params_numel(&ps, 1));
    log_info("backend %s, %d threads, activations %.2f MiB, batch %d x %d tokens, %d steps",
             k_backend_name(), k_num_threads(), llama_activation_bytes(m) / 1048576.0, B, t.T, steps);
    if (lg) log_info("metrics -> %s", mpath);

    ar_rng data; rng_seed(&data, rng_derive(seed, 2));
    ar_progress prog; progress_start(&prog, steps, "train");
    double t0 = ar_now(), loss_ema = NAN, acc = NAN;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) make_sample(&t, &data, tok + b * t.T, tgt + b * t.T);
        int count = 0;
        float loss = llama_forward(m, tok, tgt, B, t.T, rng_derive(seed, 1000 + (uint64_t)step), &count);
        if (!isfinite(loss)) { ar_errorf("step %d: loss is %g (diverged); lower train.lr", step + 1, loss); goto done_prog; }
        params_zero_grad(&ps);
        llama_backward(m, 1.0f);
        float lr = optim_lr_at(&oc, step);
        double gnorm = optim_step(&ps, &oc, step + 1, lr);
        if (k_error()) { ar_errorf("step %d: %s", step + 1, k_error()); goto done_prog; }
        loss_ema = isnan(loss_ema) ? loss : 0.9 * loss_ema + 0.1 * loss;
        int last = step + 1 == steps;
        if ((eval_every > 0 && (step + 1) % eval_every == 0) || last)
            acc = evaluate(m, &t, B, eval_samples, rng_derive(seed, 3));
        if ((log_every > 0 && (step + 1) % log_every == 0) || last) {
            double el = ar_now() - t0;
            const char *keys[] = {"loss", "lr", "grad_norm", "tokens_per_s", "accuracy"};
            double vals[] = {loss, lr, gnorm, (double)(step + 1) * B * t.T / el, acc};
            if (lg && log_metrics(lg, step + 1, keys, vals, 5)) goto done_prog;
        }
        char extra[128];
        if (!isnan(acc)) snprintf(extra, sizeof extra, "loss %.4f lr %.2e acc %.3f", loss_ema, lr, acc);
        else snprintf(extra, sizeof extra, "loss %.4f lr %.2e", loss_ema, lr);
        progress_update(&prog, step + 1, extra);
    }
    progress_finish(&prog);
    double el = ar_now() - t0;
    log_info("done: %d steps in %.1f s (%.0f tokens/s); final loss %.4f; greedy exact-match accuracy %.3f on %d fresh sequences",
             steps, el, (double)steps * B * t.T / el, loss_ema, acc, eval_samples);
    double need = cfg_float(cfg, "train.min_accuracy");
    if (acc < need) { ar_errorf("final accuracy %.3f is below train.min_accuracy %.3f", acc, need); goto done; }
    rc = 0;
    goto done;
done_prog:
    progress_finish(&prog);
done:
    free(tok); free(tgt);
    log_close(lg);
    llama_free(m);
    params_free(&ps);
    return rc;
}
