//! The live check of the LDAP settings: the same connection, bind and user search
//! Keycloak will do, run from the installer before anything is installed.
//!
//! Each stage is checked on its own so a failure says which one broke: the name is
//! resolved here (not inside the LDAP library) and the TCP connection is opened here
//! with a timeout, then handed to `ldap3` for TLS (ldaps or StartTLS, trusting exactly
//! the given CA), the bind and the searches. The bind password is never part of a
//! message, a report or a log line.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use airlock_format::error::{Error, ErrorKind};
use ldap3::{LdapConn, LdapConnSettings, LdapError, LdapResult, Scope, SearchEntry, SearchOptions, StdStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use serde::Serialize;

use super::{LdapSettings, Preset, Transport};
use crate::site::answers::Address;

/// Limits of one probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// For each stage: the name lookup, the TCP connect (all addresses together), the
    /// TLS handshake (StartTLS included) and each LDAP operation. Away from the site
    /// network a stage may get no answer at all; it then fails after this long.
    pub timeout: Duration,
    /// Entries counted at most per search; a bigger directory reports "at least".
    pub size_limit: i32,
    /// Looks a host name up (the system resolver, `getaddrinfo`). A seam for tests: a
    /// resolver that never answers must not hold the probe.
    pub resolve: fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        // Active Directory answers at most 1000 entries per unpaged search by default.
        Self { timeout: Duration::from_secs(10), size_limit: 1000, resolve: system_resolve }
    }
}

/// The system resolver (`/etc/hosts`, `/etc/resolv.conf`, as `getent hosts` does).
pub fn system_resolve(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    (name, port).to_socket_addrs().map(Iterator::collect)
}

/// What the directory looked like to the probe. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub url: String,
    pub transport: Transport,
    /// The addresses the host name resolved to; the first one answered.
    pub addresses: Vec<String>,
    pub bind_dn: String,
    pub preset: Preset,
    pub users_dn: String,
    /// The filter the users were searched with (Keycloak's).
    pub user_filter: String,
    pub users: usize,
    /// `users` hit the size limit: there are at least that many.
    pub users_capped: bool,
    pub example_user: ExampleUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups_dn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub groups_capped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_group: Option<String>,
    /// Things that work now but will bite later (a password in clear, no UUID).
    pub warnings: Vec<String>,
}

impl ProbeReport {
    /// A few lines for an operator: what was reached, how many users and groups, one
    /// example user, and the warnings.
    pub fn summary(&self) -> String {
        let mut t = format!(
            "{} ({}): bound as {}\n{}{} user{} under {} (preset {}), e.g. {} ({}{})",
            self.url,
            match self.transport {
                Transport::Plain => "no TLS",
                Transport::StartTls => "StartTLS",
                Transport::Ldaps => "TLS",
            },
            self.bind_dn,
            if self.users_capped { "at least " } else { "" },
            self.users,
            if self.users == 1 { "" } else { "s" },
            self.users_dn,
            self.preset,
            if self.example_user.username.is_empty() { "?" } else { &self.example_user.username },
            self.example_user.dn,
            self.example_user.email.as_deref().map(|m| format!(", {m}")).unwrap_or_default(),
        );
        if let (Some(dn), Some(n)) = (&self.groups_dn, self.groups) {
            t.push_str(&format!(
                "\n{}{n} group{} under {dn}, e.g. {}",
                if self.groups_capped { "at least " } else { "" },
                if n == 1 { "" } else { "s" },
                self.example_group.as_deref().unwrap_or("?")
            ));
        }
        for w in &self.warnings {
            t.push_str(&format!("\nwarning: {w}"));
        }
        t
    }
}

