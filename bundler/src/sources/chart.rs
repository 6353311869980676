//! Helm charts: a chart directory (packaged here, deterministically) or a packaged
//! `.tgz` (taken as it is), checked so it will install offline.
//!
//! `helm package` is not byte-reproducible (it stores file mtimes), so directories are
//! packaged by this module: entries `<name>/…` sorted by path, regular files and
//! directories only, modes 0644/0755, uid/gid 0, one mtime ([`CHART_MTIME`] in a
//! bundle), and a gzip header with mtime 0 and no file name. The same directory always
//! gives the same bytes.
//!
//! A chart whose `dependencies:` are not vendored under `charts/` would make Helm reach
//! for a repository at install time, which fails behind an air gap (helm#11224), so
//! every dependency must be present there, by chart name, as a directory or a `.tgz`;
//! subcharts are checked the same way, recursively.
//!
//! `.helmignore` support (the patterns `helm create` writes and most charts use):
//! blank lines and `#` comments; shell globs `*`, `?`, `[...]` (`[^...]`, ranges,
//! `\` escapes) as Go's `filepath.Match` does them, where `*` never crosses `/`; a
//! pattern without `/` matches the base name at any depth (`*.bak`, `.git`); a pattern
//! with `/` matches the whole path from the chart root (`ci/values.yaml`, a leading
//! `/` is dropped); a trailing `/` matches directories only (`.git/`), and an ignored
//! directory is skipped whole. Helm's default rule `templates/.?*` applies too.
//! Negation (`!pattern`) and `**` are refused with an error naming the line, rather than
//! packaging something other than Helm would (Helm itself refuses `**`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use airlock_format::digest::sha256_file;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;
use serde::Deserialize;

/// A chart ready to be carried in a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedChart {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// The packaged chart (`.tgz` bytes).
    pub content: Content,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// `name version` of each subchart vendored under `charts/`, sorted.
    pub dependencies: Vec<String>,
}

/// Largest metadata file (Chart.yaml, requirements.yaml) read into memory.
const MAX_YAML_BYTES: u64 = 1 << 20;
/// Largest vendored subchart `.tgz` read into memory to inspect it.
const MAX_SUBCHART_BYTES: u64 = 64 << 20;
/// Subcharts of subcharts of …: deeper than this is a mistake (or a trap).
const MAX_DEPTH: usize = 8;

/// Every entry's modification time in a chart this module packages for a bundle: a
/// fixed epoch (1980-01-01, the reproducible-builds usual; tar tools warn about 1970),
/// not the bundle's creation time. A chart's bytes then depend on its content only, so
/// rebuilding a release at another time (with or without `SOURCE_DATE_EPOCH`) gives
/// the same chart digests: a delta does not carry unchanged charts again, and a full
/// bundle of the same content is the same release.
pub const CHART_MTIME: u64 = 315_532_800;

/// Loads the chart at `path`: a chart directory (packaged with `mtime` as every entry's
/// modification time) or a packaged `.tgz`.
pub fn load_chart(path: &Path, mtime: u64) -> Result<LoadedChart> {
    let meta = fs::metadata(path).at(path)?;
    if meta.is_dir() {
        package_dir(path, mtime)
    } else {
        load_tgz(path)
    }
}

// ---------------------------------------------------------------------------------
// Chart metadata and the offline-dependency check

#[derive(Deserialize)]
struct ChartYaml {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    name: Option<String>,
    version: Option<serde_yaml::Value>,
    #[serde(rename = "appVersion")]
    app_version: Option<serde_yaml::Value>,
    #[serde(default)]
    dependencies: Option<Vec<Dependency>>,
}

#[derive(Deserialize)]
struct Requirements {
    #[serde(default)]
    dependencies: Option<Vec<Dependency>>,
}

#[derive(Deserialize)]
struct Dependency {
    name: Option<String>,
    version: Option<serde_yaml::Value>,
    repository: Option<String>,
}

/// What a chart is and which subcharts it carries.
#[derive(Debug)]
struct ChartMeta {
    name: String,
    version: String,
    app_version: Option<String>,
    subcharts: Vec<ChartMeta>,
}

/// The files of a chart that decide what it is and what it needs, by path inside the
/// chart (no top-level directory): every `Chart.yaml`/`requirements.yaml` and every
/// `charts/*.tgz`.
pub(crate) type Tree = BTreeMap<String, Vec<u8>>;

fn is_meta_file(rel: &str) -> bool {
    let (dir, base) = rel.rsplit_once('/').unwrap_or(("", rel));
    base == "Chart.yaml"
        || base == "requirements.yaml"
        // The dependency vendoring honours a chart's lock (crate::deps).
        || base == "Chart.lock"
        || base == "requirements.lock"
        || ((dir == "charts" || dir.ends_with("/charts")) && is_tgz_name(base))
}

