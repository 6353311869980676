//! `airlock upgrade`: replace the installed release with a newer one, or put the old
//! one back whole.
//!
//! Order is the point: verify and stage the new bundle (a staging directory of its
//! own: the kept release stays untouched), check the version policy, plan with the
//! site's answers, on a server check that the other servers are Ready ([`order`]),
//! run the upgrade preflight and show the diff — `--dry-run` stops
//! there, through the same code. Then, before any change, snapshot the installed
//! release (if the install did not) and take the backup (datastore, app database,
//! configs, PKI, state). Then apply: images, then the distribution, then the charts,
//! and remove what the new release no longer has; keep the new release in the store
//! and flip `current`; then the health gate. When a step or the gate fails, the whole
//! previous release is put back from its snapshot, `current` flips back, the unit
//! restarts and the gate runs for the old release. The datastore is restored from the
//! backup only with `--restore-datastore`; otherwise the exact command is reported.
//!
//! Crash safety: `upgrade.json` in the state directory records the phase reached,
//! written atomically after each. A re-run with the same bundle continues from there
//! (every step is re-checked, so nothing is applied twice); a crash after the gate
//! failed, or `--rollback`, rolls back instead.

pub mod backup;
pub mod order;
pub mod policy;

use crate::state;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::manifest::Manifest;
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::report::{Event, Reporter};
use serde::{Deserialize, Serialize};

use crate::bundle::staging::Staged;
use crate::engine::{apply_locked, ApplyOptions, Outcome, Plan, Step};
use crate::host::{FileKind, Host, Perms};
use crate::live::{bring_up, post_install_checks, Clock, HttpsCheck, LiveTarget, WaitOptions};
use crate::ops::install::{self, Prepared, IMAGE_ARCHIVE_ENTRY};
use crate::site::answers::{kept as answers, Answers};
use crate::site::preflight::{site, Mode, PreflightReport};
use crate::state::releases::{self as release, Snapshot};
use crate::state::Inventory;
use backup::BackupRecord;
use policy::Decision;

/// Exit code: the version policy refused the bundle (docs/exit-codes.md).
pub const EXIT_POLICY: u8 = 12;
/// Exit code: the upgrade failed and the previous release was put back.
pub const EXIT_ROLLED_BACK: u8 = 13;
/// Exit code: the upgrade failed and putting the previous release back failed too.
pub const EXIT_ROLLBACK_FAILED: u8 = 14;

/// Tests: abort right after the journal records this phase (e.g. `backed-up`), or at
/// `rollback-restored` / `rollback-flipped` inside a rollback.
pub const CRASH_AFTER_PHASE_ENV: &str = "AIRLOCK_TEST_UPGRADE_CRASH_AFTER";
/// Releases kept by default (`--keep`).
pub const DEFAULT_KEEP: usize = 3;
const JOURNAL_VERSION: u32 = 1;

/// How far an upgrade got, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Verified, policy checked, planned; nothing changed yet.
    Staged,
    /// The previous release's snapshot and the backup exist.
    BackedUp,
    /// The new release's files are in place and the old ones it dropped are gone.
    Applied,
    /// The new release is kept in the store and `current` points at it.
    Flipped,
    /// The health gate failed: what remains is to roll back.
    GateFailed,
    RollingBack,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Staged => "staged",
            Phase::BackedUp => "backed-up",
            Phase::Applied => "applied",
            Phase::Flipped => "flipped",
            Phase::GateFailed => "gate-failed",
            Phase::RollingBack => "rolling-back",
            Phase::Done => "done",
        }
    }
}

/// `upgrade.json`: one upgrade, phase by phase. No file content and no secrets: ids,
/// versions, paths, the inventory's digests and the commands to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpgradeJournal {
    pub version: u32,
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Outcome,
    pub phase: Phase,
    /// Each phase reached, with when.
    pub phases: Vec<(Phase, String)>,
    pub from: String,
    pub from_version: String,
    pub to: String,
    pub to_version: String,
    pub to_manifest_sha256: String,
    /// What `releases/previous` pointed at before, put back on rollback.
    pub previous_before: Option<String>,
    /// Policy refusals the operator overrode with `--allow-policy-override`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_overridden: Vec<String>,
    pub resume_command: String,
    pub backup: Option<BackupRecord>,
    /// What the new release places: removed again on rollback if the old one had not.
    pub to_inventory: Inventory,
    /// What the gate waits for once the old release is back.
    pub from_live: LiveTarget,
    pub from_checks: Vec<HttpsCheck>,
    pub node_ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The command that restores the datastore, when the operator did not consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_datastore_command: Option<String>,
}

impl UpgradeJournal {
    pub fn load(host: &dyn Host) -> Result<Option<Self>> {
        let Some(bytes) = host.read_file(Path::new(state::UPGRADE_JOURNAL_PATH))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(state::UPGRADE_JOURNAL_PATH, format!("is not an upgrade journal this airlock can read: {e}"))
                .with_hint("look at the file; roll back by hand from the backup it names (docs/day2.md, upgrade)")
        })
    }

    /// Whether this upgrade is unfinished (crashed, killed, or still running).
    pub fn pending(&self) -> bool {
        self.outcome == Outcome::Running
    }

    fn save(&self, host: &dyn Host) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("an upgrade journal serialises");
        json.push(b'\n');
        host.write_file(Path::new(state::UPGRADE_JOURNAL_PATH), &mut json.as_slice(), Perms::mode(0o644))?;
        Ok(())
    }

    /// Records `phase`, saves, and aborts there when a test asked for a crash.
    fn reach(&mut self, host: &dyn Host, phase: Phase) -> Result<()> {
        self.phase = phase;
        self.phases.push((phase, state::now_rfc3339()));
        self.save(host)?;
        crash_point(phase.as_str());
        Ok(())
    }

    fn finish(&mut self, host: &dyn Host, outcome: Outcome) -> Result<()> {
        self.outcome = outcome;
        self.finished = Some(state::now_rfc3339());
        self.phase = Phase::Done;
        self.phases.push((Phase::Done, state::now_rfc3339()));
        self.save(host)?;
        // `upgrade.json` is the next upgrade's to overwrite; the history keeps each one.
        let mut history = UpgradeHistory::load(host)?;
        history.upgrades.push(UpgradeHistoryEntry::of(self));
        history.save(host)
    }
}

