/* data/conversation.h — conversation templates and LLaVA's supervised
 * tokenization for instruction tuning: prompt strings, input ids and labels
 * exactly as LLaVA's llava/train/train.py preprocess_v1 computes them (the
 * code LISA and AnyRef train with), LLaVA-format JSON in, the pre-tokenized
 * HDF5 format (data/token_dataset.h) out.
 *
 * TEMPLATES (llava/conversation.py, SeparatorStyle.TWO)
 *   llava_v1     system "You are LLaVA, a large language and vision assistant
 *                trained by UW Madison WAIV Lab.You are able to understand the
 *                visual content that the user provides, and assist the user
 *                with a variety of tasks using natural language.Follow the
 *                instructions carefully and explain your answers in detail."
 *                (sic: no space after the periods; the LLaVA-Lightning v1-1
 *                template LISA and AnyRef use)
 *   vicuna_v1_1  system "A chat between a curious user and an artificial
 *                intelligence assistant. The assistant gives helpful,
 *                detailed, and polite answers to the user's questions."
 *   Both: roles "USER" / "ASSISTANT", sep " " (after user turns), sep2 "</s>"
 *   (after assistant turns). Messages alternate user, assistant, ...:
 *     prompt = system + sep
 *              + for message i: role + ": " + text + (i even ? sep : sep2)
 *                               or, when text is empty, role + ":" alone
 *   e.g. "SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>".
 *   An empty message adds no separator ("ASSISTANT:" ends a generation prompt).
 *
 * TOKENIZATION (conv_encode) — what transformers 4.31's slow LlamaTokenizer
 * (use_fast=False, legacy mode; the version LLaVA, LISA and AnyRef pin) gives
 * for tokenizer(text).input_ids, or LLaVA's tokenizer_image_token when
 * placeholders are registered:
 *   1. [BOS] when asked;
 *   2. the text is split on the placeholders (conv_encoder_add_placeholder,
 *      e.g. "<image>"; leftmost, longest first); each placeholder becomes the
 *      id -1 for the first one registered, -2 for the second, ... (LLaVA uses
 *      -200; a later stage replaces it by the feature tokens);
 *   3. each chunk between them is split on the "no split" tokens, leftmost
 *      and longest first: the tokenizer's <unk>, <s> and </s> pieces (the text
 *      "</s>" in a prompt IS the EOS id, as with Hugging Face) and the tokens
 *      added with conv_encoder_add_token. Around an added token registered
 *      with strip = 1 the whitespace of both neighbouring text segments is
 *      removed (Python str.strip's whitespace set): transformers <= 4.33
 *      stores tokenizer.add_tokens("[SEG]") as a plain string and "strips left
 *      and right by default", so "It is [SEG]." is "It is" + [SEG] + ".";
 *      strip = 0 keeps the whitespace (Hugging Face fast tokenizers and
 *      transformers >= 4.34). The special pieces never strip;
 *   4. every remaining non-empty segment is encoded on its own with
 *      tok_encode (legacy mode: each gets SentencePiece's dummy-prefix "▁").
 *
 * LABELS (conv_tokenize), preprocess_v1 step by step:
 *   ids = conv_encode(prompt, BOS), cut to max_len (truncation=True); labels =
 *   a copy; total_len = the number of ids that are not the pad id (LLaVA sets
 *   pad = unk, so a literal "<unk>" or an unknown character makes a sample
 *   mismatch); cur_len = 1; labels[0] = -100 (BOS). For each round of
 *   prompt.split(sep2) ("</s>"): stop at an empty round; parts =
 *   round.split(sep + "ASSISTANT: "), stop unless there are exactly 2;
 *   round_len = |conv_encode(round, BOS)|; instruction_len =
 *   |conv_encode(parts[0] + sep + "ASSISTANT: ", BOS)| - 2;
 *   labels[cur_len, cur_len + instruction_len) = -100; cur_len += round_len.
 *   Then labels[cur_len, ...) = -100, and if cur_len < max_len and
 *   cur_len != total_len the sample is a "tokenization mismatch": EVERY label
 *   becomes -100 (LLaVA prints a warning; we count and report it).
 *   Slices are clipped to the truncated length, as Python's are.
 *   Our one addition: placeholder positions are always labelled -100.
 *
 *   WHAT IS LEARNED. The BOS of a round's own encoding stands in for the
 *   </s> that ends the previous round, so each round's span is exact, and the
 *   -2 removes that BOS and the lone "▁" piece that the trailing space of
 *   "ASSISTANT: " becomes when encoded alone. With LLaMA's vocabulary, where
 *   that space merges into the answer's first piece in the full prompt, the
 *   learned labels are exactly each assistant answer's tokens and the </s>
 *   that closes it; the system prompt, every "USER: question ASSISTANT:" and
 *   the BOS are -100. Known deviations, all reproduced on purpose:
 *     - an answer whose first piece does not absorb that space (a digit or
 *       a byte piece with LLaMA, an added token registered with strip = 0,
 *       most answers with a small vocabulary) also learns the "▁" before it
 *       (an added token with strip = 1 removes the space in the prompt, so
 *       "[SEG]." as an answer is learned exactly);
 *     - an empty answer, a conversation that ends on a user turn, an empty
 *       question ("USER:ASSISTANT: ..."), a text that contains "</s>",
 *       " ASSISTANT: " or "<unk>" make cur_len and total_len disagree: the
 *       whole sample is -100 (a mismatch). An empty answer followed by more
 *       rounds is glued to the next round and does not mismatch;
 *     - a truncated sample (cur_len >= max_len) is never checked: it keeps
 *       the labels that fall inside max_len.
 *
 * JSON INPUT (LLaVA's format)
 *   [ {"id": ..., "conversations": [{"from": "human", "value": "..."},
 *                                   {"from": "gpt", "value": "..."}, ...]}, ... ]
 *   "id" (string or integer) is optional and used in messages only; other
 *   fields are ignored. A leading "gpt" turn is dropped (as LLaVA does); the
 *   rest must alternate human, gpt, human, ... A sample is BROKEN, skipped,
 *   counted by reason and reported (never fatal): not an object; no
 *   "conversations" array; an empty one; a turn that is not an object or
 *   lacks a string "from" / "value"; a "from" other than exactly "human" or
 *   "gpt"; turns out of order. (LLaVA raises on these, except a null "value",
 *   which it treats as empty: we refuse it.) Only an unreadable file, a root
 *   that is not an array, bad arguments or running out of memory fail a load.
 *
 * Errors: -1 / NULL with ar_error() naming the file, the sample (index and
 * id), the field and what was expected. Warnings (the first 10 problem
 * samples of a load) go through log_warn. Depends on core/ (error, json,
 * log), data/tokenizer and data/token_dataset.
 */
