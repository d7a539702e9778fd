/* skiff sign / skiff verify: cosign-compatible image signatures with a key
 * pair (ECDSA P-256), stored in the image's registry. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"
#include "skiff/err.h"

#define KEY_MAX_BYTES (64u * 1024)

static int read_small(const char *path, sk_buf_t *b, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return SK_ENOENT;
  }
  char chunk[4096];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b->len + n > KEY_MAX_BYTES) {
      snprintf(err, errlen, "%s: larger than %u bytes", path, KEY_MAX_BYTES);
      rc = SK_ELIMIT;
      break;
    }
    sk_buf_append(b, chunk, n);
  }
  fclose(f);
  sk_buf_cstr(b);
  return rc;
}

typedef struct sign_opts {
  const char *key, *image, *prefix, *ca;
  int generate, insecure;
  pol_registry_opts_t reg;
  const char *insecure_list[1];
} sign_opts_t;

static int parse_args(const char *verb, int argc, char **argv, sign_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->prefix = "cosign";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--key") && i + 1 < argc) o->key = argv[++i];
    else if (!strncmp(a, "--key=", 6)) o->key = a + 6;
    else if (!strcmp(a, "--generate-key") && !strcmp(verb, "sign")) o->generate = 1;
    else if (!strcmp(a, "--output-key-prefix") && i + 1 < argc) o->prefix = argv[++i];
    else if (!strcmp(a, "--allow-insecure-registry") || !strcmp(a, "--allow-http-registry")) o->insecure = 1;
    else if (!strcmp(a, "--ca") && i + 1 < argc) o->ca = argv[++i];
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 1;
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "Error: skiff %s: unknown option '%s'\n", verb, a);
      return -1;
    } else if (!o->image) o->image = a;
    else {
      fprintf(stderr, "Error: skiff %s: one image at a time ('%s' is extra)\n", verb, a);
      return -1;
    }
  }
  return 0;
}

static void usage(const char *verb, FILE *f) {
  if (!strcmp(verb, "sign"))
    fprintf(f, "usage: skiff sign --key cosign.key [--allow-insecure-registry] [--ca FILE] IMAGE\n"
               "       skiff sign --generate-key [--output-key-prefix cosign]   (writes cosign.key, cosign.pub)\n"
               "Signs the image's manifest digest and pushes the signature to <repo>:sha256-<hex>.sig,\n"
               "as cosign does. Keys: unencrypted PEM EC P-256 (encrypted cosign keys are not supported).\n"
               "Registry credentials: SKIFF_REGISTRY_USERNAME / SKIFF_REGISTRY_PASSWORD.\n");
  else
    fprintf(f, "usage: skiff verify --key cosign.pub [--allow-insecure-registry] [--ca FILE] IMAGE\n"
               "Checks that a signature of the image's digest verifies with the public key.\n"
               "Exit status: 0 verified, 1 not verified or registry error, 2 usage.\n");
}

/* Registry options from flags and the environment; image parsed into ref. */
static int setup(sign_opts_t *o, pol_imgref_t *ref) {
  char err[512];
  if (pol_imgref_parse(o->image, ref, err, sizeof err) < 0) {
    fprintf(stderr, "Error: %s\n", err);
    return -1;
  }
  o->reg.ca_file = o->ca;
  o->reg.username = getenv("SKIFF_REGISTRY_USERNAME");
  o->reg.password = getenv("SKIFF_REGISTRY_PASSWORD");
  if (o->insecure) {
    o->insecure_list[0] = ref->registry;
    o->reg.insecure = o->insecure_list;
    o->reg.ninsecure = 1;
  }
  return 0;
}

/* The digest the image reference points at. */
static int resolve(pol_registry_t *r, const pol_imgref_t *ref, char digest[72], char *err, size_t errlen) {
  json_t *m = NULL;
  int rc = pol_registry_manifest(r, ref->digest[0] ? ref->digest : ref->tag, &m, digest, err, errlen);
  json_decref(m);
  return rc;
}

/* The key in o->key (private to sign, public to verify), then the registry
 * of the image and the digest the reference points at (doing: "signing" or
 * "verifying", for the messages). 0, or -1 with the problem printed. */
