/* px_resil_ratelimit.c - local rate limiting: token buckets kept as a
 * theoretical arrival time (GCRA), one per route or one per client in a
 * bounded LRU table. One px_ratelimit_t serves every worker: the route
 * bucket is a single atomic word advanced by compare-and-swap, the client
 * table is looked up and updated under a mutex (one hash lookup, one LRU
 * move, one GCRA step). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

#define PX_RL_MAX_KEY 255
#define PX_RL_MIN_SLOTS 64

struct px_rl_client {
  px_rl_client_t *chain;            /* hash bucket chain */
  px_rl_client_t *prev, *next;      /* LRU list */
  uint64_t hash;
  uint64_t tat;
  size_t keylen;
  char key[];
};

void px_ratelimit_config_default(px_ratelimit_config_t *c) {
  memset(c, 0, sizeof *c);
  c->unit_ms = 1000;
  c->per_client = PX_RL_KEY_NONE;
  c->max_clients = 10000;
}

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int px_ratelimit_config_parse(const json_t *j, const char *path, px_ratelimit_config_t *out,
                              char *err, size_t errlen) {
  static const char *const keys[] = {"requests_per_unit", "unit", "burst", "per_client",
                                     "header", "max_clients", NULL};
  px_ratelimit_config_t c;
  px_ratelimit_config_default(&c);
  int rc;
  uint64_t u;
  char s[64];
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  c.enabled = 1;
  if ((rc = px_conf_uint(j, path, "requests_per_unit", 1, 1000000000, &c.requests_per_unit, err,
                         errlen)) < 0)
    return rc;
  if (rc == 1) return px__conf_err(err, errlen, path, "requests_per_unit", "is required");
  s[0] = 0;
  if ((rc = px_conf_string(j, path, "unit", s, sizeof s, err, errlen)) < 0) return rc;
  if (rc == 0) {
    if (!strcmp(s, "second")) c.unit_ms = 1000;
    else if (!strcmp(s, "minute")) c.unit_ms = 60000;
    else if (!strcmp(s, "hour")) c.unit_ms = 3600000;
    else return px__conf_err(err, errlen, path, "unit", "expected second, minute or hour");
  }
  c.burst = c.requests_per_unit;
  if ((rc = px_conf_uint(j, path, "burst", 1, 1000000000, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.burst = u;
  s[0] = 0;
  if ((rc = px_conf_string(j, path, "per_client", s, sizeof s, err, errlen)) < 0) return rc;
  if (rc == 0) {
    if (!strcmp(s, "none")) c.per_client = PX_RL_KEY_NONE;
    else if (!strcmp(s, "spiffe")) c.per_client = PX_RL_KEY_SPIFFE;
    else if (!strcmp(s, "address")) c.per_client = PX_RL_KEY_ADDRESS;
    else if (!strcmp(s, "header")) c.per_client = PX_RL_KEY_HEADER;
    else return px__conf_err(err, errlen, path, "per_client", "expected none, spiffe, address or header");
  }
  if ((rc = px_conf_string(j, path, "header", c.header, sizeof c.header, err, errlen)) < 0) return rc;
  for (const char *p = c.header; *p; p++)
    if (!is_tchar((unsigned char)*p)) return px__conf_err(err, errlen, path, "header", "not a header name");
  if (c.per_client == PX_RL_KEY_HEADER && !c.header[0])
    return px__conf_err(err, errlen, path, "header", "is required when per_client is header");
  if ((rc = px_conf_uint(j, path, "max_clients", 1, 1000000, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.max_clients = (uint32_t)u;
  *out = c;
  return 0;
}

int px_ratelimit_init(px_ratelimit_t *rl, const px_ratelimit_config_t *c) {
  memset(rl, 0, sizeof *rl);
  rl->cfg = *c;
  uint64_t rate = c->requests_per_unit ? c->requests_per_unit : 1;
  uint64_t burst = c->burst ? c->burst : rate;
  rl->interval_ns = c->unit_ms * PX_MS / rate;
  if (!rl->interval_ns) rl->interval_ns = 1;
  rl->tolerance_ns = burst > UINT64_MAX / rl->interval_ns ? UINT64_MAX / 2 : burst * rl->interval_ns;
  atomic_init(&rl->route.tat, 0);
  if (c->per_client != PX_RL_KEY_NONE) {
    /* starts small and doubles with the clients seen, up to max_clients */
    rl->slots = calloc(PX_RL_MIN_SLOTS, sizeof *rl->slots);
    if (!rl->slots) return SK_ENOMEM;
    rl->nslots = PX_RL_MIN_SLOTS;
    if (pthread_mutex_init(&rl->mu, NULL) != 0) {
      free(rl->slots);
      rl->slots = NULL;
      rl->nslots = 0;
      return SK_ENOMEM;
    }
    rl->mu_init = 1;
  }
  return 0;
}

void px_ratelimit_done(px_ratelimit_t *rl) {
  if (!rl) return;
  for (px_rl_client_t *c = rl->lru_head, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(rl->slots);
  rl->slots = NULL;
  rl->lru_head = rl->lru_tail = NULL;
  rl->nslots = rl->nclients = 0;
  if (rl->mu_init) pthread_mutex_destroy(&rl->mu);
  rl->mu_init = 0;
}

const char *px_ratelimit_key(const px_ratelimit_config_t *c, const sk_http_req_t *req, char *buf,
                             size_t len) {
  if (!len) return buf;
  buf[0] = 0;
  const char *addr = req->peer_addr ? req->peer_addr : "";
  switch (c->per_client) {
  case PX_RL_KEY_NONE:
    break;
  case PX_RL_KEY_SPIFFE:
    if (req->peer_spiffe && *req->peer_spiffe) {
      snprintf(buf, len, "%s", req->peer_spiffe);
      break;
    }
    /* no identity: limit by address */
    __attribute__((fallthrough));
  case PX_RL_KEY_ADDRESS: {
    const char *a = addr, *end;
    if (*a == '[') {
      a++;
      end = strchr(a, ']');
    } else {
      end = strrchr(a, ':');
      if (end && strchr(a, ':') != end) end = NULL; /* bare v6 without port */
    }
    size_t n = end ? (size_t)(end - a) : strlen(a);
    snprintf(buf, len, "%.*s", (int)(n < 1000 ? n : 1000), a);
    break;
  }
  case PX_RL_KEY_HEADER: {
    const char *v = sk_http_headers_get(&req->headers, c->header);
    snprintf(buf, len, "%s", v ? v : "");
    break;
  }
  }
  return buf;
}

/* One GCRA step on *tat: returns 1 and advances it, or 0 with the wait. */
static int gcra(const px_ratelimit_t *rl, uint64_t *tat, uint64_t now, uint64_t *wait) {
  uint64_t t = *tat > now ? *tat : now;
  uint64_t next = t + rl->interval_ns;
  if (next - now > rl->tolerance_ns) {
    *wait = next - now - rl->tolerance_ns;
    return 0;
  }
  *tat = next;
  return 1;
}

static uint64_t key_hash(const char *k, size_t n) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)k[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

static void lru_unlink(px_ratelimit_t *rl, px_rl_client_t *c) {
  if (c->prev) c->prev->next = c->next;
  else rl->lru_head = c->next;
  if (c->next) c->next->prev = c->prev;
  else rl->lru_tail = c->prev;
  c->prev = c->next = NULL;
}

static void lru_push_front(px_ratelimit_t *rl, px_rl_client_t *c) {
  c->prev = NULL;
  c->next = rl->lru_head;
  if (rl->lru_head) rl->lru_head->prev = c;
  rl->lru_head = c;
  if (!rl->lru_tail) rl->lru_tail = c;
}

static void table_remove(px_ratelimit_t *rl, px_rl_client_t *c) {
  px_rl_client_t **pp = &rl->slots[c->hash & (rl->nslots - 1)];
  while (*pp && *pp != c) pp = &(*pp)->chain;
  if (*pp) *pp = c->chain;
  lru_unlink(rl, c);
  rl->nclients--;
  free(c);
}

/* Doubles the hash table (load factor 1); on allocation failure the old
 * table stays, just with longer chains. */
static void table_grow(px_ratelimit_t *rl) {
  size_t n = rl->nslots * 2;
  px_rl_client_t **slots = calloc(n, sizeof *slots);
  if (!slots) return;
  for (size_t i = 0; i < rl->nslots; i++) {
    for (px_rl_client_t *c = rl->slots[i], *next; c; c = next) {
      next = c->chain;
      c->chain = slots[c->hash & (n - 1)];
      slots[c->hash & (n - 1)] = c;
    }
  }
  free(rl->slots);
  rl->slots = slots;
  rl->nslots = n;
}

static px_rl_client_t *client_get(px_ratelimit_t *rl, const char *key, int create) {
  size_t n = strlen(key);
  if (n > PX_RL_MAX_KEY) n = PX_RL_MAX_KEY;
  uint64_t h = key_hash(key, n);
  px_rl_client_t **slot = &rl->slots[h & (rl->nslots - 1)];
  for (px_rl_client_t *c = *slot; c; c = c->chain)
    if (c->hash == h && c->keylen == n && !memcmp(c->key, key, n)) {
      if (rl->lru_head != c) {
        lru_unlink(rl, c);
        lru_push_front(rl, c);
      }
      return c;
    }
  if (!create) return NULL;
  uint32_t max = rl->cfg.max_clients ? rl->cfg.max_clients : 10000;
  while (rl->nclients >= max && rl->lru_tail) {
    table_remove(rl, rl->lru_tail);
    rl->evictions++;
  }
  if (rl->nclients >= rl->nslots && rl->nslots < max) {
    table_grow(rl);
    slot = &rl->slots[h & (rl->nslots - 1)];
  }
  px_rl_client_t *c = malloc(sizeof *c + n + 1);
  if (!c) return NULL;
  memset(c, 0, sizeof *c);
  c->hash = h;
  c->keylen = n;
  memcpy(c->key, key, n);
  c->key[n] = 0;
  c->chain = *slot;
  *slot = c;
  lru_push_front(rl, c);
  rl->nclients++;
  return c;
}

int px_ratelimit_allow(px_ratelimit_t *rl, const char *key, uint64_t now_ns, uint32_t *retry_after_s) {
  uint64_t wait = 0;
  int ok;
  if (!rl->cfg.enabled) return 1;
  if (rl->cfg.per_client == PX_RL_KEY_NONE || !rl->slots) {
    uint64_t cur = atomic_load_explicit(&rl->route.tat, memory_order_relaxed);
    for (;;) {
      uint64_t t = cur;
      ok = gcra(rl, &t, now_ns, &wait);
      if (!ok) break;
      if (atomic_compare_exchange_weak_explicit(&rl->route.tat, &cur, t, memory_order_relaxed,
                                                memory_order_relaxed))
        break;
    }
  } else {
    pthread_mutex_lock(&rl->mu);
    px_rl_client_t *c = client_get(rl, key ? key : "", 1);
    ok = c ? gcra(rl, &c->tat, now_ns, &wait) : 1; /* out of memory: fail open */
    pthread_mutex_unlock(&rl->mu);
  }
  if (!ok && retry_after_s) {
    uint64_t s = (wait + UINT64_C(999999999)) / UINT64_C(1000000000);
    *retry_after_s = s < 1 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
  }
  return ok;
}

double px_ratelimit_tokens(px_ratelimit_t *rl, const char *key, uint64_t now_ns) {
  uint64_t tat;
  if (rl->cfg.per_client == PX_RL_KEY_NONE || !rl->slots) {
    tat = atomic_load_explicit(&rl->route.tat, memory_order_relaxed);
  } else {
    pthread_mutex_lock(&rl->mu);
    px_rl_client_t *c = client_get(rl, key ? key : "", 0);
    tat = c ? c->tat : 0;
    pthread_mutex_unlock(&rl->mu);
  }
  uint64_t backlog = tat > now_ns ? tat - now_ns : 0;
  if (backlog >= rl->tolerance_ns) return 0;
  return (double)(rl->tolerance_ns - backlog) / (double)rl->interval_ns;
}