#ifndef ANYREF_DATA_CONVERSATION_H
#define ANYREF_DATA_CONVERSATION_H

#include "data/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define CONV_IGNORE (-100)        /* label with no loss (= TDS_IGNORE) */
#define CONV_MAX_MESSAGES 32      /* problem messages kept in a conv_dataset */

/* ---------------------------------------------------------------- templates */
typedef struct {
    const char *name;       /* "llava_v1", "vicuna_v1_1" */
    const char *system;
    const char *roles[2];   /* "USER", "ASSISTANT" */
    const char *sep;        /* " "    after user messages */
    const char *sep2;       /* "</s>" after assistant messages */
} conv_template;

/* The template called name; NULL + ar_error listing the known names. */
const conv_template *conv_template_find(const char *name);

/* The prompt of n >= 0 messages (msgs[0] from the user, then alternating),
 * as defined above. msgs[i] == NULL or lens[i] == 0: an empty message (the
 * role and ":" only). lens may be NULL: strlen is used. Returns a malloc'd
 * NUL-terminated string (*len its length if len != NULL; messages may hold
 * NUL bytes), or NULL + ar_error. */
char *conv_prompt(const conv_template *tpl, const char *const *msgs, const size_t *lens, int n, size_t *len);

/* ---------------------------------------------------------------- encoder */
typedef struct conv_encoder conv_encoder;

/* An encoder for one template over tok (which must outlive it and has a BOS
 * piece). max_len >= 2: the truncation length (LLaVA's model_max_length).
 * The pad id used to count total_len is the tokenizer's unk id (LLaVA's
 * pad_token = unk_token), or its pad id if it has no unk; with neither every
 * token counts. NULL + ar_error. */
conv_encoder *conv_encoder_new(tokenizer *tok, const char *template_name, int max_len);
void conv_encoder_free(conv_encoder *e);   /* NULL ok */
const conv_template *conv_encoder_template(const conv_encoder *e);
int conv_encoder_max_len(const conv_encoder *e);
/* The id labels and ids are padded with: the pad id above, or 0. */
int conv_encoder_pad_id(const conv_encoder *e);

/* Adds text (e.g. "[SEG]") to the tokenizer with tok_add_special (new id
 * after the vocabulary, or the existing one) and to the encoder's no-split
 * tokens; strip = 1 strips the whitespace on both sides of it (transformers
 * 4.31 add_tokens), 0 keeps it. Adding it again updates strip. Returns the
 * id, or -1 + ar_error. Not concurrently with anything else on e or tok. */
int conv_encoder_add_token(conv_encoder *e, const char *text, int strip);
/* Registers a placeholder (e.g. "<image>"), matched in the raw text before
 * anything else and emitted as one negative id: -1 for the first registered,
 * -2 for the second, ... Returns that id; registering the same text again
 * returns its id. 0 + ar_error on error (empty text, out of memory). */
int conv_encoder_add_placeholder(conv_encoder *e, const char *text);

/* Encodes text[0..len) as described under TOKENIZATION (with BOS first if
 * add_bos). *ids malloc'd (free it), *n its length. 0 or -1 + ar_error. */
