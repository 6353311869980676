//! Delta bundles on the site: refuse one whose base is not what the site runs, and
//! stage one into exactly the tree its full bundle would have staged.
//!
//! A delta carries only what changed since its base release; its signed manifest
//! lists the rest as `base_entries` with their digests. Staging streams and verifies
//! the delta's entries as for any bundle, takes every base entry from the installed
//! release's staged content (`/var/lib/airlock/releases/<id>/bundle`) and checks it
//! against the signed digest while copying it. The image archive is merged in one
//! sequential pass: the delta's `oci/` entries and the base archive's are interleaved
//! in manifest order, so the result is byte for byte the full bundle's archive.
//! Nothing unverified ends up outside staging, and a failed check removes staging.

// Staging: writes only below the staging directory the host resolved under the root
// (`Host::resolve_dir`) or a directory the operator named (`extract -d`), never at a
// target path; clippy.toml refuses these calls everywhere else.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Hasher;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{short_sha, BaseRef, Entry, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;

use crate::bundle::staging::{extract_with, ExtractOptions, Staged};

/// Where the installed releases' staged content lives (see the upgrade contract).
const OCI_PREFIX: &str = "oci/";

/// Refuses a delta bundle whose base is not the release the site runs
/// (`installed_manifest_sha256` from `/var/lib/airlock/release.json`, `None` when
/// nothing is installed). A full bundle passes: whether it may replace what is
/// installed is the upgrade's version policy, not a matter of content.
pub fn check_delta_base(manifest: &Manifest, installed_manifest_sha256: Option<&str>) -> Result<()> {
    check_delta_base_named(manifest, installed_manifest_sha256, None)
}

/// As [`check_delta_base`], naming the installed release (`airlock-demo 1.0.0`) in the
/// refusal when it is known.
pub fn check_delta_base_named(
    manifest: &Manifest,
    installed_manifest_sha256: Option<&str>,
    installed_label: Option<&str>,
) -> Result<()> {
    let Some(base) = &manifest.base else { return Ok(()) };
    let this = format!("delta bundle {} {}", manifest.name, manifest.version);
    match installed_manifest_sha256 {
        None => Err(Error::input(this, format!("builds on {}, but nothing is installed on this site", base.label()))
            .with_hint(format!(
                "install the full bundle of {} {} first, or ask the vendor for the full bundle of {}",
                base.name, base.version, manifest.version
            ))),
        Some(sha) if sha == base.manifest_sha256 => Ok(()),
        Some(sha) => {
            let installed = match installed_label {
                Some(l) => format!("{l} (manifest sha256 {})", short_sha(sha)),
                None => format!("the release with manifest sha256 {}", short_sha(sha)),
            };
            Err(Error::input(this, format!("builds on {}, but this site runs {installed}", base.label())).with_hint(
                format!(
                    "nothing was changed; use the delta made for the installed release, or the full bundle of {} {}",
                    manifest.name, manifest.version
                ),
            ))
        }
    }
}

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

/// Verifies a full or delta bundle into `dir` (which must not exist) with the image
/// archive at `archive_entry`. For a delta, every base entry is taken from `base` (a
/// release's staged content: files at their entry paths, the OCI layout as the image
/// archive at the same `archive_entry`) and checked against the signed manifest; the
/// result is the tree the full bundle would stage, and [`Staged::manifest`] is the
/// full release's manifest. A full bundle ignores `base`. On any failure `dir` is
/// removed. The base release is not checked against what the site runs here: call
/// [`check_delta_base`] first, or use [`extract_upgrade`], which does.
pub fn extract_delta(
    files: &BundleFiles,
    trusted: &[PublicKey],
    dir: &Path,
    archive_entry: &str,
    base: &Path,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    let opts = ExtractOptions { archive_entry: Some(archive_entry), base: Some(base), check: None };
    extract_with(files, trusted, dir, &opts, reporter)
}

/// The upgrade's staging in one call: verifies a full or delta bundle into `dir`
/// (which must not exist) with the image archive at `archive_entry`. A delta is
/// refused by [`check_delta_base`] against `installed_manifest_sha256` as soon as its
/// signed manifest is read, before `dir` is created; otherwise its base entries come
/// from `base` (the installed release's staged content), as in [`extract_delta`].
#[allow(clippy::too_many_arguments)]
pub fn extract_upgrade(
    files: &BundleFiles,
    trusted: &[PublicKey],
    dir: &Path,
    archive_entry: &str,
    base: Option<&Path>,
    installed_manifest_sha256: Option<&str>,
    installed_label: Option<&str>,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    let check = |m: &Manifest| check_delta_base_named(m, installed_manifest_sha256, installed_label);
    let opts = ExtractOptions { archive_entry: Some(archive_entry), base, check: Some(&check) };
    extract_with(files, trusted, dir, &opts, reporter)
}

