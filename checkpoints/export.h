/* checkpoints/export.h — a trained registry in the files the official AnyRef
 * code (jwh97nn/AnyRef, LISA-derived) loads, every name from the table in
 * checkpoints/names.h.
 *
 * export_adapter writes into a directory
 *   adapter_model.safetensors     F32; PEFT's saved-adapter names
 *                                 (NM_LAYOUT_PEFT): every LoRA A/B, e.g.
 *                                 base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight,
 *                                 and every trainable non-LoRA tensor (PEFT
 *                                 modules_to_save), e.g.
 *                                 base_model.model.model.visual_model.mask_decoder.output_upscaling.0.weight,
 *                                 base_model.model.model.text_hidden_fcs.0.0.weight,
 *                                 base_model.model.model.embed_tokens.weight (all rows: the resized vocabulary)
 *   adapter_config.json           peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
 *                                 lora_dropout, bias "none", target_modules = the full
 *                                 module paths of the LoRA'd projections (as AnyRef's
 *                                 find_linear_layers: suffix matching on "q_proj" would
 *                                 also hit SAM's and CLIP's attention), modules_to_save
 *                                 = AnyRef's keys (names.h nm_module_to_save)
 *   non_lora_trainables.safetensors   the trainable non-LoRA tensors alone, under the
 *                                 same names (LLaVA/LISA's non_lora_trainables.bin
 *                                 convention, which LLaVA's builder strips to the
 *                                 AnyRefForCausalLM names)
 * which PeftModel.from_pretrained(AnyRefForCausalLM, dir) loads.
 *
 * export_merged merges every LoRA pair into its base weight in place
 * (peft_merge: W += alpha/r B A) and writes every other tensor of the registry
 * under AnyRefForCausalLM's state_dict names (NM_LAYOUT_ANYREF, what AnyRef's
 * merge_lora.py saves): model.safetensors, or with shard_bytes > 0 the
 * Hugging Face sharding model-0000i-of-0000n.safetensors (tensors in registry
 * order, a new shard when the next tensor would pass shard_bytes) plus
 * model.safetensors.index.json {"metadata": {"total_size": bytes}, "weight_map"}.
 * Only what the registry holds is written (no SAM image encoder when the run
 * used precomputed embeddings, no CLIP without references).
 *
 * Depends on checkpoints/{names,peft,safetensors}.h, core/ (error, fs, json). */
#ifndef ANYREF_CHECKPOINTS_EXPORT_H
#define ANYREF_CHECKPOINTS_EXPORT_H
#include <stddef.h>
#include "checkpoints/peft.h"

int export_adapter(const char *dir, const ar_params *ps, const peft_info *info);
/* Returns the number of merged projections (0 when the registry has no LoRA), or -1 + ar_error. */
int export_merged(const char *dir, ar_params *ps, const peft_info *info, size_t shard_bytes);
#endif
