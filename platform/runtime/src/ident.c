/* ident.c - a daemon's identity from skiff-control's CA (skiff/ident.h):
 * first certificate, renewal at two thirds of the lifetime with backoff,
 * atomic files, bundle refresh, reload of every TLS context using them. */
#include "skiff/ident.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define BACKOFF_MIN_MS 1000u
#define BACKOFF_MAX_MS 60000u
#define MAX_DNS 16
#define MAX_TOKEN_FILE 4096

/* ---------------- config ---------------- */

static const char *const kind_names[] = {"daemon", "proxy", "workload", NULL};

static int check_control(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  if (!s || !*s) return 0;
  if ((strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) || strlen(s) > 300) {
    snprintf(msg, msglen, "must be https://host:port (at most 300 characters)");
    return SK_EINVAL;
  }
  return 0;
}

static const sk_config_entry_t ident_entries[] = {
    {SK_CFG_E_("control", SK_CFG_STRING, "", sk_ident_cfg_t, control,
               "skiff-control's API (https://host:port); empty = no identity"),
     .validate = check_control},
    SK_CFG_STRING_E("join_token_file", "", sk_ident_cfg_t, join_token_file,
                    "join token for the first certificate; default $SKIFF_JOIN_TOKEN_FILE"),
    SK_CFG_STRING_E("dir", "", sk_ident_cfg_t, dir,
                    "cert.pem, key.pem, bundle.pem; default <state_dir>/identity"),
    SK_CFG_STRING_E("bundle", "", sk_ident_cfg_t, bundle,
                    "CA bundle trusted at the first contact; default $SKIFF_CA, then <dir>/bundle.pem"),
    SK_CFG_STRING_E("name", "", sk_ident_cfg_t, name, "identity name; default the daemon's name"),
    SK_CFG_STRING_E("kind", "daemon", sk_ident_cfg_t, kind, "daemon, proxy or workload"),
    SK_CFG_STRING_E("region", "local", sk_ident_cfg_t, region, "region part of the SPIFFE ID"),
    SK_CFG_STRING_E("trust_domain", "skiff.local", sk_ident_cfg_t, trust_domain, "SPIFFE trust domain"),
    SK_CFG_STRLIST_E("dns", "localhost", sk_ident_cfg_t, dns, "DNS (or loopback IP) SANs to ask for"),
    SK_CFG_DURATION_E("ttl", "0", sk_ident_cfg_t, ttl_ms, "certificate lifetime to ask for; 0 = the CA's default"),
    SK_CFG_END_E};
static int valid_part(const char *s, size_t max, const char *extra);

/* kind, name, region and trust domain, when set (the daemon's name is the
 * default name and is checked at start). */
static int check_section(const void *section, char *msg, size_t msglen) {
  const sk_ident_cfg_t *c = section;
  int kind_ok = 0;
  for (int i = 0; kind_names[i]; i++) kind_ok |= c->kind && !strcmp(c->kind, kind_names[i]);
  if (!kind_ok) {
    snprintf(msg, msglen, "identity.kind '%s': must be daemon, proxy or workload", c->kind ? c->kind : "");
    return SK_EINVAL;
  }
  if (c->name && *c->name && !valid_part(c->name, 128, "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-")) {
    snprintf(msg, msglen, "identity.name '%s': 1..128 of [A-Za-z0-9._-]", c->name);
    return SK_EINVAL;
  }
  if (!valid_part(c->region, 63, "-")) {
    snprintf(msg, msglen, "identity.region '%s': 1..63 of [a-z0-9-]", c->region ? c->region : "");
    return SK_EINVAL;
  }
  if (!valid_part(c->trust_domain, 255, ".-")) {
    snprintf(msg, msglen, "identity.trust_domain '%s': 1..255 of [a-z0-9.-]", c->trust_domain ? c->trust_domain : "");
    return SK_EINVAL;
  }
  if (c->dns.n > MAX_DNS) {
    snprintf(msg, msglen, "identity.dns: at most %d names", MAX_DNS);
    return SK_EINVAL;
  }
  return 0;
}

const sk_config_schema_t sk_ident_schema = {
    .name = "identity", .size = sizeof(sk_ident_cfg_t), .entries = ident_entries, .check = check_section};

static int valid_part(const char *s, size_t max, const char *extra) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > max) return 0;
  if (!strcmp(s, ".") || !strcmp(s, "..")) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c))) return 0;
  }
  return 1;
}

