//! `airlock status`: what is installed on this node and whether it is as installed.
//!
//! Everything comes from what an install leaves on the target — the release record,
//! the inventory, the journal of the last run, the HelmChart manifests and whatever
//! certificates the site PKI holds — so status works the same under `--root` (a golden
//! image, a mounted disk of a dead node) as on the running host. Only on a live host
//! does it also ask the cluster (node Ready, each chart's helm-controller install job),
//! through [`Host::run`], so tests script what K3s/RKE2 would answer.
//!
//! The report is data; [`StatusReport::problems`] decides whether the node is healthy:
//! an interrupted or failed last run, drift from the inventory, an expired certificate
//! or a failing live check. Secret-bearing files are checked like the others, through
//! the digest the inventory keeps keyed with the site key ([`crate::state::inventory`]):
//! their content is hashed, never shown, and a drifted one is named by path only.

use crate::state;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::manifest::rfc3339;
use serde::{Deserialize, Serialize};

use crate::engine::{Journal, Outcome, StepStatus};
use crate::host::Host;

use crate::render::distribution::HELM_CHART_NAMESPACE;
use crate::site::preflight::OverrideRecord;
use crate::state::{FileState, Inventory, InventoryKey, ReleaseRecord, Unverifiable};

/// A certificate this close to its end is a warning (not yet a problem).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// One installed component and its version (and health, when live).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// `distribution`, `chart`, or (live) `component`: one made of several charts,
    /// with its own health (`monitoring`).
    pub kind: String,
    pub version: String,
    /// Charts: the namespace the release goes into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Live only: `installed`, `installing`, `failed …`, or what kubectl said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// One certificate found under [`crate::state::PKI_DIR`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The file (target path) and, for bundles of several, the index in it.
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: i64,
}

/// A file of the PKI directory that could not be read as certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

/// The last run of the engine, from its journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub run_id: String,
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Outcome,
    pub steps_applied: usize,
    pub steps_satisfied: usize,
    pub steps_rolled_back: usize,
    /// The step that failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Preflight failures the operator accepted for that run.
    pub overrides: Vec<OverrideRecord>,
    /// The unfinished run it continued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumes: Option<String>,
}

/// Work the journal says is not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// `interrupted` (the run never finished: crash, kill, power) or `failed`.
    pub state: String,
    /// The last step the run recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<String>,
    /// The command that continues the run, as the run recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_command: Option<String>,
    pub hint: String,
}

/// An installed path that is no longer as the install left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub path: PathBuf,
    /// `missing`, `changed` (content differs) or `replaced` (no longer a file/link).
    pub problem: String,
}

/// An installed file whose content cannot be compared with what was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unchecked {
    pub path: PathBuf,
    pub why: Unverifiable,
}

/// What the running cluster said (live hosts only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Live {
    /// Under `--root` nothing runs, so nothing is asked.
    NotLive { reason: String },
    Checked {
        unit: String,
        /// `systemctl is-active` of the distribution's unit.
        unit_state: String,
        /// Node name → `Ready`, `NotReady`, `Unknown` (servers only).
        nodes: BTreeMap<String, String>,
        /// What could not be asked and why (no API server, no kubeconfig).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
    },
}

/// Everything `airlock status` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub root: PathBuf,
    /// The finished install, if any (an interrupted first install has none yet).
    pub release: Option<ReleaseRecord>,
    pub components: Vec<Component>,
    pub certificates: Vec<Certificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    pub last_run: Option<LastRun>,
    pub pending: Option<Pending>,
    pub drift: Vec<Drift>,
    /// What to do about [`Self::drift`], when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_hint: Option<String>,
    /// Installed files whose content could not be compared (present, so not drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<Unchecked>,
    pub live: Live,
    /// The last backup, its age and the recovery point objective, once the site has a
    /// schedule, a backup or an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::ops::backup::schedule::BackupStatus>,
    /// Why the node is not healthy; empty when it is.
    pub problems: Vec<String>,
    /// Worth knowing, not (yet) a problem: a certificate expiring soon.
    pub warnings: Vec<String>,
    pub healthy: bool,
    /// On the first server of a cluster installed with `nodes:`: every other node as its
    /// journal there says (docs/cluster.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::ops::cluster::NodeJournal>,
}

/// What [`status`] needs besides the host.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// Now, as Unix seconds: certificate days are counted from here.
    pub now_unix: i64,
}

impl StatusOptions {
    pub fn now() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self { now_unix: now as i64 }
    }
}

