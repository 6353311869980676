//! The site's LDAP or Active Directory: its settings from the answers, the two presets
//! Keycloak's user federation is configured with, and the live check that proves the
//! settings work before anything is installed.
//!
//! - [`LdapSettings`]: what the `ldap:` answers section says, typed; the Keycloak realm
//!   is rendered from it ([`LdapSettings::schema`], [`LdapSettings::user_search_filter`]).
//! - [`preset`]: OpenLDAP and Active Directory as data.
//! - [`probe`]: DNS, TCP, TLS, bind and the same user search Keycloak will run, each
//!   failure its own [`ProbeErrorKind`] with a hint.
//!
//! The answers questions live in `answers/questions.rs` (the `ldap.*` block); their
//! validators are here, next to the types they protect.

pub mod preset;
pub mod probe;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::site::answers::check::{self, Invalid};
use crate::site::answers::{Answered, HostPort, Problem, Secret, DOC, REDACTED};
pub use preset::{Preset, Schema};
pub use probe::{probe, probe_with, ExampleUser, ProbeError, ProbeErrorKind, ProbeOptions, ProbeReport};

/// `ldap://` or `ldaps://`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Ldap,
    Ldaps,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ldap => "ldap",
            Scheme::Ldaps => "ldaps",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Scheme::Ldap => 389,
            Scheme::Ldaps => 636,
        }
    }
}

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `ldap://` without StartTLS: the bind password crosses the network in clear.
    Plain,
    /// `ldap://` upgraded with the StartTLS extended operation.
    StartTls,
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
}

/// A directory server address: scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapUrl {
    pub scheme: Scheme,
    pub server: HostPort,
}

impl LdapUrl {
    /// `ldap://host[:port]` or `ldaps://host[:port]`, an optional trailing `/`; IPv6 in
    /// brackets. Nothing else (no base DN, no query): those are separate answers.
    pub fn parse(s: &str) -> Result<LdapUrl, Invalid> {
        let example = "write ldaps://ldap.example.test:636 or ldap://ldap.example.test:389";
        let (scheme, rest) = if let Some(r) = s.strip_prefix("ldaps://") {
            (Scheme::Ldaps, r)
        } else if let Some(r) = s.strip_prefix("ldap://") {
            (Scheme::Ldap, r)
        } else {
            return Err(Invalid::new(format!("`{s}` is not an ldap:// or ldaps:// URL"), example));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '@', ' ']) {
            return Err(Invalid::new(
                format!("`{s}` must be just the scheme, the host and an optional port"),
                format!(
                    "{example}; the users' DN is `ldap.users_dn`, the credentials `ldap.bind_dn`/`ldap.bind_password`"
                ),
            ));
        }
        // A port is there when the text after the host (or after `]`) has a colon.
        let has_port = match rest.rfind(']') {
            Some(i) => rest[i..].contains(':'),
            None => rest.matches(':').count() == 1,
        };
        let with_port = if has_port { rest.to_string() } else { format!("{rest}:{}", scheme.default_port()) };
        let server =
            check::host_port(&with_port).map_err(|e| Invalid::new(e.cause, format!("{}; {example}", e.hint)))?;
        Ok(LdapUrl { scheme, server })
    }
}

impl fmt::Display for LdapUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.server)
    }
}

impl Serialize for LdapUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `ldap:` answers: where the directory is, how to bind, where users and groups
/// are, and which preset describes them. The bind password is a [`Secret`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LdapSettings {
    pub url: LdapUrl,
    pub starttls: bool,
    /// The CA that signed the server's certificate; `None`: the host's trusted CAs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub users_dn: String,
    pub preset: Preset,
    /// An extra filter ANDed to the preset's object classes (Keycloak's
    /// `customUserSearchFilter`), e.g. `(memberOf=cn=staff,ou=groups,dc=example,dc=org)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<String>,
    /// Where the groups are; `None`: no group mapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_dn: Option<String>,
}

impl LdapSettings {
    /// The preset's attributes and classes.
    pub fn schema(&self) -> Schema {
        self.preset.schema()
    }

    pub fn transport(&self) -> Transport {
        match (self.url.scheme, self.starttls) {
            (Scheme::Ldaps, _) => Transport::Ldaps,
            (Scheme::Ldap, true) => Transport::StartTls,
            (Scheme::Ldap, false) => Transport::Plain,
        }
    }

    /// The filter Keycloak searches users with: every user object class, ANDed with
    /// the custom filter (as Keycloak's `LDAPQuery` builds it).
    pub fn user_search_filter(&self) -> String {
        let mut f = String::from("(&");
        for class in self.schema().user_object_classes {
            f.push_str(&format!("(objectClass={class})"));
        }
        if let Some(extra) = &self.user_filter {
            f.push_str(extra);
        }
        f.push(')');
        f
    }

    /// The filter for groups under `groups_dn`.
    pub fn group_search_filter(&self) -> String {
        format!("(objectClass={})", self.schema().group_object_class)
    }

