/* data/tokenizer_spm.c — reads a SentencePiece tokenizer.model (a serialized
 * ModelProto, sentencepiece_model.proto) into a struct tokenizer.
 *
 * Fields read (everything else is skipped):
 *   ModelProto      1 pieces (repeated), 2 trainer_spec, 3 normalizer_spec,
 *                   5 denormalizer_spec
 *   SentencePiece   1 piece, 2 score (float), 3 type
 *   TrainerSpec     3 model_type, 24 treat_whitespace_as_suffix,
 *                   35 byte_fallback, 44 unk_surface, 46-48 bos/eos/pad_piece
 * (the unknown id is the one piece of type UNKNOWN, as libsentencepiece
 * encodes; bos/eos/pad are the CONTROL pieces named by *_piece).
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
 *                   4 remove_extra_whitespaces, 5 escape_whitespaces
 * Proto2 semantics: a repeated occurrence of a scalar replaces it, of a
 * message merges into it; absent fields take the .proto defaults.
 * Validation follows libsentencepiece's model loading (unique non-empty
 * pieces, exactly one UNKNOWN piece, byte pieces only with byte_fallback and
 * then all 256 of them) and refuses what this encoder does not implement.
 */
#include "data/protobuf.h"
#include "data/tokenizer_internal.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *s;
    size_t len;
    int set;
} pb_str;

typedef struct {
    uint64_t model_type;           /* default UNIGRAM = 1 */
    int byte_fallback, ws_suffix;
    pb_str unk_surface, bos_piece, eos_piece, pad_piece;
} trainer_spec;

typedef struct {
    pb_str name, charsmap;
    int add_dummy_prefix, remove_extra_ws, escape_ws;   /* defaults true */
} normalizer_spec;

/* Checks that field f has wire type `wire`; -1 + error naming the field otherwise. */
static int want(const pb_field *f, int wire, const char *origin, const char *field) {
    if (f->wire == wire) return 0;
    return ar_errorf("%s: %s (field %u at byte %zu) has wire type %s; expected %s", origin, field, f->number,
                     f->offset, pb_wire_name(f->wire), pb_wire_name(wire));
}

static int read_trainer(const pb_field *m, const uint8_t *base, trainer_spec *ts, const char *origin) {
    pb_reader r = pb_reader_init(m->data, m->len, base);
    pb_field f;
    int rc;
    while ((rc = pb_next(&r, &f)) > 0) {
        pb_str *str = NULL;
        const char *name = NULL;
        switch (f.number) {
        case 3:
            if (want(&f, PB_VARINT, origin, "trainer_spec.model_type") < 0) return -1;
            ts->model_type = f.value;
            break;
        case 24:
            if (want(&f, PB_VARINT, origin, "trainer_spec.treat_whitespace_as_suffix") < 0) return -1;
            ts->ws_suffix = f.value != 0;
            break;
        case 35:
            if (want(&f, PB_VARINT, origin, "trainer_spec.byte_fallback") < 0) return -1;
            ts->byte_fallback = f.value != 0;
            break;
        case 44: str = &ts->unk_surface; name = "trainer_spec.unk_surface"; break;
        case 46: str = &ts->bos_piece; name = "trainer_spec.bos_piece"; break;
        case 47: str = &ts->eos_piece; name = "trainer_spec.eos_piece"; break;
        case 48: str = &ts->pad_piece; name = "trainer_spec.pad_piece"; break;
        default: break;
        }
        if (str) {
            if (want(&f, PB_LEN, origin, name) < 0) return -1;
            *str = (pb_str){f.data, f.len, 1};
        }
    }
    return rc < 0 ? ar_error_prefix("%s: trainer_spec: ", origin) : 0;
}

