//! A chart's `Chart.lock` (`requirements.lock` for `apiVersion: v1`), read and checked
//! as `helm dependency build` does before it vendors the locked versions.
//!
//! Helm refuses a lock whose `digest` is not the digest of the dependencies it was
//! written for, since the chart's authors changed `Chart.yaml` without running
//! `helm dependency update`. The digest (helm's `resolver.HashReq`) is the SHA-256 of
//! Go's `json.Marshal([2][]*chart.Dependency{chartYamlDeps, lockDeps})`. Reproducing
//! it byte for byte means following Go where it differs from serde_json: the struct's
//! field order and `omitempty` rules, map keys sorted, and `<`, `>`, `&`, U+2028 and
//! U+2029 escaped as `\u003c`… (Go's HTML-safe default). The `Chart.yaml` side is
//! sanitized first as helm's chart loader does (`Dependency.Validate`): white space
//! becomes a space and unprintable characters are dropped. A v1 chart's lock may also
//! carry the Helm 2 digest (`HashV2Req`: `{"dependencies": [...]}` of `requirements.yaml`
//! alone), which helm accepts too.

use serde::{Deserialize, Serialize};

use airlock_format::Sha256Digest;

/// One `dependencies:` entry, of `Chart.yaml`, `requirements.yaml` or a lock, with
/// every field helm hashes. Scalars stay YAML values: Go's YAML reader turns a number
/// written for a string field into its text, and so does [`scalar`].
#[derive(Deserialize, Clone, Debug, Default)]
pub struct Dependency {
    #[serde(default)]
    pub name: Option<serde_yaml::Value>,
    #[serde(default)]
    pub version: Option<serde_yaml::Value>,
    #[serde(default)]
    pub repository: Option<serde_yaml::Value>,
    #[serde(default)]
    condition: Option<serde_yaml::Value>,
    #[serde(default)]
    tags: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    enabled: Option<serde_yaml::Value>,
    #[serde(default, rename = "import-values")]
    import_values: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    alias: Option<serde_yaml::Value>,
}

impl Dependency {
    pub fn name(&self) -> String {
        self.name.as_ref().map(scalar).unwrap_or_default()
    }
    pub fn version(&self) -> String {
        self.version.as_ref().map(scalar).unwrap_or_default()
    }
    pub fn repository(&self) -> String {
        self.repository.as_ref().map(scalar).unwrap_or_default()
    }
}

/// The parts of a lock file the bundler uses (`generated:` is not hashed).
#[derive(Deserialize, Debug)]
pub struct ChartLock {
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

/// A YAML scalar as Go's YAML reader stores it in a string field.
pub fn scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// Go's `chart.Dependency` in its JSON form: field order and `omitempty` as declared
/// there (`name` and `repository` are always written).
#[derive(Serialize)]
struct GoDependency {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    condition: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    enabled: bool,
    #[serde(rename = "import-values", skip_serializing_if = "Vec::is_empty")]
    import_values: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    alias: String,
}

impl GoDependency {
    /// `sanitize`: as helm's loader leaves a `Chart.yaml` dependency (the lock's
    /// entries are hashed as read).
    fn from(d: &Dependency, sanitize: bool) -> Self {
        let s = |v: &Option<serde_yaml::Value>| {
            let text = v.as_ref().map(scalar).unwrap_or_default();
            if sanitize {
                sanitize_string(&text)
            } else {
                text
            }
        };
        GoDependency {
            name: s(&d.name),
            version: s(&d.version),
            repository: s(&d.repository),
            condition: s(&d.condition),
            tags: d
                .tags
                .iter()
                .flatten()
                .map(|t| if sanitize { sanitize_string(&scalar(t)) } else { scalar(t) })
                .collect(),
            enabled: matches!(d.enabled, Some(serde_yaml::Value::Bool(true))),
            import_values: d.import_values.iter().flatten().map(go_json).collect(),
            // Not sanitized by helm either.
            alias: d.alias.as_ref().map(scalar).unwrap_or_default(),
        }
    }
}

/// helm's `sanitizeString`: white space becomes a space, unprintable characters go.
/// Rust has no `unicode.IsPrint`; control characters and the invisible format
/// characters an editor can slip in are what it drops in practice.
fn sanitize_string(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            if c.is_whitespace() {
                Some(' ')
            } else if c.is_control()
                || matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
            {
                None
            } else {
                Some(c)
            }
        })
        .collect()
}

