/* log.c - text and JSON-lines log sinks; one write(2) per line. */
#include "skiff/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define SK_LOG_LINE_MAX (64u << 10) /* longer lines are cut and marked */
#define SK_LOG_FIELDS_MAX 64

const char *const sk_log_level_names[] = {"trace", "debug", "info", "warn", "error", "off", NULL};
const char *const sk_log_format_names[] = {"text", "json", NULL};
static const char *const level_upper[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};

struct sk_log_sink {
  pthread_mutex_t mu;
  int fd;
  int owns_fd;
  char *path;
  volatile int level;
  volatile int format;
};

struct sk_logger {
  sk_log_sink_t *sink;
  char *component;
};

int sk_log_level_parse(const char *s) {
  if (!s) return SK_EINVAL;
  for (int i = 0; sk_log_level_names[i]; i++)
    if (strcasecmp(s, sk_log_level_names[i]) == 0) return i;
  if (strcasecmp(s, "warning") == 0) return SK_LOG_WARN;
  if (strcasecmp(s, "err") == 0) return SK_LOG_ERROR;
  return SK_EINVAL;
}

const char *sk_log_level_name(int level) {
  return level >= 0 && level <= SK_LOG_OFF ? sk_log_level_names[level] : "?";
}

int sk_log_format_parse(const char *s) {
  if (!s) return SK_EINVAL;
  if (strcasecmp(s, "text") == 0) return SK_LOG_TEXT;
  if (strcasecmp(s, "json") == 0) return SK_LOG_JSON;
  return SK_EINVAL;
}

static sk_log_sink_t *sink_alloc(int fd, int owns, const char *path, sk_log_level_t level, sk_log_format_t fmt) {
  sk_log_sink_t *s = sk_xcalloc(1, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  s->fd = fd;
  s->owns_fd = owns;
  s->path = path ? sk_xstrdup(path) : NULL;
  s->level = level;
  s->format = fmt;
  return s;
}

static int open_log(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  return fd < 0 ? sk_err_from_errno(errno) : fd;
}

int sk_log_sink_new(const char *path, sk_log_level_t level, sk_log_format_t fmt, sk_log_sink_t **out) {
  *out = NULL;
  if (!path || !path[0] || strcmp(path, "-") == 0) {
    *out = sink_alloc(STDERR_FILENO, 0, NULL, level, fmt);
    return 0;
  }
  int fd = open_log(path);
  if (fd < 0) return fd;
  *out = sink_alloc(fd, 1, path, level, fmt);
  return 0;
}

sk_log_sink_t *sk_log_sink_new_fd(int fd, sk_log_level_t level, sk_log_format_t fmt) {
  return sink_alloc(fd, 0, NULL, level, fmt);
}

void sk_log_sink_free(sk_log_sink_t *s) {
  if (!s || s == sk_log_default_sink()) return;
  if (s->owns_fd && s->fd >= 0) close(s->fd);
  pthread_mutex_destroy(&s->mu);
  free(s->path);
  free(s);
}

void sk_log_sink_set_level(sk_log_sink_t *s, sk_log_level_t level) {
  if (s) s->level = level;
}
sk_log_level_t sk_log_sink_level(const sk_log_sink_t *s) { return s ? (sk_log_level_t)s->level : SK_LOG_OFF; }
void sk_log_sink_set_format(sk_log_sink_t *s, sk_log_format_t fmt) {
  if (s) s->format = fmt;
}

int sk_log_sink_reopen(sk_log_sink_t *s) {
  if (!s || !s->path) return 0;
  int fd = open_log(s->path);
  if (fd < 0) return fd;
  pthread_mutex_lock(&s->mu);
  int old = s->fd;
  s->fd = fd;
  pthread_mutex_unlock(&s->mu);
  close(old);
  return 0;
}

static sk_log_sink_t default_sink = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .fd = STDERR_FILENO, .level = SK_LOG_INFO, .format = SK_LOG_TEXT};

sk_log_sink_t *sk_log_default_sink(void) { return &default_sink; }

