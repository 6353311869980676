//! `airlock registry push`: a verified bundle's images into the site's registry.
//!
//! 1. The signed manifest is read and its signature checked; it lists every image with
//!    its reference, root digest and blobs. Each image maps to a repository under the
//!    target prefix ([`target_for`]); its carried cosign signature and attestation
//!    manifests go along as images of their own under cosign's tags
//!    ([`with_cosign_objects`]), so `cosign verify` works against the registry.
//! 2. One `HEAD` per image asks whether the registry already has it under its tag at
//!    the bundle's digest. When every image is there, the push is done: a second push
//!    of the same bundle sends no blob and does not even read the bundle's contents.
//! 3. Otherwise the bundle is verified while it streams, and the blobs of the images
//!    still missing are kept in a private staging directory, each renamed from
//!    `.partial` only when its digest matched; any damage stops the push before a byte
//!    is sent. Nothing unverified ever goes to the registry.
//! 4. The plan: per image, the manifests and blobs it needs. Blobs are checked with
//!    `HEAD`, uploaded once per registry and mounted into the other repositories
//!    that need them, in parallel, in chunks that resume where the registry says an
//!    upload stopped (also across runs: the upload's location is kept in the state
//!    directory until it is committed). Then child manifests, then each root (index or
//!    manifest) under its tag, whole, exactly as signed.
//!
//! `--dry-run` runs 1–4 without sending anything: the report lists what the registry
//! has and what would be sent.

// The push has no target root: it writes only its private staging directory (under
// $TMPDIR) and upload-session files in the user's state directory, never a host path.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use airlock_format::error::{Error, ErrorKind, IoContext, Result};
use airlock_format::manifest::{Entry, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::oci::{MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX};
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, read_manifest, EntrySink};
use airlock_format::report::{Event, Reporter};
use airlock_format::Sha256Digest;
use airlock_registry::{Client, ClientOptions, Mount, Repo, UploadStatus};
use serde::Serialize;

/// Blobs this large are sent while the bundle is still being read; smaller ones
/// (configs, manifests) once the manifests say which is which.
const EARLY_UPLOAD_MIN: u64 = 1 << 20;

/// Default bytes per upload request: a broken transfer loses at most this much.
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

/// What to push where.
pub struct PushOptions {
    /// `REGISTRY[/PREFIX]`, e.g. `harbor.example/platform`.
    pub to: String,
    pub client: ClientOptions,
    /// Bytes per upload request.
    pub chunk_size: u64,
    pub dry_run: bool,
    /// Where unfinished uploads are remembered between runs.
    pub state_dir: PathBuf,
    /// Set (by the binary's signal handler) to stop at the next chunk boundary.
    pub stop: Option<&'static AtomicBool>,
}

