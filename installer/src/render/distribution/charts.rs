//! The auto-deploy manifests: one `HelmChart` (helm.cattle.io/v1) per chart, and on
//! RKE2 the local-path storage provisioner.
//!
//! K3s and RKE2 apply every file in `<data-dir>/server/manifests/` at start and on
//! change (contracts). The files are not synced between servers, and a chart served
//! from `server/static/` must be on the server that answers the helm Job's download,
//! so both are written on **every** server (never on agents).

use std::collections::BTreeSet;

use airlock_format::error::Result;
use base64::Engine as _;
use serde_json::{json, Value as Json};
use serde_yaml::{Mapping, Value};

use super::{
    check_abs_path, check_entry, invalid, is_dns_label, product_name, ChartInput, DistributionInput, StorageProvisioner,
};
use crate::engine::layout::Layout;

/// Largest chart archive inlined as `chartContent`; bigger ones are served from
/// `server/static/charts/`.
///
/// The hard limits are far above: a Kubernetes object may be ~1.5 MiB (etcd's request
/// limit), and helm-controller copies `chartContent` into a `chart-content-<name>`
/// ConfigMap, which may hold 1 MiB (helm-controller#267), so base64 (4/3 of the
/// archive) caps an inlined chart at ~768 KiB. But inlined bytes cost in the cluster
/// forever: twice in etcd (the HelmChart and its ConfigMap), again in every revision
/// until compaction, on every etcd member, and in every watch event of every
/// HelmChart watcher. A static chart costs one URL there and is read from the
/// server's disk. So only tiny charts (vendor glue, a few ConfigMaps) stay inline,
/// where a self-contained manifest is handy; anything of the size of a real upstream
/// chart (MinIO 5.4.0 is 22 KiB) goes static, as K3s does with its own Traefik chart.
pub const CHART_CONTENT_LIMIT: usize = 16 * 1024;

pub use crate::live::HELM_CHART_NAMESPACE;

/// Longest Helm release name (Helm refuses longer ones).
const MAX_RELEASE_NAME: usize = 53;

/// The local-path provisioner's manifest basename; charts cannot take it.
const PROVISIONER_FILE: &str = "airlock-local-path-provisioner.yaml";

/// The manifest's file name: `airlock-<chart>.yaml`. K3s turns the basename into an
/// object name, so it must be a unique RFC 1123 name (contracts); the prefix keeps our
/// files apart from the distribution's own (`traefik.yaml`, `rke2-canal.yaml`).
pub fn helm_chart_file_name(chart: &str) -> String {
    format!("airlock-{chart}.yaml")
}

/// Validates the charts before anything is rendered.
pub(super) fn check_charts(charts: &[ChartInput], provisioner: bool) -> Result<()> {
    let mut names = BTreeSet::new();
    for c in charts {
        let what = format!("chart `{}`", c.name);
        if !is_dns_label(&c.name) || c.name.len() > MAX_RELEASE_NAME {
            return Err(invalid(
                &what,
                format!("not a valid release name (lowercase letters, digits and `-`, at most {MAX_RELEASE_NAME})"),
            ));
        }
        if !names.insert(c.name.as_str()) || (provisioner && helm_chart_file_name(&c.name) == PROVISIONER_FILE) {
            return Err(invalid(&what, "two manifests would have the same name; chart names must be unique"));
        }
        if c.version.is_empty() || !c.version.chars().all(|ch| ch.is_ascii_alphanumeric() || ".+-_".contains(ch)) {
            return Err(invalid(&what, format!("version `{}` is not a chart version", c.version.escape_debug())));
        }
        if !is_dns_label(&c.namespace) {
            return Err(invalid(&what, format!("namespace `{}` is not a valid namespace name", c.namespace)));
        }
        check_entry(&what, &c.entry)?;
        if !c.tgz.starts_with(&[0x1f, 0x8b]) {
            return Err(invalid(&what, "the chart archive is not a gzip file (.tgz)"));
        }
        // A values file that does not parse would only fail in the helm Job, long after
        // the install reported success.
        match serde_yaml::from_str::<Value>(&c.values_yaml) {
            Ok(Value::Mapping(_) | Value::Null) => {}
            Ok(_) => return Err(invalid(&what, "the values are not a YAML mapping")),
            Err(e) => return Err(invalid(&what, format!("the values are not valid YAML: {e}"))),
        }
    }
    Ok(())
}