/// Reads the target's state and, on a live host, asks the cluster. An error only when
/// nothing airlock installed is recorded on the target at all, or a record is damaged.
pub fn status(host: &dyn Host, opts: &StatusOptions) -> Result<StatusReport> {
    // A damaged record is a finding about this node, not a reason to say nothing
    // else about it: it becomes a problem and the rest is still reported.
    let mut problems = Vec::new();
    let release = noted(&mut problems, ReleaseRecord::load(host));
    let journal = noted(&mut problems, Journal::load(host, Path::new(state::STATE_DIR)));
    let inventory = match host.read_file(Path::new(state::INVENTORY_PATH))? {
        Some(_) => noted(&mut problems, Inventory::load(host).map(Some)),
        None => None,
    };
    if problems.is_empty() && release.is_none() && journal.is_none() && inventory.is_none() {
        return Err(Error::input(
            crate::host::shown_path(host.root(), Path::new(state::STATE_DIR)).display().to_string(),
            "no airlock install is recorded here (no release, inventory or journal)",
        )
        .with_hint("install with `airlock install BUNDLE`; under a target root pass the same --root"));
    }

    let mut warnings = Vec::new();

    let mut components = Vec::new();
    if let Some(r) = &release {
        let (name, version) = r.distribution.split_once(' ').unwrap_or((r.distribution.as_str(), ""));
        components.push(Component {
            name: name.to_string(),
            kind: "distribution".into(),
            version: version.to_string(),
            namespace: None,
            health: None,
        });
    }
    let mut unreadable = Vec::new();
    if let Some(inv) = &inventory {
        components.extend(charts(host, inv, &mut unreadable));
    }

    // The site PKI's, and the distribution's own (its server/tls beside the manifests
    // directory the install wrote into).
    let mut cert_dirs = vec![(PathBuf::from(state::PKI_DIR), None)];
    if let Some(inv) = &inventory {
        cert_dirs.extend(distribution_tls_dirs(inv).into_iter().map(|d| (d, Some(inv))));
    }
    let mut certificates = Vec::new();
    for (dir, inv) in &cert_dirs {
        let (found, cert_unreadable) = certificates_in(host, dir, opts.now_unix)?;
        unreadable.extend(cert_unreadable);
        for c in &found {
            let what = match c.index {
                Some(i) => format!("{} (certificate {} in the file, {})", c.path.display(), i + 1, c.subject),
                None => format!("{} ({})", c.path.display(), c.subject),
            };
            let heal = renewal(&c.path, *inv);
            if c.days_left < 0 {
                problems.push(format!("certificate {what} expired on {}; {heal}", c.not_after));
            } else if c.days_left <= EXPIRY_WARNING_DAYS {
                warnings.push(format!("certificate {what} expires in {} days ({}); {heal}", c.days_left, c.not_after));
            }
        }
        certificates.extend(found);
    }
    for u in &unreadable {
        warnings.push(format!("{}: {}", u.path.display(), u.reason));
    }

    let last_run = journal.as_ref().map(last_run);
    let mut pending = journal.as_ref().and_then(pending);
    match noted(&mut problems, crate::ops::upgrade::last_outcome(host)) {
        Some((Outcome::RolledBack, what, error)) => warnings
            .push(format!("the last upgrade ({what}) failed and was rolled back: {}", error.unwrap_or_default())),
        Some((Outcome::RollbackFailed, what, error)) => problems.push(format!(
            "the last upgrade ({what}) failed and its rollback failed too: {} (see {})",
            error.unwrap_or_default(),
            crate::state::UPGRADE_JOURNAL_PATH
        )),
        _ => {}
    }
    // An unfinished upgrade outranks the engine's journal: its resume command (or
    // `--rollback`) is what finishes the node's state.
    if let Some((phase, resume, what)) = noted(&mut problems, crate::ops::upgrade::pending(host)) {
        pending = Some(Pending {
            state: "upgrade-interrupted".into(),
            last_step: Some(format!("upgrade phase {}", phase.as_str())),
            resume_command: Some(resume.clone()),
            hint: format!(
                "the upgrade {what} is unfinished: run `{resume}` to finish it, or the same with --rollback to put \
                 the previous release back"
            ),
        });
    }
    // An unfinished journal while a run holds the site's lock is that run at work,
    // not an interruption: say which run, and not to start another. So is a cluster
    // run between its steps on this node (joining the others: it holds the cluster).
    let working = match crate::state::site_holder(host)? {
        Some(h) => Some(h),
        None => crate::state::cluster_holder(host)?,
    }
    .map(|h| format!("{h:#}"));
    if let Some(run) = &working {
        let p = pending.get_or_insert_with(|| Pending {
            state: String::new(),
            last_step: None,
            resume_command: None,
            hint: String::new(),
        });
        p.state = "running".into();
        p.hint = format!("{run} is working on this site now: let it finish, then run `airlock status` again");
    }
    if let Some(p) = &pending {
        problems.push(match p.state.as_str() {
            "running" => format!("{} is working on this site", working.as_deref().unwrap_or("another airlock run")),
            "upgrade-interrupted" => format!(
                "an upgrade is unfinished ({}); resume: {}",
                p.last_step.as_deref().unwrap_or("?"),
                p.resume_command.as_deref().unwrap_or("?")
            ),
            "interrupted" => format!(
                "the last run ({}) was interrupted{}",
                journal.as_ref().map(|j| j.run_id.as_str()).unwrap_or("?"),
                p.last_step.as_ref().map(|s| format!(" after step {s}")).unwrap_or_default()
            ),
            _ => format!(
                "the last run failed{}",
                p.last_step.as_ref().map(|s| format!(" at step {s}")).unwrap_or_default()
            ),
        });
    }

    if let Some(f) = journal.as_ref().and_then(|j| j.failed_after.as_ref()) {
        let again = journal
            .as_ref()
            .and_then(|j| j.resume_command.as_deref())
            .map(|c| format!("; fix it, then run `{c}`"))
            .unwrap_or_default();
        problems.push(format!("the last run applied every step, but {} failed: {}{again}", f.what, f.error));
    }
    let (drift, unchecked) = match &inventory {
        Some(inv) => drift(host, inv)?,
        None => Default::default(),
    };
    for d in &drift {
        problems.push(format!("{} is {} since the install", d.path.display(), d.problem));
    }
    // The install of the installed release, run again, rewrites exactly what differs
    // (its steps compare content) and takes the kept answers: that is the way back.
    let drift_hint = (!drift.is_empty()).then(|| {
        let bundle = release.as_ref().map_or("the installed release".into(), |r| format!("{} {}", r.bundle, r.version));
        let root =
            if host.root() == Path::new("/") { String::new() } else { format!(" --root {}", host.root().display()) };
        format!(
            "to put these files back as installed, run `airlock install <the {bundle} bundle>{root}` again: it \
             rewrites only what differs; an edit kept on purpose is replaced by the next upgrade too"
        )
    });
    for u in &unchecked {
        warnings.push(format!("{} was not checked for changes: {}", u.path.display(), u.why.reason()));
    }

    let live = match (&inventory, host.live()) {
        (_, false) => Live::NotLive {
            reason: format!("target root {}: nothing runs there, so the cluster was not asked", host.root().display()),
        },
        (None, true) => Live::NotLive { reason: "no inventory: which unit to ask is not known".into() },
        (Some(inv), true) => ask_cluster(host, inv, &mut components),
    };
    if let Live::Checked { unit, unit_state, nodes, errors } = &live {
        if unit_state != "active" {
            problems.push(format!("{unit} is {unit_state}"));
        }
        for (node, ready) in nodes {
            if ready != "Ready" {
                problems.push(format!("node {node} is {ready}"));
            }
        }
        problems.extend(errors.iter().cloned());
        for c in components.iter().filter(|c| c.kind == "chart") {
            if let Some(h) = c.health.as_deref().filter(|h| *h != "installed") {
                problems.push(format!("chart {} is {h}", c.name));
            }
        }
        for c in components.iter().filter(|c| c.kind == "component") {
            if let Some(h) = c.health.as_deref().filter(|h| !h.starts_with("ready")) {
                problems.push(format!("{} is {h}", c.name));
            }
        }
    }

    // A missed or failed backup is a problem: the site can no longer be recovered to
    // within its objective.
    let rpo = crate::site::answers::kept::load_kept(host)
        .ok()
        .flatten()
        .and_then(|a| a.backup.rpo_secs)
        .map(std::time::Duration::from_secs);
    let (backup, backup_problem) = crate::ops::backup::schedule::BackupStatus::read(host, rpo, opts.now_unix)?;
    problems.extend(backup_problem);

    let nodes = crate::ops::cluster::journaled_nodes(host, &mut warnings);
    Ok(StatusReport {
        root: host.root().to_path_buf(),
        backup,
        nodes,
        healthy: problems.is_empty(),
        release,
        components,
        certificates,
        unreadable,
        last_run,
        pending,
        drift,
        drift_hint,
        unchecked,
        live,
        problems,
        warnings,
    })
}

