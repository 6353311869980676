//! `nodes:`, the cluster `airlock install` sets up from its first server over SSH.
//!
//! Each row names a node, the address SSH reaches it at, its role, how to log in (user,
//! port, identity file, jump host; each left out defers to `~/.ssh/config` and the
//! agent) and per-node overrides (`node_ip`, `data_dir`). The first row is the node the
//! command runs on, a server; it starts the cluster. The list replaces `ha`: servers and
//! agents come from each row's role, in the same order, so the two cannot disagree.
//!
//! Every value given here ends up on an `ssh` command line, so the validators also
//! keep out anything ssh would read as an option (a leading `-`) or a second word.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::check::{self, Invalid};
use super::questions::{check_data_dir, check_node_name, check_role, starts_cluster, Column, Row};
use super::{Address, Answered, Facts, Member, Role};

/// Column order of a `nodes` row (also the cell order of [`Row`]s read from it).
pub const COLUMNS: &[Column] = &[
    Column {
        key: "name",
        prompt: "Node {n}: node name (empty when every node is listed)",
        help: "the node's Kubernetes name (lowercase RFC 1123); node 1 is this node",
        check: check_node_name,
        // No suggestion: Enter on the first name leaves `nodes` out (this node alone,
        // or a cluster whose nodes are installed one by one).
        suggest: no_cell,
        optional: false,
    },
    Column {
        key: "address",
        prompt: "Node {n}: address SSH reaches it at",
        help: "IP address or DNS name the first server's `ssh` connects to",
        check: check_address,
        suggest: suggest_self_address,
        optional: false,
    },
    Column {
        key: "role",
        prompt: "Node {n}: role (server or agent)",
        help: "server runs the control plane and etcd; agent runs workloads",
        check: check_role,
        suggest: suggest_role,
        optional: false,
    },
    Column {
        key: "ssh_user",
        prompt: "Node {n}: SSH user",
        help: "the login name (default: from ~/.ssh/config, else the user running airlock)",
        check: check_ssh_user,
        suggest: no_cell,
        optional: true,
    },
    Column {
        key: "ssh_port",
        prompt: "Node {n}: SSH port",
        help: "the SSH port (default: from ~/.ssh/config, else 22)",
        check: check_ssh_port,
        suggest: no_cell,
        optional: true,
    },
    Column {
        key: "ssh_identity_file",
        prompt: "Node {n}: SSH identity file",
        help: "absolute path of the private key (default: the SSH agent and ~/.ssh/config)",
        check: check_identity_file,
        suggest: no_cell,
        optional: true,
    },
    Column {
        key: "ssh_jump",
        prompt: "Node {n}: SSH jump host",
        help: "a bastion to connect through, as ssh's -J takes it: [user@]host[:port][,...]",
        check: check_jump,
        suggest: no_cell,
        optional: true,
    },
    Column {
        key: "node_ip",
        prompt: "Node {n}: node IP",
        help: "the address the node advertises in the cluster (default: `address`, when that is an IP)",
        check: check_node_ip_cell,
        suggest: no_cell,
        optional: true,
    },
    Column {
        key: "data_dir",
        prompt: "Node {n}: data directory",
        help: "where this node keeps cluster state, if not the site's `data_dir`",
        check: check_data_dir,
        suggest: no_cell,
        optional: true,
    },
];

/// Cell indexes of [`COLUMNS`].
const NAME: usize = 0;
const ADDRESS: usize = 1;
const ROLE: usize = 2;
const SSH_USER: usize = 3;
const SSH_PORT: usize = 4;
const IDENTITY: usize = 5;
const JUMP: usize = 6;
const NODE_IP: usize = 7;
const DATA_DIR: usize = 8;

/// A node of `nodes:`, typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteNode {
    pub name: String,
    /// What `ssh` connects to.
    pub address: Address,
    pub role: Role,
    pub ssh: SshLogin,
    /// The address the node advertises (`node-ip`).
    pub node_ip: IpAddr,
    /// This node's `data_dir`, when it differs from the site's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// How to log in to a node; every `None` defers to `~/.ssh/config` and the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SshLogin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
}

