/* verifyImages rules: loading, the verified-digest cache, and evaluation
 * (signature checks in validate and mutate, mutateDigest, verifyDigest). */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define POL_MAX_IMAGE_KEYS 16   /* entries per attestor */
#define POL_MAX_ATTESTORS 8
#define POL_MAX_IMAGES 64       /* images verified per resource and rule */

typedef struct attestor {
  EVP_PKEY *keys[POL_MAX_IMAGE_KEYS];
  char fp[POL_MAX_IMAGE_KEYS][24]; /* short sha256 of the DER public key */
  size_t nkeys, count;
} attestor_t;

struct pol_imgrule {
  const json_t *refs, *skip; /* imageReferences / skipImageReferences, borrowed */
  attestor_t att[POL_MAX_ATTESTORS];
  size_t natt;
  int mutate_digest, verify_digest, required;
};

/* ---- loading ---- */

__attribute__((format(printf, 4, 5))) static int ierr(char *err, size_t errlen, const char *where, const char *fmt,
                                                      ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "%s: %s", where, msg);
  return SK_EINVAL;
}

/* A field path for messages ("spec.rules[0].verifyImages[1].attestors[0]");
 * one longer than the buffer is cut and ends in "...". */
__attribute__((format(printf, 3, 4))) static void where_fmt(char *out, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(out, n, fmt, ap);
  va_end(ap);
  if (w >= 0 && (size_t)w >= n && n > 4) memcpy(out + n - 4, "...", 4);
}

static int globs(const json_t *v, const char *where, const char *key, char *err, size_t errlen) {
  if (!v) return 0;
  if (!json_is_array(v) || !json_array_size(v)) return ierr(err, errlen, where, "%s must be a non-empty list", key);
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) if (!json_is_string(e)) return ierr(err, errlen, where, "%s[%zu] must be a string", key, i);
  return 0;
}

static int load_key(attestor_t *a, const char *pem, const char *where, char *err, size_t errlen) {
  if (a->nkeys >= POL_MAX_IMAGE_KEYS) return ierr(err, errlen, where, "more than %d keys", POL_MAX_IMAGE_KEYS);
  char kerr[256];
  EVP_PKEY *k = NULL;
  if (pol_key_parse_public(pem, strlen(pem), &k, kerr, sizeof kerr) < 0) return ierr(err, errlen, where, "%s", kerr);
  unsigned char *der = NULL;
  int dl = i2d_PUBKEY(k, &der);
  char hex[72];
  pol_sha256_hex(der, dl > 0 ? (size_t)dl : 0, hex);
  OPENSSL_free(der);
  snprintf(a->fp[a->nkeys], sizeof a->fp[0], "%.16s", hex + 7);
  a->keys[a->nkeys++] = k;
  return 0;
}

