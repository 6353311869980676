//! The install's inventory (`installed.json`): every file with its digest, link,
//! directory and unit the install placed. Uninstall plans from it alone, an upgrade
//! compares the installed release's with the new one's, and status checks drift
//! against it.

use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::engine::layout::{FileSource, Layout};
use crate::host::Host;
use crate::state;

const INVENTORY_VERSION: u32 = 1;

/// What one install placed on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub version: u32,
    pub distribution: String,
    /// The distribution's unit on this node.
    pub unit: String,
    /// Its killall script, run before files go on a live host (stops pods, unmounts).
    pub killall: Option<PathBuf>,
    pub files: Vec<InventoryFile>,
    pub links: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub units: Vec<String>,
    /// Trees the distribution fills while it runs; removed only with `purge`.
    pub runtime_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFile {
    pub path: PathBuf,
    /// The content as placed; `None` for secrets (theirs is nobody's business) and
    /// files whose digest is not known without reading gigabytes again.
    pub sha256: Option<Sha256Digest>,
}

impl Inventory {
    /// The kubectl client of the node this inventory describes; `None` on an agent.
    pub fn kube(&self) -> Option<crate::host::Kube> {
        crate::host::Kube::for_node(&self.distribution, &self.unit, self.runtime_dirs.first().map(PathBuf::as_path))
    }

    /// The inventory of `layout`. `staged_digest` gives the digest of a staged entry
    /// when known (the signed manifest has every bundle entry's).
    pub fn of(
        layout: &Layout,
        distribution: &str,
        unit: &str,
        killall: Option<PathBuf>,
        runtime_dirs: Vec<PathBuf>,
        staged_digest: &dyn Fn(&str) -> Option<Sha256Digest>,
    ) -> Self {
        let files = layout
            .files
            .iter()
            .map(|f| InventoryFile {
                path: f.path.clone(),
                sha256: match (&f.source, f.secret) {
                    (_, true) => None,
                    (FileSource::Inline(bytes), false) => Some(Sha256Digest::of(bytes)),
                    (FileSource::Staged(entry), false) => staged_digest(entry),
                },
            })
            .collect();
        Self {
            version: INVENTORY_VERSION,
            distribution: distribution.to_string(),
            unit: unit.to_string(),
            killall,
            files,
            links: layout.links.iter().map(|l| l.link.clone()).collect(),
            dirs: layout.dirs.iter().map(|d| d.path.clone()).collect(),
            units: layout.units.clone(),
            runtime_dirs,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("an inventory serialises");
        v.push(b'\n');
        v
    }

    /// The inventory on the target, or a clear error when nothing airlock installed is there.
    pub fn load(host: &dyn Host) -> Result<Self> {
        let path = Path::new(state::INVENTORY_PATH);
        let bytes = host.read_file(path)?.ok_or_else(|| {
            Error::input(
                host.root().join(state::INVENTORY_PATH.trim_start_matches('/')).display().to_string(),
                "no airlock install is recorded here",
            )
            .with_hint("uninstall removes only what `airlock install` recorded; check --root")
        })?;
        let inv: Self = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(state::INVENTORY_PATH, format!("is not an inventory this airlock can read: {e}"))
                .with_hint("remove the install by hand with the distribution's uninstall script")
        })?;
        if inv.version != INVENTORY_VERSION {
            return Err(Error::input(
                state::INVENTORY_PATH,
                format!("has version {}, expected {INVENTORY_VERSION}", inv.version),
            )
            .with_hint("uninstall with the airlock release that installed it"));
        }
        Ok(inv)
    }
}
