/* tl_int.h - skiff-telemetry internals (prefix tl_).
 *
 * The daemon takes data in (OTLP/HTTP, Prometheus remote-write, Loki push,
 * Prometheus scrape), stores metric samples in the tsdb (tl_tsdb.h) and
 * spans and log lines in a sqlite database (tl_sigdb), and answers queries
 * (PromQL API from tl_query_api, traces, service graph, Loki queries).
 *
 * Every write that is acknowledged went through one serial writer: a job
 * queue drained by libuv's thread pool one job at a time (tl_app.c). The
 * loop thread only parses HTTP and answers; decoding, sqlite transactions
 * and tsdb commits happen on the worker, and the reply goes out after the
 * data is on disk. */
#ifndef SKIFF_TL_INT_H
#define SKIFF_TL_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "otlp_common.pb-c.h"
#include "otlp_logs.pb-c.h"
#include "otlp_metrics.pb-c.h"
#include "otlp_trace.pb-c.h"
#include "prom_remote.pb-c.h"
#include "rpc_status.pb-c.h"
#include "skiff/config.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/mem.h"
#include "skiff/metrics.h"
#include "skiff/store.h"
#include "tl_tsdb.h"

#define TL_MAX_BODY_DEFAULT (20u << 20) /* decompressed request bodies */
#define TL_JSON_MAX_DEPTH 64
#define TL_PB_MAX_DEPTH 64
#define TL_MAX_ATTR_JSON 65536 /* attributes kept per span / log line */

/* ---- configuration ---- */

typedef struct tl_scrape_cfg {
  char *job;
  sk_cfg_strlist_t targets; /* "host:port" or "http://host:port/path" */
  uint64_t interval_ms;
  uint64_t timeout_ms;
  char *metrics_path;
  uint64_t sample_limit;
} tl_scrape_cfg_t;

/* One `forward` target: received OTLP is forwarded there (tl_forward.c). */
typedef struct tl_forward_cfg {
  char *endpoint;            /* http[s]://host:port[/prefix]; /v1/<signal> is appended */
  char *ca_file;             /* https: trust bundle ("" = the system's) */
  char *cert_file, *key_file; /* https: client certificate (mTLS), optional */
  char *bearer_token_file;   /* sent as Authorization: Bearer <first line> */
  sk_cfg_strlist_t signals;  /* traces, metrics, logs; empty = all */
  uint64_t max_queue_bytes;  /* encoded OTLP waiting, per target */
  uint64_t max_batch_bytes;  /* per request */
  uint64_t batch_delay_ms;   /* a partial batch waits this long for more */
  uint64_t timeout_ms;       /* per request */
  uint64_t min_backoff_ms, max_backoff_ms;
  uint64_t max_retry_time_ms; /* a batch failing this long is dropped */
} tl_forward_cfg_t;

/* `kafka`: received OTLP is also produced to Kafka (tl_kafka.c). */
typedef struct tl_kafka_topics {
  char *traces, *metrics, *logs; /* "" = that signal is not exported */
} tl_kafka_topics_t;
typedef struct tl_kafka_cfg {
  char *brokers;               /* bootstrap servers; "" = no export */
  tl_kafka_topics_t topics;
  sk_cfg_strlist_t properties; /* extra librdkafka properties, name=value */
  uint64_t max_queue_bytes;    /* produced, not yet confirmed; more is dropped */
  uint64_t max_retry_time_ms;  /* message.timeout.ms */
  uint64_t flush_timeout_ms;   /* at shutdown */
} tl_kafka_cfg_t;

/* `scrape_tls`: client TLS for https scrape targets (tl_scrape.c). */
typedef struct tl_scrape_tls_cfg {
  bool identity;               /* use the daemon's identity files (cert, key, bundle) */
  char *ca, *cert, *key;       /* else these; cert/key "" = no client certificate */
} tl_scrape_tls_cfg_t;

/* `tls` / `query_tls`: HTTPS on the OTLP and on the query listener
 * (tl_daemon.c builds the server contexts). */
enum { TL_CLIENT_AUTH_REQUIRE = 0, TL_CLIENT_AUTH_OPTIONAL = 1, TL_CLIENT_AUTH_NONE = 2 };
typedef struct tl_listen_tls_cfg {
  bool identity;               /* serve the daemon's identity (cert, key; bundle as ca) */
  char *cert, *key;            /* else these; cert set = HTTPS */
  char *ca;                    /* verifies client certificates */
  int client_auth;             /* TL_CLIENT_AUTH_* */
} tl_listen_tls_cfg_t;

