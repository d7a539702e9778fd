/* px_config.h - skiff-proxy's configuration model (prefix px_).
 *
 * One in-memory model built from a JSON document (the YAML file becomes one
 * through the runtime's SK_CFG_JSON keys; the control plane will push the
 * same JSON). A built px_config_t is immutable and reference counted
 * (atomically: every worker thread holds one); a reload builds a new one and
 * swaps it in. Every error names the field path ("routes[2].match.path"),
 * plus file:line:col when positions are known. Shape: docs/proxy.md. */
#ifndef SKIFF_PX_CONFIG_H
#define SKIFF_PX_CONFIG_H

#include <jansson.h>
#include <regex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "px_resil.h"
#include "skiff/config.h"
#include "skiff/http.h"
#include "skiff/metrics.h"
#include "skiff/tls.h"

/* Bounds on counts and sizes. */
#define PX_MAX_LISTENERS 64
#define PX_MAX_ROUTES 1024
#define PX_MAX_CLUSTERS 256
#define PX_MAX_ENDPOINTS 256
#define PX_MAX_BACKENDS 32
#define PX_MAX_OVERRIDES 32
#define PX_MAX_MATCHERS 16
#define PX_MAX_METHODS 16
#define PX_MAX_HDR_OPS 32
#define PX_MAX_STR 4096
#define PX_MAX_REGEX 1024
#define PX_MAX_LOG_FIELDS 32

typedef enum px_str_match_kind {
  PX_SM_EXACT = 0,
  PX_SM_PREFIX = 1,
  PX_SM_REGEX = 2,
  PX_SM_PRESENT = 3, /* header/query present */
  PX_SM_ABSENT = 4   /* present: false */
} px_str_match_kind_t;

typedef struct px_str_match {
  int kind;
  char *value; /* exact / prefix text */
  size_t len;
  regex_t re; /* kind == REGEX (REG_EXTENDED|REG_NOSUB) */
  int has_re;
} px_str_match_t;

typedef struct px_kv_match {
  char *name;
  px_str_match_t m;
} px_kv_match_t;

typedef struct px_match {
  char *host;     /* NULL = any; "*.example.com" = suffix; compared without port, ASCII case-insensitive */
  int host_wild;  /* leading "*." */
  int has_path;
  px_str_match_t path;
  char *methods[PX_MAX_METHODS];
  size_t nmethods;
  px_kv_match_t *headers;
  size_t nheaders;
  px_kv_match_t *query;
  size_t nquery;
  int has_spiffe;       /* match.spiffe: the client certificate's SPIFFE ID (exact or prefix) */
  px_str_match_t spiffe;
} px_match_t;

typedef struct px_backend {
  int cluster; /* index into px_config.clusters */
  uint32_t weight;
} px_backend_t;

typedef struct px_override {
  char *header;
  char *value; /* NULL = any value of a present header */
  int cluster;
} px_override_t;

typedef struct px_hdr_ops {
  sk_http_header_t add[PX_MAX_HDR_OPS];
  size_t nadd;
  char *remove[PX_MAX_HDR_OPS];
  size_t nremove;
} px_hdr_ops_t;

typedef struct px_route {
  char *name;
  int index;
  px_match_t match;
  px_backend_t backends[PX_MAX_BACKENDS];
  size_t nbackends;
  uint32_t total_weight;
  px_override_t overrides[PX_MAX_OVERRIDES];
  size_t noverrides;
  px_hdr_ops_t req_hdrs, resp_hdrs;
  char *rewrite_prefix; /* replaces the matched path prefix */
  char *rewrite_path;   /* replaces the whole path (query kept) */
  int mirror_cluster;   /* -1 = none */
  uint32_t mirror_ppm;
  uint64_t timeout_ms;  /* whole request, all tries; default 15s; 0 = none */
  px_retry_config_t retry;
  px_fault_config_t fault;
  px_ratelimit_config_t rate_limit;
  /* metric children, resolved lazily and shared by workers (atomic) */
  _Atomic(sk_histogram_t *) m_duration;
} px_route_t;

typedef enum px_lb { PX_LB_ROUND_ROBIN = 0, PX_LB_LEAST_REQUEST = 1 } px_lb_t;

typedef struct px_endpoint {
  char *host;
  int port;
  char *addr; /* "host:port" as written */
} px_endpoint_t;

