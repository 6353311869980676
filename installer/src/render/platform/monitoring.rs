//! Monitoring from the upstream charts: prometheus-community `prometheus` (29.27,
//! Prometheus 3; with its Alertmanager, kube-state-metrics and node-exporter
//! dependencies, vendored by the bundler) and `grafana` (12.11, Grafana 13). Their
//! values, and the objects those refer to.
//!
//! - **Shipped content, not typed on site**: the alert rules and the dashboards come
//!   from the bundle ([`Content`], signed entries under `monitoring/`: the vendor's, or
//!   the reference ones in `assets/monitoring/` that the bundler carries by default),
//!   so an upgrade to a bundle with changed rules or dashboards changes the values
//!   and the ConfigMap it deploys, and a rollback puts the old ones back. The scrape
//!   job for the app's `/metrics` (Kubernetes service discovery on the app's pods) is
//!   generated here.
//! - **Pod Security**: everything in [`MonitoringInput::namespace`] runs under the
//!   restricted level, which that Namespace enforces. node-exporter cannot (it reads
//!   the host's `/proc`, `/sys` and root file system in the host's PID and network
//!   namespaces), so it alone runs in [`MonitoringInput::node_namespace`], labelled
//!   `privileged`: the exception is one DaemonSet, not the whole stack.
//! - **TLS** ends at the ingresses (`prometheus.`, `alertmanager.`, `grafana.<domain>`)
//!   with the Secret the PKI step writes from its `monitoring` leaf.
//! - **Offline Grafana**: no usage reporting, update checks, gravatar, news feed,
//!   plugin catalogue or external snapshot sharing; nothing is fetched at start (no
//!   `plugins`, no dashboard downloads, no sidecar image). Its admin password comes
//!   from a Secret, never from the values.

use std::collections::BTreeMap;

use airlock_format::error::{Error, Result};
use serde_json::{json, Value};

use super::{config_map, metadata, non_empty, non_empty_secret, secret, to_yaml};
use super::{Manifest, ManifestKind, Rendered};
use crate::site::answers::Secret;
pub use crate::site::profile::MonitoringSizing;

/// The charts this module writes values for, as the bundle names them, and the data
/// source every dashboard panel queries.
pub use airlock_format::monitoring::{DATASOURCE_NAME, DATASOURCE_UID, GRAFANA_CHART, PROMETHEUS_CHART};
/// Where airlock writes the site certificates' expiry for node-exporter's textfile
/// collector (see [`pki_textfile`]).
pub const TEXTFILE_DIR: &str = "/var/lib/airlock/metrics";
pub const PKI_TEXTFILE: &str = "/var/lib/airlock/metrics/airlock_pki.prom";
/// The app's scrape job: `job` label of its series.
pub const APP_SCRAPE_JOB: &str = "airlock-app";
/// The dashboards ConfigMap (one key per dashboard file).
pub const DASHBOARDS_CONFIG_MAP: &str = "grafana-dashboards";
/// Grafana's admin Secret, with the chart's key names.
pub const GRAFANA_ADMIN_SECRET: &str = "grafana-admin";
pub const GRAFANA_ADMIN_USER: &str = "admin";
/// Where node-exporter sees [`TEXTFILE_DIR`].
const TEXTFILE_MOUNT: &str = "/host/airlock-metrics";

/// Where the app's pods are and how to scrape them.
#[derive(Clone, Debug)]
pub struct AppTarget {
    pub namespace: String,
    /// `app.kubernetes.io/instance` of the app's pods.
    pub release: String,
}

/// The monitoring content the bundle carries: `(file name, text)` per rule file and
/// per dashboard, as shipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub rules: Vec<(String, String)>,
    pub dashboards: Vec<(String, String)>,
}

impl Content {
    /// Every PromQL expression of every dashboard, with where it is (`dashboard /
    /// panel`): for the tests that run them.
    pub fn dashboard_queries(&self) -> Result<Vec<(String, String)>> {
        Ok(airlock_format::monitoring::check_dashboards(&self.dashboards)?
            .into_iter()
            .flat_map(|d| d.queries)
            .collect())
    }
}

