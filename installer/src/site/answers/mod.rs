//! What the site answered for an install: this node, the cluster, HA, joining, the
//! registry, the data directory and preflight overrides.
//!
//! One definition serves both ways in: the [question list](questions::questions) names
//! every answers key with its prompt, help line, default and validator. An answers file
//! (`--answers FILE`) is read against that list, and the wizard ([`wizard::ask`]) asks
//! it; the wizard's answers then go through the very same reader, so a value is judged
//! identically wherever it was typed. Parsing is strict: unknown keys are errors, and
//! every error names the file, the key path (`cluster.service_cidr`) and the cause,
//! with a `hint:`. The key reference is `docs/answers.md`.
//!
//! Later issues add sections (LDAP, PKI) as more questions in the list; the reader,
//! the wizard and the docs pick them up from there.

pub mod check;
pub mod kept;
pub mod keycloak_db;
pub mod nodes;
pub mod questions;
pub mod schema;
mod secret;
pub mod strict;
pub mod wizard;

use crate::state;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use airlock_format::manifest::DistributionKind;
use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::site::profile::{Profile, Topology};
pub use nodes::{SiteNode, SshLogin};
pub use questions::{questions, Answered, BundleFacts, Facts, HostFacts, Question, SkippedCheck};
pub use secret::{Secret, REDACTED};
pub use strict::Problem;
pub use wizard::{ask, ask_checked, LiveCheck, Prompt, Prompter, Reask};

/// Where the key reference lives; every hint points there.
pub const DOC: &str = "docs/answers.md";
/// The default for `data_dir`; K3s and RKE2 keep their state in `<data_dir>/k3s` or `/rke2`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher";

/// A site's validated answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answers {
    /// Where the answers came from (the file path, or the wizard), for error subjects.
    #[serde(skip)]
    pub origin: String,
    /// The install profile's name, one of the bundle's profiles.
    pub profile: String,
    pub node: Node,
    pub cluster: Cluster,
    /// Absent for a single node. With `nodes:`, derived from the nodes' roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<Ha>,
    /// The nodes `airlock install` sets up from this one over SSH, this node first;
    /// empty without `nodes:`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<SiteNode>,
    /// Absent on the node that starts the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    /// Proxy variables for the distribution's service environment (`proxy:`).
    #[serde(skip_serializing_if = "Proxy::is_empty")]
    pub proxy: Proxy,
    pub data_dir: PathBuf,
    pub preflight: Preflight,
    /// Where the platform's TLS certificates come from (`pki:`; self-signed when absent).
    pub pki: Pki,
    /// The site's LDAP/AD for Keycloak's user federation; absent: no directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<crate::site::ldap::LdapSettings>,
    /// Keycloak's external database; absent: Keycloak's file database (single node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keycloak_database: Option<keycloak_db::KeycloakDatabaseAnswers>,
    /// The monitoring component's settings (`monitoring:`; defaults when absent).
    pub monitoring: MonitoringAnswers,
    /// The age public keys `airlock backup create` encrypts to (`backup.recipients`).
    #[serde(skip_serializing_if = "BackupAnswers::is_empty")]
    pub backup: BackupAnswers,
    /// Wizard live checks the operator skipped after a failure (never from a file).
    #[serde(skip)]
    pub skipped_checks: Vec<SkippedCheck>,
}

/// The node being installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// RFC 1123 name; becomes the Kubernetes node name (`node-name`).
    pub name: String,
    /// The address it advertises (`node-ip`).
    pub ip: IpAddr,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Control plane (and etcd in HA); also runs workloads.
    Server,
    /// Workloads only; joins a server.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cluster-wide settings; the network ones must be equal on every server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Base domain of the platform's ingress hosts (`keycloak.<domain>`).
    pub ingress_domain: String,
    /// Extra Subject Alternative Names for the API server certificate (`tls-san`).
    pub tls_san: Vec<Address>,
    pub cluster_cidr: IpNet,
    pub service_cidr: IpNet,
    pub cluster_dns: IpAddr,
}

/// The members of an HA cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ha {
    /// An odd number ≥ 3; the first starts the cluster (K3s: `cluster-init`).
    pub servers: Vec<Member>,
    pub agents: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub name: String,
    pub ip: IpAddr,
}

/// How this node joins the cluster the first server started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Join {
    /// The first server's address; the port comes from the distribution.
    pub server: Address,
    /// File holding the join token the first server generated. The token itself never
    /// appears in answers.
    pub token_file: PathBuf,
}

