/* test_log.c - levels, text and JSON-lines formats, escaping, files,
 * thread-safe whole lines. */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/log.h"

#define assert_has(hay, needle)                                                                                 \
  do {                                                                                                          \
    if (!strstr((hay), (needle))) fail_msg("missing '%s' in:\n%s", (needle), (hay));                           \
  } while (0)

/* 2024-05-01T12:00:00.123Z */
static const uint64_t TS = 1714564800123ull;

static void test_levels_parse(void **state) {
  assert_int_equal(sk_log_level_parse("trace"), SK_LOG_TRACE);
  assert_int_equal(sk_log_level_parse("DEBUG"), SK_LOG_DEBUG);
  assert_int_equal(sk_log_level_parse("info"), SK_LOG_INFO);
  assert_int_equal(sk_log_level_parse("warning"), SK_LOG_WARN);
  assert_int_equal(sk_log_level_parse("error"), SK_LOG_ERROR);
  assert_int_equal(sk_log_level_parse("off"), SK_LOG_OFF);
  assert_int_equal(sk_log_level_parse("loud"), SK_EINVAL);
  assert_int_equal(sk_log_level_parse(NULL), SK_EINVAL);
  assert_string_equal(sk_log_level_name(SK_LOG_WARN), "warn");
  assert_string_equal(sk_log_level_name(42), "?");
  assert_int_equal(sk_log_format_parse("json"), SK_LOG_JSON);
  assert_int_equal(sk_log_format_parse("Text"), SK_LOG_TEXT);
  assert_int_equal(sk_log_format_parse("xml"), SK_EINVAL);
}

static void test_text_format(void **state) {
  char buf[1024];
  sk_log_field_t f[] = {SK_LF_S("addr", "127.0.0.1:8080"), SK_LF_S("note", "two words"), SK_LF_I("n", -3),
                        SK_LF_U("u", 7), SK_LF_B("ok", 1), SK_LF_D("r", 0.5), SK_LF_S("none", NULL)};
  size_t n = sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, TS, SK_LOG_INFO, "proxy", "listening\nnow", f, 7);
  assert_int_equal(n, strlen(buf));
  assert_string_equal(buf, "2024-05-01T12:00:00.123Z INFO  proxy: listening\\nnow addr=127.0.0.1:8080 "
                           "note=\"two words\" n=-3 u=7 ok=true r=0.5 none=-\n");
  sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, TS, SK_LOG_ERROR, "", "boom", NULL, 0);
  assert_string_equal(buf, "2024-05-01T12:00:00.123Z ERROR boom\n");
}

static void test_json_format(void **state) {
  char buf[2048];
  sk_log_field_t f[] = {SK_LF_S("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), SK_LF_S("q", "a\"b\\c\n\x01"),
                        SK_LF_I("status", 503), SK_LF_B("retry", 0), SK_LF_D("nan", 0.0 / 0.0),
                        SK_LF_S("bad_utf8", "x\xff" "y"), SK_LF_S("nil", NULL)};
  sk_log_format_line(buf, sizeof buf, SK_LOG_JSON, TS, SK_LOG_WARN, "control.api", "slow \"request\"", f, 7);
  assert_string_equal(buf, "{\"ts\":\"2024-05-01T12:00:00.123Z\",\"level\":\"warn\",\"component\":\"control.api\","
                           "\"msg\":\"slow \\\"request\\\"\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
                           "\"q\":\"a\\\"b\\\\c\\n\\u0001\",\"status\":503,\"retry\":false,\"nan\":null,"
                           "\"bad_utf8\":\"x\xef\xbf\xbdy\",\"nil\":null}\n");
  /* and it is valid JSON */
  json_error_t je;
  json_t *v = json_loads(buf, 0, &je);
  assert_non_null(v);
  assert_string_equal(json_string_value(json_object_get(v, "q")), "a\"b\\c\n\x01");
  assert_int_equal(json_integer_value(json_object_get(v, "status")), 503);
  json_decref(v);
}

