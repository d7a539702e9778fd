#!/usr/bin/env python3
"""A classic histogram of 10,000 series, sent by remote write to every URL.

  hist_write.py --t0-ms T URL...
bench_hist_bucket{instance="h0".."h999", le=<10 bounds incl. +Inf>}, 100
samples 1 s apart ending 1 s before T; cumulative counters, identical bytes
to every server (encoded once). The query benchmark then runs rate, sum by
and histogram_quantile over these 10,000 series on each server.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from remote_write import Sender, encode_write_request, snappy_literal  # noqa: E402

BOUNDS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--t0-ms", type=int, required=True)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("urls", nargs="+")
    a = p.parse_args()
    start = a.t0_ms - a.samples * 1000
    bodies = []
    per_req = 10  # instances per request: 100 series x 100 samples
    for lo in range(0, a.instances, per_req):
        series = []
        for i in range(lo, min(a.instances, lo + per_req)):
            # each second instance i observes 20 values; bucket b holds a
            # share growing with b (deterministic, differs per instance)
            counts = [0.0] * len(BOUNDS)
            pts = [[] for _ in BOUNDS]
            for k in range(a.samples):
                for b in range(len(BOUNDS)):
                    counts[b] += min(20, 2 * (b + 1) + (i + k) % 3)
                    pts[b].append((start + k * 1000, counts[b]))
            for b, le in enumerate(BOUNDS):
                series.append(({"__name__": "bench_hist_bucket", "job": "bench", "instance": "h%d" % i,
                                "le": le}, pts[b]))
        bodies.append(snappy_literal(encode_write_request(series)))
    for url in a.urls:
        s = Sender(url)
        for body in bodies:
            s.post(body)
    print("hist: %d series x %d samples" % (a.instances * len(BOUNDS), a.samples))


if __name__ == "__main__":
    main()
