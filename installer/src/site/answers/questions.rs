//! The question list: every answers key with its prompt, help line, default and
//! validator, as data.
//!
//! The list is the schema. `read_document` walks an answers file with it (the allowed
//! keys, what is required, what each value must be), and [`super::wizard::ask`] asks
//! it. Validators and defaults only look at answers to *earlier* questions, so a file
//! (read top to bottom in list order) and the wizard (asked in list order) see exactly
//! the same context at every key.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_yaml::{Mapping, Value};

use super::check::{self, Invalid};
use super::keycloak_db;
use super::strict::{Field, Map, Problem};
use super::{Address, DEFAULT_DATA_DIR, DOC, REDACTED};
use crate::site::ldap;
use crate::site::profile::{Profile, Topology};
use crate::state::CLUSTER_TOKEN_PATH as DEFAULT_TOKEN_FILE;

/// Checks one typed value, given the answers so far.
pub type Check = fn(&str, &Answered) -> Result<(), Invalid>;
/// Checks a whole list after each item passed its own check.
pub type ListCheck = fn(&[String], &Answered) -> Result<(), Invalid>;
/// Checks a whole table after each cell passed its column's check.
pub type TableCheck = fn(&[Row], &Answered) -> Result<(), Invalid>;
/// One table row, cells in column order.
pub type Row = Vec<String>;
/// A wizard-only pre-filled answer, from earlier answers and host facts.
pub type Suggest = fn(&Answered, &Facts) -> Option<String>;

/// One answers key and how to ask for it.
pub struct Question {
    /// Key path in the answers file: `node.ip`, `cluster.service_cidr`.
    pub key: &'static str,
    /// Prompt text for the wizard.
    pub prompt: &'static str,
    /// One line on what the answer is for; shown under the prompt and in hints.
    pub help: &'static str,
    pub shape: Shape,
    pub need: Need,
    /// The wizard's pre-filled answer where [`Need::Default`] has none (the host name
    /// for `node.name`). Files never get it: a file states what it means.
    pub suggest: Suggest,
    /// Whether the wizard asks at all (HA questions only for an HA profile). When it
    /// does not, the key gets its [`Need::Default`], as in a file that leaves it out.
    pub ask_if: fn(&Answered, &Facts) -> bool,
}

/// What kind of value a question takes.
pub enum Shape {
    /// One value typed in.
    Text(Check),
    /// One value typed without echo and never printed (kept as a [`super::Secret`]).
    Secret(Check),
    /// One value out of a few; `check` also enforces the choice for files.
    Choice { options: fn(&Facts) -> Vec<String>, check: Check },
    /// Several values; the wizard takes them comma-separated.
    List { item: Check, all: ListCheck },
    /// Rows of the same columns (`ha.servers`: name, ip); the wizard asks row by row.
    Table { columns: &'static [Column], all: TableCheck },
}

/// A column of a [`Shape::Table`].
pub struct Column {
    pub key: &'static str,
    /// `{n}` stands for the row number, from 1.
    pub prompt: &'static str,
    pub help: &'static str,
    pub check: Check,
    /// The wizard's pre-filled cell for row `usize` (from 0).
    pub suggest: fn(&Answered, &Facts, usize) -> Option<String>,
    /// A cell a row may leave out (read as empty). The wizard does not ask it: what it
    /// sets (an SSH user or port) usually comes from `~/.ssh/config` instead.
    pub optional: bool,
}

/// Whether a key must be there.
pub enum Need {
    Required,
    Optional,
    /// Absent means this value, in a file and as the wizard's default.
    Default(fn(&Answered) -> String),
    /// Required when the function gives a reason (from earlier answers), else optional.
    RequiredIf(fn(&Answered) -> Option<&'static str>),
}

impl Need {
    /// Why the key is required given the answers so far; `None` when it may be left out.
    pub fn required(&self, a: &Answered) -> Option<&'static str> {
        match self {
            Need::Required => Some("every install needs it"),
            Need::RequiredIf(f) => f(a),
            Need::Optional | Need::Default(_) => None,
        }
    }
}

/// What the wizard knows about the host and the bundle before asking.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub host: HostFacts,
    /// The bundle's profiles; `profile` is chosen among them.
    pub profiles: Vec<Profile>,
    /// The bundle's charts, which decide what else is required; `None`: not known.
    pub bundle: Option<BundleFacts>,
}

/// What the bundle being installed carries, where that decides which answers are
/// required: Keycloak (chart `keycloakx`) federates its users from a directory, so it
/// needs `ldap`, and in HA it needs an external database (`keycloak_database`).
///
/// The charts come from the signed manifest alone, so an answers file that lacks
/// them is refused before the bundle is staged (which reads every byte of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleFacts {
    /// `(chart name, component)` of every chart the bundle carries.
    pub charts: Vec<(String, String)>,
    /// `(profile name, components it installs)`, where known (after staging). A
    /// profile not listed is taken to install every component that carries a chart.
    pub profiles: Vec<(String, Vec<String>)>,
}

impl BundleFacts {
    /// The charts of a (signature-checked) manifest; profiles are not known yet.
    pub fn from_manifest(m: &airlock_format::manifest::Manifest) -> Self {
        Self { charts: m.charts.iter().map(|c| (c.name.clone(), c.component.clone())).collect(), profiles: Vec::new() }
    }

    /// Adds which components each profile installs (known once profiles are read).
    pub fn with_profiles(mut self, profiles: &[Profile]) -> Self {
        self.profiles = profiles.iter().map(|p| (p.name.clone(), p.components.clone())).collect();
        self
    }

    /// Whether the profile `profile` (any, when `None` or not listed) installs `chart`.
    pub fn installs(&self, chart: &str, profile: Option<&str>) -> bool {
        let components = profile.and_then(|name| self.profiles.iter().find(|(n, _)| n == name)).map(|(_, c)| c);
        self.charts.iter().any(|(name, component)| name == chart && components.is_none_or(|c| c.contains(component)))
    }
}

/// Simple facts about the host, for suggested answers.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    pub hostname: Option<String>,
    /// The source address of the default route.
    pub primary_ip: Option<IpAddr>,
}

impl Facts {
    /// The profile chosen so far, if it is one of the bundle's.
    pub fn profile(&self, a: &Answered) -> Option<&Profile> {
        let name = a.text("profile")?;
        self.profiles.iter().find(|p| p.name == name)
    }
}

/// Answers given so far, as the YAML document an answers file would hold.
///
/// Validators read earlier answers from it; the wizard builds it up and hands it to
/// the same reader as a file. `Debug` lists keys only, since values may be secrets.
#[derive(Clone, Default, PartialEq)]
pub struct Answered {
    doc: Mapping,
    /// Context, not answers: what the bundle carries, when known.
    bundle: Option<BundleFacts>,
    /// Live checks the operator skipped after they failed (not part of the document).
    skipped: Vec<SkippedCheck>,
}

/// A wizard live check that failed and that the operator chose to skip (the directory
/// out of reach from where the wizard ran). The install records it in its journal and,
/// on the running system, tests again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedCheck {
    /// The section it checks: `ldap`.
    pub section: String,
    /// Why it failed, as shown to the operator (holds no secret).
    pub problem: String,
}

impl fmt::Debug for Answered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = questions().iter().filter(|q| self.has(q.key)).map(|q| q.key.to_string()).collect();
        f.debug_struct("Answered").field("keys", &keys).finish()
    }
}

