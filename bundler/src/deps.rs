//! Chart dependencies vendored at build time (helm#11224), as `helm dependency build`
//! would vendor them.
//!
//! A chart whose `Chart.yaml` `dependencies:` are not under `charts/` would make Helm
//! reach for their repositories at install time, which fails behind an air gap. Here
//! each missing dependency is fetched from its `repository:` — a Helm HTTP repository
//! (`index.yaml`), an OCI registry (`oci://`, as `helm push` stores charts) or a
//! `file://` path relative to the chart —, its own missing dependencies vendored the
//! same way, recursively, and the packaged dependency added to the parent as
//! `charts/<name>-<version>.tgz`. The parent is then packaged again (deterministically:
//! sorted entries, one mtime, gzip header without time or name), so `helm template`
//! renders it with no repository configured.
//!
//! Which version: a chart's `Chart.lock` (checked first against its `digest`, see
//! [`crate::chart_lock`]) names the exact version its authors locked, at every level
//! of the tree. Without one, a range resolves to the highest matching version in the
//! repository's index or, for `oci://`, in the registry's tag list. Every fetched
//! dependency is pinned by digest in `bundle.lock`, and later builds take the locked
//! version and digest.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::report::Reporter;
use airlock_format::Sha256Digest;
use serde::Deserialize;

use crate::chart_lock::{self, scalar, ChartLock, Dependency};
use crate::lock::{Lock, LockMode, LockedChart};
use crate::registry::charts::{fetch_chart, ChartRequest};
use crate::registry::client::{Client, Repo};
use crate::registry::{Cache, PullOptions};
use crate::sources::chart::{package_dir_unchecked, read_tgz_tree};

const MAX_DEPTH: usize = 8;
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Where dependencies come from and how they are pinned.
pub struct DepContext<'a> {
    pub options: PullOptions,
    pub old_lock: &'a Lock,
    pub mode: LockMode,
    pub mtime: u64,
    pub reporter: &'a dyn Reporter,
    client: Option<Client>,
    cache: Option<Cache>,
    /// Dependencies fetched from repositories during this build.
    pub fetched: Vec<LockedChart>,
}

impl<'a> DepContext<'a> {
    pub fn new(
        options: PullOptions,
        old_lock: &'a Lock,
        mode: LockMode,
        mtime: u64,
        reporter: &'a dyn Reporter,
    ) -> Self {
        Self { options, old_lock, mode, mtime, reporter, client: None, cache: None, fetched: Vec::new() }
    }

    fn net(&mut self) -> Result<(&Client, &Cache)> {
        if self.cache.is_none() {
            self.cache = Some(Cache::open(&self.options.cache_dir)?);
        }
        if self.client.is_none() {
            self.client = Some(Client::new(self.options.client.clone()));
        }
        Ok((self.client.as_ref().expect("set above"), self.cache.as_ref().expect("set above")))
    }
}

#[derive(Deserialize)]
struct ChartYaml {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    dependencies: Option<Vec<Dependency>>,
}

#[derive(Deserialize)]
struct Requirements {
    #[serde(default)]
    dependencies: Option<Vec<Dependency>>,
}

/// The chart at `path` (directory or `.tgz`) with every dependency vendored, as `.tgz`
/// bytes; `None` when nothing was missing (the chart is used as it is).
pub fn vendor_chart(path: &Path, ctx: &mut DepContext<'_>) -> Result<Option<Vec<u8>>> {
    let label = format!("chart {}", path.display());
    let (bytes, base_dir) = if path.is_dir() {
        let c = package_dir_unchecked(path, ctx.mtime)?;
        let mut v = Vec::new();
        c.content.open()?.read_to_end(&mut v).at(path)?;
        (v, path.to_path_buf())
    } else {
        (std::fs::read(path).at(path)?, path.parent().map(Path::to_path_buf).unwrap_or_default())
    };
    vendor_tgz(bytes, &base_dir, &label, ctx, 0)
}

