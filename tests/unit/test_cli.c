/* Unit tests of the skiff CLI: skiff.yaml parsing, dependency order, cycle
 * errors with positions, restart backoff, the state directory. */
#include "sk_test.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_int.h"
#include "skiff/err.h"

static cli_config_t *parse_ok(const char *yaml) {
  cli_config_t *c = NULL;
  char err[4096];
  int rc = cli_config_parse("t/skiff.yaml", yaml, strlen(yaml), &c, err, sizeof err);
  if (rc < 0) fprintf(stderr, "unexpected config error:\n%s", err);
  assert_int_equal(rc, 0);
  assert_non_null(c);
  return c;
}

static int parse_err(const char *yaml, char *err, size_t errlen) {
  cli_config_t *c = NULL;
  int rc = cli_config_parse("t/skiff.yaml", yaml, strlen(yaml), &c, err, errlen);
  assert_null(c);
  return rc;
}

static void order_names(const cli_config_t *c, char *out, size_t outlen) {
  size_t order[CLI_MAX_DAEMONS];
  char err[512];
  assert_int_equal(cli_order(c, order, err, sizeof err), 0);
  out[0] = 0;
  for (size_t i = 0; i < c->n; i++) {
    strncat(out, c->d[order[i]].name, outlen - strlen(out) - 1);
    if (i + 1 < c->n) strncat(out, ",", outlen - strlen(out) - 1);
  }
}

static void test_config_fields(void **state) {
  cli_config_t *c = parse_ok("state_dir: st\n"
                             "daemons:\n"
                             "  - name: echo\n"
                             "    command: skiff-echo\n"
                             "    config: echo.yaml\n"
                             "    args: [--log-level, debug]\n"
                             "    env: [A=1, B=two]\n"
                             "    admin: 127.0.0.1:9911\n"
                             "    restart: on-failure\n"
                             "    start_timeout: 5s\n"
                             "  - name: other\n"
                             "    ready_url: http://127.0.0.1:1234/ok\n"
                             "    restart: never\n");
  assert_int_equal(c->n, 2);
  assert_string_equal(c->state_dir, "st");
  assert_string_equal(c->dir, "t");
  assert_string_equal(c->d[0].name, "echo");
  assert_string_equal(c->d[0].command, "skiff-echo");
  assert_string_equal(c->d[0].config, "echo.yaml");
  assert_int_equal(c->d[0].args.n, 2);
  assert_string_equal(c->d[0].args.v[1], "debug");
  assert_int_equal(c->d[0].env.n, 2);
  assert_int_equal(c->d[0].restart, CLI_RESTART_ON_FAILURE);
  assert_int_equal(c->d[0].start_timeout_ms, 5000);
  assert_int_equal(c->d[0].stop_timeout_ms, 10000);
  assert_int_equal(c->d[0].pos.line, 3);
  assert_int_equal(c->d[1].pos.line, 11);
  assert_int_equal(c->d[1].restart, CLI_RESTART_NEVER);
  assert_int_equal(c->d[1].start_timeout_ms, 30000);
  char url[512];
  cli_daemon_ready_url(&c->d[0], url, sizeof url);
  assert_string_equal(url, "http://127.0.0.1:9911/readyz");
  cli_daemon_ready_url(&c->d[1], url, sizeof url);
  assert_string_equal(url, "http://127.0.0.1:1234/ok");
  cli_config_free(c);
}

/* identity: the supervisor's join-token settings and per-daemon names */
static void test_config_identity(void **state) {
  (void)state;
  cli_config_t *c = parse_ok("daemons:\n"
                             "  - {name: a, identity: policy}\n"
                             "  - {name: b, identity: proxy/ingress}\n"
                             "  - {name: c}\n"
                             "identity:\n"
                             "  control: https://127.0.0.1:7400\n");
  assert_string_equal(c->d[0].identity, "policy");
  assert_string_equal(c->d[1].identity, "proxy/ingress");
  assert_string_equal(c->d[2].identity, "");
  assert_string_equal(c->ident.control, "https://127.0.0.1:7400");
  assert_string_equal(c->ident.admin_token, ".skiff/control-state/admin.token");
  assert_string_equal(c->ident.ca, ".skiff/control-state/ca/bundle.pem");
  assert_int_equal(c->ident.token_ttl_ms, 600000);
  cli_config_free(c);
  char err[2048];
  assert_int_not_equal(parse_err("daemons:\n  - {name: a, identity: admin/x}\n", err, sizeof err), 0);
  assert_non_null(strstr(err, "t/skiff.yaml:2:"));
  assert_non_null(strstr(err, "KIND/NAME"));
  assert_int_not_equal(parse_err("daemons:\n  - {name: a, identity: 'a b'}\n", err, sizeof err), 0);
  assert_non_null(strstr(err, "t/skiff.yaml:2:"));
  assert_int_not_equal(parse_err("daemons:\n  - {name: a, identity: policy}\n", err, sizeof err), 0);
  assert_non_null(strstr(err, "t/skiff.yaml:2:"));
  assert_non_null(strstr(err, "identity needs the top-level identity.control"));
  assert_int_not_equal(parse_err("identity: {color: red}\ndaemons: []\n", err, sizeof err), 0);
  assert_non_null(strstr(err, "t/skiff.yaml:1:"));
}

