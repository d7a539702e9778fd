/* skiff-telemetry: OTLP's JSON mapping of protobuf, driven by the protobuf-c
 * descriptors, so one decoder/encoder serves every OTLP message.
 *
 * Decoding follows the proto3 JSON rules as OTLP/HTTP uses them: field
 * names in lowerCamelCase (the original snake_case is accepted too),
 * 64-bit integers as strings or numbers, doubles as numbers or
 * "NaN"/"Infinity"/"-Infinity", enums as integers (the OTLP enum names are
 * accepted as well), bytes in base64 except trace and span ids, which are
 * hex. Unknown fields and nulls are ignored. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"

typedef struct jd {
  sk_pool_t *pool;
  char *err;
  size_t errlen;
} jd_t;

static int is_id_field(const char *name) {
  return !strcmp(name, "trace_id") || !strcmp(name, "span_id") || !strcmp(name, "parent_span_id");
}

static const struct {
  const char *name;
  int value;
} enum_names[] = {
    {"SPAN_KIND_UNSPECIFIED", 0}, {"SPAN_KIND_INTERNAL", 1}, {"SPAN_KIND_SERVER", 2},
    {"SPAN_KIND_CLIENT", 3}, {"SPAN_KIND_PRODUCER", 4}, {"SPAN_KIND_CONSUMER", 5},
    {"STATUS_CODE_UNSET", 0}, {"STATUS_CODE_OK", 1}, {"STATUS_CODE_ERROR", 2},
    {"AGGREGATION_TEMPORALITY_UNSPECIFIED", 0}, {"AGGREGATION_TEMPORALITY_DELTA", 1},
    {"AGGREGATION_TEMPORALITY_CUMULATIVE", 2}, {"SEVERITY_NUMBER_UNSPECIFIED", 0},
    {"SEVERITY_NUMBER_TRACE", 1}, {"SEVERITY_NUMBER_DEBUG", 5}, {"SEVERITY_NUMBER_INFO", 9},
    {"SEVERITY_NUMBER_WARN", 13}, {"SEVERITY_NUMBER_ERROR", 17}, {"SEVERITY_NUMBER_FATAL", 21},
};

static int b64v(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

static int b64_decode(sk_pool_t *pool, const char *s, ProtobufCBinaryData *out) {
  size_t n = strlen(s);
  uint8_t *o = sk_pool_alloc(pool, n / 4 * 3 + 3);
  size_t j = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '=') break;
    int v = b64v((unsigned char)s[i]);
    if (v < 0) return SK_EINVAL;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[j++] = (uint8_t)(acc >> bits);
    }
  }
  out->data = o;
  out->len = j;
  return 0;
}

static int num_i64(const json_t *v, int64_t *out) {
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
    return 0;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d != floor(d) || fabs(d) > 9.2e18) return SK_EINVAL;
    *out = (int64_t)d;
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    if (!*s) return SK_EINVAL;
    errno = 0;
    long long r = strtoll(s, &end, 10);
    if (*end || errno) return SK_EINVAL;
    *out = r;
    return 0;
  }
  return SK_EINVAL;
}

static int num_u64(const json_t *v, uint64_t *out) {
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end = NULL;
    if (!*s || *s == '-') return SK_EINVAL;
    errno = 0;
    unsigned long long r = strtoull(s, &end, 10);
    if (*end || errno) return SK_EINVAL;
    *out = r;
    return 0;
  }
  int64_t i;
  if (num_i64(v, &i) < 0 || i < 0) return SK_EINVAL;
  *out = (uint64_t)i;
  return 0;
}

static int num_double(const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    if (!strcmp(s, "NaN")) *out = NAN;
    else if (!strcmp(s, "Infinity")) *out = INFINITY;
    else if (!strcmp(s, "-Infinity")) *out = -INFINITY;
    else {
      char *end = NULL;
      *out = strtod(s, &end);
      if (!*s || *end) return SK_EINVAL;
    }
    return 0;
  }
  return SK_EINVAL;
}

static int decode_msg(jd_t *j, const ProtobufCMessageDescriptor *d, const json_t *o, ProtobufCMessage **out);

static size_t elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  }
  return 8;
}

/* One value of field f into dst. */
static int decode_value(jd_t *j, const ProtobufCFieldDescriptor *f, const json_t *v, void *dst) {
  int64_t i;
  uint64_t u;
  double d;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    if (json_is_string(v)) {
      for (size_t k = 0; k < sizeof enum_names / sizeof enum_names[0]; k++)
        if (!strcmp(json_string_value(v), enum_names[k].name)) {
          *(int32_t *)dst = enum_names[k].value;
          return 0;
        }
    }
    if (num_i64(v, &i) < 0 || i < INT32_MIN || i > INT32_MAX) goto bad;
    *(int32_t *)dst = (int32_t)i;
    return 0;
  case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
    if (num_u64(v, &u) < 0 || u > UINT32_MAX) goto bad;
    *(uint32_t *)dst = (uint32_t)u;
    return 0;
  case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    if (num_i64(v, &i) < 0) goto bad;
    *(int64_t *)dst = i;
    return 0;
  case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
    if (num_u64(v, &u) < 0) goto bad;
    *(uint64_t *)dst = u;
    return 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    if (num_double(v, &d) < 0) goto bad;
    *(double *)dst = d;
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
    if (num_double(v, &d) < 0) goto bad;
    *(float *)dst = (float)d;
    return 0;
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_is_boolean(v)) goto bad;
    *(protobuf_c_boolean *)dst = json_is_true(v);
    return 0;
  case PROTOBUF_C_TYPE_STRING:
    if (!json_is_string(v)) goto bad;
    *(char **)dst = sk_pool_strndup(j->pool, json_string_value(v), json_string_length(v));
    return 0;
  case PROTOBUF_C_TYPE_BYTES: {
    if (!json_is_string(v)) goto bad;
    ProtobufCBinaryData *b = dst;
    const char *s = json_string_value(v);
    if (is_id_field(f->name)) {
      size_t n = strlen(s);
      uint8_t *o = sk_pool_alloc(j->pool, n / 2 + 1);
      int r = tl_unhex(s, o, n / 2 + 1);
      if (r < 0) goto bad;
      b->data = o;
      b->len = (size_t)r;
      return 0;
    }
    if (b64_decode(j->pool, s, b) < 0) goto bad;
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE:
    if (!json_is_object(v)) goto bad;
    return decode_msg(j, f->descriptor, v, (ProtobufCMessage **)dst);
  }
