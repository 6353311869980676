//! The reference application (`assets/charts/airlock-app`): its `valuesContent` and
//! the objects that must exist before the chart is installed.
//!
//! [`render`] turns an [`AppInput`] (what the site answered and what the caller
//! generated, all resolved already) into a [`Rendered`]: the chart's values, which
//! name Secrets but never hold a secret value (they end up in the `HelmChart` object
//! and every Helm release revision), and the manifests the caller writes next to the
//! `HelmChart`: the namespace (Pod Security `restricted` enforced), the Secrets with
//! the database, S3 and OIDC credentials, and the site CA as a ConfigMap. Secrets are
//! namespaced, so the app gets its own copies of the MinIO credentials and the client
//! secret, in its own namespace.
//!
//! It reads nothing, writes nothing and generates nothing (the caller generates and
//! persists the credentials), so the same input always gives the same output and the
//! tests see exactly what an install would write.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use airlock_format::error::{Error, Result};
use ipnet::IpNet;
use serde_json::{json, Value as Json};

use crate::engine::layout::Layout;
use crate::render::distribution::{is_dns_label, is_dns_subdomain};
use crate::site::answers::Secret;

/// The chart's name (`assets/charts/airlock-app/Chart.yaml`).
pub const CHART_NAME: &str = "airlock-app";
/// The release (and `HelmChart`) name the installer uses; every object is `<release>-<part>`.
pub const DEFAULT_RELEASE: &str = "airlock-app";
/// The namespace the app runs in.
pub const DEFAULT_NAMESPACE: &str = "app";
/// The database and its owner, created by the PostgreSQL image at first start.
pub const DATABASE_NAME: &str = "app";
pub const DATABASE_USER: &str = "app";
/// PostgreSQL's port, fixed in the chart.
pub const DATABASE_PORT: u16 = 5432;
/// The key of the CA certificate in the CA ConfigMap.
pub const CA_KEY: &str = "ca.crt";

/// Longest release name: the longest object name is `<release>-allow-ingress-controller`
/// (25 more characters), and object names may have 63; a margin is left for new parts.
const MAX_RELEASE: usize = 30;
/// Where every hint points.
const DOC: &str = "docs/app-chart.md";

/// Full image references, exactly as the bundle carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppImages {
    pub api: String,
    pub web: String,
    pub worker: String,
    /// The official PostgreSQL image's interface (see the chart's values.yaml).
    pub postgres: String,
    /// The MinIO client `mc`.
    pub backup_client: String,
}

/// Where the ingress controller's pods are, for the NetworkPolicy that lets them in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressController {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    /// Source networks of a controller on the host network (its traffic comes from the
    /// node addresses, which no pod selector matches).
    pub cidrs: Vec<IpNet>,
}

impl IngressController {
    /// K3s' bundled Traefik (a normal pod in kube-system).
    pub fn k3s_traefik() -> Self {
        Self {
            namespace: "kube-system".into(),
            pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "traefik".into())]),
            cidrs: vec![],
        }
    }

    /// RKE2's bundled ingress-nginx, which runs with `hostNetwork: true`: its traffic
    /// reaches the app from the nodes' addresses, so they are given as `node_cidrs`.
    pub fn rke2_ingress_nginx(node_cidrs: Vec<IpNet>) -> Self {
        Self {
            namespace: "kube-system".into(),
            pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "rke2-ingress-nginx".into())]),
            cidrs: node_cidrs,
        }
    }
}

/// The platform's Keycloak, as the app uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeycloakInput {
    pub realm: String,
    /// The app's confidential OIDC client.
    pub client_id: String,
    pub client_secret: Secret,
    /// Keycloak's base URL inside the cluster, for discovery, JWKS and token calls
    /// (`http://keycloak-keycloakx-http.keycloak.svc.cluster.local`). Required: the
    /// public `https://keycloak.<domain>` resolves to the ingress, which the API's
    /// egress policy does not open; tokens still carry the public issuer, because
    /// Keycloak's configured hostname decides that, not the URL it was reached on.
    pub internal_url: String,
    /// Keycloak's namespace and pod labels, for the API's egress policy.
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    /// The port Keycloak's pods listen on (keycloakx: 8080).
    pub port: u16,
}

