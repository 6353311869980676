//! Delta bundles (`airlock-bundler create --base PREVIOUS`): leave out every entry the
//! previous release already has.
//!
//! The delta is planned exactly like the full bundle of the same release; then each
//! entry whose path, digest and mode the base release has too moves from `entries` to
//! `base_entries`. The manifest keeps describing the whole release, and
//! [`Manifest::full_release`] turns the delta's manifest back into the full bundle's
//! byte for byte, so a site that upgraded with the delta runs the same release (same
//! `manifest_sha256`) as one that upgraded with the full bundle.
//!
//! OCI blobs are content-addressed, so an unchanged layer is always left out; the
//! small `oci/index.json` and `oci-layout` are compared like everything else.

use std::fs;
use std::io::Read;
use std::path::Path;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{BaseRef, Entry, Manifest};
use airlock_format::minisign::{self, PublicKey, Signature};
use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;

use crate::create::Plan;

/// The first bytes of a zstd frame: a bundle (or its first part), not a manifest.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// What the delta leaves to its base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaSummary {
    pub base: BaseRef,
    /// Entries left out (taken from the base on the site).
    pub from_base: usize,
    /// Their bytes, uncompressed.
    pub from_base_bytes: u64,
    /// Entries the delta carries.
    pub carried: usize,
    pub carried_bytes: u64,
}

/// Reads the base release's manifest from `path`: a previous bundle (its file or any
/// part of a split one) or the `manifest.json` taken out of one.
///
/// With `pubkeys`, the base must be signed by one of them: the bundle's own signature,
/// or for a bare manifest the `manifest.json.minisig` beside it. Without, the vendor's
/// own file is trusted as input (it only decides what to leave out; the site checks
/// every base file against the digests of the new, signed manifest anyway).
pub fn load_base(path: &Path, pubkeys: &[PublicKey]) -> Result<Manifest> {
    let what = format!("--base {}", path.display());
    let trusted = (!pubkeys.is_empty()).then_some(pubkeys);
    // A split bundle named by its base name has no file of that name: its parts do.
    let is_bundle = if path.is_file() {
        let mut head = [0u8; 4];
        let n = fs::File::open(path).and_then(|mut f| f.read(&mut head)).at(path)?;
        n == 4 && head == ZSTD_MAGIC
    } else {
        true
    };
    if is_bundle {
        let files = BundleFiles::locate(path)?;
        let (m, _, _) = read_manifest(&files, trusted).map_err(|e| e.within(&what))?;
        return Ok(m);
    }
    let bytes = fs::read(path).at(path)?;
    if let Some(keys) = trusted {
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".minisig");
        let sig_path = std::path::PathBuf::from(sig_path);
        let text = fs::read_to_string(&sig_path).at(&sig_path).map_err(|e| {
            e.with_hint("--base-pubkey needs the manifest's signature beside it (airlock/manifest.json.minisig from the bundle, saved as MANIFEST.minisig)")
        })?;
        let sig = Signature::parse(&text).map_err(|e| e.within(sig_path.display()))?;
        minisign::verify(keys, &sig, &bytes).map_err(|e| e.within(&what))?;
    }
    Manifest::from_bytes(&bytes).map_err(|e| {
        e.within(&what).with_hint(
            "give the previous release's bundle, or its airlock/manifest.json (`zstd -dc BUNDLE | tar -x airlock/manifest.json`)",
        )
    })
}

/// Turns the planned full bundle into a delta over `base`: every planned entry the
/// base release has with the same path, digest, size and mode is moved to the
/// manifest's `base_entries` and not written. Call after the plan is complete (key
/// statements included) and before it is signed.
pub fn make_delta(plan: &mut Plan, base: &Manifest) -> Result<DeltaSummary> {
    if plan.manifest.is_delta() {
        return Err(Error::input("--base", "the planned bundle is already a delta"));
    }
    if base.name != plan.manifest.name {
        return Err(Error::input(
            "--base",
            format!("the base is a bundle of `{}`, this spec builds `{}`", base.name, plan.manifest.name),
        )
        .with_hint("give a previous bundle of the same product"));
    }
    // A delta base is a whole release too: what the site has is its full tree.
    let release = base.full_release();
    let same = |e: &Entry| release.entry(&e.path) == Some(e);
    let (from_base, carried): (Vec<_>, Vec<_>) =
        std::mem::take(&mut plan.entries).into_iter().partition(|p| same(&p.entry));
    plan.entries = carried;
    let base_ref =
        BaseRef { name: base.name.clone(), version: base.version.clone(), manifest_sha256: base.release_sha256() };
    let m = &mut plan.manifest;
    m.base_entries = from_base.iter().map(|p| p.entry.clone()).collect();
    m.entries = plan.entries.iter().map(|p| p.entry.clone()).collect();
    m.base = Some(base_ref.clone());
    m.validate().map_err(|e| e.within("bundler bug: planned delta manifest is invalid"))?;
    Ok(DeltaSummary {
        base: base_ref,
        from_base: m.base_entries.len(),
        from_base_bytes: m.base_entries.iter().map(|e| e.size).sum(),
        carried: m.entries.len(),
        carried_bytes: m.total_size(),
    })
}
