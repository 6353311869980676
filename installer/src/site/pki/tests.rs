//! The PKI against real openssl: what we issue verifies, shows the right extensions and
//! is refused outside its name constraints; customer CAs and certificates made with
//! openssl are accepted or refused with errors naming the file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::engine::{apply, ApplyOptions, Plan};
use crate::host::RootedHost;
use crate::state::CA_CERT;

const DOMAIN: &str = "platform.example.test";
const SINGLE: &str =
    "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: platform.example.test}\n";

/// openssl, or a visible skip (a failure under AIRLOCK_REQUIRE_TOOLS=1, as in CI).
fn openssl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("openssl")).find(|c| c.is_file()))
        .unwrap_or_default();
    if found.is_none() {
        assert!(
            std::env::var("AIRLOCK_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "openssl is not installed (AIRLOCK_REQUIRE_TOOLS=1); tests/run.sh installs it"
        );
        eprintln!("SKIPPED: openssl is not installed; run tests/run.sh to run this test for real");
    }
    found
}

/// Runs openssl in `dir`; (success, stdout + stderr).
fn ossl(bin: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).current_dir(dir).output().expect("openssl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ossl_ok(bin: &Path, dir: &Path, args: &[&str]) -> String {
    let (ok, text) = ossl(bin, dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

fn answers(yaml: &str) -> Answers {
    Answers::from_yaml(yaml, "answers.yaml").expect("answers parse")
}

struct Target {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    host: RootedHost,
}

fn target() -> Target {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let host = RootedHost::new(root.clone(), false).unwrap();
    Target { _tmp: tmp, root, host }
}

impl Target {
    fn pki_dir(&self) -> PathBuf {
        self.root.join("etc/airlock/pki")
    }
    fn install(&self, pki: &SitePki) {
        let plan = Plan::from_steps(pki.steps()).unwrap();
        apply(&plan, &self.host, &ApplyOptions::new(crate::state::STATE_DIR, "airlock install (test)"), &mut |_| {})
            .unwrap();
    }
    fn mode_of(&self, rel: &str) -> u32 {
        std::fs::metadata(self.pki_dir().join(rel)).unwrap().permissions().mode() & 0o7777
    }
}

fn verify(bin: &Path, dir: &Path, leaf: &str) -> (bool, String) {
    // The .crt holds the leaf and its intermediates; -untrusted lets openssl use them.
    ossl(bin, dir, &["verify", "-CAfile", "ca.crt", "-untrusted", leaf, leaf])
}

#[test]
fn every_self_signed_leaf_verifies_with_openssl_against_ca_crt() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let a = answers(&format!("{SINGLE}registry: {{mirror: \"192.0.2.50:5000\"}}\n"));
    let pki = prepare(&a, &t.host).unwrap();
    assert_eq!(pki.issued(), ["ca", "ingress", "minio", "keycloak", "monitoring", "registry"]);
    t.install(&pki);
    for name in ["ingress.crt", "minio.crt", "keycloak.crt", "registry.crt"] {
        let (ok, text) = verify(&bin, &t.pki_dir(), name);
        assert!(ok && text.contains(": OK"), "{name}: {text}");
    }
}

#[test]
fn openssl_shows_the_sans_key_usages_eku_and_lifetimes_we_issue() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let pki = prepare(&answers(SINGLE), &t.host).unwrap();
    t.install(&pki);
    let dir = t.pki_dir();
    let ingress = ossl_ok(&bin, &dir, &["x509", "-in", "ingress.crt", "-text", "-noout"]);
    for want in [
        "DNS:*.platform.example.test",
        "DNS:platform.example.test",
        "DNS:keycloak.platform.example.test",
        "DNS:minio.platform.example.test",
        "DNS:app.platform.example.test",
        "IP Address:192.0.2.10",
        "Digital Signature",
        "TLS Web Server Authentication",
        "CA:FALSE",
        "ASN1 OID: prime256v1",
        "Subject: O = Airlock, CN = platform.example.test",
    ] {
        assert!(ingress.contains(want), "ingress lacks {want}:\n{ingress}");
    }
    let minio = ossl_ok(&bin, &dir, &["x509", "-in", "minio.crt", "-text", "-noout"]);
    assert!(minio.contains("DNS:minio.minio.svc, DNS:minio.minio.svc.cluster.local"), "{minio}");
    let ca = ossl_ok(&bin, &dir, &["x509", "-in", "ca.crt", "-text", "-noout"]);
    for want in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "X509v3 Name Constraints: critical",
        "DNS:platform.example.test",
        "IP:192.0.2.10/255.255.255.255",
    ] {
        assert!(ca.contains(want), "CA lacks {want}:\n{ca}");
    }
    // Lifetimes: read back through openssl's own -checkend.
    let days = |n: i64| (n * 86_400).to_string();
    assert!(ossl(&bin, &dir, &["x509", "-in", "ingress.crt", "-noout", "-checkend", &days(LEAF_DAYS - 2)]).0);
    assert!(!ossl(&bin, &dir, &["x509", "-in", "ingress.crt", "-noout", "-checkend", &days(LEAF_DAYS + 1)]).0);
    assert!(ossl(&bin, &dir, &["x509", "-in", "ca.crt", "-noout", "-checkend", &days(CA_DAYS - 2)]).0);
    // Serial numbers differ between leaves.
    let serial = |f: &str| ossl_ok(&bin, &dir, &["x509", "-in", f, "-noout", "-serial"]);
    let serials: std::collections::BTreeSet<String> =
        ["ca.crt", "ingress.crt", "minio.crt", "keycloak.crt"].iter().map(|f| serial(f)).collect();
    assert_eq!(serials.len(), 4, "{serials:?}");
}

