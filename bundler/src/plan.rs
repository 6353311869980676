//! The plan of a bundle, as data: the manifest to sign and where each entry's bytes
//! come from, built from the spec before anything is written.
//!
//! Every source is read once, in this order: the spec's registry images and
//! repository charts are fetched ([`crate::fetch`]); every chart is loaded, with its
//! missing dependencies vendored ([`crate::deps`]); charts marked `discover_images`
//! are rendered from those same bytes ([`crate::discover`]) and the images found, not
//! listed already, are pulled. Then one small step per kind lays out the entries:
//! images (loaded without hashing their layers), charts, files, release artifacts
//! (hashed), profiles, the monitoring content, the installer, the OCI layout, the lock and the SBOM.
//!
//! [`crate::statements`] and [`crate::delta`] transform a finished plan;
//! [`crate::create`] signs and writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{
    blob_path, Chart, Component, Distribution, DistributionArtifact, Entry, FileArtifact, Image, Installer, Manifest,
    MonitoringContent, Profile, FORMAT_V1, OCI_DIR,
};
use airlock_format::monitoring::{DASHBOARDS_DIR, RULES_DIR};
use airlock_format::oci::{self, IndexImage};
use airlock_format::report::{Event, Reporter};
use airlock_format::write::{Content, PlannedEntry};

use crate::deps::DepContext;
use crate::fetch::{fetch_listed, registry_images, Fetcher, Key, PullSetup};
use crate::lock::{Lock, LockedChart, LOCK_ENTRY};
use crate::registry::{Cache, Pulled};
use crate::sbom::{self, SbomFile, SbomImage, SbomInput, SBOM_ENTRY};
use crate::sources::chart::CHART_MTIME;
use crate::sources::{self, Blob, ImageSpec, LoadedChart};
use crate::spec::LoadedSpec;

/// A complete plan: the manifest to sign and where each entry's bytes come from.
pub struct Plan {
    pub manifest: Manifest,
    pub entries: Vec<PlannedEntry>,
    /// The lock to write next to the spec once the bundle is written (only when the
    /// spec has registry sources or fetched chart dependencies).
    pub lock: Option<(PathBuf, Lock)>,
    /// Images found by `discover_images`: reference → who asked (chart, manifest,
    /// container).
    pub discovered: BTreeMap<String, Vec<String>>,
    /// The SBOM's layer findings; what this build scanned is stored once the bundle
    /// is written (see [`sbom::LayerCache`]).
    pub sbom_cache: Option<sbom::LayerCache>,
}

/// Builds the manifest and entry list without writing anything (registry images are
/// pulled with the default [`PullSetup`]).
pub fn plan(spec: &LoadedSpec, installer: Option<&Path>, created: u64, reporter: &dyn Reporter) -> Result<Plan> {
    plan_with(spec, installer, created, &PullSetup::default(), reporter)
}

