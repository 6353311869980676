#!/usr/bin/env python3
"""Generate the demo's container images, offline and byte-for-byte reproducibly.

Writes, into OUT (default: the directory of this script):

  OUT/layout/            one OCI image layout (oci-layout, index.json, blobs/sha256/...)
                         holding, each index entry annotated with the FULL reference
                         in org.opencontainers.image.ref.name:
                           docker.io/airlock-demo/api:<VERSION>   base layer + api layer
                           docker.io/airlock-demo/web:1.0.0       base layer + web layer
                           docker.io/airlock-demo/worker:1.0.0    image index, linux/amd64 + linux/arm64
                           docker.io/rancher/klipper-helm:v0.9.3-build20241008
                                                                  a STAND-IN, not the real image
  OUT/tools.docker.tar   a docker-archive (the format `docker save` / `skopeo copy
                         docker-archive:` write) holding docker.io/airlock-demo/tools:1.0.0

`--version X` changes only the api image: its top layer's content and its tag. So
`generate.py --version 2.0.0 --out DIR` makes the inputs of a "v2" demo in which
exactly one layer differs from v1 (the base layer and every other image are identical).

The images are tiny: each layer is a tar of a few text files. They are not meant to be
run (there is no shell in them); they exist so that the bundler and the installer are
exercised with real, valid OCI content that `skopeo`, `umoci` and `containerd` accept.

Determinism: sorted tar entries, fixed mtimes, uid/gid 0 with empty user/group names,
gzip with mtime 0 and no file name, JSON written with a fixed key order. Only the
Python standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

# 2024-01-01T00:00:00Z: the fixed time for every tar entry and every "created" field.
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

KLIPPER_REF = "docker.io/rancher/klipper-helm:v0.9.3-build20241008"
# The platform's images, as the charts the demo carries name them (keycloakx 7.1.11,
# MinIO 5.4.0, and the app's PostgreSQL and `mc`): STAND-INS like klipper-helm.
PLATFORM_STAND_INS = [
    ("quay.io/keycloak/keycloak:26.5.6", "keycloak/keycloak", "26.5.6"),
    ("quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z", "minio/minio", "RELEASE.2024-12-18T13-15-44Z"),
    ("quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z", "minio/mc", "RELEASE.2024-11-21T17-21-54Z"),
    ("docker.io/library/postgres:16.6", "library/postgres", "16.6"),
    # Monitoring: the images the prometheus 29.27.0 and grafana 12.11.1 charts run
    # with the values the installer renders (pushgateway off, no Grafana sidecar).
    ("quay.io/prometheus/prometheus:v3.14.0", "prometheus/prometheus", "v3.14.0"),
    ("quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1", "prometheus-operator/prometheus-config-reloader", "v0.93.1"),
    ("quay.io/prometheus/alertmanager:v0.34.0", "prometheus/alertmanager", "v0.34.0"),
    ("registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0", "kube-state-metrics/kube-state-metrics", "v2.20.0"),
    ("quay.io/prometheus/node-exporter:v1.12.1", "prometheus/node-exporter", "v1.12.1"),
    ("docker.io/grafana/grafana:13.2.0", "grafana/grafana", "13.2.0"),
]
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


# ----------------------------------------------------------------------------- helpers


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jbytes(obj) -> bytes:
    """Canonical JSON bytes: insertion-ordered keys, compact separators, UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def make_tar(files: dict[str, str | bytes], keep_order: bool = False) -> bytes:
    """An uncompressed tar of `files` (path -> content), with every parent directory.

    Entries are sorted (or, with keep_order, written in the given order), paths are
    relative (no leading '/' or './'), directories 0755, files 0644, uid/gid 0, empty
    user/group names, mtime EPOCH, USTAR format.
    """
    entries: dict[str, bytes | None] = {}
    for path, content in files.items():
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            entries["/".join(parts[:i]) + "/"] = None
        entries[path] = content.encode("utf-8") if isinstance(content, str) else content
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in entries if keep_order else sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(name.rstrip("/") if data is None else name)
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.mode = 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name in the header (gzip.compress writes none)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


class Layer:
    """One layer: its uncompressed tar (diff_id) and its gzip blob (the digest)."""

    def __init__(self, files: dict[str, str | bytes], comment: str):
        self.tar = make_tar(files)
        self.gz = gzip_bytes(self.tar)
        self.diff_id = "sha256:" + sha256_hex(self.tar)
        self.digest = "sha256:" + sha256_hex(self.gz)
        self.comment = comment


def image_config(arch: str, layers: list[Layer], cmd: list[str], labels: dict[str, str]) -> dict:
    return {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": list(DEFAULT_ENV),
            "Cmd": cmd,
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": [{"created": CREATED, "created_by": l.comment} for l in layers],
    }


