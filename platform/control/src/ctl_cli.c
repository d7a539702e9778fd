/* skiff apply / get / delete / diff / token: the CLI side of skiff-control's API.
 * The CLI's verb dispatch (platform/cli) calls ctl_cli_main. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "control.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/json.h"
#include "skiff/tls.h"
#include "skiff/yaml.h"

#define CLI_MAX_FILE (16u << 20)
#define CLI_MAX_FILES 1024

typedef struct copts {
  const char *server;
  const char *token;
  const char *ca; /* https: the CA bundle (--ca, $SKIFF_CA, else CTL_CLI_LOCAL_CA when present) */
  const char *file;
  const char *output; /* yaml, json, wide, or NULL */
  const char *ns;
  const char *selector;
  const char *role; /* token create */
  const char *name; /* token create */
  const char *ttl;  /* token create */
  const char *args[4];
  size_t nargs;
} copts_t;

/* ---- HTTP with a private loop ---- */

typedef struct cresp {
  int done, err, status;
  char result[32];
  sk_buf_t body;
} cresp_t;

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  cresp_t *r = ud;
  r->done = 1;
  r->err = err;
  if (err < 0 || !resp) return;
  r->status = resp->status;
  const char *res = sk_http_headers_get(&resp->headers, "x-skiff-result");
  snprintf(r->result, sizeof r->result, "%s", res ? res : "");
  sk_buf_append(&r->body, resp->body, resp->body_len);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* What `skiff up` with examples/control.yaml leaves in the working directory:
 * control's trust bundle. When it exists the default server is https. */
#define CTL_CLI_LOCAL_CA ".skiff/control-state/ca/bundle.pem"

/* A server URL; no port means control's 7400. */
static int parse_server(const char *url, char *host, size_t hostlen, int *port, int *https) {
  char buf[512];
  if (!strstr(url, "://")) { /* "host:port" alone means plain http */
    if (snprintf(buf, sizeof buf, "http://%s", url) >= (int)sizeof buf) return SK_EINVAL;
    url = buf;
  }
  sk_http_url_t u;
  int rc = sk_http_url_parse(url, &u);
  if (rc < 0 || strlen(u.host) >= hostlen) return SK_EINVAL;
  memcpy(host, u.host, strlen(u.host) + 1);
  *port = u.port ? u.port : 7400;
  *https = u.tls;
  return 0;
}

