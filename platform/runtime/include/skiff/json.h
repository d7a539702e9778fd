/* skiff/json.h - small helpers on jansson values.
 *
 * Paths are dot-separated keys; a segment of digits indexes an array:
 * "spec.rules.0.name". Getters never fail: they return the default when the
 * path is missing or the value has another type. */
#ifndef SKIFF_JSON_H
#define SKIFF_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"

/* Borrowed reference, or NULL. */
json_t *sk_json_get(const json_t *root, const char *path);
const char *sk_json_get_str(const json_t *root, const char *path, const char *def);
/* Integers; a real with an integral value is accepted too. */
int64_t sk_json_get_int(const json_t *root, const char *path, int64_t def);
double sk_json_get_real(const json_t *root, const char *path, double def); /* integer or real */
int sk_json_get_bool(const json_t *root, const char *path, int def);

/* Compact serialisation (no spaces, keys in insertion order) appended to b. */
int sk_json_dump_buf(const json_t *v, sk_buf_t *b);
/* Parses one JSON text of len bytes with bounds on size (max_bytes, 0 = 16
 * MiB) and nesting depth (max_depth, 0 = 64). SK_EPARSE / SK_ELIMIT with
 * "line:col: message" in err. */
int sk_json_parse(const char *s, size_t len, size_t max_bytes, int max_depth, json_t **out, char *err,
                  size_t errlen);
/* Deepest nesting of arrays/objects (a scalar is 0). */
int sk_json_depth(const json_t *v);

/* Appends s as a JSON string body (without quotes): ", \, control
 * characters escaped, invalid UTF-8 bytes replaced by U+FFFD. */
void sk_json_escape(sk_buf_t *b, const char *s, size_t len);

#endif
