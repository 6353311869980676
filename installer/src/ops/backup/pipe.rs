//! The threads a backup's bytes pass through, so that its stages overlap on all cores
//! as `tar | zstd -T0 | age` does with three processes.
//!
//! Measured on `backup create` of a 2 GiB datastore (docs/backup.md, Cost): with every
//! stage on the calling thread, that thread did 84 % of the work (SHA-256 29 %, age's
//! ChaCha20-Poly1305 20 %, copies) while zstd's workers idled, and the backup took
//! twice the pipeline's time. Now the calling thread only reads and feeds zstd; SHA-256
//! runs on the hashing thread ([`BackgroundHasher`]) and age with the file writes on
//! the thread here; the way back decrypts on a thread of its own the same way.
//! Chunks are 1 MiB and the queues short, so memory stays a few MiB whatever the size.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use airlock_format::digest::{BackgroundHasher, Sha256Digest};
use airlock_format::report::{Event, Reporter};
pub(super) use airlock_format::write::read_full;

/// Bytes handed between threads at a time.
pub(super) const CHUNK: usize = 1 << 20;
/// Chunks in flight between two threads.
const QUEUE: usize = 4;
/// How often the written file is handed to the kernel's writeback (see [`Encrypting`]).
const WRITEBACK: u64 = 32 << 20;

/// A writer whose bytes are encrypted with age and written to a file on another thread.
///
/// Every [`WRITEBACK`] bytes the file's new range is handed to writeback
/// (`sync_file_range` without waiting), so the disk writes while the backup computes
/// and the final `fsync` has little left to wait for; without it, the page cache holds
/// the whole archive until that `fsync`.
pub(super) struct Encrypting<'scope> {
    tx: Option<SyncSender<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<ScopedJoinHandle<'scope, io::Result<()>>>,
}

impl<'scope> Encrypting<'scope> {
    /// Starts the writing thread in `scope`: `encryptor` around `file`.
    pub(super) fn start<'env>(scope: &'scope Scope<'scope, 'env>, encryptor: age::Encryptor, file: &'env File) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let (back_tx, back) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let thread = std::thread::Builder::new()
            .name("age".into())
            .spawn_scoped(scope, move || -> io::Result<()> {
                let sink = Writeback { file, written: 0, started: 0 };
                let mut encrypted = encryptor.wrap_output(io::BufWriter::with_capacity(CHUNK, sink))?;
                for mut chunk in rx {
                    encrypted.write_all(&chunk)?;
                    chunk.clear();
                    // A full return queue only means the writer has buffers enough.
                    let _ = back_tx.try_send(chunk);
                }
                encrypted.finish()?.flush()
            })
            .expect("spawn the archive's writing thread");
        Self { tx: Some(tx), back, buf: Vec::with_capacity(CHUNK), thread: Some(thread) }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.back.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self.tx.as_ref().ok_or_else(|| io::Error::other("the archive is closed already"))?;
        // The thread stops only on an error, which `finish` returns.
        tx.send(full).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the archive's writing thread stopped"))
    }

    /// Sends what is buffered, ends the age stream and waits for the thread: its error
    /// (a full disk, ...) is the one to report when a write here failed too.
    pub(super) fn finish(mut self) -> io::Result<()> {
        let sent = self.send();
        drop(self.tx.take());
        let written = self.thread.take().expect("started").join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        written.and(sent)
    }
}

impl Write for Encrypting<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Encrypting<'_> {
    fn drop(&mut self) {
        // Dropped without `finish` (an error on the way): the thread ends at the closed
        // queue; the caller removes the partial file.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The archive file, with writeback started behind the writes (see [`Encrypting`]).
struct Writeback<'f> {
    file: &'f File,
    written: u64,
    started: u64,
}