int sk_ident_opts_from_cfg(const sk_ident_cfg_t *cfg, const char *default_name, sk_ident_opts_t *o,
                           char *idbuf, size_t idlen, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  if (!cfg || !cfg->control || !*cfg->control) return 1;
  const char *name = cfg->name && *cfg->name ? cfg->name : default_name;
  int kind_ok = 0;
  for (int i = 0; kind_names[i]; i++) kind_ok |= cfg->kind && !strcmp(cfg->kind, kind_names[i]);
  if (!kind_ok) {
    snprintf(err, errlen, "identity.kind '%s': must be daemon, proxy or workload", cfg->kind ? cfg->kind : "");
    return SK_EINVAL;
  }
  if (!valid_part(name, 128, "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-")) {
    snprintf(err, errlen, "identity.name '%s': 1..128 of [A-Za-z0-9._-]", name ? name : "");
    return SK_EINVAL;
  }
  if (!valid_part(cfg->region, 63, "-")) {
    snprintf(err, errlen, "identity.region '%s': 1..63 of [a-z0-9-]", cfg->region ? cfg->region : "");
    return SK_EINVAL;
  }
  if (!valid_part(cfg->trust_domain, 255, ".-")) {
    snprintf(err, errlen, "identity.trust_domain '%s': 1..255 of [a-z0-9.-]",
             cfg->trust_domain ? cfg->trust_domain : "");
    return SK_EINVAL;
  }
  if (cfg->dns.n > MAX_DNS) {
    snprintf(err, errlen, "identity.dns: at most %d names", MAX_DNS);
    return SK_EINVAL;
  }
  if (!cfg->dir || !*cfg->dir) {
    snprintf(err, errlen, "identity.dir (or state_dir) is needed");
    return SK_EINVAL;
  }
  if ((size_t)snprintf(idbuf, idlen, "spiffe://%s/region/%s/%s/%s", cfg->trust_domain, cfg->region, cfg->kind,
                       name) >= idlen) {
    snprintf(err, errlen, "identity: SPIFFE ID too long");
    return SK_EINVAL;
  }
  o->url = cfg->control;
  o->dir = cfg->dir;
  o->spiffe_id = idbuf;
  const char *jt = cfg->join_token_file && *cfg->join_token_file ? cfg->join_token_file : getenv("SKIFF_JOIN_TOKEN_FILE");
  o->join_token_file = jt && *jt ? jt : NULL;
  const char *b = cfg->bundle && *cfg->bundle ? cfg->bundle : getenv("SKIFF_CA");
  o->bundle = b && *b ? b : NULL;
  o->dns = (const char *const *)cfg->dns.v;
  o->ndns = cfg->dns.n;
  o->ttl_s = (int64_t)(cfg->ttl_ms / 1000);
  return 0;
}

/* ---------------- helpers ---------------- */

static int64_t asn1_unix(const ASN1_TIME *t) {
  struct tm tm;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return (int64_t)timegm(&tm);
}

static int64_t due_time(X509 *cert) {
  int64_t nb = asn1_unix(X509_get0_notBefore(cert));
  int64_t na = asn1_unix(X509_get0_notAfter(cert));
  if (na <= nb) return 0;
  return nb + (na - nb) * 2 / 3;
}

int sk_ident_renew_due(X509 *cert, time_t now) {
  if (!cert) return 1;
  return (int64_t)now >= due_time(cert);
}

static X509 *read_cert(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  ERR_clear_error();
  return x;
}

int sk_ident_renew_due_file(const char *cert_path, time_t now, int64_t *due_at) {
  if (access(cert_path, R_OK) != 0) return SK_ENOENT;
  X509 *x = read_cert(cert_path);
  if (!x) return SK_EPARSE;
  int64_t d = due_time(x);
  X509_free(x);
  if (due_at) *due_at = d;
  return (int64_t)now >= d;
}

/* Writes path.tmp (fsync'd); the caller renames it (rename_only) or it is
 * removed on failure. */