impl Answered {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match key.split_once('.') {
            Some((section, k)) => self.doc.get(section)?.as_mapping()?.get(k),
            None => self.doc.get(key),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// A list answer; empty when absent.
    pub fn list(&self, key: &str) -> Vec<String> {
        let items = self.get(key).and_then(Value::as_sequence);
        items.into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// A table answer, cells in `columns` order; empty when absent.
    pub fn rows(&self, key: &str, columns: &[&str]) -> Vec<Row> {
        let rows = self.get(key).and_then(Value::as_sequence).into_iter().flatten();
        let cell = |r: &Value, c: &str| r.get(c).and_then(Value::as_str).unwrap_or_default().to_string();
        rows.map(|r| columns.iter().map(|c| cell(r, c)).collect()).collect()
    }

    pub fn set(&mut self, key: &str, value: Value) {
        match key.split_once('.') {
            Some((section, k)) => {
                let entry = self.doc.entry(section.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
                if let Value::Mapping(m) = entry {
                    m.insert(k.into(), value);
                }
            }
            None => {
                self.doc.insert(key.into(), value);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        match key.split_once('.') {
            Some((section, k)) => {
                let now_empty = match self.doc.get_mut(section) {
                    Some(Value::Mapping(m)) => {
                        m.remove(k);
                        m.is_empty()
                    }
                    _ => false,
                };
                if now_empty {
                    self.doc.remove(section);
                }
            }
            None => {
                self.doc.remove(key);
            }
        }
    }

    /// The answers as a YAML document, secrets included, for [`read_document`].
    pub(crate) fn to_value(&self) -> Value {
        Value::Mapping(self.doc.clone())
    }

    /// The answers as an answers file, for the binary to save what the wizard was told
    /// (`--save-answers`). Secrets are written as `<redacted>`, which the reader refuses,
    /// so a saved file cannot silently install with a placeholder password.
    pub fn to_yaml(&self) -> String {
        let mut copy = self.clone();
        for q in questions() {
            if matches!(q.shape, Shape::Secret(_)) && copy.has(q.key) {
                copy.set(q.key, Value::String(REDACTED.into()));
            }
        }
        serde_yaml::to_string(&copy.doc).unwrap_or_default()
    }

    /// Empty answers for installing a bundle that carries `bundle` (when known).
    pub fn for_bundle(bundle: Option<BundleFacts>) -> Self {
        Self { doc: Mapping::new(), bundle, skipped: Vec::new() }
    }

    /// The live checks skipped after a failure, in the order they were skipped.
    pub fn skipped_checks(&self) -> &[SkippedCheck] {
        &self.skipped
    }

    /// Records that the operator skipped the failed live check of `section`.
    pub(crate) fn skip_check(&mut self, section: &str, problem: &Problem) {
        self.skipped.retain(|s| s.section != section);
        self.skipped.push(SkippedCheck {
            section: section.to_string(),
            problem: format!("{}: {}", problem.key, problem.cause),
        });
    }

    /// This node starts the cluster (a single server, or the first of `ha.servers`).
    pub(crate) fn starts_cluster(&self) -> bool {
        starts_cluster(self)
    }

    pub(crate) fn bundle(&self) -> Option<&BundleFacts> {
        self.bundle.as_ref()
    }

    /// Whether the bundle being installed, with the profile answered so far, installs
    /// Keycloak. `false` when the bundle is not known (`airlock ldap test`): install
    /// checks it again at plan time.
    pub fn installs_keycloak(&self) -> bool {
        self.bundle.as_ref().is_some_and(|b| b.installs(keycloak_db::KEYCLOAK_CHART, self.text("profile")))
    }

    /// Whether the bundle, with the profile answered so far, installs the monitoring
    /// component (its Grafana). `false` when the bundle is not known.
    pub fn installs_monitoring(&self) -> bool {
        self.bundle
            .as_ref()
            .is_some_and(|b| b.installs(crate::render::platform::monitoring::GRAFANA_CHART, self.text("profile")))
    }

    // Typed views of earlier answers for the validators. An earlier answer that is
    // missing or malformed reads as `None`: its own question reports it.

    pub(super) fn node_ip(&self) -> Option<IpAddr> {
        self.text("node.ip")?.parse().ok()
    }
    pub(super) fn node_name(&self) -> Option<&str> {
        self.text("node.name")
    }
    pub(super) fn is_agent(&self) -> bool {
        self.text("node.role") == Some("agent")
    }
    pub(super) fn net(&self, key: &str) -> Option<IpNet> {
        self.text(key)?.parse().ok()
    }
    pub(super) fn members(&self, key: &str) -> Vec<(String, Option<IpAddr>)> {
        self.rows(key, &["name", "ip"]).into_iter().map(|r| (r[0].clone(), r[1].parse().ok())).collect()
    }
}

fn needs_mail_addresses(a: &Answered) -> Option<&'static str> {
    a.text("monitoring.alert_smtp_smarthost")
        .map(|_| "`monitoring.alert_smtp_smarthost` is set, so alert mails need a sender and a recipient")
}

fn check_webhook_url(s: &str, _: &Answered) -> Result<(), Invalid> {
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('@'))
        && !s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c.is_control());
    if !ok {
        return Err(Invalid::new(
            format!("`{s}` is not an http(s) URL without credentials"),
            "write e.g. https://alerts.example.internal/hook; keep credentials out of it",
        ));
    }
    Ok(())
}

fn check_smarthost(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::host_port(s).map(|_| ())
}

fn check_mail_address(s: &str, _: &Answered) -> Result<(), Invalid> {
    let ok = s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !s.chars().any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>' || c.is_control());
    if !ok {
        return Err(Invalid::new(format!("`{s}` is not a mail address"), "write e.g. ops@example.org"));
    }
    Ok(())
}

/// A directory group's name as Keycloak puts it into the `groups` claim; Grafana's
/// role mapping quotes it in a JMESPath expression.
fn check_group_name(s: &str, _: &Answered) -> Result<(), Invalid> {
    if s.trim().is_empty() || s.len() > 256 || s.chars().any(|c| c == '\'' || c == '\\' || c.is_control()) {
        return Err(Invalid::new(
            format!("`{s}` is not a usable group name (empty, over 256 characters, or holding a quote, a backslash or a control character)"),
            "give the group's plain name (its cn), as the directory's users see it",
        ));
    }
    Ok(())
}

fn no_suggestion(_: &Answered, _: &Facts) -> Option<String> {
    None
}
fn always(_: &Answered, _: &Facts) -> bool {
    true
}
fn never(_: &Answered, _: &Facts) -> bool {
    false
}

/// The monitoring questions: when the profile installs monitoring, on the node that
/// starts the cluster (where its values are rendered).
fn asks_monitoring(a: &Answered, _: &Facts) -> bool {
    a.installs_monitoring() && a.starts_cluster()
}

fn asks_grafana_groups(a: &Answered, f: &Facts) -> bool {
    asks_monitoring(a, f) && a.has("ldap.url")
}

fn asks_mail(a: &Answered, f: &Facts) -> bool {
    asks_monitoring(a, f) && a.has("monitoring.alert_smtp_smarthost")
}

/// The questions, in the order they are asked and validated.
pub fn questions() -> &'static [Question] {
    QUESTIONS
}

static QUESTIONS: &[Question] = &[
    Question {
        key: "profile",
        prompt: "Install profile",
        help: "how to install: distribution, topology and components (one of the bundle's profiles)",
        shape: Shape::Choice { options: profile_names, check: check_profile },
        need: Need::Required,
        suggest: suggest_profile,
        ask_if: always,
    },
    Question {
        key: "node.name",
        prompt: "Name of this node",
        help: "the Kubernetes node name: lowercase RFC 1123, usually the host name",
        shape: Shape::Text(check_node_name),
        need: Need::Required,
        suggest: suggest_node_name,
        ask_if: always,
    },
    Question {
        key: "node.ip",
        prompt: "IP address of this node",
        help: "the IPv4 or IPv6 address other nodes and clients reach this node at",
        shape: Shape::Text(check_node_ip),
        need: Need::Required,
        suggest: suggest_node_ip,
        ask_if: always,
    },
    Question {
        key: "node.role",
        prompt: "Role of this node",
        help: "server runs the control plane (and etcd); agent runs workloads and joins a server",
        shape: Shape::Choice { options: role_names, check: check_role },
        need: Need::Default(default_role),
        suggest: no_suggestion,
        ask_if: profile_may_be_ha,
    },
    Question {
        key: "cluster.ingress_domain",
        prompt: "Base domain for the platform's web addresses",
        help: "an FQDN; services are published below it (keycloak.<domain>), so DNS must resolve *.<domain> to the nodes",
        shape: Shape::Text(check_ingress_domain),
        need: Need::Required,
        suggest: no_suggestion,
        ask_if: always,
    },
    Question {
        key: "cluster.tls_san",
        prompt: "Extra names for the Kubernetes API certificate",
        help: "IPs or FQDNs of a load balancer or DNS alias for the API, comma-separated; node names and IPs are included anyway",
        shape: Shape::List { item: check_tls_san, all: check_unique_items },
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: is_server,
    },
    Question {
        key: "cluster.cluster_cidr",
        prompt: "Pod network (CIDR)",
        help: "the pods' address range; must not overlap any network of the site or the service network",
        shape: Shape::Text(check_cluster_cidr),
        need: Need::Default(default_cluster_cidr),
        suggest: no_suggestion,
        ask_if: is_server,
    },
    Question {
        key: "cluster.service_cidr",
        prompt: "Service network (CIDR)",
        help: "the services' address range; must not overlap any network of the site or the pod network",
        shape: Shape::Text(check_service_cidr),
        need: Need::Default(default_service_cidr),
        suggest: no_suggestion,
        ask_if: is_server,
    },
    Question {
        key: "cluster.cluster_dns",
        prompt: "Cluster DNS address",
        help: "the cluster DNS service's IP, inside the service network (by default its 10th address)",
        shape: Shape::Text(check_cluster_dns),
        need: Need::Default(default_cluster_dns),
        suggest: no_suggestion,
        ask_if: is_server,
    },
    Question {
        key: "nodes",
        prompt: "Nodes of the cluster",
        help: "every node `airlock install` sets up from this one over SSH, this node first; replaces `ha`",
        shape: Shape::Table { columns: NODE_COLUMNS, all: super::nodes::check_nodes },
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: super::nodes::asks_nodes,
    },
    Question {
        key: "ha.servers",
        prompt: "HA servers",
        help: "every server (this node too, if it is one), in the same order on every node; the first starts the cluster",
        shape: Shape::Table { columns: SERVER_COLUMNS, all: check_servers },
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: profile_may_be_ha_without_nodes,
    },
    Question {
        key: "ha.agents",
        prompt: "HA agents",
        help: "every agent (workload-only node) of the cluster, this one included if it is an agent",
        shape: Shape::Table { columns: AGENT_COLUMNS, all: check_agents },
        need: Need::RequiredIf(agents_required),
        suggest: no_suggestion,
        ask_if: profile_takes_agents_without_nodes,
    },
    Question {
        key: "join.server",
        prompt: "Address of the first server to join",
        help: "the IP or DNS name of the server that started the cluster (ha.servers[0])",
        shape: Shape::Text(check_join_server),
        need: Need::RequiredIf(join_required),
        suggest: suggest_join_server,
        ask_if: must_join,
    },
    Question {
        key: "join.token_file",
        prompt: "Join token file",
        help: "absolute path of the join token file copied from the first server (it wrote it there)",
        shape: Shape::Text(check_token_file),
        need: Need::RequiredIf(token_file_required),
        suggest: suggest_token_file,
        ask_if: joins,
    },
    Question {
        key: "registry.mirror",
        prompt: "Registry mirror (host:port, empty for none)",
        help: "a registry on the site network that serves images, e.g. Harbor; the bundle's images are imported either way",
        shape: Shape::Text(check_mirror),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: always,
    },
    Question {
        key: "registry.ca_file",
        prompt: "Registry CA certificate file (empty: the host's trusted CAs)",
        help: "absolute path of the PEM CA certificate that signed the registry's certificate, not a client cert or key",
        shape: Shape::Text(check_registry_ca_file),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: has_mirror,
    },
    Question {
        key: "registry.username",
        prompt: "Registry user name (empty: anonymous pulls)",
        help: "the account images are pulled with",
        shape: Shape::Text(check_registry_username),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: has_mirror,
    },
    Question {
        key: "registry.password",
        prompt: "Registry password",
        help: "the password of that account; never printed, and written only to the registry config (0600)",
        shape: Shape::Secret(check_registry_password),
        need: Need::RequiredIf(password_required),
        suggest: no_suggestion,
        ask_if: has_registry_user,
    },
    Question {
        key: "registry.delivery",
        prompt: "How the bundle's images reach the nodes",
        help: "archives (default: each node imports them from its images directory), registry (pushed into the registry at install and upgrade; nodes pull from it), or both",
        shape: Shape::Choice { options: delivery_names, check: check_delivery },
        need: Need::Optional,
        suggest: suggest_delivery,
        ask_if: has_mirror,
    },
    Question {
        key: "registry.prefix",
        prompt: "Repository prefix in the registry (e.g. the Harbor project; empty: none)",
        help: "the images go to <mirror>/<prefix>/<upstream host>/<repository>, as `airlock registry push --to <mirror>/<prefix>` puts them",
        shape: Shape::Text(check_registry_prefix),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: pushes_images,
    },
    Question {
        key: "registry.push_auth_file",
        prompt: "Login file for pushing (docker config.json, mode 0600; empty: the pull account above)",
        help: "absolute path of a docker config.json whose entry for the registry may push (e.g. a Harbor robot account); never printed",
        shape: Shape::Text(check_push_auth_file),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: pushes_images,
    },
    Question {
        key: "proxy.http_proxy",
        prompt: "HTTP_PROXY",
        help: "`HTTP_PROXY` in the distribution's service environment (a URL; may hold credentials, so never printed)",
        shape: Shape::Secret(check_proxy_url),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "proxy.https_proxy",
        prompt: "HTTPS_PROXY",
        help: "`HTTPS_PROXY` in the distribution's service environment (a URL; may hold credentials, so never printed)",
        shape: Shape::Secret(check_proxy_url),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "proxy.no_proxy",
        prompt: "NO_PROXY",
        help: "`NO_PROXY` in the distribution's service environment (comma-separated hosts, domains and CIDRs)",
        shape: Shape::Text(check_no_proxy),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "proxy.containerd_http_proxy",
        prompt: "CONTAINERD_HTTP_PROXY",
        help: "`CONTAINERD_HTTP_PROXY` in the distribution's service environment (a URL; may hold credentials, so never printed)",
        shape: Shape::Secret(check_proxy_url),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "proxy.containerd_https_proxy",
        prompt: "CONTAINERD_HTTPS_PROXY",
        help: "`CONTAINERD_HTTPS_PROXY` in the distribution's service environment (a URL; may hold credentials, so never printed)",
        shape: Shape::Secret(check_proxy_url),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "proxy.containerd_no_proxy",
        prompt: "CONTAINERD_NO_PROXY",
        help: "`CONTAINERD_NO_PROXY` in the distribution's service environment (comma-separated hosts, domains and CIDRs)",
        shape: Shape::Text(check_no_proxy),
        need: Need::Optional,
        suggest: no_suggestion,
        // A site behind a proxy is the exception: answers files set it, the wizard
        // does not ask.
        ask_if: never,
    },
    Question {
        key: "data_dir",
        prompt: "Data directory",
        help: "where K3s/RKE2 keep images and cluster state (<data_dir>/k3s or /rke2); needs the most free space",
        shape: Shape::Text(check_data_dir),
        need: Need::Default(default_data_dir),
        suggest: no_suggestion,
        ask_if: always,
    },
    Question {
        key: "preflight.overrides",
        prompt: "Preflight checks to override",
        help: "names of failed preflight checks to go ahead despite; the install journals each override",
        shape: Shape::List { item: check_override, all: check_unique_items },
        need: Need::Optional,
        suggest: no_suggestion,
        // Overrides are a decision about a failure the operator has seen; the binary
        // offers them when a check fails, not as an up-front question.
        ask_if: never,
    },
    // ---- pki: where the platform's TLS certificates come from (installer/src/pki) ----
    // The wizard asks the mode on the node that makes the PKI (Enter keeps the
    // self-signed default), then the chosen mode's files; `pki::wizard::live_check` checks
    // them as a set and asks again from the file that failed.
    Question {
        key: "pki.mode",
        prompt: "TLS certificates",
        help: "self-signed (default: a site CA made here), customer-ca (the customer's CA signs), customer-certs (a ready ingress certificate)",
        shape: Shape::Choice { options: pki_mode_names, check: check_pki_mode },
        need: Need::Optional,
        suggest: suggest_pki_mode,
        ask_if: makes_pki,
    },
    Question {
        key: "pki.ca_cert",
        prompt: "Customer CA certificate file",
        help: "absolute path of the PEM certificate of the CA (root or intermediate) that signs the platform's certificates",
        shape: Shape::Text(check_pki_customer_ca_file),
        need: Need::RequiredIf(customer_ca_required),
        suggest: no_suggestion,
        ask_if: asks_customer_ca,
    },
    Question {
        key: "pki.ca_key",
        prompt: "Customer CA key file",
        help: "absolute path of that CA's private key (unencrypted PKCS#8 PEM); read once at install, never copied or printed",
        shape: Shape::Text(check_pki_customer_ca_file),
        need: Need::RequiredIf(customer_ca_required),
        suggest: no_suggestion,
        ask_if: asks_customer_ca,
    },
    Question {
        key: "pki.ca_chain",
        prompt: "Customer CA chain file",
        help: "absolute path of the PEM certificates above pki.ca_cert up to the root; leave out when pki.ca_cert is the root",
        shape: Shape::Text(check_pki_customer_ca_file),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: asks_customer_ca,
    },
    Question {
        key: "pki.ingress_cert",
        prompt: "Ingress certificate file",
        help: "absolute path of the PEM server certificate for *.<ingress_domain> (or keycloak., minio., app.<domain>)",
        shape: Shape::Text(check_pki_customer_certs_file),
        need: Need::RequiredIf(customer_certs_required),
        suggest: no_suggestion,
        ask_if: asks_customer_certs,
    },
    Question {
        key: "pki.ingress_key",
        prompt: "Ingress key file",
        help: "absolute path of that certificate's private key (unencrypted PKCS#8 PEM)",
        shape: Shape::Text(check_pki_customer_certs_file),
        need: Need::RequiredIf(customer_certs_required),
        suggest: no_suggestion,
        ask_if: asks_customer_certs,
    },
    Question {
        key: "pki.ingress_chain",
        prompt: "Ingress CA chain file",
        help: "absolute path of the PEM certificates of the issuing CA up to and including the root",
        shape: Shape::Text(check_pki_customer_certs_file),
        need: Need::RequiredIf(customer_certs_required),
        suggest: no_suggestion,
        ask_if: asks_customer_certs,
    },
    Question {
        key: "pki.ip_ranges",
        prompt: "IP ranges the site CA may certify",
        help: "CIDRs, comma-separated; the self-signed CA is name-constrained to them (default: exactly the node addresses)",
        shape: Shape::List { item: check_pki_ip_range, all: check_unique_items },
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: never,
    },
    // ---- ldap: the site's LDAP / Active Directory (validators in crate::site::ldap) ----
    Question {
        key: "ldap.url",
        prompt: "LDAP/AD server URL (empty: no directory)",
        help: "ldaps://host:636 or ldap://host:389 of the directory Keycloak federates users from",
        shape: Shape::Text(ldap::check_url),
        need: Need::RequiredIf(ldap::required_for_keycloak),
        suggest: no_suggestion,
        ask_if: always,
    },
    Question {
        key: "ldap.starttls",
        prompt: "Upgrade ldap:// with StartTLS?",
        help: "true protects the bind password on ldap://; not for ldaps://, which is TLS already",
        shape: Shape::Choice { options: ldap::bool_names, check: ldap::check_starttls },
        need: Need::Optional,
        suggest: ldap::suggest_starttls,
        ask_if: ldap::asks_starttls,
    },
    Question {
        key: "ldap.ca_file",
        prompt: "CA certificate of the directory (empty: the host's trusted CAs)",
        help: "absolute path of the PEM CA certificate that signed the directory server's certificate",
        shape: Shape::Text(ldap::check_ca_file),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: ldap::asks_ca_file,
    },
    Question {
        key: "ldap.bind_dn",
        prompt: "Bind DN (the account Keycloak reads the directory with)",
        help: "full DN of a read-only service account, e.g. cn=keycloak,ou=services,dc=example,dc=org",
        shape: Shape::Text(ldap::check_bind_dn),
        need: Need::RequiredIf(ldap::required_with_url),
        suggest: no_suggestion,
        ask_if: ldap::has_url,
    },
    Question {
        key: "ldap.bind_password",
        prompt: "Bind password",
        help: "the service account's password; read without echo and never printed",
        shape: Shape::Secret(ldap::check_bind_password),
        need: Need::RequiredIf(ldap::required_with_url),
        suggest: no_suggestion,
        ask_if: ldap::has_url,
    },
    Question {
        key: "ldap.users_dn",
        prompt: "Users DN (where the users are)",
        help: "the DN the user search starts at (subtree), e.g. ou=people,dc=example,dc=org",
        shape: Shape::Text(ldap::check_users_dn),
        need: Need::RequiredIf(ldap::required_with_url),
        suggest: no_suggestion,
        ask_if: ldap::has_url,
    },
    Question {
        key: "ldap.preset",
        prompt: "Directory type",
        help: "openldap (uid, inetOrgPerson, groupOfNames) or active-directory (sAMAccountName, user, group)",
        shape: Shape::Choice { options: ldap::preset_names, check: ldap::check_preset },
        need: Need::RequiredIf(ldap::required_with_url),
        suggest: ldap::suggest_preset,
        ask_if: ldap::has_url,
    },
    Question {
        key: "ldap.user_filter",
        prompt: "Extra user filter (empty: all users of the preset's object classes)",
        help: "an LDAP filter ANDed to the user search, e.g. (memberOf=cn=staff,ou=groups,dc=example,dc=org)",
        shape: Shape::Text(ldap::check_user_filter),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: ldap::has_url,
    },
    Question {
        key: "ldap.groups_dn",
        prompt: "Groups DN (empty: no group mapping)",
        help: "the DN the group search starts at (subtree), e.g. ou=groups,dc=example,dc=org",
        shape: Shape::Text(ldap::check_groups_dn),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: ldap::has_url,
    },
    // ---- monitoring: Grafana's roles from directory groups, Alertmanager's receivers;
    //      asked when the profile installs monitoring on the node that starts the cluster ----
    Question {
        key: "monitoring.grafana_admin_group",
        prompt: "Directory group whose members are Grafana admins (empty: grafana-admins)",
        help: "members of this LDAP/AD group (the `groups` claim Keycloak issues) get Grafana's Admin role (default grafana-admins)",
        shape: Shape::Text(check_group_name),
        need: Need::Optional,
        suggest: no_suggestion,
        // The roles come from the directory's groups: without a directory, no question.
        ask_if: asks_grafana_groups,
    },
    Question {
        key: "monitoring.grafana_editor_group",
        prompt: "Directory group whose members are Grafana editors (empty: grafana-editors)",
        help: "members of this LDAP/AD group get Grafana's Editor role (default grafana-editors); everyone else who can log in is a Viewer",
        shape: Shape::Text(check_group_name),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: asks_grafana_groups,
    },
    Question {
        key: "monitoring.alert_webhook_url",
        prompt: "Webhook Alertmanager posts alerts to (empty: none)",
        help: "an http(s) URL inside the site network that takes Alertmanager's webhook JSON; no credentials in it (it is in the chart's values)",
        shape: Shape::Text(check_webhook_url),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: asks_monitoring,
    },
    Question {
        key: "monitoring.alert_smtp_smarthost",
        prompt: "SMTP relay Alertmanager mails alerts through (host:port; empty: no mails)",
        help: "the site's mail relay, host:port, reached without authentication (STARTTLS when it offers it)",
        shape: Shape::Text(check_smarthost),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: asks_monitoring,
    },
    Question {
        key: "monitoring.alert_email_from",
        prompt: "Sender address of alert mails",
        help: "the From: address of Alertmanager's mails",
        shape: Shape::Text(check_mail_address),
        need: Need::RequiredIf(needs_mail_addresses),
        suggest: no_suggestion,
        ask_if: asks_mail,
    },
    Question {
        key: "monitoring.alert_email_to",
        prompt: "Recipient of alert mails",
        help: "where Alertmanager sends alert mails (one address, e.g. a team's list)",
        shape: Shape::Text(check_mail_address),
        need: Need::RequiredIf(needs_mail_addresses),
        suggest: no_suggestion,
        ask_if: asks_mail,
    },
    // ---- backup: who can open the site's backups (installer/src/ops/backup) ----
    Question {
        key: "backup.recipients",
        prompt: "Recovery public keys backups are encrypted to",
        help: "age public keys (age1...), one per person or safe who may restore; make one with `age-keygen -o recovery.key` and keep the key file off the site",
        shape: Shape::List { item: check_age_recipient, all: check_unique_items },
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: never,
    },
    Question {
        key: "backup.rpo",
        prompt: "Recovery point objective (the oldest a last backup may be)",
        help: "e.g. 24h: `airlock status` reports a problem when the last good backup is older (default: the schedule's interval)",
        shape: Shape::Text(check_interval),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: never,
    },
    // ---- keycloak_database: Keycloak's external database (validators in keycloak_db.rs) ----
    Question {
        key: "keycloak_database.host",
        prompt: "Keycloak database server (host name or IP)",
        help: "the database Keycloak keeps realms, users and sessions in; HA needs one, since Keycloak's own file database cannot be shared",
        shape: Shape::Text(keycloak_db::check_host),
        need: Need::RequiredIf(keycloak_db::required),
        suggest: no_suggestion,
        ask_if: keycloak_db::asks,
    },
    Question {
        key: "keycloak_database.vendor",
        prompt: "Keycloak database type",
        help: "postgres (default), mariadb, mysql, mssql or oracle",
        shape: Shape::Choice { options: keycloak_db::vendor_names, check: keycloak_db::check_vendor },
        need: Need::Optional,
        suggest: keycloak_db::suggest_vendor,
        ask_if: keycloak_db::has_host,
    },
    Question {
        key: "keycloak_database.port",
        prompt: "Keycloak database port",
        help: "the database server's TCP port (default: the vendor's, 5432 for postgres)",
        shape: Shape::Text(keycloak_db::check_port),
        need: Need::Optional,
        suggest: keycloak_db::suggest_port,
        ask_if: keycloak_db::has_host,
    },
    Question {
        key: "keycloak_database.name",
        prompt: "Keycloak database name",
        help: "the database created for Keycloak, owned by its account (Keycloak creates its tables at first start)",
        shape: Shape::Text(keycloak_db::check_name),
        need: Need::RequiredIf(keycloak_db::required_with_host),
        suggest: keycloak_db::suggest_name,
        ask_if: keycloak_db::has_host,
    },
    Question {
        key: "keycloak_database.username",
        prompt: "Keycloak database user",
        help: "the account Keycloak logs in to the database with",
        shape: Shape::Text(keycloak_db::check_username),
        need: Need::RequiredIf(keycloak_db::required_with_host),
        suggest: keycloak_db::suggest_name,
        ask_if: keycloak_db::has_host,
    },
    Question {
        key: "keycloak_database.password",
        prompt: "Keycloak database password",
        help: "that account's password; read without echo, never printed, and given to Keycloak only through a Kubernetes Secret",
        shape: Shape::Secret(keycloak_db::check_password),
        need: Need::RequiredIf(keycloak_db::required_with_host),
        suggest: no_suggestion,
        ask_if: keycloak_db::has_host,
    },
    Question {
        key: "keycloak_database.ca_file",
        prompt: "CA certificate of the database server (empty: no certificate check)",
        help: "postgres only: absolute path of the PEM CA that signed the server's certificate; Keycloak then connects with sslmode=verify-full",
        shape: Shape::Text(keycloak_db::check_ca_file),
        need: Need::Optional,
        suggest: no_suggestion,
        ask_if: keycloak_db::has_host,
    },
];

static SERVER_COLUMNS: &[Column] = &[
    Column {
        key: "name",
        prompt: "Server {n}: node name (empty to finish)",
        help: "the server's node name, as its node.name",
        check: check_node_name,
        suggest: no_cell_suggestion,
        optional: false,
    },
    Column {
        key: "ip",
        prompt: "Server {n}: IP address",
        help: "the server's address, as its node.ip",
        check: check_node_ip,
        suggest: no_cell_suggestion,
        optional: false,
    },
];

static NODE_COLUMNS: &[Column] = super::nodes::COLUMNS;

static AGENT_COLUMNS: &[Column] = &[
    Column {
        key: "name",
        prompt: "Agent {n}: node name (empty to finish)",
        help: "the agent's node name, as its node.name",
        check: check_node_name,
        suggest: suggest_self_as_agent_name,
        optional: false,
    },
    Column {
        key: "ip",
        prompt: "Agent {n}: IP address",
        help: "the agent's address, as its node.ip",
        check: check_node_ip,
        suggest: suggest_self_as_agent_ip,
        optional: false,
    },
];

// ---- when the wizard asks -------------------------------------------------------

/// HA questions are asked for an HA profile, and for an unknown one (a wizard run
/// without bundle facts) rather than never.
pub(super) fn profile_may_be_ha(a: &Answered, f: &Facts) -> bool {
    match f.profile(a) {
        Some(p) => matches!(p.topology, Topology::Ha { .. }),
        None => true,
    }
}
fn profile_takes_agents(a: &Answered, f: &Facts) -> bool {
    match f.profile(a) {
        Some(p) => matches!(p.topology, Topology::Ha { agents: true, .. }),
        None => true,
    }
}
/// With `nodes:` the cluster's members are listed there; `ha` is derived from it.
fn profile_may_be_ha_without_nodes(a: &Answered, f: &Facts) -> bool {
    !a.has("nodes") && profile_may_be_ha(a, f)
}
fn profile_takes_agents_without_nodes(a: &Answered, f: &Facts) -> bool {
    !a.has("nodes") && profile_takes_agents(a, f)
}
fn is_server(a: &Answered, _: &Facts) -> bool {
    !a.is_agent()
}
fn must_join(a: &Answered, _: &Facts) -> bool {
    join_required(a).is_some()
}
fn joins(a: &Answered, _: &Facts) -> bool {
    a.has("join.server")
}
fn has_mirror(a: &Answered, _: &Facts) -> bool {
    a.has("registry.mirror")
}
fn has_registry_user(a: &Answered, _: &Facts) -> bool {
    a.has("registry.username")
}
/// The bundle's images go into the site registry (`registry.delivery` registry or both).
fn pushes_images(a: &Answered, _: &Facts) -> bool {
    matches!(a.text("registry.delivery"), Some("registry" | "both"))
}

// ---- defaults and suggestions ---------------------------------------------------

fn profile_names(f: &Facts) -> Vec<String> {
    f.profiles.iter().map(|p| p.name.clone()).collect()
}
fn role_names(_: &Facts) -> Vec<String> {
    vec!["server".into(), "agent".into()]
}
fn suggest_profile(_: &Answered, f: &Facts) -> Option<String> {
    match f.profiles.as_slice() {
        [only] => Some(only.name.clone()),
        _ => None,
    }
}
fn suggest_node_name(_: &Answered, f: &Facts) -> Option<String> {
    let name = f.host.hostname.as_deref()?.to_ascii_lowercase();
    check::dns_name(&name).is_ok().then_some(name)
}
fn suggest_node_ip(_: &Answered, f: &Facts) -> Option<String> {
    f.host.primary_ip.filter(|ip| check::host_ip(&ip.to_string()).is_ok()).map(|ip| ip.to_string())
}
fn default_role(_: &Answered) -> String {
    "server".into()
}
/// K3s's defaults for IPv4; for an IPv6 node, unique-local ranges of the same shape,
/// because a single-stack cluster takes its networks from the node's family.
fn default_cluster_cidr(a: &Answered) -> String {
    if matches!(a.node_ip(), Some(IpAddr::V6(_))) { "fd00:42::/56" } else { "10.42.0.0/16" }.into()
}
fn default_service_cidr(a: &Answered) -> String {
    if matches!(a.node_ip(), Some(IpAddr::V6(_))) { "fd00:43::/112" } else { "10.43.0.0/16" }.into()
}
/// The 10th address of the service network, as K3s and RKE2 default it.
fn default_cluster_dns(a: &Answered) -> String {
    let net = a.net("cluster.service_cidr").or_else(|| default_service_cidr(a).parse().ok());
    net.and_then(|net| check::nth_address(&net, 10)).map(|ip| ip.to_string()).unwrap_or_default()
}
fn default_data_dir(_: &Answered) -> String {
    DEFAULT_DATA_DIR.into()
}
/// No suggestion for the servers: their order decides which one starts the cluster,
/// and a default of "this node first" accepted on a second server would start a
/// second, split cluster.
fn no_cell_suggestion(_: &Answered, _: &Facts, _: usize) -> Option<String> {
    None
}
fn suggest_self_as_agent_name(a: &Answered, _: &Facts, row: usize) -> Option<String> {
    (row == 0 && a.is_agent()).then(|| a.node_name().map(str::to_string))?
}
fn suggest_self_as_agent_ip(a: &Answered, _: &Facts, row: usize) -> Option<String> {
    (row == 0 && a.is_agent()).then(|| a.text("node.ip").map(str::to_string))?
}
fn suggest_join_server(a: &Answered, _: &Facts) -> Option<String> {
    a.members("ha.servers").first().and_then(|(_, ip)| *ip).map(|ip| ip.to_string())
}
fn suggest_token_file(_: &Answered, _: &Facts) -> Option<String> {
    Some(DEFAULT_TOKEN_FILE.into())
}

// ---- when keys are required -------------------------------------------------------

/// This node starts the cluster: a server that is alone or first in `ha.servers`.
pub(super) fn starts_cluster(a: &Answered) -> bool {
    if a.is_agent() {
        return false;
    }
    match a.members("ha.servers").first() {
        None => true,
        Some((_, ip)) => *ip == a.node_ip(),
    }
}
fn join_required(a: &Answered) -> Option<&'static str> {
    if a.is_agent() {
        Some("this node is an agent, and agents join a server")
    } else if !starts_cluster(a) {
        Some("only the first of ha.servers starts the cluster; the other servers join it")
    } else {
        None
    }
}
fn token_file_required(a: &Answered) -> Option<&'static str> {
    a.has("join.server").then_some("joining needs the token the first server generated")
}
fn agents_required(a: &Answered) -> Option<&'static str> {
    (a.is_agent() && a.has("ha.servers")).then_some("this node is an agent, so it is listed among the agents")
}
fn password_required(a: &Answered) -> Option<&'static str> {
    a.has("registry.username").then_some("registry.username is set")
}

