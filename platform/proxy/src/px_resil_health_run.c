/* px_resil_health_run.c - runs the active health check schedule on a uv
 * loop: one timer, one sk_http_client per endpoint, GET cfg.path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

typedef struct hc_probe {
  px_hc_runner_t *r;
  size_t i;
} hc_probe_t;

struct px_hc_runner {
  uv_loop_t *loop;
  uv_timer_t timer;
  px_hc_t hc;
  px_rng_t rng;
  sk_http_client_t **clients;
  hc_probe_t *probes;
  char **hosts; /* Host header per endpoint */
  size_t n;
  size_t in_flight;
  int closing, timer_closed;
  px_hc_change_fn fn;
  void *ud;
};

static void runner_destroy(px_hc_runner_t *r) {
  for (size_t i = 0; i < r->n; i++) free(r->hosts ? r->hosts[i] : NULL);
  free(r->hosts);
  free(r->clients);
  free(r->probes);
  px_hc_done(&r->hc);
  free(r);
}

static void maybe_destroy(px_hc_runner_t *r) {
  if (r->closing && r->timer_closed && r->in_flight == 0) runner_destroy(r);
}

static void arm(px_hc_runner_t *r);

static void probe_cb(int err, sk_http_resp_t *resp, void *ud) {
  hc_probe_t *p = ud;
  px_hc_runner_t *r = p->r;
  if (r->in_flight) r->in_flight--;
  if (r->closing) {
    maybe_destroy(r);
    return;
  }
  int ok = err >= 0 && resp && px_hc_status_ok(&r->hc.cfg, resp->status);
  px_hc_change_t ch = px_hc_on_result(&r->hc, p->i, ok, uv_hrtime(), &r->rng);
  if (ch != PX_HC_SAME && r->fn) r->fn(r->ud, p->i, ch == PX_HC_BECAME_HEALTHY);
  if (!r->closing) arm(r);
}

static void timer_cb(uv_timer_t *t) {
  px_hc_runner_t *r = t->data;
  uint64_t now = uv_hrtime();
  long i;
  while ((i = px_hc_due(&r->hc, now)) >= 0) {
    px_hc_probe_start(&r->hc, (size_t)i, now);
    sk_http_header_t h[2] = {{"host", r->hosts[i]}, {"user-agent", "skiff-proxy-health"}};
    r->probes[i].r = r;
    r->probes[i].i = (size_t)i;
    int rc = sk_http_client_request(r->clients[i], "GET", r->hc.cfg.path, h, 2, NULL, 0, probe_cb,
                                    &r->probes[i]);
    if (rc < 0) {
      /* could not even queue it: a failed probe */
      px_hc_change_t ch = px_hc_on_result(&r->hc, (size_t)i, 0, now, &r->rng);
      if (ch != PX_HC_SAME && r->fn) r->fn(r->ud, (size_t)i, ch == PX_HC_BECAME_HEALTHY);
      if (r->closing) return;
    } else {
      r->in_flight++;
    }
  }
  arm(r);
}

static void arm(px_hc_runner_t *r) {
  uint64_t next = px_hc_next_deadline(&r->hc);
  if (next == UINT64_MAX) {
    uv_timer_stop(&r->timer);
    return;
  }
  uint64_t now = uv_hrtime();
  uint64_t ms = next > now ? (next - now + PX_MS - 1) / PX_MS : 0;
  uv_timer_start(&r->timer, timer_cb, ms, 0);
}

int px_hc_runner_new(uv_loop_t *loop, const px_hc_config_t *c, const px_hc_target_t *targets,
                     size_t n, uint64_t seed, px_hc_change_fn fn, void *ud, px_hc_runner_t **out) {
  int rc = 0;
  *out = NULL;
  px_hc_runner_t *r = calloc(1, sizeof *r);
  if (!r) return SK_ENOMEM;
  r->loop = loop;
  r->fn = fn;
  r->ud = ud;
  px_rng_seed(&r->rng, seed);
  if ((rc = px_hc_init(&r->hc, c, n, uv_hrtime(), &r->rng)) < 0) goto out;
  r->clients = calloc(n ? n : 1, sizeof *r->clients);
  r->probes = calloc(n ? n : 1, sizeof *r->probes);
  r->hosts = calloc(n ? n : 1, sizeof *r->hosts);
  if (!r->clients || !r->probes || !r->hosts) {
    rc = SK_ENOMEM;
    goto out;
  }
  r->n = n;
  for (size_t i = 0; i < n; i++) {
    char hb[300];
    if (c->host[0]) snprintf(hb, sizeof hb, "%s", c->host);
    else if (strchr(targets[i].host, ':')) snprintf(hb, sizeof hb, "[%s]:%d", targets[i].host, targets[i].port);
    else snprintf(hb, sizeof hb, "%s:%d", targets[i].host, targets[i].port);
    r->hosts[i] = strdup(hb);
    if (!r->hosts[i]) {
      rc = SK_ENOMEM;
      goto out;
    }
    sk_http_client_opts_t o = {.host = targets[i].host,
                               .port = targets[i].port,
                               .tls = targets[i].tls,
                               .sni = targets[i].sni,
                               .version = 11,
                               .max_conns = 1,
                               .connect_timeout_ms = c->timeout_ms,
                               .request_timeout_ms = c->timeout_ms,
                               .idle_timeout_ms = c->interval_ms * 3};
    if ((rc = sk_http_client_new(loop, &o, &r->clients[i])) < 0) goto out;
  }
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  arm(r);
  *out = r;
  return 0;
out:
  for (size_t i = 0; r->clients && i < n; i++) sk_http_client_free(r->clients[i]);
  r->n = n;
  runner_destroy(r);
  return rc;
}

int px_hc_runner_healthy(const px_hc_runner_t *r, size_t i) { return px_hc_is_healthy(&r->hc, i); }

const px_hc_t *px_hc_runner_state(const px_hc_runner_t *r) { return &r->hc; }

static void timer_closed(uv_handle_t *h) {
  px_hc_runner_t *r = h->data;
  r->timer_closed = 1;
  maybe_destroy(r);
}

void px_hc_runner_free(px_hc_runner_t *r) {
  if (!r || r->closing) return;
  r->closing = 1;
  for (size_t i = 0; i < r->n; i++) {
    sk_http_client_free(r->clients[i]); /* pending probes fail with SK_ECANCELED */
    r->clients[i] = NULL;
  }
  uv_close((uv_handle_t *)&r->timer, timer_closed);
}
