/* skiff/yaml.h - YAML documents into jansson values.
 *
 * For daemons that read Kubernetes-style resources: a YAML stream (one or
 * more documents separated by "---") becomes json_t values. Plain scalars
 * follow the YAML 1.2 core schema (null, ~, true/false, integers, floats);
 * quoted and block scalars stay strings. Anchors/aliases and non-scalar
 * mapping keys are rejected. Input size, nesting depth, node count and
 * document count are bounded; errors carry "line:col: message". */
#ifndef SKIFF_YAML_H
#define SKIFF_YAML_H

#include <jansson.h>
#include <stddef.h>

typedef struct sk_yaml_opts {
  size_t max_bytes; /* default 16 MiB */
  int max_depth;    /* default 64 */
  size_t max_nodes; /* default 1000000 */
  size_t max_docs;  /* default 10000 */
} sk_yaml_opts_t;

/* Every document of the stream, in order, as a JSON array (empty documents
 * are null elements; an empty stream is []). On error returns SK_EPARSE (bad
 * YAML, aliases, non-scalar keys, duplicate keys) or SK_ELIMIT (a bound),
 * with "line:col: message" in err. */
int sk_yaml_load_all(const char *text, size_t len, const sk_yaml_opts_t *o, json_t **out, char *err,
                     size_t errlen);
/* Exactly one document (an empty stream gives null; more than one document
 * is an error). */
int sk_yaml_load(const char *text, size_t len, const sk_yaml_opts_t *o, json_t **out, char *err,
                 size_t errlen);

#endif
