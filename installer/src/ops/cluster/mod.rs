//! The whole cluster from its first server: `airlock install` with `nodes:` in the
//! answers sets up every other node over SSH ([`crate::host::ssh`]).
//!
//! Two halves around the first server's own install, which runs as without `nodes`:
//!
//! 1. [`ClusterRun::prepare`], before anything is installed anywhere, on every other
//!    node in parallel: the bundle's files (each part as a part; what is there already
//!    is not sent again, a part cut off resumes: `send.rs`), the installer binary taken
//!    from the verified bundle and the site's trusted keys go into the node's incoming
//!    directory; that binary verifies the bundle there; the node's answers (derived
//!    from the site's, see [`node_answers`]) go over stdin into a 0600 file; the node's
//!    preflight runs. Any failure stops the run before the first change.
//! 2. [`ClusterRun::join`], after the first server is installed: the servers one at a
//!    time, each gated on its health before the next, then the agents in parallel.
//!    The join token goes over the SSH channel's stdin into a 0600 file and nowhere
//!    else: not into a command line, this module's results, or the journal.
//!
//! [`install::run_cluster_install`] decides the order of the whole install: the cluster
//! held ([`ClusterRun::hold`]: the first server's cluster lock, each node claimed
//! before anything is written there), every node prepared, this node installed, the
//! others joined, the incoming files removed after a full success.
//!
//! Each node's progress is journaled on the first server
//! (`/var/lib/airlock/cluster/<node>.json`), so a re-run checks the nodes that are done
//! instead of installing them again. A node that fails is reported with its cause and
//! the others go on, except that a failed server stops the servers after it (etcd
//! takes members one at a time).
//!
//! `airlock upgrade` on the first server upgrades the cluster the same way
//! ([`upgrade`]): every other node prepared first, then the servers one at a time
//! (this one first), each gated, then the agents; a failure puts every node already
//! upgraded back on the previous release, in reverse order.
//!
//! The remote side runs `sh` scripts; `AIRLOCK_TARGET_ROOT` in the node's SSH
//! environment (sshd `SetEnv`) makes it install into that target root instead of `/`,
//! as `--root` does locally (image builds, the tests).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use airlock_format::error::{Error, Result};
use airlock_format::parts::BundleFiles;
use airlock_format::report::Reporter;
use serde::{Deserialize, Serialize};

use crate::host::ssh::{sh_quote, ssh_failure, Remote, SshTarget};
use crate::host::{Host, Perms};
use crate::site::answers::{Role, SiteNode};
use crate::state;

/// Where each node's progress is journaled on the first server.
pub const CLUSTER_DIR: &str = "/var/lib/airlock/cluster";
/// Where the bundle, the installer and the keys land on a node (below its target root).
pub const INCOMING_DIR: &str = "/var/lib/airlock/incoming";
/// Test-only crash injection: abort the run right after this node is journaled done.
pub const CRASH_AFTER_NODE_ENV: &str = "AIRLOCK_TEST_CLUSTER_CRASH_AFTER";
/// Test-only pause: a cluster install stops right before its join phase, while it holds
/// the cluster (see [`ClusterRun::hold`]), creates `paused` in the directory this
/// names and goes on once `go` appears there: a second run can then be started against
/// a run that is known to be mid-way.
pub const PAUSE_BEFORE_JOIN_ENV: &str = "AIRLOCK_TEST_CLUSTER_PAUSE_BEFORE_JOIN";
/// Test-only fault injection: the health gate of this node fails, as a stand-in for a
/// node that does not come back healthy (K3s does not run under a target root).
pub const GATE_FAIL_ENV: &str = "AIRLOCK_TEST_CLUSTER_GATE_FAIL";

pub mod all_nodes;
pub mod install;
mod send;
pub mod upgrade;

use send::Outgoing;

/// What the run sets up on the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `airlock install`: each node joins the cluster.
    Install,
    /// `airlock upgrade`: each node, installed already, goes from `from_version` to the
    /// run's version with its kept answers.
    Upgrade { from_version: String },
}

/// Preflight checks a node cannot pass before the first server is installed: the join
/// token comes over the SSH channel only when the node joins, and the first server's
/// API answers only once it runs. The joining install checks both again.
const NOT_YET_CHECKS: [&str; 2] = ["join-token", "join-server-reachable"];

/// How far a node got; journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Bundle sent and verified on the node, preflight passed.
    Prepared,
    /// Installed and joined; its health gate passed.
    Joined,
}

/// A node's journal entry. Never holds the token or an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeJournal {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub version: String,
    pub phase: Phase,
    /// The run connected with `--accept-new-host-keys`.
    pub accepted_new_host_keys: bool,
}

/// What became of a node in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum NodeResult {
    /// This node: installed (or, for an upgrade, to be upgraded) by the run itself.
    Local,
    /// Ready to join: bundle verified there, preflight passed.
    Prepared,
    /// Joined by this run.
    Joined,
    /// Journaled as joined (or upgraded) by an earlier run, and healthy now: not redone.
    Checked,
    /// Upgraded by this run (and, for another node, its health gate passed).
    Upgraded,
    /// Uninstalled by this run.
    Removed,
    /// Upgraded, then put back on the previous release because a node failed.
    RolledBack,
    /// Upgraded, and putting the previous release back failed too.
    RollbackFailed {
        cause: String,
        hint: String,
    },
    /// Not attempted, and why (an earlier server failed, the run stopped before).
    Skipped {
        why: String,
    },
    Failed {
        step: String,
        cause: String,
        hint: String,
    },
}

impl NodeResult {
    pub fn ok(&self) -> bool {
        !matches!(
            self,
            NodeResult::Failed { .. }
                | NodeResult::Skipped { .. }
                | NodeResult::RolledBack
                | NodeResult::RollbackFailed { .. }
        )
    }
}

/// One row of the cluster report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub version: String,
    /// Bytes of bundle, installer and keys sent to the node by this run.
    pub bytes_sent: u64,
    /// The preflight checks the operator accepts failing on this node (`--override`
    /// without a node, or `--override NODE:CHECK` naming it); that node journals them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    #[serde(flatten)]
    pub result: NodeResult,
}

/// The cluster report: every node, this one first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterReport {
    pub version: String,
    pub accepted_new_host_keys: bool,
    pub nodes: Vec<NodeReport>,
}

impl ClusterReport {
    pub fn ok(&self) -> bool {
        self.nodes.iter().all(|n| n.result.ok())
    }
}

/// Everything a cluster run needs besides the first server's own install.
pub struct ClusterRun<'a> {
    pub remote: &'a dyn Remote,
    /// The first server's host: the journal lives there.
    pub host: &'a (dyn Host + Sync),
    /// Every node of `nodes:`, the first (this one) included.
    pub nodes: Vec<SiteNode>,
    /// The site's answers file as given.
    pub answers_text: String,
    pub bundle: PathBuf,
    /// The trusted key files the bundle was verified with here.
    pub key_files: Vec<PathBuf>,
    /// The installer binary from the verified, staged bundle.
    pub installer: PathBuf,
    pub version: String,
    /// Preflight checks the operator overrides (on every node).
    pub overrides: Vec<String>,
    pub accept_new_host_keys: bool,
    pub purpose: Purpose,
    /// The nodes this run holds (see [`ClusterRun::claim`]); `Default` to start.
    pub claimed: Claimed,
}

/// The other nodes a run has claimed, to give back when it ends.
#[derive(Debug, Default)]
pub struct Claimed(std::sync::Mutex<Vec<String>>);

/// Below a node's incoming directory: the directory whose `run` file names the cluster
/// run that holds the node (`site` line: the first server it runs on; then the run's
/// pid, start and command). Made with `mkdir`, which is atomic on every filesystem,
/// so of two runs only one can make it, with nothing on the node but `sh`.
const HOLD_DIR: &str = ".held-by";

/// What a node answers when another run holds it (exit status of the claim).
const HELD_STATUS: i32 = 4;

/// A cluster run's hold on the nodes, from [`ClusterRun::hold`] until dropped: the
/// first server's [`state::CLUSTER_LOCK`] and each node claimed so far. Dropping it
/// gives the claimed nodes back (in parallel; a node that cannot be reached keeps its
/// mark, which the next run from this first server takes over), then the lock.
pub struct ClusterHold<'r, 'a> {
    run: &'r ClusterRun<'a>,
    /// `None` when the caller keeps the lock itself ([`ClusterRun::hold_nodes`]).
    _lock: Option<crate::host::HostLock>,
}

