/* model/seg_head.h — the [SEG] embedding path on top of the LLaMA decoder (SPEC 2.5).
 *
 * For one batch of B sequences of T tokens (right-padded, as model/llama.h):
 *   1. Find every [SEG]: each position t with tokens[b, t] == seg_token gives
 *      p = t - 1, the position whose output predicts [SEG] (AnyRef:
 *      seg_token_idx - 1 on input_ids, shifted by the image tokens; here the
 *      positions are those of the spliced sequence the decoder ran, so no
 *      offset is hard-coded). [SEG]s are numbered batch-major, then by position
 *      (torch.where order), which is the order of the output rows.
 *   2. Span start s per sample: AnyRef takes rephrase_start = (first j with
 *      labels[j] > 0) - 1 on the UNSHIFTED labels. Decoder targets here are
 *      shifted (targets[t] = labels[t + 1], model/llama.h, data/token_dataset.c),
 *      so s = the first t with targets[b, t] > 0 — the position that predicts
 *      the first answer token. Every [SEG] of a sample uses that sample's s with
 *      its own p (SPEC 2.5: the official loop pairs the i-th [SEG] of the batch
 *      with sample i, which is only right with one [SEG] per sample). A sample
 *      without any target > 0, or s >= p, gives an empty span: h = H[p].
 *   3. Refocusing (kernels.h refocus_forward on that sample's hidden states and
 *      last-layer attention): h = H[p] + λ Σ_{i∈[s,p)} a_i H[i],
 *      a_i = P[p,i] / Σ_{j∈[s,p)} P[p,j], P = head mean of the attention
 *      probabilities. λ = 0 skips the branch (AnyRef's `rephrase_weight > 0`
 *      test): h = H[p] and no gradient reaches the attention.
 *   4. text_hidden_fcs.0 = Sequential(Linear(D, D), ReLU, Linear(D, out_dim),
 *      Dropout(0)) with bias: out[k] = W2 relu(W0 h_k + b0) + b2.
 *      Names (AnyRef/LISA, inside AnyRefForCausalLM.model):
 *        <prefix>text_hidden_fcs.0.0.weight [D, D]   .0.0.bias [D]
 *        <prefix>text_hidden_fcs.0.2.weight [out, D] .0.2.bias [out]
 *      with prefix "model." by default (as the decoder's "model.layers.*").
 *
 * backward (from d out [n, out_dim]) ACCUMULATES into the fcs' parameter
 * gradients (registry), into dxf [B*T, D] (H[p] and every H[i] of the span) and
 * into datt [B, Hq, T, T] (row p of each refocused sample), the latter to be
 * added to the last layer's attention backward (llama_backward_ex's datt_extra).
 * Either may be NULL. All tensors are backend memory; tokens and targets are
 * host arrays. Activations live in the head's own k_malloc'd block, sized at
 * creation for at most max_seg [SEG]s per batch: no allocation per step.
 * Depends on kernels/, core/ (errors), model/params. */
#ifndef ANYREF_SEG_HEAD_H
#define ANYREF_SEG_HEAD_H
#include "model/params.h"

typedef struct {
    int dim;            /* D, the decoder width */
    int out_dim;        /* 256: SAM's prompt embedding width */
    int seg_token;      /* id of [SEG] */
    float lambda;       /* rephrase_weight; 0 disables refocusing */
    int trainable;      /* text_hidden_fcs trainable (1 in AnyRef) */
    const char *prefix; /* NULL = "model." */
} seg_head_cfg;

typedef struct seg_head seg_head;

/* Declares the four fcs tensors (weights: nn.Linear's kaiming-uniform bound
 * 1/sqrt(D); biases: normal with the same variance, 1/sqrt(3D)). -1 + ar_error. */
int       seg_head_declare(const seg_head_cfg *c, ar_params *ps);
/* Binds to allocated parameters, for batches of B x T tokens, Hq attention heads
 * and at most max_seg [SEG]s per batch. NULL + ar_error. */
seg_head *seg_head_create(const seg_head_cfg *c, ar_params *ps, int B, int T, int Hq, int max_seg);
/* The block seg_head_create(c, ..., max_seg) k_mallocs (`anyref plan`). */
size_t    seg_head_plan_bytes(const seg_head_cfg *c, int max_seg);
size_t    seg_head_block_bytes(const seg_head *h);   /* of a created head */
void      seg_head_free(seg_head *h);

/* Step 1 and 2 alone (host): fills seg_b/seg_p/seg_s (each max entries) and returns
 * the number of [SEG]s, or -1 + ar_error (a [SEG] at position 0, more than max). */
int       seg_head_find(int seg_token, const int *tokens, const int *targets, int B, int T,
                        int *seg_b, int *seg_p, int *seg_s, int max);

/* Forward for the batch: returns n, the number of [SEG]s (0: nothing to do), or -1
 * + ar_error. xf [B*T, D] final hidden states, att [B, Hq, T, T] last-layer
 * attention probabilities (may be NULL when lambda == 0). The embeddings are
 * seg_head_out(h) [n, out_dim]; seg_head_sample(h)[k] is the sample of row k. */
int          seg_head_forward(seg_head *h, const int *tokens, const int *targets, const float *xf,
                              const float *att);
const float *seg_head_out(const seg_head *h);
float       *seg_head_dout(seg_head *h);          /* [max_seg, out_dim] buffer a caller may fill */
const int   *seg_head_sample(const seg_head *h);  /* host [n] */
const int   *seg_head_pos(const seg_head *h);     /* host [n]: p of each row */
const int   *seg_head_start(const seg_head *h);   /* host [n]: s of each row (p when the span is empty) */
int          seg_head_count(const seg_head *h);
/* Backward of the last forward from dout [n, out_dim] (may be seg_head_dout(h)). */
void         seg_head_backward(seg_head *h, const float *dout, float *dxf, float *datt);
/* The same in two halves, for a decoder that keeps only some rows of its
 * last layer's probabilities (flash attention): seg_head_locate finds the
 * [SEG]s (n, or -1 + ar_error; then seg_head_sample / _pos name the rows
 * whose probabilities refocusing needs), seg_head_apply computes the
 * embeddings from either att [B, Hq, T, T] or prow [n, Hq, T] (row k the
 * probabilities of query seg_head_pos[k] of sample seg_head_sample[k]);
 * seg_head_backward_rows then gives the gradient on prow (dprow +=). */
int          seg_head_locate(seg_head *h, const int *tokens, const int *targets);
int          seg_head_apply(seg_head *h, const float *xf, const float *att, const float *prow);
void         seg_head_backward_rows(seg_head *h, const float *dout, float *dxf, float *dprow);
#endif