/// The platform's MinIO, as the app uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinioInput {
    /// `https://minio.minio.svc.cluster.local:9000`: scheme, host and port, no path.
    pub endpoint: String,
    pub bucket: String,
    /// A second bucket the nightly backup copies everything into; `None`: the backup
    /// volume only. The bucket must exist (created with the MinIO chart's `buckets`).
    pub backup_bucket: Option<String>,
    pub access_key: Secret,
    pub secret_key: Secret,
    /// MinIO's namespace and pod labels, for the egress policies.
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    /// The port MinIO's pods serve S3 on (9000).
    pub port: u16,
}

/// Everything [`render`] needs; the caller fills it from the answers, the bundle and
/// the credentials it generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppInput {
    /// Release name ([`DEFAULT_RELEASE`]); objects are named `<release>-<part>`.
    pub release: String,
    /// Namespace ([`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// The platform's base domain: the app is served on `app.<domain>`, Keycloak's
    /// issuer is `https://keycloak.<domain>/realms/<realm>`.
    pub ingress_domain: String,
    /// The `kubernetes.io/tls` Secret with the certificate for `app.<domain>`, in the
    /// app's namespace (the PKI writes it).
    pub tls_secret: String,
    /// The site CA (PEM), trusted by the app for https to MinIO and Keycloak.
    pub ca_pem: Option<String>,
    /// The password of the database user [`DATABASE_USER`].
    pub db_password: Secret,
    pub keycloak: KeycloakInput,
    pub minio: MinioInput,
    pub images: AppImages,
    pub ingress_controller: IngressController,
    /// The pods that scrape the API's `/metrics` (the monitoring component's
    /// Prometheus server), let in on the API's port; `None`: nobody scrapes it.
    pub metrics_scraper: Option<Scraper>,
}

/// Where the metrics scraper's pods are, for the NetworkPolicy that lets them in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scraper {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

/// One Kubernetes object for the auto-deploy manifests directory.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `Namespace`, `Secret` or `ConfigMap`.
    pub kind: &'static str,
    pub name: String,
    /// Its file in `<data-dir>/server/manifests/`: unique, an RFC 1123 name as K3s
    /// requires, and numbered so the namespace sorts before the objects in it
    /// (`airlock-app-0-namespace-app.yaml`, `airlock-app-1-secret-airlock-app-db.yaml`).
    /// K3s retries an object whose namespace does not exist yet, so the order only
    /// saves a retry; it is not needed for correctness.
    pub file_name: String,
    /// Holds secret values: write it 0600 and never print it.
    pub secret: bool,
    yaml: Secret,
}

impl Manifest {
    fn new(kind: &'static str, name: &str, namespace: &str, secret: bool, doc: &Json) -> Self {
        let order = if kind == "Namespace" { 0 } else { 1 };
        Self {
            kind,
            name: name.to_string(),
            file_name: format!("airlock-{namespace}-{order}-{}-{name}.yaml", kind.to_ascii_lowercase()),
            secret,
            yaml: Secret::new(to_yaml(doc)),
        }
    }

    /// The YAML document, for the one place that writes it.
    pub fn expose_yaml(&self) -> &str {
        self.yaml.expose()
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Manifest");
        d.field("kind", &self.kind).field("name", &self.name).field("file_name", &self.file_name);
        d.field("secret", &self.secret);
        if self.secret {
            d.field("yaml", &self.yaml);
        } else {
            d.field("yaml", &self.yaml.expose());
        }
        d.finish()
    }
}

/// What [`render`] produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The chart's `valuesContent`; holds no secret value.
    pub values_yaml: String,
    /// In apply order: the namespace first, then the objects in it.
    pub manifests: Vec<Manifest>,
}

impl Rendered {
    /// Plans every manifest as a file in `manifests_dir` (the distribution's
    /// `<data-dir>/server/manifests`), 0600 like the `HelmChart` files beside them;
    /// the ones holding Secrets as secret files, so no plan or report shows them.
    pub fn add_to_layout(&self, layout: &mut Layout, manifests_dir: &Path) {
        for m in &self.manifests {
            let path = manifests_dir.join(&m.file_name);
            if m.secret {
                layout.secret_file(path, m.expose_yaml());
            } else {
                layout.file(path, 0o600, m.expose_yaml());
            }
        }
    }
}

