/* AdmissionReview (admission.k8s.io/v1) decoding and answers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define POL_MAX_WARNINGS 32
#define POL_MAX_WARNING_LEN 1024

__attribute__((format(printf, 3, 4))) static int bad(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return SK_EINVAL;
}

int pol_review_decode(const char *body, size_t len, size_t max_bytes, int max_depth, json_t **review, char *err,
                      size_t errlen) {
  *review = NULL;
  if (!max_bytes) max_bytes = POL_REVIEW_MAX_BYTES;
  if (!max_depth) max_depth = POL_REVIEW_MAX_DEPTH;
  if (len > max_bytes) {
    snprintf(err, errlen, "AdmissionReview larger than %zu bytes", max_bytes);
    return SK_ELIMIT;
  }
  if (!body || !len) return bad(err, errlen, "empty body: expected an AdmissionReview (admission.k8s.io/v1) as JSON");
  json_t *v = NULL;
  char perr[256];
  int rc = sk_json_parse(body, len, max_bytes, max_depth, &v, perr, sizeof perr);
  if (rc < 0) {
    snprintf(err, errlen, "body is not valid JSON: %s", perr);
    return rc;
  }
  const char *api, *kind, *uid, *op;
  json_t *req, *obj, *old;
  if (!json_is_object(v)) {
    rc = bad(err, errlen, "expected a JSON object (an AdmissionReview)");
    goto fail;
  }
  api = json_string_value(json_object_get(v, "apiVersion"));
  kind = json_string_value(json_object_get(v, "kind"));
  if (!api || (strcmp(api, "admission.k8s.io/v1") && strcmp(api, "admission.k8s.io/v1beta1"))) {
    rc = bad(err, errlen, "apiVersion must be admission.k8s.io/v1 (got %.64s)", api ? api : "nothing");
    goto fail;
  }
  if (!kind || strcmp(kind, "AdmissionReview")) {
    rc = bad(err, errlen, "kind must be AdmissionReview (got %.64s)", kind ? kind : "nothing");
    goto fail;
  }
  req = json_object_get(v, "request");
  if (!json_is_object(req)) {
    rc = bad(err, errlen, "request is missing or not an object");
    goto fail;
  }
  uid = json_string_value(json_object_get(req, "uid"));
  if (!uid || !*uid || strlen(uid) > 256 || strlen(uid) != json_string_length(json_object_get(req, "uid"))) {
    rc = bad(err, errlen, "request.uid is missing or not a string of at most 256 characters without NUL");
    goto fail;
  }
  op = json_string_value(json_object_get(req, "operation"));
  if (!op || (strcmp(op, "CREATE") && strcmp(op, "UPDATE") && strcmp(op, "DELETE") && strcmp(op, "CONNECT"))) {
    rc = bad(err, errlen, "request.operation must be CREATE, UPDATE, DELETE or CONNECT");
    goto fail;
  }
  if (!json_is_object(json_object_get(req, "kind")) || !json_is_string(sk_json_get(req, "kind.kind"))) {
    rc = bad(err, errlen, "request.kind.kind is missing");
    goto fail;
  }
  obj = json_object_get(req, "object");
  old = json_object_get(req, "oldObject");
  if (obj && !json_is_object(obj) && !json_is_null(obj)) {
    rc = bad(err, errlen, "request.object must be an object or null");
    goto fail;
  }
  if (old && !json_is_object(old) && !json_is_null(old)) {
    rc = bad(err, errlen, "request.oldObject must be an object or null");
    goto fail;
  }
  if (!strcmp(op, "DELETE") ? !json_is_object(old) && !json_is_object(obj) : !json_is_object(obj) && strcmp(op, "CONNECT")) {
    rc = bad(err, errlen, "request.%s is missing for %s", !strcmp(op, "DELETE") ? "oldObject" : "object", op);
    goto fail;
  }
  *review = v;
  return 0;
fail:
  json_decref(v);
  return rc;
}

static void base64(sk_buf_t *out, const unsigned char *s, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  char q[4];
  for (; i + 2 < n; i += 3) {
    q[0] = t[s[i] >> 2];
    q[1] = t[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
    q[2] = t[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
    q[3] = t[s[i + 2] & 63];
    sk_buf_append(out, q, 4);
  }
  if (i < n) {
    q[0] = t[s[i] >> 2];
    if (i + 1 < n) {
      q[1] = t[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
      q[2] = t[(s[i + 1] & 15) << 2];
    } else {
      q[1] = t[(s[i] & 3) << 4];
      q[2] = '=';
    }
    q[3] = '=';
    sk_buf_append(out, q, 4);
  }
}

/* Appends s[0..n) as a JSON string. Input is UTF-8 (it came from jansson
 * or from the policies); control characters are escaped. */