/// Everything the monitoring render needs.
#[derive(Clone, Debug)]
pub struct MonitoringInput {
    pub prometheus_release: String,
    pub grafana_release: String,
    /// Both charts' `targetNamespace` (restricted Pod Security).
    pub namespace: String,
    /// node-exporter's namespace (privileged Pod Security).
    pub node_namespace: String,
    /// `cluster.ingress_domain`.
    pub domain: String,
    /// The `kubernetes.io/tls` Secret (in [`Self::namespace`]) the ingresses serve.
    pub ingress_tls_secret: String,
    pub sizing: MonitoringSizing,
    /// `None`: the cluster's default StorageClass.
    pub storage_class: Option<String>,
    pub app: Option<AppTarget>,
    pub grafana_admin_password: Secret,
    /// Login through the platform's Keycloak; `None`: the break-glass admin only.
    pub oidc: Option<GrafanaOidc>,
    /// Where Alertmanager sends alerts besides its UI (the answers'); none by default.
    pub receivers: AlertReceivers,
    /// The alert rules and dashboards, from the bundle.
    pub content: Content,
}

/// Alertmanager's receivers from the answers.
#[derive(Clone, Debug, Default)]
pub struct AlertReceivers {
    pub webhook_url: Option<String>,
    pub mail: Option<crate::site::answers::AlertMail>,
}

/// Grafana's OIDC login against the realm's `grafana` client.
#[derive(Clone, Debug)]
pub struct GrafanaOidc {
    pub client_id: String,
    pub client_secret: Secret,
    /// `https://keycloak.<domain>/realms/<realm>`: where browsers are sent to log in.
    pub public_realm_url: String,
    /// The realm through Keycloak's Service, for the token and userinfo calls Grafana
    /// makes itself (the public name resolves to the ingress, outside the cluster).
    pub internal_realm_url: String,
    /// Directory groups (the `groups` claim) whose members get Grafana's Admin and
    /// Editor roles; everyone else who can log in to the realm is a Viewer.
    pub admin_group: String,
    pub editor_group: String,
}

/// The Secret with Grafana's OIDC client secret, and where Grafana reads it.
pub const GRAFANA_OIDC_SECRET: &str = "grafana-oidc";
const GRAFANA_OIDC_MOUNT: &str = "/etc/secrets/grafana-oidc";

pub fn prometheus_host(domain: &str) -> String {
    format!("prometheus.{domain}")
}
pub fn alertmanager_host(domain: &str) -> String {
    format!("alertmanager.{domain}")
}
pub fn grafana_host(domain: &str) -> String {
    format!("grafana.{domain}")
}

/// The Prometheus server's Service inside the cluster (the chart's
/// `<release>-server`, port 80), for Grafana's data source.
pub fn prometheus_url(input: &MonitoringInput) -> String {
    format!("http://{}-server.{}.svc.cluster.local", input.prometheus_release, input.namespace)
}

/// The Alertmanager Service (the dependency's `<release>-alertmanager`, port 9093).
pub fn alertmanager_url(input: &MonitoringInput) -> String {
    format!("http://{}-alertmanager.{}.svc.cluster.local:9093", input.prometheus_release, input.namespace)
}

/// The labels of the Prometheus server's pods (the chart's selector labels), for the
/// app's NetworkPolicy that lets it scrape.
pub fn server_pod_labels(release: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), PROMETHEUS_CHART.to_string()),
        ("app.kubernetes.io/instance".to_string(), release.to_string()),
        ("app.kubernetes.io/component".to_string(), "server".to_string()),
    ])
}

/// The prometheus chart's values and the Namespaces it needs.
pub fn render_prometheus(input: &MonitoringInput) -> Result<Rendered> {
    validate(input)?;
    let manifests = vec![
        namespace_with_pod_security(&input.namespace, "restricted")?,
        namespace_with_pod_security(&input.node_namespace, "privileged")?,
    ];
    Ok(Rendered { values_yaml: to_yaml("Prometheus values", &prometheus_values(input)?)?, manifests })
}

