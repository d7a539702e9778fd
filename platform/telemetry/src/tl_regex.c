/* skiff-telemetry: RE2-syntax regular expressions on POSIX regcomp.
 *
 * PromQL matchers, label_replace and LogQL line filters are written in
 * RE2 syntax (what Prometheus and Loki use); the store compiles them with
 * glibc's POSIX extended regcomp. The two agree on most syntax, but not
 * on these, which are translated so they mean what the user meant:
 *
 *   \d \D \s \S \w \W      -> [0-9] [^0-9] [[:space:]] ... (also inside [...])
 *   \n \t \r \f \v         -> the character
 *   \. \- \/ ... (escaped punctuation) -> that character, literally
 *   (?:re)                 -> (re), not counted as a capture group
 *   (?P<name>re) (?<name>re) -> (re), a capture group
 *   *? +? ?? {n,m}?        -> greedy (whole-value matching is unaffected;
 *                             label_replace captures may be longer)
 *   a leading (?i)         -> case-insensitive
 *
 * Anything else RE2 has and POSIX lacks (other flag groups, \pL, \Q..\E,
 * \x{..}, \A, \z, other letter escapes) is refused with a message instead
 * of silently matching something else (POSIX reads "\d" as "d"). So are
 * patterns that would make regcomp's memory explode (see below), for every
 * caller: matchers, label_replace and LogQL filters. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "tl_tsdb.h"

/* glibc's regcomp builds a node per atom after copying each repeated atom
 * out to its count, and its memory grows with the cube of the optional and
 * empty-matching copies ("^(){,577}$" takes over 1 GB, "a++++" and
 * "(a{1000}){1000}" explode too). Patterns are refused up front when they
 * would: a repetition right after another (one lazy '?' aside), a count over
 * 1000, counts adding up past 1000 (RE2's limits), nesting deeper than 1000,
 * or a cost estimate over RX_BUDGET. The estimate charges each interval
 * for the copies it makes: optional copies at the atom's node weight,
 * copies of an atom that can match empty ten times that. */
#define RX_BUDGET 8000.0
#define RX_GROUP_WEIGHT 5.0

typedef struct {
  const char *p;
  const char *why;
  long bounds;
  int depth;
} rx_scan_t;

typedef struct {
  double weight; /* nodes after expansion */
  double cost;   /* charged copies, see above */
  int nullable;  /* can match the empty string */
} rx_size_t;

static rx_size_t rx_alt(rx_scan_t *s);

/* An interval as glibc reads one at s->p ('{'): {n} {n,} {n,m} {,m} {,}
 * (the last two are {0,m} and {0,}); anything else is a literal '{'.
 * Returns 1 and sets *lo, *hi (hi -1: unbounded) and moves past it. */
static int rx_interval(rx_scan_t *s, long *lo, long *hi) {
  const char *q = s->p + 1;
  long a = 0, b;
  int da = 0, db = 0, comma = 0;
  while (isdigit((unsigned char)*q) && a <= 100000) a = a * 10 + (*q++ - '0'), da = 1;
  b = a;
  if (*q == ',') {
    comma = 1;
    q++;
    b = 0;
    while (isdigit((unsigned char)*q) && b <= 100000) b = b * 10 + (*q++ - '0'), db = 1;
    if (!db) b = -1;
  }
  if (*q != '}' || !(da || comma)) return 0;
  *lo = a;
  *hi = b;
  s->p = q + 1;
  return 1;
}

