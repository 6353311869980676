//! Reading local image and chart sources into one model the bundle planner consumes.
//!
//! An image source is named with skopeo's transport syntax (`oci:DIR[:NAME]`,
//! `oci-archive:FILE[:NAME]`, `docker-archive:FILE[:REF]`); whatever the transport, it
//! is resolved into a [`LoadedImage`]: the root descriptor the bundle's `index.json`
//! will name, and every blob the image needs, each pointing at its bytes *in place*
//! (a file, or a byte range of an uncompressed tar). Nothing is copied or extracted,
//! and big blobs are not hashed here because the bundle writer hashes every blob while
//! it streams and rejects a mismatch; only the small JSON documents we must parse are
//! verified against their digests on the way in.
//!
//! Where things live:
//! - [`image_ref`]: parsing and normalizing the target reference.
//! - [`oci_layout`]: OCI layout directories, and the index/manifest resolution shared
//!   by every OCI-shaped source.
//! - [`oci_archive`]: tar files of a layout (and the tar member index the
//!   docker-archive reader uses too).
//! - [`docker_archive`]: `docker save` / `skopeo copy docker-archive:` tars, converted
//!   to an OCI manifest.
//! - [`chart`]: Helm charts, as a directory (packaged deterministically) or a `.tgz`.
//!
//! Platform selection and the "no partial index" rule live here, because they apply to
//! every transport alike.

pub mod chart;
pub mod docker_archive;
pub mod image_ref;
pub mod oci_archive;
pub mod oci_layout;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::oci::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;
use serde::{Deserialize, Serialize};

pub use chart::{load_chart, LoadedChart};
pub use image_ref::{normalize_reference, ImageReference};

/// One blob a bundle will carry in its OCI layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: Sha256Digest,
    pub size: u64,
    pub media_type: String,
    pub content: Content,
}

/// One image as it will appear in the bundle's OCI layout index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// Full normalized reference the image carries in the bundle,
    /// e.g. `docker.io/library/nginx:1.27`.
    pub reference: String,
    /// Media type of the root descriptor: an OCI/Docker manifest or index.
    pub media_type: String,
    /// Digest of the root descriptor.
    pub digest: Sha256Digest,
    pub size: u64,
    /// `linux/amd64`, `linux/arm64/v8`, ...: one per platform manifest kept.
    pub platforms: Vec<String>,
    /// Every blob needed, the root included, each once, sorted by digest.
    pub blobs: Vec<Blob>,
}

/// What the bundle spec says about one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The name the image carries in the bundle (normalized before use).
    pub reference: String,
    /// Where to read it from, in skopeo's transport syntax.
    pub from: String,
    /// Keep only these platforms (`None`: keep every platform of an index).
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
}

/// Upper bound for any JSON document (index, manifest, config) read into memory. The
/// distribution spec caps manifests at 4 MiB; configs of real images stay far below.
pub(crate) const MAX_JSON_BYTES: u64 = 16 << 20;

// ---------------------------------------------------------------------------------
// Source syntax

/// A parsed `from:` value. Paths are already resolved against the spec's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// `oci:DIR[:REFNAME]`: an OCI image layout directory.
    OciLayout { dir: PathBuf, selector: Option<String> },
    /// `oci-archive:FILE[:REFNAME]`: an uncompressed tar of an OCI image layout.
    OciArchive { file: PathBuf, selector: Option<String> },
    /// `docker-archive:FILE[:REFERENCE|:@INDEX]`: `docker save` / skopeo output.
    DockerArchive { file: PathBuf, selector: Option<String> },
    /// `docker://REFERENCE`: an image in an OCI Distribution registry.
    Registry { reference: String },
}

const SUPPORTED_TRANSPORTS: &str =
    "docker://REFERENCE, oci:DIR[:NAME], oci-archive:FILE[:NAME], docker-archive:FILE[:REFERENCE]";