impl SiteNode {
    pub fn member(&self) -> Member {
        Member { name: self.name.clone(), ip: self.node_ip }
    }
}

/// The typed rows; the validators have passed, so this only converts.
pub(crate) fn typed(rows: &[Row]) -> Result<Vec<SiteNode>, Invalid> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |col: &str| format!("[{i}].{col}");
            let address = check::address(&r[ADDRESS]).map_err(|e| e.at(at("address")))?;
            let node_ip = row_node_ip(r).ok_or_else(|| missing_node_ip(&r[ADDRESS]).at(at("node_ip")))?;
            let some = |s: &String| (!s.is_empty()).then(|| s.clone());
            Ok(SiteNode {
                name: r[NAME].clone(),
                address,
                role: if r[ROLE] == "agent" { Role::Agent } else { Role::Server },
                ssh: SshLogin {
                    user: some(&r[SSH_USER]),
                    port: r[SSH_PORT].parse().ok(),
                    identity_file: some(&r[IDENTITY]).map(PathBuf::from),
                    jump: some(&r[JUMP]),
                },
                node_ip,
                data_dir: some(&r[DATA_DIR]).map(PathBuf::from),
            })
        })
        .collect()
}

/// The address a row's node advertises: `node_ip`, else `address` when it is an IP.
fn row_node_ip(r: &Row) -> Option<IpAddr> {
    if r[NODE_IP].is_empty() {
        r[ADDRESS].parse().ok()
    } else {
        r[NODE_IP].parse().ok()
    }
}

fn missing_node_ip(address: &str) -> Invalid {
    Invalid::new(
        format!("is missing, and the address `{address}` is a name, not an IP"),
        "add `node_ip:` with the address this node has on the site network",
    )
}

/// Asked on the node that starts an HA cluster; agents and joining servers take part
/// in a cluster but do not set it up.
pub(super) fn asks_nodes(a: &Answered, f: &Facts) -> bool {
    super::questions::profile_may_be_ha(a, f) && starts_cluster(a)
}

/// The whole list: this node first, unique names and addresses, an odd number of
/// servers (etcd's quorum), node addresses outside the cluster networks.
pub(super) fn check_nodes(rows: &[Row], a: &Answered) -> Result<(), Invalid> {
    let Some(first) = rows.first() else {
        return Err(Invalid::new(
            "is empty",
            "list every node, this one first, or remove `nodes` to install this node alone",
        ));
    };
    if a.is_agent() {
        return Err(Invalid::new(
            "is set on an agent",
            "`nodes` belongs in the answers of the first server, which sets up the others",
        ));
    }
    let me = (a.node_name(), a.node_ip());
    if (Some(first[NAME].as_str()), row_node_ip(first)) != me || first[ROLE] != "server" {
        let (name, ip) = (a.node_name().unwrap_or("?"), a.text("node.ip").unwrap_or("?"));
        return Err(Invalid::new(
            format!("starts with `{}`, but the first node is this one ({name}, {ip}), a server", first[NAME]),
            format!("put this node first: `- {{name: {name}, address: {ip}, role: server}}`"),
        )
        .at("[0]"));
    }
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for (i, r) in rows.iter().enumerate() {
        if !names.insert(r[NAME].as_str()) {
            return Err(Invalid::new(format!("the name `{}` is listed twice", r[NAME]), "every node has its own name")
                .at(format!("[{i}].name")));
        }
        if !addresses.insert(r[ADDRESS].as_str()) {
            return Err(Invalid::new(
                format!("the address `{}` is listed twice", r[ADDRESS]),
                "every node has its own address",
            )
            .at(format!("[{i}].address")));
        }
        let Some(ip) = row_node_ip(r) else { return Err(missing_node_ip(&r[ADDRESS]).at(format!("[{i}].node_ip"))) };
        let ip_key = if r[NODE_IP].is_empty() { "address" } else { "node_ip" };
        if !ips.insert(ip) {
            return Err(Invalid::new(format!("the node IP {ip} is listed twice"), "every node has its own address")
                .at(format!("[{i}].{ip_key}")));
        }
        if check::host_ip(&ip.to_string()).is_err() {
            return Err(check::host_ip(&ip.to_string()).unwrap_err().at(format!("[{i}].{ip_key}")));
        }
        for key in ["cluster.cluster_cidr", "cluster.service_cidr"] {
            if let Some(net) = a.net(key).filter(|n| n.contains(&ip)) {
                return Err(Invalid::new(
                    format!("{ip} is inside {key} {net}"),
                    format!("choose a {key} that no host address falls into"),
                )
                .at(format!("[{i}].{ip_key}")));
            }
        }
    }
    let servers = rows.iter().filter(|r| r[ROLE] == "server").count();
    if rows.len() > 1 && (servers < 3 || servers % 2 != 1) {
        return Err(Invalid::new(
            format!(
                "lists {servers} server{}; a cluster has an odd number, at least 3",
                if servers == 1 { "" } else { "s" }
            ),
            "etcd stays up while a majority of servers runs: 3 servers survive one failure, 5 survive two",
        ));
    }
    if let Some(pods) = a.net("cluster.cluster_cidr") {
        let block = if pods.addr().is_ipv4() { 24 } else { 64 };
        let ranges = 1u128 << (block - pods.prefix_len()).min(64);
        if rows.len() as u128 > ranges {
            return Err(Invalid::new(
                format!("{} nodes do not fit cluster.cluster_cidr {pods}, which has room for {ranges}", rows.len()),
                "each node takes a /24 (IPv4) or /64 (IPv6) of the pod network; use a larger one",
            ));
        }
    }
    Ok(())
}

