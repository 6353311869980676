//! Which vendor keys this site trusts.
//!
//! Trusted keys come from `--pubkey` or the site's key directory
//! (`<root>/etc/airlock/keys/*.pub`), never from the bundle being verified: a bundle
//! that could name its own key would prove nothing.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::minisign::PublicKey;

/// The site key directory, relative to the target root.
pub const SITE_KEY_DIR: &str = "etc/airlock/keys";

/// Loads the keys given on the command line, or else the site's keys. Fails closed:
/// no key, no trust.
pub fn trusted_keys(pubkeys: &[PathBuf], root: &Path) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for p in pubkeys {
        keys.push(PublicKey::from_file(p)?);
    }
    if keys.is_empty() {
        let dir = root.join(SITE_KEY_DIR);
        if dir.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .at(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            paths.sort();
            for p in paths {
                keys.push(PublicKey::from_file(&p)?);
            }
        }
    }
    if keys.is_empty() {
        return Err(Error::signature("trusted keys", "no vendor public key is trusted, so no bundle can be verified")
            .with_hint(format!("pass --pubkey VENDOR.pub, or install the vendor key into /{SITE_KEY_DIR}/")));
    }
    Ok(keys)
}
