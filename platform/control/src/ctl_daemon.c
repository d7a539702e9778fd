/* skiff-control: config schema and the daemon lifecycle hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_int.h"
#include "policy.h"
#include "skiff/err.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

static const char *const client_auth_names[] = {"none", "optional", "require", NULL};

static const sk_config_entry_t tls_entries[] = {
    SK_CFG_STRING_E("cert", "", ctl_tls_cfg_t, cert, "server certificate chain (PEM); empty = plaintext"),
    SK_CFG_STRING_E("key", "", ctl_tls_cfg_t, key, "server private key (PEM)"),
    SK_CFG_STRING_E("ca", "", ctl_tls_cfg_t, ca, "client CA bundle; default: the built-in CA's bundle"),
    SK_CFG_ENUM_E("client_auth", "optional", client_auth_names, ctl_tls_cfg_t, client_auth,
                  "client certificates: none, optional (mTLS identities map to roles) or require"),
    SK_CFG_BOOL_E("identity", "false", ctl_tls_cfg_t, identity,
                  "serve with a certificate from the built-in CA (<state_dir>/identity), renewed at 2/3 of "
                  "its lifetime; cert/key must then be empty"),
    SK_CFG_END_E};
static const sk_config_schema_t tls_schema = SK_CFG_SCHEMA("tls", ctl_tls_cfg_t, tls_entries);

static int check_spiffe_pattern(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  if (!s || strncmp(s, "spiffe://", 9) || strlen(s) > 1024) {
    snprintf(msg, msglen, "a spiffe://... pattern of at most 1024 bytes");
    return SK_EINVAL;
  }
  return 0;
}

/* same order as ctl_role_t */
static const char *const role_names[] = {"none", "viewer", "operator", "admin", NULL};
static const sk_config_entry_t identity_entries[] = {
    {SK_CFG_E_("match", SK_CFG_STRING, NULL, ctl_auth_identity_cfg_t, match,
               "SPIFFE ID pattern (* inside one path segment, ** anything)"),
     .flags = SK_CFG_REQUIRED, .validate = check_spiffe_pattern},
    SK_CFG_ENUM_E("role", "none", role_names, ctl_auth_identity_cfg_t, role, "none, viewer, operator or admin"),
    SK_CFG_END_E};
static const sk_config_schema_t identity_schema =
    SK_CFG_SCHEMA("identities", ctl_auth_identity_cfg_t, identity_entries);

static const sk_config_entry_t auth_entries[] = {
    SK_CFG_BOOL_E("enabled", "true", ctl_auth_cfg_t, enabled,
                  "require a bearer token or client certificate on every API call but /healthz"),
    SK_CFG_STRING_E("trust_domain", "skiff.local", ctl_auth_cfg_t, trust_domain,
                    "SPIFFE trust domain of the CA and the identity rules"),
    SK_CFG_LIST_E("identities", 60, &identity_schema, ctl_auth_cfg_t, identities,
                  "mTLS identity -> role rules, first match wins, before the defaults (daemon/* admin, proxy/* "
                  "viewer)"),
    SK_CFG_END_E};
static const sk_config_schema_t auth_schema = SK_CFG_SCHEMA("auth", ctl_auth_cfg_t, auth_entries);

static int check_retention(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 16 || v > 100000000) {
    snprintf(msg, msglen, "between 16 and 100000000 events");
    return SK_ERANGE;
  }
  return 0;
}

static int check_body(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 1024 || v > (16u << 20)) {
    snprintf(msg, msglen, "between 1KiB and 16MiB");
    return SK_ERANGE;
  }
  return 0;
}

/* Loads the policies as the daemon will, so --check reports a missing path
 * or a bad policy (with its file, document and field) before a start. */
static int check_policies(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  pol_set_t s;
  pol_set_init(&s);
  int rc = 0;
  for (size_t i = 0; i < l->n && rc == 0; i++) rc = pol_set_load_path(&s, l->v[i], msg, msglen);
  pol_set_done(&s);
  return rc < 0 ? rc : 0;
}

