#!/usr/bin/env bash
# Backup benchmark: `airlock backup create` against the plain pipeline an operator would
# write by hand, `tar | zstd -T0 -3 | age`, on the same site data; and the way back,
# `airlock backup verify` (decrypt, decompress, hash every part) against
# `age -d | zstd -d | tar -x`.
#
# The site: the demo installed into a target root, with a SQLite datastore of SIZE_MIB
# (default 2048) in <data>/server/db: half random bytes (incompressible, like dumps),
# half repetitive text (compressible, like a datastore). Under a target root airlock
# copies that datastore as it is (nothing runs), so it is what the backup streams.
#
# RUNS pairs (default 5) of each step: ours and the baseline run one after the other,
# page cache warm, and the figure is the MEDIAN OF THE PER-PAIR RATIOS (baseline time /
# ours; > 1 means faster than the baseline). On a shared or virtual machine the speed
# drifts by tens of percent within minutes; a pair sees the same drift on both sides.
# Goals: create >= 1.0, the way back >= 1.0, peak RSS of ours < 150 MiB.
#
# Usage: tests/bench/backup.sh   (env: SIZE_MIB, RUNS, BIN=dir with airlock and
#        airlock-bundler, default $CARGO_TARGET_DIR/release, else .../debug, whose
#        dependencies, where the hashing, compression and encryption run, are optimised
#        too; BENCH_DIR, default a fresh /tmp/airlock-backup-bench.*; needs age, zstd,
#        python3, GNU time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZE_MIB=${SIZE_MIB:-2048}
RUNS=${RUNS:-5}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$([ -x "$TARGET/release/airlock" ] && echo "$TARGET/release" || echo "$TARGET/debug")}
W=${BENCH_DIR:-$(mktemp -d /tmp/airlock-backup-bench.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
for t in age age-keygen zstd python3 /usr/bin/time; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done
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

# run OUT CMD: runs CMD (a bash command line) once; appends "seconds rss_kib" to OUT.
run() {
  local t0 t1
  sync
  t0=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o "$W/rss.out" bash -c "$2" >/dev/null 2>"$W/stderr.out" || { cat "$W/stderr.out" >&2; return 1; }
  t1=$EPOCHREALTIME
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}') $(tail -n 1 "$W/rss.out")" >> "$1"
}

# pair NAME PREP OURS BASELINE: RUNS pairs, ours then the baseline, PREP before each run.
# Prints a line and leaves "ratio ours_median base_median rss_kib pairs" in $PAIR.
pair() {
  local name=$1 prep=$2 ours=$3 base=$4
  : > "$W/ours.t"; : > "$W/base.t"
  for _ in $(seq 1 "$RUNS"); do
    bash -c "$prep"; run "$W/ours.t" "$ours"
    bash -c "$prep"; run "$W/base.t" "$base"
  done
  PAIR=$(paste -d ' ' "$W/ours.t" "$W/base.t" | python3 -c "
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin]
print(statistics.median(b / o for o, _, b, _ in rows), statistics.median(r[0] for r in rows),
      statistics.median(r[2] for r in rows), int(max(r[1] for r in rows)),
      ' '.join('%.2f/%.2f' % (r[0], r[2]) for r in rows))")
  read -r ratio om bm rss runs <<<"$PAIR"
  printf '  %-8s ratio %5.2f  (median ours %6.2f s, baseline %6.2f s; pairs ours/baseline: %s)  peak RSS ours %d MiB\n' \
    "$name" "$ratio" "$om" "$bm" "$runs" $((rss / 1024))
}

PARTS="etc/airlock/pki var/lib/airlock/secrets var/lib/airlock/answers.yaml var/lib/airlock/release.json var/lib/rancher/k3s/server/db"
mkdir -p "$W/out"
echo "== load before measuring: $(cut -d ' ' -f 1-3 /proc/loadavg); $RUNS pairs per step"
pair create true \
  "'$BIN/airlock' --quiet backup create --root '$W/root' -o '$W/out/site.airlock-backup'" \
  "tar -C '$W/root' -cf - $PARTS | zstd -q -T0 -3 | age -r '$PUB' > '$W/out/plain.tar.zst.age'"
CREATE=$PAIR
pair back "rm -rf '$W/x'; mkdir -p '$W/x'" \
  "'$BIN/airlock' --quiet backup verify '$W/out/site.airlock-backup' --identity '$W/recovery.key'" \
  "age -d -i '$W/recovery.key' '$W/out/plain.tar.zst.age' | zstd -q -d | tar -x -C '$W/x'"
BACK=$PAIR
echo "== load after measuring: $(cut -d ' ' -f 1-3 /proc/loadavg)"
rm -rf "$W/x"; mkdir -p "$W/x"
age -d -i "$W/recovery.key" "$W/out/site.airlock-backup" | zstd -q -d | tar -x -C "$W/x"
cmp "$W/x/datastore/sqlite/state.db" "$DB/state.db" && echo "the datastore comes back byte for byte from airlock's archive through age -d | zstd -d | tar -x"

echo
echo "== results: median of per-pair ratios (baseline time / ours; > 1 means faster than the baseline)"
printf '%-8s %6s %6s %9s\n' step ratio goal "RSS MiB"
for r in "create:$CREATE" "back:$BACK"; do
  read -r ratio _ _ rss _ <<<"${r#*:}"
  printf '%-8s %6.2f %6s %9d\n' "${r%%:*}" "$ratio" 1.0 $((rss / 1024))
done
printf 'archive: airlock %d MiB, tar | zstd | age %d MiB\n' $(( $(stat -c %s "$W/out/site.airlock-backup") / 1048576 )) \
  $(( $(stat -c %s "$W/out/plain.tar.zst.age") / 1048576 ))
