#!/usr/bin/env bash
# Benchmark for the bundle format (issue: "Signed offline bundle").
#
# Data: one OCI layout with 20 images sharing one base layer, >= 2 GiB of layer
# blobs, mixed random (like compressed layers) and compressible text. Then, medians of
# RUNS (default 3), page cache warm:
#   create: airlock-bundler create   vs  tar -cf - LAYOUT | zstd -T0 -3   (goal >= 1.0)
#   verify: airlock verify            vs  zstd -dc BUNDLE > /dev/null     (goal >= 0.9)
#           and, for reference, stock tools doing the same work as verify:
#           zstd -dc BUNDLE | openssl dgst -sha256 (decode on one core, SHA-256 on the
#           other), and how much a SHA-256 on the second core slows `zstd -dc` down
#           (on a 2-vCPU VM the cores are not independent).
#   peak RSS of create and verify (goal < 150 MiB), and the base layer stored once.
# Ratio = baseline time / our time (> 1 means we are faster).
# Usage: tests/bench/bundle.sh [--keep]   (needs: cargo, zstd, openssl, python3, GNU time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/airlock-bench.XXXXXX)}
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1
cleanup() { if [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }
MiB=$((1024 * 1024))

echo "== build (release)"
(cd "$ROOT" && cargo build --release -q -p airlock-bundler -p airlock-installer)
BUNDLER=$ROOT/target/release/airlock-bundler
AIRLOCK=$ROOT/target/release/airlock

prng() { openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null; }
L=$WORK/layout
if [ ! -f "$WORK/bundle.yaml" ]; then
  echo "== generate 20 images sharing a base layer in $L"
  mkdir -p "$L/blobs/sha256" "$WORK/raw"
  set +o pipefail
  # base layer: 100 MiB, half random half log-like text
  { prng 1 | head -c $((50 * MiB)); seq 1 2000000 | awk '{printf "2026-11-22 %08d INFO base layer file %d ok\n", $1, $1*7}' | head -c $((50 * MiB)); } > "$WORK/raw/base"
  for i in $(seq -w 1 20); do
    if [ $((10#$i % 2)) = 0 ]; then
      prng "1$i" | head -c $((100 * MiB)) > "$WORK/raw/app$i"                        # like a gzip layer
    else
      prng "2$i" | head -c $((80 * MiB)) | base64 -w 76 | head -c $((100 * MiB)) > "$WORK/raw/app$i"  # compressible
    fi
  done
  set -o pipefail
  python3 - "$WORK" <<'PY'
import hashlib, json, os, sys
work = sys.argv[1]; L = os.path.join(work, "layout"); B = os.path.join(L, "blobs", "sha256")
def put(data_or_path):
    h = hashlib.sha256()
    if isinstance(data_or_path, bytes):
        h.update(data_or_path); d = h.hexdigest(); open(os.path.join(B, d), "wb").write(data_or_path); return d, len(data_or_path)
    with open(data_or_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    d = h.hexdigest(); os.replace(data_or_path, os.path.join(B, d)); return d, os.path.getsize(os.path.join(B, d))
base = put(os.path.join(work, "raw", "base"))
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
spec = ["name: bench", "version: 1.0.0", "components:", "  - name: bench", "    images:"]
for i in range(1, 21):
    app = put(os.path.join(work, "raw", f"app{i:02d}"))
    gz = i % 2 == 0
    lt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else "")
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app"]},
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + base[0], "sha256:" + app[0]]}}).encode()
    c = put(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + c[0], "size": c[1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + base[0], "size": base[1]},
                   {"mediaType": lt, "digest": "sha256:" + app[0], "size": app[1]}]}).encode()
    m = put(man)
    ref = f"registry.example/bench/app{i:02d}:1.0"
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + m[0],
                               "size": m[1], "annotations": {"org.opencontainers.image.ref.name": ref}})
    spec += [f"      - ref: {ref}", f"        from: oci:layout:{ref}"]
