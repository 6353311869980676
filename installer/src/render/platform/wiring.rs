//! Wires the platform renders into `airlock install`: the credentials the platform
//! needs (made once, kept 0600 under [`crate::state::SECRETS_DIR`]), each known chart's values and
//! the objects they reference, and the report handed to the customer at the end.
//!
//! - [`Credentials::load_or_generate`] treats each credential the way install.rs
//!   treats the cluster token: read back from the target when present, generated with
//!   ring's `SystemRandom` otherwise, and written as the plan's first steps, so a
//!   re-run after a crash renders the same Secrets. One value per file, because
//!   `airlock support-bundle` redacts every file's whole content under that directory.
//! - [`wire_charts`] fills `valuesContent` for the charts it knows by name
//!   (`keycloakx`, `minio`, `airlock-app`), over the vendor's values from the signed
//!   manifest, and returns the manifests (Namespaces, ConfigMaps, Secrets, TLS Secrets
//!   from the PKI leaves) for `<data-dir>/server/manifests`. Other charts keep the
//!   vendor's values, or none.
//! - [`InstallReport`] is what main.rs prints after a successful install and what is
//!   written to [`crate::state::REPORT_PATH`]: URLs, the CA and its fingerprint, where the
//!   credentials are. It never holds a credential's value.

use crate::state;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::manifest::{Chart, DistributionKind};
use ring::rand::SecureRandom;
use serde::Serialize;
use serde_json::Value as Json;

use super::{app, keycloak, minio, monitoring, tls_secret};
use crate::engine::layout::Layout;
use crate::host::Host;
use crate::render::distribution::ChartInput;
use crate::site::answers::{Answers, Secret};
use crate::site::pki::SitePki;

/// Chart names (as the bundle carries them) this module knows, and their releases and
/// namespaces.
pub const KEYCLOAK_CHART: &str = keycloak::CHART;
pub const KEYCLOAK_RELEASE: &str = "keycloak";
pub const KEYCLOAK_NAMESPACE: &str = "keycloak";
pub const MINIO_CHART: &str = minio::CHART;
pub const MINIO_RELEASE: &str = "minio";
pub const MINIO_NAMESPACE: &str = "minio";
pub const APP_CHART: &str = app::CHART_NAME;
/// The monitoring component's charts: both releases in one namespace, node-exporter
/// (the prometheus chart's dependency) in one of its own (see [`monitoring`]).
pub const PROMETHEUS_CHART: &str = monitoring::PROMETHEUS_CHART;
pub const PROMETHEUS_RELEASE: &str = "prometheus";
pub const GRAFANA_CHART: &str = monitoring::GRAFANA_CHART;
pub const GRAFANA_RELEASE: &str = "grafana";
pub const MONITORING_NAMESPACE: &str = "monitoring";
pub const NODE_EXPORTER_NAMESPACE: &str = "monitoring-node";
const MONITORING_TLS_SECRET: &str = "monitoring-tls";
/// The storage provisioner for distributions that ship none (`assets/charts/
/// local-path-provisioner`): installed into `kube-system` like K3s' own copy, because
/// its helper pods mount host paths, which the CIS profile's restricted Pod Security
/// allows only in the exempt system namespaces.
pub const LOCAL_PATH_CHART: &str = "local-path-provisioner";

/// The realm and OIDC client the app logs in with.
pub const REALM: &str = "airlock";
pub const APP_CLIENT_ID: &str = "airlock-app";
/// Grafana's OIDC client in that realm (its roles come from the groups the answers'
/// `monitoring` section names).
pub const GRAFANA_CLIENT_ID: &str = "grafana";
/// Keycloak's bootstrap admin (first start only; the customer adds real admins).
pub const KEYCLOAK_ADMIN_USER: &str = "admin";
/// The app's bucket in MinIO.
pub const APP_BUCKET: &str = "airlock-app";
/// Each MinIO volume; the customer's blueprint sizes object storage in tens of GiB.
const MINIO_VOLUME_SIZE: &str = "50Gi";
/// TLS Secrets written from the PKI leaves (names the renders are given).
const KEYCLOAK_TLS_SECRET: &str = "keycloak-tls";
const APP_TLS_SECRET: &str = "app-tls";

/// One generated credential: its file under [`crate::state::SECRETS_DIR`] and how it is made.
struct Spec {
    file: &'static str,
    what: &'static str,
    /// Random bytes, hex-encoded: only `[0-9a-f]`, safe in every place these go (a
    /// realm file's text, `MC_HOST_*` URLs, a percent-encoded `DATABASE_URL`).
    bytes: usize,
    prefix: &'static str,
}

const SPECS: [Spec; 9] = [
    Spec { file: "keycloak-admin-password", what: "Keycloak admin password", bytes: 16, prefix: "" },
    Spec { file: "app-oidc-client-secret", what: "the app's OIDC client secret", bytes: 24, prefix: "" },
    Spec { file: "minio-root-user", what: "MinIO root user", bytes: 6, prefix: "root-" },
    Spec { file: "minio-root-password", what: "MinIO root password", bytes: 20, prefix: "" },
    Spec { file: "app-s3-access-key", what: "the app's S3 access key", bytes: 8, prefix: "app-" },
    Spec { file: "app-s3-secret-key", what: "the app's S3 secret key", bytes: 20, prefix: "" },
    Spec { file: "app-postgres-password", what: "the app's PostgreSQL password", bytes: 20, prefix: "" },
    Spec { file: "grafana-admin-password", what: "Grafana admin password", bytes: 16, prefix: "" },
    Spec { file: "grafana-oidc-client-secret", what: "Grafana's OIDC client secret", bytes: 24, prefix: "" },
];

/// The platform's generated credentials, in [`SPECS`] order. Never printed: the
/// values are [`Secret`]s.
#[derive(Clone, Debug)]
pub struct Credentials {
    values: Vec<Secret>,
}

/// Where one credential is kept: for the report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CredentialFile {
    pub what: String,
    pub path: PathBuf,
    pub mode: String,
}

