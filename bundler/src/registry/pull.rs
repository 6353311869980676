//! Resolving registry images and filling the cache with what their selected
//! platforms need.
//!
//! Two passes, so transfers run in parallel across images (a typical image list is
//! many images of one or two big layers each):
//! 1. per image, sequentially: the root manifest (by the locked digest when there is
//!    one, else by tag), the platform manifests and configs. These are small.
//! 2. every layer not yet cached, deduplicated across images, downloaded by a bounded
//!    pool of workers.
//!
//! Manifests are cached by digest too, so a locked build with a warm cache makes no
//! request at all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use airlock_format::oci::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use airlock_format::report::{Event, Reporter};
use airlock_format::Sha256Digest;
use serde::Deserialize;

use super::cache::Cache;
use super::client::{Client, Repo};
use crate::sources::{is_index_type, is_manifest_type, ImageReference, Platform};

/// One `docker://` image to pull.
#[derive(Clone, Debug)]
pub struct PullRequest {
    /// The image as the spec writes it (`docker://127.0.0.1:5000/lab/busybox:1.35`), for
    /// errors.
    pub from: String,
    pub source: ImageReference,
    /// `None`: every platform of an index.
    pub platforms: Option<Vec<Platform>>,
    /// The root digest from the lock file; the tag is not looked up when given.
    pub pinned: Option<Sha256Digest>,
}

/// The root descriptor of a pulled image; everything it needs is in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    pub media_type: String,
    pub digest: Sha256Digest,
    pub size: u64,
}

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Sha256Digest,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformDoc>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct PlatformDoc {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

#[derive(Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A blob still to download.
struct Job {
    repo: Repo,
    digest: Sha256Digest,
    size: u64,
    what: String,
}

/// Pulls every image into `cache`; returns their root descriptors in request order.
pub fn fetch_images(
    client: &Client,
    cache: &Cache,
    requests: &[PullRequest],
    reporter: &dyn Reporter,
) -> Result<Vec<Pulled>> {
    let mut jobs: BTreeMap<Sha256Digest, Job> = BTreeMap::new();
    let mut out = Vec::new();
    for req in requests {
        reporter.event(Event::Phase { name: &format!("resolving {}", req.from), total: None });
        out.push(resolve_one(client, cache, req, &mut jobs, reporter)?);
    }
    let jobs: Vec<Job> = jobs.into_values().filter(|j| !cache.has(&j.digest, j.size)).collect();
    if jobs.is_empty() {
        return Ok(out);
    }
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    reporter.event(Event::Phase { name: &format!("downloading {} blobs", jobs.len()), total: Some(total) });
    download_all(client, cache, jobs, reporter)?;
    Ok(out)
}

fn resolve_one(
    client: &Client,
    cache: &Cache,
    req: &PullRequest,
    jobs: &mut BTreeMap<Sha256Digest, Job>,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    let what = format!("image {}", req.from);
    let repo = Repo { registry: req.source.registry.clone(), repository: req.source.repository.clone() };
    let by = req.pinned.or(req.source.digest);
    let (bytes, header_type, digest) = match by.and_then(|d| cache.get_verified(&d).map(|b| (b, d))) {
        Some((b, d)) => (b, String::new(), d),
        None => {
            let reference = match (by, &req.source.tag) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".to_string(),
            };
            let m = client.manifest(&repo, &reference, &what)?;
            cache.put(&m.digest, &m.bytes)?;
            (m.bytes, m.media_type, m.digest)
        }
    };
    let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(&what, format!("manifest {digest} from {repo} is not an image manifest or index: {e}"))
    })?;
    let media_type = root_type(&header_type, &doc);
    let size = bytes.len() as u64;
    if is_index_type(&media_type) {
        for child in doc.manifests.as_deref().unwrap_or_default() {
            let attestation = child.annotations.contains_key("vnd.docker.reference.type")
                || child.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
            let declared = child.platform.as_ref().map(|p| Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone().filter(|v| !v.is_empty()),
            });
            if let Some(wanted) = &req.platforms {
                if attestation || declared.as_ref().is_some_and(|p| !wanted.iter().any(|w| w.matches(p))) {
                    continue;
                }
            }
            if is_index_type(&child.media_type) {
                // Nested indexes are refused by the resolution with a proper message.
                continue;
            }
            let child_bytes = match cache.get_verified(&child.digest) {
                Some(b) => b,
                None => {
                    let m = client.manifest(&repo, &child.digest.to_string(), &what)?;
                    cache.put(&m.digest, &m.bytes)?;
                    m.bytes
                }
            };
            manifest_blobs(
                client,
                cache,
                &repo,
                &what,
                &child_bytes,
                req.platforms.as_deref(),
                declared.is_none(),
                jobs,
                reporter,
            )?;
        }
    } else if is_manifest_type(&media_type) {
        manifest_blobs(client, cache, &repo, &what, &bytes, None, false, jobs, reporter)?;
    }
    // Anything else is not an image; the layout resolution names it properly.
    Ok(Pulled { media_type, digest, size })
}

