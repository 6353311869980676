//! `airlock-bundler create`: plan a bundle from a spec, sign it, write it.
//!
//! This module only orchestrates: the plan ([`crate::plan`]: every source read once,
//! the complete manifest, nothing written yet), then the key statements
//! ([`crate::statements`]) and, with `--base`, the delta ([`crate::delta`]); then the
//! signed manifest and the entries are streamed out, followed by the signed checksum
//! sidecar and the lock. The writer re-hashes every entry as it streams, so a blob
//! whose bytes do not match its digest aborts the build and leaves no bundle.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use airlock_format::checksums;
use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::Manifest;
use airlock_format::minisign::SecretKey;
use airlock_format::parts::WrittenPart;
use airlock_format::report::{Event, Reporter};
use airlock_format::write::{write_bundle, WriteOptions};

use crate::delta::{make_delta, DeltaSummary};
use crate::fetch::PullSetup;
use crate::plan::{plan_with, Plan};
use crate::spec::LoadedSpec;
use crate::statements::add_key_statements;

/// Everything `create` needs besides the spec.
pub struct CreateOptions {
    pub output: PathBuf,
    pub split_size: Option<u64>,
    /// The installer binary to carry (`--installer`); overrides the spec's.
    pub installer: Option<PathBuf>,
    /// Creation time (unix seconds): `SOURCE_DATE_EPOCH` when set, so builds repeat.
    pub created: u64,
    pub level: i32,
    pub threads: u32,
    /// `--base`: the previous release's manifest; the bundle is then a delta over it
    /// (see [`crate::delta`]).
    pub base: Option<Manifest>,
}

/// The result of a build.
pub struct Created {
    pub manifest: Manifest,
    pub parts: Vec<WrittenPart>,
    pub checksums: PathBuf,
    pub checksums_signature: PathBuf,
    /// See [`Plan::discovered`].
    pub discovered: BTreeMap<String, Vec<String>>,
    /// Set for a delta bundle: what it leaves to its base.
    pub delta: Option<DeltaSummary>,
}

/// Plans, signs and writes the bundle, then the signed checksum sidecar (registry
/// images pulled with the default [`PullSetup`]).
pub fn create(spec: &LoadedSpec, key: &SecretKey, opts: &CreateOptions, reporter: &dyn Reporter) -> Result<Created> {
    create_with(spec, key, opts, &PullSetup::default(), reporter)
}

/// Said (as a warning) when a bundle is made without the installer binary: the site
/// then needs an `airlock` from somewhere else, which an air gap makes hard.
pub const NO_INSTALLER_WARNING: &str = "NOT SELF-CONTAINED: this bundle does not carry the installer binary (no \
     --installer and no `installer.path` in the spec), so the site needs an `airlock` binary from elsewhere to \
     verify and install it; pass --installer PATH (packaging/build-installer.sh builds the one for bundles)";

/// [`create`] with explicit pull settings. The lock next to the spec is written only
/// after the bundle was written, so a failed build never moves the pins.
pub fn create_with(
    spec: &LoadedSpec,
    key: &SecretKey,
    opts: &CreateOptions,
    setup: &PullSetup,
    reporter: &dyn Reporter,
) -> Result<Created> {
    let mut plan = plan_with(spec, opts.installer.as_deref(), opts.created, setup, reporter)?;
    if plan.manifest.installer.is_none() {
        reporter.event(Event::Warning(NO_INSTALLER_WARNING));
    }
    add_key_statements(&mut plan, spec, key, opts.created)?;
    let delta = opts.base.as_ref().map(|b| make_delta(&mut plan, b)).transpose()?;
    let parts = write(&plan, key, opts, reporter)?;
    let (checksums, checksums_signature) = write_sidecar(&plan.manifest, &parts, key, &opts.output)?;
    if let Some(cache) = &plan.sbom_cache {
        // The writer matched every entry it wrote against its digest: those layers'
        // findings are sound to keep. A delta leaves layers to its base unread.
        let written = plan.entries.iter().map(|e| e.entry.sha256).collect();
        // The bundle is complete; a cache that cannot be written only costs the next
        // build the scan.
        match cache.store(&written) {
            Ok(n) => log::info!(target: "airlock::bundler", "kept the SBOM findings of {n} layers"),
            Err(e) => log::warn!(target: "airlock::bundler", "the SBOM layer cache was not updated: {e}"),
        }
    }
    if let Some((path, lock)) = &plan.lock {
        lock.save(path)?;
    }
    Ok(Created { manifest: plan.manifest, parts, checksums, checksums_signature, discovered: plan.discovered, delta })
}

/// Signs the plan's manifest and streams the bundle to `opts.output`.
fn write(plan: &Plan, key: &SecretKey, opts: &CreateOptions, reporter: &dyn Reporter) -> Result<Vec<WrittenPart>> {
    let manifest_bytes = plan.manifest.to_bytes();
    let sig = key.sign(
        &manifest_bytes,
        &plan.manifest.trusted_comment(),
        &format!("signature of the {} {} bundle manifest", plan.manifest.name, plan.manifest.version),
    )?;
    let wopts =
        WriteOptions { mtime: opts.created, level: opts.level, threads: opts.threads, split_size: opts.split_size };
    if let Some(dir) = opts.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(
                Error::io(dir, std::io::ErrorKind::NotFound.into()).with_hint("create the output directory first")
            );
        }
    }
    let parts = write_bundle(&opts.output, &manifest_bytes, sig.to_text().as_bytes(), &plan.entries, &wopts, reporter)?;
    for p in &parts {
        log::info!(target: "airlock::bundler", "wrote {} ({} bytes)", p.path.display(), p.size);
    }
    Ok(parts)
}

/// The `.sha256` list of the written parts and its signature, next to `output`;
/// returns their paths.
fn write_sidecar(
    manifest: &Manifest,
    parts: &[WrittenPart],
    key: &SecretKey,
    output: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let list: Vec<(String, Sha256Digest)> = parts
        .iter()
        .map(|p| (p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p.sha256))
        .collect();
    let text = checksums::render(&list);
    let sums_path = checksums::sidecar_path(output);
    let sums_sig_path = checksums::signature_path(output);
    let sums_sig = key.sign(
        text.as_bytes(),
        &format!("airlock bundle files: {} {}", manifest.name, manifest.version),
        "signature of the bundle's checksum list",
    )?;
    write_atomic(&sums_path, text.as_bytes())?;
    write_atomic(&sums_sig_path, sums_sig.to_text().as_bytes())?;
    Ok((sums_path, sums_sig_path))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    log::info!(target: "airlock::bundler", "wrote {}", path.display());
    Ok(())
}
