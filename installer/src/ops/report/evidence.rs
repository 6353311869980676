//! What the installed release itself shows, for the checklist lines no journal covers:
//! the `HelmChart` manifests the install placed (the values Airlock generated, and the
//! chart each one carries inline) and, on the running node, what the cluster has in
//! force. Everything is read through the host; nothing is rendered with helm here, so
//! a chart's NetworkPolicies are named from its templates, not from a render.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::host::{Host, Kube};
use crate::ops::status;
use crate::state::Inventory;

/// One `HelmChart` object of the installed manifests.
#[derive(Clone, Debug)]
pub struct InstalledChart {
    pub manifest: PathBuf,
    pub name: String,
    pub version: String,
    pub namespace: String,
    /// `spec.valuesContent`, parsed (`Null` when there is none).
    pub values: serde_yaml::Value,
    /// `spec.chartContent`: the chart archive, base64 (how Airlock ships charts to
    /// helm-controller without a chart repository).
    chart_content: Option<String>,
}

/// Every `HelmChart` in the manifests the inventory lists; unreadable ones are skipped
/// (`airlock status` names them).
pub fn installed_charts(host: &dyn Host, inv: &Inventory) -> Vec<InstalledChart> {
    let mut out = Vec::new();
    for path in status::manifest_files(inv) {
        let Ok(Some(bytes)) = host.read_file(&path) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(v) = serde_yaml::Value::deserialize(doc) else { continue };
            if v.get("kind").and_then(|k| k.as_str()) != Some("HelmChart") {
                continue;
            }
            let spec = v.get("spec");
            let s = |v: Option<&serde_yaml::Value>| v.and_then(|x| x.as_str()).map(str::to_string);
            let values = s(spec.and_then(|x| x.get("valuesContent")))
                .and_then(|t| serde_yaml::from_str(&t).ok())
                .unwrap_or(serde_yaml::Value::Null);
            out.push(InstalledChart {
                manifest: path.clone(),
                name: s(v.get("metadata").and_then(|m| m.get("name"))).unwrap_or_default(),
                version: s(spec.and_then(|x| x.get("version"))).unwrap_or_else(|| "unversioned".into()),
                namespace: s(spec.and_then(|x| x.get("targetNamespace"))).unwrap_or_else(|| "default".into()),
                values,
                chart_content: s(spec.and_then(|x| x.get("chartContent"))),
            });
        }
    }
    out
}

/// The value at a dotted path (`networkPolicy.enabled`) of a YAML mapping.
pub fn lookup<'a>(v: &'a serde_yaml::Value, path: &str) -> Option<&'a serde_yaml::Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

impl InstalledChart {
    /// The chart archive's text files (`templates/…`, `values.yaml`), by path below
    /// the chart's directory. Empty when the manifest carries no chart.
    fn files(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(b64) = &self.chart_content else { return out };
        let Ok(tgz) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else { return out };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice()));
        let Ok(entries) = archive.entries() else { return out };
        for entry in entries.flatten() {
            let mut entry = entry;
            let Ok(path) = entry.path().map(|p| p.to_path_buf()) else { continue };
            // `<chart>/templates/x.yaml` → `templates/x.yaml`; subcharts are their own.
            let rel: PathBuf = path.components().skip(1).collect();
            let rel = rel.to_string_lossy().into_owned();
            if !(rel == "values.yaml" || rel.starts_with("templates/")) {
                continue;
            }
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_ok() {
                out.insert(rel, text);
            }
        }
        out
    }

    /// The NetworkPolicies the chart's templates define, by the name part each gives
    /// them, with whether the generated values switch them on (the template's own
    /// `if .Values.…` guard, looked up in the values Airlock wrote, else the chart's
    /// defaults). `None` when the chart defines none.
    pub fn network_policies(&self) -> Option<RenderedPolicies> {
        let files = self.files();
        let defaults: serde_yaml::Value =
            files.get("values.yaml").and_then(|t| serde_yaml::from_str(t).ok()).unwrap_or(serde_yaml::Value::Null);
        let mut names = Vec::new();
        let mut switch = None;
        for (file, text) in files.iter().filter(|(f, _)| f.starts_with("templates/")) {
            let found = policy_names(text);
            if found.is_empty() {
                continue;
            }
            if let Some(guard) = text.lines().next().and_then(values_guard) {
                let on = lookup(&self.values, &guard).or_else(|| lookup(&defaults, &guard));
                switch = Some((guard, on.and_then(|v| v.as_bool()).unwrap_or(false)));
            }
            names.extend(found.into_iter().map(|n| (n, file.clone())));
        }
        (!names.is_empty()).then(|| RenderedPolicies {
            chart: self.name.clone(),
            namespace: self.namespace.clone(),
            manifest: self.manifest.clone(),
            names: names.into_iter().map(|(n, _)| n).collect(),
            enabled_by: switch.as_ref().map(|(g, _)| g.clone()),
            enabled: switch.map(|(_, on)| on).unwrap_or(true),
        })
    }
}

/// The NetworkPolicies one installed chart renders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedPolicies {
    pub chart: String,
    pub namespace: String,
    /// The HelmChart manifest that carries the chart and its values.
    pub manifest: PathBuf,
    /// Each policy's name as the template gives it (the part after the release name).
    pub names: Vec<String>,
    /// The values key that switches them (`networkPolicy.enabled`), if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_by: Option<String>,
    pub enabled: bool,
}

