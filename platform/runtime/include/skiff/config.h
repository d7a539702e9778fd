/* skiff/config.h - YAML configuration into typed C structs through schema
 * tables.
 *
 * Each module describes its keys once in a table of sk_config_entry_t
 * ({key, type, default, offset, validate, help} plus type details) and the
 * loader fills a struct from a YAML mapping. Every problem - YAML syntax,
 * unknown key, duplicate key, wrong type, out-of-range value, bad duration
 * or size, unset ${ENV} - is collected as "file:line:col: message" in an
 * error list; the loader does not stop at the first one.
 *
 * Example:
 *   typedef struct { sk_cfg_addr_t listen; uint64_t idle_ms; int workers; } my_cfg_t;
 *   static const sk_config_entry_t my_entries[] = {
 *     SK_CFG_ADDR_E("listen", "127.0.0.1:8080", my_cfg_t, listen, "where to listen"),
 *     SK_CFG_DURATION_E("idle_timeout", "60s", my_cfg_t, idle_ms, "idle connection timeout"),
 *     SK_CFG_INT_E("workers", "1", 1, 64, my_cfg_t, workers, "worker threads"),
 *     SK_CFG_END_E};
 *   static const sk_config_schema_t my_schema = SK_CFG_SCHEMA("my", my_cfg_t, my_entries);
 *
 * Storage per type (the field at `offset` inside the struct):
 *   BOOL     bool             "true"/"false" (also yes/no/on/off)
 *   INT      int              decimal, range [min, max] when min or max != 0
 *   UINT64   uint64_t         decimal, at most max when max > 0
 *   DOUBLE   double
 *   STRING   char *           malloc'ed, freed by sk_config_free; max = max length if > 0
 *   DURATION uint64_t (ms)    "250ms", "10s", "5m", "1h", "1d", "1h30m", "0"
 *   SIZE     uint64_t (bytes) "512", "16KiB", "1MiB", "2GiB", "1K" (=KiB); "1KB" = 1000
 *   ENUM     int              index into the NULL-terminated `names`
 *   STRLIST  sk_cfg_strlist_t sequence of scalars (a single scalar is one element)
 *   ADDR     sk_cfg_addr_t    "host:port", "[v6]:port", ":port" (host "0.0.0.0")
 *   SECTION  the sub-struct    nested mapping described by `sub`
 *   LIST     sk_cfg_list_t    sequence of mappings, each a `sub` struct; max elements
 *                             = max if > 0, else SK_CFG_LIST_MAX
 *   JSON     sk_cfg_json_t    any value (scalar, mapping, sequence) kept as a jansson
 *                             value for a module that validates it itself, with the
 *                             line:col of every node (no ${ENV} substitution inside)
 *
 * Scalars may contain ${NAME} or ${NAME:-default}; "$${" writes a literal
 * "${". An unset variable without a default is an error at the scalar.
 * YAML anchors/aliases are rejected. */
#ifndef SKIFF_CONFIG_H
#define SKIFF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "skiff/mem.h"

typedef enum sk_cfg_type {
  SK_CFG_NONE = 0, /* table terminator */
  SK_CFG_BOOL,
  SK_CFG_INT,
  SK_CFG_UINT64,
  SK_CFG_DOUBLE,
  SK_CFG_STRING,
  SK_CFG_DURATION,
  SK_CFG_SIZE,
  SK_CFG_ENUM,
  SK_CFG_STRLIST,
  SK_CFG_ADDR,
  SK_CFG_SECTION,
  SK_CFG_LIST,
  SK_CFG_JSON
} sk_cfg_type_t;

#define SK_CFG_HOST_MAX 256
#define SK_CFG_LIST_MAX 1024 /* default bound on LIST/STRLIST element counts */

typedef struct sk_cfg_addr {
  char host[SK_CFG_HOST_MAX]; /* without brackets: "::1", "127.0.0.1", "example.com" */
  int port;                   /* 0..65535 */
} sk_cfg_addr_t;

typedef struct sk_cfg_strlist {
  char **v;
  size_t n;
} sk_cfg_strlist_t;

typedef struct sk_cfg_list {
  void *v; /* n elements of the sub-schema's size */
  size_t n;
} sk_cfg_list_t;
/* A JSON field: value is NULL when the key is absent. where maps the path
 * of every node below the key ("routes[0].match.path", the same syntax as
 * error messages) to [line, col]. Both are freed by sk_config_free. */
