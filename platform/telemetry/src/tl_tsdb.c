/* tl_tsdb.c - the metrics store: head, inverted index, WAL, sqlite chunks.
 * See tl_tsdb.h for the contract and docs/telemetry-query.md for the design. */
#include "tl_tsdb.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "skiff/err.h"
#include "skiff/store.h"
#include "tl_tsdb_int.h"

#define WAL_SERIES 1
#define WAL_SAMPLES 2
#define WAL_HEADCHUNK 3
#define WAL_MAX_RECORD (256u << 20)
#define WAL_SAMPLES_PER_RECORD 65536

typedef struct cchunk {
  uint8_t *buf;
  uint32_t nbytes, n;
  int64_t mint, maxt;
} cchunk_t;

typedef struct mseries {
  uint64_t id;
  uint8_t *key; /* canonical label encoding, see encode_labels() */
  size_t klen;
  tl_label_t *labels; /* sorted by name; strings point into strs */
  size_t nlabels;
  char *strs;
  const char *metric; /* __name__ value */
  tl_chunk_t head;
  cchunk_t *closed;
  size_t nclosed, capclosed;
  int64_t last_ts;
  uint64_t last_vbits;
  int has_last;
  int64_t disk_mint, disk_maxt; /* chunks in sqlite; INT64_MAX/INT64_MIN when none */
  int in_sqlite;
  int dead; /* marked by maintain for removal */
  int undo; /* has an entry in db->undo */
} mseries_t;

/* A series' in-memory state before its first sample since the last
 * commit: a failed commit puts it back, so a refused request leaves
 * nothing behind (its retry is not "out of order"). */
typedef struct undo {
  mseries_t *s;
  tl_chunk_t head; /* all but buf and cap */
  size_t nclosed;
  int64_t last_ts;
  uint64_t last_vbits;
  int has_last;
} undo_t;

typedef struct postings {
  char *value;
  mseries_t **v; /* sorted by id */
  size_t n, cap;
} postings_t;

typedef struct lname {
  char *name;
  tl__hmap_t values; /* value -> postings_t */
} lname_t;

struct tl_tsdb {
  pthread_mutex_t mu;
  char *dir, *wal_path, *wal_tmp, *db_path;
  tl_tsdb_opts_t o;
  int wal_fd;
  uint64_t wal_size;
  sk_store_t *store;
  tl__hmap_t series; /* key -> mseries_t */
  tl__hmap_t names;  /* name -> lname_t */
  mseries_t **byid;
  size_t byid_cap;
  uint64_t next_id;
  uint64_t nseries;
  sk_buf_t pend_series;  /* framed series records waiting for commit */
  sk_buf_t pend_frames;  /* framed samples records waiting for commit */
  sk_buf_t pend_samples; /* body of the current samples record */
  uint32_t pend_nsamples;
  undo_t *undo; /* series touched since the last commit */
  size_t nundo, capundo;
  char err[256];
  tl_tsdb_stats_t st;
};

static const char *const tsdb_migrations[] = {
    "CREATE TABLE series(id INTEGER PRIMARY KEY, labels BLOB NOT NULL);"
    "CREATE TABLE chunks(series_id INTEGER NOT NULL, mint INTEGER NOT NULL, maxt INTEGER NOT NULL,"
    " n INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX chunks_series ON chunks(series_id, maxt);"
    "CREATE INDEX chunks_maxt ON chunks(maxt);",
};

static void seterr(tl_tsdb_t *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void seterr(tl_tsdb_t *db, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(db->err, sizeof db->err, fmt, ap);
  va_end(ap);
}

/* ---- little-endian helpers ---- */

static void put_u16(sk_buf_t *b, uint16_t v) {
  uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  sk_buf_append(b, x, 2);
}
static void put_u32(sk_buf_t *b, uint32_t v) {
  uint8_t x[4];
  for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
  sk_buf_append(b, x, 4);
}
static void put_u64(sk_buf_t *b, uint64_t v) {
  uint8_t x[8];
  for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
  sk_buf_append(b, x, 8);
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t dbl_bits(double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  return u;
}
static double bits_dbl(uint64_t u) {
  double v;
  memcpy(&v, &u, 8);
  return v;
}

static void frame(sk_buf_t *out, const void *payload, size_t len) {
  put_u32(out, (uint32_t)len);
  put_u32(out, (uint32_t)crc32(0L, payload, (uInt)len));
  sk_buf_append(out, payload, len);
}

/* ---- labels ---- */

static int valid_label_name(const char *s) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (p != s && c >= '0' && c <= '9');
    if (!ok) return 0;
  }
  return 1;
}

static int valid_metric_name(const char *s) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
             (p != s && c >= '0' && c <= '9');
    if (!ok) return 0;
  }
  return 1;
}

static int label_cmp(const void *a, const void *b) {
  const tl_label_t *x = a, *y = b;
  return strcmp(x->name, y->name);
}

/* Canonical encoding: u16 n, then per label u16 len, name, u16 len, value. */
static void encode_labels(sk_buf_t *b, const tl_label_t *l, size_t n) {
  put_u16(b, (uint16_t)n);
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(l[i].name), vl = strlen(l[i].value);
    put_u16(b, (uint16_t)nl);
    sk_buf_append(b, l[i].name, nl);
    put_u16(b, (uint16_t)vl);
    sk_buf_append(b, l[i].value, vl);
  }
}

/* Normalises labels into out (sorted, empty values dropped) and checks
 * them. Returns the count or SK_EINVAL with db->err set. */
static int normalize(tl_tsdb_t *db, const tl_label_t *in, size_t n, tl_label_t *out) {
  size_t k = 0;
  if (n > TL_TSDB_MAX_LABELS) {
    seterr(db, "too many labels: %zu (max %d)", n, TL_TSDB_MAX_LABELS);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    if (!in[i].name || !in[i].value) {
      seterr(db, "label %zu has no name or value", i);
      return SK_EINVAL;
    }
    if (!in[i].value[0]) continue;
    if (!valid_label_name(in[i].name)) {
      seterr(db, "invalid label name \"%.64s\"", in[i].name);
      return SK_EINVAL;
    }
    if (strlen(in[i].value) > TL_TSDB_MAX_LABEL_BYTES || strlen(in[i].name) > TL_TSDB_MAX_LABEL_BYTES) {
      seterr(db, "label \"%.64s\" is longer than %d bytes", in[i].name, TL_TSDB_MAX_LABEL_BYTES);
      return SK_EINVAL;
    }
    out[k++] = in[i];
  }
  qsort(out, k, sizeof *out, label_cmp);
  int has_name = 0;
  for (size_t i = 0; i < k; i++) {
    if (i > 0 && !strcmp(out[i].name, out[i - 1].name)) {
      seterr(db, "duplicate label name \"%.64s\"", out[i].name);
      return SK_EINVAL;
    }
    if (!strcmp(out[i].name, "__name__")) {
      has_name = 1;
      if (!valid_metric_name(out[i].value)) {
        seterr(db, "invalid metric name \"%.64s\"", out[i].value);
        return SK_EINVAL;
      }
    }
  }
  if (!has_name) {
    seterr(db, "sample has no __name__ label");
    return SK_EINVAL;
  }
  return (int)k;
}

