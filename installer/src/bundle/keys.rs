//! The site's vendor keys over time: key statements from verified bundles applied to
//! the site key directory, and the revocation list that [`crate::bundle::trust`] consults.
//!
//! A bundle is verified first, with keys the site already trusts (never with a key the
//! bundle names). Only then are its key statements ([`airlock_format::key_statement`])
//! considered, in sequence order, against a trust set that starts as the site's keys
//! plus the key that signed the bundle and changes as each statement applies:
//!
//! - a statement at or below the site's recorded sequence was applied before: skipped
//!   (that is what makes replaying an old bundle harmless);
//! - a statement whose effect already holds (introduces a key already trusted, or
//!   retires a key already on the revocation list) is skipped, so a fresh site can take
//!   a bundle that carries the vendor's key history forward;
//! - any other statement must be signed by a key in the trust set, or the **whole
//!   install is refused** (exit 3) before anything changes. Fail closed: a statement the
//!   site cannot verify means the site missed part of the vendor's key history, and
//!   ignoring it could leave the site trusting a key the vendor has revoked;
//! - no statement may retire or revoke the key that signed the bundle carrying it, and
//!   a revoked key is never introduced again.
//!
//! The outcome is one plan step ([`statement_steps`]): new `<ID>.pub` files (0644),
//! removal of every key file whose key is retired or revoked, and `revoked.json` written
//! last, as the commit point, so a run that crashes in between is re-planned from the
//! same state and converges.

use crate::state;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use airlock_format::key_statement::{KeyAction, KeyStatement, MAX_STATEMENT_BYTES};
use airlock_format::minisign::{self, PublicKey, Signature};
use serde::{Deserialize, Serialize};

use crate::bundle::staging::Staged;
use crate::engine::{Step, StepState};
use crate::host::{FileKind, Host, Perms};

/// The `format` of the revocation list.
pub const REVOKED_FORMAT_V1: &str = "airlock.revoked-keys/v1";
/// The plan step's id.
pub const STEP_ID: &str = "keys/statements";

/// Keys this site no longer trusts, and how far into the vendor's key history it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub format: String,
    /// The highest key statement sequence this site applied.
    pub sequence: u64,
    pub keys: Vec<RevokedKey>,
}

/// One retired or revoked key and the statement that took it out of trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedKey {
    pub key_id: String,
    /// `retire` or `revoke`.
    pub action: KeyAction,
    pub sequence: u64,
    /// When the statement was made.
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The bundle that carried the statement (`name version`).
    pub bundle: String,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self { format: REVOKED_FORMAT_V1.into(), sequence: 0, keys: Vec::new() }
    }
}

impl RevocationList {
    /// Parses the list; `subject` names the file in errors. A list that cannot be read
    /// is an error, never an empty list: trust must not widen because a file is damaged.
    pub fn from_bytes(bytes: &[u8], subject: &str) -> Result<Self> {
        let l: RevocationList = serde_json::from_slice(bytes).map_err(|e| {
            Error::signature(subject, format!("the vendor key revocation list cannot be read: {e}")).with_hint(
                "restore it from a backup (or the last bundle's key statements); bundles are refused until then",
            )
        })?;
        if l.format != REVOKED_FORMAT_V1 {
            return Err(Error::signature(subject, format!("format `{}` is not `{REVOKED_FORMAT_V1}`", l.format))
                .with_hint("use an installer at least as new as the one that wrote it"));
        }
        Ok(l)
    }

