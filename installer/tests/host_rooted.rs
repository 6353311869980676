//! The rooted host on real files: path safety, users and units under a target root,
//! and the recording double. Where the real tool exists here (`systemctl --root`,
//! `useradd --prefix`), the files we leave are compared with the ones it leaves.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_format::error::ErrorKind;
use airlock_installer::engine::layout::PlannedUser;
use airlock_installer::host::{CommandOutput, FileKind, Host, HostCall, Perms, RecordingHost, RootedHost};

const K3S_UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\n[Service]\nExecStart=/usr/local/bin/k3s server\n[Install]\nWantedBy=multi-user.target\n";
const RKE2_UNIT: &str = "[Unit]\nDescription=Rancher Kubernetes Engine v2 (server)\n[Service]\nExecStart=/usr/local/bin/rke2 server\n[Install]\nWantedBy=multi-user.target\n";

fn rooted(dir: &Path) -> RootedHost {
    fs::create_dir_all(dir).unwrap();
    RootedHost::new(dir.to_path_buf(), false).unwrap()
}

fn write(host: &dyn Host, path: &str, content: &str) -> airlock_format::error::Result<u64> {
    host.write_file(Path::new(path), &mut content.as_bytes(), Perms::mode(0o644))
}

/// Whether a tool can be run here; tests that compare with it say so when it cannot.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--help").output().is_ok();
    if !found {
        eprintln!("SKIPPED the comparison with `{tool}`: it is not installed here");
    }
    found
}

#[test]
fn target_paths_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), "keep").unwrap();
    let host = rooted(&root);

    // Relative paths and `..` are refused before anything is touched, and the error
    // names the path and the root.
    for bad in ["etc/x", "/etc/../../outside/victim", "/etc/rancher/../../../outside/x"] {
        let err = write(&host, bad, "x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsafe, "{bad}: {err}");
        assert!(err.subject.contains(bad) && err.subject.contains(&root.display().to_string()), "{err}");
    }
    assert!(host.create_dir(Path::new("/var/../../x"), 0o755).is_err());
    assert!(host.symlink(Path::new("/../x"), Path::new("y")).is_err());
    assert!(host.remove(Path::new("/..")).is_err());

    // A link in the root pointing at a host path is followed *inside* the root, as
    // the target system will see it once booted.
    std::os::unix::fs::symlink(&outside, root.join("etc/evil")).unwrap();
    write(&host, "/etc/evil/x", "data").unwrap();
    assert!(!outside.join("x").exists(), "wrote outside the root");
    let inside = root.join(outside.strip_prefix("/").unwrap()).join("x");
    assert_eq!(fs::read_to_string(inside).unwrap(), "data");

    // A relative link that climbs above the root is refused.
    std::os::unix::fs::symlink("../../../../../../../../..", root.join("etc/up")).unwrap();
    let err = write(&host, "/etc/up/tmp/x", "data").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsafe);
    assert!(err.to_string().contains("leads out of the target root"), "{err}");
    assert!(err.subject.contains("/etc/up/tmp/x") && err.subject.contains(&root.display().to_string()));

    // A link at the final component is replaced, never written through…
    std::os::unix::fs::symlink(outside.join("victim"), root.join("etc/shadowed")).unwrap();
    write(&host, "/etc/shadowed", "new").unwrap();
    assert!(fs::symlink_metadata(root.join("etc/shadowed")).unwrap().is_file());
    assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "keep");
    // …and reading through one stays inside the root too.
    std::os::unix::fs::symlink(outside.join("victim"), root.join("etc/peek")).unwrap();
    assert_eq!(host.read_file(Path::new("/etc/peek")).unwrap(), None);

    // Real roots keep working: merged /usr (`/lib -> usr/lib`) resolves inside.
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    write(&host, "/lib/systemd/system/k3s.service", K3S_UNIT).unwrap();
    assert!(root.join("usr/lib/systemd/system/k3s.service").is_file());
}

