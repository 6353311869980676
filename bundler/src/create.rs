//! `airlock-bundler create`: plan a bundle from a spec, sign it, write it.
//!
//! Planning reads every source once (images are loaded without hashing their layers;
//! charts, files and release artifacts are hashed) and produces the complete manifest;
//! only then is anything written. The writer re-hashes every entry as it streams, so a
//! blob whose bytes do not match its digest aborts the build and leaves no bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_format::checksums;
use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, IoContext, Result};
use airlock_format::manifest::{
    blob_path, Chart, Component, Distribution, DistributionArtifact, Entry, FileArtifact, Image, Installer, Manifest,
    Profile, FORMAT_V1, OCI_DIR,
};
use airlock_format::minisign::SecretKey;
use airlock_format::oci::{self, IndexImage};
use airlock_format::parts::WrittenPart;
use airlock_format::report::{Event, Reporter};
use airlock_format::write::{write_bundle, Content, PlannedEntry, WriteOptions};

use crate::lock::{Lock, LockMode, LockedImage, LOCK_ENTRY};
use crate::registry::{self, Cache, PullOptions, PullRequest, Pulled, RegistryTls};
use crate::sbom::{self, SbomFile, SbomImage, SbomInput, SBOM_ENTRY};
use crate::sources::{self, Blob, ImageReference, ImageSource, ImageSpec};
use crate::spec::LoadedSpec;

/// How registry (`docker://`) images are pulled and pinned.
#[derive(Clone, Debug)]
pub struct PullSetup {
    /// Cache, credentials, parallelism; the spec's `registries:` are added to it.
    pub options: PullOptions,
    pub lock: LockMode,
}

impl Default for PullSetup {
    /// The user cache, no credentials beyond docker's config files, the lock as it is.
    fn default() -> Self {
        let mut options = PullOptions::new(registry::default_cache_dir());
        for f in registry::Credentials::default_docker_configs() {
            // An unreadable docker config is reported when a registry asks for a login.
            let _ = options.credentials.add_docker_config(&f);
        }
        Self { options, lock: LockMode::Use }
    }
}

/// Everything `create` needs besides the spec.
pub struct CreateOptions {
    pub output: PathBuf,
    pub split_size: Option<u64>,
    /// The installer binary to carry (`--installer`); overrides the spec's.
    pub installer: Option<PathBuf>,
    /// Creation time (unix seconds): `SOURCE_DATE_EPOCH` when set, so builds repeat.
    pub created: u64,
    pub level: i32,
    pub threads: u32,
    /// `--base`: the previous release's manifest; the bundle is then a delta over it
    /// (see [`crate::delta`]).
    pub base: Option<Manifest>,
}

/// A complete plan: the manifest to sign and where each entry's bytes come from.
pub struct Plan {
    pub manifest: Manifest,
    pub entries: Vec<PlannedEntry>,
    /// The lock to write next to the spec once the bundle is written (only when the
    /// spec has registry images).
    pub lock: Option<(PathBuf, Lock)>,
    /// Images found by `discover_images`: reference → who asked (chart, manifest,
    /// container).
    pub discovered: BTreeMap<String, Vec<String>>,
}

/// The result of a build.
pub struct Created {
    pub manifest: Manifest,
    pub parts: Vec<WrittenPart>,
    pub checksums: PathBuf,
    pub checksums_signature: PathBuf,
    /// See [`Plan::discovered`].
    pub discovered: BTreeMap<String, Vec<String>>,
    /// Set for a delta bundle: what it leaves to its base.
    pub delta: Option<crate::delta::DeltaSummary>,
}

/// Builds the manifest and entry list without writing anything (registry images are
/// pulled with the default [`PullSetup`]).
pub fn plan(spec: &LoadedSpec, installer: Option<&Path>, created: u64, reporter: &dyn Reporter) -> Result<Plan> {
    plan_with(spec, installer, created, &PullSetup::default(), reporter)
}

/// Registry images of the spec, pulled into the cache: `(component, image)` index to
/// root descriptor, and the lock that pins them.
struct PulledImages {
    cache: Option<Cache>,
    by_key: BTreeMap<(usize, usize), Pulled>,
    /// `(component, chart)` index to the packaged chart in the cache.
    charts: BTreeMap<(usize, usize), PathBuf>,
    lock: Option<(PathBuf, Lock)>,
}

