//! Airlock's RKE2 layout against what RKE2's own `install.sh` lays down.
//!
//! The official script (`tests/official/rke2-install.sh`, its source commit in its
//! header) runs offline on a stand-in release (a tarball with RKE2's layout whose
//! `bin/rke2` is a STAND-IN script, a stand-in images archive, their checksums):
//! chrooted into a throwaway root, inside a private mount and network namespace
//! (`unshare -m -n`), so nothing of it reaches this machine. Airlock renders the same
//! release for the same node. Every path the script creates must be in Airlock's layout
//! with the same kind, mode, link target and bytes; every path Airlock adds must be one
//! of [`INTENDED`], each listed with its reason in `docs/distribution.md`. Run twice:
//! with `/usr/local` as usual, and with `/usr/local` a read-only mount point, where the
//! script (and Airlock) unpack under `/opt/rke2` and move the units.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use airlock_installer::engine::layout::{FileSource, Layout};
use airlock_installer::render::distribution::{
    read_unpacked_rke2, render, rewritten_for_opt_prefix, unpack_rke2_tarball, Artifacts, DistributionInput, Role,
    Token, RKE2_UNPACK_DIR,
};
use airlock_tests::{is_root, require_tool, skip_or_fail, workspace_root};

/// What Airlock lays down beyond `install.sh`, by path prefix, and why (the same list,
/// with the same reasons, is in docs/distribution.md).
const INTENDED: &[(&str, &str)] = &[
    (
        "/etc/rancher",
        "config.yaml (and registries.yaml): install.sh takes settings from the environment, Airlock from the answers",
    ),
    ("/var/lib/rancher/rke2/agent/images/airlock-images.tar", "the bundle's own images, imported at start like RKE2's"),
    ("/var/lib/rancher/rke2/server", "the HelmChart manifests of the bundle's charts (0700 server/ as RKE2 makes it)"),
    ("/var/lib/rancher/rke2", "the data directory and agent/ created ahead (0755, as RKE2 creates them)"),
    ("/var/lib/rancher", "the parent of the data directory (0755)"),
];

/// Directories that exist on any host before an install (made here for the chroot).
const HOST_DIRS: &[&str] =
    &["/etc", "/etc/systemd", "/etc/systemd/system", "/usr", "/usr/local", "/var", "/var/lib", "/opt"];

