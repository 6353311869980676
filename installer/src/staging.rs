//! The streaming extractor: verify-as-you-go into a staging directory.
//!
//! Entry bytes are written to `<path>.partial` inside a fresh staging directory while
//! they stream and renamed to their final name only when their digest matched. If the
//! signature, any entry or the stream fails, the whole staging directory is removed:
//! nothing unverified survives, and nothing is ever written outside staging.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{Entry, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, EntrySink, ReadOutcome};
use airlock_format::report::Reporter;

/// A verified bundle laid out in a staging directory.
#[derive(Debug)]
pub struct Staged {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub signer: PublicKey,
}

impl Staged {
    /// Path of an entry inside staging.
    pub fn path(&self, entry_path: &str) -> PathBuf {
        self.dir.join(entry_path)
    }
}

struct StagingSink {
    dir: PathBuf,
    open: Option<PathBuf>,
}

impl StagingSink {
    fn partial(&self, e: &Entry) -> PathBuf {
        let mut p = self.dir.join(&e.path).into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    }
}

impl EntrySink for StagingSink {
    fn open(&mut self, e: &Entry) -> Result<Option<Box<dyn Write>>> {
        let p = self.partial(e);
        if let Some(parent) = p.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).at(parent)?;
        }
        // create_new + O_NOFOLLOW: never follow or reuse anything already there.
        let f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&p)
            .at(&p)?;
        self.open = Some(p.clone());
        Ok(Some(Box::new(NamedWriter { inner: BufWriter::with_capacity(1 << 20, f), path: p })))
    }

    fn finish(&mut self, e: &Entry, verified: bool) -> Result<()> {
        let p = self.open.take().unwrap_or_else(|| self.partial(e));
        if !verified {
            let _ = fs::remove_file(&p);
            return Ok(());
        }
        let f = File::open(&p).at(&p)?;
        f.sync_all().at(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode())).at(&p)?;
        let dest = self.dir.join(&e.path);
        fs::rename(&p, &dest).at(&dest)
    }
}

/// Puts the staging path into write errors, so "No space left on device" names the
/// file system that is full, not just the bundle entry.
struct NamedWriter<W> {
    inner: W,
    path: PathBuf,
}

impl<W: Write> Write for NamedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.named(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.named(e))
    }
}

impl<W> NamedWriter<W> {
    fn named(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display()))
    }
}

/// The error for a read that found entries not matching the signed manifest, naming
/// the first and the artifact it belongs to; `None` for a good bundle.
pub fn damaged(outcome: &ReadOutcome) -> Option<Error> {
    let m = outcome.mismatches.first()?;
    let more = outcome.mismatches.len() - 1;
    let labels = outcome.manifest.artifacts_by_entry();
    let what = labels.get(&m.path).map(|l| l.join(", ")).unwrap_or_else(|| m.path.clone());
    Some(
        Error::corrupt(
            &m.path,
            format!(
                "content does not match the signed manifest (part of {what}; expected {}, got {}){}",
                m.expected,
                m.actual,
                if more > 0 { format!("; {more} more entries are damaged") } else { String::new() }
            ),
        )
        .with_hint("the bundle is damaged; run `airlock verify` for the full list and copy the bundle again"),
    )
}

/// Verifies the bundle while extracting it into `dir`, which must not exist yet.
/// On any failure `dir` is removed, with any parent directories this call created,
/// and the error returned.
pub fn extract(files: &BundleFiles, trusted: &[PublicKey], dir: &Path, reporter: &dyn Reporter) -> Result<Staged> {
    // symlink_metadata: a (dangling) symlink in the way is something that exists too.
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    if exists(dir) {
        return Err(Error::input(dir.display().to_string(), "the staging directory already exists")
            .with_hint("remove it, or choose an empty location"));
    }
    // The outermost directory this call creates; removing it leaves nothing behind.
    let created =
        dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !exists(a)).last().unwrap_or(dir).to_path_buf();
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        let _ = fs::remove_dir_all(&created);
        return Err(Error::io(dir, e));
    }
    let mut sink = StagingSink { dir: dir.to_path_buf(), open: None };
    let result = read_bundle(files, trusted, &mut sink, reporter).and_then(|outcome| match damaged(&outcome) {
        Some(e) => Err(e),
        None => Ok(outcome),
    });
    match result {
        Ok(o) => Ok(Staged { dir: dir.to_path_buf(), manifest: o.manifest, signer: o.signer }),
        Err(e) => {
            if let Err(cleanup) = fs::remove_dir_all(&created) {
                return Err(Error {
                    cause: format!(
                        "{}; removing the staging directory {} also failed: {cleanup}",
                        e.cause,
                        created.display()
                    ),
                    ..e
                });
            }
            Err(e)
        }
    }
}
