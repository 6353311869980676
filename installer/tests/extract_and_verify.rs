//! The extractor and `airlock verify` on bad bundles.
//!
//! Extraction: whatever is wrong, the staging directory is gone afterwards and nothing
//! exists outside it, in particular not where a `../` path, an absolute path or a link
//! in the bundle pointed. Verification: every artifact gets its own status, the exit
//! code follows the kind of the first problem, and the signed checksum sidecar names
//! the damaged, missing, duplicated or swapped part file.

// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../../format/tests/forge/mod.rs"]
mod forge;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::manifest::{MANIFEST_PATH, SIGNATURE_PATH};
use airlock_format::minisign::{PublicKey, SecretKey};
use airlock_format::parts::{part_path, BundleFiles};
use airlock_format::report::Silent;
use airlock_installer::bundle::staging::{extract, Staged};
use airlock_installer::bundle::verify::{verify, Status, VerifyOptions, VerifyReport};
use forge::{
    find_in_file, flip_byte, flipped, header, listing, noise, save, Forge, Tar, CHART, GIB, IMAGE, PROFILE, SCRIPT,
};
use tar::EntryType;

// ---------------------------------------------------------------------------------
// Harness

/// A parent directory that holds nothing but (briefly) the staging directory.
struct Site {
    parent: tempfile::TempDir,
    staging: PathBuf,
}

impl Site {
    fn new() -> Self {
        let parent = tempfile::tempdir().unwrap();
        let staging = parent.path().join("staging");
        Self { parent, staging }
    }

    fn extract(&self, files: &BundleFiles, key: PublicKey) -> Result<Staged> {
        assert!(listing(self.parent.path()).is_empty());
        extract(files, &[key], &self.staging, &Silent)
    }

    /// The staging directory is gone and nothing at all was left in its parent.
    #[track_caller]
    fn assert_nothing_left(&self, case: &str) {
        assert!(!self.staging.exists(), "{case}: staging survived");
        assert_eq!(listing(self.parent.path()), Vec::<PathBuf>::new(), "{case}: files left beside staging");
    }
}

/// Asserts a refusal of `kind` whose message names `names` and carries a hint.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, names: &str, case: &str) -> Error {
    let e = r.expect_err(&format!("{case}: bad bundle accepted"));
    let text = e.to_string();
    assert_eq!(e.kind, kind, "{case}: wrong kind for: {text}");
    assert!(text.contains(names), "{case}: message does not name `{names}`: {text}");
    assert!(text.contains("\n  hint: "), "{case}: no hint: {text}");
    e
}

fn bundle_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The entries of the standard bundle before `path`, then `bad`, then the rest: the
/// staging directory already holds verified files when the bad entry arrives.
fn with_bad_entry_before(f: &Forge, path: &str, bad: impl FnOnce(&mut Tar)) -> Vec<u8> {
    let i = f.index(path);
    let mut t = f.tar();
    f.entries(&mut t, ..i);
    bad(&mut t);
    f.entries(&mut t, i..);
    t.end();
    t.finish()
}

/// A path under /tmp nobody else uses.
fn escape_target() -> PathBuf {
    let d = tempfile::Builder::new().prefix("airlock-escape-").tempdir_in("/tmp").unwrap();
    let p = d.path().to_path_buf();
    drop(d);
    assert!(!p.exists());
    p
}

