//! Keycloak from the codecentric `keycloakx` chart (7.1.11, Keycloak 26.5 image):
//! its values, the realm it imports at start, and the objects those refer to.
//!
//! - **Realm**: generated from the inputs and mounted from a ConfigMap at
//!   [`IMPORT_DIR`], imported by `start --import-realm` (skipped by Keycloak when the
//!   realm exists). It federates the customer's directory read-only (a `ldap`
//!   `UserStorageProvider` component with mappers for username, email, first/last
//!   name and groups) and holds the app's confidential OIDC client, with the redirect
//!   paths and audiences the profile's `keycloak` section names.
//! - **Realm sync**: because the import skips an existing realm, a Job in the Keycloak
//!   image ([`REALM_SYNC_SCRIPT`], `kcadm.sh`) converges the running realm on the
//!   shipped one for the parts Airlock owns, keeping users made at runtime; it is
//!   named by a digest of what it applies, so each new realm (an upgrade's, a
//!   rollback's) runs it once (docs/platform.md).
//! - **Secrets stay out of the realm file**: the LDAP bind credential and the client
//!   secret are written as `${ENV}` placeholders, which Keycloak resolves from its
//!   environment when it imports a realm file ("Using environment variables within
//!   the realm configuration files", Keycloak server guide "Importing and exporting
//!   realms"); the environment comes from a Secret through `envFrom`. Keycloak
//!   replaces them in the file's text before parsing it
//!   (`AbstractFileBasedImportProvider`), so those values must be JSON-safe, which
//!   [`render`] checks.
//! - **Admin**: `KC_BOOTSTRAP_ADMIN_USERNAME`/`_PASSWORD` (Keycloak 26's names; the
//!   chart's default image is 26.5.6) from a Secret.
//! - **Trust**: the site CA (and the directory's CA, when the customer gave one) in a
//!   ConfigMap mounted at [`TRUSTSTORE_DIR`] and named by `KC_TRUSTSTORE_PATHS`, so
//!   ldaps/StartTLS to the customer's directory verifies against their CA.
//! - **TLS** ends at the ingress (`keycloak.<domain>`, our certificate's Secret);
//!   Keycloak serves plain HTTP behind it and trusts `X-Forwarded-*`.

use std::collections::BTreeMap;

use airlock_format::error::{Error, Result};
use serde_json::{json, Value};

use super::{config_map, namespace_manifest, non_empty, non_empty_secret, pem_certificate, secret, to_yaml};
use super::{Manifest, Rendered};
use crate::site::answers::Secret;

/// The chart this module writes values for.
pub use crate::site::answers::keycloak_db::KEYCLOAK_CHART as CHART;
pub const CHART_VERSION: &str = "7.1.11";
/// Where the official image's `--import-realm` looks for `*.json` realm files.
pub const IMPORT_DIR: &str = "/opt/keycloak/data/import";
/// Where the truststore ConfigMap is mounted; `KC_TRUSTSTORE_PATHS` names it, and
/// Keycloak scans a directory recursively for PEM files.
pub const TRUSTSTORE_DIR: &str = "/opt/airlock/truststore";
/// Where the file database lives when the site has no external database.
const DEV_FILE_DIR: &str = "/opt/keycloak/data/h2";
/// The environment variables the realm file's placeholders name.
pub const ENV_LDAP_BIND_CREDENTIAL: &str = "AIRLOCK_LDAP_BIND_CREDENTIAL";
pub const ENV_APP_CLIENT_SECRET: &str = "AIRLOCK_APP_CLIENT_SECRET";
pub const ENV_GRAFANA_CLIENT_SECRET: &str = "AIRLOCK_GRAFANA_CLIENT_SECRET";
/// The image the chart runs (7.1.11's default, `image.repository:tag`); the realm sync
/// Job runs the same one, so a bundle that carries Keycloak carries the Job's image.
pub const IMAGE: &str = "quay.io/keycloak/keycloak:26.5.6";
/// The image's Keycloak home (`kc.sh`, `kcadm.sh`).
const KEYCLOAK_HOME: &str = "/opt/keycloak";
/// Where the realm sync Job mounts its ConfigMap (script, plan, realm parts).
pub const REALM_SYNC_DIR: &str = "/opt/airlock/realm-sync";
/// The Job's writable scratch directory, on an `emptyDir` at `/tmp` (the root file
/// system is read-only; the JVM writes below `/tmp` too): kcadm's token, filled files.
pub const REALM_SYNC_WORK: &str = "/tmp/realm-sync";
/// The script the Job runs (with the image's `kcadm.sh`).
pub const REALM_SYNC_SCRIPT: &str = include_str!("keycloak-realm-sync.sh");
/// LDAP settings a release may set or leave out. Keycloak keeps a component's config
/// keys an update does not name, so the sync sends an absent one as an empty list,
/// which removes a value an earlier release set.
const LDAP_OPTIONAL_KEYS: &[&str] = &["customUserSearchFilter"];
const USER_STORAGE: &str = "org.keycloak.storage.UserStorageProvider";
const LDAP_MAPPER: &str = "org.keycloak.storage.ldap.mappers.LDAPStorageMapper";
/// Finished sync Jobs go after this long. A rollback re-lays the previous release's
/// Job (same name): gone by then, it runs again.
const REALM_SYNC_TTL_SECONDS: u32 = 300;
/// Replicas in HA: Keycloak's distributed caches keep two owners per entry, so two
/// pods survive the loss of one node; the chart's anti-affinity puts them apart.
const HA_REPLICAS: u32 = 2;

/// Everything the Keycloak render needs. The caller fills it from the answers, the
/// PKI step, the LDAP answers and the credentials it generated and stored.
#[derive(Clone, Debug)]
pub struct KeycloakInput {
    /// The Helm release (the `HelmChart`'s name); the chart names its objects after it.
    pub release: String,
    /// The `HelmChart`'s `targetNamespace`; every extra object goes there too.
    pub namespace: String,
    /// `cluster.ingress_domain`: Keycloak at `keycloak.<domain>`, the app at `app.<domain>`.
    pub domain: String,
    /// The HA topology (more than one server).
    pub ha: bool,
    /// The realm the app logs in against.
    pub realm: String,
    /// The app's OIDC client id.
    pub app_client_id: String,
    /// Paths on the app's host the client may redirect to (the profile's
    /// `keycloak.redirect_paths`).
    pub app_redirect_paths: Vec<String>,
    /// Extra audiences of the app's access tokens (the profile's `keycloak.audiences`).
    pub app_audiences: Vec<String>,
    /// The `kubernetes.io/tls` Secret (in `namespace`) with our certificate for
    /// `keycloak.<domain>`, which the ingress serves.
    pub ingress_tls_secret: String,
    /// The site CA (PEM) that signed our certificates; Keycloak trusts it.
    pub site_ca_pem: String,
    pub ldap: KeycloakLdap,
    /// An external database; `None` keeps Keycloak's file database on a volume, which
    /// only a single node can use.
    pub database: Option<KeycloakDatabase>,
    pub credentials: KeycloakCredentials,
    /// Grafana's confidential OIDC client, when the monitoring component is installed.
    pub grafana_client: Option<GrafanaClient>,
}

/// Grafana's OIDC client: authorization-code flow back to `https://<host>/login/generic_oauth`.
#[derive(Clone, Debug)]
pub struct GrafanaClient {
    pub client_id: String,
    /// `grafana.<domain>`.
    pub host: String,
    pub secret: Secret,
}

