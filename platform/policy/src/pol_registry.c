/* A small client for the Docker Registry HTTP API v2 / OCI distribution API:
 * manifests (OCI and Docker, images and indexes), blobs, blob uploads and
 * manifest pushes, with the bearer-token challenge. Every call is blocking:
 * it runs its own event loop (the webhook calls it from a worker thread). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/tls.h"

#define REG_MAX_MANIFEST (4u * 1024 * 1024)
#define REG_MAX_TOKEN (64u * 1024)

static const char manifest_accept[] =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

struct pol_registry {
  pol_imgref_t ref;
  char host[256];
  int port;
  int tls;
  sk_tls_ctx_t *tls_ctx;
  uint64_t timeout_ms;
  char *username, *password;
  char *auth;          /* "Bearer x" / "Basic x" once a challenge was answered */
  int push;            /* ask tokens for pull,push */
  const pol_registry_opts_t *opts;
};

/* ---- small helpers ---- */

void pol_sha256_hex(const void *data, size_t len, char out[72]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
  memcpy(out, "sha256:", 7);
  for (int i = 0; i < 32; i++) snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static int is_hex_digest(const char *s, size_t n) {
  if (n != 71 || strncmp(s, "sha256:", 7)) return 0;
  for (size_t i = 7; i < n; i++)
    if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
  return 1;
}

int pol_is_digest(const char *s) { return s && is_hex_digest(s, strlen(s)); }

static int repo_char(int c) { return islower(c) || isdigit(c) || c == '.' || c == '_' || c == '-' || c == '/'; }

int pol_imgref_parse(const char *s, pol_imgref_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  size_t n = s ? strlen(s) : 0;
  if (!n || n > 1024) {
    snprintf(err, errlen, "image reference is empty or longer than 1024 characters");
    return SK_EINVAL;
  }
  const char *at = strchr(s, '@');
  size_t namelen = at ? (size_t)(at - s) : n;
  if (at) {
    if (!is_hex_digest(at + 1, strlen(at + 1))) {
      snprintf(err, errlen, "image %.200s: digest must be sha256:<64 lowercase hex digits>", s);
      return SK_EINVAL;
    }
    memcpy(out->digest, at + 1, 71);
  }
  /* registry: the first component when it has a '.' or ':' or is localhost */
  const char *slash = memchr(s, '/', namelen);
  const char *rest = s;
  if (slash) {
    size_t hl = (size_t)(slash - s);
    if ((memchr(s, '.', hl) || memchr(s, ':', hl) || (hl == 9 && !memcmp(s, "localhost", 9))) && hl < sizeof out->registry) {
      memcpy(out->registry, s, hl);
      rest = slash + 1;
    }
  }
  if (!out->registry[0]) strcpy(out->registry, "docker.io");
  size_t rl = namelen - (size_t)(rest - s);
  /* tag: after the last ':' that follows the last '/' */
  const char *lastslash = NULL;
  for (const char *p = rest; p < rest + rl; p++)
    if (*p == '/') lastslash = p;
  const char *colon = memchr(lastslash ? lastslash : rest, ':', rl - (size_t)((lastslash ? lastslash : rest) - rest));
  size_t repolen = colon ? (size_t)(colon - rest) : rl;
  if (colon) {
    size_t tl = rl - repolen - 1;
    if (!tl || tl > 128) {
      snprintf(err, errlen, "image %.200s: tag must be 1 to 128 characters", s);
      return SK_EINVAL;
    }
    for (size_t i = 0; i < tl; i++) {
      int c = (unsigned char)colon[1 + i];
      if (!isalnum(c) && c != '_' && c != '.' && c != '-') {
        snprintf(err, errlen, "image %.200s: invalid character in tag", s);
        return SK_EINVAL;
      }
    }
    memcpy(out->tag, colon + 1, tl);
  }
  int library = !strcmp(out->registry, "docker.io") && !memchr(rest, '/', repolen);
  if (!repolen || repolen + (library ? 8 : 0) >= sizeof out->repo) {
    snprintf(err, errlen, "image %.200s: repository name is empty or too long", s);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < repolen; i++) {
    if (!repo_char((unsigned char)rest[i])) {
      snprintf(err, errlen, "image %.200s: invalid character in repository name (lowercase letters, digits, . _ - /)", s);
      return SK_EINVAL;
    }
  }
  if (library) strcpy(out->repo, "library/");
  strncat(out->repo, rest, repolen);
  if (!out->tag[0] && !out->digest[0]) strcpy(out->tag, "latest");
  return 0;
}

/* ---- WWW-Authenticate ---- */

static void copy_param(char *dst, size_t dstlen, const char *v, size_t vl) {
  if (vl >= dstlen) vl = dstlen - 1;
  memcpy(dst, v, vl);
  dst[vl] = 0;
}

int pol_www_auth_parse(const char *h, size_t len, pol_www_auth_t *out) {
  memset(out, 0, sizeof *out);
  const char *p = h, *end = h + len;
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  const char *s = p;
  while (p < end && isalpha((unsigned char)*p)) p++;
  if (p == s || (size_t)(p - s) >= sizeof out->scheme) return SK_EPARSE;
  copy_param(out->scheme, sizeof out->scheme, s, (size_t)(p - s));
  if (strcasecmp(out->scheme, "Bearer") && strcasecmp(out->scheme, "Basic")) return SK_EPARSE;
  while (p < end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
    if (p >= end) break;
    const char *k = p;
    while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '-')) p++;
    size_t kl = (size_t)(p - k);
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (!kl || p >= end || *p != '=') return SK_EPARSE;
    p++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    char val[1024];
    size_t vl = 0;
    if (p < end && *p == '"') {
      p++;
      while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) p++;
        if (vl + 1 >= sizeof val) return SK_ELIMIT;
        val[vl++] = *p++;
      }
      if (p >= end) return SK_EPARSE; /* unterminated quote */
      p++;
    } else {
      while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
        if (vl + 1 >= sizeof val) return SK_ELIMIT;
        val[vl++] = *p++;
      }
    }
    if (kl == 5 && !strncasecmp(k, "realm", 5)) copy_param(out->realm, sizeof out->realm, val, vl);
    else if (kl == 7 && !strncasecmp(k, "service", 7)) copy_param(out->service, sizeof out->service, val, vl);
    else if (kl == 5 && !strncasecmp(k, "scope", 5)) copy_param(out->scope, sizeof out->scope, val, vl);
  }
  if (!strcasecmp(out->scheme, "Bearer") && !out->realm[0]) return SK_EPARSE;
  return 0;
}