/// Whether any chart is served from `server/static/charts/`.
pub(super) fn any_static(charts: &[ChartInput]) -> bool {
    charts.iter().any(|c| c.tgz.len() > CHART_CONTENT_LIMIT)
}

/// One `HelmChart` manifest per chart (and the static archive where needed).
pub(super) fn helm_charts(layout: &mut Layout, input: &DistributionInput) {
    let data = input.data_dir();
    for c in &input.charts {
        let archive = format!("{}-{}.tgz", c.name, c.version);
        let mut spec = Mapping::new();
        let mut put = |k: &str, v: Value| {
            spec.insert(Value::String(k.into()), v);
        };
        if c.tgz.len() > CHART_CONTENT_LIMIT {
            // helm-controller replaces %{KUBERNETES_API}% with the API server's address;
            // the file is served from `server/static/` of the answering server.
            put("chart", Value::String(format!("https://%{{KUBERNETES_API}}%/static/charts/{archive}")));
            layout.staged(data.join("server/static/charts").join(&archive), 0o644, c.entry.as_str());
        } else {
            put("chartContent", Value::String(base64::engine::general_purpose::STANDARD.encode(&c.tgz)));
        }
        // Ignored for chart archives, but shown by `kubectl get helmcharts`.
        put("version", Value::String(c.version.clone()));
        put("targetNamespace", Value::String(c.namespace.clone()));
        put("createNamespace", Value::Bool(true));
        if !c.values_yaml.trim().is_empty() {
            put("valuesContent", Value::String(c.values_yaml.clone()));
        }
        // `reinstall` (the default) uninstalls a release whose upgrade failed and
        // installs it afresh, which can take a stateful chart's data with it; `abort`
        // leaves it failed for the operator (and airlock's rollback) to handle.
        put("failurePolicy", Value::String("abort".into()));
        // No `repo`: everything is offline; the chart is the archive itself.
        let mut labels = Mapping::new();
        labels.insert("app.kubernetes.io/managed-by".into(), "airlock".into());
        let mut metadata = Mapping::new();
        metadata.insert("name".into(), Value::String(c.name.clone()));
        metadata.insert("namespace".into(), HELM_CHART_NAMESPACE.into());
        metadata.insert("labels".into(), Value::Mapping(labels));
        let mut map = Mapping::new();
        map.insert("apiVersion".into(), "helm.cattle.io/v1".into());
        map.insert("kind".into(), "HelmChart".into());
        map.insert("metadata".into(), Value::Mapping(metadata));
        map.insert("spec".into(), Value::Mapping(spec));
        let head = format!(
            "# Chart {} {} into namespace {}, written by airlock; installed by {}'s helm-controller.\n\
             # Deleting this file uninstalls nothing.\n",
            c.name,
            c.version,
            c.namespace,
            product_name(input.kind()),
        );
        let body = format!("{head}{}", serde_yaml::to_string(&Value::Mapping(map)).expect("serializes"));
        let path = data.join("server/manifests").join(helm_chart_file_name(&c.name));
        if c.values_secret {
            layout.secret_file(path, body);
        } else {
            layout.file(path, 0o600, body);
        }
    }
}

/// Image references and the volume path.
pub(super) fn check_provisioner(p: &StorageProvisioner) -> Result<()> {
    for (what, image) in [("provisioner image", &p.image), ("helper image", &p.helper_image)] {
        let full = image.contains('/') && (image.contains(':') || image.contains('@'));
        if !full || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!("{what} `{}`", image.escape_debug()), "not a full image reference").with_hint(
                "give the full reference as bundled, e.g. docker.io/rancher/local-path-provisioner:v0.0.31",
            ));
        }
    }
    if let Some(path) = &p.path {
        check_abs_path("storage path", path)?;
        if path == std::path::Path::new("/") {
            return Err(invalid("storage path `/`", "volumes cannot live in the root directory"));
        }
    }
    Ok(())
}