impl Drop for ClusterHold<'_, '_> {
    fn drop(&mut self) {
        self.run.release_nodes();
    }
}

impl<'a> ClusterRun<'a> {
    /// Holds the cluster for this run: takes [`state::CLUSTER_LOCK`] on this (first)
    /// server, refused at once when another run holds it (naming it). Nodes are
    /// claimed one by one as the run reaches them ([`ClusterRun::claim`]) and given
    /// back when the hold is dropped.
    pub fn hold(&self) -> Result<ClusterHold<'_, 'a>> {
        Ok(ClusterHold { run: self, _lock: Some(state::lock_cluster(self.host)?) })
    }

    /// [`ClusterRun::hold`] for a caller that holds the lock already, and keeps it
    /// until after the hold is dropped (an upgrade takes it before it stages the
    /// installer it sends, and removes that after the run).
    pub fn hold_nodes(&self, _lock: &crate::host::HostLock) -> ClusterHold<'_, 'a> {
        ClusterHold { run: self, _lock: None }
    }
}

impl ClusterRun<'_> {
    /// Who this first server is, on the nodes' marks: its host name and the host path
    /// of its state directory (two target roots on one machine are two first servers).
    fn site_id(&self) -> String {
        let name = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = self.host.real_path(Path::new(state::STATE_DIR)).unwrap_or_else(|_| PathBuf::from(state::STATE_DIR));
        format!("{name}:{}", dir.display()).replace(['\n', '\r'], " ")
    }

    /// Claims node `n` for this run before anything is written there: makes the
    /// node's [`HOLD_DIR`] and writes who this run is into it. A node held by a run of
    /// another first server is refused, naming that run; a mark of this first server
    /// is a run that died (this server's [`state::CLUSTER_LOCK`] lets one run at a
    /// time through), and is taken over. Incoming being a symbolic link is refused
    /// here already, as the check of the incoming files refuses it.
    fn claim(&self, n: &SiteNode, t: &SshTarget) -> std::result::Result<(), NodeResult> {
        let site = self.site_id();
        let me = crate::host::LockHolder::this_process().to_string();
        let script = format!(
            "{p}for p in \"$R/var/lib/airlock\" \"$D\"; do if [ -L \"$p\" ]; then \
             echo \"$p is a symbolic link: refusing to write through it\" >&2; exit 3; fi; done\n\
             mkdir -p \"$D\" || exit 1\nH=\"$D\"/{h}\n\
             if [ -L \"$H\" ]; then echo \"$H is a symbolic link: refusing to write through it\" >&2; exit 3; fi\n\
             first=; [ -f \"$H/run\" ] && read -r first < \"$H/run\"\n\
             if mkdir \"$H\" 2>/dev/null || [ \"$first\" = {site} ]; then\n\
             printf '%s\\n' {site} > \"$H/.run.partial\" && printf '%s' {me} >> \"$H/.run.partial\" && \
             mv -f \"$H/.run.partial\" \"$H/run\" && exit 0\nexit 1\nfi\n\
             cat \"$H/run\" 2>/dev/null\nexit {HELD_STATUS}\n",
            p = prologue(),
            h = sh_quote(HOLD_DIR),
            site = sh_quote(&format!("site {site}")),
            me = sh_quote(&me),
        );
        let out = self.remote.exec(t, &script, &mut std::io::empty()).map_err(|e| failed("claim", e))?;
        if out.status == 255 {
            return Err(failed("claim", ssh_error(t, &out.stderr)));
        }
        if out.status == HELD_STATUS {
            let holder = crate::host::LockHolder::parse(&out.stdout);
            let from = out.stdout.lines().find_map(|l| l.strip_prefix("site ")).unwrap_or("another first server");
            return Err(failed(
                "claim",
                Error::input(
                    format!("node {}", n.name),
                    format!("{holder:#} from {from} holds this node; two cluster runs must not change a node at once"),
                )
                .with_hint(format!(
                    "wait for that run to finish, then run the command again; if that run is gone for good (its \
                     first server failed), remove {INCOMING_DIR}/{HOLD_DIR} on {}",
                    n.name
                )),
            ));
        }
        if out.status != 0 {
            let said = out.stderr.trim();
            return Err(NodeResult::Failed {
                step: "claim".into(),
                cause: if said.is_empty() {
                    format!("claiming {INCOMING_DIR} on the node exited with {}", out.status)
                } else {
                    tail(said, 5)
                },
                hint: format!("nothing was written on {}; fix that, then run the command again", n.name),
            });
        }
        self.claimed.0.lock().unwrap_or_else(|e| e.into_inner()).push(n.name.clone());
        Ok(())
    }

    /// Forgets that this run holds node `name`, whose mark went with its incoming
    /// directory.
    fn unclaim(&self, name: &str) {
        self.claimed.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|c| c != name);
    }

    /// Gives back every node this run claimed: removes its mark where the mark is this
    /// first server's. In parallel; what fails is left to the next run.
    fn release_nodes(&self) {
        let names = std::mem::take(&mut *self.claimed.0.lock().unwrap_or_else(|e| e.into_inner()));
        let site = sh_quote(&format!("site {}", self.site_id()));
        let script = format!(
            "{p}H=\"$D\"/{h}; first=; [ -f \"$H/run\" ] && read -r first < \"$H/run\"; \
             if [ \"$first\" = {site} ]; then rm -rf -- \"$H\"; fi; true",
            p = prologue(),
            h = sh_quote(HOLD_DIR),
        );
        std::thread::scope(|s| {
            for n in self.others().filter(|n| names.contains(&n.name)) {
                let script = &script;
                s.spawn(move || {
                    let _ = self.remote.exec(&target(n), script, &mut std::io::empty());
                });
            }
        });
    }

    /// The test-only pause of [`PAUSE_BEFORE_JOIN_ENV`]; nothing without it.
    pub fn pause_for_test(&self) {
        let Some(dir) = std::env::var_os(PAUSE_BEFORE_JOIN_ENV).map(PathBuf::from) else { return };
        // A test's own directory outside the target root: not the host's to write.
        #[allow(clippy::disallowed_methods)]
        let _ = std::fs::write(dir.join("paused"), b"");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while !dir.join("go").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn others(&self) -> impl Iterator<Item = &SiteNode> {
        self.nodes.iter().skip(1)
    }

    fn report(&self, rows: Vec<NodeReport>) -> ClusterReport {
        self.report_with(NodeResult::Local, &self.version, rows)
    }

    fn report_with(&self, first_result: NodeResult, first_version: &str, rows: Vec<NodeReport>) -> ClusterReport {
        let first = &self.nodes[0];
        let mut nodes = vec![NodeReport {
            name: first.name.clone(),
            role: first.role,
            address: first.address.to_string(),
            version: first_version.to_string(),
            bytes_sent: 0,
            overrides: self.node_overrides(first),
            result: first_result,
        }];
        nodes.extend(rows);
        ClusterReport { version: self.version.clone(), accepted_new_host_keys: self.accept_new_host_keys, nodes }
    }

    fn row(&self, n: &SiteNode, bytes_sent: u64, result: NodeResult) -> NodeReport {
        NodeReport {
            name: n.name.clone(),
            role: n.role,
            address: n.address.to_string(),
            version: self.version.clone(),
            bytes_sent,
            overrides: self.node_overrides(n),
            result,
        }
    }

    /// The preflight overrides that apply to node `n` (see [`overrides_for`]); the
    /// given ones were checked against `nodes` when the run was planned.
    fn node_overrides(&self, n: &SiteNode) -> Vec<String> {
        overrides_for(&self.overrides, &self.nodes, &n.name).unwrap_or_default()
    }

    /// Sends, verifies and preflights on every other node, in parallel. Installs
    /// nothing anywhere.
    pub fn prepare(&self, reporter: &dyn Reporter) -> Result<ClusterReport> {
        let files = self.outgoing()?;
        // An upgrade runs with the answers each node kept at its install.
        let answers: Vec<String> = match self.purpose {
            Purpose::Install => (1..self.nodes.len())
                .map(|i| node_answers(&self.answers_text, &self.nodes, i))
                .collect::<Result<_>>()?,
            Purpose::Upgrade { .. } => vec![String::new(); self.nodes.len() - 1],
        };
        let ids = AtomicU64::new(1);
        let rows = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .others()
                .zip(&answers)
                .map(|(n, a)| {
                    let (files, ids) = (&files, &ids);
                    s.spawn(move || {
                        let mut sent = 0;
                        let r = self.prepare_node(n, files, a, &mut sent, ids, reporter);
                        self.row(n, sent, r.unwrap_or_else(|f| f))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a node's thread does not panic")).collect()
        });
        Ok(self.report(rows))
    }

    fn prepare_node(
        &self,
        n: &SiteNode,
        files: &[Outgoing],
        answers: &str,
        sent: &mut u64,
        ids: &AtomicU64,
        reporter: &dyn Reporter,
    ) -> std::result::Result<NodeResult, NodeResult> {
        let t = target(n);
        self.claim(n, &t)?;
        // Joined (or upgraded) by an earlier run of this release: checked, not prepared
        // again (its preflight would now find the install it made). Its gate runs the
        // installer, which a successful run removed with the rest of the incoming files.
        if self.joined_earlier(n).map_err(|e| failed("journal", e))? {
            let installer: Vec<Outgoing> = files.iter().filter(|f| f.kind == send::Kind::Installer).cloned().collect();
            self.send_missing(n, &t, &installer, sent, ids, reporter)?;
            self.gate(&t).map_err(|e| failed("health", e))?;
            return Ok(NodeResult::Checked);
        }
        self.send_and_verify(n, &t, files, sent, ids, reporter)?;
        if let Purpose::Upgrade { .. } = self.purpose {
            // The upgrade's own preflight, with the answers the node kept; its journal
            // changes only once it is upgraded.
            let mut args = vec!["--mode".to_string(), "upgrade".to_string()];
            for o in &self.node_overrides(n) {
                args.extend(["--override".to_string(), o.clone()]);
            }
            self.run_checked(&t, &self.airlock_plain_script("preflight", &args), &mut std::io::empty(), "preflight")?;
            return Ok(NodeResult::Prepared);
        }
        let write = format!(
            "{}umask 077; cat > \"$D/.answers.yaml.partial\" && mv -f \"$D/.answers.yaml.partial\" \"$D/answers.yaml\"",
            prologue()
        );
        self.run_checked(&t, &write, &mut answers.as_bytes(), "answers")?;
        self.run_checked(
            &t,
            &self.airlock_script("preflight", &preflight_overrides(&self.node_overrides(n))),
            &mut std::io::empty(),
            "preflight",
        )?;
        self.journal(n, Phase::Prepared).map_err(|e| failed("journal", e))?;
        Ok(NodeResult::Prepared)
    }

    /// Installs and joins every other node: servers one at a time, each gated, then
    /// agents in parallel. `token`: the cluster's join token, read from the first
    /// server's install.
    pub fn join(&self, token: &[u8], reporter: &dyn Reporter) -> Result<ClusterReport> {
        let mut rows: Vec<NodeReport> = Vec::new();
        let mut stop: Option<String> = None;
        for n in self.others().filter(|n| n.role == Role::Server) {
            let r = match &stop {
                Some(why) => NodeResult::Skipped { why: why.clone() },
                None => self.join_node(n, token, reporter).unwrap_or_else(|f| f),
            };
            if !r.ok() && stop.is_none() {
                stop = Some(format!("server {} did not join; etcd takes members one at a time", n.name));
            }
            rows.push(self.row(n, 0, r));
        }
        let agents: Vec<NodeReport> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .others()
                .filter(|n| n.role == Role::Agent)
                .map(|n| s.spawn(move || self.row(n, 0, self.join_node(n, token, reporter).unwrap_or_else(|f| f))))
                .collect();
            handles.into_iter().map(|h| h.join().expect("a node's thread does not panic")).collect()
        });
        rows.extend(agents);
        Ok(self.report(rows))
    }

    fn join_node(&self, n: &SiteNode, token: &[u8], _: &dyn Reporter) -> std::result::Result<NodeResult, NodeResult> {
        let t = target(n);
        if self.joined_earlier(n).map_err(|e| failed("journal", e))? && self.gate(&t).is_ok() {
            return Ok(NodeResult::Checked);
        }
        let token_path = state::CLUSTER_TOKEN_PATH;
        let write_token = format!(
            "{p}umask 077; T=\"$R\"{tp}; mkdir -p \"${{T%/*}}\" && cat > \"$T.partial\" && mv -f \"$T.partial\" \"$T\"",
            p = prologue(),
            tp = sh_quote(token_path),
        );
        self.run_checked(&t, &write_token, &mut &token[..], "token")?;
        // The node's own preflight runs again in its join, with the same overrides,
        // which its install journal records.
        let mut args = vec!["--yes".to_string()];
        for o in self.node_overrides(n) {
            args.extend(["--override".to_string(), o]);
        }
        self.run_checked(&t, &self.airlock_script("join", &args), &mut std::io::empty(), "join")?;
        self.gate(&t).map_err(|e| failed("health", e))?;
        self.journal(n, Phase::Joined).map_err(|e| failed("journal", e))?;
        if std::env::var(CRASH_AFTER_NODE_ENV).ok().as_deref() == Some(n.name.as_str()) {
            std::process::abort();
        }
        Ok(NodeResult::Joined)
    }

    /// After a run in which every node succeeded: removes the incoming directory (the
    /// bundle, the installer, the keys and the answers file) on every other node. After a
    /// failure it stays, so that a re-run sends nothing again. Returns the nodes where
    /// that failed, with the cause, for warnings: nothing depends on it.
    pub fn remove_incoming(&self) -> Vec<(String, String)> {
        let script = format!("{}rm -rf -- \"$D\"", prologue());
        let mut out = Vec::new();
        for n in self.others() {
            let t = target(n);
            let r = self.run_checked(&t, &script, &mut std::io::empty(), "clean up");
            if r.is_ok() {
                // The node's mark went with the directory.
                self.unclaim(&n.name);
            }
            if let Err(r) = r {
                let cause = match r {
                    NodeResult::Failed { cause, .. } => cause,
                    other => format!("{other:?}"),
                };
                out.push((n.name.clone(), cause));
            }
        }
        out
    }

    /// The health gate before the next server: the node's own `airlock status`, which
    /// on a live node asks its service and the API server, under a target root what
    /// the install laid out.
    fn gate(&self, t: &SshTarget) -> Result<()> {
        if std::env::var(GATE_FAIL_ENV).ok().as_deref() == Some(t.name.as_str()) {
            return Err(Error::input(format!("node {}", t.name), "is not healthy (injected test fault)")
                .with_hint(format!("{GATE_FAIL_ENV} names this node: a stand-in for a node that does not come up")));
        }
        let script = format!("{}cd \"$D\" && ./airlock status --root \"${{R:-/}}\"", prologue());
        let out = self.remote.exec(t, &script, &mut std::io::empty())?;
        if out.status == 255 {
            return Err(ssh_error(t, &out.stderr));
        }
        if out.status != 0 {
            return Err(Error::input(format!("node {}", t.name), "is not healthy after joining")
                .with_hint(format!("its `airlock status` says:\n{}", tail(&out.stdout, 12))));
        }
        Ok(())
    }

    fn outgoing(&self) -> Result<Vec<Outgoing>> {
        let files = BundleFiles::locate(&self.bundle)?;
        let mut out = Vec::new();
        for p in &files.parts {
            out.push(Outgoing::new(p, file_name(p)?, send::Kind::Part)?);
        }
        let base = file_name(&files.base)?;
        let dir = files.base.parent().unwrap_or(Path::new("."));
        for ext in [".sha256", ".sha256.minisig"] {
            let p = dir.join(format!("{base}{ext}"));
            if p.is_file() {
                out.push(Outgoing::new(&p, format!("{base}{ext}"), send::Kind::Small)?);
            }
        }
        for (i, k) in self.key_files.iter().enumerate() {
            out.push(Outgoing::new(k, format!("key{i}.pub"), send::Kind::Small)?);
        }
        out.push(Outgoing::installer(&self.installer)?);
        Ok(out)
    }

    fn remote_bundle(&self) -> String {
        let files = BundleFiles::locate(&self.bundle).ok();
        let name = files.and_then(|f| f.parts.first().and_then(|p| file_name(p).ok())).unwrap_or_default();
        sh_quote(&name)
    }

    fn pubkey_args(&self) -> String {
        (0..self.key_files.len()).map(|i| format!("--pubkey key{i}.pub")).collect::<Vec<_>>().join(" ")
    }

    /// `airlock CMD BUNDLE --pubkey.. --answers answers.yaml --root R EXTRA` on the node.
    fn airlock_script(&self, cmd: &str, extra: &[String]) -> String {
        let mut args = vec!["--answers".to_string(), "answers.yaml".to_string()];
        args.extend_from_slice(extra);
        self.airlock_plain_script(cmd, &args)
    }

    /// `airlock CMD BUNDLE --pubkey.. --root R EXTRA` on the node (its kept answers).
    fn airlock_plain_script(&self, cmd: &str, extra: &[String]) -> String {
        let extra: Vec<String> = extra.iter().map(|e| sh_quote(e)).collect();
        format!(
            "{}cd \"$D\" && ./airlock {cmd} {} {} --root \"${{R:-/}}\" {}",
            prologue(),
            self.remote_bundle(),
            self.pubkey_args(),
            extra.join(" ")
        )
    }

    fn run_checked(
        &self,
        t: &SshTarget,
        script: &str,
        stdin: &mut (dyn Read + Send),
        step: &str,
    ) -> std::result::Result<(), NodeResult> {
        let out = self.remote.exec(t, script, stdin).map_err(|e| failed(step, e))?;
        if out.status == 255 {
            return Err(failed(step, ssh_error(t, &out.stderr)));
        }
        if out.status != 0 {
            let said = tail(&format!("{}{}", out.stdout, out.stderr), 15);
            return Err(NodeResult::Failed {
                step: step.to_string(),
                cause: format!("`airlock {step}` on the node exited with {}", out.status),
                hint: said,
            });
        }
        Ok(())
    }

    fn journal(&self, n: &SiteNode, phase: Phase) -> Result<()> {
        let j = NodeJournal {
            name: n.name.clone(),
            role: n.role,
            address: n.address.to_string(),
            version: self.version.clone(),
            phase,
            accepted_new_host_keys: self.accept_new_host_keys,
        };
        self.write_journal(&j)
    }

    fn write_journal(&self, j: &NodeJournal) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(j).expect("a journal serialises");
        text.push(b'\n');
        self.host.write_file(&journal_path(&j.name), &mut &text[..], Perms::mode(0o644)).map(drop)
    }

    fn joined_earlier(&self, n: &SiteNode) -> Result<bool> {
        let j = self.read_journal(&n.name)?;
        Ok(j.is_some_and(|j| j.phase == Phase::Joined && j.version == self.version))
    }

    fn read_journal(&self, name: &str) -> Result<Option<NodeJournal>> {
        let path = journal_path(name);
        let Some(bytes) = self.host.read_file(&path)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(path.display().to_string(), e.to_string()).with_hint("remove it to start that node over")
        })
    }
}

