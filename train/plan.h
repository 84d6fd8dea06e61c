/* train/plan.h — the memory plan of a training run (`anyref plan CFG`, and
 * the block `anyref train` prints at start-up): the device memory the step
 * will hold, by part, computed WITHOUT allocating the model.
 *
 *   weights      every declared tensor (float32), frozen / trainable, per
 *                component (LLM, CLIP, mm_projector, SAM image encoder, SAM
 *                prompt encoder + mask decoder, [SEG] head, ImageBind audio,
 *                audio_projector): the same *_declare calls the run makes,
 *                into a registry that is never allocated
 *   optimizer    gradients + AdamW m and v of the trainable tensors
 *   activations  per module, from the modules' own sizing code
 *                (llama_plan_activation_bytes, clip_vit_plan_bytes, ...: the
 *                functions their create calls use to size their buffers)
 *   workspace    the step's batch buffers (image embeddings, masks, encoder
 *                inputs) from the same table grounding_create allocates from,
 *                the decoder's token / position buffers, lm_head's bf16 copy
 *                (train.gemm = bf16) and the frozen bf16 SAM encoder's bf16
 *                attention buffers (sam_encoder_kernel_workspace_bytes)
 * Other backend-internal workspace (cuBLAS, OpenBLAS threads, the 16-bit
 * products' rounded operands) and host memory (data loader, decoded images)
 * are not counted.
 *
 * The shape comes either from a set-up run (plan_shape_from_run: exactly what
 * the run allocates) or from the config alone (plan_shape_from_config: the
 * data-dependent sizes — vocabulary, largest image, masks per sample — from
 * the keys when set, else documented assumptions listed in shape.notes).
 * Depends on train/run.h, model/, core/config. */
#ifndef ANYREF_TRAIN_PLAN_H
#define ANYREF_TRAIN_PLAN_H
#include <stdio.h>
#include "core/config.h"
#include "model/anyref.h"
#include "model/llama.h"
#include "model/references.h"
#include "model/sam_image_encoder.h"

typedef struct {
    int is_anyref;
    llama_cfg llm;              /* the decoder (is_anyref: = ac.llm) */
    anyref_cfg ac;              /* is_anyref */
    int B, T, max_seg;
    int use_refs;               /* CLIP / projector / ImageBind (clip.image_size > 0) */
    refs_cfg refs;
    size_t clip_n, fbank_n;     /* floats per CLIP input image, per audio input */
    int use_senc;               /* SAM image encoder (sam_encoder.model != none) */
    sam_encoder_cfg senc;
    size_t sam_n;               /* floats per SAM input image */
    int gemm_bf16;              /* train.gemm = bf16: lm_head's bf16 copy (model/llama.c) */
    char notes[1024];           /* assumptions made (plan_shape_from_config) */
} plan_shape;

/* The step's batch buffers (grounding_create allocates each of these). */
enum { PB_IMG, PB_MASK, PB_SAM_IN, PB_DIMG, PB_CLIP, PB_CROP, PB_BOXES, PB_FBANK, PB_N };
/* floats of each batch buffer (0: not allocated). */
void plan_batch_floats(const plan_shape *s, size_t n[PB_N]);

enum { PC_LLM, PC_CLIP, PC_PROJ, PC_SAM_ENC, PC_SAM_DEC, PC_SEG_HEAD, PC_AUDIO, PC_AUDIO_PROJ, PC_OTHER, PC_N };
extern const char *const plan_component_name[PC_N];

typedef struct {
    size_t frozen[PC_N], trainable[PC_N];   /* floats (a bf16-stored value counts half) */
    size_t nw, ng, nw16;                    /* floats: the weight block, the trainable blocks; bf16 values */
    /* activations (bytes) */
    size_t act_llm, act_seg_head, act_decoder, act_step;   /* anyref_mem (llama only: act_llm) */
    size_t act_clip, act_proj, act_audio, act_refs;        /* refs_mem */
    size_t act_sam_enc;
    size_t workspace;                                      /* batch buffers + token buffers (bytes) */
    size_t ws_sam_attn;                                    /* of which the SAM encoder's bf16 attention */
    size_t weights_bytes, grads_bytes, adam_bytes, act_bytes, total;
} mem_plan;

/* 0, or -1 + ar_error. */
int  plan_shape_from_config(const ar_config *cfg, plan_shape *s);
/* (plan_shape_from_run, for a set-up run: train/run.h.)
 * The plan of shape s (declares, never allocates). 0, or -1 + ar_error. */
int  plan_compute(const plan_shape *s, mem_plan *p);
/* One block of lines: weights per component, optimizer, activations, workspace, total. */
void plan_print(const plan_shape *s, const mem_plan *p, FILE *f, const char *indent);
/* `anyref plan CFG [k=v ...]`: 0, or -1 + ar_error. */
int  plan_main_cfg(const ar_config *cfg, FILE *f);
#endif