/* One atom: a group, a bracket expression, an escape or a character. */
static rx_size_t rx_atom(rx_scan_t *s) {
  rx_size_t r = {1, 0, 0};
  const char *p = s->p;
  if (*p == '(') {
    p++;
    if (p[0] == '?') {
      if (p[1] == 'i' && p[2] == ')') { /* a flag group matches nothing itself */
        s->p = p + 3;
        r.weight = 0;
        r.nullable = 1;
        return r;
      }
      p++;
      if (*p == 'P') p++;
      if (*p == '<') {
        while (*p && *p != '>') p++;
        if (*p) p++;
      } else if (*p == ':') {
        p++;
      }
    }
    if (++s->depth > 1000) {
      s->why = "groups nested more than 1000 deep";
      return r;
    }
    s->p = p;
    r = rx_alt(s);
    s->depth--;
    if (*s->p == ')') s->p++;
    r.weight += RX_GROUP_WEIGHT;
    return r;
  }
  if (*p == '[') {
    p++;
    if (*p == '^') p++;
    if (*p == ']') p++;
    while (*p && *p != ']') {
      if (*p == '\\' && p[1]) p++;
      else if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
        const char *e = strchr(p + 2, p[1]);
        if (e && e[1] == ']') p = e + 1;
      }
      p++;
    }
    s->p = *p ? p + 1 : p; /* an unterminated one is regcomp's to report */
    return r;
  }
  if (*p == '^' || *p == '$') r.nullable = 1;
  if (*p == '\\' && p[1]) p++;
  s->p = p + 1;
  return r;
}

/* An atom and the repetitions after it. */
static rx_size_t rx_repeat(rx_scan_t *s) {
  rx_size_t r;
  long lo, hi;
  const char *c = s->p;
  if (*c == '*' || *c == '+' || *c == '?' || (*c == '{' && rx_interval(s, &lo, &hi))) {
    s->p = c + 1; /* nothing to repeat: regcomp's to judge */
    return (rx_size_t){1, 0, 0};
  }
  r = rx_atom(s);
  int reps = 0;
  while (!s->why) {
    c = s->p;
    if (*c == '*' || *c == '+' || *c == '?') {
      if (reps == 1 && *c == '?') { /* lazy: "*?", "??", "{2}?" */
        s->p++;
        reps = 2;
        continue;
      }
      if (reps) s->why = "bad repetition operator";
      s->p++;
      r.weight += 1;
      if (*c != '+') r.nullable = 1;
    } else if (*c == '{' && rx_interval(s, &lo, &hi)) {
      if (reps) {
        s->why = "bad repetition operator";
        break;
      }
      if (lo > 1000 || hi > 1000) {
        s->why = "repetition count over 1000";
        break;
      }
      long n = hi < 0 ? (lo > 0 ? lo : 1) : hi;
      s->bounds += n;
      double opt = hi < 0 ? 1 : (double)(hi - lo);
      r.cost = r.cost * (double)n + (r.nullable ? 10.0 * (double)n : opt) * r.weight;
      r.weight *= (double)n;
      if (lo == 0) r.nullable = 1;
    } else {
      break;
    }
    reps = 1;
  }
  return r;
}

static rx_size_t rx_alt(rx_scan_t *s) {
  rx_size_t all = {0, 0, 0}, br = {0, 0, 1};
  int branches = 0;
  while (!s->why) {
    if (!*s->p || *s->p == ')' || *s->p == '|') {
      all.weight += br.weight + (branches ? 1 : 0);
      all.cost += br.cost;
      all.nullable |= br.nullable;
      branches++;
      if (*s->p != '|') break;
      s->p++;
      br = (rx_size_t){0, 0, 1};
      continue;
    }
    rx_size_t a = rx_repeat(s);
    br.weight += a.weight;
    br.cost += a.cost;
    br.nullable &= a.nullable;
  }
  return all;
}

static const char *regex_too_complex(const char *re) {
  if (strlen(re) > 4096) return "longer than 4096 bytes";
  rx_scan_t s = {re, NULL, 0, 0};
  double cost = 0;
  while (!s.why && *s.p) {
    cost += rx_alt(&s).cost;
    if (*s.p == ')') s.p++; /* unmatched: regcomp's to report */
  }
  if (!s.why && cost > RX_BUDGET) return "too many optional or empty-matching copies after expanding repetitions";
  if (!s.why && s.bounds > 1000) return "repetition counts add up to more than 1000";
  return s.why;
}

