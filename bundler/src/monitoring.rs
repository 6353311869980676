//! The monitoring content a bundle carries (`monitoring/rules/`, `monitoring/dashboards/`):
//! the vendor's, from the directories the spec's `monitoring:` names, or the reference
//! content built into the bundler (`assets/monitoring/`) for what the spec leaves out.
//!
//! Every file is checked here ([`airlock_format::monitoring`]), so a rule that does not
//! parse or a dashboard that queries another data source fails the build with the
//! file named, not the customer's install.

use std::fs;
use std::path::Path;

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::monitoring::{check_dashboards, merge_rule_files, GRAFANA_CHART, PROMETHEUS_CHART};

use crate::spec::LoadedSpec;

/// The reference alert rules (blueprint §9.2 corrected, plus the platform's).
pub const REFERENCE_RULES: &[(&str, &str)] =
    &[("alerts.yaml", include_str!("../../assets/monitoring/rules/alerts.yaml"))];

/// The reference dashboards (blueprint §9.3).
pub const REFERENCE_DASHBOARDS: &[(&str, &str)] = &[
    ("airlock-api-performance.json", include_str!("../../assets/monitoring/dashboards/airlock-api-performance.json")),
    ("airlock-database.json", include_str!("../../assets/monitoring/dashboards/airlock-database.json")),
    ("airlock-export-pipeline.json", include_str!("../../assets/monitoring/dashboards/airlock-export-pipeline.json")),
    ("airlock-security.json", include_str!("../../assets/monitoring/dashboards/airlock-security.json")),
    ("airlock-system-health.json", include_str!("../../assets/monitoring/dashboards/airlock-system-health.json")),
    ("airlock-tenant-activity.json", include_str!("../../assets/monitoring/dashboards/airlock-tenant-activity.json")),
];

/// The content to carry: `(file name, text)` per rule file and per dashboard, each
/// sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub rules: Vec<(String, String)>,
    pub dashboards: Vec<(String, String)>,
}

fn owned(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
}

/// The content a bundle with these charts carries: none when the spec has no
/// `monitoring:` and no chart the installer renders it for; otherwise the spec's
/// directories, the reference content for each one it leaves out. Checked.
pub fn collect(spec: &LoadedSpec, chart_names: &[&str]) -> Result<Option<Content>> {
    let wanted = spec.spec.monitoring.as_ref();
    if wanted.is_none() && !chart_names.iter().any(|n| [PROMETHEUS_CHART, GRAFANA_CHART].contains(n)) {
        return Ok(None);
    }
    let rules = match wanted.and_then(|m| m.rules.as_deref()) {
        Some(rel) => read_dir(spec, "monitoring.rules", rel, &["yaml", "yml"])?,
        None => owned(REFERENCE_RULES),
    };
    let dashboards = match wanted.and_then(|m| m.dashboards.as_deref()) {
        Some(rel) => read_dir(spec, "monitoring.dashboards", rel, &["json"])?,
        None => owned(REFERENCE_DASHBOARDS),
    };
    let within = |key: &str| format!("{}: {key}", spec.file.display());
    let named = |key: &str, files: &[(String, String)], rel: Option<&str>| -> Vec<(String, String)> {
        // Errors name the file where the vendor has it.
        let dir = rel.map(|r| spec.dir.join(r));
        files
            .iter()
            .map(|(n, t)| {
                let shown = dir.as_ref().map_or(format!("{key} (reference) {n}"), |d| d.join(n).display().to_string());
                (shown, t.clone())
            })
            .collect()
    };
    merge_rule_files(&named("monitoring.rules", &rules, wanted.and_then(|m| m.rules.as_deref())))
        .map_err(|e| e.within(within("monitoring.rules")))?;
    let shown = named("monitoring.dashboards", &dashboards, wanted.and_then(|m| m.dashboards.as_deref()));
    check_dashboards(&dashboards)
        .map_err(|e| rename_subject(e, &shown))
        .map_err(|e| e.within(within("monitoring.dashboards")))?;
    Ok(Some(Content { rules, dashboards }))
}

fn file_name_of(shown: &str) -> String {
    shown.rsplit(['/', ' ']).next().unwrap_or(shown).to_string()
}

/// Errors from [`check_dashboards`] name the bare file; say where it is.
fn rename_subject(mut e: Error, shown: &[(String, String)]) -> Error {
    if let Some((full, _)) = shown.iter().find(|(s, _)| file_name_of(s) == e.subject) {
        e.subject = full.clone();
    }
    e
}

