/* checkpoints/peft.h — LoRA adapters in the Hugging Face PEFT layout, and
 * merging them into the base weights.
 *
 * An adapter directory holds
 *   adapter_model.safetensors  F32 tensors named "base_model.model." + the
 *                              registry name, e.g.
 *                              base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight,
 *                              plus every other trainable tensor (PEFT's
 *                              modules_to_save, e.g. base_model.model.lm_head.weight)
 *   adapter_config.json        peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
 *                              lora_dropout, target_modules, modules_to_save, bias "none"
 * which `peft.PeftModel.from_pretrained(base_model, dir)` loads. */
#ifndef ANYREF_PEFT_H
#define ANYREF_PEFT_H
#include "model/params.h"

typedef struct {
    int r;
    float alpha, dropout;
    const char *base_model;      /* base_model_name_or_path ("" allowed) */
} peft_info;

/* Writes dir/adapter_model.safetensors and dir/adapter_config.json from the
 * registry's LoRA tensors ("*.lora_A.weight" / "*.lora_B.weight") and its other
 * trainable tensors. -1 + ar_error when the registry has no LoRA tensor. */
int peft_export(const char *dir, const ar_params *ps, const peft_info *info);
/* Writes path (adapter_config.json: LoRA, CAUSAL_LM) with the given target
 * modules and modules_to_save (null when ns == 0), atomically. 0 or -1 + ar_error. */
int peft_write_config(const char *path, const peft_info *info, const char *const *targets, int nt,
                      const char *const *saves, int ns);

/* W += (alpha / r) B A for every LoRA pair of the registry (in place, on the
 * weights block); returns the number of merged projections, or -1 + ar_error. */
int peft_merge(ar_params *ps, float alpha, int r);

/* Writes every tensor except LoRA A/B as F32 safetensors (HF names): the merged model. */
int peft_save_merged(const char *path, const ar_params *ps);
#endif
