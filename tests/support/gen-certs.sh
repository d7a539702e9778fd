#!/usr/bin/env bash
# gen-certs.sh DIR: a throwaway PKI for the TLS tests (ECDSA P-256, like
# skiff-control's CA):
#   ca.pem / ca.key                 trusted test CA
#   server.pem / server.key         CN=localhost, SAN DNS:localhost, IP:127.0.0.1,
#                                   URI:spiffe://skiff.test/region/local/daemon/server
#   client.pem / client.key         URI:spiffe://skiff.test/region/local/workload/client
#   rogue-ca.pem, rogue.pem/.key    a client certificate from an untrusted CA
#   server2.pem / server2.key       a second server certificate (CN=localhost-2) for reload tests
set -euo pipefail
d=${1:?usage: gen-certs.sh DIR}
mkdir -p "$d"
cd "$d"
[ -f .done ] && exit 0
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ca() { # name cn
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}
leaf() { # name cacert cn san eku
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' "$4" "$5" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 365 -sha256 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "Skiff Test CA"
ca rogue-ca "Rogue CA"
leaf server ca localhost "DNS:localhost,IP:127.0.0.1,IP:::1,URI:spiffe://skiff.test/region/local/daemon/server" "serverAuth,clientAuth"
leaf server2 ca localhost-2 "DNS:localhost,IP:127.0.0.1,URI:spiffe://skiff.test/region/local/daemon/server2" "serverAuth,clientAuth"
leaf client ca client "URI:spiffe://skiff.test/region/local/workload/client" "clientAuth"
leaf rogue rogue-ca rogue "URI:spiffe://evil.test/workload/rogue" "clientAuth"
touch .done