static int load_attestor(attestor_t *a, const json_t *v, const char *where, char *err, size_t errlen) {
  if (!json_is_object(v)) return ierr(err, errlen, where, "must be a mapping");
  json_t *entries = json_object_get(v, "entries");
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)v, k, x) {
    if (strcmp(k, "entries") && strcmp(k, "count"))
      return ierr(err, errlen, where, "%s is not supported by skiff-policy (attestors take count and entries)", k);
  }
  if (!json_is_array(entries) || !json_array_size(entries))
    return ierr(err, errlen, where, "entries must be a non-empty list");
  size_t i;
  json_t *e;
  char sub[300];
  json_array_foreach(entries, i, e) {
    where_fmt(sub, sizeof sub, "%s.entries[%zu]", where, i);
    if (!json_is_object(e)) return ierr(err, errlen, sub, "must be a mapping");
    json_object_foreach(e, k, x) {
      if (strcmp(k, "keys"))
        return ierr(err, errlen, sub, "%s is not supported by skiff-policy (only keys: publicKeys)", k);
    }
    json_t *keys = json_object_get(e, "keys");
    if (!json_is_object(keys)) return ierr(err, errlen, sub, "keys is required (keys.publicKeys: PEM)");
    json_object_foreach(keys, k, x) {
      char ks[340];
      where_fmt(ks, sizeof ks, "%s.keys.%s", sub, k);
      if (!strcmp(k, "publicKeys")) {
        if (!json_is_string(x)) return ierr(err, errlen, ks, "must be a PEM string");
      } else if (!strcmp(k, "signatureAlgorithm")) {
        if (!json_is_string(x) || strcasecmp(json_string_value(x), "sha256"))
          return ierr(err, errlen, ks, "only sha256 is supported");
      } else if (!strcmp(k, "rekor") || !strcmp(k, "ctlog")) {
        const char *flag = !strcmp(k, "rekor") ? "ignoreTlog" : "ignoreSCT";
        if (!json_is_object(x) || !json_is_true(json_object_get(x, flag)))
          return ierr(err, errlen, ks, "transparency logs are not checked by skiff-policy: set %s.%s: true", k, flag);
      } else {
        return ierr(err, errlen, ks, "not supported by skiff-policy (keys.publicKeys only; no KMS or secret refs)");
      }
    }
    const char *pem = json_string_value(json_object_get(keys, "publicKeys"));
    if (!pem) return ierr(err, errlen, sub, "keys.publicKeys is required");
    where_fmt(sub, sizeof sub, "%s.entries[%zu].keys.publicKeys", where, i);
    int rc = load_key(a, pem, sub, err, errlen);
    if (rc < 0) return rc;
  }
  json_t *count = json_object_get(v, "count");
  a->count = a->nkeys;
  if (count) {
    if (!json_is_integer(count) || json_integer_value(count) < 1 || (size_t)json_integer_value(count) > a->nkeys)
      return ierr(err, errlen, where, "count must be between 1 and the number of entries");
    a->count = (size_t)json_integer_value(count);
  }
  return 0;
}

static int load_one(pol_imgrule_t *ir, const json_t *v, const char *where, pol_action_t *action, char *err,
                    size_t errlen) {
  if (!json_is_object(v)) return ierr(err, errlen, where, "must be a mapping");
  ir->mutate_digest = ir->verify_digest = ir->required = 1;
  const char *k;
  json_t *x;
  char sub[300];
  int rc;
  json_object_foreach((json_t *)v, k, x) {
    where_fmt(sub, sizeof sub, "%s.%s", where, k);
    if (!strcmp(k, "imageReferences") || !strcmp(k, "skipImageReferences")) {
      if ((rc = globs(x, where, k, err, errlen)) < 0) return rc;
    } else if (!strcmp(k, "attestors")) {
      if (!json_is_array(x) || !json_array_size(x)) return ierr(err, errlen, sub, "must be a non-empty list");
      if (json_array_size(x) > POL_MAX_ATTESTORS) return ierr(err, errlen, sub, "more than %d attestors", POL_MAX_ATTESTORS);
      size_t i;
      json_t *a;
      json_array_foreach(x, i, a) {
        char as[340];
        snprintf(as, sizeof as, "%s[%zu]", sub, i);
        if ((rc = load_attestor(&ir->att[ir->natt++], a, as, err, errlen)) < 0) return rc;
      }
    } else if (!strcmp(k, "mutateDigest") || !strcmp(k, "verifyDigest") || !strcmp(k, "required") ||
               !strcmp(k, "useCache")) {
      if (!json_is_boolean(x)) return ierr(err, errlen, sub, "must be true or false");
      if (!strcmp(k, "mutateDigest")) ir->mutate_digest = json_is_true(x);
      else if (!strcmp(k, "verifyDigest")) ir->verify_digest = json_is_true(x);
      else if (!strcmp(k, "required")) ir->required = json_is_true(x);
    } else if (!strcmp(k, "type")) {
      if (!json_is_string(x) || strcmp(json_string_value(x), "Cosign"))
        return ierr(err, errlen, sub, "only Cosign signatures are supported");
    } else if (!strcmp(k, "failureAction")) {
      const char *s = json_string_value(x);
      if (s && !strcasecmp(s, "Enforce")) *action = POL_ENFORCE;
      else if (s && !strcasecmp(s, "Audit")) *action = POL_AUDIT;
      else return ierr(err, errlen, sub, "must be Enforce or Audit");
    } else {
      return ierr(err, errlen, sub, "%s is not supported by skiff-policy", k);
    }
  }
  ir->refs = json_object_get(v, "imageReferences");
  ir->skip = json_object_get(v, "skipImageReferences");
  if (!ir->refs) return ierr(err, errlen, where, "imageReferences is required");
  if (!ir->natt) return ierr(err, errlen, where, "attestors is required (keys.publicKeys)");
  return 0;
}