/// Every forged bad case: a name, the bundle bytes, the kind, what the message names.
fn bad_cases(f: &Forge, absolute: &Path) -> Vec<(String, Vec<u8>, ErrorKind, String)> {
    // Another bundle by the same (trusted) key, and one by a key nobody trusts.
    let other = Forge::with_key(f.key.clone(), &[("files/base/other.txt", b"another bundle")]);
    let stranger = Forge::with_key(Arc::new(SecretKey::generate().unwrap()), &[("files/base/x.txt", b"x")]);
    // A manifest signed with the trusted key that lists a `../` path.
    let mut traversal = Forge::with_key(f.key.clone(), &[("files/base/a.txt", b"pwned")]);
    traversal.manifest.entries[0].path = "../escape".into();
    traversal.manifest.files[0].path = "../escape".into();
    let mut traversal_bytes = traversal.tar();
    traversal_bytes.entry(b"../escape", EntryType::Regular, 0o644, b"pwned").end();
    let manifest = f.manifest_bytes();
    let good = f.good();
    let layer = f.layer();
    let abs = absolute.to_str().unwrap().to_string();
    let mut cases: Vec<(String, Vec<u8>, ErrorKind, String)> = vec![];
    let mut case = |name: &str, bytes: Vec<u8>, kind: ErrorKind, names: &str| {
        cases.push((name.to_string(), bytes, kind, names.to_string()));
    };
    let head = |m: &[u8], sig: &[u8]| {
        let mut t = Tar::zstd();
        t.file(MANIFEST_PATH, 0o644, m);
        t.file(SIGNATURE_PATH, 0o644, sig);
        t
    };
    let finish = |mut t: Tar, f: &Forge| {
        f.entries(&mut t, ..);
        t.end();
        t.finish()
    };

    case(
        "flipped manifest byte",
        finish(head(&flipped(&manifest, 100), f.signature().as_bytes()), f),
        ErrorKind::Signature,
        MANIFEST_PATH,
    );
    case(
        "flipped signature byte",
        finish(head(&manifest, &flipped(f.signature().as_bytes(), 80)), f),
        ErrorKind::Signature,
        MANIFEST_PATH,
    );
    case(
        "signature of another manifest",
        finish(head(&manifest, other.signature().as_bytes()), f),
        ErrorKind::Signature,
        MANIFEST_PATH,
    );
    case("untrusted key", stranger.good(), ErrorKind::Signature, "not from a trusted key");
    case("signed manifest listing ../", traversal_bytes.finish(), ErrorKind::Unsafe, "../escape");
    let mut unsigned = Tar::zstd();
    unsigned.file(MANIFEST_PATH, 0o644, &manifest);
    case("unsigned", finish(unsigned, f), ErrorKind::Signature, "b.airlock");
    case("flipped blob byte", f.with_content(&layer, &flipped(&f.contents[&layer], 7)), ErrorKind::Corrupt, &layer);
    case("flipped chart byte", f.with_content(CHART, &flipped(&f.contents[CHART], 7)), ErrorKind::Corrupt, CHART);
    case("truncated", good[..good.len() * 2 / 3].to_vec(), ErrorKind::Corrupt, "truncated");
    case("trailing garbage", [good.clone(), b"garbage".to_vec()].concat(), ErrorKind::Corrupt, "b.airlock");
    case("random bytes", noise(7, 10_000), ErrorKind::Corrupt, "b.airlock");
    case("empty file", vec![], ErrorKind::Corrupt, "b.airlock");
    case(
        "entry not in the manifest",
        with_bad_entry_before(f, PROFILE, |t| {
            t.file("files/base/extra", 0o644, b"x");
        }),
        ErrorKind::Corrupt,
        "files/base/extra",
    );
    case("duplicate entry", with_bad_entry_before(f, PROFILE, |t| f.entry(t, CHART)), ErrorKind::Corrupt, CHART);
    let mut reordered = f.tar();
    f.entry(&mut reordered, SCRIPT);
    f.entry(&mut reordered, CHART);
    f.entries(&mut reordered, 2..);
    reordered.end();
    case("reordered entries", reordered.finish(), ErrorKind::Corrupt, CHART);
    let mut missing = f.tar();
    f.entries(&mut missing, ..f.index(PROFILE));
    missing.end();
    case("missing entry", missing.finish(), ErrorKind::Corrupt, PROFILE);
    case(
        "longer entry",
        f.with_content(SCRIPT, &[f.contents[SCRIPT].clone(), b"rm -rf /\n".to_vec()].concat()),
        ErrorKind::Corrupt,
        SCRIPT,
    );
    case(
        "../ path",
        with_bad_entry_before(f, PROFILE, |t| {
            t.entry(b"../escape", EntryType::Regular, 0o644, b"pwned");
        }),
        ErrorKind::Unsafe,
        "../escape",
    );
    case(
        "deep ../ path",
        with_bad_entry_before(f, PROFILE, |t| {
            t.entry(b"files/k3s/../../../escape", EntryType::Regular, 0o644, b"pwned");
        }),
        ErrorKind::Unsafe,
        "../escape",
    );
    case(
        "absolute path",
        with_bad_entry_before(f, PROFILE, |t| {
            t.entry(abs.as_bytes(), EntryType::Regular, 0o644, b"pwned");
        }),
        ErrorKind::Unsafe,
        &abs,
    );
    case(
        "escaping symlink, then a file through it",
        with_bad_entry_before(f, PROFILE, |t| {
            t.link("files/base", EntryType::Symlink, "../../escape-dir");
            t.file("files/base/x", 0o644, b"pwned");
        }),
        ErrorKind::Unsafe,
        "files/base",
    );
    case(
        "absolute symlink",
        with_bad_entry_before(f, PROFILE, |t| {
            t.link("files/base/abs", EntryType::Symlink, &abs);
        }),
        ErrorKind::Unsafe,
        "files/base/abs",
    );
    case(
        "internal symlink",
        with_bad_entry_before(f, PROFILE, |t| {
            t.link("files/base/chart", EntryType::Symlink, "../../charts/hello-0.1.0.tgz");
        }),
        ErrorKind::Unsafe,
        "files/base/chart",
    );
    case(
        "escaping hardlink",
        with_bad_entry_before(f, PROFILE, |t| {
            t.link("files/base/passwd", EntryType::Link, "/etc/passwd");
        }),
        ErrorKind::Unsafe,
        "files/base/passwd",
    );
    case(
        "internal hardlink",
        with_bad_entry_before(f, PROFILE, |t| {
            t.link("files/base/chart", EntryType::Link, CHART);
        }),
        ErrorKind::Unsafe,
        "files/base/chart",
    );
    for (name, ty) in [("char device", EntryType::Char), ("block device", EntryType::Block), ("fifo", EntryType::Fifo)]
    {
        case(
            name,
            with_bad_entry_before(f, PROFILE, |t| {
                t.special("files/base/dev", ty);
            }),
            ErrorKind::Unsafe,
            "files/base/dev",
        );
    }
    for (name, mode) in [("setuid", 0o4755), ("setgid", 0o2755)] {
        let mut t = f.tar();
        f.entries(&mut t, ..f.index(SCRIPT));
        t.file(SCRIPT, mode, &f.contents[SCRIPT]);
        f.entries(&mut t, f.index(SCRIPT) + 1..);
        t.end();
        case(name, t.finish(), ErrorKind::Unsafe, SCRIPT);
    }
    let mut bomb = f.frame();
    f.entries(&mut bomb, ..f.index(PROFILE));
    bomb.header(&header(b"files/base/zeros", EntryType::Regular, 0o644, 1 << 40));
    bomb.zeros(64 * GIB);
    case("huge entry not in the manifest", bomb.finish(), ErrorKind::Corrupt, "files/base/zeros");
    let mut padding = f.frame();
    f.entries(&mut padding, ..);
    padding.end();
    padding.zeros(64 * GIB);
    case("huge zero padding", padding.finish(), ErrorKind::Corrupt, "padding");
    let mut long_name = f.frame();
    f.entries(&mut long_name, ..1);
    long_name.header(&header(b"././@LongLink", EntryType::GNULongName, 0o644, 1 << 40));
    long_name.fill(b'a', 64 * GIB);
    case("gigantic long-name record", long_name.finish(), ErrorKind::Corrupt, "long-name record");
    cases
}

