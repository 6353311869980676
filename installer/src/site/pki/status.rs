//! `airlock pki status` and `airlock pki renew`: what the target's PKI holds, and
//! re-issuing the leaves that are about to expire with the site CA.
//!
//! Renewal keeps every name of the certificate it replaces (read from the certificate,
//! so it needs no answers file), makes a new key, and writes key then certificate
//! through the host seam (0600 / 0644) under the installer's lock. A crash between the
//! two leaves a key that does not match its certificate: `status` shows it and the next
//! `renew` re-issues that leaf. The Kubernetes TLS Secrets carry copies of the
//! certificates and keys: `renew` rewrites every Secret manifest airlock placed (the
//! inventory's) that holds a replaced certificate or key, so the distribution applies
//! the new certificate without another install.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use serde::Serialize;
use time::OffsetDateTime;

use super::cert::{self, CertFacts};
use super::issue::Signer;
use super::{leaf_cert_path, leaf_key_path, load_leaf, load_state, LeafSpec, LEAF_NAMES};
use crate::host::{Host, Perms};
use crate::site::answers::PkiMode;
use crate::state::{CA_CERT, CA_KEY, PKI_STATE_FILE as STATE_FILE};

/// One certificate on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertStatus {
    /// `ca`, `ingress`, `minio`, ...
    pub name: String,
    /// Target path of the certificate file.
    pub path: PathBuf,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: i64,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub sha256: String,
    pub serial: String,
    pub expired: bool,
    /// Expires within the warning window (and is not expired yet).
    pub expiring: bool,
    /// Whether the key file next to it belongs to it; `None` when there is no key here
    /// (the customer's CA, whose key is never copied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_matches: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The mode that made the PKI (from pki.json); `None` when that file is missing.
    pub mode: Option<PkiMode>,
    pub within_days: i64,
    pub certificates: Vec<CertStatus>,
    pub expired: usize,
    pub expiring: usize,
}

fn cert_status(name: &str, path: &Path, facts: &CertFacts, key: Option<bool>, now: i64, within: i64) -> CertStatus {
    let left = facts.not_after - now;
    CertStatus {
        name: name.to_string(),
        path: path.to_path_buf(),
        subject: facts.subject.clone(),
        issuer: facts.issuer.clone(),
        sans: facts.sans.clone(),
        not_before: cert::date(facts.not_before),
        not_after: cert::date(facts.not_after),
        days_left: left.div_euclid(86_400),
        sha256: facts.sha256.clone(),
        serial: facts.serial.clone(),
        expired: left <= 0,
        expiring: left > 0 && left <= within * 86_400,
        key_matches: key,
    }
}

fn no_pki() -> Error {
    Error::input(CA_CERT, "does not exist: there is no site PKI on this target")
        .with_hint("run `airlock install` first, or point --root at the installed target root")
}

fn key_matches_file(host: &dyn Host, path: &Path, facts: &CertFacts) -> Result<Option<bool>> {
    let Some(bytes) = host.read_file(path)? else { return Ok(None) };
    let file = path.display().to_string();
    Ok(Some(cert::key_from_pem(&bytes, &file).map(|k| cert::key_matches(&k, facts)).unwrap_or(false)))
}

/// Every certificate of the target's PKI; `within_days` sets the warning window.
pub fn status(host: &dyn Host, within_days: i64) -> Result<StatusReport> {
    status_at(host, within_days, OffsetDateTime::now_utc().unix_timestamp())
}