impl ImageSource {
    /// Parses skopeo's transport syntax. As in skopeo, the path ends at the first `:`
    /// after the transport, so everything after it (which may itself contain `:`, as
    /// in `oci:dir:docker.io/x:1`) is the image selector.
    pub fn parse(from: &str, base_dir: &Path) -> Result<Self> {
        let subject = || format!("image source `{from}`");
        let Some((transport, rest)) = from.split_once(':') else {
            return Err(Error::input(subject(), "has no transport prefix")
                .with_hint(format!("write it as one of {SUPPORTED_TRANSPORTS}")));
        };
        if transport == "docker" {
            let reference = rest
                .strip_prefix("//")
                .ok_or_else(|| Error::input(subject(), "the docker transport is written docker://REFERENCE"))?;
            return Ok(ImageSource::Registry { reference: reference.to_string() });
        }
        if !matches!(transport, "oci" | "oci-archive" | "docker-archive") {
            return Err(Error::input(subject(), format!("unknown transport `{transport}:`"))
                .with_hint(format!("supported: {SUPPORTED_TRANSPORTS}")));
        }
        let (path, selector) = match rest.split_once(':') {
            Some((p, s)) => (p, (!s.is_empty()).then(|| s.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(Error::input(subject(), "the path is empty")
                .with_hint(format!("write it as one of {SUPPORTED_TRANSPORTS}")));
        }
        let path = base_dir.join(path);
        Ok(match transport {
            "oci" => ImageSource::OciLayout { dir: path, selector },
            "oci-archive" => ImageSource::OciArchive { file: path, selector },
            _ => ImageSource::DockerArchive { file: path, selector },
        })
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, path, selector) = match self {
            ImageSource::OciLayout { dir, selector } => ("oci", dir, selector),
            ImageSource::OciArchive { file, selector } => ("oci-archive", file, selector),
            ImageSource::DockerArchive { file, selector } => ("docker-archive", file, selector),
            ImageSource::Registry { reference } => return write!(f, "docker://{reference}"),
        };
        write!(f, "{transport}:{}", path.display())?;
        if let Some(s) = selector {
            write!(f, ":{s}")?;
        }
        Ok(())
    }
}

/// Names the image and where it comes from, for error subjects.
pub(crate) struct Ctx {
    pub reference: String,
    pub source: String,
}

impl Ctx {
    pub fn subject(&self) -> String {
        format!("image {} (from {})", self.reference, self.source)
    }
}

/// `path` (below `dir`) once symlinks are followed, refused when that leaves `dir`: what
/// a bundle takes from a source directory (an OCI layout's blobs, a spec's files) is
/// what is in it, never a file a link inside it points at elsewhere (`/etc/shadow`).
/// A link that stays inside is followed. `what` names the input in the error.
pub fn contained(dir: &Path, path: &Path, what: &str) -> Result<PathBuf> {
    let real_dir = std::fs::canonicalize(dir).at(dir)?;
    let real = std::fs::canonicalize(path).map_err(|e| {
        Error::input(path.display().to_string(), format!("{what} cannot be resolved: {e}"))
            .with_hint("a dangling symlink or a loop: put the file itself there")
    })?;
    if !real.starts_with(&real_dir) {
        return Err(Error::unsafe_entry(
            path.display().to_string(),
            format!("{what} is a symlink to {}, outside {}", real.display(), dir.display()),
        )
        .with_hint("copy the file into that directory; a bundle takes only what is in its sources"));
    }
    Ok(real)
}

/// Loads one image: parses the reference and the source, resolves the selected image
/// and applies the platform selection.
pub fn load_image(spec: &ImageSpec, base_dir: &Path) -> Result<LoadedImage> {
    load_image_with(spec, base_dir, &mut SourceCache::default())
}

/// What [`load_image_with`] keeps between images: each OCI layout directory's index
/// and each archive's member list and index, read once, so N images taken from one
/// source cost O(N), not O(N²).
#[derive(Default)]
pub struct SourceCache {
    layouts: HashMap<PathBuf, (oci_layout::LayoutDir, oci_layout::LayoutIndex)>,
    oci_archives: HashMap<PathBuf, oci_archive::OpenArchive>,
    docker_archives: HashMap<PathBuf, docker_archive::DockerArchive>,
}

/// [`load_image`], reusing what `cache` already read.
pub fn load_image_with(spec: &ImageSpec, base_dir: &Path, cache: &mut SourceCache) -> Result<LoadedImage> {
    let reference = ImageReference::parse(&spec.reference)?;
    let source = ImageSource::parse(&spec.from, base_dir)?;
    let ctx = Ctx { reference: reference.to_string(), source: source.to_string() };
    let wanted = wanted_platforms(spec, &ctx.subject())?;
    let resolved = match &source {
        ImageSource::OciLayout { dir, selector } => {
            let (store, index) = match cache.layouts.entry(dir.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => {
                    let store = oci_layout::LayoutDir::new(dir);
                    let index = oci_layout::LayoutIndex::read(&store, &ctx)?;
                    v.insert((store, index))
                }
            };
            oci_layout::resolve_in(store, index, selector.as_deref(), &ctx)?
        }
        ImageSource::OciArchive { file, selector } => {
            let archive = match cache.oci_archives.entry(file.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => v.insert(oci_archive::open(file, &ctx)?),
            };
            oci_archive::resolve(archive, selector.as_deref(), &ctx)?
        }
        ImageSource::DockerArchive { file, selector } => {
            let archive = match cache.docker_archives.entry(file.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => v.insert(docker_archive::open(file, &ctx)?),
            };
            docker_archive::resolve(archive, selector.as_deref(), &ctx)?
        }
        ImageSource::Registry { .. } => {
            // `create` pulls registry images first (all at once, in parallel) and
            // hands them to `load_pulled`; a lone call has no cache or credentials.
            return Err(Error::input(ctx.subject(), "registry images must be pulled before they are loaded")
                .with_hint("build the bundle with `airlock-bundler create`, which pulls docker:// sources"));
        }
    };
    finish(resolved, &reference, wanted.as_deref(), &ctx)
}

/// The platforms an image spec asks for, parsed (`None`: all); errors name `subject`.
pub fn wanted_platforms(spec: &ImageSpec, subject: &str) -> Result<Option<Vec<Platform>>> {
    let subject = || subject.to_string();
    match &spec.platforms {
        None => Ok(None),
        Some(list) if list.is_empty() => Err(Error::input(subject(), "`platforms` is an empty list")
            .with_hint("list the platforms to keep (e.g. [linux/amd64]) or drop `platforms` to keep all")),
        Some(list) => Ok(Some(
            list.iter().map(|p| Platform::parse(p).map_err(|e| e.within(subject()))).collect::<Result<Vec<_>>>()?,
        )),
    }
}

/// Loads a registry image that [`crate::registry::fetch_images`] put into `cache`:
/// the same resolution, platform selection and checks as for a local layout.
pub fn load_pulled(
    spec: &ImageSpec,
    pulled: &crate::registry::Pulled,
    cache: &crate::registry::Cache,
) -> Result<LoadedImage> {
    let reference = ImageReference::parse(&spec.reference)?;
    let ctx = Ctx { reference: reference.to_string(), source: spec.from.clone() };
    let wanted = wanted_platforms(spec, &ctx.subject())?;
    let desc = Descriptor::new(&pulled.media_type, pulled.digest, pulled.size);
    let resolved = oci_layout::resolve_root(cache, &desc, &ctx)?;
    finish(resolved, &reference, wanted.as_deref(), &ctx)
}

// ---------------------------------------------------------------------------------
// The resolved shape every transport produces

/// An OCI descriptor as found in (or written to) an index or manifest. Field order is
/// the serialization order, so generated JSON is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    /// Empty when the source omitted it (then inferred from context).
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub digest: Sha256Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Sha256Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
            artifact_type: None,
        }
    }
}

