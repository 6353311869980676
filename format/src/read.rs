//! The streaming, verifying bundle reader (installer and support side).
//!
//! One pass over the parts, in place: zstd-decode, walk the tar entries in raw mode
//! (so long-name records and anything exotic are seen by us, not interpreted by the
//! tar library), check the manifest's signature before anything else is looked at,
//! then check every entry's type, path, mode, order and size against the signed
//! manifest *before* reading its data, and its SHA-256 while reading it.
//!
//! Bytes go to an [`EntrySink`] as they stream; a sink that writes must write into
//! staging only and act on [`EntrySink::finish`], which says whether the entry matched.
//!
//! Structural problems (bad signature, unsafe or unexpected entries, truncation,
//! undecodable data) stop the read with an error. A digest mismatch does not: the
//! stream is still in sync, so the reader goes on and reports every bad entry, which
//! is what support needs to name every broken artifact in one run.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::digest::{BackgroundHasher, IdleWork, PendingDigest, Sha256Digest};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::frames::{FrameHeader, FrameReader, Piece};
use crate::manifest::{
    check_entry_path, Entry, Manifest, MANIFEST_PATH, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_PATH,
};
use crate::minisign::{self, PublicKey, Signature};
use crate::parts::{BundleFiles, PartsReader};
use crate::readahead::ReadAhead;
use crate::report::{Event, Reporter};
use crate::write::read_full;

/// The largest zstd window the reader accepts (2^27 = 128 MiB of decoder memory). The
/// bundler uses far less; the cap stops a crafted frame from demanding gigabytes.
pub const MAX_WINDOW_LOG: u32 = 27;
/// Zero padding accepted after the tar end-of-archive marker.
const MAX_TRAILER: u64 = 1 << 20;
/// Longest GNU long-name record accepted (entry paths are at most 1024 bytes).
const MAX_LONG_NAME: u64 = 4096;
const CHUNK: usize = 1 << 20;
/// Decoded chunks (or, for small frames, decoded frames of 1 MiB) that may wait for
/// the hashing thread (64 MiB). Decoding stored (incompressible) data is faster than
/// hashing it and decoding well-compressed data is slower, and a bundle has stretches of each as long as its largest layers; a queue
/// this deep lets the two threads even them out instead of taking turns. Measured on
/// the benchmark bundle (100 MiB layers of each kind): 4 chunks left the decoder
/// waiting 0.35 s of 2.0 s, 64 leave it nearly never waiting.
const HASH_QUEUE: usize = 64;
/// Compressed input the hashing thread may read ahead in its idle time (8 MiB).
const READ_AHEAD: usize = 8;
/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The longest zstd frame header (magic, descriptor, window, dictionary id, size).
const FRAME_HEADER_MAX: usize = 18;
/// Decoding threads at most. One core is left to the hashing thread, which decodes too
/// while it has nothing to hash: SHA-256 runs one entry after another on one thread,
/// so it must never wait for a core behind the decoders. (On two cores, two decoders
/// plus the hashing thread gave ratio 0.88 to `zstd -dc`; one plus the helping hashing
/// thread 0.94.)
const MAX_DECODERS: usize = 4;
const TAMPERED: &str = "the bundle was modified after it was signed; get a genuine copy from the vendor";
const UNSAFE: &str = "bundles hold only plain files under relative paths; this one was altered to reach outside \
its directory or create special files: do not use it, get a genuine copy from the vendor";

/// Receives verified manifests and streaming entry bytes.
pub trait EntrySink {
    /// The signature checked out and the manifest is valid; no entry was read yet.
    fn manifest(&mut self, _manifest: &Manifest, _signer: &PublicKey) -> Result<()> {
        Ok(())
    }
    /// Where to put the bytes of `entry` while they stream (they are unverified until
    /// [`EntrySink::finish`]). `None` discards them.
    fn open(&mut self, _entry: &Entry) -> Result<Option<Box<dyn Write>>> {
        Ok(None)
    }
    /// All of the entry's bytes went to the writer from [`EntrySink::open`] (which is
    /// dropped by now); its digest is not known yet. Called before the next `open`.
    fn end(&mut self, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    /// The entry's digest was compared: `verified` is false on a mismatch. Called once
    /// per entry, in bundle order, but not at once: hashing runs behind decoding, so
    /// later entries may have been opened already.
    fn finish(&mut self, _entry: &Entry, _verified: bool) -> Result<()> {
        Ok(())
    }
}

/// A sink that only verifies.
pub struct VerifyOnly;
impl EntrySink for VerifyOnly {}

/// An entry whose content does not match the manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    pub path: String,
    pub expected: Sha256Digest,
    pub actual: Sha256Digest,
}

