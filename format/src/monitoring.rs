//! The monitoring content a bundle carries: the vendor's Prometheus alert rule files
//! and Grafana dashboards, which the installer renders into the prometheus chart's
//! values and the dashboards ConfigMap.
//!
//! They are bundle entries like any other (signed sizes and digests), so an upgrade to
//! a bundle with changed rules or dashboards changes what is deployed, and a rollback
//! puts the old ones back. The checks here run twice: in the bundler, so a broken rule
//! or dashboard fails the build and not the customer's install, and in the installer
//! before it renders, so a bundle made by another tool is held to the same shape.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::{Error, Result};

/// The charts the installer renders this content for, by the names bundles give them.
pub const PROMETHEUS_CHART: &str = "prometheus";
pub const GRAFANA_CHART: &str = "grafana";
/// Where the rule files live inside the bundle (`monitoring/rules/<file>.yaml`).
pub const RULES_DIR: &str = "monitoring/rules";
/// Where the dashboards live inside the bundle (`monitoring/dashboards/<file>.json`).
pub const DASHBOARDS_DIR: &str = "monitoring/dashboards";
/// The uid of the Prometheus data source the installer provisions in Grafana: every
/// panel must query it (a dashboard naming another source shows nothing on site).
pub const DATASOURCE_UID: &str = "prometheus";
/// Its name, which older dashboards use instead of the uid.
pub const DATASOURCE_NAME: &str = "Prometheus";
/// The dashboards share one ConfigMap; Kubernetes refuses one over 1 MiB, and the
/// manifest file also carries the object's metadata.
pub const MAX_DASHBOARDS_BYTES: u64 = 900 * 1024;

/// Whether a file name is usable as a ConfigMap key (and so as a dashboard's file in
/// Grafana's pod): `[-._a-zA-Z0-9]`, which the bundle path alphabet includes.
pub fn config_map_key_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Checks one rule file: YAML with a non-empty `groups` list, each group with a name
/// and rules, each rule an `alert` or `record` with an `expr`. Returns the group names.
/// `what` names the file in errors.
pub fn check_rule_file(what: &str, text: &str) -> Result<Vec<String>> {
    let hint = "a rule file is Prometheus' format: `groups: [{name: NAME, rules: [{alert: NAME, expr: PROMQL}]}]` \
                (check it with `promtool check rules FILE`)";
    let bad = |cause: String| Error::input(what, cause).with_hint(hint);
    let doc: Value = serde_yaml::from_str(text).map_err(|e| bad(format!("is not valid YAML: {e}")))?;
    let groups = doc.get("groups").and_then(Value::as_array).ok_or_else(|| bad("has no `groups` list".into()))?;
    if groups.is_empty() {
        return Err(bad("has an empty `groups` list".into()));
    }
    let mut names = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let name = g
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| bad(format!("groups[{i}] has no `name`")))?;
        let rules = g
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("group `{name}` has no `rules` list")))?;
        for (j, r) in rules.iter().enumerate() {
            let at = format!("group `{name}`, rules[{j}]");
            let named = ["alert", "record"].iter().filter(|k| r.get(**k).and_then(Value::as_str).is_some()).count();
            if named != 1 {
                return Err(bad(format!("{at} needs exactly one of `alert` and `record`")));
            }
            if r.get("expr").and_then(expr_text).is_none_or(|e| e.trim().is_empty()) {
                return Err(bad(format!("{at} has no `expr`")));
            }
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// An `expr` may be written as a number in YAML (`expr: 1`); it is still PromQL.
fn expr_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Every rule file's groups in one `{groups: [...]}` document, files in the order
/// given: what the prometheus chart takes as `serverFiles."alerting_rules.yml"`.
/// Prometheus refuses a file with two groups of one name, so the same name in two
/// files is refused here, naming both.
pub fn merge_rule_files(files: &[(String, String)]) -> Result<Value> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut groups = Vec::new();
    for (file, text) in files {
        for name in check_rule_file(file, text)? {
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                return Err(Error::input(file.as_str(), format!("group `{name}` is also in {first}")).with_hint(
                    "Prometheus loads every file's groups into one rule file: give each group its own name",
                ));
            }
            seen.push((name, file.clone()));
        }
        let doc: Value = serde_yaml::from_str(text).map_err(|e| Error::input(file.as_str(), e.to_string()))?;
        groups.extend(doc["groups"].as_array().cloned().unwrap_or_default());
    }
    Ok(serde_json::json!({ "groups": groups }))
}

