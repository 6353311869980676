//! The bundle's zstd stream as a run of small independent frames, so that both writing
//! and reading use every core.
//!
//! The writer cuts the tar stream into pieces of [`FRAME_CONTENT`] bytes and compresses
//! each as a zstd frame of its own (content size and checksum in the frame) on worker
//! threads, then writes the frames in order. Frames one after another are one standard
//! zstd stream: `zstd -dc` and `tar` read it like any other. Each frame depends only on
//! its own bytes, so the output is the same for any number of threads.
//!
//! A single zstd frame can only be decoded by one thread, which made verifying slower
//! than `zstd -dc` alone: decoding took one core and SHA-256 the other, and the two
//! took turns. With small frames the reader finds where each frame ends from the block
//! headers alone (RFC 8878, section 3.1.1), without decoding, and decodes frames on
//! worker threads; the caller gets the bytes in stream order.
//!
//! Decoded frames are handed out without a copy ([`Piece`]) as well as through
//! [`Read`]: the reader passes entry data to SHA-256 that way, since on two cores the
//! copy alone cost a tenth of the time.
//!
//! A damaged frame is decoded once more as a stream, so the bytes before the damage
//! still reach the caller, followed by the error: the reader then names the entry that
//! holds the damage, as it did with one frame. Memory stays bounded: a frame may hold
//! at most [`FRAME_CONTENT`] bytes and take at most [`MAX_FRAME_BYTES`] compressed, and
//! a fixed number of frames is in flight.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::digest::IdleWork;
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

/// Uncompressed bytes in one frame (the last frame may hold fewer). Large enough that
/// the frame header, checksum and fresh window cost little in size (the benchmark
/// bundle: 0.01 % larger than one frame), small enough that the frames in flight stay
/// in the processor's cache (4 MiB frames verified 7 % slower).
pub const FRAME_CONTENT: usize = 1 << 20;
/// The most compressed bytes a frame may take: stored as raw blocks, its content plus a
/// 3-byte header per 128 KiB block, the frame header and checksum, with room to spare.
pub const MAX_FRAME_BYTES: usize = FRAME_CONTENT + (64 << 10);
const MAGIC: u32 = 0xFD2F_B528;
const BLOCK_MAX: usize = 128 << 10;
/// The largest window a damaged frame may ask for while it is decoded again as a
/// stream. A frame of at most 4 MiB never needs a larger one.
const SALVAGE_WINDOW_LOG: u32 = 23;
/// The splitting thread's read buffer. It only serves the small reads of frame and
/// block headers: a block's data is read straight into the frame's buffer, since a
/// buffer smaller than the read is bypassed, which saves copying every byte once more.
const INPUT_BUF: usize = 4 << 10;

/// What a frame header says, as far as splitting the stream needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of the header, magic number included.
    pub len: usize,
    /// The declared content size, when the header has one.
    pub content_size: Option<u64>,
    /// Whether a 4-byte checksum follows the last block.
    pub checksum: bool,
}

impl FrameHeader {
    /// Parses the header at the start of `b`. `Ok(None)`: `b` is too short to tell.
    pub fn parse(b: &[u8]) -> Result<Option<Self>, String> {
        if b.len() < 5 {
            return Ok(None);
        }
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            return Err("a skippable zstd frame, which bundles never hold".into());
        }
        if magic != MAGIC {
            return Err(format!("no zstd frame starts here (magic {magic:#010x})"));
        }
        let descriptor = b[4];
        if descriptor & 0x08 != 0 {
            return Err("a zstd frame header with its reserved bit set".into());
        }
        if descriptor & 0x03 != 0 {
            return Err("a zstd frame that needs a dictionary, which bundles never use".into());
        }
        let single_segment = descriptor & 0x20 != 0;
        let size_len = match descriptor >> 6 {
            0 if single_segment => 1,
            0 => 0,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let len = 5 + usize::from(!single_segment) + size_len;
        if b.len() < len {
            return Ok(None);
        }
        let f = &b[len - size_len..len];
        let content_size = match size_len {
            0 => None,
            1 => Some(u64::from(f[0])),
            2 => Some(u64::from(u16::from_le_bytes([f[0], f[1]])) + 256),
            4 => Some(u64::from(u32::from_le_bytes([f[0], f[1], f[2], f[3]]))),
            _ => Some(u64::from_le_bytes(f.try_into().expect("8 bytes"))),
        };
        Ok(Some(Self { len, content_size, checksum: descriptor & 0x04 != 0 }))
    }

    /// Whether a stream starting with `head` is a run of small frames, which
    /// [`FrameReader`] decodes in parallel. A stream of one large frame (bundles made
    /// before frames were cut, or by other tools) is read by a streaming decoder.
    pub fn starts_small_frames(head: &[u8]) -> bool {
        matches!(Self::parse(head), Ok(Some(h)) if h.content_size.is_some_and(|n| n <= FRAME_CONTENT as u64))
    }
}

/// One frame's worth of buffers, reused for the life of a writer or reader so that no
/// 4 MiB allocation (and its page faults) happens per frame.
struct Slot {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Writer: store the input as raw blocks without trying to compress it.
    stored: bool,
    /// Reader: the input holds a whole frame (false: the stream ended inside it).
    complete: bool,
    /// Reader: the end of the stream, no frame.
    end: bool,
    error: Option<io::Error>,
}

