/* Error codes: one table gives both the message and the name. */
#include "skiff/err.h"

#include <uv.h>

const char *sk_strerror(int err) {
  switch (err) {
#define SK__ERR_MSG(name, val, msg) \
  case val:                         \
    return msg;
    SK_ERR_MAP(SK__ERR_MSG)
#undef SK__ERR_MSG
  default:
    return err >= 0 ? "success" : "unknown error";
  }
}

const char *sk_err_name(int err) {
  switch (err) {
#define SK__ERR_NAME(name, val, msg) \
  case val:                          \
    return #name;
    SK_ERR_MAP(SK__ERR_NAME)
#undef SK__ERR_NAME
  default:
    return err >= 0 ? "OK" : "EUNKNOWN";
  }
}

int sk_err_from_errno(int e) {
  if (e < 0) e = -e;
  switch (-e) {
#define SK__ERR_KNOWN(name, val, msg) case val:
    SK_ERRNO_MAP(SK__ERR_KNOWN)
#undef SK__ERR_KNOWN
    return -e;
  default:
    return SK_EIO;
  }
}

int sk_err_from_uv(int uverr) {
  if (uverr >= 0) return uverr;
  if (uverr == UV_EOF) return SK_ECLOSED;
  if (uverr == UV_ECANCELED) return SK_ECANCELED;
  return sk_err_from_errno(-uverr);
}
