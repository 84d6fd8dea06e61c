/* data/tokenizer_hf.c — reads a Hugging Face tokenizer.json of the LLaMA
 * family (the layout transformers' LlamaConverter writes) into a struct
 * tokenizer:
 *
 *   "model":        {"type": "BPE", "vocab": {piece: id}, "merges": ["a b", ...]
 *                    or [["a", "b"], ...], "unk_token", "byte_fallback",
 *                    "fuse_unk", "dropout": null, "continuing_subword_prefix"
 *                    and "end_of_word_suffix": null or "", "ignore_merges": false}
 *   "normalizer":   Sequence[Prepend("▁"), Replace(" ", "▁")]
 *   "pre_tokenizer": null
 *   "decoder":      Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
 *   "added_tokens": [{"id", "content", "special", "normalized", "lstrip": false,
 *                    "rstrip": false, "single_word": false}]
 * A normalized added token is matched, and decodes, in its normalised form
 * ("▁" + content with ' ' -> '▁'), as `tokenizers` does.
 *   "post_processor", "truncation", "padding": not used (BOS/EOS are flags
 *                    of tok_encode; the ids are those of "<s>" and "</s>").
 * Anything else is refused with a message naming the field. Vocabulary ids
 * must be exactly 0..n-1; added tokens either repeat a vocabulary entry (same
 * id and text) or take the ids n, n+1, ... in order.
 */
#include "data/tokenizer_internal.h"

#include "core/error.h"
#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WS "\xE2\x96\x81"   /* U+2581 '▁' */

/* A short printable rendering of a JSON string for messages. */
static const char *shown(const json_value *v, char *buf, size_t cap) {
    if (!v) return "(missing)";
    if (v->type != JSON_STRING) return json_type_name(v->type);
    snprintf(buf, cap, "\"%.*s\"", (int)(v->len > 60 ? 60 : v->len), v->str);
    return buf;
}

static int is_str(const json_value *v, const char *s) {
    return v && v->type == JSON_STRING && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

/* Optional boolean: absent or null -> def; anything but a boolean is an error. */
static int opt_bool(const json_value *obj, const char *key, int def, int *out, const char *origin, const char *where) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        *out = def;
        return 0;
    }
    if (v->type != JSON_BOOL)
        return ar_errorf("%s: %s.%s is a %s; expected true or false", origin, where, key, json_type_name(v->type));
    *out = v->boolean;
    return 0;
}

/* A {"String": s} pattern equal to s. */
static int is_string_pattern(const json_value *v, const char *s) {
    return v && v->type == JSON_OBJECT && v->n == 1 && is_str(json_get(v, "String"), s);
}

static int check_normalizer(const json_value *root, const char *origin) {
    const json_value *n = json_get(root, "normalizer");
    const json_value *list = json_get(n, "normalizers");
    const json_value *a = json_at(list, 0), *b = json_at(list, 1);
    if (n && is_str(json_get(n, "type"), "Sequence") && list && list->type == JSON_ARRAY && list->n == 2 &&
        is_str(json_get(a, "type"), "Prepend") && is_str(json_get(a, "prepend"), WS) &&
        is_str(json_get(b, "type"), "Replace") && is_string_pattern(json_get(b, "pattern"), " ") &&
        is_str(json_get(b, "content"), WS))
        return 0;
    char buf[80];
    return ar_errorf("%s: normalizer (type %s) is not the LLaMA layout; expected Sequence[Prepend(\"\xE2\x96\x81\"), "
                     "Replace(\" \", \"\xE2\x96\x81\")] (Metaspace and other layouts are not supported)",
                     origin, n ? shown(json_get(n, "type"), buf, sizeof buf) : "null");
}

static int check_decoder(const json_value *root, const char *origin) {
    const json_value *d = json_get(root, "decoder");
    const json_value *list = json_get(d, "decoders");
    const json_value *a = json_at(list, 0), *b = json_at(list, 1), *c = json_at(list, 2), *e = json_at(list, 3);
    int64_t start = -1, stop = -1;
    if (e && json_get(e, "start") && json_get(e, "stop")) {
        const json_value *s1 = json_get(e, "start"), *s2 = json_get(e, "stop");
        if (s1->type == JSON_NUMBER && s1->is_int) start = s1->integer;
        if (s2->type == JSON_NUMBER && s2->is_int) stop = s2->integer;
    }
    if (d && is_str(json_get(d, "type"), "Sequence") && list && list->type == JSON_ARRAY && list->n == 4 &&
        is_str(json_get(a, "type"), "Replace") && is_string_pattern(json_get(a, "pattern"), WS) &&
        is_str(json_get(a, "content"), " ") && is_str(json_get(b, "type"), "ByteFallback") &&
        is_str(json_get(c, "type"), "Fuse") && is_str(json_get(e, "type"), "Strip") &&
        is_str(json_get(e, "content"), " ") && start == 1 && stop == 0)
        return 0;
    char buf[80];
    return ar_errorf("%s: decoder (type %s) is not the LLaMA layout; expected Sequence[Replace(\"\xE2\x96\x81\", \" \"), "
                     "ByteFallback, Fuse, Strip(\" \", 1, 0)]",
                     origin, d ? shown(json_get(d, "type"), buf, sizeof buf) : "null");
}

