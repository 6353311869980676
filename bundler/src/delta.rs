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

use crate::plan::Plan;

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

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::digest::Sha256Digest;
    use airlock_format::manifest::{FileArtifact, FORMAT_V1};
    use airlock_format::write::{Content, PlannedEntry};

    fn entry(path: &str, content: &[u8]) -> Entry {
        Entry { path: path.into(), size: content.len() as u64, sha256: Sha256Digest::of(content), executable: false }
    }

    /// A release of three files with these contents.
    fn manifest(version: &str, files: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            format: FORMAT_V1.into(),
            name: "demo".into(),
            version: version.into(),
            created: airlock_format::manifest::rfc3339(0),
            distribution: None,
            installer: None,
            components: vec![],
            images: vec![],
            charts: vec![],
            files: files
                .iter()
                .map(|(p, _)| FileArtifact {
                    name: p.rsplit('/').next().unwrap().into(),
                    component: "c".into(),
                    path: (*p).into(),
                })
                .collect(),
            profiles: vec![],
            key_statements: vec![],
            entries: files.iter().map(|(p, c)| entry(p, c)).collect(),
            base: None,
            base_entries: vec![],
            upgrade: None,
            monitoring: None,
            drill_checks: Vec::new(),
        }
    }

    fn plan(m: Manifest, files: &[(&str, &[u8])]) -> Plan {
        let entries = files
            .iter()
            .map(|(p, c)| PlannedEntry {
                entry: entry(p, c),
                content: Content::Bytes(c.to_vec()),
                precompressed: false,
            })
            .collect();
        Plan { manifest: m, entries, lock: None, discovered: Default::default(), sbom_cache: None }
    }

    const V1: &[(&str, &[u8])] = &[("files/c/a", b"a1"), ("files/c/b", b"b1"), ("files/c/c", b"c1")];
    const V2: &[(&str, &[u8])] = &[("files/c/a", b"a2"), ("files/c/b", b"b1"), ("files/c/c", b"c1")];
    const V3: &[(&str, &[u8])] = &[("files/c/a", b"a2"), ("files/c/b", b"b1"), ("files/c/c", b"c3")];

    #[test]
    fn only_entries_the_base_has_with_the_same_digest_are_left_out() {
        let base = manifest("1", V1);
        let mut p = plan(manifest("2", V2), V2);
        let s = make_delta(&mut p, &base).unwrap();
        let carried: Vec<&str> = p.entries.iter().map(|e| e.entry.path.as_str()).collect();
        assert_eq!(carried, ["files/c/a"]);
        assert_eq!(p.manifest.entries.len(), 1);
        assert_eq!(p.manifest.base_entries.len(), 2);
        assert_eq!((s.carried, s.from_base), (1, 2));
        assert_eq!(p.manifest.base.as_ref().unwrap().manifest_sha256, Sha256Digest::of(&base.to_bytes()).hex());
        // Reassembled, it is the full bundle's manifest.
        assert_eq!(p.manifest.full_release(), manifest("2", V2));
    }

    #[test]
    fn a_delta_base_counts_with_its_whole_release_and_its_full_manifest_hash() {
        let mut v2 = plan(manifest("2", V2), V2);
        make_delta(&mut v2, &manifest("1", V1)).unwrap();
        let base = v2.manifest; // a delta: files/c/b and files/c/c only in base_entries
        let mut v3 = plan(manifest("3", V3), V3);
        make_delta(&mut v3, &base).unwrap();
        let carried: Vec<&str> = v3.entries.iter().map(|e| e.entry.path.as_str()).collect();
        assert_eq!(carried, ["files/c/c"], "a2 and b1 are in v2's release, even if not in its delta");
        assert_eq!(v3.manifest.base.unwrap().manifest_sha256, manifest("2", V2).release_sha256());
    }

    #[test]
    fn a_base_of_another_product_is_refused() {
        let mut base = manifest("1", V1);
        base.name = "other".into();
        let e = make_delta(&mut plan(manifest("2", V2), V2), &base).unwrap_err();
        assert_eq!(e.kind, airlock_format::ErrorKind::Input);
        assert!(e.to_string().contains("the base is a bundle of `other`"), "{e}");
    }

    #[test]
    fn a_changed_mode_is_carried_even_with_the_same_bytes() {
        let base = manifest("1", V1);
        let mut m = manifest("2", V1);
        m.entries[1].executable = true;
        let mut p = plan(m, V1);
        p.entries[1].entry.executable = true;
        make_delta(&mut p, &base).unwrap();
        let carried: Vec<&str> = p.entries.iter().map(|e| e.entry.path.as_str()).collect();
        assert_eq!(carried, ["files/c/b"]);
    }
}