/// A registry on the site network that serves images (`registries.yaml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Registry {
    pub mirror: HostPort,
    /// The CA certificate that signed the registry's certificate; `None`: the host's CAs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// How the bundle's images reach the nodes (`registry.delivery`).
    pub delivery: ImageDelivery,
    /// Where the pushed images sit below the registry (`registry.prefix`; the Harbor
    /// project); empty: at its top.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// A docker `config.json` (0600) with the account that pushes; `None`: the pull
    /// account (`username`/`password`) pushes too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_auth_file: Option<PathBuf>,
}

impl Registry {
    /// Whether install and upgrade push the bundle's images into this registry.
    pub fn pushes(&self) -> bool {
        matches!(self.delivery, ImageDelivery::Registry | ImageDelivery::Both)
    }

    /// Whether each node still gets the per-node image archive.
    pub fn archives(&self) -> bool {
        matches!(self.delivery, ImageDelivery::Archives | ImageDelivery::Both)
    }
}

/// How the bundle's images reach the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDelivery {
    /// The image archive in each node's images directory (the registry, if any, is a
    /// mirror with the upstream paths that the site fills itself).
    #[default]
    Archives,
    /// Pushed into the site registry at install and upgrade; the nodes pull from it
    /// through `registries.yaml` mirrors and rewrites, and get no image archive.
    Registry,
    /// Both: the archive for a start without the registry, the registry for the rest.
    Both,
}

/// The proxy a site's nodes reach their registry (or anything outside) through: the
/// variables land in the distribution's service environment file, as `install.sh`
/// copies them from its caller. URLs may hold credentials: they are [`Secret`]s, and
/// the file is then a secret file (0600, never shown).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Proxy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_proxy: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_proxy: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd_http_proxy: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd_https_proxy: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd_no_proxy: Option<String>,
}

impl Proxy {
    pub fn is_empty(&self) -> bool {
        self.env().is_empty()
    }

    /// `(NAME, value)` of every variable set, in the order K3s' and RKE2's docs list them.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        const NAMES: [&str; 6] = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "CONTAINERD_HTTP_PROXY",
            "CONTAINERD_HTTPS_PROXY",
            "CONTAINERD_NO_PROXY",
        ];
        NAMES.iter().filter_map(|n| self.value_ref(n).map(|v| (*n, v))).collect()
    }

    fn value_ref(&self, name: &str) -> Option<&str> {
        match name {
            "HTTP_PROXY" => self.http_proxy.as_ref().map(Secret::expose),
            "HTTPS_PROXY" => self.https_proxy.as_ref().map(Secret::expose),
            "NO_PROXY" => self.no_proxy.as_deref(),
            "CONTAINERD_HTTP_PROXY" => self.containerd_http_proxy.as_ref().map(Secret::expose),
            "CONTAINERD_HTTPS_PROXY" => self.containerd_https_proxy.as_ref().map(Secret::expose),
            "CONTAINERD_NO_PROXY" => self.containerd_no_proxy.as_deref(),
            _ => None,
        }
    }
}

/// The `monitoring` answers: which directory groups Grafana maps to its roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MonitoringAnswers {
    pub grafana_admin_group: String,
    pub grafana_editor_group: String,
    /// Where Alertmanager posts alerts; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_webhook_url: Option<String>,
    /// Alert mails through the site's relay; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_mail: Option<AlertMail>,
}

/// Alertmanager's mail receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertMail {
    /// `host:port` of the relay.
    pub smarthost: String,
    pub from: String,
    pub to: String,
}

/// The `backup` answers: who can open the site's backups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackupAnswers {
    /// age X25519 public keys (`age1...`); public, so kept with the answers.
    pub recipients: Vec<String>,
    /// The recovery point objective (`backup.rpo`, e.g. `24h`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_secs: Option<u64>,
}

impl BackupAnswers {
    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.rpo_secs.is_none()
    }
}

impl MonitoringAnswers {
    pub const DEFAULT_ADMIN_GROUP: &'static str = "grafana-admins";
    pub const DEFAULT_EDITOR_GROUP: &'static str = "grafana-editors";
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Preflight {
    /// Names of checks the operator explicitly overrides; the install journals them.
    pub overrides: Vec<String>,
}

/// Where the site's TLS certificates come from; see `installer/src/pki` and the `pki`
/// section of docs/answers.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PkiMode {
    /// The installer makes a site CA on the first server and issues every certificate.
    #[default]
    SelfSigned,
    /// The customer's CA (root or intermediate) and its key sign the certificates.
    CustomerCa,
    /// The customer hands over a ready certificate and key for the ingress.
    CustomerCerts,
}