// ---- validators ---------------------------------------------------------------------

fn check_profile(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::name(s)
}
pub(super) fn check_node_name(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::dns_name(s)
}
fn check_node_ip(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::host_ip(s).map(drop)
}
pub(super) fn check_role(s: &str, _: &Answered) -> Result<(), Invalid> {
    match s {
        "server" | "agent" => Ok(()),
        _ => Err(Invalid::new(format!("`{s}` is not a role"), "write `server` or `agent`")),
    }
}
fn check_ingress_domain(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::fqdn(s)
}
fn check_tls_san(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::ip_or_fqdn(s).map(drop)
}
fn check_unique_items(items: &[String], _: &Answered) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(item) {
            return Err(Invalid::new(format!("`{item}` is listed twice"), "list each entry once").at(format!("[{i}]")));
        }
    }
    Ok(())
}

/// A site address inside a cluster network is unreachable from pods: their traffic to
/// it is routed into the cluster instead. Corporate networks often use 10.x, so this
/// is the most common air-gap network mistake.
fn site_addresses(a: &Answered) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    if let Some(ip) = a.node_ip() {
        out.push(("node.ip".to_string(), ip));
    }
    for key in ["ha.servers", "ha.agents"] {
        for (i, (_, ip)) in a.members(key).into_iter().enumerate() {
            if let Some(ip) = ip {
                out.push((format!("{key}[{i}].ip"), ip));
            }
        }
    }
    out
}

