//! `/etc/rancher/{k3s,rke2}/config.yaml` and `registries.yaml`.
//!
//! Both are written with `serde_yaml` from ordered mappings, so any value (a token
//! with `:` or `#`, an IPv6 address) is quoted correctly and the output is stable.

use std::collections::BTreeSet;

use airlock_format::error::Result;
use serde_yaml::{Mapping, Value};

use super::{
    check_abs_path, default_data_dir, invalid, is_dns_subdomain, join_display, product_name, server_url,
    DistributionInput, DistributionKind, RegistryMirror, Role,
};

/// The port joining nodes use: K3s' API server, RKE2's supervisor (contracts).
fn join_port(kind: DistributionKind) -> u16 {
    match kind {
        DistributionKind::K3s => 6443,
        DistributionKind::Rke2 => 9345,
    }
}

fn yaml(map: Mapping) -> String {
    serde_yaml::to_string(&Value::Mapping(map)).expect("a mapping of strings serializes")
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(items.into_iter().map(Value::String).collect())
}

/// The node's `config.yaml`. It holds the token, so the caller lays it out as a secret
/// file. Keys that only servers take are left out on agents, where K3s/RKE2 would
/// ignore them with a warning at best.
pub(super) fn config_yaml(input: &DistributionInput) -> Result<Vec<u8>> {
    let kind = input.kind();
    let server = input.role.is_server();
    let mut m = Mapping::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::String(k.to_string()), v);
    };
    put("token", Value::String(input.token.expose().to_string()));
    match (&input.role, kind) {
        // Only the first K3s server of an HA cluster initialises embedded etcd; RKE2
        // always runs etcd and takes no `cluster-init` (contracts).
        (Role::FirstServer, DistributionKind::K3s) => put("cluster-init", Value::Bool(true)),
        (Role::JoinServer { server } | Role::Agent { server }, _) => {
            put("server", Value::String(server_url(server, join_port(kind))))
        }
        _ => {}
    }
    put("node-name", Value::String(input.node_name.clone()));
    if !input.node_ip.is_empty() {
        put("node-ip", Value::String(join_display(&input.node_ip, ",")));
    }
    if server {
        if !input.tls_san.is_empty() {
            put("tls-san", strings(input.tls_san.iter().cloned()));
        }
        // Network flags and `disable` must match across servers (contracts); they come
        // from the same site answers on every server.
        if !input.cluster_cidr.is_empty() {
            put("cluster-cidr", Value::String(join_display(&input.cluster_cidr, ",")));
        }
        if !input.service_cidr.is_empty() {
            put("service-cidr", Value::String(join_display(&input.service_cidr, ",")));
        }
        if let Some(dns) = input.cluster_dns {
            put("cluster-dns", Value::String(dns.to_string()));
        }
        if !input.disable.is_empty() {
            put("disable", strings(input.disable.iter().cloned()));
        }
        if input.embedded_registry {
            put("embedded-registry", Value::Bool(true));
        }
        if !input.kube_apiserver_args.is_empty() {
            put("kube-apiserver-arg", strings(input.kube_apiserver_args.iter().cloned()));
        }
        // RKE2 encrypts Secrets at rest by default; K3s only when told, on every
        // server alike (the flag is cluster-wide).
        if input.secrets_encryption && input.kind() == DistributionKind::K3s {
            put("secrets-encryption", Value::Bool(true));
        }
    }
    if input.cis {
        put("profile", Value::String("cis".into()));
    }
    // A true air gap: never fall back to the registries' public endpoints, not even
    // for a registry that has a mirror (contracts: **must**).
    put("disable-default-registry-endpoint", Value::Bool(true));
    if server {
        // The admin kubeconfig holds cluster-admin credentials: root only.
        put("write-kubeconfig-mode", Value::String("0600".into()));
    }
    let data = input.data_dir();
    if data != std::path::Path::new(default_data_dir(kind)) {
        put("data-dir", Value::String(data.display().to_string()));
    }
    let head = format!(
        "# {kind} {version} configuration for node {node} ({role}), written by airlock.\n\
         # It holds the cluster token: keep it 0600 and never paste it into a ticket.\n",
        kind = product_name(kind),
        version = input.version,
        node = input.node_name,
        role = input.role.describe(),
    );
    Ok(format!("{head}{}", yaml(m)).into_bytes())
}

