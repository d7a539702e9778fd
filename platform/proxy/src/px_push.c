/* The proxy's side of config push (see px_push.h): the control section,
 * the stream (sk_http_client_stream), line framing and decoding, ACK/NACK,
 * reconnects with backoff and the snapshot cache.
 *
 * Runs on the daemon's main loop; the daemon's apply callback builds and
 * swaps the config (px_proxy_set_config hands it to the workers). Bytes
 * of the stream are framed into lines in a buffer bounded by
 * PX_PUSH_MAX_LINE: a longer line ends the stream (and is reported), it is
 * never buffered without limit. ACKs go as separate POSTs on the same
 * client; an ACK that fails is not retried: the next stream replays the
 * current snapshot and it is acknowledged then. */
#include "px_push.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/json.h"

#define PX_PUSH_MAX_TOKEN 4096

struct px_push {
  uv_loop_t *loop;
  px_push_opts_t o;
  sk_logger_t *log;
  px_push_apply_fn apply;
  void *ud;
  sk_tls_ctx_t *tls;
  sk_http_client_t *cl;
  sk_http_stream_t *st;   /* open stream or NULL */
  uv_timer_t retry;
  unsigned attempts;      /* failures since the last good snapshot */
  int connected;          /* 200 head received on the current stream */
  int64_t version;        /* last applied */
  sk_buf_t line;
  int stopping;
  char auth[PX_PUSH_MAX_TOKEN + 32];
  uint64_t rng;
  sk_gauge_t *g_connected, *g_version;
  sk_counter_t *c_acks, *c_nacks, *c_reconnects, *c_ack_errors;
};

/* ---------------- options ---------------- */