/// [`plan`] with explicit pull settings.
pub fn plan_with(
    spec: &LoadedSpec,
    installer: Option<&Path>,
    created: u64,
    setup: &PullSetup,
    reporter: &dyn Reporter,
) -> Result<Plan> {
    let old_lock = Lock::load(&Lock::path_for(&spec.dir))?;
    let mut fetcher = Fetcher::new(spec, setup, &old_lock)?;
    let listed = fetch_listed(spec, &mut fetcher, reporter)?;
    // Charts are packaged with a fixed time, not `created`: their digests follow
    // their content only.
    let mut deps = DepContext::new(fetcher.options.clone(), &old_lock, setup.lock, CHART_MTIME, reporter);
    let charts = load_charts(spec, &listed.charts, &mut deps)?;
    let (spec, discovered) = discover_images(spec, &charts, reporter)?;
    let mut pulled = listed.images;
    let more = pull_discovered(&spec, &pulled, &mut fetcher, reporter)?;
    pulled.extend(more);
    let cache = fetcher.cache().cloned();
    let signatures = std::mem::take(&mut fetcher.signatures);
    let cosign_blobs = std::mem::take(&mut fetcher.cosign_blobs);
    let mut lock = fetcher.finish()?;

    let s = &spec.spec;
    let mut entries = Entries { spec: &spec, map: BTreeMap::new(), kept: 0 };
    let mut components: Vec<Component> = s
        .components
        .iter()
        .map(|c| Component { name: c.name.clone(), images: vec![], charts: vec![], files: vec![] })
        .collect();
    let (mut images, blobs) = plan_images(&spec, &pulled, cache.as_ref(), &mut components, reporter)?;
    // The cosign checks made while pulling go with their images into the manifest.
    let mut keyed = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        keyed.extend((0..c.images.len()).map(|ii| (ci, ii)));
    }
    for (image, key) in images.iter_mut().zip(keyed) {
        image.cosign = signatures.get(&key).cloned();
    }
    let charts = plan_charts(&spec, charts, &mut entries, &mut components)?;
    let files = plan_files(&spec, &mut entries, &mut components)?;
    let distribution = plan_distribution(&spec, setup, &mut entries, reporter)?;
    let profiles = plan_profiles(&spec, &mut entries)?;
    let monitoring = plan_monitoring(&spec, &charts, &mut entries)?;
    let installer = plan_installer(&spec, installer, &mut entries)?;
    plan_oci_layout(&mut images, &mut entries)?;
    add_dependency_pins(&spec, &mut lock, std::mem::take(&mut deps.fetched));
    // The SBOM reads the image layers from the same content the bundle will carry.
    for (digest, b) in &blobs {
        let path = blob_path(digest);
        entries.add(path.clone(), b.content.clone(), *digest, b.size, false, "images")?;
        if let Some(e) = entries.map.get_mut(&path) {
            e.precompressed = is_compressed_media_type(&b.media_type);
        }
    }
    // The cosign objects carried beside their images: ordinary blobs of the layout,
    // stored once even when two images share them (or, unlikely, an image does).
    for (digest, bytes) in cosign_blobs {
        let path = blob_path(&digest);
        if !entries.map.contains_key(&path) {
            entries.add_bytes(path, bytes, "images")?;
        }
    }
    if let Some((_, lock)) = &lock {
        entries.add_bytes(LOCK_ENTRY.to_string(), lock.render(), "bundle.lock")?;
    }
    let created_text = airlock_format::manifest::rfc3339(created);
    reporter.event(Event::Phase { name: "writing the SBOM (reading OS packages from image layers)", total: None });
    let sbom_cache = sbom::LayerCache::new(&setup.options.cache_dir.join("sbom-layers"));
    let sbom_bytes = build_sbom(
        &sbom_cache,
        s,
        &created_text,
        &images,
        &blobs,
        &charts,
        &files,
        distribution.as_ref(),
        installer.as_ref(),
        &entries.map,
        &discovered,
    )?;
    if entries.map.contains_key(SBOM_ENTRY) {
        return Err(
            spec.err("components", format!("an artifact would be stored at `{SBOM_ENTRY}`, where the SBOM goes"))
        );
    }
    entries.add_bytes(SBOM_ENTRY.to_string(), sbom_bytes, "sbom")?;

    let manifest = Manifest {
        format: FORMAT_V1.into(),
        name: s.name.clone(),
        version: s.version.clone(),
        created: created_text,
        distribution,
        installer,
        components,
        images,
        charts,
        files,
        profiles,
        key_statements: Vec::new(),
        entries: entries.map.values().map(|e| e.entry.clone()).collect(),
        base: None,
        base_entries: Vec::new(),
        upgrade: s.upgrade.clone().map(|u| u.into_policy()),
        monitoring,
        drill_checks: s.backup.as_ref().map(|b| b.drill_checks.clone()).unwrap_or_default(),
    };
    manifest.validate().map_err(|e| e.within("bundler bug: planned manifest is invalid"))?;
    Ok(Plan { manifest, entries: entries.map.into_values().collect(), lock, discovered, sbom_cache: Some(sbom_cache) })
}

