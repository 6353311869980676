//! Unit tests of the renderers: keys per role and distribution, the inline/static
//! choice, and every validation error. The whole layouts are pinned by the golden files
//! (`installer/tests/distribution_golden.rs`).

use std::path::Path;

use airlock_format::error::ErrorKind;
use serde_yaml::Value;

use super::*;
use crate::engine::layout::FileSource;

const TOKEN: &str = "K10-unit-token::server:abc";

fn gz(len: usize) -> Vec<u8> {
    let mut v = vec![0x1f, 0x8b];
    v.resize(len.max(2), 0);
    v
}

fn chart(name: &str, len: usize) -> ChartInput {
    ChartInput {
        name: name.into(),
        version: "1.0.0".into(),
        namespace: "apps".into(),
        entry: format!("charts/{name}-1.0.0.tgz"),
        tgz: gz(len),
        values_yaml: "a: 1\n".into(),
        values_secret: false,
    }
}

fn rke2_tarball(cis_file: bool) -> Vec<TarballEntry> {
    let file = |p: &str, executable| TarballEntry { path: p.into(), kind: TarballEntryKind::File { executable } };
    let mut v = vec![
        TarballEntry { path: "bin".into(), kind: TarballEntryKind::Dir },
        file("bin/rke2", true),
        file("bin/rke2-killall.sh", true),
        file("bin/rke2-uninstall.sh", true),
        file("lib/systemd/system/rke2-agent.service", false),
        file("lib/systemd/system/rke2-server.service", false),
    ];
    if cis_file {
        v.push(file("share/rke2/rke2-cis-sysctl.conf", false));
    }
    v
}

fn k3s(role: Role) -> DistributionInput {
    DistributionInput {
        version: "v1.31.4+k3s1".into(),
        role,
        node_name: "node-1".into(),
        node_ip: vec!["10.0.0.11".parse().unwrap()],
        tls_san: vec![],
        token: Token::new(TOKEN),
        cluster_cidr: vec!["10.42.0.0/16".parse().unwrap()],
        service_cidr: vec!["10.43.0.0/16".parse().unwrap()],
        cluster_dns: Some("10.43.0.10".parse().unwrap()),
        disable: vec![],
        embedded_registry: false,
        secrets_encryption: false,
        cis: false,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::K3s { binary: "distribution/k3s".into(), images: vec![] },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts: vec![chart("app", 100)],
        proxy_env: vec![],
        rke2_opt_prefix: None,
    }
}

fn rke2(role: Role) -> DistributionInput {
    let mut i = k3s(role);
    i.artifacts = Artifacts::Rke2 { tarball: rke2_tarball(true), images: vec![] };
    i
}

fn inline(layout: &Layout, path: &str) -> Option<String> {
    layout.files.iter().find(|f| f.path == Path::new(path)).map(|f| match &f.source {
        FileSource::Inline(b) => String::from_utf8(b.clone()).unwrap(),
        FileSource::Staged(e) => panic!("{path} is staged from {e}"),
    })
}

fn config(input: &DistributionInput) -> serde_yaml::Mapping {
    let layout = render(input).unwrap();
    let path = format!("{}/config.yaml", config_dir(input.kind()));
    match serde_yaml::from_str(&inline(&layout, &path).unwrap()).unwrap() {
        Value::Mapping(m) => m,
        other => panic!("config is {other:?}"),
    }
}

fn get<'a>(m: &'a serde_yaml::Mapping, key: &str) -> Option<&'a Value> {
    m.get(Value::String(key.into()))
}

fn err(input: &DistributionInput) -> airlock_format::error::Error {
    render(input).expect_err("the input must be refused")
}

#[test]
fn token_never_formats() {
    let t = Token::new("s3cret");
    assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <redacted>");
    let input = k3s(Role::SingleServer);
    assert!(!format!("{input:?}").contains(TOKEN));
}