/// What a dependency asks for: a range from `Chart.yaml`, or the exact version its
/// chart's `Chart.lock` pins.
enum Wanted {
    Range(String),
    Locked(String),
}

/// Vendors the missing dependencies of the packaged chart `tgz`; `base_dir` is where
/// `file://` paths start.
fn vendor_tgz(
    tgz: Vec<u8>,
    base_dir: &Path,
    label: &str,
    ctx: &mut DepContext<'_>,
    depth: usize,
) -> Result<Option<Vec<u8>>> {
    if depth > MAX_DEPTH {
        return Err(Error::input(label, format!("dependencies are nested more than {MAX_DEPTH} levels deep"))
            .with_hint("check for a dependency cycle between the charts"));
    }
    let (top, tree) = read_tgz_tree(tgz.as_slice(), label)?;
    let cy: ChartYaml = serde_yaml::from_slice(tree.get("Chart.yaml").map(Vec::as_slice).unwrap_or_default())
        .map_err(|e| Error::input(label, format!("Chart.yaml is not valid: {e}")))?;
    let api_v1 = cy.api_version.as_deref() == Some("v1");
    let mut deps = cy.dependencies.unwrap_or_default();
    if api_v1 {
        if let Some(r) = tree.get("requirements.yaml") {
            let r: Requirements = serde_yaml::from_slice(r)
                .map_err(|e| Error::input(label, format!("requirements.yaml is not valid: {e}")))?;
            deps.extend(r.dependencies.unwrap_or_default());
        }
    }
    let label = format!("{label} ({})", cy.name.unwrap_or_default());
    // Names of the subcharts already vendored (directories or archives under charts/).
    let mut present = Vec::new();
    for (k, v) in &tree {
        let Some(rest) = k.strip_prefix("charts/") else { continue };
        match rest.split_once('/') {
            Some((_, "Chart.yaml")) => {
                if let Ok(c) = serde_yaml::from_slice::<ChartYaml>(v) {
                    present.extend(c.name);
                }
            }
            None if rest.ends_with(".tgz") || rest.ends_with(".tar.gz") => {
                let (_, t) = read_tgz_tree(v.as_slice(), &format!("{label} › charts/{rest}"))?;
                if let Some(c) = t.get("Chart.yaml").and_then(|b| serde_yaml::from_slice::<ChartYaml>(b).ok()) {
                    present.extend(c.name);
                }
            }
            _ => {}
        }
    }
    let mut missing: Vec<(usize, &Dependency)> = Vec::new();
    for (i, dep) in deps.iter().enumerate() {
        let name = dep.name();
        if name.is_empty() {
            return Err(Error::input(&label, "a dependency in Chart.yaml has no name"));
        }
        // The same chart twice (under two aliases) is vendored once.
        if !present.contains(&name) && !missing.iter().any(|(_, d)| d.name() == name) {
            missing.push((i, dep));
        }
    }
    if missing.is_empty() {
        return Ok(None);
    }
    // The lock counts only when something is to be vendored, as for `helm dependency
    // build`: a chart that ships its charts/ renders whatever its lock says.
    let lock = chart_lock(&tree, &deps, api_v1, &label)?;
    let mut added: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, dep) in missing {
        let name = dep.name();
        let range = dep.version();
        let repo = dep.repository();
        let (wanted, what) = match &lock {
            Some((file, lock)) => {
                // helm writes the lock entry at the dependency's position.
                let entry = lock
                    .dependencies
                    .get(i)
                    .filter(|l| l.name() == name && l.repository() == repo)
                    .or_else(|| lock.dependencies.iter().find(|l| l.name() == name && l.repository() == repo))
                    .ok_or_else(|| {
                        Error::input(&label, format!("{file} has no entry for dependency {name} from `{repo}`"))
                            .with_hint("run `helm dependency update` on the chart and keep the Chart.lock it writes")
                    })?;
                let v = entry.version();
                (Wanted::Locked(v.clone()), format!("{label}: dependency {name} {v} ({file}) from `{repo}`"))
            }
            None => (Wanted::Range(range.clone()), format!("{label}: dependency {name} {range} from `{repo}`")),
        };
        let (dep_tgz, dep_base, version) = fetch_dependency(&name, wanted, &repo, base_dir, &what, ctx)?;
        let dep_tgz = match vendor_tgz(dep_tgz.clone(), &dep_base, &what, ctx, depth + 1)? {
            Some(v) => v,
            None => dep_tgz,
        };
        added.push((format!("{name}-{version}.tgz"), dep_tgz));
    }
    Ok(Some(repack(&tgz, &top, &added, ctx.mtime, &label)?))
}