static int call(const copts_t *o, const char *method, const char *path, const char *ctype, const void *body,
                size_t len, cresp_t *r) {
  memset(r, 0, sizeof *r);
  sk_buf_init(&r->body);
  char host[256];
  int port, https;
  int rc = parse_server(o->server, host, sizeof host, &port, &https);
  if (rc < 0) {
    fprintf(stderr, "skiff: bad server address '%s'\n", o->server);
    return rc;
  }
  sk_tls_ctx_t *tls = NULL;
  if (https) {
    char terr[512];
    sk_tls_opts_t to = {.ca_file = o->ca, .verify = SK_TLS_VERIFY_REQUIRE, .alpn = "http/1.1"};
    if (!o->ca) {
      fprintf(stderr, "skiff: %s is https: give the CA bundle with --ca FILE or $SKIFF_CA\n", o->server);
      return SK_EINVAL;
    }
    if ((rc = sk_tls_ctx_new(&to, &tls, terr, sizeof terr)) < 0) {
      fprintf(stderr, "skiff: --ca: %s\n", terr);
      return rc;
    }
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    sk_tls_ctx_unref(tls);
    return SK_ENOMEM;
  }
  sk_http_client_t *cl = NULL;
  sk_http_client_opts_t co = {.host = host, .port = port, .tls = tls, .request_timeout_ms = 30000};
  if ((rc = sk_http_client_new(&loop, &co, &cl)) >= 0) {
    sk_http_header_t h[3];
    size_t n = 0;
    char auth[600];
    h[n++] = (sk_http_header_t){"accept", "application/json"};
    if (ctype) h[n++] = (sk_http_header_t){"content-type", ctype};
    if (o->token && *o->token) {
      snprintf(auth, sizeof auth, "Bearer %s", o->token);
      h[n++] = (sk_http_header_t){"authorization", auth};
    }
    rc = sk_http_client_request(cl, method, path, h, n, body, len, on_resp, r);
    if (rc >= 0)
      while (!r->done && uv_run(&loop, UV_RUN_ONCE)) {
      }
    sk_http_client_free(cl);
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* the client's connections finish closing */
  if (uv_loop_close(&loop) != 0) {
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  sk_tls_ctx_unref(tls);
  if (rc >= 0 && r->err < 0) rc = r->err;
  if (rc < 0) fprintf(stderr, "skiff: cannot reach %s: %s\n", o->server, sk_strerror(rc));
  return rc;
}

/* The message of a Status body (or the raw body). */
static void print_failure(const char *what, const cresp_t *r) {
  json_t *st = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
  const char *msg = sk_json_get_str(st, "message", NULL);
  if (msg) fprintf(stderr, "Error from server (%s): %s: %s\n", sk_json_get_str(st, "reason", "?"), what, msg);
  else fprintf(stderr, "Error from server (%d): %s: %.*s\n", r->status, what, (int)r->body.len, r->body.data ? r->body.data : "");
  json_decref(st);
}

static void lower(char *dst, size_t len, const char *s) {
  size_t i = 0;
  for (; s[i] && i + 1 < len; i++) dst[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
  dst[i] = 0;
}

/* ---- documents from files ---- */

static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return sk_err_from_errno(errno);
  sk_buf_t b;
  sk_buf_init(&b);
  char tmp[65536];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (b.len + n > CLI_MAX_FILE) {
      fclose(f);
      sk_buf_done(&b);
      return SK_E2BIG;
    }
    sk_buf_append(&b, tmp, n);
  }
  fclose(f);
  *out = sk_buf_cstr(&b);
  *len = b.len;
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every document of FILE, or of the .yaml/.yml/.json files of DIR (name order), into
 * docs (a JSON array of [source, doc] pairs). */
static int load_docs(const char *path, json_t *docs) {
  struct stat sb;
  if (stat(path, &sb) < 0) {
    fprintf(stderr, "skiff: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char *files[CLI_MAX_FILES];
  size_t nf = 0;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    if (!d) {
      fprintf(stderr, "skiff: %s: %s\n", path, strerror(errno));
      return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) && nf < CLI_MAX_FILES) {
      const char *dot = strrchr(e->d_name, '.');
      if (e->d_name[0] == '.' || !dot || (strcmp(dot, ".yaml") && strcmp(dot, ".yml") && strcmp(dot, ".json")))
        continue;
      size_t l = strlen(path) + strlen(e->d_name) + 2;
      files[nf] = sk_xmalloc(l);
      snprintf(files[nf], l, "%s/%s", path, e->d_name);
      nf++;
    }
    closedir(d);
    qsort(files, nf, sizeof files[0], cmp_str);
  } else {
    files[nf++] = sk_xstrdup(path);
  }
  int rc = 0;
  for (size_t i = 0; i < nf; i++) {
    char *text = NULL;
    size_t len = 0;
    char err[512];
    json_t *all = NULL;
    if (rc == 0 && read_file(files[i], &text, &len) < 0) {
      fprintf(stderr, "skiff: %s: cannot read\n", files[i]);
      rc = -1;
    } else if (rc == 0 && sk_yaml_load_all(text, len, NULL, &all, err, sizeof err) < 0) {
      fprintf(stderr, "skiff: %s:%s\n", files[i], err);
      rc = -1;
    } else if (rc == 0) {
      size_t k;
      json_t *d;
      json_array_foreach(all, k, d) {
        if (json_is_null(d)) continue;
        if (!json_is_object(d)) {
          fprintf(stderr, "skiff: %s: document %zu is not a mapping\n", files[i], k + 1);
          rc = -1;
          break;
        }
        char *src = sk_xmalloc(strlen(files[i]) + 32);
        sprintf(src, "%s#%zu", files[i], k + 1);
        json_array_append_new(docs, json_pack("[s,O]", src, d));
        free(src);
      }
    }
    json_decref(all);
    free(text);
    free(files[i]);
  }
  return rc;
}

/* Kind, namespace and name of a document; prints the problem and returns
 * NULL when the CLI cannot address it. */
static const ctl_kind_t *addr_of(const copts_t *o, const char *src, json_t *doc, const char **ns, const char **name) {
  const char *av = sk_json_get_str(doc, "apiVersion", "");
  const char *kd = sk_json_get_str(doc, "kind", "");
  const ctl_kind_t *k = ctl_kind_for_doc(av, kd);
  if (!k) {
    fprintf(stderr, "skiff: %s: unknown apiVersion/kind %s/%s\n", src, av, kd);
    return NULL;
  }
  *name = sk_json_get_str(doc, "metadata.name", NULL);
  if (!*name) {
    fprintf(stderr, "skiff: %s: metadata.name is required\n", src);
    return NULL;
  }
  *ns = sk_json_get_str(doc, "metadata.namespace", NULL);
  if (!*ns) *ns = o->ns ? o->ns : "default";
  if (!k->namespaced) *ns = "";
  /* Fill the namespace in now, so ns points at the string that stays. */
  if (k->namespaced) {
    json_object_set_new(json_object_get(doc, "metadata"), "namespace", json_string(*ns));
    *ns = sk_json_get_str(doc, "metadata.namespace", "");
  }
  return k;
}

/* addr_of for one [source, document] pair of load_docs, with "kind/name"
 * (the kind in lower case) in label. */
static const ctl_kind_t *pair_addr(const copts_t *o, json_t *pair, json_t **doc, const char **ns,
                                   const char **name, char *label, size_t labellen) {
  const char *src = json_string_value(json_array_get(pair, 0));
  *doc = json_array_get(pair, 1);
  const ctl_kind_t *k = addr_of(o, src, *doc, ns, name);
  if (!k) return NULL;
  char lk[64];
  lower(lk, sizeof lk, k->kind);
  snprintf(label, labellen, "%s/%s", lk, *name);
  return k;
}

static char *obj_path(const ctl_kind_t *k, const char *ns, const char *name) {
  size_t l = strlen(k->plural) + strlen(ns) + (name ? strlen(name) : 0) + 16;
  char *p = sk_xmalloc(l);
  if (k->namespaced) snprintf(p, l, "/api/v1/%s/%s%s%s", k->plural, ns, name ? "/" : "", name ? name : "");
  else snprintf(p, l, "/api/v1/%s%s%s", k->plural, name ? "/" : "", name ? name : "");
  return p;
}

/* ---- apply ---- */

static int cmd_apply(const copts_t *o) {
  if (!o->file) {
    fprintf(stderr, "skiff apply: -f FILE|DIR is required\n");
    return 2;
  }
  json_t *docs = json_array();
  int bad = load_docs(o->file, docs) < 0;
  size_t i;
  json_t *pair;
  json_array_foreach(docs, i, pair) {
    if (bad) break;
    json_t *doc;
    const char *ns, *name;
    char what[400];
    const ctl_kind_t *k = pair_addr(o, pair, &doc, &ns, &name, what, sizeof what);
    if (!k) {
      bad = 1;
      continue;
    }
    json_object_del(json_object_get(doc, "metadata"), "resourceVersion");
    char *body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *coll = obj_path(k, ns, NULL);
    cresp_t r;
    int rc = call(o, "POST", coll, "application/json", body, strlen(body), &r);
    if (rc >= 0 && r.status == 409) {
      sk_buf_done(&r.body);
      char *one = obj_path(k, ns, name);
      rc = call(o, "PUT", one, "application/json", body, strlen(body), &r);
      free(one);
    }
    if (rc < 0) bad = 1;
    else if (r.status == 201) printf("%s created\n", what);
    else if (r.status == 200) printf("%s %s\n", what, r.result[0] ? r.result : "configured");
    else {
      print_failure(what, &r);
      bad = 1;
    }
    sk_buf_done(&r.body);
    free(coll);
    free(body);
    if (rc < 0) break;
  }
  json_decref(docs);
  return bad ? 1 : 0;
}

/* ---- get ---- */

static void age(const char *ts, char *out, size_t len) {
  struct tm tm = {0};
  if (!ts || !strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
    snprintf(out, len, "-");
    return;
  }
  long long s = (long long)(time(NULL) - timegm(&tm));
  if (s < 0) s = 0;
  if (s < 120) snprintf(out, len, "%llds", s);
  else if (s < 7200) snprintf(out, len, "%lldm", s / 60);
  else if (s < 172800) snprintf(out, len, "%lldh", s / 3600);
  else snprintf(out, len, "%lldd", s / 86400);
}

static void wide_cols(const json_t *it, char *out, size_t len) {
  out[0] = 0;
  sk_buf_t b;
  sk_buf_init(&b);
  const char *kd = sk_json_get_str(it, "kind", "");
  if (!strcmp(kd, "Service")) {
    json_t *eps = sk_json_get(it, "spec.endpoints");
    size_t i;
    json_t *e;
    json_array_foreach(eps, i, e) sk_buf_printf(&b, "%s%s", i ? "," : "", json_string_value(e) ? json_string_value(e) : "");
  } else {
    json_t *hs = sk_json_get(it, "spec.hostnames");
    size_t i;
    json_t *h;
    json_array_foreach(hs, i, h) sk_buf_printf(&b, "%s%s", i ? "," : "", json_string_value(h) ? json_string_value(h) : "");
    if (!b.len) sk_buf_puts(&b, "*");
    sk_buf_printf(&b, "  rules=%zu", json_array_size(sk_json_get(it, "spec.rules")));
  }
  snprintf(out, len, "%s", b.len ? sk_buf_cstr(&b) : "");
  sk_buf_done(&b);
}

static int cmd_get(const copts_t *o) {
  if (o->nargs < 1) {
    fprintf(stderr, "skiff get: usage: skiff get KIND [NAME] [-n NS] [-l SELECTOR] [-o yaml|json|wide]\n");
    return 2;
  }
  const ctl_kind_t *k = ctl_kind_find(o->args[0]);
  if (!k) {
    fprintf(stderr, "skiff get: unknown kind '%s'\n", o->args[0]);
    return 2;
  }
  const char *name = o->nargs > 1 ? o->args[1] : NULL;
  const char *ns = o->ns ? o->ns : name ? "default" : NULL;
  char *path;
  if (ns || name) path = obj_path(k, ns ? ns : "default", name);
  else {
    path = sk_xmalloc(strlen(k->plural) + 16);
    sprintf(path, "/api/v1/%s", k->plural);
  }
  if (o->selector && !name) {
    sk_buf_t b;
    sk_buf_init(&b);
    sk_buf_printf(&b, "%s?labelSelector=", path);
    for (const char *p = o->selector; *p; p++) {
      unsigned char c = (unsigned char)*p;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-_.~", c))
        sk_buf_append(&b, p, 1);
      else sk_buf_printf(&b, "%%%02X", c);
    }
    free(path);
    path = sk_xstrdup(sk_buf_cstr(&b));
    sk_buf_done(&b);
  }
  cresp_t r;
  int rc = call(o, "GET", path, NULL, NULL, 0, &r);
  free(path);
  if (rc < 0) return 1;
  char lk[64];
  lower(lk, sizeof lk, k->kind);
  if (r.status != 200) {
    char what[300];
    snprintf(what, sizeof what, "%s%s%s", lk, name ? "/" : "", name ? name : "");
    print_failure(what, &r);
    sk_buf_done(&r.body);
    return 1;
  }
  json_t *v = json_loadb(r.body.data, r.body.len, 0, NULL);
  sk_buf_done(&r.body);
  if (!v) {
    fprintf(stderr, "skiff get: the server sent invalid JSON\n");
    return 1;
  }
  if (o->output && !strcmp(o->output, "json")) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    free(s);
  } else if (o->output && !strcmp(o->output, "yaml")) {
    sk_buf_t b;
    sk_buf_init(&b);
    ctl_yaml_emit(v, &b);
    fwrite(b.data, 1, b.len, stdout);
    sk_buf_done(&b);
  } else {
    int wide = o->output && !strcmp(o->output, "wide");
    json_t *items = name ? json_pack("[O]", v) : json_incref(json_object_get(v, "items"));
    if (!json_array_size(items)) {
      fprintf(stderr, "No resources found.\n");
    } else {
      printf("%-16s %-32s %-10s %-8s %-6s%s\n", "NAMESPACE", "NAME", "VERSION", "GEN", "AGE",
             wide ? " DETAILS" : "");
      size_t i;
      json_t *it;
      json_array_foreach(items, i, it) {
        char a[32], det[512];
        age(sk_json_get_str(it, "metadata.creationTimestamp", NULL), a, sizeof a);
        if (wide) wide_cols(it, det, sizeof det);
        printf("%-16s %-32s %-10s %-8lld %-6s%s%s\n", ctl_obj_ns(it), ctl_obj_name(it),
               sk_json_get_str(it, "metadata.resourceVersion", ""),
               (long long)sk_json_get_int(it, "metadata.generation", 0), a, wide ? " " : "", wide ? det : "");
      }
    }
    json_decref(items);
  }
  json_decref(v);
  return 0;
}

/* ---- delete ---- */

static int cmd_delete(const copts_t *o) {
  if (o->nargs < 2 && !o->file) {
    fprintf(stderr, "skiff delete: usage: skiff delete KIND NAME [-n NS]\n");
    return 2;
  }
  const ctl_kind_t *k = ctl_kind_find(o->args[0]);
  if (!k) {
    fprintf(stderr, "skiff delete: unknown kind '%s'\n", o->args[0]);
    return 2;
  }
  char *path = obj_path(k, o->ns ? o->ns : "default", o->args[1]);
  cresp_t r;
  int rc = call(o, "DELETE", path, NULL, NULL, 0, &r);
  free(path);
  if (rc < 0) return 1;
  char lk[64], what[300];
  lower(lk, sizeof lk, k->kind);
  snprintf(what, sizeof what, "%s/%s", lk, o->args[1]);
  int ret = 0;
  if (r.status == 200) printf("%s deleted\n", what);
  else {
    print_failure(what, &r);
    ret = 1;
  }
  sk_buf_done(&r.body);
  return ret;
}

/* ---- diff ---- */

/* What the user controls: server-owned metadata and status removed. */
static json_t *desired_view(const json_t *doc) {
  json_t *c = json_deep_copy(doc);
  json_t *m = json_object_get(c, "metadata");
  static const char *const owned[] = {"uid", "resourceVersion", "generation", "creationTimestamp", NULL};
  for (size_t i = 0; owned[i]; i++) json_object_del(m, owned[i]);
  json_object_del(c, "status");
  return c;
}

static size_t split_lines(char *s, char ***out) {
  size_t n = 0, cap = 64;
  char **v = sk_xmalloc(cap * sizeof *v);
  while (*s) {
    if (n == cap) v = sk_xrealloc(v, (cap *= 2) * sizeof *v);
    v[n++] = s;
    char *nl = strchr(s, '\n');
    if (!nl) break;
    *nl = 0;
    s = nl + 1;
  }
  *out = v;
  return n;
}

/* A unified-style line diff (LCS; plain listing beyond 4000 lines). */
static void line_diff(const char *label, char *a, char *b) {
  char **x, **y;
  size_t n = split_lines(a, &x), m = split_lines(b, &y);
  printf("--- %s (live)\n+++ %s (file)\n", label, label);
  if (n > 4000 || m > 4000) {
    for (size_t i = 0; i < n; i++) printf("-%s\n", x[i]);
    for (size_t j = 0; j < m; j++) printf("+%s\n", y[j]);
  } else {
    unsigned short *L = sk_xcalloc((n + 1) * (m + 1), sizeof *L);
#define LCS(i, j) L[(i) * (m + 1) + (j)]
    for (size_t i = n; i-- > 0;)
      for (size_t j = m; j-- > 0;)
        LCS(i, j) = !strcmp(x[i], y[j]) ? (unsigned short)(LCS(i + 1, j + 1) + 1)
                    : LCS(i + 1, j) >= LCS(i, j + 1) ? LCS(i + 1, j) : LCS(i, j + 1);
    size_t i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && !strcmp(x[i], y[j])) {
        printf(" %s\n", x[i]);
        i++, j++;
      } else if (i < n && (j == m || LCS(i + 1, j) >= LCS(i, j + 1))) {
        printf("-%s\n", x[i++]);
      } else {
        printf("+%s\n", y[j++]);
      }
    }
#undef LCS
    free(L);
  }
  free(x);
  free(y);
}