/* Escaped punctuation outside a class: characters special to POSIX ERE
 * keep their backslash; others become a one-character class (glibc gives
 * \' \` \< \> meanings of its own). */
static size_t put_literal(char *o, char e) {
  if (strchr(".[]{}()*+?|^$\\", e)) {
    o[0] = '\\';
    o[1] = e;
    return 2;
  }
  o[0] = '[';
  o[1] = e;
  o[2] = ']';
  return 3;
}

static int ctl_escape(char e, char *out) {
  switch (e) {
  case 'n': *out = '\n'; return 1;
  case 't': *out = '\t'; return 1;
  case 'r': *out = '\r'; return 1;
  case 'f': *out = '\f'; return 1;
  case 'v': *out = '\v'; return 1;
  default: return 0;
  }
}

/* Translates one bracket expression starting after '[' into o + *j (o has
 * room for 16 bytes per input byte); returns the position after its ']'
 * or NULL (why set). The body is written 3 bytes further on, then moved
 * behind "[^]" as needed (an escaped ']' must come first in POSIX). */
static const char *bracket(const char *p, char *o, size_t *j, const char **why) {
  char *body = o + *j + 3;
  size_t k = 0;
  int neg = 0, rbracket = 0, dash = 0, caret = 0;
  if (*p == '^') {
    neg = 1;
    p++;
  }
  if (*p == ']') {
    rbracket = 1;
    p++;
  }
  while (*p && *p != ']') {
    if (p[0] == '[' && p[1] == ':') {
      const char *end = strstr(p + 2, ":]");
      if (!end) {
        *why = "unterminated [: :] class";
        return NULL;
      }
      size_t n = (size_t)(end + 2 - p);
      memcpy(body + k, p, n);
      k += n;
      p = end + 2;
      continue;
    }
    if (*p == '\\') {
      char e = p[1], ch;
      const char *rep = NULL;
      if (!e) {
        *why = "trailing backslash";
        return NULL;
      }
      if (e == 'd') rep = "0-9";
      else if (e == 's') rep = "[:space:]";
      else if (e == 'w') rep = "[:alnum:]_";
      else if (e == ']') rbracket = 1;
      else if (e == '-') dash = 1;
      else if (e == '^') caret = 1;
      else if (ctl_escape(e, &ch)) body[k++] = ch;
      else if (isalnum((unsigned char)e)) {
        *why = "unsupported escape in a character class (\\d, \\s, \\w and punctuation are supported)";
        return NULL;
      } else
        body[k++] = e;
      if (rep) {
        memcpy(body + k, rep, strlen(rep));
        k += strlen(rep);
      }
      p += 2;
      continue;
    }
    if (*p == '^' && k == 0 && !rbracket) { /* would read as a negation once moved */
      caret = 1;
      p++;
      continue;
    }
    body[k++] = *p++;
  }
  if (!*p) {
    *why = "missing closing ]";
    return NULL;
  }
  if (!neg && !rbracket && !dash && k == 0 && caret) { /* [\^] alone */
    o[(*j)++] = '\\';
    o[(*j)++] = '^';
    return p + 1;
  }
  size_t at = *j;
  o[at++] = '[';
  if (neg) o[at++] = '^';
  if (rbracket) o[at++] = ']';
  memmove(o + at, body, k);
  *j = at + k;
  if (caret) o[(*j)++] = '^';
  if (dash) o[(*j)++] = '-';
  o[(*j)++] = ']';
  return p + 1;
}

