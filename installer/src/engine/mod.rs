//! Plan, then apply: steps are data that can say whether the host already has them.
//!
//! A [`Plan`] is an ordered list of [`Step`]s. [`Plan::check`] asks every step, changes
//! nothing, and yields a serialisable [`PlanReport`]: what `--dry-run` prints and what
//! `--check` counts. [`apply`] runs the same checks again, one step at a time, under a
//! lock and with a journal:
//!
//! - the lock (`<state_dir>/lock`, `flock`) keeps a second run off the host: [`apply`]
//!   takes it, [`apply_locked`] runs under the one the command took before staging;
//! - every step is re-checked right before it runs — satisfied steps are skipped,
//!   pending ones applied, a blocked one stops the run — so a re-run after a crash
//!   simply continues from the first pending step, and nothing is applied twice;
//! - the journal (`<state_dir>/journal.json`, see [`Journal`]) is written atomically
//!   after every step, during rollback and at the end;
//! - on a failure this run's applied steps are rolled back in reverse where they can
//!   be (a transaction, as in rustup), and the error names the step and carries the
//!   resume command as its hint; a failed rollback is reported with the failure.
//!
//! Steps from a previous, crashed run are not rolled back by a later failure: that run
//! cannot know what the host looked like before it, only the crashed run did.

mod journal;
pub mod layout;
mod steps;

use std::collections::HashSet;
use std::path::PathBuf;

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::host::{Host, HostLock};

pub use journal::{CheckStatus, Journal, Outcome, OverrideRecord, StepRecord, StepStatus, JOURNAL_VERSION};
pub use steps::layout_steps;

/// Test-only crash injection: `AIRLOCK_TEST_CRASH_AFTER=<step id>` makes [`apply`]
/// abort the process right after that step's journal write, so tests can prove that
/// a re-run after a kill converges. Nothing in the product sets it.
pub const CRASH_AFTER_ENV: &str = "AIRLOCK_TEST_CRASH_AFTER";

/// What a step's check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StepState {
    /// The host already is as planned.
    Satisfied,
    /// Applying would make this change (never showing secret content).
    Pending { change: String },
    /// The step cannot be applied until the operator acts.
    Blocked { reason: String, hint: String },
}

/// What a run tells its steps before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunContext {
    pub run_id: String,
    /// Where steps keep the previous versions of what they replace (a target path,
    /// private to this run). Removed when the run succeeds or rolls back cleanly.
    pub backup_dir: PathBuf,
}

/// One unit of change, with a check that tells whether it is needed.
pub trait Step {
    /// Stable and unique within a plan; used in the journal and for checkpoints
    /// (`k3s/file/etc/rancher/k3s/config.yaml`).
    fn id(&self) -> &str;
    /// Where an upgrade applies it (the install applies steps in plan order).
    fn group(&self) -> layout::StepGroup {
        layout::StepGroup::Distribution
    }
    /// One line for the plan.
    fn describe(&self) -> String;
    /// The target path a file step writes (its directory is where a killed run may
    /// have left a temporary file of it); `None` for other steps.
    fn writes(&self) -> Option<&std::path::Path> {
        None
    }
    /// Looks at the host; changes nothing.
    fn check(&self, host: &dyn Host) -> Result<StepState>;
    fn apply(&self, host: &dyn Host) -> Result<()>;
    /// Undo this run's apply where that is safe; Ok(false) = not reversible.
    fn rollback(&self, host: &dyn Host) -> Result<bool>;
    /// Called by [`apply`] for every step before the run changes anything. Steps that
    /// remember what they replaced (for rollback) learn where to keep it and forget
    /// anything from an earlier run. The default does nothing.
    fn begin(&self, _run: &RunContext) {}
}

/// An ordered list of steps with unique ids.
#[derive(Default)]
pub struct Plan {
    steps: Vec<Box<dyn Step>>,
    ids: HashSet<String>,
}

impl Plan {
    pub fn new() -> Self {
        Self::default()
    }

    /// A plan of these steps, in order.
    pub fn from_steps(steps: Vec<Box<dyn Step>>) -> Result<Self> {
        let mut plan = Self::new();
        plan.extend(steps)?;
        Ok(plan)
    }

