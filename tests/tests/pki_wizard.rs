//! The wizard asks where the TLS certificates come from: Enter keeps the self-signed
//! site CA; a customer CA made by real openssl is checked as soon as its files are
//! given and accepted; a bad file is shown with its reason and asked again.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;

use airlock_format::error::Result;
use airlock_installer::answers::{ask_checked, questions, Facts, PkiMode, Problem, Prompt, Prompter};
use airlock_tests::require_tool;

#[derive(Default)]
struct Scripted {
    script: BTreeMap<String, VecDeque<String>>,
    asked: Vec<String>,
    rejected: Vec<Problem>,
    notes: Vec<String>,
}

impl Prompter for Scripted {
    fn answer(&mut self, p: &Prompt<'_>) -> Result<String> {
        self.asked.push(p.key.clone());
        assert!(self.asked.len() < 200, "the wizard loops: {:?}", self.rejected);
        Ok(self.script.get_mut(&p.key).and_then(VecDeque::pop_front).unwrap_or_default())
    }
    fn rejected(&mut self, problem: &Problem) {
        self.rejected.push(problem.clone());
    }
    fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }
}

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

fn checks() -> [airlock_installer::answers::LiveCheck; 1] {
    [airlock_installer::pki::wizard::live_check()]
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
fn a_bad_pki_file_is_shown_with_its_reason_and_asked_again() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    customer_ca(&openssl, d.path());
    let path = |f: &str| d.path().join(f).display().to_string();
    let (crt, key, other) = (path("ca.crt"), path("ca.key"), path("other.key"));
    let missing = path("no-such.crt");
    let mut p = scripted(&[
        ("pki.mode", &["customer-ca"]),
        // A file that is not there, then the right one.
        ("pki.ca_cert", &[&missing, &crt]),
        // A key of another CA, then the CA's own.
        ("pki.ca_key", &[&other, &other, &key]),
    ]);
    let (answers, _) = ask_checked(questions(), &Facts::default(), &mut p, &checks()).unwrap();
    assert_eq!(answers.pki.ca_key.as_deref(), Some(Path::new(&key)));
    let rejected: Vec<&str> = p.rejected.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(rejected, ["pki.ca_cert", "pki.ca_key"], "{:?}", p.rejected);
    let (first, second) = (&p.rejected[0], &p.rejected[1]);
    assert!(first.cause.contains("no-such.crt") && first.cause.contains("does not exist"), "{first}");
    assert!(second.cause.contains("other.key") && second.cause.contains("does not belong"), "{second}");
    assert!(!second.hint.is_empty(), "{second}");
    // After the bad key only the key (and what follows it) was asked again, not the mode.
    assert_eq!(p.asked.iter().filter(|k| *k == "pki.mode").count(), 1, "{:?}", p.asked);
    assert_eq!(p.asked.iter().filter(|k| *k == "pki.ca_key").count(), 3, "{:?}", p.asked);
    assert!(p.notes.iter().any(|n| n.contains("customer-ca accepted")), "{:?}", p.notes);
    // No key material in anything shown.
    let key_text = std::fs::read_to_string(&key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    for r in &p.rejected {
        assert!(!r.to_string().contains(body));
    }
}
