/* skiff-telemetry: byte-level codecs - gzip/zlib, snappy, protobuf with a
 * nesting bound and arena memory, hex. */
#include <snappy-c.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "skiff/err.h"
#include "tl_int.h"

int tl_gunzip(sk_pool_t *pool, const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* 32 + 15: detect gzip or zlib header */
  if (inflateInit2(&z, 32 + 15) != Z_OK) return SK_ENOMEM;
  size_t cap = len * 4 + 1024;
  if (cap > max + 1) cap = max + 1;
  sk_buf_t b;
  sk_buf_init(&b);
  sk_buf_reserve(&b, cap);
  int rc = 0;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  for (;;) {
    if (b.cap - b.len < 65536) sk_buf_reserve(&b, b.cap);
    z.next_out = (Bytef *)b.data + b.len;
    size_t room = b.cap - b.len;
    if (room > (1u << 30)) room = 1u << 30;
    z.avail_out = (uInt)room;
    int zr = inflate(&z, Z_NO_FLUSH);
    b.len = room - z.avail_out + b.len;
    if (b.len > max) {
      rc = SK_E2BIG;
      goto out;
    }
    if (zr == Z_STREAM_END) {
      /* concatenated gzip members */
      if (z.avail_in > 0) {
        if (inflateReset(&z) != Z_OK) {
          rc = SK_EPARSE;
          goto out;
        }
        continue;
      }
      break;
    }
    if (zr == Z_BUF_ERROR && z.avail_in == 0) {
      rc = SK_EPARSE; /* truncated */
      goto out;
    }
    if (zr != Z_OK && zr != Z_BUF_ERROR) {
      rc = SK_EPARSE;
      goto out;
    }
  }
  *out = sk_pool_memdup(pool, b.data ? b.data : "", b.len + 1);
  (*out)[b.len] = 0;
  *outlen = b.len;
out:
  inflateEnd(&z);
  sk_buf_done(&b);
  return rc;
}

int tl_snappy_decode(sk_pool_t *pool, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                     size_t *outlen) {
  size_t n = 0;
  if (snappy_uncompressed_length((const char *)in, len, &n) != SNAPPY_OK) return SK_EPARSE;
  if (n > max) return SK_E2BIG;
  if (snappy_validate_compressed_buffer((const char *)in, len) != SNAPPY_OK) return SK_EPARSE;
  uint8_t *o = sk_pool_alloc(pool, n + 1);
  size_t got = n;
  if (snappy_uncompress((const char *)in, len, (char *)o, &got) != SNAPPY_OK || got != n) return SK_EPARSE;
  o[n] = 0;
  *out = o;
  *outlen = n;
  return 0;
}

/* ---- protobuf ---- */

static int read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= len) return -1;
    uint8_t c = p[(*pos)++];
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d, uint32_t num) {
  for (unsigned i = 0; i < d->n_fields; i++)
    if (d->fields[i].id == num) return &d->fields[i];
  return NULL;
}

/* Walks the wire format: well-formed framing and message nesting at most
 * TL_PB_MAX_DEPTH, so the recursive unpacker cannot run out of stack. */
static int pb_check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, int depth) {
  if (depth > TL_PB_MAX_DEPTH) return -2;
  size_t pos = 0;
  while (pos < len) {
    uint64_t key;
    if (read_varint(p, len, &pos, &key) < 0) return -1;
    uint32_t wt = key & 7, num = (uint32_t)(key >> 3);
    if (num == 0) return -1;
    uint64_t v;
    switch (wt) {
    case 0:
      if (read_varint(p, len, &pos, &v) < 0) return -1;
      break;
    case 1:
      if (len - pos < 8) return -1;
      pos += 8;
      break;
    case 5:
      if (len - pos < 4) return -1;
      pos += 4;
      break;
    case 2: {
      if (read_varint(p, len, &pos, &v) < 0 || v > len - pos) return -1;
      const ProtobufCFieldDescriptor *f = find_field(d, num);
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        int r = pb_check(f->descriptor, p + pos, (size_t)v, depth + 1);
        if (r < 0) return r;
      }
      pos += (size_t)v;
      break;
    }
    default:
      return -1; /* groups (3, 4) are not used by these messages */
    }
  }
  return 0;
}

static void *pool_alloc(void *ud, size_t n) { return sk_pool_alloc(ud, n ? n : 1); }
static void pool_free(void *ud, void *p) { (void)ud, (void)p; }

ProtobufCMessage *tl_pb_unpack(sk_pool_t *pool, const ProtobufCMessageDescriptor *d, const uint8_t *data,
                               size_t len, char *err, size_t errlen) {
  int r = pb_check(d, data, len, 1);
  if (r == -2) {
    snprintf(err, errlen, "protobuf nesting deeper than %d", TL_PB_MAX_DEPTH);
    return NULL;
  }
  if (r < 0) {
    snprintf(err, errlen, "malformed protobuf %s", d->name);
    return NULL;
  }
  ProtobufCAllocator al = {.alloc = pool_alloc, .free = pool_free, .allocator_data = pool};
  ProtobufCMessage *m = protobuf_c_message_unpack(d, &al, len, data);
  if (!m) snprintf(err, errlen, "cannot decode protobuf %s", d->name);
  return m;
}

uint8_t *tl_pb_pack(sk_pool_t *pool, const ProtobufCMessage *m, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = sk_pool_alloc(pool, n + 1);
  *len = protobuf_c_message_pack(m, b);
  return b;
}

void tl_hex(const uint8_t *b, size_t n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[b[i] >> 4];
    out[2 * i + 1] = hx[b[i] & 15];
  }
  out[2 * n] = 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int tl_unhex(const char *s, uint8_t *out, size_t max) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > max) return SK_EINVAL;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
    if (hi < 0 || lo < 0) return SK_EINVAL;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (int)(n / 2);
}