/// The grafana chart's values, its admin Secret and the dashboards ConfigMap.
pub fn render_grafana(input: &MonitoringInput) -> Result<Rendered> {
    validate(input)?;
    non_empty_secret("grafana: admin password", &input.grafana_admin_password)?;
    // Checked again here (the bundler did at build time): a bundle made some other
    // way must not leave Grafana with a dashboard it cannot show.
    airlock_format::monitoring::check_dashboards(&input.content.dashboards)
        .map_err(|e| e.within("the bundle's monitoring dashboards"))?;
    // As shipped, byte for byte: what the upgrade compares and a rollback restores.
    let files: BTreeMap<String, String> = input.content.dashboards.iter().cloned().collect();
    let manifests = vec![
        namespace_with_pod_security(&input.namespace, "restricted")?,
        secret(
            &input.namespace,
            GRAFANA_ADMIN_SECRET,
            "Opaque",
            &[("admin-user", GRAFANA_ADMIN_USER), ("admin-password", input.grafana_admin_password.expose())],
        )?,
        config_map(&input.namespace, DASHBOARDS_CONFIG_MAP, files)?,
    ];
    let mut manifests = manifests;
    if let Some(o) = &input.oidc {
        non_empty_secret("grafana: OIDC client secret", &o.client_secret)?;
        for (what, v) in [("admin group", &o.admin_group), ("editor group", &o.editor_group)] {
            // They go into a JMESPath string literal.
            if v.is_empty() || v.contains(['\'', '\\']) {
                return Err(Error::input(format!("grafana: {what} `{v}`"), "is empty or holds a quote or backslash")
                    .with_hint("name the directory group by its plain name"));
            }
        }
        manifests.push(secret(
            &input.namespace,
            GRAFANA_OIDC_SECRET,
            "Opaque",
            &[("client-secret", o.client_secret.expose())],
        )?);
    }
    Ok(Rendered { values_yaml: to_yaml("Grafana values", &grafana_values(input))?, manifests })
}

fn validate(input: &MonitoringInput) -> Result<()> {
    for (what, v) in [
        ("monitoring: Prometheus release", &input.prometheus_release),
        ("monitoring: Grafana release", &input.grafana_release),
        ("monitoring: namespace", &input.namespace),
        ("monitoring: node-exporter namespace", &input.node_namespace),
        ("monitoring: ingress domain", &input.domain),
        ("monitoring: ingress TLS secret", &input.ingress_tls_secret),
    ] {
        non_empty(what, v)?;
        // Both charts pass hosts and several values through Helm's `tpl`.
        if v.contains("{{") {
            return Err(Error::input(format!("{what} `{v}`"), "contains `{{`, which Helm would run as a template")
                .with_hint("use a plain value"));
        }
    }
    if input.namespace == input.node_namespace {
        return Err(Error::input(
            "monitoring: node-exporter namespace",
            "is the monitoring namespace; node-exporter needs host access, which the restricted level there refuses",
        )
        .with_hint("give node-exporter a namespace of its own"));
    }
    let s = &input.sizing;
    if s.retention_days == 0
        || s.prometheus_volume_gib == 0
        || s.alertmanager_volume_gib == 0
        || s.grafana_volume_gib == 0
    {
        return Err(Error::input("profile: monitoring", "has a retention or a volume size of 0")
            .with_hint("give whole numbers above 0 (docs/profiles.md#monitoring)"));
    }
    Ok(())
}

/// A Namespace that enforces (and warns and audits at) a Pod Security level.
fn namespace_with_pod_security(namespace: &str, level: &str) -> Result<Manifest> {
    let mut meta = metadata(namespace, None);
    for mode in ["enforce", "audit", "warn"] {
        meta["labels"][format!("pod-security.kubernetes.io/{mode}")] = json!(level);
    }
    let doc = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": meta });
    Ok(Manifest {
        kind: ManifestKind::Namespace,
        name: namespace.into(),
        namespace: namespace.into(),
        yaml: to_yaml(&format!("Namespace {namespace}"), &doc)?,
    })
}