/// What a complete read found.
#[derive(Debug)]
pub struct ReadOutcome {
    pub manifest: Manifest,
    pub signer: PublicKey,
    pub signature: Signature,
    /// Entries whose digest did not match (empty for a good bundle).
    pub mismatches: Vec<Mismatch>,
}

impl ReadOutcome {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Reads only the manifest and signature, verifying the signature when `trusted` is
/// given. Used by `inspect`, which must work without the key.
pub fn read_manifest(
    files: &BundleFiles,
    trusted: Option<&[PublicKey]>,
) -> Result<(Manifest, Signature, Option<PublicKey>)> {
    let mut r = Reader::open(files)?;
    let (bytes, sig) = r.manifest_only().map_err(|e| r.locate_failure(e))?;
    let signer = match trusted {
        Some(keys) => Some(minisign::verify(keys, &sig, &bytes).map_err(|e| e.within(MANIFEST_PATH))?),
        None => None,
    };
    let manifest = Manifest::from_bytes(&bytes).map_err(|e| invalid_manifest(e, signer.is_some()))?;
    Ok((manifest, sig, signer))
}

/// Reads one entry's bytes (e.g. the SBOM for `inspect --sbom`). The manifest's
/// signature is checked when `trusted` is given; the entry's bytes are always checked
/// against the manifest's digest, so they are what the (signed) manifest lists. Reads
/// the bundle up to that entry. `Ok(None)` when the manifest has no such entry.
pub fn read_entry(
    files: &BundleFiles,
    trusted: Option<&[PublicKey]>,
    path: &str,
) -> Result<Option<(Manifest, Vec<u8>)>> {
    let mut r = Reader::open(files)?;
    let result = r.one_entry(trusted, path);
    result.map_err(|e| r.locate_failure(e))
}

/// Verifies the whole bundle, handing every entry to `sink`.
pub fn read_bundle(
    files: &BundleFiles,
    trusted: &[PublicKey],
    sink: &mut dyn EntrySink,
    reporter: &dyn Reporter,
) -> Result<ReadOutcome> {
    let mut r = Reader::open(files)?;
    let result = r.run(trusted, sink, reporter);
    result.map_err(|e| r.locate_failure(e))
}

/// Remembers I/O errors of the underlying files, so a failed decode can be told apart
/// from a failed disk (`Io`, exit 6) and corrupt data (`Corrupt`, exit 4).
struct WatchedParts {
    inner: PartsReader,
    // Shared with the hashing thread, which reads ahead in its idle time.
    failed: Arc<Mutex<Option<String>>>,
}

impl Read for WatchedParts {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let (p, off) = self.inner.position();
            let what = format!("{}: read failed at byte {off}: {e}", p.display());
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        })
    }
}

/// Counts decompressed bytes and refuses to go past a limit (decompression bombs).
struct Limited<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    limit: Rc<Cell<u64>>,
    /// Bytes taken as [`Piece`]s, past the tar parser's back; its next skip forward
    /// counts them first (see [`Stream`]).
    taken: u64,
}

impl Limited<Decoder> {
    /// Up to `max` bytes without a copy (small frames only), within the limit.
    fn piece(&mut self, max: u64) -> io::Result<Piece> {
        let Decoder::Frames(frames) = &mut self.inner else {
            return Err(io::Error::other("a bundle of one large frame has no pieces"));
        };
        let (count, limit) = (self.count.get(), self.limit.get());
        if count >= limit {
            return match frames.piece(1)?.len() {
                0 => frames.piece(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, BombError)),
            };
        }
        let p = frames.piece((limit - count).min(max).min(usize::MAX as u64) as usize)?;
        self.count.set(count + p.len() as u64);
        self.taken += p.len() as u64;
        Ok(p)
    }

    /// Reads and drops `n` bytes (without copying them where the decoder allows).
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let got = match &self.inner {
                Decoder::Frames(_) => {
                    let p = self.piece(n)?;
                    self.taken -= p.len() as u64;
                    p.len()
                }
                Decoder::Stream(_) => self.read(&mut scratch[..n.min(8192) as usize])?,
            };
            if got == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the bundle ends inside an entry"));
            }
            n -= got as u64;
        }
        Ok(())
    }
}

