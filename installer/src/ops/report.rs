//! `airlock report`: the site's readiness record, signed, for the handover.
//!
//! It lines up the customer's on-prem readiness checklist (ten lines, from the
//! deployment blueprint §7.3) with the evidence Airlock keeps on the target: the
//! journal of the last run and the preflight overrides it accepted, the installed
//! release (bundle, version, manifest digest, signer key), the site PKI's certificates
//! with fingerprints and expiry, the install report (URLs, CA, where the credential
//! files are), drift from the inventory, the last upgrade. A line is `verified` only
//! with evidence that shows it, `failed` when the evidence shows it is not so, and
//! otherwise `not-verified`, saying what evidence there is and what would verify it:
//! never a tick without evidence.
//!
//! The record is data ([`Readiness`]); [`to_html`] renders it as one self-contained
//! page (no external fonts, scripts or images; print CSS for A4). [`sign`] signs its
//! JSON with the site's report key in minisign format, so stock `minisign -V` checks it;
//! the install makes the key with the site ([`key_files`]: [`REPORT_KEY_PATH`], 0600;
//! the public half at [`REPORT_PUBKEY_PATH`]).
//! No credential's value is read: only where each file is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::minisign::{self, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::engine::Outcome;
use crate::host::{Host, Perms};
use crate::ops::status::{self, Component, Drift, Live, StatusReport};
use crate::ops::upgrade::UpgradeJournal;
use crate::site::pki::{self, CertStatus};
use crate::state;

/// The site's report signing key (minisign, unencrypted: it signs unattended), 0600.
pub const REPORT_KEY_PATH: &str = "/var/lib/airlock/secrets/report-signing.key";
/// Its public half, for `minisign -V -p` and `airlock report --verify`.
pub const REPORT_PUBKEY_PATH: &str = "/var/lib/airlock/report-signing.pub";
/// The last `airlock ldap test` run on this site ([`LdapTestRecord`]).
pub const LDAP_TEST_PATH: &str = "/var/lib/airlock/ldap-test.json";
/// The format of [`Readiness`]; a reader refuses one it does not know.
pub const FORMAT: u32 = 1;

/// What a checklist line's evidence shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Verified,
    NotVerified,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::NotVerified => "not verified",
            Verdict::Failed => "failed",
        }
    }
}

/// One line of the readiness checklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Stable id: `distribution`, `bundle`, `minio`, `ldap`, `tls`, `backup`,
    /// `tenants`, `offline-update`, `monitoring`, `network-policies`.
    pub id: String,
    /// The checklist's wording.
    pub item: String,
    pub status: Verdict,
    /// What Airlock has for it, each a sentence naming its source.
    pub evidence: Vec<String>,
    /// What would verify it, when it is not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_verify: Option<String>,
}

/// The installed release, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub bundle: String,
    pub version: String,
    pub manifest_sha256: String,
    /// Key id of the vendor key that signed the bundle.
    pub signer: String,
    pub profile: String,
    pub distribution: String,
}

/// One certificate of the site PKI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub name: String,
    pub path: PathBuf,
    pub subject: String,
    pub not_after: String,
    pub days_left: i64,
    pub sha256: String,
}

/// Where a credential is kept (never its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialFile {
    pub what: String,
    pub path: PathBuf,
    pub mode: String,
}

/// The node the report was made on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// `server` or `agent`.
    pub role: String,
    /// Live only: every node the cluster knows, with `Ready`/`NotReady`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_nodes: BTreeMap<String, String>,
}

/// A preflight failure the operator accepted, from the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub check: String,
    pub detail: String,
    /// The run that accepted it.
    pub run: String,
}

/// The last upgrade, from its journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    pub from_version: String,
    pub to_version: String,
    pub started: String,
    pub finished: Option<String>,
    /// `succeeded`, `rolled-back`, `rollback-failed` or `running`.
    pub outcome: String,
    /// The backup taken first (a directory on the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The readiness record: what `airlock report` prints, renders and signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub format: u32,
    /// RFC 3339, UTC.
    pub generated: String,
    /// Who ran the report (`SUDO_USER`, else `USER`).
    pub operator: String,
    /// The target root the evidence was read from (`/`: the running node).
    pub root: PathBuf,
    /// Whether the running cluster was asked (only on `/`).
    pub live: bool,
    pub release: Option<Release>,
    /// This node as the kept answers name it, with what the cluster said of it (live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The distribution and each chart, with version (and health, live).
    pub components: Vec<Component>,
    pub checklist: Vec<Line>,
    /// Component → URL.
    pub urls: BTreeMap<String, String>,
    /// The CA certificate customers import, and its SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<(PathBuf, String)>,
    pub credential_files: Vec<CredentialFile>,
    pub certificates: Vec<Certificate>,
    pub overrides: Vec<Override>,
    /// Installed paths no longer as the install left them.
    pub drift: Vec<Drift>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<Upgrade>,
    /// What to do next, most important first.
    pub next_steps: Vec<String>,
}