typedef struct tl_config {
  sk_cfg_addr_t listen;        /* OTLP/HTTP, remote-write, Loki push */
  sk_cfg_addr_t query_listen;  /* Prometheus / Tempo / Loki query APIs (+ ingest routes) */
  char *data_dir;              /* "" = <state_dir>/telemetry or ./telemetry-data */
  uint64_t max_request;        /* bytes after decompression */
  int max_queue;               /* ingest jobs waiting for the writer */
  uint64_t max_queue_bytes;
  uint64_t retention_ms;        /* metric samples */
  uint64_t trace_retention_ms;  /* spans; 0 = retention_ms */
  uint64_t log_retention_ms;    /* log lines; 0 = retention_ms */
  uint64_t max_series_per_metric;
  uint64_t max_series;
  bool self_scrape;            /* scrape our own admin /metrics */
  uint64_t self_scrape_interval_ms;
  char *scrape_skiff_config;   /* a skiff.yaml: scrape every daemons[].admin */
  sk_cfg_list_t scrape_configs; /* of tl_scrape_cfg_t */
  tl_scrape_tls_cfg_t scrape_tls;
  bool self_scrape_tls;        /* not a key: our own admin listener is HTTPS */
  tl_listen_tls_cfg_t tls;       /* the OTLP listener (`listen`) */
  tl_listen_tls_cfg_t query_tls; /* the query listener (`query_listen`) */
  sk_tls_ctx_t *listen_tls_ctx, *query_tls_ctx; /* not keys: built from the two above; NULL = plain */
  bool no_sync;                /* tests/benchmarks only */
  sk_cfg_list_t forward;       /* of tl_forward_cfg_t */
  tl_kafka_cfg_t kafka;
} tl_config_t;

extern const sk_config_schema_t tl_config_schema;
extern const sk_daemon_desc_t tl_daemon_desc;

/* ---- the app ---- */

typedef struct tl_app tl_app_t;

/* Opens the stores under cfg->data_dir (must be set), starts both
 * listeners and the scrapers. reg and log may be NULL. admin_port (>0)
 * enables the self scrape. */
int tl_app_new(uv_loop_t *loop, const tl_config_t *cfg, sk_metrics_t *reg, sk_logger_t *log, int admin_port,
               tl_app_t **out, char *err, size_t errlen);
int tl_app_port(const tl_app_t *a);       /* OTLP listener */
int tl_app_query_port(const tl_app_t *a); /* query listener */
tl_tsdb_t *tl_app_tsdb(tl_app_t *a);
struct tl_sigdb *tl_app_sigdb(tl_app_t *a);
/* The periodic maintenance (run every 60s as a job of the ingest queue):
 * tsdb compaction/retention, then span and log retention relative to
 * now_ms. Runs on the caller's thread, so outside the worker only while the
 * queue is idle (tests drive it this way with a chosen now_ms). */
int tl_app_maintain(tl_app_t *a, int64_t now_ms, char *err, size_t errlen);
/* Number of jobs queued or running. */
size_t tl_app_queue_depth(const tl_app_t *a);
void tl_app_drain(tl_app_t *a, void (*cb)(void *ud), void *ud);
void tl_app_free(tl_app_t *a);

/* ---- OTLP forwarding (tl_forward.c) ---- */

enum { TL_FWD_TRACES = 0, TL_FWD_METRICS, TL_FWD_LOGS, TL_FWD_SIG_N };
typedef struct tl_forwarder tl_forwarder_t;

/* *out = NULL when cfgs is empty. cfgs must outlive the forwarder. reg
 * and log may be NULL. Runs on the loop thread only. */
int tl_forward_new(uv_loop_t *loop, const sk_cfg_list_t *cfgs, sk_metrics_t *reg, sk_logger_t *log,
                   tl_forwarder_t **out, char *err, size_t errlen);
/* 1 when some target takes signal sig (TL_FWD_*). */
int tl_forward_wants(const tl_forwarder_t *fw, int sig);
/* Queues one encoded Export<Signal>ServiceRequest (copied) holding `items`
 * items for every target taking sig; drops (and counts) it where the
 * target's queue is full. */
void tl_forward_push(tl_forwarder_t *fw, int sig, const uint8_t *data, size_t len, size_t items);
/* Drops whatever is queued; memory is released once the timers closed. */
void tl_forward_free(tl_forwarder_t *fw);
/* Config validators (endpoint syntax, signal names). */
int tl_forward_check_endpoint(const void *field, char *msg, size_t msglen);
int tl_forward_check_signals(const void *field, char *msg, size_t msglen);

