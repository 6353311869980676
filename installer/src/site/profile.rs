//! Install profiles (`profiles/*.yaml`): how to install what a bundle carries.
//!
//! A profile picks the distribution (K3s or RKE2), the topology (one node, or HA with
//! an odd number of servers and optional agents), the bundle components to install,
//! distribution options, the recommended host size and the preflight thresholds. The
//! vendor writes profiles and the bundler packs them; the installer reads them from the
//! verified bundle. Parsing is as strict as for answers files: unknown keys are errors
//! naming the file and key path (`preflight.ports.server.tcp[2]`) with a `hint:`.
//! The key reference is `docs/profiles.md`.

use std::collections::BTreeSet;
use std::path::Path;

use airlock_format::error::{IoContext, Result};
use airlock_format::manifest::DistributionKind;

use serde::Serialize;

use crate::site::answers::check;
use crate::site::answers::strict::{parse_yaml, Field, Map, Problem};
use crate::site::answers::Role;
pub use crate::site::preflight::PortRange;

/// Where the key reference lives; every hint points there.
pub const DOC: &str = "docs/profiles.md";

/// What K3s can be told to leave out (`disable:`). CoreDNS is not among them: the
/// answers' `cluster_dns` is its address.
pub const K3S_DISABLE: &[&str] = &["traefik", "servicelb", "local-storage", "metrics-server"];
/// What RKE2 can be told to leave out (`disable:`).
pub const RKE2_DISABLE: &[&str] = &[
    "rke2-ingress-nginx",
    "rke2-metrics-server",
    "rke2-snapshot-controller",
    "rke2-snapshot-controller-crd",
    "rke2-snapshot-validation-webhook",
];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub distribution: DistributionKind,
    pub topology: Topology,
    /// Bundle components to install, in this order.
    pub components: Vec<String>,
    pub storage: Storage,
    pub options: Options,
    pub sizing: Sizing,
    pub preflight: Thresholds,
    /// What the release needs of the app's OIDC client in the Keycloak realm.
    pub keycloak: KeycloakProfile,
    /// Retention and volume sizes of the `monitoring` component (its defaults when the
    /// profile has no `monitoring` section).
    pub monitoring: MonitoringSizing,
}

/// The vendor's side of the realm: what the app's release needs of its OIDC client.
/// A later release may change it; the realm sync (docs/platform.md) applies the change
/// to a Keycloak that imported an earlier realm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeycloakProfile {
    /// Paths on `https://app.<domain>` Keycloak may send a login back to (`/*`: any).
    pub redirect_paths: Vec<String>,
    /// Extra `aud` values in the app's access tokens (an API that checks its audience).
    pub audiences: Vec<String>,
}

impl Default for KeycloakProfile {
    fn default() -> Self {
        Self { redirect_paths: vec!["/*".into()], audiences: Vec::new() }
    }
}

/// Sizes and retention, from the profile's `monitoring` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MonitoringSizing {
    /// How long Prometheus keeps samples, in days.
    pub retention_days: u32,
    pub prometheus_volume_gib: u32,
    pub alertmanager_volume_gib: u32,
    pub grafana_volume_gib: u32,
}

