/* skiff-telemetry: OTLP traces -> the span store's rows.
 *
 * Two ways to the same rows: from a request protobuf-c decoded (JSON
 * bodies, and protobuf bodies this file's decoder leaves alone), and
 * straight from the protobuf wire bytes, which is the ingest path for
 * protobuf bodies: one walk over the body, text pointing into it, the
 * attributes, events and links written as OTLP JSON as they are met, no
 * message tree. The wire decoder takes only what it can read exactly as
 * protobuf-c would; anything else (a field with another wire type than the
 * schema's, a singular message field given twice, which protobuf-c merges,
 * two members of a oneof, a NUL inside a string, nesting past
 * TL_PB_MAX_DEPTH, bad framing) makes it give up, and the caller decodes
 * the body the general way, which also produces the error for bad input.
 * The fuzz target otlp_pb checks that both give the same rows. */
#include <string.h>

#include "skiff/err.h"
#include "tl_int.h"

static tl_span_row_t *row_add(sk_pool_t *pool, tl_span_rows_t *o) {
  if (o->n == o->cap) {
    size_t nc = o->cap ? o->cap * 2 : 64;
    tl_span_row_t *v = sk_pool_alloc(pool, nc * sizeof *v);
    if (o->n) memcpy(v, o->v, o->n * sizeof *v);
    o->v = v;
    o->cap = nc;
  }
  tl_span_row_t *r = &o->v[o->n++];
  memset(r, 0, sizeof *r);
  return r;
}

static int nonzero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 1;
  return 0;
}

static tl_str_t str_of(const char *s) { return (tl_str_t){s, s ? (int)strlen(s) : 0}; }

/* attributes as a KeyValueList protobuf appended to b (absent entries left out) */
static void kvl_pack(sk_pool_t *pool, sk_buf_t *b, Otlp__KeyValue *const *kv, size_t n) {
  Otlp__KeyValueList l = OTLP__KEY_VALUE_LIST__INIT;
  l.values = sk_pool_alloc(pool, (n ? n : 1) * sizeof *l.values);
  for (size_t i = 0; i < n; i++)
    if (kv[i]) l.values[l.n_values++] = kv[i];
  size_t len = protobuf_c_message_get_packed_size(&l.base);
  sk_buf_reserve(b, len);
  b->len += protobuf_c_message_pack(&l.base, (uint8_t *)b->data + b->len);
}

/* the parts every row shares: ids, times, clamps */
static int row_ids(tl_span_row_t *w, const uint8_t *tid, size_t tlen, const uint8_t *sid, size_t slen,
                   const uint8_t *pid, size_t plen) {
  if (tlen != 16 || slen != 8 || !nonzero(tid, 16) || !nonzero(sid, 8)) return 0;
  tl_hex(tid, 16, w->tid);
  tl_hex(sid, 8, w->sid);
  if (plen == 8 && nonzero(pid, 8)) tl_hex(pid, 8, w->pid);
  return 1;
}

static void row_times(tl_span_row_t *w, uint64_t st, uint64_t en) {
  if (st > INT64_MAX) st = INT64_MAX;
  if (en > INT64_MAX) en = INT64_MAX;
  if (en < st) en = st;
  w->start_ns = (int64_t)st;
  w->end_ns = (int64_t)en;
}

/* ---- from decoded messages ---- */