#[test]
fn openssl_refuses_a_leaf_outside_the_site_cas_name_constraints() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let pki = prepare(&answers(SINGLE), &t.host).unwrap();
    t.install(&pki);
    // Sign an out-of-scope leaf with the real CA key, bypassing our own checks.
    let key = cert::key_from_pem(std::fs::read(t.pki_dir().join("ca.key")).unwrap().as_slice(), "ca.key").unwrap();
    let ca_der = cert::pem_certs(pki.ca_pem().as_bytes(), "ca").unwrap().remove(0);
    let signer = issue::Signer { ca_der, key, intermediates_pem: String::new(), chain_not_after: i64::MAX / 4 };
    for (file, dns, ips) in [
        ("evil-dns.crt", vec!["intranet.example.org".to_string()], vec![]),
        ("evil-ip.crt", vec![format!("x.{DOMAIN}")], vec!["198.51.100.7".parse().unwrap()]),
    ] {
        let spec = LeafSpec { name: "evil".into(), dns, ips };
        let leaf = signer.issue(&spec, OffsetDateTime::now_utc()).unwrap();
        std::fs::write(t.pki_dir().join(file), leaf.fullchain_pem()).unwrap();
        let (ok, text) = verify(&bin, &t.pki_dir(), file);
        assert!(!ok && text.contains("permitted subtree violation"), "{file}: {text}");
    }
}

#[test]
fn keys_are_0600_certificates_0644_and_no_key_shows_in_debug_or_the_plan() {
    let t = target();
    let pki = prepare(&answers(SINGLE), &t.host).unwrap();
    let plan = Plan::from_steps(pki.steps()).unwrap();
    let report = plan.check(&t.host).unwrap();
    let shown = format!("{pki:?}\n{}", serde_json::to_string(&report).unwrap());
    let key_body = pki.leaf("ingress").unwrap().key_pem().lines().nth(1).unwrap().to_string();
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains(&key_body), "{shown}");
    assert!(shown.contains("ca.key (0600, content not shown)"), "{shown}");
    t.install(&pki);
    for key in ["ca.key", "ingress.key", "minio.key", "keycloak.key"] {
        assert_eq!(t.mode_of(key), 0o600, "{key}");
    }
    for crt in ["ca.crt", "ingress.crt", "pki.json"] {
        assert_eq!(t.mode_of(crt), 0o644, "{crt}");
    }
}

