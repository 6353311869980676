//! Everything Airlock keeps on a site, and where: the one owner of every path under
//! `/etc/airlock` and `/var/lib/airlock`. Other modules ask here for a path or a record
//! instead of spelling one; a newcomer finds what a site holds in this folder alone.
//!
//! - `/etc/airlock`: the site's trust ([`KEY_DIR`], [`REVOKED_PATH`]) and its PKI
//!   ([`PKI_DIR`]) — configuration an operator may look at and back up.
//! - `/var/lib/airlock`: what the installer records — the install journal, the
//!   [`ReleaseRecord`], the [`Inventory`], the kept answers and generated secrets, the
//!   upgrade journal, the release store ([`releases`]), backups and staging.
//!
//! Every read and write of these goes through the host seam ([`crate::host::Host`]), so
//! a target root maps them and the recording double sees them.

pub mod inventory;
pub mod release;
pub mod releases;

use std::path::{Path, PathBuf};

pub use inventory::{FileState, Inventory, InventoryFile, InventoryKey, Unverifiable};
pub use release::ReleaseRecord;

// --- /etc/airlock ------------------------------------------------------------------
/// The site's configuration directory.
pub const ETC_DIR: &str = "/etc/airlock";
/// Vendor keys the site trusts (beside `--pubkey`), and the statements it applied.
pub const KEY_DIR: &str = "/etc/airlock/keys";
/// Key ids the site refuses, even when given with `--pubkey`.
pub const REVOKED_PATH: &str = "/etc/airlock/keys/revoked.json";
/// The site PKI: the CA and the platform's leaf certificates.
pub const PKI_DIR: &str = "/etc/airlock/pki";
/// The site CA certificate clients trust.
pub const CA_CERT: &str = "/etc/airlock/pki/ca.crt";
/// The site CA key (0600; self-signed mode only).
pub const CA_KEY: &str = "/etc/airlock/pki/ca.key";
/// What the PKI issued and from which answers (`airlock pki status|renew`).
pub const PKI_STATE_FILE: &str = "/etc/airlock/pki/pki.json";
/// Where a joining node reads the cluster token unless the answers say otherwise.
pub const DEFAULT_JOIN_TOKEN_FILE: &str = "/etc/airlock/join-token";

// --- /var/lib/airlock --------------------------------------------------------------
/// The installer's state directory (the install journal and lock live here).
pub const STATE_DIR: &str = "/var/lib/airlock";
/// Where bundles are verified to before anything is installed from them.
pub const STAGING_DIR: &str = "/var/lib/airlock/staging";
/// The install's staging directory (verified again on every run).
pub const INSTALL_STAGING: &str = "/var/lib/airlock/staging/current";
/// Where an upgrade's bundle is verified to, apart from the kept releases.
pub const UPGRADE_STAGING: &str = "/var/lib/airlock/staging/upgrade";
/// Generated credentials and kept secret answers, each its own 0600 file.
pub const SECRETS_DIR: &str = "/var/lib/airlock/secrets";
/// The site's inventory key: what the inventory's digests of secret-bearing files are
/// keyed with ([`inventory`] says why). 0600, like every file here.
pub const INVENTORY_KEY_PATH: &str = "/var/lib/airlock/secrets/inventory-key";
/// The cluster token the first server generates.
pub const CLUSTER_TOKEN_PATH: &str = "/var/lib/airlock/secrets/cluster-token";
/// Prefix of the files in [`SECRETS_DIR`] holding kept secret answers
/// (`answers-ldap.bind_password`).
pub const SECRET_ANSWER_PREFIX: &str = "answers-";
/// The install report (URLs, where the CA and credentials are).
pub const REPORT_PATH: &str = "/var/lib/airlock/report.json";
/// The installed release ([`ReleaseRecord`]).
pub const RELEASE_PATH: &str = "/var/lib/airlock/release.json";
/// What the install placed ([`Inventory`]).
pub const INVENTORY_PATH: &str = "/var/lib/airlock/installed.json";
/// The answers the install was made with, secrets apart.
pub const KEPT_ANSWERS_PATH: &str = "/var/lib/airlock/answers.yaml";
/// The upgrade journal.
pub const UPGRADE_JOURNAL_PATH: &str = "/var/lib/airlock/upgrade.json";
/// Every release kept whole, for upgrades and rollback.
pub const RELEASES_DIR: &str = "/var/lib/airlock/releases";
/// Backups taken before an upgrade.
pub const BACKUPS_DIR: &str = "/var/lib/airlock/backups";

/// The records a backup keeps besides the PKI and the keys (the install journal is
/// not one: it describes the run, not the site).
pub const BACKED_UP_RECORDS: [&str; 5] = [INVENTORY_PATH, RELEASE_PATH, REPORT_PATH, KEPT_ANSWERS_PATH, SECRETS_DIR];
/// The upgrade's lock (apart from the install's, which the engine takes in
/// [`STATE_DIR`]).
pub const UPGRADE_LOCK_PATH: &str = "/var/lib/airlock/upgrade.lock";

/// The install journal (`journal.json` in [`STATE_DIR`]).
pub fn install_journal() -> PathBuf {
    crate::engine::Journal::path(Path::new(STATE_DIR))
}

/// The file in [`SECRETS_DIR`] that keeps the secret answer `key`.
pub fn secret_answer_path(key: &str) -> PathBuf {
    Path::new(SECRETS_DIR).join(format!("{SECRET_ANSWER_PREFIX}{key}"))
}

/// Now, as the records write it (RFC 3339, UTC).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    airlock_format::manifest::rfc3339(secs)
}