/// `airlock preflight`'s bundle read on a site: verifies the bundle and returns the
/// full release's manifest and every profile. For a delta, the base must be the
/// release installed under `root` (else refused as by [`check_delta_base`]) and the
/// profiles it does not carry are read from that release's staged content.
pub fn read_profiles_for_site(
    files: &BundleFiles,
    trusted: &[PublicKey],
    root: &Path,
    reporter: &dyn Reporter,
) -> Result<(Manifest, Vec<crate::site::profile::Profile>)> {
    let (m, _, _) = airlock_format::read::read_manifest(files, Some(trusted))?;
    if !m.is_delta() {
        return crate::ops::install::read_profiles(files, trusted, reporter);
    }
    let installed = crate::state::ReleaseRecord::load_at(root)?;
    let label = installed.as_ref().map(|r| format!("{} {}", r.bundle, r.version));
    check_delta_base_named(&m, installed.as_ref().map(|r| r.manifest_sha256.as_str()), label.as_deref())?;
    // Found through the host's resolution, like every path under the root.
    let base = match installed {
        Some(r) => {
            let host = crate::host::RootedHost::new(root.to_path_buf(), false)?;
            Some(crate::host::Host::real_path(&host, &r.bundle_dir())?)
        }
        None => None,
    };
    crate::ops::install::read_profiles_over(files, trusted, base.as_deref(), reporter)
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

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::manifest::FORMAT_V1;

    fn manifest(base: Option<&str>) -> Manifest {
        Manifest {
            format: FORMAT_V1.into(),
            name: "demo".into(),
            version: "2.0.0".into(),
            created: airlock_format::manifest::rfc3339(0),
            distribution: None,
            installer: None,
            components: vec![],
            images: vec![],
            charts: vec![],
            files: vec![],
            profiles: vec![],
            key_statements: vec![],
            entries: vec![],
            base: base.map(|sha| BaseRef { name: "demo".into(), version: "1.0.0".into(), manifest_sha256: sha.into() }),
            base_entries: vec![],
            upgrade: None,
        }
    }

    #[test]
    fn a_full_bundle_passes_the_base_check_whatever_is_installed() {
        check_delta_base(&manifest(None), None).unwrap();
        check_delta_base(&manifest(None), Some(&"cd".repeat(32))).unwrap();
    }

    #[test]
    fn a_delta_passes_only_over_its_own_base() {
        let sha = "ab".repeat(32);
        check_delta_base(&manifest(Some(&sha)), Some(&sha)).unwrap();
        let e = check_delta_base(&manifest(Some(&sha)), Some(&"cd".repeat(32))).unwrap_err();
        assert_eq!(e.kind, airlock_format::ErrorKind::Input);
        let text = e.to_string();
        assert!(
            text.contains("delta bundle demo 2.0.0: builds on demo 1.0.0 (manifest sha256 abababababab)"),
            "{text}"
        );
        assert!(text.contains("this site runs the release with manifest sha256 cdcdcdcdcdcd"), "{text}");
        assert!(text.contains("hint: nothing was changed"), "{text}");
    }

    #[test]
    fn a_delta_on_a_site_with_nothing_installed_is_refused() {
        let e = check_delta_base(&manifest(Some(&"ab".repeat(32))), None).unwrap_err();
        assert!(e.to_string().contains("nothing is installed on this site"), "{e}");
        assert!(e.hint.unwrap().contains("install the full bundle of demo 1.0.0 first"));
    }

    #[test]
    fn installed_release_id_is_version_and_twelve_hex_digits() {
        let r = crate::state::ReleaseRecord {
            bundle: "demo".into(),
            version: "1.0.0".into(),
            created: String::new(),
            manifest_sha256: "ab".repeat(32),
            signer: String::new(),
            profile: String::new(),
            distribution: String::new(),
        };
        assert_eq!(r.id(), "1.0.0-abababababab");
    }
}