/// The decoded stream, shared by the tar parser and [`walk`]. The parser reads headers
/// and small entries through [`Read`]; the walk takes entry data as [`Piece`]s, straight
/// from the decoded frames, so the bytes are not copied on their way to SHA-256 (on a
/// two-core machine that copy cost more than a tenth of the time). The parser then
/// skips the entry with a seek forward, which first counts what the walk took.
#[derive(Clone)]
struct Stream(Rc<RefCell<Limited<Decoder>>>);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl Seek for Stream {
    /// Only forward from where the parser is, which is all it asks for; returns the
    /// position in the stream, which the parser takes as its own.
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let mut s = self.0.borrow_mut();
        let n = match pos {
            SeekFrom::Current(n) if n >= 0 && n as u64 >= s.taken => n as u64,
            _ => return Err(io::Error::other(format!("the tar reader asked to seek to {pos:?}"))),
        };
        let skip = n - s.taken;
        s.taken = 0;
        s.skip(skip)?;
        Ok(s.count.get())
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (count, limit) = (self.count.get(), self.limit.get());
        if count >= limit {
            // Allow one probe byte to tell "at the limit" from "beyond it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, BombError)),
            };
        }
        let room = (limit - count).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.count.set(count + n as u64);
        Ok(n)
    }
}

#[derive(Debug)]
struct BombError;
impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the bundle decompresses to more data than its manifest accounts for")
    }
}
impl std::error::Error for BombError {}

/// The decompressed stream. Bundles are runs of small frames, decoded on every core;
/// a stream of one large frame (bundles written before frames were cut) is decoded as
/// a stream, with the compressed input read ahead by the hashing thread when idle.
enum Decoder {
    Frames(FrameReader),
    Stream(zstd::stream::read::Decoder<'static, ReadAhead<WatchedParts>>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Frames(f) => f.read(buf),
            Decoder::Stream(s) => s.read(buf),
        }
    }
}

type Entries<'a> = tar::Entries<'a, Stream>;

struct Reader {
    files: BundleFiles,
    failed: Arc<Mutex<Option<String>>>,
    count: Rc<Cell<u64>>,
    limit: Rc<Cell<u64>>,
    archive: Option<tar::Archive<Stream>>,
    stream: Stream,
    /// Whether the bundle is a run of small frames, decoded on worker threads.
    frames: bool,
    /// Reading ahead, for the hashing thread to run while it has nothing to hash.
    read_ahead: Option<IdleWork>,
}

