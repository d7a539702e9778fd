#!/usr/bin/env bash
# verifyImages end to end against a real registry: Debian's docker-registry
# (distribution v2) on a loopback port with filesystem storage, images pushed
# by skopeo from an OCI layout the test writes, signatures made and checked by
# `skiff sign` / `skiff verify` (cosign's layout), then skiff-policy over
# HTTPS: a signed image is allowed and mutated to its digest, unsigned,
# wrongly signed and tampered images are denied naming the image and the
# reason, and with the registry down the denial says it is unreachable.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CERTS=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-policy-images.XXXXXX")
PID=
RPID=
APID=

cleanup() {
  for p in "$PID" "$RPID" "$APID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-policy log" >&2
  cat "$TMP/policy.log" >&2 || true
  echo "---- registry log (tail)" >&2
  tail -n 20 "$TMP/registry.log" >&2 || true
  exit 1
}

command -v docker-registry >/dev/null || fail "docker-registry is not installed (.ci/install-deps.sh)"
command -v skopeo >/dev/null || fail "skopeo is not installed (.ci/install-deps.sh)"

RPORT=$(free_port)
PORT=$(free_port)
ADMIN=$(free_port)
REG=127.0.0.1:$RPORT
URL=https://localhost:$PORT

# ---- the registry
mkdir -p "$TMP/storage"
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $TMP/storage}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$RPORT
EOF
docker-registry serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
RPID=$!
wait_until 30 curl -fsS "http://$REG/v2/" || fail "registry never came up"

# ---- three tiny images from an OCI layout (a layer tarball, config, manifest)
python3 - "$TMP/oci" <<'PY'
import hashlib, io, json, os, sys, tarfile, gzip
root = sys.argv[1]
os.makedirs(root + "/blobs/sha256", exist_ok=True)
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    open("%s/blobs/sha256/%s" % (root, h), "wb").write(data)
    return {"digest": "sha256:" + h, "size": len(data)}
manifests = []
for name in ("app", "other", "evil", "tamper", "later"):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        body = ("hello from %s\n" % name).encode()
        info = tarfile.TarInfo("hello.txt"); info.size = len(body); info.mtime = 0
        t.addfile(info, io.BytesIO(body))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer = blob(gzip.compress(raw.getvalue(), mtime=0))
    cfg = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                           "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
           "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")]}
    m = blob(json.dumps(man).encode())
    manifests.append(dict(m, mediaType="application/vnd.oci.image.manifest.v1+json",
                          annotations={"org.opencontainers.image.ref.name": name}))
