//! Backups of a site for disaster recovery: `airlock backup create` and `airlock
//! backup verify`.
//!
//! A backup is one file, `*.airlock-backup`, in the age format (encrypted to the site's
//! recovery public keys, `backup.recipients` in the answers), holding a zstd-compressed
//! tar of *parts* and, last, `manifest.json` ([`BackupManifest`]): every part's name,
//! kind, size and SHA-256, where it came from, when the backup was taken, of which
//! release, and what was left out and why. The stock tools open it too:
//! `age -d -i recovery.key FILE | zstd -d | tar -t`.
//!
//! - `create.rs`: takes the parts through the host seam (etcd snapshot or SQLite copy,
//!   `pg_dump -Fc` of the app's and Keycloak's databases, the PKI with the CA key, kept
//!   answers and generated secrets, the release record) and streams them into the
//!   encrypted archive: nothing unencrypted is written outside the site's staging
//!   directory, and the archive appears under its final name only once complete and
//!   synced (`FILE.partial` until then).
//! - `verify.rs`: decrypts, checks every part's digest against the manifest, lists each
//!   database dump with `pg_restore --list`, and says what a restore would bring back
//!   and from when; changes nothing.
//! - `schedule.rs`: `airlock backup schedule` (a systemd timer), the record of the
//!   last backup, retention, and the backup's state for `status` and `report`.
//! - `restore.rs`: `airlock restore` — verify, then the PKI and secrets, the same
//!   release from its bundle, the datastore, the databases; journaled and resumable.
//! - `drill.rs`: `airlock restore --drill` — on the running site, each dump restored
//!   into a temporary database, checked and dropped; the record `airlock report` reads.
//!
//! Why a tar with the manifest last: the archive is written in one pass while each
//! part streams through (a dump may be many GiB), so the digests are known only at the
//! end; `verify` reads the whole archive anyway. The age format authenticates every
//! 64 KiB chunk, so a damaged archive fails at the part being read, and `verify` names it.

pub mod buckets;
mod create;
pub mod drill;
mod pipe;
pub mod restore;
pub mod schedule;
mod verify;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use create::{create, CreateOptions, CreateReport};
pub use drill::{drill, ConsistencyCheck, DrillOptions, DrillRecord};
pub use restore::{restore, RestoreOptions, RestoreReport, RestoreStep};
pub use verify::{load_identities, verify, CheckedPart, VerifyOptions, VerifyReport};

use crate::state::ReleaseRecord;

/// The version of the archive layout `manifest.json` describes.
pub const FORMAT_VERSION: u32 = 1;
/// The name of the manifest entry, the archive's last.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// What a backup file's name ends with.
pub const FILE_SUFFIX: &str = ".airlock-backup";
/// Where the site's own backups go when no `-o` is given.
pub const DEFAULT_DIR: &str = crate::state::BACKUPS_DIR;
/// The site's staging for dumps and snapshots on their way into the archive: the one
/// place a part exists unencrypted on disk, inside the 0700 state directory.
pub const STAGING: &str = "/var/lib/airlock/staging/backup";

/// What a part holds; decides how a restore puts it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartKind {
    /// An etcd snapshot taken by the distribution (`k3s|rke2 etcd-snapshot save`).
    EtcdSnapshot,
    /// A file of the SQLite datastore, copied with the distribution stopped.
    SqliteFile,
    /// A PostgreSQL custom-format dump (`pg_dump -Fc`).
    Database,
    /// A file of the site PKI, the CA key included.
    Pki,
    /// The kept answers (secrets apart).
    Answers,
    /// A generated credential or kept secret answer (0600 on the site).
    Secret,
    /// The installed release record (bundle, version, manifest digest).
    Release,
    /// One object of a MinIO bucket the app uses ([`Part::object`] says which).
    Object,
}

impl PartKind {
    /// Whether the part is a datastore.
    pub fn is_datastore(self) -> bool {
        matches!(self, PartKind::EtcdSnapshot | PartKind::SqliteFile)
    }
}

/// One part of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The tar entry's name (`databases/app.dump`, `files/etc/airlock/pki/ca.key`).
    pub name: String,
    pub kind: PartKind,
    /// Where it came from on the site (a file's target path), or the database.
    pub source: String,
    /// The file's mode on the site, for putting it back.
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of the part's bytes, hex.
    pub sha256: String,
    /// Bucket objects: the bucket, key and content type to put it back as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<buckets::ObjectRef>,
}

