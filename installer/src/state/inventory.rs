//! The install's inventory (`installed.json`): every file with its digest, link,
//! directory and unit the install placed. Uninstall plans from it alone, an upgrade
//! compares the installed release's with the new one's, and status checks drift
//! against it.
//!
//! Every file has a digest, secret-bearing ones too (`config.yaml` with the cluster
//! token, `registries.yaml`, keys, Secret manifests): without one, an edit to them
//! could neither be reported by status nor protected from uninstall. Their digest is
//! keyed — HMAC-SHA256 with the site's own random key ([`InventoryKey`], 0600 in the
//! secrets directory) — instead of a plain SHA-256, because the inventory is not a
//! secret: it stays 0644 so status works for whoever may read the state, backups copy
//! it, and the support bundle hands it to the vendor whole. A plain digest of a
//! low-entropy secret (an LDAP bind password in a values file, a short registry
//! password) would be a guessing oracle for anyone holding the inventory; the keyed
//! one says nothing without the key, which never leaves the secrets directory (the
//! support bundle leaves that directory out and redacts its values). Keeping the whole
//! inventory 0600 instead was rejected for those reasons: it would make the record
//! everyone needs as secret as the secrets.
//!
//! Inventories of earlier releases have no digest for secret-bearing files (and for
//! the PKI and platform objects): such a file is [`Unverifiable::NoDigest`], kept by
//! uninstall unless forced and reported by status as not checked — never guessed
//! unchanged.

use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::engine::layout::{FileSource, Layout};
use crate::host::{FileKind, Host, Perms};
use crate::state::{self, INVENTORY_KEY_PATH};

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
    /// Where each link pointed when airlock made it: uninstall removes a link only
    /// while it still points there (an operator's own `kubectl` stays). Absent in
    /// inventories of earlier releases, which then remove a link while it is one.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub link_targets: std::collections::BTreeMap<PathBuf, PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub units: Vec<String>,
    /// Trees the distribution fills while it runs; removed only with `purge`.
    pub runtime_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryFile {
    pub path: PathBuf,
    /// SHA-256 of the content as placed; `None` for secret-bearing files, which have
    /// [`Self::hmac_sha256`] instead.
    #[serde(default)]
    pub sha256: Option<Sha256Digest>,
    /// Secret-bearing files: HMAC-SHA256 of the content as placed, keyed with the
    /// site's [`InventoryKey`] (hex). Absent in inventories of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
}

/// Whether an inventory file is on the target as the install placed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    AsPlaced,
    /// The content differs.
    Changed,
    /// Something other than a file is there now.
    Replaced,
    Missing,
    /// Present, but whether it changed cannot be told.
    Unverifiable(Unverifiable),
}

/// Why a file's content cannot be compared with what the install placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unverifiable {
    /// Recorded without a digest (an inventory of an earlier release).
    NoDigest,
    /// Recorded with a keyed digest, but the site key is gone or damaged.
    NoKey,
}

impl Unverifiable {
    /// Why, for a person.
    pub fn reason(self) -> String {
        match self {
            Self::NoDigest => {
                "recorded without a digest by an earlier airlock, so an edit cannot be ruled out".to_string()
            }
            Self::NoKey => {
                format!("its digest is keyed and the site key {INVENTORY_KEY_PATH} is missing or unreadable")
            }
        }
    }
}

/// The site's key for the inventory's digests of secret-bearing files: 32 random
/// bytes, made once per site and kept 0600 in the secrets directory (module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct InventoryKey([u8; 32]);

impl std::fmt::Debug for InventoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InventoryKey(<redacted>)")
    }
}

impl InventoryKey {
    /// The site's key, if one was kept.
    pub fn load(host: &dyn Host) -> Result<Option<Self>> {
        let Some(bytes) = host.read_file(Path::new(INVENTORY_KEY_PATH))? else { return Ok(None) };
        let text = String::from_utf8_lossy(&bytes);
        let raw = hex::decode(text.trim()).ok().and_then(|v| <[u8; 32]>::try_from(v).ok());
        raw.map(|k| Some(Self(k))).ok_or_else(|| {
            Error::corrupt(INVENTORY_KEY_PATH, "is not an inventory key (64 hex digits)")
                .with_hint("restore it from the backup of /var/lib/airlock, or run `airlock install` again")
        })
    }

