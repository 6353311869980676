#!/usr/bin/env bash
# Benchmark for `airlock install --root` (installer issue): install of a >= 2 GiB bundle
# into a temp root, verification included, vs `zstd -dc BUNDLE | tar -x` of the same
# bundle (goal: ratio >= 0.9), and peak RSS (goal < 150 MiB). Medians of RUNS (3).
# Uses the 20-image data set of tests/bench/bundle.sh (kept in BENCH_DIR, made if
# missing) plus the demo's stand-in K3s artifacts and single-node profile.
# Ratio = baseline time / our time (> 1 means we are faster).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-3}
export BENCH_DIR=${BENCH_DIR:-/tmp/airlock-bench}
W=$BENCH_DIR
if [ ! -f "$W/bundle.yaml" ]; then
  bash "$ROOT/tests/bench/bundle.sh" --keep
fi
(cd "$ROOT" && cargo build --release -q -p airlock-bundler -p airlock-installer)
BUNDLER=$ROOT/target/release/airlock-bundler
AIRLOCK=$ROOT/target/release/airlock
DEMO=$ROOT/examples/demo

# The bench images as one component, with the demo's distribution and profile.
python3 - "$W" "$DEMO" "$ROOT" <<'PY'
import sys
w, demo, root = sys.argv[1:]
images = open(f"{w}/bundle.yaml").read().split("    images:\n", 1)[1]
spec = f"""name: bench-install
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
  - {root}/profiles/single-node.yaml
"""
open(f"{w}/install-bundle.yaml", "w").write(spec)
PY
SOURCE_DATE_EPOCH=1795305600 "$BUNDLER" create "$W/install-bundle.yaml" -o "$W/i.airlock" --key "$W/k.key" >/dev/null
echo "bundle: $(stat -c %s "$W/i.airlock") bytes compressed"

time_cmd() {
  local name=$1; shift
  local times=() rss=0
  for _ in $(seq 1 "$RUNS"); do
    rm -rf "$W/target-root" "$W/untar"; mkdir -p "$W/target-root" "$W/untar"; sync
    /usr/bin/time -f "%e %M" -o "$W/time.out" "$@" >/dev/null
    read -r t m < "$W/time.out"
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  local med
  med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  printf '%-40s median %6.2f s  (runs: %s)  peak RSS %4d MiB\n' "$name" "$med" "${times[*]}" $((rss / 1024)) >&2
  echo "$med $rss"
}
read -r ours rss < <(time_cmd "airlock install --root (verify+stage+apply)" "$AIRLOCK" install "$W/i.airlock" \
  --pubkey "$W/k.pub" --answers "$DEMO/answers.yaml" --root "$W/target-root" --yes)
read -r base _ < <(time_cmd "zstd -dc BUNDLE | tar -x" bash -c "zstd -q -dc '$W/i.airlock' | tar -C '$W/untar' -xf -")
rm -rf "$W/target-root" "$W/untar"
awk -v o="$ours" -v b="$base" 'BEGIN{printf "install  ours %.2f s  baseline %.2f s  ratio %.2f  (goal >= 0.9)\n", o, b, b/o}'
echo "peak RSS install $((rss / 1024)) MiB (goal < 150 MiB)"
