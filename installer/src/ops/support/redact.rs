//! Redaction of collected text: what makes a support bundle safe to hand over.
//!
//! Collected text is **parsed first and redacted by meaning** ([`tree`]): a YAML stream
//! or JSON document is read into a tree, and a value goes when its place says secret —
//! every value of a Kubernetes Secret's `data`/`stringData` (block, flow, JSON, in a
//! `List`), a field whose key says credential (`token`, `password`, docker `auth`, ...),
//! an env `{name, value}` pair or `NAME: value` whose name says secret. Every other
//! string is redacted as text in its turn, and parsed again first when it is itself a
//! document (a HelmChart's `valuesContent`, a realm JSON in a ConfigMap, the
//! `last-applied-configuration` annotation). A document with something redacted is
//! written back from its tree (still YAML or JSON, the same keys; comments and layout
//! of that document are not kept); one without is kept byte for byte.
//!
//! What does not parse (env files, INI, unit files, logs, a document cut at the size
//! limit) goes through the text rules ([`text`]), in this order: JSON objects on a
//! line (by meaning again), private key blocks, Secret data, generated values, K3s join
//! tokens, connection strings, env assignments, credential fields and `Bearer`
//! tokens. Some rules are
//! context-free (key blocks, generated values, join tokens, URL passwords, `Bearer`
//! tokens): they also run over parsed documents, for keys and comments.
//!
//! Structure and names catch secrets nobody told us about (an operator's hand-edited
//! manifest); values catch ours wherever they are copied, even under a key with an
//! innocent name. Redaction errs on the side of removing too much: a support engineer
//! can ask for a value, a leaked one cannot be taken back. `true`/`false`/`null` and
//! numbers are kept. Counts are kept per rule, one per value replaced, never the values.

mod text;
mod tree;

#[cfg(test)]
mod corpus;

use std::collections::BTreeMap;

use base64::Engine as _;

/// What replaces a value.
pub const REDACTED: &str = "<redacted>";

/// What replaces a value inside a YAML token that gives it meaning (a tag `!…`, an
/// anchor `&…`, an alias `*…`), where `<` and `>` would break the document.
pub const REDACTED_WORD: &str = "REDACTED";

pub const RULE_PRIVATE_KEY: &str = "private-key-block";
pub const RULE_SECRET_DATA: &str = "kubernetes-secret-data";
pub const RULE_GENERATED: &str = "generated-secret-value";
pub const RULE_JOIN_TOKEN: &str = "k3s-join-token";
pub const RULE_CONNECTION: &str = "connection-string";
pub const RULE_ENV: &str = "env-credential";
pub const RULE_CREDENTIAL: &str = "credential-field";

/// Every rule a count can be kept under.
pub const RULES: [&str; 7] =
    [RULE_PRIVATE_KEY, RULE_SECRET_DATA, RULE_GENERATED, RULE_JOIN_TOKEN, RULE_CONNECTION, RULE_ENV, RULE_CREDENTIAL];

/// Generated secrets shorter than this are not replaced by value (they would match
/// everywhere); the rules by structure and name still apply to them.
pub const MIN_VALUE_LEN: usize = 6;

/// How deep documents inside strings inside documents are parsed; deeper ones get the
/// text rules.
const MAX_DEPTH: usize = 8;

/// Redaction counts, rule → number of values replaced.
pub type Counts = BTreeMap<String, usize>;

fn add(counts: &mut Counts, rule: &str, n: usize) {
    if n > 0 {
        *counts.entry(rule.to_string()).or_default() += n;
    }
}

/// How a collected text is read, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `*.json`: JSON, or text when it does not parse.
    Json,
    /// Env files, INI, unit files, logs: text rules only.
    Text,
    /// Anything else: JSON or a YAML stream of mappings/sequences when it parses as one.
    Sniff,
}

impl Format {
    pub fn of(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "json" => Format::Json,
            "log" | "env" | "service" | "conf" | "ini" | "cfg" | "toml" | "sh" | "txt" => Format::Text,
            _ => Format::Sniff,
        }
    }
}