static int read_normalizer(const pb_field *m, const uint8_t *base, normalizer_spec *ns, const char *origin,
                           const char *which) {
    pb_reader r = pb_reader_init(m->data, m->len, base);
    pb_field f;
    int rc;
    char field[64];
    while ((rc = pb_next(&r, &f)) > 0) {
        int *flag = NULL;
        switch (f.number) {
        case 1:
        case 2:
            snprintf(field, sizeof field, "%s.%s", which, f.number == 1 ? "name" : "precompiled_charsmap");
            if (want(&f, PB_LEN, origin, field) < 0) return -1;
            *(f.number == 1 ? &ns->name : &ns->charsmap) = (pb_str){f.data, f.len, 1};
            break;
        case 3: flag = &ns->add_dummy_prefix; break;
        case 4: flag = &ns->remove_extra_ws; break;
        case 5: flag = &ns->escape_ws; break;
        default: break;
        }
        if (flag) {
            static const char *names[] = {"", "", "", "add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces"};
            snprintf(field, sizeof field, "%s.%s", which, names[f.number]);
            if (want(&f, PB_VARINT, origin, field) < 0) return -1;
            *flag = f.value != 0;
        }
    }
    return rc < 0 ? ar_error_prefix("%s: %s: ", origin, which) : 0;
}

/* One SentencePiece message: appends the piece to t. */
static int read_piece(tokenizer *t, const pb_field *m, const uint8_t *base, const char *origin) {
    int index = t->n;
    pb_reader r = pb_reader_init(m->data, m->len, base);
    pb_field f;
    int rc;
    const uint8_t *s = NULL;
    size_t len = 0;
    float score = 0.0f;
    uint64_t type = TP_NORMAL;
    char field[64];
    while ((rc = pb_next(&r, &f)) > 0) {
        if (f.number < 1 || f.number > 3) continue;
        static const char *names[] = {"", "piece", "score", "type"};
        static const int wires[] = {0, PB_LEN, PB_I32, PB_VARINT};
        snprintf(field, sizeof field, "pieces[%d].%s", index, names[f.number]);
        if (want(&f, wires[f.number], origin, field) < 0) return -1;
        if (f.number == 1) {
            s = f.data;
            len = f.len;
        } else if (f.number == 2) {
            uint32_t bits = (uint32_t)f.value;
            memcpy(&score, &bits, sizeof score);
        } else {
            type = f.value;
        }
    }
    if (rc < 0) return ar_error_prefix("%s: pieces[%d]: ", origin, index);
    if (!s || len == 0) return ar_errorf("%s: pieces[%d]: the piece string is empty or missing", origin, index);
    if (type < 1 || type > 6)
        return ar_errorf("%s: pieces[%d] '%.*s': type %llu is not a SentencePiece type (1..6)", origin, index,
                         (int)(len > 64 ? 64 : len), (const char *)s, (unsigned long long)type);
    return tok_push_piece(t, (const char *)s, len, score, (int)type) < 0 ? -1 : 0;
}

/* The id of the special piece named by `ps` (or `def`) if it has `type`, else -1 (as libsentencepiece). */
static int special_id(const tokenizer *t, const pb_str *ps, const char *def, int type) {
    int id = ps->set ? tok_lookup(t, (const char *)ps->s, ps->len) : tok_lookup(t, def, strlen(def));
    return id >= 0 && t->p[id].type == type ? id : -1;
}

