/* h1_int.h - the HTTP/1.x codec: a strict, incremental, allocation-free
 * parser for request and response heads, the chunked transfer coding both
 * ways, and the framing rules of RFC 9112 section 6. Pure: no I/O, no
 * allocation (but for the head writer's rare heap spill), so it is easy to
 * fuzz. Used by h1_server.c and h1_client.c.
 * Not a public header. */
#ifndef SKIFF_H1_INT_H
#define SKIFF_H1_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A header field as it appears in the head (not NUL-terminated). Values
 * are trimmed of leading and trailing whitespace; name case is preserved. */
typedef struct sk__h1_field {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} sk__h1_field_t;

/* How the message body is delimited. */
enum sk__h1_body {
  SK__H1_BODY_NONE = 0,    /* no body */
  SK__H1_BODY_LENGTH = 1,  /* content_length bytes */
  SK__H1_BODY_CHUNKED = 2, /* chunked transfer coding */
  SK__H1_BODY_CLOSE = 3,   /* responses only: until the connection closes */
};

typedef struct sk__h1_head {
  /* request line */
  const char *method;
  size_t method_len;
  const char *target;
  size_t target_len;
  /* status line */
  int status;
  const char *reason;
  size_t reason_len;
  int version;               /* 10 or 11 */
  sk__h1_field_t *fields;    /* the parser's array */
  size_t nfields;
  int body;                  /* enum sk__h1_body */
  uint64_t content_length;   /* with SK__H1_BODY_LENGTH */
  int keep_alive;            /* connection persists after this message */
  int expect_continue;       /* request: "Expect: 100-continue" on HTTP/1.1 */
  size_t head_len;           /* bytes of the head, final empty line included */
} sk__h1_head_t;

typedef struct sk__h1_parser {
  size_t max_head_bytes;   /* start line + fields + empty line */
  size_t max_fields;       /* more fields -> 431 */
  sk__h1_field_t *fields;  /* caller's array of max_fields entries */
  size_t scan;             /* bytes already searched for the end of the head */
  int status;              /* after an error: the status to answer with */
  const char *error;       /* after an error: what was wrong (static text) */
} sk__h1_parser_t;

/* fields must have room for max_fields entries. max_head_bytes is capped
 * at 1 MiB. */
void sk__h1_parser_init(sk__h1_parser_t *p, size_t max_head_bytes, size_t max_fields,
                        sk__h1_field_t *fields);
/* Forget the scan position (call before parsing the next message). */
void sk__h1_parser_reset(sk__h1_parser_t *p);

/* Parse a request head from buf[0..len) (everything received so far; the
 * same prefix is passed again with more bytes appended). Returns the head
 * length (> 0) when complete, 0 when more bytes are needed, SK_EHTTP when
 * the head is invalid: p->status is then 400, 431, 501 or 505 and p->error
 * says why. Up to a few empty lines before the request line are skipped
 * and counted in the head length. */
int sk__h1_parse_request(sk__h1_parser_t *p, const char *buf, size_t len, sk__h1_head_t *h);
/* Same for a response head. head_request: the request was HEAD (no body
 * whatever the headers say). 1xx responses are returned like any other;
 * the caller skips them. Errors set p->error; p->status is 502. */
int sk__h1_parse_response(sk__h1_parser_t *p, const char *buf, size_t len, int head_request,
                          sk__h1_head_t *h);

/* First field named name (case-insensitive), or NULL. */
const sk__h1_field_t *sk__h1_find(const sk__h1_head_t *h, const char *name);

/* 1 when the list-valued header value (e.g. Connection) contains token,
 * compared case-insensitively. */
int sk__h1_list_has(const char *v, size_t n, const char *token);

/* Validity of field names and values one produces (NUL-terminated). */
int sk__h1_valid_name(const char *s);
int sk__h1_valid_value(const char *s);
int sk__h1_is_tchar(unsigned char c);

/* Character classes of RFC 9110 5.1 and 5.5, one table lookup each. */
#define SK__H1_C_TCHAR 1u /* token character */
#define SK__H1_C_VALUE 2u /* field-vchar, SP, HTAB, obs-text */
extern const unsigned char sk__h1_ctype[256];
/* Length of a valid field name / value (NUL-terminated), or -1 when it
 * holds a character that may not be sent (a name must not be empty). The
 * check and the length in one pass, for writers that need both. */
long sk__h1_name_len(const char *s);
long sk__h1_value_len(const char *s);

/* ASCII lower case. */
static inline unsigned char sk__h1_lc(unsigned char c) {
  return (unsigned char)((unsigned)c - 'A' < 26u ? c | 0x20 : c);
}
/* s[0..n) equals the lower-case literal lit of length n, ignoring case. */
static inline int sk__h1_ieq_lit(const char *s, const char *lit, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (sk__h1_lc((unsigned char)s[i]) != (unsigned char)lit[i]) return 0;
  return 1;
}

