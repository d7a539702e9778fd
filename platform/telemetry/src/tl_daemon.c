/* skiff-telemetry: config schema and the daemon lifecycle hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "tl_int.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

static const sk_config_entry_t scrape_entries[] = {
    {SK_CFG_E_("job", SK_CFG_STRING, NULL, tl_scrape_cfg_t, job, "job label of these targets"),
     .flags = SK_CFG_REQUIRED},
    SK_CFG_STRLIST_E("targets", NULL, tl_scrape_cfg_t, targets, "host:port or http://host:port/path"),
    SK_CFG_DURATION_E("interval", "15s", tl_scrape_cfg_t, interval_ms, "time between scrapes"),
    SK_CFG_DURATION_E("timeout", "10s", tl_scrape_cfg_t, timeout_ms, "per scrape (capped at interval)"),
    SK_CFG_STRING_E("metrics_path", "/metrics", tl_scrape_cfg_t, metrics_path, "path when a target has none"),
    SK_CFG_UINT64_E("sample_limit", "100000", tl_scrape_cfg_t, sample_limit,
                    "a scrape with more samples fails (up 0)"),
    SK_CFG_END_E};
static const sk_config_schema_t scrape_schema = SK_CFG_SCHEMA("scrape", tl_scrape_cfg_t, scrape_entries);

static const sk_config_entry_t scrape_tls_entries[] = {
    SK_CFG_BOOL_E("identity", "false", tl_scrape_tls_cfg_t, identity,
                  "present the daemon's identity (identity.control) and trust its bundle"),
    SK_CFG_STRING_E("ca", "", tl_scrape_tls_cfg_t, ca, "PEM bundle that verifies https targets"),
    SK_CFG_STRING_E("cert", "", tl_scrape_tls_cfg_t, cert, "PEM client certificate chain"),
    SK_CFG_STRING_E("key", "", tl_scrape_tls_cfg_t, key, "PEM client key"),
    SK_CFG_END_E};
static const sk_config_schema_t scrape_tls_schema =
    SK_CFG_SCHEMA("scrape_tls", tl_scrape_tls_cfg_t, scrape_tls_entries);

/* `tls` and `query_tls`: the same keys for both listeners */
static const char *const listen_client_auth_names[] = {"require", "optional", "none", NULL};
static const sk_config_entry_t listen_tls_entries[] = {
    SK_CFG_BOOL_E("identity", "false", tl_listen_tls_cfg_t, identity,
                  "serve HTTPS with the daemon's identity (needs identity.control); its bundle verifies clients"),
    SK_CFG_STRING_E("cert", "", tl_listen_tls_cfg_t, cert, "PEM certificate chain; set = HTTPS"),
    SK_CFG_STRING_E("key", "", tl_listen_tls_cfg_t, key, "PEM private key"),
    SK_CFG_STRING_E("ca", "", tl_listen_tls_cfg_t, ca,
                    "PEM bundle that verifies client certificates (default with identity: its bundle)"),
    SK_CFG_ENUM_E("client_auth", "require", listen_client_auth_names, tl_listen_tls_cfg_t, client_auth,
                  "require: no valid client certificate, no handshake; optional: verified when sent; none"),
    SK_CFG_END_E};
static const sk_config_schema_t listen_tls_schema = SK_CFG_SCHEMA("tls", tl_listen_tls_cfg_t, listen_tls_entries);
static const sk_config_schema_t query_tls_schema =
    SK_CFG_SCHEMA("query_tls", tl_listen_tls_cfg_t, listen_tls_entries);