fn clash_with_site(net: &IpNet, what: &str, a: &Answered) -> Result<(), Invalid> {
    if let Some((key, ip)) = site_addresses(a).into_iter().find(|(_, ip)| net.contains(ip)) {
        return Err(Invalid::new(
            format!("`{net}` contains {key} {ip}"),
            format!(
                "the {what} must not overlap a network the site uses; choose a private range no host uses, e.g. {}",
                if net.addr().is_ipv4() { "172.20.0.0/16" } else { "fd00:42::/56" }
            ),
        ));
    }
    Ok(())
}

fn check_cluster_cidr(s: &str, a: &Answered) -> Result<(), Invalid> {
    let net = check::cidr(s)?;
    if let Some(ip) = a.node_ip() {
        if ip.is_ipv4() != net.addr().is_ipv4() {
            return Err(Invalid::new(
                format!("`{s}` is {}, but node.ip {ip} is {}", family(&net.addr()), family(&ip)),
                "a single-stack cluster uses the node's address family; leave the key out for a default of that family",
            ));
        }
    }
    // Each node gets a /24 (IPv4) or /64 (IPv6) of the pod network.
    let node_block = if net.addr().is_ipv4() { 24 } else { 64 };
    if net.prefix_len() > node_block {
        return Err(Invalid::new(
            format!("`{s}` is smaller than one node's pod range (a /{node_block})"),
            format!(
                "use a larger network, e.g. {}",
                if net.addr().is_ipv4() { "10.42.0.0/16" } else { "fd00:42::/56" }
            ),
        ));
    }
    clash_with_site(&net, "pod network", a)
}

