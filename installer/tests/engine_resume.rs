//! The engine against real files under a temporary target root: crash and resume,
//! idempotence, rollback, the lock, and secrets.
//!
//! The crash test re-executes this test binary as a child that runs one scenario
//! (`crash_child_applies_the_fixture_plan`) with `AIRLOCK_TEST_CRASH_AFTER` set, so
//! the child really dies with `abort()` mid-install, as a kill or power loss would.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use airlock_installer::engine::layout::{FileSource, Layout, PlannedFile, PlannedUser};
use airlock_installer::engine::{
    apply, layout_steps, ApplyOptions, Journal, Outcome, Plan, RunContext, Step, StepState, StepStatus, CRASH_AFTER_ENV,
};
use airlock_installer::host::{CommandOutput, Host, HostCall, RecordingHost, RootedHost};

const STATE: &str = "/var/lib/airlock";
const RESUME: &str = "airlock install --bundle /media/platform.airlock --answers site.yaml";
const TOKEN: &str = "K10d1f6c0ffee::server:7a3c9e1b5d2f4a68";
const CHILD_ENV: &str = "AIRLOCK_ENGINE_TEST_CHILD";

const UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\nWants=network-online.target\n\n[Service]\nType=notify\nEnvironmentFile=-/etc/systemd/system/k3s.service.env\nExecStart=/usr/local/bin/k3s server\nKillMode=process\nDelegate=yes\nLimitNOFILE=1048576\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n";

/// A target root, with the staging directory a verified bundle left behind.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    staging: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let staging = dir.path().join("staging");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    fs::create_dir_all(staging.join("distribution")).unwrap();
    // Big enough that copies and comparisons stream in several chunks.
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(staging.join("distribution/k3s"), binary).unwrap();
    Fixture { _dir: dir, root, staging }
}

/// What the K3s component lays down, in miniature.
fn k3s_layout() -> Layout {
    let mut l = Layout::default();
    l.dir("/etc/rancher/k3s", 0o755);
    l.dir("/var/lib/rancher/k3s/agent/images", 0o755);
    l.dir("/var/lib/rancher/k3s/server", 0o700);
    l.file(
        "/etc/rancher/k3s/config.yaml",
        0o600,
        "write-kubeconfig-mode: \"0644\"\ndisable-default-registry-endpoint: true\nembedded-registry: true\n",
    );
    l.file(
        "/etc/rancher/k3s/registries.yaml",
        0o644,
        "mirrors:\n  docker.io:\n    endpoint: [\"https://registry.example:5000\"]\n",
    );
    l.secret_file("/var/lib/rancher/k3s/server/token", TOKEN);
    l.staged("/usr/local/bin/k3s", 0o755, "distribution/k3s");
    l.file("/etc/systemd/system/k3s.service", 0o644, UNIT);
    l.link("/usr/local/bin/kubectl", "k3s");
    l.link("/usr/local/bin/crictl", "k3s");
    l.link("/usr/local/bin/ctr", "k3s");
    l.units.push("k3s.service".to_string());
    l.users.push(PlannedUser { name: "etcd".into(), home: "/var/lib/etcd".into(), shell: "/sbin/nologin".into() });
    l
}

fn plan(fx: &Fixture) -> Plan {
    Plan::from_steps(layout_steps("k3s", &k3s_layout(), &fx.staging)).unwrap()
}

fn host(fx: &Fixture) -> RootedHost {
    RootedHost::new(fx.root.clone(), false).unwrap()
}

fn opts() -> ApplyOptions {
    ApplyOptions { state_dir: STATE.into(), resume_command: RESUME.to_string(), overrides: Vec::new() }
}

fn journal(host: &dyn Host) -> Journal {
    Journal::load(host, Path::new(STATE)).unwrap().expect("a journal")
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Link { target: PathBuf },
}

/// Everything under the root except the installer's own state directory.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = Path::new("/").join(e.path().strip_prefix(root).unwrap());
        if rel.starts_with(STATE) {
            continue;
        }
        let m = e.path().symlink_metadata().unwrap();
        let mode = m.mode() & 0o7777;
        let node = if m.file_type().is_symlink() {
            Node::Link { target: fs::read_link(e.path()).unwrap() }
        } else if m.is_dir() {
            Node::Dir { mode }
        } else {
            Node::File { mode, content: fs::read(e.path()).unwrap() }
        };
        out.insert(rel, node);
    }
    out
}