static int cmd_diff(const copts_t *o) {
  if (!o->file) {
    fprintf(stderr, "skiff diff: -f FILE|DIR is required\n");
    return 2;
  }
  json_t *docs = json_array();
  if (load_docs(o->file, docs) < 0) {
    json_decref(docs);
    return 2;
  }
  int differ = 0, bad = 0;
  size_t i;
  json_t *pair;
  json_array_foreach(docs, i, pair) {
    json_t *doc;
    const char *ns, *name;
    char label[400];
    const ctl_kind_t *k = pair_addr(o, pair, &doc, &ns, &name, label, sizeof label);
    if (!k) {
      bad = 1;
      continue;
    }
    char *path = obj_path(k, ns, name);
    cresp_t r;
    int rc = call(o, "GET", path, NULL, NULL, 0, &r);
    free(path);
    if (rc < 0) {
      bad = 1;
      break;
    }
    json_t *live = NULL;
    if (r.status == 200) live = json_loadb(r.body.data, r.body.len, 0, NULL);
    else if (r.status != 404) {
      print_failure(label, &r);
      bad = 1;
    }
    sk_buf_done(&r.body);
    if (bad) continue;
    json_t *want = desired_view(doc);
    json_t *have = live ? desired_view(live) : NULL;
    /* Compare with the live object's key order so only real changes show. */
    if (!have || !json_equal(want, have)) {
      differ = 1;
      sk_buf_t a, b;
      sk_buf_init(&a);
      sk_buf_init(&b);
      if (have) ctl_yaml_emit(have, &a);
      ctl_yaml_emit(want, &b);
      line_diff(label, a.len ? sk_buf_cstr(&a) : (char[]){0}, sk_buf_cstr(&b));
      sk_buf_done(&a);
      sk_buf_done(&b);
    }
    json_decref(want);
    json_decref(have);
    json_decref(live);
  }
  json_decref(docs);
  return bad ? 2 : differ ? 1 : 0;
}