impl Slot {
    fn new(input: usize, output: usize) -> Self {
        Self {
            seq: 0,
            input: Vec::with_capacity(input),
            output: Vec::with_capacity(output),
            stored: false,
            complete: true,
            end: false,
            error: None,
        }
    }

    fn reset(&mut self, seq: u64) {
        self.seq = seq;
        self.input.clear();
        self.output.clear();
        self.stored = false;
        self.complete = true;
        self.end = false;
        self.error = None;
    }
}

/// Worker threads share one job queue.
type Jobs = Arc<Mutex<Receiver<Slot>>>;

fn next_job(jobs: &Jobs) -> Option<Slot> {
    jobs.lock().unwrap_or_else(|p| p.into_inner()).recv().ok()
}

/// Slots that arrive out of order wait here until their turn.
struct InOrder {
    done: Receiver<Slot>,
    waiting: BTreeMap<u64, Slot>,
    next: u64,
}

impl InOrder {
    /// The next slot in sequence; `None` once every sender is gone.
    fn next(&mut self) -> Option<Slot> {
        loop {
            if let Some(s) = self.waiting.remove(&self.next) {
                self.next += 1;
                return Some(s);
            }
            let s = self.done.recv().ok()?;
            self.waiting.insert(s.seq, s);
        }
    }
}

fn zstd_error(code: usize) -> String {
    zstd_safe::get_error_name(code).to_string()
}

// ---------------------------------------------------------------------------------
// Writing

/// Compresses everything written to it into frames of [`FRAME_CONTENT`] bytes each and
/// writes them, in order, to `W` on a thread of its own. Call [`FrameWriter::finish`]:
/// without it the last frame is never written.
pub struct FrameWriter<W> {
    cur: Option<Slot>,
    seq: u64,
    free: Receiver<Slot>,
    jobs: Option<Sender<Slot>>,
    writer: Option<JoinHandle<io::Result<W>>>,
    workers: Vec<JoinHandle<()>>,
    frame: usize,
    /// See [`FrameWriter::set_stored`].
    stored: bool,
}