/// Not a test on its own: the child process of `install_resumes_after_crash_at_each_step`.
/// Without its environment variable it does nothing.
#[test]
fn crash_child_applies_the_fixture_plan() {
    let Ok(dirs) = std::env::var(CHILD_ENV) else { return };
    let (root, staging) = dirs.split_once('\n').expect("root and staging");
    let fx = Fixture { _dir: tempfile::tempdir().unwrap(), root: root.into(), staging: staging.into() };
    // Expected to abort inside; returning at all fails the parent's assertion.
    let _ = apply(&plan(&fx), &host(&fx), &opts(), &mut |_| {});
}

#[test]
fn install_resumes_after_crash_at_each_step() {
    let clean = fixture();
    apply(&plan(&clean), &host(&clean), &opts(), &mut |_| {}).unwrap();
    let want = tree(&clean.root);
    let ids: Vec<String> = plan(&clean).steps().iter().map(|s| s.id().to_string()).collect();
    assert!(ids.len() >= 12, "a realistic plan: {ids:?}");

    for (crash_index, crash_id) in ids.iter().enumerate() {
        let fx = fixture();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_applies_the_fixture_plan", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}\n{}", fx.root.display(), fx.staging.display()))
            .env(CRASH_AFTER_ENV, crash_id)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(nix::libc::SIGABRT), "the child must die right after {crash_id}");

        let host = host(&fx);
        let crashed = journal(&host);
        assert_eq!(crashed.outcome, Outcome::Running, "a crashed run never finishes its journal");
        assert_eq!(crashed.steps.last().map(|r| r.id.as_str()), Some(crash_id.as_str()));

        let report = apply(&plan(&fx), &host, &opts(), &mut |_| {}).unwrap();
        assert_eq!(report.resumed.as_deref(), Some(crashed.run_id.as_str()));
        let resumed = journal(&host);
        assert_eq!(resumed.outcome, Outcome::Succeeded);

        // Every step was applied exactly once over both runs: by the crashed run up to
        // the crash, and by the resumed run after it, which found the rest satisfied.
        for (i, id) in ids.iter().enumerate() {
            let (before, after) = (crashed.status_of(id), resumed.status_of(id));
            if i <= crash_index {
                assert_eq!(before, Some(StepStatus::Applied), "{id} before the crash at {crash_id}");
                assert_eq!(after, Some(StepStatus::Satisfied), "{id} after the crash at {crash_id}");
            } else {
                assert_eq!(before, None, "{id} ran after the crash at {crash_id}?");
                assert_eq!(after, Some(StepStatus::Applied), "{id} after the crash at {crash_id}");
            }
        }
        assert_eq!(report.applied, ids.len() - crash_index - 1);
        assert_eq!(tree(&fx.root), want, "the tree after a crash at {crash_id} and a resume");
    }
}

#[test]
fn second_run_of_a_finished_install_has_nothing_pending() {
    let fx = fixture();
    let first = apply(&plan(&fx), &host(&fx), &opts(), &mut |_| {}).unwrap();
    assert_eq!(first.applied, plan(&fx).len());

    let report = plan(&fx).check(&host(&fx)).unwrap();
    assert_eq!((report.pending, report.blocked), (0, 0), "{report:#?}");

    let recording = RecordingHost::with_root(fx.root.clone(), false).unwrap();
    let mut seen = Vec::new();
    let second = apply(&plan(&fx), &recording, &opts(), &mut |id| seen.push(id.to_string())).unwrap();
    assert_eq!((second.applied, second.satisfied), (0, plan(&fx).len()));
    assert_eq!(seen.len(), plan(&fx).len(), "a checkpoint for every step");
    // The only writes are the installer's own bookkeeping.
    for call in recording.calls().iter().filter(|c| c.changes_host()) {
        let path = match call {
            HostCall::WriteFile { path, .. }
            | HostCall::CreateDir { path, .. }
            | HostCall::RemoveAll { path }
            | HostCall::Lock { path } => path,
            other => panic!("a finished install changed the host: {other:?}"),
        };
        assert!(path.starts_with(STATE), "a finished install wrote {}", path.display());
    }
}