/// The customer's directory as Keycloak's LDAP federation needs it. The LDAP answers
/// (`installer/src/site/ldap/`) map onto this one to one.
#[derive(Clone, Debug)]
pub struct KeycloakLdap {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub connection_url: String,
    /// StartTLS on an `ldap://` connection.
    pub start_tls: bool,
    pub bind_dn: String,
    pub users_dn: String,
    pub vendor: LdapVendor,
    /// `uid` (OpenLDAP) or `sAMAccountName` (AD).
    pub username_attribute: String,
    /// The attribute of a user's RDN: `uid` or `cn`.
    pub rdn_attribute: String,
    /// `entryUUID` (OpenLDAP) or `objectGUID` (AD).
    pub uuid_attribute: String,
    /// e.g. `inetOrgPerson, organizationalPerson` or `person, organizationalPerson, user`.
    pub user_object_classes: Vec<String>,
    /// An extra LDAP filter for users, e.g. `(memberOf=cn=app-users,ou=groups,dc=example,dc=com)`.
    pub users_filter: Option<String>,
    pub groups_dn: String,
    /// `groupOfNames` (OpenLDAP) or `group` (AD).
    pub group_object_class: String,
    /// `member` (DNs) or `memberUid` (user names).
    pub membership_attribute: String,
    /// The directory's CA (PEM) when the customer gave one; it joins Keycloak's truststore.
    pub ca_pem: Option<String>,
}

/// Keycloak's `vendor` values for an LDAP provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LdapVendor {
    /// OpenLDAP and other RFC 4519 directories.
    Other,
    ActiveDirectory,
    /// Red Hat / 389 Directory Server.
    RedHatDirectory,
}

impl LdapVendor {
    pub fn keycloak_name(self) -> &'static str {
        match self {
            LdapVendor::Other => "other",
            LdapVendor::ActiveDirectory => "ad",
            LdapVendor::RedHatDirectory => "rhds",
        }
    }
}

/// An external database (PostgreSQL in the reference stack).
#[derive(Clone, Debug)]
pub struct KeycloakDatabase {
    /// Keycloak's `KC_DB`: `postgres`, `mariadb`, `mysql`, `mssql`, `oracle`.
    pub vendor: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Secret,
    /// PostgreSQL only: the CA (PEM) that signed the database server's certificate.
    /// Given, it joins the truststore ConfigMap and the JDBC URL asks for
    /// `sslmode=verify-full` against it (pgjdbc reads a PEM `sslrootcert`).
    pub ca_pem: Option<String>,
}

/// The truststore file holding the database's CA, and the JDBC URL properties that
/// make pgjdbc verify the server against it. Keycloak appends `KC_DB_URL_PROPERTIES`
/// to its default URL as is, so the value carries the leading `?`.
const DB_CA_FILE: &str = "db-ca.pem";

fn db_url_properties() -> String {
    format!("?sslmode=verify-full&sslrootcert={TRUSTSTORE_DIR}/{DB_CA_FILE}")
}

/// Credentials the caller generated and stored before rendering.
#[derive(Clone, Debug)]
pub struct KeycloakCredentials {
    pub admin_username: String,
    pub admin_password: Secret,
    /// The password of `ldap.bind_dn` (given by the customer, not generated).
    pub ldap_bind_password: Secret,
    /// The app's client secret; the app gets the same value.
    pub app_client_secret: Secret,
}

/// The names of the objects a render adds, derived from the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub realm_config_map: String,
    pub truststore_config_map: String,
    /// Keys `username`, `password`.
    pub admin_secret: String,
    /// The environment the realm placeholders resolve from.
    pub realm_env_secret: String,
    /// Key `password`; only with an external database.
    pub database_secret: String,
    /// The chart's HTTP Service (`<fullname>-http`, port 80), which the sync Job calls.
    pub http_service: String,
}

impl Names {
    pub fn new(release: &str) -> Self {
        Self {
            realm_config_map: format!("{release}-realm"),
            truststore_config_map: format!("{release}-truststore"),
            admin_secret: format!("{release}-admin"),
            realm_env_secret: format!("{release}-realm-env"),
            database_secret: format!("{release}-database"),
            // The chart's fullname: the release when it contains the chart's name.
            http_service: if release.contains("keycloakx") {
                format!("{release}-http")
            } else {
                format!("{release}-keycloakx-http")
            },
        }
    }
}

/// The host Keycloak is served at.
pub fn host(domain: &str) -> String {
    format!("keycloak.{domain}")
}

/// The host of the app whose client the realm holds.
pub fn app_host(domain: &str) -> String {
    format!("app.{domain}")
}

/// The issuer URL the app configures (`https://keycloak.<domain>/realms/<realm>`).
pub fn issuer_url(domain: &str, realm: &str) -> String {
    format!("https://{}/realms/{realm}", host(domain))
}

/// Renders the chart values, the realm and the objects they reference.
pub fn render(input: &KeycloakInput) -> Result<Rendered> {
    validate(input)?;
    let names = Names::new(&input.release);
    let realm = realm_json(input)?;

    let mut manifests: Vec<Manifest> = vec![namespace_manifest(&input.namespace)?];
    manifests.push(config_map(
        &input.namespace,
        &names.realm_config_map,
        BTreeMap::from([(format!("{}-realm.json", input.realm), realm.clone())]),
    )?);
    let mut trust = BTreeMap::from([("site-ca.pem".to_string(), input.site_ca_pem.clone())]);
    if let Some(ca) = &input.ldap.ca_pem {
        trust.insert("ldap-ca.pem".to_string(), ca.clone());
    }
    if let Some(ca) = input.database.as_ref().and_then(|db| db.ca_pem.as_ref()) {
        trust.insert(DB_CA_FILE.to_string(), ca.clone());
    }
    manifests.push(config_map(&input.namespace, &names.truststore_config_map, trust)?);
    let c = &input.credentials;
    manifests.push(secret(
        &input.namespace,
        &names.admin_secret,
        "Opaque",
        &[("username", &c.admin_username), ("password", c.admin_password.expose())],
    )?);
    manifests.push(secret(
        &input.namespace,
        &names.realm_env_secret,
        "Opaque",
        &[
            (ENV_LDAP_BIND_CREDENTIAL, c.ldap_bind_password.expose()),
            (ENV_APP_CLIENT_SECRET, c.app_client_secret.expose()),
        ]
        .into_iter()
        .chain(input.grafana_client.as_ref().map(|g| (ENV_GRAFANA_CLIENT_SECRET, g.secret.expose())))
        .collect::<Vec<_>>(),
    )?);
    if let Some(db) = &input.database {
        manifests.push(secret(
            &input.namespace,
            &names.database_secret,
            "Opaque",
            &[("password", db.password.expose())],
        )?);
    }

    manifests.extend(realm_sync(input, &names, &realm)?);

    let values = values(input, &names)?;
    Ok(Rendered { values_yaml: to_yaml("Keycloak values", &values)?, manifests })
}