#[test]
fn files_are_written_atomically_with_exact_modes_and_parents_0755() {
    let dir = tempfile::tempdir().unwrap();
    let host = rooted(dir.path());
    let target = Path::new("/etc/rancher/k3s/config.yaml");
    host.write_file(target, &mut &b"a: 1\n"[..], Perms::mode(0o640)).unwrap();
    host.write_file(Path::new("/run/k3s/token"), &mut &b"t"[..], Perms { mode: 0o644, secret: true }).unwrap();
    host.create_dir(Path::new("/var/lib/rancher/k3s/server"), 0o700).unwrap();

    let mode = |p: &str| fs::metadata(dir.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("etc/rancher/k3s/config.yaml"), 0o640);
    assert_eq!(mode("run/k3s/token"), 0o600, "a secret is 0600 whatever it asks for");
    assert_eq!(mode("etc/rancher"), 0o755);
    assert_eq!(mode("var/lib/rancher/k3s/server"), 0o700);
    host.create_dir(Path::new("/var/lib/rancher/k3s/server"), 0o750).unwrap();
    assert_eq!(mode("var/lib/rancher/k3s/server"), 0o750);

    // Replacing leaves no temp files behind, and a directory in the way is refused.
    host.write_file(target, &mut &b"a: 2\n"[..], Perms::mode(0o640)).unwrap();
    let names: Vec<_> =
        fs::read_dir(dir.path().join("etc/rancher/k3s")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["config.yaml"]);
    let err = write(&host, "/var/lib/rancher", "x").unwrap_err();
    assert!(err.cause.contains("directory is in the way"), "{err}");
}

#[test]
fn units_are_enabled_by_symlink_under_a_root() {
    let dir = tempfile::tempdir().unwrap();
    let lay_out = |root: &Path| {
        let host = rooted(root);
        write(&host, "/etc/systemd/system/k3s.service", K3S_UNIT).unwrap();
        write(&host, "/usr/local/lib/systemd/system/rke2-server.service", RKE2_UNIT).unwrap();
        host
    };
    let host = lay_out(&dir.path().join("ours"));
    let root = host.root().to_path_buf();

    assert!(!host.unit_enabled("k3s.service").unwrap());
    host.enable_unit("k3s.service").unwrap();
    host.enable_unit("k3s.service").unwrap();
    host.enable_unit("rke2-server.service").unwrap();
    assert!(host.unit_enabled("k3s.service").unwrap() && host.unit_enabled("rke2-server.service").unwrap());
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    assert_eq!(fs::read_link(wants.join("k3s.service")).unwrap(), Path::new("/etc/systemd/system/k3s.service"));
    assert_eq!(
        fs::read_link(wants.join("rke2-server.service")).unwrap(),
        Path::new("/usr/local/lib/systemd/system/rke2-server.service")
    );

    // Exactly what `systemctl --root` leaves, where it can be run.
    if have("systemctl") {
        let theirs = lay_out(&dir.path().join("theirs"));
        let status = Command::new("systemctl")
            .arg(format!("--root={}", theirs.root().display()))
            .args(["enable", "k3s.service", "rke2-server.service"])
            .output()
            .unwrap();
        assert!(status.status.success(), "systemctl --root: {}", String::from_utf8_lossy(&status.stderr));
        let links = |root: &Path| -> Vec<(PathBuf, PathBuf)> {
            walkdir::WalkDir::new(root.join("etc/systemd/system"))
                .sort_by_file_name()
                .into_iter()
                .map(|e| e.unwrap())
                .filter(|e| e.path_is_symlink())
                .map(|e| (e.path().strip_prefix(root).unwrap().to_path_buf(), fs::read_link(e.path()).unwrap()))
                .collect()
        };
        assert_eq!(links(&root), links(theirs.root()));
    }

    host.disable_unit("k3s.service").unwrap();
    assert!(!host.unit_enabled("k3s.service").unwrap());
    // (symlink_metadata: the links point at target paths, which `exists()` would follow on this host.)
    assert!(fs::symlink_metadata(wants.join("k3s.service")).is_err());
    assert!(fs::symlink_metadata(wants.join("rke2-server.service")).is_ok());

    let err = host.enable_unit("missing.service").unwrap_err();
    assert!(err.subject == "missing.service" && err.hint.is_some(), "{err}");
    assert!(host.enable_unit("../../etc/passwd").is_err(), "a unit name is not a path");
}

