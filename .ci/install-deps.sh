#!/usr/bin/env bash
# Installs the Debian packages Skiff builds and tests with, when missing.
# Used by `make up`, `make test` and CI. Idempotent and quiet when nothing
# is missing.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libuv1-dev libssl-dev openssl libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
  libjansson-dev libyaml-dev libpq-dev librdkafka-dev libgit2-dev libssh2-1-dev libsqlite3-dev
  libcmocka-dev zlib1g-dev libsnappy-dev
  curl nghttp2-client prometheus procps iproute2 python3 python3-jsonpatch jq
  postgresql postgresql-client kcat git docker-registry skopeo apache2-utils openssh-server
)
# Node.js + npm for tests/integration/otel_js.sh (a NodeSource nodejs already brings npm)
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# the prometheus package would start its own server where an init system runs;
# Skiff only needs promtool from it
$SUDO env RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
