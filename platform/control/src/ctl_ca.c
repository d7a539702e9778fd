/* ctl_ca.c - skiff-control's CA: root + intermediate (ECDSA P-256) in the
 * state directory, SPIFFE identities, CSR checks, leaf issuance, join
 * tokens and the /api/v1/ca endpoints. The client side (renewal) is the
 * runtime's identity module (skiff/ident.h). */
#include "ctl_ca.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ctl_audit.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define MAX_SANS 32
#define MAX_DNS_SUFFIXES 32

struct ctl_ca {
  char *dir;          /* <state_dir>/ca */
  char *trust_domain;
  char *bundle_path;
  char *bundle_pem;
  sk_store_t *store;
  ctl_backend_t *be; /* non-NULL: join tokens through the backend's ops */
  X509 *root, *inter;
  EVP_PKEY *root_key, *inter_key;
  char *inter_pem;
  int64_t leaf_ttl_s, max_leaf_ttl_s, root_ttl_s, inter_ttl_s;
  size_t max_csr_bytes;
  char *dns_suffixes[MAX_DNS_SUFFIXES];
  size_t ndns_suffixes;
  int allow_ip_sans;
};

#define seterr ctl__seterr

static const char *ossl_reason(void) {
  static __thread char buf[160];
  unsigned long e = ERR_peek_last_error();
  if (!e) return "unknown OpenSSL error";
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

/* ---------------- SPIFFE IDs ---------------- */

static const char *const kinds[] = {"daemon", "proxy", "workload", "client"};

static int seg_ok(const char *s, size_t l, size_t max, int allow_upper_dot) {
  if (l == 0 || l > max) return 0;
  if (allow_upper_dot && ((l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.')))
    return 0;
  for (size_t i = 0; i < l; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') continue;
    if (allow_upper_dot && ((c >= 'A' && c <= 'Z') || c == '.' || c == '_')) continue;
    return 0;
  }
  return 1;
}

static int trust_domain_ok(const char *td) {
  size_t l = td ? strlen(td) : 0;
  if (l == 0 || l > 255 || td[0] == '.' || td[0] == '-' || td[l - 1] == '.') return 0;
  for (size_t i = 0; i < l; i++) {
    unsigned char c = (unsigned char)td[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return 0;
    if (c == '.' && td[i + 1] == '.') return 0;
  }
  return 1;
}

int ctl_spiffe_parse(const char *id, const char *trust_domain, ctl_spiffe_t *out, char *err,
                     size_t errlen) {
  static const char scheme[] = "spiffe://";
  if (!id || strlen(id) >= CTL_SPIFFE_MAX) {
    seterr(err, errlen, "SPIFFE ID missing or longer than %d bytes", CTL_SPIFFE_MAX - 1);
    return SK_EINVAL;
  }
  if (strncmp(id, scheme, sizeof scheme - 1) != 0) {
    seterr(err, errlen, "SPIFFE ID %s: must start with spiffe://", id);
    return SK_EINVAL;
  }
  const char *p = id + sizeof scheme - 1;
  const char *slash = strchr(p, '/');
  size_t tdl = slash ? (size_t)(slash - p) : strlen(p);
  if (!trust_domain || strlen(trust_domain) != tdl || strncmp(p, trust_domain, tdl) != 0) {
    seterr(err, errlen, "SPIFFE ID %s: trust domain must be %s", id,
           trust_domain ? trust_domain : "(none)");
    return SK_EINVAL;
  }
  /* /region/<r>/<kind>/<name> */
  const char *segs[5];
  size_t lens[5];
  int n = 0;
  const char *s = slash;
  while (s && *s == '/' && n < 5) {
    const char *b = s + 1;
    const char *e = strchr(b, '/');
    segs[n] = b;
    lens[n] = e ? (size_t)(e - b) : strlen(b);
    n++;
    s = e;
  }
  if (n != 4 || s) {
    seterr(err, errlen, "SPIFFE ID %s: expected spiffe://%s/region/<region>/<kind>/<name>", id,
           trust_domain);
    return SK_EINVAL;
  }
  if (lens[0] != 6 || strncmp(segs[0], "region", 6) != 0) {
    seterr(err, errlen, "SPIFFE ID %s: path must start with /region/", id);
    return SK_EINVAL;
  }
  if (!seg_ok(segs[1], lens[1], 63, 0)) {
    seterr(err, errlen, "SPIFFE ID %s: region must be 1..63 of [a-z0-9-]", id);
    return SK_EINVAL;
  }
  int kind_ok = 0;
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
    if (strlen(kinds[i]) == lens[2] && !strncmp(kinds[i], segs[2], lens[2])) kind_ok = 1;
  if (!kind_ok) {
    seterr(err, errlen, "SPIFFE ID %s: kind must be daemon, proxy, workload or client", id);
    return SK_EINVAL;
  }
  if (!seg_ok(segs[3], lens[3], 128, 1)) {
    seterr(err, errlen, "SPIFFE ID %s: name must be 1..128 of [A-Za-z0-9._-]", id);
    return SK_EINVAL;
  }
  if (out) {
    snprintf(out->region, sizeof out->region, "%.*s", (int)lens[1], segs[1]);
    snprintf(out->kind, sizeof out->kind, "%.*s", (int)lens[2], segs[2]);
    snprintf(out->name, sizeof out->name, "%.*s", (int)lens[3], segs[3]);
  }
  return 0;
}

int ctl_spiffe_format(const char *trust_domain, const char *region, const char *kind,
                      const char *name, char *out, size_t outlen) {
  if (!trust_domain || !region || !kind || !name || !out) return SK_EINVAL;
  int n = snprintf(out, outlen, "spiffe://%s/region/%s/%s/%s", trust_domain, region, kind, name);
  if (n < 0 || (size_t)n >= outlen) return SK_E2BIG;
  return ctl_spiffe_parse(out, trust_domain, NULL, NULL, 0) < 0 ? SK_EINVAL : n;
}

/* ---------------- small X509 helpers ---------------- */

static char *pem_of_cert(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  if (!b) return NULL;
  char *out = NULL;
  if (PEM_write_bio_X509(b, x) == 1) {
    char *data;
    long n = BIO_get_mem_data(b, &data);
    out = sk_xstrndup(data, (size_t)n);
  }
  BIO_free(b);
  return out;
}

static char *pem_of_key(EVP_PKEY *k) {
  BIO *b = BIO_new(BIO_s_mem());
  if (!b) return NULL;
  char *out = NULL;
  if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
    char *data;
    long n = BIO_get_mem_data(b, &data);
    out = sk_xstrndup(data, (size_t)n);
  }
  BIO_free(b);
  return out;
}

static int set_random_serial(X509 *x, char *hex_out, size_t hexlen) {
  unsigned char r[16];
  int rc = SK_ETLS;
  BIGNUM *bn = NULL;
  do {
    if (RAND_bytes(r, sizeof r) != 1) return SK_EIO;
    r[0] &= 0x7f; /* positive, 128 bits of which 127 random */
  } while (!(r[0] | r[1] | r[2] | r[3]));
  bn = BN_bin2bn(r, sizeof r, NULL);
  if (!bn) goto out;
  ASN1_INTEGER *ai = X509_get_serialNumber(x);
  if (!BN_to_ASN1_INTEGER(bn, ai)) goto out;
  if (hex_out) {
    char *h = BN_bn2hex(bn);
    if (!h) goto out;
    snprintf(hex_out, hexlen, "%s", h);
    for (char *c = hex_out; *c; c++) *c = (char)tolower((unsigned char)*c);
    OPENSSL_free(h);
  }
  rc = 0;
out:
  BN_free(bn);
  return rc;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!e) return SK_ETLS;
  int ok = X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  return ok ? 0 : SK_ETLS;
}

static int64_t asn1_time_unix(const ASN1_TIME *t) {
  struct tm tm;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return (int64_t)timegm(&tm);
}

static X509_NAME *make_name(const char *cn, const char *ou) {
  X509_NAME *n = X509_NAME_new();
  if (!n) return NULL;
  X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Skiff", -1, -1, 0);
  if (ou) X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)ou, -1, -1, 0);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
  return n;
}

/* A CA certificate: self-signed when issuer == NULL. */
static int make_ca_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                        int64_t ttl_s, int pathlen, X509 **out) {
  int rc = SK_ETLS;
  X509 *x = X509_new();
  X509_NAME *name = make_name(cn, NULL);
  if (!x || !name) goto out;
  if (!X509_set_version(x, 2)) goto out;
  if ((rc = set_random_serial(x, NULL, 0)) < 0) goto out;
  rc = SK_ETLS;
  if (!X509_set_subject_name(x, name)) goto out;
  if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name)) goto out;
  time_t now = time(NULL);
  if (!ASN1_TIME_set(X509_getm_notBefore(x), now - 300)) goto out;
  if (!ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)ttl_s)) goto out;
  if (!X509_set_pubkey(x, key)) goto out;
  char bc[48];
  snprintf(bc, sizeof bc, pathlen >= 0 ? "critical,CA:TRUE,pathlen:%d" : "critical,CA:TRUE",
           pathlen);
  if (add_ext(x, issuer, NID_basic_constraints, bc) < 0) goto out;
  if (add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") < 0) goto out;
  if (add_ext(x, issuer, NID_subject_key_identifier, "hash") < 0) goto out;
  if (issuer && add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") < 0) goto out;
  if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) goto out;
  *out = x;
  x = NULL;
  rc = 0;
out:
  X509_NAME_free(name);
  X509_free(x);
  return rc;
}

