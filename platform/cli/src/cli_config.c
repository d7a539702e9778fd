/* skiff.yaml: the supervisor's config, read with the runtime config module.
 *
 *   state_dir: .skiff
 *   daemons:
 *     - name: skiff-echo
 *       command: skiff-echo          # next to skiff, on PATH, or a path
 *       config: echo.yaml            # passed as --config <path>
 *       args: [--log-level, debug]
 *       env: [K=V]
 *       admin: 127.0.0.1:9911        # ready_url defaults to http://<admin>/readyz
 *       ready_url: http://127.0.0.1:9911/readyz
 *       url: http://127.0.0.1:8081/  # printed once every daemon is ready
 *       depends_on: [other]
 *       restart: always              # always | on-failure | never
 *       start_timeout: 30s
 *       stop_timeout: 10s
 *
 * The schema gives unknown keys and bad values as file:line:col; a short
 * libyaml pass then finds where each daemon entry and each depends_on item
 * sit, so ordering errors (unknown names, cycles) carry positions too. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cli_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

static const char *const restart_names[] = {"always", "on-failure", "never", NULL};

int cli_restart_parse(const char *s, cli_restart_t *out) {
  for (int i = 0; restart_names[i]; i++)
    if (!strcmp(s, restart_names[i])) {
      *out = (cli_restart_t)i;
      return 0;
    }
  return SK_EINVAL;
}

const char *cli_restart_name(cli_restart_t r) {
  return (unsigned)r < 3 ? restart_names[r] : "?";
}

static int check_name(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > CLI_NAME_MAX) {
    snprintf(msg, msglen, "must be 1 to %d characters", CLI_NAME_MAX);
    return SK_EINVAL;
  }
  if (s[0] == '.' || s[0] == '-') {
    snprintf(msg, msglen, "must start with a letter, digit or '_'");
    return SK_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.') {
      snprintf(msg, msglen, "may hold only letters, digits, '-', '_' and '.'");
      return SK_EINVAL;
    }
  }
  return 0;
}

static int check_env(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  if (l->n > CLI_MAX_LIST) {
    snprintf(msg, msglen, "at most %d entries", CLI_MAX_LIST);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < l->n; i++) {
    const char *eq = strchr(l->v[i], '=');
    if (!eq || eq == l->v[i]) {
      snprintf(msg, msglen, "entry '%s' is not NAME=VALUE", l->v[i]);
      return SK_EINVAL;
    }
  }
  return 0;
}

static int check_list(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  if (l->n > CLI_MAX_LIST) {
    snprintf(msg, msglen, "at most %d entries", CLI_MAX_LIST);
    return SK_EINVAL;
  }
  return 0;
}

static int check_url(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  if (!s || !*s) return 0;
  if ((strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) || strlen(s) > 400) {
    snprintf(msg, msglen, "must be an http:// or https:// URL (at most 400 characters)");
    return SK_EINVAL;
  }
  return 0;
}

static int check_ident_name(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  size_t n = s ? strlen(s) : 0;
  if (n == 0) return 0;
  const char *slash = strchr(s, '/');
  if (slash) { /* KIND/NAME */
    size_t kl = (size_t)(slash - s);
    if (!((kl == 6 && !strncmp(s, "daemon", 6)) || (kl == 5 && !strncmp(s, "proxy", 5)) ||
          (kl == 8 && !strncmp(s, "workload", 8)))) {
      snprintf(msg, msglen, "KIND/NAME: KIND is daemon, proxy or workload");
      return SK_EINVAL;
    }
    s = slash + 1;
    n = strlen(s);
  }
  int ok = n > 0 && n <= 128 && strcmp(s, ".") && strcmp(s, "..");
  for (size_t i = 0; ok && i < n; i++) ok = isalnum((unsigned char)s[i]) || strchr("._-", s[i]);
  if (!ok) {
    snprintf(msg, msglen, "1..128 of [A-Za-z0-9._-]");
    return SK_EINVAL;
  }
  return 0;
}

