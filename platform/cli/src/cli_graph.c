/* Start order of the supervised daemons and the restart backoff. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli_int.h"
#include "skiff/err.h"

static void append(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  size_t used = strnlen(err, errlen);
  if (used + 1 >= errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + used, errlen - used, fmt, ap);
  va_end(ap);
}

/* Follows unplaced dependencies from start until a daemon repeats; writes
 * the cycle as "a -> b -> a" and returns the index and dependency slot
 * whose edge closes it (for the error position). */
static void find_cycle(const cli_config_t *c, const int *dep_idx_base, const size_t *dep_off,
                       const unsigned char *placed, size_t start, char *msg, size_t msglen,
                       size_t *at_daemon, size_t *at_dep) {
  int seen_step[CLI_MAX_DAEMONS];
  size_t path[CLI_MAX_DAEMONS + 1];
  size_t npath = 0, cur = start;
  for (size_t i = 0; i < c->n; i++) seen_step[i] = -1;
  *at_daemon = start;
  *at_dep = 0;
  for (;;) {
    if (seen_step[cur] >= 0) break;
    seen_step[cur] = (int)npath;
    path[npath++] = cur;
    size_t next = cur, slot = 0;
    int found = 0;
    for (size_t k = 0; k < c->d[cur].deps.n; k++) {
      int j = dep_idx_base[dep_off[cur] + k];
      if (j >= 0 && !placed[j]) {
        next = (size_t)j;
        slot = k;
        found = 1;
        break;
      }
    }
    if (!found) break; /* cannot happen: an unplaced daemon has an unplaced dependency */
    *at_daemon = cur;
    *at_dep = slot;
    cur = next;
  }
  /* the cycle is path[seen_step[cur] .. npath) then cur again */
  msg[0] = 0;
  size_t from = seen_step[cur] >= 0 ? (size_t)seen_step[cur] : 0;
  size_t used = 0;
  for (size_t i = from; i < npath && used < msglen; i++) {
    int w = snprintf(msg + used, msglen - used, "%s -> ", c->d[path[i]].name);
    if (w < 0) break;
    used += (size_t)w;
  }
  if (used < msglen) snprintf(msg + used, msglen - used, "%s", c->d[cur].name);
  /* report at the first daemon of the cycle, on its edge into the cycle */
  size_t first = path[from];
  *at_daemon = first;
  size_t second = from + 1 < npath ? path[from + 1] : first;
  for (size_t k = 0; k < c->d[first].deps.n; k++)
    if (dep_idx_base[dep_off[first] + k] == (int)second) {
      *at_dep = k;
      break;
    }
}

int cli_order(const cli_config_t *c, size_t *order, char *err, size_t errlen) {
  int dep_idx[CLI_MAX_DAEMONS * CLI_MAX_LIST];
  size_t dep_off[CLI_MAX_DAEMONS];
  unsigned char placed[CLI_MAX_DAEMONS];
  int rc = 0;
  if (err && errlen) err[0] = 0;
  if (c->n > CLI_MAX_DAEMONS) {
    append(err, errlen, "%s: too many daemons (%zu, at most %d)\n", c->path, c->n, CLI_MAX_DAEMONS);
    return SK_ECONFIG;
  }
  size_t off = 0;
  for (size_t i = 0; i < c->n; i++) {
    const cli_daemon_spec_t *d = &c->d[i];
    dep_off[i] = off;
    placed[i] = 0;
    if (d->deps.n > CLI_MAX_LIST) {
      append(err, errlen, "%s:%d:%d: daemon '%s' has too many dependencies\n", c->path, d->pos.line,
             d->pos.col, d->name);
      return SK_ECONFIG;
    }
    for (size_t k = 0; k < d->deps.n; k++) {
      int j = cli_config_find(c, d->deps.v[k]);
      cli_pos_t p = d->dep_pos ? d->dep_pos[k] : d->pos;
      if (j < 0) {
        append(err, errlen, "%s:%d:%d: daemon '%s' depends on unknown daemon '%s'\n", c->path,
               p.line, p.col, d->name, d->deps.v[k]);
        rc = SK_ECONFIG;
      } else if ((size_t)j == i) {
        append(err, errlen, "%s:%d:%d: daemon '%s' depends on itself\n", c->path, p.line, p.col,
               d->name);
        rc = SK_ECONFIG;
        j = -1;
      }
      dep_idx[off++] = j;
    }
  }
  if (rc < 0) return rc;

  size_t n = 0;
  while (n < c->n) {
    size_t pick = c->n;
    for (size_t i = 0; i < c->n && pick == c->n; i++) {
      if (placed[i]) continue;
      int ok = 1;
      for (size_t k = 0; k < c->d[i].deps.n; k++) {
        int j = dep_idx[dep_off[i] + k];
        if (j >= 0 && !placed[j]) {
          ok = 0;
          break;
        }
      }
      if (ok) pick = i;
    }
    if (pick == c->n) {
      size_t start = 0;
      while (start < c->n && placed[start]) start++;
      char cyc[1024];
      size_t at_d, at_k;
      find_cycle(c, dep_idx, dep_off, placed, start, cyc, sizeof cyc, &at_d, &at_k);
      const cli_daemon_spec_t *d = &c->d[at_d];
      cli_pos_t p = d->dep_pos && at_k < d->deps.n ? d->dep_pos[at_k] : d->pos;
      append(err, errlen, "%s:%d:%d: dependency cycle: %s\n", c->path, p.line, p.col, cyc);
      return SK_ECONFIG;
    }
    placed[pick] = 1;
    order[n++] = pick;
  }
  return 0;
}

void cli_backoff_init(cli_backoff_t *b, uint64_t base_ms, uint64_t cap_ms, uint64_t reset_ms) {
  b->base_ms = base_ms ? base_ms : 1;
  b->cap_ms = cap_ms < b->base_ms ? b->base_ms : cap_ms;
  b->reset_ms = reset_ms;
  b->next_ms = b->base_ms;
}

uint64_t cli_backoff_delay(cli_backoff_t *b, uint64_t uptime_ms) {
  if (b->reset_ms && uptime_ms >= b->reset_ms) b->next_ms = b->base_ms;
  uint64_t d = b->next_ms;
  b->next_ms = d > b->cap_ms / 2 ? b->cap_ms : d * 2;
  return d;
}
