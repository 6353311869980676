//! The streaming bundle writer (bundler side).
//!
//! The caller plans everything first (the manifest with every entry's size and digest,
//! and its signature); the writer then streams the manifest, the signature and each
//! entry in manifest order through one tar builder into a multi-threaded zstd encoder
//! and the part writer. Every entry is hashed again while it streams and compared with
//! the plan, so an input that changed on disk, or a source blob whose bytes do not
//! match its digest, aborts the build instead of producing a bundle that lies.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
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
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// mtime of every tar entry (the bundle's creation time).
    pub mtime: u64,
    /// zstd level.
    pub level: i32,
    /// zstd worker threads (at least 1: multi-threaded zstd output does not depend on
    /// the number of workers, single-threaded output differs, so 0 is never used and
    /// bundles stay byte-identical across machines).
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
    let mut enc = zstd::stream::write::Encoder::new(parts, opts.level).at(out)?;
    enc.multithread(opts.threads.max(1)).at(out)?;
    // The frame checksum makes any change to the decompressed stream — tar headers and
    // padding included, which the manifest digests do not cover — fail decoding.
    enc.include_checksum(true).at(out)?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);

    let total: u64 = entries.iter().map(|e| e.entry.size).sum::<u64>() + manifest.len() as u64;
    reporter.event(Event::Phase { name: "writing bundle", total: Some(total) });

    append(&mut tar, MANIFEST_PATH, 0o644, opts.mtime, manifest.len() as u64, &mut &manifest[..]).at(out)?;
    append(&mut tar, SIGNATURE_PATH, 0o644, opts.mtime, signature.len() as u64, &mut &signature[..]).at(out)?;
    reporter.event(Event::Progress { bytes: manifest.len() as u64 });

    for pe in entries {
        let e = &pe.entry;
        let src = pe.content.open()?;
        let mut checked = Checked { inner: src, hasher: crate::digest::Sha256Hasher::new(), count: 0, limit: e.size };
        let res = append(&mut tar, &e.path, e.mode(), opts.mtime, e.size, &mut checked);
        match res {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Error::corrupt(
                    &e.path,
                    format!("{} is shorter than the planned {} bytes", pe.content.origin(), e.size),
                )
                .with_hint("an input changed while the bundle was being built; run the build again"));
            }
            Err(err) => return Err(Error::io(out, err).within(&e.path)),
        }
        // The source must end exactly where the plan says.
        let mut probe = [0u8; 1];
        if checked.inner.read(&mut probe).at(pe.content.origin())? != 0 {
            return Err(Error::corrupt(&e.path, format!("{} is longer than the planned {} bytes", pe.content.origin(), e.size))
                .with_hint("an input changed while the bundle was being built; run the build again"));
        }
        let got = checked.hasher.finish();
        if got != e.sha256 {
            return Err(Error::corrupt(
                &e.path,
                format!("{} has digest {got}, expected {}", pe.content.origin(), e.sha256),
            )
            .with_hint("the source is corrupt (a blob whose bytes do not match its digest) or changed during the build"));
        }
        reporter.event(Event::Entry { path: &e.path, size: e.size });
        reporter.event(Event::Progress { bytes: e.size });
    }
    let enc = tar.into_inner().at(out)?;
    let parts = enc.finish().at(out)?;
    parts.finish()
}

/// A reader that hashes what passes and refuses to give more than `limit` bytes.
struct Checked<R> {
    inner: R,
    hasher: crate::digest::Sha256Hasher,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.limit - self.count).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..room])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn header(mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    // The path is set by append_data, which also writes GNU long-name records.
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32, mtime: u64, size: u64, r: &mut dyn Read) -> io::Result<()> {
    let mut h = header(mode, mtime, size);
    tar.append_data(&mut h, path, ExactReader { inner: r, left: size })
}

/// Turns a short read into `UnexpectedEof` so tar never pads a truncated input.
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}
