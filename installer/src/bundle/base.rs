//! The base a delta bundle builds on: the installed release's staged content
//! (`/var/lib/airlock/releases/<id>/bundle`), read entry by entry and checked against
//! the delta's signed digests while it is copied into staging. The image archive is
//! merged in one sequential pass with the delta's own `oci/` entries, in manifest
//! order, so the result is byte for byte the full bundle's archive.

// Staging: writes only below the staging directory the host resolved under the root
// (`Host::resolve_dir`), never at a target path; clippy.toml refuses these calls
// everywhere else.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Hasher;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{BaseRef, Entry, Manifest};

const OCI_PREFIX: &str = "oci/";

/// The refusal for a delta bundle staged without a base (`airlock install`,
/// `airlock extract`).
pub(crate) fn delta_needs_base(m: &Manifest, b: &BaseRef) -> Error {
    Error::input(
        format!("{} {}", m.name, m.version),
        format!("is a delta bundle over {}: it holds only what changed since that release", b.label()),
    )
    .with_hint(format!(
        "install the full bundle of {} {}; a delta is applied with `airlock upgrade` on a site that runs {} {}",
        m.name, m.version, b.name, b.version
    ))
}

/// One small base entry's bytes from the base release's content, checked against the
/// signed manifest `m` of the delta.
pub(crate) fn read_base_entry(base: &Path, e: &Entry, m: &Manifest) -> Result<Vec<u8>> {
    let src = base.join(&e.path);
    let label = m.base.as_ref().map(BaseRef::label).unwrap_or_default();
    let hint = format!(
        "the installed release {label} was changed or damaged under {}: restore it, or use the full bundle",
        base.display()
    );
    let bytes = fs::read(&src).map_err(|err| {
        Error::corrupt(&e.path, format!("the base release's copy {} cannot be read: {err}", src.display()))
            .with_hint(hint.clone())
    })?;
    let got = airlock_format::Sha256Digest::of(&bytes);
    if got != e.sha256 || bytes.len() as u64 != e.size {
        return Err(Error::corrupt(
            &e.path,
            format!(
                "the base release's copy {} has digest {got}; the signed manifest says {}",
                src.display(),
                e.sha256
            ),
        )
        .with_hint(hint));
    }
    Ok(bytes)
}

/// Where base bytes go while they are merged into the image archive.
pub(crate) trait ArchiveTarget {
    fn header(&self, e: &Entry) -> Result<()>;
    fn data(&self, bytes: &[u8]) -> Result<()>;
    fn pad(&self, size: u64) -> Result<()>;
}

/// Copies a delta's base entries out of the base release, checking each digest.
pub(crate) struct BaseMerge {
    base: PathBuf,
    archive_path: PathBuf,
    archive: Option<BufReader<File>>,
    /// The base `oci/` entries not yet copied, in manifest order.
    oci: VecDeque<Entry>,
    files: Vec<Entry>,
    label: String,
}

const CHUNK: usize = 1 << 20;

impl BaseMerge {
    pub(crate) fn new(base: &Path, m: &Manifest, archive_entry: &str) -> Self {
        let (oci, files): (Vec<Entry>, Vec<Entry>) =
            m.base_entries.iter().cloned().partition(|e| e.path.starts_with(OCI_PREFIX));
        Self {
            base: base.to_path_buf(),
            archive_path: base.join(archive_entry),
            archive: None,
            oci: oci.into(),
            files,
            label: m.base.as_ref().map(BaseRef::label).unwrap_or_default(),
        }
    }

    fn hint(&self) -> String {
        format!(
            "the installed release {} was changed or damaged under {}; nothing was installed: restore it (or \
             upgrade with the full bundle instead of the delta) and run again",
            self.label,
            self.base.display()
        )
    }

    /// Copies the base `oci/` entries that sort before `until` (all that are left when
    /// `None`) from the base image archive into `out`, verifying each.
    pub(crate) fn copy_oci_until(&mut self, until: Option<&str>, out: &dyn ArchiveTarget) -> Result<()> {
        while let Some(e) = self.oci.front() {
            if until.is_some_and(|u| e.path.as_str() >= u) {
                break;
            }
            let e = self.oci.pop_front().expect("front exists");
            self.copy_one_oci(&e, out)?;
        }
        Ok(())
    }