/// The names of the objects [`render`] creates, derived from the release name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    pub db_secret: String,
    pub s3_secret: String,
    pub oidc_secret: String,
    pub ca_config_map: String,
    /// The PostgreSQL Service the chart creates (`<release>-postgresql`).
    pub db_service: String,
}

impl ObjectNames {
    pub fn for_release(release: &str) -> Self {
        Self {
            db_secret: format!("{release}-db"),
            s3_secret: format!("{release}-s3"),
            oidc_secret: format!("{release}-oidc"),
            ca_config_map: format!("{release}-ca"),
            db_service: format!("{release}-postgresql"),
        }
    }
}

/// The chart's values and the manifests that must exist before it is installed.
pub fn render(input: &AppInput) -> Result<Rendered> {
    check(input)?;
    let names = ObjectNames::for_release(&input.release);
    let ns = &input.namespace;
    let domain = &input.ingress_domain;
    let issuer = format!("https://keycloak.{domain}/realms/{}", input.keycloak.realm);

    let values = json!({
        "images": {
            "api": input.images.api,
            "web": input.images.web,
            "worker": input.images.worker,
            "postgres": input.images.postgres,
            "backupClient": input.images.backup_client,
        },
        "domain": domain,
        "ingress": {"host": format!("app.{domain}"), "tlsSecret": input.tls_secret},
        "ca": {
            "configMap": if input.ca_pem.is_some() { names.ca_config_map.as_str() } else { "" },
            "key": CA_KEY,
        },
        "keycloak": {
            "issuerUrl": issuer,
            "internalUrl": input.keycloak.internal_url,
            "realm": input.keycloak.realm,
            "clientId": input.keycloak.client_id,
            "clientSecret": names.oidc_secret,
        },
        "s3": {
            "endpoint": input.minio.endpoint,
            "bucket": input.minio.bucket,
            "credentialsSecret": names.s3_secret,
        },
        "database": {
            "name": DATABASE_NAME,
            "user": DATABASE_USER,
            "credentialsSecret": names.db_secret,
        },
        "backup": {"bucket": input.minio.backup_bucket.clone().unwrap_or_default()},
        "networkPolicy": {
            "ingressController": {
                "namespace": input.ingress_controller.namespace,
                "podLabels": input.ingress_controller.pod_labels,
                "cidrs": input.ingress_controller.cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            },
            "minio": {
                "namespace": input.minio.namespace,
                "podLabels": input.minio.pod_labels,
                "port": input.minio.port,
            },
            "keycloak": {
                "namespace": input.keycloak.namespace,
                "podLabels": input.keycloak.pod_labels,
                "port": input.keycloak.port,
            },
            "metrics": input.metrics_scraper.as_ref().map_or(json!({}), |m| json!({
                "namespace": m.namespace,
                "podLabels": m.pod_labels,
            })),
        },
    });
    let values_yaml = to_yaml(&values);

    let labels = json!({"app.kubernetes.io/part-of": CHART_NAME, "app.kubernetes.io/managed-by": "airlock"});
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": {
                "app.kubernetes.io/part-of": CHART_NAME,
                "app.kubernetes.io/managed-by": "airlock",
                // Every pod of the app must pass Pod Security "restricted".
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    });
    let mut manifests = vec![Manifest::new("Namespace", ns, ns, false, &namespace)];
    let secret = |name: &str, data: Json| {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "type": "Opaque",
            "stringData": data,
        });
        Manifest::new("Secret", name, ns, true, &doc)
    };

    let password = input.db_password.expose();
    let db_url = format!(
        "postgresql://{DATABASE_USER}:{}@{}.{ns}.svc.cluster.local:{DATABASE_PORT}/{DATABASE_NAME}",
        percent_encode_userinfo(password),
        names.db_service
    );
    manifests.push(secret(
        &names.db_secret,
        json!({"username": DATABASE_USER, "password": password, "database": DATABASE_NAME, "url": db_url}),
    ));

    let (scheme, host_port) = input.minio.endpoint.split_once("://").expect("checked: endpoint has a scheme");
    let access = input.minio.access_key.expose();
    let secret_key = input.minio.secret_key.expose();
    // mc splits MC_HOST_<alias> with a regular expression and takes the keys verbatim
    // (no percent-decoding; minio/mc cmd/config.go parseEnvURLStr), so they go in raw;
    // `check` refuses keys with the separators `:` and `@`.
    let mc_host = format!("{scheme}://{access}:{secret_key}@{host_port}");
    manifests
        .push(secret(&names.s3_secret, json!({"access-key": access, "secret-key": secret_key, "mc-host": mc_host})));
    manifests.push(secret(&names.oidc_secret, json!({"client-secret": input.keycloak.client_secret.expose()})));

    if let Some(pem) = &input.ca_pem {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": names.ca_config_map, "namespace": ns, "labels": labels},
            "data": {CA_KEY: pem},
        });
        manifests.push(Manifest::new("ConfigMap", &names.ca_config_map, ns, false, &doc));
    }
    Ok(Rendered { values_yaml, manifests })
}