void pol_imgrules_free(pol_rule_t *rule) {
  for (size_t i = 0; i < rule->nimages; i++)
    for (size_t j = 0; j < rule->images[i].natt; j++)
      for (size_t k = 0; k < rule->images[i].att[j].nkeys; k++) EVP_PKEY_free(rule->images[i].att[j].keys[k]);
  free(rule->images);
  rule->images = NULL;
  rule->nimages = 0;
}

int pol_imgrules_load(pol_rule_t *rule, const json_t *list, const char *where, char *err, size_t errlen) {
  if (!json_is_array(list) || !json_array_size(list)) return ierr(err, errlen, where, "must be a non-empty list");
  if (json_array_size(list) > 64) return ierr(err, errlen, where, "more than 64 entries");
  rule->images = sk_xcalloc(json_array_size(list), sizeof *rule->images);
  size_t i;
  json_t *v;
  json_array_foreach(list, i, v) {
    char sub[300];
    where_fmt(sub, sizeof sub, "%s[%zu]", where, i);
    rule->nimages++;
    int rc = load_one(&rule->images[i], v, sub, &rule->action, err, errlen);
    if (rc < 0) return rc;
  }
  return 0;
}

/* ---- the verifier and its cache ---- */

typedef struct cache_ent {
  uint64_t hash, expires;
  char *key;
  char digest[72];
} cache_ent_t;

struct pol_images {
  pol_registry_opts_t opts;
  char **insecure;
  char *ca_file, *username, *password;
  uint64_t ttl_ns;
  size_t max;
  pthread_mutex_t mu;
  cache_ent_t *ents;
  size_t n;
};

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static char *dup_or_null(const char *s) { return s && *s ? sk_xstrdup(s) : NULL; }

int pol_images_new(const pol_registry_opts_t *o, uint64_t ttl_ms, size_t max_entries, pol_images_t **out) {
  pol_images_t *v = sk_xcalloc(1, sizeof *v);
  if (o) {
    v->opts = *o;
    if (o->ninsecure) v->insecure = sk_xcalloc(o->ninsecure, sizeof *v->insecure);
    for (size_t i = 0; i < o->ninsecure; i++) v->insecure[i] = sk_xstrdup(o->insecure[i]);
    v->opts.insecure = (const char *const *)v->insecure;
    v->opts.ca_file = v->ca_file = dup_or_null(o->ca_file);
    v->opts.username = v->username = dup_or_null(o->username);
    v->opts.password = v->password = dup_or_null(o->password);
    v->opts.tls = NULL;
  }
  v->ttl_ns = (ttl_ms ? ttl_ms : 300000) * 1000000ull;
  v->max = max_entries ? max_entries : 4096;
  pthread_mutex_init(&v->mu, NULL);
  *out = v;
  return 0;
}

void pol_images_free(pol_images_t *v) {
  if (!v) return;
  for (size_t i = 0; i < v->opts.ninsecure; i++) free(v->insecure[i]);
  free(v->insecure);
  free(v->ca_file);
  free(v->username);
  if (v->password) memset(v->password, 0, strlen(v->password));
  free(v->password);
  for (size_t i = 0; i < v->n; i++) free(v->ents[i].key);
  free(v->ents);
  pthread_mutex_destroy(&v->mu);
  free(v);
}

static int cache_get(pol_images_t *v, const char *key, char digest[72]) {
  uint64_t h = fnv(key), now = uv_hrtime();
  int hit = 0;
  pthread_mutex_lock(&v->mu);
  for (size_t i = 0; i < v->n; i++) {
    cache_ent_t *e = &v->ents[i];
    if (e->hash == h && !strcmp(e->key, key)) {
      if (e->expires > now) {
        memcpy(digest, e->digest, 72);
        hit = 1;
      }
      break;
    }
  }
  pthread_mutex_unlock(&v->mu);
  return hit;
}

