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

pub(crate) mod evidence;

use evidence::InstalledChart;
pub use evidence::{LivePolicy, RenderedPolicies};

use crate::engine::Outcome;
use crate::host::{Host, Perms};
use crate::live::EndpointChecks;
use crate::ops::status::{self, Component, Drift, Live, StatusReport};
use crate::ops::upgrade::{UpgradeHistory, UpgradeHistoryEntry, UpgradeJournal};
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

/// One upgrade, from the site's upgrade history (or, for the one still running, or
/// one made by an airlock that kept no history, its journal).
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
    /// Every upgrade of the site, oldest first, rolled-back ones included.
    #[serde(default)]
    pub upgrades: Vec<Upgrade>,
    /// The last post-install endpoint checks (install, or an upgrade's health gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_checks: Option<EndpointChecks>,
    /// The NetworkPolicies the installed charts define, chart by chart.
    #[serde(default)]
    pub network_policies: Vec<RenderedPolicies>,
    /// Live only: the NetworkPolicies the cluster has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policies_in_force: Option<Vec<LivePolicy>>,
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
    // The history keeps every finished upgrade; the journal adds the one still running
    // (or the last one, on a site whose airlock kept no history yet).
    let mut history = UpgradeHistory::load(host)?.upgrades;
    if let Some(j) = UpgradeJournal::load(host)? {
        if !history.iter().any(|h| h.started == j.started) {
            history.push(UpgradeHistoryEntry::of(&j));
        }
    }
    let upgrades: Vec<Upgrade> = history
        .iter()
        .map(|u| Upgrade {
            from_version: u.from_version.clone(),
            to_version: u.to_version.clone(),
            started: u.started.clone(),
            finished: u.finished.clone(),
            outcome: outcome_str(u.outcome).to_string(),
            backup: u.backup.clone(),
            error: u.error.clone(),
        })
        .collect();
    let upgrade = upgrades.last().cloned();
    let inventory = match host.read_file(Path::new(state::INVENTORY_PATH))? {
        Some(_) => state::Inventory::load(host).ok(),
        None => None,
    };
    let charts = inventory.as_ref().map(|inv| evidence::installed_charts(host, inv)).unwrap_or_default();
    let network_policies: Vec<RenderedPolicies> = charts.iter().filter_map(InstalledChart::network_policies).collect();
    let in_force = match (&st.live, inventory.as_ref().and_then(|i| i.kube())) {
        (Live::Checked { errors, .. }, Some(k)) if errors.is_empty() => Some(evidence::live_policies(host, &k)),
        _ => None,
    };
    let endpoints = EndpointChecks::load(host)?;
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
    let drill = crate::ops::backup::drill::load_record(host)?;
    let checklist = checklist(&Facts {
        st: &st,
        install: &install,
        certs: &certificates,
        upgrades: &upgrades,
        overrides: &overrides,
        ldap_url: ldap_url.as_deref(),
        ldap_test: ldap_test.as_ref(),
        endpoints: endpoints.as_ref(),
        charts: &charts,
        policies: &network_policies,
        in_force: in_force.as_ref(),
        answers: &kept,
        drill: drill.as_ref(),
        now_unix: opts.now_unix,
    });
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
        upgrades,
        endpoint_checks: endpoints,
        network_policies,
        network_policies_in_force: in_force.and_then(|r| r.ok()),
        next_steps,
    })
}

/// How long a passed drill counts when the site sets no recovery point objective.
const DRILL_VALID_SECS: u64 = 30 * 86_400;

/// The backup line's verdict from the last drill: verified when it passed within the
/// RPO (else 30 days), failed when it failed; the evidence in words.
fn drill_verdict(
    drill: Option<&crate::ops::backup::DrillRecord>,
    rpo_secs: Option<u64>,
    now_unix: i64,
) -> (Verdict, String) {
    let Some(d) = drill else { return (Verdict::NotVerified, "no restore drill recorded".to_string()) };
    let of = format!("restore drill of {} (taken {}) at {}", d.archive, d.backup_created, d.ran);
    if !d.passed {
        return (Verdict::Failed, format!("{of} failed: {}", d.failures().join("; ")));
    }
    let valid = rpo_secs.unwrap_or(DRILL_VALID_SECS);
    let age = crate::ops::backup::unix_of(&d.ran).map(|t| u64::try_from(now_unix).unwrap_or(0).saturating_sub(t));
    let dbs: Vec<String> = d
        .databases
        .iter()
        .map(|x| format!("{} ({} tables, {} rows)", x.part, x.tables.len(), x.tables.iter().map(|t| t.1).sum::<u64>()))
        .collect();
    let checks = if d.checks.is_empty() {
        "no consistency check given".to_string()
    } else {
        format!(
            "consistency checks passed: {}",
            d.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        )
    };
    let passed = format!(
        "{of} passed: {}; {checks}",
        if dbs.is_empty() { "no database dump".to_string() } else { dbs.join(", ") }
    );
    match age {
        Some(a) if a <= valid => (Verdict::Verified, passed),
        _ => (
            Verdict::NotVerified,
            format!(
                "{passed}; older than {} ({}), so no longer counted",
                crate::ops::backup::schedule::human(valid),
                if rpo_secs.is_some() { "the recovery point objective" } else { "30 days without one" }
            ),
        ),
    }
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

/// Everything the checklist is made from.
struct Facts<'a> {
    st: &'a StatusReport,
    install: &'a InstallReport,
    certs: &'a [Certificate],
    /// Oldest first.
    upgrades: &'a [Upgrade],
    overrides: &'a [Override],
    ldap_url: Option<&'a str>,
    ldap_test: Option<&'a LdapTestRecord>,
    endpoints: Option<&'a EndpointChecks>,
    charts: &'a [InstalledChart],
    policies: &'a [RenderedPolicies],
    /// Live: the cluster's NetworkPolicies, or why they could not be listed.
    in_force: Option<&'a std::result::Result<Vec<LivePolicy>, String>>,
    answers: &'a serde_yaml::Value,
    /// The last `airlock restore --drill`.
    drill: Option<&'a crate::ops::backup::DrillRecord>,
    now_unix: i64,
}