/// What [`readiness`] needs besides the host.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub operator: String,
    /// Now, as Unix seconds: certificate days are counted from here.
    pub now_unix: i64,
}

/// What `airlock ldap test` keeps on a site for the report: when, against which
/// directory, and what it found (the summary an operator sees; never the password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapTestRecord {
    /// RFC 3339, UTC.
    pub ran: String,
    pub url: String,
    pub ok: bool,
    pub summary: String,
}

/// Keeps the outcome of an `airlock ldap test` on the site, when an install is recorded
/// there (before an install there is no site to keep it for). Returns whether it did.
pub fn record_ldap_test(
    host: &dyn Host,
    url: &str,
    result: &std::result::Result<crate::site::ldap::probe::ProbeReport, crate::site::ldap::probe::ProbeError>,
) -> Result<bool> {
    if state::ReleaseRecord::load(host)?.is_none() {
        return Ok(false);
    }
    let (ok, summary) = match result {
        Ok(r) => (true, r.summary()),
        Err(e) => (false, format!("{}: {}", e.subject, e.cause)),
    };
    let record = LdapTestRecord { ran: state::now_rfc3339(), url: url.to_string(), ok, summary };
    let mut json = serde_json::to_vec_pretty(&record).expect("an LDAP test record serialises");
    json.push(b'\n');
    host.write_file(Path::new(LDAP_TEST_PATH), &mut json.as_slice(), Perms::mode(0o644))?;
    Ok(true)
}

/// The install report (`report.json`), as far as the readiness record uses it.
#[derive(Deserialize, Default)]
struct InstallReport {
    #[serde(default)]
    urls: BTreeMap<String, String>,
    #[serde(default)]
    ca: Option<CaReport>,
    #[serde(default)]
    credentials: Vec<CredentialFile>,
}

#[derive(Deserialize)]
struct CaReport {
    path: PathBuf,
    sha256: String,
}

/// Reads the evidence on the target and lines it up with the checklist. An error only
/// when nothing Airlock installed is recorded there, or a record is damaged.
pub fn readiness(host: &dyn Host, opts: &ReportOptions) -> Result<Readiness> {
    let st = status::status(host, &status::StatusOptions { now_unix: opts.now_unix })?;
    let install: InstallReport = match host.read_file(Path::new(state::REPORT_PATH))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(state::REPORT_PATH, format!("is not an install report this airlock can read: {e}"))
                .with_hint("run the install again with the bundle the site runs; it rewrites the report")
        })?,
        None => InstallReport::default(),
    };
    // The PKI's own status has the fingerprints; a site without one has none.
    let certificates: Vec<Certificate> = match pki::status(host, status::EXPIRY_WARNING_DAYS) {
        Ok(p) => p.certificates.iter().map(certificate).collect(),
        Err(_) => Vec::new(),
    };
    let upgrade = UpgradeJournal::load(host)?.map(|u| Upgrade {
        from_version: u.from_version.clone(),
        to_version: u.to_version.clone(),
        started: u.started.clone(),
        finished: u.finished.clone(),
        outcome: outcome_str(u.outcome).to_string(),
        backup: u.backup.as_ref().map(|b| b.dir.clone()),
        error: u.error.clone(),
    });
    let overrides: Vec<Override> = st
        .last_run
        .iter()
        .flat_map(|run| {
            run.overrides.iter().filter(|o| o.applied).map(|o| Override {
                check: o.id.clone(),
                detail: o.detail.clone(),
                run: run.run_id.clone(),
            })
        })
        .collect();
    let release = st.release.as_ref().map(|r| Release {
        bundle: r.bundle.clone(),
        version: r.version.clone(),
        manifest_sha256: r.manifest_sha256.clone(),
        signer: r.signer.clone(),
        profile: r.profile.clone(),
        distribution: r.distribution.clone(),
    });
    let kept = kept_answers(host)?;
    // As `airlock ldap test` records it (`ldaps://host:port`), so the two compare.
    let ldap_url = kept
        .get("ldap")
        .and_then(|l| l.get("url"))
        .and_then(|u| u.as_str())
        .map(|u| crate::site::ldap::LdapUrl::parse(u).map(|p| p.to_string()).unwrap_or_else(|_| u.to_string()));
    let node = kept.get("node").and_then(|n| n.get("name")).and_then(|n| n.as_str()).map(|name| Node {
        name: name.to_string(),
        role: kept.get("node").and_then(|n| n.get("role")).and_then(|r| r.as_str()).unwrap_or("server").to_string(),
        cluster_nodes: match &st.live {
            Live::Checked { nodes, .. } => nodes.clone(),
            Live::NotLive { .. } => BTreeMap::new(),
        },
    });
    let ldap_test: Option<LdapTestRecord> = match host.read_file(Path::new(LDAP_TEST_PATH))? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(LDAP_TEST_PATH, format!("is not an LDAP test record this airlock can read: {e}"))
                .with_hint("run `airlock ldap test` again: it rewrites the record")
        })?),
        None => None,
    };
    let checklist = checklist(
        &st,
        &install,
        &certificates,
        upgrade.as_ref(),
        &overrides,
        (ldap_url.as_deref(), ldap_test.as_ref()),
    );
    let mut next_steps: Vec<String> = st.problems.clone();
    next_steps.extend(
        checklist
            .iter()
            .filter(|l| l.status != Verdict::Verified)
            .filter_map(|l| l.to_verify.as_ref().map(|t| format!("{}: {t}", l.item))),
    );
    Ok(Readiness {
        format: FORMAT,
        generated: airlock_format::manifest::rfc3339(opts.now_unix.max(0) as u64),
        operator: opts.operator.clone(),
        root: st.root.clone(),
        live: matches!(st.live, Live::Checked { .. }),
        release,
        node,
        components: st.components.clone(),
        checklist,
        urls: install.urls.clone(),
        ca_certificate: install.ca.as_ref().map(|c| (c.path.clone(), c.sha256.clone())),
        credential_files: install.credentials,
        certificates,
        overrides,
        drift: st.drift.clone(),
        last_upgrade: upgrade,
        next_steps,
    })
}