static const sk_config_entry_t forward_entries[] = {
    {SK_CFG_E_("endpoint", SK_CFG_STRING, NULL, tl_forward_cfg_t, endpoint,
               "OTLP/HTTP receiver, http[s]://host:port[/prefix] (/v1/traces etc. appended)"),
     .validate = tl_forward_check_endpoint, .flags = SK_CFG_REQUIRED},
    SK_CFG_STRING_E("ca_file", "", tl_forward_cfg_t, ca_file,
                    "https: PEM bundle to verify the receiver with (default: the system's)"),
    SK_CFG_STRING_E("cert_file", "", tl_forward_cfg_t, cert_file, "https: client certificate for mTLS"),
    SK_CFG_STRING_E("key_file", "", tl_forward_cfg_t, key_file, "https: client key for mTLS"),
    SK_CFG_STRING_E("bearer_token_file", "", tl_forward_cfg_t, bearer_token_file,
                    "file whose first line is sent as Authorization: Bearer <token>"),
    {SK_CFG_E_("signals", SK_CFG_STRLIST, NULL, tl_forward_cfg_t, signals,
               "which of traces, metrics, logs to forward; empty = all"),
     .validate = tl_forward_check_signals},
    SK_CFG_SIZE_E("max_queue_bytes", "64MiB", tl_forward_cfg_t, max_queue_bytes,
                  "encoded OTLP waiting for this target; more is dropped and counted"),
    SK_CFG_SIZE_E("max_batch_bytes", "4MiB", tl_forward_cfg_t, max_batch_bytes, "largest request sent"),
    SK_CFG_DURATION_E("batch_delay", "1s", tl_forward_cfg_t, batch_delay_ms,
                      "how long a partial batch waits for more data (0 = send at once)"),
    SK_CFG_DURATION_E("timeout", "10s", tl_forward_cfg_t, timeout_ms, "per request"),
    SK_CFG_DURATION_E("min_backoff", "200ms", tl_forward_cfg_t, min_backoff_ms, "first retry delay"),
    SK_CFG_DURATION_E("max_backoff", "30s", tl_forward_cfg_t, max_backoff_ms, "retry delay cap"),
    SK_CFG_DURATION_E("max_retry_time", "5m", tl_forward_cfg_t, max_retry_time_ms,
                      "a batch still failing after this long is dropped"),
    SK_CFG_END_E};
static const sk_config_schema_t forward_schema = SK_CFG_SCHEMA("forward", tl_forward_cfg_t, forward_entries);

static const sk_config_entry_t kafka_topic_entries[] = {
    {SK_CFG_E_("traces", SK_CFG_STRING, "otlp_spans", tl_kafka_topics_t, traces,
               "topic of ExportTraceServiceRequest messages (\"\" = not exported)"),
     .validate = tl_kafka_check_topic},
    {SK_CFG_E_("metrics", SK_CFG_STRING, "otlp_metrics", tl_kafka_topics_t, metrics,
               "topic of ExportMetricsServiceRequest messages (\"\" = not exported)"),
     .validate = tl_kafka_check_topic},
    {SK_CFG_E_("logs", SK_CFG_STRING, "otlp_logs", tl_kafka_topics_t, logs,
               "topic of ExportLogsServiceRequest messages (\"\" = not exported)"),
     .validate = tl_kafka_check_topic},
    SK_CFG_END_E};
static const sk_config_schema_t kafka_topics_schema =
    SK_CFG_SCHEMA("topics", tl_kafka_topics_t, kafka_topic_entries);

static const sk_config_entry_t kafka_entries[] = {
    SK_CFG_STRING_E("brokers", "", tl_kafka_cfg_t, brokers, "bootstrap servers host:port,...; \"\" = no export"),
    SK_CFG_SECTION_E("topics", &kafka_topics_schema, tl_kafka_cfg_t, topics, "a topic per signal"),
    {SK_CFG_E_("properties", SK_CFG_STRLIST, NULL, tl_kafka_cfg_t, properties,
               "extra librdkafka properties, name=value (idempotence and acks=all stay on)"),
     .validate = tl_kafka_check_properties},
    SK_CFG_SIZE_E("max_queue_bytes", "64MiB", tl_kafka_cfg_t, max_queue_bytes,
                  "encoded OTLP produced and not yet confirmed; more is dropped and counted"),
    SK_CFG_DURATION_E("max_retry_time", "5m", tl_kafka_cfg_t, max_retry_time_ms,
                      "a message not confirmed after this long is dropped (message.timeout.ms)"),
    SK_CFG_DURATION_E("flush_timeout", "5s", tl_kafka_cfg_t, flush_timeout_ms,
                      "at shutdown, how long to wait for outstanding confirmations"),
    SK_CFG_END_E};