open(os.path.join(L, "index.json"), "w").write(json.dumps(index))
open(os.path.join(L, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
open(os.path.join(work, "bundle.yaml"), "w").write("\n".join(spec) + "\n")
PY
fi
if [ ! -d "$WORK/per-image" ]; then
  echo "== the same 20 images as 20 single-image layouts (as one skopeo copy per image writes them)"
  python3 - "$WORK" <<'PY'
import json, os, shutil, sys
work = sys.argv[1]; L = os.path.join(work, "layout"); idx = json.load(open(os.path.join(L, "index.json")))
spec = ["name: bench", "version: 1.0.0", "components:", "  - name: bench", "    images:"]
for d in idx["manifests"]:
    ref = d["annotations"]["org.opencontainers.image.ref.name"]; name = ref.split("/")[-1].split(":")[0]
    out = os.path.join(work, "per-image", name); os.makedirs(os.path.join(out, "blobs", "sha256"))
    man = json.load(open(os.path.join(L, "blobs", "sha256", d["digest"][7:])))
    for b in [d["digest"], man["config"]["digest"]] + [l["digest"] for l in man["layers"]]:
        shutil.copyfile(os.path.join(L, "blobs", "sha256", b[7:]), os.path.join(out, "blobs", "sha256", b[7:]))
    shutil.copyfile(os.path.join(L, "oci-layout"), os.path.join(out, "oci-layout"))
    json.dump({"schemaVersion": 2, "manifests": [d]}, open(os.path.join(out, "index.json"), "w"))
    spec += [f"      - ref: {ref}", f"        from: oci:per-image/{name}"]
open(os.path.join(work, "per-image.yaml"), "w").write("\n".join(spec) + "\n")
PY
fi
BASE_DIGEST=$(python3 -c "
import json; L='$L'; i=json.load(open(L+'/index.json')); m=json.load(open(L+'/blobs/sha256/'+i['manifests'][0]['digest'][7:])); print(m['layers'][0]['digest'][7:])")
BYTES=$(du -sb "$L" | cut -f1)
echo "   layout: $BYTES bytes ($((BYTES / MiB)) MiB) in $(ls "$L/blobs/sha256" | wc -l) blobs"
[ "$BYTES" -ge $((2048 * MiB)) ] || { echo "data set too small"; exit 1; }
"$BUNDLER" keygen -W -p "$WORK/k.pub" -s "$WORK/k.key" -f >/dev/null
export SOURCE_DATE_EPOCH=1795392000

# time_cmd NAME CMD... : runs RUNS times, prints the median wall time and max RSS
time_cmd() {
  local name=$1; shift
  local times=() rss=0
  for _ in $(seq 1 "$RUNS"); do
    sync
    /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" >/dev/null
    read -r t m < "$WORK/time.out"
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  local med
  med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  printf '%-34s median %6.2f s  (runs: %s)  peak RSS %4d MiB\n' "$name" "$med" "${times[*]}" $((rss / 1024)) >&2
  echo "$med $rss"
}

echo "== create"
read -r ours_c rss_c < <(time_cmd "airlock-bundler create" "$BUNDLER" create "$WORK/bundle.yaml" -o "$WORK/b.airlock" --key "$WORK/k.key")
read -r base_c _ < <(time_cmd "tar -cf - layout | zstd -T0 -3" bash -c "tar -C '$WORK' -cf - layout | zstd -q -T0 -3 > '$WORK/base.tar.zst'")
echo "== create from 20 single-image layouts (the shared base layer is in every one)"
read -r ours_p _ < <(time_cmd "airlock-bundler create (per-image)" "$BUNDLER" create "$WORK/per-image.yaml" -o "$WORK/p.airlock" --key "$WORK/k.key")
read -r base_p _ < <(time_cmd "tar -cf - per-image | zstd -T0 -3" bash -c "tar -C '$WORK' -cf - per-image | zstd -q -T0 -3 > '$WORK/base-p.tar.zst'")
echo "== verify"
read -r ours_v rss_v < <(time_cmd "airlock verify" "$AIRLOCK" verify "$WORK/b.airlock" --pubkey "$WORK/k.pub")
read -r base_v _ < <(time_cmd "zstd -dc BUNDLE > /dev/null" bash -c "zstd -q -dc '$WORK/b.airlock' > /dev/null")
read -r ours_vp _ < <(time_cmd "airlock verify --check-parts" "$AIRLOCK" verify "$WORK/b.airlock" --pubkey "$WORK/k.pub" --check-parts)
# The floor for "hashing almost free": stock tools decoding and hashing the same stream.
read -r stock_v _ < <(time_cmd "zstd -dc BUNDLE | openssl sha256" bash -c "zstd -q -dc '$WORK/b.airlock' | openssl dgst -sha256 > /dev/null")
# How much the two cores slow each other: zstd -dc while the other core runs SHA-256
# on data in its own cache (`openssl speed`: no memory traffic, no I/O). Verify hashes
# on the second core, so when this is well above `zstd -dc` alone, the machine itself
# keeps verify from the goal. On a quiet machine the two are about equal.
read -r busy_v _ < <(time_cmd "zstd -dc BUNDLE, other core hashing" bash -c "
  openssl speed -evp sha256 -bytes 16384 -seconds 600 > /dev/null 2>&1 & h=\$!
  zstd -q -dc '$WORK/b.airlock' > /dev/null; kill \$h; wait \$h 2>/dev/null || true")

summary=$("$AIRLOCK" inspect "$WORK/b.airlock" --output json | python3 -c "
import json,sys
r=json.load(sys.stdin); print(r['entries'], r['total_size'], r['compressed_size'])")
read -r entries total compressed <<<"$summary"
stored=$(zstd -dc "$WORK/p.airlock" | tar -tf - | grep -c "$BASE_DIGEST" || true)
inputs=$(find "$WORK/per-image" -name "$BASE_DIGEST" | wc -l)

echo
echo "== results (ratio = baseline / ours; > 1 means faster than the baseline)"
awk -v o="$ours_c" -v b="$base_c" 'BEGIN{printf "create from one shared layout    ours %.2f s  baseline %.2f s  ratio %.2f  (goal >= 1.0)\n", o, b, b/o}'
awk -v o="$ours_p" -v b="$base_p" 'BEGIN{printf "create from 20 per-image layouts  ours %.2f s  baseline %.2f s  ratio %.2f  (goal >= 1.0)\n", o, b, b/o}'
awk -v o="$ours_v" -v b="$base_v" 'BEGIN{printf "verify  ours %.2f s  baseline %.2f s  ratio %.2f  (goal >= 0.9)\n", o, b, b/o}'
awk -v o="$ours_vp" -v b="$base_v" 'BEGIN{printf "verify --check-parts  ours %.2f s  ratio %.2f\n", o, b/o}'
awk -v o="$stock_v" -v b="$base_v" 'BEGIN{printf "verify with stock tools (zstd -dc | openssl sha256)  %.2f s  ratio %.2f\n", o, b/o}'
awk -v o="$busy_v" -v b="$base_v" 'BEGIN{printf "zstd -dc alone %.2f s, %.2f s while the other core hashes in cache (ratio %.2f; 1.0 = the cores do not slow each other)\n", b, o, b/o}'
echo "peak RSS  create $((rss_c / 1024)) MiB  verify $((rss_v / 1024)) MiB  (goal < 150 MiB)"
echo "bundle: $entries entries, $total bytes uncompressed, $compressed bytes compressed; baseline archive $(stat -c %s "$WORK/base.tar.zst") bytes"
echo "shared base layer: in $inputs input layouts, stored $stored time(s) in the bundle; per-image bundle $(stat -c %s "$WORK/p.airlock") bytes vs baseline $(stat -c %s "$WORK/base-p.tar.zst") bytes"