fn validate(input: &KeycloakInput) -> Result<()> {
    non_empty("keycloak: release", &input.release)?;
    non_empty("keycloak: namespace", &input.namespace)?;
    non_empty("keycloak: ingress domain", &input.domain)?;
    non_empty("keycloak: realm", &input.realm)?;
    non_empty("keycloak: app client id", &input.app_client_id)?;
    if input.app_redirect_paths.is_empty() {
        return Err(Error::input("keycloak: app redirect paths", "are empty")
            .with_hint("list at least one path in the profile's `keycloak.redirect_paths`, e.g. `/*`"));
    }
    non_empty("keycloak: ingress TLS secret", &input.ingress_tls_secret)?;
    pem_certificate("keycloak: site CA", &input.site_ca_pem)?;
    let l = &input.ldap;
    let url = l.connection_url.as_str();
    if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) || url.len() <= "ldaps://".len() {
        return Err(Error::input(
            format!("LDAP connection URL `{url}`"),
            "does not start with `ldap://` or `ldaps://` followed by a host",
        )
        .with_hint("write it as `ldaps://dc1.example.com:636` or `ldap://ldap.example.com:389`"));
    }
    if l.start_tls && url.starts_with("ldaps://") {
        return Err(Error::input(
            format!("LDAP connection URL `{url}`"),
            "asks for StartTLS on an `ldaps://` connection, which is TLS already",
        )
        .with_hint("use `ldap://` with StartTLS, or `ldaps://` without it"));
    }
    for (what, v) in [
        ("bind DN", &l.bind_dn),
        ("users DN", &l.users_dn),
        ("username attribute", &l.username_attribute),
        ("RDN attribute", &l.rdn_attribute),
        ("UUID attribute", &l.uuid_attribute),
        ("groups DN", &l.groups_dn),
        ("group object class", &l.group_object_class),
        ("membership attribute", &l.membership_attribute),
    ] {
        non_empty(&format!("LDAP {what}"), v)?;
    }
    if l.user_object_classes.iter().all(|c| c.trim().is_empty()) {
        return Err(Error::input("LDAP user object classes", "are empty")
            .with_hint("give the object classes of user entries, e.g. `inetOrgPerson, organizationalPerson`"));
    }
    if let Some(ca) = &l.ca_pem {
        pem_certificate("LDAP CA certificate", ca)?;
    }
    // Keycloak substitutes `${...}` in an imported realm file from its environment,
    // so a value carrying one would be replaced (or leak an environment variable
    // into the directory settings). Nothing in an LDAP setting needs it.
    let mut texts: Vec<(&str, &str)> = vec![
        ("realm", &input.realm),
        ("app client id", &input.app_client_id),
        ("ingress domain", &input.domain),
        ("LDAP connection URL", &l.connection_url),
        ("LDAP bind DN", &l.bind_dn),
        ("LDAP users DN", &l.users_dn),
        ("LDAP username attribute", &l.username_attribute),
        ("LDAP RDN attribute", &l.rdn_attribute),
        ("LDAP UUID attribute", &l.uuid_attribute),
        ("LDAP groups DN", &l.groups_dn),
        ("LDAP group object class", &l.group_object_class),
        ("LDAP membership attribute", &l.membership_attribute),
    ];
    if let Some(f) = &l.users_filter {
        texts.push(("LDAP users filter", f));
    }
    for p in &input.app_redirect_paths {
        texts.push(("app redirect path", p));
    }
    for a in &input.app_audiences {
        texts.push(("app token audience", a));
    }
    for c in &l.user_object_classes {
        texts.push(("LDAP user object class", c));
    }
    for (what, v) in texts {
        if v.contains("${") {
            return Err(Error::input(
                format!("{what} `{v}`"),
                "contains `${`, which Keycloak replaces from its environment when it imports the realm",
            )
            .with_hint("remove the `${` sequence; no directory setting needs it"));
        }
    }
    // Chart values are rendered through Helm's `tpl`; `{{` would be executed.
    for (what, v) in [("ingress domain", &input.domain), ("ingress TLS secret", &input.ingress_tls_secret)] {
        if v.contains("{{") {
            return Err(Error::input(
                format!("keycloak: {what} `{v}`"),
                "contains `{{`, which Helm would run as a template",
            )
            .with_hint("use a plain DNS name"));
        }
    }
    let c = &input.credentials;
    non_empty("keycloak: admin username", &c.admin_username)?;
    non_empty_secret("keycloak: admin password", &c.admin_password)?;
    non_empty_secret("LDAP bind password", &c.ldap_bind_password)?;
    non_empty_secret("keycloak: app client secret", &c.app_client_secret)?;
    // Keycloak puts these into the realm file's *text* before it parses the JSON
    // (AbstractFileBasedImportProvider), unescaped: a quote, a backslash or a control
    // character would break the file or change its meaning. Never echo the value.
    let grafana_secret = input.grafana_client.as_ref().map(|g| ("keycloak: Grafana client secret", &g.secret));
    if let Some((what, s)) = grafana_secret {
        non_empty_secret(what, s)?;
    }
    for (what, s) in
        [("LDAP bind password", &c.ldap_bind_password), ("keycloak: app client secret", &c.app_client_secret)]
            .into_iter()
            .chain(grafana_secret)
    {
        if s.expose().chars().any(|ch| ch == '"' || ch == '\\' || ch.is_control()) {
            return Err(Error::input(
                what,
                "contains a `\"`, a `\\` or a control character, which Keycloak would insert unescaped into the realm file's JSON",
            )
            .with_hint("use a password without those characters for the bind account (or set it in the Keycloak admin console after the install)"));
        }
    }
    match &input.database {
        None if input.ha => Err(Error::input(
            "keycloak: database",
            "is not set, but the platform runs in HA: Keycloak's file database lives on one pod's volume and cannot be shared",
        )
        .with_hint("give Keycloak an external database (PostgreSQL) for an HA install")),
        Some(db) => {
            non_empty("keycloak: database vendor", &db.vendor)?;
            non_empty("keycloak: database host", &db.host)?;
            non_empty("keycloak: database name", &db.database)?;
            non_empty("keycloak: database username", &db.username)?;
            if let Some(ca) = &db.ca_pem {
                if db.vendor != "postgres" {
                    return Err(Error::input(
                        "keycloak: database CA",
                        format!("is given for the vendor {}, but only postgres connections verify it", db.vendor),
                    )
                    .with_hint("remove keycloak_database.ca_file, or use PostgreSQL"));
                }
                pem_certificate("keycloak: database CA (keycloak_database.ca_file)", ca)?;
            }
            non_empty_secret("keycloak: database password", &db.password)
        }
        None => Ok(()),
    }
}

/// A Keycloak component config entry: every value is a list of strings.
fn cfg(pairs: &[(&str, &str)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), json!([v]))).collect())
}

/// The realm imported at start, as JSON. Holds `${ENV}` placeholders where secrets go,
/// never a secret value.
/// The groups claim every client's tokens carry: the app and Grafana authorise by the
/// directory's groups.
fn groups_mapper() -> Value {
    json!({
        "name": "groups",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-group-membership-mapper",
        "consentRequired": false,
        "config": {
            "claim.name": "groups",
            "full.path": "false",
            "id.token.claim": "true",
            "access.token.claim": "true",
            "userinfo.token.claim": "true",
        },
    })
}

fn grafana_client_json(g: &GrafanaClient) -> Value {
    let host = &g.host;
    json!({
        "clientId": g.client_id,
        "name": "Grafana",
        "enabled": true,
        "protocol": "openid-connect",
        "publicClient": false,
        "clientAuthenticatorType": "client-secret",
        "secret": format!("${{{ENV_GRAFANA_CLIENT_SECRET}}}"),
        "standardFlowEnabled": true,
        "directAccessGrantsEnabled": false,
        "implicitFlowEnabled": false,
        "serviceAccountsEnabled": false,
        "rootUrl": format!("https://{host}"),
        "baseUrl": "/",
        // Exactly Grafana's callback: no wildcard, so no open redirect.
        "redirectUris": [format!("https://{host}/login/generic_oauth")],
        "webOrigins": [format!("https://{host}")],
        "attributes": { "post.logout.redirect.uris": format!("https://{host}/login"), "pkce.code.challenge.method": "S256" },
        "protocolMappers": [groups_mapper()],
    })
}

