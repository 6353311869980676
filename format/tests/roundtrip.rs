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
            precompressed: false,
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
        monitoring: None,
        drill_checks: Vec::new(),
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

/// Pseudo-random bytes: what compressed data looks like to zstd.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Compressed entries (flagged by the producer, named `.tgz`, or starting like gzip)
/// are stored verbatim in raw zstd blocks; compressible ones are still compressed; the
/// stream stays one ordinary zstd stream that verifies, the same for any thread count.
#[test]
fn compressed_entries_are_stored_verbatim_and_the_bundle_still_verifies() {
    let key = SecretKey::generate().unwrap();
    let flagged = noise(300_000, 1);
    let tgz = noise(200_000, 2);
    let mut gz = vec![0x1f, 0x8b, 8, 0];
    gz.extend(noise(150_000, 3));
    let text: Vec<u8> = (0..60_000).flat_map(|i| format!("line {i} of a log\n").into_bytes()).collect();
    let (m, mut entries) = plan(&[
        ("files/c/flagged.bin", flagged.clone()),
        ("files/c/chart.tgz", tgz.clone()),
        ("files/c/layer.bin", gz.clone()),
        ("files/c/log.txt", text.clone()),
    ]);
    for e in &mut entries {
        e.precompressed = e.entry.path.ends_with("flagged.bin");
    }
    let mb = m.to_bytes();
    let sig = key.sign(&mb, &m.trusted_comment(), "t").unwrap();
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, threads: u32| {
        let out = d.path().join(name);
        let opts = WriteOptions { threads, ..WriteOptions::default() };
        write_bundle(&out, &mb, sig.to_text().as_bytes(), &entries, &opts, &Silent).unwrap();
        out
    };
    let out = write("b1", 1);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes, std::fs::read(write("b3", 3)).unwrap(), "same bytes for any thread count");
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // A raw block holds up to 128 KiB verbatim: each entry's first bytes are there.
    for (what, b) in [("flagged", &flagged), ("tgz", &tgz), ("gzip", &gz)] {
        assert!(find(&b[..4096]), "{what} entry stored verbatim");
    }
    assert!(!find(&text[..4096]), "text is compressed");
    let tar_len = zstd::decode_all(&bytes[..]).unwrap().len();
    assert!(bytes.len() < tar_len - text.len() / 2, "text compressed, the rest stored: {} of {tar_len}", bytes.len());
    let files = BundleFiles::locate(&out).unwrap();
    let outcome = read_bundle(&files, &[key.public_key()], &mut VerifyOnly, &Silent).unwrap();
    assert!(outcome.is_ok(), "{:?}", outcome.mismatches);
}

/// Records what the reader asks of a sink, in order.
#[derive(Default)]
struct Recorder {
    calls: Vec<(&'static str, String, bool)>,
    bytes: std::collections::BTreeMap<String, std::rc::Rc<std::cell::RefCell<Vec<u8>>>>,
}

struct Capture(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl airlock_format::read::EntrySink for Recorder {
    fn open(&mut self, e: &Entry) -> airlock_format::error::Result<Option<Box<dyn std::io::Write>>> {
        self.calls.push(("open", e.path.clone(), true));
        let buf = self.bytes.entry(e.path.clone()).or_default().clone();
        Ok(Some(Box::new(Capture(buf))))
    }
    fn end(&mut self, e: &Entry) -> airlock_format::error::Result<()> {
        self.calls.push(("end", e.path.clone(), true));
        Ok(())
    }
    fn finish(&mut self, e: &Entry, verified: bool) -> airlock_format::error::Result<()> {
        self.calls.push(("finish", e.path.clone(), verified));
        Ok(())
    }
}

#[test]
fn sink_gets_each_entry_ended_before_the_next_opens_and_every_verdict_in_bundle_order() {
    let key = SecretKey::generate().unwrap();
    // Entries of a few MiB each, so hashing runs behind decoding and verdicts arrive
    // after later entries were opened.
    let files: Vec<(String, Vec<u8>)> = (0..12u32)
        .map(|n| {
            let size = 1_000_000 + n as usize * 311_111;
            (
                format!("files/c/f{n:02}"),
                (0..size as u32).map(|i| (i.wrapping_mul(2654435761 + n) >> 11) as u8).collect(),
            )
        })
        .collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let (m, entries) = plan(&borrowed);
    let mb = m.to_bytes();
    let sig = key.sign(&mb, &m.trusted_comment(), "t").unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("b");
    write_bundle(&out, &mb, sig.to_text().as_bytes(), &entries, &WriteOptions::default(), &Silent).unwrap();
    let mut rec = Recorder::default();
    let outcome = read_bundle(&BundleFiles::locate(&out).unwrap(), &[key.public_key()], &mut rec, &Silent).unwrap();
    assert!(outcome.is_ok(), "{:?}", outcome.mismatches);

    // open and end alternate, entry by entry, in manifest order.
    let opened: Vec<_> = rec.calls.iter().filter(|c| c.0 != "finish").collect();
    let paths: Vec<&String> = m.entries.iter().map(|e| &e.path).collect();
    assert_eq!(opened.len(), 2 * paths.len());
    for (i, pair) in opened.chunks(2).enumerate() {
        assert_eq!((pair[0].0, &pair[0].1, pair[1].0, &pair[1].1), ("open", paths[i], "end", paths[i]));
    }
    // Every entry gets one verdict, in manifest order, never before its end.
    let verdicts: Vec<&String> = rec.calls.iter().filter(|c| c.0 == "finish").map(|c| &c.1).collect();
    assert_eq!(verdicts, paths);
    for p in &paths {
        let at = |kind: &str| rec.calls.iter().position(|c| c.0 == kind && &c.1 == *p).unwrap();
        assert!(at("end") < at("finish"), "{p}: verdict before its end");
    }
    assert!(rec.calls.iter().all(|c| c.2), "a good bundle has only good verdicts");
    for (p, b) in &files {
        assert!(*rec.bytes[p].borrow() == *b, "{p}: the sink got other bytes");
    }
}
