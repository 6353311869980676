//! Preflight: whether this host can take the platform, decided before anything changes.
//!
//! Two halves, so every verdict can be reproduced and tested without a host:
//! - [`collect`] reads the host (or a fixture tree under a root) into plain [`Facts`];
//! - [`run`] judges the facts against [`Thresholds`] for a [`Mode`] and returns a
//!   [`PreflightReport`]: per check pass / warn / fail, what was measured and the fix.
//!
//! A failing check blocks the install unless the operator overrides it by name; the
//! report lists the overrides so the caller journals them. The library never prints:
//! rendering is the binary's job. docs/preflight.md lists every check.

mod checks;
mod collect;
mod facts;
mod fsync;
pub mod site;
mod sys;
mod thresholds;

use std::collections::BTreeSet;

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub use collect::{collect, live_network, usr_local_mount, CollectOptions};
pub use facts::*;
pub use fsync::{probe as fsync_probe, FsyncProbeOptions};
pub use thresholds::{Distribution, KernelVersion, PortRange, PortSet, SelinuxPolicy, Thresholds};

/// What the run is about to do; it decides which checks run and how strict they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A new cluster on this host.
    Install,
    /// This host joins an existing cluster.
    Join,
    /// The distribution on this host is upgraded in place.
    Upgrade,
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable kebab-case id (`default-route`): what overrides and the journal name.
    pub id: String,
    pub title: String,
    pub status: Status,
    /// What was measured.
    pub detail: String,
    /// The fix, for anything short of a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Remarks about this run, e.g. that an override named a check that did not fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The worst status that counts: any failure fails; a warning or an override warns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    Pass,
    Warn,
    Fail,
}

// The journal records accepted failures, so the verdict and the override record live
// with it, below the preflight that produces them.
pub use crate::engine::{CheckStatus as Status, OverrideRecord};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    pub mode: Mode,
    pub distribution: Distribution,
    /// The bundle profile checked against (set by `airlock preflight`, which chooses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub checks: Vec<CheckResult>,
    pub overall: Overall,
    /// Every override name given, in the order given; journal the applied ones.
    pub overrides: Vec<OverrideRecord>,
}

impl PreflightReport {
    fn with_status(&self, s: Status) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(move |c| c.status == s)
    }
    /// Checks that block the run.
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.with_status(Status::Fail)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &CheckResult> {
        self.with_status(Status::Warn)
    }
    pub fn overridden(&self) -> impl Iterator<Item = &CheckResult> {
        self.with_status(Status::Overridden)
    }
    pub fn skipped(&self) -> impl Iterator<Item = &CheckResult> {
        self.with_status(Status::Skipped)
    }
    pub fn passed(&self) -> impl Iterator<Item = &CheckResult> {
        self.with_status(Status::Pass)
    }
    /// Whether the install may go ahead (no unoverridden failure).
    pub fn may_proceed(&self) -> bool {
        self.overall != Overall::Fail
    }
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }
    /// Overrides that turned a failure into [`Status::Overridden`]: journal these.
    pub fn applied_overrides(&self) -> impl Iterator<Item = &OverrideRecord> {
        self.overrides.iter().filter(|o| o.applied)
    }
}

/// Every check id, in report order (whether or not it runs in a given mode).
pub fn check_ids() -> impl Iterator<Item = &'static str> {
    checks::CHECKS.iter().map(|c| c.id)
}

/// Runs every check that applies to `mode`, without overrides.
pub fn evaluate(facts: &Facts, thresholds: &Thresholds, mode: Mode) -> Vec<CheckResult> {
    checks::CHECKS
        .iter()
        .filter_map(|def| {
            (def.run)(facts, thresholds, mode).map(|o| CheckResult {
                id: def.id.to_string(),
                title: def.title.to_string(),
                status: o.status,
                detail: o.detail,
                hint: o.hint,
                note: None,
            })
        })
        .collect()
}

