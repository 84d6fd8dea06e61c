/* data/refer.c — REFER refs(<splitBy>).p records, split filters and image
 * paths (data/refer.h). Strings point into the pickle's tree, which the set
 * keeps until refer_free. Depends on data/pickle.h, core/error.h, core/log.h.
 */
#include "data/refer.h"

#include "core/error.h"
#include "core/log.h"
#include "data/pickle.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[] = {"refcoco", "refcoco+", "refcocog", "refclef"};

int refer_dataset_from_name(const char *name, refer_dataset *out) {
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, k_names[i]) == 0) { *out = (refer_dataset)i; return 0; }
    return ar_errorf("unknown REFER data set \"%s\" (expected refcoco, refcoco+, refcocog or refclef)", name ? name : "(null)");
}

const char *refer_dataset_name(refer_dataset d) { return (unsigned)d < 4 ? k_names[d] : "?"; }
const char *refer_default_split_by(refer_dataset d) { return d == REFER_REFCOCOG ? "umd" : "unc"; }

/* ---- record validation ---------------------------------------------------------------------- */

/* Why a ref is skipped: "<field>: <problem>", written into why. */
typedef struct { char why[256]; } verdict;

static int bad(verdict *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(verdict *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof w->why, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *found(const pk_value *v) { return v ? pk_type_name(v->type) : "nothing"; }

static int get_int(const pk_value *d, const char *key, int64_t *out, verdict *w, const char *ctx) {
    const pk_value *v = pk_dict_get(d, key);
    if (!v) return bad(w, "%s%s: missing", ctx, key);
    if (v->type != PK_INT) return bad(w, "%s%s: expected int, found %s", ctx, key, found(v));
    *out = v->i;
    return 0;
}

static int str_ok(const pk_value *v) { return v->type == PK_STR && strlen(v->s) == v->len; }

/* required: 1 = must exist; out NULL when absent and optional */
static int get_str(const pk_value *d, const char *key, int required, const char **out, verdict *w, const char *ctx) {
    const pk_value *v = pk_dict_get(d, key);
    *out = NULL;
    if (!v) return required ? bad(w, "%s%s: missing", ctx, key) : 0;
    if (v->type != PK_STR) return bad(w, "%s%s: expected str, found %s", ctx, key, found(v));
    if (!str_ok(v)) return bad(w, "%s%s: contains a NUL byte", ctx, key);
    *out = v->s;
    return 0;
}

static int is_seq(const pk_value *v) { return v && (v->type == PK_LIST || v->type == PK_TUPLE); }

/* Checks one ref; counts its sentences and tokens. 0 or -1 with w->why. */
static int check_ref(const pk_value *r, verdict *w, size_t *n_sent, size_t *n_tok) {
    if (!r || r->type != PK_DICT) return bad(w, "expected a dict, found %s", found(r));
    int64_t x;
    const char *s;
    if (get_int(r, "ref_id", &x, w, "") < 0 || get_int(r, "ann_id", &x, w, "") < 0 ||
        get_int(r, "image_id", &x, w, "") < 0 || get_int(r, "category_id", &x, w, "") < 0)
        return -1;
    if (get_str(r, "split", 1, &s, w, "") < 0) return -1;
    if (!*s) return bad(w, "split: empty");
    if (get_str(r, "file_name", 0, &s, w, "") < 0) return -1;
    const pk_value *ss = pk_dict_get(r, "sentences");
    if (!ss) return bad(w, "sentences: missing");
    if (!is_seq(ss)) return bad(w, "sentences: expected list, found %s", found(ss));
    if (ss->n == 0) return bad(w, "sentences: empty");
    if (ss->n > INT32_MAX) return bad(w, "sentences: too many");
    for (size_t j = 0; j < ss->n; j++) {
        const pk_value *t = ss->items[j];
        char ctx[48];
        snprintf(ctx, sizeof ctx, "sentences[%zu].", j);
        if (t->type != PK_DICT) return bad(w, "sentences[%zu]: expected dict, found %s", j, found(t));
        if (get_str(t, "sent", 1, &s, w, ctx) < 0 || get_int(t, "sent_id", &x, w, ctx) < 0 ||
            get_str(t, "raw", 0, &s, w, ctx) < 0)
            return -1;
        const pk_value *tk = pk_dict_get(t, "tokens");
        if (tk) {
            if (!is_seq(tk)) return bad(w, "%stokens: expected list, found %s", ctx, found(tk));
            if (tk->n > INT32_MAX) return bad(w, "%stokens: too many", ctx);
            for (size_t k = 0; k < tk->n; k++) {
                if (tk->items[k]->type != PK_STR)
                    return bad(w, "%stokens[%zu]: expected str, found %s", ctx, k, found(tk->items[k]));
                if (!str_ok(tk->items[k])) return bad(w, "%stokens[%zu]: contains a NUL byte", ctx, k);
            }
            *n_tok += tk->n;
        }
    }
    *n_sent += ss->n;
    return 0;
}

static refer_set *build(pk_doc *doc, const char *dataset, const char *split_by) {
    refer_dataset id = REFER_REFCOCO;
    if (refer_dataset_from_name(dataset, &id) < 0) { pk_free(doc); return NULL; }
    const char *name = pk_name(doc);
    const pk_value *root = pk_root(doc);
    if (!is_seq(root)) {
        ar_errorf("%s: expected a pickled list of refs, found a %s", name, found(root));
        pk_free(doc);
        return NULL;
    }
    refer_set *s = calloc(1, sizeof *s);
    unsigned char *ok = calloc(root->n ? root->n : 1, 1);
    if (!s || !ok) goto oom;
    s->dataset = id;
    snprintf(s->name, sizeof s->name, "%s", refer_dataset_name(id));
    snprintf(s->split_by, sizeof s->split_by, "%s", split_by ? split_by : "");
    s->doc = doc;
    s->n_total = root->n;

    size_t n_sent = 0, n_tok = 0, warned = 0;
    for (size_t i = 0; i < root->n; i++) {
        verdict w;
        size_t ns = 0, nt = 0;
        if (check_ref(root->items[i], &w, &ns, &nt) < 0) {
            s->n_skipped++;
            if (warned++ < REFER_MAX_WARNINGS) log_warn("%s: ref %zu skipped: %s", name, i, w.why);
            continue;
        }
        ok[i] = 1;
        s->n_refs++;
        n_sent += ns;
        n_tok += nt;
    }
    if (warned > REFER_MAX_WARNINGS)
        log_warn("%s: %zu refs skipped in all (%zu warnings not shown)", name, s->n_skipped, warned - REFER_MAX_WARNINGS);

    s->refs = calloc(s->n_refs ? s->n_refs : 1, sizeof *s->refs);
    s->sent_store = calloc(n_sent ? n_sent : 1, sizeof *s->sent_store);
    s->tok_store = calloc(n_tok ? n_tok : 1, sizeof *s->tok_store);
    if (!s->refs || !s->sent_store || !s->tok_store) goto oom;

    size_t r = 0, si = 0, ti = 0;
    for (size_t i = 0; i < root->n; i++) {
        if (!ok[i]) continue;
        const pk_value *d = root->items[i];
        refer_ref *o = &s->refs[r++];
        o->index = i;
        o->ref_id = pk_dict_get(d, "ref_id")->i;
        o->ann_id = pk_dict_get(d, "ann_id")->i;
        o->image_id = pk_dict_get(d, "image_id")->i;
        o->category_id = pk_dict_get(d, "category_id")->i;
        o->split = pk_dict_get(d, "split")->s;
        const pk_value *fn = pk_dict_get(d, "file_name");
        o->file_name = fn ? fn->s : NULL;
        const pk_value *ss = pk_dict_get(d, "sentences");
        o->sentences = &s->sent_store[si];
        o->n_sentences = (int)ss->n;
        for (size_t j = 0; j < ss->n; j++) {
            const pk_value *t = ss->items[j];
            refer_sentence *q = &s->sent_store[si++];
            q->sent = pk_dict_get(t, "sent")->s;
            q->sent_id = pk_dict_get(t, "sent_id")->i;
            const pk_value *raw = pk_dict_get(t, "raw");
            q->raw = raw ? raw->s : NULL;
            const pk_value *tk = pk_dict_get(t, "tokens");
            if (tk) {
                q->tokens = &s->tok_store[ti];
                q->n_tokens = (int)tk->n;
                for (size_t k = 0; k < tk->n; k++) s->tok_store[ti++] = tk->items[k]->s;
            }
        }
    }
    free(ok);
    return s;
oom:
    free(ok);
    if (s) { s->doc = NULL; refer_free(s); }
    pk_free(doc);
    ar_errorf("%s: out of memory", name);
    return NULL;
}

refer_set *refer_from_pickle(const void *data, size_t len, const char *name, const char *dataset) {
    refer_dataset id = REFER_REFCOCO;
    if (refer_dataset_from_name(dataset, &id) < 0) return NULL;
    pk_doc *d = pk_parse(data, len, name);
    return d ? build(d, dataset, NULL) : NULL;
}

refer_set *refer_load_file(const char *path, const char *dataset, const char *split_by) {
    refer_dataset id = REFER_REFCOCO;
    if (refer_dataset_from_name(dataset, &id) < 0) return NULL;
    pk_doc *d = pk_load_file(path);
    return d ? build(d, dataset, split_by) : NULL;
}

refer_set *refer_load(const char *root, const char *dataset, const char *split_by) {
    refer_dataset id = REFER_REFCOCO;
    if (refer_dataset_from_name(dataset, &id) < 0) return NULL;
    if (!split_by) split_by = refer_default_split_by(id);
    if (!*split_by || strchr(split_by, '/') || strlen(split_by) >= sizeof ((refer_set *)0)->split_by) {
        ar_errorf("invalid REFER splitBy \"%s\"", split_by);
        return NULL;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s/refs(%s).p", root, dataset, split_by) >= (int)sizeof path) {
        ar_errorf("%s: path too long", root);
        return NULL;
    }
    return refer_load_file(path, dataset, split_by);
}

void refer_free(refer_set *s) {
    if (!s) return;
    pk_free(s->doc);
    free(s->refs);
    free(s->sent_store);
    free(s->tok_store);
    free(s);
}

/* ---- splits --------------------------------------------------------------------------------- */

int refer_in_split(const char *ref_split, const char *split) {
    if (!split) return ar_errorf("no split given");
    if (!ref_split) ref_split = "";
    if (!strcmp(split, "testA") || !strcmp(split, "testB") || !strcmp(split, "testC"))
        return strchr(ref_split, split[4]) != NULL;
    if (!strcmp(split, "testAB") || !strcmp(split, "testBC") || !strcmp(split, "testAC") ||
        !strcmp(split, "train") || !strcmp(split, "val"))
        return strcmp(ref_split, split) == 0;
    if (!strcmp(split, "test")) return strstr(ref_split, "test") != NULL;
    return ar_errorf("unknown REFER split \"%s\" (expected train, val, test, testA, testB, testC, testAB, testBC or testAC)",
                     split);
}

long refer_split(const refer_set *s, const char *split, size_t **idx) {
    *idx = NULL;
    if (refer_in_split("", split) < 0) return -1;
    size_t n = 0;
    for (size_t i = 0; i < s->n_refs; i++) n += refer_in_split(s->refs[i].split, split) == 1;
    if (!n) return 0;
    size_t *o = malloc(n * sizeof *o);
    if (!o) return ar_errorf("out of memory");
    n = 0;
    for (size_t i = 0; i < s->n_refs; i++)
        if (refer_in_split(s->refs[i].split, split) == 1) o[n++] = i;
    *idx = o;
    return (long)n;
}

/* ---- images --------------------------------------------------------------------------------- */

static int fmt_out(char *buf, size_t n, int len) {
    if (len < 0 || (size_t)len >= n) return ar_errorf("image path longer than the %zu-byte buffer", n);
    return len;
}

int refer_image_name(const refer_set *s, const refer_ref *r, char *buf, size_t n) {
    if (r->image_id < 0) return ar_errorf("ref %" PRId64 ": negative image_id %" PRId64, r->ref_id, r->image_id);
    if (s->dataset == REFER_REFCLEF) return fmt_out(buf, n, snprintf(buf, n, "%" PRId64 ".jpg", r->image_id));
    return fmt_out(buf, n, snprintf(buf, n, "COCO_train2014_%012" PRId64 ".jpg", r->image_id));
}

int refer_strip_suffix(const char *file_name, char *buf, size_t n) {
    const char *u = strrchr(file_name, '_');
    if (!u) return ar_errorf("file_name \"%s\" has no '_<n>' suffix", file_name);
    return fmt_out(buf, n, snprintf(buf, n, "%.*s.jpg", (int)(u - file_name), file_name));
}

int refer_image_path(const refer_set *s, const refer_ref *r, const char *root, refer_image_layout layout,
                     char *buf, size_t n) {
    int64_t id = r->image_id;
    if (id < 0) return ar_errorf("ref %" PRId64 ": negative image_id %" PRId64, r->ref_id, id);
    const char *clef = layout == REFER_IMAGES_REFER ? "images/saiapr_tc-12" : "saiapr_tc-12";
    if (s->dataset == REFER_REFCLEF)
        return fmt_out(buf, n, snprintf(buf, n, "%s/%s/%02" PRId64 "/images/%" PRId64 ".jpg", root, clef, id / 1000, id));
    if (layout == REFER_IMAGES_REFER)
        return fmt_out(buf, n, snprintf(buf, n, "%s/images/mscoco/images/train2014/COCO_train2014_%012" PRId64 ".jpg",
                                        root, id));
    if (layout == REFER_IMAGES_COCO2017)
        return fmt_out(buf, n, snprintf(buf, n, "%s/coco/train2017/%012" PRId64 ".jpg", root, id));
    return ar_errorf("unknown image layout %d", (int)layout);
}