open(root + "/oci-layout", "w").write(json.dumps({"imageLayoutVersion": "1.0.0"}))
open(root + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": manifests}))
PY
for img in app other evil tamper later; do
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$TMP/oci:$img" "docker://$REG/shop/$img:1" \
    >"$TMP/skopeo.log" 2>&1 || { cat "$TMP/skopeo.log" >&2; fail "skopeo copy $img"; }
done
digest_of() {
  curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/shop/$1/manifests/1" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'
}
APP_DIGEST=$(digest_of app)
[ -n "$APP_DIGEST" ] || fail "no digest for shop/app:1"

# ---- keys, sign, verify
SKIFF=$BIN/skiff
(cd "$TMP" && "$SKIFF" sign --generate-key) | has "Public key written to cosign.pub" || fail "generate-key"
(cd "$TMP" && "$SKIFF" sign --generate-key --output-key-prefix other) >/dev/null || fail "generate-key other"
[ "$(stat -c %a "$TMP/cosign.key")" = 600 ] || fail "private key is not 0600"
if (cd "$TMP" && "$SKIFF" sign --generate-key) 2>/dev/null; then fail "generate-key overwrote cosign.key"; fi

"$SKIFF" sign --key "$TMP/cosign.key" --allow-insecure-registry "$REG/shop/app:1" >"$TMP/sign.out" 2>&1 ||
  { cat "$TMP/sign.out" >&2; fail "skiff sign"; }
has "Pushing signature to: $REG/shop/app:sha256-${APP_DIGEST#sha256:}.sig" <"$TMP/sign.out" || fail "sign output: $(cat "$TMP/sign.out")"
# cosign's layout: the .sig tag holds a simple-signing layer with the signature annotation
curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$REG/v2/shop/app/manifests/sha256-${APP_DIGEST#sha256:}.sig" >"$TMP/sig.json" || fail "no .sig manifest"
python3 - "$TMP/sig.json" "$REG" "$APP_DIGEST" <<'PY' || fail "signature manifest layout: $(cat "$TMP/sig.json")"
import json, sys, urllib.request
m = json.load(open(sys.argv[1]))
l = m["layers"][0]
assert l["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json", l
assert l["annotations"]["dev.cosignproject.cosign/signature"]
p = json.load(urllib.request.urlopen("http://%s/v2/shop/app/blobs/%s" % (sys.argv[2], l["digest"])))
assert p["critical"]["image"]["docker-manifest-digest"] == sys.argv[3], p
assert p["critical"]["type"] == "cosign container image signature", p
assert p["critical"]["identity"]["docker-reference"] == sys.argv[2] + "/shop/app", p
PY
"$SKIFF" verify --key "$TMP/cosign.pub" --allow-insecure-registry "$REG/shop/app:1" >"$TMP/verify.out" 2>&1 ||
  { cat "$TMP/verify.out" >&2; fail "skiff verify of a signed image"; }
has "The signatures were verified against the specified public key" <"$TMP/verify.out" || fail "verify output"
# signing twice with the same key adds nothing; the image still verifies by digest
"$SKIFF" sign --key "$TMP/cosign.key" --allow-insecure-registry "$REG/shop/app@$APP_DIGEST" >/dev/null 2>&1 || fail "re-sign"
"$SKIFF" verify --key "$TMP/cosign.pub" --allow-insecure-registry "$REG/shop/app@$APP_DIGEST" >/dev/null 2>&1 ||
  fail "verify by digest"

set +e
"$SKIFF" verify --key "$TMP/cosign.pub" --allow-insecure-registry "$REG/shop/other:1" >"$TMP/v2.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "verify of an unsigned image exited $rc"
has "no signatures found" <"$TMP/v2.out" || fail "unsigned message: $(cat "$TMP/v2.out")"

"$SKIFF" sign --key "$TMP/other.key" --allow-insecure-registry "$REG/shop/evil:1" >/dev/null 2>&1 || fail "sign evil"
set +e
"$SKIFF" verify --key "$TMP/cosign.pub" --allow-insecure-registry "$REG/shop/evil:1" >"$TMP/v3.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "verify with the wrong key exited $rc"
has "invalid signature" <"$TMP/v3.out" || fail "wrong key message: $(cat "$TMP/v3.out")"
# without --allow-insecure-registry the CLI insists on https
set +e
"$SKIFF" verify --key "$TMP/cosign.pub" "$REG/shop/app:1" >"$TMP/v4.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "https to an http registry exited $rc"
has "unreachable" <"$TMP/v4.out" || fail "https message: $(cat "$TMP/v4.out")"
# an encrypted cosign key is refused with a clear reason
printf -- '-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n' >"$TMP/enc.key"
set +e
"$SKIFF" sign --key "$TMP/enc.key" --allow-insecure-registry "$REG/shop/app:1" >"$TMP/v5.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "encrypted key exited $rc"
has "encrypted cosign private keys are not supported" <"$TMP/v5.out" || fail "encrypted message: $(cat "$TMP/v5.out")"

# tamper: sign shop/tamper, then swap the signature annotation for evil's (a
# valid signature, over another payload)
"$SKIFF" sign --key "$TMP/cosign.key" --allow-insecure-registry "$REG/shop/tamper:1" >/dev/null 2>&1 || fail "sign tamper"
T_DIGEST=$(digest_of tamper)
E_DIGEST=$(digest_of evil)
python3 - "$REG" "${T_DIGEST#sha256:}" "${E_DIGEST#sha256:}" <<'PY' || fail "tampering"
import json, sys, urllib.request
reg, t, e = sys.argv[1:]
acc = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
get = lambda repo, tag: json.load(urllib.request.urlopen(urllib.request.Request(
    "http://%s/v2/shop/%s/manifests/sha256-%s.sig" % (reg, repo, tag), headers=acc)))
mt, me = get("tamper", t), get("evil", e)
key = "dev.cosignproject.cosign/signature"
mt["layers"][0]["annotations"][key] = me["layers"][0]["annotations"][key]
req = urllib.request.Request("http://%s/v2/shop/tamper/manifests/sha256-%s.sig" % (reg, t),
                             data=json.dumps(mt).encode(), method="PUT",
                             headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
assert urllib.request.urlopen(req).status == 201
PY
set +e
"$SKIFF" verify --key "$TMP/cosign.pub" --allow-insecure-registry "$REG/shop/tamper:1" >"$TMP/v6.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "tampered signature verified (exit $rc)"

# ---- a registry that wants a password (htpasswd, Basic challenge)
command -v htpasswd >/dev/null || fail "htpasswd is not installed (apache2-utils)"
APORT=$(free_port)
AREG=127.0.0.1:$APORT
htpasswd -Bbn alice s3cret >"$TMP/htpasswd"
mkdir -p "$TMP/storage2"
cat >"$TMP/registry2.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $TMP/storage2}
http:
  addr: 127.0.0.1:$APORT
auth:
  htpasswd: {realm: basic-realm, path: $TMP/htpasswd}
EOF
docker-registry serve "$TMP/registry2.yml" >"$TMP/registry2.log" 2>&1 &
APID=$!
wait_until 30 sh -c "curl -sS -o /dev/null -w '%{http_code}' http://$AREG/v2/ | grep -q 401" || fail "registry with auth never came up"
skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds alice:s3cret "oci:$TMP/oci:app" \
  "docker://$AREG/private/app:1" >"$TMP/skopeo.log" 2>&1 || { cat "$TMP/skopeo.log" >&2; fail "skopeo copy with creds"; }
set +e
"$SKIFF" sign --key "$TMP/cosign.key" --allow-insecure-registry "$AREG/private/app:1" >"$TMP/a1.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "sign without credentials exited $rc"
has "registry $AREG wants a username and password" <"$TMP/a1.out" || fail "no-credentials message: $(cat "$TMP/a1.out")"
if SKIFF_REGISTRY_USERNAME=alice SKIFF_REGISTRY_PASSWORD=wrong "$SKIFF" verify --key "$TMP/cosign.pub" \
  --allow-insecure-registry "$AREG/private/app:1" >"$TMP/a2.out" 2>&1; then fail "verify with a wrong password succeeded"; fi
has "registry answered 401 (unauthorized)" <"$TMP/a2.out" || fail "wrong password message: $(cat "$TMP/a2.out")"
SKIFF_REGISTRY_USERNAME=alice SKIFF_REGISTRY_PASSWORD=s3cret "$SKIFF" sign --key "$TMP/cosign.key" \
  --allow-insecure-registry "$AREG/private/app:1" >"$TMP/a3.out" 2>&1 || fail "sign with credentials: $(cat "$TMP/a3.out")"
SKIFF_REGISTRY_USERNAME=alice SKIFF_REGISTRY_PASSWORD=s3cret "$SKIFF" verify --key "$TMP/cosign.pub" \
  --allow-insecure-registry "$AREG/private/app:1" >"$TMP/a4.out" 2>&1 || fail "verify with credentials: $(cat "$TMP/a4.out")"
kill -TERM "$APID"
wait "$APID" 2>/dev/null || true
APID=

# ---- skiff-policy with a verifyImages policy
PUBKEY=$(sed 's/^/                      /' "$TMP/cosign.pub")
mkdir -p "$TMP/policies"
cat >"$TMP/policies/verify.yaml" <<EOF
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: check-image-signatures
spec:
  validationFailureAction: Enforce
  webhookTimeoutSeconds: 30
  rules:
    - name: verify-signature
      match:
        any:
          - resources:
              kinds: [Pod]
      verifyImages:
        - imageReferences: ["$REG/shop/*"]
          skipImageReferences: ["$REG/shop/skipped*"]
          mutateDigest: true
          verifyDigest: true
          attestors:
            - entries:
                - keys:
                    publicKeys: |-
$PUBKEY
                    rekor: {ignoreTlog: true}
EOF
cat >"$TMP/policy.yaml" <<EOF
listen: 127.0.0.1:$PORT
tls: {cert: $CERTS/server.pem, key: $CERTS/server.key}
policies: [$TMP/policies]
registry:
  insecure: [$REG]
  timeout: 5s
  cache_ttl: 10m
admin: {listen: 127.0.0.1:$ADMIN}
EOF
"$BIN/skiff-policy" --config "$TMP/policy.yaml" --check | has "config ok" ||
  { "$BIN/skiff-policy" --config "$TMP/policy.yaml" --check || true; fail "--check"; }
"$BIN/skiff-policy" --config "$TMP/policy.yaml" >"$TMP/policy.log" 2>&1 &
PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "skiff-policy never ready"

review() { # IMAGE [IMAGE2] -> an AdmissionReview for a Pod
  python3 - "$@" <<'PY'
import json, sys
cs = [{"name": "c%d" % i, "image": im} for i, im in enumerate(sys.argv[1:])]
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"containers": cs}}
gvk = {"group": "", "version": "v1", "kind": "Pod"}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "7b1e0000-0000-4000-8000-000000000001", "kind": gvk, "name": "web", "namespace": "shop",
    "operation": "CREATE", "userInfo": {"username": "kubernetes-admin"}, "object": pod, "oldObject": None}}))