static int check_leaf_ttl(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 10000 || v > 7ull * 86400 * 1000) {
    snprintf(msg, msglen, "between 10s and 7d");
    return SK_ERANGE;
  }
  return 0;
}

static const sk_config_entry_t events_kafka_entries[] = {
    SK_CFG_STRING_E("brokers", "", ctl_events_kafka_cfg_t, brokers,
                    "bootstrap servers host:port[,host:port...]; empty = the local log only"),
    SK_CFG_STRING_E("topic_prefix", "skiff.", ctl_events_kafka_cfg_t, topic_prefix,
                    "topic per event type: <topic_prefix><type> (skiff.resource, skiff.audit)"),
    SK_CFG_STRLIST_E("properties", NULL, ctl_events_kafka_cfg_t, properties,
                     "extra librdkafka properties, name=value (idempotence and acks=all stay on)"),
    SK_CFG_END_E};
static const sk_config_schema_t events_kafka_schema =
    SK_CFG_SCHEMA("kafka", ctl_events_kafka_cfg_t, events_kafka_entries);

static const sk_config_entry_t events_entries[] = {
    {SK_CFG_E_("retention", SK_CFG_UINT64, "100000", ctl_events_cfg_t, retention,
               "events kept in the local log (SSE resume); Kafka-unconfirmed ones are always kept"),
     .validate = check_retention},
    SK_CFG_DURATION_E("max_age", "168h", ctl_events_cfg_t, max_age_ms, "events older than this are pruned; 0 = by count only"),
    SK_CFG_DURATION_E("heartbeat", "15s", ctl_events_cfg_t, heartbeat_ms, "keepalive comment interval on /api/v1/events"),
    SK_CFG_SECTION_E("kafka", &events_kafka_schema, ctl_events_cfg_t, kafka, "also produce every event to Kafka"),
    SK_CFG_END_E};
static const sk_config_schema_t events_schema = SK_CFG_SCHEMA("events", ctl_events_cfg_t, events_entries);

static const sk_config_entry_t ctl_entries[] = {
    SK_CFG_ADDR_E("listen", "127.0.0.1:7400", ctl_config_t, listen, "the resource API (HTTP/1.1, h2c; h2 with tls)"),
    SK_CFG_STRING_E("store", "", ctl_config_t, store,
                    "sqlite:PATH or PATH (default <state_dir>/control.db), or "
                    "postgres://user[:password]@host:port/db (also postgresql://; password or PGPASSFILE)"),
    SK_CFG_BOOL_E("durable", "true", ctl_config_t, durable,
                  "synchronous=FULL: an acknowledged write survives power loss"),
    {SK_CFG_E_("event_retention", SK_CFG_UINT64, "10000", ctl_config_t, event_retention,
               "change events kept for watch resume; older versions get 410 Expired"),
     .validate = check_retention},
    {SK_CFG_E_("max_body", SK_CFG_SIZE, "1MiB", ctl_config_t, max_body, "request body limit"),
     .validate = check_body},
    {SK_CFG_E_("policies", SK_CFG_STRLIST, NULL, ctl_config_t, policies,
               "policy files or directories checked before every create/replace/patch"),
     .validate = check_policies},
    SK_CFG_DURATION_E("watch_heartbeat", "30s", ctl_config_t, watch_heartbeat_ms,
                      "BOOKMARK line interval on watch streams; 0 = none"),
    SK_CFG_INT_E("max_watches", "1024", 1, 100000, ctl_config_t, max_watches, "concurrent watch streams"),
    SK_CFG_SECTION_E("tls", &tls_schema, ctl_config_t, tls, "TLS for the API listener"),
    SK_CFG_SECTION_E("auth", &auth_schema, ctl_config_t, auth, "authentication"),
    SK_CFG_BOOL_E("ca", "true", ctl_config_t, ca, "run the built-in CA (needs state_dir)"),
    {SK_CFG_E_("ca_leaf_ttl", SK_CFG_DURATION, "24h", ctl_config_t, ca_leaf_ttl_ms,
               "default lifetime of the certificates the CA issues (10s..7d; short ones for tests)"),
     .validate = check_leaf_ttl},
    SK_CFG_SECTION_E("events", &events_schema, ctl_config_t, events,
                     "the platform event bus: resource changes and audit records (GET /api/v1/events, Kafka)"),
    SK_CFG_END_E};

