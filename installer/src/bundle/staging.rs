//! The streaming extractor: verify-as-you-go into a staging directory.
//!
//! Entry bytes are written to `<path>.partial` inside a fresh staging directory while
//! they stream and renamed to their final name only when their digest matched. If the
//! signature, any entry or the stream fails, the whole staging directory is removed:
//! nothing unverified survives, and nothing is ever written outside staging.

// Staging: writes only below the staging directory the host resolved under the root
// (`Host::resolve_dir`) or a directory the operator named (`extract -d`), never at a
// target path; clippy.toml refuses these calls everywhere else.
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use airlock_format::digest::HashingWriter;
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
    /// A dry run's staging: a temporary directory outside the target root that holds
    /// `dir` and is removed with the staged bundle (see `ops::install::staging_dir`).
    pub scratch: Option<tempfile::TempDir>,
    /// The SHA-256 of the image archive written while the bundle was verified, if one
    /// was: what the inventory records for it, without reading it back.
    pub image_archive_sha256: Option<airlock_format::Sha256Digest>,
}

impl Staged {
    /// Path of an entry inside staging.
    pub fn path(&self, entry_path: &str) -> PathBuf {
        self.dir.join(entry_path)
    }
}

struct StagingSink<'a> {
    dir: PathBuf,
    /// When set, the OCI layout's entries stream into this image archive instead of
    /// files: the archive K3s/RKE2 import is then written once, while verifying.
    archive: Option<ArchiveOut>,
    opts: &'a ExtractOptions<'a>,
    /// A delta's base entries, taken from the base release (see [`crate::bundle::delta`]).
    merge: Option<crate::bundle::base::BaseMerge>,
}

/// A check of the verified manifest before anything is written.
pub(crate) type ManifestCheck<'a> = &'a dyn Fn(&Manifest) -> Result<()>;

/// How [`extract_with`] lays the bundle out and what it accepts.
#[derive(Default)]
pub(crate) struct ExtractOptions<'a> {
    /// Write the OCI layout as this image archive instead of as files.
    pub archive_entry: Option<&'a str>,
    /// The staged content of the installed release, which a delta bundle builds on.
    /// Without it a delta bundle is refused.
    pub base: Option<&'a Path>,
    /// Runs on the verified manifest before anything is written: a refusal here
    /// leaves no staging directory behind.
    pub check: Option<ManifestCheck<'a>>,
}

/// The image archive being written during extraction: a plain tar of the bundle's
/// `oci/` entries (paths relative to the layout), which is exactly the OCI layout tar
/// containerd imports. Entry sizes are known from the signed manifest, so each header
/// is written before its bytes stream in.
struct ArchiveOut {
    partial: PathBuf,
    dest: PathBuf,
    /// Hashed as it is written: the inventory records the archive's digest without
    /// reading it back.
    file: Rc<RefCell<HashingWriter<BufWriter<File>>>>,
}

/// Where the layout's entries live in a bundle.
const OCI_PREFIX: &str = "oci/";

/// Streams one entry's bytes into the shared archive file.
struct ArchiveEntryWriter {
    file: Rc<RefCell<HashingWriter<BufWriter<File>>>>,
    path: PathBuf,
}

impl Write for ArchiveEntryWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.borrow_mut().write(buf).map_err(|e| named(&self.path, e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.borrow_mut().flush().map_err(|e| named(&self.path, e))
    }
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
}

impl crate::bundle::base::ArchiveTarget for ArchiveOut {
    fn header(&self, e: &Entry) -> Result<()> {
        ArchiveOut::header(self, e)
    }
    fn data(&self, bytes: &[u8]) -> Result<()> {
        self.file.borrow_mut().write_all(bytes).map_err(|err| Error::io(&self.partial, err))
    }
    fn pad(&self, size: u64) -> Result<()> {
        ArchiveOut::pad(self, size)
    }
}

impl ArchiveOut {
    fn header(&self, e: &Entry) -> Result<()> {
        let name = &e.path[OCI_PREFIX.len()..];
        let mut h = tar::Header::new_gnu();
        h.set_size(e.size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).map_err(|err| Error::io(&self.partial, err))?;
        h.set_cksum();
        self.file.borrow_mut().write_all(h.as_bytes()).map_err(|err| Error::io(&self.partial, err))
    }

    fn pad(&self, size: u64) -> Result<()> {
        let pad = ((512 - size % 512) % 512) as usize;
        self.file.borrow_mut().write_all(&[0u8; 512][..pad]).map_err(|err| Error::io(&self.partial, err))
    }