/* ---- index ---- */

static void postings_add(postings_t *p, mseries_t *s) {
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 4;
    p->v = sk_xrealloc(p->v, p->cap * sizeof *p->v);
  }
  size_t i = p->n;
  while (i > 0 && p->v[i - 1]->id > s->id) i--; /* ids mostly arrive in order */
  memmove(p->v + i + 1, p->v + i, (p->n - i) * sizeof *p->v);
  p->v[i] = s;
  p->n++;
}

static void postings_del(postings_t *p, mseries_t *s) {
  size_t lo = 0, hi = p->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (p->v[mid]->id < s->id)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < p->n && p->v[lo] == s) {
    memmove(p->v + lo, p->v + lo + 1, (p->n - lo - 1) * sizeof *p->v);
    p->n--;
  }
}

static postings_t *index_postings(tl_tsdb_t *db, const char *name, const char *value, int create) {
  lname_t *ln = tl__hmap_get(&db->names, name, strlen(name));
  if (!ln) {
    if (!create) return NULL;
    ln = sk_xcalloc(1, sizeof *ln);
    ln->name = sk_xstrdup(name);
    tl__hmap_put(&db->names, ln->name, strlen(ln->name), ln);
  }
  postings_t *p = tl__hmap_get(&ln->values, value, strlen(value));
  if (!p && create) {
    p = sk_xcalloc(1, sizeof *p);
    p->value = sk_xstrdup(value);
    tl__hmap_put(&ln->values, p->value, strlen(p->value), p);
  }
  return p;
}

static void index_add(tl_tsdb_t *db, mseries_t *s) {
  for (size_t i = 0; i < s->nlabels; i++)
    postings_add(index_postings(db, s->labels[i].name, s->labels[i].value, 1), s);
}

static void index_del(tl_tsdb_t *db, mseries_t *s) {
  for (size_t i = 0; i < s->nlabels; i++) {
    const char *name = s->labels[i].name, *value = s->labels[i].value;
    lname_t *ln = tl__hmap_get(&db->names, name, strlen(name));
    if (!ln) continue;
    postings_t *p = tl__hmap_get(&ln->values, value, strlen(value));
    if (!p) continue;
    postings_del(p, s);
    if (p->n == 0) {
      tl__hmap_del(&ln->values, value, strlen(value));
      free(p->v);
      free(p->value);
      free(p);
    }
    if (ln->values.n == 0) {
      tl__hmap_del(&db->names, name, strlen(name));
      tl__hmap_free(&ln->values);
      free(ln->name);
      free(ln);
    }
  }
}

/* ---- series ---- */

static void series_free(mseries_t *s) {
  if (!s) return;
  tl_chunk_done(&s->head);
  for (size_t i = 0; i < s->nclosed; i++) free(s->closed[i].buf);
  free(s->closed);
  free(s->key);
  free(s->labels);
  free(s->strs);
  free(s);
}

/* Creates a series from sorted labels and its key; no limit checks. */
static mseries_t *series_create(tl_tsdb_t *db, uint64_t id, const tl_label_t *l, size_t n, const void *key,
                                size_t klen) {
  mseries_t *s = sk_xcalloc(1, sizeof *s);
  s->id = id;
  s->key = sk_xmalloc(klen);
  memcpy(s->key, key, klen);
  s->klen = klen;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += strlen(l[i].name) + strlen(l[i].value) + 2;
  s->strs = sk_xmalloc(total ? total : 1);
  s->labels = sk_xcalloc(n ? n : 1, sizeof *s->labels);
  s->nlabels = n;
  char *p = s->strs;
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(l[i].name) + 1, vl = strlen(l[i].value) + 1;
    memcpy(p, l[i].name, nl);
    s->labels[i].name = p;
    p += nl;
    memcpy(p, l[i].value, vl);
    s->labels[i].value = p;
    p += vl;
    if (!strcmp(s->labels[i].name, "__name__")) s->metric = s->labels[i].value;
  }
  tl_chunk_init(&s->head);
  s->disk_mint = INT64_MAX;
  s->disk_maxt = INT64_MIN;
  if (id >= db->byid_cap) {
    size_t nc = db->byid_cap ? db->byid_cap : 1024;
    while (nc <= id) nc *= 2;
    db->byid = sk_xrealloc(db->byid, nc * sizeof *db->byid);
    memset(db->byid + db->byid_cap, 0, (nc - db->byid_cap) * sizeof *db->byid);
    db->byid_cap = nc;
  }
  db->byid[id] = s;
  if (id >= db->next_id) db->next_id = id + 1;
  tl__hmap_put(&db->series, s->key, s->klen, s);
  index_add(db, s);
  db->nseries++;
  return s;
}

static void series_remove(tl_tsdb_t *db, mseries_t *s) {
  index_del(db, s);
  tl__hmap_del(&db->series, s->key, s->klen);
  if (s->id < db->byid_cap) db->byid[s->id] = NULL;
  db->nseries--;
  db->st.head_samples -= s->head.n;
  for (size_t i = 0; i < s->nclosed; i++) db->st.head_samples -= s->closed[i].n;
  series_free(s);
}

/* Decodes a canonical label blob into a malloc'd label array whose strings
 * live in *strs. Returns the count or SK_EPARSE. */
static int decode_labels(const uint8_t *p, size_t len, tl_label_t **out, char **strs) {
  if (len < 2) return SK_EPARSE;
  size_t n = get_u16(p), off = 2;
  if (n > TL_TSDB_MAX_LABELS) return SK_EPARSE;
  tl_label_t *l = sk_xcalloc(n ? n : 1, sizeof *l);
  char *s = sk_xmalloc(len + 2 * n + 1), *w = s;
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < 2; k++) {
      if (off + 2 > len) goto bad;
      size_t sl = get_u16(p + off);
      off += 2;
      if (off + sl > len) goto bad;
      memcpy(w, p + off, sl);
      w[sl] = 0;
      if (k == 0)
        l[i].name = w;
      else
        l[i].value = w;
      w += sl + 1;
      off += sl;
    }
  }
  if (off != len) goto bad;
  *out = l;
  *strs = s;
  return (int)n;
bad:
  free(l);
  free(s);
  return SK_EPARSE;
}