static void cache_put(pol_images_t *v, const char *key, const char *digest) {
  uint64_t h = fnv(key), now = uv_hrtime();
  pthread_mutex_lock(&v->mu);
  cache_ent_t *slot = NULL;
  for (size_t i = 0; i < v->n && !slot; i++)
    if (v->ents[i].hash == h && !strcmp(v->ents[i].key, key)) slot = &v->ents[i];
  if (!slot && v->n >= v->max) {
    /* drop expired entries, then the one closest to expiry */
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++) {
      if (v->ents[i].expires <= now) free(v->ents[i].key);
      else v->ents[w++] = v->ents[i];
    }
    v->n = w;
    if (v->n >= v->max) {
      size_t oldest = 0;
      for (size_t i = 1; i < v->n; i++)
        if (v->ents[i].expires < v->ents[oldest].expires) oldest = i;
      free(v->ents[oldest].key);
      v->ents[oldest] = v->ents[--v->n];
    }
  }
  if (!slot) {
    if (!v->ents) v->ents = sk_xcalloc(v->max, sizeof *v->ents);
    slot = &v->ents[v->n++];
    slot->key = sk_xstrdup(key);
    slot->hash = h;
  }
  snprintf(slot->digest, sizeof slot->digest, "%s", digest);
  slot->expires = now + v->ttl_ns;
  pthread_mutex_unlock(&v->mu);
}

/* 0 verified (digest set); SK_EPERM verification failed; other codes are
 * registry errors. why names the reason. */
static int verify_image(pol_images_t *v, const pol_imgrule_t *ir, const char *image, char digest[72], char *why,
                        size_t whylen) {
  pol_imgref_t ref;
  int rc = pol_imgref_parse(image, &ref, why, whylen);
  if (rc < 0) return SK_EPERM;
  pol_registry_t *r = NULL;
  char key[1400];
  if (ref.digest[0]) {
    memcpy(digest, ref.digest, 72);
  } else {
    snprintf(key, sizeof key, "T|%s/%s:%s", ref.registry, ref.repo, ref.tag);
    if (!cache_get(v, key, digest)) {
      if ((rc = pol_registry_open(&v->opts, &ref, 0, &r, why, whylen)) < 0) goto out;
      json_t *m = NULL;
      rc = pol_registry_manifest(r, ref.tag, &m, digest, why, whylen);
      json_decref(m);
      if (rc == SK_ENOTFOUND) rc = SK_EPERM;
      if (rc < 0) goto out;
      cache_put(v, key, digest);
    }
  }
  for (size_t a = 0; a < ir->natt; a++) {
    const attestor_t *at = &ir->att[a];
    size_t ok = 0;
    char last[400] = "";
    for (size_t k = 0; k < at->nkeys && ok < at->count; k++) {
      char dummy[72];
      snprintf(key, sizeof key, "V|%s/%s@%s|%s", ref.registry, ref.repo, digest, at->fp[k]);
      if (cache_get(v, key, dummy)) {
        ok++;
        continue;
      }
      if (!r && (rc = pol_registry_open(&v->opts, &ref, 0, &r, why, whylen)) < 0) goto out;
      rc = pol_cosign_verify(r, digest, &at->keys[k], 1, last, sizeof last);
      if (rc == 0) {
        cache_put(v, key, digest);
        ok++;
      } else if (rc != SK_EPERM) {
        snprintf(why, whylen, "%s", last);
        goto out;
      }
    }
    if (ok < at->count) {
      if (at->count > 1 || ir->natt > 1)
        snprintf(why, whylen, "attestor %zu: %zu of %zu required signatures verified: %s", a, ok, at->count, last);
      else snprintf(why, whylen, "%s", last);
      rc = SK_EPERM;
      goto out;
    }
  }
  rc = 0;
out:
  pol_registry_close(r);
  return rc;
}

/* ---- evaluation ---- */

static int ref_match(const json_t *list, const char *image, const pol_imgref_t *ref) {
  char full[1200];
  snprintf(full, sizeof full, "%s/%s%s%s%s%s", ref->registry, ref->repo, ref->tag[0] ? ":" : "", ref->tag,
           ref->digest[0] ? "@" : "", ref->digest);
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e) {
    const char *g = json_string_value(e);
    if (g && (pol_wildcard(g, image) || pol_wildcard(g, full))) return 1;
  }
  return 0;
}