impl Reader {
    fn open(files: &BundleFiles) -> Result<Self> {
        let failed = Arc::new(Mutex::new(None));
        let parts = WatchedParts { inner: PartsReader::open(files)?, failed: failed.clone() };
        let head = check_magic(files)?;
        let frames = FrameHeader::starts_small_frames(&head);
        let (dec, read_ahead) = if frames {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (Decoder::Frames(FrameReader::new(parts, (cores - 1).clamp(1, MAX_DECODERS), HASH_QUEUE)), None)
        } else {
            let input = ReadAhead::new(parts, READ_AHEAD, CHUNK);
            let read_ahead = Some(input.idle_work());
            // One frame only: the decoder would otherwise go on to decode (or skip)
            // further frames appended after the bundle; `check_trailer` refuses them.
            let mut dec =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| Error::io(&files.base, e))?.single_frame();
            dec.window_log_max(MAX_WINDOW_LOG).map_err(|e| Error::io(&files.base, e))?;
            (Decoder::Stream(dec), read_ahead)
        };
        // Until the manifest is read, nothing but the manifest and signature may come.
        let count = Rc::new(Cell::new(0));
        let limit = Rc::new(Cell::new(MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + 8192));
        let limited = Limited { inner: dec, count: count.clone(), limit: limit.clone(), taken: 0 };
        let stream = Stream(Rc::new(RefCell::new(limited)));
        let archive = Some(tar::Archive::new(stream.clone()));
        Ok(Self { files: files.clone(), failed, count, limit, archive, stream, frames, read_ahead })
    }

    fn hashing(&mut self) -> Hashing {
        if self.frames {
            // Pieces, each a frame at most, and a digest per entry between them.
            let helper = match &mut self.stream.0.borrow_mut().inner {
                Decoder::Frames(f) => f.helper(),
                Decoder::Stream(_) => None,
            };
            Hashing { hasher: BackgroundHasher::for_shared(4 * HASH_QUEUE, helper), pieces: Some(self.stream.clone()) }
        } else {
            Hashing {
                hasher: BackgroundHasher::with_idle_work(HASH_QUEUE, CHUNK, self.read_ahead.take()),
                pieces: None,
            }
        }
    }

    fn base(&self) -> String {
        self.files.base.display().to_string()
    }

    /// Maps a failure to the right kind and names where in the files it happened.
    fn locate_failure(&self, mut e: Error) -> Error {
        if let Some(f) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if e.kind == ErrorKind::Corrupt {
                e.kind = ErrorKind::Io;
                e.cause = format!("{} ({f})", e.cause);
                e.hint = Some("the medium could not be read; copy the bundle again or try another drive".into());
            }
        }
        e
    }

    fn manifest_only(&mut self) -> Result<(Vec<u8>, Signature)> {
        let base = self.base();
        let mut archive = self.archive.take().expect("archive is read once");
        let entries = archive.entries_with_seek().map_err(|e| decode_error(&base, e))?;
        head(&mut entries.raw(true), &base)
    }

    fn run(&mut self, trusted: &[PublicKey], sink: &mut dyn EntrySink, reporter: &dyn Reporter) -> Result<ReadOutcome> {
        let base = self.base();
        let mut archive = self.archive.take().expect("archive is read once");
        let outcome = {
            let entries = archive.entries_with_seek().map_err(|e| decode_error(&base, e))?;
            let mut entries = entries.raw(true);
            let (manifest_bytes, signature) = head(&mut entries, &base)?;
            // Fail closed: the signature is checked before the manifest is even parsed.
            let signer = minisign::verify(trusted, &signature, &manifest_bytes).map_err(|e| e.within(MANIFEST_PATH))?;
            let manifest = Manifest::from_bytes(&manifest_bytes).map_err(|e| invalid_manifest(e, true))?;
            sink.manifest(&manifest, &signer)?;

            // Now the manifest bounds how much data may follow: every entry's size
            // rounded up to tar blocks, a header and long-name record each, and the
            // end marker with some padding.
            // Checked: a signed manifest with absurd sizes must be an error, not a
            // panic or a bound that wrapped around.
            let bound = manifest
                .entries
                .iter()
                .try_fold(self.count.get() + MAX_TRAILER, |sum, e| {
                    e.size.checked_next_multiple_of(512)?.checked_add(512 * 4)?.checked_add(sum)
                })
                .ok_or_else(|| {
                    invalid_manifest(
                        Error::corrupt(MANIFEST_PATH, "the entry sizes add up to more than 2^64 bytes"),
                        true,
                    )
                })?;
            self.limit.set(bound);

            reporter.event(Event::Phase { name: "verifying", total: Some(manifest.total_size()) });
            let mismatches = body(&mut entries, &manifest, &base, sink, reporter, self.hashing())?;
            ReadOutcome { manifest, signer, signature, mismatches }
        };
        drop(archive);
        check_trailer(&self.stream, &base)?;
        Ok(outcome)
    }
}

