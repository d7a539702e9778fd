/* test_control_batch.c - ctl_store_batch: many steps in one transaction
 * (sqlite in memory; SKIFF_TEST_STORE=postgres://... for PostgreSQL):
 * created/configured/unchanged/deleted with consecutive resourceVersions
 * and events in step order, all-or-nothing when a step's fn, hook or the
 * store refuses (the failing index reported, nothing written, no event),
 * and dry runs that write nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "control.h"
#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/json.h"

static const char *pg_url(void) {
  const char *u = getenv("SKIFF_TEST_STORE");
  return u && *u ? u : NULL;
}

static ctl_store_t *open_store(void) {
  if (pg_url()) {
    PGconn *c = PQconnectdb(pg_url());
    if (PQstatus(c) != CONNECTION_OK) fail_msg("SKIFF_TEST_STORE: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PQclear(PQexec(c, "DROP TABLE IF EXISTS meta, objects, events, ctl_audit, ctl_tokens, ctl_join_tokens, "
                      "skiff_schema"));
    PQfinish(c);
  }
  ctl_store_opts_t o = {.url = pg_url() ? pg_url() : ":memory:", .durable = 0, .event_retention = 1000};
  ctl_store_t *s = NULL;
  char err[256];
  assert_int_equal(ctl_store_open(&o, &s, err, sizeof err), 0);
  return s;
}

static json_t *route(const char *name, int weight) {
  return json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:[{s:[{s:s, s:i}]}]}}", "apiVersion", "skiff.dev/v1", "kind",
                   "Route", "metadata", "name", name, "namespace", "shop", "spec", "rules", "backendRefs", "name",
                   "echo", "weight", weight);
}

/* fn_ud: the document to write (cur ignored); NULL = refuse */
static int put_doc(const json_t *cur, json_t **next, void *ud) {
  (void)cur;
  if (!ud) return SK_EFORBID;
  *next = json_deep_copy(ud);
  return 0;
}

static int refuse_hook(int64_t rv, const json_t *o, const json_t *n, void *ud) {
  (void)rv, (void)o, (void)n, (void)ud;
  return SK_ECONFLICT;
}

typedef struct evs {
  int n;
  int64_t rv[16];
  char type[16][12];
} evs_t;

static void on_ev(int64_t rv, const char *type, const char *kind, const json_t *obj, void *ud) {
  evs_t *e = ud;
  (void)kind, (void)obj;
  if (e->n < 16) {
    e->rv[e->n] = rv;
    snprintf(e->type[e->n], sizeof e->type[0], "%s", type);
  }
  e->n++;
}

static ctl_store_step_t apply_step(const char *name, json_t *doc) {
  return (ctl_store_step_t){.op = CTL_STEP_APPLY, .kind = "Route", .ns = "shop", .name = name, .fn = put_doc,
                            .fn_ud = doc};
}

static void test_batch(void **state) {
  (void)state;
  ctl_store_t *s = open_store();
  evs_t ev = {0};
  ctl_store_on_event(s, on_ev, &ev);
  json_t *a = route("a", 1), *b = route("b", 2), *c = route("c", 3), *b2 = route("b", 20);
  int64_t rv0 = ctl_store_rv(s);
  size_t failed = 99;

  /* three creates */
  ctl_store_step_t st[3] = {apply_step("a", a), apply_step("b", b), apply_step("c", c)};
  assert_int_equal(ctl_store_batch(s, st, 3, 0, &failed), 0);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(st[i].result, "created");
    assert_int_equal(st[i].rv, rv0 + 1 + i);
    assert_int_equal(ctl_obj_rv(st[i].obj), rv0 + 1 + i);
  }
  ctl_store_steps_done(st, 3);
  assert_int_equal(ev.n, 3);
  assert_string_equal(ev.type[0], "ADDED");
  assert_int_equal(ev.rv[2], rv0 + 3);

  /* unchanged, configured, deleted */
  ctl_store_step_t st2[3] = {apply_step("a", a), apply_step("b", b2),
                             {.op = CTL_STEP_DELETE, .kind = "Route", .ns = "shop", .name = "c"}};
  assert_int_equal(ctl_store_batch(s, st2, 3, 0, &failed), 0);
  assert_string_equal(st2[0].result, "unchanged");
  assert_int_equal(st2[0].rv, rv0 + 1);
  assert_string_equal(st2[1].result, "configured");
  assert_int_equal(st2[1].rv, rv0 + 4);
  assert_string_equal(st2[2].result, "deleted");
  assert_int_equal(st2[2].rv, rv0 + 5);
  ctl_store_steps_done(st2, 3);
  assert_int_equal(ev.n, 5);
  assert_string_equal(ev.type[3], "MODIFIED");
  assert_string_equal(ev.type[4], "DELETED");

  /* all or nothing: fn refuses the last step, a hook refuses, a delete misses */
  int64_t rv1 = ctl_store_rv(s);
  json_t *d = route("d", 4);
  ctl_store_step_t st3[3] = {apply_step("d", d), apply_step("b", b2), apply_step("e", NULL)};
  assert_int_equal(ctl_store_batch(s, st3, 3, 0, &failed), SK_EFORBID);
  assert_int_equal(failed, 2);
  ctl_store_step_t st4[2] = {apply_step("d", d), apply_step("a", a)};
  json_t *b3 = route("b", 33);
  st4[1].hook = refuse_hook;
  st4[1].name = "b";
  st4[1].fn_ud = b3;
  assert_int_equal(ctl_store_batch(s, st4, 2, 0, &failed), SK_ECONFLICT);
  assert_int_equal(failed, 1);
  ctl_store_step_t st5[2] = {apply_step("d", d), {.op = CTL_STEP_DELETE, .kind = "Route", .ns = "shop", .name = "zz"}};
  assert_int_equal(ctl_store_batch(s, st5, 2, 0, &failed), SK_ENOTFOUND);
  assert_int_equal(failed, 1);
  json_t *got = NULL;
  assert_int_equal(ctl_store_get(s, "Route", "shop", "d", &got), SK_ENOTFOUND);
  assert_int_equal(ctl_store_get(s, "Route", "shop", "b", &got), 0);
  json_t *br = json_array_get(json_object_get(json_array_get(sk_json_get(got, "spec.rules"), 0), "backendRefs"), 0);
  assert_int_equal(json_integer_value(json_object_get(br, "weight")), 20); /* not 33: the hook refused */
  assert_int_equal(ctl_obj_rv(got), rv0 + 4);
  json_decref(got);
  assert_int_equal(ctl_store_rv(s), rv1);
  assert_int_equal(ev.n, 5);

  /* dry run: results, nothing written */
  ctl_store_step_t st6[2] = {apply_step("d", d), apply_step("b", b3)};
  assert_int_equal(ctl_store_batch(s, st6, 2, 1, &failed), 0);
  assert_string_equal(st6[0].result, "created");
  assert_int_equal(st6[0].rv, 0);
  assert_string_equal(st6[1].result, "configured");
  ctl_store_steps_done(st6, 2);
  assert_int_equal(ctl_store_get(s, "Route", "shop", "d", &got), SK_ENOTFOUND);
  assert_int_equal(ctl_store_rv(s), rv1);
  assert_int_equal(ev.n, 5);

  json_decref(a), json_decref(b), json_decref(c), json_decref(b2), json_decref(b3), json_decref(d);
  ctl_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