/* ---- token ---- */

static int token_create(const copts_t *o) {
  if (o->nargs != 1 || !o->role || !o->name) {
    fprintf(stderr, "skiff token create: usage: skiff token create --role viewer|operator|admin --name NAME [--ttl 24h]\n");
    return 2;
  }
  if (strcmp(o->role, "viewer") && strcmp(o->role, "operator") && strcmp(o->role, "admin")) {
    fprintf(stderr, "skiff token create: --role must be viewer, operator or admin\n");
    return 2;
  }
  json_t *req = json_pack("{s:s,s:s}", "name", o->name, "role", o->role);
  if (o->ttl) json_object_set_new(req, "ttl", json_string(o->ttl));
  char *body = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(req);
  cresp_t r;
  int rc = call(o, "POST", "/api/v1/tokens", "application/json", body, strlen(body), &r);
  free(body);
  if (rc < 0) return 1;
  char what[200];
  snprintf(what, sizeof what, "token/%s", o->name);
  int ret = 1;
  if (r.status == 201) {
    json_t *v = json_loadb(r.body.data, r.body.len, 0, NULL);
    const char *secret = sk_json_get_str(v, "token", NULL);
    if (secret) {
      /* The secret is shown once: stdout carries it and nothing else. */
      printf("%s\n", secret);
      fprintf(stderr, "token %s (%s, role %s) created; the secret above is not shown again\n",
              sk_json_get_str(v, "name", o->name), sk_json_get_str(v, "id", "?"), sk_json_get_str(v, "role", o->role));
      ret = 0;
    } else {
      fprintf(stderr, "skiff token create: the server's answer has no token\n");
    }
    json_decref(v);
  } else {
    print_failure(what, &r);
  }
  if (r.body.data) OPENSSL_cleanse(r.body.data, r.body.len);
  sk_buf_done(&r.body);
  return ret;
}

