/* libgit2: one bare cache repository per repository URL, fetched
 * incrementally (every branch and tag), revisions resolved there, and
 * manifests read straight from a commit's tree (no working copy). */
#include <ctype.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <git2.h>
#include <libssh2.h>
#include <openssl/evp.h>

#include "gitops.h"
#include "skiff/err.h"

struct gx_git {
  git_repository *repo;
  char *url;
  char head[41]; /* the remote's HEAD at the last fetch, "" unknown */
};

typedef struct cred_ctx {
  const gx_git_cred_t *cred;
  int tries;      /* password or key offered */
  int host_refused;
  int timed_out;
  uint64_t deadline; /* monotonic ms, 0 none */
  int port;          /* the ssh port (known_hosts entries are per port) */
  char host_err[512];
} cred_ctx_t;

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int gx_git_global_init(void) { return git_libgit2_init() < 0 ? SK_EIO : 0; }

void gx_git_global_done(void) { git_libgit2_shutdown(); }

static const char *git_msg(void) {
  const git_error *e = git_error_last();
  return e && e->message ? e->message : "unknown error";
}

static int mkdir_p(const char *path) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0750) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
      *p = '/';
    }
  if (mkdir(tmp, 0750) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
  return 0;
}

int gx_git_open(const char *cache_dir, const char *url, gx_git_t **out, char *err, size_t errlen) {
  *out = NULL;
  char norm[2048];
  gx_url_normalize(url, norm, sizeof norm);
  unsigned char md[32];
  unsigned int mdl = 0;
  EVP_Digest(norm, strlen(norm), md, &mdl, EVP_sha256(), NULL);
  char hex[33];
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
  int rc = mkdir_p(cache_dir);
  if (rc < 0) {
    snprintf(err, errlen, "cache dir %s: %s", cache_dir, sk_strerror(rc));
    return rc;
  }
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.git", cache_dir, hex);
  gx_git_t *g = sk_xcalloc(1, sizeof *g);
  if (git_repository_open_bare(&g->repo, path) < 0 && git_repository_init(&g->repo, path, 1) < 0) {
    snprintf(err, errlen, "cache repository %s: %s", path, git_msg());
    free(g);
    return SK_EIO;
  }
  g->url = sk_xstrdup(url);
  *out = g;
  return 0;
}

void gx_git_free(gx_git_t *g) {
  if (!g) return;
  git_repository_free(g->repo);
  free(g->url);
  free(g);
}

static int cred_cb(git_credential **out, const char *url, const char *user_from_url, unsigned int allowed,
                   void *payload) {
  (void)url;
  cred_ctx_t *c = payload;
  const gx_git_cred_t *cr = c->cred;
  const char *cfg_user = cr && cr->username && *cr->username ? cr->username : NULL;
  /* ssh: the URL's user (git@host) first; http: the configured one */
  const char *ssh_user = user_from_url && *user_from_url ? user_from_url : cfg_user ? cfg_user : "git";
  const char *http_user = cfg_user ? cfg_user : user_from_url && *user_from_url ? user_from_url : "git";
  if (allowed & GIT_CREDENTIAL_USERNAME) return git_credential_username_new(out, ssh_user);
  if (c->tries++ > 0 || !cr || (!cr->password && !cr->ssh_key_file)) {
    git_error_set_str(GIT_ERROR_NET, "authentication failed (no or wrong credentials for this repository)");
    return GIT_EUSER;
  }
  if ((allowed & GIT_CREDENTIAL_SSH_KEY) && cr->ssh_key_file)
    return git_credential_ssh_key_new(out, ssh_user, NULL, cr->ssh_key_file, NULL);
  if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && cr->password)
    return git_credential_userpass_plaintext_new(out, http_user, cr->password);
  git_error_set_str(GIT_ERROR_NET, (allowed & GIT_CREDENTIAL_SSH_KEY)
                                       ? "the server wants an ssh key: set ssh_key_file in this repository's credentials"
                                       : "the server asks for a credential type skiff-gitops does not support");
  return GIT_EUSER;
}

