//! The Keycloak and MinIO values airlock renders, through the real charts: helm 3.18
//! (the Helm K3s' helm-controller runs) templates the codecentric keycloakx chart and
//! the official MinIO 5.4.0 chart with them, and the tests read the objects it
//! produces:
//!
//! - every Secret and ConfigMap a pod, an ingress or a projected volume refers to
//!   (by name, and by key where a key is named) is one airlock renders beside the
//!   chart, or one the chart renders itself;
//! - the realm ConfigMap is mounted where `--import-realm` reads, the truststore where
//!   `KC_TRUSTSTORE_PATHS` points, and the ingresses serve our TLS Secret;
//! - MinIO is a standalone Deployment on one node and a distributed StatefulSet with
//!   one pod per server in HA;
//! - no generated secret value appears in the values or in any rendered object that
//!   is not a Secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use airlock_installer::render::platform::keycloak::{
    self, KeycloakCredentials, KeycloakDatabase, KeycloakInput, KeycloakLdap, LdapVendor,
};
use airlock_installer::render::platform::minio::{self, MinioCredentials, MinioInput, MinioTls};
use airlock_installer::render::platform::{Manifest, ManifestKind, Rendered};
use airlock_installer::site::answers::Secret;
use airlock_tests::{helm, helm_command, workspace_root};
use serde::Deserialize;
use serde_yaml::Value;

const KC_ADMIN_PW: &str = "e2e-kc-admin-pw-51f0";
const KC_BIND_PW: &str = "e2e-ldap-bind-pw-a93d";
const KC_CLIENT_SECRET: &str = "e2e-client-secret-77b2";
const KC_DB_PW: &str = "e2e-kc-db-pw-0c4e";
const MINIO_ROOT_PW: &str = "e2e-minio-root-pw-3e8a";
const MINIO_KEY_BODY: &str = "MIIEe2eminiokey6d2c";
const SECRETS: &[&str] = &[KC_ADMIN_PW, KC_BIND_PW, KC_CLIENT_SECRET, KC_DB_PW, MINIO_ROOT_PW, MINIO_KEY_BODY];

fn cert(tag: &str) -> String {
    format!("-----BEGIN CERTIFICATE-----\nMIIB{tag}\n-----END CERTIFICATE-----\n")
}

fn keycloak_input(ha: bool) -> KeycloakInput {
    KeycloakInput {
        release: "keycloak".into(),
        namespace: "keycloak".into(),
        domain: "platform.example.test".into(),
        ha,
        realm: "airlock".into(),
        app_client_id: "app".into(),
        app_redirect_paths: vec!["/*".into()],
        app_audiences: vec!["api".into()],
        ingress_tls_secret: "keycloak-tls".into(),
        site_ca_pem: cert("siteca"),
        ldap: KeycloakLdap {
            connection_url: "ldaps://dc1.example.test:636".into(),
            start_tls: false,
            bind_dn: "CN=svc-keycloak,OU=Services,DC=example,DC=test".into(),
            users_dn: "OU=Users,DC=example,DC=test".into(),
            vendor: LdapVendor::ActiveDirectory,
            username_attribute: "sAMAccountName".into(),
            rdn_attribute: "cn".into(),
            uuid_attribute: "objectGUID".into(),
            user_object_classes: vec!["person".into(), "organizationalPerson".into(), "user".into()],
            users_filter: None,
            groups_dn: "OU=Groups,DC=example,DC=test".into(),
            group_object_class: "group".into(),
            membership_attribute: "member".into(),
            ca_pem: Some(cert("customerca")),
        },
        database: ha.then(|| KeycloakDatabase {
            vendor: "postgres".into(),
            host: "postgres.app.svc.cluster.local".into(),
            port: 5432,
            database: "keycloak".into(),
            username: "keycloak".into(),
            password: Secret::new(KC_DB_PW),
            ca_pem: Some(cert("dbca")),
        }),
        credentials: KeycloakCredentials {
            admin_username: "admin".into(),
            admin_password: Secret::new(KC_ADMIN_PW),
            ldap_bind_password: Secret::new(KC_BIND_PW),
            app_client_secret: Secret::new(KC_CLIENT_SECRET),
        },
        grafana_client: None,
    }
}