#[test]
fn k3s_keys_per_role() {
    let single = config(&k3s(Role::SingleServer));
    assert_eq!(get(&single, "token").and_then(Value::as_str), Some(TOKEN));
    assert!(get(&single, "cluster-init").is_none(), "a single server keeps SQLite");
    assert!(get(&single, "server").is_none());
    assert_eq!(get(&single, "disable-default-registry-endpoint"), Some(&Value::Bool(true)));
    assert_eq!(get(&single, "write-kubeconfig-mode").and_then(Value::as_str), Some("0600"));
    assert!(get(&single, "data-dir").is_none(), "the default data dir is not written");

    let first = config(&k3s(Role::FirstServer));
    assert_eq!(get(&first, "cluster-init"), Some(&Value::Bool(true)));

    let join = config(&k3s(Role::JoinServer { server: "10.0.0.11".into() }));
    assert!(get(&join, "cluster-init").is_none());
    assert_eq!(get(&join, "server").and_then(Value::as_str), Some("https://10.0.0.11:6443"));

    let mut agent_input = k3s(Role::Agent { server: "fd00::1".into() });
    agent_input.disable = vec!["traefik".into()];
    agent_input.tls_san = vec!["x.example".into()];
    agent_input.embedded_registry = true;
    agent_input.secrets_encryption = true;
    let agent = config(&agent_input);
    assert_eq!(get(&agent, "server").and_then(Value::as_str), Some("https://[fd00::1]:6443"));
    for server_only in [
        "disable",
        "tls-san",
        "cluster-cidr",
        "service-cidr",
        "cluster-dns",
        "embedded-registry",
        "secrets-encryption",
        "write-kubeconfig-mode",
    ] {
        assert!(get(&agent, server_only).is_none(), "agents get no `{server_only}`");
    }
    assert_eq!(get(&agent, "disable-default-registry-endpoint"), Some(&Value::Bool(true)));
}

#[test]
fn secrets_encryption_is_written_for_k3s_servers_and_left_to_rke2s_default() {
    let mut input = k3s(Role::SingleServer);
    assert!(get(&config(&input), "secrets-encryption").is_none());
    input.secrets_encryption = true;
    assert_eq!(get(&config(&input), "secrets-encryption"), Some(&Value::Bool(true)));
    let mut r = rke2(Role::SingleServer);
    r.secrets_encryption = true;
    assert!(get(&config(&r), "secrets-encryption").is_none(), "RKE2 encrypts Secrets by default");
}

#[test]
fn rke2_never_cluster_init_and_joins_on_9345() {
    for role in [Role::SingleServer, Role::FirstServer] {
        assert!(get(&config(&rke2(role)), "cluster-init").is_none());
    }
    let join = config(&rke2(Role::JoinServer { server: "s1.example".into() }));
    assert_eq!(get(&join, "server").and_then(Value::as_str), Some("https://s1.example:9345"));
    let mut cis = rke2(Role::SingleServer);
    cis.cis = true;
    assert_eq!(get(&config(&cis), "profile").and_then(Value::as_str), Some("cis"));
    let layout = render(&cis).unwrap();
    assert_eq!(layout.users.len(), 1);
    assert_eq!(layout.users[0].name, "etcd");
    let sysctl = layout.files.iter().find(|f| f.path == Path::new("/etc/sysctl.d/60-rke2-cis.conf")).unwrap();
    assert_eq!(sysctl.source, FileSource::Staged("unpacked/rke2/share/rke2/rke2-cis-sysctl.conf".into()));
    assert_eq!(layout.units, ["rke2-server.service"]);
    assert!(render(&rke2(Role::SingleServer)).unwrap().users.is_empty(), "no etcd user without CIS");
}

#[test]
fn token_with_yaml_syntax_survives() {
    let mut input = k3s(Role::SingleServer);
    input.token = Token::new("a:#b'\"c{d}");
    assert_eq!(get(&config(&input), "token").and_then(Value::as_str), Some("a:#b'\"c{d}"));
}

