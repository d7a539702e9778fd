#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "skiff/mem.h"

static const char *env_join(const char *var, const char *dflt, const char *name) {
  const char *d = getenv(var);
  if (!d || !*d) d = dflt;
  size_t n = strlen(d) + strlen(name) + 2;
  char *p = sk_xmalloc(n);
  snprintf(p, n, "%s/%s", d, name);
  /* kept reachable so LeakSanitizer does not count these as leaks */
  static char **kept;
  static size_t nkept;
  kept = sk_xrealloc(kept, (nkept + 1) * sizeof *kept);
  kept[nkept++] = p;
  return p;
}

const char *sk_test_cert(const char *name) { return env_join("SKIFF_TEST_CERTS", "test-certs", name); }
const char *sk_test_bin(const char *name) { return env_join("SKIFF_BIN_DIR", "bin", name); }

static char tmpdir[256];
static void rm_tmpdir(void) {
  if (!tmpdir[0]) return;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) { /* best effort */
  }
}

const char *sk_test_tmpdir(void) {
  if (tmpdir[0]) return tmpdir;
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/skiff-test-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(tmpdir)) abort();
  atexit(rm_tmpdir);
  return tmpdir;
}

static void timeout_cb(uv_timer_t *t) { *(int *)t->data = 1; }
static void wake_cb(uv_timer_t *t) {}

int sk_test_run_until(uv_loop_t *loop, volatile int *flag, uint64_t timeout_ms) {
  uv_timer_t t, wake;
  int expired = 0;
  uv_timer_init(loop, &t);
  t.data = &expired;
  uv_timer_start(&t, timeout_cb, timeout_ms, 0);
  /* A flag set by another thread (sk_test_job) does not wake the loop:
   * look at it every few milliseconds instead of sleeping to the timeout. */
  uv_timer_init(loop, &wake);
  uv_timer_start(&wake, wake_cb, 5, 5);
  while (!__atomic_load_n(flag, __ATOMIC_SEQ_CST) && !expired) uv_run(loop, UV_RUN_ONCE);
  uv_timer_stop(&t);
  uv_timer_stop(&wake);
  uv_close((uv_handle_t *)&t, NULL);
  uv_close((uv_handle_t *)&wake, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *flag ? 0 : -1;
}

static int run_capture(const char *cmd, char *out, size_t outlen) {
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t len = 0, n;
  char tmp[4096];
  while ((n = fread(tmp, 1, sizeof tmp, p)) > 0) {
    if (out && len + 1 < outlen) {
      size_t c = n < outlen - 1 - len ? n : outlen - 1 - len;
      memcpy(out + len, tmp, c);
      len += c;
    }
  }
  if (out && outlen) out[len] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int sk_test_sh(char *out, size_t outlen, const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return run_capture(cmd, out, outlen);
}

static void job_main(void *arg) {
  sk_test_job_t *j = arg;
  j->status = run_capture(j->cmd, j->out, sizeof j->out);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
}

void sk_test_job_start(sk_test_job_t *job, const char *fmt, ...) {
  memset(job, 0, sizeof *job);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(job->cmd, sizeof job->cmd, fmt, ap);
  va_end(ap);
  uv_thread_create(&job->thread, job_main, job);
}

void sk_test_job_join(sk_test_job_t *job) { uv_thread_join(&job->thread); }

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void sk_test_loop_drain(uv_loop_t *loop) {
  uv_walk(loop, close_walk, NULL);
  for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT); i++) {
  }
  assert_int_equal(uv_loop_close(loop), 0);
}