/// The record, or `None` with the damage noted as a problem.
fn noted<T>(problems: &mut Vec<String>, r: Result<Option<T>>) -> Option<T> {
    r.unwrap_or_else(|e| {
        problems.push(e.to_string());
        None
    })
}

fn last_run(j: &Journal) -> LastRun {
    let count = |s: StepStatus| j.steps.iter().filter(|r| r.status == s).count();
    let failed = j.steps.iter().rev().find(|r| r.status == StepStatus::Failed);
    LastRun {
        run_id: j.run_id.clone(),
        started: j.started.clone(),
        finished: j.finished.clone(),
        outcome: j.outcome,
        steps_applied: count(StepStatus::Applied),
        steps_satisfied: count(StepStatus::Satisfied),
        steps_rolled_back: count(StepStatus::RolledBack),
        failed_step: failed.map(|r| r.id.clone()),
        error: failed.and_then(|r| r.error.clone()),
        overrides: j.preflight_overrides.clone(),
        resumes: j.resumes.clone(),
    }
}

/// The unfinished work the journal shows, with the command that continues it.
fn pending(j: &Journal) -> Option<Pending> {
    let state = match j.outcome {
        Outcome::Succeeded => return None,
        Outcome::Running => "interrupted",
        Outcome::RolledBack | Outcome::RollbackFailed => "failed",
    };
    let last_step = match j.outcome {
        Outcome::Running => j.steps.last().map(|r| r.id.clone()),
        _ => j.steps.iter().rev().find(|r| r.status == StepStatus::Failed).map(|r| r.id.clone()),
    };
    let again = match &j.resume_command {
        Some(c) => format!("run `{c}`"),
        None => "run the same `airlock install` command again".to_string(),
    };
    let hint = match j.outcome {
        Outcome::Running => format!(
            "if no install is running now, {again}: it re-checks every step and continues from the first one \
             still pending"
        ),
        Outcome::RollbackFailed => format!(
            "the journal {} lists what is still changed and {} holds the files that run replaced; fix the cause, \
             then {again}",
            Journal::path(Path::new(state::STATE_DIR)).display(),
            j.backup_dir.display()
        ),
        _ => format!("fix the cause the journal records for the failed step, then {again}"),
    };
    Some(Pending { state: state.to_string(), last_step, resume_command: j.resume_command.clone(), hint })
}