impl Credentials {
    /// Reads each credential from the target, generating the ones that are missing or
    /// empty. Changes nothing: [`Credentials::layout`] writes them through the plan.
    pub fn load_or_generate(host: &dyn Host) -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let mut values = Vec::new();
        for s in &SPECS {
            let path = Self::path_of(s.file);
            let kept = host.read_file(&path)?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
            let value = match kept {
                Some(v) if !v.is_empty() => v,
                _ => {
                    let mut raw = vec![0u8; s.bytes];
                    rng.fill(&mut raw).map_err(|_| {
                        Error::new(ErrorKind::Io, s.what, "the system random generator failed")
                            .with_hint("check that the kernel's random source (getrandom) works, then re-run")
                    })?;
                    format!("{}{}", s.prefix, hex::encode(raw))
                }
            };
            values.push(Secret::new(value));
        }
        Ok(Self { values })
    }

    fn path_of(file: &str) -> PathBuf {
        Path::new(state::SECRETS_DIR).join(file)
    }

    fn get(&self, file: &str) -> &Secret {
        let i = SPECS.iter().position(|s| s.file == file).expect("a known credential");
        &self.values[i]
    }

    pub fn keycloak_admin_password(&self) -> &Secret {
        self.get("keycloak-admin-password")
    }
    pub fn app_client_secret(&self) -> &Secret {
        self.get("app-oidc-client-secret")
    }
    pub fn minio_root_user(&self) -> &Secret {
        self.get("minio-root-user")
    }
    pub fn minio_root_password(&self) -> &Secret {
        self.get("minio-root-password")
    }
    pub fn app_s3_access_key(&self) -> &Secret {
        self.get("app-s3-access-key")
    }
    pub fn app_s3_secret_key(&self) -> &Secret {
        self.get("app-s3-secret-key")
    }
    pub fn app_postgres_password(&self) -> &Secret {
        self.get("app-postgres-password")
    }
    pub fn grafana_admin_password(&self) -> &Secret {
        self.get("grafana-admin-password")
    }
    pub fn grafana_client_secret(&self) -> &Secret {
        self.get("grafana-oidc-client-secret")
    }

    /// The files, 0600 in a 0700 directory, for the start of the plan.
    /// (The 0700 directory is the cluster token's, which install.rs plans first.)
    pub fn layout(&self) -> Layout {
        let mut layout = Layout::default();
        for (s, v) in SPECS.iter().zip(&self.values) {
            layout.secret_file(Self::path_of(s.file), format!("{}\n", v.expose()).into_bytes());
        }
        layout
    }

    /// Where each credential is, for the report.
    pub fn files() -> Vec<CredentialFile> {
        SPECS
            .iter()
            .map(|s| CredentialFile { what: s.what.to_string(), path: Self::path_of(s.file), mode: "0600".into() })
            .collect()
    }
}

/// Everything [`wire_charts`] needs besides the charts.
pub struct Site<'a> {
    pub answers: &'a Answers,
    pub pki: &'a SitePki,
    pub credentials: &'a Credentials,
    pub distribution: DistributionKind,
    /// The profile's `keycloak` section: the release's needs of the app's OIDC client.
    pub keycloak: &'a crate::site::profile::KeycloakProfile,
    /// The profile's `monitoring` section.
    pub monitoring: &'a monitoring::MonitoringSizing,
    /// The alert rules and dashboards the bundle carries; `None` in a bundle without.
    pub monitoring_content: Option<&'a monitoring::Content>,
}

/// Fills the values of the charts this module knows and returns the objects they
/// reference as files of `manifests_dir`. Every chart starts from the vendor's values
/// in the signed manifest (`bundle_charts`, matched by path); generated values are
/// merged over them.
pub fn wire_charts(
    charts: &mut [ChartInput],
    bundle_charts: &[Chart],
    site: &Site<'_>,
    manifests_dir: &Path,
) -> Result<Layout> {
    let mut layout = Layout::default();
    // The charts this install lays down, by their names in the bundle: the app is
    // scraped only when it is installed, and lets Prometheus in only when that is.
    let installed: Vec<String> = charts
        .iter()
        .map(|c| bundle_charts.iter().find(|b| b.path == c.entry).map_or(c.name.clone(), |b| b.name.clone()))
        .collect();
    let installs = |name: &str| installed.iter().any(|n| n == name);
    for c in charts.iter_mut() {
        let source = bundle_charts.iter().find(|b| b.path == c.entry);
        let vendor = source.and_then(|b| b.values.clone()).unwrap_or(Json::Null);
        let chart_name = source.map(|b| b.name.as_str()).unwrap_or(c.name.as_str());
        if chart_name == LOCAL_PATH_CHART {
            // Complete already ([`local_path_values`]), the same on every server.
            continue;
        }
        let generated = match chart_name {
            KEYCLOAK_CHART => {
                c.name = KEYCLOAK_RELEASE.into();
                c.namespace = KEYCLOAK_NAMESPACE.into();
                let r = keycloak::render(&keycloak_input(site, installs(GRAFANA_CHART))?)?;
                layout.extend(r.layout(manifests_dir));
                let leaf = leaf(site.pki, "keycloak")?;
                let tls = tls_secret(KEYCLOAK_NAMESPACE, KEYCLOAK_TLS_SECRET, leaf.0, &leaf.1)?;
                layout.secret_file(manifests_dir.join(tls.file_name()), tls.yaml.clone());
                Some(r.values_yaml)
            }
            MINIO_CHART => {
                c.name = MINIO_RELEASE.into();
                c.namespace = MINIO_NAMESPACE.into();
                // Its values name the app's access key (the chart has no Secret form
                // for it): generated per site, so kept out of plans like a secret.
                c.values_secret = true;
                let r = minio::render(&minio_input(site)?)?;
                layout.extend(r.layout(manifests_dir));
                Some(r.values_yaml)
            }
            APP_CHART => {
                c.name = app::DEFAULT_RELEASE.into();
                c.namespace = app::DEFAULT_NAMESPACE.into();
                let r = app::render(&app_input(site, &vendor, &c.entry, installs(PROMETHEUS_CHART))?)?;
                r.add_to_layout(&mut layout, manifests_dir);
                let leaf = leaf(site.pki, "ingress")?;
                let tls = tls_secret(app::DEFAULT_NAMESPACE, APP_TLS_SECRET, leaf.0, &leaf.1)?;
                layout.secret_file(manifests_dir.join(tls.file_name()), tls.yaml.clone());
                Some(r.values_yaml)
            }
            PROMETHEUS_CHART | GRAFANA_CHART => {
                let input = monitoring_input(site, installs(APP_CHART), installs(KEYCLOAK_CHART))?;
                c.namespace = MONITORING_NAMESPACE.into();
                let r = if chart_name == PROMETHEUS_CHART {
                    c.name = PROMETHEUS_RELEASE.into();
                    monitoring::render_prometheus(&input)?
                } else {
                    c.name = GRAFANA_RELEASE.into();
                    monitoring::render_grafana(&input)?
                };
                // Both renders lay down the monitoring Namespace (either chart may come
                // alone); one file is enough.
                for f in r.layout(manifests_dir).files {
                    if !layout.files.iter().any(|g| g.path == f.path) {
                        layout.files.push(f);
                    }
                }
                let tls_path =
                    manifests_dir.join(format!("airlock-{MONITORING_NAMESPACE}-secret-{MONITORING_TLS_SECRET}.yaml"));
                if !layout.files.iter().any(|f| f.path == tls_path) {
                    let leaf = leaf(site.pki, "monitoring")?;
                    let tls = tls_secret(MONITORING_NAMESPACE, MONITORING_TLS_SECRET, leaf.0, &leaf.1)?;
                    layout.secret_file(manifests_dir.join(tls.file_name()), tls.yaml.clone());
                }
                Some(r.values_yaml)
            }
            _ => None,
        };
        c.values_yaml = merged_values(&c.entry, vendor, generated.as_deref())?;
    }
    Ok(layout)
}