fn certificate(c: &CertStatus) -> Certificate {
    Certificate {
        name: c.name.clone(),
        path: c.path.clone(),
        subject: c.subject.clone(),
        not_after: c.not_after.clone(),
        days_left: c.days_left,
        sha256: c.sha256.clone(),
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Running => "running",
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled-back",
        Outcome::RollbackFailed => "rollback-failed",
    }
}

/// The kept answers (secrets are kept apart from them), for the node's name and role and
/// the directory's URL; `Null` when there are none.
fn kept_answers(host: &dyn Host) -> Result<serde_yaml::Value> {
    let Some(bytes) = host.read_file(Path::new(state::KEPT_ANSWERS_PATH))? else { return Ok(serde_yaml::Value::Null) };
    Ok(serde_yaml::from_slice(&bytes).unwrap_or(serde_yaml::Value::Null))
}

fn line(id: &str, item: &str, status: Verdict, evidence: Vec<String>, to_verify: Option<&str>) -> Line {
    Line {
        id: id.into(),
        item: item.into(),
        status,
        evidence,
        to_verify: if status == Verdict::Verified { None } else { to_verify.map(String::from) },
    }
}

/// The ten lines of the blueprint's §7.3 checklist, each with its evidence.
fn checklist(
    st: &StatusReport,
    install: &InstallReport,
    certs: &[Certificate],
    upgrade: Option<&Upgrade>,
    overrides: &[Override],
    (ldap_url, ldap_test): (Option<&str>, Option<&LdapTestRecord>),
) -> Vec<Line> {
    let on_node = "run `airlock report` on the running node (`--root /`), where the cluster is asked";
    let mut out = Vec::new();

    // 1. The distribution: installed by a finished run, and running.
    let mut ev = Vec::new();
    let mut verdict = Verdict::NotVerified;
    if let Some(run) = &st.last_run {
        ev.push(format!(
            "install journal: run {} {} ({} steps applied, {} already done), started {}",
            run.run_id,
            outcome_str(run.outcome),
            run.steps_applied,
            run.steps_satisfied,
            run.started
        ));
    }
    if let Some(r) = &st.release {
        ev.push(format!("release record: {} installed with profile {}", r.distribution, r.profile));
    }
    for o in overrides {
        ev.push(format!("preflight check `{}` failed and was overridden by the operator ({})", o.check, o.detail));
    }
    if let Some(p) = &st.pending {
        ev.push(format!("the last run is {}: {}", p.state, p.hint));
        verdict = Verdict::Failed;
    }
    if !st.drift.is_empty() {
        ev.push(format!("{} installed path(s) are no longer as installed (drift, below)", st.drift.len()));
        verdict = Verdict::Failed;
    }
    match &st.live {
        Live::Checked { unit, unit_state, nodes, .. } => {
            ev.push(format!("{unit} is {unit_state}"));
            for (node, ready) in nodes {
                ev.push(format!("node {node}: {ready}"));
            }
            let running = unit_state == "active" && !nodes.is_empty() && nodes.values().all(|r| r == "Ready");
            if verdict != Verdict::Failed {
                verdict = if running && st.release.is_some() { Verdict::Verified } else { Verdict::Failed };
            }
        }
        Live::NotLive { reason } => ev.push(format!("the cluster was not asked: {reason}")),
    }
    out.push(line("distribution", "K3s/RKE2 installation tested", verdict, ev, Some(on_node)));

    // 2. The bundle: verified (signature and every entry) before anything was written.
    let (verdict, ev) = match &st.release {
        Some(r) if st.pending.is_none() => (
            Verdict::Verified,
            vec![
                format!("bundle {} {} (created {})", r.bundle, r.version, r.created),
                format!("manifest SHA-256 {}", r.manifest_sha256),
                format!(
                    "signature by vendor key {} and every entry (images included) verified before the install wrote anything",
                    r.signer
                ),
            ],
        ),
        _ => (Verdict::NotVerified, vec!["no finished install recorded".to_string()]),
    };
    out.push(line(
        "bundle",
        "Air-gap image bundle built (all container images)",
        verdict,
        ev,
        Some("finish the install: `airlock status` names what is pending"),
    ));

    // 3. MinIO: documented by this report when the release has it.
    let minio_files: Vec<&CredentialFile> =
        install.credentials.iter().filter(|c| c.what.to_lowercase().contains("minio")).collect();
    let (verdict, ev) = match install.urls.get("minio") {
        Some(url) => {
            let mut ev = vec![format!("MinIO console {url} (install report)")];
            ev.extend(minio_files.iter().map(|c| format!("{}: {} ({})", c.what, c.path.display(), c.mode)));
            (Verdict::Verified, ev)
        }
        None => (Verdict::NotVerified, vec!["the installed release has no MinIO".to_string()]),
    };
    out.push(line(
        "minio",
        "MinIO storage configuration documented",
        verdict,
        ev,
        Some("install a release with the minio component"),
    ));

    // 4. LDAP: the last `airlock ldap test` on this site, against the directory the
    //    answers configure (a test of another directory is no evidence for this one).
    let mut ev = vec![match ldap_url {
        Some(url) => format!("the answers configure the directory {url}"),
        None => "the answers configure no directory".to_string(),
    }];
    let verdict = match ldap_test {
        Some(t) => {
            let what = if t.ok { "passed" } else { "failed" };
            ev.push(format!("`airlock ldap test` {what} at {} against {}:", t.ran, t.url));
            ev.extend(t.summary.lines().map(String::from));
            match (Some(t.url.as_str()) == ldap_url, t.ok) {
                (true, true) => Verdict::Verified,
                (true, false) => Verdict::Failed,
                (false, _) => Verdict::NotVerified,
            }
        }
        None => {
            ev.push("no `airlock ldap test` is recorded on this site".to_string());
            Verdict::NotVerified
        }
    };
    out.push(line(
        "ldap",
        "LDAP/AD integration in Keycloak tested",
        verdict,
        ev,
        Some("run `airlock ldap test --answers <the site's answers>` on the node: its result is kept for this report"),
    ));

    // 5. TLS: the certificates are issued and in date; serving them is not checked here.
    let mut ev: Vec<String> = certs
        .iter()
        .map(|c| {
            format!(
                "{} certificate ({}): SHA-256 {}, valid until {} ({} days)",
                c.name, c.subject, c.sha256, c.not_after, c.days_left
            )
        })
        .collect();
    let expired: Vec<&Certificate> = certs.iter().filter(|c| c.days_left < 0).collect();
    let verdict = if !expired.is_empty() { Verdict::Failed } else { Verdict::NotVerified };
    if certs.is_empty() {
        ev.push("no site PKI on this node".to_string());
    } else if expired.is_empty() {
        ev.push("the served certificates were not checked".to_string());
    }
    out.push(line(
        "tls",
        "Self-signed TLS certificates work",
        verdict,
        ev,
        Some(if expired.is_empty() {
            "open each URL in a browser that trusts the site CA, or `curl --cacert` it"
        } else {
            "renew the expired certificates: `airlock pki renew`"
        }),
    ));

    // 6. Backup and restore: the last `airlock backup create` and the upgrade's backup;
    // a restore drill is not recorded yet, so the line stays "not verified".
    let mut ev = crate::ops::backup::schedule::evidence(st);
    if let Some((u, dir)) = upgrade.and_then(|u| u.backup.as_ref().map(|b| (u, b))) {
        ev.push(format!("backup before the upgrade to {} at {}: {}", u.to_version, u.started, dir.display()));
    }
    if ev.is_empty() {
        ev.push("no backup recorded".to_string());
    }
    out.push(line(
        "backup",
        "Backup/restore process documented and tested",
        Verdict::NotVerified,
        ev,
        Some("take a backup and restore it onto a test node; Airlock records no restore drill yet"),
    ));

    // 7. Database per tenant: nothing Airlock can see.
    out.push(line(
        "tenants",
        "DB-per-tenant mode tested (feature flag)",
        Verdict::NotVerified,
        vec!["no evidence: the application's tenant mode is outside what Airlock records".to_string()],
        Some("test the application with its per-tenant database flag on"),
    ));

    // 8. Offline update: documented in docs/day2.md; an upgrade that ran shows it works.
    let (verdict, ev) = match upgrade {
        Some(u) => {
            let what = format!(
                "last upgrade {} → {}: {} (started {}{})",
                u.from_version,
                u.to_version,
                u.outcome,
                u.started,
                u.finished.as_ref().map(|f| format!(", finished {f}")).unwrap_or_default()
            );
            let verdict = match u.outcome.as_str() {
                "succeeded" => Verdict::Verified,
                "rollback-failed" | "running" => Verdict::Failed,
                _ => Verdict::NotVerified,
            };
            let mut ev = vec![what];
            if let Some(e) = &u.error {
                ev.push(format!("why: {e}"));
            }
            (verdict, ev)
        }
        None => (Verdict::NotVerified, vec!["documented (docs/day2.md, upgrade); no upgrade has run here".to_string()]),
    };
    out.push(line(
        "offline-update",
        "Offline update process documented",
        verdict,
        ev,
        Some("upgrade with a newer bundle (`airlock upgrade`), or a test node first"),
    ));

    // 9. Monitoring: not part of what Airlock installs yet.
    out.push(line(
        "monitoring",
        "Monitoring dashboard works without internet",
        Verdict::NotVerified,
        vec!["no evidence: Airlock installs no monitoring yet".to_string()],
        Some("open the monitoring dashboard from a machine without internet access"),
    ));

    // 10. Network policies: the charts' own, which Airlock does not inspect.
    out.push(line(
        "network-policies",
        "Network policies in force (no unwanted egress)",
        Verdict::NotVerified,
        vec!["no evidence: Airlock does not check the NetworkPolicies the charts install".to_string()],
        Some("from a pod, try to reach an address outside the cluster; it must fail"),
    ));
    out
}