static const sk_config_entry_t daemon_entries[] = {
    {SK_CFG_E_("name", SK_CFG_STRING, NULL, cli_daemon_spec_t, name, "daemon name (logs/<name>.log)"),
     .validate = check_name, .flags = SK_CFG_REQUIRED},
    SK_CFG_STRING_E("command", NULL, cli_daemon_spec_t, command,
                    "binary: a name found next to skiff or on PATH, or a path (default: name)"),
    SK_CFG_STRING_E("config", NULL, cli_daemon_spec_t, config,
                    "config file passed as --config (relative to skiff.yaml)"),
    {SK_CFG_E_("args", SK_CFG_STRLIST, NULL, cli_daemon_spec_t, args, "extra arguments"),
     .validate = check_list},
    {SK_CFG_E_("env", SK_CFG_STRLIST, NULL, cli_daemon_spec_t, env, "extra environment, NAME=VALUE"),
     .validate = check_env},
    SK_CFG_ADDR_E("admin", NULL, cli_daemon_spec_t, admin,
                  "the daemon's admin listener; ready_url defaults to http://<admin>/readyz"),
    SK_CFG_BOOL_E("admin_tls", "false", cli_daemon_spec_t, admin_tls,
                  "the admin listener is HTTPS: readiness over https, verified with identity.ca"),
    {SK_CFG_E_("ready_url", SK_CFG_STRING, NULL, cli_daemon_spec_t, ready_url,
               "URL that answers 200 once the daemon serves"),
     .validate = check_url},
    SK_CFG_STRING_E("url", NULL, cli_daemon_spec_t, url,
                    "the daemon's main endpoint, printed once every daemon is ready"),
    {SK_CFG_E_("depends_on", SK_CFG_STRLIST, NULL, cli_daemon_spec_t, deps,
               "daemons that must be ready before this one starts"),
     .validate = check_list},
    SK_CFG_ENUM_E("restart", "always", restart_names, cli_daemon_spec_t, restart,
                  "restart policy when the process exits"),
    SK_CFG_DURATION_E("start_timeout", "30s", cli_daemon_spec_t, start_timeout_ms,
                      "how long to wait for readiness"),
    SK_CFG_DURATION_E("stop_timeout", "10s", cli_daemon_spec_t, stop_timeout_ms,
                      "SIGTERM to SIGKILL grace period"),
    {SK_CFG_E_("identity", SK_CFG_STRING, "", cli_daemon_spec_t, identity,
               "NAME or KIND/NAME: before each start a one-use join token for "
               "spiffe://<trust_domain>/region/<region>/<kind: daemon>/<name> is minted through control "
               "(top-level identity:) and passed as $SKIFF_JOIN_TOKEN_FILE, with $SKIFF_CA"),
     .validate = check_ident_name},
    SK_CFG_END_E};

static const sk_config_schema_t daemon_schema = SK_CFG_SCHEMA("daemon", cli_daemon_spec_t, daemon_entries);

static const sk_config_entry_t ident_entries[] = {
    SK_CFG_STRING_E("control", "", cli_ident_cfg_t, control,
                    "skiff-control's API (https://host:port) that mints join tokens"),
    SK_CFG_STRING_E("admin_token", ".skiff/control-state/admin.token", cli_ident_cfg_t, admin_token,
                    "file holding an admin bearer token (control writes one at first start)"),
    SK_CFG_STRING_E("ca", ".skiff/control-state/ca/bundle.pem", cli_ident_cfg_t, ca,
                    "control's trust bundle: verifies control, handed to daemons as $SKIFF_CA"),
    SK_CFG_STRING_E("trust_domain", "skiff.local", cli_ident_cfg_t, trust_domain, "SPIFFE trust domain"),
    SK_CFG_STRING_E("region", "local", cli_ident_cfg_t, region, "region part of the SPIFFE IDs"),
    SK_CFG_DURATION_E("token_ttl", "10m", cli_ident_cfg_t, token_ttl_ms, "lifetime of a minted join token"),
    SK_CFG_END_E};
static const sk_config_schema_t ident_schema = SK_CFG_SCHEMA("identity", cli_ident_cfg_t, ident_entries);

static const sk_config_entry_t top_entries[] = {
    SK_CFG_STRING_E("state_dir", NULL, cli_config_t, state_dir,
                    "state directory (default .skiff next to where skiff runs)"),
    SK_CFG_LIST_E("daemons", CLI_MAX_DAEMONS, &daemon_schema, cli_config_t, daemons,
                  "the supervised daemons"),
    SK_CFG_SECTION_E("identity", &ident_schema, cli_config_t, ident,
                     "join tokens from skiff-control for daemons with identity: (docs/control-security.md)"),
    SK_CFG_END_E};

static const sk_config_schema_t top_schema = SK_CFG_SCHEMA("skiff", cli_config_t, top_entries);

int cli_config_find(const cli_config_t *c, const char *name) {
  for (size_t i = 0; i < c->n; i++)
    if (c->d[i].name && !strcmp(c->d[i].name, name)) return (int)i;
  return -1;
}

