/* fuzz_config.c - the config loader (every type, nested sections, lists,
 * ${ENV} substitution) and the YAML -> JSON loader on arbitrary input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/config.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_item {
  char *name;
  sk_cfg_addr_t addr;
  uint64_t timeout_ms;
  sk_cfg_strlist_t hosts;
} fz_item_t;

typedef struct fz_sub {
  bool on;
  int level;
  double ratio;
} fz_sub_t;

typedef struct fz_cfg {
  bool flag;
  int n;
  uint64_t u;
  double d;
  char *s;
  uint64_t dur;
  uint64_t size;
  int mode;
  sk_cfg_strlist_t list;
  sk_cfg_addr_t addr;
  fz_sub_t sub;
  sk_cfg_list_t items;
} fz_cfg_t;

static const char *const fz_modes[] = {"a", "b", "c", NULL};

static const sk_config_entry_t fz_item_entries[] = {
    {.key = "name", .type = SK_CFG_STRING, .offset = offsetof(fz_item_t, name), .flags = SK_CFG_REQUIRED, .max = 64},
    SK_CFG_ADDR_E("addr", "127.0.0.1:1", fz_item_t, addr, "addr"),
    SK_CFG_DURATION_E("timeout", "1s", fz_item_t, timeout_ms, "timeout"),
    SK_CFG_STRLIST_E("hosts", NULL, fz_item_t, hosts, "hosts"),
    SK_CFG_END_E};
static const sk_config_schema_t fz_item_schema = SK_CFG_SCHEMA("item", fz_item_t, fz_item_entries);

static const sk_config_entry_t fz_sub_entries[] = {
    SK_CFG_BOOL_E("on", "true", fz_sub_t, on, "on"),
    SK_CFG_INT_E("level", "3", -5, 5, fz_sub_t, level, "level"),
    {.key = "ratio", .type = SK_CFG_DOUBLE, .def = "0.5", .offset = offsetof(fz_sub_t, ratio), .min = 0, .max = 1},
    SK_CFG_END_E};
static const sk_config_schema_t fz_sub_schema = SK_CFG_SCHEMA("sub", fz_sub_t, fz_sub_entries);

static const sk_config_entry_t fz_entries[] = {
    SK_CFG_BOOL_E("flag", "false", fz_cfg_t, flag, "flag"),
    SK_CFG_INT_E("n", "1", 0, 1000, fz_cfg_t, n, "n"),
    SK_CFG_UINT64_E("u", "0", fz_cfg_t, u, "u"),
    SK_CFG_DOUBLE_E("d", "0", fz_cfg_t, d, "d"),
    SK_CFG_STRING_E("s", "x", fz_cfg_t, s, "s"),
    SK_CFG_DURATION_E("dur", "10s", fz_cfg_t, dur, "dur"),
    SK_CFG_SIZE_E("size", "1KiB", fz_cfg_t, size, "size"),
    SK_CFG_ENUM_E("mode", "a", fz_modes, fz_cfg_t, mode, "mode"),
    SK_CFG_STRLIST_E("list", "p,q", fz_cfg_t, list, "list"),
    SK_CFG_ADDR_E("addr", ":80", fz_cfg_t, addr, "addr"),
    SK_CFG_SECTION_E("sub", &fz_sub_schema, fz_cfg_t, sub, "sub"),
    SK_CFG_LIST_E("items", 16, &fz_item_schema, fz_cfg_t, items, "items"),
    SK_CFG_END_E};
static const sk_config_schema_t fz_schema = SK_CFG_SCHEMA("fz", fz_cfg_t, fz_entries);

static const char *fz_getenv(const char *name, void *ud) {
  return strcmp(name, "SET") == 0 ? "value" : strcmp(name, "EMPTY") == 0 ? "" : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_cfg_t c;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  sk_config_opts_t o = {.max_bytes = 1 << 16, .max_nodes = 5000, .getenv = fz_getenv};
  sk_config_load_string(&fz_schema, &c, "fuzz.yaml", (const char *)data, size, &o, &e);
  char line[1024];
  for (size_t i = 0; i < e.n; i++) sk_config_errors_format(&e, i, line, sizeof line);
  sk_config_free(&fz_schema, &c);
  sk_config_errors_done(&e);

  json_t *v = NULL;
  char err[256];
  sk_yaml_opts_t yo = {.max_bytes = 1 << 16, .max_nodes = 5000};
  if (sk_yaml_load_all((const char *)data, size, &yo, &v, err, sizeof err) == 0) {
    sk_buf_t b;
    sk_buf_init(&b);
    sk_json_dump_buf(v, &b);
    sk_json_get_str(v, "0.metadata.name", NULL);
    sk_buf_done(&b);
    json_decref(v);
  }
  return 0;
}
