/* data/tokenizer.h — the LLaMA tokenizer: SentencePiece BPE, in C.
 *
 * Loads either file the LLaMA family ships and gives the ids those libraries
 * give:
 *   tokenizer.model   a SentencePiece ModelProto (protobuf). Supported: model
 *                     type BPE, no precompiled normalisation map (the
 *                     "identity" normaliser LLaMA uses), escape_whitespaces,
 *                     add_dummy_prefix and remove_extra_whitespaces either
 *                     way, byte_fallback either way, user-defined symbols,
 *                     UNUSED pieces. Encoding and decoding follow
 *                     libsentencepiece (checked against 0.1.97).
 *   tokenizer.json    a Hugging Face tokenizers file laid out as transformers'
 *                     LlamaConverter writes it: model BPE (vocab + merges,
 *                     byte_fallback, fuse_unk), normalizer Sequence[Prepend
 *                     "▁", Replace " " -> "▁"], no pre-tokenizer, decoder
 *                     Sequence[Replace "▁" -> " ", ByteFallback, Fuse, Strip
 *                     one leading " "], added_tokens (normalized or not).
 *                     Encoding and decoding follow `tokenizers` (checked
 *                     against 0.23) with skip_special_tokens=True. Anything
 *                     else is refused with a message naming the field.
 * The kind is detected from the content ('{' first: JSON), not the file name.
 *
 * Encoding (both kinds):
 *   1. the text is split on added tokens (tok_add_special, and the
 *      normalized=false added_tokens of a tokenizer.json): leftmost, longest
 *      match first; each match becomes its id. A .model has none until
 *      tok_add_special: the text "</s>" encodes as ordinary characters, as
 *      libsentencepiece does (tok_add_special(t, "</s>") makes it the EOS id,
 *      as a tokenizer.json's added_tokens do);
 *   2. every other piece is normalised on its own: invalid UTF-8 bytes become
 *      U+FFFD, ' ' becomes U+2581 '▁', '▁' is put in front (add_dummy_prefix;
 *      not for an empty piece), and for .model files with
 *      remove_extra_whitespaces, leading, trailing and repeated spaces go;
 *   3. the normalised piece is split on user-defined symbols (.model) or on
 *      normalized=true added tokens (.json; matched in their normalised form,
 *      as `tokenizers` does, so "<x>" matches "▁<x>");
 *   4. BPE on code points: .model merges the adjacent pair whose
 *      concatenation is a vocabulary piece of highest score (ties: leftmost),
 *      .json applies the merge of lowest rank (ties: leftmost); characters
 *      outside the vocabulary become <0xXX> byte pieces (byte_fallback) or
 *      <unk> (consecutive ones fused into one).
 * BOS and EOS are added only on request. Time is O(n log n) in the length
 * of a normalised piece; when no piece can join a character to a following
 * '▁' (true of LLaMA's) long texts are merged in independent chunks with the
 * same result (about 10 MB/s with LLaMA's 32000 pieces on one core).
 *
 * Decoding: .model as SentencePiece (control pieces dropped, <unk> as its
 * surface " ⁇ ", byte pieces reassembled as UTF-8 with U+FFFD per invalid
 * byte, '▁' -> ' ', the dummy-prefix space of the first piece removed); .json
 * as `tokenizers` (special added tokens dropped, '▁' -> ' ', byte runs that
 * are not valid UTF-8 become one U+FFFD per byte, one leading ' ' removed).
 * Added tokens decode to their text (a normalized one of a .json: "▁" +
 * text through the decoder, as `tokenizers` does).
 *
 * Errors: NULL / -1 and ar_error(), a message naming the file, the field and
 * what was expected. A loaded tokenizer is read-only during tok_encode /
 * tok_decode, which may run concurrently; tok_add_special must not run
 * concurrently with anything else on the same tokenizer.
 * Depends on core/ (error, json) and data/protobuf.
 */
#ifndef ANYREF_DATA_TOKENIZER_H
#define ANYREF_DATA_TOKENIZER_H

#include <stddef.h>

typedef struct tokenizer tokenizer;

/* Loads a tokenizer.model or tokenizer.json file. NULL + ar_error on error. */
tokenizer *tok_load(const char *path);
/* The same from memory; `origin` (a name for messages; NULL = "tokenizer")
 * starts every error message. The buffer is not kept. */
tokenizer *tok_load_memory(const void *data, size_t len, const char *origin);
void tok_free(tokenizer *t);   /* NULL ok */

/* "sentencepiece" or "tokenizers" (the kind of file it was loaded from). */
const char *tok_kind(const tokenizer *t);
/* Number of ids: the model's vocabulary plus the added tokens. */
int tok_vocab_size(const tokenizer *t);
/* Special ids; -1 if the model has none. */
int tok_bos(const tokenizer *t);
int tok_eos(const tokenizer *t);
int tok_unk(const tokenizer *t);
int tok_pad(const tokenizer *t);

/* Encodes text[0..len) (any bytes; need not be NUL-terminated). *ids is
 * malloc'd (free it), *n its length. 0, or -1 + ar_error (out of memory, or
 * add_bos / add_eos with a model that has no such token). */
int tok_encode(const tokenizer *t, const char *text, size_t len, int add_bos, int add_eos,
               int **ids, int *n);
/* Decodes ids[0..n). *text is malloc'd and NUL-terminated (it may hold NUL
 * bytes: use *len). -1 + ar_error for an id outside [0, tok_vocab_size)
 * (`tokenizers` would skip it silently). */
int tok_decode(const tokenizer *t, const int *ids, int n, char **text, size_t *len);

/* The piece (vocabulary string) of an id, NUL-terminated; NULL if out of
 * range. Valid until tok_free. */
const char *tok_piece(const tokenizer *t, int id);
/* The id of a piece or added token, -1 if there is none. */
int tok_piece_to_id(const tokenizer *t, const char *piece);

/* Registers `text` as an added token matched whole in the input before
 * normalisation (like a Hugging Face added token with normalized=false) and
 * returns its id: the existing id when `text` already is a piece or added
 * token, otherwise the next id after the current vocabulary. Added tokens
 * that are not control pieces decode to `text`. -1 + ar_error for an empty
 * text or a text that is not valid UTF-8. */
int tok_add_special(tokenizer *t, const char *text);

#endif