fn to_yaml(v: &Json) -> String {
    serde_yaml::to_string(v).expect("JSON values always serialize as YAML")
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the password in
/// the userinfo of `DATABASE_URL` (Prisma and libpq decode it).
fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Input checks: every problem names the field, before anything is rendered.

fn invalid(field: &str, cause: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::input(format!("app: {field}"), cause).with_hint(format!("{} (see {DOC})", hint.into()))
}

/// S3 bucket naming rules (as MinIO enforces them): 3–63 characters, lowercase
/// letters, digits, `.` and `-`, starting and ending with a letter or digit, no `..`.
fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        && !s.contains("..")
}

/// `http(s)://host[:port]` with nothing after it.
fn check_base_url(field: &str, url: &str, allow_path: bool) -> Result<()> {
    let hint = "give scheme, host and port, e.g. https://minio.minio.svc.cluster.local:9000";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(field, format!("`{url}` has no scheme"), hint));
    };
    if scheme != "http" && scheme != "https" {
        return Err(invalid(field, format!("`{url}`: scheme `{scheme}` is neither http nor https"), hint));
    }
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    if host_port.is_empty() || host_port.contains(['@', '?', '#']) || url.chars().any(char::is_whitespace) {
        return Err(invalid(field, format!("`{url}` is not a plain http(s) URL"), hint));
    }
    if !allow_path && !path.is_empty() {
        return Err(invalid(field, format!("`{url}` has a path; only scheme, host and port are used"), hint));
    }
    Ok(())
}

fn check_secret(field: &str, s: &Secret) -> Result<()> {
    if s.expose().is_empty() {
        return Err(invalid(field, "is empty", "the installer generates it; pass the generated value"));
    }
    if s.expose().chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters", "generate it from printable characters"));
    }
    Ok(())
}

fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.is_empty() {
        return Err(invalid(
            field,
            "no pod labels: the policy would select every pod of the namespace",
            "give the labels of the component's pods",
        ));
    }
    Ok(())
}