sk_logger_t *sk_logger_new(sk_log_sink_t *sink, const char *component) {
  sk_logger_t *l = sk_xcalloc(1, sizeof(*l));
  l->sink = sink ? sink : &default_sink;
  l->component = sk_xstrdup(component ? component : "");
  return l;
}

void sk_logger_free(sk_logger_t *l) {
  if (!l) return;
  free(l->component);
  free(l);
}

void sk_logger_set_sink(sk_logger_t *l, sk_log_sink_t *sink) {
  if (l) l->sink = sink ? sink : &default_sink;
}
sk_log_sink_t *sk_logger_sink(const sk_logger_t *l) { return l ? l->sink : &default_sink; }
const char *sk_logger_component(const sk_logger_t *l) { return l ? l->component : ""; }

int sk_log_enabled(const sk_logger_t *l, sk_log_level_t level) {
  const sk_log_sink_t *s = l ? l->sink : &default_sink;
  return level >= SK_LOG_TRACE && level < SK_LOG_OFF && (int)level >= s->level;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void put_ts(sk_buf_t *b, uint64_t ts_ms) {
  time_t t = (time_t)(ts_ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  sk_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts_ms % 1000));
}

/* Text values: bare when made of safe characters, otherwise quoted with the
 * JSON escapes so a line stays one line. */
static void put_text_value(sk_buf_t *b, const char *s) {
  size_t n = strlen(s);
  int bare = n > 0;
  for (size_t i = 0; i < n && bare; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c >= 0x7f) bare = 0;
  }
  if (bare) {
    sk_buf_append(b, s, n);
    return;
  }
  sk_buf_puts(b, "\"");
  sk_json_escape(b, s, n);
  sk_buf_puts(b, "\"");
}

static void put_number(sk_buf_t *b, const sk_log_field_t *f, int json) {
  switch (f->type) {
  case SK_LF_INT: sk_buf_printf(b, "%" PRId64, f->i); break;
  case SK_LF_UINT: sk_buf_printf(b, "%" PRIu64, f->u); break;
  case SK_LF_BOOL: sk_buf_puts(b, f->i ? "true" : "false"); break;
  case SK_LF_DOUBLE:
    if (isfinite(f->d))
      sk_buf_printf(b, "%.17g", f->d);
    else
      sk_buf_puts(b, json ? "null" : (isnan(f->d) ? "NaN" : (f->d > 0 ? "+Inf" : "-Inf")));
    break;
  default: break;
  }
}

static void format_line(sk_buf_t *b, sk_log_format_t fmt, uint64_t ts_ms, sk_log_level_t level,
                        const char *component, const char *msg, const sk_log_field_t *f, size_t n) {
  if ((int)level < 0 || level > SK_LOG_OFF) level = SK_LOG_ERROR;
  if (!component) component = "";
  if (!msg) msg = "";
  if (fmt == SK_LOG_JSON) {
    sk_buf_puts(b, "{\"ts\":\"");
    put_ts(b, ts_ms);
    sk_buf_printf(b, "\",\"level\":\"%s\",\"component\":\"", sk_log_level_names[level]);
    sk_json_escape(b, component, strlen(component));
    sk_buf_puts(b, "\",\"msg\":\"");
    sk_json_escape(b, msg, strlen(msg));
    sk_buf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
      if (!f[i].key) continue;
      sk_buf_puts(b, ",\"");
      sk_json_escape(b, f[i].key, strlen(f[i].key));
      sk_buf_puts(b, "\":");
      if (f[i].type == SK_LF_STR) {
        if (!f[i].s) {
          sk_buf_puts(b, "null");
        } else {
          sk_buf_puts(b, "\"");
          sk_json_escape(b, f[i].s, strlen(f[i].s));
          sk_buf_puts(b, "\"");
        }
      } else {
        put_number(b, &f[i], 1);
      }
    }
    sk_buf_puts(b, "}\n");
    return;
  }
  put_ts(b, ts_ms);
  sk_buf_printf(b, " %s ", level_upper[level]);
  if (component[0]) {
    put_text_value(b, component);
    sk_buf_puts(b, ": ");
  }
  /* the message itself is free text; only line breaks are escaped */
  for (const char *p = msg; *p; p++) {
    if (*p == '\n')
      sk_buf_puts(b, "\\n");
    else if (*p == '\r')
      sk_buf_puts(b, "\\r");
    else
      sk_buf_append(b, p, 1);
  }
  for (size_t i = 0; i < n; i++) {
    if (!f[i].key) continue;
    sk_buf_puts(b, " ");
    put_text_value(b, f[i].key);
    sk_buf_puts(b, "=");
    if (f[i].type == SK_LF_STR)
      put_text_value(b, f[i].s ? f[i].s : "-");
    else
      put_number(b, &f[i], 0);
  }
  sk_buf_puts(b, "\n");
}

