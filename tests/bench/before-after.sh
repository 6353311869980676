#!/usr/bin/env bash
# Before/after benchmark for a change that must not move performance (the restructure
# issue: "benchmarks unchanged within noise"): the binaries of REV (before) against the
# working tree's (after) on the same data, run in turn, before and after, pair by pair,
# so a machine that drifts moves both sides of each pair alike.
#
#   create:  airlock-bundler create  (6 images sharing a base layer, ~700 MiB of blobs)
#   verify:  airlock verify
#   install: airlock install --root  (verify + stage + apply, the demo's distribution
#            stand-ins and single-node profile, into a fresh root each run)
#
# Prints, per command, each side's median wall seconds and peak RSS and the median,
# min and max of the per-pair ratio before/after (> 1: after is faster; within about
# 0.95-1.05 on these noisy 2-core machines is "unchanged").
# Usage: tests/bench/before-after.sh [REV]   (default REV: 230b4d8, the last commit
#        before the restructure; RUNS pairs, default 5; needs cargo, git, openssl,
#        python3, GNU time; BEFORE_BIN=DIR uses REV's binaries built elsewhere)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REV=${1:-230b4d8}
RUNS=${RUNS:-5}
W=${BENCH_DIR:-$(mktemp -d /tmp/airlock-before-after.XXXXXX)}
trap 'rm -rf "$W/root" "$W/out"' EXIT
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }
MiB=$((1024 * 1024))
DEMO=$ROOT/examples/demo

echo "== build after (working tree) and before ($REV), release"
(cd "$ROOT" && cargo build --release -q -p airlock-bundler -p airlock-installer)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AFTER=$TARGET/release
SRC=$W/before-src
if [ -n "${BEFORE_BIN:-}" ]; then
  :  # binaries of REV built elsewhere
elif [ ! -x "$TARGET/bench-before/release/airlock" ] || [ "$(cat "$TARGET/bench-before/rev" 2>/dev/null)" != "$REV" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive "$REV" | tar -x -C "$SRC"
  (cd "$SRC" && CARGO_TARGET_DIR=$TARGET/bench-before cargo build --release -q -p airlock-bundler -p airlock-installer)
  echo "$REV" > "$TARGET/bench-before/rev"
fi
BEFORE=${BEFORE_BIN:-$TARGET/bench-before/release}

prng() { openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null; }
if [ ! -f "$W/spec.yaml" ]; then
  echo "== generate 6 images sharing a base layer in $W/layout"
  mkdir -p "$W/layout/blobs/sha256" "$W/raw"
  set +o pipefail
  { prng 1 | head -c $((50 * MiB)); seq 1 2000000 | awk '{printf "2026-11-22 %08d INFO base layer file %d ok\n", $1, $1*7}' | head -c $((50 * MiB)); } > "$W/raw/base"
  for i in 1 2 3 4 5 6; do
    if [ $((i % 2)) = 0 ]; then
      prng "1$i" | head -c $((100 * MiB)) > "$W/raw/app$i"
    else
      prng "2$i" | head -c $((80 * MiB)) | base64 -w 76 | head -c $((100 * MiB)) > "$W/raw/app$i"
    fi
  done
  set -o pipefail
  python3 - "$W" "$DEMO" "$ROOT" <<'PY'
import hashlib, json, os, sys
w, demo, root = sys.argv[1:]
L = os.path.join(w, "layout"); B = os.path.join(L, "blobs", "sha256")
def put(x):
    if isinstance(x, bytes):
        d = hashlib.sha256(x).hexdigest(); open(os.path.join(B, d), "wb").write(x); return d, len(x)
    h = hashlib.sha256()
    with open(x, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    d = h.hexdigest(); os.replace(x, os.path.join(B, d)); return d, os.path.getsize(os.path.join(B, d))
base = put(os.path.join(w, "raw", "base"))
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
images = ""
for i in range(1, 7):
    app = put(os.path.join(w, "raw", f"app{i}"))
    lt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if i % 2 == 0 else "")
    cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + base[0], "sha256:" + app[0]]}}).encode())
    man = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cfg[0], "size": cfg[1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + base[0], "size": base[1]},
                   {"mediaType": lt, "digest": "sha256:" + app[0], "size": app[1]}]}).encode())
    ref = f"registry.example/bench/app{i}:1.0"
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + man[0],
                               "size": man[1], "annotations": {"org.opencontainers.image.ref.name": ref}})
    images += f"      - ref: {ref}\n        from: oci:{L}:{ref}\n"