static void perr(sk_config_errors_t *errs, const char *file, const json_t *where, const char *field, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
static void perr(sk_config_errors_t *errs, const char *file, const json_t *where, const char *field, const char *fmt,
                 ...) {
  char msg[600], path[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(path, sizeof path, "control%s%s", *field ? "." : "", field);
  int line = 0, col = 0;
  sk_cfg_json_t j = {.where = (json_t *)where};
  if (where) sk_cfg_json_where(&j, path, &line, &col);
  if (errs) sk_config_errors_add(errs, file && *file ? file : "<config>", line, col, "%s: %s", path, msg);
}

static int opt_str(const json_t *v, const char *key, char **out, const char *file, const json_t *where,
                   sk_config_errors_t *errs) {
  json_t *x = json_object_get(v, key);
  if (!x || json_is_null(x)) return 0;
  if (!json_is_string(x) || json_string_length(x) > 4096) {
    perr(errs, file, where, key, "a string (up to 4096 bytes) is expected");
    return -1;
  }
  *out = sk_xstrdup(json_string_value(x));
  return 0;
}

static int opt_dur(const json_t *v, const char *key, const char *field, uint64_t *out, const char *file,
                   const json_t *where, sk_config_errors_t *errs) {
  json_t *x = json_object_get(v, key);
  if (!x || json_is_null(x)) return 0;
  char msg[200];
  if (json_is_integer(x) && json_integer_value(x) > 0) {
    *out = (uint64_t)json_integer_value(x) * 1000;
    return 0;
  }
  if (!json_is_string(x) || sk_config_parse_duration(json_string_value(x), out, msg, sizeof msg) < 0 || !*out) {
    perr(errs, file, where, field, "a positive duration (\"200ms\", \"30s\") is expected");
    return -1;
  }
  return 0;
}

int px_push_opts_parse(const json_t *v, const json_t *where, const char *file, px_push_opts_t *o,
                       sk_config_errors_t *errs) {
  memset(o, 0, sizeof *o);
  o->backoff_initial_ms = 200;
  o->backoff_max_ms = 30000;
  o->idle_timeout_ms = 90000;
  int bad = 0;
  if (!json_is_object(v)) {
    perr(errs, file, where, "", "a mapping is expected (url, node, token_file, ...)");
    return SK_ECONFIG;
  }
  static const char *const known[] = {"url", "node", "token_file", "ca", "cert", "key", "http2", "backoff",
                                      "idle_timeout", "cache", NULL};
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)v, k, x) {
    int ok = 0;
    for (size_t i = 0; known[i]; i++) ok |= !strcmp(known[i], k);
    if (!ok) {
      perr(errs, file, where, k, "unknown key (url, node, token_file, ca, cert, key, http2, backoff, "
                                 "idle_timeout, cache)");
      bad = 1;
    }
  }
  bad |= opt_str(v, "url", &o->url, file, where, errs) < 0;
  bad |= opt_str(v, "node", &o->node, file, where, errs) < 0;
  bad |= opt_str(v, "token_file", &o->token_file, file, where, errs) < 0;
  bad |= opt_str(v, "ca", &o->ca, file, where, errs) < 0;
  bad |= opt_str(v, "cert", &o->cert, file, where, errs) < 0;
  bad |= opt_str(v, "key", &o->key, file, where, errs) < 0;
  bad |= opt_str(v, "cache", &o->cache, file, where, errs) < 0;
  bad |= opt_dur(v, "idle_timeout", "idle_timeout", &o->idle_timeout_ms, file, where, errs) < 0;
  json_t *h2 = json_object_get(v, "http2");
  if (h2 && !json_is_boolean(h2)) {
    perr(errs, file, where, "http2", "true or false is expected");
    bad = 1;
  }
  o->http2 = h2 && json_is_true(h2);
  json_t *bo = json_object_get(v, "backoff");
  if (bo && !json_is_object(bo)) {
    perr(errs, file, where, "backoff", "a mapping {initial, max} is expected");
    bad = 1;
  } else if (bo) {
    json_object_foreach(bo, k, x) {
      if (strcmp(k, "initial") && strcmp(k, "max")) {
        char f[80];
        snprintf(f, sizeof f, "backoff.%.40s", k);
        perr(errs, file, where, f, "unknown key (initial, max)");
        bad = 1;
      }
    }
    bad |= opt_dur(bo, "initial", "backoff.initial", &o->backoff_initial_ms, file, where, errs) < 0;
    bad |= opt_dur(bo, "max", "backoff.max", &o->backoff_max_ms, file, where, errs) < 0;
    if (o->backoff_max_ms < o->backoff_initial_ms) {
      perr(errs, file, where, "backoff.max", "must not be below backoff.initial");
      bad = 1;
    }
  }
  if (!o->url) {
    perr(errs, file, where, "url", "required (http://host:port or https://host:port)");
    bad = 1;
  } else {
    const char *p = o->url;
    if (!strncasecmp(p, "http://", 7)) p += 7;
    else if (!strncasecmp(p, "https://", 8)) {
      p += 8;
      o->tls = 1;
    } else {
      perr(errs, file, where, "url", "must start with http:// or https://");
      bad = 1;
      p = NULL;
    }
    if (p) {
      const char *hs = p, *he;
      if (*p == '[') {
        hs = p + 1;
        he = strchr(p, ']');
        p = he ? he + 1 : p + strlen(p);
      } else {
        while (*p && *p != ':' && *p != '/') p++;
        he = p;
      }
      o->port = o->tls ? 443 : 80;
      char *end = NULL;
      if (*p == ':') {
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) o->port = -1;
        else o->port = (int)port;
        p = end ? end : p + 1;
      }
      if (!he || he <= hs || o->port < 0 || (*p && strcmp(p, "/"))) {
        perr(errs, file, where, "url", "expected scheme://host[:port] without a path, got '%s'", o->url);
        bad = 1;
      } else {
        o->host = sk_xmalloc((size_t)(he - hs) + 1);
        memcpy(o->host, hs, (size_t)(he - hs));
        o->host[he - hs] = 0;
      }
    }
  }
  if (!o->node) {
    char hn[256] = "";
    if (gethostname(hn, sizeof hn - 1) < 0 || !*hn) snprintf(hn, sizeof hn, "proxy");
    o->node = sk_xstrdup(hn);
  }
  {
    size_t n = strlen(o->node);
    int ok = n >= 1 && n <= 128;
    for (size_t i = 0; ok && i < n; i++) {
      char c = o->node[i];
      ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
    }
    if (!ok) {
      perr(errs, file, where, "node", "1 to 128 characters of [A-Za-z0-9._-] expected");
      bad = 1;
    }
  }
  if ((o->cert && !o->key) || (!o->cert && o->key)) {
    perr(errs, file, where, o->cert ? "key" : "cert", "cert and key go together");
    bad = 1;
  }
  if (!o->tls && (o->ca || o->cert)) {
    perr(errs, file, where, "url", "ca/cert/key need an https:// url");
    bad = 1;
  }
  if (bad) {
    px_push_opts_done(o);
    return SK_ECONFIG;
  }
  return 0;
}

