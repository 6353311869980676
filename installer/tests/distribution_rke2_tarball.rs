//! `unpack_rke2_tarball` against stand-in RKE2 tarballs built here (the real
//! `rke2.linux-<arch>.tar.gz` cannot be fetched on this machine; the stand-in has its
//! layout: `bin/`, `lib/systemd/system/`, `share/rke2/`, with `./` prefixes as GNU tar
//! writes them, and labelled stand-in contents).
//!
//! Pinned: a good tarball unpacks to exactly its files with normalised modes, is
//! described by `read_unpacked_rke2`, and renders to a layout whose every staged source
//! exists; every unsafe tarball (`..`, absolute path, escaping or written-through
//! symlink, hard link, device, FIFO, setuid, duplicate) is refused as `Unsafe` and
//! leaves nothing behind, in staging or outside it.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_format::error::ErrorKind;
use airlock_installer::engine::layout::FileSource;
use airlock_installer::render::distribution::{
    read_unpacked_rke2, render, unpack_rke2_tarball, Artifacts, DistributionInput, Role, TarballEntry,
    TarballEntryKind, Token, RKE2_UNPACK_DIR,
};
use tar::{EntryType, Header};

/// One tar member, with its name written raw into the header (so `..` and absolute
/// names can be built at all).
struct Member {
    name: &'static str,
    kind: EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<&'static str>,
}

fn dir(name: &'static str) -> Member {
    Member { name, kind: EntryType::Directory, mode: 0o755, data: vec![], link: None }
}
fn file(name: &'static str, mode: u32, text: &str) -> Member {
    Member { name, kind: EntryType::Regular, mode, data: text.as_bytes().to_vec(), link: None }
}
fn symlink(name: &'static str, target: &'static str) -> Member {
    Member { name, kind: EntryType::Symlink, mode: 0o777, data: vec![], link: Some(target) }
}

/// A stand-in `rke2.linux-amd64.tar.gz` with the real tarball's file names.
fn good_members() -> Vec<Member> {
    vec![
        // A pax global header, as `git archive` writes: metadata, nothing to unpack.
        Member {
            name: "pax_global_header",
            kind: EntryType::XGlobalHeader,
            mode: 0o666,
            data: b"52 comment=0000000000000000000000000000000000000000\n".to_vec(),
            link: None,
        },
        dir("./"),
        dir("./bin/"),
        file("./bin/rke2", 0o755, "#!/bin/sh\n# stand-in for the rke2 binary\n"),
        file("./bin/rke2-killall.sh", 0o755, "#!/bin/sh\n# stand-in for RKE2's killall script\n"),
        file("./bin/rke2-uninstall.sh", 0o755, "#!/bin/sh\n# stand-in for RKE2's uninstall script\n"),
        dir("./lib/"),
        dir("./lib/systemd/"),
        dir("./lib/systemd/system/"),
        file("./lib/systemd/system/rke2-agent.env", 0o644, "# stand-in\n"),
        file("./lib/systemd/system/rke2-agent.service", 0o644, "# stand-in unit\n"),
        file("./lib/systemd/system/rke2-server.env", 0o644, "# stand-in\n"),
        file("./lib/systemd/system/rke2-server.service", 0o644, "# stand-in unit\n"),
        dir("./share/"),
        dir("./share/rke2/"),
        file("./share/rke2/LICENSE.txt", 0o644, "stand-in license\n"),
        // Group-writable in the archive: unpacked 0644 all the same.
        file("./share/rke2/rke2-cis-sysctl.conf", 0o664, "vm.panic_on_oom=0\nkernel.panic=10\n"),
        // A setgid directory: unpacked 0755 like every directory.
        Member { name: "./share/licenses/", kind: EntryType::Directory, mode: 0o2775, data: vec![], link: None },
        symlink("./share/rke2/rke2", "../../bin/rke2"),
    ]
}