/// The chart's lock (`Chart.lock`, or `requirements.lock` of an `apiVersion: v1`
/// chart) with its file name, refused when its digest is not that of `deps`.
fn chart_lock(
    tree: &BTreeMap<String, Vec<u8>>,
    deps: &[Dependency],
    api_v1: bool,
    label: &str,
) -> Result<Option<(&'static str, ChartLock)>> {
    let Some((file, bytes)) = ["Chart.lock", "requirements.lock"].into_iter().find_map(|f| tree.get(f).map(|b| (f, b)))
    else {
        return Ok(None);
    };
    let lock: ChartLock = serde_yaml::from_slice(bytes).map_err(|e| {
        Error::input(label, format!("{file} is not valid: {e}"))
            .with_hint("run `helm dependency update` on the chart to write it again")
    })?;
    // helm hashes a repository alias (`@name`, `alias:name`) as the URL the vendor's
    // own `helm repo add` gave it; without that configuration the digest cannot be
    // reproduced, and "out of sync" would be a wrong diagnosis.
    if let Some(d) = deps.iter().find(|d| d.repository().starts_with('@') || d.repository().starts_with("alias:")) {
        return Err(Error::input(
            label,
            format!(
                "dependency {} names the repository alias `{}`, which only a local helm repository configuration resolves, so {file} cannot be checked",
                d.name(),
                d.repository()
            ),
        )
        .with_hint("write the repository's URL (https://… or oci://…) in `repository:`, then run `helm dependency update` on the chart"));
    }
    if !chart_lock::lock_matches(deps, &lock, api_v1) {
        let source = if api_v1 { "requirements.yaml" } else { "Chart.yaml" };
        return Err(Error::input(
            label,
            format!(
                "{file} is out of sync with the dependencies in {source}: it says {}, they give {}",
                lock.digest,
                chart_lock::hash_req(deps, &lock.dependencies)
            ),
        )
        .with_hint(format!(
            "the dependencies changed after the lock was written; run `helm dependency update` on the chart and keep the new {file} (`helm dependency build` refuses this lock too)"
        )));
    }
    Ok(Some((file, lock)))
}