static int check_model_options(const json_value *m, const char *origin) {
    char buf[80];
    const json_value *v = json_get(m, "type");
    if (!is_str(v, "BPE"))
        return ar_errorf("%s: model.type is %s; only \"BPE\" is supported", origin, shown(v, buf, sizeof buf));
    v = json_get(m, "dropout");
    if (v && v->type != JSON_NULL && !(v->type == JSON_NUMBER && v->number == 0.0))
        return ar_errorf("%s: model.dropout must be null (BPE dropout is not supported)", origin);
    static const char *empty_ok[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_get(m, empty_ok[i]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->len == 0))
            return ar_errorf("%s: model.%s is %s; only null is supported", origin, empty_ok[i], shown(v, buf, sizeof buf));
    }
    int ignore = 0;
    if (opt_bool(m, "ignore_merges", 0, &ignore, origin, "model") < 0) return -1;
    if (ignore) return ar_errorf("%s: model.ignore_merges is true; only false is supported", origin);
    return 0;
}

static int read_vocab(tokenizer *t, const json_value *m, const char *origin) {
    const json_value *vocab = json_get(m, "vocab");
    if (!vocab || vocab->type != JSON_OBJECT)
        return ar_errorf("%s: model.vocab is %s; expected an object {piece: id}", origin,
                         vocab ? json_type_name(vocab->type) : "missing");
    size_t n = vocab->n;
    if (n == 0) return ar_errorf("%s: model.vocab is empty", origin);
    if (n > (size_t)1 << 30) return ar_errorf("%s: model.vocab has %zu entries; too many", origin, n);
    int *at = malloc(n * sizeof *at);   /* at[id] = member index */
    if (!at) return ar_errorf("tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) at[i] = -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_member *mb = &vocab->members[i];
        const json_value *v = &mb->value;
        if (v->type != JSON_NUMBER || !v->is_int || v->integer < 0 || (uint64_t)v->integer >= n)
            rc = ar_errorf("%s: model.vocab[\"%.*s\"] is not an id in [0, %zu) (the vocabulary must use ids 0..n-1)",
                           origin, (int)(mb->key_len > 60 ? 60 : mb->key_len), mb->key, n);
        else if (at[v->integer] >= 0)
            rc = ar_errorf("%s: model.vocab: id %lld is given to both \"%s\" and \"%s\"", origin,
                           (long long)v->integer, vocab->members[at[v->integer]].key, mb->key);
        else if (mb->key_len == 0)
            rc = ar_errorf("%s: model.vocab: the empty string has id %lld; pieces must not be empty", origin,
                           (long long)v->integer);
        else
            at[v->integer] = (int)i;
    }
    for (size_t id = 0; id < n && rc == 0; id++) {
        const json_member *mb = &vocab->members[at[id]];
        int b = tok_byte_piece_value(mb->key, mb->key_len);
        if (tok_push_piece(t, mb->key, mb->key_len, 0.0f, b >= 0 ? TP_BYTE : TP_NORMAL) < 0) rc = -1;
        else if (b >= 0) t->byte_id[b] = (int)id;
    }
    free(at);
    if (rc < 0) return -1;
    t->n_base = t->n;
    return tok_build_index(t, origin);
}

