//! K3s and RKE2 laid out as their own installers would, as a pure [`Layout`].
//!
//! [`render`] turns a [`DistributionInput`] (what the site answered, what the bundle
//! carries, both already resolved by the caller) into plain data: the binaries, the
//! config and registries files, the images the node imports at start, the auto-deploy
//! manifests (one `HelmChart` per chart), the systemd unit and the teardown scripts. It
//! reads nothing and writes nothing, so `--dry-run` and the golden tests see exactly
//! what an install lays down. The facts it follows are those of
//! `shared/design/contracts.md` (cited below as *contracts*):
//!
//! - K3s: the single binary at `/usr/local/bin/k3s` with its `kubectl`/`crictl`/`ctr`
//!   links, `k3s.service` or `k3s-agent.service` as K3s' `install.sh` writes it, and
//!   our own `k3s-killall.sh`/`k3s-uninstall.sh` (`k3s.rs`, `scripts.rs`).
//! - RKE2: the release tarball unpacked under `/usr/local` exactly as shipped, its own
//!   units and scripts, plus the CIS profile's `etcd` user and sysctl file and a storage
//!   provisioner, because RKE2 ships none (`rke2.rs`). The tarball is unpacked into
//!   staging (path-safe) by [`unpack_rke2_tarball`] and described by
//!   [`read_unpacked_rke2`] before rendering.
//! - Both: `config.yaml` (a secret file: it holds the token), `registries.yaml`
//!   (`config.rs`), the images directory (the distribution's own image tarballs as
//!   shipped, plus the bundle's OCI archive) and the `HelmChart` manifests (`charts.rs`).
//!
//! [`Layout::dirs`] lists, parents first, the directories the distribution owns
//! (`/etc/rancher/<kind>`, the data dir and its parts) and, for RKE2, the tarball's own
//! directories as `tar -x` would create them under `/usr/local`. Parents of planned
//! files that are not listed (standard host directories such as `/usr/local/bin` or
//! `/etc/systemd/system` for K3s) are expected to exist, or to be created 0755 by the
//! engine. The K3s uninstall script removes the listed directories again, each only
//! when empty.

mod charts;
mod config;
mod k3s;
mod rke2;
mod scripts;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use airlock_format::error::{Error, Result};
pub use airlock_format::manifest::DistributionKind;
use ipnet::IpNet;

use crate::engine::layout::Layout;
use crate::site::answers::Secret;

pub use charts::{helm_chart_file_name, CHART_CONTENT_LIMIT, HELM_CHART_NAMESPACE};
pub use config::pushed_root;
pub use rke2::{
    proc_sys_path, read_unpacked_rke2, rewritten_for_opt_prefix, unpack_rke2_tarball, CIS_SYSCTL, CIS_SYSCTLS,
    OPT_PREFIX, RKE2_UNPACK_DIR,
};

/// The subject of every input error (`distribution: node name `X``).
const SUBJECT: &str = "distribution";

/// The cluster token. Its `Debug` and `Display` never show the value, so it cannot leak
/// into logs, plans or panics by accident; [`Token::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }
    /// The secret value, for writing it into the (0600, secret) config file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What this node is in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only server of a single-server cluster. K3s keeps its state in SQLite (no
    /// `cluster-init`); RKE2 always runs embedded etcd.
    SingleServer,
    /// The first server of an HA cluster. K3s: `cluster-init: true` (embedded etcd);
    /// RKE2: nothing special, because RKE2 never takes `cluster-init` (contracts).
    FirstServer,
    /// A further HA server joining through `server`, the first server's host name or IP
    /// (no scheme, no port): K3s joins on 6443, RKE2 on its supervisor port 9345.
    JoinServer { server: String },
    /// An agent (worker) joining through `server`, as for [`Role::JoinServer`].
    Agent { server: String },
}

