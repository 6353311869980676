//! The cluster half of `airlock upgrade` on the first server.
//!
//! [`run_cluster_upgrade`] makes the whole run's decisions; the caller gives it this
//! node's own upgrade and rollback ([`ThisNode`]) and renders the [`ClusterUpgrade`]
//! it returns. Every other node is prepared first ([`ClusterRun::prepare`] with
//! [`Purpose::Upgrade`]: bundle sent and verified there, the upgrade preflight run with
//! the node's kept answers), then this node is upgraded. Then [`ClusterRun::upgrade_others`]:
//! the other servers one at a time, each running its own `airlock upgrade` (with its
//! backup, whole-release rollback and gate) and then gated from here before the next
//! one starts, then the agents in parallel. When a node fails, every node that is on
//! the new release is put back, last upgraded first
//! ([`ClusterRun::roll_back_others`], then this node), with each node's own
//! whole-release rollback (`airlock upgrade --rollback`).
//!
//! A node's journal on the first server records the release it is on: a re-run finds
//! the nodes already upgraded, checks them and does not upgrade them again.

use airlock_format::error::Result;
use airlock_format::report::Reporter;

use super::{failed, target, ClusterReport, ClusterRun, NodeReport, NodeResult, Phase, Purpose, CRASH_AFTER_NODE_ENV};
use crate::ops::upgrade::{EXIT_ROLLBACK_FAILED, EXIT_ROLLED_BACK};
use crate::site::answers::{Role, SiteNode};

/// This node's part in the cluster's upgrade, given by the caller: its own upgrade
/// (the same as a single node's) and its whole-release rollback. The caller may show
/// what each step did; the cluster run only decides what runs when.
pub trait ThisNode {
    /// What this node's upgrade reports when it went through.
    type Upgraded;
    /// Why this node's upgrade failed (it put its previous release back itself).
    type Failure;
    /// A fresh progress display for the next step; it is done when dropped.
    fn progress(&self) -> Box<dyn Reporter>;
    /// Every other node is ready: called once, before this node's upgrade starts.
    fn prepared(&mut self, report: &ClusterReport);
    /// Upgrades this node.
    fn upgrade(&mut self) -> std::result::Result<Self::Upgraded, Self::Failure>;
    /// Puts this node's previous release back: [`NodeResult::RolledBack`] or
    /// [`NodeResult::RollbackFailed`].
    fn roll_back(&mut self) -> NodeResult;
}

/// How the cluster's upgrade ended, for the caller to render.
pub enum ClusterUpgrade<U, F> {
    /// A node was not ready: nothing was upgraded on any node.
    NotReady { prepared: ClusterReport },
    /// This node's upgrade failed: no other node was upgraded.
    ThisNodeFailed(F),
    /// Every node is on the new release. `incoming_left`: the nodes whose incoming
    /// directory could not be removed, with the cause.
    Upgraded { here: U, report: ClusterReport, incoming_left: Vec<(String, String)> },
    /// `failed_node` failed with `cause`; every node on the new release was put back,
    /// last upgraded first, this node last. `all_back`: whether every one of them went back.
    RolledBack { failed_node: String, cause: String, all_back: bool, report: ClusterReport },
}

impl<U, F> ClusterUpgrade<U, F> {
    /// The exit code of a run that failed after this node's upgrade (docs/exit-codes.md):
    /// rolled back, or the rollback failed too. `None` for the other outcomes.
    pub fn rollback_exit_code(&self) -> Option<u8> {
        match self {
            Self::RolledBack { all_back: true, .. } => Some(EXIT_ROLLED_BACK),
            Self::RolledBack { all_back: false, .. } => Some(EXIT_ROLLBACK_FAILED),
            _ => None,
        }
    }
}