/* ---- export to Kafka (tl_kafka.c) ---- */

typedef struct tl_kafka tl_kafka_t;
/* *out = NULL when cfg->brokers is empty. cfg must outlive the exporter.
 * reg and log may be NULL. Runs on the loop thread only. */
int tl_kafka_new(uv_loop_t *loop, const tl_kafka_cfg_t *cfg, sk_metrics_t *reg, sk_logger_t *log, tl_kafka_t **out,
                 char *err, size_t errlen);
/* 1 when signal sig (TL_FWD_*) has a topic. Any thread. */
int tl_kafka_wants(const tl_kafka_t *k, int sig);
/* Produces one encoded Export<Signal>ServiceRequest (copied) holding
 * `items` items to the signal's topic, or drops and counts it. */
void tl_kafka_push(tl_kafka_t *k, int sig, const uint8_t *data, size_t len, size_t items);
/* Waits up to flush_timeout for confirmations, drops the rest; memory is
 * released once the loop handles closed. */
void tl_kafka_free(tl_kafka_t *k);
/* Config validators (topic names, librdkafka properties). */
int tl_kafka_check_topic(const void *field, char *msg, size_t msglen);
int tl_kafka_check_properties(const void *field, char *msg, size_t msglen);

/* ---- bodies: gzip and snappy ---- */

/* Inflates gzip or zlib data into pool memory, at most max bytes:
 * SK_E2BIG past it, SK_EPARSE on corrupt data. */
int tl_gunzip(sk_pool_t *pool, const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen);
/* Snappy block format (remote-write); SK_E2BIG past max. */
int tl_snappy_decode(sk_pool_t *pool, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                     size_t *outlen);

/* ---- protobuf ---- */

/* Checks nesting depth of encoded data against the descriptor (protobuf-c
 * recurses without bound), then unpacks with memory from pool. NULL on
 * bad data (err says why). */
ProtobufCMessage *tl_pb_unpack(sk_pool_t *pool, const ProtobufCMessageDescriptor *d, const uint8_t *data,
                               size_t len, char *err, size_t errlen);
/* Packs into pool memory. */
uint8_t *tl_pb_pack(sk_pool_t *pool, const ProtobufCMessage *m, size_t *len);

/* ---- OTLP JSON -> protobuf-c structs (allocated from pool) ---- */

int tl_otlp_json_traces(sk_pool_t *pool, const char *s, size_t len, Otlp__ExportTraceServiceRequest **out,
                        char *err, size_t errlen);
int tl_otlp_json_metrics(sk_pool_t *pool, const char *s, size_t len,
                         Otlp__ExportMetricsServiceRequest **out, char *err, size_t errlen);
int tl_otlp_json_logs(sk_pool_t *pool, const char *s, size_t len, Otlp__ExportLogsServiceRequest **out,
                      char *err, size_t errlen);

/* Any protobuf-c message as OTLP JSON (camelCase, int64 as strings, hex ids). */
json_t *tl_pb_to_json(const ProtobufCMessage *m);
/* AnyValue / attributes as OTLP JSON ({"stringValue":..} / [{"key":..,"value":..}]). */
json_t *tl_otlp_anyvalue_json(const Otlp__AnyValue *v);
json_t *tl_otlp_attrs_json(Otlp__KeyValue *const *kv, size_t n);
/* The same JSON text as tl_pb_to_json() dumped compact, appended to b
 * without building a tree (the span store's events and links). */
void tl_pb_json_write(sk_buf_t *b, const ProtobufCMessage *m);
/* Pieces of those writers for the span row decoder: a JSON string of len
 * bytes (escaped; invalid UTF-8 as U+FFFD), integers, a double as jansson
 * dumps a real (NaN/infinities as strings), bytes in base64 (quoted). */
void tl__json_strn(sk_buf_t *b, const char *s, size_t len);
void tl__json_u64(sk_buf_t *b, uint64_t v);
void tl__json_i64(sk_buf_t *b, int64_t v);
void tl__json_double(sk_buf_t *b, double d);
void tl__json_base64(sk_buf_t *b, const ProtobufCBinaryData *d);
/* Plain string of an AnyValue (string as is, others as JSON text) in pool. */
const char *tl_otlp_anyvalue_str(sk_pool_t *pool, const Otlp__AnyValue *v);
/* The string value of attribute key, or NULL. */
const char *tl_otlp_attr_str(Otlp__KeyValue *const *kv, size_t n, const char *key);
/* Lower-case hex of b into out (2n+1 bytes). */
void tl_hex(const uint8_t *b, size_t n, char *out);
/* Hex string to bytes: returns n or SK_EINVAL. */
int tl_unhex(const char *s, uint8_t *out, size_t max);

