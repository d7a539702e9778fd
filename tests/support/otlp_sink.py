#!/usr/bin/env python3
"""A scripted OTLP/HTTP endpoint for forwarding tests: answers each path
with a planned sequence of statuses (the last one repeats) and records every
request it got as a JSON line (time, path, status, content-type, length).

  otlp_sink.py [--tls CERT KEY] PORT LOGFILE PATH=STATUS[:RETRY_AFTER][,STATUS...] ...
  e.g. /v1/traces=429:2,200 /v1/logs=503 /v1/metrics=400
With --tls it serves HTTPS with that certificate. Each log line also holds
the Authorization header it got.
"""
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
tls = None
if args and args[0] == "--tls":
    tls, args = (args[1], args[2]), args[3:]
port, logfile = int(args[0]), args[1]
plans = {}
for arg in args[2:]:
    path, seq = arg.split("=", 1)
    plans[path] = [tuple(s.split(":")) for s in seq.split(",")]
counts = {}
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            n = counts.get(self.path, 0)
            counts[self.path] = n + 1
            plan = plans.get(self.path, [("200",)])
            step = plan[min(n, len(plan) - 1)]
            with open(logfile, "a") as f:
                f.write(json.dumps({"t": time.monotonic(), "path": self.path, "status": int(step[0]),
                                    "ctype": self.headers.get("Content-Type"), "len": len(body),
                                    "auth": self.headers.get("Authorization")}) + "\n")
        status = int(step[0])
        self.send_response(status)
        if len(step) > 1:
            self.send_header("Retry-After", step[1])
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", port), H)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
