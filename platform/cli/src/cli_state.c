/* The supervisor's state directory: lock, pid file, status.json, logs/. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

int cli_state_path(const char *dir, const char *name, char *out, size_t outlen) {
  int n = snprintf(out, outlen, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= outlen) return SK_ENAMETOOLONG;
  return 0;
}

static int mkdir_p(const char *path) {
  char tmp[PATH_MAX];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof tmp) return SK_ENAMETOOLONG;
  memcpy(tmp, path, len + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
    *p = '/';
  }
  if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
  return 0;
}

int cli_state_prepare(const char *dir) {
  char logs[PATH_MAX];
  int rc = mkdir_p(dir);
  if (rc < 0) return rc;
  rc = cli_state_path(dir, "logs", logs, sizeof logs);
  if (rc < 0) return rc;
  return mkdir_p(logs);
}

static pid_t read_pid(const char *path) {
  char *s = NULL;
  size_t n = 0;
  if (cli_read_file(path, 64, &s, &n) < 0) return 0;
  char *end = NULL;
  long v = strtol(s, &end, 10);
  pid_t pid = (end != s && v > 0 && v < INT_MAX) ? (pid_t)v : 0;
  free(s);
  return pid;
}

pid_t cli_state_live_pid(const char *dir) {
  char path[PATH_MAX];
  if (cli_state_path(dir, "skiff.pid", path, sizeof path) < 0) return 0;
  pid_t pid = read_pid(path);
  if (pid <= 0) return 0;
  if (kill(pid, 0) < 0 && errno == ESRCH) return 0;
  return pid;
}

int cli_state_lock(cli_state_t *st, const char *dir, pid_t *other) {
  char path[PATH_MAX];
  int rc;
  st->lock_fd = -1;
  if (other) *other = 0;
  if (strlen(dir) >= sizeof st->dir) return SK_ENAMETOOLONG;
  snprintf(st->dir, sizeof st->dir, "%s", dir);
  if ((rc = cli_state_path(dir, "skiff.lock", path, sizeof path)) < 0) return rc;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return sk_err_from_errno(errno);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK) {
      if (other) *other = cli_state_live_pid(dir);
      return SK_EBUSY;
    }
    return sk_err_from_errno(e);
  }
  st->lock_fd = fd;
  char pidpath[PATH_MAX], buf[32];
  if ((rc = cli_state_path(dir, "skiff.pid", pidpath, sizeof pidpath)) < 0) goto fail;
  int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if ((rc = cli_write_atomic(pidpath, buf, (size_t)n)) < 0) goto fail;
  return 0;
fail:
  close(fd);
  st->lock_fd = -1;
  return rc;
}

void cli_state_unlock(cli_state_t *st) {
  if (!st || st->lock_fd < 0) return;
  char path[PATH_MAX];
  if (cli_state_path(st->dir, "skiff.pid", path, sizeof path) == 0) unlink(path);
  close(st->lock_fd); /* releases the flock */
  st->lock_fd = -1;
}

int cli_write_atomic(const char *path, const void *data, size_t len) {
  char tmp[PATH_MAX];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof tmp) return SK_ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sk_err_from_errno(errno);
  const char *p = data;
  size_t left = len;
  int rc = 0;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = sk_err_from_errno(errno);
      break;
    }
    p += w;
    left -= (size_t)w;
  }
  if (rc == 0 && fsync(fd) < 0) rc = sk_err_from_errno(errno);
  if (close(fd) < 0 && rc == 0) rc = sk_err_from_errno(errno);
  if (rc == 0 && rename(tmp, path) < 0) rc = sk_err_from_errno(errno);
  if (rc < 0) unlink(tmp);
  return rc;
}

int cli_read_file(const char *path, size_t max, char **out, size_t *outlen) {
  int rc = 0;
  *out = NULL;
  if (outlen) *outlen = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return sk_err_from_errno(errno);
  sk_buf_t b;
  sk_buf_init(&b);
  char tmp[8192];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (b.len + n > max) {
      rc = SK_E2BIG;
      goto out;
    }
    sk_buf_append(&b, tmp, n);
  }
  if (ferror(f)) {
    rc = SK_EIO;
    goto out;
  }
  sk_buf_cstr(&b);
  if (outlen) *outlen = b.len;
  *out = b.data;
  b.data = NULL;
