/* eval/caption_metrics.h — region-captioning metrics computed the way
 * coco-caption (tylin/coco-caption, PyPI pycocoevalcap) computes them:
 * BLEU-1..4 (pycocoevalcap/bleu/bleu_scorer.py with option "closest", as
 * Bleu(4) calls it) and CIDEr-D (pycocoevalcap/cider/cider_scorer.py, what
 * coco-caption reports as "CIDEr"), after coco-caption's PTBTokenizer
 * (Stanford PTBTokenizer -preserveLines -lowerCase, then punctuation tokens
 * from its fixed list dropped).
 *
 * TOKENIZER (capm_tokenize): a C re-implementation of that pipeline for the
 * strings captions contain. Matches CoreNLP 3.4.1 on: ASCII lowercasing;
 * words split on whitespace; ( ) [ ] { } as -lrb- -rrb- -lsb- -rsb- -lcb-
 * -rcb- (lowercased, so coco-caption's "-LRB-"/"-RRB-" entries never match
 * and these tokens stay, as in coco-caption); . , ; : ? ! " ` ' ... - --
 * split off and dropped, except runs of ?/! longer than one ("!!!", "??")
 * which are kept as one token; "," and ":" and "." between digits (1,000
 * 10:30 3.5) and "-" "/" "&" "'" between word characters (black-and-white,
 * and/or, at&t, o'clock) stay inside the word; a final "." stays on
 * acronyms (u.s.a.) and on mr mrs ms dr st jr sr vs etc inc ltd co corp prof
 * mt ft; $ # % and word-final or word-initial / & as their own tokens;
 * clitics split as PTB does (n't 's 'm 'd 'll 're 've: don't -> do n't,
 * can't -> ca n't, man's -> man 's); cannot gonna gotta wanna lemme gimme
 * split (can not, gon na, ...). Known differences from the Java tokenizer:
 * non-ASCII letters are not lowercased and Unicode punctuation (curly quotes,
 * dashes, ellipsis, ’ in clitics) is treated as word characters; PTB's
 * further abbreviation list, URLs/e-mails, emoticons, fractions, SGML and
 * "no."/"p.m." style rules are not implemented; a lone "-" or "'" glued to
 * one side of a word is split off.
 *
 * METRICS (capm_score) over n samples, each with one candidate and n_refs[i]
 * >= 1 references, every string tokenised first when `tokenize` is set
 * (otherwise split on spaces, as coco-caption's scorers do):
 *   BLEU-k: corpus level, clipped n-gram counts summed over samples,
 *     (prod_{j<=k} (correct_j + 1e-15) / (guess_j + 1e-9))^(1/k), times
 *     exp(1 - 1/r) when r = (testlen + 1e-15) / (reflen + 1e-9) < 1, reflen
 *     the sum of each sample's "closest" reference length (ties: shorter).
 *   CIDEr-D: n-grams 1..4, df = number of samples whose references contain
 *     the n-gram, weight tf * (log N - log(max(1, df))), per order the
 *     clipped cosine sum_g min(w_c, w_r) w_r / (|c| |r|) (0 when a norm is
 *     0) times exp(-d^2 / (2 * 6^2)), d the difference of the candidate's and
 *     reference's BIGRAM counts (coco-caption's "length"), summed over the
 *     references, averaged over orders, / n_refs, x 10; the corpus score is
 *     the mean of the per-sample scores.
 * Depends on core/error.h. */
#ifndef ANYREF_EVAL_CAPTION_METRICS_H
#define ANYREF_EVAL_CAPTION_METRICS_H

typedef struct {
    double bleu[4];   /* BLEU-1..4 */
    double cider;     /* CIDEr-D, mean over samples */
} capm_scores;

/* The PTB-tokenised, lowercased, punctuation-stripped form of s: tokens
 * joined by single spaces, "" for none. Returns a malloc'd string (free it),
 * NULL + ar_error on allocation failure. */
char *capm_tokenize(const char *s);

/* Scores n >= 1 samples: cands[i] against refs[i][0..n_refs[i]).
 * cider_per (may be NULL) receives the n per-sample CIDEr-D scores.
 * Returns 0, or -1 + ar_error (bad arguments, out of memory). */
int capm_score(int n, const char *const *cands, const char *const *const *refs, const int *n_refs,
               int tokenize, capm_scores *out, double *cider_per);

#endif
