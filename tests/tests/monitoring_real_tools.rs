//! The monitoring component through the real tools:
//!
//! - helm 3.18 renders the prometheus 29.27.0 chart (its four dependencies vendored as
//!   the demo bundle carries them) and the grafana 12.11.1 chart with the values the
//!   installer generates, with no repository configured; `kubernetes-validate
//!   --strict` (Kubernetes 1.31 schemas, offline) accepts every object, ours included;
//! - every pod in the monitoring namespace passes the restricted Pod Security level,
//!   the ingresses serve the PKI's Secret on the three hosts, and every image the
//!   charts run is one the demo bundle carries;
//! - `promtool` (Debian's `prometheus` package) checks the Prometheus configuration
//!   the chart renders from those values and the rule file, runs the rules' unit tests
//!   (`assets/monitoring/rules/alerts.test.yaml`: each alert fires on a series that should
//!   fire it and stays silent on one that should not) on the rules as rendered, and
//!   parses every dashboard query;
//! - the rendered `grafana.ini` turns off every feature that reaches the internet.
//!
//! The rules and dashboards are the content the bundler carries by default (its
//! reference content, `airlock_bundler::monitoring`), so these checks run on what a
//! bundle ships, not on a copy of it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_installer::render::platform::monitoring::{
    self, AlertReceivers, AppTarget, Content, GrafanaOidc, MonitoringInput, MonitoringSizing, DASHBOARDS_CONFIG_MAP,
    GRAFANA_OIDC_SECRET,
};
use airlock_installer::render::platform::Rendered;
use airlock_installer::site::answers::{AlertMail, Secret};
use airlock_tests::{demo_dir, helm, helm_command, require_tool, workspace_root};
use serde::Deserialize;
use serde_yaml::Value;

const ADMIN_PW: &str = "e2e-grafana-admin-pw-4b1e";
const OIDC_SECRET: &str = "e2e-grafana-oidc-secret-93ad";

/// The monitoring content a bundle carries when its spec names none: the bundler's
/// reference rules and dashboards, as `airlock-bundler create` puts them in.
fn bundled_content() -> Content {
    let owned = |files: &[(&str, &str)]| files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    Content {
        rules: owned(airlock_bundler::monitoring::REFERENCE_RULES),
        dashboards: owned(airlock_bundler::monitoring::REFERENCE_DASHBOARDS),
    }
}

fn input() -> MonitoringInput {
    MonitoringInput {
        prometheus_release: "prometheus".into(),
        grafana_release: "grafana".into(),
        namespace: "monitoring".into(),
        node_namespace: "monitoring-node".into(),
        domain: "platform.example.test".into(),
        ingress_tls_secret: "monitoring-tls".into(),
        sizing: MonitoringSizing { retention_days: 30, prometheus_volume_gib: 40, ..MonitoringSizing::default() },
        storage_class: None,
        app: Some(AppTarget { namespace: "app".into(), release: "airlock-app".into() }),
        grafana_admin_password: Secret::new(ADMIN_PW),
        oidc: Some(GrafanaOidc {
            client_id: "grafana".into(),
            client_secret: Secret::new(OIDC_SECRET),
            public_realm_url: "https://keycloak.platform.example.test/realms/airlock".into(),
            internal_realm_url: "http://keycloak-keycloakx-http.keycloak.svc.cluster.local/realms/airlock".into(),
            admin_group: "grafana-admins".into(),
            editor_group: "grafana-editors".into(),
        }),
        receivers: AlertReceivers {
            webhook_url: Some("https://alerts.example.internal/hook".into()),
            mail: Some(AlertMail {
                smarthost: "mail.example.internal:25".into(),
                from: "alertmanager@example.org".into(),
                to: "ops@example.org".into(),
            }),
        },
        content: bundled_content(),
    }
}