fn pull_registry_images(spec: &LoadedSpec, setup: &PullSetup, reporter: &dyn Reporter) -> Result<PulledImages> {
    let mut wanted: Vec<((usize, usize), ImageSpec, ImageReference)> = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (ii, im) in c.images.iter().enumerate() {
            let key = format!("{}: components[{ci}].images[{ii}]", spec.file.display());
            if let ImageSource::Registry { reference } =
                ImageSource::parse(&im.from, &spec.dir).map_err(|e| e.within(&key))?
            {
                let source = ImageReference::parse(&reference).map_err(|e| e.within(&key))?;
                let ispec = ImageSpec {
                    reference: im.reference.clone(),
                    from: im.from.clone(),
                    platforms: im.platforms.clone(),
                };
                wanted.push(((ci, ii), ispec, source));
            }
        }
    }
    let remote_charts: Vec<((usize, usize), &crate::spec::ChartSpec)> = spec
        .spec
        .components
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| {
            c.charts.iter().enumerate().filter(|(_, ch)| ch.repo.is_some()).map(move |(hi, ch)| ((ci, hi), ch))
        })
        .collect();
    if wanted.is_empty() && remote_charts.is_empty() {
        return Ok(PulledImages { cache: None, by_key: BTreeMap::new(), charts: BTreeMap::new(), lock: None });
    }
    let lock_path = Lock::path_for(&spec.dir);
    let old = Lock::load(&lock_path)?;
    let mut options = setup.options.clone();
    for (i, r) in spec.spec.registries.iter().enumerate() {
        let ca = r.ca.as_deref().map(|c| spec.path(format!("registries[{i}].ca"), c)).transpose()?;
        options.registries.insert(r.host.clone(), RegistryTls { ca, insecure: r.insecure });
    }
    let cache = Cache::open(&options.cache_dir)?;
    let mut requests = Vec::new();
    for ((ci, ii), ispec, source) in &wanted {
        let key = format!("{}: components[{ci}].images[{ii}]", spec.file.display());
        let pinned = match setup.lock {
            LockMode::Update => None,
            LockMode::Use => old.get(&ispec.from).map(|l| l.digest),
            LockMode::Locked => Some(old.get(&ispec.from).map(|l| l.digest).ok_or_else(|| {
                Error::input(key.clone(), format!("`{}` is not in {}", ispec.from, lock_path.display()))
                    .with_hint("run once without --locked to pin it, and commit the lock")
            })?),
        };
        let platforms = sources::wanted_platforms(ispec, &key)?;
        requests.push(PullRequest { from: ispec.from.clone(), source: source.clone(), platforms, pinned });
    }
    let client = registry::client::Client::new(options);
    let pulled = registry::fetch_images(&client, &cache, &requests, reporter)?;
    let mut lock = Lock { version: 1, images: Vec::new(), charts: Vec::new() };
    let mut charts = BTreeMap::new();
    for ((ci, hi), ch) in remote_charts {
        let key = format!("{}: components[{ci}].charts[{hi}]", spec.file.display());
        // Validated by the spec: repo, name and version are all there.
        let (repo, name, version) = (
            ch.repo.clone().unwrap_or_default(),
            ch.name.clone().unwrap_or_default(),
            ch.version.clone().unwrap_or_default(),
        );
        let locked = old.chart(&repo, &name, &version).map(|l| l.digest);
        let pinned = match setup.lock {
            LockMode::Update => None,
            LockMode::Use => locked,
            LockMode::Locked => Some(locked.ok_or_else(|| {
                Error::input(
                    key.clone(),
                    format!("chart {name} {version} from {repo} is not in {}", lock_path.display()),
                )
                .with_hint("run once without --locked to pin it, and commit the lock")
            })?),
        };
        reporter.event(Event::Phase { name: &format!("fetching chart {name} {version}"), total: None });
        let req =
            registry::charts::ChartRequest { repo: repo.clone(), name: name.clone(), version: version.clone(), pinned };
        let (path, digest) =
            registry::charts::fetch_chart(&client, &cache, &req, reporter).map_err(|e| e.within(&key))?;
        lock.charts.push(crate::lock::LockedChart { repo, name, version, digest });
        charts.insert((ci, hi), path);
    }
    let mut by_key = BTreeMap::new();
    for ((k, ispec, _), p) in wanted.iter().zip(pulled) {
        lock.images.push(LockedImage {
            from: ispec.from.clone(),
            digest: p.digest,
            media_type: p.media_type.clone(),
            size: p.size,
        });
        by_key.insert(*k, p);
    }
    if setup.lock == LockMode::Locked && lock.render() != old.render() {
        return Err(Error::input(
            lock_path.display().to_string(),
            "the build would change the lock, and --locked forbids it",
        )
        .with_hint("run without --locked (or with --update-lock) and commit the new lock"));
    }
    Ok(PulledImages { cache: Some(cache), by_key, charts, lock: Some((lock_path, lock)) })
}

