//! `airlock-bundler keygen` through the binary. (Also makes `cargo test --workspace`
//! build this binary, which the end-to-end tests in `tests/` run.)

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn keygen(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock-bundler"))
        .current_dir(dir)
        .args(["keygen", "-W", "-p", "v.pub", "-s", "v.key"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn keygen_writes_a_0600_secret_key_and_never_overwrites_one_silently() {
    let d = tempfile::tempdir().unwrap();
    assert!(keygen(d.path(), &[]).status.success());
    let mode = std::fs::metadata(d.path().join("v.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(d.path().join("v.key")).unwrap();
    let again = keygen(d.path(), &[]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(d.path().join("v.key")).unwrap(), first, "the old key was changed");
    assert!(keygen(d.path(), &["--force"]).status.success());
    assert_ne!(std::fs::read(d.path().join("v.key")).unwrap(), first);
}

#[test]
fn keygen_without_a_passphrase_source_refuses_on_a_non_terminal() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock-bundler"))
        .current_dir(d.path())
        .args(["keygen", "-p", "v.pub", "-s", "v.key"])
        .env_remove("AIRLOCK_KEY_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    assert!(!d.path().join("v.key").exists());
}