/// The restricted level's pod-wide settings for a non-root user.
fn pod_security(uid: u32) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The restricted level's container settings, with a read-only root file system
/// (every writable path these images use is a volume).
fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "readOnlyRootFilesystem": true,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> Value {
    json!({ "requests": { "cpu": cpu, "memory": memory }, "limits": { "memory": memory_limit } })
}

fn ingress_tls(input: &MonitoringInput, host: &str) -> Value {
    json!([{ "secretName": input.ingress_tls_secret, "hosts": [host] }])
}

/// Keeps Prometheus' blocks under this share of its volume, so a burst of series
/// makes it drop old data instead of filling the disk (and stopping).
const RETENTION_SIZE_PERCENT: u64 = 85;

fn prometheus_values(input: &MonitoringInput) -> Result<Value> {
    let d = &input.domain;
    let s = &input.sizing;
    let prom_host = prometheus_host(d);
    let am_host = alertmanager_host(d);
    // Every group of every rule file, in one file: the chart's `rule_files` names
    // `alerting_rules.yml` only.
    let rules = airlock_format::monitoring::merge_rule_files(&input.content.rules)
        .map_err(|e| e.within("the bundle's monitoring rules"))?;
    let retention_mib = u64::from(s.prometheus_volume_gib) * 1024 * RETENTION_SIZE_PERCENT / 100;
    let mut server = json!({
        // Links in alerts and in the UI point at the public URL.
        "baseURL": format!("https://{prom_host}"),
        "retention": format!("{}d", s.retention_days),
        "retentionSize": format!("{retention_mib}MB"),
        "global": { "scrape_interval": "30s", "scrape_timeout": "10s", "evaluation_interval": "30s" },
        "persistentVolume": { "enabled": true, "size": format!("{}Gi", s.prometheus_volume_gib) },
        "resources": resources("200m", "512Mi", "2Gi"),
        "securityContext": pod_security(65534),
        "containerSecurityContext": container_security(),
        "ingress": {
            "enabled": true,
            "hosts": [prom_host],
            "tls": ingress_tls(input, &prom_host),
        },
    });
    let mut alertmanager = json!({
        "enabled": true,
        "baseURL": format!("https://{am_host}"),
        "persistence": { "enabled": true, "size": format!("{}Gi", s.alertmanager_volume_gib) },
        "resources": resources("10m", "32Mi", "128Mi"),
        "podSecurityContext": pod_security(65534),
        "securityContext": container_security(),
        "ingress": {
            "enabled": true,
            "hosts": [{ "host": am_host, "paths": [{ "path": "/", "pathType": "Prefix" }] }],
            "tls": ingress_tls(input, &am_host),
        },
        // No receiver by default: alerts are visible in Prometheus, Alertmanager and
        // Grafana; mail or a webhook is the site's choice (the answers').
        "config": {
            "global": {},
            "receivers": [receiver(&input.receivers)],
            "route": {
                "receiver": "default-receiver",
                "group_by": ["alertname"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            },
        },
    });
    if let Some(sc) = &input.storage_class {
        server["persistentVolume"]["storageClass"] = json!(sc);
        alertmanager["persistence"]["storageClass"] = json!(sc);
    }
    Ok(json!({
        "server": server,
        "configmapReload": {
            "prometheus": {
                "containerSecurityContext": container_security(),
                "resources": resources("10m", "16Mi", "64Mi"),
            },
        },
        "serverFiles": { "alerting_rules.yml": rules },
        "extraScrapeConfigs": app_scrape_config(input),
        "alertmanager": alertmanager,
        "kube-state-metrics": {
            "enabled": true,
            "resources": resources("10m", "64Mi", "256Mi"),
            "securityContext": pod_security(65534),
            "containerSecurityContext": container_security(),
        },
        "prometheus-node-exporter": {
            "enabled": true,
            "namespaceOverride": input.node_namespace,
            "resources": resources("10m", "32Mi", "128Mi"),
            // The certificates' expiry, as airlock writes it (CertificateExpiresSoon).
            "extraArgs": [format!("--collector.textfile.directory={TEXTFILE_MOUNT}")],
            "extraHostVolumeMounts": [{
                "name": "airlock-metrics",
                "hostPath": TEXTFILE_DIR,
                "mountPath": TEXTFILE_MOUNT,
                "readOnly": true,
                "mountPropagation": "HostToContainer",
            }],
        },
        // Nothing on an appliance pushes metrics; the chart enables it by default.
        "prometheus-pushgateway": { "enabled": false },
    }))
}

/// The one receiver every alert goes to: empty (the UIs only), or the answers'
/// webhook and/or mail relay. Resolved alerts are sent too, so a page is closed.
fn receiver(r: &AlertReceivers) -> Value {
    let mut out = json!({ "name": "default-receiver" });
    if let Some(url) = &r.webhook_url {
        out["webhook_configs"] = json!([{ "url": url, "send_resolved": true }]);
    }
    if let Some(m) = &r.mail {
        out["email_configs"] = json!([{
            "to": m.to,
            "from": m.from,
            "smarthost": m.smarthost,
            // A relay inside the site: no authentication, STARTTLS when offered.
            "require_tls": false,
            "send_resolved": true,
        }]);
    }
    out
}

/// The scrape job for the app's `/metrics` (the §9.1 metrics): its pods, found through
/// the Kubernetes API, on their container port named `http`. A string, as the chart
/// takes `extraScrapeConfigs`.
fn app_scrape_config(input: &MonitoringInput) -> String {
    let Some(app) = &input.app else { return String::new() };
    let job = json!([{
        "job_name": APP_SCRAPE_JOB,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [{ "role": "pod", "namespaces": { "names": [app.namespace] } }],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                "regex": regex_literal(&app.release),
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "http",
                "action": "keep",
            },
            { "source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod" },
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "target_label": "component",
            },
        ],
    }]);
    serde_yaml::to_string(&job).expect("a YAML sequence of plain values")
}

