/* Unit tests: the HTTP/1.x codec (heads, framing, smuggling rejections,
 * limits, chunked coding). */
#include "sk_test.h"

#include <stdio.h>
#include <string.h>

#include "h1_int.h"
#include "skiff/err.h"
#include "skiff/http.h"

static sk__h1_field_t g_fields[16];
static sk__h1_parser_t g_p;
static sk__h1_head_t g_h;

/* Parses a whole request; returns the parse result, fills g_p/g_h. */
static int req(const char *s) {
  sk__h1_parser_init(&g_p, 1024, 16, g_fields);
  return sk__h1_parse_request(&g_p, s, strlen(s), &g_h);
}

/* Parses one byte at a time (the incremental path) and checks it agrees. */
static int req_bytewise(const char *s) {
  size_t n = strlen(s);
  sk__h1_parser_init(&g_p, 1024, 16, g_fields);
  for (size_t i = 1; i <= n; i++) {
    int r = sk__h1_parse_request(&g_p, s, i, &g_h);
    if (r != 0) return r;
  }
  return 0;
}

static int resp(const char *s, int head) {
  sk__h1_parser_init(&g_p, 1024, 16, g_fields);
  return sk__h1_parse_response(&g_p, s, strlen(s), head, &g_h);
}

#define REJECT(s, st) reject_(s, st, __LINE__)
static void reject_(const char *s, int status, int line) {
  int r = req(s);
  if (r != SK_EHTTP || g_p.status != status) {
    print_error("line %d: expected %d, got r=%d status=%d (%s)\n", line, status, r, g_p.status,
                g_p.error ? g_p.error : "-");
    fail();
  }
  assert_non_null(g_p.error);
  /* same answer when the bytes arrive one by one */
  r = req_bytewise(s);
  assert_int_equal(r, SK_EHTTP);
  assert_int_equal(g_p.status, status);
}

static int field_is(size_t i, const char *name, const char *value) {
  return g_h.fields[i].name_len == strlen(name) && memcmp(g_h.fields[i].name, name, strlen(name)) == 0 &&
         g_h.fields[i].value_len == strlen(value) &&
         memcmp(g_h.fields[i].value, value, strlen(value)) == 0;
}

static void test_simple_get(void **state) {
  const char *s = "GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nX-Mixed-Case:  v  \r\n\r\nrest";
  int r = req(s);
  assert_int_equal(r, (int)(strlen(s) - 4));
  assert_int_equal(g_h.method_len, 3);
  assert_memory_equal(g_h.method, "GET", 3);
  assert_int_equal(g_h.target_len, 8);
  assert_memory_equal(g_h.target, "/a/b?x=1", 8);
  assert_int_equal(g_h.version, 11);
  assert_int_equal(g_h.nfields, 2);
  assert_true(field_is(0, "Host", "example"));
  assert_true(field_is(1, "X-Mixed-Case", "v"));
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(g_h.keep_alive);
  assert_false(g_h.expect_continue);
  assert_non_null(sk__h1_find(&g_h, "x-mixed-case"));
  assert_null(sk__h1_find(&g_h, "x-other"));
  assert_int_equal(req_bytewise(s), r);
}

static void test_incomplete(void **state) {
  const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r";
  assert_int_equal(req(s), 0);
  assert_int_equal(req(""), 0);
  assert_int_equal(req("\r\n"), 0);
  assert_int_equal(req("\r"), 0);
  assert_int_equal(req("GET / HTTP/1.1\r"), 0);
}

