/* Unit tests: error table and memory pools. */
#include "sk_test.h"

#include <string.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/mem.h"

static void test_err_table(void **state) {
  assert_string_equal(sk_err_name(SK_EINVAL), "EINVAL");
  assert_string_equal(sk_strerror(SK_EINVAL), "invalid argument");
  assert_string_equal(sk_err_name(SK_ECONFIG), "ECONFIG");
  assert_string_equal(sk_strerror(SK_ELIMIT), "limit exceeded");
  assert_string_equal(sk_err_name(-123456), "EUNKNOWN");
  assert_string_equal(sk_err_name(0), "OK");
  assert_int_equal(sk_err_from_errno(ENOENT), SK_ENOENT);
  assert_int_equal(sk_err_from_errno(-ETIMEDOUT), SK_ETIMEDOUT);
  assert_int_equal(sk_err_from_errno(EDOM), SK_EIO);
  assert_int_equal(sk_err_from_uv(UV_EOF), SK_ECLOSED);
  assert_int_equal(sk_err_from_uv(UV_ECONNREFUSED), SK_ECONNREFUSED);
}

static void test_pool(void **state) {
  sk_pool_t *p = sk_pool_new();
  char *a = sk_pool_strdup(p, "hello");
  void *big = sk_pool_alloc(p, 100000); /* larger than a chunk */
  memset(big, 1, 100000);
  char *b = sk_pool_printf(p, "%s-%d", a, 42);
  assert_string_equal(b, "hello-42");
  assert_true(((uintptr_t)sk_pool_alloc(p, 3) % 16) == 0);
  assert_true(sk_pool_used(p) >= 100000);
  sk_pool_clear(p);
  assert_int_equal(sk_pool_used(p), 0);
  for (int i = 0; i < 10000; i++) sk_pool_alloc(p, 100);
  sk_pool_free(p);
  sk_pool_free(NULL);
}

static void test_buf(void **state) {
  sk_buf_t b;
  sk_buf_init(&b);
  for (int i = 0; i < 1000; i++) sk_buf_printf(&b, "%d,", i);
  assert_true(b.len > 1000);
  sk_buf_consume(&b, 2);
  assert_memory_equal(b.data, "1,2,", 4);
  sk_buf_reset(&b);
  sk_buf_puts(&b, "x");
  assert_string_equal(sk_buf_cstr(&b), "x");
  sk_buf_done(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_err_table),
      cmocka_unit_test(test_pool),
      cmocka_unit_test(test_buf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