typedef struct px_cluster {
  char *name;
  int index;
  px_endpoint_t endpoints[PX_MAX_ENDPOINTS];
  size_t nendpoints;
  int lb;
  int h2;                 /* protocol h2 (ALPN with tls, else prior knowledge) */
  sk_tls_ctx_t *tls;      /* NULL = plaintext */
  char *sni;
  char *tls_sig;          /* ca|cert|key|sni for comparing across reloads */
  uint64_t connect_timeout_ms, idle_timeout_ms, request_timeout_ms;
  uint32_t max_conns;     /* HTTP/1.1 connections per endpoint per worker */
  px_breaker_config_t breaker;
  px_outlier_config_t outlier;
  px_hc_config_t health;
} px_cluster_t;

typedef enum px_proto { PX_PROTO_HTTP = 0, PX_PROTO_TCP = 1 } px_proto_t;

/* forward_client_cert: what reaches the upstream in x-forwarded-client-cert.
 * SANITIZE drops the client's header (the default: a client cannot claim an
 * identity); FORWARD passes it as sent; APPEND_FORWARD passes it and appends
 * this hop's element; SANITIZE_SET replaces it with this hop's element. The
 * element is URI=<the client certificate's SPIFFE ID>, added only when the
 * client presented a verified certificate with one. */
enum { PX_XFCC_SANITIZE, PX_XFCC_FORWARD, PX_XFCC_APPEND_FORWARD, PX_XFCC_SANITIZE_SET };

typedef struct px_listener {
  char *name;
  sk_cfg_addr_t addr;
  int proto;
  sk_tls_ctx_t *tls;
  char *tls_sig;    /* cert|key|ca|client_auth */
  int client_auth;  /* sk_tls_verify_t */
  int *routes;      /* http: route indices in match order; NULL = every route */
  size_t nroutes;
  int cluster;      /* tcp */
  px_l4_fault_config_t l4_fault;
  uint64_t max_body;
  uint64_t idle_timeout_ms;
  int xfcc;         /* forward_client_cert: PX_XFCC_* */
} px_listener_t;

typedef struct px_access_log {
  char *path; /* "" = off, "-" = stdout */
  int fields[PX_MAX_LOG_FIELDS];
  size_t nfields;
} px_access_log_t;

typedef struct px_config {
  _Atomic int refs;
  uint64_t version;
  json_t *source; /* the document it was built from */
  px_listener_t *listeners;
  size_t nlisteners;
  px_route_t *routes;
  size_t nroutes;
  px_cluster_t *clusters;
  size_t nclusters;
  px_access_log_t access_log;
} px_config_t;

/* Access log fields, in px_log_field_names order. */
enum {
  PX_LF_TS,
  PX_LF_METHOD,
  PX_LF_AUTHORITY,
  PX_LF_PATH,
  PX_LF_PROTOCOL,
  PX_LF_STATUS,
  PX_LF_REASON,
  PX_LF_ROUTE,
  PX_LF_CLUSTER,
  PX_LF_ENDPOINT,
  PX_LF_DURATION_MS,
  PX_LF_UPSTREAM_MS,
  PX_LF_BYTES,
  PX_LF_REQUEST_ID,
  PX_LF_TRACE_ID,
  PX_LF_PEER,
  PX_LF_PEER_SPIFFE,
  PX_LF_ATTEMPTS,
  PX_LF_LISTENER,
  PX_LF_SPAN_ID,
  PX_LF_NFIELDS
};
extern const char *const px_log_field_names[];

/* Builds a model from doc (an object with listeners, routes, clusters,
 * access_log). where (may be NULL) maps field paths to [line, col] as made by
 * SK_CFG_JSON; file names the source in errors. Every problem goes to errs.
 * Returns 0 with *out (refs = 1), or SK_ECONFIG. */
int px_config_build(const json_t *doc, const json_t *where, const char *file, uint64_t version,
                    sk_config_errors_t *errs, px_config_t **out);
px_config_t *px_config_ref(px_config_t *c);
void px_config_unref(px_config_t *c); /* accepts NULL; frees at zero */
int px_config_find_cluster(const px_config_t *c, const char *name);
int px_config_find_listener(const px_config_t *c, const char *name);
/* The active config as served by /config_dump: {"version":N,"config":{...}}. */
json_t *px_config_dump(const px_config_t *c);

#endif