#[test]
fn user_is_added_to_passwd_and_group_under_a_root_once() {
    let dir = tempfile::tempdir().unwrap();
    let seed = |root: &Path| {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:998:998::/:/usr/sbin/nologin\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\nsystemd-network:x:998:\nrke2:x:990:\n").unwrap();
        fs::write(root.join("etc/shadow"), "root:*:20000:0:99999:7:::\n").unwrap();
        fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    };
    let root = dir.path().join("ours");
    seed(&root);
    let host = rooted(&root);
    let etcd = PlannedUser { name: "etcd".into(), home: "/var/lib/etcd".into(), shell: "/sbin/nologin".into() };

    assert!(!host.user_exists("etcd").unwrap());
    assert!(host.ensure_user(&etcd).unwrap());
    assert!(!host.ensure_user(&etcd).unwrap(), "the second time there is nothing to do");
    assert!(host.user_exists("etcd").unwrap());

    let read = |root: &Path, f: &str| fs::read_to_string(root.join("etc").join(f)).unwrap();
    let line = |root: &Path, f: &str, name: &str| {
        let text = read(root, f);
        let lines: Vec<String> =
            text.lines().filter(|l| l.starts_with(&format!("{name}:"))).map(String::from).collect();
        assert_eq!(lines.len(), 1, "{name} in {f}: {text}");
        lines[0].clone()
    };
    assert_eq!(line(&root, "passwd", "etcd"), "etcd:x:997:997::/var/lib/etcd:/sbin/nologin");
    assert_eq!(line(&root, "group", "etcd"), "etcd:!:997:");
    assert!(line(&root, "shadow", "etcd").starts_with("etcd:!:"));
    assert_eq!(fs::metadata(root.join("etc/shadow")).unwrap().mode() & 0o7777, 0o640, "shadow keeps its mode");

    // An existing group is reused, not duplicated.
    let rke2 = PlannedUser { name: "rke2".into(), home: "/var/lib/rancher/rke2".into(), shell: "/sbin/nologin".into() };
    host.ensure_user(&rke2).unwrap();
    assert_eq!(line(&root, "passwd", "rke2"), "rke2:x:996:990::/var/lib/rancher/rke2:/sbin/nologin");
    assert_eq!(line(&root, "group", "rke2"), "rke2:x:990:");

    // The same lines `useradd --prefix` writes, where it can be run.
    if have("useradd") {
        let theirs = dir.path().join("theirs");
        seed(&theirs);
        let out = Command::new("useradd")
            .arg("--prefix")
            .arg(&theirs)
            .args(["--system", "--no-create-home", "--home-dir", "/var/lib/etcd", "--shell", "/sbin/nologin"])
            .args(["--user-group", "etcd"])
            .output()
            .unwrap();
        if out.status.success() {
            for f in ["passwd", "group", "shadow"] {
                assert_eq!(line(&root, f, "etcd"), line(&theirs, f, "etcd"), "{f}");
            }
        } else {
            eprintln!("SKIPPED the comparison with useradd --prefix: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    let bad = PlannedUser { name: "x:0:0".into(), home: "/".into(), shell: "/bin/sh".into() };
    assert!(host.ensure_user(&bad).is_err(), "a name cannot inject passwd fields");
}

#[test]
fn recording_host_records_calls_and_scripted_commands() {
    const TOKEN: &str = "K10abcdef::server:1234567890";
    let host = RecordingHost::new(true).unwrap();
    host.expect_command(&["getent", "passwd", "etcd"], CommandOutput::exit(2, ""));
    host.expect_command(&["getent", "group", "etcd"], CommandOutput::exit(2, ""));
    host.expect_command(&["useradd"], CommandOutput::ok(""));
    host.expect_command(&["systemctl", "enable"], CommandOutput::ok(""));
    host.expect_command(
        &["systemctl", "enable", "broken.service"],
        CommandOutput::exit(1, "Unit file broken.service does not exist.\n"),
    );

    let etcd = PlannedUser { name: "etcd".into(), home: "/var/lib/etcd".into(), shell: "/sbin/nologin".into() };
    assert!(host.ensure_user(&etcd).unwrap());
    host.enable_unit("k3s.service").unwrap();
    host.write_file(Path::new("/etc/rancher/k3s/config.yaml"), &mut &b"cluster-init: true\n"[..], Perms::mode(0o600))
        .unwrap();
    host.write_file(Path::new("/var/lib/rancher/k3s/server/token"), &mut TOKEN.as_bytes(), Perms::secret()).unwrap();

    let run = |argv: &str| HostCall::Run { argv: argv.split(' ').map(String::from).collect() };
    assert_eq!(
        host.calls(),
        [
            HostCall::EnsureUser { name: "etcd".into(), home: "/var/lib/etcd".into(), shell: "/sbin/nologin".into() },
            run("getent passwd etcd"),
            run("getent group etcd"),
            run("useradd --system --no-create-home --home-dir /var/lib/etcd --shell /sbin/nologin --user-group etcd"),
            HostCall::EnableUnit { unit: "k3s.service".into() },
            run("systemctl enable k3s.service"),
            HostCall::WriteFile {
                path: "/etc/rancher/k3s/config.yaml".into(),
                mode: 0o600,
                len: 19,
                content: Some("cluster-init: true\n".into()),
                note: None,
            },
            HostCall::WriteFile {
                path: "/var/lib/rancher/k3s/server/token".into(),
                mode: 0o600,
                len: TOKEN.len() as u64,
                content: None,
                note: Some("secret".into()),
            },
        ]
    );
    assert!(!serde_json::to_string(&host.calls()).unwrap().contains(TOKEN));
    // The files are real, under the recorder's root.
    assert_eq!(fs::read_to_string(host.root().join("var/lib/rancher/k3s/server/token")).unwrap(), TOKEN);

    // A scripted failure is reported with what the tool said; the latest script wins.
    let err = host.enable_unit("broken.service").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // A command nobody scripted fails loudly rather than pretending to work.
    let err = host.run(&["rm", "-rf", "/var/lib/rancher"]).unwrap_err();
    assert!(err.cause.contains("no scripted result") && err.subject == "rm -rf /var/lib/rancher", "{err}");
    assert_eq!(host.calls().last(), Some(&run("rm -rf /var/lib/rancher")));
}

#[test]
fn nothing_is_started_under_a_root() {
    let dir = tempfile::tempdir().unwrap();
    for host in [Box::new(rooted(dir.path())) as Box<dyn Host>, Box::new(RecordingHost::new(false).unwrap())] {
        let err = host.run(&["systemctl", "start", "k3s.service"]).unwrap_err();
        assert!(err.cause.contains("nothing is started under --root"), "{err}");
    }
    let err = RootedHost::new(dir.path().to_path_buf(), true).unwrap_err();
    assert!(err.cause.contains("root must be /"), "{err}");
}

#[test]
fn a_staged_file_is_hard_linked_into_a_fresh_target_and_copied_over_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let host = rooted(&dir.path().join("root"));
    let staged = dir.path().join("staged.tar");
    fs::write(&staged, b"image archive").unwrap();
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).unwrap();

    let n = host.copy_file(&staged, Path::new("/var/lib/images/a.tar"), Perms::mode(0o644)).unwrap();
    assert_eq!(n, 13);
    let placed = dir.path().join("root/var/lib/images/a.tar");
    let (s, p) = (fs::metadata(&staged).unwrap(), fs::metadata(&placed).unwrap());
    assert_eq!((s.ino(), s.nlink()), (p.ino(), 2), "same filesystem: one inode, no second copy");
    assert_eq!(p.mode() & 0o777, 0o644);
    assert_eq!(fs::read_dir(placed.parent().unwrap()).unwrap().count(), 1, "no temp file left");

    // A target that exists is replaced by a copy: its old inode may be shared with a
    // backup or held open, and its owner is kept as for any rewrite.
    let other = dir.path().join("other.tar");
    fs::write(&other, b"newer archive").unwrap();
    host.copy_file(&other, Path::new("/var/lib/images/a.tar"), Perms::mode(0o644)).unwrap();
    let p = fs::metadata(&placed).unwrap();
    assert_ne!(p.ino(), fs::metadata(&other).unwrap().ino());
    assert_eq!(fs::read(&placed).unwrap(), b"newer archive");
    assert_eq!(fs::read(&staged).unwrap(), b"image archive", "the staged file is untouched");
}

#[test]
fn a_file_with_other_names_is_linked_again_only_when_its_mode_stays() {
    let dir = tempfile::tempdir().unwrap();
    let host = rooted(&dir.path().join("root"));
    let staged = dir.path().join("staged.tar");
    fs::write(&staged, b"image archive").unwrap();
    host.copy_file(&staged, Path::new("/var/lib/images/a.tar"), Perms::mode(0o644)).unwrap();
    let placed = dir.path().join("root/var/lib/images/a.tar");

    // The release snapshot keeps the placed file under a third name: same mode, so
    // one inode (the image archive is gigabytes) and every name keeps 0644.
    host.copy_file(&placed, Path::new("/var/lib/keep/a.tar"), Perms::mode(0o644)).unwrap();
    let kept = fs::metadata(dir.path().join("root/var/lib/keep/a.tar")).unwrap();
    assert_eq!((kept.ino(), kept.nlink()), (fs::metadata(&staged).unwrap().ino(), 3));

    // Another mode would change it for the names it has: a copy instead.
    host.copy_file(&placed, Path::new("/var/lib/keep/b.tar"), Perms::mode(0o600)).unwrap();
    let b = fs::metadata(dir.path().join("root/var/lib/keep/b.tar")).unwrap();
    assert_ne!(b.ino(), kept.ino());
    assert_eq!(b.mode() & 0o777, 0o600);
    for name in [&staged, &placed] {
        let m = fs::metadata(name).unwrap();
        assert_eq!((m.mode() & 0o777, m.nlink()), (0o644, 3), "{}", name.display());
    }
    assert_eq!(fs::read(dir.path().join("root/var/lib/keep/b.tar")).unwrap(), b"image archive");
}

#[test]
fn directories_are_listed_by_name_without_following_links_and_renamed_within_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let host = rooted(&dir.path().join("root"));
    write(&host, "/srv/b", "b").unwrap();
    write(&host, "/srv/a/inner", "a").unwrap();
    host.symlink(Path::new("/srv/c"), Path::new("/nowhere")).unwrap();
    let listed: Vec<(String, FileKind)> =
        host.list_dir(Path::new("/srv")).unwrap().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    assert_eq!(
        listed,
        [("a".to_string(), FileKind::Dir), ("b".to_string(), FileKind::File), ("c".to_string(), FileKind::Symlink)]
    );
    assert_eq!(host.list_dir(Path::new("/missing")).unwrap(), None);
    assert!(host.list_dir(Path::new("/srv/b")).is_err(), "a file is not listed");

    host.rename(Path::new("/srv/a"), Path::new("/opt/kept/a")).unwrap();
    assert_eq!(fs::read_to_string(dir.path().join("root/opt/kept/a/inner")).unwrap(), "a");
    assert!(host.metadata(Path::new("/srv/a")).unwrap().is_none());
    assert!(host.rename(Path::new("/srv/gone"), Path::new("/srv/x")).is_err(), "nothing to rename");
}