static int over(cred_ctx_t *c) {
  if (c->cred && c->cred->cancel && *c->cred->cancel) {
    git_error_set_str(GIT_ERROR_NET, "fetch cancelled: the daemon is stopping");
    return GIT_EUSER;
  }
  if (c->deadline && mono_ms() > c->deadline) {
    c->timed_out = 1;
    git_error_set_str(GIT_ERROR_NET, "the fetch took longer than fetch_timeout");
    return GIT_EUSER;
  }
  return 0;
}

static int progress_cb(const git_indexer_progress *stats, void *payload) {
  (void)stats;
  return over(payload);
}

static int sideband_cb(const char *str, int len, void *payload) {
  (void)str;
  (void)len;
  return over(payload);
}

/* ssh host keys: only those in the credential's known_hosts file (OpenSSH
 * format, hashed names included; "[host]:port" for other ports), read by
 * libssh2. Anything else - no file, unknown host, another key - refuses
 * the connection. Other transports keep libgit2's TLS verification. */
static int cert_cb(git_cert *cert, int valid, const char *host, void *payload) {
  cred_ctx_t *c = payload;
  (void)valid; /* libgit2's own check reads ~/.ssh/known_hosts: not ours */
  if (cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2) return GIT_PASSTHROUGH; /* TLS: libgit2 verifies */
  const git_cert_hostkey *hk = (const git_cert_hostkey *)cert;
  const char *kh_file = c->cred ? c->cred->known_hosts_file : NULL;
  int rc = GIT_ECERTIFICATE;
  LIBSSH2_SESSION *sess = NULL;
  LIBSSH2_KNOWNHOSTS *kh = NULL;
  if (!kh_file || !*kh_file) {
    snprintf(c->host_err, sizeof c->host_err,
             "host key of %s not verified: set known_hosts_file in this repository's credentials", host);
    goto out;
  }
  if (!(hk->type & GIT_CERT_SSH_RAW) || !hk->hostkey || !hk->hostkey_len) {
    snprintf(c->host_err, sizeof c->host_err, "host key of %s: libssh2 gave no raw key to check", host);
    goto out;
  }
  int ktype;
  switch (hk->raw_type) {
  case GIT_CERT_SSH_RAW_TYPE_RSA: ktype = LIBSSH2_KNOWNHOST_KEY_SSHRSA; break;
  case GIT_CERT_SSH_RAW_TYPE_DSS: ktype = LIBSSH2_KNOWNHOST_KEY_SSHDSS; break;
  case GIT_CERT_SSH_RAW_TYPE_KEY_ECDSA_256: ktype = LIBSSH2_KNOWNHOST_KEY_ECDSA_256; break;
  case GIT_CERT_SSH_RAW_TYPE_KEY_ECDSA_384: ktype = LIBSSH2_KNOWNHOST_KEY_ECDSA_384; break;
  case GIT_CERT_SSH_RAW_TYPE_KEY_ECDSA_521: ktype = LIBSSH2_KNOWNHOST_KEY_ECDSA_521; break;
  case GIT_CERT_SSH_RAW_TYPE_KEY_ED25519: ktype = LIBSSH2_KNOWNHOST_KEY_ED25519; break;
  default:
    snprintf(c->host_err, sizeof c->host_err, "host key of %s: unknown key type", host);
    goto out;
  }
  if (!(sess = libssh2_session_init()) || !(kh = libssh2_knownhost_init(sess))) {
    snprintf(c->host_err, sizeof c->host_err, "host key of %s: out of memory", host);
    goto out;
  }
  if (libssh2_knownhost_readfile(kh, kh_file, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
    snprintf(c->host_err, sizeof c->host_err, "known_hosts_file %s: cannot be read or parsed", kh_file);
    goto out;
  }
  struct libssh2_knownhost *entry = NULL;
  int m = libssh2_knownhost_checkp(kh, host, c->port, hk->hostkey, hk->hostkey_len,
                                   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | ktype, &entry);
  char shown[300];
  if (c->port == 22) snprintf(shown, sizeof shown, "%s", host);
  else snprintf(shown, sizeof shown, "[%s]:%d", host, c->port);
  if (m == LIBSSH2_KNOWNHOST_CHECK_MATCH) rc = 0;
  else if (m == LIBSSH2_KNOWNHOST_CHECK_MISMATCH)
    snprintf(c->host_err, sizeof c->host_err,
             "host key verification failed: the key of %s does not match %s (possible man-in-the-middle)", shown,
             kh_file);
  else
    snprintf(c->host_err, sizeof c->host_err, "host key verification failed: %s is not in %s (unknown host refused)",
             shown, kh_file);
out:
  if (rc != 0) {
    c->host_refused = 1;
    git_error_set_str(GIT_ERROR_SSH, c->host_err);
  }
  if (kh) libssh2_knownhost_free(kh);
  if (sess) libssh2_session_free(sess);
  return rc;
}

int gx_git_url_endpoint(const char *url, char *host, size_t hostlen, int *port) {
  const char *p;
  int def;
  if (!strncasecmp(url, "file://", 7) || url[0] == '/' || url[0] == '.') return SK_ENOTSUP;
  if (!strncasecmp(url, "git://", 6)) p = url + 6, def = 9418;
  else if (!strncasecmp(url, "ssh://", 6)) p = url + 6, def = 22;
  else if (!strncasecmp(url, "git+ssh://", 10)) p = url + 10, def = 22;
  else if (!strncasecmp(url, "http://", 7)) p = url + 7, def = 80;
  else if (!strncasecmp(url, "https://", 8)) p = url + 8, def = 443;
  else if (!strstr(url, "://") && strchr(url, ':')) { /* scp-like [user@]host:path */
    const char *at = strchr(url, '@'), *colon = strchr(url, ':');
    const char *hs = at && at < colon ? at + 1 : url;
    size_t n = (size_t)(colon - hs);
    if (!n || n >= hostlen) return SK_EINVAL;
    memcpy(host, hs, n);
    host[n] = 0;
    *port = 22;
    return 0;
  } else {
    return SK_EINVAL;
  }
  const char *end = p + strcspn(p, "/?#");
  const char *at = NULL;
  for (const char *q = p; q < end; q++)
    if (*q == '@') at = q; /* credentials: the host follows the last '@' */
  if (at) p = at + 1;
  const char *hs = p, *he;
  const char *portp = NULL;
  if (*p == '[') {
    he = memchr(p, ']', (size_t)(end - p));
    if (!he) return SK_EINVAL;
    hs = p + 1;
    if (he + 1 < end && he[1] == ':') portp = he + 2;
  } else {
    he = memchr(p, ':', (size_t)(end - p));
    if (he) portp = he + 1;
    else he = end;
  }
  size_t n = (size_t)(he - hs);
  if (!n || n >= hostlen) return SK_EINVAL;
  memcpy(host, hs, n);
  host[n] = 0;
  *port = def;
  if (portp && portp < end) {
    long v = 0;
    for (const char *q = portp; q < end; q++) {
      if (!isdigit((unsigned char)*q) || v > 65535) return SK_EINVAL;
      v = v * 10 + (*q - '0');
    }
    if (v <= 0 || v > 65535) return SK_EINVAL;
    *port = (int)v;
  }
  return 0;
}

int gx_git_probe(const char *host, int port, uint64_t timeout_ms, const volatile int *cancel, char *err,
                 size_t errlen) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res = NULL;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int g = getaddrinfo(host, ps, &hints, &res);
  if (g != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(g));
    return SK_EIO;
  }
  uint64_t deadline = mono_ms() + timeout_ms;
  int rc = SK_ETIMEDOUT, last_errno = 0;
  for (struct addrinfo *ai = res; ai && rc != 0; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      rc = 0;
    } else if (errno == EINPROGRESS) {
      for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline || (cancel && *cancel)) break;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        uint64_t left = deadline - now;
        int pr = poll(&pfd, 1, left > 100 ? 100 : (int)left);
        if (pr < 0 && errno != EINTR) break;
        if (pr > 0) {
          int soerr = 0;
          socklen_t sl = sizeof soerr;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
          if (soerr == 0) rc = 0;
          else last_errno = soerr;
          break;
        }
      }
    } else {
      last_errno = errno;
    }
    close(fd);
    if (rc != 0 && mono_ms() >= deadline) break;
  }
  freeaddrinfo(res);
  if (rc == 0) return 0;
  if (cancel && *cancel) {
    snprintf(err, errlen, "connect to %s:%d cancelled: the daemon is stopping", host, port);
    return SK_ECANCELED;
  }
  if (mono_ms() >= deadline) {
    snprintf(err, errlen, "connect timeout after %llus to %s:%d", (unsigned long long)(timeout_ms / 1000), host,
             port);
    return SK_ETIMEDOUT;
  }
  snprintf(err, errlen, "failed to connect to %s:%d: %s", host, port, strerror(last_errno ? last_errno : ECONNREFUSED));
  return SK_EIO;
}

