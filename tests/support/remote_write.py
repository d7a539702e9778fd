#!/usr/bin/env python3
"""Prometheus remote-write 1.0 sender for Skiff's tests and benchmarks.

Encodes prometheus.WriteRequest by hand (protobuf wire format) and frames it
in the snappy block format with literal elements only (valid snappy that any
decoder accepts; no compression library needed). The same bytes go to every
target, so two servers fed by one run hold identical samples.

  remote_write.py dataset --t0-ms T URL...
      a deterministic data set (counters with a reset, gauges, a classic
      histogram, an info metric, a series that stops early, jittered
      timestamps) covering [T0-30m, T0] every 15 s, sent in time order.
  remote_write.py bench --series N --samples S --batch B --conns C [--t0-ms T] [--bodies F] URL
      N series x S samples at 1 s steps ending before T (in requests of B
      samples), sent by C keep-alive connections; prints
      "samples=<n> seconds=<s> samples_per_sec=<r>". With --bodies the
      encoded requests are kept in F and replayed by later runs.
"""
import argparse
import http.client
import os
import pickle
import random
import struct
import sys
import threading
import time
import urllib.parse


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num, data):
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def encode_write_request(series):
    """series: list of (labels dict, [(ts_ms, value), ...])."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name in sorted(labels):
            lab = _field_bytes(1, name.encode()) + _field_bytes(2, str(labels[name]).encode())
            ts += _field_bytes(1, lab)
        for t, v in samples:
            s = b"\x09" + struct.pack("<d", v) + b"\x10" + _varint(t)
            ts += _field_bytes(2, s)
        out += _field_bytes(1, bytes(ts))
    return bytes(out)


def snappy_literal(data):
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out.append(60 << 2)
            out.append(n)
        else:
            out.append(61 << 2)
            out += struct.pack("<H", n)
        out += chunk
    return bytes(out)


class Sender:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/api/v1/write"
        self.conn = None

    def post(self, body):
        for attempt in range(50):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request("POST", self.path, body, {
                    "Content-Type": "application/x-protobuf",
                    "Content-Encoding": "snappy",
                    "X-Prometheus-Remote-Write-Version": "0.1.0",
                })
                r = self.conn.getresponse()
                data = r.read()
                if r.status in (429, 503) or r.status >= 500:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if r.status // 100 != 2:
                    raise RuntimeError("%s:%d%s answered %d: %s" % (self.host, self.port, self.path, r.status,
                                                                    data[:300].decode(errors="replace")))
                return
            except (ConnectionError, http.client.HTTPException, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError("%s:%d: gave up after retries" % (self.host, self.port))


def dataset(t0_ms):
    """Returns {labels-tuple: [(ts, v)]} with deterministic content."""
    rnd = random.Random(42)
    step = 15000
    n = 121
    start = t0_ms - (n - 1) * step
    out = {}

    def put(labels, ts, v):
        out.setdefault(tuple(sorted(labels.items())), []).append((ts, v))

    insts = ["a:9100", "b:9100", "c:9100"]
    for idx, inst in enumerate(insts):
        put_info = {"__name__": "machine_info", "instance": inst, "team": ["core", "edge", "core"][idx],
                    "zone": ["z1", "z2", "z2"][idx]}
        counters = {}
        temp = 40.0 + idx * 5
        hist = {le: 0 for le in ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]}
        hsum = 0.0
        for i in range(n):
            jitter = rnd.randint(-1500, 1500) if 0 < i < n - 1 else 0
            ts = start + i * step + jitter
            for code in ["200", "500"]:
                for method in ["GET", "POST"]:
                    k = (code, method)
                    inc = rnd.randint(0, 40) if code == "200" else rnd.randint(0, 3)
                    c = counters.get(k, rnd.randint(0, 1000)) + inc
                    if inst == "b:9100" and k == ("200", "GET") and i == 60:
                        c = inc  # a counter reset (process restart)
                    counters[k] = c
                    put({"__name__": "http_requests_total", "job": "api", "instance": inst, "code": code,
                         "method": method}, ts, float(c))
            temp += rnd.uniform(-0.8, 0.85)
            put({"__name__": "node_temperature_celsius", "job": "node", "instance": inst}, ts, round(temp, 3))
            for _ in range(rnd.randint(5, 30)):
                d = rnd.expovariate(4.0)
                hsum += d
                for le in hist:
                    if le == "+Inf" or d <= float(le):
                        hist[le] += 1
            for le, cnt in hist.items():
                put({"__name__": "request_duration_seconds_bucket", "job": "api", "instance": inst, "le": le},
                    ts, float(cnt))
            put({"__name__": "request_duration_seconds_sum", "job": "api", "instance": inst}, ts, hsum)
            put({"__name__": "request_duration_seconds_count", "job": "api", "instance": inst}, ts,
                float(hist["+Inf"]))
            put(put_info, ts, 1.0)
            if i <= 80:  # stops 10 minutes before t0
                put({"__name__": "batch_last_run_timestamp_seconds", "job": "batch", "instance": inst}, ts,
                    float((start + (i // 4) * 4 * step) // 1000))
            put({"__name__": "queue_depth", "job": "worker", "instance": inst, "queue": "q%d" % (i % 1 + idx)},
                ts, float(rnd.randint(0, 100)))
    return out


def batches_in_time_order(data, per_batch_points=20):
    """Yields lists of (labels, samples) so that every series' samples are sent in order."""
    keys = sorted(data)
    longest = max(len(v) for v in data.values())
    for off in range(0, longest, per_batch_points):
        batch = []
        for k in keys:
            s = data[k][off:off + per_batch_points]
            if s:
                batch.append((dict(k), s))
        yield batch