static const sk_config_schema_t kafka_schema = SK_CFG_SCHEMA("kafka", tl_kafka_cfg_t, kafka_entries);

static const sk_config_entry_t tl_entries[] = {
    SK_CFG_ADDR_E("listen", "127.0.0.1:4318", tl_config_t, listen,
                  "OTLP/HTTP (/v1/traces, /v1/metrics, /v1/logs), remote-write and Loki push"),
    SK_CFG_ADDR_E("query_listen", "127.0.0.1:9090", tl_config_t, query_listen,
                  "Prometheus, trace and Loki query APIs (ingest routes too)"),
    SK_CFG_SECTION_E("tls", &listen_tls_schema, tl_config_t, tls, "HTTPS (and mTLS) on the OTLP listener"),
    SK_CFG_SECTION_E("query_tls", &query_tls_schema, tl_config_t, query_tls,
                     "HTTPS (and mTLS) on the query listener"),
    SK_CFG_STRING_E("data_dir", "", tl_config_t, data_dir,
                    "where data lives; default <state_dir>/telemetry, else ./telemetry-data"),
    SK_CFG_SIZE_E("max_request", "20MiB", tl_config_t, max_request, "request body limit after decompression"),
    SK_CFG_INT_E("max_queue", "64", 1, 100000, tl_config_t, max_queue,
                 "ingest requests waiting for the writer before 429"),
    SK_CFG_SIZE_E("max_queue_bytes", "256MiB", tl_config_t, max_queue_bytes,
                  "bytes of queued request bodies before 429"),
    SK_CFG_DURATION_E("retention", "15d", tl_config_t, retention_ms, "metric samples older than this are dropped"),
    SK_CFG_DURATION_E("trace_retention", "0", tl_config_t, trace_retention_ms,
                      "spans that started longer ago are dropped; 0 = same as retention"),
    SK_CFG_DURATION_E("log_retention", "0", tl_config_t, log_retention_ms,
                      "log lines older than this are dropped; 0 = same as retention"),
    SK_CFG_UINT64_E("max_series_per_metric", "100000", tl_config_t, max_series_per_metric,
                    "new series of one metric past this are rejected"),
    SK_CFG_UINT64_E("max_series", "2000000", tl_config_t, max_series, "new series past this are rejected"),
    SK_CFG_BOOL_E("self_scrape", "true", tl_config_t, self_scrape, "scrape our own admin /metrics"),
    SK_CFG_DURATION_E("self_scrape_interval", "15s", tl_config_t, self_scrape_interval_ms,
                      "interval of the self scrape and of scrape_skiff_config targets"),
    SK_CFG_STRING_E("scrape_skiff_config", "", tl_config_t, scrape_skiff_config,
                    "a skiff.yaml: every daemons[].admin address is scraped (job = name)"),
    SK_CFG_LIST_E("scrape_configs", 256, &scrape_schema, tl_config_t, scrape_configs,
                  "static scrape targets: [{job, targets, interval, timeout, metrics_path, sample_limit}]"),
    SK_CFG_SECTION_E("scrape_tls", &scrape_tls_schema, tl_config_t, scrape_tls,
                     "TLS for https:// targets and skiff.yaml daemons with admin_tls: {identity, ca, cert, key}"),
    SK_CFG_LIST_E("forward", 16, &forward_schema, tl_config_t, forward,
                  "forward received OTLP to other OTLP/HTTP receivers: [{endpoint, signals, max_queue_bytes, "
                  "max_batch_bytes, batch_delay, timeout, min_backoff, max_backoff, max_retry_time}]"),
    SK_CFG_SECTION_E("kafka", &kafka_schema, tl_config_t, kafka,
                     "also produce received OTLP to Kafka: {brokers, topics: {traces, metrics, logs}, properties, "
                     "max_queue_bytes, max_retry_time, flush_timeout}"),
    SK_CFG_BOOL_E("no_sync", "false", tl_config_t, no_sync,
                  "skip fsync (benchmarks only: acknowledged data may be lost on power loss)"),
    SK_CFG_END_E};