/// Where every finished upgrade of the site is kept, oldest first ([`UpgradeHistory`]).
pub const UPGRADE_HISTORY_PATH: &str = "/var/lib/airlock/upgrade-history.json";

/// Every finished upgrade (succeeded, rolled back, or whose rollback failed), for
/// `airlock report`: the upgrade journal holds only the last one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeHistory {
    pub upgrades: Vec<UpgradeHistoryEntry>,
}

/// One finished upgrade, as its journal ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeHistoryEntry {
    pub from_version: String,
    pub to_version: String,
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Outcome,
    /// The backup directory taken first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl UpgradeHistoryEntry {
    pub fn of(j: &UpgradeJournal) -> Self {
        Self {
            from_version: j.from_version.clone(),
            to_version: j.to_version.clone(),
            started: j.started.clone(),
            finished: j.finished.clone(),
            outcome: j.outcome,
            backup: j.backup.as_ref().map(|b| b.dir.clone()),
            error: j.error.clone(),
        }
    }
}

impl UpgradeHistory {
    pub fn load(host: &dyn Host) -> Result<Self> {
        let Some(bytes) = host.read_file(Path::new(UPGRADE_HISTORY_PATH))? else { return Ok(Self::default()) };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(UPGRADE_HISTORY_PATH, format!("is not an upgrade history this airlock can read: {e}"))
                .with_hint("move it aside: the next upgrade starts a new one (upgrade.json keeps the last upgrade)")
        })
    }

    fn save(&self, host: &dyn Host) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("an upgrade history serialises");
        json.push(b'\n');
        host.write_file(Path::new(UPGRADE_HISTORY_PATH), &mut json.as_slice(), Perms::mode(0o644))?;
        Ok(())
    }
}

/// What `airlock upgrade` was asked to do.
#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    /// `--answers`; `None`: the answers the install kept.
    pub answers: Option<Answers>,
    pub dry_run: bool,
    pub allow_policy_override: bool,
    /// Roll back a pending upgrade instead of continuing it.
    pub rollback: bool,
    pub restore_datastore: bool,
    pub keep: usize,
    pub wait: WaitOptions,
    /// Preflight checks overridden by name (`--override`).
    pub preflight_overrides: Vec<String>,
    /// The command that continues this upgrade (no secrets).
    pub resume_command: String,
    /// `--answers`' text and path: kept on the site (secrets apart) once the new
    /// release is applied, as the install keeps its answers.
    pub answers_file: Option<(String, String)>,
}

/// One chart's version change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChartChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What the upgrade changes: shown before anything changes (and by `--dry-run`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpgradeDiff {
    pub from_version: String,
    pub to_version: String,
    pub images_added: Vec<String>,
    pub images_removed: Vec<String>,
    pub charts: Vec<ChartChange>,
    /// `(from, to)` when the distribution's version changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<(String, String)>,
    /// Installed files whose content changes (by path; never content).
    pub files_changed: Vec<PathBuf>,
    pub files_added: Vec<PathBuf>,
    /// Files of the installed release the new one no longer has.
    pub files_removed: Vec<PathBuf>,
}

/// The result of an upgrade that did not fail.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeReport {
    pub outcome: UpgradeOutcome,
    pub from: String,
    pub to: String,
    pub policy: Option<Decision>,
    pub diff: Option<UpgradeDiff>,
    pub preflight: Option<PreflightReport>,
    pub backup: Option<BackupRecord>,
    pub pruned: Vec<String>,
    /// Set when a rollback left the datastore as the new release's: how to restore it.
    pub restore_datastore_command: Option<String>,
    pub journal: PathBuf,
    /// Whether this run continued an interrupted one.
    pub resumed: bool,
}

/// The command that resumes (or finishes rolling back) this upgrade, for the journal
/// and the hint of a failure. The keys given are part of it: without them a site with
/// no key directory could not verify the bundle again.
pub fn resume_command(
    bundle: &Path,
    pubkey: &[PathBuf],
    answers: Option<&Path>,
    root: &Path,
    allow_policy_override: bool,
    overrides: &[String],
) -> String {
    let mut resume = format!("airlock upgrade {}", bundle.display());
    for k in pubkey {
        resume.push_str(&format!(" --pubkey {}", k.display()));
    }
    if let Some(a) = answers {
        resume.push_str(&format!(" --answers {}", a.display()));
    }
    if root != Path::new("/") {
        resume.push_str(&format!(" --root {}", root.display()));
    }
    if allow_policy_override {
        resume.push_str(" --allow-policy-override");
    }
    for o in overrides {
        resume.push_str(&format!(" --override {o}"));
    }
    resume.push_str(" --yes");
    resume
}

