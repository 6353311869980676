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

/// A wizard install into a fresh root under `d`, planned: away from the directory, the
/// operator skips the failed LDAP live check. Returns the options, the plan and the
/// wizard's record.
fn wizard_plan_skipping_the_ldap_check(
    d: &std::path::Path,
) -> (airlock_installer::ops::install::InstallOptions, airlock_installer::ops::install::Ready, Scripted) {
    use airlock_installer::ops::install::{plan_install, InstallOptions};
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
        bundle,
        pubkey: vec![demo_dir().join("keys/demo.pub")],
        root,
        hostname: Some("n1".into()),
        ..InstallOptions::default()
    };
    let ready = plan_install(&opts, &mut p, &airlock_format::report::Silent).unwrap();
    (opts, ready, p)
}

/// [`wizard_plan_skipping_the_ldap_check`], applied. Returns the bundle, the root, the
/// wizard's record and the plan's warnings.
fn wizard_install_skipping_the_ldap_check(
    d: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, Scripted, Vec<String>) {
    let (opts, ready, p) = wizard_plan_skipping_the_ldap_check(d);
    let warnings = ready.warnings.clone();
    let quiet = airlock_format::report::Silent;
    airlock_installer::ops::install::apply_install(ready, &opts, &airlock_installer::live::SystemClock, &quiet)
        .unwrap();
    (opts.bundle, opts.root, p, warnings)
}

/// `airlock install BUNDLE --root ROOT EXTRA…` with the demo key, no `--answers` and no
/// terminal; exit code, stdout, stderr.
fn install_without_answers(
    bundle: &std::path::Path,
    root: &std::path::Path,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    use airlock_tests::{cargo_bin, demo_dir};
    let o = std::process::Command::new(cargo_bin("airlock"))
        .arg("install")
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--root")
        .arg(root)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
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
    let d = tempfile::tempdir().unwrap();
    let (bundle, root, _, _) = wizard_install_skipping_the_ldap_check(d.path());
    let kept = root.join("var/lib/airlock/answers.yaml").display().to_string();
    for extra in [vec!["--check"], vec!["--check", "--answers", kept.as_str()]] {
        let (code, out, err) = install_without_answers(&bundle, &root, &extra);
        assert_eq!(code, Some(0), "{extra:?}\n{out}\n{err}");
        assert!(!out.contains("site-pw-7f3a") && !err.contains("site-pw-7f3a"));
        if extra.len() == 1 {
            assert!(err.contains("using the site's kept answers") && err.contains("answers.yaml"), "{err}");
        }
    }
}

/// A wizard install stopped midway (here: a step cannot write) is resumed by the same
/// command, without a terminal and without typing the answers again.
#[test]
fn a_wizard_install_stopped_midway_is_resumed_without_retyping() {
    let d = tempfile::tempdir().unwrap();
    let (opts, ready, _) = wizard_plan_skipping_the_ldap_check(d.path());
    // A file where the install needs a directory: a step fails, the run stops.
    let blocker = opts.root.join("usr/local/bin");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "in the way").unwrap();
    let quiet = airlock_format::report::Silent;
    let stopped =
        airlock_installer::ops::install::apply_install(ready, &opts, &airlock_installer::live::SystemClock, &quiet);
    let e = stopped.expect_err("the step under the blocker fails");
    let hint = e.to_string();
    std::fs::remove_file(&blocker).unwrap();
    // The resume command the failure names has no --answers: it needs none.
    assert!(hint.contains("airlock install") && !hint.contains("--answers"), "{hint}");
    let (code, out, err) = install_without_answers(&opts.bundle, &opts.root, &["--yes"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.contains("using the site's kept answers"), "{err}");
    let (code, out, err) = install_without_answers(&opts.bundle, &opts.root, &["--check"]);
    assert_eq!(code, Some(0), "nothing is pending after the resume\n{out}\n{err}");
}