    /// Appends a step; a duplicate id is a bug in whatever built the plan.
    pub fn push(&mut self, step: Box<dyn Step>) -> Result<()> {
        if !self.ids.insert(step.id().to_string()) {
            return Err(Error::input(step.id(), "two steps of the plan have this id")
                .with_hint("each path may be laid down by one component only; fix the layouts"));
        }
        self.steps.push(step);
        Ok(())
    }

    pub fn extend(&mut self, steps: Vec<Box<dyn Step>>) -> Result<()> {
        steps.into_iter().try_for_each(|s| self.push(s))
    }

    pub fn steps(&self) -> &[Box<dyn Step>] {
        &self.steps
    }

    /// The steps, to build another plan from them in another order (`airlock upgrade`
    /// applies images, then the distribution, then charts).
    pub fn into_steps(self) -> Vec<Box<dyn Step>> {
        self.steps
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Checks every step against the host without changing it.
    pub fn check(&self, host: &dyn Host) -> Result<PlanReport> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let state = step.check(host).map_err(|e| e.within(format!("step {}", step.id())))?;
            steps.push(PlannedStep { id: step.id().to_string(), description: step.describe(), state });
        }
        let count = |f: fn(&StepState) -> bool| steps.iter().filter(|s| f(&s.state)).count();
        Ok(PlanReport {
            pending: count(|s| matches!(s, StepState::Pending { .. })),
            blocked: count(|s| matches!(s, StepState::Blocked { .. })),
            steps,
        })
    }
}

/// The plan as checked against a host: what `--dry-run` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    pub pending: usize,
    pub blocked: usize,
    pub steps: Vec<PlannedStep>,
}

impl PlanReport {
    pub fn satisfied(&self) -> usize {
        self.steps.len() - self.pending - self.blocked
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub id: String,
    pub description: String,
    #[serde(flatten)]
    pub state: StepState,
}

/// How to run [`apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The installer's state directory, as a target path (lock, journal, backups).
    pub state_dir: PathBuf,
    /// The command that resumes this install, for the hint of a failure
    /// (`airlock install --bundle /media/platform.airlock --answers site.yaml`).
    pub resume_command: String,
    /// Preflight failures the operator overrode by name for this run: journaled, so
    /// what was accepted, and by which run, stays on record.
    pub overrides: Vec<OverrideRecord>,
}