/* ---------------- files ---------------- */

static int read_file(const char *path, size_t max, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return sk_err_from_errno(errno);
  char *buf = sk_xmalloc(max + 1);
  size_t n = fread(buf, 1, max + 1, f);
  int ferr = ferror(f);
  fclose(f);
  if (ferr) {
    free(buf);
    return SK_EIO;
  }
  if (n > max) {
    free(buf);
    return SK_E2BIG;
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return 0;
}

static void *pem_x509(BIO *b) { return PEM_read_bio_X509(b, NULL, NULL, NULL); }
static void *pem_key(BIO *b) { return PEM_read_bio_PrivateKey(b, NULL, NULL, NULL); }

/* Reads path (at most 64 KiB) and parses it with parse; a secret file's
 * bytes are wiped before they are freed. */
static int load_pem(const char *path, void *(*parse)(BIO *), const char *what, int secret,
                    void **out, char *err, size_t errlen) {
  char *pem = NULL;
  size_t len = 0;
  int rc = read_file(path, 1 << 16, &pem, &len);
  if (rc < 0) {
    seterr(err, errlen, "%s: %s", path, sk_strerror(rc));
    return rc;
  }
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  void *x = b ? parse(b) : NULL;
  BIO_free(b);
  if (secret) OPENSSL_cleanse(pem, len);
  free(pem);
  if (!x) {
    seterr(err, errlen, "%s: not a PEM %s (%s)", path, what, ossl_reason());
    return SK_EPARSE;
  }
  *out = x;
  return 0;
}

static int load_cert(const char *path, X509 **out, char *err, size_t errlen) {
  void *x = NULL;
  int rc = load_pem(path, pem_x509, "certificate", 0, &x, err, errlen);
  if (rc == 0) *out = x;
  return rc;
}

static int load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) < 0) {
    int rc = sk_err_from_errno(errno);
    seterr(err, errlen, "%s: %s", path, strerror(errno));
    return rc;
  }
  if (st.st_mode & 077) {
    seterr(err, errlen, "%s: private key is accessible by group or others (mode %03o); chmod 600",
           path, (unsigned)(st.st_mode & 0777));
    return SK_EACCES;
  }
  void *k = NULL;
  int rc = load_pem(path, pem_key, "private key", 1, &k, err, errlen);
  if (rc == 0) *out = k;
  return rc;
}

/* A certificate and the private key that goes with it. */
static int load_pair(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key,
                     char *err, size_t errlen) {
  int rc;
  if ((rc = load_cert(cert_path, cert, err, errlen)) < 0) return rc;
  if ((rc = load_key(key_path, key, err, errlen)) < 0) return rc;
  if (X509_check_private_key(*cert, *key) != 1) {
    ERR_clear_error();
    seterr(err, errlen, "%s does not match %s", key_path, cert_path);
    return SK_ETLS;
  }
  return 0;
}