/// The `platform` object of an index descriptor (OCI field order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlatformJson {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// Why one platform manifest cannot be used. `missing` separates an incomplete source
/// (a blob is simply absent: a partial index) from damaged content.
#[derive(Debug)]
pub(crate) struct Problem {
    pub missing: bool,
    pub error: Error,
}

/// One image manifest, either the root or a child of the root index.
#[derive(Debug)]
pub(crate) struct ManifestEntry {
    /// The descriptor naming it (mediaType filled in), as the parent index has it.
    pub descriptor: Descriptor,
    /// From the index descriptor, else from the image config.
    pub platform: Option<Platform>,
    /// The manifest blob, its config and layers; or why they are not usable.
    pub outcome: std::result::Result<Vec<Blob>, Problem>,
}

impl ManifestEntry {
    /// BuildKit attestation manifests (`unknown/unknown`) ride along in an index but
    /// are not a platform anyone runs.
    fn is_attestation(&self) -> bool {
        self.descriptor.annotations.contains_key("vnd.docker.reference.type")
            || self.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }

    fn platform_label(&self) -> String {
        match &self.platform {
            Some(p) => p.to_string(),
            None => format!("(unknown platform, manifest {})", self.descriptor.digest),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Resolved {
    Manifest(ManifestEntry),
    Index { descriptor: Descriptor, blob: Blob, manifests: Vec<ManifestEntry> },
}

// ---------------------------------------------------------------------------------
// Platforms

/// `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `linux/amd64` or `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
        if !ok {
            return Err(Error::input(format!("platform `{s}`"), "is not of the form os/architecture[/variant]")
                .with_hint("write it like linux/amd64 or linux/arm64/v8"));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    pub(crate) fn from_json(p: &PlatformJson) -> Self {
        Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone().filter(|v| !v.is_empty()),
        }
    }

    /// containerd's normalization, so `linux/arm64` matches `linux/arm64/v8` and
    /// `x86_64` matches `amd64`.
    fn normalized(&self) -> (String, String, String) {
        let os = self.os.to_ascii_lowercase();
        let variant = self.variant.clone().unwrap_or_default().to_ascii_lowercase();
        let (arch, variant) = match (self.architecture.to_ascii_lowercase().as_str(), variant.as_str()) {
            ("x86_64" | "x86-64" | "amd64", "" | "v1") => ("amd64".to_string(), String::new()),
            ("x86_64" | "x86-64", v) => ("amd64".to_string(), v.to_string()),
            ("aarch64" | "arm64", "" | "v8" | "8") => ("arm64".to_string(), "v8".to_string()),
            ("aarch64", v) => ("arm64".to_string(), v.to_string()),
            ("armhf", _) => ("arm".to_string(), "v7".to_string()),
            ("armel", _) => ("arm".to_string(), "v6".to_string()),
            ("arm", "") => ("arm".to_string(), "v7".to_string()),
            ("i386" | "i686", v) => ("386".to_string(), v.to_string()),
            (a, v) => (a.to_string(), v.to_string()),
        };
        (os, arch, variant)
    }

    pub fn matches(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Platform selection and assembly

/// The root descriptor, the platforms kept and their blobs (not yet deduplicated).
struct Selection {
    root: Descriptor,
    platforms: Vec<String>,
    blobs: Vec<Blob>,
}

fn finish(
    resolved: Resolved,
    reference: &ImageReference,
    wanted: Option<&[Platform]>,
    ctx: &Ctx,
) -> Result<LoadedImage> {
    let Selection { root, platforms, blobs: list } = match resolved {
        Resolved::Manifest(m) => single_manifest(m, wanted, ctx)?,
        Resolved::Index { descriptor, blob, manifests } => match wanted {
            None => whole_index(descriptor, blob, manifests, ctx)?,
            Some(wanted) => select_platforms(descriptor, blob, manifests, wanted, ctx)?,
        },
    };
    if let Some(pin) = reference.digest {
        if pin != root.digest {
            let mut hint = "pin the digest the source really holds, or drop the @sha256: part".to_string();
            if wanted.is_some() {
                hint.push_str("; with `platforms:` the root becomes the selected platform manifest (or a new index), so pin that digest");
            }
            return Err(Error::input(
                ctx.subject(),
                format!("the reference pins {pin} but the image from the source is {}", root.digest),
            )
            .with_hint(hint));
        }
    }
    // Platforms share layers: each blob once, sorted by digest.
    let mut blobs: BTreeMap<Sha256Digest, Blob> = BTreeMap::new();
    for b in list {
        blobs.entry(b.digest).or_insert(b);
    }
    Ok(LoadedImage {
        reference: reference.to_string(),
        media_type: root.media_type,
        digest: root.digest,
        size: root.size,
        platforms,
        blobs: blobs.into_values().collect(),
    })
}

fn single_manifest(m: ManifestEntry, wanted: Option<&[Platform]>, ctx: &Ctx) -> Result<Selection> {
    let label = m.platform_label();
    for w in wanted.unwrap_or_default() {
        if !m.platform.as_ref().is_some_and(|p| w.matches(p)) {
            return Err(unknown_platform(ctx, w, &[label]));
        }
    }
    let blobs = m.outcome.map_err(|p| p.error)?;
    Ok(Selection { root: m.descriptor, platforms: vec![label], blobs })
}

/// No `platforms:`: keep the index as it is, which needs every platform complete,
/// because K3s imports with all platforms and one absent platform fails the whole
/// import on site. So refuse it here, naming every gap.
fn whole_index(
    descriptor: Descriptor,
    index_blob: Blob,
    manifests: Vec<ManifestEntry>,
    ctx: &Ctx,
) -> Result<Selection> {
    let missing: Vec<String> =
        manifests.iter().filter(|m| matches!(&m.outcome, Err(p) if p.missing)).map(|m| m.platform_label()).collect();
    if let Some(first) = manifests.iter().find_map(|m| m.outcome.as_ref().err().filter(|p| p.missing)) {
        let present: Vec<String> =
            manifests.iter().filter(|m| m.outcome.is_ok() && !m.is_attestation()).map(|m| m.platform_label()).collect();
        let hint = if present.is_empty() {
            "copy the image again with every platform (`skopeo copy --all …`)".to_string()
        } else {
            format!(
                "keep only complete platforms with `platforms: [{}]`, or copy the image again with `skopeo copy --all …`",
                present.join(", ")
            )
        };
        return Err(Error::input(
            ctx.subject(),
            format!(
                "partial index: platform {} blobs missing; K3s imports all platforms and would fail ({})",
                missing.join(", "),
                first.error.cause
            ),
        )
        .with_hint(hint));
    }
    let mut platforms = Vec::new();
    let mut blobs = vec![index_blob];
    for m in manifests {
        if !m.is_attestation() {
            platforms.push(m.platform_label());
        }
        blobs.extend(m.outcome.map_err(|p| p.error)?);
    }
    Ok(Selection { root: descriptor, platforms, blobs })
}

/// `platforms: [..]`: keep the matching manifests. One becomes the root itself;
/// several get a new index; all of them keep the source index unchanged, so its
/// digest (and any pin on it) stays valid.
fn select_platforms(
    descriptor: Descriptor,
    index_blob: Blob,
    manifests: Vec<ManifestEntry>,
    wanted: &[Platform],
    ctx: &Ctx,
) -> Result<Selection> {
    let selectable = |m: &ManifestEntry| !m.is_attestation() && m.platform.is_some();
    let available: Vec<String> = manifests.iter().filter(|m| selectable(m)).map(|m| m.platform_label()).collect();
    for w in wanted {
        let found = manifests.iter().any(|m| selectable(m) && m.platform.as_ref().is_some_and(|p| w.matches(p)));
        if !found {
            // A manifest that cannot be read has no platform to match: the wanted one
            // may well be it, so its own error is the real cause, as without
            // `platforms:`, not "not in this image".
            let unreadable = manifests.into_iter().find(|m| m.platform.is_none() && m.outcome.is_err());
            if let Some(Err(problem)) = unreadable.map(|m| m.outcome) {
                return Err(problem.error);
            }
            return Err(unknown_platform(ctx, w, &available));
        }
    }
    let total = manifests.len();
    let selected: Vec<ManifestEntry> = manifests
        .into_iter()
        .filter(|m| selectable(m) && m.platform.as_ref().is_some_and(|p| wanted.iter().any(|w| w.matches(p))))
        .collect();
    let keep_index = selected.len() == total;
    let mut platforms = Vec::new();
    let mut descriptors = Vec::new();
    let mut blobs = Vec::new();
    for m in selected {
        let label = m.platform_label();
        blobs.extend(m.outcome.map_err(|p| {
            if p.missing {
                Error::input(ctx.subject(), format!("platform {label} blobs missing: {}", p.error.cause))
                    .with_hint("select only platforms whose blobs the source holds, or copy the image again with `skopeo copy --all …`")
            } else {
                p.error
            }
        })?);
        platforms.push(label);
        descriptors.push(m.descriptor);
    }
    let root = if keep_index {
        blobs.push(index_blob);
        descriptor
    } else if descriptors.len() == 1 {
        descriptors.pop().expect("one descriptor")
    } else {
        let index = IndexOut { schema_version: 2, media_type: MEDIA_TYPE_OCI_INDEX, manifests: descriptors };
        let bytes = serde_json::to_vec(&index).expect("index serializes");
        let digest = Sha256Digest::of(&bytes);
        let size = bytes.len() as u64;
        blobs.push(Blob { digest, size, media_type: MEDIA_TYPE_OCI_INDEX.to_string(), content: Content::Bytes(bytes) });
        Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, size)
    };
    Ok(Selection { root, platforms, blobs })
}

fn unknown_platform(ctx: &Ctx, wanted: &Platform, available: &[String]) -> Error {
    Error::input(
        ctx.subject(),
        format!(
            "platform {wanted} is not in this image; it has {}",
            if available.is_empty() { "none".to_string() } else { available.join(", ") }
        ),
    )
    .with_hint("use one of the platforms it has in `platforms:`, or drop `platforms:` to keep all of them")
}

#[derive(Serialize)]
struct IndexOut {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

// ---------------------------------------------------------------------------------
// Small shared helpers

/// Reads the bytes `content` points at, refusing anything over `limit`.
pub(crate) fn read_content(content: &Content, limit: u64) -> Result<Vec<u8>> {
    let (path, offset, len) = match content {
        Content::Bytes(b) => return Ok(b.clone()),
        Content::File(p) => {
            let len = std::fs::metadata(p).at(p)?.len();
            (p, 0, len)
        }
        Content::FileRange { path, offset, len } => (path, *offset, *len),
    };
    if len > limit {
        return Err(Error::input(
            path.display().to_string(),
            format!("a JSON document of {len} bytes is larger than the {limit}-byte limit"),
        )
        .with_hint("this does not look like an image manifest or config; check the source"));
    }
    let mut f = File::open(path).at(path)?;
    f.seek(SeekFrom::Start(offset)).at(path)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf).at(path)?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(
            path.display().to_string(),
            format!("expected {len} bytes at offset {offset}, found {}", buf.len()),
        )
        .with_hint("the file is truncated or changed while reading; copy it again"));
    }
    Ok(buf)
}

/// Image names an index entry is known by, for selection and for error lists.
pub(crate) fn entry_names(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = BTreeSet::new();
    for key in [airlock_format::oci::ANNOTATION_REF_NAME, airlock_format::oci::ANNOTATION_CONTAINERD_NAME] {
        if let Some(v) = annotations.get(key) {
            names.insert(v.clone());
        }
    }
    names.into_iter().collect()
}

/// Whether `selector` names `name`: literally, or as the same normalized reference
/// (so `nginx:1.27` finds `docker.io/library/nginx:1.27`).
pub(crate) fn name_matches(selector: &str, name: &str) -> bool {
    if selector == name {
        return true;
    }
    match (normalize_reference(selector), normalize_reference(name)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Index media types (OCI index, Docker manifest list).
pub(crate) fn is_index_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == airlock_format::oci::MEDIA_TYPE_DOCKER_LIST
}

/// Image manifest media types (OCI, Docker v2 schema 2).
pub(crate) fn is_manifest_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == airlock_format::oci::MEDIA_TYPE_DOCKER_MANIFEST
}

/// Fixtures for the unit tests: small OCI layouts and archives written by the test
/// code itself.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::path::PathBuf;

