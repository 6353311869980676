//! The wizard's live LDAP check against a real slapd: a refused bind is shown and the
//! `ldap` questions are asked again; the corrected answers pass and are reported.

use airlock_installer::site::answers::{ask_checked, questions, Facts};
use airlock_tests::prompter::Scripted;
use airlock_tests::slapd::{self, Directory, Slapd};

#[test]
fn the_wizard_tests_ldap_live_and_asks_again_after_a_refused_bind() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let mut p = Scripted::default();
    let ca = d.ca_pem().display().to_string();
    let url = d.ldap_url();
    for (k, v) in [
        ("profile", vec!["single-node"]),
        ("node.name", vec!["n1"]),
        ("node.ip", vec!["192.0.2.10"]),
        ("cluster.ingress_domain", vec!["p.example.test"]),
        ("ldap.url", vec![url.as_str()]),
        // ldap:// is offered StartTLS; Enter takes it.
        ("ldap.ca_file", vec![ca.as_str()]),
        ("ldap.bind_dn", vec![slapd::OPENLDAP_BIND_DN]),
        ("ldap.bind_password", vec!["not-the-password", slapd::OPENLDAP_BIND_PW]),
        ("ldap.users_dn", vec![slapd::OPENLDAP_USERS_DN]),
        ("ldap.groups_dn", vec![slapd::OPENLDAP_GROUPS_DN]),
    ] {
        p.script.insert(k.into(), v.into_iter().map(String::from).collect());
    }
    let (answers, _) =
        ask_checked(questions(), &Facts::default(), &mut p, &[airlock_installer::site::ldap::live_check()])
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let ldap = answers.ldap.expect("ldap answers");
    assert!(ldap.starttls, "StartTLS was the suggestion for ldap://");
    assert_eq!(p.rejected.len(), 1, "{:?}", p.rejected);
    let r = &p.rejected[0];
    assert_eq!(r.key, "ldap.bind_dn");
    assert!(r.cause.contains("bind-refused") && r.cause.contains("invalidCredentials"), "{r}");
    assert!(!r.to_string().contains("not-the-password"), "{r}");
    assert_eq!(p.asked.iter().filter(|k| *k == "ldap.url").count(), 2, "{:?}", p.asked);
    assert_eq!(p.notes.len(), 1);
    assert!(p.notes[0].contains("3 users under ou=people") && p.notes[0].contains("StartTLS"), "{}", p.notes[0]);
}

/// A wizard install into a fresh root under `d`, away from the directory: the operator
/// skips the failed LDAP live check. Returns the bundle, the root and the wizard's record.
fn wizard_install_skipping_the_ldap_check(
    d: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, Scripted, Vec<String>) {
    use airlock_installer::ops::install::{apply_install, plan_install, InstallOptions};
    use airlock_tests::{build_demo_bundle, demo_dir};

    let bundle = build_demo_bundle(d, &[]);
    let root = d.join("root");
    // Nothing listens there: refused at once, as an unreachable site directory is.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ldap://127.0.0.1:{port}");
    let mut p = Scripted::default();
    for (k, v) in [
        ("profile", "single-node"),
        ("node.name", "n1"),
        ("node.ip", "192.0.2.10"),
        ("cluster.ingress_domain", "p.example.test"),
        ("ldap.url", url.as_str()),
        ("ldap.starttls", "false"),
        ("ldap.bind_dn", slapd::OPENLDAP_BIND_DN),
        ("ldap.bind_password", "site-pw-7f3a"),
        ("ldap.users_dn", slapd::OPENLDAP_USERS_DN),
        ("ldap.live_check", "skip"),
    ] {
        p.script.insert(k.into(), [v.to_string()].into());
    }
    let opts = InstallOptions {
        bundle: bundle.clone(),
        pubkey: vec![demo_dir().join("keys/demo.pub")],
        root: root.clone(),
        hostname: Some("n1".into()),
        ..InstallOptions::default()
    };
    let quiet = airlock_format::report::Silent;
    let ready = plan_install(&opts, &mut p, &quiet).unwrap();
    let warnings = ready.warnings.clone();
    apply_install(ready, &opts, &airlock_installer::live::SystemClock, &quiet).unwrap();
    (bundle, root, p, warnings)
}

/// Away from the site network the directory does not answer: the operator skips the
/// live check, the answers stand as given, and the install's journal records the skip
/// (with the preflight overrides) and that a target root could not test it.
#[test]
fn a_wizard_install_away_from_the_directory_may_skip_the_live_check_and_the_journal_records_it() {
    use airlock_installer::ops::install::SKIPPED_LDAP_CHECK;
    let d = tempfile::tempdir().unwrap();
    let (_, root, p, warnings) = wizard_install_skipping_the_ldap_check(d.path());
    assert_eq!(p.rejected.len(), 1, "{:?}", p.rejected);
    assert!(p.rejected[0].cause.contains("tcp-refused"), "{}", p.rejected[0]);
    assert_eq!(p.asked.iter().filter(|k| *k == "ldap.url").count(), 1, "skipped, not asked again: {:?}", p.asked);
    assert!(warnings.iter().any(|w| w.contains("skipped") && w.contains("airlock ldap test")), "{warnings:?}");
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("var/lib/airlock/journal.json")).unwrap()).unwrap();
    let records = journal["preflight_overrides"].as_array().expect("the skip is journaled");
    let skip = records.iter().find(|r| r["id"] == SKIPPED_LDAP_CHECK).expect("the skip is journaled");
    let detail = skip["detail"].as_str().unwrap();
    assert!(detail.contains("skipped by the operator") && detail.contains("tcp-refused"), "{detail}");
    assert!(detail.contains("target root"), "{detail}");
    assert!(!journal.to_string().contains("site-pw-7f3a"));
}

/// After a wizard install, `install --check` needs neither a terminal nor the wizard:
/// without `--answers` it takes the site's kept answers (secrets from their 0600 files),
/// and the kept answers file itself is taken by `--answers`.
#[test]
fn a_wizard_install_is_checked_from_the_kept_answers_without_retyping() {
    use airlock_tests::{cargo_bin, demo_dir};
    let d = tempfile::tempdir().unwrap();
    let (bundle, root, _, _) = wizard_install_skipping_the_ldap_check(d.path());
    let kept = root.join("var/lib/airlock/answers.yaml");
    for answers in [None, Some(&kept)] {
        let mut c = std::process::Command::new(cargo_bin("airlock"));
        c.arg("install").arg(&bundle).arg("--pubkey").arg(demo_dir().join("keys/demo.pub"));
        c.arg("--root").arg(&root).arg("--check").env("TMPDIR", d.path()).env("NO_COLOR", "1");
        if let Some(a) = answers {
            c.arg("--answers").arg(a);
        }
        let o = c.stdin(std::process::Stdio::null()).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "--answers {answers:?}\n{out}\n{err}");
        assert!(!out.contains("site-pw-7f3a") && !err.contains("site-pw-7f3a"));
        if answers.is_none() {
            assert!(err.contains("using the site's kept answers") && err.contains("answers.yaml"), "{err}");
        }
    }
}
