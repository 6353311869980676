//! `airlock install` of the embedded example into a target root, through the real
//! binaries: the tree matches the golden listing, the token never shows, a crash after
//! any step resumes to the same tree, and the image archive laid into the images
//! directory imports into real containerd.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::tree::installed_tree as tree;
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, workspace_root, Containerd};

fn demo() -> PathBuf {
    demo_dir()
}

fn bundle(dir: &Path) -> PathBuf {
    build_demo_bundle(dir, &[])
}

fn install(bundle: &Path, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cargo_bin("airlock"));
    c.arg("install")
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo().join("keys/demo.pub"))
        .arg("--answers")
        .arg(demo().join("answers.yaml"))
        .arg("--root")
        .arg(root)
        .args(extra)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn render(t: &BTreeMap<String, String>) -> String {
    t.iter().map(|(p, w)| format!("{p}  {w}\n")).collect()
}

#[test]
fn demo_installs_into_a_root_matching_the_golden_tree_and_a_second_run_has_nothing_pending() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let dry = install(&b, &root, &["--dry-run", "--output", "json"], &[]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    // A dry run changes nothing under the root (site_lock.rs pins it byte for byte).
    assert!(!root.join("etc").exists() && !root.join("usr").exists());
    let out = install(&b, &root, &["--yes"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let got = render(&tree(&root));
    let golden = workspace_root().join("tests/golden/demo-install.txt");
    if std::env::var("AIRLOCK_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (AIRLOCK_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(got, want, "installed tree differs from tests/golden/demo-install.txt");

    // The token is in its 0600 file and the config, and nowhere the operator sees.
    let token = std::fs::read_to_string(root.join("var/lib/airlock/secrets/cluster-token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    let cfg = std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap();
    assert!(cfg.contains(token.trim()) && cfg.contains("disable-default-registry-endpoint: true"));
    assert_eq!(
        std::fs::metadata(root.join("etc/rancher/k3s/config.yaml")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let journal = std::fs::read_to_string(root.join("var/lib/airlock/journal.json")).unwrap();
    for text in
        [String::from_utf8_lossy(&dry.stdout).to_string(), String::from_utf8_lossy(&out.stdout).to_string(), journal]
    {
        assert!(!text.contains(token.trim()), "the token leaked");
    }

    let check = install(&b, &root, &["--check"], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let again = install(&b, &root, &["--yes"], &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 steps applied"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(render(&tree(&root)), want, "a second run changed the tree");
}

#[test]
fn install_resumes_after_a_crash_at_each_step_to_the_same_tree() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let clean = d.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    assert!(install(&b, &clean, &["--yes"], &[]).status.success());
    std::fs::create_dir(d.path().join("fresh")).unwrap();
    let plan = install(&b, &d.path().join("fresh"), &["--dry-run", "--output", "json"], &[]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let ids: Vec<String> =
        plan["plan"]["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.len() > 10, "{ids:?}");
    let mut want = tree(&clean);
    want.remove("/var/lib/airlock/secrets/cluster-token");
    for (i, id) in ids.iter().enumerate() {
        let root = d.path().join(format!("crash-{i}"));
        std::fs::create_dir(&root).unwrap();
        let crashed = install(&b, &root, &["--yes"], &[("AIRLOCK_TEST_CRASH_AFTER", id)]);
        assert!(!crashed.status.success(), "no crash after {id}");
        let resumed = install(&b, &root, &["--yes"], &[]);
        assert!(resumed.status.success(), "resume after {id}: {}", String::from_utf8_lossy(&resumed.stderr));
        // Steps up to the crash were not applied again.
        let journal: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/journal.json")).unwrap()).unwrap();
        let text = journal.to_string();
        assert!(text.contains(id.as_str()));
        let applied = String::from_utf8_lossy(&resumed.stdout).to_string();
        let left = ids.len() - i - 1;
        let steps = if left == 1 { "step" } else { "steps" };
        assert!(applied.contains(&format!("{left} {steps} applied")), "after {id}: {applied}");
        let mut got = tree(&root);
        got.remove("/var/lib/airlock/secrets/cluster-token");
        assert_eq!(got, want, "tree after crash at {id} and resume differs");
    }
}

#[test]
fn containerd_imports_the_image_archive_the_install_lays_down() {
    let Some(containerd) = Containerd::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    assert!(install(&b, &root, &["--yes"], &[]).status.success());
    let names = containerd.import(&root.join("var/lib/rancher/k3s/agent/images/airlock-images.tar")).unwrap();
    assert!(names.contains(&"docker.io/rancher/klipper-helm:v0.9.3-build20241008".to_string()), "{names:?}");
    // The app's five images (PostgreSQL among them), the platform's four stand-ins
    // (klipper-helm, Keycloak, MinIO, mc) and the monitoring component's six.
    assert!(names.contains(&"quay.io/keycloak/keycloak:26.5.6".to_string()), "{names:?}");
    assert!(names.contains(&"docker.io/grafana/grafana:13.2.0".to_string()), "{names:?}");
    assert_eq!(names.len(), 15, "{names:?}");
}

#[test]
fn install_without_answers_and_no_terminal_is_refused_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let o = Command::new(cargo_bin("airlock"))
        .arg("install")
        .arg(&b)
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--answers"));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "a refused install wrote into the root");
}

#[test]
fn disk_full_during_staging_is_a_clear_error_and_leaves_the_target_untouched() {
    if !airlock_tests::is_root() {
        airlock_tests::skip_or_fail::<()>("mounting a small tmpfs needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("small");
    std::fs::create_dir(&root).unwrap();
    // 32 KiB: room for the directories, not for the staged bundle (about 40 KiB).
    let m = Command::new("mount").args(["-t", "tmpfs", "-o", "size=32k", "tmpfs"]).arg(&root).status().unwrap();
    assert!(m.success(), "mount tmpfs");
    let out = install(&b, &root, &["--yes"], &[]);
    let listing: Vec<String> = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&root).unwrap().display().to_string())
        .collect();
    let _ = Command::new("umount").arg(&root).status();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("No space left") && err.contains("hint:"), "{err}");
    // Staging was removed; nothing outside the installer's state directory exists.
    assert!(listing.iter().all(|p| p == "var" || p == "var/lib" || p.starts_with("var/lib/airlock")), "{listing:?}");
    assert!(!listing.iter().any(|p| p.starts_with("var/lib/airlock/staging/current")), "{listing:?}");
}

#[test]
fn a_site_mirror_in_the_answers_becomes_registries_yaml_with_the_site_ca_and_hidden_credentials() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let answers = d.path().join("answers.yaml");
    let mut text = std::fs::read_to_string(demo().join("answers.yaml")).unwrap();
    text.push_str("registry:\n  mirror: harbor.example.test:443\n  username: puller\n  password: m1rr0r-s3cret\n");
    std::fs::write(&answers, text).unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let run = |extra: &[&str]| {
        Command::new(cargo_bin("airlock"))
            .arg("install")
            .arg(&b)
            .arg("--pubkey")
            .arg(demo().join("keys/demo.pub"))
            .arg("--answers")
            .arg(&answers)
            .arg("--root")
            .arg(&root)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let plan = run(&["--dry-run", "--output", "json"]);
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let out = run(&["--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for o in [&plan, &out] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains("m1rr0r-s3cret"), "the mirror password leaked");
    }
    let path = root.join("etc/rancher/k3s/registries.yaml");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Every registry the bundle's images come from is redirected to the mirror.
    assert_eq!(doc["mirrors"]["docker.io"]["endpoint"][0].as_str(), Some("https://harbor.example.test:443"));
    let config = &doc["configs"]["harbor.example.test:443"];
    assert_eq!(config["tls"]["ca_file"].as_str(), Some("/etc/airlock/pki/ca.crt"));
    assert_eq!(config["auth"]["password"].as_str(), Some("m1rr0r-s3cret"));
}

#[test]
fn a_failure_while_keeping_the_release_is_journaled_and_status_needs_attention_until_a_rerun_finishes() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("root");
    // The release store's place taken by a file: keeping the release fails, as a full
    // disk would make it fail, after every step is applied.
    let store = root.join("var/lib/airlock/releases");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, "in the way").unwrap();
    let out = install(&b, &root, &["--yes"], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("keeping the release for upgrades"), "{err}");
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/journal.json")).unwrap()).unwrap();
    assert_eq!(journal["failed_after"]["what"], "keeping the release for upgrades", "{journal:#}");
    let status =
        Command::new(cargo_bin("airlock")).args(["status", "--root", root.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(11), "{text}");
    assert!(text.contains("the last run applied every step, but keeping the release for upgrades failed"), "{text}");
    // Fixed, the same command finishes it and the site is in order.
    std::fs::remove_file(&store).unwrap();
    let out = install(&b, &root, &["--yes"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status =
        Command::new(cargo_bin("airlock")).args(["status", "--root", root.to_str().unwrap()]).output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
}

#[test]
fn under_a_target_root_the_report_names_site_files_where_the_operator_finds_them() {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = install(&b, &root, &["--yes"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefixed = format!("{}/var/lib/airlock/report.json", root.display());
    assert!(text.contains(&format!("this report: {prefixed}")), "{text}");
    assert!(text.contains(&format!("{}/var/lib/airlock/secrets/keycloak-admin-password", root.display())), "{text}");
    assert!(text.contains(&format!("{}/etc/airlock/pki/ca.crt", root.display())), "{text}");
    // Bare site paths only where they name the path on another node (the join copy).
    for line in text.lines().filter(|l| l.contains(" /var/lib/airlock") || l.contains(" /etc/airlock")) {
        assert!(line.contains("it keeps the token at"), "a site path without the root: {line}");
    }
}

#[test]
fn an_answers_file_with_passwords_that_others_may_read_gets_a_chmod_warning() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path());
    let answers = d.path().join("site.yaml");
    let text = std::fs::read_to_string(demo().join("answers.yaml")).unwrap();
    std::fs::write(&answers, &text).unwrap();
    let password = text.lines().find_map(|l| l.trim().strip_prefix("bind_password:")).unwrap().trim().trim_matches('"');
    let dry_run = |mode: u32| {
        std::fs::set_permissions(&answers, std::fs::Permissions::from_mode(mode)).unwrap();
        let root = d.path().join(format!("root-{mode:o}"));
        std::fs::create_dir_all(&root).unwrap();
        let o = Command::new(cargo_bin("airlock"))
            .args(["install", b.to_str().unwrap(), "--pubkey"])
            .arg(demo().join("keys/demo.pub"))
            .arg("--answers")
            .arg(&answers)
            .arg("--root")
            .arg(&root)
            .arg("--dry-run")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = dry_run(0o644);
    assert!(err.contains("holds passwords and others may read it (mode 0644)"), "{err}");
    assert!(err.contains(&format!("hint: chmod 600 {}", answers.display())), "{err}");
    assert!(!err.contains(password), "the warning shows the password: {err}");
    let err = dry_run(0o600);
    assert!(!err.contains("holds passwords"), "{err}");
}