/// Whether a blob's media type says its bytes are gzip or zstd compressed (OCI
/// `…tar+gzip`, `…tar+zstd`, Docker `…rootfs.diff.tar.gzip`): the bundle stores them
/// without compressing them again.
fn is_compressed_media_type(media_type: &str) -> bool {
    ["+gzip", "+zstd", ".gzip", ".zstd"].iter().any(|s| media_type.ends_with(s))
}

/// The entries planned so far, by path: the stream and the manifest list them in this
/// order.
struct Entries<'a> {
    spec: &'a LoadedSpec,
    map: BTreeMap<String, PlannedEntry>,
    /// Bytes of small inputs kept in memory so far (see [`measured`]).
    kept: u64,
}

/// Small inputs (profiles, scripts, most files) are read into memory when they are
/// hashed, so the bundle is written from the bytes that were hashed and the file is
/// read once. The manifest, signed and first in the stream, names every entry's
/// digest, so a larger input without a digest of its own is hashed here and read
/// again while it is written (where the writer checks it did not change).
const KEEP_FILE_MAX: u64 = 4 << 20;
/// The most bytes kept in memory that way for one bundle: the peak memory stays well
/// under the 150 MiB a build may take.
const KEEP_TOTAL_MAX: u64 = 32 << 20;

/// The content, digest and size of the file at `p`: its bytes when it is small (adding
/// to `kept`), else the file, hashed once now.
fn measured(p: &Path, kept: &mut u64) -> Result<(Content, Sha256Digest, u64)> {
    let len = fs::metadata(p).at(p)?.len();
    if len <= KEEP_FILE_MAX && *kept + len <= KEEP_TOTAL_MAX {
        let bytes = fs::read(p).at(p)?;
        *kept += bytes.len() as u64;
        let (sha, size) = (Sha256Digest::of(&bytes), bytes.len() as u64);
        return Ok((Content::Bytes(bytes), sha, size));
    }
    let content = Content::File(p.to_path_buf());
    let (sha, size) = content.measure()?;
    Ok((content, sha, size))
}

impl Entries<'_> {
    /// Adds an entry; a second artifact at the same path is an error naming `what`.
    fn add(
        &mut self,
        path: String,
        content: Content,
        sha256: Sha256Digest,
        size: u64,
        executable: bool,
        what: &str,
    ) -> Result<()> {
        if self.map.contains_key(&path) {
            return Err(self
                .spec
                .err(what, format!("two artifacts would be stored at `{path}`"))
                .with_hint("give them distinct names"));
        }
        self.map.insert(
            path.clone(),
            PlannedEntry { entry: Entry { path, size, sha256, executable }, content, precompressed: false },
        );
        Ok(())
    }

    /// Adds a file, hashing it now.
    fn add_measured(&mut self, path: String, file: &Path, executable: bool, what: &str) -> Result<()> {
        let (content, sha, size) = measured(file, &mut self.kept)?;
        self.add(path, content, sha, size, executable, what)
    }

    /// Adds bytes made here (index, lock, SBOM).
    fn add_bytes(&mut self, path: String, bytes: Vec<u8>, what: &str) -> Result<()> {
        let (sha, size) = (Sha256Digest::of(&bytes), bytes.len() as u64);
        self.add(path, Content::Bytes(bytes), sha, size, false, what)
    }
}

/// Every chart of the spec loaded, in spec order: from its repository (fetched
/// already) or its path, with missing dependencies vendored (the result is kept in
/// the content cache by digest, like a chart from a repository).
fn load_charts(
    spec: &LoadedSpec,
    remote: &BTreeMap<Key, PathBuf>,
    deps: &mut DepContext<'_>,
) -> Result<BTreeMap<Key, LoadedChart>> {
    let mut out = BTreeMap::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (hi, ch) in c.charts.iter().enumerate() {
            let key = format!("components[{ci}].charts[{hi}]");
            let p = match (remote.get(&(ci, hi)), &ch.path) {
                (Some(p), _) => p.clone(),
                (None, Some(rel)) => spec.path(format!("{key}.path"), rel)?,
                (None, None) => return Err(spec.err(&key, "has neither `path` nor `repo`")),
            };
            let within = |e: Error| e.within(format!("{}: {key}", spec.file.display()));
            let p = match crate::deps::vendor_chart(&p, deps).map_err(within)? {
                Some(bytes) => {
                    let cache = Cache::open(&deps.options.cache_dir)?;
                    let d = Sha256Digest::of(&bytes);
                    cache.put(&d, &bytes)?;
                    cache.blob_path(&d)
                }
                None => p,
            };
            out.insert((ci, hi), sources::load_chart(&p, CHART_MTIME).map_err(within)?);
        }
    }
    Ok(out)
}

