/* Push webhooks from GitHub (X-Hub-Signature-256: HMAC-SHA256 of the body)
 * and GitLab (X-Gitlab-Token): verification and the few payload fields the
 * reconciler needs (the repository's URLs and the pushed ref). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gitops.h"
#include "skiff/err.h"
#include "skiff/json.h"

int gx_hook_verify_github(const char *secret, const char *header, const void *body, size_t len) {
  if (!secret || !*secret || !header) return SK_EUNAUTH;
  if (strncmp(header, "sha256=", 7)) return SK_EUNAUTH;
  const char *hex = header + 7;
  if (strlen(hex) != 64) return SK_EUNAUTH;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &maclen) || maclen != 32)
    return SK_EUNAUTH;
  unsigned char got[32];
  for (size_t i = 0; i < 32; i++) {
    int hi = hex[2 * i], lo = hex[2 * i + 1];
    if (!isxdigit(hi) || !isxdigit(lo)) return SK_EUNAUTH;
    hi = isdigit(hi) ? hi - '0' : (tolower(hi) - 'a' + 10);
    lo = isdigit(lo) ? lo - '0' : (tolower(lo) - 'a' + 10);
    got[i] = (unsigned char)(hi << 4 | lo);
  }
  return CRYPTO_memcmp(mac, got, 32) == 0 ? 0 : SK_EUNAUTH;
}

int gx_hook_verify_gitlab(const char *token, const char *header) {
  if (!token || !*token || !header) return SK_EUNAUTH;
  /* Compare fixed-size digests so the length does not leak either. */
  unsigned char a[32], b[32];
  unsigned int la = 0, lb = 0;
  if (!EVP_Digest(token, strlen(token), a, &la, EVP_sha256(), NULL) ||
      !EVP_Digest(header, strlen(header), b, &lb, EVP_sha256(), NULL))
    return SK_EUNAUTH;
  return CRYPTO_memcmp(a, b, 32) == 0 ? 0 : SK_EUNAUTH;
}

void gx_url_normalize(const char *in, char *out, size_t len) {
  if (!len) return;
  out[0] = 0;
  if (!in) return;
  const char *p = in;
  size_t o = 0;
  const char *sep = strstr(p, "://");
  if (sep) {
    for (; p < sep + 3 && o + 1 < len; p++) out[o++] = (char)tolower((unsigned char)*p);
    /* drop user[:password]@ */
    const char *slash = p + strcspn(p, "/");
    const char *at = memchr(p, '@', (size_t)(slash - p));
    if (at) p = at + 1;
    for (; *p && *p != '/' && o + 1 < len; p++) out[o++] = (char)tolower((unsigned char)*p);
  }
  for (; *p && o + 1 < len; p++) out[o++] = *p;
  out[o] = 0;
  for (;;) {
    size_t l = strlen(out);
    if (l > 1 && out[l - 1] == '/') out[l - 1] = 0;
    else if (l > 4 && !strcmp(out + l - 4, ".git")) out[l - 4] = 0;
    else break;
  }
}

static void add_url(gx_hook_event_t *ev, const json_t *root, const char *path) {
  const char *u = sk_json_get_str(root, path, NULL);
  if (!u || !*u || strlen(u) > 2048 || ev->nurls >= GX_HOOK_MAX_URLS) return;
  for (size_t i = 0; i < ev->nurls; i++)
    if (!strcmp(ev->urls[i], u)) return;
  ev->urls[ev->nurls++] = sk_xstrdup(u);
}

int gx_hook_parse(gx_hook_provider_t p, const char *event, const void *body, size_t len, gx_hook_event_t *out,
                  char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->provider = p;
  json_t *root = NULL;
  char jerr[256];
  int rc = sk_json_parse(body, len, GX_MAX_WEBHOOK_BYTES, 32, &root, jerr, sizeof jerr);
  if (rc < 0) {
    snprintf(err, errlen, "payload: %s", jerr);
    return rc;
  }
  if (!json_is_object(root)) {
    snprintf(err, errlen, "payload: not a JSON object");
    rc = SK_EPARSE;
    goto out;
  }
  if (p == GX_HOOK_GITHUB) {
    out->is_push = event && !strcmp(event, "push");
    add_url(out, root, "repository.clone_url");
    add_url(out, root, "repository.ssh_url");
    add_url(out, root, "repository.git_url");
    add_url(out, root, "repository.html_url");
    add_url(out, root, "repository.url");
  } else {
    out->is_push = event && (!strcmp(event, "Push Hook") || !strcmp(event, "Tag Push Hook"));
    add_url(out, root, "project.git_http_url");
    add_url(out, root, "project.git_ssh_url");
    add_url(out, root, "project.web_url");
    add_url(out, root, "repository.git_http_url");
    add_url(out, root, "repository.git_ssh_url");
    add_url(out, root, "repository.homepage");
    add_url(out, root, "repository.url");
  }
  const char *ref = sk_json_get_str(root, "ref", "");
  snprintf(out->ref, sizeof out->ref, "%s", ref);
  if (out->is_push && !out->nurls) {
    snprintf(err, errlen, "payload: push event without a repository URL");
    rc = SK_EPARSE;
  }
out:
  json_decref(root);
  if (rc < 0) gx_hook_event_done(out);
  return rc;
}

void gx_hook_event_done(gx_hook_event_t *ev) {
  if (!ev) return;
  for (size_t i = 0; i < ev->nurls; i++) free(ev->urls[i]);
  ev->nurls = 0;
}