void px_push_opts_done(px_push_opts_t *o) {
  if (!o) return;
  free(o->url);
  free(o->host);
  free(o->node);
  free(o->token_file);
  free(o->ca);
  free(o->cert);
  free(o->key);
  free(o->cache);
  memset(o, 0, sizeof *o);
}

static void opts_copy(px_push_opts_t *d, const px_push_opts_t *s) {
  *d = *s;
#define DUP(f) d->f = s->f ? sk_xstrdup(s->f) : NULL
  DUP(url);
  DUP(host);
  DUP(node);
  DUP(token_file);
  DUP(ca);
  DUP(cert);
  DUP(key);
  DUP(cache);
#undef DUP
}

/* ---------------- decoding ---------------- */

int px_push_decode(const char *line, size_t len, px_push_msg_t *m, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  if (len > PX_PUSH_MAX_LINE) {
    snprintf(err, errlen, "line of %zu bytes; the limit is %u", len, PX_PUSH_MAX_LINE);
    return SK_ELIMIT;
  }
  json_t *v = NULL;
  char perr_[200];
  if (sk_json_parse(line, len, PX_PUSH_MAX_LINE, 32, &v, perr_, sizeof perr_) < 0) {
    snprintf(err, errlen, "snapshot stream: %s", perr_);
    return SK_EPARSE;
  }
  int rc = SK_EINVAL;
  if (!json_is_object(v)) {
    snprintf(err, errlen, "snapshot stream: a JSON object per line is expected");
    goto out;
  }
  const char *type = json_string_value(json_object_get(v, "type"));
  json_t *ver = json_object_get(v, "version");
  if (!type) {
    snprintf(err, errlen, "snapshot stream: type: a string is expected");
    goto out;
  }
  if (!json_is_integer(ver) || json_integer_value(ver) < 0) {
    snprintf(err, errlen, "snapshot stream: version: a non-negative integer is expected");
    goto out;
  }
  m->version = (int64_t)json_integer_value(ver);
  if (!strcmp(type, "HEARTBEAT")) {
    m->type = PX_PUSH_HEARTBEAT;
    rc = 0;
    goto out;
  }
  if (strcmp(type, "SNAPSHOT")) {
    snprintf(err, errlen, "snapshot stream: type: unknown '%.40s' (SNAPSHOT, HEARTBEAT)", type);
    goto out;
  }
  json_t *cfg = json_object_get(v, "config");
  if (!json_is_object(cfg)) {
    snprintf(err, errlen, "snapshot stream: config: an object {clusters, routes} is expected");
    goto out;
  }
  const char *k;
  json_t *x;
  json_object_foreach(cfg, k, x) {
    if (strcmp(k, "clusters") && strcmp(k, "routes")) {
      snprintf(err, errlen, "snapshot config: unknown key '%.40s' (a snapshot carries clusters and routes)", k);
      goto out;
    }
    if (!json_is_array(x)) {
      snprintf(err, errlen, "snapshot config: %s: a list is expected", k);
      goto out;
    }
  }
  m->type = PX_PUSH_SNAPSHOT;
  m->config = json_incref(cfg);
  rc = 0;
out:
  json_decref(v);
  return rc;
}

