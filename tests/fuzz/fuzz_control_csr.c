/* Fuzz target: the body of POST /api/v1/ca/csr as skiff-control decodes
 * it (bounded JSON, then the PEM CSR through every check: PEM parsing, key
 * type, self-signature, extensions, SAN shapes, SPIFFE ID syntax). The CA
 * lives in a temporary state directory for the whole run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_ca.h"
#include "skiff/mem.h"

static ctl_ca_t *ca;
static char dir[64];

static void cleanup(void) {
  static const char *const files[] = {"root.pem", "root.key", "intermediate.pem",
                                      "intermediate.key", "bundle.pem"};
  char p[128];
  ctl_ca_free(ca);
  ca = NULL;
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(p, sizeof p, "%s/ca/%s", dir, files[i]);
    unlink(p);
  }
  snprintf(p, sizeof p, "%s/ca", dir);
  rmdir(p);
  rmdir(dir);
}

static void init(void) {
  snprintf(dir, sizeof dir, "/tmp/skiff-fuzz-ca-XXXXXX");
  if (!mkdtemp(dir)) abort();
  ctl_ca_opts_t o = {.state_dir = dir, .trust_domain = "skiff.test"};
  char err[256];
  if (ctl_ca_open(&o, &ca, err, sizeof err) < 0) {
    fprintf(stderr, "fuzz_control_csr: %s\n", err);
    abort();
  }
  atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ca) init();
  sk_pool_t *pool = sk_pool_new();
  const char *csr = NULL, *token = NULL;
  size_t csr_len = 0;
  int64_t ttl = 0;
  char err[512];
  if (ctl_ca_csr_req_decode(data, size, pool, &csr, &csr_len, &token, &ttl, err, sizeof err) == 0) {
    char id[CTL_SPIFFE_MAX];
    if (ctl_ca_csr_check(ca, csr, csr_len, id, sizeof id, err, sizeof err) == 0) {
      /* a valid request is also signed, as the handler would */
      ctl_ca_cert_t c;
      if (ctl_ca_issue_csr(ca, csr, csr_len, id, ttl, &c, err, sizeof err) == 0) ctl_ca_cert_done(&c);
    }
  }
  /* the raw bytes as a bare PEM too, and as a SPIFFE ID */
  ctl_ca_csr_check(ca, (const char *)data, size, NULL, 0, err, sizeof err);
  char *s = sk_pool_strndup(pool, (const char *)data, size < 600 ? size : 600);
  ctl_spiffe_parse(s, "skiff.test", NULL, err, sizeof err);
  sk_pool_free(pool);
  return 0;
}
