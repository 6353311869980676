//! `airlock uninstall` through the real binary: after installing the embedded example
//! into a root that already held files of others, uninstall leaves exactly those.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir};

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
    let edited = root.join("usr/local/bin/airlock-k3s-killall.sh");
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
    assert!(text(&o).contains("kept /usr/local/bin/airlock-k3s-killall.sh"), "{}", text(&o));
    let after = tree(&root);
    let mut want = before.clone();
    // Left: the edited script and K3s's runtime data (no --purge), with their directories.
    let left = [
        "usr/local/bin/airlock-k3s-killall.sh",
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
    std::fs::write(root.join("usr/local/bin/airlock-k3s-killall.sh"), "edited").unwrap();
    let o = airlock(&["uninstall", "--yes", "--purge", "--force"], &root);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tree(&root), before);
}