const sk_config_schema_t tl_config_schema = SK_CFG_SCHEMA("telemetry", tl_config_t, tl_entries);

/* The server context of one listener (*out stays NULL when tc asks for no
 * TLS). Built from the identity's files, it is reloaded in place when the
 * identity renews (sk_tls_ctx_reload_files). */
static int listen_tls_new(sk_daemon_t *d, const char *key, const tl_listen_tls_cfg_t *tc, sk_tls_ctx_t **out) {
  char err[512] = "";
  int rc = 0;
  *out = NULL;
  if (!tc->identity && !(tc->cert && *tc->cert)) {
    if ((tc->key && *tc->key) || (tc->ca && *tc->ca)) {
      snprintf(err, sizeof err, "key/ca without cert or identity");
      rc = SK_ECONFIG;
    }
    goto out;
  }
  sk_tls_opts_t to = {.is_server = 1, .cert_file = tc->cert, .key_file = tc->key, .ca_file = tc->ca};
  to.verify = tc->client_auth == TL_CLIENT_AUTH_REQUIRE    ? SK_TLS_VERIFY_REQUIRE
              : tc->client_auth == TL_CLIENT_AUTH_OPTIONAL ? SK_TLS_VERIFY_OPTIONAL
                                                           : SK_TLS_VERIFY_NONE;
  if (tc->identity) {
    sk_ident_t *id = sk_daemon_ident(d);
    if (!id || (tc->cert && *tc->cert) || (tc->key && *tc->key)) {
      snprintf(err, sizeof err, "%s",
               id ? "identity: true and cert/key are exclusive" : "identity needs identity.control");
      rc = SK_ECONFIG;
      goto out;
    }
    to.cert_file = sk_ident_cert_path(id);
    to.key_file = sk_ident_key_path(id);
    if (!to.ca_file || !*to.ca_file) to.ca_file = sk_ident_bundle_path(id);
  } else if (!tc->key || !*tc->key) {
    snprintf(err, sizeof err, "cert needs key");
    rc = SK_ECONFIG;
    goto out;
  }
  if (to.verify != SK_TLS_VERIFY_NONE && (!to.ca_file || !*to.ca_file)) {
    snprintf(err, sizeof err, "client_auth %s needs ca to verify client certificates",
             listen_client_auth_names[tc->client_auth]);
    rc = SK_ECONFIG;
    goto out;
  }
  if (to.verify == SK_TLS_VERIFY_NONE) to.ca_file = NULL;
  rc = sk_tls_ctx_new(&to, out, err, sizeof err);
out:
  if (rc < 0) sk_log_error(sk_daemon_log(d), "cannot start: %s: %s", key, err);
  return rc;
}

