#!/usr/bin/env python3
"""Pre-encoded OTLP trace batches for the span ingest benchmark.

  otlp_spans.py DIR BODIES SPANS
writes DIR/0.pb .. DIR/<BODIES-1>.pb, each an
opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest (protobuf
wire format, encoded by hand) of SPANS spans: one resource (service.name
one of 4 services), one scope, spans with distinct trace/span ids across
all bodies, a parent id, kind SERVER/CLIENT, 1 ms apart, 6 attributes each
(strings and an int, like an HTTP server span) and status OK or ERROR.
"""
import os
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fb(num, data):  # length-delimited field
    return varint((num << 3) | 2) + varint(len(data)) + data


def fv(num, n):  # varint field
    return varint(num << 3) + varint(n)


def f64(num, n):  # fixed64 field
    return varint((num << 3) | 1) + struct.pack("<Q", n)


def kv(key, value):
    any_value = fb(1, value.encode()) if isinstance(value, str) else fv(3, value)
    return fb(1, key.encode()) + fb(2, any_value)


def body(bi, nspans, t0_ns):
    svc = "svc-%d" % (bi % 4)
    resource = fb(1, kv("service.name", svc)) + fb(1, kv("host.name", "bench-host"))
    spans = bytearray()
    for j in range(nspans):
        n = bi * nspans + j
        trace_id = struct.pack(">QQ", 0x5157000000000000 + bi, j // 8 + 1)
        span_id = struct.pack(">Q", 0x5350000000000000 + n + 1)
        parent = struct.pack(">Q", 0x5350000000000000 + n) if j % 8 else b""
        start = t0_ns + n * 1000000
        sp = fb(1, trace_id) + fb(2, span_id)
        if parent:
            sp += fb(4, parent)
        sp += fb(5, ("GET /api/items/%d" % (j % 50)).encode()) + fv(6, 2 if j % 2 == 0 else 3)
        sp += f64(7, start) + f64(8, start + 250000 + (j % 97) * 1000)
        for k, v in (("http.request.method", "GET"), ("url.path", "/api/items/%d" % (j % 50)),
                     ("http.response.status_code", 500 if j % 50 == 0 else 200),
                     ("server.address", "items.internal"), ("network.protocol.version", "1.1"),
                     ("user_agent.original", "bench/1.0")):
            sp += fb(9, kv(k, v))
        sp += fb(15, fv(3, 2 if j % 50 == 0 else 1))
        spans += fb(2, bytes(sp))
    scope = fb(1, fb(1, b"bench") + fb(2, b"1.0")) + bytes(spans)
    return fb(1, fb(1, resource) + fb(2, scope))


def main():
    d, nbodies, nspans = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t0_ns = int(sys.argv[4]) if len(sys.argv) > 4 else 1700000000 * 10**9
    os.makedirs(d, exist_ok=True)
    for i in range(nbodies):
        with open(os.path.join(d, "%d.pb" % i), "wb") as f:
            f.write(body(i, nspans, t0_ns))


if __name__ == "__main__":
    main()
