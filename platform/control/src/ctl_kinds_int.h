/* ctl_kinds_int.h - helpers shared by the built-in kinds (ctl_kinds.c,
 * ctl_httproute.c): typed field checks that add causes with field paths. */
#ifndef SKIFF_CTL_KINDS_INT_H
#define SKIFF_CTL_KINDS_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "control.h"

/* "base.key" (or "key" when base is ""). */
void ctl__path(char *out, size_t len, const char *base, const char *key);
/* "base[i]". */
void ctl__index(char *out, size_t len, const char *base, size_t i);
/* A cause for every key of obj not in keys (NULL-terminated). */
void ctl__known_keys(const json_t *obj, const char *field, const char *const *keys, ctl_errs_t *errs);
const char *ctl__str(const json_t *obj, const char *field, const char *key, int required, size_t maxlen,
                     ctl_errs_t *errs);
/* One of names; def when absent, NULL when bad. */
const char *ctl__enum(const json_t *obj, const char *field, const char *key, const char *const *names,
                      const char *def, ctl_errs_t *errs);
const json_t *ctl__array(const json_t *obj, const char *field, const char *key, size_t min, size_t max,
                         ctl_errs_t *errs);
/* 1 set, 0 absent, -1 bad. */
int ctl__int(const json_t *obj, const char *field, const char *key, int64_t lo, int64_t hi, int64_t *out,
             ctl_errs_t *errs);
void ctl__duration(const json_t *obj, const char *field, const char *key, ctl_errs_t *errs);
const json_t *ctl__obj(const json_t *obj, const char *field, const char *key, int required, ctl_errs_t *errs);

/* Route and HTTPRoute share the spec shape (httproute: timeouts.request
 * instead of timeout). */
void ctl__validate_route_spec(const json_t *spec, int httproute, ctl_errs_t *errs);
int ctl__httproute_to_route(const json_t *in, json_t **out, ctl_errs_t *errs);
int ctl__route_to_httproute(const json_t *stored, json_t **out);

#define CTL_ANN_SOURCE_KIND "skiff.dev/source-kind"

/* ctl_kind_app.c: Application (skiff.dev/v1) and Argo CD's Application
 * (argoproj.io/v1alpha1, stored as the former). */
extern const ctl_kind_t ctl__kind_application;
extern const ctl_kind_t ctl__kind_argo_application;

#endif