/// Where an image goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub repo: Repo,
    /// The tag, or `None` for a reference by digest only (pushed by digest).
    pub tag: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}", self.repo),
            None => write!(f, "{}", self.repo),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageState {
    /// The registry has it under its tag at the bundle's digest.
    Present,
    /// Pushed by this run.
    Pushed,
    /// A dry run: would be pushed.
    WouldPush,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    /// The reference in the bundle (`docker.io/library/nginx:1.27`).
    pub source: String,
    /// Where it is in the registry (`harbor.example/platform/docker.io/library/nginx:1.27`).
    pub target: String,
    pub digest: Sha256Digest,
    pub state: ImageState,
    /// A carried cosign signature or attestation manifest, not an image to run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cosign: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobAction {
    /// The repository has it already.
    Present,
    /// Linked from another repository of the same registry.
    Mounted,
    /// Sent (or, in a dry run, would be sent).
    Uploaded,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlobReport {
    pub digest: Sha256Digest,
    pub size: u64,
    /// Repository (without the registry).
    pub repository: String,
    pub action: BlobAction,
    /// Bytes an earlier, interrupted upload had already delivered.
    #[serde(skip_serializing_if = "is_zero")]
    pub resumed_from: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub bundle: String,
    pub registry: String,
    pub prefix: String,
    pub dry_run: bool,
    pub images: Vec<ImageReport>,
    /// Every blob each missing image needs, per repository (empty when every image was
    /// present: nothing was read beyond the manifest).
    pub blobs: Vec<BlobReport>,
    /// Bytes sent (a dry run: that would be sent) in blob uploads.
    pub bytes_sent: u64,
}

impl PushReport {
    pub fn count(&self, action: BlobAction) -> usize {
        self.blobs.iter().filter(|b| b.action == action).count()
    }
}

/// Splits `REGISTRY[/PREFIX]` into the registry host and the prefix.
pub fn parse_destination(to: &str) -> Result<(String, String)> {
    let to = to.trim_end_matches('/');
    let to = to.strip_prefix("docker://").unwrap_or(to);
    if to.contains("://") {
        return Err(Error::input(to, "is not REGISTRY[/PREFIX]").with_hint(
            "give the registry host (and port) without a scheme, e.g. harbor.example/platform; --plain-http for a registry without TLS",
        ));
    }
    let (host, prefix) = to.split_once('/').unwrap_or((to, ""));
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
        return Err(Error::input(to, format!("`{host}` is not a registry host"))
            .with_hint("write it as HOST[:PORT][/PREFIX], e.g. registry.example:5000/airlock"));
    }
    if !prefix.is_empty() && !prefix.split('/').all(valid_component) {
        return Err(Error::input(to, format!("the prefix `{prefix}` is not a valid repository path"))
            .with_hint("use lower-case letters, digits and . _ - between slashes, e.g. platform/images"));
    }
    Ok((host.to_string(), prefix.to_string()))
}

/// A repository path component as the OCI Distribution spec allows it.
fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
}

/// The mapping: the image's full reference goes under the prefix, its registry host
/// kept as the first path component so images of two upstreams never collide:
/// `docker.io/library/nginx:1.27` → `PREFIX/docker.io/library/nginx:1.27`. A port
/// (`:` is not allowed in a repository path) becomes `_`:
/// `registry.example:5000/app` → `PREFIX/registry.example_5000/app`.
pub fn target_for(registry: &str, prefix: &str, reference: &str) -> Result<Target> {
    let (name_tag, _digest) = reference.split_once('@').unwrap_or((reference, ""));
    let (name, tag) = match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (name_tag, None),
    };
    let mapped = name.to_ascii_lowercase().replace(':', "_");
    let repository = if prefix.is_empty() { mapped } else { format!("{prefix}/{mapped}") };
    if !repository.split('/').all(valid_component) {
        return Err(Error::input(reference, format!("maps to `{repository}`, which is not a valid repository name"))
            .with_hint("choose another --to prefix"));
    }
    Ok(Target { repo: Repo { registry: registry.to_string(), repository }, tag })
}