static int write_tmp(const char *path, const void *data, size_t len, int mode, char *err, size_t errlen) {
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return SK_ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  int rc = 0;
  if (fd < 0) {
    rc = sk_err_from_errno(errno);
    if (err) snprintf(err, errlen, "cannot create %s: %s", tmp, sk_strerror(rc));
    return rc;
  }
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = sk_err_from_errno(n < 0 ? errno : EIO);
      goto out;
    }
    p += n;
    left -= (size_t)n;
  }
  if (fchmod(fd, (mode_t)mode) < 0 || fsync(fd) < 0) rc = sk_err_from_errno(errno);
out:
  close(fd);
  if (rc < 0) {
    unlink(tmp);
    if (err) snprintf(err, errlen, "cannot write %s: %s", path, sk_strerror(rc));
  }
  return rc;
}

static int rename_tmp(const char *path, char *err, size_t errlen) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (rename(tmp, path) == 0) return 0;
  int rc = sk_err_from_errno(errno);
  unlink(tmp);
  if (err) snprintf(err, errlen, "cannot write %s: %s", path, sk_strerror(rc));
  return rc;
}

int sk_ident_write_file(const char *path, const void *data, size_t len, int mode, char *err, size_t errlen) {
  int rc = write_tmp(path, data, len, mode, err, errlen);
  return rc < 0 ? rc : rename_tmp(path, err, errlen);
}

static char *bio_string(BIO *b) {
  char *data;
  long n = BIO_get_mem_data(b, &data);
  return sk_xstrndup(data, (size_t)n);
}

int sk_ident_make_csr(const char *spiffe_id, const char *const *dns, size_t ndns, char **key_pem,
                      char **csr_pem) {
  int rc = SK_ETLS;
  EVP_PKEY *key = NULL;
  X509_REQ *req = X509_REQ_new();
  X509_NAME *name = X509_NAME_new();
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  BIO *b = NULL, *kb = NULL;
  *key_pem = *csr_pem = NULL;
  if (!spiffe_id || ndns > MAX_DNS) {
    rc = SK_EINVAL;
    goto out;
  }
  if (!req || !name || !gens || !exts || !(key = EVP_EC_gen("P-256"))) goto out;
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"skiff", -1, -1, 0);
  if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, key))
    goto out;
  for (size_t i = 0; i <= ndns; i++) {
    const char *s = i == 0 ? spiffe_id : dns[i - 1];
    unsigned char ip[16];
    int iplen = 0;
    if (i > 0 && inet_pton(AF_INET, s, ip) == 1) iplen = 4;
    else if (i > 0 && inet_pton(AF_INET6, s, ip) == 1) iplen = 16;
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *v = iplen ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    int ok = g && v && (iplen ? ASN1_OCTET_STRING_set(v, ip, iplen) : ASN1_STRING_set(v, s, (int)strlen(s)));
    if (!ok) {
      GENERAL_NAME_free(g);
      ASN1_STRING_free(v);
      goto out;
    }
    GENERAL_NAME_set0_value(g, i == 0 ? GEN_URI : iplen ? GEN_IPADD : GEN_DNS, v);
    sk_GENERAL_NAME_push(gens, g);
  }
  X509_EXTENSION *e = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
  if (!e) goto out;
  sk_X509_EXTENSION_push(exts, e);
  if (!X509_REQ_add_extensions(req, exts) || !X509_REQ_sign(req, key, EVP_sha256())) goto out;
  b = BIO_new(BIO_s_mem());
  kb = BIO_new(BIO_s_mem());
  if (!b || !kb || PEM_write_bio_X509_REQ(b, req) != 1 ||
      PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) != 1)
    goto out;
  *csr_pem = bio_string(b);
  *key_pem = bio_string(kb);
  rc = 0;
out:
  ERR_clear_error();
  BIO_free(b);
  BIO_free(kb);
  EVP_PKEY_free(key);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  GENERAL_NAMES_free(gens);
  X509_NAME_free(name);
  X509_REQ_free(req);
  return rc;
}

/* ---------------- the identity ---------------- */

typedef struct attempt attempt_t;

struct sk_ident {
  uv_loop_t *loop;
  char *host;
  int port, https;
  sk_ident_issue_fn issue;
  void *issue_ud;
  char *dir, *cert_path, *key_path, *bundle_path, *first_bundle, *spiffe_id, *join_token_file;
  char **dns;
  size_t ndns;
  int64_t ttl_s;
  uint64_t timeout_ms;
  sk_ident_event_fn on_event;
  void *ud;
  sk_ident_ready_fn ready;
  void *ready_ud;
  int started, ready_called;
  uv_timer_t timer;
  sk_tls_ctx_t **extra;
  size_t nextra;
  attempt_t *cur;
  uint64_t backoff_ms;
  int have;
  char serial[65];
  int64_t not_after, due_at;
  uint64_t renewals;
};