void tl_span_rows_from_msg(sk_pool_t *pool, const Otlp__ExportTraceServiceRequest *r, tl_span_rows_t *out) {
  sk_buf_t *b = out->json;
  for (size_t i = 0; i < r->n_resource_spans; i++) {
    const Otlp__ResourceSpans *rs = r->resource_spans[i];
    if (!rs) continue;
    Otlp__KeyValue **ra = rs->resource ? rs->resource->attributes : NULL;
    size_t nra = rs->resource ? rs->resource->n_attributes : 0;
    const char *svc = tl_otlp_attr_str(ra, nra, "service.name");
    if (!svc || !*svc) svc = "unknown_service";
    size_t res_off = b->len;
    kvl_pack(pool, b, ra, nra);
    int res_len = (int)(b->len - res_off);
    for (size_t s = 0; s < rs->n_scope_spans; s++) {
      const Otlp__ScopeSpans *ss = rs->scope_spans[s];
      if (!ss) continue;
      const char *scope = ss->scope && ss->scope->name ? ss->scope->name : "";
      const char *scope_v = ss->scope && ss->scope->version ? ss->scope->version : "";
      for (size_t k = 0; k < ss->n_spans; k++) {
        const Otlp__Span *sp = ss->spans[k];
        tl_span_row_t tmp;
        memset(&tmp, 0, sizeof tmp);
        if (!sp || !row_ids(&tmp, sp->trace_id.data, sp->trace_id.len, sp->span_id.data, sp->span_id.len,
                            sp->parent_span_id.data, sp->parent_span_id.len)) {
          out->rejected++;
          continue;
        }
        tl_span_row_t *w = row_add(pool, out);
        *w = tmp;
        w->service = str_of(svc);
        w->scope = str_of(scope);
        w->scope_version = str_of(scope_v);
        w->name = str_of(sp->name ? sp->name : "");
        w->trace_state = str_of(sp->trace_state && *sp->trace_state ? sp->trace_state : NULL);
        w->status_msg =
            str_of(sp->status && sp->status->message && *sp->status->message ? sp->status->message : NULL);
        w->kind = sp->kind;
        w->status = sp->status ? sp->status->code : 0;
        row_times(w, sp->start_time_unix_nano, sp->end_time_unix_nano);
        w->res_off = res_off;
        w->res_len = res_len;
        w->attrs_off = b->len;
        kvl_pack(pool, b, sp->attributes, sp->n_attributes);
        w->attrs_len = (int)(b->len - w->attrs_off);
        w->events_len = w->links_len = -1;
        if (sp->n_events) {
          w->events_off = b->len;
          int first = 1;
          sk_buf_append(b, "[", 1);
          for (size_t e = 0; e < sp->n_events; e++) {
            if (!sp->events[e]) continue;
            if (!first) sk_buf_append(b, ",", 1);
            first = 0;
            tl_pb_json_write(b, &sp->events[e]->base);
          }
          sk_buf_append(b, "]", 1);
          w->events_len = (int)(b->len - w->events_off);
        }
        if (sp->n_links) {
          w->links_off = b->len;
          int first = 1;
          sk_buf_append(b, "[", 1);
          for (size_t e = 0; e < sp->n_links; e++) {
            if (!sp->links[e]) continue;
            if (!first) sk_buf_append(b, ",", 1);
            first = 0;
            tl_pb_json_write(b, &sp->links[e]->base);
          }
          sk_buf_append(b, "]", 1);
          w->links_len = (int)(b->len - w->links_off);
        }
      }
    }
  }
}

/* ---- straight from the wire ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* The writers below take b == NULL to only check (what a span's
 * attributes and a resource's need: they are stored as protobuf). */
