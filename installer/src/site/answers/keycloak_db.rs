//! The `keycloak_database` answers: the site's database Keycloak keeps its realm,
//! users and sessions in.
//!
//! Without it Keycloak keeps a file database on one pod's volume, which only a single
//! node can use; an HA install that carries Keycloak therefore requires this section
//! (on the node that starts the cluster, the one that renders the platform charts).
//! The password is a [`Secret`] like `ldap.bind_password`: it is never printed, saved
//! answers write it as `<redacted>`, and install puts it only into the Kubernetes
//! Secret Keycloak's chart reads (`existingSecret`), never into the chart's values.

use std::path::PathBuf;

use serde::Serialize;

use super::check::{self, Invalid};
use super::questions::Answered;
use super::strict::Problem;
use super::{Address, Facts, Secret, DOC, REDACTED};

/// The Keycloak chart (codecentric keycloakx): a bundle that installs it needs the
/// `ldap` and Keycloak database answers. The renderer takes its name from here.
pub const KEYCLOAK_CHART: &str = "keycloakx";

/// The database vendors Keycloak's `KC_DB` takes (other than its dev databases), with
/// their usual ports.
pub const VENDORS: [(&str, u16); 5] =
    [("postgres", 5432), ("mariadb", 3306), ("mysql", 3306), ("mssql", 1433), ("oracle", 1521)];
/// The vendor taken when `keycloak_database.vendor` is left out.
pub const DEFAULT_VENDOR: &str = "postgres";

/// The typed `keycloak_database` section; its validators have passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeycloakDatabaseAnswers {
    /// Keycloak's `KC_DB`.
    pub vendor: String,
    pub host: Address,
    pub port: u16,
    /// The database (schema owner's database) Keycloak creates its tables in.
    pub name: String,
    pub username: String,
    pub password: Secret,
    /// PostgreSQL only: the CA that signed the server's certificate; given, Keycloak
    /// connects with `sslmode=verify-full` against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl KeycloakDatabaseAnswers {
    pub(crate) fn from_answered(a: &Answered) -> Result<Option<Self>, Problem> {
        let Some(host) = a.text("keycloak_database.host") else { return Ok(None) };
        let req =
            |key: &str| a.text(key).map(str::to_string).ok_or_else(|| Problem::new(key, "missing required key", DOC));
        let vendor = a.text("keycloak_database.vendor").unwrap_or(DEFAULT_VENDOR).to_string();
        let port = match a.text("keycloak_database.port") {
            Some(p) => port(p).map_err(|e| e.problem("keycloak_database.port"))?,
            None => default_port(&vendor),
        };
        Ok(Some(Self {
            host: check::address(host).map_err(|e| e.problem("keycloak_database.host"))?,
            port,
            name: req("keycloak_database.name")?,
            username: req("keycloak_database.username")?,
            password: Secret::new(req("keycloak_database.password")?),
            ca_file: a.text("keycloak_database.ca_file").map(PathBuf::from),
            vendor,
        }))
    }
}

fn default_port(vendor: &str) -> u16 {
    VENDORS.iter().find(|(v, _)| *v == vendor).map_or(5432, |(_, p)| *p)
}

fn port(s: &str) -> Result<u16, Invalid> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Invalid::new(
            format!("`{s}` is not a TCP port"),
            "write the database server's port, 1 to 65535 (PostgreSQL listens on 5432 by default)",
        )),
    }
}

// ---- when it is required and asked ---------------------------------------------------

/// Required on the first server of an HA install whose bundle installs Keycloak.
pub(crate) fn required(a: &Answered) -> Option<&'static str> {
    (a.has("ha.servers") && a.starts_cluster() && a.installs_keycloak()).then_some(
        "the bundle installs Keycloak in HA, and its own file database lives on one pod's volume, which other nodes cannot share",
    )
}

/// Every other key once the host is given.
pub(crate) fn required_with_host(a: &Answered) -> Option<&'static str> {
    a.has("keycloak_database.host").then_some("keycloak_database.host is set")
}

/// The wizard asks for a database only where one is required: a single node is
/// fine with Keycloak's file database (an answers file may still name one).
pub(crate) fn asks(a: &Answered, _: &Facts) -> bool {
    required(a).is_some()
}

