#!/usr/bin/env bash
# Benchmark for the cluster install from the first server (docs/cluster.md): fan-out of a
# bundle of >= 1 GiB to 3 nodes, each a real sshd in a network namespace of its own
# (veth + bridge, as tests/tests/cluster_ssh.rs), installing into its own target root.
#   by hand: `scp` of the bundle, its sidecars and the installer to each node, one after
#            another, then `airlock verify` on each node (over ssh), one after another
#   ours:    `airlock install BUNDLE --answers site.yaml` with `nodes:`, from its start
#            until every node is prepared (the cluster table after the preflights:
#            bundle verified and staged here, sent to the 3 nodes in parallel, verified
#            on each, node preflights); the install and the joins that follow are not
#            counted, the by-hand side has nothing like them
# Prints both wall times, the ratio by-hand/ours (goal >= 1.0), peak RSS of the whole
# `airlock install` run on the first server (goal < 150 MiB; ssh children included) and
# the bytes sent per node against the bundle's size (goal <= 1.01), then a second run
# of ours (everything is on the nodes already: nothing may be sent again).
# Usage (as root): tests/bench/cluster.sh   (BIG_MIB, default 1024: the size of the
#        random file that makes the bundle big; BIN_DIR=DIR takes the binaries from DIR;
#        BENCH_WORK_PREFIX, default /tmp/cluster-bench: where its data goes, about 5x the bundle)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIG_MIB=${BIG_MIB:-1024}
WORK=$(mktemp -d "${BENCH_WORK_PREFIX:-/tmp/cluster-bench}.XXXXXX")
TAG=$$
NET=10.231.78
BR=acb$TAG
NODES="s2:12:server s3:13:server w1:21:agent"
SSHD_PIDS=()
cleanup() {
  for p in "${SSHD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in $NODES; do ip netns del "acb$TAG${n%%:*}" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$WORK" "$ROOT/examples/demo/.bench-cluster-$TAG.yaml"
}
trap cleanup EXIT
command -v /usr/bin/time >/dev/null || apt-get install -y -q time >/dev/null
[ -x /usr/sbin/sshd ] || { echo "needs openssh-server (tests/run.sh installs it)"; exit 1; }

if [ -z "${BIN_DIR:-}" ]; then
  echo "== build (dev profile; dependencies are optimised in it, see Cargo.toml)"
  (cd "$ROOT" && cargo build -q -p airlock-bundler -p airlock-installer)
  BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi
AIRLOCK=$BIN_DIR/airlock
PUB=$ROOT/examples/demo/keys/demo.pub

echo "== lab: bridge $NET.1/24, 3 namespaces with sshd"
ip link add "$BR" type bridge; ip addr add "$NET.1/24" dev "$BR"; ip link set "$BR" up
mkdir -p /run/sshd "$WORK/bin"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
: > "$WORK/known_hosts"
for n in $NODES; do
  IFS=: read -r name octet role <<<"$n"
  ns=acb$TAG$name; d=$WORK/$name; mkdir -p "$d/root"
  ip netns add "$ns"
  ip link add "acv$TAG$name" type veth peer name eth0 netns "$ns"
  ip link set "acv$TAG$name" master "$BR" up
  ip -n "$ns" addr add "$NET.$octet/24" dev eth0; ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  printf 'ListenAddress %s\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp /usr/lib/openssh/sftp-server\nSetEnv AIRLOCK_TARGET_ROOT=%s\n' \
    "$NET.$octet" "$d/host_key" "$d/sshd.pid" "$WORK/id.pub" "$d/root" > "$d/sshd_config"
  ip netns exec "$ns" /usr/sbin/sshd -D -e -f "$d/sshd_config" 2>"$d/sshd.log" &
  SSHD_PIDS+=($!)
  echo "$NET.$octet $(cut -d' ' -f1,2 "$d/host_key.pub")" >> "$WORK/known_hosts"
done
printf 'Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n' \
  "$WORK/id" "$WORK/known_hosts" > "$WORK/ssh_config"
sleep 1

echo "== bundle: the demo (without Keycloak) + ${BIG_MIB} MiB of random bytes + this installer"
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom > "$WORK/big.bin"
SPEC=$ROOT/examples/demo/.bench-cluster-$TAG.yaml
grep -v 'charts/keycloakx' "$ROOT/examples/demo/bundle.yaml" \
  | sed "s|      - path: files/README.txt|      - path: $WORK/big.bin\n        name: big.bin\n        mode: \"0644\"\n      - path: files/README.txt|" > "$SPEC"
mkdir -p "$WORK/b"
SOURCE_DATE_EPOCH=1795305600 "$BIN_DIR/airlock-bundler" create "$SPEC" -o "$WORK/b/demo.airlock" \
  --key "$ROOT/examples/demo/keys/demo.key" --installer "$AIRLOCK" >/dev/null
rm -f "$WORK/big.bin"
BUNDLE_BYTES=$(cat "$WORK"/b/demo.airlock* | wc -c)
echo "   bundle files: $(cd "$WORK/b" && printf '%s ' *)($BUNDLE_BYTES bytes in all)"