pub(crate) fn status_at(host: &dyn Host, within_days: i64, now: i64) -> Result<StatusReport> {
    let state = load_state(host)?;
    let ca_bytes = host.read_file(Path::new(CA_CERT))?.ok_or_else(no_pki)?;
    let ca_der = cert::pem_certs(&ca_bytes, CA_CERT)?.remove(0);
    let ca_facts = cert::facts(&ca_der, CA_CERT)?;
    let ca_key = key_matches_file(host, Path::new(CA_KEY), &ca_facts)?;
    let mut certificates = vec![cert_status("ca", Path::new(CA_CERT), &ca_facts, ca_key, now, within_days)];
    let names: Vec<String> = match &state {
        Some(s) => s.leaves.clone(),
        None => LEAF_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    for name in names {
        let path = leaf_cert_path(&name);
        let Some(bytes) = host.read_file(&path)? else {
            if state.is_some() {
                return Err(Error::input(path.display().to_string(), "is missing, but pki.json lists it").with_hint(
                    "run `airlock install` again (it issues missing certificates), or `airlock pki renew`",
                ));
            }
            continue;
        };
        let file = path.display().to_string();
        let der = cert::pem_certs(&bytes, &file)?.remove(0);
        let facts = cert::facts(&der, &file)?;
        let key = key_matches_file(host, &leaf_key_path(&name), &facts)?;
        certificates.push(cert_status(&name, &path, &facts, key, now, within_days));
    }
    Ok(StatusReport {
        mode: state.map(|s| s.mode),
        within_days,
        expired: certificates.iter().filter(|c| c.expired).count(),
        expiring: certificates.iter().filter(|c| c.expiring).count(),
        certificates,
    })
}

/// How to renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewOptions {
    /// Re-issue leaves with this many days left or fewer.
    pub within_days: i64,
    /// Say what would be renewed and change nothing.
    pub dry_run: bool,
}

/// One leaf that was (or, in a dry run, would be) re-issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Renewed {
    pub name: String,
    /// Why: `expires in 12 days`, `expired`, `key does not match`, ...
    pub reason: String,
    pub old_not_after: String,
    /// `None` in a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_not_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenewReport {
    pub dry_run: bool,
    pub within_days: i64,
    pub renewed: Vec<Renewed>,
    /// Leaves that still have enough time left.
    pub kept: Vec<String>,
    /// The Secret manifests (target paths) refreshed with the new certificates and
    /// keys (with `dry_run`: that would be).
    pub secrets: Vec<PathBuf>,
}

/// Re-issues the leaves that expire within `opts.within_days` with the site CA.
pub fn renew(host: &dyn Host, opts: RenewOptions) -> Result<RenewReport> {
    renew_at(host, opts, OffsetDateTime::now_utc())
}