fn minio_input(servers: u32) -> MinioInput {
    MinioInput {
        release: "minio".into(),
        namespace: "minio".into(),
        domain: "platform.example.test".into(),
        servers,
        buckets: vec!["app-exports".into()],
        volume_size: "10Gi".into(),
        storage_class: None,
        tls: MinioTls {
            cert_pem: cert("minioserver"),
            key_pem: Secret::new(format!("-----BEGIN PRIVATE KEY-----\n{MINIO_KEY_BODY}\n-----END PRIVATE KEY-----\n")),
            ca_pem: cert("siteca"),
        },
        credentials: MinioCredentials { root_user: "airlock-root".into(), root_password: Secret::new(MINIO_ROOT_PW) },
        users: Vec::new(),
    }
}

/// `helm template <release> <chart> -f <values> --namespace <ns>`, parsed.
fn helm_template(chart: &Path, release: &str, namespace: &str, values: &str) -> Option<Vec<Value>> {
    let helm = helm()?;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let values_file = tmp.path().join("values.yaml");
    fs::write(&values_file, values).unwrap();
    let out = helm_command(&helm, &home)
        .args(["template", release])
        .arg(chart)
        .arg("-f")
        .arg(&values_file)
        .args(["--namespace", namespace])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {release} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_docs(&String::from_utf8(out.stdout).unwrap()))
}

fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