#[test]
fn a_rerun_loads_the_same_pki_and_finds_every_step_satisfied() {
    let t = target();
    let a = answers(SINGLE);
    let first = prepare(&a, &t.host).unwrap();
    t.install(&first);
    let second = prepare(&a, &t.host).unwrap();
    assert!(second.issued().is_empty(), "{:?}", second.issued());
    assert_eq!(second.ca_fingerprint(), first.ca_fingerprint());
    let report = Plan::from_steps(second.steps()).unwrap().check(&t.host).unwrap();
    assert_eq!((report.pending, report.blocked), (0, 0), "{report:?}");
}

#[test]
fn a_key_left_by_a_run_that_crashed_before_its_certificate_is_kept() {
    let t = target();
    let a = answers(SINGLE);
    let first = prepare(&a, &t.host).unwrap();
    t.install(&first);
    // As if the run had stopped right after writing the keys.
    for crt in ["ca.crt", "ingress.crt"] {
        std::fs::remove_file(t.pki_dir().join(crt)).unwrap();
    }
    let ca_key = std::fs::read(t.pki_dir().join("ca.key")).unwrap();
    let ingress_key = std::fs::read(t.pki_dir().join("ingress.key")).unwrap();
    let resumed = prepare(&a, &t.host).unwrap();
    // The CA certificate is made again with the same key and name, so the leaves it
    // signed before still verify and are kept; only the missing ones are issued.
    assert_eq!(resumed.issued(), ["ca", "ingress"]);
    let report = Plan::from_steps(resumed.steps()).unwrap().check(&t.host).unwrap();
    let pending: Vec<&str> =
        report.steps.iter().filter(|s| s.state != crate::engine::StepState::Satisfied).map(|s| s.id.as_str()).collect();
    assert!(!pending.contains(&"pki/file/etc/airlock/pki/ca.key"), "{pending:?}");
    assert!(!pending.contains(&"pki/file/etc/airlock/pki/ingress.key"), "{pending:?}");
    assert!(pending.contains(&"pki/file/etc/airlock/pki/ca.crt"), "{pending:?}");
    t.install(&resumed);
    assert_eq!(std::fs::read(t.pki_dir().join("ca.key")).unwrap(), ca_key);
    assert_eq!(std::fs::read(t.pki_dir().join("ingress.key")).unwrap(), ingress_key);
}

#[test]
fn an_install_reissues_a_leaf_that_expires_soon_and_keeps_the_ca() {
    let t = target();
    let a = answers(SINGLE);
    let long_ago = OffsetDateTime::now_utc() - Duration::days(LEAF_DAYS - 10);
    let old = prepare_at(&a, &t.host, long_ago).unwrap();
    t.install(&old);
    let now = prepare(&a, &t.host).unwrap();
    assert_eq!(now.issued(), ["ingress", "minio", "keycloak", "monitoring"]);
    assert_eq!(now.ca_fingerprint(), old.ca_fingerprint());
}

#[test]
fn a_changed_domain_outside_the_existing_ca_is_refused_with_a_hint() {
    let t = target();
    t.install(&prepare(&answers(SINGLE), &t.host).unwrap());
    let err = prepare(&answers(&SINGLE.replace(DOMAIN, "other.example.test")), &t.host).unwrap_err();
    assert_eq!(err.subject, CA_CERT);
    assert!(err.cause.contains("other.example.test"), "{err}");
    assert!(err.hint.as_deref().unwrap_or_default().contains("move /etc/airlock/pki aside"), "{err}");
}