/// How an upgrade run ended without an error (a failed one is an [`UpgradeFailure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeOutcome {
    /// The new release is current and passed its gate.
    Upgraded,
    /// The bundle's release is the one installed: nothing to do.
    AlreadyInstalled,
    /// `--dry-run`: the plan and the diff, nothing changed.
    DryRun,
    /// `--rollback`: the unfinished upgrade was undone.
    RolledBack,
    /// A dry run while an unfinished upgrade must be rolled back first.
    WouldRollBack,
}

impl UpgradeOutcome {
    /// Whether the operator is asked to go on after this plan: a dry run that found
    /// something to do.
    pub fn needs_confirming(self) -> bool {
        matches!(self, UpgradeOutcome::DryRun | UpgradeOutcome::WouldRollBack)
    }
}

/// An upgrade that did not happen, with the exit code that says how.
#[derive(Debug)]
pub struct UpgradeFailure {
    pub exit_code: u8,
    /// Boxed: an `Error` is large, and this travels in every `Result` of the upgrade.
    pub error: Box<Error>,
    /// The datastore restore command, when the rollback did not restore it.
    pub restore_datastore_command: Option<String>,
}

impl UpgradeFailure {
    fn plain(error: Error) -> Self {
        Self { exit_code: error.kind.exit_code() as u8, error: Box::new(error), restore_datastore_command: None }
    }
}

impl From<Error> for UpgradeFailure {
    fn from(e: Error) -> Self {
        Self::plain(e)
    }
}

fn not_installed(host: &dyn Host) -> Error {
    Error::input(
        crate::host::shown_path(host.root(), Path::new(crate::state::RELEASE_PATH)).display().to_string(),
        "no installed release is recorded here",
    )
    .with_hint("install the platform with `airlock install` first; upgrade replaces an installed release")
}