/// The state a site had before we came: an older config, a kubectl of its own, a
/// server directory with other permissions, and a `manifests` *file* where the plan
/// needs a directory — the step that will fail.
fn prepare_existing_site(fx: &Fixture) {
    let r = &fx.root;
    fs::create_dir_all(r.join("etc/rancher/k3s")).unwrap();
    fs::write(r.join("etc/rancher/k3s/config.yaml"), "# written by hand\nnode-ip: 10.0.0.5\n").unwrap();
    fs::set_permissions(r.join("etc/rancher/k3s/config.yaml"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::os::unix::fs::symlink("/opt/kubectl-1.29/kubectl", r.join("usr/local/bin/kubectl")).unwrap();
    fs::create_dir_all(r.join("var/lib/rancher/k3s/server")).unwrap();
    fs::write(r.join("var/lib/rancher/k3s/server/manifests"), "not a directory\n").unwrap();
}

#[test]
fn failed_step_rolls_back_this_runs_changes_byte_for_byte() {
    let fx = fixture();
    prepare_existing_site(&fx);
    let before = tree(&fx.root);
    let mut p = plan(&fx);
    let mut apps = Layout::default();
    apps.file("/var/lib/rancher/k3s/server/manifests/minio.yaml", 0o644, "apiVersion: helm.cattle.io/v1\n");
    let failing = "apps/file/var/lib/rancher/k3s/server/manifests/minio.yaml";
    p.extend(layout_steps("apps", &apps, &fx.staging)).unwrap();
    let host = host(&fx);

    let err = apply(&p, &host, &opts(), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(err.cause.contains(&format!("step `{failing}` failed")), "{text}");
    assert!(text.contains("/var/lib/rancher/k3s/server/manifests is in the way"), "{text}");
    assert!(err.hint.as_deref().unwrap().contains(RESUME), "{text}");

    // Everything this run changed is back, byte for byte and mode for mode; only the
    // user stays (not reversible), and the journal says so.
    let mut after = tree(&fx.root);
    let mut expected = before;
    for db in ["/etc/passwd", "/etc/group"] {
        let (Some(Node::File { content: now, .. }), Some(Node::File { content: was, .. })) =
            (after.remove(Path::new(db)), expected.remove(Path::new(db)))
        else {
            panic!("{db} missing")
        };
        let added = String::from_utf8(now[was.len()..].to_vec()).unwrap();
        assert!(now.starts_with(&was) && added.starts_with("etcd:") && added.lines().count() == 1, "{db}: {added}");
    }
    assert_eq!(after, expected);

    let j = journal(&host);
    assert_eq!(j.outcome, Outcome::RolledBack);
    assert_eq!(j.status_of(failing), Some(StepStatus::Failed));
    for id in ["k3s/file/etc/rancher/k3s/config.yaml", "k3s/link/usr/local/bin/kubectl", "k3s/unit/k3s.service"] {
        assert_eq!(j.status_of(id), Some(StepStatus::RolledBack), "{id}");
    }
    let user = j.steps.iter().find(|r| r.id == "k3s/user/etcd").unwrap();
    assert_eq!((user.status, user.note.as_deref()), (StepStatus::Applied, Some("not reversible; left in place")));
    assert!(!fx.root.join(j.backup_dir.strip_prefix("/").unwrap()).exists(), "backups go once rolled back");
}

/// Fails after deleting this run's backups, as a full disk or a stray `rm` might.
struct SabotageStep {
    backup_dir: Mutex<Option<PathBuf>>,
}

impl Step for SabotageStep {
    fn id(&self) -> &str {
        "test/sabotage"
    }
    fn describe(&self) -> String {
        "delete this run's backups, then fail".into()
    }
    fn check(&self, _host: &dyn Host) -> Result<StepState> {
        Ok(StepState::Pending { change: "sabotage".into() })
    }
    fn apply(&self, host: &dyn Host) -> Result<()> {
        host.remove_all(self.backup_dir.lock().unwrap().as_ref().unwrap())?;
        Err(Error::io("/var/lib/rancher/k3s/server/db", std::io::Error::from_raw_os_error(28)))
    }
    fn rollback(&self, _host: &dyn Host) -> Result<bool> {
        Ok(false)
    }
    fn begin(&self, run: &RunContext) {
        *self.backup_dir.lock().unwrap() = Some(run.backup_dir.clone());
    }
}

#[test]
fn rollback_failure_reports_both_errors() {
    let fx = fixture();
    prepare_existing_site(&fx);
    fs::remove_file(fx.root.join("var/lib/rancher/k3s/server/manifests")).unwrap();
    let mut p = plan(&fx);
    p.push(Box::new(SabotageStep { backup_dir: Mutex::new(None) })).unwrap();
    let host = host(&fx);

    let err = apply(&p, &host, &opts(), &mut |_| {}).unwrap_err();
    let text = err.to_string();
    // The failure itself, with its own hint…
    assert!(err.cause.contains("step `test/sabotage` failed: No space left on device"), "{text}");
    assert!(err.hint.as_deref().unwrap().contains("free space"), "{text}");
    // …and the rollback that could not restore the replaced config.
    assert!(
        err.cause.contains("rolling back step `k3s/file/etc/rancher/k3s/config.yaml` also failed")
            && err.cause.contains("backup"),
        "{text}"
    );
    let hint = err.hint.as_deref().unwrap();
    assert!(hint.contains(RESUME) && hint.contains("/var/lib/airlock/journal.json"), "{text}");

    let j = journal(&host);
    assert_eq!(j.outcome, Outcome::RollbackFailed);
    let config = j.steps.iter().find(|r| r.id == "k3s/file/etc/rancher/k3s/config.yaml").unwrap();
    assert_eq!(config.status, StepStatus::Applied);
    assert!(config.error.as_deref().unwrap().starts_with("rollback failed"), "{config:?}");
    // A failed rollback of one step does not stop the others.
    assert_eq!(j.status_of("k3s/file/var/lib/rancher/k3s/server/token"), Some(StepStatus::RolledBack));
    assert!(!fx.root.join("var/lib/rancher/k3s/server/token").exists());
}

#[test]
fn concurrent_apply_is_refused_by_the_lock() {
    let fx = fixture();
    let (first_plan, second_plan) = (plan(&fx), plan(&fx));
    let (first_host, second_host) = (host(&fx), host(&fx));
    let mut second = None;
    apply(&first_plan, &first_host, &opts(), &mut |_| {
        if second.is_none() {
            second = Some(apply(&second_plan, &second_host, &opts(), &mut |_| {}));
        }
    })
    .unwrap();

    let err = second.expect("the checkpoint ran").unwrap_err();
    let text = err.to_string();
    assert!(err.subject.contains("/var/lib/airlock/lock"), "{text}");
    assert!(err.cause.contains(&format!("pid {}", std::process::id())), "{text}");
    assert!(err.hint.is_some(), "{text}");
    // Released with the first run: the next one gets it.
    apply(&second_plan, &second_host, &opts(), &mut |_| {}).unwrap();
}

#[test]
fn secret_files_are_0600_and_never_in_the_plan_or_journal() {
    let fx = fixture();
    let mut layout = k3s_layout();
    // A secret whose layout asks for 0644: the secret flag wins.
    layout.files.push(PlannedFile {
        path: "/etc/systemd/system/k3s.service.env".into(),
        mode: 0o644,
        source: FileSource::Inline(format!("K3S_TOKEN={TOKEN}\n").into_bytes()),
        secret: true,
        group: Default::default(),
    });
    let recording = RecordingHost::with_root(fx.root.clone(), false).unwrap();
    let p = Plan::from_steps(layout_steps("k3s", &layout, &fx.staging)).unwrap();
    let planned = serde_json::to_string(&p.check(&recording).unwrap()).unwrap();
    apply(&p, &recording, &opts(), &mut |_| {}).unwrap();

    for f in ["var/lib/rancher/k3s/server/token", "etc/systemd/system/k3s.service.env"] {
        assert_eq!(fs::metadata(fx.root.join(f)).unwrap().mode() & 0o7777, 0o600, "{f}");
    }

    // A new token: the update is planned and applied (backing up the old one) without
    // either token showing up anywhere.
    const NEW_TOKEN: &str = "K10feedface::server:0b1c2d3e4f5a6b7c";
    let mut rotated = Layout::default();
    rotated.secret_file("/var/lib/rancher/k3s/server/token", NEW_TOKEN);
    let p2 = Plan::from_steps(layout_steps("k3s", &rotated, &fx.staging)).unwrap();
    let report = p2.check(&recording).unwrap();
    assert_eq!(
        report.steps[0].state,
        StepState::Pending { change: "update (secret content differs; not shown)".into() }
    );
    let replanned = serde_json::to_string(&report).unwrap();
    apply(&p2, &recording, &opts(), &mut |_| {}).unwrap();
    assert_eq!(fs::read_to_string(fx.root.join("var/lib/rancher/k3s/server/token")).unwrap(), NEW_TOKEN);

    let journal = fs::read_to_string(fx.root.join("var/lib/airlock/journal.json")).unwrap();
    let calls = serde_json::to_string(&recording.calls()).unwrap();
    for (what, text) in
        [("plan", &planned), ("updated plan", &replanned), ("journal", &journal), ("host calls", &calls)]
    {
        for secret in [TOKEN, NEW_TOKEN, "7a3c9e1b", "0b1c2d3e"] {
            assert!(!text.contains(secret), "the {what} shows a secret");
        }
    }
    // The backup of the old token was written 0600, as a secret.
    assert!(recording.calls().iter().any(|c| matches!(c,
        HostCall::WriteFile { path, mode: 0o600, note: Some(n), .. }
            if path.starts_with("/var/lib/airlock/backup") && n == "secret")));
}

#[test]
fn live_apply_adds_users_and_enables_units_through_their_tools() {
    let fx = fixture();
    let recording = RecordingHost::with_root(fx.root.clone(), true).unwrap();
    recording.expect_command(&["getent", "passwd", "etcd"], CommandOutput::exit(2, ""));
    recording.expect_command(&["getent", "group", "etcd"], CommandOutput::exit(2, ""));
    recording.expect_command(&["useradd"], CommandOutput::ok(""));
    recording.expect_command(
        &["systemctl", "is-enabled", "k3s.service"],
        CommandOutput { status: 1, stdout: "disabled\n".into(), stderr: String::new() },
    );
    recording.expect_command(&["systemctl", "enable", "k3s.service"], CommandOutput::ok(""));

    let report = apply(&plan(&fx), &recording, &opts(), &mut |_| {}).unwrap();
    assert_eq!(report.applied, plan(&fx).len());
    let commands: Vec<String> = recording
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::Run { argv } => Some(argv.join(" ")),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [
            "getent passwd etcd",
            "getent passwd etcd",
            "getent group etcd",
            "useradd --system --no-create-home --home-dir /var/lib/etcd --shell /sbin/nologin --user-group etcd",
            "systemctl is-enabled k3s.service",
            "systemctl enable k3s.service",
        ]
    );
    // Live, the unit is enabled by systemctl, not by a link of ours.
    assert!(!fx.root.join("etc/systemd/system/multi-user.target.wants").exists());
}

#[test]
fn a_run_removes_the_temporary_files_and_backups_a_killed_run_left_and_nothing_else() {
    let fx = fixture();
    let k3s = fx.root.join("etc/rancher/k3s");
    std::fs::create_dir_all(&k3s).unwrap();
    // What a run killed mid-write leaves: a temp file of a file the plan writes (one
    // holding a secret, say), and the backup directory of its run.
    let leftover = k3s.join(".config.yaml.airlock-4242-7.tmp");
    std::fs::write(&leftover, "token: half-written secret").unwrap();
    let old_backup = fx.root.join(STATE.trim_start_matches('/')).join("backup/20261201T000000Z-4242-0");
    std::fs::create_dir_all(&old_backup).unwrap();
    std::fs::write(old_backup.join("config.yaml"), "the previous config").unwrap();
    // Not ours: a file of the operator's with a similar name stays.
    let theirs = k3s.join(".config.yaml.airlock-old.tmp");
    std::fs::write(&theirs, "kept").unwrap();

    apply(&plan(&fx), &host(&fx), &opts(), &mut |_| {}).unwrap();
    assert!(!leftover.exists(), "the killed run's temp file is still there");
    assert!(!old_backup.exists(), "the killed run's backup is still there");
    assert!(theirs.exists(), "a file that is not one of ours was removed");
    assert!(k3s.join("config.yaml").is_file());
}