/// Every inventory file, link and unit link that is missing or not as installed, and
/// the files whose content cannot be checked (with why).
fn drift(host: &dyn Host, inv: &Inventory) -> Result<(Vec<Drift>, Vec<Unchecked>)> {
    let mut out = Vec::new();
    let mut unchecked = Vec::new();
    // A damaged key is a finding, not a reason to check nothing: its files are unchecked.
    let key = InventoryKey::load(host).ok().flatten();
    for f in &inv.files {
        let problem = match f.state(host, key.as_ref())? {
            FileState::AsPlaced => continue,
            FileState::Missing => "missing",
            FileState::Replaced => "replaced",
            FileState::Changed => "changed",
            FileState::Unverifiable(why) => {
                unchecked.push(Unchecked { path: f.path.clone(), why });
                continue;
            }
        };
        out.push(Drift { path: f.path.clone(), problem: problem.into() });
    }
    for l in &inv.links {
        if inv.link_is_ours(host, l)? {
            continue;
        }
        // A tool link the install skipped (or an operator's tool that took the name
        // since) is the operator's kubectl at work, not drift.
        if let Some(target) = inv.link_targets.get(l) {
            if crate::host::name_on_path(host, l, target)? {
                continue;
            }
        }
        match host.metadata(l)? {
            None => out.push(Drift { path: l.clone(), problem: "missing".into() }),
            Some(_) => out.push(Drift { path: l.clone(), problem: "replaced".into() }),
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((out, unchecked))
}

/// The auto-deploy manifests the install placed: where the distribution reads them.
pub fn manifest_files(inv: &Inventory) -> Vec<PathBuf> {
    inv.files
        .iter()
        .filter(|f| f.path.to_string_lossy().contains("/server/manifests/"))
        .map(|f| f.path.clone())
        .collect()
}

/// The `HelmChart` objects in the installed manifests: name, chart version, namespace.
fn charts(host: &dyn Host, inv: &Inventory, unreadable: &mut Vec<Unreadable>) -> Vec<Component> {
    let mut out = Vec::new();
    for path in manifest_files(inv) {
        let text = match host.read_file(&path) {
            Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(None) => continue, // reported as drift
            Err(e) => {
                unreadable.push(Unreadable { path, reason: e.cause });
                continue;
            }
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = serde_yaml::Value::deserialize(doc) else { continue };
            if v.get("kind").and_then(|k| k.as_str()) != Some("HelmChart") {
                continue;
            }
            let s = |v: Option<&serde_yaml::Value>| v.and_then(|x| x.as_str()).map(str::to_string);
            let spec = v.get("spec");
            out.push(Component {
                name: s(v.get("metadata").and_then(|m| m.get("name"))).unwrap_or_default(),
                kind: "chart".into(),
                version: s(spec.and_then(|x| x.get("version"))).unwrap_or_else(|| "unversioned".into()),
                namespace: s(spec.and_then(|x| x.get("targetNamespace"))),
                health: None,
            });
        }
    }
    out
}

/// The distribution's certificate directories: `server/tls` beside each
/// `server/manifests` directory the install wrote into (under the site's data
/// directory, K3s or RKE2 alike).
fn distribution_tls_dirs(inv: &Inventory) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = manifest_files(inv)
        .iter()
        .filter_map(|p| p.parent().filter(|d| d.ends_with("server/manifests")).and_then(Path::parent))
        .map(|server| server.join("tls"))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The one command that renews a certificate, by where it lives.
fn renewal(path: &Path, distribution: Option<&Inventory>) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let is_ca = file == "ca.crt" || file.ends_with("-ca.crt") || file.ends_with("-ca.pem");
    match distribution {
        None if path == Path::new(state::CA_CERT) => format!(
            "the site CA is not renewed in place: move {} aside and run `airlock install` again (clients must then trust the new ca.crt)",
            state::PKI_DIR
        ),
        None => "renew it with `airlock pki renew` (the customer's IT renews certificates of a customer PKI)".into(),
        Some(inv) if is_ca => format!(
            "a CA of {dist}: renew it with `{dist} certificate rotate-ca` (see {dist}'s documentation on CA rotation)",
            dist = inv.distribution
        ),
        Some(inv) => format!(
            "renew it with `systemctl restart {}`: {} re-issues its expiring certificates each time it starts",
            inv.unit, inv.distribution
        ),
    }
}

/// Every certificate in `*.crt`/`*.pem` files under `dir` (PEM, or one DER
/// certificate). Files with no certificate in them (a PEM private key) are skipped
/// without looking further: their content is nobody's business.
fn certificates_in(host: &dyn Host, dir: &Path, now: i64) -> Result<(Vec<Certificate>, Vec<Unreadable>)> {
    let mut certs = Vec::new();
    let mut bad = Vec::new();
    for path in crate::host::list_files(host, dir)?.files {
        let name = path.to_string_lossy();
        if !(name.ends_with(".crt") || name.ends_with(".pem")) {
            continue;
        }
        // One unreadable file (permissions) must not hide the others' expiry.
        let bytes = match host.read_file(&path) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                bad.push(Unreadable { path: path.clone(), reason: e.cause });
                continue;
            }
        };
        let mut found = 0usize;
        let mut parsed = Vec::new();
        if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
                let pem = match pem {
                    Ok(p) => p,
                    Err(e) => {
                        bad.push(Unreadable { path: path.clone(), reason: format!("not readable as PEM: {e}") });
                        break;
                    }
                };
                if pem.label != "CERTIFICATE" {
                    continue;
                }
                match pem.parse_x509() {
                    Ok(c) => parsed.push(cert_facts(&c)),
                    Err(e) => {
                        bad.push(Unreadable {
                            path: path.clone(),
                            reason: format!("certificate {} is not valid X.509: {e}", found + 1),
                        });
                    }
                }
                found += 1;
            }
        } else {
            match x509_parser::parse_x509_certificate(&bytes) {
                Ok((_, c)) => parsed.push(cert_facts(&c)),
                Err(e) => {
                    bad.push(Unreadable { path: path.clone(), reason: format!("neither PEM nor DER X.509: {e}") })
                }
            }
        }
        let many = parsed.len() > 1;
        for (i, (subject, not_after)) in parsed.into_iter().enumerate() {
            certs.push(Certificate {
                path: path.clone(),
                index: many.then_some(i),
                subject,
                not_after: if not_after >= 0 { rfc3339(not_after as u64) } else { not_after.to_string() },
                days_left: (not_after - now).div_euclid(86_400),
            });
        }
    }
    Ok((certs, bad))
}