bad:
  if (j->err[0] == 0) snprintf(j->err, j->errlen, "bad value for field %s", f->name);
  return SK_EINVAL;
}

/* lowerCamelCase -> snake_case */
static void snake(const char *k, char *out, size_t outlen) {
  size_t o = 0;
  for (; *k && o + 2 < outlen; k++) {
    if (isupper((unsigned char)*k)) {
      out[o++] = '_';
      out[o++] = (char)tolower((unsigned char)*k);
    } else {
      out[o++] = *k;
    }
  }
  out[o] = 0;
}

static int decode_msg(jd_t *j, const ProtobufCMessageDescriptor *d, const json_t *o, ProtobufCMessage **out) {
  ProtobufCMessage *m = sk_pool_calloc(j->pool, d->sizeof_message);
  protobuf_c_message_init(d, m);
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)o, key, v) {
    if (json_is_null(v)) continue;
    char sn[128];
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (!f) {
      snake(key, sn, sizeof sn);
      f = protobuf_c_message_descriptor_get_field_by_name(d, sn);
    }
    if (!f) continue; /* unknown fields are ignored */
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      if (!json_is_array(v)) {
        snprintf(j->err, j->errlen, "field %s must be an array", f->name);
        return SK_EINVAL;
      }
      size_t n = json_array_size(v), es = elem_size(f->type);
      char *arr = sk_pool_calloc(j->pool, n * es + 1);
      for (size_t i = 0; i < n; i++) {
        int rc = decode_value(j, f, json_array_get(v, i), arr + i * es);
        if (rc < 0) return rc;
      }
      *(size_t *)(base + f->quantifier_offset) = n;
      *(void **)(base + f->offset) = arr;
    } else {
      int rc = decode_value(j, f, v, base + f->offset);
      if (rc < 0) return rc;
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(base + f->quantifier_offset) = f->id;
      else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
               f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset)
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
  }
  *out = m;
  return 0;
}