/// Pushes (or, with `dry_run`, plans) the bundle's images.
pub fn run(
    files: &BundleFiles,
    trusted: &[PublicKey],
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<PushReport> {
    let bundle = files.base.display().to_string();
    let (registry, prefix) = parse_destination(&opts.to)?;
    let (manifest, _, _) = read_manifest(files, Some(trusted))?;
    if manifest.is_delta() {
        return Err(Error::input(&bundle, "is a delta bundle: it carries only what changed since its base")
            .with_hint("push the full bundle of this release"));
    }
    if manifest.images.is_empty() {
        return Err(Error::input(&bundle, "carries no images").with_hint("nothing to push"));
    }
    let client = Client::new(opts.client.clone());
    let all = with_cosign_objects(&manifest.images);
    let mut images = Vec::new();
    for i in &all {
        let target = target_for(&registry, &prefix, &i.reference)?;
        let what = image_what(&i.reference, &target);
        let reference = target.tag.clone().unwrap_or_else(|| i.digest.to_string());
        let have = client.manifest_digest(&target.repo, &reference, &what)?;
        let state = if have == Some(i.digest) {
            ImageState::Present
        } else if opts.dry_run {
            ImageState::WouldPush
        } else {
            ImageState::Pushed
        };
        images.push((i, target, state));
    }
    let mut report = PushReport {
        bundle: bundle.clone(),
        registry: registry.clone(),
        prefix,
        dry_run: opts.dry_run,
        images: images
            .iter()
            .enumerate()
            .map(|(n, (i, t, s))| ImageReport {
                cosign: n >= manifest.images.len(),
                source: i.reference.clone(),
                target: t.to_string(),
                digest: i.digest,
                state: *s,
            })
            .collect(),
        blobs: vec![],
        bytes_sent: 0,
    };
    let missing: Vec<_> = images.iter().filter(|(_, _, s)| *s != ImageState::Present).collect();
    if missing.is_empty() {
        if !opts.dry_run {
            write_referrers_tags(&client, &registry, &report.prefix, &manifest.images)?;
        }
        return Ok(report);
    }

    // Verify the whole bundle, keeping the blobs the missing images need. Large blobs
    // (layers) go to the upload workers as soon as their digest matched, so sending
    // overlaps reading; which repositories need them is known from the signed
    // manifest. Small ones (configs, manifests) wait until the manifests are read and
    // say which is which.
    let mut early: BTreeMap<String, BlobWork> = BTreeMap::new();
    let mut needed = BTreeSet::new();
    for (i, target, _) in &missing {
        for d in i.blobs.iter().filter(|d| **d != i.digest) {
            let path = airlock_format::manifest::blob_path(d);
            needed.insert(path.clone());
            let size = manifest.entry(&path).map(|e| e.size).unwrap_or(0);
            if size >= EARLY_UPLOAD_MIN {
                let w = early.entry(path).or_insert_with(|| (*d, size, vec![], image_what(&i.reference, target)));
                if !w.2.contains(&target.repo) {
                    w.2.push(target.repo.clone());
                }
            }
        }
        needed.insert(airlock_format::manifest::blob_path(&i.digest));
    }
    let scratch = tempfile::Builder::new().prefix("airlock-push-").tempdir().map_err(|e| {
        Error::io(std::env::temp_dir(), e)
            .with_hint("the push keeps the blobs it sends in a temporary directory; point TMPDIR at one with room")
    })?;
    let staged = |d: &Sha256Digest| scratch.path().join(airlock_format::manifest::blob_path(d));
    let queue = Queue::default();
    let results: Mutex<Vec<BlobReport>> = Mutex::new(vec![]);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let sent = AtomicU64::new(0);
    let ids = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    let early_digests: BTreeSet<Sha256Digest> = early.values().map(|w| w.0).collect();
    let ctx = Ctx { client: &client, opts, reporter, sent: &sent, ids: &ids };
    let planned = std::thread::scope(|s| {
        for _ in 0..opts.client.concurrency.max(1) {
            s.spawn(|| loop {
                if failure.lock().expect("lock").is_some() || abort.load(Ordering::SeqCst) {
                    return;
                }
                if ctx.stopped() {
                    failure.lock().expect("lock").get_or_insert_with(|| ctx.stop_error(None));
                    queue.close();
                    return;
                }
                let Some((digest, size, repos, what)) = queue.pop() else { return };
                match ctx.push_blob(&digest, size, &repos, &staged(&digest), &what) {
                    Ok(mut r) => results.lock().expect("lock").append(&mut r),
                    Err(e) => {
                        failure.lock().expect("lock").get_or_insert(e);
                        queue.close();
                        return;
                    }
                }
            });
        }
        let result = (|| -> Result<Vec<ImagePlan>> {
            let mut sink =
                KeepBlobs { dir: scratch.path().to_path_buf(), needed, early, queue: &queue, failure: &failure };
            let outcome = read_bundle(files, trusted, &mut sink, reporter)?;
            if let Some(e) = crate::bundle::staging::damaged(&outcome) {
                return Err(e);
            }
            // The plan: what each missing image needs, per repository.
            let mut plans = Vec::new();
            for (i, target, _) in &missing {
                plans.push(plan_image(i, target, &staged)?);
            }
            // The rest, one work item per blob: the repositories that need it.
            let mut rest: BTreeMap<Sha256Digest, BlobWork> = BTreeMap::new();
            for p in &plans {
                for (d, size) in p.blobs.iter().filter(|(d, _)| !early_digests.contains(d)) {
                    let w = rest.entry(*d).or_insert_with(|| (*d, *size, vec![], p.what.clone()));
                    if !w.2.contains(&p.target.repo) {
                        w.2.push(p.target.repo.clone());
                    }
                }
            }
            rest.into_values().for_each(|w| queue.push(w));
            Ok(plans)
        })();
        // Workers finish what is queued, then stop; after a failure, at once.
        if result.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        queue.close();
        result
    });
    let worker_failure = failure.into_inner().expect("lock");
    let plans = match (planned, worker_failure) {
        // A bundle that failed to verify says so, whatever the workers did.
        (Err(e), _) if e.kind != ErrorKind::Input => return Err(e),
        // Otherwise an upload's failure is the cause (reading stopped because of it).
        (_, Some(e)) => return Err(e),
        (Err(e), None) => return Err(e),
        (Ok(p), None) => p,
    };
    let mut blobs = results.into_inner().expect("lock");
    blobs.sort_by(|a, b| (&a.repository, a.digest).cmp(&(&b.repository, b.digest)));
    report.blobs = blobs;
    report.bytes_sent = sent.load(Ordering::Relaxed);

    // Manifests: children first (a registry refuses an index naming unknown ones),
    // then the root under its tag, each exactly as signed.
    if !opts.dry_run {
        for p in &plans {
            for (d, media_type) in &p.children {
                let bytes = fs::read(staged(d)).at(staged(d))?;
                client.put_manifest(&p.target.repo, &d.to_string(), media_type, &bytes, &p.what)?;
            }
            let bytes = fs::read(staged(&p.digest)).at(staged(&p.digest))?;
            let reference = p.target.tag.clone().unwrap_or_else(|| p.digest.to_string());
            client.put_manifest(&p.target.repo, &reference, &p.media_type, &bytes, &p.what)?;
            // The registry names what it stored: it must be the signed digest.
            match client.manifest_digest(&p.target.repo, &reference, &p.what)? {
                Some(d) if d == p.digest => {}
                other => {
                    return Err(Error::input(
                        &p.what,
                        format!(
                            "registry {registry} stores it as {} instead of {}",
                            other.map(|d| d.to_string()).unwrap_or_else(|| "nothing".into()),
                            p.digest
                        ),
                    )
                    .with_hint(
                        "the registry rewrites manifests (a format conversion policy); turn that off for this project",
                    ))
                }
            }
        }
    }
    if !opts.dry_run {
        write_referrers_tags(&client, &registry, &report.prefix, &manifest.images)?;
    }
    Ok(report)
}

/// After the referrers are pushed, for a registry without the referrers API: the
/// fallback tag `sha256-<hex>` of each image with carried OCI 1.1 referrers, an image
/// index listing them (a registry with the API lists them from their `subject`, and
/// tools read the tag only when the API is missing). What the tag already lists at the
/// site stays listed: the index is merged, not replaced, and left alone when nothing
/// is new.
fn write_referrers_tags(
    client: &Client,
    registry: &str,
    prefix: &str,
    images: &[airlock_format::manifest::Image],
) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Listed {
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    for i in images.iter().filter(|i| i.cosign.as_ref().is_some_and(|c| !c.referrers.is_empty())) {
        let target = target_for(registry, prefix, &i.reference)?;
        let what = format!("referrers index of image {} (to {target})", i.reference);
        // A registry with the referrers API lists them from their `subject` already.
        if client.referrers(&target.repo, &i.digest, &what)?.is_some() {
            continue;
        }
        let tag = airlock_format::manifest::referrers_tag(&i.digest);
        let (have, extra) = match client.manifest_digest(&target.repo, &tag, &what)? {
            Some(d) => {
                let m = client.manifest(&target.repo, &tag, &what)?;
                let listed: Listed = serde_json::from_slice(&m.bytes).map_err(|e| {
                    Error::input(&what, format!("tag {tag} holds no image index: {e}"))
                        .with_hint("the tag is the referrers fallback of OCI 1.1; move what it holds elsewhere")
                })?;
                (Some(d), listed.manifests)
            }
            None => (None, vec![]),
        };
        let index = i.referrers_index(None, &extra);
        if have == Some(Sha256Digest::of(&index)) {
            continue;
        }
        client.put_manifest(&target.repo, &tag, MEDIA_TYPE_OCI_INDEX, &index, &what)?;
    }
    Ok(())
}

/// The bundle's images followed by their carried cosign objects (`.sig`, `.att`),
/// each of those an image of its own under cosign's tag in the same repository, so a
/// push or serve offers them where `cosign verify` looks. Two tags of one image share
/// their objects: each is listed once.
pub fn with_cosign_objects(images: &[airlock_format::manifest::Image]) -> Vec<airlock_format::manifest::Image> {
    let mut all: Vec<_> = images.to_vec();
    let mut seen = BTreeSet::new();
    for o in images.iter().flat_map(|i| i.cosign_images().into_iter().chain(i.referrer_images())) {
        if seen.insert(o.reference.clone()) {
            all.push(o);
        }
    }
    all
}

fn image_what(reference: &str, target: &Target) -> String {
    format!("image {reference} (to {target})")
}

/// One blob to put into the registry: digest, size, the repositories that need it
/// and the first image that does (for messages).
type BlobWork = (Sha256Digest, u64, Vec<Repo>, String);

/// What one image needs in its repository.
struct ImagePlan {
    target: Target,
    what: String,
    digest: Sha256Digest,
    media_type: String,
    /// Child manifests of an index, with their media types.
    children: Vec<(Sha256Digest, String)>,
    /// Configs and layers, with sizes.
    blobs: Vec<(Sha256Digest, u64)>,
}

#[derive(serde::Deserialize)]
struct Doc {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Desc>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

#[derive(serde::Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

fn plan_image(
    i: &airlock_format::manifest::Image,
    target: &Target,
    staged: &dyn Fn(&Sha256Digest) -> PathBuf,
) -> Result<ImagePlan> {
    let what = image_what(&i.reference, target);
    let read = |d: &Sha256Digest| -> Result<Doc> {
        let p = staged(d);
        let bytes = fs::read(&p).at(&p)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(&what, format!("its manifest {d} is not valid JSON: {e}"))
                .with_hint("the bundle was built wrongly; ask the vendor for a new one")
        })
    };
    let digest_of = |s: &str| -> Result<Sha256Digest> {
        s.parse().map_err(|_| {
            Error::corrupt(&what, format!("names `{s}`, which is not a sha256 digest"))
                .with_hint("the bundle was built wrongly; ask the vendor for a new one")
        })
    };
    let mut plan = ImagePlan {
        target: target.clone(),
        what: what.clone(),
        digest: i.digest,
        media_type: i.media_type.clone(),
        children: vec![],
        blobs: vec![],
    };
    let add_manifest = |doc: Doc, plan: &mut ImagePlan| -> Result<()> {
        for d in doc.config.iter().chain(&doc.layers) {
            let digest = digest_of(&d.digest)?;
            if !plan.blobs.iter().any(|(x, _)| *x == digest) {
                plan.blobs.push((digest, d.size));
            }
        }
        Ok(())
    };
    let root = read(&i.digest)?;
    let is_index = i.media_type == MEDIA_TYPE_OCI_INDEX
        || i.media_type == MEDIA_TYPE_DOCKER_LIST
        || root.media_type.as_deref().is_some_and(|m| m == MEDIA_TYPE_OCI_INDEX || m == MEDIA_TYPE_DOCKER_LIST);
    if is_index {
        for m in &root.manifests {
            let d = digest_of(&m.digest)?;
            // The signed manifest lists every blob the image carries: a child outside
            // that list was not bundled (never the case for an index kept whole).
            if !i.blobs.contains(&d) {
                return Err(Error::corrupt(&what, format!("its index names {d}, which the bundle does not carry"))
                    .with_hint("the bundle was built wrongly; ask the vendor for a new one"));
            }
            let child = read(&d)?;
            add_manifest(child, &mut plan)?;
            plan.children.push((d, m.media_type.clone()));
        }
    } else {
        add_manifest(root, &mut plan)?;
    }
    for (d, _) in &plan.blobs {
        if !i.blobs.contains(d) {
            return Err(Error::corrupt(&what, format!("its manifest names blob {d}, which the bundle does not carry"))
                .with_hint("the bundle was built wrongly; ask the vendor for a new one"));
        }
    }
    Ok(plan)
}