// ---------------------------------------------------------------------------------
// Extraction

#[test]
fn extract_stages_exactly_the_manifest_entries_with_their_modes() {
    let f = Forge::standard();
    let d = bundle_dir();
    for (name, files) in
        [("single", save(d.path(), "b.airlock", &f.good())), ("split", f.write(d.path(), "real", Some(64 << 10)))]
    {
        let site = Site::new();
        let staged = site.extract(&files, f.public_key()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(staged.manifest, f.manifest);
        let mut got = vec![];
        for p in listing(&site.staging) {
            let full = site.staging.join(&p);
            let meta = fs::symlink_metadata(&full).unwrap();
            assert!(meta.is_dir() || meta.is_file(), "{name}: {} is neither file nor directory", p.display());
            if meta.is_file() {
                let path = p.to_str().unwrap().to_string();
                let entry = f.manifest.entry(&path).unwrap_or_else(|| panic!("{name}: {path} is not an entry"));
                assert_eq!(meta.permissions().mode() & 0o7777, entry.mode(), "{name}: {path}");
                assert_eq!(fs::read(&full).unwrap(), f.contents[&path], "{name}: {path}");
                got.push(path);
            }
        }
        assert_eq!(got, f.paths(), "{name}");
        assert_eq!(fs::metadata(staged.path(SCRIPT)).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(fs::metadata(staged.path(CHART)).unwrap().permissions().mode() & 0o7777, 0o644);
        // Only the staging directory appeared.
        assert_eq!(fs::read_dir(site.parent.path()).unwrap().count(), 1);
    }
}

#[test]
fn every_bad_bundle_leaves_nothing_behind() {
    let f = Forge::standard();
    let absolute = escape_target();
    for (name, bytes, kind, names) in bad_cases(&f, &absolute) {
        let d = bundle_dir();
        let files = save(d.path(), "b.airlock", &bytes);
        let site = Site::new();
        refused(site.extract(&files, f.public_key()), kind, &names, &name);
        site.assert_nothing_left(&name);
        let report = check(&files, f.public_key(), true);
        assert_eq!(report.exit_code, kind.exit_code(), "{name}: {:#?}", report.errors);
        assert!(!site.parent.path().join("escape").exists(), "{name}: ../escape was created");
        assert!(!site.parent.path().join("escape-dir").exists(), "{name}: a symlink target was created");
        assert!(!absolute.exists(), "{name}: {} was created", absolute.display());
    }
}

#[test]
fn dotdot_entry_does_not_escape_staging() {
    let f = Forge::standard();
    let d = bundle_dir();
    let bytes = with_bad_entry_before(&f, PROFILE, |t| {
        t.entry(b"../escape", EntryType::Regular, 0o644, b"pwned");
    });
    let files = save(d.path(), "b.airlock", &bytes);
    let site = Site::new();
    refused(site.extract(&files, f.public_key()), ErrorKind::Unsafe, "../escape", "../escape");
    assert!(!site.parent.path().join("escape").exists());
    site.assert_nothing_left("../escape");
}

#[test]
fn absolute_path_entry_does_not_escape_staging() {
    let f = Forge::standard();
    let target = escape_target();
    let d = bundle_dir();
    let bytes = with_bad_entry_before(&f, PROFILE, |t| {
        t.entry(target.to_str().unwrap().as_bytes(), EntryType::Regular, 0o644, b"pwned");
    });
    let files = save(d.path(), "b.airlock", &bytes);
    let site = Site::new();
    refused(site.extract(&files, f.public_key()), ErrorKind::Unsafe, target.to_str().unwrap(), "absolute");
    assert!(!target.exists(), "{} was created", target.display());
    site.assert_nothing_left("absolute");
}

#[test]
fn symlink_entry_is_refused_as_unsafe_and_nothing_is_written_through_it() {
    let f = Forge::standard();
    let target = escape_target();
    let d = bundle_dir();
    let bytes = with_bad_entry_before(&f, PROFILE, |t| {
        t.link("files/base", EntryType::Symlink, target.to_str().unwrap());
        t.file("files/base/x", 0o644, b"pwned");
    });
    let files = save(d.path(), "b.airlock", &bytes);
    let site = Site::new();
    let e = refused(site.extract(&files, f.public_key()), ErrorKind::Unsafe, "files/base", "symlink");
    assert!(e.cause.contains("symbolic link"), "{e}");
    assert!(!target.exists() && fs::symlink_metadata(&target).is_err());
    site.assert_nothing_left("symlink");
}

#[test]
fn signature_failures_leave_nothing_behind() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.good());
    let site = Site::new();
    let stranger = SecretKey::generate().unwrap().public_key();
    refused(site.extract(&files, stranger), ErrorKind::Signature, MANIFEST_PATH, "untrusted key");
    site.assert_nothing_left("untrusted key");
    let e = extract(&files, &[], &site.staging, &Silent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Signature);
    site.assert_nothing_left("no key");
}