fn cert_facts(c: &x509_parser::certificate::X509Certificate<'_>) -> (String, i64) {
    (c.subject().to_string(), c.validity().not_after.timestamp())
}

/// The unit's state, each node's Ready condition and each chart's install job.
fn ask_cluster(host: &dyn Host, inv: &Inventory, components: &mut Vec<Component>) -> Live {
    let mut errors = Vec::new();
    let unit_state = match host.run(&["systemctl", "is-active", &inv.unit]) {
        Ok(o) if !o.stdout.trim().is_empty() => o.stdout.trim().to_string(),
        Ok(o) => format!("unknown ({})", o.stderr.trim()),
        Err(e) => format!("unknown ({})", e.cause),
    };
    let mut nodes = BTreeMap::new();
    if let Some(k) = inv.kube() {
        match k.run(host, &["get", "nodes", "-o", "json"]) {
            Ok(o) if o.success() => match serde_json::from_str::<serde_json::Value>(&o.stdout) {
                Ok(v) => {
                    for item in v["items"].as_array().into_iter().flatten() {
                        let name = item["metadata"]["name"].as_str().unwrap_or("?").to_string();
                        let ready = match crate::host::ready_condition(item) {
                            "True" => "Ready",
                            "False" => "NotReady",
                            _ => "Unknown",
                        };
                        nodes.insert(name, ready.to_string());
                    }
                    if nodes.is_empty() {
                        errors.push("the API server lists no nodes".to_string());
                    }
                }
                Err(e) => errors.push(format!("kubectl get nodes printed no node list: {e}")),
            },
            Ok(o) => errors.push(format!("the API server did not answer (kubectl get nodes: {})", o.stderr.trim())),
            Err(e) => errors.push(format!("kubectl could not run: {}", e.cause)),
        }
        // Without an API server every chart would repeat the same error.
        if errors.is_empty() {
            for c in components.iter_mut().filter(|c| c.kind == "chart") {
                c.health = Some(chart_health(host, &k, &c.name));
            }
            if let Some(m) = monitoring_health(host, &k, components) {
                components.push(m);
            }
        }
    }
    Live::Checked { unit: inv.unit.clone(), unit_state, nodes, errors }
}