static int key_and_digest(sign_opts_t *o, pol_imgref_t *ref, int sign, const char *doing,
                          EVP_PKEY **key, pol_registry_t **r, char digest[72]) {
  char err[1024];
  sk_buf_t pem;
  sk_buf_init(&pem);
  int rc = -1;
  if (read_small(o->key, &pem, err, sizeof err) < 0) {
    fprintf(stderr, "Error: %s\n", err);
    goto out;
  }
  if ((sign ? pol_key_parse_private : pol_key_parse_public)(pem.data, pem.len, key, err,
                                                           sizeof err) < 0) {
    fprintf(stderr, "Error: %s: %s\n", o->key, err);
    goto out;
  }
  if (pol_registry_open(&o->reg, ref, sign, r, err, sizeof err) < 0 ||
      resolve(*r, ref, digest, err, sizeof err) < 0) {
    fprintf(stderr, "Error: %s %s: %s\n", doing, o->image, err);
    goto out;
  }
  rc = 0;
out:
  sk_buf_done(&pem);
  return rc;
}

int pol_cli_sign(int argc, char **argv) {
  sign_opts_t o;
  int rc = parse_args("sign", argc, argv, &o);
  if (rc) {
    usage("sign", rc > 0 ? stdout : stderr);
    return rc > 0 ? 0 : 2;
  }
  char err[1024];
  if (o.generate) {
    char priv[4096], pub[4096];
    snprintf(priv, sizeof priv, "%s.key", o.prefix);
    snprintf(pub, sizeof pub, "%s.pub", o.prefix);
    if (pol_key_generate(priv, pub, err, sizeof err) < 0) {
      fprintf(stderr, "Error: %s\n", err);
      return 1;
    }
    printf("Private key written to %s\nPublic key written to %s\n", priv, pub);
    return 0;
  }
  if (!o.key || !o.image) {
    usage("sign", stderr);
    return 2;
  }
  pol_imgref_t ref;
  if (setup(&o, &ref) < 0) return 2;
  EVP_PKEY *key = NULL;
  pol_registry_t *r = NULL;
  rc = 1;
  char digest[72], docker_ref[800];
  if (key_and_digest(&o, &ref, 1, "signing", &key, &r, digest) < 0) goto out;
  if (!ref.digest[0])
    fprintf(stderr, "WARNING: Image reference %s uses a tag, not a digest; signing %s, the digest it points at now.\n",
            o.image, digest);
  snprintf(docker_ref, sizeof docker_ref, "%s/%s", ref.registry, ref.repo);
  if (pol_cosign_sign(r, docker_ref, digest, key, err, sizeof err) < 0) {
    fprintf(stderr, "Error: signing %s: %s\n", o.image, err);
    goto out;
  }
  printf("Pushing signature to: %s/%s:sha256-%s.sig\n", ref.registry, ref.repo, digest + 7);
  rc = 0;
out:
  pol_registry_close(r);
  EVP_PKEY_free(key);
  return rc;
}

int pol_cli_verify(int argc, char **argv) {
  sign_opts_t o;
  int rc = parse_args("verify", argc, argv, &o);
  if (rc) {
    usage("verify", rc > 0 ? stdout : stderr);
    return rc > 0 ? 0 : 2;
  }
  if (!o.key || !o.image) {
    usage("verify", stderr);
    return 2;
  }
  pol_imgref_t ref;
  if (setup(&o, &ref) < 0) return 2;
  char err[1024];
  EVP_PKEY *key = NULL;
  pol_registry_t *r = NULL;
  rc = 1;
  char digest[72];
  if (key_and_digest(&o, &ref, 0, "verifying", &key, &r, digest) < 0) goto out;
  if (pol_cosign_verify(r, digest, &key, 1, err, sizeof err) < 0) {
    fprintf(stderr, "Error: verifying %s: %s\n", o.image, err);
    goto out;
  }
  printf("\nVerification for %s/%s@%s --\n"
         "The following checks were performed on each of these signatures:\n"
         "  - The cosign claims were validated\n"
         "  - The signatures were verified against the specified public key\n",
         ref.registry, ref.repo, digest);
  rc = 0;
out:
  pol_registry_close(r);
  EVP_PKEY_free(key);
  return rc;
}