#[test]
fn damaged_parts_leave_nothing_behind() {
    let f = Forge::standard();
    type Damage = fn(&BundleFiles);
    let damages: [(&str, Damage); 5] = [
        ("flipped byte in part002", |b| flip_byte(&b.parts[1], 1000)),
        ("missing last part", |b| fs::remove_file(b.parts.last().unwrap()).unwrap()),
        ("duplicated part", |b| {
            fs::copy(&b.parts[1], &b.parts[2]).unwrap();
        }),
        ("swapped parts", |b| swap(&b.parts[1], &b.parts[2])),
        ("extra part", |b| {
            fs::copy(&b.parts[1], part_path(&b.base, b.parts.len() + 1)).unwrap();
        }),
    ];
    for (name, damage) in damages {
        let d = bundle_dir();
        let files = f.write(d.path(), "b", Some(64 << 10));
        damage(&files);
        let files = BundleFiles::locate(&files.base).unwrap();
        let site = Site::new();
        refused(site.extract(&files, f.public_key()), ErrorKind::Corrupt, "", name);
        site.assert_nothing_left(name);
    }
}

#[test]
fn failure_also_removes_parent_directories_extract_created() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.with_content(CHART, &flipped(&f.contents[CHART], 0)));
    let parent = tempfile::tempdir().unwrap();
    let staging = parent.path().join("a/b/staging");
    refused(extract(&files, &[f.public_key()], &staging, &Silent), ErrorKind::Corrupt, CHART, "nested");
    assert_eq!(listing(parent.path()), Vec::<PathBuf>::new());
}

#[test]
fn existing_staging_directory_is_refused_and_left_alone() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.good());
    let site = Site::new();
    fs::create_dir(&site.staging).unwrap();
    fs::write(site.staging.join("keep"), b"mine").unwrap();
    refused(extract(&files, &[f.public_key()], &site.staging, &Silent), ErrorKind::Input, "staging", "exists");
    assert_eq!(fs::read(site.staging.join("keep")).unwrap(), b"mine");
    // A symlink in its place, even a dangling one, is refused too and not removed.
    let link = site.parent.path().join("link");
    std::os::unix::fs::symlink(site.parent.path().join("nowhere"), &link).unwrap();
    refused(extract(&files, &[f.public_key()], &link, &Silent), ErrorKind::Input, "link", "symlink");
    assert!(fs::symlink_metadata(&link).is_ok());
    assert!(!site.parent.path().join("nowhere").exists());
}