/// A release name as an RE2 regex matching exactly it (names are `[a-z0-9-]`, but
/// quote `.` anyway in case that ever changes).
fn regex_literal(s: &str) -> String {
    s.replace('.', "\\.")
}

fn grafana_values(input: &MonitoringInput) -> Value {
    let host = grafana_host(&input.domain);
    let s = &input.sizing;
    let mut persistence = json!({ "enabled": true, "size": format!("{}Gi", s.grafana_volume_gib) });
    if let Some(sc) = &input.storage_class {
        persistence["storageClassName"] = json!(sc);
    }
    let mut ini = grafana_ini(&host);
    let mut secret_mounts = Vec::new();
    if let Some(o) = &input.oidc {
        ini["auth.generic_oauth"] = generic_oauth(o);
        // The break-glass admin keeps the login form.
        ini["auth"] = json!({ "disable_login_form": false, "oauth_allow_insecure_email_lookup": false });
        secret_mounts.push(json!({
            "name": "oidc",
            "secretName": GRAFANA_OIDC_SECRET,
            "mountPath": GRAFANA_OIDC_MOUNT,
            "readOnly": true,
            "defaultMode": 0o440,
        }));
    }
    json!({
        "admin": { "existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password" },
        "extraSecretMounts": secret_mounts,
        "persistence": persistence,
        // Its busybox runs as root to chown the volume; fsGroup does that instead.
        "initChownData": { "enabled": false },
        "securityContext": pod_security(472),
        "containerSecurityContext": container_security(),
        "resources": resources("50m", "128Mi", "512Mi"),
        "ingress": { "enabled": true, "hosts": [host], "tls": ingress_tls(input, &host) },
        // Nothing to download at start.
        "plugins": [],
        "sidecar": { "dashboards": { "enabled": false }, "datasources": { "enabled": false } },
        "grafana.ini": ini,
        "datasources": {
            "datasources.yaml": {
                "apiVersion": 1,
                "datasources": [
                    {
                        "name": DATASOURCE_NAME,
                        "type": "prometheus",
                        "uid": DATASOURCE_UID,
                        "url": prometheus_url(input),
                        "access": "proxy",
                        "isDefault": true,
                        "editable": false,
                    },
                    {
                        "name": "Alertmanager",
                        "type": "alertmanager",
                        "uid": "alertmanager",
                        "url": alertmanager_url(input),
                        "access": "proxy",
                        "editable": false,
                        "jsonData": { "implementation": "prometheus" },
                    },
                ],
            },
        },
        "dashboardProviders": {
            "dashboardproviders.yaml": {
                "apiVersion": 1,
                "providers": [{
                    "name": "airlock",
                    "orgId": 1,
                    "folder": "Airlock",
                    "type": "file",
                    // Shipped content: changes come with the next bundle. Grafana never
                    // lets a user delete a provisioned dashboard; this setting decides
                    // what happens to one whose file is gone: deleted (false), or kept
                    // as an orphan no bundle manages any more (true). A bundle that
                    // drops a dashboard means it gone.
                    "disableDeletion": false,
                    "editable": false,
                    "options": { "path": "/var/lib/grafana/dashboards/airlock" },
                }],
            },
        },
        "dashboardsConfigMaps": { "airlock": DASHBOARDS_CONFIG_MAP },
    })
}