/// Runs `airlock upgrade` (see the module docs).
pub fn run(
    bundle: &Path,
    trusted: &[PublicKey],
    host: &dyn Host,
    opts: &UpgradeOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> std::result::Result<UpgradeReport, UpgradeFailure> {
    // A site where nothing was installed is refused before the lock (or anything else)
    // is written; an interrupted upgrade always has its journal, so it gets past this.
    if crate::state::ReleaseRecord::load(host)?.is_none() && UpgradeJournal::load(host)?.is_none() {
        return Err(UpgradeFailure::plain(not_installed(host)));
    }
    // The site's lock before anything is staged or written; a dry run writes nothing,
    // not even the lock, and stages outside the root.
    let lock = if opts.dry_run { None } else { Some(state::lock_site(host)?) };
    let pending = UpgradeJournal::load(host)?.filter(UpgradeJournal::pending);

    if let Some(j) = pending.clone() {
        if opts.rollback || j.phase >= Phase::GateFailed {
            if opts.dry_run {
                // The plan of a rollback is the previous release's snapshot: say so,
                // change nothing.
                return Ok(would_roll_back(&j, true));
            }
            let automatic = !opts.rollback;
            return roll_back(host, j, opts, clock, reporter, None).map(|r| r.into_report(automatic)).and_then(
                |(report, failure)| match failure {
                    Some(f) => Err(f),
                    None => Ok(report),
                },
            );
        }
    } else if opts.rollback {
        // The last upgrade finished: undone whole while it is still the current release
        // and the one before is still kept (a cluster upgrade puts the nodes it already
        // upgraded back this way when a later node fails).
        let Some(mut j) = undoable_last(host)? else {
            return Err(UpgradeFailure::plain(
                Error::input(
                    state::UPGRADE_JOURNAL_PATH,
                    "no upgrade is pending here, and the last one cannot be undone, so there is nothing to roll back",
                )
                .with_hint(
                    "`--rollback` undoes an interrupted or failed upgrade, or the last finished one while its \
                     release is current and the one before is kept; otherwise upgrade to the release you want",
                ),
            ));
        };
        if opts.dry_run {
            return Ok(would_roll_back(&j, false));
        }
        // Pending again before the first change: a crash inside this rollback is
        // finished by the next run, as for a failed upgrade.
        j.outcome = Outcome::Running;
        j.finished = None;
        j.error = None;
        j.save(host)?;
        return roll_back(host, j, opts, clock, reporter, None).map(|r| r.into_report(false)).and_then(
            |(report, failure)| match failure {
                Some(f) => Err(f),
                None => Ok(report),
            },
        );
    }

    let installed = crate::state::ReleaseRecord::load(host)?.ok_or_else(|| not_installed(host))?;
    let files = BundleFiles::locate(bundle)?;
    reporter.event(Event::Phase { name: "verifying the bundle into staging", total: None });
    let staged = stage(host, &files, trusted, &installed.manifest_sha256, opts.dry_run, reporter)?;
    let to_sha = release::manifest_sha256(&staged.manifest);
    if let Some(j) = &pending {
        if j.to_manifest_sha256 != to_sha {
            return Err(UpgradeFailure::plain(
                Error::input(
                    bundle.display().to_string(),
                    format!(
                        "an upgrade from {} to {} is unfinished here (phase {}), and this bundle is another release",
                        j.from_version,
                        j.to_version,
                        j.phase.as_str()
                    ),
                )
                .with_hint(format!("finish it with `{}`, or undo it with --rollback", j.resume_command)),
            ));
        }
    }

    let (from, from_version) = match &pending {
        Some(j) => (j.from.clone(), j.from_version.clone()),
        None => {
            let id = release::pointer(host, "current")?.unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    installed.version,
                    &installed.manifest_sha256[..12.min(installed.manifest_sha256.len())]
                )
            });
            (id, installed.version.clone())
        }
    };
    let to = release::release_id(&staged.manifest);

    let decision = match &pending {
        Some(_) => None,
        None => {
            let d = policy::check(
                &installed.version,
                &installed.manifest_sha256,
                &staged.manifest,
                opts.allow_policy_override,
            )
            .map_err(|e| UpgradeFailure {
                exit_code: EXIT_POLICY,
                error: Box::new(e),
                restore_datastore_command: None,
            })?;
            if d == Decision::AlreadyInstalled {
                let _ = host.remove_all(Path::new(state::UPGRADE_STAGING));
                return Ok(UpgradeReport {
                    outcome: UpgradeOutcome::AlreadyInstalled,
                    from: from.clone(),
                    to,
                    policy: Some(d),
                    diff: None,
                    preflight: None,
                    backup: None,
                    pruned: Vec::new(),
                    restore_datastore_command: None,
                    journal: PathBuf::from(state::UPGRADE_JOURNAL_PATH),
                    resumed: false,
                });
            }
            Some(d)
        }
    };

    let answers = match &opts.answers {
        Some(a) => a.clone(),
        None => answers::load_kept(host)?.ok_or_else(|| {
            Error::input(state::KEPT_ANSWERS_PATH, "the install kept no answers on this site")
                .with_hint("pass the site's answers file with --answers FILE")
        })?,
    };
    let old_manifest = release::kept_manifest(host, &from)?;
    let prepared = install::plan(bundle, staged, &answers, host)?;
    // On a live server of an HA cluster: the other servers must be Ready (see `order`).
    let decision = match decision {
        Some(d) if host.live() => {
            let (d, warning) =
                order::check(order::other_servers(host, &prepared.live), d, opts.allow_policy_override).map_err(
                    |e| UpgradeFailure { exit_code: EXIT_POLICY, error: Box::new(e), restore_datastore_command: None },
                )?;
            if let Some(w) = warning {
                reporter.event(Event::Warning(&w));
            }
            Some(d)
        }
        d => d,
    };
    let old_inventory = Inventory::load(host).ok();
    let diff = diff(old_manifest.as_ref(), &prepared, old_inventory.as_ref(), host, &from_version)?;

    let image_bytes = site::image_bytes(&prepared.staged.manifest);
    let mut input = site::SiteInput::from_answers(&prepared.profile, &answers, image_bytes, &opts.preflight_overrides);
    input.mode = Mode::Upgrade;
    let pre = site::check(host.root(), &input)?;
    if opts.dry_run {
        let _ = host.remove_all(Path::new(state::UPGRADE_STAGING));
        return Ok(UpgradeReport {
            outcome: UpgradeOutcome::DryRun,
            from,
            to,
            policy: decision,
            diff: Some(diff),
            preflight: Some(pre),
            backup: None,
            pruned: Vec::new(),
            restore_datastore_command: None,
            journal: PathBuf::from(state::UPGRADE_JOURNAL_PATH),
            resumed: pending.is_some(),
        });
    }
    if !pre.may_proceed() {
        let failed: Vec<&str> = pre.failed().map(|c| c.id.as_str()).collect();
        return Err(UpgradeFailure {
            exit_code: 8,
            error: Box::new(
                Error::input("preflight (upgrade)", format!("{} failed; nothing was changed", failed.join(", ")))
                    .with_hint(format!(
                        "fix what each check says and run again, or accept a check by name with --override {} \
                         (journaled)",
                        failed.first().copied().unwrap_or("CHECK")
                    )),
            ),
            restore_datastore_command: None,
        });
    }

    let resumed = pending.is_some();
    let mut journal = match pending {
        Some(j) => j,
        None => {
            let old_charts: Option<Vec<String>> =
                old_manifest.as_ref().map(|m| m.charts.iter().map(|c| c.name.clone()).collect());
            let mut from_live = prepared.live.clone();
            if let Some(names) = &old_charts {
                from_live.charts.retain(|c| names.contains(c));
            }
            let checks_manifest = old_manifest.as_ref().unwrap_or(&prepared.staged.manifest);
            let j = UpgradeJournal {
                version: JOURNAL_VERSION,
                started: state::now_rfc3339(),
                finished: None,
                outcome: Outcome::Running,
                phase: Phase::Staged,
                phases: Vec::new(),
                from: from.clone(),
                from_version: from_version.clone(),
                to: to.clone(),
                to_version: prepared.staged.manifest.version.clone(),
                to_manifest_sha256: to_sha.clone(),
                previous_before: release::pointer(host, "previous")?,
                policy_overridden: match &decision {
                    Some(Decision::Overridden { violations }) => violations.clone(),
                    _ => Vec::new(),
                },
                resume_command: opts.resume_command.clone(),
                backup: None,
                to_inventory: prepared.inventory.clone(),
                from_live,
                from_checks: crate::render::platform::wiring::https_checks(&answers, &checks_manifest.charts),
                node_ip: answers.node.ip,
                error: None,
                restore_datastore_command: None,
            };
            let mut j = j;
            j.reach(host, Phase::Staged)?;
            j
        }
    };

    // Before the first change: the snapshot rollback needs (sites installed before the
    // release store have none), then the backup.
    if journal.phase < Phase::BackedUp {
        reporter.event(Event::Phase { name: "backing up (datastore, app database, configs, PKI, state)", total: None });
        if Snapshot::load(host, &from)?.is_none() {
            let inv = Inventory::load(host)?;
            release::take_snapshot(host, &from, &inv)?;
            release::set_pointer(host, "current", &from)?;
        }
        if journal.backup.is_none() {
            let inv = Inventory::load(host)?;
            let app_db = app_database(&prepared);
            let dir = backup::backup_dir(&from_version, &prepared.staged.manifest);
            let app_db_ref = app_db.as_ref().map(|(n, r)| (n.as_str(), r.as_str()));
            journal.backup = Some(backup::take(host, &inv, app_db_ref, &dir)?);
        }
        journal.reach(host, Phase::BackedUp)?;
    }

    let failed = |host: &dyn Host, journal: UpgradeJournal, e: Error| {
        let mut j = journal;
        j.error = Some(e.to_string());
        let _ = j.save(host);
        match roll_back(host, j, opts, clock, reporter, Some(e)) {
            Ok(r) => r.into_failure(),
            Err(f) => f,
        }
    };

    let Prepared { plan, inventory, staged, live, .. } = prepared;
    if journal.phase < Phase::Applied {
        reporter.event(Event::Phase { name: "applying images, then the distribution, then charts", total: None });
        let ordered = match upgrade_order(plan) {
            Ok(p) => p,
            Err(e) => return Err(failed(host, journal, e)),
        };
        let apply_opts = ApplyOptions {
            state_dir: PathBuf::from(state::STATE_DIR),
            resume_command: opts.resume_command.clone(),
            overrides: pre.applied_overrides().cloned().collect(),
        };
        let applied = match &lock {
            Some(lock) => apply_locked(&ordered, host, &apply_opts, lock, &mut |_| {}),
            None => Err(Error::input("upgrade", "a dry run reached the apply step")
                .with_hint("this is a bug in airlock: a dry run only plans")),
        };
        if let Err(e) = applied {
            return Err(failed(host, journal, e));
        }
        // What the installed release had and the new one does not.
        if let Some(old) = Snapshot::load(host, &from)? {
            let state_files = release::state_files();
            // A link goes only while it is still the one the old release made (an
            // operator's kubectl in its place stays).
            let mut still_ours = Vec::new();
            for l in &old.links {
                let is_link = host.metadata(&l.path).ok().flatten().is_some_and(|m| m.kind == FileKind::Symlink);
                if is_link && host.read_link(&l.path).ok().flatten().as_ref() == Some(&l.target) {
                    still_ours.push(&l.path);
                }
            }
            for f in old.files.iter().map(|f| &f.path).chain(still_ours) {
                let ours = inventory.files.iter().any(|n| &n.path == f) || inventory.links.contains(f);
                // Nor a kept vendor key: trust changes only through key statements.
                let kept = f.starts_with(crate::state::SECRETS_DIR) || f.starts_with(crate::state::KEY_DIR);
                if !ours && !state_files.contains(f) && !kept {
                    if let Err(e) = host.remove(f) {
                        return Err(failed(host, journal, e));
                    }
                }
            }
            let mut dirs: Vec<&PathBuf> = old
                .dirs
                .iter()
                .map(|(d, _)| d)
                .filter(|d| !inventory.dirs.contains(d) && !d.starts_with(crate::state::KEY_DIR))
                .collect();
            // Deepest first; a directory that still holds something (not ours) stays.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                if let Err(e) = host.remove_dir(d) {
                    return Err(failed(host, journal, e));
                }
            }
        }
        journal.reach(host, Phase::Applied)?;
    }

    if journal.phase < Phase::Flipped {
        let keep = (|| -> Result<()> {
            if let Some((text, origin)) = &opts.answers_file {
                answers::keep(host, text, origin)?;
            }
            let kept = release::keep_bundle(host, &staged.dir, &staged.manifest)?;
            release::take_snapshot(host, &kept.id, &Inventory::load(host)?)?;
            release::make_current(host, &kept.id)
        })();
        if let Err(e) = keep {
            return Err(failed(host, journal, e));
        }
        journal.reach(host, Phase::Flipped)?;
    }

    reporter.event(Event::Phase { name: "health gate", total: None });
    let to_checks = crate::render::platform::wiring::https_checks(&answers, &staged.manifest.charts);
    let gate_plan = install::plan(bundle, restage_for_gate(host, &staged)?, &answers, host).map(|p| p.plan);
    if let Err(e) = gate(host, &live, &to_checks, answers.node.ip, gate_plan.ok().as_ref(), opts.wait, clock, reporter)
    {
        journal.error = Some(e.to_string());
        journal.reach(host, Phase::GateFailed)?;
        return Err(failed(host, journal, e.within("the health gate of the new release")));
    }

    journal.finish(host, Outcome::Succeeded)?;
    let pruned = release::prune(host, opts.keep)?;
    let _ = host.remove_all(Path::new(state::UPGRADE_STAGING));
    Ok(UpgradeReport {
        outcome: UpgradeOutcome::Upgraded,
        from,
        to,
        policy: decision,
        diff: Some(diff),
        preflight: Some(pre),
        backup: journal.backup.clone(),
        pruned,
        restore_datastore_command: None,
        journal: PathBuf::from(state::UPGRADE_JOURNAL_PATH),
        resumed,
    })
}

