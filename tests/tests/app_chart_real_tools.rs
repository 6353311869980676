//! The reference app chart (`assets/charts/airlock-app`) with the values
//! `platform::app::render` produces, against the real tools that will read it:
//!
//! - helm 3.18 (the Helm K3s' helm-controller runs) lints it strictly and templates
//!   it; the assertions are on the parsed objects: Secrets referenced by name, the
//!   Ingress host and TLS Secret, the NetworkPolicies (evaluated, not grepped: each
//!   path the blueprint allows is open and the ones it forbids are closed), the
//!   StatefulSet's volume claim and headless Service, the backup CronJob;
//! - every pod passes Pod Security "restricted" (the namespace enforces it);
//! - `kubernetes-validate --strict` (the JSON schemas of Kubernetes 1.31, offline)
//!   accepts every rendered object and every manifest `render` writes;
//! - no generated secret value is in the values or in any object but the Secrets;
//! - `helm package` packs the chart, and the bundler takes the chart directory;
//! - the backup's dump step, as rendered, dumps a real PostgreSQL (Debian's 15) into a
//!   file that restores, prunes dumps past the retention, and fails on a bad password;
//!   `DATABASE_URL` from the Secret connects with real libpq.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_installer::render::platform::app::{
    render, AppImages, AppInput, IngressController, KeycloakInput, MinioInput, Rendered, Scraper, DEFAULT_NAMESPACE,
    DEFAULT_RELEASE,
};
use airlock_installer::site::answers::Secret;
use airlock_tests::postgres::{as_db_user, postgres_bin_dir};
use airlock_tests::{helm, helm_command, require_tool, workspace_root};
use serde_json::{json, Value as Json};

const DB_PASSWORD: &str = "Db-Password:with@specials#42";
const S3_ACCESS: &str = "servandaAccess7731";
const S3_SECRET: &str = "servandaSecretKey0c1f9e2a";
const CLIENT_SECRET: &str = "oidc-client-secret-5d3b7f";
const SECRETS: [&str; 4] = [DB_PASSWORD, S3_ACCESS, S3_SECRET, CLIENT_SECRET];

fn chart_dir() -> PathBuf {
    workspace_root().join("assets/charts/airlock-app")
}

fn app_input() -> AppInput {
    AppInput {
        release: DEFAULT_RELEASE.into(),
        namespace: DEFAULT_NAMESPACE.into(),
        ingress_domain: "platform.example.org".into(),
        tls_secret: "airlock-app-tls".into(),
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n".into()),
        db_password: Secret::new(DB_PASSWORD),
        keycloak: KeycloakInput {
            realm: "servanda".into(),
            client_id: "servanda-app".into(),
            client_secret: Secret::new(CLIENT_SECRET),
            internal_url: "http://keycloak-keycloakx-http.keycloak.svc.cluster.local".into(),
            namespace: "keycloak".into(),
            pod_labels: BTreeMap::from([
                ("app.kubernetes.io/name".into(), "keycloakx".into()),
                ("app.kubernetes.io/instance".into(), "keycloak".into()),
            ]),
            port: 8080,
        },
        minio: MinioInput {
            endpoint: "https://minio.minio.svc.cluster.local:9000".into(),
            bucket: "servanda".into(),
            backup_bucket: Some("servanda-backup".into()),
            access_key: Secret::new(S3_ACCESS),
            secret_key: Secret::new(S3_SECRET),
            namespace: "minio".into(),
            pod_labels: BTreeMap::from([("app".into(), "minio".into()), ("release".into(), "minio".into())]),
            port: 9000,
        },
        images: AppImages {
            api: "registry.example:5000/servanda/api:1.4.2".into(),
            web: "registry.example:5000/servanda/web:1.4.2".into(),
            worker: "registry.example:5000/servanda/export-worker:1.4.2".into(),
            postgres: "docker.io/library/postgres:16.6".into(),
            backup_client: "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z".into(),
        },
        ingress_controller: IngressController::k3s_traefik(),
        metrics_scraper: None,
    }
}

/// A helm and a private home for it, or `None` (skip) when helm 3.18 is missing.
struct Helm {
    bin: PathBuf,
    tmp: tempfile::TempDir,
}

impl Helm {
    fn get() -> Option<Helm> {
        let bin = helm()?;
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        Some(Helm { bin, tmp })
    }

    fn cmd(&self) -> std::process::Command {
        helm_command(&self.bin, &self.tmp.path().join("home"))
    }

    fn values_file(&self, rendered: &Rendered) -> PathBuf {
        let p = self.tmp.path().join("values.yaml");
        fs::write(&p, &rendered.values_yaml).unwrap();
        p
    }

