/* data/protobuf.h — a minimal reader of the protobuf wire format.
 *
 * Enough to walk a serialized message field by field (used for SentencePiece
 * tokenizer.model files): varints, 64- and 32-bit fixed values and
 * length-delimited payloads. Groups (wire types 3 and 4, deprecated) are
 * rejected. Every length and offset is checked against the buffer before a
 * byte is read; a field that runs past the end of its message is an error.
 *
 *     pb_reader r = pb_reader_init(buf, len, buf);
 *     pb_field f;
 *     int rc;
 *     while ((rc = pb_next(&r, &f)) > 0)
 *         if (f.number == 1 && f.wire == PB_LEN) { ... f.data, f.len ... }
 *     if (rc < 0) return ar_error_prefix("%s: ", path);
 *
 * Errors name the byte offset from `base` (the start of the whole file), so a
 * nested message reports positions in file coordinates. Depends on core/error.h.
 */
#ifndef ANYREF_DATA_PROTOBUF_H
#define ANYREF_DATA_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

typedef struct {
    const uint8_t *p, *end;  /* unread part of the message */
    const uint8_t *base;     /* start of the file, for offsets in messages */
} pb_reader;

typedef struct {
    uint32_t number;      /* field number, >= 1 */
    int wire;             /* PB_VARINT, PB_I64, PB_LEN or PB_I32 */
    uint64_t value;       /* PB_VARINT; PB_I64 and PB_I32 as little-endian bits */
    const uint8_t *data;  /* PB_LEN: payload (points into the buffer) */
    size_t len;           /* PB_LEN: payload length */
    size_t offset;        /* offset of the field's key from base */
} pb_field;

/* A reader over msg[0..len); base is the start of the whole buffer. */
pb_reader pb_reader_init(const void *msg, size_t len, const void *base);
/* Reads the next field: 1 = *f filled, 0 = end of message, -1 + ar_error. */
int pb_next(pb_reader *r, pb_field *f);
/* The name of a wire type for messages ("varint", "64-bit", "length-delimited", "32-bit"). */
const char *pb_wire_name(int wire);

#endif
