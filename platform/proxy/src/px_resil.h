/* px_resil.h - skiff-proxy resilience and fault injection (prefix px_).
 *
 * Pure decision modules the proxy core calls on its hot path: retries with
 * backoff and a budget, circuit breakers, outlier detection, active health
 * check scheduling, local rate limiting and fault injection. None of them
 * reads a clock or a random source: time comes in as `now_ns` (the
 * uv_hrtime() scale, nanoseconds, any fixed origin) and randomness from a
 * caller-owned px_rng_t, so the unit tests are deterministic.
 *
 * Threading: the proxy keeps one of each state object per process (per
 * cluster or route), shared by every worker thread, so limits and ejections
 * are process-wide. The hot paths are lock-free C11 atomics: breaker
 * counters, the retry budget, the route-wide bucket (one CAS on a word),
 * outlier counters and the ejected-until time. Two rare or small sections
 * take a lock: an outlier ejection/un-ejection decision (a spinlock per
 * cluster, taken only when a run of errors reaches its threshold or an
 * ejection expires) and the per-client bucket table (a mutex per route,
 * held for one lookup). Health check state (px_hc_t, px_hc_runner_t) is
 * owned by the one loop that probes; it publishes results through a
 * callback.
 *
 * Configuration: each policy has a plain config struct, filled with its
 * documented defaults by px_<x>_config_default() and from a jansson value by
 * px_<x>_config_parse(json, path, out, err, errlen). `path` names the
 * object for error messages ("routes[2].retry"); errors come back as
 * SK_ECONFIG with "routes[2].retry.per_try_timeout: expected a duration like
 * 250ms" in err. Unknown keys are errors. json == NULL (section absent)
 * gives the defaults with `enabled` = 0. Durations are strings ("250ms",
 * "10s", "1m") or integers in milliseconds; percentages are numbers 0..100
 * (fractions allowed, resolution 0.0001%). Parsed configs own no memory
 * except where a _config_done() is declared.
 *
 * Every knob, its default and its meaning: docs/proxy-resilience.md. */
#ifndef SKIFF_PX_RESIL_H
#define SKIFF_PX_RESIL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "skiff/http.h"

/* ---- reasons (x-skiff-reason values and access-log "reason") ---- */
#define PX_REASON_CIRCUIT_OPEN "circuit_open"
#define PX_REASON_RATE_LIMITED "rate_limited"
#define PX_REASON_FAULT_ABORT "fault_abort"
#define PX_REASON_NO_HEALTHY_UPSTREAM "no_healthy_upstream"
/* Response header the core sets when a fault delay was injected (value: the
 * delay in ms); the access log carries the same as "fault_delay_ms". */
#define PX_HDR_FAULT_DELAY "x-skiff-fault-delay"

#define PX_MS (UINT64_C(1000000)) /* ns per ms */

/* ---- random numbers: splitmix64 seeding, xorshift64* stream ---- */

typedef struct px_rng {
  uint64_t s;
} px_rng_t;

static inline void px_rng_seed(px_rng_t *r, uint64_t seed) {
  uint64_t z = seed + UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  z ^= z >> 31;
  r->s = z ? z : UINT64_C(0x2545F4914F6CDD1D);
}

