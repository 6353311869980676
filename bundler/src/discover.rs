//! Image discovery: charts marked `discover_images: true` are rendered with a real
//! `helm template` (the `helm` on `PATH`, or `AIRLOCK_HELM`) with their values files,
//! and every `image:` of the Pod templates in the rendered workloads — containers,
//! initContainers and ephemeralContainers of Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, Jobs, CronJobs and Pods — is added to the chart's component as a
//! registry image (`docker://<image>`), unless the spec already lists it. Which chart,
//! manifest and container asked for each image is reported and recorded in the SBOM.
//!
//! Explicit image lists never need helm; discovery without helm is an error with a hint.
//! The charts rendered are the ones the plan loaded (dependencies vendored), so
//! discovery fetches nothing itself.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::report::{Event, Reporter};
use serde_yaml::Value;

use crate::sources::{normalize_reference, LoadedChart};
use crate::spec::{ImageEntrySpec, LoadedSpec};

/// One image reference found in a rendered chart, and who asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The normalized reference (`docker.io/library/nginx:1.27`).
    pub image: String,
    /// `chart NAME: Kind/name (template file) container NAME`.
    pub requested_by: String,
}

/// The helm binary: `AIRLOCK_HELM`, else `helm` on `PATH`.
pub fn helm_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AIRLOCK_HELM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("helm")).find(|p| p.is_file())
}

/// Renders every chart of `spec` marked `discover_images` (`charts`: each chart as
/// loaded, by component and chart index) and returns the images found, each with the
/// index of its component.
pub fn render_charts(spec: &LoadedSpec, charts: &BTreeMap<(usize, usize), LoadedChart>) -> Result<Vec<(usize, Found)>> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut found = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (hi, ch) in c.charts.iter().enumerate().filter(|(_, h)| h.discover_images) {
            let key = format!("components[{ci}].charts[{hi}]");
            let what = format!("{}: {key}", spec.file.display());
            let chart = charts.get(&(ci, hi)).expect("every chart is loaded before discovery");
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut chart.content.open()?, &mut bytes).at(chart.content.origin())?;
            let tgz = scratch.path().join(format!("chart-{ci}-{hi}.tgz"));
            fs::write(&tgz, &bytes).at(&tgz)?;
            // Rendered with the values the install will give it: the vendor's own
            // (`values`), then any values files named for discovery.
            let mut values = Vec::new();
            if let Some(map) = &ch.values {
                let f = scratch.path().join(format!("values-{ci}-{hi}.yaml"));
                let text = serde_yaml::to_string(map).map_err(|e| spec.err(format!("{key}.values"), e.to_string()))?;
                fs::write(&f, text).at(&f)?;
                values.push(f);
            }
            for (vi, v) in ch.values_files.iter().enumerate() {
                values.push(spec.path(format!("{key}.values_files[{vi}]"), v)?);
            }
            let label = ch.name.clone().or_else(|| ch.path.clone()).unwrap_or_default();
            for f in discover(&label, &tgz, &values, &what)? {
                found.push((ci, f));
            }
        }
    }
    Ok(found)
}

/// Renders the packaged chart `tgz` with `values` files and returns the images its
/// workloads reference, in manifest order.
pub fn discover(chart_label: &str, tgz: &Path, values: &[PathBuf], what: &str) -> Result<Vec<Found>> {
    let helm = helm_binary().ok_or_else(|| {
        Error::input(what, "`discover_images: true` needs helm to render the chart, and there is none")
            .with_hint("install helm 3 on PATH (or set AIRLOCK_HELM=/path/to/helm), or list the images under `images:` and drop discover_images")
    })?;
    // helm keeps no state of ours: its config and cache go to a throwaway directory,
    // and no repository is configured (dependencies are vendored already).
    let home = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let repos = home.path().join("repositories.yaml");
    std::fs::write(&repos, "").at(&repos)?;
    let mut cmd = Command::new(&helm);
    cmd.env("HOME", home.path())
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("HELM_REPOSITORY_CONFIG", &repos)
        .args(["template", "airlock-discovery"])
        .arg(tgz)
        .stdin(Stdio::null());
    for v in values {
        cmd.arg("--values").arg(v);
    }
    let line: Vec<_> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect();
    log::info!(target: "airlock::bundler", "run {}", line.join(" "));
    let out = cmd.output().map_err(|e| {
        Error::input(what, format!("cannot run {}: {e}", helm.display()))
            .with_hint("check AIRLOCK_HELM / the helm on PATH")
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::input(what, format!("`helm template` failed: {}", stderr.trim()))
            .with_hint("fix the chart or its values; `helm template` shows the same error"));
    }
    parse_rendered(chart_label, &String::from_utf8_lossy(&out.stdout), what)
}