struct attempt {
  sk_ident_t *id; /* NULL once the identity is freed */
  sk_http_client_t *cl;
  sk_tls_ctx_t *tls;
  char *key_pem;
  char *chain;
};

static void attempt_free(attempt_t *a) {
  if (!a) return;
  sk_tls_ctx_unref(a->tls);
  if (a->key_pem) OPENSSL_cleanse(a->key_pem, strlen(a->key_pem));
  free(a->key_pem);
  free(a->chain);
  free(a);
}

/* Reads the current files: 1 = usable (our key, our identity, not expired),
 * fills serial/not_after/due_at. */
static int load_current(sk_ident_t *id) {
  int ok = 0;
  X509 *x = read_cert(id->cert_path);
  EVP_PKEY *k = NULL;
  FILE *f = NULL;
  if (!x) goto out;
  if (!(f = fopen(id->key_path, "rb"))) goto out;
  k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  if (!k || X509_check_private_key(x, k) != 1) goto out;
  char sid[SK_IDENT_ID_MAX];
  if (sk_tls_cert_spiffe_id(x, sid, sizeof sid) < 0 || strcmp(sid, id->spiffe_id) != 0) goto out;
  int64_t na = asn1_unix(X509_get0_notAfter(x));
  if (na <= (int64_t)time(NULL)) goto out;
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  snprintf(id->serial, sizeof id->serial, "%s", hex ? hex : "");
  OPENSSL_free(hex);
  BN_free(bn);
  id->not_after = na;
  id->due_at = due_time(x);
  ok = 1;
out:
  if (f) fclose(f);
  EVP_PKEY_free(k);
  X509_free(x);
  ERR_clear_error();
  id->have = ok;
  return ok;
}

static void timer_cb(uv_timer_t *t);

static void arm(sk_ident_t *id, uint64_t ms) {
  uv_timer_stop(&id->timer);
  uv_timer_start(&id->timer, timer_cb, ms, 0);
}

static void arm_due(sk_ident_t *id) {
  int64_t now = (int64_t)time(NULL);
  int64_t wait = id->due_at > now ? id->due_at - now : 0;
  arm(id, (uint64_t)wait * 1000);
}

static void reload_all(sk_ident_t *id, char *msg, size_t msglen) {
  const char *paths[] = {id->cert_path, id->key_path, id->bundle_path};
  char e[256];
  int n = sk_tls_ctx_reload_files(paths, 3, e, sizeof e);
  for (size_t i = 0; i < id->nextra; i++) {
    char e2[256];
    if (sk_tls_ctx_reload(id->extra[i], e2, sizeof e2) < 0 && n >= 0) {
      n = SK_ETLS;
      snprintf(e, sizeof e, "%s", e2);
    }
  }
  if (n < 0) {
    size_t l = strlen(msg);
    snprintf(msg + l, msglen - l, "; reload: %s", e);
  }
}

