/* ctl_ca_client.c - the daemon side of skiff-control's CA: when to renew,
 * and one renewal (new key, CSR, POST /api/v1/ca/csr, atomic files,
 * sk_tls_ctx_reload of the contexts that use them). */
#include "ctl_ca.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

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

int ctl_ca_client_renew_due(X509 *cert, time_t now) {
  if (!cert) return 1;
  return (int64_t)now >= due_time(cert);
}

int ctl_ca_client_renew_due_file(const char *cert_path, time_t now, int64_t *due_at) {
  FILE *f = fopen(cert_path, "rb");
  if (!f) return SK_ENOENT;
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  if (!x) {
    ERR_clear_error();
    return SK_EPARSE;
  }
  int64_t d = due_time(x);
  X509_free(x);
  if (due_at) *due_at = d;
  return (int64_t)now >= d;
}

/* ---------------- one renewal ---------------- */

typedef struct renew {
  ctl_ca_client_cb cb;
  void *ud;
  char *spiffe_id, *cert_path, *key_path;
  sk_tls_ctx_t **reload;
  size_t nreload;
  EVP_PKEY *key;
  sk_http_client_t *cl;
} renew_t;

static void renew_free(renew_t *r) {
  for (size_t i = 0; i < r->nreload; i++) sk_tls_ctx_unref(r->reload[i]);
  free(r->reload);
  free(r->spiffe_id);
  free(r->cert_path);
  free(r->key_path);
  EVP_PKEY_free(r->key);
  free(r);
}

/* A PEM CSR for key with the URI SAN (and DNS SANs), signed with SHA-256. */
static char *make_csr(EVP_PKEY *key, const char *spiffe_id, const char *const *dns, size_t ndns) {
  char *out = NULL;
  X509_REQ *req = X509_REQ_new();
  X509_NAME *name = X509_NAME_new();
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  BIO *b = NULL;
  if (!req || !name || !gens || !exts) goto out;
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"skiff", -1, -1, 0);
  if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, name) ||
      !X509_REQ_set_pubkey(req, key))
    goto out;
  for (size_t i = 0; i <= ndns; i++) {
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *v = ASN1_IA5STRING_new();
    const char *s = i == 0 ? spiffe_id : dns[i - 1];
    if (!g || !v || !ASN1_STRING_set(v, s, (int)strlen(s))) {
      GENERAL_NAME_free(g);
      ASN1_IA5STRING_free(v);
      goto out;
    }
    GENERAL_NAME_set0_value(g, i == 0 ? GEN_URI : GEN_DNS, v);
    sk_GENERAL_NAME_push(gens, g);
  }
  X509_EXTENSION *e = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
  if (!e) goto out;
  sk_X509_EXTENSION_push(exts, e);
  if (!X509_REQ_add_extensions(req, exts)) goto out;
  if (!X509_REQ_sign(req, key, EVP_sha256())) goto out;
  b = BIO_new(BIO_s_mem());
  if (!b || PEM_write_bio_X509_REQ(b, req) != 1) goto out;
  char *data;
  long n = BIO_get_mem_data(b, &data);
  out = sk_xstrndup(data, (size_t)n);
out:
  ERR_clear_error();
  BIO_free(b);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  GENERAL_NAMES_free(gens);
  X509_NAME_free(name);
  X509_REQ_free(req);
  return out;
}