static inline void ap(sk_buf_t *b, const char *s, size_t n) {
  if (!b) return;
  if (b->cap - b->len <= n) sk_buf_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void j_strn(sk_buf_t *b, const uint8_t *s, size_t n) {
  if (b) tl__json_strn(b, (const char *)s, n);
}

static void j_i64(sk_buf_t *b, int64_t v) {
  if (b) tl__json_i64(b, v);
}

static void j_u64(sk_buf_t *b, uint64_t v) {
  if (b) tl__json_u64(b, v);
}

/* a KeyValueList entry (field 1) holding the n bytes of a KeyValue */
static void kvl_entry(sk_buf_t *b, const uint8_t *d, size_t n) {
  uint8_t h[6];
  size_t k = 0;
  h[k++] = 0x0a;
  size_t v = n;
  do {
    h[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  ap(b, (const char *)h, k);
  ap(b, (const char *)d, n);
}

/* One field: its number, wire type, and value (varint/fixed in v, bytes in
 * d/dn). -1 on bad framing or a group. */
typedef struct fld {
  uint32_t num;
  int wt;
  uint64_t v;
  const uint8_t *d;
  size_t dn;
} fld_t;

/* At most max bytes; a 10th byte may only carry bit 63 (protobuf-c would
 * see bits this value cannot hold). */
static inline int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out, int max) {
  const uint8_t *p = *pp;
  uint64_t r = 0;
  for (int i = 0; i < max; i++) {
    if (p >= end) return -1;
    uint8_t c = *p++;
    if (i == 9 && c > 1) return -1;
    r |= (uint64_t)(c & 0x7f) << (7 * i);
    if (!(c & 0x80)) {
      *out = r;
      *pp = p;
      return 0;
    }
  }
  return -1;
}

static inline int rd_field(const uint8_t **pp, const uint8_t *end, fld_t *f) {
  uint64_t key;
  if (rd_varint(pp, end, &key, 5) < 0 || key >> 32) return -1; /* a tag takes at most 5 bytes */
  /* every member set: readers test wt before v or d/dn, which gcc -O3
   * cannot follow (-Wmaybe-uninitialized) */
  *f = (fld_t){.num = (uint32_t)(key >> 3), .wt = (int)(key & 7)};
  if (f->num == 0) return -1;
  const uint8_t *p = *pp;
  switch (f->wt) {
  case WT_VARINT:
    return rd_varint(pp, end, &f->v, 10);
  case WT_I64:
    if (end - p < 8) return -1;
    for (int i = 7; i >= 0; i--) f->v = f->v << 8 | p[i];
    *pp = p + 8;
    return 0;
  case WT_I32:
    if (end - p < 4) return -1;
    f->v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    *pp = p + 4;
    return 0;
  case WT_LEN: {
    uint64_t n;
    /* a length takes at most 5 bytes, as protobuf-c reads it */
    if (rd_varint(pp, end, &n, 5) < 0 || n >> 32 || n > (uint64_t)(end - *pp)) return -1;
    f->d = *pp;
    f->dn = (size_t)n;
    *pp += n;
    return 0;
  }
  }
  return -1;
}

#define FOR_FIELDS(p, n, f)                                                                          \
  for (const uint8_t *p_ = (p), *e_ = (p) + (n); p_ < e_;)                                           \
    if (rd_field(&p_, e_, &(f)) < 0) return -1;                                                      \
    else

/* a string field: no NUL inside (protobuf-c's C strings would end there) */
static int str_ok(const fld_t *f) { return f->wt == WT_LEN && !memchr(f->d, 0, f->dn); }

static int w_any_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth);
static int w_kv_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth);

/* {"values":[...]} of an ArrayValue (items AnyValue) or KeyValueList
 * (items KeyValue); {} without items */
static int w_values_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth, int kv) {
  if (depth > TL_PB_MAX_DEPTH) return -1;
  fld_t f;
  int first = 1;
  ap(b, "{", 1);
  FOR_FIELDS(p, n, f) {
    if (f.num != 1) continue;
    if (f.wt != WT_LEN) return -1;
    ap(b, first ? "\"values\":[" : ",", first ? 10 : 1);
    first = 0;
    if ((kv ? w_kv_wire(b, f.d, f.dn, depth + 1) : w_any_wire(b, f.d, f.dn, depth + 1)) < 0) return -1;
  }
  if (!first) ap(b, "]", 1);
  ap(b, "}", 1);
  return 0;
}

