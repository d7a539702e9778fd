#!/usr/bin/env python3
"""Asks a real Prometheus and skiff-telemetry the same PromQL queries with
`promtool query instant|range -o json` and compares the answers: the same
label sets, values equal within a relative tolerance of 1e-9 (NaN == NaN),
the same timestamps.

  promql_compat.py PROM_URL SKIFF_URL T0_SECONDS QUERY_FILE

Query file lines (blank lines and # comments skipped):
  instant <seconds before T0> <expr>
  range <start: seconds before T0> <end: seconds before T0> <step> <expr>
  labels <start ago> <end ago> <name>   promtool query labels: label values
  series <start ago> <end ago> <match>  promtool query series
  error <expr>         both must refuse it (bad arguments, duplicate label sets)
  unsupported <expr>   Prometheus answers it, Skiff must refuse it with a
                       parse error naming the column (a documented difference)
In expressions, "@ T0" and "@ T0-<seconds>" become absolute @ times.
Prints one line per query and a summary; exits 1 on any mismatch.
"""
import json
import math
import re
import subprocess
import sys


def run(kind, url, expr, t0, args):
    cmd = ["promtool", "query", kind, "-o", "json"]
    if kind == "instant":
        cmd += ["--time=%d" % (t0 - int(args[0]))]
    else:
        cmd += ["--start=%d" % (t0 - int(args[0])), "--end=%d" % (t0 - int(args[1])), "--step=%s" % args[2]]
    cmd += ["--", url, expr]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return ("error", (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"])
    out = p.stdout.strip()
    return ("ok", json.loads(out) if out else None)


def norm(res):
    """-> ('scalar', (t, v)) | ('series', {labels: [(t, v)]})."""
    if res is None:
        return ("series", {})
    if isinstance(res, dict) and "type" in res and res.get("type") in ("scalar", "string"):
        return ("scalar", [(float(res["value"][0]) if "value" in res else 0, res.get("value", [0, 0])[1])])
    if isinstance(res, list) and len(res) == 2 and not isinstance(res[0], dict):
        return ("scalar", [(float(res[0]), res[1])])
    out = {}
    items = res if isinstance(res, list) else [res]
    for s in items:
        key = tuple(sorted((s.get("metric") or {}).items()))
        pts = s.get("values") or ([s["value"]] if "value" in s else [])
        out[key] = [(float(t), v) for t, v in pts]
    return ("series", out)


def val_eq(a, b):
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def compare(p, s):
    if p[0] != s[0]:
        return "result types differ: prometheus %s, skiff %s" % (p[0], s[0])
    if p[0] == "scalar":
        (pt, pv), (st, sv) = p[1][0], s[1][0]
        if pt != st or not val_eq(pv, sv):
            return "scalar: prometheus %s@%s, skiff %s@%s" % (pv, pt, sv, st)
        return None
    pk, sk = set(p[1]), set(s[1])
    if pk != sk:
        return "label sets differ: only prometheus %s; only skiff %s" % (
            [dict(k) for k in sorted(pk - sk)][:3], [dict(k) for k in sorted(sk - pk)][:3])
    for k in sorted(pk):
        a, b = p[1][k], s[1][k]
        if len(a) != len(b):
            return "%s: %d points vs %d (first ts %s / %s)" % (dict(k), len(a), len(b), a[:1], b[:1])
        for (ta, va), (tb, vb) in zip(a, b):
            if ta != tb or not val_eq(va, vb):
                return "%s @%s: prometheus %s, skiff %s@%s" % (dict(k), ta, va, vb, tb)
    return None


def main():
    prom, skiff, t0, qfile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    bad = good = 0
    for line in open(qfile):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # "@ T0" / "@ T0-<seconds>": an absolute time for the @ modifier
        line = re.sub(r"@ T0(?:-(\d+))?", lambda m: "@ %d" % (t0 - int(m.group(1) or 0)), line)
        if line.startswith("error "):
            expr = line.split(None, 1)[1]
            rp = run("instant", prom, expr, t0, ["0"])
            rs = run("instant", skiff, expr, t0, ["0"])
            etype = lambda r: r[1][0].split("query error: ", 1)[-1].split(":", 1)[0]
            if rp[0] != "error" or rs[0] != "error" or etype(rp) != etype(rs):
                print("MISMATCH error %s: prometheus %s, skiff %s" % (expr, rp, rs))
                bad += 1
            else:
                print("ok error %s (prometheus: %s | skiff: %s)" % (expr, rp[1][0][-70:], rs[1][0][-70:]))
                good += 1
            continue
        if line.startswith("unsupported "):
            expr = line.split(None, 1)[1]
            rp = run("instant", prom, expr, t0, ["0"])
            rs = run("instant", skiff, expr, t0, ["0"])
            if rp[0] == "error":
                print("BAD QUERY (Prometheus refused it): %s: %s" % (expr, rp[1]))
                bad += 1
            elif rs[0] != "error" or "parse error at col" not in rs[1][0]:
                print("MISMATCH unsupported %s: skiff did not refuse it with a parse error: %s" % (expr, rs[1]))
                bad += 1
            else:
                print("ok unsupported %s (%s)" % (expr, rs[1][0].split("parse error", 1)[1]))
                good += 1
            continue
        if line.startswith(("labels ", "series ")):
            kind, a0, a1, arg = line.split(None, 3)
            outs = []
            for url in (prom, skiff):
                cmd = ["promtool", "query", kind, "--start=%d" % (t0 - int(a0)), "--end=%d" % (t0 - int(a1))]
                cmd += (["--match=" + arg, "--", url] if kind == "series" else ["--", url, arg])
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                outs.append((p.returncode, sorted(p.stdout.split("\n"))))
            if outs[0][0] != 0:
                print("BAD QUERY (Prometheus refused it): %s %s" % (kind, arg))
                bad += 1
            elif outs[0] != outs[1]:
                print("MISMATCH %s %s %s %s: prometheus %s, skiff %s" % (kind, a0, a1, arg, outs[0][1][:5], outs[1][1][:5]))
                bad += 1
            else:
                print("ok %s %s (%d lines)" % (kind, arg, len([x for x in outs[0][1] if x])))
                good += 1
            continue
        parts = line.split(None, 4 if line.startswith("range") else 2)
        kind = parts[0]
        args, expr = (parts[1:2], parts[2]) if kind == "instant" else (parts[1:4], parts[4])
        rp = run(kind, prom, expr, t0, args)
        rs = run(kind, skiff, expr, t0, args)
        if rp[0] == "error":
            print("BAD QUERY (Prometheus refused it): %s: %s" % (expr, rp[1]))
            bad += 1
            continue
        if rs[0] == "error":
            print("MISMATCH %s %s: skiff error %s" % (kind, expr, rs[1]))
            bad += 1
            continue
        pn, sn = norm(rp[1]), norm(rs[1])
        diff = compare(pn, sn)
        n = len(pn[1]) if pn[0] == "series" else 1
        if diff:
            print("MISMATCH %s %s: %s" % (kind, expr, diff))
            bad += 1
        else:
            print("ok %s %s (%d series)" % (kind, expr, n))
            good += 1
    print("%d queries match, %d mismatch" % (good, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