static int save_pair(const ctl_ca_t *ca, const char *base, X509 *x, EVP_PKEY *k, char *err,
                     size_t errlen) {
  char path[PATH_MAX];
  int rc = SK_ENOMEM;
  char *cp = pem_of_cert(x), *kp = pem_of_key(k);
  if (!cp || !kp) goto out;
  snprintf(path, sizeof path, "%s/%s.key", ca->dir, base);
  rc = ctl__write_file_atomic(path, kp, strlen(kp), 0600, err, errlen);
  if (rc < 0) goto out;
  snprintf(path, sizeof path, "%s/%s.pem", ca->dir, base);
  rc = ctl__write_file_atomic(path, cp, strlen(cp), 0644, err, errlen);
out:
  free(cp);
  if (kp) OPENSSL_cleanse(kp, strlen(kp));
  free(kp);
  return rc;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* ---------------- open ---------------- */

static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS ctl_join_tokens ("
    " hash BLOB PRIMARY KEY,"
    " spiffe_id TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " expires INTEGER NOT NULL,"
    " uses_left INTEGER NOT NULL)",
};

static int ca_load_or_create(ctl_ca_t *ca, char *err, size_t errlen) {
  char rp[PATH_MAX], rk[PATH_MAX], ip[PATH_MAX], ik[PATH_MAX];
  snprintf(rp, sizeof rp, "%s/root.pem", ca->dir);
  snprintf(rk, sizeof rk, "%s/root.key", ca->dir);
  snprintf(ip, sizeof ip, "%s/intermediate.pem", ca->dir);
  snprintf(ik, sizeof ik, "%s/intermediate.key", ca->dir);
  int rc;
  char cn[300];
  if (file_exists(rp) || file_exists(rk)) {
    if ((rc = load_pair(rp, rk, &ca->root, &ca->root_key, err, errlen)) < 0) return rc;
  } else {
    ca->root_key = EVP_EC_gen("P-256");
    if (!ca->root_key) {
      seterr(err, errlen, "root key: %s", ossl_reason());
      return SK_ETLS;
    }
    snprintf(cn, sizeof cn, "Skiff Root CA %s", ca->trust_domain);
    if ((rc = make_ca_cert(cn, ca->root_key, NULL, NULL, ca->root_ttl_s, 1, &ca->root)) < 0) {
      seterr(err, errlen, "root certificate: %s", ossl_reason());
      return rc;
    }
    if ((rc = save_pair(ca, "root", ca->root, ca->root_key, err, errlen)) < 0) return rc;
  }
  int renew_inter = 1;
  if (file_exists(ip) || file_exists(ik)) {
    if ((rc = load_pair(ip, ik, &ca->inter, &ca->inter_key, err, errlen)) < 0) return rc;
    EVP_PKEY *rpub = X509_get0_pubkey(ca->root);
    if (X509_verify(ca->inter, rpub) != 1) {
      ERR_clear_error();
      seterr(err, errlen, "%s is not signed by %s", ip, rp);
      return SK_ETLS;
    }
    int64_t nb = asn1_time_unix(X509_get0_notBefore(ca->inter));
    int64_t na = asn1_time_unix(X509_get0_notAfter(ca->inter));
    renew_inter = ctl__now_s() > na - (na - nb) / 10;
  }
  if (renew_inter) {
    X509_free(ca->inter);
    ca->inter = NULL;
    EVP_PKEY_free(ca->inter_key);
    ca->inter_key = EVP_EC_gen("P-256");
    if (!ca->inter_key) {
      seterr(err, errlen, "intermediate key: %s", ossl_reason());
      return SK_ETLS;
    }
    int64_t ttl = ca->inter_ttl_s;
    int64_t root_left = asn1_time_unix(X509_get0_notAfter(ca->root)) - ctl__now_s();
    if (ttl > root_left) ttl = root_left;
    if (ttl <= 3600) {
      seterr(err, errlen, "%s expires within the hour: replace the CA", rp);
      return SK_ETLS;
    }
    snprintf(cn, sizeof cn, "Skiff Intermediate CA %s", ca->trust_domain);
    if ((rc = make_ca_cert(cn, ca->inter_key, ca->root, ca->root_key, ttl, 0, &ca->inter)) < 0) {
      seterr(err, errlen, "intermediate certificate: %s", ossl_reason());
      return rc;
    }
    if ((rc = save_pair(ca, "intermediate", ca->inter, ca->inter_key, err, errlen)) < 0)
      return rc;
  }
  ca->bundle_pem = pem_of_cert(ca->root);
  ca->inter_pem = pem_of_cert(ca->inter);
  if (!ca->bundle_pem || !ca->inter_pem) return SK_ENOMEM;
  char bp[PATH_MAX];
  snprintf(bp, sizeof bp, "%s/bundle.pem", ca->dir);
  ca->bundle_path = sk_xstrdup(bp);
  /* rewritten each start so it always matches root.pem */
  return ctl__write_file_atomic(bp, ca->bundle_pem, strlen(ca->bundle_pem), 0644, err, errlen);
}

int ctl_ca_open(const ctl_ca_opts_t *o, ctl_ca_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!o || !o->state_dir || !*o->state_dir) {
    seterr(err, errlen, "ca: state_dir is required");
    return SK_EINVAL;
  }
  const char *td = o->trust_domain ? o->trust_domain : "skiff.local";
  if (!trust_domain_ok(td)) {
    seterr(err, errlen, "ca: trust domain %s: 1..255 of [a-z0-9.-]", td);
    return SK_EINVAL;
  }
  if (o->ndns_suffixes > MAX_DNS_SUFFIXES) {
    seterr(err, errlen, "ca: at most %d DNS suffixes", MAX_DNS_SUFFIXES);
    return SK_EINVAL;
  }
  if (o->store && !(o->backend && o->backend->ops->join_add)) {
    for (size_t i = 0; i < sizeof schema / sizeof *schema; i++) {
      if (sk_store_exec(o->store, schema[i], NULL, 0) < 0) {
        seterr(err, errlen, "ca: schema: %s", sk_store_errmsg(o->store));
        return SK_ESTORE;
      }
    }
  }
  ctl_ca_t *ca = sk_xcalloc(1, sizeof *ca);
  char dir[PATH_MAX];
  int rc;
  if (snprintf(dir, sizeof dir, "%s/ca", o->state_dir) >= (int)sizeof dir - 32) {
    seterr(err, errlen, "ca: state_dir too long");
    rc = SK_ENAMETOOLONG;
    goto fail;
  }
  (void)mkdir(o->state_dir, 0700);
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    rc = sk_err_from_errno(errno);
    seterr(err, errlen, "ca: %s: %s", dir, strerror(errno));
    goto fail;
  }
  (void)chmod(dir, 0700);
  ca->dir = sk_xstrdup(dir);
  ca->trust_domain = sk_xstrdup(td);
  ca->be = o->backend && o->backend->ops->join_add ? o->backend : NULL;
  ca->store = ca->be ? NULL : o->store;
  ca->leaf_ttl_s = o->leaf_ttl_s > 0 ? o->leaf_ttl_s : CTL_CA_DEFAULT_TTL_S;
  ca->max_leaf_ttl_s = o->max_leaf_ttl_s > 0 ? o->max_leaf_ttl_s : 7 * 86400;
  if (ca->leaf_ttl_s > ca->max_leaf_ttl_s) ca->max_leaf_ttl_s = ca->leaf_ttl_s;
  ca->root_ttl_s = o->root_ttl_s > 0 ? o->root_ttl_s : 10LL * 365 * 86400;
  ca->inter_ttl_s = o->intermediate_ttl_s > 0 ? o->intermediate_ttl_s : 365LL * 86400;
  ca->max_csr_bytes = o->max_csr_bytes ? o->max_csr_bytes : CTL_CA_MAX_CSR_BYTES;
  ca->allow_ip_sans = o->allow_ip_sans;
  for (size_t i = 0; i < o->ndns_suffixes; i++)
    ca->dns_suffixes[ca->ndns_suffixes++] = sk_xstrdup(o->dns_suffixes[i]);
  rc = ca_load_or_create(ca, err, errlen);
  if (rc < 0) goto fail;
  *out = ca;
  return 0;
fail:
  ctl_ca_free(ca);
  return rc;
}

void ctl_ca_free(ctl_ca_t *ca) {
  if (!ca) return;
  X509_free(ca->root);
  X509_free(ca->inter);
  EVP_PKEY_free(ca->root_key);
  EVP_PKEY_free(ca->inter_key);
  free(ca->dir);
  free(ca->trust_domain);
  free(ca->bundle_path);
  free(ca->bundle_pem);
  free(ca->inter_pem);
  for (size_t i = 0; i < ca->ndns_suffixes; i++) free(ca->dns_suffixes[i]);
  free(ca);
}

const char *ctl_ca_trust_domain(const ctl_ca_t *ca) { return ca->trust_domain; }
const char *ctl_ca_bundle_pem(const ctl_ca_t *ca) { return ca->bundle_pem; }
const char *ctl_ca_bundle_path(const ctl_ca_t *ca) { return ca->bundle_path; }