    /// Reads the site's list ([`state::REVOKED_PATH`]) through the host. Missing: an
    /// empty list (a site no statement has reached). Anything else that is not a
    /// readable, valid file — a directory, a symlink (dangling or not: Airlock writes a
    /// plain file), unreadable bytes — fails closed as a signature error (exit 3):
    /// trust must never widen because the list is damaged.
    pub fn load(host: &dyn Host) -> Result<Self> {
        let path = Path::new(state::REVOKED_PATH);
        let subject = crate::host::shown_path(host.root(), path).display().to_string();
        let refuse = |cause: String| {
            Error::signature(&subject, cause).with_hint(
                "restore the list from a backup (or move what is there aside if no key statement ever reached \
                 this site); bundles are refused until then",
            )
        };
        match host.metadata(path) {
            Ok(None) => Ok(Self::default()),
            Ok(Some(m)) if m.kind == FileKind::File => match host.read_file(path) {
                Ok(Some(b)) => Self::from_bytes(&b, &subject),
                Ok(None) => Err(refuse("the vendor key revocation list vanished while it was read".into())),
                Err(e) => Err(refuse(format!("the vendor key revocation list cannot be read: {}", e.cause))),
            },
            Ok(Some(m)) => {
                let what = match m.kind {
                    FileKind::Dir => "a directory",
                    FileKind::Symlink => "a symbolic link",
                    _ => "not a regular file",
                };
                Err(refuse(format!("the vendor key revocation list is {what}, not the file Airlock writes")))
            }
            Err(e) => Err(refuse(format!("the vendor key revocation list cannot be read: {}", e.cause))),
        }
    }

    /// [`RevocationList::load`] under target root `root`; a root that does not exist
    /// yet (an install that will make it) has no list.
    pub fn load_at(root: &Path) -> Result<Self> {
        if std::fs::symlink_metadata(root).is_err() {
            return Ok(Self::default());
        }
        Self::load(&crate::host::RootedHost::new(root.to_path_buf(), false)?)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("revocation list serializes");
        v.push(b'\n');
        v
    }

    /// The entry for `key_id`, however its hex digits are cased (a list edited by hand
    /// may spell them in lowercase).
    pub fn find(&self, key_id: &str) -> Option<&RevokedKey> {
        self.keys.iter().find(|k| k.key_id.eq_ignore_ascii_case(key_id))
    }
}

/// The refusal of a revoked key: names the key, the statement and what to do.
/// (`root`: the target root, so the hint names the directories as the operator sees them.)
pub fn revoked_key_error(k: &RevokedKey, source: &str, root: &Path) -> Error {
    let how = match k.action {
        KeyAction::Revoke => "was revoked (compromised)",
        _ => "was retired",
    };
    let reason = k.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    Error::signature(
        format!("vendor key {}", k.key_id),
        format!(
            "{how} by key statement #{} of {} in bundle {}{reason}; this site refuses it (given as {source})",
            k.sequence, k.created, k.bundle
        ),
    )
    .with_hint(format!(
        "use a bundle signed by the vendor's current key (the keys this site trusts are in {}); the \
         revocation is recorded in {}",
        state::key_dir_at(root).display(),
        crate::host::shown_path(root, Path::new(state::REVOKED_PATH)).display()
    ))
}

/// The site key store as found on the target.
#[derive(Clone, Debug, Default)]
pub struct SiteKeys {
    /// Every `*.pub` file of the key directory (target path) and its key.
    pub keys: Vec<(PathBuf, PublicKey)>,
    pub revoked: RevocationList,
}

impl SiteKeys {
    /// Reads the key directory and the revocation list below the host's root.
    pub fn read(host: &dyn Host) -> Result<Self> {
        let dir = host.root().join(state::KEY_DIR.trim_start_matches('/'));
        let mut keys = Vec::new();
        // Listing is a read; the seam has no directory listing and changes go through it.
        if dir.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.ends_with(".pub"))
                .collect();
            names.sort();
            for n in names {
                let target = Path::new(state::KEY_DIR).join(&n);
                let Some(bytes) = host.read_file(&target)? else { continue };
                let key = PublicKey::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| e.within(target.display()))?;
                keys.push((target, key));
            }
        }
        let revoked = RevocationList::load(host)?;
        Ok(Self { keys, revoked })
    }
}

