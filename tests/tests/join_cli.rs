//! `airlock join` through the real binary: the first server of the demo's HA profile
//! is installed into one target root, then a second server and an agent join from the
//! same bundle with the token file the first server wrote.

use std::path::{Path, PathBuf};
use std::process::Output;

use airlock_tests::airlock_with_answers;
use airlock_tests::{build_demo_bundle, build_demo_bundle_without};

const CLUSTER: &str = "profile: ha
cluster:
  ingress_domain: platform.example.test
ha:
  servers:
    - {name: s1, ip: 192.0.2.11}
    - {name: s2, ip: 192.0.2.12}
    - {name: s3, ip: 192.0.2.13}
  agents:
    - {name: w1, ip: 192.0.2.21}
";

fn answers(dir: &Path, node: &str, ip: &str, role: &str, join: bool) -> PathBuf {
    let mut text = format!("{CLUSTER}node:\n  name: {node}\n  ip: {ip}\n  role: {role}\n");
    if join {
        text.push_str("join:\n  server: 192.0.2.11\n  token_file: /etc/airlock/join-token\n");
    }
    let path = dir.join(format!("{node}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn airlock(cmd: &str, bundle: &Path, answers: &Path, root: &Path, extra: &[&str]) -> Output {
    std::fs::create_dir_all(root).unwrap();
    airlock_with_answers(cmd, bundle, answers, root, extra)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn config(root: &Path) -> serde_yaml::Mapping {
    serde_yaml::from_str(&std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap()).unwrap()
}

fn get<'a>(m: &'a serde_yaml::Mapping, k: &str) -> Option<&'a serde_yaml::Value> {
    m.get(serde_yaml::Value::String(k.into()))
}

#[test]
fn servers_and_agents_join_the_first_server_with_its_token_file() {
    let d = tempfile::tempdir().unwrap();
    // Without Keycloak: it refuses HA without an external database, which the answers
    // cannot name yet; joining is what this test is about.
    let b = build_demo_bundle_without(d.path(), &["keycloakx"]);

    let s1 = d.path().join("s1");
    let o = airlock("install", &b, &answers(d.path(), "s1", "192.0.2.11", "server", false), &s1, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let c1 = config(&s1);
    assert_eq!(get(&c1, "cluster-init"), Some(&serde_yaml::Value::Bool(true)));
    let token = std::fs::read_to_string(s1.join("var/lib/airlock/secrets/cluster-token")).unwrap();

    // The operator copies the token file to the next node.
    let s2 = d.path().join("s2");
    let s2_answers = answers(d.path(), "s2", "192.0.2.12", "server", false);
    let missing = airlock("join", &b, &s2_answers, &s2, &["--yes", "--server", "192.0.2.11"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("/etc/airlock/join-token") && text(&missing).contains("hint:"),
        "{}",
        text(&missing)
    );
    std::fs::create_dir_all(s2.join("etc/airlock")).unwrap();
    std::fs::write(s2.join("etc/airlock/join-token"), &token).unwrap();
    let o = airlock("join", &b, &s2_answers, &s2, &["--yes", "--server", "192.0.2.11"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(token.trim()), "the token leaked");
    let c2 = config(&s2);
    assert_eq!(get(&c2, "server").and_then(|v| v.as_str()), Some("https://192.0.2.11:6443"));
    assert_eq!(get(&c2, "token").and_then(|v| v.as_str()), Some(token.trim()));
    assert!(get(&c2, "cluster-init").is_none(), "only the first server starts the cluster");
    assert!(s2.join("var/lib/rancher/k3s/server/manifests").is_dir(), "every server gets the manifests");
    // The first server renders the platform's charts (MinIO distributed over the three
    // servers); a joining server has neither the PKI nor the credentials and leaves
    // them alone: K3s applies every server's manifests, and empty values would win.
    let m1 = s1.join("var/lib/rancher/k3s/server/manifests");
    let minio = std::fs::read_to_string(m1.join("airlock-minio.yaml")).unwrap();
    assert!(minio.contains("mode: distributed"), "{minio}");
    assert!(m1.join("airlock-minio-secret-minio-tls.yaml").is_file());
    let m2 = s2.join("var/lib/rancher/k3s/server/manifests");
    for f in ["airlock-minio.yaml", "airlock-airlock-app.yaml", "airlock-minio-secret-minio-tls.yaml"] {
        assert!(!m2.join(f).exists(), "{f} on a joining server");
    }
    assert!(m2.join("airlock-notes.yaml").is_file(), "other charts are on every server");
    assert!(!s2.join("var/lib/airlock/report.json").exists());
    assert!(s2.join("etc/systemd/system/multi-user.target.wants/k3s.service").symlink_metadata().is_ok());

    // An agent, its join taken from the answers file.
    let w1 = d.path().join("w1");
    std::fs::create_dir_all(w1.join("etc/airlock")).unwrap();
    std::fs::write(w1.join("etc/airlock/join-token"), &token).unwrap();
    let o = airlock("join", &b, &answers(d.path(), "w1", "192.0.2.21", "agent", true), &w1, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(w1.join("etc/systemd/system/multi-user.target.wants/k3s-agent.service").symlink_metadata().is_ok());
    assert!(!w1.join("var/lib/rancher/k3s/server").exists(), "agents get no server manifests");
    assert_eq!(get(&config(&w1), "server").and_then(|v| v.as_str()), Some("https://192.0.2.11:6443"));
    // A second join run has nothing left to do.
    let again = airlock("join", &b, &answers(d.path(), "w1", "192.0.2.21", "agent", true), &w1, &["--check"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn join_without_a_server_is_refused_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("s2");
    let o = airlock("join", &b, &answers(d.path(), "s2", "192.0.2.12", "server", false), &root, &["--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("join.server") && text(&o).contains("hint:"), "{}", text(&o));
    assert!(!root.join("etc").exists(), "nothing was laid down");
    let bad =
        airlock("join", &b, &answers(d.path(), "s2", "192.0.2.12", "server", false), &root, &["--server", "300.1.1.1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("--server"), "{}", text(&bad));
}
