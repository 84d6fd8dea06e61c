/* data/protobuf.c — see protobuf.h. */
#include "data/protobuf.h"

#include "core/error.h"

pb_reader pb_reader_init(const void *msg, size_t len, const void *base) {
    pb_reader r;
    r.p = (const uint8_t *)msg;
    r.end = r.p + len;
    r.base = (const uint8_t *)base;
    return r;
}

const char *pb_wire_name(int wire) {
    switch (wire) {
    case PB_VARINT: return "varint";
    case PB_I64: return "64-bit";
    case PB_LEN: return "length-delimited";
    case PB_I32: return "32-bit";
    default: return "unknown";
    }
}

/* Reads a varint of at most 10 bytes; -1 + error if truncated or too long. */
static int read_varint(pb_reader *r, uint64_t *out, const char *what) {
    uint64_t v = 0;
    const uint8_t *start = r->p;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return ar_errorf("protobuf: truncated %s varint at byte %zu", what, (size_t)(start - r->base));
        uint8_t c = *r->p++;
        if (i == 9 && c > 1)
            return ar_errorf("protobuf: %s varint at byte %zu does not fit 64 bits", what, (size_t)(start - r->base));
        v |= (uint64_t)(c & 0x7F) << (7 * i);
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return ar_errorf("protobuf: %s varint at byte %zu is longer than 10 bytes", what, (size_t)(start - r->base));
}

int pb_next(pb_reader *r, pb_field *f) {
    if (r->p >= r->end) return 0;
    f->offset = (size_t)(r->p - r->base);
    uint64_t key;
    if (read_varint(r, &key, "field key") < 0) return -1;
    uint64_t number = key >> 3;
    f->wire = (int)(key & 7);
    if (number == 0 || number > 536870911u)
        return ar_errorf("protobuf: field number %llu at byte %zu is out of range (1..536870911)",
                         (unsigned long long)number, f->offset);
    f->number = (uint32_t)number;
    f->value = 0;
    f->data = NULL;
    f->len = 0;
    size_t left;
    switch (f->wire) {
    case PB_VARINT:
        return read_varint(r, &f->value, "value") < 0 ? -1 : 1;
    case PB_I64:
    case PB_I32: {
        size_t n = f->wire == PB_I64 ? 8 : 4;
        left = (size_t)(r->end - r->p);
        if (left < n)
            return ar_errorf("protobuf: field %u at byte %zu: %zu-byte value but only %zu bytes left",
                             f->number, f->offset, n, left);
        for (size_t i = 0; i < n; i++) f->value |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 1;
    }
    case PB_LEN: {
        uint64_t n;
        if (read_varint(r, &n, "length") < 0) return -1;
        left = (size_t)(r->end - r->p);
        if (n > left)
            return ar_errorf("protobuf: field %u at byte %zu: length %llu runs past the end of its message (%zu bytes left)",
                             f->number, f->offset, (unsigned long long)n, left);
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default:
        return ar_errorf("protobuf: field %u at byte %zu has wire type %d (%s); expected 0, 1, 2 or 5",
                         f->number, f->offset, f->wire, f->wire == 3 || f->wire == 4 ? "group, not supported" : "invalid");
    }
}