/// A key statement read from a verified bundle, with its own signature.
#[derive(Clone, Debug)]
pub struct CarriedStatement {
    /// The bundle entry it came from.
    pub path: String,
    pub statement: KeyStatement,
    pub bytes: Vec<u8>,
    pub signature: Signature,
}

/// Reads the staged bundle's key statements and checks each against its manifest line.
pub fn read_statements(staged: &Staged) -> Result<Vec<CarriedStatement>> {
    let mut out = Vec::new();
    for r in &staged.manifest.key_statements {
        let read = |entry: &str| -> Result<Vec<u8>> {
            let size = staged.manifest.entry(entry).map(|e| e.size).unwrap_or(0);
            if size > MAX_STATEMENT_BYTES {
                return Err(Error::corrupt(entry, format!("is {size} bytes; a key statement is far smaller")));
            }
            let p = staged.path(entry);
            std::fs::read(&p).map_err(|e| Error::io(&p, e))
        };
        let bytes = read(&r.path)?;
        let statement = KeyStatement::from_bytes(&bytes, &r.path)?;
        r.check_matches(&statement)?;
        let signature =
            Signature::parse(&String::from_utf8_lossy(&read(&r.signature)?)).map_err(|e| e.within(&r.signature))?;
        out.push(CarriedStatement { path: r.path.clone(), statement, bytes, signature });
    }
    Ok(out)
}

/// What the statements change at this site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyChanges {
    /// Keys to trust from now on.
    #[serde(skip)]
    pub introduce: Vec<PublicKey>,
    /// Key files (target paths) to remove: their keys are retired or revoked.
    pub remove: Vec<PathBuf>,
    /// The revocation list after the statements.
    #[serde(skip)]
    pub revoked: RevocationList,
    /// Statements applied (`#1 introduce <ID>`).
    pub applied: Vec<String>,
    /// Statements skipped, and why.
    pub skipped: Vec<String>,
    /// The key that verified this bundle (given with `--pubkey`), kept in the key
    /// directory because no key file there holds it: later commands trust it without
    /// `--pubkey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_signer: Option<String>,
}

impl KeyChanges {
    /// The target path a newly trusted key is written to.
    pub fn key_path(key: &PublicKey) -> PathBuf {
        Path::new(state::KEY_DIR).join(format!("{}.pub", key.key_id_hex()))
    }
}