/// Rancher's local-path-provisioner (what K3s bundles as `local-storage`), for RKE2.
///
/// It runs in `kube-system` like K3s' copy: its helper pods mount host paths, which the
/// CIS profile's restricted Pod Security forbids everywhere but in the exempt system
/// namespaces. It tolerates the control-plane taints so a servers-only cluster gets
/// storage too. Volumes go under `<data-dir>/storage` unless told otherwise.
pub(super) fn local_path_provisioner(layout: &mut Layout, input: &DistributionInput, p: &StorageProvisioner) {
    let ns = HELM_CHART_NAMESPACE;
    let path = p.path.clone().unwrap_or_else(|| input.data_dir().join("storage"));
    let sa = "local-path-provisioner-service-account";
    let labels = json!({"app": "local-path-provisioner", "app.kubernetes.io/managed-by": "airlock"});
    let config = json!({
        "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [path.display().to_string()]}]
    });
    let helper_pod = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  name: helper-pod",
        "spec:",
        "  priorityClassName: system-node-critical",
        "  tolerations:",
        "    - key: node.kubernetes.io/disk-pressure",
        "      operator: Exists",
        "      effect: NoSchedule",
        "  containers:",
        "    - name: helper-pod",
        &format!("      image: {}", p.helper_image),
        "      imagePullPolicy: IfNotPresent",
        "",
    ]
    .join("\n");
    let mut storage_class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-path", "labels": labels},
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    });
    if p.default_class {
        storage_class["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    let docs: Vec<Json> = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns, "labels": labels},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "local-path-provisioner-role", "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["persistentvolumes"],
                 "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "local-path-provisioner-bind", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "local-path-provisioner-role"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "local-path-provisioner-role", "namespace": ns, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["pods"],
                       "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "local-path-provisioner-bind", "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "local-path-provisioner-role"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "local-path-provisioner", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "local-path-provisioner"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": sa,
                        "priorityClassName": "system-node-critical",
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                             "effect": "NoSchedule"},
                            {"key": "node-role.kubernetes.io/etcd", "operator": "Exists", "effect": "NoExecute"},
                        ],
                        "containers": [{
                            "name": "local-path-provisioner",
                            "image": p.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": [
                                "local-path-provisioner", "start",
                                "--config", "/etc/config/config.json",
                                "--service-account-name", sa,
                                "--provisioner-name", "rancher.io/local-path",
                                "--helper-image", p.helper_image,
                                "--configmap-name", "local-path-config",
                            ],
                            "env": [{"name": "POD_NAMESPACE",
                                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                            "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
                        }],
                        "volumes": [{"name": "config-volume", "configMap": {"name": "local-path-config"}}],
                    },
                },
            },
        }),
        storage_class,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-path-config", "namespace": ns, "labels": labels},
            "data": {
                "config.json": serde_json::to_string_pretty(&config).expect("serializes"),
                "setup": "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"$VOL_DIR\"\n",
                "teardown": "#!/bin/sh\nset -eu\nrm -rf \"$VOL_DIR\"\n",
                "helperPod.yaml": helper_pod,
            },
        }),
    ];
    let mut body = format!(
        "# Rancher local-path-provisioner for {} (which ships no storage provisioner), written by\n\
         # airlock. Volumes live under {} on each node.\n",
        product_name(input.kind()),
        path.display()
    );
    for doc in docs {
        body.push_str("---\n");
        body.push_str(&serde_yaml::to_string(&doc).expect("serializes"));
    }
    layout.file(input.data_dir().join("server/manifests").join(PROVISIONER_FILE), 0o600, body);
}