static int decode_text(sk_pool_t *pool, const ProtobufCMessageDescriptor *d, const char *s, size_t len,
                       ProtobufCMessage **out, char *err, size_t errlen) {
  json_t *root = NULL;
  err[0] = 0;
  int rc = sk_json_parse(s, len, len + 1, TL_JSON_MAX_DEPTH, &root, err, errlen);
  if (rc < 0) return SK_EPARSE;
  if (!json_is_object(root)) {
    snprintf(err, errlen, "request body must be a JSON object");
    json_decref(root);
    return SK_EPARSE;
  }
  jd_t j = {.pool = pool, .err = err, .errlen = errlen};
  rc = decode_msg(&j, d, root, out);
  json_decref(root);
  return rc < 0 ? SK_EPARSE : 0;
}

int tl_otlp_json_traces(sk_pool_t *pool, const char *s, size_t len, Otlp__ExportTraceServiceRequest **out,
                        char *err, size_t errlen) {
  return decode_text(pool, &otlp__export_trace_service_request__descriptor, s, len, (ProtobufCMessage **)out,
                     err, errlen);
}

int tl_otlp_json_metrics(sk_pool_t *pool, const char *s, size_t len,
                         Otlp__ExportMetricsServiceRequest **out, char *err, size_t errlen) {
  return decode_text(pool, &otlp__export_metrics_service_request__descriptor, s, len,
                     (ProtobufCMessage **)out, err, errlen);
}

int tl_otlp_json_logs(sk_pool_t *pool, const char *s, size_t len, Otlp__ExportLogsServiceRequest **out,
                      char *err, size_t errlen) {
  return decode_text(pool, &otlp__export_logs_service_request__descriptor, s, len, (ProtobufCMessage **)out,
                     err, errlen);
}

/* ---- encoding ---- */

static void camel(const char *k, char *out, size_t outlen) {
  size_t o = 0;
  int up = 0;
  for (; *k && o + 1 < outlen; k++) {
    if (*k == '_') {
      up = 1;
      continue;
    }
    out[o++] = up ? (char)toupper((unsigned char)*k) : *k;
    up = 0;
  }
  out[o] = 0;
}

static json_t *jstr_any(const char *s, size_t n) {
  json_t *v = json_stringn(s, n);
  if (v) return v;
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_escape(&b, s, n); /* replaces invalid UTF-8 */
  json_t *r = NULL;
  char *tmp = sk_xmalloc(b.len + 3);
  tmp[0] = '"';
  if (b.len) memcpy(tmp + 1, b.data, b.len);
  tmp[b.len + 1] = '"';
  tmp[b.len + 2] = 0;
  r = json_loads(tmp, JSON_DECODE_ANY, NULL);
  free(tmp);
  sk_buf_done(&b);
  return r ? r : json_string("");
}

static json_t *encode_value(const ProtobufCFieldDescriptor *f, const void *p) {
  char buf[32];
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return json_integer(*(const int32_t *)p);
  case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
    return json_integer(*(const uint32_t *)p);
  case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    snprintf(buf, sizeof buf, "%lld", (long long)*(const int64_t *)p);
    return json_string(buf);
  case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)p);
    return json_string(buf);
  case PROTOBUF_C_TYPE_DOUBLE: case PROTOBUF_C_TYPE_FLOAT: {
    double d = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)p : *(const double *)p;
    if (isnan(d)) return json_string("NaN");
    if (isinf(d)) return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
  }
  case PROTOBUF_C_TYPE_BOOL:
    return json_boolean(*(const protobuf_c_boolean *)p);
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return jstr_any(s ? s : "", s ? strlen(s) : 0);
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    if (is_id_field(f->name)) {
      char *h = sk_xmalloc(b->len * 2 + 1);
      tl_hex(b->data, b->len, h);
      json_t *r = json_string(h);
      free(h);
      return r;
    }
    static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = sk_xmalloc(b->len / 3 * 4 + 8);
    size_t j = 0, i = 0;
    for (; i + 2 < b->len; i += 3) {
      uint32_t v = (uint32_t)b->data[i] << 16 | (uint32_t)b->data[i + 1] << 8 | b->data[i + 2];
      o[j++] = tb[v >> 18 & 63], o[j++] = tb[v >> 12 & 63], o[j++] = tb[v >> 6 & 63], o[j++] = tb[v & 63];
    }
    if (i < b->len) {
      uint32_t v = (uint32_t)b->data[i] << 16 | (i + 1 < b->len ? (uint32_t)b->data[i + 1] << 8 : 0);
      o[j++] = tb[v >> 18 & 63], o[j++] = tb[v >> 12 & 63];
      o[j++] = i + 1 < b->len ? tb[v >> 6 & 63] : '=';
      o[j++] = '=';
    }
    o[j] = 0;
    json_t *r = json_string(o);
    free(o);
    return r;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
    return m ? tl_pb_to_json(m) : json_object();
  }
  }
  return json_null();
}