/// `{{- if .Values.networkPolicy.enabled }}` → `networkPolicy.enabled`.
fn values_guard(line: &str) -> Option<String> {
    let inner = line.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_matches('-').trim();
    let path = inner.strip_prefix("if ")?.trim().strip_prefix(".Values.")?;
    path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_').then(|| path.to_string())
}

/// The names of the `kind: NetworkPolicy` objects in a template: the literal
/// `metadata.name`, or the `"part" "…"` the chart's naming helper is given.
fn policy_names(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_policy = false;
    for line in template.lines() {
        let t = line.trim();
        if t.starts_with("kind:") {
            in_policy = t == "kind: NetworkPolicy";
        } else if in_policy && t.starts_with("name:") {
            in_policy = false;
            let value = t.trim_start_matches("name:").trim();
            let name = match value.find("\"part\" \"") {
                Some(at) => value[at + 8..].split('"').next().unwrap_or_default().to_string(),
                None => value.trim_matches('"').to_string(),
            };
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// A NetworkPolicy the cluster has, from `kubectl get networkpolicies -A -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePolicy {
    pub namespace: String,
    pub name: String,
    /// Selects every pod of its namespace and lists both directions with no rule:
    /// nothing in or out unless another policy allows it.
    pub default_deny: bool,
}

/// The NetworkPolicies in force, through kubectl on the node; `Err` says why not.
pub fn live_policies(host: &dyn Host, kube: &Kube) -> std::result::Result<Vec<LivePolicy>, String> {
    let o = kube.run(host, &["get", "networkpolicies", "-A", "-o", "json"]).map_err(|e| e.cause)?;
    if !o.success() {
        return Err(format!("kubectl get networkpolicies: {}", o.stderr.trim()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).map_err(|e| format!("kubectl printed no NetworkPolicy list: {e}"))?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let spec = &p["spec"];
            let types: Vec<&str> =
                spec["policyTypes"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
            let empty = |k: &str| spec[k].as_array().is_none_or(|a| a.is_empty());
            let selects_all = spec["podSelector"].as_object().is_none_or(|o| {
                o.values()
                    .all(|v| v.as_object().is_none_or(|m| m.is_empty()) && v.as_array().is_none_or(|a| a.is_empty()))
            });
            LivePolicy {
                namespace: p["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
                name: p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                default_deny: selects_all
                    && types.contains(&"Ingress")
                    && types.contains(&"Egress")
                    && empty("ingress")
                    && empty("egress"),
            }
        })
        .collect())
}

/// The outbound features of Grafana that must be off on a site without internet, as
/// `grafana.ini` keys of the chart's values with the value that turns each off.
pub const GRAFANA_OFFLINE: &[(&str, bool)] = &[
    ("analytics.reporting_enabled", false),
    ("analytics.check_for_updates", false),
    ("analytics.check_for_plugin_updates", false),
    ("news.news_feed_enabled", false),
    ("security.disable_gravatar", true),
    ("plugins.plugin_admin_enabled", false),
    ("snapshots.external_enabled", false),
];

/// Each [`GRAFANA_OFFLINE`] key and whether the generated values turn it off.
pub fn grafana_offline(values: &serde_yaml::Value) -> Vec<(&'static str, bool)> {
    let ini = values.get("grafana.ini").cloned().unwrap_or(serde_yaml::Value::Null);
    GRAFANA_OFFLINE
        .iter()
        .map(|(key, off)| {
            let (section, name) = key.split_once('.').expect("section.key");
            let got = ini.get(section).and_then(|s| s.get(name)).and_then(|v| v.as_bool());
            (*key, got == Some(*off))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_each_network_policy_a_template_defines_and_its_values_switch() {
        let t = "{{- if .Values.networkPolicy.enabled }}\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {{ include \"app.name\" (dict \"root\" . \"part\" \"default-deny\") }}\n---\nkind: ConfigMap\nmetadata:\n  name: not-a-policy\n---\nkind: NetworkPolicy\nmetadata:\n  name: plain\n{{- end }}\n";
        assert_eq!(policy_names(t), ["default-deny", "plain"]);
        assert_eq!(values_guard(t.lines().next().unwrap()).as_deref(), Some("networkPolicy.enabled"));
        assert_eq!(values_guard("{{- if and .Values.a .Values.b }}"), None);
    }

    #[test]
    fn report_reads_a_default_deny_from_the_clusters_policies() {
        let host = crate::host::RecordingHost::new(true).unwrap();
        let list = r#"{"items":[
            {"metadata":{"namespace":"app","name":"a-default-deny"},"spec":{"podSelector":{},"policyTypes":["Ingress","Egress"]}},
            {"metadata":{"namespace":"app","name":"a-allow-dns"},"spec":{"podSelector":{},"policyTypes":["Egress"],"egress":[{"ports":[{"port":53}]}]}},
            {"metadata":{"namespace":"app","name":"a-web"},"spec":{"podSelector":{"matchLabels":{"x":"y"}},"policyTypes":["Ingress","Egress"]}}
        ]}"#;
        host.expect_command(&["/usr/local/bin/kubectl"], crate::host::CommandOutput::ok(list));
        let k = Kube::new("/usr/local/bin/kubectl", "/etc/rancher/k3s/k3s.yaml");
        let got = live_policies(&host, &k).unwrap();
        assert_eq!(got.iter().map(|p| p.default_deny).collect::<Vec<_>>(), [true, false, false]);
    }
}