fn write_tarball(dir: &Path, members: &[Member]) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        if let Some(link) = m.link {
            let l = &mut h.as_old_mut().linkname;
            l.fill(0);
            l[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(m.kind);
        h.set_mode(m.mode);
        h.set_size(m.data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append(&h, m.data.as_slice()).unwrap();
    }
    let tar = dir.join("rke2.linux-amd64.tar");
    fs::write(&tar, builder.into_inner().unwrap()).unwrap();
    let status = Command::new("gzip").args(["-n", "-f"]).arg(&tar).status().expect("gzip");
    assert!(status.success());
    dir.join("rke2.linux-amd64.tar.gz")
}

fn input(tarball: Vec<TarballEntry>) -> DistributionInput {
    DistributionInput {
        version: "v1.31.4+rke2r1".into(),
        role: Role::SingleServer,
        node_name: "node-1".into(),
        node_ip: vec![],
        tls_san: vec![],
        token: Token::new("K10-tarball-test"),
        cluster_cidr: vec![],
        service_cidr: vec![],
        cluster_dns: None,
        disable: vec![],
        embedded_registry: false,
        secrets_encryption: false,
        cis: true,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::Rke2 { tarball, images: vec![] },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts: vec![],
        proxy_env: vec![],
        rke2_opt_prefix: None,
    }
}

#[test]
fn unpacks_the_tarball_and_renders_it_under_usr_local() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = write_tarball(tmp.path(), &good_members());
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();

    let staged = unpack_rke2_tarball(&tarball, &staging).unwrap();
    assert_eq!(
        staged,
        [
            "bin/rke2",
            "bin/rke2-killall.sh",
            "bin/rke2-uninstall.sh",
            "lib/systemd/system/rke2-agent.env",
            "lib/systemd/system/rke2-agent.service",
            "lib/systemd/system/rke2-server.env",
            "lib/systemd/system/rke2-server.service",
            "share/rke2/LICENSE.txt",
            "share/rke2/rke2",
            "share/rke2/rke2-cis-sysctl.conf",
        ]
        .map(|p| format!("{RKE2_UNPACK_DIR}/{p}"))
    );
    let mode = |p: &str| fs::metadata(staging.join(RKE2_UNPACK_DIR).join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/rke2"), 0o755);
    assert_eq!(mode("share/rke2/rke2-cis-sysctl.conf"), 0o644);
    assert_eq!(mode("share/licenses"), 0o755);
    assert!(!staging.join(format!("{RKE2_UNPACK_DIR}.partial")).exists());
    assert!(!staging.join(RKE2_UNPACK_DIR).join("pax_global_header").exists());

    let entries = read_unpacked_rke2(&staging).unwrap();
    assert!(entries.contains(&TarballEntry { path: "bin".into(), kind: TarballEntryKind::Dir }));
    assert!(
        entries.contains(&TarballEntry { path: "bin/rke2".into(), kind: TarballEntryKind::File { executable: true } })
    );
    assert!(entries.contains(&TarballEntry {
        path: "share/rke2/rke2".into(),
        kind: TarballEntryKind::Symlink { target: "../../bin/rke2".into() }
    }));

    let layout = render(&input(entries)).unwrap();
    // Every staged source of the tarball exists in staging, and lands under /usr/local.
    for f in &layout.files {
        if let FileSource::Staged(entry) = &f.source {
            if entry.starts_with(RKE2_UNPACK_DIR) {
                assert!(staging.join(entry).is_file(), "{entry} is not in staging");
            }
        }
    }
    let planned = |p: &str| layout.files.iter().find(|f| f.path == Path::new(p));
    assert_eq!(planned("/usr/local/bin/rke2").unwrap().mode, 0o755);
    assert!(planned("/usr/local/lib/systemd/system/rke2-server.service").is_some());
    assert_eq!(
        planned("/etc/sysctl.d/60-rke2-cis.conf").unwrap().source,
        FileSource::Staged(format!("{RKE2_UNPACK_DIR}/share/rke2/rke2-cis-sysctl.conf"))
    );
    assert!(layout
        .links
        .iter()
        .any(|l| l.link == Path::new("/usr/local/share/rke2/rke2") && l.target == Path::new("../../bin/rke2")));
    assert!(layout.dirs.iter().any(|d| d.path == Path::new("/usr/local/share/rke2")));

    // A second unpack replaces the first.
    fs::write(staging.join(RKE2_UNPACK_DIR).join("leftover"), "x").unwrap();
    unpack_rke2_tarball(&tarball, &staging).unwrap();
    assert!(!staging.join(RKE2_UNPACK_DIR).join("leftover").exists());
}

#[test]
fn unsafe_tarballs_are_refused_and_leave_nothing() {
    let device = || Member { name: "bin/tty", kind: EntryType::Char, mode: 0o644, data: vec![], link: None };
    // (case, archive, what the error must say)
    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        ("dot-dot", vec![dir("bin/"), file("bin/../../escaped", 0o644, "x")], "`..`"),
        ("leading dot-dot", vec![file("../escaped", 0o644, "x")], "`..`"),
        ("absolute", vec![file("/tmp/airlock-rke2-absolute-escape", 0o644, "x")], "absolute path"),
        ("escaping symlink", vec![dir("bin/"), symlink("bin/out", "../../escaped")], "outside the tarball"),
        ("absolute symlink", vec![dir("bin/"), symlink("bin/out", "/etc")], "only relative links"),
        (
            "write through symlink",
            vec![dir("bin/"), dir("share/"), symlink("bin/share", "../share"), file("bin/share/x", 0o644, "x")],
            "written through the symlink",
        ),
        (
            "hard link",
            vec![
                file("bin/rke2", 0o755, "x"),
                Member { name: "bin/hard", kind: EntryType::Link, mode: 0o644, data: vec![], link: Some("bin/rke2") },
            ],
            "Link entry",
        ),
        ("device", vec![device()], "Char entry"),
        (
            "fifo",
            vec![Member { name: "bin/fifo", kind: EntryType::Fifo, mode: 0o644, data: vec![], link: None }],
            "Fifo entry",
        ),
        ("setuid", vec![file("bin/rke2", 0o4755, "x")], "setuid"),
        ("duplicate", vec![file("bin/rke2", 0o755, "x"), file("./bin/rke2", 0o755, "y")], "twice"),
    ];
    for (name, members, word) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let tarball = write_tarball(tmp.path(), &members);
        let staging = tmp.path().join("staging");
        fs::create_dir(&staging).unwrap();
        let e = unpack_rke2_tarball(&tarball, &staging).expect_err(name);
        assert_eq!(e.kind, ErrorKind::Unsafe, "{name}: {e}");
        assert!(e.to_string().contains(word), "{name}: `{e}` does not say `{word}`");
        let left: Vec<_> = fs::read_dir(staging.join("unpacked")).map(|rd| rd.flatten().collect()).unwrap_or_default();
        assert!(left.is_empty(), "{name}: left {:?} in staging", left.iter().map(|e| e.path()).collect::<Vec<_>>());
        assert!(!tmp.path().join("escaped").exists(), "{name}: wrote outside staging");
        assert!(!staging.join("escaped").exists(), "{name}: wrote outside the unpack dir");
    }
    assert!(!Path::new("/tmp/airlock-rke2-absolute-escape").exists());
}

#[test]
fn a_damaged_tarball_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = write_tarball(tmp.path(), &good_members());
    let mut bytes = fs::read(&tarball).unwrap();
    let cut = bytes.len() / 2;
    bytes.truncate(cut);
    fs::write(&tarball, &bytes).unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let e = unpack_rke2_tarball(&tarball, &staging).expect_err("truncated");
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
    assert!(!staging.join(RKE2_UNPACK_DIR).exists());
    assert!(!staging.join(format!("{RKE2_UNPACK_DIR}.partial")).exists());
}