static void close_head(tl_tsdb_t *db, mseries_t *s) {
  if (s->nclosed == s->capclosed) {
    s->capclosed = s->capclosed ? s->capclosed * 2 : 2;
    s->closed = sk_xrealloc(s->closed, s->capclosed * sizeof *s->closed);
  }
  size_t nb = tl_chunk_bytes(&s->head);
  cchunk_t *c = &s->closed[s->nclosed++];
  c->buf = sk_xrealloc(s->head.buf, nb ? nb : 1);
  c->nbytes = (uint32_t)nb;
  c->n = s->head.n;
  c->mint = s->head.mint;
  c->maxt = s->head.maxt;
  db->st.head_chunks++;
  s->head.buf = NULL;
  tl_chunk_init(&s->head);
}

/* Appends to the series' head after the ordering check. 1 = appended,
 * 0 = identical duplicate ignored, < 0 = rejected (db->err set). */
static int series_add(tl_tsdb_t *db, mseries_t *s, int64_t ts, double v) {
  uint64_t vb = dbl_bits(v);
  if (s->has_last) {
    if (ts < s->last_ts) {
      seterr(db, "out of order sample: ts %lld is older than the series' newest %lld", (long long)ts,
             (long long)s->last_ts);
      return SK_ERANGE;
    }
    if (ts == s->last_ts) {
      if (vb == s->last_vbits) return 0;
      seterr(db, "duplicate sample for timestamp %lld with a different value", (long long)ts);
      return SK_EEXIST;
    }
  } else if (ts <= s->disk_maxt) {
    seterr(db, "out of order sample: ts %lld is not after the stored data", (long long)ts);
    return SK_ERANGE;
  }
  if (s->head.n == 0) db->st.head_chunks++;
  size_t before = tl_chunk_bytes(&s->head);
  tl_chunk_append(&s->head, ts, v);
  db->st.head_bytes += tl_chunk_bytes(&s->head) - before;
  db->st.head_samples++;
  s->last_ts = ts;
  s->last_vbits = vb;
  s->has_last = 1;
  if (ts < db->st.min_time) db->st.min_time = ts;
  if (ts > db->st.max_time) db->st.max_time = ts;
  if (s->head.n >= TL_TSDB_CHUNK_SAMPLES) {
    db->st.head_chunks--; /* close_head counts it again */
    close_head(db, s);
  }
  return 1;
}

/* ---- staging ---- */

static void stage_sample(tl_tsdb_t *db, uint64_t id, int64_t ts, double v) {
  if (db->pend_nsamples == 0) {
    sk_buf_reset(&db->pend_samples);
    uint8_t t = WAL_SAMPLES;
    sk_buf_append(&db->pend_samples, &t, 1);
    put_u32(&db->pend_samples, 0); /* count, patched when framed */
  }
  put_u64(&db->pend_samples, id);
  put_u64(&db->pend_samples, (uint64_t)ts);
  put_u64(&db->pend_samples, dbl_bits(v));
  db->pend_nsamples++;
  if (db->pend_nsamples >= WAL_SAMPLES_PER_RECORD) {
    uint8_t *c = (uint8_t *)db->pend_samples.data + 1;
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(db->pend_nsamples >> (8 * i));
    frame(&db->pend_frames, db->pend_samples.data, db->pend_samples.len);
    db->pend_nsamples = 0;
  }
}

static int append_locked(tl_tsdb_t *db, const tl_label_t *labels, size_t n, int64_t ts, double v) {
  tl_label_t norm[TL_TSDB_MAX_LABELS];
  int k = normalize(db, labels, n, norm);
  if (k < 0) return k;
  sk_buf_t key;
  sk_buf_init(&key);
  encode_labels(&key, norm, (size_t)k);
  int rc = 0;
  mseries_t *s = tl__hmap_get(&db->series, key.data, key.len);
  if (!s) {
    const char *metric = "";
    for (int i = 0; i < k; i++)
      if (!strcmp(norm[i].name, "__name__")) metric = norm[i].value;
    if (db->nseries >= db->o.max_series) {
      seterr(db, "series limit reached: %llu series (max_series)", (unsigned long long)db->nseries);
      rc = SK_ELIMIT;
      goto out;
    }
    postings_t *p = index_postings(db, "__name__", metric, 0);
    if (p && p->n >= db->o.max_series_per_metric) {
      seterr(db, "series limit per metric reached: metric \"%.100s\" has %zu series (max_series_per_metric)",
             metric, p->n);
      rc = SK_ELIMIT;
      goto out;
    }
    s = series_create(db, db->next_id, norm, (size_t)k, key.data, key.len);
    sk_buf_t rec;
    sk_buf_init(&rec);
    uint8_t t = WAL_SERIES;
    sk_buf_append(&rec, &t, 1);
    put_u64(&rec, s->id);
    sk_buf_append(&rec, key.data, key.len);
    frame(&db->pend_series, rec.data, rec.len);
    sk_buf_done(&rec);
  }
  if (!s->undo) {
    if (db->nundo == db->capundo) {
      db->capundo = db->capundo ? db->capundo * 2 : 64;
      db->undo = sk_xrealloc(db->undo, db->capundo * sizeof *db->undo);
    }
    db->undo[db->nundo++] = (undo_t){.s = s, .head = s->head, .nclosed = s->nclosed, .last_ts = s->last_ts,
                                     .last_vbits = s->last_vbits, .has_last = s->has_last};
    s->undo = 1;
  }
  rc = series_add(db, s, ts, v);
  if (rc == 1) stage_sample(db, s->id, ts, v);
  if (rc >= 0) rc = 0;
out:
  sk_buf_done(&key);
  return rc;
}

int tl_tsdb_append(tl_tsdb_t *db, const tl_label_t *labels, size_t n, int64_t ts_ms, double v) {
  pthread_mutex_lock(&db->mu);
  int rc = append_locked(db, labels, n, ts_ms, v);
  if (rc == 0)
    db->st.samples_appended++;
  else
    db->st.samples_rejected++;
  pthread_mutex_unlock(&db->mu);
  return rc;
}

int tl_tsdb_append_batch(tl_tsdb_t *db, const tl_sample_in_t *s, size_t n, tl_append_result_t *res) {
  tl_append_result_t local;
  if (!res) res = &local;
  memset(res, 0, sizeof *res);
  pthread_mutex_lock(&db->mu);
  for (size_t i = 0; i < n; i++) {
    int rc = append_locked(db, s[i].labels, s[i].nlabels, s[i].ts_ms, s[i].v);
    if (rc == 0) {
      res->accepted++;
      db->st.samples_appended++;
      continue;
    }
    db->st.samples_rejected++;
    if (rc == SK_ELIMIT)
      res->rejected_limit++;
    else if (rc == SK_EINVAL)
      res->rejected_invalid++;
    else
      res->rejected_order++;
    if (!res->first_error[0]) snprintf(res->first_error, sizeof res->first_error, "%s", db->err);
  }
  pthread_mutex_unlock(&db->mu);
  return (int)res->accepted;
}

