//! The streaming bundle writer (bundler side).
//!
//! The caller plans everything first (the manifest with every entry's size and digest,
//! and its signature); the writer then streams the manifest, the signature and each
//! entry in manifest order through one tar builder, into zstd frames of 1 MiB
//! compressed on every core (`frames`), and into the part writer. Every entry is hashed
//! again while it streams and compared with the plan, so an input that changed on
//! disk, or a source blob whose bytes do not match its digest, aborts the build
//! instead of producing a bundle that lies.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::digest::{BackgroundHasher, PendingDigest, Sha256Digest, Sha256Hasher};
use crate::error::{Error, IoContext, Result};
use crate::frames::FrameWriter;
use crate::manifest::{Entry, MANIFEST_PATH, SIGNATURE_PATH};
use crate::parts::{PartWriter, WrittenPart};
use crate::report::{Event, Reporter};

/// Where the bytes of one bundle entry come from. Sources never copy inputs into a
/// scratch area: an entry points at its file, or at the byte range of a member inside
/// an uncompressed tar archive (oci-archive / docker-archive inputs), and is read once
/// while the bundle streams out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Bytes generated in memory (manifests, indexes, packaged small charts).
    Bytes(Vec<u8>),
    /// A whole file.
    File(PathBuf),
    /// `len` bytes of `path` starting at `offset`.
    FileRange { path: PathBuf, offset: u64, len: u64 },
}

impl Content {
    /// The byte length, without touching the file system for in-memory and range content.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Content::Bytes(b) => Some(b.len() as u64),
            Content::FileRange { len, .. } => Some(*len),
            Content::File(_) => None,
        }
    }

    /// Where the content comes from, for error messages.
    pub fn origin(&self) -> String {
        match self {
            Content::Bytes(_) => "generated content".into(),
            Content::File(p) => p.display().to_string(),
            Content::FileRange { path, offset, .. } => format!("{} (at byte {offset})", path.display()),
        }
    }

    /// Opens the content for reading.
    pub fn open(&self) -> Result<Box<dyn Read + '_>> {
        Ok(match self {
            Content::Bytes(b) => Box::new(&b[..]),
            Content::File(p) => Box::new(BufReader::with_capacity(READ_BUF, File::open(p).at(p)?)),
            Content::FileRange { path, offset, len } => {
                let mut f = File::open(path).at(path)?;
                f.seek(SeekFrom::Start(*offset)).at(path)?;
                Box::new(BufReader::with_capacity(READ_BUF, f.take(*len)))
            }
        })
    }

    /// Size and SHA-256 of the content (reads it once).
    pub fn measure(&self) -> Result<(Sha256Digest, u64)> {
        let mut r = crate::digest::HashingReader::new(self.open()?);
        io::copy(&mut r, &mut io::sink()).at(self.origin())?;
        Ok(r.finish())
    }
}

/// One entry to write, with the content it must have.
#[derive(Clone, Debug)]
pub struct PlannedEntry {
    pub entry: Entry,
    pub content: Content,
    /// The producer knows the content is compressed already (a layer whose media
    /// type says gzip or zstd): it is stored after a trial of a small sample of each
    /// frame instead of a compression attempt of the whole frame. The writer
    /// also recognises compressed content by its file name and leading bytes.
    pub precompressed: bool,
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// mtime of every tar entry (the bundle's creation time).
    pub mtime: u64,
    /// zstd level.
    pub level: i32,
    /// zstd compressing threads (0 counts as 1). The output does not depend on it:
    /// every frame is compressed on its own, so bundles are byte-identical across
    /// machines.
    pub threads: u32,
    /// Maximum size of one part; `None` writes a single file.
    pub split_size: Option<u64>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        Self { mtime: 0, level: 3, threads: cores.max(1), split_size: None }
    }
}

/// Large reads keep the syscall count low; tar and zstd copy in small chunks.
const READ_BUF: usize = 1 << 20;

