//! The bundle spec (`bundle.yaml`): what the vendor wants in a bundle.
//!
//! Parsing is strict: unknown keys are errors, and every error names the spec file,
//! the key (`components[1].images[0].ref`) and the cause. Paths are relative to the
//! spec file. The full key reference is `docs/bundle-spec.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::key_statement::KeyAction;
use airlock_format::manifest::DistributionKind;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Bundle name (letters, digits, `._-+@:=`; no `/`).
    pub name: String,
    /// Bundle version, same alphabet; semver when `upgrade` is given.
    pub version: String,
    /// The Kubernetes distribution release the bundle carries.
    #[serde(default)]
    pub distribution: Option<DistributionSpec>,
    /// The components: images, charts and files.
    #[serde(default)]
    pub components: Vec<ComponentSpec>,
    /// Paths of install profiles (`profiles/*.yaml`), relative to the spec.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The `airlock` binary to carry (`--installer` overrides it).
    #[serde(default)]
    pub installer: Option<InstallerSpec>,
    /// How to reach registries that need more than the defaults (a private CA, or a
    /// lab registry without verified TLS).
    #[serde(default)]
    pub registries: Vec<RegistrySpec>,
    /// Vendor key rotation and revocation statements the bundle carries (docs/bundle-spec.md).
    #[serde(default)]
    pub key_statements: Vec<KeyStatementSpec>,
    /// Which installed releases this one may upgrade (docs/bundle-spec.md, `upgrade`).
    #[serde(default)]
    pub upgrade: Option<UpgradeSpec>,
    /// Cosign signatures the registry (`docker://`) images are checked for at create
    /// time, with the vendor's or upstream's public keys and no transparency log; an
    /// image's own `signatures:` replaces this one.
    #[serde(default)]
    pub signatures: Option<SignaturesSpec>,
    /// The monitoring content to ship: directories of Prometheus rule files and
    /// Grafana dashboards. Each one left out is the reference content; without the
    /// key that content is carried whenever a `prometheus` or `grafana` chart is
    /// (docs/monitoring.md, "Shipping changed rules and dashboards").
    #[serde(default)]
    pub monitoring: Option<MonitoringSpec>,
    /// What the site's backups use from the bundle (docs/bundle-spec.md, `backup`).
    #[serde(default)]
    pub backup: Option<BackupSpec>,
}

/// `monitoring:`: where the vendor keeps the monitoring content.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSpec {
    /// A directory of Prometheus rule files (`*.yaml`, `*.yml`; promtool unit tests
    /// named `*.test.yaml` may sit beside them and are not carried), relative to the
    /// spec. Every group of every file goes to Prometheus.
    #[serde(default)]
    pub rules: Option<String>,
    /// A directory of Grafana dashboards (`*.json`), relative to the spec; each panel
    /// queries the data source with uid `prometheus`.
    #[serde(default)]
    pub dashboards: Option<String>,
}

/// `backup:`: the vendor's part of the site's backup and restore drill.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// Consistency checks `airlock restore --drill` runs against the restored copy of
    /// the app's database: bundle paths `files/<component>/<name>.sql` of `files[]`
    /// entries, each one SQL query that returns no row when the data is consistent.
    #[serde(default)]
    pub drill_checks: Vec<String>,
}

/// `signatures:`: cosign public keys an image's signature must verify with.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignaturesSpec {
    /// Every image this applies to must carry a signature by one of `keys`; `false`:
    /// a signature that is there is still checked, a missing one is accepted.
    #[serde(default)]
    pub require: bool,
    /// Cosign public keys (`cosign.pub`, ECDSA P-256 PEM), relative to the spec.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// `upgrade:`: the version policy `airlock upgrade` enforces on the site.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// Semver requirement on the installed version (`>=1.0.0, <2.0.0`).
    #[serde(default)]
    pub from: Option<String>,
    /// Versions that may not be skipped.
    #[serde(default)]
    pub required: Vec<String>,
}

