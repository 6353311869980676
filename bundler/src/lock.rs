//! `bundle.lock`: the digest every registry image resolved to, kept next to the spec.
//!
//! The first build resolves tags and writes the lock; later builds fetch exactly the
//! locked digests (so a moved tag changes nothing) until `--update-lock`. With
//! `--locked` a build refuses to change the lock at all (CI). The lock is also carried
//! in the bundle as `bundle.lock`, so a bundle says what it was built from. The text
//! is a pure function of its entries (sorted, no timestamps), so the same lock gives
//! the same bundle bytes.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::Sha256Digest;
use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "bundle.lock";
/// Where the bundle carries its lock.
pub const LOCK_ENTRY: &str = "bundle.lock";
const HEADER: &str = "# Written by airlock-bundler: the digest each registry image resolved to.\n# Commit it next to the spec; `airlock-bundler create --update-lock` moves the pins.\n";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Use locked digests; resolve and add images the lock does not know yet.
    #[default]
    Use,
    /// Resolve every tag again and rewrite the lock.
    Update,
    /// Use the lock and fail if it lacks an image (nothing may change).
    Locked,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default)]
    pub images: Vec<LockedImage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<LockedChart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedChart {
    pub repo: String,
    pub name: String,
    pub version: String,
    /// SHA-256 of the packaged chart (`.tgz`).
    pub digest: Sha256Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The `from:` of the spec, e.g. `docker://ghcr.io/a/b:1`.
    pub from: String,
    /// The root (index or manifest) it resolved to.
    pub digest: Sha256Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
}

impl Lock {
    pub fn path_for(spec_dir: &Path) -> PathBuf {
        spec_dir.join(LOCK_FILE)
    }

    /// Reads the lock; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock { version: 1, images: vec![], charts: vec![] })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let lock: Lock = serde_yaml::from_str(&text).map_err(|e| {
            Error::input(path.display().to_string(), format!("is not a valid lock file: {e}"))
                .with_hint("fix it, or delete it (or run with --update-lock) to resolve every image again")
        })?;
        if lock.version != 1 {
            return Err(Error::input(path.display().to_string(), format!("lock version {} is not 1", lock.version))
                .with_hint("this bundler writes version 1; run with --update-lock to rewrite it"));
        }
        Ok(lock)
    }

    pub fn get(&self, from: &str) -> Option<&LockedImage> {
        self.images.iter().find(|i| i.from == from)
    }

    pub fn chart(&self, repo: &str, name: &str, version: &str) -> Option<&LockedChart> {
        self.charts.iter().find(|c| c.repo == repo && c.name == name && c.version == version)
    }

    /// The canonical text: entries sorted by `from`.
    pub fn render(&self) -> Vec<u8> {
        let mut l = self.clone();
        l.images.sort_by(|a, b| a.from.cmp(&b.from));
        l.images.dedup_by(|a, b| a.from == b.from);
        l.charts.sort_by(|a, b| (&a.repo, &a.name, &a.version).cmp(&(&b.repo, &b.name, &b.version)));
        l.charts.dedup_by(|a, b| (&a.repo, &a.name, &a.version) == (&b.repo, &b.name, &b.version));
        let mut out = HEADER.as_bytes().to_vec();
        out.extend(serde_yaml::to_string(&l).expect("lock serializes").into_bytes());
        out
    }

    /// Writes the lock if its text changed (atomically).
    pub fn save(&self, path: &Path) -> Result<bool> {
        let text = self.render();
        if std::fs::read(path).ok().as_deref() == Some(text.as_slice()) {
            return Ok(false);
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &text).at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)?;
        log::info!(target: "airlock::bundler", "wrote {}", path.display());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Sha256Digest {
        Sha256Digest::of(&[n])
    }

    #[test]
    fn render_is_sorted_and_round_trips_so_same_entries_give_same_bytes() {
        let a = LockedImage { from: "docker://b/x:1".into(), digest: d(1), media_type: "m".into(), size: 3 };
        let b = LockedImage { from: "docker://a/y:2".into(), digest: d(2), media_type: "m".into(), size: 4 };
        let l1 = Lock { version: 1, images: vec![a.clone(), b.clone()], charts: vec![] };
        let l2 = Lock { version: 1, images: vec![b, a], charts: vec![] };
        assert_eq!(l1.render(), l2.render());
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(LOCK_FILE);
        assert!(l1.save(&p).unwrap());
        assert!(!l2.save(&p).unwrap(), "unchanged text is not rewritten");
        let back = Lock::load(&p).unwrap();
        assert_eq!(back.get("docker://a/y:2").unwrap().digest, d(2));
        assert_eq!(back.images[0].from, "docker://a/y:2");
    }

    #[test]
    fn missing_lock_is_empty_and_a_broken_one_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(LOCK_FILE);
        assert!(Lock::load(&p).unwrap().images.is_empty());
        std::fs::write(&p, "version: 1\nimages: [{from: x}]\n").unwrap();
        let e = Lock::load(&p).unwrap_err();
        assert!(e.subject.contains(LOCK_FILE) && e.hint.as_deref().unwrap().contains("--update-lock"), "{e}");
    }
}