/// Applies `statements` (from a bundle named `bundle`, signed by `signer`) to the site's
/// key store, in memory; see the module docs for the rules. Errors are signature errors
/// (exit 3) that name the statement.
pub fn apply_statements(
    statements: &[CarriedStatement],
    signer: &PublicKey,
    site: &SiteKeys,
    bundle: &str,
) -> Result<KeyChanges> {
    // `store`: the keys the site's key directory holds (and will hold); `trusted`: those
    // plus the bundle's signer, which this install trusts however it was given.
    let mut store: Vec<PublicKey> =
        site.keys.iter().map(|(_, k)| *k).filter(|k| site.revoked.find(&k.key_id_hex()).is_none()).collect();
    let mut trusted = store.clone();
    if !trusted.contains(signer) {
        trusted.push(*signer);
    }
    let mut changes = KeyChanges { revoked: site.revoked.clone(), ..KeyChanges::default() };
    let mut last = 0;
    for c in statements {
        let s = &c.statement;
        let label = s.label();
        if s.sequence <= last {
            return Err(Error::corrupt(&c.path, format!("statement {label} is out of sequence order")));
        }
        last = s.sequence;
        if s.sequence <= site.revoked.sequence {
            changes.skipped.push(format!("{label}: applied before (this site is at #{})", site.revoked.sequence));
            continue;
        }
        let holds = match s.action {
            KeyAction::Introduce => store.iter().any(|k| k.key_id_hex() == s.key_id),
            _ => changes.revoked.find(&s.key_id).is_some(),
        };
        if holds {
            changes.skipped.push(format!("{label}: already in effect here"));
            continue;
        }
        if let Err(e) = minisign::verify(&trusted, &c.signature, &c.bytes) {
            // Introducing the key this install already trusts (given with --pubkey) by a
            // statement from a key this site never knew: nothing to learn, nothing widened.
            if s.action == KeyAction::Introduce && s.key_id == signer.key_id_hex() {
                changes.skipped.push(format!(
                    "{label}: signed by {}, unknown here; the key it introduces verified this bundle and is kept as such",
                    c.signature.key_id_hex()
                ));
                continue;
            }
            let names: Vec<String> = trusted.iter().map(PublicKey::key_id_hex).collect();
            return Err(Error::signature(
                &c.path,
                format!(
                    "key statement {label} is not signed by a key this site trusts (signed by {}; trusted: {}): {}",
                    c.signature.key_id_hex(),
                    names.join(", "),
                    e.cause
                ),
            )
            .with_hint(format!(
                "nothing was changed; this site missed part of the vendor's key history: install the bundle that \
                 introduced key {} first, or ask the vendor",
                c.signature.key_id_hex()
            )));
        }
        match s.action {
            KeyAction::Introduce => {
                if let Some(r) = changes.revoked.find(&s.key_id) {
                    return Err(Error::signature(
                        &c.path,
                        format!("key statement {label} would trust again key {} that statement #{} took out of trust", s.key_id, r.sequence),
                    )
                    .with_hint("a retired or revoked key never comes back; ask the vendor for a bundle signed by its current key"));
                }
                let key = s.public_key()?.expect("validated: introduce carries the key");
                if !trusted.contains(&key) {
                    trusted.push(key);
                }
                store.push(key);
                changes.introduce.push(key);
            }
            KeyAction::Retire | KeyAction::Revoke => {
                if s.key_id == signer.key_id_hex() {
                    return Err(Error::signature(
                        &c.path,
                        format!("key statement {label} {}s the key that signed this bundle", s.action),
                    )
                    .with_hint("a bundle may not take its own signing key out of trust; ask the vendor for a bundle signed by its next key"));
                }
                trusted.retain(|k| k.key_id_hex() != s.key_id);
                store.retain(|k| k.key_id_hex() != s.key_id);
                changes.introduce.retain(|k| k.key_id_hex() != s.key_id);
                changes.revoked.keys.push(RevokedKey {
                    key_id: s.key_id.clone(),
                    action: s.action,
                    sequence: s.sequence,
                    created: s.created.clone(),
                    reason: s.reason.clone(),
                    bundle: bundle.to_string(),
                });
            }
        }
        changes.revoked.sequence = s.sequence;
        changes.applied.push(label);
    }
    // Every file of a key out of trust goes, also one put back by hand since.
    let out: BTreeSet<&str> = changes.revoked.keys.iter().map(|k| k.key_id.as_str()).collect();
    changes.remove =
        site.keys.iter().filter(|(_, k)| out.contains(k.key_id_hex().as_str())).map(|(p, _)| p.clone()).collect();
    Ok(changes)
}

/// The plan step that applies the staged bundle's key statements to the site key store
/// and keeps the key that verified the bundle there (the operator gave it with
/// `--pubkey`: it is the vendor's, and the next upgrade needs it); none when there is
/// nothing to change. Refuses (exit 3) a bundle whose statements this site cannot
/// accept, before anything changes.
pub fn statement_steps(staged: &Staged, host: &dyn Host) -> Result<Vec<Box<dyn Step>>> {
    let site = SiteKeys::read(host)?;
    let mut changes = if staged.manifest.key_statements.is_empty() {
        KeyChanges { revoked: site.revoked.clone(), ..KeyChanges::default() }
    } else {
        let statements = read_statements(staged)?;
        let bundle = format!("{} {}", staged.manifest.name, staged.manifest.version);
        apply_statements(&statements, &staged.signer, &site, &bundle)?
    };
    // Kept where this step keeps it, also when a run before (crashed or not) wrote it
    // already: the plan is the same on every run, the step then satisfied.
    let signer = staged.signer;
    let path = KeyChanges::key_path(&signer);
    let trusted = site.keys.iter().any(|(_, k)| *k == signer);
    let ours = site.keys.iter().any(|(p, k)| *p == path && *k == signer);
    if (!trusted || ours) && !changes.introduce.contains(&signer) {
        changes.kept_signer = Some(signer.key_id_hex());
        changes.introduce.push(signer);
    }
    if staged.manifest.key_statements.is_empty() && changes.introduce.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Box::new(KeyStoreStep::new(&site, changes))])
}

