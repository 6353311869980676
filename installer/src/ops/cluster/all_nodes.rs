//! The cluster-wide commands that come with no bundle, on the first server: they run
//! the installer kept with this node's current release on every other node.
//!
//! `airlock uninstall --all-nodes`: every other node uninstalls
//! over SSH, agents first, then the servers in reverse order (the last to join leaves
//! first, so etcd loses members one at a time down to the first server), and the
//! caller uninstalls this node last. A node that cannot be reached or fails is
//! reported with its cause and the other nodes are still done; this node then stays
//! installed, since it holds what a re-run needs to finish (the node list, the
//! journals, the installer).
//!
//! `airlock support-bundle --all-nodes`: each other node collects its own support
//! archive (redacted there), fetched into `nodes/<node>/` of this node's archive.
//!
//! The installer that runs on a node is the first server's kept one (the release the
//! cluster runs, from its verified bundle), sent into the node's incoming directory,
//! which goes with the rest after the node's uninstall.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use airlock_format::error::{Error, Result};
use airlock_format::report::Reporter;

use super::{failed, prologue, target, ClusterRun, NodeReport, NodeResult, Outgoing};
use crate::site::answers::Role;

impl ClusterRun<'_> {
    /// Uninstalls every other node, agents first, then servers last joined first.
    /// `extra`: `--purge` / `--force` as given.
    pub fn uninstall_others(&self, extra: &[String], reporter: &dyn Reporter) -> Result<Vec<NodeReport>> {
        let installer = [Outgoing::installer(&self.installer)?];
        let mut order: Vec<_> = self.others().filter(|n| n.role == Role::Agent).collect();
        order.extend(self.others().filter(|n| n.role == Role::Server).collect::<Vec<_>>().into_iter().rev());
        let ids = AtomicU64::new(1);
        let mut rows = Vec::new();
        for n in order {
            let t = target(n);
            let mut sent = 0;
            let r = (|| -> std::result::Result<NodeResult, NodeResult> {
                // No journal here: uninstalled by an earlier run (which removed it), or
                // never set up from this server; either way nothing of ours to remove.
                if self.read_journal(&n.name).map_err(|e| failed("journal", e))?.is_none() {
                    return Ok(NodeResult::Removed);
                }
                self.claim(n, &t)?;
                self.send_missing(n, &t, &installer, &mut sent, &ids, reporter)?;
                let args: Vec<String> = extra.iter().map(|a| super::sh_quote(a)).collect();
                let script = format!(
                    "{}cd \"$D\" && ./airlock uninstall --root \"${{R:-/}}\" --yes {} && cd / && rm -rf -- \"$D\"",
                    prologue(),
                    args.join(" ")
                );
                self.run_checked(&t, &script, &mut std::io::empty(), "uninstall")?;
                // The node's mark went with its incoming directory.
                self.unclaim(&n.name);
                self.host.remove(&super::journal_path(&n.name)).map_err(|e| failed("journal", e))?;
                Ok(NodeResult::Removed)
            })();
            rows.push(self.row(n, sent, r.unwrap_or_else(|f| f)));
        }
        Ok(rows)
    }
}

/// How `uninstall --all-nodes` ended, for the caller to render.
pub enum AllNodesUninstalled<R> {
    /// Every other node is uninstalled, then this one (`here`: its own report).
    Done { here: R, report: super::ClusterReport },
    /// `failed` (other nodes) were not uninstalled; the rest were, and this node was
    /// kept: it holds the node list, the journals and the installer a re-run needs.
    ThisNodeKept { failed: Vec<String>, report: super::ClusterReport },
}