    fn copy_one_oci(&mut self, e: &Entry, out: &dyn ArchiveTarget) -> Result<()> {
        let want = &e.path[OCI_PREFIX.len()..];
        let archive_path = self.archive_path.clone();
        let hint = self.hint();
        let missing = |why: String| {
            Error::corrupt(&e.path, format!("the base release's image archive {} {why}", archive_path.display()))
                .with_hint(hint.clone())
        };
        if self.archive.is_none() {
            let f = File::open(&archive_path).map_err(|err| missing(format!("cannot be read: {err}")))?;
            self.archive = Some(BufReader::with_capacity(CHUNK, f));
        }
        let r = self.archive.as_mut().expect("opened above");
        // The base archive is in the same (sorted) order: one forward pass finds every
        // entry, skipping those of the base release this one no longer has.
        loop {
            let mut block = [0u8; 512];
            r.read_exact(&mut block).map_err(|err| missing(format!("ends before `{want}` ({err})")))?;
            if block.iter().all(|b| *b == 0) {
                return Err(missing(format!("does not hold `{want}`")));
            }
            let h = tar::Header::from_byte_slice(&block);
            let name = h.path_bytes().into_owned();
            let size = h.size().map_err(|err| missing(format!("has a bad tar header ({err})")))?;
            if h.entry_type() != tar::EntryType::Regular {
                return Err(missing(format!("has an entry that is not a plain file before `{want}`")));
            }
            let padded = size.next_multiple_of(512);
            match name.as_slice().cmp(want.as_bytes()) {
                std::cmp::Ordering::Less => {
                    std::io::copy(&mut r.by_ref().take(padded), &mut std::io::sink())
                        .map_err(|err| missing(format!("ends inside an entry ({err})")))?;
                    continue;
                }
                std::cmp::Ordering::Greater => return Err(missing(format!("does not hold `{want}`"))),
                std::cmp::Ordering::Equal => {}
            }
            if size != e.size {
                return Err(missing(format!("holds `{want}` with {size} bytes, the signed manifest says {}", e.size)));
            }
            out.header(e)?;
            let mut hasher = Sha256Hasher::new();
            let mut left = size;
            let mut buf = vec![0u8; CHUNK];
            while left > 0 {
                let n = (left as usize).min(buf.len());
                r.read_exact(&mut buf[..n]).map_err(|err| missing(format!("ends inside `{want}` ({err})")))?;
                hasher.update(&buf[..n]);
                out.data(&buf[..n])?;
                left -= n as u64;
            }
            std::io::copy(&mut r.by_ref().take(padded - size), &mut std::io::sink())
                .map_err(|err| missing(format!("ends inside `{want}` ({err})")))?;
            out.pad(size)?;
            let got = hasher.finish();
            if got != e.sha256 {
                return Err(missing(format!(
                    "holds `{want}` with digest {got}, the signed manifest says {}",
                    e.sha256
                )));
            }
            return Ok(());
        }
    }

    /// Copies every base entry outside the OCI layout from the base release into
    /// `dir`, through `<path>.partial` and renamed only when its digest matched.
    pub(crate) fn copy_files(&self, dir: &Path) -> Result<()> {
        for e in &self.files {
            let src = self.base.join(&e.path);
            let bad = |why: String| {
                Error::corrupt(&e.path, format!("the base release's copy {} {why}", src.display()))
                    .with_hint(self.hint())
            };
            match fs::symlink_metadata(&src) {
                Ok(md) if md.file_type().is_file() => {}
                Ok(_) => return Err(bad("is not a plain file".into())),
                Err(err) => return Err(bad(format!("cannot be read: {err}"))),
            }
            let dest = dir.join(&e.path);
            let parent = dest.parent().expect("an entry path has a parent");
            fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).at(parent)?;
            let mut partial = dest.clone().into_os_string();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let mut input = File::open(&src).map_err(|err| bad(format!("cannot be read: {err}")))?;
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&partial)
                .at(&partial)?;
            let mut w = BufWriter::with_capacity(CHUNK, f);
            let mut hasher = Sha256Hasher::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = input.read(&mut buf).map_err(|err| bad(format!("cannot be read: {err}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n]).at(&partial)?;
                size += n as u64;
            }
            let got = hasher.finish();
            if size != e.size || got != e.sha256 {
                drop(w);
                let _ = fs::remove_file(&partial);
                return Err(bad(format!(
                    "has {size} bytes with digest {got}; the signed manifest says {} bytes with {}",
                    e.size, e.sha256
                )));
            }
            let f = w.into_inner().map_err(|err| Error::io(&partial, err.into_error()))?;
            f.sync_all().at(&partial)?;
            fs::set_permissions(&partial, fs::Permissions::from_mode(e.mode())).at(&partial)?;
            fs::rename(&partial, &dest).at(&dest)?;
        }
        Ok(())
    }
}