def cmd_dataset(args):
    data = dataset(args.t0_ms)
    senders = [Sender(u) for u in args.urls]
    nsamples = 0
    for b in batches_in_time_order(data):
        body = snappy_literal(encode_write_request(b))
        for s in senders:
            s.post(body)
        nsamples += sum(len(x[1]) for x in b)
    print("series=%d samples=%d" % (len(data), nsamples))


def cmd_bench(args):
    """Bodies are made before the clock starts. A request carries either every series with
    batch/series points each, or a slice of `batch` series with one point each; one slice of
    series is always sent by one connection, in time order."""
    now = args.t0_ms or int(time.time() * 1000)
    step = 1000
    start = now - args.samples * step
    if args.batch >= args.series:
        width, per_series = args.series, args.batch // args.series
    else:
        width, per_series = args.batch, 1
    total = 0
    bodies = [[] for _ in range(args.conns)]
    if args.bodies and os.path.exists(args.bodies):
        with open(args.bodies, "rb") as f:
            total, bodies = pickle.load(f)
        width = 0
    for si, lo in enumerate(range(0, args.series, width) if width else []):
        hi = min(args.series, lo + width)
        for off in range(0, args.samples, per_series):
            series = []
            for j in range(lo, hi):
                pts = [(start + (off + k) * step, float((j * 7 + off + k) % 1000))
                       for k in range(per_series) if off + k < args.samples]
                series.append(({"__name__": "bench_metric_%d" % (j % 10), "job": "bench",
                                "instance": "i%d" % (j // 10), "series": str(j)}, pts))
                total += len(pts)
            bodies[si % args.conns].append(snappy_literal(encode_write_request(series)))
    if args.bodies and not os.path.exists(args.bodies):
        with open(args.bodies, "wb") as f:
            pickle.dump((total, bodies), f)
    errors = []

    def run(seq):
        s = Sender(args.urls[0])
        try:
            for b in seq:
                s.post(b)
        except Exception as e:  # reported below
            errors.append(str(e))

    threads = [threading.Thread(target=run, args=(seq,)) for seq in bodies if seq]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt = time.monotonic() - t
    if errors:
        print("errors: %s" % errors[0], file=sys.stderr)
        return 1
    print("samples=%d seconds=%.3f samples_per_sec=%.0f" % (total, dt, total / dt))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dataset")
    d.add_argument("--t0-ms", type=int, required=True)
    d.add_argument("urls", nargs="+")
    b = sub.add_parser("bench")
    b.add_argument("--series", type=int, default=1000)
    b.add_argument("--samples", type=int, default=100)
    b.add_argument("--batch", type=int, default=2000)
    b.add_argument("--conns", type=int, default=4)
    b.add_argument("--t0-ms", type=int, default=0, help="samples end 1 s before this (default now)")
    b.add_argument("--bodies", help="cache of the encoded requests: made once, reused (identical batches)")
    b.add_argument("urls", nargs=1)
    a = p.parse_args()
    if a.cmd == "dataset":
        cmd_dataset(a)
        return 0
    return cmd_bench(a)


if __name__ == "__main__":
    sys.exit(main())
