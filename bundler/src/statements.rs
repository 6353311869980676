//! Key statements in a bundle: made from the spec's `key_statements`, signed with the
//! bundle's key (or carried forward as signed earlier), and added to the planned bundle
//! as entries listed in the manifest.
//!
//! The bundler refuses what every site would refuse anyway, so the vendor learns it at
//! build time: sequences out of order, and a statement that retires or revokes the key
//! signing this very bundle (sites would then no longer trust the bundle they install).

use std::fs;

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{IoContext, Result};
use airlock_format::key_statement::{parse_key_id, signature_entry_path, KeyStatement};
use airlock_format::manifest::{Entry, KeyStatementRef};
use airlock_format::minisign::{PublicKey, SecretKey, Signature};
use airlock_format::write::{Content, PlannedEntry};

use crate::plan::Plan;
use crate::spec::LoadedSpec;

/// Adds the spec's key statements to `plan`. `created` (unix seconds) dates the
/// statements signed now, so builds repeat byte for byte.
pub fn add_key_statements(plan: &mut Plan, spec: &LoadedSpec, key: &SecretKey, created: u64) -> Result<()> {
    let mut last = 0u64;
    for (i, k) in spec.spec.key_statements.iter().enumerate() {
        let at = format!("key_statements[{i}]");
        let (statement, bytes, sig) = match &k.statement {
            Some(rel) => carried(spec, &at, rel)?,
            None => {
                let sequence = k.sequence.expect("checked when the spec was loaded");
                let action = k.action.expect("checked when the spec was loaded");
                let created = airlock_format::manifest::rfc3339(created);
                let public = k.key.as_deref().map(|rel| read_pub(spec, &format!("{at}.key"), rel)).transpose()?;
                let s = match (&public, &k.key_id) {
                    (Some(p), _) if !action.removes() => {
                        KeyStatement::introduce(sequence, created, p, k.reason.clone())
                    }
                    (Some(p), _) => {
                        KeyStatement::remove(action, sequence, created, p.key_id_hex(), Some(p), k.reason.clone())
                    }
                    (None, Some(id)) => {
                        let id = parse_key_id(id).map_err(|why| spec.err(format!("{at}.key_id"), why))?;
                        KeyStatement::remove(action, sequence, created, id, None, k.reason.clone())
                    }
                    (None, None) => unreachable!("checked when the spec was loaded"),
                };
                s.validate(&at).map_err(|e| spec.err(&at, e.cause))?;
                let (bytes, sig) = s.sign(key)?;
                (s, bytes, sig.to_text().into_bytes())
            }
        };
        if statement.sequence <= last {
            return Err(spec
                .err(&at, format!("sequence {} does not follow {last}", statement.sequence))
                .with_hint("list key statements in the order they were made; sequences strictly increase"));
        }
        last = statement.sequence;
        if statement.action.removes() && statement.key_id == key.key_id_hex() {
            return Err(spec
                .err(&at, format!("{}s key {}, which signs this bundle", statement.action, statement.key_id))
                .with_hint("sign this bundle with the vendor's next key (introduced by an earlier bundle)"));
        }
        let path = statement.entry_path();
        let signature = signature_entry_path(&path);
        for (p, b) in [(&path, bytes), (&signature, sig)] {
            if plan.entries.iter().any(|e| &e.entry.path == p) {
                return Err(spec.err(&at, format!("two key statements would be stored at `{p}`")));
            }
            let entry =
                Entry { path: p.clone(), size: b.len() as u64, sha256: Sha256Digest::of(&b), executable: false };
            plan.entries.push(PlannedEntry { entry, content: Content::Bytes(b), precompressed: false });
        }
        plan.manifest.key_statements.push(KeyStatementRef {
            sequence: statement.sequence,
            action: statement.action,
            key_id: statement.key_id.clone(),
            path,
            signature,
        });
    }
    if spec.spec.key_statements.is_empty() {
        return Ok(());
    }
    // The stream is in manifest order, sorted by path.
    plan.entries.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    plan.manifest.entries = plan.entries.iter().map(|e| e.entry.clone()).collect();
    plan.manifest.validate().map_err(|e| e.within("bundler bug: planned manifest is invalid"))
}

fn read_pub(spec: &LoadedSpec, at: &str, rel: &str) -> Result<PublicKey> {
    let p = spec.path(at, rel)?;
    PublicKey::from_file(&p).map_err(|e| spec.err(at, format!("{}: {}", e.subject, e.cause)))
}

/// A statement signed earlier: checked for shape here; whether its signer is trusted
/// only a site can say, so the installer verifies it.
fn carried(spec: &LoadedSpec, at: &str, rel: &str) -> Result<(KeyStatement, Vec<u8>, Vec<u8>)> {
    let p = spec.path(format!("{at}.statement"), rel)?;
    let bytes = fs::read(&p).at(&p)?;
    let s = KeyStatement::from_bytes(&bytes, &p.display().to_string())?;
    let sig_path = p.with_file_name(format!("{}.minisig", p.file_name().unwrap_or_default().to_string_lossy()));
    let sig = fs::read(&sig_path).map_err(|e| {
        airlock_format::Error::io(&sig_path, e)
            .with_hint("a carried statement needs its signature beside it (`.minisig`)")
    })?;
    Signature::parse(&String::from_utf8_lossy(&sig)).map_err(|e| e.within(sig_path.display()))?;
    Ok((s, bytes, sig))
}