impl ApplyOptions {
    /// Options for a run keeping its lock and journal in `state_dir` (a target path;
    /// `crate::state::STATE_DIR` on a site).
    pub fn new(state_dir: impl Into<PathBuf>, resume_command: impl Into<String>) -> Self {
        Self { state_dir: state_dir.into(), resume_command: resume_command.into(), overrides: Vec::new() }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub run_id: String,
    pub applied: usize,
    pub satisfied: usize,
    /// The unfinished run this one continued, if any.
    pub resumed: Option<String>,
    /// The journal's target path.
    pub journal: PathBuf,
}

/// Applies the plan to the host; see the module docs. `checkpoint` is called with each
/// step's id after its journal record is on disk.
pub fn apply(
    plan: &Plan,
    host: &dyn Host,
    opts: &ApplyOptions,
    checkpoint: &mut dyn FnMut(&str),
) -> Result<ApplyReport> {
    // 0700: the backups in it may hold the previous versions of secrets.
    host.create_dir(&opts.state_dir, 0o700)?;
    let lock = host.lock(&opts.state_dir.join("lock"))?;
    apply_locked(plan, host, opts, &lock, checkpoint)
}

/// [`apply`] for a caller that already holds the lock of `opts.state_dir`: the
/// command took it before it staged anything (`airlock install`, `airlock upgrade`),
/// so a second run is refused before it writes a byte.
pub fn apply_locked(
    plan: &Plan,
    host: &dyn Host,
    opts: &ApplyOptions,
    lock: &HostLock,
    checkpoint: &mut dyn FnMut(&str),
) -> Result<ApplyReport> {
    let crash_after = std::env::var(CRASH_AFTER_ENV).ok();
    let state_dir = opts.state_dir.as_path();
    if lock.path() != state_dir.join("lock") {
        return Err(Error::input(lock.path().display().to_string(), "is not the lock of the state directory")
            .with_hint("this is a bug in airlock: the run must hold the lock of the state directory it journals in"));
    }
    host.create_dir(state_dir, 0o700)?;
    remove_leftovers(plan, host, state_dir);

    // A damaged journal must not stand in the way of finishing an install; it only
    // tells us which run we continue.
    let previous = Journal::load(host, state_dir).ok().flatten();
    let resumes = previous.filter(|j| j.outcome == Outcome::Running).map(|j| j.run_id);
    let run_id = journal::new_run_id();
    let run = RunContext { backup_dir: state_dir.join("backup").join(&run_id), run_id };
    let mut journal = Journal::start(&run.run_id, run.backup_dir.clone(), resumes.clone());
    journal.preflight_overrides = opts.overrides.clone();
    journal.resume_command = Some(opts.resume_command.clone());
    journal.save(host, state_dir)?;
    for step in plan.steps() {
        step.begin(&run);
    }

    let mut run = Run { plan, host, opts, journal, applied: Vec::new() };
    let mut satisfied = 0;
    for (index, step) in plan.steps().iter().enumerate() {
        let (status, change) = match check_and_apply(step.as_ref(), host) {
            Ok(done) => done,
            Err(e) => return Err(run.fail(index, e)),
        };
        match status {
            StepStatus::Applied => run.applied.push(index),
            _ => satisfied += 1,
        }
        run.journal.record(step.id(), status, change, None);
        if let Err(e) = run.journal.save(host, state_dir) {
            // The change is made but not on record: undo it rather than leave a host
            // that the journal does not describe.
            return Err(run.fail(index, e.within("writing the journal")));
        }
        if crash_after.as_deref() == Some(step.id()) {
            std::process::abort();
        }
        checkpoint(step.id());
    }

    run.journal.finish(Outcome::Succeeded);
    run.journal.save(host, state_dir)?;
    // The install is done and recorded: this run's backups, and those of earlier runs a
    // kill left behind (whose steps this run has now seen through), are not needed. One
    // that will not go away is clutter, not a reason to report the install as failed.
    let backups = state_dir.join("backup");
    for e in host.list_dir(&backups).ok().flatten().unwrap_or_default() {
        let _ = host.remove_all(&backups.join(&e.name));
    }
    Ok(ApplyReport {
        run_id: run.journal.run_id.clone(),
        applied: run.applied.len(),
        satisfied,
        resumed: resumes,
        journal: Journal::path(state_dir),
    })
}

/// Temporary files a killed run left next to the files this plan writes: under the lock
/// no other run can be writing them, so they are removed before anything else happens.
/// A directory that cannot be listed is left for the steps to report.
fn remove_leftovers(plan: &Plan, host: &dyn Host, state_dir: &std::path::Path) {
    let mut dirs: std::collections::BTreeSet<&std::path::Path> =
        plan.steps().iter().filter_map(|s| s.writes()?.parent()).collect();
    dirs.insert(state_dir);
    for dir in dirs {
        crate::host::remove_temp_files(host, dir);
    }
}

/// Re-checks one step and applies it if it is pending.
fn check_and_apply(step: &dyn Step, host: &dyn Host) -> Result<(StepStatus, Option<String>)> {
    match step.check(host)? {
        StepState::Satisfied => Ok((StepStatus::Satisfied, None)),
        StepState::Pending { change } => {
            step.apply(host)?;
            Ok((StepStatus::Applied, Some(change)))
        }
        StepState::Blocked { reason, hint } => {
            Err(Error::input(step.id(), format!("blocked: {reason}")).with_hint(hint))
        }
    }
}

/// One apply in progress: what failure handling needs.
struct Run<'a> {
    plan: &'a Plan,
    host: &'a dyn Host,
    opts: &'a ApplyOptions,
    journal: Journal,
    /// Indexes of the steps this run applied, in order.
    applied: Vec<usize>,
}

