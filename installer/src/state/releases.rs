//! The release store: every installed release kept whole, so an upgrade can be undone
//! by putting the previous one back rather than by undoing steps one by one.
//!
//! `/var/lib/airlock/releases/<id>/` holds, for release `<version>-<12 hex of the
//! manifest digest>`:
//! - `bundle/`: the verified staged content exactly as `install::stage` left it (the
//!   staging directory is renamed here; same file system, so no copy). Delta bundles
//!   are staged against the current release's `bundle/`.
//! - `manifest.json`: the signed manifest's bytes, for the next upgrade's diff.
//! - `release.json`: id, version, manifest digest and when it was kept.
//! - `snapshot/` + `snapshot.json`: every file and link the release installed (its
//!   inventory) and the installer's state files, as they were when the release became
//!   current. Staged files (hard links into `bundle/`) are linked, rendered ones
//!   copied; secrets stay 0600. `snapshot.json` is written last: without it the
//!   snapshot is incomplete and is taken again.
//!
//! `releases/current` and `releases/previous` are symlinks to ids, flipped atomically
//! (the host writes a new link and renames it over the old one).

use crate::state;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::host::{FileKind, Host, Perms};

use crate::state::Inventory;

const SNAPSHOT_VERSION: u32 = 1;

/// State files that belong to a release besides its inventory: rolling back puts them
/// back too, so `status` and the next upgrade see the release that runs.
/// The engine's journal is one of them: after a rollback it again describes the run
/// that installed the release that runs, not the upgrade's undone apply (whose story
/// `upgrade.json` tells).
pub fn state_files() -> Vec<PathBuf> {
    let journal = crate::engine::Journal::path(Path::new(state::STATE_DIR));
    let mut files: Vec<PathBuf> = [
        state::INVENTORY_PATH,
        state::UNINSTALL_LIST_PATH,
        state::RELEASE_PATH,
        crate::state::REPORT_PATH,
        state::KEPT_ANSWERS_PATH,
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    files.push(journal);
    files
}

/// SHA-256 of the manifest's canonical bytes: what `release.json` records.
pub fn manifest_sha256(m: &Manifest) -> String {
    // The whole release's digest: the same whether it arrived as a full bundle or as
    // a delta (for a full manifest, the digest of its own bytes).
    m.release_sha256()
}

/// `<version>-<first 12 hex of manifest_sha256>`.
pub fn release_id(m: &Manifest) -> String {
    format!("{}-{}", m.version, &manifest_sha256(m)[..12])
}

/// The target path of a release's directory.
pub fn release_dir(id: &str) -> PathBuf {
    Path::new(state::RELEASES_DIR).join(id)
}

/// What `releases/<id>/release.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRelease {
    pub id: String,
    pub name: String,
    pub version: String,
    pub manifest_sha256: String,
    /// When it was kept (RFC 3339): pruning removes the oldest first.
    pub kept: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub mode: u32,
    /// `None` for secrets (0600 files): their digest is nobody's business either. `None`
    /// too for staged files, which the snapshot keeps as hard links to the release's
    /// verified bundle content: what they hold is the stored file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl SnapshotFile {
    /// A secret (0600, no digest kept), as opposed to a staged file, which has no
    /// digest either but keeps its mode.
    pub fn secret(&self) -> bool {
        self.sha256.is_none() && self.mode & 0o077 == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLink {
    pub path: PathBuf,
    pub target: PathBuf,
}

/// Everything a release placed, as it was when it became current.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub release: String,
    pub files: Vec<SnapshotFile>,
    pub links: Vec<SnapshotLink>,
    pub dirs: Vec<(PathBuf, u32)>,
    pub units: Vec<String>,
}

impl Snapshot {
    fn json_path(id: &str) -> PathBuf {
        release_dir(id).join("snapshot.json")
    }
    fn files_dir(id: &str) -> PathBuf {
        release_dir(id).join("snapshot")
    }
    /// Where a snapshotted target path is kept.
    pub fn stored(id: &str, path: &Path) -> PathBuf {
        Self::files_dir(id).join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The complete snapshot of a release, if one was taken.
    pub fn load(host: &dyn Host, id: &str) -> Result<Option<Snapshot>> {
        let path = Self::json_path(id);
        let Some(bytes) = host.read_file(&path)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(path.display().to_string(), format!("is not a release snapshot this airlock can read: {e}"))
                .with_hint("roll back by hand from the upgrade's backup directory (docs/day2.md, upgrade)")
        })
    }

    fn has(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f.path == path) || self.links.iter().any(|l| l.path == path)
    }
}