/// Every file of a vendor directory, sorted: each must have one of `extensions`;
/// promtool unit tests (`*.test.yaml`, `*.test.yml`) kept beside rules are left out.
fn read_dir(spec: &LoadedSpec, key: &str, rel: &str, extensions: &[&str]) -> Result<Vec<(String, String)>> {
    let dir = spec.path(key, rel)?;
    if !dir.is_dir() {
        return Err(spec
            .err(key, format!("`{}` is not a directory", dir.display()))
            .with_hint("name a directory holding the files; paths are relative to the spec"));
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).at(&dir)? {
        let path = e.at(&dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
            continue;
        }
        let ext = Path::new(&name).extension().and_then(|x| x.to_str()).unwrap_or("");
        if !path.is_file() || !extensions.contains(&ext) {
            return Err(spec
                .err(key, format!("`{}` is not a .{} file", path.display(), extensions.join(" or .")))
                .with_hint("keep only those files in the directory (promtool tests may stay as `*.test.yaml`)"));
        }
        let text = fs::read_to_string(&path).at(&path)?;
        out.push((name, text));
    }
    if out.is_empty() {
        return Err(spec
            .err(key, format!("`{}` holds no .{} file", dir.display(), extensions.join(" or .")))
            .with_hint("leave the key out to ship the reference content, or add the files"));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &Path, monitoring: &str) -> LoadedSpec {
        let f = dir.join("bundle.yaml");
        fs::write(&f, format!("name: a\nversion: '1'\n{monitoring}")).unwrap();
        LoadedSpec::load(&f).unwrap()
    }

    #[test]
    fn the_reference_content_is_every_file_under_assets_monitoring() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/monitoring");
        for (sub, listed) in [("rules", REFERENCE_RULES), ("dashboards", REFERENCE_DASHBOARDS)] {
            let mut on_disk: Vec<String> = fs::read_dir(assets.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".test.yaml"))
                .collect();
            on_disk.sort();
            let names: Vec<String> = listed.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(names, on_disk, "assets/monitoring/{sub} and the bundler's list differ");
        }
    }

    #[test]
    fn without_monitoring_charts_or_key_nothing_is_carried_and_with_a_chart_the_reference_is() {
        let d = tempfile::tempdir().unwrap();
        let s = spec_in(d.path(), "");
        assert_eq!(collect(&s, &["app"]).unwrap(), None);
        let c = collect(&s, &["grafana"]).unwrap().unwrap();
        assert_eq!(c.rules, owned(REFERENCE_RULES));
        assert_eq!(c.dashboards.len(), 6);
    }

    #[test]
    fn a_vendor_directory_replaces_the_reference_and_a_broken_file_is_named_with_a_hint() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("rules")).unwrap();
        fs::write(d.path().join("rules/site.yaml"), "groups: [{name: s, rules: [{alert: A, expr: up == 0}]}]\n")
            .unwrap();
        fs::write(d.path().join("rules/site.test.yaml"), "tests: []\n").unwrap();
        let s = spec_in(d.path(), "monitoring:\n  rules: rules\n");
        let c = collect(&s, &[]).unwrap().unwrap();
        assert_eq!(c.rules.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["site.yaml"]);
        assert_eq!(c.dashboards, owned(REFERENCE_DASHBOARDS), "dashboards left out: the reference ones");

        fs::write(d.path().join("rules/broken.yaml"), "groups: [{name: b, rules: [{alert: B}]}]\n").unwrap();
        let e = collect(&s, &[]).unwrap_err().to_string();
        assert!(e.contains("rules/broken.yaml") && e.contains("no `expr`") && e.contains("hint:"), "{e}");
        fs::remove_file(d.path().join("rules/broken.yaml")).unwrap();
        fs::write(d.path().join("rules/README.md"), "notes").unwrap();
        let e = collect(&s, &[]).unwrap_err().to_string();
        assert!(e.contains("README.md") && e.contains("monitoring.rules"), "{e}");

        fs::create_dir_all(d.path().join("boards")).unwrap();
        let board = |ds: &str| {
            format!(
                r#"{{"uid": "u", "title": "T", "panels": [{{"title": "p", "datasource": {{"uid": "{ds}"}}, "targets": [{{"expr": "up"}}]}}]}}"#
            )
        };
        fs::write(d.path().join("boards/b.json"), board("grafanacloud-prom")).unwrap();
        let s = spec_in(d.path(), "monitoring:\n  dashboards: boards\n");
        let e = collect(&s, &[]).unwrap_err().to_string();
        assert!(e.contains("boards/b.json") && e.contains("grafanacloud-prom") && e.contains("hint:"), "{e}");
        fs::write(d.path().join("boards/b.json"), board("prometheus")).unwrap();
        assert_eq!(collect(&s, &[]).unwrap().unwrap().dashboards[0].0, "b.json");
    }
}