static int read_merges(tokenizer *t, const json_value *m, const char *origin) {
    const json_value *merges = json_get(m, "merges");
    if (!merges || merges->type != JSON_ARRAY)
        return ar_errorf("%s: model.merges is %s; expected an array", origin, merges ? json_type_name(merges->type) : "missing");
    if (merges->n > (size_t)1 << 28) return ar_errorf("%s: model.merges has %zu entries; too many", origin, merges->n);
    size_t size = 64;
    while (size < 2 * merges->n) size *= 2;
    t->merges = malloc(size * sizeof *t->merges);
    if (!t->merges) return ar_errorf("tokenizer: out of memory");
    for (size_t i = 0; i < size; i++) t->merges[i].key = UINT64_MAX;
    t->merge_mask = (uint32_t)(size - 1);
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < merges->n && rc == 0; i++) {
        const json_value *e = &merges->items[i];
        const char *a, *b;
        size_t la, lb;
        if (e->type == JSON_STRING) {   /* "a b": exactly one space */
            const char *sp = memchr(e->str, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp + 1 - e->str))) {
                rc = ar_errorf("%s: model.merges[%zu] \"%.*s\": expected two pieces separated by one space", origin, i,
                               (int)(e->len > 60 ? 60 : e->len), e->str);
                break;
            }
            a = e->str;
            la = (size_t)(sp - e->str);
            b = sp + 1;
            lb = e->len - la - 1;
        } else if (e->type == JSON_ARRAY && e->n == 2 && e->items[0].type == JSON_STRING &&
                   e->items[1].type == JSON_STRING) {
            a = e->items[0].str;
            la = e->items[0].len;
            b = e->items[1].str;
            lb = e->items[1].len;
        } else {
            rc = ar_errorf("%s: model.merges[%zu] is a %s; expected \"a b\" or [\"a\", \"b\"]", origin, i,
                           json_type_name(e->type));
            break;
        }
        int ia = tok_lookup(t, a, la), ib = tok_lookup(t, b, lb);
        if (ia < 0 || ib < 0) {
            rc = ar_errorf("%s: model.merges[%zu]: \"%.*s\" is not in model.vocab", origin, i,
                           (int)(ia < 0 ? (la > 60 ? 60 : la) : (lb > 60 ? 60 : lb)), ia < 0 ? a : b);
            break;
        }
        if (la + lb + 1 > cat_cap) {
            free(cat);
            cat_cap = 2 * (la + lb + 1);
            cat = malloc(cat_cap);
            if (!cat) {
                rc = ar_errorf("tokenizer: out of memory");
                break;
            }
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int nid = tok_lookup(t, cat, la + lb);
        if (nid < 0) {
            rc = ar_errorf("%s: model.merges[%zu]: the merged piece \"%.*s%.*s\" is not in model.vocab", origin, i,
                           (int)(la > 60 ? 60 : la), a, (int)(lb > 60 ? 60 : lb), b);
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & t->merge_mask;
        while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
        t->merges[h] = (tok_merge_t){key, (int32_t)i, nid};   /* a repeated pair: the later one counts */
    }
    free(cat);
    return rc;
}

static int read_added(tokenizer *t, const json_value *root, const char *origin) {
    const json_value *list = json_get(root, "added_tokens");
    if (!list || list->type == JSON_NULL) return 0;
    if (list->type != JSON_ARRAY) return ar_errorf("%s: added_tokens is a %s; expected an array", origin, json_type_name(list->type));
    /* order by id (a stable selection: the list is short) */
    size_t n = list->n;
    int *order = malloc((n ? n : 1) * sizeof *order);
    int64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!order || !ids) {
        free(order);
        free(ids);
        return ar_errorf("tokenizer: out of memory");
    }
    int rc = 0;
    char where[64];
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_value *e = &list->items[i];
        int64_t id;
        snprintf(where, sizeof where, "%s: added_tokens[%zu]", origin, i);
        if (e->type != JSON_OBJECT) rc = ar_errorf("%s is a %s; expected an object", where, json_type_name(e->type));
        else if (json_get_int64(e, "id", &id, where) < 0) rc = -1;
        else if (id < 0 || id > INT32_MAX - 2) rc = ar_errorf("%s: id %lld is out of range", where, (long long)id);
        else ids[i] = id;
        order[i] = (int)i;
    }
    for (size_t i = 1; i < n && rc == 0; i++) {
        int x = order[i];
        size_t j = i;
        while (j > 0 && ids[order[j - 1]] > ids[x]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        size_t i = (size_t)order[k];
        const json_value *e = &list->items[i];
        snprintf(where, sizeof where, "%s: added_tokens[%zu]", origin, i);
        int64_t id = ids[i];
        const char *content;
        size_t len;
        int special = 0, normalized = 0, flag = 0;
        if (json_get_string(e, "content", &content, &len, where) < 0 ||
            opt_bool(e, "special", 0, &special, origin, where) < 0 ||
            opt_bool(e, "normalized", !special, &normalized, origin, where) < 0) {
            rc = -1;
            break;
        }
        static const char *unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (int u = 0; u < 3 && rc == 0; u++) {
            if (opt_bool(e, unsupported[u], 0, &flag, origin, where) < 0) rc = -1;
            else if (flag) rc = ar_errorf("%s (\"%.*s\"): %s is true; only false is supported", where, (int)(len > 60 ? 60 : len), content, unsupported[u]);
        }
        if (rc) break;
        if (len == 0) {
            rc = ar_errorf("%s: content is empty", where);
            break;
        }
        if (id < t->n_base) {
            if (t->p[id].len != len || memcmp(t->p[id].s, content, len) != 0) {
                rc = ar_errorf("%s: id %lld is \"%.*s\" but model.vocab has \"%s\" at that id", where, (long long)id,
                               (int)(len > 60 ? 60 : len), content, t->p[id].s);
                break;
            }
        } else {
            if (id != t->n) {
                rc = ar_errorf("%s (\"%.*s\"): id %lld; expected %d (added tokens outside model.vocab must take the next ids in order)",
                               where, (int)(len > 60 ? 60 : len), content, (long long)id, t->n);
                break;
            }
            if (tok_lookup(t, content, len) >= 0) {
                rc = ar_errorf("%s: \"%.*s\" is already in the vocabulary", where, (int)(len > 60 ? 60 : len), content);
                break;
            }
            if (tok_push_piece(t, content, len, 0.0f, TP_ADDED) < 0) {
                rc = -1;
                break;
            }
        }
        t->p[id].special = (uint8_t)special;
        if (!normalized) {
            rc = tok_push_split(t, content, len, (int)id, 0);
        } else {   /* matched in normalised text, in its normalised form: "▁" + content with ' ' -> '▁' */
            size_t cap = 3 + 3 * len, o = 3;
            char *pat = malloc(cap);
            if (!pat) {
                rc = ar_errorf("tokenizer: out of memory");
                break;
            }
            memcpy(pat, WS, 3);
            for (size_t c = 0; c < len; c++) {
                if (content[c] == ' ') {
                    memcpy(pat + o, WS, 3);
                    o += 3;
                } else {
                    pat[o++] = content[c];
                }
            }
            rc = tok_push_split(t, pat, o, (int)id, 1);
            free(t->p[id].text);   /* it also decodes as that form */
            t->p[id].text = pat;
            t->p[id].text_len = (uint32_t)o;
        }
    }
    free(order);
    free(ids);
    if (rc < 0) return -1;
    return tok_build_index(t, origin);
}

