/* skiff-echo: request handling, injected latency and errors, metrics. */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "echo_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

typedef struct echo_pending echo_pending_t;

struct echo_app {
  uv_loop_t *loop;
  const echo_config_t *cfg;
  sk_http_server_t *srv;
  sk_logger_t *log;
  sk_metrics_t *reg;
  sk_mfamily_t *requests;   /* skiff_echo_requests_total{code} */
  sk_histogram_t *duration; /* skiff_echo_request_duration_seconds */
  sk_counter_t *injected;   /* skiff_echo_injected_errors_total */
  echo_pending_t *pending;  /* delayed responses */
  uint64_t rng;
  char hostname[256];
  void (*drain_cb)(void *ud);
  void *drain_ud;
};

/* A response waiting for its latency to pass. Freed in the timer's close
 * callback; req is NULL once the client went away. */
struct echo_pending {
  echo_app_t *app;
  sk_http_req_t *req;
  uv_timer_t timer;
  int status;
  int injected;
  char *body; /* malloc'd */
  size_t len;
  char *content_type;
  echo_pending_t *prev, *next;
};

/* ---- small helpers ---- */

static uint64_t rng_next(echo_app_t *a) {
  uint64_t x = a->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  a->rng = x;
  return x;
}

static double rng_unit(echo_app_t *a) { return (double)(rng_next(a) >> 11) / 9007199254740992.0; }

/* Value of key in a query string ("a=1&b=2"), copied into out. */
static int query_get(const char *q, const char *key, char *out, size_t outlen) {
  size_t kl = strlen(key);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    if (len > kl && !strncmp(q, key, kl) && q[kl] == '=') {
      size_t vl = len - kl - 1;
      if (vl >= outlen) return SK_E2BIG;
      memcpy(out, q + kl + 1, vl);
      out[vl] = 0;
      return 0;
    }
    q = amp ? amp + 1 : NULL;
  }
  return SK_ENOTFOUND;
}

/* A JSON string of s; bytes that are not valid UTF-8 become '?'. */
static json_t *jstr(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *c = sk_xmalloc(n + 1);
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
  c[n] = 0;
  j = json_string(c);
  free(c);
  return j ? j : json_string("");
}

static const char *protocol_name(int version) {
  return version == 20 ? "HTTP/2" : version == 10 ? "HTTP/1.0" : "HTTP/1.1";
}

static json_t *headers_json(const sk_http_req_t *req) {
  json_t *h = json_object();
  for (size_t i = 0; i < req->headers.n; i++) {
    char key[256];
    const char *name = req->headers.v[i].name;
    size_t k = 0;
    for (; name[k] && k < sizeof key - 1; k++) key[k] = (char)tolower((unsigned char)name[k]);
    key[k] = 0;
    const char *val = req->headers.v[i].value ? req->headers.v[i].value : "";
    json_t *old = json_object_get(h, key);
    if (old) {
      /* repeated header: joined as one list, as RFC 9110 5.3 allows */
      char *joined = sk_pool_printf(req->pool, "%s, %s", json_string_value(old), val);
      json_object_set_new(h, key, jstr(joined));
    } else {
      json_object_set_new(h, key, jstr(val));
    }
  }
  return h;
}

static void record(echo_app_t *a, const sk_http_req_t *req, int status) {
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  const char *vals[1] = {code};
  sk_counter_t *c = NULL;
  if (a->requests && sk_counter_with(a->requests, vals, &c) == 0) sk_counter_inc(c);
  if (a->duration && req) sk_histogram_observe(a->duration, (double)(uv_hrtime() - req->start_ns) / 1e9);
}

static void send_now(echo_app_t *a, sk_http_req_t *req, int status, int injected,
                     const char *content_type, const void *body, size_t len) {
  sk_http_header_t h[3];
  size_t n = 0;
  h[n++] = (sk_http_header_t){"x-skiff-version", a->cfg->version ? a->cfg->version : ""};
  if (content_type) h[n++] = (sk_http_header_t){"content-type", content_type};
  if (injected) h[n++] = (sk_http_header_t){"x-skiff-echo", "injected-error"};
  record(a, req, status);
  sk_http_respond(req, status, h, n, body, len);
}

/* ---- delayed responses ---- */

static void pending_closed(uv_handle_t *h) {
  echo_pending_t *p = h->data;
  free(p->body);
  free(p->content_type);
  free(p);
}

static void pending_unlink(echo_pending_t *p) {
  echo_app_t *a = p->app;
  if (p->prev)
    p->prev->next = p->next;
  else if (a->pending == p)
    a->pending = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void pending_fire(uv_timer_t *t) {
  echo_pending_t *p = t->data;
  echo_app_t *a = p->app;
  pending_unlink(p);
  if (p->req) {
    sk_http_req_on_abort(p->req, NULL, NULL);
    send_now(a, p->req, p->status, p->injected, p->content_type, p->body, p->len);
    p->req = NULL;
  }
  uv_close((uv_handle_t *)&p->timer, pending_closed);
}

static void pending_abort(sk_http_req_t *req, void *ud) {
  echo_pending_t *p = ud;
  p->req = NULL;
  pending_unlink(p);
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, pending_closed);
}