void ctl_ca_cert_done(ctl_ca_cert_t *c) {
  if (!c) return;
  free(c->cert_pem);
  free(c->chain_pem);
  if (c->key_pem) OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
  free(c->key_pem);
  memset(c, 0, sizeof *c);
}

/* ---------------- SAN policy ---------------- */

typedef struct sans {
  char uri[CTL_SPIFFE_MAX];
  int nuri;
  char *dns[MAX_SANS];
  size_t ndns;
  unsigned char ip[MAX_SANS][16];
  int iplen[MAX_SANS];
  size_t nip;
} sans_t;

static void sans_done(sans_t *s) {
  for (size_t i = 0; i < s->ndns; i++) free(s->dns[i]);
  s->ndns = 0;
}

static int dns_syntax_ok(const char *d, size_t l) {
  if (l == 0 || l > 253 || d[0] == '.' || d[l - 1] == '.') return 0;
  size_t lab = 0;
  for (size_t i = 0; i < l; i++) {
    unsigned char c = (unsigned char)d[i];
    if (c == '.') {
      if (lab == 0) return 0;
      lab = 0;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return 0;
    if (++lab > 63) return 0;
  }
  return 1;
}

static int has_suffix_ci(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcasecmp(s + a - b, suf);
}

static int dns_allowed(const ctl_ca_t *ca, const char *d) {
  if (!strcasecmp(d, "localhost")) return 1;
  char sfx[300];
  snprintf(sfx, sizeof sfx, ".%s", ca->trust_domain);
  if (!strcasecmp(d, ca->trust_domain) || has_suffix_ci(d, sfx)) return 1;
  for (size_t i = 0; i < ca->ndns_suffixes; i++) {
    const char *s = ca->dns_suffixes[i];
    if (s[0] == '.' ? has_suffix_ci(d, s) : !strcasecmp(d, s)) return 1;
  }
  return 0;
}

static int ip_is_loopback(const unsigned char *ip, int len) {
  if (len == 4) return ip[0] == 127;
  static const unsigned char v6lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return len == 16 && !memcmp(ip, v6lo, 16);
}

/* Collects and checks the SANs of a request (policy = 1) or of a trusted
 * caller's list (policy = 0: syntax only). */
static int sans_from_names(const ctl_ca_t *ca, GENERAL_NAMES *gens, int policy, sans_t *s,
                           char *err, size_t errlen) {
  int n = sk_GENERAL_NAME_num(gens);
  if (n > MAX_SANS) {
    seterr(err, errlen, "CSR asks for %d subject alternative names; at most %d", n, MAX_SANS);
    return SK_ELIMIT;
  }
  for (int i = 0; i < n; i++) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    int type;
    ASN1_STRING *v = GENERAL_NAME_get0_value(g, &type);
    const unsigned char *data = v ? ASN1_STRING_get0_data(v) : NULL;
    int len = v ? ASN1_STRING_length(v) : 0;
    if (type == GEN_URI) {
      if (s->nuri++ > 0) {
        seterr(err, errlen, "CSR asks for more than one URI SAN; exactly one SPIFFE ID is allowed");
        return SK_EINVAL;
      }
      if (len <= 0 || len >= CTL_SPIFFE_MAX || memchr(data, 0, (size_t)len)) {
        seterr(err, errlen, "CSR URI SAN is empty, too long or contains NUL");
        return SK_EINVAL;
      }
      memcpy(s->uri, data, (size_t)len);
      s->uri[len] = 0;
      int rc = ctl_spiffe_parse(s->uri, ca->trust_domain, NULL, err, errlen);
      if (rc < 0) return rc;
    } else if (type == GEN_DNS) {
      if (!dns_syntax_ok((const char *)data, (size_t)(len < 0 ? 0 : len))) {
        seterr(err, errlen, "CSR DNS SAN is not a valid host name (no wildcards)");
        return SK_EINVAL;
      }
      char *d = sk_xstrndup((const char *)data, (size_t)len);
      if (policy && !dns_allowed(ca, d)) {
        seterr(err, errlen, "CSR DNS SAN %s is not allowed (localhost or names under %s)", d,
               ca->trust_domain);
        free(d);
        return SK_EFORBID;
      }
      s->dns[s->ndns++] = d;
    } else if (type == GEN_IPADD) {
      if (len != 4 && len != 16) {
        seterr(err, errlen, "CSR IP SAN has a bad length");
        return SK_EINVAL;
      }
      if (policy && !ca->allow_ip_sans && !ip_is_loopback(data, len)) {
        seterr(err, errlen, "CSR IP SAN is not a loopback address; this CA allows only those");
        return SK_EFORBID;
      }
      memcpy(s->ip[s->nip], data, (size_t)len);
      s->iplen[s->nip++] = len;
    } else {
      seterr(err, errlen, "CSR asks for a SAN type other than URI, DNS or IP");
      return SK_EINVAL;
    }
  }
  if (s->nuri != 1) {
    seterr(err, errlen, "CSR must carry exactly one URI SAN with the SPIFFE ID");
    return SK_EINVAL;
  }
  return 0;
}

static GENERAL_NAMES *names_of_sans(const sans_t *s) {
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  if (!gens) return NULL;
  for (int i = -1; i < (int)(s->ndns + s->nip); i++) {
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *v = NULL;
    int type;
    if (i < 0) {
      type = GEN_URI;
      v = ASN1_IA5STRING_new();
      if (v) ASN1_STRING_set(v, s->uri, (int)strlen(s->uri));
    } else if ((size_t)i < s->ndns) {
      type = GEN_DNS;
      v = ASN1_IA5STRING_new();
      if (v) ASN1_STRING_set(v, s->dns[i], (int)strlen(s->dns[i]));
    } else {
      size_t k = (size_t)i - s->ndns;
      type = GEN_IPADD;
      v = ASN1_OCTET_STRING_new();
      if (v) ASN1_OCTET_STRING_set(v, s->ip[k], s->iplen[k]);
    }
    if (!g || !v) {
      GENERAL_NAME_free(g);
      ASN1_STRING_free(v);
      GENERAL_NAMES_free(gens);
      return NULL;
    }
    GENERAL_NAME_set0_value(g, type, v);
    sk_GENERAL_NAME_push(gens, g);
  }
  return gens;
}

/* ---------------- CSR checks ---------------- */

static int key_ok(EVP_PKEY *pk, char *err, size_t errlen) {
  int id = EVP_PKEY_get_base_id(pk);
  if (id == EVP_PKEY_EC) {
    char grp[64] = "";
    size_t gl = 0;
    if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, grp, sizeof grp, &gl) != 1) {
      ERR_clear_error();
      seterr(err, errlen, "CSR EC key has no named curve");
      return SK_EINVAL;
    }
    if (strcmp(grp, "prime256v1") && strcmp(grp, "P-256") && strcmp(grp, "secp384r1") &&
        strcmp(grp, "P-384")) {
      seterr(err, errlen, "CSR EC key curve %s is not allowed (P-256 or P-384)", grp);
      return SK_EINVAL;
    }
    return 0;
  }
  if (id == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(pk);
    if (bits < 2048 || bits > 8192) {
      seterr(err, errlen, "CSR RSA key has %d bits (2048..8192 allowed)", bits);
      return SK_EINVAL;
    }
    return 0;
  }
  seterr(err, errlen, "CSR key type is not allowed (EC P-256/P-384 or RSA)");
  return SK_EINVAL;
}