/// One path of a tree: kind and mode, and the bytes or link target.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(PathBuf),
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A stand-in RKE2 release in `dir`: the tarball with RKE2's layout, the images
/// archive and the checksums file, as `install.sh` takes them from
/// `INSTALL_RKE2_ARTIFACT_PATH`.
fn stand_in_release(dir: &Path) {
    let src = dir.join("src");
    let unit = |kind: &str| {
        format!(
            "[Unit]\nDescription=Rancher Kubernetes Engine v2 ({kind}) STAND-IN\n\n[Service]\nType=notify\n\
             EnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/sysconfig/%N\n\
             EnvironmentFile=-/usr/local/lib/systemd/system/%N.env\nKillMode=process\nDelegate=yes\n\
             ExecStartPre=-/sbin/modprobe br_netfilter\nExecStart=/usr/local/bin/rke2 {kind}\n\
             ExecStopPost=-/bin/sh -c \"systemd-cgls /system.slice/%n | grep -Eo '[0-9]+ (containerd|kubelet)' | awk '{{print $1}}' | xargs -r kill\"\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        )
    };
    write(&src.join("bin/rke2"), "#!/bin/sh\necho 'STAND-IN for rke2: not RKE2' >&2\nexit 1\n", 0o755);
    write(&src.join("bin/rke2-killall.sh"), "#!/bin/sh\n# STAND-IN killall\n", 0o755);
    write(
        &src.join("bin/rke2-uninstall.sh"),
        "#!/bin/sh\n# STAND-IN uninstall\nrm -f /usr/local/bin/rke2 /usr/local/bin/rke2-killall.sh\nrm -rf /usr/local/share/rke2\n",
        0o755,
    );
    write(&src.join("lib/systemd/system/rke2-server.service"), &unit("server"), 0o644);
    write(&src.join("lib/systemd/system/rke2-agent.service"), &unit("agent"), 0o644);
    write(
        &src.join("share/rke2/rke2-cis-sysctl.conf"),
        "vm.panic_on_oom=0\nvm.overcommit_memory=1\nkernel.panic=10\nkernel.panic_on_oops=1\n",
        0o644,
    );
    write(&src.join("share/rke2/LICENSE.txt"), "STAND-IN license text\n", 0o644);
    let tarball = dir.join("rke2.linux-amd64.tar.gz");
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "--sort=name", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .args(["bin", "lib", "share"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    fs::remove_dir_all(&src).unwrap();
    write(&dir.join("rke2-images.linux-amd64.tar.zst"), "STAND-IN images archive\n", 0o644);
    let sum = |name: &str| {
        let bytes = fs::read(dir.join(name)).unwrap();
        format!("{}  {name}\n", hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)))
    };
    let sums = format!("{}{}", sum("rke2.linux-amd64.tar.gz"), sum("rke2-images.linux-amd64.tar.zst"));
    write(&dir.join("sha256sum-amd64.txt"), &sums, 0o644);
}

/// Host directories the chroot needs for the script's tools, bound read-only.
const TOOLS: &[&str] =
    &["bin", "sbin", "lib", "lib64", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc/alternatives", "dev"];

/// Runs the official script chrooted into `root` in a private mount and network
/// namespace. `read_only_usr_local`: `/usr/local` becomes a read-only mount point there.
fn run_official(root: &Path, artifacts: &Path, read_only_usr_local: bool) -> Option<()> {
    let unshare = require_tool("unshare")?;
    if !is_root() {
        return skip_or_fail("bind mounts and chroot for RKE2's install.sh need root");
    }
    for d in HOST_DIRS {
        fs::create_dir_all(root.join(&d[1..])).unwrap();
    }
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::create_dir_all(root.join("artifacts")).unwrap();
    // A Debian host: no yum/zypper, no /etc/redhat-release (no fapolicyd step).
    write(&root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n", 0o644);
    fs::copy(workspace_root().join("tests/official/rke2-install.sh"), root.join("install.sh")).unwrap();
    let setup = r#"set -e
root=$1; artifacts=$2; ro=$3; shift 3
for d in "$@"; do
    if [ -L "/$d" ]; then
        ln -s "$(readlink "/$d")" "$root/$d"
    elif [ -d "/$d" ]; then
        mkdir -p "$root/$d"
        if [ "$d" = dev ]; then mount --rbind /dev "$root/dev"; else mount --rbind -o ro "/$d" "$root/$d"; fi
    fi
done
mount --bind -o ro "$artifacts" "$root/artifacts"
if [ "$ro" = yes ]; then
    mount --bind "$root/usr/local" "$root/usr/local"
    mount -o remount,bind,ro "$root/usr/local"
fi
exec chroot "$root" /bin/sh /install.sh
"#;
    let out = Command::new(unshare)
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c", setup, "sh"])
        .arg(root)
        .arg(artifacts)
        .arg(if read_only_usr_local { "yes" } else { "no" })
        .args(TOOLS)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("INSTALL_RKE2_ARTIFACT_PATH", "/artifacts")
        .env("INSTALL_RKE2_METHOD", "tar")
        .env("INSTALL_RKE2_SKIP_RELOAD", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // What the setup added for the run (the mounts went with the namespace).
    for d in TOOLS.iter().rev().chain(["artifacts", "tmp"].iter()) {
        let p = root.join(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => fs::remove_file(&p).unwrap(),
            Ok(_) => fs::remove_dir(&p).unwrap(),
            Err(_) => {}
        }
    }
    for f in ["install.sh", "etc/os-release"] {
        fs::remove_file(root.join(f)).unwrap();
    }
    assert!(
        out.status.success(),
        "install.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

/// Every path under `root` but the host's own directories.
fn tree_of(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = Path::new("/").join(e.path().strip_prefix(root).unwrap());
        if HOST_DIRS.iter().any(|d| Path::new(d) == rel) {
            continue;
        }
        let meta = e.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let entry = if meta.file_type().is_symlink() {
            Entry::Link(fs::read_link(e.path()).unwrap())
        } else if meta.is_dir() {
            Entry::Dir(mode)
        } else {
            Entry::File(mode, fs::read(e.path()).unwrap())
        };
        out.insert(rel, entry);
    }
    out
}

/// Airlock's layout for the same release and node, as a tree.
fn airlock_tree(artifacts: &Path, staging: &Path, opt_prefix: bool) -> (BTreeMap<PathBuf, Entry>, Layout) {
    unpack_rke2_tarball(&artifacts.join("rke2.linux-amd64.tar.gz"), staging).unwrap();
    fs::create_dir_all(staging.join("distribution")).unwrap();
    fs::copy(
        artifacts.join("rke2-images.linux-amd64.tar.zst"),
        staging.join("distribution/rke2-images.linux-amd64.tar.zst"),
    )
    .unwrap();
    let tarball = read_unpacked_rke2(staging).unwrap();
    let texts = opt_prefix.then(|| {
        tarball
            .iter()
            .filter(|e| rewritten_for_opt_prefix(&e.path))
            .map(|e| (e.path.clone(), fs::read_to_string(staging.join(RKE2_UNPACK_DIR).join(&e.path)).unwrap()))
            .collect()
    });
    let input = DistributionInput {
        version: "v1.31.4+rke2r1".into(),
        role: Role::SingleServer,
        node_name: "node-1".into(),
        node_ip: vec!["10.0.0.11".parse().unwrap()],
        tls_san: vec![],
        token: Token::new("K10-comparison-token"),
        cluster_cidr: vec![],
        service_cidr: vec![],
        cluster_dns: None,
        disable: vec![],
        embedded_registry: false,
        secrets_encryption: true,
        cis: false,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::Rke2 { tarball, images: vec!["distribution/rke2-images.linux-amd64.tar.zst".into()] },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts: vec![],
        proxy_env: vec![],
        rke2_opt_prefix: texts,
    };
    let layout = render(&input).unwrap();
    let mut out = BTreeMap::new();
    for d in &layout.dirs {
        out.insert(d.path.clone(), Entry::Dir(d.mode));
    }
    for f in &layout.files {
        let bytes = match &f.source {
            FileSource::Inline(b) => b.clone(),
            FileSource::Staged(entry) => fs::read(staging.join(entry)).unwrap_or_default(),
        };
        out.insert(f.path.clone(), Entry::File(if f.secret { 0o600 } else { f.mode }, bytes));
    }
    for l in &layout.links {
        out.insert(l.link.clone(), Entry::Link(l.target.clone()));
    }
    (out, layout)
}

fn compare(official: &BTreeMap<PathBuf, Entry>, airlock: &BTreeMap<PathBuf, Entry>) {
    let mut problems = Vec::new();
    for (path, want) in official {
        match airlock.get(path) {
            Some(got) if got == want => {}
            Some(got) => {
                problems.push(format!("{}: install.sh lays {}, airlock {}", path.display(), show(want), show(got)))
            }
            None => problems.push(format!(
                "{}: laid by install.sh ({}), missing in airlock's layout",
                path.display(),
                show(want)
            )),
        }
    }
    for path in airlock.keys().filter(|p| !official.contains_key(*p)) {
        if !INTENDED.iter().any(|(prefix, _)| path.starts_with(prefix)) {
            problems.push(format!("{}: laid by airlock only, and not an intended difference", path.display()));
        }
    }
    assert!(problems.is_empty(), "the trees differ:\n{}", problems.join("\n"));
}

fn show(e: &Entry) -> String {
    match e {
        Entry::Dir(m) => format!("a directory {m:04o}"),
        Entry::File(m, b) => format!("a file {m:04o} of {} bytes", b.len()),
        Entry::Link(t) => format!("a link to {}", t.display()),
    }
}

#[test]
fn distribution_rke2_tree_matches_the_official_install_sh_but_for_the_documented_differences() {
    let d = tempfile::tempdir().unwrap();
    let artifacts = d.path().join("artifacts");
    stand_in_release(&artifacts);
    let doc = fs::read_to_string(workspace_root().join("docs/distribution.md")).unwrap();
    for (prefix, _) in INTENDED {
        assert!(doc.contains(&format!("`{prefix}`")), "docs/distribution.md does not list `{prefix}`");
    }
    for (case, read_only) in [("/usr/local", false), ("/opt/rke2", true)] {
        let root = d.path().join(format!("official-{read_only}"));
        let Some(()) = run_official(&root, &artifacts, read_only) else { return };
        let official = tree_of(&root);
        let (airlock, layout) = airlock_tree(&artifacts, &d.path().join(format!("staging-{read_only}")), read_only);
        assert!(
            official.keys().any(|p| p.starts_with(case)),
            "{case}: install.sh did not install there: {official:#?}"
        );
        compare(&official, &airlock);
        // The unit Airlock enables is where the script left it.
        let unit = if read_only {
            "/etc/systemd/system/rke2-server.service"
        } else {
            "/usr/local/lib/systemd/system/rke2-server.service"
        };
        assert!(official.contains_key(Path::new(unit)) && layout.units == ["rke2-server.service"], "{case}");
    }
}