PY
}
post() { # path file -> body in $TMP/out
  curl -sS --cacert "$CERTS/ca.pem" -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"$2" "$URL$1"
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d = d.get(k) if isinstance(d, dict) else None
print(d if isinstance(d, str) else json.dumps(d))' "$TMP/out" "$1"; }

# signed: allowed, and /mutate pins the image to its digest
review "$REG/shop/app:1" >"$TMP/r1.json"
[ "$(post /mutate "$TMP/r1.json")" = 200 ] || fail "mutate status: $(cat "$TMP/out")"
[ "$(jget response.allowed)" = true ] || fail "signed image denied: $(cat "$TMP/out")"
python3 - "$TMP/out" "$REG/shop/app:1@$APP_DIGEST" <<'PY' || fail "no digest patch: $(cat "$TMP/out")"
import base64, json, sys
r = json.load(open(sys.argv[1]))["response"]
assert r["patchType"] == "JSONPatch", r
ops = json.loads(base64.b64decode(r["patch"]))
assert {"op": "replace", "path": "/spec/containers/0/image", "value": sys.argv[2]} in ops, ops
PY
# /validate: by digest passes, by tag fails verifyDigest
review "$REG/shop/app:1@$APP_DIGEST" >"$TMP/r2.json"
post /validate "$TMP/r2.json" >/dev/null
[ "$(jget response.allowed)" = true ] || fail "digest-pinned signed image denied: $(cat "$TMP/out")"
post /validate "$TMP/r1.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "tag allowed despite verifyDigest"
jget response.status.message | has "image verification failed for $REG/shop/app:1: missing digest" || fail "digest msg: $(cat "$TMP/out")"

# unsigned, wrong key, tampered: denied naming the image and the reason
review "$REG/shop/other:1" >"$TMP/r3.json"
post /mutate "$TMP/r3.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "unsigned image allowed"
msg=$(jget response.status.message)
echo "$msg" | has "check-image-signatures" || fail "policy not named: $msg"
echo "$msg" | has "image verification failed for $REG/shop/other:1: no signatures found" || fail "unsigned: $msg"
[ "$(jget response.patch)" = null ] || fail "a denied review carries a patch"

review "$REG/shop/evil:1" >"$TMP/r4.json"
post /mutate "$TMP/r4.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "wrongly signed image allowed"
jget response.status.message | has "image verification failed for $REG/shop/evil:1: no matching signatures: invalid signature" ||
  fail "wrong key: $(cat "$TMP/out")"

review "$REG/shop/tamper:1" >"$TMP/r5.json"
post /mutate "$TMP/r5.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "tampered signature allowed"
jget response.status.message | has "image verification failed for $REG/shop/tamper:1: no matching signatures" ||
  fail "tampered: $(cat "$TMP/out")"

# a Pod with one good and one bad image is denied; images outside imageReferences are not checked
review "$REG/shop/app:1" "$REG/shop/other:1" >"$TMP/r6.json"
post /mutate "$TMP/r6.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "mixed pod allowed"
review "nginx:1.25" "$REG/shop/skipped:1" >"$TMP/r7.json"
post /mutate "$TMP/r7.json" >/dev/null
[ "$(jget response.allowed)" = true ] || fail "unmatched images denied: $(cat "$TMP/out")"

# concurrent reviews: verifications run on worker threads side by side
# (failures are not cached, so those go to the registry every time)
pids=()
for i in $(seq 1 24); do
  case $((i % 3)) in 0) f=r1 want=true ;; 1) f=r3 want=false ;; *) f=r4 want=false ;; esac
  (curl -sS --cacert "$CERTS/ca.pem" -H 'content-type: application/json' --data-binary @"$TMP/$f.json" \
    "$URL/mutate" >"$TMP/burst.$i" && grep -q "\"allowed\":$want" "$TMP/burst.$i") &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent review: $(head -c 3000 "$TMP"/burst.*)"; done

