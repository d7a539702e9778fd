/* loadgen.c - open-loop load generator for skiff-policy's webhook.
 *
 *   loadgen http URL BODY RATE SECONDS [CONNS]
 *       POSTs BODY to URL at a fixed RATE per second for SECONDS over up to
 *       CONNS keep-alive HTTP/1.1 connections (TLS when the URL is https;
 *       the CA comes from $CA). Latency is measured from the time each
 *       request was scheduled, so a stall counts against every request it
 *       delays (no coordinated omission). RATE 0 = closed loop, CONNS in
 *       flight, as fast as the server answers.
 *   loadgen engine POLICIES BODY N
 *       The engine alone, in process: decode + validate + mutate + encode of
 *       BODY, N times.
 * Prints one line of key=value results. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "policy.h"
#include "skiff/http.h"
#include "skiff/json.h"
#include "skiff/tls.h"

typedef struct lg {
  uv_loop_t *loop;
  sk_http_client_t *cl;
  const char *path;
  char *body;
  size_t len;
  double rate;
  uint64_t start, end_send;
  uint64_t sent, done, ok, errors, inflight, conns;
  uint64_t *lat;  /* ns from the scheduled time */
  uint64_t *svc;  /* ns from the actual send */
  size_t nlat, cap;
  int stopping;
} lg_t;

typedef struct lg_req {
  lg_t *g;
  uint64_t sched, sent;
} lg_req_t;

static void send_one(lg_t *g, uint64_t sched);

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  lg_req_t *r = ud;
  lg_t *g = r->g;
  uint64_t now = uv_hrtime();
  g->done++;
  g->inflight--;
  if (err < 0 || !resp || resp->status != 200 || !resp->body_len || !memmem(resp->body, resp->body_len, "\"allowed\"", 9))
    g->errors++;
  else
    g->ok++;
  if (g->nlat == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 65536;
    g->lat = realloc(g->lat, g->cap * sizeof *g->lat);
    g->svc = realloc(g->svc, g->cap * sizeof *g->svc);
  }
  g->svc[g->nlat] = now - r->sent;
  g->lat[g->nlat++] = now - r->sched;
  free(r);
  if (g->rate == 0 && now < g->end_send) send_one(g, now);
}

static void send_one(lg_t *g, uint64_t sched) {
  lg_req_t *r = malloc(sizeof *r);
  r->g = g;
  r->sched = sched;
  r->sent = uv_hrtime();
  static const sk_http_header_t h[] = {{"content-type", "application/json"}};
  g->sent++;
  g->inflight++;
  if (sk_http_client_request(g->cl, "POST", g->path, h, 1, g->body, g->len, on_resp, r) < 0) {
    g->inflight--;
    g->done++;
    g->errors++;
    free(r);
  }
}

/* Sends what is due; returns 0 once everything is answered (or 10s after
 * the end). The loop is driven with UV_RUN_NOWAIT and 50us naps instead of
 * a libuv timer, whose millisecond granularity would add up to 2ms of
 * scheduling delay to every request. */
static int tick(lg_t *g) {
  uint64_t now = uv_hrtime();
  if (g->rate > 0) {
    /* request i is scheduled at start + i/rate: those with a time <= now are due */
    uint64_t due = now < g->end_send ? (uint64_t)((double)(now - g->start) * g->rate / 1e9) + 1
                                     : (uint64_t)((double)(g->end_send - g->start) * g->rate / 1e9);
    while (g->sent < due) {
      uint64_t sched = g->start + (uint64_t)((double)g->sent * 1e9 / g->rate);
      send_one(g, sched);
    }
  }
  if ((now >= g->end_send && g->inflight == 0) || now >= g->end_send + 10000000000ull) {
    sk_http_client_free(g->cl);
    g->cl = NULL;
    return 0;
  }
  return 1;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e3; /* microseconds */
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  *len = fread(b, 1, (size_t)n, f);
  b[*len] = 0;
  fclose(f);
  return b;
}