fn swap(a: &Path, b: &Path) {
    let tmp = a.with_extension("swap");
    fs::rename(a, &tmp).unwrap();
    fs::rename(b, a).unwrap();
    fs::rename(&tmp, b).unwrap();
}

// ---------------------------------------------------------------------------------
// Verification report

fn check(files: &BundleFiles, key: PublicKey, check_parts: bool) -> VerifyReport {
    verify(files, &[key], &VerifyOptions { check_parts }, &Silent)
}

fn status(r: &VerifyReport, kind: &str, name: &str) -> Status {
    r.artifacts
        .iter()
        .find(|a| a.kind == kind && a.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name}: {r:?}"))
        .status
}

fn statuses(r: &VerifyReport) -> Vec<(String, Status)> {
    r.artifacts.iter().map(|a| (format!("{} {}", a.kind, a.name), a.status)).collect()
}

fn part(r: &VerifyReport, n: usize) -> &'static str {
    let suffix = format!(".part{n:03}");
    r.parts.iter().find(|p| p.path.ends_with(&suffix)).unwrap_or_else(|| panic!("no part {n}: {r:?}")).status
}

/// The report's errors name `file` (a path suffix) with a cause containing `cause`.
#[track_caller]
fn assert_error_names(r: &VerifyReport, file: &str, cause: &str) {
    assert!(
        r.errors.iter().any(|e| e.subject.ends_with(file) && e.cause.contains(cause) && e.hint.is_some()),
        "no error about {file} ({cause}): {:#?}",
        r.errors
    );
}

#[test]
fn verify_passes_a_genuine_split_bundle_and_checks_every_part() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    let r = check(&files, f.public_key(), true);
    assert!(r.ok && r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.checksums, "signed");
    assert!(r.artifacts.iter().all(|a| a.status == Status::Ok), "{:?}", statuses(&r));
    assert_eq!(r.artifacts.len(), 4);
    assert!(r.parts.iter().all(|p| p.status == "ok"), "{:?}", r.parts);
    let r = check(&files, f.public_key(), false);
    assert!(r.ok && r.parts.iter().all(|p| p.status == "not-checked"));
}

#[test]
fn verify_names_the_tampered_chart() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.with_content(CHART, &flipped(&f.contents[CHART], 1234)));
    let r = check(&files, f.public_key(), false);
    assert!(!r.ok);
    assert_eq!(r.exit_code, 4);
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Corrupt);
    for (label, s) in statuses(&r) {
        if label != "chart hello 0.1.0" {
            assert_eq!(s, Status::Ok, "{label}");
        }
    }
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].subject, CHART);
    assert!(r.errors[0].cause.contains("chart hello 0.1.0"), "{:?}", r.errors[0]);
}

#[test]
fn verify_names_every_tampered_artifact_in_one_run() {
    let f = Forge::standard();
    let layer = f.layer();
    let mut t = f.tar();
    for p in f.paths() {
        if p == layer || p == PROFILE {
            f.entry_with(&mut t, &p, &flipped(&f.contents[&p], 3));
        } else {
            f.entry(&mut t, &p);
        }
    }
    t.end();
    let d = bundle_dir();
    let r = check(&save(d.path(), "b.airlock", &t.finish()), f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!(status(&r, "image", IMAGE), Status::Corrupt);
    assert_eq!(status(&r, "profile", "single"), Status::Corrupt);
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Ok);
    assert_eq!(status(&r, "file", "install.sh"), Status::Ok);
    let subjects: Vec<&str> = r.errors.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, vec![layer.as_str(), PROFILE]);
}

#[test]
fn verify_names_the_chart_flipped_in_a_real_compressed_bundle() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", None);
    let at = find_in_file(&files.parts[0], &f.contents[CHART][2000..2064]).expect("chart stored verbatim");
    flip_byte(&files.parts[0], at + 5);
    let r = check(&files, f.public_key(), false);
    assert_eq!(r.exit_code, 4, "{:#?}", r.errors);
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Corrupt, "{:?}", statuses(&r));
    for (label, s) in statuses(&r) {
        if label != "chart hello 0.1.0" {
            assert_eq!(s, Status::Ok, "{label}: {:#?}", r.errors);
        }
    }
    // Named among the errors too, though the frame checksum stopped the read.
    let chart = r.errors.iter().find(|e| e.subject == CHART).unwrap_or_else(|| panic!("{:#?}", r.errors));
    assert!(chart.cause.contains("chart hello 0.1.0"), "{chart:?}");
    // The sidecar confirms the file itself was changed.
    assert_eq!(r.parts.len(), 1);
    assert_eq!(r.parts[0].status, "mismatch");
    assert_error_names(&r, "/b", "does not match its digest");
}