#[test]
fn custom_data_dir_moves_everything() {
    let mut input = k3s(Role::SingleServer);
    input.data_dir = Some("/srv/k3s".into());
    assert_eq!(get(&config(&input), "data-dir").and_then(Value::as_str), Some("/srv/k3s"));
    let layout = render(&input).unwrap();
    assert!(layout.files.iter().any(|f| f.path == Path::new("/srv/k3s/agent/images/airlock-images.tar")));
    assert!(layout.files.iter().any(|f| f.path == Path::new("/srv/k3s/server/manifests/airlock-app.yaml")));
    assert!(!layout.dirs.iter().any(|d| d.path == Path::new("/var/lib/rancher")));
    assert!(inline(&layout, "/usr/local/bin/k3s-killall.sh").unwrap().contains("data_dir='/srv/k3s'"));
}

#[test]
fn chart_inline_up_to_the_limit_then_static() {
    let mut input = k3s(Role::SingleServer);
    input.charts = vec![chart("small", CHART_CONTENT_LIMIT), chart("big", CHART_CONTENT_LIMIT + 1)];
    let layout = render(&input).unwrap();
    let small = inline(&layout, "/var/lib/rancher/k3s/server/manifests/airlock-small.yaml").unwrap();
    assert!(small.contains("chartContent: H4s") && !small.contains("\n  chart:"));
    let big = inline(&layout, "/var/lib/rancher/k3s/server/manifests/airlock-big.yaml").unwrap();
    assert!(big.contains("chart: https://%{KUBERNETES_API}%/static/charts/big-1.0.0.tgz"));
    assert!(!big.contains("chartContent"));
    let archive = layout.files.iter().find(|f| f.path.ends_with("server/static/charts/big-1.0.0.tgz")).unwrap();
    assert_eq!(archive.source, FileSource::Staged("charts/big-1.0.0.tgz".into()));
    for text in [&small, &big] {
        assert!(text.contains("failurePolicy: abort") && text.contains("createNamespace: true"));
        assert!(!text.contains("repo:"), "offline: no repo");
    }
}

#[test]
fn secret_values_make_a_secret_manifest() {
    let mut input = k3s(Role::SingleServer);
    input.charts[0].values_secret = true;
    let layout = render(&input).unwrap();
    let f = layout.files.iter().find(|f| f.path.ends_with("airlock-app.yaml")).unwrap();
    assert!(f.secret && f.mode == 0o600);
}

#[test]
fn agents_get_no_manifests_but_registries() {
    let mut input = k3s(Role::Agent { server: "s1".into() });
    input.embedded_registry = true;
    let layout = render(&input).unwrap();
    assert!(!layout.files.iter().any(|f| f.path.starts_with("/var/lib/rancher/k3s/server")));
    assert!(!layout.dirs.iter().any(|d| d.path.starts_with("/var/lib/rancher/k3s/server")));
    assert_eq!(layout.units, ["k3s-agent.service"]);
    let unit = inline(&layout, "/etc/systemd/system/k3s-agent.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/k3s agent\n"));
    assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env\n"));
    // The embedded registry needs the `"*"` mirror on every node, agents included.
    let registries = inline(&layout, "/etc/rancher/k3s/registries.yaml").unwrap();
    assert!(registries.contains("'*': {}"));
    assert!(!registries.contains("configs"));
}

#[test]
fn no_registries_file_without_mirror_or_embedded_registry() {
    let layout = render(&k3s(Role::SingleServer)).unwrap();
    assert!(inline(&layout, "/etc/rancher/k3s/registries.yaml").is_none());
}

#[test]
fn registries_point_every_registry_at_the_mirror_with_its_ca() {
    let mut input = k3s(Role::SingleServer);
    input.registry_mirror = Some(RegistryMirror {
        endpoint: "registry.example:5000".into(),
        ca_file: "/etc/airlock/pki/ca.crt".into(),
        registries: vec!["docker.io".into(), "ghcr.io".into()],
        auth: None,
        pushed: None,
    });
    let text = inline(&render(&input).unwrap(), "/etc/rancher/k3s/registries.yaml").unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    for r in ["docker.io", "ghcr.io"] {
        assert_eq!(doc["mirrors"][r]["endpoint"][0].as_str(), Some("https://registry.example:5000"));
    }
    assert!(doc["mirrors"]["*"].as_mapping().unwrap().is_empty());
    assert_eq!(doc["configs"]["registry.example:5000"]["tls"]["ca_file"].as_str(), Some("/etc/airlock/pki/ca.crt"));
    let tls = doc["configs"]["registry.example:5000"]["tls"].as_mapping().unwrap();
    assert_eq!(tls.len(), 1, "only the CA: no client cert_file/key_file (k3s#1148)");
    assert!(doc["configs"]["registry.example:5000"]["auth"].is_null());
}