/* ---------------- cache ---------------- */

int px_push_cache_load(const char *path, json_t **config, int64_t *version, char *err, size_t errlen) {
  *config = NULL;
  *version = 0;
  if (!path || !*path) return SK_ENOTFOUND;
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return SK_ENOTFOUND;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return SK_EIO;
  }
  sk_buf_t b;
  sk_buf_init(&b);
  char tmp[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (b.len + n > PX_PUSH_MAX_LINE) {
      rc = SK_ELIMIT;
      break;
    }
    sk_buf_append(&b, tmp, n);
  }
  fclose(f);
  if (rc < 0) {
    snprintf(err, errlen, "%s: larger than %u bytes", path, PX_PUSH_MAX_LINE);
    sk_buf_done(&b);
    return rc;
  }
  px_push_msg_t m;
  char e2[300];
  rc = px_push_decode(b.data ? b.data : "", b.len, &m, e2, sizeof e2);
  sk_buf_done(&b);
  if (rc == 0 && m.type != PX_PUSH_SNAPSHOT) rc = SK_EINVAL, snprintf(e2, sizeof e2, "not a snapshot");
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", path, e2);
    return rc;
  }
  *config = m.config;
  *version = m.version;
  return 0;
}

static int cache_store(const char *path, const json_t *config, int64_t version, char *err, size_t errlen) {
  json_t *o = json_pack("{s:s, s:I, s:O}", "type", "SNAPSHOT", "version", (json_int_t)version, "config", config);
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(o, &b);
  sk_buf_puts(&b, "\n");
  json_decref(o);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int rc = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = SK_EIO;
    goto out;
  }
  size_t off = 0;
  while (off < b.len) {
    ssize_t w = write(fd, b.data + off, b.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = SK_EIO;
      break;
    }
    off += (size_t)w;
  }
  if (rc == 0 && fsync(fd) < 0) rc = SK_EIO;
  close(fd);
  if (rc == 0 && rename(tmp, path) < 0) rc = SK_EIO;
out:
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    unlink(tmp);
  }
  sk_buf_done(&b);
  return rc;
}

/* ---------------- the stream ---------------- */

static void schedule_retry(px_push_t *p);
static void stream_open(px_push_t *p);

static void set_connected(px_push_t *p, int on) {
  p->connected = on;
  sk_gauge_set(p->g_connected, on);
}

typedef struct ack_ctx {
  px_push_t *p;
  int64_t version;
} ack_ctx_t;

static void ack_done(int err, sk_http_resp_t *resp, void *ud) {
  ack_ctx_t *a = ud;
  if ((err < 0 || !resp || resp->status != 200) && a->p && a->p->log && !a->p->stopping) {
    char vs[24], st[16];
    snprintf(vs, sizeof vs, "%lld", (long long)a->version);
    snprintf(st, sizeof st, "%d", resp ? resp->status : 0);
    sk_log_kv(a->p->log, SK_LOG_WARN, "control did not take the acknowledgement", "version", vs, "status", st,
              "error", err < 0 ? sk_strerror(err) : "", NULL);
    sk_counter_inc(a->p->c_ack_errors);
  }
  free(a);
}

static void send_ack(px_push_t *p, int64_t version, const char *error) {
  json_t *o = json_pack("{s:I, s:o}", "version", (json_int_t)version, "error",
                        error ? json_string(error) : json_null());
  if (!o) o = json_pack("{s:I, s:s}", "version", (json_int_t)version, "error", "invalid UTF-8 in the error");
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(o, &b);
  json_decref(o);
  char path[256];
  snprintf(path, sizeof path, "/api/v1/proxies/%s/ack", p->o.node);
  sk_http_header_t h[2] = {{"content-type", "application/json"}, {"authorization", p->auth}};
  if (!p->cl) {
    sk_buf_done(&b);
    return;
  }
  ack_ctx_t *a = sk_xcalloc(1, sizeof *a);
  a->p = p;
  a->version = version;
  if (sk_http_client_request(p->cl, "POST", path, h, p->auth[0] ? 2 : 1, b.data, b.len, ack_done, a) < 0) free(a);
  sk_buf_done(&b);
}