int conv_encode(const conv_encoder *e, const char *text, size_t len, int add_bos, int **ids, int *n);

/* One tokenized conversation. */
typedef struct {
    int *ids, *labels;   /* [n], malloc'd; labels in the Hugging Face convention (not shifted) */
    int n;               /* min(full_len, max_len) */
    int full_len;        /* tokens of the whole prompt before truncation */
    int truncated;       /* full_len > max_len */
    int mismatch;        /* cur_len != total_len: every label is CONV_IGNORE */
    int cur_len, total_len;   /* LLaVA's two counts */
    int supervised;      /* labels != CONV_IGNORE */
} conv_sample;

/* Tokenizes n_msgs messages (user, assistant, user, ...; an odd count ends on
 * a user turn) into *out (LABELS above). msgs/lens as for conv_prompt.
 * 0, or -1 + ar_error (out of memory); *out is then zeroed. */
int conv_tokenize(const conv_encoder *e, const char *const *msgs, const size_t *lens, int n_msgs,
                  conv_sample *out);
void conv_sample_free(conv_sample *s);   /* frees and zeroes; NULL ok */

/* ---------------------------------------------------------------- data sets */
typedef enum {
    CONV_SKIP_NOT_OBJECT,        /* the sample is not a JSON object */
    CONV_SKIP_NO_CONVERSATIONS,  /* "conversations" missing or not an array */
    CONV_SKIP_EMPTY,             /* "conversations" is [] */
    CONV_SKIP_BAD_TURN,          /* a turn is not an object / "from" or "value" missing or not a string */
    CONV_SKIP_BAD_ROLE,          /* "from" is not exactly "human" or "gpt" */
    CONV_SKIP_BAD_ORDER,         /* after a leading gpt turn, not human, gpt, human, ... */
    CONV_SKIP_N
} conv_skip_reason;

/* Short names for summaries: "not an object", "no conversations", "empty
 * conversations", "bad turn", "bad role", "bad order". */
const char *conv_skip_reason_name(conv_skip_reason r);

#define CONV_F_TRUNCATED 1u
#define CONV_F_MISMATCH  2u

typedef struct {
    int64_t  n;            /* samples kept (every sample that is not broken) */
    int64_t *start;        /* [n + 1]: sample i is ids/labels[start[i] .. start[i+1]) */
    int     *ids;          /* [start[n]]; placeholders are negative */
    int     *labels;       /* [start[n]] */
    int64_t *index;        /* [n] the sample's position in the input array */
    uint8_t *flags;        /* [n] CONV_F_* */
    int      pad_id;       /* conv_encoder_pad_id */
    int      vocab_size;   /* tok_vocab_size after the added tokens */
    int64_t  n_input;      /* elements of the input array */
    int64_t  n_skipped;    /* broken samples = sum of skip[] */
    int64_t  skip[CONV_SKIP_N];
    int64_t  n_truncated, n_mismatch;
    int64_t  n_unsupervised;   /* kept samples without a single supervised label (mismatches included) */
    int64_t  n_tokens, n_supervised;   /* over the kept samples */
    int      n_messages;   /* problem messages (broken samples, mismatches) in input order; */
    char    *messages[CONV_MAX_MESSAGES];   /* the first CONV_MAX_MESSAGES, malloc'd */
} conv_dataset;

/* Reads a LLaVA-format JSON file and tokenizes every sample with e into *out
 * (zeroed first). Problem samples are described as
 *   "<path>: sample <i> (id \"<id>\"): <what>"   (no "(id ...)" without an id)
 * e.g. "...: conversations[0].from: expected \"human\" or \"gpt\", found \"system\"",
 *      "...: tokenization mismatch: 1 vs. 215 (every label set to -100)";
 * the first 10 are also logged with log_warn. 0, or -1 + ar_error (then *out
 * holds nothing to free). */
int conv_load_json_with(const char *path, const conv_encoder *e, conv_dataset *out);
/* The same with a fresh encoder for template_name and max_len and no added
 * tokens or placeholders of its own (tokens added to tok directly with
 * tok_add_special are then matched by the tokenizer, keeping whitespace). */
int conv_load_json(const char *path, tokenizer *tok, const char *template_name, int max_len, conv_dataset *out);
void conv_dataset_free(conv_dataset *ds);   /* frees and zeroes; NULL ok */

/* Writes the samples that have at least one supervised label (the others
 * carry no loss and the reader would call them broken) to h5path in the
 * token dataset format with tds_write: input_ids right-padded to T with
 * ds->pad_id, labels as stored (unshifted, -100 = ignored) padded with -100,
 * attention_mask 1 on real tokens, attributes vocab_size = vocab and pad_id.
 * Refused (-1 + ar_error naming the sample): T < 2, a sample longer than T,
 * a placeholder id or an id outside [0, vocab), no sample to write.
 * Returns the number of rows written, or -1. */
int64_t conv_write_tokens(const conv_dataset *ds, const char *h5path, int T, int vocab);

#endif