impl<W: Write + Send + 'static> FrameWriter<W> {
    /// `threads` compressing threads (at least one); `level` is the zstd level.
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<Self> {
        Self::with_frame_size(out, level, threads, FRAME_CONTENT)
    }

    /// As [`FrameWriter::new`], with frames of `frame` bytes (1 to [`FRAME_CONTENT`]).
    /// Bundles use [`FRAME_CONTENT`]; tests use small frames to get many of them
    /// from a little data, which readers take as they take any run of small frames.
    pub fn with_frame_size(out: W, level: i32, threads: usize, frame: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let frame = frame.clamp(1, FRAME_CONTENT);
        let (free_tx, free) = channel();
        // Two frames per thread keep every thread busy while the writer catches up.
        for _ in 0..2 * threads + 1 {
            let _ = free_tx.send(Slot::new(frame, zstd_safe::compress_bound(frame)));
        }
        let (jobs_tx, jobs_rx) = channel::<Slot>();
        let jobs: Jobs = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done) = channel();
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut cctx = CCtx::create();
            for p in [CParameter::CompressionLevel(level), CParameter::ChecksumFlag(true)] {
                cctx.set_parameter(p).map_err(|c| io::Error::other(zstd_error(c)))?;
            }
            let mut probe = CCtx::create();
            probe
                .set_parameter(CParameter::CompressionLevel(PROBE_LEVEL))
                .map_err(|c| io::Error::other(zstd_error(c)))?;
            let (jobs, done_tx) = (jobs.clone(), done_tx.clone());
            workers.push(thread::spawn(move || {
                let mut sample = Vec::with_capacity(zstd_safe::compress_bound(PROBE_BYTES));
                while let Some(mut s) = next_job(&jobs) {
                    if s.stored && !probe_compresses(&mut probe, &s.input, &mut sample) {
                        raw_frame(&s.input, &mut s.output);
                    } else {
                        match cctx.compress2(&mut s.output, &s.input) {
                            Err(c) => {
                                s.error = Some(io::Error::other(format!("zstd compression failed: {}", zstd_error(c))));
                            }
                            // Compression that saves next to nothing only slows every
                            // reader down: the frame is stored instead.
                            Ok(n) if saves_too_little(s.input.len(), n) => raw_frame(&s.input, &mut s.output),
                            Ok(_) => {}
                        }
                    }
                    if done_tx.send(s).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(done_tx);
        let mut order = InOrder { done, waiting: BTreeMap::new(), next: 0 };
        let writer = thread::spawn(move || {
            let mut out = out;
            while let Some(mut s) = order.next() {
                if let Some(e) = s.error.take() {
                    return Err(e);
                }
                out.write_all(&s.output)?;
                // The writer may already be gone when the stream is done.
                let _ = free_tx.send(s);
            }
            if !order.waiting.is_empty() {
                return Err(io::Error::other("a compressing thread stopped"));
            }
            out.flush()?;
            Ok(out)
        });
        Ok(Self { cur: None, seq: 0, free, jobs: Some(jobs_tx), writer: Some(writer), workers, frame, stored: false })
    }

    /// Whether what is written from now on is already compressed (a gzip or zstd
    /// layer, a `.tgz`): its frames are then stored as raw blocks unless a sample at
    /// either end of the frame still compresses ([`PROBE_BYTES`]), which spares all but
    /// a few percent of the compressing work. A change of mode ends the current frame, so a
    /// frame is all one or all the other. Frame boundaries still follow from the bytes
    /// and these calls alone, so the output stays the same for any number of threads.
    pub fn set_stored(&mut self, stored: bool) -> io::Result<()> {
        if stored != self.stored {
            if self.cur.as_ref().is_some_and(|s| !s.input.is_empty()) {
                self.submit()?;
            }
            self.stored = stored;
            if let Some(s) = self.cur.as_mut() {
                s.stored = stored;
            }
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        let Some(s) = self.cur.take() else { return Ok(()) };
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(s).is_ok());
        if !sent {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Why the pipeline stopped: the writing thread's error.
    fn failure(&mut self) -> io::Error {
        self.jobs = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the bundle writing thread panicked"),
            _ => io::Error::other("the compressing threads stopped"),
        }
    }

    /// Compresses and writes the last frame, waits for every thread and returns `W`.
    pub fn finish(mut self) -> io::Result<W> {
        if self.seq == 0 && self.cur.is_none() {
            // An empty stream still is one (empty) frame, so it decodes.
            self.take_slot()?;
        }
        self.submit()?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the bundle writing thread panicked")),
        }
    }

    fn take_slot(&mut self) -> io::Result<()> {
        match self.free.recv() {
            Ok(mut s) => {
                s.reset(self.seq);
                s.stored = self.stored;
                self.seq += 1;
                self.cur = Some(s);
                Ok(())
            }
            Err(_) => Err(self.failure()),
        }
    }
}

impl<W> Drop for FrameWriter<W> {
    /// A writer dropped without `finish` (the build failed) waits for its threads, so
    /// `W` is dropped here, before the caller goes on: a part writer removes its
    /// unfinished files when dropped.
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl<W: Write + Send + 'static> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.cur.is_none() {
            self.take_slot()?;
        }
        let s = self.cur.as_mut().expect("slot taken");
        let n = buf.len().min(self.frame - s.input.len());
        s.input.extend_from_slice(&buf[..n]);
        if s.input.len() == self.frame {
            self.submit()?;
        }
        Ok(n)
    }

    /// Does not cut a frame: frame boundaries depend on the bytes only, never on when
    /// the caller flushes, so the output stays deterministic.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A frame whose compression saves less than 1/[`MIN_SAVING`] (0.8 %) of its bytes is
/// stored raw instead: below the 1 % by which a bundle may exceed `tar | zstd -3`, and
/// readers then copy instead of decoding (docs/bundle-format.md has the measurement).
pub const MIN_SAVING: usize = 128;

fn saves_too_little(raw: usize, compressed: usize) -> bool {
    compressed + raw / MIN_SAVING >= raw
}

/// Bytes at each end of a frame of compressed content that are tried before the frame
/// is stored, and the zstd level of that trial.
///
/// Content that says it is compressed is not always done with: a gzip `-1` stream of
/// repetitive text (log files in a layer) still shrinks by 40–50 % under zstd, and
/// storing it unseen made a bundle of such layers 2.8 % larger than `tar | zstd -3`
/// of the same inputs. A trial of 16 KiB at the start and 16 KiB at the end at level 1
/// costs about 3 % of compressing the whole frame and tells the two kinds apart
/// (measured on 1 MiB frames of gzip `-1` streams: log text saves 12–17 % in a 32 KiB
/// sample, base64 and random data 0 %). Both ends, because a layer's content changes
/// kind inside a frame: with the start alone, the one frame per layer where text
/// follows other files was stored, 0.5 % of the benchmark's compressed set. A frame
/// whose sample saves at least 1/[`MIN_SAVING`] is compressed as any other frame,
/// which stores it after all if the whole frame saves too little.
const PROBE_BYTES: usize = 16 << 10;
const PROBE_LEVEL: i32 = 1;

/// Whether a sample at either end of `frame` compresses by at least 1/[`MIN_SAVING`].
/// Depends on the frame's bytes alone, so the output stays deterministic.
fn probe_compresses(cctx: &mut CCtx<'_>, frame: &[u8], sample: &mut Vec<u8>) -> bool {
    let n = frame.len().min(PROBE_BYTES);
    if n < MIN_SAVING {
        return false;
    }
    let ends = [&frame[..n], &frame[frame.len() - n..]];
    let samples = if frame.len() <= PROBE_BYTES { &ends[..1] } else { &ends[..] };
    samples.iter().any(|head| {
        sample.clear();
        // A failed trial only means the frame is stored as it is.
        cctx.compress2(sample, head).is_ok_and(|z| !saves_too_little(head.len(), z))
    })
}

/// Writes `data` as one zstd frame of raw blocks (RFC 8878, 3.1.1): single-segment
/// header with a 4-byte content size, blocks of at most 128 KiB stored as they are,
/// and the content checksum every bundle frame carries. Any zstd decoder reads it.
fn raw_frame(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    // Content size in 4 bytes (flag 2), single segment (0x20), checksum (0x04).
    out.push(0x80 | 0x20 | 0x04);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let mut blocks = data.chunks(BLOCK_MAX).peekable();
    if blocks.peek().is_none() {
        // An empty frame still has one (empty, last) block.
        out.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(b) = blocks.next() {
        // Block header: last-block bit, type 0 (raw), size in the upper 21 bits.
        let header = ((b.len() as u32) << 3) | u32::from(blocks.peek().is_none());
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&(xxh64(data) as u32).to_le_bytes());
}

/// XXH64 with seed 0, the checksum zstd frames carry (its low 32 bits), written from
/// the algorithm's specification.
fn xxh64(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let u64_at = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, u64_at(&s[i * 8..]));
            }
        }
        rest = stripes.remainder();
        let h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        v.iter().fold(h, |h, &x| merge(h, x))
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u64);
    while rest.len() >= 8 {
        h = (h ^ round(0, u64_at(rest))).rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let k = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")));
        h = (h ^ k.wrapping_mul(P1)).rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h = (h ^ u64::from(b).wrapping_mul(P5)).rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

// ---------------------------------------------------------------------------------
// Reading

/// Decodes a run of small frames on worker threads and reads as their bytes, in
/// order. Errors (damage, truncation, failed reads) come after the good bytes before
/// them and then every time after.
///
/// Besides [`Read`], [`FrameReader::piece`] hands out decoded bytes without copying
/// them: a [`Piece`] shares the frame's buffer, which goes back to the decoders once
/// the last piece of it is dropped. Decoders wait for a free buffer, so the pieces a
/// caller holds on to (queued for hashing, say) bound the memory in use.
pub struct FrameReader {
    order: InOrder,
    free: Sender<Slot>,
    /// Where decoded buffers go back to.
    home: Sender<Vec<u8>>,
    /// The frame being read (its bytes may all be gone).
    cur: Option<Arc<Decoded>>,
    pos: usize,
    /// The error that follows the current frame's bytes.
    pending: Option<io::Error>,
    ended: bool,
    failed: Option<(io::ErrorKind, String)>,
    stop_at_frame_end: bool,
    helper: Option<IdleWork>,
}

/// A decoded frame's bytes; the buffer goes back to the decoders when dropped.
struct Decoded {
    data: Vec<u8>,
    home: Sender<Vec<u8>>,
}

impl Drop for Decoded {
    fn drop(&mut self) {
        // Only buffers from the pool go back (a frame that failed before decoding has
        // none); the reader may be gone, and then nothing waits for them.
        if self.data.capacity() > 0 {
            let _ = self.home.send(std::mem::take(&mut self.data));
        }
    }
}

/// Decoded bytes shared with the frame they came from, handed out without a copy.
pub struct Piece {
    frame: Arc<Decoded>,
    start: usize,
    end: usize,
}

impl Piece {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.frame.data[self.start..self.end]
    }
}

