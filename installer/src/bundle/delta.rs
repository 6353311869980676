//! Delta bundles on the site: refuse one whose base is not what the site runs, and
//! stage one into exactly the tree its full bundle would have staged.
//!
//! A delta carries only what changed since its base release; its signed manifest
//! lists the rest as `base_entries` with their digests. Staging streams and verifies
//! the delta's entries as for any bundle, takes every base entry from the installed
//! release's staged content (`/var/lib/airlock/releases/<id>/bundle`) and checks it
//! against the signed digest while copying it. How the base is merged is
//! [`crate::bundle::base`]'s. Nothing unverified ends up outside staging, and a failed check removes staging.

use std::path::Path;

use airlock_format::error::{Error, Result};
use airlock_format::manifest::{short_sha, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;

use crate::bundle::staging::{extract_with, ExtractOptions, Staged};

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
        // The release this delta makes is the one installed (it was applied already): it
        // stages over that release as well, since the delta's base entries are in it
        // with the same digests, and the upgrade then says "already installed", as for
        // the full bundle.
        Some(sha) if sha == manifest.release_sha256() => Ok(()),
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
        return crate::bundle::profiles::read_profiles(files, trusted, reporter);
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
    crate::bundle::profiles::read_profiles_over(files, trusted, base.as_deref(), reporter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::manifest::{BaseRef, FORMAT_V1};

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
            monitoring: None,
            drill_checks: Vec::new(),
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
    fn a_delta_passes_over_the_release_it_makes_so_applying_it_again_is_a_no_op() {
        let m = manifest(Some(&"ab".repeat(32)));
        check_delta_base(&m, Some(&m.release_sha256())).unwrap();
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