/// The last upgrade, when it finished successfully, its release is still current and
/// the release before it still has its snapshot: what `--rollback` without a pending
/// upgrade undoes.
fn undoable_last(host: &dyn Host) -> Result<Option<UpgradeJournal>> {
    let Some(j) = UpgradeJournal::load(host)? else { return Ok(None) };
    if j.outcome != Outcome::Succeeded || release::pointer(host, "current")?.as_deref() != Some(j.to.as_str()) {
        return Ok(None);
    }
    Ok(Snapshot::load(host, &j.from)?.is_some().then_some(j))
}

/// The kept release's bundle, as a `Staged` for re-planning against what is installed.
fn restage_for_gate(host: &dyn Host, staged: &Staged) -> Result<Staged> {
    let id = release::release_id(&staged.manifest);
    Ok(Staged {
        dir: host.real_path(&release::release_dir(&id).join("bundle"))?,
        manifest: staged.manifest.clone(),
        signer: staged.signer,
        scratch: None,
        image_archive_sha256: staged.image_archive_sha256,
    })
}

/// Verifies the bundle into the upgrade's own staging directory. `installed_sha256`:
/// the manifest digest of the release the site runs (`release.json`).
fn stage(
    host: &dyn Host,
    files: &BundleFiles,
    trusted: &[PublicKey],
    installed_sha256: &str,
    dry_run: bool,
    reporter: &dyn Reporter,
) -> Result<Staged> {
    let (dir, scratch) = crate::bundle::staging::staging_dir(host, Path::new(state::UPGRADE_STAGING), dry_run)?;
    // The current release's kept content: what a delta bundle is applied against.
    let base_dir = match release::pointer(host, "current")? {
        Some(id) => Some(host.real_path(&release::release_dir(&id).join("bundle"))?),
        None => None,
    };
    let installed = crate::state::ReleaseRecord::load(host)?;
    let label = installed.as_ref().map(|r| format!("{} {}", r.bundle, r.version));
    // A full bundle stages as for an install; a delta is refused as soon as its signed
    // manifest is read (before `dir` exists) unless its base is the installed release,
    // and its base entries come from the current release's kept content.
    let mut staged = crate::bundle::delta::extract_upgrade(
        files,
        trusted,
        &dir,
        IMAGE_ARCHIVE_ENTRY,
        base_dir.as_deref(),
        Some(installed_sha256),
        label.as_deref(),
        reporter,
    )?;
    staged.scratch = scratch;
    Ok(staged)
}