impl PkiMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PkiMode::SelfSigned => "self-signed",
            PkiMode::CustomerCa => "customer-ca",
            PkiMode::CustomerCerts => "customer-certs",
        }
    }
}

impl fmt::Display for PkiMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `pki` answers. The files are target paths, read through the host seam (like
/// `join.token_file`); only the one mode's files are set (the validators see to it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pki {
    pub mode: PkiMode,
    /// customer-ca: the signing CA certificate (PEM; root or intermediate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// customer-ca: its unencrypted PKCS#8 key. Only the path is ever shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    /// customer-ca: the certificates above `ca_cert`, up to and including the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_chain: Option<PathBuf>,
    /// customer-certs: the ingress certificate (PEM; may be followed by intermediates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_key: Option<PathBuf>,
    /// customer-certs: the issuing CA chain up to and including the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_chain: Option<PathBuf>,
    /// self-signed: the IP ranges the site CA may certify (name constraints); empty:
    /// exactly the node addresses the answers list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<IpNet>,
}

/// An IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(IpAddr),
    Name(String),
}

impl Address {
    /// Written for a URL authority: IPv6 addresses in brackets.
    pub fn for_url(&self) -> String {
        match self {
            Address::Ip(IpAddr::V6(a)) => format!("[{a}]"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(a) => a.fmt(f),
            Address::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `host:port`, IPv6 hosts in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: Address,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.for_url(), self.port)
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A warning when the answers file at `path` holds a password (the directory's bind
/// password, the registry's, Keycloak's database's) and others may read it: the site's
/// copies are 0600, the operator's file should be too.
pub fn exposure_warning(path: &Path, answers: &Answers) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let given = |s: Option<&Secret>| s.is_some_and(|s| !s.expose().is_empty() && s.expose() != REDACTED);
    let holds_password = given(answers.ldap.as_ref().map(|l| &l.bind_password))
        || given(answers.registry.as_ref().and_then(|r| r.password.as_ref()))
        || given(answers.keycloak_database.as_ref().map(|k| &k.password));
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (holds_password && mode & 0o077 != 0).then(|| {
        format!(
            "{} holds passwords and others may read it (mode {mode:04o})\n  hint: chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

impl Answers {
    /// Reads and validates an answers file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = kept::read_answers_file(path)?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Reads and validates an answers file for installing a bundle that carries
    /// `bundle`: what the bundle needs (`ldap` for Keycloak, ...) is required.
    pub fn load_for_bundle(path: &Path, bundle: &BundleFacts) -> Result<Self> {
        let text = kept::read_answers_file(path)?;
        Self::from_yaml_for(&text, &path.display().to_string(), Some(bundle))
    }

    /// Reads an answers file with `join.server` / `join.token_file` set from the
    /// command line (`airlock join --server --token-file`), then validates the whole
    /// as any file: the flags' values meet the same checks as the keys they set.
    /// `bundle`: as in [`Answers::load_for_bundle`], when known.
    pub fn load_for_join(
        path: &Path,
        server: Option<&str>,
        token_file: Option<&Path>,
        bundle: Option<&BundleFacts>,
    ) -> Result<Self> {
        let text = kept::read_answers_file(path)?;
        Self::from_yaml_for_join(&text, &path.display().to_string(), server, token_file, bundle)
    }

    /// [`Answers::load_for_join`] on answers text (the site's kept answers) named `origin`.
    pub fn from_yaml_for_join(
        text: &str,
        origin: &str,
        server: Option<&str>,
        token_file: Option<&Path>,
        bundle: Option<&BundleFacts>,
    ) -> Result<Self> {
        let origin = origin.to_string();
        if server.is_none() && token_file.is_none() {
            return Self::from_yaml_for(text, &origin, bundle);
        }
        let mut doc: serde_yaml::Value = strict::parse_yaml(text, DOC).map_err(|p| p.into_error(&origin))?;
        let key = |k: &str| serde_yaml::Value::String(k.to_string());
        if let serde_yaml::Value::Mapping(m) = &mut doc {
            let join = m.entry(key("join")).or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
            if let serde_yaml::Value::Mapping(j) = join {
                if let Some(s) = server {
                    j.insert(key("server"), key(s));
                }
                match token_file {
                    Some(t) => {
                        j.insert(key("token_file"), key(&t.to_string_lossy()));
                    }
                    // Where the wizard suggests it too.
                    None if !j.contains_key(key("token_file")) => {
                        j.insert(key("token_file"), key(state::CLUSTER_TOKEN_PATH));
                    }
                    None => {}
                }
            }
        }
        let text = serde_yaml::to_string(&doc).expect("a YAML value serialises");
        Self::from_yaml_for(&text, &format!("{origin} (with --server/--token-file)"), bundle)
    }

    /// Reads and validates answers from YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        Self::from_yaml_for(text, origin, None)
    }

    /// [`Answers::from_yaml`] for installing a bundle that carries `bundle` (when known).
    pub fn from_yaml_for(text: &str, origin: &str, bundle: Option<&BundleFacts>) -> Result<Self> {
        let read = || -> std::result::Result<Self, Problem> {
            let doc = strict::parse_yaml(text, DOC)?;
            let answered = questions::read_document(&doc, bundle)?;
            Self::from_answered(&answered, origin)
        };
        read().map_err(|p| p.into_error(origin))
    }

    /// Types answers that went through `questions::read_document`. The validators have
    /// passed by then, so the parsing here only converts.
    pub(crate) fn from_answered(a: &Answered, origin: &str) -> std::result::Result<Self, Problem> {
        let text = |key: &str| a.text(key).map(str::to_string);
        let req = |key: &str| text(key).ok_or_else(|| Problem::new(key, "missing required key", DOC));
        let members = |key: &str| -> std::result::Result<Vec<Member>, Problem> {
            a.rows(key, &["name", "ip"])
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let ip = conv(&format!("{key}[{i}].ip"), check::host_ip(&r[1]))?;
                    Ok(Member { name: r[0].clone(), ip })
                })
                .collect()
        };

        let node = Node {
            name: req("node.name")?,
            ip: conv("node.ip", check::host_ip(&req("node.ip")?))?,
            role: if a.text("node.role") == Some("agent") { Role::Agent } else { Role::Server },
        };
        let cluster = Cluster {
            ingress_domain: req("cluster.ingress_domain")?,
            tls_san: a
                .list("cluster.tls_san")
                .iter()
                .enumerate()
                .map(|(i, s)| conv(&format!("cluster.tls_san[{i}]"), check::ip_or_fqdn(s)))
                .collect::<std::result::Result<_, _>>()?,
            cluster_cidr: conv("cluster.cluster_cidr", check::cidr(&req("cluster.cluster_cidr")?))?,
            service_cidr: conv("cluster.service_cidr", check::cidr(&req("cluster.service_cidr")?))?,
            cluster_dns: conv("cluster.cluster_dns", check::ip(&req("cluster.cluster_dns")?))?,
        };
        let node_columns: Vec<&str> = nodes::COLUMNS.iter().map(|c| c.key).collect();
        let site_nodes = nodes::typed(&a.rows("nodes", &node_columns)).map_err(|e| e.problem("nodes"))?;
        let ha = if a.has("ha.servers") || a.has("ha.agents") {
            Some(Ha { servers: members("ha.servers")?, agents: members("ha.agents")? })
        } else if site_nodes.len() > 1 {
            let of = |role: Role| site_nodes.iter().filter(|n| n.role == role).map(SiteNode::member).collect();
            Some(Ha { servers: of(Role::Server), agents: of(Role::Agent) })
        } else {
            None
        };
        let join = match (text("join.server"), text("join.token_file")) {
            (Some(server), Some(file)) => Some(Join {
                server: conv("join.server", check::address(&server))?,
                token_file: conv("join.token_file", check::abs_path(&file))?,
            }),
            _ => None,
        };
        let registry = match text("registry.mirror") {
            None => None,
            Some(m) => Some(Registry {
                mirror: conv("registry.mirror", check::host_port(&m))?,
                ca_file: text("registry.ca_file").map(PathBuf::from),
                username: text("registry.username"),
                password: text("registry.password").map(Secret::new),
                delivery: match text("registry.delivery").as_deref() {
                    None | Some("archives") => ImageDelivery::Archives,
                    Some("registry") => ImageDelivery::Registry,
                    Some("both") => ImageDelivery::Both,
                    Some(other) => {
                        return Err(Problem::new(
                            "registry.delivery",
                            format!("`{other}` is not a way to deliver images"),
                            questions::DELIVERY_HINT,
                        ))
                    }
                },
                prefix: text("registry.prefix").unwrap_or_default(),
                push_auth_file: text("registry.push_auth_file").map(PathBuf::from),
            }),
        };
        let proxy = Proxy {
            http_proxy: text("proxy.http_proxy").map(Secret::new),
            https_proxy: text("proxy.https_proxy").map(Secret::new),
            no_proxy: text("proxy.no_proxy"),
            containerd_http_proxy: text("proxy.containerd_http_proxy").map(Secret::new),
            containerd_https_proxy: text("proxy.containerd_https_proxy").map(Secret::new),
            containerd_no_proxy: text("proxy.containerd_no_proxy"),
        };
        Ok(Self {
            origin: origin.to_string(),
            profile: req("profile")?,
            proxy,
            node,
            cluster,
            ha,
            nodes: site_nodes,
            join,
            registry,
            data_dir: PathBuf::from(req("data_dir")?),
            preflight: Preflight { overrides: a.list("preflight.overrides") },
            pki: pki_answers(a)?,
            ldap: crate::site::ldap::LdapSettings::from_answered(a)?,
            keycloak_database: keycloak_db::KeycloakDatabaseAnswers::from_answered(a)?,
            monitoring: MonitoringAnswers {
                grafana_admin_group: text("monitoring.grafana_admin_group")
                    .unwrap_or_else(|| MonitoringAnswers::DEFAULT_ADMIN_GROUP.into()),
                grafana_editor_group: text("monitoring.grafana_editor_group")
                    .unwrap_or_else(|| MonitoringAnswers::DEFAULT_EDITOR_GROUP.into()),
                alert_webhook_url: text("monitoring.alert_webhook_url"),
                alert_mail: match text("monitoring.alert_smtp_smarthost") {
                    None => None,
                    // The questions require both addresses once a relay is named.
                    Some(smarthost) => Some(AlertMail {
                        smarthost,
                        from: req("monitoring.alert_email_from")?,
                        to: req("monitoring.alert_email_to")?,
                    }),
                },
            },
            backup: BackupAnswers {
                recipients: a.list("backup.recipients"),
                // The question's check has passed: the interval parses.
                rpo_secs: text("backup.rpo")
                    .and_then(|r| crate::ops::backup::schedule::parse_interval(&r).ok())
                    .map(|d| d.as_secs()),
            },
            skipped_checks: Vec::new(),
        })
    }

    /// The profile these answers name, among the bundle's.
    pub fn profile_in<'p>(&self, profiles: &'p [Profile]) -> Result<&'p Profile> {
        profile_named(&self.profile, profiles).map_err(|p| p.into_error(&self.origin))
    }

    /// Cross-checks the answers against the profile they will install: the topology
    /// against `ha`, the role against what the profile allows, the server count.
    pub fn validate_against(&self, profile: &Profile) -> Result<()> {
        self.problems_against(profile).map_err(|p| p.into_error(&self.origin))
    }

    pub(crate) fn problems_against(&self, p: &Profile) -> std::result::Result<(), Problem> {
        if self.profile != p.name {
            return Err(Problem::new(
                "profile",
                format!("names `{}`, but it is being checked against the profile `{}`", self.profile, p.name),
                "set `profile` to the profile you install with",
            ));
        }
        self.nodes_against(p)?;
        match p.topology {
            Topology::SingleNode => {
                if self.ha.is_some() {
                    return Err(Problem::new(
                        "ha",
                        format!("the profile `{}` installs a single node, so `ha` does not apply", p.name),
                        "remove the `ha` section, or choose a profile with `topology: ha`",
                    ));
                }
                if self.node.role == Role::Agent {
                    return Err(Problem::new(
                        "node.role",
                        format!("is `agent`, but the profile `{}` installs a single server", p.name),
                        "set `node.role: server` (the default), or choose a profile with `topology: ha`",
                    ));
                }
            }
            Topology::Ha { servers, agents } => {
                let Some(ha) = self.ha.as_ref().filter(|ha| !ha.servers.is_empty()) else {
                    return Err(Problem::new(
                        "ha.servers",
                        format!("missing required key: the profile `{}` installs {servers} servers", p.name),
                        format!(
                            "list all {servers} servers by name and ip, the first one starts the cluster; see {DOC}"
                        ),
                    ));
                };
                if ha.servers.len() != usize::from(servers) {
                    return Err(Problem::new(
                        "ha.servers",
                        format!("lists {} servers, but the profile `{}` installs {servers}", ha.servers.len(), p.name),
                        format!("list exactly {servers} servers, this one included"),
                    ));
                }
                if !agents && !ha.agents.is_empty() {
                    return Err(Problem::new(
                        "ha.agents",
                        format!("the profile `{}` takes no agents", p.name),
                        "remove `ha.agents`, or choose a profile that allows agents",
                    ));
                }
            }
        }
        Ok(())
    }

    /// `nodes:` against the profile's topology, named by the `nodes` key (the `ha` it
    /// implies is checked after, but an operator who wrote `nodes` looks there).
    fn nodes_against(&self, p: &Profile) -> std::result::Result<(), Problem> {
        if self.nodes.len() < 2 {
            return Ok(());
        }
        match p.topology {
            Topology::SingleNode => Err(Problem::new(
                "nodes",
                format!("lists {} nodes, but the profile `{}` installs a single node", self.nodes.len(), p.name),
                "list only this node (or remove `nodes`), or choose a profile with `topology: ha`",
            )),
            Topology::Ha { servers, agents } => {
                let n = self.nodes.iter().filter(|n| n.role == Role::Server).count();
                if n != usize::from(servers) {
                    return Err(Problem::new(
                        "nodes",
                        format!("lists {n} servers, but the profile `{}` installs {servers}", p.name),
                        format!("give exactly {servers} nodes `role: server`, this one included"),
                    ));
                }
                if let Some(i) = self.nodes.iter().position(|n| n.role == Role::Agent).filter(|_| !agents) {
                    return Err(Problem::new(
                        format!("nodes[{i}].role"),
                        format!("is agent, but the profile `{}` takes no agents", p.name),
                        "make it a server, remove the node, or choose a profile that allows agents",
                    ));
                }
                Ok(())
            }
        }
    }

    /// This node starts the cluster: a single server, or the first of the HA servers.
    /// It generates the join token; every other node joins it.
    pub fn starts_cluster(&self) -> bool {
        let first = self.ha.as_ref().and_then(|ha| ha.servers.first());
        self.node.role == Role::Server
            && match first {
                None => true,
                Some(first) => first.ip == self.node.ip,
            }
    }

    /// Whether this node's config gets `cluster-init: true`: only K3s's first HA server
    /// (a single K3s server keeps SQLite; RKE2 always runs etcd and has no such flag).
    pub fn cluster_init(&self, distribution: DistributionKind) -> bool {
        distribution == DistributionKind::K3s && self.ha.is_some() && self.starts_cluster()
    }

    /// The `server:` URL this node joins: port 6443 for K3s, 9345 (supervisor) for RKE2.
    pub fn join_url(&self, distribution: DistributionKind) -> Option<String> {
        let port = match distribution {
            DistributionKind::K3s => 6443,
            DistributionKind::Rke2 => 9345,
        };
        self.join.as_ref().map(|j| format!("https://{}:{port}", j.server.for_url()))
    }
}

/// The typed `pki` section; its validators have passed (see questions.rs).
fn pki_answers(a: &Answered) -> std::result::Result<Pki, Problem> {
    let path = |key: &str| a.text(key).map(PathBuf::from);
    let mode = match a.text("pki.mode") {
        None | Some("self-signed") => PkiMode::SelfSigned,
        Some("customer-ca") => PkiMode::CustomerCa,
        Some("customer-certs") => PkiMode::CustomerCerts,
        Some(other) => {
            return Err(Problem::new("pki.mode", format!("`{other}` is not a PKI mode"), questions::PKI_MODE_HINT))
        }
    };
    let ip_ranges = a
        .list("pki.ip_ranges")
        .iter()
        .enumerate()
        .map(|(i, s)| conv(&format!("pki.ip_ranges[{i}]"), check::cidr(s)))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Pki {
        mode,
        ca_cert: path("pki.ca_cert"),
        ca_key: path("pki.ca_key"),
        ca_chain: path("pki.ca_chain"),
        ingress_cert: path("pki.ingress_cert"),
        ingress_key: path("pki.ingress_key"),
        ingress_chain: path("pki.ingress_chain"),
        ip_ranges,
    })
}

/// A validator's verdict as a problem at `key`.
fn conv<T>(key: &str, r: std::result::Result<T, check::Invalid>) -> std::result::Result<T, Problem> {
    r.map_err(|e| e.problem(key))
}

/// Finds a profile by name, or says which ones there are.
pub(crate) fn profile_named<'p>(name: &str, profiles: &'p [Profile]) -> std::result::Result<&'p Profile, Problem> {
    profiles.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        Problem::new(
            "profile",
            format!("`{name}` is not a profile of this bundle"),
            format!("the bundle has: {} (`airlock inspect BUNDLE` lists them)", names.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests;