impl Facts<'_> {
    /// The last endpoint check of `name`, as a sentence, and whether it passed.
    fn endpoint(&self, name: &str) -> Option<(String, bool)> {
        let e = self.endpoints?;
        let c = e.checks.iter().find(|c| c.name == name)?;
        Some(if c.ok {
            (
                format!(
                    "{name} answered at {} over HTTPS against the site CA only (endpoint checks at {})",
                    c.url, e.ran
                ),
                true,
            )
        } else {
            (
                format!(
                    "{name} did not answer as expected at {} (endpoint checks at {}): {}",
                    c.url,
                    e.ran,
                    c.seen.as_deref().unwrap_or("no answer")
                ),
                false,
            )
        })
    }

    fn chart(&self, name: &str) -> Option<&InstalledChart> {
        self.charts.iter().find(|c| c.name == name)
    }

    /// Live: the chart's helm-controller install job, as `airlock status` has it.
    fn health(&self, name: &str) -> Option<&str> {
        self.st.components.iter().find(|c| c.kind == "chart" && c.name == name).and_then(|c| c.health.as_deref())
    }
}

/// The ten lines of the blueprint's §7.3 checklist, each with its evidence.
fn checklist(f: &Facts) -> Vec<Line> {
    let st = f.st;
    let on_node = "run `airlock report` on the running node (`--root /`), where the cluster is asked";
    let mut out = Vec::new();
    let upgrade = f.upgrades.last();

    // 1. The distribution: installed by a finished run, and running, its endpoints up.
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
    for o in f.overrides {
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
    let mut endpoints_ok = true;
    for name in ["keycloak", "app"] {
        if let Some((said, ok)) = f.endpoint(name) {
            ev.push(said);
            endpoints_ok &= ok;
        }
    }
    if !endpoints_ok {
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
    let to_verify = if verdict == Verdict::Failed {
        "fix what `airlock status` names, then run `airlock report` again on the node"
    } else {
        on_node
    };
    out.push(line("distribution", "K3s/RKE2 installation tested", verdict, ev, Some(to_verify)));

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

    // 3. MinIO: documented by this report when the release has it; its S3 API's last
    //    check, when one ran, shows whether that configuration works.
    let minio_files: Vec<&CredentialFile> =
        f.install.credentials.iter().filter(|c| c.what.to_lowercase().contains("minio")).collect();
    let (verdict, ev) = match f.install.urls.get("minio") {
        Some(url) => {
            let mut ev = vec![format!("MinIO console {url} (install report)")];
            ev.extend(minio_files.iter().map(|c| format!("{}: {} ({})", c.what, c.path.display(), c.mode)));
            let verdict = match f.endpoint("minio") {
                Some((said, ok)) => {
                    ev.push(said);
                    if ok {
                        Verdict::Verified
                    } else {
                        Verdict::Failed
                    }
                }
                None => {
                    ev.push("its S3 API was not checked on this site (the install checks it on the node)".into());
                    Verdict::Verified
                }
            };
            (verdict, ev)
        }
        None => (Verdict::NotVerified, vec!["the installed release has no MinIO".to_string()]),
    };
    out.push(line(
        "minio",
        "MinIO storage configuration documented",
        verdict,
        ev,
        Some(if verdict == Verdict::Failed {
            "look at MinIO's pods (`kubectl -n minio get pods`), then run the install command again: it checks the S3 API"
        } else {
            "install a release with the minio component"
        }),
    ));

    // 4. LDAP: the last `airlock ldap test` on this site, against the directory the
    //    answers configure (a test of another directory is no evidence for this one).
    let mut ev = vec![match f.ldap_url {
        Some(url) => format!("the answers configure the directory {url}"),
        None => "the answers configure no directory".to_string(),
    }];
    let verdict = match f.ldap_test {
        Some(t) => {
            let what = if t.ok { "passed" } else { "failed" };
            ev.push(format!("`airlock ldap test` {what} at {} against {}:", t.ran, t.url));
            ev.extend(t.summary.lines().map(String::from));
            match (Some(t.url.as_str()) == f.ldap_url, t.ok) {
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
    // Keycloak answering is no test of its directory, but says where logins go.
    if let Some((said, _)) = f.endpoint("keycloak") {
        ev.push(said);
    }
    out.push(line(
        "ldap",
        "LDAP/AD integration in Keycloak tested",
        verdict,
        ev,
        Some("run `airlock ldap test --answers <the site's answers>` on the node: its result is kept for this report"),
    ));

    // 5. TLS: the certificates are issued and in date, and each endpoint the install
    //    checked answered over TLS with only the site CA trusted.
    let mut ev: Vec<String> = f
        .certs
        .iter()
        .map(|c| {
            format!(
                "{} certificate ({}): SHA-256 {}, valid until {} ({} days)",
                c.name, c.subject, c.sha256, c.not_after, c.days_left
            )
        })
        .collect();
    let expired: Vec<&Certificate> = f.certs.iter().filter(|c| c.days_left < 0).collect();
    let checks: Vec<&crate::live::EndpointCheck> = f.endpoints.map(|e| e.checks.iter().collect()).unwrap_or_default();
    // A check that failed on the certificate (curl's "SSL certificate problem", a name
    // mismatch) shows TLS broken; one refused or timed out shows nothing about it.
    let tls_broken: Vec<&&crate::live::EndpointCheck> = checks
        .iter()
        .filter(|c| !c.ok && c.seen.as_deref().is_some_and(|s| s.contains("SSL") || s.contains("certificate")))
        .collect();
    let served = !checks.is_empty() && checks.iter().all(|c| c.ok);
    if let Some(e) = f.endpoints {
        for c in &e.checks {
            ev.push(format!(
                "{} {} the site CA's TLS at {} (checked with `curl --cacert {}` at {})",
                c.name,
                if c.ok { "served" } else { "did not answer with" },
                c.url,
                e.ca.display(),
                e.ran
            ));
        }
    }
    let verdict = if !expired.is_empty() || !tls_broken.is_empty() {
        Verdict::Failed
    } else if served && !f.certs.is_empty() {
        Verdict::Verified
    } else {
        Verdict::NotVerified
    };
    if f.certs.is_empty() {
        ev.push("no site PKI on this node".to_string());
    } else if f.endpoints.is_none() {
        ev.push("the served certificates were not checked: no endpoint check ran on this site".to_string());
    }
    out.push(line(
        "tls",
        "Self-signed TLS certificates work",
        verdict,
        ev,
        Some(if !expired.is_empty() {
            "renew the expired certificates: `airlock pki renew`"
        } else if !tls_broken.is_empty() {
            "an ingress serves another certificate than the site CA's: check the TLS Secrets (`airlock pki status`), then run the install command again"
        } else {
            "install on the node (`--root /`): the install checks each endpoint against the site CA; or open each URL in a browser that trusts the site CA"
        }),
    ));

    // 6. Backup and restore: the last `airlock backup create`, the upgrade's backup,
    // and the last restore drill, which alone makes the line verified.
    let mut ev = crate::ops::backup::schedule::evidence(st);
    if let Some((u, dir)) = upgrade.and_then(|u| u.backup.as_ref().map(|b| (u, b))) {
        ev.push(format!("backup before the upgrade to {} at {}: {}", u.to_version, u.started, dir.display()));
    }
    if ev.is_empty() {
        ev.push("no backup recorded".to_string());
    }
    let rpo = st.backup.as_ref().and_then(|b| b.rpo_secs);
    let (verdict, drill_ev) = drill_verdict(f.drill, rpo, f.now_unix);
    ev.push(drill_ev);
    out.push(line(
        "backup",
        "Backup/restore process documented and tested",
        verdict,
        ev,
        Some(match verdict {
            Verdict::Failed => "fix what the drill names, take a new backup and drill it: `airlock restore --drill FILE --identity KEYFILE`",
            _ => "drill the newest backup on the site: `airlock restore --drill FILE --identity KEYFILE` (restores each database into a temporary copy, checks it, drops it)",
        }),
    ));

    // 7. Database per tenant: the answers and the app's generated values say which
    //    database layout was installed; the application's flag itself is not Airlock's.
    let mut ev = Vec::new();
    let tenant_answer = evidence::lookup(f.answers, "app.database_per_tenant")
        .or_else(|| evidence::lookup(f.answers, "app.db_per_tenant"));
    ev.push(match tenant_answer {
        Some(v) => format!(
            "the answers set the per-tenant database flag: {}",
            serde_yaml::to_string(v).unwrap_or_default().trim()
        ),
        None => "the answers set no per-tenant database mode (Airlock's answers have no such setting)".to_string(),
    });
    match f.chart(crate::render::platform::wiring::APP_CHART) {
        Some(app) => {
            let s = |k: &str| evidence::lookup(&app.values, k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            ev.push(format!(
                "the app's values ({}) give it one PostgreSQL database, `{}` (user `{}`), which every tenant shares",
                app.manifest.display(),
                s("database.name"),
                s("database.user")
            ));
        }
        None => ev.push("the installed release has no application chart".to_string()),
    }
    out.push(line(
        "tenants",
        "DB-per-tenant mode tested (feature flag)",
        Verdict::NotVerified,
        ev,
        Some("switch on the application's per-tenant database flag on a test site and test two tenants; Airlock installs the single-database layout"),
    ));

    // 8. Offline update: documented in docs/day2.md; an upgrade that ran shows it works.
    //    Every upgrade is evidence; the last one decides.
    let (verdict, ev) = match upgrade {
        Some(last) => {
            let mut ev: Vec<String> = f
                .upgrades
                .iter()
                .map(|u| {
                    let mut what = format!(
                        "upgrade {} → {}: {} (started {}{})",
                        u.from_version,
                        u.to_version,
                        u.outcome,
                        u.started,
                        u.finished.as_ref().map(|f| format!(", finished {f}")).unwrap_or_default()
                    );
                    if let Some(e) = &u.error {
                        what.push_str(&format!("; why: {e}"));
                    }
                    what
                })
                .collect();
            ev.insert(0, format!("{} upgrade(s) recorded; the last decides this line", f.upgrades.len()));
            let verdict = match last.outcome.as_str() {
                "succeeded" => Verdict::Verified,
                "rollback-failed" | "running" => Verdict::Failed,
                _ => Verdict::NotVerified,
            };
            (verdict, ev)
        }
        None => (Verdict::NotVerified, vec!["documented (docs/day2.md, upgrade); no upgrade has run here".to_string()]),
    };
    out.push(line(
        "offline-update",
        "Offline update process documented",
        verdict,
        ev,
        Some(match upgrade.map(|u| u.outcome.as_str()) {
            Some("rolled-back") => {
                "fix what rolled the last upgrade back (its error is in /var/lib/airlock/upgrade.json), then upgrade again"
            }
            Some("running") => "finish the upgrade: `airlock status` names its resume command",
            Some("rollback-failed") => "restore from the upgrade's backup (docs/day2.md), then upgrade again",
            _ => "upgrade with a newer bundle (`airlock upgrade`), or a test node first",
        }),
    ));

    // 9. Monitoring: the component installed with Grafana's outbound features off, and,
    //    on the node, running and answering through the ingress.
    use crate::render::platform::wiring::{GRAFANA_CHART, PROMETHEUS_CHART};
    let mut ev = Vec::new();
    let verdict = match (f.chart(PROMETHEUS_CHART), f.chart(GRAFANA_CHART)) {
        (Some(prom), Some(graf)) => {
            ev.push(format!(
                "charts {} {} and {} {} in namespace {}, images from the bundle",
                prom.name, prom.version, graf.name, graf.version, graf.namespace
            ));
            let offline = evidence::grafana_offline(&graf.values);
            let online: Vec<&str> = offline.iter().filter(|(_, off)| !off).map(|(k, _)| *k).collect();
            if online.is_empty() {
                ev.push(format!(
                    "Grafana's values ({}) turn off every outbound feature: {}",
                    graf.manifest.display(),
                    offline.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ));
            } else {
                ev.push(format!("Grafana's values leave outbound features on: {}", online.join(", ")));
            }
            let mut healthy = true;
            let mut asked = false;
            for c in [PROMETHEUS_CHART, GRAFANA_CHART] {
                if let Some(h) = f.health(c) {
                    asked = true;
                    ev.push(format!("chart {c}: {h}"));
                    healthy &= h == "installed";
                }
            }
            let answered = f.endpoint("grafana");
            if let Some((said, _)) = &answered {
                ev.push(said.clone());
            }
            // Live: Prometheus's and Grafana's own health, through the API server.
            let component = st.components.iter().find(|c| c.kind == "component" && c.name == "monitoring");
            let ready = component.and_then(|c| c.health.as_deref()).map(|h| h.starts_with("ready"));
            if let Some(h) = component.and_then(|c| c.health.as_deref()) {
                ev.push(format!("monitoring (airlock status): {h}"));
            }
            if !online.is_empty() || !healthy || answered.as_ref().is_some_and(|(_, ok)| !ok) || ready == Some(false) {
                Verdict::Failed
            } else if asked && (answered.is_some_and(|(_, ok)| ok) || ready == Some(true)) {
                Verdict::Verified
            } else {
                if !asked {
                    ev.push("the cluster was not asked whether it runs".into());
                }
                Verdict::NotVerified
            }
        }
        _ => {
            ev.push("the installed release has no monitoring component (prometheus and grafana charts)".into());
            Verdict::NotVerified
        }
    };
    out.push(line(
        "monitoring",
        "Monitoring dashboard works without internet",
        verdict,
        ev,
        Some(if verdict == Verdict::Failed {
            "look at the monitoring pods (`kubectl -n monitoring get pods`) and `airlock status`, then run the install command again"
        } else if f.chart(GRAFANA_CHART).is_none() {
            "install a release whose profile has the monitoring component"
        } else {
            "run the install on the node (`--root /`): it checks Grafana through the ingress; then `airlock report` there"
        }),
    ));

    // 10. Network policies: what the charts define, and on the node what is in force.
    let mut ev = Vec::new();
    for p in f.policies {
        let switch = match &p.enabled_by {
            Some(k) => format!(" ({k}: {})", p.enabled),
            None => String::new(),
        };
        ev.push(format!(
            "chart {} defines NetworkPolicies for namespace {}{switch}: {} ({})",
            p.chart,
            p.namespace,
            p.names.join(", "),
            p.manifest.display()
        ));
    }
    let without: Vec<&str> = f
        .charts
        .iter()
        .filter(|c| !f.policies.iter().any(|p| p.namespace == c.namespace))
        .map(|c| c.namespace.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !without.is_empty() {
        ev.push(format!("no chart defines NetworkPolicies for namespace(s) {}", without.join(", ")));
    }
    let enabled: Vec<&RenderedPolicies> = f.policies.iter().filter(|p| p.enabled).collect();
    let verdict = match f.in_force {
        _ if enabled.is_empty() => {
            ev.push("no installed chart switches on a NetworkPolicy".into());
            Verdict::NotVerified
        }
        Some(Ok(live)) => {
            let mut missing = Vec::new();
            for p in &enabled {
                let here: Vec<&LivePolicy> = live.iter().filter(|l| l.namespace == p.namespace).collect();
                for n in &p.names {
                    if !here.iter().any(|l| l.name == *n || l.name.ends_with(&format!("-{n}"))) {
                        missing.push(format!("{}/{n}", p.namespace));
                    }
                }
                let deny = here.iter().find(|l| l.default_deny);
                ev.push(format!(
                    "in force in namespace {}: {} NetworkPolicies{}",
                    p.namespace,
                    here.len(),
                    match deny {
                        Some(d) => format!(", {} denies all traffic not allowed by another", d.name),
                        None => ", none denies by default".into(),
                    }
                ));
                if deny.is_none() {
                    missing.push(format!("{}: a default deny", p.namespace));
                }
            }
            if missing.is_empty() {
                Verdict::Verified
            } else {
                ev.push(format!("not in force: {}", missing.join(", ")));
                Verdict::Failed
            }
        }
        Some(Err(why)) => {
            ev.push(format!("the cluster's NetworkPolicies could not be listed: {why}"));
            Verdict::NotVerified
        }
        None => {
            ev.push("defined, not checked in force: the cluster was not asked".into());
            Verdict::NotVerified
        }
    };
    out.push(line(
        "network-policies",
        "Network policies in force (no unwanted egress)",
        verdict,
        ev,
        Some(if verdict == Verdict::Failed {
            "the cluster lacks policies the charts define: `kubectl get networkpolicies -A`, and check the CNI enforces them"
        } else {
            "run `airlock report` on the node (`--root /`): it lists the policies in force; from an app pod, an address outside the cluster must not answer"
        }),
    ));
    out
}

impl Readiness {
    /// Whether a checklist line's evidence shows it is not so: `airlock report` then
    /// exits as `airlock status` does for a node that needs attention.
    pub fn has_failed(&self) -> bool {
        self.checklist.iter().any(|l| l.status == Verdict::Failed)
    }

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

/// `<table>` and its header row: the tables of the page share one shape.
fn table_start(headers: &[&str]) -> String {
    let cells: String = headers.iter().map(|t| format!("<th>{}</th>", esc(t))).collect();
    format!("<table>\n<tr>{cells}</tr>\n")
}

/// One table row of cells that are HTML already (escaped with [`esc`] or [`code`]).
fn row(cells: &[String]) -> String {
    let cells: String = cells.iter().map(|c| format!("<td>{c}</td>")).collect();
    format!("<tr>{cells}</tr>\n")
}

/// `text`, escaped, as `<code>`.
fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
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
        h.push_str("<h2>Node and components</h2>\n");
        h.push_str(&table_start(&["Name", "What", "Version or role", "Health"]));
        if let Some(n) = &r.node {
            let health = n.cluster_nodes.get(&n.name).map(String::as_str).unwrap_or("not asked");
            h.push_str(&row(&[esc(&n.name), "this node".into(), esc(&n.role), esc(health)]));
            for (other, ready) in n.cluster_nodes.iter().filter(|(o, _)| **o != n.name) {
                h.push_str(&row(&[esc(other), "node".into(), String::new(), esc(ready)]));
            }
        }
        for c in &r.components {
            let health = esc(c.health.as_deref().unwrap_or("not asked"));
            h.push_str(&row(&[esc(&c.name), esc(&c.kind), esc(&c.version), health]));
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
        h.push_str("<h2>Credentials</h2>\n<p>Where each is kept on the node (root only); their values are not in this report.</p>\n");
        h.push_str(&table_start(&["What", "File", "Mode"]));
        for c in &r.credential_files {
            h.push_str(&row(&[esc(&c.what), code(&c.path.display().to_string()), esc(&c.mode)]));
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
        h.push_str("<h2>Certificates</h2>\n");
        h.push_str(&table_start(&["Name", "Subject", "Valid until", "SHA-256"]));
        for c in &r.certificates {
            h.push_str(&row(&[
                esc(&c.name),
                esc(&c.subject),
                format!("{} ({} days)", esc(&c.not_after), c.days_left),
                format!("<code class=\"fp\">{}</code>", esc(&c.sha256)),
            ]));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Preflight overrides</h2>\n");
    if r.overrides.is_empty() {
        h.push_str("<p>None: every preflight check the install ran passed or warned.</p>\n");
    } else {
        h.push_str(&table_start(&["Check", "What was accepted", "Run"]));
        for o in &r.overrides {
            h.push_str(&row(&[esc(&o.check), esc(&o.detail), esc(&o.run)]));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Drift since the install</h2>\n");
    if r.drift.is_empty() {
        h.push_str("<p>None: every installed file is as the install left it.</p>\n");
    } else {
        h.push_str(&table_start(&["Path", "Problem"]));
        for d in &r.drift {
            h.push_str(&row(&[code(&d.path.display().to_string()), esc(&d.problem)]));
        }
        h.push_str("</table>\n");
    }
    if !r.upgrades.is_empty() {
        h.push_str("<h2>Upgrades</h2>\n<table>\n<tr><th>From</th><th>To</th><th>Outcome</th><th>Started</th><th>Finished</th><th>Backup</th></tr>\n");
        for u in &r.upgrades {
            let class = match u.outcome.as_str() {
                "succeeded" => "ok",
                "rolled-back" => "open",
                _ => "bad",
            };
            h.push_str(&format!(
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td class=\"status\">{}{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
                esc(&u.from_version),
                esc(&u.to_version),
                esc(&u.outcome),
                u.error.as_ref().map(|e| format!("<br>{}", esc(e))).unwrap_or_default(),
                esc(&u.started),
                esc(u.finished.as_deref().unwrap_or("")),
                esc(&u.backup.as_ref().map(|b| b.display().to_string()).unwrap_or_default())
            ));
        }
        h.push_str("</table>\n");
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

    fn drill_record(passed: bool, ran: &str) -> crate::ops::backup::DrillRecord {
        crate::ops::backup::DrillRecord {
            ran: ran.into(),
            archive: "node-1-20261207T180000Z.airlock-backup".into(),
            backup_created: "2026-12-07T18:00:00Z".into(),
            passed,
            databases: vec![crate::ops::backup::drill::DrillDatabase {
                part: "databases/app.dump".into(),
                ok: passed,
                error: (!passed).then(|| "pg_restore failed: bad dump".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn restore_drill_passed_within_the_rpo_verifies_the_backup_line_and_a_failed_one_fails_it() {
        let now = crate::ops::backup::unix_of("2026-12-08T00:00:00Z").unwrap() as i64;
        let (v, ev) = drill_verdict(Some(&drill_record(true, "2026-12-07T20:00:00Z")), Some(86_400), now);
        assert_eq!(v, Verdict::Verified, "{ev}");
        assert!(ev.contains("passed") && ev.contains("databases/app.dump"), "{ev}");
        let (v, ev) = drill_verdict(Some(&drill_record(true, "2026-12-05T20:00:00Z")), Some(86_400), now);
        assert_eq!(v, Verdict::NotVerified, "older than the RPO: {ev}");
        let (v, _) = drill_verdict(Some(&drill_record(true, "2026-11-20T00:00:00Z")), None, now);
        assert_eq!(v, Verdict::Verified, "within 30 days without an RPO");
        let (v, _) = drill_verdict(Some(&drill_record(true, "2026-10-20T00:00:00Z")), None, now);
        assert_eq!(v, Verdict::NotVerified, "older than 30 days without an RPO");
        let (v, ev) = drill_verdict(Some(&drill_record(false, "2026-12-07T20:00:00Z")), Some(86_400), now);
        assert_eq!(v, Verdict::Failed);
        assert!(ev.contains("databases/app.dump: pg_restore failed"), "{ev}");
        assert_eq!(drill_verdict(None, None, now).0, Verdict::NotVerified);
    }
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

    /// A chart archive as the bundler ships it inline: `<chart>/...` files, gzipped tar.
    fn chart_tgz(chart: &str, files: &[(&str, &str)]) -> String {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("{chart}/{name}"), text.as_bytes()).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
    }

    fn helm_chart(name: &str, ns: &str, values: &str, content: Option<String>) -> String {
        let values: String = values.lines().map(|l| format!("    {l}\n")).collect();
        let content = content.map(|c| format!("  chartContent: {c}\n")).unwrap_or_default();
        format!(
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n  namespace: kube-system\n\
             spec:\n{content}  version: 1.0.0\n  targetNamespace: {ns}\n  valuesContent: |\n{values}"
        )
    }

    const GRAFANA_VALUES: &str = "grafana.ini:\n  analytics:\n    reporting_enabled: false\n    check_for_updates: false\n    check_for_plugin_updates: false\n  news:\n    news_feed_enabled: false\n  security:\n    disable_gravatar: true\n  plugins:\n    plugin_admin_enabled: false\n  snapshots:\n    external_enabled: false\n";

    /// A live node with the platform: the app (its real NetworkPolicy template and
    /// defaults inline), prometheus and grafana, and the install's endpoint checks.
    fn live_platform(endpoints_ok: bool, policies: &str) -> RecordingHost {
        let host = RecordingHost::new(true).unwrap();
        let app = chart_tgz(
            "airlock-app",
            &[
                ("values.yaml", include_str!("../../../../assets/charts/airlock-app/values.yaml")),
                (
                    "templates/networkpolicy.yaml",
                    include_str!("../../../../assets/charts/airlock-app/templates/networkpolicy.yaml"),
                ),
            ],
        );
        let dir = "/var/lib/rancher/k3s/server/manifests";
        let mut layout = Layout::default();
        layout.file("/etc/systemd/system/k3s.service", 0o644, b"[Unit]\n".to_vec());
        let app_values = "database:\n  name: app\n  user: app\n";
        layout.file(
            format!("{dir}/airlock-airlock-app.yaml"),
            0o600,
            helm_chart("airlock-app", "app", app_values, Some(app)).into_bytes(),
        );
        layout.file(
            format!("{dir}/airlock-prometheus.yaml"),
            0o600,
            helm_chart("prometheus", "monitoring", "{}", None).into_bytes(),
        );
        layout.file(
            format!("{dir}/airlock-grafana.yaml"),
            0o600,
            helm_chart("grafana", "monitoring", GRAFANA_VALUES, None).into_bytes(),
        );
        let key = InventoryKey::load_or_generate(&host).unwrap();
        let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
        for f in &layout.files {
            let FileSource::Inline(b) = &f.source else { unreachable!() };
            host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        let release = br#"{"bundle":"demo","version":"1.0.0","created":"x","manifest_sha256":"ab","signer":"cd","profile":"single-node","distribution":"k3s v1.31.4+k3s1"}"#;
        host.write_file(Path::new(state::RELEASE_PATH), &mut release.as_slice(), Perms::mode(0o644)).unwrap();
        let checks = serde_json::json!({
            "ran": "2027-01-15T07:00:00Z", "ca": "/etc/airlock/pki/ca.crt",
            "checks": [
                {"name": "keycloak", "url": "https://keycloak.example.test/realms/airlock/.well-known/openid-configuration", "ok": true},
                {"name": "grafana", "url": "https://grafana.example.test/api/health", "ok": endpoints_ok,
                 "seen": if endpoints_ok { None } else { Some("curl: (7) Failed to connect") }}
            ]
        });
        host.write_file(
            Path::new(crate::live::ENDPOINT_CHECKS_PATH),
            &mut serde_json::to_vec(&checks).unwrap().as_slice(),
            Perms::mode(0o644),
        )
        .unwrap();

        let k = ["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--request-timeout=15s"];
        let with = |args: &[&'static str]| k.iter().copied().chain(args.iter().copied()).collect::<Vec<&str>>();
        host.expect_command(&["systemctl", "is-active", "k3s.service"], CommandOutput::ok("active\n"));
        let nodes =
            r#"{"items":[{"metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
        host.expect_command(&with(&["get", "nodes"]), CommandOutput::ok(nodes));
        host.expect_command(&with(&["-n", "kube-system", "get"]), CommandOutput::ok("1/"));
        host.expect_command(&with(&["get", "networkpolicies", "-A", "-o", "json"]), CommandOutput::ok(policies));
        // Prometheus's and Grafana's own health, through the API server's proxy.
        host.expect_command(&with(&["get", "--raw"]), CommandOutput::ok("ok\n"));
        host
    }

    /// The policies the app chart defines, as a cluster lists them (release `airlock-app`).
    fn app_policies(default_deny: bool) -> String {
        let names = [
            "allow-dns",
            "allow-ingress-controller",
            "api-egress",
            "worker-egress",
            "postgresql-ingress",
            "backup-egress",
            "allow-metrics",
        ];
        let mut items: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                serde_json::json!({"metadata": {"namespace": "app", "name": format!("airlock-app-{n}")},
                "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Egress"], "egress": [{}]}})
            })
            .collect();
        if default_deny {
            items.push(serde_json::json!({"metadata": {"namespace": "app", "name": "airlock-app-default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}));
        }
        serde_json::json!({ "items": items }).to_string()
    }

    fn status_of<'a>(r: &'a Readiness, id: &str) -> &'a Line {
        r.checklist.iter().find(|l| l.id == id).unwrap()
    }

    #[test]
    fn report_on_a_live_platform_verifies_monitoring_tls_and_network_policies_from_their_evidence() {
        let r = readiness(&live_platform(true, &app_policies(true)), &opts()).unwrap();
        for id in ["distribution", "monitoring", "network-policies"] {
            assert_eq!(status_of(&r, id).status, Verdict::Verified, "{:#?}", status_of(&r, id));
        }
        let np = status_of(&r, "network-policies");
        assert!(np.evidence.iter().any(|e| e.contains("airlock-app-default-deny denies all traffic")), "{np:?}");
        assert_eq!(r.network_policies[0].names.len(), 8, "{:?}", r.network_policies);
        assert!(r.network_policies[0].enabled && r.network_policies_in_force.as_ref().unwrap().len() == 8);
        let mon = status_of(&r, "monitoring");
        assert!(mon.evidence.iter().any(|e| e == "chart grafana: installed"), "{mon:?}");
        assert!(mon
            .evidence
            .iter()
            .any(|e| e == "monitoring (airlock status): ready (Prometheus and Grafana answered)"));
        assert!(mon
            .evidence
            .iter()
            .any(|e| e.starts_with("grafana answered at https://grafana.example.test/api/health")));
        // No PKI in this fixture: the endpoints answered, but no certificate is on record.
        assert_eq!(status_of(&r, "tls").status, Verdict::NotVerified);
        let tenants = status_of(&r, "tenants");
        assert!(tenants.evidence.iter().any(|e| e.contains("one PostgreSQL database, `app`")), "{tenants:?}");
        assert!(!r.has_failed());

        // Grafana down and no default deny in force: both lines fail, with what to do.
        let r = readiness(&live_platform(false, &app_policies(false)), &opts()).unwrap();
        assert_eq!(status_of(&r, "monitoring").status, Verdict::Failed);
        let np = status_of(&r, "network-policies");
        assert_eq!(np.status, Verdict::Failed, "{np:?}");
        assert!(
            np.evidence.iter().any(|e| e.contains("not in force: app/default-deny, app: a default deny")),
            "{np:?}"
        );
        assert!(r.has_failed());
        for l in r.checklist.iter().filter(|l| l.status != Verdict::Verified) {
            assert!(r.next_steps.iter().any(|s| s.starts_with(&l.item)), "no next step for {}", l.id);
        }
    }

    #[test]
    fn report_keeps_every_upgrade_of_the_history_with_its_rollback() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let entry = |from: &str, to: &str, outcome: &str, started: &str| {
            serde_json::json!({"from_version": from, "to_version": to, "started": started,
                "finished": started, "outcome": outcome, "backup": format!("/var/lib/airlock/backup/{to}")})
        };
        let history = serde_json::json!({"upgrades": [
            entry("1.0.0", "1.1.0", "succeeded", "2027-01-01T00:00:00Z"),
            entry("1.1.0", "1.2.0", "rolled-back", "2027-01-05T00:00:00Z"),
        ]});
        host.write_file(
            Path::new(crate::ops::upgrade::UPGRADE_HISTORY_PATH),
            &mut serde_json::to_vec(&history).unwrap().as_slice(),
            Perms::mode(0o644),
        )
        .unwrap();
        let r = readiness(&host, &opts()).unwrap();
        assert_eq!(r.upgrades.len(), 2);
        assert_eq!(r.last_upgrade.as_ref().unwrap().outcome, "rolled-back");
        let l = status_of(&r, "offline-update");
        assert_eq!(l.status, Verdict::NotVerified, "the last upgrade decides: {l:?}");
        assert!(l.evidence.iter().any(|e| e.starts_with("upgrade 1.0.0 → 1.1.0: succeeded")), "{l:?}");
        assert!(l.evidence.iter().any(|e| e.starts_with("upgrade 1.1.0 → 1.2.0: rolled-back")), "{l:?}");
        assert!(l.to_verify.as_deref().unwrap().contains("rolled the last upgrade back"));
        let html = to_html(&r);
        assert!(html.contains("<h2>Upgrades</h2>") && html.contains("1.2.0") && html.contains("1.1.0"));
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