# shift-left: `skiff policy test` resolves, verifies and pins like the webhook
python3 - "$REG" >"$TMP/pods.yaml" <<'PY'
import json, sys
reg = sys.argv[1]
for name, image in (("signed", reg + "/shop/app:1"), ("unsigned", reg + "/shop/other:1")):
    print("---")
    print(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
                      "spec": {"containers": [{"name": "c", "image": image}]}}))
PY
set +e
"$SKIFF" policy test --insecure-registry "$REG" "$TMP/policies" "$TMP/pods.yaml" >"$TMP/pt.out" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || fail "policy test exited $rc: $(cat "$TMP/pt.out")"
has "Pod/shop/unsigned: check-image-signatures/verify-signature: fail: image verification failed for $REG/shop/other:1: no signatures found" \
  <"$TMP/pt.out" || fail "policy test output: $(cat "$TMP/pt.out")"
if grep -q "Pod/shop/signed" "$TMP/pt.out"; then fail "the signed Pod was reported: $(cat "$TMP/pt.out")"; fi

# the registry goes away: cached verifications still hold, new images are denied with the reason
kill -TERM "$RPID"
wait "$RPID" 2>/dev/null || true
RPID=
post /validate "$TMP/r2.json" >/dev/null
[ "$(jget response.allowed)" = true ] || fail "cached verification lost: $(cat "$TMP/out")"
review "$REG/shop/later:1" >"$TMP/r8.json"
[ "$(post /mutate "$TMP/r8.json")" = 200 ] || fail "registry down: status"
[ "$(jget response.allowed)" = false ] || fail "registry down: allowed"
jget response.status.message | has "image verification failed for $REG/shop/later:1: registry $REG unreachable" ||
  fail "registry down message: $(cat "$TMP/out")"

