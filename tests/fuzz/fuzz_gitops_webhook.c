/* fuzz_gitops_webhook.c - skiff-gitops' webhook input: the first byte picks
 * GitHub or GitLab and the event name, the rest is the payload; the parsed
 * URLs go through the URL normalisation, and the payload through the
 * GitHub signature check with a fixed secret. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gitops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const char *const events[] = {"push", "ping", "Push Hook", "Tag Push Hook"};
  gx_hook_provider_t p = (data[0] & 1) ? GX_HOOK_GITLAB : GX_HOOK_GITHUB;
  const char *ev = events[(data[0] >> 1) & 3];
  gx_hook_event_t e;
  char err[256];
  if (gx_hook_parse(p, ev, data + 1, size - 1, &e, err, sizeof err) == 0) {
    for (size_t i = 0; i < e.nurls; i++) {
      char norm[2048];
      gx_url_normalize(e.urls[i], norm, sizeof norm);
    }
    gx_hook_event_done(&e);
  }
  /* the signature header itself is outside input too */
  char hdr[80];
  size_t n = size - 1 < sizeof hdr - 1 ? size - 1 : sizeof hdr - 1;
  memcpy(hdr, data + 1, n);
  hdr[n] = 0;
  (void)gx_hook_verify_github("secret", hdr, data + 1, size - 1);
  (void)gx_hook_verify_gitlab("token", hdr);
  return 0;
}
