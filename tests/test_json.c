/* tests/test_json.c — core/json: exact values, strings, tree shape, every
 * rejection with its exact message, depth limit, files, the string writer,
 * and a throughput figure (printed, not asserted) on a ~50 MB COCO-like file. */
#include "tests/testlib.h"

#include "core/error.h"
#include "core/json.h"
#include "core/timer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static json_doc *parse(const char *s) { return json_parse(s, strlen(s), "t.json"); }

/* Parses s; on failure prints a FAIL line with the error and returns NULL. */
static json_doc *parse_ok(const char *name, const char *s) {
    json_doc *d = parse(s);
    if (!d) t_fail(name, "unexpected parse error: %s", ar_error());
    return d;
}

/* Checks that text[0..len) is rejected with exactly "t.json: <msg>". */
static void expect_err_n(const char *name, const char *text, size_t len, const char *msg) {
    ar_error_clear();
    json_doc *d = json_parse(text, len, "t.json");
    char want[1024];
    snprintf(want, sizeof want, "t.json: %s", msg);
    if (d) {
        t_fail(name, "accepted, expected error \"%s\"", want);
        json_free(d);
        return;
    }
    t_check(strcmp(ar_error(), want) == 0, name, "got \"%s\"%s%s%s", ar_error(),
            strcmp(ar_error(), want) ? ", want \"" : "", strcmp(ar_error(), want) ? want : "",
            strcmp(ar_error(), want) ? "\"" : "");
}
static void expect_err(const char *name, const char *text, const char *msg) {
    expect_err_n(name, text, strlen(text), msg);
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ------------------------------------------------------------------------ */
static void test_numbers(void) {
    json_doc *d = parse_ok("num_parse",
        "[0, -0, -0.0, 1e-400, 9007199254740993, 1.5e308, 12345678901234567890,"
        " -9223372036854775808, 9223372036854775807, 9223372036854775808, -9223372036854775809,"
        " 42, -17, 3.25, 1E+2, 2e-3, 0.0]");
    if (!d) return;
    const json_value *a = json_root(d);
    t_check(a->type == JSON_ARRAY && a->n == 17, "num_count", "type %s n %zu", json_type_name(a->type), a->n);
    const json_value *v = json_at(a, 0);
    t_check(v->type == JSON_NUMBER && v->is_int && v->integer == 0 && same_bits(v->number, 0.0), "num_zero", "is_int %d", v->is_int);
    v = json_at(a, 1);
    t_check(v->is_int && v->integer == 0 && v->number == 0 && signbit(v->number), "num_neg_zero_int",
            "is_int %d integer %lld signbit %d", v->is_int, (long long)v->integer, signbit(v->number) != 0);
    v = json_at(a, 2);
    t_check(!v->is_int && v->number == 0 && signbit(v->number), "num_neg_zero_double", "is_int %d signbit %d",
            v->is_int, signbit(v->number) != 0);
    v = json_at(a, 3);
    t_check(!v->is_int && same_bits(v->number, 0.0), "num_underflow", "%g", v->number);
    v = json_at(a, 4);
    t_check(v->is_int && v->integer == 9007199254740993LL && v->number == 9007199254740992.0, "num_2^53+1",
            "integer %lld number %.17g", (long long)v->integer, v->number);
    v = json_at(a, 5);
    t_check(!v->is_int && v->number == 1.5e308, "num_1.5e308", "%.17g", v->number);
    v = json_at(a, 6);
    t_check(!v->is_int && v->number == 12345678901234567890.0, "num_big_uint", "is_int %d %.17g", v->is_int, v->number);
    v = json_at(a, 7);
    t_check(v->is_int && v->integer == INT64_MIN && v->number == -9223372036854775808.0, "num_int64_min", "%lld",
            (long long)v->integer);
    v = json_at(a, 8);
    t_check(v->is_int && v->integer == INT64_MAX, "num_int64_max", "%lld", (long long)v->integer);
    v = json_at(a, 9);
    t_check(!v->is_int && v->number == 9223372036854775808.0, "num_int64_max+1", "is_int %d", v->is_int);
    v = json_at(a, 10);
    t_check(!v->is_int && v->number == -9223372036854775809.0, "num_int64_min-1", "is_int %d", v->is_int);
    v = json_at(a, 11);
    t_check(v->is_int && v->integer == 42 && v->number == 42, "num_42", "%lld", (long long)v->integer);
    v = json_at(a, 12);
    t_check(v->is_int && v->integer == -17 && v->number == -17, "num_-17", "%lld", (long long)v->integer);
    v = json_at(a, 13);
    t_check(!v->is_int && v->number == 3.25, "num_3.25", "%.17g", v->number);
    v = json_at(a, 14);
    t_check(!v->is_int && v->number == 100, "num_1E+2", "is_int %d %.17g", v->is_int, v->number);
    v = json_at(a, 15);
    t_check(!v->is_int && v->number == 2e-3, "num_2e-3", "%.17g", v->number);
    v = json_at(a, 16);
    t_check(!v->is_int && same_bits(v->number, 0.0), "num_0.0", "is_int %d", v->is_int);
    json_free(d);

    /* Bit-exact agreement with glibc strtod (correctly rounded) on hard cases,
     * covering both the fast path and the strtod fallback. */
    static const char *hard[] = {
        "0.1", "0.2", "0.30000000000000004", "2.2250738585072011e-308", "2.2250738585072014e-308",
        "4.9e-324", "5e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "1.7976931348623157e308",
        "8.98846567431158e307", "1e23", "1e22", "9007199254740993.0", "9007199254740992.5",
        "1.00000000000000011102230246251565404236316680908203125", "123456789012345678901234567890e-10",
        "2765.1486500000005", "473.07", "0.7963", "239.97", "3.141592653589793", "1e-22", "123456.789e-20",
        "1844674407370955161.5", "18446744073709551615", "18446744073709551616", "99999999999999999999e-5",
        "0.000000000000000000000000000001234", "7.2057594037927933e16", "1e0", "123e22", "-1.5e-7",
        "100000000000000000000000000000000000000000000000000000000000e-60",
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof hard / sizeof hard[0]; i++) {
        json_doc *h = parse(hard[i]);
        double want = strtod(hard[i], NULL);
        if (!h || json_root(h)->type != JSON_NUMBER || !same_bits(json_root(h)->number, want)) {
            t_fail("num_strtod_exact", "%s: got %.17g want %.17g (%s)", hard[i], h ? json_root(h)->number : NAN,
                   want, h ? "" : ar_error());
            bad++;
        }
        json_free(h);
    }
    t_check(bad == 0, "num_strtod_exact_all", "%zu hard cases bit-exact", sizeof hard / sizeof hard[0]);

    /* Random decimals: compare with strtod bit for bit. */
    uint64_t s = 12345;
    bad = 0;
    for (int i = 0; i < 20000; i++) {
        char buf[64];
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int digits = 1 + (int)((s >> 33) % 19), e = (int)((s >> 20) % 80) - 40;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t m = s >> 1;
        char ds[32];
        snprintf(ds, sizeof ds, "%llu", (unsigned long long)m);
        ds[digits] = '\0';
        if (ds[0] == '0') ds[0] = '1';
        if (i % 3 == 0 && digits > 1) snprintf(buf, sizeof buf, "%c.%se%d", ds[0], ds + 1, e);
        else if (i % 3 != 2) snprintf(buf, sizeof buf, "%se%d", ds, e);
        else snprintf(buf, sizeof buf, "0.%s", ds);
        json_doc *h = parse(buf);
        double want = strtod(buf, NULL);
        if (!h || !same_bits(json_root(h)->number, want)) {
            if (bad++ < 5) t_fail("num_random", "%s: got %.17g want %.17g", buf, h ? json_root(h)->number : NAN, want);
        }
        json_free(h);
    }
    t_check(bad == 0, "num_random_strtod_exact", "20000 random decimals, %d mismatches", bad);
}

/* ------------------------------------------------------------------------ */
static void test_strings(void) {
    json_doc *d = parse_ok("str_parse",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"\\u00e9\\u20AC\\uD83D\\uDE00\", \"a\\u0000b\", \"\","
        " \"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\", \"\\u0041\\u007f\\u0080\\u07FF\\u0800\\uFFFF\\uDBFF\\uDFFF\"]");
    if (!d) return;
    const json_value *a = json_root(d);
    const json_value *v = json_at(a, 0);
    t_check(v->type == JSON_STRING && v->len == 8 && memcmp(v->str, "\"\\/\b\f\n\r\t", 9) == 0, "str_escapes",
            "len %zu", v->len);
    v = json_at(a, 1);
    const char want1[] = "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    t_check(v->len == 9 && memcmp(v->str, want1, 10) == 0, "str_u_escapes_and_surrogate_pair", "len %zu", v->len);
    v = json_at(a, 2);
    t_check(v->len == 3 && v->str[0] == 'a' && v->str[1] == '\0' && v->str[2] == 'b' && v->str[3] == '\0',
            "str_embedded_nul", "len %zu", v->len);
    v = json_at(a, 3);
    t_check(v->len == 0 && v->str && v->str[0] == '\0', "str_empty", "len %zu", v->len);
    v = json_at(a, 4);
    const char want4[] = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
    t_check(v->len == sizeof want4 - 1 && memcmp(v->str, want4, sizeof want4) == 0, "str_raw_utf8", "len %zu", v->len);
    v = json_at(a, 5);
    const char want5[] = "A\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF4\x8F\xBF\xBF";
    t_check(v->len == sizeof want5 - 1 && memcmp(v->str, want5, sizeof want5) == 0, "str_utf8_boundaries",
            "len %zu", v->len);
    json_free(d);

    /* A long string exercises the 16-byte block scanner, with specials at every position. */
    char big[300];
    size_t n = 0;
    big[n++] = '"';
    for (int i = 0; i < 40; i++) big[n++] = (char)('a' + i % 26);
    big[n++] = '\\'; big[n++] = 'n';
    for (int i = 0; i < 33; i++) big[n++] = 'x';
    memcpy(big + n, "\xE2\x82\xAC", 3); n += 3;
    for (int i = 0; i < 17; i++) big[n++] = 'y';
    big[n++] = '"';
    json_doc *b = json_parse(big, n, "t.json");
    int ok = b && json_root(b)->len == 40 + 1 + 33 + 3 + 17 && json_root(b)->str[40] == '\n' &&
             memcmp(json_root(b)->str + 74, "\xE2\x82\xAC", 3) == 0 && json_root(b)->str[94] == '\0';
    t_check(ok, "str_long_scanner", "%s", b ? "" : ar_error());
    json_free(b);
}

/* ------------------------------------------------------------------------ */
static void test_tree(void) {
    const char *src = "{\"a\": [1, {\"b\": null}, true, false], \"c\": \"x\", \"a\": {\"z\": 2}, \"e\": {}, \"f\": []}";
    json_doc *d = parse_ok("tree_parse", src);
    if (!d) return;
    const json_value *r = json_root(d);
    t_check(r->type == JSON_OBJECT && r->n == 5, "tree_root", "%s n %zu", json_type_name(r->type), r->n);
    const char *keys[] = {"a", "c", "a", "e", "f"};
    int order = 1;
    for (size_t i = 0; i < 5 && i < r->n; i++)
        order &= r->members[i].key_len == 1 && strcmp(r->members[i].key, keys[i]) == 0;
    t_check(order, "tree_member_order", "a c a e f");
    const json_value *a0 = &r->members[0].value;
    t_check(a0->type == JSON_ARRAY && a0->n == 4 && a0->items[0].is_int && a0->items[0].integer == 1 &&
            a0->items[1].type == JSON_OBJECT && json_get(&a0->items[1], "b") &&
            json_get(&a0->items[1], "b")->type == JSON_NULL && a0->items[2].type == JSON_BOOL &&
            a0->items[2].boolean == 1 && a0->items[3].type == JSON_BOOL && a0->items[3].boolean == 0,
            "tree_first_a", "nested array/object/literals");
    const json_value *a = json_get(r, "a");
    t_check(a && a->type == JSON_OBJECT && json_get(a, "z") && json_get(a, "z")->integer == 2, "tree_duplicate_last",
            "json_get returns the last 'a'");
    const json_value *e = json_get(r, "e"), *f = json_get(r, "f");
    t_check(e && e->type == JSON_OBJECT && e->n == 0 && f && f->type == JSON_ARRAY && f->n == 0, "tree_empty",
            "{} and []");
    t_check(!json_get(r, "missing") && !json_get(a0, "a") && !json_get(NULL, "a") && !json_at(r, 0) &&
            !json_at(a0, 4) && json_at(a0, 3) == &a0->items[3], "tree_lookup_misses", "NULL for wrong type/range");
    /* Offsets: byte positions of values in src. */
    t_check(r->offset == 0 && a0->offset == 6 && a0->items[0].offset == 7 && a0->items[1].offset == 10 &&
            json_get(&a0->items[1], "b")->offset == 16 && json_get(r, "c")->offset == 42 && a->offset == 52,
            "tree_offsets", "root %zu a %zu a[0] %zu a[1] %zu b %zu c %zu a2 %zu", r->offset, a0->offset,
            a0->items[0].offset, a0->items[1].offset, json_get(&a0->items[1], "b")->offset, json_get(r, "c")->offset,
            a->offset);
    json_free(d);

    /* Keys with escapes and embedded NUL. */
    d = parse_ok("keys_parse", " {\"k\\u0000x\": 1, \"\\u00e9\": 2, \"\": 3} ");
    if (d) {
        r = json_root(d);
        t_check(r->members[0].key_len == 3 && memcmp(r->members[0].key, "k\0x", 4) == 0 && !json_get(r, "k") &&
                json_get(r, "\xC3\xA9")->integer == 2 && json_get(r, "")->integer == 3 && r->offset == 1,
                "keys_unescaped", "embedded NUL key not matched by \"k\"");
        json_free(d);
    }

    /* BOM and whitespace. */
    d = parse_ok("bom", "\xEF\xBB\xBF \t\r\n[ ]\n");
    t_check(d && json_root(d)->type == JSON_ARRAY && json_root(d)->offset == 7, "bom_skipped", "offset %zu",
            d ? json_root(d)->offset : 0);
    json_free(d);
    d = parse_ok("scalar_root", "\"only\"");
    t_check(d && json_root(d)->type == JSON_STRING && strcmp(json_root(d)->str, "only") == 0, "scalar_root_string", "ok");
    json_free(d);
    d = parse_ok("scalar_root", "null");
    t_check(d && json_root(d)->type == JSON_NULL, "scalar_root_null", "ok");
    json_free(d);
    /* The input need not be NUL-terminated: parse a prefix. */
    d = json_parse("123456", 3, "t.json");
    t_check(d && json_root(d)->integer == 123, "length_respected", "%lld", d ? (long long)json_root(d)->integer : -1LL);
    json_free(d);
    json_free(NULL);
    t_check(json_root(NULL) == NULL, "null_doc", "json_root(NULL) == NULL, json_free(NULL) ok");
    t_check(strcmp(json_type_name(JSON_BOOL), "boolean") == 0 && strcmp(json_type_name(JSON_OBJECT), "object") == 0 &&
            strcmp(json_type_name(JSON_NULL), "null") == 0, "type_names", "ok");
}

/* ------------------------------------------------------------------------ */
static void test_rejections(void) {
    expect_err("rej_empty", "", "line 1, column 1: expected a value, found end of input");
    expect_err("rej_whitespace_only", "  \n ", "line 2, column 2: expected a value, found end of input");
    expect_err("rej_bom_only", "\xEF\xBB\xBF", "line 1, column 1: expected a value, found end of input");
    expect_err("rej_trailing_comma_array", "[1,2,]", "line 1, column 6: expected a value after ',' (no trailing commas), found ']'");
    expect_err("rej_trailing_comma_object", "{\"a\":1,\n }",
               "line 2, column 2: expected a string key after ',' (no trailing commas), found '}'");
    expect_err("rej_leading_zero", "[01]", "line 1, column 2: expected a number without leading zeros, found '01'");
    expect_err("rej_leading_zero_neg", "-007", "line 1, column 1: expected a number without leading zeros, found '-007'");
    expect_err("rej_nan", "NaN", "line 1, column 1: expected a value, found 'NaN'");
    expect_err("rej_infinity", "[Infinity]", "line 1, column 2: expected a value, found 'Infinity'");
    expect_err("rej_neg_infinity", "-Infinity", "line 1, column 2: expected a digit after '-', found 'Infinity'");
    expect_err("rej_plus", "+1", "line 1, column 1: expected a value, found '+1'");
    expect_err("rej_dot_start", ".5", "line 1, column 1: expected a value, found '.5'");
    expect_err("rej_dot_end", "1.", "line 1, column 3: expected a digit after '.', found end of input");
    expect_err("rej_exp_empty", "1e+", "line 1, column 4: expected a digit in the exponent, found end of input");
    expect_err("rej_exp_letter", "[1ex]", "line 1, column 4: expected a digit in the exponent, found 'x'");
    expect_err("rej_hex", "0x10", "line 1, column 2: expected end of input after the root value, found 'x10'");
    expect_err("rej_overflow", "[1e400]", "line 1, column 2: number out of range: expected a magnitude below 1.8e308, found '1e400'");
    expect_err("rej_overflow_neg", "-2e308", "line 1, column 1: number out of range: expected a magnitude below 1.8e308, found '-2e308'");
    expect_err("rej_literal_prefix", "tru", "line 1, column 1: expected a value, found 'tru'");
    expect_err("rej_literal_suffix", "[truex]", "line 1, column 2: expected a value, found 'truex'");
    expect_err("rej_literal_case", "True", "line 1, column 1: expected a value, found 'True'");
    expect_err("rej_garbage_after", "{} x", "line 1, column 4: expected end of input after the root value, found 'x'");
    expect_err("rej_two_roots", "1 2", "line 1, column 3: expected end of input after the root value, found '2'");
    expect_err("rej_unclosed_array", "[1, 2", "line 1, column 6: expected ',' or ']' after an array element, found end of input");
    expect_err("rej_missing_comma", "[1 2]", "line 1, column 4: expected ',' or ']' after an array element, found '2'");
    expect_err("rej_unclosed_object", "{\"a\": 1", "line 1, column 8: expected ',' or '}' after an object member, found end of input");
    expect_err("rej_missing_colon", "{\"a\" 1}", "line 1, column 6: expected ':' after the object key, found '1'");
    expect_err("rej_nonstring_key", "{a: 1}", "line 1, column 2: expected a string key or '}', found 'a'");
    expect_err("rej_number_key", "{\"a\":1, 2:3}", "line 1, column 9: expected a string key after ',', found '2'");
    expect_err("rej_mismatched", "[1}", "line 1, column 3: expected ',' or ']' after an array element, found '}'");
    expect_err("rej_single_quote", "['a']", "line 1, column 2: expected a value, found '''");
    expect_err("rej_comment", "[1 // c\n]", "line 1, column 4: expected ',' or ']' after an array element, found '/'");
    expect_err("rej_unterminated_string", "\"abc", "line 1, column 5: expected '\"' to close the string, found end of input");
    expect_err("rej_control_in_string", "[\"a\nb\"]",
               "line 1, column 4: expected a string character or '\"', found unescaped control character 0x0A");
    expect_err("rej_tab_in_string", "\"\t\"", "line 1, column 2: expected a string character or '\"', found unescaped control character 0x09");
    expect_err("rej_control_outside", "[\x01]", "line 1, column 2: expected a value, found control character 0x01");
    expect_err("rej_bad_escape", "\"\\x\"",
               "line 1, column 2: expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX), found '\\x'");
    expect_err("rej_escape_end", "\"\\", "line 1, column 3: expected an escape character after '\\', found end of input");
    expect_err("rej_short_u", "\"\\u12\"", "line 1, column 2: expected 4 hex digits after '\\u', found '\"'");
    expect_err("rej_bad_hex", "\"\\u12G4\"", "line 1, column 2: expected 4 hex digits after '\\u', found 'G4'");
    expect_err("rej_lone_high", "\"\\uD800\"",
               "line 1, column 2: expected a low surrogate escape (\\uDC00-\\uDFFF) after '\\uD800', found '\"'");
    expect_err("rej_high_then_char", "\"\\uD83Dx\"",
               "line 1, column 2: expected a low surrogate escape (\\uDC00-\\uDFFF) after '\\uD83D', found 'x'");
    expect_err("rej_high_high", "\"\\uD800\\uD800\"",
               "line 1, column 2: expected a low surrogate escape (\\uDC00-\\uDFFF) after '\\uD800', found another code unit");
    expect_err("rej_lone_low", "\"\\uDC00\"",
               "line 1, column 2: expected a high surrogate (\\uD800-\\uDBFF) before a low surrogate, found a lone '\\uDC00'");
    expect_err("rej_misordered", "\"\\uDE00\\uD83D\"",
               "line 1, column 2: expected a high surrogate (\\uD800-\\uDBFF) before a low surrogate, found a lone '\\uDE00'");
    /* Invalid UTF-8 (raw bytes in a string). */
    expect_err("rej_utf8_overlong2", "\"\xC0\xAF\"", "line 1, column 2: expected valid UTF-8, found byte 0xC0");
    expect_err("rej_utf8_overlong3", "\"\xE0\x80\xAF\"", "line 1, column 2: expected valid UTF-8, found bytes 0xE0 0x80");
    expect_err("rej_utf8_overlong4", "\"\xF0\x80\x80\xAF\"", "line 1, column 2: expected valid UTF-8, found bytes 0xF0 0x80");
    expect_err("rej_utf8_surrogate", "\"\xED\xA0\x80\"", "line 1, column 2: expected valid UTF-8, found bytes 0xED 0xA0");
    expect_err("rej_utf8_above_max", "\"\xF4\x90\x80\x80\"", "line 1, column 2: expected valid UTF-8, found bytes 0xF4 0x90");
    expect_err("rej_utf8_f5", "\"\xF5\x80\x80\x80\"", "line 1, column 2: expected valid UTF-8, found byte 0xF5");
    expect_err("rej_utf8_lone_cont", "\"a\x80\"", "line 1, column 3: expected valid UTF-8, found byte 0x80");
    expect_err("rej_utf8_truncated", "\"\xE2\x82\"", "line 1, column 2: expected valid UTF-8, found bytes 0xE2 0x82 0x22");
    expect_err("rej_utf8_truncated_eof", "\"\xE2\x82", "line 1, column 2: expected valid UTF-8, found bytes 0xE2 0x82 then end of input");
    expect_err("rej_utf8_outside", "[\xC3\xA9]", "line 1, column 2: expected a value, found byte 0xC3");
    expect_err("rej_bom_mid", " \xEF\xBB\xBF{}", "line 1, column 2: expected a value, found byte 0xEF");
    /* Embedded NUL byte in the input is a control character. */
    expect_err_n("rej_nul_in_string", "\"a\0b\"", 5, "line 1, column 3: expected a string character or '\"', found unescaped control character 0x00");
    expect_err_n("rej_nul_after", "{}\0", 3, "line 1, column 3: expected end of input after the root value, found control character 0x00");
    /* Line/column: lines count '\n', columns count characters (not bytes); the BOM is not a character. */
    expect_err("pos_after_multibyte", "{\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\": x}",
               "line 1, column 9: expected a value, found 'x'");
    expect_err("pos_multiline", "[\n  1,\n  \"\xE2\x82\xAC\",\n  tru\n]", "line 4, column 3: expected a value, found 'tru'");
    expect_err("pos_crlf", "[1,\r\n2,\r\n@]", "line 3, column 1: expected a value, found '@'");
    expect_err("pos_bom", "\xEF\xBB\xBF[1,,2]", "line 1, column 4: expected a value, found ','");
    expect_err("pos_bom_line2", "\xEF\xBB\xBF[1,\n ,2]", "line 2, column 2: expected a value, found ','");
    /* Default origin. */
    ar_error_clear();
    json_doc *d = json_parse("[", 1, NULL);
    t_check(!d && strcmp(ar_error(), "JSON: line 1, column 2: expected a value, found end of input") == 0,
            "rej_default_origin", "%s", ar_error());
    json_free(d);
    d = json_parse(NULL, 0, "t.json");
    t_check(!d && strstr(ar_error(), "found end of input") != NULL, "rej_null_text", "%s", ar_error());
}

/* ------------------------------------------------------------------------ */
static void test_depth(void) {
    char buf[8 * 600];
    for (int depth = 511; depth <= 513; depth++) {
        for (int obj = 0; obj < 2; obj++) {
            size_t n = 0;
            for (int i = 0; i < depth; i++) {
                if (obj && i % 2 && i != depth - 1) { memcpy(buf + n, "{\"k\":", 5); n += 5; }
                else buf[n++] = '[';
            }
            for (int i = depth - 1; i >= 0; i--) buf[n++] = (obj && i % 2 && i != depth - 1) ? '}' : ']';
            ar_error_clear();
            json_doc *d = json_parse(buf, n, "t.json");
            char name[64];
            snprintf(name, sizeof name, "depth_%d%s", depth, obj ? "_mixed" : "");
            if (depth <= 512) {
                /* Walk down to the innermost value. */
                const json_value *v = d ? json_root(d) : NULL;
                int levels = 0;
                while (v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) && v->n) {
                    v = v->type == JSON_ARRAY ? &v->items[0] : &v->members[0].value;
                    levels++;
                }
                t_check(d && levels == depth - 1 && v->type == JSON_ARRAY && v->n == 0, name, "accepted, %d levels%s%s",
                        levels + 1, d ? "" : ": ", d ? "" : ar_error());
            } else {
                char want[256];
                size_t col = obj ? (size_t)(512 / 2) * 6 + 1 : 513;
                snprintf(want, sizeof want,
                         "t.json: line 1, column %zu: expected at most 512 nested arrays/objects, found deeper nesting", col);
                t_check(!d && strcmp(ar_error(), want) == 0, name, "%s", ar_error());
            }
            json_free(d);
        }
    }
    /* Very deep input is an error, not a stack overflow. */
    size_t big = 1000000;
    char *deep = malloc(big);
    if (deep) {
        memset(deep, '[', big);
        json_doc *d = json_parse(deep, big, "t.json");
        t_check(!d && strstr(ar_error(), "expected at most 512 nested") != NULL, "depth_million", "%s", ar_error());
        free(deep);
    }
}

