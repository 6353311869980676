//! Airlock's K3s and RKE2 trees against what their own `install.sh` lays down.
//!
//! The official scripts (`tests/official/`, each with its source commit in its header)
//! run offline, chrooted into a throwaway root, inside a private mount and network
//! namespace (`unshare -m -n`), so nothing of them reaches this machine; what they
//! would download is a STAND-IN (a script that says so).
//!
//! RKE2: the script runs on a stand-in release (a tarball with RKE2's layout whose
//! `bin/rke2` is a stand-in, a stand-in images archive, their checksums), and Airlock
//! renders the same release for the same node. Every path the script creates must be
//! in Airlock's layout with the same kind, mode, link target and bytes; every path
//! Airlock adds must be one of [`INTENDED`], each listed with its reason in
//! `docs/distribution.md`. Run twice: with `/usr/local` as usual, and with `/usr/local`
//! a read-only mount point, where the script (and Airlock) unpack under `/opt/rke2` and
//! move the units.
//!
//! K3s: the script runs with `INSTALL_K3S_SKIP_DOWNLOAD=true` on the demo bundle's
//! stand-in `k3s`, `systemctl` a stand-in that records its calls, for a server and for
//! an agent (`K3S_URL`, `K3S_TOKEN`), behind a proxy; `airlock install --root` and
//! `airlock join --root` install the same bundle for the same answers. Compared: paths,
//! kinds, modes, links, the binary's bytes, the units directive for directive, the env
//! files variable for variable, the `systemctl` calls, and what each tree's own
//! uninstall script leaves behind. Paths only Airlock has must be one of
//! [`K3S_INTENDED`], scripts with Airlock's own content one of [`K3S_OWN_SCRIPTS`],
//! each listed with its reason in `docs/distribution.md`.

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
use airlock_tests::{airlock_with_answers, build_demo_bundle, is_root, require_tool, skip_or_fail, workspace_root};

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

/// Directories that exist on any host before an install (made here for the chroot);
/// a systemd host has the wants directory of its default target.
const HOST_DIRS: &[&str] = &[
    "/etc",
    "/etc/systemd",
    "/etc/systemd/system",
    "/etc/systemd/system/multi-user.target.wants",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
    "/opt",
];

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

// ------------------------------------------------------------------------------ K3s

/// What Airlock lays down for K3s beyond `install.sh`, by path prefix, and why (the
/// same list, with the same reasons, is in docs/distribution.md).
const K3S_INTENDED: &[(&str, &str)] = &[
    (
        "/etc/rancher",
        "config.yaml (and registries.yaml) from the answers: install.sh leaves the config to the operator and keeps K3S_URL/K3S_TOKEN in the env file",
    ),
    ("/etc/airlock", "the bundle signer's public key and the site's PKI"),
    (
        "/var/lib/airlock",
        "Airlock's state: journal, inventory and uninstall list, the release kept for rollback, the 0600 secrets",
    ),
    (
        "/var/lib/rancher",
        "the data directory made ahead, with the bundle's images and the HelmChart manifests of its charts",
    ),
    (
        "/etc/systemd/system/multi-user.target.wants",
        "the enablement link: install.sh has `systemctl enable` make it (the test checks it enables the same unit)",
    ),
];

/// Files both lay down whose bytes differ by design, and why; the test compares what
/// they do instead (the same list is in docs/distribution.md).
const K3S_OWN_SCRIPTS: &[(&str, &str)] = &[
    (
        "/usr/local/bin/k3s-killall.sh",
        "Airlock's own script for the same job: stop the unit, kill the shims, unmount, remove the CNI's devices and rules",
    ),
    (
        "/usr/local/bin/k3s-uninstall.sh",
        "Airlock's own script: removes what the install recorded, each file only while it is what Airlock wrote",
    ),
    ("/usr/local/bin/k3s-agent-uninstall.sh", "as k3s-uninstall.sh, on agents"),
];