impl FrameReader {
    /// Starts reading `input` with `threads` decoding threads (at least one), with
    /// `spare` decoded frames beyond what the threads need for the caller to hold on
    /// to as [`Piece`]s.
    pub fn new<R: Read + Send + 'static>(input: R, threads: usize, spare: usize) -> Self {
        let threads = threads.max(1);
        // Compressed frames: one per decoder, one being read, two to spare. Decoded
        // frames: as many, and what the caller holds.
        let (free, free_rx) = channel();
        for _ in 0..threads + 3 {
            let _ = free.send(Slot::new(MAX_FRAME_BYTES, 0));
        }
        let (home, buffers) = channel();
        for _ in 0..threads + 3 + spare {
            let _ = home.send(Vec::with_capacity(FRAME_CONTENT));
        }
        let (jobs_tx, jobs_rx) = channel::<Slot>();
        let jobs: Jobs = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done) = channel();
        for _ in 0..threads {
            let (jobs, done_tx) = (jobs.clone(), done_tx.clone());
            thread::spawn(move || {
                let mut dctx = DCtx::create();
                while let Some(mut s) = next_job(&jobs) {
                    decode(&mut dctx, &mut s);
                    if done_tx.send(s).is_err() {
                        return;
                    }
                }
            });
        }
        let helper = {
            let (jobs, done_tx) = (jobs.clone(), done_tx.clone());
            let mut dctx = DCtx::create();
            Box::new(move || {
                // Never waits: a decoder waiting for work holds the lock, and then
                // there is no work to take.
                let job = match jobs.try_lock() {
                    Ok(rx) => rx.try_recv().ok(),
                    Err(_) => None,
                };
                let Some(mut s) = job else { return false };
                decode(&mut dctx, &mut s);
                let _ = done_tx.send(s);
                true
            }) as IdleWork
        };
        let split_input = BufReader::with_capacity(INPUT_BUF, input);
        thread::spawn(move || split(split_input, free_rx, buffers, jobs_tx, done_tx));
        Self {
            order: InOrder { done, waiting: BTreeMap::new(), next: 0 },
            free,
            home,
            cur: None,
            pos: 0,
            pending: None,
            ended: false,
            failed: None,
            stop_at_frame_end: false,
            helper: Some(helper),
        }
    }

    /// Work for another thread's idle time: decodes one waiting frame, if there is
    /// one, and says whether it did. The thread that hashes what this reader gives
    /// out takes it, so that it decodes while it has nothing to hash and only then.
    pub fn helper(&mut self) -> Option<IdleWork> {
        self.helper.take()
    }

    /// From now on reads end at the end of the current frame; [`FrameReader::at_end`]
    /// then tells whether anything follows it.
    pub fn stop_at_frame_end(&mut self) {
        self.stop_at_frame_end = true;
    }

    /// After reads stopped at a frame end: whether the stream ends there, with nothing
    /// (no other frame, no stray bytes) after it.
    pub fn at_end(&mut self) -> bool {
        if self.cur.as_ref().is_some_and(|d| self.pos < d.data.len()) || self.pending.is_some() {
            return false;
        }
        self.ended || self.order.next().is_some_and(|s| s.end)
    }

    /// Up to `max` bytes from the current frame, without copying them; an empty piece
    /// at the end of the stream (or of the frame, after `stop_at_frame_end`).
    pub fn piece(&mut self, max: usize) -> io::Result<Piece> {
        let avail = self.fill(max == 0)?;
        let n = max.min(avail);
        let frame = match &self.cur {
            Some(d) => d.clone(),
            None => Arc::new(Decoded { data: Vec::new(), home: self.home.clone() }),
        };
        let piece = Piece { frame, start: self.pos, end: self.pos + n };
        self.pos += n;
        Ok(piece)
    }

    /// Makes the current frame one with bytes left, moving on to the next frame as
    /// needed; returns how many bytes it has left (0: the end). `peek` only looks.
    fn fill(&mut self, peek: bool) -> io::Result<usize> {
        loop {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if let Some(d) = &self.cur {
                if self.pos < d.data.len() {
                    return Ok(d.data.len() - self.pos);
                }
                if let Some(e) = self.pending.take() {
                    return Err(self.fail(e));
                }
                if self.stop_at_frame_end || peek {
                    return Ok(0);
                }
                self.cur = None;
            }
            if self.ended || peek {
                return Ok(0);
            }
            let Some(mut s) = self.order.next() else {
                return Err(self.fail(io::Error::other("the decoding threads stopped")));
            };
            if s.end {
                self.ended = true;
                return Ok(0);
            }
            self.cur = Some(Arc::new(Decoded { data: std::mem::take(&mut s.output), home: self.home.clone() }));
            self.pending = s.error.take();
            self.pos = 0;
            // The compressed frame is done with: its buffer can take the next one.
            s.input.clear();
            let _ = self.free.send(s);
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some((e.kind(), e.to_string()));
        e
    }
}

