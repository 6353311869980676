//! The spec's registry sources — `docker://` images and charts from Helm repositories
//! — fetched into the blob cache, each once per build, and pinned in `bundle.lock`
//! ([`crate::lock`]).
//!
//! [`crate::plan`] asks for the images and charts the spec lists, then for the images
//! discovery found in its charts (those not listed already); the lock then holds
//! both. `airlock-bundler pull` ([`pull`]) only fills the cache and writes the lock.

use std::collections::BTreeMap;
use std::path::PathBuf;

use airlock_format::cosign::{self, CosignKey};
use airlock_format::error::{Error, Result};
use airlock_format::manifest::{referrers_tag, CosignCheck, CosignObject, CosignSignature, Referrer};
use airlock_format::report::{Event, Reporter};
use airlock_format::Sha256Digest;
use airlock_registry::Repo;

use crate::lock::{Lock, LockMode, LockedChart, LockedImage};
use crate::registry::charts::{fetch_chart, ChartRequest};
use crate::registry::client::Client;
use crate::registry::{self, Cache, PullOptions, PullRequest, Pulled, RegistryTls};
use crate::sources::{self, ImageReference, ImageSource, ImageSpec};
use crate::spec::{ChartSpec, LoadedSpec};

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

/// `(component, item)` indexes into the spec: `components[c].images[i]` or
/// `components[c].charts[i]`.
pub type Key = (usize, usize);

/// A registry image of the spec: where it is listed, and where it comes from.
pub struct RegistryImage {
    pub key: Key,
    pub spec: ImageSpec,
    pub source: ImageReference,
}

/// The registry images of `spec`, in spec order.
pub fn registry_images(spec: &LoadedSpec) -> Result<Vec<RegistryImage>> {
    let mut out = Vec::new();
    for (ci, c) in spec.spec.components.iter().enumerate() {
        for (ii, im) in c.images.iter().enumerate() {
            let at = image_key(spec, (ci, ii));
            if let ImageSource::Registry { reference } =
                ImageSource::parse(&im.from, &spec.dir).map_err(|e| e.within(&at))?
            {
                let source = ImageReference::parse(&reference).map_err(|e| e.within(&at))?;
                let ispec = ImageSpec {
                    reference: im.reference.clone(),
                    from: im.from.clone(),
                    platforms: im.platforms.clone(),
                };
                out.push(RegistryImage { key: (ci, ii), spec: ispec, source });
            }
        }
    }
    Ok(out)
}

/// The charts of `spec` that come from a repository (`repo:`), in spec order.
pub fn remote_charts(spec: &LoadedSpec) -> Vec<(Key, &ChartSpec)> {
    let components = spec.spec.components.iter().enumerate();
    components
        .flat_map(|(ci, c)| {
            c.charts.iter().enumerate().filter(|(_, ch)| ch.repo.is_some()).map(move |(hi, ch)| ((ci, hi), ch))
        })
        .collect()
}

fn image_key(spec: &LoadedSpec, (ci, ii): Key) -> String {
    format!("{}: components[{ci}].images[{ii}]", spec.file.display())
}

/// An image's cosign signature check: its own `signatures:`, else the spec's.
pub struct SignaturePolicy {
    pub require: bool,
    pub keys: Vec<CosignKey>,
}

/// The signature check for the image at `key`, with its keys read; `None`: none.
pub fn signature_policy(spec: &LoadedSpec, (ci, ii): Key) -> Result<Option<SignaturePolicy>> {
    let image = &spec.spec.components[ci].images[ii];
    let (at, s) = match (&image.signatures, &spec.spec.signatures) {
        (Some(s), _) => (format!("components[{ci}].images[{ii}].signatures"), s),
        (None, Some(s)) => ("signatures".to_string(), s),
        (None, None) => return Ok(None),
    };
    if s.keys.is_empty() {
        if s.require {
            return Err(spec.err(format!("{at}.keys"), "`require: true` needs at least one cosign public key"));
        }
        return Ok(None);
    }
    let mut keys = Vec::new();
    for (i, k) in s.keys.iter().enumerate() {
        let path = spec.path(format!("{at}.keys[{i}]"), k)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        keys.push(CosignKey::from_pem(&text, k)?);
    }
    Ok(Some(SignaturePolicy { require: s.require, keys }))
}