/// What [`check_dashboard`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashboardFacts {
    pub uid: String,
    pub title: String,
    /// Every query: `(where, PromQL)`, where is `title / panel title`.
    pub queries: Vec<(String, String)>,
}

/// Checks one dashboard: Grafana dashboard JSON with a `uid` and a `title`, and every
/// panel (rows' panels included) that queries anything querying the provisioned
/// Prometheus data source ([`DATASOURCE_UID`]), at the panel or the target.
pub fn check_dashboard(what: &str, text: &str) -> Result<DashboardFacts> {
    let hint = format!(
        "export the dashboard from Grafana as JSON (\"Export for sharing externally\" off), give it a `uid` and a \
         `title`, and point every panel at the data source with uid `{DATASOURCE_UID}`"
    );
    let bad = |cause: String| Error::input(what, cause).with_hint(hint.clone());
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(bad("is not a JSON object (a Grafana dashboard)".into()));
    }
    let field = |k: &str| doc.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_string);
    let uid = field("uid").ok_or_else(|| bad("has no `uid`".into()))?;
    // Grafana refuses longer uids.
    if uid.len() > 40 {
        return Err(bad(format!("uid `{uid}` is longer than the 40 characters Grafana accepts")));
    }
    let title = field("title").ok_or_else(|| bad("has no `title`".into()))?;
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> =
        doc.get("panels").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(p) = panels.pop() {
        // A collapsed row holds its panels.
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            panels.extend(inner);
        }
        let Some(targets) = p.get("targets").and_then(Value::as_array).filter(|t| !t.is_empty()) else { continue };
        let ptitle = p.get("title").and_then(Value::as_str).unwrap_or("(untitled)");
        let panel_ds = p.get("datasource");
        for t in targets {
            let ds = t.get("datasource").filter(|d| !d.is_null()).or(panel_ds.filter(|d| !d.is_null()));
            if !is_provisioned_prometheus(ds) {
                let named = ds.map_or("none".to_string(), Value::to_string);
                return Err(bad(format!(
                    "panel `{ptitle}` queries data source {named}, not the provisioned Prometheus (uid `{DATASOURCE_UID}`)"
                )));
            }
            if let Some(expr) = t.get("expr").and_then(Value::as_str) {
                queries.push((format!("{title} / {ptitle}"), expr.to_string()));
            }
        }
    }
    queries.reverse();
    Ok(DashboardFacts { uid, title, queries })
}

/// Whether a panel's or target's `datasource` is the one the installer provisions: by
/// uid (`{"type": "prometheus", "uid": "prometheus"}`), by its name as older
/// dashboards write it (`"Prometheus"`), or left out, which Grafana reads as the
/// default data source, and the provisioned Prometheus is the default.
fn is_provisioned_prometheus(ds: Option<&Value>) -> bool {
    match ds {
        None => true,
        Some(Value::String(name)) => name == DATASOURCE_NAME,
        Some(d) => d.get("uid").and_then(Value::as_str) == Some(DATASOURCE_UID),
    }
}