int gx_git_fetch(gx_git_t *g, const gx_git_cred_t *cred, char *err, size_t errlen) {
  git_remote *rem = NULL;
  int rc = 0;
  /* an in-memory remote; insteadOf rewriting is skipped (the cache's
   * config has none, and libgit2 1.5 leaks a pcre2 block per lookup) */
  git_remote_create_options ro;
  git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
  ro.repository = g->repo;
  ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  if (git_remote_create_with_opts(&rem, g->url, &ro) < 0) {
    snprintf(err, errlen, "repository %s: %s", g->url, git_msg());
    return SK_EINVAL;
  }
  char *specs[] = {"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"};
  git_strarray refspecs = {specs, 2};
  git_fetch_options fo;
  git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
  cred_ctx_t cc = {.cred = cred, .port = 22};
  char host[256];
  int port = 0;
  if (gx_git_url_endpoint(g->url, host, sizeof host, &port) == 0) {
    cc.port = port;
    /* libgit2 1.5 has no connect timeout: a host that drops SYNs would
     * hold the reconciler for the kernel's TCP timeout (minutes) */
    if (cred && cred->connect_timeout_ms) {
      char perr[512];
      int prc = gx_git_probe(host, port, cred->connect_timeout_ms, cred->cancel, perr, sizeof perr);
      if (prc < 0) {
        snprintf(err, errlen, "fetch %s: %s", g->url, perr);
        rc = prc;
        goto out;
      }
    }
  }
  if (cred && cred->fetch_timeout_ms) cc.deadline = mono_ms() + cred->fetch_timeout_ms;
  fo.callbacks.credentials = cred_cb;
  fo.callbacks.transfer_progress = progress_cb;
  fo.callbacks.sideband_progress = sideband_cb;
  fo.callbacks.certificate_check = cert_cb;
  fo.callbacks.payload = &cc;
  fo.prune = GIT_FETCH_PRUNE;
  fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  fo.update_fetchhead = 0;
  if (git_remote_fetch(rem, &refspecs, &fo, "skiff-gitops fetch") < 0) {
    if (cc.host_refused) {
      snprintf(err, errlen, "fetch %s: %s", g->url, cc.host_err);
      rc = SK_EFORBID;
      goto out;
    }
    if (cc.timed_out) {
      snprintf(err, errlen, "fetch %s: timed out after %llus (fetch_timeout)", g->url,
               (unsigned long long)(cred->fetch_timeout_ms / 1000));
      rc = SK_ETIMEDOUT;
      goto out;
    }
    const git_error *e = git_error_last();
    int auth = cc.tries > 0 || (e && e->message && (strstr(e->message, "401") || strstr(e->message, "403") ||
                                                   strstr(e->message, "authentication")));
    snprintf(err, errlen, "fetch %s: %s%s", g->url, git_msg(), auth ? " (authentication failed)" : "");
    rc = auth ? SK_EUNAUTH : SK_EIO;
    goto out;
  }
  const git_remote_head **heads = NULL;
  size_t nheads = 0;
  g->head[0] = 0;
  if (git_remote_ls(&heads, &nheads, rem) == 0)
    for (size_t i = 0; i < nheads; i++)
      if (!strcmp(heads[i]->name, "HEAD")) git_oid_tostr(g->head, sizeof g->head, &heads[i]->oid);
out:
  git_remote_free(rem);
  return rc;
}

