/* net_int.h - internals shared by the TLS contexts (tls.c) and the
 * connections (net.c). Not a public header. */
#ifndef SKIFF_NET_INT_H
#define SKIFF_NET_INT_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "skiff/tls.h"

/* Longest ALPN list in wire format (length-prefixed names) Skiff accepts. */
#define SK__ALPN_WIRE_MAX 256

/* Encodes "h2,http/1.1" as ALPN wire format into out. Returns the length,
 * or SK_EINVAL for an empty name, a name over 255 bytes or a list over
 * cap bytes. */
int sk__tls_alpn_wire(const char *list, unsigned char *out, size_t cap);

typedef struct sk__tls_alpn {
  size_t len;
  unsigned char wire[SK__ALPN_WIRE_MAX];
} sk__tls_alpn_t;

/* Server side: a list that overrides the context's ALPN preference for
 * this one connection; a must outlive the handshake. */
void sk__tls_ssl_set_alpn(SSL *ssl, const sk__tls_alpn_t *a);

/* Client side: sets SNI (for names, not IP literals) and the name or
 * address the server certificate must match. Returns 0 or SK_ETLS. */
int sk__tls_ssl_set_peer_name(SSL *ssl, const char *name);

#endif