    pub fn spec(reference: &str, from: &str) -> ImageSpec {
        ImageSpec { reference: reference.into(), from: from.into(), platforms: None }
    }

    pub fn read_blob(c: &Content) -> Vec<u8> {
        read_content(c, u64::MAX).unwrap()
    }

    /// An image or index written into a [`Layout`].
    #[derive(Clone, Debug)]
    pub struct Img {
        pub digest: Sha256Digest,
        pub size: u64,
        pub media_type: String,
        pub config: Sha256Digest,
        pub layers: Vec<Sha256Digest>,
        pub platform: Option<PlatformJson>,
    }

    /// An OCI layout under construction.
    #[derive(Default)]
    pub struct Layout {
        pub blobs: BTreeMap<Sha256Digest, Vec<u8>>,
        pub index: Vec<serde_json::Value>,
        pub omit_oci_layout: bool,
        /// Write manifests without `mediaType`, as umoci does.
        pub umoci_style: bool,
        pub extra_files: Vec<(String, Vec<u8>)>,
        /// (name, target, hard link?)
        pub links: Vec<(String, String, bool)>,
    }

    impl Layout {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn add_blob(&mut self, bytes: Vec<u8>) -> (Sha256Digest, u64) {
            let d = Sha256Digest::of(&bytes);
            let n = bytes.len() as u64;
            self.blobs.insert(d, bytes);
            (d, n)
        }