static int peel_commit(gx_git_t *g, const char *refname, git_oid *oid) {
  git_reference *ref = NULL;
  git_object *obj = NULL;
  int rc = -1;
  if (git_reference_lookup(&ref, g->repo, refname) == 0 && git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0) {
    git_oid_cpy(oid, git_object_id(obj));
    rc = 0;
  }
  git_object_free(obj);
  git_reference_free(ref);
  return rc;
}

int gx_git_resolve(gx_git_t *g, const char *rev, char oid[41], char *err, size_t errlen) {
  git_oid id;
  char refname[512];
  if (!rev || !*rev || !strcmp(rev, "HEAD")) {
    if (g->head[0]) {
      snprintf(oid, 41, "%s", g->head);
      return 0;
    }
    static const char *const defaults[] = {"refs/remotes/origin/main", "refs/remotes/origin/master", NULL};
    for (size_t i = 0; defaults[i]; i++)
      if (peel_commit(g, defaults[i], &id) == 0) goto found;
    snprintf(err, errlen, "revision HEAD: the repository %s has no default branch", g->url);
    return SK_ENOTFOUND;
  }
  if (strlen(rev) > 255 || strstr(rev, "..") || rev[0] == '-') goto notfound;
  snprintf(refname, sizeof refname, "refs/remotes/origin/%s", rev);
  if (peel_commit(g, refname, &id) == 0) goto found;
  snprintf(refname, sizeof refname, "refs/tags/%s", rev);
  if (peel_commit(g, refname, &id) == 0) goto found;
  if (!strncmp(rev, "refs/heads/", 11)) {
    snprintf(refname, sizeof refname, "refs/remotes/origin/%s", rev + 11);
    if (peel_commit(g, refname, &id) == 0) goto found;
  }
  {
    size_t n = strlen(rev);
    int hex = n >= 4 && n <= 40;
    for (size_t i = 0; hex && i < n; i++)
      if (!strchr("0123456789abcdefABCDEF", rev[i])) hex = 0;
    /* by prefix, not git_revparse_single: libgit2 1.5's revparse leaks a
     * pcre2 match block on every call that is not a describe string */
    git_object *obj = NULL, *c = NULL;
    git_oid prefix;
    if (hex && git_oid_fromstrn(&prefix, rev, n) == 0 &&
        git_object_lookup_prefix(&obj, g->repo, &prefix, n, GIT_OBJECT_ANY) == 0 &&
        git_object_peel(&c, obj, GIT_OBJECT_COMMIT) == 0) {
      git_oid_cpy(&id, git_object_id(c));
      git_object_free(c);
      git_object_free(obj);
      goto found;
    }
    git_object_free(obj);
  }
notfound:
  snprintf(err, errlen, "revision '%s' not found in %s (not a branch, tag or commit)", rev, g->url);
  return SK_ENOTFOUND;
found:
  git_oid_tostr(oid, 41, &id);
  return 0;
}