impl Role {
    pub fn is_server(&self) -> bool {
        !matches!(self, Role::Agent { .. })
    }
    fn join_host(&self) -> Option<&str> {
        match self {
            Role::JoinServer { server } | Role::Agent { server } => Some(server),
            Role::SingleServer | Role::FirstServer => None,
        }
    }
    fn describe(&self) -> &'static str {
        match self {
            Role::SingleServer => "single server",
            Role::FirstServer => "first server of an HA cluster",
            Role::JoinServer { .. } => "server joining an HA cluster",
            Role::Agent { .. } => "agent",
        }
    }
}

/// A registry mirror the node pulls through (`registries.yaml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryMirror {
    /// `host:port` of the mirror, without scheme (`registry.example:5000`); reached over
    /// HTTPS.
    pub endpoint: String,
    /// The CA certificate that signed the mirror's server certificate, as a path on the
    /// node (normally `/etc/airlock/pki/ca.crt`). Never a client certificate or key: that
    /// confusion is the common failure of k3s#1148 / rke2#3904.
    pub ca_file: PathBuf,
    /// The upstream registries redirected to the mirror (`docker.io`, `quay.io`, ...).
    pub registries: Vec<String>,
    /// Basic-auth credentials for the mirror; `registries.yaml` then becomes a secret file.
    pub auth: Option<(String, Secret)>,
    /// The bundle's images were pushed into this registry (the site registry), under
    /// the push's mapping; `None`: the registry mirrors the upstream paths as they are.
    pub pushed: Option<PushedImages>,
}

/// Where `airlock registry push` (and install/upgrade with a site registry) put the
/// bundle's images: `<endpoint>/<prefix>/<upstream host>/<repository>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImages {
    /// The repository prefix (a Harbor project), empty for none.
    pub prefix: String,
    /// The node also gets the image archive in its images directory (`delivery: both`).
    pub archive_too: bool,
}

impl RegistryMirror {
    /// Whether the bundle's image archive goes into the images directory.
    pub fn wants_archive(&self) -> bool {
        self.pushed.as_ref().is_none_or(|p| p.archive_too)
    }
}

/// One Helm chart from the bundle, installed by the distribution's helm-controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartInput {
    /// Chart name; also the release name and the `HelmChart` object's name.
    pub name: String,
    pub version: String,
    /// The namespace the release goes into (`targetNamespace`, created if missing).
    pub namespace: String,
    /// The staged entry of the chart archive (`charts/<name>-<version>.tgz`), copied to
    /// `server/static/charts/` when the chart is too big to inline.
    pub entry: String,
    /// The chart archive's bytes (charts are small; they decide inline vs. static and
    /// are base64-inlined as `chartContent` when small).
    pub tgz: Vec<u8>,
    /// The values (`valuesContent`), rendered by the caller.
    pub values_yaml: String,
    /// The values hold credentials: the manifest is then a secret file (0600, content
    /// never shown in plans). Prefer `valuesSecrets` in the chart's own Secret.
    pub values_secret: bool,
}

/// One entry of the unpacked RKE2 tarball, relative to the tarball root (which is
/// `/usr/local` on the node).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TarballEntry {
    /// `bin/rke2`, `lib/systemd/system`, ... (no `./`, no trailing `/`).
    pub path: String,
    pub kind: TarballEntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TarballEntryKind {
    Dir,
    /// A regular file; executable files are laid out 0755, others 0644.
    File {
        executable: bool,
    },
    /// A symlink whose target stays inside the tarball (checked when unpacking).
    Symlink {
        target: String,
    },
}

/// The distribution's own release artifacts, as staged: what they are decides the kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Artifacts {
    K3s {
        /// Staged entry of the K3s binary (`distribution/k3s`).
        binary: String,
        /// Staged entries of K3s' airgap image tarballs
        /// (`distribution/k3s-airgap-images-amd64.tar.zst`), laid into the images
        /// directory under their own names.
        images: Vec<String>,
    },
    Rke2 {
        /// The unpacked `rke2.linux-<arch>.tar.gz`, from [`read_unpacked_rke2`]; each file
        /// is staged at `unpacked/rke2/<path>`.
        tarball: Vec<TarballEntry>,
        /// Staged entries of RKE2's image tarballs (`rke2-images.linux-amd64.tar.zst`, or
        /// the core + CNI split), kept as shipped (contracts).
        images: Vec<String>,
    },
}