/// The installer binary of a bundle, verified with the whole bundle.
pub struct VerifiedInstaller {
    pub path: PathBuf,
    pub manifest: airlock_format::manifest::Manifest,
}

/// Where an upgrade keeps the new installer while it sends it to the nodes: staging,
/// which the next run clears whatever a crash left there.
pub const INSTALLER_STAGING: &str = "/var/lib/airlock/staging/cluster-installer";

/// Entry path of the installer binary inside a bundle.
pub const INSTALLER_ENTRY: &str = "installer/airlock";

/// Verifies the whole bundle (signature, every entry) and keeps only its installer
/// binary, in [`INSTALLER_STAGING`] (emptied first): what an upgrade sends to the other
/// nodes before this node is upgraded (the install takes it from its own staging).
pub fn verified_installer(
    host: &dyn crate::host::Host,
    files: &BundleFiles,
    trusted: &[airlock_format::minisign::PublicKey],
    reporter: &dyn Reporter,
) -> Result<VerifiedInstaller> {
    use airlock_format::manifest::Entry;
    struct OnlyInstaller {
        path: PathBuf,
        verified: bool,
    }
    impl airlock_format::read::EntrySink for OnlyInstaller {
        fn open(&mut self, entry: &Entry) -> Result<Option<Box<dyn std::io::Write>>> {
            if entry.path != INSTALLER_ENTRY {
                return Ok(None);
            }
            use std::os::unix::fs::OpenOptionsExt;
            // Inside the staging directory the host resolved (symlink-safe, below the
            // root), as the verifying extractor writes its staging.
            #[allow(clippy::disallowed_methods)]
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            Ok(Some(Box::new(f)))
        }
        fn finish(&mut self, entry: &Entry, verified: bool) -> Result<()> {
            if entry.path == INSTALLER_ENTRY {
                self.verified = verified;
            }
            Ok(())
        }
    }
    let (dir, _) = crate::bundle::staging::staging_dir(host, Path::new(INSTALLER_STAGING), false)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        #[allow(clippy::disallowed_methods)]
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let mut sink = OnlyInstaller { path: dir.join("airlock"), verified: false };
    let outcome = airlock_format::read::read_bundle(files, trusted, &mut sink, reporter)?;
    if let Some(e) = crate::bundle::staging::damaged(&outcome) {
        return Err(e);
    }
    if !sink.verified {
        return Err(Error::input(files.base.display().to_string(), "carries no installer binary (installer/airlock)")
            .with_hint(
            "the other nodes run the installer from the bundle: build it with `airlock-bundler create --installer` \
                 (a delta bundle must carry it too)",
        ));
    }
    Ok(VerifiedInstaller { path: sink.path, manifest: outcome.manifest })
}