#[test]
fn mirror_credentials_go_into_registries_yaml_as_a_secret_file() {
    let mut input = k3s(Role::SingleServer);
    input.registry_mirror = Some(RegistryMirror {
        endpoint: "registry.example:5000".into(),
        ca_file: "/etc/airlock/pki/ca.crt".into(),
        registries: vec!["docker.io".into()],
        auth: Some(("puller".into(), crate::site::answers::Secret::new("m1rr0r-pw".to_string()))),
        pushed: None,
    });
    let layout = render(&input).unwrap();
    let text = inline(&layout, "/etc/rancher/k3s/registries.yaml").unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let auth = &doc["configs"]["registry.example:5000"]["auth"];
    assert_eq!((auth["username"].as_str(), auth["password"].as_str()), (Some("puller"), Some("m1rr0r-pw")));
    let file = layout.files.iter().find(|f| f.path.ends_with("registries.yaml")).unwrap();
    assert!(file.secret && file.mode == 0o600);
    assert!(!serde_json::to_string(&layout).unwrap().contains("m1rr0r-pw"), "the plan shows no content");
    assert!(!format!("{input:?}").contains("m1rr0r-pw"));
}

fn pushed_mirror(archive_too: bool) -> RegistryMirror {
    RegistryMirror {
        endpoint: "harbor.example:8443".into(),
        ca_file: "/etc/pki/site-ca.pem".into(),
        registries: vec!["docker.io".into(), "quay.io".into(), "registry.example:5000".into()],
        auth: Some(("puller".into(), crate::site::answers::Secret::new("pull-pw".to_string()))),
        pushed: Some(super::PushedImages { prefix: "platform".into(), archive_too }),
    }
}

#[test]
fn site_registry_rewrites_every_upstream_to_its_pushed_root() {
    let mut input = k3s(Role::SingleServer);
    input.registry_mirror = Some(pushed_mirror(false));
    let text = inline(&render(&input).unwrap(), "/etc/rancher/k3s/registries.yaml").unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    for (upstream, root) in [
        ("docker.io", "platform/docker.io"),
        ("quay.io", "platform/quay.io"),
        ("registry.example:5000", "platform/registry.example_5000"),
    ] {
        let m = &doc["mirrors"][upstream];
        assert_eq!(m["endpoint"].as_sequence().unwrap().len(), 1, "{upstream}: the site registry only");
        assert_eq!(m["endpoint"][0].as_str(), Some("https://harbor.example:8443"));
        let rewrite = m["rewrite"].as_mapping().unwrap();
        assert_eq!(rewrite.len(), 1);
        assert_eq!(m["rewrite"]["^(.*)$"].as_str(), Some(format!("{root}/$1").as_str()), "{upstream}");
    }
    let config = &doc["configs"]["harbor.example:8443"];
    assert_eq!(config["tls"]["ca_file"].as_str(), Some("/etc/pki/site-ca.pem"));
    assert_eq!(config["auth"]["username"].as_str(), Some("puller"));
    assert!(text.contains("nothing is pulled from the upstreams"), "{text}");
    // No fallback to the public endpoints.
    let config_yaml = inline(&render(&input).unwrap(), "/etc/rancher/k3s/config.yaml").unwrap();
    assert!(config_yaml.contains("disable-default-registry-endpoint: true"));
}

#[test]
fn the_image_archive_is_left_out_only_when_the_site_registry_alone_serves_the_images() {
    let archive = |mirror: Option<RegistryMirror>| {
        let mut input = k3s(Role::SingleServer);
        input.registry_mirror = mirror;
        let layout = render(&input).unwrap();
        layout.files.iter().any(|f| f.path.ends_with("agent/images/airlock-images.tar"))
    };
    assert!(archive(None));
    assert!(archive(Some(pushed_mirror(true))), "delivery: both");
    assert!(!archive(Some(pushed_mirror(false))), "delivery: registry");
    let mut plain = pushed_mirror(false);
    plain.pushed = None;
    assert!(archive(Some(plain)), "a mirror with upstream paths");
}

