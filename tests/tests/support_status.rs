//! `airlock status` and `airlock support-bundle` through the real binary, on the
//! embedded example installed into a target root: a fresh install is healthy, an edited
//! file is drift, a crashed install is interrupted with its resume command, and a
//! support bundle of a root full of planted secrets holds none of them. Certificates
//! are made by the real `openssl`; the archive is listed by the real `tar`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, require_tool};

fn install(bundle: &Path, root: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut c = Command::new(cargo_bin("airlock"));
    c.arg("install")
        .arg(bundle)
        .arg("--pubkey")
        .arg(demo_dir().join("keys/demo.pub"))
        .arg("--answers")
        .arg(demo_dir().join("answers.yaml"))
        .arg("--root")
        .arg(root)
        .args(extra)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn installed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let b = build_demo_bundle(dir, &[]);
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let o = install(&b, &root, &[], &["--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (b, root)
}

fn airlock(args: &[&str], root: &Path) -> Output {
    Command::new(cargo_bin("airlock")).args(args).arg("--root").arg(root).stdin(Stdio::null()).output().unwrap()
}

fn status_json(root: &Path) -> (Option<i32>, serde_json::Value) {
    let o = airlock(&["status", "--output", "json"], root);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    });
    (o.status.code(), v)
}

#[test]
fn status_of_a_fresh_install_is_healthy_with_the_release_and_its_components() {
    let d = tempfile::tempdir().unwrap();
    let (_, root) = installed(d.path(), "root");
    let (code, s) = status_json(&root);
    assert_eq!(code, Some(0), "{s:#}");
    assert_eq!(s["healthy"], true);
    assert_eq!(s["release"]["bundle"], "airlock-demo");
    assert_eq!(s["release"]["version"], "1.0.0");
    assert_eq!(s["release"]["manifest_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(s["live"]["state"], "not-live");
    assert_eq!(s["last_run"]["outcome"], "succeeded");
    assert!(s["last_run"]["steps_applied"].as_u64().unwrap() > 10);
    let comps: Vec<String> = s["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect();
    assert!(comps.contains(&"distribution k3s v1.31.4+k3s1".to_string()), "{comps:?}");
    assert!(comps.contains(&"chart notes 0.1.0".to_string()), "{comps:?}");
    assert!(comps.iter().any(|c| c.starts_with("chart hello ")), "{comps:?}");
    assert!(s["drift"].as_array().unwrap().is_empty());

    let text = airlock(&["status"], &root);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("airlock-demo 1.0.0") && out.contains("not live") && out.contains("healthy"), "{out}");
}

#[test]
fn status_reports_an_edited_and_a_removed_installed_file_as_drift_with_the_way_back() {
    let d = tempfile::tempdir().unwrap();
    let (bundle, root) = installed(d.path(), "root");
    std::fs::write(root.join("usr/local/bin/k3s-killall.sh"), "#!/bin/sh\n# edited on site\n").unwrap();
    std::fs::remove_file(root.join("var/lib/rancher/k3s/server/manifests/airlock-notes.yaml")).unwrap();
    let (code, s) = status_json(&root);
    assert_eq!(code, Some(11), "{s:#}");
    assert_eq!(s["healthy"], false);
    let drift: Vec<String> = s["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["path"].as_str().unwrap(), d["problem"].as_str().unwrap()))
        .collect();
    assert_eq!(
        drift,
        ["/usr/local/bin/k3s-killall.sh changed", "/var/lib/rancher/k3s/server/manifests/airlock-notes.yaml missing"]
    );
    let text = String::from_utf8_lossy(&airlock(&["status"], &root).stdout).to_string();
    assert!(text.contains("DRIFT     /usr/local/bin/k3s-killall.sh (changed)"), "{text}");
    // The next step is named, with the root it applies to.
    let hint = format!(
        "  hint: to put these files back as installed, run `airlock install <the airlock-demo 1.0.0 bundle> --root {}` \
         again: it rewrites only what differs",
        root.display()
    );
    assert!(text.contains(&hint), "{text}");
    // Run again, the install puts both files back.
    let o = install(&bundle, &root, &[], &["--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, s) = status_json(&root);
    assert_eq!((code, s["drift"].as_array().map(Vec::len)), (Some(0), Some(0)), "{s:#}");
}

#[test]
fn status_reports_an_edited_secret_bearing_config_as_drift_by_name_only_and_exits_11() {
    let d = tempfile::tempdir().unwrap();
    let (_, root) = installed(d.path(), "root");
    let config = root.join("etc/rancher/k3s/config.yaml");
    let original = std::fs::read(&config).unwrap();
    let token = std::fs::read_to_string(root.join("var/lib/airlock/secrets/cluster-token")).unwrap().trim().to_string();
    assert!(String::from_utf8_lossy(&original).contains(&token));
    let edited = format!("{}token: planted-site-secret\n", String::from_utf8_lossy(&original));
    std::fs::write(&config, &edited).unwrap();

    let (code, s) = status_json(&root);
    assert_eq!(code, Some(11), "{s:#}");
    let drift: Vec<String> = s["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d["path"].as_str().unwrap(), d["problem"].as_str().unwrap()))
        .collect();
    assert_eq!(drift, ["/etc/rancher/k3s/config.yaml changed"]);
    let o = airlock(&["status"], &root);
    assert_eq!(o.status.code(), Some(11));
    let text = format!("{}{}{s}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("DRIFT     /etc/rancher/k3s/config.yaml (changed)"), "{text}");
    for secret in [token.as_str(), "planted-site-secret"] {
        assert!(!text.contains(secret), "status printed a secret value: {text}");
    }

    // The inventory (0644, handed to support) holds no secret value, and no plain
    // digest of the secret-bearing file or of the token to guess them against.
    let inv = std::fs::read_to_string(root.join("var/lib/airlock/installed.json")).unwrap();
    let sha = |b: &[u8]| airlock_format::digest::Sha256Digest::of(b).hex();
    for leak in [
        token.clone(),
        sha(&original),
        sha(edited.as_bytes()),
        sha(token.as_bytes()),
        sha(format!("{token}\n").as_bytes()),
    ] {
        assert!(!inv.contains(&leak), "the inventory holds {leak}");
    }
    let v: serde_json::Value = serde_json::from_str(&inv).unwrap();
    let entry = v["files"].as_array().unwrap().iter().find(|f| f["path"] == "/etc/rancher/k3s/config.yaml").unwrap();
    assert_eq!(entry["hmac_sha256"].as_str().map(str::len), Some(64), "{entry}");
    let key = root.join("var/lib/airlock/secrets/inventory-key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    // Put back as installed: no drift again.
    std::fs::write(&config, &original).unwrap();
    assert_eq!(status_json(&root).0, Some(0));
}

#[test]
fn status_after_a_crashed_install_says_interrupted_and_gives_the_resume_command() {
    let d = tempfile::tempdir().unwrap();
    let b = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let plan = install(&b, &root, &[], &["--dry-run", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let ids: Vec<&str> = plan["plan"]["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    let crash_at = ids[ids.len() / 2];
    let crashed = install(&b, &root, &[("AIRLOCK_TEST_CRASH_AFTER", crash_at)], &["--yes"]);
    assert!(!crashed.status.success());

    let (code, s) = status_json(&root);
    assert_eq!(code, Some(11), "{s:#}");
    assert_eq!(s["pending"]["state"], "interrupted");
    assert_eq!(s["pending"]["last_step"], crash_at);
    assert!(s["release"].is_null(), "the release is recorded only by the last step");
    let resume = s["pending"]["resume_command"].as_str().unwrap();
    assert!(
        resume.starts_with("airlock install ") && resume.contains(&format!("--root {}", root.display())),
        "{resume}"
    );
    let key = demo_dir().join("keys/demo.pub");
    assert!(resume.contains(&format!("--pubkey {}", key.display())), "resuming needs the key again: {resume}");
    let text = String::from_utf8_lossy(&airlock(&["status"], &root).stdout).to_string();
    assert!(
        text.contains("PENDING   interrupted")
            && text.contains(&format!("hint: if no install is running now, run `{resume}`")),
        "{text}"
    );

    // The resume command really resumes: afterwards the node is healthy.
    assert!(install(&b, &root, &[], &["--yes"]).status.success());
    assert_eq!(status_json(&root).0, Some(0));
}

/// A self-signed certificate (and its key) valid for `days`, made by openssl.
fn certificate(openssl: &Path, dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let o = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-days")
        .arg(days.to_string())
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (crt, key)
}

#[test]
fn status_counts_certificate_days_and_an_expired_one_is_a_problem() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    let (_, root) = installed(d.path(), "root");
    let pki = root.join("etc/airlock/pki");
    std::fs::create_dir_all(&pki).unwrap();
    // Certificates put beside the install's own (which replacing would be drift).
    certificate(&openssl, &pki, "site-root", 3650);
    certificate(&openssl, &pki, "edge", 10);

    let (code, s) = status_json(&root);
    assert_eq!(code, Some(0), "expiring soon is a warning, not a problem: {s:#}");
    let days: BTreeMap<String, i64> = s["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["days_left"].as_i64().unwrap()))
        .collect();
    // The install's own PKI is listed too; its keys are not certificates.
    assert!(days.len() >= 4 && days.keys().all(|p| p.ends_with(".crt")), "{days:?}");
    assert!((3648..=3650).contains(&days["/etc/airlock/pki/site-root.crt"]), "{days:?}");
    assert!((9..=10).contains(&days["/etc/airlock/pki/edge.crt"]), "{days:?}");
    assert!(s["warnings"].to_string().contains("edge.crt (CN=edge) expires in"), "{s:#}");

    // Twenty days on, the edge certificate has expired.
    use airlock_installer::host::RootedHost;
    use airlock_installer::ops::status::{status, StatusOptions};
    let host = RootedHost::new(root.clone(), false).unwrap();
    let later = StatusOptions { now_unix: StatusOptions::now().now_unix + 20 * 86_400 };
    let r = status(&host, &later).unwrap();
    assert!(!r.healthy);
    assert!(r.problems.iter().any(|p| p.contains("edge.crt (CN=edge) expired on")), "{:?}", r.problems);
}

#[test]
fn status_reports_the_distributions_own_certificates_and_400_days_on_names_what_expired_and_how_to_renew_it() {
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    let (_, root) = installed(d.path(), "root");
    // Stand-ins for what K3s generates at its first start (nothing here runs K3s):
    // a 365-day serving certificate and a ten-year CA in its server/tls directory.
    let tls = root.join("var/lib/rancher/k3s/server/tls");
    std::fs::create_dir_all(&tls).unwrap();
    certificate(&openssl, &tls, "serving-kube-apiserver", 365);
    certificate(&openssl, &tls, "server-ca", 3650);

    let (code, s) = status_json(&root);
    assert_eq!(code, Some(0), "{s:#}");
    let days = |s: &serde_json::Value, path: &str| {
        s["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .map(|c| c["days_left"].as_i64().unwrap())
    };
    let serving = "/var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt";
    assert!(days(&s, serving).is_some_and(|d| (363..=365).contains(&d)), "{s:#}");
    assert!(days(&s, "/var/lib/rancher/k3s/server/tls/server-ca.crt").is_some(), "{s:#}");

    // The site's clock 400 days on (the clock status counts from, as a fake).
    use airlock_installer::host::RootedHost;
    use airlock_installer::ops::status::{status, StatusOptions};
    let host = RootedHost::new(root.clone(), false).unwrap();
    let later = StatusOptions { now_unix: StatusOptions::now().now_unix + 400 * 86_400 };
    let r = status(&host, &later).unwrap();
    assert!(!r.healthy);
    let certs: Vec<&String> = r.problems.iter().filter(|p| p.starts_with("certificate ")).collect();
    assert_eq!(certs.len(), 1, "only the 365-day K3s certificate has expired: {:?}", r.problems);
    let p = certs[0];
    assert!(p.contains(serving) && p.contains("expired on"), "{p}");
    assert!(p.contains("`systemctl restart k3s"), "the one command that renews it: {p}");
    // The site PKI's leaves (825 days) and CAs are fine; nothing else is said about them.
    assert!(r.problems.iter().all(|p| !p.contains("/etc/airlock/pki")), "{:?}", r.problems);

    // 800 days on, the site's leaves are within the warning window: renewed by airlock.
    let later = StatusOptions { now_unix: StatusOptions::now().now_unix + 800 * 86_400 };
    let r = status(&host, &later).unwrap();
    let leaf = r
        .warnings
        .iter()
        .find(|w| w.contains("/etc/airlock/pki/ingress.crt"))
        .unwrap_or_else(|| panic!("{:?}", r.warnings));
    assert!(leaf.contains("`airlock pki renew`"), "{leaf}");
}

/// Every entry of a support bundle (gzip tar) by name.
fn unpack(path: &Path) -> BTreeMap<String, String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.insert(name, String::from_utf8_lossy(&bytes).into_owned());
    }
    out
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn support_bundle_of_a_root_with_planted_secrets_holds_none_of_them_and_counts_each_rule() {
    let Some(openssl) = require_tool("openssl") else { return };
    let Some(tar_tool) = require_tool("tar") else { return };
    let d = tempfile::tempdir().unwrap();
    let (_, root) = installed(d.path(), "root");
    let token = std::fs::read_to_string(root.join("var/lib/airlock/secrets/cluster-token")).unwrap().trim().to_string();
    let manifests = "/var/lib/rancher/k3s/server/manifests";

    // A generated secret of another component, copied under an innocent key.
    let generated = "MinioRootPlanted-7f3a9c";
    write(&root, "/var/lib/airlock/secrets/minio-root-password", generated);
    // Keycloak's LDAP federation with its bind password, as values and realm JSON.
    let (bind1, bind2) = ("LdapBindPlanted-one", "LdapBindPlanted-two");
    write(
        &root,
        &format!("{manifests}/airlock-keycloak.yaml"),
        &format!(
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: keycloak\n  namespace: kube-system\n\
             spec:\n  version: 7.1.11\n  targetNamespace: keycloak\n  valuesContent: |\n    ldap:\n      \
             bindDn: cn=reader,dc=example,dc=test\n      bindCredential: {bind1}\n    realm: |\n      \
             {{\"components\": [{{\"config\": {{\"bindCredential\": [\"{bind2}\"]}}}}]}}\n    note: {generated}\n"
        ),
    );
    // A Secret with stringData and data.
    let (sec1, sec2) = ("SecretStringPlanted-42", "c2VjcmV0LWRhdGEtcGxhbnRlZA==");
    write(
        &root,
        &format!("{manifests}/airlock-app-secret.yaml"),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-db\n  namespace: app\nstringData:\n  \
             password: {sec1}\n  url: postgres://app:{sec1}@db:5432/app\ndata:\n  api-key: {sec2}\ntype: Opaque\n"
        ),
    );
    // A PEM private key inside a manifest, and key and certificate files in the PKI dir.
    let pki = root.join("etc/airlock/pki");
    std::fs::create_dir_all(&pki).unwrap();
    let (_, key) = certificate(&openssl, &pki, "ingress", 365);
    let pem = std::fs::read_to_string(&key).unwrap();
    let key_body: Vec<String> = pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_string).collect();
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    write(
        &root,
        &format!("{manifests}/airlock-tls.yaml"),
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: oops\ndata:\n  tls.pem: |\n{indented}"),
    );
    // The token an operator added to the unit's env file.
    let env_token = "EnvTokenPlanted-9d8c";
    let env = root.join("etc/systemd/system/k3s.service.env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str(&format!("K3S_TOKEN={env_token}\n"));
    std::fs::write(&env, text).unwrap();
    // The admin kubeconfig K3s writes at first start: a client key and a token.
    let key_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pem);
    let kube_token = "KubeconfigTokenPlanted-31";
    write(
        &root,
        "/etc/rancher/k3s/k3s.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: default\n  user:\n    client-key-data: {key_b64}\n    \
             token: {kube_token}\n"
        ),
    );
    // K3s' own node password file.
    write(&root, "/etc/rancher/node/password", "NodePasswordPlanted-55");

    let out = d.path().join("support.tar.gz");
    let o = Command::new(cargo_bin("airlock"))
        .args(["support-bundle", "-o"])
        .arg(&out)
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{said}");
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

    let files = unpack(&out);
    let mut planted = vec![
        token.clone(),
        generated.into(),
        bind1.into(),
        bind2.into(),
        sec1.into(),
        sec2.into(),
        env_token.into(),
        "NodePasswordPlanted-55".into(),
        kube_token.into(),
        key_b64.clone(),
    ];
    planted.extend(key_body);
    for value in &planted {
        assert!(!said.contains(value.as_str()), "printed a secret");
        for (name, text) in &files {
            assert!(!text.contains(value.as_str()), "planted secret {value:.12}… found in {name}");
        }
    }
    // The real tar lists it; the names match the manifest.
    let listed = Command::new(tar_tool).arg("-tzf").arg(&out).output().unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.lines().next(), Some("MANIFEST.json"));

    let m: serde_json::Value = serde_json::from_str(&files["MANIFEST.json"]).unwrap();
    let count = |rule: &str| m["redactions"][rule].as_u64().unwrap_or(0);
    assert!(count("generated-secret-value") >= 2, "token in config.yaml, minio value: {m:#}");
    assert!(count("kubernetes-secret-data") >= 3, "{m:#}");
    assert!(count("private-key-block") >= 2, "the manifest's and the kubeconfig's: {m:#}");
    assert!(count("env-credential") >= 1, "{m:#}");
    assert!(count("credential-field") >= 2, "both bind credentials: {m:#}");
    let listed_files: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for want in [
        "state/journal.json",
        "state/release.json",
        "state/installed.json",
        "status.json",
        "host/facts.json",
        "files/etc/rancher/k3s/config.yaml",
        "files/etc/systemd/system/k3s.service",
        "files/etc/systemd/system/k3s.service.env",
        "files/var/lib/rancher/k3s/server/manifests/airlock-keycloak.yaml",
        "files/etc/airlock/pki/ingress.crt",
    ] {
        assert!(listed_files.contains(&want), "{want} not collected: {listed_files:?}");
        assert!(files.contains_key(want), "{want} listed but not in the archive");
    }
    let config =
        m["files"].as_array().unwrap().iter().find(|f| f["name"] == "files/etc/rancher/k3s/config.yaml").unwrap();
    assert_eq!(config["redactions"]["generated-secret-value"], 1, "{config}");
    assert_eq!(config["size"].as_u64().unwrap() as usize, files["files/etc/rancher/k3s/config.yaml"].len());
    // What was left out, and why: keys, the node password, everything live.
    let missing = m["not_collected"].to_string();
    for why in ["/etc/airlock/pki/ingress.key", "/etc/rancher/node/password", "never collected", "not live"] {
        assert!(missing.contains(why), "{why} not in {missing}");
    }
    assert!(!files.keys().any(|n| n.contains("secrets/")), "{:?}", files.keys());
    // The config is still readable YAML with the token marked.
    assert!(files["files/etc/rancher/k3s/config.yaml"].contains("token: <redacted>"));
}

#[test]
fn support_bundle_of_a_root_with_nothing_installed_still_yields_a_bundle_saying_what_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("empty");
    std::fs::create_dir(&root).unwrap();
    let out = d.path().join("s.tar.gz");
    let o = Command::new(cargo_bin("airlock"))
        .args(["support-bundle", "-o"])
        .arg(&out)
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = unpack(&out);
    let m: serde_json::Value = serde_json::from_str(&files["MANIFEST.json"]).unwrap();
    let missing = m["not_collected"].to_string();
    assert!(missing.contains("no airlock install is recorded") && missing.contains("no inventory"), "{missing}");
    assert!(files.contains_key("host/facts.json"));
}