fn chart(file: &str) -> PathBuf {
    demo_dir().join("charts").join(file)
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

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// One chart rendered with the generated values: helm's text and its objects.
struct Templated {
    text: String,
    docs: Vec<Value>,
}

/// `helm template <release> <chart> -f values --namespace monitoring`, with an empty
/// helm home (no repository: the render cannot reach for one).
fn template(helm: &Path, dir: &Path, chart: &Path, release: &str, rendered: &Rendered) -> Templated {
    let home = dir.join(format!("home-{release}"));
    fs::create_dir_all(&home).unwrap();
    let values = dir.join(format!("{release}-values.yaml"));
    fs::write(&values, &rendered.values_yaml).unwrap();
    let out = helm_command(helm, &home)
        .args(["template", release])
        .arg(chart)
        .arg("-f")
        .arg(&values)
        .args(["--namespace", "monitoring"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template {release}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    Templated { docs: parse_docs(&text), text }
}

struct Stack {
    tmp: tempfile::TempDir,
    prometheus: Rendered,
    grafana: Rendered,
    prom: Templated,
    graf: Templated,
}

fn stack() -> Option<Stack> {
    let helm = helm()?;
    let tmp = tempfile::tempdir().unwrap();
    let prometheus = monitoring::render_prometheus(&input()).unwrap();
    let grafana = monitoring::render_grafana(&input()).unwrap();
    let prom = template(&helm, tmp.path(), &chart("prometheus-29.27.0.tgz"), "prometheus", &prometheus);
    let graf = template(&helm, tmp.path(), &chart("grafana-12.11.1.tgz"), "grafana", &grafana);
    Some(Stack { tmp, prometheus, grafana, prom, graf })
}

fn config_map_data<'a>(docs: &'a [Value], cm: &str, key: &str) -> &'a str {
    docs.iter().find(|d| kind(d) == "ConfigMap" && name(d) == cm).unwrap_or_else(|| panic!("no ConfigMap {cm}"))["data"]
        [key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {cm} has no {key}"))
}

fn pod_spec(d: &Value) -> Option<&Value> {
    let p = &d["spec"]["template"]["spec"];
    (!p.is_null()).then_some(p)
}

/// The restricted level's container rules (RKE2's CIS profile enforces it), each set
/// on the container or inherited from the pod. Returns the containers checked.
fn assert_restricted(d: &Value) -> usize {
    let Some(pod) = pod_spec(d) else { return 0 };
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host].as_bool(), Some(true), "{} {}: {host}", kind(d), name(d));
    }
    assert!(seq(&pod["volumes"]).iter().all(|v| v["hostPath"].is_null()), "{} {}: a hostPath volume", kind(d), name(d));
    let pod_sc = &pod["securityContext"];
    let mut n = 0;
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
    n
}

