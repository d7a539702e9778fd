/* tl_tsdb_hmap.c - linear-probing hash map with backward-shift deletion. */
#include <stdlib.h>
#include <string.h>

#include "skiff/mem.h"
#include "tl_tsdb_int.h"

/* Eight bytes per round (keys are label sets, tens of bytes), then a
 * final mix so the low bits used as the slot depend on every byte. In
 * memory only: never stored. */
uint64_t tl__hash(const void *key, size_t len) {
  const unsigned char *p = key;
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;
  for (; len >= 8; len -= 8, p += 8) {
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (len) {
    w = 0;
    memcpy(&w, p, len);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
  }
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 29;
  return h ? h : 1;
}

static size_t find(const tl__hmap_t *m, const void *key, size_t klen, uint64_t h) {
  size_t mask = m->cap - 1, i = h & mask;
  for (;;) {
    const tl__hent_t *e = &m->e[i];
    if (!e->hash) return i;
    if (e->hash == h && e->klen == klen && !memcmp(e->key, key, klen)) return i;
    i = (i + 1) & mask;
  }
}

void *tl__hmap_get(const tl__hmap_t *m, const void *key, size_t klen) {
  if (!m->cap) return NULL;
  size_t i = find(m, key, klen, tl__hash(key, klen));
  return m->e[i].hash ? m->e[i].val : NULL;
}

static void grow(tl__hmap_t *m) {
  size_t nc = m->cap ? m->cap * 2 : 16;
  tl__hent_t *old = m->e;
  size_t oc = m->cap;
  m->e = sk_xcalloc(nc, sizeof *m->e);
  m->cap = nc;
  for (size_t i = 0; i < oc; i++) {
    if (!old[i].hash) continue;
    size_t j = find(m, old[i].key, old[i].klen, old[i].hash);
    m->e[j] = old[i];
  }
  free(old);
}

void tl__hmap_put(tl__hmap_t *m, const void *key, size_t klen, void *val) {
  if ((m->n + 1) * 4 > m->cap * 3) grow(m);
  uint64_t h = tl__hash(key, klen);
  size_t i = find(m, key, klen, h);
  if (!m->e[i].hash) m->n++;
  m->e[i] = (tl__hent_t){key, klen, h, val};
}

void *tl__hmap_del(tl__hmap_t *m, const void *key, size_t klen) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1, i = find(m, key, klen, tl__hash(key, klen));
  if (!m->e[i].hash) return NULL;
  void *val = m->e[i].val;
  m->e[i].hash = 0;
  m->n--;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!m->e[j].hash) break;
    size_t home = m->e[j].hash & mask;
    /* can entry j move to the hole at i? only if its home is not in (i, j] */
    int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (between) continue;
    m->e[i] = m->e[j];
    m->e[j].hash = 0;
    i = j;
  }
  return val;
}

void tl__hmap_free(tl__hmap_t *m) {
  free(m->e);
  m->e = NULL;
  m->cap = m->n = 0;
}