    /// Types the `ldap.*` answers; `None` when there is no `ldap` section. The
    /// validators have run by then (through `read_document`), so this only converts.
    pub fn from_answered(a: &Answered) -> Result<Option<LdapSettings>, Problem> {
        let Some(url) = a.text("ldap.url") else { return Ok(None) };
        let req = |key: &str| {
            a.text(key).map(str::to_string).ok_or_else(|| {
                Problem::new(key, "missing required key: ldap.url is set", format!("add `{key}`; see {DOC}"))
            })
        };
        let preset = req("ldap.preset")?;
        Ok(Some(LdapSettings {
            url: LdapUrl::parse(url).map_err(|e| e.problem("ldap.url"))?,
            starttls: a.text("ldap.starttls") == Some("true"),
            ca_file: a.text("ldap.ca_file").map(PathBuf::from),
            bind_dn: req("ldap.bind_dn")?,
            bind_password: Secret::new(req("ldap.bind_password")?),
            users_dn: req("ldap.users_dn")?,
            preset: Preset::parse(&preset).ok_or_else(|| {
                Problem::new("ldap.preset", format!("`{preset}` is not a preset"), "use openldap or active-directory")
            })?,
            user_filter: a.text("ldap.user_filter").map(str::to_string),
            groups_dn: a.text("ldap.groups_dn").map(str::to_string),
        }))
    }
}

/// The wizard's live check of the `ldap` section: the [`probe`] on the answers so far.
/// A failure comes back at the key to fix, with the probe's message and hint.
pub fn live_check() -> crate::site::answers::LiveCheck {
    crate::site::answers::LiveCheck {
        section: "ldap",
        run: check_answered,
        reask: crate::site::answers::wizard::Reask::Section,
        entry: None,
        skippable: true,
    }
}

fn check_answered(a: &Answered) -> Result<Option<String>, Problem> {
    let Some(settings) = LdapSettings::from_answered(a)? else { return Ok(None) };
    match probe(&settings) {
        Ok(report) => Ok(Some(report.summary())),
        Err(e) => Err(Problem::new(
            e.key(),
            format!("the live check failed ({}): {}: {}", kebab(&e.kind), e.subject, e.cause),
            e.hint.clone(),
        )),
    }
}

/// A kind's JSON spelling, for messages.
fn kebab(kind: &ProbeErrorKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

// ---- validators for the `ldap.*` questions -------------------------------------------

fn needs_url(a: &Answered, key: &str) -> Result<(), Invalid> {
    if a.has("ldap.url") {
        Ok(())
    } else {
        Err(Invalid::new("is set but ldap.url is not", format!("set ldap.url, or remove {key}")))
    }
}

/// `ldap` is required when the bundle installs Keycloak: its realm federates users
/// from the directory and has no other user source (platform/keycloak.rs). Only on
/// the node that starts the cluster, the one that renders the platform charts; the
/// servers and agents that join it do not need it.
pub(crate) fn required_for_keycloak(a: &Answered) -> Option<&'static str> {
    (a.installs_keycloak() && a.starts_cluster())
        .then_some("the bundle installs Keycloak (chart keycloakx), whose users come from this directory")
}

/// Required for every other `ldap.*` key once `ldap.url` is given.
pub(crate) fn required_with_url(a: &Answered) -> Option<&'static str> {
    a.has("ldap.url").then_some("ldap.url is set")
}

pub(crate) fn has_url(a: &Answered, _: &crate::site::answers::Facts) -> bool {
    a.has("ldap.url")
}

pub(crate) fn check_url(s: &str, _: &Answered) -> Result<(), Invalid> {
    LdapUrl::parse(s).map(|_| ())
}

pub(crate) fn check_starttls(s: &str, a: &Answered) -> Result<(), Invalid> {
    let on = match s {
        "true" => true,
        "false" => false,
        _ => return Err(Invalid::new(format!("`{s}` is not true or false"), "write true or false")),
    };
    needs_url(a, "ldap.starttls")?;
    if on && a.text("ldap.url").is_some_and(|u| u.starts_with("ldaps://")) {
        return Err(Invalid::new(
            "is true, but ldap.url is ldaps://, which is TLS already",
            "set starttls: false for ldaps://, or use ldap:// with starttls: true",
        ));
    }
    Ok(())
}

pub(crate) fn check_ca_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    needs_url(a, "ldap.ca_file")?;
    let tls = a.text("ldap.url").is_some_and(|u| u.starts_with("ldaps://")) || a.text("ldap.starttls") == Some("true");
    if !tls {
        return Err(Invalid::new(
            "is set, but the connection is not TLS (ldap:// without starttls)",
            "use ldaps://, or set ldap.starttls: true, so the certificate is checked against this CA",
        ));
    }
    Ok(())
}

