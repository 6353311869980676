#!/usr/bin/env bash
# The main job on the embedded example, as the README gives it:
#   build the binaries -> create the signed demo bundle -> verify it (ours and stock
#   minisign + sha256sum) -> install it, unattended, into a target root
#   (OUT/root: K3s laid out with the demo's answers; nothing is started).
# Usage: bash examples/demo/run.sh [OUT_DIR]     (default: ./demo-out)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$(realpath -m "${1:-demo-out}")
DEMO=$REPO/examples/demo
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1795305600}

command -v cargo >/dev/null || { echo "cargo is missing: install Rust first (https://rustup.rs)"; exit 1; }
for tool in zstd minisign; do
  command -v "$tool" >/dev/null || { echo "installing $tool"; apt-get install -y -q "$tool" >/dev/null; }
done

echo "== build"
(cd "$REPO" && cargo build --release -q -p airlock-bundler -p airlock-installer)
BIN=$REPO/target/release
mkdir -p "$OUT"
rm -rf "$OUT/root" && mkdir -p "$OUT/root"

echo "== create the bundle (demo key: never use it for real bundles)"
"$BIN/airlock-bundler" create "$DEMO/bundle.yaml" -o "$OUT/airlock-demo-1.0.0.airlock" \
  --key "$DEMO/keys/demo.key" --installer "$BIN/airlock"

echo "== check it with stock tools only"
(cd "$OUT" && minisign -Vm airlock-demo-1.0.0.airlock.sha256 -p "$DEMO/keys/demo.pub" && sha256sum -c airlock-demo-1.0.0.airlock.sha256)

echo "== verify it with airlock"
"$BIN/airlock" verify "$OUT/airlock-demo-1.0.0.airlock" --pubkey "$DEMO/keys/demo.pub"

echo "== plan, then install it into the target root $OUT/root"
# An answers file with passwords is kept 0600, as airlock asks (a checkout's copy is 0644).
install -m 600 "$DEMO/answers.yaml" "$OUT/answers.yaml"
"$BIN/airlock" install "$OUT/airlock-demo-1.0.0.airlock" --pubkey "$DEMO/keys/demo.pub" \
  --answers "$OUT/answers.yaml" --root "$OUT/root" --dry-run | tail -1
"$BIN/airlock" install "$OUT/airlock-demo-1.0.0.airlock" --pubkey "$DEMO/keys/demo.pub" \
  --answers "$OUT/answers.yaml" --root "$OUT/root" --yes
echo
echo "done: bundle in $OUT; K3s installed into $OUT/root (units enabled, nothing started):"
(cd "$OUT/root" && find etc usr var/lib/rancher -type f | sort | sed 's/^/  \//')