fn is_tgz_name(n: &str) -> bool {
    n.ends_with(".tgz") || n.ends_with(".tar.gz")
}

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads the chart at `prefix` in `tree` and checks, recursively, that everything it
/// depends on is vendored.
fn inspect(tree: &Tree, prefix: &str, label: &str, depth: usize) -> Result<ChartMeta> {
    inspect_with(tree, prefix, label, depth, true)
}

/// [`inspect`]; `check_deps: false` skips the vendored-dependency check (for a chart
/// whose dependencies the bundler is about to vendor).
fn inspect_with(tree: &Tree, prefix: &str, label: &str, depth: usize, check_deps: bool) -> Result<ChartMeta> {
    if depth > MAX_DEPTH {
        return Err(Error::input(label, format!("subcharts are nested more than {MAX_DEPTH} levels deep")));
    }
    let bytes = tree.get(&format!("{prefix}Chart.yaml")).ok_or_else(|| {
        Error::input(label, "has no Chart.yaml").with_hint("point at a chart directory or a packaged chart (.tgz)")
    })?;
    let cy: ChartYaml = serde_yaml::from_slice(bytes).map_err(|e| {
        Error::input(label, format!("Chart.yaml is not valid: {e}")).with_hint("fix it; `helm lint` shows the details")
    })?;
    match cy.api_version.as_deref() {
        Some("v1") | Some("v2") => {}
        None => {
            return Err(
                Error::input(label, "Chart.yaml has no apiVersion").with_hint("set `apiVersion: v2` (Helm 3 charts)")
            )
        }
        Some(v) => {
            return Err(Error::input(label, format!("Chart.yaml has apiVersion `{v}`; only v1 and v2 are known"))
                .with_hint("set `apiVersion: v2` (Helm 3 charts)"))
        }
    }
    let name = cy.name.clone().unwrap_or_default();
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.contains(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        return Err(Error::input(label, format!("Chart.yaml has no valid name (`{name}`)"))
            .with_hint("set `name:` to the chart's name"));
    }
    let version = match &cy.version {
        Some(serde_yaml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(v @ serde_yaml::Value::Number(_)) => {
            return Err(Error::input(
                label,
                format!("Chart.yaml version `{}` is a number, not a string", scalar(v).unwrap_or_default()),
            )
            .with_hint("quote it (version: \"1.0\"); Helm refuses unquoted numeric versions"))
        }
        _ => {
            return Err(
                Error::input(label, "Chart.yaml has no version").with_hint("set `version:` (SemVer 2, e.g. 1.2.3)")
            )
        }
    };
    let label = format!("{label}: chart {name} {version}");
    let app_version = cy.app_version.as_ref().and_then(scalar);

    let mut deps = cy.dependencies.unwrap_or_default();
    if cy.api_version.as_deref() == Some("v1") {
        // Helm 2 charts keep their dependencies in requirements.yaml.
        if let Some(req) = tree.get(&format!("{prefix}requirements.yaml")) {
            let r: Requirements = serde_yaml::from_slice(req)
                .map_err(|e| Error::input(&label, format!("requirements.yaml is not valid: {e}")))?;
            deps.extend(r.dependencies.unwrap_or_default());
        }
    }

    let charts_dir = format!("{prefix}charts/");
    let mut subcharts = Vec::new();
    for (key, bytes) in tree.range(charts_dir.clone()..) {
        let Some(rest) = key.strip_prefix(&charts_dir) else {
            break;
        };
        match rest.split_once('/') {
            Some((sub, "Chart.yaml")) => {
                subcharts.push(inspect(
                    tree,
                    &format!("{charts_dir}{sub}/"),
                    &format!("{label} › charts/{sub}"),
                    depth + 1,
                )?);
            }
            None if is_tgz_name(rest) => {
                let sub_label = format!("{label} › charts/{rest}");
                let (_, sub_tree) = read_tgz_tree(bytes.as_slice(), &sub_label)?;
                subcharts.push(inspect(&sub_tree, "", &sub_label, depth + 1)?);
            }
            _ => {}
        }
    }

    for dep in deps.iter().filter(|_| check_deps) {
        let Some(dep_name) = dep.name.as_deref().filter(|n| !n.is_empty()) else {
            return Err(Error::input(&label, "a dependency in Chart.yaml has no name"));
        };
        if !subcharts.iter().any(|s| s.name == dep_name) {
            let version = dep.version.as_ref().and_then(scalar).unwrap_or_else(|| "any version".into());
            let from = dep.repository.as_deref().map(|r| format!(" from {r}")).unwrap_or_default();
            return Err(Error::input(
                &label,
                format!(
                    "dependency `{dep_name}` ({version}{from}) is not vendored under charts/; Helm would fetch it at install time, which fails offline (helm#11224)"
                ),
            )
            .with_hint("run `helm dependency build <chart>` on a connected machine so charts/ holds the dependency, then build the bundle again"));
        }
    }
    Ok(ChartMeta { name, version, app_version, subcharts })
}

fn finish(meta: ChartMeta, content: Content, size: u64, sha256: Sha256Digest) -> LoadedChart {
    let mut dependencies: Vec<String> = meta.subcharts.iter().map(|s| format!("{} {}", s.name, s.version)).collect();
    dependencies.sort();
    dependencies.dedup();
    LoadedChart {
        name: meta.name,
        version: meta.version,
        app_version: meta.app_version,
        content,
        size,
        sha256,
        dependencies,
    }
}

// ---------------------------------------------------------------------------------
// Packaged charts (.tgz)

fn load_tgz(path: &Path) -> Result<LoadedChart> {
    let label = format!("chart {}", path.display());
    // A chart archive is small: it is read into memory once, and parsed, hashed and
    // written into the bundle from those bytes. An unusually large one is parsed and
    // hashed from the file instead, and read again while the bundle is written.
    if fs::metadata(path).at(path)?.len() > KEEP_CHART_MAX {
        let (_, tree) = read_tgz_tree(fs::File::open(path).at(path)?, &label)?;
        let meta = inspect(&tree, "", &label, 0)?;
        let (sha256, size) = sha256_file(path).at(path)?;
        return Ok(finish(meta, Content::File(path.to_path_buf()), size, sha256));
    }
    let bytes = fs::read(path).at(path)?;
    let (_, tree) = read_tgz_tree(&bytes[..], &label)?;
    let meta = inspect(&tree, "", &label, 0)?;
    let (sha256, size) = (Sha256Digest::of(&bytes), bytes.len() as u64);
    Ok(finish(meta, Content::Bytes(bytes), size, sha256))
}

/// Chart archives up to this size are kept in memory (charts are mostly well under
/// 1 MiB).
const KEEP_CHART_MAX: u64 = 8 << 20;

/// Reads a chart archive: checks every entry's path and type, strips the top-level
/// directory, and keeps the metadata files. Returns the top-level directory name too.
pub(crate) fn read_tgz_tree(r: impl Read, label: &str) -> Result<(String, Tree)> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(r);
    let looks_gzip =
        r.fill_buf().map_err(|e| Error::input(label, format!("cannot be read: {e}")))?.starts_with(&[0x1f, 0x8b]);
    if !looks_gzip {
        return Err(Error::input(label, "is neither a chart directory nor a gzip-compressed chart archive")
            .with_hint("give the chart directory or the .tgz that `helm package` writes"));
    }
    let unreadable = |e: std::io::Error| {
        Error::corrupt(label, format!("is not a readable chart archive: {e}"))
            .with_hint("package the chart again (helm package)")
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(r));
    let mut top: Option<String> = None;
    let mut tree = Tree::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let et = entry.header().entry_type();
        if et.is_pax_global_extensions() {
            continue;
        }
        let unsafe_entry = |cause: &str| {
            Error::unsafe_entry(format!("{label}: entry `{raw}`"), cause.to_string())
                .with_hint("do not use this archive; package the chart again from its source with `helm package`")
        };
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(unsafe_entry("has an absolute path"));
        }
        if raw.split(['/', '\\']).any(|c| c == "..") {
            return Err(unsafe_entry("has a `..` path component"));
        }
        let is_file = et.is_file() || et.is_contiguous();
        if !is_file && !et.is_dir() {
            return Err(unsafe_entry("is not a regular file or directory (links and devices are refused)"));
        }
        let parts: Vec<&str> = raw.split(['/', '\\']).filter(|c| !c.is_empty() && *c != ".").collect();
        let Some((first, rest)) = parts.split_first() else {
            continue;
        };
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => {
                return Err(Error::input(
                    label,
                    format!("holds more than one top-level directory (`{t}` and `{first}`)"),
                )
                .with_hint("a packaged chart has exactly one top-level directory, named after the chart"))
            }
            Some(_) => {}
        }
        let rel = rest.join("/");
        if rel.is_empty() {
            if is_file {
                return Err(Error::input(
                    label,
                    format!("entry `{raw}` is a file outside the chart's top-level directory"),
                ));
            }
            continue;
        }
        if is_file && is_meta_file(&rel) {
            let limit = if is_tgz_name(&rel) { MAX_SUBCHART_BYTES } else { MAX_YAML_BYTES };
            if entry.size() > limit {
                return Err(Error::input(
                    label,
                    format!("{rel} is {} bytes, over the {limit}-byte limit", entry.size()),
                ));
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data).map_err(unreadable)?;
            tree.insert(rel, data);
        }
    }
    let top = top.ok_or_else(|| Error::input(label, "is an empty archive"))?;
    Ok((top, tree))
}