/* ---- transport ---- */

static int is_loopback(const char *host) {
  return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "[::1]");
}

/* host:port split; "[v6]:port" too. */
static int split_hostport(const char *hp, char *host, size_t hostlen, int *port, int def_port) {
  const char *colon = NULL, *h = hp;
  size_t hl;
  if (*hp == '[') {
    const char *rb = strchr(hp, ']');
    if (!rb) return SK_EINVAL;
    h = hp + 1;
    hl = (size_t)(rb - h);
    colon = rb[1] == ':' ? rb + 1 : NULL;
  } else {
    colon = strrchr(hp, ':');
    hl = colon ? (size_t)(colon - hp) : strlen(hp);
  }
  if (!hl || hl >= hostlen) return SK_EINVAL;
  memcpy(host, h, hl);
  host[hl] = 0;
  *port = def_port;
  if (colon) {
    char *e;
    long v = strtol(colon + 1, &e, 10);
    if (e == colon + 1 || *e || v <= 0 || v > 65535) return SK_EINVAL;
    *port = (int)v;
  }
  return 0;
}

static int allowed_insecure(const pol_registry_opts_t *o, const char *hostport, const char *host) {
  if (!o || !is_loopback(host)) return 0;
  for (size_t i = 0; i < o->ninsecure; i++)
    if (!strcmp(o->insecure[i], hostport)) return 1;
  return 0;
}

typedef struct call_state {
  int done, err;
  sk_http_resp_t *resp;
} call_state_t;

