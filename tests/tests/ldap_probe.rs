//! The LDAP live check against a real slapd: over ldap://, ldaps:// and StartTLS, with
//! the OpenLDAP and the Active Directory preset, and every failure stage on its own.

use std::path::PathBuf;

use airlock_installer::site::answers::Secret;
use airlock_installer::site::ldap::{
    probe_with, LdapSettings, LdapUrl, Preset, ProbeErrorKind, ProbeOptions, Transport,
};
use airlock_tests::slapd::{self, Directory, Slapd};

fn opts() -> ProbeOptions {
    ProbeOptions { timeout: std::time::Duration::from_secs(5), ..ProbeOptions::default() }
}

fn openldap(url: &str, starttls: bool, ca: Option<PathBuf>) -> LdapSettings {
    LdapSettings {
        url: LdapUrl::parse(url).expect("url"),
        starttls,
        ca_file: ca,
        bind_dn: slapd::OPENLDAP_BIND_DN.into(),
        bind_password: Secret::new(slapd::OPENLDAP_BIND_PW),
        users_dn: slapd::OPENLDAP_USERS_DN.into(),
        preset: Preset::OpenLdap,
        user_filter: None,
        groups_dn: Some(slapd::OPENLDAP_GROUPS_DN.into()),
    }
}

fn fail(s: &LdapSettings) -> airlock_installer::site::ldap::ProbeError {
    let e = probe_with(s, &opts()).expect_err("the probe should fail");
    let text = e.to_string();
    assert!(text.contains("hint: "), "{text}");
    assert!(!text.contains(s.bind_password.expose()), "the password leaked: {text}");
    e
}

#[test]
fn plain_ldap_finds_the_seeded_users_and_groups_with_keycloaks_filter() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let r = probe_with(&openldap(&d.ldap_url(), false, None), &opts()).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(r.transport, Transport::Plain);
    assert_eq!(r.user_filter, "(&(objectClass=inetOrgPerson)(objectClass=organizationalPerson))");
    assert_eq!((r.users, r.users_capped), (3, false));
    assert_eq!(r.groups, Some(2));
    assert!(["alice", "bob", "carol"].contains(&r.example_user.username.as_str()), "{r:?}");
    assert_eq!(r.example_user.dn, format!("uid={},ou=people,dc=example,dc=org", r.example_user.username));
    assert_eq!(r.example_user.email, Some(format!("{}@example.org", r.example_user.username)));
    // entryUUID came back, so no UUID warning; the clear-text bind is warned about.
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("unencrypted"));
    assert_eq!(r.addresses, vec![format!("127.0.0.1:{}", d.ldap_port)]);
}

#[test]
fn ldaps_with_the_given_ca_succeeds_and_reports_no_secret() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let r = probe_with(&openldap(&d.ldaps_url(), false, Some(d.ca_pem())), &opts())
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!((r.transport, r.users, r.groups), (Transport::Ldaps, 3, Some(2)));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains(slapd::OPENLDAP_BIND_PW), "{json}");
    // By name as well: the certificate names localhost, which resolves here.
    let by_name = openldap(&format!("ldaps://localhost:{}", d.ldaps_port), false, Some(d.ca_pem()));
    assert_eq!(probe_with(&by_name, &opts()).unwrap_or_else(|e| panic!("{e}")).users, 3);
}

#[test]
fn starttls_with_the_given_ca_succeeds() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let r = probe_with(&openldap(&d.ldap_url(), true, Some(d.ca_pem())), &opts())
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!((r.transport, r.users), (Transport::StartTls, 3));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn a_wrong_password_is_a_refused_bind_naming_the_dn() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let mut s = openldap(&d.ldaps_url(), false, Some(d.ca_pem()));
    s.bind_password = Secret::new("not-the-password");
    let e = fail(&s);
    assert_eq!(e.kind, ProbeErrorKind::BindRefused, "{e}");
    assert!(e.subject.contains(slapd::OPENLDAP_BIND_DN) && e.subject.contains(&d.ldaps_url()), "{e}");
    assert!(e.cause.contains("49") && e.cause.contains("invalidCredentials"), "{e}");
    assert_eq!(e.key(), "ldap.bind_dn");
}

#[test]
fn a_certificate_from_another_ca_is_untrusted_over_ldaps_and_starttls() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    for s in
        [openldap(&d.ldaps_url(), false, Some(d.other_ca_pem())), openldap(&d.ldap_url(), true, Some(d.other_ca_pem()))]
    {
        let e = fail(&s);
        assert_eq!(e.kind, ProbeErrorKind::TlsUntrusted, "{e}");
        assert!(e.cause.contains("other-ca.pem") && e.hint.contains("ldap.ca_file"), "{e}");
    }
}

#[test]
fn a_certificate_for_another_name_is_a_name_mismatch() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    // slapd also listens on 127.0.0.2, which its certificate does not name.
    let e = fail(&openldap(&format!("ldaps://127.0.0.2:{}", d.ldaps_port), false, Some(d.ca_pem())));
    assert_eq!(e.kind, ProbeErrorKind::TlsNameMismatch, "{e}");
    assert!(e.cause.contains("127.0.0.2"), "{e}");
}

