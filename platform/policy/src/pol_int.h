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

/* ---- the daemon ---- */

typedef struct pol_tls_config {
  char *cert;
  char *key;
  char *ca;            /* client CA for mTLS (optional) */
  int client_auth;     /* 0 none, 1 optional, 2 require */
} pol_tls_config_t;

typedef struct pol_config {
  sk_cfg_addr_t listen;
  pol_tls_config_t tls;
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
/* Loads every path of cfg->policies into a new set. */
int pol_load_config_policies(const pol_config_t *cfg, pol_set_t **out, char *err, size_t errlen);

#endif