static void call_cb(int err, sk_http_resp_t *resp, void *ud) {
  call_state_t *st = ud;
  st->done = 1;
  st->err = err;
  if (err < 0 || !resp) return;
  st->resp = sk_http_resp_dup(resp);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* One request on a private loop. The name is resolved here, blocking: the
 * client would resolve on libuv's thread pool, whose threads may all be
 * busy running verifications that wait for it. */
static int http_once(const char *host, int port, sk_tls_ctx_t *tls, uint64_t timeout_ms, size_t max_body,
                     const char *method, const char *path, const sk_http_header_t *hdrs, size_t nhdrs,
                     const void *body, size_t len, sk_http_resp_t **out) {
  *out = NULL;
  char ip[INET6_ADDRSTRLEN + 1], hosthdr[300];
  unsigned char bin[16];
  if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
    snprintf(ip, sizeof ip, "%s", host);
  } else {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return SK_EAGAIN; /* the name does not resolve */
    const void *a = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                                : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    const char *ok = inet_ntop(res->ai_family, a, ip, sizeof ip);
    freeaddrinfo(res);
    if (!ok) return SK_EAGAIN;
  }
  int v6 = strchr(host, ':') != NULL;
  if (port == (tls ? 443 : 80)) snprintf(hosthdr, sizeof hosthdr, v6 ? "[%s]" : "%s", host);
  else snprintf(hosthdr, sizeof hosthdr, v6 ? "[%s]:%d" : "%s:%d", host, port);
  sk_http_header_t h[10];
  size_t nh = 0;
  h[nh++] = (sk_http_header_t){"host", hosthdr};
  for (size_t i = 0; i < nhdrs && nh < 10; i++) h[nh++] = hdrs[i];
  hdrs = h;
  nhdrs = nh;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return SK_ENOMEM;
  sk_http_client_t *cl = NULL;
  call_state_t st = {0};
  sk_http_client_opts_t o = {.host = ip,
                             .port = port,
                             .tls = tls,
                             .sni = tls ? host : NULL,
                             .max_conns = 1,
                             .max_body_bytes = max_body,
                             .connect_timeout_ms = timeout_ms,
                             .request_timeout_ms = timeout_ms};
  int rc = sk_http_client_new(&loop, &o, &cl);
  if (rc >= 0) rc = sk_http_client_request(cl, method, path, hdrs, nhdrs, body, len, call_cb, &st);
  if (rc >= 0) {
    while (!st.done && uv_run(&loop, UV_RUN_ONCE)) {
    }
    rc = st.done ? st.err : SK_EIO;
  }
  sk_http_client_free(cl);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (rc >= 0) *out = st.resp;
  else sk_http_resp_free(st.resp);
  return rc;
}

static void b64enc(sk_buf_t *out, const unsigned char *s, size_t n) {
  size_t need = 4 * ((n + 2) / 3) + 1;
  sk_buf_reserve(out, need);
  int w = EVP_EncodeBlock((unsigned char *)out->data + out->len, s, (int)n);
  if (w > 0) out->len += (size_t)w;
}

static void url_escape(sk_buf_t *b, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') sk_buf_append(b, s, 1);
    else sk_buf_printf(b, "%%%02X", c);
  }
}