/// Everything [`render`] needs. Built by the caller from the answers, the profile and
/// the staged bundle; this module depends on none of those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributionInput {
    /// The distribution release (`v1.31.4+k3s1`, `v1.31.4+rke2r1`), named in comments.
    pub version: String,
    pub role: Role,
    pub node_name: String,
    /// `node-ip`; two addresses (IPv4 and IPv6) for dual-stack.
    pub node_ip: Vec<IpAddr>,
    /// Extra names and addresses in the API server certificate (servers only).
    pub tls_san: Vec<String>,
    pub token: Token,
    /// Pod network(s); servers only, and identical on every server (contracts).
    pub cluster_cidr: Vec<IpNet>,
    /// Service network(s); servers only, identical on every server.
    pub service_cidr: Vec<IpNet>,
    /// The cluster DNS service IP; must lie in `service_cidr`.
    pub cluster_dns: Option<IpAddr>,
    /// Packaged components not to deploy (K3s: `traefik`, `servicelb`, ...; RKE2:
    /// `rke2-ingress-nginx`, ...); servers only.
    pub disable: Vec<String>,
    /// Peer-to-peer image sharing between nodes (`embedded-registry: true`), for HA.
    pub embedded_registry: bool,
    /// K3s: encrypt Secrets at rest (`secrets-encryption: true`); RKE2 always does.
    pub secrets_encryption: bool,
    /// RKE2's CIS profile (`profile: cis`, the `etcd` user and the CIS sysctls).
    pub cis: bool,
    /// Servers only: `kube-apiserver-arg` flags (`name=value`) the profile adds, such
    /// as the hardening guide's `service-account-extend-token-expiration=false` (CIS
    /// 1.11, check 1.2.30), which RKE2 releases before its own fix do not set for
    /// `profile: cis`.
    pub kube_apiserver_args: Vec<String>,
    /// A data directory other than `/var/lib/rancher/{k3s,rke2}`.
    pub data_dir: Option<PathBuf>,
    pub registry_mirror: Option<RegistryMirror>,
    pub artifacts: Artifacts,
    /// Staged path of the OCI image archive the installer writes from the bundle
    /// (`images/airlock-images.tar`), laid into the images directory by its file name.
    pub image_archive_entry: String,
    /// Charts installed on servers through `HelmChart` manifests, in this order.
    pub charts: Vec<ChartInput>,
    /// Proxy variables (`HTTP_PROXY`, `CONTAINERD_NO_PROXY`, ...) for the service's
    /// environment file; values may hold credentials, so they are [`Secret`]s.
    pub proxy_env: Vec<(String, Secret)>,
    /// RKE2 only: unpack under `/opt/rke2`, because `/usr/local` is read-only or a
    /// mount point (as RKE2's `install.sh` decides). Holds the original text of the
    /// tarball files it rewrites ([`rke2::rewritten_for_opt_prefix`]), by tarball path.
    pub rke2_opt_prefix: Option<std::collections::BTreeMap<String, String>>,
}

impl DistributionInput {
    pub fn kind(&self) -> DistributionKind {
        match self.artifacts {
            Artifacts::K3s { .. } => DistributionKind::K3s,
            Artifacts::Rke2 { .. } => DistributionKind::Rke2,
        }
    }

    /// The data directory: the configured one, or the distribution's default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(default_data_dir(self.kind())))
    }

    /// The systemd unit this node runs.
    pub fn unit(&self) -> &'static str {
        match (self.kind(), self.role.is_server()) {
            (DistributionKind::K3s, true) => "k3s.service",
            (DistributionKind::K3s, false) => "k3s-agent.service",
            (DistributionKind::Rke2, true) => "rke2-server.service",
            (DistributionKind::Rke2, false) => "rke2-agent.service",
        }
    }
}

/// `K3s` or `RKE2`, for comments and messages.
pub fn product_name(kind: DistributionKind) -> &'static str {
    match kind {
        DistributionKind::K3s => "K3s",
        DistributionKind::Rke2 => "RKE2",
    }
}

