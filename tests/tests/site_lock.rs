//! One run at a time, and a dry run that writes nothing: through the real binaries.
//!
//! - `install --dry-run` / `--check` leave the target root exactly as it was (no
//!   staging, no lock file) and remove the temporary staging they verified into, and
//!   the plan a dry run prints is the plan the real run applies;
//! - `--root DIR` that does not exist is made by `install`, and named with a hint by a
//!   dry run;
//! - the site's lock is taken before anything is written: a second `install`,
//!   `upgrade`, `uninstall` or `pki renew` while another run holds it says which run
//!   ("another airlock run (pid N, started T, command C) is working on this site") and
//!   leaves the root untouched, while `status` and `support-bundle` name that run and
//!   go on; two installs started at the same moment, many times, never break each
//!   other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use airlock_installer::ops::install::{plan_install, InstallOptions};
use airlock_installer::site::answers::{Problem, Prompt, Prompter};
use airlock_tests::tree::walk;
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir};

/// The demo bundle, built once for the tests of this file.
fn bundle() -> &'static Path {
    static B: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, b) = B.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let b = build_demo_bundle(d.path(), &[]);
        (d, b)
    });
    b
}

fn answers() -> PathBuf {
    demo_dir().join("answers.yaml")
}

/// `airlock install <demo bundle> --answers <demo answers> --root ROOT EXTRA…` with
/// `TMPDIR` set, no stdin.
fn install_cmd(root: &Path, tmp: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(cargo_bin("airlock"));
    c.arg("install")
        .arg(bundle())
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(answers())
        .arg("--root")
        .arg(root)
        .args(extra)
        .env("TMPDIR", tmp)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every path under `root` with its mode and full content digest (a lock file or
/// staging would show).
fn everything(root: &Path) -> BTreeMap<String, String> {
    walk(
        root,
        |_| true,
        |_, path, mode| {
            let bytes = std::fs::read(path).unwrap();
            format!("file {mode:04o} {}", hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)))
        },
    )
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn dry_run_and_check_write_nothing_under_the_root_and_remove_their_temporary_staging() {
    let d = tempfile::tempdir().unwrap();
    let (root, tmp) = (d.path().join("root"), d.path().join("tmp"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    // A root with something in it already: it must stay byte for byte as it is.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "node1\n").unwrap();
    let before = everything(&root);
    for flags in [&["--dry-run"][..], &["--dry-run", "--output", "json"], &["--check"]] {
        let o = install_cmd(&root, &tmp, flags).output().unwrap();
        let code = if flags == ["--check"] { 7 } else { 0 };
        assert_eq!(o.status.code(), Some(code), "{flags:?}: {}", shown(&o));
        assert_eq!(everything(&root), before, "{flags:?} wrote under the root");
        assert_eq!(entries(&tmp), Vec::<String>::new(), "{flags:?} left its temporary staging behind");
    }
    // The real run then stages under the root, as before.
    let o = install_cmd(&root, &tmp, &["--yes"]).output().unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    assert!(root.join("etc/rancher/k3s/config.yaml").is_file());
    assert_eq!(entries(&tmp), Vec::<String>::new());
}

/// A prompter for answers given as a file: never asked.
struct NoPrompts;

impl Prompter for NoPrompts {
    fn answer(&mut self, _: &Prompt<'_>) -> airlock_format::error::Result<String> {
        panic!("a question was asked although the answers are a file")
    }
    fn rejected(&mut self, _: &Problem) {}
}

#[test]
fn the_plan_of_a_dry_run_is_the_plan_the_real_run_applies() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let opts = |dry_run| InstallOptions {
        bundle: bundle().to_path_buf(),
        pubkey: vec![demo_dir().join("keys/demo.pub")],
        answers: Some(answers()),
        root: root.clone(),
        hostname: Some("node1".into()),
        dry_run,
        ..InstallOptions::default()
    };
    let quiet = airlock_format::report::Silent;
    let dry = plan_install(&opts(true), &mut NoPrompts, &quiet).unwrap();
    let dry_plan = serde_json::to_value(&dry.plan).unwrap();
    let dry_preflight = serde_json::to_value(&dry.preflight).unwrap();
    drop(dry);
    assert!(!root.join("var").exists(), "the dry run wrote under the root");
    let real = plan_install(&opts(false), &mut NoPrompts, &quiet).unwrap();
    assert!(root.join("var/lib/airlock/staging/current").is_dir(), "the real run stages under the root");
    // Each plan makes the site's certificates and the report-signing key afresh (a new
    // key, a new serial), so their encoded size may differ by a few bytes from plan to
    // plan: a DER signature varies in length, and the public key's comment prints its
    // key id in hex without leading zeros, as stock minisign does. All else is equal.
    let fresh_sizes = |mut plan: serde_json::Value| {
        for step in plan["steps"].as_array_mut().unwrap() {
            let d = step["description"].as_str().unwrap().to_string();
            let fresh = (d.starts_with("write /etc/airlock/pki/") && d.contains(".crt (0644, "))
                || d.starts_with("write /var/lib/airlock/report-signing.pub (0644, ");
            if fresh {
                step["description"] = d.split(" (0644, ").next().unwrap().into();
            }
        }
        plan
    };
    assert_eq!(fresh_sizes(serde_json::to_value(&real.plan).unwrap()), fresh_sizes(dry_plan));
    // The same checks with the same outcomes; the free-disk check says where it
    // measured, which is deeper once the real run has staged under the root.
    let outcomes = |report: serde_json::Value| {
        let checks = report["checks"].as_array().unwrap().clone();
        checks
            .into_iter()
            .map(|mut c| {
                if c["id"] == "disk-space" {
                    c["detail"] = serde_json::Value::Null;
                }
                c
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(serde_json::to_value(&real.preflight).unwrap()), outcomes(dry_preflight));
}

#[test]
fn install_makes_a_missing_root_and_a_dry_run_names_it_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let (root, tmp) = (d.path().join("mnt/new"), d.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    let o = install_cmd(&root, &tmp, &["--dry-run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", shown(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}: the target root does not exist", root.display())), "{err}");
    assert!(err.contains("hint: check the --root path; `airlock install` and `airlock join` create a missing root"));
    assert!(!root.exists() && !root.parent().unwrap().exists(), "a dry run made the root");

    let o = install_cmd(&root, &tmp, &["--yes"]).output().unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    assert!(root.join("etc/rancher/k3s/config.yaml").is_file());
}

/// Holds `<root>/var/lib/airlock/lock` from another process (util-linux `flock`, as a
/// run of airlock holds it), with the holder text an airlock run writes.
struct Holder(Child);

impl Holder {
    fn take(root: &Path) -> Self {
        let lock = root.join("var/lib/airlock/lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::fs::write(
            &lock,
            "pid 4242\nstarted 2026-12-07T10:00:00Z\ncommand airlock install /media/platform.airlock --answers site.yaml\n",
        )
        .unwrap();
        let mut child = Command::new("flock")
            .arg("--exclusive")
            // No fork: the process killed at the end is the one holding the lock.
            .arg("--no-fork")
            .arg(&lock)
            .args(["sh", "-c", "echo locked; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock (util-linux) runs");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line, "locked\n");
        Self(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HELD: &str = "another airlock run (pid 4242, started 2026-12-07T10:00:00Z, command airlock install \
                    /media/platform.airlock --answers site.yaml) is working on this site";

#[test]
fn while_another_run_holds_the_site_changes_are_refused_untouched_and_reads_name_that_run() {
    let d = tempfile::tempdir().unwrap();
    let (root, tmp) = (d.path().join("root"), d.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    // Fresh root: the install is refused before it stages.
    std::fs::create_dir_all(&root).unwrap();
    {
        let _held = Holder::take(&root);
        let before = everything(&root);
        let o = install_cmd(&root, &tmp, &["--yes"]).output().unwrap();
        assert_eq!(o.status.code(), Some(6), "{}", shown(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(HELD), "{err}");
        assert!(err.contains("hint: wait for that run to finish"), "{err}");
        assert_eq!(everything(&root), before, "the refused install wrote under the root");
    }
    // Installed: upgrade, uninstall and pki renew are refused the same way.
    let o = install_cmd(&root, &tmp, &["--yes"]).output().unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    let _held = Holder::take(&root);
    let before = everything(&root);
    let root_s = root.to_str().unwrap();
    let bundle_s = bundle().to_str().unwrap();
    let pubkey = demo_dir().join("keys/demo.pub");
    for args in [
        vec!["upgrade", bundle_s, "--pubkey", pubkey.to_str().unwrap(), "--root", root_s, "--yes"],
        vec!["uninstall", "--root", root_s, "--yes"],
        vec!["pki", "renew", "--root", root_s, "--within", "100000"],
    ] {
        let o =
            Command::new(cargo_bin("airlock")).args(&args).env("TMPDIR", &tmp).stdin(Stdio::null()).output().unwrap();
        assert_ne!(o.status.code(), Some(0), "{args:?}: {}", shown(&o));
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(all.contains(HELD), "{args:?}: {}", shown(&o));
        assert_eq!(everything(&root), before, "{args:?} wrote under the root while the lock was held");
    }
    // The commands that only read the site say which run is at work, and go on.
    let o = Command::new(cargo_bin("airlock")).args(["status", "--root", root_s]).output().unwrap();
    assert_eq!(o.status.code(), Some(11), "{}", shown(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(HELD), "{}", shown(&o));
    let archive = d.path().join("support.tar.gz");
    let o = Command::new(cargo_bin("airlock"))
        .args(["support-bundle", "-o", archive.to_str().unwrap(), "--root", root_s, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains(&format!("warning: {}", HELD.trim_end_matches(" is working on this site"))));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["manifest"]["working_run"], HELD.trim_end_matches(" is working on this site"));
    assert_eq!(everything(&root), before, "status or support-bundle wrote under the root");
}

#[test]
fn two_installs_started_together_never_break_each_other() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut refused = 0;
    for round in 0..8 {
        let root = d.path().join(format!("root{round}"));
        std::fs::create_dir_all(&root).unwrap();
        let a = install_cmd(&root, &tmp, &["--yes"]).spawn().unwrap();
        let b = install_cmd(&root, &tmp, &["--yes"]).spawn().unwrap();
        for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            match o.status.code() {
                Some(0) => {}
                Some(6) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    let named = err.contains("another airlock run (pid ")
                        && err.contains(", command ")
                        && err.contains(") is working on this site");
                    assert!(named, "round {round}: {}", shown(&o));
                    refused += 1;
                }
                _ => panic!("round {round}: {}", shown(&o)),
            }
        }
        // Whatever the order, the site ends installed and in order.
        let status =
            Command::new(cargo_bin("airlock")).args(["status", "--root", root.to_str().unwrap()]).output().unwrap();
        assert_eq!(status.status.code(), Some(0), "round {round}: {}", shown(&status));
    }
    eprintln!("two_installs_started_together: {refused} of 8 second runs met the lock");
}

#[test]
fn an_interrupted_install_says_how_to_resume_and_that_command_finishes_it() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // Early or late, wherever the signal lands the run must say how to go on; a run
    // that finished before the signal came is tried again with less time.
    for (attempt, delay_ms) in [400u64, 200, 100, 50, 25, 10].into_iter().enumerate() {
        let root = d.path().join(format!("root{attempt}"));
        std::fs::create_dir_all(&root).unwrap();
        let child = install_cmd(&root, &tmp, &["--yes"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let o = child.wait_with_output().unwrap();
        if o.status.code() == Some(0) {
            continue;
        }
        assert_eq!(o.status.code(), Some(130), "{}", shown(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            err.contains("interrupted: the install stopped; what it did is journaled and nothing is lost"),
            "{err}"
        );
        let resume = err
            .lines()
            .find_map(|l| l.trim().strip_prefix("hint: run the same command again to continue where it stopped: "))
            .unwrap_or_else(|| panic!("no resume command in: {err}"));
        assert!(resume.contains(" install ") && resume.contains(&format!("--root {}", root.display())), "{resume}");
        // The command it names, run as the operator would paste it, finishes the site.
        let again = Command::new("sh").arg("-c").arg(resume).env("TMPDIR", &tmp).stdin(Stdio::null()).output().unwrap();
        assert_eq!(again.status.code(), Some(0), "{}", shown(&again));
        let status =
            Command::new(cargo_bin("airlock")).args(["status", "--root", root.to_str().unwrap()]).output().unwrap();
        assert_eq!(status.status.code(), Some(0), "{}", shown(&status));
        return;
    }
    panic!("every install finished before the signal reached it");
}
