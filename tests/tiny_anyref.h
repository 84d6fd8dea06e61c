/* tests/tiny_anyref.h — the tiny AnyRef model the step tests share
 * (test_anyref, test_anyref_parity, test_references, test_anyref_mm_parity,
 * and their PyTorch references tests/ref/anyref_step_ref.py, anyref_mm_ref.py):
 * LLaMA dim 16, 2 layers, 2 heads / 1 kv head, SwiGLU 24, LoRA rank 2 (alpha
 * 4) on all seven projections, trainable embed_tokens and lm_head;
 * text_hidden_fcs 16 -> 16 -> 16; SAM prompt encoder + mask decoder dim 16,
 * 2 heads, MLP 24, 4x4 grid, preset "anyref" (S = 64); original sizes up to
 * 16 x 16. The callers choose the vocabulary, sequence length, [SEG] id,
 * refocusing weight and LoRA dropout.
 * tiny_refs_cfg: images and references for it (tests/ref/anyref_mm_ref.py):
 * CLIP 32 px, patch 8 (16 tokens), width 24, 2 layers, 4 heads, MLP 48,
 * quick-GELU, select -2; a trainable mlp2x_gelu projector to 16; ImageBind
 * audio on 32 x 40 fbank (kernel 8, stride 6, width 32, 2 blocks, 4 heads,
 * out 48) with a trainable audio_projector. */
#ifndef ANYREF_TESTS_TINY_ANYREF_H
#define ANYREF_TESTS_TINY_ANYREF_H
#include <string.h>
#include "model/anyref.h"
#include "model/references.h"

static inline anyref_cfg tiny_anyref_cfg(int vocab, int T, int seg, float lambda, float lora_dropout) {
    anyref_cfg c = anyref_default_cfg();
    llama_cfg l = {.vocab = vocab, .dim = 16, .layers = 2, .heads = 2, .kv_heads = 1, .mlp_hidden = 24,
                   .max_seq = T, .norm_eps = 1e-6f, .rope_theta = 10000.0f, .lora_rank = 2,
                   .lora_alpha = 4.0f, .lora_dropout = lora_dropout, .lora_targets = 0x7f,
                   .train_embed = 1, .train_lm_head = 1};
    c.llm = l;
    c.seg.seg_token = seg;
    c.seg.lambda = lambda;
    sam_decoder_cfg d = {.dim = 16, .depth = 2, .heads = 2, .mlp_dim = 24, .downsample = 2,
                         .num_mask_tokens = 4, .iou_hidden = 16, .H = 4, .W = 4, .n_sparse = 1};
    c.dec = d;
    c.max_orig_h = c.max_orig_w = 16;
    return c;
}

static inline refs_cfg tiny_refs_cfg(int max_images, int max_boxes, int max_crops, int max_audio) {
    refs_cfg r;
    memset(&r, 0, sizeof r);
    clip_vit_cfg c = {.image_size = 32, .patch = 8, .channels = 3, .width = 24, .layers = 2, .heads = 4,
                      .mlp_dim = 48, .eps = 1e-5f, .act = CLIP_ACT_QUICK_GELU, .select_layer = -2};
    r.clip = c;
    mm_projector_cfg p = {.type = MM_PROJ_MLP2X_GELU, .in_dim = 24, .out_dim = 16, .trainable = 1};
    r.proj = p;
    r.use_audio = 1;
    imagebind_audio_cfg a = {.embed_dim = 32, .depth = 2, .heads = 4, .mlp_ratio = 4, .kernel = 8, .stride = 6,
                             .n_mels = 32, .target_len = 40, .out_dim = 48, .logit_scale = 20.0f, .llm_dim = 16,
                             .proj_trainable = 1};
    r.audio = a;
    r.max_images = max_images; r.max_boxes = max_boxes; r.max_crops = max_crops; r.max_audio = max_audio;
    return r;
}
#endif