    /// Ends the tar and puts the archive in place; called only after every entry
    /// verified. Returns the archive's SHA-256.
    fn finish(self) -> Result<airlock_format::Sha256Digest> {
        self.file.borrow_mut().write_all(&[0u8; 1024]).map_err(|err| Error::io(&self.partial, err))?;
        let writer = Rc::try_unwrap(self.file)
            .map_err(|_| Error::input(self.partial.display().to_string(), "the image archive is still being written"))?
            .into_inner();
        let (mut w, digest, _) = writer.finish();
        w.flush().map_err(|err| Error::io(&self.partial, err))?;
        drop(w);
        fs::rename(&self.partial, &self.dest).at(&self.dest)?;
        Ok(digest)
    }
}

impl StagingSink<'_> {
    fn partial(&self, e: &Entry) -> PathBuf {
        let mut p = self.dir.join(&e.path).into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    }
}

impl EntrySink for StagingSink<'_> {
    /// Checks come first and staging is created only after them, so a refused bundle
    /// (a delta for another base, a delta given to `install`) leaves nothing behind.
    fn manifest(&mut self, m: &Manifest, _signer: &PublicKey) -> Result<()> {
        // The upstream cosign signatures the bundler checked at create time, checked
        // again here, offline and before anything is staged (docs/bundle-spec.md).
        for i in &m.images {
            if let Some(c) = &i.cosign {
                airlock_format::cosign::check_carried(&i.reference, &i.digest, c)?;
            }
        }
        if let Some(check) = self.opts.check {
            check(m)?;
        }
        if let Some(b) = &m.base {
            let Some(base) = self.opts.base else {
                return Err(crate::bundle::base::delta_needs_base(m, b));
            };
            if self.opts.archive_entry.is_none() {
                return Err(Error::input(
                    format!("{} {}", m.name, m.version),
                    format!("is a delta bundle over {}; it is staged only with its image archive", b.label()),
                )
                .with_hint("stage it with `airlock upgrade`, which takes the rest from the installed release"));
            }
            self.merge =
                Some(crate::bundle::base::BaseMerge::new(base, m, self.opts.archive_entry.unwrap_or_default()));
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).at(&self.dir)?;
        if let Some(entry) = self.opts.archive_entry {
            self.archive = Some(open_archive(&self.dir, entry)?);
        }
        Ok(())
    }

    fn open(&mut self, e: &Entry) -> Result<Option<Box<dyn Write>>> {
        if let Some(a) = self.archive.as_ref().filter(|_| e.path.starts_with(OCI_PREFIX)) {
            // A delta's base blobs that sort before this entry go into the archive
            // first, so it comes out in the full bundle's order.
            if let Some(m) = self.merge.as_mut() {
                m.copy_oci_until(Some(&e.path), a)?;
            }
            a.header(e)?;
            return Ok(Some(Box::new(ArchiveEntryWriter { file: a.file.clone(), path: a.partial.clone() })));
        }
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
        Ok(Some(Box::new(NamedWriter { inner: BufWriter::with_capacity(1 << 20, f), path: p })))
    }

    fn end(&mut self, e: &Entry) -> Result<()> {
        match self.archive.as_ref().filter(|_| e.path.starts_with(OCI_PREFIX)) {
            // The padding goes in before the next entry's header. A mismatch, found
            // later, fails the whole extraction, which removes staging with the
            // archive in it.
            Some(a) => a.pad(e.size),
            None => Ok(()),
        }
    }

    fn finish(&mut self, e: &Entry, verified: bool) -> Result<()> {
        if self.archive.is_some() && e.path.starts_with(OCI_PREFIX) {
            return Ok(());
        }
        let p = self.partial(e);
        if !verified {
            let _ = fs::remove_file(&p);
            return Ok(());
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode())).at(&p)?;
        let dest = self.dir.join(&e.path);
        fs::rename(&p, &dest).at(&dest)
    }
}

fn open_archive(dir: &Path, entry: &str) -> Result<ArchiveOut> {
    let dest = dir.join(entry);
    let parent = dest.parent().expect("an entry path has a parent");
    fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).at(parent)?;
    let mut partial = dest.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&partial)
        .at(&partial)?;
    let file = HashingWriter::new(BufWriter::with_capacity(1 << 20, f));
    Ok(ArchiveOut { partial, dest, file: Rc::new(RefCell::new(file)) })
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
    extract_with(files, trusted, dir, &ExtractOptions::default(), reporter)
}