/// `/var/lib/rancher/k3s` or `/var/lib/rancher/rke2`.
pub fn default_data_dir(kind: DistributionKind) -> &'static str {
    match kind {
        DistributionKind::K3s => "/var/lib/rancher/k3s",
        DistributionKind::Rke2 => "/var/lib/rancher/rke2",
    }
}

/// `/etc/rancher/k3s` or `/etc/rancher/rke2`.
pub fn config_dir(kind: DistributionKind) -> &'static str {
    match kind {
        DistributionKind::K3s => "/etc/rancher/k3s",
        DistributionKind::Rke2 => "/etc/rancher/rke2",
    }
}

/// Renders the whole distribution layout for one node.
///
/// Errors are [`ErrorKind::Input`](airlock_format::error::ErrorKind::Input) and name
/// the offending value: the input is validated completely before anything is laid
/// out, so a plan is never half right.
pub fn render(input: &DistributionInput) -> Result<Layout> {
    validate(input)?;
    match &input.artifacts {
        Artifacts::K3s { binary, images } => k3s::render(input, binary, images),
        Artifacts::Rke2 { tarball, images } => rke2::render(input, tarball, images),
    }
}

fn invalid(what: impl fmt::Display, cause: impl Into<String>) -> Error {
    Error::input(format!("{SUBJECT}: {what}"), cause)
}

fn validate(input: &DistributionInput) -> Result<()> {
    let kind = input.kind();
    check_text("version", &input.version)?;
    if !is_dns_subdomain(&input.node_name) {
        return Err(invalid(
            format!("node name `{}`", input.node_name),
            "not a valid node name (lowercase letters, digits, `-` and `.`, at most 253 characters)",
        )
        .with_hint("use the host's short name in lowercase, e.g. `node-1`"));
    }
    let token = input.token.expose();
    if token.is_empty() || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("token", "the token is empty or contains whitespace or control characters")
            .with_hint("use a long random token of printable characters"));
    }
    if let Some(host) = input.role.join_host() {
        check_host(host)?;
    }
    for san in &input.tls_san {
        check_text("tls-san", san)?;
        if san.contains(',') {
            return Err(invalid(format!("tls-san `{san}`"), "a SAN cannot contain `,`"));
        }
    }
    if let Some(dns) = input.cluster_dns {
        if !input.service_cidr.is_empty() && !input.service_cidr.iter().any(|n| n.contains(&dns)) {
            return Err(invalid(
                format!("cluster-dns {dns}"),
                format!(
                    "the cluster DNS address is not inside the service network ({})",
                    join_display(&input.service_cidr, ", ")
                ),
            )
            .with_hint("pick an address of the service CIDR, conventionally its tenth (10.43.0.10 for 10.43.0.0/16)"));
        }
    }
    for d in &input.disable {
        check_disable(kind, d)?;
    }
    for (name, value) in &input.proxy_env {
        let v = value.expose();
        if !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            || v.is_empty()
            || v.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(invalid(format!("environment variable {name}"), "not a NAME=value without spaces or quotes"));
        }
    }
    if input.cis && kind == DistributionKind::K3s {
        return Err(invalid("cis", "the CIS profile (`profile: cis`) is an RKE2 feature; K3s has no such profile")
            .with_hint("use RKE2 for CIS-hardened sites, or follow the K3s hardening guide"));
    }
    if let Some(dir) = &input.data_dir {
        check_abs_path("data-dir", dir)?;
    }
    for arg in &input.kube_apiserver_args {
        check_text("kube-apiserver-arg", arg)?;
        if !arg.contains('=') || arg.starts_with('-') {
            return Err(invalid(format!("kube-apiserver-arg `{arg}`"), "not a `name=value` flag")
                .with_hint("write the flag without its leading `--`"));
        }
    }
    if let Some(m) = &input.registry_mirror {
        config::check_mirror(m)?;
    }
    check_entry("image archive", &input.image_archive_entry)?;
    let archive_name = basename(&input.image_archive_entry);
    if !is_image_tarball_name(archive_name) {
        return Err(invalid(
            format!("image archive `{}`", input.image_archive_entry),
            "the images directory only imports `.tar`, `.tar.zst`, `.tar.gz`, ... archives",
        ));
    }
    match &input.artifacts {
        Artifacts::K3s { binary, images } => {
            check_entry("K3s binary", binary)?;
            check_images(images, archive_name)?;
        }
        Artifacts::Rke2 { images, .. } => check_images(images, archive_name)?,
    }
    charts::check_charts(&input.charts)?;
    Ok(())
}