struct json_t;
typedef struct sk_cfg_json {
  struct json_t *value;
  struct json_t *where;
} sk_cfg_json_t;
/* Position of the node at path (or of its nearest recorded ancestor);
 * 0 when found, SK_ENOTFOUND otherwise (line = col = 0). */
int sk_cfg_json_where(const sk_cfg_json_t *j, const char *path, int *line, int *col);

/* Element i of a LIST field, as a typed pointer. */
#define SK_CFG_LIST_AT(list, type, i) (&((type *)(list).v)[(i)])

/* Extra checks. Return 0 if fine, or negative with a message written to
 * msg (it becomes "file:line:col: <key>: <msg>"). */
typedef int (*sk_cfg_validate_fn)(const void *field, char *msg, size_t msglen);
/* Cross-field check on a whole section after all its keys were read. */
typedef int (*sk_cfg_section_check_fn)(const void *section, char *msg, size_t msglen);

enum {
  SK_CFG_REQUIRED = 1 << 0, /* missing key is an error */
  SK_CFG_SECRET = 1 << 1    /* never printed (docs show the default only) */
};

typedef struct sk_config_schema sk_config_schema_t;

typedef struct sk_config_entry {
  const char *key;
  sk_cfg_type_t type;
  const char *def;  /* default, written as it would be in YAML; NULL = zero/empty */
  size_t offset;    /* of the field inside the section struct */
  sk_cfg_validate_fn validate; /* optional */
  const char *help;
  int64_t min, max;             /* see the type table above */
  const char *const *names;     /* ENUM: NULL-terminated */
  const sk_config_schema_t *sub; /* SECTION, LIST */
  unsigned flags;               /* SK_CFG_REQUIRED, SK_CFG_SECRET */
} sk_config_entry_t;

struct sk_config_schema {
  const char *name;                 /* for docs ("proxy", "admin") */
  size_t size;                      /* sizeof the struct this table fills */
  const sk_config_entry_t *entries; /* terminated by an entry with key NULL */
  sk_cfg_section_check_fn check;    /* optional */
};

#define SK_CFG_SCHEMA(name_, type_, entries_) {.name = (name_), .size = sizeof(type_), .entries = (entries_)}

#define SK_CFG_E_(k, t, d, st, f, h) .key = (k), .type = (t), .def = (d), .offset = offsetof(st, f), .help = (h)
#define SK_CFG_BOOL_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_BOOL, d, st, f, h)}
#define SK_CFG_INT_E(k, d, lo, hi, st, f, h) {SK_CFG_E_(k, SK_CFG_INT, d, st, f, h), .min = (lo), .max = (hi)}
#define SK_CFG_UINT64_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_UINT64, d, st, f, h)}
#define SK_CFG_DOUBLE_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_DOUBLE, d, st, f, h)}
#define SK_CFG_STRING_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_STRING, d, st, f, h)}
#define SK_CFG_DURATION_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_DURATION, d, st, f, h)}
#define SK_CFG_SIZE_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_SIZE, d, st, f, h)}
#define SK_CFG_ENUM_E(k, d, nm, st, f, h) {SK_CFG_E_(k, SK_CFG_ENUM, d, st, f, h), .names = (nm)}
#define SK_CFG_STRLIST_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_STRLIST, d, st, f, h)}
#define SK_CFG_ADDR_E(k, d, st, f, h) {SK_CFG_E_(k, SK_CFG_ADDR, d, st, f, h)}
#define SK_CFG_SECTION_E(k, sb, st, f, h) {SK_CFG_E_(k, SK_CFG_SECTION, NULL, st, f, h), .sub = (sb)}
#define SK_CFG_LIST_E(k, mx, sb, st, f, h) {SK_CFG_E_(k, SK_CFG_LIST, NULL, st, f, h), .max = (mx), .sub = (sb)}
#define SK_CFG_JSON_E(k, st, f, h) {SK_CFG_E_(k, SK_CFG_JSON, NULL, st, f, h)}
#define SK_CFG_END_E {.key = NULL}

/* One collected problem. */
typedef struct sk_config_error {
  char *file; /* as given to the loader */
  int line, col; /* 1-based; 0 when the problem has no position (e.g. open failed) */
  char *msg;
} sk_config_error_t;

typedef struct sk_config_errors {
  sk_config_error_t *v;
  size_t n, cap;
} sk_config_errors_t;