/// The local-path provisioner's values: the vendor's, with the node path where volumes
/// live (`<data-dir>/storage`, as K3s keeps them) merged over them.
pub fn local_path_values(bundle_charts: &[Chart], entry: &str, node_path: &Path) -> Result<String> {
    let vendor = bundle_charts.iter().find(|b| b.path == entry).and_then(|b| b.values.clone()).unwrap_or(Json::Null);
    let generated =
        format!("nodePath: {}\n", serde_json::to_string(&node_path.display().to_string()).expect("a string"));
    merged_values(entry, vendor, Some(&generated))
}

/// The vendor's values with the generated ones merged over them, as YAML ("" when
/// there are none).
fn merged_values(entry: &str, vendor: Json, generated: Option<&str>) -> Result<String> {
    let mut base = vendor;
    if let Some(g) = generated {
        let g: Json = serde_yaml::from_str(g).map_err(|e| {
            Error::input(format!("values of chart {entry}"), format!("generated values do not parse: {e}"))
                .with_hint("this is a bug in airlock; report it with the command that failed")
        })?;
        merge(&mut base, g);
    }
    if base.is_null() {
        return Ok(String::new());
    }
    serde_yaml::to_string(&base).map_err(|e| {
        Error::input(format!("values of chart {entry}"), format!("cannot be written as YAML: {e}"))
            .with_hint("this is a bug in airlock; report it with the command that failed")
    })
}

/// Deep merge of mappings; anything else in `over` replaces what `base` has (as Helm
/// merges values files).
fn merge(base: &mut Json, over: Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Json::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A leaf's chain and key, falling back to the ingress certificate (customer-certs
/// mode has no other leaf; it names every ingress host).
fn leaf<'a>(pki: &'a SitePki, name: &str) -> Result<(&'a str, Secret)> {
    let l = pki.leaf(name).or_else(|| pki.leaf("ingress")).ok_or_else(|| {
        Error::input(format!("PKI certificate `{name}`"), "the site PKI has neither it nor the ingress certificate")
            .with_hint("check the `pki` answers (docs/pki.md) and `airlock pki status`")
    })?;
    Ok((l.fullchain_pem(), Secret::new(l.key_pem())))
}

fn keycloak_input(site: &Site<'_>, grafana: bool) -> Result<keycloak::KeycloakInput> {
    let a = site.answers;
    // keycloak.rs always federates a directory (its realm has no other user source).
    let l = a.ldap.as_ref().ok_or_else(|| {
        Error::input(
            format!("{}: ldap", a.origin),
            "the bundle installs Keycloak (chart keycloakx), but the answers have no `ldap` section",
        )
        .with_hint("add the `ldap` section with the directory Keycloak federates users from (docs/answers.md#ldap), and test it with `airlock ldap test --answers FILE`")
    })?;
    let schema = l.schema();
    let ca_pem = match &l.ca_file {
        None => None,
        // The same file the LDAP live check (ldap/probe.rs) trusted: a path on the
        // machine running the installer, not below the target root. Only read.
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| {
                Error::input(format!("{}: ldap.ca_file", a.origin), format!("cannot read `{}`: {e}", p.display()))
                    .with_hint("give the path of the directory's CA certificate (PEM) on this machine")
            })?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let vendor =
        if schema.vendor == "ad" { keycloak::LdapVendor::ActiveDirectory } else { keycloak::LdapVendor::Other };
    Ok(keycloak::KeycloakInput {
        release: KEYCLOAK_RELEASE.into(),
        namespace: KEYCLOAK_NAMESPACE.into(),
        domain: a.cluster.ingress_domain.clone(),
        ha: a.ha.as_ref().is_some_and(|h| h.servers.len() > 1),
        realm: REALM.into(),
        app_client_id: APP_CLIENT_ID.into(),
        app_redirect_paths: site.keycloak.redirect_paths.clone(),
        app_audiences: site.keycloak.audiences.clone(),
        ingress_tls_secret: KEYCLOAK_TLS_SECRET.into(),
        site_ca_pem: site.pki.ca_pem().to_string(),
        ldap: keycloak::KeycloakLdap {
            connection_url: l.url.to_string(),
            start_tls: l.starttls,
            bind_dn: l.bind_dn.clone(),
            users_dn: l.users_dn.clone(),
            vendor,
            username_attribute: schema.username_attribute.into(),
            rdn_attribute: schema.rdn_attribute.into(),
            uuid_attribute: schema.uuid_attribute.into(),
            user_object_classes: schema.user_object_classes.iter().map(|c| c.to_string()).collect(),
            users_filter: l.user_filter.clone(),
            // Without `ldap.groups_dn` the group mapper searches the users' subtree,
            // where it finds no groups (`ignore.missing.groups`): logins still work.
            groups_dn: l.groups_dn.clone().unwrap_or_else(|| l.users_dn.clone()),
            group_object_class: schema.group_object_class.into(),
            membership_attribute: schema.membership_attribute.into(),
            ca_pem,
        },
        database: keycloak_database(a)?,
        credentials: keycloak::KeycloakCredentials {
            admin_username: KEYCLOAK_ADMIN_USER.into(),
            admin_password: site.credentials.keycloak_admin_password().clone(),
            ldap_bind_password: l.bind_password.clone(),
            app_client_secret: site.credentials.app_client_secret().clone(),
        },
        grafana_client: grafana.then(|| keycloak::GrafanaClient {
            client_id: GRAFANA_CLIENT_ID.into(),
            host: monitoring::grafana_host(&a.cluster.ingress_domain),
            secret: site.credentials.grafana_client_secret().clone(),
        }),
    })
}