#[test]
fn ip_ranges_must_contain_every_node_address() {
    let t = target();
    let a = answers(&format!("{SINGLE}pki: {{ip_ranges: [\"198.51.100.0/24\"]}}\n"));
    let err = prepare(&a, &t.host).unwrap_err();
    assert!(err.subject.ends_with("pki.ip_ranges") && err.cause.contains("192.0.2.10"), "{err}");
    let ok = answers(&format!("{SINGLE}pki: {{ip_ranges: [\"192.0.2.0/24\"]}}\n"));
    prepare(&ok, &t.host).unwrap();
}

#[test]
fn renew_reissues_expiring_leaves_that_still_verify_and_expire_later() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let a = answers(SINGLE);
    let long_ago = OffsetDateTime::now_utc() - Duration::days(LEAF_DAYS - 10);
    t.install(&prepare_at(&a, &t.host, long_ago).unwrap());
    let before = status::status_at(&t.host, 30, OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    assert_eq!(before.expiring, 4, "{before:?}");

    let dry = renew(&t.host, RenewOptions { within_days: 30, dry_run: true }).unwrap();
    assert_eq!(dry.renewed.len(), 4);
    let unchanged = status::status_at(&t.host, 30, OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    assert_eq!(unchanged, before, "a dry run changed something");

    let done = renew(&t.host, RenewOptions { within_days: 30, dry_run: false }).unwrap();
    let names: Vec<&str> = done.renewed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ingress", "minio", "keycloak", "monitoring"]);
    let after = status::status_at(&t.host, 30, OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    assert_eq!(after.expiring, 0, "{after:?}");
    for (b, a) in before.certificates.iter().zip(&after.certificates).skip(1) {
        assert!(a.days_left > b.days_left + 700, "{} not later: {} -> {}", a.name, b.not_after, a.not_after);
        assert_eq!(a.sans, b.sans);
        assert_eq!(a.key_matches, Some(true));
    }
    for name in ["ingress", "minio", "keycloak", "monitoring"] {
        let (ok, text) = verify(&bin, &t.pki_dir(), &format!("{name}.crt"));
        assert!(ok, "{name}: {text}");
        assert_eq!(t.mode_of(&format!("{name}.key")), 0o600);
    }
    // Nothing left to do now.
    assert!(renew(&t.host, RenewOptions { within_days: 30, dry_run: false }).unwrap().renewed.is_empty());
}

#[test]
fn status_flags_expired_certificates() {
    let t = target();
    t.install(&prepare(&answers(SINGLE), &t.host).unwrap());
    let in_three_years = (OffsetDateTime::now_utc() + Duration::days(3 * 365)).unix_timestamp();
    let s = status::status_at(&t.host, 30, in_three_years).unwrap();
    assert_eq!(s.expired, 4, "{s:?}");
    assert!(s.certificates.iter().find(|c| c.name == "ingress").unwrap().days_left < 0);
    assert!(!s.certificates[0].expired, "the CA lives 10 years");
}

// ---- the customer's PKI, made with openssl -----------------------------------------------

/// A customer root and issuing intermediate under `<root>/site/`.
struct CustomerCa {
    dir: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn customer_ca(bin: &Path, t: &Target) -> CustomerCa {
    let dir = t.root.join("site");
    std::fs::create_dir_all(&dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut root = vec!["req", "-x509"];
    root.extend(ec);
    root.extend(["-keyout", "root.key", "-out", "root.crt", "-days", "3650", "-subj", "/O=Kunde/CN=Kunde Root CA"]);
    root.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    ossl_ok(bin, &dir, &root);
    let mut csr = vec!["req", "-new"];
    csr.extend(ec);
    csr.extend(["-keyout", "int.key", "-out", "int.csr", "-subj", "/O=Kunde/CN=Kunde Issuing CA"]);
    ossl_ok(bin, &dir, &csr);
    write(&dir, "int.ext", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n");
    ossl_ok(
        bin,
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.crt",
            "-CAkey",
            "root.key",
            "-set_serial",
            "2",
            "-days",
            "1000",
            "-extfile",
            "int.ext",
            "-out",
            "int.crt",
        ],
    );
    CustomerCa { dir }
}

impl CustomerCa {
    /// A server certificate signed by the intermediate, with these SANs.
    fn server_cert(&self, bin: &Path, name: &str, san: &str) {
        self.server_cert_for(bin, name, san, 300)
    }

    fn server_cert_for(&self, bin: &Path, name: &str, san: &str, days: u32) {
        let days = days.to_string();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        ossl_ok(
            bin,
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=server",
            ],
        );
        write(
            &self.dir,
            "srv.ext",
            &format!("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n"),
        );
        ossl_ok(
            bin,
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "int.crt",
                "-CAkey",
                "int.key",
                "-set_serial",
                "3",
                "-days",
                &days,
                "-extfile",
                "srv.ext",
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

fn customer_ca_answers(extra: &str) -> Answers {
    answers(&format!("{SINGLE}pki:\n  mode: customer-ca\n  ca_cert: /site/int.crt\n  ca_key: /site/int.key\n{extra}"))
}

#[test]
fn a_customer_intermediate_signs_leaves_that_openssl_verifies_up_to_the_customer_root() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    let pki = prepare(&customer_ca_answers("  ca_chain: /site/root.crt\n"), &t.host).unwrap();
    assert_eq!(pki.mode(), PkiMode::CustomerCa);
    t.install(&pki);
    let root = std::fs::read_to_string(c.dir.join("root.crt")).unwrap();
    let ca = std::fs::read_to_string(t.pki_dir().join("ca.crt")).unwrap();
    assert_eq!(cert::pem_certs(ca.as_bytes(), "a").unwrap(), cert::pem_certs(root.as_bytes(), "b").unwrap());
    assert!(!t.pki_dir().join("ca.key").exists(), "the customer's CA key must not be copied");
    for name in ["ingress.crt", "minio.crt", "keycloak.crt"] {
        let (ok, text) = verify(&bin, &t.pki_dir(), name);
        assert!(ok && text.contains(": OK"), "{name}: {text}");
    }
    // A leaf never outlives the intermediate that signed it.
    let int = cert::facts(&cert::pem_certs(&std::fs::read(c.dir.join("int.crt")).unwrap(), "int").unwrap()[0], "int")
        .unwrap();
    assert!(pki.leaf("ingress").unwrap().facts().not_after <= int.not_after);
    // And the next run keeps them.
    assert!(prepare(&customer_ca_answers("  ca_chain: /site/root.crt\n"), &t.host).unwrap().issued().is_empty());
}

#[test]
fn a_customer_ca_without_the_chain_to_its_root_is_refused() {
    let Some(bin) = openssl() else { return };
    let t = target();
    customer_ca(&bin, &t);
    let err = prepare(&customer_ca_answers(""), &t.host).unwrap_err();
    assert_eq!(err.subject, "/site/int.crt (pki.ca_cert)");
    assert!(err.cause.contains("chain does not verify") && err.cause.contains("Kunde Root CA"), "{err}");
    assert!(err.hint.unwrap().contains("pki.ca_chain"));
}

#[test]
fn a_customer_ca_key_of_another_certificate_is_refused_naming_both_files() {
    let Some(bin) = openssl() else { return };
    let t = target();
    customer_ca(&bin, &t);
    let a = answers(&format!(
        "{SINGLE}pki:\n  mode: customer-ca\n  ca_cert: /site/int.crt\n  ca_key: /site/root.key\n  ca_chain: /site/root.crt\n"
    ));
    let err = prepare(&a, &t.host).unwrap_err();
    assert_eq!(err.subject, "/site/root.key (pki.ca_key)");
    assert!(err.cause.contains("does not belong to the certificate in /site/int.crt (pki.ca_cert)"), "{err}");
    assert!(err.hint.unwrap().contains("openssl pkey"));
}

#[test]
fn an_expired_or_not_yet_valid_customer_ca_is_refused() {
    let Some(bin) = openssl() else { return };
    let t = target();
    customer_ca(&bin, &t);
    let a = customer_ca_answers("  ca_chain: /site/root.crt\n");
    let later = OffsetDateTime::now_utc() + Duration::days(1200);
    let err = prepare_at(&a, &t.host, later).unwrap_err();
    assert_eq!(err.subject, "/site/int.crt (pki.ca_cert)");
    assert!(err.cause.contains("Kunde Issuing CA") && err.cause.contains("expired"), "{err}");
    let earlier = OffsetDateTime::now_utc() - Duration::days(2);
    let err = prepare_at(&a, &t.host, earlier).unwrap_err();
    assert!(err.cause.contains("not valid yet"), "{err}");
    assert!(err.hint.unwrap().contains("clock"));
}

#[test]
fn a_server_certificate_given_as_the_customer_ca_is_refused_as_not_a_ca() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    c.server_cert(&bin, "srv", "DNS:*.platform.example.test");
    let a = answers(&format!(
        "{SINGLE}pki:\n  mode: customer-ca\n  ca_cert: /site/srv.crt\n  ca_key: /site/srv.key\n  ca_chain: /site/root.crt\n"
    ));
    let err = prepare(&a, &t.host).unwrap_err();
    assert_eq!(err.subject, "/site/srv.crt (pki.ca_cert)");
    assert!(err.cause.contains("is not a CA certificate"), "{err}");
    assert!(err.hint.unwrap().contains("customer-certs"));
}

/// A customer root made with openssl from `key_args` and extra `-addext`s, as root.crt/root.key.
fn customer_root(bin: &Path, t: &Target, key_args: &[&str], addext: &[&str]) -> PathBuf {
    let dir = t.root.join("site");
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec!["req", "-x509", "-nodes"];
    args.extend(key_args);
    args.extend(["-keyout", "root.key", "-out", "root.crt", "-days", "3650", "-subj", "/O=Kunde/CN=Kunde Root CA"]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    for e in addext {
        args.extend(["-addext", e]);
    }
    ossl_ok(bin, &dir, &args);
    dir
}

fn root_ca_answers() -> Answers {
    answers(&format!("{SINGLE}pki:\n  mode: customer-ca\n  ca_cert: /site/root.crt\n  ca_key: /site/root.key\n"))
}

#[test]
fn an_rsa_customer_root_signs_leaves_that_openssl_verifies() {
    let Some(bin) = openssl() else { return };
    let t = target();
    customer_root(&bin, &t, &["-newkey", "rsa:2048"], &[]);
    let pki = prepare(&root_ca_answers(), &t.host).unwrap();
    t.install(&pki);
    for name in ["ingress.crt", "minio.crt", "keycloak.crt"] {
        let (ok, text) = verify(&bin, &t.pki_dir(), name);
        assert!(ok && text.contains(": OK"), "{name}: {text}");
    }
    let text = ossl_ok(&bin, &t.pki_dir(), &["x509", "-in", "ingress.crt", "-noout", "-text"]);
    assert!(text.contains("sha256WithRSAEncryption") && text.contains("ASN1 OID: prime256v1"), "{text}");
}

#[test]
fn a_customer_ca_whose_name_constraints_leave_out_the_domain_is_refused() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    customer_root(&bin, &t, &ec, &["nameConstraints=critical,permitted;DNS:corp.example"]);
    let err = prepare(&root_ca_answers(), &t.host).unwrap_err();
    assert_eq!(err.subject, "/site/root.crt (pki.ca_cert)");
    assert!(err.cause.contains("outside the DNS names it may certify (corp.example)"), "{err}");
}

fn customer_certs_answers(cert: &str) -> Answers {
    answers(&format!(
        "{SINGLE}pki:\n  mode: customer-certs\n  ingress_cert: /site/{cert}.crt\n  ingress_key: /site/{cert}.key\n  ingress_chain: /site/chain.pem\n"
    ))
}

#[test]
fn a_ready_customer_ingress_certificate_is_used_with_its_chain() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    c.server_cert(&bin, "web", "DNS:*.platform.example.test");
    let chain = std::fs::read_to_string(c.dir.join("int.crt")).unwrap()
        + &std::fs::read_to_string(c.dir.join("root.crt")).unwrap();
    write(&c.dir, "chain.pem", &chain);
    let pki = prepare(&customer_certs_answers("web"), &t.host).unwrap();
    assert_eq!(pki.leaves().len(), 1);
    assert!(pki.leaf("minio").is_none());
    t.install(&pki);
    let (ok, text) = verify(&bin, &t.pki_dir(), "ingress.crt");
    assert!(ok, "{text}");
    assert_eq!(t.mode_of("ingress.key"), 0o600);
    assert!(renew(&t.host, RenewOptions { within_days: 30, dry_run: false })
        .unwrap_err()
        .hint
        .unwrap()
        .contains("customer's IT"));
}

#[test]
fn a_customer_certificate_close_to_expiry_is_used_with_a_warning() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    c.server_cert_for(&bin, "short", "DNS:*.platform.example.test", 20);
    let read = |f: &str| std::fs::read_to_string(c.dir.join(f)).unwrap();
    write(&c.dir, "chain.pem", &(read("int.crt") + &read("root.crt")));
    let pki = prepare(&customer_certs_answers("short"), &t.host).unwrap();
    let w = pki.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("the ingress certificate (CN=server) expires") && w[0].contains("customer's IT"), "{w:?}");
    let fresh = prepare(&answers(SINGLE), &target().host).unwrap();
    assert!(fresh.warnings().is_empty(), "{:?}", fresh.warnings());
}

#[test]
fn a_customer_ingress_certificate_missing_a_platform_host_is_refused() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    c.server_cert(&bin, "narrow", "DNS:keycloak.platform.example.test,DNS:app.platform.example.test");
    write(&c.dir, "chain.pem", &std::fs::read_to_string(c.dir.join("int.crt")).unwrap());
    let err = prepare(&customer_certs_answers("narrow"), &t.host).unwrap_err();
    assert_eq!(err.subject, "/site/narrow.crt (pki.ingress_cert)");
    assert!(err.cause.contains("does not cover `minio.platform.example.test`"), "{err}");
}