static char *slurp(const char *path) {
  static char buf[1 << 20];
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static void test_file_sink_levels_kv(void **state) {
  char path[512];
  snprintf(path, sizeof path, "%s/a.log", sk_test_tmpdir());
  sk_log_sink_t *s;
  assert_int_equal(sk_log_sink_new(path, SK_LOG_INFO, SK_LOG_JSON, &s), 0);
  sk_logger_t *l = sk_logger_new(s, "gitops");
  assert_string_equal(sk_logger_component(l), "gitops");
  assert_false(sk_log_enabled(l, SK_LOG_DEBUG));
  assert_true(sk_log_enabled(l, SK_LOG_INFO));
  sk_log_debug(l, "hidden %d", 1);
  sk_log_info(l, "synced %d apps", 3);
  sk_log_kv(l, SK_LOG_ERROR, "apply failed", "app", "shop", "trace_id", "abc123", NULL);
  sk_log_sink_set_level(s, SK_LOG_DEBUG);
  sk_log_debug(l, "now visible");
  sk_log_sink_set_format(s, SK_LOG_TEXT);
  sk_log_warn(l, "plain");
  sk_log_sink_set_level(s, SK_LOG_OFF);
  sk_log_error(l, "off means off");
  char *txt = slurp(path);
  assert_null(strstr(txt, "hidden"));
  assert_null(strstr(txt, "off means off"));
  assert_has(txt, "\"level\":\"info\",\"component\":\"gitops\",\"msg\":\"synced 3 apps\"}\n");
  assert_has(txt, "\"msg\":\"apply failed\",\"app\":\"shop\",\"trace_id\":\"abc123\"}\n");
  assert_has(txt, "\"msg\":\"now visible\"");
  assert_has(txt, " WARN  gitops: plain\n");
  /* long messages go through the heap path */
  sk_log_sink_set_level(s, SK_LOG_INFO);
  char big[3000];
  memset(big, 'z', sizeof big - 1);
  big[sizeof big - 1] = 0;
  sk_log_info(l, "%s", big);
  assert_has(slurp(path), big);
  /* reopen after rotation */
  char rotated[600];
  snprintf(rotated, sizeof rotated, "%s.1", path);
  assert_int_equal(rename(path, rotated), 0);
  assert_int_equal(sk_log_sink_reopen(s), 0);
  sk_log_info(l, "after rotation");
  assert_has(slurp(path), "after rotation");
  assert_null(strstr(slurp(path), "synced"));
  sk_logger_free(l);
  sk_log_sink_free(s);

  assert_true(sk_log_sink_new("/nonexistent-dir/x.log", SK_LOG_INFO, SK_LOG_TEXT, &s) < 0);
  assert_null(s);
}

static void test_huge_line_dropped(void **state) {
  char path[512];
  snprintf(path, sizeof path, "%s/huge.log", sk_test_tmpdir());
  sk_log_sink_t *s;
  assert_int_equal(sk_log_sink_new(path, SK_LOG_INFO, SK_LOG_JSON, &s), 0);
  sk_logger_t *l = sk_logger_new(s, "x");
  size_t n = 200000;
  char *v = malloc(n + 1);
  memset(v, 'q', n);
  v[n] = 0;
  sk_log_kv(l, SK_LOG_INFO, "big field", "v", v, NULL);
  free(v);
  char *txt = slurp(path);
  assert_has(txt, "\"msg\":\"log line too long; dropped\",\"truncated_msg\":\"big field\"");
  json_error_t je;
  json_t *j = json_loads(txt, 0, &je);
  assert_non_null(j);
  json_decref(j);
  sk_logger_free(l);
  sk_log_sink_free(s);
}

typedef struct tctx {
  sk_logger_t *l;
  int id;
} tctx_t;

static void *writer(void *arg) {
  tctx_t *t = arg;
  for (int i = 0; i < 500; i++) sk_log(t->l, SK_LOG_INFO, "thread %d line %d %s", t->id, i, "padding-padding-padding");
  return NULL;
}

static void test_threads_whole_lines(void **state) {
  char path[512];
  snprintf(path, sizeof path, "%s/mt.log", sk_test_tmpdir());
  sk_log_sink_t *s;
  assert_int_equal(sk_log_sink_new(path, SK_LOG_INFO, SK_LOG_JSON, &s), 0);
  sk_logger_t *l = sk_logger_new(s, "mt");
  pthread_t th[4];
  tctx_t ctx[4];
  for (int i = 0; i < 4; i++) {
    ctx[i] = (tctx_t){l, i};
    pthread_create(&th[i], NULL, writer, &ctx[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  FILE *f = fopen(path, "r");
  char line[1024];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j) fail_msg("line %d is not one JSON object: %s", lines, line);
    json_decref(j);
    lines++;
  }
  fclose(f);
  assert_int_equal(lines, 2000);
  sk_logger_free(l);
  sk_log_sink_free(s);
}

static void test_fd_sink_and_default(void **state) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  sk_log_sink_t *s = sk_log_sink_new_fd(p[1], SK_LOG_TRACE, SK_LOG_TEXT);
  sk_logger_t *l = sk_logger_new(s, "fd");
  sk_log_trace(l, "t %s", "x");
  char buf[256] = {0};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  assert_true(n > 0);
  assert_has(buf, " TRACE fd: t x\n");
  sk_logger_set_sink(l, NULL);
  assert_ptr_equal(sk_logger_sink(l), sk_log_default_sink());
  assert_int_equal(sk_log_sink_level(sk_log_default_sink()), SK_LOG_INFO);
  sk_log_sink_free(sk_log_default_sink()); /* never freed */
  sk_logger_free(l);
  sk_log_sink_free(s);
  sk_log_sink_free(NULL);
  sk_logger_free(NULL);
  close(p[0]);
  close(p[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_levels_parse),        cmocka_unit_test(test_text_format),
      cmocka_unit_test(test_json_format),         cmocka_unit_test(test_file_sink_levels_kv),
      cmocka_unit_test(test_huge_line_dropped),   cmocka_unit_test(test_threads_whole_lines),
      cmocka_unit_test(test_fd_sink_and_default),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