/* ------------------------------------------------------------------------ */
static void test_getters(void) {
    json_doc *d = parse_ok("get_parse",
        "{\"dtype\": \"F32\", \"n\": 12, \"f\": 2.5, \"e\": 1e3, \"big\": 1e300, \"arr\": [1], \"neg\": -4.0}");
    if (!d) return;
    const json_value *r = json_root(d);
    const char *s = NULL;
    size_t len = 0;
    int64_t i = 0;
    double x = 0;
    t_check(json_get_string(r, "dtype", &s, &len, "hdr") == 0 && len == 3 && strcmp(s, "F32") == 0, "get_string", "%s", s ? s : "");
    t_check(json_get_string(r, "dtype", &s, NULL, NULL) == 0, "get_string_null_len", "ok");
    t_check(json_get_int64(r, "n", &i, "hdr") == 0 && i == 12, "get_int64", "%lld", (long long)i);
    t_check(json_get_int64(r, "e", &i, "hdr") == 0 && i == 1000, "get_int64_integral_double", "%lld", (long long)i);
    t_check(json_get_int64(r, "neg", &i, "hdr") == 0 && i == -4, "get_int64_neg_double", "%lld", (long long)i);
    t_check(json_get_number(r, "f", &x, "hdr") == 0 && x == 2.5, "get_number", "%g", x);
    t_check(json_get_number(r, "n", &x, "hdr") == 0 && x == 12, "get_number_int", "%g", x);

    t_check(json_get_string(r, "n", &s, &len, "model.safetensors header, tensor 'x'") == -1 &&
            strcmp(ar_error(), "model.safetensors header, tensor 'x': expected 'n' to be a string, found number 12") == 0,
            "get_wrong_type", "%s", ar_error());
    t_check(json_get_string(r, "shape", &s, &len, "hdr") == -1 && strcmp(ar_error(), "hdr: missing required field 'shape' (expected a string)") == 0,
            "get_missing", "%s", ar_error());
    t_check(json_get_int64(r, "f", &i, "hdr") == -1 && strcmp(ar_error(), "hdr: expected 'f' to be an integer, found number 2.5") == 0,
            "get_int_fraction", "%s", ar_error());
    t_check(json_get_number(r, "arr", &x, NULL) == -1 && strcmp(ar_error(), "expected 'arr' to be a number, found array") == 0,
            "get_number_array", "%s", ar_error());
    t_check(json_get_int64(r, "big", &i, "hdr") == -1 &&
            strcmp(ar_error(), "hdr: expected 'big' to be an integer, found number 1.0000000000000001e+300") == 0,
            "get_int_too_big", "%s", ar_error());
    t_check(json_get_int64(json_get(r, "arr"), "n", &i, "hdr") == -1 &&
            strcmp(ar_error(), "hdr: expected an object holding 'n', found array") == 0, "get_not_object", "%s",
            ar_error());
    json_free(d);
}

