/* trace_int.h - internals shared by trace.c and trace_otlp.c: a minimal
 * protobuf wire-format writer and the exporter's queue entry point. */
#ifndef SKIFF_TRACE_INT_H
#define SKIFF_TRACE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"
#include "skiff/trace.h"

/* wire types */
#define SK__PB_VARINT 0
#define SK__PB_I64 1
#define SK__PB_LEN 2
#define SK__PB_I32 5

void sk__pb_varint(sk_buf_t *b, uint64_t v);
void sk__pb_tag(sk_buf_t *b, unsigned field, unsigned wt);
void sk__pb_uint(sk_buf_t *b, unsigned field, uint64_t v);
void sk__pb_fixed64(sk_buf_t *b, unsigned field, uint64_t v);
void sk__pb_fixed32(sk_buf_t *b, unsigned field, uint32_t v);
void sk__pb_bytes(sk_buf_t *b, unsigned field, const void *p, size_t n);
void sk__pb_str(sk_buf_t *b, unsigned field, const char *s);
/* KeyValue{key=1, value=2 AnyValue{string_value=1}} as field `field`. */
void sk__pb_kv_str(sk_buf_t *b, unsigned field, const char *k, const char *v, size_t vlen);
/* KeyValue with a scalar AnyValue (bool=2, int=3 as varint; double=4 as fixed64). */
void sk__pb_kv_scalar(sk_buf_t *b, unsigned field, const char *k, unsigned vfield, int fixed64, uint64_t raw);

/* Queues one finished Span message (its bytes, without the outer tag).
 * Thread-safe; drops and counts when the queue is full. */
void sk__tracer_enqueue(sk_tracer_t *t, const void *span_pb, size_t len);

#endif