/// A text rule: a pattern (counted under its rule name), or the generated values.
enum Rule {
    Pattern(&'static str, fn(&str) -> (String, usize)),
    Generated,
}

/// The text rules, in the order they run (after JSON objects on a line).
const TEXT_RULES: [Rule; 10] = [
    Rule::Pattern(RULE_PRIVATE_KEY, text::private_keys),
    Rule::Pattern(RULE_SECRET_DATA, text::secret_data),
    Rule::Generated,
    Rule::Pattern(RULE_JOIN_TOKEN, text::join_tokens),
    Rule::Pattern(RULE_CONNECTION, text::connection_strings),
    Rule::Pattern(RULE_CONNECTION, text::url_passwords),
    Rule::Pattern(RULE_ENV, text::env_assignments),
    Rule::Pattern(RULE_ENV, text::env_pairs),
    Rule::Pattern(RULE_CREDENTIAL, text::credential_fields),
    Rule::Pattern(RULE_CREDENTIAL, text::bearer_tokens),
];

/// The text rules that need no context.
const CONTEXT_FREE_RULES: [Rule; 5] = [
    Rule::Pattern(RULE_PRIVATE_KEY, text::private_keys),
    Rule::Generated,
    Rule::Pattern(RULE_JOIN_TOKEN, text::join_tokens),
    Rule::Pattern(RULE_CONNECTION, text::url_passwords),
    Rule::Pattern(RULE_CREDENTIAL, text::bearer_tokens),
];

/// Redacts text with the site's generated secret values and the fixed rules.
pub struct Redactor {
    /// Literal forms to replace, longest first (so a value containing another is
    /// replaced whole).
    values: Vec<String>,
    /// Generated values too short to replace by value.
    pub too_short: usize,
}

impl Redactor {
    /// A redactor for these generated secret values (file contents of the secrets dir).
    pub fn new(secrets: &[String]) -> Self {
        let mut values = Vec::new();
        let mut too_short = 0;
        for s in secrets {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            if s.len() < MIN_VALUE_LEN {
                too_short += 1;
                continue;
            }
            let b64 = base64::engine::general_purpose::STANDARD;
            let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
            // With and without a trailing newline: `echo x | base64` adds one.
            for v in [s.to_string(), b64.encode(s), b64_nopad.encode(s), b64.encode(format!("{s}\n"))] {
                if v.len() >= MIN_VALUE_LEN && !values.contains(&v) {
                    values.push(v);
                }
            }
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Self { values, too_short }
    }

    /// Text of unknown format with every rule applied, and how often each one fired.
    pub fn redact(&self, text: &str) -> (String, Counts) {
        self.redact_as(text, Format::Sniff)
    }

    /// A collected file or output, read as its name says ([`Format::of`]).
    pub fn redact_file(&self, name: &str, text: &str) -> (String, Counts) {
        self.redact_as(text, Format::of(name))
    }

    fn redact_as(&self, text: &str, format: Format) -> (String, Counts) {
        let mut counts = Counts::new();
        let out = self.document(text, format, 0, &mut counts);
        (keep_parsing(text, out, format), counts)
    }

    /// Parsed and redacted by meaning when it parses, else by the text rules.
    fn document(&self, text: &str, format: Format, depth: usize, counts: &mut Counts) -> String {
        if depth < MAX_DEPTH {
            if let Some(mut doc) = tree::Tree::parse(text, format) {
                let before = counts.clone();
                if !doc.redact(self, depth, counts) {
                    let out = self.comments(text, depth, counts);
                    return self.context_free(&out, counts);
                }
                if let Some(out) = doc.emit(text) {
                    return self.context_free(&out, counts);
                }
                // A tree that cannot be written back: the text rules, counted afresh.
                *counts = before;
            }
        }
        self.text(text, depth, counts)
    }

    /// Comment lines of a document kept as it was: text, so every text rule applies.
    fn comments(&self, text: &str, depth: usize, counts: &mut Counts) -> String {
        text.split_inclusive('\n')
            .map(|l| if l.trim_start().starts_with('#') { self.text(l, depth, counts) } else { l.to_string() })
            .collect()
    }

    /// Every text rule, in order (see the module docs).
    fn text(&self, text: &str, depth: usize, counts: &mut Counts) -> String {
        let t = text::json_objects(text, |json| {
            if depth + 1 >= MAX_DEPTH {
                return None;
            }
            let mut doc = tree::Tree::parse(json, Format::Json)?;
            if doc.redact(self, depth + 1, counts) {
                doc.emit(json)
            } else {
                None
            }
        });
        self.apply(&t, &TEXT_RULES, counts)
    }

    /// The rules that need no context, for what a parsed document keeps as text (keys,
    /// comments).
    fn context_free(&self, text: &str, counts: &mut Counts) -> String {
        self.apply(text, &CONTEXT_FREE_RULES, counts)
    }

    fn apply(&self, text: &str, rules: &[Rule], counts: &mut Counts) -> String {
        let mut t = text.to_string();
        for rule in rules {
            t = match rule {
                Rule::Pattern(name, f) => {
                    let (clean, n) = f(&t);
                    add(counts, name, n);
                    clean
                }
                Rule::Generated => self.generated(&t, counts),
            };
        }
        t
    }

    /// The rule a value replaced by meaning counts under: the one the text rules would
    /// have named first (a private key block; a generated value, except in Secret data),
    /// else the one that found it. So the cluster token under `token:` still counts as
    /// the generated value it is.
    fn rule_by_value(&self, value: &str, found_by: &'static str) -> &'static str {
        if text::private_keys(value).1 > 0 {
            RULE_PRIVATE_KEY
        } else if found_by != RULE_SECRET_DATA && self.values.iter().any(|v| value.contains(v.as_str())) {
            RULE_GENERATED
        } else {
            found_by
        }
    }

    /// Every generated value, wherever it is.
    fn generated(&self, text: &str, counts: &mut Counts) -> String {
        let mut t = text.to_string();
        for v in &self.values {
            let c = t.matches(v.as_str()).count();
            if c > 0 {
                add(counts, RULE_GENERATED, c);
                t = t.replace(v.as_str(), REDACTED);
            }
        }
        t
    }
}

/// A document that parsed before redaction parses after it: where the marker landed
/// inside a tag, anchor or alias (a secret can be anywhere, not only in a value), it is
/// written as [`REDACTED_WORD`], which those tokens take. The secret went either way.
fn keep_parsing(input: &str, out: String, format: Format) -> String {
    if format == Format::Text || !out.contains(REDACTED) || !parses(input, format) || parses(&out, format) {
        return out;
    }
    let plain = out.replace(REDACTED, REDACTED_WORD);
    if parses(&plain, format) {
        plain
    } else {
        out
    }
}

/// Whether `text` parses as `format` says: JSON, or (sniffed) a YAML stream.
fn parses(text: &str, format: Format) -> bool {
    use serde::Deserialize as _;
    match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(text).is_ok(),
        Format::Sniff => serde_yaml::Deserializer::from_str(text).all(|d| serde_yaml::Value::deserialize(d).is_ok()),
        Format::Text => false,
    }
}

/// Whether a field, flag or variable name says its value is a credential. References
/// to credentials (`secretName`, `token-file`, `existingSecret`) are not credentials.
pub fn is_credential_name(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const SAYS_SECRET: [&str; 12] = [
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "credential",
        "apikey",
        "accesskey",
        "privatekey",
        "keydata",
        "mchost",
    ];
    const REFERENCE: [&str; 7] = ["file", "path", "name", "names", "ref", "dir", "ttl"];
    // Docker's and K3s' registry `auth` is base64 `user:password`.
    (n == "auth" || SAYS_SECRET.iter().any(|s| n.contains(s)))
        && !REFERENCE.iter().any(|r| n.ends_with(r))
        && !n.starts_with("existing")
}

/// Whether an environment variable's name says its value is secret: `*PASSWORD*`,
/// `*PASS`, `*PWD*`, `*SECRET*`, `*TOKEN*`, `*KEY*`, `*CREDENTIAL*` (and what
/// [`is_credential_name`] says), unless it names a file, path or directory.
pub fn is_secret_env_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    let says = ["PASSWORD", "PASSWD", "PWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"].iter().any(|s| n.contains(s))
        || n.ends_with("PASS")
        || is_credential_name(name);
    says && !["_FILE", "_PATH", "_NAME", "_DIR", "_REF"].iter().any(|s| n.ends_with(s))
}

/// `DB_PASSWORD`, not `dbPassword`: named like an environment variable.
fn is_env_shaped(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The rule under which a value goes because of the name it is under, if any.
fn secret_name_rule(name: &str) -> Option<&'static str> {
    if is_env_shaped(name) {
        is_secret_env_name(name).then_some(RULE_ENV)
    } else {
        is_credential_name(name).then_some(RULE_CREDENTIAL)
    }
}

#[cfg(test)]
mod tests;
