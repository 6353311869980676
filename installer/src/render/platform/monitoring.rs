//! Monitoring from the upstream charts: prometheus-community `prometheus` (29.27,
//! Prometheus 3; with its Alertmanager, kube-state-metrics and node-exporter
//! dependencies, vendored by the bundler) and `grafana` (12.11, Grafana 13). Their
//! values, and the objects those refer to.
//!
//! - **Shipped content, not typed on site**: the alert rules (`assets/monitoring/
//!   alerts.yaml`, blueprint §9.2 corrected, plus the platform's own), the scrape job
//!   for the app's `/metrics` (Kubernetes service discovery on the app's pods) and the
//!   six §9.3 dashboards ([`dashboards`]) are compiled into the installer, so an
//!   upgrade carries their changes like any other value.
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

/// The charts this module writes values for, as the bundle names them.
pub const PROMETHEUS_CHART: &str = "prometheus";
pub const GRAFANA_CHART: &str = "grafana";
/// The alert rules, as shipped (and as `promtool` checks them in the tests).
pub const ALERT_RULES: &str = include_str!("../../../../assets/monitoring/alerts.yaml");
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
    let mut files = BTreeMap::new();
    for (file, dashboard) in dashboards() {
        let text = serde_json::to_string_pretty(&dashboard).map_err(|e| {
            Error::input(format!("dashboard {file}"), format!("cannot be written as JSON: {e}"))
                .with_hint("this is a bug in airlock; report it with the command that failed")
        })?;
        files.insert(file, text);
    }
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
    let rules: Value = serde_yaml::from_str(ALERT_RULES).map_err(|e| {
        Error::input("assets/monitoring/alerts.yaml", format!("does not parse: {e}"))
            .with_hint("this is a bug in airlock; report it with the command that failed")
    })?;
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
                        "name": "Prometheus",
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
                    // Shipped content: changes come with the next bundle.
                    "disableDeletion": true,
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

/// The data source every dashboard panel queries.
pub const DATASOURCE_UID: &str = "prometheus";

/// One panel: a title, its queries (`legendFormat`, PromQL) and Grafana's unit.
struct Panel {
    title: &'static str,
    unit: &'static str,
    targets: &'static [(&'static str, &'static str)],
}

struct Board {
    uid: &'static str,
    title: &'static str,
    description: &'static str,
    panels: &'static [Panel],
}

const HTTP: &str = "servanda_http_request_duration_seconds";

/// The six dashboards of blueprint §9.3, as `(file name, Grafana dashboard JSON)`.
/// Every query uses metrics this stack has: the app's (§9.1 and the pool gauges),
/// kube-state-metrics', node-exporter's and cAdvisor's (through the chart's
/// `kubernetes-nodes-cadvisor` job).
pub fn dashboards() -> Vec<(String, Value)> {
    BOARDS.iter().map(|b| (format!("{}.json", b.uid), board_json(b))).collect()
}

/// Every PromQL expression of every dashboard, with where it is: for the tests.
pub fn dashboard_queries() -> Vec<(String, String)> {
    BOARDS
        .iter()
        .flat_map(|b| {
            b.panels.iter().flat_map(move |p| {
                p.targets
                    .iter()
                    .map(move |(_, expr)| (format!("{} / {}", b.title, p.title), expr.replace("$HTTP", HTTP)))
            })
        })
        .collect()
}

fn board_json(b: &Board) -> Value {
    let panels: Vec<Value> = b
        .panels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let targets: Vec<Value> = p
                .targets
                .iter()
                .enumerate()
                .map(|(j, (legend, expr))| {
                    json!({
                        "refId": ((b'A' + j as u8) as char).to_string(),
                        "datasource": { "type": "prometheus", "uid": DATASOURCE_UID },
                        "expr": expr.replace("$HTTP", HTTP),
                        "legendFormat": legend,
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "datasource": { "type": "prometheus", "uid": DATASOURCE_UID },
                // Two panels per row, 8 units high.
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
                "options": { "legend": { "displayMode": "list", "placement": "bottom" } },
                "targets": targets,
            })
        })
        .collect();
    json!({
        "uid": b.uid,
        "title": b.title,
        "description": b.description,
        "tags": ["airlock"],
        "editable": false,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": { "from": "now-6h", "to": "now" },
        "timezone": "browser",
        "panels": panels,
    })
}

