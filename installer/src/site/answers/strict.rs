//! Strict reading of the YAML documents people write for the installer: answers files
//! and install profiles.
//!
//! `serde`'s derive would reject unknown keys too, but it reports them at the parent
//! (`ha.servers[0]: unknown field`) and cannot run our validators with the key path in
//! hand. So documents are read as a `serde_yaml::Value` and walked here: every
//! problem carries the full key path (`ha.servers[1].ip`), a cause and a hint, and the
//! caller puts the file name in front (see [`Problem::into_error`]).

use std::fmt;

use airlock_format::error::Error;
use serde_yaml::{Mapping, Value};

/// One thing wrong with a document or an answer, at a key path (`cluster.service_cidr`).
///
/// It does not know the file: the same problem is shown at a wizard prompt and, with
/// the file name in front, as an [`Error`] for an answers file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Full key path; empty for the document as a whole.
    pub key: String,
    pub cause: String,
    pub hint: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, cause: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { key: key.into(), cause: cause.into(), hint: hint.into() }
    }

    /// `file: key: cause` + `hint:`, an input error (exit 1).
    pub fn into_error(self, origin: &str) -> Error {
        let subject = if self.key.is_empty() { origin.to_string() } else { format!("{origin}: {}", self.key) };
        Error::input(subject, self.cause).with_hint(self.hint)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `Error` shows itself: a typed value's control characters escaped.
        use airlock_format::text::escape_controls as shown;
        if !self.key.is_empty() {
            write!(f, "{}: ", shown(&self.key))?;
        }
        write!(f, "{}\n  hint: {}", shown(&self.cause), shown(&self.hint))
    }
}

/// Parses YAML text; syntax errors (and duplicate keys, which serde_yaml refuses)
/// carry the line and column.
pub(crate) fn parse_yaml(text: &str, doc: &str) -> Result<Value, Problem> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| {
        Problem::new(
            "",
            format!("is not valid YAML: {e}"),
            format!("check the indentation and quoting near that line (see {doc})"),
        )
    })?;
    if value.is_null() {
        return Err(Problem::new("", "is empty", format!("see {doc} for the keys it takes")));
    }
    Ok(value)
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// What a value is, in words for an error; never the value itself, which may be a secret.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping whose keys were all checked against the allowed set when it was opened.
pub(crate) struct Map<'a> {
    pub path: String,
    map: &'a Mapping,
    doc: &'static str,
}

impl<'a> Map<'a> {
    /// Opens the document root.
    pub fn root(value: &'a Value, allowed: &[&str], doc: &'static str) -> Result<Self, Problem> {
        Field { path: String::new(), value, doc }.map(allowed)
    }

    /// The value at `key`; a key with no value (`key:` or `key: null`) counts as absent,
    /// so an emptied line behaves like a deleted one.
    pub fn get(&self, key: &str) -> Option<Field<'a>> {
        self.map.get(key).filter(|v| !v.is_null()).map(|value| Field {
            path: join(&self.path, key),
            value,
            doc: self.doc,
        })
    }

    /// The value at `key`, which must be there.
    pub fn req(&self, key: &str, what: &str) -> Result<Field<'a>, Problem> {
        self.get(key).ok_or_else(|| {
            let path = join(&self.path, key);
            Problem::new(&path, "missing required key", format!("add `{key}:` ({what}); see {}", self.doc))
        })
    }
}

/// One value in a document, with its key path.
#[derive(Clone)]
pub(crate) struct Field<'a> {
    pub path: String,
    pub value: &'a Value,
    pub doc: &'static str,
}

impl<'a> Field<'a> {
    pub fn problem(&self, cause: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem::new(&self.path, cause, hint)
    }

    fn wrong_type(&self, expected: &str) -> Problem {
        let hint = match self.value {
            // YAML turns `5.10` into the number 5.1 and `0755` into 755; quoting keeps text as written.
            Value::Number(_) | Value::Bool(_) if expected == "text" => {
                format!("put the value in quotes (\"...\") so YAML keeps it as text; see {}", self.doc)
            }
            _ => format!("see {} for what this key takes", self.doc),
        };
        self.problem(format!("expected {expected}, found {}", kind_of(self.value)), hint)
    }