/// Keycloak's external database from the `keycloak_database` answers. Its CA file,
/// like `ldap.ca_file`, is a path on the machine running the installer; only read.
fn keycloak_database(a: &Answers) -> Result<Option<keycloak::KeycloakDatabase>> {
    let Some(db) = &a.keycloak_database else { return Ok(None) };
    let ca_pem = match &db.ca_file {
        None => None,
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Error::input(
                format!("{}: keycloak_database.ca_file", a.origin),
                format!("cannot read `{}`: {e}", p.display()),
            )
            .with_hint("give the path of the database server's CA certificate (PEM) on this machine")
        })?),
    };
    Ok(Some(keycloak::KeycloakDatabase {
        vendor: db.vendor.clone(),
        // IPv6 in brackets: Keycloak puts the host into a JDBC URL.
        host: db.host.for_url(),
        port: db.port,
        database: db.name.clone(),
        username: db.username.clone(),
        password: db.password.clone(),
        ca_pem,
    }))
}

/// The buckets the app keeps its objects in (the MinIO chart creates them; a backup
/// mirrors them).
pub fn app_buckets() -> Vec<String> {
    vec![APP_BUCKET.into()]
}

fn servers(answers: &Answers) -> u32 {
    answers.ha.as_ref().map_or(1, |h| h.servers.len().max(1) as u32)
}

fn minio_input(site: &Site<'_>) -> Result<minio::MinioInput> {
    let (cert, key) = leaf(site.pki, "minio")?;
    let c = site.credentials;
    Ok(minio::MinioInput {
        release: MINIO_RELEASE.into(),
        namespace: MINIO_NAMESPACE.into(),
        domain: site.answers.cluster.ingress_domain.clone(),
        servers: servers(site.answers),
        buckets: app_buckets(),
        volume_size: MINIO_VOLUME_SIZE.into(),
        storage_class: None,
        tls: minio::MinioTls { cert_pem: cert.into(), key_pem: key, ca_pem: site.pki.ca_pem().into() },
        credentials: minio::MinioCredentials {
            root_user: c.minio_root_user().expose().into(),
            root_password: c.minio_root_password().clone(),
        },
        users: vec![minio::MinioUser {
            access_key: c.app_s3_access_key().expose().into(),
            secret_key: c.app_s3_secret_key().clone(),
            policy: "readwrite".into(),
        }],
    })
}

/// The site certificates' expiry as a node-exporter textfile, readable by its
/// unprivileged user (it holds dates, no secret).
pub fn pki_textfile_layout(pki: &SitePki) -> Layout {
    let certs: Vec<(String, i64)> = pki.leaves().iter().map(|l| (l.name().to_string(), l.facts().not_after)).collect();
    let mut layout = Layout::default();
    layout.dir(monitoring::TEXTFILE_DIR, 0o755);
    layout.file(monitoring::PKI_TEXTFILE, 0o644, monitoring::pki_textfile(&certs));
    layout
}

fn monitoring_input(site: &Site<'_>, scrape_app: bool, keycloak: bool) -> Result<monitoring::MonitoringInput> {
    let d = &site.answers.cluster.ingress_domain;
    let content = site.monitoring_content.cloned().ok_or_else(|| {
        Error::input(
            "bundle: monitoring",
            "carries the prometheus or grafana chart but no monitoring content (alert rules and dashboards)",
        )
        .with_hint(
            "build the bundle with an airlock-bundler of this release, which carries the reference content by default",
        )
    })?;
    Ok(monitoring::MonitoringInput {
        prometheus_release: PROMETHEUS_RELEASE.into(),
        grafana_release: GRAFANA_RELEASE.into(),
        namespace: MONITORING_NAMESPACE.into(),
        node_namespace: NODE_EXPORTER_NAMESPACE.into(),
        domain: site.answers.cluster.ingress_domain.clone(),
        ingress_tls_secret: MONITORING_TLS_SECRET.into(),
        sizing: site.monitoring.clone(),
        storage_class: None,
        // Scrape the app only when this bundle installs it.
        app: scrape_app.then(|| monitoring::AppTarget {
            namespace: app::DEFAULT_NAMESPACE.into(),
            release: app::DEFAULT_RELEASE.into(),
        }),
        grafana_admin_password: site.credentials.grafana_admin_password().clone(),
        receivers: monitoring::AlertReceivers {
            webhook_url: site.answers.monitoring.alert_webhook_url.clone(),
            mail: site.answers.monitoring.alert_mail.clone(),
        },
        // Login through the realm when the bundle installs Keycloak too.
        oidc: keycloak.then(|| monitoring::GrafanaOidc {
            client_id: GRAFANA_CLIENT_ID.into(),
            client_secret: site.credentials.grafana_client_secret().clone(),
            public_realm_url: format!("https://{}/realms/{REALM}", keycloak::host(d)),
            internal_realm_url: format!(
                "http://{KEYCLOAK_RELEASE}-{}-http.{KEYCLOAK_NAMESPACE}.svc.cluster.local/realms/{REALM}",
                keycloak::CHART
            ),
            admin_group: site.answers.monitoring.grafana_admin_group.clone(),
            editor_group: site.answers.monitoring.grafana_editor_group.clone(),
        }),
        content,
    })
}