/// `[auth.generic_oauth]`: Keycloak's authorization-code flow with PKCE, the client
/// secret read from the mounted Secret (never in the values), roles from the groups.
fn generic_oauth(o: &GrafanaOidc) -> Value {
    let (public, internal) = (&o.public_realm_url, &o.internal_realm_url);
    json!({
        "enabled": true,
        "name": "Keycloak",
        "client_id": o.client_id,
        "client_secret": format!("$__file{{{GRAFANA_OIDC_MOUNT}/client-secret}}"),
        "scopes": "openid profile email",
        "use_pkce": true,
        "auth_url": format!("{public}/protocol/openid-connect/auth"),
        "token_url": format!("{internal}/protocol/openid-connect/token"),
        "api_url": format!("{internal}/protocol/openid-connect/userinfo"),
        "signout_redirect_url": format!("{public}/protocol/openid-connect/logout"),
        "login_attribute_path": "preferred_username",
        "email_attribute_path": "email",
        "name_attribute_path": "name",
        "groups_attribute_path": "groups",
        "role_attribute_path": format!(
            "contains(groups[*], '{}') && 'Admin' || contains(groups[*], '{}') && 'Editor' || 'Viewer'",
            o.admin_group, o.editor_group
        ),
        "allow_sign_up": true,
        "auto_login": false,
    })
}

/// `grafana.ini`: every feature that calls out to the internet is off.
fn grafana_ini(host: &str) -> Value {
    json!({
        "server": { "domain": host, "root_url": format!("https://{host}/") },
        "analytics": {
            "reporting_enabled": false,
            "check_for_updates": false,
            "check_for_plugin_updates": false,
            "feedback_links_enabled": false,
        },
        "security": { "disable_gravatar": true, "cookie_secure": true },
        "news": { "news_feed_enabled": false },
        "plugins": { "plugin_admin_enabled": false, "public_key_retrieval_disabled": true },
        "snapshots": { "external_enabled": false },
        "users": { "allow_sign_up": false },
        "auth.anonymous": { "enabled": false },
        "log": { "mode": "console" },
    })
}