/// Checks the cosign signature of a pulled image in its source repository: the
/// `sha256-<digest>.sig` tag must hold a simple signing payload for this digest that
/// verifies with one of the policy's keys. A missing signature is refused when the
/// policy requires one; a bad one always.
/// A checked signature, with the cosign objects to carry into the bundle's layout and
/// their bytes (manifests, configs, layers, each checked against its digest).
struct CheckedSignature {
    signature: Option<CosignSignature>,
    objects: Vec<CosignObject>,
    blobs: Vec<(Sha256Digest, Vec<u8>)>,
}

fn check_signature(
    client: &Client,
    im: &RegistryImage,
    digest: &Sha256Digest,
    policy: &SignaturePolicy,
    reporter: &dyn Reporter,
) -> Result<CheckedSignature> {
    let image = &im.spec.reference;
    let what = format!("cosign signature of image {image}");
    reporter.event(Event::Phase { name: &format!("checking the signature of {image}"), total: None });
    let repo = Repo { registry: im.source.registry.clone(), repository: im.source.repository.clone() };
    let tag = cosign::signature_tag(digest);
    let tags = client.tags(&repo, &what)?;
    if !tags.contains(&tag) {
        if !policy.require {
            return Ok(CheckedSignature { signature: None, objects: vec![], blobs: vec![] });
        }
        return Err(Error::signature(&what, format!("{repo} has no signature for {digest} (no tag {tag})"))
            .with_hint("sign the image (cosign sign --key) or leave `require` off for it"));
    }
    let manifest = client.manifest(&repo, &tag, &what)?;
    let v = cosign::verify_signatures(image, digest, &manifest.bytes, &policy.keys, &mut |d| {
        client.small_blob(&repo, d, &what)
    })?;
    let key = policy.keys.iter().find(|k| k.name == v.key).expect("the key that verified is one of the policy's");
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = CosignSignature {
        key: v.key.clone(),
        key_pem: key.pem.clone(),
        manifest: manifest.digest,
        payload: base64::Engine::encode(&b64, &v.payload_bytes),
        signature: v.signature,
    };
    // The signature manifest as it is, and the attestations when the upstream has
    // them, go into the layout so that `cosign verify` works against the site's
    // registry after a push. Both are small (payloads, DSSE envelopes).
    let mut objects = Vec::new();
    let mut blobs = Vec::new();
    objects.push(carry_object(client, &repo, &tag, manifest, &what, &mut blobs)?);
    let att = cosign::attestation_tag(digest);
    if tags.contains(&att) {
        let m = client.manifest(&repo, &att, &what)?;
        objects.push(carry_object(client, &repo, &att, m, &what, &mut blobs)?);
    }
    Ok(CheckedSignature { signature: Some(signature), objects, blobs })
}

/// The cosign object `tag` of `repo` (its manifest `m` fetched already) with its
/// config and layers fetched into `blobs`, each checked against its digest and size.
fn carry_object(
    client: &Client,
    repo: &Repo,
    tag: &str,
    m: airlock_registry::client::Manifest,
    what: &str,
    blobs: &mut Vec<(Sha256Digest, Vec<u8>)>,
) -> Result<CosignObject> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        config: Desc,
        #[serde(default)]
        layers: Vec<Desc>,
    }
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: Sha256Digest,
        size: u64,
    }
    let doc: Doc = serde_json::from_slice(&m.bytes).map_err(|e| {
        Error::input(what, format!("{tag} in {repo} is not an image manifest: {e}"))
            .with_hint("cosign writes its signatures and attestations as OCI image manifests; re-sign the image")
    })?;
    let parts: Vec<(Sha256Digest, u64)> =
        std::iter::once(&doc.config).chain(&doc.layers).map(|d| (d.digest, d.size)).collect();
    let digests = carry_blobs(client, repo, tag, &parts, what, blobs)?;
    let media_type = doc.media_type.unwrap_or(m.media_type);
    let object =
        CosignObject { tag: tag.to_string(), media_type, digest: m.digest, size: m.bytes.len() as u64, blobs: digests };
    blobs.push((m.digest, m.bytes));
    Ok(object)
}