/// The images of every pod template.
fn images(docs: &[Value]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in docs {
        if let Some(pod) = pod_spec(d) {
            for c in seq(&pod["containers"]).into_iter().chain(seq(&pod["initContainers"])) {
                out.insert(c["image"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

#[test]
fn both_charts_render_offline_with_the_generated_values_and_every_object_validates() {
    let Some(s) = stack() else { return };
    let Some(kv) = require_tool("kubernetes-validate") else { return };
    let mut all = format!("{}\n---\n{}", s.prom.text, s.graf.text);
    for m in s.prometheus.manifests.iter().chain(&s.grafana.manifests) {
        all.push_str("---\n");
        all.push_str(&m.yaml);
    }
    let file = s.tmp.path().join("all.yaml");
    fs::write(&file, &all).unwrap();
    let run = |f: &Path| Command::new(&kv).args(["--strict", "-k", "1.31.0"]).arg(f).output().unwrap();
    let out = run(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubernetes-validate: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let objects = s.prom.docs.len() + s.graf.docs.len() + s.prometheus.manifests.len() + s.grafana.manifests.len();
    assert_eq!(stdout.lines().filter(|l| l.contains("passed for resource")).count(), objects, "{stdout}");
    assert!(!stdout.contains("WARN"), "{stdout}");
    // Control: a misspelled field fails the strict schema.
    let typo = s.tmp.path().join("typo.yaml");
    fs::write(&typo, s.prom.text.replacen("imagePullPolicy:", "imagePullPolicey:", 1)).unwrap();
    assert!(!run(&typo).status.success(), "a misspelled field passed");

    // Server, Alertmanager, kube-state-metrics, node-exporter; no pushgateway.
    let workloads: BTreeSet<(String, String)> = s
        .prom
        .docs
        .iter()
        .filter(|d| pod_spec(d).is_some())
        .map(|d| (kind(d).to_string(), name(d).to_string()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("Deployment", "prometheus-server"),
        ("StatefulSet", "prometheus-alertmanager"),
        ("Deployment", "prometheus-kube-state-metrics"),
        ("DaemonSet", "prometheus-prometheus-node-exporter"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(workloads, expected);
    assert!(!s.prom.docs.iter().any(|d| name(d).contains("pushgateway")), "the pushgateway is rendered");
}

#[test]
fn the_monitoring_namespace_runs_restricted_pods_behind_tls_ingresses_from_bundled_images() {
    let Some(s) = stack() else { return };
    let docs: Vec<&Value> = s.prom.docs.iter().chain(&s.graf.docs).collect();
    let mut containers = 0;
    for d in &docs {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("monitoring");
        if ns == "monitoring-node" {
            // node-exporter: the one workload that needs the host, in its own
            // namespace (privileged); nothing else is there.
            assert!(name(d).contains("node-exporter"), "{} {} in monitoring-node", kind(d), name(d));
            continue;
        }
        assert_eq!(ns, "monitoring", "{} {}", kind(d), name(d));
        containers += assert_restricted(d);
    }
    // server + config reloader, alertmanager, kube-state-metrics, grafana.
    assert_eq!(containers, 5);
    let ne = docs.iter().find(|d| kind(d) == "DaemonSet").unwrap();
    assert_eq!(ne["metadata"]["namespace"].as_str(), Some("monitoring-node"));
    // Its textfile directory is the host's, where airlock writes the certificates' expiry.
    let mounts = seq(&ne["spec"]["template"]["spec"]["volumes"]);
    assert!(mounts.iter().any(|v| v["hostPath"]["path"].as_str() == Some(monitoring::TEXTFILE_DIR)), "{mounts:?}");

    let mut hosts = BTreeSet::new();
    for ing in docs.iter().filter(|d| kind(d) == "Ingress") {
        for t in seq(&ing["spec"]["tls"]) {
            assert_eq!(t["secretName"].as_str(), Some("monitoring-tls"), "{}", name(ing));
        }
        for r in seq(&ing["spec"]["rules"]) {
            hosts.insert(r["host"].as_str().unwrap().to_string());
        }
    }
    let want: BTreeSet<String> =
        ["prometheus", "alertmanager", "grafana"].iter().map(|h| format!("{h}.platform.example.test")).collect();
    assert_eq!(hosts, want);

    // Persistence from the profile's sizes.
    let pvc = docs.iter().find(|d| kind(d) == "PersistentVolumeClaim" && name(d) == "prometheus-server").unwrap();
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"].as_str(), Some("40Gi"));
    let server = docs.iter().find(|d| name(d) == "prometheus-server" && kind(d) == "Deployment").unwrap();
    let args: Vec<String> = seq(&server["spec"]["template"]["spec"]["containers"])
        .iter()
        .flat_map(|c| seq(&c["args"]))
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    assert!(args.contains(&"--storage.tsdb.retention.time=30d".to_string()), "{args:?}");
    // The app's NetworkPolicy lets in pods with these labels: the server's pods have them.
    let labels = &server["spec"]["template"]["metadata"]["labels"];
    for (k, v) in monitoring::server_pod_labels("prometheus") {
        assert_eq!(labels[k.as_str()].as_str(), Some(v.as_str()), "server pod label {k}");
    }

    // Every image is one the demo bundle carries (nothing to pull on site).
    let spec: Value = serde_yaml::from_str(&fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap()).unwrap();
    let bundled: BTreeSet<String> = seq(&spec["components"])
        .iter()
        .flat_map(|c| seq(&c["images"]))
        .map(|i| i["ref"].as_str().unwrap().to_string())
        .collect();
    let used = images(&s.prom.docs).into_iter().chain(images(&s.graf.docs)).collect::<BTreeSet<_>>();
    assert_eq!(used.len(), 6, "{used:?}");
    for i in &used {
        assert!(bundled.contains(i), "{i} is run by the charts but not in the demo bundle");
    }
    // The admin password and the OIDC client secret only in their Secrets (ours: the
    // chart renders none with them).
    for secret in [ADMIN_PW, OIDC_SECRET] {
        assert!(!s.prom.text.contains(secret) && !s.graf.text.contains(secret), "{secret} in a chart object");
        assert!(!s.prometheus.values_yaml.contains(secret) && !s.grafana.values_yaml.contains(secret));
    }
}

#[test]
fn grafanas_rendered_config_turns_every_outbound_feature_off() {
    let Some(s) = stack() else { return };
    let ini = config_map_data(&s.graf.docs, "grafana", "grafana.ini");
    let lines: BTreeSet<&str> = ini.lines().map(str::trim).collect();
    for want in [
        "[analytics]",
        "reporting_enabled = false",
        "check_for_updates = false",
        "check_for_plugin_updates = false",
        "feedback_links_enabled = false",
        "[security]",
        "disable_gravatar = true",
        "[news]",
        "news_feed_enabled = false",
        "[plugins]",
        "plugin_admin_enabled = false",
        "public_key_retrieval_disabled = true",
        "[snapshots]",
        "external_enabled = false",
    ] {
        assert!(lines.contains(want), "grafana.ini lacks `{want}`:\n{ini}");
    }
    // Nothing fetched at start: no plugin install, no dashboard download, no sidecar.
    let deploy = s.graf.docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    let pod = pod_spec(deploy).unwrap();
    let names: Vec<String> = seq(&pod["containers"])
        .into_iter()
        .chain(seq(&pod["initContainers"]))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["grafana"]);
    assert!(!s.graf.text.contains("GF_INSTALL_PLUGINS"));
    // The admin comes from our Secret, the dashboards from our ConfigMap.
    let env = serde_yaml::to_string(&seq(&pod["containers"])[0]["env"]).unwrap();
    assert!(env.contains("grafana-admin") && env.contains("admin-password"), "{env}");
    assert!(serde_yaml::to_string(&pod["volumes"]).unwrap().contains(DASHBOARDS_CONFIG_MAP));
    let providers = config_map_data(&s.graf.docs, "grafana", "dashboardproviders.yaml");
    assert!(providers.contains("/var/lib/grafana/dashboards/airlock"), "{providers}");
}

#[test]
fn grafana_logs_in_through_keycloak_with_the_client_secret_read_from_its_mounted_secret() {
    let Some(s) = stack() else { return };
    let ini = config_map_data(&s.graf.docs, "grafana", "grafana.ini");
    let section: Vec<&str> = ini
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "[auth.generic_oauth]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .collect();
    for want in [
        "enabled = true",
        "client_id = grafana",
        "client_secret = $__file{/etc/secrets/grafana-oidc/client-secret}",
        "use_pkce = true",
        "auth_url = https://keycloak.platform.example.test/realms/airlock/protocol/openid-connect/auth",
        "token_url = http://keycloak-keycloakx-http.keycloak.svc.cluster.local/realms/airlock/protocol/openid-connect/token",
        "role_attribute_path = contains(groups[*], 'grafana-admins') && 'Admin' || contains(groups[*], 'grafana-editors') && 'Editor' || 'Viewer'",
    ] {
        assert!(section.contains(&want), "[auth.generic_oauth] lacks `{want}`:\n{ini}");
    }
    // The break-glass admin keeps the login form.
    assert!(ini.contains("disable_login_form = false"), "{ini}");
    // The file Grafana reads is our Secret's key, mounted read-only.
    let deploy = s.graf.docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    let pod = pod_spec(deploy).unwrap();
    let vol = seq(&pod["volumes"])
        .into_iter()
        .find(|v| v["secret"]["secretName"].as_str() == Some(GRAFANA_OIDC_SECRET))
        .expect("the OIDC Secret is a volume");
    let mount = seq(&seq(&pod["containers"])[0]["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == vol["name"])
        .expect("and mounted");
    assert_eq!(mount["mountPath"].as_str(), Some("/etc/secrets/grafana-oidc"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let secret: Value =
        serde_yaml::from_str(&s.grafana.manifest(GRAFANA_OIDC_SECRET).expect("the Secret").yaml).unwrap();
    assert_eq!(secret["stringData"]["client-secret"].as_str(), Some(OIDC_SECRET));
}

/// The Alertmanager configuration the chart renders: with the answers' webhook and mail
/// relay, and with none (the default: alerts stay in the UIs), `amtool check-config`
/// (Debian's prometheus-alertmanager) accepts it, and every alert reaches the one
/// receiver.
#[test]
fn amtool_accepts_the_rendered_alertmanager_configuration_with_and_without_receivers() {
    let Some(amtool) = require_tool("amtool") else { return };
    let Some(helm) = helm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut bare = input();
    bare.receivers = AlertReceivers::default();
    for (case, i) in [("webhook and mail", input()), ("no receiver", bare)] {
        let rendered = monitoring::render_prometheus(&i).unwrap();
        let t = template(&helm, tmp.path(), &chart("prometheus-29.27.0.tgz"), "prometheus", &rendered);
        let config = config_map_data(&t.docs, "prometheus-alertmanager", "alertmanager.yml");
        let file = tmp.path().join("alertmanager.yml");
        fs::write(&file, config).unwrap();
        let out = Command::new(&amtool).arg("check-config").arg(&file).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("SUCCESS"), "{case}: amtool:\n{text}\n{config}");
        let doc: Value = serde_yaml::from_str(config).unwrap();
        assert_eq!(doc["route"]["receiver"].as_str(), Some("default-receiver"), "{case}");
        let r = &doc["receivers"][0];
        if case == "no receiver" {
            assert!(r["webhook_configs"].is_null() && r["email_configs"].is_null(), "{case}: {r:?}");
        } else {
            assert_eq!(r["webhook_configs"][0]["url"].as_str(), Some("https://alerts.example.internal/hook"));
            assert_eq!(r["email_configs"][0]["smarthost"].as_str(), Some("mail.example.internal:25"));
            assert_eq!(r["email_configs"][0]["to"].as_str(), Some("ops@example.org"));
        }
    }
    // Control: a receiver the route does not know is refused.
    let bad = tmp.path().join("bad.yml");
    fs::write(&bad, "route: {receiver: nobody}\nreceivers: [{name: default-receiver}]\n").unwrap();
    assert!(!Command::new(&amtool).arg("check-config").arg(&bad).output().unwrap().status.success());
}

fn promtool() -> Option<PathBuf> {
    require_tool("promtool")
}

fn promtool_run(promtool: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool).args(args).current_dir(dir).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `alerting.alertmanagers` of a Prometheus configuration.
fn doc_alertmanagers(config: &str) -> Vec<Value> {
    let doc: Value = serde_yaml::from_str(config).unwrap();
    seq(&doc["alerting"]["alertmanagers"])
}

/// The prometheus chart's rendered files (rules, configuration) in `dir`.
fn server_files<'a>(s: &'a Stack, dir: &Path) -> (&'a str, &'a str) {
    fs::create_dir_all(dir).unwrap();
    let rules = config_map_data(&s.prom.docs, "prometheus-server", "alerting_rules.yml");
    fs::write(dir.join("alerts.yaml"), rules).unwrap();
    (rules, config_map_data(&s.prom.docs, "prometheus-server", "prometheus.yml"))
}

#[test]
fn promtool_accepts_the_configuration_prometheus_runs_with_the_shipped_rules() {
    let Some(promtool) = promtool() else { return };
    let Some(s) = stack() else { return };
    let dir = s.tmp.path().join("prom");
    let (_, config) = server_files(&s, &dir);
    // The configuration names its files by their paths in the pod and the service
    // account's token and CA; point those at copies here so promtool can read them.
    let sa = dir.join("sa");
    fs::create_dir_all(&sa).unwrap();
    fs::write(sa.join("token"), "token").unwrap();
    fs::write(sa.join("ca.crt"), "").unwrap();
    // Every file of the server's ConfigMap, as the pod mounts it at /etc/config.
    let etc = dir.join("etc-config");
    fs::create_dir_all(&etc).unwrap();
    let cm = s.prom.docs.iter().find(|d| kind(d) == "ConfigMap" && name(d) == "prometheus-server").unwrap();
    for (k, v) in cm["data"].as_mapping().unwrap() {
        fs::write(etc.join(k.as_str().unwrap()), v.as_str().unwrap()).unwrap();
    }
    let config = config
        .replace("/var/run/secrets/kubernetes.io/serviceaccount", &sa.display().to_string())
        .replace("/etc/config/", &format!("{}/", etc.display()));
    assert!(config.contains(&format!("job_name: {}", monitoring::APP_SCRAPE_JOB)), "{config}");
    // Debian's promtool (Prometheus 2.42) is built without Kubernetes service discovery:
    // it refuses `kubernetes_sd_configs` as an unknown field. Those blocks are checked
    // here (a role Prometheus knows, and for the app's job its namespace), then each is
    // swapped for a `file_sd_configs` block, so promtool checks everything else: every
    // job, relabelling rule and regex, TLS and token files, and the rule files.
    let mut doc: Value = serde_yaml::from_str(&config).unwrap();
    fs::write(dir.join("targets.json"), "[]").unwrap();
    let mut swapped = 0;
    let mut jobs: Vec<&mut Value> = doc["scrape_configs"].as_sequence_mut().unwrap().iter_mut().collect();
    let app_job = jobs.iter().position(|j| j["job_name"].as_str() == Some(monitoring::APP_SCRAPE_JOB)).unwrap();
    assert_eq!(jobs[app_job]["kubernetes_sd_configs"][0]["namespaces"]["names"][0].as_str(), Some("app"));
    let mut am = doc_alertmanagers(&config);
    for block in jobs.iter_mut().map(|j| &mut **j).chain(am.iter_mut()) {
        let Some(map) = block.as_mapping_mut() else { continue };
        let Some(sd) = map.remove("kubernetes_sd_configs") else { continue };
        for c in seq(&sd) {
            let role = c["role"].as_str().unwrap_or("");
            assert!(
                ["pod", "node", "service", "endpoints", "endpointslice", "ingress"].contains(&role),
                "kubernetes_sd_configs role `{role}`"
            );
        }
        map.insert("file_sd_configs".into(), serde_yaml::from_str("[{files: [targets.json]}]").unwrap());
        swapped += 1;
    }
    assert!(swapped >= 8, "only {swapped} service discovery blocks");
    let mut out: Value = doc.clone();
    out["alerting"]["alertmanagers"] = Value::Sequence(am);
    let config = serde_yaml::to_string(&out).unwrap();
    fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let (ok, text) = promtool_run(&promtool, &dir, &["check", "config", "prometheus.yml"]);
    assert!(ok, "promtool check config:\n{text}\n{config}");
    assert!(text.contains("SUCCESS: 11 rules found"), "the rules are loaded from the configuration: {text}");
    // Control: a scrape job without a name is refused.
    fs::write(dir.join("bad.yml"), config.replacen("job_name: airlock-app", "job_name: ''", 1)).unwrap();
    assert!(!promtool_run(&promtool, &dir, &["check", "config", "bad.yml"]).0, "an unnamed job passed");
}

#[test]
fn promtool_accepts_the_rendered_rules_and_every_alert_fires_and_stays_silent_as_its_unit_test_says() {
    let Some(promtool) = promtool() else { return };
    let Some(s) = stack() else { return };
    let dir = s.tmp.path().join("prom");
    let (rules, _) = server_files(&s, &dir);
    let (ok, text) = promtool_run(&promtool, &dir, &["check", "rules", "alerts.yaml"]);
    assert!(ok && text.contains("SUCCESS: 11 rules found"), "{text}");

    // Each alert's unit tests, on the rules as rendered.
    let tests = workspace_root().join("assets/monitoring/rules/alerts.test.yaml");
    fs::copy(&tests, dir.join("alerts.test.yaml")).unwrap();
    let (ok, text) = promtool_run(&promtool, &dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{text}");
    // Every alert has a case that fires it and one that leaves it silent.
    let t: Value = serde_yaml::from_str(&fs::read_to_string(&tests).unwrap()).unwrap();
    let r: Value = serde_yaml::from_str(rules).unwrap();
    let alerts: BTreeSet<String> = seq(&r["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]))
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    assert_eq!(alerts.len(), 11);
    for a in &alerts {
        let cases: Vec<Value> = seq(&t["tests"])
            .iter()
            .flat_map(|c| seq(&c["alert_rule_test"]))
            .filter(|c| c["alertname"].as_str() == Some(a))
            .collect();
        assert!(cases.iter().any(|c| !seq(&c["exp_alerts"]).is_empty()), "{a}: no case that fires it");
        let silent = cases.iter().any(|c| seq(&c["exp_alerts"]).is_empty());
        assert!(silent, "{a}: no case where it stays silent");
    }

    // Control: a weakened rule (a threshold that can no longer be reached) fails its
    // case that must fire.
    let inverted = fs::read_to_string(dir.join("alerts.yaml")).unwrap().replace("> 50", "> 5000");
    fs::write(dir.join("alerts.yaml"), inverted).unwrap();
    let (ok, text) = promtool_run(&promtool, &dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(!ok && text.contains("ExportQueueBacklog"), "a weakened rule passed its unit test:\n{text}");
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let Some(promtool) = promtool() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // promtool parses a rule file's every expression: each query as a recording rule.
    let write = |queries: &[(String, String)]| {
        let rules: Vec<serde_json::Value> = queries
            .iter()
            .enumerate()
            .map(|(i, (_, q))| serde_json::json!({ "record": format!("airlock:dashboard_query_{i}"), "expr": q }))
            .collect();
        let doc = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
        fs::write(tmp.path().join("queries.yaml"), serde_yaml::to_string(&doc).unwrap()).unwrap();
        promtool_run(&promtool, tmp.path(), &["check", "rules", "queries.yaml"])
    };
    let queries = input().content.dashboard_queries().unwrap();
    let (ok, text) = write(&queries);
    assert!(ok && text.contains(&format!("SUCCESS: {} rules found", queries.len())), "{text}\n{queries:#?}");
    // Control: a query with a syntax error is refused.
    let mut bad = queries.clone();
    bad[0].1.push_str(" by (");
    assert!(!write(&bad).0, "a broken query parsed");

    // The JSON Grafana provisions: the six §9.3 dashboards, each panel on our data source.
    let rendered = monitoring::render_grafana(&input()).unwrap();
    let cm: Value = serde_yaml::from_str(&rendered.manifest(DASHBOARDS_CONFIG_MAP).unwrap().yaml).unwrap();
    let titles: BTreeSet<String> = cm["data"]
        .as_mapping()
        .unwrap()
        .values()
        .map(|v| {
            serde_json::from_str::<serde_json::Value>(v.as_str().unwrap()).unwrap()["title"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: BTreeSet<String> =
        ["System Health", "API Performance", "Export Pipeline", "Tenant Activity", "Database", "Security"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(titles, want);
}

/// The §9.1 metrics (and the platform series the other rules read) as one scrape
/// target's text, at tick `n`: the counters grow every tick so `rate()` sees traffic.
fn synthetic_metrics(n: u64, now: u64) -> String {
    let http = "servanda_http_request_duration_seconds";
    let export = "servanda_export_job_duration_seconds";
    let mut t = String::new();
    // 5 % of requests fail (HighErrorRate), all of them take 2-5 s (APILatencyHigh).
    for (status, per_tick) in [("500", 3), ("200", 57)] {
        t += &format!(
            "{http}_count{{route=\"/api/contracts\",method=\"GET\",status_code=\"{status}\",tenant_id=\"t1\"}} {}\n",
            n * per_tick
        );
    }
    // What the security dashboard counts: failed logins, refused requests, role changes.
    for (route, method, status) in
        [("/api/auth/login", "POST", "401"), ("/api/contracts", "GET", "403"), ("/api/admin/roles", "POST", "201")]
    {
        t += &format!(
            "{http}_count{{route=\"{route}\",method=\"{method}\",status_code=\"{status}\",tenant_id=\"t1\"}} {n}\n"
        );
    }
    for (le, per_tick) in [("1", 0), ("2", 0), ("5", 60), ("+Inf", 60)] {
        t += &format!("{http}_bucket{{route=\"/api/contracts\",le=\"{le}\"}} {}\n", n * per_tick);
    }
    // One export in ten fails (ExportFailureRate); 80 wait (ExportQueueBacklog).
    for (status, per_tick) in [("failed", 1), ("success", 9)] {
        t += &format!("{export}_count{{format=\"pdf\",status=\"{status}\",tenant_id=\"t1\"}} {}\n", n * per_tick);
    }
    for (le, per_tick) in [("10", 4), ("30", 10), ("+Inf", 10)] {
        t += &format!("{export}_bucket{{format=\"pdf\",le=\"{le}\"}} {}\n", n * per_tick);
    }
    // Database queries: some over 1 s (the slow-query panel).
    let db = "servanda_db_query_duration_seconds";
    for (le, per_tick) in [("0.01", 80), ("1", 95), ("+Inf", 100)] {
        t += &format!("{db}_bucket{{operation=\"select\",table=\"contracts\",le=\"{le}\"}} {}\n", n * per_tick);
    }
    t += &format!("{db}_count{{operation=\"select\",table=\"contracts\"}} {}\n", n * 100);
    t += "servanda_export_queue_depth 80\nservanda_active_tenants_total 3\n";
    t += "servanda_db_pool_active 19\nservanda_db_pool_max 20\n";
    t += "kube_node_status_condition{node=\"n1\",condition=\"Ready\",status=\"true\"} 0\n";
    t += "node_filesystem_avail_bytes{mountpoint=\"/var/lib/rancher\",fstype=\"ext4\"} 5\n";
    t += "node_filesystem_size_bytes{mountpoint=\"/var/lib/rancher\",fstype=\"ext4\"} 100\n";
    t += &format!("airlock_certificate_not_after_seconds{{certificate=\"ingress\"}} {}\n", now + 10 * 86400);
    t += "kube_pod_status_ready{namespace=\"keycloak\",pod=\"keycloak-0\",condition=\"true\"} 0\n";
    t += "kube_pod_status_ready{namespace=\"minio\",pod=\"minio-0\",condition=\"true\"} 0\n";
    t += "kube_job_status_failed{namespace=\"app\",job_name=\"airlock-app-backup-29000000\"} 1\n";
    t
}

fn curl_json(url: &str) -> Option<serde_json::Value> {
    let o = Command::new("curl").args(["-s", "-f", "--max-time", "5", url]).output().ok()?;
    o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
}

/// A real Prometheus (Debian's) on 127.0.0.1 with the shipped rules (only their
/// `for:` shortened, in the test's copy) scrapes a target the harness serves: every
/// alert reaches `firing` through the real rule engine, and every dashboard query
/// evaluates, those on the app's metrics with data.
#[test]
fn a_real_prometheus_fires_every_shipped_alert_on_a_synthetic_target_and_answers_every_dashboard_query() {
    let Some(prometheus) = require_tool("prometheus") else { return };
    let Some(s) = stack() else { return };
    let dir = s.tmp.path().join("live");
    let target = dir.join("target");
    fs::create_dir_all(&target).unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    fs::write(target.join("metrics"), synthetic_metrics(0, now())).unwrap();
    let server = airlock_tests::http::StaticServer::start(&target);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), target.join("metrics"));
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Write and rename, so a scrape never reads half a file.
                let tmp = file.with_extension("tmp");
                fs::write(&tmp, synthetic_metrics(n, now())).unwrap();
                fs::rename(&tmp, &file).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    };

    // The rules as the chart renders them, `for:` cut to 2 s so the test is quick.
    let rules = config_map_data(&s.prom.docs, "prometheus-server", "alerting_rules.yml");
    let mut doc: Value = serde_yaml::from_str(rules).unwrap();
    for g in doc["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = "2s".into();
            }
        }
    }
    fs::write(dir.join("rules.yml"), serde_yaml::to_string(&doc).unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\n\
         scrape_configs:\n  - job_name: synthetic\n    static_configs: [{{targets: ['127.0.0.1:{}'], labels: {{site_token: '{SITE_TOKEN}'}}}}]\n",
        dir.join("rules.yml").display(),
        server.port
    );
    fs::write(dir.join("prometheus.yml"), config).unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let t0 = std::time::Instant::now();
    let want: BTreeSet<String> = seq(&doc["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]))
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    let mut firing = BTreeSet::new();
    while t0.elapsed() < std::time::Duration::from_secs(90) {
        if let Some(a) = curl_json(&format!("{api}/alerts")) {
            firing = a["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["state"] == "firing")
                .map(|x| x["labels"]["alertname"].as_str().unwrap().to_string())
                .collect();
            if firing == want {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let fired_in = t0.elapsed();
    // What this Prometheus answers about its alerts and targets, for the support
    // bundle's collection below (as the API server's service proxy relays it).
    let raw = |api: &str| {
        let o = Command::new("curl")
            .args(["-s", "-f", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}{api}"))
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let answers: Vec<String> =
        airlock_installer::ops::support::PROMETHEUS_QUERIES.iter().map(|(_, api)| raw(api)).collect();
    let mut failed = Vec::new();
    let mut with_data = 0;
    for (at, q) in input().content.dashboard_queries().unwrap() {
        let url = format!("{api}/query?query={}", url_encode(&q));
        match curl_json(&url) {
            Some(r) if r["status"] == "success" => {
                let rows = r["data"]["result"].as_array().map_or(0, |a| a.len());
                if q.contains("servanda_") {
                    if rows == 0 {
                        failed.push(format!("{at}: no data for `{q}`"));
                    } else {
                        with_data += 1;
                    }
                }
            }
            other => failed.push(format!("{at}: `{q}` -> {other:?}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert_eq!(firing, want, "alerts firing after {fired_in:?}; Prometheus log:\n{log}");
    assert!(failed.is_empty(), "dashboard queries:\n{}", failed.join("\n"));
    assert!(with_data >= 12, "only {with_data} app queries returned data");
    eprintln!("real Prometheus: all {} alerts firing after {:.1} s", want.len(), fired_in.as_secs_f64());
    support_bundle_carries_prometheus_alerts_and_targets_redacted(&answers, &want, s.tmp.path());
}

/// A label value the test's Prometheus puts on its target (so on its alerts too) that
/// the site also keeps as a secret: the support bundle must not carry it.
const SITE_TOKEN: &str = "e2e-site-secret-7c41d0a95b2e";

/// `airlock support-bundle` on a live node (the recording host playing it) whose
/// release has the prometheus chart: kubectl's service-proxy requests to Prometheus's
/// API answer with what the real Prometheus above answered. The bundle holds the
/// active alerts, every one firing, and the target health, with the site's secret
/// redacted wherever the answers carried it.
fn support_bundle_carries_prometheus_alerts_and_targets_redacted(
    answers: &[String],
    firing: &BTreeSet<String>,
    tmp: &Path,
) {
    use airlock_installer::engine::layout::Layout;
    use airlock_installer::host::{CommandOutput, Host, Perms, RecordingHost};
    use airlock_installer::ops::support::{self, prometheus_proxy_path, PROMETHEUS_QUERIES};
    use airlock_installer::state::{Inventory, InventoryKey};
    assert!(answers.iter().all(|a| a.contains(SITE_TOKEN)), "the real answers carry the label: {answers:?}");

    let host = RecordingHost::new(true).unwrap();
    let chart = "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: prometheus\nspec:\n  \
                 version: 29.27.0\n  targetNamespace: monitoring\n";
    let mut layout = Layout::default();
    layout.file("/var/lib/rancher/k3s/server/manifests/airlock-prometheus.yaml", 0o600, chart.as_bytes().to_vec());
    let key = InventoryKey::load_or_generate(&host).unwrap();
    let inv = Inventory::of(&layout, "k3s", "k3s.service", None, vec![], &key, &|_| None);
    host.write_file(
        Path::new("/var/lib/rancher/k3s/server/manifests/airlock-prometheus.yaml"),
        &mut chart.as_bytes(),
        Perms::mode(0o600),
    )
    .unwrap();
    host.write_file(
        Path::new(airlock_installer::state::INVENTORY_PATH),
        &mut inv.to_json().as_slice(),
        Perms::mode(0o644),
    )
    .unwrap();
    host.write_file(Path::new("/var/lib/airlock/secrets/site-token"), &mut SITE_TOKEN.as_bytes(), Perms::secret())
        .unwrap();
    host.expect_command(&["journalctl"], CommandOutput::ok("-- No entries --\n"));
    host.expect_command(&["/usr/local/bin/kubectl"], CommandOutput::ok("items: []\n"));
    for ((_, api), answer) in PROMETHEUS_QUERIES.iter().zip(answers) {
        let path = prometheus_proxy_path("monitoring", "prometheus", api);
        host.expect_command(
            &[
                "/usr/local/bin/kubectl",
                "--kubeconfig",
                "/etc/rancher/k3s/k3s.yaml",
                "--request-timeout=20s",
                "get",
                "--raw",
                &path,
            ],
            CommandOutput::ok(answer),
        );
    }
    let out = tmp.join("support.tar.gz");
    let r =
        support::collect(&host, &support::SupportOptions::new(out.clone()), &airlock_format::report::Silent).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for e in tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&out).unwrap())).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        files.insert(name, text);
    }
    let alerts =
        files.get("monitoring/prometheus-alerts.json").unwrap_or_else(|| panic!("{:#?}", r.manifest.not_collected));
    let targets = &files["monitoring/prometheus-targets.json"];
    for a in firing {
        assert!(alerts.contains(&format!("\"alertname\":\"{a}\"")), "{a} is not among the collected alerts");
    }
    assert!(targets.contains("\"health\":\"up\"") && targets.contains("\"job\":\"synthetic\""), "{targets}");
    for (name, text) in &files {
        assert!(!text.contains(SITE_TOKEN), "{name} carries the site's secret");
    }
    assert!(r.manifest.redactions.values().sum::<usize>() > 0, "{:?}", r.manifest.redactions);
}

/// Percent-encoding for a query parameter (everything but unreserved characters).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