/// The spec with the images found in charts marked `discover_images` added as
/// registry images of their components (so they are pulled, locked and bundled like
/// listed ones), and who asked for each. Without such charts: the spec as it is.
fn discover_images(
    spec: &LoadedSpec,
    charts: &BTreeMap<Key, LoadedChart>,
    reporter: &dyn Reporter,
) -> Result<(LoadedSpec, BTreeMap<String, Vec<String>>)> {
    if !spec.spec.components.iter().any(|c| c.charts.iter().any(|h| h.discover_images)) {
        return Ok((spec.clone(), BTreeMap::new()));
    }
    let found = crate::discover::render_charts(spec, charts)?;
    crate::discover::with_discovered(spec, &found, reporter)
}

/// Pulls the registry images of `spec` not pulled yet (those discovery added).
fn pull_discovered(
    spec: &LoadedSpec,
    pulled: &BTreeMap<Key, Pulled>,
    fetcher: &mut Fetcher<'_>,
    reporter: &dyn Reporter,
) -> Result<BTreeMap<Key, Pulled>> {
    let mut wanted = registry_images(spec)?;
    wanted.retain(|im| !pulled.contains_key(&im.key));
    fetcher.images(spec, &wanted, reporter)
}

/// Every image, in spec order, and the blobs they need, each once: registry images
/// from the cache they were pulled into, the others from their sources.
fn plan_images(
    spec: &LoadedSpec,
    pulled: &BTreeMap<Key, Pulled>,
    cache: Option<&Cache>,
    components: &mut [Component],
    reporter: &dyn Reporter,
) -> Result<(Vec<Image>, BTreeMap<Sha256Digest, Blob>)> {
    let mut images = Vec::new();
    let mut blobs: BTreeMap<Sha256Digest, Blob> = BTreeMap::new();
    let mut refs = BTreeSet::new();
    let mut source_cache = sources::SourceCache::default();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (ii, im) in c.images.iter().enumerate() {
            let key = format!("components[{ci}].images[{ii}]");
            reporter.event(Event::Phase { name: &format!("reading image {}", im.reference), total: None });
            let ispec =
                ImageSpec { reference: im.reference.clone(), from: im.from.clone(), platforms: im.platforms.clone() };
            if !pulled.contains_key(&(ci, ii)) {
                // Cosign signatures live in the image's registry repository: an image
                // read from a file has none to check.
                if let Some(p) = crate::fetch::signature_policy(spec, (ci, ii))?.filter(|p| p.require) {
                    let keys: Vec<&str> = p.keys.iter().map(|k| k.name.as_str()).collect();
                    return Err(spec
                        .err(&key, format!("image {} needs a cosign signature by {}, but `{}` is not a registry source, where signatures are kept", im.reference, keys.join(", "), im.from))
                        .with_hint("take the image from its registry (`from: docker://…`), or set `signatures: {require: false}` on it"));
                }
            }
            let img = match (pulled.get(&(ci, ii)), cache) {
                (Some(p), Some(cache)) => sources::load_pulled(&ispec, p, cache),
                _ => sources::load_image_with(&ispec, &spec.dir, &mut source_cache),
            }
            .map_err(|e| e.within(format!("{}: {key}", spec.file.display())))?;
            if !refs.insert(img.reference.clone()) {
                return Err(spec.err(format!("{key}.ref"), format!("image `{}` is listed twice", img.reference)));
            }
            for b in &img.blobs {
                if let Some(prev) = blobs.get(&b.digest) {
                    if prev.size != b.size {
                        return Err(spec.err(
                            &key,
                            format!("blob {} has size {} here but {} in another image", b.digest, b.size, prev.size),
                        ));
                    }
                    continue;
                }
                blobs.insert(b.digest, b.clone());
            }
            components[ci].images.push(img.reference.clone());
            images.push(Image {
                reference: img.reference,
                component: c.name.clone(),
                media_type: img.media_type,
                digest: img.digest,
                size: img.size,
                platforms: img.platforms,
                blobs: img.blobs.iter().map(|b| b.digest).collect(),
                cosign: None,
            });
        }
    }
    Ok((images, blobs))
}

