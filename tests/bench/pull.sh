#!/usr/bin/env bash
# Benchmark for registry pulls (issue 3): 10 images totalling >= 1 GiB in a local
# docker-registry on 127.0.0.1, then one run each (the machine is shared; set RUNS for
# more) of
#   skopeo:  `skopeo copy docker://… oci:LAYOUT:imgN` for the 10 images one after another
#   cold:    `airlock-bundler create` with an empty cache and no lock (pull + bundle)
#   warm:    the same build again: lock present, cache warm (bundle only)
#   pull:    `airlock-bundler pull` (cache and lock only, no bundle) cold and warm
#   stock:   for reference, stock tools writing a bundle-sized output from the warm
#            cache: cat BLOBS | zstd -T0 -3 | tee OUT | openssl dgst -sha256 (what a
#            warm create cannot avoid: compress, write and hash about 1 GiB)
# and prints   ratio skopeo/cold (goal >= 1.5: parallel transfers)
#              ratio cold/warm   (goal >= 10: the cache), for create and for pull
# Layers are random bytes declared as gzip layers (like real compressed layers; the
# registry and skopeo do not look inside, and the bundle writer stores them as they are).
# Usage: tests/bench/pull.sh [--keep]   (needs: docker-registry, skopeo, openssl, python3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${RUNS:-1}
IMAGES=${IMAGES:-10}
LAYER_MIB=${LAYER_MIB:-105}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/airlock-pull-bench.XXXXXX)}
KEEP=0; [ "${1:-}" = --keep ] && KEEP=1
REG_PID=
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  if [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT
MiB=$((1024 * 1024))
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "== build (dev profile; dependencies are optimised in it, see Cargo.toml)"
(cd "$ROOT" && cargo build -q -p airlock-bundler)
BUNDLER=$ROOT/target/debug/airlock-bundler

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
mkdir -p "$WORK/reg"
cat > "$WORK/reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/reg/data
http:
  addr: $REG
EOF
docker-registry serve "$WORK/reg/config.yml" >"$WORK/reg/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$REG/v2/" >/dev/null || { cat "$WORK/reg/log"; exit 1; }

prng() { openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$1")" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null; }
L=$WORK/layout
echo "== generate $IMAGES images of one ${LAYER_MIB} MiB layer each in $L"
mkdir -p "$L/blobs/sha256" "$WORK/raw"
set +o pipefail
for i in $(seq 1 "$IMAGES"); do prng "$((1000 + i))" | head -c $((LAYER_MIB * MiB)) > "$WORK/raw/layer$i"; done
set -o pipefail
python3 - "$WORK" "$IMAGES" <<'PY'
import hashlib, json, os, sys
work, n = sys.argv[1], int(sys.argv[2]); L = os.path.join(work, "layout"); B = os.path.join(L, "blobs", "sha256")
def put_bytes(b):
    d = hashlib.sha256(b).hexdigest(); open(os.path.join(B, d), "wb").write(b); return d, len(b)
def put_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
    d = h.hexdigest(); os.replace(p, os.path.join(B, d)); return d, os.path.getsize(os.path.join(B, d))
index = {"schemaVersion": 2, "manifests": []}
for i in range(1, n + 1):
    ld, ls = put_file(os.path.join(work, "raw", f"layer{i}"))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": [f"/app{i}"]},
                      "rootfs": {"type": "layers", "diff_ids": [f"sha256:{ld}"]}}).encode()
    cd, cs = put_bytes(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cd}", "size": cs},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{ld}", "size": ls}]}).encode()
    md, ms = put_bytes(m)
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{md}",
                               "size": ms, "annotations": {"org.opencontainers.image.ref.name": f"img{i}"}})