/* ---- metric mapping ---- */

typedef struct tl_samples {
  tl_sample_in_t *v;
  size_t n, cap;
  size_t rejected;     /* points that could not be mapped */
  char first_error[256];
} tl_samples_t;

/* Prometheus-valid metric/label name from any string (pool memory). */
const char *tl_prom_name(sk_pool_t *pool, const char *s, int is_label);
/* OTLP metrics -> samples (labels and arrays in pool). */
void tl_otlp_metrics_map(sk_pool_t *pool, const Otlp__ExportMetricsServiceRequest *r, tl_samples_t *out);
/* Remote-write WriteRequest -> samples. */
void tl_remote_write_map(sk_pool_t *pool, const Prometheus__WriteRequest *w, tl_samples_t *out);
/* Adds one sample; labels are copied (array) but strings borrowed. */
void tl_samples_add(sk_pool_t *pool, tl_samples_t *s, const tl_label_t *labels, size_t n, int64_t ts_ms,
                    double v);

/* ---- Prometheus text exposition parser ---- */

typedef struct tl_expo_opts {
  size_t max_samples; /* 0 = 100000 */
  size_t max_line;    /* 0 = 65536 */
  int64_t default_ts_ms;
} tl_expo_opts_t;
/* Parses text into samples (pool). SK_EPARSE with "line N: message",
 * SK_ELIMIT past max_samples. */
int tl_expo_parse(sk_pool_t *pool, const char *text, size_t len, const tl_expo_opts_t *o, tl_samples_t *out,
                  char *err, size_t errlen);

/* ---- spans and logs (sqlite) ---- */

typedef struct tl_sigdb tl_sigdb_t;

int tl_sigdb_open(const char *path, int no_sync, tl_sigdb_t **out, char *err, size_t errlen);
void tl_sigdb_close(tl_sigdb_t *db);
/* Stores every span of the request in one transaction. *rejected counts
 * spans with bad ids. */
int tl_sigdb_put_spans(tl_sigdb_t *db, sk_pool_t *pool, const Otlp__ExportTraceServiceRequest *r,
                       size_t *accepted, size_t *rejected, char *err, size_t errlen);

/* One span as the store keeps it (tl_span_rows.c). Text is given by
 * pointer and length (not NUL-terminated: it may point into the request
 * body); a NULL pointer is SQL NULL. Resource and span attributes are
 * OTLP KeyValueList protobuf, events and links OTLP JSON arrays, all at
 * offsets into the rows' json buffer; a negative length is NULL. */
typedef struct tl_str {
  const char *p;
  int len;
} tl_str_t;

typedef struct tl_span_row {
  char tid[33], sid[17], pid[17]; /* hex; pid "" for a root span */
  tl_str_t service, name, scope, scope_version, trace_state, status_msg;
  int64_t kind, status, start_ns, end_ns;
  size_t res_off, attrs_off, events_off, links_off;
  int res_len, attrs_len, events_len, links_len;
} tl_span_row_t;

typedef struct tl_span_rows {
  tl_span_row_t *v;
  size_t n, cap;
  size_t rejected; /* spans without a 16-byte trace id and an 8-byte span id, not all zero */
  sk_buf_t *json;  /* attributes and resources (protobuf), events and links (JSON) of every row */
} tl_span_rows_t;

/* The rows of a decoded request (JSON by tl_pb_json_write's rules); rows in
 * pool, JSON appended to out->json. */
void tl_span_rows_from_msg(sk_pool_t *pool, const Otlp__ExportTraceServiceRequest *r, tl_span_rows_t *out);
/* The same rows straight from ExportTraceServiceRequest protobuf bytes,
 * without protobuf-c: 1 when done, 0 when this decoder leaves the body to
 * tl_pb_unpack() + tl_span_rows_from_msg() (malformed or unusual input: a
 * field with an unexpected wire type, a repeated singular message, a string
 * with a NUL, nesting past TL_PB_MAX_DEPTH); out is then reset. Text points
 * into data, which must outlive the rows. */