/* GET path: the answer when it is an object with an "items" array, or NULL
 * with the problem printed (what names the resource, cmd the command). */
static json_t *get_items(const copts_t *o, const char *path, const char *what, const char *cmd) {
  cresp_t r;
  if (call(o, "GET", path, NULL, NULL, 0, &r) < 0) return NULL;
  if (r.status != 200) {
    print_failure(what, &r);
    sk_buf_done(&r.body);
    return NULL;
  }
  json_t *v = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, NULL);
  sk_buf_done(&r.body);
  if (!json_is_array(json_object_get(v, "items"))) {
    fprintf(stderr, "%s: the server sent invalid JSON\n", cmd);
    json_decref(v);
    return NULL;
  }
  return v;
}

static int token_list(const copts_t *o) {
  if (o->nargs != 1) {
    fprintf(stderr, "skiff token list: usage: skiff token list [-o json]\n");
    return 2;
  }
  json_t *v = get_items(o, "/api/v1/tokens", "tokens", "skiff token list");
  if (!v) return 1;
  json_t *items = json_object_get(v, "items");
  if (o->output && !strcmp(o->output, "json")) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    free(s);
  } else if (!json_array_size(items)) {
    fprintf(stderr, "No tokens found.\n");
  } else {
    printf("%-18s %-24s %-9s %-21s %-21s %s\n", "ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
      const char *state = json_is_string(json_object_get(it, "revoked")) ? "revoked"
                          : json_is_true(json_object_get(it, "expired")) ? "expired"
                                                                         : "live";
      printf("%-18s %-24s %-9s %-21s %-21s %s\n", sk_json_get_str(it, "id", "?"), sk_json_get_str(it, "name", "?"),
             sk_json_get_str(it, "role", "?"), sk_json_get_str(it, "created", "-"),
             sk_json_get_str(it, "expires", "never"), state);
    }
  }
  json_decref(v);
  return 0;
}

