#!/usr/bin/env bash
# Scaling benchmark: one OCI layout holding N images (a 1 MiB base layer shared by all,
# plus a 64 KiB layer of each image's own), bundled with every image listed in the spec.
# For N in SIZES (default "50 500 5000"): wall time and peak RSS of create, verify and
# extract, and the time per image. Per-entry work must be O(1) or O(log n), so the time
# per image stays flat (within 2x) across the series and peak RSS stays < 150 MiB.
# Baseline for create: tar -cf - LAYOUT | zstd -T0 -3 of the same layout.
# Last figures (2 cores shared, load average 12): ms per image for 50 / 500 / 5,000:
#   create 3.8 / 2.4 / 1.6 (5,000: 7.9 s, peak RSS 129 MiB; tar+zstd 2.1 s),
#   verify 1.0 / 0.26 / 0.62, extract 3.6 / 8.3 / 1.1 (peak RSS at most 49 MiB).
# Usage: tests/bench/many-images.sh   (SIZES="50 500" to shorten; BIN=DIR uses built
#        binaries; needs cargo, zstd, python3, GNU time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZES=${SIZES:-"50 500 5000"}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/airlock-many.XXXXXX)}
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }

if [ -z "${BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p airlock-bundler -p airlock-installer)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi

# gen N DIR: the layout DIR/layout and the spec DIR/bundle.yaml.
gen() {
  python3 - "$1" "$2" <<'PY'
import hashlib, json, os, random, sys
n = int(sys.argv[1]); work = sys.argv[2]
L = os.path.join(work, "layout"); B = os.path.join(L, "blobs", "sha256"); os.makedirs(B)
rnd = random.Random(n)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(B, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
base = put(rnd.randbytes(1 << 20))
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
spec = ["name: many", "version: 1.0.0", "components:", "  - name: many", "    images:"]
for i in range(n):
    own = put(rnd.randbytes(64 << 10))
    cfg = put(json.dumps({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [base["digest"], own["digest"]]}}).encode())
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    man = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cfg),
        "layers": [dict(mediaType=gz, **base), dict(mediaType=gz, **own)]}).encode())
    ref = f"registry.example/many/app{i:05d}:1.0"
    index["manifests"].append(dict(mediaType="application/vnd.oci.image.manifest.v1+json", **man,
        annotations={"org.opencontainers.image.ref.name": ref}))
    spec += [f"      - ref: {ref}", f"        from: oci:layout:{ref}"]
open(os.path.join(L, "index.json"), "w").write(json.dumps(index))
open(os.path.join(L, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
open(os.path.join(work, "bundle.yaml"), "w").write("\n".join(spec) + "\n")
PY
}

# run NAME OUTFILE CMD...: one timed run; prints "seconds rss_kib".
run() {
  local out=$1; shift
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>"$out.err" || { cat "$out.err" >&2; return 1; }
  cat "$out"
}

"$BIN/airlock-bundler" keygen -W -p "$WORK/k.pub" -s "$WORK/k.key" -f >/dev/null
export SOURCE_DATE_EPOCH=1795392000
printf '%6s  %-8s %8s %10s %9s\n' images step seconds "ms/image" "RSS MiB"
for n in $SIZES; do
  D=$WORK/n$n; rm -rf "$D"; mkdir -p "$D"; gen "$n" "$D"
  report() { printf '%6s  %-8s %8.2f %10.3f %9d\n' "$n" "$1" "$2" "$(awk -v t="$2" -v n="$n" 'BEGIN{print t*1000/n}')" $(($3 / 1024)); }
  read -r t m < <(run "$D/t" "$BIN/airlock-bundler" create "$D/bundle.yaml" -o "$D/b.airlock" --key "$WORK/k.key"); report create "$t" "$m"
  read -r t m < <(run "$D/t" bash -c "tar -C '$D' -cf - layout | zstd -q -T0 -3 > '$D/base.tar.zst'"); report tar+zstd "$t" "$m"
  read -r t m < <(run "$D/t" "$BIN/airlock" verify "$D/b.airlock" --pubkey "$WORK/k.pub"); report verify "$t" "$m"
  read -r t m < <(run "$D/t" "$BIN/airlock" extract "$D/b.airlock" --pubkey "$WORK/k.pub" -d "$D/x"); report extract "$t" "$m"
  rm -rf "$D"
done