const BOARDS: &[Board] = &[
    Board {
        uid: "airlock-system-health",
        title: "System Health",
        description: "CPU, memory, pods and uptime of the cluster's nodes (DevOps).",
        panels: &[
            Panel {
                title: "CPU busy per node",
                unit: "percentunit",
                targets: &[("{{instance}}", "1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m]))")],
            },
            Panel {
                title: "Memory used per node",
                unit: "percentunit",
                targets: &[("{{instance}}", "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes")],
            },
            Panel {
                title: "Pods by phase",
                unit: "short",
                targets: &[("{{phase}}", "sum by (phase) (kube_pod_status_phase)")],
            },
            Panel {
                title: "Node uptime",
                unit: "s",
                targets: &[("{{instance}}", "time() - node_boot_time_seconds")],
            },
        ],
    },
    Board {
        uid: "airlock-api-performance",
        title: "API Performance",
        description: "Request rate, latency (P50/P95/P99) and error rate of the app's API (DevOps and developers).",
        panels: &[
            Panel {
                title: "Requests per second by route",
                unit: "reqps",
                targets: &[("{{route}}", "sum by (route) (rate($HTTP_count[5m]))")],
            },
            Panel {
                title: "Latency",
                unit: "s",
                targets: &[
                    ("P50", "histogram_quantile(0.5, sum by (le) (rate($HTTP_bucket[5m])))"),
                    ("P95", "histogram_quantile(0.95, sum by (le) (rate($HTTP_bucket[5m])))"),
                    ("P99", "histogram_quantile(0.99, sum by (le) (rate($HTTP_bucket[5m])))"),
                ],
            },
            Panel {
                title: "Error rate (5xx share)",
                unit: "percentunit",
                targets: &[(
                    "5xx",
                    "sum(rate($HTTP_count{status_code=~\"5..\"}[5m])) / sum(rate($HTTP_count[5m]))",
                )],
            },
        ],
    },
    Board {
        uid: "airlock-export-pipeline",
        title: "Export Pipeline",
        description: "Queue depth, job duration and success/failure rate of exports (DevOps and the export team).",
        panels: &[
            Panel {
                title: "Queue depth",
                unit: "short",
                targets: &[("pending", "max(servanda_export_queue_depth)")],
            },
            Panel {
                title: "Job duration (P95) by format",
                unit: "s",
                targets: &[(
                    "{{format}}",
                    "histogram_quantile(0.95, sum by (le, format) (rate(servanda_export_job_duration_seconds_bucket[15m])))",
                )],
            },
            Panel {
                title: "Jobs per minute by status",
                unit: "short",
                targets: &[("{{status}}", "sum by (status) (rate(servanda_export_job_duration_seconds_count[15m])) * 60")],
            },
            Panel {
                title: "Failure rate",
                unit: "percentunit",
                targets: &[(
                    "failed",
                    "sum(rate(servanda_export_job_duration_seconds_count{status=\"failed\"}[15m])) / sum(rate(servanda_export_job_duration_seconds_count[15m]))",
                )],
            },
        ],
    },
    Board {
        uid: "airlock-tenant-activity",
        title: "Tenant Activity",
        description: "Active tenants, requests per tenant and storage use (product and DevOps).",
        panels: &[
            Panel {
                title: "Active tenants",
                unit: "short",
                targets: &[("tenants", "max(servanda_active_tenants_total)")],
            },
            Panel {
                title: "Requests per tenant",
                unit: "reqps",
                targets: &[("{{tenant_id}}", "topk(10, sum by (tenant_id) (rate($HTTP_count[5m])))")],
            },
            Panel {
                // Per-tenant bytes are not measured; the volumes' fill is (MinIO's
                // and PostgreSQL's claims, through the kubelet's volume stats).
                title: "Storage used by volume",
                unit: "bytes",
                targets: &[(
                    "{{namespace}}/{{persistentvolumeclaim}}",
                    "sum by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes{namespace=~\"app|minio\"})",
                )],
            },
        ],
    },
    Board {
        uid: "airlock-database",
        title: "Database",
        description: "Query duration, connection pool and slow queries (DevOps).",
        panels: &[
            Panel {
                title: "Query duration (P95) by operation",
                unit: "s",
                targets: &[(
                    "{{operation}}",
                    "histogram_quantile(0.95, sum by (le, operation) (rate(servanda_db_query_duration_seconds_bucket[5m])))",
                )],
            },
            Panel {
                title: "Connection pool use",
                unit: "percentunit",
                targets: &[("{{pod}}", "servanda_db_pool_active / servanda_db_pool_max")],
            },
            Panel {
                // The histogram's largest finite bucket is 1 s: what is above it.
                title: "Slow queries (over 1 s) per second by table",
                unit: "short",
                targets: &[(
                    "{{table}}",
                    "sum by (table) (rate(servanda_db_query_duration_seconds_count[5m])) - sum by (table) (rate(servanda_db_query_duration_seconds_bucket{le=\"1\"}[5m]))",
                )],
            },
        ],
    },
    Board {
        uid: "airlock-security",
        title: "Security",
        description: "Failed logins, refused requests and role changes, from the API's responses (security team). \
            Counted from the API's request metric: 401 answers of the login route, 403 answers (a user reaching \
            for another tenant's data gets 403), and successful writes to the role routes.",
        panels: &[
            Panel {
                title: "Failed logins per minute",
                unit: "short",
                targets: &[(
                    "failed logins",
                    "sum(rate($HTTP_count{route=~\"/api/auth.*\",status_code=\"401\"}[5m])) * 60",
                )],
            },
            Panel {
                title: "Refused requests (403) per minute by tenant",
                unit: "short",
                targets: &[("{{tenant_id}}", "sum by (tenant_id) (rate($HTTP_count{status_code=\"403\"}[5m])) * 60")],
            },
            Panel {
                title: "Role changes per hour",
                unit: "short",
                targets: &[(
                    "{{method}} {{route}}",
                    "sum by (method, route) (increase($HTTP_count{route=~\".*/roles.*\",method=~\"POST|PUT|PATCH|DELETE\",status_code=~\"2..\"}[1h]))",
                )],
            },
        ],
    },
];

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
mod tests {
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
        }
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
    fn the_six_dashboards_are_in_one_config_map_and_query_the_prometheus_data_source() {
        let r = render_grafana(&input()).unwrap();
        let cm: Value = serde_yaml::from_str(&r.manifest(DASHBOARDS_CONFIG_MAP).unwrap().yaml).unwrap();
        let files = cm["data"].as_object().unwrap();
        assert_eq!(files.len(), 6);
        for (name, text) in files {
            let d: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
            assert_eq!(format!("{}.json", d["uid"].as_str().unwrap()), *name);
            for p in d["panels"].as_array().unwrap() {
                for t in p["targets"].as_array().unwrap() {
                    assert_eq!(t["datasource"]["uid"], DATASOURCE_UID);
                    assert!(!t["expr"].as_str().unwrap().contains("$HTTP"), "{name}");
                }
            }
        }
        assert!(dashboard_queries().len() >= 20);
    }

    #[test]
    fn the_pki_textfile_is_in_the_exposition_format() {
        let t = pki_textfile(&[("ingress".into(), 1_800_000_000), ("odd\"name".into(), 1)]);
        assert!(t.contains("airlock_certificate_not_after_seconds{certificate=\"ingress\"} 1800000000\n"), "{t}");
        assert!(t.contains("certificate=\"odd\\\"name\""), "{t}");
        assert!(t.starts_with("# HELP"));
    }
}
