#!/usr/bin/env python3
"""Package a Helm chart directory as NAME-VERSION.tgz, byte-for-byte reproducibly.

`helm package` stamps file mtimes into the archive, so its output changes on every
run. This writes what it writes (every file under a top directory named after the
chart), but with sorted entries, a fixed mtime, uid/gid 0, empty owner names and a
gzip header with mtime 0 and no file name. Python standard library only.

The chart's `.helmignore` is honoured for the patterns the packaged upstream charts
use (blank lines, `#` comments, shell globs; a pattern without `/` matches a name at
any depth, one with `/` the path from the chart root, a trailing `/` directories
only); negation and `**` are refused rather than packaged differently from Helm.

usage: package_chart.py CHART_DIR OUT_DIR   ->  OUT_DIR/<name>-<version>.tgz
"""

import fnmatch
import gzip
import io
import os
import re
import sys
import tarfile

EPOCH = 1704067200  # 2024-01-01T00:00:00Z


def chart_field(chart_yaml: str, key: str) -> str:
    m = re.search(rf"^{key}:\s*\"?([^\"\s#]+)\"?", chart_yaml, re.M)
    if not m:
        sys.exit(f"Chart.yaml has no top-level `{key}:`")
    return m.group(1)


def ignore_rules(src: str):
    path = os.path.join(src, ".helmignore")
    rules = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("!") or "**" in line:
                    sys.exit(f"{path}: `{line}`: negation and ** are not supported here")
                dir_only = line.endswith("/")
                rules.append((line.strip("/"), dir_only))
    return rules


def ignored(rel: str, is_dir: bool, rules) -> bool:
    for pattern, dir_only in rules:
        if dir_only and not is_dir:
            continue
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern):
                return True
        elif fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern):
            return True
    return False


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    src, out_dir = argv
    with open(os.path.join(src, "Chart.yaml"), encoding="utf-8") as f:
        chart_yaml = f.read()
    name, version = chart_field(chart_yaml, "name"), chart_field(chart_yaml, "version")
    rules = ignore_rules(src)
    files = []
    for root, dirs, names in os.walk(src):
        rel_root = os.path.relpath(root, src).replace(os.sep, "/")
        rel = lambda n: n if rel_root == "." else f"{rel_root}/{n}"
        dirs[:] = sorted(d for d in dirs if not ignored(rel(d), True, rules))
        for n in names:
            if not ignored(rel(n), False, rules):
                files.append(rel(n))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in sorted(files):
            with open(os.path.join(src, rel), "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = os.path.join(out_dir, f"{name}-{version}.tgz")
    with open(out, "wb") as f:
        f.write(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))
    os.utime(out, (EPOCH, EPOCH))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
