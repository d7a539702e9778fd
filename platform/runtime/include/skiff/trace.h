/* skiff/trace.h - distributed tracing: W3C Trace Context and OTLP span export.
 *
 * Three layers, usable separately:
 *   - W3C traceparent / tracestate parse and format (strict; fuzzed);
 *   - spans: ids from a CSPRNG, parent-based ratio head sampling,
 *     attributes, events and status, encoded as OTLP protobuf as they are
 *     recorded (no allocation for a span that is not sampled);
 *   - a batch exporter (sk_tracer_t): finished spans go into one bounded
 *     queue (any thread; dropped and counted when full); one exporter thread
 *     with its own loop POSTs them as an OTLP ExportTraceServiceRequest to
 *     <endpoint>/v1/traces (application/x-protobuf), on size or interval,
 *     retrying 429/502/503/504 with backoff that honours Retry-After.
 *
 * The library does not log: sk_tracer_stats() gives the counts to publish.
 * See docs/runtime/trace.md. */
#ifndef SKIFF_TRACE_H
#define SKIFF_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"
#include "skiff/tls.h"

#define SK_TRACE_FLAG_SAMPLED 0x01
#define SK_TRACEPARENT_LEN 55     /* "00-" 32 "-" 16 "-" 2 */
#define SK_TRACESTATE_MAX 512     /* longest tracestate we keep (W3C: propagate at least 512) */
#define SK_TRACESTATE_MAX_MEMBERS 32

/* A span context: what crosses process boundaries. */
typedef struct sk_trace_ctx {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t flags; /* SK_TRACE_FLAG_SAMPLED; other bits are not propagated */
} sk_trace_ctx_t;

/* Parses a traceparent header value. Version 00 must be exactly 55
 * characters; a later version (not ff) may be longer when character 55 is
 * '-' (its first four fields are read as version 00). Lower-case hex only;
 * all-zero trace or parent ids are invalid. Returns 0 or SK_EPARSE. */
int sk_traceparent_parse(const char *v, sk_trace_ctx_t *out);
/* Writes "00-<trace>-<span>-<flags>" and a NUL into out (56 bytes). */
void sk_traceparent_format(const sk_trace_ctx_t *c, char out[SK_TRACEPARENT_LEN + 1]);
/* Validates a tracestate header value (list-members "key=value" separated
 * by commas, optional spaces and tabs around them, empty members allowed,
 * at most 32 members, no duplicate keys, W3C key and value grammar) and
 * writes the normalized list (members joined by ",") into out. A list
 * longer than outlen-1 loses members longer than 128 characters first,
 * then members from the end, as the W3C spec permits. Returns the length
 * written, or SK_EPARSE when the value is invalid (then drop the header). */
int sk_tracestate_parse(const char *v, char *out, size_t outlen);

/* Hex forms (lower case, NUL-terminated). */
void sk_trace_id_hex(const uint8_t id[16], char out[33]);
void sk_span_id_hex(const uint8_t id[8], char out[17]);
int sk_trace_id_is_valid(const uint8_t id[16]); /* not all zero */
/* Fills p with bytes from a CSPRNG (OpenSSL's DRBG, buffered per thread). */
void sk_trace_random(void *p, size_t n);
uint64_t sk_trace_now_ns(void); /* wall clock, unix nanoseconds */

/* Head sampling: parent-based. With a parent the parent's sampled flag
 * decides; without one the trace id does (its last 8 bytes as a big-endian
 * number below ratio * 2^64, so every process agrees on a trace). */
int sk_trace_should_sample(double ratio, const sk_trace_ctx_t *parent, const uint8_t trace_id[16]);

/* ---- the tracer and its exporter ---- */

typedef struct sk_tracer sk_tracer_t;

typedef struct sk_tracer_opts {
  const char *service_name;       /* resource service.name (required) */
  const char *service_version;    /* resource service.version, optional */
  const char *endpoint;           /* "http://host:port" or "https://host:port[/path]"; a URL without a
                                     path gets /v1/traces. NULL: spans are sampled and ids made, nothing
                                     is exported (counted as dropped). */
  sk_tls_ctx_t *tls;              /* for https:// (a reference is taken); NULL = system defaults refused */
  double sample_ratio;            /* 0..1 for root spans; default used when < 0: 1.0 */
  size_t max_queue;               /* spans waiting; default 2048; more are dropped and counted */
  size_t max_batch;               /* spans per request; default 512 (also the "flush now" size) */
  uint64_t flush_interval_ms;     /* default 1000 */
  uint64_t timeout_ms;            /* per export request; default 10000 */
  unsigned max_retries;           /* per batch on 429/502/503/504 and connection errors; default 5 */
  uint64_t max_backoff_ms;        /* cap of the exponential backoff and of Retry-After; default 30000 */
} sk_tracer_opts_t;