/// A value that ends up in YAML or in a comment: no control characters, no
/// whitespace, not empty.
fn check_text(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(format!("{what} `{}`", value.escape_debug()), "empty, or contains whitespace"));
    }
    Ok(())
}

fn check_abs_path(what: &str, path: &std::path::Path) -> Result<()> {
    let s = path.to_string_lossy();
    let ok = path.is_absolute()
        && s.len() > 1
        && !s.ends_with('/')
        && path.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'));
    if !ok {
        return Err(invalid(
            format!("{what} `{}`", s.escape_debug()),
            "not a plain absolute path (no `..`, no trailing `/`, letters, digits and `/._-+` only)",
        ));
    }
    Ok(())
}

fn check_entry(what: &str, entry: &str) -> Result<()> {
    airlock_format::manifest::check_entry_path(entry)
        .map_err(|why| invalid(format!("{what} `{}`", entry.escape_debug()), format!("not a staged entry path: {why}")))
}

/// The host a joining node talks to: a DNS name or an IP, without scheme or port,
/// because the port depends on the distribution (contracts: 6443 vs. 9345).
fn check_host(host: &str) -> Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains("://") || host.contains(':') || host.contains('/') {
        return Err(invalid(
            format!("server `{host}`"),
            "give the first server's host name or IP only, without scheme or port",
        )
        .with_hint("airlock adds https:// and the port (K3s 6443, RKE2 9345) itself"));
    }
    if !is_dns_subdomain(&host.to_ascii_lowercase()) {
        return Err(invalid(format!("server `{host}`"), "not a valid host name or IP address"));
    }
    Ok(())
}

/// `https://<host>:<port>`, with IPv6 addresses in brackets.
fn server_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

/// The components each distribution can `disable`; a typo would otherwise be ignored
/// silently by K3s and leave e.g. Traefik running.
fn check_disable(kind: DistributionKind, name: &str) -> Result<()> {
    const K3S: &[&str] = &["coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes"];
    let ok = match kind {
        DistributionKind::K3s => K3S.contains(&name),
        // RKE2's packaged components are all charts named `rke2-*`.
        DistributionKind::Rke2 => {
            name.strip_prefix("rke2-").is_some_and(|rest| !rest.is_empty()) && is_dns_subdomain(name)
        }
    };
    if ok {
        Ok(())
    } else {
        let known = match kind {
            DistributionKind::K3s => K3S.join(", "),
            DistributionKind::Rke2 => "rke2-ingress-nginx, rke2-metrics-server, rke2-coredns, ...".to_string(),
        };
        let product = product_name(kind);
        Err(invalid(format!("disable `{name}`"), format!("{product} has no such component"))
            .with_hint(format!("{product} components that can be disabled: {known}")))
    }
}

/// Names the images directory imports (contracts): the archive extensions K3s and
/// RKE2 decompress by suffix, and never a dotfile (ignored) or a `.txt` (a pull list,
/// which in an air gap would only produce pull errors).
pub fn is_image_tarball_name(name: &str) -> bool {
    const EXTENSIONS: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.lz4", ".tar.bz2", ".tbz"];
    !name.starts_with('.') && EXTENSIONS.iter().any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

fn check_images(images: &[String], archive_name: &str) -> Result<()> {
    let mut seen = std::collections::BTreeSet::from([archive_name]);
    for entry in images {
        check_entry("image tarball", entry)?;
        let name = basename(entry);
        if !is_image_tarball_name(name) {
            return Err(invalid(
                format!("image tarball `{entry}`"),
                "not an image archive the images directory imports (.tar, .tar.zst, .tar.gz, ...)",
            ));
        }
        if !seen.insert(name) {
            return Err(invalid(
                format!("image tarball `{entry}`"),
                format!("a second file named `{name}` in the images directory"),
            ));
        }
    }
    Ok(())
}

fn basename(entry: &str) -> &str {
    entry.rsplit('/').next().unwrap_or(entry)
}

/// RFC 1123 subdomain: what Kubernetes accepts as a node or object name.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// RFC 1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends, at most
/// 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn join_display<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(sep)
}

