//! `airlock upgrade` of the embedded example: v1 (the demo) to v2 (version 1.1.0, one
//! chart value changed, the notes chart dropped) and v3 (2.0.0, which may not skip
//! 1.1.0). In a target root through the real binary — same tree as a fresh install,
//! crashes at each phase, policy refusals, pruning — and live through the recording
//! double: a failing health gate puts the previous release back byte for byte, and the
//! backup's etcd snapshot and database dump are the commands recorded.
//!
//! The monitoring content travels the same way: v1 to a 1.1.0 whose one alert rule's
//! threshold and one dashboard's title changed (the vendor's directories, named by the
//! spec's `monitoring:`), then to a 1.2.0 that drops a dashboard; and the failed gate
//! of the 1.1.0 upgrade puts v1's rules and dashboards back byte for byte.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use airlock_format::report::Silent;
use airlock_installer::bundle::trust::trusted_keys;
use airlock_installer::engine::{apply, ApplyOptions};
use airlock_installer::host::{CommandOutput, Host, HostCall, RecordingHost};
use airlock_installer::live::WaitOptions;
use airlock_installer::ops::install::prepare;
use airlock_installer::ops::upgrade::{self, UpgradeOptions, EXIT_POLICY, EXIT_ROLLED_BACK};
use airlock_installer::site::answers::Answers;
use airlock_tests::build_demo_variant;
use airlock_tests::live::{expect_healthy_demo_endpoints, kubectl, kubectl_streaming, TestClock};
use airlock_tests::tree::{installed_tree as tree, walk};
use airlock_tests::{cargo_bin, demo_dir};

struct Bundles {
    v1: PathBuf,
    v2: PathBuf,
    v3: PathBuf,
    /// v2 as a delta bundle over v1 (`create --base v1`).
    v2_delta: PathBuf,
}

/// The three releases, built once for all tests of this file (under target/tmp).
fn bundles() -> &'static Bundles {
    static B: OnceLock<Bundles> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // A static is never dropped: earlier runs' bundles go when their process is gone.
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("upgrade-bundles-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("upgrade-bundles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
        let v2 = spec
            .replace("version: 1.0.0\n", "version: 1.1.0\n")
            .replace("      - path: charts/notes-0.1.0.tgz\n", "")
            // One chart value: the app's backup client image (a bundled image).
            .replace(
                "backupClient: quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z",
                "backupClient: docker.io/airlock-demo/tools:1.0.0",
            );
        assert_ne!(v2, spec);
        let v3 =
            v2.replace("version: 1.1.0\n", "version: 2.0.0\nupgrade:\n  from: \">=1.0.0\"\n  required: [\"1.1.0\"]\n");
        let v1 = build(&spec, &dir.join("v1"), &[]);
        let v2_delta = build(&v2, &dir.join("v2-delta"), &["--base", v1.to_str().unwrap()]);
        Bundles { v2: build(&v2, &dir.join("v2"), &[]), v3: build(&v3, &dir.join("v3"), &[]), v1, v2_delta }
    })
}

fn build(spec: &str, out_dir: &Path, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(out_dir).unwrap();
    build_demo_variant(spec, out_dir, extra)
}

