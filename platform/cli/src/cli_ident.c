/* cli_ident.c - `skiff up` hands each daemon with `identity:` a one-use
 * join token minted through skiff-control's API (POST /api/v1/ca/join-tokens
 * with the admin token, over TLS verified with control's bundle). The daemon
 * then obtains and renews its certificate itself (skiff/ident.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <uv.h>

#include "cli_int.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/json.h"
#include "skiff/mem.h"
#include "skiff/tls.h"

typedef struct mint {
  int done, err, status;
  char *body;
} mint_t;

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  mint_t *m = ud;
  m->done = 1;
  m->err = err;
  if (err < 0 || !resp) return;
  m->status = resp->status;
  m->body = sk_xstrndup((const char *)resp->body, resp->body_len);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* The first line of path (a token), at most outlen-1 bytes. */
static int read_line(const char *path, char *out, size_t outlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return sk_err_from_errno(errno);
  size_t n = fread(out, 1, outlen - 1, f);
  fclose(f);
  out[n] = 0;
  out[strcspn(out, "\r\n")] = 0;
  return out[0] ? 0 : SK_EINVAL;
}

int cli_mint_join_token(const cli_config_t *cfg, const char *name, const char *out_path, char *err,
                        size_t errlen) {
  const cli_ident_cfg_t *ic = &cfg->ident;
  char host[256], token[512], id[600], auth[600];
  int port = 0, rc;
  mint_t m = {0};
  sk_tls_ctx_t *tls = NULL;
  sk_http_client_t *cl = NULL;
  json_t *req = NULL, *ans = NULL;
  char *js = NULL;
  uv_loop_t loop;
  int loop_ok = 0;
  const char *u = ic->control;
  int https = !strncasecmp(u, "https://", 8);
  if (!https && strncasecmp(u, "http://", 7) != 0) {
    snprintf(err, errlen, "identity.control '%s' is not an http(s) URL", u);
    return SK_EINVAL;
  }
  u += https ? 8 : 7;
  size_t hl = strcspn(u, "/");
  char hp[300];
  sk_cfg_addr_t a;
  char m2[200];
  if (hl == 0 || hl >= sizeof hp) {
    snprintf(err, errlen, "identity.control '%s': no host:port", ic->control);
    return SK_EINVAL;
  }
  memcpy(hp, u, hl);
  hp[hl] = 0;
  if (sk_config_parse_addr(hp, &a, m2, sizeof m2) < 0 || a.port <= 0) {
    snprintf(err, errlen, "identity.control '%s': %s", ic->control, m2);
    return SK_EINVAL;
  }
  snprintf(host, sizeof host, "%s", a.host[0] ? a.host : "127.0.0.1");
  port = a.port;
  if ((rc = read_line(ic->admin_token, token, sizeof token)) < 0) {
    snprintf(err, errlen, "admin token %s: %s", ic->admin_token, sk_strerror(rc));
    return rc;
  }
  if (https) {
    sk_tls_opts_t to = {.ca_file = ic->ca, .verify = SK_TLS_VERIFY_REQUIRE, .alpn = "http/1.1"};
    if ((rc = sk_tls_ctx_new(&to, &tls, err, errlen)) < 0) goto out;
  }
  /* NAME or KIND/NAME (checked by the config schema) */
  snprintf(id, sizeof id, "spiffe://%s/region/%s/%s%s", ic->trust_domain, ic->region,
           strchr(name, '/') ? "" : "daemon/", name);
  req = json_pack("{s:s,s:I,s:i}", "spiffeId", id, "ttl", (json_int_t)(ic->token_ttl_ms / 1000), "uses", 1);
  js = json_dumps(req, JSON_COMPACT);
  snprintf(auth, sizeof auth, "Bearer %s", token);
  if (uv_loop_init(&loop) != 0) {
    rc = SK_ENOMEM;
    goto out;
  }
  loop_ok = 1;
  sk_http_client_opts_t co = {.host = host, .port = port, .tls = tls, .max_conns = 1,
                              .connect_timeout_ms = 3000, .request_timeout_ms = 5000};
  if ((rc = sk_http_client_new(&loop, &co, &cl)) < 0) goto out;
  sk_http_header_t h[] = {{"content-type", "application/json"}, {"authorization", auth}};
  rc = sk_http_client_request(cl, "POST", "/api/v1/ca/join-tokens", h, 2, js, strlen(js), on_resp, &m);
  if (rc >= 0)
    while (!m.done && uv_run(&loop, UV_RUN_ONCE)) {
    }
  if (rc >= 0 && m.err < 0) rc = m.err;
  if (rc < 0) {
    snprintf(err, errlen, "POST %s/api/v1/ca/join-tokens: %s", ic->control, sk_strerror(rc));
    goto out;
  }
  char perr[128];
  const char *secret = NULL;
  if (sk_json_parse(m.body ? m.body : "", m.body ? strlen(m.body) : 0, 65536, 8, &ans, perr, sizeof perr) >= 0)
    secret = sk_json_get_str(ans, "token", NULL);
  if (m.status != 201 || !secret) {
    snprintf(err, errlen, "POST %s/api/v1/ca/join-tokens: HTTP %d: %s", ic->control, m.status,
             ans ? sk_json_get_str(ans, "message", "") : "no JSON answer");
    rc = m.status == 401 ? SK_EUNAUTH : m.status == 403 ? SK_EFORBID : SK_EPROTO;
    goto out;
  }
  char line[600];
  int n = snprintf(line, sizeof line, "%s\n", secret);
  rc = cli_write_atomic(out_path, line, (size_t)n);
  if (rc >= 0) rc = chmod(out_path, 0600) < 0 ? sk_err_from_errno(errno) : 0;
  if (rc < 0) snprintf(err, errlen, "cannot write %s: %s", out_path, sk_strerror(rc));
out:
  if (cl) sk_http_client_free(cl);
  if (loop_ok) {
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
      uv_walk(&loop, close_walk, NULL);
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
    }
  }
  sk_tls_ctx_unref(tls);
  json_decref(req);
  json_decref(ans);
  free(js);
  free(m.body);
  memset(token, 0, sizeof token);
  return rc;
}
