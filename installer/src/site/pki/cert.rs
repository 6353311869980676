//! Reading certificates and keys: PEM files, the facts we decide on, signatures and
//! name constraints. Shared by the issuer, the customer-file checks and `pki status`.

use std::net::IpAddr;

use airlock_format::error::{Error, Result};
use rcgen::KeyPair;
use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The PEM certificates in `text`, as DER, in file order. `file` names it in errors.
pub(crate) fn pem_certs(text: &[u8], file: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text) {
        let pem = pem.map_err(|e| {
            Error::input(file, format!("is not valid PEM: {e}"))
                .with_hint("give the certificate as PEM (-----BEGIN CERTIFICATE-----); convert DER with `openssl x509 -inform der -in FILE -out FILE.pem`")
        })?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(Error::input(file, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            .with_hint("check that this is the certificate file and not the key or a certificate request"));
    }
    Ok(out)
}

/// DER to PEM, 64 columns, as openssl writes it.
pub(crate) fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// A private key from PEM. Never quotes the key in an error.
pub(crate) fn key_from_pem(text: &[u8], file: &str) -> Result<KeyPair> {
    let pem = std::str::from_utf8(text).map_err(|_| Error::input(file, "is not a PEM text file"))?;
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::input(file, "holds an encrypted private key; the installer cannot ask for its passphrase")
            .with_hint(format!("decrypt a copy for the install: `openssl pkcs8 -topk8 -nocrypt -in {file} -out KEY.pem`, and delete it afterwards")));
    }
    if !pem.contains("-----BEGIN PRIVATE KEY-----") {
        let found = if pem.contains("BEGIN EC PRIVATE KEY") || pem.contains("BEGIN RSA PRIVATE KEY") {
            "a private key in the old SEC1/PKCS#1 form"
        } else if pem.contains("BEGIN CERTIFICATE") {
            "a certificate, not a key"
        } else {
            "no PEM private key"
        };
        return Err(Error::input(file, format!("holds {found}"))
            .with_hint(format!("give an unencrypted PKCS#8 key (-----BEGIN PRIVATE KEY-----): `openssl pkcs8 -topk8 -nocrypt -in {file} -out KEY.pem`")));
    }
    KeyPair::from_pem(pem).map_err(|e| {
        Error::input(file, format!("the private key cannot be used: {e}"))
            .with_hint("ECDSA P-256/P-384, Ed25519 and RSA (2048 bits or more) keys are supported")
    })
}

/// The facts about one certificate that the PKI decides on and `pki status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// DNS names, then IP addresses, as in the certificate.
    pub sans: Vec<String>,
    #[serde(skip)]
    pub dns: Vec<String>,
    #[serde(skip)]
    pub ips: Vec<IpAddr>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    /// `keyUsage` has keyCertSign, or there is no keyUsage (then any use is allowed).
    #[serde(skip)]
    pub may_sign_certs: bool,
    /// `extendedKeyUsage` allows serverAuth, or there is none.
    #[serde(skip)]
    pub server_auth: bool,
    pub self_signed: bool,
    /// SHA-256 of the DER, `AB:CD:…` as `openssl x509 -fingerprint -sha256` prints it.
    pub sha256: String,
    /// Hex, `0a:1b:…`.
    pub serial: String,
    #[serde(skip)]
    pub public_key: Vec<u8>,
    #[serde(skip)]
    pub constraints: Constraints,
}

/// Name constraints of a CA (RFC 5280 4.2.1.10), for the DNS and IP forms we issue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Constraints {
    pub permitted_dns: Vec<String>,
    pub excluded_dns: Vec<String>,
    /// Address and mask bytes of the same length.
    pub permitted_ip: Vec<(Vec<u8>, Vec<u8>)>,
    pub excluded_ip: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Constraints {
    /// Why `dns`/`ips` are not all permitted, or `None`.
    pub fn violation(&self, dns: &[String], ips: &[IpAddr]) -> Option<String> {
        for d in dns {
            if self.excluded_dns.iter().any(|b| dns_within(d, b)) {
                return Some(format!("`{d}` is in an excluded subtree of its name constraints"));
            }
            if !self.permitted_dns.is_empty() && !self.permitted_dns.iter().any(|b| dns_within(d, b)) {
                return Some(format!(
                    "`{d}` is outside the DNS names it may certify ({})",
                    self.permitted_dns.join(", ")
                ));
            }
        }
        for ip in ips {
            if self.excluded_ip.iter().any(|(a, m)| ip_within(ip, a, m)) {
                return Some(format!("{ip} is in an excluded range of its name constraints"));
            }
            if !self.permitted_ip.is_empty() && !self.permitted_ip.iter().any(|(a, m)| ip_within(ip, a, m)) {
                return Some(format!("{ip} is outside the IP ranges it may certify"));
            }
        }
        None
    }
}

/// RFC 5280: a name is within a DNS subtree when it is the base or adds labels on the
/// left; a leading dot means subdomains only. A wildcard is judged by its base.
fn dns_within(name: &str, base: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let name = name.strip_prefix("*.").map(|n| format!("x.{n}")).unwrap_or(name);
    let base = base.to_ascii_lowercase();
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return name.ends_with(&base);
    }
    name == base || name.ends_with(&format!(".{base}"))
}