/// Where the key that verified `staged` is kept in the site key directory once its
/// plan is applied (`<ID>.pub`), when it is kept there: what the inventory records
/// of the site's trust, so an uninstall takes it away with the rest.
pub fn kept_signer_file(staged: &Staged, host: &dyn Host) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = KeyChanges::key_path(&staged.signer);
    let site = SiteKeys::read(host)?;
    let ours = site.keys.iter().any(|(p, k)| *p == path && *k == staged.signer);
    let trusted = site.keys.iter().any(|(_, k)| *k == staged.signer);
    Ok((ours || !trusted).then(|| (path, staged.signer.to_text().into_bytes())))
}

/// Writes the new key files, removes those out of trust, then writes the revocation
/// list (the commit point).
pub struct KeyStoreStep {
    changes: KeyChanges,
    writes: Vec<(PathBuf, Vec<u8>)>,
    undo: Mutex<Option<Vec<Before>>>,
}

/// A path and its content before this run applied (`None`: it did not exist), for
/// rollback. Key files and the revocation list are small and hold no secret.
type Before = (PathBuf, Option<Vec<u8>>);

impl KeyStoreStep {
    fn new(site: &SiteKeys, changes: KeyChanges) -> Self {
        let mut writes: Vec<(PathBuf, Vec<u8>)> =
            changes.introduce.iter().map(|k| (KeyChanges::key_path(k), k.to_text().into_bytes())).collect();
        if changes.revoked != site.revoked || !changes.remove.is_empty() {
            writes.push((PathBuf::from(state::REVOKED_PATH), changes.revoked.to_bytes()));
        }
        Self { changes, writes, undo: Mutex::default() }
    }

    /// What the step does, for the plan and tests.
    pub fn changes(&self) -> &KeyChanges {
        &self.changes
    }
}

impl Step for KeyStoreStep {
    fn id(&self) -> &str {
        STEP_ID
    }