#[test]
fn metadata_counts_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let host = rooted(&dir.path().join("root"));
    write(&host, "/one", "x").unwrap();
    assert_eq!(host.metadata(Path::new("/one")).unwrap().unwrap().nlink, 1);
    fs::hard_link(dir.path().join("root/one"), dir.path().join("root/two")).unwrap();
    assert_eq!(host.metadata(Path::new("/one")).unwrap().unwrap().nlink, 2);
}

#[test]
fn resolve_dir_creates_below_the_root_and_refuses_a_symlink_escape() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let host = rooted(&root);
    let canonical_root = fs::canonicalize(&root).unwrap();

    // An absolute link restarts at the root: the directory lands inside it.
    fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("var/lib")).unwrap();
    let made = host.resolve_dir(Path::new("/var/lib/airlock/staging"), 0o755).unwrap();
    assert!(made.starts_with(&canonical_root), "{} is below the root", made.display());
    assert!(made.is_dir());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing outside the root");

    // A relative link that climbs out is refused, and the error names the link.
    std::os::unix::fs::symlink("../../outside", root.join("var/spool")).unwrap();
    let err = host.resolve_dir(Path::new("/var/spool/x"), 0o755).unwrap_err();
    assert!(err.to_string().contains("the symlink /var/spool"), "{err}");
    // A link in the directory's own place is not followed.
    std::os::unix::fs::symlink("/elsewhere", root.join("var/run")).unwrap();
    let err = host.resolve_dir(Path::new("/var/run"), 0o755).unwrap_err();
    assert!(err.to_string().contains("/var/run"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    assert_eq!(
        host.real_path(Path::new("/var/lib/airlock")).unwrap(),
        canonical_root.join(outside.strip_prefix("/").unwrap()).join("airlock")
    );
}

#[test]
fn recording_host_records_listing_renames_and_resolved_directories() {
    let host = RecordingHost::new(false).unwrap();
    host.resolve_dir(Path::new("/var/lib/airlock/staging"), 0o755).unwrap();
    host.list_dir(Path::new("/var/lib/airlock")).unwrap();
    host.rename(Path::new("/var/lib/airlock/staging"), Path::new("/var/lib/airlock/kept")).unwrap();
    host.real_path(Path::new("/var/lib/airlock/kept")).unwrap();
    let calls = host.calls();
    assert_eq!(
        calls,
        [
            HostCall::ResolveDir { path: "/var/lib/airlock/staging".into(), mode: 0o755 },
            HostCall::ListDir { path: "/var/lib/airlock".into() },
            HostCall::Rename { from: "/var/lib/airlock/staging".into(), to: "/var/lib/airlock/kept".into() },
            HostCall::RealPath { path: "/var/lib/airlock/kept".into() },
        ]
    );
    assert_eq!(calls.iter().filter(|c| c.changes_host()).count(), 2);
}

/// Found by the `rooted` fuzz target's property: a link whose target went through a
/// missing directory and climbed back out of it with `..` (`l -> missing/../out/x`)
/// left the resolver believing nothing below existed, so `out`, a link to a host
/// directory, was never looked at and the kernel followed it: reads (and `real_path`)
/// reached host files. Every shape of "missing, then back up" must stay inside.
#[test]
fn a_link_that_climbs_back_out_of_a_missing_directory_is_still_resolved_inside() {
    for via in ["missing/../out/victim", "missing/deeper/../../out/victim", "../etc/missing/../../out/victim"] {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let (root, outside) = (base.join("root"), base.join("outside"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), "host secret").unwrap();
        let host = rooted(&root);
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/out")).unwrap();
        std::os::unix::fs::symlink(via, root.join("etc/hostname")).unwrap();

        let read = host.read_file(Path::new("/etc/hostname")).unwrap();
        assert_ne!(read.as_deref(), Some(&b"host secret"[..]), "{via}: read a host file");
        let real = host.real_path(Path::new("/etc/hostname")).unwrap();
        let mut existing = real.clone();
        while !existing.exists() {
            existing.pop();
        }
        assert!(fs::canonicalize(&existing).unwrap().starts_with(&root), "{via}: {} leads out", real.display());
        let _ = write(&host, "/etc/hostname/x", "data");
        let _ = host.create_dir(Path::new("/etc/hostname/d"), 0o755);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{via}: wrote outside the root");
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "host secret");
    }
}
