//! `airlock uninstall`: remove what the install laid down, and nothing else.
//!
//! The install records its inventory (`/var/lib/airlock/installed.json`): every file
//! with its digest, link, directory and unit it placed. Uninstall plans from that
//! record alone — never from a pattern or a guess — so a file someone else put into
//! `/usr/local/bin` or `/etc/rancher` stays. A file of ours that was changed since is
//! kept and reported (the operator's edit is not ours to destroy) unless `force`; so
//! is one whose change cannot be ruled out (recorded without a digest by an earlier
//! release, or keyed with a site key that is gone). Secret-bearing files are compared
//! through their keyed digest ([`crate::state::inventory`]), never shown.
//! Directories go only when empty, and one left says what it still holds. What the
//! distribution itself created while running (the datastore, its kubeconfig, pods'
//! volumes) is not in the inventory; `purge` removes those trees too, as the
//! distribution's own uninstall does.
//!
//! Like install, the plan is data: `--dry-run` prints it and `apply` runs it, both from
//! [`plan`]'s result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use serde::Serialize;

use crate::host::{FileKind, Host};
use crate::state::{FileState, Inventory, InventoryKey, Unverifiable, BACKUPS_DIR, RELEASES_DIR, STATE_DIR};

/// Options of an uninstall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UninstallOptions {
    /// Also remove files of ours that were changed since the install (or whose change
    /// cannot be ruled out).
    pub force: bool,
    /// Also remove what the distribution created while running (datastore, kubeconfig).
    pub purge: bool,
}

/// Why a file of ours is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// Its content differs from what the install placed.
    Changed,
    /// Something other than a file is there now.
    Replaced,
    /// Whether it changed cannot be told.
    Unverifiable(Unverifiable),
}

impl KeepReason {
    /// Why, for a person.
    pub fn describe(self) -> String {
        match self {
            Self::Changed => "changed since the install".into(),
            Self::Replaced => "no longer a file".into(),
            Self::Unverifiable(u) => u.reason(),
        }
    }
}

/// One thing uninstall does or leaves, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Live only: stop the unit and what it started.
    Stop {
        unit: String,
        killall: Option<PathBuf>,
    },
    DisableUnit {
        unit: String,
    },
    Remove {
        path: PathBuf,
        /// Set when the file was changed since the install (or may have been) and goes
        /// only because of `force`: the operator is told which edit they are losing.
        #[serde(skip_serializing_if = "Option::is_none")]
        edited: Option<KeepReason>,
    },
    /// Changed since the install, or not known to be unchanged: left in place (the
    /// operator's edit).
    Keep {
        path: PathBuf,
        reason: KeepReason,
    },
    /// Removed if empty, else left.
    RemoveDirIfEmpty {
        path: PathBuf,
    },
    RemoveTree {
        path: PathBuf,
    },
}

/// The uninstall plan for what is on the target now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UninstallPlan {
    pub actions: Vec<Action>,
    /// The distribution's runtime trees left in place (no `purge`): what a directory
    /// left behind may hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runtime_left: Vec<PathBuf>,
    /// What goes with the installer's state that cannot be had again: the kept
    /// releases rollback needs and the upgrades' backups. Named before it goes, so an
    /// operator who wants them copies them first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state_data: Vec<StateData>,
    /// The copy of the join token the operator brought to this node (`join.token_file`
    /// of the kept answers), when it is still there: not airlock's to remove, but it
    /// admits nodes to the cluster, so the operator is told where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_copy: Option<PathBuf>,
}

/// The kept answers' `join.token_file`, when it names a file still on the target other
/// than the installer's own copy (which goes with the state directory).
fn token_copy(host: &dyn Host) -> Option<PathBuf> {
    let answers = crate::site::answers::kept::load_kept(host).ok().flatten()?;
    let path = answers.join?.token_file;
    let ours = Path::new(crate::state::CLUSTER_TOKEN_PATH);
    (path != ours && matches!(host.metadata(&path), Ok(Some(_)))).then_some(path)
}