static void finish(sk_ident_t *id, int rc, const char *msg) {
  char m[768];
  if (rc >= 0) {
    id->renewals++;
    id->backoff_ms = 0;
    load_current(id);
    char exp[40];
    time_t na = (time_t)id->not_after;
    struct tm tm;
    gmtime_r(&na, &tm);
    strftime(exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(m, sizeof m, "certificate for %s: serial %s, expires %s, renews in %llds%s%s", id->spiffe_id,
             id->serial, exp, (long long)(id->due_at - (int64_t)time(NULL)), msg && *msg ? "; " : "",
             msg ? msg : "");
    arm_due(id);
  } else {
    id->backoff_ms = id->backoff_ms ? id->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (id->backoff_ms > BACKOFF_MAX_MS) id->backoff_ms = BACKOFF_MAX_MS;
    uint64_t wait = id->backoff_ms;
    int64_t now = (int64_t)time(NULL);
    if (id->have && id->not_after > now + 1 && (uint64_t)(id->not_after - now - 1) * 1000 < wait)
      wait = (uint64_t)(id->not_after - now - 1) * 1000;
    snprintf(m, sizeof m, "%s: %s; next attempt in %llums", id->spiffe_id, msg && *msg ? msg : sk_strerror(rc),
             (unsigned long long)wait);
    arm(id, wait);
  }
  if (id->on_event) id->on_event(id, rc < 0 ? rc : 0, m, id->ud);
  if (rc >= 0 && !id->ready_called) {
    id->ready_called = 1;
    if (id->ready) id->ready(id, id->ready_ud);
  }
}

/* Checks chain (leaf first) against our key and identity, writes key then
 * chain. */
static int install(sk_ident_t *id, const char *key_pem, const char *chain, char *msg, size_t msglen) {
  int rc = SK_EPROTO;
  BIO *b = BIO_new_mem_buf(chain, -1);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO *kb = BIO_new_mem_buf(key_pem, -1);
  EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
  char sid[SK_IDENT_ID_MAX];
  if (!x) {
    snprintf(msg, msglen, "issued chain is not PEM");
  } else if (!k || X509_check_private_key(x, k) != 1) {
    snprintf(msg, msglen, "issued certificate does not match the new key");
  } else if (sk_tls_cert_spiffe_id(x, sid, sizeof sid) < 0 || strcmp(sid, id->spiffe_id) != 0) {
    snprintf(msg, msglen, "issued certificate is not for %s", id->spiffe_id);
  } else {
    /* both written and fsync'd before either is renamed (a full disk
     * leaves the old pair whole); key first: a reload between the two
     * renames fails on the mismatch and keeps the old pair, the reload
     * after both sees the new pair */
    rc = write_tmp(id->key_path, key_pem, strlen(key_pem), 0600, msg, msglen);
    if (rc >= 0 && (rc = write_tmp(id->cert_path, chain, strlen(chain), 0644, msg, msglen)) < 0) {
      char tmp[4096];
      snprintf(tmp, sizeof tmp, "%s.tmp", id->key_path);
      unlink(tmp);
    }
    if (rc >= 0) rc = rename_tmp(id->key_path, msg, msglen);
    if (rc >= 0) rc = rename_tmp(id->cert_path, msg, msglen);
  }
  ERR_clear_error();
  EVP_PKEY_free(k);
  X509_free(x);
  BIO_free(b);
  BIO_free(kb);
  return rc;
}

static void end_attempt(attempt_t *a, int rc, const char *msg) {
  sk_ident_t *id = a->id;
  sk_http_client_t *cl = a->cl;
  a->cl = NULL;
  if (id) id->cur = NULL;
  sk_http_client_free(cl); /* reference counted: safe from its callback */
  attempt_free(a);
  if (id) finish(id, rc, msg);
}

static int looks_like_bundle(const char *s, size_t n) {
  if (n == 0 || n > (1u << 20)) return 0;
  BIO *b = BIO_new_mem_buf(s, (int)n);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  int ok = x != NULL;
  X509_free(x);
  BIO_free(b);
  ERR_clear_error();
  return ok;
}

static void on_bundle(int err, sk_http_resp_t *resp, void *ud) {
  attempt_t *a = ud;
  sk_ident_t *id = a->id;
  char msg[512] = "";
  if (!id) {
    end_attempt(a, SK_ECANCELED, NULL);
    return;
  }
  if (err >= 0 && resp && resp->status == 200 && looks_like_bundle((const char *)resp->body, resp->body_len)) {
    char e[256];
    if (sk_ident_write_file(id->bundle_path, resp->body, resp->body_len, 0644, e, sizeof e) < 0)
      snprintf(msg, sizeof msg, "bundle not refreshed: %s", e);
  } else {
    snprintf(msg, sizeof msg, "bundle not refreshed: %s",
             err < 0 ? sk_strerror(err) : resp ? "unexpected answer" : "no answer");
  }
  reload_all(id, msg, sizeof msg);
  end_attempt(a, 0, msg);
}

static void on_csr(int err, sk_http_resp_t *resp, void *ud) {
  attempt_t *a = ud;
  sk_ident_t *id = a->id;
  char msg[512] = "";
  json_t *v = NULL;
  int rc;
  if (!id) {
    end_attempt(a, SK_ECANCELED, NULL);
    return;
  }
  if (err < 0 || !resp) {
    rc = err < 0 ? err : SK_EIO;
    snprintf(msg, sizeof msg, "POST %s:%d/api/v1/ca/csr: %s", id->host, id->port, sk_strerror(rc));
    goto fail;
  }
  char perr[128];
  if (sk_json_parse((const char *)resp->body, resp->body_len, 1 << 20, 8, &v, perr, sizeof perr) < 0) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: HTTP %d, body is not JSON", resp->status);
    rc = SK_EPROTO;
    goto fail;
  }
  if (resp->status != 200) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: HTTP %d: %s", resp->status, sk_json_get_str(v, "message", ""));
    rc = resp->status == 401 ? SK_EUNAUTH : resp->status == 403 ? SK_EFORBID : SK_EPROTO;
    goto fail;
  }
  const char *chain = sk_json_get_str(v, "chain", NULL);
  if (!chain) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: answer has no chain");
    rc = SK_EPROTO;
    goto fail;
  }
  if ((rc = install(id, a->key_pem, chain, msg, sizeof msg)) < 0) goto fail;
  json_decref(v);
  if (sk_http_client_request(a->cl, "GET", "/api/v1/ca/bundle", NULL, 0, NULL, 0, on_bundle, a) < 0) {
    snprintf(msg, sizeof msg, "bundle not refreshed");
    reload_all(id, msg, sizeof msg);
    end_attempt(a, 0, msg);
  }
  return;