#[test]
fn a_pushed_prefix_that_is_no_repository_path_is_refused() {
    let mut input = k3s(Role::SingleServer);
    let mut m = pushed_mirror(false);
    m.pushed.as_mut().unwrap().prefix = "Platform/".into();
    input.registry_mirror = Some(m);
    let e = render(&input).unwrap_err().to_string();
    assert!(e.contains("registry prefix `Platform/`"), "{e}");
}

#[test]
fn k3s_unit_has_install_sh_settings() {
    let layout = render(&k3s(Role::SingleServer)).unwrap();
    let unit = inline(&layout, "/etc/systemd/system/k3s.service").unwrap();
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "LimitNPROC=infinity",
        "LimitCORE=infinity",
        "TasksMax=infinity",
        "TimeoutStartSec=0",
        "Restart=always",
        "RestartSec=5s",
        "ExecStartPre=-/sbin/modprobe br_netfilter",
        "ExecStartPre=-/sbin/modprobe overlay",
        "EnvironmentFile=-/etc/systemd/system/k3s.service.env",
        "ExecStart=/usr/local/bin/k3s server",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
    let env = layout.files.iter().find(|f| f.path == Path::new("/etc/systemd/system/k3s.service.env")).unwrap();
    assert_eq!(env.mode, 0o600);
    let links: Vec<_> = layout.links.iter().map(|l| (l.link.display().to_string(), l.target.clone())).collect();
    for tool in ["kubectl", "crictl", "ctr"] {
        assert!(links.contains(&(format!("/usr/local/bin/{tool}"), "k3s".into())));
    }
}

#[test]
fn link_targets_stay_inside() {
    assert!(rke2::check_link_target("bin/kubectl", "rke2").is_ok());
    assert!(rke2::check_link_target("share/rke2/x", "../../bin/rke2").is_ok());
    assert!(rke2::check_link_target("bin/x", "../../etc/passwd").is_err());
    assert!(rke2::check_link_target("bin/x", "/etc/passwd").is_err());
    assert!(rke2::check_link_target("bin/x", "..").is_err());
}