/// Fetches the config and layers `parts` (digest, size) of the manifest `of` in `repo`
/// into `blobs`, each checked against its digest and size; returns their digests,
/// each once.
fn carry_blobs(
    client: &Client,
    repo: &Repo,
    of: &str,
    parts: &[(Sha256Digest, u64)],
    what: &str,
    blobs: &mut Vec<(Sha256Digest, Vec<u8>)>,
) -> Result<Vec<Sha256Digest>> {
    let mut digests = Vec::new();
    for (digest, size) in parts {
        if digests.contains(digest) {
            continue;
        }
        let bytes = client.small_blob(repo, digest, what)?;
        if Sha256Digest::of(&bytes) != *digest || bytes.len() as u64 != *size {
            return Err(Error::corrupt(
                what,
                format!("blob {digest} of {of} in {repo} does not match its digest and size"),
            )
            .with_hint("the registry's storage is damaged or something rewrites the traffic; try again"));
        }
        digests.push(*digest);
        blobs.push((*digest, bytes));
    }
    Ok(digests)
}

/// The OCI 1.1 referrers of the image at `digest` in its source repository (cosign
/// signatures and attestations in OCI 1.1 mode, SBOMs): listed by the referrers API
/// when the registry answers it, else by the fallback tag `sha256-<hex>`. Each
/// referrer manifest is fetched by digest (checked), must name this image as its
/// `subject`, and has its config and layers fetched into `blobs`.
fn carry_referrers(
    client: &Client,
    im: &RegistryImage,
    digest: &Sha256Digest,
    reporter: &dyn Reporter,
    blobs: &mut Vec<(Sha256Digest, Vec<u8>)>,
) -> Result<Vec<Referrer>> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Listed>,
    }
    #[derive(serde::Deserialize)]
    struct Listed {
        digest: Sha256Digest,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(rename = "artifactType", default)]
        artifact_type: Option<String>,
        #[serde(default)]
        config: Option<Desc>,
        #[serde(default)]
        layers: Vec<Desc>,
        #[serde(default)]
        subject: Option<Desc>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: Sha256Digest,
        size: u64,
    }
    let image = &im.spec.reference;
    let what = format!("OCI referrers of image {image}");
    reporter.event(Event::Phase { name: &format!("looking for the referrers of {image}"), total: None });
    let repo = Repo { registry: im.source.registry.clone(), repository: im.source.repository.clone() };
    let index = match client.referrers(&repo, digest, &what)? {
        Some(bytes) => bytes,
        None => {
            let tag = referrers_tag(digest);
            if !client.tags(&repo, &what)?.contains(&tag) {
                return Ok(vec![]);
            }
            client.manifest(&repo, &tag, &what)?.bytes
        }
    };
    let index: Index = serde_json::from_slice(&index).map_err(|e| {
        Error::input(&what, format!("the referrers index of {digest} in {repo} is not an image index: {e}"))
            .with_hint("the registry or the tag `sha256-<hex>` holds something else; remove it or fix the registry")
    })?;
    let mut out: Vec<Referrer> = Vec::new();
    for listed in index.manifests {
        if listed.digest == *digest || out.iter().any(|r| r.digest == listed.digest) {
            continue;
        }
        let m = client.manifest(&repo, &listed.digest.to_string(), &what)?;
        let doc: Doc = serde_json::from_slice(&m.bytes).map_err(|e| {
            Error::input(&what, format!("referrer {} in {repo} is not an image manifest: {e}", listed.digest))
                .with_hint("only image manifests with a `subject` are carried as referrers")
        })?;
        // A referrer listed for this image but naming another one would travel as a
        // signature or SBOM of the wrong image.
        let subject = doc.subject.as_ref().map(|s| s.digest);
        if subject != Some(*digest) {
            let named = subject.map(|s| s.to_string()).unwrap_or_else(|| "no subject".into());
            return Err(Error::input(
                &what,
                format!("referrer {} in {repo} names {named}, not this image's {digest}", listed.digest),
            )
            .with_hint("the referrers index lists a manifest of another image; re-attach it to this image or remove it from the index"));
        }
        let parts: Vec<(Sha256Digest, u64)> =
            doc.config.iter().chain(&doc.layers).map(|d| (d.digest, d.size)).collect();
        let parts = carry_blobs(client, &repo, &listed.digest.to_string(), &parts, &what, blobs)?;
        let artifact_type = doc.artifact_type.clone().or_else(|| doc.config.as_ref().map(|c| c.media_type.clone()));
        out.push(Referrer {
            media_type: doc.media_type.unwrap_or(m.media_type),
            artifact_type,
            digest: m.digest,
            size: m.bytes.len() as u64,
            annotations: doc.annotations,
            blobs: parts,
        });
        blobs.push((m.digest, m.bytes));
    }
    Ok(out)
}