json.dump(index, open(os.path.join(L, "index.json"), "w"))
open(os.path.join(L, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
# The demo's distribution stand-ins and single-node profile, so the bundle installs.
open(os.path.join(w, "spec.yaml"), "w").write(f"""name: bench-before-after
version: 1.0.0
distribution:
  kind: k3s
  version: v1.31.4+k3s1
  arch: amd64
  checksums: {demo}/dist/sha256sum-amd64.txt
  artifacts:
    - name: k3s
      path: {demo}/dist/k3s
    - name: k3s-airgap-images-amd64.tar.zst
      path: {demo}/dist/k3s-airgap-images-amd64.tar.zst
components:
  - name: platform
    images:
      - ref: docker.io/rancher/klipper-helm:v0.9.3-build20241008
        from: oci:{demo}/images/layout:docker.io/rancher/klipper-helm:v0.9.3-build20241008
  - name: app
    charts:
      - path: {demo}/charts/hello
    images:
{images}profiles:
  - {w}/single-node.yaml
""")
# The shipped profile installs the demo's monitoring component too, which this bundle
# does not carry (an install would refuse it): the same profile without it.
profile = open(os.path.join(root, "profiles", "single-node.yaml")).read()
open(os.path.join(w, "single-node.yaml"), "w").write(profile.replace("\n  - monitoring\n", "\n"))
PY
  "$AFTER/airlock-bundler" keygen -W -p "$W/k.pub" -s "$W/k.key" -f >/dev/null
fi
export SOURCE_DATE_EPOCH=1795392000
mkdir -p "$W/out"
"$AFTER/airlock-bundler" create "$W/spec.yaml" -o "$W/bench.airlock" --key "$W/k.key" >/dev/null
echo "   bundle: $(( $(stat -c %s "$W/bench.airlock") / MiB )) MiB compressed"

# pair NAME CMD_TEMPLATE: CMD_TEMPLATE uses @BIN@ for the binaries' directory; runs
# after, before, after, before ... RUNS pairs (one warm-up pair first, not counted).
pair() {
  local name=$1 tmpl=$2
  : > "$W/pairs"
  for i in $(seq 0 "$RUNS"); do
    for side in after before; do
      local dir=$AFTER; [ $side = before ] && dir=$BEFORE
      rm -rf "$W/root" "$W/out/b.airlock" "$W/out/b.airlock.sha256"; mkdir -p "$W/root"; sync
      /usr/bin/time -f "%e %M" -o "$W/time.out" bash -c "${tmpl//@BIN@/$dir}" >/dev/null 2>"$W/err" \
        || { echo "$name ($side) failed:"; cat "$W/err"; exit 1; }
      [ "$i" = 0 ] || echo "$side $(cat "$W/time.out")" >> "$W/pairs"
    done
  done
  python3 - "$name" "$W/pairs" <<'PY'
import statistics, sys
name, path = sys.argv[1:]
rows = [l.split() for l in open(path)]
a = [(float(t), int(m)) for s, t, m in rows if s == "after"]
b = [(float(t), int(m)) for s, t, m in rows if s == "before"]
r = [bt / at for (at, _), (bt, _) in zip(a, b)]
med = lambda xs: statistics.median(xs)
print(f"{name:8} after {med([t for t, _ in a]):6.2f} s  before {med([t for t, _ in b]):6.2f} s  "
      f"ratio before/after median {med(r):.3f} (min {min(r):.3f}, max {max(r):.3f})  "
      f"peak RSS after {max(m for _, m in a) // 1024} MiB, before {max(m for _, m in b) // 1024} MiB")
PY
}

echo "== $RUNS pairs each (after, before, after, before, ...)"
pair create "SOURCE_DATE_EPOCH=1795392000 @BIN@/airlock-bundler create '$W/spec.yaml' -o '$W/out/b.airlock' --key '$W/k.key'"
pair verify "@BIN@/airlock verify '$W/bench.airlock' --pubkey '$W/k.pub'"
pair install "@BIN@/airlock install '$W/bench.airlock' --pubkey '$W/k.pub' --answers '$DEMO/answers.yaml' --root '$W/root' --yes"
