//! `airlock uninstall` through the real binary: after installing the embedded example
//! into a root that already held files of others, uninstall leaves exactly those.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, is_root, require_tool, skip_or_fail};

fn airlock(args: &[&str], root: &Path) -> Output {
    Command::new(cargo_bin("airlock")).args(args).arg("--root").arg(root).stdin(Stdio::null()).output().unwrap()
}

fn install(bundle: &Path, root: &Path) {
    let o = Command::new(cargo_bin("airlock"))
        .arg("install")
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(demo_dir().join("answers.yaml"))
        .arg("--root")
        .arg(root)
        .arg("--yes")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every path under the root with its content (directories and links marked).
fn tree(root: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let what = if e.path_is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if e.file_type().is_dir() {
                "dir".to_string()
            } else {
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned()
            };
            (rel, what)
        })
        .collect()
}

/// Files of others in places the install also uses.
fn plant_others(root: &Path) {
    for (p, c) in [
        ("usr/local/bin/site-tool", "#!/bin/sh\n"),
        ("etc/rancher/site-notes.txt", "ours, not airlock's\n"),
        ("etc/systemd/system/site.service", "[Unit]\n"),
        ("var/lib/rancher/other/data", "x"),
    ] {
        std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        std::fs::write(root.join(p), c).unwrap();
    }
}

/// What K3s itself would have created while it ran.
fn plant_runtime(root: &Path) {
    for p in ["var/lib/rancher/k3s/server/db/state.db", "etc/rancher/k3s/k3s.yaml", "var/lib/kubelet/pods/x"] {
        std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        std::fs::write(root.join(p), "runtime").unwrap();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn uninstall_removes_exactly_what_the_install_placed_and_keeps_what_was_changed() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    plant_others(&root);
    let before = tree(&root);
    install(&b, &root);
    plant_runtime(&root);
    // The operator edited one of our scripts.
    let edited = root.join("usr/local/bin/k3s-killall.sh");
    std::fs::write(&edited, "#!/bin/sh\n# site change\n").unwrap();

    let installed = tree(&root);
    let dry = airlock(&["uninstall", "--dry-run"], &root);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("remove    /usr/local/bin/k3s") && text(&dry).contains("KEEP"), "{}", text(&dry));
    assert_eq!(tree(&root), installed, "a dry run changed the tree");
    let refused = airlock(&["uninstall"], &root);
    assert_eq!(refused.status.code(), Some(1), "no terminal, no --yes");
    assert_eq!(tree(&root), installed);

    let o = airlock(&["uninstall", "--yes"], &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("kept /usr/local/bin/k3s-killall.sh"), "{}", text(&o));
    let after = tree(&root);
    let mut want = before.clone();
    // Left: the edited script and K3s's runtime data (no --purge), with their directories.
    let left = [
        "usr/local/bin/k3s-killall.sh",
        "var/lib/rancher/k3s/server/db/state.db",
        "etc/rancher/k3s/k3s.yaml",
        "var/lib/kubelet/pods/x",
    ];
    for k in left {
        want.insert(k.into(), installed[k].clone());
        for dir in Path::new(k).ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            want.insert(dir.display().to_string(), "dir".into());
        }
    }
    assert_eq!(after, want);
    assert!(!root.join("var/lib/airlock").exists(), "the installer's state goes too");

    let again = airlock(&["uninstall", "--yes"], &root);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("no airlock install is recorded here") && text(&again).contains("hint:"));
}

#[test]
fn uninstall_with_purge_and_force_leaves_the_root_as_it_was_before_the_install() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    plant_others(&root);
    let before = tree(&root);
    install(&b, &root);
    plant_runtime(&root);
    std::fs::write(root.join("usr/local/bin/k3s-killall.sh"), "edited").unwrap();
    let o = airlock(&["uninstall", "--yes", "--purge", "--force"], &root);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tree(&root), before);
}

#[test]
fn uninstall_sweeps_the_temporary_files_a_killed_run_left_beside_ours_and_only_those() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    plant_others(&root);
    // A name like ours that is not ours (no pid and counter) is someone else's file.
    std::fs::write(root.join("etc/rancher/.site-notes.txt.tmp"), "theirs").unwrap();
    let before = tree(&root);
    install(&b, &root);
    // What a run killed while writing leaves: one half-written copy of the CA key.
    for (p, c) in [
        ("etc/airlock/pki/.ca.key.airlock-4242-3.tmp", "-----BEGIN PRIVATE KEY-----\nhalf"),
        ("etc/rancher/k3s/.config.yaml.airlock-4242-0.tmp", "token: half"),
    ] {
        std::fs::write(root.join(p), c).unwrap();
    }
    let o = airlock(&["uninstall", "--yes"], &root);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("2 leftover temporary files"), "{out}");
    for dir in ["/etc/airlock", "/etc/rancher/k3s "] {
        assert!(!out.contains(&format!("kept {dir}")), "a leftover kept {dir}: {out}");
    }
    assert_eq!(tree(&root), before, "{out}");
}