static void respond(echo_app_t *a, sk_http_req_t *req, uint64_t delay_ms, int status, int injected,
                    const char *content_type, const void *body, size_t len) {
  if (delay_ms == 0) {
    send_now(a, req, status, injected, content_type, body, len);
    return;
  }
  echo_pending_t *p = sk_xcalloc(1, sizeof *p);
  p->app = a;
  p->req = req;
  p->status = status;
  p->injected = injected;
  p->body = sk_xmalloc(len ? len : 1);
  if (len) memcpy(p->body, body, len);
  p->len = len;
  p->content_type = content_type ? sk_xstrdup(content_type) : NULL;
  uv_timer_init(a->loop, &p->timer);
  p->timer.data = p;
  p->next = a->pending;
  if (a->pending) a->pending->prev = p;
  a->pending = p;
  sk_http_req_on_abort(req, pending_abort, p);
  uv_timer_start(&p->timer, pending_fire, delay_ms, 0);
}

/* ---- routes ---- */

static char *root_json(echo_app_t *a, sk_http_req_t *req) {
  const echo_config_t *c = a->cfg;
  json_t *o = json_object();
  json_object_set_new(o, "name", jstr(c->name ? c->name : "skiff-echo"));
  json_object_set_new(o, "version", jstr(c->version ? c->version : ""));
  json_object_set_new(o, "message", jstr(c->message ? c->message : ""));
  json_object_set_new(o, "hostname", jstr(a->hostname));
  json_object_set_new(o, "method", jstr(req->method));
  json_object_set_new(o, "path", jstr(req->path));
  if (req->query) json_object_set_new(o, "query", jstr(req->query));
  json_object_set_new(o, "protocol", json_string(protocol_name(req->version)));
  json_object_set_new(o, "headers", headers_json(req));
  json_object_set_new(o, "peer", jstr(req->peer_addr ? req->peer_addr : ""));
  if (req->trace_id) json_object_set_new(o, "trace_id", json_string(req->trace_id));
  char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
  json_decref(o);
  return s;
}