#[test]
fn ldaps_against_the_plain_port_is_a_tls_failure_with_a_port_hint() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let e = fail(&openldap(&format!("ldaps://127.0.0.1:{}", d.ldap_port), false, Some(d.ca_pem())));
    assert!(matches!(e.kind, ProbeErrorKind::Tls | ProbeErrorKind::Timeout), "{e}");
    assert!(e.hint.contains("636") || e.hint.contains("port"), "{e}");
}

#[test]
fn a_users_dn_that_does_not_exist_is_reported_with_the_part_that_does() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let mut s = openldap(&d.ldap_url(), false, None);
    s.users_dn = "ou=staff,dc=example,dc=org".into();
    let e = fail(&s);
    assert_eq!(e.kind, ProbeErrorKind::UsersDnMissing, "{e}");
    assert!(e.subject.contains("ou=staff,dc=example,dc=org") && e.hint.contains("`dc=example,dc=org`"), "{e}");
}

#[test]
fn an_empty_user_search_is_its_own_error_and_points_at_the_preset() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let mut s = openldap(&d.ldap_url(), false, None);
    s.preset = Preset::ActiveDirectory;
    let e = fail(&s);
    assert_eq!(e.kind, ProbeErrorKind::NoUsers, "{e}");
    assert!(
        e.cause.contains("(objectClass=user)") && e.hint.contains("inetOrgPerson") && e.hint.contains("openldap"),
        "{e}"
    );
    let mut s = openldap(&d.ldap_url(), false, None);
    s.user_filter = Some("(uid=nobody)".into());
    assert_eq!(fail(&s).kind, ProbeErrorKind::NoUsers);
}

#[test]
fn a_groups_dn_that_does_not_exist_is_its_own_error() {
    let Some(d) = Slapd::start(Directory::OpenLdap) else { return };
    let mut s = openldap(&d.ldap_url(), false, None);
    s.groups_dn = Some("ou=teams,dc=example,dc=org".into());
    assert_eq!(fail(&s).kind, ProbeErrorKind::GroupsDnMissing);
    s.groups_dn = Some(slapd::OPENLDAP_USERS_DN.into());
    assert_eq!(fail(&s).kind, ProbeErrorKind::NoGroups);
}

#[test]
fn a_closed_port_is_refused_and_an_unknown_name_does_not_resolve() {
    // No slapd needed: a port just released has nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = fail(&openldap(&format!("ldap://127.0.0.1:{port}"), false, None));
    assert_eq!(e.kind, ProbeErrorKind::TcpRefused, "{e}");
    assert!(e.subject == format!("ldap://127.0.0.1:{port}") && e.cause.contains("refused"), "{e}");
    // .invalid never resolves (RFC 6761).
    let e = fail(&openldap("ldap://directory.airlock.invalid:389", false, None));
    assert_eq!(e.kind, ProbeErrorKind::Dns, "{e}");
    assert!(e.cause.contains("directory.airlock.invalid") && e.hint.contains("getent hosts"), "{e}");
    assert_eq!(e.key(), "ldap.url");
}

#[test]
fn an_unreadable_ca_file_fails_before_any_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let key_only = tmp.path().join("key.pem");
    std::fs::write(&key_only, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    // The name does not resolve: reaching DNS would give another kind.
    let e = fail(&openldap("ldaps://directory.airlock.invalid", false, Some(key_only)));
    assert_eq!(e.kind, ProbeErrorKind::CaFile, "{e}");
    assert!(e.subject.ends_with("key.pem") && e.cause.contains("no PEM certificate"), "{e}");
    let e = fail(&openldap("ldaps://directory.airlock.invalid", false, Some(tmp.path().join("missing.pem"))));
    assert_eq!(e.kind, ProbeErrorKind::CaFile, "{e}");
}

fn ad(d: &Slapd) -> LdapSettings {
    LdapSettings {
        url: LdapUrl::parse(&d.ldaps_url()).unwrap(),
        starttls: false,
        ca_file: Some(d.ca_pem()),
        bind_dn: slapd::AD_BIND_DN.into(),
        bind_password: Secret::new(slapd::AD_BIND_PW),
        users_dn: slapd::AD_USERS_DN.into(),
        preset: Preset::ActiveDirectory,
        user_filter: None,
        groups_dn: Some(slapd::AD_GROUPS_DN.into()),
    }
}