int tl_re_compile(regex_t *rx, const char *re, int flags, int *groups, size_t ngroups, char *err, size_t errlen) {
  size_t len = strlen(re);
  char *o = sk_xmalloc(16 * len + 16);
  size_t j = 0;
  int cflags = REG_EXTENDED | ((flags & TL_RE_NOSUB) ? REG_NOSUB : 0);
  int posix = 0, capture = 0, rc = 0, depth = 0;
  const char *p = re, *why = regex_too_complex(re);
  if (groups)
    for (size_t i = 0; i < ngroups; i++) groups[i] = -1;
  if (!strncmp(p, "(?i)", 4)) {
    cflags |= REG_ICASE;
    p += 4;
  }
  if (flags & TL_RE_ANCHOR) {
    o[j++] = '^';
    o[j++] = '(';
    posix = 1;
  }
  if (groups && ngroups) groups[0] = (flags & TL_RE_ANCHOR) ? 1 : 0; /* $0: the whole match */
  while (!why && *p) {
    char c = *p;
    if (c == '\\') {
      char e = p[1], ch;
      const char *rep = NULL;
      if (!e) {
        why = "trailing backslash";
        break;
      }
      switch (e) {
      case 'd': rep = "[0-9]"; break;
      case 'D': rep = "[^0-9]"; break;
      case 's': rep = "[[:space:]]"; break;
      case 'S': rep = "[^[:space:]]"; break;
      case 'w': rep = "[[:alnum:]_]"; break;
      case 'W': rep = "[^[:alnum:]_]"; break;
      case 'b': rep = "\\b"; break;
      case 'B': rep = "\\B"; break;
      default:
        if (ctl_escape(e, &ch)) o[j++] = ch;
        else if (isalnum((unsigned char)e))
          why = "unsupported escape (\\d \\D \\s \\S \\w \\W \\b \\B, \\n \\t \\r \\f \\v and escaped punctuation are supported)";
        else
          j += put_literal(o + j, e);
      }
      if (rep) {
        memcpy(o + j, rep, strlen(rep));
        j += strlen(rep);
      }
      p += 2;
    } else if (c == '[') {
      p = bracket(p + 1, o, &j, &why);
    } else if (c == '(') {
      if (p[1] == '?') {
        if (p[2] == ':') {
          p += 3;
        } else if ((p[2] == 'P' && p[3] == '<') || (p[2] == '<' && p[3] != '=' && p[3] != '!')) {
          const char *gt = strchr(p, '>');
          if (!gt) {
            why = "unterminated group name";
            break;
          }
          p = gt + 1;
          capture++;
          if (groups && (size_t)capture < ngroups) groups[capture] = posix + 1;
        } else {
          why = "unsupported group (only (?:...), named groups and a leading (?i) are supported)";
          break;
        }
      } else {
        p++;
        capture++;
        if (groups && (size_t)capture < ngroups) groups[capture] = posix + 1;
      }
      posix++;
      depth++;
      o[j++] = '(';
    } else if (c == ')') {
      /* an unmatched ')' would close the anchoring group ("^(" ... ")$") */
      if (depth == 0) {
        why = "unmatched )";
        break;
      }
      depth--;
      o[j++] = c;
      p++;
    } else if ((c == '*' || c == '+' || c == '?' || c == '}') && p[1] == '?') {
      o[j++] = c; /* lazy -> greedy */
      p += 2;
    } else {
      o[j++] = c;
      p++;
    }
  }
  if (!why && depth) why = "missing )";
  if (why) {
    if (err) snprintf(err, errlen, "invalid regular expression \"%.100s\": %s", re, why);
    rc = SK_EINVAL;
    goto out;
  }
  if (flags & TL_RE_ANCHOR) {
    o[j++] = ')';
    o[j++] = '$';
  }
  o[j] = 0;
  int r = regcomp(rx, o, cflags);
  if (r != 0) {
    char msg[128];
    regerror(r, rx, msg, sizeof msg);
    if (err) snprintf(err, errlen, "invalid regular expression \"%.100s\": %s", re, msg);
    rc = SK_EINVAL;
  }
out:
  free(o);
  return rc;
}
