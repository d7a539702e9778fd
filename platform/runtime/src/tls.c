/* TLS contexts on OpenSSL 3.
 *
 * An sk_tls_ctx_t keeps the options it was built from and the SSL_CTX made
 * from them. Reloading builds a whole new SSL_CTX from the files and swaps
 * the pointer under a lock; connections hold their own reference to the
 * SSL_CTX they started with, so they never notice. ALPN preferences live in
 * the SSL_CTX's ex_data (they must live as long as the SSL_CTX, which can
 * outlive the sk_tls_ctx_t), and a listener can override them for its own
 * connections through the SSL's ex_data. */
#include "skiff/tls.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

/* TLS 1.2: ECDHE key exchange with AEAD ciphers only. TLS 1.3 suites are
 * all AEAD with (EC)DHE and keep OpenSSL's defaults. */
#define SK_TLS12_CIPHERS                                                            \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                     \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                     \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define SK_TLS_GROUPS "X25519:P-256:P-384"

struct sk_tls_ctx {
  int refs; /* atomic */
  int is_server;
  sk_tls_verify_t verify;
  int min_version;
  char *cert_file, *key_file, *ca_file;
  sk__tls_alpn_t alpn;
  pthread_mutex_t mu; /* guards ssl_ctx: reloads may race with other loops */
  SSL_CTX *ssl_ctx;
  struct sk_tls_ctx *reg_prev, *reg_next; /* live contexts, for sk_tls_ctx_reload_files */
};

/* Every live context, so that a renewed identity reaches all the contexts
 * built from its files (skiff/ident.h) without each daemon listing them. */
static pthread_mutex_t sk__tls_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static sk_tls_ctx_t *sk__tls_reg;

static pthread_once_t sk__tls_once = PTHREAD_ONCE_INIT;
static int sk__ctx_alpn_idx = -1; /* SSL_CTX ex_data: owned sk__tls_alpn_t copy */
static int sk__ssl_alpn_idx = -1; /* SSL ex_data: borrowed override */

static void sk__ctx_alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                              void *argp) {
  free(ptr);
}

static void sk__tls_init_once(void) {
  OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
  sk__ctx_alpn_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sk__ctx_alpn_free);
  sk__ssl_alpn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int sk__tls_alpn_wire(const char *list, unsigned char *out, size_t cap) {
  size_t len = 0;
  if (!list) return 0;
  const char *p = list;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    while (n && (*p == ' ' || *p == '\t')) p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0 || n > 255 || len + 1 + n > cap) return SK_EINVAL;
    out[len++] = (unsigned char)n;
    memcpy(out + len, p, n);
    len += n;
    if (!e) break;
    p = e + 1;
    if (!*p) return SK_EINVAL; /* trailing comma */
  }
  return (int)len;
}

void sk__tls_ssl_set_alpn(SSL *ssl, const sk__tls_alpn_t *a) {
  pthread_once(&sk__tls_once, sk__tls_init_once);
  SSL_set_ex_data(ssl, sk__ssl_alpn_idx, (void *)a);
}

/* The server picks the first protocol of its own list that the client
 * offers; with no overlap the handshake goes on without ALPN. */
static int sk__alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg) {
  const sk__tls_alpn_t *a = SSL_get_ex_data(ssl, sk__ssl_alpn_idx);
  if (!a || !a->len) a = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sk__ctx_alpn_idx);
  if (!a || !a->len) return SSL_TLSEXT_ERR_NOACK;
  for (size_t i = 0; i + 1 <= a->len; i += 1u + a->wire[i]) {
    unsigned int sl = a->wire[i];
    for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
      unsigned int cl = in[j];
      if (j + 1u + cl > inlen) break;
      if (cl == sl && memcmp(in + j + 1, a->wire + i + 1, sl) == 0) {
        *out = in + j + 1;
        *outlen = (unsigned char)cl;
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

int sk__tls_ssl_set_peer_name(SSL *ssl, const char *name) {
  if (!name || !*name) return 0;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  char buf[64];
  const char *ip = name;
  size_t n = strlen(name);
  if (name[0] == '[' && n > 2 && n < sizeof buf && name[n - 1] == ']') {
    memcpy(buf, name + 1, n - 2);
    buf[n - 2] = 0;
    ip = buf;
  }
  unsigned char addr[16];
  if (inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1) {
    /* an IP literal: match the certificate's IP SAN, send no SNI */
    return X509_VERIFY_PARAM_set1_ip_asc(vp, ip) == 1 ? 0 : SK_ETLS;
  }
  if (SSL_set_tlsext_host_name(ssl, name) != 1) return SK_ETLS;
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, name) != 1) return SK_ETLS;
  return 0;
}