impl UpgradeSpec {
    pub fn into_policy(self) -> airlock_format::manifest::UpgradePolicy {
        airlock_format::manifest::UpgradePolicy { from: self.from, required: self.required }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// `host[:port]` as image references write it.
    pub host: String,
    /// PEM file of the CA that signed the registry's certificate (relative to the spec).
    #[serde(default)]
    pub ca: Option<String>,
    /// Do not verify TLS, and use plain HTTP if the registry has no TLS. Lab use only.
    #[serde(default)]
    pub insecure: bool,
}

/// One key statement: either made and signed now with the bundle's key (`sequence`,
/// `action`, `key` or `key_id`), or one signed earlier and carried forward unchanged
/// (`statement`, with its `.minisig` beside it).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyStatementSpec {
    /// Position in the vendor's key history (1, 2, 3, …), never reused.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// `introduce`, `retire` or `revoke`.
    #[serde(default)]
    pub action: Option<KeyAction>,
    /// The `.pub` file of the key the statement is about.
    #[serde(default)]
    pub key: Option<String>,
    /// The key id, when retiring or revoking a key whose `.pub` file is gone.
    #[serde(default)]
    pub key_id: Option<String>,
    /// One line, kept in the site's revocation list.
    #[serde(default)]
    pub reason: Option<String>,
    /// A statement JSON signed earlier (its signature is `<statement>.minisig`).
    #[serde(default)]
    pub statement: Option<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributionSpec {
    /// `k3s` or `rke2`.
    pub kind: DistributionKind,
    /// Release version, e.g. `v1.31.4+k3s1`.
    pub version: String,
    /// `amd64` (default), `arm64`, …
    #[serde(default = "default_arch")]
    pub arch: String,
    /// The release's own `sha256sum-<arch>.txt`; every artifact must match a line.
    #[serde(default)]
    pub checksums: Option<String>,
    /// Where the release is published (`https://.../releases/download/v1.31.4%2Bk3s1`):
    /// artifacts without `path` or `url` are `<base_url>/<name>`, and the checksum list
    /// `<base_url>/sha256sum-<arch>.txt` unless `checksums` says otherwise.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A directory holding the release as published: artifacts without `path` are
    /// `<dir>/<name>`, the checksum list `<dir>/sha256sum-<arch>.txt`.
    #[serde(default)]
    pub dir: Option<String>,
    /// The release's files the bundle carries.
    pub artifacts: Vec<ArtifactSpec>,
}

fn default_arch() -> String {
    "amd64".into()
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    /// File name as the release publishes it (`k3s`, `rke2.linux-amd64.tar.gz`, …).
    pub name: String,
    /// A local file (relative to the spec).
    #[serde(default)]
    pub path: Option<String>,
    /// Where to download it from (checked against the release's checksum list).
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Component name, unique.
    pub name: String,
    /// Container images, each from a source (`oci:`, `oci-archive:`, `docker-archive:`, `docker://`).
    #[serde(default)]
    pub images: Vec<ImageEntrySpec>,
    /// Helm charts: a local directory or `.tgz`, or `repo` + `name` + `version`.
    #[serde(default)]
    pub charts: Vec<ChartSpec>,
    /// Plain files for the operator.
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageEntrySpec {
    /// The reference the image will carry (normalised to the full form).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Where the image comes from: `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`,
    /// `docker-archive:FILE[:REF]` or `docker://REFERENCE`.
    pub from: String,
    /// e.g. `[linux/amd64]`; default: every platform the source has.
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
    /// This image's cosign signature check, instead of the spec's `signatures:`.
    #[serde(default)]
    pub signatures: Option<SignaturesSpec>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    /// A local chart directory or `.tgz`.
    #[serde(default)]
    pub path: Option<String>,
    /// A Helm repository (`https://…`) or OCI location (`oci://HOST/PATH`); with
    /// `name` and `version`, instead of `path`.
    #[serde(default)]
    pub repo: Option<String>,
    /// With `repo`: the chart's name.
    #[serde(default)]
    pub name: Option<String>,
    /// With `repo`: the chart's exact version.
    #[serde(default)]
    pub version: Option<String>,
    /// Values the vendor sets for this chart (image references, sizes): signed into
    /// the manifest; the installer merges what it generates over them.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub values: Option<serde_yaml::Mapping>,
    /// Render the chart with `helm template` at build time and add every image its
    /// workloads reference (docs/bundle-spec.md, "Image discovery").
    #[serde(default)]
    pub discover_images: bool,
    /// Values files (relative to the spec) for that render, applied after `values`.
    #[serde(default)]
    pub values_files: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// A regular file below the spec's directory.
    pub path: String,
    /// Name in the bundle (default: the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// `"0644"` or `"0755"`; defaults to the source file's executable bit.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallerSpec {
    /// The `airlock` binary (relative to the spec).
    pub path: String,
}

/// A parsed spec with the directory its relative paths start from.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub file: PathBuf,
    pub dir: PathBuf,
    pub spec: Spec,
}

impl LoadedSpec {
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).at(file)?;
        let spec: Spec = serde_yaml::from_str(&text).map_err(|e| {
            Error::input(file.display().to_string(), e.to_string())
                .with_hint("see docs/bundle-spec.md for every key the spec accepts")
        })?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let loaded = Self { file: file.to_path_buf(), dir, spec };
        loaded.validate()?;
        Ok(loaded)
    }

    /// `file: key: cause` errors.
    pub fn err(&self, key: impl std::fmt::Display, cause: impl Into<String>) -> Error {
        Error::input(format!("{}: {key}", self.file.display()), cause)
    }

    /// Resolves a spec path and checks that it exists.
    pub fn path(&self, key: impl std::fmt::Display, rel: &str) -> Result<PathBuf> {
        let p = self.dir.join(rel);
        if !p.exists() {
            return Err(self
                .err(key, format!("`{}` does not exist", p.display()))
                .with_hint("paths in the spec are relative to the spec file"));
        }
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        let s = &self.spec;
        name_ok(&s.name).map_err(|c| self.err("name", c))?;
        name_ok(&s.version).map_err(|c| self.err("version", c))?;
        let mut comps = BTreeSet::new();
        for (i, c) in s.components.iter().enumerate() {
            name_ok(&c.name).map_err(|why| self.err(format!("components[{i}].name"), why))?;
            if !comps.insert(&c.name) {
                return Err(
                    self.err(format!("components[{i}].name"), format!("component `{}` is listed twice", c.name))
                );
            }
            for (j, ch) in c.charts.iter().enumerate() {
                let ok = matches!(
                    (&ch.path, &ch.repo, &ch.name, &ch.version),
                    (Some(_), None, None, None) | (None, Some(_), Some(_), Some(_))
                );
                if !ok {
                    return Err(self
                        .err(format!("components[{i}].charts[{j}]"), "give either `path`, or `repo`, `name` and `version`")
                        .with_hint("a local chart: `path: charts/app`; from a repository: `repo: https://charts.example.com`, `name: app`, `version: 1.2.3`"));
                }
            }
            for (j, f) in c.files.iter().enumerate() {
                if let Some(n) = &f.name {
                    name_ok(n).map_err(|why| self.err(format!("components[{i}].files[{j}].name"), why))?;
                }
                if let Some(m) = &f.mode {
                    if m != "0644" && m != "0755" {
                        return Err(self.err(
                            format!("components[{i}].files[{j}].mode"),
                            format!("`{m}` is not allowed; bundles carry only 0644 and 0755 files"),
                        ));
                    }
                }
            }
        }
        if let Some(b) = &s.backup {
            // Where each component file is stored: what a drill check must name.
            let stored: Vec<String> = s
                .components
                .iter()
                .flat_map(|c| {
                    c.files.iter().map(move |f| {
                        let name = f.name.clone().unwrap_or_else(|| {
                            Path::new(&f.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                        });
                        format!("files/{}/{name}", c.name)
                    })
                })
                .collect();
            for (i, c) in b.drill_checks.iter().enumerate() {
                if !c.ends_with(".sql") || !stored.contains(c) {
                    return Err(self
                        .err(format!("backup.drill_checks[{i}]"), format!("`{c}` is not an .sql file of the bundle"))
                        .with_hint(format!(
                            "list the SQL file under a component's files: and name it as stored, files/<component>/<name>.sql (here: {})",
                            if stored.is_empty() { "no files".to_string() } else { stored.join(", ") }
                        )));
                }
            }
        }
        if let Some(u) = &s.upgrade {
            // Checked here so a typo fails the build, not the customer's upgrade.
            if let Some(from) = &u.from {
                semver::VersionReq::parse(from).map_err(|e| {
                    self.err("upgrade.from", format!("`{from}` is not a semver requirement: {e}"))
                        .with_hint("write it like `>=1.0.0, <2.0.0` or `^1.2`")
                })?;
            }
            for (i, r) in u.required.iter().enumerate() {
                semver::Version::parse(r).map_err(|e| {
                    self.err(format!("upgrade.required[{i}]"), format!("`{r}` is not a semver version: {e}"))
                        .with_hint("name a released version exactly, like `1.2.0`")
                })?;
            }
            if semver::Version::parse(&s.version).is_err() {
                return Err(self
                    .err(
                        "version",
                        format!("`{}` is not a semver version, which an `upgrade:` policy needs", s.version),
                    )
                    .with_hint("version the bundle like `1.2.0`"));
            }
        }
        for (i, k) in s.key_statements.iter().enumerate() {
            let key = format!("key_statements[{i}]");
            match (&k.statement, k.sequence, k.action, &k.key, &k.key_id) {
                (Some(_), None, None, None, None) if k.reason.is_none() => {}
                (Some(_), ..) => {
                    return Err(self.err(&key, "`statement` (signed earlier) takes no other keys: its content is fixed"))
                }
                (None, Some(0), ..) => return Err(self.err(format!("{key}.sequence"), "sequences start at 1")),
                (None, Some(_), Some(KeyAction::Introduce), Some(_), None) => {}
                (None, Some(_), Some(KeyAction::Introduce), _, _) => {
                    return Err(self.err(&key, "`introduce` needs `key`: the .pub file of the key to introduce"))
                }
                (None, Some(_), Some(_), Some(_), None) | (None, Some(_), Some(_), None, Some(_)) => {}
                _ => {
                    return Err(self
                        .err(&key, "needs `sequence`, `action` and one of `key` / `key_id`, or `statement` alone")
                        .with_hint("see docs/bundle-spec.md, section key_statements"))
                }
            }
        }
        if let Some(d) = &s.distribution {
            name_ok(&d.arch).map_err(|why| self.err("distribution.arch", why))?;
            for (i, a) in d.artifacts.iter().enumerate() {
                name_ok(&a.name).map_err(|why| self.err(format!("distribution.artifacts[{i}].name"), why))?;
                if a.path.is_some() && a.url.is_some() {
                    return Err(self
                        .err(format!("distribution.artifacts[{i}]"), "has both `path` and `url`")
                        .with_hint("give one: a local file or where to download it"));
                }
            }
            if d.base_url.is_some() && d.dir.is_some() {
                return Err(self
                    .err("distribution", "has both `base_url` and `dir`")
                    .with_hint("give one: where the release is published, or a directory holding it"));
            }
        }
        Ok(())
    }
}