static int write_all(int fd, const void *p, size_t len) {
  const char *c = p;
  while (len > 0) {
    ssize_t w = write(fd, c, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sk_err_from_errno(errno);
    }
    c += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Chunks, bytes and samples a series holds in memory from closed chunk
 * `from` on, its head included. */
static void series_mem(const mseries_t *s, size_t from, size_t *chunks, size_t *bytes, size_t *samples) {
  *chunks = s->head.n ? 1 : 0;
  *bytes = tl_chunk_bytes(&s->head);
  *samples = s->head.n;
  for (size_t i = from; i < s->nclosed; i++) {
    (*chunks)++;
    *bytes += s->closed[i].nbytes;
    *samples += s->closed[i].n;
  }
}

static void undo_forget(tl_tsdb_t *db) {
  for (size_t i = 0; i < db->nundo; i++) db->undo[i].s->undo = 0;
  db->nundo = 0;
}

/* Puts every series touched since the last commit back as it was then
 * (series created since stay, empty; their records are still written). */
static void undo_restore(tl_tsdb_t *db) {
  for (size_t i = db->nundo; i-- > 0;) {
    undo_t *u = &db->undo[i];
    mseries_t *s = u->s;
    size_t c0, b0, n0, c1, b1, n1;
    series_mem(s, u->nclosed, &c0, &b0, &n0);
    if (s->nclosed > u->nclosed) { /* the head then was closed since: take it back */
      tl_chunk_done(&s->head);
      cchunk_t *c = &s->closed[u->nclosed];
      s->head.buf = c->buf;
      s->head.cap = c->nbytes ? c->nbytes : 1;
      for (size_t k = u->nclosed + 1; k < s->nclosed; k++) free(s->closed[k].buf);
      s->nclosed = u->nclosed;
    }
    uint8_t *buf = s->head.buf;
    size_t cap = s->head.cap;
    s->head = u->head;
    s->head.buf = buf;
    s->head.cap = cap;
    if (buf) { /* clear the bits written since: appends OR into the buffer */
      size_t byte = s->head.nbits / 8;
      unsigned used = (unsigned)(s->head.nbits % 8);
      if (byte < cap && used) buf[byte++] &= (uint8_t)(0xffu << (8 - used));
      if (byte < cap) memset(buf + byte, 0, cap - byte);
    }
    s->last_ts = u->last_ts;
    s->last_vbits = u->last_vbits;
    s->has_last = u->has_last;
    s->undo = 0;
    series_mem(s, u->nclosed, &c1, &b1, &n1);
    db->st.head_chunks -= c0 - c1;
    db->st.head_bytes -= b0 - b1;
    db->st.head_samples -= n0 - n1;
  }
  db->nundo = 0;
}

static int commit_locked(tl_tsdb_t *db) {
  if (db->pend_nsamples == 0 && db->pend_frames.len == 0 && db->pend_series.len == 0) {
    undo_forget(db);
    return 0;
  }
  if (db->wal_fd < 0) {
    seterr(db, "the WAL is not open (an earlier failure)");
    undo_restore(db);
    sk_buf_reset(&db->pend_frames);
    sk_buf_reset(&db->pend_samples);
    db->pend_nsamples = 0;
    return SK_EIO;
  }
  sk_buf_t out;
  sk_buf_init(&out);
  sk_buf_append(&out, db->pend_series.data, db->pend_series.len);
  sk_buf_append(&out, db->pend_frames.data, db->pend_frames.len);
  if (db->pend_nsamples) {
    uint8_t *c = (uint8_t *)db->pend_samples.data + 1;
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(db->pend_nsamples >> (8 * i));
    frame(&out, db->pend_samples.data, db->pend_samples.len);
  }
  int rc = write_all(db->wal_fd, out.data, out.len);
  if (rc == 0 && !db->o.no_sync && fdatasync(db->wal_fd) < 0) rc = sk_err_from_errno(errno);
  if (rc < 0) {
    seterr(db, "WAL write failed: %s", sk_strerror(rc));
    /* cut a partial write off so later records stay readable */
    if (ftruncate(db->wal_fd, (off_t)db->wal_size) < 0) {
      close(db->wal_fd);
      db->wal_fd = -1;
    }
    /* the samples are refused: out of memory too; the series records
     * stay pending (the series exist, empty) */
    undo_restore(db);
    sk_buf_reset(&db->pend_frames);
    sk_buf_reset(&db->pend_samples);
    db->pend_nsamples = 0;
    goto out;
  }
  db->wal_size += out.len;
  db->st.commits++;
  sk_buf_reset(&db->pend_series);
  sk_buf_reset(&db->pend_frames);
  sk_buf_reset(&db->pend_samples);
  db->pend_nsamples = 0;
  undo_forget(db);
out:
  sk_buf_done(&out);
  return rc;
}

int tl_tsdb_commit(tl_tsdb_t *db) {
  pthread_mutex_lock(&db->mu);
  int rc = commit_locked(db);
  pthread_mutex_unlock(&db->mu);
  return rc;
}

void tl_tsdb_errmsg(tl_tsdb_t *db, char *buf, size_t len) {
  pthread_mutex_lock(&db->mu);
  snprintf(buf, len, "%s", db->err);
  pthread_mutex_unlock(&db->mu);
}

/* ---- WAL replay ---- */

static void replay_sample(tl_tsdb_t *db, uint64_t id, int64_t ts, double v) {
  if (id >= db->byid_cap || !db->byid[id]) return;
  mseries_t *s = db->byid[id];
  if (ts <= s->disk_maxt) return; /* already moved to sqlite */
  (void)series_add(db, s, ts, v);
}

static int replay_record(tl_tsdb_t *db, const uint8_t *p, size_t len) {
  if (len < 1) return SK_EPARSE;
  switch (p[0]) {
  case WAL_SERIES: {
    if (len < 9) return SK_EPARSE;
    uint64_t id = get_u64(p + 1);
    if (id == 0 || id > ((uint64_t)1 << 40)) return SK_EPARSE;
    tl_label_t *l;
    char *strs;
    int n = decode_labels(p + 9, len - 9, &l, &strs);
    if (n < 0) return n;
    if (!(id < db->byid_cap && db->byid[id]) && !tl__hmap_get(&db->series, p + 9, len - 9))
      series_create(db, id, l, (size_t)n, p + 9, len - 9);
    free(l);
    free(strs);
    return 0;
  }
  case WAL_SAMPLES: {
    if (len < 5) return SK_EPARSE;
    uint32_t n = get_u32(p + 1);
    if ((len - 5) / 24 != n || (len - 5) % 24) return SK_EPARSE;
    for (uint32_t i = 0; i < n; i++) {
      const uint8_t *q = p + 5 + (size_t)i * 24;
      replay_sample(db, get_u64(q), (int64_t)get_u64(q + 8), bits_dbl(get_u64(q + 16)));
    }
    return 0;
  }
  case WAL_HEADCHUNK: {
    if (len < 17) return SK_EPARSE;
    uint64_t id = get_u64(p + 1);
    uint32_t n = get_u32(p + 9), nb = get_u32(p + 13);
    if (nb != len - 17) return SK_EPARSE;
    tl_chunk_iter_t it;
    tl_chunk_iter_init(&it, p + 17, nb, n);
    int64_t ts;
    double v;
    int r;
    while ((r = tl_chunk_iter_next(&it, &ts, &v)) == 1) replay_sample(db, id, ts, v);
    return r < 0 ? r : 0;
  }
  default:
    return SK_EPARSE;
  }
}

static int replay_wal(tl_tsdb_t *db, char *err, size_t errlen) {
  struct stat sb;
  if (fstat(db->wal_fd, &sb) < 0) return sk_err_from_errno(errno);
  size_t size = (size_t)sb.st_size, off = 0;
  uint8_t *data = sk_xmalloc(size ? size : 1);
  size_t got = 0;
  while (got < size) {
    ssize_t r = pread(db->wal_fd, data + got, size - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      free(data);
      snprintf(err, errlen, "%s: read failed", db->wal_path);
      return SK_EIO;
    }
    got += (size_t)r;
  }
  while (off + 8 <= size) {
    uint32_t len = get_u32(data + off), crc = get_u32(data + off + 4);
    if (len > WAL_MAX_RECORD || len > size - off - 8) break;
    if ((uint32_t)crc32(0L, data + off + 8, len) != crc) break;
    if (replay_record(db, data + off + 8, len) < 0) break;
    off += 8 + (size_t)len;
  }
  free(data);
  if (off < size) {
    /* a torn or corrupt tail: nothing after it was acknowledged */
    if (ftruncate(db->wal_fd, (off_t)off) < 0 || fdatasync(db->wal_fd) < 0) {
      snprintf(err, errlen, "%s: cannot cut the torn tail", db->wal_path);
      return SK_EIO;
    }
  }
  db->wal_size = off;
  return 0;
}

/* ---- sqlite ---- */

static int load_series_row(sk_stmt_t *row, void *ud) {
  tl_tsdb_t *db = ud;
  uint64_t id = (uint64_t)sk_stmt_int64(row, 0);
  size_t len;
  const uint8_t *blob = sk_stmt_blob(row, 1, &len);
  tl_label_t *l;
  char *strs;
  if (id == 0 || id > ((uint64_t)1 << 40)) return 0;
  int n = decode_labels(blob, len, &l, &strs);
  if (n < 0) return 0;
  if (!tl__hmap_get(&db->series, blob, len)) {
    mseries_t *s = series_create(db, id, l, (size_t)n, blob, len);
    s->in_sqlite = 1;
  }
  free(l);
  free(strs);
  return 0;
}

static int load_bounds_row(sk_stmt_t *row, void *ud) {
  tl_tsdb_t *db = ud;
  uint64_t id = (uint64_t)sk_stmt_int64(row, 0);
  if (id >= db->byid_cap || !db->byid[id]) return 0;
  db->byid[id]->disk_mint = sk_stmt_int64(row, 1);
  db->byid[id]->disk_maxt = sk_stmt_int64(row, 2);
  return 0;
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

int tl_tsdb_open(const char *dir, const tl_tsdb_opts_t *o, tl_tsdb_t **out, char *err, size_t errlen) {
  char dummy[8];
  if (!err) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = 0;
  *out = NULL;
  if (!dir || !*dir) {
    snprintf(err, errlen, "no directory given");
    return SK_EINVAL;
  }
  int rc = 0;
  tl_tsdb_t *db = sk_xcalloc(1, sizeof *db);
  pthread_mutex_init(&db->mu, NULL);
  db->wal_fd = -1;
  db->next_id = 1;
  db->st.min_time = INT64_MAX;
  db->st.max_time = INT64_MIN;
  if (o) db->o = *o;
  if (db->o.retention_ms <= 0) db->o.retention_ms = 15LL * 24 * 3600 * 1000;
  if (!db->o.max_series_per_metric) db->o.max_series_per_metric = 100000;
  if (!db->o.max_series) db->o.max_series = 2000000;
  sk_buf_init(&db->pend_series);
  sk_buf_init(&db->pend_frames);
  sk_buf_init(&db->pend_samples);
  db->dir = sk_xstrdup(dir);
  size_t dl = strlen(dir) + 32;
  db->wal_path = sk_xmalloc(dl);
  db->wal_tmp = sk_xmalloc(dl);
  db->db_path = sk_xmalloc(dl);
  snprintf(db->wal_path, dl, "%s/wal", dir);
  snprintf(db->wal_tmp, dl, "%s/wal.tmp", dir);
  snprintf(db->db_path, dl, "%s/tsdb.sqlite", dir);

  if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
    rc = sk_err_from_errno(errno);
    snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
    goto out;
  }
  (void)unlink(db->wal_tmp);
  sk_store_opts_t so = {.path = db->db_path, .migrations = tsdb_migrations, .nmigrations = 1};
  if (db->o.no_sync) so.non_durable = 1;
  rc = sk_store_open(&so, &db->store);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", db->db_path, sk_store_open_errmsg());
    goto out;
  }
  rc = sk_store_query(db->store, "SELECT id, labels FROM series ORDER BY id", NULL, 0, load_series_row, db);
  if (rc >= 0)
    rc = sk_store_query(db->store, "SELECT series_id, MIN(mint), MAX(maxt) FROM chunks GROUP BY series_id", NULL,
                        0, load_bounds_row, db);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", db->db_path, sk_store_errmsg(db->store));
    goto out;
  }
  struct stat sb;
  int existed = stat(db->wal_path, &sb) == 0;
  db->wal_fd = open(db->wal_path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (db->wal_fd < 0) {
    rc = sk_err_from_errno(errno);
    snprintf(err, errlen, "%s: %s", db->wal_path, strerror(errno));
    goto out;
  }
  if (!existed) fsync_dir(dir);
  rc = replay_wal(db, err, errlen);
  if (rc < 0) goto out;
  db->st.samples_appended = 0;
  *out = db;
  return 0;
out:
  tl_tsdb_close(db);
  return rc < 0 ? rc : SK_EIO;
}

void tl_tsdb_close(tl_tsdb_t *db) {
  if (!db) return;
  (void)commit_locked(db);
  if (db->wal_fd >= 0) close(db->wal_fd);
  sk_store_close(db->store);
  for (size_t i = 0; i < db->byid_cap; i++) series_free(db->byid[i]);
  free(db->byid);
  tl__hmap_free(&db->series);
  for (size_t i = 0; i < db->names.cap; i++) {
    lname_t *ln = db->names.e[i].hash ? db->names.e[i].val : NULL;
    if (!ln) continue;
    for (size_t j = 0; j < ln->values.cap; j++) {
      postings_t *p = ln->values.e[j].hash ? ln->values.e[j].val : NULL;
      if (!p) continue;
      free(p->v);
      free(p->value);
      free(p);
    }
    tl__hmap_free(&ln->values);
    free(ln->name);
    free(ln);
  }
  tl__hmap_free(&db->names);
  sk_buf_done(&db->pend_series);
  sk_buf_done(&db->pend_frames);
  sk_buf_done(&db->pend_samples);
  free(db->undo);
  pthread_mutex_destroy(&db->mu);
  free(db->dir);
  free(db->wal_path);
  free(db->wal_tmp);
  free(db->db_path);
  free(db);
}

/* ---- maintenance ---- */

typedef struct maint {
  tl_tsdb_t *db;
  int64_t cutoff;
} maint_t;

static int maintain_tx(sk_store_t *st, void *ud) {
  maint_t *m = ud;
  tl_tsdb_t *db = m->db;
  int rc;
  for (size_t i = 0; i < db->byid_cap; i++) {
    mseries_t *s = db->byid[i];
    if (!s) continue;
    if (s->has_last ? s->last_ts < m->cutoff : s->disk_maxt < m->cutoff) {
      s->dead = 1;
      if (s->in_sqlite) {
        rc = sk_store_exec(st, "DELETE FROM chunks WHERE series_id = ?1", SK_SQL_ARGS(SK_SQL_INT(s->id)));
        if (rc < 0) return rc;
        rc = sk_store_exec(st, "DELETE FROM series WHERE id = ?1", SK_SQL_ARGS(SK_SQL_INT(s->id)));
        if (rc < 0) return rc;
      }
      continue;
    }
    if (!s->in_sqlite) {
      rc = sk_store_exec(st, "INSERT OR REPLACE INTO series(id, labels) VALUES(?1, ?2)",
                         SK_SQL_ARGS(SK_SQL_INT(s->id), SK_SQL_BLOB(s->key, s->klen)));
      if (rc < 0) return rc;
    }
    for (size_t j = 0; j < s->nclosed; j++) {
      cchunk_t *c = &s->closed[j];
      if (c->maxt < m->cutoff) continue;
      rc = sk_store_exec(st, "INSERT INTO chunks(series_id, mint, maxt, n, data) VALUES(?1, ?2, ?3, ?4, ?5)",
                         SK_SQL_ARGS(SK_SQL_INT(s->id), SK_SQL_INT(c->mint), SK_SQL_INT(c->maxt),
                                     SK_SQL_INT(c->n), SK_SQL_BLOB(c->buf, c->nbytes)));
      if (rc < 0) return rc;
    }
  }
  rc = sk_store_exec(st, "DELETE FROM chunks WHERE maxt < ?1", SK_SQL_ARGS(SK_SQL_INT(m->cutoff)));
  return rc < 0 ? rc : 0;
}

static int rewrite_wal(tl_tsdb_t *db) {
  sk_buf_t out, rec;
  sk_buf_init(&out);
  sk_buf_init(&rec);
  int rc = 0, fd = -1;
  for (size_t i = 0; i < db->byid_cap; i++) {
    mseries_t *s = db->byid[i];
    if (!s || s->head.n == 0) continue;
    sk_buf_reset(&rec);
    uint8_t t = WAL_HEADCHUNK;
    sk_buf_append(&rec, &t, 1);
    put_u64(&rec, s->id);
    put_u32(&rec, s->head.n);
    put_u32(&rec, (uint32_t)tl_chunk_bytes(&s->head));
    sk_buf_append(&rec, s->head.buf, tl_chunk_bytes(&s->head));
    frame(&out, rec.data, rec.len);
  }
  fd = open(db->wal_tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    rc = sk_err_from_errno(errno);
    goto out;
  }
  rc = write_all(fd, out.data, out.len);
  if (rc == 0 && !db->o.no_sync && fdatasync(fd) < 0) rc = sk_err_from_errno(errno);
  if (rc == 0 && rename(db->wal_tmp, db->wal_path) < 0) rc = sk_err_from_errno(errno);
  if (rc < 0) goto out;
  if (!db->o.no_sync) fsync_dir(db->dir);
  close(db->wal_fd);
  db->wal_fd = open(db->wal_path, O_RDWR | O_APPEND | O_CLOEXEC);
  if (db->wal_fd < 0) rc = sk_err_from_errno(errno);
  db->wal_size = out.len;
out:
  if (fd >= 0) close(fd);
  if (rc < 0) {
    (void)unlink(db->wal_tmp);
    seterr(db, "WAL rewrite failed: %s", sk_strerror(rc));
  }
  sk_buf_done(&out);
  sk_buf_done(&rec);
  return rc;
}

int tl_tsdb_maintain(tl_tsdb_t *db, int64_t now_ms) {
  pthread_mutex_lock(&db->mu);
  int rc = commit_locked(db);
  if (rc < 0) goto out;
  maint_t m = {db, now_ms - db->o.retention_ms};
  for (size_t i = 0; i < db->byid_cap; i++)
    if (db->byid[i]) db->byid[i]->dead = 0;
  rc = sk_store_tx(db->store, maintain_tx, &m);
  if (rc < 0) {
    seterr(db, "compaction failed: %s", sk_store_errmsg(db->store));
    goto out;
  }
  for (size_t i = 0; i < db->byid_cap; i++) {
    mseries_t *s = db->byid[i];
    if (!s) continue;
    if (s->dead) {
      series_remove(db, s);
      continue;
    }
    s->in_sqlite = 1;
    for (size_t j = 0; j < s->nclosed; j++) {
      cchunk_t *c = &s->closed[j];
      if (c->maxt >= m.cutoff) {
        if (c->mint < s->disk_mint) s->disk_mint = c->mint;
        if (c->maxt > s->disk_maxt) s->disk_maxt = c->maxt;
        db->st.persisted_chunks++;
      }
      db->st.head_samples -= c->n;
      db->st.head_bytes -= c->nbytes;
      db->st.head_chunks--;
      free(c->buf);
    }
    s->nclosed = 0;
    if (s->disk_mint < m.cutoff && s->disk_maxt >= m.cutoff) s->disk_mint = m.cutoff;
  }
  rc = rewrite_wal(db);
out:
  pthread_mutex_unlock(&db->mu);
  return rc;
}

/* ---- matchers ---- */

int tl_matcher_init(tl_matcher_t *m, tl_match_op_t op, const char *name, const char *value, char *err,
                    size_t errlen) {
  memset(m, 0, sizeof *m);
  m->op = op;
  m->name = name;
  m->value = value;
  if (op != TL_MATCH_RE && op != TL_MATCH_NRE) return 0;
  int r = tl_re_compile(&m->re, value, TL_RE_ANCHOR | TL_RE_NOSUB, NULL, 0, err, errlen);
  if (r < 0) return r;
  m->re_ok = 1;
  /* Common shapes answered without regexec: "lit", "lit.*" (incl. ".*")
   * and ".+". The '.' matches any byte here, newline included, as in
   * Prometheus ((?s) mode) and in the compiled POSIX regex. */
  size_t n = strlen(value), lit = strcspn(value, "\\.^$|?*+()[]{}");
  if (lit == n)
    m->re_fast = TL_RE_FAST_EXACT;
  else if (lit + 2 == n && value[lit] == '.' && value[lit + 1] == '*')
    m->re_fast = TL_RE_FAST_PREFIX;
  else if (n == 2 && value[0] == '.' && value[1] == '+')
    m->re_fast = TL_RE_FAST_NONEMPTY;
  m->re_lit = lit;
  return 0;
}

/* The anchored regex of m matches value (m is RE or NRE, compiled). */
static int matcher_re(const tl_matcher_t *m, const char *value) {
  switch (m->re_fast) {
  case TL_RE_FAST_EXACT: return !strcmp(value, m->value);
  case TL_RE_FAST_PREFIX: return !strncmp(value, m->value, m->re_lit);
  case TL_RE_FAST_NONEMPTY: return value[0] != 0;
  }
  return regexec(&m->re, value, 0, NULL, 0) == 0;
}

void tl_matcher_done(tl_matcher_t *m) {
  if (m && m->re_ok) {
    regfree(&m->re);
    m->re_ok = 0;
  }
}

int tl_matcher_matches(const tl_matcher_t *m, const char *value) {
  if (!value) value = "";
  switch (m->op) {
  case TL_MATCH_EQ:
    return !strcmp(value, m->value);
  case TL_MATCH_NE:
    return strcmp(value, m->value) != 0;
  case TL_MATCH_RE:
    return m->re_ok && matcher_re(m, value);
  case TL_MATCH_NRE:
    return !(m->re_ok && matcher_re(m, value));
  }
  return 0;
}

/* ---- select ---- */

static const char *series_get(const mseries_t *s, const char *name) {
  for (size_t i = 0; i < s->nlabels; i++)
    if (!strcmp(s->labels[i].name, name)) return s->labels[i].value;
  return NULL;
}

static int series_matches(const mseries_t *s, const tl_matcher_t *m, size_t nm) {
  for (size_t i = 0; i < nm; i++)
    if (!tl_matcher_matches(&m[i], series_get(s, m[i].name))) return 0;
  return 1;
}

typedef struct svec {
  mseries_t **v;
  size_t n, cap;
} svec_t;

static void svec_push(svec_t *v, mseries_t *s) {
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 64;
    v->v = sk_xrealloc(v->v, v->cap * sizeof *v->v);
  }
  v->v[v->n++] = s;
}

