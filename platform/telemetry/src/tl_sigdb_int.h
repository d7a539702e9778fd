/* tl_sigdb_int.h - the span/log store's struct, shared by tl_sigdb.c,
 * tl_traces.c and tl_logs.c. */
#ifndef SKIFF_TL_SIGDB_INT_H
#define SKIFF_TL_SIGDB_INT_H

#include "skiff/store.h"

struct tl_sigdb {
  char *path;
  sk_store_t *w; /* writer: the ingest worker only */
  sk_store_t *r; /* reader: query handlers on the loop thread */
  /* the writer's span insert, prepared once, and the reused buffer for the
   * JSON columns of a request's rows (tl_sigdb_row_buf) */
  struct sqlite3_stmt *put_span;
  sk_buf_t sbuf;
};

#endif