/* Parses and checks the CSR; on success *out owns the request and s its SANs. */
static int csr_parse(const ctl_ca_t *ca, const char *pem, size_t len, X509_REQ **out, sans_t *s,
                     char *err, size_t errlen) {
  *out = NULL;
  if (!pem || len == 0) {
    seterr(err, errlen, "CSR is empty");
    return SK_EINVAL;
  }
  if (len > ca->max_csr_bytes) {
    seterr(err, errlen, "CSR is %zu bytes; the limit is %zu", len, ca->max_csr_bytes);
    return SK_ELIMIT;
  }
  int rc = SK_EINVAL;
  STACK_OF(X509_EXTENSION) *exts = NULL;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
  if (!req) {
    ERR_clear_error();
    seterr(err, errlen, "not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)");
    goto out;
  }
  /* nothing but whitespace may follow the one request */
  char rest[64];
  int rn = BIO_read(b, rest, sizeof rest);
  for (int i = 0; i < rn; i++) {
    if (!isspace((unsigned char)rest[i])) {
      seterr(err, errlen, "more than one PEM block: send exactly one certificate request");
      goto out;
    }
  }
  EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
  if (!pk) {
    ERR_clear_error();
    seterr(err, errlen, "CSR public key cannot be decoded");
    goto out;
  }
  if ((rc = key_ok(pk, err, errlen)) < 0) goto out;
  rc = SK_EINVAL;
  if (X509_REQ_verify(req, pk) != 1) {
    ERR_clear_error();
    seterr(err, errlen, "CSR signature does not verify with its own key");
    goto out;
  }
  exts = X509_REQ_get_extensions(req);
  int next = exts ? sk_X509_EXTENSION_num(exts) : 0;
  if (next > 16) {
    seterr(err, errlen, "CSR asks for %d extensions; at most 16", next);
    rc = SK_ELIMIT;
    goto out;
  }
  int saw_san = 0;
  for (int i = 0; i < next; i++) {
    X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
    int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
    if (nid == NID_basic_constraints) {
      BASIC_CONSTRAINTS *bc = X509V3_EXT_d2i(e);
      if (!bc) {
        ERR_clear_error();
        seterr(err, errlen, "CSR basicConstraints cannot be decoded");
        goto out;
      }
      int is_ca = bc->ca != 0;
      BASIC_CONSTRAINTS_free(bc);
      if (is_ca) {
        seterr(err, errlen, "CSR asks for CA:TRUE; this CA issues only leaf certificates");
        rc = SK_EFORBID;
        goto out;
      }
    } else if (nid == NID_subject_alt_name) {
      if (saw_san++) {
        seterr(err, errlen, "CSR has more than one subjectAltName extension");
        goto out;
      }
      GENERAL_NAMES *gens = X509V3_EXT_d2i(e);
      if (!gens) {
        ERR_clear_error();
        seterr(err, errlen, "CSR subjectAltName cannot be decoded");
        goto out;
      }
      rc = sans_from_names(ca, gens, 1, s, err, errlen);
      GENERAL_NAMES_free(gens);
      if (rc < 0) goto out;
      rc = SK_EINVAL;
    }
    /* other requested extensions are ignored: the CA sets its own */
  }
  if (!saw_san) {
    seterr(err, errlen, "CSR has no subjectAltName; it must carry the SPIFFE ID as a URI SAN");
    goto out;
  }
  *out = req;
  req = NULL;
  rc = 0;
out:
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_REQ_free(req);
  BIO_free(b);
  if (rc < 0) sans_done(s);
  return rc;
}

int ctl_ca_csr_check(const ctl_ca_t *ca, const char *pem, size_t len, char *id, size_t idlen,
                     char *err, size_t errlen) {
  X509_REQ *req = NULL;
  sans_t s;
  memset(&s, 0, sizeof s);
  int rc = csr_parse(ca, pem, len, &req, &s, err, errlen);
  if (rc < 0) return rc;
  if (id && idlen) snprintf(id, idlen, "%s", s.uri);
  sans_done(&s);
  X509_REQ_free(req);
  return 0;
}

/* ---------------- issuing ---------------- */