/// The cluster's upgrade (docs/cluster.md): the other nodes prepared, this node
/// upgraded, then the others; when one fails, every node on the new release is put
/// back, last upgraded first, this node last. `Err` only when the nodes could not be
/// prepared at all. `lock`: [`crate::state::CLUSTER_LOCK`], taken by the caller before
/// it staged the installer the nodes get and kept until that is removed again; every
/// node the run claims is given back before this returns ([`ClusterRun::hold_nodes`]).
pub fn run_cluster_upgrade<N: ThisNode>(
    run: &ClusterRun<'_>,
    lock: &crate::host::HostLock,
    this: &mut N,
) -> Result<ClusterUpgrade<N::Upgraded, N::Failure>> {
    let _hold = run.hold_nodes(lock);
    let prepared = run.prepare(&*this.progress())?;
    if !prepared.ok() {
        return Ok(ClusterUpgrade::NotReady { prepared });
    }
    this.prepared(&prepared);
    let here = match this.upgrade() {
        Ok(r) => r,
        Err(f) => return Ok(ClusterUpgrade::ThisNodeFailed(f)),
    };
    let others = run.upgrade_others(&*this.progress());
    if others.ok() {
        let incoming_left = run.remove_incoming();
        let report = run.upgrade_report(NodeResult::Upgraded, others.rows, &[]);
        return Ok(ClusterUpgrade::Upgraded { here, report, incoming_left });
    }
    let (failed_node, cause) =
        others.first_failure().map(|(n, c)| (n.to_string(), c)).unwrap_or_else(|| ("?".into(), String::new()));
    let back: Vec<String> = others.on_new_release.iter().rev().cloned().collect();
    let rolled = run.roll_back_others(&back);
    // This node was upgraded first, so it goes back last.
    let first = this.roll_back();
    let all_back = matches!(first, NodeResult::RolledBack) && rolled.iter().all(|(_, r)| r == &NodeResult::RolledBack);
    let report = run.upgrade_report(first, others.rows, &rolled);
    Ok(ClusterUpgrade::RolledBack { failed_node, cause, all_back, report })
}

/// How the other nodes' upgrade went.
pub struct NodesUpgraded {
    /// One row per other node.
    pub rows: Vec<NodeReport>,
    /// The nodes on the new release now (upgraded by this run or an earlier one), in
    /// the order they got there: what a rollback puts back, in reverse.
    pub on_new_release: Vec<String>,
}

impl NodesUpgraded {
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.result.ok())
    }

    /// The first node that failed, with its step and cause, for the error.
    pub fn first_failure(&self) -> Option<(&str, String)> {
        self.rows.iter().find_map(|r| match &r.result {
            NodeResult::Failed { step, cause, .. } => Some((r.name.as_str(), format!("{step}: {cause}"))),
            _ => None,
        })
    }
}