static int token_name_ok(const char *s) {
  size_t n = strlen(s);
  if (!n || n > 128) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._:@-", c)))
      return 0;
  }
  return 1;
}

static int token_revoke(const copts_t *o) {
  if (o->nargs != 2) {
    fprintf(stderr, "skiff token revoke: usage: skiff token revoke NAME|ID\n");
    return 2;
  }
  if (!token_name_ok(o->args[1])) {
    fprintf(stderr, "skiff token revoke: bad token name or id '%s'\n", o->args[1]);
    return 2;
  }
  char path[200], what[200];
  snprintf(path, sizeof path, "/api/v1/tokens/%s", o->args[1]);
  snprintf(what, sizeof what, "token/%s", o->args[1]);
  cresp_t r;
  if (call(o, "DELETE", path, NULL, NULL, 0, &r) < 0) return 1;
  int ret = 0;
  if (r.status == 200) {
    json_t *v = json_loadb(r.body.data, r.body.len, 0, NULL);
    long long n = (long long)sk_json_get_int(v, "revoked", 0);
    printf("%s revoked (%lld token%s)\n", what, n, n == 1 ? "" : "s");
    json_decref(v);
  } else {
    print_failure(what, &r);
    ret = 1;
  }
  sk_buf_done(&r.body);
  return ret;
}