static int w_any_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth) {
  if (depth > TL_PB_MAX_DEPTH) return -1;
  fld_t f, m = {0};
  FOR_FIELDS(p, n, f) {
    if (f.num < 1 || f.num > 7) continue;
    if (m.num) return -1; /* a second member of the oneof */
    static const int wt[8] = {0, WT_LEN, WT_VARINT, WT_VARINT, WT_I64, WT_LEN, WT_LEN, WT_LEN};
    if (f.wt != wt[f.num] || (f.num == 1 && !str_ok(&f))) return -1;
    m = f;
  }
  switch (m.num) {
  case 0:
    ap(b, "{}", 2);
    return 0;
  case 1:
    ap(b, "{\"stringValue\":", 15);
    j_strn(b, m.d, m.dn);
    break;
  case 2:
    if (m.v) ap(b, "{\"boolValue\":true", 17);
    else ap(b, "{\"boolValue\":false", 18);
    break;
  case 3:
    ap(b, "{\"intValue\":\"", 13);
    j_i64(b, (int64_t)m.v);
    ap(b, "\"", 1);
    break;
  case 4: {
    double d;
    memcpy(&d, &m.v, sizeof d);
    ap(b, "{\"doubleValue\":", 15);
    if (b) tl__json_double(b, d);
    break;
  }
  case 5:
    ap(b, "{\"arrayValue\":", 14);
    if (w_values_wire(b, m.d, m.dn, depth + 1, 0) < 0) return -1;
    break;
  case 6:
    ap(b, "{\"kvlistValue\":", 15);
    if (w_values_wire(b, m.d, m.dn, depth + 1, 1) < 0) return -1;
    break;
  case 7: {
    ap(b, "{\"bytesValue\":", 14);
    ProtobufCBinaryData bd = {m.dn, (uint8_t *)m.d};
    if (b) tl__json_base64(b, &bd);
    break;
  }
  }
  ap(b, "}", 1);
  return 0;
}

/* a KeyValue; *str (if given) is its value when that is a string */
static int kv_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth, tl_str_t *key_out, tl_str_t *str) {
  if (depth > TL_PB_MAX_DEPTH) return -1;
  fld_t f, key = {0}, val = {0};
  FOR_FIELDS(p, n, f) {
    if (f.num == 1) {
      if (!str_ok(&f)) return -1;
      key = f; /* the last one counts */
    } else if (f.num == 2) {
      if (f.wt != WT_LEN || val.num) return -1;
      val = f;
    }
  }
  ap(b, "{", 1);
  if (key.num) {
    ap(b, "\"key\":", 6);
    j_strn(b, key.d, key.dn);
  }
  if (val.num) {
    if (key.num) ap(b, ",", 1);
    ap(b, "\"value\":", 8);
    if (w_any_wire(b, val.d, val.dn, depth + 1) < 0) return -1;
  }
  ap(b, "}", 1);
  if (key_out) *key_out = key.num ? (tl_str_t){(const char *)key.d, (int)key.dn} : (tl_str_t){NULL, 0};
  if (str) {
    *str = (tl_str_t){NULL, 0};
    /* the value's member, when it is a string (w_any_wire checked the rest) */
    if (val.num) {
      fld_t g;
      FOR_FIELDS(val.d, val.dn, g) {
        if (g.num == 1) *str = (tl_str_t){(const char *)g.d, (int)g.dn};
      }
    }
  }
  return 0;
}

static int w_kv_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth) {
  return kv_wire(b, p, n, depth, NULL, NULL);
}

/* [KeyValue...] from every field num of a message; *svc: the first
 * "service.name" with a string value */
static int w_attrs_wire(sk_buf_t *b, const uint8_t *p, size_t n, uint32_t num, int depth) {
  fld_t f;
  int first = 1;
  ap(b, "[", 1);
  FOR_FIELDS(p, n, f) {
    if (f.num != num) continue;
    if (f.wt != WT_LEN) return -1;
    if (!first) ap(b, ",", 1);
    first = 0;
    if (kv_wire(b, f.d, f.dn, depth + 1, NULL, NULL) < 0) return -1;
  }
  ap(b, "]", 1);
  return 0;
}

/* every field num of a message (KeyValues, checked) as a KeyValueList
 * protobuf; *svc: the first "service.name" with a string value */
static int kvl_wire(sk_buf_t *b, const uint8_t *p, size_t n, uint32_t num, int depth, tl_str_t *svc) {
  fld_t f;
  FOR_FIELDS(p, n, f) {
    if (f.num != num) continue;
    if (f.wt != WT_LEN) return -1;
    tl_str_t key, str;
    if (kv_wire(NULL, f.d, f.dn, depth + 1, &key, &str) < 0) return -1;
    if (svc && !svc->p && key.p && key.len == 12 && !memcmp(key.p, "service.name", 12) && str.p) *svc = str;
    kvl_entry(b, f.d, f.dn);
  }
  return 0;
}