/// A part of the installer's state an uninstall deletes for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateData {
    pub path: PathBuf,
    /// What it is, for a person ("stored release", "upgrade backup").
    pub what: &'static str,
    /// Its entries (releases by version, backups by name).
    pub entries: Vec<String>,
}

/// The parts of the state directory worth naming before an uninstall deletes them.
fn state_data(host: &dyn Host) -> Result<Vec<StateData>> {
    let mut out = Vec::new();
    for (dir, what) in [(RELEASES_DIR, "stored release"), (BACKUPS_DIR, "upgrade backup")] {
        let path = PathBuf::from(dir);
        // Directories only: the store's `current`/`previous` are links to its releases.
        let mut entries: Vec<String> = host
            .list_dir(&path)?
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == FileKind::Dir)
            .map(|e| e.name)
            .collect();
        entries.sort();
        if !entries.is_empty() {
            out.push(StateData { path, what, entries });
        }
    }
    Ok(out)
}

/// Plans the uninstall from the inventory and the target's current state.
pub fn plan(host: &dyn Host, inv: &Inventory, opts: UninstallOptions) -> Result<UninstallPlan> {
    let mut actions = Vec::new();
    if host.live() {
        actions.push(Action::Stop { unit: inv.unit.clone(), killall: inv.killall.clone() });
    }
    for unit in &inv.units {
        actions.push(Action::DisableUnit { unit: unit.clone() });
    }
    // Only our own links: where a name was already on PATH the install made none, and
    // a link someone replaced (with a file, or a link elsewhere) is theirs now, as K3s'
    // own uninstall treats them.
    for link in &inv.links {
        if inv.link_is_ours(host, link)? {
            actions.push(Action::Remove { path: link.clone(), edited: None });
        }
    }
    let state = Path::new(STATE_DIR);
    // A key that cannot be read leaves the keyed files unverifiable, which keeps them.
    let key = InventoryKey::load(host).ok().flatten();
    for f in inv.files.iter().filter(|f| !f.path.starts_with(state)) {
        let reason = match f.state(host, key.as_ref())? {
            FileState::Missing => continue,
            FileState::AsPlaced => None,
            FileState::Changed => Some(KeepReason::Changed),
            FileState::Replaced => Some(KeepReason::Replaced),
            FileState::Unverifiable(u) => Some(KeepReason::Unverifiable(u)),
        };
        actions.push(match reason {
            Some(reason) if !opts.force => Action::Keep { path: f.path.clone(), reason },
            edited => Action::Remove { path: f.path.clone(), edited },
        });
    }
    let mut runtime_left = Vec::new();
    for d in &inv.runtime_dirs {
        match (host.metadata(d)?.is_some(), opts.purge) {
            (true, true) => actions.push(Action::RemoveTree { path: d.clone() }),
            (true, false) => runtime_left.push(d.clone()),
            (false, _) => {}
        }
    }
    let (others, holding_state) = dirs_to_remove(inv);
    actions.extend(others.into_iter().map(|path| Action::RemoveDirIfEmpty { path }));
    actions.push(Action::RemoveTree { path: state.to_path_buf() });
    actions.extend(holding_state.into_iter().map(|path| Action::RemoveDirIfEmpty { path }));
    Ok(UninstallPlan { actions, runtime_left, state_data: state_data(host)?, token_copy: token_copy(host) })
}

/// The directories an uninstall removes when empty, deepest first: the inventory's and
/// the parents of what was placed (the install created them when missing), never `/`;
/// then, apart, those holding the installer's own state (`/var/lib`), which are looked
/// at only after the state went, or they would never be empty.
pub fn dirs_to_remove(inv: &Inventory) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let state = Path::new(STATE_DIR);
    let mut dirs: BTreeSet<PathBuf> = inv.dirs.iter().filter(|d| !d.starts_with(state)).cloned().collect();
    for p in inv.files.iter().map(|f| &f.path).chain(&inv.links) {
        dirs.extend(
            p.ancestors().skip(1).filter(|a| a.parent().is_some() && !a.starts_with(state)).map(Path::to_path_buf),
        );
    }
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.into_iter().partition(|d| !state.starts_with(d))
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A file of ours left in place, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub path: PathBuf,
    pub reason: KeepReason,
}

