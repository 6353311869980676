//! The customer's PKI: their CA signs our leaves (`customer-ca`), or they hand over a
//! ready ingress certificate (`customer-certs`).
//!
//! Everything is checked before anything is used, and every error names the file and
//! the answers key it came from: the key must belong to the certificate; certificates
//! must be valid now; a signing CA must be a CA allowed to sign certificates; the chain
//! must verify signature by signature up to a self-signed root (which becomes `ca.crt`,
//! the anchor clients trust); the CAs' name constraints must permit the site's names; a
//! ready ingress certificate must allow serverAuth and name the platform's hosts.

use std::net::IpAddr;
use std::path::Path;

use airlock_format::error::{Error, Result};
use time::OffsetDateTime;

use super::cert::{self, CertFacts};
use super::issue::Signer;
use super::{keep_or_issue, Leaf, LeafSpec, SitePki};
use crate::host::Host;
use crate::site::answers::{Answers, PkiMode, Secret};

/// How many CAs a chain may have above the first certificate.
const MAX_CHAIN: usize = 8;

/// A file named by an answers key: `/site/ca.crt (pki.ca_cert)`.
fn label(path: &Path, key: &str) -> String {
    format!("{} (pki.{key})", path.display())
}

fn read(host: &dyn Host, answers: &Answers, path: Option<&std::path::PathBuf>, key: &str) -> Result<(Vec<u8>, String)> {
    let path = path.ok_or_else(|| {
        Error::input(
            format!("{}: pki.{key}", answers.origin),
            format!("missing: pki.mode {} needs it", answers.pki.mode),
        )
        .with_hint(format!("add `pki.{key}`; see docs/answers.md"))
    })?;
    let bytes = host.read_file(path)?.ok_or_else(|| {
        Error::input(label(path, key), "does not exist")
            .with_hint(format!("copy the customer's file to {} on this machine, or correct pki.{key}", path.display()))
    })?;
    Ok((bytes, label(path, key)))
}

/// One certificate of a chain and the file it came from.
struct Link {
    der: Vec<u8>,
    facts: CertFacts,
    file: String,
}

fn links(bytes: &[u8], file: &str) -> Result<Vec<Link>> {
    cert::pem_certs(bytes, file)?
        .into_iter()
        .map(|der| Ok(Link { facts: cert::facts(&der, file)?, der, file: file.to_string() }))
        .collect()
}

/// Follows signatures from `first` through `pool` (any order) to a self-signed root.
/// Returns the CAs above `first`, root last. Each must be a valid CA.
fn verify_chain<'p>(first: &Link, pool: &'p [Link], now: i64, chain_key: &str) -> Result<Vec<&'p Link>> {
    let mut above: Vec<&Link> = Vec::new();
    let mut current = first;
    loop {
        if current.facts.self_signed {
            if !cert::signed_by(&current.der, &current.der) {
                return Err(Error::input(
                    &current.file,
                    format!("the root certificate ({}) does not carry a valid self-signature", current.facts.subject),
                )
                .with_hint("the file is damaged or not a root certificate; ask the customer's IT for the root again"));
            }
            return Ok(above);
        }
        if above.len() > MAX_CHAIN {
            return Err(Error::input(&current.file, format!("the chain is longer than {MAX_CHAIN} certificates"))
                .with_hint(format!("give only the certificates from the issuer up to the root in pki.{chain_key}")));
        }
        let next = pool.iter().find(|c| !std::ptr::eq(*c, current) && cert::signed_by(&current.der, &c.der));
        let Some(next) = next else {
            return Err(Error::input(
                &current.file,
                format!(
                    "the chain does not verify: no certificate given signed {} (its issuer is {})",
                    current.facts.subject, current.facts.issuer
                ),
            )
            .with_hint(format!(
                "put the issuing CA and every CA above it, up to and including the root, as PEM into pki.{chain_key}"
            )));
        };
        cert::check_validity(&next.facts, now, &next.file, "ask the customer's IT for the current CA certificates")?;
        if !next.facts.is_ca || !next.facts.may_sign_certs {
            return Err(Error::input(
                &next.file,
                format!("{} is in the chain but is not a CA that may sign certificates", next.facts.subject),
            )
            .with_hint(format!(
                "pki.{chain_key} must hold only CA certificates (basicConstraints CA:TRUE, keyCertSign)"
            )));
        }
        if above.iter().any(|a| std::ptr::eq(*a, next)) {
            return Err(Error::input(&next.file, "the chain loops without reaching a root")
                .with_hint(format!("pki.{chain_key} must end with a self-signed root certificate")));
        }
        above.push(next);
        current = next;
    }
}

fn key_mismatch(key_file: &str, cert: &Link) -> Error {
    Error::input(key_file, format!("does not belong to the certificate in {} ({})", cert.file, cert.facts.subject))
        .with_hint(format!(
            "give the key made with that certificate; `openssl pkey -in KEY -pubout` and `openssl x509 -in {} -noout -pubkey` must print the same",
            cert.file.split(" (").next().unwrap_or_default()
        ))
}