impl Reader {
    fn one_entry(&mut self, trusted: Option<&[PublicKey]>, want: &str) -> Result<Option<(Manifest, Vec<u8>)>> {
        let base = self.base();
        let mut archive = self.archive.take().expect("archive is read once");
        let entries = archive.entries_with_seek().map_err(|e| decode_error(&base, e))?;
        let mut entries = entries.raw(true);
        let (manifest_bytes, signature) = head(&mut entries, &base)?;
        let signed = match trusted {
            Some(keys) => {
                minisign::verify(keys, &signature, &manifest_bytes).map_err(|e| e.within(MANIFEST_PATH))?;
                true
            }
            None => false,
        };
        let manifest = Manifest::from_bytes(&manifest_bytes).map_err(|e| invalid_manifest(e, signed))?;
        let Some(expected) = manifest.entry(want).cloned() else { return Ok(None) };
        // Everything up to and including the wanted entry, as in `run`.
        let bound = manifest
            .entries
            .iter()
            .take_while(|e| e.path.as_str() <= want)
            .try_fold(self.count.get(), |sum, e| {
                e.size.checked_next_multiple_of(512)?.checked_add(512 * 4)?.checked_add(sum)
            })
            .ok_or_else(|| Error::corrupt(MANIFEST_PATH, "the entry sizes add up to more than 2^64 bytes"))?;
        self.limit.set(bound);
        let mut long_name: Option<String> = None;
        for item in entries {
            let mut ent = item.map_err(|e| decode_error(&base, e))?;
            let header_path = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
            if ent.header().entry_type() == tar::EntryType::GNULongName {
                let mut v = Vec::new();
                (&mut ent).take(MAX_LONG_NAME).read_to_end(&mut v).map_err(|e| decode_error(&base, e))?;
                while v.last() == Some(&0) {
                    v.pop();
                }
                long_name = Some(String::from_utf8_lossy(&v).into_owned());
                continue;
            }
            let path = long_name.take().unwrap_or(header_path);
            if path != want {
                // Entries are sorted: once past the wanted path, it is missing.
                if path.as_str() > want {
                    break;
                }
                continue;
            }
            if ent.size() != expected.size {
                return Err(Error::corrupt(
                    &path,
                    format!("entry is {} bytes, the manifest says {}", ent.size(), expected.size),
                )
                .with_hint(TAMPERED));
            }
            let mut v = Vec::with_capacity(expected.size.min(1 << 24) as usize);
            ent.read_to_end(&mut v).map_err(|e| decode_error(&path, e))?;
            let actual = Sha256Digest::of(&v);
            if actual != expected.sha256 {
                return Err(Error::corrupt(
                    &path,
                    format!("has digest {actual}, the manifest says {}", expected.sha256),
                )
                .with_hint(TAMPERED));
            }
            return Ok(Some((manifest, v)));
        }
        Err(Error::corrupt(want, "the manifest lists this entry but the bundle does not hold it")
            .with_hint("the bundle is truncated or was modified; copy it again or get a genuine copy from the vendor"))
    }
}

/// Reads the manifest bytes and the signature, the first two entries.
fn head(entries: &mut Entries<'_>, base: &str) -> Result<(Vec<u8>, Signature)> {
    let first = entries
        .next()
        .ok_or_else(|| {
            Error::corrupt(base, "the bundle is empty").with_hint("this is not an Airlock bundle, or it is truncated")
        })?
        .map_err(|e| decode_error(base, e))?;
    let manifest = read_small(first, MANIFEST_PATH, MAX_MANIFEST_BYTES, base, || {
        Error::corrupt(base, "the first entry is not the bundle manifest")
            .with_hint("this is not an Airlock bundle (v1 bundles start with airlock/manifest.json)")
    })?;
    let second = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(decode_error(base, e)),
        None => return Err(unsigned(base)),
    };
    let sig_bytes = read_small(second, SIGNATURE_PATH, MAX_SIGNATURE_BYTES, base, || unsigned(base))?;
    let text = String::from_utf8(sig_bytes).map_err(|_| {
        Error::signature(SIGNATURE_PATH, "the signature is not text").with_hint(
            "the signature is damaged or is not a minisign signature; get a genuine copy of the bundle from the vendor",
        )
    })?;
    let sig = Signature::parse(&text).map_err(|e| e.within(SIGNATURE_PATH))?;
    Ok((manifest, sig))
}

/// Checks every entry after the head against the manifest; returns digest mismatches.
fn body(
    entries: &mut Entries<'_>,
    manifest: &Manifest,
    base: &str,
    sink: &mut dyn EntrySink,
    reporter: &dyn Reporter,
    hashing: Hashing,
) -> Result<Vec<Mismatch>> {
    let mut digests = Unsettled::default();
    let walked = walk(entries, manifest, base, sink, reporter, &hashing, &mut digests);
    // Every digest asked for is compared, also when the walk stopped early, so a run
    // that stopped still says which entries were fine. A sink error after a stopped
    // walk is the lesser news.
    let settled = digests.settle(sink, reporter, true);
    walked?;
    settled?;
    Ok(digests.mismatches)
}

/// The hashing thread and, for small frames, the stream to take entry data from as
/// pieces (see [`Stream`]); without it, entry data is read into the hasher's buffers.
struct Hashing {
    hasher: BackgroundHasher,
    pieces: Option<Stream>,
}