impl Default for MonitoringSizing {
    fn default() -> Self {
        // 15 days is Prometheus' own default; 20 GiB holds it comfortably for a
        // handful of nodes and the app at a 30 s scrape interval.
        Self { retention_days: 15, prometheus_volume_gib: 20, alertmanager_volume_gib: 2, grafana_volume_gib: 2 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Topology {
    SingleNode,
    /// `servers` is odd and ≥ 3; `agents`: whether workload-only nodes may join.
    Ha {
        servers: u8,
        agents: bool,
    },
}

/// Who provides PersistentVolumes (MinIO, Keycloak and PostgreSQL need them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// K3s's bundled local-path provisioner (`local-storage`).
    Builtin,
    /// A bundle component that installs a provisioner (RKE2 ships none).
    Component(String),
}

/// Distribution options; the variant matches `distribution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Options {
    K3s(K3sOptions),
    Rke2(Rke2Options),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct K3sOptions {
    /// Packaged components K3s leaves out (`disable:`), from [`K3S_DISABLE`].
    pub disable: Vec<String>,
    /// `embedded-registry: true`: nodes share images peer to peer (spegel, port 5001).
    pub embedded_registry: bool,
    /// `secrets-encryption: true`: Secrets encrypted at rest in the datastore.
    pub secrets_encryption: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rke2Options {
    /// `profile: cis`: the CIS hardened profile (needs an `etcd` user and the CIS sysctls).
    pub cis: bool,
    /// Packaged components RKE2 leaves out (`disable:`), from [`RKE2_DISABLE`].
    pub disable: Vec<String>,
    /// `kube-apiserver-arg`: flags the hardening guide adds on top of `profile: cis`
    /// (`name=value`, without the leading `--`), on every server.
    pub kube_apiserver_arg: Vec<String>,
}

/// The host size the profile is meant for; preflight warns below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sizing {
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

/// Preflight thresholds; `None` leaves the distribution's own floor in place.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Thresholds {
    pub min_cpus: Option<u32>,
    pub min_memory_mib: Option<u64>,
    /// Free space the data directory's filesystem needs at least.
    pub min_free_disk_gib: Option<u64>,
    /// And free space of at least this factor × the bundle's image bytes: images sit in
    /// the archive, in containerd's content store and unpacked as snapshots.
    pub disk_headroom: Option<f64>,
    /// `major.minor[.patch]`.
    pub min_kernel: Option<String>,
    pub kernel_modules: Option<Vec<String>>,
    /// etcd's WAL fdatasync 99th percentile limit (etcd guidance: 10 ms).
    pub max_etcd_fsync_p99_ms: Option<f64>,
    /// Ports that must be free, by node role.
    pub ports: Option<RolePorts>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RolePorts {
    pub server: Option<PortSet>,
    pub agent: Option<PortSet>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortSet {
    pub tcp: Vec<PortRange>,
    pub udp: Vec<PortRange>,
}

impl PortSet {
    fn has_tcp(&self, port: u16) -> bool {
        self.tcp.iter().any(|r| r.contains(port))
    }
}

impl Profile {
    /// Reads a profile file; its `name` must be the file's stem, which is the name the
    /// bundler gives it in the bundle.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let origin = path.display().to_string();
        Self::parse(&text, &stem).map_err(|p| p.into_error(&origin))
    }

    /// Reads the profile the bundle carries as `profiles/<name>.yaml`.
    pub fn from_bundle_entry(text: &str, name: &str) -> Result<Self> {
        Self::parse(text, name).map_err(|p| p.into_error(&format!("bundle profile profiles/{name}.yaml")))
    }

    /// Checks that every component (and the storage provisioner) is in the bundle.
    pub fn check_components(&self, in_bundle: &[String], origin: &str) -> Result<()> {
        for (i, c) in self.components.iter().enumerate() {
            if !in_bundle.contains(c) {
                return Err(Problem::new(
                    format!("components[{i}]"),
                    format!("`{c}` is not a component of the bundle"),
                    format!(
                        "the bundle has: {}; the names come from the bundle spec's components",
                        in_bundle.join(", ")
                    ),
                )
                .into_error(origin));
            }
        }
        Ok(())
    }

    /// The ports that must be free on a node of `role`, when the profile names them.
    pub fn ports(&self, role: Role) -> Option<&PortSet> {
        let ports = self.preflight.ports.as_ref()?;
        match role {
            Role::Server => ports.server.as_ref(),
            Role::Agent => ports.agent.as_ref(),
        }
    }

    pub fn is_ha(&self) -> bool {
        matches!(self.topology, Topology::Ha { .. })
    }

    fn parse(text: &str, expected_name: &str) -> std::result::Result<Self, Problem> {
        let doc = parse_yaml(text, DOC)?;
        let root = Map::root(
            &doc,
            &[
                "name",
                "description",
                "distribution",
                "topology",
                "ha",
                "components",
                "storage",
                "k3s",
                "rke2",
                "sizing",
                "preflight",
                "keycloak",
                "monitoring",
            ],
            DOC,
        )?;

        let name_field = root.req("name", "the profile's name")?;
        let name = name_field.str()?.to_string();
        check::name(&name).map_err(|e| e.problem("name"))?;
        if name != expected_name {
            return Err(name_field.problem(
                format!("is `{name}`, but the profile is named `{expected_name}` by its file"),
                format!("rename the file to {name}.yaml, or set `name: {expected_name}`"),
            ));
        }
        let description = root.get("description").map(|f| f.str().map(str::to_string)).transpose()?.unwrap_or_default();

        let dist = root.req("distribution", "k3s or rke2")?;
        let distribution = match dist.str()? {
            "k3s" => DistributionKind::K3s,
            "rke2" => DistributionKind::Rke2,
            other => return Err(dist.problem(format!("`{other}` is not a distribution"), "write `k3s` or `rke2`")),
        };

        let topology = read_topology(&root)?;
        let components = read_components(&root)?;
        let options = read_options(&root, distribution)?;
        let storage = read_storage(&root, distribution, &options, &components)?;
        let sizing = read_sizing(&root)?;
        let preflight = read_thresholds(&root, &sizing)?;
        let keycloak = read_keycloak(&root)?;
        let monitoring = read_monitoring(&root)?;
        let profile = Self {
            name,
            description,
            distribution,
            topology,
            components,
            storage,
            options,
            sizing,
            preflight,
            keycloak,
            monitoring,
        };
        check_ports(&profile)?;
        Ok(profile)
    }
}

fn read_keycloak(root: &Map<'_>) -> std::result::Result<KeycloakProfile, Problem> {
    let Some(f) = root.get("keycloak") else { return Ok(KeycloakProfile::default()) };
    let m = f.map(&["redirect_paths", "audiences"])?;
    // Both end up in the realm file Keycloak imports, which replaces `${...}` from its
    // environment, and in URLs: plain printable text only.
    let plain = |f: &Field<'_>, v: &str| -> std::result::Result<(), Problem> {
        if v.is_empty() || v.contains("${") || v.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            return Err(f.problem(
                format!("`{v}` is empty or holds whitespace, a quote or `${{`"),
                "write a plain path or name, e.g. `/callback` or `api`",
            ));
        }
        Ok(())
    };
    let mut out = KeycloakProfile::default();
    if let Some(paths) = m.get("redirect_paths") {
        out.redirect_paths.clear();
        for (f, p) in paths.strs()? {
            plain(&f, p)?;
            if !p.starts_with('/') {
                return Err(f.problem(
                    format!("`{p}` is not a path"),
                    "write a path on the app's host starting with `/`, e.g. `/callback` (`/*`: any path)",
                ));
            }
            out.redirect_paths.push(p.to_string());
        }
        if out.redirect_paths.is_empty() {
            return Err(paths.problem("is empty", "list at least one path, e.g. `/*`"));
        }
    }
    if let Some(aud) = m.get("audiences") {
        for (f, a) in aud.strs()? {
            plain(&f, a)?;
            out.audiences.push(a.to_string());
        }
    }
    Ok(out)
}

fn read_topology(root: &Map<'_>) -> std::result::Result<Topology, Problem> {
    let field = root.req("topology", "single-node or ha")?;
    let ha = root.get("ha");
    match field.str()? {
        "single-node" => {
            if let Some(ha) = ha {
                return Err(
                    ha.problem("applies only to `topology: ha`", "remove the `ha` section, or set `topology: ha`")
                );
            }
            Ok(Topology::SingleNode)
        }
        "ha" => {
            let Some(ha) = ha else { return Ok(Topology::Ha { servers: 3, agents: true }) };
            let m = ha.map(&["servers", "agents"])?;
            let servers = match m.get("servers") {
                None => 3,
                Some(f) => {
                    let n = f.u64()?;
                    if n < 3 || n % 2 != 1 || n > 9 {
                        return Err(f.problem(
                            format!("is {n}; an HA cluster has an odd number of servers from 3 to 9"),
                            "etcd needs a majority: 3 servers survive one failure, 5 survive two",
                        ));
                    }
                    n as u8
                }
            };
            let agents = m.get("agents").map(|f| f.bool()).transpose()?.unwrap_or(true);
            Ok(Topology::Ha { servers, agents })
        }
        other => Err(field.problem(format!("`{other}` is not a topology"), "write `single-node` or `ha`")),
    }
}

fn read_components(root: &Map<'_>) -> std::result::Result<Vec<String>, Problem> {
    let field = root.req("components", "the bundle components to install, in order")?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (f, c) in field.strs()? {
        component_name(&f, c)?;
        if !seen.insert(c) {
            return Err(f.problem(format!("`{c}` is listed twice"), "list each component once"));
        }
        out.push(c.to_string());
    }
    if out.is_empty() {
        return Err(field.problem("is empty", "list the bundle components to install, e.g. [platform, app]"));
    }
    Ok(out)
}

/// Component names are bundle names (the bundle spec's `components[].name`).
fn component_name(f: &Field<'_>, c: &str) -> std::result::Result<(), Problem> {
    let plain = !c.is_empty() && !c.contains('/') && c != "." && c != "..";
    if !plain || airlock_format::manifest::check_entry_path(c).is_err() {
        return Err(
            f.problem(format!("`{c}` is not a component name"), "use the name of a component in the bundle spec")
        );
    }
    Ok(())
}

fn read_disable(m: &Map<'_>, allowed: &[&str]) -> std::result::Result<Vec<String>, Problem> {
    let Some(field) = m.get("disable") else { return Ok(Vec::new()) };
    let mut out: Vec<String> = Vec::new();
    for (f, s) in field.strs()? {
        if !allowed.contains(&s) {
            return Err(f.problem(format!("`{s}` cannot be disabled"), format!("choose from: {}", allowed.join(", "))));
        }
        if out.iter().any(|o| o == s) {
            return Err(f.problem(format!("`{s}` is listed twice"), "list each once"));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// `name=value` flags for a Kubernetes component, as RKE2's `*-arg` keys take them.
fn read_component_args(m: &Map<'_>, key: &str) -> std::result::Result<Vec<String>, Problem> {
    let Some(field) = m.get(key) else { return Ok(Vec::new()) };
    let mut out: Vec<String> = Vec::new();
    for (f, s) in field.strs()? {
        let ok = s.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) && !s.starts_with('-')
            && !s.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(f.problem(
                format!("`{}` is not a `name=value` flag", s.escape_debug()),
                "write the flag without its leading `--`, e.g. `service-account-extend-token-expiration=false`",
            ));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

fn flag(m: &Map<'_>, key: &str) -> std::result::Result<bool, Problem> {
    m.get(key).map(|f| f.bool()).transpose().map(Option::unwrap_or_default)
}

fn read_options(root: &Map<'_>, distribution: DistributionKind) -> std::result::Result<Options, Problem> {
    let (own, other) = match distribution {
        DistributionKind::K3s => ("k3s", "rke2"),
        DistributionKind::Rke2 => ("rke2", "k3s"),
    };
    if let Some(f) = root.get(other) {
        return Err(f.problem(
            format!("the profile's distribution is {own}, so `{other}` options do not apply"),
            format!("move the options to a `{own}` section, or set `distribution: {other}`"),
        ));
    }
    Ok(match distribution {
        DistributionKind::K3s => match root.get("k3s") {
            None => Options::K3s(K3sOptions::default()),
            Some(f) => {
                let m = f.map(&["disable", "embedded_registry", "secrets_encryption"])?;
                Options::K3s(K3sOptions {
                    disable: read_disable(&m, K3S_DISABLE)?,
                    embedded_registry: flag(&m, "embedded_registry")?,
                    secrets_encryption: flag(&m, "secrets_encryption")?,
                })
            }
        },
        DistributionKind::Rke2 => match root.get("rke2") {
            None => Options::Rke2(Rke2Options::default()),
            Some(f) => {
                let m = f.map(&["cis", "disable", "kube_apiserver_arg"])?;
                Options::Rke2(Rke2Options {
                    cis: flag(&m, "cis")?,
                    disable: read_disable(&m, RKE2_DISABLE)?,
                    kube_apiserver_arg: read_component_args(&m, "kube_apiserver_arg")?,
                })
            }
        },
    })
}

fn read_storage(
    root: &Map<'_>,
    distribution: DistributionKind,
    options: &Options,
    components: &[String],
) -> std::result::Result<Storage, Problem> {
    let local_storage_off = matches!(options, Options::K3s(o) if o.disable.iter().any(|d| d == "local-storage"));
    let field = match (root.get("storage"), distribution) {
        (Some(f), _) => f,
        (None, DistributionKind::K3s) if !local_storage_off => return Ok(Storage::Builtin),
        (None, _) => {
            return Err(Problem::new(
                "storage",
                "missing required key: the platform needs PersistentVolumes and nothing else provides them",
                format!(
                    "name the component that installs a storage provisioner (e.g. `storage: local-path`); see {DOC}"
                ),
            ))
        }
    };
    match field.str()? {
        "builtin" if distribution == DistributionKind::Rke2 => Err(field.problem(
            "RKE2 ships no storage provisioner",
            "name a bundle component that installs one, e.g. local-path",
        )),
        "builtin" if local_storage_off => Err(field.problem(
            "is `builtin`, but `k3s.disable` turns off local-storage",
            "keep local-storage, or name a component that installs a provisioner",
        )),
        "builtin" => Ok(Storage::Builtin),
        c => {
            if !components.iter().any(|x| x == c) {
                return Err(field.problem(
                    format!("`{c}` is not in `components`"),
                    format!("add `{c}` to components (before the components that need volumes)"),
                ));
            }
            Ok(Storage::Component(c.to_string()))
        }
    }
}

fn read_sizing(root: &Map<'_>) -> std::result::Result<Sizing, Problem> {
    let m = root.req("sizing", "the host size the profile is meant for")?.map(&["cpus", "memory_mib", "disk_gib"])?;
    let positive = |key: &str, what: &str| -> std::result::Result<u64, Problem> {
        let f = m.req(key, what)?;
        match f.u64()? {
            0 => Err(f.problem("is 0", "give the recommended size, a whole number above 0")),
            n => Ok(n),
        }
    };
    Ok(Sizing {
        cpus: u32::try_from(positive("cpus", "recommended CPUs")?).unwrap_or(u32::MAX),
        memory_mib: positive("memory_mib", "recommended memory in MiB")?,
        disk_gib: positive("disk_gib", "recommended free disk in GiB")?,
    })
}

fn read_monitoring(root: &Map<'_>) -> std::result::Result<MonitoringSizing, Problem> {
    let mut out = MonitoringSizing::default();
    let Some(f) = root.get("monitoring") else { return Ok(out) };
    let m = f.map(&["retention_days", "prometheus_volume_gib", "alertmanager_volume_gib", "grafana_volume_gib"])?;
    let fields: [(&str, &mut u32); 4] = [
        ("retention_days", &mut out.retention_days),
        ("prometheus_volume_gib", &mut out.prometheus_volume_gib),
        ("alertmanager_volume_gib", &mut out.alertmanager_volume_gib),
        ("grafana_volume_gib", &mut out.grafana_volume_gib),
    ];
    for (key, slot) in fields {
        let Some(f) = m.get(key) else { continue };
        match f.u64()? {
            0 => return Err(f.problem("is 0", "give a whole number above 0, or leave the key out for the default")),
            n => *slot = u32::try_from(n).map_err(|_| f.problem("is too large", "give a realistic size"))?,
        }
    }
    Ok(out)
}

fn read_thresholds(root: &Map<'_>, sizing: &Sizing) -> std::result::Result<Thresholds, Problem> {
    let Some(f) = root.get("preflight") else { return Ok(Thresholds::default()) };
    let m = f.map(&[
        "min_cpus",
        "min_memory_mib",
        "min_free_disk_gib",
        "disk_headroom",
        "min_kernel",
        "kernel_modules",
        "max_etcd_fsync_p99_ms",
        "ports",
    ])?;
    // A minimum above the recommended size is a typo (MiB vs GiB) more often than intent.
    let at_most = |key: &str, limit: u64, what: &str| -> std::result::Result<Option<u64>, Problem> {
        let Some(f) = m.get(key) else { return Ok(None) };
        let n = f.u64()?;
        if n > limit {
            return Err(f.problem(
                format!("is {n}, above sizing.{what} ({limit})"),
                "a minimum cannot exceed the recommended size; check the units",
            ));
        }
        Ok(Some(n))
    };
    let min_kernel = match m.get("min_kernel") {
        None => None,
        Some(f) => {
            let s = f.str()?;
            let parts: Vec<&str> = s.split('.').collect();
            let numeric = parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
            if !(2..=3).contains(&parts.len()) || !numeric {
                return Err(f.problem(format!("`{s}` is not a kernel version"), "write major.minor, e.g. \"4.18\""));
            }
            Some(s.to_string())
        }
    };
    let kernel_modules = match m.get("kernel_modules") {
        None => None,
        Some(f) => Some(
            f.strs()?
                .into_iter()
                .map(|(f, s)| {
                    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if ok {
                        Ok(s.to_string())
                    } else {
                        Err(f.problem(
                            format!("`{s}` is not a module name"),
                            "write it as modprobe takes it, e.g. br_netfilter",
                        ))
                    }
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
    };
    let disk_headroom = match m.get("disk_headroom") {
        None => None,
        Some(f) => {
            let x = f.f64()?;
            if !(1.0..=20.0).contains(&x) {
                return Err(
                    f.problem(format!("is {x}"), "a factor from 1.0 to 20 over the bundle's image size, e.g. 3.0")
                );
            }
            Some(x)
        }
    };
    let max_etcd_fsync_p99_ms = match m.get("max_etcd_fsync_p99_ms") {
        None => None,
        Some(f) => {
            let x = f.f64()?;
            if !(x > 0.0 && x <= 1000.0) {
                return Err(f.problem(format!("is {x}"), "milliseconds above 0; etcd's guidance is 10"));
            }
            Some(x)
        }
    };
    let ports = match m.get("ports") {
        None => None,
        Some(f) => {
            let pm = f.map(&["server", "agent"])?;
            Some(RolePorts {
                server: pm.get("server").map(|f| read_port_set(&f)).transpose()?,
                agent: pm.get("agent").map(|f| read_port_set(&f)).transpose()?,
            })
        }
    };
    Ok(Thresholds {
        min_cpus: at_most("min_cpus", u64::from(sizing.cpus), "cpus")?.map(|n| n as u32),
        min_memory_mib: at_most("min_memory_mib", sizing.memory_mib, "memory_mib")?,
        min_free_disk_gib: at_most("min_free_disk_gib", sizing.disk_gib, "disk_gib")?,
        disk_headroom,
        min_kernel,
        kernel_modules,
        max_etcd_fsync_p99_ms,
        ports,
    })
}

fn read_port_set(f: &Field<'_>) -> std::result::Result<PortSet, Problem> {
    let m = f.map(&["tcp", "udp"])?;
    let list = |key: &str| -> std::result::Result<Vec<PortRange>, Problem> {
        let Some(f) = m.get(key) else { return Ok(Vec::new()) };
        f.seq()?.iter().map(read_port_range).collect()
    };
    Ok(PortSet { tcp: list("tcp")?, udp: list("udp")? })
}

/// `6443` (a number) or `"2379-2380"` (text: YAML would not read a range as a number).
fn read_port_range(f: &Field<'_>) -> std::result::Result<PortRange, Problem> {
    let bad =
        |s: &str| f.problem(format!("`{s}` is not a port or a port range"), "write 6443 or \"2379-2380\" (1-65535)");
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad(s));
    if let Some(n) = f.value.as_u64() {
        let p = port(&n.to_string())?;
        return Ok(PortRange { start: p, end: p });
    }
    let s = f.str()?;
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    if start > end {
        return Err(f.problem(format!("`{s}` ends before it starts"), "write the lower port first"));
    }
    Ok(PortRange { start, end })
}

/// The ports the distribution cannot run without must be checked wherever ports are
/// listed (contracts.md, "Ports"), so a trimmed list cannot hide a conflict.
fn check_ports(p: &Profile) -> std::result::Result<(), Problem> {
    let Some(ports) = &p.preflight.ports else { return Ok(()) };
    let embedded_registry = matches!(&p.options, Options::K3s(o) if o.embedded_registry);
    let mut need: Vec<(&str, u16, &str)> =
        vec![("server", 6443, "the Kubernetes API"), ("server", 10250, "the kubelet")];
    if p.distribution == DistributionKind::Rke2 {
        need.push(("server", 9345, "the RKE2 supervisor"));
    }
    if p.is_ha() {
        need.push(("server", 2379, "etcd clients"));
        need.push(("server", 2380, "etcd peers"));
    }
    if embedded_registry {
        need.push(("server", 5001, "the embedded registry"));
    }
    if matches!(p.topology, Topology::Ha { agents: true, .. }) {
        need.push(("agent", 10250, "the kubelet"));
        if embedded_registry {
            need.push(("agent", 5001, "the embedded registry"));
        }
    }
    for (role, port, what) in need {
        let set = if role == "server" { &ports.server } else { &ports.agent };
        if !set.as_ref().is_some_and(|s| s.has_tcp(port)) {
            return Err(Problem::new(
                format!("preflight.ports.{role}.tcp"),
                format!("does not list {port} ({what})"),
                format!("add {port}: a {role} of this profile listens on it (see `preflight.ports` in {DOC})"),
            ));
        }
    }
    if ports.agent.is_some() && !matches!(p.topology, Topology::Ha { agents: true, .. }) {
        return Err(Problem::new(
            "preflight.ports.agent",
            "is set, but the profile has no agents",
            "remove it, or use `topology: ha` with agents",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: p\ndistribution: k3s\ntopology: single-node\ncomponents: [app]\n\
                           sizing: {cpus: 4, memory_mib: 8192, disk_gib: 50}\n";

    fn parse(extra: &str) -> std::result::Result<Profile, Problem> {
        Profile::parse(&format!("{MINIMAL}{extra}"), "p")
    }

    #[test]
    fn a_minimal_k3s_profile_defaults_to_builtin_storage_and_the_distributions_floor() {
        let p = parse("").unwrap();
        assert_eq!(p.storage, Storage::Builtin);
        assert_eq!(p.options, Options::K3s(K3sOptions::default()));
        assert_eq!(p.preflight, Thresholds::default());
    }

    #[test]
    fn the_keycloak_section_defaults_to_any_app_path_and_refuses_what_is_not_a_path() {
        assert_eq!(parse("").unwrap().keycloak, KeycloakProfile::default());
        let k =
            parse("keycloak: {redirect_paths: [/callback, /silent-renew.html], audiences: [api]}\n").unwrap().keycloak;
        assert_eq!(k.redirect_paths, ["/callback", "/silent-renew.html"]);
        assert_eq!(k.audiences, ["api"]);
        let e = parse("keycloak: {redirect_paths: [callback]}\n").unwrap_err();
        assert_eq!(e.key, "keycloak.redirect_paths[0]");
        let e = parse("keycloak: {audiences: [\"${HOME}\"]}\n").unwrap_err();
        assert!(e.key.starts_with("keycloak.audiences"), "{e}");
    }

    #[test]
    fn unknown_profile_keys_are_named_with_their_path() {
        let e = parse("preflight:\n  ports:\n    server: {tcp: [6443, 10250], upd: [8472]}\n").unwrap_err();
        assert_eq!(e.key, "preflight.ports.server.upd");
        assert!(e.hint.contains("did you mean `udp`"), "{e}");
    }

    #[test]
    fn options_of_the_other_distribution_are_refused() {
        let e = parse("rke2: {cis: true}\n").unwrap_err();
        assert_eq!(e.key, "rke2");
        assert!(e.cause.contains("distribution is k3s"), "{e}");
    }

    #[test]
    fn rke2_needs_a_storage_component_from_the_list() {
        let base = MINIMAL.replace("k3s", "rke2");
        let e = Profile::parse(&base, "p").unwrap_err();
        assert_eq!(e.key, "storage");
        let e = Profile::parse(&format!("{base}storage: builtin\n"), "p").unwrap_err();
        assert!(e.cause.contains("RKE2 ships no storage"), "{e}");
        let e = Profile::parse(&format!("{base}storage: local-path\n"), "p").unwrap_err();
        assert!(e.cause.contains("not in `components`"), "{e}");
        let ok = Profile::parse(&format!("{}storage: local-path\n", base.replace("[app]", "[local-path, app]")), "p");
        assert_eq!(ok.unwrap().storage, Storage::Component("local-path".into()));
    }

    #[test]
    fn distribution_rke2_cis_profile_carries_the_hardening_guides_apiserver_flag() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/rke2-cis.yaml");
        let p = Profile::load(&path).unwrap();
        let Options::Rke2(o) = &p.options else { panic!("rke2-cis is an RKE2 profile") };
        assert!(o.cis);
        assert_eq!(o.kube_apiserver_arg, ["service-account-extend-token-expiration=false"]);
        // The reference profile's components, monitoring included.
        let reference = Profile::load(&path.with_file_name("single-node.yaml")).unwrap();
        for c in &reference.components {
            assert!(p.components.contains(c), "rke2-cis lacks the reference profile's `{c}`");
        }
        let base = MINIMAL.replace("k3s", "rke2").replace("[app]", "[local-path, app]");
        let bad = format!("{base}storage: local-path\nrke2: {{kube_apiserver_arg: [--profiling=false]}}\n");
        let e = Profile::parse(&bad, "p").unwrap_err();
        assert_eq!(e.key, "rke2.kube_apiserver_arg[0]");
        assert!(e.hint.contains("without its leading `--`"), "{e}");
    }

    #[test]
    fn k3s_without_local_storage_needs_another_provisioner() {
        let e = parse("k3s: {disable: [local-storage]}\n").unwrap_err();
        assert_eq!(e.key, "storage");
        let e = parse("k3s: {disable: [coredns]}\n").unwrap_err();
        assert_eq!(e.key, "k3s.disable[0]");
    }

    #[test]
    fn ha_server_counts_are_odd_and_at_least_three() {
        let ha = MINIMAL.replace("single-node", "ha");
        assert_eq!(Profile::parse(&ha, "p").unwrap().topology, Topology::Ha { servers: 3, agents: true });
        let e = Profile::parse(&format!("{ha}ha: {{servers: 4}}\n"), "p").unwrap_err();
        assert_eq!(e.key, "ha.servers");
        let e = parse("ha: {servers: 3}\n").unwrap_err();
        assert!(e.cause.contains("only to `topology: ha`"), "{e}");
    }

    #[test]
    fn thresholds_are_checked_against_sizing_and_written_sanely() {
        assert_eq!(parse("preflight: {min_memory_mib: 16384}\n").unwrap_err().key, "preflight.min_memory_mib");
        let e = parse("preflight: {min_kernel: 5.10}\n").unwrap_err();
        assert!(e.hint.contains("quotes"), "YAML reads 5.10 as 5.1: {e}");
        assert_eq!(parse("preflight: {min_kernel: \"5.10\"}\n").unwrap().preflight.min_kernel.as_deref(), Some("5.10"));
        assert_eq!(parse("preflight: {disk_headroom: 0.5}\n").unwrap_err().key, "preflight.disk_headroom");
        let e = parse("preflight: {ports: {server: {tcp: [6443, \"2380-2379\", 10250]}}}\n").unwrap_err();
        assert_eq!(e.key, "preflight.ports.server.tcp[1]");
    }

    #[test]
    fn listed_ports_must_include_what_the_distribution_binds() {
        let e = parse("preflight: {ports: {server: {tcp: [10250]}}}\n").unwrap_err();
        assert_eq!(e.key, "preflight.ports.server.tcp");
        assert!(e.cause.contains("6443"), "{e}");
        let e = parse("preflight: {ports: {server: {tcp: [6443, 10250]}, agent: {tcp: [10250]}}}\n").unwrap_err();
        assert_eq!(e.key, "preflight.ports.agent");
    }

    #[test]
    fn the_name_must_match_the_file_or_bundle_entry() {
        let e = Profile::from_bundle_entry(MINIMAL, "other").unwrap_err().to_string();
        assert!(e.contains("profiles/other.yaml: name:") && e.contains("hint:"), "{e}");
    }
}