    pub fn str(&self) -> Result<&'a str, Problem> {
        self.value.as_str().ok_or_else(|| self.wrong_type("text"))
    }

    pub fn bool(&self) -> Result<bool, Problem> {
        self.value.as_bool().ok_or_else(|| self.wrong_type("true or false"))
    }

    pub fn u64(&self) -> Result<u64, Problem> {
        self.value.as_u64().ok_or_else(|| self.wrong_type("a whole number"))
    }

    pub fn f64(&self) -> Result<f64, Problem> {
        self.value.as_f64().ok_or_else(|| self.wrong_type("a number"))
    }

    pub fn seq(&self) -> Result<Vec<Field<'a>>, Problem> {
        let items = self.value.as_sequence().ok_or_else(|| self.wrong_type("a list"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| Field { path: format!("{}[{i}]", self.path), value, doc: self.doc })
            .collect())
    }

    /// A list of text items.
    pub fn strs(&self) -> Result<Vec<(Field<'a>, &'a str)>, Problem> {
        self.seq()?.into_iter().map(|f| f.str().map(|s| (f.clone(), s))).collect()
    }

    /// Opens a mapping whose keys must all be in `allowed`; an unknown key is an error
    /// naming it, with the closest allowed key when it looks like a typo.
    pub fn map(&self, allowed: &[&str]) -> Result<Map<'a>, Problem> {
        let map = self.value.as_mapping().ok_or_else(|| self.wrong_type("a mapping of keys to values"))?;
        for k in map.keys() {
            let Some(k) = k.as_str() else {
                return Err(self.problem(
                    format!("has a key that is {}, not text", kind_of(k)),
                    format!("keys are names such as `{}`; see {}", allowed.first().unwrap_or(&""), self.doc),
                ));
            };
            if !allowed.contains(&k) {
                let whose = if self.path.is_empty() { "the top level".to_string() } else { format!("`{}`", self.path) };
                let guess = closest(k, allowed).map(|g| format!("did you mean `{g}`? ")).unwrap_or_default();
                return Err(Problem::new(
                    join(&self.path, k),
                    "unknown key",
                    format!("{guess}{whose} takes: {}; see {}", allowed.join(", "), self.doc),
                ));
            }
        }
        Ok(Map { path: self.path.clone(), map, doc: self.doc })
    }
}

/// The allowed key within two edits of `key`, for "did you mean".
fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed.iter().map(|a| (edit_distance(key, a), *a)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_their_path_and_a_guess() {
        let v = parse_yaml("cluster:\n  servce_cidr: x\n", "docs/x.md").unwrap();
        let root = Map::root(&v, &["cluster"], "docs/x.md").unwrap();
        let e = root.req("cluster", "c").unwrap().map(&["service_cidr", "cluster_cidr"]).err().unwrap();
        assert_eq!(e.key, "cluster.servce_cidr");
        assert!(e.hint.starts_with("did you mean `service_cidr`?"), "{e}");
    }

    #[test]
    fn numbers_where_text_belongs_ask_for_quotes_without_echoing_the_value() {
        let v = parse_yaml("a: 5.10\n", "d").unwrap();
        let root = Map::root(&v, &["a"], "d").unwrap();
        let e = root.get("a").unwrap().str().unwrap_err();
        assert!(e.cause.contains("found a number") && !e.cause.contains("5.1"), "{e}");
        assert!(e.hint.contains("quotes"), "{e}");
    }

    #[test]
    fn empty_values_count_as_absent_and_empty_documents_are_refused() {
        let v = parse_yaml("a:\n", "d").unwrap();
        assert!(Map::root(&v, &["a"], "d").unwrap().get("a").is_none());
        assert!(parse_yaml("# only a comment\n", "d").unwrap_err().cause.contains("empty"));
        assert!(parse_yaml("a: 1\na: 2\n", "d").unwrap_err().cause.contains("duplicate"));
    }
}
