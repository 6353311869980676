use std::collections::BTreeSet;

use super::*;

const SINGLE: &str =
    "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: p.example.test}\n";

/// A 3-server HA cluster with one agent; `node` picks who is being installed.
fn ha(node: &str, extra: &str) -> String {
    format!(
        "profile: ha\nnode: {node}\ncluster: {{ingress_domain: p.example.test}}\n\
         ha:\n  servers:\n    - {{name: s1, ip: 192.0.2.11}}\n    - {{name: s2, ip: 192.0.2.12}}\n    - {{name: s3, ip: 192.0.2.13}}\n\
         \x20 agents:\n    - {{name: a1, ip: 192.0.2.21}}\n{extra}"
    )
}

/// SINGLE with more `cluster` keys.
fn cluster(extra: &str) -> String {
    SINGLE.replace("ingress_domain: p.example.test}", &format!("ingress_domain: p.example.test, {extra}}}"))
}

/// Parses as `airlock` does; every document it accepts must also pass the published
/// JSON Schema (an editor must never flag a file the installer takes).
fn parse(yaml: &str) -> std::result::Result<Answers, Problem> {
    let doc = strict::parse_yaml(yaml, DOC)?;
    let parsed = Answers::from_answered(&questions::read_document(&doc, None)?, "answers.yaml")?;
    assert_schema_accepts(yaml);
    Ok(parsed)
}

fn assert_schema_accepts(yaml: &str) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| jsonschema::validator_for(&schema::json_schema()).expect("the schema compiles"));
    let doc: serde_json::Value = serde_yaml::from_str(yaml).expect("accepted YAML converts to JSON");
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path)).collect();
    assert!(errors.is_empty(), "the schema refuses what the parser took:\n{yaml}\n{errors:#?}");
}

#[test]
fn the_schema_refuses_unknown_keys_and_wrong_shapes_as_the_parser_does() {
    let v = jsonschema::validator_for(&schema::json_schema()).unwrap();
    for bad in [
        SINGLE.replace("profile:", "profil:"),
        SINGLE.replace("ip: 192.0.2.10", "ip: [192.0.2.10]"),
        format!("{SINGLE}ldap: {{preset: novell}}\n"),
        format!("{SINGLE}ha: {{servers: [{{name: s1}}]}}\n"),
        "node: {name: n1, ip: 192.0.2.10}\n".to_string(),
    ] {
        let doc: serde_json::Value = serde_yaml::from_str(&bad).unwrap();
        assert!(!v.is_valid(&doc), "the schema took {bad}");
        assert!(parse(&bad).is_err(), "the parser took {bad}");
    }
}

fn problem(yaml: &str) -> Problem {
    parse(yaml).expect_err("should be refused")
}

