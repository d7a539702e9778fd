/* skiff/err.h - error codes shared by every Skiff module.
 *
 * Functions return int: >= 0 on success, a negative SK_E* code on failure.
 * Codes that mirror errno values use the negated errno, so a failed syscall
 * maps to an SK_E* code with sk_err_from_errno(). */
#ifndef SKIFF_ERR_H
#define SKIFF_ERR_H

#include <errno.h>

/* X(name, value, message) */
#define SK_ERRNO_MAP(X)                                                        \
  X(EPERM, -EPERM, "operation not permitted")                                 \
  X(ENOENT, -ENOENT, "no such file or directory")                             \
  X(EIO, -EIO, "i/o error")                                                   \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                      \
  X(ENOMEM, -ENOMEM, "out of memory")                                         \
  X(EACCES, -EACCES, "permission denied")                                     \
  X(EEXIST, -EEXIST, "already exists")                                        \
  X(EINVAL, -EINVAL, "invalid argument")                                      \
  X(ENOSPC, -ENOSPC, "no space left on device")                               \
  X(EPIPE, -EPIPE, "broken pipe")                                             \
  X(ERANGE, -ERANGE, "value out of range")                                    \
  X(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                             \
  X(ENOTSUP, -ENOTSUP, "operation not supported")                             \
  X(EADDRINUSE, -EADDRINUSE, "address already in use")                        \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer")                      \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                        \
  X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                       \
  X(ECANCELED, -ECANCELED, "operation canceled")                              \
  X(EBUSY, -EBUSY, "resource busy")                                           \
  X(E2BIG, -E2BIG, "too large")                                               \
  X(EPROTO, -EPROTO, "protocol error")                                        \
  X(EMSGSIZE, -EMSGSIZE, "message too long")

/* Skiff's own codes live below -4000, clear of every errno value. */
#define SK_OWN_ERR_MAP(X)                                                      \
  X(ECONFIG, -4001, "invalid configuration")                                  \
  X(EPARSE, -4002, "parse error")                                             \
  X(ETLS, -4003, "TLS error")                                                 \
  X(EHTTP, -4004, "HTTP protocol error")                                      \
  X(ECLOSED, -4005, "closed")                                                 \
  X(ESTORE, -4006, "storage error")                                           \
  X(ECONFLICT, -4007, "conflict")                                             \
  X(ELIMIT, -4008, "limit exceeded")                                          \
  X(EUNAUTH, -4009, "unauthenticated")                                        \
  X(EFORBID, -4010, "forbidden")                                              \
  X(ENOTFOUND, -4011, "not found")                                            \
  X(EDRAIN, -4012, "draining")

#define SK_ERR_MAP(X) SK_ERRNO_MAP(X) SK_OWN_ERR_MAP(X)

enum sk_err {
#define SK__ERR_ENUM(name, val, msg) SK_##name = (val),
  SK_ERR_MAP(SK__ERR_ENUM)
#undef SK__ERR_ENUM
};

/* Human-readable message; never NULL. */
const char *sk_strerror(int err);
/* Symbolic name ("EINVAL", "ECONFIG"); never NULL. */
const char *sk_err_name(int err);
/* Negated errno, mapped onto SK_E* when known (SK_EIO otherwise). */
int sk_err_from_errno(int e);
/* libuv error (already negative errno on Unix) to SK_E*. */
int sk_err_from_uv(int uverr);

#endif