/* ------------------------------------------------------------------------ */
static void test_files(void) {
    char path[] = "/tmp/anyref_test_json_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { t_fail("file_tmp", "mkstemp failed"); return; }
    const char *body = "{\"x\": [1, 2, 3]}\n";
    ssize_t w = write(fd, body, strlen(body));
    close(fd);
    json_doc *d = json_parse_file(path);
    t_check(w == (ssize_t)strlen(body) && d && json_get(json_root(d), "x") && json_get(json_root(d), "x")->n == 3,
            "file_read", "%s", d ? "parsed" : ar_error());
    json_free(d);

    FILE *f = fopen(path, "wb");
    if (f) { fputs("{\"x\": [1, 2,]}", f); fclose(f); }
    d = json_parse_file(path);
    char want[512];
    snprintf(want, sizeof want, "%s: line 1, column 13: expected a value after ',' (no trailing commas), found ']'", path);
    t_check(!d && strcmp(ar_error(), want) == 0, "file_parse_error_names_path", "%s", ar_error());
    json_free(d);
    f = fopen(path, "wb");
    if (f) fclose(f);
    d = json_parse_file(path);
    snprintf(want, sizeof want, "%s: line 1, column 1: expected a value, found end of input", path);
    t_check(!d && strcmp(ar_error(), want) == 0, "file_empty", "%s", ar_error());
    unlink(path);

    d = json_parse_file("/nonexistent/dir/tokenizer.json");
    t_check(!d && strcmp(ar_error(), "/nonexistent/dir/tokenizer.json: cannot open: No such file or directory") == 0,
            "file_missing", "%s", ar_error());
    d = json_parse_file("/tmp");
    t_check(!d && strcmp(ar_error(), "/tmp: not a regular file") == 0, "file_directory", "%s", ar_error());
}

