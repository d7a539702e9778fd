/* skiff/tls.h - TLS contexts through OpenSSL 3.
 *
 * TLS 1.2 is the floor. A context is reference counted: connections hold a
 * reference to the SSL_CTX they started with, so sk_tls_ctx_reload() can swap
 * certificates under a running server without touching live connections. */
#ifndef SKIFF_TLS_H
#define SKIFF_TLS_H

#include <stddef.h>

typedef struct sk_tls_ctx sk_tls_ctx_t;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct x509_st X509;

typedef enum sk_tls_verify {
  SK_TLS_VERIFY_NONE = 0,     /* server: do not ask for a client certificate */
  SK_TLS_VERIFY_OPTIONAL = 1, /* server: ask; verify one if sent (mTLS optional) */
  SK_TLS_VERIFY_REQUIRE = 2,  /* server: refuse clients without a valid certificate;
                                 client: verify the server against ca_file (default
                                 when ca_file is set) */
} sk_tls_verify_t;

typedef struct sk_tls_opts {
  int is_server;
  const char *cert_file;  /* PEM certificate chain (server: required; client: for mTLS) */
  const char *key_file;   /* PEM private key */
  const char *ca_file;    /* PEM trust bundle to verify the peer */
  sk_tls_verify_t verify;
  const char *alpn;       /* comma-separated preference list, e.g. "h2,http/1.1"; NULL = none */
  const char *min_version; /* "1.2" (default) or "1.3" */
} sk_tls_opts_t;

/* On failure returns a negative code and writes a message naming the file
 * and OpenSSL's reason into err (when err != NULL). */
int sk_tls_ctx_new(const sk_tls_opts_t *o, sk_tls_ctx_t **out, char *err, size_t errlen);
/* Re-reads cert_file, key_file and ca_file. New handshakes use them; on
 * failure the old certificates stay in use and the error is returned. */
int sk_tls_ctx_reload(sk_tls_ctx_t *c, char *err, size_t errlen);
/* Reloads every live context whose cert_file, key_file or ca_file is one of
 * paths (compared after realpath; at most 8 paths). Returns how many were
 * reloaded, or the first error (the others are still reloaded). */
int sk_tls_ctx_reload_files(const char *const *paths, size_t n, char *err, size_t errlen);
sk_tls_ctx_t *sk_tls_ctx_ref(sk_tls_ctx_t *c);
void sk_tls_ctx_unref(sk_tls_ctx_t *c); /* accepts NULL */
/* The current SSL_CTX with a reference the caller must SSL_CTX_free(). */
SSL_CTX *sk_tls_ctx_get_ssl_ctx(sk_tls_ctx_t *c);
int sk_tls_ctx_is_server(const sk_tls_ctx_t *c);

/* Copies the first "spiffe://" URI SAN of cert into out. Returns its length,
 * SK_ENOTFOUND when there is none, SK_E2BIG when out is too small. */
int sk_tls_cert_spiffe_id(X509 *cert, char *out, size_t outlen);

#endif
