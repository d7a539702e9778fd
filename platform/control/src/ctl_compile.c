/* Services and Routes compiled into skiff-proxy's config model (the
 * `clusters` and `routes` keys of docs/proxy.md): the snapshot control will
 * push to proxies. Today it is served for inspection at GET
 * /api/v1/proxyconfig and checked in tests with `skiff-proxy --check`.
 *
 *   Service ns/name          -> cluster "ns/name"
 *   Route rule i, match j,   -> route "ns/name/i/j[/h]" (one per hostname)
 *   hostname h
 * Routes are ordered by specificity as the Gateway API asks (exact path,
 * then the longest prefix, then regex, then more header/query/method
 * conditions), because the proxy takes the first match. Anything that
 * cannot be expressed (a backend Service that does not exist, a prefix
 * rewrite without a prefix match, a hostname rewrite) is left out and
 * reported as a warning with the object and field path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "skiff/json.h"

typedef struct croute {
  json_t *route;
  int path_rank;   /* 0 exact, 1 prefix, 2 regex, 3 none */
  size_t path_len;
  size_t nconds;
  size_t seq;      /* input order, for a stable sort */
} croute_t;

static int cmp_route(const void *a, const void *b) {
  const croute_t *x = a, *y = b;
  if (x->path_rank != y->path_rank) return x->path_rank < y->path_rank ? -1 : 1;
  if (x->path_len != y->path_len) return x->path_len > y->path_len ? -1 : 1;
  if (x->nconds != y->nconds) return x->nconds > y->nconds ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static json_t *compile_cluster(const json_t *svc) {
  const json_t *spec = json_object_get(svc, "spec");
  char name[CTL_NS_LEN + CTL_NAME_LEN + 2];
  snprintf(name, sizeof name, "%s/%s", ctl_obj_ns(svc), ctl_obj_name(svc));
  json_t *c = json_pack("{s:s, s:O}", "name", name, "endpoints", json_object_get(spec, "endpoints"));
  static const char *const map[][2] = {{"lb", "lb"},
                                       {"protocol", "protocol"},
                                       {"connectTimeout", "connect_timeout"},
                                       {"requestTimeout", "request_timeout"},
                                       {"maxConnections", "max_connections"}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    json_t *v = json_object_get(spec, map[i][0]);
    if (v) json_object_set(c, map[i][1], v);
  }
  const json_t *hc = json_object_get(spec, "healthCheck");
  if (json_is_object(hc)) {
    json_t *h = json_object();
    static const char *const hmap[][2] = {{"path", "path"},
                                          {"interval", "interval"},
                                          {"timeout", "timeout"},
                                          {"healthyThreshold", "healthy_threshold"},
                                          {"unhealthyThreshold", "unhealthy_threshold"}};
    for (size_t i = 0; i < sizeof hmap / sizeof hmap[0]; i++) {
      json_t *v = json_object_get(hc, hmap[i][0]);
      if (v) json_object_set(h, hmap[i][1], v);
    }
    json_object_set_new(c, "health_check", h);
  }
  return c;
}

static json_t *kv_matchers(const json_t *list) {
  json_t *out = json_array();
  size_t i;
  json_t *m;
  json_array_foreach(list, i, m) {
    const char *type = sk_json_get_str(m, "type", "Exact");
    json_array_append_new(out, json_pack("{s:s, s:s}", "name", sk_json_get_str(m, "name", ""),
                                         !strcmp(type, "RegularExpression") ? "regex" : "exact",
                                         sk_json_get_str(m, "value", "")));
  }
  return out;
}

typedef struct cctx {
  json_t *services; /* "ns/name" -> true */
  croute_t *v;
  size_t n, cap, seq;
  ctl_errs_t *warn;
} cctx_t;

static void add_route(cctx_t *c, json_t *route, int rank, size_t plen, size_t nconds) {
  if (c->n == c->cap) c->v = sk_xrealloc(c->v, (c->cap = c->cap ? c->cap * 2 : 64) * sizeof *c->v);
  c->v[c->n++] = (croute_t){route, rank, plen, nconds, c->seq++};
}

static void compile_route(cctx_t *c, const json_t *rt) {
  const char *ns = ctl_obj_ns(rt), *rname = ctl_obj_name(rt);
  char obj[CTL_NS_LEN + CTL_NAME_LEN + 16];
  snprintf(obj, sizeof obj, "Route %s/%s: ", ns, rname);
  const json_t *spec = json_object_get(rt, "spec");
  const json_t *hosts = json_object_get(spec, "hostnames");
  size_t nh = json_array_size(hosts);
  size_t i;
  json_t *rule;
  json_array_foreach(json_object_get(spec, "rules"), i, rule) {
    char field[768]; /* cut to CTL_FIELD_MAX by ctl_errs_add */
    /* backends */
    json_t *backends = json_array();
    uint64_t total = 0;
    size_t k;
    json_t *br;
    json_array_foreach(json_object_get(rule, "backendRefs"), k, br) {
      const char *bns = sk_json_get_str(br, "namespace", ns);
      char cl[CTL_NS_LEN + CTL_NAME_LEN + 2];
      snprintf(cl, sizeof cl, "%s/%s", bns, sk_json_get_str(br, "name", ""));
      if (!json_object_get(c->services, cl)) {
        snprintf(field, sizeof field, "%sspec.rules[%zu].backendRefs[%zu]", obj, i, k);
        ctl_errs_add(c->warn, field, "Service %s not found: backend left out", cl);
        continue;
      }
      int64_t w = sk_json_get_int(br, "weight", 1);
      total += (uint64_t)w;
      json_array_append_new(backends, json_pack("{s:s, s:I}", "cluster", cl, "weight", (json_int_t)w));
    }
    if (!json_array_size(backends) || total == 0) {
      snprintf(field, sizeof field, "%sspec.rules[%zu]", obj, i);
      ctl_errs_add(c->warn, field, "no backend with a weight: rule left out");
      json_decref(backends);
      continue;
    }
    /* filters */
    json_t *req_headers = NULL, *rewrite_prefix = NULL, *rewrite_path = NULL;
    json_t *f;
    json_array_foreach(json_object_get(rule, "filters"), k, f) {
      const char *type = sk_json_get_str(f, "type", "");
      if (!strcmp(type, "RequestHeaderModifier")) {
        const json_t *m = json_object_get(f, "requestHeaderModifier");
        if (!req_headers) req_headers = json_pack("{s:{}, s:[]}", "add", "remove");
        json_t *add = json_object_get(req_headers, "add");
        static const char *const ops[] = {"add", "set"};
        for (size_t o = 0; o < 2; o++) {
          size_t q;
          json_t *h;
          json_array_foreach(json_object_get(m, ops[o]), q, h)
              json_object_set_new(add, sk_json_get_str(h, "name", ""), json_string(sk_json_get_str(h, "value", "")));
        }
        size_t q;
        json_t *h;
        json_array_foreach(json_object_get(m, "remove"), q, h) json_array_append(json_object_get(req_headers, "remove"), h);
      } else if (!strcmp(type, "URLRewrite")) {
        const json_t *u = json_object_get(f, "urlRewrite");
        if (json_object_get(u, "hostname")) {
          snprintf(field, sizeof field, "%sspec.rules[%zu].filters[%zu].urlRewrite.hostname", obj, i, k);
          ctl_errs_add(c->warn, field, "not supported by the proxy yet: ignored");
        }
        const json_t *p = json_object_get(u, "path");
        if (!strcmp(sk_json_get_str(p, "type", ""), "ReplacePrefixMatch"))
          rewrite_prefix = json_object_get(p, "replacePrefixMatch");
        else if (p)
          rewrite_path = json_object_get(p, "replaceFullPath");
      }
    }
    /* one proxy route per (match, hostname) */
    const json_t *matches = json_object_get(rule, "matches");
    size_t nm = json_array_size(matches) ? json_array_size(matches) : 1;
    for (size_t j = 0; j < nm; j++) {
      const json_t *m = json_array_get(matches, j);
      for (size_t h = 0; h < (nh ? nh : 1); h++) {
        json_t *match = json_object();
        if (nh) json_object_set(match, "host", json_array_get(hosts, h));
        int rank = 3;
        size_t plen = 0, nconds = 0;
        const json_t *pm = json_object_get(m, "path");
        const char *ptype = sk_json_get_str(pm, "type", "PathPrefix");
        const char *pval = sk_json_get_str(pm, "value", "/");
        if (pm || rewrite_prefix) {
          rank = !strcmp(ptype, "Exact") ? 0 : !strcmp(ptype, "PathPrefix") ? 1 : 2;
          plen = strlen(pval);
          json_object_set_new(match, "path",
                              json_pack("{s:s}", rank == 0 ? "exact" : rank == 1 ? "prefix" : "regex", pval));
        }
        if (json_object_get(m, "method")) {
          json_object_set(match, "method", json_object_get(m, "method"));
          nconds++;
        }
        if (json_array_size(json_object_get(m, "headers"))) {
          json_object_set_new(match, "headers", kv_matchers(json_object_get(m, "headers")));
          nconds += json_array_size(json_object_get(m, "headers"));
        }
        if (json_array_size(json_object_get(m, "queryParams"))) {
          json_object_set_new(match, "query", kv_matchers(json_object_get(m, "queryParams")));
          nconds += json_array_size(json_object_get(m, "queryParams"));
        }
        char rn[CTL_NS_LEN + CTL_NAME_LEN + 64];
        if (nh > 1) snprintf(rn, sizeof rn, "%s/%s/%zu/%zu/%zu", ns, rname, i, j, h);
        else snprintf(rn, sizeof rn, "%s/%s/%zu/%zu", ns, rname, i, j);
        json_t *route = json_pack("{s:s, s:o, s:O}", "name", rn, "match", match, "backends", backends);
        if (rewrite_prefix) {
          if (rank == 1) json_object_set_new(route, "rewrite", json_pack("{s:O}", "prefix", rewrite_prefix));
          else if (h == 0) {
            snprintf(field, sizeof field, "%sspec.rules[%zu].matches[%zu].path", obj, i, j);
            ctl_errs_add(c->warn, field, "ReplacePrefixMatch needs a PathPrefix match: rewrite ignored");
          }
        } else if (rewrite_path) {
          json_object_set_new(route, "rewrite", json_pack("{s:O}", "path", rewrite_path));
        }
        if (req_headers) json_object_set(route, "request_headers", req_headers);
        if (json_object_get(rule, "timeout")) json_object_set(route, "timeout", json_object_get(rule, "timeout"));
        add_route(c, route, rank, plen, nconds);
      }
    }
    json_decref(req_headers);
    json_decref(backends);
  }
}

int ctl_compile_proxy(ctl_store_t *s, json_t **out, int64_t *rv, ctl_errs_t *warn) {
  *out = NULL;
  json_t *svcs = NULL, *routes = NULL;
  int64_t rv1 = 0, rv2 = 0;
  int rc = ctl_store_list(s, "Service", NULL, &svcs, NULL, &rv1);
  if (rc >= 0) rc = ctl_store_list(s, "Route", NULL, &routes, NULL, &rv2);
  if (rc < 0) {
    json_decref(svcs);
    return rc;
  }
  cctx_t c = {.services = json_object(), .warn = warn};
  json_t *clusters = json_array();
  size_t i;
  json_t *it;
  json_array_foreach(svcs, i, it) {
    json_t *cl = compile_cluster(it);
    json_object_set_new(c.services, json_string_value(json_object_get(cl, "name")), json_true());
    json_array_append_new(clusters, cl);
  }
  json_array_foreach(routes, i, it) compile_route(&c, it);
  if (c.n) qsort(c.v, c.n, sizeof *c.v, cmp_route); /* c.v is NULL without routes */
  json_t *rts = json_array();
  for (i = 0; i < c.n; i++) json_array_append_new(rts, c.v[i].route);
  free(c.v);
  json_decref(c.services);
  json_decref(svcs);
  json_decref(routes);
  *out = json_pack("{s:o, s:o}", "clusters", clusters, "routes", rts);
  if (rv) *rv = rv2 > rv1 ? rv2 : rv1;
  return 0;
}
