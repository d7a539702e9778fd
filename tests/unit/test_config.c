/* test_config.c - schema-driven YAML config: every type, every error kind,
 * positions, env substitution, bounds, --check, docs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sk_test.h"
#include "skiff/config.h"
#include "skiff/err.h"

typedef struct t_backend {
  char *name;
  sk_cfg_addr_t addr;
  int weight;
} t_backend_t;

typedef struct t_tls {
  bool enabled;
  char *cert;
} t_tls_t;

typedef struct t_cfg {
  bool flag;
  int workers;
  uint64_t big;
  double ratio;
  char *name;
  uint64_t timeout_ms;
  uint64_t buf;
  int mode;
  sk_cfg_strlist_t tags;
  sk_cfg_addr_t listen;
  t_tls_t tls;
  sk_cfg_list_t backends;
  int even;
} t_cfg_t;

static const char *const modes[] = {"fast", "safe", "paranoid", NULL};

static int validate_even(const void *field, char *msg, size_t msglen) {
  if (*(const int *)field % 2) {
    snprintf(msg, msglen, "must be even");
    return SK_EINVAL;
  }
  return 0;
}

static int check_tls(const void *sec, char *msg, size_t msglen) {
  const t_tls_t *t = sec;
  if (t->enabled && (!t->cert || !t->cert[0])) {
    snprintf(msg, msglen, "cert is required when enabled");
    return SK_EINVAL;
  }
  return 0;
}

static const sk_config_entry_t tls_entries[] = {
    SK_CFG_BOOL_E("enabled", "false", t_tls_t, enabled, "use TLS"),
    SK_CFG_STRING_E("cert", "", t_tls_t, cert, "certificate file"),
    SK_CFG_END_E};
static const sk_config_schema_t tls_schema = {
    .name = "tls", .size = sizeof(t_tls_t), .entries = tls_entries, .check = check_tls};

static const sk_config_entry_t backend_entries[] = {
    {.key = "name", .type = SK_CFG_STRING, .offset = offsetof(t_backend_t, name), .help = "name",
     .flags = SK_CFG_REQUIRED},
    SK_CFG_ADDR_E("addr", "127.0.0.1:80", t_backend_t, addr, "address"),
    SK_CFG_INT_E("weight", "1", 1, 100, t_backend_t, weight, "weight"),
    SK_CFG_END_E};
static const sk_config_schema_t backend_schema = SK_CFG_SCHEMA("backend", t_backend_t, backend_entries);

static const sk_config_entry_t entries[] = {
    SK_CFG_BOOL_E("flag", "false", t_cfg_t, flag, "a flag"),
    SK_CFG_INT_E("workers", "4", 1, 64, t_cfg_t, workers, "workers"),
    SK_CFG_UINT64_E("big", "0", t_cfg_t, big, "big number"),
    SK_CFG_DOUBLE_E("ratio", "0.25", t_cfg_t, ratio, "ratio"),
    SK_CFG_STRING_E("name", "default-name", t_cfg_t, name, "name"),
    SK_CFG_DURATION_E("timeout", "10s", t_cfg_t, timeout_ms, "timeout"),
    SK_CFG_SIZE_E("buffer", "16KiB", t_cfg_t, buf, "buffer"),
    SK_CFG_ENUM_E("mode", "safe", modes, t_cfg_t, mode, "mode"),
    SK_CFG_STRLIST_E("tags", "a,b", t_cfg_t, tags, "tags"),
    SK_CFG_ADDR_E("listen", ":8080", t_cfg_t, listen, "listen address"),
    SK_CFG_SECTION_E("tls", &tls_schema, t_cfg_t, tls, "tls settings"),
    SK_CFG_LIST_E("backends", 3, &backend_schema, t_cfg_t, backends, "backends"),
    {.key = "even", .type = SK_CFG_INT, .def = "2", .offset = offsetof(t_cfg_t, even), .validate = validate_even,
     .help = "an even number"},
    SK_CFG_END_E};
static const sk_config_schema_t schema = SK_CFG_SCHEMA("test", t_cfg_t, entries);

/* Loads text; returns the rc and fills errs (caller frees both). */
static int load(const char *text, t_cfg_t *c, sk_config_errors_t *errs) {
  sk_config_errors_init(errs);
  return sk_config_load_string(&schema, c, "t.yaml", text, strlen(text), NULL, errs);
}