/// `airlock-bundler pull`: fills the cache with every registry image of the spec and
/// writes the lock, without building a bundle (prefetch while the network is there).
/// Returns the locked images.
pub fn pull(spec: &LoadedSpec, setup: &PullSetup, reporter: &dyn Reporter) -> Result<Vec<LockedImage>> {
    let pulled = pull_registry_images(spec, setup, reporter)?;
    match pulled.lock {
        Some((path, lock)) => {
            lock.save(&path)?;
            Ok(lock.images)
        }
        None => Ok(Vec::new()),
    }
}

/// [`plan`] with explicit pull settings.
pub fn plan_with(
    spec: &LoadedSpec,
    installer: Option<&Path>,
    created: u64,
    setup: &PullSetup,
    reporter: &dyn Reporter,
) -> Result<Plan> {
    // Images discovered in charts join their components as registry images, so they
    // are pulled, locked and bundled like listed ones.
    let augmented;
    let (spec, asked) = if spec.spec.components.iter().any(|c| c.charts.iter().any(|h| h.discover_images)) {
        let (a, asked) = discover_images(spec, setup, created, reporter)?;
        augmented = a;
        (&augmented, asked)
    } else {
        (spec, BTreeMap::new())
    };
    let s = &spec.spec;
    let mut pulled = pull_registry_images(spec, setup, reporter)?;
    // Chart dependencies that are not vendored are fetched and pinned (crate::deps).
    let old_lock = Lock::load(&Lock::path_for(&spec.dir))?;
    let mut deps = crate::deps::DepContext::new(dep_options(spec, setup)?, &old_lock, setup.lock, created, reporter);
    let mut entries: BTreeMap<String, PlannedEntry> = BTreeMap::new();
    let mut add =
        |path: String, content: Content, sha256: Sha256Digest, size: u64, executable: bool, what: &str| -> Result<()> {
            if entries.contains_key(&path) {
                return Err(spec
                    .err(what, format!("two artifacts would be stored at `{path}`"))
                    .with_hint("give them distinct names"));
            }
            entries.insert(path.clone(), PlannedEntry { entry: Entry { path, size, sha256, executable }, content });
            Ok(())
        };

    let mut components = Vec::new();
    let mut images = Vec::new();
    let mut charts = Vec::new();
    let mut files = Vec::new();
    let mut blobs: BTreeMap<Sha256Digest, Blob> = BTreeMap::new();
    let mut refs = BTreeSet::new();

    for (ci, c) in s.components.iter().enumerate() {
        let mut comp = Component { name: c.name.clone(), images: vec![], charts: vec![], files: vec![] };
        for (ii, im) in c.images.iter().enumerate() {
            let key = format!("components[{ci}].images[{ii}]");
            reporter.event(Event::Phase { name: &format!("reading image {}", im.reference), total: None });
            let ispec =
                ImageSpec { reference: im.reference.clone(), from: im.from.clone(), platforms: im.platforms.clone() };
            let img = match (pulled.by_key.get(&(ci, ii)), &pulled.cache) {
                (Some(p), Some(cache)) => sources::load_pulled(&ispec, p, cache),
                _ => sources::load_image(&ispec, &spec.dir),
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
            comp.images.push(img.reference.clone());
            images.push(Image {
                reference: img.reference.clone(),
                component: c.name.clone(),
                media_type: img.media_type.clone(),
                digest: img.digest,
                size: img.size,
                platforms: img.platforms.clone(),
                blobs: img.blobs.iter().map(|b| b.digest).collect(),
            });
        }
        for (hi, ch) in c.charts.iter().enumerate() {
            let key = format!("components[{ci}].charts[{hi}]");
            let p = match (pulled.charts.get(&(ci, hi)), &ch.path) {
                (Some(p), _) => p.clone(),
                (None, Some(rel)) => spec.path(format!("{key}.path"), rel)?,
                (None, None) => return Err(spec.err(&key, "has neither `path` nor `repo`")),
            };
            let within = |e: Error| e.within(format!("{}: {key}", spec.file.display()));
            let p = match crate::deps::vendor_chart(&p, &mut deps).map_err(within)? {
                // The chart with its dependencies added under charts/: kept in the
                // content cache by digest, like a chart from a repository.
                Some(bytes) => {
                    let cache = Cache::open(&deps.options.cache_dir)?;
                    let d = Sha256Digest::of(&bytes);
                    cache.put(&d, &bytes)?;
                    cache.blob_path(&d)
                }
                None => p,
            };
            let chart = sources::load_chart(&p, created).map_err(within)?;
            let path = format!("charts/{}-{}.tgz", chart.name, chart.version);
            add(path.clone(), chart.content, chart.sha256, chart.size, false, &key)?;
            comp.charts.push(chart.name.clone());
            charts.push(Chart {
                name: chart.name,
                version: chart.version,
                app_version: chart.app_version,
                component: c.name.clone(),
                path,
                values: chart_values(ch.values.as_ref()).map_err(|e| spec.err(format!("{key}.values"), e))?,
            });
        }
        for (fi, f) in c.files.iter().enumerate() {
            let key = format!("components[{ci}].files[{fi}]");
            let p = spec.path(format!("{key}.path"), &f.path)?;
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
            let content = Content::File(p);
            let (sha, size) = content.measure()?;
            let path = format!("files/{}/{}", c.name, name);
            airlock_format::manifest::check_entry_path(&path).map_err(|why| spec.err(format!("{key}.name"), why))?;
            add(path.clone(), content, sha, size, executable, &key)?;
            comp.files.push(name.clone());
            files.push(FileArtifact { name, component: c.name.clone(), path });
        }
        components.push(comp);
    }

    let distribution = match &s.distribution {
        None => None,
        Some(d) => {
            let release = crate::release::resolve(spec, d, &setup.options, reporter)?;
            let mut artifacts = Vec::new();
            for (i, (name, p)) in release.artifacts.iter().enumerate() {
                let key = format!("distribution.artifacts[{i}]");
                let content = Content::File(p.clone());
                let (sha, size) = content.measure()?;
                if let Some(sums) = &release.sums {
                    match sums.sums.get(name) {
                        None => {
                            return Err(spec
                                .err(format!("{key}.name"), format!("`{name}` is not listed in {}", sums.origin))
                                .with_hint("the artifact name must be the file name the release publishes"))
                        }
                        Some(want) if *want != sha => {
                            return Err(Error::corrupt(
                                p.display().to_string(),
                                format!("digest {sha} does not match {} in {}", want, sums.origin),
                            )
                            .with_hint("the release artifact is corrupt or from another release; download it again"))
                        }
                        Some(_) => {}
                    }
                }
                let path = format!("distribution/{name}");
                add(path.clone(), content, sha, size, is_executable(p)?, &key)?;
                artifacts.push(DistributionArtifact { name: name.clone(), path });
            }
            Some(Distribution { kind: d.kind, version: d.version.clone(), arch: d.arch.clone(), artifacts })
        }
    };

    let mut profiles = Vec::new();
    for (i, rel) in s.profiles.iter().enumerate() {
        let key = format!("profiles[{i}]");
        let p = spec.path(&key, rel)?;
        let text = fs::read_to_string(&p).at(&p)?;
        serde_yaml::from_str::<serde_yaml::Value>(&text)
            .map_err(|e| spec.err(&key, format!("`{}` is not valid YAML: {e}", p.display())))?;
        let name = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = format!("profiles/{name}.yaml");
        let content = Content::File(p);
        let (sha, size) = content.measure()?;
        add(path.clone(), content, sha, size, false, &key)?;
        profiles.push(Profile { name, path });
    }

    let installer_path = match installer {
        Some(p) => Some(p.to_path_buf()),
        None => s.installer.as_ref().map(|i| spec.path("installer.path", &i.path)).transpose()?,
    };
    let installer = match installer_path {
        None => None,
        Some(p) => {
            let content = Content::File(p.clone());
            let (sha, size) = content.measure()?;
            let path = "installer/airlock".to_string();
            add(path.clone(), content, sha, size, true, "installer")?;
            // The installer is built from the same workspace as this bundler.
            Some(Installer { path, version: env!("CARGO_PKG_VERSION").to_string() })
        }
    };

    // The OCI layout: shared blobs once, an index naming every image by full reference.
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    let index = oci::build_index(
        &images
            .iter()
            .map(|i| IndexImage { reference: &i.reference, media_type: &i.media_type, digest: i.digest, size: i.size })
            .collect::<Vec<_>>(),
    );
    if !images.is_empty() {
        let sha = Sha256Digest::of(&index);
        add(format!("{OCI_DIR}/index.json"), Content::Bytes(index.clone()), sha, index.len() as u64, false, "images")?;
        let layout = oci::OCI_LAYOUT_FILE.to_vec();
        let sha = Sha256Digest::of(&layout);
        add(
            format!("{OCI_DIR}/oci-layout"),
            Content::Bytes(layout.clone()),
            sha,
            layout.len() as u64,
            false,
            "images",
        )?;
    }
    if !deps.fetched.is_empty() {
        let (_, lock) = pulled.lock.get_or_insert_with(|| {
            (Lock::path_for(&spec.dir), Lock { version: 1, images: Vec::new(), charts: Vec::new() })
        });
        for c in std::mem::take(&mut deps.fetched) {
            if !lock.charts.contains(&c) {
                lock.charts.push(c);
            }
        }
    }
    // The SBOM reads the image layers from the same content the bundle will carry.
    let all_blobs = blobs.clone();
    for (digest, b) in blobs {
        add(blob_path(&digest), b.content, digest, b.size, false, "images")?;
    }
    if let Some((_, lock)) = &pulled.lock {
        let text = lock.render();
        let sha = Sha256Digest::of(&text);
        add(LOCK_ENTRY.to_string(), Content::Bytes(text.clone()), sha, text.len() as u64, false, "bundle.lock")?;
    }
    let created_text = airlock_format::manifest::rfc3339(created);
    reporter.event(Event::Phase { name: "writing the SBOM (reading OS packages from image layers)", total: None });
    let sbom_bytes = build_sbom(
        s,
        &created_text,
        &images,
        &all_blobs,
        &charts,
        &files,
        distribution.as_ref(),
        installer.as_ref(),
        &entries,
        &asked,
    )?;
    let sha = Sha256Digest::of(&sbom_bytes);
    let sbom_entry =
        Entry { path: SBOM_ENTRY.to_string(), size: sbom_bytes.len() as u64, sha256: sha, executable: false };
    if entries.contains_key(SBOM_ENTRY) {
        return Err(
            spec.err("components", format!("an artifact would be stored at `{SBOM_ENTRY}`, where the SBOM goes"))
        );
    }
    entries.insert(SBOM_ENTRY.to_string(), PlannedEntry { entry: sbom_entry, content: Content::Bytes(sbom_bytes) });

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
        entries: entries.values().map(|e| e.entry.clone()).collect(),
        base: None,
        base_entries: Vec::new(),
        upgrade: s.upgrade.clone().map(|u| u.into_policy()),
    };
    manifest.validate().map_err(|e| e.within("bundler bug: planned manifest is invalid"))?;
    Ok(Plan { manifest, entries: entries.into_values().collect(), lock: pulled.lock, discovered: asked })
}