/// Each case: what to change, and a word the error must contain.
#[test]
fn invalid_input_is_refused_with_the_reason() {
    type Edit = Box<dyn Fn(&mut DistributionInput)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("node name", Box::new(|i| i.node_name = "Node_1".into()), "node name"),
        ("empty token", Box::new(|i| i.token = Token::new("")), "token"),
        ("token newline", Box::new(|i| i.token = Token::new("a\nb")), "token"),
        ("server scheme", Box::new(|i| i.role = Role::Agent { server: "https://s1:6443".into() }), "without scheme"),
        ("server port", Box::new(|i| i.role = Role::JoinServer { server: "s1:6443".into() }), "without scheme"),
        ("dns outside", Box::new(|i| i.cluster_dns = Some("10.99.0.10".parse().unwrap())), "service network"),
        ("disable typo", Box::new(|i| i.disable = vec!["traefk".into()]), "no such component"),
        ("cis on k3s", Box::new(|i| i.cis = true), "RKE2 feature"),
        ("data dir", Box::new(|i| i.data_dir = Some("var/lib/x".into())), "absolute"),
        ("data dir dots", Box::new(|i| i.data_dir = Some("/var/../x".into())), "absolute"),
        ("archive name", Box::new(|i| i.image_archive_entry = "images/list.txt".into()), "imports"),
        ("archive dotfile", Box::new(|i| i.image_archive_entry = "images/.x.tar".into()), "imports"),
        (
            "duplicate image",
            Box::new(|i| {
                i.artifacts = Artifacts::K3s {
                    binary: "distribution/k3s".into(),
                    images: vec!["distribution/airlock-images.tar".into()],
                }
            }),
            "second file",
        ),
        ("chart name", Box::new(|i| i.charts[0].name = "My_App".into()), "release name"),
        ("chart twice", Box::new(|i| i.charts.push(chart("app", 10))), "unique"),
        ("chart not gzip", Box::new(|i| i.charts[0].tgz = b"PK\x03\x04".to_vec()), "gzip"),
        ("chart values", Box::new(|i| i.charts[0].values_yaml = "a: [1".into()), "valid YAML"),
        ("chart values list", Box::new(|i| i.charts[0].values_yaml = "- 1\n".into()), "mapping"),
        ("chart namespace", Box::new(|i| i.charts[0].namespace = "Apps".into()), "namespace"),
        ("chart entry", Box::new(|i| i.charts[0].entry = "../x.tgz".into()), "staged entry"),
        (
            "mirror key as CA",
            Box::new(|i| {
                i.registry_mirror = Some(RegistryMirror {
                    endpoint: "registry.example:5000".into(),
                    ca_file: "/etc/airlock/pki/client.key".into(),
                    registries: vec!["docker.io".into()],
                    auth: None,
                    pushed: None,
                })
            }),
            "private key",
        ),
        (
            "mirror scheme",
            Box::new(|i| {
                i.registry_mirror = Some(RegistryMirror {
                    endpoint: "https://registry.example:5000".into(),
                    ca_file: "/etc/airlock/pki/ca.crt".into(),
                    registries: vec!["docker.io".into()],
                    auth: None,
                    pushed: None,
                })
            }),
            "host:port",
        ),
        (
            "mirror nothing",
            Box::new(|i| {
                i.registry_mirror = Some(RegistryMirror {
                    endpoint: "registry.example:5000".into(),
                    ca_file: "/etc/airlock/pki/ca.crt".into(),
                    registries: vec![],
                    auth: None,
                    pushed: None,
                })
            }),
            "no registries",
        ),
    ];
    for (name, edit, word) in cases {
        let mut input = k3s(Role::SingleServer);
        edit(&mut input);
        let e = err(&input);
        assert_eq!(e.kind, ErrorKind::Input, "{name}: {e}");
        let text = format!("{e}");
        assert!(text.contains(word), "{name}: `{text}` does not say `{word}`");
        assert!(!text.contains(TOKEN), "{name}: the token is in the error");
    }
}

#[test]
fn rke2_input_errors() {
    let mut disable = rke2(Role::SingleServer);
    disable.disable = vec!["traefik".into()];
    assert!(err(&disable).to_string().contains("no such component"));

    let mut no_sysctl = rke2(Role::SingleServer);
    no_sysctl.cis = true;
    no_sysctl.artifacts = Artifacts::Rke2 { tarball: rke2_tarball(false), images: vec![] };
    assert!(err(&no_sysctl).to_string().contains("rke2-cis-sysctl.conf"));

    let mut no_binary = rke2(Role::SingleServer);
    no_binary.artifacts = Artifacts::Rke2 {
        tarball: rke2_tarball(true).into_iter().filter(|e| e.path != "bin/rke2").collect(),
        images: vec![],
    };
    assert!(err(&no_binary).to_string().contains("bin/rke2"));

    let mut escape = rke2(Role::SingleServer);
    let mut tarball = rke2_tarball(true);
    tarball.push(TarballEntry {
        path: "bin/evil".into(),
        kind: TarballEntryKind::Symlink { target: "../../../etc/shadow".into() },
    });
    escape.artifacts = Artifacts::Rke2 { tarball, images: vec![] };
    assert_eq!(err(&escape).kind, ErrorKind::Unsafe);
}