int gx_git_commit_info(gx_git_t *g, const char *oid, char *author, size_t alen, char *msg, size_t mlen) {
  git_oid id;
  git_commit *c = NULL;
  author[0] = msg[0] = 0;
  if (git_oid_fromstr(&id, oid) < 0 || git_commit_lookup(&c, g->repo, &id) < 0) return SK_ENOTFOUND;
  const git_signature *s = git_commit_author(c);
  if (s) snprintf(author, alen, "%s <%s>", s->name ? s->name : "", s->email ? s->email : "");
  const char *sum = git_commit_summary(c);
  snprintf(msg, mlen, "%s", sum ? sum : "");
  git_commit_free(c);
  return 0;
}

typedef struct walk {
  const char *include, *exclude;
  int recurse;
  char **paths;
  git_oid *oids;
  size_t n, cap;
  int too_many;
} walk_t;

static int has_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml") || !strcmp(dot, ".json"));
}

static int walk_cb(const char *root, const git_tree_entry *e, void *payload) {
  walk_t *w = payload;
  const char *name = git_tree_entry_name(e);
  if (name[0] == '.') return 1; /* hidden files and directories */
  if (git_tree_entry_type(e) == GIT_OBJECT_TREE) return w->recurse ? 0 : 1;
  if (git_tree_entry_type(e) != GIT_OBJECT_BLOB || !has_ext(name)) return 0;
  char rel[1024];
  snprintf(rel, sizeof rel, "%s%s", root, name);
  if (w->include && *w->include && !gx_glob_match(w->include, rel)) return 0;
  if (w->exclude && *w->exclude && gx_glob_match(w->exclude, rel)) return 0;
  if (w->n >= GX_MAX_FILES) {
    w->too_many = 1;
    return -1;
  }
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 64;
    w->paths = sk_xrealloc(w->paths, w->cap * sizeof *w->paths);
    w->oids = sk_xrealloc(w->oids, w->cap * sizeof *w->oids);
  }
  w->paths[w->n] = sk_xstrdup(rel);
  git_oid_cpy(&w->oids[w->n], git_tree_entry_id(e));
  w->n++;
  return 0;
}