static int cmd_token(const copts_t *o) {
  const char *sub = o->nargs ? o->args[0] : "";
  if (!strcmp(sub, "create")) return token_create(o);
  if (!strcmp(sub, "list")) return token_list(o);
  if (!strcmp(sub, "revoke")) return token_revoke(o);
  fprintf(stderr, "skiff token: usage: skiff token create|list|revoke (see skiff token --help)\n");
  return 2;
}

/* ---- skiff proxies ---- */

static int cmd_proxies(const copts_t *o) {
  if (o->nargs != 0) {
    fprintf(stderr, "skiff proxies: usage: skiff proxies [-o json|wide]\n");
    return 2;
  }
  json_t *v = get_items(o, "/api/v1/proxies", "proxies", "skiff proxies");
  if (!v) return 1;
  json_t *items = json_object_get(v, "items");
  long long cur = (long long)sk_json_get_int(v, "version", 0);
  int wide = o->output && !strcmp(o->output, "wide");
  if (o->output && !strcmp(o->output, "json")) {
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    free(s);
  } else if (!json_array_size(items)) {
    fprintf(stderr, "No proxies found (config version %lld).\n", cur);
  } else {
    if (wide)
      printf("%-24s %-10s %-8s %-8s %-8s %-6s %-22s %-40s %s\n", "NODE", "STATUS", "SENT", "ACKED", "SYNCED", "AGE",
             "ADDRESS", "IDENTITY", "LAST NACK");
    else
      printf("%-24s %-10s %-8s %-8s %-8s %-6s %s\n", "NODE", "STATUS", "SENT", "ACKED", "SYNCED", "AGE", "LAST NACK");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
      long long sent = (long long)sk_json_get_int(it, "lastSentVersion", 0);
      long long acked = (long long)sk_json_get_int(it, "ackedVersion", 0);
      int conn = json_is_true(json_object_get(it, "connected"));
      char ag[16], nack[200] = "-";
      age(sk_json_get_str(it, "connectedSince", NULL), ag, sizeof ag);
      json_t *nk = json_object_get(it, "lastNack");
      if (json_is_object(nk))
        snprintf(nack, sizeof nack, "v%lld: %.*s", (long long)sk_json_get_int(nk, "version", 0), wide ? 160 : 60,
                 sk_json_get_str(nk, "error", ""));
      const char *synced = acked == cur ? "yes" : "no";
      if (wide)
        printf("%-24s %-10s %-8lld %-8lld %-8s %-6s %-22s %-40s %s\n", sk_json_get_str(it, "node", "?"),
               conn ? "connected" : "gone", sent, acked, synced, ag, sk_json_get_str(it, "address", "-"),
               sk_json_get_str(it, "identity", "-"), nack);
      else
        printf("%-24s %-10s %-8lld %-8lld %-8s %-6s %s\n", sk_json_get_str(it, "node", "?"),
               conn ? "connected" : "gone", sent, acked, synced, ag, nack);
    }
  }
  json_decref(v);
  return 0;
}

/* ---- argument parsing ---- */

