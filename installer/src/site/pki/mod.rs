//! The site PKI: the CA and the TLS certificates of the platform's endpoints.
//!
//! Three modes (`pki.mode` in the answers):
//! - `self-signed` (default): a site CA made here, name-constrained to the site, issues
//!   the ingress, MinIO, Keycloak and (when the answers have one) registry-mirror
//!   certificates. Choices and lifetimes are explained in `issue.rs`.
//! - `customer-ca`: the customer's CA (root or intermediate, with its chain) and key sign
//!   the same certificates. Its key is read at install time and never copied.
//! - `customer-certs`: a ready certificate and key for the ingress, used for every
//!   ingress host; there are no other leaves in this mode.
//!
//! Customer files are checked before use (`customer.rs`): key against certificate,
//! validity, CA bits, the chain's signatures up to a root, name constraints, SANs.
//!
//! Generation happens once, the way `ops/install.rs` treats the cluster token: [`prepare`]
//! loads what `/etc/airlock/pki/` already holds on the target and keeps every
//! certificate that is still right (same CA, names covered, key matches, more than
//! [`RENEW_WITHIN_DAYS`] left); only what is missing or wrong is issued, in memory.
//! [`SitePki::steps`] then writes it through the engine, keys (0600) before the
//! certificates they belong to, so a re-run after a crash loads the same PKI and finds
//! every step satisfied. Keys are [`Secret`]s: no `Debug`, plan or report shows them.
//!
//! `airlock pki status` and `airlock pki renew` are [`status`] and [`renew`]. The
//! operator's view is docs/pki.md.

mod cert;
mod customer;
mod issue;
mod status;
#[cfg(test)]
// Tests lay out fixtures with std::fs and run openssl.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests;
pub mod wizard;

use crate::state;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::engine::layout::{Layout, StepGroup};
use crate::engine::{layout_steps, Step};
use crate::host::Host;
use crate::site::answers::{Address, Answers, PkiMode, Secret, REDACTED};

pub use cert::{fingerprint, CertFacts};
pub use issue::{CaScope, CA_DAYS, LEAF_DAYS};
pub use status::{renew, status, CertStatus, RenewOptions, RenewReport, Renewed, StatusReport};

/// Certificates with fewer days left are re-issued by an install and by `pki renew`.
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// The in-cluster Services that get certificates: (service, namespace). The charts are
/// installed into a namespace named after their component (install.rs).
pub const MINIO_SERVICE: (&str, &str) = ("minio", "minio");
pub const KEYCLOAK_SERVICE: (&str, &str) = ("keycloak", "keycloak");
/// The leaves, in the order they are issued and written.
pub const LEAF_NAMES: [&str; 5] = ["ingress", "minio", "keycloak", "monitoring", "registry"];

/// One certificate the site needs: its name and the hosts it must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// `ingress`, `minio`, `keycloak`, `monitoring`, `registry`: also the file name.
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl LeafSpec {
    /// The subject CN: the first DNS name that is not a wildcard. OpenSSL checks a
    /// host-like CN against name constraints too, so it is always one of the SANs.
    pub fn common_name(&self) -> String {
        let plain = self.dns.iter().find(|d| !d.starts_with('*'));
        plain.or(self.dns.first()).cloned().unwrap_or_else(|| format!("Airlock {}", self.name))
    }
}

/// Every node address the answers list: this node, then the HA members.
pub fn node_ips(answers: &Answers) -> Vec<IpAddr> {
    let mut ips = vec![answers.node.ip];
    if let Some(ha) = &answers.ha {
        ips.extend(ha.servers.iter().chain(&ha.agents).map(|m| m.ip));
    }
    let mut seen = Vec::new();
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    ips
}

