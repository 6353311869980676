//! The bundle format (manifest, the framed verifying reader) and the answers file.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::OnceLock;

use airlock_format::frames::FrameWriter;
use airlock_format::manifest::{Entry, Manifest, MANIFEST_PATH, SIGNATURE_PATH};
use airlock_format::minisign::{PublicKey, SecretKey};
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, read_manifest, EntrySink};
use airlock_format::report::Silent;
use airlock_format::Sha256Digest;
use airlock_installer::site::answers::Answers;
use airlock_installer::site::profile::Profile;

use crate::bytes::Input;
use crate::signatures::our_key;

/// The manifest parser and its validation: nothing panics, and what parses writes back
/// to bytes that parse to the same manifest; every accessor works on it.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::from_bytes(data) else {
        // Parsed but invalid: validation must say so without panicking.
        if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
            let _ = m.validate();
        }
        return;
    };
    m.validate().expect("a manifest that parsed validates again");
    let again = Manifest::from_bytes(&m.to_bytes()).expect("a manifest we wrote parses");
    assert_eq!(again, m, "manifest round trip");
    let _ = m.total_size();
    let _ = m.artifacts_by_entry();
    let _ = m.trusted_comment();
    let _ = m.release_sha256();
    let full = m.full_release();
    full.validate().expect("the full release of a valid manifest is valid");
    for e in &m.entries {
        assert!(m.entry(&e.path).is_some());
    }
}

/// The key raw bundles are checked against. Its secret half never signs anything the
/// fuzzer sees, so no input may ever be accepted with it.
fn unforgeable_key() -> &'static PublicKey {
    static K: OnceLock<PublicKey> = OnceLock::new();
    K.get_or_init(|| our_key(&[0x52; 32], b"fuzz-raw").public_key())
}

/// The key the harness signs fuzzer-made manifests with (a vendor key the site trusts).
pub fn vendor_key() -> &'static SecretKey {
    static K: OnceLock<SecretKey> = OnceLock::new();
    K.get_or_init(|| our_key(&[0x53; 32], b"fuzz-vnd"))
}

/// A GNU tar header like the bundle writer's (mode 0644, owner 0, mtime 0).
pub fn tar_entry(out: &mut Vec<u8>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    let n = path.len().min(100);
    h.as_gnu_mut().expect("gnu").name[..n].copy_from_slice(&path.as_bytes()[..n]);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Compresses a tar stream into the bundle's zstd frames.
pub fn frames(tar: &[u8], frame: usize) -> Vec<u8> {
    let mut w = FrameWriter::with_frame_size(Vec::new(), 1, 1, frame).expect("frame writer");
    w.write_all(tar).expect("compress");
    w.finish().expect("compress")
}

/// The signed-mode input for a manifest and the tar bytes after its signature.
pub fn signed_bundle_input(manifest: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = vec![1u8];
    crate::bytes::piece(&mut v, manifest);
    v.extend_from_slice(tail);
    v
}

/// Collects what the reader hands out, per entry.
#[derive(Default)]
struct Collect {
    open: Option<String>,
    bytes: BTreeMap<String, Vec<u8>>,
    finished: BTreeMap<String, bool>,
    buf: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntrySink for Collect {
    fn open(&mut self, entry: &Entry) -> airlock_format::error::Result<Option<Box<dyn Write>>> {
        assert!(self.open.is_none(), "open before end");
        self.open = Some(entry.path.clone());
        self.buf.borrow_mut().clear();
        Ok(Some(Box::new(Shared(self.buf.clone()))))
    }
    fn end(&mut self, entry: &Entry) -> airlock_format::error::Result<()> {
        assert_eq!(self.open.take().as_deref(), Some(entry.path.as_str()), "end of another entry");
        let got = std::mem::take(&mut *self.buf.borrow_mut());
        assert!(self.bytes.insert(entry.path.clone(), got).is_none(), "{} read twice", entry.path);
        Ok(())
    }
    fn finish(&mut self, entry: &Entry, verified: bool) -> airlock_format::error::Result<()> {
        assert!(self.finished.insert(entry.path.clone(), verified).is_none(), "{} finished twice", entry.path);
        Ok(())
    }
}

/// The verifying bundle reader, frames and tar. Mode bit 0 clear: the input is the
/// bundle file, checked against a key nobody signs with, and must never be accepted.
/// Set: the input is a manifest (signed here with a trusted vendor key) and the tar
/// stream after its signature; whatever the reader accepts must be exactly what that
/// manifest lists (sizes and digests of what it handed out), and what it calls
/// verified must be.
pub fn bundle(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.airlock");
    let signed = mode & 1 == 1;
    let bytes = if signed {
        let manifest = input.piece();
        let tail = input.rest();
        let sig = vendor_key().sign(manifest, "fuzz", "fuzz").expect("sign").to_text();
        let mut tar = Vec::new();
        tar_entry(&mut tar, MANIFEST_PATH, manifest);
        tar_entry(&mut tar, SIGNATURE_PATH, sig.as_bytes());
        tar.extend_from_slice(tail);
        frames(&tar, if mode & 2 == 0 { 512 } else { 64 << 10 })
    } else {
        input.rest().to_vec()
    };
    std::fs::write(&path, &bytes).expect("write bundle");
    let files = BundleFiles { base: path.clone(), parts: vec![path] };
    let trusted = if signed { vendor_key().public_key() } else { *unforgeable_key() };

    let _ = read_manifest(&files, None);
    let header = read_manifest(&files, Some(&[trusted]));
    let mut sink = Collect::default();
    let result = read_bundle(&files, &[trusted], &mut sink, &Silent);
    if !signed {
        assert!(header.is_err(), "a manifest nobody signed was accepted");
        assert!(result.is_err(), "a bundle nobody signed was accepted");
        return;
    }
    let Ok(outcome) = result else { return };
    let bad: Vec<&str> = outcome.mismatches.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(sink.bytes.len(), outcome.manifest.entries.len(), "entries handed out");
    for e in &outcome.manifest.entries {
        let got = sink.bytes.get(&e.path).unwrap_or_else(|| panic!("{} never handed out", e.path));
        assert_eq!(got.len() as u64, e.size, "{}: size", e.path);
        let matches = Sha256Digest::of(got) == e.sha256;
        assert_eq!(!bad.contains(&e.path.as_str()), matches, "{}: verdict", e.path);
        assert_eq!(sink.finished.get(&e.path), Some(&matches), "{}: finish", e.path);
    }
}

/// The profiles answers are checked against: the repository's.
fn profiles() -> &'static [Profile] {
    static P: OnceLock<Vec<Profile>> = OnceLock::new();
    P.get_or_init(|| {
        [
            ("single-node", include_str!("../../../profiles/single-node.yaml")),
            ("ha", include_str!("../../../profiles/ha.yaml")),
            ("rke2-cis", include_str!("../../../profiles/rke2-cis.yaml")),
        ]
        .iter()
        .map(|(n, t)| Profile::from_bundle_entry(t, n).expect("the repository's profiles load"))
        .collect()
    })
}

/// The answers parser and its checks: nothing panics; answers that load name a profile
/// that is then cross-checked without panicking.
pub fn answers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(a) = Answers::from_yaml(text, "answers.yaml") else { return };
    let _ = a.starts_cluster();
    if let Ok(p) = a.profile_in(profiles()) {
        let _ = a.validate_against(p);
    }
    for kind in [airlock_format::manifest::DistributionKind::K3s, airlock_format::manifest::DistributionKind::Rke2] {
        let _ = a.cluster_init(kind);
        let _ = a.join_url(kind);
    }
}