/// The app chart's namespace and release, for the database dump.
fn app_database(p: &Prepared) -> Option<(String, String)> {
    let chart = p.staged.manifest.charts.iter().find(|c| c.name == crate::render::platform::wiring::APP_CHART)?;
    p.profile.components.contains(&chart.component).then(|| (chart.component.clone(), chart.name.clone()))
}

/// Images, then the distribution, then the charts (the order the contracts give for an
/// upgrade); what they need (directories, the PKI, secrets) before, and the records of
/// the release (inventory, release, report, keys) last. Stable within each group.
fn upgrade_order(plan: Plan) -> Result<Plan> {
    let mut steps: Vec<Box<dyn Step>> = plan.into_steps();
    // Stable: within a group the install's order (parents before children) holds.
    steps.sort_by_key(|s| s.group());
    Plan::from_steps(steps)
}

/// The health gate: live, restart the unit on the new files, then node Ready, every
/// chart's install job and the HTTPS checks; under a target root, the applied plan
/// must check clean (nothing pending or blocked).
#[allow(clippy::too_many_arguments)]
fn gate(
    host: &dyn Host,
    live: &LiveTarget,
    checks: &[HttpsCheck],
    node_ip: IpAddr,
    plan: Option<&Plan>,
    wait: WaitOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
) -> Result<()> {
    if host.live() {
        host.run(&["systemctl", "restart", &live.unit])?.checked(&["systemctl", "restart", &live.unit])?;
        bring_up(host, live, wait, clock, reporter)?;
        if live.kubectl.is_some() && !checks.is_empty() {
            let ca = Path::new(crate::state::CA_CERT);
            post_install_checks(host, checks, ca, node_ip, wait, clock, reporter)?;
        }
        return Ok(());
    }
    let plan = plan.ok_or_else(|| Error::input("upgrade", "the new release could not be planned again to check it"))?;
    let report = plan.check(host)?;
    if report.pending > 0 || report.blocked > 0 {
        let open: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| !matches!(s.state, crate::engine::StepState::Satisfied))
            .map(|s| s.id.as_str())
            .collect();
        return Err(Error::input(
            host.root().display().to_string(),
            format!("after the upgrade {} steps are not as planned: {}", open.len(), open.join(", ")),
        )
        .with_hint("something changed the files while the upgrade ran; look at the journal"));
    }
    Ok(())
}

/// What a rollback did.
struct RolledBack {
    journal: UpgradeJournal,
    cause: Option<Error>,
    /// The old release's gate or the restore failed.
    broken: Option<Error>,
}

impl RolledBack {
    fn into_failure(self) -> UpgradeFailure {
        let restore = self.journal.restore_datastore_command.clone();
        let (code, cause) = match &self.broken {
            Some(b) => (EXIT_ROLLBACK_FAILED, format!("; rolling back also failed: {b}")),
            None => (EXIT_ROLLED_BACK, format!("; release {} was put back", self.journal.from)),
        };
        let err = self.cause.unwrap_or_else(|| Error::input("upgrade", "rolled back"));
        let hint = match &self.broken {
            Some(_) => format!(
                "the backup is in {}; see {} and docs/day2.md (upgrade) to restore by hand",
                self.journal.backup.as_ref().map(|b| b.dir.display().to_string()).unwrap_or_else(|| "-".into()),
                state::UPGRADE_JOURNAL_PATH
            ),
            None => format!(
                "{}; fix the cause, then run the upgrade again{}",
                err.hint.clone().unwrap_or_else(|| "see the cause above".into()),
                restore
                    .as_ref()
                    .map(|c| format!("; the datastore was NOT restored — to restore it: {c}"))
                    .unwrap_or_default()
            ),
        };
        UpgradeFailure {
            exit_code: code,
            error: Box::new(Error {
                kind: err.kind,
                subject: err.subject.clone(),
                cause: format!(
                    "upgrade {} → {} failed: {}{cause}",
                    self.journal.from_version, self.journal.to_version, err.cause
                ),
                hint: Some(hint),
                source: Some(Box::new(err)),
            }),
            restore_datastore_command: restore,
        }
    }