/// The certificates the answers call for.
pub fn leaf_specs(answers: &Answers) -> Vec<LeafSpec> {
    let d = &answers.cluster.ingress_domain;
    let svc = |(name, ns): (&str, &str)| vec![format!("{name}.{ns}.svc"), format!("{name}.{ns}.svc.cluster.local")];
    let mut specs = vec![
        LeafSpec {
            name: "ingress".into(),
            dns: vec![format!("*.{d}"), d.clone(), format!("keycloak.{d}"), format!("minio.{d}"), format!("app.{d}")],
            ips: node_ips(answers),
        },
        LeafSpec {
            name: "minio".into(),
            // MinIO's own certificate also serves its S3 ingress (`s3.<domain>`), and in
            // HA (distributed) the pods reach each other by their names behind the
            // headless Service (platform::minio::certificate_dns_names).
            dns: [vec![format!("minio.{d}"), format!("s3.{d}")], svc(MINIO_SERVICE), minio_pod_names(answers)].concat(),
            ips: Vec::new(),
        },
        LeafSpec {
            name: "keycloak".into(),
            dns: [vec![format!("keycloak.{d}")], svc(KEYCLOAK_SERVICE)].concat(),
            ips: Vec::new(),
        },
        // The monitoring ingresses. A leaf of its own, so the monitoring namespace
        // holds a key for these three names only, not the wildcard ingress key.
        LeafSpec {
            name: "monitoring".into(),
            dns: vec![format!("prometheus.{d}"), format!("alertmanager.{d}"), format!("grafana.{d}")],
            ips: Vec::new(),
        },
    ];
    if let Some(r) = &answers.registry {
        let (dns, ips) = match &r.mirror.host {
            Address::Name(n) => (vec![n.clone()], Vec::new()),
            Address::Ip(ip) => (Vec::new(), vec![*ip]),
        };
        specs.push(LeafSpec { name: "registry".into(), dns, ips });
    }
    specs
}

/// `*.minio-svc.minio.svc[.cluster.local]` when MinIO runs distributed (more than one
/// server); nothing on a single node.
fn minio_pod_names(answers: &Answers) -> Vec<String> {
    let (name, ns) = MINIO_SERVICE;
    if answers.ha.as_ref().is_some_and(|h| h.servers.len() > 1) {
        vec![format!("*.{name}-svc.{ns}.svc"), format!("*.{name}-svc.{ns}.svc.cluster.local")]
    } else {
        Vec::new()
    }
}

/// What the self-signed CA may certify: see `issue.rs` for the reasoning.
pub fn ca_scope(answers: &Answers) -> CaScope {
    let mut dns = vec![answers.cluster.ingress_domain.clone(), "svc".to_string(), "svc.cluster.local".to_string()];
    let mut ips: Vec<IpAddr> = node_ips(answers);
    if let Some(r) = &answers.registry {
        match &r.mirror.host {
            Address::Name(n) => dns.push(n.clone()),
            Address::Ip(ip) => ips.push(*ip),
        }
    }
    let ip_ranges = if answers.pki.ip_ranges.is_empty() {
        ips.iter().map(|ip| ipnet::IpNet::from(*ip)).collect()
    } else {
        answers.pki.ip_ranges.clone()
    };
    CaScope { dns, ip_ranges }
}

/// A leaf certificate with its key.
#[derive(Clone)]
pub struct Leaf {
    name: String,
    der: Vec<u8>,
    /// `<name>.crt` as written: the leaf, then the intermediates (what a server sends).
    crt_file: String,
    key: Secret,
    facts: CertFacts,
}

impl Leaf {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The leaf certificate alone (PEM).
    pub fn cert_pem(&self) -> String {
        cert::der_to_pem(&self.der)
    }
    /// The leaf and its intermediates (PEM): a Kubernetes TLS Secret's `tls.crt`
    /// (MinIO: `public.crt`).
    pub fn fullchain_pem(&self) -> &str {
        &self.crt_file
    }
    /// The private key (PKCS#8 PEM): `tls.key` (MinIO: `private.key`). The one way to
    /// the key text; it belongs only in a 0600 file or a Kubernetes Secret.
    pub fn key_pem(&self) -> &str {
        self.key.expose()
    }
    pub fn facts(&self) -> &CertFacts {
        &self.facts
    }
    pub fn cert_path(&self) -> PathBuf {
        leaf_cert_path(&self.name)
    }
    pub fn key_path(&self) -> PathBuf {
        leaf_key_path(&self.name)
    }
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("name", &self.name)
            .field("subject", &self.facts.subject)
            .field("sans", &self.facts.sans)
            .field("not_after", &cert::date(self.facts.not_after))
            .field("key", &REDACTED)
            .finish()
    }
}

pub fn leaf_cert_path(name: &str) -> PathBuf {
    Path::new(state::PKI_DIR).join(format!("{name}.crt"))
}
pub fn leaf_key_path(name: &str) -> PathBuf {
    Path::new(state::PKI_DIR).join(format!("{name}.key"))
}

/// `pki.json`: which mode made the PKI, and its leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PkiState {
    pub mode: PkiMode,
    pub leaves: Vec<String>,
}

