/* skiff-testd - a tiny daemon on the standard lifecycle, for the lifecycle
 * tests (tests/integration/daemon.sh). It has one key of each kind, an admin
 * route /testd that answers with its current message, and a drain that
 * takes drain_delay (to stand in for in-flight work). */
#include <stdlib.h>
#include <string.h>

#include "skiff/daemon.h"
#include "skiff/err.h"

typedef struct td_upstream {
  char *name;
  sk_cfg_addr_t addr;
  uint64_t timeout_ms;
} td_upstream_t;

typedef struct td_cfg {
  char *message;
  int workers;
  uint64_t drain_delay_ms;
  uint64_t buffer;
  int mode;
  bool verbose;
  double ratio;
  sk_cfg_strlist_t tags;
  sk_cfg_list_t upstreams;
} td_cfg_t;

static const char *const td_modes[] = {"fast", "safe", NULL};

static const sk_config_entry_t td_upstream_entries[] = {
    {.key = "name", .type = SK_CFG_STRING, .offset = offsetof(td_upstream_t, name), .help = "upstream name",
     .flags = SK_CFG_REQUIRED},
    SK_CFG_ADDR_E("addr", "127.0.0.1:80", td_upstream_t, addr, "upstream address"),
    SK_CFG_DURATION_E("timeout", "1s", td_upstream_t, timeout_ms, "request timeout"),
    SK_CFG_END_E};
static const sk_config_schema_t td_upstream_schema = SK_CFG_SCHEMA("upstream", td_upstream_t, td_upstream_entries);

static const sk_config_entry_t td_entries[] = {
    SK_CFG_STRING_E("message", "hello", td_cfg_t, message, "what GET /testd answers"),
    SK_CFG_INT_E("workers", "1", 1, 16, td_cfg_t, workers, "worker count"),
    SK_CFG_DURATION_E("drain_delay", "0", td_cfg_t, drain_delay_ms, "how long draining takes"),
    SK_CFG_SIZE_E("buffer", "16KiB", td_cfg_t, buffer, "buffer size"),
    SK_CFG_ENUM_E("mode", "fast", td_modes, td_cfg_t, mode, "operating mode"),
    SK_CFG_BOOL_E("verbose", "false", td_cfg_t, verbose, "chatty logs"),
    SK_CFG_DOUBLE_E("ratio", "0.5", td_cfg_t, ratio, "a ratio"),
    SK_CFG_STRLIST_E("tags", NULL, td_cfg_t, tags, "free-form tags"),
    SK_CFG_LIST_E("upstreams", 8, &td_upstream_schema, td_cfg_t, upstreams, "upstream servers"),
    SK_CFG_END_E};
static const sk_config_schema_t td_schema = SK_CFG_SCHEMA("testd", td_cfg_t, td_entries);

typedef struct td {
  uv_timer_t ready_timer, drain_timer;
} td_t;

static void on_testd(sk_http_req_t *req, void *ud) {
  sk_daemon_t *d = ud;
  td_cfg_t *cfg = sk_daemon_config(d);
  sk_http_respond_text(req, 200, "text/plain", cfg->message);
}

static void ready_cb(uv_timer_t *t) { sk_daemon_set_ready(t->data, 1); }

static int td_init(sk_daemon_t *d, void *cfgp) {
  td_cfg_t *cfg = cfgp;
  td_t *t = calloc(1, sizeof(*t));
  if (!t) return SK_ENOMEM;
  sk_daemon_set_data(d, t);
  uv_timer_init(sk_daemon_loop(d), &t->ready_timer);
  uv_timer_init(sk_daemon_loop(d), &t->drain_timer);
  t->ready_timer.data = t->drain_timer.data = d;
  if (sk_daemon_admin(d)) sk_admin_add_route(sk_daemon_admin(d), "GET", "/testd", on_testd, d);
  sk_log_fields(sk_daemon_log(d), SK_LOG_INFO, "testd init",
                (sk_log_field_t[]){SK_LF_S("message", cfg->message), SK_LF_I("workers", cfg->workers),
                                   SK_LF_U("upstreams", cfg->upstreams.n)},
                3);
  uv_timer_start(&t->ready_timer, ready_cb, 10, 0);
  return 0;
}

static int td_reload(sk_daemon_t *d, void *ncfg) {
  td_cfg_t *cfg = ncfg;
  if (strcmp(cfg->message, "refuse") == 0) return SK_EINVAL;
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "testd reloaded", "message", cfg->message, NULL);
  return 0;
}

static void drained_cb(uv_timer_t *t) { sk_daemon_drained(t->data); }

static void td_drain(sk_daemon_t *d) {
  td_t *t = sk_daemon_get_data(d);
  td_cfg_t *cfg = sk_daemon_config(d);
  uv_timer_start(&t->drain_timer, drained_cb, cfg->drain_delay_ms, 0);
}

static void free_cb(uv_handle_t *h) {
  td_t *t = h->data;
  free(t);
}

static void td_fini(sk_daemon_t *d) {
  td_t *t = sk_daemon_get_data(d);
  if (!t) return;
  uv_close((uv_handle_t *)&t->ready_timer, NULL);
  t->drain_timer.data = t;
  uv_close((uv_handle_t *)&t->drain_timer, free_cb);
}

static const sk_daemon_desc_t td_desc = {.name = "skiff-testd",
                                         .version = SKIFF_VERSION,
                                         .summary = "A test daemon for Skiff's lifecycle tests.",
                                         .schema = &td_schema,
                                         .init = td_init,
                                         .reload = td_reload,
                                         .drain = td_drain,
                                         .fini = td_fini};

int main(int argc, char **argv) { return sk_daemon_main(&td_desc, argc, argv); }