int gx_git_load(gx_git_t *g, const char *oid, const char *path, int recurse, const char *include,
                const char *exclude, const char *default_ns, gx_resset_t *s, char *err, size_t errlen) {
  git_oid id;
  git_commit *c = NULL;
  git_tree *root = NULL, *sub = NULL;
  git_tree_entry *te = NULL;
  walk_t w = {.include = include, .exclude = exclude, .recurse = recurse};
  int rc = 0;
  if (git_oid_fromstr(&id, oid) < 0 || git_commit_lookup(&c, g->repo, &id) < 0 || git_commit_tree(&root, c) < 0) {
    snprintf(err, errlen, "commit %s: %s", oid, git_msg());
    rc = SK_ENOTFOUND;
    goto out;
  }
  git_tree *t = root;
  char prefix[1100] = "";
  if (path && *path && strcmp(path, ".") && strcmp(path, "./")) {
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    while (strlen(p) > 1 && p[strlen(p) - 1] == '/') p[strlen(p) - 1] = 0;
    if (git_tree_entry_bypath(&te, root, p) < 0 || git_tree_entry_type(te) != GIT_OBJECT_TREE ||
        git_tree_lookup(&sub, g->repo, git_tree_entry_id(te)) < 0) {
      snprintf(err, errlen, "path '%s' is not a directory at revision %.12s", path, oid);
      rc = SK_ENOTFOUND;
      goto out;
    }
    t = sub;
    snprintf(prefix, sizeof prefix, "%s/", p);
  }
  if (git_tree_walk(t, GIT_TREEWALK_PRE, walk_cb, &w) < 0 && w.too_many) {
    snprintf(err, errlen, "more than %d manifest files under '%s'", GX_MAX_FILES, path && *path ? path : ".");
    rc = SK_ELIMIT;
    goto out;
  }
  /* the walk is in tree order, which is path order per directory; sort the
   * whole list so a/b.yaml and a.yaml keep one stable order */
  for (size_t i = 1; i < w.n; i++)
    for (size_t j = i; j > 0 && strcmp(w.paths[j - 1], w.paths[j]) > 0; j--) {
      char *tp = w.paths[j];
      w.paths[j] = w.paths[j - 1];
      w.paths[j - 1] = tp;
      git_oid to = w.oids[j];
      w.oids[j] = w.oids[j - 1];
      w.oids[j - 1] = to;
    }
  for (size_t i = 0; i < w.n && rc == 0; i++) {
    git_blob *b = NULL;
    if (git_blob_lookup(&b, g->repo, &w.oids[i]) < 0) {
      snprintf(err, errlen, "%s%s: %s", prefix, w.paths[i], git_msg());
      rc = SK_EIO;
      break;
    }
    size_t len = (size_t)git_blob_rawsize(b);
    char shown[1200];
    snprintf(shown, sizeof shown, "%s%s", prefix, w.paths[i]);
    if (len > GX_MAX_FILE_BYTES) {
      snprintf(err, errlen, "%s: larger than %u bytes", shown, GX_MAX_FILE_BYTES);
      rc = SK_ELIMIT;
    } else {
      rc = gx_manifest_load(s, shown, git_blob_rawcontent(b), len, default_ns, err, errlen);
    }
    git_blob_free(b);
  }
out:
  for (size_t i = 0; i < w.n; i++) free(w.paths[i]);
  free(w.paths);
  free(w.oids);
  git_tree_entry_free(te);
  git_tree_free(sub);
  git_tree_free(root);
  git_commit_free(c);
  return rc;
}
