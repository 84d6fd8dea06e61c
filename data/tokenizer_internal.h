/* data/tokenizer_internal.h — what tokenizer.c shares with the two loaders
 * (tokenizer_spm.c for tokenizer.model, tokenizer_hf.c for tokenizer.json).
 * Not part of the public API. */
#ifndef ANYREF_DATA_TOKENIZER_INTERNAL_H
#define ANYREF_DATA_TOKENIZER_INTERNAL_H

#include "data/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* Piece types: SentencePiece's numbering, plus TP_ADDED for ids appended by
 * tok_add_special or a tokenizer.json added token outside the vocabulary. */
enum { TP_NORMAL = 1, TP_UNKNOWN = 2, TP_CONTROL = 3, TP_USER = 4, TP_UNUSED = 5, TP_BYTE = 6, TP_ADDED = 7 };
enum { TOK_SPM = 1, TOK_HF = 2 };

typedef struct {
    char *s;        /* NUL-terminated (may hold NUL bytes: use len) */
    uint32_t len;
    float score;    /* .model: the piece's score; .json: 0 */
    uint8_t type;   /* TP_* */
    uint8_t special;/* .json: a special added token, dropped by decode */
    char *text;     /* .json: how a normalized added token decodes (its normalised
                       form, "▁" + content, as `tokenizers` does); NULL = s */
    uint32_t text_len;
} tok_piece_t;

/* A string matched whole before BPE: at the raw stage (before normalisation)
 * or at the normalised stage (user-defined symbols, normalized added tokens). */
typedef struct {
    char *pat;
    uint32_t len;
    int id;
    uint8_t normalized;
} tok_split_t;

/* Open-addressing table: uint64 key -> (rank, new id) for the merges of a tokenizer.json. */
typedef struct {
    uint64_t key;   /* (left id << 32) | right id; UINT64_MAX = empty */
    int32_t rank, new_id;
} tok_merge_t;

struct tokenizer {
    int kind;                 /* TOK_SPM or TOK_HF */
    tok_piece_t *p;
    int n, cap;               /* ids [0, n) */
    int n_base;               /* the model's own vocabulary [0, n_base) */
    int32_t *tab;             /* piece string -> id, open addressing, -1 empty */
    uint32_t tab_mask;
    int unk, bos, eos, pad;
    int byte_id[256];         /* id of "<0xXX>", -1 if none */
    int byte_fallback;
    int add_dummy_prefix;
    int remove_extra_ws;      /* .model only */
    int fuse_unk;             /* .json only (.model always fuses unknown pieces) */
    int ws_id;                /* id of the piece "▁", -1 if none */
    int chunkable;            /* no merge can join a character to a following '▁'
                                 (see tok_encode): long texts are merged in chunks */
    char *unk_surface;        /* .model: how <unk> decodes (default " \xE2\x81\x87 ") */
    size_t unk_surface_len;
    tok_merge_t *merges;      /* .json only */
    uint32_t merge_mask;
    tok_split_t *split;
    int n_split, cap_split;
    /* per stage (0 raw, 1 normalised): indices into split[] grouped by first
     * byte, longest first: order[stage][start[stage][b] .. start[stage][b+1]) */
    int *order[2];
    int start[2][257];
};

/* tokenizer.c */
tokenizer *tok_new(int kind);
/* Appends a piece (copies s[0..len)); its id, or -1 + ar_error (out of memory). */
int tok_push_piece(tokenizer *t, const char *s, size_t len, float score, int type);
/* Builds the piece -> id table; -1 + ar_error naming origin and the duplicate piece. */
int tok_build_index(tokenizer *t, const char *origin);
int tok_lookup(const tokenizer *t, const char *s, size_t len);
/* Adds a split string (copied) for id; rebuilds the per-stage order. */
int tok_push_split(tokenizer *t, const char *pat, size_t len, int id, int normalized);
/* "<0xXX>" with uppercase hex -> XX, else -1 (SentencePiece's byte pieces). */
int tok_byte_piece_value(const char *s, size_t len);
/* 1 if s[0..len) is valid UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int tok_utf8_valid(const char *s, size_t len);

/* tokenizer_spm.c / tokenizer_hf.c: fill a tok_new()'d tokenizer; -1 + ar_error. */
int tok_load_spm(tokenizer *t, const uint8_t *data, size_t len, const char *origin);
int tok_load_hf(tokenizer *t, const char *data, size_t len, const char *origin);

#endif