/// One user the search found, as Keycloak would import it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExampleUser {
    pub username: String,
    pub dn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Which stage failed; each has its own message and hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeErrorKind {
    /// `ldap.ca_file` cannot be read or holds no usable CA certificate.
    CaFile,
    /// The host name does not resolve.
    Dns,
    /// Nothing listens on the port (connection refused).
    TcpRefused,
    /// No answer to the TCP connect within the timeout.
    TcpTimeout,
    /// The host or network is unreachable, or another connect error.
    TcpUnreachable,
    /// The server's certificate is not signed by the trusted CA (or expired, ...).
    TlsUntrusted,
    /// The certificate is trusted but not issued for the host name in the URL.
    TlsNameMismatch,
    /// The TLS handshake failed otherwise (e.g. not a TLS port).
    Tls,
    /// The server refused the StartTLS operation.
    StartTlsRefused,
    /// The server took no answer within the timeout after connecting.
    Timeout,
    /// Bind refused: wrong DN or password (LDAP result 49).
    BindRefused,
    /// Bind failed for another reason.
    Bind,
    /// `ldap.users_dn` does not exist (or the bind account cannot see it).
    UsersDnMissing,
    /// The user search found nobody.
    NoUsers,
    /// `ldap.groups_dn` does not exist (or the bind account cannot see it).
    GroupsDnMissing,
    /// The group search found no group.
    NoGroups,
    /// A search failed otherwise (access rights, filter).
    Search,
}

/// Why the probe failed: the stage, the URL or DN it is about, the cause, a hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeError {
    pub kind: ProbeErrorKind,
    /// The URL, DN or file it is about.
    pub subject: String,
    pub cause: String,
    pub hint: String,
}

impl ProbeError {
    fn new(
        kind: ProbeErrorKind,
        subject: impl Into<String>,
        cause: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self { kind, subject: subject.into(), cause: cause.into(), hint: hint.into() }
    }

    /// The answers key an operator fixes for this failure (the wizard asks again there).
    pub fn key(&self) -> &'static str {
        use ProbeErrorKind::*;
        match self.kind {
            CaFile | TlsUntrusted => "ldap.ca_file",
            Dns | TcpRefused | TcpTimeout | TcpUnreachable | TlsNameMismatch | Tls | Timeout => "ldap.url",
            StartTlsRefused => "ldap.starttls",
            BindRefused | Bind => "ldap.bind_dn",
            UsersDnMissing | NoUsers | Search => "ldap.users_dn",
            GroupsDnMissing | NoGroups => "ldap.groups_dn",
        }
    }

    /// As an installer error; the kind is Input (the settings given are wrong for this
    /// directory). `airlock ldap test` exits with its own code instead.
    pub fn into_error(self) -> Error {
        Error::new(ErrorKind::Input, self.subject, self.cause).with_hint(self.hint)
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\n  hint: {}", self.subject, self.cause, self.hint)
    }
}

impl std::error::Error for ProbeError {}

/// [`probe_with`] the default limits (10 s timeouts, counting up to 1000 entries).
pub fn probe(settings: &LdapSettings) -> Result<ProbeReport, ProbeError> {
    probe_with(settings, &ProbeOptions::default())
}

/// Resolves, connects, secures, binds and searches as Keycloak will; the first stage
/// that fails decides the error.
pub fn probe_with(s: &LdapSettings, opts: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    let url = s.url.to_string();
    let transport = s.transport();
    // The CA file is read before any network traffic: a typo there needs no server.
    let tls = match transport {
        Transport::Plain => None,
        Transport::StartTls | Transport::Ldaps => Some(client_config(s)?),
    };
    let addrs = resolve(s, opts, &url)?;
    let stream = connect(&addrs, opts.timeout, &url)?;
    let mut conn_settings =
        LdapConnSettings::new().set_conn_timeout(opts.timeout).set_std_stream(StdStream::Tcp(stream));
    if let Some(config) = tls {
        conn_settings = conn_settings.set_config(config).set_starttls(transport == Transport::StartTls);
    }
    let mut conn = LdapConn::with_settings(conn_settings, &url).map_err(|e| connect_error(s, &url, e))?;

    let bound = conn.with_timeout(opts.timeout).simple_bind(&s.bind_dn, s.bind_password.expose());
    bound.and_then(LdapResult::success).map_err(|e| bind_error(s, &url, e))?;

    let mut report = search_users(&mut conn, s, opts, &url)?;
    report.addresses = addrs.iter().map(SocketAddr::to_string).collect();
    if let Some(groups_dn) = &s.groups_dn {
        search_groups(&mut conn, s, groups_dn, opts, &url, &mut report)?;
    }
    // Best effort: the answer to an unbind is nothing.
    let _ = conn.unbind();
    if transport == Transport::Plain {
        report.warnings.push(format!(
            "{url} is plain LDAP: the bind password crosses the network unencrypted; use ldaps:// or ldap.starttls: true"
        ));
    }
    Ok(report)
}

