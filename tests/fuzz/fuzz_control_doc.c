/* fuzz_control_doc.c - skiff-control's resource document path: the body
 * decoder (JSON or YAML), envelope and kind validation, HTTPRoute
 * conversion both ways, merge patch, label selectors, and the YAML output,
 * which must read back as the same value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "skiff/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void yaml_round_trip(const json_t *v) {
  sk_buf_t b;
  sk_buf_init(&b);
  ctl_yaml_emit(v, &b);
  json_t *back = NULL;
  char err[256];
  if (sk_yaml_load(b.data ? b.data : "", b.len, NULL, &back, err, sizeof err) < 0 || !json_equal(v, back)) {
    fprintf(stderr, "YAML output does not read back (%s):\n%s\n", err, b.data ? sk_buf_cstr(&b) : "");
    abort();
  }
  json_decref(back);
  sk_buf_done(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024) return 0;
  /* The first line (up to 256 bytes) is also tried as a label selector. */
  char line[257];
  size_t n = 0;
  while (n < size && n < 256 && data[n] != '\n') {
    line[n] = (char)data[n];
    n++;
  }
  line[n] = 0;
  ctl_selector_t sel;
  char err[512];
  if (ctl_selector_parse(line, &sel, err, sizeof err) == 0) {
    json_t *labels = json_pack("{s:s, s:s}", "app", "web", "tier", "front");
    (void)ctl_selector_match(&sel, labels);
    json_decref(labels);
  }
  json_t *doc = NULL;
  const char *ct = size && data[0] == '{' ? "application/json" : "application/yaml";
  if (ctl_doc_decode(data, size, ct, &doc, err, sizeof err) < 0) return 0;
  yaml_round_trip(doc);
  json_t *patched = ctl_merge_patch(doc, doc);
  json_decref(patched);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  json_t *stored = NULL;
  const ctl_kind_t *k = NULL;
  if (ctl_doc_prepare(doc, NULL, NULL, NULL, &stored, &k, &errs) == 0) {
    yaml_round_trip(stored);
    if (k->from_stored) {
      json_t *back = NULL;
      if (k->from_stored(stored, &back) == 0) json_decref(back);
    }
    json_decref(stored);
  } else {
    char msg[2048];
    ctl_errs_format(&errs, msg, sizeof msg);
    json_t *st = ctl_status_new(422, "Invalid", msg, NULL, NULL, &errs);
    json_decref(st);
  }
  json_decref(doc);
  return 0;
}
