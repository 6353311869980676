//! The text rules: what redacts text that does not parse as a document (env files,
//! INI, unit files, logs, a document cut at the size limit), line by line and pattern
//! by pattern. Each returns the text and how many values it replaced; none replaces
//! what an earlier rule already replaced, so a value is counted once.

use std::sync::OnceLock;

use base64::Engine as _;
use regex::{Captures, Regex};

use super::{secret_name_rule, REDACTED};

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("redaction patterns are valid"))
}

/// PEM private key blocks (any kind: RSA, EC, PKCS#8, encrypted, OpenSSH, PGP), a block cut
/// off by truncation, and base64-wrapped PEM keys (`client-key-data`, Secret data).
pub(super) fn private_keys(text: &str) -> (String, usize) {
    static BLOCK: OnceLock<Regex> = OnceLock::new();
    static OPEN: OnceLock<Regex> = OnceLock::new();
    static WRAPPED: OnceLock<Regex> = OnceLock::new();
    let mut n = 0;
    let block = re(
        &BLOCK,
        r"(?s)-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----(.*?)-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
    );
    // One line, so a key inside a YAML block scalar leaves the YAML intact.
    let t = block.replace_all(text, |c: &Captures| {
        if &c[2] == REDACTED {
            return c[0].to_string();
        }
        n += 1;
        format!("-----BEGIN {k}-----{REDACTED}-----END {k}-----", k = &c[1])
    });
    // A block cut off by truncation: a BEGIN line not followed by what the block rule
    // wrote (no lookahead in `regex`, so by hand).
    let open = re(&OPEN, r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----");
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
/// Kubernetes Secret, block style or flow on one line, and in JSON that says `"kind":
/// "Secret"` (a JSON Secret cut at the size limit). Block scalars are dropped with
/// their key's value.
pub(super) fn secret_data(text: &str) -> (String, usize) {
    let (t, n) = yaml_secret_data(text);
    let (t, m) = json_secret_data(&t);
    (t, n + m)
}

fn yaml_secret_data(text: &str) -> (String, usize) {
    static KIND: OnceLock<Regex> = OnceLock::new();
    static DATA: OnceLock<Regex> = OnceLock::new();
    static KEY: OnceLock<Regex> = OnceLock::new();
    let kind = re(&KIND, r#"(?m)^\s*(- )?kind:\s*["']?Secret["']?\s*(#.*)?$"#);
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

/// `"data": {…}`/`"stringData": {…}` objects in text that mentions `"kind": "Secret"`:
/// every value in them, up to the object's end or the end of the text.
fn json_secret_data(text: &str) -> (String, usize) {
    static KIND: OnceLock<Regex> = OnceLock::new();
    static DATA: OnceLock<Regex> = OnceLock::new();
    static VALUE: OnceLock<Regex> = OnceLock::new();
    if !re(&KIND, r#""kind"\s*:\s*"Secret""#).is_match(text) {
        return (text.to_string(), 0);
    }
    let data = re(&DATA, r#""(?:data|stringData)"\s*:\s*\{"#);
    let value = re(&VALUE, r#"("(?:[^"\\]|\\.)*"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\s]+)"#);
    let mut n = 0;
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for m in data.find_iter(text) {
        if m.start() < pos {
            continue;
        }
        let end = object_end(text, m.end());
        out.push_str(&text[pos..m.end()]);
        let body = value.replace_all(&text[m.end()..end], |c: &Captures| {
            if &c[2] == "null" || c[2].trim_matches('"') == REDACTED {
                return c[0].to_string();
            }
            n += 1;
            format!("{}\"{REDACTED}\"", &c[1])
        });
        out.push_str(&body);
        pos = end;
    }
    out.push_str(&text[pos..]);
    (out, n)
}

/// Where the JSON object whose body starts at `start` ends (at its `}`), or the text's
/// end when it was cut off.
fn object_end(text: &str, start: usize) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, ch) in text[start..].char_indices() {
        match (in_string, ch) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_string = false,
            (false, '"') => in_string = true,
            (false, '{') => depth += 1,
            (false, '}') if depth == 0 => return start + i,
            (false, '}') => depth -= 1,
            _ => {}
        }
    }
    text.len()
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

/// A field, flag or variable name that says secret, as a variable (`SMTP_PASS`) or a
/// field (`bindCredential`).
fn says_secret(name: &str) -> bool {
    secret_name_rule(name).is_some()
}

fn is_harmless_value(v: &str) -> bool {
    let v = v.trim().trim_end_matches(',');
    // A flat array of what another rule left (`["<redacted>"]`).
    if let Some(items) = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        return items.split(',').all(is_harmless_value);
    }
    let v = v.trim_matches(|c| c == '"' || c == '\'');
    v.is_empty() || v == REDACTED || matches!(v, "true" | "false" | "null" | "~" | "{}" | "[]") || v.starts_with('#')
}

/// `NAME=value` where NAME says credential: env files, `Environment=` lines, logs
/// (logfmt `token=…` too).
pub(super) fn env_assignments(text: &str) -> (String, usize) {
    static ENV: OnceLock<Regex> = OnceLock::new();
    let env = re(&ENV, r#"\b([A-Za-z_][A-Za-z0-9_]*)=("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#);
    let mut n = 0;
    let t = env.replace_all(text, |c: &Captures| {
        let name = &c[1];
        // `--token=…` is a flag: the credential rule's.
        let flag = text[..c.get(0).expect("match").start()].ends_with('-');
        let value = &c[2];
        if let Some(q) = value.chars().next().filter(|q| (*q == '"' || *q == '\'') && !says_secret(name)) {
            // `Environment="K3S_TOKEN=…"`: the assignment is inside the quotes.
            let (inner, m) = env_assignments(&value[1..value.len() - 1]);
            n += m;
            return format!("{name}={q}{inner}{q}");
        }
        if flag || !says_secret(name) || is_harmless_value(value) {
            return c[0].to_string();
        }
        n += 1;
        format!("{name}={REDACTED}")
    });
    (t.into_owned(), n)
}

/// An env var as a container lists it, in YAML or pretty JSON that did not parse (cut
/// at the size limit): `- name: DB_PASSWORD` and, aligned on the next line, `value: …`.
pub(super) fn env_pairs(text: &str) -> (String, usize) {
    static PAIR: OnceLock<Regex> = OnceLock::new();
    let pair = re(
        &PAIR,
        r#"(?m)^([ \t]*(?:- )?)"?name"?[ \t]*:[ \t]*["']?([A-Za-z_][A-Za-z0-9_.\-]*)["']?,?[ \t]*\r?\n([ \t]*)"?value"?[ \t]*:[ \t]*(.*)$"#,
    );
    let mut n = 0;
    let t = pair.replace_all(text, |c: &Captures| {
        let value = c[4].trim_end();
        if c[3].len() != c[1].len() || !says_secret(&c[2]) || is_harmless_value(value) {
            return c[0].to_string();
        }
        n += 1;
        let whole = c.get(0).expect("match");
        let head = &c[0][..c.get(4).expect("value").start() - whole.start()];
        let quoted = if value.starts_with('"') { format!("\"{REDACTED}\"") } else { REDACTED.to_string() };
        let comma = if value.ends_with(',') { "," } else { "" };
        format!("{head}{quoted}{comma}")
    });
    (t.into_owned(), n)
}

/// YAML/INI fields at a line's start, JSON fields anywhere, `--flag=value`/`--flag
/// value`.
pub(super) fn credential_fields(text: &str) -> (String, usize) {
    static LINE: OnceLock<Regex> = OnceLock::new();
    static JSON: OnceLock<Regex> = OnceLock::new();
    static FLAG: OnceLock<Regex> = OnceLock::new();
    let line_re = re(&LINE, r#"^(\s*(?:- )?)(["']?)([A-Za-z0-9_.\-]+)(["']?)(\s*[:=][ \t]*)(.*)$"#);
    // Values are strings, flat arrays or scalars: an object or nested array is not a
    // value to match across, or a credential inside it would be skipped with it.
    let json = re(&JSON, r#""([A-Za-z0-9_.\-]+)"(\s*:\s*)("(?:[^"\\]|\\.)*"|\[[^\[\]{}\n]*\]|[^,}\]\[{\s"]+)"#);
    let flag = re(&FLAG, r"(--([A-Za-z0-9\-]+)(?:=|\s+))([^\s-][^\s]*)");
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
            if !json_one_line && says_secret(&c[3]) && !is_harmless_value(value) {
                n += 1;
                let sep = c[5].trim_end();
                // `key: value` keeps its space; `key:value` (in YAML one plain scalar,
                // not a mapping) gets none, or redacting would turn the text into a
                // mapping and a file that parsed as YAML would no longer parse.
                let space = if sep.ends_with(':') && c[5].len() > sep.len() { " " } else { "" };
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
            if says_secret(&c[1]) && !is_harmless_value(&c[3]) {
                n += 1;
                format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
            } else {
                c[0].to_string()
            }
        });
        let l = flag.replace_all(&l, |c: &Captures| {
            if says_secret(&c[2]) && !is_harmless_value(&c[3]) {
                n += 1;
                format!("{}{REDACTED}", &c[1])
            } else {
                c[0].to_string()
            }
        });
        out.push_str(&l);
        out.push_str(nl);
    }
    (out, n)
}

/// `Bearer`/`Basic` credentials (an `Authorization` header in a log).
pub(super) fn bearer_tokens(text: &str) -> (String, usize) {
    static BEARER: OnceLock<Regex> = OnceLock::new();
    let bearer = re(&BEARER, r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}");
    let mut n = 0;
    let t = bearer.replace_all(text, |c: &Captures| {
        n += 1;
        format!("{} {REDACTED}", &c[1])
    });
    (t.into_owned(), n)
}

/// The password in `scheme://user:password@host`. Up to the last `@` of the word, so a
/// password holding `@` or `/` goes whole (and sometimes some of the host with it).
pub(super) fn url_passwords(text: &str) -> (String, usize) {
    static URL: OnceLock<Regex> = OnceLock::new();
    let url = re(&URL, r#"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@"'`]+):([^\s"'`]+)@"#);
    let mut n = 0;
    let t = url.replace_all(text, |c: &Captures| {
        if c[2].starts_with(REDACTED) {
            return c[0].to_string();
        }
        n += 1;
        format!("{}:{REDACTED}@", &c[1])
    });
    (t.into_owned(), n)
}

/// Connection strings: `password=…` (libpq, query strings), `Password=…;` (ADO.NET,
/// JDBC properties), `pwd=…` (URLs are [`url_passwords`]).
pub(super) fn connection_strings(text: &str) -> (String, usize) {
    static PAIR: OnceLock<Regex> = OnceLock::new();
    // `\b` before the name: `DB_PASSWORD=` is an env assignment, the env rule's.
    let pair = re(&PAIR, r#"(?i)\b(password|passwd|pwd|pass)(\s*=\s*)("[^"\n]*"|'[^'\n]*'|[^;&\s"'`]+)"#);
    let mut n = 0;
    let t = pair.replace_all(text, |c: &Captures| {
        if is_harmless_value(&c[3]) {
            return c[0].to_string();
        }
        n += 1;
        format!("{}{}{REDACTED}", &c[1], &c[2])
    });
    (t.into_owned(), n)
}

/// K3s join tokens, `K10<CA hash>::<user>:<password>`, whole.
pub(super) fn join_tokens(text: &str) -> (String, usize) {
    static TOKEN: OnceLock<Regex> = OnceLock::new();
    let token = re(&TOKEN, r#"K10[0-9a-fA-F]{6,}::[A-Za-z0-9._\-]+:([^\s"'`,;]+)"#);
    let mut n = 0;
    let t = token.replace_all(text, |c: &Captures| {
        if c[1].starts_with(REDACTED) {
            return c[0].to_string();
        }
        n += 1;
        REDACTED.to_string()
    });
    (t.into_owned(), n)
}

/// The JSON object on each line that holds one (structured logs, a manifest quoted in a
/// log line), replaced by what `redact` makes of it when that is something.
pub(super) fn json_objects(text: &str, mut redact: impl FnMut(&str) -> Option<String>) -> String {
    if !text.contains('{') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let span = line.find('{').zip(line.rfind('}')).filter(|(a, b)| a < b);
        match span.and_then(|(a, b)| Some((a, b, redact(&line[a..=b])?))) {
            Some((a, b, clean)) => {
                out.push_str(&line[..a]);
                out.push_str(&clean);
                out.push_str(&line[b + 1..]);
            }
            None => out.push_str(line),
        }
    }
    out
}
