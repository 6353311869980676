//! SHA-256 digests and the hashing adapters used while streaming.
//!
//! ring's SHA-256 uses the CPU's SHA extensions where present, which is why every
//! content hash in the project goes through here rather than a portable crate.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SHA-256 digest, written `sha256:<64 lowercase hex>` as in OCI descriptors.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The 64 hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Sha256Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// Parses 64 hex characters (no prefix).
    pub fn from_hex(s: &str) -> Result<Self, DigestParseError> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestParseError(s.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestParseError(s.to_string()))?;
        Ok(Self(out))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a sha256 digest (expected sha256: and 64 lowercase hex digits)")]
pub struct DigestParseError(pub String);

impl FromStr for Sha256Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| DigestParseError(s.to_string()))?;
        Self::from_hex(hex)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256.
pub struct Sha256Hasher(Context);

impl Default for Sha256Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self(Context::new(&SHA256))
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes)
    }
    pub fn finish(self) -> Sha256Digest {
        let d = self.0.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Sha256Digest(out)
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256Hasher::new(), count: 0 }
    }
    /// The digest and byte count of what was read so far.
    pub fn finish(self) -> (Sha256Digest, u64) {
        (self.hasher.finish(), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256Hasher::new(), count: 0 }
    }
    pub fn finish(self) -> (W, Sha256Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 on a helper thread, so hashing overlaps with zstd on the caller's thread.
///
/// On two cores, decoding and hashing a bundle on one thread takes twice as long as
/// decoding alone; handing each chunk to this thread brings verification close to the
/// speed of `zstd -dc`. Buffers circulate through a pool, so memory stays fixed
/// (`buffers` × `size`) and nothing is allocated per chunk. The pool hands out the
/// buffer returned last: it was just hashed, so it is still in cache when the caller
/// fills it again. Handing them out in turn instead cycles through all of them, and
/// with a deep queue that is more memory than the cache holds.
///
/// A digest can be asked for without waiting ([`BackgroundHasher::finish_later`]): the
/// caller goes on with the next entry while this thread is still on the last one, so
/// the queue evens out stretches where decoding is fast (stored, incompressible data)
/// against stretches where hashing is (well-compressed data).
pub struct BackgroundHasher {
    work: Option<SyncSender<Job>>,
    pool: Arc<Pool>,
    thread: Option<JoinHandle<()>>,
}

/// Free buffers, the most recently returned last; and whether the hashing thread is
/// gone (then nothing will be returned again).
#[derive(Default)]
struct Pool {
    free: Mutex<(Vec<Vec<u8>>, bool)>,
    returned: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, (Vec<Vec<u8>>, bool)> {
        // The lock guards only pushes and pops: a panic cannot leave it half-changed.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn put(&self, buf: Vec<u8>) {
        self.lock().0.push(buf);
        self.returned.notify_one();
    }
}

/// Marks the pool when the hashing thread ends, however it ends, so a caller waiting
/// for a buffer fails instead of waiting forever.
struct ThreadGone(Arc<Pool>);
impl Drop for ThreadGone {
    fn drop(&mut self) {
        self.0.lock().1 = true;
        self.0.returned.notify_all();
    }
}

enum Job {
    /// Hash the first `len` bytes of the buffer, then return it to the pool.
    Data(Vec<u8>, usize),
    /// Hash bytes that live elsewhere, then drop the handle (which may hand them back).
    Shared(Box<dyn AsRef<[u8]> + Send>),
    /// Reply with the digest of everything since the last `Finish`, and start anew.
    Finish(SyncSender<Sha256Digest>),
}

/// Work the hashing thread may take on while it has nothing to hash. Returns whether it
/// did any; when it did not, the thread sleeps until the next chunk arrives.
pub type IdleWork = Box<dyn FnMut() -> bool + Send>;

/// A digest the hashing thread will deliver once it reaches the end of its entry.
pub struct PendingDigest(Receiver<Sha256Digest>);

impl PendingDigest {
    /// The digest, if the hashing thread got there already.
    pub fn ready(&self) -> Option<Sha256Digest> {
        self.0.try_recv().ok()
    }
    /// Waits for the digest.
    pub fn wait(&self) -> Sha256Digest {
        self.0.recv().expect("hashing thread alive")
    }
}

impl BackgroundHasher {
    pub fn new(buffers: usize, size: usize) -> Self {
        Self::with_idle_work(buffers, size, None)
    }

    /// As [`BackgroundHasher::new`]; between chunks, when no chunk is waiting, the
    /// thread runs `idle` (reading the bundle ahead, for the reader).
    pub fn with_idle_work(buffers: usize, size: usize, idle: Option<IdleWork>) -> Self {
        // Room for every buffer's chunk and as many digests asked for, so the caller
        // seldom waits to hand over work.
        Self::start(buffers, size, 2 * buffers, idle)
    }

    /// A hasher for bytes that need no copy ([`BackgroundHasher::update_shared`]): no
    /// buffers of its own, room for `queue` pieces and digests in flight. What the
    /// pieces hold back (their buffers) bounds the memory, not this queue.
    pub fn for_shared(queue: usize, idle: Option<IdleWork>) -> Self {
        Self::start(0, 0, queue, idle)
    }

    fn start(buffers: usize, size: usize, queue: usize, mut idle: Option<IdleWork>) -> Self {
        let (work_tx, work_rx) = sync_channel::<Job>(queue.max(1));
        let pool = Arc::new(Pool::default());
        pool.lock().0.extend((0..buffers).map(|_| vec![0u8; size]));
        let thread_pool = pool.clone();
        let thread = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let pool = ThreadGone(thread_pool);
                let mut h = Sha256Hasher::new();
                loop {
                    let job = match work_rx.try_recv() {
                        Ok(job) => job,
                        Err(TryRecvError::Disconnected) => return,
                        Err(TryRecvError::Empty) => {
                            if idle.as_mut().is_some_and(|work| work()) {
                                continue;
                            }
                            match work_rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        }
                    };
                    match job {
                        Job::Data(buf, len) => {
                            h.update(&buf[..len]);
                            pool.0.put(buf);
                        }
                        Job::Shared(bytes) => h.update((*bytes).as_ref()),
                        Job::Finish(reply) => {
                            let _ = reply.send(std::mem::take(&mut h).finish());
                        }
                    }
                }
            })
            .expect("spawn the hashing thread");
        Self { work: Some(work_tx), pool, thread: Some(thread) }
    }

    /// A free buffer (waits until the hashing thread hands one back).
    pub fn buffer(&self) -> Vec<u8> {
        let mut free = self.pool.lock();
        assert!(free.0.capacity() > 0, "a hasher for shared bytes has no buffers");
        loop {
            if let Some(buf) = free.0.pop() {
                return buf;
            }
            assert!(!free.1, "hashing thread alive");
            free = self.pool.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a buffer from [`BackgroundHasher::buffer`] unhashed.
    pub fn give_back(&self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// Hashes `buf[..len]` in the background; the buffer returns to the pool.
    pub fn update(&self, buf: Vec<u8>, len: usize) {
        self.work.as_ref().expect("open").send(Job::Data(buf, len)).expect("hashing thread alive");
    }

    /// Hashes `bytes` in the background, without copying them; they are dropped
    /// once hashed.
    pub fn update_shared(&self, bytes: impl AsRef<[u8]> + Send + 'static) {
        self.work.as_ref().expect("open").send(Job::Shared(Box::new(bytes))).expect("hashing thread alive");
    }

    /// The digest of everything passed in since the previous call, once the hashing
    /// thread gets there; the next chunk starts a new digest.
    pub fn finish_later(&self) -> PendingDigest {
        let (tx, rx) = sync_channel(1);
        self.work.as_ref().expect("open").send(Job::Finish(tx)).expect("hashing thread alive");
        PendingDigest(rx)
    }

    /// The digest of everything passed in since the previous call.
    pub fn finish(&self) -> Sha256Digest {
        self.finish_later().wait()
    }
}

impl Drop for BackgroundHasher {
    fn drop(&mut self) {
        drop(self.work.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SHA-256 and size of a whole file.
pub fn sha256_file(path: &Path) -> io::Result<(Sha256Digest, u64)> {
    let mut r = HashingReader::new(File::open(path)?);
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            Sha256Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn background_hasher_matches_one_shot_digests_across_entries() {
        let h = BackgroundHasher::new(2, 4);
        for msg in [&b"hello world, in chunks"[..], b"", b"x"] {
            for chunk in msg.chunks(4) {
                let mut b = h.buffer();
                b[..chunk.len()].copy_from_slice(chunk);
                h.update(b, chunk.len());
            }
            assert_eq!(h.finish(), Sha256Digest::of(msg));
        }
    }

    #[test]
    fn background_hasher_hands_out_the_buffer_it_got_back_last() {
        let h = BackgroundHasher::new(3, 8);
        let first = h.buffer();
        let at = first.as_ptr();
        h.update(first, 0);
        // The digest comes after the chunk was hashed, and so after its buffer is back.
        h.finish();
        let again = h.buffer();
        assert_eq!(again.as_ptr(), at, "the buffer still in cache is used again");
    }

    #[test]
    fn digest_parse_rejects_uppercase_short_and_unprefixed() {
        let ok = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(ok.parse::<Sha256Digest>().is_ok());
        assert!(ok.to_uppercase().replace("SHA256", "sha256").parse::<Sha256Digest>().is_err());
        assert!(ok[..70].parse::<Sha256Digest>().is_err());
        assert!(ok.trim_start_matches("sha256:").parse::<Sha256Digest>().is_err());
    }
}
