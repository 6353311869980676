#!/usr/bin/env python3
"""Write the uncompressed tar of the demo's STAND-IN K3s airgap images archive.

usage: make_dist.py OUT.tar      (regenerate.sh compresses it with zstd)

The real k3s-airgap-images-<arch>.tar.zst is a zstd-compressed docker-archive with
every image K3s needs (pause, coredns, klipper-helm, ...). This stand-in has the same
shape: a docker-archive with ONE tiny image,
  docker.io/airlock-demo/k3s-airgap-images-stand-in:v1.31.4-k3s1,
whose only content is a README, plus the same README at the top of the tar for
humans (`zstd -dc FILE | tar -xOf - README.txt`). containerd imports it (so an
installer that drops it into agent/images/ does not break K3s' preload), but it holds
none of the images K3s needs. Deterministic; Python standard library only.
"""

import os
import sys
import tarfile

sys.dont_write_bytecode = True  # no __pycache__ next to the committed generator
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "images"))
import generate  # noqa: E402  (the demo's image generator: tar/layer/docker-archive helpers)

README = """STAND-IN - NOT THE REAL K3s AIRGAP IMAGES

This file stands in for k3s-airgap-images-amd64.tar.zst of K3s v1.31.4+k3s1 in the
Airlock demo bundle, which must build without network access. It holds one tiny
placeholder image (docker.io/airlock-demo/k3s-airgap-images-stand-in:v1.31.4-k3s1)
and none of the images K3s needs (pause, coredns, local-path-provisioner,
metrics-server, traefik, klipper-helm, klipper-lb, ...).

A real bundle must carry the real release artifact from the K3s release, checked
against the release's sha256sum-amd64.txt.
"""

REF = "docker.io/airlock-demo/k3s-airgap-images-stand-in:v1.31.4-k3s1"


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    out = argv[0]
    layer = generate.Layer({"STAND-IN-README.txt": README}, "STAND-IN for the K3s airgap images")
    labels = generate.labels("k3s-airgap-images (STAND-IN)", "v1.31.4+k3s1", "STAND-IN for the K3s airgap images")
    labels["io.airlock.demo.stand-in"] = "true"
    tmp = out + ".archive"
    generate.write_docker_archive(tmp, REF, [layer], ["/bin/false"], labels)
    # Prepend README.txt: re-read the archive members in order and write them after it.
    members = {"README.txt": README.encode()}
    with tarfile.open(tmp) as t:
        for m in t.getmembers():
            members[m.name] = t.extractfile(m).read()
    os.remove(tmp)
    with open(out, "wb") as f:
        f.write(generate.make_tar(members, keep_order=True))
    os.utime(out, (generate.EPOCH, generate.EPOCH))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
