//! Redaction of collected text: what makes a support bundle safe to hand over.
//!
//! Two kinds of knowledge, applied to every collected text in this order:
//! 1. structure — PEM private key blocks (also base64-wrapped, as in kubeconfigs), the
//!    `data`/`stringData` values of Kubernetes Secrets;
//! 2. values — every secret the installer generated (the files under
//!    `/var/lib/airlock/secrets`), literally and base64-encoded, wherever it appears;
//! 3. names — environment assignments (`K3S_TOKEN=…`), and fields, flags and URL
//!    passwords whose key says credential (`token:`, `"bindCredential": [...]`,
//!    `--password=…`, `postgres://u:…@h`).
//!
//! Structure and names catch secrets nobody told us about (an operator's hand-edited
//! manifest); values catch ours wherever they are copied, even under a key with an
//! innocent name. Redaction errs on the side of removing too much: a support engineer
//! can ask for a value, a leaked one cannot be taken back. Counts are kept per rule,
//! never the values.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine as _;
use regex::{Captures, Regex};

/// What replaces a value.
pub const REDACTED: &str = "<redacted>";

pub const RULE_PRIVATE_KEY: &str = "private-key-block";
pub const RULE_SECRET_DATA: &str = "kubernetes-secret-data";
pub const RULE_GENERATED: &str = "generated-secret-value";
pub const RULE_ENV: &str = "env-credential";
pub const RULE_CREDENTIAL: &str = "credential-field";

/// Every rule, in the order they run.
pub const RULES: [&str; 5] = [RULE_PRIVATE_KEY, RULE_SECRET_DATA, RULE_GENERATED, RULE_ENV, RULE_CREDENTIAL];

/// Generated secrets shorter than this are not replaced by value (they would match
/// everywhere); the rules by structure and name still apply to them.
pub const MIN_VALUE_LEN: usize = 6;

/// Redaction counts, rule → number of values replaced.
pub type Counts = BTreeMap<String, usize>;

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

    /// The text with every rule applied, and how often each one fired.
    pub fn redact(&self, text: &str) -> (String, Counts) {
        let mut counts = Counts::new();
        let mut add = |rule: &str, n: usize| {
            if n > 0 {
                *counts.entry(rule.to_string()).or_default() += n;
            }
        };
        let (t, n) = private_keys(text);
        add(RULE_PRIVATE_KEY, n);
        let (t, n) = secret_data(&t);
        add(RULE_SECRET_DATA, n);
        let mut t = t;
        let mut n = 0;
        for v in &self.values {
            let c = t.matches(v.as_str()).count();
            if c > 0 {
                n += c;
                t = t.replace(v.as_str(), REDACTED);
            }
        }
        add(RULE_GENERATED, n);
        let (t, n) = env_assignments(&t);
        add(RULE_ENV, n);
        let (t, n) = credential_fields(&t);
        add(RULE_CREDENTIAL, n);
        (t, counts)
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("redaction patterns are valid"))
}