/* Checks that the first certificate of chain is for our key and identity. */
static int check_chain(renew_t *r, const char *chain, char *msg, size_t msglen) {
  BIO *b = BIO_new_mem_buf(chain, -1);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  int rc = SK_EPROTO;
  if (!x) {
    snprintf(msg, msglen, "response chain is not PEM");
    goto out;
  }
  if (X509_check_private_key(x, r->key) != 1) {
    snprintf(msg, msglen, "issued certificate does not match the new key");
    goto out;
  }
  char id[CTL_SPIFFE_MAX];
  if (sk_tls_cert_spiffe_id(x, id, sizeof id) < 0 || strcmp(id, r->spiffe_id) != 0) {
    snprintf(msg, msglen, "issued certificate is not for %s", r->spiffe_id);
    goto out;
  }
  rc = 0;
out:
  ERR_clear_error();
  X509_free(x);
  return rc;
}

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  renew_t *r = ud;
  char msg[512] = "";
  int rc = err;
  json_t *v = NULL;
  char *kp = NULL;
  BIO *b = NULL;
  if (err < 0 || !resp) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: %s", sk_strerror(err < 0 ? err : SK_EIO));
    if (rc >= 0) rc = SK_EIO;
    goto out;
  }
  char perr[128];
  if (sk_json_parse((const char *)resp->body, resp->body_len, 1 << 20, 8, &v, perr, sizeof perr) < 0) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: HTTP %d, body is not JSON", resp->status);
    rc = SK_EPROTO;
    goto out;
  }
  if (resp->status != 200) {
    snprintf(msg, sizeof msg, "POST /api/v1/ca/csr: HTTP %d: %s", resp->status,
             sk_json_get_str(v, "message", ""));
    rc = resp->status == 401 ? SK_EUNAUTH : resp->status == 403 ? SK_EFORBID : SK_EPROTO;
    goto out;
  }
  const char *chain = sk_json_get_str(v, "chain", NULL);
  if (!chain) {
    snprintf(msg, sizeof msg, "response has no chain");
    rc = SK_EPROTO;
    goto out;
  }
  if ((rc = check_chain(r, chain, msg, sizeof msg)) < 0) goto out;
  b = BIO_new(BIO_s_mem());
  if (!b || PEM_write_bio_PrivateKey(b, r->key, NULL, NULL, 0, NULL, NULL) != 1) {
    rc = SK_ENOMEM;
    goto out;
  }
  char *data;
  long n = BIO_get_mem_data(b, &data);
  kp = sk_xstrndup(data, (size_t)n);
  /* key first: a reload between the two renames fails (mismatch) and keeps
   * the old pair, the next one sees both */
  if ((rc = ctl__write_file_atomic(r->key_path, kp, strlen(kp), 0600, msg, sizeof msg)) < 0)
    goto out;
  if ((rc = ctl__write_file_atomic(r->cert_path, chain, strlen(chain), 0644, msg, sizeof msg)) < 0)
    goto out;
  for (size_t i = 0; i < r->nreload; i++) {
    rc = sk_tls_ctx_reload(r->reload[i], msg, sizeof msg);
    if (rc < 0) goto out;
  }
  rc = 0;
out:
  if (kp) OPENSSL_cleanse(kp, strlen(kp));
  free(kp);
  BIO_free(b);
  json_decref(v);
  sk_http_client_free(r->cl); /* reference counted: safe from its callback */
  r->cl = NULL;
  r->cb(rc < 0 ? rc : 0, msg, r->ud);
  renew_free(r);
}

int ctl_ca_client_renew(uv_loop_t *loop, const ctl_ca_client_opts_t *o, ctl_ca_client_cb cb,
                        void *ud) {
  if (!loop || !o || !cb || !o->host || !o->port || !o->spiffe_id || !o->cert_path ||
      !o->key_path || o->ndns > 32)
    return SK_EINVAL;
  renew_t *r = sk_xcalloc(1, sizeof *r);
  r->cb = cb;
  r->ud = ud;
  r->spiffe_id = sk_xstrdup(o->spiffe_id);
  r->cert_path = sk_xstrdup(o->cert_path);
  r->key_path = sk_xstrdup(o->key_path);
  if (o->nreload) {
    r->reload = sk_xcalloc(o->nreload, sizeof *r->reload);
    for (size_t i = 0; i < o->nreload; i++) r->reload[i] = sk_tls_ctx_ref(o->reload[i]);
    r->nreload = o->nreload;
  }
  int rc = SK_ETLS;
  char *csr = NULL;
  json_t *body = NULL;
  char *js = NULL;
  r->key = EVP_EC_gen("P-256");
  if (!r->key) goto fail;
  csr = make_csr(r->key, o->spiffe_id, o->dns, o->ndns);
  if (!csr) goto fail;
  body = json_pack("{s:s}", "csr", csr);
  if (o->join_token) json_object_set_new(body, "token", json_string(o->join_token));
  js = json_dumps(body, JSON_COMPACT);
  sk_http_client_opts_t co = {
      .host = o->host,
      .port = o->port,
      .tls = o->tls,
      .max_conns = 1,
      .request_timeout_ms = o->timeout_ms ? o->timeout_ms : 10000,
      .connect_timeout_ms = o->timeout_ms ? o->timeout_ms : 10000,
  };
  rc = sk_http_client_new(loop, &co, &r->cl);
  if (rc < 0) goto fail;
  sk_http_header_t h[] = {{"content-type", "application/json"}};
  rc = sk_http_client_request(r->cl, "POST", "/api/v1/ca/csr", h, 1, js, strlen(js), on_resp, r);
  if (rc < 0) goto fail;
  free(csr);
  free(js);
  json_decref(body);
  return 0;
fail:
  ERR_clear_error();
  sk_http_client_free(r->cl);
  free(csr);
  free(js);
  json_decref(body);
  renew_free(r);
  return rc;
}
