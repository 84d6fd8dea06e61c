/* checkpoints/names.h — the one table from the official tensor names of every
 * published checkpoint layout to the registry's names, and the loader that
 * uses it (per-component report of missing / unexpected tensors, strict mode).
 *
 * The registry already names each tensor as its component's own published
 * checkpoint does (layout NM_LAYOUT_NATIVE is the identity):
 *   llama        model.embed_tokens.weight, model.layers.{i}.*, model.norm.weight,
 *                lm_head.weight            (LLaMA / LLaVA shards, HF names)
 *   lora         model.layers.{i}.<proj>.lora_{A,B}.weight
 *   text_fcs     model.text_hidden_fcs.0.{0,2}.{weight,bias}
 *   sam_encoder  image_encoder.*            (sam_vit_h_4b8939.pth)
 *   sam_prompt   prompt_encoder.*           (idem)
 *   sam_decoder  mask_decoder.*             (idem)
 *   clip         vision_model.*             (CLIP pytorch_model.bin)
 *   mm_projector model.mm_projector.*       (LLaVA shards)
 *   audio        modality_{preprocessors,trunks,heads}.audio.*  (imagebind_huge.pth)
 *   audio_proj   model.audio_projector.*
 * (box and image-crop references have no parameters: RoIAlign and pooling.)
 *
 * The AnyRef layouts (jwh97nn/AnyRef model/anyref.py: AnyRefForCausalLM, LISA-
 * derived; train.py: PEFT LoRA with modules_to_save):
 *   NM_LAYOUT_ANYREF     AnyRefForCausalLM.state_dict() (merge_lora.py ->
 *                        save_pretrained): SAM under model.visual_model., CLIP
 *                        under model.vision_tower.vision_tower., ImageBind under
 *                        model.audio_encoder.; the rest as native.
 *   NM_LAYOUT_PEFT       PEFT's saved adapter (get_peft_model_state_dict) and
 *                        LLaVA/LISA's non_lora_trainables: "base_model.model."
 *                        + the ANYREF name (LoRA as ...lora_A.weight).
 *   NM_LAYOUT_PEFT_FULL  PeftModel.state_dict() under peft 0.4 (the version
 *                        LISA/AnyRef pin; LISA's zero_to_fp32 pytorch_model.bin):
 *                        "base_model.model." + ANYREF, LoRA as lora_A.default.weight,
 *                        AnyRef's modules_to_save as <module>.modules_to_save.default.*
 *                        (their frozen copies <module>.original_module.* unused).
 *
 * Official tensors this implementation documents as unused (reported, never
 * an error): HF rotary_emb.inv_freq buffers; SAM prompt_encoder point_embeddings,
 * not_a_point_embed, mask_downscaling; CLIP text_model, text_projection,
 * visual_projection, logit_scale, position_ids; ImageBind's other modalities and
 * modality_postprocessors; AnyRef loc_embeddings; PEFT original_module copies.
 *
 * Depends on checkpoints/safetensors.h (st_list_names, st_load_params_ex),
 * core/error.h, core/log.h, model/params.h. */
#ifndef ANYREF_CHECKPOINTS_NAMES_H
#define ANYREF_CHECKPOINTS_NAMES_H
#include <stddef.h>
#include "model/params.h"

typedef enum {
    NM_LLAMA, NM_LORA, NM_TEXT_FCS, NM_SAM_ENCODER, NM_SAM_PROMPT, NM_SAM_DECODER,
    NM_CLIP, NM_MM_PROJECTOR, NM_AUDIO, NM_AUDIO_PROJECTOR,
    NM_NCOMP
} nm_component;
#define NM_UNKNOWN (-1)   /* a name the table does not know */
#define NM_UNUSED  (-2)   /* an official tensor documented as unused here */
#define NM_BIT(c) (1u << (c))
#define NM_ALL ((1u << NM_NCOMP) - 1u)

typedef enum {
    NM_LAYOUT_NATIVE, NM_LAYOUT_ANYREF, NM_LAYOUT_PEFT, NM_LAYOUT_PEFT_FULL,
    NM_NLAYOUTS
} nm_layout;
#define NM_LAYOUT_AUTO (-1)   /* per tensor: the first layout whose name the checkpoint holds */

