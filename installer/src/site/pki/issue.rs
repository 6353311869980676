//! Issuing: the self-signed site CA and the leaf certificates, with rcgen.
//!
//! Choices, and why:
//! - ECDSA P-256 everywhere: every client we serve (browsers, Go, Java, curl, K3s's
//!   containerd) speaks it, keys and handshakes are small, and ring signs it.
//! - The CA lives ~10 years ([`CA_DAYS`]): it is imported into the customer's trust
//!   stores once, and replacing it means touching every client. `pathlen 0`: it signs
//!   leaves only, so a stolen CA key cannot mint a sub-CA that escapes its constraints.
//! - Name constraints (critical) limit the CA to the site: DNS below the ingress domain,
//!   the in-cluster service names (`*.svc`, `*.svc.cluster.local`) and the registry
//!   mirror; IP addresses to `pki.ip_ranges`, or else exactly the node (and mirror)
//!   addresses the answers list. Once an iPAddress subtree is present every IP SAN must
//!   fall inside one (RFC 5280), so leaving IPs unconstrained would let a leaked CA key
//!   certify any intranet address. The price: a node added later with an address outside
//!   the ranges is reached by name, or the site gives `pki.ip_ranges` (its subnet) up front.
//! - Leaves live [`LEAF_DAYS`] = 825 days: the longest lifetime Apple platforms accept
//!   for any TLS server certificate, also from a private CA (longer ones are refused on
//!   macOS/iOS), and about two years between renewals at a site nobody from the vendor
//!   visits; `airlock pki status` warns and `airlock pki renew` re-issues 30 days ahead.
//!   Each renewal makes a new key.
//! - `notBefore` is one hour back: air-gapped nodes often have no NTP, and a certificate
//!   that starts minutes in a client's future is refused.
//! - Serial numbers are 127 random bits (positive, never zero), unique in practice and
//!   checked unique within one PKI.

use std::net::IpAddr;

use airlock_format::error::{Error, ErrorKind, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

use super::cert;
use super::{Leaf, LeafSpec};
use crate::site::answers::Secret;

/// The self-signed CA's lifetime in days (10 years and the leap days).
pub const CA_DAYS: i64 = 3652;
/// A leaf certificate's lifetime in days; see the module docs.
pub const LEAF_DAYS: i64 = 825;
/// How far `notBefore` is set back, for clock skew between nodes and clients.
const BACKDATE: Duration = Duration::hours(1);

fn rcgen_error(what: &str, e: rcgen::Error) -> Error {
    Error::new(ErrorKind::Input, what, format!("cannot be issued: {e}"))
        .with_hint("this is a bug in the PKI parameters; report it with the answers file (its secrets removed)")
}

/// 16 random bytes, top bit clear (DER INTEGERs are signed) and never all zero.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::new(ErrorKind::Io, "random", "the system random generator failed"))?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

pub(crate) fn new_key(what: &str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| rcgen_error(what, e))
}

/// What the self-signed CA may certify.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaScope {
    pub dns: Vec<String>,
    pub ip_ranges: Vec<ipnet::IpNet>,
}

/// A new self-signed site CA: its PEM certificate and key. `key` is one a crashed run
/// already wrote (see `keep_or_issue`); otherwise a new one is made.
pub(crate) fn self_signed_ca(
    domain: &str,
    scope: &CaScope,
    now: OffsetDateTime,
    key: Option<KeyPair>,
) -> Result<(String, KeyPair)> {
    let key = match key {
        Some(k) => k,
        None => new_key("the site CA")?,
    };
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Airlock");
    dn.push(DnType::CommonName, format!("Airlock site CA {domain}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(CA_DAYS);
    p.serial_number = Some(random_serial()?);
    let mut permitted: Vec<GeneralSubtree> = scope.dns.iter().map(|d| GeneralSubtree::DnsName(d.clone())).collect();
    permitted.extend(
        scope
            .ip_ranges
            .iter()
            .map(|n| GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(n.addr(), n.prefix_len()))),
    );
    p.name_constraints = Some(NameConstraints { permitted_subtrees: permitted, excluded_subtrees: Vec::new() });
    let cert = p.self_signed(&key).map_err(|e| rcgen_error("the site CA", e))?;
    Ok((cert::der_to_pem(cert.der()), key))
}

/// A CA that signs leaves: its certificate, key, and what servers send after a leaf.
pub(crate) struct Signer {
    pub ca_der: Vec<u8>,
    pub key: KeyPair,
    /// PEM of the certificates between a leaf and the root (empty under a root).
    pub intermediates_pem: String,
    /// The earliest `notAfter` up the chain: no leaf may outlive it.
    pub chain_not_after: i64,
}

impl Signer {
    /// Issues a leaf for `spec` with a new key.
    pub fn issue(&self, spec: &LeafSpec, now: OffsetDateTime) -> Result<Leaf> {
        self.issue_with(spec, now, None)
    }

    /// Issues a leaf for `spec` with `key`, or a new key when `None`.
    pub fn issue_with(&self, spec: &LeafSpec, now: OffsetDateTime, key: Option<KeyPair>) -> Result<Leaf> {
        let what = format!("the {} certificate", spec.name);
        let key = match key {
            Some(k) => k,
            None => new_key(&what)?,
        };
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Airlock");
        dn.push(DnType::CommonName, spec.common_name());
        p.distinguished_name = dn;
        let mut sans = Vec::new();
        for d in &spec.dns {
            let name = d.as_str().try_into().map_err(|e| rcgen_error(&what, e))?;
            sans.push(SanType::DnsName(name));
        }
        sans.extend(spec.ips.iter().map(|ip: &IpAddr| SanType::IpAddress(*ip)));
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = now - BACKDATE;
        let cap = OffsetDateTime::from_unix_timestamp(self.chain_not_after).unwrap_or(now);
        p.not_after = (now + Duration::days(LEAF_DAYS)).min(cap);
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let issuer =
            Issuer::from_ca_cert_der(&self.ca_der.clone().into(), &self.key).map_err(|e| rcgen_error(&what, e))?;
        let c = p.signed_by(&key, &issuer).map_err(|e| rcgen_error(&what, e))?;
        let der = c.der().to_vec();
        let facts = cert::facts(&der, &what)?;
        // Our own PEM encoding, the one `reusable` compares against on a re-run.
        let crt_file = cert::der_to_pem(&der) + &self.intermediates_pem;
        Ok(Leaf { name: spec.name.clone(), der, crt_file, key: Secret::new(key.serialize_pem()), facts })
    }
}