/// The cluster token the install generated, as kept in the root.
fn cluster_token(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/airlock/secrets/cluster-token")).unwrap().trim().to_string()
}

const CONFIG: &str = "etc/rancher/k3s/config.yaml";

#[test]
fn uninstall_keeps_an_edited_secret_bearing_config_says_so_and_force_removes_it() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    for force in [false, true] {
        let root = d.path().join(format!("root-{force}"));
        std::fs::create_dir_all(&root).unwrap();
        install(&b, &root);
        let token = cluster_token(&root);
        assert!(std::fs::read_to_string(root.join(CONFIG)).unwrap().contains(&token), "config.yaml carries the token");
        // The operator tunes the config, which carries the cluster token.
        let edited =
            format!("{}node-label:\n  - site=edited-by-ops\n", std::fs::read_to_string(root.join(CONFIG)).unwrap());
        std::fs::write(root.join(CONFIG), &edited).unwrap();

        let dry =
            airlock(if force { &["uninstall", "--dry-run", "--force"] } else { &["uninstall", "--dry-run"] }, &root);
        assert!(
            text(&dry)
                .contains("KEEP      /etc/rancher/k3s/config.yaml (changed since the install; --force removes it)")
                != force,
            "{}",
            text(&dry)
        );
        // Forced, the plan still names the edit that goes with the file.
        assert_eq!(
            text(&dry).contains(
                "remove    /etc/rancher/k3s/config.yaml (changed since the install; removed because of --force)"
            ),
            force,
            "{}",
            text(&dry)
        );
        let args: &[&str] = if force { &["uninstall", "--yes", "--force"] } else { &["uninstall", "--yes"] };
        let o = airlock(args, &root);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(!out.contains(&token) && !text(&dry).contains(&token), "the token was printed: {out}");
        assert!(!out.contains("edited-by-ops"), "the file's content was printed: {out}");
        let summary = out.lines().find(|l| l.starts_with("removed ")).unwrap_or_else(|| panic!("{out}"));
        let left: Vec<String> = tree(&root).into_keys().collect();
        if force {
            assert_eq!(left, Vec::<String>::new(), "{out}");
            assert!(
                summary.starts_with(&format!("removed the k3s install (k3s.service) from {}: ", root.display())),
                "{summary}"
            );
            assert!(!summary.contains("except") && !out.contains("kept "), "{out}");
            assert!(
                out.contains(
                    "  removed /etc/rancher/k3s/config.yaml although it was changed since the install (--force)"
                ),
                "{out}"
            );
        } else {
            assert_eq!(std::fs::read_to_string(root.join(CONFIG)).unwrap(), edited, "the edit is kept as it was");
            assert_eq!(left, ["etc", "etc/rancher", "etc/rancher/k3s", CONFIG], "{out}");
            assert!(
                summary.contains("except what is listed below") && summary.contains("left 1 file of ours"),
                "{summary}"
            );
            assert!(
                out.contains(&format!(
                    "  kept /etc/rancher/k3s/config.yaml (changed since the install; it may hold the site's secrets: \
                     remove it by hand if it is not wanted, rm {}/etc/rancher/k3s/config.yaml)",
                    root.display()
                )),
                "{out}"
            );
            // Every directory named as kept is really there, for the reason given;
            // `/var/lib` emptied once the installer's state went, so it went too.
            assert!(out.contains("  kept /etc/rancher/k3s (not empty: holds files of ours kept above)"), "{out}");
            assert!(!out.contains("kept /var") && !out.contains("not airlock's"), "{out}");
            for l in out.lines().filter(|l| l.starts_with("  kept ")) {
                let path = l["  kept ".len()..].split(' ').next().unwrap();
                assert!(root.join(path.trim_start_matches('/')).exists(), "reported kept but gone: {l}");
            }
        }
    }
}

#[test]
fn an_inventory_of_an_earlier_release_without_secret_digests_keeps_those_files_unless_forced() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    install(&b, &root);
    // What an earlier airlock wrote: secret-bearing files with no digest at all.
    let path = root.join("var/lib/airlock/installed.json");
    let mut inv: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for f in inv["files"].as_array_mut().unwrap() {
        if f.as_object_mut().unwrap().remove("hmac_sha256").is_some() {
            assert!(f["sha256"].is_null());
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&inv).unwrap()).unwrap();

    let status = airlock(&["status"], &root);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        text(&status).contains("/etc/rancher/k3s/config.yaml was not checked for changes: recorded without a digest"),
        "{}",
        text(&status)
    );
    let o = airlock(&["uninstall", "--yes"], &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "  kept /etc/rancher/k3s/config.yaml (recorded without a digest by an earlier airlock, so an edit cannot \
             be ruled out; it may hold the site's secrets: remove it by hand if it is not wanted, rm "
        ),
        "{}",
        text(&o)
    );
    assert!(root.join(CONFIG).exists());
}