/* Series matching every matcher. */
static int candidates(tl_tsdb_t *db, const tl_matcher_t *m, size_t nm, svec_t *out) {
  const postings_t *best = NULL;
  int have_best = 0;
  for (size_t i = 0; i < nm; i++) {
    if (m[i].op != TL_MATCH_EQ || !m[i].value[0]) continue;
    const postings_t *p = index_postings(db, m[i].name, m[i].value, 0);
    if (!p) return 0; /* nothing can match */
    if (!have_best || p->n < best->n) best = p;
    have_best = 1;
  }
  if (have_best) {
    for (size_t i = 0; i < best->n; i++)
      if (series_matches(best->v[i], m, nm)) svec_push(out, best->v[i]);
    return 0;
  }
  for (size_t i = 0; i < nm; i++) {
    if (m[i].op != TL_MATCH_RE || tl_matcher_matches(&m[i], "")) continue;
    lname_t *ln = tl__hmap_get(&db->names, m[i].name, strlen(m[i].name));
    if (!ln) return 0;
    for (size_t j = 0; j < ln->values.cap; j++) {
      postings_t *p = ln->values.e[j].hash ? ln->values.e[j].val : NULL;
      if (!p || !tl_matcher_matches(&m[i], p->value)) continue;
      for (size_t k = 0; k < p->n; k++)
        if (series_matches(p->v[k], m, nm)) svec_push(out, p->v[k]);
    }
    return 0;
  }
  for (size_t i = 0; i < db->byid_cap; i++)
    if (db->byid[i] && series_matches(db->byid[i], m, nm)) svec_push(out, db->byid[i]);
  return 0;
}