/// `images.<key>` from the vendor's values: the app chart has no defaults for them.
fn image(vendor: &Json, key: &str, entry: &str) -> Result<String> {
    vendor["images"][key].as_str().map(str::to_string).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        Error::input(
            format!("chart {entry}: values.images.{key}"),
            "is not set; the app chart has no default image references",
        )
        .with_hint(format!(
            "set `values: {{images: {{{key}: REF}}}}` on the chart in the bundle spec (docs/bundle-spec.md) to an image the bundle carries, and build the bundle again"
        ))
    })
}

fn app_input(site: &Site<'_>, vendor: &Json, entry: &str, scraped: bool) -> Result<app::AppInput> {
    let a = site.answers;
    let c = site.credentials;
    let kc_full = format!("{KEYCLOAK_RELEASE}-{}", keycloak::CHART);
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let ingress_controller = match site.distribution {
        DistributionKind::K3s => app::IngressController::k3s_traefik(),
        DistributionKind::Rke2 => app::IngressController::rke2_ingress_nginx(
            crate::site::pki::node_ips(a).into_iter().map(ipnet::IpNet::from).collect(),
        ),
    };
    Ok(app::AppInput {
        release: app::DEFAULT_RELEASE.into(),
        namespace: app::DEFAULT_NAMESPACE.into(),
        ingress_domain: a.cluster.ingress_domain.clone(),
        tls_secret: APP_TLS_SECRET.into(),
        ca_pem: Some(site.pki.ca_pem().into()),
        db_password: c.app_postgres_password().clone(),
        keycloak: app::KeycloakInput {
            realm: REALM.into(),
            client_id: APP_CLIENT_ID.into(),
            client_secret: c.app_client_secret().clone(),
            // The chart's `<fullname>-http` Service on port 80 (to the pods' 8080).
            internal_url: format!("http://{kc_full}-http.{KEYCLOAK_NAMESPACE}.svc.cluster.local"),
            namespace: KEYCLOAK_NAMESPACE.into(),
            pod_labels: labels(&[
                ("app.kubernetes.io/name", keycloak::CHART),
                ("app.kubernetes.io/instance", KEYCLOAK_RELEASE),
            ]),
            port: 8080,
        },
        minio: app::MinioInput {
            endpoint: format!("https://{}.{MINIO_NAMESPACE}.svc.cluster.local:9000", minio::fullname(MINIO_RELEASE)),
            bucket: APP_BUCKET.into(),
            backup_bucket: None,
            access_key: c.app_s3_access_key().clone(),
            secret_key: c.app_s3_secret_key().clone(),
            namespace: MINIO_NAMESPACE.into(),
            pod_labels: labels(&[("app", minio::CHART), ("release", MINIO_RELEASE)]),
            port: 9000,
        },
        images: app::AppImages {
            api: image(vendor, "api", entry)?,
            web: image(vendor, "web", entry)?,
            worker: image(vendor, "worker", entry)?,
            postgres: image(vendor, "postgres", entry)?,
            backup_client: image(vendor, "backupClient", entry)?,
        },
        ingress_controller,
        // The monitoring component's Prometheus server, when the bundle has it.
        metrics_scraper: scraped.then(|| app::Scraper {
            namespace: MONITORING_NAMESPACE.into(),
            pod_labels: monitoring::server_pod_labels(PROMETHEUS_RELEASE),
        }),
    })
}

/// The report after a successful install: what the customer needs to start, with no
/// credential's value (only where each one is kept).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InstallReport {
    /// Component → URL, for the components the bundle installs.
    pub urls: BTreeMap<String, String>,
    pub ca: Option<CaReport>,
    pub credentials: Vec<CredentialFile>,
    pub hand_to_customer: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CaReport {
    pub path: PathBuf,
    /// `AA:BB:...`, as `openssl x509 -fingerprint -sha256` prints it.
    pub sha256: String,
}

/// The endpoints a live install checks once the charts are in (issue: post-install
/// checks): Keycloak's OIDC discovery document (its issuer must be the public URL), the
/// S3 API's liveness endpoint, the app's front page and Grafana's health endpoint, each over HTTPS against the
/// site CA. Only for the components the bundle installs, and only on the node that
/// started the cluster (it holds the CA).
pub fn https_checks(answers: &Answers, bundle_charts: &[Chart]) -> Vec<crate::live::HttpsCheck> {
    use crate::live::HttpsCheck;
    let d = &answers.cluster.ingress_domain;
    let has = |n: &str| bundle_charts.iter().any(|c| c.name == n);
    let mut out = Vec::new();
    if !answers.starts_cluster() {
        return out;
    }
    if has(KEYCLOAK_CHART) {
        let issuer = format!("https://{}/realms/{REALM}", keycloak::host(d));
        out.push(HttpsCheck {
            name: "keycloak".into(),
            url: format!("{issuer}/.well-known/openid-configuration"),
            expect_json: Some(("issuer".into(), issuer)),
        });
    }
    if has(MINIO_CHART) {
        out.push(HttpsCheck {
            name: "minio".into(),
            url: format!("https://{}/minio/health/live", minio::api_host(d)),
            expect_json: None,
        });
    }
    if has(APP_CHART) {
        // The API's own health endpoint is not routed by the ingress (only /api is);
        // the front page through the ingress proves TLS, routing and the web pods.
        out.push(HttpsCheck {
            name: "app".into(),
            url: format!("https://{}/", keycloak::app_host(d)),
            expect_json: None,
        });
    }
    if has(GRAFANA_CHART) {
        // Grafana's health endpoint answers without a login once its database is up:
        // the dashboard served through the ingress, with the site's certificate.
        out.push(HttpsCheck {
            name: "grafana".into(),
            url: format!("https://{}/api/health", monitoring::grafana_host(d)),
            expect_json: None,
        });
    }
    out
}