static void test_order(void **state) {
  char names[256];
  /* declared out of order: web needs api needs db; cache is independent */
  cli_config_t *c = parse_ok("daemons:\n"
                             "  - name: web\n"
                             "    depends_on: [api, cache]\n"
                             "  - name: api\n"
                             "    depends_on: db\n"
                             "  - name: cache\n"
                             "  - name: db\n");
  order_names(c, names, sizeof names);
  assert_string_equal(names, "cache,db,api,web");
  assert_int_equal(c->d[0].dep_pos[0].line, 3);
  assert_int_equal(c->d[0].dep_pos[1].line, 3);
  assert_true(c->d[0].dep_pos[1].col > c->d[0].dep_pos[0].col);
  assert_int_equal(c->d[1].dep_pos[0].line, 5);
  assert_int_equal(c->d[1].dep_pos[0].col, 17);
  cli_config_free(c);

  /* independent daemons keep declaration order */
  c = parse_ok("daemons:\n  - name: c\n  - name: b\n  - name: a\n");
  order_names(c, names, sizeof names);
  assert_string_equal(names, "c,b,a");
  cli_config_free(c);

  /* a diamond */
  c = parse_ok("daemons:\n"
               "  - {name: top, depends_on: [left, right]}\n"
               "  - {name: left, depends_on: [base]}\n"
               "  - {name: right, depends_on: [base]}\n"
               "  - {name: base}\n");
  order_names(c, names, sizeof names);
  assert_string_equal(names, "base,left,right,top");
  cli_config_free(c);

  /* empty config is fine */
  c = parse_ok("daemons: []\n");
  assert_int_equal(c->n, 0);
  cli_config_free(c);
}