reset_nodes() { for n in $NODES; do rm -rf "$WORK/${n%%:*}/root"; mkdir -p "$WORK/${n%%:*}/root"; done; }
now() { date +%s.%N; }

echo "== by hand: scp to each node, then airlock verify on each"
reset_nodes
t0=$(now)
for n in $NODES; do
  IFS=: read -r name octet _ <<<"$n"
  ssh -F "$WORK/ssh_config" "$NET.$octet" 'mkdir -p "$AIRLOCK_TARGET_ROOT/in"'
  scp -q -F "$WORK/ssh_config" "$WORK"/b/demo.airlock* "$AIRLOCK" "$PUB" "root@$NET.$octet:$WORK/$name/root/in/"
done
for n in $NODES; do
  IFS=: read -r name octet _ <<<"$n"
  ssh -F "$WORK/ssh_config" "$NET.$octet" "cd \"\$AIRLOCK_TARGET_ROOT/in\" && ./airlock verify demo.airlock --pubkey demo.pub >/dev/null"
done
t_hand=$(echo "$(now) - $t0" | bc)

answers() {
  printf 'profile: ha\nnode: {name: s1, ip: %s.1}\ncluster:\n  ingress_domain: platform.example.test\nnodes:\n  - {name: s1, address: %s.1, role: server}\n' "$NET" "$NET"
  for n in $NODES; do IFS=: read -r name octet role <<<"$n"; printf '  - {name: %s, address: %s.%s, role: %s}\n' "$name" "$NET" "$octet" "$role"; done
}
answers > "$WORK/site.yaml"

# ours RUN: the install under GNU time, stopped once the prepared nodes' table is out
# (the install and the joins after it are not measured, and would need 3 GiB more disk
# per node); the time at which the table appears comes from a timestamped stdout.
ours() {
  local out=$WORK/ours-$1
  mkdir -p "$WORK/s1-$1"
  t0=$(now)
  /usr/bin/time -v -o "$out.time" "$AIRLOCK" install "$WORK/b/demo.airlock" --pubkey "$PUB" --answers "$WORK/site.yaml" \
      --root "$WORK/s1-$1" --ssh-config "$WORK/ssh_config" --yes --no-progress >"$out.out" 2>"$out.err" &
  local time_pid=$! t_prep=""
  while kill -0 "$time_pid" 2>/dev/null; do
    if grep -qE '^cluster [0-9.]+ \(4 nodes\):$' "$out.out" 2>/dev/null; then
      t_prep=$(now)
      sleep 0.2
      local child; child=$(pgrep -P "$time_pid" || true)
      if [ -n "$child" ]; then kill "$child" 2>/dev/null || true; fi
      break
    fi
    sleep 0.05
  done
  wait "$time_pid" 2>/dev/null || true
  [ -n "$t_prep" ] || { echo "no prepared-nodes table; stderr:" >&2; cat "$out.err" >&2; exit 1; }
  echo "$t_prep - $t0" | bc
}

echo "== ours: airlock install with nodes: (first run)"
reset_nodes
t_ours=$(ours 1)
grep -E '^  (s2|s3|w1) ' "$WORK/ours-1.out" | head -3
rss_kib=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$WORK/ours-1.time")
sent_max=$(grep -oE '[0-9]+ bytes sent' "$WORK/ours-1.out" | awk '{print $1}' | sort -n | tail -1)

echo "== ours again on fresh roots, the nodes' incoming files kept (all there: nothing is sent; the verify there hashes them)"
for n in $NODES; do
  r=$WORK/${n%%:*}/root; mv "$r/var/lib/airlock/incoming" "$WORK/${n%%:*}/incoming"
  rm -rf "$r"; mkdir -p "$r/var/lib/airlock"; mv "$WORK/${n%%:*}/incoming" "$r/var/lib/airlock/incoming"
  # The first run was stopped mid-way, so its claim on the node stays; the second runs
  # from another root (another first server), which that claim refuses: drop it, as
  # the operator does for a first server that is gone (docs/cluster.md).
  rm -rf "$r/var/lib/airlock/incoming/.held-by"
done
t_again=$(ours 2)
grep -E '^  (s2|s3|w1) ' "$WORK/ours-2.out" | head -3
again_sent=$(grep -c 'bytes sent' "$WORK/ours-2.out" || true)

echo
printf 'by hand (scp x3 one after another, then verify x3): %.1f s\n' "$t_hand"
printf 'ours (stage here, send x3 in parallel, verify there, preflight): %.1f s\n' "$t_ours"
printf 'ratio by-hand/ours: %.2f (goal >= 1.0)\n' "$(echo "$t_hand / $t_ours" | bc -l)"
printf 'peak RSS of airlock install on the first server: %.1f MiB (goal < 150)\n' "$(echo "$rss_kib / 1024" | bc -l)"
printf 'bytes sent per node (max): %s of %s bundle bytes: %.4f (goal <= 1.01; includes the installer and key)\n' \
  "$sent_max" "$BUNDLE_BYTES" "$(echo "$sent_max / $BUNDLE_BYTES" | bc -l)"
printf 'second run: %.1f s until prepared, nodes that were sent anything: %s (goal 0)\n' "$t_again" "$again_sent"