impl Readiness {
    /// The JSON that is signed: pretty, with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("the readiness record serialises");
        v.push(b'\n');
        v
    }
}

/// The site's report key as kept on the target, if it is there.
fn kept_key(host: &dyn Host) -> Result<Option<SecretKey>> {
    let Some(text) = host.read_file(Path::new(REPORT_KEY_PATH))? else { return Ok(None) };
    SecretKey::parse(&String::from_utf8_lossy(&text), None).map(Some).map_err(|e| {
        Error::corrupt(REPORT_KEY_PATH, format!("is not a minisign secret key: {e}")).with_hint(format!(
            "move it away and run `airlock report -o` again: it makes a new key (and {REPORT_PUBKEY_PATH})"
        ))
    })
}

/// The report key's two files for the install to lay down (secret, public): the kept
/// key, so a resumed run or an upgrade writes the same; a new one on a new site.
pub fn key_files(host: &dyn Host) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = match kept_key(host)? {
        Some(k) => k,
        None => SecretKey::generate()?,
    };
    Ok((key.to_text(None)?.into_bytes(), key.public_key().to_text().into_bytes()))
}

/// The site's report key: the one the install made, or (on a site installed before
/// installs made one) made and kept on the target now.
pub fn site_key(host: &dyn Host) -> Result<SecretKey> {
    if let Some(key) = kept_key(host)? {
        return Ok(key);
    }
    let key = SecretKey::generate()?;
    host.write_file(Path::new(REPORT_KEY_PATH), &mut key.to_text(None)?.as_bytes(), Perms::secret())?;
    let public = key.public_key().to_text();
    host.write_file(Path::new(REPORT_PUBKEY_PATH), &mut public.as_bytes(), Perms::mode(0o644))?;
    Ok(key)
}