fn ip_within(ip: &IpAddr, addr: &[u8], mask: &[u8]) -> bool {
    let bytes = match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    bytes.len() == addr.len() && bytes.iter().zip(addr).zip(mask).all(|((b, a), m)| b & m == a & m)
}

/// Whether a certificate names every host: DNS names exactly or through a wildcard of
/// one label, IPs exactly. Returns the first host it does not cover.
pub(crate) fn uncovered(facts: &CertFacts, dns: &[String], ips: &[IpAddr]) -> Option<String> {
    let covers = |host: &str| {
        facts.dns.iter().any(|san| {
            let san = san.to_ascii_lowercase();
            let host = host.to_ascii_lowercase();
            san == host
                || san
                    .strip_prefix("*.")
                    .is_some_and(|base| host.split_once('.').is_some_and(|(first, rest)| first != "*" && rest == base))
        })
    };
    if let Some(d) = dns.iter().find(|d| !covers(d)) {
        return Some(d.clone());
    }
    ips.iter().find(|ip| !facts.ips.contains(ip)).map(|ip| ip.to_string())
}

/// Parses one DER certificate; `file` names it in errors.
pub(crate) fn parse<'a>(der: &'a [u8], file: &str) -> Result<X509Certificate<'a>> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
        Error::input(file, format!("holds a certificate that cannot be parsed: {e}"))
            .with_hint("check that the file is an X.509 certificate in PEM form")
    })?;
    Ok(cert)
}

/// The facts of one DER certificate.
pub(crate) fn facts(der: &[u8], file: &str) -> Result<CertFacts> {
    let cert = parse(der, file)?;
    let bad = |what: &str, e: x509_parser::error::X509Error| {
        Error::input(file, format!("has a malformed {what} extension: {e}"))
            .with_hint("ask whoever issued it for a standard X.509 v3 certificate")
    };
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(|e| bad("subjectAltName", e))? {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from(b) {
                        ips.push(ip)
                    }
                }
                _ => {}
            }
        }
    }
    let is_ca = cert.basic_constraints().map_err(|e| bad("basicConstraints", e))?.is_some_and(|b| b.value.ca);
    let may_sign_certs = cert.key_usage().map_err(|e| bad("keyUsage", e))?.is_none_or(|k| k.value.key_cert_sign());
    let server_auth = cert
        .extended_key_usage()
        .map_err(|e| bad("extendedKeyUsage", e))?
        .is_none_or(|e| e.value.any || e.value.server_auth);
    let mut constraints = Constraints::default();
    if let Some(nc) = cert.name_constraints().map_err(|e| bad("nameConstraints", e))? {
        let collect = |trees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>,
                       dns: &mut Vec<String>,
                       ip: &mut Vec<(Vec<u8>, Vec<u8>)>| {
            for t in trees.iter().flatten() {
                match &t.base {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                        let (a, m) = b.split_at(b.len() / 2);
                        ip.push((a.to_vec(), m.to_vec()));
                    }
                    _ => {}
                }
            }
        };
        collect(&nc.value.permitted_subtrees, &mut constraints.permitted_dns, &mut constraints.permitted_ip);
        collect(&nc.value.excluded_subtrees, &mut constraints.excluded_dns, &mut constraints.excluded_ip);
    }
    let mut sans: Vec<String> = dns.clone();
    sans.extend(ips.iter().map(IpAddr::to_string));
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        dns,
        ips,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca,
        may_sign_certs,
        server_auth,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        sha256: fingerprint(der),
        serial: cert.raw_serial_as_string(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        constraints,
    })
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// SHA-256 of DER bytes, `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Whether `child` carries a valid signature by `issuer`'s key (and names it).
pub(crate) fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (X509Certificate::from_der(child), X509Certificate::from_der(issuer)) else {
        return false;
    };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// Whether the key is the private half of the certificate's public key.
pub(crate) fn key_matches(key: &KeyPair, facts: &CertFacts) -> bool {
    key.public_key_raw() == facts.public_key.as_slice()
}

/// `2026-11-22T04:00:00Z` for a Unix time (before 1970 is clamped to 1970).
pub(crate) fn date(unix: i64) -> String {
    airlock_format::manifest::rfc3339(unix.max(0) as u64)
}

/// Checks that a certificate is valid at `now`, naming the file.
pub(crate) fn check_validity(f: &CertFacts, now: i64, file: &str, renew_hint: &str) -> Result<()> {
    if now < f.not_before {
        return Err(Error::input(
            file,
            format!("the certificate ({}) is not valid yet: it starts {}", f.subject, date(f.not_before)),
        )
        .with_hint("check this machine's clock (`date -u`), or use a certificate that is valid now"));
    }
    if now >= f.not_after {
        return Err(Error::input(file, format!("the certificate ({}) expired {}", f.subject, date(f.not_after)))
            .with_hint(renew_hint.to_string()));
    }
    Ok(())
}
