/* train/run.h — the state of one `anyref train` run, shared by train/train.c
 * (the loop, data sources, checkpoints, the LLaMA path) and
 * train/grounding.c (model.kind = anyref: the AnyRef step's batches, images
 * and references as tokens, the image encoders, the feature cache). Private
 * to train/. */
#ifndef ANYREF_TRAIN_RUN_H
#define ANYREF_TRAIN_RUN_H
#include "checkpoints/checkpoint.h"
#include "checkpoints/names.h"
#include "core/config.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/feature_cache.h"
#include "data/grounding_dataset.h"
#include "data/synthetic.h"
#include "data/token_dataset.h"
#include "model/anyref.h"
#include "model/llama.h"
#include "model/references.h"
#include "model/sam_image_encoder.h"
#include "optim/optim.h"
#include "train/plan.h"

/* Data sources */
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
    int dp_live;        /* several ranks on a live source: each builds its own share (gds_dp_setup) */
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
    /* data parallel (core/dist.h): this process is rank `rank` of `nranks` */
    int rank, nranks;
    struct dist_reducer *red;   /* the gradient block's all-reduce (nranks > 1) */
    float *h_grad;              /* host copy of the gradients when the backend is not the CPU's */
    int red_dev;                /* red sums the device block by NCCL (no host copy) */
    int scale_dynamic;          /* dynamic loss scaling (train.loss_scale); the scale lives in st */
    double scale_fixed;         /* a fixed loss scale (1: none) */
    int scale_window;           /* finite steps before a dynamic scale doubles */
    int *ev_start;              /* [layers+2]: the gradient ranges final at hook event e are ev_start[e] .. ev_start[e+1]-1 */
    size_t *ev_lo, *ev_hi;      /* those ranges of the gradient block (floats) */
    int hook_live, hook_err;    /* the llama gradient hook starts buckets (last micro-batch only) */
} run_t;

/* train/plan.c: the plan shape of a set-up run (exactly what it allocates). */
int  plan_shape_from_run(const run_t *r, plan_shape *s);
/* logs the run's memory plan, one block of lines */
void plan_log_run(const run_t *r);

/* train/train.c */
int  run_setup(run_t *r, const ar_config *cfg);   /* config -> model, data, buffers; -1 + ar_error */
void run_teardown(run_t *r);
/* Logs a name-table load report (checkpoints/names.h), one line per component. */
void train_log_names_report(const char *key, const char *path, const nm_report *rep);

/* train/grounding.c (model.kind = anyref) */
int  grounding_setup(run_t *r, const ar_config *cfg);  /* the step's config from the keys and the data */
/* seg.lambda, sam.* and loss.* -> *ac (the step's sizes and weights) */
void grounding_step_keys(const ar_config *cfg, anyref_cfg *ac);
/* sam_encoder.* -> *e (trainable included, out_chans not); *present = 0 for model none */
int  grounding_sam_encoder_cfg(const ar_config *cfg, sam_encoder_cfg *e, int *present);
int  grounding_refs_cfg(const ar_config *cfg, int llm_dim, int fbank_h, int fbank_w, refs_cfg *rc);
/* model.*, lora.*, train.trainable -> *mc (vocab and T are the caller's; max_seq 0 becomes T) */
int  train_llama_cfg(const ar_config *cfg, llama_cfg *mc, int T);
int  grounding_declare(run_t *r);                      /* every tensor of the step and its encoders */
int  grounding_load(run_t *r, const ar_config *cfg);   /* sam.init, sam_encoder.init, clip.init, audio.init */
int  grounding_create(run_t *r);                       /* the step, encoders and batch buffers */
void grounding_free(run_t *r);
/* The data batch (tokens already in r->tok/tgt, or r->raw_* with splicing)
 * into backend memory and the step's input *in. 0, or -1 + ar_error. */
int  grounding_upload(run_t *r, const gds_batch *gb, anyref_batch *in);
/* Validation: total, ce, bce, dice, gIoU, cIoU (NaN without validation data). */
void grounding_validate(run_t *r, int batches, double out[6]);
int  grounding_open_cache(run_t *r);                   /* data.cache, if set */
/* Prepares another data set (evaluation) for this run's step: SAM inputs,
 * the reader settings (the run's [SEG], batch and size limit) and the
 * splicing check. 0, or -1 + ar_error. */
int  grounding_attach(run_t *r, grounding_dataset *g);

/* train/train.c: data.kind = sources — a loader over set k (0..3: source.*,
 * source2.* ...) at `split`, in order (evaluation), attached to the run.
 * every_sentence: a refer segmentation set gives one sample per (ref,
 * sentence), as LISA's validation counts (ldr_source.every_sentence).
 * NULL + ar_error; *present = 0 (and NULL) when set k is not configured. */
grounding_dataset *run_open_eval_set(run_t *r, int k, const char *split, int every_sentence, int *present);
#endif