/// The monitoring component as a whole, when the release has it: Prometheus's own
/// readiness (`/-/ready`) and Grafana's health (`/api/health`), asked through the API
/// server's service proxy like every other cluster question. `ready` or
/// `not ready: …` naming what did not answer.
fn monitoring_health(host: &dyn Host, k: &crate::host::Kube, components: &[Component]) -> Option<Component> {
    use crate::render::platform::monitoring::{GRAFANA_CHART, PROMETHEUS_CHART};
    let chart = |n: &str| components.iter().find(|c| c.kind == "chart" && c.name == n);
    let prom = chart(PROMETHEUS_CHART)?;
    let ns = prom.namespace.clone().unwrap_or_else(|| "default".into());
    let mut asked = vec![("Prometheus", crate::ops::support::prometheus_proxy_path(&ns, &prom.name, "/-/ready"))];
    if let Some(g) = chart(GRAFANA_CHART) {
        let gns = g.namespace.as_deref().unwrap_or("default");
        // The grafana chart's Service is named after its release, port 80.
        asked.push(("Grafana", format!("/api/v1/namespaces/{gns}/services/{}:80/proxy/api/health", g.name)));
    }
    let mut down = Vec::new();
    for (what, path) in &asked {
        match k.run(host, &["get", "--raw", path]) {
            Ok(o) if o.success() => {}
            Ok(o) => down.push(format!("{what} did not answer ({})", o.stderr.trim())),
            Err(e) => down.push(format!("{what} could not be asked ({})", e.cause)),
        }
    }
    let names: Vec<&str> = asked.iter().map(|(w, _)| *w).collect();
    Some(Component {
        name: "monitoring".into(),
        kind: "component".into(),
        version: prom.version.clone(),
        namespace: Some(ns),
        health: Some(if down.is_empty() {
            format!("ready ({} answered)", names.join(" and "))
        } else {
            format!("not ready: {}", down.join("; "))
        }),
    })
}