/// `registries.yaml`, when the node pulls through a mirror or shares images through
/// the embedded registry; `None` otherwise. The shape is the one of contracts:
/// every mirrored registry points at the mirror, `"*": {}` lets the embedded registry
/// (when enabled) serve every registry, and the mirror's `configs` entry names only the
/// CA file (`tls.ca_file`), never `cert_file`/`key_file`: those are a client
/// certificate, and confusing the two is the classic failure of k3s#1148.
pub(super) fn registries_yaml(input: &DistributionInput) -> Result<Option<Vec<u8>>> {
    if input.registry_mirror.is_none() && !input.embedded_registry {
        return Ok(None);
    }
    let mut mirrors = Mapping::new();
    let mut configs = Mapping::new();
    if let Some(m) = &input.registry_mirror {
        for registry in &m.registries {
            let mut entry = Mapping::new();
            entry.insert("endpoint".into(), strings([format!("https://{}", m.endpoint)]));
            if let Some(p) = &m.pushed {
                // One catch-all rule per upstream: its whole repository path moves below
                // the pushed root, so two upstreams with the same repository names never
                // meet. K3s writes the pattern and replacement into containerd's
                // hosts.toml as quoted TOML strings without escaping them: neither may
                // hold a `"` or `\`, which a prefix and a host name never do.
                let mut rewrite = Mapping::new();
                rewrite.insert("^(.*)$".into(), Value::String(format!("{}/$1", pushed_root(&p.prefix, registry))));
                entry.insert("rewrite".into(), Value::Mapping(rewrite));
            }
            mirrors.insert(Value::String(registry.clone()), Value::Mapping(entry));
        }
        let mut tls = Mapping::new();
        tls.insert("ca_file".into(), Value::String(m.ca_file.display().to_string()));
        let mut config = Mapping::new();
        config.insert("tls".into(), Value::Mapping(tls));
        if let Some((user, password)) = &m.auth {
            let mut auth = Mapping::new();
            auth.insert("username".into(), Value::String(user.clone()));
            auth.insert("password".into(), Value::String(password.expose().to_string()));
            config.insert("auth".into(), Value::Mapping(auth));
        }
        configs.insert(Value::String(m.endpoint.clone()), Value::Mapping(config));
    }
    mirrors.insert("*".into(), Value::Mapping(Mapping::new()));
    let mut doc = Mapping::new();
    doc.insert("mirrors".into(), Value::Mapping(mirrors));
    if !configs.is_empty() {
        doc.insert("configs".into(), Value::Mapping(configs));
    }
    let head = match input.registry_mirror.as_ref().and_then(|m| m.pushed.as_ref().map(|p| (m, p))) {
        Some((m, p)) => format!(
            "# Registry mirrors for {kind}, written by airlock. The bundle's images were pushed\n\
             # into {endpoint}{under}; every upstream below is pulled from there only,\n\
             # its repositories rewritten to the pushed paths. Default endpoints are disabled\n\
             # (disable-default-registry-endpoint): nothing is pulled from the upstreams themselves.\n",
            kind = product_name(input.kind()),
            endpoint = m.endpoint,
            under = if p.prefix.is_empty() { String::new() } else { format!(" below {}/", p.prefix) },
        ),
        None => format!(
            "# Registry mirrors for {kind}, written by airlock. Images come from the images\n\
             # directory first; default endpoints are disabled (disable-default-registry-endpoint).\n",
            kind = product_name(input.kind()),
        ),
    };
    Ok(Some(format!("{head}{}", yaml(doc)).into_bytes()))
}

/// Where the push puts an upstream registry's repositories in the site registry:
/// `<prefix>/<host>`, a port's `:` (not allowed in a repository path) as `_`
/// (`registry.example:5000` → `platform/registry.example_5000`). The mapping of
/// `airlock registry push` (docs/registry.md), which its tests hold to this one.
pub fn pushed_root(prefix: &str, upstream: &str) -> String {
    let host = upstream.to_ascii_lowercase().replace(':', "_");
    if prefix.is_empty() {
        host
    } else {
        format!("{prefix}/{host}")
    }
}

/// A mirror's endpoint, CA file and registry list.
pub(super) fn check_mirror(m: &RegistryMirror) -> Result<()> {
    let host_port = |s: &str| -> bool {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (s, None),
        };
        let port_ok = match port {
            None => true,
            Some(p) => p.parse::<u16>().is_ok_and(|n| n > 0),
        };
        let host_ok = is_dns_subdomain(&host.to_ascii_lowercase())
            || host.parse::<std::net::Ipv4Addr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        host_ok && port_ok
    };
    if !host_port(&m.endpoint) {
        return Err(invalid(format!("registry mirror `{}`", m.endpoint), "not a `host:port` (no scheme, no path)")
            .with_hint("e.g. `registry.example:5000`; airlock adds https://"));
    }
    check_abs_path("registry CA file", &m.ca_file)?;
    let file = m.ca_file.file_name().map(|f| f.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if file.ends_with(".key") || file.ends_with("key.pem") {
        return Err(invalid(
            format!("registry CA file `{}`", m.ca_file.display()),
            "this looks like a private key, not the CA certificate that signed the mirror's certificate",
        )
        .with_hint("`tls.ca_file` takes the CA certificate (e.g. /etc/airlock/pki/ca.crt); see k3s#1148"));
    }
    if let Some(p) = &m.pushed {
        let component = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !p.prefix.is_empty() && !p.prefix.split('/').all(component) {
            return Err(invalid(format!("registry prefix `{}`", p.prefix), "not a repository path")
                .with_hint("use lower-case letters, digits and . _ - between slashes, e.g. platform"));
        }
    }
    if m.registries.is_empty() {
        return Err(invalid(
            format!("registry mirror `{}`", m.endpoint),
            "no registries to redirect to it (e.g. docker.io, quay.io)",
        ));
    }
    let mut seen = BTreeSet::new();
    for r in &m.registries {
        if r == "*" || !host_port(r) {
            return Err(invalid(format!("mirrored registry `{r}`"), "not a registry host name (`docker.io`)"));
        }
        if !seen.insert(r) {
            return Err(invalid(format!("mirrored registry `{r}`"), "listed twice"));
        }
    }
    Ok(())
}