#[test]
fn a_customer_ingress_certificate_must_name_the_monitoring_hosts_when_the_release_has_monitoring() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    let d = "platform.example.test";
    let platform = format!("DNS:keycloak.{d},DNS:minio.{d},DNS:app.{d}");
    c.server_cert(&bin, "platform", &platform);
    c.server_cert(&bin, "all", &format!("{platform},DNS:prometheus.{d},DNS:alertmanager.{d},DNS:grafana.{d}"));
    let read = |f: &str| std::fs::read_to_string(c.dir.join(f)).unwrap();
    write(&c.dir, "chain.pem", &(read("int.crt") + &read("root.crt")));
    let monitoring = [format!("prometheus.{d}"), format!("alertmanager.{d}"), format!("grafana.{d}")];

    // Enough for a release without monitoring; refused, naming the host, with it.
    let pki = prepare(&customer_certs_answers("platform"), &t.host).unwrap();
    let err = pki.require_ingress_names(&monitoring, d).unwrap_err();
    assert_eq!(err.subject, "/etc/airlock/pki/ingress.crt");
    assert!(err.cause.contains("does not cover `prometheus.platform.example.test`"), "{err}");
    assert!(err.hint.as_deref().unwrap().contains("*.platform.example.test"), "{err:?}");
    let pki = prepare(&customer_certs_answers("all"), &t.host).unwrap();
    pki.require_ingress_names(&monitoring, d).unwrap();
    // Airlock's own leaves are issued with the monitoring names: nothing to refuse.
    prepare(&answers(SINGLE), &target().host).unwrap().require_ingress_names(&monitoring, d).unwrap();
}