/// Something a backup left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub part: String,
    pub reason: String,
}

/// `manifest.json`: what the backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    /// When the backup was taken (RFC 3339, UTC).
    pub created: String,
    /// The node it was taken on (its Kubernetes node name).
    pub node: String,
    /// The distribution (`k3s`, `rke2`).
    pub distribution: String,
    /// The installed release; its `manifest_sha256` is the bundle's digest, which a
    /// restore installs again.
    pub release: Option<ReleaseRecord>,
    pub parts: Vec<Part>,
    pub skipped: Vec<Skipped>,
    /// The MinIO buckets mirrored, each with its object count and bytes (an empty
    /// bucket has no part, but is here, so a restore makes it again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<buckets::BucketEntry>,
    /// Each command run to take the parts, as argv joined by spaces (names and paths
    /// only: no secret is ever on a command line).
    pub commands: Vec<String>,
}

impl BackupManifest {
    /// The part named `name`.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// A recovery public key from the answers: an age X25519 public key (`age1...`). The
/// cause in words when it is not one.
///
/// X25519, although the age crate now prefers its post-quantum hybrid keys: a backup
/// must open with the `age` the recovery site has at hand, and Debian's age 1.1 (and
/// every age before 1.3) reads X25519 only.
#[allow(deprecated)]
pub fn parse_recipient(s: &str) -> std::result::Result<age::x25519::Recipient, String> {
    let s = s.trim();
    if s.starts_with("AGE-SECRET-KEY-") {
        // Never echo it: it is the key that opens every backup.
        return Err("is an age secret key, not a public key".into());
    }
    s.parse::<age::x25519::Recipient>().map_err(|e| format!("`{s}` is not an age public key (age1...): {e}"))
}

/// The default file name of a backup taken at `created` (RFC 3339) on `node`.
pub fn file_name(node: &str, created: &str) -> String {
    let stamp: String = created.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{node}-{stamp}{FILE_SUFFIX}")
}

/// Seconds since the epoch of an RFC 3339 UTC time as the records write it
/// (`2026-12-07T18:00:00Z`); `None` for anything else.
pub fn unix_of(rfc3339: &str) -> Option<u64> {
    let b = rfc3339.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| rfc3339.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(n(5..7)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(8..10)? as u8).ok()?;
    let t = time::Time::from_hms(n(11..13)? as u8, n(14..16)? as u8, n(17..19)? as u8).ok()?;
    u64::try_from(date.with_time(t).assume_utc().unix_timestamp()).ok()
}

/// Where the default backups of the site at `root` are, as the operator finds them.
pub fn default_dir_at(root: &std::path::Path) -> PathBuf {
    crate::host::shown_path(root, std::path::Path::new(DEFAULT_DIR))
}

/// Hashes and counts what passes through, and reports progress: creating and verifying
/// a backup both check each part as it streams, never in a second pass.
struct Counted<'a, R> {
    inner: R,
    hasher: airlock_format::digest::Sha256Hasher,
    len: u64,
    reporter: &'a dyn airlock_format::report::Reporter,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        self.reporter.event(airlock_format::report::Event::Progress { bytes: n as u64 });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn backup_recipient_must_be_an_age_public_key_and_a_secret_key_is_never_echoed() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        assert!(parse_recipient(&public).is_ok());
        assert!(parse_recipient("age1notakey").unwrap_err().contains("not an age public key"));
        let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
        let e = parse_recipient(&secret).unwrap_err();
        assert!(!e.contains(&secret[15..]), "{e}");
    }

    #[test]
    fn backup_times_read_back_as_the_records_write_them() {
        for t in [0, 1_765_130_400, 4_102_444_799] {
            assert_eq!(unix_of(&airlock_format::manifest::rfc3339(t)), Some(t));
        }
        assert_eq!(unix_of("yesterday"), None);
    }

    #[test]
    fn backup_file_name_names_node_and_time() {
        assert_eq!(file_name("node-1", "2026-12-07T18:00:00Z"), "node-1-20261207T180000Z.airlock-backup");
    }
}