static void on_snapshot(px_push_t *p, px_push_msg_t *m) {
  char err[2048] = "";
  char vs[24];
  snprintf(vs, sizeof vs, "%lld", (long long)m->version);
  if (m->version == p->version && p->version) { /* a replay after a reconnect: already running it */
    send_ack(p, m->version, NULL);
    p->attempts = 0;
    return;
  }
  int rc = p->apply(m->config, m->version, err, sizeof err, p->ud);
  if (rc < 0) {
    sk_counter_inc(p->c_nacks);
    if (p->log)
      sk_log_kv(p->log, SK_LOG_ERROR, "config snapshot from control refused; keeping the running one", "version",
                vs, "error", err, NULL);
    send_ack(p, m->version, err[0] ? err : sk_strerror(rc));
    return;
  }
  p->version = m->version;
  p->attempts = 0;
  sk_gauge_set(p->g_version, (double)m->version);
  sk_counter_inc(p->c_acks);
  if (p->log) sk_log_kv(p->log, SK_LOG_INFO, "config snapshot from control applied", "version", vs, NULL);
  send_ack(p, m->version, NULL);
  if (p->o.cache && *p->o.cache) {
    char e2[4400];
    if (cache_store(p->o.cache, m->config, m->version, e2, sizeof e2) < 0 && p->log)
      sk_log_kv(p->log, SK_LOG_WARN, "cannot write the snapshot cache", "error", e2, NULL);
  }
}

static void on_head(sk_http_stream_t *st, const sk_http_resp_t *head, void *ud) {
  px_push_t *p = ud;
  if (head->status != 200) {
    if (p->log) {
      char s[16];
      snprintf(s, sizeof s, "%d", head->status);
      sk_log_kv(p->log, SK_LOG_WARN, "control refused the config stream", "status", s, "node", p->o.node, NULL);
    }
    return; /* the body (an error document) is dropped; on_end reconnects */
  }
  set_connected(p, 1);
  sk_buf_reset(&p->line);
}

/* Returns 0 to go on, -1 when the stream was ended here. */
static int on_line(px_push_t *p, const char *d, size_t n) {
  px_push_msg_t m;
  char err[300];
  if (n == 0) return 0;
  if (px_push_decode(d, n, &m, err, sizeof err) < 0) {
    if (p->log) sk_log_kv(p->log, SK_LOG_ERROR, "bad line on the config stream; reconnecting", "error", err, NULL);
    sk_http_stream_cancel(p->st);
    p->st = NULL;
    set_connected(p, 0);
    schedule_retry(p);
    return -1;
  }
  if (m.type == PX_PUSH_SNAPSHOT) on_snapshot(p, &m);
  json_decref(m.config);
  return 0;
}

static void on_data(sk_http_stream_t *st, const uint8_t *d, size_t n, void *ud) {
  px_push_t *p = ud;
  if (!p->connected) return; /* an error body */
  while (n) {
    const uint8_t *nl = memchr(d, '\n', n);
    size_t take = nl ? (size_t)(nl - d) : n;
    if (p->line.len + take > PX_PUSH_MAX_LINE) {
      if (p->log)
        sk_log_kv(p->log, SK_LOG_ERROR, "config stream line too long; reconnecting", "limit_bytes", "16777216",
                  NULL);
      sk_http_stream_cancel(p->st);
      p->st = NULL;
      set_connected(p, 0);
      schedule_retry(p);
      return;
    }
    if (!nl) {
      sk_buf_append(&p->line, d, n);
      return;
    }
    int rc;
    if (p->line.len) {
      sk_buf_append(&p->line, d, take);
      rc = on_line(p, p->line.data, p->line.len);
      sk_buf_reset(&p->line);
    } else {
      rc = on_line(p, (const char *)d, take);
    }
    if (rc < 0) return;
    d += take + 1;
    n -= take + 1;
  }
}