#[test]
fn a_customer_key_in_the_old_sec1_form_gets_a_conversion_hint() {
    let Some(bin) = openssl() else { return };
    let t = target();
    let c = customer_ca(&bin, &t);
    ossl_ok(&bin, &c.dir, &["ec", "-in", "int.key", "-out", "int-sec1.key"]);
    let a = answers(&format!(
        "{SINGLE}pki:\n  mode: customer-ca\n  ca_cert: /site/int.crt\n  ca_key: /site/int-sec1.key\n  ca_chain: /site/root.crt\n"
    ));
    let err = prepare(&a, &t.host).unwrap_err();
    assert!(err.cause.contains("SEC1"), "{err}");
    assert!(err.hint.as_deref().unwrap_or_default().contains("openssl pkcs8 -topk8 -nocrypt"));
    assert!(!err.to_string().contains("PRIVATE KEY-----\n"), "the key must not be quoted");
}

// ---- answers ------------------------------------------------------------------------------

#[test]
fn answers_without_pki_mean_self_signed() {
    assert_eq!(answers(SINGLE).pki, crate::site::answers::Pki::default());
    assert_eq!(answers(SINGLE).pki.mode, PkiMode::SelfSigned);
}

#[test]
fn customer_ca_mode_requires_its_files_and_refuses_another_modes_keys() {
    let err = Answers::from_yaml(&format!("{SINGLE}pki: {{mode: customer-ca}}\n"), "a.yaml").unwrap_err();
    assert!(err.to_string().contains("pki.ca_cert"), "{err}");
    let err = Answers::from_yaml(&format!("{SINGLE}pki: {{ingress_cert: /site/x.crt}}\n"), "a.yaml").unwrap_err();
    assert!(err.to_string().contains("pki.mode is self-signed"), "{err}");
    let err = Answers::from_yaml(&format!("{SINGLE}pki: {{mode: acme}}\n"), "a.yaml").unwrap_err();
    assert!(err.to_string().contains("not a PKI mode"), "{err}");
}

