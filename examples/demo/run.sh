#!/usr/bin/env bash
# The main job on the embedded example, as the README gives it:
#   build the binaries -> create the signed demo bundle -> verify it (ours and stock
#   minisign + sha256sum) -> extract it, verified, into a target directory together
#   with the image archive K3s imports.
# Usage: bash examples/demo/run.sh [TARGET_DIR]     (default: ./demo-out)
# `airlock install --root TARGET` (installer issue) will replace the extract step.
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
rm -rf "$OUT/staging" "$OUT/images"

echo "== create the bundle (demo key: never use it for real bundles)"
"$BIN/airlock-bundler" create "$DEMO/bundle.yaml" -o "$OUT/airlock-demo-1.0.0.airlock" \
  --key "$DEMO/keys/demo.key" --installer "$BIN/airlock"

echo "== check it with stock tools only"
(cd "$OUT" && minisign -Vm airlock-demo-1.0.0.airlock.sha256 -p "$DEMO/keys/demo.pub" && sha256sum -c airlock-demo-1.0.0.airlock.sha256)

echo "== verify it with airlock"
"$BIN/airlock" verify "$OUT/airlock-demo-1.0.0.airlock" --pubkey "$DEMO/keys/demo.pub"

echo "== extract it, verified while streaming, into $OUT/staging"
mkdir -p "$OUT/images"
"$BIN/airlock" extract "$OUT/airlock-demo-1.0.0.airlock" --pubkey "$DEMO/keys/demo.pub" \
  -d "$OUT/staging" --image-archive "$OUT/images/airlock-demo.tar"
echo
echo "done: bundle in $OUT, verified content in $OUT/staging, image archive in $OUT/images"