/// Checks a set of dashboards as one ConfigMap holds them: each file's name a key,
/// each dashboard valid, uids unique (Grafana provisions one of two alike and logs
/// the other), and their size within [`MAX_DASHBOARDS_BYTES`].
pub fn check_dashboards(files: &[(String, String)]) -> Result<Vec<DashboardFacts>> {
    let mut uids = BTreeSet::new();
    let mut out = Vec::new();
    let mut total = 0u64;
    for (file, text) in files {
        if !config_map_key_ok(file) {
            return Err(Error::input(file.as_str(), "is not a usable file name for a dashboard")
                .with_hint("name dashboard files with letters, digits, `-`, `_` and `.` only"));
        }
        let facts = check_dashboard(file, text)?;
        if !uids.insert(facts.uid.clone()) {
            return Err(Error::input(file.as_str(), format!("uid `{}` is used by another dashboard too", facts.uid))
                .with_hint("give every dashboard its own uid"));
        }
        total += text.len() as u64;
        out.push(facts);
    }
    if total > MAX_DASHBOARDS_BYTES {
        return Err(Error::input(
            "monitoring dashboards",
            format!("take {total} bytes together, more than the {MAX_DASHBOARDS_BYTES} one ConfigMap may hold"),
        )
        .with_hint("remove panels or dashboards, or drop whitespace from the JSON"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "groups:\n  - name: a\n    rules:\n      - alert: Down\n        expr: up == 0\n";

    fn dashboard(uid: &str, ds: &str) -> String {
        serde_json::json!({
            "uid": uid, "title": "T",
            "panels": [{ "type": "row", "title": "r", "panels": [{
                "title": "p", "datasource": { "type": "prometheus", "uid": ds },
                "targets": [{ "refId": "A", "expr": "up" }],
            }]}],
        })
        .to_string()
    }

    #[test]
    fn a_rule_file_needs_named_groups_of_alerts_or_records_with_an_expr() {
        assert_eq!(check_rule_file("r.yaml", RULES).unwrap(), vec!["a"]);
        for (text, says) in [
            ("groups: [{rules: []}]", "groups[0] has no `name`"),
            ("groups: []", "empty"),
            ("{}", "no `groups`"),
            ("groups: [{name: a, rules: [{alert: X}]}]", "no `expr`"),
            ("groups: [{name: a, rules: [{expr: up}]}]", "exactly one of `alert` and `record`"),
            ("groups: [", "not valid YAML"),
        ] {
            let e = check_rule_file("vendor/r.yaml", text).unwrap_err();
            assert!(e.to_string().contains("vendor/r.yaml") && e.to_string().contains(says), "{text}: {e}");
            assert!(e.hint.as_deref().unwrap().contains("promtool check rules"), "{e}");
        }
    }

    #[test]
    fn merging_rule_files_keeps_every_group_and_refuses_a_name_in_two_files() {
        let other = RULES.replace("name: a", "name: b");
        let m = merge_rule_files(&[("1.yaml".into(), RULES.into()), ("2.yaml".into(), other)]).unwrap();
        assert_eq!(m["groups"][1]["name"], "b");
        let e = merge_rule_files(&[("1.yaml".into(), RULES.into()), ("2.yaml".into(), RULES.into())]).unwrap_err();
        assert!(e.to_string().contains("2.yaml") && e.to_string().contains("also in 1.yaml"), "{e}");
    }

    #[test]
    fn a_dashboard_needs_a_uid_a_title_and_every_panel_on_the_provisioned_prometheus() {
        let f = check_dashboard("d.json", &dashboard("x", DATASOURCE_UID)).unwrap();
        assert_eq!((f.uid.as_str(), f.queries), ("x", vec![("T / p".to_string(), "up".to_string())]));
        let e = check_dashboard("vendor/d.json", &dashboard("x", "${DS_PROMETHEUS}")).unwrap_err();
        assert!(e.to_string().contains("vendor/d.json") && e.to_string().contains("panel `p`"), "{e}");
        assert!(e.hint.is_some());
        // By name, or left to Grafana's default (the provisioned Prometheus), is fine.
        let by_name =
            dashboard("x", DATASOURCE_UID).replace(r#"{"type":"prometheus","uid":"prometheus"}"#, r#""Prometheus""#);
        assert!(by_name.contains(r#""datasource":"Prometheus""#), "{by_name}");
        check_dashboard("d.json", &by_name).unwrap();
        check_dashboard("d.json", &by_name.replace(r#""datasource":"Prometheus","#, "")).unwrap();
        let e = check_dashboard("d.json", &by_name.replace(r#""Prometheus""#, r#""Loki""#)).unwrap_err();
        assert!(e.to_string().contains("Loki"), "{e}");
        let e = check_dashboard("d.json", r#"{"title": "T"}"#).unwrap_err();
        assert!(e.to_string().contains("no `uid`"), "{e}");
        let e = check_dashboard("d.json", "[1]").unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
    }

    #[test]
    fn dashboards_need_config_map_names_and_distinct_uids() {
        let d = dashboard("x", DATASOURCE_UID);
        let e = check_dashboards(&[("a b.json".into(), d.clone())]).unwrap_err();
        assert!(e.to_string().contains("a b.json"), "{e}");
        let e = check_dashboards(&[("a.json".into(), d.clone()), ("b.json".into(), d)]).unwrap_err();
        assert!(e.to_string().contains("b.json") && e.to_string().contains("uid `x`"), "{e}");
    }
}