/// Signs the record's JSON (as [`Readiness::to_json`] gives it) with `key`.
pub fn sign(key: &SecretKey, json: &[u8], r: &Readiness) -> Result<Signature> {
    let what = r.release.as_ref().map(|r| format!("{} {}", r.bundle, r.version)).unwrap_or_else(|| "no release".into());
    key.sign(
        json,
        &format!("airlock readiness report: {what}, generated {} by {}", r.generated, r.operator),
        "signature from the airlock site report key",
    )
}

/// Checks `json` against `sig` with the site's public report key (`pubkey_text`).
pub fn verify(pubkey_text: &str, json: &[u8], sig_text: &str, file: &str) -> Result<PublicKey> {
    let key = PublicKey::parse(pubkey_text)?;
    let sig = Signature::parse(sig_text).map_err(|e| {
        Error::new(ErrorKind::Signature, format!("{file}.minisig"), format!("is not a minisign signature: {e}"))
    })?;
    minisign::verify(std::slice::from_ref(&key), &sig, json).map_err(|_| {
        Error::new(
            ErrorKind::Signature,
            file,
            "does not match its signature: it was changed after it was signed, or another site signed it",
        )
        .with_hint(format!("compare with the copy the site keeps, and check the key: {REPORT_PUBKEY_PATH} on the node"))
    })
}

/// The files `airlock report -o` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Written {
    pub html: PathBuf,
    pub json: PathBuf,
    pub signature: PathBuf,
}