fail:
  json_decref(v);
  end_attempt(a, rc, msg);
}

/* The join token file's first line. */
static int read_token(const char *path, char *out, size_t outlen, char *msg, size_t msglen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, msglen, "join token file %s: %s", path, strerror(errno));
    return SK_ENOENT;
  }
  size_t n = fread(out, 1, outlen - 1, f);
  fclose(f);
  out[n] = 0;
  out[strcspn(out, "\r\n")] = 0;
  if (!out[0]) {
    snprintf(msg, msglen, "join token file %s is empty", path);
    return SK_EINVAL;
  }
  return 0;
}

static void attempt(sk_ident_t *id) {
  char msg[512] = "";
  int rc;
  char *key_pem = NULL, *csr = NULL, *chain = NULL;
  char token[MAX_TOKEN_FILE] = "";
  if (id->cur) return;
  rc = sk_ident_make_csr(id->spiffe_id, (const char *const *)id->dns, id->ndns, &key_pem, &csr);
  if (rc < 0) {
    snprintf(msg, sizeof msg, "cannot make a key and CSR: %s", sk_strerror(rc));
    goto fail;
  }
  if (id->issue) {
    rc = id->issue(id->issue_ud, csr, id->spiffe_id, id->ttl_s, &chain, msg, sizeof msg);
    if (rc >= 0) rc = install(id, key_pem, chain, msg, sizeof msg);
    if (rc >= 0) reload_all(id, msg, sizeof msg);
    OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    free(csr);
    free(chain);
    finish(id, rc, msg);
    return;
  }
  /* over HTTPS: prove who we are with the current certificate while it is
   * valid, else with the join token */
  int64_t now = (int64_t)time(NULL);
  int by_cert = id->have && id->not_after > now + 1;
  if (!by_cert) {
    if (!id->join_token_file) {
      snprintf(msg, sizeof msg, "no valid certificate in %s and no join token file", id->dir);
      rc = SK_EUNAUTH;
      goto fail;
    }
    if ((rc = read_token(id->join_token_file, token, sizeof token, msg, sizeof msg)) < 0) goto fail;
  }
  attempt_t *a = sk_xcalloc(1, sizeof *a);
  a->id = id;
  a->key_pem = key_pem;
  key_pem = NULL;
  if (id->https) {
    const char *ca = access(id->bundle_path, R_OK) == 0 ? id->bundle_path : id->first_bundle;
    sk_tls_opts_t to = {.ca_file = ca,
                        .verify = SK_TLS_VERIFY_REQUIRE,
                        .cert_file = by_cert ? id->cert_path : NULL,
                        .key_file = by_cert ? id->key_path : NULL};
    if (!ca) {
      snprintf(msg, sizeof msg, "no CA bundle to verify %s with (identity.bundle or SKIFF_CA)", id->host);
      rc = SK_ETLS;
      attempt_free(a);
      goto fail;
    }
    if ((rc = sk_tls_ctx_new(&to, &a->tls, msg, sizeof msg)) < 0) {
      attempt_free(a);
      goto fail;
    }
  }
  sk_http_client_opts_t co = {.host = id->host,
                              .port = id->port,
                              .tls = a->tls,
                              .max_conns = 1,
                              .max_body_bytes = 1 << 20,
                              .connect_timeout_ms = id->timeout_ms,
                              .request_timeout_ms = id->timeout_ms};
  if ((rc = sk_http_client_new(id->loop, &co, &a->cl)) < 0) {
    snprintf(msg, sizeof msg, "cannot create the HTTP client: %s", sk_strerror(rc));
    attempt_free(a);
    goto fail;
  }
  json_t *body = json_pack("{s:s}", "csr", csr);
  if (!by_cert) json_object_set_new(body, "token", json_string(token));
  if (id->ttl_s > 0) json_object_set_new(body, "ttl", json_integer(id->ttl_s));
  char *js = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  OPENSSL_cleanse(token, sizeof token);
  free(csr);
  csr = NULL;
  id->cur = a;
  sk_http_header_t h[] = {{"content-type", "application/json"}};
  rc = sk_http_client_request(a->cl, "POST", "/api/v1/ca/csr", h, 1, js, strlen(js), on_csr, a);
  free(js);
  if (rc < 0 && id->cur == a) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: %s", sk_strerror(rc));
    end_attempt(a, rc, msg);
  }
  return;