static int run_http(int argc, char **argv) {
  if (argc < 6) return 2;
  const char *url = argv[2];
  lg_t g = {0};
  g.body = slurp(argv[3], &g.len);
  if (!g.body) {
    fprintf(stderr, "cannot read %s\n", argv[3]);
    return 1;
  }
  g.rate = atof(argv[4]);
  double secs = atof(argv[5]);
  g.conns = argc > 6 ? (uint64_t)atoi(argv[6]) : 16;
  int tls = !strncmp(url, "https://", 8);
  const char *hp = url + (tls ? 8 : 7);
  const char *colon = strchr(hp, ':'), *slash = strchr(hp, '/');
  if (!colon || !slash || colon > slash) {
    fprintf(stderr, "URL must be http[s]://host:port/path\n");
    return 2;
  }
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
  int port = atoi(colon + 1);
  g.path = slash;
  uv_loop_t loop;
  uv_loop_init(&loop);
  g.loop = &loop;
  sk_tls_ctx_t *ctx = NULL;
  char err[512];
  if (tls) {
    sk_tls_opts_t to = {.is_server = 0, .ca_file = getenv("CA"), .verify = SK_TLS_VERIFY_REQUIRE};
    if (sk_tls_ctx_new(&to, &ctx, err, sizeof err) < 0) {
      fprintf(stderr, "tls: %s\n", err);
      return 1;
    }
  }
  sk_http_client_opts_t co = {.host = host, .port = port, .tls = ctx, .sni = tls ? "localhost" : NULL,
                              .max_conns = g.conns, .request_timeout_ms = 10000};
  if (sk_http_client_new(&loop, &co, &g.cl) < 0) return 1;
  g.start = uv_hrtime();
  g.end_send = g.start + (uint64_t)(secs * 1e9);
  if (g.rate == 0)
    for (uint64_t i = 0; i < g.conns; i++) send_one(&g, g.start);
  struct timespec nap = {0, 50000};
  while (tick(&g)) {
    uv_run(&loop, UV_RUN_NOWAIT);
    nanosleep(&nap, NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  double elapsed = (double)(uv_hrtime() - g.start) / 1e9;
  qsort(g.lat, g.nlat, sizeof *g.lat, cmp_u64);
  qsort(g.svc, g.nlat, sizeof *g.svc, cmp_u64);
  printf("mode=%s rate=%g seconds=%g conns=%llu sent=%llu ok=%llu errors=%llu achieved_rps=%.0f "
         "p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f (from send: p50_us=%.0f p99_us=%.0f)\n",
         g.rate > 0 ? "fixed-rate" : "closed-loop", g.rate, secs, (unsigned long long)g.conns,
         (unsigned long long)g.sent, (unsigned long long)g.ok, (unsigned long long)g.errors,
         (double)g.ok / (g.rate > 0 ? secs : elapsed), pct(g.lat, g.nlat, 0.50), pct(g.lat, g.nlat, 0.90),
         pct(g.lat, g.nlat, 0.99), pct(g.lat, g.nlat, 0.999), g.nlat ? (double)g.lat[g.nlat - 1] / 1e3 : 0,
         pct(g.svc, g.nlat, 0.50), pct(g.svc, g.nlat, 0.99));
  uv_loop_close(&loop);
  sk_tls_ctx_unref(ctx);
  free(g.lat);
  free(g.svc);
  free(g.body);
  return g.errors ? 1 : 0;
}

static int run_engine(int argc, char **argv) {
  if (argc < 5) return 2;
  pol_set_t s;
  pol_set_init(&s);
  char err[1024];
  if (pol_set_load_path(&s, argv[2], err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  size_t len;
  char *body = slurp(argv[3], &len);
  long n = atol(argv[4]);
  uint64_t *lat = malloc((size_t)n * sizeof *lat);
  for (long i = 0; i < n; i++) {
    uint64_t t0 = uv_hrtime();
    json_t *rev = NULL;
    if (pol_review_decode(body, len, 0, 0, &rev, err, sizeof err) < 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    for (int m = 0; m < 2; m++) {
      pol_report_t r;
      pol_report_init(&r);
      sk_buf_t b;
      sk_buf_init(&b);
      if (m) pol_mutate(&s, json_object_get(rev, "request"), &r);
      else pol_validate(&s, json_object_get(rev, "request"), &r);
      pol_review_encode(rev, &r, m, &b);
      sk_buf_done(&b);
      pol_report_done(&r);
    }
    json_decref(rev);
    lat[i] = uv_hrtime() - t0;
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  printf("mode=engine policies=%zu rules=%zu reviews=%ld validate+mutate_p50_us=%.1f p99_us=%.1f max_us=%.1f\n", s.n,
         pol_set_rule_count(&s), n, pct(lat, (size_t)n, 0.5), pct(lat, (size_t)n, 0.99),
         (double)lat[n - 1] / 1e3);
  free(lat);
  free(body);
  pol_set_done(&s);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "http")) return run_http(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "engine")) return run_engine(argc, argv);
  fprintf(stderr, "usage: loadgen http URL BODY RATE SECONDS [CONNS] | loadgen engine POLICIES BODY N\n");
  return 2;
}