static const char usage_text[] =
    "usage:\n"
    "  skiff apply -f FILE|DIR            create or update every document (multi-document YAML)\n"
    "  skiff get KIND [NAME] [-n NS] [-l SELECTOR] [-o yaml|json|wide]\n"
    "  skiff delete KIND NAME [-n NS]\n"
    "  skiff diff -f FILE|DIR             live objects against the files (exit 1 when they differ)\n"
    "  skiff token create --role viewer|operator|admin --name NAME [--ttl 24h]\n"
    "                                     prints the new secret once (admin only)\n"
    "  skiff token list [-o json]         tokens, without secrets\n"
    "  skiff token revoke NAME|ID\n"
    "  skiff proxies [-o json|wide]       proxies following control: sent and acknowledged\n"
    "                                     config versions, the last NACK\n"
    "common: --server URL (or $SKIFF_SERVER; default https://127.0.0.1:7400 when\n"
    "        " CTL_CLI_LOCAL_CA " exists, else http://127.0.0.1:7400),\n"
    "        --token TOKEN (or $SKIFF_TOKEN), --ca FILE (or $SKIFF_CA; CA bundle for https,\n"
    "        default " CTL_CLI_LOCAL_CA ")\n";

int ctl_cli_is_verb(const char *verb) {
  return verb && (!strcmp(verb, "apply") || !strcmp(verb, "get") || !strcmp(verb, "delete") || !strcmp(verb, "diff") ||
                  !strcmp(verb, "token") || !strcmp(verb, "proxies"));
}

int ctl_cli_main(int argc, char **argv) {
  if (argc < 1 || !ctl_cli_is_verb(argv[0])) {
    fputs(usage_text, stderr);
    return 2;
  }
  copts_t o = {0};
  int local_ca = access(CTL_CLI_LOCAL_CA, R_OK) == 0;
  o.server = getenv("SKIFF_SERVER");
  if (!o.server || !*o.server) o.server = local_ca ? "https://127.0.0.1:7400" : "http://127.0.0.1:7400";
  o.token = getenv("SKIFF_TOKEN");
  o.ca = getenv("SKIFF_CA");
  if ((!o.ca || !*o.ca) && local_ca) o.ca = CTL_CLI_LOCAL_CA;
  if (o.ca && !*o.ca) o.ca = NULL;
  int is_token = !strcmp(argv[0], "token");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (!strcmp(a, "-f") || !strcmp(a, "--filename")) slot = &o.file;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) slot = &o.output;
    else if (!strcmp(a, "-n") || !strcmp(a, "--namespace")) slot = &o.ns;
    else if (!strcmp(a, "-l") || !strcmp(a, "--selector")) slot = &o.selector;
    else if (!strcmp(a, "--server")) slot = &o.server;
    else if (!strcmp(a, "--token")) slot = &o.token;
    else if (!strcmp(a, "--ca")) slot = &o.ca;
    else if (is_token && !strcmp(a, "--role")) slot = &o.role;
    else if (is_token && !strcmp(a, "--name")) slot = &o.name;
    else if (is_token && !strcmp(a, "--ttl")) slot = &o.ttl;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage_text, stdout);
      return 0;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "skiff %s: unknown option '%s'\n%s", argv[0], a, usage_text);
      return 2;
    } else {
      if (o.nargs >= 4) {
        fprintf(stderr, "skiff %s: unexpected argument '%s'\n", argv[0], a);
        return 2;
      }
      o.args[o.nargs++] = a;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "skiff %s: %s needs a value\n", argv[0], a);
      return 2;
    }
    *slot = argv[++i];
  }
  if (is_token && o.output && strcmp(o.output, "json")) {
    fprintf(stderr, "skiff token: -o must be json\n");
    return 2;
  }
  if (o.output && strcmp(o.output, "yaml") && strcmp(o.output, "json") && strcmp(o.output, "wide")) {
    fprintf(stderr, "skiff %s: -o must be yaml, json or wide\n", argv[0]);
    return 2;
  }
  if (o.ns && !ctl_valid_ns(o.ns)) {
    fprintf(stderr, "skiff %s: bad namespace '%s'\n", argv[0], o.ns);
    return 2;
  }
  if (!strcmp(argv[0], "apply")) return cmd_apply(&o);
  if (!strcmp(argv[0], "get")) return cmd_get(&o);
  if (!strcmp(argv[0], "delete")) return cmd_delete(&o);
  if (is_token) return cmd_token(&o);
  if (!strcmp(argv[0], "proxies")) {
    if (o.output && !strcmp(o.output, "yaml")) {
      fprintf(stderr, "skiff proxies: -o must be json or wide\n");
      return 2;
    }
    return cmd_proxies(&o);
  }
  return cmd_diff(&o);
}