/// A rustls config trusting exactly `ca_file`, or the host's CAs without it.
fn client_config(s: &LdapSettings) -> Result<Arc<ClientConfig>, ProbeError> {
    let mut roots = RootCertStore::empty();
    match &s.ca_file {
        Some(path) => {
            let subject = path.display().to_string();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| {
                    ProbeError::new(
                        ProbeErrorKind::CaFile,
                        &subject,
                        format!("cannot read the CA certificate file (ldap.ca_file): {e}"),
                        "give the path of the PEM file with the CA certificate that signed the directory server's certificate",
                    )
                })?;
            if certs.is_empty() {
                return Err(ProbeError::new(
                    ProbeErrorKind::CaFile,
                    subject,
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    "ldap.ca_file takes the CA certificate in PEM form, not a key or a DER file (openssl x509 -inform der -in CA.cer -out ca.pem converts one)",
                ));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    ProbeError::new(
                        ProbeErrorKind::CaFile,
                        &subject,
                        format!("holds a certificate that cannot be used as a CA: {e}"),
                        "give the CA certificate that signed the directory server's certificate",
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(ProbeError::new(
                    ProbeErrorKind::CaFile,
                    s.url.to_string(),
                    "no ldap.ca_file is set and this host has no trusted CA certificates",
                    "set ldap.ca_file to the CA certificate (PEM) that signed the directory server's certificate",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            ProbeError::new(
                ProbeErrorKind::Tls,
                s.url.to_string(),
                format!("TLS setup failed: {e}"),
                "report this as a bug",
            )
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The lookup runs on its own thread so that a resolver which does not answer (a site
/// DNS server out of reach: glibc retries every server of resolv.conf, with every
/// search domain) costs at most `opts.timeout`; the thread ends when glibc gives up.
fn resolve(s: &LdapSettings, opts: &ProbeOptions, url: &str) -> Result<Vec<SocketAddr>, ProbeError> {
    let port = s.url.server.port;
    let name = match &s.url.server.host {
        Address::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Address::Name(n) => n,
    };
    let dns = |cause: String| {
        ProbeError::new(
            ProbeErrorKind::Dns,
            url,
            cause,
            format!("check the spelling of `{name}` and that this host's DNS (/etc/resolv.conf) or /etc/hosts knows it; `getent hosts {name}` shows what it resolves to"),
        )
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (lookup, owned) = (opts.resolve, name.clone());
    std::thread::spawn(move || {
        // The receiver may have given up already; then nobody wants the answer.
        let _ = tx.send(lookup(&owned, port));
    });
    let addrs = match rx.recv_timeout(opts.timeout) {
        Ok(found) => found.map_err(|e| dns(format!("the host name `{name}` does not resolve: {e}")))?,
        Err(_) => {
            return Err(dns(format!(
                "looking up the host name `{name}` got no answer within {} s (is a DNS server of /etc/resolv.conf out of reach?)",
                opts.timeout.as_secs()
            )))
        }
    };
    if addrs.is_empty() {
        return Err(dns(format!("the host name `{name}` resolves to no address")));
    }
    Ok(addrs)
}

/// Tries each address in turn, all of them within `timeout` together: a name with many
/// addresses, none of which answers, must not take a timeout each.
fn connect(addrs: &[SocketAddr], timeout: Duration, url: &str) -> Result<TcpStream, ProbeError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    for a in addrs {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(a, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some((a, e)),
        }
    }
    let (addr, e) = last.unwrap_or((&addrs[0], std::io::ErrorKind::TimedOut.into()));
    let tried = addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ");
    Err(match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ProbeError::new(
            ProbeErrorKind::TcpRefused,
            url,
            format!("connection refused at {tried}: nothing listens on that port"),
            "check the port (389 for ldap://, 636 for ldaps://) and that the directory server runs",
        ),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ProbeError::new(
            ProbeErrorKind::TcpTimeout,
            url,
            format!("no answer from {tried} within {} s", timeout.as_secs()),
            "a firewall may drop the traffic: check that this host may reach the directory on that port",
        ),
        _ => ProbeError::new(
            ProbeErrorKind::TcpUnreachable,
            url,
            format!("cannot connect to {addr}: {e}"),
            "check the address and this host's routes to the directory (`ip route get ADDRESS`)",
        ),
    })
}

/// The rustls error inside an `ldap3` error, if the failure was TLS.
fn rustls_error(e: &LdapError) -> Option<&rustls::Error> {
    match e {
        LdapError::Rustls { source } => Some(source),
        LdapError::Io { source } => source.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

fn connect_error(s: &LdapSettings, url: &str, e: LdapError) -> ProbeError {
    let ca = match &s.ca_file {
        Some(p) => format!("the CA in {}", p.display()),
        None => "this host's trusted CAs".to_string(),
    };
    if let Some(tls) = rustls_error(&e) {
        return match tls {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => ProbeError::new(
                ProbeErrorKind::TlsNameMismatch,
                url,
                format!("the server's certificate is not issued for `{}`: {tls}", s.url.server.host),
                "use the host name (or IP) the certificate names in ldap.url (`openssl s_client -connect HOST:PORT` shows its subjectAltName), or have the certificate reissued with this name",
            ),
            rustls::Error::InvalidCertificate(_) => ProbeError::new(
                ProbeErrorKind::TlsUntrusted,
                url,
                format!("the server's certificate is not trusted by {ca}: {tls}"),
                "set ldap.ca_file to the CA certificate that signed the directory server's certificate (ask the directory's administrators for it)",
            ),
            other => ProbeError::new(
                ProbeErrorKind::Tls,
                url,
                format!("the TLS handshake failed: {other}"),
                tls_hint(s),
            ),
        };
    }
    match e {
        LdapError::LdapResult { result } if s.transport() == Transport::StartTls => ProbeError::new(
            ProbeErrorKind::StartTlsRefused,
            url,
            format!("the server refused StartTLS: {}", result_text(&result)),
            "the server has no TLS configured on this port: use ldaps:// (port 636) or ask the directory's administrators to enable StartTLS",
        ),
        LdapError::Timeout { .. } => ProbeError::new(
            ProbeErrorKind::Timeout,
            url,
            "the connection opened, but the server did not complete the LDAP/TLS setup in time".to_string(),
            "check that the port belongs to the directory server and that ldaps:// and ldap:// match the port",
        ),
        LdapError::Io { source } if s.transport() != Transport::Plain => ProbeError::new(
            ProbeErrorKind::Tls,
            url,
            format!("the TLS handshake failed: {source}"),
            tls_hint(s),
        ),
        other => ProbeError::new(
            ProbeErrorKind::TcpUnreachable,
            url,
            format!("the connection failed: {other}"),
            "check that the port belongs to the directory server",
        ),
    }
}

fn tls_hint(s: &LdapSettings) -> String {
    match s.transport() {
        Transport::Ldaps => {
            "is this an ldaps port? ldaps:// usually is 636; for port 389 use ldap:// with ldap.starttls: true".into()
        }
        _ => "the server answered StartTLS but the handshake broke; check the server's TLS configuration".into(),
    }
}

fn result_text(r: &LdapResult) -> String {
    let name = match r.rc {
        1 => "operationsError",
        2 => "protocolError",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "",
    };
    let mut t = format!("LDAP result {}", r.rc);
    if !name.is_empty() {
        t.push_str(&format!(" ({name})"));
    }
    if !r.text.is_empty() {
        t.push_str(&format!(": {}", r.text));
    }
    t
}

fn op_error(kind: ProbeErrorKind, subject: &str, what: &str, e: LdapError) -> ProbeError {
    match e {
        LdapError::Timeout { .. } => ProbeError::new(
            ProbeErrorKind::Timeout,
            subject,
            format!("{what}: the server did not answer in time"),
            "check that ldap.url names the directory server's LDAP port; a slow or overloaded directory may need another try (or a narrower ldap.users_dn)",
        ),
        // The connection ended under the operation: something accepted TCP on that
        // port but does not speak LDAP (or dropped the client).
        LdapError::ResultRecv { .. } | LdapError::OpSend { .. } | LdapError::EndOfStream | LdapError::Io { .. } => {
            ProbeError::new(
                kind,
                subject,
                format!("{what}: the connection closed before the server answered ({e})"),
                "check that ldap.url names the directory server's LDAP port (389 for ldap://, 636 for ldaps://) and that no proxy or firewall cuts the connection",
            )
        }
        other => ProbeError::new(kind, subject, format!("{what}: {other}"), "check that the directory server is healthy"),
    }
}

fn bind_error(s: &LdapSettings, url: &str, e: LdapError) -> ProbeError {
    let result = match e {
        LdapError::LdapResult { result } => result,
        other => return op_error(ProbeErrorKind::Bind, url, &format!("binding as {} failed", s.bind_dn), other),
    };
    let subject = format!("{url}: {}", s.bind_dn);
    match result.rc {
        49 => ProbeError::new(
            ProbeErrorKind::BindRefused,
            subject,
            format!("the server refused the bind: {}", result_text(&result)),
            match s.preset {
                Preset::ActiveDirectory => "check ldap.bind_dn (the account's full DN, e.g. CN=svc-keycloak,OU=Service,DC=corp,DC=example) and ldap.bind_password; the account may also be locked or its password expired",
                Preset::OpenLdap => "check ldap.bind_dn (the full DN, e.g. cn=keycloak,ou=services,dc=example,dc=org) and ldap.bind_password",
            },
        ),
        8 | 13 => ProbeError::new(
            ProbeErrorKind::Bind,
            subject,
            format!("the server refuses to bind on this connection: {}", result_text(&result)),
            "the directory requires TLS for binds: use ldaps:// or set ldap.starttls: true",
        ),
        _ => ProbeError::new(
            ProbeErrorKind::Bind,
            subject,
            format!("the bind failed: {}", result_text(&result)),
            "check ldap.bind_dn and ldap.bind_password, and that the account may bind",
        ),
    }
}

/// The first value of `attr` (names compared case-insensitively, as LDAP does).
fn first<'e>(e: &'e SearchEntry, attr: &str) -> Option<&'e str> {
    e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first()).map(String::as_str)
}

fn has_attr(e: &SearchEntry, attr: &str) -> bool {
    first(e, attr).is_some() || e.bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(attr))
}

fn search_users(
    conn: &mut LdapConn,
    s: &LdapSettings,
    opts: &ProbeOptions,
    url: &str,
) -> Result<ProbeReport, ProbeError> {
    let schema = s.schema();
    let filter = s.user_search_filter();
    let attrs = [schema.username_attribute, schema.email_attribute, schema.uuid_attribute];
    let subject = format!("{url}: {}", s.users_dn);
    let found = conn
        .with_timeout(opts.timeout)
        .with_search_options(SearchOptions::new().sizelimit(opts.size_limit))
        .search(&s.users_dn, Scope::Subtree, &filter, attrs)
        .map_err(|e| op_error(ProbeErrorKind::Search, &subject, "the user search failed", e))?;
    let (entries, result) = (found.0, found.1);
    let capped = match result.rc {
        0 => false,
        4 => true,
        32 => {
            return Err(ProbeError::new(
                ProbeErrorKind::UsersDnMissing,
                subject,
                format!("the users DN does not exist: {}", result_text(&result)),
                format!(
                    "check ldap.users_dn{}; the bind account {} may also lack the right to read it",
                    if result.matched.is_empty() {
                        String::new()
                    } else {
                        format!(" (the server knows `{}`, the deepest part that exists)", result.matched)
                    },
                    s.bind_dn
                ),
            ))
        }
        _ => {
            return Err(ProbeError::new(
                ProbeErrorKind::Search,
                subject,
                format!("the user search {filter} failed: {}", result_text(&result)),
                if result.rc == 50 {
                    format!("the bind account {} may not search there; ask for read access to the users", s.bind_dn)
                } else {
                    "check ldap.users_dn and ldap.user_filter".to_string()
                },
            ))
        }
    };
    let users = entries.len();
    let Some(first_entry) = entries.into_iter().next() else {
        return Err(no_users(conn, s, opts, &subject, &filter));
    };
    let e = SearchEntry::construct(first_entry);
    let mut warnings = Vec::new();
    let username = match first(&e, schema.username_attribute) {
        Some(u) => u.to_string(),
        None => {
            warnings.push(format!(
                "{} has no {} (the preset's username attribute); Keycloak skips such users",
                e.dn, schema.username_attribute
            ));
            String::new()
        }
    };
    if !result.refs.is_empty() {
        warnings.push(format!(
            "the user search was also referred to other servers ({}); users there are not counted, and Keycloak does not follow referrals: point ldap.users_dn at the part of the directory this server holds",
            result.refs.join(", ")
        ));
    }
    if !has_attr(&e, schema.uuid_attribute) {
        warnings.push(format!(
            "{} returned no {} (the preset's UUID attribute); Keycloak cannot import users without it",
            e.dn, schema.uuid_attribute
        ));
    }
    Ok(ProbeReport {
        url: url.to_string(),
        transport: s.transport(),
        addresses: Vec::new(),
        bind_dn: s.bind_dn.clone(),
        preset: s.preset,
        users_dn: s.users_dn.clone(),
        user_filter: filter,
        users,
        users_capped: capped,
        example_user: ExampleUser {
            username,
            dn: e.dn.clone(),
            email: first(&e, schema.email_attribute).map(str::to_string),
        },
        groups_dn: None,
        groups: None,
        groups_capped: false,
        example_group: None,
        warnings,
    })
}

/// The empty-result error, with what *is* under `users_dn` when the bind account can
/// see anything there: most often the preset does not match the directory.
fn no_users(conn: &mut LdapConn, s: &LdapSettings, opts: &ProbeOptions, subject: &str, filter: &str) -> ProbeError {
    let look = conn.with_timeout(opts.timeout).with_search_options(SearchOptions::new().sizelimit(50)).search(
        &s.users_dn,
        Scope::Subtree,
        "(objectClass=*)",
        ["objectClass"],
    );
    let seen = match look {
        Ok(r) => {
            r.0.into_iter().map(SearchEntry::construct).filter(|e| !e.dn.eq_ignore_ascii_case(&s.users_dn)).collect()
        }
        Err(_) => Vec::new(),
    };
    let other = match s.preset {
        Preset::OpenLdap => Preset::ActiveDirectory,
        Preset::ActiveDirectory => Preset::OpenLdap,
    };
    let hint = match seen.first() {
        Some(e) => {
            let classes = e.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("objectClass")).map(|(_, v)| v.join(", "));
            format!(
                "there are entries below it, but none matches: e.g. {} has objectClass {}; check ldap.preset (`{other}`?) and ldap.user_filter",
                e.dn,
                classes.unwrap_or_default()
            )
        }
        None => format!(
            "the DN exists but the bind account sees nothing below it: check that ldap.users_dn is where the users are, and that {} may read them",
            s.bind_dn
        ),
    };
    ProbeError::new(
        ProbeErrorKind::NoUsers,
        subject,
        format!("the user search {filter} found no user (preset {})", s.preset),
        hint,
    )
}

fn search_groups(
    conn: &mut LdapConn,
    s: &LdapSettings,
    groups_dn: &str,
    opts: &ProbeOptions,
    url: &str,
    report: &mut ProbeReport,
) -> Result<(), ProbeError> {
    let schema = s.schema();
    let filter = s.group_search_filter();
    let subject = format!("{url}: {groups_dn}");
    let found = conn
        .with_timeout(opts.timeout)
        .with_search_options(SearchOptions::new().sizelimit(opts.size_limit))
        .search(groups_dn, Scope::Subtree, &filter, [schema.group_name_attribute])
        .map_err(|e| op_error(ProbeErrorKind::Search, &subject, "the group search failed", e))?;
    let (entries, result) = (found.0, found.1);
    report.groups_capped = match result.rc {
        0 => false,
        4 => true,
        32 => {
            return Err(ProbeError::new(
                ProbeErrorKind::GroupsDnMissing,
                subject,
                format!("the groups DN does not exist: {}", result_text(&result)),
                format!("check ldap.groups_dn (or leave it out for no group mapping); the bind account {} may also lack the right to read it", s.bind_dn),
            ))
        }
        _ => {
            return Err(ProbeError::new(
                ProbeErrorKind::Search,
                subject,
                format!("the group search {filter} failed: {}", result_text(&result)),
                "check ldap.groups_dn and that the bind account may read the groups",
            ))
        }
    };
    if entries.is_empty() {
        return Err(ProbeError::new(
            ProbeErrorKind::NoGroups,
            subject,
            format!("the group search {filter} found no group (preset {})", s.preset),
            format!(
                "groups of the {} preset have objectClass {}; check ldap.groups_dn and ldap.preset, or leave ldap.groups_dn out for no group mapping",
                s.preset, schema.group_object_class
            ),
        ));
    }
    report.groups = Some(entries.len());
    report.groups_dn = Some(groups_dn.to_string());
    let e = SearchEntry::construct(entries.into_iter().next().expect("not empty"));
    report.example_group = Some(first(&e, schema.group_name_attribute).map(str::to_string).unwrap_or(e.dn));
    Ok(())
}
