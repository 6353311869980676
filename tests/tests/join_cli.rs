//! `airlock join` through the real binary: the first server of the demo's HA profile
//! is installed into one target root, then a second server and an agent join from the
//! same bundle with the token file the first server wrote — following the commands its
//! install report prints, to the path every doc and message names.

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
        text.push_str("join:\n  server: 192.0.2.11\n  token_file: /root/cluster-token\n");
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

/// The install report's join token lines: the token file, the copy command and the join
/// command, as printed.
fn join_token_report(out: &str) -> (String, String, String) {
    let after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no `{prefix}` line in\n{out}"))
    };
    (
        after("join token (root only, mode 0600; admits nodes to the cluster):"),
        after("to join another server or an agent, copy it there:"),
        after("then, on that node:"),
    )
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
    // The report says where the token is and how to hand it on; that is the file written.
    let (token_path, copy, join) = join_token_report(&String::from_utf8_lossy(&o.stdout));
    let written = s1.join("var/lib/airlock/secrets/cluster-token");
    assert_eq!(Path::new(&token_path), written, "{}", text(&o));
    let token = std::fs::read_to_string(&written).unwrap();
    assert_eq!(copy, format!("scp {} <node>:/root/cluster-token", written.display()));
    assert!(join.starts_with(&format!("airlock join {} --pubkey ", b.display())), "{join}");
    assert!(join.ends_with("--answers <node answers> --server 192.0.2.11 --token-file /root/cluster-token"), "{join}");

    // Without the token, `join` names where it reads it (by default the path every node
    // keeps it at) and where to copy it from.
    let s2 = d.path().join("s2");
    let s2_answers = answers(d.path(), "s2", "192.0.2.12", "server", false);
    let missing = airlock("join", &b, &s2_answers, &s2, &["--yes", "--server", "192.0.2.11"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    // Under --root the file is read below the root, and the message says where.
    let on_node = format!("{}/var/lib/airlock/secrets/cluster-token", s2.display());
    assert!(
        text(&missing).contains(&format!("`{on_node}` does not exist (the token file is a path on the node"))
            && text(&missing).contains(&format!("scp <first-server>:/var/lib/airlock/secrets/cluster-token {on_node}")),
        "{}",
        text(&missing)
    );
    // The operator runs the report's copy command, `<node>` being s2, then its join command.
    let (src, dst) = copy.strip_prefix("scp ").unwrap().split_once(" <node>:").unwrap();
    std::fs::create_dir_all(s2.join("root")).unwrap();
    std::fs::copy(src, s2.join(dst.trim_start_matches('/'))).unwrap();
    let o = airlock("join", &b, &s2_answers, &s2, &["--yes", "--server", "192.0.2.11", "--token-file", dst]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(token.trim()), "the token leaked");
    let c2 = config(&s2);
    assert_eq!(get(&c2, "server").and_then(|v| v.as_str()), Some("https://192.0.2.11:6443"));
    assert_eq!(get(&c2, "token").and_then(|v| v.as_str()), Some(token.trim()));
    assert!(get(&c2, "cluster-init").is_none(), "only the first server starts the cluster");
    assert!(s2.join("var/lib/rancher/k3s/server/manifests").is_dir(), "every server has the manifests directory");
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
    // Nor any other chart: the first server's manifests are the cluster's (docs/platform.md).
    let written: Vec<_> = std::fs::read_dir(&m2).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(written.is_empty(), "a joining server wrote manifests: {written:?}");
    assert!(m1.join("airlock-notes.yaml").is_file(), "the first server has every chart");
    assert!(!s2.join("var/lib/airlock/report.json").exists());
    assert!(!text(&o).contains("join token ("), "only the node that started the cluster reports the token");
    assert_eq!(std::fs::read_to_string(s2.join("var/lib/airlock/secrets/cluster-token")).unwrap(), token);
    assert!(s2.join("etc/systemd/system/multi-user.target.wants/k3s.service").symlink_metadata().is_ok());

    // An agent, its join taken from the answers file.
    let w1 = d.path().join("w1");
    std::fs::create_dir_all(w1.join("root")).unwrap();
    std::fs::write(w1.join("root/cluster-token"), &token).unwrap();
    let o = airlock("join", &b, &answers(d.path(), "w1", "192.0.2.21", "agent", true), &w1, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(w1.join("etc/systemd/system/multi-user.target.wants/k3s-agent.service").symlink_metadata().is_ok());
    assert!(!w1.join("var/lib/rancher/k3s/server").exists(), "agents get no server manifests");
    assert_eq!(get(&config(&w1), "server").and_then(|v| v.as_str()), Some("https://192.0.2.11:6443"));
    // A second join run has nothing left to do.
    let again = airlock("join", &b, &answers(d.path(), "w1", "192.0.2.21", "agent", true), &w1, &["--check"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // Uninstalled, the agent leaves the operator's token copy where it was, and says so:
    // it still admits nodes to the cluster.
    let o = std::process::Command::new(airlock_tests::cargo_bin("airlock"))
        .args(["uninstall", "--yes", "--root"])
        .arg(&w1)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(w1.join("root/cluster-token").is_file(), "the operator's copy is not airlock's to remove");
    let named = format!("rm {}/root/cluster-token once no other node needs it", w1.display());
    assert!(
        text(&o).contains("  left /root/cluster-token (the copy of the join token") && text(&o).contains(&named),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(token.trim()), "the token leaked");
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

#[test]
fn docs_help_and_messages_name_the_token_path_the_install_writes() {
    let written = airlock_installer::state::CLUSTER_TOKEN_PATH;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for doc in ["README.md", "docs/answers.md", "docs/preflight.md"] {
        let t = std::fs::read_to_string(repo.join(doc)).unwrap();
        assert!(t.contains(written), "{doc} does not name {written}");
        assert!(!t.contains("/etc/airlock/join-token"), "{doc} names a token path nothing writes");
    }
    let help =
        std::process::Command::new(airlock_tests::cargo_bin("airlock")).args(["join", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains(written) && !help.contains("/etc/airlock/join-token"), "{help}");
}