size_t sk_log_format_line(char *buf, size_t buflen, sk_log_format_t fmt, uint64_t ts_ms, sk_log_level_t level,
                          const char *component, const char *msg, const sk_log_field_t *f, size_t n) {
  sk_buf_t b;
  sk_buf_init(&b);
  format_line(&b, fmt, ts_ms, level, component, msg, f, n);
  if (buflen) {
    size_t c = b.len < buflen - 1 ? b.len : buflen - 1;
    memcpy(buf, b.data, c);
    buf[c] = 0;
  }
  size_t len = b.len;
  sk_buf_done(&b);
  return len;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return; /* nowhere left to report a failing log */
    }
    p += w;
    n -= (size_t)w;
  }
}

static void emit(const sk_logger_t *l, sk_log_level_t level, const char *msg, const sk_log_field_t *f, size_t n) {
  sk_log_sink_t *s = l ? l->sink : &default_sink;
  if (!sk_log_enabled(l, level)) return;
  sk_buf_t b;
  sk_buf_init(&b);
  format_line(&b, (sk_log_format_t)s->format, now_ms(), level, l ? l->component : "", msg, f, n);
  if (b.len > SK_LOG_LINE_MAX) {
    /* cut, keep it one line; a JSON line stays parseable only in full, so
     * replace it by a short notice instead */
    size_t orig = b.len;
    sk_buf_reset(&b);
    sk_log_field_t tf[2] = {SK_LF_S("truncated_msg", ""), SK_LF_U("line_bytes", orig)};
    char head[256];
    snprintf(head, sizeof head, "%.200s", msg ? msg : "");
    tf[0].s = head;
    format_line(&b, (sk_log_format_t)s->format, now_ms(), level, l ? l->component : "",
                "log line too long; dropped", tf, 2);
  }
  pthread_mutex_lock(&s->mu);
  write_all(s->fd, b.data, b.len);
  pthread_mutex_unlock(&s->mu);
  sk_buf_done(&b);
}

void sk_logv(const sk_logger_t *l, sk_log_level_t level, const char *fmt, va_list ap) {
  if (!sk_log_enabled(l, level)) return;
  char small[512];
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  if (n < 0) {
    va_end(ap2);
    return;
  }
  if ((size_t)n < sizeof small) {
    emit(l, level, small, NULL, 0);
  } else {
    char *big = sk_xmalloc((size_t)n + 1);
    vsnprintf(big, (size_t)n + 1, fmt, ap2);
    emit(l, level, big, NULL, 0);
    free(big);
  }
  va_end(ap2);
}

void sk_log(const sk_logger_t *l, sk_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sk_logv(l, level, fmt, ap);
  va_end(ap);
}

void sk_log_kv(const sk_logger_t *l, sk_log_level_t level, const char *msg, ...) {
  if (!sk_log_enabled(l, level)) return;
  sk_log_field_t f[SK_LOG_FIELDS_MAX];
  size_t n = 0;
  va_list ap;
  va_start(ap, msg);
  for (;;) {
    const char *k = va_arg(ap, const char *);
    if (!k) break;
    const char *v = va_arg(ap, const char *);
    if (n < SK_LOG_FIELDS_MAX) f[n++] = SK_LF_S(k, v);
  }
  va_end(ap);
  emit(l, level, msg, f, n);
}

void sk_log_fields(const sk_logger_t *l, sk_log_level_t level, const char *msg, const sk_log_field_t *f, size_t n) {
  emit(l, level, msg, f, n);
}