pub fn realm_json(input: &KeycloakInput) -> Result<String> {
    validate(input)?;
    let l = &input.ldap;
    let app = app_host(&input.domain);
    let object_classes =
        l.user_object_classes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(", ");
    let bind_placeholder = format!("${{{ENV_LDAP_BIND_CREDENTIAL}}}");
    let client_placeholder = format!("${{{ENV_APP_CLIENT_SECRET}}}");

    let mut ldap_config = vec![
        ("enabled", "true"),
        ("vendor", l.vendor.keycloak_name()),
        ("connectionUrl", l.connection_url.as_str()),
        ("startTls", if l.start_tls { "true" } else { "false" }),
        // The truststore SPI is the one KC_TRUSTSTORE_PATHS fills: the customer's CA.
        ("useTruststoreSpi", "always"),
        ("connectionPooling", "true"),
        ("authType", "simple"),
        ("bindDn", l.bind_dn.as_str()),
        ("bindCredential", bind_placeholder.as_str()),
        ("usersDn", l.users_dn.as_str()),
        ("usernameLDAPAttribute", l.username_attribute.as_str()),
        ("rdnLDAPAttribute", l.rdn_attribute.as_str()),
        ("uuidLDAPAttribute", l.uuid_attribute.as_str()),
        ("userObjectClasses", object_classes.as_str()),
        // 2 = subtree: users often sit in OUs below the users DN.
        ("searchScope", "2"),
        // The customer's directory is the source of truth; Keycloak never writes to it.
        ("editMode", "READ_ONLY"),
        ("importEnabled", "true"),
        ("syncRegistrations", "false"),
        ("pagination", "true"),
        ("trustEmail", "false"),
        ("cachePolicy", "DEFAULT"),
        // Users are looked up on login; no periodic full sync against a large AD.
        ("fullSyncPeriod", "-1"),
        ("changedSyncPeriod", "-1"),
        ("allowKerberosAuthentication", "false"),
        ("validatePasswordPolicy", "false"),
        ("usePasswordModifyExtendedOp", "false"),
    ];
    if let Some(filter) = &l.users_filter {
        ldap_config.push(("customUserSearchFilter", filter.as_str()));
    }

    let attribute = |name: &str, ldap_attr: &str, model_attr: &str, mandatory: bool| {
        json!({
            "name": name,
            "providerId": "user-attribute-ldap-mapper",
            "subComponents": {},
            "config": cfg(&[
                ("ldap.attribute", ldap_attr),
                ("user.model.attribute", model_attr),
                ("read.only", "true"),
                ("always.read.value.from.ldap", if model_attr == "username" { "false" } else { "true" }),
                ("is.mandatory.in.ldap", if mandatory { "true" } else { "false" }),
            ]),
        })
    };
    // `memberUid` lists user names, `member`/`uniqueMember` list DNs.
    let membership_type = if l.membership_attribute.eq_ignore_ascii_case("memberUid") { "UID" } else { "DN" };
    let groups = json!({
        "name": "groups",
        "providerId": "group-ldap-mapper",
        "subComponents": {},
        "config": cfg(&[
            ("groups.dn", l.groups_dn.as_str()),
            ("group.name.ldap.attribute", "cn"),
            ("group.object.classes", l.group_object_class.as_str()),
            ("membership.ldap.attribute", l.membership_attribute.as_str()),
            ("membership.attribute.type", membership_type),
            ("membership.user.ldap.attribute", l.username_attribute.as_str()),
            ("mode", "READ_ONLY"),
            ("user.roles.retrieve.strategy", "LOAD_GROUPS_BY_MEMBER_ATTRIBUTE"),
            ("memberof.ldap.attribute", "memberOf"),
            ("preserve.group.inheritance", "false"),
            ("ignore.missing.groups", "true"),
            ("drop.non.existing.groups.during.sync", "false"),
        ]),
    });
    let ldap = json!({
        "name": "ldap",
        "providerId": "ldap",
        "subComponents": {
            "org.keycloak.storage.ldap.mappers.LDAPStorageMapper": [
                attribute("username", &l.username_attribute, "username", true),
                attribute("email", "mail", "email", false),
                attribute("first name", "givenName", "firstName", false),
                attribute("last name", "sn", "lastName", true),
                groups,
            ],
        },
        "config": cfg(&ldap_config),
    });
    let mut client = json!({
        "clientId": input.app_client_id,
        "name": input.app_client_id,
        "enabled": true,
        "protocol": "openid-connect",
        "publicClient": false,
        "clientAuthenticatorType": "client-secret",
        "secret": client_placeholder,
        "standardFlowEnabled": true,
        "directAccessGrantsEnabled": false,
        "implicitFlowEnabled": false,
        "serviceAccountsEnabled": false,
        "rootUrl": format!("https://{app}"),
        "baseUrl": "/",
        "redirectUris": input.app_redirect_paths.iter().map(|p| format!("https://{app}{p}")).collect::<Vec<_>>(),
        "webOrigins": [format!("https://{app}")],
        "attributes": { "post.logout.redirect.uris": format!("https://{app}/*") },
        // The app authorises by the directory's groups: put them in the tokens.
        "protocolMappers": [groups_mapper()],
    });
    // Each audience the release names, as its own mapper: an API that checks `aud`.
    for a in &input.app_audiences {
        client["protocolMappers"].as_array_mut().expect("a list").push(json!({
            "name": format!("audience {a}"),
            "protocol": "openid-connect",
            "protocolMapper": "oidc-audience-mapper",
            "consentRequired": false,
            "config": {
                "included.custom.audience": a,
                "access.token.claim": "true",
                "id.token.claim": "false",
                "introspection.token.claim": "true",
            },
        }));
    }
    let realm = json!({
        "realm": input.realm,
        "enabled": true,
        "sslRequired": "external",
        "registrationAllowed": false,
        "loginWithEmailAllowed": true,
        "duplicateEmailsAllowed": false,
        "resetPasswordAllowed": false,
        "editUsernameAllowed": false,
        "bruteForceProtected": true,
        "clients": std::iter::once(client)
            .chain(input.grafana_client.as_ref().map(grafana_client_json))
            .collect::<Vec<_>>(),
        "components": { "org.keycloak.storage.UserStorageProvider": [ldap] },
    });
    serde_json::to_string_pretty(&realm).map_err(|e| {
        Error::input("Keycloak realm", format!("cannot be written as JSON: {e}"))
            .with_hint("this is a bug in airlock; report it with the command that failed")
    })
}

/// The names of the `${NAME}` placeholders in the realm's text, each once, sorted.
fn realm_placeholders(text: &str) -> std::collections::BTreeSet<&str> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let end =
            rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with('}') {
            names.insert(&rest[..end]);
        }
    }
    names
}

/// The realm cut into what the sync converges, as the sync ConfigMap's files:
/// `realm.json` (the realm's own settings), one file per client and per protocol
/// mapper, one for the LDAP component and one per LDAP mapper, the script, and
/// `plan.tsv` naming each part (kind, name, file) in the order the script applies them.
pub fn realm_sync_files(realm_json: &str) -> Result<BTreeMap<String, String>> {
    let bug = |e: String| {
        Error::input("Keycloak realm sync", e)
            .with_hint("this is a bug in airlock; report it with the command that failed")
    };
    let realm: Value = serde_json::from_str(realm_json).map_err(|e| bug(format!("the realm is not JSON: {e}")))?;
    let name = realm["realm"].as_str().ok_or_else(|| bug("the realm has no name".into()))?;
    let text = |v: &Value| serde_json::to_string_pretty(v).map_err(|e| bug(e.to_string()));
    let mut files = BTreeMap::new();
    let mut plan = String::from("# kind\tname\tfile (docs/platform.md, realm sync)\n");
    // Every `${NAME}` the realm holds, found in its text rather than listed by hand: a
    // placeholder the script was not told of would reach Keycloak as the literal text
    // (a client secret of `${...}`), so a new secret in the realm needs no second edit.
    for env in realm_placeholders(realm_json) {
        plan.push_str(&format!("placeholder\t{env}\t-\n"));
    }
    let mut settings = realm.clone();
    if let Some(o) = settings.as_object_mut() {
        o.remove("clients");
        o.remove("components");
    }
    files.insert("realm.json".to_string(), text(&settings)?);
    plan.push_str(&format!("realm\t{name}\trealm.json\n"));
    for (i, client) in realm["clients"].as_array().into_iter().flatten().enumerate() {
        let id = client["clientId"].as_str().ok_or_else(|| bug("a client has no clientId".into()))?;
        let mut body = client.clone();
        let mappers = body.as_object_mut().and_then(|o| o.remove("protocolMappers"));
        let file = format!("client-{i}.json");
        files.insert(file.clone(), text(&body)?);
        plan.push_str(&format!("client\t{id}\t{file}\n"));
        for (j, m) in mappers.as_ref().and_then(Value::as_array).into_iter().flatten().enumerate() {
            let file = format!("client-{i}-mapper-{j}.json");
            files.insert(file.clone(), text(m)?);
            plan.push_str(&format!("client-mapper\t{}\t{file}\n", m["name"].as_str().unwrap_or_default()));
        }
    }
    for (i, ldap) in realm["components"][USER_STORAGE].as_array().into_iter().flatten().enumerate() {
        let mut body = ldap.clone();
        let subs = body.as_object_mut().and_then(|o| o.remove("subComponents"));
        body["providerType"] = json!(USER_STORAGE);
        for key in LDAP_OPTIONAL_KEYS {
            if body["config"].get(*key).is_none() {
                body["config"][*key] = json!([]);
            }
        }
        let file = format!("ldap-{i}.json");
        files.insert(file.clone(), text(&body)?);
        plan.push_str(&format!("ldap\t{}\t{file}\n", ldap["name"].as_str().unwrap_or_default()));
        let mappers = subs.as_ref().map(|s| &s[LDAP_MAPPER]);
        for (j, m) in mappers.and_then(Value::as_array).into_iter().flatten().enumerate() {
            let mut m = m.clone();
            if let Some(o) = m.as_object_mut() {
                o.remove("subComponents");
            }
            m["providerType"] = json!(LDAP_MAPPER);
            let file = format!("ldap-{i}-mapper-{j}.json");
            files.insert(file.clone(), text(&m)?);
            plan.push_str(&format!("ldap-mapper\t{}\t{file}\n", m["name"].as_str().unwrap_or_default()));
        }
    }
    files.insert("plan.tsv".to_string(), plan);
    files.insert("sync.sh".to_string(), REALM_SYNC_SCRIPT.to_string());
    Ok(files)
}