int tl_span_rows_from_wire(sk_pool_t *pool, const uint8_t *data, size_t len, tl_span_rows_t *out);
/* Stores the rows in one transaction (the sbuf/rbuf of db are not used). */
int tl_sigdb_put_rows(tl_sigdb_t *db, const tl_span_rows_t *rows, char *err, size_t errlen);
/* The writer's reusable JSON buffer for rows (ingest worker only). */
sk_buf_t *tl_sigdb_row_buf(tl_sigdb_t *db);

/* One log line ready for storage. */
typedef struct tl_logline {
  int64_t ts_ns;
  int64_t observed_ns;
  int severity;
  const char *severity_text;
  const char *labels_json; /* canonical: keys sorted */
  const char *body;
  const char *trace_id; /* hex or NULL */
  const char *span_id;
  const char *attrs_json; /* or NULL */
} tl_logline_t;

int tl_sigdb_put_logs(tl_sigdb_t *db, const tl_logline_t *l, size_t n, char *err, size_t errlen);
/* OTLP logs -> lines (pool). */
int tl_otlp_logs_lines(sk_pool_t *pool, const Otlp__ExportLogsServiceRequest *r, tl_logline_t **out,
                       size_t *n, size_t *rejected);
/* Loki push JSON -> lines (pool). */
int tl_loki_push_decode(sk_pool_t *pool, const char *s, size_t len, tl_logline_t **out, size_t *n,
                        char *err, size_t errlen);
/* Finds "trace_id=<32 hex>" (traceid, traceID, trace-id; = or :) in a line. */
const char *tl_find_trace_id(sk_pool_t *pool, const char *line);

/* Query handlers on the reader connection; each answers the request. */
void tl_traces_get(tl_sigdb_t *db, sk_http_req_t *req, const char *trace_hex);
void tl_traces_logs(tl_sigdb_t *db, sk_http_req_t *req, const char *trace_hex);
void tl_traces_search(tl_sigdb_t *db, sk_http_req_t *req);
void tl_service_graph(tl_sigdb_t *db, sk_http_req_t *req);
void tl_loki_query_range(tl_sigdb_t *db, sk_http_req_t *req, int instant);
void tl_loki_labels(tl_sigdb_t *db, sk_http_req_t *req, const char *label);
/* Counts for self-metrics. */
int64_t tl_sigdb_count(tl_sigdb_t *db, int logs);
uint64_t tl_sigdb_disk_bytes(tl_sigdb_t *db);

/* Retention: deletes spans that started before span_before_ns and log
 * lines stamped before log_before_ns (a cutoff <= 0 skips that kind), then
 * label streams left without lines. Each batch of at most `batch` rows is
 * its own short writer transaction; at most max_batches run per kind, so
 * one call is bounded and a backlog is finished by later calls. Writer
 * connection: call only from the ingest worker (or with it idle). */
#define TL_SIGDB_EXPIRE_BATCH 2000
#define TL_SIGDB_EXPIRE_MAX_BATCHES 250
typedef struct tl_sigdb_expired {
  size_t spans, logs, streams;
  int more; /* the batch limit stopped a kind early */
} tl_sigdb_expired_t;
int tl_sigdb_expire(tl_sigdb_t *db, int64_t span_before_ns, int64_t log_before_ns, size_t batch,
                    size_t max_batches, tl_sigdb_expired_t *out, char *err, size_t errlen);

/* ---- small shared helpers ---- */

/* Decoded value of key in an x-www-form-urlencoded string, or NULL. */
const char *tl_form_get(sk_pool_t *pool, const char *q, const char *key);
/* Time parameter: RFC 3339, unix seconds (float) or unix ns (>= 1e15). */
int tl_parse_time_ns(const char *s, int64_t *ns);
/* "100ms", "1.5s", "10us", "2m", "250000" (ns) -> ns. */
int tl_parse_duration_ns(const char *s, int64_t *ns);
void tl_respond_json(sk_http_req_t *req, int status, json_t *body); /* steals body */
void tl_respond_error(sk_http_req_t *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- scraping ---- */

typedef struct tl_scraper tl_scraper_t;
/* Adds the sample batch to the writer queue (from tl_app.c). */
typedef void (*tl_scrape_sink_fn)(void *ud, sk_pool_t *pool, tl_samples_t *s);
int tl_scraper_new(uv_loop_t *loop, const tl_config_t *cfg, int self_admin_port, tl_scrape_sink_fn sink,
                   void *ud, tl_scraper_t **out, char *err, size_t errlen);
size_t tl_scraper_target_count(const tl_scraper_t *s);
void tl_scraper_free(tl_scraper_t *s);

#endif