open(os.path.join(L, "index.json"), "w").write(json.dumps(index))
open(os.path.join(L, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
rm -rf "$WORK/raw"
echo "== push to $REG"
for i in $(seq 1 "$IMAGES"); do skopeo copy -q --dest-tls-verify=false "oci:$L:img$i" "docker://$REG/bench/img$i:1"; done
TOTAL=$(du -sb "$WORK/reg/data" | cut -f1)
echo "registry holds $((TOTAL / MiB)) MiB"

S=$WORK/spec
mkdir -p "$S"
{ echo "name: pull-bench"; echo "version: '1.0'"
  echo "registries:"; echo "  - host: '$REG'"; echo "    insecure: true"
  echo "components:"; echo "  - name: bench"; echo "    images:"
  for i in $(seq 1 "$IMAGES"); do echo "      - ref: example.com/bench/img$i:1"; echo "        from: docker://$REG/bench/img$i:1"; done
} > "$S/bundle.yaml"
"$BUNDLER" keygen -W -p "$WORK/k.pub" -s "$WORK/k.key" >/dev/null

best() { sort -n | head -1; }
sk=(); cold=(); warm=(); pcold=(); pwarm=(); stock=()
for r in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/skopeo-out"; sync
  t0=$(now)
  for i in $(seq 1 "$IMAGES"); do skopeo copy -q --src-tls-verify=false "docker://$REG/bench/img$i:1" "oci:$WORK/skopeo-out:img$i"; done
  t1=$(now); sk+=("$(secs "$t0" "$t1")")

  rm -rf "$WORK/cache" "$S/bundle.lock" "$WORK/out"; mkdir -p "$WORK/out"; sync
  t0=$(now)
  SOURCE_DATE_EPOCH=1795305600 "$BUNDLER" create "$S/bundle.yaml" -o "$WORK/out/b.airlock" --key "$WORK/k.key" --cache-dir "$WORK/cache" >/dev/null
  t1=$(now); cold+=("$(secs "$t0" "$t1")")
  first=$(sha256sum "$WORK/out/b.airlock" | cut -d' ' -f1)

  rm -rf "$WORK/out"; mkdir -p "$WORK/out"; sync
  t0=$(now)
  SOURCE_DATE_EPOCH=1795305600 "$BUNDLER" create "$S/bundle.yaml" -o "$WORK/out/b.airlock" --key "$WORK/k.key" --cache-dir "$WORK/cache" --locked >/dev/null
  t1=$(now); warm+=("$(secs "$t0" "$t1")")
  [ "$(sha256sum "$WORK/out/b.airlock" | cut -d' ' -f1)" = "$first" ] || { echo "warm bundle differs from cold bundle"; exit 1; }

  rm -rf "$WORK/cache" "$S/bundle.lock"; sync
  t0=$(now)
  "$BUNDLER" pull "$S/bundle.yaml" --cache-dir "$WORK/cache" >/dev/null
  t1=$(now); pcold+=("$(secs "$t0" "$t1")")
  t0=$(now)
  "$BUNDLER" pull "$S/bundle.yaml" --cache-dir "$WORK/cache" --locked >/dev/null
  t1=$(now); pwarm+=("$(secs "$t0" "$t1")")
  rm -rf "$WORK/out"; mkdir -p "$WORK/out"; sync
  t0=$(now)
  cat "$WORK"/cache/blobs/sha256/* | zstd -q -T0 -3 | tee "$WORK/out/stock.zst" | openssl dgst -sha256 >/dev/null
  t1=$(now); stock+=("$(secs "$t0" "$t1")")
  echo "run $r: stock ${stock[-1]} s, skopeo ${sk[-1]} s, create cold ${cold[-1]} s, create warm ${warm[-1]} s, pull cold ${pcold[-1]} s, pull warm ${pwarm[-1]} s"
done
ST_BEST=$(printf '%s\n' "${stock[@]}" | best)
PC_BEST=$(printf '%s\n' "${pcold[@]}" | best); PW_BEST=$(printf '%s\n' "${pwarm[@]}" | best)
S_BEST=$(printf '%s\n' "${sk[@]}" | best); C_BEST=$(printf '%s\n' "${cold[@]}" | best); W_BEST=$(printf '%s\n' "${warm[@]}" | best)
echo "== results ($IMAGES images, $((TOTAL / MiB)) MiB; best of $RUNS)"
echo "skopeo copy one after another: $S_BEST s"
echo "airlock-bundler create, cold:  $C_BEST s   ratio skopeo/cold = $(python3 -c "print(f'{$S_BEST/$C_BEST:.2f}')") (goal >= 1.5)"
echo "airlock-bundler create, warm:  $W_BEST s   ratio cold/warm   = $(python3 -c "print(f'{$C_BEST/$W_BEST:.2f}')") (goal >= 10)"
echo "airlock-bundler pull, cold:    $PC_BEST s   ratio skopeo/pull = $(python3 -c "print(f'{$S_BEST/$PC_BEST:.2f}')")"
echo "stock tools, compress+write+hash the cached blobs: $ST_BEST s (the work a warm create cannot skip)"
echo "airlock-bundler pull, warm:    $PW_BEST s   ratio cold/warm   = $(python3 -c "print(f'{$PC_BEST/max($PW_BEST,0.001):.1f}')")"