#[test]
fn verify_marks_artifacts_after_a_stop_as_not_checked() {
    let f = Forge::standard();
    let d = bundle_dir();
    // An entry not in the manifest right after the chart stops the read.
    let bytes = with_bad_entry_before(&f, SCRIPT, |t| {
        t.file("files/base/extra", 0o644, b"x");
    });
    let r = check(&save(d.path(), "b.airlock", &bytes), f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!(r.errors[0].subject, "files/base/extra");
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Ok);
    assert_eq!(status(&r, "file", "install.sh"), Status::NotChecked);
    assert_eq!(status(&r, "image", IMAGE), Status::NotChecked);
    assert_eq!(status(&r, "profile", "single"), Status::NotChecked);

    // A setuid script: that artifact is unsafe, the later ones not checked.
    let mut t = f.tar();
    f.entries(&mut t, ..f.index(SCRIPT));
    t.file(SCRIPT, 0o4755, &f.contents[SCRIPT]);
    f.entries(&mut t, f.index(SCRIPT) + 1..);
    t.end();
    let r = check(&save(d.path(), "c.airlock", &t.finish()), f.public_key(), false);
    assert_eq!(r.exit_code, 5);
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Ok);
    assert_eq!(status(&r, "file", "install.sh"), Status::Unsafe);
    assert_eq!(status(&r, "image", IMAGE), Status::NotChecked);

    // Truncated in the image layer: the layer's image is corrupt, the profile after it
    // not checked.
    let good = f.good();
    let at = good.len() - 20_000;
    let r = check(&save(d.path(), "e.airlock", &good[..at]), f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!(status(&r, "chart", "hello 0.1.0"), Status::Ok);
    assert_eq!(status(&r, "image", IMAGE), Status::Corrupt, "{:#?}", r.errors);
    assert_eq!(status(&r, "profile", "single"), Status::NotChecked);
}

#[test]
fn verify_exit_code_follows_the_kind_of_the_first_problem() {
    let f = Forge::standard();
    let d = bundle_dir();
    let good = save(d.path(), "good.airlock", &f.good());
    let stranger = SecretKey::generate().unwrap().public_key();
    let r = check(&good, stranger, false);
    assert_eq!((r.exit_code, r.errors[0].kind), (3, ErrorKind::Signature));
    assert!(r.artifacts.is_empty() && r.signer.is_none());

    let unsafe_bundle = with_bad_entry_before(&f, PROFILE, |t| {
        t.entry(b"../escape", EntryType::Regular, 0o644, b"x");
    });
    let r = check(&save(d.path(), "unsafe.airlock", &unsafe_bundle), f.public_key(), false);
    assert_eq!((r.exit_code, r.errors[0].kind), (5, ErrorKind::Unsafe));

    let r = check(&save(d.path(), "empty.airlock", b""), f.public_key(), false);
    assert_eq!((r.exit_code, r.errors[0].kind), (4, ErrorKind::Corrupt));

    // A part that cannot be read is an I/O problem, not a forgery.
    let files = f.write(d.path(), "io", Some(64 << 10));
    fs::remove_file(&files.parts[1]).unwrap();
    fs::create_dir(&files.parts[1]).unwrap();
    let r = check(&files, f.public_key(), false);
    assert_eq!((r.exit_code, r.errors[0].kind), (6, ErrorKind::Io), "{:#?}", r.errors);
    assert!(r.errors[0].cause.contains("io.part002"), "{:?}", r.errors[0]);
}

#[test]
fn verify_names_the_part_with_a_flipped_byte() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    assert!(files.parts.len() >= 4);
    flip_byte(&files.parts[1], 3000);
    let r = check(&files, f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!(part(&r, 2), "mismatch");
    for n in [1, 3, 4] {
        assert_eq!(part(&r, n), "ok");
    }
    assert_error_names(&r, "b.part002", "does not match its digest");
}

#[test]
fn verify_names_a_missing_part() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    let last = files.parts.len();
    // A missing middle part is found before anything is read.
    fs::rename(&files.parts[1], d.path().join("away")).unwrap();
    let e = refused(BundleFiles::locate(&files.base), ErrorKind::Corrupt, "b.part002", "middle");
    assert!(e.cause.contains("missing"), "{e}");
    fs::rename(d.path().join("away"), &files.parts[1]).unwrap();
    // A missing last part looks like a shorter bundle: the sidecar knows better.
    fs::remove_file(&files.parts[last - 1]).unwrap();
    let r = check(&BundleFiles::locate(&files.base).unwrap(), f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert!(r.errors[0].hint.as_deref().unwrap().contains("part is missing"), "{:#?}", r.errors);
    assert_error_names(&r, &format!("b.part{last:03}"), "missing");
}