/// PEM private key blocks (any kind: RSA, EC, PKCS#8, encrypted, OpenSSH), a block cut
/// off by truncation, and base64-wrapped PEM keys (`client-key-data`, Secret data).
fn private_keys(text: &str) -> (String, usize) {
    static BLOCK: OnceLock<Regex> = OnceLock::new();
    static OPEN: OnceLock<Regex> = OnceLock::new();
    static WRAPPED: OnceLock<Regex> = OnceLock::new();
    let mut n = 0;
    let block = re(&BLOCK, r"(?s)-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----");
    // One line, so a key inside a YAML block scalar leaves the YAML intact.
    let t = block.replace_all(text, |c: &Captures| {
        n += 1;
        format!("-----BEGIN {k}-----{REDACTED}-----END {k}-----", k = &c[1])
    });
    // A block cut off by truncation: a BEGIN line not followed by what the block rule
    // wrote (no lookahead in `regex`, so by hand).
    let open = re(&OPEN, r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----");
    let cut = open.captures_iter(&t).find(|c| !t[c.get(0).expect("match").end()..].starts_with(REDACTED));
    let t = match cut {
        Some(c) => {
            n += 1;
            let start = c.get(0).expect("match").start();
            format!("{}-----BEGIN {}-----{REDACTED} (truncated)", &t[..start], &c[1])
        }
        None => t.into_owned(),
    };
    // base64("-----BEGIN") starts with "LS0tLS1CRUdJT"; decode to be sure it is a key.
    let wrapped = re(&WRAPPED, r"LS0tLS1CRUdJT[A-Za-z0-9+/=]*");
    let t = wrapped.replace_all(&t, |c: &Captures| {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(c[0].trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(c[0].trim_end_matches('=')))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // A cut-off base64 key decodes to garbage at its end; its start still says.
        if decoded.contains("PRIVATE KEY") || !decoded.starts_with("-----BEGIN CERTIFICATE") {
            n += 1;
            REDACTED.to_string()
        } else {
            c[0].to_string()
        }
    });
    (t.into_owned(), n)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The values under `data:`/`stringData:` in every YAML document that is (or lists) a
/// Kubernetes Secret. Block scalars are dropped with their key's value.
fn secret_data(text: &str) -> (String, usize) {
    static KIND: OnceLock<Regex> = OnceLock::new();
    static DATA: OnceLock<Regex> = OnceLock::new();
    static KEY: OnceLock<Regex> = OnceLock::new();
    let kind = re(&KIND, r#"(?m)^\s*(- )?kind:\s*["']?Secret["']?\s*$"#);
    let data = re(&DATA, r"^(\s*(?:- )?)(data|stringData):\s*(.*)$");
    let key = re(&KEY, r#"^(\s*)("[^"]*"|'[^']*'|[^:#\s][^:]*):(\s*)(.*)$"#);
    let mut n = 0;
    let mut out = String::with_capacity(text.len());
    for (i, doc) in split_documents(text).into_iter().enumerate() {
        if i > 0 {
            out.push_str("---");
        }
        if !kind.is_match(doc) {
            out.push_str(doc);
            continue;
        }
        let mut lines = doc.split_inclusive('\n').peekable();
        while let Some(line) = lines.next() {
            let body = line.trim_end_matches(['\n', '\r']);
            let Some(c) = data.captures(body) else {
                out.push_str(line);
                continue;
            };
            let rest = c[3].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                // Flow style `data: {a: b}`: the whole mapping goes.
                if rest != "{}" && rest != "null" {
                    n += 1;
                    out.push_str(&format!("{}{}: {REDACTED}\n", &c[1], &c[2]));
                } else {
                    out.push_str(line);
                }
                continue;
            }
            out.push_str(line);
            let base = c[1].len();
            let mut child: Option<usize> = None;
            let mut dropping: Option<usize> = None;
            while let Some(next) = lines.peek() {
                let b = next.trim_end_matches(['\n', '\r']);
                if b.trim().is_empty() {
                    if dropping.is_none() {
                        out.push_str(next);
                    }
                    lines.next();
                    continue;
                }
                let ind = indent(b);
                if ind <= base {
                    break;
                }
                if let Some(d) = dropping {
                    if ind > d {
                        lines.next();
                        continue;
                    }
                    dropping = None;
                }
                let ci = *child.get_or_insert(ind);
                if ind == ci {
                    if let Some(k) = key.captures(b) {
                        let v = k[4].trim();
                        if v.is_empty() || v.starts_with('|') || v.starts_with('>') {
                            dropping = Some(ind);
                        }
                        if v != REDACTED {
                            n += 1;
                        }
                        out.push_str(&format!("{}{}: {REDACTED}\n", &k[1], &k[2]));
                        lines.next();
                        continue;
                    }
                }
                // Anything else inside the mapping (a continuation line) goes too.
                lines.next();
            }
        }
    }
    (out, n)
}

/// Splits YAML text at `---` document markers (kept out of the parts).
fn split_documents(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" && line.starts_with("---") {
            parts.push(&text[start..pos]);
            start = pos + 3;
        }
        pos += line.len();
    }
    parts.push(&text[start..]);
    parts
}

/// Whether a field, flag or variable name says its value is a credential. References
/// to credentials (`secretName`, `token-file`, `existingSecret`) are not credentials.
pub fn is_credential_name(name: &str) -> bool {
    let n: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const SAYS_SECRET: [&str; 11] = [
        "token",
        "password",
        "passwd",
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
    SAYS_SECRET.iter().any(|s| n.contains(s)) && !REFERENCE.iter().any(|r| n.ends_with(r)) && !n.starts_with("existing")
}

fn is_harmless_value(v: &str) -> bool {
    let v = v.trim().trim_end_matches(',').trim_matches(|c| c == '"' || c == '\'');
    v.is_empty() || v == REDACTED || matches!(v, "true" | "false" | "null" | "~" | "{}" | "[]") || v.starts_with('#')
}

/// `NAME=value` where NAME says credential: env files, `Environment=` lines, logs.
fn env_assignments(text: &str) -> (String, usize) {
    static ENV: OnceLock<Regex> = OnceLock::new();
    let env = re(&ENV, r#"\b([A-Z][A-Z0-9_]*)=("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#);
    let mut n = 0;
    let t = env.replace_all(text, |c: &Captures| {
        let name = &c[1];
        let says =
            ["TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "_KEY", "APIKEY"].iter().any(|s| name.contains(s))
                && !["_FILE", "_PATH", "_NAME", "_DIR"].iter().any(|s| name.ends_with(s));
        if !says || is_harmless_value(&c[2]) {
            return c[0].to_string();
        }
        n += 1;
        format!("{name}={REDACTED}")
    });
    (t.into_owned(), n)
}

/// YAML/INI fields at a line's start, JSON fields anywhere, `--flag=value`/`--flag
/// value`, `Bearer` tokens and passwords in URLs.
fn credential_fields(text: &str) -> (String, usize) {
    static LINE: OnceLock<Regex> = OnceLock::new();
    static JSON: OnceLock<Regex> = OnceLock::new();
    static FLAG: OnceLock<Regex> = OnceLock::new();
    static BEARER: OnceLock<Regex> = OnceLock::new();
    static URL: OnceLock<Regex> = OnceLock::new();
    let line_re = re(&LINE, r#"^(\s*(?:- )?)(["']?)([A-Za-z0-9_.\-]+)(["']?)(\s*[:=][ \t]*)(.*)$"#);
    // Values are strings, flat arrays or scalars: an object or nested array is not a
    // value to match across, or a credential inside it would be skipped with it.
    let json = re(&JSON, r#""([A-Za-z0-9_.\-]+)"(\s*:\s*)("(?:[^"\\]|\\.)*"|\[[^\[\]{}\n]*\]|[^,}\]\[{\s"]+)"#);
    let flag = re(&FLAG, r"(--([A-Za-z0-9\-]+)(?:=|\s+))([^\s-][^\s]*)");
    let bearer = re(&BEARER, r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}");
    let url = re(&URL, r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+):([^@\s/]+)@");
    let mut n = 0;
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(raw) = lines.next() {
        let nl = &raw[raw.trim_end_matches(['\n', '\r']).len()..];
        let body = raw.trim_end_matches(['\n', '\r']);
        let mut line = body.to_string();
        if let Some(c) = line_re.captures(body) {
            let value = c[6].trim();
            // Quoted keys are JSON: one-line values are the JSON rule's (it keeps the
            // quotes and commas); only an array opened here and closed lines later is
            // this rule's.
            let opens_array = value.starts_with('[') && !value.contains(']');
            let json_one_line = !c[2].is_empty() && !opens_array;
            if !json_one_line && is_credential_name(&c[3]) && !is_harmless_value(value) {
                n += 1;
                let sep = c[5].trim_end();
                let space = if sep.ends_with(':') { " " } else { "" };
                line = format!("{}{}{}{}{sep}{space}{REDACTED}", &c[1], &c[2], &c[3], &c[4]);
                // A multi-line value goes whole: a block scalar (deeper lines) or an
                // open JSON array (up to its `]`).
                let base = indent(body);
                if value.starts_with('|') || value.starts_with('>') {
                    while let Some(next) = lines.peek() {
                        let b = next.trim_end_matches(['\n', '\r']);
                        if !b.trim().is_empty() && indent(b) <= base {
                            break;
                        }
                        lines.next();
                    }
                } else if value.starts_with('[') && !value.contains(']') {
                    for next in lines.by_ref() {
                        if next.contains(']') {
                            if next.trim_end().ends_with(',') {
                                line.push(',');
                            }
                            break;
                        }
                    }
                }
                out.push_str(&line);
                out.push_str(nl);
                continue;
            }
        }
        let l = json.replace_all(&line, |c: &Captures| {
            if is_credential_name(&c[1]) && !is_harmless_value(&c[3]) {
                n += 1;
                format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
            } else {
                c[0].to_string()
            }
        });
        let l = flag.replace_all(&l, |c: &Captures| {
            if is_credential_name(&c[2]) && !is_harmless_value(&c[3]) {
                n += 1;
                format!("{}{REDACTED}", &c[1])
            } else {
                c[0].to_string()
            }
        });
        let l = bearer.replace_all(&l, |c: &Captures| {
            n += 1;
            format!("{} {REDACTED}", &c[1])
        });
        let l = url.replace_all(&l, |c: &Captures| {
            if &c[2] == REDACTED {
                return c[0].to_string();
            }
            n += 1;
            format!("{}:{REDACTED}@", &c[1])
        });
        out.push_str(&l);
        out.push_str(nl);
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> (String, Counts) {
        Redactor::new(&["0123456789abcdef0123456789abcdef".to_string()]).redact(text)
    }

    #[test]
    fn a_pem_private_key_block_goes_and_a_certificate_stays() {
        let text = "ca.crt: |\n  -----BEGIN CERTIFICATE-----\n  MIIBcert\n  -----END CERTIFICATE-----\n\
                    tls.key: |\n  -----BEGIN EC PRIVATE KEY-----\n  MHcCAQEEIsecretkeybytes\n  -----END EC PRIVATE KEY-----\n";
        let (t, c) = redact(text);
        assert!(!t.contains("secretkeybytes") && t.contains("MIIBcert"), "{t}");
        assert_eq!(c[RULE_PRIVATE_KEY], 1);
        let (t, _) = redact("-----BEGIN PRIVATE KEY-----\nMIIEvQcutoff");
        assert!(!t.contains("MIIEvQcutoff"), "{t}");
        let wrapped = base64::engine::general_purpose::STANDARD.encode("-----BEGIN RSA PRIVATE KEY-----\nabc\n");
        let (t, c) = redact(&format!("    client-cert: x\n    other: {wrapped}\n"));
        assert!(!t.contains(&wrapped) && c[RULE_PRIVATE_KEY] == 1, "{t}");
    }

    #[test]
    fn secret_data_and_string_data_values_go_including_block_scalars() {
        let text = "apiVersion: v1\nkind: ConfigMap\ndata:\n  keep: me\n---\napiVersion: v1\nkind: Secret\n\
                    metadata:\n  name: ldap\nstringData:\n  bind: hunter2hunter2\n  realm.json: |\n    {\"x\": \"deep\"}\n\
                    \n    more\ndata:\n  k: aGVsbG8=\ntype: Opaque\n";
        let (t, c) = redact(text);
        assert!(t.contains("keep: me"), "{t}");
        for gone in ["hunter2hunter2", "deep", "more", "aGVsbG8="] {
            assert!(!t.contains(gone), "{gone} in {t}");
        }
        assert!(t.contains("name: ldap") && t.contains("type: Opaque") && t.contains("---\n"), "{t}");
        assert_eq!(c[RULE_SECRET_DATA], 3);
        serde_yaml::Deserializer::from_str(&t).for_each(|d| {
            serde_yaml::Value::deserialize(d).expect("still YAML");
        });
    }

    use serde::Deserialize as _;

    #[test]
    fn generated_values_go_wherever_they_are_also_base64_encoded() {
        let tok = "0123456789abcdef0123456789abcdef";
        let b64 = base64::engine::general_purpose::STANDARD.encode(tok);
        let (t, c) = redact(&format!("cluster: K10abc::server:{tok}\nnote: {b64}\n"));
        assert!(!t.contains(tok) && !t.contains(&b64), "{t}");
        assert_eq!(c[RULE_GENERATED], 2);
    }

    #[test]
    fn credentials_by_name_in_yaml_json_env_flags_and_urls() {
        let text = "token: abcdefgh\ntoken-file: /etc/airlock/join-token\nsecretName: tls\n\
                    K3S_TOKEN=tok-value-1\nEnvironment=\"RKE2_TOKEN=tok-value-2\"\n\
                    {\"bindCredential\": [\"ldap-pass-1\"], \"bindDn\": \"cn=admin\"}\n\
                    {\"components\": [{\"config\": {\"bindCredential\": [\"ldap-pass-3\"]}}]}\n\
                    \"bindCredential\" : [\n  \"ldap-pass-2\"\n],\n\
                    ExecStart=/usr/local/bin/k3s server --token=flag-tok-1 --node-name n1\n\
                    url: postgres://app:db-pass-1@db:5432/app\n\
                    Authorization: Bearer eyJhbGciOiJSUzI1NiJ9\n\
                    password: |\n  multi-line-pass\nnext: 1\nautomountServiceAccountToken: false\n";
        let (t, c) = redact(text);
        for gone in [
            "abcdefgh",
            "tok-value-1",
            "tok-value-2",
            "ldap-pass-1",
            "ldap-pass-2",
            "ldap-pass-3",
            "flag-tok-1",
            "db-pass-1",
            "eyJhbGci",
            "multi-line-pass",
        ] {
            assert!(!t.contains(gone), "{gone} in\n{t}");
        }
        for kept in
            ["/etc/airlock/join-token", "secretName: tls", "cn=admin", "--node-name n1", "next: 1", "Token: false"]
        {
            assert!(t.contains(kept), "{kept} lost in\n{t}");
        }
        assert_eq!(c[RULE_ENV], 2, "{c:?}");
        assert_eq!(c[RULE_CREDENTIAL], 8, "{c:?}");
    }

    #[test]
    fn short_generated_values_are_counted_not_matched_everywhere() {
        let r = Redactor::new(&["abc".to_string(), "   ".to_string()]);
        assert_eq!(r.too_short, 1);
        assert_eq!(r.redact("abc abc").0, "abc abc");
    }
}