/// Writes the bundle to `out` (or its parts). Nothing appears under the final names
/// unless the whole bundle was written and every entry matched its plan.
pub fn write_bundle(
    out: &Path,
    manifest: &[u8],
    signature: &[u8],
    entries: &[PlannedEntry],
    opts: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<WrittenPart>> {
    let parts = PartWriter::create(out, opts.split_size)?;
    // Every frame carries a checksum, so any change to the decompressed stream — tar
    // headers and padding included, which the manifest digests do not cover — fails
    // decoding.
    let enc = FrameWriter::new(parts, opts.level, opts.threads as usize).at(out)?;
    let mut tar = TarWriter { out: enc, mtime: opts.mtime };

    let total: u64 = entries.iter().map(|e| e.entry.size).sum::<u64>() + manifest.len() as u64;
    reporter.event(Event::Phase { name: "writing bundle", total: Some(total) });

    tar.header(MANIFEST_PATH, 0o644, manifest.len() as u64).at(out)?;
    tar.data(manifest).at(out)?;
    tar.pad(manifest.len() as u64).at(out)?;
    tar.header(SIGNATURE_PATH, 0o644, signature.len() as u64).at(out)?;
    tar.data(signature).at(out)?;
    tar.pad(signature.len() as u64).at(out)?;
    reporter.event(Event::Progress { bytes: manifest.len() as u64 });

    let hasher = BackgroundHasher::new(4, CHUNK);
    // Digests the hashing thread has yet to deliver, checked as they arrive: waiting
    // for each at the end of its entry would put a round trip to that thread between
    // every two entries, which for thousands of small blobs costs more than the hashing.
    let mut pending: std::collections::VecDeque<(&PlannedEntry, PendingDigest)> = Default::default();
    for pe in entries {
        let e = &pe.entry;
        let mut src = pe.content.open()?;
        tar.header(&e.path, e.mode(), e.size).map_err(|err| Error::io(out, err).within(&e.path))?;
        // Small entries are hashed here: handing them over costs more than hashing them.
        let mut inline = (e.size < INLINE_HASH).then(Sha256Hasher::new);
        let mut left = e.size;
        while left > 0 {
            let mut buf = hasher.buffer();
            let want = (left as usize).min(buf.len());
            let n = read_full(&mut src, &mut buf[..want]).at(pe.content.origin())?;
            if n == 0 {
                return Err(Error::corrupt(
                    &e.path,
                    format!("{} is shorter than the planned {} bytes", pe.content.origin(), e.size),
                )
                .with_hint(CHANGED));
            }
            if left == e.size && e.size >= MIN_STORED {
                let stored = pe.precompressed || compressed_name(&e.path) || compressed_magic(&buf[..n]);
                tar.out.set_stored(stored).map_err(|err| Error::io(out, err).within(&e.path))?;
            }
            tar.data(&buf[..n]).map_err(|err| Error::io(out, err).within(&e.path))?;
            match inline.as_mut() {
                Some(h) => {
                    h.update(&buf[..n]);
                    hasher.give_back(buf);
                }
                None => hasher.update(buf, n),
            }
            left -= n as u64;
            reporter.event(Event::Progress { bytes: n as u64 });
        }
        // The padding and the next header are compressed with what follows.
        tar.out.set_stored(false).map_err(|err| Error::io(out, err).within(&e.path))?;
        tar.pad(e.size).map_err(|err| Error::io(out, err).within(&e.path))?;
        // The source must end exactly where the plan says.
        let mut probe = [0u8; 1];
        if src.read(&mut probe).at(pe.content.origin())? != 0 {
            return Err(Error::corrupt(
                &e.path,
                format!("{} is longer than the planned {} bytes", pe.content.origin(), e.size),
            )
            .with_hint(CHANGED));
        }
        match inline {
            Some(h) => check_digest(pe, h.finish())?,
            None => pending.push_back((pe, hasher.finish_later())),
        }
        while let Some(got) = pending.front().and_then(|(_, d)| d.ready()) {
            let (pe, _) = pending.pop_front().expect("a pending digest");
            check_digest(pe, got)?;
        }
        reporter.event(Event::Entry { path: &e.path, size: e.size });
    }
    for (pe, d) in pending {
        check_digest(pe, d.wait())?;
    }
    let enc = tar.finish().at(out)?;
    let parts = enc.finish().at(out)?;
    parts.finish()
}

const CHUNK: usize = 1 << 20;

/// Entries smaller than this are hashed on the writing thread (see `write_bundle`).
const INLINE_HASH: u64 = 16 << 10;

const CHANGED: &str = "an input changed while the bundle was being built; run the build again";

/// Compares what an entry hashed to with the digest the manifest promises for it. The
/// bundle is not renamed into place after a mismatch, so checking after later entries
/// were written already is as safe as checking at once.
fn check_digest(pe: &PlannedEntry, got: Sha256Digest) -> Result<()> {
    let e = &pe.entry;
    if got == e.sha256 {
        return Ok(());
    }
    Err(Error::corrupt(
        &e.path,
        format!("{} has digest {got}, which does not match the expected {}", pe.content.origin(), e.sha256),
    )
    .with_hint(
        "the source is corrupt (its bytes do not match the digest its source names: a damaged blob, or a \
         release artifact that is not the one its checksum list names) or it changed during the build",
    ))
}

/// Entries at least this large whose content is compressed already are stored in
/// frames of their own, each after a trial of a small sample only (see `frames`). Smaller ones stay in the
/// compressed frames around them: a frame cut costs more than it saves there.
pub const MIN_STORED: u64 = 64 << 10;

/// File names of compressed formats (charts as `.tgz`, release artifacts as `.tar.zst`).
fn compressed_name(path: &str) -> bool {
    [".tgz", ".gz", ".zst", ".xz", ".bz2", ".zip"].iter().any(|s| path.ends_with(s))
}

/// Leading bytes of gzip, zstd, xz and bzip2 data.
fn compressed_magic(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(b"BZh")
}

/// Fills `buf` as far as the reader goes (fewer bytes only at its end), so the chunks
/// handed to the hashing thread and to zstd are large.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes tar records itself: the `tar` crate's builder copies entry data through an
/// 8 KiB buffer, which costs a zstd call per 8 KiB; here data goes to zstd in 1 MiB
/// chunks. Headers are GNU format, deterministic (owner 0:0, no names, fixed mtime);
/// paths over 100 bytes get a GNU long-name record first, as GNU tar writes them.
struct TarWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    fn header(&mut self, path: &str, mode: u32, size: u64) -> io::Result<()> {
        let bytes = path.as_bytes();
        if bytes.len() > 100 {
            let mut name = bytes.to_vec();
            name.push(0);
            let mut h = self.base_header(0o644, name.len() as u64, tar::EntryType::GNULongName);
            h.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            self.out.write_all(&name)?;
            self.pad(name.len() as u64)?;
        }
        let mut h = self.base_header(mode, size, tar::EntryType::Regular);
        let n = bytes.len().min(100);
        h.as_gnu_mut().expect("gnu header").name[..n].copy_from_slice(&bytes[..n]);
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    fn base_header(&self, mode: u32, size: u64, ty: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(ty);
        h
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// The end-of-archive marker: two zero blocks.
    fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;

    fn planned(path: &str, bytes: Vec<u8>, sha256: Sha256Digest) -> PlannedEntry {
        PlannedEntry {
            entry: Entry { path: path.into(), size: bytes.len() as u64, sha256, executable: false },
            content: Content::Bytes(bytes),
            precompressed: false,
        }
    }

    fn write(dir: &Path, entries: &[PlannedEntry]) -> (PathBuf, Result<Vec<WrittenPart>>) {
        let out = dir.join("b.airlock");
        let opts = WriteOptions { mtime: 0, level: 3, threads: 2, split_size: None };
        let r = write_bundle(&out, b"{}", b"sig", entries, &opts, &Silent);
        (out, r)
    }

    /// Digests of large entries arrive from the hashing thread after later entries were
    /// written: a mismatch found then still fails the build and leaves no bundle.
    #[test]
    fn a_large_entry_whose_bytes_do_not_match_fails_the_build_after_later_entries() {
        let t = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3 << 20];
        let mut entries = vec![planned("a/big", big, Sha256Digest::of(b"something else"))];
        for i in 0..50 {
            let b = format!("small {i}").into_bytes();
            let d = Sha256Digest::of(&b);
            entries.push(planned(&format!("b/{i:02}"), b, d));
        }
        let (out, r) = write(t.path(), &entries);
        let err = r.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("a/big") && err.to_string().contains("does not match"), "{err}");
        assert!(!out.exists() && std::fs::read_dir(t.path()).unwrap().next().is_none());
    }

    /// Small entries are hashed on the writing thread: a mismatch there fails the same way.
    #[test]
    fn a_small_entry_whose_bytes_do_not_match_fails_the_build() {
        let t = tempfile::tempdir().unwrap();
        let entries = vec![planned("a/small", b"abc".to_vec(), Sha256Digest::of(b"abd"))];
        let (out, r) = write(t.path(), &entries);
        assert_eq!(r.unwrap_err().kind, crate::ErrorKind::Corrupt);
        assert!(!out.exists());
    }

    /// Matching digests, large and small mixed, write a bundle.
    #[test]
    fn entries_whose_bytes_match_their_digests_are_written() {
        let t = tempfile::tempdir().unwrap();
        let entries: Vec<PlannedEntry> = [vec![1u8; 2 << 20], b"x".to_vec(), vec![2u8; 100 << 10]]
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let d = Sha256Digest::of(&b);
                planned(&format!("e/{i}"), b, d)
            })
            .collect();
        let (out, r) = write(t.path(), &entries);
        assert_eq!(r.unwrap()[0].path, out);
        assert!(out.exists());
    }
}
