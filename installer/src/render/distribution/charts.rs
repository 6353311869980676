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
use serde_yaml::{Mapping, Value};

use super::{check_entry, invalid, is_dns_label, product_name, ChartInput, DistributionInput};
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

/// The manifest's file name: `airlock-<chart>.yaml`. K3s turns the basename into an
/// object name, so it must be a unique RFC 1123 name (contracts); the prefix keeps our
/// files apart from the distribution's own (`traefik.yaml`, `rke2-canal.yaml`).
pub fn helm_chart_file_name(chart: &str) -> String {
    format!("airlock-{chart}.yaml")
}

/// Validates the charts before anything is rendered.
pub(super) fn check_charts(charts: &[ChartInput]) -> Result<()> {
    let mut names = BTreeSet::new();
    for c in charts {
        let what = format!("chart `{}`", c.name);
        if !is_dns_label(&c.name) || c.name.len() > MAX_RELEASE_NAME {
            return Err(invalid(
                &what,
                format!("not a valid release name (lowercase letters, digits and `-`, at most {MAX_RELEASE_NAME})"),
            ));
        }
        if !names.insert(c.name.as_str()) {
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