#[test]
fn renew_records_what_it_reissued_so_the_renewed_files_are_not_drift() {
    use crate::host::{Host, Perms};
    use crate::state::{FileState, Inventory, InventoryKey, INVENTORY_KEY_PATH, INVENTORY_PATH};
    let t = target();
    let long_ago = OffsetDateTime::now_utc() - Duration::days(LEAF_DAYS - 10);
    let pki = prepare_at(&answers(SINGLE), &t.host, long_ago).unwrap();
    t.install(&pki);
    let key = InventoryKey::load_or_generate(&t.host).unwrap();
    t.host.write_file(Path::new(INVENTORY_KEY_PATH), &mut key.file_content().as_slice(), Perms::secret()).unwrap();
    let inv = Inventory::of(&pki.layout(), "k3s", "k3s.service", None, vec![], &key, &|_| None);
    t.host.write_file(Path::new(INVENTORY_PATH), &mut inv.to_json().as_slice(), Perms::mode(0o644)).unwrap();
    // Keys are recorded through the keyed digest, certificates with their SHA-256.
    let ingress_key = inv.files.iter().find(|f| f.path.ends_with("ingress.key")).unwrap();
    assert!(ingress_key.sha256.is_none() && ingress_key.hmac_sha256.is_some(), "{ingress_key:?}");

    let done = renew(&t.host, RenewOptions { within_days: 30, dry_run: false }).unwrap();
    assert_eq!(done.renewed.len(), 4);
    let after = Inventory::load(&t.host).unwrap();
    assert_ne!(after, inv, "the inventory records the new issue");
    for f in &after.files {
        assert_eq!(f.state(&t.host, Some(&key)).unwrap(), FileState::AsPlaced, "{}", f.path.display());
    }
}
