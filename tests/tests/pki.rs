//! `airlock pki status` and `airlock pki renew` against a target root whose PKI the
//! installer library laid down (as `airlock install` does), with real openssl: an
//! expired leaf is reported with exit 8, renewed with the site CA, verifies again and
//! lives longer; no key ever shows on stdout or stderr; a customer PKI is not renewed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airlock_installer::engine::{apply, ApplyOptions, Plan};
use airlock_installer::host::RootedHost;
use airlock_installer::site::answers::Answers;
use airlock_installer::site::pki;
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, require_tool};

const ANSWERS: &str =
    "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: platform.example.test}\n";

/// A target root with the site PKI installed by the library.
fn installed_root() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let host = RootedHost::new(root.clone(), false).unwrap();
    let answers = Answers::from_yaml(ANSWERS, "answers.yaml").unwrap();
    let site = pki::prepare(&answers, &host).unwrap();
    let plan = Plan::from_steps(site.steps()).unwrap();
    apply(&plan, &host, &ApplyOptions::new(airlock_installer::state::STATE_DIR, "airlock install (test)"), &mut |_| {})
        .unwrap();
    (tmp, root)
}

fn airlock(args: &[&str]) -> Output {
    Command::new(cargo_bin("airlock")).args(args).output().expect("airlock runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn openssl(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).current_dir(dir).output().expect("openssl runs")
}

/// Every line of base64 in the key files: none may appear in any output.
fn key_lines(pki_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for k in ["ca.key", "ingress.key", "minio.key", "keycloak.key"] {
        let t = std::fs::read_to_string(pki_dir.join(k)).unwrap();
        lines.extend(t.lines().filter(|l| !l.starts_with("-----")).map(str::to_string));
    }
    lines
}

fn assert_no_key_material(out: &str, keys: &[String]) {
    assert!(!out.contains("PRIVATE KEY"), "output shows a key:\n{out}");
    for l in keys {
        assert!(!out.contains(l.as_str()), "output shows key material:\n{out}");
    }
}

#[test]
fn an_expired_leaf_fails_status_and_renew_reissues_it_so_it_verifies_again() {
    let Some(bin) = require_tool("openssl") else { return };
    let (_tmp, root) = installed_root();
    let dir = root.join("etc/airlock/pki");
    let r = root.to_str().unwrap();

    // Expire the ingress certificate: same key and names, re-signed by the site CA with
    // a notAfter in the past (openssl 3.0 takes -days -1).
    let ok = |o: Output| assert!(o.status.success(), "{}", text(&o));
    ok(openssl(
        &bin,
        &dir,
        &[
            "x509",
            "-x509toreq",
            "-in",
            "ingress.crt",
            "-signkey",
            "ingress.key",
            "-copy_extensions",
            "copyall",
            "-out",
            "r.csr",
        ],
    ));
    ok(openssl(
        &bin,
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "r.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-copy_extensions",
            "copyall",
            "-days",
            "-1",
            "-out",
            "ingress.crt",
        ],
    ));
    let keys = key_lines(&dir);

    let status = airlock(&["pki", "status", "--root", r]);
    let out = text(&status);
    assert_eq!(status.status.code(), Some(10), "{out}");
    assert!(out.contains("EXPIRED") && out.contains("error: expired: ingress"), "{out}");
    assert!(out.contains("SANs    *.platform.example.test, platform.example.test, keycloak."), "{out}");
    assert_no_key_material(&out, &keys);

    let json = airlock(&["pki", "status", "--root", r, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status JSON");
    let ingress = v["certificates"].as_array().unwrap().iter().find(|c| c["name"] == "ingress").unwrap().clone();
    assert_eq!(ingress["expired"], true);
    assert!(ingress["days_left"].as_i64().unwrap() < 0);
    assert_eq!(ingress["sha256"].as_str().unwrap().len(), 95, "AB:CD:… form");
    assert_no_key_material(&text(&json), &keys);

    let before = std::fs::read(dir.join("ingress.crt")).unwrap();
    let dry = airlock(&["pki", "renew", "--root", r, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("would renew ingress (expired"), "{}", text(&dry));
    assert_eq!(std::fs::read(dir.join("ingress.crt")).unwrap(), before, "a dry run changed the certificate");

    let renew = airlock(&["pki", "renew", "--root", r]);
    let out = text(&renew);
    assert!(renew.status.success(), "{out}");
    assert!(out.contains("renewed ingress (expired)") && out.contains("kept minio, keycloak"), "{out}");
    assert_no_key_material(&out, &keys);
    assert_no_key_material(&out, &key_lines(&dir));

    let v = openssl(&bin, &dir, &["verify", "-CAfile", "ca.crt", "ingress.crt"]);
    assert!(v.status.success(), "{}", text(&v));
    // Valid for more than 800 days now, with the same names.
    let check =
        openssl(&bin, &dir, &["x509", "-in", "ingress.crt", "-noout", "-checkend", &(800 * 86_400).to_string()]);
    assert!(check.status.success(), "{}", text(&check));
    let t = text(&openssl(&bin, &dir, &["x509", "-in", "ingress.crt", "-noout", "-ext", "subjectAltName"]));
    assert!(t.contains("DNS:*.platform.example.test") && t.contains("IP Address:192.0.2.10"), "{t}");
    assert_eq!(std::fs::metadata(dir.join("ingress.key")).unwrap().permissions().mode() & 0o777, 0o600);

    let again = airlock(&["pki", "status", "--root", r]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn renew_refuses_a_customer_pki_with_a_hint_to_supply_new_files() {
    let (_tmp, root) = installed_root();
    let state = root.join("etc/airlock/pki/pki.json");
    let json = std::fs::read_to_string(&state).unwrap().replace("self-signed", "customer-certs");
    std::fs::write(&state, json).unwrap();
    let out = airlock(&["pki", "renew", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("customer's PKI (pki.mode customer-certs)") && t.contains("hint: get new certificate files"),
        "{t}"
    );
}

#[test]
fn status_on_a_root_without_a_pki_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = airlock(&["pki", "status", "--root", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("/etc/airlock/pki/ca.crt: does not exist") && t.contains("hint:"), "{t}");
}

#[test]
fn install_names_the_site_ca_and_never_shows_a_pki_key() {
    let Some(bin) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["install".into(), bundle.display().to_string()];
        args.extend(["--pubkey".into(), demo_dir().join("keys/demo.pub").display().to_string()]);
        args.extend(["--answers".into(), demo_dir().join("answers.yaml").display().to_string()]);
        args.extend(["--root".into(), root.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(cargo_bin("airlock")).args(&args).stdin(std::process::Stdio::null()).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let dry = run(&["--dry-run"]);
    assert!(dry.contains("write secret /etc/airlock/pki/ca.key (0600, content not shown)"), "{dry}");
    let json = run(&["--dry-run", "--output", "json"]);
    let done = run(&["--yes"]);
    let dir = root.join("etc/airlock/pki");
    let keys = key_lines(&dir);
    for out in [&dry, &json, &done] {
        assert_no_key_material(out, &keys);
    }
    // The fingerprint in the report is the one openssl computes for ca.crt.
    let fp = text(&openssl(&bin, &dir, &["x509", "-in", "ca.crt", "-noout", "-fingerprint", "-sha256"]));
    let fp = fp.trim().rsplit('=').next().unwrap().to_string();
    assert!(done.contains(&format!("/etc/airlock/pki/ca.crt (SHA-256 {fp})")), "{done}\n{fp}");
    let v = openssl(&bin, &dir, &["verify", "-CAfile", "ca.crt", "ingress.crt", "minio.crt", "keycloak.crt"]);
    assert!(v.status.success(), "{}", text(&v));
    // A second run keeps the PKI: same CA.
    let again = run(&["--yes"]);
    assert!(again.contains(&fp) && again.contains("0 steps applied"), "{again}");
}

/// Every TLS Secret manifest under the root's manifests directory: file name →
/// (tls.crt, tls.key) or MinIO's (public.crt, private.key).
fn tls_secrets(root: &Path) -> std::collections::BTreeMap<String, (String, String)> {
    let dir = root.join("var/lib/rancher/k3s/server/manifests");
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let v: serde_yaml::Value = match serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()) {
            Ok(v) => v,
            Err(_) => continue, // several documents: not a Secret manifest
        };
        if v["type"] != "kubernetes.io/tls" {
            continue;
        }
        let d = &v["stringData"];
        let pair =
            |c: &str, k: &str| (d[c].as_str().unwrap_or("").to_string(), d[k].as_str().unwrap_or("").to_string());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name.clone(), pair("tls.crt", "tls.key"));
        if d.get("public.crt").is_some() {
            out.insert(format!("{name} (public.crt)"), pair("public.crt", "private.key"));
        }
    }
    out
}

#[test]
fn renew_refreshes_every_tls_secret_manifest_that_held_a_replaced_leaf_and_leaves_no_drift() {
    // The demo installed with its platform charts, so the TLS Secrets are there.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(tmp.path(), &[]);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let o =
        airlock_tests::airlock_with_answers("install", &bundle, &demo_dir().join("answers.yaml"), &root, &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = root.to_str().unwrap();
    let pki_dir = root.join("etc/airlock/pki");
    let leaf_files = |names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    std::fs::read_to_string(pki_dir.join(format!("{n}.crt"))).unwrap(),
                    std::fs::read_to_string(pki_dir.join(format!("{n}.key"))).unwrap(),
                )
            })
            .collect()
    };
    let before = tls_secrets(&root);
    assert!(before.len() >= 4, "{before:?}");
    let old_leaves = leaf_files(&["ingress", "minio", "keycloak", "monitoring"]);
    for (name, pair) in &before {
        assert!(old_leaves.contains(pair), "{name} holds no leaf of the site PKI");
    }

    // A dry run names the manifests and writes nothing.
    let dry = airlock(&["pki", "renew", "--root", r, "--within", "100000", "--dry-run", "--output", "json"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let listed: Vec<&str> = v["secrets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(listed.iter().any(|s| s.ends_with("airlock-keycloak-secret-keycloak-tls.yaml")), "{listed:?}");
    assert!(listed.iter().all(|s| s.starts_with("/var/lib/rancher/k3s/server/manifests/")), "{listed:?}");
    assert_eq!(tls_secrets(&root), before, "a dry run changed a Secret");

    let renew = airlock(&["pki", "renew", "--root", r, "--within", "100000"]);
    let out = text(&renew);
    assert!(renew.status.success(), "{out}");
    assert!(out.contains("refreshed TLS Secret manifest /var/lib/rancher/k3s/server/manifests/"), "{out}");
    let new_leaves = leaf_files(&["ingress", "minio", "keycloak", "monitoring"]);
    assert_no_key_material(&out, &key_lines(&pki_dir));
    let after = tls_secrets(&root);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (name, pair) in &after {
        assert!(new_leaves.contains(pair), "{name} still holds an old certificate or key");
        let mode =
            std::fs::metadata(root.join("var/lib/rancher/k3s/server/manifests").join(name.split(' ').next().unwrap()))
                .unwrap()
                .permissions()
                .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // The inventory knows the new content: status sees no drift.
    let st = airlock(&["status", "--root", r, "--output", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(s["drift"], serde_json::json!([]), "{s:#}");
    // And so does every other record of it (the uninstall script's list): the install
    // run again finds nothing to do.
    let check = airlock_tests::airlock_with_answers(
        "install",
        &bundle,
        &demo_dir().join("answers.yaml"),
        &root,
        &["--check", "--output", "json"],
    );
    assert_eq!(check.status.code(), Some(0), "pending after the renewal: {}", text(&check));
}
