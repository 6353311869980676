//! `airlock ldap test` against a real slapd: the report on success, exit 8 and the
//! failing stage otherwise, and the bind password in no output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::cargo_bin;
use airlock_tests::slapd::{self, Directory, Slapd};

fn answers(dir: &Path, ldap: &str) -> PathBuf {
    let path = dir.join("answers.yaml");
    let text = format!(
        "profile: single-node\nnode: {{name: n1, ip: 192.0.2.10}}\ncluster: {{ingress_domain: p.example.test}}\n{ldap}"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn ldap_section(d: &Slapd, password: &str) -> String {
    format!(
        "ldap:\n  url: {}\n  ca_file: {}\n  bind_dn: {}\n  bind_password: {password}\n  users_dn: {}\n  preset: openldap\n  groups_dn: {}\n",
        d.ldaps_url(),
        d.ca_pem().display(),
        slapd::OPENLDAP_BIND_DN,
        slapd::OPENLDAP_USERS_DN,
        slapd::OPENLDAP_GROUPS_DN
    )
}

fn airlock(args: &[&str]) -> Output {
    Command::new(cargo_bin("airlock")).args(args).stdin(Stdio::null()).output().expect("run airlock")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn ldap_test_reports_users_and_groups_as_json_and_exits_0() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let file = answers(tmp.path(), &ldap_section(&d, slapd::OPENLDAP_BIND_PW));
    let out = airlock(&["ldap", "test", "--answers", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["users"], 3);
    assert_eq!(v["report"]["groups"], 2);
    assert_eq!(v["report"]["transport"], "ldaps");
    assert!(v["report"]["example_user"]["dn"].as_str().unwrap().ends_with(",ou=people,dc=example,dc=org"), "{v}");
    assert!(!text(&out).contains(slapd::OPENLDAP_BIND_PW));

    let out = airlock(&["ldap", "test", "--answers", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("3 users under ou=people,dc=example,dc=org") && t.contains("2 groups"), "{t}");
    assert!(!t.contains(slapd::OPENLDAP_BIND_PW), "{t}");
}

#[test]
fn ldap_test_exits_8_naming_the_failed_stage_without_the_password() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let wrong = "Wr0ng-Secret-Value";
    let file = answers(tmp.path(), &ldap_section(&d, wrong));
    let out = airlock(&["ldap", "test", "--answers", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("LDAP check failed") && t.contains(slapd::OPENLDAP_BIND_DN) && t.contains("hint:"), "{t}");
    assert!(!t.contains(wrong), "the password leaked: {t}");

    let out = airlock(&["ldap", "test", "--answers", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["ok"].as_bool(), v["exit_code"].as_i64()), (Some(false), Some(9)));
    assert_eq!(v["error"]["kind"], "bind-refused");
    assert!(!text(&out).contains(wrong));
}

#[test]
fn ldap_test_without_an_ldap_section_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = answers(tmp.path(), "");
    let out = airlock(&["ldap", "test", "--answers", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no `ldap` section") && text(&out).contains("hint:"));
}

#[test]
fn ldap_test_on_an_installed_site_is_kept_and_the_readiness_report_counts_it() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let good = answers(tmp.path(), &ldap_section(&d, slapd::OPENLDAP_BIND_PW));
    let bundle = airlock_tests::build_demo_bundle(tmp.path(), &[]);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let o = airlock_tests::airlock_with_answers("install", &bundle, &good, &root, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let root_arg = root.to_str().unwrap();
    let report = || {
        let o = airlock(&["report", "--root", root_arg, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let line = v["checklist"].as_array().unwrap().iter().find(|l| l["id"] == "ldap").unwrap().clone();
        // A failed line needs attention: exit 11, as `airlock status`.
        let want = if line["status"] == "failed" { 11 } else { 0 };
        assert_eq!(o.status.code(), Some(want), "{}", text(&o));
        line
    };
    let line = report();
    assert_eq!(line["status"], "not-verified", "{line:#}");

    // The test passes: kept on the site, and the report's LDAP line is verified by it.
    let out = airlock(&["ldap", "test", "--answers", good.to_str().unwrap(), "--root", root_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("kept for `airlock report`"), "{}", text(&out));
    let kept = std::fs::read_to_string(root.join("var/lib/airlock/ldap-test.json")).unwrap();
    assert!(!kept.contains(slapd::OPENLDAP_BIND_PW), "{kept}");
    let line = report();
    assert_eq!(line["status"], "verified", "{line:#}");
    let evidence = line["evidence"].to_string();
    assert!(evidence.contains("`airlock ldap test` passed at") && evidence.contains("3 users under"), "{evidence}");

    // With a wrong password it fails, and the line says failed.
    let tmp_bad = tempfile::tempdir().unwrap();
    let wrong = "Wr0ng-Secret-Value";
    let bad = answers(tmp_bad.path(), &ldap_section(&d, wrong));
    let out = airlock(&["ldap", "test", "--answers", bad.to_str().unwrap(), "--root", root_arg]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let line = report();
    assert_eq!(line["status"], "failed", "{line:#}");
    let kept = std::fs::read_to_string(root.join("var/lib/airlock/ldap-test.json")).unwrap();
    assert!(!kept.contains(wrong) && !line.to_string().contains(wrong), "{kept}");

    // Where nothing is installed, nothing is kept.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = airlock(&["ldap", "test", "--answers", good.to_str().unwrap(), "--root", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("kept for") && !empty.join("var").exists());
}