/// `ssh` would take a leading `-` as an option: refused in every cell it reads.
fn no_option(s: &str) -> Result<(), Invalid> {
    if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            format!("`{s}` starts with `-` or holds a space"),
            "write the value alone; ssh would read a leading `-` as an option",
        ));
    }
    Ok(())
}

fn check_address(s: &str, _: &Answered) -> Result<(), Invalid> {
    no_option(s)?;
    check::address(s).map(drop)
}

fn check_ssh_user(s: &str, _: &Answered) -> Result<(), Invalid> {
    no_option(s)?;
    let ok = !s.is_empty() && s.len() <= 32 && !s.contains(['@', ':', '/']);
    if !ok {
        return Err(Invalid::new(format!("`{s}` is not a login name"), "write the user name alone, e.g. root"));
    }
    Ok(())
}

fn check_ssh_port(s: &str, _: &Answered) -> Result<(), Invalid> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(Invalid::new(format!("`{s}` is not a port"), "write a number from 1 to 65535, e.g. 22")),
    }
}

fn check_identity_file(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::abs_path(s).map(drop)
}

fn check_jump(s: &str, _: &Answered) -> Result<(), Invalid> {
    no_option(s)?;
    for hop in s.split(',') {
        let host = hop.rsplit_once('@').map_or(hop, |(_, h)| h);
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(h, _)| h).unwrap_or(v6),
            None => host.split_once(':').map_or(host, |(h, _)| h),
        };
        check::address(host).map_err(|e| {
            Invalid::new(
                format!("`{hop}` is not a jump host: {}", e.cause),
                "write [user@]host[:port], comma-separated",
            )
        })?;
    }
    Ok(())
}

fn check_node_ip_cell(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::host_ip(s).map(drop)
}

fn no_cell(_: &Answered, _: &Facts, _: usize) -> Option<String> {
    None
}
fn suggest_self_address(a: &Answered, _: &Facts, row: usize) -> Option<String> {
    (row == 0).then(|| a.text("node.ip").map(str::to_string))?
}
fn suggest_role(_: &Answered, _: &Facts, row: usize) -> Option<String> {
    Some(if row < 3 { "server" } else { "agent" }.into())
}