fn check_service_cidr(s: &str, a: &Answered) -> Result<(), Invalid> {
    let net = check::cidr(s)?;
    // Kubernetes refuses service networks larger than 2^20 (IPv4) addresses, and the
    // cluster DNS default (the 10th address) needs at least 16.
    let (min, max) = if net.addr().is_ipv4() { (12, 28) } else { (108, 124) };
    if net.prefix_len() < min || net.prefix_len() > max {
        return Err(Invalid::new(
            format!("`{s}` has a prefix length outside /{min}../{max}"),
            format!(
                "Kubernetes takes service networks from /{min} to /{max}; the usual one is /16 (IPv4) or /112 (IPv6)"
            ),
        ));
    }
    if let Some(pods) = a.net("cluster.cluster_cidr") {
        if pods.addr().is_ipv4() != net.addr().is_ipv4() {
            return Err(Invalid::new(
                format!(
                    "`{s}` is {}, but cluster.cluster_cidr {pods} is {}",
                    family(&net.addr()),
                    family(&pods.addr())
                ),
                "both cluster networks use the same address family",
            ));
        }
        if check::overlap(&pods, &net) {
            return Err(Invalid::new(
                format!("`{s}` overlaps cluster.cluster_cidr {pods}"),
                "pods and services need separate ranges, e.g. 10.42.0.0/16 for pods and 10.43.0.0/16 for services",
            ));
        }
    }
    clash_with_site(&net, "service network", a)
}

