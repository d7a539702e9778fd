/* pol_int.h - skiff-policy internals shared between its source files. */
#ifndef SKIFF_POL_INT_H
#define SKIFF_POL_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "policy.h"
#include "skiff/config.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

enum {
  POL_ANCHOR_NONE = 0,
  POL_ANCHOR_COND,   /* (key)  */
  POL_ANCHOR_EQUAL,  /* =(key) */
  POL_ANCHOR_EXIST,  /* ^(key) */
  POL_ANCHOR_NEG,    /* X(key) */
  POL_ANCHOR_GLOBAL, /* <(key) */
  POL_ANCHOR_ADD     /* +(key) */
};

/* Anchor type of a pattern key; inner and len give the bare key. */
int pol_anchor(const char *key, const char **inner, size_t *len);

/* Appends a result (message printf-style; NULL fmt = no message). */
__attribute__((format(printf, 6, 7))) void pol_add_result(pol_report_t *r, const pol_policy_t *p,
                                                          const pol_rule_t *rule, pol_status_t st,
                                                          pol_action_t action, const char *fmt, ...);

/* verifyImages (pol_images.c): load a rule's list, free it, and evaluate it
 * on obj (mutate = 1 rewrites verified images to digests in obj, setting
 * *changed). */
int pol_imgrules_load(pol_rule_t *rule, const json_t *list, const char *where, char *err, size_t errlen);
void pol_imgrules_free(pol_rule_t *rule);
void pol_imgrule_eval(const pol_set_t *s, const pol_policy_t *p, const pol_rule_t *rule, json_t *obj,
                      const char *kind, int mutate, pol_report_t *out, int *changed);

/* ---- the daemon ---- */

typedef struct pol_tls_config {
  char *cert;
  char *key;
  char *ca;            /* client CA for mTLS (optional) */
  int client_auth;     /* 0 none, 1 optional, 2 require */
} pol_tls_config_t;

typedef struct pol_reg_config {
  sk_cfg_strlist_t insecure; /* loopback registries reachable over plain http */
  char *ca;
  uint64_t timeout_ms;
  uint64_t cache_ttl_ms;
  int cache_size;
  char *username, *password;
} pol_reg_config_t;

/* background: periodic audit of control's objects into PolicyReports */
typedef struct pol_bg_config {
  char *control;        /* https://host:port of skiff-control; empty = off */
  char *control_ca;     /* CA bundle for control (default: the identity's) */
  uint64_t interval_ms;
  uint64_t timeout_ms;
  sk_cfg_strlist_t kinds; /* plural or kind names as control's API takes them */
  int max_results;      /* results kept per report (the summary counts all) */
  int max_objects;      /* objects listed per scan */
} pol_bg_config_t;

typedef struct pol_config {
  sk_cfg_addr_t listen;
  pol_tls_config_t tls;
  pol_reg_config_t registry;
  pol_bg_config_t background;
  sk_cfg_strlist_t policies;
  uint64_t max_body;
  int max_depth;
} pol_config_t;

extern const sk_config_schema_t pol_config_schema;
extern const sk_daemon_desc_t pol_daemon_desc;

typedef struct pol_app pol_app_t;

/* Starts the webhook server on cfg->listen with the given policy set (owned
 * by the app from now on). reg/log may be NULL. */
int pol_app_new(uv_loop_t *loop, const pol_config_t *cfg, pol_set_t *set, sk_metrics_t *reg,
                sk_logger_t *log, pol_app_t **out, char *err, size_t errlen);
int pol_app_port(const pol_app_t *a);
/* Swaps in a new policy set (the old one is freed). */
void pol_app_set_policies(pol_app_t *a, pol_set_t *set);
void pol_app_drain(pol_app_t *a, void (*cb)(void *ud), void *ud);
void pol_app_free(pol_app_t *a);
/* The current set for work off the loop (a worker thread): it stays valid
 * until pol_app_release_set, even across a reload. */
const pol_set_t *pol_app_hold_set(pol_app_t *a);
void pol_app_release_set(pol_app_t *a);

/* Background scans (pol_background.c): every interval, list cfg->kinds from
 * control over mTLS with the daemon's identity, evaluate the validate rules
 * of background policies and keep one PolicyReport per namespace plus a
 * ClusterPolicyReport, served as GET /reports on the admin listener. */
typedef struct pol_bg pol_bg_t;
int pol_bg_new(sk_daemon_t *d, pol_app_t *app, const pol_bg_config_t *cfg, pol_bg_t **out, char *err,
               size_t errlen);
/* Starts a scan now unless one is running (tests, operators). */
void pol_bg_scan_now(pol_bg_t *b);
/* Stops the timer and the client; cb runs once no scan work is left. */
void pol_bg_drain(pol_bg_t *b, void (*cb)(void *ud), void *ud);
void pol_bg_free(pol_bg_t *b);

/* Loads every path of cfg->policies into a new set. */
int pol_load_config_policies(const pol_config_t *cfg, pol_set_t **out, char *err, size_t errlen);

#endif