static void test_cycle(void **state) {
  char err[4096];
  int rc = parse_err("daemons:\n"
                     "  - name: a\n"
                     "    depends_on: [b]\n"
                     "  - name: b\n"
                     "    depends_on:\n"
                     "      - c\n"
                     "  - name: c\n"
                     "    depends_on: [a]\n",
                     err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:3:18: dependency cycle: a -> b -> c -> a"));

  rc = parse_err("daemons:\n"
                 "  - name: ok\n"
                 "  - name: x\n"
                 "    depends_on: [y]\n"
                 "  - name: y\n"
                 "    depends_on: [x]\n",
                 err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:4:18: dependency cycle: x -> y -> x"));

  rc = parse_err("daemons:\n  - name: self\n    depends_on: [self]\n", err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:3:18: daemon 'self' depends on itself"));

  rc = parse_err("daemons:\n  - name: a\n    depends_on: [ghost]\n", err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:3:18: daemon 'a' depends on unknown daemon 'ghost'"));
}

static void test_config_errors(void **state) {
  char err[4096];
  /* every problem in one run, each with a position */
  int rc = parse_err("daemons:\n"
                     "  - name: a\n"
                     "    restart: sometimes\n"
                     "    bogus: 1\n"
                     "  - name: a\n"
                     "  - name: ../evil\n"
                     "  - command: x\n"
                     "  - name: e\n"
                     "    env: [NOEQUALS]\n"
                     "    ready_url: ftp://x\n",
                     err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:3:"));  /* restart */
  assert_non_null(strstr(err, "t/skiff.yaml:4:"));  /* unknown key */
  assert_non_null(strstr(err, "t/skiff.yaml:6:"));  /* bad name */
  assert_non_null(strstr(err, "t/skiff.yaml:9:"));  /* env */
  assert_non_null(strstr(err, "t/skiff.yaml:10:")); /* url */
  assert_non_null(strstr(err, "name"));

  rc = parse_err("daemons:\n  - name: a\n  - name: a\n", err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:3:5: daemons: duplicate daemon name 'a'"));

  rc = parse_err("daemons: [\n", err, sizeof err);
  assert_int_equal(rc, SK_ECONFIG);
  assert_non_null(strstr(err, "t/skiff.yaml:"));
}

static void test_backoff(void **state) {
  cli_backoff_t b;
  cli_backoff_init(&b, 500, 30000, 30000);
  uint64_t expect[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
  for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
    assert_int_equal(cli_backoff_delay(&b, 100), expect[i]);
  /* a process that stayed up long enough starts over */
  assert_int_equal(cli_backoff_delay(&b, 30000), 500);
  assert_int_equal(cli_backoff_delay(&b, 29999), 1000);
  assert_int_equal(cli_backoff_delay(&b, 10), 2000);
  /* odd caps never overshoot */
  cli_backoff_init(&b, 300, 1000, 0);
  assert_int_equal(cli_backoff_delay(&b, 0), 300);
  assert_int_equal(cli_backoff_delay(&b, 0), 600);
  assert_int_equal(cli_backoff_delay(&b, 0), 1000);
  assert_int_equal(cli_backoff_delay(&b, 1000000), 1000); /* reset disabled */
}

static void test_durations(void **state) {
  uint64_t ms;
  char buf[32];
  assert_int_equal(cli_parse_duration_ms("30s", &ms), 0);
  assert_int_equal(ms, 30000);
  assert_int_equal(cli_parse_duration_ms("250ms", &ms), 0);
  assert_int_equal(ms, 250);
  assert_int_equal(cli_parse_duration_ms("2m", &ms), 0);
  assert_int_equal(ms, 120000);
  assert_int_equal(cli_parse_duration_ms("5", &ms), 0);
  assert_int_equal(ms, 5000);
  assert_int_equal(cli_parse_duration_ms("5x", &ms), SK_EINVAL);
  assert_int_equal(cli_parse_duration_ms("-1s", &ms), SK_EINVAL);
  assert_int_equal(cli_parse_duration_ms("", &ms), SK_EINVAL);
  cli_fmt_duration(42, buf, sizeof buf);
  assert_string_equal(buf, "42s");
  cli_fmt_duration(3725, buf, sizeof buf);
  assert_string_equal(buf, "1h2m");
  cli_fmt_duration(90000, buf, sizeof buf);
  assert_string_equal(buf, "1d1h");
}

static void test_state_dir(void **state) {
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/state/nested", sk_test_tmpdir());
  assert_int_equal(cli_state_prepare(dir), 0);
  snprintf(path, sizeof path, "%s/logs", dir);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));

  cli_state_t a, b;
  pid_t other = -1;
  assert_int_equal(cli_state_lock(&a, dir, &other), 0);
  assert_int_equal(cli_state_live_pid(dir), getpid());
  /* a second supervisor for the same dir is refused and told who holds it */
  assert_int_equal(cli_state_lock(&b, dir, &other), SK_EBUSY);
  assert_int_equal(other, getpid());
  cli_state_unlock(&a);
  assert_int_equal(cli_state_live_pid(dir), 0);
  assert_int_equal(cli_state_lock(&b, dir, &other), 0);
  cli_state_unlock(&b);

  /* atomic write replaces the whole file */
  snprintf(path, sizeof path, "%s/status.json", dir);
  assert_int_equal(cli_write_atomic(path, "{\"a\":1}\n", 8), 0);
  assert_int_equal(cli_write_atomic(path, "{}\n", 3), 0);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(cli_read_file(path, 100, &text, &len), 0);
  assert_int_equal(len, 3);
  assert_string_equal(text, "{}\n");
  free(text);
  assert_int_equal(cli_read_file(path, 2, &text, &len), SK_E2BIG);
  assert_int_equal(cli_read_file("/nonexistent/x", 2, &text, &len), SK_ENOENT);
}

static void test_resolve(void **state) {
  char dir[512], exe[600];
  char *out = NULL;
  snprintf(dir, sizeof dir, "%s/bin", sk_test_tmpdir());
  mkdir(dir, 0755);
  snprintf(exe, sizeof exe, "%s/mydaemon", dir);
  int fd = open(exe, O_WRONLY | O_CREAT, 0755);
  assert_true(fd >= 0);
  close(fd);
  /* next to skiff first */
  assert_int_equal(cli_resolve_command("mydaemon", "/nowhere", dir, &out), 0);
  assert_string_equal(out, exe);
  free(out);
  /* on PATH */
  assert_int_equal(cli_resolve_command("sh", NULL, dir, &out), 0);
  assert_non_null(strstr(out, "/sh"));
  free(out);
  /* a relative path resolves against the config directory */
  assert_int_equal(cli_resolve_command("bin/mydaemon", sk_test_tmpdir(), NULL, &out), 0);
  assert_string_equal(out, exe);
  free(out);
  assert_int_equal(cli_resolve_command("no-such-daemon-xyz", NULL, dir, &out), SK_ENOENT);
  assert_null(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_fields), cmocka_unit_test(test_order), cmocka_unit_test(test_config_identity),
      cmocka_unit_test(test_cycle),         cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_backoff),       cmocka_unit_test(test_durations),
      cmocka_unit_test(test_state_dir),     cmocka_unit_test(test_resolve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