/// The root's media type: the registry's Content-Type, else the document's own, else
/// its shape (the cache keeps no headers).
fn root_type(header: &str, doc: &Doc) -> String {
    if is_index_type(header) || is_manifest_type(header) {
        return header.to_string();
    }
    if !doc.media_type.is_empty() {
        return doc.media_type.clone();
    }
    if doc.manifests.is_some() {
        MEDIA_TYPE_OCI_INDEX.to_string()
    } else {
        MEDIA_TYPE_OCI_MANIFEST.to_string()
    }
}

/// Caches an image manifest's config and queues its layers. With a platform list and
/// no platform on the index entry, the config decides whether the layers are needed.
#[allow(clippy::too_many_arguments)]
fn manifest_blobs(
    client: &Client,
    cache: &Cache,
    repo: &Repo,
    what: &str,
    bytes: &[u8],
    wanted: Option<&[Platform]>,
    check_config_platform: bool,
    jobs: &mut BTreeMap<Sha256Digest, Job>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(what, format!("a manifest from {repo} is not valid JSON: {e}")))?;
    let Some(config) = doc.config else { return Ok(()) };
    if !cache.has(&config.digest, config.size) {
        client.download_blob(
            repo,
            &config.digest,
            config.size,
            &cache.partial_path(&config.digest),
            &cache.blob_path(&config.digest),
            what,
            reporter,
        )?;
    }
    if let (Some(wanted), true) = (wanted, check_config_platform) {
        let p: Option<ConfigPlatform> =
            cache.get_verified(&config.digest).and_then(|b| serde_json::from_slice(&b).ok());
        let keep = p.is_some_and(|p| {
            let p = Platform { os: p.os, architecture: p.architecture, variant: p.variant.filter(|v| !v.is_empty()) };
            wanted.iter().any(|w| w.matches(&p))
        });
        if !keep {
            return Ok(());
        }
    }
    for l in doc.layers {
        jobs.entry(l.digest).or_insert(Job {
            repo: repo.clone(),
            digest: l.digest,
            size: l.size,
            what: what.to_string(),
        });
    }
    Ok(())
}

/// Downloads with at most `concurrency` transfers at once. The first failure stops
/// new transfers; running ones finish (their partial files stay for a later resume).
fn download_all(client: &Client, cache: &Cache, mut jobs: Vec<Job>, reporter: &dyn Reporter) -> Result<()> {
    // Biggest first, so the long transfers start early and the pool stays busy.
    jobs.sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    jobs.reverse();
    let queue = Mutex::new(jobs);
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let workers = client.options().concurrency.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some(job) = queue.lock().expect("queue lock").pop() else { return };
                let r = client.download_blob(
                    &job.repo,
                    &job.digest,
                    job.size,
                    &cache.partial_path(&job.digest),
                    &cache.blob_path(&job.digest),
                    &job.what,
                    reporter,
                );
                if let Err(e) = r {
                    failed.store(true, Ordering::Relaxed);
                    errors.lock().expect("errors lock").push(e);
                    return;
                }
            });
        }
    });
    match errors.into_inner().expect("errors lock").into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
