//! `airlock install` of the demo into a target root wires the platform: the HelmCharts
//! of keycloakx, MinIO and the reference app carry generated values, real helm 3.18
//! renders each chart with exactly those values, every Secret and ConfigMap the output
//! names is a manifest beside it (or part of the output), every TLS Secret's
//! certificate verifies against the site CA with real openssl, and no generated
//! credential shows in stdout, the JSON output, the plan, the journal, the report,
//! the golden tree or a support bundle. Without an `ldap` section Keycloak is refused.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use airlock_tests::airlock_with_answers;
use airlock_tests::{build_demo_bundle, cargo_bin, demo_dir, helm, helm_command, require_tool, workspace_root};
use base64::Engine as _;
use serde::Deserialize;
use serde_yaml::Value;

const MANIFESTS: &str = "var/lib/rancher/k3s/server/manifests";

fn install(bundle: &Path, root: &Path, answers: &Path, extra: &[&str]) -> Output {
    airlock_with_answers("install", bundle, answers, root, extra)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

/// Every `(kind, name)` of a Secret or ConfigMap an object refers to: volumes,
/// projected sources, env and envFrom, and ingress TLS.
fn references(v: &Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let key = k.as_str().unwrap_or("");
                let name = |val: &Value| val["name"].as_str().map(str::to_string);
                match key {
                    // `secret: {name}` is a projected volume's source; a plain secret
                    // volume says `secret: {secretName}`, caught below.
                    "secretKeyRef" | "secretRef" | "secret" => out.extend(name(val).map(|n| ("Secret".into(), n))),
                    "configMapKeyRef" | "configMapRef" | "configMap" => {
                        out.extend(name(val).map(|n| ("ConfigMap".into(), n)))
                    }
                    "secretName" => out.extend(val.as_str().map(|n| ("Secret".to_string(), n.to_string()))),
                    _ => {}
                }
                references(val, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// The chart archive a HelmChart installs: inline `chartContent`, or the file under
/// `server/static/charts/` its `chart` URL names.
fn chart_archive(root: &Path, hc: &Value, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}.tgz", str_at(hc, &["metadata", "name"])));
    let spec = &hc["spec"];
    if let Some(b64) = spec["chartContent"].as_str() {
        fs::write(&out, base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        return out;
    }
    let url = spec["chart"].as_str().expect("chart or chartContent");
    let file = url.rsplit('/').next().unwrap();
    root.join("var/lib/rancher/k3s/server/static/charts").join(file)
}

/// The generated credentials, by file.
fn generated(root: &Path) -> Vec<(String, String)> {
    let dir = root.join("var/lib/airlock/secrets");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let v = fs::read_to_string(e.path()).unwrap().trim().to_string();
        out.push((e.file_name().to_string_lossy().into_owned(), v));
    }
    out
}

/// `airlock support-bundle` of the root into `work`: the archive's entry names and
/// all of its contents as one text, for searching secrets in.
fn support_bundle(root: &Path, work: &Path) -> (Vec<String>, String) {
    let out = work.join("support.tar.gz");
    let o = Command::new(cargo_bin("airlock"))
        .args(["support-bundle", "-o"])
        .arg(&out)
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let gz = flate2::read::GzDecoder::new(fs::File::open(&out).unwrap());
    let (mut names, mut all) = (Vec::new(), String::new());
    for e in tar::Archive::new(gz).entries().unwrap() {
        let mut e = e.unwrap();
        names.push(e.path().unwrap().display().to_string());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        all.push_str(&String::from_utf8_lossy(&bytes));
    }
    (names, all)
}

#[test]
fn demo_install_renders_platform_charts_whose_objects_exist_verify_and_keep_credentials_out_of_sight() {
    let Some(helm) = helm() else { return };
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    let answers = demo_dir().join("answers.yaml");
    let plan = install(&bundle, &root, &answers, &["--dry-run", "--output", "json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let json = install(&bundle, &root, &answers, &["--yes", "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    // A second run has nothing to do, and prints the text report.
    let again = install(&bundle, &root, &answers, &["--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    let again_out = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again_out.contains("0 steps applied"), "{again_out}");

    // The report: URLs, the CA and its fingerprint, where the credentials are.
    let report_file = fs::read_to_string(root.join("var/lib/airlock/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report_file).unwrap();
    let out_json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(out_json["report"], report, "--output json carries the same report as report.json");
    for (name, url) in [
        ("keycloak", "https://keycloak.platform.example.test"),
        ("minio", "https://minio.platform.example.test"),
        ("app", "https://app.platform.example.test"),
        ("grafana", "https://grafana.platform.example.test"),
        ("prometheus", "https://prometheus.platform.example.test"),
        ("alertmanager", "https://alertmanager.platform.example.test"),
    ] {
        assert_eq!(report["urls"][name], url);
        assert!(again_out.contains(url), "the text report lacks {url}:\n{again_out}");
    }
    let fp = Command::new(&openssl)
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(root.join("etc/airlock/pki/ca.crt"))
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout).trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(report["ca"]["sha256"], fp.as_str());
    assert_eq!(report["ca"]["path"], "/etc/airlock/pki/ca.crt");
    let creds = report["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 9);
    for c in creds {
        let path = root.join(c["path"].as_str().unwrap().trim_start_matches('/'));
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions()) & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    // Every object airlock writes beside the charts, by namespace.
    let manifests = root.join(MANIFESTS);
    let mut beside: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut tls_secrets = Vec::new();
    for e in fs::read_dir(&manifests).unwrap() {
        let path = e.unwrap().path();
        for doc in docs(&fs::read_to_string(&path).unwrap()) {
            let kind = str_at(&doc, &["kind"]).to_string();
            let ns = str_at(&doc, &["metadata", "namespace"]).to_string();
            beside.insert((kind.clone(), ns, str_at(&doc, &["metadata", "name"]).to_string()));
            if kind == "Secret" {
                let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions()) & 0o777;
                assert_eq!(mode, 0o600, "Secret file {}", path.display());
                if str_at(&doc, &["type"]) == "kubernetes.io/tls" {
                    tls_secrets.push((path.clone(), str_at(&doc, &["stringData", "tls.crt"]).to_string()));
                }
            }
        }
    }

    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    fs::create_dir_all(&home).unwrap();
    for (file, release, namespace) in [
        ("airlock-keycloak.yaml", "keycloak", "keycloak"),
        ("airlock-minio.yaml", "minio", "minio"),
        ("airlock-airlock-app.yaml", "airlock-app", "app"),
    ] {
        let hc = docs(&fs::read_to_string(manifests.join(file)).unwrap()).remove(0);
        assert_eq!(str_at(&hc, &["metadata", "name"]), release);
        assert_eq!(str_at(&hc, &["spec", "targetNamespace"]), namespace);
        let values = str_at(&hc, &["spec", "valuesContent"]);
        assert!(!values.trim().is_empty(), "{file} has no valuesContent");
        let values_file = work.path().join(format!("{release}-values.yaml"));
        fs::write(&values_file, values).unwrap();
        let chart = chart_archive(&root, &hc, work.path());
        let out = helm_command(&helm, &home)
            .args(["template", release])
            .arg(&chart)
            .arg("-f")
            .arg(&values_file)
            .args(["--namespace", namespace])
            .output()
            .unwrap();
        assert!(out.status.success(), "helm template {release}: {}", String::from_utf8_lossy(&out.stderr));
        let rendered = docs(&String::from_utf8(out.stdout).unwrap());
        assert!(!rendered.is_empty(), "{release} rendered nothing");

        let own: BTreeSet<(String, String)> = rendered
            .iter()
            .map(|d| (str_at(d, &["kind"]).to_string(), str_at(d, &["metadata", "name"]).to_string()))
            .collect();
        let mut refs = BTreeSet::new();
        rendered.iter().for_each(|d| references(d, &mut refs));
        // What each chart must be wired to (beyond "whatever it names exists").
        let must: &[(&str, &str)] = match release {
            "keycloak" => &[
                ("ConfigMap", "keycloak-realm"),
                ("ConfigMap", "keycloak-truststore"),
                ("Secret", "keycloak-admin"),
                ("Secret", "keycloak-realm-env"),
                ("Secret", "keycloak-tls"),
            ],
            "minio" => &[("Secret", "minio-root"), ("Secret", "minio-tls"), ("Secret", "minio-users")],
            _ => &[
                ("Secret", "app-tls"),
                ("Secret", "airlock-app-db"),
                ("Secret", "airlock-app-s3"),
                ("Secret", "airlock-app-oidc"),
                ("ConfigMap", "airlock-app-ca"),
            ],
        };
        for (kind, name) in must {
            assert!(
                refs.contains(&(kind.to_string(), name.to_string())),
                "{release} does not use {kind} {name}: {refs:?}"
            );
        }
        for (kind, name) in refs {
            let found = own.contains(&(kind.clone(), name.clone()))
                || beside.contains(&(kind.clone(), namespace.to_string(), name.clone()));
            assert!(found, "{release} refers to {kind} {namespace}/{name}, which no manifest and no chart object is");
        }

        let v: Value = serde_yaml::from_str(values).unwrap();
        match release {
            "keycloak" => {
                assert!(beside.contains(&("ConfigMap".into(), "keycloak".into(), "keycloak-realm".into())));
                let realm =
                    fs::read_to_string(manifests.join("airlock-keycloak-configmap-keycloak-realm.yaml")).unwrap();
                assert!(realm.contains("ldaps://ldap.platform.example.test"), "{realm}");
                assert!(realm.contains("READ_ONLY") && realm.contains("airlock-app"), "{realm}");
            }
            "minio" => {
                assert_eq!(v["mode"], "standalone");
                assert!(rendered.iter().any(|d| str_at(d, &["kind"]) == "Deployment"), "standalone is a Deployment");
                assert!(v["users"][0]["existingSecret"] == "minio-users", "{values}");
            }
            _ => {
                assert_eq!(v["images"]["api"], "docker.io/airlock-demo/api:1.0.0", "vendor values are the base");
                assert_eq!(v["ingress"]["tlsSecret"], "app-tls");
            }
        }
    }

    // Each TLS Secret's certificate verifies against the site CA.
    assert!(tls_secrets.len() >= 3, "{tls_secrets:?}");
    let ca = root.join("etc/airlock/pki/ca.crt");
    for (path, crt) in &tls_secrets {
        let f = work.path().join("leaf.pem");
        fs::write(&f, crt).unwrap();
        let o = Command::new(&openssl).args(["verify", "-CAfile"]).arg(&ca).arg(&f).output().unwrap();
        assert!(o.status.success(), "openssl verify {}: {}", path.display(), text(&o));
    }

    // No generated credential where an operator or a support engineer looks.
    let golden = fs::read_to_string(workspace_root().join("tests/golden/demo-install.txt")).unwrap();
    let journal = fs::read_to_string(root.join("var/lib/airlock/journal.json")).unwrap();
    let seen = [
        ("plan", text(&plan)),
        ("JSON output", text(&json)),
        ("text output", text(&again)),
        ("report.json", report_file),
        ("journal", journal),
        ("golden tree", golden),
    ];
    // The token, nine platform credentials, the inventory key and the report signing
    // key made here, and the LDAP bind password from the answers, kept apart for
    // upgrades: none may show anywhere.
    let creds = generated(&root);
    let made = creds.iter().filter(|c| !c.0.starts_with("answers-")).count();
    assert_eq!(
        made,
        12,
        "the token, nine platform credentials, the inventory and report keys: {:?}",
        creds.iter().map(|c| &c.0)
    );
    assert!(creds.iter().any(|c| c.0 == "inventory-key"), "{:?}", creds.iter().map(|c| &c.0));
    assert!(creds.iter().any(|c| c.0 == "report-signing.key"), "{:?}", creds.iter().map(|c| &c.0));
    assert!(creds.iter().any(|c| c.0 == "answers-ldap.bind_password"), "{:?}", creds.iter().map(|c| &c.0));
    for (file, value) in &creds {
        assert!(value.len() >= 12, "{file} is too short to be generated");
        for (what, t) in &seen {
            assert!(!t.contains(value.as_str()), "the credential in {file} shows in the {what}");
        }
    }
}

#[test]
fn keycloak_without_an_ldap_section_is_refused_naming_ldap_with_a_hint_before_staging() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    let demo = fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    let cut = demo.find("\nldap:").expect("the demo answers have an ldap section");
    let without = d.path().join("answers.yaml");
    fs::write(&without, &demo[..cut + 1]).unwrap();
    let o = install(&bundle, &root, &without, &["--yes"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("ldap: missing required section") && t.contains("keycloakx") && t.contains("hint:"), "{t}");
    assert!(!root.join("etc").exists(), "nothing is installed when the answers are refused");
    // The answers are checked against the signed manifest alone, before staging.
    assert!(!root.join("var/lib/airlock/staging").exists(), "the bundle was staged first");
}

#[test]
fn a_support_bundle_after_the_demo_install_holds_no_generated_platform_credential() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    let o = install(&bundle, &root, &demo_dir().join("answers.yaml"), &["--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let (names, all) = support_bundle(&root, d.path());
    // The platform's manifests are collected (so the check below means something) ...
    assert!(all.contains("keycloak-realm-env") && all.contains("minio-users"), "{names:?}");
    // ... and none of the values airlock generated is in them, in any form it redacts.
    for (file, value) in generated(&root) {
        assert!(!all.contains(&value), "the credential in {file} is in the support bundle");
    }
}

const KC_DB_PW: &str = "e2e-ha-kc-db-pw-4b1d";

/// The demo answers as the first of three HA servers, with `extra` appended.
fn ha_answers(dir: &Path, extra: &str) -> PathBuf {
    let demo = fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    let text = demo.replace("profile: single-node", "profile: ha")
        + "ha:\n  servers:\n    - {name: demo-node, ip: 192.0.2.10}\n    - {name: demo-node-2, ip: 192.0.2.11}\n    - {name: demo-node-3, ip: 192.0.2.12}\n"
        + extra;
    let path = dir.join("ha-answers.yaml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn ha_with_keycloak_is_refused_before_staging_without_a_database_and_bad_database_answers_name_their_key() {
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    let o = install(&bundle, &root, &ha_answers(d.path(), ""), &["--yes"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("keycloak_database: missing required section") && t.contains("Keycloak in HA"), "{t}");
    assert!(t.contains("hint:") && t.contains("keycloak_database.host"), "{t}");
    assert!(!root.join("var/lib/airlock/staging").exists(), "refused before the bundle was staged");

    for (db, key) in [
        (
            "{host: db.example.test, port: 0, name: keycloak, username: keycloak, password: pw}",
            "keycloak_database.port",
        ),
        (
            "{host: db.example.test, vendor: db2, name: keycloak, username: keycloak, password: pw}",
            "keycloak_database.vendor",
        ),
        ("{host: db.example.test, name: keycloak, username: keycloak}", "keycloak_database.password"),
        ("{host: 10.43.0.5, name: keycloak, username: keycloak, password: pw}", "keycloak_database.host"),
    ] {
        let o = install(&bundle, &root, &ha_answers(d.path(), &format!("keycloak_database: {db}\n")), &["--yes"]);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(t.contains(&format!("{key}:")) && t.contains("hint:"), "{db}: {t}");
    }
    assert!(!root.join("etc").exists(), "nothing was installed");
}

#[test]
fn ha_install_with_an_external_database_wires_keycloak_to_it_through_a_secret_only() {
    let Some(helm) = helm() else { return };
    let Some(openssl) = require_tool("openssl") else { return };
    let d = tempfile::tempdir().unwrap();
    let bundle = build_demo_bundle(d.path(), &[]);
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    // The database server's CA, made by openssl as a customer's IT would.
    let ca = d.path().join("db-ca.pem");
    let o = Command::new(&openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=Site DB CA", "-keyout"])
        .arg(d.path().join("db-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let answers = ha_answers(
        d.path(),
        &format!(
            "keycloak_database:\n  host: pg.platform.example.test\n  port: 5433\n  name: keycloak\n  username: kc_user\n  password: {KC_DB_PW}\n  ca_file: {}\n",
            ca.display()
        ),
    );
    let plan = install(&bundle, &root, &answers, &["--dry-run", "--output", "json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    // A target root is not the site: the database login is left to preflight on the
    // node, and the plan says so rather than failing on an address unreachable here.
    let shown: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let checks = shown["preflight"]["checks"].as_sequence().cloned().unwrap_or_default();
    let db = checks.iter().find(|c| c["id"] == "keycloak-database");
    let db = db.unwrap_or_else(|| panic!("no keycloak-database check in {:?}", shown["preflight"]));
    assert_eq!(db["status"], "skipped", "{db:?}");
    let json = install(&bundle, &root, &answers, &["--yes", "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));

    let manifests = root.join(MANIFESTS);
    let hc = docs(&fs::read_to_string(manifests.join("airlock-keycloak.yaml")).unwrap()).remove(0);
    let values = str_at(&hc, &["spec", "valuesContent"]).to_string();
    let v: Value = serde_yaml::from_str(&values).unwrap();
    assert_eq!(v["database"]["vendor"], "postgres");
    // Host, name and username go through the env list, where they stay strings
    // (the chart templates its own `database` keys unquoted).
    assert!(v["database"]["hostname"].is_null(), "{values}");
    let env: Vec<Value> = serde_yaml::from_str(v["extraEnv"].as_str().unwrap()).unwrap();
    let var = |n: &str| env.iter().find(|e| e["name"] == n).map(|e| e["value"].clone());
    assert_eq!(var("KC_DB_URL_HOST"), Some(Value::from("pg.platform.example.test")));
    assert_eq!(var("KC_DB_USERNAME"), Some(Value::from("kc_user")));
    assert_eq!(v["database"]["existingSecret"], "keycloak-database");
    assert!(v["database"]["password"].is_null(), "{values}");
    assert!(!values.contains(KC_DB_PW), "the password is in the chart values:\n{values}");
    assert_eq!(v["replicas"], 2);

    // The password is in exactly one place on the target: the 0600 Secret manifest.
    let secret_file = manifests.join("airlock-keycloak-secret-keycloak-database.yaml");
    let secret = fs::read_to_string(&secret_file).unwrap();
    assert!(secret.contains(KC_DB_PW), "{}", secret_file.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&secret_file).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);
    let truststore = fs::read_to_string(manifests.join("airlock-keycloak-configmap-keycloak-truststore.yaml")).unwrap();
    assert!(truststore.contains("db-ca.pem"), "{truststore}");

    // Real helm renders the chart with exactly these values: the DB env from the Secret.
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let values_file = work.path().join("values.yaml");
    fs::write(&values_file, &values).unwrap();
    let chart = chart_archive(&root, &hc, work.path());
    let out = helm_command(&helm, &home)
        .args(["template", "keycloak"])
        .arg(&chart)
        .arg("-f")
        .arg(&values_file)
        .args(["--namespace", "keycloak"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let rendered_text = String::from_utf8(out.stdout).unwrap();
    assert!(!rendered_text.contains(KC_DB_PW), "the password is in the chart output");
    let rendered = docs(&rendered_text);
    let sts = rendered.iter().find(|d| str_at(d, &["kind"]) == "StatefulSet").expect("a StatefulSet");
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].as_sequence().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name}")).clone();
    assert_eq!(var("KC_DB")["value"], "postgres");
    assert_eq!(var("KC_DB_URL_HOST")["value"], "pg.platform.example.test");
    assert_eq!(var("KC_DB_URL_PORT")["value"], "5433");
    assert_eq!(var("KC_DB_URL_DATABASE")["value"], "keycloak");
    assert_eq!(var("KC_DB_USERNAME")["value"], "kc_user");
    assert!(str_at(&var("KC_DB_URL_PROPERTIES"), &["value"]).contains("sslmode=verify-full"));
    assert_eq!(str_at(&var("KC_DB_PASSWORD"), &["valueFrom", "secretKeyRef", "name"]), "keycloak-database");
    assert_eq!(str_at(&var("KC_DB_PASSWORD"), &["valueFrom", "secretKeyRef", "key"]), "password");
    assert!(rendered.iter().all(|d| str_at(d, &["kind"]) != "Secret"), "the chart made a Secret of its own");

    // Not in the outputs, the report or the journal.
    let report = fs::read_to_string(root.join("var/lib/airlock/report.json")).unwrap();
    let journal = fs::read_to_string(root.join("var/lib/airlock/journal.json")).unwrap();
    for (what, t) in [("plan", text(&plan)), ("JSON output", text(&json)), ("report", report), ("journal", journal)] {
        assert!(!t.contains(KC_DB_PW), "the database password shows in the {what}");
    }
    // A support bundle collects the Secret's manifest, with its data redacted.
    let (_, all) = support_bundle(&root, d.path());
    assert!(all.contains("keycloak-database"), "the Secret's manifest is collected");
    assert!(!all.contains(KC_DB_PW), "the database password is in the support bundle");
}