typedef struct samples {
  int64_t *ts;
  double *v;
  size_t n, cap;
} samples_t;

static void samples_push(samples_t *s, int64_t ts, double v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 256;
    s->ts = sk_xrealloc(s->ts, s->cap * sizeof *s->ts);
    s->v = sk_xrealloc(s->v, s->cap * sizeof *s->v);
  }
  s->ts[s->n] = ts;
  s->v[s->n++] = v;
}

static int decode_into(samples_t *out, const uint8_t *buf, size_t nb, uint32_t n, int64_t mint, int64_t maxt) {
  tl_chunk_iter_t it;
  tl_chunk_iter_init(&it, buf, nb, n);
  int64_t ts;
  double v;
  int r;
  while ((r = tl_chunk_iter_next(&it, &ts, &v)) == 1) {
    if (ts > maxt) break;
    if (ts >= mint) samples_push(out, ts, v);
  }
  return r < 0 ? r : 0;
}

static int series_samples(tl_tsdb_t *db, const mseries_t *s, int64_t mint, int64_t maxt, samples_t *out) {
  int rc = 0;
  if (s->in_sqlite && s->disk_maxt >= mint && s->disk_mint <= maxt) {
    sk_stmt_t *st = NULL;
    rc = sk_store_prepare(db->store,
                          "SELECT data, n FROM chunks WHERE series_id = ?1 AND maxt >= ?2 AND mint <= ?3 ORDER BY mint",
                          &st);
    if (rc < 0) return rc;
    sk_stmt_bind(st, SK_SQL_ARGS(SK_SQL_INT(s->id), SK_SQL_INT(mint), SK_SQL_INT(maxt)));
    while ((rc = sk_stmt_step(st)) == 1) {
      size_t nb;
      const uint8_t *b = sk_stmt_blob(st, 0, &nb);
      (void)decode_into(out, b, nb, (uint32_t)sk_stmt_int64(st, 1), mint, maxt);
    }
    sk_stmt_done(st);
    if (rc < 0) return rc;
  }
  for (size_t i = 0; i < s->nclosed; i++) {
    const cchunk_t *c = &s->closed[i];
    if (c->maxt < mint || c->mint > maxt) continue;
    (void)decode_into(out, c->buf, c->nbytes, c->n, mint, maxt);
  }
  if (s->head.n && s->head.maxt >= mint && s->head.mint <= maxt)
    (void)decode_into(out, s->head.buf, tl_chunk_bytes(&s->head), s->head.n, mint, maxt);
  return 0;
}