static void test_versions_keepalive(void **state) {
  assert_true(req("GET / HTTP/1.0\r\n\r\n") > 0);
  assert_int_equal(g_h.version, 10);
  assert_false(g_h.keep_alive);
  assert_true(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
  assert_true(g_h.keep_alive);
  assert_true(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n") > 0);
  assert_false(g_h.keep_alive);
  assert_true(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: CLOSE\r\n\r\n") > 0);
  assert_false(g_h.keep_alive);
  assert_true(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n") > 0);
  assert_true(g_h.keep_alive);
  assert_true(req("GET / HTTP/1.2\r\nHost: a\r\n\r\n") > 0); /* higher minor -> 1.1 */
  assert_int_equal(g_h.version, 11);
  REJECT("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
  REJECT("GET / HTTP/0.9\r\n\r\n", 505);
  REJECT("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
  REJECT("GET / HTTP/11\r\nHost: a\r\n\r\n", 400);
  REJECT("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET /\r\nHost: a\r\n\r\n", 400);
}

static void test_request_line(void **state) {
  REJECT("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  assert_true(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
  assert_true(req("CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n") > 0);
  assert_true(req("GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n") > 0);
  /* leading empty lines are tolerated, a few of them */
  const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  assert_int_equal(req(s), (int)strlen(s));
  assert_memory_equal(g_h.method, "GET", 3);
  REJECT("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_bare_cr_lf_nul(void **state) {
  REJECT("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\n\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400);
  REJECT("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  REJECT("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  /* NUL: built by hand since strlen stops at it */
  const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
  sk__h1_parser_init(&g_p, 1024, 16, g_fields);
  assert_int_equal(sk__h1_parse_request(&g_p, s, sizeof s - 1, &g_h), SK_EHTTP);
  assert_int_equal(g_p.status, 400);
  assert_non_null(strstr(g_p.error, "NUL"));
}

static void test_field_syntax(void **state) {
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", 400);
  assert_true(req("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \t ok\r\nEmpty:\r\n\r\n") > 0);
  assert_true(field_is(1, "X", "caf\xc3\xa9 \t ok"));
  assert_true(field_is(2, "Empty", ""));
  /* the message for whitespace before the colon says so */
  assert_int_equal(req("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), SK_EHTTP);
  assert_non_null(strstr(g_p.error, "whitespace"));
}

static void test_host(void **state) {
  REJECT("GET / HTTP/1.1\r\n\r\n", 400);
  REJECT("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
  assert_true(req("GET / HTTP/1.0\r\n\r\n") > 0);
}

static void test_content_length(void **state) {
  assert_true(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n") > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_LENGTH);
  assert_int_equal(g_h.content_length, 42);
  assert_true(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n") > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(req("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 007\r\n\r\n") > 0);
  assert_int_equal(g_h.content_length, 7);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400);
}

static void test_transfer_encoding(void **state) {
  assert_true(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_CHUNKED);
  assert_true(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n") > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_CHUNKED);
  /* the smuggling classics */
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400);
  assert_int_equal(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
                   SK_EHTTP);
  assert_string_equal(g_p.error, "both Content-Length and Transfer-Encoding");
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", 501);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0b" "chunked\r\n\r\n", 400);
  REJECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n chunked\r\n\r\n", 400);
  REJECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

static void test_expect(void **state) {
  assert_true(req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n") > 0);
  assert_true(g_h.expect_continue);
  assert_true(req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n") > 0);
  assert_false(g_h.expect_continue);
  assert_true(req("PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n") > 0);
  assert_false(g_h.expect_continue);
}

static void test_limits(void **state) {
  char big[2048];
  memset(big, 'a', sizeof big);
  memcpy(big, "GET /", 5);
  big[sizeof big - 1] = 0;
  REJECT(big, 431); /* no end of head within 1024 bytes */
  char s[1200];
  snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: a\r\nX: %.*s\r\n\r\n", 1000, big + 5);
  REJECT(s, 431);
  /* exactly at the limit is fine */
  sk__h1_parser_init(&g_p, 32, 16, g_fields);
  const char *e = "GET / HTTP/1.1\r\nHost: abcdefghi\r\n\r\n"; /* 35 bytes */
  assert_int_equal(strlen(e), 35);
  assert_int_equal(sk__h1_parse_request(&g_p, e, strlen(e), &g_h), SK_EHTTP);
  assert_int_equal(g_p.status, 431);
  sk__h1_parser_init(&g_p, 35, 16, g_fields);
  assert_int_equal(sk__h1_parse_request(&g_p, e, strlen(e), &g_h), 35);
  /* header count */
  char many[1024] = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 16; i++) snprintf(many + strlen(many), sizeof many - strlen(many), "X%d: y\r\n", i);
  strcat(many, "\r\n");
  REJECT(many, 431);
  assert_non_null(strstr(g_p.error, "too many"));
}

static void test_pipelined(void **state) {
  const char *s = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                  "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  size_t off = 0, n = strlen(s);
  int r = req(s);
  assert_true(r > 0);
  assert_memory_equal(g_h.target, "/1", 2);
  off += (size_t)r;
  sk__h1_parser_reset(&g_p);
  r = sk__h1_parse_request(&g_p, s + off, n - off, &g_h);
  assert_true(r > 0);
  assert_memory_equal(g_h.target, "/2", 2);
  assert_int_equal(g_h.content_length, 3);
  off += (size_t)r + 3;
  sk__h1_parser_reset(&g_p);
  r = sk__h1_parse_request(&g_p, s + off, n - off, &g_h);
  assert_int_equal(off + (size_t)r, n);
  assert_memory_equal(g_h.target, "/3", 2);
  assert_false(g_h.keep_alive);
}

static void test_response(void **state) {
  const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: Yes\r\n\r\nhello";
  assert_int_equal(resp(s, 0), (int)strlen(s) - 5);
  assert_int_equal(g_h.status, 200);
  assert_int_equal(g_h.reason_len, 2);
  assert_int_equal(g_h.body, SK__H1_BODY_LENGTH);
  assert_int_equal(g_h.content_length, 5);
  assert_true(g_h.keep_alive);
  assert_true(resp(s, 1) > 0); /* HEAD */
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(g_h.keep_alive);
  assert_true(resp("HTTP/1.1 204\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.status, 204);
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(g_h.keep_alive);
  assert_true(resp("HTTP/1.1 100 Continue\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.status, 100);
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_CHUNKED);
  assert_true(resp("HTTP/1.1 200 OK\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_CLOSE);
  assert_false(g_h.keep_alive);
  assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.body, SK__H1_BODY_CLOSE);
  assert_true(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0) > 0);
  assert_int_equal(g_h.version, 10);
  assert_false(g_h.keep_alive);
  assert_true(resp("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 0) > 0);
  assert_false(g_h.keep_alive);
  assert_int_equal(g_h.body, SK__H1_BODY_NONE);
  assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/1.1 20 OK\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/1.1 2000 OK\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/2 200 OK\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(g_p.status, 502);
  assert_int_equal(resp("HTTP/1.1 200 OK\nX: y\r\n\r\n", 0), SK_EHTTP);
  assert_int_equal(resp("HTTP/1.1 200 OK\r\n", 0), 0);
}

/* Decodes all of s in pieces of `step` bytes; returns 1 when complete,
 * writes the data to out. */
static int dechunk(const char *s, size_t n, size_t step, char *out, size_t *outlen, sk__h1_chunked_t *c) {
  sk__h1_chunked_init(c);
  size_t off = 0, have = 0;
  *outlen = 0;
  int r = 0;
  while (have < n || off < have) {
    if (off == have) have = have + step > n ? n : have + step;
    size_t used;
    const uint8_t *d;
    size_t dl;
    r = sk__h1_chunked_decode(c, (const uint8_t *)s + off, have - off, &used, &d, &dl);
    if (r < 0) return r;
    if (dl) memcpy(out + *outlen, d, dl);
    *outlen += dl;
    off += used;
    if (r == 1) break;
    if (used == 0 && off == have && have == n) break;
  }
  *outlen += 0;
  return r == 1 && off == n ? 1 : r;
}

static void test_chunked(void **state) {
  const char *s = "5\r\nhello\r\n1;ext=val; other\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
  char out[128];
  size_t ol;
  sk__h1_chunked_t c;
  for (size_t step = 1; step <= strlen(s); step++) {
    assert_int_equal(dechunk(s, strlen(s), step, out, &ol, &c), 1);
    assert_int_equal(ol, 16);
    assert_memory_equal(out, "hello 0123456789", 16);
    assert_int_equal(c.total, 16);
  }
  assert_int_equal(dechunk("0\r\n\r\n", 5, 5, out, &ol, &c), 1);
  assert_int_equal(ol, 0);
  { /* stops before the next request */
    size_t used, dl;
    const uint8_t *d;
    sk__h1_chunked_init(&c);
    assert_int_equal(sk__h1_chunked_decode(&c, (const uint8_t *)"0\r\n\r\nGET", 8, &used, &d, &dl), 1);
    assert_int_equal(used, 5);
  }
  assert_int_equal(dechunk("00000003\r\nabc\r\n0 ;x\r\n\r\n", 24, 3, out, &ol, &c), 1);
  assert_int_equal(ol, 3);
  /* incomplete */
  assert_int_equal(dechunk("5\r\nhel", 6, 6, out, &ol, &c), 0);
  /* errors */
  const char *bad[] = {
      "\r\n",                        /* empty size */
      "x\r\n",                       /* not hex */
      "5\nhello\r\n0\r\n\r\n",       /* bare LF */
      "5\r\nhelloX\r\n0\r\n\r\n",    /* data longer than size */
      "5\r\nhello\n0\r\n\r\n",       /* bare LF after data */
      "5 \r\nhello\r\n0\r\n\r\n",    /* whitespace without extension */
      "-5\r\nhello\r\n",             /* sign */
      "0x5\r\nhello\r\n",            /* 0x prefix */
      "fffffffffffffffff\r\n",       /* overflow (17 digits) */
      "10000000000000000\r\n",       /* 2^64 */
      "1;a\x01\r\nx\r\n0\r\n\r\n",   /* control char in extension */
      "0\r\n folded: x\r\n\r\n",     /* obs-fold in trailer */
      "0\r\nX: y\rZ\r\n\r\n",         /* bare CR in trailer */
      "0\r\n\rX",                    /* bare CR at the end */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int r = dechunk(bad[i], strlen(bad[i]), 1, out, &ol, &c);
    if (r != SK_EHTTP) {
      print_error("bad chunked input %zu accepted (r=%d)\n", i, r);
      fail();
    }
    assert_non_null(c.error);
  }
  /* bounded extensions and trailers */
  static char huge[SK__H1_TRAILER_MAX + 64];
  memset(huge, 'a', sizeof huge);
  memcpy(huge, "1;", 2);
  assert_int_equal(dechunk(huge, SK__H1_CHUNK_LINE_MAX + 10, 4096, out, &ol, &c), SK_EHTTP);
  memcpy(huge, "0\r\nX: ", 6);
  assert_int_equal(dechunk(huge, sizeof huge, 4096, out, &ol, &c), SK_EHTTP);
  assert_non_null(strstr(c.error, "trailer"));
}

static void test_chunk_encoder(void **state) {
  char b[24];
  assert_int_equal(sk__h1_chunk_head(b, 1), 3);
  assert_string_equal(b, "1\r\n");
  assert_int_equal(sk__h1_chunk_head(b, 255), 4);
  assert_string_equal(b, "ff\r\n");
  sk__h1_chunk_head(b, (size_t)1 << 40);
  assert_string_equal(b, "10000000000\r\n");
  /* round trip */
  char enc[64];
  size_t n = sk__h1_chunk_head(enc, 3);
  memcpy(enc + n, "abc" SK__H1_CRLF SK__H1_LAST_CHUNK, 3 + 2 + 5);
  n += 10;
  char out[8];
  size_t ol;
  sk__h1_chunked_t c;
  assert_int_equal(dechunk(enc, n, n, out, &ol, &c), 1);
  assert_int_equal(ol, 3);
}

static void test_list_and_validity(void **state) {
  assert_true(sk__h1_list_has("a, , Close ,b", 13, "close"));
  assert_false(sk__h1_list_has("closed", 6, "close"));
  assert_true(sk__h1_valid_name("X-Mixed-Case"));
  assert_false(sk__h1_valid_name("X Y"));
  assert_false(sk__h1_valid_name(""));
  assert_true(sk__h1_valid_value("a b\tc"));
  assert_false(sk__h1_valid_value("a\r\nSet-Cookie: x"));
}

/* The writers' checks: every character class, at every position of a
 * value (values are checked eight bytes at a time, the last word
 * overlapping), and the head writer spilling past its stack buffer. */
static void test_writer_checks(void **state) {
  (void)state;
  assert_int_equal(sk__h1_name_len("content-length"), 14);
  assert_int_equal(sk__h1_name_len("!#$%&'*+-.^_`|~09azAZ"), 21);
  assert_int_equal(sk__h1_name_len(""), -1);
  assert_int_equal(sk__h1_name_len("a:b"), -1);
  assert_int_equal(sk__h1_name_len("\x80"), -1);
  assert_int_equal(sk__h1_value_len(""), 0);
  assert_int_equal(sk__h1_value_len("obs-text \x80\xff and\ttab"), 19);
  char v[40];
  for (size_t n = 1; n < sizeof v; n++) {
    for (size_t at = 0; at < n; at++) {
      static const char bad[] = {'\r', '\n', 0x01, 0x1f, 0x7f};
      for (size_t k = 0; k < sizeof bad; k++) {
        memset(v, 'a', n);
        v[n] = 0;
        v[at] = bad[k];
        assert_int_equal(sk__h1_value_len(v), -1);
      }
      memset(v, 'a', n);
      v[at] = '\t';
      assert_int_equal(sk__h1_value_len(v), (long)n);
      v[at] = (char)0xa0;
      assert_int_equal(sk__h1_value_len(v), (long)n);
    }
  }
  char stack[8];
  sk__h1_out_t o;
  sk__h1_out_init(&o, stack, sizeof stack);
  SK__H1_OUT_LIT(&o, "HTTP/1.1 ");
  sk__h1_out_field(&o, "x", 1, "yz", 2);
  char num[20];
  sk__h1_out_add(&o, num, sk__h1_u64(num, 18446744073709551615ull));
  sk__h1_out_add(&o, num, sk__h1_u64(num, 0));
  assert_int_equal(o.len, 9 + 7 + 20 + 1);
  assert_memory_equal(o.d, "HTTP/1.1 x: yz\r\n184467440737095516150", o.len);
  sk__h1_out_done(&o);
}

/* sk_http_url_parse: the URL form every client of the runtime shares. */
static void test_url_parse(void **state) {
  (void)state;
  sk_http_url_t u;
  assert_int_equal(sk_http_url_parse("http://a:1/x?y", &u), 0);
  assert_int_equal(u.tls, 0);
  assert_string_equal(u.host, "a");
  assert_int_equal(u.port, 1);
  assert_string_equal(u.path, "/x?y");
  assert_int_equal(sk_http_url_parse("HTTPS://h", &u), 0);
  assert_int_equal(u.tls, 1);
  assert_int_equal(u.port, 0); /* none given: the caller's default */
  assert_string_equal(u.path, "/");
  assert_int_equal(sk_http_url_parse("http://[::1]:9/", &u), 0);
  assert_string_equal(u.host, "::1");
  assert_int_equal(u.port, 9);
  assert_int_equal(sk_http_url_parse("http://[::1]/p", &u), 0);
  assert_int_equal(u.port, 0);
  assert_int_equal(sk_http_url_parse("ftp://x", &u), SK_EINVAL);
  assert_int_equal(sk_http_url_parse("http://h:0", &u), SK_EINVAL);
  assert_int_equal(sk_http_url_parse("http://h:99999/", &u), SK_EINVAL);
  assert_int_equal(sk_http_url_parse("http:///p", &u), SK_EINVAL);
  assert_int_equal(sk_http_url_parse("http://[::1/", &u), SK_EINVAL);
  assert_int_equal(sk_http_url_parse("http://h:8x/", &u), SK_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_get), cmocka_unit_test(test_url_parse),     cmocka_unit_test(test_incomplete),
      cmocka_unit_test(test_versions_keepalive), cmocka_unit_test(test_request_line),
      cmocka_unit_test(test_bare_cr_lf_nul), cmocka_unit_test(test_field_syntax),
      cmocka_unit_test(test_host),           cmocka_unit_test(test_content_length),
      cmocka_unit_test(test_transfer_encoding), cmocka_unit_test(test_expect),
      cmocka_unit_test(test_limits),         cmocka_unit_test(test_pipelined),
      cmocka_unit_test(test_response),       cmocka_unit_test(test_chunked),
      cmocka_unit_test(test_chunk_encoder),  cmocka_unit_test(test_list_and_validity),
      cmocka_unit_test(test_writer_checks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