fn airlock(args: &[&str], bundle: &Path, root: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cargo_bin("airlock"));
    c.args(&args[..1])
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--root")
        .arg(root)
        .args(&args[1..])
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn install(bundle: &Path, root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let answers = demo_dir().join("answers.yaml");
    let o = airlock(&["install", "--answers", answers.to_str().unwrap(), "--yes"], bundle, root, &[]);
    assert!(o.status.success(), "install failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn upgrade_cmd(bundle: &Path, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["upgrade", "--yes"];
    args.extend_from_slice(extra);
    airlock(&args, bundle, root, env)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Every file and link under the root with its full digest, except the upgrade's own
/// records (journals, locks, backups, the release store, staging): what "put back
/// byte for byte" is measured on.
fn exact(root: &Path) -> BTreeMap<String, String> {
    // The upgrade's own records (its journal, the history it extends, what the gate's
    // endpoint checks saw) are what a rollback keeps, not part of the release.
    let skip = [
        "/var/lib/airlock/upgrade.json",
        "/var/lib/airlock/upgrade-history.json",
        "/var/lib/airlock/endpoint-checks.json",
        "/var/lib/airlock/journal.json",
        "/var/lib/airlock/lock",
        "/var/lib/airlock/upgrade.lock",
        "/var/lib/airlock/backup",
        "/var/lib/airlock/backups",
        "/var/lib/airlock/releases",
        "/var/lib/airlock/staging",
    ];
    walk(
        root,
        |rel| !skip.iter().any(|s| rel == *s || rel.starts_with(&format!("{s}/"))),
        |_, path, mode| format!("file {mode:04o} {}", sha(&std::fs::read(path).unwrap())),
    )
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only before: {k} {v}")),
            Some(w) if w != v => out.push(format!("changed: {k} {v} -> {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!("only after: {k} {v}"));
        }
    }
    out
}

fn journal(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/upgrade.json")).unwrap()).unwrap()
}

#[test]
fn upgrade_v1_to_v2_in_a_root_gives_the_tree_of_a_fresh_v2_install_and_backs_up_first() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let (upgraded, fresh) = (d.path().join("upgraded"), d.path().join("fresh"));
    install(&b.v1, &upgraded);
    install(&b.v2, &fresh);

    // The release store keeps the image archive under one more name, not as one more
    // copy: a copy doubled what an install writes.
    let images = "var/lib/rancher/k3s/agent/images/airlock-images.tar";
    let v1 = std::fs::read_link(upgraded.join("var/lib/airlock/releases/current")).unwrap();
    let kept = upgraded.join("var/lib/airlock/releases").join(&v1).join("snapshot").join(images);
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(inode(&kept), inode(&upgraded.join(images)), "{} is a copy", kept.display());

    // The plan shows the diff before anything changes, and --dry-run changes nothing.
    let before = exact(&upgraded);
    let o = airlock(&["upgrade", "--dry-run"], &b.v2, &upgraded, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = text(&o);
    assert!(shown.contains("upgrade 1.0.0 -> 1.1.0"), "{shown}");
    assert!(shown.contains("chart         notes 0.1.0 -> -"), "{shown}");
    assert!(shown.contains("file     -    /var/lib/rancher/k3s/server/manifests/airlock-notes.yaml"), "{shown}");
    assert!(shown.contains("dry run: nothing was changed"), "{shown}");
    assert!(diff(&before, &exact(&upgraded)).is_empty(), "--dry-run changed the root");

    let o = upgrade_cmd(&b.v2, &upgraded, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    // The backup is named where the operator finds it: under the target root.
    let backup_line = text(&o).lines().find(|l| l.starts_with("backup: ")).map(str::to_owned);
    let backup_line = backup_line.unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(
        backup_line.starts_with(&format!("backup: {}/var/lib/airlock/backups/", upgraded.display())),
        "{backup_line}"
    );
    let differences = diff(&tree(&fresh), &tree(&upgraded));
    assert!(differences.is_empty(), "upgraded tree differs from a fresh v2 install:\n{}", differences.join("\n"));

    // The store: v2 current, v1 previous, each with its bundle and snapshot.
    let releases = upgraded.join("var/lib/airlock/releases");
    let current = std::fs::read_link(releases.join("current")).unwrap();
    let previous = std::fs::read_link(releases.join("previous")).unwrap();
    assert!(current.to_string_lossy().starts_with("1.1.0-"), "{current:?}");
    assert!(previous.to_string_lossy().starts_with("1.0.0-"), "{previous:?}");
    for id in [&current, &previous] {
        assert!(releases.join(id).join("bundle/airlock-app").exists() || releases.join(id).join("bundle").is_dir());
        assert!(releases.join(id).join("snapshot.json").is_file(), "{id:?}");
    }
    assert!(!upgraded.join("var/lib/airlock/staging/upgrade").exists(), "the upgrade's staging is moved or removed");

    // The backup: configs, PKI and state, secrets 0600; the commands skipped in a root.
    let backups: Vec<PathBuf> =
        std::fs::read_dir(upgraded.join("var/lib/airlock/backups")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let bk = &backups[0];
    assert!(bk.file_name().unwrap().to_string_lossy().ends_with("-1.0.0-to-1.1.0"), "{bk:?}");
    for f in [
        "files/etc/rancher/k3s/config.yaml",
        "files/etc/airlock/pki/ca.crt",
        "files/var/lib/rancher/k3s/server/manifests",
        "files/var/lib/airlock/installed.json",
        "files/var/lib/airlock/release.json",
        "files/var/lib/airlock/secrets/cluster-token",
        "backup.json",
    ] {
        assert!(bk.join(f).exists(), "backup lacks {f}");
    }
    let token_mode = bk.join("files/var/lib/airlock/secrets/cluster-token").metadata().unwrap().permissions().mode();
    assert_eq!(token_mode & 0o777, 0o600);
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(bk.join("backup.json")).unwrap()).unwrap();
    let skipped = rec["skipped"].to_string();
    assert!(skipped.contains("etcd-snapshot save") && skipped.contains("pg_dump"), "{skipped}");
    assert_eq!(journal(&upgraded)["outcome"], "succeeded");

    // Uninstalling deletes the store and the backups with the installer's state: the
    // plan says so, with what they are and where, before anything goes.
    let o = Command::new(cargo_bin("airlock"))
        .args(["uninstall", "--dry-run", "--root"])
        .arg(&upgraded)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let plan = text(&o);
    assert!(o.status.success(), "{plan}");
    let root = upgraded.display();
    let bk_name = bk.file_name().unwrap().to_string_lossy().into_owned();
    for want in [
        format!(
            "  with /var/lib/airlock: 2 stored releases ({}, {}), gone for good; copy \
             {root}/var/lib/airlock/releases elsewhere first to keep them",
            previous.display(),
            current.display()
        ),
        format!(
            "  with /var/lib/airlock: 1 upgrade backup ({bk_name}), gone for good; copy \
             {root}/var/lib/airlock/backups elsewhere first to keep it"
        ),
    ] {
        assert!(plan.contains(&want), "missing {want:?} in\n{plan}");
    }
    assert!(upgraded.join("var/lib/airlock/backups").join(&bk_name).is_dir(), "--dry-run removed the backup");
}

#[test]
fn a_delta_upgrade_gives_the_tree_of_the_full_bundle_and_a_delta_for_another_base_changes_nothing() {
    let b = bundles();
    let (full, delta) = (std::fs::metadata(&b.v2).unwrap().len(), std::fs::metadata(&b.v2_delta).unwrap().len());
    println!("v2 full bundle {full} bytes, v2 delta over v1 {delta} bytes");
    assert!(delta < full, "the delta ({delta} bytes) is not smaller than the full bundle ({full} bytes)");
    let d = tempfile::tempdir().unwrap();
    let (upgraded, fresh, empty) = (d.path().join("upgraded"), d.path().join("fresh"), d.path().join("empty"));
    let other = d.path().join("other");
    install(&b.v1, &upgraded);
    install(&b.v2, &fresh);
    install(&b.v3, &other);
    std::fs::create_dir_all(&empty).unwrap();

    // A site that runs v3 (neither the delta's base v1 nor its release v2), and a site
    // with nothing installed: refused before any change, naming the releases.
    let refusals = [
        (&other, "builds on airlock-demo 1.0.0 (manifest sha256 "),
        (&other, "this site runs airlock-demo 2.0.0"),
        (&empty, "no installed release is recorded here"),
    ];
    for (root, says) in refusals {
        let before = exact(root);
        let o = upgrade_cmd(&b.v2_delta, root, &[], &[]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let shown = text(&o);
        assert!(shown.contains(says), "{shown}");
        assert!(shown.contains("hint:"), "{shown}");
        let changed = diff(&before, &exact(root));
        assert!(changed.is_empty(), "a refused delta changed the root:\n{}", changed.join("\n"));
    }

    // Over v1: the same installed tree as the full v2 bundle gives, and the same release.
    let o = upgrade_cmd(&b.v2_delta, &upgraded, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let differences = diff(&tree(&fresh), &tree(&upgraded));
    assert!(differences.is_empty(), "delta-upgraded tree differs from a fresh v2 install:\n{}", differences.join("\n"));
    let release = |root: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/release.json")).unwrap()).unwrap()
    };
    assert_eq!(release(&upgraded)["manifest_sha256"], release(&fresh)["manifest_sha256"]);
    let current = |root: &Path| std::fs::read_link(root.join("var/lib/airlock/releases/current")).unwrap();
    assert_eq!(current(&upgraded), current(&fresh), "the release id does not depend on how the release came");
}

#[test]
fn the_same_delta_again_after_its_upgrade_is_already_installed() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let (upgraded, fresh) = (d.path().join("upgraded"), d.path().join("fresh"));
    install(&b.v1, &upgraded);
    install(&b.v2, &fresh);
    let o = upgrade_cmd(&b.v2_delta, &upgraded, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Applied again, and on a site that got the same release from the full bundle: as
    // the full bundle again, "already installed", exit 0, nothing changed or journaled.
    for root in [&upgraded, &fresh] {
        let journal_before = std::fs::read(root.join("var/lib/airlock/upgrade.json")).ok();
        let before = exact(root);
        let o = upgrade_cmd(&b.v2_delta, root, &[], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("release 1.1.0-") && text(&o).contains("is already installed"), "{}", text(&o));
        let changed = diff(&before, &exact(root));
        assert!(changed.is_empty(), "the delta again changed the root:\n{}", changed.join("\n"));
        assert_eq!(std::fs::read(root.join("var/lib/airlock/upgrade.json")).ok(), journal_before, "journaled");
    }
}

#[test]
fn the_vendor_key_given_at_install_is_kept_so_upgrade_needs_no_pubkey() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    // Before the install no key is trusted here: the hint names the key directory
    // under the target root.
    let bare = |args: &[&str]| {
        Command::new(cargo_bin("airlock")).args(args).arg("--root").arg(&root).stdin(Stdio::null()).output().unwrap()
    };
    std::fs::create_dir_all(&root).unwrap();
    let o = bare(&["upgrade", b.v2.to_str().unwrap(), "--yes"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let keys_dir = root.join("etc/airlock/keys");
    assert!(text(&o).contains(&format!("{}/", keys_dir.display())), "{}", text(&o));

    install(&b.v1, &root);
    let pubkey = std::fs::read_to_string(demo_dir().join("keys/demo.pub")).unwrap();
    let kept: Vec<PathBuf> = std::fs::read_dir(&keys_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap().trim(), pubkey.trim(), "the --pubkey key is kept");
    let journal = std::fs::read_to_string(root.join("var/lib/airlock/journal.json")).unwrap();
    assert!(journal.contains("keys/statements"), "the key step is journaled: {journal}");
    let inventory = std::fs::read_to_string(root.join("var/lib/airlock/installed.json")).unwrap();
    assert!(inventory.contains(&kept[0].strip_prefix(&root).unwrap().display().to_string()), "{inventory}");

    let o = bare(&["upgrade", b.v2.to_str().unwrap(), "--yes"]);
    assert!(o.status.success(), "upgrade without --pubkey: {}", text(&o));
    assert!(kept[0].is_file(), "the key stays trusted after the upgrade");
}

#[test]
fn an_upgrade_dry_run_writes_nothing_under_the_root_and_removes_its_temporary_staging() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let (root, tmp) = (d.path().join("root"), d.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    install(&b.v1, &root);
    let everything = |root: &Path| {
        walk(root, |_| true, |_, path, mode| format!("file {mode:04o} {}", sha(&std::fs::read(path).unwrap())))
    };
    let before = everything(&root);
    for bundle in [&b.v2, &b.v2_delta] {
        let o = airlock(&["upgrade", "--dry-run"], bundle, &root, &[("TMPDIR", tmp.to_str().unwrap())]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("1.1.0"), "{}", text(&o));
        assert_eq!(diff(&before, &everything(&root)), Vec::<String>::new(), "the dry run wrote under the root");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the dry run left its temporary staging");
    }
}

#[test]
fn the_installed_bundle_again_is_already_installed() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    install(&b.v1, d.path());
    let o = upgrade_cmd(&b.v1, d.path(), &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is already installed"), "{}", text(&o));
    assert!(!d.path().join("var/lib/airlock/upgrade.json").exists(), "nothing was journaled");
}

#[test]
fn the_same_version_built_again_with_a_change_is_refused_with_the_way_out() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    install(&b.v1, d.path());
    // The vendor changed a value and rebuilt without a new version.
    let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
    let changed = spec.replace(
        "backupClient: quay.io/minio/mc:RELEASE.2024-11-21T17-21-54Z",
        "backupClient: docker.io/airlock-demo/tools:1.0.0",
    );
    assert_ne!(changed, spec);
    let rebuilt = build(&changed, &d.path().join("rebuilt"), &[]);
    let before = exact(d.path());
    let o = upgrade_cmd(&rebuilt, d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(i32::from(EXIT_POLICY)), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("1.0.0 is installed already, from another bundle"), "{out}");
    for way_out in
        ["a bundle built again is another bundle", "give the rebuilt release a new", "--allow-policy-override"]
    {
        assert!(out.contains(way_out), "the refusal does not say {way_out:?}: {out}");
    }
    assert!(diff(&before, &exact(d.path())).is_empty(), "the refused upgrade changed the root");
}

#[test]
fn a_downgrade_is_refused_with_its_exit_code_unless_overridden_which_is_journaled() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    install(&b.v2, d.path());
    let before = exact(d.path());
    let o = upgrade_cmd(&b.v1, d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(EXIT_POLICY as i32), "{}", text(&o));
    assert!(text(&o).contains("older than the installed 1.1.0"), "{}", text(&o));
    assert!(text(&o).contains("hint: ") && text(&o).contains("--allow-policy-override"), "{}", text(&o));
    assert!(diff(&before, &exact(d.path())).is_empty(), "a refused upgrade changed the root");

    let o = upgrade_cmd(&b.v1, d.path(), &["--allow-policy-override"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("POLICY OVERRIDDEN"), "{}", text(&o));
    let j = journal(d.path());
    assert!(j["policy_overridden"][0].as_str().unwrap().contains("older than"), "{j}");
}

#[test]
fn skipping_a_required_release_is_refused() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    install(&b.v1, d.path());
    let o = upgrade_cmd(&b.v3, d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(EXIT_POLICY as i32), "{}", text(&o));
    assert!(text(&o).contains("1.1.0 is a required release"), "{}", text(&o));
}

#[test]
fn pruning_keeps_n_releases_but_never_the_current_or_previous_one() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    install(&b.v1, d.path());
    assert!(upgrade_cmd(&b.v2, d.path(), &["--keep", "2"], &[]).status.success());
    let o = upgrade_cmd(&b.v3, d.path(), &["--keep", "1"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let releases = d.path().join("var/lib/airlock/releases");
    let mut ids: Vec<String> = std::fs::read_dir(&releases)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "keep 1 still keeps current and previous: {ids:?}");
    assert!(ids[0].starts_with("1.1.0-") && ids[1].starts_with("2.0.0-"), "{ids:?}");
    assert!(text(&o).contains("pruned releases: 1.0.0-"), "{}", text(&o));
}

#[test]
fn a_crash_at_each_upgrade_phase_resumes_to_the_upgraded_tree_or_rolls_back_to_the_old_one() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let reference = d.path().join("reference");
    install(&b.v1, &reference);
    assert!(upgrade_cmd(&b.v2, &reference, &[], &[]).status.success());
    let upgraded = tree(&reference);

    let crashes: Vec<(&str, &str)> = vec![
        (upgrade::CRASH_AFTER_PHASE_ENV, "staged"),
        (upgrade::CRASH_AFTER_PHASE_ENV, "backed-up"),
        // Within the apply, after the new app chart is written and before the records.
        ("AIRLOCK_TEST_CRASH_AFTER", "k3s/file/var/lib/rancher/k3s/server/manifests/airlock-airlock-app.yaml"),
        (upgrade::CRASH_AFTER_PHASE_ENV, "applied"),
        (upgrade::CRASH_AFTER_PHASE_ENV, "flipped"),
    ];
    for (i, (env, at)) in crashes.iter().enumerate() {
        for roll_back in [false, true] {
            let root = d.path().join(format!("crash-{i}-{roll_back}"));
            install(&b.v1, &root);
            let v1 = exact(&root);
            let crashed = upgrade_cmd(&b.v2, &root, &[], &[(env, at)]);
            assert!(!crashed.status.success(), "no crash after {at}: {}", text(&crashed));
            // `status` names the pending upgrade and how to finish it.
            let st = airlock_status(&root);
            assert!(st.contains("upgrade") && st.contains("airlock upgrade"), "status after a crash at {at}: {st}");
            if roll_back {
                let o = upgrade_cmd(&b.v2, &root, &["--rollback"], &[]);
                assert!(o.status.success(), "rollback after a crash at {at}: {}", text(&o));
                let back = diff(&v1, &exact(&root));
                assert!(back.is_empty(), "rollback after a crash at {at} left:\n{}", back.join("\n"));
                // The node is as v1 installed it: healthy, no drift, no interrupted run.
                let (code, st) = airlock_status_code(&root);
                assert_eq!(code, Some(0), "status after the rollback of a crash at {at}: {st}");
            } else {
                let o = upgrade_cmd(&b.v2, &root, &[], &[]);
                assert!(o.status.success(), "resume after a crash at {at}: {}", text(&o));
                let left = diff(&upgraded, &tree(&root));
                assert!(left.is_empty(), "resume after a crash at {at} differs:\n{}", left.join("\n"));
            }
            assert_ne!(journal(&root)["outcome"], "running");
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

#[test]
fn a_crash_during_a_rollback_is_finished_by_the_next_run_and_never_resumes_the_upgrade() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    // Entering the rollback; after the files are back; after the pointers flipped.
    let points = ["rolling-back", "rollback-restored", "rollback-flipped"];
    for (i, at) in points.iter().enumerate() {
        // The re-run is `--rollback` for one half and a plain `upgrade` for the other:
        // both must finish the rollback, never carry the upgrade on.
        for explicit in [true, false] {
            let root = d.path().join(format!("rb-{i}-{explicit}"));
            install(&b.v1, &root);
            let v1 = exact(&root);
            let crashed = upgrade_cmd(&b.v2, &root, &[], &[(upgrade::CRASH_AFTER_PHASE_ENV, "flipped")]);
            assert!(!crashed.status.success(), "no crash after flipped: {}", text(&crashed));
            // A secret answer only the new release's answers had, kept 0600 beside the
            // others: the rollback must take it away with the rest of that release.
            let extra = root.join("var/lib/airlock/secrets/answers-keycloak_database.password");
            std::fs::write(&extra, b"only-v2-knew-this").unwrap();
            std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o600)).unwrap();
            let crashed = upgrade_cmd(&b.v2, &root, &["--rollback"], &[(upgrade::CRASH_AFTER_PHASE_ENV, at)]);
            assert!(!crashed.status.success(), "no crash at {at}: {}", text(&crashed));
            assert_eq!(journal(&root)["phase"], "rolling-back", "journal after a crash at {at}");

            let (args, want): (&[&str], i32) =
                if explicit { (&["--rollback"], 0) } else { (&[], EXIT_ROLLED_BACK as i32) };
            let o = upgrade_cmd(&b.v2, &root, args, &[]);
            assert_eq!(o.status.code(), Some(want), "re-run after a crash at {at} (explicit {explicit}): {}", text(&o));
            let back = diff(&v1, &exact(&root));
            assert!(back.is_empty(), "re-run after a crash at {at} left:\n{}", back.join("\n"));
            assert_eq!(journal(&root)["outcome"], "rolled-back", "after a crash at {at}");
            let (code, st) = airlock_status_code(&root);
            assert_eq!(code, Some(0), "status after finishing a rollback crashed at {at}: {st}");
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

/// What a cluster's upgrade runs on the nodes it upgraded before another one failed.
#[test]
fn rollback_after_a_finished_upgrade_puts_the_previous_release_back_byte_for_byte_once() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    install(&b.v1, &root);
    let v1 = exact(&root);
    let o = upgrade_cmd(&b.v2, &root, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(journal(&root)["outcome"], "succeeded");
    let o = upgrade_cmd(&b.v2, &root, &["--rollback"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let back = diff(&v1, &exact(&root));
    assert!(back.is_empty(), "not byte for byte after undoing a finished upgrade:\n{}", back.join("\n"));
    assert_eq!(journal(&root)["outcome"], "rolled-back");
    // Undone once: v1 is current now, and there is nothing more to undo.
    let o = upgrade_cmd(&b.v2, &root, &["--rollback"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing to roll back"), "{}", text(&o));
}

#[test]
fn a_run_after_a_crash_once_the_gate_had_failed_rolls_back_instead_of_continuing() {
    let b = bundles();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    install(&b.v1, &root);
    let v1 = exact(&root);
    let crashed = upgrade_cmd(&b.v2, &root, &[], &[(upgrade::CRASH_AFTER_PHASE_ENV, "flipped")]);
    assert!(!crashed.status.success(), "{}", text(&crashed));
    // What a crash right after the gate failed leaves: the same files, and the journal
    // at `gate-failed` with the gate's error (a target root's gate cannot fail by itself).
    let path = root.join("var/lib/airlock/upgrade.json");
    let mut j = journal(&root);
    j["phase"] = "gate-failed".into();
    j["error"] = "node demo-node: Ready=False".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();

    // A dry run says what the next run does and does not do it.
    let half = exact(&root);
    let o = airlock(&["upgrade", "--dry-run"], &b.v2, &root, &[]);
    assert!(o.status.success() && text(&o).contains("rolled back on the next run"), "{}", text(&o));
    assert!(diff(&half, &exact(&root)).is_empty(), "the dry run changed the root");
    assert_eq!(journal(&root)["phase"], "gate-failed");

    let o = upgrade_cmd(&b.v2, &root, &[], &[]);
    assert_eq!(o.status.code(), Some(EXIT_ROLLED_BACK as i32), "{}", text(&o));
    assert!(text(&o).contains("Ready=False") && text(&o).contains("was put back"), "{}", text(&o));
    let back = diff(&v1, &exact(&root));
    assert!(back.is_empty(), "not v1 after the automatic rollback:\n{}", back.join("\n"));
    assert_eq!(journal(&root)["outcome"], "rolled-back");
    let (code, st) = airlock_status_code(&root);
    assert_eq!(code, Some(0), "{st}");
    assert!(st.contains("failed and was rolled back: node demo-node: Ready=False"), "{st}");
}

fn airlock_status(root: &Path) -> String {
    airlock_status_code(root).1
}

fn airlock_status_code(root: &Path) -> (Option<i32>, String) {
    let o = Command::new(cargo_bin("airlock")).arg("status").arg("--root").arg(root).output().unwrap();
    (o.status.code(), text(&o))
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// v1 installed live on a recording host, with embedded etcd or SQLite; returns the
/// host, the charts v1 installed and every file's digest after the install.
fn live_v1(etcd: bool) -> (RecordingHost, Vec<String>, BTreeMap<String, String>) {
    let b = bundles();
    let keys = trusted_keys(&[demo_dir().join("keys/demo.pub")], Path::new("/")).unwrap();
    let answers_path = demo_dir().join("answers.yaml");
    let answers = Answers::load(&answers_path).unwrap();
    let host = RecordingHost::new(true).unwrap();
    host.expect_command(&["systemctl"], CommandOutput::ok(""));

    // v1, installed live as `airlock install` does it.
    let prepared = prepare(&b.v1, &keys, &answers, &host, &Silent).unwrap();
    let opts = ApplyOptions {
        overrides: Vec::new(),
        ..ApplyOptions::new(airlock_installer::state::STATE_DIR, "airlock install demo.airlock")
    };
    apply(&prepared.plan, &host, &opts, &mut |_| {}).unwrap();
    let text = std::fs::read_to_string(&answers_path).unwrap();
    upgrade::keep_install(
        &host,
        &prepared.staged.dir,
        &prepared.staged.manifest,
        airlock_installer::site::answers::kept::InstallAnswers::File { text: &text, origin: "answers.yaml" },
        upgrade::DEFAULT_KEEP,
    )
    .unwrap();
    // A server with embedded etcd: the backup takes an etcd snapshot.
    // Or the SQLite datastore of a single server: copied with the unit stopped.
    let db = host.root().join("var/lib/rancher/k3s/server/db");
    if etcd {
        std::fs::create_dir_all(db.join("etcd")).unwrap();
    } else {
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("state.db"), b"SQLite format 3\0 the cluster").unwrap();
    }
    let before = exact(host.root());
    (host, prepared.live.charts.clone(), before)
}

/// The API server's answer to the upgrade's question about the other servers (asked
/// with a request timeout, so a dead API server cannot hang the upgrade).
fn expect_servers(host: &RecordingHost, servers: &[(&str, &str)]) {
    let items: Vec<serde_json::Value> = servers
        .iter()
        .map(|(n, r)| serde_json::json!({"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": r}]}}))
        .collect();
    let list = kubectl(&["get", "nodes", "-l", "node-role.kubernetes.io/control-plane"]);
    host.expect_command(&refs(&list), CommandOutput::ok(serde_json::json!({ "items": items }).to_string()));
}

fn live_opts(restore_datastore: bool, allow_policy_override: bool) -> UpgradeOptions {
    UpgradeOptions {
        answers: None,
        dry_run: false,
        allow_policy_override,
        rollback: false,
        restore_datastore,
        keep: upgrade::DEFAULT_KEEP,
        wait: WaitOptions { timeout: Duration::from_secs(60), poll: Duration::from_secs(5) },
        preflight_overrides: Vec::new(),
        resume_command: "airlock upgrade v2.airlock --yes".into(),
        answers_file: None,
    }
}

/// v1 installed live on a recording host (embedded etcd), then the upgrade to v2 whose
/// gate fails; returns the host, the failure, and every file's digest before the upgrade.
fn failed_live_upgrade(
    restore_datastore: bool,
    etcd: bool,
) -> (RecordingHost, upgrade::UpgradeFailure, BTreeMap<String, String>) {
    failed_live_upgrade_to(&bundles().v2, restore_datastore, etcd)
}

/// [`failed_live_upgrade`] to another bundle.
fn failed_live_upgrade_to(
    to: &Path,
    restore_datastore: bool,
    etcd: bool,
) -> (RecordingHost, upgrade::UpgradeFailure, BTreeMap<String, String>) {
    let keys = trusted_keys(&[demo_dir().join("keys/demo.pub")], Path::new("/")).unwrap();
    let (host, charts, before) = live_v1(etcd);
    // An HA cluster: the other server is Ready, so this one may start.
    expect_servers(&host, &[("demo-node", "True"), ("server-2", "True")]);

    // What the site answers: the snapshot and the dump work; after the restart on v2
    // the node never gets Ready within the gate (13 polls over 60 s); once v1 is back
    // it is Ready, its charts are installed and its endpoints answer.
    host.expect_command(&["k3s", "etcd-snapshot", "save"], CommandOutput::ok("Snapshot airlock-upgrade saved"));
    let dump = kubectl_streaming(&["-n", "app", "exec"]);
    host.expect_command(&refs(&dump), CommandOutput::ok("-- PostgreSQL database dump\n"));
    let node = kubectl(&["get", "node", "demo-node"]);
    host.expect_command(&refs(&node), CommandOutput::ok("True"));
    host.expect_command_times(&refs(&node), CommandOutput::ok("False"), 13);
    for c in &charts {
        let job = kubectl(&["-n", "kube-system", "get", &format!("job/helm-install-{c}")]);
        host.expect_command(&refs(&job), CommandOutput::ok("1/"));
    }
    expect_healthy_demo_endpoints(&host);
    host.take_calls();

    let clock = TestClock(std::cell::Cell::new(Instant::now()));
    let opts = live_opts(restore_datastore, false);
    host.expect_command(&["k3s", "server", "--cluster-reset"], CommandOutput::ok("restored"));
    let failure = upgrade::run(to, &keys, &host, &opts, &clock, &Silent).expect_err("the gate fails");
    (host, failure, before)
}

fn runs(host: &RecordingHost) -> Vec<String> {
    host.calls()
        .iter()
        .filter_map(|c| match c {
            HostCall::Run { argv } => Some(argv.join(" ")),
            _ => None,
        })
        .collect()
}

#[test]
fn another_server_not_ready_refuses_the_upgrade_before_the_backup_unless_overridden_and_journaled() {
    let b = bundles();
    let keys = trusted_keys(&[demo_dir().join("keys/demo.pub")], Path::new("/")).unwrap();
    let (host, _, before) = live_v1(true);
    expect_servers(&host, &[("demo-node", "True"), ("server-2", "False"), ("server-3", "True")]);
    host.take_calls();
    let clock = TestClock(std::cell::Cell::new(Instant::now()));
    let failure = upgrade::run(&b.v2, &keys, &host, &live_opts(false, false), &clock, &Silent)
        .expect_err("server-2 is not Ready");
    assert_eq!(failure.exit_code, EXIT_POLICY, "{}", failure.error);
    let e = failure.error.to_string();
    assert!(e.contains("server server-2 (Ready=False) not Ready") && e.contains("one at a time"), "{e}");
    // Refused before the first change: no snapshot, no dump, no restart, same files.
    let ran = runs(&host);
    assert!(ran.iter().all(|r| !r.contains("etcd-snapshot") && !r.contains("restart")), "{ran:#?}");
    assert!(ran.iter().any(|r| r.contains("get nodes -l node-role.kubernetes.io/control-plane")), "{ran:#?}");
    assert!(diff(&before, &exact(host.root())).is_empty(), "a refused upgrade changed files");

    // With the override, the upgrade goes ahead (its gate then fails here, which does
    // not matter) and the journal says what was overridden.
    expect_servers(&host, &[("demo-node", "True"), ("server-2", "False")]);
    host.expect_command(&["k3s", "etcd-snapshot", "save"], CommandOutput::ok("Snapshot airlock-upgrade saved"));
    let dump = kubectl_streaming(&["-n", "app", "exec"]);
    host.expect_command(&refs(&dump), CommandOutput::ok("-- PostgreSQL database dump\n"));
    let node = kubectl(&["get", "node", "demo-node"]);
    host.expect_command(&refs(&node), CommandOutput::ok("False"));
    let _ = upgrade::run(&b.v2, &keys, &host, &live_opts(false, true), &clock, &Silent);
    let j = journal(host.root());
    let overridden = j["policy_overridden"].as_array().expect("policy_overridden in the journal");
    assert!(
        overridden.iter().any(|v| v.as_str().unwrap_or("").starts_with("server server-2 (Ready=False) not Ready")),
        "{j:#}"
    );
}

#[test]
fn a_failing_health_gate_puts_the_previous_release_back_byte_for_byte_after_a_recorded_backup() {
    let (host, failure, before) = failed_live_upgrade(false, true);
    assert_eq!(failure.exit_code, EXIT_ROLLED_BACK, "{}", failure.error);
    assert!(failure.error.to_string().contains("Ready=False"), "{}", failure.error);
    assert!(
        failure.error.hint.as_deref().unwrap_or_default().contains("datastore was NOT restored"),
        "{}",
        failure.error
    );
    let restore = failure.restore_datastore_command.expect("the restore command is given");
    assert!(restore.contains("k3s server --cluster-reset --cluster-reset-restore-path="), "{restore}");

    let back = diff(&before, &exact(host.root()));
    assert!(back.is_empty(), "not byte for byte after the rollback:\n{}", back.join("\n"));
    let current = std::fs::read_link(host.root().join("var/lib/airlock/releases/current")).unwrap();
    assert!(current.to_string_lossy().starts_with("1.0.0-"), "{current:?}");

    let runs = runs(&host);
    assert!(!runs.iter().any(|r| r.contains("--cluster-reset")), "no datastore restore without consent: {runs:#?}");
    let snapshot = runs
        .iter()
        .position(|r| r.starts_with("k3s etcd-snapshot save --name airlock-upgrade --dir /var/lib/airlock/backups/"));
    let dump = runs.iter().position(|r| r.contains("exec statefulset/airlock-app-postgresql") && r.contains("pg_dump"));
    let restart = runs.iter().position(|r| r == "systemctl restart k3s.service");
    assert!(snapshot.is_some() && dump.is_some(), "backup commands: {runs:#?}");
    assert!(snapshot < restart && dump < restart, "the backup comes before the new release starts: {runs:#?}");
    assert_eq!(runs.iter().filter(|r| *r == "systemctl restart k3s.service").count(), 2, "new, then old: {runs:#?}");
    let j = journal(host.root());
    assert_eq!(j["outcome"], "rolled-back", "{j}");
    let bk = PathBuf::from(j["backup"]["dir"].as_str().unwrap());
    let sql = host.root().join(bk.strip_prefix("/").unwrap()).join("app-db.sql");
    assert_eq!(std::fs::read_to_string(&sql).unwrap(), "-- PostgreSQL database dump\n");
    assert_eq!(sql.metadata().unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn with_restore_datastore_the_rollback_resets_etcd_from_the_backup_snapshot_with_the_unit_stopped() {
    let (host, failure, _) = failed_live_upgrade(true, true);
    assert_eq!(failure.exit_code, EXIT_ROLLED_BACK, "{}", failure.error);
    assert!(failure.restore_datastore_command.is_none(), "restored, so no command to run by hand");
    let runs = runs(&host);
    let stop = runs.iter().rposition(|r| r == "systemctl stop k3s.service").expect("stopped");
    let reset = runs
        .iter()
        .position(|r| {
            r.starts_with("k3s server --cluster-reset --cluster-reset-restore-path=/var/lib/airlock/backups/")
        })
        .expect("reset from the backup");
    let start = runs.iter().rposition(|r| r == "systemctl start k3s.service").expect("started");
    assert!(stop < reset && reset < start, "{runs:#?}");
}

#[test]
fn without_etcd_the_backup_copies_the_sqlite_datastore_with_the_unit_stopped_and_rollback_can_put_it_back() {
    let (host, failure, _) = failed_live_upgrade(true, false);
    assert_eq!(failure.exit_code, EXIT_ROLLED_BACK, "{}", failure.error);
    let runs = runs(&host);
    assert!(!runs.iter().any(|r| r.contains("etcd-snapshot")), "{runs:#?}");
    let stop = runs.iter().position(|r| r == "systemctl stop k3s.service").expect("stopped for the copy");
    let start = runs.iter().position(|r| r == "systemctl start k3s.service").expect("started after the copy");
    let restart = runs.iter().position(|r| r == "systemctl restart k3s.service").unwrap();
    assert!(stop < start && start < restart, "the copy is taken before the new release starts: {runs:#?}");
    let j = journal(host.root());
    assert_eq!(j["backup"]["datastore"], "sqlite-copy", "{j}");
    let bk = PathBuf::from(j["backup"]["dir"].as_str().unwrap());
    let copy = host.root().join(bk.strip_prefix("/").unwrap()).join("datastore/var/lib/rancher/k3s/server/db/state.db");
    assert_eq!(std::fs::read(&copy).unwrap(), b"SQLite format 3\0 the cluster");
    // --restore-datastore wrote that copy back in place, with the unit stopped.
    assert_eq!(runs.iter().filter(|r| *r == "systemctl stop k3s.service").count(), 2, "backup and restore: {runs:#?}");
    let calls = host.calls();
    let is_run = |c: &HostCall, cmd: &str| matches!(c, HostCall::Run { argv } if argv.join(" ") == cmd);
    let second_stop = calls.iter().rposition(|c| is_run(c, "systemctl stop k3s.service")).unwrap();
    let last_start = calls.iter().rposition(|c| is_run(c, "systemctl start k3s.service")).unwrap();
    let db = Path::new("/var/lib/rancher/k3s/server/db/state.db");
    let written = calls.iter().rposition(|c| matches!(c, HostCall::WriteFile { path, .. } if path == db));
    assert!(written.is_some_and(|w| second_stop < w && w < last_start), "restore order: {runs:#?}");
    assert_eq!(
        std::fs::read(host.root().join("var/lib/rancher/k3s/server/db/state.db")).unwrap(),
        b"SQLite format 3\0 the cluster"
    );
}

/// The pre-upgrade backup stays unencrypted on the host (the automatic rollback needs
/// it without the recovery key, which is kept off the site: docs/backup.md), so only
/// root may reach it: the backups directory, the backup and its datastore copy are
/// 0700, and every secret in it (the CA key, the generated credentials and secret
/// answers, the record) is 0600. (The kept answers file holds no secret: those are in
/// the secrets directory.)
#[test]
fn the_pre_upgrade_backup_is_root_only_and_its_secrets_are_0600() {
    let (host, failure, _) = failed_live_upgrade(false, false);
    assert_eq!(failure.exit_code, EXIT_ROLLED_BACK, "{}", failure.error);
    let j = journal(host.root());
    let bk = host.root().join(j["backup"]["dir"].as_str().unwrap().trim_start_matches('/'));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    for dir in [host.root().join("var/lib/airlock/backups"), bk.clone(), bk.join("datastore")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let secrets = bk.join("files/var/lib/airlock/secrets");
    let mut checked = vec![bk.join("backup.json"), bk.join("files/etc/airlock/pki/ca.key")];
    checked.extend(std::fs::read_dir(&secrets).unwrap().map(|e| e.unwrap().path()));
    assert!(checked.len() > 4, "the generated credentials are in the backup: {checked:?}");
    for f in &checked {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

/// The renderers tag each file with the upgrade group it belongs to; this pins, on the
/// demo's real plan, that the tags say what the paths mean (the upgrade applies the
/// groups in order: secrets and directories, images, distribution, charts, records).
#[test]
fn every_step_of_the_demo_plan_carries_the_upgrade_group_its_target_belongs_to() {
    use airlock_installer::engine::layout::StepGroup;
    let b = bundles();
    let keys = trusted_keys(&[demo_dir().join("keys/demo.pub")], Path::new("/")).unwrap();
    let answers = Answers::load(&demo_dir().join("answers.yaml")).unwrap();
    let host = RecordingHost::new(false).unwrap();
    let prepared = prepare(&b.v1, &keys, &answers, &host, &Silent).unwrap();
    let records = [
        airlock_installer::state::INVENTORY_PATH,
        airlock_installer::state::UNINSTALL_LIST_PATH,
        airlock_installer::state::RELEASE_PATH,
        airlock_installer::state::REPORT_PATH,
    ];
    let mut seen = BTreeMap::new();
    for step in prepared.plan.steps() {
        let id = step.id();
        let want = if records.iter().any(|p| id.ends_with(p)) || id == airlock_installer::bundle::keys::STEP_ID {
            StepGroup::Records
        } else if id.contains("/dir/")
            || id.contains("/etc/airlock/pki")
            || id.contains("/var/lib/airlock/secrets/")
            // The report key's public half goes with its secret half.
            || id.ends_with(airlock_installer::ops::report::REPORT_PUBKEY_PATH)
            // The certificates' expiry for the monitoring component: a record of the PKI.
            || id.contains("/var/lib/airlock/metrics/")
        {
            StepGroup::Secrets
        } else if id.contains("/agent/images/") {
            StepGroup::Images
        } else if id.contains("/server/manifests/") || id.contains("/server/static/") {
            StepGroup::Charts
        } else {
            StepGroup::Distribution
        };
        assert_eq!(step.group(), want, "step {id}");
        *seen.entry(format!("{want:?}")).or_insert(0) += 1;
    }
    // Every group is exercised by the demo plan.
    assert_eq!(seen.len(), 5, "{seen:?}");
}

/// The demo with the vendor's own monitoring content: 1.1.0 with the reference rules and
/// dashboards except `ExportQueueBacklog`'s threshold (50 -> 80) and the Database
/// dashboard's title; 1.2.0 as 1.1.0 without the Security dashboard. Built once.
struct MonitoringBundles {
    v2: PathBuf,
    v3: PathBuf,
}

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests";
const PROMETHEUS_MANIFEST: &str = "airlock-prometheus.yaml";
const DASHBOARDS_MANIFEST: &str = "airlock-monitoring-configmap-grafana-dashboards.yaml";

fn monitoring_bundles() -> &'static MonitoringBundles {
    static B: OnceLock<MonitoringBundles> = OnceLock::new();
    B.get_or_init(|| {
        let dir = bundles().v1.parent().unwrap().parent().unwrap().join("monitoring");
        let assets = airlock_tests::workspace_root().join("assets/monitoring");
        let content = |name: &str, drop: Option<&str>| -> (PathBuf, PathBuf) {
            let (rules, boards) = (dir.join(name).join("rules"), dir.join(name).join("dashboards"));
            std::fs::create_dir_all(&rules).unwrap();
            std::fs::create_dir_all(&boards).unwrap();
            let alerts = std::fs::read_to_string(assets.join("rules/alerts.yaml")).unwrap();
            let changed =
                alerts.replace("max(servanda_export_queue_depth) > 50", "max(servanda_export_queue_depth) > 80");
            assert_ne!(changed, alerts);
            std::fs::write(rules.join("alerts.yaml"), changed).unwrap();
            for e in std::fs::read_dir(assets.join("dashboards")).unwrap() {
                let p = e.unwrap().path();
                let file = p.file_name().unwrap().to_string_lossy().into_owned();
                if Some(file.as_str()) == drop {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let text = text.replace("\"title\": \"Database\",", "\"title\": \"Database (pool and queries)\",");
                std::fs::write(boards.join(file), text).unwrap();
            }
            (rules, boards)
        };
        let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
        let with = |version: &str, (rules, boards): (PathBuf, PathBuf)| {
            let s = spec.replace("version: 1.0.0\n", &format!("version: {version}\n"));
            format!("{s}monitoring:\n  rules: {}\n  dashboards: {}\n", rules.display(), boards.display())
        };
        let v2 = with("1.1.0", content("v2", None));
        let v3 = with("1.2.0", content("v3", Some("airlock-security.json")));
        MonitoringBundles { v2: build(&v2, &dir.join("v2"), &[]), v3: build(&v3, &dir.join("v3"), &[]) }
    })
}

/// The values a HelmChart manifest under the root carries.
fn helm_values(root: &Path, file: &str) -> serde_yaml::Value {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join(MANIFESTS).join(file)).unwrap()).unwrap();
    serde_yaml::from_str(doc["spec"]["valuesContent"].as_str().unwrap()).unwrap()
}

/// The `expr` of one alert as the deployed prometheus HelmChart carries it.
fn deployed_alert_expr(root: &Path, alert: &str) -> String {
    let v = helm_values(root, PROMETHEUS_MANIFEST);
    let groups = v["serverFiles"]["alerting_rules.yml"]["groups"].as_sequence().unwrap().clone();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .find(|r| r["alert"].as_str() == Some(alert))
        .and_then(|r| r["expr"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no alert {alert} deployed"))
}

/// Dashboard file -> title, as the deployed ConfigMap carries them.
fn deployed_dashboards(root: &Path) -> BTreeMap<String, String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join(MANIFESTS).join(DASHBOARDS_MANIFEST)).unwrap())
            .unwrap();
    doc["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let d: serde_json::Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
            (k.as_str().unwrap().to_string(), d["title"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The manifest files an upgrade's plan shows as changed (`file ~`), by file name.
fn changed_manifests(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.trim_start().strip_prefix("file     ~    "))
        .filter_map(|p| p.strip_prefix(&format!("/{MANIFESTS}/")))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_upgrade_deploys_the_bundles_changed_rules_and_dashboards_and_one_that_drops_a_dashboard_removes_it() {
    let b = bundles();
    let m = monitoring_bundles();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    install(&b.v1, &root);
    assert!(deployed_alert_expr(&root, "ExportQueueBacklog").contains("> 50"));
    assert_eq!(deployed_dashboards(&root)["airlock-database.json"], "Database");

    // The plan names exactly the two objects that carry the content: the prometheus
    // HelmChart (its rule file is in the values) and the dashboards ConfigMap.
    let o = airlock(&["upgrade", "--dry-run"], &m.v2, &root, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(changed_manifests(&text(&o)), [DASHBOARDS_MANIFEST, PROMETHEUS_MANIFEST], "{}", text(&o));

    let o = upgrade_cmd(&m.v2, &root, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(deployed_alert_expr(&root, "ExportQueueBacklog").contains("> 80"), "the changed threshold is deployed");
    let boards = deployed_dashboards(&root);
    assert_eq!(boards["airlock-database.json"], "Database (pool and queries)");
    assert_eq!(boards.len(), 6);
    // What Prometheus now loads is what the vendor shipped, and real promtool takes it.
    if let Some(promtool) = airlock_tests::require_tool("promtool") {
        let rules = helm_values(&root, PROMETHEUS_MANIFEST)["serverFiles"]["alerting_rules.yml"].clone();
        let file = d.path().join("alerting_rules.yml");
        std::fs::write(&file, serde_yaml::to_string(&rules).unwrap()).unwrap();
        let o = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
        assert!(o.status.success() && text(&o).contains("SUCCESS: 11 rules found"), "{}", text(&o));
    }

    // 1.2.0 drops the Security dashboard: gone from the ConfigMap Grafana mounts as a
    // directory, and Grafana's provider deletes what it provisioned from a file that
    // is gone (it would keep it, orphaned, with `disableDeletion: true`).
    let o = airlock(&["upgrade", "--dry-run"], &m.v3, &root, &[]);
    assert_eq!(changed_manifests(&text(&o)), [DASHBOARDS_MANIFEST], "{}", text(&o));
    let o = upgrade_cmd(&m.v3, &root, &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let boards = deployed_dashboards(&root);
    assert!(!boards.contains_key("airlock-security.json") && boards.len() == 5, "{boards:?}");
    let providers = &helm_values(&root, "airlock-grafana.yaml")["dashboardProviders"]["dashboardproviders.yaml"];
    assert_eq!(providers["providers"][0]["disableDeletion"].as_bool(), Some(false));
}

#[test]
fn a_failing_health_gate_puts_the_previous_releases_rules_and_dashboards_back_byte_for_byte() {
    let m = monitoring_bundles();
    let (host, failure, before) = failed_live_upgrade_to(&m.v2, false, true);
    assert_eq!(failure.exit_code, EXIT_ROLLED_BACK, "{}", failure.error);
    // The new release's content was deployed before the gate failed ...
    let written: Vec<String> = host
        .calls()
        .iter()
        .filter_map(|c| match c {
            HostCall::WriteFile { path, .. } => Some(path.display().to_string()),
            _ => None,
        })
        .collect();
    for f in [PROMETHEUS_MANIFEST, DASHBOARDS_MANIFEST] {
        assert!(written.iter().any(|p| p.ends_with(&format!("/{MANIFESTS}/{f}"))), "{f} not written: {written:#?}");
    }
    // ... and the rollback put the old one back, byte for byte.
    let back = diff(&before, &exact(host.root()));
    assert!(back.is_empty(), "not byte for byte after the rollback:\n{}", back.join("\n"));
    for f in [PROMETHEUS_MANIFEST, DASHBOARDS_MANIFEST] {
        assert!(before.contains_key(&format!("/{MANIFESTS}/{f}")), "{f} is not among the compared files");
    }
    assert!(deployed_alert_expr(host.root(), "ExportQueueBacklog").contains("> 50"));
    assert_eq!(deployed_dashboards(host.root())["airlock-database.json"], "Database");
}
