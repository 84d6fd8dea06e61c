/* model/generate.h — text generation from the AnyRef decoder, shared by
 * `anyref eval` and `anyref infer` (issue 8 part 5): greedy, beam search and
 * temperature / top-p sampling, stop tokens, batches of samples, with or
 * without the KV cache (model/llama.h llama_step).
 *
 * Batch layout (as anyref_generate, model/anyref.h): tokens [B*T] host, row b
 * holds a prompt of len[b] tokens (a negative id -(r + 1) is feature row r of
 * feat [n_feat, dim], backend; model/references.h); rows with len[b] <= 0 are
 * skipped. A row ends when it emits any of the stop ids (kept), reaches T, or
 * after max_new new tokens; positions after its end hold pad; len[b] is
 * updated. Generation runs in evaluation mode (no LoRA dropout; the previous
 * mode is restored) and leaves no training forward behind (anyref_backward
 * then does nothing until the next anyref_forward).
 *
 * Strategies:
 *   GEN_GREEDY  argmax of the next-token logits (lowest id on ties).
 *   GEN_SAMPLE  logits / temperature, then top-p as Hugging Face's
 *               TopPLogitsWarper (keep the smallest set of most probable
 *               tokens whose probability sums to >= top_p; at least one),
 *               one draw from the renormalised distribution with a uniform
 *               from core/rng seeded by (seed, row, step): a row's tokens do
 *               not depend on the other rows of the batch. temperature <= 0
 *               is greedy.
 *   GEN_BEAM    beam search of width W = beam_width (1 <= W <= B) as Hugging
 *               Face's BeamSearchScorer with early_stopping=False: beam score
 *               = sum of log-softmax (double); per step the candidates
 *               (beam, token) in descending score (ties: lower beam, lower
 *               id); a stop-id candidate of rank < W becomes a finished
 *               hypothesis scored sum_logprob / generated_len^length_penalty
 *               (generated_len counts the stop token), the best W others are
 *               the next live beams. A sample is done when it holds W
 *               finished hypotheses and the best candidate of the step,
 *               normalised by the current generated length, does not beat
 *               the worst of them (HF's heuristic, not an exact bound when
 *               length_penalty > 0); at max_new or T its live beams join the
 *               hypotheses. The result is the best hypothesis (the first of
 *               equal scores). The W beams of a sample occupy W rows of the
 *               batch, so the samples go through in groups of B / W (feature
 *               rows are shared through the negative ids); cache rows follow
 *               their beams (llama_cache_copy_row). Width 1 is greedy exactly.
 * no_cache = 1 recomputes the whole prefix with one full B x T forward per new
 * token (the reference path); otherwise one full forward fills the KV cache
 * (the prefill) and llama_step runs one token per row.
 * Depends on model/anyref.h, model/llama.h, kernels/kernels.h, core/rng, core/error. */
#ifndef ANYREF_GENERATE_H
#define ANYREF_GENERATE_H
#include <stdint.h>
#include "model/anyref.h"

enum { GEN_GREEDY, GEN_BEAM, GEN_SAMPLE };
#define GEN_MAX_STOP 8

typedef struct {
    int strategy;               /* GEN_GREEDY, GEN_BEAM or GEN_SAMPLE */
    int max_new;                /* new tokens at most */
    int stop[GEN_MAX_STOP];     /* stop ids (kept in the output) */
    int n_stop;
    int beam_width;             /* GEN_BEAM: 1..B */
    float length_penalty;       /* GEN_BEAM: exponent of the generated length */
    float temperature, top_p;   /* GEN_SAMPLE */
    uint64_t seed;              /* GEN_SAMPLE */
    int no_cache;               /* 1: recompute the prefix every token */
} gen_cfg;

/* greedy, max_new 32, no stop ids, beam 1, length_penalty 1.0, temperature 1,
 * top_p 1, seed 0, cache on. */
gen_cfg gen_default_cfg(void);
/* "greedy" | "beam" | "sample" -> GEN_*; -1 + ar_error naming the value. */
int     gen_parse_strategy(const char *s, int *strategy);
/* Generation as described above; 0, or -1 + ar_error (bad config, a feature
 * row beyond n_feat, out of memory). */
int     anyref_generate_ex(anyref *m, const gen_cfg *g, int *tokens, int *len, int pad, const float *feat,
                           int n_feat);
/* The GEN_SAMPLE draw for one row of logits [V] (host): row and step key the
 * random stream. Returns the token, or -1 + ar_error (out of memory). */
int     gen_sample_token(const float *logits, int V, float temperature, float top_p, uint64_t seed, int row,
                         int step);
#endif