fn check_cluster_dns(s: &str, a: &Answered) -> Result<(), Invalid> {
    let ip = check::ip(s)?;
    let Some(net) = a.net("cluster.service_cidr") else { return Ok(()) };
    let tenth = check::nth_address(&net, 10).map(|ip| ip.to_string()).unwrap_or_default();
    if !net.contains(&ip) {
        return Err(Invalid::new(
            format!("{ip} is not inside cluster.service_cidr {net}"),
            format!("the cluster DNS is a service IP; the usual one is the 10th address, {tenth}"),
        ));
    }
    if Some(ip) == check::nth_address(&net, 0) || Some(ip) == check::nth_address(&net, 1) {
        return Err(Invalid::new(
            format!("{ip} is reserved in the service network (the network address or the API service's IP)"),
            format!("use the 10th address, {tenth}"),
        ));
    }
    Ok(())
}

/// Names and IPs unique, addresses outside the cluster networks, enough pod ranges.
fn check_members(
    rows: &[Row],
    others: &[(String, Option<IpAddr>)],
    other_key: &str,
    a: &Answered,
) -> Result<(), Invalid> {
    let mut names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for (i, r) in rows.iter().enumerate() {
        if !names.insert(&r[0]) || others.iter().any(|(n, _)| *n == r[0]) {
            let hint = format!("every node has its own name (also across ha.servers and {other_key})");
            return Err(Invalid::new(format!("the name `{}` is listed twice", r[0]), hint).at(format!("[{i}].name")));
        }
        let ip: Option<IpAddr> = r[1].parse().ok();
        if !ips.insert(&r[1]) || others.iter().any(|(_, o)| o.is_some() && *o == ip) {
            let hint = format!("every node has its own address (also across ha.servers and {other_key})");
            return Err(Invalid::new(format!("the address {} is listed twice", r[1]), hint).at(format!("[{i}].ip")));
        }
        for key in ["cluster.cluster_cidr", "cluster.service_cidr"] {
            if let (Some(net), Some(ip)) = (a.net(key), ip) {
                if net.contains(&ip) {
                    return Err(Invalid::new(
                        format!("{ip} is inside {key} {net}"),
                        format!("choose a {key} that no host address falls into"),
                    )
                    .at(format!("[{i}].ip")));
                }
            }
        }
    }
    if let Some(pods) = a.net("cluster.cluster_cidr") {
        let block = if pods.addr().is_ipv4() { 24 } else { 64 };
        let ranges = 1u128 << (block - pods.prefix_len()).min(64);
        let nodes = (rows.len() + others.len()) as u128;
        if nodes > ranges {
            return Err(Invalid::new(
                format!("{nodes} nodes do not fit cluster.cluster_cidr {pods}, which has room for {ranges}"),
                "each node takes a /24 (IPv4) or /64 (IPv6) of the pod network; use a larger one",
            ));
        }
    }
    Ok(())
}

/// This node, found in a table by its IP; the name there must be its name.
fn find_self(rows: &[Row], a: &Answered) -> Result<Option<usize>, Invalid> {
    let Some(ip) = a.node_ip() else { return Ok(None) };
    let Some(i) = rows.iter().position(|r| r[1].parse::<IpAddr>().ok() == Some(ip)) else { return Ok(None) };
    match a.node_name() {
        Some(name) if name != rows[i][0] => Err(Invalid::new(
            format!("names the node at {ip} `{}`, but node.name is `{name}`", rows[i][0]),
            "use the same name in both places",
        )
        .at(format!("[{i}].name"))),
        _ => Ok(Some(i)),
    }
}

fn check_servers(rows: &[Row], a: &Answered) -> Result<(), Invalid> {
    not_beside_nodes(a)?;
    let n = rows.len();
    if n < 3 || n % 2 != 1 {
        return Err(Invalid::new(
            format!("lists {n} server{}; an HA cluster has an odd number, at least 3", if n == 1 { "" } else { "s" }),
            "etcd stays up while a majority of servers runs: 3 servers survive one failure, 5 survive two",
        ));
    }
    check_members(rows, &[], "ha.agents", a)?;
    let me = find_self(rows, a)?;
    if !a.is_agent() && me.is_none() {
        let (name, ip) = (a.node_name().unwrap_or("this node"), a.text("node.ip").unwrap_or("?"));
        return Err(Invalid::new(
            format!("does not list this node ({name}, {ip}), which is a server"),
            format!("list every server, this one included (`- {{name: {name}, ip: {ip}}}`), or make it an agent"),
        ));
    }
    if a.is_agent() && me.is_some() {
        return Err(Invalid::new(
            "lists this node, which is an agent",
            "set node.role: server, or move this node to ha.agents",
        ));
    }
    Ok(())
}