/// Plans, signs and writes the bundle, then the signed checksum sidecar (registry
/// images pulled with the default [`PullSetup`]).
pub fn create(spec: &LoadedSpec, key: &SecretKey, opts: &CreateOptions, reporter: &dyn Reporter) -> Result<Created> {
    create_with(spec, key, opts, &PullSetup::default(), reporter)
}

/// [`create`] with explicit pull settings. The lock next to the spec is written only
/// after the bundle was written, so a failed build never moves the pins.
pub fn create_with(
    spec: &LoadedSpec,
    key: &SecretKey,
    opts: &CreateOptions,
    setup: &PullSetup,
    reporter: &dyn Reporter,
) -> Result<Created> {
    let mut plan = plan_with(spec, opts.installer.as_deref(), opts.created, setup, reporter)?;
    crate::statements::add_key_statements(&mut plan, spec, key, opts.created)?;
    let delta = opts.base.as_ref().map(|b| crate::delta::make_delta(&mut plan, b)).transpose()?;
    let manifest_bytes = plan.manifest.to_bytes();
    let sig = key.sign(
        &manifest_bytes,
        &plan.manifest.trusted_comment(),
        &format!("signature of the {} {} bundle manifest", plan.manifest.name, plan.manifest.version),
    )?;
    let wopts =
        WriteOptions { mtime: opts.created, level: opts.level, threads: opts.threads, split_size: opts.split_size };
    if let Some(dir) = opts.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(
                Error::io(dir, std::io::ErrorKind::NotFound.into()).with_hint("create the output directory first")
            );
        }
    }
    let parts = write_bundle(&opts.output, &manifest_bytes, sig.to_text().as_bytes(), &plan.entries, &wopts, reporter)?;

    let list: Vec<(String, Sha256Digest)> = parts
        .iter()
        .map(|p| (p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p.sha256))
        .collect();
    let text = checksums::render(&list);
    let sums_path = checksums::sidecar_path(&opts.output);
    let sums_sig_path = checksums::signature_path(&opts.output);
    let sums_sig = key.sign(
        text.as_bytes(),
        &format!("airlock bundle files: {} {}", plan.manifest.name, plan.manifest.version),
        "signature of the bundle's checksum list",
    )?;
    write_atomic(&sums_path, text.as_bytes())?;
    write_atomic(&sums_sig_path, sums_sig.to_text().as_bytes())?;
    if let Some((path, lock)) = &plan.lock {
        lock.save(path)?;
    }
    Ok(Created {
        manifest: plan.manifest,
        parts,
        checksums: sums_path,
        checksums_signature: sums_sig_path,
        discovered: plan.discovered,
        delta,
    })
}