impl ClusterRun<'_> {
    fn previous_version(&self) -> &str {
        match &self.purpose {
            Purpose::Upgrade { from_version } => from_version,
            Purpose::Install => &self.version,
        }
    }

    /// Upgrades every other node: servers one at a time, each gated, then the agents in
    /// parallel. A failed server stops the nodes after it: the caller rolls back.
    pub fn upgrade_others(&self, _reporter: &dyn Reporter) -> NodesUpgraded {
        let mut rows = Vec::new();
        let mut on_new = Vec::new();
        let mut stop: Option<String> = None;
        for n in self.others().filter(|n| n.role == Role::Server) {
            let r = match &stop {
                Some(why) => NodeResult::Skipped { why: why.clone() },
                None => {
                    let (r, now_new) = self.upgrade_node(n);
                    if now_new {
                        on_new.push(n.name.clone());
                    }
                    r
                }
            };
            if !r.ok() && stop.is_none() {
                stop = Some(format!("server {} failed its upgrade; the cluster is put back", n.name));
            }
            rows.push(self.row(n, 0, r));
        }
        let agents: Vec<(NodeReport, bool)> = match &stop {
            Some(why) => self
                .others()
                .filter(|n| n.role == Role::Agent)
                .map(|n| (self.row(n, 0, NodeResult::Skipped { why: why.clone() }), false))
                .collect(),
            None => std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .others()
                    .filter(|n| n.role == Role::Agent)
                    .map(|n| {
                        s.spawn(move || {
                            let (r, now_new) = self.upgrade_node(n);
                            (self.row(n, 0, r), now_new)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a node's thread does not panic")).collect()
            }),
        };
        for (row, now_new) in agents {
            if now_new {
                on_new.push(row.name.clone());
            }
            rows.push(row);
        }
        NodesUpgraded { rows, on_new_release: on_new }
    }

    /// One node: its result, and whether it is on the new release now.
    fn upgrade_node(&self, n: &SiteNode) -> (NodeResult, bool) {
        let t = target(n);
        match self.joined_earlier(n) {
            Err(e) => return (failed("journal", e), false),
            // On the new release since an earlier run: checked, not upgraded again.
            Ok(true) => {
                return match self.gate(&t) {
                    Ok(()) => (NodeResult::Checked, true),
                    Err(e) => (failed("health", e), true),
                }
            }
            Ok(false) => {}
        }
        let mut args = vec!["--yes".to_string()];
        for o in &self.node_overrides(n) {
            args.extend(["--override".to_string(), o.clone()]);
        }
        // The node's own upgrade: a failure there puts its previous release back
        // before it exits, so the node is not on the new release.
        if let Err(r) =
            self.run_checked(&t, &self.airlock_plain_script("upgrade", &args), &mut std::io::empty(), "upgrade")
        {
            return (r, false);
        }
        if let Err(e) = self.journal(n, Phase::Joined) {
            return (failed("journal", e), true);
        }
        if let Err(e) = self.gate(&t) {
            return (failed("health", e), true);
        }
        if std::env::var(CRASH_AFTER_NODE_ENV).ok().as_deref() == Some(n.name.as_str()) {
            std::process::abort();
        }
        (NodeResult::Upgraded, true)
    }

    /// Puts the previous release back on each of `names` (other nodes), in the order
    /// given, each with its own whole-release rollback; its journal then records the
    /// previous release again. One failing does not stop the others.
    pub fn roll_back_others(&self, names: &[String]) -> Vec<(String, NodeResult)> {
        let mut out = Vec::new();
        for name in names {
            let Some(n) = self.others().find(|n| &n.name == name) else { continue };
            let t = target(n);
            let r = self
                .run_checked(
                    &t,
                    &self.airlock_plain_script("upgrade", &["--rollback".to_string(), "--yes".to_string()]),
                    &mut std::io::empty(),
                    "rollback",
                )
                .and_then(|()| self.rejournal_previous(n).map_err(|e| failed("journal", e)));
            let r = match r {
                Ok(()) => NodeResult::RolledBack,
                Err(NodeResult::Failed { step, cause, hint }) => {
                    NodeResult::RollbackFailed { cause: format!("{step}: {cause}"), hint }
                }
                Err(other) => other,
            };
            out.push((name.clone(), r));
        }
        out
    }

    /// The node's journal as before the upgrade: the same entry, the previous version.
    fn rejournal_previous(&self, n: &SiteNode) -> Result<()> {
        let mut j = match self.read_journal(&n.name)? {
            Some(j) => j,
            None => return Ok(()),
        };
        j.version = self.previous_version().to_string();
        self.write_journal(&j)
    }

    /// The cluster report of an upgrade: this node first with `first`, then `rows`
    /// with each rollback's result in place of the row's own where one ran.
    pub fn upgrade_report(
        &self,
        first: NodeResult,
        rows: Vec<NodeReport>,
        rolled_back: &[(String, NodeResult)],
    ) -> ClusterReport {
        let first_version = if matches!(first, NodeResult::RolledBack) {
            self.previous_version().to_string()
        } else {
            self.version.clone()
        };
        let rows = rows
            .into_iter()
            .map(|mut r| {
                // A node whose own upgrade failed put its previous release back itself;
                // one skipped never left it.
                if matches!(r.result, NodeResult::Failed { .. } | NodeResult::Skipped { .. }) {
                    r.version = self.previous_version().to_string();
                }
                if let Some((_, rb)) = rolled_back.iter().find(|(n, _)| n == &r.name) {
                    // The node that failed keeps its failure as the row's result: that
                    // is the cause; that it was put back shows in its version.
                    if matches!(rb, NodeResult::RolledBack) {
                        r.version = self.previous_version().to_string();
                    }
                    if r.result.ok() || matches!(rb, NodeResult::RollbackFailed { .. }) {
                        r.result = rb.clone();
                    }
                }
                r
            })
            .collect();
        self.report_with(first, &first_version, rows)
    }
}