const sk_config_schema_t ctl_config_schema = SK_CFG_SCHEMA("control", ctl_config_t, ctl_entries);

static int ctl_init(sk_daemon_t *d, void *cfgp) {
  ctl_config_t *cfg = cfgp;
  ctl_app_t *a = NULL;
  char err[1024] = "";
  ctl_app_opts_t o = {.cfg = cfg, .state_dir = sk_daemon_state_dir(d), .metrics = sk_daemon_metrics(d),
                      .log = sk_daemon_log(d), .admin_identity = sk_daemon_common(d)->admin.enabled &&
                                                             sk_daemon_common(d)->admin.tls.identity};
  if (!o.state_dir && cfg->ca) sk_log_warn(sk_daemon_log(d), "no state_dir: the CA and the bootstrap token are off");
  int rc = ctl_app_new(sk_daemon_loop(d), &o, &a, err, sizeof err);
  if (rc < 0) {
    sk_log_error(sk_daemon_log(d), "cannot start: %s", err[0] ? err : sk_strerror(rc));
    return rc;
  }
  sk_daemon_set_data(d, a);
  /* admin.tls.identity: the admin listener (started by the lifecycle after
   * init) serves with control's own identity from its CA */
  sk_daemon_set_ident(d, ctl_app_ident(a));
  char addr[300];
  sk_cfg_addr_t shown = cfg->listen;
  shown.port = ctl_app_port(a);
  sk_config_format_addr(&shown, addr, sizeof addr);
  char rv[32];
  snprintf(rv, sizeof rv, "%lld", (long long)ctl_store_rv(ctl_app_store(a)));
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "serving", "addr", addr, "resource_version", rv, "auth",
            cfg->auth.enabled ? "on" : "off", NULL);
  sk_daemon_set_ready(d, 1);
  return 0;
}

static int ctl_reload(sk_daemon_t *d, void *new_cfgp) {
  ctl_app_t *a = sk_daemon_get_data(d);
  ctl_config_t *cfg = new_cfgp;
  char err[1024] = "";
  if (a && ctl_app_reload_policies(a, cfg, err, sizeof err) < 0) {
    sk_log_error(sk_daemon_log(d), "reload refused: %s", err);
    return SK_ECONFIG;
  }
  if (a) ctl_app_set_config(a, cfg);
  sk_log_warn(sk_daemon_log(d), "reloaded policies; other keys take effect after a restart");
  return 0;
}

static void drained_cb(void *ud) { sk_daemon_drained(ud); }

static void ctl_drain(sk_daemon_t *d) {
  ctl_app_t *a = sk_daemon_get_data(d);
  if (!a) {
    sk_daemon_drained(d);
    return;
  }
  ctl_app_drain(a, drained_cb, d);
}

static void ctl_fini(sk_daemon_t *d) {
  ctl_app_free(sk_daemon_get_data(d));
  sk_daemon_set_data(d, NULL);
}

const sk_daemon_desc_t ctl_daemon_desc = {
    .name = "skiff-control",
    .version = SKIFF_VERSION,
    .summary = "control plane: resource API and store, watch, CA, authn/z and audit",
    .schema = &ctl_config_schema,
    .init = ctl_init,
    .reload = ctl_reload,
    .drain = ctl_drain,
    .fini = ctl_fini,
    .own_identity = true,
};