/// Images of the Pod templates in a `helm template` output.
pub fn parse_rendered(chart_label: &str, text: &str, what: &str) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut source = String::new();
    for doc in text.split("\n---") {
        // helm marks each document with `# Source: chart/templates/x.yaml`.
        if let Some(s) = doc.lines().find_map(|l| l.strip_prefix("# Source: ")) {
            source = s.trim().to_string();
        }
        let v: Value = match serde_yaml::from_str(doc) {
            Ok(v) => v,
            Err(e) => {
                return Err(Error::input(what, format!("helm rendered YAML that does not parse ({source}): {e}"))
                    .with_hint("fix the chart's template"))
            }
        };
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = v.pointer_str("metadata.name");
        let pod_spec = match kind {
            "Pod" => v.get("spec"),
            "CronJob" => v
                .get("spec")
                .and_then(|s| s.get("jobTemplate"))
                .and_then(|j| j.get("spec"))
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("spec")),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                v.get("spec").and_then(|s| s.get("template")).and_then(|t| t.get("spec"))
            }
            _ => None,
        };
        let Some(pod_spec) = pod_spec else { continue };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in pod_spec.get(list).and_then(Value::as_sequence).into_iter().flatten() {
                let Some(image) = c.get("image").and_then(Value::as_str).filter(|i| !i.trim().is_empty()) else {
                    continue;
                };
                let container = c.get("name").and_then(Value::as_str).unwrap_or("?");
                let image = normalize_reference(image.trim())
                    .map_err(|e| e.within(format!("{what}: {kind}/{name} ({source}) {list} {container}")))?;
                out.push(Found {
                    image,
                    requested_by: format!("chart {chart_label}: {kind}/{name} ({source}) {list} {container}"),
                });
            }
        }
    }
    Ok(out)
}

trait PointerStr {
    fn pointer_str(&self, path: &str) -> String;
}

impl PointerStr for Value {
    fn pointer_str(&self, path: &str) -> String {
        let mut v = self;
        for k in path.split('.') {
            match v.get(k) {
                Some(n) => v = n,
                None => return "?".into(),
            }
        }
        v.as_str().unwrap_or("?").to_string()
    }
}

/// The spec with the discovered images added to their components (as registry
/// images), and who asked for each image reference.
pub fn with_discovered(
    spec: &LoadedSpec,
    found: &[(usize, Found)],
    reporter: &dyn Reporter,
) -> Result<(LoadedSpec, BTreeMap<String, Vec<String>>)> {
    let mut out = spec.clone();
    let mut listed = std::collections::BTreeSet::new();
    for c in &spec.spec.components {
        for i in &c.images {
            listed.insert(normalize_reference(&i.reference).unwrap_or_else(|_| i.reference.clone()));
        }
    }
    let mut asked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ci, f) in found {
        reporter
            .event(Event::Phase { name: &format!("image {} discovered: {}", f.image, f.requested_by), total: None });
        let by = asked.entry(f.image.clone()).or_default();
        if !by.contains(&f.requested_by) {
            by.push(f.requested_by.clone());
        }
        if listed.insert(f.image.clone()) {
            out.spec.components[*ci].images.push(ImageEntrySpec {
                reference: f.image.clone(),
                from: format!("docker://{}", f.image),
                platforms: None,
                signatures: None,
            });
        }
    }
    Ok((out, asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "---
# Source: app/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: registry.local/app/migrate:1
      containers:
        - name: web
          image: nginx:1.27
---
# Source: app/templates/cron.yaml
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: job
              image: registry.local/app/job@sha256:0000000000000000000000000000000000000000000000000000000000000000
---
# Source: app/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  image: not-an-image-field
---
# Source: app/templates/pod.yaml
apiVersion: v1
kind: Pod
metadata:
  name: debug
spec:
  ephemeralContainers:
    - name: dbg
      image: busybox
";

    #[test]
    fn images_of_every_pod_template_kind_and_container_list_are_found_with_who_asked() {
        let f = parse_rendered("app 0.1.0", RENDERED, "test").unwrap();
        let got: Vec<(&str, &str)> = f.iter().map(|f| (f.image.as_str(), f.requested_by.as_str())).collect();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(got[0].0, "registry.local/app/migrate:1");
        assert!(got[0].1.contains("Deployment/web (app/templates/deploy.yaml) initContainers migrate"), "{}", got[0].1);
        assert_eq!(got[1].0, "docker.io/library/nginx:1.27");
        assert!(got[2].0.starts_with("registry.local/app/job@sha256:"));
        assert!(got[2].1.contains("CronJob/nightly"));
        assert_eq!(got[3].0, "docker.io/library/busybox:latest");
        assert!(got[3].1.contains("ephemeralContainers dbg"));
    }
}
