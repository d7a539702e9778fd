/* tl_tsdb_int.h - internals shared by the tsdb and PromQL sources: a string
 * keyed open-addressing hash map (keys are byte strings owned by the
 * caller and kept alive while in the map). */
#ifndef TL_TSDB_INT_H
#define TL_TSDB_INT_H

#include <stddef.h>
#include <stdint.h>

typedef struct tl__hent {
  const void *key;
  size_t klen;
  uint64_t hash; /* 0 = empty slot */
  void *val;
} tl__hent_t;

typedef struct tl__hmap {
  tl__hent_t *e;
  size_t cap, n;
} tl__hmap_t;

uint64_t tl__hash(const void *key, size_t len);
void *tl__hmap_get(const tl__hmap_t *m, const void *key, size_t klen);
/* Inserts or replaces. */
void tl__hmap_put(tl__hmap_t *m, const void *key, size_t klen, void *val);
/* Removes; returns the value or NULL. */
void *tl__hmap_del(tl__hmap_t *m, const void *key, size_t klen);
void tl__hmap_free(tl__hmap_t *m); /* the table only */

#endif