/// `customer-ca`: the customer's CA signs our leaves.
pub(super) fn with_ca(answers: &Answers, host: &dyn Host, specs: &[LeafSpec], now: OffsetDateTime) -> Result<SitePki> {
    let p = &answers.pki;
    let unix = now.unix_timestamp();
    let (cert_bytes, cert_file) = read(host, answers, p.ca_cert.as_ref(), "ca_cert")?;
    let (key_bytes, key_file) = read(host, answers, p.ca_key.as_ref(), "ca_key")?;
    let mut given = links(&cert_bytes, &cert_file)?;
    let ca = given.remove(0);
    // Certificates after the first in the same file count as chain.
    let mut pool = given;
    if let Some(path) = &p.ca_chain {
        let (bytes, file) = read(host, answers, Some(path), "ca_chain")?;
        pool.extend(links(&bytes, &file)?);
    }
    let key = cert::key_from_pem(&key_bytes, &key_file)?;
    if !cert::key_matches(&key, &ca.facts) {
        return Err(key_mismatch(&key_file, &ca));
    }
    cert::check_validity(&ca.facts, unix, &cert_file, "ask the customer's IT for a current CA certificate")?;
    if !ca.facts.is_ca {
        return Err(Error::input(
            &cert_file,
            format!("{} is not a CA certificate (basicConstraints CA:TRUE is missing)", ca.facts.subject),
        )
        .with_hint(
            "pki.ca_cert must be the CA that signs; for a ready server certificate use pki.mode: customer-certs",
        ));
    }
    if !ca.facts.may_sign_certs {
        return Err(Error::input(
            &cert_file,
            format!("{}: its keyUsage does not allow signing certificates (keyCertSign)", ca.facts.subject),
        )
        .with_hint("ask the customer's IT for a CA certificate with keyUsage keyCertSign"));
    }
    let above = verify_chain(&ca, &pool, unix, "ca_chain")?;
    let all_dns: Vec<String> = specs.iter().flat_map(|s| s.dns.clone()).collect();
    let all_ips: Vec<IpAddr> = specs.iter().flat_map(|s| s.ips.clone()).collect();
    for c in std::iter::once(&ca).chain(above.iter().copied()) {
        if let Some(why) = c.facts.constraints.violation(&all_dns, &all_ips) {
            return Err(Error::input(&c.file, format!("{} cannot certify this site: {why}", c.facts.subject))
                .with_hint("ask for a CA whose name constraints include the ingress domain and the node addresses"));
        }
    }
    let root = above.last().copied().unwrap_or(&ca);
    let mut intermediates_pem = String::new();
    if !ca.facts.self_signed {
        intermediates_pem.push_str(&cert::der_to_pem(&ca.der));
    }
    for c in above.iter().filter(|c| !c.facts.self_signed) {
        intermediates_pem.push_str(&cert::der_to_pem(&c.der));
    }
    let chain_not_after =
        std::iter::once(&ca).chain(above.iter().copied()).map(|c| c.facts.not_after).min().unwrap_or(0);
    let ca_file = cert::der_to_pem(&root.der);
    let ca_der = root.der.clone();
    let signer = Signer { ca_der: ca.der.clone(), key, intermediates_pem, chain_not_after };
    let mut issued = Vec::new();
    let leaves = specs.iter().map(|s| keep_or_issue(host, s, &signer, now, &mut issued)).collect::<Result<_>>()?;
    Ok(SitePki { mode: PkiMode::CustomerCa, ca_file, ca_der, ca_key: None, leaves, issued })
}

/// `customer-certs`: a ready certificate and key serve every ingress host.
pub(super) fn with_certs(answers: &Answers, host: &dyn Host, now: OffsetDateTime) -> Result<SitePki> {
    let p = &answers.pki;
    let unix = now.unix_timestamp();
    let (cert_bytes, cert_file) = read(host, answers, p.ingress_cert.as_ref(), "ingress_cert")?;
    let (key_bytes, key_file) = read(host, answers, p.ingress_key.as_ref(), "ingress_key")?;
    let (chain_bytes, chain_file) = read(host, answers, p.ingress_chain.as_ref(), "ingress_chain")?;
    let mut given = links(&cert_bytes, &cert_file)?;
    let leaf = given.remove(0);
    let mut pool = given;
    pool.extend(links(&chain_bytes, &chain_file)?);

    let key = cert::key_from_pem(&key_bytes, &key_file)?;
    if !cert::key_matches(&key, &leaf.facts) {
        return Err(key_mismatch(&key_file, &leaf));
    }
    cert::check_validity(&leaf.facts, unix, &cert_file, "ask the customer's IT for a renewed certificate")?;
    if !leaf.facts.server_auth {
        return Err(Error::input(
            &cert_file,
            format!("{}: its extendedKeyUsage does not allow TLS servers (serverAuth)", leaf.facts.subject),
        )
        .with_hint("ask the customer's IT for a TLS server certificate (extendedKeyUsage serverAuth)"));
    }
    let d = &answers.cluster.ingress_domain;
    let needed = [format!("keycloak.{d}"), format!("minio.{d}"), format!("app.{d}")];
    if let Some(host_name) = cert::uncovered(&leaf.facts, &needed, &[]) {
        let names = if leaf.facts.sans.is_empty() { "none".to_string() } else { leaf.facts.sans.join(", ") };
        return Err(Error::input(
            &cert_file,
            format!("does not cover `{host_name}`, a host the platform serves (its names: {names})"),
        )
        .with_hint(format!("the ingress certificate must name *.{d}, or each of {}", needed.join(", "))));
    }
    let above = verify_chain(&leaf, &pool, unix, "ingress_chain")?;
    let root = above.last().copied().unwrap_or(&leaf);
    let mut crt_file = cert::der_to_pem(&leaf.der);
    for c in above.iter().filter(|c| !c.facts.self_signed) {
        crt_file.push_str(&cert::der_to_pem(&c.der));
    }
    let key_text = String::from_utf8_lossy(&key_bytes).into_owned();
    let leaf = Leaf {
        name: "ingress".into(),
        der: leaf.der.clone(),
        crt_file,
        key: Secret::new(key_text),
        facts: leaf.facts.clone(),
    };
    Ok(SitePki {
        mode: PkiMode::CustomerCerts,
        ca_file: cert::der_to_pem(&root.der),
        ca_der: root.der.clone(),
        ca_key: None,
        leaves: vec![leaf],
        issued: Vec::new(),
    })
}