/// The packaged dependency, the directory its own `file://` paths start from, and the
/// version chosen.
fn fetch_dependency(
    name: &str,
    wanted: Wanted,
    repo: &str,
    base_dir: &Path,
    what: &str,
    ctx: &mut DepContext<'_>,
) -> Result<(Vec<u8>, PathBuf, String)> {
    if let Some(rel) = repo.strip_prefix("file://") {
        let dir = base_dir.join(rel);
        let c = if dir.is_dir() {
            package_dir_unchecked(&dir, ctx.mtime).map_err(|e| e.within(what))?
        } else {
            return Err(Error::input(what, format!("`{}` is not a chart directory", dir.display()))
                .with_hint("file:// paths are relative to the chart that names them"));
        };
        if let Wanted::Locked(v) = &wanted {
            if c.version != *v {
                return Err(Error::input(
                    what,
                    format!("the lock pins version {v}, but `{}` is version {}", dir.display(), c.version),
                )
                .with_hint("run `helm dependency update` on the chart and keep the Chart.lock it writes"));
            }
        }
        let mut v = Vec::new();
        c.content.open()?.read_to_end(&mut v).at(&dir)?;
        return Ok((v, dir, c.version));
    }
    if !(repo.starts_with("http://") || repo.starts_with("https://") || repo.starts_with("oci://")) {
        return Err(Error::input(what, "has no repository the bundler can fetch from").with_hint(
            "give `repository:` as https://…, oci://… or file://…, or vendor the chart under charts/ with `helm dependency build`",
        ));
    }
    let (version, pinned) = match wanted {
        // The chart's own lock names the version; bundle.lock pins its bytes.
        Wanted::Locked(version) => {
            let locked = ctx
                .old_lock
                .charts
                .iter()
                .find(|c| c.repo == repo && c.name == name && c.version == version)
                .map(|c| c.digest);
            match (ctx.mode, locked) {
                (LockMode::Locked, None) => {
                    return Err(Error::input(what, "is not pinned in bundle.lock, and --locked forbids fetching it")
                        .with_hint("run once without --locked to pin it, and commit the lock"))
                }
                (LockMode::Update, _) => (version, None),
                (_, pin) => (version, pin),
            }
        }
        Wanted::Range(range) => {
            let req = semver_req(&range).map_err(|why| {
                Error::input(what, format!("version `{range}` is not a version or range: {why}"))
                    .with_hint("use a SemVer version or range (1.2.3, ~1.2, ^1.0.0, >=1.0.0 <2.0.0, 1.x)")
            })?;
            // bundle.lock first: a locked version that still satisfies the range is kept.
            let locked = ctx
                .old_lock
                .charts
                .iter()
                .filter(|c| c.repo == repo && c.name == name)
                .filter(|c| {
                    semver::Version::parse(c.version.trim_start_matches('v'))
                        .is_ok_and(|v| req.iter().any(|r| r.matches(&v)))
                })
                .max_by_key(|c| semver::Version::parse(c.version.trim_start_matches('v')).ok())
                .cloned();
            match (ctx.mode, locked) {
                (LockMode::Use | LockMode::Locked, Some(l)) => (l.version.clone(), Some(l.digest)),
                (LockMode::Locked, None) => {
                    return Err(Error::input(what, "is not pinned in bundle.lock, and --locked forbids resolving it")
                        .with_hint("run once without --locked to pin it, and commit the lock"))
                }
                _ => (resolve_version(name, &req, &range, repo, what, ctx)?, None),
            }
        }
    };
    let reporter = ctx.reporter;
    let (client, cache) = ctx.net()?;
    let r = ChartRequest { repo: repo.to_string(), name: name.to_string(), version: version.clone(), pinned };
    let (path, digest) = fetch_chart(client, cache, &r, reporter).map_err(|e| e.within(what))?;
    let bytes = std::fs::read(&path).at(&path)?;
    if Sha256Digest::of(&bytes) != digest {
        return Err(Error::corrupt(path.display().to_string(), format!("the cached chart is not {digest}"))
            .with_hint("remove it from the cache; the next build downloads it again"));
    }
    ctx.fetched.push(LockedChart { repo: repo.to_string(), name: name.to_string(), version: version.clone(), digest });
    Ok((bytes, path.parent().map(Path::to_path_buf).unwrap_or_default(), version))
}