pub(crate) fn load_state(host: &dyn Host) -> Result<Option<PkiState>> {
    let Some(bytes) = host.read_file(Path::new(state::PKI_STATE_FILE))? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::input(state::PKI_STATE_FILE, format!("is not a PKI state file: {e}")).with_hint(
            "the installer writes it; restore it from a backup, or run `airlock install` again to rewrite it",
        )
    })
}

/// The site's PKI as planned: loaded from the target where it was still right, the
/// rest issued in memory. Nothing is written until its [`SitePki::steps`] run.
#[derive(Clone)]
pub struct SitePki {
    mode: PkiMode,
    /// `ca.crt` as written.
    ca_file: String,
    ca_der: Vec<u8>,
    /// Self-signed only.
    ca_key: Option<Secret>,
    leaves: Vec<Leaf>,
    /// What this plan issues anew (`ca` and leaf names), for the install report.
    issued: Vec<String>,
}

impl fmt::Debug for SitePki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SitePki")
            .field("mode", &self.mode)
            .field("ca_sha256", &self.ca_fingerprint())
            .field("ca_key", &self.ca_key.as_ref().map(|_| REDACTED))
            .field("leaves", &self.leaves)
            .field("issued", &self.issued)
            .finish()
    }
}

/// Plans the site PKI for these answers (see the module docs). Call it on the node
/// that starts the cluster (`answers.starts_cluster()`): the certificates go into
/// cluster-wide Kubernetes Secrets, and other nodes need only `ca.crt`.
pub fn prepare(answers: &Answers, host: &dyn Host) -> Result<SitePki> {
    prepare_at(answers, host, OffsetDateTime::now_utc())
}

pub(crate) fn prepare_at(answers: &Answers, host: &dyn Host, now: OffsetDateTime) -> Result<SitePki> {
    let specs = leaf_specs(answers);
    let pki = match answers.pki.mode {
        PkiMode::SelfSigned => self_signed(answers, host, &specs, now)?,
        PkiMode::CustomerCa => customer::with_ca(answers, host, &specs, now)?,
        PkiMode::CustomerCerts => customer::with_certs(answers, host, now)?,
    };
    let mut serials: Vec<&str> = pki.leaves.iter().map(|l| l.facts.serial.as_str()).collect();
    serials.sort_unstable();
    if serials.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::input(state::PKI_DIR, "two certificates of the site PKI have the same serial number")
            .with_hint("run the install again: new certificates get new random serials"));
    }
    Ok(pki)
}

fn self_signed(answers: &Answers, host: &dyn Host, specs: &[LeafSpec], now: OffsetDateTime) -> Result<SitePki> {
    let scope = ca_scope(answers);
    let mut issued = Vec::new();
    let existing = (host.read_file(Path::new(state::CA_CERT))?, host.read_file(Path::new(state::CA_KEY))?);
    let (ca_file, key) = match existing {
        (Some(c), Some(k)) => {
            let der = cert::pem_certs(&c, state::CA_CERT)?.remove(0);
            let f = cert::facts(&der, state::CA_CERT)?;
            let key = cert::key_from_pem(&k, state::CA_KEY)?;
            let aside =
                "or move /etc/airlock/pki aside to make a new site CA (every client must then trust the new ca.crt)";
            if !cert::key_matches(&key, &f) {
                return Err(Error::input(
                    state::CA_KEY,
                    format!("does not belong to the site CA in {ca_cert}", ca_cert = state::CA_CERT),
                )
                .with_hint(format!("restore the matching pair from a backup, {aside}")));
            }
            cert::check_validity(
                &f,
                now.unix_timestamp(),
                state::CA_CERT,
                &format!("the site CA is out of date: {aside}"),
            )?;
            let all_dns: Vec<String> = specs.iter().flat_map(|s| s.dns.clone()).collect();
            let all_ips: Vec<IpAddr> = specs.iter().flat_map(|s| s.ips.clone()).collect();
            if let Some(why) = f.constraints.violation(&all_dns, &all_ips) {
                return Err(Error::input(
                    state::CA_CERT,
                    format!("the existing site CA cannot certify this site: {why}"),
                )
                .with_hint(format!(
                    "the answers' domain or addresses changed since the CA was made; restore them, {aside}"
                )));
            }
            (String::from_utf8_lossy(&c).into_owned(), key)
        }
        (cert_file, key_file) => {
            // A key without its certificate is what a run that crashed between the two
            // steps leaves: keep it, so the resumed run does not redo a finished step.
            let left_over = match (cert_file, key_file) {
                (None, Some(k)) => cert::key_from_pem(&k, state::CA_KEY).ok(),
                _ => None,
            };
            let all_ips: Vec<IpAddr> = specs.iter().flat_map(|s| s.ips.clone()).collect();
            if let Some(ip) = all_ips.iter().find(|ip| !scope.ip_ranges.iter().any(|n| n.contains(*ip))) {
                return Err(Error::input(
                    format!("{}: pki.ip_ranges", answers.origin),
                    format!("does not contain {ip}, an address the certificates must name"),
                )
                .with_hint("add the range of every node address (and the registry mirror's) to pki.ip_ranges"));
            }
            issued.push("ca".to_string());
            let (pem, key) = issue::self_signed_ca(&answers.cluster.ingress_domain, &scope, now, left_over)?;
            (pem, key)
        }
    };
    let ca_der = cert::pem_certs(ca_file.as_bytes(), state::CA_CERT)?.remove(0);
    let facts = cert::facts(&ca_der, state::CA_CERT)?;
    let ca_key = Secret::new(key.serialize_pem());
    let signer = issue::Signer {
        ca_der: ca_der.clone(),
        chain_not_after: facts.not_after,
        key,
        intermediates_pem: String::new(),
    };
    let leaves = specs.iter().map(|s| keep_or_issue(host, s, &signer, now, &mut issued)).collect::<Result<_>>()?;
    Ok(SitePki { mode: PkiMode::SelfSigned, ca_file, ca_der, ca_key: Some(ca_key), leaves, issued })
}