static void on_end(sk_http_stream_t *st, int err, void *ud) {
  px_push_t *p = ud;
  p->st = NULL;
  int was = p->connected;
  set_connected(p, 0);
  if (p->stopping) return;
  if (p->log)
    sk_log_kv(p->log, was ? SK_LOG_WARN : SK_LOG_INFO, "config stream to control ended; serving the last good config",
              "error", err < 0 ? sk_strerror(err) : "closed by control", NULL);
  schedule_retry(p);
}

static const sk_http_stream_cbs_t stream_cbs = {on_head, on_data, on_end};

static void read_token(px_push_t *p) {
  p->auth[0] = 0;
  if (!p->o.token_file || !*p->o.token_file) return;
  FILE *f = fopen(p->o.token_file, "r");
  if (!f) {
    if (p->log) sk_log_kv(p->log, SK_LOG_WARN, "cannot read control.token_file", "path", p->o.token_file, NULL);
    return;
  }
  char tok[PX_PUSH_MAX_TOKEN + 1];
  size_t n = fread(tok, 1, sizeof tok - 1, f);
  fclose(f);
  tok[n] = 0;
  while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ')) tok[--n] = 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f) return; /* not a token */
  if (n) snprintf(p->auth, sizeof p->auth, "Bearer %s", tok);
}

/* The client (and for https its TLS context: the CA bundle may appear
 * only once control has started, so a failure here is retried). */
static int client_make(px_push_t *p) {
  int rc;
  if (p->cl) return 0;
  if (p->o.tls && !p->tls) {
    sk_tls_opts_t to = {.is_server = 0, .cert_file = p->o.cert, .key_file = p->o.key, .ca_file = p->o.ca,
                        .alpn = p->o.http2 ? "h2" : "http/1.1"};
    char err[300];
    if ((rc = sk_tls_ctx_new(&to, &p->tls, err, sizeof err)) < 0) {
      if (p->log) sk_log_kv(p->log, SK_LOG_ERROR, "control TLS setup failed; will retry", "error", err, NULL);
      return rc;
    }
  }
  sk_http_client_opts_t co = {.host = p->o.host, .port = p->o.port, .tls = p->tls,
                              .version = p->o.http2 ? 20 : 11, .max_conns = 4, .max_body_bytes = 64 * 1024,
                              .request_timeout_ms = 10000, .connect_timeout_ms = 5000,
                              .stream_idle_timeout_ms = p->o.idle_timeout_ms};
  return sk_http_client_new(p->loop, &co, &p->cl);
}

static void stream_open(px_push_t *p) {
  if (p->stopping || p->st) return;
  if (client_make(p) < 0) {
    schedule_retry(p);
    return;
  }
  read_token(p);
  char path[300];
  snprintf(path, sizeof path, "/api/v1/proxyconfig?watch=true&node=%s", p->o.node);
  sk_http_header_t h[2] = {{"accept", "application/x-ndjson"}, {"authorization", p->auth}};
  sk_buf_reset(&p->line);
  sk_http_stream_t *st = NULL;
  p->st = (sk_http_stream_t *)1; /* on_end may run inside the call (connect refused at once) */
  int rc = sk_http_client_stream(p->cl, "GET", path, h, p->auth[0] ? 2 : 1, NULL, 0, &stream_cbs, p, &st);
  if (p->st == (sk_http_stream_t *)1) p->st = rc < 0 ? NULL : st;
  if (rc < 0) schedule_retry(p);
}

