//! `airlock preflight` and the preflight every `airlock install` runs, through the real
//! binary on the embedded example: a failing check blocks the install before any
//! change, an override by name lets it through and is journaled.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir};

fn airlock(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(cargo_bin("airlock")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn common(cmd: &str, bundle: &Path, root: &Path) -> Vec<std::ffi::OsString> {
    let demo = demo_dir();
    vec![
        cmd.into(),
        bundle.into(),
        "--pubkey".into(),
        demo.join("keys/demo.pub").into(),
        "--answers".into(),
        demo.join("answers.yaml").into(),
        "--root".into(),
        root.into(),
    ]
}

fn run(cmd: &str, bundle: &Path, root: &Path, extra: &[&str]) -> Output {
    let mut args = common(cmd, bundle, root);
    args.extend(extra.iter().map(|s| s.into()));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    airlock(&refs)
}

/// Leftovers of an RKE2 install: what a preflight must not let a K3s install mix with.
fn plant_foreign_install(root: &Path) -> PathBuf {
    let bin = root.join("usr/local/bin/rke2");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "leftover\n").unwrap();
    bin
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn preflight_reports_every_check_as_json_and_exits_8_when_one_fails() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();

    let ok = run("preflight", &b, &root, &["--output", "json"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let r: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(r["mode"], "install");
    assert_eq!(r["distribution"], "k3s");
    let status = |r: &serde_json::Value, id: &str| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status(&r, "existing-install").as_deref(), Some("pass"));
    // A target root has no /proc: what only the node can tell is skipped, not guessed.
    assert_eq!(status(&r, "memory").as_deref(), Some("skipped"));
    assert!(r["checks"].as_array().unwrap().len() >= 18);

    plant_foreign_install(&root);
    let bad = run("preflight", &b, &root, &["--output", "json"]);
    assert_eq!(bad.status.code(), Some(8), "{}", text(&bad));
    let r: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(r["overall"], "fail");
    let c = r["checks"].as_array().unwrap().iter().find(|c| c["id"] == "existing-install").unwrap();
    assert_eq!(c["status"], "fail");
    assert!(c["detail"].as_str().unwrap().contains("/usr/local/bin/rke2"), "{c}");
    assert!(c["hint"].as_str().unwrap().contains("rke2-uninstall.sh"), "{c}");

    // Text: the failure, its fix, and a summary line.
    let t = run("preflight", &b, &root, &[]);
    assert_eq!(t.status.code(), Some(8));
    let out = String::from_utf8_lossy(&t.stdout);
    assert!(out.contains("FAIL       existing-install") && out.contains("hint:") && out.contains("1 failed"), "{out}");

    let unknown = run("preflight", &b, &root, &["--override", "no-such-check"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("no-such-check") && text(&unknown).contains("hint:"), "{}", text(&unknown));
}

#[test]
fn a_failing_preflight_blocks_the_install_until_overridden_by_name_and_the_override_is_journaled() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    plant_foreign_install(&root);

    let refused = run("install", &b, &root, &["--yes"]);
    assert_eq!(refused.status.code(), Some(8), "{}", text(&refused));
    assert!(text(&refused).contains("--override existing-install"), "{}", text(&refused));
    // Nothing but staging was touched.
    assert!(!root.join("etc").exists() && !root.join("usr/local/bin/k3s").exists());
    assert!(!root.join("var/lib/airlock/journal.json").exists());
    // --check says so too, without changing anything.
    assert_eq!(run("install", &b, &root, &["--check"]).status.code(), Some(8));

    let done = run("install", &b, &root, &["--yes", "--override", "existing-install"]);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done));
    assert!(String::from_utf8_lossy(&done.stdout).contains("overridden existing-install"), "{}", text(&done));
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/journal.json")).unwrap()).unwrap();
    let o = &journal["preflight_overrides"][0];
    assert_eq!(o["id"], "existing-install");
    assert_eq!(o["applied"], true);
    assert_eq!(o["status_before"], "fail");
    assert!(o["detail"].as_str().unwrap().contains("rke2"), "{o}");
    assert!(root.join("usr/local/bin/k3s").exists());

    // The foreign install is still there: a re-run without the override stops again,
    // even though airlock's own K3s is now in place too.
    assert_eq!(run("install", &b, &root, &["--yes"]).status.code(), Some(8));
}

#[test]
fn preflight_without_answers_checks_the_answers_the_site_kept() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let bare = |root: &Path| {
        let mut args: Vec<std::ffi::OsString> = vec!["preflight".into(), b.clone().into(), "--pubkey".into()];
        args.extend([demo_dir().join("keys/demo.pub").into(), "--root".into(), root.into()]);
        args.extend(["--mode".into(), "upgrade".into(), "--output".into(), "json".into()]);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        airlock(&refs)
    };
    // Nothing kept yet: the bundle's two profiles leave the choice to the operator.
    let o = bare(&root);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the bundle has several profiles and none was chosen"), "{}", text(&o));

    let o = run("install", &b, &root, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = bare(&root);
    let kept = root.join("var/lib/airlock/answers.yaml");
    assert!(
        text(&o).contains(&format!("note: no --answers given: using the site's kept answers, {}", kept.display())),
        "{}",
        text(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(report["profile"], "single-node", "{report:#}");
}