#[test]
fn a_single_node_gets_the_documented_defaults() {
    let a = parse(SINGLE).unwrap();
    assert_eq!(a.node.role, Role::Server);
    assert_eq!(a.cluster.cluster_cidr.to_string(), "10.42.0.0/16");
    assert_eq!(a.cluster.service_cidr.to_string(), "10.43.0.0/16");
    assert_eq!(a.cluster.cluster_dns.to_string(), "10.43.0.10");
    assert_eq!(a.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert!(a.ha.is_none() && a.join.is_none() && a.registry.is_none());
    assert!(a.starts_cluster() && !a.cluster_init(DistributionKind::K3s));
}

#[test]
fn the_cluster_dns_default_follows_the_service_cidr() {
    let a = parse(&cluster("service_cidr: 172.21.0.0/16")).unwrap();
    assert_eq!(a.cluster.cluster_dns.to_string(), "172.21.0.10");
}

#[test]
fn an_ipv6_node_gets_ipv6_cluster_networks_by_default() {
    let a = parse(&SINGLE.replace("192.0.2.10", "2001:db8::10")).unwrap();
    assert_eq!(a.cluster.cluster_cidr.to_string(), "fd00:42::/56");
    assert_eq!(a.cluster.cluster_dns.to_string(), "fd00:43::a");
    let p = problem(&cluster("cluster_cidr: 10.42.0.0/16").replace("192.0.2.10", "2001:db8::10"));
    assert_eq!(p.key, "cluster.cluster_cidr");
    assert!(p.cause.contains("IPv4") && p.cause.contains("IPv6"), "{p}");
}

#[test]
fn overlapping_cluster_and_service_cidrs_are_refused_at_the_service_cidr() {
    let p = problem(&cluster("cluster_cidr: 10.42.0.0/16, service_cidr: 10.42.128.0/17"));
    assert_eq!(p.key, "cluster.service_cidr");
    assert!(p.cause.contains("overlaps cluster.cluster_cidr"), "{p}");
}

#[test]
fn the_cluster_dns_must_be_a_usable_address_inside_the_service_cidr() {
    let p = problem(&cluster("cluster_dns: 10.42.0.10"));
    assert_eq!(p.key, "cluster.cluster_dns");
    assert!(p.cause.contains("not inside cluster.service_cidr") && p.hint.contains("10.43.0.10"), "{p}");
    let p = problem(&cluster("cluster_dns: 10.43.0.1"));
    assert!(p.cause.contains("reserved"), "the API service owns the first address: {p}");
}

#[test]
fn a_site_address_inside_a_cluster_network_is_refused() {
    let p = problem(&SINGLE.replace("192.0.2.10", "10.42.3.4"));
    assert_eq!(p.key, "cluster.cluster_cidr");
    assert!(p.cause.starts_with("the default `10.42.0.0/16` contains node.ip 10.42.3.4"), "{p}");
    assert!(p.hint.contains("took its default"), "{p}");
    let p = problem(&format!("{SINGLE}registry: {{mirror: \"10.43.0.50:5000\"}}\n"));
    assert_eq!(p.key, "registry.mirror");
}

#[test]
fn service_networks_outside_what_kubernetes_takes_are_refused() {
    let p = problem(&cluster("service_cidr: 10.0.0.0/8"));
    assert_eq!(p.key, "cluster.service_cidr");
    assert!(p.cause.contains("/12../28"), "{p}");
}

#[test]
fn values_of_the_wrong_type_are_named_without_echoing_them() {
    let p = problem(&SINGLE.replace("ip: 192.0.2.10", "ip: 5"));
    assert_eq!(p.key, "node.ip");
    assert!(p.cause.contains("expected text, found a number"), "{p}");
    let p = problem(&SINGLE.replace("name: n1", "name: [n1]"));
    assert_eq!(p.key, "node.name");
}

#[test]
fn ha_servers_are_an_odd_number_of_at_least_three() {
    let yaml = ha("{name: s1, ip: 192.0.2.11}", "").replace("    - {name: s3, ip: 192.0.2.13}\n", "");
    let p = problem(&yaml);
    assert_eq!(p.key, "ha.servers");
    assert!(p.cause.contains("lists 2 servers"), "{p}");
}

#[test]
fn a_server_must_be_among_the_ha_servers_under_its_own_name() {
    let p = problem(&ha("{name: s9, ip: 192.0.2.19}", ""));
    assert_eq!(p.key, "ha.servers");
    assert!(p.cause.contains("does not list this node (s9, 192.0.2.19)"), "{p}");
    let p = problem(&ha("{name: other, ip: 192.0.2.12}", "join: {server: 192.0.2.11, token_file: /t}\n"));
    assert_eq!(p.key, "ha.servers[1].name");
}

#[test]
fn duplicate_members_are_named_at_the_second_entry() {
    let p =
        problem(&ha("{name: s1, ip: 192.0.2.11}", "").replace("name: a1, ip: 192.0.2.21", "name: a1, ip: 192.0.2.13"));
    assert_eq!(p.key, "ha.agents[0].ip");
    let p = problem(&ha("{name: s1, ip: 192.0.2.11}", "").replace("name: s3", "name: s2"));
    assert_eq!(p.key, "ha.servers[2].name");
}

#[test]
fn the_first_server_starts_the_cluster_and_joins_nobody() {
    let a = parse(&ha("{name: s1, ip: 192.0.2.11}", "")).unwrap();
    assert!(a.starts_cluster() && a.cluster_init(DistributionKind::K3s) && !a.cluster_init(DistributionKind::Rke2));
    let p = problem(&ha("{name: s1, ip: 192.0.2.11}", "join: {server: 192.0.2.12, token_file: /t}\n"));
    assert_eq!(p.key, "join.server");
    assert!(p.cause.contains("starts the cluster"), "{p}");
    let p = problem(&format!("{SINGLE}join: {{server: 192.0.2.99, token_file: /t}}\n"));
    assert!(p.hint.contains("single server"), "{p}");
}

#[test]
fn later_servers_and_agents_must_join_with_a_token_file() {
    let p = problem(&ha("{name: s2, ip: 192.0.2.12}", ""));
    assert_eq!(p.key, "join.server");
    assert!(p.cause.contains("missing required key: only the first of ha.servers starts the cluster"), "{p}");
    let p = problem(&ha("{name: a1, ip: 192.0.2.21, role: agent}", ""));
    assert!(p.key == "join.server" && p.cause.contains("agents join a server"), "{p}");
    let p = problem(&ha("{name: s2, ip: 192.0.2.12}", "join: {server: 192.0.2.11}\n"));
    assert_eq!(p.key, "join.token_file");
    let p = problem(&ha("{name: s2, ip: 192.0.2.12}", "join: {server: 192.0.2.11, token_file: token}\n"));
    assert!(p.key == "join.token_file" && p.cause.contains("not an absolute path"), "{p}");
    let p = problem(&ha("{name: s2, ip: 192.0.2.12}", "join: {server: 192.0.2.12, token_file: /t}\n"));
    assert!(p.cause.contains("this node itself"), "{p}");
    let p = problem(&ha("{name: s2, ip: 192.0.2.12}", "join: {server: a1, token_file: /t}\n"));
    assert!(p.cause.contains("only servers take joins"), "{p}");

    let a = parse(&ha(
        "{name: a1, ip: 192.0.2.21, role: agent}",
        "join: {server: 192.0.2.11, token_file: /root/cluster-token}\n",
    ))
    .unwrap();
    assert!(!a.starts_cluster());
    assert_eq!(a.join_url(DistributionKind::Rke2).as_deref(), Some("https://192.0.2.11:9345"));
}

#[test]
fn an_agent_must_be_among_the_ha_agents() {
    let yaml = ha("{name: a2, ip: 192.0.2.22, role: agent}", "join: {server: 192.0.2.11, token_file: /t}\n");
    let p = problem(&yaml);
    assert!(p.key == "ha.agents" && p.cause.contains("which is an agent"), "{p}");
}

#[test]
fn join_urls_bracket_ipv6_servers() {
    let yaml =
        "profile: x\nnode: {name: a, ip: \"2001:db8::5\", role: agent}\ncluster: {ingress_domain: p.example.test}\n\
                join: {server: \"2001:db8::1\", token_file: /t}\n";
    assert_eq!(parse(yaml).unwrap().join_url(DistributionKind::K3s).as_deref(), Some("https://[2001:db8::1]:6443"));
}

#[test]
fn registry_settings_need_the_mirror_and_keep_the_password_secret() {
    let p = problem(&format!("{SINGLE}registry: {{ca_file: /etc/pki/ca.pem}}\n"));
    assert!(p.key == "registry.ca_file" && p.cause.contains("registry.mirror is not"), "{p}");
    let p = problem(&format!("{SINGLE}registry: {{mirror: \"harbor.example.test:443\", username: pull}}\n"));
    assert!(p.key == "registry.password" && p.cause.contains("missing required key"), "{p}");

    let yaml =
        format!("{SINGLE}registry: {{mirror: \"harbor.example.test:443\", username: pull, password: s3cr3t-pw}}\n");
    let a = parse(&yaml).unwrap();
    let reg = a.registry.as_ref().unwrap();
    assert_eq!(reg.password.as_ref().unwrap().expose(), "s3cr3t-pw");
    for shown in [format!("{a:?}"), serde_json::to_string(&a).unwrap()] {
        assert!(!shown.contains("s3cr3t-pw") && shown.contains(REDACTED), "{shown}");
    }
    let p = problem(&yaml.replace("s3cr3t-pw", "<redacted>"));
    assert!(p.key == "registry.password" && p.hint.contains("real password"), "{p}");
}

#[test]
fn image_delivery_defaults_to_archives_and_the_push_settings_need_a_pushing_delivery() {
    let reg = |extra: &str| format!("{SINGLE}registry: {{mirror: \"harbor.example.test:443\"{extra}}}\n");
    let a = parse(&reg("")).unwrap();
    let r = a.registry.as_ref().unwrap();
    assert_eq!(r.delivery, ImageDelivery::Archives);
    assert!(!r.pushes() && r.archives());

    let a = parse(&reg(", delivery: registry, prefix: platform/images, push_auth_file: /root/push.json")).unwrap();
    let r = a.registry.as_ref().unwrap();
    assert!(r.pushes() && !r.archives());
    assert_eq!(
        (r.prefix.as_str(), r.push_auth_file.as_deref()),
        ("platform/images", Some(Path::new("/root/push.json")))
    );
    let a = parse(&reg(", delivery: both")).unwrap();
    assert!(a.registry.as_ref().unwrap().pushes() && a.registry.as_ref().unwrap().archives());

    let p = problem(&reg(", delivery: harbor"));
    assert!(p.key == "registry.delivery" && p.cause.contains("`harbor`"), "{p}");
    let p = problem(&reg(", prefix: platform"));
    assert!(p.key == "registry.prefix" && p.cause.contains("registry.delivery"), "{p}");
    let p = problem(&reg(", delivery: registry, prefix: Platform"));
    assert!(p.key == "registry.prefix" && p.cause.contains("repository path"), "{p}");
    let p = problem(&reg(", delivery: registry, push_auth_file: push.json"));
    assert_eq!(p.key, "registry.push_auth_file");
    let p = problem(&format!("{SINGLE}registry: {{delivery: registry}}\n"));
    assert!(p.key == "registry.delivery" && p.cause.contains("registry.mirror is not"), "{p}");
}

#[test]
fn a_bad_password_is_refused_without_being_quoted() {
    let yaml = format!("{SINGLE}registry: {{mirror: \"h.example.test:5000\", password: \"pw-only\"}}\n");
    let p = problem(&yaml);
    assert_eq!(p.key, "registry.password");
    assert!(!p.to_string().contains("pw-only"), "{p}");
}

#[test]
fn saved_answers_redact_secrets_and_read_back_otherwise_unchanged() {
    let yaml = format!("{SINGLE}registry: {{mirror: \"h.example.test:5000\", username: u, password: pw}}\n");
    let doc = questions::read_document(&strict::parse_yaml(&yaml, DOC).unwrap(), None).unwrap();
    let saved = doc.to_yaml();
    assert!(!saved.contains("pw\n") && saved.contains(REDACTED), "{saved}");
    assert!(!format!("{doc:?}").contains("pw\""), "{doc:?}");
    assert_eq!(problem(&saved).key, "registry.password");
    assert_eq!(parse(&saved.replace(REDACTED, "pw")).unwrap(), parse(&yaml).unwrap());
}

#[test]
fn data_dirs_on_volatile_filesystems_are_refused() {
    for bad in ["/tmp/rancher", "/run/k3s", "/"] {
        let p = problem(&format!("{SINGLE}data_dir: {bad}\n"));
        assert_eq!(p.key, "data_dir", "{bad}");
    }
}

#[test]
fn preflight_overrides_are_check_names_listed_once() {
    let a = parse(&format!("{SINGLE}preflight: {{overrides: [default-route, etcd-fsync]}}\n")).unwrap();
    assert_eq!(a.preflight.overrides, ["default-route", "etcd-fsync"]);
    assert_eq!(problem(&format!("{SINGLE}preflight: {{overrides: [a, a]}}\n")).key, "preflight.overrides[1]");
    assert_eq!(problem(&format!("{SINGLE}preflight: {{overrides: [Disk Space]}}\n")).key, "preflight.overrides[0]");
}

#[test]
fn every_question_has_a_unique_key_a_prompt_and_help() {
    let mut keys = BTreeSet::new();
    for q in questions() {
        assert!(keys.insert(q.key), "{} twice", q.key);
        assert!(!q.prompt.is_empty() && !q.help.is_empty(), "{}", q.key);
        assert!(q.key.split('.').count() <= 2, "{}: sections are one level deep", q.key);
    }
}

/// The file reader and the wizard share validators: for each question, a bad value in
/// a file gives exactly the problem the wizard shows at that prompt, given the same
/// earlier answers.
#[test]
fn a_bad_value_gives_the_same_problem_in_a_file_and_at_the_prompt() {
    let cases = [
        ("node.name", "Bad_Name"),
        ("node.ip", "192.0.2.300"),
        ("cluster.ingress_domain", "platform"),
        ("cluster.cluster_cidr", "10.42.0.0/33"),
        ("cluster.service_cidr", "10.42.0.0/16"),
        ("cluster.cluster_dns", "10.42.0.10"),
        ("data_dir", "relative/dir"),
    ];
    let base = questions::read_document(&strict::parse_yaml(SINGLE, DOC).unwrap(), None).unwrap();
    for (key, bad) in cases {
        let mut doc = base.clone();
        doc.set(key, serde_yaml::Value::from(bad));
        let file = problem(&serde_yaml::to_string(&doc.to_value()).unwrap());

        let mut earlier = Answered::default();
        for q in questions().iter().take_while(|q| q.key != key) {
            if let Some(v) = doc.get(q.key) {
                earlier.set(q.key, v.clone());
            }
        }
        let q = questions().iter().find(|q| q.key == key).unwrap();
        let questions::Shape::Text(check) = q.shape else { panic!("{key} is not a text question") };
        let prompt = check(bad, &earlier).unwrap_err().problem(key);
        assert_eq!(file, prompt, "{key}");
    }
}

#[test]
fn answers_are_cross_checked_against_the_profile_topology() {
    let single = crate::site::profile::Profile::from_bundle_entry(
        "name: single-node\ndistribution: k3s\ntopology: single-node\ncomponents: [app]\nsizing: {cpus: 2, memory_mib: 2048, disk_gib: 20}\n",
        "single-node",
    )
    .unwrap();
    let ha_profile = crate::site::profile::Profile::from_bundle_entry(
        "name: ha\ndistribution: k3s\ntopology: ha\nha: {servers: 3, agents: false}\ncomponents: [app]\nsizing: {cpus: 2, memory_mib: 2048, disk_gib: 20}\n",
        "ha",
    )
    .unwrap();

    parse(SINGLE).unwrap().validate_against(&single).unwrap();
    let e = parse(SINGLE).unwrap().validate_against(&ha_profile).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: profile:") && e.contains("hint:"), "{e}");

    let mut as_ha = parse(&ha("{name: s1, ip: 192.0.2.11}", "")).unwrap();
    as_ha.profile = "single-node".into();
    let e = as_ha.validate_against(&single).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: ha:") && e.contains("installs a single node"), "{e}");

    let a = parse(&ha("{name: s1, ip: 192.0.2.11}", "")).unwrap();
    let e = a.validate_against(&ha_profile).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: ha.agents:") && e.contains("takes no agents"), "{e}");

    let mut no_ha = parse(SINGLE).unwrap();
    no_ha.profile = "ha".into();
    let e = no_ha.validate_against(&ha_profile).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: ha.servers: missing required key"), "{e}");

    let e = a.profile_in(std::slice::from_ref(&single)).unwrap_err().to_string();
    assert!(e.contains("`ha` is not a profile of this bundle") && e.contains("single-node"), "{e}");
}

// ---- what the bundle carries: ldap and keycloak_database -----------------------------

const LDAP: &str = "ldap: {url: \"ldaps://ldap.example.test\", bind_dn: \"cn=kc,dc=example,dc=test\", \
                    bind_password: bind-pw-0c4e, users_dn: \"ou=people,dc=example,dc=test\", preset: openldap}\n";
const DB: &str = "keycloak_database: {host: db.example.test, port: 5433, name: keycloak, username: kc, \
                  password: db-pw-7f3a91}\n";

/// A bundle with keycloakx in the `platform` component (and the app elsewhere).
fn keycloak_bundle() -> BundleFacts {
    BundleFacts {
        charts: vec![("keycloakx".into(), "platform".into()), ("airlock-app".into(), "app".into())],
        profiles: Vec::new(),
    }
}

fn parse_for(yaml: &str, bundle: &BundleFacts) -> std::result::Result<Answers, Problem> {
    let doc = strict::parse_yaml(yaml, DOC)?;
    Answers::from_answered(&questions::read_document(&doc, Some(bundle))?, "answers.yaml")
}

#[test]
fn a_bundle_with_keycloak_requires_the_ldap_section_by_name() {
    let p = parse_for(SINGLE, &keycloak_bundle()).expect_err("ldap is required");
    assert_eq!(p.key, "ldap", "{p}");
    assert!(p.cause.contains("missing required section") && p.cause.contains("keycloakx"), "{p}");
    assert!(p.hint.contains("ldap.url") && p.hint.contains(DOC), "{p}");
    assert!(parse_for(&format!("{SINGLE}{LDAP}"), &keycloak_bundle()).unwrap().ldap.is_some());
    // An ldap section started but left incomplete names the missing key instead.
    let p = parse_for(&format!("{SINGLE}ldap: {{url: \"ldaps://ldap.example.test\"}}\n"), &keycloak_bundle())
        .expect_err("incomplete");
    assert_eq!(p.key, "ldap.bind_dn", "{p}");
}

#[test]
fn ldap_stays_optional_without_keycloak_or_when_the_profile_leaves_its_component_out() {
    assert!(parse(SINGLE).unwrap().ldap.is_none(), "no bundle known: optional (install checks at plan time)");
    let app_only = BundleFacts { charts: vec![("airlock-app".into(), "app".into())], profiles: Vec::new() };
    assert!(parse_for(SINGLE, &app_only).is_ok());
    let b = BundleFacts { profiles: vec![("single-node".into(), vec!["app".into()])], ..keycloak_bundle() };
    assert!(parse_for(SINGLE, &b).is_ok(), "single-node installs only `app`, not keycloakx's `platform`");
}

#[test]
fn ha_with_keycloak_requires_an_external_database_on_the_first_server_only() {
    let first = ha("{name: s1, ip: 192.0.2.11}", LDAP).replace("  agents:\n    - {name: a1, ip: 192.0.2.21}\n", "");
    let p = parse_for(&first, &keycloak_bundle()).expect_err("HA needs a database");
    assert_eq!(p.key, "keycloak_database", "{p}");
    assert!(p.cause.contains("Keycloak in HA") && p.hint.contains("keycloak_database.host"), "{p}");

    let a = parse_for(&format!("{first}{DB}"), &keycloak_bundle()).unwrap();
    let db = a.keycloak_database.expect("the database answers");
    assert_eq!(
        (db.vendor.as_str(), db.port, db.name.as_str(), db.username.as_str()),
        ("postgres", 5433, "keycloak", "kc")
    );
    assert_eq!(db.host.to_string(), "db.example.test");
    assert_eq!(db.password.expose(), "db-pw-7f3a91");

    // A joining server does not render the platform charts: no database and no
    // directory needed there.
    let second = first.replace("node: {name: s1, ip: 192.0.2.11}", "node: {name: s2, ip: 192.0.2.12}")
        + "join: {server: 192.0.2.11, token_file: /root/cluster-token}\n";
    assert!(parse_for(&second, &keycloak_bundle()).unwrap().keycloak_database.is_none());
    let without_ldap = second.replace(LDAP, "");
    assert_ne!(without_ldap, second);
    assert!(parse_for(&without_ldap, &keycloak_bundle()).unwrap().ldap.is_none());
    // Without Keycloak in the bundle, HA needs no database either.
    let app_only = BundleFacts { charts: vec![("airlock-app".into(), "app".into())], profiles: Vec::new() };
    assert!(parse_for(&first, &app_only).is_ok());
}

#[test]
fn the_database_port_defaults_to_the_vendors_and_the_password_never_prints() {
    let a = parse(&format!("{SINGLE}keycloak_database: {{host: 192.0.2.50, vendor: mariadb, name: kc, username: kc, password: db-pw-7f3a91}}\n")).unwrap();
    let db = a.keycloak_database.clone().unwrap();
    assert_eq!((db.vendor.as_str(), db.port), ("mariadb", 3306));
    let shown = format!("{a:?}{}", serde_json::to_string(&a).unwrap());
    assert!(!shown.contains("db-pw-7f3a91") && shown.contains(REDACTED), "{shown}");
    let doc = questions::read_document(&strict::parse_yaml(&format!("{SINGLE}{DB}"), DOC).unwrap(), None).unwrap();
    assert!(!doc.to_yaml().contains("db-pw-7f3a91"), "saved answers redact it");
}

#[test]
fn bad_database_answers_name_their_key_with_a_hint() {
    let with = |kv: &str| {
        format!(
            "{SINGLE}keycloak_database: {{host: db.example.test, name: keycloak, username: kc, password: pw, {kv}}}\n"
        )
    };
    for (kv, key, cause) in [
        ("port: 70000", "keycloak_database.port", "not a TCP port"),
        ("port: \"0\"", "keycloak_database.port", "not a TCP port"),
        ("vendor: db2", "keycloak_database.vendor", "not a database Keycloak supports"),
        ("vendor: mysql, ca_file: /etc/ssl/db-ca.pem", "keycloak_database.ca_file", "postgres"),
        ("ca_file: relative/ca.pem", "keycloak_database.ca_file", "absolute"),
    ] {
        let p = problem(&with(kv));
        assert_eq!(p.key, key, "{kv}: {p}");
        assert!(p.cause.contains(cause) && !p.hint.is_empty(), "{kv}: {p}");
    }
    let p = problem(&format!(
        "{SINGLE}keycloak_database: {{host: db.example.test, name: \"kc?ssl=false\", username: kc, password: pw}}\n"
    ));
    assert_eq!(p.key, "keycloak_database.name", "{p}");
    let p = problem(&format!("{SINGLE}keycloak_database: {{host: 10.42.0.9, name: kc, username: kc, password: pw}}\n"));
    assert!(p.key == "keycloak_database.host" && p.cause.contains("cluster_cidr"), "{p}");
    let p = problem(&format!("{SINGLE}keycloak_database: {{host: db.example.test, name: kc, username: kc}}\n"));
    assert!(p.key == "keycloak_database.password" && p.cause.contains("keycloak_database.host is set"), "{p}");
    let p = problem(&format!(
        "{SINGLE}keycloak_database: {{host: db.example.test, name: kc, username: kc, password: \"<redacted>\"}}\n"
    ));
    assert_eq!(p.key, "keycloak_database.password", "{p}");
    assert!(problem(&format!("{SINGLE}keycloak_database: {{name: kc}}\n"))
        .cause
        .contains("keycloak_database.host is not"));
}

#[test]
fn saved_answers_leave_secrets_out_and_say_where_the_site_keeps_them() {
    use std::os::unix::fs::PermissionsExt;
    let yaml = format!(
        "{SINGLE}ldap: {{url: 'ldaps://ldap.example.test', bind_dn: 'cn=r,dc=example,dc=org', \
         bind_password: saved-pw-19, users_dn: 'ou=people,dc=example,dc=org', preset: openldap}}\n"
    );
    let doc = strict::parse_yaml(&yaml, DOC).unwrap();
    let answered = questions::read_document(&doc, None).unwrap();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("site.yaml");
    kept::save_answers(&file, &answered, Path::new("/mnt/target")).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("saved-pw-19"), "{text}");
    assert!(text.contains("bind_password: <redacted>"), "{text}");
    assert!(
        text.contains("#   ldap.bind_password: /mnt/target/var/lib/airlock/secrets/answers-ldap.bind_password"),
        "{text}"
    );
    assert!(text.contains("--answers /mnt/target/var/lib/airlock/answers.yaml"), "{text}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Read back: everything but the secret, which is refused as a placeholder.
    let e = Answers::load(&file).expect_err("the placeholder is refused");
    assert!(e.to_string().contains("ldap.bind_password") && e.to_string().contains("placeholder"), "{e}");
    let back = Answers::from_yaml(&text.replace("<redacted>", "saved-pw-19"), "site.yaml").unwrap();
    assert_eq!(back, Answers { origin: "site.yaml".into(), ..parse(&yaml).unwrap() });
}

#[test]
fn a_sites_kept_answers_file_is_taken_with_its_kept_secrets() {
    use crate::host::{Host, RootedHost};
    let yaml = format!(
        "{SINGLE}ldap: {{url: 'ldaps://ldap.example.test', bind_dn: 'cn=r,dc=example,dc=org', \
         bind_password: kept-pw-20, users_dn: 'ou=people,dc=example,dc=org', preset: openldap}}\n"
    );
    let d = tempfile::tempdir().unwrap();
    let host = RootedHost::new(d.path().to_path_buf(), false).unwrap();
    kept::keep(&host, &yaml, "site.yaml").unwrap();
    let kept_file = host.root().join("var/lib/airlock/answers.yaml");
    assert!(std::fs::read_to_string(&kept_file).unwrap().contains("<redacted>"));
    let a = Answers::load(&kept_file).unwrap();
    assert_eq!(a.ldap.unwrap().bind_password.expose(), "kept-pw-20");
    // Kept again from its own text (placeholders and all), the secret stays.
    let placeholders = std::fs::read_to_string(&kept_file).unwrap();
    kept::keep(&host, &placeholders, "answers.yaml").unwrap();
    assert_eq!(Answers::load(&kept_file).unwrap().ldap.unwrap().bind_password.expose(), "kept-pw-20");
    // As `upgrade --answers` of the kept file keeps it.
    kept::keep(&host, &kept::read_answers_file(&kept_file).unwrap(), "answers.yaml").unwrap();
    assert_eq!(Answers::load(&kept_file).unwrap().ldap.unwrap().bind_password.expose(), "kept-pw-20");
}

// ---- nodes: the cluster set up over SSH ---------------------------------------------

/// The first of three servers and one agent, listing the cluster in `nodes`.
fn nodes(rows: &str) -> String {
    format!(
        "profile: ha\nnode: {{name: s1, ip: 192.0.2.11}}\ncluster: {{ingress_domain: p.example.test}}\nnodes:\n{rows}"
    )
}

const NODES: &str = "  - {name: s1, address: 192.0.2.11, role: server}\n\
                     \x20 - {name: s2, address: s2.site.example, node_ip: 192.0.2.12, role: server, ssh_user: admin, ssh_port: 2222}\n\
                     \x20 - {name: s3, address: 192.0.2.13, role: server, ssh_identity_file: /root/.ssh/site, ssh_jump: \"ops@bastion.site.example:22\"}\n\
                     \x20 - {name: a1, address: 192.0.2.21, role: agent, data_dir: /srv/rancher}\n";

#[test]
fn nodes_list_the_cluster_and_imply_its_ha_members() {
    let a = parse(&nodes(NODES)).unwrap();
    assert_eq!(a.nodes.len(), 4);
    let ha = a.ha.as_ref().expect("ha derived from nodes");
    let names = |m: &[Member]| m.iter().map(|m| format!("{}={}", m.name, m.ip)).collect::<Vec<_>>();
    assert_eq!(names(&ha.servers), ["s1=192.0.2.11", "s2=192.0.2.12", "s3=192.0.2.13"]);
    assert_eq!(names(&ha.agents), ["a1=192.0.2.21"]);
    let s2 = &a.nodes[1];
    assert_eq!(s2.address, Address::Name("s2.site.example".into()));
    assert_eq!((s2.ssh.user.as_deref(), s2.ssh.port), (Some("admin"), Some(2222)));
    assert_eq!(a.nodes[2].ssh.jump.as_deref(), Some("ops@bastion.site.example:22"));
    assert_eq!(a.nodes[3].data_dir.as_deref(), Some(Path::new("/srv/rancher")));
    assert!(a.starts_cluster() && a.join.is_none() && a.cluster_init(DistributionKind::K3s));
}

#[test]
fn bad_nodes_are_named_at_the_key_with_a_hint() {
    let s1 = "  - {name: s1, address: 192.0.2.11, role: server}\n";
    let s2 = "  - {name: s2, address: 192.0.2.12, role: server}\n";
    let s3 = "  - {name: s3, address: 192.0.2.13, role: server}\n";
    for (rows, key, cause) in [
        (format!("{s2}{s1}{s3}"), "nodes[0]", "the first node is this one"),
        (format!("{s1}{s2}{s2}"), "nodes[2].name", "listed twice"),
        (format!("{s1}{s2}  - {{name: s3, address: 192.0.2.12, role: server}}\n"), "nodes[2].address", "listed twice"),
        (
            format!("{s1}{s2}  - {{name: s3, address: s2.site.example, node_ip: 192.0.2.11, role: server}}\n"),
            "nodes[2].node_ip",
            "listed twice",
        ),
        (format!("{s1}{s2}"), "nodes", "lists 2 servers"),
        (format!("{s1}{s2}{s3}  - {{name: s4, address: 192.0.2.14, role: server}}\n"), "nodes", "odd number"),
        (
            format!("{s1}{s2}  - {{name: s3, address: s3.site.example, role: server}}\n"),
            "nodes[2].node_ip",
            "is a name",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: \"-oProxyCommand=x\", role: server}}\n"),
            "nodes[2].address",
            "starts with `-`",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: server, ssh_port: 0}}\n"),
            "nodes[2].ssh_port",
            "not a port",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: server, ssh_user: \"a b\"}}\n"),
            "nodes[2].ssh_user",
            "holds a space",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: server, ssh_identity_file: id}}\n"),
            "nodes[2].ssh_identity_file",
            "absolute",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: server, ssh_jump: \"-J\"}}\n"),
            "nodes[2].ssh_jump",
            "starts with `-`",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: server, data_dir: /tmp/x}}\n"),
            "nodes[2].data_dir",
            "not a place",
        ),
        (
            format!("{s1}{s2}  - {{name: s3, address: 10.42.0.7, role: server}}\n"),
            "nodes[2].address",
            "inside cluster.cluster_cidr",
        ),
        (format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13, role: king}}\n"), "nodes[2].role", "not a role"),
        (format!("{s1}{s2}  - {{name: s3, address: 192.0.2.13}}\n"), "nodes[2].role", "missing"),
    ] {
        let p = problem(&nodes(&rows));
        assert_eq!(p.key, key, "{rows}: {p}");
        assert!(p.cause.contains(cause), "{rows}: {p}");
        assert!(!p.hint.is_empty(), "{p}");
    }
    // One list of members: `ha` beside `nodes` is refused at `ha`.
    let p = problem(&format!("{}ha: {{servers: [{{name: s1, ip: 192.0.2.11}}]}}\n", nodes(NODES)));
    assert_eq!(p.key, "ha.servers", "{p}");
    // An agent does not set up the cluster.
    let agent =
        nodes(NODES).replace("node: {name: s1, ip: 192.0.2.11}", "node: {name: a1, ip: 192.0.2.21, role: agent}");
    let p = problem(&agent);
    assert!(p.key == "nodes" && p.cause.contains("agent"), "{p}");
}