/// Keeps the verified bytes of the blobs a push needs, and hands the large ones to the
/// upload workers the moment they verified.
struct KeepBlobs<'a> {
    dir: PathBuf,
    needed: BTreeSet<String>,
    early: BTreeMap<String, BlobWork>,
    queue: &'a Queue,
    failure: &'a Mutex<Option<Error>>,
}

impl KeepBlobs<'_> {
    fn partial(&self, e: &Entry) -> PathBuf {
        self.dir.join(format!("{}.partial", e.path))
    }
}

impl EntrySink for KeepBlobs<'_> {
    fn manifest(&mut self, _: &Manifest, _: &PublicKey) -> Result<()> {
        let blobs = self.dir.join("oci/blobs/sha256");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&blobs).at(&blobs)
    }

    fn open(&mut self, e: &Entry) -> Result<Option<Box<dyn Write>>> {
        if !self.needed.contains(&e.path) {
            return Ok(None);
        }
        let p = self.partial(e);
        // create_new + O_NOFOLLOW: never follow or reuse anything already there.
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&p)
            .at(&p)?;
        Ok(Some(Box::new(BufWriter::with_capacity(1 << 20, f))))
    }

    fn finish(&mut self, e: &Entry, verified: bool) -> Result<()> {
        if !self.needed.contains(&e.path) {
            return Ok(());
        }
        let p = self.partial(e);
        if !verified {
            let _ = fs::remove_file(&p);
            return Ok(());
        }
        let dest = self.dir.join(&e.path);
        fs::rename(&p, &dest).at(&dest)?;
        if let Some(w) = self.early.remove(&e.path) {
            self.queue.push(w);
        }
        // An upload failed: reading on would be wasted.
        if self.failure.lock().expect("lock").is_some() {
            return Err(Error::input(&e.path, "stopped: an upload failed"));
        }
        Ok(())
    }
}

