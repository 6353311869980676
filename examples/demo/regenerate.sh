#!/usr/bin/env bash
# Regenerates every generated input of the demo example, offline and reproducibly
# (running it twice gives byte-identical files; the results are committed):
#   images/layout/, images/tools.docker.tar   <- images/generate.py
#   charts/notes-0.1.0.tgz                     <- src/notes/ via src/package_chart.py
#   charts/keycloakx-7.1.11.tgz                <- ../../../shared/charts/codecentric-keycloakx
#                                                 via src/package_chart.py (when present)
#   charts/prometheus-29.27.0.tgz              <- ../../../shared/charts/prometheus-community/
#                                                 prometheus, its four dependencies packaged
#                                                 into its charts/ as `helm dependency build`
#                                                 would (the upstream chart has no charts/)
#   charts/grafana-12.11.1.tgz                 <- ../../../shared/charts/grafana
# charts/minio-5.4.0.tgz is the upstream archive, copied from ../shared/charts as is.
#   dist/k3s-airgap-images-amd64.tar.zst       <- src/make_dist.py + zstd (STAND-IN)
#   dist/sha256sum-amd64.txt                   <- sha256sum of dist/k3s and the above
# dist/k3s (a STAND-IN shell script) and charts/hello/ are plain sources, not generated.
# Needs python3 (standard library only), zstd and coreutils.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PYTHONDONTWRITEBYTECODE=1

python3 images/generate.py
python3 src/package_chart.py src/notes charts
if [ -d ../../../shared/charts/codecentric-keycloakx ]; then
  python3 src/package_chart.py ../../../shared/charts/codecentric-keycloakx charts
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
MON=../../../shared/charts
if [ -d "$MON/prometheus-community/prometheus" ] && [ -d "$MON/grafana" ]; then
  # The bundler would fetch the dependencies from prometheus-community's repository
  # (Chart.lock); the demo builds offline, so they are vendored here, from the same
  # upstream commit, exactly at the versions the chart's Chart.lock pins.
  cp -a "$MON/prometheus-community/prometheus" "$tmp/prometheus"
  mkdir "$tmp/prometheus/charts"
  for dep in alertmanager kube-state-metrics prometheus-node-exporter prometheus-pushgateway; do
    python3 src/package_chart.py "$MON/prometheus-community/$dep" "$tmp/prometheus/charts"
  done
  python3 src/package_chart.py "$tmp/prometheus" charts
  python3 src/package_chart.py "$MON/grafana" charts
fi
python3 src/make_dist.py "$tmp/airgap.tar"
# window <= 2^25: K3s caps the zstd decoder's memory at 32 MiB
zstd -q -f -19 --long=25 --no-progress "$tmp/airgap.tar" -o dist/k3s-airgap-images-amd64.tar.zst
chmod 0644 dist/k3s-airgap-images-amd64.tar.zst
chmod 0755 dist/k3s
(cd dist && sha256sum k3s k3s-airgap-images-amd64.tar.zst > sha256sum-amd64.txt)
echo "wrote dist/k3s-airgap-images-amd64.tar.zst and dist/sha256sum-amd64.txt"
