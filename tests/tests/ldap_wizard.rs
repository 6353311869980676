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