/// The upload workers' queue: blobs verified and ready, until closed.
#[derive(Default)]
struct Queue {
    state: Mutex<(std::collections::VecDeque<BlobWork>, bool)>,
    ready: std::sync::Condvar,
}

impl Queue {
    fn push(&self, w: BlobWork) {
        self.state.lock().expect("lock").0.push_back(w);
        self.ready.notify_one();
    }

    /// No more work will come.
    fn close(&self) {
        self.state.lock().expect("lock").1 = true;
        self.ready.notify_all();
    }

    /// The next blob; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<BlobWork> {
        let mut s = self.state.lock().expect("lock");
        loop {
            if let Some(w) = s.0.pop_front() {
                return Some(w);
            }
            if s.1 {
                return None;
            }
            s = self.ready.wait(s).expect("lock");
        }
    }
}

/// What every blob transfer shares.
struct Ctx<'a> {
    client: &'a Client,
    opts: &'a PushOptions,
    reporter: &'a dyn Reporter,
    sent: &'a AtomicU64,
    ids: &'a AtomicU64,
}

impl Ctx<'_> {
    /// Puts blob `digest` into every repository of `repos`: checked with `HEAD` first;
    /// uploaded to the first that lacks it, mounted into the rest.
    fn push_blob(
        &self,
        digest: &Sha256Digest,
        size: u64,
        repos: &[Repo],
        file: &Path,
        what: &str,
    ) -> Result<Vec<BlobReport>> {
        let mut out = Vec::new();
        let mut source: Option<&Repo> = None;
        let mut pending = Vec::new();
        for repo in repos {
            if self.client.has_blob(repo, digest, what)? {
                source.get_or_insert(repo);
                out.push(report(digest, size, repo, BlobAction::Present, 0));
            } else {
                pending.push(repo);
            }
        }
        for repo in pending {
            if self.opts.dry_run {
                let action = if source.is_some() { BlobAction::Mounted } else { BlobAction::Uploaded };
                if action == BlobAction::Uploaded {
                    self.sent.fetch_add(size, Ordering::Relaxed);
                    source = Some(repo);
                }
                out.push(report(digest, size, repo, action, 0));
                continue;
            }
            let location = match source {
                Some(from) => match self.client.mount_blob(repo, digest, &from.repository, what)? {
                    Mount::Mounted => {
                        out.push(report(digest, size, repo, BlobAction::Mounted, 0));
                        continue;
                    }
                    // Not mounted: the registry opened an upload instead.
                    Mount::Upload(l) => Some(l),
                },
                None => None,
            };
            let resumed = self.upload(repo, digest, size, file, location, what)?;
            out.push(report(digest, size, repo, BlobAction::Uploaded, resumed));
            source = Some(repo);
        }
        Ok(out)
    }

    /// Uploads the blob in chunks, continuing an upload an earlier run left when the
    /// registry still has it. Returns the offset it resumed from.
    fn upload(
        &self,
        repo: &Repo,
        digest: &Sha256Digest,
        size: u64,
        file: &Path,
        opened: Option<String>,
        what: &str,
    ) -> Result<u64> {
        let session = self.session_file(repo, digest);
        let mut resumed_from = 0;
        let (mut location, mut offset) = match fs::read_to_string(&session).ok().map(|s| s.trim().to_string()) {
            Some(l) if !l.is_empty() => match self.client.upload_status(repo, &l, what)? {
                UploadStatus::Offset(n) if n <= size => {
                    resumed_from = n;
                    (l, n)
                }
                _ => (self.open_upload(repo, opened, what)?, 0),
            },
            _ => (self.open_upload(repo, opened, what)?, 0),
        };
        self.remember(&session, &location)?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let name = format!("{} {}", repo.repository, &digest.hex()[..12]);
        self.reporter.event(Event::TransferStart { id, name: &name, total: Some(size) });
        self.reporter.event(Event::TransferProgress { id, bytes: offset });
        let (mut failures, mut restarts) = (0, 0);
        while offset < size {
            if self.stopped() {
                self.reporter.event(Event::TransferDone { id });
                return Err(self.stop_error(Some((what, offset, size))));
            }
            let len = (size - offset).min(self.opts.chunk_size.max(1));
            match self.client.upload_chunk(repo, &location, file, offset, len, what) {
                Ok(next) => {
                    offset += len;
                    location = next;
                    // Retries count per chunk: a long upload over a flaky link may need
                    // a few along the way.
                    failures = 0;
                    self.remember(&session, &location)?;
                    self.sent.fetch_add(len, Ordering::Relaxed);
                    self.reporter.event(Event::TransferProgress { id, bytes: len });
                }
                Err(e) if failures < self.opts.client.retries => {
                    // Part of the chunk may have arrived: ask, then go on from there.
                    failures += 1;
                    std::thread::sleep(self.opts.client.backoff.saturating_mul(1 << failures.min(8)));
                    match self.client.upload_status(repo, &location, what) {
                        Ok(UploadStatus::Offset(n)) if n <= size => offset = n,
                        // The registry dropped the upload (distribution does when it holds
                        // part of a chunk): start the blob over, a bounded number of times.
                        Ok(_) if restarts < self.opts.client.retries => {
                            restarts += 1;
                            location = self.open_upload(repo, None, what)?;
                            offset = 0;
                            self.remember(&session, &location)?;
                        }
                        Ok(_) => {
                            self.reporter.event(Event::TransferDone { id });
                            return Err(e);
                        }
                        // The registry cannot say either: the next attempt tells.
                        Err(_) => drop(e),
                    }
                }
                Err(e) => {
                    self.reporter.event(Event::TransferDone { id });
                    return Err(e);
                }
            }
        }
        let done = self.client.finish_upload(repo, &location, digest, what);
        self.reporter.event(Event::TransferDone { id });
        done?;
        let _ = fs::remove_file(&session);
        Ok(resumed_from)
    }

    fn stopped(&self) -> bool {
        self.opts.stop.is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn stop_error(&self, at: Option<(&str, u64, u64)>) -> Error {
        let (subject, cause) = match at {
            Some((what, offset, size)) => {
                (what.to_string(), format!("the push was stopped after {offset} of {size} bytes of a blob"))
            }
            None => (self.opts.to.clone(), "the push was stopped".to_string()),
        };
        Error::input(subject, cause)
            .with_hint("run the same command again: finished blobs are not sent again and each upload continues from the last chunk the registry holds")
    }

    fn open_upload(&self, repo: &Repo, opened: Option<String>, what: &str) -> Result<String> {
        match opened {
            Some(l) => Ok(l),
            None => self.client.start_upload(repo, what),
        }
    }

    /// The file that keeps an unfinished upload's location: one per registry,
    /// repository and blob.
    fn session_file(&self, repo: &Repo, digest: &Sha256Digest) -> PathBuf {
        let key = Sha256Digest::of(format!("{repo}@{digest}").as_bytes());
        self.opts.state_dir.join(format!("{}.upload", &key.hex()[..32]))
    }

    /// Writes the upload location (0600: it is a handle on the upload) atomically.
    fn remember(&self, session: &Path, location: &str) -> Result<()> {
        let dir = &self.opts.state_dir;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).at(dir)?;
        let tmp = session.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(location.as_bytes()).at(&tmp)?;
        drop(f);
        fs::rename(&tmp, session).at(session)
    }
}