/// The loaded charts as `charts/NAME-VERSION.tgz` entries, with the vendor's values.
fn plan_charts(
    spec: &LoadedSpec,
    mut loaded: BTreeMap<Key, LoadedChart>,
    entries: &mut Entries<'_>,
    components: &mut [Component],
) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (hi, ch) in c.charts.iter().enumerate() {
            let key = format!("components[{ci}].charts[{hi}]");
            let chart = loaded.remove(&(ci, hi)).expect("every chart was loaded");
            let path = format!("charts/{}-{}.tgz", chart.name, chart.version);
            entries.add(path.clone(), chart.content, chart.sha256, chart.size, false, &key)?;
            components[ci].charts.push(chart.name.clone());
            charts.push(Chart {
                name: chart.name,
                version: chart.version,
                app_version: chart.app_version,
                component: c.name.clone(),
                path,
                values: chart_values(ch.values.as_ref()).map_err(|e| spec.err(format!("{key}.values"), e))?,
            });
        }
    }
    Ok(charts)
}

/// Each component's files as `files/COMPONENT/NAME`, executable by `mode` or as the
/// file is.
fn plan_files(spec: &LoadedSpec, entries: &mut Entries<'_>, components: &mut [Component]) -> Result<Vec<FileArtifact>> {
    let mut files = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (fi, f) in c.files.iter().enumerate() {
            let key = format!("components[{ci}].files[{fi}]");
            let p = spec.path(format!("{key}.path"), &f.path)?;
            // A path the spec names inside its directory takes what is there: a link
            // in it that leads out is refused (one that stays inside is followed). A
            // path written outside (`../x`, `/srv/x`) is the author's plain choice.
            if lexically_inside(&f.path) {
                crate::sources::contained(&spec.dir, &p, &format!("{key}.path"))?;
            }
            if !p.is_file() {
                return Err(spec.err(format!("{key}.path"), format!("`{}` is not a regular file", p.display())));
            }
            let name = match &f.name {
                Some(n) => n.clone(),
                None => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            };
            let executable = match f.mode.as_deref() {
                Some(m) => m == "0755",
                None => is_executable(&p)?,
            };
            let path = format!("files/{}/{}", c.name, name);
            let (content, sha, size) = measured(&p, &mut entries.kept)?;
            airlock_format::manifest::check_entry_path(&path).map_err(|why| spec.err(format!("{key}.name"), why))?;
            entries.add(path.clone(), content, sha, size, executable, &key)?;
            components[ci].files.push(name.clone());
            files.push(FileArtifact { name, component: c.name.clone(), path });
        }
    }
    Ok(files)
}