    /// `helm template` of `chart` with `values`, as helm-controller would install it
    /// (release = the HelmChart's name, in the target namespace); the raw output.
    fn template_raw(&self, chart: &Path, values: Option<&Path>) -> std::process::Output {
        let mut cmd = self.cmd();
        cmd.args(["template", DEFAULT_RELEASE]).arg(chart).args(["--namespace", DEFAULT_NAMESPACE]);
        cmd.args(["--kube-version", "1.31.0"]);
        if let Some(v) = values {
            cmd.arg("-f").arg(v);
        }
        cmd.output().unwrap()
    }

    fn template(&self, rendered: &Rendered) -> (String, Vec<Json>) {
        let values = self.values_file(rendered);
        let out = self.template_raw(&chart_dir(), Some(&values));
        assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let docs = parse_docs(&text);
        assert!(docs.len() >= 15, "helm rendered only {} objects", docs.len());
        (text, docs)
    }
}

fn parse_docs(text: &str) -> Vec<Json> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|j: &Json| !j.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", names(docs)))
}

fn names(docs: &[Json]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()))
        .collect()
}

/// The pod spec of a workload.
fn pod_spec(doc: &Json) -> &Json {
    match doc["kind"].as_str().unwrap() {
        "Deployment" | "StatefulSet" => &doc["spec"]["template"]["spec"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        k => panic!("{k} is not a workload"),
    }
}

fn workloads(docs: &[Json]) -> Vec<&Json> {
    docs.iter().filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet" | "CronJob"))).collect()
}

fn containers(spec: &Json) -> Vec<&Json> {
    ["initContainers", "containers"].iter().flat_map(|k| spec[*k].as_array().into_iter().flatten()).collect()
}

/// Every Secret a pod reads: `secretKeyRef`, `secretRef` and secret volumes.
fn secrets_read(spec: &Json) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in containers(spec) {
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                out.insert(n.to_string());
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = e["secretRef"]["name"].as_str() {
                out.insert(n.to_string());
            }
        }
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(n) = v["secret"]["secretName"].as_str() {
            out.insert(n.to_string());
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------

#[test]
fn helm_lints_the_chart_with_rendered_values_and_refuses_it_without_images() {
    let Some(h) = Helm::get() else { return };
    let rendered = render(&app_input()).unwrap();
    let values = h.values_file(&rendered);
    let out = h.cmd().args(["lint", "--strict"]).arg(chart_dir()).arg("-f").arg(&values).output().unwrap();
    assert!(
        out.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The chart's defaults name no image (any default would point at the internet):
    // rendering without the installer's values fails and says which value to set.
    let out = h.template_raw(&chart_dir(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the chart rendered without images");
    assert!(stderr.contains("value `images.") && stderr.contains("is required"), "{stderr}");
}

#[test]
fn workloads_read_their_credentials_from_the_rendered_secrets_by_name() {
    let Some(h) = Helm::get() else { return };
    let rendered = render(&app_input()).unwrap();
    let (_, docs) = h.template(&rendered);
    let expected: [(&str, &str, &[&str]); 5] = [
        ("Deployment", "airlock-app-api", &["airlock-app-db", "airlock-app-s3", "airlock-app-oidc"]),
        ("Deployment", "airlock-app-worker", &["airlock-app-db", "airlock-app-s3"]),
        ("Deployment", "airlock-app-web", &[]),
        ("StatefulSet", "airlock-app-postgresql", &["airlock-app-db"]),
        ("CronJob", "airlock-app-backup", &["airlock-app-db", "airlock-app-s3"]),
    ];
    assert_eq!(workloads(&docs).len(), expected.len(), "{:?}", names(&docs));
    let secret_names: BTreeSet<String> =
        rendered.manifests.iter().filter(|m| m.kind == "Secret").map(|m| m.name.clone()).collect();
    for (kind, name, want) in expected {
        let got = secrets_read(pod_spec(find(&docs, kind, name)));
        assert_eq!(got, set(want), "{kind} {name}");
        assert!(got.is_subset(&secret_names), "{kind} {name} reads a Secret render() does not write");
    }

    // Each key read exists in the Secret render() writes.
    let keys: BTreeMap<String, BTreeSet<String>> = rendered
        .manifests
        .iter()
        .filter(|m| m.secret)
        .map(|m| {
            let doc: Json = serde_yaml::from_str(m.expose_yaml()).unwrap();
            (m.name.clone(), doc["stringData"].as_object().unwrap().keys().cloned().collect())
        })
        .collect();
    for w in workloads(&docs) {
        let spec = pod_spec(w);
        for c in containers(spec) {
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if let (Some(n), Some(k)) = (r["name"].as_str(), r["key"].as_str()) {
                    assert!(keys[n].contains(k), "{}: Secret {n} has no key {k}", w["metadata"]["name"]);
                }
            }
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            for item in v["secret"]["items"].as_array().into_iter().flatten() {
                let n = v["secret"]["secretName"].as_str().unwrap();
                assert!(keys[n].contains(item["key"].as_str().unwrap()), "Secret {n} volume item");
            }
        }
    }

    // DATABASE_URL points at the Service the chart really creates.
    let db: Json =
        serde_yaml::from_str(rendered.manifests.iter().find(|m| m.name == "airlock-app-db").unwrap().expose_yaml())
            .unwrap();
    let url = db["stringData"]["url"].as_str().unwrap();
    let host = url.rsplit_once('@').unwrap().1.split(':').next().unwrap();
    let svc = find(&docs, "Service", "airlock-app-postgresql");
    assert_eq!(host, format!("{}.{DEFAULT_NAMESPACE}.svc.cluster.local", svc["metadata"]["name"].as_str().unwrap()));
    assert_eq!(svc["spec"]["ports"][0]["port"], 5432);
}

#[test]
fn ingress_serves_the_app_host_with_the_tls_secret() {
    let Some(h) = Helm::get() else { return };
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    let ing = find(&docs, "Ingress", "airlock-app-ingress");
    let tls = &ing["spec"]["tls"].as_array().unwrap()[0];
    assert_eq!(tls["secretName"], "airlock-app-tls");
    assert_eq!(tls["hosts"], json!(["app.platform.example.org"]));
    let rule = &ing["spec"]["rules"].as_array().unwrap()[0];
    assert_eq!(rule["host"], "app.platform.example.org");
    let paths: Vec<(String, String)> = rule["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap().into(), p["backend"]["service"]["name"].as_str().unwrap().into()))
        .collect();
    assert_eq!(paths, [("/api".into(), "airlock-app-api".into()), ("/".into(), "airlock-app-web".into())]);
    for (_, svc) in &paths {
        find(&docs, "Service", svc);
    }
}

#[test]
fn postgresql_is_a_statefulset_with_a_volume_claim_and_a_headless_service() {
    let Some(h) = Helm::get() else { return };
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    let sts = find(&docs, "StatefulSet", "airlock-app-postgresql");
    let headless = find(&docs, "Service", sts["spec"]["serviceName"].as_str().unwrap());
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let claim = &sts["spec"]["volumeClaimTemplates"].as_array().unwrap()[0];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    let c = &pod_spec(sts)["containers"][0];
    let mounts: Vec<&str> = c["volumeMounts"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(mounts.contains(&claim["metadata"]["name"].as_str().unwrap()), "{mounts:?}");
    assert_eq!(c["image"], "docker.io/library/postgres:16.6");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
}

#[test]
fn backup_runs_nightly_dumps_the_database_and_mirrors_the_bucket_onto_a_kept_volume() {
    let Some(h) = Helm::get() else { return };
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    let cj = find(&docs, "CronJob", "airlock-app-backup");
    assert_eq!(cj["spec"]["schedule"], "30 2 * * *");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let spec = pod_spec(cj);
    let claim =
        spec["volumes"].as_array().unwrap().iter().find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
    let pvc = find(&docs, "PersistentVolumeClaim", claim.expect("the backup volume"));
    assert_eq!(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "20Gi");

    let steps: Vec<(&str, String)> = containers(spec)
        .iter()
        .map(|c| {
            let argv: Vec<&str> = ["command", "args"]
                .iter()
                .flat_map(|k| c[*k].as_array().into_iter().flatten())
                .map(|a| a.as_str().unwrap())
                .collect();
            (c["name"].as_str().unwrap(), argv.join(" "))
        })
        .collect();
    assert_eq!(steps.iter().map(|s| s.0).collect::<Vec<_>>(), ["pg-dump", "mirror-bucket", "copy-to-bucket"]);
    assert!(steps[0].1.contains("pg_dump --format=custom"), "{}", steps[0].1);
    assert!(steps[1].1.contains("mirror --overwrite src/servanda /backup/objects/servanda"), "{}", steps[1].1);
    assert!(steps[2].1.contains("mirror --overwrite /backup src/servanda-backup"), "{}", steps[2].1);

    // Without a backup bucket the job stops at the volume.
    let mut input = app_input();
    input.minio.backup_bucket = None;
    let (_, docs) = h.template(&render(&input).unwrap());
    let spec = pod_spec(find(&docs, "CronJob", "airlock-app-backup"));
    let last: Vec<&str> = spec["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(last, ["summary"]);
}

// ---------------------------------------------------------------------------------
// NetworkPolicies, evaluated

/// A pod as the policies see it.
struct Pod<'a> {
    namespace: &'a str,
    labels: BTreeMap<String, String>,
}

fn pod<'a>(namespace: &'a str, labels: &[(&str, &str)]) -> Pod<'a> {
    Pod { namespace, labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

fn app_pod(component: &str) -> Pod<'static> {
    pod(
        DEFAULT_NAMESPACE,
        &[("app.kubernetes.io/instance", DEFAULT_RELEASE), ("app.kubernetes.io/component", component)],
    )
}

/// `matchLabels` + `matchExpressions` (In, NotIn, Exists, DoesNotExist); `{}` matches all.
fn selects(selector: &Json, labels: &BTreeMap<String, String>) -> bool {
    let ml = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_ok = ml.into_iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs = selector["matchExpressions"].as_array().into_iter().flatten();
    let exprs_ok = exprs.into_iter().all(|e| {
        let key = e["key"].as_str().unwrap();
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().map(|v| v.as_str().unwrap()).collect();
        match e["operator"].as_str().unwrap() {
            "In" => labels.get(key).is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => labels.get(key).is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => labels.contains_key(key),
            "DoesNotExist" => !labels.contains_key(key),
            op => panic!("operator {op}"),
        }
    });
    labels_ok && exprs_ok
}

/// Whether a peer entry (`podSelector`/`namespaceSelector`, no ipBlock) matches `other`,
/// for a policy in `policy_ns`. Namespaces carry `kubernetes.io/metadata.name`.
fn peer_matches(peer: &Json, policy_ns: &str, other: &Pod) -> bool {
    if peer.get("ipBlock").is_some() {
        return false;
    }
    let ns_ok = match peer.get("namespaceSelector") {
        None => other.namespace == policy_ns,
        Some(sel) => {
            selects(sel, &BTreeMap::from([("kubernetes.io/metadata.name".to_string(), other.namespace.to_string())]))
        }
    };
    let pod_ok = peer.get("podSelector").is_none_or(|sel| selects(sel, &other.labels));
    ns_ok && pod_ok
}

/// Whether a rule's ports allow `port` (by number, or by name resolved on the target).
fn port_allowed(rule: &Json, port: u16, port_name: Option<&str>) -> bool {
    let Some(ports) = rule["ports"].as_array() else { return true };
    ports.iter().any(|p| match &p["port"] {
        Json::Number(n) => n.as_u64() == Some(port as u64),
        Json::String(s) => Some(s.as_str()) == port_name,
        Json::Null => true,
        _ => false,
    })
}

/// Kubernetes semantics: traffic from `src` to `dst:port` passes when, for each side
/// in our namespace, either no policy of that direction selects the pod, or one of the
/// selecting policies has a rule that matches the peer and the port.
fn allowed(policies: &[&Json], src: &Pod, dst: &Pod, port: u16, port_name: Option<&str>) -> bool {
    let side = |pod: &Pod, other: &Pod, dir: &str, rules_key: &str, peers_key: &str| -> bool {
        if pod.namespace != DEFAULT_NAMESPACE {
            return true; // not ours to decide
        }
        let selecting: Vec<&&Json> = policies
            .iter()
            .filter(|p| {
                p["spec"]["policyTypes"].as_array().unwrap().iter().any(|t| t == dir)
                    && selects(&p["spec"]["podSelector"], &pod.labels)
            })
            .collect();
        selecting.is_empty()
            || selecting.iter().any(|p| {
                p["spec"][rules_key].as_array().into_iter().flatten().any(|rule| {
                    let peers = rule[peers_key].as_array();
                    let peer_ok =
                        peers.is_none_or(|ps| ps.iter().any(|peer| peer_matches(peer, DEFAULT_NAMESPACE, other)));
                    peer_ok && port_allowed(rule, port, port_name)
                })
            })
    };
    side(src, dst, "Egress", "egress", "to") && side(dst, src, "Ingress", "ingress", "from")
}

#[test]
fn network_policies_deny_by_default_and_open_only_the_blueprint_paths() {
    let Some(h) = Helm::get() else { return };
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    let policies: Vec<&Json> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    let deny = find(&docs, "NetworkPolicy", "airlock-app-default-deny");
    assert_eq!(deny["spec"]["podSelector"], json!({}));
    assert_eq!(deny["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());

    let traefik = pod("kube-system", &[("app.kubernetes.io/name", "traefik")]);
    let dns = pod("kube-system", &[("k8s-app", "kube-dns")]);
    let minio = pod("minio", &[("app", "minio"), ("release", "minio")]);
    let keycloak =
        pod("keycloak", &[("app.kubernetes.io/name", "keycloakx"), ("app.kubernetes.io/instance", "keycloak")]);
    let internet = pod("elsewhere", &[("any", "thing")]);
    let (api, web, worker, pg, backup) =
        (app_pod("api"), app_pod("web"), app_pod("worker"), app_pod("postgresql"), app_pod("backup"));
    let (other_dns, other_traefik) =
        (pod("other", &[("k8s-app", "kube-dns")]), pod("other", &[("app.kubernetes.io/name", "traefik")]));
    let http = Some("http");

    let open: Vec<(&str, &Pod, &Pod, u16, Option<&str>)> = vec![
        ("ingress controller -> web", &traefik, &web, 8080, http),
        ("ingress controller -> api", &traefik, &api, 3000, http),
        ("api -> postgres", &api, &pg, 5432, Some("postgresql")),
        ("worker -> postgres", &worker, &pg, 5432, Some("postgresql")),
        ("backup -> postgres", &backup, &pg, 5432, Some("postgresql")),
        ("api -> minio", &api, &minio, 9000, None),
        ("worker -> minio", &worker, &minio, 9000, None),
        ("backup -> minio", &backup, &minio, 9000, None),
        ("api -> keycloak", &api, &keycloak, 8080, None),
        ("api -> dns", &api, &dns, 53, None),
        ("worker -> dns", &worker, &dns, 53, None),
        ("web -> dns", &web, &dns, 53, None),
    ];
    for (what, src, dst, port, name) in open {
        assert!(allowed(&policies, src, dst, port, name), "{what} must be allowed");
    }
    let closed: Vec<(&str, &Pod, &Pod, u16, Option<&str>)> = vec![
        ("worker -> keycloak (blueprint: NOT)", &worker, &keycloak, 8080, None),
        ("web -> api (frontend has no backend access)", &web, &api, 3000, http),
        ("web -> postgres", &web, &pg, 5432, Some("postgresql")),
        ("web -> minio", &web, &minio, 9000, None),
        ("ingress controller -> postgres", &traefik, &pg, 5432, Some("postgresql")),
        ("ingress controller -> worker", &traefik, &worker, 3000, http),
        ("api -> the internet", &api, &internet, 443, None),
        ("worker -> the internet", &worker, &internet, 443, None),
        ("api -> minio on another port", &api, &minio, 9001, None),
        ("api -> dns in another namespace", &api, &other_dns, 53, None),
        ("another namespace -> api", &other_traefik, &api, 3000, http),
        ("postgres -> the internet", &pg, &internet, 443, None),
        ("the internet -> worker", &internet, &worker, 3000, http),
    ];
    for (what, src, dst, port, name) in closed {
        assert!(!allowed(&policies, src, dst, port, name), "{what} must be denied");
    }
    // The evaluator itself: without the default deny, the closed paths open up.
    let without_deny: Vec<&Json> =
        policies.iter().copied().filter(|p| p["metadata"]["name"] != "airlock-app-default-deny").collect();
    assert!(allowed(&without_deny, &internet, &worker, 3000, http), "a pod no ingress policy selects is open");

    // RKE2: ingress-nginx on the host network comes in from the node CIDRs.
    let mut input = app_input();
    input.ingress_controller = IngressController::rke2_ingress_nginx(vec!["10.0.0.0/24".parse().unwrap()]);
    let (_, docs) = h.template(&render(&input).unwrap());
    let p = find(&docs, "NetworkPolicy", "airlock-app-allow-ingress-controller");
    let from = &p["spec"]["ingress"][0]["from"];
    assert!(from.as_array().unwrap().iter().any(|f| f["ipBlock"]["cidr"] == "10.0.0.0/24"), "{from}");
}

#[test]
fn with_monitoring_prometheus_may_scrape_the_api_and_nothing_else() {
    let Some(h) = Helm::get() else { return };
    let prometheus = pod(
        "monitoring",
        &[
            ("app.kubernetes.io/name", "prometheus"),
            ("app.kubernetes.io/instance", "prometheus"),
            ("app.kubernetes.io/component", "server"),
        ],
    );
    let (api, web, worker, pg) = (app_pod("api"), app_pod("web"), app_pod("worker"), app_pod("postgresql"));
    let http = Some("http");
    // Without the monitoring component nobody scrapes: the API stays closed to it.
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    let policies: Vec<&Json> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    assert!(!allowed(&policies, &prometheus, &api, 3000, http), "scraped without monitoring");

    let mut input = app_input();
    input.metrics_scraper = Some(Scraper { namespace: "monitoring".into(), pod_labels: prometheus.labels.clone() });
    let (_, docs) = h.template(&render(&input).unwrap());
    let policies: Vec<&Json> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    assert!(allowed(&policies, &prometheus, &api, 3000, http), "Prometheus cannot scrape the API");
    for (what, dst, port, name) in
        [("web", &web, 8080, http), ("worker", &worker, 3000, http), ("postgres", &pg, 5432, Some("postgresql"))]
    {
        assert!(!allowed(&policies, &prometheus, dst, port, name), "Prometheus reaches {what}");
    }
    assert!(!allowed(&policies, &prometheus, &api, 9999, None), "Prometheus reaches another API port");
    let elsewhere = Pod { namespace: "other", labels: prometheus.labels.clone() };
    assert!(!allowed(&policies, &elsewhere, &api, 3000, http), "the same labels in another namespace get in");
}

// ---------------------------------------------------------------------------------
// Pod Security "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards)

/// The rules of the restricted profile (which includes baseline) that a pod template
/// can break; returns each violation.
fn restricted_violations(spec: &Json) -> Vec<String> {
    let mut v = Vec::new();
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[k] == true {
            v.push(k.to_string());
        }
    }
    const VOLUMES: [&str; 8] =
        ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        let kind = vol.as_object().unwrap().keys().find(|k| *k != "name").unwrap();
        if !VOLUMES.contains(&kind.as_str()) {
            v.push(format!("volume {} is {kind}", vol["name"]));
        }
    }
    let pod_sc = &spec["securityContext"];
    for c in containers(spec) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        let either = |k: &str| if sc[k].is_null() { &pod_sc[k] } else { &sc[k] };
        if sc["privileged"] == true {
            v.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either("runAsNonRoot") != true {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        if either("runAsUser") == 0 {
            v.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = either("seccompProfile")["type"].as_str().unwrap_or("");
        if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
            v.push(format!("{name}: seccompProfile `{seccomp}`"));
        }
        if !sc["capabilities"]["drop"].as_array().is_some_and(|d| d.iter().any(|x| x == "ALL")) {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p.get("hostPort").is_some_and(|h| h != 0) {
                v.push(format!("{name}: hostPort"));
            }
        }
    }
    v
}

#[test]
fn every_pod_passes_pod_security_restricted_with_limits_and_a_read_only_root() {
    let Some(h) = Helm::get() else { return };
    let (_, docs) = h.template(&render(&app_input()).unwrap());
    for w in workloads(&docs) {
        let name = w["metadata"]["name"].as_str().unwrap();
        let spec = pod_spec(w);
        let violations = restricted_violations(spec);
        assert!(violations.is_empty(), "{name} breaks Pod Security restricted: {violations:#?}");
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
        for c in containers(spec) {
            let cname = c["name"].as_str().unwrap();
            for k in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(c["resources"][k][r].is_string(), "{name}/{cname}: no {k}.{r}");
                }
            }
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{name}/{cname}");
            assert_eq!(c["imagePullPolicy"], "IfNotPresent", "{name}/{cname}: must never pull");
        }
    }
    // The checker can fail.
    let mut bad = pod_spec(find(&docs, "Deployment", "airlock-app-api")).clone();
    bad["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    bad["volumes"].as_array_mut().unwrap().push(json!({"name": "h", "hostPath": {"path": "/"}}));
    bad["initContainers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
    assert_eq!(
        restricted_violations(&bad),
        [
            "volume \"h\" is hostPath",
            "migrate: seccompProfile `Unconfined`",
            "api: allowPrivilegeEscalation is not false"
        ]
    );
}

// ---------------------------------------------------------------------------------

#[test]
fn no_generated_secret_reaches_the_values_or_any_object_but_the_secrets() {
    let Some(h) = Helm::get() else { return };
    let rendered = render(&app_input()).unwrap();
    let (text, docs) = h.template(&rendered);
    for s in SECRETS {
        assert!(!rendered.values_yaml.contains(s), "the values hold `{s}`");
        assert!(!text.contains(s), "helm's output holds `{s}`");
    }
    assert!(docs.iter().all(|d| d["kind"] != "Secret"), "the chart renders no Secret itself");
    for m in rendered.manifests.iter().filter(|m| !m.secret) {
        for s in SECRETS {
            assert!(!m.expose_yaml().contains(s), "{} {} holds `{s}`", m.kind, m.name);
        }
    }
    // Control: the Secrets render() writes do hold every one of them.
    let secret_text: String =
        rendered.manifests.iter().filter(|m| m.secret).map(|m| format!("---\n{}", m.expose_yaml())).collect();
    let secret_docs = parse_docs(&secret_text);
    let all = serde_json::to_string(&secret_docs).unwrap();
    for s in SECRETS {
        assert!(all.contains(s), "no Secret carries `{s}`");
    }
}

#[test]
fn rendered_objects_validate_against_the_kubernetes_schemas() {
    let Some(h) = Helm::get() else { return };
    let Some(kv) = require_tool("kubernetes-validate") else { return };
    let dir = h.tmp.path();
    let run = |f: &Path| std::process::Command::new(&kv).args(["--strict", "-k", "1.31.0"]).arg(f).output().unwrap();
    // The full K3s site, and the other branches of the templates: RKE2's host-network
    // ingress controller, no site CA, no backup bucket.
    let mut lean = app_input();
    lean.ca_pem = None;
    lean.minio.backup_bucket = None;
    lean.ingress_controller = IngressController::rke2_ingress_nginx(vec!["10.0.0.0/24".parse().unwrap()]);
    let mut first_text = String::new();
    for (case, input) in [("k3s", app_input()), ("rke2, no CA, no backup bucket", lean)] {
        let rendered = render(&input).unwrap();
        let (text, docs) = h.template(&rendered);
        let mut all = text.clone();
        for m in &rendered.manifests {
            all.push_str("---\n");
            all.push_str(m.expose_yaml());
        }
        let file = dir.join("all.yaml");
        fs::write(&file, &all).unwrap();
        let out = run(&file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{case}: kubernetes-validate: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let passed = stdout.lines().filter(|l| l.contains("passed for resource")).count();
        assert_eq!(passed, docs.len() + rendered.manifests.len(), "{case}: every object was checked:\n{stdout}");
        assert!(!stdout.contains("WARN"), "{case}: {stdout}");
        if first_text.is_empty() {
            first_text = text;
        }
    }

    // Control: a misspelled field fails the strict schema.
    let typo = dir.join("typo.yaml");
    fs::write(&typo, first_text.replacen("imagePullPolicy:", "imagePullPolicey:", 1)).unwrap();
    assert!(!run(&typo).status.success(), "a misspelled field passed");
}

#[test]
fn the_chart_packs_with_helm_package_and_the_bundler_takes_the_directory() {
    let Some(h) = Helm::get() else { return };
    let out_dir = h.tmp.path().join("packaged");
    let out = h.cmd().arg("package").arg(chart_dir()).arg("-d").arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    let tgz = out_dir.join("airlock-app-0.1.0.tgz");
    assert!(tgz.is_file());

    // The bundler packs the directory itself (deterministically) and reads helm's archive.
    let from_dir = airlock_bundler::sources::load_chart(&chart_dir(), 1_700_000_000).unwrap();
    let from_tgz = airlock_bundler::sources::load_chart(&tgz, 0).unwrap();
    for c in [&from_dir, &from_tgz] {
        assert_eq!((c.name.as_str(), c.version.as_str()), ("airlock-app", "0.1.0"));
        assert!(c.dependencies.is_empty(), "nothing to fetch at install time");
    }
    assert_eq!(from_dir, airlock_bundler::sources::load_chart(&chart_dir(), 1_700_000_000).unwrap(), "deterministic");

    // helm-controller gets the bundler's archive: it must template like the directory.
    let airlock_format::write::Content::Bytes(bytes) = &from_dir.content else {
        panic!("a packed directory is in memory")
    };
    let bundled = h.tmp.path().join("bundled.tgz");
    fs::write(&bundled, bytes).unwrap();
    let values = h.values_file(&render(&app_input()).unwrap());
    for chart in [&bundled, &tgz] {
        let out = h.template_raw(chart, Some(&values));
        assert!(out.status.success(), "{}: {}", chart.display(), String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            parse_docs(&String::from_utf8_lossy(&out.stdout)).len(),
            h.template(&render(&app_input()).unwrap()).1.len()
        );
    }
}

// ---------------------------------------------------------------------------------
// The backup's dump step against a real PostgreSQL

/// A throwaway PostgreSQL on 127.0.0.1 with the app's user and password, stopped
/// (`pg_ctl stop`) when dropped.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Postgres {
    fn start(bin: &Path, user: &str, password: &str) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        // The postgres user must be able to write here when we are root.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let pw = dir.path().join("pw");
        fs::write(&pw, password).unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
        let data = dir.path().join("data");
        let out = as_db_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pw.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = fs::File::create(dir.path().join("postgres.log")).unwrap();
        let child = as_db_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = Postgres { bin: bin.to_path_buf(), dir, child, port };
        for _ in 0..200 {
            let ready = std::process::Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .output()
                .unwrap();
            if ready.status.success() {
                return pg;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("postgres did not come up: {}", fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap());
    }

    /// `psql` as `user` against `db`, failing the test on error; the output, trimmed.
    fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let out = std::process::Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1"])
            .args(["-tAc", sql])
            .env("PGPASSWORD", password)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_db_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["stop", "-m", "fast", "-w"])
            .output();
        let _ = self.child.wait();
    }
}

/// The environment a container gets: literal values, and `secretKeyRef`s resolved
/// from the Secrets `render` wrote.
fn container_env(c: &Json, secrets: &BTreeMap<String, Json>) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    let s = &secrets[r["name"].as_str().unwrap()];
                    s["stringData"][r["key"].as_str().unwrap()].as_str().unwrap().to_string()
                }
            };
            (name, value)
        })
        .collect()
}