impl InstallReport {
    /// The report for these charts (by the names the bundle gives them).
    pub fn new(answers: &Answers, bundle_charts: &[Chart], pki: Option<&SitePki>) -> Self {
        let d = &answers.cluster.ingress_domain;
        let has = |n: &str| bundle_charts.iter().any(|c| c.name == n);
        let mut urls = BTreeMap::new();
        if has(KEYCLOAK_CHART) {
            urls.insert("keycloak".into(), format!("https://{}", keycloak::host(d)));
        }
        if has(MINIO_CHART) {
            urls.insert("minio".into(), format!("https://{}", minio::console_host(d)));
        }
        if has(APP_CHART) {
            urls.insert("app".into(), format!("https://{}", keycloak::app_host(d)));
        }
        if has(GRAFANA_CHART) {
            urls.insert("grafana".into(), format!("https://{}", monitoring::grafana_host(d)));
        }
        if has(PROMETHEUS_CHART) {
            urls.insert("prometheus".into(), format!("https://{}", monitoring::prometheus_host(d)));
            urls.insert("alertmanager".into(), format!("https://{}", monitoring::alertmanager_host(d)));
        }
        let ca = pki.map(|p| CaReport { path: PathBuf::from(crate::state::CA_CERT), sha256: p.ca_fingerprint() });
        let credentials = if urls.is_empty() { Vec::new() } else { Credentials::files() };
        let mut hand = Vec::new();
        if let Some(ca) = &ca {
            hand.push(format!(
                "the CA certificate {} (SHA-256 {}): import it into browsers and trust stores after comparing the fingerprint",
                ca.path.display(),
                ca.sha256
            ));
        }
        if !urls.is_empty() {
            hand.push(format!(
                "DNS: {} (and s3.{d}) must resolve to the cluster's ingress address",
                urls.values().map(|u| u.trim_start_matches("https://")).collect::<Vec<_>>().join(", ")
            ));
        }
        for (name, url) in &urls {
            hand.push(format!("{name}: {url}"));
        }
        if has(KEYCLOAK_CHART) {
            hand.push(format!(
                "Keycloak admin `{KEYCLOAK_ADMIN_USER}`: password in {} (root only); users log in with their directory accounts",
                Credentials::path_of("keycloak-admin-password").display()
            ));
        }
        if has(MINIO_CHART) {
            hand.push(format!(
                "MinIO root user and password: {} and {} (root only)",
                Credentials::path_of("minio-root-user").display(),
                Credentials::path_of("minio-root-password").display()
            ));
        }
        if has(GRAFANA_CHART) {
            hand.push(format!(
                "Grafana break-glass admin `{}`: password in {} (root only)",
                monitoring::GRAFANA_ADMIN_USER,
                Credentials::path_of("grafana-admin-password").display()
            ));
        }
        InstallReport { urls, ca, credentials, hand_to_customer: hand }
    }

    /// The report as written to [`crate::state::REPORT_PATH`].
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("the report serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
// Tests lay out fixtures and hostile roots with std::fs and run real tools.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use crate::host::RootedHost;
    use serde_json::json;

    const SINGLE: &str = "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\n\
        cluster: {ingress_domain: platform.example.test}\n\
        ldap: {url: \"ldaps://ldap.platform.example.test\", bind_dn: \"cn=kc,dc=example,dc=test\", \
        bind_password: \"bind-pw-4e1f\", users_dn: \"ou=people,dc=example,dc=test\", preset: openldap}\n";

    fn root() -> (tempfile::TempDir, RootedHost) {
        let tmp = tempfile::tempdir().unwrap();
        let host = RootedHost::new(tmp.path().to_path_buf(), false).unwrap();
        (tmp, host)
    }

    /// A site in a temporary root: its answers, PKI and credentials, and the [`Site`]
    /// the wiring reads them through (K3s, the profile's defaults).
    struct Fixture {
        _tmp: tempfile::TempDir,
        answers: Answers,
        pki: crate::site::pki::SitePki,
        credentials: Credentials,
        keycloak: crate::site::profile::KeycloakProfile,
        monitoring: monitoring::MonitoringSizing,
        content: monitoring::Content,
    }

    impl Fixture {
        fn new(answers_yaml: &str) -> Self {
            let (tmp, host) = root();
            let answers = Answers::from_yaml(answers_yaml, "answers.yaml").unwrap();
            let pki = crate::site::pki::prepare(&answers, &host).unwrap();
            let credentials = Credentials::load_or_generate(&host).unwrap();
            Self {
                _tmp: tmp,
                answers,
                pki,
                credentials,
                keycloak: Default::default(),
                monitoring: Default::default(),
                content: monitoring::tests::reference_content(),
            }
        }

        fn site(&self) -> Site<'_> {
            Site {
                answers: &self.answers,
                pki: &self.pki,
                credentials: &self.credentials,
                distribution: DistributionKind::K3s,
                keycloak: &self.keycloak,
                monitoring: &self.monitoring,
                monitoring_content: Some(&self.content),
            }
        }
    }

    fn chart(name: &str, values: Option<Json>) -> (ChartInput, Chart) {
        let path = format!("charts/{name}-1.0.0.tgz");
        let input = ChartInput {
            name: name.into(),
            version: "1.0.0".into(),
            namespace: "platform".into(),
            entry: path.clone(),
            tgz: vec![0x1f, 0x8b],
            values_yaml: String::new(),
            values_secret: false,
        };
        let bundle = Chart {
            name: name.into(),
            version: "1.0.0".into(),
            app_version: None,
            component: "platform".into(),
            path,
            values,
        };
        (input, bundle)
    }