/// The pull options with the spec's `registries:` (CA files, insecure hosts).
pub fn spec_options(spec: &LoadedSpec, setup: &PullSetup) -> Result<PullOptions> {
    let mut options = setup.options.clone();
    for (i, r) in spec.spec.registries.iter().enumerate() {
        let ca = r.ca.as_deref().map(|c| spec.path(format!("registries[{i}].ca"), c)).transpose()?;
        options.registries.insert(r.host.clone(), RegistryTls { ca, insecure: r.insecure, ..Default::default() });
    }
    Ok(options)
}

/// The registry fetches of one build: the lock as it was, the lock being written, and
/// the cache and client, opened on first use.
pub struct Fetcher<'a> {
    setup: &'a PullSetup,
    pub options: PullOptions,
    pub lock_path: PathBuf,
    old: &'a Lock,
    cache: Option<Cache>,
    client: Option<Client>,
    /// What was fetched so far; `None` until a registry source is asked for.
    lock: Option<Lock>,
    /// The cosign signatures checked, by image key: carried into the bundle.
    pub signatures: BTreeMap<Key, CosignCheck>,
    /// The bytes of the cosign objects those checks carry, by digest.
    pub cosign_blobs: BTreeMap<Sha256Digest, Vec<u8>>,
}

impl<'a> Fetcher<'a> {
    /// `old` is the lock next to the spec as it is now.
    pub fn new(spec: &LoadedSpec, setup: &'a PullSetup, old: &'a Lock) -> Result<Self> {
        Ok(Self {
            setup,
            options: spec_options(spec, setup)?,
            lock_path: Lock::path_for(&spec.dir),
            old,
            cache: None,
            client: None,
            signatures: BTreeMap::new(),
            cosign_blobs: BTreeMap::new(),
            lock: None,
        })
    }

    /// The cache the fetched sources are in (`None`: nothing was fetched).
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    fn open(&mut self) -> Result<(&Client, &Cache)> {
        if self.cache.is_none() {
            self.cache = Some(Cache::open(&self.options.cache_dir)?);
        }
        if self.client.is_none() {
            self.client = Some(Client::new(self.options.client.clone()));
        }
        self.lock.get_or_insert_with(|| Lock { version: 1, images: Vec::new(), charts: Vec::new() });
        Ok((self.client.as_ref().expect("set above"), self.cache.as_ref().expect("set above")))
    }

    /// Pulls `images` in one pass (transfers in parallel across them) and locks them;
    /// returns each one's root descriptor by key.
    pub fn images(
        &mut self,
        spec: &LoadedSpec,
        images: &[RegistryImage],
        reporter: &dyn Reporter,
    ) -> Result<BTreeMap<Key, Pulled>> {
        if images.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Every pin is checked before anything is fetched.
        let mut requests = Vec::new();
        for im in images {
            let at = image_key(spec, im.key);
            let locked = self.old.get(&im.spec.from).map(|l| l.digest);
            let pinned = self.pinned(locked, || {
                Error::input(at.clone(), format!("`{}` is not in {}", im.spec.from, self.lock_path.display()))
            })?;
            let platforms = sources::wanted_platforms(&im.spec, &at)?;
            requests.push(PullRequest { from: im.spec.from.clone(), source: im.source.clone(), platforms, pinned });
        }
        // The keys are read before anything is fetched: a wrong path fails at once.
        let policies = images.iter().map(|im| signature_policy(spec, im.key)).collect::<Result<Vec<_>>>()?;
        let (client, cache) = self.open()?;
        let pulled = registry::fetch_images(client, cache, &requests, reporter)?;
        let mut checked = Vec::new();
        let mut carried = Vec::new();
        for ((im, p), policy) in images.iter().zip(&pulled).zip(&policies) {
            if let Some(policy) = policy {
                let c = check_signature(client, im, &p.digest, policy, reporter)
                    .map_err(|e| e.within(image_key(spec, im.key)))?;
                carried.extend(c.blobs);
                let mut blobs = Vec::new();
                let referrers = carry_referrers(client, im, &p.digest, reporter, &mut blobs)
                    .map_err(|e| e.within(image_key(spec, im.key)))?;
                carried.extend(blobs);
                let check =
                    CosignCheck { required: policy.require, signature: c.signature, objects: c.objects, referrers };
                checked.push((im.key, check));
            }
        }
        self.signatures.extend(checked);
        self.cosign_blobs.extend(carried);
        let lock = self.lock.as_mut().expect("opened");
        let mut out = BTreeMap::new();
        for (im, p) in images.iter().zip(pulled) {
            let (digest, media_type, size) = (p.digest, p.media_type.clone(), p.size);
            lock.images.push(LockedImage { from: im.spec.from.clone(), digest, media_type, size });
            out.insert(im.key, p);
        }
        Ok(out)
    }