const char *nm_component_name(int c);   /* "llama", ...; "unknown" / "unused" */
const char *nm_layout_name(int l);      /* "native", "anyref", "peft", "peft_full", "auto" */
/* Parses a layout name (as nm_layout_name); -1 + ar_error when unknown. */
int nm_layout_from_name(const char *s, int *layout);

/* The component of a registry name, or NM_UNKNOWN. */
int nm_component_of(const char *ours);

/* Registry name -> the official name in layout l. 0, or -1 + ar_error (an
 * unknown name, or out too small). */
int nm_to_official(const char *ours, int layout, char *out, size_t cap);

/* Official name (any layout) -> registry name. Returns the component (>= 0;
 * *layout, if not NULL, says which layout the name is written in), NM_UNUSED
 * for a documented-unused tensor or NM_UNKNOWN; out holds the mapped name
 * (for NM_UNKNOWN / NM_UNUSED, the name with the layout prefixes removed). */
int nm_from_official(const char *official, char *out, size_t cap, int *layout);

/* The PEFT modules_to_save key of a trainable non-LoRA registry tensor, as
 * AnyRef's train.py spells it ("mask_decoder.mask_tokens", "output_upscaling",
 * "output_hypernetworks_mlps", "embed_tokens", "lm_head", "text_hidden_fcs",
 * "audio_projector"; "mm_projector"; otherwise the tensor's module path in the
 * ANYREF layout). PEFT matches these keys as suffixes of module names. */
int nm_module_to_save(const char *ours, char *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Loading through the table                                          */
/* ------------------------------------------------------------------ */
#define NM_REPORT_NAMES 4
#define NM_REPORT_NAME_MAX 160
typedef struct {
    int declared;     /* registry tensors of this component this load was asked for */
    int loaded, missing, unexpected;
    char missing_names[NM_REPORT_NAMES][NM_REPORT_NAME_MAX];      /* registry names */
    char unexpected_names[NM_REPORT_NAMES][NM_REPORT_NAME_MAX];   /* checkpoint names */
} nm_comp_report;

typedef struct {
    nm_comp_report c[NM_NCOMP + 1];   /* [NM_NCOMP]: names the table does not know */
    int n_unused;                     /* documented-unused official tensors */
    int n_other;                      /* tensors of components this load did not ask for */
    int by_layout[NM_NLAYOUTS];       /* loaded tensors per layout */
    int n_files;                      /* files read */
} nm_report;

typedef struct {
    unsigned components;      /* NM_BIT mask: the registry tensors to load (0 = all) */
    int layout;               /* nm_layout or NM_LAYOUT_AUTO */
    unsigned allow_missing;   /* components whose absent tensors are fine (e.g. LoRA from a base checkpoint) */
    int strict;               /* unexpected tensors are an error, and so is an allow_missing
                                 component the checkpoint holds only part of */
    const char *const *skip;  /* registry names left alone (neither loaded nor missing) */
    int n_skip;
} nm_load_opts;

/* Loads the asked-for registry tensors from a checkpoint (anything st_load_params_ex
 * reads) through the table. Unexpected = checkpoint tensors of an asked-for
 * component that the registry lacks, plus names the table does not know;
 * tensors of other components and documented-unused ones are only counted.
 * Errors (-1 + ar_error naming the tensors, ps->w unchanged): missing tensors
 * of a component not in allow_missing; with strict, any unexpected tensor and
 * missing tensors of a partly present component; everything st_load_params_ex
 * refuses (shape, dtype). `rep` (may be
 * NULL) is filled on success and on a missing / unexpected error. */
int nm_load(const char *path, ar_params *ps, const nm_load_opts *o, nm_report *rep);

/* One line per component that had anything (declared, unexpected), e.g.
 *   "sam_decoder: loaded 102/102, missing 0, unexpected 0"
 * plus a final "unused N, other components M", into buf. */
void nm_report_format(const nm_report *rep, char *buf, size_t cap);
#endif
