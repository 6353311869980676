//! The journal: what one run did, step by step, written atomically after every step.
//!
//! `<state_dir>/journal.json` holds the latest run. It is rewritten whole (temp file,
//! fsync, rename) after each step, during rollback and at the end, so after a crash
//! it shows exactly the steps that completed. A resumed run does not read it to decide
//! anything — every step is re-checked against the host — it only notes which run it
//! continues. It never holds file content: step descriptions and errors name paths,
//! never what is in them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::host::{Host, Perms};

pub const JOURNAL_VERSION: u32 = 1;
const JOURNAL_FILE: &str = "journal.json";

/// How a run ended (or `running`: it has not, or it crashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    Succeeded,
    /// A step failed and this run's reversible changes were undone.
    RolledBack,
    /// A step failed and undoing this run's changes failed too.
    RollbackFailed,
}

/// What happened to one step in this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Already as planned; nothing done.
    Satisfied,
    /// Changed by this run (and still in place).
    Applied,
    /// Failed or was blocked; the run stopped here.
    Failed,
    /// Changed by this run, then undone after a later failure.
    RolledBack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub status: StepStatus,
    /// When the status was last set (RFC 3339, UTC).
    pub at: String,
    /// For applied steps: the change the check reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub run_id: String,
    pub started: String,
    pub finished: Option<String>,
    pub outcome: Outcome,
    /// The run this one continues, when that run never finished (crash, kill, power).
    pub resumes: Option<String>,
    /// Where this run keeps the previous versions of files it replaces (target path).
    pub backup_dir: PathBuf,
    /// Failed preflight checks the operator overrode by name for this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight_overrides: Vec<OverrideRecord>,
    /// The command that continues this run (no secrets: paths and flags only), so
    /// `airlock status` can say how to resume an interrupted install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_command: Option<String>,
    pub steps: Vec<StepRecord>,
    /// What failed after every step was applied (keeping the release for upgrades, say):
    /// the run is not done although its steps are, so `airlock status` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_after: Option<FailedAfter>,
}

/// A failure after the last step of a run, with when and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAfter {
    /// What the run was doing, e.g. "keeping the release for upgrades".
    pub what: String,
    pub error: String,
    pub at: String,
}

impl Journal {
    /// The journal's target path in a state directory.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(JOURNAL_FILE)
    }

    /// The latest run's journal, if there is one.
    pub fn load(host: &dyn Host, state_dir: &Path) -> Result<Option<Journal>> {
        let path = Self::path(state_dir);
        let Some(bytes) = host.read_file(&path)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(path.display().to_string(), format!("is not a journal this airlock can read: {e}"))
        })
    }

    pub(super) fn start(run_id: &str, backup_dir: PathBuf, resumes: Option<String>) -> Self {
        Self {
            version: JOURNAL_VERSION,
            run_id: run_id.to_string(),
            started: now_rfc3339(),
            finished: None,
            outcome: Outcome::Running,
            resumes,
            backup_dir,
            preflight_overrides: Vec::new(),
            resume_command: None,
            steps: Vec::new(),
            failed_after: None,
        }
    }

    pub(super) fn save(&self, host: &dyn Host, state_dir: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("a journal always serialises");
        json.push(b'\n');
        host.write_file(&Self::path(state_dir), &mut json.as_slice(), Perms::mode(0o644))?;
        Ok(())
    }

    pub(super) fn record(&mut self, id: &str, status: StepStatus, change: Option<String>, error: Option<String>) {
        self.steps.push(StepRecord { id: id.to_string(), status, at: now_rfc3339(), change, error, note: None });
    }

    /// Updates the latest record of `id` (rollback rewrites an applied step's record).
    pub(super) fn update(&mut self, id: &str, status: StepStatus, error: Option<String>, note: Option<&str>) {
        if let Some(r) = self.steps.iter_mut().rev().find(|r| r.id == id) {
            r.status = status;
            r.at = now_rfc3339();
            if error.is_some() {
                r.error = error;
            }
            if let Some(n) = note {
                r.note = Some(n.to_string());
            }
        }
    }

    /// Records in the latest run's journal that `what` failed after its steps were
    /// applied (the caller still holds the lock of `state_dir`).
    pub fn record_failure_after(host: &dyn Host, state_dir: &Path, what: &str, error: &str) -> Result<()> {
        let Some(mut j) = Self::load(host, state_dir)? else { return Ok(()) };
        j.failed_after = Some(FailedAfter { what: what.to_string(), error: error.to_string(), at: now_rfc3339() });
        j.save(host, state_dir)
    }

    pub(super) fn finish(&mut self, outcome: Outcome) {
        self.outcome = outcome;
        self.finished = Some(now_rfc3339());
    }

    /// The status this run recorded for a step.
    pub fn status_of(&self, id: &str) -> Option<StepStatus> {
        self.steps.iter().rev().find(|r| r.id == id).map(|r| r.status)
    }
}

/// A run id that sorts by time and is unique across processes and within one:
/// `20260512T101500Z-4242-0`.
pub(super) fn new_run_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let compact: String = now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    airlock_format::manifest::rfc3339(secs)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// A preflight check's verdict (`airlock_installer::site::preflight::Status`): the journal
/// records the verdict an override accepted.
pub enum CheckStatus {
    Pass,
    /// Works, but something should be fixed; does not block.
    Warn,
    /// Blocks the install unless overridden.
    Fail,
    /// Failed, and the operator overrode it by name.
    Overridden,
    /// Not decidable from host facts; the detail says why.
    Skipped,
}

/// One name the operator passed as an override, and what it did: the record the caller
/// writes to the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub id: String,
    /// The check failed and is now `Overridden`.
    pub applied: bool,
    /// The check's status before the override (or `None` if it did not run in this mode).
    pub status_before: Option<CheckStatus>,
    /// What the check measured, so the journal says what was accepted.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_within_a_process() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