/// The only tools on the chroot's `PATH` (`/stub`, linked to the host's): a host's
/// own `kubectl` or `ctr` (containerd's, on a test machine) stays out of sight, as on
/// a fresh node, where `install.sh` links them. `ip` and the iptables tools change only
/// the throwaway network namespace; `ps` finds no process (the chroot has no `/proc`),
/// so the killall scripts kill nothing here.
const K3S_SCRIPT_TOOLS: &str = "sh sed grep tee touch rm chmod chown mv ln id sha256sum cat mkdir expr basename uname \
     ls cut readlink rmdir sort xargs awk ps umount sleep env ip iptables-save iptables-restore ip6tables-save \
     ip6tables-restore";

/// What K3s leaves in a node's network, made in the throwaway namespace before a
/// killall script runs: flannel's and kube-proxy's devices, the CNI bridge with a
/// pod's end on it, their iptables rules; and the host's own device and rules, which
/// must stay. (Pairs of veth devices stand in for flannel's vxlan and kube-proxy's
/// dummy device: deleting one end deletes both.)
const K3S_NETWORK: &str = r#"set -e
ip link add cni0 type bridge
ip link add veth-pod type veth peer name eth-pod
ip link set veth-pod master cni0
ip link add flannel.1 type veth peer name flannel-peer
ip link add kube-ipvs0 type veth peer name ipvs-peer
ip link add host0 type veth peer name host1
iptables -N KUBE-SERVICES
iptables -A INPUT -j KUBE-SERVICES
iptables -N CNI-FORWARD
iptables -A FORWARD -j CNI-FORWARD
iptables -A FORWARD -s 10.42.0.0/16 -m comment --comment "flannel forward" -j ACCEPT
iptables -A INPUT -s 192.0.2.1/32 -j ACCEPT
ip6tables -N KUBE-FIREWALL
ip6tables -A INPUT -j KUBE-FIREWALL
ip6tables -A INPUT -s 2001:db8::1/128 -j ACCEPT
"#;

/// After a killall script, the namespace's devices and rules, one per line, sorted.
const K3S_NETWORK_STATE: &str = r#"echo '--- network'
ip -o link show | cut -d: -f2 | sed 's/@.*//; s/^ *//'
iptables-save | grep -e '^-' -e '^:' | sed 's/ \[.*//'
ip6tables-save | grep -e '^-' -e '^:' | sed 's/ \[.*//'
"#;

/// Where the server's operator has a kubectl of their own, on `PATH` before install.
const OPERATORS_KUBECTL: &str = "/usr/local/sbin/kubectl";

/// A STAND-IN for `systemctl`: records each call in `/stub/systemctl.log`, changes nothing.
const SYSTEMCTL_STAND_IN: &str =
    "#!/bin/sh\n# STAND-IN for systemctl: records the call, changes nothing.\necho \"$*\" >>/stub/systemctl.log\n";

/// The proxy of the site, as answers and as `install.sh`'s caller has it.
const PROXY: &[(&str, &str, &str)] = &[
    ("http_proxy", "HTTP_PROXY", "http://proxy.example.internal:3128"),
    ("https_proxy", "HTTPS_PROXY", "http://proxy.example.internal:3128"),
    ("no_proxy", "NO_PROXY", "127.0.0.1,localhost,.svc,.cluster.local,10.42.0.0/16,10.43.0.0/16"),
    ("containerd_http_proxy", "CONTAINERD_HTTP_PROXY", "http://images-proxy.example.internal:3128"),
    ("containerd_https_proxy", "CONTAINERD_HTTPS_PROXY", "http://images-proxy.example.internal:3128"),
    ("containerd_no_proxy", "CONTAINERD_NO_PROXY", "127.0.0.1,localhost,.svc"),
];

