/* A blocking client of skiff-control's API for the reconciler thread and
 * the CLI: a private libuv loop and one keep-alive connection pool, turned
 * until the requests in flight are answered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gitops.h"
#include "skiff/err.h"
#include "skiff/json.h"

struct gx_ctl {
  uv_loop_t loop;
  sk_http_client_t *cl;
  sk_tls_ctx_t *tls;
  char host[256];
  int port;
  char *token;
};

typedef struct pending {
  gx_ctl_resp_t *r;
  size_t *left;
} pending_t;

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  pending_t *p = ud;
  gx_ctl_resp_t *r = p->r;
  (*p->left)--;
  r->err = err;
  if (err >= 0 && resp) {
    r->status = resp->status;
    const char *res = sk_http_headers_get(&resp->headers, "x-skiff-result");
    snprintf(r->result, sizeof r->result, "%s", res ? res : "");
    sk_buf_append(&r->body, resp->body, resp->body_len);
  } else if (err >= 0) {
    r->err = SK_EIO;
  }
  free(p);
}

/* control's address: http[s]://host[:port] through the runtime's URL
 * parser; a bare host:port is taken as http://, port 7400 when none. */
static int parse_server(const char *url, char *host, size_t hostlen, int *port, int *https) {
  char buf[1100];
  if (!strstr(url, "://")) {
    snprintf(buf, sizeof buf, "http://%s", url);
    url = buf;
  }
  sk_http_url_t u;
  int rc = sk_http_url_parse(url, &u);
  if (rc < 0) return rc;
  if (strlen(u.host) >= hostlen) return SK_EINVAL;
  snprintf(host, hostlen, "%s", u.host);
  *port = u.port ? u.port : 7400;
  *https = u.tls;
  return 0;
}

int gx_ctl_new(const char *server, const char *token, const char *ca_file, const char *cert_file,
               const char *key_file, gx_ctl_t **out, char *err, size_t errlen) {
  *out = NULL;
  gx_ctl_t *c = sk_xcalloc(1, sizeof *c);
  int https = 0;
  int rc = parse_server(server ? server : "http://127.0.0.1:7400", c->host, sizeof c->host, &c->port, &https);
  if (rc < 0) {
    snprintf(err, errlen, "bad control address '%s'", server ? server : "");
    free(c);
    return rc;
  }
  if (https) {
    if (!ca_file || !*ca_file) {
      snprintf(err, errlen, "control is https: a CA bundle to verify it is needed (control_ca / $SKIFF_CA)");
      free(c);
      return SK_ECONFIG;
    }
    if ((cert_file && *cert_file) != (key_file && *key_file)) {
      snprintf(err, errlen, "a client certificate for control needs both its certificate and its key");
      free(c);
      return SK_ECONFIG;
    }
    /* built from the identity's files, this context is one of those
     * sk_ident reloads after a renewal (sk_tls_ctx_reload_files) */
    sk_tls_opts_t to = {.is_server = 0, .ca_file = ca_file, .verify = SK_TLS_VERIFY_REQUIRE, .alpn = "http/1.1",
                        .cert_file = cert_file && *cert_file ? cert_file : NULL,
                        .key_file = key_file && *key_file ? key_file : NULL};
    if ((rc = sk_tls_ctx_new(&to, &c->tls, err, errlen)) < 0) {
      free(c);
      return rc;
    }
  }
  if (uv_loop_init(&c->loop) != 0) {
    sk_tls_ctx_unref(c->tls);
    free(c);
    return SK_ENOMEM;
  }
  sk_http_client_opts_t co = {.host = c->host, .port = c->port, .tls = c->tls, .sni = c->host,
                              .request_timeout_ms = 60000, .max_conns = 8};
  if ((rc = sk_http_client_new(&c->loop, &co, &c->cl)) < 0) {
    snprintf(err, errlen, "cannot create the HTTP client: %s", sk_strerror(rc));
    uv_loop_close(&c->loop);
    sk_tls_ctx_unref(c->tls);
    free(c);
    return rc;
  }
  c->token = token ? sk_xstrdup(token) : NULL;
  *out = c;
  return 0;
}

void gx_ctl_set_token(gx_ctl_t *c, const char *token) {
  if (c->token) {
    memset(c->token, 0, strlen(c->token));
    free(c->token);
  }
  c->token = token ? sk_xstrdup(token) : NULL;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void gx_ctl_free(gx_ctl_t *c) {
  if (!c) return;
  sk_http_client_free(c->cl);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&c->loop) != 0) {
    uv_walk(&c->loop, close_walk, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
  }
  gx_ctl_set_token(c, NULL);
  sk_tls_ctx_unref(c->tls);
  free(c);
}