/// What keeps a directory from going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holds {
    /// Files of ours kept because they were changed (or may have been).
    KeptFiles,
    /// What the distribution created while it ran (left without `purge`).
    RuntimeData,
    /// Anything else: files that are not airlock's.
    OthersFiles,
}

/// A directory left because it is not empty, with what is in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeptDir {
    pub path: PathBuf,
    pub holds: BTreeSet<Holds>,
}

/// What an applied uninstall did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UninstallReport {
    /// Files and links removed.
    pub removed_files: usize,
    /// Directories removed because they were empty.
    pub removed_dirs: usize,
    /// Temporary files a killed run left beside files of ours, removed.
    #[serde(skip_serializing_if = "is_zero")]
    pub removed_temp_files: usize,
    /// Whole trees removed: the installer's state, and with `purge` the runtime data.
    pub removed_trees: Vec<PathBuf>,
    /// Files of ours that were changed since the install and removed with `force`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_edited: Vec<Kept>,
    /// The operator's copy of the join token, still on the target ([`UninstallPlan::token_copy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_copy: Option<PathBuf>,
    /// Files of ours left in place.
    pub kept: Vec<Kept>,
    /// Directories left because something is still in them.
    pub kept_dirs: Vec<KeptDir>,
    /// The distribution's runtime trees left in place (no `purge`) that are not among
    /// [`Self::kept_dirs`].
    pub runtime_left: Vec<PathBuf>,
}

impl UninstallReport {
    /// Whether everything the install placed is gone.
    pub fn complete(&self) -> bool {
        self.kept.is_empty() && self.kept_dirs.is_empty() && self.runtime_left.is_empty()
    }
}

/// Applies the plan through the host. Holds the install lock, so an install cannot
/// run at the same time; a failure leaves the inventory, so a re-run continues.
pub fn apply(host: &dyn Host, plan: &UninstallPlan) -> Result<UninstallReport> {
    let _lock = crate::state::lock_site(host)?;
    let mut report = UninstallReport::default();
    // A killed run's temporary files next to ours would keep their directory (and, for
    // one written as a secret, a copy of the secret) after everything of ours went:
    // under the lock no run is writing them, so they go first.
    let mut dirs: BTreeSet<&Path> = BTreeSet::new();
    for a in &plan.actions {
        match a {
            Action::Remove { path, .. } | Action::Keep { path, .. } => dirs.extend(path.parent()),
            Action::RemoveDirIfEmpty { path } => {
                dirs.insert(path);
            }
            _ => {}
        }
    }
    report.removed_temp_files = dirs.into_iter().map(|d| crate::host::remove_temp_files(host, d)).sum();
    for a in &plan.actions {
        match a {
            Action::Stop { unit, killall } => {
                host.run(&["systemctl", "stop", unit])?.checked(&["systemctl", "stop"])?;
                if let Some(k) = killall.as_ref().filter(|k| matches!(host.metadata(k), Ok(Some(_)))) {
                    host.run(&[&k.to_string_lossy()])?.checked(&[&k.to_string_lossy()])?;
                }
            }
            Action::DisableUnit { unit } => host.disable_unit(unit)?,
            Action::Remove { path, edited } => {
                host.remove(path)?;
                report.removed_files += 1;
                if let Some(reason) = edited {
                    report.removed_edited.push(Kept { path: path.clone(), reason: *reason });
                }
            }
            Action::Keep { path, reason } => report.kept.push(Kept { path: path.clone(), reason: *reason }),
            Action::RemoveDirIfEmpty { path } => match host.metadata(path)? {
                None => {}
                Some(m) if m.kind != FileKind::Dir => {
                    report.kept_dirs.push(KeptDir { path: path.clone(), holds: [Holds::OthersFiles].into() })
                }
                Some(_) if host.remove_dir(path)? => report.removed_dirs += 1,
                Some(_) => {
                    let holds = holds(host, path, &report, &plan.runtime_left)?;
                    report.kept_dirs.push(KeptDir { path: path.clone(), holds });
                }
            },
            Action::RemoveTree { path } => {
                if host.metadata(path)?.is_some() {
                    host.remove_all(path)?;
                    report.removed_trees.push(path.clone());
                }
            }
        }
    }
    report.token_copy = plan.token_copy.clone().filter(|p| matches!(host.metadata(p), Ok(Some(_))));
    // Runtime trees that are still there and not already named as a directory left.
    for r in &plan.runtime_left {
        if host.metadata(r)?.is_some() && !report.kept_dirs.iter().any(|k| &k.path == r) {
            report.runtime_left.push(r.clone());
        }
    }
    Ok(report)
}

