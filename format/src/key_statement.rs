//! Key statements: how the vendor rotates and revokes its signing keys through bundles.
//!
//! A statement is a small JSON document with its own minisign signature, carried as two
//! bundle entries (`keys/statements/0001-introduce-<ID>.json` and `.json.minisig`) and
//! listed in the signed manifest (`key_statements`). It says one thing:
//!
//! - `introduce`: sites that accept it trust `key_id` (whose public key it carries) from
//!   then on — how the next key is announced while the current one still signs;
//! - `retire`: sites stop trusting `key_id` (an orderly end of a key's life);
//! - `revoke`: as `retire`, for a key that is compromised.
//!
//! Why each statement has its own signature although the manifest is signed too: the
//! statement must stay checkable on its own, outside the bundle and with stock
//! `minisign -V`, by whoever audits a site's key history; and a statement signed once
//! can be carried forward in later bundles unchanged. Why a `sequence`: statements are
//! applied in order, and a site records the highest sequence it applied, so replaying an
//! old statement (say, the one that introduced a key revoked since) changes nothing.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::minisign::{PublicKey, SecretKey, Signature};

/// The `format` value of every v1 statement.
pub const STATEMENT_FORMAT_V1: &str = "airlock.key-statement/v1";
/// Where statements live inside a bundle.
pub const STATEMENTS_DIR: &str = "keys/statements";
/// Statements are a few hundred bytes; anything much bigger is not one.
pub const MAX_STATEMENT_BYTES: u64 = 64 << 10;
const MAX_REASON: usize = 512;

/// What a statement does to the key it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyAction {
    Introduce,
    Retire,
    Revoke,
}

impl KeyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAction::Introduce => "introduce",
            KeyAction::Retire => "retire",
            KeyAction::Revoke => "revoke",
        }
    }
    /// Retire and revoke both take a key out of trust.
    pub fn removes(self) -> bool {
        self != KeyAction::Introduce
    }
}

impl std::fmt::Display for KeyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signed statement about one vendor key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStatement {
    pub format: String,
    /// Position in the vendor's key history, from 1, strictly increasing.
    pub sequence: u64,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
    pub action: KeyAction,
    /// The key it is about: 16 upper-case hex digits, as `airlock verify` shows it.
    pub key_id: String,
    /// The key itself (the base64 line of its `.pub` file): required to introduce a key,
    /// optional (for the record) to retire or revoke one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Normalises a key id given by a person (`a1b2…`, any case) to 16 upper-case hex digits.
pub fn parse_key_id(text: &str) -> std::result::Result<String, String> {
    let t = text.trim();
    if t.len() != 16 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`{t}` is not a key id (16 hex digits, as `airlock verify` shows the signer)"));
    }
    Ok(t.to_ascii_uppercase())
}

impl KeyStatement {
    /// A statement that introduces `key`.
    pub fn introduce(sequence: u64, created: String, key: &PublicKey, reason: Option<String>) -> Self {
        Self {
            format: STATEMENT_FORMAT_V1.into(),
            sequence,
            created,
            action: KeyAction::Introduce,
            key_id: key.key_id_hex(),
            public_key: Some(key.to_base64()),
            reason,
        }
    }

    /// A statement that retires or revokes the key `key_id` (`public_key` when known).
    pub fn remove(
        action: KeyAction,
        sequence: u64,
        created: String,
        key_id: String,
        public_key: Option<&PublicKey>,
        reason: Option<String>,
    ) -> Self {
        Self {
            format: STATEMENT_FORMAT_V1.into(),
            sequence,
            created,
            action,
            key_id,
            public_key: public_key.map(PublicKey::to_base64),
            reason,
        }
    }

