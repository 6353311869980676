//! The HA upgrade order: servers one at a time.
//!
//! A node cannot read another node's upgrade journal, but a server can ask the API
//! server about the others. A server that is not Ready is restarting on new files,
//! still in its own health gate, or broken; upgrading a second server then takes a
//! second etcd member down at once, and a three-server cluster loses quorum. So before
//! a server starts, every *other* server must be Ready. This is a policy refusal
//! (exit 12) like a downgrade, overridable the same way with
//! `--allow-policy-override`, which the journal records: a server that is gone for
//! good must not block the site forever.
//!
//! Agents have no API credentials, so they cannot check; docs/day2.md says to
//! upgrade them after the servers.

use airlock_format::error::{Error, Result};
use serde_json::Value;

use super::policy::Decision;
use crate::host::Host;
use crate::live::LiveTarget;

/// The label K3s and RKE2 put on every server node.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// What the API server said about the other servers.
#[derive(Debug, PartialEq, Eq)]
pub enum OtherServers {
    /// Every other server is Ready (or there is none).
    Ready,
    /// These servers are not Ready, each with its Ready condition's status.
    NotReady(Vec<String>),
    /// The API server could not be asked; why.
    Unknown(String),
}

/// Asks the API server (through this server's admin kubeconfig) for the Ready
/// condition of every server node but `live.node`. `None` on an agent.
pub fn other_servers(host: &dyn Host, live: &LiveTarget) -> Option<OtherServers> {
    let k = live.kubectl.as_ref()?;
    let out = match k.run(host, &["get", "nodes", "-l", CONTROL_PLANE_LABEL, "-o", "json"]) {
        Ok(o) if o.success() => o.stdout,
        Ok(o) => return Some(OtherServers::Unknown(format!("kubectl get nodes: {}", o.stderr.trim()))),
        Err(e) => return Some(OtherServers::Unknown(format!("kubectl could not run: {}", e.cause))),
    };
    let list: Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => return Some(OtherServers::Unknown(format!("kubectl get nodes printed no node list: {e}"))),
    };
    let mut not_ready = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or("?");
        if name == live.node {
            continue;
        }
        let ready = crate::host::ready_condition(item);
        if ready != "True" {
            not_ready.push(format!("{name} (Ready={ready})"));
        }
    }
    Some(if not_ready.is_empty() { OtherServers::Ready } else { OtherServers::NotReady(not_ready) })
}

/// Folds the order check into the version policy's decision: `Err` when another
/// server is not Ready and the operator did not override; the warning to show when the
/// order could not be checked.
pub fn check(
    found: Option<OtherServers>,
    decision: Decision,
    allow_override: bool,
) -> Result<(Decision, Option<String>)> {
    match found {
        None | Some(OtherServers::Ready) => Ok((decision, None)),
        Some(OtherServers::Unknown(why)) => Ok((
            decision,
            Some(format!("the other servers' state is unknown ({why}); the one-at-a-time order was not checked")),
        )),
        Some(OtherServers::NotReady(names)) => {
            let violation = format!(
                "server {} not Ready: HA servers upgrade one at a time, each after the one before passed its gate",
                names.join(", ")
            );
            if !allow_override {
                return Err(Error::input("HA upgrade order", violation).with_hint(
                    "wait until `kubectl get nodes` shows every server Ready (an upgrade there may still be running) \
                     and run again; a server gone for good: `kubectl delete node NAME`, or run with \
                     --allow-policy-override (journaled)",
                ));
            }
            Ok((
                match decision {
                    Decision::Overridden { mut violations } => {
                        violations.push(violation);
                        Decision::Overridden { violations }
                    }
                    _ => Decision::Overridden { violations: vec![violation] },
                },
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CommandOutput, Kube, RecordingHost};
    use airlock_format::manifest::DistributionKind;

    fn server(node: &str) -> LiveTarget {
        LiveTarget {
            kind: DistributionKind::K3s,
            unit: "k3s.service".into(),
            node: node.into(),
            kubectl: Some(Kube::new("/usr/local/bin/kubectl", "/etc/rancher/k3s/k3s.yaml")),
            charts: Vec::new(),
            sysctl: None,
        }
    }

    fn nodes(list: &[(&str, &str)]) -> String {
        let items: Vec<Value> = list
            .iter()
            .map(|(n, ready)| {
                serde_json::json!({"metadata": {"name": n},
                    "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                              {"type": "Ready", "status": ready}]}})
            })
            .collect();
        serde_json::json!({ "items": items }).to_string()
    }

    fn asked(list: &[(&str, &str)]) -> (RecordingHost, Option<OtherServers>) {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(
            &["/usr/local/bin/kubectl", "--kubeconfig", "/etc/rancher/k3s/k3s.yaml"],
            CommandOutput::ok(nodes(list)),
        );
        let found = other_servers(&host, &server("s1"));
        (host, found)
    }

    #[test]
    fn another_server_not_ready_refuses_naming_it_and_this_node_does_not_count() {
        let (host, found) = asked(&[("s1", "False"), ("s2", "True"), ("s3", "Unknown")]);
        let argv = host.calls().into_iter().find_map(|c| match c {
            crate::host::HostCall::Run { argv } => Some(argv.join(" ")),
            _ => None,
        });
        assert!(argv.unwrap().contains("get nodes -l node-role.kubernetes.io/control-plane -o json"));
        assert_eq!(found, Some(OtherServers::NotReady(vec!["s3 (Ready=Unknown)".into()])));
        let e = check(found, Decision::Allowed, false).unwrap_err();
        assert_eq!(e.subject, "HA upgrade order");
        assert!(e.cause.contains("server s3 (Ready=Unknown) not Ready"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("--allow-policy-override"), "{e}");
    }

    #[test]
    fn an_override_adds_the_order_to_the_journaled_violations() {
        let (_, found) = asked(&[("s1", "True"), ("s2", "False")]);
        let earlier = Decision::Overridden { violations: vec!["1.0.0 is older than the installed 2.0.0".into()] };
        let (d, warning) = check(found, earlier, true).unwrap();
        assert_eq!(warning, None);
        let Decision::Overridden { violations } = d else { panic!("not overridden: {d:?}") };
        assert_eq!(violations.len(), 2);
        assert!(violations[1].starts_with("server s2 (Ready=False) not Ready"), "{violations:?}");
    }

    #[test]
    fn all_servers_ready_or_a_single_server_passes_unchanged() {
        let (_, found) = asked(&[("s1", "True"), ("s2", "True")]);
        assert_eq!(check(found, Decision::Allowed, false).unwrap(), (Decision::Allowed, None));
        let (_, found) = asked(&[("s1", "False")]);
        assert_eq!(found, Some(OtherServers::Ready));
    }

    #[test]
    fn an_unreachable_api_server_warns_and_does_not_block() {
        let host = RecordingHost::new(true).unwrap();
        host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::exit(1, "connection refused"));
        let found = other_servers(&host, &server("s1"));
        let (d, warning) = check(found, Decision::Allowed, false).unwrap();
        assert_eq!(d, Decision::Allowed);
        assert!(warning.unwrap().contains("connection refused"));
    }

    #[test]
    fn an_agent_cannot_ask_and_is_not_checked() {
        let host = RecordingHost::new(true).unwrap();
        let agent = LiveTarget { kubectl: None, ..server("a1") };
        assert_eq!(other_servers(&host, &agent), None);
        assert!(host.calls().is_empty());
    }
}