/// Every node journaled on this (first) server, by name; a node not joined yet, or a
/// journal that cannot be read, is a warning for `airlock status`.
pub fn journaled_nodes(host: &dyn Host, warnings: &mut Vec<String>) -> Vec<NodeJournal> {
    let dir = Path::new(CLUSTER_DIR);
    let mut out = Vec::new();
    for e in host.list_dir(dir).ok().flatten().unwrap_or_default() {
        let Some(name) = e.name.strip_suffix(".json") else { continue };
        let path = dir.join(&e.name);
        match host.read_file(&path).map(|b| b.map(|b| serde_json::from_slice::<NodeJournal>(&b))) {
            Ok(Some(Ok(j))) => {
                if j.phase != Phase::Joined {
                    warnings.push(format!(
                        "node {name} has not joined the cluster yet (it got as far as: {:?}); run the install again",
                        j.phase
                    ));
                }
                out.push(j);
            }
            Ok(None) => {}
            Ok(Some(Err(err))) => warnings.push(format!("{}: unreadable node journal: {err}", path.display())),
            Err(err) => warnings.push(format!("{}: {}", path.display(), err.cause)),
        }
    }
    out
}

/// The preflight overrides of `given` (`--override` as the operator gave them) that
/// apply to node `node`: every `CHECK` without a node, and every `NODE:CHECK` naming
/// it. A `NODE:` that names no node of `nodes` (or, without `nodes:`, not `node`
/// itself) is an answer error naming it: an override meant for one node never lands
/// on another or silently on none.
pub fn overrides_for(given: &[String], nodes: &[SiteNode], node: &str) -> Result<Vec<String>> {
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    if names.is_empty() {
        names.push(node);
    }
    let mut out = Vec::new();
    for o in given {
        match o.split_once(':') {
            None => out.push(o.clone()),
            Some((name, id)) if names.contains(&name) => {
                if name == node {
                    out.push(id.to_string());
                }
            }
            Some((name, _)) => {
                return Err(Error::input(
                    format!("--override {o}"),
                    format!("names node `{name}`, which is not a node of the answers' `nodes`"),
                )
                .with_hint(format!(
                    "name one of: {} (`--override NODE:CHECK`), or give the check alone to accept it on every node",
                    names.join(", ")
                )))
            }
        }
    }
    Ok(out)
}

/// Every remote script starts here: the node's target root and incoming directory.
fn prologue() -> String {
    format!("R=\"${{AIRLOCK_TARGET_ROOT:-}}\"; D=\"$R\"{}; ", sh_quote(INCOMING_DIR))
}

fn journal_path(name: &str) -> PathBuf {
    Path::new(CLUSTER_DIR).join(format!("{name}.json"))
}

fn preflight_overrides(given: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in given.iter().map(String::as_str).chain(NOT_YET_CHECKS) {
        out.extend(["--override".to_string(), id.to_string()]);
    }
    out
}

fn target(n: &SiteNode) -> SshTarget {
    SshTarget {
        name: n.name.clone(),
        address: n.address.to_string(),
        user: n.ssh.user.clone(),
        port: n.ssh.port,
        identity_file: n.ssh.identity_file.clone(),
        jump: n.ssh.jump.clone(),
    }
}

fn ssh_error(t: &SshTarget, stderr: &str) -> Error {
    let (cause, hint) = ssh_failure(stderr);
    Error::input(format!("node {} ({})", t.name, t.address), format!("{cause}: {}", stderr.trim()))
        .with_hint(hint.to_string())
}