/// Takes the snapshot of release `id` from what is on the target now: the files and
/// links of `inv` and the state files. Replaces an incomplete one.
pub fn take_snapshot(host: &dyn Host, id: &str, inv: &Inventory) -> Result<Snapshot> {
    host.remove(&Snapshot::json_path(id))?;
    host.remove_all(&Snapshot::files_dir(id))?;
    host.create_dir(&Snapshot::files_dir(id), 0o700)?;
    let mut snap = Snapshot {
        version: SNAPSHOT_VERSION,
        release: id.to_string(),
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        units: inv.units.clone(),
    };
    let mut paths: Vec<PathBuf> = inv.files.iter().map(|f| f.path.clone()).chain(inv.links.iter().cloned()).collect();
    paths.extend(state_files());
    paths.extend(answer_secret_files(host)?);
    paths.sort();
    paths.dedup();
    // Written without an fsync per file and per directory (two for each of a few
    // dozen files): one syncfs at the end makes the whole snapshot durable before
    // `snapshot.json` commits it below. A crash before that leaves no `snapshot.json`
    // (removed above, durably), so the snapshot counts as incomplete and is taken again.
    host.durable_together(&mut || {
        for path in &paths {
            let path = path.clone();
            let Some(meta) = host.metadata(&path)? else { continue };
            match meta.kind {
                FileKind::Symlink => {
                    let target = host.read_link(&path)?.expect("metadata said it is a link");
                    snap.links.push(SnapshotLink { path, target });
                }
                FileKind::File => {
                    let secret = meta.mode & 0o077 == 0;
                    let perms = if secret { Perms::secret() } else { Perms::mode(meta.mode) };
                    let stored = Snapshot::stored(id, &path);
                    // A file placed from staging is a hard link into the kept bundle and is
                    // only ever replaced by rename, never written in place: linking it is as
                    // good as a copy. Rendered files (one link) are copied.
                    let sha256 = if meta.nlink > 1 {
                        host.copy_file(&host.real_path(&path)?, &stored, perms)?;
                        // Its content is the kept bundle's, verified against the signed
                        // manifest; hashing it again would read gigabytes (the image
                        // archive) on every install.
                        None
                    } else {
                        // Hashed as it is copied: the bytes read are the bytes written.
                        let r = host.open_file(&path)?.expect("metadata said it exists");
                        let mut r = airlock_format::digest::HashingReader::new(r);
                        host.write_file(&stored, &mut r, perms)?;
                        if secret {
                            None
                        } else {
                            Some(r.finish().0.hex())
                        }
                    };
                    snap.files.push(SnapshotFile { path, mode: meta.mode, sha256 });
                }
                FileKind::Dir | FileKind::Other => {}
            }
        }
        Ok(())
    })?;
    for d in &inv.dirs {
        if let Some(m) = host.metadata(d)? {
            snap.dirs.push((d.clone(), m.mode));
        }
    }
    let mut json = serde_json::to_vec_pretty(&snap).expect("a snapshot serialises");
    json.push(b'\n');
    host.write_file(&Snapshot::json_path(id), &mut json.as_slice(), Perms::mode(0o600))?;
    Ok(snap)
}

/// The files holding the kept answers' secret values.
fn answer_secret_files(host: &dyn Host) -> Result<Vec<PathBuf>> {
    let dir = Path::new(crate::state::SECRETS_DIR);
    let entries = host.list_dir(dir)?.unwrap_or_default();
    Ok(entries
        .into_iter()
        .filter(|e| e.name.starts_with(crate::state::SECRET_ANSWER_PREFIX))
        .map(|e| dir.join(e.name))
        .collect())
}

/// Puts release `snap` back byte for byte: removes what `newer` (the inventory on the
/// target now) placed that the snapshot does not have, then restores every file, link
/// and directory of the snapshot, and disables units only the newer release had.
pub fn restore(host: &dyn Host, snap: &Snapshot, newer: Option<&Inventory>) -> Result<()> {
    if let Some(inv) = newer {
        for p in inv.files.iter().map(|f| &f.path).chain(inv.links.iter()) {
            if !snap.has(p) {
                host.remove(p)?;
            }
        }
        for u in inv.units.iter().filter(|u| !snap.units.contains(u)) {
            host.disable_unit(u)?;
        }
        let mut dirs: Vec<&PathBuf> = inv.dirs.iter().filter(|d| !snap.dirs.iter().any(|(s, _)| s == *d)).collect();
        // Deepest first, so a parent is empty by the time it is looked at.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            host.remove_dir(d)?;
        }
    }
    for (d, mode) in &snap.dirs {
        host.create_dir(d, *mode)?;
    }
    for f in &snap.files {
        let stored = host.real_path(&Snapshot::stored(&snap.release, &f.path))?;
        let perms = if f.secret() { Perms::secret() } else { Perms::mode(f.mode) };
        if host.metadata(&f.path)?.is_some_and(|m| m.kind == FileKind::Dir) {
            host.remove_all(&f.path)?;
        }
        host.copy_file(&stored, &f.path, perms)?;
    }
    for l in &snap.links {
        host.symlink(&l.path, &l.target)?;
    }
    for u in &snap.units {
        host.enable_unit(u)?;
    }
    // The state files the snapshot did not have (the newer release wrote them), and
    // secret answers only the newer release's answers had: a secret must not outlive
    // the release it was given for.
    for p in state_files().into_iter().chain(answer_secret_files(host)?) {
        if !snap.has(&p) {
            host.remove(&p)?;
        }
    }
    Ok(())
}