/* Answers a challenge: a bearer token from the realm, or basic credentials. */
static int authenticate(pol_registry_t *r, const char *challenge, char *err, size_t errlen) {
  pol_www_auth_t wa;
  if (!challenge || pol_www_auth_parse(challenge, strlen(challenge), &wa) < 0) {
    snprintf(err, errlen, "registry %s asks for authentication with an unsupported challenge '%.200s'",
             r->ref.registry, challenge ? challenge : "");
    return SK_EUNAUTH;
  }
  sk_buf_t basic;
  sk_buf_init(&basic);
  if (r->username) {
    sk_buf_t up;
    sk_buf_init(&up);
    sk_buf_printf(&up, "%s:%s", r->username, r->password ? r->password : "");
    sk_buf_puts(&basic, "Basic ");
    b64enc(&basic, (const unsigned char *)up.data, up.len);
    sk_buf_done(&up);
  }
  int rc = 0;
  if (!strcasecmp(wa.scheme, "Basic")) {
    if (!r->username) {
      snprintf(err, errlen, "registry %s wants a username and password (none configured)", r->ref.registry);
      rc = SK_EUNAUTH;
      goto out;
    }
    free(r->auth);
    r->auth = sk_xstrdup(sk_buf_cstr(&basic));
    goto out;
  }
  /* Bearer: GET realm?service=..&scope=repository:<repo>:pull[,push] */
  int rtls;
  const char *p;
  if (!strncasecmp(wa.realm, "https://", 8)) rtls = 1, p = wa.realm + 8;
  else if (!strncasecmp(wa.realm, "http://", 7)) rtls = 0, p = wa.realm + 7;
  else {
    snprintf(err, errlen, "registry %s: token realm '%.200s' is not an http(s) URL", r->ref.registry, wa.realm);
    rc = SK_EUNAUTH;
    goto out;
  }
  char hostport[300], host[256];
  const char *path = strchr(p, '/');
  size_t hpl = path ? (size_t)(path - p) : strlen(p);
  int port;
  if (hpl >= sizeof hostport) {
    rc = SK_EINVAL;
    snprintf(err, errlen, "registry %s: token realm host too long", r->ref.registry);
    goto out;
  }
  memcpy(hostport, p, hpl);
  hostport[hpl] = 0;
  if (split_hostport(hostport, host, sizeof host, &port, rtls ? 443 : 80) < 0) {
    snprintf(err, errlen, "registry %s: bad token realm '%.200s'", r->ref.registry, wa.realm);
    rc = SK_EINVAL;
    goto out;
  }
  if (!rtls && !allowed_insecure(r->opts, hostport, host)) {
    snprintf(err, errlen, "registry %s: token realm %.200s is plain http (only allowed for loopback registries listed as insecure)",
             r->ref.registry, wa.realm);
    rc = SK_EUNAUTH;
    goto out;
  }
  sk_buf_t q;
  sk_buf_init(&q);
  sk_buf_puts(&q, path ? path : "/");
  sk_buf_puts(&q, strchr(path ? path : "/", '?') ? "&" : "?");
  if (wa.service[0]) {
    sk_buf_puts(&q, "service=");
    url_escape(&q, wa.service);
    sk_buf_puts(&q, "&");
  }
  char scope[600];
  if (wa.scope[0] && !r->push) snprintf(scope, sizeof scope, "%s", wa.scope);
  else snprintf(scope, sizeof scope, "repository:%s:%s", r->ref.repo, r->push ? "pull,push" : "pull");
  sk_buf_puts(&q, "scope=");
  url_escape(&q, scope);
  sk_http_header_t h[1] = {{"authorization", basic.len ? sk_buf_cstr(&basic) : NULL}};
  sk_http_resp_t *resp = NULL;
  rc = http_once(host, port, rtls ? r->tls_ctx : NULL, r->timeout_ms, REG_MAX_TOKEN, "GET", sk_buf_cstr(&q), h,
                 basic.len ? 1 : 0, NULL, 0, &resp);
  sk_buf_done(&q);
  if (rc < 0) {
    snprintf(err, errlen, "registry %s: token service %.200s: %s", r->ref.registry, wa.realm,
             rc == SK_EAGAIN ? "the host name does not resolve" : sk_strerror(rc));
    if (rc == SK_EAGAIN) rc = SK_EIO;
    goto out;
  }
  if (resp->status != 200) {
    snprintf(err, errlen, "registry %s: token service %.200s answered %d", r->ref.registry, wa.realm, resp->status);
    rc = SK_EUNAUTH;
    sk_http_resp_free(resp);
    goto out;
  }
  json_t *tj = NULL;
  char perr[128];
  const char *tok = NULL;
  if (sk_json_parse((const char *)resp->body, resp->body_len, REG_MAX_TOKEN, 8, &tj, perr, sizeof perr) >= 0) {
    tok = json_string_value(json_object_get(tj, "token"));
    if (!tok) tok = json_string_value(json_object_get(tj, "access_token"));
  }
  if (!tok || !*tok || strpbrk(tok, "\r\n")) {
    snprintf(err, errlen, "registry %s: token service %.200s gave no token", r->ref.registry, wa.realm);
    rc = SK_EPROTO;
  } else {
    free(r->auth);
    size_t tl = strlen(tok);
    r->auth = sk_xmalloc(tl + 8);
    memcpy(r->auth, "Bearer ", 7);
    memcpy(r->auth + 7, tok, tl + 1);
  }
  json_decref(tj);
  sk_http_resp_free(resp);
out:
  sk_buf_done(&basic);
  return rc;
}