void sk_config_errors_init(sk_config_errors_t *e);
void sk_config_errors_done(sk_config_errors_t *e); /* accepts NULL */
void sk_config_errors_add(sk_config_errors_t *e, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* "file:line:col: msg" (or "file: msg" without a position). */
void sk_config_errors_format(const sk_config_errors_t *e, size_t i, char *buf, size_t buflen);
/* Every error, one per line. */
void sk_config_errors_print(const sk_config_errors_t *e, FILE *out);

typedef struct sk_config_opts {
  size_t max_bytes;   /* input size; default 4 MiB */
  int max_depth;      /* mapping/sequence nesting; default 32 */
  size_t max_nodes;   /* YAML nodes; default 100000 */
  size_t max_errors;  /* stop collecting after this many; default 100 */
  /* Variable lookup for ${...}; default getenv. */
  const char *(*getenv)(const char *name, void *ud);
  void *getenv_ud;
} sk_config_opts_t;

/* Several schemas filling different structs from the keys of one top-level
 * mapping (the daemon lifecycle uses it for common keys + the daemon's own). */
typedef struct sk_config_part {
  const sk_config_schema_t *schema;
  void *obj;
} sk_config_part_t;

/* Writes every default into obj (zeroing it first). Returns 0, or SK_ECONFIG
 * when a default in the table itself is invalid (a programming error; the
 * message lands in errs when given). */
int sk_config_defaults(const sk_config_schema_t *s, void *obj, sk_config_errors_t *errs);
/* Frees what the loader allocated inside obj (not obj itself); obj is left
 * zeroed. Accepts NULL. */
void sk_config_free(const sk_config_schema_t *s, void *obj);

/* Applies defaults, then the YAML text. `name` is used as the file in error
 * positions. An empty document leaves the defaults. Returns 0 when there
 * were no errors, SK_ECONFIG when errs got one or more (obj then holds a
 * partial config that must still be released with sk_config_free). */
int sk_config_load_string(const sk_config_schema_t *s, void *obj, const char *name, const char *text,
                          size_t len, const sk_config_opts_t *o, sk_config_errors_t *errs);
int sk_config_load_file(const sk_config_schema_t *s, void *obj, const char *path,
                        const sk_config_opts_t *o, sk_config_errors_t *errs);
int sk_config_load_parts(const sk_config_part_t *parts, size_t nparts, const char *name, const char *text,
                         size_t len, const sk_config_opts_t *o, sk_config_errors_t *errs);
int sk_config_load_parts_file(const sk_config_part_t *parts, size_t nparts, const char *path,
                              const sk_config_opts_t *o, sk_config_errors_t *errs);

/* The --check behaviour: loads path against the schemas into scratch
 * structs, prints every error to out ("file:line:col: message", one per
 * line) and returns 1, or prints "config ok" and returns 0. */
int sk_config_check_file(const sk_config_schema_t *const *schemas, size_t nschemas, const char *path,
                         const sk_config_opts_t *o, FILE *out);

/* Value parsers (also used for defaults). Return 0 or SK_EINVAL/SK_ERANGE
 * with a message in msg. */
int sk_config_parse_duration(const char *s, uint64_t *ms, char *msg, size_t msglen);
int sk_config_parse_size(const char *s, uint64_t *bytes, char *msg, size_t msglen);
int sk_config_parse_bool(const char *s, bool *b);
int sk_config_parse_addr(const char *s, sk_cfg_addr_t *a, char *msg, size_t msglen);
/* x (0 <= x < 2^64) to the nearest integer, halves up: llround's answer for
 * the values the config parsers produce, without libm. Exact: for x < 2^52
 * both (double)i and x - i are representable; from 2^52 on x is whole. */
static inline uint64_t sk_config_round(double x) {
  uint64_t i = (uint64_t)x;
  return x - (double)i >= 0.5 ? i + 1 : i;
}
/* "host:port" / "[v6]:port" into buf. */
void sk_config_format_addr(const sk_cfg_addr_t *a, char *buf, size_t buflen);

/* Documentation of a schema: one line per key (nested keys as "a.b"), with
 * type, default, range/choices and help. `prefix` is prepended to keys
 * (NULL for none). Appends to b. */
void sk_config_schema_doc(const sk_config_schema_t *s, const char *prefix, sk_buf_t *b);

#endif