/* ---- writing heads ----
 * Heads are assembled with memcpy into a buffer on the caller's stack,
 * moving to the heap only when a head outgrows it, and handed to the
 * connection in one write. */
typedef struct sk__h1_out {
  char *d;
  size_t len, cap;
  int heap; /* d is malloc'ed */
} sk__h1_out_t;

static inline void sk__h1_out_init(sk__h1_out_t *o, char *buf, size_t cap) {
  o->d = buf;
  o->len = 0;
  o->cap = cap;
  o->heap = 0;
}
void sk__h1_out_grow(sk__h1_out_t *o, size_t n); /* room for n more bytes */
void sk__h1_out_done(sk__h1_out_t *o);
static inline void sk__h1_out_add(sk__h1_out_t *o, const void *s, size_t n) {
  if (o->cap - o->len < n) sk__h1_out_grow(o, n);
  memcpy(o->d + o->len, s, n);
  o->len += n;
}
#define SK__H1_OUT_LIT(o, lit) sk__h1_out_add((o), (lit), sizeof(lit) - 1)
/* "name: value\r\n" */
static inline void sk__h1_out_field(sk__h1_out_t *o, const char *name, size_t nl, const char *value,
                                    size_t vl) {
  if (o->cap - o->len < nl + vl + 4) sk__h1_out_grow(o, nl + vl + 4);
  char *p = o->d + o->len;
  memcpy(p, name, nl);
  p += nl;
  *p++ = ':';
  *p++ = ' ';
  memcpy(p, value, vl);
  p += vl;
  *p++ = '\r';
  *p++ = '\n';
  o->len = (size_t)(p - o->d);
}
/* Decimal digits of v into out (no NUL); returns how many. */
size_t sk__h1_u64(char out[20], uint64_t v);

/* ---- chunked transfer coding ---- */

#define SK__H1_CHUNK_LINE_MAX 4096  /* chunk-size line incl. extensions */
#define SK__H1_TRAILER_MAX 16384    /* trailer section */

typedef struct sk__h1_chunked {
  int state;
  uint64_t size;       /* chunk size being read, then bytes left in the chunk */
  size_t line;         /* bytes in the current size line */
  size_t trailer;      /* bytes of trailer section so far */
  uint64_t total;      /* data bytes decoded so far */
  const char *error;   /* after an error */
} sk__h1_chunked_t;

void sk__h1_chunked_init(sk__h1_chunked_t *c);
/* Decodes from in[0..len). Stops after one data slice (*data and *dlen point
 * into in; *dlen == 0 when none), at the end of the message or of the
 * input. *used says how many bytes were consumed. Returns 1 when the
 * message (last chunk and trailers) is complete, 0 otherwise, SK_EHTTP on
 * malformed input (c->error; answer 400). Trailer fields are checked and
 * dropped. */
int sk__h1_chunked_decode(sk__h1_chunked_t *c, const uint8_t *in, size_t len, size_t *used,
                          const uint8_t **data, size_t *dlen);

/* Encoder: writes the chunk-size line for a chunk of n bytes (n > 0) into
 * out, returns its length. The chunk's data follows, then SK__H1_CRLF. */
size_t sk__h1_chunk_head(char out[24], size_t n);
#define SK__H1_CRLF "\r\n"
#define SK__H1_LAST_CHUNK "0\r\n\r\n"

/* ---- HTTP/1.1 client connections (h1_client.c, used by http_client.c) ---- */

struct sk_conn;
struct sk_http_client;
struct sk__http_creq;
typedef struct sk__h1_client sk__h1_client_t;

/* Takes over an established connection. on_idle runs when the connection
 * can carry a request (after a keep-alive exchange; not on creation);
 * on_gone runs once when it closed (a request in flight was completed with
 * an error before). Idle connections close after the client's idle
 * timeout. */
sk__h1_client_t *sk__h1_client_new(struct sk_conn *c, struct sk_http_client *cl,
                                   void (*on_idle)(sk__h1_client_t *h, void *ud),
                                   void (*on_gone)(sk__h1_client_t *h, void *ud), void *ud);
/* Sends one request; the connection must be idle. */
int sk__h1_client_submit(sk__h1_client_t *h, struct sk__http_creq *r);
/* Fails the request in flight with SK_ECANCELED and closes. */
void sk__h1_client_close(sk__h1_client_t *h);
/* Puts a request that was sent on a stale pooled connection (closed by
 * the server before any byte of a response) back at the head of the
 * client's queue (http_client.c). */
void sk__http_client_requeue(struct sk_http_client *cl, struct sk__http_creq *r);
/* Pooled idle connection lifetime (http_client.c). */
uint64_t sk__http_client_idle_ms(const struct sk_http_client *cl);

#endif