/// The leaf on the target when it is still right for `spec` and `signer`, else a new one.
pub(crate) fn keep_or_issue(
    host: &dyn Host,
    spec: &LeafSpec,
    signer: &issue::Signer,
    now: OffsetDateTime,
    issued: &mut Vec<String>,
) -> Result<Leaf> {
    if let Some(leaf) = load_leaf(host, &spec.name)? {
        if reusable(&leaf, spec, signer, now.unix_timestamp()) {
            return Ok(leaf);
        }
    }
    issued.push(spec.name.clone());
    // As for the CA: a key whose certificate a crashed run did not write yet is kept.
    let left_over = match host.metadata(&leaf_cert_path(&spec.name))? {
        None => host.read_file(&leaf_key_path(&spec.name))?.and_then(|k| cert::key_from_pem(&k, &spec.name).ok()),
        Some(_) => None,
    };
    signer.issue_with(spec, now, left_over)
}

/// A leaf's files from the target; `None` when either is missing or unreadable as a
/// certificate (then it is simply issued again: it is ours).
pub(crate) fn load_leaf(host: &dyn Host, name: &str) -> Result<Option<Leaf>> {
    let (Some(crt), Some(key)) = (host.read_file(&leaf_cert_path(name))?, host.read_file(&leaf_key_path(name))?) else {
        return Ok(None);
    };
    let (Ok(crt), Ok(key)) = (String::from_utf8(crt), String::from_utf8(key)) else { return Ok(None) };
    let Ok(mut ders) = cert::pem_certs(crt.as_bytes(), name) else { return Ok(None) };
    let der = ders.remove(0);
    let Ok(facts) = cert::facts(&der, name) else { return Ok(None) };
    Ok(Some(Leaf { name: name.to_string(), der, crt_file: crt, key: Secret::new(key), facts }))
}

fn reusable(leaf: &Leaf, spec: &LeafSpec, signer: &issue::Signer, now: i64) -> bool {
    let key_ok = cert::key_from_pem(leaf.key.expose().as_bytes(), &leaf.name)
        .map(|k| cert::key_matches(&k, &leaf.facts))
        .unwrap_or(false);
    key_ok
        && cert::signed_by(&leaf.der, &signer.ca_der)
        && cert::uncovered(&leaf.facts, &spec.dns, &spec.ips).is_none()
        && leaf.facts.not_before <= now
        && leaf.facts.not_after - now > RENEW_WITHIN_DAYS * 86_400
        && leaf.crt_file == cert::der_to_pem(&leaf.der) + &signer.intermediates_pem
}