/// Runs `argv` chrooted into `root`, in a private mount and network namespace, with
/// `env` and the `/stub` tools as its only `PATH`. Returns the output and the calls the
/// `systemctl` stand-in recorded; the tree is left as the command left it.
fn k3s_in_chroot(
    root: &Path,
    network: &str,
    argv: &[&str],
    env: &[(&str, &str)],
) -> Option<(std::process::Output, Vec<String>)> {
    let unshare = require_tool("unshare")?;
    let chroot = require_tool("chroot")?;
    require_tool("ip")?;
    require_tool("iptables-save")?;
    if !is_root() {
        return skip_or_fail("bind mounts and chroot for K3s' install.sh need root");
    }
    for d in HOST_DIRS {
        fs::create_dir_all(root.join(&d[1..])).unwrap();
    }
    fs::create_dir_all(root.join("tmp")).unwrap();
    let stub = root.join("stub");
    fs::create_dir_all(&stub).unwrap();
    for tool in K3S_SCRIPT_TOOLS.split_whitespace() {
        if let Some(host) =
            ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(host, stub.join(tool)).unwrap();
        }
    }
    write(&stub.join("systemctl"), SYSTEMCTL_STAND_IN, 0o755);
    // Any host has its users and groups (install.sh's `chown root:root` looks them up).
    let accounts: Vec<PathBuf> = [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")]
        .iter()
        .filter(|(f, _)| !root.join(f).exists())
        .map(|(f, text)| {
            write(&root.join(f), text, 0o644);
            root.join(f)
        })
        .collect();
    let setup = r#"set -e
root=$1; chroot=$2; network=$3; n=$4; shift 4
sh -c "$network"
for d in "$@"; do
    [ "$n" -gt 0 ] || break
    n=$((n - 1)); shift
    if [ -L "/$d" ]; then
        ln -s "$(readlink "/$d")" "$root/$d"
    elif [ -d "/$d" ]; then
        mkdir -p "$root/$d"
        if [ "$d" = dev ]; then mount --rbind /dev "$root/dev"; else mount --rbind -o ro "/$d" "$root/$d"; fi
    fi
done
exec "$chroot" "$root" /usr/bin/env -i PATH=/stub:/usr/local/sbin:/usr/local/bin "$@"
"#;
    let out = Command::new(unshare)
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c", setup, "sh"])
        .arg(root)
        .arg(chroot)
        .arg(network)
        .arg(TOOLS.len().to_string())
        .args(TOOLS)
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let calls = fs::read_to_string(stub.join("systemctl.log")).unwrap_or_default().lines().map(String::from).collect();
    fs::remove_dir_all(&stub).unwrap();
    for f in accounts {
        fs::remove_file(f).unwrap();
    }
    // What the setup added for the run (the mounts went with the namespace).
    for d in TOOLS.iter().rev().chain(["tmp"].iter()) {
        let p = root.join(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => fs::remove_file(&p).unwrap(),
            Ok(_) => fs::remove_dir(&p).unwrap(),
            Err(_) => {}
        }
    }
    Some((out, calls))
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A unit's directives in order, section by section: comments dropped, continuation
/// lines joined, runs of blanks made one, as systemd reads them.
fn unit_directives(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let joined = format!("{pending}{line}");
        if let Some(head) = joined.strip_suffix('\\') {
            pending = format!("{head} ");
            continue;
        }
        pending.clear();
        let line = joined.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        out.push(format!("{section} {line}"));
    }
    out
}