/* A request to the registry with the current credentials; answers one
 * authentication challenge and retries. */
static int reg_call(pol_registry_t *r, const char *method, const char *path, const sk_http_header_t *extra,
                    size_t nextra, const void *body, size_t len, size_t max_body, sk_http_resp_t **out, char *err,
                    size_t errlen) {
  sk_http_header_t h[8];
  for (int attempt = 0; attempt < 2; attempt++) {
    size_t n = 0;
    for (size_t i = 0; i < nextra && n < 6; i++) h[n++] = extra[i];
    if (r->auth) h[n++] = (sk_http_header_t){"authorization", r->auth};
    int rc = http_once(r->host, r->port, r->tls ? r->tls_ctx : NULL, r->timeout_ms, max_body, method, path, h, n,
                       body, len, out);
    if (rc < 0) {
      snprintf(err, errlen, "registry %s unreachable (%s %s://%s:%d): %s", r->ref.registry, method,
               r->tls ? "https" : "http", r->host, r->port,
               rc == SK_EAGAIN ? "the host name does not resolve" : sk_strerror(rc));
      return rc == SK_EAGAIN ? SK_EIO : rc;
    }
    if ((*out)->status != 401 || attempt == 1) return 0;
    const char *ch = sk_http_headers_get(&(*out)->headers, "www-authenticate");
    char chbuf[2048];
    snprintf(chbuf, sizeof chbuf, "%s", ch ? ch : "");
    sk_http_resp_free(*out);
    *out = NULL;
    if ((rc = authenticate(r, ch ? chbuf : NULL, err, errlen)) < 0) return rc;
  }
  return 0;
}

int pol_registry_open(const pol_registry_opts_t *o, const pol_imgref_t *ref, int push, pol_registry_t **out, char *err,
                      size_t errlen) {
  *out = NULL;
  pol_registry_t *r = sk_xcalloc(1, sizeof *r);
  r->ref = *ref;
  r->opts = o;
  r->push = push;
  r->timeout_ms = o && o->timeout_ms ? o->timeout_ms : 10000;
  const char *hp = !strcmp(ref->registry, "docker.io") ? "registry-1.docker.io" : ref->registry;
  int rc = split_hostport(hp, r->host, sizeof r->host, &r->port, 443);
  if (rc < 0) {
    snprintf(err, errlen, "image registry '%.200s' is not host[:port]", ref->registry);
    free(r);
    return rc;
  }
  r->tls = !allowed_insecure(o, ref->registry, r->host);
  if (r->tls && !strchr(ref->registry, ':')) r->port = 443;
  if (o && o->username) r->username = sk_xstrdup(o->username);
  if (o && o->password) r->password = sk_xstrdup(o->password);
  if (r->tls) {
    if (o && o->tls) {
      r->tls_ctx = sk_tls_ctx_ref(o->tls);
    } else {
      sk_tls_opts_t to = {.is_server = 0,
                          .ca_file = o && o->ca_file && *o->ca_file ? o->ca_file : NULL,
                          .verify = SK_TLS_VERIFY_REQUIRE,
                          .alpn = "http/1.1"};
      if ((rc = sk_tls_ctx_new(&to, &r->tls_ctx, err, errlen)) < 0) {
        pol_registry_close(r);
        return rc;
      }
    }
  }
  *out = r;
  return 0;
}

void pol_registry_close(pol_registry_t *r) {
  if (!r) return;
  sk_tls_ctx_unref(r->tls_ctx);
  free(r->username);
  if (r->password) memset(r->password, 0, strlen(r->password));
  free(r->password);
  free(r->auth);
  free(r);
}

