#!/usr/bin/env python3
"""idleconns.py HOST PORT PATH N READY_FILE [HOLD_SECONDS]

Opens N keep-alive connections to HOST:PORT, sends one GET PATH on each and
reads its whole answer (one connection at a time, so the proxy's upstream
pool is not flooded), then writes "ok=<n>" to READY_FILE and holds the
connections open until it is killed or HOLD_SECONDS (default 60) pass.
Used by bench/proxy/run.sh to read a proxy's RSS with N idle clients."""
import socket
import sys
import time


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    while len(body) < clen:
        chunk = s.recv(65536)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n, ready = int(sys.argv[4]), sys.argv[5]
    hold = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()
    socks, ok = [], 0
    deadline = time.time() + 60
    for _ in range(n):
        if time.time() > deadline:
            break
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(req)
            if read_response(s):
                ok += 1
            socks.append(s)
        except OSError:
            break
    with open(ready, "w") as f:
        f.write("ok=%d\n" % ok)
    time.sleep(hold)


if __name__ == "__main__":
    main()
