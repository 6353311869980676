#!/usr/bin/env bash
# Benchmark for `airlock registry push` (issue 18): 10 images with shared base layers
# (one base layer in all ten, one more in every other image, one own layer each;
# about 1.05 GiB of distinct blobs, 2 GiB summed over the images) pushed into a fresh
# local docker-registry by
#   skopeo:  `skopeo copy oci:LAYOUT:imgN docker://REG/…` for the 10 images one after
#            another (the layout the bundle was built from: no bundle to verify)
#   first:   `airlock registry push BUNDLE --to REG/bench` (verifies the bundle, sends
#            every blob once, mounts the shared ones)
#   second:  the same push again (everything is there)
# run in pairs, skopeo and airlock taking turns to go first, each on a fresh registry,
# so a machine that drifts moves both sides of a pair alike. Prints the median wall
# seconds of each side, the per-pair ratio skopeo/first (goal >= 2.0), first/second
# (goal >= 20) and airlock's peak RSS (goal < 150 MiB).
# Layers are random bytes declared as gzip layers (like real compressed layers; the
# registry and skopeo do not look inside, and the bundle stores them as they are).
# Usage: tests/bench/registry-push.sh [--keep]   (RUNS pairs, default 3; needs
#        docker-registry, skopeo, openssl, python3, GNU time; BIN_DIR=DIR takes the
#        binaries from DIR instead of building them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-3}
IMAGES=10
BASE_MIB=${BASE_MIB:-100}
MID_MIB=${MID_MIB:-50}
OWN_MIB=${OWN_MIB:-90}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/airlock-push-bench.XXXXXX)}
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1
REG_PID=
stop_registry() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  REG_PID=
  rm -rf "$WORK/reg"
}
cleanup() {
  stop_registry
  if [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }
MiB=$((1024 * 1024))

if [ -z "${BIN_DIR:-}" ]; then
  # The release profile, as shipped: in the dev profile our own crates are not
  # optimised, and their per-byte loops (zero-filling read buffers, bounds checks)
  # cost the push more CPU than SHA-256 does, which says nothing about the product.
  echo "== build (release profile)"
  (cd "$ROOT" && cargo build -q --release -p airlock-bundler -p airlock-installer)
  BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi

# A fresh registry on a free port with empty storage: sets REG.
start_registry() {
  stop_registry
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG=127.0.0.1:$port
  mkdir -p "$WORK/reg"
  printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
    "$WORK/reg/data" "$REG" > "$WORK/reg/config.yml"
  docker-registry serve "$WORK/reg/config.yml" >"$WORK/reg/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && return; sleep 0.1; done
  cat "$WORK/reg/log"; exit 1
}

prng() { openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null; }
L=$WORK/layout
echo "== generate $IMAGES images in $L (base ${BASE_MIB} MiB in all, ${MID_MIB} MiB in every other, ${OWN_MIB} MiB own)"
mkdir -p "$L/blobs/sha256" "$WORK/raw"
set +o pipefail
prng 1 | head -c $((BASE_MIB * MiB)) > "$WORK/raw/base"
prng 2 | head -c $((MID_MIB * MiB)) > "$WORK/raw/mid"
for i in $(seq 1 $IMAGES); do prng "$((100 + i))" | head -c $((OWN_MIB * MiB)) > "$WORK/raw/own$i"; done
set -o pipefail
python3 - "$WORK" "$IMAGES" <<'PY'
import hashlib, json, os, sys
work, n = sys.argv[1], int(sys.argv[2]); L = os.path.join(work, "layout"); B = os.path.join(L, "blobs", "sha256")
def put_bytes(b):
    d = hashlib.sha256(b).hexdigest(); open(os.path.join(B, d), "wb").write(b); return d, len(b)
def put_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
    d = h.hexdigest(); os.replace(p, os.path.join(B, d)); return d, os.path.getsize(os.path.join(B, d))
raw = os.path.join(work, "raw")
base, mid = put_file(os.path.join(raw, "base")), put_file(os.path.join(raw, "mid"))
index = {"schemaVersion": 2, "manifests": []}
for i in range(1, n + 1):
    layers = [base] + ([mid] if i % 2 else []) + [put_file(os.path.join(raw, f"own{i}"))]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": [f"/app{i}"]},
                      "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d, _ in layers]}}).encode()
    cd, cs = put_bytes(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cd}", "size": cs},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{d}", "size": s}
                               for d, s in layers]}).encode()
    md, ms = put_bytes(m)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{md}",
                               "size": ms, "annotations": {"org.opencontainers.image.ref.name": f"img{i}"}})