fn failed(step: &str, e: Error) -> NodeResult {
    NodeResult::Failed {
        step: step.to_string(),
        cause: format!("{}: {}", e.subject, e.cause),
        hint: e.hint.clone().unwrap_or_default(),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::input(p.display().to_string(), "has no file name").with_hint("name the bundle file"))
}

/// The answers of node `i` (from 1) of `nodes`: the site's answers without `nodes`,
/// with its own `node`, the `ha` members every node lists alike, `join` to the first
/// server with the token at the path every node keeps it, and its `data_dir`.
pub fn node_answers(site: &str, nodes: &[SiteNode], i: usize) -> Result<String> {
    use serde_yaml::{Mapping, Value};
    let mut doc: Mapping = serde_yaml::from_str(site)
        .map_err(|e| Error::input("answers", format!("cannot be read again: {e}")).with_hint("check the file"))?;
    let key = |k: &str| Value::String(k.to_string());
    let n = &nodes[i];
    doc.remove(key("nodes"));
    let mut node = Mapping::new();
    node.insert(key("name"), key(&n.name));
    node.insert(key("ip"), key(&n.node_ip.to_string()));
    node.insert(key("role"), key(n.role.as_str()));
    doc.insert(key("node"), Value::Mapping(node));
    let members = |role: Role| -> Value {
        Value::Sequence(
            nodes
                .iter()
                .filter(|m| m.role == role)
                .map(|m| {
                    let mut row = Mapping::new();
                    row.insert(key("name"), key(&m.name));
                    row.insert(key("ip"), key(&m.node_ip.to_string()));
                    Value::Mapping(row)
                })
                .collect(),
        )
    };
    let mut ha = Mapping::new();
    ha.insert(key("servers"), members(Role::Server));
    if nodes.iter().any(|m| m.role == Role::Agent) {
        ha.insert(key("agents"), members(Role::Agent));
    }
    doc.insert(key("ha"), Value::Mapping(ha));
    let mut join = Mapping::new();
    join.insert(key("server"), key(&nodes[0].node_ip.to_string()));
    join.insert(key("token_file"), key(state::CLUSTER_TOKEN_PATH));
    doc.insert(key("join"), Value::Mapping(join));
    if let Some(d) = &n.data_dir {
        doc.insert(key("data_dir"), key(&d.display().to_string()));
    }
    // The first server makes the site PKI; the others get its CA with the cluster.
    doc.remove(key("pki"));
    Ok(serde_yaml::to_string(&doc).expect("a YAML mapping serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CommandOutput, RootedHost};
    use crate::site::answers::{Address, SshLogin};
    use std::sync::Mutex;

    const TOKEN: &[u8] = b"K10cafe::server:0123456789abcdef\n";

    /// A stand-in for the other nodes' sshd: records every call (node, script, what came
    /// on stdin) and answers as a healthy node would, except that `failing` nodes fail
    /// their `airlock join` and `airlock uninstall`.
    struct FakeNodes {
        calls: Mutex<Vec<(String, String, Vec<u8>)>>,
        failing: Vec<&'static str>,
        /// Nodes whose `airlock status` (the health gate) fails.
        unhealthy: Vec<&'static str>,
        /// What every node answers to the check of its incoming files (`sha256sum` lines).
        incoming: String,
    }

    impl Remote for FakeNodes {
        fn exec(&self, t: &SshTarget, script: &str, stdin: &mut (dyn Read + Send)) -> Result<CommandOutput> {
            let mut input = Vec::new();
            stdin.read_to_end(&mut input).unwrap();
            self.calls.lock().unwrap().push((t.name.clone(), script.to_string(), input));
            let fails = script.contains("./airlock join") || script.contains("./airlock uninstall");
            if fails && self.failing.contains(&t.name.as_str()) {
                return Ok(CommandOutput::exit(1, "error: the node refused"));
            }
            if script.contains("./airlock status") && self.unhealthy.contains(&t.name.as_str()) {
                return Ok(CommandOutput::exit(11, "node NotReady"));
            }
            if script.contains("sha256sum --") {
                return Ok(CommandOutput::ok(&self.incoming));
            }
            Ok(CommandOutput::ok(""))
        }
    }

    fn node(name: &str, octet: u8, role: Role) -> SiteNode {
        let ip: std::net::IpAddr = format!("192.0.2.{octet}").parse().unwrap();
        SiteNode {
            name: name.into(),
            address: Address::Ip(ip),
            role,
            ssh: SshLogin::default(),
            node_ip: ip,
            data_dir: None,
        }
    }

    fn run_with<'a>(remote: &'a dyn Remote, host: &'a RootedHost) -> ClusterRun<'a> {
        ClusterRun {
            remote,
            host,
            nodes: vec![
                node("s1", 11, Role::Server),
                node("s2", 12, Role::Server),
                node("s3", 13, Role::Server),
                node("w1", 21, Role::Agent),
                node("w2", 22, Role::Agent),
            ],
            answers_text: "profile: ha\nnode: {name: s1, ip: 192.0.2.11}\n".into(),
            bundle: "/nonexistent/demo.airlock".into(),
            key_files: vec![],
            installer: "/nonexistent/airlock".into(),
            version: "1.0.0".into(),
            overrides: vec![],
            accept_new_host_keys: false,
            purpose: Purpose::Install,
            claimed: Claimed::default(),
        }
    }

    #[test]
    fn cluster_join_sends_the_token_only_on_stdin_servers_one_at_a_time_then_agents() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote =
            FakeNodes { calls: Mutex::new(Vec::new()), failing: vec![], unhealthy: vec![], incoming: String::new() };
        let report = run_with(&remote, &host).join(TOKEN, &airlock_format::report::Silent).unwrap();
        assert!(report.ok(), "{report:?}");
        let calls = remote.calls.lock().unwrap();
        let token = std::str::from_utf8(TOKEN).unwrap().trim();
        for (node, script, input) in calls.iter() {
            assert!(!script.contains(token), "the token is in the command for {node}");
            if !input.is_empty() {
                assert!(script.contains("umask 077") && script.contains("cluster-token"), "{script}");
                assert_eq!(input, TOKEN);
            }
        }
        // s2 is joined and gated before s3 gets its token; the agents come last.
        let order: Vec<&str> =
            calls.iter().filter(|(_, s, _)| s.contains("./airlock join")).map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(&order[..2], ["s2", "s3"]);
        let s2_gate = calls.iter().position(|(n, s, _)| n == "s2" && s.contains("./airlock status")).unwrap();
        let s3_token = calls.iter().position(|(n, _, i)| n == "s3" && !i.is_empty()).unwrap();
        assert!(s2_gate < s3_token, "s3 got the token before s2's gate");
        let journal = std::fs::read_to_string(root.path().join("var/lib/airlock/cluster/s2.json")).unwrap();
        assert!(journal.contains("\"phase\": \"joined\"") && !journal.contains(token), "{journal}");
        let shown = serde_json::to_string(&report).unwrap();
        assert!(!shown.contains(token));
    }

    #[test]
    fn cluster_join_stops_the_servers_after_a_failed_one_and_still_joins_the_agents() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote = FakeNodes {
            calls: Mutex::new(Vec::new()),
            failing: vec!["s2", "w1"],
            unhealthy: vec![],
            incoming: String::new(),
        };
        let report = run_with(&remote, &host).join(TOKEN, &airlock_format::report::Silent).unwrap();
        let result = |name: &str| report.nodes.iter().find(|n| n.name == name).unwrap().result.clone();
        assert!(matches!(result("s2"), NodeResult::Failed { ref step, .. } if step == "join"), "{:?}", result("s2"));
        assert!(matches!(result("s3"), NodeResult::Skipped { ref why } if why.contains("s2")), "{:?}", result("s3"));
        assert!(matches!(result("w1"), NodeResult::Failed { .. }));
        assert_eq!(result("w2"), NodeResult::Joined, "one agent failing does not stop another");
        assert!(!report.ok());
        let calls = remote.calls.lock().unwrap();
        assert!(!calls.iter().any(|(n, _, _)| n == "s3"), "s3 was contacted after s2 failed");
    }

    #[test]
    fn cluster_upgrade_stops_at_a_failed_gate_and_rolls_the_upgraded_nodes_back_last_first() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote = FakeNodes {
            calls: Mutex::new(Vec::new()),
            failing: vec![],
            unhealthy: vec!["s3"],
            incoming: String::new(),
        };
        let mut run = run_with(&remote, &host);
        run.version = "1.1.0".into();
        run.purpose = Purpose::Upgrade { from_version: "1.0.0".into() };
        let up = run.upgrade_others(&airlock_format::report::Silent);
        assert!(!up.ok());
        assert_eq!(up.first_failure().map(|(n, _)| n), Some("s3"));
        assert_eq!(up.on_new_release, ["s2", "s3"], "s3's own upgrade finished before its gate failed");
        let result = |name: &str| up.rows.iter().find(|n| n.name == name).unwrap().result.clone();
        assert_eq!(result("s2"), NodeResult::Upgraded);
        assert!(
            matches!(result("w1"), NodeResult::Skipped { .. }) && matches!(result("w2"), NodeResult::Skipped { .. })
        );
        let journal = || std::fs::read_to_string(root.path().join("var/lib/airlock/cluster/s2.json")).unwrap();
        assert!(journal().contains("\"version\": \"1.1.0\""), "{}", journal());

        let back: Vec<String> = up.on_new_release.iter().rev().cloned().collect();
        let rolled = run.roll_back_others(&back);
        assert_eq!(rolled, [("s3".to_string(), NodeResult::RolledBack), ("s2".to_string(), NodeResult::RolledBack)]);
        let calls = remote.calls.lock().unwrap();
        let rollbacks: Vec<&str> =
            calls.iter().filter(|(_, s, _)| s.contains("--rollback")).map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(rollbacks, ["s3", "s2"]);
        assert!(!calls.iter().any(|(n, _, _)| n.starts_with('w')), "an agent was contacted");
        assert!(journal().contains("\"version\": \"1.0.0\""), "{}", journal());
        let report = run.upgrade_report(NodeResult::RolledBack, up.rows.clone(), &rolled);
        let row = |name: &str| report.nodes.iter().find(|n| n.name == name).unwrap().clone();
        assert!(matches!(row("s3").result, NodeResult::Failed { ref step, .. } if step == "health"));
        assert_eq!((row("s2").result, row("s2").version.as_str()), (NodeResult::RolledBack, "1.0.0"));
        assert_eq!(row("s1").version, "1.0.0");
    }

    /// This node in a cluster upgrade: records when its steps ran, counted in calls to
    /// the other nodes so far, and fails its rollback when told to.
    struct FakeHere<'a> {
        remote: &'a FakeNodes,
        upgrade_fails: bool,
        rollback_fails: bool,
        upgraded_at: Option<usize>,
        rolled_back_at: Option<usize>,
    }

    impl upgrade::ThisNode for FakeHere<'_> {
        type Upgraded = ();
        type Failure = &'static str;
        fn progress(&self) -> Box<dyn Reporter> {
            Box::new(airlock_format::report::Silent)
        }
        fn prepared(&mut self, _: &ClusterReport) {}
        fn upgrade(&mut self) -> std::result::Result<(), &'static str> {
            self.upgraded_at = Some(self.remote.calls.lock().unwrap().len());
            if self.upgrade_fails {
                return Err("this node's upgrade failed");
            }
            Ok(())
        }
        fn roll_back(&mut self) -> NodeResult {
            self.rolled_back_at = Some(self.remote.calls.lock().unwrap().len());
            if self.rollback_fails {
                return NodeResult::RollbackFailed { cause: "the backup is gone".into(), hint: String::new() };
            }
            NodeResult::RolledBack
        }
    }

    /// A cluster upgrade to 1.1.0 from 1.0.0 over a bundle and installer that exist, and
    /// a fake node that answers the check of its incoming files with their digests.
    // The bundle and installer are the operator's files outside any target root.
    #[allow(clippy::disallowed_methods)]
    fn cluster_upgrade_with(
        unhealthy: Vec<&'static str>,
        upgrade_fails: bool,
        rollback_fails: bool,
    ) -> (upgrade::ClusterUpgrade<(), &'static str>, FakeNodes, Option<usize>, Option<usize>) {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let (_files, bundle, installer, incoming) = sent_files();
        let remote = FakeNodes { calls: Mutex::new(Vec::new()), failing: vec![], unhealthy, incoming };
        let mut here =
            FakeHere { remote: &remote, upgrade_fails, rollback_fails, upgraded_at: None, rolled_back_at: None };
        let mut run = run_with(&remote, &host);
        run.bundle = bundle;
        run.installer = installer;
        run.version = "1.1.0".into();
        run.purpose = Purpose::Upgrade { from_version: "1.0.0".into() };
        let lock = state::lock_cluster(&host).unwrap();
        let outcome = upgrade::run_cluster_upgrade(&run, &lock, &mut here).unwrap();
        // Every node claimed is given back when the run ends, whichever way it ended.
        let claimed = remote.calls.lock().unwrap().iter().filter(|(_, s, _)| s.contains("mkdir \"$H\"")).count();
        let released = remote.calls.lock().unwrap().iter().filter(|(_, s, _)| s.contains("rm -rf -- \"$H\"")).count();
        let removed = remote.calls.lock().unwrap().iter().filter(|(_, s, _)| s.contains("rm -rf -- \"$D\"")).count();
        assert_eq!(claimed, released + removed, "a claimed node was not given back");
        drop(lock);
        let (upgraded_at, rolled_back_at) = (here.upgraded_at, here.rolled_back_at);
        (outcome, remote, upgraded_at, rolled_back_at)
    }

    #[test]
    fn cluster_upgrade_puts_this_node_back_last_and_exits_rollback_failed_when_its_rollback_fails() {
        let (outcome, remote, upgraded_at, rolled_back_at) = cluster_upgrade_with(vec!["s3"], false, true);
        let calls = remote.calls.lock().unwrap();
        let first_node_upgrade = calls.iter().position(|(_, s, _)| s.contains("./airlock upgrade")).unwrap();
        assert!(upgraded_at.unwrap() <= first_node_upgrade, "another node was upgraded before this one");
        let rollbacks: Vec<usize> =
            calls.iter().enumerate().filter(|(_, (_, s, _))| s.contains("--rollback")).map(|(i, _)| i).collect();
        assert_eq!(rollbacks.len(), 2, "s3 and s2 are put back");
        assert!(rolled_back_at.unwrap() > *rollbacks.last().unwrap(), "this node was put back before the others");
        assert_eq!(outcome.rollback_exit_code(), Some(crate::ops::upgrade::EXIT_ROLLBACK_FAILED));
        let upgrade::ClusterUpgrade::RolledBack { failed_node, all_back, report, .. } = outcome else {
            panic!("not rolled back")
        };
        assert_eq!((failed_node.as_str(), all_back), ("s3", false));
        assert!(matches!(report.nodes[0].result, NodeResult::RollbackFailed { .. }), "{:?}", report.nodes[0]);
    }

    #[test]
    fn cluster_upgrade_exits_rolled_back_when_every_node_went_back() {
        let (outcome, ..) = cluster_upgrade_with(vec!["s3"], false, false);
        assert_eq!(outcome.rollback_exit_code(), Some(crate::ops::upgrade::EXIT_ROLLED_BACK));
        let upgrade::ClusterUpgrade::RolledBack { all_back, report, .. } = outcome else { panic!("not rolled back") };
        assert!(all_back);
        assert_eq!((&report.nodes[0].result, report.nodes[0].version.as_str()), (&NodeResult::RolledBack, "1.0.0"));
    }

    #[test]
    fn cluster_upgrade_contacts_no_other_node_to_upgrade_when_this_nodes_upgrade_fails() {
        let (outcome, remote, _, rolled_back_at) = cluster_upgrade_with(vec![], true, false);
        assert!(matches!(outcome, upgrade::ClusterUpgrade::ThisNodeFailed(_)));
        assert_eq!(outcome.rollback_exit_code(), None);
        assert_eq!(rolled_back_at, None, "this node's own upgrade puts itself back");
        let calls = remote.calls.lock().unwrap();
        assert!(!calls.iter().any(|(_, s, _)| s.contains("./airlock upgrade")), "another node was upgraded");
    }

    #[test]
    fn cluster_upgrade_upgrades_every_node_when_all_pass() {
        let (outcome, ..) = cluster_upgrade_with(vec![], false, false);
        let upgrade::ClusterUpgrade::Upgraded { report, .. } = outcome else { panic!("not upgraded") };
        assert!(report.ok() && report.nodes.iter().all(|n| n.version == "1.1.0"), "{report:?}");
    }

    /// `uninstall --all-nodes` over nodes that were all joined, `failing` ones failing
    /// their uninstall: the outcome, the calls, and after how many calls to the other
    /// nodes this node's own uninstall ran, if it ran.
    #[allow(clippy::disallowed_methods)] // the installer is the operator's file, outside any root
    fn uninstall_all_with(
        failing: Vec<&'static str>,
    ) -> (all_nodes::AllNodesUninstalled<()>, FakeNodes, Option<usize>) {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let files = tempfile::tempdir().unwrap();
        let installer = files.path().join("airlock");
        std::fs::write(&installer, b"installer").unwrap();
        let (d, _) = airlock_format::digest::sha256_file(&installer).unwrap();
        let incoming = format!("{}  airlock\n", d.hex());
        let remote = FakeNodes { calls: Mutex::new(Vec::new()), failing, unhealthy: vec![], incoming };
        let mut run = run_with(&remote, &host);
        run.installer = installer;
        for n in run.others() {
            run.journal(n, Phase::Joined).unwrap();
        }
        let mut here_at = None;
        let outcome = run
            .uninstall_all_nodes(true, false, Box::new(airlock_format::report::Silent), || {
                here_at = Some(remote.calls.lock().unwrap().len());
                // This node's uninstall removes the state directory the cluster lock
                // lives in: the run gave the cluster back before.
                assert_eq!(state::cluster_holder(&host).unwrap(), None, "the cluster is still held");
                Ok(())
            })
            .unwrap();
        assert_eq!(state::cluster_holder(&host).unwrap(), None, "the cluster lock outlived the run");
        (outcome, remote, here_at)
    }

    #[test]
    fn uninstall_all_nodes_keeps_this_node_when_another_node_fails_and_names_only_that_one() {
        let (outcome, remote, here_at) = uninstall_all_with(vec!["w1"]);
        assert_eq!(here_at, None, "this node was uninstalled although w1 was not");
        let all_nodes::AllNodesUninstalled::ThisNodeKept { failed, report } = outcome else { panic!("not kept") };
        assert_eq!(failed, ["w1"]);
        assert!(matches!(report.nodes[0].result, NodeResult::Skipped { .. }), "{:?}", report.nodes[0]);
        let calls = remote.calls.lock().unwrap();
        let uninstalled: Vec<&str> =
            calls.iter().filter(|(_, s, _)| s.contains("./airlock uninstall")).map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(uninstalled, ["w1", "w2", "s3", "s2"], "one node failing stops no other");
        assert!(calls.iter().all(|(_, s, _)| !s.contains("./airlock uninstall") || s.contains("--purge")));
    }

    #[test]
    fn uninstall_all_nodes_uninstalls_this_node_last_when_every_other_is_done() {
        let (outcome, remote, here_at) = uninstall_all_with(vec![]);
        assert_eq!(here_at, Some(remote.calls.lock().unwrap().len()), "this node went before another");
        let all_nodes::AllNodesUninstalled::Done { report, .. } = outcome else { panic!("not done") };
        assert!(report.ok() && report.nodes[0].result == NodeResult::Removed, "{report:?}");
    }

    #[test]
    fn node_answers_join_the_first_server_with_the_members_of_nodes() {
        let site = "profile: ha\nnode: {name: s1, ip: 192.0.2.11}\nnodes: []\npki: {mode: self-signed}\ndata_dir: /var/lib/rancher\n";
        let mut w1 = node("w1", 21, Role::Agent);
        w1.data_dir = Some("/srv/rancher".into());
        let nodes = [node("s1", 11, Role::Server), node("s2", 12, Role::Server), w1];
        let text = node_answers(site, &nodes, 2).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["node"]["name"], "w1");
        assert_eq!(doc["node"]["role"], "agent");
        assert_eq!(doc["join"]["server"], "192.0.2.11");
        assert_eq!(doc["join"]["token_file"], state::CLUSTER_TOKEN_PATH);
        assert_eq!(doc["ha"]["servers"][1]["ip"], "192.0.2.12");
        assert_eq!(doc["ha"]["agents"][0]["name"], "w1");
        assert_eq!(doc["data_dir"], "/srv/rancher");
        assert!(doc.get("nodes").is_none() && doc.get("pki").is_none(), "{text}");
    }

    /// A node that another run, from another first server, holds: it answers the claim
    /// with that run's mark; anything else is recorded and answered as a healthy node.
    struct HeldNodes {
        calls: Mutex<Vec<(String, String)>>,
        held: &'static str,
    }

    impl Remote for HeldNodes {
        fn exec(&self, t: &SshTarget, script: &str, stdin: &mut (dyn Read + Send)) -> Result<CommandOutput> {
            std::io::copy(stdin, &mut std::io::sink()).unwrap();
            self.calls.lock().unwrap().push((t.name.clone(), script.to_string()));
            if t.name == self.held && script.contains(HOLD_DIR) && script.contains("mkdir \"$H\"") {
                let mark = "site other-host:/var/lib/airlock\npid 4242\nstarted 2026-01-02T03:04:05Z\ncommand airlock install\n";
                return Ok(CommandOutput { status: HELD_STATUS, stdout: mark.into(), stderr: String::new() });
            }
            Ok(CommandOutput::ok(""))
        }
    }

    #[test]
    fn cluster_hold_refuses_a_second_run_at_once_naming_the_holder_until_it_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote =
            FakeNodes { calls: Mutex::new(Vec::new()), failing: vec![], unhealthy: vec![], incoming: String::new() };
        let run = run_with(&remote, &host);
        let hold = run.hold().unwrap();
        let holder = state::cluster_holder(&host).unwrap().expect("the cluster is held");
        assert_eq!(holder.pid, Some(std::process::id()));
        // A second run (another terminal: another open of the same lock) is refused,
        // naming this one.
        let other = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let e = state::lock_cluster(&other).unwrap_err();
        assert!(e.cause.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.cause.contains("working on this cluster's nodes") && e.hint.is_some(), "{e}");
        // This run's own step on this node (its install) takes the site's lock.
        drop(state::lock_site(&host).expect("the run holding the cluster was refused its own site lock"));
        // Only the nodes this run claimed are given back, and the lock goes with the hold.
        run.claim(&run.nodes[2], &target(&run.nodes[2])).unwrap();
        remote.calls.lock().unwrap().clear();
        drop(hold);
        let calls = remote.calls.lock().unwrap();
        let released: Vec<&str> = calls.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(released, ["s3"], "{calls:?}");
        assert!(calls[0].1.contains("rm -rf") && calls[0].1.contains(HOLD_DIR), "{}", calls[0].1);
        assert_eq!(state::cluster_holder(&host).unwrap(), None);
        drop(state::lock_cluster(&other).expect("the next run takes the cluster"));
    }

    #[test]
    fn cluster_prepare_writes_nothing_to_a_node_another_first_servers_run_holds_and_names_that_run() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let files = tempfile::tempdir().unwrap();
        let (bundle, installer) = (files.path().join("demo.airlock"), files.path().join("airlock"));
        #[allow(clippy::disallowed_methods)] // the operator's files, outside any root
        {
            std::fs::write(&bundle, b"bundle").unwrap();
            std::fs::write(&installer, b"installer").unwrap();
        }
        let remote = HeldNodes { calls: Mutex::new(Vec::new()), held: "s3" };
        let mut run = run_with(&remote, &host);
        run.bundle = bundle;
        run.installer = installer;
        let report = run.prepare(&airlock_format::report::Silent).unwrap();
        let s3 = report.nodes.iter().find(|n| n.name == "s3").unwrap();
        let NodeResult::Failed { step, cause, hint } = &s3.result else { panic!("{s3:?}") };
        assert_eq!(step, "claim");
        assert!(cause.contains("pid 4242") && cause.contains("command airlock install"), "{cause}");
        assert!(cause.contains("other-host:/var/lib/airlock"), "{cause}");
        assert!(hint.contains(HOLD_DIR), "{hint}");
        let calls = remote.calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|(n, _)| n == "s3").count(), 1, "s3 was written to after its claim failed");
        // The other nodes were claimed before anything was sent to them.
        for name in ["s2", "w1", "w2"] {
            let first = calls.iter().find(|(n, _)| n == name).unwrap();
            assert!(first.1.contains(HOLD_DIR), "{name}: {}", first.1);
        }
        assert!(!report.ok());
    }

    /// This node's install in the cluster's install: writes the join token as the
    /// first server's install does, and records when it ran and whether the cluster
    /// was held then.
    struct FakeInstallHere<'a> {
        remote: &'a FakeNodes,
        host: &'a RootedHost,
        confirm: bool,
        prepared_at: Option<usize>,
        installed_at: Option<usize>,
        held_while_installing: bool,
    }

    impl install::ThisNode for FakeInstallHere<'_> {
        type Installed = ();
        fn progress(&self) -> Box<dyn Reporter> {
            Box::new(airlock_format::report::Silent)
        }
        fn prepared(&mut self, _: &ClusterReport) -> Result<bool> {
            self.prepared_at = Some(self.remote.calls.lock().unwrap().len());
            Ok(self.confirm)
        }
        fn install(&mut self) -> Result<()> {
            self.installed_at = Some(self.remote.calls.lock().unwrap().len());
            self.held_while_installing = state::cluster_holder(self.host)?.is_some();
            self.host.write_file(Path::new(state::CLUSTER_TOKEN_PATH), &mut &TOKEN[..], Perms::secret()).map(drop)
        }
    }

    /// A bundle and an installer that exist (in the directory returned with them), and
    /// what a node that has both answers to the check of its incoming files.
    #[allow(clippy::disallowed_methods)] // the operator's files, outside any root
    fn sent_files() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
        let files = tempfile::tempdir().unwrap();
        let (bundle, installer) = (files.path().join("demo.airlock"), files.path().join("airlock"));
        std::fs::write(&bundle, b"bundle").unwrap();
        std::fs::write(&installer, b"installer").unwrap();
        // The bundle (file 0 of what is sent) by its size, the installer by its digest.
        let (d, _) = airlock_format::digest::sha256_file(&installer).unwrap();
        let incoming = format!("sized 0\n{}  airlock\n", d.hex());
        (files, bundle, installer, incoming)
    }

    /// A cluster install, the nodes answering as `remote` does: the outcome and this
    /// node's part.
    fn cluster_install_with<'a>(
        remote: &'a FakeNodes,
        host: &'a RootedHost,
        confirm: bool,
    ) -> (install::ClusterInstall<()>, FakeInstallHere<'a>) {
        let (_files, bundle, installer, _) = sent_files();
        let mut run = run_with(remote, host);
        run.bundle = bundle;
        run.installer = installer;
        let mut here = FakeInstallHere {
            remote,
            host,
            confirm,
            prepared_at: None,
            installed_at: None,
            held_while_installing: false,
        };
        let outcome = install::run_cluster_install(&run, &mut here).unwrap();
        assert_eq!(state::cluster_holder(host).unwrap(), None, "the cluster lock outlived the install");
        (outcome, here)
    }

    /// Nodes that have the files of [`sent_files`] (the same bytes each time).
    fn fake_nodes(failing: Vec<&'static str>) -> FakeNodes {
        let (_files, _, _, incoming) = sent_files();
        FakeNodes { calls: Mutex::new(Vec::new()), failing, unhealthy: vec![], incoming }
    }

    #[test]
    fn cluster_install_prepares_every_node_then_installs_this_one_before_any_join_and_removes_incoming_last() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote = fake_nodes(vec![]);
        let (outcome, here) = cluster_install_with(&remote, &host, true);
        let install::ClusterInstall::Installed { report, incoming_left, .. } = outcome else { panic!("not installed") };
        assert!(report.ok() && incoming_left.is_empty(), "{report:?}");
        assert!(here.held_while_installing, "this node was installed without the cluster held");
        let calls = remote.calls.lock().unwrap();
        let at = |what: &str| -> Vec<usize> {
            calls.iter().enumerate().filter(|(_, (_, s, _))| s.contains(what)).map(|(i, _)| i).collect()
        };
        let preflights = at("./airlock preflight");
        assert_eq!(preflights.len(), 4, "every other node runs its preflight");
        let (prepared_at, installed_at) = (here.prepared_at.unwrap(), here.installed_at.unwrap());
        assert!(preflights.iter().all(|&i| i < prepared_at), "a node was still preparing when asked to confirm");
        let joins = at("./airlock join");
        assert_eq!(joins.len(), 4);
        assert!(joins.iter().all(|&i| i >= installed_at), "a node joined before this one was installed");
        let removals = at("rm -rf -- \"$D\"");
        assert_eq!(removals.len(), 4);
        assert!(removals.iter().all(|&i| i > *joins.iter().max().unwrap()), "incoming removed before every join");
    }

    #[test]
    fn cluster_install_changes_nothing_anywhere_when_one_node_is_not_ready_or_the_operator_declines() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        // s3 is held by a run of another first server: not ready.
        let held = HeldNodes { calls: Mutex::new(Vec::new()), held: "s3" };
        let (_files, bundle, installer, _) = sent_files();
        let mut run = run_with(&held, &host);
        run.bundle = bundle;
        run.installer = installer;
        let remote = fake_nodes(vec![]);
        let mut here = FakeInstallHere {
            remote: &remote,
            host: &host,
            confirm: true,
            prepared_at: None,
            installed_at: None,
            held_while_installing: false,
        };
        let outcome = install::run_cluster_install(&run, &mut here).unwrap();
        let install::ClusterInstall::NotReady { prepared } = outcome else { panic!("not refused") };
        assert!(!prepared.ok());
        assert_eq!((here.prepared_at, here.installed_at), (None, None), "this node went on although s3 was not ready");
        let calls = held.calls.lock().unwrap();
        assert!(!calls.iter().any(|(_, s)| s.contains("./airlock join") || s.contains("cluster-token")));
        assert_eq!(state::cluster_holder(&host).unwrap(), None);

        let remote = fake_nodes(vec![]);
        let (outcome, here) = cluster_install_with(&remote, &host, false);
        assert!(matches!(outcome, install::ClusterInstall::Declined));
        assert_eq!(here.installed_at, None);
        assert!(!remote.calls.lock().unwrap().iter().any(|(_, s, _)| s.contains("./airlock join")));
    }

    #[test]
    fn cluster_install_reports_a_failed_join_by_node_goes_on_with_the_agents_and_keeps_incoming() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote = fake_nodes(vec!["s3"]);
        let (outcome, _) = cluster_install_with(&remote, &host, true);
        let install::ClusterInstall::Installed { report, .. } = outcome else { panic!("not installed") };
        assert!(!report.ok());
        let result = |name: &str| report.nodes.iter().find(|n| n.name == name).unwrap().result.clone();
        assert!(matches!(result("s3"), NodeResult::Failed { ref step, .. } if step == "join"), "{:?}", result("s3"));
        assert_eq!(
            (result("s2"), result("w1"), result("w2")),
            (NodeResult::Joined, NodeResult::Joined, NodeResult::Joined)
        );
        let calls = remote.calls.lock().unwrap();
        assert!(!calls.iter().any(|(_, s, _)| s.contains("rm -rf -- \"$D\"")), "incoming removed after a failure");
    }

    #[test]
    fn an_override_naming_a_node_applies_to_that_node_only_and_an_unknown_node_is_an_answer_error() {
        let nodes = vec![node("s1", 11, Role::Server), node("s2", 12, Role::Server), node("w1", 21, Role::Agent)];
        let given: Vec<String> = ["swap", "w1:nm-cloud-setup", "s1:ports"].map(String::from).to_vec();
        assert_eq!(overrides_for(&given, &nodes, "s1").unwrap(), ["swap", "ports"]);
        assert_eq!(overrides_for(&given, &nodes, "s2").unwrap(), ["swap"]);
        assert_eq!(overrides_for(&given, &nodes, "w1").unwrap(), ["swap", "nm-cloud-setup"]);
        let e = overrides_for(&["w9:swap".to_string()], &nodes, "s1").unwrap_err();
        assert!(e.subject.contains("w9:swap") && e.cause.contains("`w9`"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("s1, s2, w1"), "{e}");
        // Without `nodes:`, only this node's own name.
        assert_eq!(overrides_for(&["s1:swap".to_string()], &[], "s1").unwrap(), ["swap"]);
        assert!(overrides_for(&["s2:swap".to_string()], &[], "s1").is_err());
    }

    #[test]
    fn a_node_joins_with_its_own_overrides_and_the_report_names_them() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let remote = fake_nodes(vec![]);
        let mut run = run_with(&remote, &host);
        run.overrides = vec!["w1:nm-cloud-setup".into()];
        let report = run.join(TOKEN, &airlock_format::report::Silent).unwrap();
        let calls = remote.calls.lock().unwrap();
        let join =
            |name: &str| calls.iter().find(|(n, s, _)| n == name && s.contains("./airlock join")).unwrap().1.clone();
        assert!(join("w1").contains("'--override' 'nm-cloud-setup'"), "{}", join("w1"));
        assert!(!join("w2").contains("nm-cloud-setup") && !join("s2").contains("--override"), "{}", join("w2"));
        let row = |name: &str| report.nodes.iter().find(|n| n.name == name).unwrap().overrides.clone();
        assert_eq!((row("w1"), row("w2")), (vec!["nm-cloud-setup".to_string()], vec![]));
    }
}
