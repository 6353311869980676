//! The cluster half of `airlock install` on the first server.
//!
//! [`run_cluster_install`] makes the whole run's decisions; the caller gives it this
//! node's own install ([`ThisNode`]: asking the operator, applying the plan it made)
//! and renders the [`ClusterInstall`] it returns. In order: the cluster is held
//! ([`ClusterRun::hold`]) for the whole run; every other node is prepared
//! ([`ClusterRun::prepare`]: bundle sent and verified there, its preflight run) and
//! nothing is installed anywhere unless every one of them is ready; this node is
//! installed (it starts the cluster and writes the join token); the other nodes join
//! ([`ClusterRun::join`]: servers one at a time, each gated, then the agents); only
//! when every node joined are their incoming directories removed, so that a re-run
//! after a failure sends nothing again.

use std::path::Path;

use airlock_format::error::{Error, Result};
use airlock_format::report::Reporter;

use super::{ClusterReport, ClusterRun};
use crate::state;

/// This node's part in the cluster's install, given by the caller.
pub trait ThisNode {
    /// What this node's install reports when it went through.
    type Installed;
    /// A fresh progress display for the next step; it is done when dropped.
    fn progress(&self) -> Box<dyn Reporter>;
    /// Every other node is ready: called once, before anything is installed anywhere.
    /// `Ok(false)`: the operator declined; nothing is installed.
    fn prepared(&mut self, report: &ClusterReport) -> Result<bool>;
    /// Installs this node (the first server), which writes the cluster's join token.
    fn install(&mut self) -> Result<Self::Installed>;
}

/// How the cluster's install ended, for the caller to render.
pub enum ClusterInstall<I> {
    /// A node was not ready: nothing was installed on any node.
    NotReady { prepared: ClusterReport },
    /// The operator declined after every node was prepared: nothing was installed.
    Declined,
    /// This node is installed and the others joined, or were tried: `report.ok()`
    /// says whether every one did (a failed node is named there with its cause; the
    /// others went on, except the servers after a failed one). `incoming_left`: after
    /// a full success, the nodes whose incoming directory could not be removed.
    Installed { here: I, report: ClusterReport, incoming_left: Vec<(String, String)> },
}

/// The cluster's install (docs/cluster.md). `Err`: the cluster is held by another run,
/// the nodes could not be prepared at all, or this node's install failed (no other
/// node was joined then).
pub fn run_cluster_install<N: ThisNode>(run: &ClusterRun<'_>, this: &mut N) -> Result<ClusterInstall<N::Installed>> {
    let _hold = run.hold()?;
    let prepared = run.prepare(&*this.progress())?;
    if !prepared.ok() {
        return Ok(ClusterInstall::NotReady { prepared });
    }
    if !this.prepared(&prepared)? {
        return Ok(ClusterInstall::Declined);
    }
    let here = this.install()?;
    let token = run.host.read_file(Path::new(state::CLUSTER_TOKEN_PATH))?.ok_or_else(|| {
        Error::input(state::CLUSTER_TOKEN_PATH, "the first server's install wrote no join token")
            .with_hint("run the install again; it resumes")
    })?;
    run.pause_for_test();
    let report = run.join(&token, &*this.progress())?;
    let incoming_left = if report.ok() { run.remove_incoming() } else { Vec::new() };
    Ok(ClusterInstall::Installed { here, report, incoming_left })
}
