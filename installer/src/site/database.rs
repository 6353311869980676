//! The live check of Keycloak's external database: a real PostgreSQL login with the
//! `keycloak_database` answers, made the way Keycloak will make it, so a wrong password,
//! an untrusted server certificate or an unreachable host is named before the install
//! and not found in a crash-looping Keycloak pod afterwards.
//!
//! With `keycloak_database.ca_file`, Keycloak connects with `sslmode=verify-full`
//! against exactly that CA (`render::platform::keycloak`); the check does the same: TLS
//! that trusts only that CA and checks the server's name against the host. Without it
//! the check logs in without TLS, as pgjdbc's default falls back to, and a server that
//! demands TLS is reported with the hint to give the CA. Only PostgreSQL is checked;
//! other vendors pass as "not checked".

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Serialize;

use crate::site::answers::keycloak_db::KeycloakDatabaseAnswers;

/// Why the database check failed: the answers key to fix, the cause, a hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DbProbeError {
    /// The `keycloak_database.*` key an operator fixes.
    pub key: &'static str,
    /// `host:port` (or the CA file) it is about.
    pub subject: String,
    pub cause: String,
    pub hint: String,
}

impl std::fmt::Display for DbProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}\n  hint: {}", self.subject, self.key, self.cause, self.hint)
    }
}

/// What passed: the server's version and whether the connection was TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DbProbeReport {
    pub server: String,
    pub tls: bool,
    pub summary: String,
}

/// The default limit for each connection attempt.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Logs in to the database the answers name and runs `SELECT version()`.
pub fn probe(db: &KeycloakDatabaseAnswers, timeout: Duration) -> Result<DbProbeReport, DbProbeError> {
    let subject = format!("{}:{}", db.host.for_url(), db.port);
    if db.vendor != "postgres" {
        return Ok(DbProbeReport {
            server: db.vendor.clone(),
            tls: false,
            summary: format!("{subject}: {} is not checked live (PostgreSQL only)", db.vendor),
        });
    }
    let mut cfg = postgres::Config::new();
    cfg.host(&db.host.to_string())
        .port(db.port)
        .dbname(&db.name)
        .user(&db.username)
        .password(db.password.expose())
        .application_name("airlock-check")
        .connect_timeout(timeout);
    let tls = db.ca_file.is_some();
    let client = match &db.ca_file {
        Some(ca) => {
            let config = client_config(ca)?;
            cfg.ssl_mode(postgres::config::SslMode::Require);
            cfg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(config))
        }
        None => {
            cfg.ssl_mode(postgres::config::SslMode::Disable);
            cfg.connect(postgres::NoTls)
        }
    };
    let mut client = client.map_err(|e| explain(db, &subject, &e))?;
    let version: String =
        client.query_one("SELECT version()", &[]).map(|row| row.get(0)).map_err(|e| explain(db, &subject, &e))?;
    let server = version.split(" on ").next().unwrap_or(&version).to_string();
    let how = if tls { "TLS verified against keycloak_database.ca_file" } else { "without TLS" };
    Ok(DbProbeReport {
        summary: format!("{subject}: logged in to `{}` as `{}` ({how}); {server}", db.name, db.username),
        server,
        tls,
    })
}

fn client_config(ca: &std::path::Path) -> Result<ClientConfig, DbProbeError> {
    let subject = ca.display().to_string();
    let key = "keycloak_database.ca_file";
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(ca).and_then(|it| it.collect::<Result<_, _>>()).map_err(|e| DbProbeError {
            key,
            subject: subject.clone(),
            cause: format!("cannot read the CA certificate file: {e}"),
            hint: "give the PEM file of the CA that signed the database server's certificate".into(),
        })?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| DbProbeError {
            key,
            subject: subject.clone(),
            cause: format!("holds a certificate that cannot be used as a CA: {e}"),
            hint: "give the CA certificate that signed the database server's certificate".into(),
        })?;
    }
    if roots.is_empty() {
        return Err(DbProbeError {
            key,
            subject,
            cause: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            hint: "keycloak_database.ca_file takes the CA certificate in PEM form".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbProbeError {
            key,
            subject: "TLS".into(),
            cause: e.to_string(),
            hint: "this is a bug in airlock; report it".into(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The error's chain as one text.
fn chain(e: &postgres::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Names the cause of a failed login: the answers key to fix and how.
fn explain(db: &KeycloakDatabaseAnswers, subject: &str, e: &postgres::Error) -> DbProbeError {
    let text = chain(e);
    let lower = text.to_lowercase();
    let code = e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_default();
    let err = |key: &'static str, cause: String, hint: &str| DbProbeError {
        key,
        subject: subject.to_string(),
        cause,
        hint: hint.to_string(),
    };
    match code.as_str() {
        // invalid_password, invalid_authorization_specification
        "28P01" | "28000" if lower.contains("password") => {
            return err(
                "keycloak_database.password",
                format!("the server refused the password of `{}`", db.username),
                "check keycloak_database.username and keycloak_database.password with the database team",
            );
        }
        "28000" => {
            let tls_hint = if db.ca_file.is_none() {
                "the server may accept only TLS: give keycloak_database.ca_file (the CA of its certificate)"
            } else {
                "ask the database team to allow this user from the cluster's nodes (pg_hba.conf)"
            };
            return err("keycloak_database.ca_file", format!("the server refused the connection: {text}"), tls_hint);
        }
        "3D000" => {
            return err(
                "keycloak_database.name",
                format!("the database `{}` does not exist", db.name),
                "create it (owned by the Keycloak user) or correct keycloak_database.name",
            );
        }
        _ => {}
    }
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") || lower.contains("badsignature") {
        return err(
            "keycloak_database.ca_file",
            format!("the server's certificate is not signed by the CA in keycloak_database.ca_file ({text})"),
            "give the CA that signed the database server's certificate (ask the database team for its chain)",
        );
    }
    if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        return err(
            "keycloak_database.host",
            format!("the server's certificate does not name `{}` ({text})", db.host),
            "use the host name the certificate names (Keycloak checks it: sslmode=verify-full)",
        );
    }
    if lower.contains("expired") {
        return err(
            "keycloak_database.ca_file",
            format!("the server's certificate has expired ({text})"),
            "the database team must renew its certificate",
        );
    }
    if lower.contains("server does not support tls") || lower.contains("ssl is not enabled") {
        return err(
            "keycloak_database.ca_file",
            "the server does not offer TLS, but keycloak_database.ca_file asks Keycloak to verify it".into(),
            "enable TLS on the database server, or remove keycloak_database.ca_file",
        );
    }
    if lower.contains("refused")
        || lower.contains("timed out")
        || lower.contains("unreachable")
        || lower.contains("resolve")
    {
        return err(
            "keycloak_database.host",
            format!("cannot reach the database server: {text}"),
            "check keycloak_database.host and keycloak_database.port, and that the nodes may reach the server (firewall)",
        );
    }
    err("keycloak_database.host", text, "check the keycloak_database answers with the database team")
}