typedef struct sk_tracer_stats {
  uint64_t spans_ended;    /* sampled spans handed to the exporter */
  uint64_t spans_exported; /* acknowledged by the endpoint (2xx) */
  uint64_t spans_dropped;  /* queue full, no endpoint, or given up after retries / refused (4xx) */
  uint64_t export_requests;
  uint64_t export_failures; /* requests that failed (each retry counts) */
  uint64_t queued;          /* spans waiting now */
} sk_tracer_stats_t;

/* Starts the exporter thread (when an endpoint is set). */
int sk_tracer_new(const sk_tracer_opts_t *o, sk_tracer_t **out);
/* Exports what is queued (bounded by one timeout_ms), stops the thread and
 * frees. Accepts NULL. */
void sk_tracer_free(sk_tracer_t *t);
void sk_tracer_stats(sk_tracer_t *t, sk_tracer_stats_t *out);
double sk_tracer_sample_ratio(const sk_tracer_t *t);
/* Asks the exporter to send what is queued now (tests, shutdown). */
void sk_tracer_flush(sk_tracer_t *t);

/* ---- spans ---- */

typedef enum sk_span_kind {
  SK_SPAN_INTERNAL = 1,
  SK_SPAN_SERVER = 2,
  SK_SPAN_CLIENT = 3,
  SK_SPAN_PRODUCER = 4,
  SK_SPAN_CONSUMER = 5,
} sk_span_kind_t;

typedef enum sk_span_status {
  SK_SPAN_STATUS_UNSET = 0,
  SK_SPAN_STATUS_OK = 1,
  SK_SPAN_STATUS_ERROR = 2,
} sk_span_status_t;

/* A span lives in the caller's memory (embed it). Only ctx is meant to be
 * read: its trace id, its own span id and the sampled flag, ready for
 * sk_traceparent_format() towards the next hop. */
typedef struct sk_span {
  sk_trace_ctx_t ctx;
  uint8_t parent_span_id[8];
  int has_parent;
  int recording; /* sampled and not yet ended */
  uint64_t start_ns;
  int status;
  sk_tracer_t *tracer;
  sk_buf_t pb; /* the Span message being built (fields other than ids and times) */
} sk_span_t;

/* Starts a span. parent NULL = a root span (new trace id). tracestate
 * (normalized, may be NULL) is recorded with the span. t NULL = ids only,
 * never recorded. start_ns 0 = now. Always succeeds: a span that is not
 * sampled still has ids, so the trace continues downstream. */
void sk_span_begin(sk_span_t *s, sk_tracer_t *t, const char *name, sk_span_kind_t kind,
                   const sk_trace_ctx_t *parent, const char *tracestate, uint64_t start_ns);
/* Attributes and events are ignored when the span is not recording.
 * Strings are copied; values longer than 4096 bytes are cut. */
void sk_span_attr_str(sk_span_t *s, const char *key, const char *v);
void sk_span_attr_int(sk_span_t *s, const char *key, int64_t v);
void sk_span_attr_bool(sk_span_t *s, const char *key, int v);
void sk_span_attr_double(sk_span_t *s, const char *key, double v);
/* An event with an optional string attribute (key NULL = none). */
void sk_span_event(sk_span_t *s, const char *name, uint64_t ts_ns, const char *key, const char *v);
void sk_span_set_status(sk_span_t *s, sk_span_status_t code, const char *message);
/* Ends the span (end_ns 0 = now) and queues it for export when sampled.
 * The span's memory may be reused after. */
void sk_span_end(sk_span_t *s, uint64_t end_ns);
/* Forgets a span without exporting it. Accepts a span never begun if it
 * was zeroed. */
void sk_span_discard(sk_span_t *s);

/* ---- OTLP encoding (exposed for tests and other exporters) ---- */

/* Appends an ExportTraceServiceRequest holding one ResourceSpans (resource
 * attributes service.name[, service.version], telemetry.sdk.name "skiff")
 * with one ScopeSpans (scope "skiff") whose spans field is spans_pb: a
 * concatenation of already-encoded "spans" fields (tag 2 + length + Span). */
void sk_otlp_trace_request(sk_buf_t *out, const char *service_name, const char *service_version,
                           const void *spans_pb, size_t spans_len);

#endif