static int sign_leaf(ctl_ca_t *ca, EVP_PKEY *pub, const sans_t *s, int64_t ttl_s,
                     ctl_ca_cert_t *out, char *err, size_t errlen) {
  int rc = SK_ETLS;
  X509 *x = X509_new();
  X509_NAME *name = NULL;
  GENERAL_NAMES *gens = NULL;
  ctl_spiffe_t sp;
  memset(out, 0, sizeof *out);
  if (!x) goto out;
  if (ctl_spiffe_parse(s->uri, ca->trust_domain, &sp, err, errlen) < 0) {
    rc = SK_EINVAL;
    goto out;
  }
  if (ttl_s <= 0) ttl_s = ca->leaf_ttl_s;
  if (ttl_s > ca->max_leaf_ttl_s) ttl_s = ca->max_leaf_ttl_s;
  int64_t now = ctl__now_s();
  /* notBefore absorbs clock skew: a minute, but at most a tenth of a short
   * lifetime so that two thirds of it still lie ahead (renewal timing) */
  int64_t skew = ttl_s >= 600 ? 60 : ttl_s / 10;
  int64_t nb = now - skew, na = now + ttl_s;
  int64_t inter_na = asn1_time_unix(X509_get0_notAfter(ca->inter));
  if (na > inter_na) na = inter_na;
  if (na <= now) {
    seterr(err, errlen, "the intermediate CA has expired; restart control to renew it");
    goto out;
  }
  char cn[65];
  snprintf(cn, sizeof cn, "%.64s", sp.name);
  name = make_name(cn, sp.kind);
  if (!name || !X509_set_version(x, 2) || !X509_set_subject_name(x, name) ||
      !X509_set_issuer_name(x, X509_get_subject_name(ca->inter)))
    goto out;
  if ((rc = set_random_serial(x, out->serial, sizeof out->serial)) < 0) goto out;
  rc = SK_ETLS;
  if (!ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
      !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) || !X509_set_pubkey(x, pub))
    goto out;
  int rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
  if (add_ext(x, ca->inter, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
      add_ext(x, ca->inter, NID_key_usage,
              rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature") < 0 ||
      add_ext(x, ca->inter, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
      add_ext(x, ca->inter, NID_subject_key_identifier, "hash") < 0 ||
      add_ext(x, ca->inter, NID_authority_key_identifier, "keyid:always") < 0)
    goto out;
  gens = names_of_sans(s);
  if (!gens || X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
    goto out;
  if (!X509_sign(x, ca->inter_key, EVP_sha256())) goto out;
  out->cert_pem = pem_of_cert(x);
  if (!out->cert_pem) goto out;
  size_t a = strlen(out->cert_pem), b = strlen(ca->inter_pem);
  out->chain_pem = sk_xmalloc(a + b + 1);
  memcpy(out->chain_pem, out->cert_pem, a);
  memcpy(out->chain_pem + a, ca->inter_pem, b + 1);
  snprintf(out->spiffe_id, sizeof out->spiffe_id, "%s", s->uri);
  out->not_before = nb;
  out->not_after = na;
  rc = 0;
out:
  if (rc == SK_ETLS && err && errlen && !err[0]) seterr(err, errlen, "signing: %s", ossl_reason());
  if (rc < 0) ctl_ca_cert_done(out);
  GENERAL_NAMES_free(gens);
  X509_NAME_free(name);
  X509_free(x);
  return rc;
}

int ctl_ca_issue_csr(ctl_ca_t *ca, const char *pem, size_t len, const char *want_id,
                     int64_t ttl_s, ctl_ca_cert_t *out, char *err, size_t errlen) {
  if (err && errlen) err[0] = 0;
  X509_REQ *req = NULL;
  sans_t s;
  memset(&s, 0, sizeof s);
  memset(out, 0, sizeof *out);
  int rc = csr_parse(ca, pem, len, &req, &s, err, errlen);
  if (rc < 0) return rc;
  if (want_id && strcmp(want_id, s.uri) != 0) {
    seterr(err, errlen, "CSR asks for %s but the credential is for %s", s.uri, want_id);
    rc = SK_EFORBID;
    goto out;
  }
  rc = sign_leaf(ca, X509_REQ_get0_pubkey(req), &s, ttl_s, out, err, errlen);
out:
  sans_done(&s);
  X509_REQ_free(req);
  return rc;
}

int ctl_ca_issue_for(ctl_ca_t *ca, const char *spiffe_id, const char *const *dns, size_t ndns,
                     const char *const *ips, size_t nips, int64_t ttl_s, ctl_ca_cert_t *out,
                     char *err, size_t errlen) {
  if (err && errlen) err[0] = 0;
  memset(out, 0, sizeof *out);
  if (ndns > MAX_SANS || nips > MAX_SANS) {
    seterr(err, errlen, "too many SANs (max %d each)", MAX_SANS);
    return SK_ELIMIT;
  }
  int rc = ctl_spiffe_parse(spiffe_id, ca->trust_domain, NULL, err, errlen);
  if (rc < 0) return rc;
  sans_t s;
  memset(&s, 0, sizeof s);
  snprintf(s.uri, sizeof s.uri, "%s", spiffe_id);
  s.nuri = 1;
  EVP_PKEY *key = NULL;
  for (size_t i = 0; i < ndns; i++) {
    if (!dns[i] || !dns_syntax_ok(dns[i], strlen(dns[i]))) {
      seterr(err, errlen, "DNS SAN %s is not a host name", dns[i] ? dns[i] : "(null)");
      rc = SK_EINVAL;
      goto out;
    }
    s.dns[s.ndns++] = sk_xstrdup(dns[i]);
  }
  for (size_t i = 0; i < nips; i++) {
    ASN1_OCTET_STRING *a = ips[i] ? a2i_IPADDRESS(ips[i]) : NULL;
    if (!a) {
      ERR_clear_error();
      seterr(err, errlen, "IP SAN %s is not an address", ips[i] ? ips[i] : "(null)");
      rc = SK_EINVAL;
      goto out;
    }
    s.iplen[s.nip] = ASN1_STRING_length(a);
    memcpy(s.ip[s.nip], ASN1_STRING_get0_data(a), (size_t)s.iplen[s.nip]);
    s.nip++;
    ASN1_OCTET_STRING_free(a);
  }
  key = EVP_EC_gen("P-256");
  if (!key) {
    seterr(err, errlen, "key: %s", ossl_reason());
    rc = SK_ETLS;
    goto out;
  }
  rc = sign_leaf(ca, key, &s, ttl_s, out, err, errlen);
  if (rc < 0) goto out;
  out->key_pem = pem_of_key(key);
  if (!out->key_pem) {
    ctl_ca_cert_done(out);
    rc = SK_ENOMEM;
  }
out:
  EVP_PKEY_free(key);
  sans_done(&s);
  return rc;
}

int ctl_ca_cert_write(const ctl_ca_cert_t *c, const char *cert_path, const char *key_path,
                      char *err, size_t errlen) {
  if (!c || !c->chain_pem || !cert_path) return SK_EINVAL;
  int rc = 0;
  if (key_path && c->key_pem) {
    rc = ctl__write_file_atomic(key_path, c->key_pem, strlen(c->key_pem), 0600, err, errlen);
    if (rc < 0) return rc;
  }
  return ctl__write_file_atomic(cert_path, c->chain_pem, strlen(c->chain_pem), 0644, err, errlen);
}

/* ---------------- join tokens ---------------- */

int ctl_ca_join_token_create(ctl_ca_t *ca, const char *spiffe_id, int64_t ttl_s, int uses,
                             char *secret_out, size_t secretlen, int64_t *expires) {
  if (!ca || (!ca->store && !ca->be) || !secret_out || secretlen < CTL_JOIN_LEN + 1) return SK_EINVAL;
  if (ctl_spiffe_parse(spiffe_id, ca->trust_domain, NULL, NULL, 0) < 0) return SK_EINVAL;
  if (ttl_s < 0 || ttl_s > 30LL * 86400 || uses < 0 || uses > 1000) return SK_EINVAL;
  if (ttl_s == 0) ttl_s = 3600;
  if (uses == 0) uses = 1;
  int64_t now = ctl__now_s();
  /* forget tokens that can no longer be used */
  int64_t count = 0;
  int rc;
  if (ca->be) {
    rc = ca->be->ops->join_prune(ca->be, now, &count);
  } else {
    rc = sk_store_exec(ca->store, "DELETE FROM ctl_join_tokens WHERE expires <= ?1 OR uses_left <= 0",
                       SK_SQL_ARGS(SK_SQL_INT(now)));
    if (rc >= 0) rc = sk_store_query_int64(ca->store, "SELECT count(*) FROM ctl_join_tokens", NULL, 0, &count);
  }
  if (rc < 0) return rc;
  if (count >= 10000) return SK_ELIMIT;
  char secret[CTL_JOIN_LEN + 8];
  unsigned char h[32];
  rc = ctl__secret_new(CTL_JOIN_PREFIX, secret, sizeof secret, h);
  if (rc < 0) return rc;
  ctl_join_row_t jr = {.hash = h, .spiffe_id = spiffe_id, .created = now, .expires = now + ttl_s, .uses_left = uses};
  rc = ca->be ? ca->be->ops->join_add(ca->be, &jr)
              : sk_store_exec(ca->store,
                     "INSERT INTO ctl_join_tokens(hash, spiffe_id, created, expires, uses_left)"
                     " VALUES (?1, ?2, ?3, ?4, ?5)",
                     SK_SQL_ARGS(SK_SQL_BLOB(h, 32), SK_SQL_TEXT(spiffe_id), SK_SQL_INT(now),
                                 SK_SQL_INT(now + ttl_s), SK_SQL_INT(uses)));
  if (rc >= 0) {
    memcpy(secret_out, secret, CTL_JOIN_LEN + 1);
    if (expires) *expires = now + ttl_s;
    rc = 0;
  }
  OPENSSL_cleanse(secret, sizeof secret);
  return rc;
}

typedef struct join_row {
  unsigned char want[32];
  int found;
  char id[CTL_SPIFFE_MAX];
  int64_t expires, uses;
} join_row_t;

static int join_row_fn(sk_stmt_t *st, void *ud) {
  join_row_t *j = ud;
  size_t hl = 0;
  const void *h = sk_stmt_blob(st, 0, &hl);
  if (hl != 32 || CRYPTO_memcmp(h, j->want, 32) != 0) return 0;
  j->found = 1;
  snprintf(j->id, sizeof j->id, "%s", sk_stmt_text(st, 1));
  j->expires = sk_stmt_int64(st, 2);
  j->uses = sk_stmt_int64(st, 3);
  return 1;
}

static int join_be_row(const ctl_join_row_t *r, void *ud) {
  join_row_t *j = ud;
  if (CRYPTO_memcmp(r->hash, j->want, 32) != 0) return 0;
  j->found = 1;
  snprintf(j->id, sizeof j->id, "%s", r->spiffe_id);
  j->expires = r->expires;
  j->uses = r->uses_left;
  return 1;
}

int ctl_ca_join_token_use(ctl_ca_t *ca, const char *secret, const char *spiffe_id, int64_t now,
                          char *err, size_t errlen) {
  if (!ca->store && !ca->be) {
    seterr(err, errlen, "join tokens are not enabled");
    return SK_EUNAUTH;
  }
  join_row_t j;
  memset(&j, 0, sizeof j);
  int rc = ctl__secret_hash(secret, CTL_JOIN_PREFIX, CTL_JOIN_LEN, "join token", j.want, err,
                            errlen);
  if (rc < 0) return rc;
  rc = ca->be ? ca->be->ops->join_find(ca->be, j.want, join_be_row, &j)
                  : sk_store_query(ca->store,
                          "SELECT hash, spiffe_id, expires, uses_left FROM ctl_join_tokens"
                          " WHERE hash = ?1",
                          SK_SQL_ARGS(SK_SQL_BLOB(j.want, 32)), join_row_fn, &j);
  if (rc < 0) {
    seterr(err, errlen, "join token store unavailable");
    return SK_EUNAUTH;
  }
  if (!j.found) {
    seterr(err, errlen, "unknown join token");
    return SK_EUNAUTH;
  }
  if (j.expires <= now) {
    seterr(err, errlen, "join token expired");
    return SK_EUNAUTH;
  }
  if (j.uses <= 0) {
    seterr(err, errlen, "join token already used");
    return SK_EUNAUTH;
  }
  if (!spiffe_id || strcmp(j.id, spiffe_id) != 0) {
    seterr(err, errlen, "join token is for %s, not %s", j.id, spiffe_id ? spiffe_id : "(none)");
    return SK_EFORBID;
  }
  rc = ca->be ? ca->be->ops->join_use(ca->be, j.want, now)
              : sk_store_exec(ca->store,
                     "UPDATE ctl_join_tokens SET uses_left = uses_left - 1 WHERE hash = ?1 AND"
                     " uses_left > 0 AND expires > ?2",
                     SK_SQL_ARGS(SK_SQL_BLOB(j.want, 32), SK_SQL_INT(now)));
  if (rc <= 0) {
    seterr(err, errlen, rc < 0 ? "join token store unavailable" : "join token already used");
    return SK_EUNAUTH;
  }
  return 0;
}

/* ---------------- HTTP ---------------- */

int ctl_ca_csr_req_decode(const void *body, size_t len, sk_pool_t *pool, const char **csr,
                          size_t *csr_len, const char **token, int64_t *ttl_s, char *err,
                          size_t errlen) {
  *csr = NULL;
  *csr_len = 0;
  *token = NULL;
  *ttl_s = 0;
  if (!body || len == 0) {
    seterr(err, errlen, "body: a JSON object {\"csr\": PEM, \"token\"?: string} is expected");
    return SK_EINVAL;
  }
  if (len > 65536) {
    seterr(err, errlen, "body is %zu bytes; the limit is 65536", len);
    return SK_ELIMIT;
  }
  char perr[160];
  json_t *v = NULL;
  int rc = sk_json_parse(body, len, 65536, 4, &v, perr, sizeof perr);
  if (rc < 0) {
    seterr(err, errlen, "body: %s", perr);
    return rc;
  }
  rc = SK_EINVAL;
  if (!json_is_object(v)) {
    seterr(err, errlen, "body: a JSON object is expected");
    goto out;
  }
  json_t *c = json_object_get(v, "csr");
  if (!json_is_string(c) || json_string_length(c) == 0) {
    seterr(err, errlen, "csr: a PEM certificate request string is required");
    goto out;
  }
  if (json_string_length(c) > CTL_CA_MAX_CSR_BYTES) {
    seterr(err, errlen, "csr: longer than %d bytes", CTL_CA_MAX_CSR_BYTES);
    rc = SK_ELIMIT;
    goto out;
  }
  if (memchr(json_string_value(c), 0, json_string_length(c))) {
    seterr(err, errlen, "csr: contains a NUL character");
    goto out;
  }
  json_t *t = json_object_get(v, "token");
  if (t && !json_is_null(t)) {
    if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) > 256) {
      seterr(err, errlen, "token: a string of at most 256 characters");
      goto out;
    }
    *token = sk_pool_strndup(pool, json_string_value(t), json_string_length(t));
  }
  json_t *ttl = json_object_get(v, "ttl");
  if (ttl && !json_is_null(ttl)) {
    int64_t sec = -1;
    if (json_is_integer(ttl)) sec = json_integer_value(ttl);
    else if (json_is_string(ttl) && ctl__parse_duration(json_string_value(ttl), &sec) < 0) sec = -1;
    if (sec < 0 || sec > 366LL * 86400) {
      seterr(err, errlen, "ttl: seconds or a duration such as \"24h\"");
      goto out;
    }
    *ttl_s = sec;
  }
  *csr = sk_pool_strndup(pool, json_string_value(c), json_string_length(c));
  *csr_len = json_string_length(c);
  rc = 0;
out:
  json_decref(v);
  return rc;
}

static void audit_ca(ctl_audit_t *audit, sk_http_req_t *req, const ctl_principal_t *p,
                     const char *verb, const char *name, int code, const char *diff,
                     const char *msg) {
  if (!audit) return;
  ctl_audit_entry_t e = {.principal = p, .verb = verb, .kind = CTL_KIND_CA, .name = name,
                         .code = code, .diff = diff, .source = req->peer_addr, .message = msg};
  (void)ctl_audit_record(audit, &e);
}

static int status_of(int rc) {
  switch (rc) {
  case SK_EUNAUTH: return 401;
  case SK_EFORBID: return 403;
  case SK_ELIMIT: return 413;
  case SK_EINVAL:
  case SK_EPARSE: return 400;
  default: return 500;
  }
}

static void http_csr(ctl_ca_t *ca, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req) {
  char err[512] = "";
  const char *csr, *token;
  size_t csr_len;
  int64_t ttl;
  ctl_principal_t p;
  memset(&p, 0, sizeof p);
  const ctl_principal_t *who = NULL;
  const char *how = NULL;
  char id[CTL_SPIFFE_MAX] = "";
  int rc = ctl_ca_csr_req_decode(req->body, req->body_len, req->pool, &csr, &csr_len, &token,
                                 &ttl, err, sizeof err);
  if (rc < 0) goto fail;
  rc = ctl_ca_csr_check(ca, csr, csr_len, id, sizeof id, err, sizeof err);
  if (rc < 0) goto fail;
  if (token) {
    rc = ctl_ca_join_token_use(ca, token, id, ctl__now_s(), err, sizeof err);
    if (rc < 0) goto fail;
    how = "join-token";
    snprintf(p.name, sizeof p.name, "join-token");
    who = &p;
  } else if (req->peer_spiffe && !strcmp(req->peer_spiffe, id)) {
    how = "renewal";
    snprintf(p.name, sizeof p.name, "%s", id);
    p.via = CTL_VIA_MTLS;
    who = &p;
  } else if (auth && sk_http_headers_get(&req->headers, "authorization")) {
    /* an admin with a bearer token may ask for any valid identity */
    rc = ctl_auth_authenticate(auth, req, &p, err, sizeof err);
    if (rc < 0) goto fail;
    who = &p;
    rc = ctl_auth_authorize(auth, &p, CTL_VERB_CREATE, CTL_KIND_CA, err, sizeof err);
    if (rc < 0) goto fail;
    how = "admin";
  } else {
    rc = req->peer_spiffe ? SK_EFORBID : SK_EUNAUTH;
    if (req->peer_spiffe) {
      snprintf(p.name, sizeof p.name, "%s", req->peer_spiffe);
      p.via = CTL_VIA_MTLS;
      who = &p;
    }
    if (req->peer_spiffe)
      seterr(err, sizeof err, "client certificate %s may renew only its own identity, not %s",
             req->peer_spiffe, id);
    else
      seterr(err, sizeof err, "a join token, the same identity's certificate or an admin token is "
                              "required");
    goto fail;
  }
  ctl_ca_cert_t c;
  rc = ctl_ca_issue_csr(ca, csr, csr_len, id, ttl, &c, err, sizeof err);
  if (rc < 0) goto fail;
  char exp[40];
  ctl__rfc3339(c.not_after, -1, exp, sizeof exp);
  json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "spiffeId", c.spiffe_id, "certificate",
                        c.cert_pem, "chain", c.chain_pem, "serial", c.serial, "expires", exp,
                        "notAfter", (json_int_t)c.not_after);
  char diff[256];
  snprintf(diff, sizeof diff, "{\"serial\":\"%s\",\"notAfter\":%lld,\"via\":\"%s\"}", c.serial,
           (long long)c.not_after, how);
  audit_ca(audit, req, who, "create", c.spiffe_id, 200, diff, NULL);
  ctl__respond_json(req, 200, o);
  json_decref(o);
  ctl_ca_cert_done(&c);
  return;
fail:
  audit_ca(audit, req, who, "create", id[0] ? id : NULL, status_of(rc), NULL, err);
  ctl_http_error(req, status_of(rc), err);
}

