//! The wizard's check of the `pki` answers (a [`LiveCheck`]), in two steps:
//!
//! - each file as soon as it is given ([`check_entry`]): it exists and is what its key
//!   says (PEM certificates; a certificate valid now; an unencrypted key that belongs
//!   to the certificate given before it). A bad file is shown and asked again at once;
//! - the set, once the last `pki` question is answered: the very checks install
//!   applies ([`super::prepare`], `customer.rs`: CA bits, the chain up to a root, name
//!   constraints, the ingress names). A failure is shown with the file and the reason,
//!   and the wizard asks again from the question of the file that failed; the answers
//!   before it stand.
//!
//! The wizard runs on the node it installs, so the files are read at the paths given,
//! on this machine (like `ldap.ca_file`); nothing is written. An install into a
//! `--root` reads them below the root again and checks them once more.

use std::path::Path;

use airlock_format::error::{Error, Result};

use super::{cert, SitePki};
use crate::host::{Host, RootedHost};
use crate::site::answers::wizard::WIZARD;
use crate::site::answers::{Answered, Answers, LiveCheck, PkiMode, Problem, Reask};

/// The check the binary passes to [`crate::site::answers::ask_checked`].
pub fn live_check() -> LiveCheck {
    // The customer's files are on this machine: nothing to test later instead.
    LiveCheck {
        section: "pki",
        run: check_answered,
        reask: Reask::FailedKey,
        entry: Some(check_entry),
        skippable: false,
    }
}

/// One `pki.*` file, checked as it is given; see the module docs.
fn check_entry(key: &str, a: &Answered) -> std::result::Result<(), Problem> {
    let at = |e: Error| Problem::new(key, format!("{}: {}", e.subject, e.cause), hint_of(&e));
    let file = |key: &str| -> Result<Option<(Vec<u8>, String)>> {
        let Some(path) = a.text(key) else { return Ok(None) };
        let label = format!("{path} ({key})");
        let bytes = RootedHost::new("/".into(), false)?.read_file(Path::new(path))?.ok_or_else(|| {
            Error::input(&label, "does not exist")
                .with_hint("copy the customer's file to this machine and give its path, or correct the path")
        })?;
        Ok(Some((bytes, label)))
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    const FILES: [&str; 6] =
        ["pki.ca_cert", "pki.ca_key", "pki.ca_chain", "pki.ingress_cert", "pki.ingress_key", "pki.ingress_chain"];
    if !FILES.contains(&key) {
        // `pki.mode` and `pki.ip_ranges` name no file; their validators judged them.
        return Ok(());
    }
    let check = || -> Result<()> {
        let Some((bytes, label)) = file(key)? else { return Ok(()) };
        match key {
            "pki.ca_cert" | "pki.ingress_cert" => {
                let facts = cert::facts(&cert::pem_certs(&bytes, &label)?[0], &label)?;
                cert::check_validity(&facts, now, &label, "ask the customer's IT for a current certificate")
            }
            "pki.ca_chain" | "pki.ingress_chain" => cert::pem_certs(&bytes, &label).map(drop),
            "pki.ca_key" | "pki.ingress_key" => {
                let key_pair = cert::key_from_pem(&bytes, &label)?;
                let cert_key = if key == "pki.ca_key" { "pki.ca_cert" } else { "pki.ingress_cert" };
                let Some((cert_bytes, cert_label)) = file(cert_key)? else { return Ok(()) };
                let facts = cert::facts(&cert::pem_certs(&cert_bytes, &cert_label)?[0], &cert_label)?;
                if cert::key_matches(&key_pair, &facts) {
                    return Ok(());
                }
                Err(Error::input(&label, format!("does not belong to the certificate in {cert_label} ({})", facts.subject))
                    .with_hint("give the key made with that certificate; `openssl pkey -in KEY -pubout` and `openssl x509 -in CERT -noout -pubkey` must print the same"))
            }
            _ => Ok(()),
        }
    };
    check().map_err(at)
}

fn hint_of(e: &Error) -> String {
    e.hint.clone().unwrap_or_else(|| "see docs/pki.md".to_string())
}

fn check_answered(a: &Answered) -> Result<Option<String>, Problem> {
    let answers = Answers::from_answered(a, WIZARD)?;
    if answers.pki.mode == PkiMode::SelfSigned {
        // Nothing of the customer's to check: the site CA is made at install.
        return Ok(None);
    }
    let host = RootedHost::new("/".into(), false).map_err(|e| problem(&e))?;
    match super::prepare(&answers, &host) {
        Ok(pki) => Ok(Some(accepted(&pki))),
        Err(e) => Err(problem(&e)),
    }
}

fn accepted(pki: &SitePki) -> String {
    let what = match pki.mode() {
        PkiMode::CustomerCa => "the customer CA signs the platform's certificates",
        _ => "the customer's ingress certificate serves every platform host",
    };
    format!(
        "{} accepted: {what}; browsers must trust the root with SHA-256 fingerprint {}",
        pki.mode(),
        pki.ca_fingerprint()
    )
}

/// The problem at the `pki.*` key the error's file came from: customer.rs names each
/// file `PATH (pki.KEY)`, or `ORIGIN: pki.KEY` when it is missing.
fn problem(e: &Error) -> Problem {
    let key = e
        .subject
        .rsplit_once("(pki.")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(k, _)| format!("pki.{k}"))
        .or_else(|| e.subject.rsplit_once(": pki.").map(|(_, k)| format!("pki.{k}")))
        .unwrap_or_else(|| "pki.mode".to_string());
    Problem::new(key, format!("{}: {}", e.subject, e.cause), hint_of(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_error_is_put_at_the_key_the_file_came_from() {
        let e = Error::input("/site/ca.key (pki.ca_key)", "does not belong to the certificate").with_hint("h");
        assert_eq!(problem(&e).key, "pki.ca_key");
        assert!(problem(&e).cause.contains("/site/ca.key") && problem(&e).hint == "h");
        let e = Error::input("wizard answers: pki.ingress_chain", "missing");
        assert_eq!(problem(&e).key, "pki.ingress_chain");
        assert_eq!(problem(&Error::input("/etc/airlock/pki", "x")).key, "pki.mode");
    }
}