static void retry_cb(uv_timer_t *t) {
  px_push_t *p = t->data;
  sk_counter_inc(p->c_reconnects);
  stream_open(p);
}

static uint64_t rnd(px_push_t *p) { /* xorshift64*: jitter only */
  p->rng ^= p->rng >> 12;
  p->rng ^= p->rng << 25;
  p->rng ^= p->rng >> 27;
  return p->rng * 2685821657736338717ull;
}

static void schedule_retry(px_push_t *p) {
  if (p->stopping) return;
  uint64_t d = p->o.backoff_initial_ms;
  for (unsigned i = 0; i < p->attempts && d < p->o.backoff_max_ms; i++) d *= 2;
  if (d > p->o.backoff_max_ms) d = p->o.backoff_max_ms;
  if (p->attempts < 64) p->attempts++;
  /* full jitter over [d/2, d]: proxies that lost control together do not return together */
  uint64_t wait = d / 2 + (d > 1 ? rnd(p) % (d / 2 + 1) : 0);
  uv_timer_start(&p->retry, retry_cb, wait, 0);
}

/* ---------------- lifecycle ---------------- */

int px_push_new(uv_loop_t *loop, const px_push_opts_t *o, sk_metrics_t *metrics, sk_logger_t *log,
                px_push_apply_fn apply, void *ud, px_push_t **out) {
  if (!loop || !o || !o->host || !apply || !out) return SK_EINVAL;
  px_push_t *p = sk_xcalloc(1, sizeof *p);
  int rc = 0;
  p->loop = loop;
  opts_copy(&p->o, o);
  p->log = log;
  p->apply = apply;
  p->ud = ud;
  p->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)p ^ ((uint64_t)getpid() << 32);
  if (!p->rng) p->rng = 1;
  sk_buf_init(&p->line);
  uv_timer_init(loop, &p->retry);
  p->retry.data = p;
  if (!o->tls && (rc = client_make(p)) < 0) goto fail;
  if (metrics) {
    sk_metrics_gauge(metrics, "skiff_proxy_control_connected", "1 while the config stream to control is open.",
                     &p->g_connected);
    sk_metrics_gauge(metrics, "skiff_proxy_control_version", "Version of the last applied control snapshot.",
                     &p->g_version);
    sk_metrics_counter(metrics, "skiff_proxy_control_acks_total", "Control snapshots applied (ACK).", &p->c_acks);
    sk_metrics_counter(metrics, "skiff_proxy_control_nacks_total", "Control snapshots refused (NACK).",
                       &p->c_nacks);
    sk_metrics_counter(metrics, "skiff_proxy_control_reconnects_total", "Config stream reconnect attempts.",
                       &p->c_reconnects);
    sk_metrics_counter(metrics, "skiff_proxy_control_ack_errors_total", "ACK/NACK posts control did not take.",
                       &p->c_ack_errors);
  }
  *out = p;
  return 0;
fail:
  px_push_free(p);
  return rc;
}

void px_push_start(px_push_t *p) {
  if (!p) return;
  uv_timer_stop(&p->retry);
  stream_open(p);
}

int64_t px_push_version(const px_push_t *p) { return p ? p->version : 0; }
void px_push_set_applied(px_push_t *p, int64_t version) {
  if (p) p->version = version;
}
int px_push_connected(const px_push_t *p) { return p ? p->connected : 0; }

static void push_closed(uv_handle_t *h) {
  px_push_t *p = h->data;
  px_push_opts_done(&p->o);
  free(p);
}

void px_push_free(px_push_t *p) {
  if (!p) return;
  p->stopping = 1;
  if (p->st) sk_http_stream_cancel(p->st);
  p->st = NULL;
  sk_http_client_free(p->cl); /* pending ACKs complete with SK_ECANCELED (quietly: stopping) */
  sk_tls_ctx_unref(p->tls);
  sk_buf_done(&p->line);
  uv_timer_stop(&p->retry);
  uv_close((uv_handle_t *)&p->retry, push_closed);
}