static int cmp_labels(const tl_label_t *a, size_t na, const tl_label_t *b, size_t nb) {
  for (size_t i = 0; i < na && i < nb; i++) {
    int c = strcmp(a[i].name, b[i].name);
    if (c) return c;
    c = strcmp(a[i].value, b[i].value);
    if (c) return c;
  }
  return na < nb ? -1 : na > nb;
}

static int series_out_cmp(const void *a, const void *b) {
  const tl_series_t *x = a, *y = b;
  return cmp_labels(x->labels, x->nlabels, y->labels, y->nlabels);
}

static int select_locked(tl_tsdb_t *db, sk_pool_t *pool, const tl_matcher_t *m, size_t nm, int64_t mint,
                         int64_t maxt, int flags, size_t limit, tl_series_t **out, size_t *nout) {
  *out = NULL;
  *nout = 0;
  int nonempty = 0;
  for (size_t i = 0; i < nm; i++)
    if (!tl_matcher_matches(&m[i], "")) nonempty = 1;
  if (!nonempty) {
    seterr(db, "vector selector must contain at least one non-empty matcher");
    return SK_EINVAL;
  }
  svec_t cand = {0};
  samples_t smp = {0};
  int rc = candidates(db, m, nm, &cand);
  tl_series_t *res = cand.n ? sk_pool_alloc(pool, cand.n * sizeof *res) : NULL;
  size_t k = 0;
  for (size_t i = 0; i < cand.n && rc >= 0; i++) {
    mseries_t *s = cand.v[i];
    tl_series_t *o = &res[k];
    memset(o, 0, sizeof *o);
    if (flags & TL_SELECT_NO_SAMPLES) {
      int64_t smin = s->disk_mint;
      if (s->nclosed && s->closed[0].mint < smin) smin = s->closed[0].mint;
      if (s->head.n && s->head.mint < smin) smin = s->head.mint;
      int64_t smax = s->has_last ? s->last_ts : s->disk_maxt;
      if (smax < mint || smin > maxt) continue;
    } else {
      smp.n = 0;
      rc = series_samples(db, s, mint, maxt, &smp);
      if (rc < 0) break;
      if (smp.n == 0) continue;
      o->ts = sk_pool_memdup(pool, smp.ts, smp.n * sizeof *smp.ts);
      o->v = sk_pool_memdup(pool, smp.v, smp.n * sizeof *smp.v);
      o->n = smp.n;
    }
    if (limit && k >= limit) {
      seterr(db, "query selects more than %zu series", limit);
      rc = SK_ELIMIT;
      break;
    }
    o->labels = sk_pool_alloc(pool, (s->nlabels ? s->nlabels : 1) * sizeof *o->labels);
    o->nlabels = s->nlabels;
    for (size_t j = 0; j < s->nlabels; j++) {
      o->labels[j].name = sk_pool_strdup(pool, s->labels[j].name);
      o->labels[j].value = sk_pool_strdup(pool, s->labels[j].value);
    }
    k++;
  }
  free(cand.v);
  free(smp.ts);
  free(smp.v);
  if (rc < 0) return rc;
  if (k > 1) qsort(res, k, sizeof *res, series_out_cmp);
  *out = res;
  *nout = k;
  return 0;
}