int tok_load_spm(tokenizer *t, const uint8_t *data, size_t len, const char *origin) {
    trainer_spec ts = {.model_type = 1};
    normalizer_spec ns = {.add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    normalizer_spec dn = {.add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    int have_trainer = 0;
    pb_reader r = pb_reader_init(data, len, data);
    pb_field f;
    int rc;
    while ((rc = pb_next(&r, &f)) > 0) {
        switch (f.number) {
        case 1:
            if (want(&f, PB_LEN, origin, "pieces") < 0 || read_piece(t, &f, data, origin) < 0) return -1;
            break;
        case 2:
            if (want(&f, PB_LEN, origin, "trainer_spec") < 0 || read_trainer(&f, data, &ts, origin) < 0) return -1;
            have_trainer = 1;
            break;
        case 3:
            if (want(&f, PB_LEN, origin, "normalizer_spec") < 0 ||
                read_normalizer(&f, data, &ns, origin, "normalizer_spec") < 0)
                return -1;
            break;
        case 5:
            if (want(&f, PB_LEN, origin, "denormalizer_spec") < 0 ||
                read_normalizer(&f, data, &dn, origin, "denormalizer_spec") < 0)
                return -1;
            break;
        default: break;
        }
    }
    if (rc < 0) return ar_error_prefix("%s: not a SentencePiece model: ", origin);
    if (t->n == 0) return ar_errorf("%s: not a SentencePiece model: no pieces (field 1 of ModelProto)", origin);
    if (!have_trainer) return ar_errorf("%s: trainer_spec is missing (needed for the model type)", origin);

    /* what this implementation supports */
    if (ts.model_type != 2)
        return ar_errorf("%s: trainer_spec.model_type is %s (%llu); only BPE (2) is supported", origin,
                         ts.model_type == 1 ? "UNIGRAM" : ts.model_type == 3 ? "WORD" : ts.model_type == 4 ? "CHAR" : "unknown",
                         (unsigned long long)ts.model_type);
    if (ns.charsmap.len > 0)
        return ar_errorf("%s: normalizer_spec '%.*s' has a precompiled_charsmap (%zu bytes); only the identity "
                         "normaliser (no character map) is supported", origin,
                         (int)(ns.name.len > 64 ? 64 : ns.name.len), ns.name.s ? (const char *)ns.name.s : "",
                         ns.charsmap.len);
    if (dn.charsmap.len > 0)
        return ar_errorf("%s: denormalizer_spec has a precompiled_charsmap (%zu bytes); denormalisation is not supported",
                         origin, dn.charsmap.len);
    if (!ns.escape_ws)
        return ar_errorf("%s: normalizer_spec.escape_whitespaces is false; only true is supported", origin);
    if (ts.ws_suffix)
        return ar_errorf("%s: trainer_spec.treat_whitespace_as_suffix is true; only false is supported", origin);

    /* libsentencepiece's checks */
    t->n_base = t->n;
    if (tok_build_index(t, origin) < 0) return -1;
    int bytes = 0;
    for (int i = 0; i < t->n; i++) {
        const tok_piece_t *p = &t->p[i];
        if (p->type == TP_UNKNOWN) {
            if (t->unk >= 0)
                return ar_errorf("%s: pieces[%d] '%s' and pieces[%d] '%s' are both UNKNOWN; expected exactly one",
                                 origin, t->unk, t->p[t->unk].s, i, p->s);
            t->unk = i;
        } else if (p->type == TP_BYTE) {
            if (!ts.byte_fallback)
                return ar_errorf("%s: pieces[%d] '%s' is a BYTE piece but trainer_spec.byte_fallback is false", origin,
                                 i, p->s);
            int b = tok_byte_piece_value(p->s, p->len);
            if (b < 0) return ar_errorf("%s: pieces[%d] '%s' is a BYTE piece; expected the form <0xXX>", origin, i, p->s);
            if (t->byte_id[b] < 0) bytes++;
            t->byte_id[b] = i;
        } else if (p->type == TP_USER) {
            if (tok_push_split(t, p->s, p->len, i, 1) < 0) return -1;
        }
    }
    if (t->unk < 0) return ar_errorf("%s: no piece has type UNKNOWN (expected one, e.g. <unk>)", origin);
    if (ts.byte_fallback && bytes != 256)
        return ar_errorf("%s: trainer_spec.byte_fallback is true but only %d of the 256 byte pieces <0x00>..<0xFF> exist",
                         origin, bytes);
    t->byte_fallback = ts.byte_fallback;
    t->add_dummy_prefix = ns.add_dummy_prefix;
    t->remove_extra_ws = ns.remove_extra_ws;
    t->bos = special_id(t, &ts.bos_piece, "<s>", TP_CONTROL);
    t->eos = special_id(t, &ts.eos_piece, "</s>", TP_CONTROL);
    t->pad = special_id(t, &ts.pad_piece, "<pad>", TP_CONTROL);
    const char *surface = ts.unk_surface.set ? (const char *)ts.unk_surface.s : " \xE2\x81\x87 ";
    size_t slen = ts.unk_surface.set ? ts.unk_surface.len : strlen(surface);
    t->unk_surface = malloc(slen + 1);
    if (!t->unk_surface) return ar_errorf("tokenizer: out of memory");
    memcpy(t->unk_surface, surface, slen);
    t->unk_surface[slen] = '\0';
    t->unk_surface_len = slen;
    return 0;
}
