/* sk_test.h - helpers for Skiff's cmocka tests. */
#ifndef SKIFF_TEST_H
#define SKIFF_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <uv.h>

/* $SKIFF_TEST_CERTS/<name> (static buffer per call site is not needed: the
 * result is allocated and lives until exit). */
const char *sk_test_cert(const char *name);
/* $SKIFF_BIN_DIR/<name> */
const char *sk_test_bin(const char *name);
/* A fresh directory under $TMPDIR, removed at exit. */
const char *sk_test_tmpdir(void);
/* Runs the loop until *flag != 0 or timeout_ms passes (a safety net so a
 * broken test ends instead of hanging; not a timing assertion). Returns 0
 * when the flag was set, -1 on timeout. */
int sk_test_run_until(uv_loop_t *loop, volatile int *flag, uint64_t timeout_ms);
/* Runs a shell command, captures up to outlen-1 bytes of stdout into out;
 * returns the exit status (or -1). For driving real clients (curl, nghttp)
 * from a test thread while the server runs in the test's loop, see
 * sk_test_spawn_capture. */
int sk_test_sh(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Runs a shell command in a background thread; the test keeps running its
 * loop with sk_test_run_until(loop, &job->done, ms). */
typedef struct sk_test_job {
  char cmd[4096];
  char out[65536];
  int status;
  volatile int done;
  uv_thread_t thread;
} sk_test_job_t;
void sk_test_job_start(sk_test_job_t *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sk_test_job_join(sk_test_job_t *job);

/* Closes every handle on the loop, runs it dry and checks it closes. */
void sk_test_loop_drain(uv_loop_t *loop);

#endif