/// Helm's (Masterminds) constraint syntax as `semver` requirements, one per `||`
/// alternative: comparators separated by spaces or commas; a bare version means
/// exactly that version (not Cargo's caret); `x`/`*` wildcards.
fn semver_req(range: &str) -> std::result::Result<Vec<semver::VersionReq>, String> {
    let range = range.trim();
    if range.is_empty() {
        return Ok(vec![semver::VersionReq::STAR]);
    }
    let mut out = Vec::new();
    for alt in range.split("||") {
        let mut parts = Vec::new();
        let mut pending_op = String::new();
        for tok in alt.split([' ', ',']).filter(|t| !t.is_empty()) {
            // `>= 1.0` is one comparator written with a space.
            if tok.chars().all(|c| "<>=~^!".contains(c)) {
                pending_op = tok.to_string();
                continue;
            }
            let tok = format!("{pending_op}{tok}");
            pending_op.clear();
            let tok =
                tok.replacen('v', "", usize::from(tok.trim_start_matches(['<', '>', '=', '~', '^']).starts_with('v')));
            let bare = tok.starts_with(|c: char| c.is_ascii_digit());
            let wildcard = tok.contains(['x', 'X', '*']);
            parts.push(if bare && !wildcard { format!("={tok}") } else { tok });
        }
        let text = parts.join(", ");
        out.push(semver::VersionReq::parse(&text).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The highest version in the repository that satisfies the range: from a Helm
/// repository's `index.yaml`, or from an OCI registry's tag list, as helm resolves it.
fn resolve_version(
    name: &str,
    req: &[semver::VersionReq],
    range: &str,
    repo: &str,
    what: &str,
    ctx: &mut DepContext<'_>,
) -> Result<String> {
    if let Some(location) = repo.strip_prefix("oci://") {
        // An exact version is one tag; no need to list them (helm does the same).
        if semver::Version::parse(range.trim()).is_ok() {
            return Ok(range.trim().to_string());
        }
        let (registry, path) = location.split_once('/').ok_or_else(|| {
            Error::input(what, format!("`{repo}` has no repository path")).with_hint("write it as oci://HOST/PATH")
        })?;
        let r = Repo { registry: registry.to_string(), repository: format!("{}/{name}", path.trim_end_matches('/')) };
        let (client, _) = ctx.net()?;
        let tags = client.tags(&r, what)?;
        // helm reads tags as strict SemVer with `_` for `+` (OCI tags cannot hold `+`).
        let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
        return highest_matching(&versions, req, range).ok_or_else(|| {
            let mut shown: Vec<&str> = tags.iter().map(String::as_str).take(20).collect();
            shown.sort_unstable();
            Error::input(what, format!("{r} has no tag of {name} matching `{range}`; it has: {}", shown.join(", ")))
                .with_hint("check the dependency's version range in Chart.yaml, or push the chart with `helm push`")
        });
    }
    let (client, _) = ctx.net()?;
    let index_url = format!("{}/index.yaml", repo.trim_end_matches('/'));
    let bytes = client.get_url(&index_url, MAX_INDEX_BYTES, what)?;
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        entries: BTreeMap<String, Vec<Entry>>,
    }
    #[derive(Deserialize)]
    struct Entry {
        version: Option<serde_yaml::Value>,
    }
    let index: Index = serde_yaml::from_slice(&bytes).map_err(|e| {
        Error::input(what, format!("{index_url} is not a Helm repository index: {e}"))
            .with_hint("check the repository URL; `helm repo index DIR` writes a valid index.yaml")
    })?;
    let versions: Vec<String> =
        index.entries.get(name).into_iter().flatten().filter_map(|e| e.version.as_ref().map(scalar)).collect();
    let lenient: Vec<String> = versions.iter().map(|v| v.trim_start_matches('v').to_string()).collect();
    match highest_matching(&lenient, req, range) {
        // The index's own spelling (a leading `v` stays, as the chart's file is named).
        Some(best) => Ok(versions[lenient.iter().position(|v| *v == best).expect("chosen from the list")].clone()),
        None => Err(Error::input(
            what,
            format!("{index_url} has no version of {name} matching `{range}`; it has: {}", versions.join(", ")),
        )
        .with_hint("check the dependency's version range in Chart.yaml")),
    }
}

/// The highest of `versions` (SemVer text; others are skipped) that satisfies `req`,
/// prereleases only when the range names one, as helm picks.
fn highest_matching(versions: &[String], req: &[semver::VersionReq], range: &str) -> Option<String> {
    versions
        .iter()
        .filter_map(|s| semver::Version::parse(s).ok().map(|v| (v, s)))
        .filter(|(v, _)| v.pre.is_empty() || range.contains('-'))
        .filter(|(v, _)| req.iter().any(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, s)| s.clone())
}

/// The chart `tgz` again, with `added` files under `charts/`, packaged
/// deterministically (entries sorted, uid/gid 0, `mtime`, modes 0644/0755).
fn repack(tgz: &[u8], top: &str, added: &[(String, Vec<u8>)], mtime: u64, label: &str) -> Result<Vec<u8>> {
    let unreadable = |e: std::io::Error| Error::corrupt(label, format!("is not a readable chart archive: {e}"));
    let mut files: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    // read_tgz_tree already refused unsafe entries in these same bytes.
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let et = entry.header().entry_type();
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel: Vec<&str> = raw.split('/').filter(|c| !c.is_empty() && *c != ".").skip(1).collect();
        if rel.is_empty() {
            continue;
        }
        let rel = rel.join("/");
        if et.is_dir() {
            files.insert(rel, None);
        } else if et.is_file() || et.is_contiguous() {
            let mut v = Vec::new();
            entry.read_to_end(&mut v).map_err(unreadable)?;
            files.insert(rel, Some(v));
        }
    }
    files.entry("charts".into()).or_insert(None);
    for (n, b) in added {
        files.insert(format!("charts/{n}"), Some(b.clone()));
    }
    crate::sources::chart::pack_chart_tgz(top, files.iter().map(|(r, d)| (r.as_str(), d.as_deref())), mtime)
        .map_err(|e| Error::new(airlock_format::error::ErrorKind::Io, label, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, v: &str) -> bool {
        let v = semver::Version::parse(v).unwrap();
        semver_req(range).unwrap().iter().any(|r| r.matches(&v))
    }

    fn tree(chart_yaml: &str, lock: Option<&str>) -> BTreeMap<String, Vec<u8>> {
        let mut t = BTreeMap::new();
        t.insert("Chart.yaml".to_string(), chart_yaml.as_bytes().to_vec());
        if let Some(l) = lock {
            t.insert("Chart.lock".to_string(), l.as_bytes().to_vec());
        }
        t
    }

    fn deps_of(chart_yaml: &str) -> Vec<Dependency> {
        serde_yaml::from_str::<ChartYaml>(chart_yaml).unwrap().dependencies.unwrap_or_default()
    }

    #[test]
    fn a_lock_over_a_repository_alias_is_refused_as_uncheckable_not_as_out_of_sync() {
        let chart = "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: db\n    version: 1.x\n    repository: \"@bitnami\"\n";
        let lock = "dependencies:\n- name: db\n  repository: https://charts.example.com\n  version: 1.2.0\ndigest: sha256:00\n";
        let e = chart_lock(&tree(chart, Some(lock)), &deps_of(chart), false, "chart app").unwrap_err();
        assert!(e.cause.contains("repository alias `@bitnami`") && !e.cause.contains("out of sync"), "{e}");
        assert!(e.hint.unwrap().contains("URL"));
    }

    #[test]
    fn a_malformed_lock_is_named_and_no_lock_means_ranges() {
        let chart = "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: db\n    version: 1.x\n    repository: oci://r.example/charts\n";
        assert!(chart_lock(&tree(chart, None), &deps_of(chart), false, "chart app").unwrap().is_none());
        let e = chart_lock(&tree(chart, Some("dependencies: {")), &deps_of(chart), false, "chart app").unwrap_err();
        assert!(e.cause.starts_with("Chart.lock is not valid"), "{e}");
    }

    #[test]
    fn helm_constraints_resolve_like_helm() {
        assert!(ok("1.2.3", "1.2.3") && !ok("1.2.3", "1.2.4"), "a bare version is exact");
        assert!(ok("1.x", "1.9.0") && !ok("1.x", "2.0.0"));
        assert!(ok("~1.2", "1.2.9") && !ok("~1.2", "1.3.0"));
        assert!(ok(">= 1.0.0 < 2.0.0", "1.5.0") && !ok(">=1.0.0, <2.0.0", "2.0.0"));
        assert!(ok("^1.0.0 || ^3.0.0", "3.1.0") && !ok("^1.0.0 || ^3.0.0", "2.0.0"));
        assert!(ok("", "0.0.1") && ok("*", "9.9.9"));
        assert!(ok("v1.2.3", "1.2.3"));
    }
}