    /// For `--rollback` and the automatic rollback of a crashed run.
    fn into_report(self, automatic: bool) -> (UpgradeReport, Option<UpgradeFailure>) {
        let report = UpgradeReport {
            outcome: UpgradeOutcome::RolledBack,
            from: self.journal.to.clone(),
            to: self.journal.from.clone(),
            policy: None,
            diff: None,
            preflight: None,
            backup: self.journal.backup.clone(),
            pruned: Vec::new(),
            restore_datastore_command: self.journal.restore_datastore_command.clone(),
            journal: PathBuf::from(state::UPGRADE_JOURNAL_PATH),
            resumed: true,
        };
        if self.broken.is_some() || automatic {
            let mut me = self;
            if me.cause.is_none() {
                me.cause = Some(Error::input(
                    state::UPGRADE_JOURNAL_PATH,
                    format!(
                        "the health gate had failed before the last run stopped: {}",
                        me.journal.error.clone().unwrap_or_default()
                    ),
                ));
            }
            return (report, Some(me.into_failure()));
        }
        (report, None)
    }
}

/// Aborts the process at `at` when a test asked for a crash there
/// ([`CRASH_AFTER_PHASE_ENV`]): the journal phases, and two points inside a rollback.
fn crash_point(at: &str) {
    if std::env::var(CRASH_AFTER_PHASE_ENV).ok().as_deref() == Some(at) {
        std::process::abort();
    }
}

/// Puts the previous release back whole (see the module docs).
fn roll_back(
    host: &dyn Host,
    mut journal: UpgradeJournal,
    opts: &UpgradeOptions,
    clock: &dyn Clock,
    reporter: &dyn Reporter,
    cause: Option<Error>,
) -> std::result::Result<RolledBack, UpgradeFailure> {
    journal.reach(host, Phase::RollingBack)?;
    reporter.event(Event::Phase { name: &format!("rolling back to release {}", journal.from), total: None });
    let result = (|| -> Result<()> {
        let snap = Snapshot::load(host, &journal.from)?.ok_or_else(|| {
            Error::input(
                release::release_dir(&journal.from).display().to_string(),
                "the previous release has no snapshot, so it cannot be put back",
            )
            .with_hint("restore by hand from the backup the upgrade journal names")
        })?;
        // Whatever either release placed: the new inventory as planned, and what is on
        // disk now (an apply that crashed may have written either).
        let mut newer = journal.to_inventory.clone();
        if let Ok(now) = Inventory::load(host) {
            for f in now.files {
                if !newer.files.iter().any(|n| n.path == f.path) {
                    newer.files.push(f);
                }
            }
            newer.links.extend(now.links.into_iter().filter(|l| !journal.to_inventory.links.contains(l)));
            newer.dirs.extend(now.dirs.into_iter().filter(|d| !journal.to_inventory.dirs.contains(d)));
        }
        release::restore(host, &snap, Some(&newer))?;
        crash_point("rollback-restored");
        release::set_pointer(host, "current", &journal.from)?;
        match &journal.previous_before {
            Some(p) => release::set_pointer(host, "previous", p)?,
            None => host.remove(&Path::new(state::RELEASES_DIR).join("previous"))?,
        }
        crash_point("rollback-flipped");
        // The new release's kept copy is not a release the site ran: it goes.
        if journal.to != journal.from {
            host.remove_all(&release::release_dir(&journal.to))?;
        }
        let inv = Inventory::load(host).unwrap_or_else(|_| journal.to_inventory.clone());
        match (&journal.backup, opts.restore_datastore) {
            (Some(b), true) => {
                backup::restore_datastore(host, b, &inv)?;
            }
            (Some(b), false) => journal.restore_datastore_command = backup::restore_datastore_command(b, &inv),
            (None, _) => {}
        }
        // The old release must be healthy again; under a target root, every file of
        // its snapshot must be back as it was.
        if host.live() {
            gate(host, &journal.from_live, &journal.from_checks, journal.node_ip, None, opts.wait, clock, reporter)?;
        } else {
            for f in snap.files.iter().filter(|f| !f.secret()) {
                // A staged file's snapshot keeps no digest: the stored file is the reference.
                let want = match &f.sha256 {
                    Some(d) => Some(d.clone()),
                    None => {
                        let stored = release::Snapshot::stored(&snap.release, &f.path);
                        crate::host::file_sha256(host, &stored)?.map(|d| d.hex())
                    }
                };
                let now = crate::host::file_sha256(host, &f.path)?.map(|d| d.hex());
                if now.is_none() || now != want {
                    return Err(Error::corrupt(
                        f.path.display().to_string(),
                        "is not as the previous release had it after the rollback",
                    ));
                }
            }
        }
        Ok(())
    })();
    let broken = result.err();
    journal.finish(host, if broken.is_some() { Outcome::RollbackFailed } else { Outcome::RolledBack })?;
    let _ = host.remove_all(Path::new(state::UPGRADE_STAGING));
    Ok(RolledBack { journal, cause, broken })
}

