/* ctl_int.h - skiff-control, the daemon (prefix ctl_).
 *
 * ctl_app_t is the API server on a loop (tests run it in-process): the
 * resource REST API and watch (ctl_api.c) over the store, guarded by the
 * auth module, audited, with the policy engine consulted before every
 * write; the CA endpoints are mounted from ctl_ca. ctl_daemon.c wires it
 * into sk_daemon_main. */
#ifndef SKIFF_CTL_INT_H
#define SKIFF_CTL_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "control.h"
#include "skiff/config.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

typedef struct ctl_tls_cfg {
  char *cert, *key, *ca;
  int client_auth; /* 0 none, 1 optional, 2 require */
  bool identity;   /* cert/key issued by the built-in CA and renewed (ctl_ident.h) */
} ctl_tls_cfg_t;

typedef struct ctl_auth_identity_cfg {
  char *match; /* SPIFFE ID pattern: * inside one path segment, ** anything */
  int role;    /* ctl_role_t */
} ctl_auth_identity_cfg_t;

typedef struct ctl_auth_cfg {
  bool enabled;         /* false: no authentication (local development only) */
  char *trust_domain;
  sk_cfg_list_t identities; /* of ctl_auth_identity_cfg_t, checked before the default rules */
} ctl_auth_cfg_t;

typedef struct ctl_events_kafka_cfg {
  char *brokers;             /* "" = no Kafka */
  char *topic_prefix;
  sk_cfg_strlist_t properties; /* extra librdkafka "name=value" */
} ctl_events_kafka_cfg_t;

typedef struct ctl_events_cfg {
  uint64_t retention;        /* events kept in the local log */
  uint64_t max_age_ms;
  uint64_t heartbeat_ms;     /* SSE keepalive comments */
  ctl_events_kafka_cfg_t kafka;
} ctl_events_cfg_t;

typedef struct ctl_config {
  sk_cfg_addr_t listen;
  char *store;              /* "sqlite:PATH" / PATH; "" = <state_dir>/control.db */
  bool durable;
  uint64_t event_retention;
  uint64_t max_body;
  sk_cfg_strlist_t policies; /* files or directories of policies */
  uint64_t watch_heartbeat_ms;
  int max_watches;
  ctl_tls_cfg_t tls;
  ctl_auth_cfg_t auth;
  bool ca;                  /* run the CA (needs state_dir) */
  uint64_t ca_leaf_ttl_ms;  /* default lifetime of issued certificates */
  ctl_events_cfg_t events;  /* the platform event bus (docs/control.md, Events) */
} ctl_config_t;

extern const sk_config_schema_t ctl_config_schema;
extern const sk_daemon_desc_t ctl_daemon_desc;

typedef struct ctl_app ctl_app_t;

typedef struct ctl_app_opts {
  const ctl_config_t *cfg;
  const char *state_dir;  /* NULL: no CA, no bootstrap token file */
  sk_metrics_t *metrics;  /* may be NULL */
  sk_logger_t *log;       /* may be NULL */
  bool admin_identity;    /* admin.tls.identity: control's identity is needed
                             even when the API does not use it (tls.identity) */
} ctl_app_opts_t;

int ctl_app_new(uv_loop_t *loop, const ctl_app_opts_t *o, ctl_app_t **out, char *err, size_t errlen);
int ctl_app_port(const ctl_app_t *a);
/* Control's own identity (<state_dir>/identity) from its CA, or NULL when
 * neither tls.identity nor admin_identity asked for it. */
sk_ident_t *ctl_app_ident(ctl_app_t *a);
ctl_store_t *ctl_app_store(ctl_app_t *a);
/* Re-reads the policy paths of cfg (the old set stays on error). */
int ctl_app_reload_policies(ctl_app_t *a, const ctl_config_t *cfg, char *err, size_t errlen);
size_t ctl_app_watch_count(const ctl_app_t *a);
/* Points the app at a new config struct (after a reload; the listener,
 * store and limits stay as started). */
void ctl_app_set_config(ctl_app_t *a, const ctl_config_t *cfg);
/* Ends every watch stream, stops accepting, calls cb when idle. */
void ctl_app_drain(ctl_app_t *a, void (*cb)(void *ud), void *ud);
void ctl_app_free(ctl_app_t *a);

#endif