open(os.path.join(L, "index.json"), "w").write(json.dumps(index))
open(os.path.join(L, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
rm -rf "$WORK/raw"
DISTINCT=$(du -sb "$L/blobs" | cut -f1)

echo "== bundle"
S=$WORK/spec
mkdir -p "$S"
{ echo "name: push-bench"; echo "version: '1.0'"
  echo "components:"; echo "  - name: bench"; echo "    images:"
  for i in $(seq 1 $IMAGES); do echo "      - ref: example.com/bench/img$i:1"; echo "        from: oci:$L:img$i"; done
} > "$S/bundle.yaml"
"$BIN_DIR/airlock-bundler" keygen -W -p "$WORK/k.pub" -s "$WORK/k.key" >/dev/null
SOURCE_DATE_EPOCH=1795305600 "$BIN_DIR/airlock-bundler" create "$S/bundle.yaml" -o "$WORK/b.airlock" \
  --key "$WORK/k.key" --cache-dir "$WORK/cache" 2>/dev/null >/dev/null
rm -rf "$WORK/cache"
# The push keeps the blobs it sends in a temporary directory: on this disk, cleaned with $WORK.
export TMPDIR=$WORK/tmp HOME=$WORK/home
mkdir -p "$TMPDIR" "$HOME"

skopeo_side() {
  start_registry
  sync
  local t0 t1
  t0=$(date +%s.%N)
  for i in $(seq 1 $IMAGES); do
    skopeo copy -q --dest-tls-verify=false "oci:$L:img$i" "docker://$REG/bench/example.com/bench/img$i:1"
  done
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')" > "$WORK/skopeo.s"
  stop_registry
}

airlock_side() {
  start_registry
  sync
  local push=("$BIN_DIR/airlock" registry push "$WORK/b.airlock" --to "$REG/bench" --plain-http --pubkey "$WORK/k.pub")
  /usr/bin/time -f '%e %M' -o "$WORK/first.t" "${push[@]}" >/dev/null
  /usr/bin/time -f '%e %M' -o "$WORK/second.t" "${push[@]}" --output json > "$WORK/second.json"
  python3 - "$WORK/second.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["bytes_sent"] == 0 and all(i["state"] == "present" for i in r["images"]), "the second push sent something"
PY
  # The pushed digests are the layout's.
  for i in 1 $IMAGES; do
    got=$(skopeo inspect --raw --tls-verify=false "docker://$REG/bench/example.com/bench/img$i:1" | sha256sum | cut -d' ' -f1)
    want=$(python3 -c "import json; print([m['digest'] for m in json.load(open('$L/index.json'))['manifests'] if m['annotations']['org.opencontainers.image.ref.name']=='img$i'][0])")
    [ "sha256:$got" = "$want" ] || { echo "img$i: registry has sha256:$got, layout $want"; exit 1; }
  done
  stop_registry
}

: > "$WORK/pairs"
for r in $(seq 1 "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then skopeo_side; airlock_side; else airlock_side; skopeo_side; fi
  read -r f_s f_kb < "$WORK/first.t"
  read -r s_s s_kb < "$WORK/second.t"
  echo "$(cat "$WORK/skopeo.s") $f_s $f_kb $s_s $s_kb" >> "$WORK/pairs"
  echo "pair $r: skopeo $(cat "$WORK/skopeo.s") s; airlock first $f_s s (peak RSS $((f_kb / 1024)) MiB), second $s_s s (peak RSS $((s_kb / 1024)) MiB)"
done
python3 - "$WORK/pairs" "$DISTINCT" "$IMAGES" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
distinct, n = int(sys.argv[2]) / 2**20, int(sys.argv[3])
sk, first, fkb, second, skb = zip(*rows)
ratio = [s / f for s, f in zip(sk, first)]
again = [f / max(s, 0.001) for f, s in zip(first, second)]
med = statistics.median
print(f"== results ({n} images, {distinct:.0f} MiB of distinct blobs; {len(rows)} pairs)")
print(f"skopeo copy one after another: median {med(sk):.2f} s")
print(f"airlock registry push, first:  median {med(first):.2f} s   ratio skopeo/first median {med(ratio):.2f} (min {min(ratio):.2f}, max {max(ratio):.2f}; goal >= 2.0)")
print(f"airlock registry push, second: median {med(second):.3f} s  ratio first/second median {med(again):.0f} (min {min(again):.0f}; goal >= 20)")
print(f"airlock peak RSS: {max(fkb + skb) / 1024:.0f} MiB (goal < 150)")
PY