static const char *status_reason(int status) {
  switch (status) {
  case 401: return "unauthorized";
  case 403: return "access denied";
  case 404: return "not found";
  case 429: return "rate limited";
  default: return status >= 500 ? "registry error" : "unexpected answer";
  }
}

int pol_registry_manifest(pol_registry_t *r, const char *reference, json_t **manifest, char digest[72], char *err,
                          size_t errlen) {
  *manifest = NULL;
  char path[600];
  snprintf(path, sizeof path, "/v2/%s/manifests/%s", r->ref.repo, reference);
  static const sk_http_header_t h[] = {{"accept", manifest_accept}};
  sk_http_resp_t *resp = NULL;
  int rc = reg_call(r, "GET", path, h, 1, NULL, 0, REG_MAX_MANIFEST, &resp, err, errlen);
  if (rc < 0) return rc;
  if (resp->status == 404) {
    snprintf(err, errlen, "%s/%s:%s: manifest not found", r->ref.registry, r->ref.repo, reference);
    rc = SK_ENOTFOUND;
    goto out;
  }
  if (resp->status != 200) {
    snprintf(err, errlen, "%s/%s: manifest %s: registry answered %d (%s)", r->ref.registry, r->ref.repo, reference,
             resp->status, status_reason(resp->status));
    rc = resp->status == 401 || resp->status == 403 ? SK_EUNAUTH : SK_EIO;
    goto out;
  }
  pol_sha256_hex(resp->body, resp->body_len, digest);
  if (pol_is_digest(reference) && strcmp(reference, digest)) {
    snprintf(err, errlen, "%s/%s: manifest %s has digest %s (the registry sent other content)", r->ref.registry,
             r->ref.repo, reference, digest);
    rc = SK_EPROTO;
    goto out;
  }
  char perr[200];
  if ((rc = pol_manifest_parse((const char *)resp->body, resp->body_len, manifest, perr, sizeof perr)) < 0)
    snprintf(err, errlen, "%s/%s: manifest %s: %s", r->ref.registry, r->ref.repo, reference, perr);
out:
  sk_http_resp_free(resp);
  return rc;
}

int pol_manifest_parse(const char *body, size_t len, json_t **out, char *err, size_t errlen) {
  json_t *m = NULL;
  char perr[160];
  *out = NULL;
  int rc = sk_json_parse(body, len, REG_MAX_MANIFEST, 32, &m, perr, sizeof perr);
  if (rc < 0) {
    snprintf(err, errlen, "not JSON: %s", perr);
    return rc;
  }
  json_t *sv = json_object_get(m, "schemaVersion");
  if (!json_is_object(m) || !json_is_integer(sv) || json_integer_value(sv) != 2) {
    snprintf(err, errlen, "not an image manifest or index (schemaVersion 2)");
    json_decref(m);
    return SK_EPARSE;
  }
  json_t *layers = json_object_get(m, "layers"), *mans = json_object_get(m, "manifests");
  json_t *list = layers ? layers : mans;
  if (list && !json_is_array(list)) {
    snprintf(err, errlen, "%s is not a list", layers ? "layers" : "manifests");
    json_decref(m);
    return SK_EPARSE;
  }
  size_t i;
  json_t *d;
  json_array_foreach(list, i, d) {
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *ann = json_object_get(d, "annotations");
    if (!json_is_object(d) || !pol_is_digest(dg) || (ann && !json_is_object(ann))) {
      snprintf(err, errlen, "%s[%zu]: digest must be sha256:<hex>, annotations a map", layers ? "layers" : "manifests", i);
      json_decref(m);
      return SK_EPARSE;
    }
  }
  *out = m;
  return 0;
}

