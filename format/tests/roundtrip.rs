//! Writer and reader agree: what is written verifies, byte-identically, split or not.

use airlock_format::digest::Sha256Digest;
use airlock_format::manifest::{Entry, FileArtifact, Manifest, FORMAT_V1};
use airlock_format::minisign::SecretKey;
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, VerifyOnly};
use airlock_format::report::Silent;
use airlock_format::write::{write_bundle, Content, PlannedEntry, WriteOptions};

fn plan(files: &[(&str, Vec<u8>)]) -> (Manifest, Vec<PlannedEntry>) {
    let mut entries: Vec<PlannedEntry> = files
        .iter()
        .map(|(p, b)| PlannedEntry {
            entry: Entry { path: p.to_string(), size: b.len() as u64, sha256: Sha256Digest::of(b), executable: false },
            content: Content::Bytes(b.clone()),
        })
        .collect();
    entries.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    let m = Manifest {
        format: FORMAT_V1.into(),
        name: "t".into(),
        version: "1".into(),
        created: "1970-01-01T00:00:00Z".into(),
        distribution: None,
        installer: None,
        components: vec![],
        images: vec![],
        charts: vec![],
        files: files
            .iter()
            .map(|(p, _)| FileArtifact {
                name: p.rsplit('/').next().unwrap().into(),
                component: "c".into(),
                path: p.to_string(),
            })
            .collect(),
        profiles: vec![],
        key_statements: vec![],
        entries: entries.iter().map(|e| e.entry.clone()).collect(),
        base: None,
        base_entries: vec![],
        upgrade: None,
    };
    (m, entries)
}

#[test]
fn written_bundle_verifies_and_split_parts_read_back_in_place() {
    let key = SecretKey::generate().unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let long = format!("files/c/{}", "x".repeat(150));
    let (m, entries) =
        plan(&[("files/c/a.txt", b"hello".to_vec()), ("files/c/big.bin", big), (&long, b"long name".to_vec())]);
    let mb = m.to_bytes();
    let sig = key.sign(&mb, &m.trusted_comment(), "t").unwrap();
    let d = tempfile::tempdir().unwrap();
    for split in [None, Some(100_000)] {
        let out = d.path().join(format!("b-{split:?}"));
        let opts = WriteOptions { split_size: split, ..WriteOptions::default() };
        let parts = write_bundle(&out, &mb, sig.to_text().as_bytes(), &entries, &opts, &Silent).unwrap();
        assert_eq!(parts.len() > 1, split.is_some());
        let files = BundleFiles::locate(&out).unwrap();
        let outcome = read_bundle(&files, &[key.public_key()], &mut VerifyOnly, &Silent).unwrap();
        assert!(outcome.is_ok(), "{:?}", outcome.mismatches);
        assert_eq!(outcome.manifest, m);
    }
}