impl SitePki {
    /// With the customer's certificates, the one ingress certificate serves every host
    /// the release's ingresses use: refuses one that does not name each of `hosts`
    /// (the monitoring hosts, when the release has monitoring). Airlock's own leaves
    /// are issued with the names they need, so there is nothing to check for them.
    pub fn require_ingress_names(&self, hosts: &[String], domain: &str) -> Result<()> {
        if self.mode != PkiMode::CustomerCerts {
            return Ok(());
        }
        let Some(leaf) = self.leaves.iter().find(|l| l.name == "ingress") else { return Ok(()) };
        if let Some(missing) = cert::uncovered(&leaf.facts, hosts, &[]) {
            let names = if leaf.facts.sans.is_empty() { "none".to_string() } else { leaf.facts.sans.join(", ") };
            return Err(Error::input(
                leaf.cert_path().display().to_string(),
                format!("does not cover `{missing}`, a host the release's monitoring serves (its names: {names})"),
            )
            .with_hint(format!(
                "ask the customer's IT for an ingress certificate that names *.{domain}, or each of {} too",
                hosts.join(", ")
            )));
        }
        Ok(())
    }

    pub fn mode(&self) -> PkiMode {
        self.mode
    }
    /// The CA certificate clients must trust (PEM): `ca.crt`, registries.yaml's
    /// `ca_file`, the install report.
    pub fn ca_pem(&self) -> &str {
        &self.ca_file
    }
    /// SHA-256 of the CA certificate, `AB:CD:…` (as `openssl x509 -fingerprint -sha256`).
    pub fn ca_fingerprint(&self) -> String {
        cert::fingerprint(&self.ca_der)
    }
    pub fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }
    /// `ingress`, `minio`, `keycloak`, `registry`; `None` when this mode or these answers
    /// have no such certificate (customer-certs has only `ingress`).
    pub fn leaf(&self, name: &str) -> Option<&Leaf> {
        self.leaves.iter().find(|l| l.name == name)
    }
    /// What this plan issues anew (`ca` and leaf names); empty on a converged re-run.
    pub fn issued(&self) -> &[String] {
        &self.issued
    }

    /// Certificates that expire within [`RENEW_WITHIN_DAYS`] although this plan keeps
    /// them: a customer's, which airlock cannot renew, or ones capped by a CA near its
    /// end. For the operator to act on before an outage; the install goes ahead.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings_at(OffsetDateTime::now_utc().unix_timestamp())
    }

    pub(crate) fn warnings_at(&self, now: i64) -> Vec<String> {
        let fix = match self.mode {
            PkiMode::SelfSigned => {
                "make a new site CA in time: move /etc/airlock/pki aside and install again (clients must trust the new ca.crt)"
            }
            _ => "ask the customer's IT for renewed files, point the pki.* answers at them and install again",
        };
        let ca = cert::facts(&self.ca_der, state::CA_CERT).ok().map(|f| ("the CA".to_string(), f));
        let leaves = self.leaves.iter().map(|l| (format!("the {} certificate", l.name), l.facts.clone()));
        ca.into_iter()
            .chain(leaves)
            .filter(|(_, f)| f.not_after - now <= RENEW_WITHIN_DAYS * 86_400)
            .map(|(what, f)| format!("{what} ({}) expires {}; {fix}", f.subject, cert::date(f.not_after)))
            .collect()
    }

    /// What the PKI lays down: keys before their certificates, the state file last.
    pub fn layout(&self) -> Layout {
        let mut l = Layout::default();
        l.dir(state::PKI_DIR, 0o755);
        if let Some(k) = &self.ca_key {
            l.secret_file(state::CA_KEY, k.expose().as_bytes().to_vec());
        }
        l.file(state::CA_CERT, 0o644, self.ca_file.clone().into_bytes());
        for leaf in &self.leaves {
            l.secret_file(leaf.key_path(), leaf.key.expose().as_bytes().to_vec());
            l.file(leaf.cert_path(), 0o644, leaf.crt_file.clone().into_bytes());
        }
        let state = PkiState { mode: self.mode, leaves: self.leaves.iter().map(|l| l.name.clone()).collect() };
        let mut json = serde_json::to_vec_pretty(&state).expect("state serialises");
        json.push(b'\n');
        l.file(state::PKI_STATE_FILE, 0o644, json);
        l
    }

    /// The engine steps that write [`SitePki::layout`] (ids `pki/file/etc/airlock/pki/…`).
    pub fn steps(&self) -> Vec<Box<dyn Step>> {
        layout_steps("pki", &self.layout().grouped(StepGroup::Secrets), Path::new(state::PKI_DIR))
    }
}