    /// The kept key, or a new one (which the install's plan then writes first).
    pub fn load_or_generate(host: &dyn Host) -> Result<Self> {
        if let Some(k) = Self::load(host)? {
            return Ok(k);
        }
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| Error::new(airlock_format::ErrorKind::Io, "random", "the system random generator failed"))?;
        Ok(Self(raw))
    }

    /// What the key file holds.
    pub fn file_content(&self) -> Vec<u8> {
        format!("{}\n", hex::encode(self.0)).into_bytes()
    }

    /// The keyed digest of `content` (hex).
    pub fn digest(&self, content: &[u8]) -> String {
        hex::encode(ring::hmac::sign(&self.hmac(), content).as_ref())
    }

    fn hmac(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0)
    }

    /// The keyed digest of a file on the target, streaming; `None` when missing.
    fn file_digest(&self, host: &dyn Host, path: &Path) -> Result<Option<String>> {
        let Some(mut r) = host.open_file(path)? else { return Ok(None) };
        let mut ctx = ring::hmac::Context::with_key(&self.hmac());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut r, &mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(Some(hex::encode(ctx.sign().as_ref())))
    }
}

impl InventoryFile {
    /// Whether the file is as placed. Secret-bearing content is only ever digested with
    /// the site key, never returned or shown.
    pub fn state(&self, host: &dyn Host, key: Option<&InventoryKey>) -> Result<FileState> {
        let Some(meta) = host.metadata(&self.path)? else { return Ok(FileState::Missing) };
        if meta.kind != FileKind::File {
            return Ok(FileState::Replaced);
        }
        let same = match (&self.sha256, &self.hmac_sha256, key) {
            (Some(want), _, _) => crate::host::file_sha256(host, &self.path)?.as_ref() == Some(want),
            (None, Some(want), Some(key)) => key.file_digest(host, &self.path)?.as_ref() == Some(want),
            (None, Some(_), None) => return Ok(FileState::Unverifiable(Unverifiable::NoKey)),
            (None, None, _) => return Ok(FileState::Unverifiable(Unverifiable::NoDigest)),
        };
        Ok(if same { FileState::AsPlaced } else { FileState::Changed })
    }
}

impl Inventory {
    /// The kubectl client of the node this inventory describes; `None` on an agent.
    pub fn kube(&self) -> Option<crate::host::Kube> {
        crate::host::Kube::for_node(&self.distribution, &self.unit, self.runtime_dirs.first().map(PathBuf::as_path))
    }

    /// The inventory of `layout`: secret files with their digest keyed with `key`,
    /// the others with their SHA-256 (`staged_digest` gives a staged entry's).
    pub fn of(
        layout: &Layout,
        distribution: &str,
        unit: &str,
        killall: Option<PathBuf>,
        runtime_dirs: Vec<PathBuf>,
        key: &InventoryKey,
        staged_digest: &dyn Fn(&str) -> Option<Sha256Digest>,
    ) -> Self {
        let files = layout
            .files
            .iter()
            .map(|f| {
                let (sha256, hmac_sha256) = match (&f.source, f.secret) {
                    (FileSource::Inline(bytes), true) => (None, Some(key.digest(bytes))),
                    (FileSource::Inline(bytes), false) => (Some(Sha256Digest::of(bytes)), None),
                    // Secrets are rendered, never staged; were one staged, its plain
                    // digest is the signed manifest's, which ships with the bundle anyway.
                    (FileSource::Staged(entry), _) => (staged_digest(entry), None),
                };
                InventoryFile { path: f.path.clone(), sha256, hmac_sha256 }
            })
            .collect();
        Self {
            version: INVENTORY_VERSION,
            distribution: distribution.to_string(),
            unit: unit.to_string(),
            killall,
            files,
            links: layout.links.iter().map(|l| l.link.clone()).collect(),
            link_targets: layout.links.iter().map(|l| (l.link.clone(), l.target.clone())).collect(),
            dirs: layout.dirs.iter().map(|d| d.path.clone()).collect(),
            units: layout.units.clone(),
            runtime_dirs,
        }
    }

