//! The installed release (`release.json`): which bundle, version and manifest the site
//! runs, written by the install as its last step and replaced by an upgrade. One schema
//! for every reader: status, support, upgrade policy and delta bundles.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::manifest::{short_sha, Manifest};
use serde::{Deserialize, Serialize};

use crate::host::{Host, RootedHost};
use crate::state;

/// The release record `airlock install` writes as its last step (`release.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub bundle: String,
    pub version: String,
    #[serde(default)]
    pub created: String,
    /// SHA-256 of the signed manifest: identifies the bundle exactly.
    pub manifest_sha256: String,
    // Defaulted: a record that names the bundle, version and manifest is enough to
    // check a delta's base; status shows what it lacks as empty.
    #[serde(default)]
    pub signer: String,
    #[serde(default)]
    pub profile: String,
    /// `k3s v1.31.4+k3s1`.
    #[serde(default)]
    pub distribution: String,
}

impl ReleaseRecord {
    /// The release on the target; `None` when no install finished here.
    pub fn load(host: &dyn Host) -> Result<Option<Self>> {
        let Some(bytes) = host.read_file(Path::new(state::RELEASE_PATH))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(state::RELEASE_PATH, format!("is not a release record this airlock can read: {e}"))
                .with_hint("run the install again with the bundle the site runs; it rewrites the record")
        })
    }

    /// As [`ReleaseRecord::load`], for read-only callers that hold no host (`airlock
    /// preflight`, a delta's base check): read through a rooted host, so a symlink in
    /// the root resolves inside it. `None` when the root does not exist either.
    pub fn load_at(root: &Path) -> Result<Option<Self>> {
        if std::fs::symlink_metadata(root).is_err() {
            return Ok(None);
        }
        Self::load(&RootedHost::new(root.to_path_buf(), false)?)
    }

    /// The record of the release `manifest` carries, installed with `profile` and
    /// signed by `signer`.
    pub fn of(manifest: &Manifest, signer: String, profile: &str) -> Self {
        Self {
            bundle: manifest.name.clone(),
            version: manifest.version.clone(),
            created: manifest.created.clone(),
            manifest_sha256: manifest.release_sha256(),
            signer,
            profile: profile.to_string(),
            distribution: manifest
                .distribution
                .as_ref()
                .map(|d| format!("{} {}", d.kind, d.version))
                .unwrap_or_default(),
        }
    }

    /// The record as written to [`state::RELEASE_PATH`].
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a release record serialises");
        v.push(b'\n');
        v
    }

    /// `<version>-<first 12 hex of manifest_sha256>`, the release's directory name.
    pub fn id(&self) -> String {
        format!("{}-{}", self.version, short_sha(&self.manifest_sha256))
    }

    /// The target path of the release's kept staged content.
    pub fn bundle_dir(&self) -> PathBuf {
        Path::new(state::RELEASES_DIR).join(self.id()).join("bundle")
    }
}