void cli_daemon_ready_url(const cli_daemon_spec_t *d, char *out, size_t outlen) {
  if (d->ready_url && *d->ready_url) {
    snprintf(out, outlen, "%s", d->ready_url);
  } else if (d->admin.port > 0) {
    char a[SK_CFG_HOST_MAX + 16];
    sk_cfg_addr_t adm = d->admin;
    if (!adm.host[0] || !strcmp(adm.host, "0.0.0.0")) snprintf(adm.host, sizeof adm.host, "127.0.0.1");
    if (!strcmp(adm.host, "::")) snprintf(adm.host, sizeof adm.host, "::1");
    sk_config_format_addr(&adm, a, sizeof a);
    snprintf(out, outlen, "%s://%s/readyz", d->admin_tls ? "https" : "http", a);
  } else if (outlen) {
    out[0] = 0;
  }
}

/* ---- positions ---- */

enum { FR_OTHER, FR_ROOT, FR_DAEMONS, FR_DAEMON, FR_DEPS };

typedef struct frame {
  int kind;      /* FR_* */
  int is_map;
  int want_key;  /* map: next node is a key */
  char key[32];  /* map: the key whose value comes next */
  size_t count;  /* seq: items seen */
  size_t daemon; /* FR_DAEMON / FR_DEPS: which entry */
} frame_t;

static void find_positions(cli_config_t *c, const char *text, size_t len) {
  yaml_parser_t p;
  yaml_event_t ev;
  frame_t st[40];
  int depth = 0, done = 0;
  if (!yaml_parser_initialize(&p)) return;
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  while (!done) {
    if (!yaml_parser_parse(&p, &ev)) break;
    cli_pos_t mark = {(int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1};
    int node = ev.type == YAML_SCALAR_EVENT || ev.type == YAML_SEQUENCE_START_EVENT ||
               ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_ALIAS_EVENT;
    int kind = FR_OTHER;
    size_t daemon = 0;
    if (node && depth > 0) {
      frame_t *pf = &st[depth - 1];
      if (pf->is_map && pf->want_key) {
        pf->want_key = 0;
        pf->key[0] = 0;
        if (ev.type == YAML_SCALAR_EVENT)
          snprintf(pf->key, sizeof pf->key, "%.*s", (int)ev.data.scalar.length,
                   (const char *)ev.data.scalar.value);
        if (ev.type == YAML_SCALAR_EVENT || ev.type == YAML_ALIAS_EVENT) goto next;
        /* a complex key: its value is ignored */
      } else {
        if (pf->is_map) pf->want_key = 1;
        if (pf->kind == FR_ROOT && !strcmp(pf->key, "daemons")) {
          kind = FR_DAEMONS;
        } else if (pf->kind == FR_DAEMONS) {
          daemon = pf->count++;
          kind = FR_DAEMON;
          if (daemon < c->n) c->d[daemon].pos = mark;
        } else if (pf->kind == FR_DAEMON && !strcmp(pf->key, "depends_on")) {
          daemon = pf->daemon;
          kind = FR_DEPS;
          if (ev.type == YAML_SCALAR_EVENT && daemon < c->n && c->d[daemon].dep_pos &&
              c->d[daemon].deps.n > 0)
            c->d[daemon].dep_pos[0] = mark;
        } else if (pf->kind == FR_DEPS) {
          size_t k = pf->count++;
          if (pf->daemon < c->n && c->d[pf->daemon].dep_pos && k < c->d[pf->daemon].deps.n)
            c->d[pf->daemon].dep_pos[k] = mark;
        }
      }
    } else if (node && depth == 0) {
      kind = FR_ROOT;
    }
    if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) {
      if (depth >= (int)(sizeof st / sizeof st[0])) break;
      frame_t *f = &st[depth++];
      memset(f, 0, sizeof *f);
      f->is_map = ev.type == YAML_MAPPING_START_EVENT;
      f->want_key = f->is_map;
      f->daemon = daemon;
      /* kinds are tied to the node's shape */
      if ((kind == FR_ROOT || kind == FR_DAEMON) && !f->is_map) kind = FR_OTHER;
      if ((kind == FR_DAEMONS || kind == FR_DEPS) && f->is_map) kind = FR_OTHER;
      f->kind = kind;
    } else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
      if (depth > 0) depth--;
    } else if (ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT) {
      done = 1;
    }
  next:
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
}

/* ---- loading ---- */