    /// Whether the link at `path` is still the one airlock made: a symlink pointing
    /// where it was recorded to point (or, recorded without a target, any symlink).
    pub fn link_is_ours(&self, host: &dyn Host, path: &Path) -> Result<bool> {
        match host.metadata(path)? {
            Some(m) if m.kind == FileKind::Symlink => Ok(match self.link_targets.get(path) {
                Some(want) => host.read_link(path)?.as_ref() == Some(want),
                None => true,
            }),
            _ => Ok(false),
        }
    }

    /// The inventory as K3s' uninstall script reads it (POSIX sh, no JSON parser): one
    /// `kind value path` line each, in the order to remove them: the files outside the
    /// state directory with their digest (`sha256 <hex>`, `hmac-sha256 <hex>` for
    /// secret-bearing files, keyed with the site key; `unverifiable -` without one),
    /// the links with their target (`link <target>`), then the directories and the
    /// parents of what was placed, deepest first (`dir -`), as `airlock uninstall`
    /// plans them. The path is last, so the script's `read` takes it whole.
    pub fn uninstall_list(&self) -> String {
        let state = Path::new(state::STATE_DIR);
        let mut out = String::from("# What airlock installed, for the uninstall script: kind value path.\n");
        for f in self.files.iter().filter(|f| !f.path.starts_with(state)) {
            let (kind, value) = match (&f.sha256, &f.hmac_sha256) {
                (Some(d), _) => ("sha256", d.hex()),
                (None, Some(h)) => ("hmac-sha256", h.clone()),
                (None, None) => ("unverifiable", "-".to_string()),
            };
            out.push_str(&format!("{kind} {value} {}\n", f.path.display()));
        }
        for l in &self.links {
            let target = self.link_targets.get(l).map(|t| t.display().to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!("link {target} {}\n", l.display()));
        }
        for d in crate::ops::uninstall::dirs_to_remove(self).0 {
            out.push_str(&format!("dir - {}\n", d.display()));
        }
        out
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("an inventory serialises");
        v.push(b'\n');
        v
    }

    /// Records new content airlock itself wrote in place of files of the inventory
    /// (`airlock pki renew`), so status and uninstall compare with that and not with
    /// the original. Files the inventory does not list are left alone; a target
    /// without an inventory is left alone too.
    pub fn record_rewritten(host: &dyn Host, rewritten: &[(&Path, &[u8])]) -> Result<()> {
        if host.read_file(Path::new(state::INVENTORY_PATH))?.is_none() {
            return Ok(());
        }
        let mut inv = Self::load(host)?;
        let key = InventoryKey::load(host)?;
        for (path, content) in rewritten {
            let Some(f) = inv.files.iter_mut().find(|f| f.path == *path) else { continue };
            match (&f.sha256, &key) {
                (Some(_), _) => f.sha256 = Some(Sha256Digest::of(content)),
                (None, Some(k)) => f.hmac_sha256 = Some(k.digest(content)),
                // No key to digest with: say nothing rather than something stale.
                (None, None) => f.hmac_sha256 = None,
            }
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644))?;
        // The uninstall script's copy of the record must agree, or it would keep the
        // rewritten files as "changed since the install".
        let list = Path::new(state::UNINSTALL_LIST_PATH);
        if host.read_file(list)?.is_some() {
            host.write_file(list, &mut inv.uninstall_list().as_bytes(), Perms::mode(0o644))?;
        }
        Ok(())
    }

    /// The inventory on the target, or a clear error when nothing airlock installed is there.
    pub fn load(host: &dyn Host) -> Result<Self> {
        let path = Path::new(state::INVENTORY_PATH);
        let bytes = host.read_file(path)?.ok_or_else(|| {
            Error::input(
                crate::host::shown_path(host.root(), Path::new(state::INVENTORY_PATH)).display().to_string(),
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