/* ------------------------------------------------------------------------ */
static void test_writer(void) {
    /* Every byte 0x00..0x7F, then multi-byte UTF-8 of each length. */
    char src[128 + 16];
    size_t n = 0;
    for (int c = 0; c < 128; c++) src[n++] = (char)c;
    const char *mb = "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF";
    memcpy(src + n, mb, strlen(mb));
    n += strlen(mb);
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    int rc = f ? json_write_string(f, src, n) : -1;
    if (f) fclose(f);
    json_doc *d = rc == 0 ? json_parse(buf, blen, "written") : NULL;
    t_check(d && json_root(d)->type == JSON_STRING && json_root(d)->len == n && memcmp(json_root(d)->str, src, n) == 0,
            "write_roundtrip", "%zu bytes -> %zu bytes of JSON%s%s", n, blen, d ? "" : ": ", d ? "" : ar_error());
    /* The exact escapes for a few characters. */
    int exact = buf && strncmp(buf, "\"\\u0000\\u0001", 13) == 0 && strstr(buf, "\\b\\t\\n\\u000b\\f\\r") &&
                strstr(buf, "\\u001f !\\\"#") && strstr(buf, "[\\\\]") && strstr(buf, "~\x7F\xC3\xA9");
    t_check(exact, "write_escapes", "%.60s...", buf ? buf : "");
    json_free(d);
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &blen);
    rc = f ? json_write_string(f, "", 0) : -1;
    if (f) fclose(f);
    t_check(rc == 0 && blen == 2 && strcmp(buf, "\"\"") == 0, "write_empty", "%s", buf ? buf : "");
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &blen);
    rc = f ? json_write_string(f, "ab\xC0\xAF", 4) : 0;
    if (f) fclose(f);
    t_check(rc == -1 && blen == 0 && strcmp(ar_error(), "json_write_string: invalid UTF-8 at byte 2 of 4") == 0,
            "write_rejects_invalid_utf8", "%s", ar_error());
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* ~50 MB COCO-like annotation file: parse throughput (printed, not asserted),
 * and the parsed content checked against what was generated. */