impl Write for Writeback<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(data)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK {
            // SAFETY: a plain system call on a file descriptor this struct borrows open;
            // no memory is passed. Best effort: the final fsync is what makes it durable.
            unsafe {
                nix::libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as i64,
                    (self.written - self.started) as i64,
                    nix::libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of what age decrypts on another thread: `plain` is read there in chunks.
pub(super) struct Decrypting {
    rx: Receiver<io::Result<Vec<u8>>>,
    back: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Decrypting {
    pub(super) fn start(mut plain: impl Read + Send + 'static) -> Self {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(QUEUE);
        let (back, back_rx) = sync_channel::<Vec<u8>>(QUEUE + 2);
        std::thread::Builder::new()
            .name("age".into())
            .spawn(move || loop {
                let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
                buf.resize(CHUNK, 0);
                let n = match read_full(&mut plain, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                buf.truncate(n);
                // The reader went away (done or failed): nothing more to do.
                if tx.send(Ok(buf)).is_err() || n == 0 {
                    return;
                }
            })
            .expect("spawn the archive's reading thread");
        Self { rx, back, buf: Vec::new(), pos: 0, done: false }
    }
}

impl Read for Decrypting {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let next = self.rx.recv().map_err(|_| io::Error::other("the archive's reading thread stopped"))??;
            self.done = next.is_empty();
            let used = std::mem::replace(&mut self.buf, next);
            let _ = self.back.try_send(used);
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Copies at most `limit` bytes from `r` to `w` in chunks, each hashed on the hashing
/// thread after it is written, with progress per chunk: the bytes copied and their
/// SHA-256 (fewer than `limit` when `r` ends first).
pub(super) fn copy_hashed(
    hasher: &BackgroundHasher,
    r: &mut dyn Read,
    w: &mut dyn Write,
    limit: u64,
    reporter: &dyn Reporter,
) -> io::Result<(u64, Sha256Digest)> {
    let mut copied = 0u64;
    while copied < limit {
        let mut buf = hasher.buffer();
        let want = (limit - copied).min(buf.len() as u64) as usize;
        let n = match read_full(r, &mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                hasher.give_back(buf);
                hasher.finish();
                return Err(e);
            }
        };
        if n == 0 {
            hasher.give_back(buf);
            break;
        }
        if let Err(e) = w.write_all(&buf[..n]) {
            hasher.give_back(buf);
            hasher.finish();
            return Err(e);
        }
        hasher.update(buf, n);
        copied += n as u64;
        reporter.event(Event::Progress { bytes: n as u64 });
    }
    Ok((copied, hasher.finish()))
}

/// A hashing thread with buffers for [`copy_hashed`].
pub(super) fn hasher() -> BackgroundHasher {
    BackgroundHasher::new(QUEUE, CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_copy_hashed_stops_at_the_limit_and_hashes_what_it_copied() {
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        let h = hasher();
        let mut out = Vec::new();
        let r = airlock_format::report::Silent;
        let (n, d) = copy_hashed(&h, &mut data.as_slice(), &mut out, 2 * CHUNK as u64 + 5, &r).unwrap();
        assert_eq!(n, 2 * CHUNK as u64 + 5);
        assert_eq!(out, data[..2 * CHUNK + 5]);
        assert_eq!(d, Sha256Digest::of(&out));
        // A reader shorter than the limit: what it had, hashed anew.
        let (n, d) = copy_hashed(&h, &mut &data[..10], &mut io::sink(), 100, &r).unwrap();
        assert_eq!((n, d), (10, Sha256Digest::of(&data[..10])));
    }

    #[test]
    fn backup_decrypting_reader_yields_every_byte_in_order_and_its_error() {
        let data: Vec<u8> = (0..2 * CHUNK + 7).map(|i| (i % 253) as u8).collect();
        let mut got = Vec::new();
        Decrypting::start(io::Cursor::new(data.clone())).read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        let failing = io::Cursor::new(vec![1u8; 10]).chain(FailingReader);
        let e = Decrypting::start(failing).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "damaged");
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("damaged"))
        }
    }
}
