/* Fuzz target: what the identity module (skiff/ident.h) takes from
 * skiff-control's answers: the POST /api/v1/ca/csr body (bounded JSON, the
 * "chain" PEM, the check that the leaf is for our key and our SPIFFE ID
 * before anything is written) and the GET /api/v1/ca/bundle body. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../platform/runtime/src/ident.c"

static sk_ident_t fid;
static char *key_pem;
static char dir[64];

static void cleanup(void) {
  char p[128];
  snprintf(p, sizeof p, "%s/cert.pem", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/key.pem", dir);
  unlink(p);
  rmdir(dir);
  free(fid.cert_path);
  free(fid.key_path);
  free(key_pem);
}

static void init(void) {
  snprintf(dir, sizeof dir, "/tmp/skiff-fuzz-ident-XXXXXX");
  if (!mkdtemp(dir)) abort();
  char *csr = NULL;
  fid.spiffe_id = "spiffe://skiff.test/region/local/daemon/fuzz";
  if (sk_ident_make_csr(fid.spiffe_id, NULL, 0, &key_pem, &csr) < 0) abort();
  free(csr);
  fid.cert_path = join_path(dir, "cert.pem");
  fid.key_path = join_path(dir, "key.pem");
  atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!key_pem) init();
  char msg[512];
  json_t *v = NULL;
  char perr[128];
  if (sk_json_parse((const char *)data, size, 1 << 20, 8, &v, perr, sizeof perr) >= 0) {
    const char *chain = sk_json_get_str(v, "chain", NULL);
    if (chain && install(&fid, key_pem, chain, msg, sizeof msg) >= 0) abort(); /* never our key */
    json_decref(v);
  }
  (void)looks_like_bundle((const char *)data, size);
  return 0;
}