/// The directories a data dir needs, parents first: `/var/lib/rancher` (when the data
/// dir is under it), the data dir, `agent/`, `agent/images/` and, on servers,
/// `server/` (0700: it holds the token and the cluster CA keys),
/// `server/manifests/` and, when a chart is served statically, `server/static/charts/`.
fn data_dirs(layout: &mut Layout, input: &DistributionInput, static_charts: bool) {
    let data = input.data_dir();
    if data.starts_with("/var/lib/rancher") && data != std::path::Path::new("/var/lib/rancher") {
        layout.dir("/var/lib/rancher", 0o755);
    }
    layout.dir(&data, 0o755);
    layout.dir(data.join("agent"), 0o755);
    layout.dir(data.join("agent/images"), 0o755);
    if input.role.is_server() {
        layout.dir(data.join("server"), 0o700);
        layout.dir(data.join("server/manifests"), 0o755);
        if static_charts {
            layout.dir(data.join("server/static"), 0o755);
            layout.dir(data.join("server/static/charts"), 0o755);
        }
    }
}

/// The images directory: the distribution's own tarballs under their own names (they
/// are read as shipped, e.g. `rancher/rke2-runtime` before containerd starts), then the
/// bundle's OCI archive unless the bundle's images come from the site registry alone.
fn images(layout: &mut Layout, input: &DistributionInput, shipped: &[String]) {
    let dir = input.data_dir().join("agent/images");
    for entry in shipped {
        layout.staged(dir.join(basename(entry)), 0o644, entry.as_str());
    }
    // With the images in the site registry only, the node pulls them through
    // `registries.yaml` and an archive would only fill its disk twice.
    if input.registry_mirror.as_ref().is_none_or(RegistryMirror::wants_archive) {
        layout.staged(dir.join(basename(&input.image_archive_entry)), 0o644, input.image_archive_entry.as_str());
    }
}

/// The service's environment file: what `install.sh` copies from its caller's
/// environment (the proxy variables), one `NAME=value` line each. A secret file (0600,
/// content never in a plan) when a value holds credentials, as the support bundle's
/// redaction recognises them (`http://user:password@proxy`).
fn env_file(layout: &mut Layout, path: &str, input: &DistributionInput) {
    let mut text = format!(
        "# Environment of {unit}, written by airlock: the proxy variables of the site's answers\n\
         # (`proxy:`). The configuration is in {dir}/config.yaml.\n",
        unit = input.unit(),
        dir = config_dir(input.kind()),
    );
    let redactor = crate::ops::support::redact::Redactor::new(&[]);
    let mut credentials = false;
    for (name, value) in &input.proxy_env {
        credentials |= redactor.redact(value.expose()).0 != value.expose();
        text.push_str(&format!("{name}={}\n", value.expose()));
    }
    if credentials {
        layout.secret_file(path, text);
    } else {
        layout.file(path, 0o600, text);
    }
}

/// `/etc/rancher` and `/etc/rancher/<kind>`, the config file and, when needed, the
/// registries file.
fn config_files(layout: &mut Layout, input: &DistributionInput) -> Result<()> {
    let dir = config_dir(input.kind());
    layout.dir("/etc/rancher", 0o755);
    layout.dir(dir, 0o755);
    layout.secret_file(format!("{dir}/config.yaml"), config::config_yaml(input)?);
    if let Some(registries) = config::registries_yaml(input)? {
        match input.registry_mirror.as_ref().is_some_and(|m| m.auth.is_some()) {
            // Holds the mirror's password: never shown in a plan.
            true => layout.secret_file(format!("{dir}/registries.yaml"), registries),
            false => layout.file(format!("{dir}/registries.yaml"), 0o600, registries),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
