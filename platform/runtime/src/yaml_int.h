/* yaml_int.h - a bounded YAML node tree with positions, shared by yaml.c
 * (YAML -> json_t) and config.c (YAML -> schema structs). */
#ifndef SKIFF_YAML_INT_H
#define SKIFF_YAML_INT_H

#include <stddef.h>

#include "skiff/mem.h"

typedef enum sk__ykind { SK__Y_SCALAR, SK__Y_MAP, SK__Y_SEQ } sk__ykind_t;

typedef struct sk__ynode sk__ynode_t;
struct sk__ynode {
  sk__ykind_t kind;
  int line, col;  /* 1-based start position */
  int plain;      /* scalar: plain style without an explicit tag (typed by its text) */
  char *str;      /* scalar value, NUL-terminated (may contain NULs: use len) */
  size_t len;
  size_t n;       /* children: a map has 2*pairs (key, value, key, value...) */
  sk__ynode_t *first, *last, *next;
};

typedef struct sk__ystream {
  sk_pool_t *pool;
  sk__ynode_t **docs; /* pool memory; NULL entry = empty document */
  size_t ndocs;
} sk__ystream_t;

typedef struct sk__ylimits {
  size_t max_bytes;
  int max_depth;
  size_t max_nodes;
  size_t max_docs;
} sk__ylimits_t;

/* Parses a whole stream. On error returns SK_EPARSE or SK_ELIMIT with the
 * message in err and the 1-based position in *line and *col; the stream is
 * then empty (and must still be released). */
int sk__yaml_parse(const char *text, size_t len, const sk__ylimits_t *lim, sk__ystream_t *out, char *err,
                   size_t errlen, int *line, int *col);
void sk__yaml_stream_done(sk__ystream_t *s);
/* Plain scalars that mean null: "", "~", "null", "Null", "NULL". */
int sk__yaml_is_null(const sk__ynode_t *n);
const char *sk__yaml_kind_name(const sk__ynode_t *n);
/* The node as a jansson value (core schema typing for plain scalars), or
 * NULL with the message and position of the offending node. */
struct json_t;
struct json_t *sk__yaml_to_json(const sk__ynode_t *n, char *err, size_t errlen, int *line, int *col);

#endif
