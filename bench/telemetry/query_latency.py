#!/usr/bin/env python3
"""PromQL query latency over Prometheus's HTTP API, one keep-alive connection.

  query_latency.py URL N T_END QUERY...
Runs every query N times (instant at T_END, or range over the 100 s before
T_END with step 5s when the query is prefixed "range:"), after one unrecorded
run each, and prints one line per query: p50, p90 and mean in ms, and the
number of series answered (so two servers can be checked to answer alike).
"""
import http.client
import json
import statistics
import sys
import time
import urllib.parse

url, n, t_end, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def ask(q):
    if q.startswith("range:"):
        path = "/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": q[6:], "start": t_end - 100, "end": t_end, "step": "5s"})
    else:
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": t_end})
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit("%s: HTTP %d %s" % (q, r.status, body[:200]))
    return len(json.loads(body)["data"]["result"])


for q in queries:
    series = ask(q)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        ask(q)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    print("%-60s p50=%.2fms p90=%.2fms mean=%.2fms series=%d" % (
        q, lat[len(lat) // 2], lat[int(len(lat) * 0.9)], statistics.mean(lat), series))