/// The diff the plan shows before anything changes.
fn diff(
    old: Option<&Manifest>,
    p: &Prepared,
    old_inv: Option<&Inventory>,
    host: &dyn Host,
    from_version: &str,
) -> Result<UpgradeDiff> {
    let new = &p.staged.manifest;
    let mut d =
        UpgradeDiff { from_version: from_version.to_string(), to_version: new.version.clone(), ..Default::default() };
    if let Some(old) = old {
        let refs = |m: &Manifest| m.images.iter().map(|i| i.reference.clone()).collect::<Vec<_>>();
        let (a, b) = (refs(old), refs(new));
        d.images_added = b.iter().filter(|r| !a.contains(r)).cloned().collect();
        d.images_removed = a.iter().filter(|r| !b.contains(r)).cloned().collect();
        let mut names: Vec<&str> = old.charts.iter().chain(new.charts.iter()).map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        for n in names {
            let v = |m: &Manifest| m.charts.iter().find(|c| c.name == n).map(|c| c.version.clone());
            let (f, t) = (v(old), v(new));
            if f != t {
                d.charts.push(ChartChange { name: n.to_string(), from: f, to: t });
            }
        }
        let dv = |m: &Manifest| m.distribution.as_ref().map(|x| format!("{} {}", x.kind, x.version));
        if let (Some(f), Some(t)) = (dv(old), dv(new)) {
            if f != t {
                d.distribution = Some((f, t));
            }
        }
    }
    for s in p.plan.check(host)?.steps {
        if let crate::engine::StepState::Pending { change } = &s.state {
            if let Some((_, path)) = s.id.split_once("/file/") {
                let path = PathBuf::from(format!("/{path}"));
                if change.starts_with("create") {
                    d.files_added.push(path);
                } else {
                    d.files_changed.push(path);
                }
            }
        }
    }
    if let Some(old) = old_inv {
        for f in &old.files {
            // Trust changes only through key statements: a key kept by an earlier
            // release stays although this bundle is verified (and kept) by another.
            if f.path.starts_with(state::KEY_DIR) {
                continue;
            }
            if !p.inventory.files.iter().any(|n| n.path == f.path) {
                d.files_removed.push(f.path.clone());
            }
        }
    }
    Ok(d)
}

/// After `airlock install` applied its plan: keeps the answers (secrets apart, in 0600
/// files), from a file or from the wizard, and the release (bundle, snapshot, `current`).
pub fn keep_install(
    host: &dyn Host,
    staged_dir: &Path,
    m: &Manifest,
    given: answers::InstallAnswers<'_>,
    keep: usize,
) -> Result<Vec<String>> {
    answers::keep_install_answers(host, given)?;
    release::keep_installed(host, staged_dir, m, keep)
}

/// The phase and resume command of an unfinished upgrade, for `airlock status`.
pub fn pending(host: &dyn Host) -> Result<Option<(Phase, String, String)>> {
    Ok(UpgradeJournal::load(host)?
        .filter(UpgradeJournal::pending)
        .map(|j| (j.phase, j.resume_command.clone(), format!("{} → {}", j.from_version, j.to_version))))
}

/// How the last upgrade ended, for `airlock status`: `(outcome, "1.0.0 → 1.1.0", error)`
/// once it finished.
pub fn last_outcome(host: &dyn Host) -> Result<Option<(Outcome, String, Option<String>)>> {
    Ok(UpgradeJournal::load(host)?
        .filter(|j| !j.pending())
        .map(|j| (j.outcome, format!("{} → {}", j.from_version, j.to_version), j.error)))
}

/// The plan of a rollback: the previous release's snapshot put back, nothing changed yet.
fn would_roll_back(j: &UpgradeJournal, resumed: bool) -> UpgradeReport {
    UpgradeReport {
        outcome: UpgradeOutcome::WouldRollBack,
        from: j.to.clone(),
        to: j.from.clone(),
        policy: None,
        diff: None,
        preflight: None,
        backup: j.backup.clone(),
        pruned: Vec::new(),
        restore_datastore_command: None,
        journal: PathBuf::from(state::UPGRADE_JOURNAL_PATH),
        resumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::{Layout, StepGroup};

    #[test]
    fn the_upgrade_applies_images_then_the_distribution_then_charts_then_the_records() {
        let mut layout = Layout::default();
        layout.in_group(StepGroup::Records, |l| l.file(state::INVENTORY_PATH, 0o644, "{}"));
        layout.in_group(StepGroup::Charts, |l| l.file("/var/lib/rancher/k3s/server/manifests/app.yaml", 0o644, "a"));
        layout.file("/etc/rancher/k3s/config.yaml", 0o600, "c");
        layout.in_group(StepGroup::Images, |l| {
            l.file("/var/lib/rancher/k3s/agent/images/airlock-images.tar", 0o644, "i")
        });
        layout.in_group(StepGroup::Secrets, |l| l.file("/var/lib/airlock/secrets/cluster-token", 0o600, "t"));
        let plan = Plan::from_steps(crate::engine::layout_steps("k3s", &layout, Path::new("/s"))).unwrap();
        let ordered = upgrade_order(plan).unwrap();
        let files: Vec<&str> =
            ordered.steps().iter().map(|s| s.id()).filter_map(|id| id.strip_prefix("k3s/file")).collect();
        assert_eq!(
            files,
            [
                "/var/lib/airlock/secrets/cluster-token",
                "/var/lib/rancher/k3s/agent/images/airlock-images.tar",
                "/etc/rancher/k3s/config.yaml",
                "/var/lib/rancher/k3s/server/manifests/app.yaml",
                state::INVENTORY_PATH,
            ]
        );
    }
}