json_t *tl_pb_to_json(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  json_t *o = json_object();
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    char name[128];
    camel(f->name, name, sizeof name);
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      if (!n) continue;
      const char *arr = *(char *const *)(base + f->offset);
      json_t *a = json_array();
      for (size_t k = 0; k < n; k++) json_array_append_new(a, encode_value(f, arr + k * elem_size(f->type)));
      json_object_set_new(o, name, a);
      continue;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
      if (!*(void *const *)(base + f->offset)) continue;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
      if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset)) continue;
    }
    json_object_set_new(o, name, encode_value(f, base + f->offset));
  }
  return o;
}

json_t *tl_otlp_anyvalue_json(const Otlp__AnyValue *v) {
  return v ? tl_pb_to_json(&v->base) : json_object();
}

json_t *tl_otlp_attrs_json(Otlp__KeyValue *const *kv, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++)
    if (kv[i]) json_array_append_new(a, tl_pb_to_json(&kv[i]->base));
  return a;
}

const char *tl_otlp_anyvalue_str(sk_pool_t *pool, const Otlp__AnyValue *v) {
  if (!v) return "";
  char buf[64];
  switch (v->value_case) {
  case OTLP__ANY_VALUE__VALUE_STRING_VALUE:
    return v->string_value ? v->string_value : "";
  case OTLP__ANY_VALUE__VALUE_BOOL_VALUE:
    return v->bool_value ? "true" : "false";
  case OTLP__ANY_VALUE__VALUE_INT_VALUE:
    snprintf(buf, sizeof buf, "%lld", (long long)v->int_value);
    return sk_pool_strdup(pool, buf);
  case OTLP__ANY_VALUE__VALUE_DOUBLE_VALUE: {
    sk_buf_t b;
    sk_buf_init(&b);
    sk_metrics_format_value(&b, v->double_value);
    const char *r = sk_pool_strndup(pool, b.data ? b.data : "", b.len);
    sk_buf_done(&b);
    return r;
  }
  default: {
    json_t *j = tl_otlp_anyvalue_json(v);
    sk_buf_t b;
    sk_buf_init(&b);
    sk_json_dump_buf(j, &b);
    json_decref(j);
    const char *r = sk_pool_strndup(pool, b.data ? b.data : "", b.len);
    sk_buf_done(&b);
    return r;
  }
  }
}

const char *tl_otlp_attr_str(Otlp__KeyValue *const *kv, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (kv[i] && kv[i]->key && !strcmp(kv[i]->key, key) && kv[i]->value &&
        kv[i]->value->value_case == OTLP__ANY_VALUE__VALUE_STRING_VALUE)
      return kv[i]->value->string_value;
  return NULL;
}

/* ---- encoding straight into a buffer ----
 *
 * The same documents tl_pb_to_json() + sk_json_dump_buf() give (compact,
 * fields in descriptor order, the same value rules), written into a
 * caller's buffer with no jansson tree and no allocation beyond the
 * buffer's growth: the span store writes events and links this way, and
 * tl_span_rows.c uses the value writers. KeyValue and AnyValue, nearly all of the volume, have
 * their own writers; any other message goes through the descriptor. */