fn check(input: &AppInput) -> Result<()> {
    if !is_dns_label(&input.release) || input.release.len() > MAX_RELEASE {
        return Err(invalid(
            "release",
            format!("`{}` is not a DNS label of at most {MAX_RELEASE} characters", input.release),
            format!("use the default `{DEFAULT_RELEASE}`"),
        ));
    }
    if !is_dns_label(&input.namespace) {
        return Err(invalid(
            "namespace",
            format!("`{}` is not a valid namespace name", input.namespace),
            format!("use the default `{DEFAULT_NAMESPACE}`"),
        ));
    }
    if !is_dns_subdomain(&input.ingress_domain) {
        return Err(invalid(
            "ingress_domain",
            format!("`{}` is not a DNS name (lowercase labels separated by dots)", input.ingress_domain),
            "answer cluster.ingress_domain with the platform's base domain, e.g. platform.example.org",
        ));
    }
    if !is_dns_subdomain(&input.tls_secret) {
        return Err(invalid(
            "tls_secret",
            format!("`{}` is not a valid Secret name", input.tls_secret),
            "pass the name of the TLS Secret the PKI step writes into the app's namespace",
        ));
    }
    if let Some(pem) = &input.ca_pem {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "ca_pem",
                "is not a PEM certificate (no BEGIN CERTIFICATE line)",
                "pass the site CA certificate in PEM form",
            ));
        }
    }
    check_secret("db_password", &input.db_password)?;

    let kc = &input.keycloak;
    if kc.realm.is_empty() || !kc.realm.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(invalid(
            "keycloak.realm",
            format!("`{}` is not a realm name usable in the issuer URL", kc.realm),
            "use letters, digits, `-`, `.` and `_`",
        ));
    }
    if kc.client_id.is_empty() || kc.client_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "keycloak.client_id",
            format!("`{}` is not a client id", kc.client_id.escape_debug()),
            "use the app client's id from the realm",
        ));
    }
    check_secret("keycloak.client_secret", &kc.client_secret)?;
    check_base_url("keycloak.internal_url", &kc.internal_url, true)?;
    if !is_dns_label(&kc.namespace) {
        return Err(invalid(
            "keycloak.namespace",
            format!("`{}` is not a namespace name", kc.namespace),
            "give Keycloak's namespace",
        ));
    }
    check_labels("keycloak.pod_labels", &kc.pod_labels)?;

    let m = &input.minio;
    check_base_url("minio.endpoint", &m.endpoint, false)?;
    for (field, bucket) in [("minio.bucket", Some(&m.bucket)), ("minio.backup_bucket", m.backup_bucket.as_ref())] {
        if let Some(b) = bucket {
            if !is_bucket_name(b) {
                return Err(invalid(
                    field,
                    format!("`{b}` is not a valid bucket name"),
                    "3–63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit",
                ));
            }
        }
    }
    if m.backup_bucket.as_deref() == Some(m.bucket.as_str()) {
        return Err(invalid(
            "minio.backup_bucket",
            "is the app's own bucket; the backup would mirror the bucket into itself",
            "give a separate backup bucket, or none",
        ));
    }
    for (field, key) in [("minio.access_key", &m.access_key), ("minio.secret_key", &m.secret_key)] {
        check_secret(field, key)?;
        if key.expose().contains([':', '@', '/']) || key.expose().chars().any(char::is_whitespace) {
            return Err(invalid(
                field,
                "contains `:`, `@`, `/` or white space, which the MinIO client cannot take in MC_HOST_<alias>",
                "generate S3 keys from letters and digits",
            ));
        }
    }
    if !is_dns_label(&m.namespace) {
        return Err(invalid(
            "minio.namespace",
            format!("`{}` is not a namespace name", m.namespace),
            "give MinIO's namespace",
        ));
    }
    check_labels("minio.pod_labels", &m.pod_labels)?;

    let im = &input.images;
    for (field, r) in [
        ("images.api", &im.api),
        ("images.web", &im.web),
        ("images.worker", &im.worker),
        ("images.postgres", &im.postgres),
        ("images.backup_client", &im.backup_client),
    ] {
        if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                field,
                format!("`{}` is not an image reference", r.escape_debug()),
                "give the full reference the bundle carries (registry/repository:tag)",
            ));
        }
    }
    if !is_dns_label(&input.ingress_controller.namespace) {
        return Err(invalid(
            "ingress_controller.namespace",
            format!("`{}` is not a namespace name", input.ingress_controller.namespace),
            "use IngressController::k3s_traefik() or ::rke2_ingress_nginx()",
        ));
    }
    check_labels("ingress_controller.pod_labels", &input.ingress_controller.pod_labels)?;
    Ok(())
}

