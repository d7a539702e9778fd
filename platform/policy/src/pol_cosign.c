/* Image signatures in cosign's registry layout: the signature of manifest
 * sha256:H is an OCI image tagged sha256-H.sig in the same repository; each
 * layer is a "simple signing" JSON payload naming the digest, with the
 * base64 ECDSA (P-256, SHA-256, ASN.1 DER) signature of that payload in the
 * layer annotation dev.cosignproject.cosign/signature. */
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define SIG_ANNOTATION "dev.cosignproject.cosign/signature"
#define SIMPLESIGNING_TYPE "application/vnd.dev.cosign.simplesigning.v1+json"
#define PAYLOAD_TYPE "cosign container image signature"
#define MAX_PAYLOAD (64u * 1024)
#define MAX_SIG_LAYERS 64

/* ---- keys ---- */

static int key_is_p256(EVP_PKEY *k) {
  if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) return 0;
  char name[64];
  size_t nl = 0;
  if (EVP_PKEY_get_utf8_string_param(k, "group", name, sizeof name, &nl) != 1) return 0;
  return !strcmp(name, "prime256v1") || !strcmp(name, "P-256");
}

int pol_key_parse_public(const char *pem, size_t len, EVP_PKEY **out, char *err, size_t errlen) {
  *out = NULL;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  if (!k) {
    snprintf(err, errlen, "not a PEM public key (want -----BEGIN PUBLIC KEY-----, as cosign writes cosign.pub)");
    return SK_EPARSE;
  }
  if (!key_is_p256(k)) {
    EVP_PKEY_free(k);
    snprintf(err, errlen, "public key is not ECDSA P-256 (the only kind supported)");
    return SK_ENOTSUP;
  }
  *out = k;
  return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

int pol_key_parse_private(const char *pem, size_t len, EVP_PKEY **out, char *err, size_t errlen) {
  *out = NULL;
  if (memmem(pem, len, "ENCRYPTED SIGSTORE PRIVATE KEY", 30) || memmem(pem, len, "ENCRYPTED COSIGN PRIVATE KEY", 28)) {
    snprintf(err, errlen,
             "encrypted cosign private keys are not supported: export an unencrypted PEM EC key "
             "(or make one with skiff sign --generate-key)");
    return SK_ENOTSUP;
  }
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
  BIO_free(b);
  if (!k) {
    snprintf(err, errlen, "not an unencrypted PEM private key (EC PRIVATE KEY or PRIVATE KEY)");
    return SK_EPARSE;
  }
  if (!key_is_p256(k)) {
    EVP_PKEY_free(k);
    snprintf(err, errlen, "private key is not ECDSA P-256 (the only kind supported)");
    return SK_ENOTSUP;
  }
  *out = k;
  return 0;
}

int pol_key_generate(const char *priv_path, const char *pub_path, char *err, size_t errlen) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  if (!k) {
    snprintf(err, errlen, "cannot generate a P-256 key");
    return SK_EIO;
  }
  int rc = 0;
  FILE *f = NULL;
  int fd = open(priv_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0 || !(f = fdopen(fd, "w"))) {
    int e = errno;
    if (fd >= 0) close(fd);
    snprintf(err, errlen, "%s: %s", priv_path, strerror(e));
    rc = sk_err_from_errno(e);
    goto out;
  }
  if (PEM_write_PKCS8PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1) {
    snprintf(err, errlen, "%s: cannot write the key", priv_path);
    rc = SK_EIO;
  }
  if (fclose(f) != 0 && rc == 0) {
    snprintf(err, errlen, "%s: %s", priv_path, strerror(errno));
    rc = SK_EIO;
  }
  if (rc < 0) goto out;
  fd = open(pub_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0 || !(f = fdopen(fd, "w"))) {
    int e = errno;
    if (fd >= 0) close(fd);
    snprintf(err, errlen, "%s: %s", pub_path, strerror(e));
    rc = sk_err_from_errno(e);
    goto out;
  }
  if (PEM_write_PUBKEY(f, k) != 1) {
    snprintf(err, errlen, "%s: cannot write the key", pub_path);
    rc = SK_EIO;
  }
  if (fclose(f) != 0 && rc == 0) rc = SK_EIO;
out:
  EVP_PKEY_free(k);
  return rc;
}

/* ---- payload ---- */

char *pol_cosign_payload(const char *docker_reference, const char *digest) {
  json_t *p = json_pack("{s:{s:{s:s},s:{s:s},s:s},s:n}", "critical", "identity", "docker-reference",
                        docker_reference, "image", "docker-manifest-digest", digest, "type", PAYLOAD_TYPE,
                        "optional");
  if (!p) return NULL;
  char *s = json_dumps(p, JSON_COMPACT);
  json_decref(p);
  return s;
}

