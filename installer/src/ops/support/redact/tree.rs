//! Redaction by meaning: a YAML stream or JSON document read into a tree, each value
//! judged by where it is, and the tree written back in the same syntax when something
//! went. One tree type for both (`serde_yaml::Value`: its mappings keep their order,
//! so a JSON document keeps its key order too).

use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

use super::{add, secret_name_rule, Counts, Format, Redactor, REDACTED, RULE_ENV, RULE_SECRET_DATA};

/// A parsed document.
pub(super) enum Tree {
    Json {
        value: Value,
        pretty: bool,
    },
    /// A YAML stream: its documents, each a mapping, a sequence or empty.
    Yaml {
        docs: Vec<Value>,
    },
}

impl Tree {
    /// The document in `text`, when it is one: JSON, or YAML whose documents are
    /// mappings or sequences (a bare scalar is text: an env file parses as one).
    pub(super) fn parse(text: &str, format: Format) -> Option<Self> {
        let t = text.trim();
        let json_like = t.starts_with('{') || t.starts_with('[');
        if format == Format::Text || !(json_like || t.contains('\n')) {
            return None;
        }
        if json_like {
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                return Some(Tree::Json { value, pretty: t.contains('\n') });
            }
        }
        if format == Format::Json {
            return None;
        }
        let mut docs = Vec::new();
        for d in serde_yaml::Deserializer::from_str(text) {
            docs.push(Value::deserialize(d).ok()?);
        }
        let structured = |d: &Value| matches!(d, Value::Mapping(_) | Value::Sequence(_));
        (docs.iter().any(structured) && docs.iter().all(|d| structured(d) || d.is_null()))
            .then_some(Tree::Yaml { docs })
    }

    /// Redacts every value whose place says secret, and every other string as text;
    /// whether anything changed.
    pub(super) fn redact(&mut self, r: &Redactor, depth: usize, counts: &mut Counts) -> bool {
        let mut w = Walk { r, depth, counts };
        match self {
            Tree::Json { value, .. } => w.value(value),
            Tree::Yaml { docs } => docs.iter_mut().fold(false, |changed, d| w.value(d) | changed),
        }
    }

    /// The tree in the syntax it was read from; `original` for its framing (a final
    /// newline, a leading `---`). `None` when it cannot be written back: serde_yaml
    /// parses some tagged values its emitter then refuses (`!t k: v` under a key), and
    /// collected files are anything the site holds, so the caller falls back to the
    /// text rules instead of panicking in the middle of a support bundle.
    pub(super) fn emit(&self, original: &str) -> Option<String> {
        let mut out = match self {
            Tree::Json { value, pretty: true } => serde_json::to_string_pretty(value).ok()?,
            Tree::Json { value, pretty: false } => serde_json::to_string(value).ok()?,
            Tree::Yaml { docs } => {
                let mut out = String::new();
                for (i, d) in docs.iter().enumerate() {
                    if i > 0 || original.trim_start().starts_with("---") {
                        out.push_str("---\n");
                    }
                    if !d.is_null() {
                        out.push_str(&serde_yaml::to_string(d).ok()?);
                    }
                }
                out
            }
        };
        match (original.ends_with('\n'), out.ends_with('\n')) {
            (true, false) => out.push('\n'),
            (false, true) => {
                out.pop();
            }
            _ => {}
        }
        Some(out)
    }
}

struct Walk<'a> {
    r: &'a Redactor,
    depth: usize,
    counts: &'a mut Counts,
}

impl Walk<'_> {
    fn value(&mut self, v: &mut Value) -> bool {
        match v {
            Value::Mapping(m) => self.mapping(m),
            Value::Sequence(s) => s.iter_mut().fold(false, |changed, v| self.value(v) | changed),
            Value::Tagged(t) => self.value(&mut t.value),
            Value::String(s) => {
                let clean = self.r.document(s, Format::Sniff, self.depth + 1, self.counts);
                let changed = clean != *s;
                *s = clean;
                changed
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    fn mapping(&mut self, m: &mut Mapping) -> bool {
        let mut changed = false;
        match m.get("kind").and_then(Value::as_str) {
            Some("Secret") => changed |= self.secret(m),
            // What the API answers for a list of Secrets: items without a `kind`.
            Some("SecretList") => {
                if let Some(Value::Sequence(items)) = m.get_mut("items") {
                    for item in items.iter_mut() {
                        if let Value::Mapping(s) = item {
                            changed |= self.secret(s);
                        }
                    }
                }
            }
            _ => {}
        }
        // An env var as Kubernetes lists it: `{name: DB_PASSWORD, value: ...}`.
        let env_name = m.get("name").and_then(Value::as_str).filter(|n| secret_name_rule(n).is_some());
        if env_name.is_some() {
            if let Some(v) = m.get_mut("value") {
                changed |= self.credential(v, RULE_ENV);
            }
        }
        for (k, v) in m.iter_mut() {
            changed |= match k.as_str().and_then(secret_name_rule) {
                Some(rule) => self.credential(v, rule),
                None => self.value(v),
            };
        }
        changed
    }

    /// Every value of a Secret's `data` and `stringData`, whatever its syntax was.
    fn secret(&mut self, m: &mut Mapping) -> bool {
        let mut changed = false;
        for key in ["data", "stringData"] {
            match m.get_mut(key) {
                Some(Value::Mapping(data)) => {
                    for (_, v) in data.iter_mut() {
                        changed |= self.replace(v, RULE_SECRET_DATA);
                    }
                }
                Some(v) => changed |= self.replace(v, RULE_SECRET_DATA),
                None => {}
            }
        }
        changed
    }

    /// The value of a key that says credential. A mapping is judged key by key (`auth:
    /// {username, password}`, `secret: {secretName}`); anything else goes whole.
    fn credential(&mut self, v: &mut Value, rule: &'static str) -> bool {
        match v {
            Value::Mapping(m) => self.mapping(m),
            _ => self.every_string(v, rule),
        }
    }

    /// Every string at or below `v` (`bindCredential: [...]`, `credentials: [{type,
    /// value}]`); `true`/`false`/`null` and numbers stay.
    fn every_string(&mut self, v: &mut Value, rule: &'static str) -> bool {
        match v {
            Value::String(_) => self.replace(v, rule),
            Value::Sequence(s) => s.iter_mut().fold(false, |changed, v| self.every_string(v, rule) | changed),
            Value::Mapping(m) => m.iter_mut().fold(false, |changed, (_, v)| self.every_string(v, rule) | changed),
            Value::Tagged(t) => self.every_string(&mut t.value, rule),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// `v` replaced whole, unless there is nothing to hide (empty, null, done already),
    /// and counted once.
    fn replace(&mut self, v: &mut Value, rule: &'static str) -> bool {
        let nothing = match v {
            Value::Null => true,
            Value::String(s) => s.is_empty() || s == REDACTED,
            _ => false,
        };
        if nothing {
            return false;
        }
        let rule = v.as_str().map_or(rule, |s| self.r.rule_by_value(s, rule));
        *v = Value::String(REDACTED.to_string());
        add(self.counts, rule, 1);
        true
    }
}