/// The K3s/RKE2 release artifacts as `distribution/NAME`, each checked against the
/// release's published checksums when there are any.
fn plan_distribution(
    spec: &LoadedSpec,
    setup: &PullSetup,
    entries: &mut Entries<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<Distribution>> {
    let Some(d) = &spec.spec.distribution else { return Ok(None) };
    let release = crate::release::resolve(spec, d, &setup.options, reporter)?;
    let mut artifacts = Vec::new();
    for (i, (name, p)) in release.artifacts.iter().enumerate() {
        let key = format!("distribution.artifacts[{i}]");
        // A digest the release's checksum list names is checked by the writer while it
        // streams the artifact into the bundle: no pass over the file beforehand.
        let (content, sha, size) = match &release.sums {
            Some(sums) => match sums.sums.get(name) {
                None => {
                    return Err(spec
                        .err(format!("{key}.name"), format!("`{name}` is not listed in {}", sums.origin))
                        .with_hint("the artifact name must be the file name the release publishes"))
                }
                Some(want) => (Content::File(p.clone()), *want, fs::metadata(p).at(p)?.len()),
            },
            None => measured(p, &mut entries.kept)?,
        };
        let path = format!("distribution/{name}");
        entries.add(path.clone(), content, sha, size, is_executable(p)?, &key)?;
        artifacts.push(DistributionArtifact { name: name.clone(), path });
    }
    Ok(Some(Distribution { kind: d.kind, version: d.version.clone(), arch: d.arch.clone(), artifacts }))
}

/// The install profiles as `profiles/NAME.yaml`; each must be YAML.
fn plan_profiles(spec: &LoadedSpec, entries: &mut Entries<'_>) -> Result<Vec<Profile>> {
    let mut profiles = Vec::new();
    for (i, rel) in spec.spec.profiles.iter().enumerate() {
        let key = format!("profiles[{i}]");
        let p = spec.path(&key, rel)?;
        // Parsed and carried from the same bytes: the file is read once.
        let text = fs::read_to_string(&p).at(&p)?;
        serde_yaml::from_str::<serde_yaml::Value>(&text)
            .map_err(|e| spec.err(&key, format!("`{}` is not valid YAML: {e}", p.display())))?;
        let name = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = format!("profiles/{name}.yaml");
        entries.add_bytes(path.clone(), text.into_bytes(), &key)?;
        profiles.push(Profile { name, path });
    }
    Ok(profiles)
}

/// The monitoring content ([`crate::monitoring`]) as `monitoring/rules/<file>` and
/// `monitoring/dashboards/<file>`, when the bundle carries any.
fn plan_monitoring(
    spec: &LoadedSpec,
    charts: &[Chart],
    entries: &mut Entries<'_>,
) -> Result<Option<MonitoringContent>> {
    let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
    let Some(content) = crate::monitoring::collect(spec, &names)? else { return Ok(None) };
    let mut out = MonitoringContent::default();
    for (files, dir, list, key) in [
        (content.rules, RULES_DIR, &mut out.rules, "monitoring.rules"),
        (content.dashboards, DASHBOARDS_DIR, &mut out.dashboards, "monitoring.dashboards"),
    ] {
        for (name, text) in files {
            let path = format!("{dir}/{name}");
            airlock_format::manifest::check_entry_path(&path)
                .map_err(|why| spec.err(key, format!("`{name}` cannot be carried: {why}")))?;
            entries.add_bytes(path.clone(), text.into_bytes(), key)?;
            list.push(path);
        }
    }
    Ok(Some(out))
}

/// The installer binary (`--installer`, else the spec's) as `installer/airlock`.
fn plan_installer(spec: &LoadedSpec, installer: Option<&Path>, entries: &mut Entries<'_>) -> Result<Option<Installer>> {
    let installer_path = match installer {
        Some(p) => Some(p.to_path_buf()),
        None => spec.spec.installer.as_ref().map(|i| spec.path("installer.path", &i.path)).transpose()?,
    };
    let Some(p) = installer_path else { return Ok(None) };
    let path = "installer/airlock".to_string();
    entries.add_measured(path.clone(), &p, true, "installer")?;
    // The installer is built from the same workspace as this bundler.
    Ok(Some(Installer { path, version: env!("CARGO_PKG_VERSION").to_string() }))
}

/// The OCI layout's index naming every image by full reference (images sorted by it),
/// and its `oci-layout` file; nothing without images.
fn plan_oci_layout(images: &mut [Image], entries: &mut Entries<'_>) -> Result<()> {
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    if images.is_empty() {
        return Ok(());
    }
    // Each image's carried cosign objects are found by their cosign tag beside it.
    let cosign: Vec<Image> = images.iter().flat_map(|i| i.cosign_images()).collect();
    let mut listed: Vec<IndexImage> = images
        .iter()
        .map(|i| (i, false))
        .chain(cosign.iter().map(|i| (i, true)))
        .map(|(i, cosign_object)| IndexImage {
            reference: &i.reference,
            media_type: &i.media_type,
            digest: i.digest,
            size: i.size,
            cosign_object,
        })
        .collect();
    listed.sort_by(|a, b| a.reference.cmp(b.reference));
    listed.dedup_by(|a, b| a.reference == b.reference);
    let index = oci::build_index(&listed);
    entries.add_bytes(format!("{OCI_DIR}/index.json"), index, "images")?;
    entries.add_bytes(format!("{OCI_DIR}/oci-layout"), oci::OCI_LAYOUT_FILE.to_vec(), "images")
}

/// Adds the chart dependencies fetched from repositories to the lock (starting one
/// when the spec had no registry source).
fn add_dependency_pins(spec: &LoadedSpec, lock: &mut Option<(PathBuf, Lock)>, fetched: Vec<LockedChart>) {
    if fetched.is_empty() {
        return;
    }
    let (_, lock) = lock.get_or_insert_with(|| {
        (Lock::path_for(&spec.dir), Lock { version: 1, images: Vec::new(), charts: Vec::new() })
    });
    for c in fetched {
        if !lock.charts.contains(&c) {
            lock.charts.push(c);
        }
    }
}

/// The CycloneDX document for everything the plan carries (see [`crate::sbom`]).
#[allow(clippy::too_many_arguments)]
fn build_sbom(
    cache: &sbom::LayerCache,
    s: &crate::spec::Spec,
    created: &str,
    images: &[Image],
    blobs: &BTreeMap<Sha256Digest, Blob>,
    charts: &[Chart],
    files: &[FileArtifact],
    distribution: Option<&Distribution>,
    installer: Option<&Installer>,
    entries: &BTreeMap<String, PlannedEntry>,
    asked: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<u8>> {
    let sha = |path: &str| entries.get(path).map(|e| e.entry.sha256).unwrap_or(Sha256Digest([0; 32]));
    let mut sfiles = Vec::new();
    for c in charts {
        sfiles.push(SbomFile {
            kind: "chart",
            name: &c.name,
            version: Some(&c.version),
            component: Some(&c.component),
            path: &c.path,
            sha256: sha(&c.path),
        });
    }
    if let Some(d) = distribution {
        for a in &d.artifacts {
            sfiles.push(SbomFile {
                kind: "distribution",
                name: &a.name,
                version: Some(&d.version),
                component: None,
                path: &a.path,
                sha256: sha(&a.path),
            });
        }
    }
    for f in files {
        sfiles.push(SbomFile {
            kind: "file",
            name: &f.name,
            version: None,
            component: Some(&f.component),
            path: &f.path,
            sha256: sha(&f.path),
        });
    }
    if let Some(i) = installer {
        sfiles.push(SbomFile {
            kind: "installer",
            name: "airlock",
            version: Some(&i.version),
            component: None,
            path: &i.path,
            sha256: sha(&i.path),
        });
    }
    let mut simages = Vec::new();
    for i in images {
        let mut bl: Vec<&Blob> = i.blobs.iter().filter_map(|d| blobs.get(d)).collect();
        if let Some(root) = blobs.get(&i.digest) {
            bl.push(root);
        }
        simages.push(SbomImage {
            reference: &i.reference,
            component: &i.component,
            digest: i.digest,
            media_type: &i.media_type,
            platforms: &i.platforms,
            blobs: bl,
            requested_by: asked.get(&i.reference).cloned().unwrap_or_default(),
        });
    }
    sbom::build(&SbomInput {
        bundle_name: &s.name,
        bundle_version: &s.version,
        created,
        images: simages,
        files: sfiles,
        cache: Some(cache),
    })
}

fn is_executable(p: &Path) -> Result<bool> {
    Ok(fs::metadata(p).at(p)?.permissions().mode() & 0o111 != 0)
}

/// The vendor's chart values as the manifest keeps them (JSON): a mapping with string
/// keys, so the installer can merge its own values over it key by key.
fn chart_values(values: Option<&serde_yaml::Mapping>) -> std::result::Result<Option<serde_json::Value>, String> {
    let Some(map) = values else { return Ok(None) };
    let json = serde_json::to_value(map).map_err(|e| format!("cannot be kept in the manifest: {e}"))?;
    Ok(Some(json))
}

/// Whether `rel`, a spec path, with its `.` and `..` taken lexically, names a path
/// below the spec's directory.
fn lexically_inside(rel: &str) -> bool {
    let rel = Path::new(rel);
    if rel.is_absolute() {
        return false;
    }
    let mut depth = 0i32;
    for c in rel.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::oci_layout::INDEX_PARSES;
    use crate::sources::testutil::Layout;
    use airlock_format::report::Silent;

    /// Many images taken from one layout must not each parse the layout's index
    /// again: that made planning quadratic (26 s for 5,000 images, most of it in
    /// parsing the same index.json 5,000 times).
    #[test]
    fn a_layout_index_is_parsed_once_however_many_images_come_from_it() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let mut yaml = String::from("name: many\nversion: 1.0.0\ncomponents:\n  - name: c\n    images:\n");
        let n = 40;
        for i in 0..n {
            let img = l.image("linux", "amd64", None, &[b"shared base", format!("own {i}").as_bytes()]);
            let name = format!("registry.example/lab/app{i}:1");
            l.name(&img, &name);
            yaml += &format!("      - ref: {name}\n        from: oci:layout:{name}\n");
        }
        // A short name that only normalizes to an entry's name takes the same index.
        let img = l.image("linux", "amd64", None, &[b"shared base", b"short"]);
        l.name(&img, "docker.io/library/nginx:1.27");
        yaml += "      - ref: docker.io/library/nginx:1.27\n        from: oci:layout:nginx:1.27\n";
        l.write_dir(t.path(), "layout");
        std::fs::write(t.path().join("bundle.yaml"), yaml).unwrap();
        let spec = LoadedSpec::load(&t.path().join("bundle.yaml")).unwrap();

        let before = INDEX_PARSES.with(|c| c.get());
        let plan = plan(&spec, None, 0, &Silent).unwrap();
        assert_eq!(INDEX_PARSES.with(|c| c.get()) - before, 1, "index.json parsed once per layout");
        assert_eq!(plan.manifest.images.len(), n + 1);
        let shared = Sha256Digest::of(b"shared base");
        let stored = plan.entries.iter().filter(|e| e.entry.path.ends_with(&shared.hex())).count();
        assert_eq!(stored, 1, "the shared layer is stored once");
    }

    /// The same for an OCI archive: its members are listed and its index parsed once.
    #[test]
    fn an_oci_archive_is_indexed_once_however_many_images_come_from_it() {
        use crate::sources::oci_archive::TAR_INDEXES;
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let mut yaml = String::from("name: many\nversion: 1.0.0\ncomponents:\n  - name: c\n    images:\n");
        let n = 30;
        for i in 0..n {
            let img = l.image("linux", "amd64", None, &[b"shared base", format!("own {i}").as_bytes()]);
            let name = format!("registry.example/lab/app{i}:1");
            l.name(&img, &name);
            yaml += &format!("      - ref: {name}\n        from: oci-archive:images.tar:{name}\n");
        }
        l.write_archive(t.path(), "images.tar", false);
        std::fs::write(t.path().join("bundle.yaml"), yaml).unwrap();
        let spec = LoadedSpec::load(&t.path().join("bundle.yaml")).unwrap();

        let (tars, indexes) = (TAR_INDEXES.with(|c| c.get()), INDEX_PARSES.with(|c| c.get()));
        let plan = plan(&spec, None, 0, &Silent).unwrap();
        assert_eq!(TAR_INDEXES.with(|c| c.get()) - tars, 1, "the archive was listed again per image");
        assert_eq!(INDEX_PARSES.with(|c| c.get()) - indexes, 1, "its index.json was parsed again per image");
        assert_eq!(plan.manifest.images.len(), n);
    }

    #[test]
    fn gzip_and_zstd_layer_media_types_are_known_as_compressed() {
        for t in [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert!(is_compressed_media_type(t), "{t}");
        }
        for t in ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.config.v1+json", ""] {
            assert!(!is_compressed_media_type(t), "{t}");
        }
    }
}