int tl_tsdb_select(tl_tsdb_t *db, sk_pool_t *pool, const tl_matcher_t *m, size_t nm, int64_t mint,
                   int64_t maxt, int flags, size_t limit, tl_series_t **out, size_t *nout) {
  pthread_mutex_lock(&db->mu);
  int rc = select_locked(db, pool, m, nm, mint, maxt, flags, limit, out, nout);
  pthread_mutex_unlock(&db->mu);
  return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void strset_add(tl__hmap_t *set, const char *s) {
  if (!tl__hmap_get(set, s, strlen(s))) tl__hmap_put(set, s, strlen(s), (void *)s);
}

static void strset_out(tl__hmap_t *set, sk_pool_t *pool, const char ***out, size_t *nout) {
  const char **v = sk_pool_alloc(pool, (set->n ? set->n : 1) * sizeof *v);
  size_t k = 0;
  for (size_t i = 0; i < set->cap; i++)
    if (set->e[i].hash) v[k++] = sk_pool_strdup(pool, set->e[i].val);
  qsort(v, k, sizeof *v, cmp_str);
  *out = v;
  *nout = k;
}

static int labels_common(tl_tsdb_t *db, sk_pool_t *pool, const char *name, const tl_matcher_t *m, size_t nm,
                         const char ***out, size_t *nout) {
  tl__hmap_t set = {0};
  int rc = 0;
  pthread_mutex_lock(&db->mu);
  if (nm == 0) {
    if (!name) {
      for (size_t i = 0; i < db->names.cap; i++)
        if (db->names.e[i].hash) strset_add(&set, ((lname_t *)db->names.e[i].val)->name);
    } else {
      lname_t *ln = tl__hmap_get(&db->names, name, strlen(name));
      for (size_t i = 0; ln && i < ln->values.cap; i++)
        if (ln->values.e[i].hash) strset_add(&set, ((postings_t *)ln->values.e[i].val)->value);
    }
  } else {
    svec_t cand = {0};
    int nonempty = 0;
    for (size_t i = 0; i < nm; i++)
      if (!tl_matcher_matches(&m[i], "")) nonempty = 1;
    if (!nonempty) {
      seterr(db, "match[] must contain at least one non-empty matcher");
      rc = SK_EINVAL;
      goto out;
    }
    candidates(db, m, nm, &cand);
    for (size_t i = 0; i < cand.n; i++) {
      for (size_t j = 0; j < cand.v[i]->nlabels; j++) {
        const tl_label_t *l = &cand.v[i]->labels[j];
        if (!name)
          strset_add(&set, l->name);
        else if (!strcmp(l->name, name))
          strset_add(&set, l->value);
      }
    }
    free(cand.v);
  }
  strset_out(&set, pool, out, nout);
out:
  pthread_mutex_unlock(&db->mu);
  tl__hmap_free(&set);
  return rc;
}

int tl_tsdb_label_names(tl_tsdb_t *db, sk_pool_t *pool, const tl_matcher_t *m, size_t nm, const char ***out,
                        size_t *nout) {
  return labels_common(db, pool, NULL, m, nm, out, nout);
}

int tl_tsdb_label_values(tl_tsdb_t *db, sk_pool_t *pool, const char *name, const tl_matcher_t *m, size_t nm,
                         const char ***out, size_t *nout) {
  return labels_common(db, pool, name, m, nm, out, nout);
}

/* ---- stats ---- */

static uint64_t file_size(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

void tl_tsdb_stats(tl_tsdb_t *db, tl_tsdb_stats_t *st) {
  pthread_mutex_lock(&db->mu);
  *st = db->st;
  st->series = db->nseries;
  st->wal_bytes = db->wal_size;
  char p[4096];
  uint64_t disk = db->wal_size + file_size(db->db_path);
  snprintf(p, sizeof p, "%s-wal", db->db_path);
  disk += file_size(p);
  st->disk_bytes = disk;
  pthread_mutex_unlock(&db->mu);
}