#[test]
fn verify_names_a_duplicated_part() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    fs::copy(&files.parts[1], &files.parts[2]).unwrap();
    let r = check(&files, f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!((part(&r, 2), part(&r, 3)), ("ok", "mismatch"));
    assert_error_names(&r, "b.part003", "does not match its digest");
}

#[test]
fn verify_names_swapped_parts() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    swap(&files.parts[1], &files.parts[2]);
    let r = check(&files, f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_eq!((part(&r, 1), part(&r, 2), part(&r, 3)), ("ok", "mismatch", "mismatch"));
    assert_error_names(&r, "b.part002", "does not match its digest");
    assert_error_names(&r, "b.part003", "does not match its digest");
}

#[test]
fn verify_names_a_part_that_does_not_belong() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    let extra = part_path(&files.base, files.parts.len() + 1);
    fs::copy(&files.parts[0], &extra).unwrap();
    let r = check(&BundleFiles::locate(&files.base).unwrap(), f.public_key(), false);
    assert_eq!(r.exit_code, 4);
    assert_error_names(&r, &extra.file_name().unwrap().to_string_lossy(), "not in the signed checksum list");
}

#[test]
fn verify_refuses_a_tampered_or_unsigned_checksum_list() {
    let f = Forge::standard();
    let d = bundle_dir();
    let files = f.write(d.path(), "b", Some(64 << 10));
    let sums = files.checksums_path();
    let text = fs::read_to_string(&sums).unwrap();
    // Somebody "fixed" the list to match a damaged part.
    let at = text.find("SHA256 (b.part002) = ").unwrap() + "SHA256 (b.part002) = ".len();
    let mut tampered = text.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    fs::write(&sums, tampered).unwrap();
    let r = check(&files, f.public_key(), true);
    assert_eq!(r.checksums, "bad-signature");
    assert_eq!((r.exit_code, r.errors[0].kind), (3, ErrorKind::Signature), "{:#?}", r.errors);
    assert!(r.errors[0].subject.contains("b.sha256.minisig"), "{:?}", r.errors[0]);
    // Signature missing.
    fs::write(&sums, text).unwrap();
    fs::remove_file(airlock_format::checksums::signature_path(&files.base)).unwrap();
    let r = check(&files, f.public_key(), true);
    assert_eq!(r.checksums, "unsigned");
    assert_eq!(r.exit_code, 3);
    assert!(r.errors[0].hint.is_some());
}

#[test]
fn with_an_image_archive_the_layout_is_written_once_as_an_importable_tar_and_bad_bundles_leave_nothing() {
    use airlock_installer::bundle::staging::extract_with_image_archive;
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.good());
    let site = Site::new();
    let staged = extract_with_image_archive(&files, &[f.public_key()], &site.staging, "images/a.tar", &Silent).unwrap();
    // The layout's entries are in the archive, not beside it; everything else is staged as files.
    let oci: Vec<String> = f.paths().into_iter().filter(|p| p.starts_with("oci/")).collect();
    assert!(!oci.is_empty());
    assert!(!staged.path("oci").exists());
    let mut tar = tar::Archive::new(fs::File::open(staged.path("images/a.tar")).unwrap());
    let mut names = vec![];
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = vec![];
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        assert_eq!(bytes, f.contents[&format!("oci/{name}")], "{name}");
        assert_eq!(e.header().mode().unwrap(), 0o644);
        names.push(format!("oci/{name}"));
    }
    assert_eq!(names, oci, "every layout entry, in bundle order");
    for p in f.paths().into_iter().filter(|p| !p.starts_with("oci/")) {
        assert_eq!(fs::read(staged.path(&p)).unwrap(), f.contents[&p], "{p}");
    }

    let absolute = escape_target();
    for (name, bytes, kind, names) in bad_cases(&f, &absolute) {
        let d = bundle_dir();
        let files = save(d.path(), "b.airlock", &bytes);
        let site = Site::new();
        refused(
            extract_with_image_archive(&files, &[f.public_key()], &site.staging, "images/a.tar", &Silent),
            kind,
            &names,
            &name,
        );
        site.assert_nothing_left(&name);
    }
}