/// Where a run verifies the bundle into, as a host path, with what keeps it alive.
/// A run that will apply the bundle stages at target path `staging` (which the
/// verifying extractor then creates): whatever a previous run left there is removed,
/// since staging is never trusted across runs, and its parent is made through the
/// host's symlink-safe resolution, so staging lands below the root whatever links
/// are on the way. A dry run writes nothing under the root: it stages into a fresh
/// temporary directory outside it (`$TMPDIR`), removed when the returned guard is
/// dropped, i.e. with the [`Staged`] bundle, before the command exits.
pub fn staging_dir(
    host: &dyn crate::host::Host,
    staging: &Path,
    dry_run: bool,
) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    let name = staging.file_name().expect("staging has a name");
    if dry_run {
        let tmp = std::env::temp_dir();
        let scratch = tempfile::Builder::new().prefix("airlock-dry-run-").tempdir().map_err(|e| {
            Error::io(&tmp, e).with_hint(
                "a dry run verifies the bundle into a temporary directory outside the target root; \
                 point TMPDIR at a directory with room for the bundle",
            )
        })?;
        return Ok((scratch.path().join(name), Some(scratch)));
    }
    host.remove_all(staging)?;
    let parent = staging.parent().expect("staging has a parent");
    Ok((host.resolve_dir(parent, 0o755)?.join(name), None))
}

/// As [`extract`], but the OCI layout (`oci/`) is written as the image archive K3s and
/// RKE2 import, at `archive_entry` inside staging, instead of as files: the images are
/// written once, while they are verified, rather than extracted and then archived.
pub fn extract_with_image_archive(
    files: &BundleFiles,
    trusted: &[PublicKey],
    dir: &Path,
    archive_entry: &str,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    extract_with(
        files,
        trusted,
        dir,
        &ExtractOptions { archive_entry: Some(archive_entry), ..Default::default() },
        reporter,
    )
}

/// The extraction behind every public variant. For a delta bundle (with
/// `opts.base`), `dir` ends up holding exactly what the full bundle of the same
/// release would have staged, and the returned manifest is the full release's
/// ([`Manifest::full_release`]).
pub(crate) fn extract_with(
    files: &BundleFiles,
    trusted: &[PublicKey],
    dir: &Path,
    opts: &ExtractOptions<'_>,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    // symlink_metadata: a (dangling) symlink in the way is something that exists too.
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    if exists(dir) {
        return Err(Error::input(dir.display().to_string(), "the staging directory already exists")
            .with_hint("remove it, or choose an empty location"));
    }
    // The outermost directory this call creates; removing it leaves nothing behind.
    let created =
        dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !exists(a)).last().unwrap_or(dir).to_path_buf();
    let mut sink = StagingSink { dir: dir.to_path_buf(), archive: None, opts, merge: None };
    let result = read_bundle(files, trusted, &mut sink, reporter)
        .and_then(|outcome| match damaged(&outcome) {
            Some(e) => Err(e),
            None => Ok(outcome),
        })
        .and_then(|outcome| {
            if let Some(m) = sink.merge.as_mut() {
                if let Some(a) = sink.archive.as_ref() {
                    m.copy_oci_until(None, a)?;
                }
                m.copy_files(dir)?;
            }
            let m = &outcome.manifest;
            let has_images = m.entries.iter().chain(&m.base_entries).any(|e| e.path.starts_with(OCI_PREFIX));
            match sink.archive.take() {
                Some(a) if has_images => a.finish().map(|digest| (outcome, Some(digest))),
                Some(a) => {
                    // No images: no archive (K3s would try to import an empty one).
                    drop(a.file);
                    fs::remove_file(&a.partial).at(&a.partial).map(|()| (outcome, None))
                }
                None => Ok((outcome, None)),
            }
        });
    // Durable with one syncfs instead of an fsync per staged file. Staging is never
    // trusted across runs (every run removes it and verifies the bundle anew), so a
    // crash may leave it in any state; what must be on disk is a staged file's data
    // before the target links it in, and placing a staged file (`Host::copy_file`)
    // fsyncs it again before its rename, which this sync leaves with nothing to write.
    let result = result.and_then(|staged| sync_filesystem(dir).map(|()| staged));
    match result {
        Ok((o, image_archive_sha256)) => Ok(Staged {
            dir: dir.to_path_buf(),
            manifest: o.manifest.full_release(),
            signer: o.signer,
            scratch: None,
            image_archive_sha256,
        }),
        Err(e) => {
            drop(sink);
            if !exists(&created) {
                return Err(e);
            }
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

/// `syncfs(2)` of the filesystem holding `dir`.
fn sync_filesystem(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).at(dir)?;
    nix::unistd::syncfs(d.as_raw_fd()).map_err(|e| Error::io(dir, std::io::Error::from(e)))
}
