//! The wizard asks where the TLS certificates come from: Enter keeps the self-signed
//! site CA; a customer CA made by real openssl is checked as soon as its files are
//! given and accepted; a bad file is shown with its reason and asked again.

use std::path::Path;
use std::process::Command;

use airlock_installer::site::answers::{ask_checked, questions, Facts, PkiMode};
use airlock_tests::prompter::Scripted;
use airlock_tests::require_tool;

fn scripted(extra: &[(&str, &[&str])]) -> Scripted {
    let mut p = Scripted::default();
    let node: [(&str, &[&str]); 4] = [
        ("profile", &["single-node"]),
        ("node.name", &["n1"]),
        ("node.ip", &["192.0.2.10"]),
        ("cluster.ingress_domain", &["platform.example.test"]),
    ];
    for (k, v) in node.iter().chain(extra) {
        p.script.insert(k.to_string(), v.iter().map(|s| s.to_string()).collect());
    }
    p
}

fn checks() -> [airlock_installer::site::answers::LiveCheck; 1] {
    [airlock_installer::site::pki::wizard::live_check()]
}

/// A customer root CA as `openssl req -x509` makes it, and a key that is not its own.
fn customer_ca(openssl: &Path, dir: &Path) {
    for (key, crt) in [("ca.key", Some("ca.crt")), ("other.key", None)] {
        let mut cmd = Command::new(openssl);
        match crt {
            Some(crt) => cmd
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
                .args(["-days", "365", "-subj", "/O=Kunde GmbH/CN=Kunde Root CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .args(["-keyout", key, "-out", crt]),
            None => cmd.args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]),
        };
        let o = cmd.current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn enter_at_the_pki_question_keeps_the_self_signed_site_ca() {
    let mut p = scripted(&[]);
    let (answers, _) = ask_checked(questions(), &Facts::default(), &mut p, &checks()).unwrap();
    assert_eq!(answers.pki.mode, PkiMode::SelfSigned);
    assert!(p.asked.contains(&"pki.mode".to_string()), "{:?}", p.asked);
    assert!(!p.asked.iter().any(|k| k.starts_with("pki.") && k != "pki.mode"), "{:?}", p.asked);
    assert!(p.rejected.is_empty() && p.notes.is_empty(), "{:?} {:?}", p.rejected, p.notes);
}

#[test]
fn a_customer_ca_made_by_openssl_is_checked_and_accepted() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    customer_ca(&openssl, d.path());
    let (crt, key) = (d.path().join("ca.crt").display().to_string(), d.path().join("ca.key").display().to_string());
    let mut p = scripted(&[("pki.mode", &["customer-ca"]), ("pki.ca_cert", &[&crt]), ("pki.ca_key", &[&key])]);
    let (answers, _) = ask_checked(questions(), &Facts::default(), &mut p, &checks()).unwrap();
    assert_eq!(answers.pki.mode, PkiMode::CustomerCa);
    assert_eq!(answers.pki.ca_cert.as_deref(), Some(Path::new(&crt)));
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    // The note names the fingerprint openssl computes for the customer's root.
    let fp = Command::new(&openssl).args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &crt]).output().unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout).trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    assert!(p.notes[0].contains("customer-ca accepted") && p.notes[0].contains(&fp), "{}", p.notes[0]);
    // Customer-certs files are not asked in customer-ca mode.
    assert!(!p.asked.iter().any(|k| k.starts_with("pki.ingress_")), "{:?}", p.asked);
}

#[test]
fn a_bad_pki_file_is_shown_with_its_reason_as_it_is_given_and_asked_again() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    customer_ca(&openssl, d.path());
    let path = |f: &str| d.path().join(f).display().to_string();
    let (crt, key, other) = (path("ca.crt"), path("ca.key"), path("other.key"));
    let (missing, not_pem) = (path("no-such.crt"), path("ca.key"));
    let mut p = scripted(&[
        ("pki.mode", &["customer-ca"]),
        // A file that is not there, a key where the certificate goes, then the right one.
        ("pki.ca_cert", &[&missing, &not_pem, &crt]),
        // A key of another CA, then the CA's own.
        ("pki.ca_key", &[&other, &key]),
    ]);
    let (answers, _) = ask_checked(questions(), &Facts::default(), &mut p, &checks()).unwrap();
    assert_eq!(answers.pki.ca_key.as_deref(), Some(Path::new(&key)));
    let rejected: Vec<&str> = p.rejected.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(rejected, ["pki.ca_cert", "pki.ca_cert", "pki.ca_key"], "{:?}", p.rejected);
    let r = &p.rejected;
    assert!(r[0].cause.contains("no-such.crt") && r[0].cause.contains("does not exist"), "{}", r[0]);
    assert!(r[1].cause.contains("holds no PEM certificate"), "{}", r[1]);
    assert!(r[2].cause.contains("other.key") && r[2].cause.contains("does not belong"), "{}", r[2]);
    assert!(r.iter().all(|r| !r.hint.is_empty()));
    // Each bad file was asked again right away, before the next question.
    let pki: Vec<&str> = p.asked.iter().filter(|k| k.starts_with("pki.")).map(String::as_str).collect();
    assert_eq!(
        pki,
        ["pki.mode", "pki.ca_cert", "pki.ca_cert", "pki.ca_cert", "pki.ca_key", "pki.ca_key", "pki.ca_chain"]
    );
    assert!(p.notes.iter().any(|n| n.contains("customer-ca accepted")), "{:?}", p.notes);
    // No key material in anything shown.
    let key_text = std::fs::read_to_string(&key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    for r in &p.rejected {
        assert!(!r.to_string().contains(body));
    }
}

#[test]
fn a_certificate_that_is_no_ca_fails_the_set_check_and_is_asked_again_from_its_question() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    customer_ca(&openssl, d.path());
    // A server certificate: valid PEM, valid now, its own key, but no CA.
    let o = Command::new(&openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=not-a-ca", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "leaf.key", "-out", "leaf.crt"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let path = |f: &str| d.path().join(f).display().to_string();
    let mut p = scripted(&[
        ("pki.mode", &["customer-ca"]),
        ("pki.ca_cert", &[&path("leaf.crt"), &path("ca.crt")]),
        ("pki.ca_key", &[&path("leaf.key"), &path("ca.key")]),
    ]);
    let (answers, _) = ask_checked(questions(), &Facts::default(), &mut p, &checks()).unwrap();
    assert_eq!(answers.pki.ca_cert.as_deref(), Some(Path::new(&path("ca.crt"))));
    assert_eq!(p.rejected.len(), 1, "{:?}", p.rejected);
    let r = &p.rejected[0];
    assert!(r.key == "pki.ca_cert" && r.cause.contains("is not a CA certificate"), "{r}");
    assert!(r.hint.contains("customer-certs"), "{r}");
    // Asked again from the certificate's question: the mode stands.
    assert_eq!(p.asked.iter().filter(|k| *k == "pki.mode").count(), 1, "{:?}", p.asked);
    assert_eq!(p.asked.iter().filter(|k| *k == "pki.ca_cert").count(), 2, "{:?}", p.asked);
}
