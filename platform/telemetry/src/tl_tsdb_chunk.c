/* tl_tsdb_chunk.c - Gorilla-style sample compression.
 *
 * Bit stream, most significant bit first:
 *   sample 0: timestamp (64 bits), value (64 bits, IEEE 754 raw)
 *   then per sample: delta-of-delta of the timestamp in a prefix code
 *       '0'                 dod == 0
 *       '10'   + 14 bits    -8192 .. 8191
 *       '110'  + 17 bits    -65536 .. 65535
 *       '1110' + 20 bits    -524288 .. 524287
 *       '1111' + 64 bits    anything
 *     and the value XOR'd with the previous one
 *       '0'                 same value
 *       '10' + bits         meaningful bits inside the previous window
 *       '11' + 5 bits leading zeros + 6 bits length (0 = 64) + bits
 */
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "tl_tsdb.h"

static uint64_t dbits(double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

static double bitsd(uint64_t u) {
  double v;
  memcpy(&v, &u, sizeof v);
  return v;
}

void tl_chunk_init(tl_chunk_t *c) {
  memset(c, 0, sizeof *c);
  c->lead = 0xff;
}

void tl_chunk_done(tl_chunk_t *c) {
  if (!c) return;
  free(c->buf);
  c->buf = NULL;
  c->cap = 0;
}

size_t tl_chunk_bytes(const tl_chunk_t *c) { return (c->nbits + 7) / 8; }

static void put_bits(tl_chunk_t *c, uint64_t v, unsigned nb) {
  if (nb == 0) return;
  size_t need = (c->nbits + nb + 7) / 8;
  if (need > c->cap) {
    size_t nc = c->cap ? c->cap * 2 : 32;
    while (nc < need) nc *= 2;
    c->buf = sk_xrealloc(c->buf, nc);
    memset(c->buf + c->cap, 0, nc - c->cap);
    c->cap = nc;
  }
  if (nb < 64) v &= ((uint64_t)1 << nb) - 1;
  while (nb > 0) {
    size_t byte = c->nbits / 8;
    unsigned used = (unsigned)(c->nbits % 8);
    unsigned room = 8 - used;
    unsigned take = nb < room ? nb : room;
    uint8_t piece = (uint8_t)((v >> (nb - take)) & ((1u << take) - 1));
    c->buf[byte] |= (uint8_t)(piece << (room - take));
    c->nbits += take;
    nb -= take;
  }
}

static int fits(int64_t v, unsigned nb) {
  int64_t lo = -((int64_t)1 << (nb - 1)), hi = ((int64_t)1 << (nb - 1)) - 1;
  return v >= lo && v <= hi;
}

void tl_chunk_append(tl_chunk_t *c, int64_t ts, double v) {
  uint64_t vb = dbits(v);
  if (c->n == 0) {
    put_bits(c, (uint64_t)ts, 64);
    put_bits(c, vb, 64);
    c->mint = c->maxt = ts;
    c->t_prev = ts;
    c->t_delta = 0;
    c->v_prev = vb;
    c->n = 1;
    return;
  }
  int64_t delta = (int64_t)((uint64_t)ts - (uint64_t)c->t_prev);
  int64_t dod = (int64_t)((uint64_t)delta - (uint64_t)c->t_delta);
  if (dod == 0) {
    put_bits(c, 0, 1);
  } else if (fits(dod, 14)) {
    put_bits(c, 2, 2);
    put_bits(c, (uint64_t)dod, 14);
  } else if (fits(dod, 17)) {
    put_bits(c, 6, 3);
    put_bits(c, (uint64_t)dod, 17);
  } else if (fits(dod, 20)) {
    put_bits(c, 14, 4);
    put_bits(c, (uint64_t)dod, 20);
  } else {
    put_bits(c, 15, 4);
    put_bits(c, (uint64_t)dod, 64);
  }
  c->t_delta = delta;
  c->t_prev = ts;

  uint64_t x = vb ^ c->v_prev;
  if (x == 0) {
    put_bits(c, 0, 1);
  } else {
    unsigned lead = (unsigned)__builtin_clzll(x), trail = (unsigned)__builtin_ctzll(x);
    if (lead > 31) lead = 31;
    if (c->lead != 0xff && lead >= c->lead && trail >= c->trail) {
      put_bits(c, 2, 2);
      put_bits(c, x >> c->trail, 64u - c->lead - c->trail);
    } else {
      unsigned sig = 64 - lead - trail;
      put_bits(c, 3, 2);
      put_bits(c, lead, 5);
      put_bits(c, sig & 63u, 6);
      put_bits(c, x >> trail, sig);
      c->lead = (uint8_t)lead;
      c->trail = (uint8_t)trail;
    }
  }
  c->v_prev = vb;
  if (ts > c->maxt) c->maxt = ts;
  if (ts < c->mint) c->mint = ts;
  c->n++;
}

void tl_chunk_iter_init(tl_chunk_iter_t *it, const uint8_t *buf, size_t nbytes, uint32_t n) {
  memset(it, 0, sizeof *it);
  it->buf = buf;
  it->nbits = nbytes * 8;
  it->n = n;
  it->lead = 0xff;
}

static int get_bits(tl_chunk_iter_t *it, unsigned nb, uint64_t *out) {
  if (nb > it->nbits - it->pos || it->pos > it->nbits) return SK_EPARSE;
  size_t at = it->pos / 8;
  if (nb == 0) {
    *out = 0;
    return 0;
  }
  if (nb <= 56 && at + 8 <= it->nbits / 8) { /* one 8-byte window holds the bits */
    const uint8_t *q = it->buf + at;
    uint64_t w = (uint64_t)q[0] << 56 | (uint64_t)q[1] << 48 | (uint64_t)q[2] << 40 | (uint64_t)q[3] << 32 |
                 (uint64_t)q[4] << 24 | (uint64_t)q[5] << 16 | (uint64_t)q[6] << 8 | (uint64_t)q[7];
    *out = (w << (it->pos % 8)) >> (64 - nb);
    it->pos += nb;
    return 0;
  }
  uint64_t v = 0;
  while (nb > 0) {
    size_t byte = it->pos / 8;
    unsigned used = (unsigned)(it->pos % 8);
    unsigned room = 8 - used;
    unsigned take = nb < room ? nb : room;
    unsigned piece = ((unsigned)it->buf[byte] >> (room - take)) & ((1u << take) - 1);
    v = (take == 64 ? 0 : v << take) | piece;
    it->pos += take;
    nb -= take;
  }
  *out = v;
  return 0;
}

static int64_t sext(uint64_t v, unsigned nb) {
  if (nb >= 64) return (int64_t)v;
  uint64_t m = (uint64_t)1 << (nb - 1);
  return (int64_t)((v ^ m) - m);
}

int tl_chunk_iter_next(tl_chunk_iter_t *it, int64_t *ts, double *v) {
  if (it->i >= it->n) return 0;
  uint64_t b;
  if (it->i == 0) {
    uint64_t t;
    if (get_bits(it, 64, &t) < 0 || get_bits(it, 64, &b) < 0) return SK_EPARSE;
    it->t = (int64_t)t;
    it->v = b;
    it->delta = 0;
  } else {
    unsigned ones = 0;
    while (ones < 4) {
      if (get_bits(it, 1, &b) < 0) return SK_EPARSE;
      if (!b) break;
      ones++;
    }
    int64_t dod = 0;
    static const unsigned widths[5] = {0, 14, 17, 20, 64};
    if (ones > 0) {
      if (get_bits(it, widths[ones], &b) < 0) return SK_EPARSE;
      dod = sext(b, widths[ones]);
    }
    it->delta = (int64_t)((uint64_t)it->delta + (uint64_t)dod);
    it->t = (int64_t)((uint64_t)it->t + (uint64_t)it->delta);
    if (get_bits(it, 1, &b) < 0) return SK_EPARSE;
    if (b) {
      if (get_bits(it, 1, &b) < 0) return SK_EPARSE;
      if (!b) {
        if (it->lead == 0xff) return SK_EPARSE;
        unsigned sig = 64u - it->lead - it->trail;
        if (get_bits(it, sig, &b) < 0) return SK_EPARSE;
        it->v ^= b << it->trail;
      } else {
        uint64_t lead, sig;
        if (get_bits(it, 5, &lead) < 0 || get_bits(it, 6, &sig) < 0) return SK_EPARSE;
        if (sig == 0) sig = 64;
        if (lead + sig > 64) return SK_EPARSE;
        it->lead = (uint8_t)lead;
        it->trail = (uint8_t)(64 - lead - sig);
        if (get_bits(it, (unsigned)sig, &b) < 0) return SK_EPARSE;
        it->v ^= it->trail >= 64 ? 0 : b << it->trail;
      }
    }
  }
  it->i++;
  *ts = it->t;
  *v = bitsd(it->v);
  return 1;
}