/// Host directories the chroot below needs for the script's tools (sh, coreutils,
/// openssl, ip): bound read-only into the root for the run, removed after.
const CHROOT_TOOLS: &[&str] = &[
    "bin",
    "sbin",
    "lib",
    "lib64",
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib64",
    "etc/ssl",
    "etc/alternatives",
    "dev",
];

/// Runs the K3s uninstall script an install wrote into `root` as on the node: chrooted
/// into the root, inside a private mount and network namespace (`unshare -m -n`), so
/// neither the bind mounts nor what its killall does to mounts, links and iptables can
/// reach this machine. `None` when it cannot run here (not root).
fn run_uninstall_script(root: &Path, script: &str) -> Option<Output> {
    let unshare = require_tool("unshare")?;
    if !is_root() {
        return skip_or_fail("bind mounts and chroot for the uninstall script need root");
    }
    let setup = r#"set -e
root=$1; shift
for d in "$@"; do
    if [ -L "/$d" ]; then
        mkdir -p "$root/$(dirname "$d")"
        ln -s "$(readlink "/$d")" "$root/$d"
    elif [ -d "/$d" ]; then
        mkdir -p "$root/$d"
        # /dev stays writable (/dev/null); the tools are read-only.
        if [ "$d" = dev ]; then mount --rbind /dev "$root/dev"; else mount --rbind -o ro "/$d" "$root/$d"; fi
    fi
done
exec chroot "$root" /bin/sh "$SCRIPT"
"#;
    let out = Command::new(unshare)
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c", setup, "sh"])
        .arg(root)
        .args(CHROOT_TOOLS)
        .env("SCRIPT", script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The mount points and links the setup made (the mounts went with the namespace).
    for d in CHROOT_TOOLS.iter().rev() {
        let p = root.join(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&p).unwrap(),
            Ok(_) => std::fs::remove_dir(&p).unwrap(),
            Err(_) => {}
        }
    }
    for d in ["usr/lib", "etc"] {
        let _ = std::fs::remove_dir(root.join(d));
    }
    Some(out)
}

/// K3s' documented `k3s-uninstall.sh`, run on the node, leaves the same tree as
/// `airlock uninstall`: every file, link and directory airlock installed goes (the PKI,
/// the platform's Secrets and the state included), what was changed stays — an edited
/// secret-bearing config (its keyed digest differs) and a `kubectl` the operator
/// replaced with a file of their own (only our own links are removed).
#[test]
fn distribution_k3s_uninstall_script_removes_what_airlock_uninstall_removes() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let change = |root: &Path| {
        plant_others(root);
        install(&b, root);
        plant_runtime(root);
        std::fs::write(root.join("etc/rancher/k3s/config.yaml"), "token: edited on site\n").unwrap();
        let kubectl = root.join("usr/local/bin/kubectl");
        std::fs::remove_file(&kubectl).unwrap();
        std::fs::write(&kubectl, "#!/bin/sh\n# the site's own kubectl\n").unwrap();
    };
    let by_airlock = d.path().join("by-airlock");
    change(&by_airlock);
    let o = airlock(&["uninstall", "--yes"], &by_airlock);
    assert!(o.status.success(), "{}", text(&o));

    let by_script = d.path().join("by-script");
    change(&by_script);
    assert!(by_script.join("var/lib/airlock/uninstall.list").is_file());
    let Some(o) = run_uninstall_script(&by_script, "/usr/local/bin/k3s-uninstall.sh") else { return };
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("kept /etc/rancher/k3s/config.yaml: changed since the install"), "{stderr}");
    assert!(stderr.contains("1 file(s) kept"), "{stderr}");

    let paths = |root: &Path| tree(root).into_keys().collect::<Vec<_>>();
    assert_eq!(paths(&by_script), paths(&by_airlock));
    assert_eq!(tree(&by_airlock)["usr/local/bin/kubectl"], "#!/bin/sh\n# the site's own kubectl\n");
    let left = tree(&by_script);
    assert_eq!(left["usr/local/bin/kubectl"], "#!/bin/sh\n# the site's own kubectl\n");
    assert_eq!(left["etc/rancher/k3s/config.yaml"], "token: edited on site\n");
    assert!(!by_script.join("etc/airlock").exists() && !by_script.join("var/lib/airlock").exists());
}