#[test]
fn nodes_are_cross_checked_against_the_profile_topology() {
    let profile = |topology: &str| {
        crate::site::profile::Profile::from_bundle_entry(
            &format!("name: ha\ndistribution: k3s\n{topology}components: [app]\nsizing: {{cpus: 2, memory_mib: 2048, disk_gib: 20}}\n"),
            "ha",
        )
        .unwrap()
    };
    let a = parse(&nodes(NODES)).unwrap();
    a.validate_against(&profile("topology: ha\n")).unwrap();
    let e = a.validate_against(&profile("topology: ha\nha: {servers: 3, agents: false}\n")).unwrap_err().to_string();
    assert!(e.contains("nodes[3].role:") && e.contains("takes no agents") && e.contains("hint:"), "{e}");
    let e = a.validate_against(&profile("topology: ha\nha: {servers: 5}\n")).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: nodes:") && e.contains("installs 5"), "{e}");
    let e = a.validate_against(&profile("topology: single-node\n")).unwrap_err().to_string();
    assert!(e.contains("answers.yaml: nodes:") && e.contains("single node"), "{e}");
}

#[test]
fn the_schema_takes_nodes_with_optional_ssh_settings_and_refuses_unknown_cells() {
    assert_schema_accepts(&nodes(NODES));
    let v = jsonschema::validator_for(&schema::json_schema()).unwrap();
    let bad = nodes("  - {name: s1, address: 192.0.2.11, role: server, password: x}\n");
    let doc: serde_json::Value = serde_yaml::from_str(&bad).unwrap();
    assert!(!v.is_valid(&doc));
    assert!(parse(&bad).is_err());
}

#[test]
fn backup_recipients_and_rpo_are_read_and_a_secret_key_is_refused_without_echo() {
    let public = "age1archcuyj8umtrt3375rzy6ajw0e3ue4l95esxeepj70q2v59hfpqw3ymhq";
    let a = parse(&format!("{SINGLE}backup:\n  recipients: [{public}]\n  rpo: 24h\n")).unwrap();
    assert_eq!(a.backup.recipients, vec![public.to_string()]);
    assert_eq!(a.backup.rpo_secs, Some(86_400));
    assert!(parse(SINGLE).unwrap().backup.is_empty());

    let p = problem(&format!("{SINGLE}backup:\n  rpo: soon\n"));
    assert_eq!(p.key, "backup.rpo");
    let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
    let p = problem(&format!("{SINGLE}backup:\n  recipients: [{secret}]\n"));
    assert!(p.key.starts_with("backup.recipients"), "{}", p.key);
    assert!(!format!("{} {}", p.cause, p.hint).contains(&secret[15..]), "{p:?}");
}