int pol_cosign_payload_check(const char *payload, size_t len, const char *digest, char *err, size_t errlen) {
  json_t *p = NULL;
  char perr[160];
  int rc = sk_json_parse(payload, len, MAX_PAYLOAD, 16, &p, perr, sizeof perr);
  if (rc < 0) {
    snprintf(err, errlen, "signature payload is not JSON: %s", perr);
    return rc;
  }
  const char *type = sk_json_get_str(p, "critical.type", NULL);
  const char *d = sk_json_get_str(p, "critical.image.docker-manifest-digest", NULL);
  if (!type || strcasecmp(type, PAYLOAD_TYPE)) {
    snprintf(err, errlen, "signature payload critical.type is not '%s'", PAYLOAD_TYPE);
    rc = SK_EPARSE;
  } else if (!d) {
    snprintf(err, errlen, "signature payload has no critical.image.docker-manifest-digest");
    rc = SK_EPARSE;
  } else if (digest && strcmp(d, digest)) {
    snprintf(err, errlen, "signature payload is for %.80s, not %s", d, digest);
    rc = SK_EPERM;
  }
  json_decref(p);
  return rc;
}

/* ---- signatures ---- */

int pol_sig_sign(EVP_PKEY *key, const void *data, size_t len, sk_buf_t *b64) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char sig[256];
  size_t sl = sizeof sig;
  int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
           EVP_DigestSign(md, sig, &sl, data, len) == 1;
  EVP_MD_CTX_free(md);
  if (!ok) return SK_EIO;
  sk_buf_reserve(b64, 4 * ((sl + 2) / 3) + 1);
  int w = EVP_EncodeBlock((unsigned char *)b64->data + b64->len, sig, (int)sl);
  b64->len += (size_t)w;
  return 0;
}

int pol_sig_verify(EVP_PKEY *key, const void *data, size_t len, const char *b64sig) {
  size_t bl = strlen(b64sig);
  if (!bl || bl > 1024 || bl % 4) return SK_EPARSE;
  unsigned char sig[800];
  int n = EVP_DecodeBlock(sig, (const unsigned char *)b64sig, (int)bl);
  if (n <= 0) return SK_EPARSE;
  if (b64sig[bl - 1] == '=') n--;
  if (bl > 1 && b64sig[bl - 2] == '=') n--;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
           EVP_DigestVerify(md, sig, (size_t)n, data, len) == 1;
  EVP_MD_CTX_free(md);
  return ok ? 0 : SK_EPERM;
}

static const char *sig_tag(const char *digest, char tag[80]) {
  snprintf(tag, 80, "sha256-%s.sig", digest + 7);
  return tag;
}

int pol_cosign_verify(pol_registry_t *r, const char *digest, EVP_PKEY *const *keys, size_t nkeys, char *err,
                      size_t errlen) {
  char tag[80], sdigest[72];
  json_t *m = NULL;
  int rc = pol_registry_manifest(r, sig_tag(digest, tag), &m, sdigest, err, errlen);
  if (rc == SK_ENOTFOUND) {
    snprintf(err, errlen, "no signatures found (no %s in the repository)", tag);
    return SK_EPERM;
  }
  if (rc < 0) return rc;
  json_t *layers = json_object_get(m, "layers");
  size_t i;
  json_t *l;
  char why[256] = "the signature image has no simple-signing layers";
  rc = SK_EPERM;
  json_array_foreach(layers, i, l) {
    if (i >= MAX_SIG_LAYERS) break;
    const char *mt = json_string_value(json_object_get(l, "mediaType"));
    const char *sig = json_string_value(json_object_get(json_object_get(l, "annotations"), SIG_ANNOTATION));
    const char *ld = json_string_value(json_object_get(l, "digest"));
    if (!mt || strcmp(mt, SIMPLESIGNING_TYPE) || !sig || !ld) continue;
    json_t *sz = json_object_get(l, "size");
    if (json_is_integer(sz) && (json_integer_value(sz) < 0 || json_integer_value(sz) > MAX_PAYLOAD)) {
      snprintf(why, sizeof why, "a signature payload is larger than %u bytes", MAX_PAYLOAD);
      continue;
    }
    sk_buf_t payload;
    sk_buf_init(&payload);
    char berr[400];
    int brc = pol_registry_blob(r, ld, MAX_PAYLOAD, &payload, berr, sizeof berr);
    if (brc < 0) {
      snprintf(err, errlen, "%s", berr);
      sk_buf_done(&payload);
      rc = brc == SK_EPROTO ? SK_EPERM : brc;
      if (rc != SK_EPERM) goto out;
      snprintf(why, sizeof why, "%.250s", berr);
      continue;
    }
    int verified = 0;
    for (size_t k = 0; k < nkeys && !verified; k++)
      if (pol_sig_verify(keys[k], payload.data, payload.len, sig) == 0) verified = 1;
    if (!verified) {
      snprintf(why, sizeof why, "invalid signature (no signature verifies with the given key%s)", nkeys > 1 ? "s" : "");
    } else {
      char perr[256];
      if (pol_cosign_payload_check(payload.data, payload.len, digest, perr, sizeof perr) < 0) {
        snprintf(why, sizeof why, "%.250s", perr);
      } else {
        sk_buf_done(&payload);
        rc = 0;
        goto out;
      }
    }
    sk_buf_done(&payload);
  }
  snprintf(err, errlen, "no matching signatures: %s", why);
  rc = SK_EPERM;
out:
  json_decref(m);
  return rc;
}

