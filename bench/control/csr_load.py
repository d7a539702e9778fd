#!/usr/bin/env python3
"""Posts certificate requests to a CA's signing endpoint for a fixed time
from N keep-alive connections and prints issued certificates per second.

  csr_load.py skiff URL CA_BUNDLE|- TOKEN CSR_DIR SECS CONNS
  csr_load.py cfssl URL -           -     CSR_DIR SECS CONNS

Every answer is checked (HTTP 200 and a PEM certificate in it); anything
else counts as an error and is reported. Used by bench/control/csr.sh."""
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse


def main():
    kind, url, ca, token, csr_dir, secs, conns = sys.argv[1:8]
    secs, conns = float(secs), int(conns)
    csrs = [open(os.path.join(csr_dir, f)).read() for f in sorted(os.listdir(csr_dir)) if f.endswith(".csr")]
    u = urllib.parse.urlparse(url)
    ctx = None
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca)
    if kind == "skiff":
        path = "/api/v1/ca/csr"
        bodies = [json.dumps({"csr": c, "ttl": 3600}).encode() for c in csrs]
        headers = {"content-type": "application/json", "authorization": "Bearer " + token}
        key = "chain"
    else:
        path = "/api/v1/cfssl/sign"
        bodies = [json.dumps({"certificate_request": c}).encode() for c in csrs]
        headers = {"content-type": "application/json"}
        key = None
    ok = [0] * conns
    bad = [0] * conns
    first_err = []
    deadline = time.monotonic() + secs

    def worker(i):
        c = None
        n = i
        while time.monotonic() < deadline:
            try:
                if c is None:
                    if ctx:
                        c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
                    else:
                        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                c.request("POST", path, bodies[n % len(bodies)], headers)
                r = c.getresponse()
                data = r.read()
                n += conns
                doc = json.loads(data)
                cert = doc.get(key) if key else (doc.get("result") or {}).get("certificate")
                if r.status == 200 and cert and "BEGIN CERTIFICATE" in cert:
                    ok[i] += 1
                else:
                    bad[i] += 1
                    if not first_err:
                        first_err.append("HTTP %d %s" % (r.status, data[:200]))
            except Exception as e:  # counted and reported, the run goes on
                bad[i] += 1
                if not first_err:
                    first_err.append(repr(e))
                c = None

    start = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - start
    print(json.dumps({"issued": sum(ok), "errors": sum(bad), "seconds": round(took, 2),
                      "per_second": round(sum(ok) / took, 1), "first_error": first_err[0] if first_err else None}))


if __name__ == "__main__":
    main()