static int submit(gx_ctl_t *c, const char *method, const char *path, const char *ctype, const void *body,
                  size_t len, gx_ctl_resp_t *r, size_t *left) {
  memset(r, 0, sizeof *r);
  sk_buf_init(&r->body);
  sk_http_header_t h[3];
  size_t n = 0;
  char auth[1100];
  h[n++] = (sk_http_header_t){"accept", "application/json"};
  if (ctype) h[n++] = (sk_http_header_t){"content-type", ctype};
  if (c->token && *c->token) {
    snprintf(auth, sizeof auth, "Bearer %s", c->token);
    h[n++] = (sk_http_header_t){"authorization", auth};
  }
  pending_t *p = sk_xmalloc(sizeof *p);
  p->r = r;
  p->left = left;
  (*left)++;
  int rc = sk_http_client_request(c->cl, method, path, h, n, body, len, on_resp, p);
  if (rc < 0) {
    (*left)--;
    free(p);
    r->err = rc;
  }
  return rc;
}

int gx_ctl_call(gx_ctl_t *c, const char *method, const char *path, const char *ctype, const void *body,
                size_t len, gx_ctl_resp_t *resp) {
  size_t left = 0;
  int rc = submit(c, method, path, ctype, body, len, resp, &left);
  if (rc < 0) return rc;
  while (left && uv_run(&c->loop, UV_RUN_ONCE)) {
  }
  return resp->err < 0 ? resp->err : 0;
}

int gx_ctl_batch(gx_ctl_t *c, gx_ctl_req_t *reqs, size_t n) {
  size_t left = 0;
  for (size_t i = 0; i < n; i++)
    (void)submit(c, reqs[i].method, reqs[i].path, reqs[i].ctype, reqs[i].body, reqs[i].body ? strlen(reqs[i].body) : 0,
                 &reqs[i].resp, &left);
  while (left && uv_run(&c->loop, UV_RUN_ONCE)) {
  }
  for (size_t i = 0; i < n; i++)
    if (reqs[i].resp.err < 0) return reqs[i].resp.err;
  return 0;
}

void gx_ctl_resp_done(gx_ctl_resp_t *r) {
  if (r) sk_buf_done(&r->body);
}

void gx_ctl_batch_done(gx_ctl_req_t *reqs, size_t n) {
  for (size_t i = 0; reqs && i < n; i++) {
    free(reqs[i].path);
    free(reqs[i].body);
    gx_ctl_resp_done(&reqs[i].resp);
  }
}

void gx_ctl_message(const gx_ctl_resp_t *r, char *out, size_t len) {
  if (r->err < 0) {
    snprintf(out, len, "%s", sk_strerror(r->err));
    return;
  }
  json_t *st = r->body.len ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
  const char *msg = sk_json_get_str(st, "message", NULL);
  if (msg) snprintf(out, len, "%s", msg);
  else snprintf(out, len, "HTTP %d: %.*s", r->status, (int)(r->body.len > 300 ? 300 : r->body.len),
                r->body.data ? r->body.data : "");
  json_decref(st);
}

int gx_ctl_get_json(gx_ctl_t *c, const char *path, json_t **out, char *err, size_t errlen) {
  *out = NULL;
  gx_ctl_resp_t r;
  int rc = gx_ctl_call(c, "GET", path, NULL, NULL, 0, &r);
  if (rc < 0) {
    snprintf(err, errlen, "control unreachable: %s", sk_strerror(rc));
    goto out;
  }
  if (r.status != 200) {
    char m[512];
    gx_ctl_message(&r, m, sizeof m);
    snprintf(err, errlen, "GET %s: %s", path, m);
    rc = r.status == 404 ? SK_ENOTFOUND : r.status == 401 || r.status == 403 ? SK_EUNAUTH : SK_EHTTP;
    goto out;
  }
  json_error_t je;
  *out = json_loadb(r.body.data, r.body.len, 0, &je);
  if (!*out) {
    snprintf(err, errlen, "GET %s: bad JSON: %s", path, je.text);
    rc = SK_EPARSE;
  }
out:
  gx_ctl_resp_done(&r);
  return rc;
}
