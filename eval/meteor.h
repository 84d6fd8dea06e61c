/* eval/meteor.h — an APPROXIMATION of METEOR 1.5 (Denkowski & Lavie 2014) as
 * coco-caption runs it (pycocoevalcap/meteor: `meteor-1.5.jar - - -stdio -l en
 * -norm`, one SCORE line per sample, the corpus score from the summed
 * sufficient statistics): exact + stem + WordNet-synonym matching, NO
 * paraphrase matching. Reported under the name meteor_name() returns, e.g.
 * "METEOR (approx.: exact+stem+WordNet, no paraphrases)"; never present it
 * as METEOR 1.5. tests/test_meteor.c measures the distance to the jar.
 *
 * What follows METEOR 1.5's English ranking defaults as its public source
 * (cmu-mtlab/meteor) computes them:
 *  - -norm: Moses-style normalisation of the (already PTB-tokenised) text —
 *    symbols other than . ' ` , - split off, dashes between letters/digits
 *    removed (black-and-white -> black and white), commas outside numbers
 *    split, English apostrophe rules (n't -> n 't, 's -> ' s), a word-final
 *    dot split unless the word is dotted (u.s. -> us) or a lowercase word
 *    follows; then lowercase;
 *  - matchers, in order, each proposing one-word matches between a
 *    hypothesis word i and a reference word j: exact (equal words); stem
 *    (different words, equal Snowball English stems: libstemmer); synonym
 *    (different words whose WordNet synsets intersect, a word's synsets
 *    being its own plus those of its base forms — WordNet's exception lists
 *    if the word is in one, else the first morphy suffix rule giving a
 *    WordNet lemma); module weights 1.0 / 0.6 / 0.8;
 *  - alignment: a reference word whose only proposal covers a hypothesis
 *    word with no other proposal is fixed; the rest is chosen by METEOR's
 *    left-to-right beam search (width 40) over reference positions, ranked
 *    by the (integer-truncated, as in the Java source) weighted match count,
 *    then fewer chunks, then the accumulated distance, with a stable sort;
 *  - statistics per (hypothesis, reference): lengths, function-word counts,
 *    content / function matches per module on each side, chunks; P and R
 *    weight content words by delta 0.75 and function words by 0.25, module
 *    matches by their weights; Fmean = 1 / ((1-alpha)/P + alpha/R), alpha
 *    0.85; frag = chunks / mean matches (0 when both sentences are fully
 *    matched in one chunk); score = Fmean (1 - 0.60 frag^0.20), 0 on NaN;
 *  - several references: the first reference with the highest score;
 *  - corpus: statistics summed over samples (chunks of fully matched
 *    one-chunk samples left out, as METEOR does), then the same formula.
 *
 * Known differences from meteor-1.5.jar (measured by the test):
 *  - no paraphrase table (the jar's paraphrase-en: single- and multi-word
 *    paraphrases, weight 0.6), hence fewer matches and sometimes another
 *    alignment and other fixed matches;
 *  - function words: this file's own closed-class list (determiners,
 *    pronouns, prepositions, conjunctions, auxiliaries, clitics,
 *    punctuation), not the jar's frequency-derived English list; a one-word
 *    -a-line file can replace it (meteor_open's function_words);
 *  - WordNet: the system's WordNet 3.0 files (Debian wordnet-base), whose
 *    verb and adjective byte offsets differ from the data the jar's synset
 *    table was built from; synsets are kept apart per part of speech here,
 *    so the jar's rare accidental matches between a noun and a verb or
 *    adjective synset with the same offset do not occur;
 *  - without WordNet, words that both the stem and the synonym module
 *    would propose get only the stem proposal, which can then be fixed
 *    (e.g. "dogs" vs "dog" 0.6 here, 0 in the jar, whose beam drops a lone
 *    non-exact match with two proposals: its truncated weight counts 0);
 *  - libstemmer's Snowball English may differ from the jar's 2010 Java
 *    Snowball on rare words; -norm's nonbreaking-prefix list is not used
 *    (only the lowercase-next-word rule), Unicode quotes/dashes are not
 *    normalised, the multi-dot escapes are not reproduced.
 *
 * Not thread-safe per handle (one stemmer per handle); use one handle per
 * thread. Depends on core/error.h and libstemmer (Snowball's C library). */
#ifndef ANYREF_EVAL_METEOR_H
#define ANYREF_EVAL_METEOR_H

typedef struct meteor meteor;

#define METEOR_DEFAULT_WORDNET "/usr/share/wordnet"

/* Opens a scorer. wordnet_dir: a WordNet 3.0 dict directory (index.noun,
 * index.verb, index.adj, index.adv and noun/verb/adj/adv.exc); NULL = the
 * Debian path METEOR_DEFAULT_WORDNET, and when that is missing the scorer
 * runs without the synonym module (meteor_has_wordnet() = 0, meteor_name()
 * says so); "" = run without it on purpose; an explicit directory that
 * cannot be read is an error.
 * function_words: NULL = the built-in list, else a file of one word a line.
 * Returns NULL + ar_error on failure. */
meteor *meteor_open(const char *wordnet_dir, const char *function_words);
void meteor_close(meteor *m);   /* NULL ok */

/* 1 when the WordNet synonym module is active. */
int meteor_has_wordnet(const meteor *m);
/* The label to print beside the score, saying what it approximates. */
const char *meteor_name(const meteor *m);

/* Scores n >= 1 samples: cands[i] against refs[i][0..n_refs[i]), n_refs[i]
 * >= 1, strings as coco-caption passes them (PTB-tokenised, space
 * separated). *corpus receives the corpus score; per_sample (may be NULL)
 * the n sample scores. Returns 0, or -1 + ar_error. */
int meteor_score(meteor *m, int n, const char *const *cands, const char *const *const *refs, const int *n_refs,
                 double *corpus, double *per_sample);

/* METEOR's -norm of one line as implemented here, lowercased (for tests).
 * malloc'd (free it), NULL + ar_error on allocation failure. */
char *meteor_normalize(const char *s);

#endif