int tok_load_hf(tokenizer *t, const char *data, size_t len, const char *origin) {
    json_doc *d = json_parse(data, len, origin);
    if (!d) return -1;
    const json_value *root = json_root(d);
    const json_value *m = json_get(root, "model");
    char buf[80];
    int rc = -1;
    if (!root || root->type != JSON_OBJECT) {
        ar_errorf("%s: expected a JSON object at the top level", origin);
        goto done;
    }
    if (!m || m->type != JSON_OBJECT) {
        ar_errorf("%s: \"model\" is %s; expected an object", origin, m ? json_type_name(m->type) : "missing");
        goto done;
    }
    const json_value *pre = json_get(root, "pre_tokenizer");
    if (pre && pre->type != JSON_NULL) {
        ar_errorf("%s: pre_tokenizer is %s (type %s); only null is supported (the LLaMA layout)", origin,
                  json_type_name(pre->type), shown(json_get(pre, "type"), buf, sizeof buf));
        goto done;
    }
    if (check_model_options(m, origin) < 0 || check_normalizer(root, origin) < 0 || check_decoder(root, origin) < 0)
        goto done;
    if (opt_bool(m, "byte_fallback", 0, &t->byte_fallback, origin, "model") < 0 ||
        opt_bool(m, "fuse_unk", 0, &t->fuse_unk, origin, "model") < 0)
        goto done;
    if (read_vocab(t, m, origin) < 0 || read_merges(t, m, origin) < 0 || read_added(t, root, origin) < 0) goto done;
    const json_value *unk = json_get(m, "unk_token");
    if (unk && unk->type != JSON_NULL) {
        if (unk->type != JSON_STRING) {
            ar_errorf("%s: model.unk_token is a %s; expected a string or null", origin, json_type_name(unk->type));
            goto done;
        }
        t->unk = tok_lookup(t, unk->str, unk->len);
        if (t->unk < 0 || t->unk >= t->n_base) {
            ar_errorf("%s: model.unk_token %s is not in model.vocab", origin, shown(unk, buf, sizeof buf));
            goto done;
        }
    }
    t->bos = tok_lookup(t, "<s>", 3);
    t->eos = tok_lookup(t, "</s>", 4);
    t->pad = tok_lookup(t, "<pad>", 5);
    t->add_dummy_prefix = 1;
    t->remove_extra_ws = 0;
    rc = 0;
done:
    json_free(d);
    return rc;
}