impl Read for FrameReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill(buf.is_empty())?;
        let n = buf.len().min(avail);
        if n > 0 {
            let d = self.cur.as_ref().expect("a frame with bytes left");
            buf[..n].copy_from_slice(&d.data[self.pos..self.pos + n]);
            self.pos += n;
        }
        Ok(n)
    }
}

/// The splitting thread: cuts the input into frames and hands them to the decoders;
/// the end of the input, or an error, goes straight to the reader, in sequence.
fn split(
    mut input: impl Read,
    free: Receiver<Slot>,
    buffers: Receiver<Vec<u8>>,
    jobs: Sender<Slot>,
    done: Sender<Slot>,
) {
    let mut seq = 0;
    while let Ok(mut s) = free.recv() {
        s.reset(seq);
        seq += 1;
        match read_frame(&mut input, &mut s.input) {
            Ok(Split::Frame) => {
                let Ok(out) = buffers.recv() else { return };
                s.output = out;
                if jobs.send(s).is_err() {
                    return;
                }
                continue;
            }
            Ok(Split::End) => s.end = true,
            Ok(Split::Truncated) if s.input.is_empty() => s.error = Some(ended_early()),
            // What arrived of the frame is decoded as far as it goes.
            Ok(Split::Truncated) => {
                let Ok(out) = buffers.recv() else { return };
                s.output = out;
                s.complete = false;
                let _ = jobs.send(s);
                return;
            }
            Err(e) => s.error = Some(e),
        }
        let _ = done.send(s);
        return;
    }
}

enum Split {
    Frame,
    End,
    Truncated,
}