    #[test]
    fn credentials_are_generated_once_and_read_back_from_the_target() {
        let (tmp, host) = root();
        let first = Credentials::load_or_generate(&host).unwrap();
        let values: Vec<&str> = first.values.iter().map(Secret::expose).collect();
        assert_eq!(values.len(), 9);
        assert!(values.iter().all(|v| v.len() >= 12), "{:?}", first);
        let distinct: std::collections::BTreeSet<&&str> = values.iter().collect();
        assert_eq!(distinct.len(), 9, "every credential is its own random value");
        // Nothing shows through Debug.
        assert!(values.iter().all(|v| !format!("{first:?}").contains(v)));

        // Written as the plan would write them, a second run reads the same values.
        let dir = tmp.path().join("var/lib/airlock/secrets");
        std::fs::create_dir_all(&dir).unwrap();
        for f in &first.layout().files {
            assert!(f.secret && f.mode == 0o600, "{}", f.path.display());
            let crate::engine::layout::FileSource::Inline(bytes) = &f.source else { panic!("inline") };
            std::fs::write(tmp.path().join(f.path.strip_prefix("/").unwrap()), bytes).unwrap();
        }
        let again = Credentials::load_or_generate(&host).unwrap();
        assert_eq!(again.values.iter().map(Secret::expose).collect::<Vec<_>>(), values);
        // An emptied file is generated anew; the others are kept.
        std::fs::write(dir.join("minio-root-password"), "\n").unwrap();
        let third = Credentials::load_or_generate(&host).unwrap();
        assert_ne!(third.minio_root_password().expose(), first.minio_root_password().expose());
        assert_eq!(third.keycloak_admin_password().expose(), first.keycloak_admin_password().expose());
    }

    #[test]
    fn generated_values_merge_over_the_vendors_and_other_charts_keep_the_vendors() {
        let vendor = json!({"images": {"api": "r/api:1", "web": "r/web:1"}, "replicas": 3, "domain": "vendor"});
        let merged = merged_values("c", vendor.clone(), Some("domain: site\nimages:\n  api: r/api:2\n")).unwrap();
        let v: Json = serde_yaml::from_str(&merged).unwrap();
        assert_eq!(v, json!({"images": {"api": "r/api:2", "web": "r/web:1"}, "replicas": 3, "domain": "site"}));
        assert_eq!(merged_values("c", vendor.clone(), None).unwrap(), serde_yaml::to_string(&vendor).unwrap());
        assert_eq!(merged_values("c", Json::Null, None).unwrap(), "");
    }

    #[test]
    fn the_app_chart_without_vendor_images_is_refused_naming_the_value_and_the_spec() {
        let f = Fixture::new(SINGLE);
        let site = f.site();
        let (mut input, bundle) = chart(APP_CHART, Some(json!({"images": {"api": "r/api:1"}})));
        let err = wire_charts(std::slice::from_mut(&mut input), &[bundle], &site, Path::new("/m")).unwrap_err();
        let text = format!("{err}");
        assert!(text.contains("values.images.web") && text.contains("bundle spec"), "{text}");
    }

    #[test]
    fn known_charts_get_their_release_namespace_values_and_tls_secrets_and_others_stay_as_they_were() {
        let f = Fixture::new(SINGLE);
        let site = f.site();
        let (kc, kc_b) = chart(KEYCLOAK_CHART, None);
        let (mi, mi_b) = chart(MINIO_CHART, None);
        let (other, other_b) = chart("hello", Some(json!({"message": "hi"})));
        let mut inputs = vec![kc, mi, other];
        let layout = wire_charts(&mut inputs, &[kc_b, mi_b, other_b], &site, Path::new("/m")).unwrap();
        assert_eq!((inputs[0].name.as_str(), inputs[0].namespace.as_str()), ("keycloak", "keycloak"));
        assert_eq!((inputs[1].name.as_str(), inputs[1].namespace.as_str()), ("minio", "minio"));
        assert!(inputs[1].values_secret, "MinIO's values name the generated access key");
        assert_eq!(inputs[2].values_yaml, "message: hi\n");
        assert_eq!(inputs[2].namespace, "platform");
        let tls = layout
            .files
            .iter()
            .find(|f| f.path == Path::new("/m/airlock-keycloak-secret-keycloak-tls.yaml"))
            .expect("Keycloak's TLS Secret");
        assert!(tls.secret);
        for c in [&f.credentials.values[0], &f.credentials.values[3]] {
            assert!(!inputs.iter().any(|i| i.values_yaml.contains(c.expose())), "a credential in the values");
        }
    }

    #[test]
    fn with_keycloak_and_grafana_the_realm_gets_grafanas_client_and_grafana_logs_in_through_it() {
        let f = Fixture::new(SINGLE);
        let site = f.site();
        let realm_of = |layout: &Layout| -> String {
            let f = layout
                .files
                .iter()
                .find(|f| f.path == Path::new("/m/airlock-keycloak-configmap-keycloak-realm.yaml"))
                .expect("the realm ConfigMap");
            let crate::engine::layout::FileSource::Inline(bytes) = &f.source else { panic!("inline") };
            String::from_utf8(bytes.clone()).unwrap()
        };
        let (kc, kc_b) = chart(KEYCLOAK_CHART, None);
        let (gr, gr_b) = chart(GRAFANA_CHART, None);
        let mut inputs = vec![kc.clone(), gr.clone()];
        let layout = wire_charts(&mut inputs, &[kc_b.clone(), gr_b.clone()], &site, Path::new("/m")).unwrap();
        assert!(realm_of(&layout).contains("grafana.platform.example.test/login/generic_oauth"));
        let v: Json = serde_yaml::from_str(&inputs[1].values_yaml).unwrap();
        assert_eq!(v["grafana.ini"]["auth.generic_oauth"]["client_id"], GRAFANA_CLIENT_ID);
        // The answers' defaults name the role groups.
        let roles = v["grafana.ini"]["auth.generic_oauth"]["role_attribute_path"].as_str().unwrap();
        assert!(roles.contains("'grafana-admins') && 'Admin'") && roles.contains("'grafana-editors') && 'Editor'"));
        assert!(!inputs[1].values_yaml.contains(f.credentials.grafana_client_secret().expose()));
        // Without Grafana the realm has the app's client only; without Keycloak,
        // Grafana has its break-glass admin only.
        let mut inputs = vec![kc];
        let layout = wire_charts(&mut inputs, &[kc_b], &site, Path::new("/m")).unwrap();
        assert!(!realm_of(&layout).contains("generic_oauth"));
        let mut inputs = vec![gr];
        wire_charts(&mut inputs, &[gr_b], &site, Path::new("/m")).unwrap();
        let v: Json = serde_yaml::from_str(&inputs[0].values_yaml).unwrap();
        assert!(v["grafana.ini"].get("auth.generic_oauth").is_none(), "{v}");
    }