impl Run<'_> {
    /// Records the failure of step `index`, rolls back this run's applied steps in
    /// reverse, and builds the error: the step and cause, what was undone, any
    /// rollback failures, and the resume command.
    fn fail(&mut self, index: usize, err: Error) -> Error {
        let failed_id = self.plan.steps()[index].id().to_string();
        let state_dir = self.opts.state_dir.as_path();
        if self.journal.status_of(&failed_id).is_some() {
            // Applied, but its journal record could not be written.
            self.journal.update(&failed_id, StepStatus::Failed, Some(err.to_string()), None);
        } else {
            self.journal.record(&failed_id, StepStatus::Failed, None, Some(err.to_string()));
        }
        let mut journal_error = self.journal.save(self.host, state_dir).err();

        let (mut undone, mut kept, mut broken) = (0usize, Vec::new(), Vec::new());
        for &i in self.applied.iter().rev() {
            let step = &self.plan.steps()[i];
            let id = step.id();
            match step.rollback(self.host) {
                Ok(true) => {
                    undone += 1;
                    self.journal.update(id, StepStatus::RolledBack, None, None);
                }
                Ok(false) => {
                    kept.push(id.to_string());
                    self.journal.update(id, StepStatus::Applied, None, Some("not reversible; left in place"));
                }
                Err(e) => {
                    self.journal.update(id, StepStatus::Applied, Some(format!("rollback failed: {e}")), None);
                    broken.push((id.to_string(), e));
                }
            }
            if let Err(e) = self.journal.save(self.host, state_dir) {
                journal_error.get_or_insert(e);
            }
        }
        self.journal.finish(if broken.is_empty() { Outcome::RolledBack } else { Outcome::RollbackFailed });
        if let Err(e) = self.journal.save(self.host, state_dir) {
            journal_error.get_or_insert(e);
        }
        // Backups are kept only when the operator may need them by hand.
        if broken.is_empty() {
            let _ = self.host.remove_all(&self.journal.backup_dir);
        }

        let mut cause = format!("step `{failed_id}` failed: {}", err.cause);
        if self.applied.is_empty() {
            cause.push_str("; this run had changed nothing");
        } else {
            cause.push_str(&format!("; {undone} of this run's {} changes were rolled back", self.applied.len()));
            if !kept.is_empty() {
                cause.push_str(&format!(" ({} not reversible, left in place: {})", kept.len(), kept.join(", ")));
            }
        }
        for (id, e) in &broken {
            cause.push_str(&format!("; rolling back step `{id}` also failed: {}: {}", e.subject, e.cause));
        }
        if let Some(e) = &journal_error {
            cause.push_str(&format!("; the journal could not be written: {}: {}", e.subject, e.cause));
        }
        let fix = err.hint.clone().unwrap_or_else(|| "fix the cause above".to_string());
        let resume = &self.opts.resume_command;
        let hint = if broken.is_empty() {
            format!("{fix}; the command to resume is `{resume}`")
        } else {
            format!(
                "{fix}; {} lists what is still changed and {} holds the files this run replaced; the command to resume is `{resume}`",
                Journal::path(state_dir).display(),
                self.journal.backup_dir.display(),
            )
        };
        Error { kind: err.kind, subject: err.subject.clone(), cause, hint: Some(hint), source: Some(Box::new(err)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::Layout;

    #[test]
    fn a_plan_refuses_two_steps_with_one_id() {
        let mut layout = Layout::default();
        layout.file("/etc/x", 0o644, "a");
        layout.file("/etc/x", 0o644, "b");
        let err = Plan::from_steps(layout_steps("k3s", &layout, std::path::Path::new("/s")))
            .err()
            .expect("duplicate refused");
        assert_eq!(err.subject, "k3s/file/etc/x");
    }

    #[test]
    fn plan_report_serialises_state_inline() {
        let report = PlanReport {
            pending: 1,
            blocked: 0,
            steps: vec![PlannedStep {
                id: "k3s/file/etc/x".into(),
                description: "write /etc/x".into(),
                state: StepState::Pending { change: "create".into() },
            }],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["steps"][0]["state"], "pending");
        assert_eq!(json["steps"][0]["change"], "create");
        assert_eq!(serde_json::from_value::<PlanReport>(json).unwrap(), report);
    }
}