static void handle(sk_http_req_t *req, void *ud) {
  echo_app_t *a = ud;
  const echo_config_t *c = a->cfg;
  uint64_t delay = c->latency_ms;
  double error_rate = c->error_rate;
  char v[64], msg[128];
  int is_get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");

  if (c->latency_jitter_ms) delay += (uint64_t)(rng_unit(a) * (double)(c->latency_jitter_ms + 1));
  if (c->query_overrides && req->query) {
    uint64_t ms;
    if (query_get(req->query, "latency", v, sizeof v) == 0) {
      if (sk_config_parse_duration(v, &ms, msg, sizeof msg) < 0 || ms > ECHO_MAX_DELAY_MS) {
        send_now(a, req, 400, 0, "text/plain; charset=utf-8", "bad latency\n", 12);
        return;
      }
      delay = ms;
    }
    if (query_get(req->query, "error_rate", v, sizeof v) == 0) {
      char *end = NULL;
      double r = strtod(v, &end);
      if (!end || *end || !(r >= 0 && r <= 1)) {
        send_now(a, req, 400, 0, "text/plain; charset=utf-8", "bad error_rate\n", 15);
        return;
      }
      error_rate = r;
    }
  }
  if (delay > ECHO_MAX_DELAY_MS) delay = ECHO_MAX_DELAY_MS;

  if (error_rate > 0 && rng_unit(a) < error_rate) {
    sk_counter_inc(a->injected);
    char *body = sk_pool_printf(req->pool, "injected error (%s %s)\n", c->name ? c->name : "skiff-echo",
                                c->version ? c->version : "");
    respond(a, req, delay, c->error_status, 1, "text/plain; charset=utf-8", body, strlen(body));
    return;
  }

  const char *path = req->path;
  if (!strcmp(path, "/") && is_get) {
    char *s = root_json(a, req);
    respond(a, req, delay, 200, 0, "application/json", s, s ? strlen(s) : 0);
    free(s);
  } else if (!strcmp(path, "/echo")) {
    const char *ct = sk_http_headers_get(&req->headers, "content-type");
    respond(a, req, delay, 200, 0, ct ? ct : "application/octet-stream", req->body, req->body_len);
  } else if (!strcmp(path, "/headers") && is_get) {
    json_t *h = headers_json(req);
    char *s = json_dumps(h, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(h);
    respond(a, req, delay, 200, 0, "application/json", s, s ? strlen(s) : 0);
    free(s);
  } else if (!strncmp(path, "/status/", 8) && is_get) {
    char *end = NULL;
    long code = strtol(path + 8, &end, 10);
    if (end == path + 8 || *end || code < 200 || code > 599) {
      respond(a, req, delay, 400, 0, "text/plain; charset=utf-8", "status must be 200..599\n", 24);
      return;
    }
    char *body = sk_pool_printf(req->pool, "%ld %s\n", code, sk_http_status_text((int)code));
    respond(a, req, delay, (int)code, 0, "text/plain; charset=utf-8", body,
            code == 204 || code == 304 ? 0 : strlen(body));
  } else if (!strncmp(path, "/delay/", 7) && is_get) {
    uint64_t ms;
    if (sk_config_parse_duration(path + 7, &ms, msg, sizeof msg) < 0 || ms > ECHO_MAX_DELAY_MS) {
      respond(a, req, 0, 400, 0, "text/plain; charset=utf-8", "delay must be a duration up to 60s\n", 35);
      return;
    }
    char *body = sk_pool_printf(req->pool, "{\"delay_ms\":%llu}\n", (unsigned long long)ms);
    respond(a, req, ms + delay, 200, 0, "application/json", body, strlen(body));
  } else if (!strcmp(path, "/") || !strcmp(path, "/headers") || !strncmp(path, "/status/", 8) ||
             !strncmp(path, "/delay/", 7)) {
    send_now(a, req, 405, 0, "text/plain; charset=utf-8", "method not allowed\n", 19);
  } else {
    char *body = sk_pool_printf(req->pool, "not found: %.200s\n", path);
    send_now(a, req, 404, 0, "text/plain; charset=utf-8", body, strlen(body));
  }
}

/* ---- lifecycle ---- */

int echo_app_new(uv_loop_t *loop, const echo_config_t *cfg, sk_metrics_t *reg, sk_logger_t *log,
                 echo_app_t **out) {
  echo_app_t *a = sk_xcalloc(1, sizeof *a);
  int rc;
  *out = NULL;
  a->loop = loop;
  a->cfg = cfg;
  a->log = log;
  a->reg = reg;
  a->rng = (uv_hrtime() ^ ((uint64_t)getpid() << 32)) | 1;
  if (gethostname(a->hostname, sizeof a->hostname - 1) < 0) snprintf(a->hostname, sizeof a->hostname, "unknown");
  if (reg) {
    static const char *const code_label[] = {"code"};
    if ((rc = sk_metrics_counter_family(reg, "skiff_echo_requests_total", "Requests answered, by status code.",
                                        code_label, 1, &a->requests)) < 0)
      goto fail;
    if ((rc = sk_metrics_histogram(reg, "skiff_echo_request_duration_seconds",
                                   "Time from request start to response, injected latency included.", NULL,
                                   0, &a->duration)) < 0)
      goto fail;
    if ((rc = sk_metrics_counter(reg, "skiff_echo_injected_errors_total",
                                 "Requests answered with the injected error status.", &a->injected)) < 0)
      goto fail;
  }
  sk_http_server_opts_t so = {
      .host = cfg->listen.host[0] ? cfg->listen.host : "127.0.0.1",
      .port = cfg->listen.port,
      .max_body_bytes = cfg->max_body ? (size_t)cfg->max_body : 1024 * 1024,
      .server_name = "skiff-echo",
  };
  if ((rc = sk_http_server_new(loop, &so, handle, a, &a->srv)) < 0) goto fail;
  *out = a;
  return 0;
fail:
  free(a);
  return rc;
}

int echo_app_port(const echo_app_t *a) { return a && a->srv ? sk_http_server_port(a->srv) : -1; }

void echo_app_set_config(echo_app_t *a, const echo_config_t *cfg) { a->cfg = cfg; }

static void drained(sk_http_server_t *s, void *ud) {
  echo_app_t *a = ud;
  void (*cb)(void *) = a->drain_cb;
  a->drain_cb = NULL;
  if (cb) cb(a->drain_ud);
}

void echo_app_drain(echo_app_t *a, void (*cb)(void *ud), void *ud) {
  a->drain_cb = cb;
  a->drain_ud = ud;
  /* delayed responses go out now rather than holding the drain */
  while (a->pending) {
    echo_pending_t *p = a->pending;
    uv_timer_stop(&p->timer);
    pending_fire(&p->timer);
  }
  sk_http_server_drain(a->srv, drained, a);
}

void echo_app_free(echo_app_t *a) {
  if (!a) return;
  while (a->pending) {
    echo_pending_t *p = a->pending;
    pending_unlink(p);
    if (p->req) sk_http_req_on_abort(p->req, NULL, NULL);
    p->req = NULL;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, pending_closed);
  }
  sk_http_server_free(a->srv);
  free(a);
}