/// The id `releases/<name>` points at.
pub fn pointer(host: &dyn Host, name: &str) -> Result<Option<String>> {
    let link = Path::new(state::RELEASES_DIR).join(name);
    match host.metadata(&link)? {
        Some(m) if m.kind == FileKind::Symlink => Ok(host.read_link(&link)?.map(|t| t.to_string_lossy().into_owned())),
        _ => Ok(None),
    }
}

/// Points `releases/<name>` at `id` (a relative link, so the store can be inspected
/// under a target root); atomic: a new link renamed over the old.
pub fn set_pointer(host: &dyn Host, name: &str, id: &str) -> Result<()> {
    host.symlink(&Path::new(state::RELEASES_DIR).join(name), Path::new(id))
}

/// Moves the verified staging directory into the store as `releases/<id>/bundle` and
/// records the manifest and `release.json`. An older `bundle/` of the same id (the
/// same release installed again) is replaced by the one verified just now.
/// `staged_dir` is the host path staging was verified into (below the host's root,
/// as [`Host::resolve_dir`] gave it).
pub fn keep_bundle(host: &dyn Host, staged_dir: &Path, m: &Manifest) -> Result<KeptRelease> {
    let id = release_id(m);
    let dir = release_dir(&id);
    host.create_dir(Path::new(state::RELEASES_DIR), 0o700)?;
    host.create_dir(&dir, 0o700)?;
    let bundle = dir.join("bundle");
    let staged = staged_dir.strip_prefix(host.root()).map(|rel| Path::new("/").join(rel)).map_err(|_| {
        Error::unsafe_entry(
            staged_dir.display().to_string(),
            format!("the staging directory is not below the target root {}", host.root().display()),
        )
        .with_hint("this is a bug in airlock; run the command again")
    })?;
    if staged != bundle {
        host.remove_all(&bundle)?;
        // Staging lives in the state directory like the store: one file system, so a
        // rename, which is also what keeps staged files' hard links meaningful.
        host.rename(&staged, &bundle)?;
    }
    host.write_file(&dir.join("manifest.json"), &mut m.to_bytes().as_slice(), Perms::mode(0o644))?;
    let kept = KeptRelease {
        id: id.clone(),
        name: m.name.clone(),
        version: m.version.clone(),
        manifest_sha256: manifest_sha256(m),
        kept: state::now_rfc3339(),
    };
    let mut json = serde_json::to_vec_pretty(&kept).expect("a release record serialises");
    json.push(b'\n');
    host.write_file(&dir.join("release.json"), &mut json.as_slice(), Perms::mode(0o644))?;
    Ok(kept)
}

/// The manifest a kept release was installed from.
pub fn kept_manifest(host: &dyn Host, id: &str) -> Result<Option<Manifest>> {
    let path = release_dir(id).join("manifest.json");
    let Some(bytes) = host.read_file(&path)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::corrupt(path.display().to_string(), format!("is not a manifest: {e}")))
}

/// After a successful install: keeps its bundle and snapshot and makes it current (the
/// release that was current becomes previous). Returns the releases pruned.
pub fn keep_installed(host: &dyn Host, staged_dir: &Path, m: &Manifest, keep: usize) -> Result<Vec<String>> {
    let kept = keep_bundle(host, staged_dir, m)?;
    let inv = Inventory::load(host)?;
    take_snapshot(host, &kept.id, &inv)?;
    make_current(host, &kept.id)?;
    prune(host, keep)
}

/// Flips `current` to `id`; the old current becomes `previous`.
pub fn make_current(host: &dyn Host, id: &str) -> Result<()> {
    if let Some(old) = pointer(host, "current")? {
        if old != id {
            set_pointer(host, "previous", &old)?;
        }
    }
    set_pointer(host, "current", id)
}

/// Removes the oldest kept releases until `keep` remain; never the current or the
/// previous one. Returns the ids removed.
pub fn prune(host: &dyn Host, keep: usize) -> Result<Vec<String>> {
    let protected: Vec<String> =
        ["current", "previous"].iter().filter_map(|n| pointer(host, n).ok().flatten()).collect();
    let mut kept: Vec<(String, String)> = Vec::new();
    for e in host.list_dir(Path::new(state::RELEASES_DIR))?.unwrap_or_default() {
        if e.kind != FileKind::Dir {
            continue;
        }
        let id = e.name;
        let when = host
            .read_file(&release_dir(&id).join("release.json"))?
            .and_then(|b| serde_json::from_slice::<KeptRelease>(&b).ok())
            .map(|r| r.kept)
            .unwrap_or_default();
        kept.push((when, id));
    }
    kept.sort();
    let mut removed = Vec::new();
    let mut count = kept.len();
    for (_, id) in kept {
        if count <= keep {
            break;
        }
        if protected.contains(&id) {
            continue;
        }
        host.remove_all(&release_dir(&id))?;
        removed.push(id);
        count -= 1;
    }
    Ok(removed)
}

/// The state directory's target path.
pub fn state_dir() -> PathBuf {
    PathBuf::from(state::STATE_DIR)
}
