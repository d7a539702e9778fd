/* tl_sigdb_int.h - the span/log store's struct, shared by tl_sigdb.c,
 * tl_traces.c and tl_logs.c. */
#ifndef SKIFF_TL_SIGDB_INT_H
#define SKIFF_TL_SIGDB_INT_H

#include "skiff/store.h"

struct tl_sigdb {
  char *path;
  sk_store_t *w; /* writer: the ingest worker only */
  sk_store_t *r; /* reader: query handlers on the loop thread */
};

#endif