fn check_agents(rows: &[Row], a: &Answered) -> Result<(), Invalid> {
    not_beside_nodes(a)?;
    if !a.has("ha.servers") {
        return Err(Invalid::new(
            "lists agents but ha.servers is missing",
            "agents join servers: list the servers in ha.servers as well",
        ));
    }
    check_members(rows, &a.members("ha.servers"), "ha.agents", a)?;
    let me = find_self(rows, a)?;
    if a.is_agent() && me.is_none() {
        let (name, ip) = (a.node_name().unwrap_or("this node"), a.text("node.ip").unwrap_or("?"));
        return Err(Invalid::new(
            format!("does not list this node ({name}, {ip}), which is an agent"),
            format!("list every agent, this one included (`- {{name: {name}, ip: {ip}}}`)"),
        ));
    }
    Ok(())
}

/// One list of the cluster's members: two could disagree on who starts it.
fn not_beside_nodes(a: &Answered) -> Result<(), Invalid> {
    if a.has("nodes") {
        return Err(Invalid::new(
            "is set, but `nodes` already lists the cluster's members",
            "remove the `ha` section: with `nodes`, servers and agents come from each node's role",
        ));
    }
    Ok(())
}

fn check_join_server(s: &str, a: &Answered) -> Result<(), Invalid> {
    let addr = check::address(s)?;
    if starts_cluster(a) {
        let hint = if a.has("ha.servers") {
            "remove `join` here: the first of ha.servers (this node) starts the cluster and generates the join token"
        } else {
            "remove `join` on a single server; to add this node to an existing cluster, set node.role: agent"
        };
        return Err(Invalid::new("this node starts the cluster, so it joins none", hint));
    }
    let is = |name: &str, ip: Option<IpAddr>| match &addr {
        Address::Ip(x) => Some(*x) == ip,
        Address::Name(n) => n == name,
    };
    if is(a.node_name().unwrap_or_default(), a.node_ip()) {
        return Err(Invalid::new(
            format!("`{s}` is this node itself"),
            "give the first server's address (ha.servers[0])",
        ));
    }
    if a.members("ha.agents").iter().any(|(n, ip)| is(n, *ip)) {
        return Err(Invalid::new(
            format!("`{s}` is one of ha.agents; only servers take joins"),
            "give the first server's address (ha.servers[0])",
        ));
    }
    Ok(())
}

fn check_token_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    if !a.has("join.server") {
        return Err(Invalid::new(
            "is set but join.server is not",
            "set join.server to the first server's address, or remove `join` on the node that starts the cluster",
        ));
    }
    Ok(())
}

fn check_mirror(s: &str, a: &Answered) -> Result<(), Invalid> {
    let hp = check::host_port(s)?;
    if let Address::Ip(ip) = hp.host {
        for key in ["cluster.cluster_cidr", "cluster.service_cidr"] {
            if let Some(net) = a.net(key).filter(|n| n.contains(&ip)) {
                return Err(Invalid::new(
                    format!("{ip} is inside {key} {net}, so pods could not reach it"),
                    format!("choose a {key} that does not contain the registry's address"),
                ));
            }
        }
    }
    Ok(())
}

fn needs_mirror(a: &Answered, key: &str) -> Result<(), Invalid> {
    if a.has("registry.mirror") {
        Ok(())
    } else {
        Err(Invalid::new("is set but registry.mirror is not", format!("set registry.mirror, or remove {key}")))
    }
}

fn check_registry_ca_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    needs_mirror(a, "registry.ca_file")
}

fn check_registry_username(s: &str, a: &Answered) -> Result<(), Invalid> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new("is empty or contains spaces", "write the account name as the registry knows it"));
    }
    needs_mirror(a, "registry.username")
}

/// The ways the bundle's images reach the nodes (`registry.delivery`).
pub const DELIVERY_HINT: &str = "one of archives, registry, both (see docs/answers.md)";

fn delivery_names(_: &Facts) -> Vec<String> {
    ["archives", "registry", "both"].map(String::from).to_vec()
}

fn check_delivery(s: &str, a: &Answered) -> Result<(), Invalid> {
    if !delivery_names(&Facts::default()).iter().any(|m| m == s) {
        return Err(Invalid::new(format!("`{s}` is not a way to deliver images"), DELIVERY_HINT));
    }
    needs_mirror(a, "registry.delivery")
}

/// Enter keeps what a file without `registry.delivery` gets.
fn suggest_delivery(_: &Answered, _: &Facts) -> Option<String> {
    Some("archives".into())
}

/// The prefix is the push's: path components as the OCI Distribution spec allows them.
fn check_registry_prefix(s: &str, a: &Answered) -> Result<(), Invalid> {
    let component = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if !s.split('/').all(component) {
        return Err(Invalid::new(
            "is not a repository path",
            "use lower-case letters, digits and . _ - between slashes, e.g. platform or platform/images",
        ));
    }
    if !pushes_images(a, &Facts::default()) {
        return Err(Invalid::new(
            "is set but registry.delivery is not registry or both",
            "set registry.delivery: registry (or both), or remove registry.prefix",
        ));
    }
    Ok(())
}

fn check_push_auth_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    if !pushes_images(a, &Facts::default()) {
        return Err(Invalid::new(
            "is set but registry.delivery is not registry or both",
            "set registry.delivery: registry (or both), or remove registry.push_auth_file",
        ));
    }
    Ok(())
}

/// A proxy URL for the service environment. Never quotes the value: it may hold a
/// password (`http://user:pass@proxy:3128`).
fn check_proxy_url(s: &str, _: &Answered) -> Result<(), Invalid> {
    if s == REDACTED {
        return Err(Invalid::new(
            "is the placeholder `<redacted>`",
            "saved answers leave secrets out; write the real proxy URL here",
        ));
    }
    let ok = (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("socks5://"))
        && s.len() > "http://".len()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
    if !ok {
        return Err(Invalid::new(
            "is not a proxy URL (http://, https:// or socks5://, without spaces or quotes)",
            "e.g. http://proxy.example.internal:3128",
        ));
    }
    Ok(())
}

/// `NO_PROXY`: hosts, domains and CIDRs, comma-separated, as one environment value.
fn check_no_proxy(s: &str, _: &Answered) -> Result<(), Invalid> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\') {
        return Err(Invalid::new(
            "is empty or holds spaces or quotes",
            "list hosts, domains and CIDRs comma-separated, e.g. 127.0.0.1,localhost,.svc,10.42.0.0/16,10.43.0.0/16",
        ));
    }
    Ok(())
}

/// Never quotes the value: it is a secret.
fn check_registry_password(s: &str, a: &Answered) -> Result<(), Invalid> {
    if s == REDACTED {
        return Err(Invalid::new(
            "is the placeholder `<redacted>`",
            "saved answers leave secrets out; write the real password here",
        ));
    }
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(Invalid::new("is empty or contains a line break", "write the password on one line"));
    }
    if !a.has("registry.username") {
        return Err(Invalid::new("is set but registry.username is not", "set registry.username as well"));
    }
    Ok(())
}

pub(super) fn check_data_dir(s: &str, _: &Answered) -> Result<(), Invalid> {
    let p = check::abs_path(s)?;
    let volatile = ["/tmp", "/run", "/proc", "/sys", "/dev"].iter().find(|v| p.starts_with(v));
    if s == "/" || volatile.is_some() {
        return Err(Invalid::new(
            format!("`{s}` is not a place for cluster state"),
            format!(
                "the state must survive a reboot on a disk of its own directory; the usual one is {DEFAULT_DATA_DIR}"
            ),
        ));
    }
    Ok(())
}

fn check_override(s: &str, _: &Answered) -> Result<(), Invalid> {
    check::name(s)
        .map_err(|e| Invalid::new(e.cause, "write the check's name as preflight reports it, e.g. default-route"))
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

// ---- reading a document ----------------------------------------------------------------

/// The top-level keys, and each section's keys, in question order.
fn layout() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for q in questions() {
        let (top, sub) = match q.key.split_once('.') {
            Some((s, k)) => (s, Some(k)),
            None => (q.key, None),
        };
        match out.iter_mut().find(|(t, _)| *t == top) {
            Some((_, subs)) => subs.extend(sub),
            None => out.push((top, sub.into_iter().collect())),
        }
    }
    out
}