/// The realm sync: a ConfigMap with the realm's parts and a Job that converges the
/// running Keycloak's realm on them (docs/platform.md). Both are named by a digest of
/// what the sync applies, because a Job is immutable and K3s/RKE2 do not run a
/// finished Job of the same name again: a new realm (an upgrade, a rollback to the
/// previous release) is a new Job, and the Job always mounts the ConfigMap it was made
/// for. The digest covers the files only, which hold placeholders, never secrets: a
/// function of the secrets would differ between two installs of the same release (the
/// generated ones are random) and, for the customer's bind password, would let whoever
/// reads the name test guesses offline.
fn realm_sync(input: &KeycloakInput, names: &Names, realm_json: &str) -> Result<Vec<Manifest>> {
    let files = realm_sync_files(realm_json)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for (k, v) in &files {
        for part in [k.as_bytes(), v.as_bytes()] {
            digest.update(&(part.len() as u64).to_be_bytes());
            digest.update(part);
        }
    }
    let sum = hex::encode(digest.finish().as_ref());
    let name = format!("{}-realm-sync-{}", input.release, &sum[..12]);
    let config_map = config_map(&input.namespace, &name, files)?;
    let url = format!("http://{}.{}.svc:80", names.http_service, input.namespace);
    let secret_env = |env: &str, key: &str| json!({ "name": env, "valueFrom": { "secretKeyRef": { "name": names.admin_secret, "key": key } } });
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": input.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": super::MANAGED_BY,
                "app.kubernetes.io/component": "realm-sync",
            },
            "annotations": { "airlock.dev/realm-sync-sha256": sum },
        },
        "spec": {
            // The script waits for Keycloak itself (up to 15 min); a crash or an
            // evicted pod is tried again.
            "backoffLimit": 4,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": REALM_SYNC_TTL_SECONDS,
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/component": "realm-sync" } },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsNonRoot": true,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "realm-sync",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/bash", format!("{REALM_SYNC_DIR}/sync.sh")],
                        "env": [
                            { "name": "KEYCLOAK_URL", "value": url },
                            secret_env("KEYCLOAK_ADMIN_USER", "username"),
                            // kcadm.sh reads the password from here: never an argument.
                            secret_env("KC_CLI_PASSWORD", "password"),
                            { "name": "AIRLOCK_REALM_SYNC_DIR", "value": REALM_SYNC_DIR },
                            { "name": "AIRLOCK_REALM_SYNC_WORK", "value": REALM_SYNC_WORK },
                            { "name": "AIRLOCK_KCADM", "value": format!("{KEYCLOAK_HOME}/bin/kcadm.sh") },
                            { "name": "TMPDIR", "value": REALM_SYNC_WORK },
                            // Each kcadm.sh call is a short-lived JVM: no optimising
                            // compiler, the smallest collector.
                            { "name": "KC_OPTS", "value": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" },
                        ],
                        // The realm's `${...}` placeholders, as for the import.
                        "envFrom": [{ "secretRef": { "name": names.realm_env_secret } }],
                        "volumeMounts": [
                            { "name": "realm-sync", "mountPath": REALM_SYNC_DIR, "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                        "resources": {
                            "requests": { "cpu": "50m", "memory": "128Mi" },
                            "limits": { "memory": "512Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                    "volumes": [
                        { "name": "realm-sync", "configMap": { "name": name } },
                        { "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": "64Mi" } },
                    ],
                },
            },
        },
    });
    let job = Manifest {
        kind: super::ManifestKind::Job,
        name: name.clone(),
        namespace: input.namespace.clone(),
        yaml: to_yaml(&format!("Job {}/{name}", input.namespace), &job)?,
    };
    Ok(vec![config_map, job])
}

/// A list as the chart wants it: a YAML string (the chart runs it through `tpl`).
/// A chart value the chart passes through `tpl` (`extraEnv` and its kin), as YAML text
/// whose every `{{` is literal: an answer that holds one must reach the pod as typed,
/// not be run as a template.
fn templated(what: &str, items: Value) -> Result<String> {
    Ok(to_yaml(what, &items)?.replace("{{", "{{ \"{{\" }}"))
}