#[test]
fn distribution_proxy_settings_land_in_the_service_env_file_secret_when_they_hold_credentials() {
    let mut plain = k3s(Role::SingleServer);
    plain.proxy_env = vec![
        ("HTTPS_PROXY".into(), Secret::new("http://proxy.example.internal:3128")),
        ("NO_PROXY".into(), Secret::new("127.0.0.1,localhost,.svc,10.42.0.0/16")),
    ];
    let layout = render(&plain).unwrap();
    let env = layout.files.iter().find(|f| f.path == Path::new("/etc/systemd/system/k3s.service.env")).unwrap();
    assert!(!env.secret && env.mode == 0o600);
    let text = inline(&layout, "/etc/systemd/system/k3s.service.env").unwrap();
    assert!(text.contains("\nHTTPS_PROXY=http://proxy.example.internal:3128\nNO_PROXY=127.0.0.1,localhost"), "{text}");

    let mut with_password = rke2(Role::SingleServer);
    with_password.proxy_env = vec![("HTTP_PROXY".into(), Secret::new("http://svc-proxy:S3cr3t-pw@proxy:3128"))];
    let layout = render(&with_password).unwrap();
    let env = layout.files.iter().find(|f| f.path == Path::new("/etc/default/rke2-server")).expect("RKE2's env file");
    assert!(env.secret, "a proxy password makes the env file a secret file");
    assert!(!format!("{with_password:?}").contains("S3cr3t-pw"));

    assert!(render(&rke2(Role::SingleServer)).unwrap().files.iter().all(|f| !f.path.starts_with("/etc/default")));
    let mut bad = k3s(Role::SingleServer);
    bad.proxy_env = vec![("HTTP_PROXY".into(), Secret::new("http://a b"))];
    assert_eq!(err(&bad).kind, ErrorKind::Input);
}

#[test]
fn distribution_rke2_goes_under_opt_rke2_with_units_in_etc_when_usr_local_is_unfit() {
    let unit =
        "[Service]\nEnvironmentFile=-/usr/local/lib/systemd/system/%N.env\nExecStart=/usr/local/bin/rke2 server\n";
    let mut input = rke2(Role::SingleServer);
    input.rke2_opt_prefix = Some(
        [
            (
                "bin/rke2-uninstall.sh".to_string(),
                "#!/bin/sh\nrm -f /usr/local/bin/rke2 /usr/local/bin/rke2-killall.sh\n".to_string(),
            ),
            ("lib/systemd/system/rke2-server.service".to_string(), unit.to_string()),
            ("lib/systemd/system/rke2-agent.service".to_string(), unit.replace("server", "agent")),
        ]
        .into_iter()
        .collect(),
    );
    let layout = render(&input).unwrap();
    let server = inline(&layout, "/etc/systemd/system/rke2-server.service").expect("the unit moved to /etc");
    assert_eq!(
        server,
        "[Service]\nEnvironmentFile=-/opt/rke2/lib/systemd/system/%N.env\nExecStart=/opt/rke2/bin/rke2 server\n"
    );
    // sed without `g`: only the first /usr/local of a line, as install.sh leaves it.
    let uninstall = inline(&layout, "/opt/rke2/bin/rke2-uninstall.sh").unwrap();
    assert_eq!(uninstall, "#!/bin/sh\nrm -f /opt/rke2/bin/rke2 /usr/local/bin/rke2-killall.sh\n");
    assert!(layout.files.iter().any(|f| f.path == Path::new("/opt/rke2/bin/rke2")));
    assert!(layout.files.iter().all(|f| !f.path.starts_with("/usr/local")), "nothing under /usr/local");
    assert!(!layout.files.iter().any(|f| f.path == Path::new("/opt/rke2/lib/systemd/system/rke2-server.service")));

    input.rke2_opt_prefix = Some(Default::default());
    assert!(err(&input).to_string().contains("needed to install under /opt/rke2"));
}

#[test]
fn distribution_uninstall_script_never_puts_the_site_key_on_a_command_line() {
    // Arguments of a running command are readable by every local user (ps, /proc);
    // the key is only ever handled by the shell itself and fed to sha256sum on stdin.
    let script = scripts::k3s_uninstall(&k3s(Role::SingleServer));
    assert!(!script.contains("openssl"), "{script}");
    for line in script.lines().filter(|l| l.contains("$key") || l.contains("$ipad") || l.contains("$opad")) {
        let l = line.trim();
        let shell_only = l.starts_with("key=")
            || l.starts_with("k=$key")
            || l.starts_with("case \"$key\"")
            || l.starts_with("[ \"${#key}\"")
            || l.starts_with("if [ -n \"$key\" ]")
            || l.starts_with("inner=$({ printf \"$ipad\"")
            || l.starts_with("{ printf \"$opad\"");
        assert!(shell_only, "the key reaches something else than the shell: {l}");
    }
}