/// Writes the page to `html`, and beside it the signed JSON (`.json`) and its
/// signature (`.json.minisig`). None of them holds a secret.
// The files go to the operator's `-o` path on the machine running airlock, not below
// the target root, so they are written here rather than through the host.
#[allow(clippy::disallowed_methods)]
pub fn write_files(html: &Path, r: &Readiness, json: &[u8], sig: &Signature) -> Result<Written> {
    if html.extension().is_some_and(|e| e == "json" || e == "minisig") || html.file_name().is_none() {
        return Err(Error::input(html.display().to_string(), "is not a name for the HTML page")
            .with_hint("pass -o report.html: the signed JSON goes beside it as report.json"));
    }
    let json_path = html.with_extension("json");
    let sig_path = PathBuf::from(format!("{}.minisig", json_path.display()));
    std::fs::write(html, to_html(r)).map_err(|e| Error::io(html, e))?;
    std::fs::write(&json_path, json).map_err(|e| Error::io(&json_path, e))?;
    std::fs::write(&sig_path, sig.to_text()).map_err(|e| Error::io(&sig_path, e))?;
    Ok(Written { html: html.to_path_buf(), json: json_path, signature: sig_path })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The record as one self-contained HTML page: inline CSS only, no scripts, fonts or
/// images, so it opens on machines without internet; prints to A4, the checklist on a
/// page of its own.
pub fn to_html(r: &Readiness) -> String {
    let mut h = String::new();
    let title = match &r.release {
        Some(rel) => format!("Readiness report: {} {}", rel.bundle, rel.version),
        None => "Readiness report".to_string(),
    };
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        esc(&title)
    ));
    h.push_str(&format!("<h1>{}</h1>\n", esc(&title)));
    h.push_str(&format!(
        "<p class=\"meta\">Generated {} by {} from {}{}. The JSON record next to this page is signed with the site's report key (<code>minisign -V</code>, or <code>airlock report --verify</code>).</p>\n",
        esc(&r.generated),
        esc(&r.operator),
        esc(&r.root.display().to_string()),
        if r.live { " (the running node)" } else { " (a target root: the cluster was not asked)" }
    ));
    let counts = |v: Verdict| r.checklist.iter().filter(|l| l.status == v).count();
    h.push_str(&format!(
        "<p class=\"summary\">{} verified, {} not verified, {} failed.</p>\n",
        counts(Verdict::Verified),
        counts(Verdict::NotVerified),
        counts(Verdict::Failed)
    ));

    if let Some(rel) = &r.release {
        h.push_str("<h2>Release</h2>\n<table class=\"kv\">\n");
        for (k, v) in [
            ("Bundle", format!("{} {}", rel.bundle, rel.version)),
            ("Manifest SHA-256", rel.manifest_sha256.clone()),
            ("Signed by vendor key", rel.signer.clone()),
            ("Profile", rel.profile.clone()),
            ("Distribution", rel.distribution.clone()),
        ] {
            h.push_str(&format!("<tr><th>{}</th><td><code>{}</code></td></tr>\n", esc(k), esc(&v)));
        }
        h.push_str("</table>\n");
    }
    if r.node.is_some() || !r.components.is_empty() {
        h.push_str("<h2>Node and components</h2>\n<table>\n<tr><th>Name</th><th>What</th><th>Version or role</th><th>Health</th></tr>\n");
        if let Some(n) = &r.node {
            let health = n.cluster_nodes.get(&n.name).map(String::as_str).unwrap_or("not asked");
            h.push_str(&format!(
                "<tr><td>{}</td><td>this node</td><td>{}</td><td>{}</td></tr>\n",
                esc(&n.name),
                esc(&n.role),
                esc(health)
            ));
            for (other, ready) in n.cluster_nodes.iter().filter(|(o, _)| **o != n.name) {
                h.push_str(&format!("<tr><td>{}</td><td>node</td><td></td><td>{}</td></tr>\n", esc(other), esc(ready)));
            }
        }
        for c in &r.components {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&c.name),
                esc(&c.kind),
                esc(&c.version),
                esc(c.health.as_deref().unwrap_or("not asked"))
            ));
        }
        h.push_str("</table>\n");
    }
    if !r.urls.is_empty() || r.ca_certificate.is_some() {
        h.push_str("<h2>Platform</h2>\n<table class=\"kv\">\n");
        for (name, url) in &r.urls {
            h.push_str(&format!("<tr><th>{}</th><td><code>{}</code></td></tr>\n", esc(name), esc(url)));
        }
        if let Some((path, sha)) = &r.ca_certificate {
            h.push_str(&format!(
                "<tr><th>CA certificate</th><td><code>{}</code><br>SHA-256 <code>{}</code></td></tr>\n",
                esc(&path.display().to_string()),
                esc(sha)
            ));
        }
        h.push_str("</table>\n");
    }
    if !r.credential_files.is_empty() {
        h.push_str("<h2>Credentials</h2>\n<p>Where each is kept on the node (root only); their values are not in this report.</p>\n<table>\n<tr><th>What</th><th>File</th><th>Mode</th></tr>\n");
        for c in &r.credential_files {
            h.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
                esc(&c.what),
                esc(&c.path.display().to_string()),
                esc(&c.mode)
            ));
        }
        h.push_str("</table>\n");
    }
    if !r.next_steps.is_empty() {
        h.push_str("<h2>What to do next</h2>\n<ol>\n");
        for s in &r.next_steps {
            h.push_str(&format!("<li>{}</li>\n", esc(s)));
        }
        h.push_str("</ol>\n");
    }

    h.push_str("<section class=\"checklist\">\n<h2>On-prem readiness checklist</h2>\n<table id=\"checklist\">\n<tr><th>Item</th><th>Status</th><th>Evidence</th></tr>\n");
    for l in &r.checklist {
        let class = match l.status {
            Verdict::Verified => "ok",
            Verdict::NotVerified => "open",
            Verdict::Failed => "bad",
        };
        h.push_str(&format!(
            "<tr class=\"{class}\"><td>{}</td><td class=\"status\">{}</td><td><ul>",
            esc(&l.item),
            esc(l.status.as_str())
        ));
        for e in &l.evidence {
            h.push_str(&format!("<li>{}</li>", esc(e)));
        }
        if let Some(t) = &l.to_verify {
            h.push_str(&format!("<li class=\"todo\">To verify: {}</li>", esc(t)));
        }
        h.push_str("</ul></td></tr>\n");
    }
    h.push_str("</table>\n</section>\n");

    if !r.certificates.is_empty() {
        h.push_str("<h2>Certificates</h2>\n<table>\n<tr><th>Name</th><th>Subject</th><th>Valid until</th><th>SHA-256</th></tr>\n");
        for c in &r.certificates {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{} ({} days)</td><td><code class=\"fp\">{}</code></td></tr>\n",
                esc(&c.name),
                esc(&c.subject),
                esc(&c.not_after),
                c.days_left,
                esc(&c.sha256)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Preflight overrides</h2>\n");
    if r.overrides.is_empty() {
        h.push_str("<p>None: every preflight check the install ran passed or warned.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>Check</th><th>What was accepted</th><th>Run</th></tr>\n");
        for o in &r.overrides {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&o.check),
                esc(&o.detail),
                esc(&o.run)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Drift since the install</h2>\n");
    if r.drift.is_empty() {
        h.push_str("<p>None: every installed file is as the install left it.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>Path</th><th>Problem</th></tr>\n");
        for d in &r.drift {
            h.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td></tr>\n",
                esc(&d.path.display().to_string()),
                esc(&d.problem)
            ));
        }
        h.push_str("</table>\n");
    }
    if let Some(u) = &r.last_upgrade {
        h.push_str(&format!(
            "<h2>Last upgrade</h2>\n<p>{} → {}: {}, started {}{}.</p>\n",
            esc(&u.from_version),
            esc(&u.to_version),
            esc(&u.outcome),
            esc(&u.started),
            u.finished.as_ref().map(|f| format!(", finished {}", esc(f))).unwrap_or_default()
        ));
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// The page's only style: readable on screen, A4 in print, the checklist starting a page.
const CSS: &str = "body { font-family: sans-serif; font-size: 11pt; margin: 2em; color: #111; }
h1 { font-size: 18pt; } h2 { font-size: 13pt; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0; }
th, td { border: 1px solid #999; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
table.kv th { width: 25%; }
td ul { margin: 0; padding-left: 1.2em; }
tr.ok td.status { background: #d8f0d8; } tr.open td.status { background: #f3f3f3; }
tr.bad td.status { background: #f6d0d0; font-weight: bold; }
li.todo { font-style: italic; }
code { font-family: monospace; word-break: break-all; }
.meta, .summary { color: #333; }
@page { size: A4; margin: 15mm; }
@media print {
  body { margin: 0; font-size: 9.5pt; }
  section.checklist { break-before: page; }
  tr { break-inside: avoid; }
}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::{FileSource, Layout};
    use crate::host::{CommandOutput, RecordingHost};
    use crate::state::{Inventory, InventoryKey};

    /// A node as an install leaves it: the unit, its inventory and the release record.
    fn installed(host: &RecordingHost) {
        let mut layout = Layout::default();
        layout.file("/etc/systemd/system/k3s.service", 0o644, b"[Unit]\n".to_vec());
        let key = InventoryKey::load_or_generate(host).unwrap();
        let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
        for f in &layout.files {
            let FileSource::Inline(b) = &f.source else { unreachable!() };
            host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        let release = br#"{"bundle":"demo","version":"1.0.0","created":"x","manifest_sha256":"ab","signer":"cd","profile":"single-node","distribution":"k3s v1.31.4+k3s1"}"#;
        host.write_file(Path::new(state::RELEASE_PATH), &mut release.as_slice(), Perms::mode(0o644)).unwrap();
    }

    fn live_node(ready: &str) -> RecordingHost {
        let host = RecordingHost::new(true).unwrap();
        installed(&host);
        host.expect_command(&["systemctl", "is-active", "k3s.service"], CommandOutput::ok("active\n"));
        let nodes = format!(
            r#"{{"items":[{{"metadata":{{"name":"n1"}},"status":{{"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}]}}"#
        );
        host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::ok(&nodes));
        host
    }

    fn opts() -> ReportOptions {
        ReportOptions { operator: "field-engineer".into(), now_unix: 1_800_000_000 }
    }

    fn distribution(r: &Readiness) -> &Line {
        r.checklist.iter().find(|l| l.id == "distribution").unwrap()
    }

    #[test]
    fn report_installation_line_is_verified_only_when_the_running_node_is_ready() {
        let r = readiness(&live_node("True"), &opts()).unwrap();
        let l = distribution(&r);
        assert_eq!(l.status, Verdict::Verified, "{l:?}");
        assert!(
            l.evidence.iter().any(|e| e == "k3s.service is active") && l.evidence.iter().any(|e| e == "node n1: Ready")
        );
        assert!(l.to_verify.is_none() && r.live);

        let r = readiness(&live_node("False"), &opts()).unwrap();
        assert_eq!(distribution(&r).status, Verdict::Failed, "{:?}", distribution(&r));
        assert!(r.next_steps.iter().any(|s| s == "node n1 is NotReady"), "{:?}", r.next_steps);

        // In a target root nothing is asked: no evidence that it runs, so no tick.
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let r = readiness(&host, &opts()).unwrap();
        let l = distribution(&r);
        assert_eq!(l.status, Verdict::NotVerified);
        assert!(l.evidence.iter().any(|e| e.starts_with("the cluster was not asked")), "{l:?}");
        assert!(l.to_verify.as_deref().unwrap().contains("--root /"));
        assert_eq!(r.checklist.len(), 10);
        assert_eq!(r.generated, "2027-01-15T08:00:00Z");
    }

    #[test]
    fn report_site_key_is_made_once_kept_secret_and_its_signature_breaks_on_any_change() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let key = site_key(&host).unwrap();
        assert_eq!(
            site_key(&host).unwrap().key_id_hex(),
            key.key_id_hex(),
            "the second report signs with the same key"
        );
        let meta = host.metadata(Path::new(REPORT_KEY_PATH)).unwrap().unwrap();
        assert_eq!(meta.mode & 0o777, 0o600);
        let public = String::from_utf8(host.read_file(Path::new(REPORT_PUBKEY_PATH)).unwrap().unwrap()).unwrap();

        let r = readiness(&host, &opts()).unwrap();
        let json = r.to_json();
        let sig = sign(&key, &json, &r).unwrap().to_text();
        assert!(sig.contains("airlock readiness report: demo 1.0.0, generated 2027-01-15T08:00:00Z by field-engineer"));
        assert_eq!(verify(&public, &json, &sig, "report.json").unwrap().key_id_hex(), key.key_id_hex());
        let mut changed = json.clone();
        let at = changed.iter().position(|b| *b == b'v').unwrap();
        changed[at] = b'V';
        let e = verify(&public, &changed, &sig, "report.json").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signature);
        assert!(e.to_string().contains("report.json") && e.hint.is_some(), "{e}");
    }

    #[test]
    fn report_key_files_for_the_install_keep_the_sites_key_and_make_one_for_a_new_site() {
        let host = RecordingHost::new(false).unwrap();
        let (secret, public) = key_files(&host).unwrap();
        let made = SecretKey::parse(&String::from_utf8(secret.clone()).unwrap(), None).unwrap();
        assert_eq!(PublicKey::parse(&String::from_utf8(public).unwrap()).unwrap().key_id(), made.key_id());
        host.write_file(Path::new(REPORT_KEY_PATH), &mut secret.as_slice(), Perms::secret()).unwrap();
        let (again, _) = key_files(&host).unwrap();
        assert_eq!(again, secret, "a resumed run or an upgrade writes the same key");
        assert_eq!(site_key(&host).unwrap().key_id(), made.key_id());
    }

    #[test]
    fn report_page_escapes_what_it_shows_so_nothing_in_a_record_becomes_markup() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let mut r = readiness(&host, &opts()).unwrap();
        r.overrides.push(Override {
            check: "disk<img src=x>".into(),
            detail: "<script>fetch('https://example.test')</script> & \"more\"".into(),
            run: "r1".into(),
        });
        let html = to_html(&r);
        assert!(!html.contains("<script") && !html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;fetch(&#39;https://example.test&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(html.contains("disk&lt;img src=x&gt;"));
    }
}