// ---------------------------------------------------------------------------------
// Chart directories

fn package_dir(dir: &Path, mtime: u64) -> Result<LoadedChart> {
    package_dir_with(dir, mtime, true)
}

/// Packages a chart directory as [`load_chart`] does but without requiring its
/// dependencies to be vendored (the bundler vendors them next; see `crate::deps`).
pub fn package_dir_unchecked(dir: &Path, mtime: u64) -> Result<LoadedChart> {
    package_dir_with(dir, mtime, false)
}

fn package_dir_with(dir: &Path, mtime: u64, check_deps: bool) -> Result<LoadedChart> {
    let label = format!("chart {}", dir.display());
    let root = fs::canonicalize(dir).at(dir)?;
    let rules = IgnoreRules::load(&root, &label)?;
    let mut entries = Vec::new();
    let mut ancestors = vec![root.clone()];
    walk(&root, &root, "", &rules, &label, &mut entries, &mut ancestors)?;

    // Read every file once: for the metadata check and for the archive.
    let mut files: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(entries.len());
    let mut tree = Tree::new();
    for (rel, src) in entries {
        match src {
            None => files.push((rel, None)),
            Some(src) => {
                let data = fs::read(&src).at(&src)?;
                if is_meta_file(&rel) {
                    tree.insert(rel.clone(), data.clone());
                }
                files.push((rel, Some(data)));
            }
        }
    }
    let meta = inspect_with(&tree, "", &label, 0, check_deps)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let bytes = pack_chart_tgz(&meta.name, files.iter().map(|(r, d)| (r.as_str(), d.as_deref())), mtime)
        .map_err(|e| Error::io(dir, e))?;
    let sha256 = Sha256Digest::of(&bytes);
    let size = bytes.len() as u64;
    Ok(finish(meta, Content::Bytes(bytes), size, sha256))
}