fn ended_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the zstd stream ends inside a frame")
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Appends `n` bytes of `input` to `buf`; false when the input ends first (what came
/// stays in `buf`).
fn take(input: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> io::Result<bool> {
    let start = buf.len();
    // Zeroing the room first is cheap next to the read; reads into it go straight to
    // the input, where `read_to_end` would read in small, growing steps.
    buf.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        match input.read(&mut buf[start + got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(start + got);
                return Err(e);
            }
        }
    }
    buf.truncate(start + got);
    Ok(got == n)
}

/// Reads one whole frame into `buf`, from the sizes in its headers.
fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Split> {
    if !take(input, buf, 5)? {
        return Ok(if buf.is_empty() { Split::End } else { Split::Truncated });
    }
    let header = loop {
        match FrameHeader::parse(buf).map_err(invalid)? {
            Some(h) => break h,
            None => {
                if !take(input, buf, 1)? {
                    return Ok(Split::Truncated);
                }
            }
        }
    };
    match header.content_size {
        Some(n) if n <= FRAME_CONTENT as u64 => {}
        Some(n) => return Err(invalid(format!("a zstd frame of {n} bytes, more than the {FRAME_CONTENT} allowed"))),
        None => return Err(invalid("a zstd frame without its content size among small frames")),
    }
    loop {
        let at = buf.len();
        if !take(input, buf, 3)? {
            return Ok(Split::Truncated);
        }
        let h = u32::from(buf[at]) | u32::from(buf[at + 1]) << 8 | u32::from(buf[at + 2]) << 16;
        let (last, kind, size) = (h & 1 == 1, (h >> 1) & 3, (h >> 3) as usize);
        let stored = match kind {
            0 | 2 if size > BLOCK_MAX => return Err(invalid(format!("a zstd block of {size} bytes"))),
            0 | 2 => size,
            1 => 1,
            _ => return Err(invalid("a zstd block of the reserved type")),
        };
        if buf.len() + stored > MAX_FRAME_BYTES {
            return Err(invalid(format!("a zstd frame of more than {MAX_FRAME_BYTES} compressed bytes")));
        }
        if !take(input, buf, stored)? {
            return Ok(Split::Truncated);
        }
        if last {
            break;
        }
    }
    if header.checksum && !take(input, buf, 4)? {
        return Ok(Split::Truncated);
    }
    Ok(Split::Frame)
}

/// Decodes one frame into the slot's output. A frame that fails is decoded again as a
/// stream, which gives back the bytes before the damage; the error follows them.
fn decode(dctx: &mut DCtx<'_>, s: &mut Slot) {
    if s.complete && dctx.decompress(&mut s.output, &s.input).is_ok() {
        return;
    }
    s.output.clear();
    let _ = dctx.reset(zstd_safe::ResetDirective::SessionAndParameters);
    let _ = dctx.set_parameter(DParameter::WindowLogMax(SALVAGE_WINDOW_LOG));
    // The checksum goes in last and on its own: zstd checks it in the same call that
    // gives out the last block, and a failed call gives out nothing.
    let body = match FrameHeader::parse(&s.input) {
        Ok(Some(h)) if h.checksum && s.complete && s.input.len() >= h.len + 4 => s.input.len() - 4,
        _ => s.input.len(),
    };
    let mut piece = vec![0u8; BLOCK_MAX];
    let mut used = 0;
    let mut error = None;
    'stages: for end in [body, s.input.len()] {
        let mut input = InBuffer::around(&s.input[..end]);
        input.set_pos(used);
        loop {
            // An output smaller than the frame keeps zstd from decoding it in one pass,
            // which would give nothing back on failure.
            let mut out = OutBuffer::around(&mut piece[..]);
            let r = dctx.decompress_stream(&mut out, &mut input);
            let n = out.pos();
            s.output.extend_from_slice(&piece[..n]);
            used = input.pos();
            match r {
                Err(c) => {
                    error = Some(invalid(format!("zstd frame {}: {}", s.seq, zstd_error(c))));
                    break 'stages;
                }
                Ok(0) => break 'stages,
                Ok(_) if s.output.len() > FRAME_CONTENT => {
                    error = Some(invalid("a zstd frame larger than it says"));
                    break 'stages;
                }
                // All of this stage's input is in and nothing more comes out.
                Ok(_) if n == 0 && used == end => break,
                Ok(_) => {}
            }
        }
        if end == s.input.len() {
            error = Some(ended_early());
            break;
        }
    }
    let _ = dctx.reset(zstd_safe::ResetDirective::SessionAndParameters);
    s.error = match error {
        Some(e) if e.kind() == io::ErrorKind::UnexpectedEof && s.complete => {
            Some(invalid(format!("zstd frame {}: its blocks end before the frame does", s.seq)))
        }
        Some(e) => Some(e),
        None if !s.complete => Some(ended_early()),
        // Decoding in one pass failed and as a stream it did not: the frame is damaged
        // in a way only the one-pass checks see.
        None => Some(invalid(format!("zstd frame {}: its content does not match its header", s.seq))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible and not: a counter pattern with stretches of pseudo-random bytes.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..len)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    (i % 251) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new(), 3, threads).unwrap();
        // Odd write sizes, so frames are cut inside writes.
        for piece in data.chunks(777_777) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(r: &mut FrameReader) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// Offsets of the frames in `z`, found by decoding each with zstd itself.
    fn frame_starts(z: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut starts = Vec::new();
        while at < z.len() {
            starts.push(at);
            at += zstd_safe::find_frame_compressed_size(&z[at..]).unwrap();
        }
        starts
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
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

    #[test]
    fn xxh64_gives_the_checksum_zstd_itself_writes() {
        assert_eq!(xxh64(b""), 0xEF46_DB37_51D8_E999);
        let data = random(300_000, 7);
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::ChecksumFlag(true)).unwrap();
        for len in [1, 3, 4, 7, 8, 12, 31, 32, 33, 63, 64, 100, 1000, 131_072, 300_000] {
            let mut out = Vec::with_capacity(zstd_safe::compress_bound(len));
            cctx.compress2(&mut out, &data[..len]).unwrap();
            let theirs = u32::from_le_bytes(out[out.len() - 4..].try_into().unwrap());
            assert_eq!(xxh64(&data[..len]) as u32, theirs, "length {len}");
        }
    }

    /// Frame overhead of a stored frame: header 9 bytes, 3 per block, checksum 4.
    fn stored_size(len: usize) -> usize {
        9 + 3 * len.div_ceil(BLOCK_MAX).max(1) + 4 + len
    }

    #[test]
    fn incompressible_frames_are_stored_raw_and_compressible_ones_are_not() {
        let noise = random(3 * FRAME_CONTENT, 11);
        let z = compress(&noise, 2);
        assert_eq!(z.len(), 3 * stored_size(FRAME_CONTENT), "three raw frames");
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), noise, "stock zstd decodes stored frames");
        let text: Vec<u8> = (0..FRAME_CONTENT).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        assert!(compress(&text, 2).len() < text.len() / 3);
    }

    #[test]
    fn compressed_content_that_still_shrinks_is_compressed_and_the_rest_stored() {
        // A stretch said to be compressed: a frame of text (as gzip -1 of log lines
        // still is to zstd), a frame of noise, a frame of noise that turns into text
        // (where a layer's log files start), then text again.
        let text: Vec<u8> = (0..FRAME_CONTENT).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let noise = random(2 * FRAME_CONTENT, 5);
        let mut data = text[..FRAME_CONTENT].to_vec();
        data.extend_from_slice(&noise[..FRAME_CONTENT + FRAME_CONTENT / 2]);
        data.extend_from_slice(&text[..FRAME_CONTENT]);
        let write = |threads: usize| {
            let mut w = FrameWriter::new(Vec::new(), 3, threads).unwrap();
            w.set_stored(true).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap()
        };
        let z = write(1);
        assert_eq!(z, write(3), "the same bytes for any thread count");
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), data);
        let starts = frame_starts(&z);
        assert_eq!(starts.len(), 4);
        assert!(starts[1] < FRAME_CONTENT / 3, "the text frame is compressed: {}", starts[1]);
        assert_eq!(starts[2] - starts[1], stored_size(FRAME_CONTENT), "the noise frame is stored");
        let turning = starts[3] - starts[2];
        assert!(turning < FRAME_CONTENT * 3 / 4, "noise turning into text is compressed: {turning}");
        assert!(z.len() - starts[3] < FRAME_CONTENT / 6, "the last text frame is compressed");
    }

    #[test]
    fn stored_stretches_are_their_own_frames_and_the_same_for_any_thread_count() {
        let text: Vec<u8> = (0..300_000).flat_map(|i| format!("entry {i}\n").into_bytes()).collect();
        let layer = random(2 * FRAME_CONTENT + 5, 3);
        let write = |threads: usize| {
            let mut w = FrameWriter::new(Vec::new(), 3, threads).unwrap();
            w.write_all(&text[..1000]).unwrap();
            w.set_stored(true).unwrap();
            w.write_all(&layer).unwrap();
            w.set_stored(false).unwrap();
            w.write_all(&text).unwrap();
            w.finish().unwrap()
        };
        let z = write(1);
        assert_eq!(z, write(3));
        let mut want = text[..1000].to_vec();
        want.extend_from_slice(&layer);
        want.extend_from_slice(&text);
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), want);
        let starts = frame_starts(&z);
        // text, 3 stored frames (1 MiB, 1 MiB, 5 bytes), then the compressed text.
        assert_eq!(starts[2] - starts[1], stored_size(FRAME_CONTENT));
        assert_eq!(starts[4] - starts[3], stored_size(5));
        assert!(z.len() - starts[4] < text.len() / 3, "the text after the layer is compressed again");
        let mut r = FrameReader::new(std::io::Cursor::new(z), 2, 0);
        let (got, err) = read_all(&mut r);
        assert!(err.is_none());
        assert_eq!(got, want);
    }

    #[test]
    fn frames_hold_at_most_frame_content_and_stock_zstd_decodes_the_run() {
        for len in [0, 1, FRAME_CONTENT, FRAME_CONTENT + 1, 3 * FRAME_CONTENT + 12_345] {
            let data = sample(len);
            let z = compress(&data, 2);
            assert_eq!(zstd::decode_all(&z[..]).unwrap(), data, "len {len}");
            let starts = frame_starts(&z);
            assert_eq!(starts.len(), len.div_ceil(FRAME_CONTENT).max(1), "len {len}");
            for at in starts {
                let h = FrameHeader::parse(&z[at..]).unwrap().unwrap();
                assert!(h.checksum);
                assert!(h.content_size.unwrap() <= FRAME_CONTENT as u64);
            }
            assert!(FrameHeader::starts_small_frames(&z));
        }
    }

    #[test]
    fn the_output_is_the_same_for_any_number_of_threads() {
        let data = sample(5 * FRAME_CONTENT + 999);
        let one = compress(&data, 1);
        assert_eq!(compress(&data, 2), one);
        assert_eq!(compress(&data, 5), one);
    }

    #[test]
    fn reader_gives_back_the_bytes_in_order_with_any_number_of_threads() {
        let data = sample(6 * FRAME_CONTENT + 4321);
        let z = compress(&data, 2);
        for threads in [1, 2, 4] {
            let mut r = FrameReader::new(io::Cursor::new(z.clone()), threads, 1);
            let (out, err) = read_all(&mut r);
            assert!(err.is_none(), "{err:?}");
            assert!(out == data, "threads {threads}");
            assert!(r.at_end());
        }
    }

    #[test]
    fn pieces_share_the_decoded_frames_and_their_buffers_come_back_once_dropped() {
        let data = sample(9 * FRAME_CONTENT + 77);
        let z = compress(&data, 2);
        // Two spare buffers: the caller may hold two frames' worth of pieces at once.
        let mut r = FrameReader::new(io::Cursor::new(z), 2, 2);
        let mut held = std::collections::VecDeque::new();
        let mut out = Vec::new();
        loop {
            // Odd sizes, so pieces end inside frames and at their ends.
            let p = r.piece(FRAME_CONTENT / 3 + 5).expect("piece");
            if p.is_empty() {
                break;
            }
            assert!(p.len() <= FRAME_CONTENT / 3 + 5);
            held.push_back(p);
            // Hold on to about one frame's worth; older pieces are dropped (hashed).
            while held.len() > 4 {
                out.extend_from_slice(held.pop_front().unwrap().as_ref());
            }
        }
        for p in held {
            out.extend_from_slice(p.as_ref());
        }
        assert!(out == data, "pieces give the stream's bytes in order");
        assert!(r.at_end());
    }

    #[test]
    fn a_damaged_frame_gives_the_bytes_before_the_damage_then_an_error() {
        let data = sample(3 * FRAME_CONTENT);
        let mut z = compress(&data, 2);
        let starts = frame_starts(&z);
        // Damage the middle of the second frame: its blocks before the damage decode.
        z[(starts[1] + starts[2]) / 2] ^= 0xFF;
        let mut r = FrameReader::new(io::Cursor::new(z), 2, 1);
        let (out, err) = read_all(&mut r);
        assert_eq!(err.expect("an error").kind(), io::ErrorKind::InvalidData);
        assert!(out.len() > FRAME_CONTENT + FRAME_CONTENT / 4, "blocks before the damage come first: {}", out.len());
        assert!(out.len() <= 2 * FRAME_CONTENT, "nothing of the frame after the damaged one: {}", out.len());
        assert!(out[..FRAME_CONTENT] == data[..FRAME_CONTENT]);
        // The error stays.
        assert!(r.read(&mut [0u8; 10]).is_err());
    }

    #[test]
    fn a_stream_cut_inside_a_frame_gives_what_decodes_then_unexpected_eof() {
        let data = sample(2 * FRAME_CONTENT);
        let z = compress(&data, 2);
        let cut = frame_starts(&z)[1] + (z.len() - frame_starts(&z)[1]) / 2;
        let mut r = FrameReader::new(io::Cursor::new(z[..cut].to_vec()), 2, 1);
        let (out, err) = read_all(&mut r);
        assert_eq!(err.expect("an error").kind(), io::ErrorKind::UnexpectedEof);
        assert!(out.len() > FRAME_CONTENT, "the cut frame's decodable blocks come first: {}", out.len());
        assert!(out[..] == data[..out.len()]);
    }

    #[test]
    fn reads_can_stop_at_a_frame_end_and_tell_whether_more_follows() {
        let data = sample(FRAME_CONTENT + 10);
        let z = compress(&data, 1);
        let mut tail = z.clone();
        tail.extend_from_slice(&zstd::bulk::compress(b"more", 3).unwrap());
        for (bytes, nothing_follows) in [(z, true), (tail, false)] {
            let mut r = FrameReader::new(io::Cursor::new(bytes), 2, 1);
            let mut first = vec![0u8; FRAME_CONTENT + 4];
            r.read_exact(&mut first).unwrap();
            r.stop_at_frame_end();
            let (rest, err) = read_all(&mut r);
            assert!(err.is_none());
            assert_eq!(rest, data[FRAME_CONTENT + 4..]);
            assert_eq!(r.at_end(), nothing_follows);
        }
    }

    #[test]
    fn frames_over_the_limit_or_without_a_size_are_refused_before_decoding() {
        let small = compress(b"ok", 1);
        let big = zstd::bulk::compress(&vec![7u8; FRAME_CONTENT + 1], 3).unwrap();
        let sizeless = zstd::stream::encode_all(&b"no size"[..], 3).unwrap();
        assert!(FrameHeader::parse(&sizeless).unwrap().unwrap().content_size.is_none(), "test premise");
        for (tail, says) in [(big, "more than"), (sizeless, "without its content size")] {
            let mut z = small.clone();
            z.extend_from_slice(&tail);
            let mut r = FrameReader::new(io::Cursor::new(z), 2, 1);
            let (out, err) = read_all(&mut r);
            assert_eq!(out, b"ok");
            let err = err.expect("refused");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn headers_that_are_not_plain_frames_are_named() {
        let skippable = [0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0];
        assert!(FrameHeader::parse(&skippable).unwrap_err().contains("skippable"));
        assert!(FrameHeader::parse(b"hello world").unwrap_err().contains("no zstd frame"));
        let mut dict = compress(b"x", 1);
        dict[4] |= 0x01;
        assert!(FrameHeader::parse(&dict).unwrap_err().contains("dictionary"));
        assert_eq!(FrameHeader::parse(&[0x28, 0xB5, 0x2F]).unwrap(), None);
        // A one-byte size field (single segment), and the two-byte field's offset of 256.
        assert_eq!(FrameHeader::parse(&[0x28, 0xB5, 0x2F, 0xFD, 0x24, 9]).unwrap().unwrap().content_size, Some(9));
        let two = [0x28, 0xB5, 0x2F, 0xFD, 0x60, 0x01, 0x00];
        assert_eq!(FrameHeader::parse(&two).unwrap().unwrap().content_size, Some(257));
        assert!(!FrameHeader::starts_small_frames(&zstd::stream::encode_all(&b"x"[..], 3).unwrap()));
    }
}