/// Judges `facts` and applies `overrides` (check ids the operator accepts failing).
///
/// An override naming no check is an input error, so a typo never silently leaves a
/// failure in place or hides which check the operator meant.
pub fn run(facts: &Facts, thresholds: &Thresholds, mode: Mode, overrides: &[String]) -> Result<PreflightReport> {
    let known: BTreeSet<&str> = check_ids().collect();
    let unknown: Vec<&str> = overrides.iter().map(String::as_str).filter(|o| !known.contains(o)).collect();
    if !unknown.is_empty() {
        let names = unknown.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ");
        let noun = if unknown.len() == 1 {
            "no preflight check has this name"
        } else {
            "no preflight checks have these names"
        };
        return Err(Error::input(format!("preflight override {names}"), noun)
            .with_hint(format!("name checks by id: {}", check_ids().collect::<Vec<_>>().join(", "))));
    }

    let mut checks = evaluate(facts, thresholds, mode);
    let mut records = Vec::new();
    let mut seen = BTreeSet::new();
    for id in overrides {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let Some(check) = checks.iter_mut().find(|c| &c.id == id) else {
            records.push(OverrideRecord {
                id: id.clone(),
                applied: false,
                status_before: None,
                detail: format!("the check does not run in {mode:?} mode"),
            });
            continue;
        };
        let before = check.status;
        let applied = before == Status::Fail;
        if applied {
            check.status = Status::Overridden;
            check.note = Some("failed; overridden by the operator".into());
        } else {
            check.note = Some("named as an override, but it did not fail; nothing was overridden".into());
        }
        records.push(OverrideRecord {
            id: id.clone(),
            applied,
            status_before: Some(before),
            detail: check.detail.clone(),
        });
    }

    let overall = checks
        .iter()
        .map(|c| match c.status {
            Status::Fail => Overall::Fail,
            Status::Warn | Status::Overridden => Overall::Warn,
            Status::Pass | Status::Skipped => Overall::Pass,
        })
        .max()
        .unwrap_or(Overall::Pass);
    Ok(PreflightReport {
        mode,
        distribution: thresholds.distribution,
        profile: None,
        checks,
        overall,
        overrides: records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::ErrorKind;

    /// Facts with no default route and nothing else wrong enough to fail.
    fn facts_without_default_route() -> Facts {
        let mut f = Facts {
            cpu: CpuFacts { arch: Some("aarch64".into()), count: Some(8), flags: vec![], model: None },
            memory: Some(MemoryFacts { total_kib: 16 << 20, available_kib: None }),
            swap: Some(vec![]),
            kernel_release: Some("6.1.0".into()),
            cgroup: CgroupFacts {
                version: Some(CgroupVersion::V2),
                controllers: vec!["cpu".into(), "cpuset".into(), "memory".into(), "pids".into()],
            },
            ..Facts::default()
        };
        f.modules.states.insert("overlay".into(), ModuleState::Builtin);
        f.modules.states.insert("br_netfilter".into(), ModuleState::Loaded);
        f.network.ipv4_addresses = vec![InterfaceAddress { interface: None, address: "10.1.1.1".parse().unwrap() }];
        f.dns.etc =
            Some(ResolvConf { path: "/etc/resolv.conf".into(), nameservers: vec!["10.1.1.2".parse().unwrap()] });
        f.hostname =
            HostnameFacts { name: Some("n1".into()), hosts_file: vec!["10.1.1.1".parse().unwrap()], resolver: None };
        f.time.timesyncd_synchronized = true;
        f.disk = Some(DiskFacts {
            data_dir: "/d".into(),
            measured: "/d".into(),
            total_bytes: 1 << 40,
            available_bytes: 1 << 39,
        });
        f
    }

    #[test]
    fn overall_fails_on_a_failing_check() {
        let r =
            run(&facts_without_default_route(), &Thresholds::defaults(Distribution::K3s), Mode::Install, &[]).unwrap();
        assert_eq!(r.overall, Overall::Fail);
        assert!(!r.may_proceed());
        assert_eq!(r.failed().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["default-route"]);
        assert!(r.overrides.is_empty());
        // The fsync probe did not run for these facts.
        assert_eq!(r.get("etcd-fsync").unwrap().status, Status::Skipped);
    }

    #[test]
    fn an_override_by_name_turns_a_failure_into_overridden_and_is_listed() {
        let t = Thresholds::defaults(Distribution::K3s);
        let names = vec!["default-route".to_string(), "swap".to_string(), "default-route".to_string()];
        let r = run(&facts_without_default_route(), &t, Mode::Install, &names).unwrap();
        let c = r.get("default-route").unwrap();
        assert_eq!(c.status, Status::Overridden);
        assert!(c.hint.is_some(), "the fix stays in the report");
        assert_eq!(r.overall, Overall::Warn);
        assert!(r.may_proceed());
        let applied: Vec<_> = r.applied_overrides().map(|o| o.id.as_str()).collect();
        assert_eq!(applied, ["default-route"]);
        // A passing check named as an override stays Pass, with a note, and is listed unapplied.
        let swap = r.get("swap").unwrap();
        assert_eq!(swap.status, Status::Pass);
        assert!(swap.note.as_deref().unwrap().contains("did not fail"));
        assert_eq!(r.overrides.len(), 2, "duplicates collapse: {:?}", r.overrides);
        assert_eq!(r.overrides[1].status_before, Some(Status::Pass));
    }

    #[test]
    fn unknown_override_names_are_an_input_error_naming_them() {
        let t = Thresholds::defaults(Distribution::K3s);
        let err = run(&Facts::default(), &t, Mode::Install, &["default-rout".into(), "swap".into(), "dns".into()])
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Input);
        assert!(err.subject.contains("`default-rout`") && err.subject.contains("`dns`"), "{}", err.subject);
        assert!(!err.subject.contains("swap"));
        assert!(err.hint.unwrap().contains("default-route"));
    }

    #[test]
    fn overriding_a_check_that_does_not_run_in_this_mode_is_recorded() {
        let t = Thresholds::defaults(Distribution::K3s);
        let r = run(&facts_without_default_route(), &t, Mode::Install, &["join-server-reachable".into()]).unwrap();
        assert!(!r.overrides[0].applied);
        assert_eq!(r.overrides[0].status_before, None);
        assert!(r.get("join-server-reachable").is_none());
    }

    #[test]
    fn report_and_facts_round_trip_through_json() {
        let f = facts_without_default_route();
        let json = serde_json::to_string(&f).unwrap();
        let back: Facts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        let t = Thresholds::defaults(Distribution::Rke2);
        let r = run(&back, &t, Mode::Join, &[]).unwrap();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["mode"], "join");
        assert_eq!(v["distribution"], "rke2");
        assert_eq!(v["overall"], "fail");
        assert!(v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "join-server-reachable" && c["status"] == "skipped"));
        let again: PreflightReport = serde_json::from_value(v).unwrap();
        assert_eq!(again, r);
    }
}