out:
  fclose(f);
  sk_buf_done(&b);
  return rc;
}

void cli_fmt_duration(uint64_t s, char *out, size_t outlen) {
  if (s < 60)
    snprintf(out, outlen, "%" PRIu64 "s", s);
  else if (s < 3600)
    snprintf(out, outlen, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(out, outlen, "%" PRIu64 "h%" PRIu64 "m", s / 3600, (s % 3600) / 60);
  else
    snprintf(out, outlen, "%" PRIu64 "d%" PRIu64 "h", s / 86400, (s % 86400) / 3600);
}

int cli_parse_duration_ms(const char *s, uint64_t *out) {
  if (!s || !*s) return SK_EINVAL;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0 || v > 1e9) return SK_EINVAL;
  double mult;
  if (!*end || !strcmp(end, "s"))
    mult = 1000;
  else if (!strcmp(end, "ms"))
    mult = 1;
  else if (!strcmp(end, "m"))
    mult = 60000;
  else if (!strcmp(end, "h"))
    mult = 3600000;
  else
    return SK_EINVAL;
  *out = (uint64_t)(v * mult + 0.5);
  return 0;
}

/* Is pid alive and running exe (as recorded in status.json)? A rebuilt
 * binary shows as "<exe> (deleted)". */
static int runs_exe(pid_t pid, const char *exe) {
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof link, "/proc/%ld/exe", (long)pid);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  size_t el = strlen(exe);
  return !strncmp(target, exe, el) && (target[el] == 0 || !strcmp(target + el, " (deleted)"));
}

int cli_state_reap_orphans(const char *dir, uint64_t timeout_ms, FILE *out) {
  char path[PATH_MAX];
  char *text = NULL;
  int found = 0;
  char prev[PATH_MAX];
  if (cli_state_path(dir, "status.json", path, sizeof path) < 0) return 0;
  if (cli_state_path(dir, "status.prev.json", prev, sizeof prev) < 0) return 0;
  /* the old status must not pass for the new supervisor's */
  if (rename(path, prev) < 0) return 0;
  if (cli_read_file(prev, 4u << 20, &text, NULL) < 0) return 0;
  json_t *root = json_loads(text, 0, NULL);
  free(text);
  if (!root) return 0;
  pid_t pids[CLI_MAX_DAEMONS];
  size_t i, n = 0;
  json_t *d;
  json_array_foreach(json_object_get(root, "daemons"), i, d) {
    json_t *jp = json_object_get(d, "pid");
    const char *exe = json_string_value(json_object_get(d, "exe"));
    if (!json_is_integer(jp) || !exe || n >= CLI_MAX_DAEMONS) continue;
    json_int_t v = json_integer_value(jp);
    if (v <= 1 || v > INT_MAX || (pid_t)v == getpid()) continue;
    if (!runs_exe((pid_t)v, exe)) continue;
    if (out)
      fprintf(out, "skiff: stopping %s (pid %ld) left running by an earlier supervisor\n",
              json_string_value(json_object_get(d, "name")) ? json_string_value(json_object_get(d, "name")) : "?",
              (long)v);
    if (out) fflush(out);
    kill((pid_t)v, SIGTERM);
    pids[n++] = (pid_t)v;
  }
  json_decref(root);
  found = (int)n;
  for (uint64_t waited = 0; n > 0 && waited < timeout_ms; waited += 50) {
    size_t alive = 0;
    for (size_t k = 0; k < n; k++)
      if (kill(pids[k], 0) == 0) pids[alive++] = pids[k];
    n = alive;
    if (n) usleep(50 * 1000);
  }
  for (size_t k = 0; k < n; k++) kill(pids[k], SIGKILL);
  return found;
}