        pub fn image(&mut self, os: &str, arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> Img {
            let layer_descs: Vec<(Sha256Digest, u64)> = layers.iter().map(|l| self.add_blob(l.to_vec())).collect();
            let mut config = serde_json::json!({
                "architecture": arch, "os": os,
                "rootfs": {"type": "layers", "diff_ids": layer_descs.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>()},
            });
            if let Some(v) = variant {
                config["variant"] = v.into();
            }
            let (cd, cs) = self.add_blob(serde_json::to_vec(&config).unwrap());
            let mut manifest = serde_json::json!({
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
                "layers": layer_descs.iter().map(|(d, s)| serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
            });
            if !self.umoci_style {
                manifest["mediaType"] = MEDIA_TYPE_OCI_MANIFEST.into();
            }
            let (md, ms) = self.add_blob(serde_json::to_vec(&manifest).unwrap());
            Img {
                digest: md,
                size: ms,
                media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
                config: cd,
                layers: layer_descs.iter().map(|(d, _)| *d).collect(),
                platform: Some(PlatformJson {
                    architecture: arch.into(),
                    os: os.into(),
                    os_version: None,
                    os_features: None,
                    variant: variant.map(str::to_string),
                    features: None,
                }),
            }
        }

        pub fn index_of(&mut self, images: &[&Img]) -> Img {
            let manifests: Vec<Descriptor> = images
                .iter()
                .map(|i| Descriptor {
                    platform: i.platform.clone(),
                    ..Descriptor::new(&i.media_type, i.digest, i.size)
                })
                .collect();
            let bytes =
                serde_json::to_vec(&IndexOut { schema_version: 2, media_type: MEDIA_TYPE_OCI_INDEX, manifests })
                    .unwrap();
            let (d, s) = self.add_blob(bytes);
            Img {
                digest: d,
                size: s,
                media_type: MEDIA_TYPE_OCI_INDEX.into(),
                config: d,
                layers: vec![],
                platform: None,
            }
        }

        /// Lists `img` in index.json under `org.opencontainers.image.ref.name`.
        pub fn name(&mut self, img: &Img, name: &str) {
            self.name_with(img, &[("org.opencontainers.image.ref.name", name)]);
        }

        pub fn name_with(&mut self, img: &Img, annotations: &[(&str, &str)]) {
            let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
            self.index.push(serde_json::json!({
                "mediaType": img.media_type, "digest": img.digest.to_string(), "size": img.size, "annotations": ann,
            }));
        }

        fn files(&self) -> Vec<(String, Vec<u8>)> {
            let mut files = Vec::new();
            if !self.omit_oci_layout {
                files.push(("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
            }
            let index = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
            files.push(("index.json".to_string(), serde_json::to_vec(&index).unwrap()));
            for (d, b) in &self.blobs {
                files.push((format!("blobs/sha256/{}", d.hex()), b.clone()));
            }
            files.extend(self.extra_files.iter().cloned());
            files
        }

        pub fn write_dir(&self, root: &Path, name: &str) -> PathBuf {
            let dir = root.join(name);
            for (n, b) in self.files() {
                let p = dir.join(n);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, b).unwrap();
            }
            for (n, target, hard) in &self.links {
                let p = dir.join(n);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                if *hard {
                    std::fs::hard_link(dir.join(target), p).unwrap();
                } else {
                    std::os::unix::fs::symlink(target, p).unwrap();
                }
            }
            dir
        }

        /// Writes the layout as a tar; `dot` prefixes names with `./` like `tar -C dir .`.
        pub fn write_archive(&self, root: &Path, name: &str, dot: bool) -> PathBuf {
            let path = root.join(name);
            let prefix = if dot { "./" } else { "" };
            let mut b = tar::Builder::new(File::create(&path).unwrap());
            for dir in ["blobs/", "blobs/sha256/"] {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, format!("{prefix}{dir}"), std::io::empty()).unwrap();
            }
            for (n, data) in self.files() {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, format!("{prefix}{n}"), data.as_slice()).unwrap();
            }
            for (n, target, hard) in &self.links {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(if *hard { tar::EntryType::Link } else { tar::EntryType::Symlink });
                h.set_size(0);
                b.append_link(&mut h, format!("{prefix}{n}"), target).unwrap();
            }
            b.finish().unwrap();
            path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::ErrorKind;

    #[test]
    fn source_syntax_follows_skopeo() {
        let base = Path::new("/specs");
        assert_eq!(
            ImageSource::parse("oci:layout", base).unwrap(),
            ImageSource::OciLayout { dir: "/specs/layout".into(), selector: None }
        );
        assert_eq!(
            ImageSource::parse("oci:/abs/l:docker.io/library/nginx:1.27", base).unwrap(),
            ImageSource::OciLayout { dir: "/abs/l".into(), selector: Some("docker.io/library/nginx:1.27".into()) }
        );
        assert_eq!(
            ImageSource::parse("oci-archive:x.tar:bb", base).unwrap(),
            ImageSource::OciArchive { file: "/specs/x.tar".into(), selector: Some("bb".into()) }
        );
        assert_eq!(
            ImageSource::parse("docker-archive:../d.tar:@1", base).unwrap(),
            ImageSource::DockerArchive { file: "/specs/../d.tar".into(), selector: Some("@1".into()) }
        );
        assert_eq!(
            ImageSource::parse("docker://ghcr.io/a/b:1", base).unwrap(),
            ImageSource::Registry { reference: "ghcr.io/a/b:1".into() }
        );
        for bad in ["layout", "oci:", "dir:/x", "containers-storage:x", "docker:x"] {
            let e = ImageSource::parse(bad, base).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Input, "{bad}");
            assert!(e.subject.contains(bad), "{e}");
        }
    }

    #[test]
    fn registry_source_outside_create_points_at_create() {
        let spec = ImageSpec { reference: "nginx:1.27".into(), from: "docker://nginx:1.27".into(), platforms: None };
        let e = load_image(&spec, Path::new("/")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("pulled"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("airlock-bundler create"), "{e}");
    }

    #[test]
    fn platforms_match_like_containerd() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/amd64").matches(&p("linux/x86_64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert_eq!(Platform::parse(bad).unwrap_err().kind, ErrorKind::Input, "{bad}");
        }
    }
}