static void w_hex(sk_buf_t *b, const uint8_t *d, size_t n) {
  sk_buf_reserve(b, n * 2 + 3);
  b->data[b->len++] = '"';
  tl_hex(d, n, b->data + b->len);
  b->len += n * 2;
  b->data[b->len++] = '"';
}

/* Span.Event (link = 0) or Span.Link (link = 1) as tl_pb_json_write writes
 * it: fields in the schema's order, absent ones left out */
static int w_event_link_wire(sk_buf_t *b, const uint8_t *p, size_t n, int depth, int link) {
  if (depth > TL_PB_MAX_DEPTH) return -1;
  fld_t f, time = {0}, name = {0}, drop = {0}, tid = {0}, sid = {0}, ts = {0}, flags = {0};
  int nattrs = 0;
  uint32_t attrs_num = link ? 4 : 3;
  FOR_FIELDS(p, n, f) {
    if (f.num == attrs_num) {
      if (f.wt != WT_LEN) return -1;
      nattrs++;
    } else if (!link) {
      if (f.num == 1) {
        if (f.wt != WT_I64) return -1;
        time = f;
      } else if (f.num == 2) {
        if (!str_ok(&f)) return -1;
        name = f;
      } else if (f.num == 4) {
        if (f.wt != WT_VARINT) return -1;
        drop = f;
      }
    } else {
      if (f.num == 1 || f.num == 2) {
        if (f.wt != WT_LEN) return -1;
        if (f.num == 1) tid = f;
        else sid = f;
      } else if (f.num == 3) {
        if (!str_ok(&f)) return -1;
        ts = f;
      } else if (f.num == 5) {
        if (f.wt != WT_VARINT) return -1;
        drop = f;
      } else if (f.num == 6) {
        if (f.wt != WT_I32) return -1;
        flags = f;
      }
    }
  }
  int first = 1;
#define SEP(k) (ap(b, first ? "{" k : "," k, sizeof(k)), first = 0)
  if (!link) {
    if (time.num) {
      SEP("\"timeUnixNano\":\"");
      j_u64(b, time.v);
      ap(b, "\"", 1);
    }
    if (name.num) {
      SEP("\"name\":");
      j_strn(b, name.d, name.dn);
    }
  } else {
    if (tid.num) {
      SEP("\"traceId\":");
      w_hex(b, tid.d, tid.dn);
    }
    if (sid.num) {
      SEP("\"spanId\":");
      w_hex(b, sid.d, sid.dn);
    }
    if (ts.num) {
      SEP("\"traceState\":");
      j_strn(b, ts.d, ts.dn);
    }
  }
  if (nattrs) {
    SEP("\"attributes\":");
    if (w_attrs_wire(b, p, n, attrs_num, depth) < 0) return -1;
  }
  if (drop.num) {
    SEP("\"droppedAttributesCount\":");
    j_u64(b, (uint32_t)drop.v);
  }
  if (link && flags.num) {
    SEP("\"flags\":");
    j_u64(b, (uint32_t)flags.v);
  }
#undef SEP
  ap(b, first ? "{}" : "}", first ? 2 : 1);
  return 0;
}

/* [Event...] or [Link...]: every field num of the span */
static int w_list_wire(sk_buf_t *b, const uint8_t *p, size_t n, uint32_t num, int depth) {
  fld_t f;
  int first = 1;
  ap(b, "[", 1);
  FOR_FIELDS(p, n, f) {
    if (f.num != num) continue;
    if (!first) ap(b, ",", 1);
    first = 0;
    if (w_event_link_wire(b, f.d, f.dn, depth + 1, num == 13) < 0) return -1;
  }
  ap(b, "]", 1);
  return 0;
}

typedef struct scope_ctx {
  tl_str_t svc, scope, scope_v;
  size_t res_off;
  int res_len;
} scope_ctx_t;