# failurePolicy: Ignore turns registry errors into warnings
sed -i 's/^  validationFailureAction: Enforce/  validationFailureAction: Enforce\n  failurePolicy: Ignore/' "$TMP/policies/verify.yaml"
kill -HUP "$PID"
wait_until 20 sh -c "curl -sS --cacert '$CERTS/ca.pem' -H 'content-type: application/json' --data-binary @'$TMP/r8.json' '$URL/mutate' | grep -q '\"allowed\":true'" ||
  fail "failurePolicy Ignore still denies: $(cat "$TMP/policy.log")"
post /mutate "$TMP/r8.json" >/dev/null
jget response.warnings | has "unreachable" || fail "no warning with failurePolicy Ignore: $(cat "$TMP/out")"

# verifyImages outcomes are counted
metrics=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics")
echo "$metrics" | has '^skiff_policy_image_verifications_total{result="verified"} [1-9]' || fail "no verified count: $metrics"
echo "$metrics" | has '^skiff_policy_image_verifications_total{result="failed"} [1-9]' || fail "no failed count"
echo "$metrics" | has '^skiff_policy_image_verifications_total{result="error"} [1-9]' || fail "no error count"

# the server kept serving throughout
kill -0 "$PID" || fail "skiff-policy died"
kill -TERM "$PID"
wait "$PID" || fail "skiff-policy exit status"
PID=
echo "ok"