/// A distinguished name: `attr=value` parts separated by commas (escaped commas
/// allowed). Deeper syntax is the server's to judge, and the live check asks it.
pub(crate) fn dn(s: &str) -> Result<(), Invalid> {
    let example = "write a DN such as cn=keycloak,ou=services,dc=example,dc=org";
    if s.trim().is_empty() || s.chars().any(char::is_control) {
        return Err(Invalid::new("is empty or contains a line break", example));
    }
    let mut parts = Vec::new();
    let (mut cur, mut escaped) = (String::new(), false);
    for c in s.chars() {
        match (c, escaped) {
            (',', false) => parts.push(std::mem::take(&mut cur)),
            ('\\', false) => {
                escaped = true;
                cur.push(c);
                continue;
            }
            _ => cur.push(c),
        }
        escaped = false;
    }
    parts.push(cur);
    if let Some(bad) =
        parts.iter().find(|p| !p.split_once('=').is_some_and(|(k, v)| !k.trim().is_empty() && !v.is_empty()))
    {
        return Err(Invalid::new(format!("`{s}` is not a DN: `{bad}` is not attribute=value"), example));
    }
    Ok(())
}

pub(crate) fn check_bind_dn(s: &str, a: &Answered) -> Result<(), Invalid> {
    dn(s)?;
    needs_url(a, "ldap.bind_dn")
}

/// Never quotes the value: it is a secret.
pub(crate) fn check_bind_password(s: &str, a: &Answered) -> Result<(), Invalid> {
    if s == REDACTED {
        return Err(Invalid::new(
            "is the placeholder `<redacted>`",
            "saved answers leave secrets out; write the real password here",
        ));
    }
    // An empty password makes a simple bind "unauthenticated", which many servers
    // accept without checking anything: it would pass the live check and fail later.
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(Invalid::new("is empty or contains a line break", "write the bind account's password on one line"));
    }
    needs_url(a, "ldap.bind_password")?;
    if !a.has("ldap.bind_dn") {
        return Err(Invalid::new("is set but ldap.bind_dn is not", "set ldap.bind_dn as well"));
    }
    Ok(())
}

pub(crate) fn check_users_dn(s: &str, a: &Answered) -> Result<(), Invalid> {
    dn(s)?;
    needs_url(a, "ldap.users_dn")
}

pub(crate) fn check_groups_dn(s: &str, a: &Answered) -> Result<(), Invalid> {
    dn(s)?;
    needs_url(a, "ldap.groups_dn")
}

pub(crate) fn preset_names(_: &crate::site::answers::Facts) -> Vec<String> {
    Preset::ALL.iter().map(|p| p.as_str().to_string()).collect()
}

pub(crate) fn bool_names(_: &crate::site::answers::Facts) -> Vec<String> {
    vec!["false".into(), "true".into()]
}

pub(crate) fn check_preset(s: &str, a: &Answered) -> Result<(), Invalid> {
    if Preset::parse(s).is_none() {
        return Err(Invalid::new(
            format!("`{s}` is not a preset"),
            "use openldap (uid, inetOrgPerson, groupOfNames) or active-directory (sAMAccountName, user, group)",
        ));
    }
    needs_url(a, "ldap.preset")
}

/// An LDAP filter in parentheses, balanced; the server parses the rest.
pub(crate) fn check_user_filter(s: &str, a: &Answered) -> Result<(), Invalid> {
    let hint = "write one filter in parentheses, e.g. (memberOf=cn=staff,ou=groups,dc=example,dc=org)";
    let mut depth = 0i32;
    let mut closed_at_zero = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    closed_at_zero += 1;
                }
            }
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    if !s.starts_with('(') || !s.ends_with(')') || depth != 0 || closed_at_zero != 1 || ldap3::parse_filter(s).is_err()
    {
        return Err(Invalid::new(format!("`{s}` is not one LDAP filter"), hint));
    }
    needs_url(a, "ldap.user_filter")
}

pub(crate) fn suggest_preset(_: &Answered, _: &crate::site::answers::Facts) -> Option<String> {
    Some(Preset::OpenLdap.as_str().into())
}

pub(crate) fn suggest_starttls(a: &Answered, _: &crate::site::answers::Facts) -> Option<String> {
    // ldap:// without StartTLS sends the bind password in clear; offer protection first.
    Some(if a.text("ldap.url").is_some_and(|u| u.starts_with("ldap://")) { "true" } else { "false" }.into())
}

/// Asked only when the URL is `ldap://` (StartTLS does not apply to ldaps://).
pub(crate) fn asks_starttls(a: &Answered, _: &crate::site::answers::Facts) -> bool {
    a.text("ldap.url").is_some_and(|u| u.starts_with("ldap://"))
}

/// Asked only when the connection is TLS.
pub(crate) fn asks_ca_file(a: &Answered, _: &crate::site::answers::Facts) -> bool {
    a.text("ldap.url").is_some_and(|u| u.starts_with("ldaps://")) || a.text("ldap.starttls") == Some("true")
}

#[cfg(test)]
mod tests;
