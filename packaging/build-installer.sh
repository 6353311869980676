#!/usr/bin/env bash
# Builds the `airlock` installer binary that goes into bundles, linked against glibc
# 2.28 symbols at most, so it runs on RHEL 8 / Ubuntu 20.04 and newer.
#
# How: cargo-zigbuild with zig as the C compiler and linker, targeting
# x86_64-unknown-linux-gnu.2.28 (zig ships the glibc 2.28 stubs to link against).
# Both come from PyPI (ziglang, cargo-zigbuild) into a private virtualenv; nothing is
# downloaded from anywhere else. The build uses its own target dir so it does not
# disturb the normal one.
#
# Usage: bash packaging/build-installer.sh [OUT_DIR]   (default: target/packaging)
# Prints the path of the binary and its highest required GLIBC symbol version.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/target/packaging}
GLIBC=2.28
TARGET=x86_64-unknown-linux-gnu
VENV=${AIRLOCK_PACKAGING_VENV:-$REPO/target/packaging-venv}
ZIGLANG_SPEC=${ZIGLANG_SPEC:-ziglang==0.17.1}
ZIGBUILD_SPEC=${ZIGBUILD_SPEC:-cargo-zigbuild==0.24.0}

[ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
if [ ! -x "$VENV/bin/cargo-zigbuild" ]; then
  "$VENV/bin/pip" install -q "$ZIGLANG_SPEC" "$ZIGBUILD_SPEC"
fi
export PATH="$VENV/bin:$PATH"
# cargo-zigbuild finds zig through the ziglang module of this Python.
export CARGO_ZIGBUILD_ZIG_PATH="$VENV/bin/python3 -m ziglang"

mkdir -p "$OUT"
(cd "$REPO" && CARGO_TARGET_DIR="$REPO/target/zig" cargo zigbuild --release --locked -q \
  -p airlock-installer --bin airlock --target "$TARGET.$GLIBC")
BIN="$REPO/target/zig/$TARGET/release/airlock"
cp "$BIN" "$OUT/airlock"
max=$(objdump -T "$OUT/airlock" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
echo "$OUT/airlock"
echo "highest GLIBC symbol version: ${max:-none}"