int pol_cosign_sign(pol_registry_t *r, const char *docker_reference, const char *digest, EVP_PKEY *key,
                    char *err, size_t errlen) {
  char *payload = pol_cosign_payload(docker_reference, digest);
  if (!payload) {
    snprintf(err, errlen, "cannot build the signature payload");
    return SK_EINVAL;
  }
  sk_buf_t sig;
  sk_buf_init(&sig);
  json_t *m = NULL, *cfg = NULL;
  char *cfgs = NULL, *ms = NULL;
  int rc = pol_sig_sign(key, payload, strlen(payload), &sig);
  if (rc < 0) {
    snprintf(err, errlen, "signing failed");
    goto out;
  }
  char pdigest[72], cdigest[72], tag[80], sdigest[72];
  if ((rc = pol_registry_push_blob(r, payload, strlen(payload), pdigest, err, errlen)) < 0) goto out;
  /* an existing signature image gets one more layer, as cosign does */
  rc = pol_registry_manifest(r, sig_tag(digest, tag), &m, sdigest, err, errlen);
  if (rc == SK_ENOTFOUND || (rc >= 0 && !json_is_array(json_object_get(m, "layers")))) {
    json_decref(m);
    m = json_pack("{s:i,s:s,s:[]}", "schemaVersion", 2, "mediaType", "application/vnd.oci.image.manifest.v1+json",
                  "layers");
  } else if (rc < 0) {
    goto out;
  }
  json_t *layers = json_object_get(m, "layers");
  size_t i;
  json_t *l;
  json_array_foreach(layers, i, l) {
    if (!strcmp(sk_json_get_str(l, "digest", ""), pdigest) &&
        json_string_value(json_object_get(json_object_get(l, "annotations"), SIG_ANNOTATION)) &&
        !strcmp(json_string_value(json_object_get(json_object_get(l, "annotations"), SIG_ANNOTATION)), sk_buf_cstr(&sig))) {
      rc = 0; /* this very signature is there already */
      goto out;
    }
  }
  json_array_append_new(layers, json_pack("{s:s,s:I,s:s,s:{s:s}}", "mediaType", SIMPLESIGNING_TYPE, "size",
                                          (json_int_t)strlen(payload), "digest", pdigest, "annotations",
                                          SIG_ANNOTATION, sk_buf_cstr(&sig)));
  /* the config: an image config whose rootfs lists the payload layers */
  json_t *diff_ids = json_array();
  json_array_foreach(layers, i, l) json_array_append(diff_ids, json_object_get(l, "digest"));
  cfg = json_pack("{s:s,s:s,s:{},s:{s:s,s:o}}", "architecture", "", "os", "", "config", "rootfs", "type", "layers",
                  "diff_ids", diff_ids);
  cfgs = json_dumps(cfg, JSON_COMPACT);
  if ((rc = pol_registry_push_blob(r, cfgs, strlen(cfgs), cdigest, err, errlen)) < 0) goto out;
  json_object_set_new(m, "config", json_pack("{s:s,s:I,s:s}", "mediaType", "application/vnd.oci.image.config.v1+json",
                                             "size", (json_int_t)strlen(cfgs), "digest", cdigest));
  json_object_set_new(m, "mediaType", json_string("application/vnd.oci.image.manifest.v1+json"));
  ms = json_dumps(m, JSON_COMPACT);
  rc = pol_registry_put_manifest(r, tag, "application/vnd.oci.image.manifest.v1+json", ms, strlen(ms), err, errlen);
out:
  free(payload);
  free(cfgs);
  free(ms);
  json_decref(cfg);
  json_decref(m);
  sk_buf_done(&sig);
  return rc;
}