pub(crate) fn renew_at(host: &dyn Host, opts: RenewOptions, now: OffsetDateTime) -> Result<RenewReport> {
    let unix = now.unix_timestamp();
    let state = load_state(host)?.ok_or_else(|| {
        Error::input(STATE_FILE, "does not exist: there is no site PKI on this target (or it predates pki.json)")
            .with_hint("run `airlock install` first, or point --root at the installed target root")
    })?;
    if state.mode != PkiMode::SelfSigned {
        return Err(Error::input(
            STATE_FILE,
            format!("the certificates here come from the customer's PKI (pki.mode {}); airlock cannot renew them", state.mode),
        )
        .with_hint(
            "get new certificate files (or a current CA) from the customer's IT, point the answers' pki.* keys at them and run `airlock install` again",
        ));
    }
    let ca_bytes = host.read_file(Path::new(CA_CERT))?.ok_or_else(no_pki)?;
    let key_bytes = host.read_file(Path::new(CA_KEY))?.ok_or_else(|| {
        Error::input(CA_KEY, "does not exist, so the site CA cannot sign").with_hint(
            "restore ca.key from a backup; without it, move /etc/airlock/pki aside and install again for a new CA",
        )
    })?;
    let ca_der = cert::pem_certs(&ca_bytes, CA_CERT)?.remove(0);
    let ca_facts = cert::facts(&ca_der, CA_CERT)?;
    let key = cert::key_from_pem(&key_bytes, CA_KEY)?;
    if !cert::key_matches(&key, &ca_facts) {
        return Err(Error::input(CA_KEY, format!("does not belong to the site CA in {CA_CERT}"))
            .with_hint("restore the matching pair from a backup"));
    }
    cert::check_validity(
        &ca_facts,
        unix,
        CA_CERT,
        "the site CA itself has expired: move /etc/airlock/pki aside and install again for a new CA (clients must trust the new ca.crt)",
    )?;
    let signer = Signer { ca_der, key, intermediates_pem: String::new(), chain_not_after: ca_facts.not_after };

    // Plan first, so a dry run and a real run decide the same way.
    let mut todo = Vec::new();
    let mut kept = Vec::new();
    for name in &state.leaves {
        let leaf = load_leaf(host, name)?.ok_or_else(|| {
            Error::input(leaf_cert_path(name).display().to_string(), "is missing or unreadable, but pki.json lists it")
                .with_hint("run `airlock install` again: it issues missing certificates from the answers")
        })?;
        let left = leaf.facts.not_after - unix;
        let key_ok = cert::key_from_pem(leaf.key_pem().as_bytes(), name)
            .map(|k| cert::key_matches(&k, &leaf.facts))
            .unwrap_or(false);
        let reason = if left <= 0 {
            Some("expired".to_string())
        } else if left <= opts.within_days * 86_400 {
            Some(format!("expires in {} days", left.div_euclid(86_400)))
        } else if !key_ok {
            Some("its key does not match it".to_string())
        } else if !cert::signed_by(&leaf.der, &signer.ca_der) {
            Some("it is not signed by the site CA".to_string())
        } else {
            None
        };
        match reason {
            Some(r) => todo.push((leaf, r)),
            None => kept.push(name.clone()),
        }
    }

    let _lock = if opts.dry_run || todo.is_empty() { None } else { Some(crate::state::lock_site(host)?) };
    let mut renewed = Vec::new();
    let mut swaps = Vec::new();
    for (old, reason) in todo {
        let spec = LeafSpec { name: old.name.clone(), dns: old.facts.dns.clone(), ips: old.facts.ips.clone() };
        let mut r = Renewed {
            name: old.name.clone(),
            reason,
            old_not_after: cert::date(old.facts.not_after),
            new_not_after: None,
            sha256: None,
        };
        let mut swap = Swap { old_crt: old.fullchain_pem().to_string(), old_key: old.key_pem().to_string(), new: None };
        if !opts.dry_run {
            let new = signer.issue(&spec, now)?;
            swap.new = Some((new.fullchain_pem().to_string(), new.key_pem().to_string()));
            host.write_file(&new.key_path(), &mut new.key_pem().as_bytes(), Perms::secret())?;
            host.write_file(&new.cert_path(), &mut new.fullchain_pem().as_bytes(), Perms::mode(0o644))?;
            // The inventory records these as placed: what status and uninstall compare
            // with must be airlock's own new issue, not the customer's edit.
            crate::state::Inventory::record_rewritten(
                host,
                &[(&new.key_path(), new.key_pem().as_bytes()), (&new.cert_path(), new.fullchain_pem().as_bytes())],
            )?;
            r.new_not_after = Some(cert::date(new.facts.not_after));
            r.sha256 = Some(new.facts.sha256.clone());
        }
        swaps.push(swap);
        renewed.push(r);
    }
    let secrets = refresh_tls_secrets(host, &swaps, opts.dry_run)?;
    if !opts.dry_run && !renewed.is_empty() {
        refresh_expiry_textfile(host, &state.leaves)?;
    }
    Ok(RenewReport { dry_run: opts.dry_run, within_days: opts.within_days, renewed, kept, secrets })
}