#[test]
fn backup_dump_step_dumps_a_real_postgresql_restorably_and_prunes_old_dumps() {
    let Some(h) = Helm::get() else { return };
    let Some(bin) = postgres_bin_dir() else { return };
    let rendered = render(&app_input()).unwrap();
    let secrets: BTreeMap<String, Json> = rendered
        .manifests
        .iter()
        .filter(|m| m.secret)
        .map(|m| (m.name.clone(), serde_yaml::from_str(m.expose_yaml()).unwrap()))
        .collect();
    let db = &secrets["airlock-app-db"]["stringData"];
    let (user, password, name) =
        (db["username"].as_str().unwrap(), db["password"].as_str().unwrap(), db["database"].as_str().unwrap());
    let pg = Postgres::start(&bin, user, password);
    pg.psql(user, password, "postgres", &format!("CREATE DATABASE {name}"));
    pg.psql(
        user,
        password,
        name,
        "CREATE TABLE exports (id int PRIMARY KEY, file text); INSERT INTO exports VALUES (1, 'contract.pdf')",
    );

    // DATABASE_URL as the app reads it: libpq decodes the percent-encoded password.
    let url = db["url"]
        .as_str()
        .unwrap()
        .replace("airlock-app-postgresql.app.svc.cluster.local:5432", &format!("127.0.0.1:{}", pg.port));
    let out = std::process::Command::new(bin.join("psql"))
        .arg(&url)
        .args(["-tAc", "SELECT file FROM exports"])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql DATABASE_URL: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "contract.pdf");

    // The pg-dump init container exactly as rendered; only its volume path (/backup)
    // and the database address are mapped onto this machine.
    let (_, docs) = h.template(&rendered);
    let spec = pod_spec(find(&docs, "CronJob", "airlock-app-backup"));
    let step = containers(spec).into_iter().find(|c| c["name"] == "pg-dump").unwrap().clone();
    assert_eq!(step["command"], json!(["sh", "-ec"]));
    let backup = pg.dir.path().join("backup");
    let script = step["args"][0].as_str().unwrap().replace("/backup", &backup.display().to_string());
    let dumps = backup.join("postgresql");
    fs::create_dir_all(&dumps).unwrap();
    for d in [&backup, &dumps] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let touch = |file: &str, age: &str| {
        let p = dumps.join(file);
        fs::write(&p, b"old").unwrap();
        assert!(std::process::Command::new("touch").arg("-d").arg(age).arg(&p).status().unwrap().success());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    };
    touch("app-20000101T000000Z.dump", "20 days ago"); // past the 14-day retention
    touch("app-recent.dump", "2 days ago");
    touch("app-20000102T000000Z.dump.partial", "1 hour ago"); // a run that died midway

    let run = |env: &[(String, String)]| {
        let mut cmd = as_db_user(Path::new("/bin/sh"));
        cmd.args(["-ec", &script]).env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let mut env = container_env(&step, &secrets);
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "PGHOST" => *v = "127.0.0.1".into(),
            "PGPORT" => *v = pg.port.to_string(),
            _ => {}
        }
    }
    let out = run(&env);
    assert!(
        out.status.success(),
        "pg-dump step: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut files: Vec<String> =
        fs::read_dir(&dumps).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let new: Vec<&String> = files.iter().filter(|f| f.starts_with("app-2") && f.ends_with("Z.dump")).collect();
    assert_eq!(new.len(), 1, "one new dump, the 20-day-old one pruned: {files:?}");
    assert!(files.contains(&"app-recent.dump".to_string()), "a dump inside the retention is kept: {files:?}");
    assert!(!files.iter().any(|f| f.ends_with(".partial")), "leftovers of a failed run are removed: {files:?}");
    let dump = dumps.join(new[0]);
    assert_eq!(fs::metadata(&dump).unwrap().permissions().mode() & 0o777, 0o600, "dumps are private (umask 077)");

    // The dump restores: into a fresh database, with the row.
    pg.psql(user, password, "postgres", "CREATE DATABASE restored");
    let out = as_db_user(&bin.join("pg_restore"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", user, "-d", "restored", "--no-owner"])
        .arg(&dump)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pg.psql(user, password, "restored", "SELECT file FROM exports WHERE id = 1"), "contract.pdf");

    // With a wrong password the step fails, and leaves no complete dump behind.
    for (k, v) in env.iter_mut() {
        if k == "PGPASSWORD" {
            *v = "wrong".into();
        }
    }
    fs::remove_file(&dump).unwrap();
    let out = run(&env);
    assert!(!out.status.success(), "the dump step succeeded with a wrong password");
    assert!(
        !fs::read_dir(&dumps).unwrap().any(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with("app-2") && n.ends_with("Z.dump")
        }),
        "a failed dump left a complete-looking file"
    );
}