void cli_config_free(cli_config_t *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) free(c->d[i].dep_pos);
  free(c->path);
  free(c->dir);
  c->path = c->dir = NULL;
  c->d = NULL;
  c->n = 0;
  sk_config_free(&top_schema, c);
  free(c);
}

static void errs_to_buf(const sk_config_errors_t *e, char *err, size_t errlen) {
  if (!err || !errlen) return;
  size_t used = strnlen(err, errlen);
  for (size_t i = 0; i < e->n && used + 1 < errlen; i++) {
    char line[1024];
    sk_config_errors_format(e, i, line, sizeof line);
    int w = snprintf(err + used, errlen - used, "%s\n", line);
    if (w < 0) break;
    used += (size_t)w;
    if (used >= errlen) used = errlen - 1;
  }
}

int cli_config_parse(const char *path, const char *text, size_t len, cli_config_t **out, char *err,
                     size_t errlen) {
  sk_config_errors_t errs;
  cli_config_t *c = sk_xcalloc(1, sizeof *c);
  int rc;
  *out = NULL;
  if (err && errlen) err[0] = 0;
  sk_config_errors_init(&errs);
  rc = sk_config_load_string(&top_schema, c, path, text, len, NULL, &errs);
  c->path = sk_xstrdup(path);
  const char *slash = strrchr(path, '/');
  c->dir = slash ? sk_xstrndup(path, (size_t)(slash - path) + (slash == path)) : sk_xstrdup(".");
  c->d = c->daemons.v;
  c->n = c->daemons.n;
  if (rc < 0) goto out;

  for (size_t i = 0; i < c->n; i++)
    if (c->d[i].deps.n) c->d[i].dep_pos = sk_xcalloc(c->d[i].deps.n, sizeof(cli_pos_t));
  find_positions(c, text, len);

  for (size_t i = 0; i < c->n; i++) {
    cli_daemon_spec_t *d = &c->d[i];
    if (!d->name || !*d->name) {
      sk_config_errors_add(&errs, path, d->pos.line, d->pos.col, "daemons[%zu]: empty name", i);
      continue;
    }
    for (size_t j = 0; j < i; j++)
      if (c->d[j].name && !strcmp(c->d[j].name, d->name))
        sk_config_errors_add(&errs, path, d->pos.line, d->pos.col,
                             "daemons: duplicate daemon name '%s' (first at line %d)", d->name,
                             c->d[j].pos.line);
    if (d->command && !*d->command)
      sk_config_errors_add(&errs, path, d->pos.line, d->pos.col, "daemon '%s': empty command", d->name);
    if (d->start_timeout_ms == 0 || d->start_timeout_ms > 3600 * 1000)
      sk_config_errors_add(&errs, path, d->pos.line, d->pos.col,
                           "daemon '%s': start_timeout must be between 1ms and 1h", d->name);
    if (d->stop_timeout_ms > 3600 * 1000)
      sk_config_errors_add(&errs, path, d->pos.line, d->pos.col,
                           "daemon '%s': stop_timeout must be at most 1h", d->name);
    if (d->identity && *d->identity && !(c->ident.control && *c->ident.control))
      sk_config_errors_add(&errs, path, d->pos.line, d->pos.col,
                           "daemon '%s': identity needs the top-level identity.control (skiff-control's URL)",
                           d->name);
  }
  if (c->ident.control && *c->ident.control && strncmp(c->ident.control, "https://", 8) != 0 &&
      strncmp(c->ident.control, "http://", 7) != 0)
    sk_config_errors_add(&errs, path, 1, 1, "identity.control '%s': must be https://host:port", c->ident.control);
  if (errs.n) {
    rc = SK_ECONFIG;
    goto out;
  }
  size_t order[CLI_MAX_DAEMONS];
  rc = cli_order(c, order, err, errlen);
  if (rc < 0) goto out_keep_msg;
  *out = c;
  c = NULL;
  rc = 0;
out:
  errs_to_buf(&errs, err, errlen);
out_keep_msg:
  sk_config_errors_done(&errs);
  cli_config_free(c);
  return rc;
}

int cli_config_load(const char *path, cli_config_t **out, char *err, size_t errlen) {
  char *text = NULL;
  size_t len = 0;
  *out = NULL;
  int rc = cli_read_file(path, 4u << 20, &text, &len);
  if (rc < 0) {
    if (err && errlen) snprintf(err, errlen, "%s: cannot read: %s\n", path, sk_strerror(rc));
    return rc;
  }
  rc = cli_config_parse(path, text, len, out, err, errlen);
  free(text);
  return rc;
}