fn values(input: &KeycloakInput, names: &Names) -> Result<Value> {
    let host = host(&input.domain);
    let mut env = vec![
        json!({ "name": "KC_HOSTNAME", "value": format!("https://{host}") }),
        json!({ "name": "KC_TRUSTSTORE_PATHS", "value": TRUSTSTORE_DIR }),
        json!({ "name": "KC_BOOTSTRAP_ADMIN_USERNAME",
                "valueFrom": { "secretKeyRef": { "name": names.admin_secret, "key": "username" } } }),
        json!({ "name": "KC_BOOTSTRAP_ADMIN_PASSWORD",
                "valueFrom": { "secretKeyRef": { "name": names.admin_secret, "key": "password" } } }),
    ];
    let volumes = vec![
        json!({ "name": "realm", "configMap": { "name": names.realm_config_map } }),
        json!({ "name": "truststore", "configMap": { "name": names.truststore_config_map } }),
    ];
    let mut mounts = vec![
        json!({ "name": "realm", "mountPath": IMPORT_DIR, "readOnly": true }),
        json!({ "name": "truststore", "mountPath": TRUSTSTORE_DIR, "readOnly": true }),
    ];
    let database;
    let cache;
    let mut claims = Value::String(String::new());
    match &input.database {
        Some(db) => {
            // The chart templates host, database and username unquoted, so YAML
            // retypes them (`true`, `123`, `~`, `[x]` would not reach the pod as
            // strings); they go into our own env list, strings by construction.
            database = json!({
                "vendor": db.vendor,
                "port": db.port,
                "existingSecret": names.database_secret,
                "existingSecretKey": "password",
            });
            env.push(json!({ "name": "KC_DB_URL_HOST", "value": db.host }));
            env.push(json!({ "name": "KC_DB_URL_DATABASE", "value": db.database }));
            env.push(json!({ "name": "KC_DB_USERNAME", "value": db.username }));
            if db.ca_pem.is_some() {
                env.push(json!({ "name": "KC_DB_URL_PROPERTIES", "value": db_url_properties() }));
            }
            // The chart's default: Infinispan, members found through the database.
            cache = json!({ "stack": "default" });
        }
        None => {
            // One pod: the file database on its own volume, a local cache.
            database = json!({ "vendor": "dev-file" });
            cache = json!({ "stack": "custom" });
            env.push(json!({ "name": "KC_CACHE", "value": "local" }));
            mounts.push(json!({ "name": "data", "mountPath": DEV_FILE_DIR }));
            claims = Value::String(templated(
                "Keycloak volumeClaimTemplates",
                json!([{
                    "metadata": { "name": "data" },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": { "requests": { "storage": "1Gi" } },
                    },
                }]),
            )?);
        }
    }
    let env_from = json!([{ "secretRef": { "name": names.realm_env_secret } }]);

    Ok(json!({
        "replicas": if input.ha { HA_REPLICAS } else { 1 },
        "args": ["start", "--import-realm"],
        // Keycloak 26 serves at `/`; the chart's `/auth` is for Keycloak < 17 clients.
        "http": { "relativePath": "/" },
        // Traefik (K3s) and ingress-nginx (RKE2) send X-Forwarded-*, not `Forwarded`.
        "proxy": { "enabled": true, "mode": "xforwarded", "http": { "enabled": true } },
        "database": database,
        "cache": cache,
        "extraEnv": templated("Keycloak extraEnv", Value::Array(env))?,
        "extraEnvFrom": templated("Keycloak extraEnvFrom", env_from)?,
        "extraVolumes": templated("Keycloak extraVolumes", Value::Array(volumes))?,
        "extraVolumeMounts": templated("Keycloak extraVolumeMounts", Value::Array(mounts))?,
        "volumeClaimTemplates": claims,
        // The restricted Pod Security level (RKE2 CIS profile) on top of the chart's.
        "securityContext": {
            "runAsUser": 1000,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "ingress": {
            "enabled": true,
            "annotations": {
                // Keycloak's headers exceed ingress-nginx's default 4k buffer on login.
                "nginx.ingress.kubernetes.io/proxy-buffer-size": "128k",
            },
            "rules": [{ "host": host, "paths": [{ "path": "/", "pathType": "Prefix" }] }],
            "tls": [{ "hosts": [host], "secretName": input.ingress_tls_secret }],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBsite\n-----END CERTIFICATE-----\n";
    const ADMIN_PW: &str = "kc-admin-pw-7f3a9c";
    const BIND_PW: &str = "ldap-bind-pw-2b8e41";
    const CLIENT_SECRET: &str = "app-client-secret-c0ffee";
    const DB_PW: &str = "kc-db-pw-5d1e0b";

    pub(crate) fn input() -> KeycloakInput {
        KeycloakInput {
            release: "keycloak".into(),
            namespace: "keycloak".into(),
            domain: "platform.example.test".into(),
            ha: false,
            realm: "airlock".into(),
            app_client_id: "app".into(),
            app_redirect_paths: vec!["/*".into()],
            app_audiences: Vec::new(),
            ingress_tls_secret: "keycloak-tls".into(),
            site_ca_pem: CA.into(),
            ldap: KeycloakLdap {
                connection_url: "ldap://ldap.example.test:389".into(),
                start_tls: true,
                bind_dn: "cn=keycloak,ou=services,dc=example,dc=test".into(),
                users_dn: "ou=people,dc=example,dc=test".into(),
                vendor: LdapVendor::Other,
                username_attribute: "uid".into(),
                rdn_attribute: "uid".into(),
                uuid_attribute: "entryUUID".into(),
                user_object_classes: vec!["inetOrgPerson".into(), "organizationalPerson".into()],
                users_filter: Some("(memberOf=cn=app-users,ou=groups,dc=example,dc=test)".into()),
                groups_dn: "ou=groups,dc=example,dc=test".into(),
                group_object_class: "groupOfNames".into(),
                membership_attribute: "member".into(),
                ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIBldap\n-----END CERTIFICATE-----\n".into()),
            },
            database: None,
            credentials: KeycloakCredentials {
                admin_username: "admin".into(),
                admin_password: Secret::new(ADMIN_PW),
                ldap_bind_password: Secret::new(BIND_PW),
                app_client_secret: Secret::new(CLIENT_SECRET),
            },
            grafana_client: None,
        }
    }

    fn ha_input() -> KeycloakInput {
        let mut i = input();
        i.ha = true;
        i.database = Some(KeycloakDatabase {
            vendor: "postgres".into(),
            host: "postgres.app.svc".into(),
            port: 5432,
            database: "keycloak".into(),
            username: "keycloak".into(),
            password: Secret::new(DB_PW),
            ca_pem: None,
        });
        i
    }

    fn values_of(r: &Rendered) -> serde_yaml::Value {
        serde_yaml::from_str(&r.values_yaml).unwrap()
    }

    fn sub(v: &serde_yaml::Value, key: &str) -> serde_yaml::Value {
        serde_yaml::from_str(v[key].as_str().unwrap_or_else(|| panic!("{key} is a templated string"))).unwrap()
    }

    #[test]
    fn values_and_non_secret_objects_hold_no_secret_value() {
        for i in [input(), ha_input()] {
            let r = render(&i).unwrap();
            let realm = realm_json(&i).unwrap();
            let mut public = vec![r.values_yaml.clone(), realm];
            public.extend(r.manifests.iter().filter(|m| !m.is_secret()).map(|m| m.yaml.clone()));
            public.push(format!("{r:?}"));
            for text in &public {
                for s in [ADMIN_PW, BIND_PW, CLIENT_SECRET, DB_PW] {
                    assert!(!text.contains(s), "secret `{s}` leaked into:\n{text}");
                }
            }
            // ... and they are in the Secrets, where the references point.
            let secrets: String = r.manifests.iter().filter(|m| m.is_secret()).map(|m| m.yaml.clone()).collect();
            for s in [ADMIN_PW, BIND_PW, CLIENT_SECRET] {
                assert!(secrets.contains(s), "{s} is in no Secret");
            }
            assert_eq!(secrets.contains(DB_PW), i.database.is_some());
        }
    }

    #[test]
    fn realm_secrets_are_env_placeholders_fed_from_the_env_secret() {
        let i = input();
        let realm: Value = serde_json::from_str(&realm_json(&i).unwrap()).unwrap();
        let ldap = &realm["components"]["org.keycloak.storage.UserStorageProvider"][0];
        assert_eq!(ldap["config"]["bindCredential"][0], "${AIRLOCK_LDAP_BIND_CREDENTIAL}");
        assert_eq!(realm["clients"][0]["secret"], "${AIRLOCK_APP_CLIENT_SECRET}");

        let r = render(&i).unwrap();
        let names = Names::new(&i.release);
        let env_secret: serde_yaml::Value =
            serde_yaml::from_str(&r.manifest(&names.realm_env_secret).unwrap().yaml).unwrap();
        assert_eq!(env_secret["stringData"][ENV_LDAP_BIND_CREDENTIAL].as_str(), Some(BIND_PW));
        assert_eq!(env_secret["stringData"][ENV_APP_CLIENT_SECRET].as_str(), Some(CLIENT_SECRET));
        let env_from = sub(&values_of(&r), "extraEnvFrom");
        assert_eq!(env_from[0]["secretRef"]["name"].as_str(), Some(names.realm_env_secret.as_str()));
    }

    #[test]
    fn grafanas_client_redirects_only_to_grafana_and_takes_its_secret_from_the_environment() {
        let mut i = input();
        assert_eq!(
            serde_json::from_str::<Value>(&realm_json(&i).unwrap()).unwrap()["clients"].as_array().unwrap().len(),
            1
        );
        i.grafana_client = Some(GrafanaClient {
            client_id: "grafana".into(),
            host: "grafana.platform.example.test".into(),
            secret: Secret::new("grafana-client-secret-5e1a"),
        });
        let text = realm_json(&i).unwrap();
        assert!(!text.contains("grafana-client-secret-5e1a"));
        let realm: Value = serde_json::from_str(&text).unwrap();
        let g = realm["clients"].as_array().unwrap().iter().find(|c| c["clientId"] == "grafana").unwrap();
        assert_eq!(g["redirectUris"], json!(["https://grafana.platform.example.test/login/generic_oauth"]));
        assert_eq!(g["secret"], format!("${{{ENV_GRAFANA_CLIENT_SECRET}}}"));
        assert_eq!(g["publicClient"], false);
        assert_eq!(g["protocolMappers"][0]["config"]["claim.name"], "groups");
        let r = render(&i).unwrap();
        let env = r.manifests.iter().find(|m| m.is_secret() && m.yaml.contains(ENV_GRAFANA_CLIENT_SECRET)).unwrap();
        assert!(env.yaml.contains("grafana-client-secret-5e1a"));
        assert!(r.manifests.iter().filter(|m| !m.is_secret()).all(|m| !m.yaml.contains("grafana-client-secret-5e1a")));
        i.grafana_client.as_mut().unwrap().secret = Secret::new("a\"b");
        assert!(render(&i).is_err(), "a quote would break the realm file");
    }

    #[test]
    fn realm_federates_ldap_read_only_with_the_five_mappers() {
        let realm: Value = serde_json::from_str(&realm_json(&input()).unwrap()).unwrap();
        let ldap = &realm["components"]["org.keycloak.storage.UserStorageProvider"][0];
        assert_eq!(ldap["providerId"], "ldap");
        assert_eq!(ldap["config"]["editMode"][0], "READ_ONLY");
        assert_eq!(ldap["config"]["startTls"][0], "true");
        assert_eq!(ldap["config"]["connectionUrl"][0], "ldap://ldap.example.test:389");
        assert_eq!(ldap["config"]["userObjectClasses"][0], "inetOrgPerson, organizationalPerson");
        let mappers = ldap["subComponents"]["org.keycloak.storage.ldap.mappers.LDAPStorageMapper"].as_array().unwrap();
        let models: Vec<&str> =
            mappers.iter().filter_map(|m| m["config"]["user.model.attribute"][0].as_str()).collect();
        assert_eq!(models, ["username", "email", "firstName", "lastName"]);
        let groups = mappers.iter().find(|m| m["providerId"] == "group-ldap-mapper").unwrap();
        assert_eq!(groups["config"]["groups.dn"][0], "ou=groups,dc=example,dc=test");
        assert_eq!(groups["config"]["membership.attribute.type"][0], "DN");
        assert_eq!(groups["config"]["mode"][0], "READ_ONLY");
    }

    #[test]
    fn member_uid_groups_are_matched_by_user_name() {
        let mut i = input();
        i.ldap.membership_attribute = "memberUid".into();
        let realm: Value = serde_json::from_str(&realm_json(&i).unwrap()).unwrap();
        let mappers = &realm["components"]["org.keycloak.storage.UserStorageProvider"][0]["subComponents"]
            ["org.keycloak.storage.ldap.mappers.LDAPStorageMapper"];
        let groups = mappers.as_array().unwrap().iter().find(|m| m["providerId"] == "group-ldap-mapper").unwrap();
        assert_eq!(groups["config"]["membership.attribute.type"][0], "UID");
    }

    #[test]
    fn app_client_redirects_only_to_the_app_host() {
        let realm: Value = serde_json::from_str(&realm_json(&input()).unwrap()).unwrap();
        let client = &realm["clients"][0];
        assert_eq!(client["publicClient"], false);
        assert_eq!(client["redirectUris"], json!(["https://app.platform.example.test/*"]));
        assert_eq!(client["webOrigins"], json!(["https://app.platform.example.test"]));
    }

    #[test]
    fn single_node_keeps_the_file_database_on_a_volume() {
        let v = values_of(&render(&input()).unwrap());
        assert_eq!(v["replicas"].as_u64(), Some(1));
        assert_eq!(v["database"]["vendor"].as_str(), Some("dev-file"));
        let claims = sub(&v, "volumeClaimTemplates");
        assert_eq!(claims[0]["metadata"]["name"].as_str(), Some("data"));
        let mounts = sub(&v, "extraVolumeMounts");
        assert!(mounts.as_sequence().unwrap().iter().any(|m| m["mountPath"].as_str() == Some(DEV_FILE_DIR)));
    }

    #[test]
    fn ha_runs_two_replicas_on_the_external_database() {
        let i = ha_input();
        let v = values_of(&render(&i).unwrap());
        assert_eq!(v["replicas"].as_u64(), Some(u64::from(HA_REPLICAS)));
        assert_eq!(v["database"]["vendor"].as_str(), Some("postgres"));
        assert_eq!(v["database"]["existingSecret"].as_str(), Some("keycloak-database"));
        assert_eq!(v["cache"]["stack"].as_str(), Some("default"));
        assert_eq!(v["volumeClaimTemplates"].as_str(), Some(""));
    }

    #[test]
    fn ha_without_a_database_is_refused_with_a_hint() {
        let mut i = input();
        i.ha = true;
        let e = render(&i).unwrap_err();
        assert!(e.subject.contains("database"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("PostgreSQL"), "{e}");
    }

    #[test]
    fn a_placeholder_in_a_directory_setting_is_refused() {
        let mut i = input();
        i.ldap.users_filter = Some("(cn=${HOME})".into());
        let e = render(&i).unwrap_err();
        assert!(e.subject.contains("LDAP users filter"), "{e}");
        assert!(e.to_string().contains("hint:"), "{e}");
    }

    #[test]
    fn a_bind_password_that_would_break_the_realm_json_is_refused_without_echoing_it() {
        for bad in ["pa\"ss-91c2", "pa\\ss-91c2", "pa\nss-91c2"] {
            let mut i = input();
            i.credentials.ldap_bind_password = Secret::new(bad);
            let e = render(&i).unwrap_err();
            assert_eq!(e.subject, "LDAP bind password");
            assert!(!e.to_string().contains("ss-91c2"), "{e}");
            assert!(e.hint.is_some());
        }
    }

    /// What Keycloak does at import (AbstractFileBasedImportProvider): `${NAME}`
    /// replaced in the raw text by the environment variable, unknown names left as
    /// they are. The environment is the container's: the env Secret's `stringData`.
    fn substitute(text: &str, env: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            match env.get(&after[..end]) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[start..start + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn the_imported_realm_gets_the_secrets_from_the_container_environment() {
        let mut i = input();
        // Characters JSON allows unescaped, to show they survive the raw substitution.
        i.credentials.ldap_bind_password = Secret::new("b1nd'pw <&>");
        let r = render(&i).unwrap();
        let names = Names::new(&i.release);
        let cm: serde_yaml::Value = serde_yaml::from_str(&r.manifest(&names.realm_config_map).unwrap().yaml).unwrap();
        let text = cm["data"]["airlock-realm.json"].as_str().unwrap();
        let secret: serde_yaml::Value =
            serde_yaml::from_str(&r.manifest(&names.realm_env_secret).unwrap().yaml).unwrap();
        let env: BTreeMap<String, String> = serde_yaml::from_value(secret["stringData"].clone()).unwrap();
        let realm: Value = serde_json::from_str(&substitute(text, &env)).expect("still JSON after substitution");
        let ldap = &realm["components"]["org.keycloak.storage.UserStorageProvider"][0];
        assert_eq!(ldap["config"]["bindCredential"][0], "b1nd'pw <&>");
        assert_eq!(realm["clients"][0]["secret"], CLIENT_SECRET);
    }

    #[test]
    fn starttls_on_ldaps_is_refused() {
        let mut i = input();
        i.ldap.connection_url = "ldaps://dc1.example.test:636".into();
        let e = render(&i).unwrap_err();
        assert!(e.cause.contains("StartTLS"), "{e}");
        i.ldap.start_tls = false;
        render(&i).unwrap();
    }

    #[test]
    fn the_directory_ca_joins_the_truststore() {
        let r = render(&input()).unwrap();
        let cm: serde_yaml::Value = serde_yaml::from_str(&r.manifest("keycloak-truststore").unwrap().yaml).unwrap();
        assert!(cm["data"]["site-ca.pem"].as_str().unwrap().contains("MIIBsite"));
        assert!(cm["data"]["ldap-ca.pem"].as_str().unwrap().contains("MIIBldap"));
        let env = sub(&values_of(&r), "extraEnv");
        let paths = env.as_sequence().unwrap().iter().find(|e| e["name"].as_str() == Some("KC_TRUSTSTORE_PATHS"));
        assert_eq!(paths.unwrap()["value"].as_str(), Some(TRUSTSTORE_DIR));
    }

    fn sync_job(r: &Rendered) -> (String, serde_yaml::Value) {
        let m = r.manifests.iter().find(|m| m.kind == super::super::ManifestKind::Job).expect("a realm sync Job");
        (m.name.clone(), serde_yaml::from_str(&m.yaml).unwrap())
    }

    #[test]
    fn the_realm_sync_job_is_named_by_what_it_applies_so_each_new_realm_runs_again() {
        let (same, _) = sync_job(&render(&input()).unwrap());
        assert_eq!(same, sync_job(&render(&input()).unwrap()).0, "the same realm, another Job");
        assert!(same.starts_with("keycloak-realm-sync-"), "{same}");
        let mut redirect = input();
        redirect.app_redirect_paths.push("/silent-renew.html".into());
        let mut audience = input();
        audience.app_audiences.push("api".into());
        let mut filter = input();
        filter.ldap.users_filter = None;
        let mut names = vec![same.clone()];
        for i in [redirect, audience, filter] {
            let (name, _) = sync_job(&render(&i).unwrap());
            assert!(!names.contains(&name), "{name} again: a changed realm would not be applied");
            names.push(name);
        }
        // Generated secrets differ between installs of the same release: the name
        // must not, or two installs (and an upgrade and a fresh install) would differ.
        let mut other = input();
        other.credentials.app_client_secret = Secret::new("another-client-secret-77");
        other.credentials.admin_password = Secret::new("another-admin-pw-77");
        assert_eq!(sync_job(&render(&other).unwrap()).0, same);
        // The Job mounts the ConfigMap of its own name: never another release's realm.
        let r = render(&input()).unwrap();
        let (name, job) = sync_job(&r);
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"][0]["configMap"]["name"].as_str(), Some(name.as_str()));
        assert!(r.manifest(&name).is_some_and(|m| m.kind == super::super::ManifestKind::ConfigMap));
        assert!(job["spec"]["ttlSecondsAfterFinished"].as_u64().is_some_and(|t| t > 0));
        assert_eq!(spec["containers"][0]["image"].as_str(), Some(IMAGE));
    }

    #[test]
    fn the_realm_sync_takes_its_secrets_from_secret_refs_and_empties_an_unset_ldap_filter() {
        let mut i = input();
        i.ldap.users_filter = None;
        let r = render(&i).unwrap();
        let (name, job) = sync_job(&r);
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_sequence().unwrap();
        let pw = env.iter().find(|e| e["name"].as_str() == Some("KC_CLI_PASSWORD")).unwrap();
        assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("keycloak-admin"));
        assert_eq!(c["envFrom"][0]["secretRef"]["name"].as_str(), Some("keycloak-realm-env"));
        let url = env.iter().find(|e| e["name"].as_str() == Some("KEYCLOAK_URL")).unwrap();
        assert_eq!(url["value"].as_str(), Some("http://keycloak-keycloakx-http.keycloak.svc:80"));
        let cm: serde_yaml::Value = serde_yaml::from_str(&r.manifest(&name).unwrap().yaml).unwrap();
        let ldap: Value = serde_json::from_str(cm["data"]["ldap-0.json"].as_str().unwrap()).unwrap();
        assert_eq!(ldap["config"]["customUserSearchFilter"], json!([]), "an earlier release's filter would stay");
        assert_eq!(ldap["config"]["bindCredential"], json!(["${AIRLOCK_LDAP_BIND_CREDENTIAL}"]));
        let plan = cm["data"]["plan.tsv"].as_str().unwrap();
        assert!(plan.contains("realm\tairlock\trealm.json\n"), "{plan}");
        assert!(plan.contains("client\tapp\tclient-0.json\n"), "{plan}");
        assert!(plan.contains("ldap-mapper\tgroups\t"), "{plan}");
        let realm: Value = serde_json::from_str(cm["data"]["realm.json"].as_str().unwrap()).unwrap();
        assert!(realm.get("clients").is_none() && realm.get("components").is_none(), "{realm}");
    }

    #[test]
    fn every_placeholder_the_synced_parts_hold_is_one_the_sync_script_fills() {
        let mut i = input();
        i.grafana_client = Some(GrafanaClient {
            client_id: "grafana".into(),
            host: "grafana.platform.example.test".into(),
            secret: Secret::new("grafana-client-secret-5e1a"),
        });
        let files = realm_sync_files(&realm_json(&i).unwrap()).unwrap();
        let plan = &files["plan.tsv"];
        let filled: Vec<&str> = plan
            .lines()
            .filter_map(|l| l.strip_prefix("placeholder\t"))
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        for env in [ENV_LDAP_BIND_CREDENTIAL, ENV_APP_CLIENT_SECRET, ENV_GRAFANA_CLIENT_SECRET] {
            assert!(filled.contains(&env), "{env} is not filled by the sync: {plan}");
        }
        for (name, text) in files.iter().filter(|(name, _)| name.ends_with(".json")) {
            for env in realm_placeholders(text) {
                assert!(filled.contains(&env), "{name} holds ${{{env}}}, which the sync would send as text: {plan}");
            }
        }
        assert!(plan.contains("client\tgrafana\t"), "{plan}");
        assert_eq!(realm_placeholders("${A_1} ${A_1} $${x} ${lower} ${B}x ${UNCLOSED"), ["A_1", "B"].into());
    }

    #[test]
    fn the_profile_s_redirect_paths_and_audiences_reach_the_app_client() {
        let mut i = input();
        i.app_redirect_paths = vec!["/callback".into(), "/silent-renew.html".into()];
        i.app_audiences = vec!["api".into()];
        let realm: Value = serde_json::from_str(&realm_json(&i).unwrap()).unwrap();
        let client = &realm["clients"][0];
        assert_eq!(
            client["redirectUris"],
            json!([
                "https://app.platform.example.test/callback",
                "https://app.platform.example.test/silent-renew.html"
            ])
        );
        let aud = client["protocolMappers"].as_array().unwrap().iter().find(|m| m["name"] == "audience api").unwrap();
        assert_eq!(aud["protocolMapper"], "oidc-audience-mapper");
        assert_eq!(aud["config"]["included.custom.audience"], "api");
    }

    #[test]
    fn renders_are_deterministic() {
        let a = render(&input()).unwrap();
        let b = render(&input()).unwrap();
        assert_eq!(a.values_yaml, b.values_yaml);
        let texts = |r: &Rendered| r.manifests.iter().map(|m| m.yaml.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&a), texts(&b));
    }

    /// The realm's LDAP component, its config keys and its mappers' providerIds and
    /// config keys all exist in a reference taken from Keycloak's own repository
    /// (see the `_source` of the fixture), so a misspelt key cannot pass silently.
    #[test]
    fn realm_ldap_keys_exist_in_keycloaks_reference() {
        let reference: Value =
            serde_json::from_str(include_str!("testdata/keycloak-ldap-federation.reference.json")).unwrap();
        let ref_ldap = &reference["components"]["org.keycloak.storage.UserStorageProvider"][0];
        let ref_mappers =
            ref_ldap["subComponents"]["org.keycloak.storage.ldap.mappers.LDAPStorageMapper"].as_array().unwrap();

        let realm: Value = serde_json::from_str(&realm_json(&input()).unwrap()).unwrap();
        let ours = &realm["components"]["org.keycloak.storage.UserStorageProvider"][0];
        assert_eq!(ours["providerId"], ref_ldap["providerId"]);
        for (key, value) in ours["config"].as_object().unwrap() {
            assert!(ref_ldap["config"].get(key).is_some(), "LDAP config key `{key}` is not in Keycloak's reference");
            assert!(value.as_array().is_some_and(|a| a.len() == 1), "`{key}` is not a one-element list");
        }
        assert_eq!(ours["config"]["editMode"], ref_ldap["config"]["editMode"]);
        assert_eq!(ours["config"]["useTruststoreSpi"], ref_ldap["config"]["useTruststoreSpi"]);
        for m in ours["subComponents"]["org.keycloak.storage.ldap.mappers.LDAPStorageMapper"].as_array().unwrap() {
            let id = m["providerId"].as_str().unwrap();
            let r = ref_mappers
                .iter()
                .find(|r| r["providerId"] == id)
                .unwrap_or_else(|| panic!("mapper providerId `{id}` is not in Keycloak's reference"));
            for key in m["config"].as_object().unwrap().keys() {
                assert!(r["config"].get(key).is_some(), "`{id}` config key `{key}` is not in Keycloak's reference");
            }
        }
    }
}
