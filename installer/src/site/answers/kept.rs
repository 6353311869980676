//! The answers an install was made with, kept on the site so an upgrade needs none.
//!
//! The answers file's text is kept at [`state::KEPT_ANSWERS_PATH`] with every secret answer
//! (the questions of shape `Secret`: LDAP bind password, registry password) replaced by
//! `<redacted>`; each secret's value goes to its own 0600 file under the secrets
//! directory. Reading them back puts the values in again, so an upgrade renders the
//! same configs the install did. `--answers` on the upgrade overrides all of it.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
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
            // A placeholder is never a secret: the one kept already stays as it is.
            if value == REDACTED {
                continue;
            }
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
    let Some(kept) = kept_text(host)? else { return Ok(None) };
    Answers::from_yaml(&kept.text, &kept.origin).map(Some)
}

/// The kept answers as an answers file's text, secrets put back: what `install` without
/// `--answers` reads on a site that has them. The text holds secrets: never show it.
pub struct KeptText {
    pub text: String,
    /// The kept file's path as the operator sees it (with the root's prefix).
    pub origin: String,
}

/// Whether the site under `root` keeps answers (an earlier install's).
pub fn exists(root: &Path) -> bool {
    let Ok(host) = crate::host::RootedHost::new(root.to_path_buf(), root == Path::new("/")) else { return false };
    matches!(host.read_file(Path::new(state::KEPT_ANSWERS_PATH)), Ok(Some(_)))
}

/// [`load_kept`] as text; `None` when the install kept none.
pub fn kept_text(host: &dyn Host) -> Result<Option<KeptText>> {
    let Some(bytes) = host.read_file(Path::new(state::KEPT_ANSWERS_PATH))? else { return Ok(None) };
    let origin = crate::host::shown_path(host.root(), Path::new(state::KEPT_ANSWERS_PATH)).display().to_string();
    let text = String::from_utf8_lossy(&bytes);
    let text = put_back_secrets(&text, &origin, &|path: &Path| host.read_file(path))?;
    Ok(Some(KeptText { text, origin }))
}

/// Puts each secret answer that reads `<redacted>` back from its kept 0600 file, read
/// through `read` (a target path under the secrets directory).
fn put_back_secrets(text: &str, origin: &str, read: &dyn Fn(&Path) -> Result<Option<Vec<u8>>>) -> Result<String> {
    let mut doc: Value = serde_yaml::from_str(text)
        .map_err(|e| Error::corrupt(origin, format!("is not YAML: {e}")).with_hint("pass --answers FILE"))?;
    for q in questions().iter().filter(|q| matches!(q.shape, Shape::Secret(_))) {
        if get(&doc, q.key).and_then(Value::as_str) == Some(REDACTED) {
            let path = secret_path(q.key);
            let value = read(&path)?.ok_or_else(|| {
                Error::input(origin, format!("`{}` is kept in {}, which is missing", q.key, path.display()))
                    .with_hint("pass the site's answers file with --answers")
            })?;
            set(&mut doc, q.key, Value::String(String::from_utf8_lossy(&value).into_owned()));
        }
    }
    Ok(serde_yaml::to_string(&doc).expect("a YAML value serialises"))
}

/// An answers file's text; when it is a site's kept answers (`<root>/var/lib/airlock/
/// answers.yaml`, or a release's copy below that directory) its `<redacted>` secrets
/// are put back from the site's 0600 files, so `--answers` takes the kept file as it
/// is. Any other file keeps its placeholders, which the reader refuses.
pub fn read_answers_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).at(path)?;
    // Not text: a wrong file or a wrong encoding, the operator's input to fix (exit 1).
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::input(
            path.display().to_string(),
            format!("is not UTF-8 text (an invalid byte at offset {})", e.utf8_error().valid_up_to()),
        )
        .with_hint("save the answers file as UTF-8 (docs/answers.md), or check that this is the answers file")
    })?;
    if !text.contains(REDACTED) {
        return Ok(text);
    }
    let state_dir = Path::new(state::KEPT_ANSWERS_PATH).parent().expect("the kept answers are in a directory");
    let state_dir = state_dir.strip_prefix("/").unwrap_or(state_dir);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(site_state) = absolute.ancestors().find(|a| a.ends_with(state_dir)) else { return Ok(text) };
    // The site's root: where the state directory's target path starts.
    let Some(root) = (0..state_dir.components().count()).try_fold(site_state, |p, _| p.parent()) else {
        return Ok(text);
    };
    let read = |target: &Path| -> Result<Option<Vec<u8>>> {
        let p = root.join(target.strip_prefix("/").unwrap_or(target));
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&p),
        }
    };
    put_back_secrets(&text, &path.display().to_string(), &read)
}

/// Answers text (the kept answers, secrets put back) as the wizard's pre-filled answers;
/// `None` when it no longer reads as answers (then the wizard asks afresh).
pub fn answered(text: &str) -> Option<Answered> {
    let doc = crate::site::answers::strict::parse_yaml(text, crate::site::answers::DOC).ok()?;
    crate::site::answers::questions::read_document(&doc, None).ok()
}

/// Writes what the wizard was told to `path` (`--save-answers FILE`) as an answers file
/// for the next run or node. Secrets are not written: answers files have no form that
/// refers to a secret's file, so each secret reads `<redacted>` (which `--answers`
/// refuses, so the file never installs with a placeholder) and the file's comments say
/// where the install keeps it (0600 under `root`) and how to use it from there.
// The operator's own file, named on the command line, outside any target root (as the
// support bundle's archive): not a change to the site, so not through the host seam.
#[allow(clippy::disallowed_methods)]
pub fn save_answers(path: &Path, answered: &Answered, root: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secrets: Vec<&str> = questions()
        .iter()
        .filter(|q| matches!(q.shape, Shape::Secret(_)) && answered.has(q.key))
        .map(|q| q.key)
        .collect();
    let mut text = String::from(
        "# The answers the airlock wizard took (airlock install --save-answers); keys: docs/answers.md.\n",
    );
    if !secrets.is_empty() {
        let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p)).display().to_string();
        text.push_str("# Secrets are not written here: each reads <redacted>, which --answers refuses.\n");
        text.push_str("# Once the install has run (not after --dry-run or --check) the site keeps them 0600:\n");
        for key in &secrets {
            text.push_str(&format!("#   {key}: {}\n", under(&secret_path(key))));
        }
        text.push_str(&format!(
            "# On that site, --answers {} takes them from there; elsewhere, write each secret in.\n",
            under(Path::new(state::KEPT_ANSWERS_PATH))
        ));
    }
    text.push_str(&answered.to_yaml());
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).at(path)?;
    f.write_all(text.as_bytes()).at(path)?;
    Ok(())
}