/// Names end up in bundle paths, so they use the bundle path alphabet.
fn name_ok(n: &str) -> std::result::Result<(), String> {
    if n.is_empty() {
        return Err("must not be empty".into());
    }
    if n.contains('/') || n == "." || n == ".." {
        return Err(format!("`{n}` must be a plain name, not a path"));
    }
    airlock_format::manifest::check_entry_path(n).map_err(|why| format!("`{n}`: {why}"))
}

/// The JSON Schema of `bundle.yaml` (draft 2020-12), from the types
/// [`LoadedSpec::load`] deserialises into, so an editor checks what the bundler takes.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Spec).to_value();
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "Airlock bundle spec (bundle.yaml)".into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<LoadedSpec> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bundle.yaml");
        std::fs::write(&f, yaml).unwrap();
        LoadedSpec::load(&f)
    }

    #[test]
    fn unknown_key_is_named_with_its_path_and_the_file() {
        let e = load("name: a\nversion: '1'\ncomponents:\n  - name: c\n    images:\n      - ref: x\n        form: y\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bundle.yaml"), "{msg}");
        assert!(msg.contains("components[0].images[0]") && msg.contains("form"), "{msg}");
        assert!(msg.contains("hint:"), "{msg}");
    }

    #[test]
    fn backup_drill_checks_must_name_an_sql_file_of_a_component_as_stored() {
        let spec = |check: &str| {
            format!(
                "name: a\nversion: '1'\ncomponents:\n  - name: app\n    files:\n      - path: checks/orphans.sql\n        \
                 name: exports.sql\n      - path: README.txt\nbackup:\n  drill_checks:\n    - {check}\n"
            )
        };
        assert!(load(&spec("files/app/exports.sql")).is_ok());
        for bad in ["checks/orphans.sql", "files/app/orphans.sql", "files/app/README.txt", "files/other/exports.sql"] {
            let e = load(&spec(bad)).unwrap_err().to_string();
            assert!(e.contains("backup.drill_checks[0]") && e.contains(bad), "{bad}: {e}");
            assert!(
                e.contains("files/app/exports.sql, files/app/README.txt"),
                "{bad}: the hint lists the stored files: {e}"
            );
        }
    }

    #[test]
    fn key_statements_need_sequence_action_and_key_or_a_signed_statement_alone() {
        let e = load("name: a\nversion: '1'\nkey_statements:\n  - sequence: 1\n    action: introduce\n    key_id: 0123456789ABCDEF\n")
            .unwrap_err();
        assert!(e.to_string().contains("key_statements[0]") && e.to_string().contains("needs `key`"), "{e}");
        let e = load("name: a\nversion: '1'\nkey_statements:\n  - statement: s.json\n    sequence: 3\n").unwrap_err();
        assert!(e.to_string().contains("takes no other keys"), "{e}");
        let e = load("name: a\nversion: '1'\nkey_statements:\n  - sequence: 0\n    action: retire\n    key_id: x\n")
            .unwrap_err();
        assert!(e.to_string().contains("key_statements[0].sequence"), "{e}");
        let e = load("name: a\nversion: '1'\nkey_statements:\n  - action: revoke\n    key_id: 0123456789ABCDEF\n")
            .unwrap_err();
        assert!(e.hint.is_some(), "{e}");
        assert!(load("name: a\nversion: '1'\nkey_statements:\n  - sequence: 2\n    action: revoke\n    key_id: 0123456789ABCDEF\n").is_ok());
    }

    #[test]
    fn an_upgrade_policy_with_a_bad_requirement_version_or_bundle_version_is_refused_by_key() {
        let e = load("name: a\nversion: 1.0.0\nupgrade:\n  from: '>>1'\n").unwrap_err();
        assert!(e.to_string().contains("upgrade.from") && e.hint.is_some(), "{e}");
        let e = load("name: a\nversion: 1.0.0\nupgrade:\n  required: ['1.x']\n").unwrap_err();
        assert!(e.to_string().contains("upgrade.required[0]"), "{e}");
        let e = load("name: a\nversion: '1'\nupgrade:\n  from: '>=1.0.0'\n").unwrap_err();
        assert!(e.to_string().contains("version") && e.to_string().contains("semver"), "{e}");
        let ok = load("name: a\nversion: 2.0.0\nupgrade:\n  from: '>=1.0.0, <2.0.0'\n  required: [1.5.0]\n").unwrap();
        let p = ok.spec.upgrade.clone().unwrap().into_policy();
        assert_eq!((p.from.as_deref(), p.required), (Some(">=1.0.0, <2.0.0"), vec!["1.5.0".to_string()]));
    }

    #[test]
    fn bad_file_mode_and_path_like_names_are_rejected_by_key() {
        let e = load(
            "name: a\nversion: '1'\ncomponents:\n  - name: c\n    files:\n      - path: x\n        mode: '4755'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("components[0].files[0].mode"), "{e}");
        let e = load("name: ../a\nversion: '1'\n").unwrap_err();
        assert!(e.to_string().contains(": name:"), "{e}");
    }
}
