//! The install profiles a bundle carries (`profiles/*.yaml` entries): read from a
//! verified bundle without staging it (what `airlock preflight` needs), from a delta
//! over the installed release, or from staging (what the wizard offers).

use std::cell::RefCell;
use std::fs;
use std::path::Path;
use std::rc::Rc;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{Entry, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, EntrySink};
use airlock_format::report::Reporter;

use crate::bundle::staging::{self, Staged};
use crate::site::profile::Profile;

/// Every profile the staged bundle carries (what the wizard offers).
pub fn staged_profiles(staged: &Staged) -> Result<Vec<Profile>> {
    staged
        .manifest
        .profiles
        .iter()
        .map(|p| {
            let path = staged.path(&p.path);
            Profile::from_bundle_entry(&fs::read_to_string(&path).at(&path)?, &p.name)
        })
        .collect()
}

/// Verifies the whole bundle without writing anything and returns its manifest and
/// profiles: what `airlock preflight` needs (the profile's limits, the image bytes).
pub fn read_profiles(
    files: &BundleFiles,
    trusted: &[PublicKey],
    reporter: &dyn Reporter,
) -> Result<(Manifest, Vec<Profile>)> {
    read_profiles_over(files, trusted, None, reporter)
}

/// As [`read_profiles`]; a delta bundle's profiles that come from its base are read
/// from `base` (the installed release's staged content) and checked against the
/// signed digests, and the manifest returned is the full release's. Whether the base
/// is the installed release is the caller's check ([`crate::bundle::delta::check_delta_base`]).
pub fn read_profiles_over(
    files: &BundleFiles,
    trusted: &[PublicKey],
    base: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<(Manifest, Vec<Profile>)> {
    #[derive(Default)]
    struct Profiles {
        wanted: Vec<(String, String)>,
        got: Vec<(String, Rc<RefCell<Vec<u8>>>)>,
    }
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl EntrySink for Profiles {
        fn manifest(&mut self, m: &Manifest, _: &PublicKey) -> Result<()> {
            self.wanted = m.profiles.iter().map(|p| (p.path.clone(), p.name.clone())).collect();
            Ok(())
        }
        fn open(&mut self, entry: &Entry) -> Result<Option<Box<dyn std::io::Write>>> {
            if !self.wanted.iter().any(|(path, _)| *path == entry.path) {
                return Ok(None);
            }
            let buf = Rc::new(RefCell::new(Vec::new()));
            self.got.push((entry.path.clone(), buf.clone()));
            Ok(Some(Box::new(Shared(buf))))
        }
    }
    let mut sink = Profiles::default();
    let outcome = read_bundle(files, trusted, &mut sink, reporter)?;
    if let Some(e) = staging::damaged(&outcome) {
        return Err(e);
    }
    let mut profiles = Vec::new();
    for (path, name) in &sink.wanted {
        // A delta bundle carries a profile only when it changed; the rest are the base's.
        let m = &outcome.manifest;
        let bytes = match (sink.got.iter().find(|(p, _)| p == path), m.base_entry(path), base) {
            (Some((_, bytes)), _, _) => bytes.borrow().clone(),
            (None, Some(e), Some(base)) => crate::bundle::base::read_base_entry(base, e, m)?,
            _ => {
                return Err(Error::input(
                    format!("{} {}: profile {name}", m.name, m.version),
                    "is not carried by this delta bundle; it comes from the installed release",
                )
                .with_hint("run preflight on the site that runs the delta's base release, or with the full bundle"))
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        profiles.push(Profile::from_bundle_entry(&text, name)?);
    }
    Ok((outcome.manifest.full_release(), profiles))
}
