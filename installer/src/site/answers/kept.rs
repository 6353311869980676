//! The answers an install was made with, kept on the site so an upgrade needs none.
//!
//! The answers file's text is kept at [`state::KEPT_ANSWERS_PATH`] with every secret answer
//! (the questions of shape `Secret`: LDAP bind password, registry password) replaced by
//! `<redacted>`; each secret's value goes to its own 0600 file under the secrets
//! directory. Reading them back puts the values in again, so an upgrade renders the
//! same configs the install did. `--answers` on the upgrade overrides all of it.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use serde_yaml::Value;

use crate::host::{Host, Perms};
use crate::site::answers::questions::{questions, Shape};
use crate::site::answers::{Answered, Answers, REDACTED};
use crate::state;

fn secret_path(key: &str) -> PathBuf {
    state::secret_answer_path(key)
}

fn get<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    match key.split_once('.') {
        Some((section, k)) => doc.get(section)?.get(k),
        None => doc.get(key),
    }
}

fn set(doc: &mut Value, key: &str, v: Value) {
    let slot = match key.split_once('.') {
        Some((section, k)) => doc.get_mut(section).and_then(|s| s.get_mut(k)),
        None => doc.get_mut(key),
    };
    if let Some(slot) = slot {
        *slot = v;
    }
}

/// Keeps the answers file's `text` (as validated by the install) on the target.
pub fn keep(host: &dyn Host, text: &str, origin: &str) -> Result<()> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| {
        Error::input(origin, format!("is not YAML: {e}")).with_hint("the install read it; run it again")
    })?;
    for q in questions().iter().filter(|q| matches!(q.shape, Shape::Secret(_))) {
        if let Some(value) = get(&doc, q.key).and_then(Value::as_str).map(str::to_string) {
            host.write_file(&secret_path(q.key), &mut value.as_bytes(), Perms::secret())?;
            set(&mut doc, q.key, Value::String(REDACTED.into()));
        }
    }
    let yaml = serde_yaml::to_string(&doc).expect("a YAML value serialises");
    let text = format!(
        "# The answers this release was installed with; secrets are kept 0600 in\n# {}.\n{yaml}",
        crate::state::SECRETS_DIR
    );
    host.write_file(Path::new(state::KEPT_ANSWERS_PATH), &mut text.as_bytes(), Perms::mode(0o644))?;
    Ok(())
}

/// The answers an install was given, to keep on the site for later upgrades.
pub enum InstallAnswers<'a> {
    /// An answers file: its text and where it came from.
    File { text: &'a str, origin: &'a str },
    /// What the wizard was told (there is no file to copy).
    Wizard(&'a Answered),
}

/// Keeps the install's answers as [`keep`] does, whichever way they were given: an
/// upgrade months later must not depend on the field engineer's answers file.
pub fn keep_install_answers(host: &dyn Host, given: InstallAnswers<'_>) -> Result<()> {
    match given {
        InstallAnswers::File { text, origin } => keep(host, text, origin),
        InstallAnswers::Wizard(answered) => {
            // Secret values go into this text only to be split off into 0600 files by
            // `keep`; the text itself is never written or shown.
            let text = serde_yaml::to_string(&answered.to_value()).expect("answers serialise");
            keep(host, &text, "the wizard's answers")
        }
    }
}

/// The kept answers with their secrets put back; `None` when the install kept none.
pub fn load_kept(host: &dyn Host) -> Result<Option<Answers>> {
    let Some(bytes) = host.read_file(Path::new(state::KEPT_ANSWERS_PATH))? else { return Ok(None) };
    let origin = host.root().join(state::KEPT_ANSWERS_PATH.trim_start_matches('/')).display().to_string();
    let text = String::from_utf8_lossy(&bytes);
    let mut doc: Value = serde_yaml::from_str(&text)
        .map_err(|e| Error::corrupt(&origin, format!("is not YAML: {e}")).with_hint("pass --answers FILE"))?;
    for q in questions().iter().filter(|q| matches!(q.shape, Shape::Secret(_))) {
        if get(&doc, q.key).and_then(Value::as_str) == Some(REDACTED) {
            let path = secret_path(q.key);
            let value = host.read_file(&path)?.ok_or_else(|| {
                Error::input(&origin, format!("`{}` is kept in {}, which is missing", q.key, path.display()))
                    .with_hint("pass the site's answers file with --answers")
            })?;
            set(&mut doc, q.key, Value::String(String::from_utf8_lossy(&value).into_owned()));
        }
    }
    let full = serde_yaml::to_string(&doc).expect("a YAML value serialises");
    Answers::from_yaml(&full, &origin).map(Some)
}