static inline uint64_t px_rng_next(px_rng_t *r) {
  uint64_t x = r->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* Uniform in [0, n); n == 0 gives 0. (Multiply-shift; bias < n / 2^64.) */
static inline uint64_t px_rng_below(px_rng_t *r, uint64_t n) {
  return (uint64_t)(((unsigned __int128)px_rng_next(r) * n) >> 64);
}

/* Percentages are stored in parts per million (100% == PX_PPM_ALL). */
#define PX_PPM_ALL UINT32_C(1000000)
/* 1 with probability ppm / 1e6. */
static inline int px_rng_chance(px_rng_t *r, uint32_t ppm) {
  return ppm >= PX_PPM_ALL ? 1 : ppm == 0 ? 0 : px_rng_below(r, PX_PPM_ALL) < ppm;
}

/* ---- outcome of one upstream try ---- */

typedef enum px_outcome {
  PX_OUT_RESPONSE = 0,     /* a response arrived: look at status */
  PX_OUT_CONNECT_FAILURE,  /* refused, unreachable, connect/TLS timeout */
  PX_OUT_RESET,            /* connection closed/reset before a full response */
  PX_OUT_TIMEOUT,          /* per-try (or request) timeout after the request was sent */
  PX_OUT_LOCAL             /* not attempted (breaker, no endpoint): never retried/recorded */
} px_outcome_t;

/* Maps an sk_http_client error onto an outcome. `sent` says whether the
 * request had been written to a connection (the core knows; the client
 * callback alone cannot tell a connect timeout from a response timeout). */
px_outcome_t px_outcome_from_err(int err, int sent);
const char *px_outcome_name(px_outcome_t o); /* "response", "connect_failure", ... */

/* ==== retries ==== */

enum {
  PX_RETRY_ON_5XX = 1 << 0,            /* any 5xx, reset, connect failure, per-try timeout */
  PX_RETRY_ON_GATEWAY_ERROR = 1 << 1,  /* 502/503/504, connect failure, per-try timeout */
  PX_RETRY_ON_RESET = 1 << 2,
  PX_RETRY_ON_CONNECT_FAILURE = 1 << 3,
  PX_RETRY_ON_RETRIABLE_STATUS = 1 << 4, /* statuses in retriable_status_codes */
  PX_RETRY_ON_TIMEOUT = 1 << 5           /* per-try timeout */
};

#define PX_RETRY_MAX_ATTEMPTS 10
#define PX_RETRY_MAX_STATUSES 16

typedef struct px_retry_config {
  int enabled;              /* 1 when a retry section was given */
  uint32_t attempts;        /* total tries incl. the first; default 2 (1 when absent), max 10 */
  uint32_t retry_on;        /* PX_RETRY_ON_*; default gateway-error|connect-failure|reset */
  uint16_t statuses[PX_RETRY_MAX_STATUSES]; /* retriable_status_codes */
  uint32_t nstatuses;
  uint64_t per_try_timeout_ms; /* 0 = none (only the route timeout); default 0 */
  uint64_t backoff_base_ms;    /* default 25 */
  uint64_t backoff_max_ms;     /* default 250 (10 x base when only base is set) */
  uint32_t budget_percent;     /* retries in flight <= percent of active requests; default 20 */
  uint32_t budget_min_concurrency; /* ... but always allow this many; default 3 */
} px_retry_config_t;

void px_retry_config_default(px_retry_config_t *c);
int px_retry_config_parse(const json_t *j, const char *path, px_retry_config_t *out, char *err,
                          size_t errlen);

/* Budget state: one per route per worker. The core counts requests in
 * flight (started, not finished) and retries in flight (a retry try was
 * started and has not finished). */
typedef struct px_retry_budget {
  _Atomic uint32_t active_requests; /* atomics: one budget serves every worker */
  _Atomic uint32_t active_retries;
} px_retry_budget_t;

/* Decrement that never goes below zero (an end without a start is ignored). */
static inline void px__atomic_dec_floor(_Atomic uint32_t *v) {
  uint32_t cur = atomic_load_explicit(v, memory_order_relaxed);
  while (cur && !atomic_compare_exchange_weak_explicit(v, &cur, cur - 1, memory_order_relaxed,
                                                       memory_order_relaxed)) {
  }
}
static inline void px_budget_request_start(px_retry_budget_t *b) {
  atomic_fetch_add_explicit(&b->active_requests, 1, memory_order_relaxed);
}
static inline void px_budget_request_end(px_retry_budget_t *b) { px__atomic_dec_floor(&b->active_requests); }
static inline void px_budget_retry_start(px_retry_budget_t *b) {
  atomic_fetch_add_explicit(&b->active_retries, 1, memory_order_relaxed);
}
static inline void px_budget_retry_end(px_retry_budget_t *b) { px__atomic_dec_floor(&b->active_retries); }
/* max(min_concurrency, active_requests * percent / 100) */
uint32_t px_budget_limit(const px_retry_config_t *c, const px_retry_budget_t *b);

typedef enum px_retry_decision {
  PX_RETRY_NO = 0,         /* success, or an outcome the policy does not retry */
  PX_RETRY_YES = 1,        /* retry now (after px_retry_backoff_ms) */
  PX_RETRY_EXHAUSTED = 2,  /* retriable but `attempts` tries are done */
  PX_RETRY_BUDGET = 3      /* retriable but the retry budget is used up */
} px_retry_decision_t;

/* attempt = number of tries already made (1 after the first try). Call
 * with the try's own retry (if any) already ended in the budget. On
 * PX_RETRY_YES the core starts the next try (px_budget_retry_start and the
 * breaker's PX_BRK_RETRIES) after the backoff. */
px_retry_decision_t px_retry_should(const px_retry_config_t *c, uint32_t attempt, px_outcome_t out,
                                    int status, const px_retry_budget_t *b);
/* 1 if this outcome is retriable under the policy (ignores attempts/budget). */
int px_retry_retriable(const px_retry_config_t *c, px_outcome_t out, int status);
/* Full-jitter exponential backoff before try attempt+1:
 * uniform in [0, min(max, base * 2^(attempt-1))] milliseconds. */
uint64_t px_retry_backoff_ms(const px_retry_config_t *c, uint32_t attempt, px_rng_t *rng);
const char *px_retry_decision_name(px_retry_decision_t d);

/* ==== circuit breaker (per cluster, shared by the workers; atomics) ==== */

typedef enum px_brk_kind {
  PX_BRK_CONNECTIONS = 0, /* upstream connections open */
  PX_BRK_PENDING = 1,     /* requests waiting for a connection/stream */
  PX_BRK_REQUESTS = 2,    /* requests in flight to the cluster */
  PX_BRK_RETRIES = 3,     /* retry tries in flight */
  PX_BRK_NKINDS = 4
} px_brk_kind_t;

typedef struct px_breaker_config {
  int enabled;
  uint32_t max[PX_BRK_NKINDS]; /* defaults 1024, 1024, 1024, 3; 0 = unlimited */
} px_breaker_config_t;

void px_breaker_config_default(px_breaker_config_t *c);
int px_breaker_config_parse(const json_t *j, const char *path, px_breaker_config_t *out, char *err,
                            size_t errlen);

typedef struct px_breaker {
  uint32_t max[PX_BRK_NKINDS];
  _Atomic uint32_t cur[PX_BRK_NKINDS];
  _Atomic uint64_t overflow[PX_BRK_NKINDS]; /* rejected try_acquire calls */
} px_breaker_t;

void px_breaker_init(px_breaker_t *b, const px_breaker_config_t *c);
/* Takes one slot of `kind`: 0, or SK_ELIMIT when at the limit (answer 503
 * with reason circuit_open for PENDING/REQUESTS; for RETRIES just do not
 * retry; for CONNECTIONS do not open one, the request waits as pending:
 * the upstream pools ask through px_share_gate, px_share.c). */
int px_breaker_try_acquire(px_breaker_t *b, px_brk_kind_t kind);
void px_breaker_release(px_breaker_t *b, px_brk_kind_t kind);
/* 1 while the kind is at its limit ("open"): the breaker-state gauge. */
int px_breaker_is_open(const px_breaker_t *b, px_brk_kind_t kind);
uint32_t px_breaker_current(const px_breaker_t *b, px_brk_kind_t kind);
uint64_t px_breaker_overflows(const px_breaker_t *b, px_brk_kind_t kind);
const char *px_brk_kind_name(px_brk_kind_t kind); /* "connections", "pending", "requests", "retries" */

/* ==== outlier detection (per cluster, shared by the workers) ==== */

typedef struct px_outlier_config {
  int enabled;
  uint32_t consecutive_5xx;            /* default 5; 0 = off */
  uint32_t consecutive_gateway_errors; /* default 0 (off) */
  uint64_t interval_ms;                /* default 10000: sweep / ejection-count decay period */
  uint64_t base_ejection_time_ms;      /* default 30000 */
  uint64_t max_ejection_time_ms;       /* default 300000 */
  uint32_t max_ejection_percent;       /* default 50 */
} px_outlier_config_t;

void px_outlier_config_default(px_outlier_config_t *c);
int px_outlier_config_parse(const json_t *j, const char *path, px_outlier_config_t *out, char *err,
                            size_t errlen);

/* Shared by all workers: counters and ejected_until are atomics read and
 * bumped without a lock; ejecting, un-ejecting and the multiplier's decay
 * happen under px_outlier_t.lock. */
typedef struct px_outlier_ep {
  _Atomic uint32_t cons_5xx, cons_gw;
  _Atomic uint32_t ejections;        /* multiplier: grows per ejection, decays while healthy */
  _Atomic uint64_t total_ejections;  /* counter for metrics */
  _Atomic uint64_t ejected_until;    /* ns; 0 = not ejected */
  _Atomic uint64_t last_decay;       /* ns */
} px_outlier_ep_t;

typedef struct px_outlier {
  px_outlier_config_t cfg;
  size_t n;
  _Atomic size_t nejected;
  atomic_flag lock; /* spinlock for the rare state changes */
  px_outlier_ep_t *ep;
} px_outlier_t;

int px_outlier_init(px_outlier_t *o, const px_outlier_config_t *c, size_t nendpoints);
void px_outlier_done(px_outlier_t *o); /* accepts a zeroed struct */

typedef enum px_outlier_event {
  PX_OUTLIER_NONE = 0,
  PX_OUTLIER_EJECTED = 1,   /* this result ejected the endpoint */
  PX_OUTLIER_SUPPRESSED = 2 /* would eject, but max_ejection_percent is reached */
} px_outlier_event_t;

/* Records one try's result against endpoint i (PX_OUT_LOCAL is ignored;
 * connect failures, resets and timeouts count as gateway errors and 5xx).
 * Safe from any thread: when several threads see the run reach its
 * threshold at once, exactly one of them gets PX_OUTLIER_EJECTED. */
px_outlier_event_t px_outlier_on_result(px_outlier_t *o, size_t i, px_outcome_t out, int status,
                                        uint64_t now_ns);
/* Un-ejects lazily when the time has passed. */
int px_outlier_is_ejected(px_outlier_t *o, size_t i, uint64_t now_ns);
/* Un-ejects expired endpoints and decays ejection multipliers; call every
 * interval (optional: everything also happens lazily). Returns the number
 * of endpoints brought back. */
size_t px_outlier_sweep(px_outlier_t *o, uint64_t now_ns);
size_t px_outlier_ejected_count(const px_outlier_t *o);

/* ==== active health checks (per cluster; one prober per process) ==== */

#define PX_HC_MAX_STATUS_RANGES 8

typedef struct px_hc_config {
  int enabled;
  char path[256];            /* default "/healthz" */
  char host[256];            /* Host header; default "" = the endpoint's host:port */
  uint64_t interval_ms;      /* default 5000 */
  uint64_t timeout_ms;       /* default 1000 */
  uint32_t healthy_threshold;   /* default 2 */
  uint32_t unhealthy_threshold; /* default 3 */
  uint16_t status_lo[PX_HC_MAX_STATUS_RANGES], status_hi[PX_HC_MAX_STATUS_RANGES];
  uint32_t nstatus;          /* expected_statuses: default 200-299 */
} px_hc_config_t;

void px_hc_config_default(px_hc_config_t *c);
int px_hc_config_parse(const json_t *j, const char *path, px_hc_config_t *out, char *err, size_t errlen);
int px_hc_status_ok(const px_hc_config_t *c, int status);

typedef struct px_hc_ep {
  uint8_t healthy;     /* endpoints start healthy */
  uint8_t in_flight;
  uint32_t ok_run, fail_run;
  uint64_t next_ns;    /* next probe due */
  uint64_t probes, failures;
} px_hc_ep_t;

typedef struct px_hc {
  px_hc_config_t cfg;
  size_t n;
  px_hc_ep_t *ep;
} px_hc_t;

/* First probes are spread over [now, now + interval) with rng. */
int px_hc_init(px_hc_t *h, const px_hc_config_t *c, size_t nendpoints, uint64_t now_ns, px_rng_t *rng);
void px_hc_done(px_hc_t *h);
/* Index of an endpoint whose probe is due and not in flight, or -1. The
 * core then calls px_hc_probe_start and sends GET cfg.path with
 * cfg.timeout_ms. Loop until -1. */
long px_hc_due(const px_hc_t *h, uint64_t now_ns);
void px_hc_probe_start(px_hc_t *h, size_t i, uint64_t now_ns);
/* Earliest time something is due (for a uv timer); UINT64_MAX if none. */
uint64_t px_hc_next_deadline(const px_hc_t *h);

typedef enum px_hc_change { PX_HC_SAME = 0, PX_HC_BECAME_HEALTHY = 1, PX_HC_BECAME_UNHEALTHY = 2 } px_hc_change_t;
/* ok: probe answered with an expected status in time. Schedules the next
 * probe at now + interval (plus up to 10% jitter from rng, may be NULL). */
px_hc_change_t px_hc_on_result(px_hc_t *h, size_t i, int ok, uint64_t now_ns, px_rng_t *rng);
int px_hc_is_healthy(const px_hc_t *h, size_t i);

/* A ready-made prober: a uv timer and one sk_http_client per endpoint
 * running the schedule above on one loop (px_resil_health_run.c). */
typedef struct px_hc_runner px_hc_runner_t;
typedef struct px_hc_target {
  const char *host; /* copied */
  int port;
  sk_tls_ctx_t *tls; /* NULL = plaintext; borrowed, must outlive the runner */
  const char *sni;
} px_hc_target_t;
/* on_change runs on the loop when endpoint i flips (healthy = new state). */
typedef void (*px_hc_change_fn)(void *ud, size_t i, int healthy);
int px_hc_runner_new(uv_loop_t *loop, const px_hc_config_t *c, const px_hc_target_t *targets,
                     size_t n, uint64_t seed, px_hc_change_fn fn, void *ud, px_hc_runner_t **out);
int px_hc_runner_healthy(const px_hc_runner_t *r, size_t i);
const px_hc_t *px_hc_runner_state(const px_hc_runner_t *r);
/* Stops probing; memory goes once the loop has run the closes. Accepts NULL. */
void px_hc_runner_free(px_hc_runner_t *r);

/* ==== local rate limit (per route, shared by the workers) ==== */

typedef enum px_rl_key_kind {
  PX_RL_KEY_NONE = 0,   /* one bucket for the whole route */
  PX_RL_KEY_SPIFFE = 1, /* peer certificate's SPIFFE ID (falls back to address) */
  PX_RL_KEY_ADDRESS = 2, /* peer IP address (port dropped) */
  PX_RL_KEY_HEADER = 3  /* value of a request header (absent = "" bucket) */
} px_rl_key_kind_t;

typedef struct px_ratelimit_config {
  int enabled;
  uint64_t requests_per_unit; /* required, >= 1 */
  uint64_t unit_ms;           /* "second" (default), "minute", "hour" */
  uint64_t burst;             /* bucket size; default requests_per_unit */
  px_rl_key_kind_t per_client;
  char header[128];           /* per_client: header */
  uint32_t max_clients;       /* bound on client buckets; default 10000 (LRU) */
} px_ratelimit_config_t;

void px_ratelimit_config_default(px_ratelimit_config_t *c);
int px_ratelimit_config_parse(const json_t *j, const char *path, px_ratelimit_config_t *out,
                              char *err, size_t errlen);

/* A token bucket kept as a theoretical arrival time (GCRA): one atomic
 * word, so a route-wide bucket may be shared by all workers. */
typedef struct px_rl_bucket {
  _Atomic uint64_t tat; /* ns */
} px_rl_bucket_t;

typedef struct px_rl_client px_rl_client_t;

typedef struct px_ratelimit {
  px_ratelimit_config_t cfg;
  uint64_t interval_ns;  /* time per token */
  uint64_t tolerance_ns; /* burst * interval */
  px_rl_bucket_t route;
  /* per-client table: shared by the workers, under mu */
  pthread_mutex_t mu;
  int mu_init;
  px_rl_client_t **slots;
  size_t nslots, nclients;
  px_rl_client_t *lru_head, *lru_tail; /* head = most recent */
  uint64_t evictions;
} px_ratelimit_t;

int px_ratelimit_init(px_ratelimit_t *rl, const px_ratelimit_config_t *c);
void px_ratelimit_done(px_ratelimit_t *rl); /* accepts a zeroed struct */
/* Fills buf with the client key for this request under cfg.per_client
 * ("" when PX_RL_KEY_NONE) and returns buf. */
const char *px_ratelimit_key(const px_ratelimit_config_t *c, const sk_http_req_t *req, char *buf,
                             size_t len);
/* 1 = allowed (a token was taken), 0 = limited: answer 429 with reason
 * rate_limited and "retry-after: *retry_after_s" (whole seconds, >= 1). */
int px_ratelimit_allow(px_ratelimit_t *rl, const char *key, uint64_t now_ns, uint32_t *retry_after_s);
/* Tokens available now in a key's bucket (for tests and metrics). */
double px_ratelimit_tokens(px_ratelimit_t *rl, const char *key, uint64_t now_ns);

/* ==== fault injection (per route; L4 links) ==== */

typedef struct px_fault_config {
  int enabled;
  uint32_t delay_ppm;       /* delay.percent */
  uint64_t delay_ms;        /* delay.fixed_delay */
  uint32_t abort_ppm;       /* abort.percent */
  int abort_status;         /* abort.status, default 503 */
} px_fault_config_t;

void px_fault_config_default(px_fault_config_t *c);
int px_fault_config_parse(const json_t *j, const char *path, px_fault_config_t *out, char *err,
                          size_t errlen);

typedef struct px_fault_decision {
  uint64_t delay_ms; /* 0 = none; apply before anything else */
  int abort_status;  /* 0 = none; else answer this status with reason fault_abort (after the delay) */
} px_fault_decision_t;

/* Two independent draws (delay, then abort). Returns 1 if any fault. */
int px_fault_decide(const px_fault_config_t *c, px_rng_t *rng, px_fault_decision_t *d);

typedef struct px_l4_fault_config {
  int enabled;
  uint32_t delay_ppm;      /* share of chunks delayed; default 100% when delay is set */
  uint64_t delay_ms;       /* added latency per forwarded chunk */
  uint32_t drop_ppm;       /* share of new connections refused (closed at once) */
  uint32_t close_ppm;      /* share of forwarded chunks that instead reset the link */
  uint64_t bandwidth_bps;  /* bytes per second per direction; 0 = unlimited */
} px_l4_fault_config_t;

void px_l4_fault_config_default(px_l4_fault_config_t *c);
int px_l4_fault_config_parse(const json_t *j, const char *path, px_l4_fault_config_t *out, char *err,
                             size_t errlen);
/* At accept: 1 = drop this connection. */
int px_l4_fault_drop(const px_l4_fault_config_t *c, px_rng_t *rng);
typedef struct px_l4_decision {
  uint64_t delay_ms;
  int close; /* 1 = reset the link instead of forwarding */
} px_l4_decision_t;
/* Per forwarded chunk. */
int px_l4_fault_chunk(const px_l4_fault_config_t *c, px_rng_t *rng, px_l4_decision_t *d);
/* Bandwidth shaping: a ns timestamp the chunk of len bytes may leave at
 * (*next_free_ns is per direction state, start 0). */
uint64_t px_l4_fault_pace(const px_l4_fault_config_t *c, uint64_t *next_free_ns, size_t len,
                          uint64_t now_ns);

/* ==== shared config parsing (px_resil_conf.c; also usable by the core) ==== */

/* Each writes "path.key: message" and returns SK_ECONFIG on a bad value;
 * 0 when set, 1 when the key is absent (out untouched). */
int px_conf_duration(const json_t *obj, const char *path, const char *key, uint64_t *ms, char *err,
                     size_t errlen);
int px_conf_uint(const json_t *obj, const char *path, const char *key, uint64_t lo, uint64_t hi,
                 uint64_t *out, char *err, size_t errlen);
int px_conf_percent(const json_t *obj, const char *path, const char *key, uint32_t *ppm, char *err,
                    size_t errlen);
int px_conf_string(const json_t *obj, const char *path, const char *key, char *buf, size_t buflen,
                   char *err, size_t errlen);
/* Rejects keys not in the NULL-terminated list. SK_ECONFIG if not an object. */
int px_conf_keys(const json_t *obj, const char *path, const char *const *known, char *err,
                 size_t errlen);
/* "path.key: msg" into err; returns SK_ECONFIG. key may be NULL. */
int px__conf_err(char *err, size_t errlen, const char *path, const char *key, const char *msg);

#endif
