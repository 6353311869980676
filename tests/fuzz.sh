#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer for a bounded time:
#
#     bash tests/fuzz.sh [SECONDS_PER_TARGET]        (default 30)
#     FUZZ_TARGETS="bundle redact" bash tests/fuzz.sh 60
#
# The targets are in fuzz/fuzz_targets/ (cargo-fuzz), one line each; the properties
# they check are in fuzz/checks/src/ (crate airlock-fuzz-checks). Each target starts
# from its seed corpus fuzz/corpus/<target>/ plus fuzz/regressions/<target>/ and writes
# what it finds to a scratch corpus, so the repository's corpus only changes when
# someone copies inputs in (FUZZ_KEEP=DIR keeps the scratch corpora and logs in DIR).
# A crash, a panic (a property that failed), a timeout (-timeout, 10 s per input: a
# hang) or running out of memory (-rss_limit_mb) fails the run; the input is saved
# under the artifact directory printed at the end. Copy it into fuzz/regressions/<target>/
# once fixed: the workspace's smoke test replays that directory on every run.
#
# cargo-fuzz is installed from crates.io into $AIRLOCK_TOOLS_DIR/cargo-fuzz (default
# target/tools, where tests/run.sh caches its tools) when missing. It needs nightly
# flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the one stable toolchain take
# them. libFuzzer itself is compiled from libfuzzer-sys with the system C++ compiler.
#
# Why CI does not run this: a clean CI clone would install cargo-fuzz (~35 s) and then
# build every dependency again with address sanitizer and coverage instrumentation
# (several minutes on two cores) before fuzzing a second; that alone breaks the
# 2-minute budget for fuzzing in CI. CI instead runs the same properties without
# coverage guidance: `cargo test -p airlock-fuzz-checks --test smoke` (a step of
# tests/run.sh) replays every seed and regression input and 300 deterministic
# mutations per target in a few seconds, reusing the test build. This script is the
# coverage-guided run, by hand or on a schedule.
set -euo pipefail

SECS=${1:-30}
case "$SECS" in '' | *[!0-9]*) echo "usage: tests/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
AIRLOCK_TOOLS_DIR="${AIRLOCK_TOOLS_DIR:-$REPO/target/tools}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/cargo-fuzz"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# ------------------------------------------------------------------ cargo-fuzz
FUZZ_BIN="$AIRLOCK_TOOLS_DIR/cargo-fuzz/bin"
if ! PATH="$FUZZ_BIN:$PATH" cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION into $AIRLOCK_TOOLS_DIR/cargo-fuzz"
  t0=$SECONDS
  # Its own target dir, so the install does not share (and lock) the workspace's.
  CARGO_TARGET_DIR="$AIRLOCK_TOOLS_DIR/cargo-fuzz/build" \
    cargo install --locked --quiet --version "$CARGO_FUZZ_VERSION" --root "$AIRLOCK_TOOLS_DIR/cargo-fuzz" cargo-fuzz
  rm -rf "$AIRLOCK_TOOLS_DIR/cargo-fuzz/build"
  echo "    installed in $((SECONDS - t0)) s"
fi
export PATH="$FUZZ_BIN:$PATH"

# ------------------------------------------------------------------ build
mapfile -t ALL < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^airlock-fuzz$')
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL[*]}}"
echo "==> building ${#TARGETS[@]} fuzz targets (release, address sanitizer) in $TARGET_DIR"
t0=$SECONDS
(cd fuzz && cargo fuzz build -O --target-dir "$TARGET_DIR" >/dev/null)
echo "    built in $((SECONDS - t0)) s"

# ------------------------------------------------------------------ run
WORK=${FUZZ_KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/airlock-fuzz.XXXXXX")}
mkdir -p "$WORK"
[ -n "${FUZZ_KEEP:-}" ] || trap 'rm -rf "$WORK/corpus"' EXIT
status=0
SUMMARY=()
for t in "${TARGETS[@]}"; do
  corpus="$WORK/corpus/$t"
  art="$WORK/artifacts/$t"
  log="$WORK/$t.log"
  mkdir -p "$corpus" "$art" "fuzz/regressions/$t"
  echo "==> $t: ${SECS}s"
  rc=0
  # One job, one worker: the machine is shared. Seeds are read from the repository's
  # corpus and regressions; new inputs go to the scratch corpus (the first directory).
  (cd fuzz && cargo fuzz run -O --target-dir "$TARGET_DIR" "$t" "$corpus" "../fuzz/corpus/$t" "../fuzz/regressions/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$art/" >"$log" 2>&1) || rc=$?
  # The last status line: "#N DONE cov: C ft: F corp: K/S ..." (or the last pulse).
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc): $(find "$art" -type f | head -1)"
    status=1
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 | sed 's/^/    /'
  fi
  SUMMARY+=("$(printf '%-15s execs %-9s cov %-6s ft %-7s corpus %-12s %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

printf '\n==================== fuzz summary (%ss per target) ====================\n' "$SECS"
printf '%s\n' "${SUMMARY[@]}"
printf 'logs and artifacts: %s\n' "$WORK"
exit $status
