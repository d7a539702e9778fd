/* Arenas, abort-on-OOM wrappers and growable buffers. */
#include "skiff/mem.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SK_POOL_CHUNK 4096
#define SK_POOL_ALIGN 16

struct sk_pool_chunk {
  struct sk_pool_chunk *next;
  size_t size, used;
  _Alignas(SK_POOL_ALIGN) unsigned char data[];
};

struct sk_pool {
  struct sk_pool_chunk *head;
  size_t total;
};

static void sk__oom(size_t n) {
  fprintf(stderr, "skiff: out of memory allocating %zu bytes\n", n);
  abort();
}

void *sk_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) sk__oom(n);
  return p;
}

void *sk_xcalloc(size_t nmemb, size_t n) {
  void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
  if (!p) sk__oom(nmemb * n);
  return p;
}

void *sk_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) sk__oom(n);
  return q;
}

char *sk_xstrdup(const char *s) { return sk_xstrndup(s, strlen(s)); }

char *sk_xstrndup(const char *s, size_t n) {
  size_t l = strnlen(s, n);
  char *d = sk_xmalloc(l + 1);
  memcpy(d, s, l);
  d[l] = 0;
  return d;
}

static struct sk_pool_chunk *sk__chunk_new(size_t size) {
  struct sk_pool_chunk *c = sk_xmalloc(sizeof(*c) + size);
  c->next = NULL;
  c->size = size;
  c->used = 0;
  return c;
}

/* Each thread keeps a few freed pools (with their first chunk) for its
 * next sk_pool_new(): an HTTP request makes and frees one or two pools,
 * and a 4 KiB chunk is past what malloc serves from its per-thread cache.
 * 64 covers a burst of 32 proxied requests (two pools each) read in one
 * loop turn: at most 256 KiB kept per thread.
 * Off under AddressSanitizer, so that a use after sk_pool_free() is still
 * caught there. A thread's cache goes when the thread exits. */
#if defined(__SANITIZE_ADDRESS__)
#define SK_POOL_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SK_POOL_CACHE 0
#endif
#endif
#ifndef SK_POOL_CACHE
#define SK_POOL_CACHE 64
#endif

static void sk__pool_destroy(sk_pool_t *p) {
  struct sk_pool_chunk *c = p->head;
  while (c) {
    struct sk_pool_chunk *n = c->next;
    free(c);
    c = n;
  }
  free(p);
}

#if SK_POOL_CACHE
typedef struct sk__pool_cache {
  size_t n;
  sk_pool_t *v[SK_POOL_CACHE];
} sk__pool_cache_t;

static pthread_key_t sk__pool_key;
static pthread_once_t sk__pool_once = PTHREAD_ONCE_INIT;
static int sk__pool_key_ok;
static _Thread_local sk__pool_cache_t *sk__tl_pools;
static _Thread_local int sk__tl_pools_gone; /* the thread is exiting */

static void sk__pool_cache_done(void *arg) {
  sk__pool_cache_t *pc = arg;
  sk__tl_pools = NULL;
  sk__tl_pools_gone = 1;
  for (size_t i = 0; i < pc->n; i++) sk__pool_destroy(pc->v[i]);
  free(pc);
}

static void sk__pool_key_init(void) {
  sk__pool_key_ok = pthread_key_create(&sk__pool_key, sk__pool_cache_done) == 0;
}

static sk__pool_cache_t *sk__pool_cache(void) {
  if (sk__tl_pools || sk__tl_pools_gone) return sk__tl_pools;
  pthread_once(&sk__pool_once, sk__pool_key_init);
  if (!sk__pool_key_ok) return NULL;
  sk__pool_cache_t *pc = calloc(1, sizeof *pc);
  if (!pc) return NULL;
  if (pthread_setspecific(sk__pool_key, pc) != 0) {
    free(pc);
    return NULL;
  }
  sk__tl_pools = pc;
  return pc;
}
#endif

sk_pool_t *sk_pool_new(void) {
#if SK_POOL_CACHE
  sk__pool_cache_t *pc = sk__tl_pools;
  if (pc && pc->n) return pc->v[--pc->n]; /* cleared when it was cached */
#endif
  sk_pool_t *p = sk_xcalloc(1, sizeof(*p));
  p->head = sk__chunk_new(SK_POOL_CHUNK);
  return p;
}