static void test_perf(void) {
    size_t cap = 56u << 20, n = 0;
    char *buf = malloc(cap);
    if (!buf) { t_fail("perf_alloc", "no memory"); return; }
    n += (size_t)snprintf(buf + n, cap - n, "{\"info\": {\"description\": \"COCO-like \\u00e9\"}, \"annotations\": [");
    uint64_t s = 7;
    int64_t count = 0, idsum = 0;
    while (n < (50u << 20)) {
        if (count) buf[n++] = ',';
        n += (size_t)snprintf(buf + n, cap - n, "\n{\"id\": %lld, \"image_id\": %lld, \"category_id\": %d, \"iscrowd\": 0, "
                              "\"area\": %.17g, \"bbox\": [", (long long)count, (long long)(count / 7), (int)(count % 80) + 1,
                              (double)(s % 100000) / 7.0);
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            n += (size_t)snprintf(buf + n, cap - n, "%s%.2f", k ? ", " : "", (double)((s >> 40) % 64000) / 100.0);
        }
        n += (size_t)snprintf(buf + n, cap - n, "], \"segmentation\": [[");
        for (int k = 0; k < 24; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            n += (size_t)snprintf(buf + n, cap - n, "%s%.2f", k ? ", " : "", (double)((s >> 40) % 64000) / 100.0);
        }
        n += (size_t)snprintf(buf + n, cap - n, "]], \"caption\": \"a person riding a \\\"horse\\\" near the caf\xC3\xA9\"}");
        idsum += count;
        count++;
    }
    n += (size_t)snprintf(buf + n, cap - n, "\n]}\n");
    double best = 1e30;
    int ok = 1;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = ar_now();
        json_doc *d = json_parse(buf, n, "coco.json");
        double t1 = ar_now();
        if (t1 - t0 < best) best = t1 - t0;
        const json_value *a = d ? json_get(json_root(d), "annotations") : NULL;
        int64_t sum = 0;
        for (size_t i = 0; a && i < a->n; i++) sum += json_get(&a->items[i], "id")->integer;
        ok &= a && (int64_t)a->n == count && sum == idsum && a->items[a->n - 1].members[6].value.items[0].n == 24;
        json_free(d);
    }
    t_check(ok, "perf_content", "%lld annotations, ids sum %lld", (long long)count, (long long)idsum);
    printf("perf  json_parse %.1f MB in %.3f s = %.0f MB/s (best of 3)\n", (double)n / 1e6, best, (double)n / 1e6 / best);
    free(buf);
}

int main(void) {
    test_numbers();
    test_strings();
    test_tree();
    test_rejections();
    test_depth();
    test_getters();
    test_files();
    test_writer();
    test_perf();
    return t_exit_code();
}