/// Reads an answers document against the question list: unknown keys first (all of
/// them are typos or misplaced keys, and a typo also makes a key look missing), then
/// every question in order, filling defaults, so each validator sees the same earlier
/// answers the wizard would have.
pub(crate) fn read_document(doc: &Value, bundle: Option<&BundleFacts>) -> Result<Answered, Problem> {
    let layout = layout();
    let top: Vec<&str> = layout.iter().map(|(t, _)| *t).collect();
    let root = Map::root(doc, &top, DOC)?;
    let mut sections = Vec::new();
    for (name, keys) in &layout {
        if !keys.is_empty() {
            if let Some(field) = root.get(name) {
                sections.push((*name, field.map(keys)?));
            }
        }
    }

    let mut a = Answered::for_bundle(bundle.cloned());
    for q in questions() {
        let field = match q.key.split_once('.') {
            Some((s, k)) => sections.iter().find(|(n, _)| *n == s).and_then(|(_, m)| m.get(k)),
            None => root.get(q.key),
        };
        match field {
            Some(f) => {
                let value = read_value(q, &f, &a)?;
                a.set(q.key, value);
            }
            None => {
                if let Need::Default(default) = q.need {
                    let v = default(&a);
                    if let Shape::Text(check) | Shape::Choice { check, .. } = q.shape {
                        // The operator never wrote this value, so say where it came from.
                        check(&v, &a).map_err(|e| {
                            let hint = format!("{}; `{}` is not in the file, so it took its default", e.hint, q.key);
                            Problem::new(q.key, format!("the default {}", e.cause), hint)
                        })?;
                    }
                    a.set(q.key, Value::String(v));
                } else if let Some(why) = q.need.required(&a) {
                    return Err(match q.key.split_once('.') {
                        // A section the bundle requires as a whole, left out, is named
                        // as such (`ldap`), not by its first key.
                        Some((section, _)) if BUNDLE_SECTIONS.contains(&section) && root.get(section).is_none() => {
                            missing_section(section, q, why)
                        }
                        _ => missing(q, why),
                    });
                }
            }
        }
    }
    Ok(a)
}

pub(crate) fn missing(q: &Question, why: &str) -> Problem {
    let cause = if matches!(q.need, Need::Required) {
        "missing required key".to_string()
    } else {
        format!("missing required key: {why}")
    };
    Problem::new(q.key, cause, format!("add `{}`: {}; see {DOC}", q.key, q.help))
}

/// Sections that what the bundle carries makes required as a whole ([`BundleFacts`]).
const BUNDLE_SECTIONS: [&str; 2] = ["ldap", "keycloak_database"];

/// A required section that is not there at all.
pub(crate) fn missing_section(section: &str, q: &Question, why: &str) -> Problem {
    Problem::new(
        section,
        format!("missing required section: {why}"),
        format!("add the `{section}` section, starting with `{}`: {}; see {DOC}", q.key, q.help),
    )
}

/// One question's value from a document, checked, as it goes into [`Answered`].
fn read_value(q: &Question, f: &Field<'_>, a: &Answered) -> Result<Value, Problem> {
    match &q.shape {
        Shape::Text(check) | Shape::Secret(check) | Shape::Choice { check, .. } => {
            // A yes/no choice (`ldap.starttls`) may be written as a YAML boolean.
            let number;
            let s = match (f.value, &q.shape) {
                (Value::Bool(b), Shape::Choice { .. }) => {
                    if *b {
                        "true"
                    } else {
                        "false"
                    }
                }
                // A port (`keycloak_database.port: 5432`) is naturally written as a
                // YAML number; its validator judges the text.
                (Value::Number(n), Shape::Text(_)) if q.key.ends_with(".port") => {
                    number = n.to_string();
                    number.as_str()
                }
                _ => f.str()?,
            };
            check(s, a).map_err(|e| e.problem(&f.path))?;
            Ok(Value::String(s.to_string()))
        }
        Shape::List { item, all } => {
            let mut items = Vec::new();
            for (field, s) in f.strs()? {
                item(s, a).map_err(|e| e.problem(&field.path))?;
                items.push(s.to_string());
            }
            all(&items, a).map_err(|e| e.problem(&f.path))?;
            Ok(Value::Sequence(items.into_iter().map(Value::String).collect()))
        }
        Shape::Table { columns, all } => {
            let keys: Vec<&str> = columns.iter().map(|c| c.key).collect();
            let mut rows = Vec::new();
            for row in f.seq()? {
                let m = row.map(&keys)?;
                let mut cells = Vec::new();
                for c in columns.iter() {
                    let cell = if c.optional {
                        match m.get(c.key) {
                            Some(cell) => cell,
                            None => {
                                cells.push(String::new());
                                continue;
                            }
                        }
                    } else {
                        m.req(c.key, c.help)?
                    };
                    // A port (`ssh_port: 2222`) is naturally written as a YAML number.
                    let number;
                    let s = match cell.value {
                        Value::Number(n) if c.key.ends_with("port") => {
                            number = n.to_string();
                            number.as_str()
                        }
                        _ => cell.str()?,
                    };
                    (c.check)(s, a).map_err(|e| e.problem(&cell.path))?;
                    cells.push(s.to_string());
                }
                rows.push(cells);
            }
            all(&rows, a).map_err(|e| e.problem(&f.path))?;
            Ok(table_value(columns, &rows))
        }
    }
}

pub(crate) fn table_value(columns: &[Column], rows: &[Row]) -> Value {
    // An optional cell left out is empty, and stays out of the document.
    let row = |r: &Row| {
        let m: Mapping = columns
            .iter()
            .zip(r)
            .filter(|(c, v)| !(c.optional && v.is_empty()))
            .map(|(c, v)| (Value::from(c.key), Value::from(v.as_str())))
            .collect();
        Value::Mapping(m)
    };
    Value::Sequence(rows.iter().map(row).collect())
}

// ---- pki ------------------------------------------------------------------------------

/// The hint for a `pki.mode` that is none of the modes.
pub(crate) const PKI_MODE_HINT: &str =
    "write self-signed (the default), customer-ca or customer-certs; see docs/answers.md";

fn pki_mode_names(_: &Facts) -> Vec<String> {
    ["self-signed", "customer-ca", "customer-certs"].map(String::from).to_vec()
}

fn check_pki_mode(s: &str, _: &Answered) -> Result<(), Invalid> {
    if pki_mode_names(&Facts::default()).iter().any(|m| m == s) {
        Ok(())
    } else {
        Err(Invalid::new(format!("`{s}` is not a PKI mode"), PKI_MODE_HINT))
    }
}

fn pki_mode(a: &Answered) -> &str {
    a.text("pki.mode").unwrap_or("self-signed")
}

/// The site PKI is made by the node that starts the cluster; the others get its CA.
fn makes_pki(a: &Answered, _: &Facts) -> bool {
    starts_cluster(a)
}

/// Enter keeps what a file without `pki` gets.
fn suggest_pki_mode(_: &Answered, _: &Facts) -> Option<String> {
    Some("self-signed".into())
}

fn asks_customer_ca(a: &Answered, _: &Facts) -> bool {
    customer_ca_required(a).is_some()
}

fn asks_customer_certs(a: &Answered, _: &Facts) -> bool {
    customer_certs_required(a).is_some()
}

fn customer_ca_required(a: &Answered) -> Option<&'static str> {
    (pki_mode(a) == "customer-ca").then_some("pki.mode is customer-ca")
}

fn customer_certs_required(a: &Answered) -> Option<&'static str> {
    (pki_mode(a) == "customer-certs").then_some("pki.mode is customer-certs")
}

/// A file key of one mode, given while another mode is chosen, is a leftover that
/// would silently be ignored: refuse it.
fn pki_file_for(mode: &str, s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    if pki_mode(a) != mode {
        return Err(Invalid::new(
            format!("is a file for pki.mode {mode}, but pki.mode is {}", pki_mode(a)),
            format!("set pki.mode: {mode}, or remove this key"),
        ));
    }
    Ok(())
}

fn check_pki_customer_ca_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    pki_file_for("customer-ca", s, a)
}

fn check_pki_customer_certs_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    pki_file_for("customer-certs", s, a)
}

fn check_pki_ip_range(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::cidr(s)?;
    if pki_mode(a) != "self-signed" {
        return Err(Invalid::new(
            format!("constrains the self-signed site CA, but pki.mode is {}", pki_mode(a)),
            "remove pki.ip_ranges: a customer CA has its own constraints",
        ));
    }
    Ok(())
}

fn check_age_recipient(s: &str, _: &Answered) -> Result<(), Invalid> {
    crate::ops::backup::parse_recipient(s).map(|_| ()).map_err(|cause| {
        Invalid::new(
            cause,
            "give the public key age-keygen prints (`Public key: age1...`), not the key file's secret line",
        )
    })
}

fn check_interval(s: &str, _: &Answered) -> Result<(), Invalid> {
    crate::ops::backup::schedule::parse_interval(s)
        .map(|_| ())
        .map_err(|cause| Invalid::new(cause, "write e.g. 30m, 24h or 7d"))
}