static int span_wire(sk_pool_t *pool, const uint8_t *p, size_t n, const scope_ctx_t *sc, tl_span_rows_t *o) {
  const int depth = 4; /* request, ResourceSpans, ScopeSpans, Span */
  sk_buf_t *b = o->json;
  fld_t f, tid = {0}, sid = {0}, pid = {0}, ts = {0}, name = {0}, kind = {0}, st = {0}, en = {0}, status = {0};
  int nev = 0, nln = 0;
  /* attributes, events and links are parsed (and so checked) even for a
   * span rejected for its ids, as protobuf-c does; the attributes as they
   * come (copied as a KeyValueList), events and links in a pass each */
  size_t mark = b->len, attrs_off = b->len;
  FOR_FIELDS(p, n, f) {
    switch (f.num) {
    case 1: case 2: case 4:
      if (f.wt != WT_LEN) return -1;
      if (f.num == 1) tid = f;
      else if (f.num == 2) sid = f;
      else pid = f;
      break;
    case 3: case 5:
      if (!str_ok(&f)) return -1;
      if (f.num == 3) ts = f;
      else name = f;
      break;
    case 6: case 10: case 12: case 14:
      if (f.wt != WT_VARINT) return -1;
      if (f.num == 6) kind = f;
      break;
    case 7: case 8:
      if (f.wt != WT_I64) return -1;
      if (f.num == 7) st = f;
      else en = f;
      break;
    case 9:
      if (f.wt != WT_LEN || kv_wire(NULL, f.d, f.dn, depth + 1, NULL, NULL) < 0) return -1;
      kvl_entry(b, f.d, f.dn);
      break;
    case 11: case 13:
      if (f.wt != WT_LEN) return -1;
      if (f.num == 11) nev++;
      else nln++;
      break;
    case 15:
      if (f.wt != WT_LEN || status.num) return -1;
      status = f;
      break;
    case 16:
      if (f.wt != WT_I32) return -1;
      break;
    }
  }
  fld_t smsg = {0}, scode = {0};
  if (status.num) {
    if (depth + 1 > TL_PB_MAX_DEPTH) return -1;
    FOR_FIELDS(status.d, status.dn, f) {
      if (f.num == 2) {
        if (!str_ok(&f)) return -1;
        smsg = f;
      } else if (f.num == 3) {
        if (f.wt != WT_VARINT) return -1;
        scode = f;
      }
    }
  }
  int attrs_len = (int)(b->len - attrs_off);
  size_t ev_off = b->len;
  if (nev && w_list_wire(b, p, n, 11, depth) < 0) return -1;
  int ev_len = nev ? (int)(b->len - ev_off) : -1;
  size_t ln_off = b->len;
  if (nln && w_list_wire(b, p, n, 13, depth) < 0) return -1;
  int ln_len = nln ? (int)(b->len - ln_off) : -1;

  tl_span_row_t tmp;
  memset(&tmp, 0, sizeof tmp);
  if (!row_ids(&tmp, tid.d, tid.dn, sid.d, sid.dn, pid.d, pid.dn)) {
    o->rejected++;
    b->len = mark;
    return 0;
  }
  tl_span_row_t *w = row_add(pool, o);
  *w = tmp;
  w->service = sc->svc;
  w->scope = sc->scope;
  w->scope_version = sc->scope_v;
  w->name = name.num ? (tl_str_t){(const char *)name.d, (int)name.dn} : (tl_str_t){"", 0};
  w->trace_state = ts.num && ts.dn ? (tl_str_t){(const char *)ts.d, (int)ts.dn} : (tl_str_t){NULL, 0};
  w->status_msg = smsg.num && smsg.dn ? (tl_str_t){(const char *)smsg.d, (int)smsg.dn} : (tl_str_t){NULL, 0};
  w->kind = (int32_t)kind.v;
  w->status = (int32_t)scode.v;
  row_times(w, st.v, en.v);
  w->res_off = sc->res_off;
  w->res_len = sc->res_len;
  w->attrs_off = attrs_off;
  w->attrs_len = attrs_len;
  w->events_off = ev_off;
  w->events_len = ev_len;
  w->links_off = ln_off;
  w->links_len = ln_len;
  return 0;
}