static void http_join_create(ctl_ca_t *ca, ctl_auth_t *auth, ctl_audit_t *audit,
                             sk_http_req_t *req) {
  ctl_principal_t p;
  if (!auth) {
    ctl_http_error(req, 403, "join tokens need the auth module");
    return;
  }
  if (ctl_auth_guard(auth, audit, req, CTL_VERB_CREATE, CTL_KIND_CA, NULL, "join-tokens", &p) < 0)
    return;
  char err[256];
  json_t *body = NULL;
  if (ctl__body_json(req, 4096, &body, err, sizeof err) < 0) {
    ctl_http_error(req, 400, err);
    return;
  }
  const char *id = sk_json_get_str(body, "spiffeId", NULL);
  json_t *ttl_v = json_object_get(body, "ttl");
  int64_t ttl = 0;
  if (json_is_integer(ttl_v)) ttl = json_integer_value(ttl_v);
  else if (json_is_string(ttl_v) && ctl__parse_duration(json_string_value(ttl_v), &ttl) < 0) ttl = -1;
  int64_t uses = sk_json_get_int(body, "uses", 0);
  if (!id || ctl_spiffe_parse(id, ca->trust_domain, NULL, err, sizeof err) < 0) {
    if (!id) snprintf(err, sizeof err, "spiffeId: required");
    ctl_http_error(req, 400, err);
    goto out;
  }
  if (ttl < 0 || ttl > 30LL * 86400 || uses < 0 || uses > 1000) {
    ctl_http_error(req, 400, "ttl: up to 30 days; uses: 0..1000");
    goto out;
  }
  char secret[CTL_JOIN_LEN + 1];
  int64_t expires = 0;
  int rc = ctl_ca_join_token_create(ca, id, ttl, (int)uses, secret, sizeof secret, &expires);
  if (rc < 0) {
    ctl_http_error(req, rc == SK_ELIMIT ? 429 : 500, "cannot create the join token");
    goto out;
  }
  char exp[40], diff[CTL_SPIFFE_MAX + 64];
  ctl__rfc3339(expires, -1, exp, sizeof exp);
  snprintf(diff, sizeof diff, "{\"joinToken\":{\"expires\":%lld,\"uses\":%lld}}",
           (long long)expires, (long long)(uses ? uses : 1));
  audit_ca(audit, req, &p, "create", id, 201, diff, NULL);
  json_t *o = json_pack("{s:s,s:s,s:s}", "token", secret, "spiffeId", id, "expires", exp);
  OPENSSL_cleanse(secret, sizeof secret);
  ctl__respond_json(req, 201, o);
  json_decref(o);
out:
  json_decref(body);
}

int ctl_ca_http_route(ctl_ca_t *ca, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req) {
  const char *path = req->path;
  if (strncmp(path, "/api/v1/ca", 10) != 0 || (path[10] && path[10] != '/')) return 0;
  int get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
  int post = !strcmp(req->method, "POST");
  if (!strcmp(path, "/api/v1/ca/bundle")) {
    if (!get) {
      ctl_http_error(req, 405, "bundle: GET only");
      return 1;
    }
    sk_http_header_t h[] = {{"content-type", "application/x-pem-file"}};
    sk_http_respond(req, 200, h, 1, ca->bundle_pem, strlen(ca->bundle_pem));
  } else if (!strcmp(path, "/api/v1/ca/csr")) {
    if (!post) ctl_http_error(req, 405, "csr: POST only");
    else http_csr(ca, auth, audit, req);
  } else if (!strcmp(path, "/api/v1/ca/join-tokens")) {
    if (!post) ctl_http_error(req, 405, "join-tokens: POST only");
    else http_join_create(ca, auth, audit, req);
  } else {
    ctl_http_error(req, 404, "no such CA endpoint (bundle, csr, join-tokens)");
  }
  return 1;
}