#[cfg(test)]
// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;

    const DB_PW: &str = "db-Pa55:w@rd/with#specials";
    const ACCESS: &str = "appAccessKey01";
    const SECRET_KEY: &str = "s3SecretKeyValue9876";
    const CLIENT_SECRET: &str = "oidcClientSecret5555";

    fn input() -> AppInput {
        AppInput {
            release: DEFAULT_RELEASE.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            ingress_domain: "platform.example.org".into(),
            tls_secret: "app-tls".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            db_password: Secret::new(DB_PW),
            keycloak: KeycloakInput {
                realm: "servanda".into(),
                client_id: "servanda-app".into(),
                client_secret: Secret::new(CLIENT_SECRET),
                internal_url: "http://keycloak-keycloakx-http.keycloak.svc.cluster.local".into(),
                namespace: "keycloak".into(),
                pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "keycloakx".into())]),
                port: 8080,
            },
            minio: MinioInput {
                endpoint: "https://minio.minio.svc.cluster.local:9000".into(),
                bucket: "servanda".into(),
                backup_bucket: Some("servanda-backup".into()),
                access_key: Secret::new(ACCESS),
                secret_key: Secret::new(SECRET_KEY),
                namespace: "minio".into(),
                pod_labels: BTreeMap::from([("app".into(), "minio".into())]),
                port: 9000,
            },
            images: AppImages {
                api: "registry.example/servanda/api:1.0.0".into(),
                web: "registry.example/servanda/web:1.0.0".into(),
                worker: "registry.example/servanda/worker:1.0.0".into(),
                postgres: "docker.io/library/postgres:16.6".into(),
                backup_client: "quay.io/minio/mc:RELEASE.2025-01-01T00-00-00Z".into(),
            },
            ingress_controller: IngressController::k3s_traefik(),
            metrics_scraper: None,
        }
    }

    fn secret_data(r: &Rendered, name: &str) -> serde_yaml::Mapping {
        let m = r.manifests.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no manifest {name}"));
        assert!(m.secret && m.kind == "Secret");
        let doc: serde_yaml::Value = serde_yaml::from_str(m.expose_yaml()).unwrap();
        doc["stringData"].as_mapping().unwrap().clone()
    }

    #[test]
    fn values_name_the_secrets_and_hold_no_secret_value() {
        let r = render(&input()).unwrap();
        for s in [DB_PW, ACCESS, SECRET_KEY, CLIENT_SECRET, "Pa55"] {
            assert!(!r.values_yaml.contains(s), "`{s}` leaked into the values:\n{}", r.values_yaml);
        }
        let v: serde_yaml::Value = serde_yaml::from_str(&r.values_yaml).unwrap();
        assert_eq!(v["database"]["credentialsSecret"], "airlock-app-db");
        assert_eq!(v["s3"]["credentialsSecret"], "airlock-app-s3");
        assert_eq!(v["keycloak"]["clientSecret"], "airlock-app-oidc");
        assert_eq!(v["keycloak"]["issuerUrl"], "https://keycloak.platform.example.org/realms/servanda");
        assert_eq!(v["ingress"]["host"], "app.platform.example.org");
        assert_eq!(v["ingress"]["tlsSecret"], "app-tls");
        assert_eq!(v["ca"]["configMap"], "airlock-app-ca");
        assert_eq!(v["backup"]["bucket"], "servanda-backup");
        // ...and the Secrets do hold them, so the check above is about where they are.
        assert_eq!(secret_data(&r, "airlock-app-db")["password"], DB_PW);
        assert_eq!(secret_data(&r, "airlock-app-s3")["secret-key"], SECRET_KEY);
        assert_eq!(secret_data(&r, "airlock-app-oidc")["client-secret"], CLIENT_SECRET);
        for m in r.manifests.iter().filter(|m| !m.secret) {
            for s in [DB_PW, ACCESS, SECRET_KEY, CLIENT_SECRET] {
                assert!(!m.expose_yaml().contains(s), "{} {} holds a secret", m.kind, m.name);
            }
        }
    }

    #[test]
    fn database_url_percent_encodes_the_password_and_names_the_chart_service() {
        let r = render(&input()).unwrap();
        let url = secret_data(&r, "airlock-app-db")["url"].as_str().unwrap().to_string();
        assert_eq!(
            url,
            "postgresql://app:db-Pa55%3Aw%40rd%2Fwith%23specials@airlock-app-postgresql.app.svc.cluster.local:5432/app"
        );
    }

    #[test]
    fn mc_host_carries_the_keys_verbatim_and_keys_with_separators_are_refused() {
        let r = render(&input()).unwrap();
        assert_eq!(
            secret_data(&r, "airlock-app-s3")["mc-host"],
            format!("https://{ACCESS}:{SECRET_KEY}@minio.minio.svc.cluster.local:9000").as_str()
        );
        let mut bad = input();
        bad.minio.secret_key = Secret::new("has:colon");
        let e = render(&bad).unwrap_err();
        assert!(e.subject.contains("minio.secret_key") && e.hint.is_some(), "{e}");
        assert!(!format!("{e}").contains("has:colon"), "the error must not show the key: {e}");
    }

    #[test]
    fn namespace_comes_first_and_enforces_restricted_pod_security() {
        let r = render(&input()).unwrap();
        assert_eq!(r.manifests[0].kind, "Namespace");
        let ns: serde_yaml::Value = serde_yaml::from_str(r.manifests[0].expose_yaml()).unwrap();
        assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
        let kinds: Vec<_> = r.manifests.iter().map(|m| (m.kind, m.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("Namespace", "app"),
                ("Secret", "airlock-app-db"),
                ("Secret", "airlock-app-s3"),
                ("Secret", "airlock-app-oidc"),
                ("ConfigMap", "airlock-app-ca")
            ]
        );
        assert_eq!(r.manifests[0].file_name, "airlock-app-0-namespace-app.yaml");
        assert_eq!(r.manifests[1].file_name, "airlock-app-1-secret-airlock-app-db.yaml");
        let mut files: Vec<&str> = r.manifests.iter().map(|m| m.file_name.as_str()).collect();
        files.sort();
        assert_eq!(files[0], r.manifests[0].file_name, "the namespace's file sorts first");
    }

    #[test]
    fn manifests_are_laid_out_0600_and_the_secret_ones_as_secret_files() {
        let r = render(&input()).unwrap();
        let mut layout = Layout::default();
        let dir = std::path::Path::new("/var/lib/rancher/k3s/server/manifests");
        r.add_to_layout(&mut layout, dir);
        assert_eq!(layout.files.len(), r.manifests.len());
        for (f, m) in layout.files.iter().zip(&r.manifests) {
            assert_eq!(f.path, dir.join(&m.file_name));
            assert_eq!((f.mode, f.secret), (0o600, m.secret), "{}", m.name);
            let crate::engine::layout::FileSource::Inline(bytes) = &f.source else { panic!("inline") };
            assert_eq!(bytes.as_slice(), m.expose_yaml().as_bytes());
        }
    }

    #[test]
    fn debug_output_of_a_rendering_shows_no_secret() {
        let r = render(&input()).unwrap();
        let dbg = format!("{r:?} {:?}", input());
        for s in [DB_PW, ACCESS, SECRET_KEY, CLIENT_SECRET] {
            assert!(!dbg.contains(s), "Debug shows `{s}`");
        }
        assert!(dbg.contains("BEGIN CERTIFICATE"), "non-secret manifests stay readable in Debug");
    }

    #[test]
    fn without_a_ca_or_backup_bucket_the_values_leave_them_empty() {
        let mut i = input();
        i.ca_pem = None;
        i.minio.backup_bucket = None;
        let r = render(&i).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&r.values_yaml).unwrap();
        assert_eq!(v["ca"]["configMap"], "");
        assert_eq!(v["backup"]["bucket"], "");
        assert!(!r.manifests.iter().any(|m| m.kind == "ConfigMap"));
    }

    #[test]
    fn rke2_ingress_nginx_is_let_in_from_the_node_networks() {
        let mut i = input();
        i.ingress_controller = IngressController::rke2_ingress_nginx(vec!["10.0.0.0/24".parse().unwrap()]);
        let v: serde_yaml::Value = serde_yaml::from_str(&render(&i).unwrap().values_yaml).unwrap();
        let ic = &v["networkPolicy"]["ingressController"];
        assert_eq!(ic["cidrs"][0], "10.0.0.0/24");
        assert_eq!(ic["podLabels"]["app.kubernetes.io/name"], "rke2-ingress-nginx");
    }

    /// The values and every manifest as text, Secret values replaced by `<redacted>`
    /// (the keys stay, so the golden shows each Secret's shape).
    fn golden_text(r: &Rendered) -> String {
        let mut out = format!(
            "# platform::app::render of the unit tests' input; secret values redacted.\n\
             # Rewrite with: AIRLOCK_UPDATE_GOLDEN=1 cargo test -p airlock-installer --lib platform::app\n\
             # ---- valuesContent\n{}",
            r.values_yaml
        );
        for m in &r.manifests {
            let text = if m.secret {
                let mut doc: serde_yaml::Value = serde_yaml::from_str(m.expose_yaml()).unwrap();
                for (_, v) in doc["stringData"].as_mapping_mut().unwrap().iter_mut() {
                    *v = serde_yaml::Value::String(crate::site::answers::REDACTED.into());
                }
                serde_yaml::to_string(&doc).unwrap()
            } else {
                m.expose_yaml().to_string()
            };
            out.push_str(&format!("# ---- {} (secret: {})\n{text}", m.file_name, m.secret));
        }
        out
    }

    #[test]
    fn rendering_matches_the_golden_file() {
        let text = golden_text(&render(&input()).unwrap());
        for s in [DB_PW, ACCESS, SECRET_KEY, CLIENT_SECRET] {
            assert!(!text.contains(s), "the golden text would hold `{s}`");
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/app/rendered.yaml");
        if std::env::var("AIRLOCK_UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; create it with AIRLOCK_UPDATE_GOLDEN=1", path.display()));
        if let Some((n, (want, got))) = expected.lines().zip(text.lines()).enumerate().find(|(_, (a, b))| a != b) {
            panic!(
                "{} line {}: golden `{want}`, rendered `{got}`; if intended, rewrite with AIRLOCK_UPDATE_GOLDEN=1 and review the diff",
                path.display(),
                n + 1
            );
        }
        assert_eq!(expected.lines().count(), text.lines().count(), "{}: length differs", path.display());
    }

    #[test]
    fn bad_inputs_name_the_field_and_carry_a_hint() {
        type Edit = fn(&mut AppInput);
        let cases: Vec<(&str, Edit)> = vec![
            ("ingress_domain", |i| i.ingress_domain = "Not A Domain".into()),
            ("release", |i| i.release = "a-release-name-that-is-far-too-long".into()),
            ("namespace", |i| i.namespace = "App".into()),
            ("tls_secret", |i| i.tls_secret = String::new()),
            ("ca_pem", |i| i.ca_pem = Some("not pem".into())),
            ("db_password", |i| i.db_password = Secret::new("")),
            ("keycloak.realm", |i| i.keycloak.realm = "a/b".into()),
            ("keycloak.client_id", |i| i.keycloak.client_id = "two words".into()),
            ("keycloak.client_secret", |i| i.keycloak.client_secret = Secret::new("")),
            ("keycloak.internal_url", |i| i.keycloak.internal_url = "keycloak:8080".into()),
            ("keycloak.pod_labels", |i| i.keycloak.pod_labels.clear()),
            ("minio.endpoint", |i| i.minio.endpoint = "https://minio:9000/bucket".into()),
            ("minio.endpoint", |i| i.minio.endpoint = "ftp://minio:9000".into()),
            ("minio.bucket", |i| i.minio.bucket = "Bad_Bucket".into()),
            ("minio.backup_bucket", |i| i.minio.backup_bucket = Some("servanda".into())),
            ("minio.access_key", |i| i.minio.access_key = Secret::new("user@x")),
            ("images.worker", |i| i.images.worker = String::new()),
            ("images.backup_client", |i| i.images.backup_client = "mc latest".into()),
            ("ingress_controller.pod_labels", |i| i.ingress_controller.pod_labels.clear()),
        ];
        for (field, edit) in cases {
            let mut i = input();
            edit(&mut i);
            let e = render(&i).unwrap_err();
            assert_eq!(e.subject, format!("app: {field}"), "{e}");
            assert!(e.hint.is_some(), "{field}: no hint");
        }
    }
}