/// Packs a chart as `helm package` lays it out: one top directory named after the
/// chart, then `files` (relative paths; `None` is a directory) in the order given,
/// root-owned, with a fixed mtime and gzip header so the same chart gives the same bytes.
pub(crate) fn pack_chart_tgz<'a>(
    top: &str,
    files: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    mtime: u64,
) -> std::io::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(size);
        h
    };
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, top, std::io::empty())?;
    for (rel, data) in files {
        let path = format!("{top}/{rel}");
        match data {
            None => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            Some(d) => {
                let mut h = header(tar::EntryType::Regular, 0o644, d.len() as u64);
                tar.append_data(&mut h, &path, d)?;
            }
        }
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// Collects the chart's directories (`None`) and files (their real path), depth first,
/// honouring `.helmignore`. Symlinks are followed, as `helm package` does, but only
/// when they stay inside the chart.
fn walk(
    root: &Path,
    dir: &Path,
    rel: &str,
    rules: &IgnoreRules,
    label: &str,
    out: &mut Vec<(String, Option<PathBuf>)>,
    ancestors: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        names.push(e.at(dir)?.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(
                Error::input(label, format!("{} has a name that is not UTF-8", path.display())).with_hint("rename it")
            );
        };
        let child = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let lmeta = fs::symlink_metadata(&path).at(&path)?;
        let is_link = lmeta.file_type().is_symlink();
        let followed = if is_link { fs::metadata(&path).ok() } else { Some(lmeta) };
        let is_dir = followed.as_ref().is_some_and(|m| m.is_dir());
        if rules.ignored(&child, is_dir) {
            continue;
        }
        let real = if is_link {
            let target = fs::canonicalize(&path).map_err(|e| {
                Error::input(label, format!("symlink {child} points nowhere: {e}"))
                    .with_hint("remove it or add it to .helmignore")
            })?;
            if !target.starts_with(root) {
                return Err(Error::unsafe_entry(
                    format!("{label}: {child}"),
                    format!("is a symlink to {}, outside the chart", target.display()),
                )
                .with_hint("copy the file into the chart (or add the link to .helmignore); a packaged chart must not reach outside itself"));
            }
            target
        } else {
            path.clone()
        };
        let meta = match followed {
            Some(m) => m,
            None => fs::metadata(&real).at(&real)?,
        };
        if is_dir {
            if ancestors.contains(&real) {
                return Err(Error::input(label, format!("{child} is a symlink loop")).with_hint("remove the link"));
            }
            out.push((child.clone(), None));
            ancestors.push(real.clone());
            walk(root, &real, &child, rules, label, out, ancestors)?;
            ancestors.pop();
        } else if meta.is_file() {
            out.push((child, Some(real)));
        } else {
            return Err(Error::input(label, format!("{child} is not a regular file or directory"))
                .with_hint("remove it or add it to .helmignore"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// .helmignore (the subset documented at the top of this module)

struct IgnoreRule {
    pattern: Vec<char>,
    /// Match against the whole path from the chart root, not the base name.
    whole_path: bool,
    dir_only: bool,
}

struct IgnoreRules {
    rules: Vec<IgnoreRule>,
}

impl IgnoreRules {
    fn load(root: &Path, label: &str) -> Result<Self> {
        let path = root.join(".helmignore");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::parse(&text).map_err(|(line, cause)| {
            Error::input(format!("{label}: .helmignore line {line}"), cause)
                .with_hint("rewrite the pattern with the supported subset (globs, dir/, /anchored), or package the chart with helm and give the .tgz")
        })
    }

    /// Parses `.helmignore` text; `Err((line number, cause))` for unsupported lines.
    fn parse(text: &str) -> std::result::Result<Self, (usize, String)> {
        // Helm's default: hidden files directly under templates/.
        let mut rules =
            vec![IgnoreRule { pattern: "templates/.?*".chars().collect(), whole_path: true, dir_only: false }];
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('!') {
                return Err((i + 1, format!("negation (`{line}`) is not supported")));
            }
            if line.contains("**") {
                return Err((i + 1, format!("`**` (`{line}`) is not supported (Helm does not support it either)")));
            }
            let (body, dir_only) = match line.strip_suffix('/') {
                Some(b) => (b, true),
                None => (line, false),
            };
            let (body, anchored) = match body.strip_prefix('/') {
                Some(b) => (b, true),
                None => (body, false),
            };
            if body.is_empty() {
                return Err((i + 1, format!("`{line}` matches nothing")));
            }
            let pattern: Vec<char> = body.chars().collect();
            if !glob_is_valid(&pattern) {
                return Err((i + 1, format!("`{line}` is not a valid glob (unclosed [ or trailing \\)")));
            }
            rules.push(IgnoreRule { whole_path: anchored || body.contains('/'), pattern, dir_only });
        }
        Ok(Self { rules })
    }

    fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        let base = rel.rsplit('/').next().unwrap_or(rel);
        let whole: Vec<char> = rel.chars().collect();
        let base: Vec<char> = base.chars().collect();
        self.rules
            .iter()
            .any(|r| (!r.dir_only || is_dir) && glob_match(&r.pattern, if r.whole_path { &whole } else { &base }))
    }
}

fn glob_is_valid(p: &[char]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return false;
                }
                i += 2;
            }
            '[' => match class_end(p, i) {
                Some(end) => i = end + 1,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Index of the `]` closing the class that starts at `p[start] == '['`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if i < p.len() && p[i] == '^' {
        i += 1;
    }
    let mut first = true;
    while i < p.len() {
        match p[i] {
            ']' if !first => return Some(i),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
    None
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negate, body) = match class.first() {
        Some('^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        let mut lo = body[i];
        if lo == '\\' && i + 1 < body.len() {
            i += 1;
            lo = body[i];
        }
        let mut hi = lo;
        if i + 2 < body.len() && body[i + 1] == '-' {
            hi = body[i + 2];
            if hi == '\\' && i + 3 < body.len() {
                hi = body[i + 3];
                i += 1;
            }
            i += 2;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
        i += 1;
    }
    hit != negate
}

/// Go `filepath.Match` semantics: `*` and `?` never match `/`.
fn glob_match(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            for k in 0..=s.len() {
                if glob_match(rest, &s[k..]) {
                    return true;
                }
                if k < s.len() && s[k] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !s.is_empty() && s[0] != '/' && glob_match(&p[1..], &s[1..]),
        Some('[') => {
            let Some(end) = class_end(p, 0) else {
                return false;
            };
            !s.is_empty() && s[0] != '/' && class_matches(&p[1..end], s[0]) && glob_match(&p[end + 1..], &s[1..])
        }
        Some('\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && glob_match(&p[2..], &s[1..]),
        Some(c) => !s.is_empty() && s[0] == *c && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::ErrorKind;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn chart_dir(root: &Path, dir: &str, name: &str, extra_chart_yaml: &str) -> PathBuf {
        let d = root.join(dir);
        write(
            &d,
            "Chart.yaml",
            &format!("apiVersion: v2\nname: {name}\nversion: 1.2.3\nappVersion: \"4.5\"\n{extra_chart_yaml}"),
        );
        write(&d, "values.yaml", "replicas: 1\n");
        write(&d, "templates/deployment.yaml", "kind: Deployment\n");
        d
    }

    /// (path, mode, uid, gid, mtime, data) of every entry of a .tgz.
    fn entries(tgz: &[u8]) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                    d,
                )
            })
            .collect()
    }

    fn bytes(c: &LoadedChart) -> Vec<u8> {
        match &c.content {
            Content::Bytes(b) => b.clone(),
            Content::File(p) => fs::read(p).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chart_dir_packaging_is_deterministic_and_normalized() {
        let t = tempfile::tempdir().unwrap();
        let d = chart_dir(t.path(), "src-dir", "web", "");
        write(&d, ".helmignore", "# comment\n\n*.bak\nci/\n/notes.txt\ntemplates/skip-*.yaml\n");
        write(&d, "values.yaml.bak", "x");
        write(&d, "ci/test-values.yaml", "x");
        write(&d, "notes.txt", "x");
        write(&d, "templates/notes.txt", "kept: only the root notes.txt is anchored");
        write(&d, "templates/skip-me.yaml", "x");
        write(&d, "templates/.hidden", "x");
        write(&d, "templates/sub/b.yaml", "b");
        write(&d, "files/a-b.txt", "dash sorts before slash");
        let first = load_chart(&d, 1_700_000_000).unwrap();
        // Different on-disk mtimes and modes must not matter.
        std::thread::sleep(std::time::Duration::from_millis(10));
        write(&d, "values.yaml", "replicas: 1\n");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("values.yaml"), fs::Permissions::from_mode(0o600)).unwrap();
        let second = load_chart(&d, 1_700_000_000).unwrap();
        assert_eq!(bytes(&first), bytes(&second));
        assert_eq!(first, second);

        assert_eq!(first.name, "web");
        assert_eq!(first.version, "1.2.3");
        assert_eq!(first.app_version.as_deref(), Some("4.5"));
        assert_eq!(first.size, bytes(&first).len() as u64);
        assert_eq!(first.sha256, Sha256Digest::of(&bytes(&first)));
        let b = bytes(&first);
        // gzip header: mtime 0, no file name flag, OS unknown.
        assert_eq!(&b[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(b[3] & 0x08, 0, "FNAME flag set");
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(b[9], 255);
        let es = entries(&b);
        let names: Vec<&str> = es.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "web",
                "web/.helmignore",
                "web/Chart.yaml",
                "web/files",
                "web/files/a-b.txt",
                "web/templates",
                "web/templates/deployment.yaml",
                "web/templates/notes.txt",
                "web/templates/sub",
                "web/templates/sub/b.yaml",
                "web/values.yaml",
            ]
        );
        for (name, mode, uid, gid, mtime, _) in &es {
            let want = if names.iter().any(|n| n.starts_with(&format!("{name}/"))) { 0o755 } else { 0o644 };
            assert_eq!((*mode, *uid, *gid, *mtime), (want, 0, 0, 1_700_000_000), "{name}");
        }
        // A different mtime gives different bytes (it is really used).
        assert_ne!(bytes(&load_chart(&d, 1).unwrap()), b);
    }

    #[test]
    fn packaged_dir_reads_back_as_tgz() {
        let t = tempfile::tempdir().unwrap();
        let d = chart_dir(t.path(), "web", "web", "");
        let packaged = load_chart(&d, 0).unwrap();
        let tgz = t.path().join("web-1.2.3.tgz");
        fs::write(&tgz, bytes(&packaged)).unwrap();
        let read = load_chart(&tgz, 0).unwrap();
        assert_eq!(read.content, Content::Bytes(fs::read(&tgz).unwrap()));
        assert_eq!((read.name.as_str(), read.version.as_str()), ("web", "1.2.3"));
        assert_eq!(read.sha256, packaged.sha256);
        assert_eq!(read.size, packaged.size);
    }

    #[test]
    fn unvendored_dependency_is_rejected_with_the_helm_hint() {
        let t = tempfile::tempdir().unwrap();
        let deps =
            "dependencies:\n  - name: redis\n    version: 17.3.x\n    repository: https://charts.bitnami.com/bitnami\n";
        let d = chart_dir(t.path(), "app", "app", deps);
        let e = load_chart(&d, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.subject.contains("app") && e.cause.contains("`redis`") && e.cause.contains("not vendored"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("helm dependency build"), "{e}");

        // Vendored as a directory: accepted, and listed.
        chart_dir(&d, "charts/redis", "redis", "");
        let c = load_chart(&d, 0).unwrap();
        assert_eq!(c.dependencies, vec!["redis 1.2.3"]);
    }

    #[test]
    fn vendored_tgz_dependency_is_accepted_and_checked_recursively() {
        let t = tempfile::tempdir().unwrap();
        let sub = chart_dir(t.path(), "redis-src", "redis", "");
        let d = chart_dir(t.path(), "app", "app", "dependencies:\n  - name: redis\n    version: 1.x\n");
        fs::create_dir_all(d.join("charts")).unwrap();
        fs::write(d.join("charts/redis-1.2.3.tgz"), bytes(&load_chart(&sub, 0).unwrap())).unwrap();
        let c = load_chart(&d, 0).unwrap();
        assert_eq!(c.dependencies, vec!["redis 1.2.3"]);

        // A vendored subchart whose own dependency is missing.
        let incomplete = tgz_of(&[(
            "redis/Chart.yaml",
            b"apiVersion: v2\nname: redis\nversion: 1.2.3\ndependencies:\n  - name: common\n".as_slice(),
        )]);
        fs::write(d.join("charts/redis-1.2.3.tgz"), incomplete).unwrap();
        let e = load_chart(&d, 0).unwrap_err();
        assert!(e.cause.contains("`common`") && e.subject.contains("charts/redis-1.2.3.tgz"), "{e}");
    }

    #[test]
    fn v1_chart_reads_requirements_yaml() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("old");
        write(&d, "Chart.yaml", "apiVersion: v1\nname: old\nversion: 0.1.0\n");
        write(&d, "requirements.yaml", "dependencies:\n- name: mysql\n  version: 1.0.0\n");
        let e = load_chart(&d, 0).unwrap_err();
        assert!(e.cause.contains("`mysql`"), "{e}");
    }

    #[test]
    fn bad_chart_yaml_is_an_input_error() {
        let t = tempfile::tempdir().unwrap();
        for (i, (yaml, want)) in [
            ("apiVersion: v2\nversion: 1.0.0\n", "name"),
            ("apiVersion: v2\nname: x\n", "no version"),
            ("apiVersion: v2\nname: x\nversion: 1.0\n", "quote"),
            ("apiVersion: v3\nname: x\nversion: 1.0.0\n", "apiVersion"),
            ("name: x\nversion: 1.0.0\n", "apiVersion"),
            ("apiVersion: v2\nname: [x\n", "not valid"),
        ]
        .iter()
        .enumerate()
        {
            let d = t.path().join(format!("c{i}"));
            write(&d, "Chart.yaml", yaml);
            let e = load_chart(&d, 0).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Input, "{yaml}");
            assert!(format!("{e}").contains(want), "{yaml}: {e}");
        }
        let e = load_chart(&t.path().join("c-missing"), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        fs::create_dir_all(t.path().join("empty")).unwrap();
        assert!(load_chart(&t.path().join("empty"), 0).unwrap_err().cause.contains("no Chart.yaml"));
    }

    #[test]
    fn symlinks_inside_are_followed_and_escaping_ones_rejected() {
        let t = tempfile::tempdir().unwrap();
        let d = chart_dir(t.path(), "app", "app", "");
        std::os::unix::fs::symlink("values.yaml", d.join("values-link.yaml")).unwrap();
        let c = load_chart(&d, 0).unwrap();
        let es = entries(&bytes(&c));
        let link = es.iter().find(|e| e.0 == "app/values-link.yaml").unwrap();
        assert_eq!(link.5, b"replicas: 1\n");

        write(t.path(), "secret.txt", "outside");
        std::os::unix::fs::symlink("../../secret.txt", d.join("templates/escape.txt")).unwrap();
        let e = load_chart(&d, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsafe, "{e}");
        assert!(e.subject.contains("templates/escape.txt") && e.cause.contains("outside the chart"), "{e}");

        // Ignored links are never followed.
        write(&d, ".helmignore", "escape.txt\n");
        assert!(load_chart(&d, 0).is_ok());

        std::os::unix::fs::symlink("..", d.join("templates/loop")).unwrap();
        let e = load_chart(&d, 0).unwrap_err();
        assert!(e.cause.contains("loop"), "{e}");
    }

    /// Builds a .tgz with raw names (so `..` and absolute paths can be written).
    fn tgz_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        tgz_with(files, &[])
    }

    fn tgz_with(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        for (name, target) in symlinks {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn chart_tgz_with_unsafe_entries_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let chart = b"apiVersion: v2\nname: x\nversion: 1.0.0\n".as_slice();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", tgz_of(&[("x/Chart.yaml", chart), ("x/../../etc/cron.d/evil", b"x")])),
            ("absolute", tgz_of(&[("x/Chart.yaml", chart), ("/etc/passwd", b"x")])),
            ("symlink", tgz_with(&[("x/Chart.yaml", chart)], &[("x/templates/link", "/etc/shadow")])),
        ];
        for (what, data) in cases {
            let p = t.path().join(format!("{what}.tgz"));
            fs::write(&p, data).unwrap();
            let e = load_chart(&p, 0).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsafe, "{what}: {e}");
            assert!(e.subject.contains(&format!("{what}.tgz")), "{what}: {e}");
        }
        let p = t.path().join("two-tops.tgz");
        fs::write(&p, tgz_of(&[("x/Chart.yaml", chart), ("y/values.yaml", b"x")])).unwrap();
        assert_eq!(load_chart(&p, 0).unwrap_err().kind, ErrorKind::Input);
        let p = t.path().join("plain.tar");
        fs::write(&p, b"not gzip at all").unwrap();
        assert!(load_chart(&p, 0).unwrap_err().cause.contains("gzip"));
    }

    #[test]
    fn chart_tgz_dependencies_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let parent =
            b"apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: db\n  version: 2.0.0\n".as_slice();
        let p = t.path().join("app.tgz");
        fs::write(&p, tgz_of(&[("app/Chart.yaml", parent)])).unwrap();
        let e = load_chart(&p, 0).unwrap_err();
        assert!(e.cause.contains("`db`"), "{e}");
        let sub = tgz_of(&[("db/Chart.yaml", b"apiVersion: v2\nname: db\nversion: 2.0.0\n".as_slice())]);
        fs::write(&p, tgz_of(&[("app/Chart.yaml", parent), ("app/charts/db-2.0.0.tgz", &sub)])).unwrap();
        let c = load_chart(&p, 0).unwrap();
        assert_eq!(c.dependencies, vec!["db 2.0.0"]);
        fs::write(
            &p,
            tgz_of(&[
                ("app/Chart.yaml", parent),
                ("app/charts/db/Chart.yaml", b"apiVersion: v2\nname: db\nversion: 2.0.1\n"),
            ]),
        )
        .unwrap();
        assert_eq!(load_chart(&p, 0).unwrap().dependencies, vec!["db 2.0.1"]);
    }

    #[test]
    fn helmignore_subset() {
        let r = IgnoreRules::parse("# c\n*.swp\n.git/\n/top.txt\nci/*.yaml\nfile[0-9].txt\nx?z\n\\#literal\n").unwrap();
        assert!(r.ignored("a.swp", false));
        assert!(r.ignored("deep/dir/a.swp", false));
        assert!(r.ignored(".git", true));
        assert!(!r.ignored(".git", false), "dir-only pattern must not match a file");
        assert!(r.ignored("sub/.git", true));
        assert!(r.ignored("top.txt", false));
        assert!(!r.ignored("sub/top.txt", false));
        assert!(r.ignored("ci/a.yaml", false));
        assert!(!r.ignored("ci/deep/a.yaml", false), "* does not cross /");
        assert!(r.ignored("file7.txt", false));
        assert!(!r.ignored("filex.txt", false));
        assert!(r.ignored("xyz", false));
        assert!(r.ignored("#literal", false));
        assert!(r.ignored("templates/.hidden", false), "helm default rule");
        assert!(!r.ignored("templates/visible.yaml", false));
        assert!(!r.ignored("Chart.yaml", false));
        assert!(IgnoreRules::parse("[^a]b\n").unwrap().ignored("xb", false));
        assert!(!IgnoreRules::parse("[^a]b\n").unwrap().ignored("ab", false));

        assert_eq!(IgnoreRules::parse("ok\n!keep.txt\n").err().unwrap().0, 2);
        assert_eq!(IgnoreRules::parse("**/x\n").err().unwrap().0, 1);
        assert_eq!(IgnoreRules::parse("a[b\n").err().unwrap().0, 1);
        let t = tempfile::tempdir().unwrap();
        let d = chart_dir(t.path(), "app", "app", "");
        write(&d, ".helmignore", "!values.yaml\n");
        let e = load_chart(&d, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.subject.contains(".helmignore line 1") && e.cause.contains("negation"), "{e}");
    }
}