    /// With the records: the site trusts a new key only once the release is in place.
    fn group(&self) -> crate::engine::layout::StepGroup {
        crate::engine::layout::StepGroup::Records
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.changes.applied.is_empty() {
            parts.push(format!("apply key statements {}", self.changes.applied.join(", ")));
        }
        if !self.changes.skipped.is_empty() {
            parts.push(format!("skip {}", self.changes.skipped.join(", ")));
        }
        if let Some(id) = &self.changes.kept_signer {
            parts.push(format!("keep key {id}, which verified this bundle, for later commands"));
        }
        format!(
            "vendor keys in {}: {}",
            state::KEY_DIR,
            if parts.is_empty() { "no change".into() } else { parts.join("; ") }
        )
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let mut todo = Vec::new();
        for (path, bytes) in &self.writes {
            let meta = host.metadata(path)?;
            match meta {
                Some(m) if m.kind == FileKind::File => {
                    if host.read_file(path)?.as_deref() != Some(bytes.as_slice()) || m.mode != 0o644 {
                        todo.push(format!("update {}", path.display()));
                    }
                }
                Some(_) => {
                    return Ok(StepState::Blocked {
                        reason: format!("{} is not a regular file", path.display()),
                        hint: format!("move {} aside, then run again", path.display()),
                    })
                }
                None => todo.push(format!("write {}", path.display())),
            }
        }
        for path in &self.changes.remove {
            if host.metadata(path)?.is_some() {
                todo.push(format!("remove {}", path.display()));
            }
        }
        Ok(if todo.is_empty() { StepState::Satisfied } else { StepState::Pending { change: todo.join("; ") } })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        let (revoked, keys): (Vec<_>, Vec<_>) =
            self.writes.iter().partition(|(p, _)| p == Path::new(state::REVOKED_PATH));
        let mut undo = Vec::new();
        for path in keys.iter().map(|(p, _)| p).chain(&self.changes.remove).chain(revoked.iter().map(|(p, _)| p)) {
            undo.push((path.clone(), host.read_file(path)?));
        }
        *self.undo.lock().unwrap_or_else(|p| p.into_inner()) = Some(undo);
        for (path, bytes) in &keys {
            host.write_file(path, &mut bytes.as_slice(), Perms::mode(0o644))?;
        }
        for path in &self.changes.remove {
            host.remove(path)?;
        }
        for (path, bytes) in &revoked {
            host.write_file(path, &mut bytes.as_slice(), Perms::mode(0o644))?;
        }
        Ok(())
    }