void sk_pool_clear(sk_pool_t *p) {
  if (!p) return;
  struct sk_pool_chunk *c = p->head, *first = NULL;
  while (c) {
    struct sk_pool_chunk *n = c->next;
    if (!n) first = c; /* the oldest chunk is last in the list */
    else free(c);
    c = n;
  }
  if (first) {
    first->used = 0;
    first->next = NULL;
  }
  p->head = first;
  p->total = 0;
}

void sk_pool_free(sk_pool_t *p) {
  if (!p) return;
#if SK_POOL_CACHE
  sk__pool_cache_t *pc = sk__pool_cache();
  if (pc && pc->n < SK_POOL_CACHE) {
    sk_pool_clear(p); /* keeps the first chunk */
    if (p->head && p->head->size == SK_POOL_CHUNK) {
      pc->v[pc->n++] = p;
      return;
    }
  }
#endif
  sk__pool_destroy(p);
}

void *sk_pool_alloc(sk_pool_t *p, size_t n) {
  size_t need = (n + SK_POOL_ALIGN - 1) & ~(size_t)(SK_POOL_ALIGN - 1);
  if (need == 0) need = SK_POOL_ALIGN;
  struct sk_pool_chunk *c = p->head;
  if (!c || c->size - c->used < need) {
    size_t sz = need > SK_POOL_CHUNK / 2 ? need : SK_POOL_CHUNK;
    struct sk_pool_chunk *nc = sk__chunk_new(sz);
    if (sz == need && c) {
      /* big allocation: keep the current chunk as head for small ones */
      nc->next = c->next;
      c->next = nc;
      nc->used = need;
      p->total += need;
      return nc->data;
    }
    nc->next = c;
    p->head = c = nc;
  }
  void *r = c->data + c->used;
  c->used += need;
  p->total += need;
  return r;
}

void *sk_pool_calloc(sk_pool_t *p, size_t n) {
  void *r = sk_pool_alloc(p, n);
  memset(r, 0, n);
  return r;
}

char *sk_pool_strndup(sk_pool_t *p, const char *s, size_t n) {
  char *d = sk_pool_alloc(p, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *sk_pool_strdup(sk_pool_t *p, const char *s) { return sk_pool_strndup(p, s, strlen(s)); }

void *sk_pool_memdup(sk_pool_t *p, const void *s, size_t n) {
  void *d = sk_pool_alloc(p, n);
  if (n) memcpy(d, s, n);
  return d;
}

char *sk_pool_printf(sk_pool_t *p, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *d = sk_pool_alloc(p, (size_t)(n < 0 ? 0 : n) + 1);
  vsnprintf(d, (size_t)(n < 0 ? 0 : n) + 1, fmt, ap2);
  va_end(ap2);
  return d;
}

size_t sk_pool_used(const sk_pool_t *p) { return p ? p->total : 0; }

void sk_buf_init(sk_buf_t *b) { memset(b, 0, sizeof(*b)); }

void sk_buf_done(sk_buf_t *b) {
  if (!b) return;
  free(b->data);
  memset(b, 0, sizeof(*b));
}

void sk_buf_reserve(sk_buf_t *b, size_t extra) {
  if (b->cap - b->len > extra) return;
  size_t nc = b->cap ? b->cap : 256;
  while (nc - b->len <= extra) {
    if (nc > SIZE_MAX / 2) sk__oom(extra);
    nc *= 2;
  }
  b->data = sk_xrealloc(b->data, nc);
  b->cap = nc;
}

void sk_buf_append(sk_buf_t *b, const void *data, size_t n) {
  sk_buf_reserve(b, n);
  if (n) memcpy(b->data + b->len, data, n);
  b->len += n;
}

void sk_buf_puts(sk_buf_t *b, const char *s) { sk_buf_append(b, s, strlen(s)); }

void sk_buf_printf(sk_buf_t *b, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n > 0) {
    sk_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    b->len += (size_t)n;
  }
  va_end(ap2);
}

void sk_buf_consume(sk_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void sk_buf_reset(sk_buf_t *b) { b->len = 0; }

char *sk_buf_cstr(sk_buf_t *b) {
  sk_buf_reserve(b, 1);
  b->data[b->len] = 0;
  return b->data;
}
