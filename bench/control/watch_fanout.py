#!/usr/bin/env python3
"""Watch fan-out for bench/control/api.sh.

Opens N watch streams (HTTP/1.1, chunked) on skiff-control's Services in
one namespace, then creates M Services one after the other; for each create
it measures the time from sending the POST until every watcher has the
ADDED event (and until half of them have it). Prints one JSON line.

usage: watch_fanout.py PORT TOKEN NAMESPACE N M [WRITE_PORT]
(WRITE_PORT: create through another control replica on the same database,
so the events reach PORT's watchers through the store's notifications.)
"""
import asyncio
import json
import statistics
import sys
import time

PORT, TOKEN, NS, N, M = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
WPORT = sys.argv[6] if len(sys.argv) > 6 else PORT
HOST = "127.0.0.1"


async def request(method, path, body=b"", port=None):
    r, w = await asyncio.open_connection(HOST, int(port or PORT))
    head = (f"{method} {path} HTTP/1.1\r\nhost: {HOST}\r\nauthorization: Bearer {TOKEN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n")
    w.write(head.encode() + body)
    await w.drain()
    data = await r.read()
    w.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def main():
    st, body = await request("GET", f"/api/v1/services/{NS}")
    assert st == 200, body
    # the list body may be chunked: find the resourceVersion by text
    txt = body.decode(errors="replace")
    i = txt.index('"resourceVersion":"') + len('"resourceVersion":"')
    rv = txt[i:txt.index('"', i)]
    seen = [dict() for _ in range(N)]  # watcher -> {name: arrival time}
    waiters = {}

    async def watcher(k):
        r, w = await asyncio.open_connection(HOST, int(PORT))
        w.write((f"GET /api/v1/services/{NS}?watch=true&resourceVersion={rv} HTTP/1.1\r\nhost: {HOST}\r\n"
                 f"authorization: Bearer {TOKEN}\r\n\r\n").encode())
        await w.drain()
        buf = b""
        while True:
            chunk = await r.read(65536)
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while True:
                j = buf.find(b'"name":"fan-')
                if j < 0:
                    buf = buf[-64:]
                    break
                e = buf.find(b'"', j + 8)
                if e < 0:
                    buf = buf[j:]
                    break
                name = buf[j + 8:e].decode()
                buf = buf[e:]
                if name not in seen[k]:
                    seen[k][name] = now
                    ev = waiters.get(name)
                    if ev and all(name in s for s in seen):
                        ev.set()

    tasks = [asyncio.create_task(watcher(k)) for k in range(N)]
    await asyncio.sleep(1.0 + N / 200)  # streams open
    full, half = [], []
    for m in range(M):
        name = f"fan-{m}"
        waiters[name] = asyncio.Event()
        body = json.dumps({"apiVersion": "skiff.dev/v1", "kind": "Service", "metadata": {"name": name},
                           "spec": {"endpoints": ["127.0.0.1:9001"]}}).encode()
        t0 = time.monotonic()
        st, b = await request("POST", f"/api/v1/services/{NS}", body, WPORT)
        assert st == 201, b
        try:
            await asyncio.wait_for(waiters[name].wait(), 15)
        except asyncio.TimeoutError:
            got = sum(1 for s in seen if name in s)
            print(json.dumps({"error": f"{name}: {got}/{N} watchers after 15s"}))
            sys.exit(1)
        arr = sorted(s[name] - t0 for s in seen)
        full.append(arr[-1] * 1000)
        half.append(arr[len(arr) // 2] * 1000)
    for t in tasks:
        t.cancel()
    print(json.dumps({"watchers": N, "events": M,
                      "all_ms_median": round(statistics.median(full), 2),
                      "all_ms_max": round(max(full), 2),
                      "half_ms_median": round(statistics.median(half), 2)}))


asyncio.run(main())