#[test]
fn the_image_archive_digest_the_inventory_records_is_the_written_files_and_it_is_not_read_again() {
    use airlock_installer::bundle::staging::extract_with_image_archive;
    use airlock_installer::ops::install::{staged_digest, IMAGE_ARCHIVE_ENTRY};
    let f = Forge::standard();
    let d = bundle_dir();
    let files = save(d.path(), "b.airlock", &f.good());
    let site = Site::new();
    let staged =
        extract_with_image_archive(&files, &[f.public_key()], &site.staging, IMAGE_ARCHIVE_ENTRY, &Silent).unwrap();
    let archive = staged.path(IMAGE_ARCHIVE_ENTRY);
    let on_disk = airlock_format::Sha256Digest::of(&fs::read(&archive).unwrap());
    assert_eq!(
        staged.image_archive_sha256,
        Some(on_disk),
        "the digest taken while writing is the file's plain SHA-256"
    );
    // With the archive gone, the digest the inventory records can only come from the
    // pass that wrote it: no second read of hundreds of megabytes.
    fs::remove_file(&archive).unwrap();
    assert_eq!(staged_digest(&staged, IMAGE_ARCHIVE_ENTRY), Some(on_disk));
    // A bundle entry's digest is the signed manifest's, not read from staging either.
    let chart = staged.manifest.entries.iter().find(|e| !e.path.starts_with("oci/")).unwrap().path.clone();
    let want = airlock_format::Sha256Digest::of(&fs::read(staged.path(&chart)).unwrap());
    fs::remove_file(staged.path(&chart)).unwrap();
    assert_eq!(staged_digest(&staged, &chart), Some(want), "{chart}");
}

// ---------------------------------------------------------------------------------
// Upstream cosign signatures carried in the manifest

/// A P-256 key: its signing half and its PEM public key.
fn cosign_key() -> (ring::signature::EcdsaKeyPair, String) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let pem = airlock_format::cosign::p256_public_key_pem(pair.public_key().as_ref());
    (pair, pem)
}

/// The forge's image with a cosign check: a payload for `signed_digest` signed by
/// `signer`, carried with `key_pem`.
fn forge_with_cosign(
    signer: &ring::signature::EcdsaKeyPair,
    key_pem: &str,
    signed_digest: Option<String>,
    required: bool,
) -> Forge {
    use base64::Engine;
    let mut f = Forge::standard();
    let image = &mut f.manifest.images[0];
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = signed_digest.map(|d| {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"x"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let sig = signer.sign(&ring::rand::SystemRandom::new(), payload.as_bytes()).unwrap();
        airlock_format::manifest::CosignSignature {
            key: "upstream.pub".into(),
            key_pem: key_pem.into(),
            manifest: airlock_format::Sha256Digest::of(b"sig manifest"),
            payload: b64.encode(payload),
            signature: b64.encode(sig.as_ref()),
        }
    });
    image.cosign =
        Some(airlock_format::manifest::CosignCheck { required, signature, objects: vec![], referrers: vec![] });
    f
}

#[test]
fn carried_cosign_signatures_are_checked_again_at_staging_and_by_verify_naming_the_image() {
    let (signer, pem) = cosign_key();
    let (_, other_pem) = cosign_key();
    let digest = Forge::standard().manifest.images[0].digest.to_string();
    let d = bundle_dir();

    let good = forge_with_cosign(&signer, &pem, Some(digest.clone()), true);
    let files = save(d.path(), "good.airlock", &good.good());
    Site::new().extract(&files, good.public_key()).unwrap();
    let r = check(&files, good.public_key(), false);
    assert!(r.ok, "{:?}", r.errors);
    let img = r.artifacts.iter().find(|a| a.kind == "image").unwrap();
    assert_eq!(img.cosign.as_deref(), Some("cosign signature good, key upstream.pub (checked offline)"));

    for (case, f, cause) in [
        ("another key", forge_with_cosign(&signer, &other_pem, Some(digest.clone()), true), "does not verify"),
        (
            "another image",
            forge_with_cosign(&signer, &pem, Some(format!("sha256:{}", "0".repeat(64))), true),
            "not for this image",
        ),
        ("missing, required", forge_with_cosign(&signer, &pem, None, true), "carries none"),
    ] {
        let files = save(d.path(), "bad.airlock", &f.good());
        let site = Site::new();
        let e = refused(site.extract(&files, f.public_key()), ErrorKind::Signature, IMAGE, case);
        assert!(e.cause.contains(cause), "{case}: {e}");
        site.assert_nothing_left(case);
        let r = check(&files, f.public_key(), false);
        assert!(!r.ok, "{case}: verify passed");
        let img = r.artifacts.iter().find(|a| a.kind == "image").unwrap();
        assert_eq!(img.status, Status::Corrupt, "{case}");
        assert!(img.problems.iter().any(|p| p.contains(cause)), "{case}: {:?}", img.problems);
    }
    // Not required and absent: fine, and said so.
    let f = forge_with_cosign(&signer, &pem, None, false);
    let files = save(d.path(), "none.airlock", &f.good());
    Site::new().extract(&files, f.public_key()).unwrap();
    let r = check(&files, f.public_key(), false);
    let img = r.artifacts.iter().find(|a| a.kind == "image").unwrap();
    assert_eq!(img.cosign.as_deref(), Some("no cosign signature (none required)"));
}