fail:
  OPENSSL_cleanse(token, sizeof token);
  if (key_pem) OPENSSL_cleanse(key_pem, strlen(key_pem));
  free(key_pem);
  free(csr);
  finish(id, rc, msg);
}

static void timer_cb(uv_timer_t *t) { attempt(t->data); }

static int parse_url(sk_ident_t *id, const char *url, char *err, size_t errlen) {
  const char *p;
  if (!strncmp(url, "https://", 8)) {
    id->https = 1;
    p = url + 8;
  } else if (!strncmp(url, "http://", 7)) {
    p = url + 7;
  } else {
    snprintf(err, errlen, "identity.control '%s': must be https://host:port", url);
    return SK_EINVAL;
  }
  size_t n = strcspn(p, "/");
  char hp[300];
  if (n == 0 || n >= sizeof hp) {
    snprintf(err, errlen, "identity.control '%s': no host", url);
    return SK_EINVAL;
  }
  memcpy(hp, p, n);
  hp[n] = 0;
  sk_cfg_addr_t a;
  char m[200];
  if (sk_config_parse_addr(hp, &a, m, sizeof m) < 0 || a.port <= 0) {
    snprintf(err, errlen, "identity.control '%s': host:port: %s", url, m);
    return SK_EINVAL;
  }
  id->host = sk_xstrdup(a.host[0] ? a.host : "127.0.0.1");
  id->port = a.port;
  return 0;
}

static char *join_path(const char *dir, const char *file) {
  size_t n = strlen(dir) + strlen(file) + 2;
  char *p = sk_xmalloc(n);
  snprintf(p, n, "%s/%s", dir, file);
  return p;
}

static int mkdirs(const char *dir) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return SK_ENAMETOOLONG;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0750) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
    *s = '/';
  }
  if (mkdir(p, 0700) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
  return 0;
}

int sk_ident_new(uv_loop_t *loop, const sk_ident_opts_t *o, sk_ident_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!loop || !o || !o->dir || !*o->dir || !o->spiffe_id || strncmp(o->spiffe_id, "spiffe://", 9) != 0 ||
      strlen(o->spiffe_id) >= SK_IDENT_ID_MAX || (!o->url && !o->issue) || o->ndns > MAX_DNS) {
    snprintf(err, errlen, "identity: dir, a spiffe:// ID and control's URL (or an issuer) are required");
    return SK_EINVAL;
  }
  sk_ident_t *id = sk_xcalloc(1, sizeof *id);
  int rc;
  if (!o->issue && (rc = parse_url(id, o->url, err, errlen)) < 0) {
    free(id);
    return rc;
  }
  if ((rc = mkdirs(o->dir)) < 0) {
    snprintf(err, errlen, "identity.dir %s: %s", o->dir, sk_strerror(rc));
    free(id->host);
    free(id);
    return rc;
  }
  id->loop = loop;
  id->issue = o->issue;
  id->issue_ud = o->issue_ud;
  id->dir = sk_xstrdup(o->dir);
  id->cert_path = join_path(o->dir, "cert.pem");
  id->key_path = join_path(o->dir, "key.pem");
  id->bundle_path = join_path(o->dir, "bundle.pem");
  id->first_bundle = o->bundle ? sk_xstrdup(o->bundle) : NULL;
  id->spiffe_id = sk_xstrdup(o->spiffe_id);
  id->join_token_file = o->join_token_file ? sk_xstrdup(o->join_token_file) : NULL;
  if (o->ndns) {
    id->dns = sk_xcalloc(o->ndns, sizeof *id->dns);
    for (size_t i = 0; i < o->ndns; i++) id->dns[i] = sk_xstrdup(o->dns[i]);
    id->ndns = o->ndns;
  }
  id->ttl_s = o->ttl_s;
  id->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
  id->on_event = o->on_event;
  id->ud = o->ud;
  uv_timer_init(loop, &id->timer);
  id->timer.data = id;
  *out = id;
  return 0;
}