static int tl_init(sk_daemon_t *d, void *cfgp) {
  tl_config_t *cfg = cfgp;
  char err[512] = "";
  char dir[4096];
  if (!cfg->data_dir || !*cfg->data_dir) {
    const char *sd = sk_daemon_state_dir(d);
    snprintf(dir, sizeof dir, "%s/telemetry", sd && *sd ? sd : ".");
    if (!sd || !*sd) snprintf(dir, sizeof dir, "telemetry-data");
    free(cfg->data_dir);
    cfg->data_dir = sk_xstrdup(dir);
  }
  /* a relative scrape_skiff_config is relative to this config file */
  const char *cp = sk_daemon_config_path(d);
  if (cfg->scrape_skiff_config && *cfg->scrape_skiff_config && cfg->scrape_skiff_config[0] != '/' && cp &&
      strrchr(cp, '/')) {
    char p[4096];
    snprintf(p, sizeof p, "%.*s/%s", (int)(strrchr(cp, '/') - cp), cp, cfg->scrape_skiff_config);
    free(cfg->scrape_skiff_config);
    cfg->scrape_skiff_config = sk_xstrdup(p);
  }
  /* scrape_tls.identity: our identity files; their TLS context reloads on
   * renewal by file name (sk_tls_ctx_reload_files) */
  if (cfg->scrape_tls.identity) {
    sk_ident_t *id = sk_daemon_ident(d);
    if (!id) {
      sk_log_error(sk_daemon_log(d), "cannot start: scrape_tls.identity needs identity.control");
      return SK_ECONFIG;
    }
    free(cfg->scrape_tls.ca);
    free(cfg->scrape_tls.cert);
    free(cfg->scrape_tls.key);
    cfg->scrape_tls.ca = sk_xstrdup(sk_ident_bundle_path(id));
    cfg->scrape_tls.cert = sk_xstrdup(sk_ident_cert_path(id));
    cfg->scrape_tls.key = sk_xstrdup(sk_ident_key_path(id));
  }
  /* a body that fits max_request but not max_queue_bytes would get 429 on
   * every retry, forever */
  if (cfg->max_queue_bytes && cfg->max_request && cfg->max_queue_bytes < cfg->max_request) {
    sk_log_error(sk_daemon_log(d),
                 "cannot start: max_queue_bytes (%llu) is below max_request (%llu): a request between the two "
                 "would be refused (429) on every retry",
                 (unsigned long long)cfg->max_queue_bytes, (unsigned long long)cfg->max_request);
    return SK_ECONFIG;
  }
  cfg->self_scrape_tls = sk_admin_is_tls(sk_daemon_admin(d));
  tl_app_t *a = NULL;
  int rc;
  if ((rc = listen_tls_new(d, "tls", &cfg->tls, &cfg->listen_tls_ctx)) < 0 ||
      (rc = listen_tls_new(d, "query_tls", &cfg->query_tls, &cfg->query_tls_ctx)) < 0) {
    sk_tls_ctx_unref(cfg->listen_tls_ctx);
    cfg->listen_tls_ctx = NULL;
    return rc;
  }
  rc = tl_app_new(sk_daemon_loop(d), cfg, sk_daemon_metrics(d), sk_daemon_log(d), sk_daemon_admin_port(d), &a, err,
                  sizeof err);
  /* the listeners hold their own references */
  const char *otlp_scheme = cfg->listen_tls_ctx ? "https" : "http";
  const char *query_scheme = cfg->query_tls_ctx ? "https" : "http";
  sk_tls_ctx_unref(cfg->listen_tls_ctx);
  sk_tls_ctx_unref(cfg->query_tls_ctx);
  cfg->listen_tls_ctx = cfg->query_tls_ctx = NULL;
  if (rc < 0) {
    sk_log_error(sk_daemon_log(d), "cannot start: %s", err[0] ? err : sk_strerror(rc));
    return rc;
  }
  sk_daemon_set_data(d, a);
  char otlp[32], query[32];
  snprintf(otlp, sizeof otlp, "%d", tl_app_port(a));
  snprintf(query, sizeof query, "%d", tl_app_query_port(a));
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "serving", "otlp_port", otlp, "otlp_scheme", otlp_scheme, "query_port",
            query, "query_scheme", query_scheme, "data_dir", cfg->data_dir, NULL);
  sk_daemon_set_ready(d, 1);
  return 0;
}

static void drained_cb(void *ud) { sk_daemon_drained(ud); }

static void tl_drain(sk_daemon_t *d) {
  tl_app_t *a = sk_daemon_get_data(d);
  if (!a) {
    sk_daemon_drained(d);
    return;
  }
  tl_app_drain(a, drained_cb, d);
}

static void tl_fini(sk_daemon_t *d) {
  tl_app_free(sk_daemon_get_data(d));
  sk_daemon_set_data(d, NULL);
}

const sk_daemon_desc_t tl_daemon_desc = {
    .name = "skiff-telemetry",
    .version = SKIFF_VERSION,
    .summary = "OTLP/remote-write/Loki receivers, scraping, metrics/trace/log storage and query APIs",
    .schema = &tl_config_schema,
    .init = tl_init,
    .drain = tl_drain,
    .fini = tl_fini,
};
