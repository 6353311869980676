#!/usr/bin/env bash
# Backup benchmark: `airlock backup create` against the plain pipeline an operator would
# write by hand, `tar | zstd -T0 -3 | age`, on the same site data; and the way back,
# `airlock backup verify` (decrypt, decompress, hash every part) against
# `age -d | zstd -d | tar -x`. Prints wall seconds, peak RSS and archive size of each.
#
# The site: the demo installed into a target root, with a SQLite datastore of SIZE_MIB
# (default 2048) in <data>/server/db: half random bytes (incompressible, like dumps),
# half repetitive text (compressible, like a datastore). Under a target root airlock
# copies that datastore as it is (nothing runs), so it is what the backup streams.
#
# Usage: tests/bench/backup.sh   (env: SIZE_MIB, BIN=dir with airlock and
#        airlock-bundler, default $CARGO_TARGET_DIR/release, else .../debug, whose
#        dependencies, where the hashing, compression and encryption run, are optimised
#        too; BENCH_DIR, default a fresh /tmp/airlock-backup-bench.*; needs age, zstd,
#        GNU time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZE_MIB=${SIZE_MIB:-2048}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$([ -x "$TARGET/release/airlock" ] && echo "$TARGET/release" || echo "$TARGET/debug")}
W=${BENCH_DIR:-$(mktemp -d /tmp/airlock-backup-bench.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
for t in age age-keygen zstd /usr/bin/time; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done
DEMO=$ROOT/examples/demo
echo "binaries: $BIN"

echo "== site: the demo installed into a root, a ${SIZE_MIB} MiB SQLite datastore"
SOURCE_DATE_EPOCH=1795305600 "$BIN/airlock-bundler" create "$DEMO/bundle.yaml" -o "$W/demo.airlock" \
  --key "$DEMO/keys/demo.key" >"$W/log" 2>&1 || { cat "$W/log"; exit 1; }
age-keygen -o "$W/recovery.key" 2>/dev/null
PUB=$(age-keygen -y "$W/recovery.key")
{ cat "$DEMO/answers.yaml"; printf 'backup:\n  recipients:\n    - %s\n' "$PUB"; } > "$W/answers.yaml"
chmod 600 "$W/answers.yaml"
mkdir -p "$W/root"
"$BIN/airlock" install "$W/demo.airlock" --pubkey "$DEMO/keys/demo.pub" --answers "$W/answers.yaml" \
  --root "$W/root" --yes >"$W/log" 2>&1 </dev/null || { cat "$W/log"; exit 1; }
DB=$W/root/var/lib/rancher/k3s/server/db
mkdir -p "$DB"
half=$((SIZE_MIB / 2))
head -c $((half * 1024 * 1024)) /dev/urandom > "$DB/state.db"
# (`yes` ends by SIGPIPE when head has enough: not a failure.)
set +o pipefail
yes 'key=/registry/pods/default/app-0 value={"kind":"Pod","status":"Running"}' | head -c $((half * 1024 * 1024)) >> "$DB/state.db"
set -o pipefail
sync

# measure NAME CMD...: wall seconds and peak RSS (MiB) of CMD run through sh -c.
measure() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$W/time" sh -c "$*"
  read -r secs kib < "$W/time"
  printf '%-34s %8.1f s  %7d MiB peak RSS\n' "$name" "$secs" $((kib / 1024))
}

echo "== backup (${SIZE_MIB} MiB of site data)"
mkdir -p "$W/out"
measure "airlock backup create" "'$BIN/airlock' --quiet backup create --root '$W/root' -o '$W/out/site.airlock-backup'"
measure "tar | zstd -T0 -3 | age" \
  "tar -C '$W/root' -cf - etc/airlock/pki var/lib/airlock/secrets var/lib/airlock/answers.yaml var/lib/airlock/release.json var/lib/rancher/k3s/server/db | zstd -q -T0 -3 | age -r '$PUB' > '$W/out/plain.tar.zst.age'"
printf '%-34s %8d MiB\n' "archive: airlock" $(( $(stat -c %s "$W/out/site.airlock-backup") / 1024 / 1024 ))
printf '%-34s %8d MiB\n' "archive: tar | zstd | age" $(( $(stat -c %s "$W/out/plain.tar.zst.age") / 1024 / 1024 ))

echo "== the way back"
measure "airlock backup verify" "'$BIN/airlock' --quiet backup verify '$W/out/site.airlock-backup' --identity '$W/recovery.key'"
mkdir -p "$W/x"
measure "age -d | zstd -d | tar -x" "age -d -i '$W/recovery.key' '$W/out/plain.tar.zst.age' | zstd -q -d | tar -x -C '$W/x'"
rm -rf "$W/x"; mkdir -p "$W/x"
measure "age -d | zstd -d | tar -x (airlock's)" "age -d -i '$W/recovery.key' '$W/out/site.airlock-backup' | zstd -q -d | tar -x -C '$W/x'"
cmp "$W/x/datastore/sqlite/state.db" "$DB/state.db" && echo "the datastore comes back byte for byte from airlock's archive"