static void json_str(sk_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sk_buf_reserve(b, n + 2);
  sk_buf_append(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    sk_buf_append(b, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': sk_buf_append(b, "\\\"", 2); break;
    case '\\': sk_buf_append(b, "\\\\", 2); break;
    case '\n': sk_buf_append(b, "\\n", 2); break;
    case '\t': sk_buf_append(b, "\\t", 2); break;
    case '\r': sk_buf_append(b, "\\r", 2); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sk_buf_append(b, u, 6);
    }
    }
  }
  sk_buf_append(b, s + run, n - run);
  sk_buf_append(b, "\"", 1);
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
  if (len <= max) return len;
  size_t n = max;
  while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  return n;
}

/* The answer is written straight into b: building it as jansson values and
 * dumping them cost more than the evaluation for a denied review (the
 * denial message and warnings were escaped one character at a time through
 * jansson's dump callback). */
int pol_review_encode(const json_t *review, const pol_report_t *r, int mutate, sk_buf_t *b) {
  const char *api = sk_json_get_str(review, "apiVersion", "admission.k8s.io/v1");
  const json_t *req = json_object_get(review, "request");
  const char *uid = json_string_value(json_object_get(req, "uid"));
  sk_buf_puts(b, "{\"apiVersion\":");
  json_str(b, api, strlen(api));
  sk_buf_puts(b, ",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
  if (uid) json_str(b, uid, json_string_length(json_object_get(req, "uid")));
  else sk_buf_puts(b, "null");
  int denied = pol_report_denied(r);
  sk_buf_puts(b, denied ? ",\"allowed\":false" : ",\"allowed\":true");
  if (denied) {
    char *msg = pol_report_denial(r, req);
    const char *m = msg ? msg : "denied by policy";
    sk_buf_puts(b, ",\"status\":{\"status\":\"Failure\",\"code\":403,\"reason\":\"Forbidden\",\"message\":");
    json_str(b, m, strlen(m));
    sk_buf_puts(b, "}");
    free(msg);
  }
  size_t nwarn = 0;
  for (size_t i = 0; i < r->n && nwarn < POL_MAX_WARNINGS; i++) {
    const pol_result_t *x = &r->v[i];
    if (x->action == POL_ENFORCE && !(x->type == POL_RULE_MUTATE)) continue;
    if (x->status != POL_FAIL && x->status != POL_ERROR && x->status != POL_WARN) continue;
    char w[POL_MAX_WARNING_LEN];
    int wl = snprintf(w, sizeof w, "policy %s.%s: %s", x->policy, x->rule,
                      x->message ? x->message : pol_status_name(x->status));
    if (wl < 0) continue;
    sk_buf_puts(b, nwarn++ ? "," : ",\"warnings\":[");
    json_str(b, w, utf8_cut(w, (size_t)wl, sizeof w - 1));
  }
  if (nwarn) sk_buf_puts(b, "]");
  if (mutate && !denied && r->patch && json_array_size(r->patch)) {
    sk_buf_t pj;
    sk_buf_init(&pj);
    sk_json_dump_buf(r->patch, &pj);
    sk_buf_puts(b, ",\"patchType\":\"JSONPatch\",\"patch\":\"");
    base64(b, (const unsigned char *)pj.data, pj.len);
    sk_buf_puts(b, "\"");
    sk_buf_done(&pj);
  }
  sk_buf_puts(b, "}}");
  return 0;
}
