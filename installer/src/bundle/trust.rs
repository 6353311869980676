//! Which vendor keys this site trusts.
//!
//! Trusted keys come from `--pubkey` or the site's key directory
//! (`<root>/etc/airlock/keys/*.pub`), never from the bundle being verified: a bundle
//! that could name its own key would prove nothing. The key that verified an install
//! (given with `--pubkey`) is kept in the key directory by that install's plan
//! ([`crate::bundle::keys::statement_steps`]), so later commands need no `--pubkey`.
//!
//! A key the site retired or revoked (a key statement from an earlier bundle, recorded
//! in `<root>/etc/airlock/keys/revoked.json` by [`crate::bundle::keys`]) is refused wherever it
//! comes from, `--pubkey` included: revoking a compromised key must not be undone by
//! passing it again.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::minisign::PublicKey;

use crate::bundle::keys::{revoked_key_error, RevocationList};
use crate::state;

/// The files [`trusted_keys`] reads: the `--pubkey` files, or else the site's `.pub`
/// keys (for handing the same trust to another node).
pub fn trusted_key_files(pubkeys: &[PathBuf], root: &Path) -> Result<Vec<PathBuf>> {
    if !pubkeys.is_empty() {
        return Ok(pubkeys.to_vec());
    }
    let dir = state::key_dir_at(root);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .at(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Loads the keys given on the command line, or else the site's keys. Fails closed:
/// no key, no trust.
pub fn trusted_keys(pubkeys: &[PathBuf], root: &Path) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    let mut sources = Vec::new();
    for p in pubkeys {
        keys.push(PublicKey::from_file(p)?);
        sources.push(format!("--pubkey {}", p.display()));
    }
    if keys.is_empty() {
        let dir = state::key_dir_at(root);
        if dir.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .at(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            paths.sort();
            for p in paths {
                keys.push(PublicKey::from_file(&p)?);
                sources.push(p.display().to_string());
            }
        }
    }
    let revoked = RevocationList::load_at(root)?;
    for (k, source) in keys.iter().zip(&sources) {
        if let Some(r) = revoked.find(&k.key_id_hex()) {
            let e = revoked_key_error(r, source, root);
            // A revoked key's file back in the key directory (restored by hand, say):
            // the fix is removing it, not finding another bundle.
            return Err(if pubkeys.is_empty() {
                e.with_hint(format!("remove {source}: that key is out of trust at this site"))
            } else {
                e
            });
        }
    }
    if keys.is_empty() {
        return Err(Error::signature("trusted keys", "no vendor public key is trusted, so no bundle can be verified")
            .with_hint(format!(
                "pass --pubkey VENDOR.pub (an install keeps it), or put the vendor key into {}/",
                state::key_dir_at(root).display()
            )));
    }
    Ok(keys)
}

/// Turns "not signed by a trusted key" into the revocation error when the key that
/// signed the bundle is one this site retired or revoked, so the operator learns why
/// at once instead of trying `--pubkey` with that key. Any other error is returned as is.
pub fn explain_untrusted_signer(e: Error, root: &Path) -> Error {
    if e.kind != airlock_format::ErrorKind::Signature {
        return e;
    }
    let Ok(list) = RevocationList::load_at(root) else { return e };
    match list.keys.iter().find(|k| e.cause.contains(&format!("signed by key {}", k.key_id))) {
        Some(k) => revoked_key_error(k, "the bundle's signer", root),
        None => e,
    }
}
