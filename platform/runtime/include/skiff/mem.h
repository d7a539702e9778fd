/* skiff/mem.h - per-request arenas.
 *
 * A pool hands out memory that lives until sk_pool_clear() or sk_pool_free():
 * one free for everything an HTTP request allocated. */
#ifndef SKIFF_MEM_H
#define SKIFF_MEM_H

#include <stddef.h>

typedef struct sk_pool sk_pool_t;

sk_pool_t *sk_pool_new(void);
void sk_pool_free(sk_pool_t *p); /* accepts NULL */
void sk_pool_clear(sk_pool_t *p); /* releases everything, keeps the first chunk */
/* Never returns NULL: aborts on out-of-memory, like every sk_x*alloc. */
void *sk_pool_alloc(sk_pool_t *p, size_t n);
void *sk_pool_calloc(sk_pool_t *p, size_t n);
char *sk_pool_strndup(sk_pool_t *p, const char *s, size_t n);
char *sk_pool_strdup(sk_pool_t *p, const char *s);
void *sk_pool_memdup(sk_pool_t *p, const void *s, size_t n);
char *sk_pool_printf(sk_pool_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t sk_pool_used(const sk_pool_t *p);

/* Abort-on-OOM allocation wrappers for code that cannot recover. */
void *sk_xmalloc(size_t n);
void *sk_xcalloc(size_t nmemb, size_t n);
void *sk_xrealloc(void *p, size_t n);
char *sk_xstrdup(const char *s);
char *sk_xstrndup(const char *s, size_t n);

/* A growable byte buffer. */
typedef struct sk_buf {
  char *data;
  size_t len, cap;
} sk_buf_t;
void sk_buf_init(sk_buf_t *b);
void sk_buf_done(sk_buf_t *b);
void sk_buf_reserve(sk_buf_t *b, size_t extra);
void sk_buf_append(sk_buf_t *b, const void *data, size_t n);
void sk_buf_puts(sk_buf_t *b, const char *s);
void sk_buf_printf(sk_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sk_buf_consume(sk_buf_t *b, size_t n); /* drop n bytes from the front */
void sk_buf_reset(sk_buf_t *b);
/* NUL-terminates (without counting it) and returns data. */
char *sk_buf_cstr(sk_buf_t *b);

#endif