    #[test]
    fn grafanas_roles_come_from_the_groups_the_answers_name() {
        let yaml =
            format!("{SINGLE}monitoring: {{grafana_admin_group: ops-leads, grafana_editor_group: developers}}\n");
        let f = Fixture::new(&yaml);
        let site = f.site();
        let (kc, kc_b) = chart(KEYCLOAK_CHART, None);
        let (gr, gr_b) = chart(GRAFANA_CHART, None);
        let mut inputs = vec![kc, gr];
        wire_charts(&mut inputs, &[kc_b, gr_b], &site, Path::new("/m")).unwrap();
        let v: Json = serde_yaml::from_str(&inputs[1].values_yaml).unwrap();
        let roles = v["grafana.ini"]["auth.generic_oauth"]["role_attribute_path"].as_str().unwrap();
        assert_eq!(
            roles,
            "contains(groups[*], 'ops-leads') && 'Admin' || contains(groups[*], 'developers') && 'Editor' || 'Viewer'"
        );
        let bad = format!("{SINGLE}monitoring: {{grafana_admin_group: \"it's\"}}\n");
        let e = Answers::from_yaml(&bad, "answers.yaml").unwrap_err().to_string();
        assert!(e.contains("monitoring.grafana_admin_group"), "{e}");
    }

    #[test]
    fn a_monitoring_chart_in_a_bundle_without_monitoring_content_is_refused_with_the_way_out() {
        let f = Fixture::new(SINGLE);
        let site = Site { monitoring_content: None, ..f.site() };
        for name in [PROMETHEUS_CHART, GRAFANA_CHART] {
            let (input, bundle) = chart(name, None);
            let e = wire_charts(&mut [input], &[bundle], &site, Path::new("/m")).unwrap_err();
            assert!(e.to_string().contains("no monitoring content"), "{name}: {e}");
            assert!(e.hint.as_deref().unwrap_or_default().contains("airlock-bundler"), "{name}: {e}");
        }
    }

    #[test]
    fn alertmanager_sends_to_the_answers_webhook_and_mail_relay_and_a_relay_needs_both_addresses() {
        let yaml = format!(
            "{SINGLE}monitoring: {{alert_webhook_url: \"https://hooks.example.internal/am\", \
             alert_smtp_smarthost: \"mail.example.internal:25\", alert_email_from: am@example.org, alert_email_to: ops@example.org}}\n"
        );
        let f = Fixture::new(&yaml);
        let site = f.site();
        let (pr, pr_b) = chart(PROMETHEUS_CHART, None);
        let mut inputs = vec![pr];
        wire_charts(&mut inputs, &[pr_b], &site, Path::new("/m")).unwrap();
        let v: Json = serde_yaml::from_str(&inputs[0].values_yaml).unwrap();
        let r = &v["alertmanager"]["config"]["receivers"][0];
        assert_eq!(r["webhook_configs"][0]["url"], "https://hooks.example.internal/am");
        assert_eq!(r["email_configs"][0]["to"], "ops@example.org");
        // A relay without a recipient is refused, naming the key.
        let half = format!("{SINGLE}monitoring: {{alert_smtp_smarthost: \"mail.example.internal:25\", alert_email_from: am@example.org}}\n");
        let e = Answers::from_yaml(&half, "answers.yaml").unwrap_err().to_string();
        assert!(e.contains("monitoring.alert_email_to"), "{e}");
        let creds = format!("{SINGLE}monitoring: {{alert_webhook_url: \"https://user:pw@hooks.example.internal/\"}}\n");
        let e = Answers::from_yaml(&creds, "answers.yaml").unwrap_err().to_string();
        assert!(e.contains("monitoring.alert_webhook_url"), "{e}");
    }

    #[test]
    fn minios_certificate_names_what_its_render_needs_within_the_site_ca() {
        let ha = "profile: ha\nnode: {name: s1, ip: 192.0.2.11}\ncluster: {ingress_domain: platform.example.test}\n\
            ha: {servers: [{name: s1, ip: 192.0.2.11}, {name: s2, ip: 192.0.2.12}, {name: s3, ip: 192.0.2.13}]}\n";
        for (yaml, servers) in [(SINGLE, 1), (ha, 3)] {
            let answers = Answers::from_yaml(yaml, "answers.yaml").unwrap();
            let spec = crate::site::pki::leaf_specs(&answers).into_iter().find(|s| s.name == "minio").unwrap();
            // The bare `minio` and `minio.minio` are outside the CA's name constraints
            // (svc, svc.cluster.local, the domain); clients use the longer names.
            for name in minio::certificate_dns_names(MINIO_RELEASE, MINIO_NAMESPACE, "platform.example.test", servers)
                .into_iter()
                .filter(|n| n.contains('.') && n != "minio.minio")
            {
                assert!(spec.dns.contains(&name), "{servers} server(s): the minio leaf lacks {name}: {:?}", spec.dns);
            }
        }
    }

    #[test]
    fn the_report_lists_urls_ca_and_credential_paths_but_no_value() {
        let (_tmp, host) = root();
        let answers = Answers::from_yaml(SINGLE, "answers.yaml").unwrap();
        let pki = crate::site::pki::prepare(&answers, &host).unwrap();
        let credentials = Credentials::load_or_generate(&host).unwrap();
        let charts = [chart(KEYCLOAK_CHART, None).1, chart(APP_CHART, None).1];
        let r = InstallReport::new(&answers, &charts, Some(&pki));
        assert_eq!(r.urls["keycloak"], "https://keycloak.platform.example.test");
        assert_eq!(r.urls["app"], "https://app.platform.example.test");
        assert!(!r.urls.contains_key("minio"), "the bundle carries no MinIO");
        assert_eq!(r.ca.as_ref().unwrap().sha256, pki.ca_fingerprint());
        assert!(r.credentials.iter().all(|c| c.mode == "0600" && c.path.starts_with(state::SECRETS_DIR)));
        let json = String::from_utf8(r.to_json()).unwrap();
        for v in &credentials.values {
            assert!(!json.contains(v.expose()));
        }
        assert!(InstallReport::new(&answers, &[chart("hello", None).1], Some(&pki)).credentials.is_empty());
    }
}
