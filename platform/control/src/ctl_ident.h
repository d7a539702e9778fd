/* ctl_ident.h - control's own API certificate from its own CA (tls.identity). */
#ifndef SKIFF_CTL_IDENT_H
#define SKIFF_CTL_IDENT_H

#include <stdint.h>
#include <uv.h>

#include "ctl_ca.h"
#include "skiff/ident.h"
#include "skiff/log.h"

/* Issues (or reuses) spiffe://<td>/region/local/daemon/control with SANs
 * localhost, 127.0.0.1 and ::1 into <state_dir>/identity/{cert,key,bundle}.pem
 * and renews it at two thirds of its lifetime; every TLS context built from
 * those files is reloaded. ttl_s 0 = the CA's default. */
int ctl_ident_open(uv_loop_t *loop, ctl_ca_t *ca, const char *state_dir, int64_t ttl_s, sk_logger_t *log,
                   sk_ident_t **out, char *err, size_t errlen);

#endif