/// node-exporter's textfile for the site certificates: `airlock_certificate_not_after_seconds`
/// per certificate, which the `CertificateExpiresSoon` rule compares with the time.
pub fn pki_textfile(certificates: &[(String, i64)]) -> String {
    let mut out = String::from(
        "# HELP airlock_certificate_not_after_seconds When a site certificate airlock manages expires (Unix time).\n\
         # TYPE airlock_certificate_not_after_seconds gauge\n",
    );
    for (name, not_after) in certificates {
        // Names are the PKI's leaf names (`[a-z0-9-]`); escape anyway, as the
        // exposition format wants.
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        out.push_str(&format!("airlock_certificate_not_after_seconds{{certificate=\"{escaped}\"}} {not_after}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const ADMIN_PW: &str = "grafana-admin-pw-71c9";

    pub(crate) fn input() -> MonitoringInput {
        MonitoringInput {
            prometheus_release: "prometheus".into(),
            grafana_release: "grafana".into(),
            namespace: "monitoring".into(),
            node_namespace: "monitoring-node".into(),
            domain: "platform.example.test".into(),
            ingress_tls_secret: "monitoring-tls".into(),
            sizing: MonitoringSizing::default(),
            storage_class: None,
            app: Some(AppTarget { namespace: "app".into(), release: "airlock-app".into() }),
            grafana_admin_password: Secret::new(ADMIN_PW),
            oidc: None,
            receivers: AlertReceivers::default(),
            content: reference_content(),
        }
    }

    /// The reference content, as the bundler carries it by default.
    pub(crate) fn reference_content() -> Content {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/monitoring");
        let read = |sub: &str, ext: &str| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = std::fs::read_dir(dir.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(ext) && !p.to_string_lossy().ends_with(".test.yaml"))
                .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
                .collect();
            v.sort();
            v
        };
        Content { rules: read("rules", ".yaml"), dashboards: read("dashboards", ".json") }
    }

    fn values(r: &Rendered) -> Value {
        serde_yaml::from_str(&r.values_yaml).unwrap()
    }

    #[test]
    fn prometheus_values_size_storage_from_the_profile_and_leave_pushgateway_off() {
        let mut i = input();
        i.sizing = MonitoringSizing { retention_days: 30, prometheus_volume_gib: 40, ..MonitoringSizing::default() };
        i.storage_class = Some("fast".into());
        let v = values(&render_prometheus(&i).unwrap());
        assert_eq!(v["server"]["retention"], "30d");
        assert_eq!(v["server"]["persistentVolume"]["size"], "40Gi");
        assert_eq!(v["server"]["persistentVolume"]["storageClass"], "fast");
        assert_eq!(v["server"]["retentionSize"], "34816MB", "85 % of 40 GiB");
        assert_eq!(v["alertmanager"]["persistence"]["size"], "2Gi");
        assert_eq!(v["prometheus-pushgateway"]["enabled"], false);
        assert_eq!(v["server"]["ingress"]["hosts"][0], "prometheus.platform.example.test");
        assert_eq!(v["alertmanager"]["ingress"]["hosts"][0]["host"], "alertmanager.platform.example.test");
        assert_eq!(v["server"]["ingress"]["tls"][0]["secretName"], "monitoring-tls");
        // The rules are the shipped file, as a mapping (the chart writes it out as YAML).
        let groups = v["serverFiles"]["alerting_rules.yml"]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn the_monitoring_namespace_is_restricted_and_only_node_exporters_is_privileged() {
        let r = render_prometheus(&input()).unwrap();
        let ns: Vec<Value> = r.manifests.iter().map(|m| serde_yaml::from_str(&m.yaml).unwrap()).collect();
        assert_eq!(ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(ns[1]["metadata"]["name"], "monitoring-node");
        assert_eq!(ns[1]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
        assert_eq!(values(&r)["prometheus-node-exporter"]["namespaceOverride"], "monitoring-node");
        let mut same = input();
        same.node_namespace = "monitoring".into();
        let e = render_prometheus(&same).unwrap_err().to_string();
        assert!(e.contains("node-exporter namespace"), "{e}");
    }

    #[test]
    fn the_app_scrape_job_keeps_only_the_releases_pods_on_their_http_port() {
        let v = values(&render_prometheus(&input()).unwrap());
        let jobs: Value = serde_yaml::from_str(v["extraScrapeConfigs"].as_str().unwrap()).unwrap();
        let job = &jobs[0];
        assert_eq!(job["job_name"], APP_SCRAPE_JOB);
        assert_eq!(job["kubernetes_sd_configs"][0]["namespaces"]["names"][0], "app");
        assert_eq!(job["relabel_configs"][0]["regex"], "airlock-app");
        let mut no_app = input();
        no_app.app = None;
        assert_eq!(values(&render_prometheus(&no_app).unwrap())["extraScrapeConfigs"], "");
    }

    #[test]
    fn grafana_takes_its_admin_password_from_a_secret_and_calls_nothing_outside() {
        let r = render_grafana(&input()).unwrap();
        assert!(!r.values_yaml.contains(ADMIN_PW));
        let s = r.manifest(GRAFANA_ADMIN_SECRET).unwrap();
        assert!(s.is_secret() && s.yaml.contains(ADMIN_PW));
        assert!(!format!("{r:?}").contains(ADMIN_PW));
        let v = values(&r);
        assert_eq!(v["admin"]["existingSecret"], GRAFANA_ADMIN_SECRET);
        let ini = &v["grafana.ini"];
        assert_eq!(ini["analytics"]["check_for_updates"], false);
        assert_eq!(ini["security"]["disable_gravatar"], true);
        assert_eq!(ini["snapshots"]["external_enabled"], false);
        assert_eq!(v["plugins"], json!([]));
        let mut empty = input();
        empty.grafana_admin_password = Secret::new("");
        assert!(render_grafana(&empty).is_err());
    }

    #[test]
    fn the_bundles_dashboards_are_one_config_map_as_shipped_and_query_the_prometheus_data_source() {
        let i = input();
        let r = render_grafana(&i).unwrap();
        let cm: Value = serde_yaml::from_str(&r.manifest(DASHBOARDS_CONFIG_MAP).unwrap().yaml).unwrap();
        let files = cm["data"].as_object().unwrap();
        assert_eq!(files.len(), 6);
        for (name, text) in &i.content.dashboards {
            assert_eq!(files[name].as_str(), Some(text.as_str()), "{name} is not as shipped");
            let d: Value = serde_json::from_str(text).unwrap();
            for p in d["panels"].as_array().unwrap() {
                for t in p["targets"].as_array().unwrap() {
                    assert_eq!(t["datasource"]["uid"], DATASOURCE_UID);
                }
            }
        }
        assert!(i.content.dashboard_queries().unwrap().len() >= 20);
        // A dropped dashboard leaves the ConfigMap, and Grafana deletes what it had
        // provisioned from it.
        let mut fewer = input();
        fewer.content.dashboards.retain(|(n, _)| n != "airlock-security.json");
        let r = render_grafana(&fewer).unwrap();
        let cm: Value = serde_yaml::from_str(&r.manifest(DASHBOARDS_CONFIG_MAP).unwrap().yaml).unwrap();
        assert!(cm["data"].get("airlock-security.json").is_none() && cm["data"].as_object().unwrap().len() == 5);
        let providers = &values(&r)["dashboardProviders"]["dashboardproviders.yaml"]["providers"];
        assert_eq!(providers[0]["disableDeletion"], false);
    }

    #[test]
    fn every_rule_file_of_the_bundle_goes_to_prometheus_and_a_bad_one_is_named() {
        let mut i = input();
        i.content
            .rules
            .push(("site.yaml".into(), "groups: [{name: site, rules: [{alert: SiteDown, expr: up == 0}]}]\n".into()));
        let v = values(&render_prometheus(&i).unwrap());
        let groups = v["serverFiles"]["alerting_rules.yml"]["groups"].as_array().unwrap();
        assert_eq!(groups.last().unwrap()["name"], "site");
        i.content.rules.push(("broken.yaml".into(), "groups: [{name: b, rules: [{alert: B}]}]\n".into()));
        let e = render_prometheus(&i).unwrap_err().to_string();
        assert!(e.contains("broken.yaml") && e.contains("monitoring rules"), "{e}");
        let mut bad = input();
        bad.content.dashboards[0].1 =
            bad.content.dashboards[0].1.replace("\"uid\": \"prometheus\"", "\"uid\": \"other\"");
        let e = render_grafana(&bad).unwrap_err().to_string();
        assert!(e.contains(&bad.content.dashboards[0].0) && e.contains("other"), "{e}");
    }

    #[test]
    fn the_pki_textfile_is_in_the_exposition_format() {
        let t = pki_textfile(&[("ingress".into(), 1_800_000_000), ("odd\"name".into(), 1)]);
        assert!(t.contains("airlock_certificate_not_after_seconds{certificate=\"ingress\"} 1800000000\n"), "{t}");
        assert!(t.contains("certificate=\"odd\\\"name\""), "{t}");
        assert!(t.starts_with("# HELP"));
    }
}