class Layout:
    """Collects blobs in memory, then writes one OCI image layout."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.index: list[dict] = []

    def add_blob(self, data: bytes) -> dict:
        digest = "sha256:" + sha256_hex(data)
        self.blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    def add_image(self, arch: str, layers: list[Layer], cmd, labels) -> dict:
        """Adds config, layers and manifest; returns the manifest's descriptor."""
        config = self.add_blob(jbytes(image_config(arch, layers, cmd, labels)))
        layer_descs = []
        for l in layers:
            self.blobs[l.digest] = l.gz
            layer_descs.append({"mediaType": MT_LAYER_GZIP, "digest": l.digest, "size": len(l.gz)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, **config},
            "layers": layer_descs,
        }
        return {"mediaType": MT_MANIFEST, **self.add_blob(jbytes(manifest))}

    def add_index(self, platforms: list[tuple[str, dict]]) -> dict:
        """An image index over (arch, manifest descriptor) pairs; returns its descriptor."""
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {**desc, "platform": {"architecture": arch, "os": "linux"}} for arch, desc in platforms
            ],
        }
        return {"mediaType": MT_INDEX, **self.add_blob(jbytes(index))}

    def tag(self, ref: str, desc: dict) -> None:
        self.index.append({**desc, "annotations": {REF_NAME: ref}})

    def write(self, path: str) -> None:
        if os.path.exists(path):
            if not os.path.isfile(os.path.join(path, "oci-layout")):
                sys.exit(f"refusing to replace {path}: it exists and is not an OCI layout")
            shutil.rmtree(path)
        blob_dir = os.path.join(path, "blobs", "sha256")
        os.makedirs(blob_dir)
        for digest in sorted(self.blobs):
            write_file(os.path.join(blob_dir, digest.split(":", 1)[1]), self.blobs[digest])
        write_file(os.path.join(path, "oci-layout"), jbytes({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": self.index}
        write_file(os.path.join(path, "index.json"), jbytes(index))


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    os.utime(path, (EPOCH, EPOCH))


def write_docker_archive(path: str, ref: str, layers: list[Layer], cmd, labels) -> None:
    """A docker-archive as `skopeo copy ... docker-archive:` writes it: manifest.json,
    the config as <hex>.json, each layer uncompressed as <diff_id hex>.tar, and a
    `repositories` file, in skopeo's order (layers, config, manifest.json last), so a
    reader cannot count on seeing manifest.json first. manifest.json is byte-identical
    to skopeo 1.9's. (skopeo also adds legacy <id>/{layer.tar symlink,json,VERSION}
    entries, which no current reader needs; they are left out so the archive holds no
    links.)"""
    config = jbytes(image_config("amd64", layers, cmd, labels))
    config_name = sha256_hex(config) + ".json"
    layer_names = [l.diff_id.split(":", 1)[1] + ".tar" for l in layers]
    repo, tag = ref.rsplit(":", 1)
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}]
    # `repositories` maps repo -> tag -> the top layer's legacy ID; we use the top
    # layer's diff_id hex, as the layer's file name above.
    repositories = {repo: {tag: layer_names[-1][: -len(".tar")]}}
    members: dict[str, bytes] = {}
    for name, l in zip(layer_names, layers):
        members[name] = l.tar
    members[config_name] = config
    members["manifest.json"] = jbytes(manifest)
    members["repositories"] = jbytes(repositories)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(make_tar(members, keep_order=True))
    os.chmod(tmp, 0o644)
    os.utime(tmp, (EPOCH, EPOCH))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- content


def base_layer() -> Layer:
    return Layer(
        {
            "etc/airlock-demo/base/VERSION": "1.0.0\n",
            "etc/airlock-demo/base/README": (
                "Airlock demo base layer.\n"
                "Shared by the api, web, worker and tools demo images, so a bundle\n"
                "stores it once (blob deduplication).\n"
            ),
            "etc/os-release": 'NAME="Airlock demo"\nID=airlock-demo\nVERSION_ID="1.0.0"\n',
        },
        "airlock-demo: base layer (shared)",
    )


def app_layer(name: str, version: str, extra: dict[str, str] | None = None) -> Layer:
    files = {
        f"etc/airlock-demo/{name}/VERSION": f"{version}\n",
        f"etc/airlock-demo/{name}/README": f"Airlock demo image '{name}', version {version}.\n",
    }
    files.update(extra or {})
    return Layer(files, f"airlock-demo: {name} {version} layer")


def labels(name: str, version: str, description: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.vendor": "Airlock demo",
    }


WEB_INDEX_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Airlock demo</title></head>
<body>
<h1>Airlock demo</h1>
<p>This page was installed offline from a signed Airlock bundle.</p>
</body>
</html>
"""

KLIPPER_README = """STAND-IN IMAGE - NOT THE REAL rancher/klipper-helm

This image only carries the reference docker.io/rancher/klipper-helm:v0.9.3-build20241008
so that the Airlock demo bundle is complete and can be built without network access.
It contains no helm, no shell and no program: a HelmChart job started from it fails.

K3s runs every HelmChart install as a Job with the rancher/klipper-helm image, so a real
bundle must carry the real image. The vendor supplies it from the K3s release's airgap
images (k3s-airgap-images-<arch>.tar.zst) or from the registry, e.g.
  skopeo copy docker://docker.io/rancher/klipper-helm:v0.9.3-build20241008 oci:layout:...
"""


def build(version: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    base = base_layer()
    layout = Layout()

    api = app_layer(
        "api",
        version,
        {"etc/airlock-demo/api/config.yaml": f"listen: 0.0.0.0:8080\nversion: {version}\n"},
    )
    layout.tag(
        f"docker.io/airlock-demo/api:{version}",
        layout.add_image(
            "amd64",
            [base, api],
            ["/usr/local/bin/airlock-demo-api"],
            labels("airlock-demo/api", version, "Airlock demo API server (demo content only)"),
        ),
    )

    web = app_layer("web", "1.0.0", {"usr/share/airlock-demo/web/index.html": WEB_INDEX_HTML})
    layout.tag(
        "docker.io/airlock-demo/web:1.0.0",
        layout.add_image(
            "amd64",
            [base, web],
            ["/usr/local/bin/airlock-demo-web"],
            labels("airlock-demo/web", "1.0.0", "Airlock demo web frontend (demo content only)"),
        ),
    )

    platforms = []
    for arch in ("amd64", "arm64"):
        worker = app_layer("worker", "1.0.0", {"etc/airlock-demo/worker/ARCH": f"linux/{arch}\n"})
        platforms.append(
            (
                arch,
                layout.add_image(
                    arch,
                    [base, worker],
                    ["/usr/local/bin/airlock-demo-worker"],
                    labels("airlock-demo/worker", "1.0.0", f"Airlock demo worker, linux/{arch}"),
                ),
            )
        )
    layout.tag("docker.io/airlock-demo/worker:1.0.0", layout.add_index(platforms))

    klipper = Layer(
        {"STAND-IN-README.txt": KLIPPER_README},
        "airlock-demo: STAND-IN for rancher/klipper-helm (not the real image)",
    )
    stand_in_labels = labels(
        "rancher/klipper-helm (STAND-IN)",
        "v0.9.3-build20241008",
        "STAND-IN for the real rancher/klipper-helm image; the vendor must supply the real one from K3s's airgap images",
    )
    stand_in_labels["io.airlock.demo.stand-in"] = "true"
    layout.tag(
        KLIPPER_REF,
        layout.add_image("amd64", [klipper], ["/bin/false"], stand_in_labels),
    )

    # One tiny, labelled stand-in per platform image: the charts' references resolve
    # in the bundle, and nothing pretends to be the real software.
    for ref, name, tag in PLATFORM_STAND_INS:
        readme = (
            f"STAND-IN IMAGE - NOT THE REAL {name}\n\n"
            f"This image only carries the reference {ref}\n"
            "so that the Airlock demo bundle is complete and can be built without network access.\n"
            "It contains no program. A real bundle carries the real image (the vendor pulls it\n"
            "with the bundler from the registry).\n"
        )
        layer = Layer({"STAND-IN-README.txt": readme}, f"airlock-demo: STAND-IN for {name} (not the real image)")
        stand_in = labels(f"{name} (STAND-IN)", tag, f"STAND-IN for the real {name} image")
        stand_in["io.airlock.demo.stand-in"] = "true"
        layout.tag(ref, layout.add_image("amd64", [layer], ["/bin/false"], stand_in))

    layout.write(os.path.join(out, "layout"))

    tools = app_layer(
        "tools",
        "1.0.0",
        {"usr/share/airlock-demo/tools/NOTES": "Support tools image of the Airlock demo.\n"},
    )
    write_docker_archive(
        os.path.join(out, "tools.docker.tar"),
        "docker.io/airlock-demo/tools:1.0.0",
        [base, tools],
        ["/usr/local/bin/airlock-demo-tools"],
        labels("airlock-demo/tools", "1.0.0", "Airlock demo support tools (demo content only)"),
    )


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", default="1.0.0", help="version (tag and top-layer content) of the api image")
    p.add_argument("--out", default=here, help="output directory (default: next to this script)")
    args = p.parse_args(argv)
    build(args.version, args.out)
    print(f"wrote {os.path.join(args.out, 'layout')} and {os.path.join(args.out, 'tools.docker.tar')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
