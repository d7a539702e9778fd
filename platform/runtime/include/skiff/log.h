/* skiff/log.h - structured logging for daemons and the CLI.
 *
 * A sink is one output (stderr or a file) with a level and a format; a
 * logger is a component name ("proxy", "admin", "gitops.sync") writing to a
 * sink. Each line is formatted in full and written with one write(2) under
 * the sink's lock, so lines from several threads never interleave.
 *
 * Text format:
 *   2024-05-01T12:00:00.123Z INFO  proxy: listening addr=127.0.0.1:8080
 * JSON-lines format (one object per line):
 *   {"ts":"2024-05-01T12:00:00.123Z","level":"info","component":"proxy",
 *    "msg":"listening","addr":"127.0.0.1:8080"}
 * Fields come after msg in the order given. A "trace_id" field is an
 * ordinary key the caller passes (sk_log_kv(l, SK_LOG_INFO, "msg",
 * "trace_id", id, NULL)).
 *
 * Library code does not log; daemons and the CLI do. */
#ifndef SKIFF_LOG_H
#define SKIFF_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sk_log_level {
  SK_LOG_TRACE = 0,
  SK_LOG_DEBUG = 1,
  SK_LOG_INFO = 2,
  SK_LOG_WARN = 3,
  SK_LOG_ERROR = 4,
  SK_LOG_OFF = 5 /* as a sink level: log nothing */
} sk_log_level_t;

typedef enum sk_log_format {
  SK_LOG_TEXT = 0,
  SK_LOG_JSON = 1
} sk_log_format_t;

/* Names in the order of sk_log_level_t / sk_log_format_t, NULL-terminated
 * (usable as enum tables in a config schema). */
extern const char *const sk_log_level_names[];  /* "trace".."error","off" */
extern const char *const sk_log_format_names[]; /* "text","json" */

/* "info" / "INFO" / "warning" -> SK_LOG_INFO...; SK_EINVAL if unknown. */
int sk_log_level_parse(const char *s);
const char *sk_log_level_name(int level); /* "info"; "?" if out of range */
/* "text" / "json"; SK_EINVAL if unknown. */
int sk_log_format_parse(const char *s);

typedef struct sk_log_sink sk_log_sink_t;
typedef struct sk_logger sk_logger_t;

/* path == NULL or "" or "-" logs to stderr; otherwise the file is opened
 * for append (created 0640). Returns SK_E* from open(2) on failure. */
int sk_log_sink_new(const char *path, sk_log_level_t level, sk_log_format_t fmt,
                    sk_log_sink_t **out);
/* Logs to an already open fd (not closed by the sink). */
sk_log_sink_t *sk_log_sink_new_fd(int fd, sk_log_level_t level, sk_log_format_t fmt);
void sk_log_sink_free(sk_log_sink_t *s); /* accepts NULL */
void sk_log_sink_set_level(sk_log_sink_t *s, sk_log_level_t level);
sk_log_level_t sk_log_sink_level(const sk_log_sink_t *s);
void sk_log_sink_set_format(sk_log_sink_t *s, sk_log_format_t fmt);
/* Reopens the file (after log rotation); no-op for stderr/fd sinks. */
int sk_log_sink_reopen(sk_log_sink_t *s);

/* The process-wide sink used when a logger is given sink NULL: stderr,
 * info, text until changed. Never freed. */
sk_log_sink_t *sk_log_default_sink(void);

/* A logger for one component; sink NULL = the default sink. The component
 * string is copied. The sink must outlive the logger. */
sk_logger_t *sk_logger_new(sk_log_sink_t *sink, const char *component);
void sk_logger_free(sk_logger_t *l); /* accepts NULL */
/* Points the logger at another sink (e.g. after the config named a file). */
void sk_logger_set_sink(sk_logger_t *l, sk_log_sink_t *sink);
sk_log_sink_t *sk_logger_sink(const sk_logger_t *l);
const char *sk_logger_component(const sk_logger_t *l);

/* Non-zero when a line at this level would be written (cheap check before
 * building expensive arguments). l == NULL uses the default sink. */
int sk_log_enabled(const sk_logger_t *l, sk_log_level_t level);

/* printf-style message, no fields. */
void sk_log(const sk_logger_t *l, sk_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sk_logv(const sk_logger_t *l, sk_log_level_t level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* A fixed message plus string fields: key, value, key, value, ..., NULL.
 * A NULL value is written as JSON null (text: key=-). */
void sk_log_kv(const sk_logger_t *l, sk_log_level_t level, const char *msg, ...)
    __attribute__((sentinel));

/* Typed fields for numbers and booleans. */
typedef enum sk_log_ftype { SK_LF_STR, SK_LF_INT, SK_LF_UINT, SK_LF_DOUBLE, SK_LF_BOOL } sk_log_ftype_t;
typedef struct sk_log_field {
  const char *key;
  sk_log_ftype_t type;
  const char *s;
  int64_t i;
  uint64_t u;
  double d;
} sk_log_field_t;
#define SK_LF_S(k, v) ((sk_log_field_t){.key = (k), .type = SK_LF_STR, .s = (v)})
#define SK_LF_I(k, v) ((sk_log_field_t){.key = (k), .type = SK_LF_INT, .i = (int64_t)(v)})
#define SK_LF_U(k, v) ((sk_log_field_t){.key = (k), .type = SK_LF_UINT, .u = (uint64_t)(v)})
#define SK_LF_D(k, v) ((sk_log_field_t){.key = (k), .type = SK_LF_DOUBLE, .d = (double)(v)})
#define SK_LF_B(k, v) ((sk_log_field_t){.key = (k), .type = SK_LF_BOOL, .i = !!(v)})
void sk_log_fields(const sk_logger_t *l, sk_log_level_t level, const char *msg,
                   const sk_log_field_t *f, size_t n);

/* Formats one line exactly as a sink would (without writing it) into buf;
 * returns its length (may exceed buflen-1: truncated like snprintf). For
 * tests and for tools that forward lines. ts_ms = milliseconds since the
 * Unix epoch. */
size_t sk_log_format_line(char *buf, size_t buflen, sk_log_format_t fmt, uint64_t ts_ms,
                          sk_log_level_t level, const char *component, const char *msg,
                          const sk_log_field_t *f, size_t n);

#define sk_log_trace(l, ...) do { if (sk_log_enabled((l), SK_LOG_TRACE)) sk_log((l), SK_LOG_TRACE, __VA_ARGS__); } while (0)
#define sk_log_debug(l, ...) do { if (sk_log_enabled((l), SK_LOG_DEBUG)) sk_log((l), SK_LOG_DEBUG, __VA_ARGS__); } while (0)
#define sk_log_info(l, ...) sk_log((l), SK_LOG_INFO, __VA_ARGS__)
#define sk_log_warn(l, ...) sk_log((l), SK_LOG_WARN, __VA_ARGS__)
#define sk_log_error(l, ...) sk_log((l), SK_LOG_ERROR, __VA_ARGS__)

#endif