/// An environment file's variables, quotes removed as systemd removes them.
fn env_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not a variable: {l}"));
            let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v);
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn file_text(tree: &BTreeMap<PathBuf, Entry>, path: &str) -> String {
    match tree.get(Path::new(path)) {
        Some(Entry::File(_, bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{path}: not a file: {other:?}"),
    }
}

/// Compares Airlock's K3s tree with the official one: every path `install.sh` lays
/// down with the same kind, mode and link target; the binary byte for byte, the unit
/// directive for directive, the env file variable for variable (`K3S_URL` and
/// `K3S_TOKEN` against config.yaml's `server` and `token`); the scripts named in
/// [`K3S_OWN_SCRIPTS`] by what they do (elsewhere). Paths only Airlock has must be
/// [`K3S_INTENDED`].
fn compare_k3s(official: &BTreeMap<PathBuf, Entry>, airlock: &BTreeMap<PathBuf, Entry>, unit: &str) -> Vec<String> {
    let env_path = format!("/etc/systemd/system/{unit}.env");
    let unit_path = format!("/etc/systemd/system/{unit}");
    let mut problems = Vec::new();
    for (path, want) in official {
        let p = path.to_str().unwrap();
        let Some(got) = airlock.get(path) else {
            problems.push(format!("{p}: laid by install.sh ({}), missing in airlock's tree", show(want)));
            continue;
        };
        match (want, got) {
            (Entry::File(wm, wb), Entry::File(gm, gb)) => {
                if wm != gm {
                    problems.push(format!("{p}: install.sh lays it {wm:04o}, airlock {gm:04o}"));
                } else if p == unit_path {
                    let (w, g) =
                        (unit_directives(&String::from_utf8_lossy(wb)), unit_directives(&String::from_utf8_lossy(gb)));
                    if w != g {
                        problems.push(format!("{p}: the directives differ:\ninstall.sh: {w:#?}\nairlock:    {g:#?}"));
                    }
                } else if p == env_path {
                    let config: serde_yaml::Value =
                        serde_yaml::from_str(&file_text(airlock, "/etc/rancher/k3s/config.yaml")).unwrap();
                    let mut want = env_vars(&String::from_utf8_lossy(wb));
                    let got = env_vars(&String::from_utf8_lossy(gb));
                    // install.sh keeps the join in the env file, Airlock in config.yaml.
                    for (var, key) in [("K3S_URL", "server"), ("K3S_TOKEN", "token")] {
                        if let Some(value) = want.remove(var) {
                            if config.get(key).and_then(|v| v.as_str()) != Some(value.as_str()) {
                                problems.push(format!("{p}: {var} is not config.yaml's `{key}`"));
                            }
                        }
                    }
                    if want != got {
                        problems.push(format!("{p}: the variables differ: install.sh {want:?}, airlock {got:?}"));
                    }
                } else if !K3S_OWN_SCRIPTS.iter().any(|(s, _)| *s == p) && wb != gb {
                    problems.push(format!("{p}: the bytes differ ({} vs {} bytes)", wb.len(), gb.len()));
                }
            }
            (w, g) if w != g => problems.push(format!("{p}: install.sh lays {}, airlock {}", show(w), show(g))),
            _ => {}
        }
    }
    for path in airlock.keys().filter(|p| !official.contains_key(*p)) {
        if !K3S_INTENDED.iter().any(|(prefix, _)| path.starts_with(prefix)) {
            problems.push(format!("{}: laid by airlock only, and not an intended difference", path.display()));
        }
    }
    problems
}

/// The devices and rules [`K3S_NETWORK_STATE`] printed, sorted.
fn network_state(role: &str, out: &std::process::Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some((_, state)) = stdout.split_once("--- network\n") else {
        panic!("{role}: the network setup or killall run failed:\n{}", text(out))
    };
    let mut lines: Vec<String> = state.lines().map(String::from).collect();
    lines.sort();
    lines
}

/// `systemctl` calls without the `.service` suffix, which both spellings mean.
fn normalized_calls(calls: &[String]) -> Vec<String> {
    let mut v: Vec<String> = calls.iter().map(|c| c.replace(".service", "")).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn distribution_k3s_server_and_agent_trees_match_the_official_install_sh_but_for_the_documented_differences() {
    let d = tempfile::tempdir().unwrap();
    let doc = fs::read_to_string(workspace_root().join("docs/distribution.md")).unwrap();
    for (path, _) in K3S_INTENDED.iter().chain(K3S_OWN_SCRIPTS) {
        assert!(doc.contains(&format!("`{path}`")), "docs/distribution.md does not list `{path}`");
    }
    let bundle = build_demo_bundle(d.path(), &[]);
    let stand_in = workspace_root().join("examples/demo/dist/k3s");
    assert!(fs::read_to_string(&stand_in).unwrap().contains("STAND-IN"), "the demo's k3s is a stand-in");
    let proxy_answers: String =
        PROXY.iter().fold("proxy:\n".to_string(), |s, (key, _, value)| format!("{s}  {key}: \"{value}\"\n"));
    let proxy_env: Vec<(&str, &str)> = PROXY.iter().map(|(_, var, value)| (*var, *value)).collect();

    // The server: the demo's answers, with a proxy.
    let answers = d.path().join("server.yaml");
    let demo_answers = fs::read_to_string(workspace_root().join("examples/demo/answers.yaml")).unwrap();
    fs::write(&answers, format!("{demo_answers}{proxy_answers}")).unwrap();
    let server = d.path().join("airlock-server");
    // The server already has the operator's own kubectl on PATH: both leave it the
    // one that runs, and link only crictl and ctr.
    write(&server.join(&OPERATORS_KUBECTL[1..]), "#!/bin/sh\n# the operator's own kubectl\n", 0o755);
    let o = airlock_with_answers("install", &bundle, &answers, &server, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let token = fs::read_to_string(server.join("var/lib/airlock/secrets/cluster-token")).unwrap().trim().to_string();

    // The agent joins it with that token, its join in the answers.
    let agent_answers = d.path().join("agent.yaml");
    fs::write(
        &agent_answers,
        format!(
            "profile: ha\ncluster:\n  ingress_domain: platform.example.test\nha:\n  servers:\n    - {{name: s1, ip: 192.0.2.11}}\n\
             \x20   - {{name: s2, ip: 192.0.2.12}}\n    - {{name: s3, ip: 192.0.2.13}}\n  agents:\n    - {{name: w1, ip: 192.0.2.21}}\n\
             node:\n  name: w1\n  ip: 192.0.2.21\n  role: agent\njoin:\n  server: 192.0.2.11\n  token_file: /root/cluster-token\n{proxy_answers}"
        ),
    )
    .unwrap();
    let agent = d.path().join("airlock-agent");
    write(&agent.join("root/cluster-token"), &format!("{token}\n"), 0o600);
    let o = airlock_with_answers("join", &bundle, &agent_answers, &agent, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    // The operator's copy of the token is the test's, not the install's.
    fs::remove_dir_all(agent.join("root")).unwrap();

    let url = "https://192.0.2.11:6443".to_string();
    let cases = [
        ("server", &server, "k3s.service", "/usr/local/bin/k3s-uninstall.sh", vec![], true),
        (
            "agent",
            &agent,
            "k3s-agent.service",
            "/usr/local/bin/k3s-agent-uninstall.sh",
            vec![("K3S_URL", url.as_str()), ("K3S_TOKEN", token.as_str())],
            false,
        ),
    ];
    let mut problems = Vec::new();
    for (role, airlock_root, unit, uninstall, join_env, operators_kubectl) in cases {
        // The official install.sh, offline: the stand-in binary where the air-gap docs
        // put it, no download, nothing started (Airlock's --root starts nothing either).
        let official_root = d.path().join(format!("official-{role}"));
        fs::create_dir_all(official_root.join("usr/local/bin")).unwrap();
        fs::copy(&stand_in, official_root.join("usr/local/bin/k3s")).unwrap();
        fs::set_permissions(official_root.join("usr/local/bin/k3s"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(workspace_root().join("tests/official/k3s-install.sh"), official_root.join("install.sh")).unwrap();
        if operators_kubectl {
            fs::create_dir_all(official_root.join("usr/local/sbin")).unwrap();
            fs::copy(airlock_root.join(&OPERATORS_KUBECTL[1..]), official_root.join(&OPERATORS_KUBECTL[1..])).unwrap();
        }
        let mut env = vec![("INSTALL_K3S_SKIP_DOWNLOAD", "true"), ("INSTALL_K3S_SKIP_START", "true")];
        env.extend(join_env.iter().copied());
        env.extend(proxy_env.iter().copied());
        let Some((out, install_calls)) = k3s_in_chroot(&official_root, "", &["/bin/sh", "/install.sh"], &env) else {
            return;
        };
        fs::remove_file(official_root.join("install.sh")).unwrap();
        assert!(out.status.success(), "{role}: install.sh failed:\n{}", text(&out));
        let official = tree_of(&official_root);
        let airlock = tree_of(airlock_root);
        assert!(official.contains_key(Path::new(&format!("/etc/systemd/system/{unit}"))), "{role}: {official:#?}");
        problems.extend(compare_k3s(&official, &airlock, unit).into_iter().map(|p| format!("{role}: {p}")));
        let kubectl_link = Path::new("/usr/local/bin/kubectl");
        assert_eq!(official.contains_key(kubectl_link), !operators_kubectl, "{role}: install.sh's kubectl link");
        // What install.sh has systemctl enable, Airlock links (under --root nothing runs).
        for call in &install_calls {
            if let Some(unit_file) = call.strip_prefix("enable ") {
                let name = Path::new(unit_file).file_name().unwrap().to_str().unwrap();
                let link = PathBuf::from(format!("/etc/systemd/system/multi-user.target.wants/{name}"));
                if airlock.get(&link) != Some(&Entry::Link(PathBuf::from(unit_file))) {
                    problems.push(format!(
                        "{role}: install.sh enables {unit_file}; airlock's {} is {:?}",
                        link.display(),
                        airlock.get(&link)
                    ));
                }
            }
        }
        assert!(
            install_calls.iter().any(|c| c.starts_with("enable ")),
            "{role}: install.sh enabled nothing: {install_calls:?}"
        );

        // The killall scripts, each on its own tree and in a network K3s ran in: both
        // leave the same devices and rules (the host's own), and stop the same unit.
        let killall = "/usr/local/bin/k3s-killall.sh";
        let after_killall = format!("{killall} >/dev/null 2>&1; {K3S_NETWORK_STATE}");
        let argv = ["/bin/sh", "-c", after_killall.as_str()];
        let Some((out, official_calls)) = k3s_in_chroot(&official_root, K3S_NETWORK, &argv, &[]) else { return };
        let official_net = network_state(role, &out);
        let Some((out, airlock_calls)) = k3s_in_chroot(airlock_root, K3S_NETWORK, &argv, &[]) else { return };
        let airlock_net = network_state(role, &out);
        for (left, gone) in [("host0", "cni0"), ("-A INPUT -s 192.0.2.1/32 -j ACCEPT", ":KUBE-SERVICES -")] {
            assert!(
                official_net.iter().any(|l| l == left) && !official_net.iter().any(|l| l == gone),
                "{role}: install.sh's killall left {official_net:?}"
            );
        }
        if official_net != airlock_net {
            problems.push(format!(
                "{role}: after {killall}, install.sh's leaves {official_net:?}, airlock's {airlock_net:?}"
            ));
        }
        let (official_calls, airlock_calls) = (normalized_calls(&official_calls), normalized_calls(&airlock_calls));
        if official_calls != airlock_calls {
            problems.push(format!(
                "{role}: {killall} calls systemctl {official_calls:?} officially, {airlock_calls:?} in airlock's"
            ));
        }

        // The uninstall scripts, each on its own tree: both leave the same (nothing
        // but the host's directories), and stop, disable and reload the same unit.
        let Some((out, official_calls)) = k3s_in_chroot(&official_root, "", &[uninstall], &[]) else { return };
        assert!(out.status.success(), "{role}: install.sh's {uninstall} failed:\n{}", text(&out));
        let Some((out, airlock_calls)) = k3s_in_chroot(airlock_root, "", &[uninstall], &[]) else { return };
        assert!(out.status.success(), "{role}: airlock's {uninstall} failed:\n{}", text(&out));
        let (left_official, left_airlock) = (tree_of(&official_root), tree_of(airlock_root));
        if left_official != left_airlock {
            problems.push(format!(
                "{role}: after {uninstall}, install.sh's tree keeps {:?}, airlock's {:?}\n{}",
                left_official.keys().collect::<Vec<_>>(),
                left_airlock.keys().collect::<Vec<_>>(),
                text(&out)
            ));
        }
        let (official_calls, airlock_calls) = (normalized_calls(&official_calls), normalized_calls(&airlock_calls));
        if official_calls != airlock_calls {
            problems.push(format!(
                "{role}: {uninstall} calls systemctl {official_calls:?} officially, {airlock_calls:?} in airlock's"
            ));
        }
    }
    assert!(problems.is_empty(), "the K3s trees differ:\n{}", problems.join("\n"));
}