/* InstrumentationScope: name, version; its attributes are checked only */
static int scope_wire(const uint8_t *p, size_t n, scope_ctx_t *sc) {
  const int depth = 4; /* request, ResourceSpans, ScopeSpans, InstrumentationScope */
  if (depth > TL_PB_MAX_DEPTH) return -1;
  fld_t f;
  int nattrs = 0;
  FOR_FIELDS(p, n, f) {
    if (f.num == 1 || f.num == 2) {
      if (!str_ok(&f)) return -1;
      if (f.num == 1) sc->scope = (tl_str_t){(const char *)f.d, (int)f.dn};
      else sc->scope_v = (tl_str_t){(const char *)f.d, (int)f.dn};
    } else if (f.num == 3) {
      if (f.wt != WT_LEN) return -1;
      nattrs++;
    } else if (f.num == 4 && f.wt != WT_VARINT) {
      return -1;
    }
  }
  if (nattrs && w_attrs_wire(NULL, p, n, 3, depth) < 0) return -1;
  return 0;
}

static int scope_spans_wire(sk_pool_t *pool, const uint8_t *p, size_t n, scope_ctx_t *sc, tl_span_rows_t *o) {
  fld_t f, scope = {0};
  FOR_FIELDS(p, n, f) {
    if (f.num == 1) {
      if (f.wt != WT_LEN || scope.num) return -1;
      scope = f;
    } else if (f.num == 2 || f.num == 3) {
      if (f.wt != WT_LEN || (f.num == 3 && !str_ok(&f))) return -1;
    }
  }
  sc->scope = sc->scope_v = (tl_str_t){"", 0};
  if (scope.num && scope_wire(scope.d, scope.dn, sc) < 0) return -1;
  FOR_FIELDS(p, n, f) {
    if (f.num == 2 && span_wire(pool, f.d, f.dn, sc, o) < 0) return -1;
  }
  return 0;
}

static int resource_spans_wire(sk_pool_t *pool, const uint8_t *p, size_t n, tl_span_rows_t *o) {
  const int depth = 3; /* request, ResourceSpans, Resource */
  sk_buf_t *b = o->json;
  fld_t f, res = {0};
  FOR_FIELDS(p, n, f) {
    if (f.num == 1) {
      if (f.wt != WT_LEN || res.num) return -1;
      res = f;
    } else if (f.num == 2 || f.num == 3) {
      if (f.wt != WT_LEN || (f.num == 3 && !str_ok(&f))) return -1;
    }
  }
  scope_ctx_t sc;
  memset(&sc, 0, sizeof sc);
  sc.res_off = b->len;
  if (res.num) {
    FOR_FIELDS(res.d, res.dn, f) {
      if ((f.num == 1 && f.wt != WT_LEN) || (f.num == 2 && f.wt != WT_VARINT)) return -1;
    }
    if (kvl_wire(b, res.d, res.dn, 1, depth, &sc.svc) < 0) return -1;
  }
  sc.res_len = (int)(b->len - sc.res_off);
  if (!sc.svc.p || !sc.svc.len) sc.svc = (tl_str_t){"unknown_service", 15};
  FOR_FIELDS(p, n, f) {
    if (f.num == 2 && scope_spans_wire(pool, f.d, f.dn, &sc, o) < 0) return -1;
  }
  return 0;
}

static int request_wire(sk_pool_t *pool, const uint8_t *p, size_t n, tl_span_rows_t *o) {
  fld_t f;
  FOR_FIELDS(p, n, f) {
    if (f.num != 1) continue;
    if (f.wt != WT_LEN) return -1;
    if (resource_spans_wire(pool, f.d, f.dn, o) < 0) return -1;
  }
  return 0;
}

int tl_span_rows_from_wire(sk_pool_t *pool, const uint8_t *data, size_t len, tl_span_rows_t *out) {
  size_t mark = out->json->len;
  if (len > INT32_MAX || request_wire(pool, data, len, out) < 0) {
    out->json->len = mark;
    out->n = 0;
    out->rejected = 0;
    return 0;
  }
  return 1;
}
