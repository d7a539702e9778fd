/* json_int.h - runtime internals of the JSON module. */
#ifndef SKIFF_JSON_INT_H
#define SKIFF_JSON_INT_H

#include <jansson.h>
#include <stddef.h>

/* The deepest nesting the fast reader handles itself; deeper documents go
 * to jansson (whose own limit is 2048). */
#define SK__JSON_FAST_MAX_DEPTH 512

/* Reads one JSON text into jansson values without going through jansson's
 * lexer. It accepts only documents that json_loadb(JSON_DECODE_ANY |
 * JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL) accepts, and builds the same tree
 * (types, values, key order). Anything it does not handle itself (an error,
 * a duplicate key, \u0000, a number it would have to round differently,
 * nesting deeper than max_depth) returns -1 with *out NULL, and the caller
 * asks jansson, which then decides and words the error. 0 on success. */
int sk__json_parse_fast(const char *s, size_t len, int max_depth, json_t **out);

#endif
