//! `airlock uninstall`: remove what the install laid down, and nothing else.
//!
//! The install records its inventory (`/var/lib/airlock/installed.json`): every file
//! with its digest, link, directory and unit it placed. Uninstall plans from that
//! record alone — never from a pattern or a guess — so a file someone else put into
//! `/usr/local/bin` or `/etc/rancher` stays. A file of ours that was changed since is
//! kept and reported (the operator's edit is not ours to destroy) unless `force`.
//! Directories go only when empty. What the distribution itself created while running
//! (the datastore, its kubeconfig, pods' volumes) is not in the inventory; `purge`
//! removes those trees too, as the distribution's own uninstall does.
//!
//! Like install, the plan is data: `--dry-run` prints it and `apply` runs it, both from
//! [`plan`]'s result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use serde::Serialize;

use crate::host::{FileKind, Host};
use crate::state::{Inventory, STATE_DIR};

/// Options of an uninstall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UninstallOptions {
    /// Also remove files of ours that were changed since the install.
    pub force: bool,
    /// Also remove what the distribution created while running (datastore, kubeconfig).
    pub purge: bool,
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
    },
    /// Changed since the install: left in place (the operator's edit).
    KeepChanged {
        path: PathBuf,
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
    for link in &inv.links {
        if host.metadata(link)?.is_some() {
            actions.push(Action::Remove { path: link.clone() });
        }
    }
    let state = Path::new(STATE_DIR);
    for f in inv.files.iter().filter(|f| !f.path.starts_with(state)) {
        let Some(meta) = host.metadata(&f.path)? else { continue };
        let changed = match (&f.sha256, meta.kind) {
            (_, k) if k != FileKind::File => true,
            (Some(want), _) => crate::host::file_sha256(host, &f.path)? != Some(*want),
            (None, _) => false,
        };
        actions.push(if changed && !opts.force {
            Action::KeepChanged { path: f.path.clone() }
        } else {
            Action::Remove { path: f.path.clone() }
        });
    }
    if opts.purge {
        for d in &inv.runtime_dirs {
            if host.metadata(d)?.is_some() {
                actions.push(Action::RemoveTree { path: d.clone() });
            }
        }
    }
    // Deepest first, so a directory is empty by the time it is looked at; parents of
    // our files count too (the install created them when missing), but never `/`.
    let mut dirs: BTreeSet<PathBuf> = inv.dirs.iter().filter(|d| !d.starts_with(state)).cloned().collect();
    for p in inv.files.iter().map(|f| &f.path).chain(&inv.links) {
        dirs.extend(
            p.ancestors().skip(1).filter(|a| a.parent().is_some() && !a.starts_with(state)).map(Path::to_path_buf),
        );
    }
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        actions.push(Action::RemoveDirIfEmpty { path: d });
    }
    // The installer's own state goes last: while anything else could fail, the
    // inventory stays for the re-run.
    actions.push(Action::RemoveTree { path: state.to_path_buf() });
    Ok(UninstallPlan { actions })
}

/// What an applied uninstall did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UninstallReport {
    pub removed: usize,
    /// Files of ours changed since the install, left in place.
    pub kept_changed: Vec<PathBuf>,
    /// Directories left because something else is in them.
    pub kept_dirs: Vec<PathBuf>,
}

/// Applies the plan through the host. Holds the install lock, so an install cannot
/// run at the same time; a failure leaves the inventory, so a re-run continues.
pub fn apply(host: &dyn Host, plan: &UninstallPlan) -> Result<UninstallReport> {
    let _lock = crate::state::lock_site(host)?;
    let mut report = UninstallReport::default();
    for a in &plan.actions {
        match a {
            Action::Stop { unit, killall } => {
                host.run(&["systemctl", "stop", unit])?.checked(&["systemctl", "stop"])?;
                if let Some(k) = killall.as_ref().filter(|k| matches!(host.metadata(k), Ok(Some(_)))) {
                    host.run(&[&k.to_string_lossy()])?.checked(&[&k.to_string_lossy()])?;
                }
            }
            Action::DisableUnit { unit } => host.disable_unit(unit)?,
            Action::Remove { path } => {
                host.remove(path)?;
                report.removed += 1;
            }
            Action::KeepChanged { path } => report.kept_changed.push(path.clone()),
            Action::RemoveDirIfEmpty { path } => match host.metadata(path)? {
                None => {}
                Some(_) if host.remove_dir(path)? => report.removed += 1,
                Some(_) => report.kept_dirs.push(path.clone()),
            },
            Action::RemoveTree { path } => {
                host.remove_all(path)?;
                report.removed += 1;
            }
        }
    }
    Ok(report)
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
        layout.file("/usr/local/bin/airlock-k3s-killall.sh", 0o755, b"#!/bin/sh\n".to_vec());
        layout.file("/etc/rancher/k3s/config.yaml", 0o600, b"x".to_vec());
        layout.units.push("k3s.service".into());
        let killall = PathBuf::from("/usr/local/bin/airlock-k3s-killall.sh");
        let inv = Inventory::of(&layout, "k3s", "k3s.service", Some(killall.clone()), vec![], &|_| None);
        for f in &layout.files {
            let FileSource::Inline(b) = &f.source else { unreachable!() };
            host.write_file(&f.path, &mut b.as_slice(), Perms::mode(f.mode)).unwrap();
        }
        host.write_file(Path::new(state::INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
        host.expect_command(&["systemctl"], CommandOutput::ok(""));
        host.expect_command(&["/usr/local/bin/airlock-k3s-killall.sh"], CommandOutput::ok(""));
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
        assert_eq!(argv.join(" "), "/usr/local/bin/airlock-k3s-killall.sh");
        assert!(runs[1] < first_remove, "{calls:#?}");
        assert!(host.metadata(Path::new("/etc/rancher/k3s/config.yaml")).unwrap().is_none());
    }
}