/// Entries whose bytes were all read and whose digests the hashing thread has yet to
/// deliver, oldest first.
#[derive(Default)]
struct Unsettled<'m> {
    queue: VecDeque<(&'m Entry, PendingDigest)>,
    mismatches: Vec<Mismatch>,
}

impl Unsettled<'_> {
    /// Compares the digests that are ready (with `wait`, all of them), in order.
    fn settle(&mut self, sink: &mut dyn EntrySink, reporter: &dyn Reporter, wait: bool) -> Result<()> {
        while let Some((entry, pending)) = self.queue.front() {
            let actual = match pending.ready() {
                Some(d) => d,
                None if wait => pending.wait(),
                None => break,
            };
            let entry = *entry;
            self.queue.pop_front();
            let ok = actual == entry.sha256;
            if !ok {
                self.mismatches.push(Mismatch { path: entry.path.clone(), expected: entry.sha256, actual });
            }
            sink.finish(entry, ok)?;
            reporter.event(Event::Entry { path: &entry.path, size: entry.size });
        }
        Ok(())
    }
}

/// Reads every entry after the head, checking its header against the manifest before
/// its data, and hands the data to the sink and the hashing thread.
fn walk<'m>(
    entries: &mut Entries<'_>,
    manifest: &'m Manifest,
    base: &str,
    sink: &mut dyn EntrySink,
    reporter: &dyn Reporter,
    hashing: &Hashing,
    digests: &mut Unsettled<'m>,
) -> Result<()> {
    let (hasher, pieces) = (&hashing.hasher, hashing.pieces.as_ref());
    let tampered = TAMPERED;
    let mut next = 0usize; // index of the next expected manifest entry
    let mut long_name: Option<String> = None;
    for item in entries {
        let mut ent = item.map_err(|e| decode_error(base, e))?;
        let header_path = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
        if ent.header().entry_type() == tar::EntryType::GNULongName {
            if ent.size() > MAX_LONG_NAME {
                return Err(
                    Error::corrupt(base, format!("long-name record of {} bytes", ent.size())).with_hint(tampered)
                );
            }
            let mut v = Vec::new();
            ent.read_to_end(&mut v).map_err(|e| decode_error(base, e))?;
            while v.last() == Some(&0) {
                v.pop();
            }
            long_name = Some(String::from_utf8_lossy(&v).into_owned());
            continue;
        }
        let path = long_name.take().unwrap_or(header_path);
        check_header(&ent, &path)?;
        let Ok(idx) = manifest.entries.binary_search_by(|e| e.path.as_str().cmp(&path)) else {
            return Err(Error::corrupt(shown(&path), "entry is not in the signed manifest").with_hint(tampered));
        };
        let expected = &manifest.entries[idx];
        if idx < next {
            return Err(Error::corrupt(&path, "entry appears twice in the bundle").with_hint(tampered));
        }
        if idx > next {
            return Err(Error::corrupt(
                &manifest.entries[next].path,
                format!("entry is missing or out of order (found `{path}` in its place)"),
            )
            .with_hint(tampered));
        }
        next += 1;
        let mode = ent.header().mode().unwrap_or(0);
        if mode & 0o7777 != expected.mode() {
            return Err(Error::corrupt(
                &path,
                format!("mode {:o}, the manifest says {:o}", mode & 0o7777, expected.mode()),
            )
            .with_hint(tampered));
        }
        if ent.size() != expected.size {
            return Err(Error::corrupt(
                &path,
                format!("entry is {} bytes, the signed manifest says {}", ent.size(), expected.size),
            )
            .with_hint(tampered));
        }
        let mut out = sink.open(expected)?;
        let mut left = expected.size;
        let data_error = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated(&path),
            _ => decode_error(&path, e),
        };
        while let Some(stream) = pieces.filter(|_| left > 0) {
            let piece = stream.0.borrow_mut().piece(left).map_err(data_error)?;
            if piece.is_empty() {
                return Err(truncated(&path));
            }
            let n = piece.len();
            if let Some(w) = out.as_mut() {
                w.write_all(piece.as_ref()).map_err(|e| Error::io(&path, e))?;
            }
            hasher.update_shared(piece);
            left -= n as u64;
            reporter.event(Event::Progress { bytes: n as u64 });
        }
        while left > 0 {
            let mut buf = hasher.buffer();
            let want = (left as usize).min(buf.len());
            let n = read_full(&mut ent, &mut buf[..want]).map_err(data_error)?;
            if n == 0 {
                return Err(truncated(&path));
            }
            if let Some(w) = out.as_mut() {
                w.write_all(&buf[..n]).map_err(|e| Error::io(&path, e))?;
            }
            hasher.update(buf, n);
            left -= n as u64;
            reporter.event(Event::Progress { bytes: n as u64 });
        }
        if let Some(mut w) = out.take() {
            w.flush().map_err(|e| Error::io(&path, e))?;
        }
        sink.end(expected)?;
        digests.queue.push_back((expected, hasher.finish_later()));
        digests.settle(sink, reporter, false)?;
    }
    if long_name.is_some() {
        // A long-name record with no entry after it: bytes the manifest does not cover.
        return Err(Error::corrupt(base, "a long-name record at the end names no entry").with_hint(tampered));
    }
    if next < manifest.entries.len() {
        let missing = &manifest.entries[next..];
        let more = if missing.len() > 1 { format!(" and {} more", missing.len() - 1) } else { String::new() };
        return Err(Error::corrupt(&missing[0].path, format!("the bundle ends before this entry{more}"))
            .with_hint("the bundle is truncated or a part is missing; copy it again"));
    }
    Ok(())
}