/* The pod spec of a Pod, a pod controller (spec.template.spec) or a CronJob. */
static json_t *pod_spec(json_t *obj, const char *kind) {
  json_t *spec = json_object_get(obj, "spec"), *s;
  if (!json_is_object(spec)) return NULL;
  if (!strcmp(kind, "Pod")) return spec;
  s = sk_json_get(spec, !strcmp(kind, "CronJob") ? "jobTemplate.spec.template.spec" : "template.spec");
  return json_is_object(s) ? s : NULL;
}

void pol_imgrule_eval(const pol_set_t *s, const pol_policy_t *p, const pol_rule_t *rule, json_t *obj, const char *kind,
                      int mutate, pol_report_t *out, int *changed) {
  static const char *const lists[] = {"containers", "initContainers", "ephemeralContainers"};
  json_t *spec = json_is_object(obj) ? pod_spec(obj, kind) : NULL;
  sk_buf_t fails, passed;
  sk_buf_init(&fails);
  sk_buf_init(&passed);
  int failed = 0, errored = 0, nmatched = 0, soft = 1;
  for (size_t l = 0; spec && l < 3; l++) {
    json_t *cs = json_object_get(spec, lists[l]);
    size_t i;
    json_t *c;
    json_array_foreach(cs, i, c) {
      json_t *imgv = json_object_get(c, "image");
      const char *image = json_string_value(imgv);
      if (!image) continue;
      for (size_t k = 0; k < rule->nimages; k++) {
        const pol_imgrule_t *ir = &rule->images[k];
        pol_imgref_t ref;
        char why[512];
        int parsed = pol_imgref_parse(image, &ref, why, sizeof why) == 0;
        if (parsed ? !ref_match(ir->refs, image, &ref) : !ref_match(ir->refs, image, &(pol_imgref_t){0})) continue;
        if (parsed && ir->skip && ref_match(ir->skip, image, &ref)) continue;
        if (++nmatched > POL_MAX_IMAGES) break;
        if (ir->required) soft = 0;
        char digest[72] = "";
        int rc;
        if (!s->images) {
          rc = SK_EINVAL;
          snprintf(why, sizeof why, "image verification is not configured (no registry access)");
        } else {
          rc = verify_image(s->images, ir, image, digest, why, sizeof why);
        }
        if (rc == 0 && !mutate && ir->verify_digest && !ref.digest[0]) {
          rc = SK_EPERM;
          snprintf(why, sizeof why, "missing digest (verifyDigest: the image must be referenced by digest)");
        }
        if (rc < 0) {
          if (rc == SK_EPERM) failed++;
          else errored++;
          sk_buf_printf(&fails, "%simage verification failed for %s: %s", fails.len ? "; " : "", image, why);
          break;
        }
        sk_buf_printf(&passed, "%s%s", passed.len ? ", " : "", image);
        if (mutate && ir->mutate_digest && !ref.digest[0]) {
          char *at = strchr(image, '@');
          size_t base = at ? (size_t)(at - image) : strlen(image);
          char *ni = sk_xmalloc(base + 73);
          memcpy(ni, image, base);
          ni[base] = '@';
          memcpy(ni + base + 1, digest, 72);
          json_object_set_new(c, "image", json_string(ni));
          free(ni);
          if (changed) *changed = 1;
        }
        break;
      }
    }
  }
  if (!nmatched) {
    pol_add_result(out, p, rule, POL_SKIP, rule->action, "no image matched imageReferences");
  } else if (nmatched > POL_MAX_IMAGES) {
    pol_add_result(out, p, rule, POL_ERROR, rule->action, "more than %d images to verify", POL_MAX_IMAGES);
  } else if (failed || errored) {
    pol_action_t act = soft ? POL_AUDIT : rule->action;
    pol_status_t st = failed ? POL_FAIL : POL_ERROR;
    if (!failed && p->ignore_errors) act = POL_AUDIT; /* failurePolicy: Ignore */
    pol_add_result(out, p, rule, st, act, "%s", sk_buf_cstr(&fails));
  } else {
    pol_add_result(out, p, rule, POL_PASS, rule->action, "verified image signatures for %s", sk_buf_cstr(&passed));
  }
  sk_buf_done(&fails);
  sk_buf_done(&passed);
}
