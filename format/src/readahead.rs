//! Reading the bundle ahead of the decoder, on the hashing thread's idle time.
//!
//! Verifying is two chains of work on two cores: read + zstd-decode on the reader's
//! thread, SHA-256 on [`BackgroundHasher`]'s. Where the data compresses well the
//! decoder is the slower one and the hashing thread waits. [`ReadAhead`] gives it the
//! reads (the kernel copying file data into memory) for exactly those stretches: the
//! hashing thread fills buffers only while it has nothing to hash, and the decoder
//! takes them in order or, when none is ready, reads for itself. Which thread read a
//! byte never changes which byte comes next: both read the one source under one lock.
//!
//! Reading ahead always on the hashing thread was measured too: it only moves the
//! bottleneck, because where the data is incompressible hashing is the slower chain.
//!
//! [`BackgroundHasher`]: crate::digest::BackgroundHasher

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::digest::IdleWork;

/// A [`BufRead`] over `source` that other threads can fill ahead (see
/// [`ReadAhead::idle_work`]). Errors of the source come back in stream order, and
/// every read after one fails the same way.
pub struct ReadAhead<R> {
    shared: Arc<Mutex<State<R>>>,
    current: Vec<u8>,
    pos: usize,
    len: usize,
}

struct State<R> {
    source: R,
    /// Buffers read ahead, oldest first, with how many bytes each holds.
    ready: VecDeque<(Vec<u8>, usize)>,
    /// Spent buffers, for the next reads.
    free: Vec<Vec<u8>>,
    /// How many buffers may wait in `ready`.
    depth: usize,
    size: usize,
    end: End,
}

#[derive(Clone)]
enum End {
    Open,
    /// The source returned 0: it has nothing more.
    Eof,
    /// The source failed; the error is handed out once `ready` is used up.
    Failed(io::ErrorKind, String),
}

impl End {
    fn error(&self) -> Option<io::Error> {
        match self {
            End::Failed(kind, msg) => Some(io::Error::new(*kind, msg.clone())),
            _ => None,
        }
    }
}

impl<R> State<R> {
    fn read_into(&mut self, buf: &mut [u8]) -> Option<usize>
    where
        R: Read,
    {
        if !matches!(self.end, End::Open) {
            return None;
        }
        loop {
            match self.source.read(buf) {
                Ok(0) => {
                    self.end = End::Eof;
                    return None;
                }
                Ok(n) => return Some(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.end = End::Failed(e.kind(), e.to_string());
                    return None;
                }
            }
        }
    }
}

impl<R: Read + Send + 'static> ReadAhead<R> {
    /// Up to `depth` buffers of `size` bytes may be read ahead.
    pub fn new(source: R, depth: usize, size: usize) -> Self {
        let state =
            State { source, ready: VecDeque::new(), free: Vec::new(), depth, size: size.max(1), end: End::Open };
        Self { shared: Arc::new(Mutex::new(state)), current: Vec::new(), pos: 0, len: 0 }
    }

    /// One read ahead, for the hashing thread's idle time: whether it read anything.
    pub fn idle_work(&self) -> IdleWork {
        let shared = self.shared.clone();
        Box::new(move || {
            let mut s = lock(&shared);
            if s.ready.len() >= s.depth {
                return false;
            }
            let mut buf = s.free.pop().unwrap_or_else(|| vec![0u8; s.size]);
            match s.read_into(&mut buf) {
                Some(n) => {
                    s.ready.push_back((buf, n));
                    true
                }
                None => false,
            }
        })
    }
}

fn lock<R>(m: &Mutex<State<R>>) -> MutexGuard<'_, State<R>> {
    // A panic while holding the lock leaves the state consistent (reads are whole
    // operations), so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<R: Read + Send + 'static> BufRead for ReadAhead<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            let mut s = lock(&self.shared);
            if let Some((buf, n)) = s.ready.pop_front() {
                let spent = std::mem::replace(&mut self.current, buf);
                if !spent.is_empty() {
                    s.free.push(spent);
                }
                (self.pos, self.len) = (0, n);
            } else {
                // Nothing read ahead: read here, under the same lock, so the stream
                // stays in order.
                if self.current.is_empty() {
                    self.current = s.free.pop().unwrap_or_else(|| vec![0u8; s.size]);
                }
                match s.read_into(&mut self.current) {
                    Some(n) => (self.pos, self.len) = (0, n),
                    None => {
                        if let Some(e) = s.end.error() {
                            return Err(e);
                        }
                        return Ok(&[]);
                    }
                }
            }
        }
        Ok(&self.current[self.pos..self.len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl<R: Read + Send + 'static> Read for ReadAhead<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{BackgroundHasher, Sha256Digest};

    /// Returns `data` in reads of at most `step` bytes, then fails once it has given `ok`.
    struct Source {
        data: Vec<u8>,
        at: usize,
        step: usize,
        ok: usize,
    }
    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at >= self.ok && self.at < self.data.len() {
                return Err(io::Error::other("medium error"));
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn data() -> Vec<u8> {
        (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn stream_is_the_source_in_order_whichever_thread_reads_ahead() {
        let data = data();
        let src = Source { data: data.clone(), at: 0, step: 999, ok: usize::MAX };
        let mut r = ReadAhead::new(src, 3, 1000);
        let h = BackgroundHasher::with_idle_work(2, 4096, Some(r.idle_work()));
        // The test thread reads ahead too, so both paths (taken from `ready` and read
        // in place) interleave.
        let mut also = r.idle_work();
        let mut out = Vec::new();
        let mut chunk = [0u8; 777];
        loop {
            also();
            let n = r.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            let mut b = h.buffer();
            b[..n].copy_from_slice(&chunk[..n]);
            h.update(b, n);
            out.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(h.finish(), Sha256Digest::of(&data));
    }

    #[test]
    fn a_failed_read_ahead_reaches_the_reader_after_the_good_bytes_and_stays_failed() {
        let src = Source { data: data(), at: 0, step: 1000, ok: 2500 };
        let mut r = ReadAhead::new(src, 8, 1000);
        let mut ahead = r.idle_work();
        while ahead() {}
        let mut got = 0;
        let err = loop {
            match r.read(&mut [0u8; 300]) {
                Ok(0) => panic!("the failure was swallowed as the end of the stream"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 3000, "the three good reads come first");
        assert_eq!(err.to_string(), "medium error");
        assert_eq!(r.read(&mut [0u8; 10]).unwrap_err().to_string(), "medium error");
    }

    #[test]
    fn read_ahead_stops_at_its_depth() {
        let src = Source { data: data(), at: 0, step: 1000, ok: usize::MAX };
        let r = ReadAhead::new(src, 2, 1000);
        let mut ahead = r.idle_work();
        assert!(ahead());
        assert!(ahead());
        assert!(!ahead(), "a third buffer would go past the depth");
    }
}