/// After the end-of-archive marker only zero padding may follow, and the zstd stream
/// must end exactly at the end of the last part with the frame that holds the marker:
/// nothing, not even another frame, may follow it.
fn check_trailer(stream: &Stream, base: &str) -> Result<()> {
    let mut inner = stream.0.borrow_mut();
    if let Decoder::Frames(f) = &mut inner.inner {
        f.stop_at_frame_end();
    }
    let mut buf = [0u8; 8192];
    let mut seen = 0u64;
    loop {
        let n = inner.read(&mut buf).map_err(|e| decode_error(base, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(Error::corrupt(base, "data follows the end of the bundle archive").with_hint(TAMPERED));
        }
        seen += n as u64;
        if seen > MAX_TRAILER {
            return Err(Error::corrupt(base, "more than 1 MiB of padding follows the end of the bundle archive")
                .with_hint(TAMPERED));
        }
    }
    let ends = match &mut inner.inner {
        Decoder::Frames(f) => f.at_end(),
        Decoder::Stream(s) => {
            // The compressed input left after the frame.
            let mut probe = [0u8; 1];
            s.get_mut().read(&mut probe).map_err(|e| decode_error(base, e))? == 0
        }
    };
    if !ends {
        return Err(Error::corrupt(base, "data follows the end of the compressed bundle stream").with_hint(TAMPERED));
    }
    Ok(())
}

/// Tells a file that is not a bundle at all (empty, or not zstd) from a damaged one
/// before anything is decoded. Returns the first bytes, which hold the first frame's
/// header.
fn check_magic(files: &BundleFiles) -> Result<Vec<u8>> {
    let Some(first) = files.parts.first() else { return Ok(Vec::new()) };
    let mut magic = Vec::with_capacity(FRAME_HEADER_MAX);
    // Through the parts: with a tiny --split-size the header spans more than one.
    PartsReader::open(files)?.take(FRAME_HEADER_MAX as u64).read_to_end(&mut magic).at(first)?;
    let not_ours = "this is not an Airlock bundle; give the path of the bundle file (or of one of its .partNNN files)";
    if magic.is_empty() {
        return Err(Error::corrupt(first.display().to_string(), "the file is empty").with_hint(not_ours));
    }
    // A prefix of the magic is a truncated bundle, which decoding reports as such.
    if !magic.starts_with(&ZSTD_MAGIC) && !ZSTD_MAGIC.starts_with(&magic) {
        return Err(Error::corrupt(first.display().to_string(), "the file is not zstd-compressed, so it is no bundle")
            .with_hint(format!(
                "{not_ours}; if it is one, it is damaged: copy it again and compare with its .sha256 list"
            )));
    }
    Ok(magic)
}

fn check_header<R: Read>(ent: &tar::Entry<'_, R>, raw_path: &str) -> Result<()> {
    use tar::EntryType as T;
    // Paths and link targets come from the attacker: escape them before they reach
    // the operator's terminal.
    let path = &shown(raw_path);
    let ty = ent.header().entry_type();
    let link = || shown(&ent.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default());
    match ty {
        T::Regular | T::Continuous => {}
        T::Symlink => return Err(Error::unsafe_entry(path, format!("symbolic link to `{}`", link())).with_hint(UNSAFE)),
        T::Link => return Err(Error::unsafe_entry(path, format!("hard link to `{}`", link())).with_hint(UNSAFE)),
        T::Char | T::Block => return Err(Error::unsafe_entry(path, "device file").with_hint(UNSAFE)),
        T::Fifo => return Err(Error::unsafe_entry(path, "named pipe").with_hint(UNSAFE)),
        other => return Err(Error::corrupt(path, format!("unexpected tar entry type {other:?}")).with_hint(TAMPERED)),
    }
    if let Err(why) = check_entry_path(raw_path) {
        return Err(Error::unsafe_entry(path, format!("unsafe path: {why}")).with_hint(UNSAFE));
    }
    let (uid, gid) = (ent.header().uid(), ent.header().gid());
    if !matches!((&uid, &gid), (Ok(0), Ok(0))) {
        let id = |v: &io::Result<u64>| v.as_ref().map(|v| v.to_string()).unwrap_or_else(|_| "?".into());
        return Err(Error::corrupt(path, format!("owner {}:{}, bundle entries are owned by 0:0", id(&uid), id(&gid)))
            .with_hint(TAMPERED));
    }
    let mode =
        ent.header().mode().map_err(|e| Error::corrupt(path, format!("bad mode field: {e}")).with_hint(TAMPERED))?;
    if mode & 0o7000 != 0 {
        return Err(
            Error::unsafe_entry(path, format!("mode {mode:o} has setuid, setgid or sticky bits")).with_hint(UNSAFE)
        );
    }
    Ok(())
}

/// Reads one of the two head entries, checking its name, type and size bound first.
fn read_small<R: Read>(
    mut ent: tar::Entry<'_, R>,
    want: &str,
    max: u64,
    base: &str,
    wrong: impl Fn() -> Error,
) -> Result<Vec<u8>> {
    let path = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
    if path != want {
        return Err(wrong());
    }
    check_header(&ent, &path)?;
    if ent.size() > max {
        return Err(
            Error::corrupt(&path, format!("{} bytes, more than the {max} allowed", ent.size())).with_hint(TAMPERED)
        );
    }
    let mut v = Vec::with_capacity(ent.size() as usize);
    ent.read_to_end(&mut v).map_err(|e| decode_error(base, e))?;
    if (v.len() as u64) < ent.size() {
        return Err(truncated(&path));
    }
    Ok(v)
}

/// A manifest that does not parse or validate. Signed, the vendor's bundler made it
/// (broken, or newer than this installer); unsigned, it may just be damaged.
fn invalid_manifest(e: Error, signed: bool) -> Error {
    if e.hint.is_some() {
        return e;
    }
    let hint = match (e.kind, signed) {
        (ErrorKind::Unsafe, _) => UNSAFE,
        (_, true) => "the manifest is signed but invalid: report this bundle to the vendor; do not use it",
        (_, false) => {
            "the manifest is damaged or this is not an Airlock bundle; verify it with the vendor key (--pubkey)"
        }
    };
    e.with_hint(hint)
}

fn unsigned(base: &str) -> Error {
    Error::signature(base, "the bundle is not signed (no manifest signature follows the manifest)")
        .with_hint("refusing an unsigned bundle; ask the vendor for a signed one")
}

fn truncated(subject: &str) -> Error {
    Error::corrupt(subject, "the bundle ends in the middle of this entry")
        .with_hint("the bundle is truncated or its last part is missing; copy it again")
}

/// Control characters escaped (`\n`, `\u{1b}`), everything else as it is.
fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn decode_error(subject: &str, e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<BombError>()) {
        return Error::corrupt(subject, BombError.to_string())
            .with_hint("the bundle was modified after it was signed (possible decompression bomb)");
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::corrupt(subject, "the bundle ends early: it is truncated")
            .with_hint("the bundle is truncated or its last part is missing; copy it again"),
        _ => Error::corrupt(subject, format!("the bundle data cannot be decoded: {e}"))
            .with_hint("the bundle is damaged (a flipped byte, a missing or reordered part); copy it again and compare with its .sha256 list"),
    }
}