/// A YAML value as Go holds it after `sigs.k8s.io/yaml` (YAML → JSON → `interface{}`):
/// map keys as strings, numbers as float64 (so `1.0` is written `1`).
fn go_json(v: &serde_yaml::Value) -> serde_json::Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(*b),
        Y::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e15 {
                serde_json::Value::from(f as i64)
            } else {
                serde_json::Number::from_f64(f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
        }
        Y::String(s) => serde_json::Value::String(s.clone()),
        Y::Sequence(items) => serde_json::Value::Array(items.iter().map(go_json).collect()),
        Y::Mapping(m) => {
            // Go writes map keys sorted; collect them sorted whatever serde_json's map is.
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                m.iter().map(|(k, v)| (scalar(k), go_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        Y::Tagged(t) => go_json(&t.value),
    }
}

/// `json.Marshal`'s text for `value`: serde_json's compact form with Go's HTML-safe
/// escapes. The replaced characters can only occur inside strings, where Go escapes
/// them, so replacing them across the whole text is exact.
fn go_marshal<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("plain data serializes")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// helm's `resolver.HashReq(req, lock)`: `sha256:<hex>`.
pub fn hash_req(req: &[Dependency], lock: &[Dependency]) -> String {
    let req: Vec<GoDependency> = req.iter().map(|d| GoDependency::from(d, true)).collect();
    let lock: Vec<GoDependency> = lock.iter().map(|d| GoDependency::from(d, false)).collect();
    format!("sha256:{}", Sha256Digest::of(go_marshal(&(req, lock)).as_bytes()).hex())
}

/// helm's `resolver.HashV2Req(req)`, the digest Helm 2 wrote into `requirements.lock`.
pub fn hash_v2_req(req: &[Dependency]) -> String {
    #[derive(Serialize)]
    struct V2 {
        dependencies: Vec<GoDependency>,
    }
    let v2 = V2 { dependencies: req.iter().map(|d| GoDependency::from(d, true)).collect() };
    format!("sha256:{}", Sha256Digest::of(go_marshal(&v2).as_bytes()).hex())
}

/// Whether `lock` was written for `req`, as `helm dependency build` decides it.
pub fn lock_matches(req: &[Dependency], lock: &ChartLock, api_v1: bool) -> bool {
    hash_req(req, &lock.dependencies) == lock.digest || (api_v1 && hash_v2_req(req) == lock.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Deps {
        dependencies: Vec<Dependency>,
    }

    /// Written by `helm dependency update` (helm v3.18.0) for the `Chart.yaml` below:
    /// every hashed field, and `<`, `>`, `&` that Go escapes.
    const CHART_YAML: &str = r#"apiVersion: v2
name: app
version: 0.1.0
dependencies:
  - name: sub
    version: ">=1.0.0 <2.0.0"
    repository: file://../sub
    condition: sub.enabled
    tags: [backend, "a&b"]
    import-values:
      - child: exports.data
        parent: imported
      - defaults
    alias: sub-one
  - name: dep2
    version: "~0.1"
    repository: "file://../dep2"
    enabled: true
"#;
    const CHART_LOCK: &str = r#"dependencies:
- name: sub
  repository: file://../sub
  version: 1.2.3
- name: dep2
  repository: file://../dep2
  version: 0.1.0
digest: sha256:95757d73bd29139b7636eb8e5cbb493bd569d62f39e6f6e81341010ea5084bb3
generated: "2026-12-07T12:58:51.941076978Z"
"#;

    #[test]
    fn the_digest_is_the_one_helm_dependency_update_writes() {
        let req: Deps = serde_yaml::from_str(CHART_YAML).unwrap();
        let lock: ChartLock = serde_yaml::from_str(CHART_LOCK).unwrap();
        assert_eq!(hash_req(&req.dependencies, &lock.dependencies), lock.digest);
        assert!(lock_matches(&req.dependencies, &lock, false));
    }

    #[test]
    fn an_upstream_chart_lock_verifies() {
        // prometheus-community/prometheus: its dependencies and the Chart.lock its
        // maintainers' helm wrote (wildcard ranges, conditions, an HTTP repository).
        let repo = "https://prometheus-community.github.io/helm-charts";
        let pairs = [
            ("alertmanager", "1.42.*", "1.42.0"),
            ("kube-state-metrics", "8.4.*", "8.4.0"),
            ("prometheus-node-exporter", "4.56.*", "4.56.1"),
            ("prometheus-pushgateway", "3.8.*", "3.8.0"),
        ];
        let mut chart = String::from("dependencies:\n");
        let mut lock = String::from("dependencies:\n");
        for (name, range, version) in pairs {
            chart.push_str(&format!(
                "  - name: {name}\n    version: \"{range}\"\n    repository: {repo}\n    condition: {name}.enabled\n"
            ));
            lock.push_str(&format!("- name: {name}\n  repository: {repo}\n  version: {version}\n"));
        }
        lock.push_str("digest: sha256:5d788dab0bb3fe083870a3ca91fe0a930bbcedda7cd202844f6afdab0a3e6d0b\n");
        lock.push_str("generated: \"2026-08-18T19:54:25.385159732Z\"\n");
        let req: Deps = serde_yaml::from_str(&chart).unwrap();
        let lock: ChartLock = serde_yaml::from_str(&lock).unwrap();
        assert!(lock_matches(&req.dependencies, &lock, false));
    }

    #[test]
    fn a_changed_range_or_a_changed_lock_entry_no_longer_matches() {
        let lock: ChartLock = serde_yaml::from_str(CHART_LOCK).unwrap();
        let req: Deps = serde_yaml::from_str(&CHART_YAML.replace("\"~0.1\"", "\"~0.2\"")).unwrap();
        assert!(!lock_matches(&req.dependencies, &lock, false));
        let req: Deps = serde_yaml::from_str(CHART_YAML).unwrap();
        let edited: ChartLock = serde_yaml::from_str(&CHART_LOCK.replace("version: 1.2.3", "version: 1.2.4")).unwrap();
        assert!(!lock_matches(&req.dependencies, &edited, false));
    }

    #[test]
    fn chart_yaml_strings_are_sanitized_as_helm_loads_them() {
        // A tab in the range and a zero-width space in the name hash like their clean forms.
        let lock: ChartLock = serde_yaml::from_str(CHART_LOCK).unwrap();
        let messy = CHART_YAML
            .replace("\">=1.0.0 <2.0.0\"", "\">=1.0.0\\t<2.0.0\"")
            .replace("name: dep2", "name: \"dep\u{200b}2\"");
        let req: Deps = serde_yaml::from_str(&messy).unwrap();
        assert!(lock_matches(&req.dependencies, &lock, false));
    }

    #[test]
    fn a_helm_2_requirements_lock_digest_is_accepted_for_v1_charts_only() {
        let req: Deps = serde_yaml::from_str(CHART_YAML).unwrap();
        let lock = ChartLock { digest: hash_v2_req(&req.dependencies), dependencies: vec![] };
        assert!(lock_matches(&req.dependencies, &lock, true));
        assert!(!lock_matches(&req.dependencies, &lock, false));
    }
}