pub(crate) fn has_host(a: &Answered, _: &Facts) -> bool {
    a.has("keycloak_database.host")
}

pub(crate) fn vendor_names(_: &Facts) -> Vec<String> {
    VENDORS.iter().map(|(v, _)| v.to_string()).collect()
}

pub(crate) fn suggest_vendor(_: &Answered, _: &Facts) -> Option<String> {
    Some(DEFAULT_VENDOR.into())
}

pub(crate) fn suggest_port(a: &Answered, _: &Facts) -> Option<String> {
    Some(default_port(a.text("keycloak_database.vendor").unwrap_or(DEFAULT_VENDOR)).to_string())
}

pub(crate) fn suggest_name(_: &Answered, _: &Facts) -> Option<String> {
    Some("keycloak".into())
}

// ---- validators ---------------------------------------------------------------------

fn needs_host(a: &Answered, key: &str) -> Result<(), Invalid> {
    if a.has("keycloak_database.host") {
        Ok(())
    } else {
        Err(Invalid::new(
            "is set but keycloak_database.host is not",
            format!("set keycloak_database.host, or remove {key}"),
        ))
    }
}

pub(crate) fn check_host(s: &str, a: &Answered) -> Result<(), Invalid> {
    let addr = check::address(s)?;
    if let Address::Ip(ip) = addr {
        if ip.is_loopback() || ip.is_unspecified() {
            return Err(Invalid::new(
                format!("{ip} is not reachable from Keycloak's pods"),
                "give the address of the database server on the site network",
            ));
        }
        for key in ["cluster.cluster_cidr", "cluster.service_cidr"] {
            if let Some(net) = a.text(key).and_then(|t| t.parse::<ipnet::IpNet>().ok()).filter(|n| n.contains(&ip)) {
                return Err(Invalid::new(
                    format!("{ip} is inside {key} {net}, so pods could not reach it"),
                    format!("choose a {key} that does not contain the database's address"),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn check_vendor(s: &str, a: &Answered) -> Result<(), Invalid> {
    if !VENDORS.iter().any(|(v, _)| *v == s) {
        return Err(Invalid::new(
            format!("`{s}` is not a database Keycloak supports"),
            format!("write one of {} (the default is {DEFAULT_VENDOR})", vendor_names(&Facts::default()).join(", ")),
        ));
    }
    needs_host(a, "keycloak_database.vendor")
}

pub(crate) fn check_port(s: &str, a: &Answered) -> Result<(), Invalid> {
    port(s)?;
    needs_host(a, "keycloak_database.port")
}

/// A name that goes into a JDBC URL unescaped, so no characters with a meaning there.
pub(crate) fn check_name(s: &str, a: &Answered) -> Result<(), Invalid> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if s.is_empty() || s.len() > 63 || !s.chars().all(ok) {
        return Err(Invalid::new(
            format!("`{s}` is not a database name Keycloak can put into its JDBC URL"),
            "use letters, digits, `_` and `-` (at most 63), e.g. keycloak",
        ));
    }
    needs_host(a, "keycloak_database.name")
}

pub(crate) fn check_username(s: &str, a: &Answered) -> Result<(), Invalid> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new("is empty or contains spaces", "write the database account Keycloak logs in with"));
    }
    needs_host(a, "keycloak_database.username")
}

/// Never quotes the value: it is a secret.
pub(crate) fn check_password(s: &str, a: &Answered) -> Result<(), Invalid> {
    if s == REDACTED {
        return Err(Invalid::new(
            "is the placeholder `<redacted>`",
            "saved answers leave secrets out; write the real password here",
        ));
    }
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(Invalid::new("is empty or contains a line break", "write the password on one line"));
    }
    needs_host(a, "keycloak_database.password")
}

pub(crate) fn check_ca_file(s: &str, a: &Answered) -> Result<(), Invalid> {
    check::abs_path(s)?;
    needs_host(a, "keycloak_database.ca_file")?;
    let vendor = a.text("keycloak_database.vendor").unwrap_or(DEFAULT_VENDOR);
    if vendor != "postgres" {
        return Err(Invalid::new(
            format!("verifying the database's certificate is supported for postgres, but the vendor is {vendor}"),
            "remove keycloak_database.ca_file: airlock verifies the database's certificate for PostgreSQL only (sslmode=verify-full)",
        ));
    }
    Ok(())
}