    /// The bytes that are signed and stored: indented JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("key statement serializes");
        v.push(b'\n');
        v
    }

    /// Parses and validates statement bytes; errors name `subject` (the file or entry).
    pub fn from_bytes(bytes: &[u8], subject: &str) -> Result<Self> {
        if bytes.len() as u64 > MAX_STATEMENT_BYTES {
            return Err(Error::corrupt(
                subject,
                format!("is {} bytes; a key statement is at most {MAX_STATEMENT_BYTES}", bytes.len()),
            ));
        }
        let s: KeyStatement = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(subject, format!("is not a valid key statement: {e}")))?;
        s.validate(subject)?;
        Ok(s)
    }

    /// Checks everything a reader relies on: format, sequence, key id, that an
    /// introduced key is present and has the stated id.
    pub fn validate(&self, subject: &str) -> Result<()> {
        let bad = |cause: String| {
            Err(Error::corrupt(subject, cause)
                .with_hint("key statements are written by airlock-bundler; see docs/bundle-format.md"))
        };
        if self.format != STATEMENT_FORMAT_V1 {
            return bad(format!(
                "format `{}` is not supported (this version reads `{STATEMENT_FORMAT_V1}`)",
                self.format
            ));
        }
        if self.sequence == 0 {
            return bad("sequence 0: sequences start at 1".into());
        }
        match parse_key_id(&self.key_id) {
            Ok(id) if id == self.key_id => {}
            Ok(_) => return bad(format!("key id `{}` must be written in upper case", self.key_id)),
            Err(why) => return bad(why),
        }
        if let Some(r) = &self.reason {
            if r.len() > MAX_REASON || r.contains(['\n', '\r', '\0']) {
                return bad(format!("the reason must be one line of at most {MAX_REASON} bytes"));
            }
        }
        match (self.action, self.public_key()?) {
            (KeyAction::Introduce, None) => bad("an `introduce` statement must carry the public key".into()),
            (_, Some(k)) if k.key_id_hex() != self.key_id => {
                bad(format!("names key {} but carries key {}", self.key_id, k.key_id_hex()))
            }
            _ => Ok(()),
        }
    }

    /// The carried public key, if any.
    pub fn public_key(&self) -> Result<Option<PublicKey>> {
        self.public_key
            .as_deref()
            .map(|b64| PublicKey::parse(b64).map_err(|e| e.within(format!("key statement #{}", self.sequence))))
            .transpose()
    }

    /// Signed with the statement, so `minisign -V` shows what the statement does.
    pub fn trusted_comment(&self) -> String {
        format!("airlock key statement #{}: {} {}\tcreated:{}", self.sequence, self.action, self.key_id, self.created)
    }

    /// Signs the statement's bytes; returns them with the signature.
    pub fn sign(&self, key: &SecretKey) -> Result<(Vec<u8>, Signature)> {
        let bytes = self.to_bytes();
        let sig = key.sign(
            &bytes,
            &self.trusted_comment(),
            &format!("signature of airlock key statement #{}", self.sequence),
        )?;
        Ok((bytes, sig))
    }

    /// The bundle entry path: `keys/statements/0001-introduce-<ID>.json`.
    pub fn entry_path(&self) -> String {
        format!("{STATEMENTS_DIR}/{:04}-{}-{}.json", self.sequence, self.action, self.key_id)
    }

    /// One line for plans and reports: `#1 introduce 0123456789ABCDEF`.
    pub fn label(&self) -> String {
        format!("#{} {} {}", self.sequence, self.action, self.key_id)
    }
}

/// The signature entry path beside a statement entry.
pub fn signature_entry_path(statement_path: &str) -> String {
    format!("{statement_path}.minisig")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn statement_round_trips_and_its_signature_verifies_with_the_signing_key_only() {
        let (k1, k2) = (key(), key());
        let s = KeyStatement::introduce(1, "2026-11-22T00:00:00Z".into(), &k2.public_key(), None);
        let (bytes, sig) = s.sign(&k1).unwrap();
        assert_eq!(KeyStatement::from_bytes(&bytes, "s").unwrap(), s);
        let sig = Signature::parse(&sig.to_text()).unwrap();
        assert!(crate::minisign::verify(&[k1.public_key()], &sig, &bytes).is_ok());
        assert!(crate::minisign::verify(&[k2.public_key()], &sig, &bytes).is_err());
        assert!(sig.trusted_comment().contains(&format!("introduce {}", k2.key_id_hex())));
        assert_eq!(s.entry_path(), format!("keys/statements/0001-introduce-{}.json", k2.key_id_hex()));
        assert!(crate::manifest::check_entry_path(&s.entry_path()).is_ok());
    }

    #[test]
    fn introduce_without_the_key_or_with_another_key_is_rejected() {
        let (k1, k2) = (key(), key());
        let mut s = KeyStatement::introduce(1, "t".into(), &k1.public_key(), None);
        s.public_key = None;
        assert!(KeyStatement::from_bytes(&s.to_bytes(), "s").unwrap_err().cause.contains("must carry"));
        s.public_key = Some(k2.public_key().to_base64());
        let e = KeyStatement::from_bytes(&s.to_bytes(), "s").unwrap_err();
        assert!(e.cause.contains("carries key"), "{e}");
        let mut s = KeyStatement::introduce(0, "t".into(), &k1.public_key(), None);
        assert!(KeyStatement::from_bytes(&s.to_bytes(), "s").is_err());
        s.sequence = 1;
        s.key_id = s.key_id.to_lowercase();
        assert!(KeyStatement::from_bytes(&s.to_bytes(), "s").is_err());
    }

    #[test]
    fn key_ids_are_normalised_and_checked() {
        assert_eq!(parse_key_id(" 0123456789abcdef ").unwrap(), "0123456789ABCDEF");
        assert!(parse_key_id("0123").is_err());
        assert!(parse_key_id("0123456789ABCDEG").is_err());
    }
}
