//! The installer binary that goes into bundles runs on RHEL 8 / Ubuntu 20.04 and
//! newer: `packaging/build-installer.sh` links it against glibc 2.28 symbols at most.
//! This builds it for real (zig from PyPI; the first build takes a few minutes) and
//! reads the binary's dynamic symbol table.

use std::process::{Command, Stdio};

use airlock_tests::{require_tool, workspace_root};

/// Parses `GLIBC_2.17`-style version tags out of `objdump -T` output.
fn glibc_versions(objdump: &str) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = objdump
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u32>>>())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn glibc_version_parsing_finds_the_highest_tag() {
    let sample = "0000 DF *UND* 0000 (GLIBC_2.2.5) memcpy\n0000 DF *UND* 0000 (GLIBC_2.28) fcntl64\n0000 DF *UND* GLIBC_2.17 clock\n";
    assert_eq!(glibc_versions(sample).last(), Some(&vec![2, 28]));
}

#[test]
fn packaged_installer_needs_glibc_2_28_at_most_and_runs() {
    let Some(objdump) = require_tool("objdump") else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let build = Command::new("bash")
        .arg(workspace_root().join("packaging/build-installer.sh"))
        .arg(out_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "packaging/build-installer.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let bin = out_dir.path().join("airlock");
    let dump = Command::new(objdump).arg("-T").arg(&bin).output().unwrap();
    assert!(dump.status.success());
    let versions = glibc_versions(&String::from_utf8_lossy(&dump.stdout));
    let highest = versions.last().expect("a dynamically linked binary names GLIBC versions");
    assert!(*highest <= vec![2, 28], "the installer needs GLIBC_{highest:?}, more than 2.28 (RHEL 8)");
    // And the binary zig linked actually runs here.
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("airlock "));
}