fn report(digest: &Sha256Digest, size: u64, repo: &Repo, action: BlobAction, resumed_from: u64) -> BlobReport {
    BlobReport { digest: *digest, size, repository: repo.repository.clone(), action, resumed_from }
}

/// `$XDG_STATE_HOME/airlock/push`, else `~/.local/state/airlock/push`, else under the
/// system temp dir.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("airlock/push");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/airlock/push");
    }
    std::env::temp_dir().join("airlock-push-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_map_under_the_prefix_with_their_registry_host_kept() {
        let t = target_for("harbor.example", "platform", "docker.io/library/nginx:1.27").unwrap();
        assert_eq!(t.to_string(), "harbor.example/platform/docker.io/library/nginx:1.27");
        let t = target_for("r:5000", "", "registry.example:5000/team/app:v1").unwrap();
        assert_eq!(t.repo.repository, "registry.example_5000/team/app");
        assert_eq!(t.tag.as_deref(), Some("v1"));
        let t = target_for("r:5000", "a/b", "quay.io/x/y@sha256:0123").unwrap();
        assert_eq!((t.repo.repository.as_str(), t.tag), ("a/b/quay.io/x/y", None));
    }

    #[test]
    fn the_push_mapping_is_the_root_registries_yaml_rewrites_to() {
        // registries.yaml rewrites `<upstream>/<path>` to `<pushed_root>/<path>`: it must
        // be where the push put the image, or the nodes pull nothing.
        for (prefix, reference) in [
            ("platform", "docker.io/library/nginx:1.27"),
            ("", "quay.io/keycloak/keycloak:26.5.6"),
            ("a/b", "registry.example:5000/team/app:2"),
        ] {
            let (upstream, path) = reference.split_once('/').unwrap();
            let (path, _) = path.rsplit_once(':').unwrap();
            let root = crate::render::distribution::pushed_root(prefix, upstream);
            assert_eq!(target_for("h", prefix, reference).unwrap().repo.repository, format!("{root}/{path}"));
        }
    }

    #[test]
    fn destinations_split_into_host_and_prefix_and_bad_ones_are_refused_with_a_hint() {
        assert_eq!(
            parse_destination("harbor.example/platform/").unwrap(),
            ("harbor.example".into(), "platform".into())
        );
        assert_eq!(parse_destination("127.0.0.1:5000").unwrap(), ("127.0.0.1:5000".into(), String::new()));
        for bad in ["https://h/x", "/x", "h/Upper", "h/a//b"] {
            let e = parse_destination(bad).unwrap_err();
            assert!(e.hint.is_some(), "{bad}: {e}");
        }
    }
}
