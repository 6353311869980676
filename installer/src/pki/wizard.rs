//! The wizard's check of the `pki` answers (a [`LiveCheck`]): the customer's files go
//! through the very checks install applies ([`super::prepare`], `customer.rs`: key
//! against certificate, validity, CA bits, the chain up to a root, name constraints,
//! the ingress names), as soon as the last `pki` question is answered. A failure is
//! shown with the file and the reason, and the wizard asks again from the question of
//! the file that failed; the answers before it stand.
//!
//! The wizard runs on the node it installs, so the files are read at the paths given,
//! on this machine (like `ldap.ca_file`); nothing is written. An install into a
//! `--root` reads them below the root again and checks them once more.

use airlock_format::error::Error;

use super::SitePki;
use crate::answers::wizard::WIZARD;
use crate::answers::{Answered, Answers, LiveCheck, PkiMode, Problem, Reask};
use crate::host::RootedHost;

/// The check the binary passes to [`crate::answers::ask_checked`].
pub fn live_check() -> LiveCheck {
    LiveCheck { section: "pki", run: check_answered, reask: Reask::FailedKey }
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
    let hint = e.hint.clone().unwrap_or_else(|| "see docs/pki.md".to_string());
    Problem::new(key, format!("{}: {}", e.subject, e.cause), hint)
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
