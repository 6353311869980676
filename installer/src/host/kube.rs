//! kubectl, built in one place.
//!
//! Every kubectl command line the installer runs (status, support bundles, the live
//! bring-up, the upgrade's server check and database dump) comes from [`Kube`], with
//! the admin kubeconfig the distribution writes and a `--request-timeout`, so a dead
//! API server costs a bounded wait instead of hanging the command. It runs through
//! [`Host::run`], so the recording double records it like any other command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_format::error::Result;
use serde::{Deserialize, Serialize};

use super::{CommandOutput, Host};

/// How long one request to the API server may take.
pub const KUBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A kubectl binary and the kubeconfig it talks to the cluster with. Serialised as
/// `[kubectl, kubeconfig]` (what journals written before it existed hold).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(PathBuf, PathBuf)", into = "(PathBuf, PathBuf)")]
pub struct Kube {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    timeout: Duration,
}

impl From<(PathBuf, PathBuf)> for Kube {
    fn from((kubectl, kubeconfig): (PathBuf, PathBuf)) -> Self {
        Self::new(kubectl, kubeconfig)
    }
}

impl From<Kube> for (PathBuf, PathBuf) {
    fn from(k: Kube) -> Self {
        (k.kubectl, k.kubeconfig)
    }
}

impl Kube {
    /// A client with the default [`KUBE_REQUEST_TIMEOUT`].
    pub fn new(kubectl: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Self {
        Self { kubectl: kubectl.into(), kubeconfig: kubeconfig.into(), timeout: KUBE_REQUEST_TIMEOUT }
    }

    /// The kubectl and admin kubeconfig a server of `distribution` (`k3s`, `rke2`)
    /// running `unit` has, as the distribution lays them out (RKE2 keeps kubectl in
    /// its data directory `data_dir`); `None` on agents, which hold no API credentials.
    pub fn for_node(distribution: &str, unit: &str, data_dir: Option<&Path>) -> Option<Self> {
        if unit.contains("agent") {
            return None;
        }
        Some(match distribution {
            "rke2" => {
                let data = data_dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/var/lib/rancher/rke2"));
                Self::new(data.join("bin/kubectl"), "/etc/rancher/rke2/rke2.yaml")
            }
            _ => Self::new("/usr/local/bin/kubectl", "/etc/rancher/k3s/k3s.yaml"),
        })
    }

    /// The same client with another request timeout; `Duration::ZERO` means none,
    /// for a stream whose length is the data's (`exec` of a database dump).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The command line: kubectl, the kubeconfig, the request timeout, then `args`.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.kubectl.to_string_lossy().into_owned(),
            "--kubeconfig".to_string(),
            self.kubeconfig.to_string_lossy().into_owned(),
            format!("--request-timeout={}s", self.timeout.as_secs()),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// Runs kubectl with `args` on the host; the output whatever the exit status.
    pub fn run(&self, host: &dyn Host, args: &[&str]) -> Result<CommandOutput> {
        let argv = self.argv(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        host.run(&argv)
    }
}

/// The status of a node's Ready condition (`True`, `False`, or `Unknown` when the
/// kubelet stopped reporting or the condition is missing), from an item of
/// `kubectl get nodes -o json`.
pub fn ready_condition(node: &serde_json::Value) -> &str {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_line_carries_the_kubeconfig_and_a_request_timeout() {
        let k = Kube::for_node("k3s", "k3s.service", None).unwrap();
        assert_eq!(
            k.argv(&["get", "nodes"]),
            [
                "/usr/local/bin/kubectl",
                "--kubeconfig",
                "/etc/rancher/k3s/k3s.yaml",
                "--request-timeout=15s",
                "get",
                "nodes"
            ]
        );
        let rke2 = Kube::for_node("rke2", "rke2-server.service", Some(Path::new("/data/rke2"))).unwrap();
        assert_eq!(rke2.argv(&[])[0], "/data/rke2/bin/kubectl");
        assert_eq!(rke2.with_timeout(Duration::ZERO).argv(&[])[3], "--request-timeout=0s");
        assert!(Kube::for_node("k3s", "k3s-agent.service", None).is_none(), "agents hold no credentials");
    }

    #[test]
    fn serialises_as_the_pair_journals_hold() {
        let k = Kube::new("/usr/local/bin/kubectl", "/etc/rancher/k3s/k3s.yaml");
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, r#"["/usr/local/bin/kubectl","/etc/rancher/k3s/k3s.yaml"]"#);
        assert_eq!(serde_json::from_str::<Kube>(&json).unwrap(), k);
    }
}
