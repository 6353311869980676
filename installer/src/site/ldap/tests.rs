use super::*;
use crate::site::answers::Answers;

const BASE: &str =
    "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: p.example.test}\n";

fn with_ldap(ldap: &str) -> String {
    format!("{BASE}ldap:\n{ldap}")
}

const OPENLDAP: &str = "  url: ldaps://ldap.example.test\n  ca_file: /etc/pki/ldap-ca.pem\n  bind_dn: cn=keycloak,ou=services,dc=example,dc=org\n  bind_password: s3cret-pw\n  users_dn: ou=people,dc=example,dc=org\n  preset: openldap\n";

fn parse(yaml: &str) -> Result<Answers, String> {
    Answers::from_yaml(yaml, "answers.yaml").map_err(|e| e.to_string())
}

#[test]
fn answers_without_an_ldap_section_have_no_directory() {
    assert_eq!(parse(BASE).unwrap().ldap, None);
}

#[test]
fn an_ldap_section_is_typed_with_default_ports_and_the_preset() {
    let a = parse(&with_ldap(OPENLDAP)).unwrap();
    let l = a.ldap.expect("ldap");
    assert_eq!(l.url.to_string(), "ldaps://ldap.example.test:636");
    assert_eq!(l.transport(), Transport::Ldaps);
    assert_eq!(l.preset, Preset::OpenLdap);
    assert_eq!(l.bind_password.expose(), "s3cret-pw");
    assert_eq!(l.user_search_filter(), "(&(objectClass=inetOrgPerson)(objectClass=organizationalPerson))");
    let plain = parse(&with_ldap(
        &OPENLDAP
            .replace("ldaps://ldap.example.test", "ldap://[2001:db8::7]")
            .replace("  ca_file: /etc/pki/ldap-ca.pem\n", ""),
    ))
    .unwrap();
    assert_eq!(plain.ldap.unwrap().url.to_string(), "ldap://[2001:db8::7]:389");
}

#[test]
fn starttls_takes_a_yaml_boolean_and_is_refused_on_ldaps() {
    let y = with_ldap(&OPENLDAP.replace("ldaps://ldap.example.test", "ldap://ldap.example.test:389\n  starttls: true"));
    let l = parse(&y).unwrap().ldap.unwrap();
    assert!(l.starttls && l.transport() == Transport::StartTls);
    let e = parse(&with_ldap(
        &OPENLDAP.replace("ldaps://ldap.example.test", "ldaps://ldap.example.test\n  starttls: true"),
    ))
    .unwrap_err();
    assert!(e.contains("ldap.starttls") && e.contains("TLS already") && e.contains("hint:"), "{e}");
}

#[test]
fn a_ca_file_on_a_plain_connection_is_refused() {
    let e = parse(&with_ldap(&OPENLDAP.replace("ldaps://", "ldap://"))).unwrap_err();
    assert!(e.contains("ldap.ca_file") && e.contains("not TLS"), "{e}");
}

#[test]
fn an_ldap_section_without_credentials_names_the_missing_key() {
    let e = parse(&with_ldap(&OPENLDAP.replace("  bind_password: s3cret-pw\n", ""))).unwrap_err();
    assert!(e.contains("ldap.bind_password") && e.contains("missing required key"), "{e}");
    let e = parse(&with_ldap(&OPENLDAP.replace("  preset: openldap\n", ""))).unwrap_err();
    assert!(e.contains("ldap.preset"), "{e}");
}

#[test]
fn ldap_keys_without_a_url_are_refused() {
    let e = parse(&with_ldap("  users_dn: ou=people,dc=example,dc=org\n")).unwrap_err();
    assert!(e.contains("ldap.users_dn") && e.contains("ldap.url is not"), "{e}");
}

#[test]
fn malformed_urls_dns_presets_and_filters_are_refused_with_hints() {
    for (from, to, key) in [
        ("ldaps://ldap.example.test", "https://ldap.example.test", "ldap.url"),
        ("ldaps://ldap.example.test", "ldaps://ldap.example.test/dc=example,dc=org", "ldap.url"),
        ("ldaps://ldap.example.test", "ldaps://ldap.example.test:99999", "ldap.url"),
        ("ou=people,dc=example,dc=org", "people", "ldap.users_dn"),
        ("cn=keycloak,ou=services,dc=example,dc=org", "keycloak", "ldap.bind_dn"),
        ("preset: openldap", "preset: ad", "ldap.preset"),
        ("preset: openldap", "preset: openldap\n  user_filter: memberOf=x", "ldap.user_filter"),
        ("preset: openldap", "preset: openldap\n  user_filter: (a=1)(b=2)", "ldap.user_filter"),
        ("bind_password: s3cret-pw", "bind_password: <redacted>", "ldap.bind_password"),
        ("bind_password: s3cret-pw", "bind_password: ''", "ldap.bind_password"),
    ] {
        let e = parse(&with_ldap(&OPENLDAP.replace(from, to))).unwrap_err();
        assert!(e.contains(key) && e.contains("hint:"), "{to}: {e}");
    }
}

#[test]
fn a_refused_bind_password_is_never_quoted() {
    let e =
        parse(&with_ldap(&OPENLDAP.replace("bind_password: s3cret-pw", "bind_password: \"bad\\npw\""))).unwrap_err();
    assert!(e.contains("ldap.bind_password") && !e.contains("bad"), "{e}");
}

#[test]
fn a_user_filter_is_anded_to_the_presets_object_classes() {
    let y = with_ldap(&OPENLDAP.replace(
        "preset: openldap",
        "preset: active-directory\n  user_filter: (memberOf=cn=staff,ou=groups,dc=example,dc=org)\n  groups_dn: ou=groups,dc=example,dc=org",
    ));
    let l = parse(&y).unwrap().ldap.unwrap();
    assert_eq!(
        l.user_search_filter(),
        "(&(objectClass=person)(objectClass=organizationalPerson)(objectClass=user)(memberOf=cn=staff,ou=groups,dc=example,dc=org))"
    );
    assert_eq!(l.group_search_filter(), "(objectClass=group)");
    assert_eq!(l.groups_dn.as_deref(), Some("ou=groups,dc=example,dc=org"));
}

#[test]
fn settings_never_show_the_bind_password() {
    let a = parse(&with_ldap(OPENLDAP)).unwrap();
    let json = serde_json::to_string(&a).unwrap();
    let debug = format!("{a:?}");
    assert!(!json.contains("s3cret-pw") && !debug.contains("s3cret-pw"));
    assert!(json.contains("\"bind_password\":\"<redacted>\""), "{json}");
}

#[test]
fn dns_with_escaped_commas_are_accepted() {
    assert!(dn("cn=Doe\\, John,ou=people,dc=example,dc=org").is_ok());
    assert!(dn("CN=svc-keycloak,OU=Service Accounts,DC=corp,DC=example").is_ok());
    assert!(dn("dc=example,,dc=org").is_err());
    assert!(dn("=x").is_err());
}

#[test]
fn every_ldap_key_is_documented_in_the_answers_reference() {
    let doc = include_str!("../../../../docs/answers.md");
    let keys: Vec<&str> =
        crate::site::answers::questions().iter().map(|q| q.key).filter(|k| k.starts_with("ldap.")).collect();
    assert_eq!(keys.len(), 9, "{keys:?}");
    for k in keys {
        assert!(doc.contains(&format!("| `{k}` |")), "{k} has no row in docs/answers.md");
    }
}
