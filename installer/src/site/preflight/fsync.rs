//! A short fio-like probe of the fdatasync latency etcd's WAL will see.
//!
//! etcd appends small records to its write-ahead log and calls fdatasync after each;
//! a disk whose 99th percentile is above ~10 ms makes leader elections flap. The probe
//! does what etcd's docs suggest with fio (`--rw=write --fdatasync=1 --bs=2300`): it
//! appends blocks of 2300 bytes to a new file in the data directory and times each
//! fdatasync. It is bounded by a write count and a time budget, and the file is removed
//! whatever happens.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::facts::FsyncMeasurement;

/// How much the probe writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsyncProbeOptions {
    pub writes: u32,
    pub block_bytes: usize,
    /// Stop after this long even if writes remain; a slow disk is then reported with
    /// the samples taken so far.
    pub time_budget: Duration,
}

impl Default for FsyncProbeOptions {
    fn default() -> Self {
        Self { writes: 200, block_bytes: 2300, time_budget: Duration::from_secs(2) }
    }
}

/// Runs the probe in `dir`, which must exist.
pub fn probe(dir: &Path, opts: &FsyncProbeOptions) -> io::Result<FsyncMeasurement> {
    let mut file = tempfile::Builder::new().prefix(".airlock-fsync-probe-").tempfile_in(dir)?;
    let mut block = vec![0u8; opts.block_bytes.max(1)];
    let mut samples = Vec::with_capacity(opts.writes as usize);
    let started = Instant::now();
    let mut stopped_early = false;
    for i in 0..opts.writes.max(1) {
        if started.elapsed() > opts.time_budget {
            stopped_early = true;
            break;
        }
        // Varying, non-zero content: filesystems that compress or dedupe zero blocks
        // (ZFS, btrfs with compression) would otherwise write nothing at all.
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i as usize).wrapping_mul(31).wrapping_add(j).wrapping_mul(7) as u8 | 1;
        }
        file.as_file_mut().write_all(&block)?;
        let t = Instant::now();
        file.as_file().sync_data()?;
        samples.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    // Close explicitly so a failure to remove the file is reported, not swallowed.
    file.close()?;

    samples.sort_unstable();
    Ok(FsyncMeasurement {
        dir: dir.to_path_buf(),
        samples: samples.len() as u32,
        block_bytes: block.len(),
        p50_ms: ms(percentile(&samples, 50.0)),
        p99_ms: ms(percentile(&samples, 99.0)),
        max_ms: ms(samples.last().copied().unwrap_or_default()),
        elapsed_ms: ms(elapsed),
        stopped_early,
    })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v[..10], 99.0), Duration::from_millis(10));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn probe_measures_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FsyncProbeOptions { writes: 10, block_bytes: 2300, time_budget: Duration::from_secs(5) };
        let m = probe(dir.path(), &opts).unwrap();
        assert_eq!(m.samples, 10);
        assert!(m.p99_ms > 0.0 && m.p99_ms >= m.p50_ms && m.max_ms >= m.p99_ms);
        assert!(!m.stopped_early);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "probe file left behind");
    }

    #[test]
    fn probe_stops_when_the_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FsyncProbeOptions { writes: 1_000_000, block_bytes: 16, time_budget: Duration::from_millis(20) };
        let m = probe(dir.path(), &opts).unwrap();
        assert!(m.stopped_early);
        assert!(m.samples >= 1);
    }
}