fn find<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = find(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// The keys each Secret / ConfigMap offers: ours (airlock's manifests) and the chart's.
#[derive(Default)]
struct Provided {
    secrets: BTreeMap<String, BTreeSet<String>>,
    config_maps: BTreeMap<String, BTreeSet<String>>,
}

impl Provided {
    fn add(&mut self, doc: &Value) {
        let keys = |field: &str| -> BTreeSet<String> {
            doc[field]
                .as_mapping()
                .map(|m| m.keys().filter_map(|k| k.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        match kind(doc) {
            "Secret" => {
                let mut k = keys("data");
                k.extend(keys("stringData"));
                self.secrets.entry(name(doc).to_string()).or_default().extend(k);
            }
            "ConfigMap" => {
                self.config_maps.entry(name(doc).to_string()).or_default().extend(keys("data"));
            }
            _ => {}
        }
    }

    fn of(rendered: &Rendered, chart_docs: &[Value]) -> Self {
        let mut p = Provided::default();
        for m in &rendered.manifests {
            p.add(&serde_yaml::from_str(&m.yaml).unwrap());
        }
        for d in chart_docs {
            p.add(d);
        }
        p
    }

    /// Keycloak's ingress certificate is a `kubernetes.io/tls` Secret the PKI step
    /// writes (its name is an input of the render), not one this render makes.
    fn with_pki_tls_secret(mut self, name: &str) -> Self {
        assert!(!self.secrets.contains_key(name), "the render itself made `{name}`");
        self.secrets.insert(name.to_string(), BTreeSet::from(["tls.crt".to_string(), "tls.key".to_string()]));
        self
    }

    fn secret_key(&self, secret: &str, key: Option<&str>, at: &str) {
        let keys = self.secrets.get(secret).unwrap_or_else(|| panic!("{at}: Secret `{secret}` is rendered by no one"));
        if let Some(k) = key {
            assert!(keys.contains(k), "{at}: Secret `{secret}` has no key `{k}` (has {keys:?})");
        }
    }

    fn config_map_key(&self, cm: &str, key: Option<&str>, at: &str) {
        let keys = self.config_maps.get(cm).unwrap_or_else(|| panic!("{at}: ConfigMap `{cm}` is rendered by no one"));
        if let Some(k) = key {
            assert!(keys.contains(k), "{at}: ConfigMap `{cm}` has no key `{k}` (has {keys:?})");
        }
    }

    /// Every Secret/ConfigMap reference of every pod template and ingress resolves.
    /// Returns how many references were checked, so a test sees it checked something.
    fn check_references(&self, docs: &[Value]) -> usize {
        let mut n = 0;
        for d in docs {
            let at = format!("{} {}", kind(d), name(d));
            for tls in seq(&d["spec"]["tls"]) {
                if let Some(s) = tls["secretName"].as_str() {
                    self.secret_key(s, Some("tls.crt"), &at);
                    self.secret_key(s, Some("tls.key"), &at);
                    n += 1;
                }
            }
            let pod = &d["spec"]["template"]["spec"];
            if pod.is_null() {
                continue;
            }
            let containers = seq(&pod["containers"]).into_iter().chain(seq(&pod["initContainers"]));
            for c in containers {
                for e in seq(&c["env"]) {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    if let Some(s) = r["name"].as_str() {
                        self.secret_key(s, r["key"].as_str(), &at);
                        n += 1;
                    }
                    let r = &e["valueFrom"]["configMapKeyRef"];
                    if let Some(s) = r["name"].as_str() {
                        self.config_map_key(s, r["key"].as_str(), &at);
                        n += 1;
                    }
                }
                for e in seq(&c["envFrom"]) {
                    if let Some(s) = e["secretRef"]["name"].as_str() {
                        self.secret_key(s, None, &at);
                        n += 1;
                    }
                    if let Some(s) = e["configMapRef"]["name"].as_str() {
                        self.config_map_key(s, None, &at);
                        n += 1;
                    }
                }
            }
            for v in seq(&pod["volumes"]) {
                let mut sources = vec![v.clone()];
                sources.extend(seq(&v["projected"]["sources"]));
                for s in sources {
                    let (secret_name, cm_name) = (
                        s["secret"]["secretName"].as_str().or(s["secret"]["name"].as_str()),
                        s["configMap"]["name"].as_str(),
                    );
                    let items =
                        if secret_name.is_some() { seq(&s["secret"]["items"]) } else { seq(&s["configMap"]["items"]) };
                    if let Some(name) = secret_name {
                        self.secret_key(name, None, &at);
                        for i in &items {
                            self.secret_key(name, i["key"].as_str(), &at);
                        }
                        n += 1;
                    }
                    if let Some(name) = cm_name {
                        self.config_map_key(name, None, &at);
                        for i in &items {
                            self.config_map_key(name, i["key"].as_str(), &at);
                        }
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

/// No generated secret in the values, in airlock's non-Secret objects, or in any
/// object the chart renders that is not a Secret.
fn assert_no_secret_outside_secrets(rendered: &Rendered, chart_docs: &[Value]) {
    let mut texts: Vec<(String, String)> = vec![("values".into(), rendered.values_yaml.clone())];
    texts.extend(
        rendered.manifests.iter().filter(|m| !m.is_secret()).map(|m| (format!("airlock {}", m.name), m.yaml.clone())),
    );
    texts.extend(
        chart_docs
            .iter()
            .filter(|d| kind(d) != "Secret")
            .map(|d| (format!("chart {} {}", kind(d), name(d)), serde_yaml::to_string(d).unwrap())),
    );
    for (what, text) in &texts {
        for s in SECRETS {
            assert!(!text.contains(s), "secret value `{s}` appears in {what}");
        }
    }
}

/// The container rules of the restricted Pod Security level (which RKE2's CIS
/// profile enforces), checked on every pod template the chart renders: no privilege
/// escalation, all capabilities dropped, non-root and the runtime's seccomp profile
/// (each set on the container or inherited from the pod). Returns the containers seen.
fn assert_restricted_pod_security(docs: &[Value]) -> usize {
    let mut n = 0;
    for d in docs {
        let pod = &d["spec"]["template"]["spec"];
        if pod.is_null() {
            continue;
        }
        let pod_sc = &pod["securityContext"];
        for c in seq(&pod["containers"]).into_iter().chain(seq(&pod["initContainers"])) {
            let at = format!("{} {} container {}", kind(d), name(d), c["name"].as_str().unwrap_or("?"));
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{at}: allowPrivilegeEscalation");
            assert!(seq(&sc["capabilities"]["drop"]).iter().any(|c| c.as_str() == Some("ALL")), "{at}: drop ALL");
            let non_root = sc["runAsNonRoot"].as_bool().or(pod_sc["runAsNonRoot"].as_bool());
            assert_eq!(non_root, Some(true), "{at}: runAsNonRoot");
            let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_sc["seccompProfile"]["type"].as_str());
            assert_eq!(seccomp, Some("RuntimeDefault"), "{at}: seccompProfile");
            n += 1;
        }
    }
    n
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(c: &'a Value, var: &str) -> &'a Value {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
        .unwrap_or_else(|| panic!("no env {var}"))
}

fn keycloak_chart() -> std::path::PathBuf {
    workspace_root().join("../shared/charts/codecentric-keycloakx")
}

fn secret_manifest<'a>(r: &'a Rendered, name: &str) -> &'a Manifest {
    let m = r.manifest(name).unwrap_or_else(|| panic!("no manifest {name}"));
    assert_eq!(m.kind, ManifestKind::Secret);
    m
}

#[test]
fn keycloak_chart_imports_the_realm_from_its_configmap_with_secrets_referenced() {
    let input = keycloak_input(false);
    let rendered = keycloak::render(&input).unwrap();
    let Some(docs) = helm_template(&keycloak_chart(), &input.release, &input.namespace, &rendered.values_yaml) else {
        return;
    };
    let provided = Provided::of(&rendered, &docs).with_pki_tls_secret(&input.ingress_tls_secret);
    assert!(provided.check_references(&docs) >= 6, "too few references checked");
    assert_no_secret_outside_secrets(&rendered, &docs);
    assert_eq!(assert_restricted_pod_security(&docs), 1);

    let sts = one(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(1));
    let kc = container(sts, "keycloak");
    assert_eq!(kc["args"], serde_yaml::from_str::<Value>("[start, --import-realm]").unwrap());

    // The realm ConfigMap is mounted where --import-realm reads, and holds the realm.
    let names = keycloak::Names::new(&input.release);
    let volumes = seq(&sts["spec"]["template"]["spec"]["volumes"]);
    let realm_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(names.realm_config_map.as_str()))
        .expect("the realm ConfigMap is a volume");
    let mount = seq(&kc["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == realm_volume["name"])
        .expect("the realm volume is mounted");
    assert_eq!(mount["mountPath"].as_str(), Some(keycloak::IMPORT_DIR));
    let cm: Value = serde_yaml::from_str(&rendered.manifest(&names.realm_config_map).unwrap().yaml).unwrap();
    let realm_text = cm["data"]["airlock-realm.json"].as_str().expect("the realm file is *.json");
    let realm: serde_json::Value = serde_json::from_str(realm_text).unwrap();
    assert_eq!(realm["realm"], "airlock");

    // Every ${ENV} placeholder of the realm is a key of a Secret the container gets via envFrom.
    let env_from: Vec<String> =
        seq(&kc["envFrom"]).iter().filter_map(|e| e["secretRef"]["name"].as_str().map(String::from)).collect();
    let env_keys: BTreeSet<String> = env_from.iter().flat_map(|s| provided.secrets[s].iter().cloned()).collect();
    let placeholders: Vec<&str> = realm_text.split("${").skip(1).map(|rest| rest.split('}').next().unwrap()).collect();
    assert_eq!(placeholders.len(), 2, "{realm_text}");
    for p in placeholders {
        assert!(env_keys.contains(p), "placeholder ${{{p}}} has no value in the container's env Secrets");
    }

    // Admin credentials from the admin Secret (Keycloak 26 names).
    for (var, key) in [("KC_BOOTSTRAP_ADMIN_USERNAME", "username"), ("KC_BOOTSTRAP_ADMIN_PASSWORD", "password")] {
        let r = &env(kc, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"].as_str(), Some(names.admin_secret.as_str()));
        assert_eq!(r["key"].as_str(), Some(key));
    }
    let admin: Value = serde_yaml::from_str(&secret_manifest(&rendered, &names.admin_secret).yaml).unwrap();
    assert_eq!(admin["stringData"]["password"].as_str(), Some(KC_ADMIN_PW));

    // The truststore: KC_TRUSTSTORE_PATHS points at the mounted CA ConfigMap.
    let path = env(kc, "KC_TRUSTSTORE_PATHS")["value"].as_str().unwrap();
    let trust_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(names.truststore_config_map.as_str()))
        .expect("the truststore ConfigMap is a volume");
    let trust_mount =
        seq(&kc["volumeMounts"]).into_iter().find(|m| m["name"] == trust_volume["name"]).expect("mounted");
    assert_eq!(trust_mount["mountPath"].as_str(), Some(path));
    assert!(provided.config_maps[&names.truststore_config_map].contains("ldap-ca.pem"));

    // Behind the ingress: proxy headers, hostname, TLS with our Secret.
    assert_eq!(env(kc, "KC_PROXY_HEADERS")["value"].as_str(), Some("xforwarded"));
    assert_eq!(env(kc, "KC_HOSTNAME")["value"].as_str(), Some("https://keycloak.platform.example.test"));
    assert_eq!(env(kc, "KC_DB")["value"].as_str(), Some("dev-file"));
    let ingress = one(&docs, "Ingress");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"].as_str(), Some("keycloak-tls"));
    assert_eq!(ingress["spec"]["tls"][0]["hosts"][0].as_str(), Some("keycloak.platform.example.test"));
    assert_eq!(ingress["spec"]["rules"][0]["host"].as_str(), Some("keycloak.platform.example.test"));
    assert_eq!(ingress["spec"]["rules"][0]["http"]["paths"][0]["path"].as_str(), Some("/"));
}

#[test]
fn keycloak_ha_chart_runs_two_replicas_on_the_external_database() {
    let input = keycloak_input(true);
    let rendered = keycloak::render(&input).unwrap();
    let Some(docs) = helm_template(&keycloak_chart(), &input.release, &input.namespace, &rendered.values_yaml) else {
        return;
    };
    let provided = Provided::of(&rendered, &docs).with_pki_tls_secret(&input.ingress_tls_secret);
    provided.check_references(&docs);
    assert_no_secret_outside_secrets(&rendered, &docs);
    let sts = one(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(2));
    assert!(sts["spec"]["volumeClaimTemplates"].is_null(), "no file database volume in HA");
    let kc = container(sts, "keycloak");
    assert_eq!(env(kc, "KC_DB")["value"].as_str(), Some("postgres"));
    assert_eq!(env(kc, "KC_CACHE_STACK")["value"].as_str(), Some("jdbc-ping"));
    for (var, value) in [
        ("KC_DB_URL_HOST", "postgres.app.svc.cluster.local"),
        ("KC_DB_URL_PORT", "5432"),
        ("KC_DB_URL_DATABASE", "keycloak"),
        ("KC_DB_USERNAME", "keycloak"),
        // The database's CA: pgjdbc verifies the server against it.
        ("KC_DB_URL_PROPERTIES", "?sslmode=verify-full&sslrootcert=/opt/airlock/truststore/db-ca.pem"),
    ] {
        assert_eq!(env(kc, var)["value"].as_str(), Some(value), "{var}");
    }
    let trust = rendered.manifest("keycloak-truststore").expect("the truststore ConfigMap");
    assert!(trust.yaml.contains("db-ca.pem") && trust.yaml.contains("MIIBdbca"), "{}", trust.yaml);
    let pw = &env(kc, "KC_DB_PASSWORD")["valueFrom"]["secretKeyRef"];
    assert_eq!(pw["name"].as_str(), Some("keycloak-database"));
    assert_eq!(pw["key"].as_str(), Some("password"));
    assert!(secret_manifest(&rendered, "keycloak-database").yaml.contains(KC_DB_PW));
    assert!(!rendered.values_yaml.contains(KC_DB_PW), "the password is in the values");
    // The chart renders no database Secret of its own: the password is only ours.
    assert!(find(&docs, "Secret").is_empty(), "the chart rendered a Secret");
}

#[test]
fn keycloak_chart_output_holds_no_generated_secret_at_all() {
    // Stronger than the per-object check: with airlock's values the chart renders no
    // Secret of its own, so nothing it outputs (annotations, startup scripts, the
    // `secrets:` value) may carry a generated value.
    let input = keycloak_input(false);
    let rendered = keycloak::render(&input).unwrap();
    let Some(docs) = helm_template(&keycloak_chart(), &input.release, &input.namespace, &rendered.values_yaml) else {
        return;
    };
    let all = docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect::<String>();
    for s in SECRETS {
        assert!(!all.contains(s), "`{s}` in the chart output");
    }
}

fn minio_chart() -> std::path::PathBuf {
    workspace_root().join("../shared/charts/minio-5.4.0.tgz")
}

#[test]
fn minio_single_node_chart_is_a_standalone_deployment_with_our_secrets() {
    let input = minio_input(1);
    let rendered = minio::render(&input).unwrap();
    let Some(docs) = helm_template(&minio_chart(), &input.release, &input.namespace, &rendered.values_yaml) else {
        return;
    };
    let provided = Provided::of(&rendered, &docs);
    assert!(provided.check_references(&docs) >= 6, "too few references checked");
    assert_no_secret_outside_secrets(&rendered, &docs);
    // MinIO and the bucket job.
    assert_eq!(assert_restricted_pod_security(&docs), 2);

    assert!(find(&docs, "StatefulSet").is_empty(), "standalone MinIO must not be a StatefulSet");
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"].as_u64(), Some(1));
    let c = container(deploy, "minio");
    for (var, key) in [("MINIO_ROOT_USER", "rootUser"), ("MINIO_ROOT_PASSWORD", "rootPassword")] {
        let r = &env(c, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"].as_str(), Some("minio-root"), "{var}");
        assert_eq!(r["key"].as_str(), Some(key), "{var}");
    }
    // The chart must not render its own root Secret (it would hold a random password).
    assert!(find(&docs, "Secret").is_empty(), "the chart rendered a Secret");
    // TLS: our Secret mounted as MinIO's certs, the site CA as its trusted CAs.
    let volumes = seq(&deploy["spec"]["template"]["spec"]["volumes"]);
    let cert = volumes.iter().find(|v| v["name"].as_str() == Some("cert-secret-volume")).expect("cert volume");
    assert_eq!(cert["secret"]["secretName"].as_str(), Some("minio-tls"));
    let cas = volumes.iter().find(|v| v["name"].as_str() == Some("trusted-cert-secret-volume")).expect("CA volume");
    assert_eq!(cas["secret"]["secretName"].as_str(), Some("minio-ca"));
    assert!(c["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|a| a.as_str().is_some_and(|s| s.contains("-S /etc/minio/certs/"))));

    // Ingresses on <domain> with our certificate.
    let ingresses = find(&docs, "Ingress");
    let hosts: BTreeSet<&str> = ingresses.iter().filter_map(|i| i["spec"]["rules"][0]["host"].as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["s3.platform.example.test", "minio.platform.example.test"]));
    for i in &ingresses {
        assert_eq!(i["spec"]["tls"][0]["secretName"].as_str(), Some("minio-tls"));
        assert_eq!(
            i["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"].as_str(),
            Some("HTTPS")
        );
    }

    // The post-install job creates our bucket and no default `console` user.
    let cm = find(&docs, "ConfigMap").into_iter().find(|c| name(c) == "minio").expect("the chart's script ConfigMap");
    let init = cm["data"]["initialize"].as_str().unwrap();
    assert!(init.lines().any(|l| l.trim_start().starts_with("createBucket app-exports")), "{init}");
    let add_user = cm["data"]["add-user"].as_str().unwrap();
    assert!(!add_user.contains("console123") && !add_user.contains("createUser console"), "{add_user}");
}

#[test]
fn minio_ha_chart_is_a_distributed_statefulset_one_pod_per_server() {
    let input = minio_input(3);
    let rendered = minio::render(&input).unwrap();
    let Some(docs) = helm_template(&minio_chart(), &input.release, &input.namespace, &rendered.values_yaml) else {
        return;
    };
    let provided = Provided::of(&rendered, &docs);
    provided.check_references(&docs);
    assert_no_secret_outside_secrets(&rendered, &docs);
    assert_eq!(assert_restricted_pod_security(&docs), 2);
    assert!(find(&docs, "Deployment").is_empty(), "distributed MinIO is not a Deployment");
    let sts = one(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(3));
    // Three pods with two drives each (erasure coding wants at least four), over TLS.
    let command =
        container(sts, "minio")["command"].as_sequence().unwrap().last().unwrap().as_str().unwrap().to_string();
    assert!(command.contains("https://minio-{0...2}.minio-svc.minio.svc/export-{0...1}"), "{command}");
    assert_eq!(sts["spec"]["volumeClaimTemplates"].as_sequence().map(Vec::len), Some(2));
    // The pods' names are covered by the certificate the PKI step is asked for.
    let names = minio::certificate_dns_names(&input.release, &input.namespace, &input.domain, input.servers);
    assert!(names.contains(&"*.minio-svc.minio.svc".to_string()), "{names:?}");
}

/// The values reach the chart the way K3s hands them over: inside the `HelmChart`
/// manifest the distribution renderer writes (as `valuesContent`, a YAML string with
/// the chart's own templated YAML strings inside), and the render's objects land
/// beside it in the same auto-deploy directory without clashing with it.
#[test]
fn platform_values_survive_the_helmchart_manifest_and_sit_beside_it() {
    use airlock_installer::engine::layout::FileSource;
    use airlock_installer::render::distribution::{self, Artifacts, ChartInput, DistributionInput, Role, Token};

    let Some(helm_bin) = helm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    // The keycloakx chart is a directory in shared/: package it as the bundler would.
    let out =
        helm_command(&helm_bin, &home).arg("package").arg(keycloak_chart()).arg("-d").arg(tmp.path()).output().unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    let kc_tgz = fs::read(tmp.path().join(format!("keycloakx-{}.tgz", keycloak::CHART_VERSION))).unwrap();
    let minio_tgz = fs::read(minio_chart()).unwrap();

    let kc = keycloak::render(&keycloak_input(false)).unwrap();
    let mo = minio::render(&minio_input(1)).unwrap();
    let chart = |name: &str, version: &str, ns: &str, tgz: Vec<u8>, values: &str| ChartInput {
        name: name.into(),
        version: version.into(),
        namespace: ns.into(),
        entry: format!("charts/{name}-{version}.tgz"),
        tgz,
        values_yaml: values.into(),
        values_secret: false,
    };
    let input = DistributionInput {
        version: "v1.31.4+k3s1".into(),
        role: Role::SingleServer,
        node_name: "node-1".into(),
        node_ip: vec!["10.0.0.11".parse().unwrap()],
        tls_san: vec![],
        token: Token::new("K10-platform-test::server:1a2b"),
        cluster_cidr: vec![],
        service_cidr: vec![],
        cluster_dns: None,
        disable: vec![],
        embedded_registry: false,
        secrets_encryption: false,
        cis: false,
        kube_apiserver_args: vec![],
        data_dir: None,
        registry_mirror: None,
        artifacts: Artifacts::K3s { binary: "distribution/k3s".into(), images: vec![] },
        image_archive_entry: "images/airlock-images.tar".into(),
        charts: vec![
            chart("keycloak", keycloak::CHART_VERSION, "keycloak", kc_tgz.clone(), &kc.values_yaml),
            chart("minio", minio::CHART_VERSION, "minio", minio_tgz.clone(), &mo.values_yaml),
        ],
        proxy_env: vec![],
        rke2_opt_prefix: None,
    };
    let mut layout = distribution::render(&input).unwrap();
    let manifests_dir = input.data_dir().join("server/manifests");
    layout.extend(kc.layout(&manifests_dir));
    layout.extend(mo.layout(&manifests_dir));

    // No two files at one path, and every Secret object is a secret file.
    let mut paths = BTreeSet::new();
    for f in &layout.files {
        assert!(paths.insert(f.path.clone()), "two files at {}", f.path.display());
    }
    for (r, f) in [(&kc, "keycloak"), (&mo, "minio")] {
        for m in &r.manifests {
            let file = layout.files.iter().find(|p| p.path == manifests_dir.join(m.file_name())).unwrap();
            assert_eq!(file.secret, m.is_secret(), "{f}: {}", m.name);
        }
    }
    // The plan as JSON (what --dry-run prints) carries no secret.
    let plan = serde_json::to_string(&layout).unwrap();
    for s in SECRETS {
        assert!(!plan.contains(s), "`{s}` in the plan");
    }

    for (name, rendered, tgz, ns) in [("keycloak", &kc, &kc_tgz, "keycloak"), ("minio", &mo, &minio_tgz, "minio")] {
        let file = layout.files.iter().find(|f| f.path == manifests_dir.join(format!("airlock-{name}.yaml"))).unwrap();
        assert!(!file.secret, "{name}: the HelmChart holds no secret, so it need not be a secret file");
        let FileSource::Inline(bytes) = &file.source else { panic!("{name}: HelmChart is inline") };
        let text = String::from_utf8(bytes.clone()).unwrap();
        for s in SECRETS {
            assert!(!text.contains(s), "{name}: `{s}` in the HelmChart manifest");
        }
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("HelmChart"));
        let values = doc["spec"]["valuesContent"].as_str().unwrap();
        assert_eq!(values, rendered.values_yaml, "{name}: valuesContent changed on the way");
        let chart_file = tmp.path().join(format!("{name}.tgz"));
        fs::write(&chart_file, tgz).unwrap();
        let docs = helm_template(&chart_file, name, ns, values).unwrap();
        assert!(!docs.is_empty());
    }
}

#[test]
fn keycloak_database_answers_that_yaml_would_retype_render_as_the_same_strings() {
    // Every answer that ends up in the chart's templates must reach the container as the
    // string the operator typed, whatever YAML would make of it unquoted.
    for tricky in [
        "true",
        "123",
        "~",
        "null",
        "[x]",
        "*alias",
        "yes",
        "1e3",
        "0x1F",
        "a: b",
        "'q'",
        "\"dq\"",
        "#c",
        "{{ fail \"x\" }}",
        "a}}b{{",
    ] {
        let mut input = keycloak_input(true);
        let db = input.database.as_mut().unwrap();
        db.username = tricky.into();
        db.database = tricky.into();
        let rendered = keycloak::render(&input).unwrap();
        let Some(docs) = helm_template(&keycloak_chart(), &input.release, &input.namespace, &rendered.values_yaml)
        else {
            return;
        };
        let kc = container(one(&docs, "StatefulSet"), "keycloak");
        for var in ["KC_DB_USERNAME", "KC_DB_URL_DATABASE"] {
            assert_eq!(env(kc, var)["value"], Value::String(tricky.into()), "{var} for {tricky:?}");
        }
    }
}

/// The realm sync script the Job runs parses as bash and passes shellcheck (when
/// installed): the proving ground runs it, this catches a broken edit in seconds.
#[test]
fn keycloak_realm_sync_script_parses_as_bash_and_passes_shellcheck() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sync.sh");
    std::fs::write(&script, airlock_installer::render::platform::keycloak::REALM_SYNC_SCRIPT).unwrap();
    let Some(bash) = airlock_tests::require_tool("bash") else { return };
    let o = std::process::Command::new(bash).arg("-n").arg(&script).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", String::from_utf8_lossy(&o.stderr));
    if let Some(shellcheck) = airlock_tests::require_tool("shellcheck") {
        let o = std::process::Command::new(shellcheck).arg(&script).output().unwrap();
        assert!(o.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&o.stdout));
    }
}