    fn rollback(&self, host: &dyn Host) -> Result<bool> {
        let Some(undo) = self.undo.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(false) };
        for (path, before) in undo.iter().rev() {
            match before {
                Some(bytes) => host.write_file(path, &mut bytes.as_slice(), Perms::mode(0o644)).map(|_| ())?,
                None => host.remove(path)?,
            }
        }
        Ok(true)
    }

    fn begin(&self, _run: &crate::engine::RunContext) {
        *self.undo.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use crate::host::RootedHost;
    use airlock_format::minisign::SecretKey;
    use airlock_format::ErrorKind;

    fn statement(signer: &SecretKey, s: KeyStatement) -> CarriedStatement {
        let (bytes, sig) = s.sign(signer).unwrap();
        CarriedStatement { path: s.entry_path(), statement: s, bytes, signature: sig }
    }
    fn introduce(seq: u64, signer: &SecretKey, key: &SecretKey) -> CarriedStatement {
        statement(signer, KeyStatement::introduce(seq, "2026-11-22T00:00:00Z".into(), &key.public_key(), None))
    }
    fn remove(seq: u64, action: KeyAction, signer: &SecretKey, key: &SecretKey) -> CarriedStatement {
        let s = KeyStatement::remove(action, seq, "2026-11-22T00:00:00Z".into(), key.key_id_hex(), None, None);
        statement(signer, s)
    }
    fn site(keys: &[&SecretKey]) -> SiteKeys {
        SiteKeys {
            keys: keys.iter().map(|k| (KeyChanges::key_path(&k.public_key()), k.public_key())).collect(),
            revoked: RevocationList::default(),
        }
    }

    fn revoked_entry(key_id: &str) -> RevokedKey {
        RevokedKey {
            key_id: key_id.into(),
            action: KeyAction::Revoke,
            sequence: 1,
            created: "2026-11-22T00:00:00Z".into(),
            reason: None,
            bundle: "demo 1".into(),
        }
    }

    #[test]
    fn a_hand_written_key_id_matches_in_any_case() {
        let k = SecretKey::generate().unwrap();
        let id = k.key_id_hex();
        let list = RevocationList { keys: vec![revoked_entry(&id.to_ascii_lowercase())], ..RevocationList::default() };
        assert!(list.find(&id).is_some() && list.find(&id.to_ascii_uppercase()).is_some());
    }

    #[test]
    fn a_revocation_list_that_is_not_a_readable_file_fails_closed_with_the_signature_code() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let path = root.join(state::REVOKED_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let host = RootedHost::new(root.to_path_buf(), false).unwrap();
        assert_eq!(RevocationList::load(&host).unwrap(), RevocationList::default(), "missing: no statement yet");
        let check = |what: &str| {
            let e = RevocationList::load(&host).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Signature, "{what}: {e}");
            assert!(e.subject.ends_with("etc/airlock/keys/revoked.json") && e.hint.is_some(), "{what}: {e}");
            assert!(RevocationList::load_at(root).is_err(), "{what}");
        };
        std::os::unix::fs::symlink("/nonexistent/revoked.json", &path).unwrap();
        check("a dangling symlink");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        check("a symlink to a file");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        check("a directory");
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        check("damaged bytes");
        std::fs::write(&path, RevocationList::default().to_bytes()).unwrap();
        assert_eq!(RevocationList::load(&host).unwrap(), RevocationList::default());
        assert_eq!(RevocationList::load_at(&root.join("not-made-yet")).unwrap(), RevocationList::default());
    }

    #[test]
    fn introduce_signed_by_the_bundle_signer_trusts_the_next_key() {
        let (k1, k2) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let c = apply_statements(&[introduce(1, &k1, &k2)], &k1.public_key(), &SiteKeys::default(), "b 1").unwrap();
        assert_eq!(c.introduce, vec![k2.public_key()]);
        assert_eq!(c.revoked.sequence, 1);
        assert!(c.revoked.keys.is_empty());
    }

    #[test]
    fn statement_signed_by_an_untrusted_key_refuses_the_bundle() {
        let (k1, k2, x) =
            (SecretKey::generate().unwrap(), SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let e = apply_statements(&[introduce(1, &x, &k2)], &k1.public_key(), &site(&[&k1]), "b 1").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signature);
        assert!(e.cause.contains(&x.key_id_hex()) && e.hint.is_some(), "{e}");
    }

    #[test]
    fn a_bundle_cannot_retire_or_revoke_its_own_signing_key() {
        let k1 = SecretKey::generate().unwrap();
        for action in [KeyAction::Retire, KeyAction::Revoke] {
            let e = apply_statements(&[remove(1, action, &k1, &k1)], &k1.public_key(), &site(&[&k1]), "b").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Signature);
            assert!(e.cause.contains("the key that signed this bundle"), "{e}");
        }
    }

    #[test]
    fn revoke_removes_the_key_file_and_records_it_and_a_replayed_introduce_changes_nothing() {
        let (k1, k2) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let mut s = site(&[&k1, &k2]);
        let c = apply_statements(&[remove(2, KeyAction::Revoke, &k2, &k1)], &k2.public_key(), &s, "c 1").unwrap();
        assert_eq!(c.remove, vec![KeyChanges::key_path(&k1.public_key())]);
        assert_eq!(c.revoked.find(&k1.key_id_hex()).unwrap().action, KeyAction::Revoke);
        s.keys.retain(|(_, k)| *k == k2.public_key());
        s.revoked = c.revoked;
        // The old statement that introduced k1 (#1) is below the site's sequence.
        let again = apply_statements(&[introduce(1, &k2, &k1)], &k2.public_key(), &s, "old").unwrap();
        assert!(again.introduce.is_empty() && again.skipped.len() == 1, "{again:?}");
        // A new statement may not bring it back either.
        let e = apply_statements(&[introduce(3, &k2, &k1)], &k2.public_key(), &s, "new").unwrap_err();
        assert!(e.cause.contains("took out of trust"), "{e}");
    }

    #[test]
    fn a_fresh_site_skips_carried_statements_already_in_effect_without_verifying_them() {
        let (k1, k2) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        // Site trusts only k2 (given with --pubkey); #1 was signed by k1, unknown here.
        let c = apply_statements(
            &[introduce(1, &k1, &k2), remove(2, KeyAction::Retire, &k2, &k1)],
            &k2.public_key(),
            &SiteKeys::default(),
            "b 2",
        )
        .unwrap();
        assert_eq!(c.applied, vec![format!("#2 retire {}", k1.key_id_hex())]);
        assert_eq!(c.revoked.sequence, 2);
    }

    #[test]
    fn key_store_step_applies_is_then_satisfied_and_rolls_back_to_the_previous_files() {
        let d = tempfile::tempdir().unwrap();
        let host = RootedHost::new(d.path().to_path_buf(), false).unwrap();
        let (k1, k2) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let k1_path = KeyChanges::key_path(&k1.public_key());
        host.write_file(&k1_path, &mut k1.public_key().to_text().as_bytes(), Perms::mode(0o644)).unwrap();
        let s = SiteKeys::read(&host).unwrap();
        assert_eq!(s.keys.len(), 1);
        let changes = apply_statements(
            &[introduce(1, &k1, &k2), remove(2, KeyAction::Retire, &k2, &k1)],
            &k2.public_key(),
            &s,
            "b",
        );
        // k2 signs the bundle, so it may retire k1, which introduced it.
        let step = KeyStoreStep::new(&s, changes.unwrap());
        assert!(matches!(step.check(&host).unwrap(), StepState::Pending { .. }));
        step.apply(&host).unwrap();
        assert_eq!(step.check(&host).unwrap(), StepState::Satisfied);
        let on_disk = SiteKeys::read(&host).unwrap();
        assert_eq!(on_disk.keys.iter().map(|(_, k)| *k).collect::<Vec<_>>(), vec![k2.public_key()]);
        assert_eq!(on_disk.revoked.find(&k1.key_id_hex()).unwrap().action, KeyAction::Retire);
        let mode = std::fs::metadata(d.path().join(state::REVOKED_PATH.trim_start_matches('/'))).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o644);
        assert!(step.rollback(&host).unwrap());
        let back = SiteKeys::read(&host).unwrap();
        assert_eq!(back.keys.iter().map(|(_, k)| *k).collect::<Vec<_>>(), vec![k1.public_key()]);
        assert_eq!(back.revoked, RevocationList::default());
    }

    #[test]
    fn trust_refuses_a_revoked_key_even_from_the_command_line() {
        let d = tempfile::tempdir().unwrap();
        let k1 = SecretKey::generate().unwrap();
        let pubfile = d.path().join("k1.pub");
        std::fs::write(&pubfile, k1.public_key().to_text()).unwrap();
        assert!(crate::bundle::trust::trusted_keys(std::slice::from_ref(&pubfile), d.path()).is_ok());
        let mut list = RevocationList { sequence: 2, ..RevocationList::default() };
        list.keys.push(RevokedKey {
            key_id: k1.key_id_hex(),
            action: KeyAction::Revoke,
            sequence: 2,
            created: "2026-11-22T00:00:00Z".into(),
            reason: Some("key leaked".into()),
            bundle: "c 1".into(),
        });
        let path = d.path().join(state::REVOKED_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, list.to_bytes()).unwrap();
        let e = crate::bundle::trust::trusted_keys(&[pubfile], d.path()).unwrap_err();
        assert_eq!(e.kind.exit_code(), 3);
        assert!(e.to_string().contains(&k1.key_id_hex()) && e.to_string().contains("key leaked"), "{e}");
        assert!(e.hint.is_some());
        // Its file put back into the key directory: refused too, and the hint says remove it.
        let site_file = d.path().join("etc/airlock/keys/old.pub");
        std::fs::write(&site_file, k1.public_key().to_text()).unwrap();
        let e = crate::bundle::trust::trusted_keys(&[], d.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signature);
        assert!(e.hint.as_deref().unwrap().contains(&format!("remove {}", site_file.display())), "{e}");
        // A damaged list fails closed.
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(
            crate::bundle::trust::trusted_keys(&[d.path().join("k1.pub")], d.path()).unwrap_err().kind,
            ErrorKind::Signature
        );
    }
}