static inline void w_mem(sk_buf_t *b, const void *p, size_t n) {
  if (b->cap - b->len <= n) sk_buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

#define W_LIT(b, s) w_mem((b), (s), sizeof(s) - 1)

static inline void w_char(sk_buf_t *b, char c) {
  if (b->cap - b->len <= 1) sk_buf_reserve(b, 1);
  b->data[b->len++] = c;
}

/* 1 for the bytes a JSON string holds as they are: printable ASCII but '"'
 * and '\\' (not NUL, so a scan stops at the end of a C string) */
static const unsigned char json_plain[256] = {
    [' '] = 1, ['!'] = 1, ['#' ... '['] = 1, [']' ... '~'] = 1,
};

static void w_str(sk_buf_t *b, const char *s) {
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  size_t n = 0;
  while (json_plain[p[n]]) n++;
  if (b->cap - b->len <= n + 2) sk_buf_reserve(b, n + 2);
  b->data[b->len++] = '"';
  if (p[n]) {
    /* escapes; invalid UTF-8 becomes U+FFFD, as jstr_any() does */
    sk_json_escape(b, (const char *)p, n + strlen((const char *)p + n));
  } else {
    memcpy(b->data + b->len, p, n); /* printable ASCII: as is */
    b->len += n;
  }
  w_char(b, '"');
}

void tl__json_strn(sk_buf_t *b, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = 0;
  while (n < len && json_plain[p[n]]) n++;
  if (b->cap - b->len <= len + 2) sk_buf_reserve(b, len + 2);
  b->data[b->len++] = '"';
  if (n < len) {
    sk_json_escape(b, s, len);
  } else {
    memcpy(b->data + b->len, p, n);
    b->len += n;
  }
  w_char(b, '"');
}

void tl__json_u64(sk_buf_t *b, uint64_t v) {
  char t[24];
  size_t i = sizeof t;
  do {
    t[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  w_mem(b, t + i, sizeof t - i);
}

void tl__json_i64(sk_buf_t *b, int64_t v) {
  if (v < 0) {
    w_char(b, '-');
    tl__json_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    tl__json_u64(b, (uint64_t)v);
  }
}

/* A finite double as jansson dumps a real: %.17g, ".0" added to an integral
 * value so it reads back as a real. NaN and infinities are strings. */
void tl__json_double(sk_buf_t *b, double d) {
  if (isnan(d)) {
    W_LIT(b, "\"NaN\"");
    return;
  }
  if (isinf(d)) {
    if (d > 0) W_LIT(b, "\"Infinity\"");
    else W_LIT(b, "\"-Infinity\"");
    return;
  }
  char t[40];
  int n = snprintf(t, sizeof t, "%.17g", d);
  if (n < 0 || (size_t)n >= sizeof t) n = 0;
  sk_buf_append(b, t, (size_t)n);
  if (!strpbrk(t, ".eE")) W_LIT(b, ".0");
}

void tl__json_base64(sk_buf_t *b, const ProtobufCBinaryData *d) {
  static const char tb[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  sk_buf_reserve(b, d->len / 3 * 4 + 8);
  char *o = b->data + b->len;
  size_t j = 0, i = 0;
  o[j++] = '"';
  for (; i + 2 < d->len; i += 3) {
    uint32_t v = (uint32_t)d->data[i] << 16 | (uint32_t)d->data[i + 1] << 8 | d->data[i + 2];
    o[j++] = tb[v >> 18 & 63], o[j++] = tb[v >> 12 & 63], o[j++] = tb[v >> 6 & 63], o[j++] = tb[v & 63];
  }
  if (i < d->len) {
    uint32_t v = (uint32_t)d->data[i] << 16 | (i + 1 < d->len ? (uint32_t)d->data[i + 1] << 8 : 0);
    o[j++] = tb[v >> 18 & 63], o[j++] = tb[v >> 12 & 63];
    o[j++] = i + 1 < d->len ? tb[v >> 6 & 63] : '=';
    o[j++] = '=';
  }
  o[j++] = '"';
  b->len += j;
}

static void w_msg(sk_buf_t *b, const ProtobufCMessage *m);

static void w_any(sk_buf_t *b, const Otlp__AnyValue *v) {
  switch (v->value_case) {
  case OTLP__ANY_VALUE__VALUE_STRING_VALUE:
    W_LIT(b, "{\"stringValue\":");
    w_str(b, v->string_value);
    break;
  case OTLP__ANY_VALUE__VALUE_BOOL_VALUE:
    if (v->bool_value) W_LIT(b, "{\"boolValue\":true");
    else W_LIT(b, "{\"boolValue\":false");
    break;
  case OTLP__ANY_VALUE__VALUE_INT_VALUE:
    W_LIT(b, "{\"intValue\":\"");
    tl__json_i64(b, v->int_value);
    w_char(b, '"');
    break;
  case OTLP__ANY_VALUE__VALUE_DOUBLE_VALUE:
    W_LIT(b, "{\"doubleValue\":");
    tl__json_double(b, v->double_value);
    break;
  case OTLP__ANY_VALUE__VALUE_ARRAY_VALUE:
    W_LIT(b, "{\"arrayValue\":");
    if (v->array_value) w_msg(b, &v->array_value->base);
    else W_LIT(b, "{}");
    break;
  case OTLP__ANY_VALUE__VALUE_KVLIST_VALUE:
    W_LIT(b, "{\"kvlistValue\":");
    if (v->kvlist_value) w_msg(b, &v->kvlist_value->base);
    else W_LIT(b, "{}");
    break;
  case OTLP__ANY_VALUE__VALUE_BYTES_VALUE:
    W_LIT(b, "{\"bytesValue\":");
    tl__json_base64(b, &v->bytes_value);
    break;
  default:
    w_char(b, '{');
    break;
  }
  w_char(b, '}');
}

static void w_kv(sk_buf_t *b, const Otlp__KeyValue *kv) {
  w_char(b, '{');
  if (kv->key) {
    W_LIT(b, "\"key\":");
    w_str(b, kv->key);
  }
  if (kv->value) {
    if (kv->key) w_char(b, ',');
    W_LIT(b, "\"value\":");
    w_any(b, kv->value);
  }
  w_char(b, '}');
}

static void w_value(sk_buf_t *b, const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    tl__json_i64(b, *(const int32_t *)p);
    return;
  case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
    tl__json_u64(b, *(const uint32_t *)p);
    return;
  case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    w_char(b, '"');
    tl__json_i64(b, *(const int64_t *)p);
    w_char(b, '"');
    return;
  case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
    w_char(b, '"');
    tl__json_u64(b, *(const uint64_t *)p);
    w_char(b, '"');
    return;
  case PROTOBUF_C_TYPE_DOUBLE:
    tl__json_double(b, *(const double *)p);
    return;
  case PROTOBUF_C_TYPE_FLOAT:
    tl__json_double(b, *(const float *)p);
    return;
  case PROTOBUF_C_TYPE_BOOL:
    if (*(const protobuf_c_boolean *)p) W_LIT(b, "true");
    else W_LIT(b, "false");
    return;
  case PROTOBUF_C_TYPE_STRING:
    w_str(b, *(char *const *)p);
    return;
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *d = p;
    if (is_id_field(f->name)) {
      sk_buf_reserve(b, d->len * 2 + 3);
      b->data[b->len++] = '"';
      tl_hex(d->data, d->len, b->data + b->len);
      b->len += d->len * 2;
      b->data[b->len++] = '"';
      return;
    }
    tl__json_base64(b, d);
    return;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
    if (m) w_msg(b, m);
    else W_LIT(b, "{}");
    return;
  }
  }
  W_LIT(b, "null");
}

static void w_msg(sk_buf_t *b, const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (d == &otlp__key_value__descriptor) {
    w_kv(b, (const Otlp__KeyValue *)m);
    return;
  }
  if (d == &otlp__any_value__descriptor) {
    w_any(b, (const Otlp__AnyValue *)m);
    return;
  }
  const char *base = (const char *)m;
  int first = 1;
  w_char(b, '{');
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    size_t n = 0;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      n = *(const size_t *)(base + f->quantifier_offset);
      if (!n) continue;
    } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
      if (!*(void *const *)(base + f->offset)) continue;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
      if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset)) continue;
    }
    char name[128];
    camel(f->name, name, sizeof name);
    if (!first) w_char(b, ',');
    first = 0;
    w_char(b, '"');
    w_mem(b, name, strlen(name)); /* descriptor names need no escaping */
    W_LIT(b, "\":");
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      const char *arr = *(char *const *)(base + f->offset);
      size_t es = elem_size(f->type);
      w_char(b, '[');
      for (size_t k = 0; k < n; k++) {
        if (k) w_char(b, ',');
        w_value(b, f, arr + k * es);
      }
      w_char(b, ']');
    } else {
      w_value(b, f, base + f->offset);
    }
  }
  w_char(b, '}');
}

void tl_pb_json_write(sk_buf_t *b, const ProtobufCMessage *m) { w_msg(b, m); }