static void closed_cb(uv_handle_t *h) {
  sk_ident_t *id = h->data;
  for (size_t i = 0; i < id->nextra; i++) sk_tls_ctx_unref(id->extra[i]);
  free(id->extra);
  for (size_t i = 0; i < id->ndns; i++) free(id->dns[i]);
  free(id->dns);
  free(id->host);
  free(id->dir);
  free(id->cert_path);
  free(id->key_path);
  free(id->bundle_path);
  free(id->first_bundle);
  free(id->spiffe_id);
  free(id->join_token_file);
  free(id);
}

void sk_ident_free(sk_ident_t *id) {
  if (!id) return;
  if (id->cur) {
    attempt_t *a = id->cur;
    id->cur = NULL;
    a->id = NULL;
    sk_http_client_t *cl = a->cl;
    a->cl = NULL;
    /* its callback sees a->id == NULL and frees the attempt */
    sk_http_client_free(cl);
  }
  uv_timer_stop(&id->timer);
  uv_close((uv_handle_t *)&id->timer, closed_cb);
}

int sk_ident_start(sk_ident_t *id, sk_ident_ready_fn ready, void *ud) {
  if (!id || id->started) return SK_EINVAL;
  id->started = 1;
  id->ready = ready;
  id->ready_ud = ud;
  if (access(id->bundle_path, R_OK) != 0 && id->first_bundle) {
    /* the first-contact bundle becomes ours until control hands out one */
    FILE *f = fopen(id->first_bundle, "rb");
    if (f) {
      char buf[65536];
      size_t n = fread(buf, 1, sizeof buf, f);
      fclose(f);
      if (looks_like_bundle(buf, n)) sk_ident_write_file(id->bundle_path, buf, n, 0644, NULL, 0);
    }
  }
  if (load_current(id) && (int64_t)time(NULL) < id->due_at) {
    arm_due(id);
    id->ready_called = 1;
    if (ready) ready(id, ud);
    return 0;
  }
  attempt(id);
  return 0;
}

int sk_ident_renew_now(sk_ident_t *id) {
  if (!id) return SK_EINVAL;
  if (id->cur) return SK_EBUSY;
  uv_timer_stop(&id->timer);
  attempt(id);
  return 0;
}

void sk_ident_add_tls(sk_ident_t *id, sk_tls_ctx_t *ctx) {
  if (!id || !ctx) return;
  id->extra = sk_xrealloc(id->extra, (id->nextra + 1) * sizeof *id->extra);
  id->extra[id->nextra++] = sk_tls_ctx_ref(ctx);
}

const char *sk_ident_cert_path(const sk_ident_t *id) { return id->cert_path; }
const char *sk_ident_key_path(const sk_ident_t *id) { return id->key_path; }
const char *sk_ident_bundle_path(const sk_ident_t *id) { return id->bundle_path; }
const char *sk_ident_spiffe_id(const sk_ident_t *id) { return id->spiffe_id; }
uint64_t sk_ident_renewals(const sk_ident_t *id) { return id->renewals; }

int sk_ident_current(const sk_ident_t *id, char *serial, size_t seriallen, int64_t *not_after, int64_t *due_at) {
  if (!id || !id->have) return SK_ENOENT;
  if (serial && seriallen) snprintf(serial, seriallen, "%s", id->serial);
  if (not_after) *not_after = id->not_after;
  if (due_at) *due_at = id->due_at;
  return 0;
}