    /// Fetches the repository chart `ch` (listed at `key`) and locks it; returns its
    /// path in the cache.
    pub fn chart(
        &mut self,
        spec: &LoadedSpec,
        (ci, hi): Key,
        ch: &ChartSpec,
        reporter: &dyn Reporter,
    ) -> Result<PathBuf> {
        let at = format!("{}: components[{ci}].charts[{hi}]", spec.file.display());
        // Validated by the spec: repo, name and version are all there.
        let (repo, name, version) = (
            ch.repo.clone().unwrap_or_default(),
            ch.name.clone().unwrap_or_default(),
            ch.version.clone().unwrap_or_default(),
        );
        let locked = self.old.chart(&repo, &name, &version).map(|l| l.digest);
        let pinned = self.pinned(locked, || {
            Error::input(
                at.clone(),
                format!("chart {name} {version} from {repo} is not in {}", self.lock_path.display()),
            )
        })?;
        reporter.event(Event::Phase { name: &format!("fetching chart {name} {version}"), total: None });
        let (client, cache) = self.open()?;
        let req = ChartRequest { repo: repo.clone(), name: name.clone(), version: version.clone(), pinned };
        let (path, digest) = fetch_chart(client, cache, &req, reporter).map_err(|e| e.within(&at))?;
        self.lock.as_mut().expect("opened").charts.push(LockedChart { repo, name, version, digest });
        Ok(path)
    }

    /// The digest to fetch by: the locked one unless `--update-lock`; with `--locked`
    /// a source the lock lacks is the error `missing` makes.
    fn pinned<T>(&self, locked: Option<T>, missing: impl FnOnce() -> Error) -> Result<Option<T>> {
        match self.setup.lock {
            LockMode::Update => Ok(None),
            LockMode::Use => Ok(locked),
            LockMode::Locked => Ok(Some(
                locked
                    .ok_or_else(|| missing().with_hint("run once without --locked to pin it, and commit the lock"))?,
            )),
        }
    }

    /// The lock of everything fetched, and where it goes (`None`: the spec has no
    /// registry source). With `--locked` it must be the lock as it was.
    pub fn finish(self) -> Result<Option<(PathBuf, Lock)>> {
        let Some(lock) = self.lock else { return Ok(None) };
        if self.setup.lock == LockMode::Locked && lock.render() != self.old.render() {
            return Err(Error::input(
                self.lock_path.display().to_string(),
                "the build would change the lock, and --locked forbids it",
            )
            .with_hint("run without --locked (or with --update-lock) and commit the new lock"));
        }
        Ok(Some((self.lock_path, lock)))
    }
}

/// The spec's own registry sources fetched: images and repository charts by key.
pub struct Fetched {
    pub images: BTreeMap<Key, Pulled>,
    pub charts: BTreeMap<Key, PathBuf>,
}

/// Pulls the registry images the spec lists, then fetches its repository charts.
pub fn fetch_listed(spec: &LoadedSpec, fetcher: &mut Fetcher<'_>, reporter: &dyn Reporter) -> Result<Fetched> {
    let images = fetcher.images(spec, &registry_images(spec)?, reporter)?;
    let mut charts = BTreeMap::new();
    for (key, ch) in remote_charts(spec) {
        charts.insert(key, fetcher.chart(spec, key, ch, reporter)?);
    }
    Ok(Fetched { images, charts })
}

/// `airlock-bundler pull`: fills the cache with every registry image and repository
/// chart of the spec and writes the lock, without building a bundle (prefetch while
/// the network is there). Returns the locked images.
pub fn pull(spec: &LoadedSpec, setup: &PullSetup, reporter: &dyn Reporter) -> Result<Vec<LockedImage>> {
    if registry_images(spec)?.is_empty() && remote_charts(spec).is_empty() {
        return Ok(Vec::new());
    }
    let old = Lock::load(&Lock::path_for(&spec.dir))?;
    let mut fetcher = Fetcher::new(spec, setup, &old)?;
    fetch_listed(spec, &mut fetcher, reporter)?;
    match fetcher.finish()? {
        Some((path, lock)) => {
            lock.save(&path)?;
            Ok(lock.images)
        }
        None => Ok(Vec::new()),
    }
}