/// What is in a directory that could not be removed, from its entries: kept files of
/// ours (or directories left for them), runtime data left without `purge`, or else
/// someone else's files.
fn holds(host: &dyn Host, dir: &Path, report: &UninstallReport, runtime: &[PathBuf]) -> Result<BTreeSet<Holds>> {
    let mut out = BTreeSet::new();
    for e in host.list_dir(dir)?.unwrap_or_default() {
        let entry = dir.join(&e.name);
        if let Some(k) = report.kept_dirs.iter().find(|k| k.path == entry) {
            out.extend(k.holds.iter().copied());
        } else if report.kept.iter().any(|k| k.path.starts_with(&entry)) {
            out.insert(Holds::KeptFiles);
        } else if runtime.iter().any(|r| entry.starts_with(r) || r.starts_with(&entry)) {
            out.insert(Holds::RuntimeData);
        } else {
            out.insert(Holds::OthersFiles);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::{FileSource, Layout};
    use crate::host::{CommandOutput, HostCall, Perms, RecordingHost};
    use crate::state;

    #[test]
    fn on_a_live_host_the_unit_and_its_containers_stop_before_any_file_goes() {
        let host = RecordingHost::new(true).unwrap();
        let mut layout = Layout::default();
        layout.file("/usr/local/bin/k3s-killall.sh", 0o755, b"#!/bin/sh\n".to_vec());
        layout.file("/etc/rancher/k3s/config.yaml", 0o600, b"x".to_vec());
        layout.units.push("k3s.service".into());
        let killall = PathBuf::from("/usr/local/bin/k3s-killall.sh");
        let key = InventoryKey::load_or_generate(&host).unwrap();
        let inv = Inventory::of(&layout, "k3s", "k3s.service", Some(killall.clone()), vec![], &key, &|_| None);
        for f in &layout.files {
            let FileSource::Inline(b) = &f.source else { unreachable!() };
            host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        host.expect_command(&["systemctl"], CommandOutput::ok(""));
        host.expect_command(&["/usr/local/bin/k3s-killall.sh"], CommandOutput::ok(""));
        host.take_calls();

        let inv = Inventory::load(&host).unwrap();
        let p = plan(&host, &inv, UninstallOptions::default()).unwrap();
        assert_eq!(p.actions[0], Action::Stop { unit: "k3s.service".into(), killall: Some(killall) });
        apply(&host, &p).unwrap();
        let calls = host.calls();
        let runs: Vec<usize> =
            calls.iter().enumerate().filter(|(_, c)| matches!(c, HostCall::Run { .. })).map(|(i, _)| i).collect();
        let first_remove = calls.iter().position(|c| matches!(c, HostCall::Remove { .. })).unwrap();
        let HostCall::Run { argv } = &calls[runs[0]] else { unreachable!() };
        assert_eq!(argv.join(" "), "systemctl stop k3s.service");
        let HostCall::Run { argv } = &calls[runs[1]] else { unreachable!() };
        assert_eq!(argv.join(" "), "/usr/local/bin/k3s-killall.sh");
        assert!(runs[1] < first_remove, "{calls:#?}");
        assert!(host.metadata(Path::new("/etc/rancher/k3s/config.yaml")).unwrap().is_none());
    }
}