/// Pull options with the spec's registry TLS settings (for chart dependencies).
fn dep_options(spec: &LoadedSpec, setup: &PullSetup) -> Result<PullOptions> {
    let mut options = setup.options.clone();
    for (i, r) in spec.spec.registries.iter().enumerate() {
        let ca = r.ca.as_deref().map(|c| spec.path(format!("registries[{i}].ca"), c)).transpose()?;
        options.registries.insert(r.host.clone(), RegistryTls { ca, insecure: r.insecure });
    }
    Ok(options)
}

type Asked = BTreeMap<String, Vec<String>>;

/// Renders every chart marked `discover_images` (with its dependencies vendored) and
/// returns the spec with the images found added, and who asked for each.
fn discover_images(
    spec: &LoadedSpec,
    setup: &PullSetup,
    created: u64,
    reporter: &dyn Reporter,
) -> Result<(LoadedSpec, Asked)> {
    let pulled = pull_registry_images(spec, setup, reporter)?;
    let old_lock = Lock::load(&Lock::path_for(&spec.dir))?;
    let mut deps = crate::deps::DepContext::new(dep_options(spec, setup)?, &old_lock, setup.lock, created, reporter);
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut found = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (hi, ch) in c.charts.iter().enumerate().filter(|(_, h)| h.discover_images) {
            let key = format!("components[{ci}].charts[{hi}]");
            let what = format!("{}: {key}", spec.file.display());
            let p = match (pulled.charts.get(&(ci, hi)), &ch.path) {
                (Some(p), _) => p.clone(),
                (None, Some(rel)) => spec.path(format!("{key}.path"), rel)?,
                (None, None) => return Err(spec.err(&key, "has neither `path` nor `repo`")),
            };
            let bytes = match crate::deps::vendor_chart(&p, &mut deps).map_err(|e| e.within(&what))? {
                Some(b) => b,
                None => {
                    let chart = sources::load_chart(&p, created).map_err(|e| e.within(&what))?;
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut chart.content.open()?, &mut v).at(chart.content.origin())?;
                    v
                }
            };
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
            for f in crate::discover::discover(&label, &tgz, &values, &what)? {
                found.push((ci, f));
            }
        }
    }
    crate::discover::with_discovered(spec, &found, reporter)
}

/// The CycloneDX document for everything the plan carries (see [`crate::sbom`]).
#[allow(clippy::too_many_arguments)]
fn build_sbom(
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
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
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
