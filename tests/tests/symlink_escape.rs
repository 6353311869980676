//! A target root whose directories are symlinks to somewhere else must not let any
//! command read or change anything outside the root. For every directory level Airlock
//! writes or reads under the root, a link is planted — an absolute one (which the
//! host resolves *inside* the root, the documented chroot semantics) and a relative
//! one that climbs out of it (which the host refuses, naming the link) — and every
//! command that touches the level runs through the real binary. A canary tree outside
//! the root is hashed before and after: it must be untouched either way, and nothing
//! of it may show up in what a command prints or collects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::{airlock_with_answers, build_demo_bundle, cargo_bin, demo_dir};

/// A line only the canary holds: seeing it anywhere means a read went out.
const CANARY_SECRET: &str = "canary-host-only-7f3a";

/// Every level under the root Airlock writes or reads.
const LEVELS: &[&str] = &[
    "var",
    "var/lib",
    "var/lib/airlock",
    "var/lib/airlock/staging",
    "var/lib/airlock/releases",
    "var/lib/airlock/backups",
    "var/lib/airlock/secrets",
    "etc",
    "etc/airlock",
    "etc/hostname",
];

/// Path → type, mode and content digest of every entry below `dir`.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    airlock_tests::tree::walk(
        dir,
        |_| true,
        |_, path, mode| format!("file {mode:04o} {}", airlock_format::Sha256Digest::of(&std::fs::read(path).unwrap())),
    )
}

/// The canary: a directory outside the root that looks like what Airlock would use
/// (a state directory with staging, a hostname file), so a command that escaped
/// would find something to delete or read there.
fn plant_canary(outside: &Path) {
    for (p, c) in [
        ("hostname", format!("{CANARY_SECRET}\n")),
        ("staging/current/keep.txt", format!("{CANARY_SECRET}\n")),
        ("staging/upgrade/keep.txt", "x\n".to_string()),
        ("current/keep.txt", "x\n".to_string()),
        ("releases/keep.txt", "x\n".to_string()),
        ("airlock/staging/current/keep.txt", "x\n".to_string()),
        ("lib/airlock/staging/current/keep.txt", "x\n".to_string()),
        ("secrets/answers-x", format!("{CANARY_SECRET}\n")),
    ] {
        std::fs::create_dir_all(outside.join(p).parent().unwrap()).unwrap();
        std::fs::write(outside.join(p), c).unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Link {
    /// `-> /abs/outside`: resolved inside the root.
    Absolute,
    /// `-> ../../outside`: climbs out; refused.
    Climbing,
}

/// Plants `level` under `root` as a link to `outside`.
fn plant_link(root: &Path, level: &str, outside: &Path, kind: Link) {
    let at = root.join(level);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    let target = match kind {
        Link::Absolute => outside.to_path_buf(),
        Link::Climbing => {
            let up = "../".repeat(level.matches('/').count() + 1);
            PathBuf::from(format!("{up}../outside"))
        }
    };
    std::os::unix::fs::symlink(&target, &at).unwrap();
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn airlock(args: &[&str], root: &Path) -> Output {
    Command::new(cargo_bin("airlock")).args(args).arg("--root").arg(root).stdin(Stdio::null()).output().unwrap()
}

/// Runs `what` and checks the canary; a refusal must name the link.
fn check(case: &str, level: &str, kind: Link, outside: &Path, before: &BTreeMap<String, String>, o: &Output) {
    let said = text(o);
    assert_eq!(&tree(outside), before, "{case} with /{level} a {kind:?} link changed the canary:\n{said}");
    assert!(!said.contains(CANARY_SECRET), "{case} with /{level} a {kind:?} link printed the canary:\n{said}");
    if !o.status.success() && matches!(kind, Link::Climbing) && !said.contains("no ") {
        // A refusal because of the link says which link.
        if said.contains("leads out of the target root") {
            assert!(said.contains(&format!("/{level}")), "{case}: the refusal names the link /{level}:\n{said}");
        }
    }
}

#[test]
fn symlink_escape_no_command_touches_anything_outside_the_root() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let answers = demo_dir().join("answers.yaml");
    for &level in LEVELS {
        for kind in [Link::Absolute, Link::Climbing] {
            let case_dir = d.path().join(format!("{}-{kind:?}", level.replace('/', "_")));
            let root = case_dir.join("root");
            let outside = case_dir.join("outside");
            std::fs::create_dir_all(&root).unwrap();
            plant_canary(&outside);
            plant_link(&root, level, &outside, kind);
            let before = tree(&outside);
            let run = |case: &str, o: Output| check(case, level, kind, &outside, &before, &o);

            run("preflight", airlock_with_answers("preflight", &bundle, &answers, &root, &[]));
            run("install --dry-run", airlock_with_answers("install", &bundle, &answers, &root, &["--dry-run"]));
            run("install --check", airlock_with_answers("install", &bundle, &answers, &root, &["--check"]));
            let installed = airlock_with_answers("install", &bundle, &answers, &root, &["--yes"]);
            let ok = installed.status.success();
            let said = text(&installed);
            run("install", installed);
            // Either the link resolved inside the root and the install went through, or
            // it was refused where a directory or file of Airlock's own belongs — and
            // the refusal names the link.
            assert!(ok || said.contains(&format!("/{level}")), "install with /{level} a {kind:?} link:\n{said}");
            run("status", airlock(&["status"], &root));
            let out = case_dir.join("support.tar.gz");
            let support = airlock(&["support-bundle", "-o", out.to_str().unwrap()], &root);
            if out.exists() {
                let bytes = std::fs::read(&out).unwrap();
                let mut tar = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut tar).unwrap();
                assert!(
                    !String::from_utf8_lossy(&tar).contains(CANARY_SECRET),
                    "support bundle with /{level} a {kind:?} link collected the canary"
                );
            }
            run("support-bundle", support);
            run("upgrade --dry-run", airlock_with_answers("upgrade", &bundle, &answers, &root, &["--dry-run"]));
            run("upgrade", airlock_with_answers("upgrade", &bundle, &answers, &root, &["--yes"]));
            run("uninstall --dry-run", airlock(&["uninstall", "--dry-run", "--yes"], &root));
            run("uninstall", airlock(&["uninstall", "--yes"], &root));
        }
    }
}

#[test]
fn symlink_escape_install_refuses_a_state_directory_that_climbs_out_and_names_the_link() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let answers = demo_dir().join("answers.yaml");
    let root = d.path().join("case/root");
    let outside = d.path().join("case/outside");
    std::fs::create_dir_all(&root).unwrap();
    plant_canary(&outside);
    plant_link(&root, "var/lib/airlock", &outside, Link::Climbing);
    let before = tree(&outside);
    for flags in [&["--dry-run"][..], &["--check"], &["--yes"]] {
        let o = airlock_with_answers("install", &bundle, &answers, &root, flags);
        assert!(!o.status.success(), "install {flags:?} refuses");
        let said = text(&o);
        assert!(said.contains("the symlink /var/lib/airlock on the way leads out of the target root"), "{said}");
        assert_eq!(tree(&outside), before, "install {flags:?} changed nothing outside the root");
    }
}

#[test]
fn symlink_escape_preflight_does_not_read_a_hostname_file_outside_the_root() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    plant_canary(&outside);
    // What the finding showed: an absolute link to a host file.
    std::os::unix::fs::symlink(outside.join("hostname"), root.join("etc/hostname")).unwrap();
    let o = airlock_with_answers("preflight", &bundle, &demo_dir().join("answers.yaml"), &root, &["--output", "json"]);
    assert!(!text(&o).contains(CANARY_SECRET), "{}", text(&o));
}