/* "what file: reason" from the last OpenSSL error. */
static int sk__tls_err(char *err, size_t errlen, const char *what, const char *file) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  if (err && errlen)
    snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
             reason ? reason : "unknown TLS error");
  ERR_clear_error();
  return SK_ETLS;
}

static int sk__check_file(char *err, size_t errlen, const char *what, const char *file) {
  if (access(file, R_OK) == 0) return 0;
  int e = errno;
  if (err && errlen) snprintf(err, errlen, "%s %s: %s", what, file, strerror(e));
  return sk_err_from_errno(e);
}

static SSL_CTX *sk__tls_build(const sk_tls_ctx_t *c, char *err, size_t errlen, int *rcp) {
  int rc = SK_ETLS;
  SSL_CTX *ctx = SSL_CTX_new(c->is_server ? TLS_server_method() : TLS_client_method());
  if (!ctx) {
    rc = sk__tls_err(err, errlen, "cannot create TLS context", NULL);
    goto fail;
  }
  if (SSL_CTX_set_min_proto_version(ctx, c->min_version) != 1 ||
      SSL_CTX_set_cipher_list(ctx, SK_TLS12_CIPHERS) != 1 ||
      SSL_CTX_set1_groups_list(ctx, SK_TLS_GROUPS) != 1) {
    rc = sk__tls_err(err, errlen, "cannot set TLS parameters", NULL);
    goto fail;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  if (c->cert_file) {
    if ((rc = sk__check_file(err, errlen, "cert_file", c->cert_file)) < 0) goto fail;
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1) {
      rc = sk__tls_err(err, errlen, "cert_file", c->cert_file);
      goto fail;
    }
    const char *kf = c->key_file ? c->key_file : c->cert_file;
    if ((rc = sk__check_file(err, errlen, "key_file", kf)) < 0) goto fail;
    if (SSL_CTX_use_PrivateKey_file(ctx, kf, SSL_FILETYPE_PEM) != 1) {
      rc = sk__tls_err(err, errlen, "key_file", kf);
      goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      if (err && errlen)
        snprintf(err, errlen, "key_file %s does not match cert_file %s", kf, c->cert_file);
      ERR_clear_error();
      rc = SK_ETLS;
      goto fail;
    }
  } else if (c->is_server) {
    if (err && errlen) snprintf(err, errlen, "a TLS server needs cert_file and key_file");
    rc = SK_EINVAL;
    goto fail;
  }

  if (c->ca_file) {
    if ((rc = sk__check_file(err, errlen, "ca_file", c->ca_file)) < 0) goto fail;
    if (SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
      rc = sk__tls_err(err, errlen, "ca_file", c->ca_file);
      goto fail;
    }
  }

  if (c->is_server) {
    int mode = SSL_VERIFY_NONE;
    if (c->verify != SK_TLS_VERIFY_NONE) {
      if (!c->ca_file) {
        if (err && errlen) snprintf(err, errlen, "client certificate verification needs ca_file");
        rc = SK_EINVAL;
        goto fail;
      }
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
      if (!names) {
        rc = sk__tls_err(err, errlen, "ca_file", c->ca_file);
        goto fail;
      }
      SSL_CTX_set_client_CA_list(ctx, names);
      mode = SSL_VERIFY_PEER;
      if (c->verify == SK_TLS_VERIFY_REQUIRE) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, sk__alpn_select, NULL);
    static const unsigned char sid[] = "skiff";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  } else {
    if (c->ca_file || c->verify != SK_TLS_VERIFY_NONE) {
      if (!c->ca_file && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        rc = sk__tls_err(err, errlen, "cannot load the system trust store", NULL);
        goto fail;
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (c->alpn.len && SSL_CTX_set_alpn_protos(ctx, c->alpn.wire, (unsigned)c->alpn.len) != 0) {
      rc = sk__tls_err(err, errlen, "cannot set ALPN", NULL);
      goto fail;
    }
  }

  if (c->alpn.len) {
    sk__tls_alpn_t *a = sk_xmalloc(sizeof *a);
    *a = c->alpn;
    if (SSL_CTX_set_ex_data(ctx, sk__ctx_alpn_idx, a) != 1) {
      free(a);
      rc = sk__tls_err(err, errlen, "cannot set ALPN", NULL);
      goto fail;
    }
  }
  *rcp = 0;
  return ctx;
fail:
  SSL_CTX_free(ctx);
  *rcp = rc;
  return NULL;
}

static void sk__tls_ctx_destroy(sk_tls_ctx_t *c) {
  if (!c) return;
  pthread_mutex_lock(&sk__tls_reg_mu);
  if (c->reg_prev || sk__tls_reg == c) {
    if (c->reg_prev) c->reg_prev->reg_next = c->reg_next;
    else sk__tls_reg = c->reg_next;
    if (c->reg_next) c->reg_next->reg_prev = c->reg_prev;
  }
  pthread_mutex_unlock(&sk__tls_reg_mu);
  SSL_CTX_free(c->ssl_ctx);
  free(c->cert_file);
  free(c->key_file);
  free(c->ca_file);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

int sk_tls_ctx_new(const sk_tls_opts_t *o, sk_tls_ctx_t **out, char *err, size_t errlen) {
  int rc = 0;
  sk_tls_ctx_t *c = NULL;
  if (err && errlen) err[0] = 0;
  if (!o || !out) return SK_EINVAL;
  *out = NULL;
  pthread_once(&sk__tls_once, sk__tls_init_once);
  c = sk_xcalloc(1, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  c->refs = 1;
  c->is_server = !!o->is_server;
  c->verify = o->verify;
  if (o->verify < SK_TLS_VERIFY_NONE || o->verify > SK_TLS_VERIFY_REQUIRE) {
    if (err && errlen) snprintf(err, errlen, "invalid verify mode %d", (int)o->verify);
    rc = SK_EINVAL;
    goto out;
  }
  if (!o->min_version || !strcmp(o->min_version, "1.2")) {
    c->min_version = TLS1_2_VERSION;
  } else if (!strcmp(o->min_version, "1.3")) {
    c->min_version = TLS1_3_VERSION;
  } else {
    if (err && errlen)
      snprintf(err, errlen, "min_version \"%s\": must be \"1.2\" or \"1.3\"", o->min_version);
    rc = SK_EINVAL;
    goto out;
  }
  if (o->cert_file) c->cert_file = sk_xstrdup(o->cert_file);
  if (o->key_file) c->key_file = sk_xstrdup(o->key_file);
  if (o->ca_file) c->ca_file = sk_xstrdup(o->ca_file);
  rc = sk__tls_alpn_wire(o->alpn, c->alpn.wire, sizeof c->alpn.wire);
  if (rc < 0) {
    if (err && errlen) snprintf(err, errlen, "invalid ALPN list \"%s\"", o->alpn);
    goto out;
  }
  c->alpn.len = (size_t)rc;
  c->ssl_ctx = sk__tls_build(c, err, errlen, &rc);
  if (!c->ssl_ctx) goto out;
  pthread_mutex_lock(&sk__tls_reg_mu);
  c->reg_next = sk__tls_reg;
  if (sk__tls_reg) sk__tls_reg->reg_prev = c;
  sk__tls_reg = c;
  pthread_mutex_unlock(&sk__tls_reg_mu);
  *out = c;
  c = NULL;
  rc = 0;
out:
  sk__tls_ctx_destroy(c);
  return rc;
}

int sk_tls_ctx_reload(sk_tls_ctx_t *c, char *err, size_t errlen) {
  int rc;
  if (err && errlen) err[0] = 0;
  if (!c) return SK_EINVAL;
  SSL_CTX *nctx = sk__tls_build(c, err, errlen, &rc);
  if (!nctx) return rc;
  pthread_mutex_lock(&c->mu);
  SSL_CTX *old = c->ssl_ctx;
  c->ssl_ctx = nctx;
  pthread_mutex_unlock(&c->mu);
  SSL_CTX_free(old); /* live connections keep their own references */
  return 0;
}

static int sk__same_file(const char *a, const char *real_b) {
  char ra[PATH_MAX];
  return a && realpath(a, ra) && !strcmp(ra, real_b);
}

int sk_tls_ctx_reload_files(const char *const *paths, size_t n, char *err, size_t errlen) {
  char real[8][PATH_MAX];
  size_t nr = 0;
  if (err && errlen) err[0] = 0;
  for (size_t i = 0; i < n && nr < 8; i++)
    if (paths[i] && realpath(paths[i], real[nr])) nr++;
  /* take references under the lock (skipping contexts being destroyed),
   * reload outside it */
  size_t cap = 16, nc = 0;
  sk_tls_ctx_t **hit = sk_xcalloc(cap, sizeof *hit);
  pthread_mutex_lock(&sk__tls_reg_mu);
  for (sk_tls_ctx_t *c = sk__tls_reg; c; c = c->reg_next) {
    int match = 0;
    for (size_t i = 0; i < nr && !match; i++)
      match = sk__same_file(c->cert_file, real[i]) || sk__same_file(c->key_file, real[i]) ||
              sk__same_file(c->ca_file, real[i]);
    if (!match) continue;
    int r = __atomic_load_n(&c->refs, __ATOMIC_ACQUIRE);
    while (r > 0 && !__atomic_compare_exchange_n(&c->refs, &r, r + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    if (r <= 0) continue;
    if (nc == cap) hit = sk_xrealloc(hit, (cap *= 2) * sizeof *hit);
    hit[nc++] = c;
  }
  pthread_mutex_unlock(&sk__tls_reg_mu);
  int rc = 0, done = 0;
  for (size_t i = 0; i < nc; i++) {
    int r = sk_tls_ctx_reload(hit[i], rc < 0 ? NULL : err, rc < 0 ? 0 : errlen);
    if (r < 0 && rc == 0) rc = r;
    if (r >= 0) done++;
    sk_tls_ctx_unref(hit[i]);
  }
  free(hit);
  return rc < 0 ? rc : done;
}

sk_tls_ctx_t *sk_tls_ctx_ref(sk_tls_ctx_t *c) {
  if (c) __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
  return c;
}

void sk_tls_ctx_unref(sk_tls_ctx_t *c) {
  if (!c) return;
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) sk__tls_ctx_destroy(c);
}

SSL_CTX *sk_tls_ctx_get_ssl_ctx(sk_tls_ctx_t *c) {
  if (!c) return NULL;
  pthread_mutex_lock(&c->mu);
  SSL_CTX *ctx = c->ssl_ctx;
  SSL_CTX_up_ref(ctx);
  pthread_mutex_unlock(&c->mu);
  return ctx;
}

int sk_tls_ctx_is_server(const sk_tls_ctx_t *c) { return c ? c->is_server : 0; }

int sk_tls_cert_spiffe_id(X509 *cert, char *out, size_t outlen) {
  int rc = SK_ENOTFOUND;
  if (!cert) return SK_EINVAL;
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  if (!names) return SK_ENOTFOUND;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const unsigned char *d = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
    int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
    if (n <= 9 || strncasecmp((const char *)d, "spiffe://", 9) != 0) continue;
    if (memchr(d, 0, (size_t)n)) continue; /* embedded NUL: not a usable ID */
    if (!out || (size_t)n + 1 > outlen) {
      rc = SK_E2BIG;
      break;
    }
    memcpy(out, d, (size_t)n);
    out[n] = 0;
    rc = n;
    break;
  }
  GENERAL_NAMES_free(names);
  return rc;
}