/// helm-controller's install job for a chart: `installed`, `installing`, `failed …`.
fn chart_health(host: &dyn Host, k: &crate::host::Kube, chart: &str) -> String {
    let job = format!("job/helm-install-{chart}");
    let jsonpath = "jsonpath={.status.succeeded}/{.status.failed}";
    match k.run(host, &["-n", HELM_CHART_NAMESPACE, "get", &job, "-o", jsonpath]) {
        Ok(o) if o.success() => {
            let (ok, failed) = o.stdout.trim().split_once('/').unwrap_or((o.stdout.trim(), ""));
            if ok.parse::<u32>().unwrap_or(0) > 0 {
                "installed".into()
            } else {
                match failed.parse::<u32>().unwrap_or(0) {
                    0 => "installing".into(),
                    n => format!("failed ({n} attempts; `kubectl -n {HELM_CHART_NAMESPACE} logs {job}` says why)"),
                }
            }
        }
        Ok(o) => format!("unknown (kubectl: {})", o.stderr.trim()),
        Err(e) => format!("unknown ({})", e.cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::Layout;
    use crate::host::{CommandOutput, HostCall, Perms, RecordingHost};

    #[test]
    fn distribution_a_tool_link_the_operators_own_tool_stands_in_for_is_no_drift() {
        let host = RecordingHost::new(false).unwrap();
        let mut layout = Layout::default();
        layout.tool_link("/usr/local/bin/kubectl", "k3s");
        layout.tool_link("/usr/local/bin/crictl", "k3s");
        layout.tool_link("/usr/local/bin/ctr", "k3s");
        let key = InventoryKey::load_or_generate(&host).unwrap();
        let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
        // kubectl: ours; crictl: the site's own file took its place; ctr: never made.
        host.symlink(Path::new("/usr/local/bin/kubectl"), Path::new("k3s")).unwrap();
        host.write_file(Path::new("/usr/local/bin/crictl"), &mut &b"site"[..], Perms::mode(0o755)).unwrap();
        let (found, _) = drift(&host, &inv).unwrap();
        assert_eq!(found.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(), ["/usr/local/bin/ctr"]);
        // With the site's own ctr on PATH, its absence is the official rule at work.
        host.write_file(Path::new("/usr/bin/ctr"), &mut &b"site"[..], Perms::mode(0o755)).unwrap();
        assert!(drift(&host, &inv).unwrap().0.is_empty());
    }

    const CHART: &str = "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: hello\n  \
                         namespace: kube-system\nspec:\n  version: 0.1.0\n  targetNamespace: demo\n";

    /// A node as an install leaves it: inventory, release, one chart manifest.
    fn installed(host: &RecordingHost) -> Inventory {
        let mut layout = Layout::default();
        layout.file("/var/lib/rancher/k3s/server/manifests/airlock-hello.yaml", 0o600, CHART.as_bytes().to_vec());
        layout.file("/etc/systemd/system/k3s.service", 0o644, b"[Unit]\n".to_vec());
        let key = InventoryKey::load_or_generate(host).unwrap();
        let inv = Inventory::of(
            &layout,
            "k3s",
            "k3s.service",
            None,
            vec![PathBuf::from("/var/lib/rancher/k3s")],
            &key,
            &|_| None,
        );
        for f in &layout.files {
            let crate::engine::layout::FileSource::Inline(b) = &f.source else { unreachable!() };
            host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        let release = br#"{"bundle":"demo","version":"1.0.0","created":"x","manifest_sha256":"ab","signer":"cd","profile":"single-node","distribution":"k3s v1.31.4+k3s1"}"#;
        host.write_file(Path::new(state::RELEASE_PATH), &mut release.as_slice(), Perms::mode(0o644)).unwrap();
        inv
    }

    const KUBECTL: &[&str] =
        &["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--request-timeout=15s"];

    fn with(args: &[&str]) -> Vec<&'static str> {
        KUBECTL.iter().copied().chain(args.iter().map(|s| &*Box::leak(s.to_string().into_boxed_str()))).collect()
    }

    #[test]
    fn live_status_asks_the_unit_the_nodes_and_each_charts_install_job() {
        let host = RecordingHost::new(true).unwrap();
        installed(&host);
        host.take_calls();
        host.expect_command(&["systemctl", "is-active", "k3s.service"], CommandOutput::ok("active\n"));
        let nodes =
            r#"{"items":[{"metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
        host.expect_command(&with(&["get", "nodes"]), CommandOutput::ok(nodes));
        host.expect_command(&with(&["-n", "kube-system", "get", "job/helm-install-hello"]), CommandOutput::ok("1/"));
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(r.healthy, "{:?}", r.problems);
        let Live::Checked { unit_state, nodes, .. } = &r.live else { panic!("{:?}", r.live) };
        assert_eq!(unit_state, "active");
        assert_eq!(nodes.get("n1").map(String::as_str), Some("Ready"));
        let hello = r.components.iter().find(|c| c.name == "hello").unwrap();
        assert_eq!((hello.version.as_str(), hello.health.as_deref()), ("0.1.0", Some("installed")));
        assert_eq!(r.components[0].name, "k3s");
        assert_eq!(r.components[0].version, "v1.31.4+k3s1");
        assert!(host.calls().iter().all(|c| !c.changes_host() || matches!(c, HostCall::Run { .. })));
    }

    #[test]
    fn live_status_of_a_site_whose_api_server_is_down_names_it_and_the_failed_chart_is_unhealthy() {
        let host = RecordingHost::new(true).unwrap();
        installed(&host);
        host.expect_command(
            &["systemctl", "is-active"],
            CommandOutput { status: 3, stdout: "failed\n".into(), stderr: String::new() },
        );
        host.expect_command(
            &with(&["get", "nodes"]),
            CommandOutput::exit(1, "The connection to the server 127.0.0.1:6443 was refused"),
        );
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(!r.healthy);
        assert!(r.problems.iter().any(|p| p.contains("k3s.service is failed")), "{:?}", r.problems);
        assert!(r.problems.iter().any(|p| p.contains("connection to the server")), "{:?}", r.problems);
        // No chart job is asked of a dead API server.
        assert!(!host
            .calls()
            .iter()
            .any(|c| matches!(c, HostCall::Run { argv } if argv.iter().any(|a| a.contains("helm-install")))));

        let host = RecordingHost::new(true).unwrap();
        installed(&host);
        host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
        let nodes =
            r#"{"items":[{"metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"False"}]}}]}"#;
        host.expect_command(&with(&["get", "nodes"]), CommandOutput::ok(nodes));
        host.expect_command(&with(&["-n", "kube-system", "get"]), CommandOutput::ok("/4"));
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(r.problems.iter().any(|p| p == "node n1 is NotReady"), "{:?}", r.problems);
        assert!(r.problems.iter().any(|p| p.starts_with("chart hello is failed (4 attempts")), "{:?}", r.problems);
    }

    #[test]
    fn live_status_shows_the_monitoring_component_with_prometheus_and_grafanas_own_health() {
        let monitoring = "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: prometheus\nspec:\n  \
                          version: 29.27.0\n  targetNamespace: monitoring\n---\napiVersion: helm.cattle.io/v1\n\
                          kind: HelmChart\nmetadata:\n  name: grafana\nspec:\n  version: 12.11.1\n  \
                          targetNamespace: monitoring\n";
        let site = |prometheus_ready: bool| {
            let host = RecordingHost::new(true).unwrap();
            let mut layout = Layout::default();
            layout.file(
                "/var/lib/rancher/k3s/server/manifests/airlock-monitoring.yaml",
                0o600,
                monitoring.as_bytes().to_vec(),
            );
            let key = InventoryKey::load_or_generate(&host).unwrap();
            let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
            for f in &layout.files {
                let crate::engine::layout::FileSource::Inline(b) = &f.source else { unreachable!() };
                host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
            }
            host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644))
                .unwrap();
            host.expect_command(&["systemctl", "is-active"], CommandOutput::ok("active\n"));
            let nodes =
                r#"{"items":[{"metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}]}"#;
            host.expect_command(&with(&["get", "nodes"]), CommandOutput::ok(nodes));
            host.expect_command(&with(&["-n", "kube-system", "get"]), CommandOutput::ok("1/"));
            host.expect_command(&with(&["get", "--raw"]), CommandOutput::ok("{\"database\": \"ok\"}"));
            let ready = "/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy/-/ready";
            host.expect_command(
                &with(&["get", "--raw", ready]),
                if prometheus_ready {
                    CommandOutput::ok("Prometheus Server is Ready.\n")
                } else {
                    CommandOutput::exit(
                        1,
                        "Error from server (ServiceUnavailable): the server is currently unable to handle the request",
                    )
                },
            );
            host
        };
        let host = site(true);
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(r.healthy, "{:?}", r.problems);
        let m = r.components.iter().find(|c| c.name == "monitoring").expect("the monitoring component");
        assert_eq!((m.kind.as_str(), m.namespace.as_deref()), ("component", Some("monitoring")));
        assert_eq!(m.health.as_deref(), Some("ready (Prometheus and Grafana answered)"));
        let asked: Vec<String> = host
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                HostCall::Run { argv } if argv.contains(&"--raw".to_string()) => Some(argv.last().unwrap().clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            asked,
            [
                "/api/v1/namespaces/monitoring/services/prometheus-server:80/proxy/-/ready",
                "/api/v1/namespaces/monitoring/services/grafana:80/proxy/api/health"
            ]
        );

        let r = status(&site(false), &StatusOptions::now()).unwrap();
        assert!(!r.healthy);
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("monitoring is not ready: Prometheus did not answer (Error from server")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn under_a_root_nothing_is_run_and_status_says_not_live() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(matches!(&r.live, Live::NotLive { reason } if reason.contains("target root")));
        assert!(r.healthy, "{:?}", r.problems);
        assert!(!host.calls().iter().any(|c| matches!(c, HostCall::Run { .. })));
    }

    #[test]
    fn a_damaged_journal_is_a_problem_and_the_rest_is_still_reported() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        host.write_file(Path::new("/var/lib/airlock/journal.json"), &mut &b"{not json"[..], Perms::mode(0o644))
            .unwrap();
        let r = status(&host, &StatusOptions::now()).unwrap();
        assert!(!r.healthy);
        assert!(r.problems[0].contains("journal.json") && r.problems[0].contains("not a journal"), "{:?}", r.problems);
        assert_eq!(r.release.as_ref().unwrap().bundle, "demo");
        assert!(r.components.iter().any(|c| c.name == "hello"));
    }

    #[test]
    fn a_run_that_rolled_back_is_pending_as_failed_with_its_step_error_and_resume_command() {
        let host = RecordingHost::new(false).unwrap();
        installed(&host);
        let journal = serde_json::json!({
            "version": 1, "run_id": "r2", "started": "2026-11-22T05:00:00Z", "finished": "2026-11-22T05:01:00Z",
            "outcome": "rolled-back", "resumes": null, "backup_dir": "/var/lib/airlock/backup/r2",
            "resume_command": "airlock install /media/b.airlock --answers site.yaml --yes",
            "steps": [
                {"id": "k3s/file/a", "status": "rolled-back", "at": "x"},
                {"id": "k3s/file/b", "status": "failed", "at": "x", "error": "disk full"}
            ]
        });
        let bytes = serde_json::to_vec(&journal).unwrap();
        host.write_file(Path::new("/var/lib/airlock/journal.json"), &mut bytes.as_slice(), Perms::mode(0o644)).unwrap();
        let r = status(&host, &StatusOptions::now()).unwrap();
        let p = r.pending.as_ref().unwrap();
        assert_eq!((p.state.as_str(), p.last_step.as_deref()), ("failed", Some("k3s/file/b")));
        assert!(p.hint.contains("`airlock install /media/b.airlock --answers site.yaml --yes`"), "{}", p.hint);
        let l = r.last_run.as_ref().unwrap();
        assert_eq!((l.steps_rolled_back, l.error.as_deref()), (1, Some("disk full")));
        assert_eq!(r.problems, ["the last run failed at step k3s/file/b"]);
    }

    #[test]
    fn a_root_with_no_install_is_an_error_with_a_hint() {
        let host = RecordingHost::new(false).unwrap();
        let e = status(&host, &StatusOptions::now()).unwrap_err();
        assert!(e.to_string().contains("no airlock install is recorded") && e.hint.is_some(), "{e}");
    }
}
