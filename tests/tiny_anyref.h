/* tests/tiny_anyref.h — the tiny AnyRef model the step tests share
 * (test_anyref, test_anyref_parity, test_references, test_anyref_mm_parity,
 * and their PyTorch references tests/ref/anyref_step_ref.py, anyref_mm_ref.py):
 * LLaMA dim 16, 2 layers, 2 heads / 1 kv head, SwiGLU 24, LoRA rank 2 (alpha
 * 4) on all seven projections, trainable embed_tokens and lm_head;
 * text_hidden_fcs 16 -> 16 -> 16; SAM prompt encoder + mask decoder dim 16,
 * 2 heads, MLP 24, 4x4 grid, preset "anyref" (S = 64); original sizes up to
 * 16 x 16. The callers choose the vocabulary, sequence length, [SEG] id,
 * refocusing weight and LoRA dropout. */
#ifndef ANYREF_TESTS_TINY_ANYREF_H
#define ANYREF_TESTS_TINY_ANYREF_H
#include "model/anyref.h"

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
#endif