impl ClusterRun<'_> {
    /// `uninstall --all-nodes`: every other node ([`ClusterRun::uninstall_others`],
    /// with `--purge` / `--force` passed on as given, its progress on `reporter`,
    /// which is dropped when they are done), then, only when every one of them is
    /// done, this node with `uninstall_here`. The run holds the cluster
    /// ([`ClusterRun::hold`]) until the other nodes are done: this node's own
    /// uninstall, which takes the site's lock and removes the state directory the
    /// cluster lock lives in, runs after it is given back.
    pub fn uninstall_all_nodes<R>(
        &self,
        purge: bool,
        force: bool,
        reporter: Box<dyn Reporter + '_>,
        uninstall_here: impl FnOnce() -> Result<R>,
    ) -> Result<AllNodesUninstalled<R>> {
        let mut extra = Vec::new();
        if purge {
            extra.push("--purge".to_string());
        }
        if force {
            extra.push("--force".to_string());
        }
        let hold = self.hold()?;
        let rows = self.uninstall_others(&extra, &*reporter);
        drop(reporter);
        drop(hold);
        let rows = rows?;
        if rows.iter().all(|r| r.result.ok()) {
            let here = uninstall_here()?;
            return Ok(AllNodesUninstalled::Done { here, report: self.removal_report(NodeResult::Removed, rows) });
        }
        let failed = rows.iter().filter(|r| !r.result.ok()).map(|r| r.name.clone()).collect();
        let why = "kept until every other node is uninstalled (it holds the node list a re-run needs)".to_string();
        Ok(AllNodesUninstalled::ThisNodeKept { failed, report: self.removal_report(NodeResult::Skipped { why }, rows) })
    }

    /// The report of `--all-nodes`: this node (uninstalled last) first, then `rows`.
    pub fn removal_report(&self, first: NodeResult, rows: Vec<NodeReport>) -> super::ClusterReport {
        self.report_with(first, &self.version, rows)
    }
}

/// The installer kept with the first server's current release: what the other nodes
/// run for a cluster-wide command that comes with no bundle.
pub fn kept_installer(host: &dyn crate::host::Host) -> Result<PathBuf> {
    let id = crate::state::releases::pointer(host, "current")?.ok_or_else(|| {
        Error::input(crate::state::RELEASES_DIR, "no current release is kept here")
            .with_hint("run this on the first server of the cluster, where `airlock install` ran with `nodes:`")
    })?;
    let p = crate::state::releases::release_dir(&id).join("bundle").join(super::INSTALLER_ENTRY);
    if host.metadata(&p)?.is_none() {
        return Err(Error::input(p.display().to_string(), "is missing: the kept release carries no installer")
            .with_hint("uninstall each node with `airlock uninstall` on that node"));
    }
    host.real_path(&p)
}

impl ClusterRun<'_> {
    /// `airlock support-bundle --all-nodes`: each other node's own support archive
    /// (collected and redacted there by the installer sent from here), fetched over
    /// SSH. It travels base64-encoded (coreutils' `base64`): the SSH seam hands output
    /// back as text.
    pub fn fetch_support(&self, reporter: &dyn Reporter) -> Vec<(String, std::result::Result<Vec<u8>, String>)> {
        use base64::Engine;
        let installer = match Outgoing::installer(&self.installer) {
            Ok(f) => [f],
            Err(e) => {
                let why = format!("{}: {}", e.subject, e.cause);
                return self.others().map(|n| (n.name.clone(), Err(why.clone()))).collect();
            }
        };
        let ids = AtomicU64::new(1);
        let script = format!(
            "{}cd \"$D\" && ./airlock support-bundle --root \"${{R:-/}}\" -o support.tar.gz >/dev/null && \
             base64 support.tar.gz && rm -f support.tar.gz",
            prologue()
        );
        self.others()
            .map(|n| {
                let t = target(n);
                let mut sent = 0;
                let r = self.send_missing(n, &t, &installer, &mut sent, &ids, reporter).and_then(|()| {
                    let out = self.remote.exec(&t, &script, &mut std::io::empty()).map_err(|e| failed("support", e))?;
                    if out.status != 0 {
                        let cause = if out.status == 255 {
                            super::ssh_error(&t, &out.stderr).to_string()
                        } else {
                            format!(
                                "`airlock support-bundle` on the node exited with {}: {}",
                                out.status,
                                out.stderr.trim()
                            )
                        };
                        return Err(NodeResult::Failed { step: "support".into(), cause, hint: String::new() });
                    }
                    let text: String = out.stdout.split_whitespace().collect();
                    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| NodeResult::Failed {
                        step: "support".into(),
                        cause: format!("the node's archive arrived damaged: {e}"),
                        hint: String::new(),
                    })
                });
                let r = r.map_err(|f| match f {
                    NodeResult::Failed { step, cause, .. } => format!("{step}: {cause}"),
                    other => format!("{other:?}"),
                });
                (n.name.clone(), r)
            })
            .collect()
    }
}