/// Rewrites the certificates' expiry for node-exporter (the monitoring component's
/// `CertificateExpiresSoon` alert reads it) when the install laid it down, as the
/// install renders it, so a renewal does not leave the alert firing until the next
/// install, nor the file drifting from the inventory.
fn refresh_expiry_textfile(host: &dyn Host, leaves: &[String]) -> Result<()> {
    use crate::render::platform::monitoring::{pki_textfile, PKI_TEXTFILE};
    let path = Path::new(PKI_TEXTFILE);
    if host.read_file(path)?.is_none() {
        return Ok(());
    }
    let mut certs = Vec::new();
    for name in leaves {
        if let Some(leaf) = load_leaf(host, name)? {
            certs.push((name.clone(), leaf.facts.not_after));
        }
    }
    let text = pki_textfile(&certs);
    host.write_file(path, &mut text.as_bytes(), Perms::mode(0o644))?;
    crate::state::Inventory::record_rewritten(host, &[(path, text.as_bytes())])
}

/// One replaced leaf: its old certificate file and key, and the new ones (`None` in a
/// dry run, where only the old ones are looked for).
struct Swap {
    old_crt: String,
    old_key: String,
    new: Option<(String, String)>,
}

/// Rewrites the Secret manifests of the inventory whose string values are a replaced
/// leaf's certificate file or key, with the new ones; returns their paths. A manifest
/// is re-serialised from its parsed documents, as the renderer wrote it (one YAML
/// document per Secret, keys in order), so only the swapped values change.
fn refresh_tls_secrets(host: &dyn Host, swaps: &[Swap], dry_run: bool) -> Result<Vec<PathBuf>> {
    if swaps.is_empty() || host.read_file(Path::new(crate::state::INVENTORY_PATH))?.is_none() {
        return Ok(Vec::new());
    }
    let inventory = crate::state::Inventory::load(host)?;
    let mut refreshed = Vec::new();
    let mut written: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for f in &inventory.files {
        let is_manifest = f.path.extension().is_some_and(|e| e == "yaml")
            && f.path.parent().is_some_and(|d| d.ends_with("server/manifests"));
        if !is_manifest {
            continue;
        }
        let Some(bytes) = host.read_file(&f.path)? else { continue };
        let Ok(text) = String::from_utf8(bytes) else { continue };
        // (The PEM inside is indented as a YAML block: compare parsed values only.)
        if !text.contains("kind: Secret") {
            continue;
        }
        let mut docs = Vec::new();
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(d).map_err(|_| {
                Error::corrupt(f.path.display().to_string(), "is a Secret manifest airlock placed, but not YAML")
                    .with_hint("restore the manifest, or run `airlock install` again to rewrite it")
            })?;
            docs.push(v);
        }
        let mut changed = false;
        for doc in docs.iter_mut().filter(|d| d["kind"] == "Secret") {
            let Some(data) = doc.get_mut("stringData").and_then(|d| d.as_mapping_mut()) else { continue };
            for (_, v) in data.iter_mut() {
                let Some(s) = v.as_str() else { continue };
                for swap in swaps {
                    let new = if s == swap.old_crt {
                        swap.new.as_ref().map(|n| n.0.clone())
                    } else if s == swap.old_key {
                        swap.new.as_ref().map(|n| n.1.clone())
                    } else {
                        continue;
                    };
                    changed = true;
                    if let Some(n) = new {
                        *v = serde_yaml::Value::String(n);
                    }
                    break;
                }
            }
        }
        if !changed {
            continue;
        }
        refreshed.push(f.path.clone());
        if dry_run {
            continue;
        }
        let mut out = String::new();
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            // The error would carry key material: name the file only.
            out.push_str(&serde_yaml::to_string(d).map_err(|_| {
                Error::input(f.path.display().to_string(), "cannot be written as YAML")
                    .with_hint("this is a bug in airlock; report it with the command that failed")
            })?);
        }
        host.write_file(&f.path, &mut out.as_bytes(), Perms::secret())?;
        written.push((f.path.clone(), out.into_bytes()));
    }
    let pairs: Vec<(&Path, &[u8])> = written.iter().map(|(p, b)| (p.as_path(), b.as_slice())).collect();
    crate::state::Inventory::record_rewritten(host, &pairs)?;
    Ok(refreshed)
}