int pol_registry_blob(pol_registry_t *r, const char *digest, size_t max, sk_buf_t *out, char *err, size_t errlen) {
  char path[600];
  snprintf(path, sizeof path, "/v2/%s/blobs/%s", r->ref.repo, digest);
  sk_http_resp_t *resp = NULL;
  int rc = reg_call(r, "GET", path, NULL, 0, NULL, 0, max, &resp, err, errlen);
  if (rc < 0) return rc;
  if (resp->status != 200) {
    snprintf(err, errlen, "%s/%s: blob %s: registry answered %d (%s)", r->ref.registry, r->ref.repo, digest,
             resp->status, status_reason(resp->status));
    rc = resp->status == 404 ? SK_ENOTFOUND : SK_EIO;
    goto out;
  }
  char got[72];
  pol_sha256_hex(resp->body, resp->body_len, got);
  if (strcmp(got, digest)) {
    snprintf(err, errlen, "%s/%s: blob %s has digest %s", r->ref.registry, r->ref.repo, digest, got);
    rc = SK_EPROTO;
    goto out;
  }
  sk_buf_append(out, resp->body, resp->body_len);
out:
  sk_http_resp_free(resp);
  return rc;
}

/* The path part of an upload Location (absolute URL or path). */
static const char *location_path(const char *loc) {
  if (!strncasecmp(loc, "http://", 7) || !strncasecmp(loc, "https://", 8)) {
    const char *p = strchr(loc + 8, '/');
    return p ? p : "/";
  }
  return loc;
}

int pol_registry_push_blob(pol_registry_t *r, const void *data, size_t len, char digest[72], char *err,
                           size_t errlen) {
  pol_sha256_hex(data, len, digest);
  char path[700];
  sk_http_resp_t *resp = NULL;
  snprintf(path, sizeof path, "/v2/%s/blobs/%s", r->ref.repo, digest);
  int rc = reg_call(r, "HEAD", path, NULL, 0, NULL, 0, 1024, &resp, err, errlen);
  if (rc < 0) return rc;
  int exists = resp->status == 200;
  sk_http_resp_free(resp);
  resp = NULL;
  if (exists) return 0;
  snprintf(path, sizeof path, "/v2/%s/blobs/uploads/", r->ref.repo);
  static const sk_http_header_t h0[] = {{"content-length", "0"}};
  if ((rc = reg_call(r, "POST", path, h0, 0, "", 0, 64 * 1024, &resp, err, errlen)) < 0) return rc;
  const char *loc = sk_http_headers_get(&resp->headers, "location");
  if (resp->status != 202 || !loc) {
    snprintf(err, errlen, "%s/%s: starting a blob upload: registry answered %d (%s)", r->ref.registry, r->ref.repo,
             resp->status, status_reason(resp->status));
    sk_http_resp_free(resp);
    return SK_EIO;
  }
  sk_buf_t u;
  sk_buf_init(&u);
  sk_buf_puts(&u, location_path(loc));
  sk_buf_puts(&u, strchr(loc, '?') ? "&digest=" : "?digest=");
  url_escape(&u, digest);
  sk_http_resp_free(resp);
  resp = NULL;
  static const sk_http_header_t h1[] = {{"content-type", "application/octet-stream"}};
  rc = reg_call(r, "PUT", sk_buf_cstr(&u), h1, 1, data, len, 64 * 1024, &resp, err, errlen);
  sk_buf_done(&u);
  if (rc < 0) return rc;
  if (resp->status != 201) {
    snprintf(err, errlen, "%s/%s: uploading blob %s: registry answered %d (%s)", r->ref.registry, r->ref.repo, digest,
             resp->status, status_reason(resp->status));
    rc = SK_EIO;
  }
  sk_http_resp_free(resp);
  return rc;
}

int pol_registry_put_manifest(pol_registry_t *r, const char *tag, const char *media_type, const void *data, size_t len,
                              char *err, size_t errlen) {
  char path[600];
  snprintf(path, sizeof path, "/v2/%s/manifests/%s", r->ref.repo, tag);
  sk_http_header_t h[] = {{"content-type", media_type}};
  sk_http_resp_t *resp = NULL;
  int rc = reg_call(r, "PUT", path, h, 1, data, len, 64 * 1024, &resp, err, errlen);
  if (rc < 0) return rc;
  if (resp->status != 201 && resp->status != 200) {
    snprintf(err, errlen, "%s/%s: pushing manifest %s: registry answered %d (%s): %.200s", r->ref.registry, r->ref.repo,
             tag, resp->status, status_reason(resp->status), resp->body ? (const char *)resp->body : "");
    rc = SK_EIO;
  }
  sk_http_resp_free(resp);
  return rc;
}