/* All errors joined with newlines. */
static char *all_errors(const sk_config_errors_t *e) {
  static char out[16384];
  out[0] = 0;
  size_t off = 0;
  for (size_t i = 0; i < e->n && off < sizeof out - 600; i++) {
    char line[600];
    sk_config_errors_format(e, i, line, sizeof line);
    off += (size_t)snprintf(out + off, sizeof out - off, "%s\n", line);
  }
  return out;
}

#define assert_has(hay, needle)                                                                                 \
  do {                                                                                                          \
    if (!strstr((hay), (needle))) fail_msg("missing '%s' in:\n%s", (needle), (hay));                           \
  } while (0)

static void test_defaults(void **state) {
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load("", &c, &e), 0);
  assert_int_equal(e.n, 0);
  assert_false(c.flag);
  assert_int_equal(c.workers, 4);
  assert_string_equal(c.name, "default-name");
  assert_int_equal(c.timeout_ms, 10000);
  assert_int_equal(c.buf, 16384);
  assert_int_equal(c.mode, 1);
  assert_int_equal(c.tags.n, 2);
  assert_string_equal(c.tags.v[1], "b");
  assert_string_equal(c.listen.host, "0.0.0.0");
  assert_int_equal(c.listen.port, 8080);
  assert_true(c.ratio == 0.25);
  assert_int_equal(c.backends.n, 0);
  assert_int_equal(c.even, 2);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_every_type(void **state) {
  const char *y = "flag: yes\n"
                  "workers: 16\n"
                  "big: 18446744073709551615\n"
                  "ratio: 1.5e-3\n"
                  "name: \"quoted: value\"\n"
                  "timeout: 1h30m\n"
                  "buffer: 1MiB\n"
                  "mode: paranoid\n"
                  "tags: [x, y, z]\n"
                  "listen: \"[::1]:9000\"\n"
                  "tls:\n"
                  "  enabled: true\n"
                  "  cert: /etc/c.pem\n"
                  "backends:\n"
                  "  - name: one\n"
                  "    addr: 10.0.0.1:81\n"
                  "  - name: two\n"
                  "    weight: 50\n"
                  "even: 8\n";
  t_cfg_t c;
  sk_config_errors_t e;
  int rc = load(y, &c, &e);
  if (rc) fail_msg("%s", all_errors(&e));
  assert_true(c.flag);
  assert_int_equal(c.workers, 16);
  assert_true(c.big == UINT64_MAX);
  assert_true(c.ratio > 0.0014 && c.ratio < 0.0016);
  assert_string_equal(c.name, "quoted: value");
  assert_int_equal(c.timeout_ms, 5400000);
  assert_int_equal(c.buf, 1 << 20);
  assert_int_equal(c.mode, 2);
  assert_int_equal(c.tags.n, 3);
  assert_string_equal(c.tags.v[0], "x");
  assert_string_equal(c.tags.v[2], "z");
  assert_string_equal(c.listen.host, "::1");
  assert_int_equal(c.listen.port, 9000);
  assert_true(c.tls.enabled);
  assert_string_equal(c.tls.cert, "/etc/c.pem");
  assert_int_equal(c.backends.n, 2);
  t_backend_t *b0 = SK_CFG_LIST_AT(c.backends, t_backend_t, 0), *b1 = SK_CFG_LIST_AT(c.backends, t_backend_t, 1);
  assert_string_equal(b0->name, "one");
  assert_string_equal(b0->addr.host, "10.0.0.1");
  assert_int_equal(b0->addr.port, 81);
  assert_int_equal(b0->weight, 1);
  assert_string_equal(b1->name, "two");
  assert_int_equal(b1->weight, 50);
  assert_int_equal(b1->addr.port, 80);
  assert_int_equal(c.even, 8);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

/* One config with one error of each kind: every one is reported, each at
 * its own line:col, in document order. */
static void test_all_errors_reported(void **state) {
  const char *y = "flag: maybe\n"                 /* 1: bad bool */
                  "workers: 100\n"                /* 2: out of range */
                  "wrokers: 3\n"                  /* 3: unknown key + suggestion */
                  "ratio: abc\n"                  /* 4: not a number */
                  "timeout: 10\n"                 /* 5: duration without unit */
                  "buffer: 12XB\n"                /* 6: bad size */
                  "mode: turbo\n"                 /* 7: bad enum */
                  "listen: localhost\n"           /* 8: addr without port */
                  "name: [a, b]\n"                /* 9: wrong type */
                  "workers: 2\n"                  /* 10: duplicate */
                  "tls:\n"                        /* 11 */
                  "  enabled: true\n"             /* 12 */
                  "  certt: x\n"                  /* 13: unknown nested key; 11: section check */
                  "backends:\n"                   /* 14 */
                  "  - addr: 1.2.3.4:99999\n"     /* 15: port range; missing name at 15:5 */
                  "    name: b\n"                 /* 16 */
                  "  - name: c\n"                 /* 17 */
                  "    weight: 0\n"               /* 18: out of range */
                  "even: 3\n"                     /* 19: validate fn */
                  "big: -1\n";                    /* 20: negative uint64 */
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load(y, &c, &e), SK_ECONFIG);
  char *all = all_errors(&e);
  assert_has(all, "t.yaml:1:7: flag: expected true or false, got 'maybe'\n");
  assert_has(all, "t.yaml:2:10: workers: 100 is out of range [1, 64]\n");
  assert_has(all, "t.yaml:3:1: unknown key 'wrokers' (did you mean 'workers'?)\n");
  assert_has(all, "t.yaml:4:8: ratio: expected a number, got 'abc'\n");
  assert_has(all, "t.yaml:5:10: timeout: duration '10' needs a unit");
  assert_has(all, "t.yaml:6:9: buffer: invalid size '12XB'");
  assert_has(all, "t.yaml:7:7: mode: unknown value 'turbo' (expected one of: fast, safe, paranoid)\n");
  assert_has(all, "t.yaml:8:9: listen: address 'localhost' needs a port");
  assert_has(all, "t.yaml:9:7: name: expected a string, got a sequence\n");
  assert_has(all, "t.yaml:10:1: duplicate key 'workers' (first set at line 2, column 1)\n");
  assert_has(all, "t.yaml:13:3: unknown key 'tls.certt' (did you mean 'cert'?)\n");
  assert_has(all, "t.yaml:12:3: tls: cert is required when enabled\n");
  assert_has(all, "t.yaml:15:11: backends[0].addr: address '1.2.3.4:99999': port 99999 is out of range");
  assert_has(all, "t.yaml:18:13: backends[1].weight: 0 is out of range [1, 100]\n");
  assert_has(all, "t.yaml:19:7: even: must be even\n");
  assert_has(all, "t.yaml:20:6: big: expected a non-negative integer, got '-1'\n");
  assert_int_equal(e.n, 16);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_required_and_list_bounds(void **state) {
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load("backends:\n  - addr: 1.2.3.4:5\n  - 7\n", &c, &e), SK_ECONFIG);
  char *all = all_errors(&e);
  assert_has(all, "t.yaml:2:5: missing required key 'backends[0].name'\n");
  assert_has(all, "t.yaml:3:5: backends[1]: expected a mapping, got a scalar\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  assert_int_equal(load("backends: [{name: a}, {name: b}, {name: c}, {name: d}]\n", &c, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "t.yaml:1:11: backends: 4 elements, more than the limit of 3\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  assert_int_equal(load("backends: {name: a}\ntags: {a: 1}\ntls: [1]\n", &c, &e), SK_ECONFIG);
  all = all_errors(&e);
  assert_has(all, "t.yaml:1:11: backends: expected a sequence of mappings, got a mapping\n");
  assert_has(all, "t.yaml:2:7: tags: expected a list of strings, got a mapping\n");
  assert_has(all, "t.yaml:3:6: tls: expected a mapping, got a sequence\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_syntax_error_position(void **state) {
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load("workers: 2\nname: [unclosed\nflag: true\n", &c, &e), SK_ECONFIG);
  assert_int_equal(e.n, 1);
  assert_string_equal(e.v[0].file, "t.yaml");
  assert_true(e.v[0].line >= 2);
  assert_true(e.v[0].col >= 1);
  assert_has(e.v[0].msg, "YAML syntax error");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  assert_int_equal(load("a: 1\n b: 2\n", &c, &e), SK_ECONFIG);
  assert_int_equal(e.n, 1);
  assert_int_equal(e.v[0].line, 2);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  /* not a mapping at the top */
  assert_int_equal(load("- 1\n- 2\n", &c, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "t.yaml:1:1: expected a mapping, got a sequence\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  /* two documents */
  assert_int_equal(load("workers: 2\n---\nworkers: 3\n", &c, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "t.yaml:3:1: expected one YAML document, got 2\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  /* aliases */
  assert_int_equal(load("name: &x abc\ntags: [*x]\n", &c, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "t.yaml:2:8: YAML aliases (*x) are not supported\n");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_env_substitution(void **state) {
  setenv("SKT_NAME", "from-env", 1);
  setenv("SKT_PORT", "9443", 1);
  setenv("SKT_EMPTY", "", 1);
  unsetenv("SKT_UNSET");
  t_cfg_t c;
  sk_config_errors_t e;
  const char *y = "name: pre-${SKT_NAME}-post\n"
                  "listen: \"127.0.0.1:${SKT_PORT}\"\n"
                  "tags: [\"${SKT_UNSET:-fallback}\", \"${SKT_EMPTY:-was-empty}\", \"$${LITERAL}\", \"a$b\"]\n"
                  "workers: ${SKT_WORKERS:-12}\n";
  int rc = load(y, &c, &e);
  if (rc) fail_msg("%s", all_errors(&e));
  assert_string_equal(c.name, "pre-from-env-post");
  assert_int_equal(c.listen.port, 9443);
  assert_string_equal(c.tags.v[0], "fallback");
  assert_string_equal(c.tags.v[1], "was-empty");
  assert_string_equal(c.tags.v[2], "${LITERAL}");
  assert_string_equal(c.tags.v[3], "a$b");
  assert_int_equal(c.workers, 12);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  /* errors: unset without default, unterminated, bad name; all reported */
  y = "name: x\n"
      "tls:\n"
      "  cert: ${SKT_UNSET}\n"
      "tags: [ok, \"${SKT_NAME\"]\n"
      "timeout: ${1BAD}\n"
      "workers: ${SKT_NAME}\n";
  assert_int_equal(load(y, &c, &e), SK_ECONFIG);
  char *all = all_errors(&e);
  assert_has(all, "t.yaml:3:9: tls.cert: environment variable 'SKT_UNSET' is not set");
  assert_has(all, "t.yaml:4:12: tags: unterminated '${' in value\n");
  assert_has(all, "t.yaml:5:10: timeout: invalid variable name '1BAD'\n");
  assert_has(all, "t.yaml:6:10: workers: expected an integer, got 'from-env'\n");
  assert_int_equal(e.n, 4);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static const char *fake_env(const char *name, void *ud) { return strcmp(name, "ONLY") == 0 ? (const char *)ud : NULL; }

static void test_opts_getenv_and_limits(void **state) {
  t_cfg_t c;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  sk_config_opts_t o = {.getenv = fake_env, .getenv_ud = "zzz"};
  const char *y = "name: ${ONLY}\n";
  assert_int_equal(sk_config_load_string(&schema, &c, "o.yaml", y, strlen(y), &o, &e), 0);
  assert_string_equal(c.name, "zzz");
  sk_config_free(&schema, &c);

  sk_config_opts_t small = {.max_bytes = 10};
  y = "name: this is longer than ten bytes\n";
  assert_int_equal(sk_config_load_string(&schema, &c, "o.yaml", y, strlen(y), &small, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "exceeds the limit of 10 bytes");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  sk_config_opts_t shallow = {.max_depth = 3};
  y = "tls: {enabled: [[[[1]]]]}\n";
  assert_int_equal(sk_config_load_string(&schema, &c, "o.yaml", y, strlen(y), &shallow, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "nesting deeper than 3 levels");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  sk_config_opts_t few = {.max_nodes = 5};
  y = "tags: [a, b, c, d, e, f]\n";
  assert_int_equal(sk_config_load_string(&schema, &c, "o.yaml", y, strlen(y), &few, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "more than 5 YAML nodes");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);

  /* error cap */
  sk_config_opts_t cap = {.max_errors = 3};
  y = "a: 1\nb: 2\nc: 3\nd: 4\ne: 5\n";
  assert_int_equal(sk_config_load_string(&schema, &c, "o.yaml", y, strlen(y), &cap, &e), SK_ECONFIG);
  assert_int_equal(e.n, 3);
  assert_has(all_errors(&e), "too many errors (3)");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_null_keeps_default(void **state) {
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load("name:\ntls:\nworkers: ~\n", &c, &e), 0);
  assert_string_equal(c.name, "default-name");
  assert_int_equal(c.workers, 4);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
  assert_int_equal(load("name: \"\"\n", &c, &e), 0);
  assert_string_equal(c.name, "");
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

static void test_value_parsers(void **state) {
  uint64_t v;
  char msg[256];
  assert_int_equal(sk_config_parse_duration("250ms", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 250);
  assert_int_equal(sk_config_parse_duration("10s", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 10000);
  assert_int_equal(sk_config_parse_duration("5m", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 300000);
  assert_int_equal(sk_config_parse_duration("1h", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 3600000);
  assert_int_equal(sk_config_parse_duration("1.5s", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 1500);
  assert_int_equal(sk_config_parse_duration("2d", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 172800000);
  assert_int_equal(sk_config_parse_duration("0", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 0);
  assert_int_equal(sk_config_parse_duration("10", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_duration("10x", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_duration("", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_duration("s", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_duration("-5s", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_duration("999999999d", &v, msg, sizeof msg), SK_ERANGE);

  assert_int_equal(sk_config_parse_size("512", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 512);
  assert_int_equal(sk_config_parse_size("16KiB", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 16384);
  assert_int_equal(sk_config_parse_size("1MiB", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 1048576);
  assert_int_equal(sk_config_parse_size("2G", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 2147483648ull);
  assert_int_equal(sk_config_parse_size("1KB", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 1000);
  assert_int_equal(sk_config_parse_size("1.5KiB", &v, msg, sizeof msg), 0);
  assert_int_equal(v, 1536);
  assert_int_equal(sk_config_parse_size("1.1B", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_size("MiB", &v, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_size("99999999TiB", &v, msg, sizeof msg), SK_ERANGE);

  sk_cfg_addr_t a;
  assert_int_equal(sk_config_parse_addr("127.0.0.1:80", &a, msg, sizeof msg), 0);
  assert_string_equal(a.host, "127.0.0.1");
  assert_int_equal(a.port, 80);
  assert_int_equal(sk_config_parse_addr("[::]:0", &a, msg, sizeof msg), 0);
  assert_string_equal(a.host, "::");
  assert_int_equal(sk_config_parse_addr("example.com:443", &a, msg, sizeof msg), 0);
  assert_int_equal(sk_config_parse_addr("::1:80", &a, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_addr("host:", &a, msg, sizeof msg), SK_EINVAL);
  assert_int_equal(sk_config_parse_addr("host:65536", &a, msg, sizeof msg), SK_ERANGE);
  assert_int_equal(sk_config_parse_addr("ho st:1", &a, msg, sizeof msg), SK_EINVAL);
  char buf[300];
  sk_config_parse_addr("[::1]:9", &a, msg, sizeof msg);
  sk_config_format_addr(&a, buf, sizeof buf);
  assert_string_equal(buf, "[::1]:9");

  bool b;
  assert_int_equal(sk_config_parse_bool("On", &b), 0);
  assert_true(b);
  assert_int_equal(sk_config_parse_bool("no", &b), 0);
  assert_false(b);
  assert_int_equal(sk_config_parse_bool("nah", &b), SK_EINVAL);
}

typedef struct t_a {
  int x;
} t_a_t;
typedef struct t_b {
  char *y;
} t_b_t;

static void test_parts(void **state) {
  static const sk_config_entry_t ea[] = {SK_CFG_INT_E("x", "1", 0, 10, t_a_t, x, "x"), SK_CFG_END_E};
  static const sk_config_entry_t eb[] = {SK_CFG_STRING_E("y", "d", t_b_t, y, "y"), SK_CFG_END_E};
  static const sk_config_schema_t sa = SK_CFG_SCHEMA("a", t_a_t, ea), sb = SK_CFG_SCHEMA("b", t_b_t, eb);
  t_a_t a;
  t_b_t b;
  sk_config_part_t parts[] = {{&sa, &a}, {&sb, &b}};
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  const char *y = "x: 7\ny: hello\nz: 1\n";
  assert_int_equal(sk_config_load_parts(parts, 2, "p.yaml", y, strlen(y), NULL, &e), SK_ECONFIG);
  assert_int_equal(a.x, 7);
  assert_string_equal(b.y, "hello");
  assert_int_equal(e.n, 1);
  assert_has(all_errors(&e), "p.yaml:3:1: unknown key 'z'\n");
  sk_config_free(&sa, &a);
  sk_config_free(&sb, &b);
  sk_config_errors_done(&e);
}

static char *read_stream(FILE *f) {
  static char buf[8192];
  rewind(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  return buf;
}

static void test_check_file(void **state) {
  const char *dir = sk_test_tmpdir();
  char good[512], bad[512];
  snprintf(good, sizeof good, "%s/good.yaml", dir);
  snprintf(bad, sizeof bad, "%s/bad.yaml", dir);
  FILE *f = fopen(good, "w");
  fputs("workers: 3\nname: ok\n", f);
  fclose(f);
  f = fopen(bad, "w");
  fputs("workers: 0\nnmae: x\ntimeout: forever\n", f);
  fclose(f);
  const sk_config_schema_t *schemas[] = {&schema};

  FILE *out = tmpfile();
  assert_int_equal(sk_config_check_file(schemas, 1, good, NULL, out), 0);
  assert_string_equal(read_stream(out), "config ok\n");
  fclose(out);

  out = tmpfile();
  assert_int_equal(sk_config_check_file(schemas, 1, bad, NULL, out), 1);
  char *txt = read_stream(out);
  char want[1400];
  snprintf(want, sizeof want, "%s:1:10: workers: 0 is out of range [1, 64]\n", bad);
  assert_has(txt, want);
  snprintf(want, sizeof want, "%s:2:1: unknown key 'nmae' (did you mean 'name'?)\n", bad);
  assert_has(txt, want);
  snprintf(want, sizeof want, "%s:3:10: timeout: invalid duration 'forever'", bad);
  assert_has(txt, want);
  assert_null(strstr(txt, "config ok"));
  fclose(out);

  char missing[600];
  snprintf(missing, sizeof missing, "%s/nope.yaml", dir);
  out = tmpfile();
  assert_int_equal(sk_config_check_file(schemas, 1, missing, NULL, out), 1);
  snprintf(want, sizeof want, "%s: cannot open: No such file or directory\n", missing);
  assert_has(read_stream(out), want);
  fclose(out);
}

static void test_schema_doc(void **state) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_config_schema_doc(&schema, NULL, &b);
  char *s = sk_buf_cstr(&b);
  assert_has(s, "  workers ");
  assert_has(s, "(range 1..64)");
  assert_has(s, "  tls.cert ");
  assert_has(s, "  backends[].name ");
  assert_has(s, "[required]");
  assert_has(s, "(one of: fast safe paranoid)");
  assert_has(s, "duration");
  assert_has(s, "10s");
  sk_buf_done(&b);
}

static void test_bad_default_reported(void **state) {
  static const sk_config_entry_t eb[] = {SK_CFG_DURATION_E("t", "ten", t_cfg_t, timeout_ms, "t"), SK_CFG_END_E};
  static const sk_config_schema_t sb = SK_CFG_SCHEMA("broken", t_cfg_t, eb);
  t_cfg_t c;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  assert_int_equal(sk_config_defaults(&sb, &c, &e), SK_ECONFIG);
  assert_has(all_errors(&e), "broken: t: invalid default: invalid duration 'ten'");
  sk_config_free(&sb, &c);
  sk_config_errors_done(&e);
}

/* Key paths ("tls.cert", "backends[1].name") longer than the path buffer
 * are refused with a message, never cut short into another key. */
static void test_long_key_paths(void **state) {
  char key[600];
  memset(key, 'k', sizeof key - 1);
  key[sizeof key - 1] = 0;
  char y[2048];
  /* 599 bytes at the top; "tls." + 508 = 512 bytes, one more than fits */
  int w = snprintf(y, sizeof y, "%s: 1\ntls:\n  %.508s: x\n  %.400s: y\n", key, key, key);
  assert_true(w > 0 && (size_t)w < sizeof y);
  t_cfg_t c;
  sk_config_errors_t e;
  assert_int_equal(load(y, &c, &e), SK_ECONFIG);
  char *all = all_errors(&e);
  assert_has(all, "t.yaml:1:1: key path 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...' is longer than 511 bytes\n");
  assert_has(all, "t.yaml:3:3: key path 'tls.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...' is longer than 511 bytes\n");
  /* 404 bytes fit: an ordinary unknown key */
  assert_has(all, "t.yaml:4:3: unknown key 'tls.kkkkkkkkkk");
  assert_int_equal(e.n, 3);
  sk_config_free(&schema, &c);
  sk_config_errors_done(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_every_type),
      cmocka_unit_test(test_all_errors_reported),
      cmocka_unit_test(test_required_and_list_bounds),
      cmocka_unit_test(test_syntax_error_position),
      cmocka_unit_test(test_env_substitution),
      cmocka_unit_test(test_opts_getenv_and_limits),
      cmocka_unit_test(test_null_keeps_default),
      cmocka_unit_test(test_value_parsers),
      cmocka_unit_test(test_parts),
      cmocka_unit_test(test_check_file),
      cmocka_unit_test(test_schema_doc),
      cmocka_unit_test(test_bad_default_reported),
      cmocka_unit_test(test_long_key_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