#[test]
fn an_active_directory_style_directory_is_probed_with_the_ad_preset() {
    let Some(d) = Slapd::start(Directory::ActiveDirectory) else { return };
    let r = probe_with(&ad(&d), &opts()).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(r.user_filter, "(&(objectClass=person)(objectClass=organizationalPerson)(objectClass=user))");
    assert_eq!((r.users, r.groups), (2, Some(1)));
    assert_eq!(r.example_group.as_deref(), Some("platform-admins"));
    assert!(["alice", "bob"].contains(&r.example_user.username.as_str()), "{r:?}");
    assert!(r.example_user.dn.ends_with(",cn=Users,dc=corp,dc=example"), "{r:?}");
    assert_eq!(r.example_user.email, Some(format!("{}@corp.example", r.example_user.username)));
    // objectGUID (binary) was returned: no UUID warning. The referral among the users
    // is not counted, and is warned about.
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("ldap://branch.corp.example/"), "{:?}", r.warnings);
    // The same directory with the OpenLDAP preset finds nobody, and says why.
    let mut wrong = ad(&d);
    wrong.preset = Preset::OpenLdap;
    let e = fail(&wrong);
    assert_eq!(e.kind, ProbeErrorKind::NoUsers, "{e}");
    assert!(e.hint.contains("active-directory"), "{e}");
}

#[test]
fn a_server_that_accepts_but_never_answers_is_a_timeout_not_a_hang() {
    // A TCP listener that takes connections and says nothing: the TLS handshake
    // (ldaps://) and the bind (ldap://) must each give up after the timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let short = ProbeOptions { timeout: std::time::Duration::from_secs(1), ..ProbeOptions::default() };
    for url in [format!("ldaps://127.0.0.1:{port}"), format!("ldap://127.0.0.1:{port}")] {
        let start = std::time::Instant::now();
        let e = probe_with(&openldap(&url, false, None), &short).expect_err("nothing answers");
        assert_eq!(e.kind, ProbeErrorKind::Timeout, "{e}");
        assert!(e.subject.starts_with(&url) && e.hint.contains("port"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
    }
}

/// Away from the site network the directory's name may not resolve in any time at all
/// (the site's DNS server is out of reach), and its addresses may drop every packet.
fn never_answers(_: &str, _: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
    std::thread::sleep(std::time::Duration::from_secs(120));
    Ok(Vec::new())
}

/// A listening port whose accept queue is full: the kernel drops further SYNs, so a
/// connect gets no answer at all, as from an address a firewall black-holes.
fn black_hole() -> std::net::SocketAddr {
    static HOLE: std::sync::OnceLock<(std::net::TcpListener, Vec<std::net::TcpStream>)> = std::sync::OnceLock::new();
    let (listener, _) = HOLE.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        while let Ok(c) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)) {
            queued.push(c);
            assert!(queued.len() < 5000, "the accept queue never filled");
        }
        (listener, queued)
    });
    listener.local_addr().unwrap()
}

fn black_holes(_: &str, _: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
    Ok(vec![black_hole(); 3])
}

#[test]
fn a_name_lookup_that_never_answers_fails_within_the_timeout() {
    let short =
        ProbeOptions { timeout: std::time::Duration::from_secs(1), resolve: never_answers, ..ProbeOptions::default() };
    let start = std::time::Instant::now();
    let e = probe_with(&openldap("ldaps://ldap.site.example:636", false, None), &short).expect_err("no answer");
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(e.kind, ProbeErrorKind::Dns, "{e}");
    assert!(e.cause.contains("ldap.site.example") && e.cause.contains("no answer within 1 s"), "{e}");
    assert_eq!(e.key(), "ldap.url");
}

#[test]
fn black_holed_addresses_fail_within_one_timeout_for_all_of_them() {
    let short =
        ProbeOptions { timeout: std::time::Duration::from_secs(1), resolve: black_holes, ..ProbeOptions::default() };
    let start = std::time::Instant::now();
    let e = probe_with(&openldap("ldap://ldap.site.example:389", true, None), &short).expect_err("no answer");
    // One timeout for the three addresses together, not one each.
    assert!(start.elapsed() < std::time::Duration::from_millis(2500), "took {:?}", start.elapsed());
    assert_eq!(e.kind, ProbeErrorKind::TcpTimeout, "{e}");
    assert!(e.cause.contains(&black_hole().to_string()) && e.cause.contains("within 1 s"), "{e}");
    assert!(e.hint.contains("firewall"), "{e}");
    // The documentation address as an operator would type it: dropped or refused,
    // depending on the network, but within seconds and saying which.
    let start = std::time::Instant::now();
    let e = probe_with(&openldap("ldap://192.0.2.1:389", false, None), &short).expect_err("no answer");
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(
        matches!(e.kind, ProbeErrorKind::TcpTimeout | ProbeErrorKind::TcpUnreachable | ProbeErrorKind::TcpRefused),
        "{e}"
    );
    assert!(e.cause.contains("192.0.2.1"), "{e}");
}

#[test]
fn a_server_that_never_answers_starttls_is_a_timeout_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let short = ProbeOptions { timeout: std::time::Duration::from_secs(1), ..ProbeOptions::default() };
    let start = std::time::Instant::now();
    let e = probe_with(&openldap(&format!("ldap://127.0.0.1:{port}"), true, None), &short).expect_err("silent");
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(e.kind, ProbeErrorKind::Timeout, "{e}");
}
