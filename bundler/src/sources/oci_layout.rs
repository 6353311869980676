//! OCI image layouts: the directory form (`oci:DIR[:NAME]`), and the index and
//! manifest resolution every OCI-shaped source shares (the archive form stores the
//! same files in a tar; Docker 25+ `docker save` output is such a tar too).
//!
//! Resolution reads only the small JSON documents (index.json, the selected index or
//! manifest, each image config), checks each against its digest, and then only
//! *looks up* the layers: present, and exactly the size the manifest says. Layers are
//! hashed later, once, by the bundle writer while it streams them.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::oci::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;
use serde::Deserialize;

use super::image_ref::normalize_reference;
use super::{
    entry_names, is_index_type, is_manifest_type, read_content, Blob, Ctx, Descriptor, ManifestEntry, Platform,
    Problem, Resolved, MAX_JSON_BYTES,
};

/// Where a layout's files are: a directory or an indexed tar.
pub(crate) trait BlobStore {
    /// The directory or archive, for messages.
    fn location(&self) -> &Path;
    /// How the user writes this source (`oci:DIR`), for hints.
    fn syntax(&self) -> String;
    /// A top-level file of the layout (`index.json`, `oci-layout`), if present.
    fn file(&self, name: &str) -> Result<Option<Content>>;
    /// A blob's content and stored size, if present. Never reads the blob.
    fn blob(&self, digest: &Sha256Digest) -> Result<Option<(Content, u64)>>;
}

/// An OCI image layout directory.
pub(crate) struct LayoutDir {
    dir: PathBuf,
}

impl LayoutDir {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }
}

impl BlobStore for LayoutDir {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn syntax(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn file(&self, name: &str) -> Result<Option<Content>> {
        let p = self.dir.join(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => {
                super::contained(&self.dir, &p, &format!("the layout's {name}"))?;
                Ok(Some(Content::File(p)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn blob(&self, digest: &Sha256Digest) -> Result<Option<(Content, u64)>> {
        let p = self.dir.join("blobs/sha256").join(digest.hex());
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => {
                super::contained(&self.dir, &p, "the layout blob")?;
                Ok(Some((Content::File(p), m.len())))
            }
            Ok(_) => Err(Error::corrupt(p.display().to_string(), "is not a regular file")
                .with_hint("a layout blob must be a file; copy the image again with skopeo")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Just enough of an image config to know its platform.
#[derive(Deserialize)]
pub(crate) struct ConfigDoc {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ConfigDoc {
    pub fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty()).then(|| Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        })
    }
}

/// Config media types of container images (as opposed to Helm charts or other
/// artifacts that also travel as OCI manifests).
pub(crate) const IMAGE_CONFIG_TYPES: &[&str] =
    &[airlock_format::oci::MEDIA_TYPE_OCI_CONFIG, "application/vnd.docker.container.image.v1+json"];

/// A layout's `index.json`, parsed once and indexed by image name, so that picking one
/// of N images costs a hash lookup, not a parse of all N entries (a layout holding
/// thousands of images, one spec entry each, would otherwise cost N² work).
pub(crate) struct LayoutIndex {
    entries: Vec<Descriptor>,
    /// Every name an entry carries (ref name, containerd name) → entry positions.
    by_name: HashMap<String, Vec<usize>>,
    /// The same by normalized reference, built on the first selector that is not an
    /// exact name (`nginx:1.27` for `docker.io/library/nginx:1.27`).
    by_normalized: OnceCell<HashMap<String, Vec<usize>>>,
}

#[cfg(test)]
thread_local! {
    /// How often this thread parsed an `index.json`: the regression tests pin that a
    /// layout is read once however many images are taken from it.
    pub(crate) static INDEX_PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl LayoutIndex {
    /// Checks that `store` is an OCI layout and parses its `index.json`.
    pub fn read(store: &dyn BlobStore, ctx: &Ctx) -> Result<Self> {
        let loc = store.location().display().to_string();
        if store.file("oci-layout")?.is_none() {
            let hint = if store.location().exists() {
                "point `from:` at an OCI image layout (skopeo copy … oci:DIR or oci-archive:FILE writes one)"
            } else {
                "check the path; it is resolved against the spec file's directory"
            };
            return Err(Error::input(
                ctx.subject(),
                format!("{loc} is not an OCI image layout: it has no `oci-layout` file"),
            )
            .with_hint(hint));
        }
        let index_content = store.file("index.json")?.ok_or_else(|| {
            Error::corrupt(ctx.subject(), format!("{loc} has no index.json"))
                .with_hint("copy the image again with skopeo")
        })?;
        let bytes = read_content(&index_content, MAX_JSON_BYTES).map_err(|e| e.within(ctx.subject()))?;
        #[cfg(test)]
        INDEX_PARSES.with(|c| c.set(c.get() + 1));
        let index: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(ctx.subject(), format!("index.json of {loc} is not a valid OCI index: {e}")).with_source(e)
        })?;
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in index.manifests.iter().enumerate() {
            for n in entry_names(&d.annotations) {
                by_name.entry(n).or_default().push(i);
            }
        }
        Ok(Self { entries: index.manifests, by_name, by_normalized: OnceCell::new() })
    }

    /// The entries `sel` names: exactly when any name is exactly `sel`, else those
    /// whose name normalizes to the same reference.
    fn named(&self, sel: &str) -> Vec<&Descriptor> {
        let positions = match self.by_name.get(sel) {
            Some(p) => Some(p),
            None => normalize_reference(sel).ok().and_then(|key| {
                self.by_normalized
                    .get_or_init(|| {
                        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
                        for (name, positions) in &self.by_name {
                            if let Ok(n) = normalize_reference(name) {
                                m.entry(n).or_default().extend(positions);
                            }
                        }
                        // An entry listed under two names that normalize alike counts once.
                        for p in m.values_mut() {
                            p.sort_unstable();
                            p.dedup();
                        }
                        m
                    })
                    .get(&key)
            }),
        };
        positions.map(|p| p.iter().map(|&i| &self.entries[i]).collect()).unwrap_or_default()
    }
}

/// Picks the image `selector` names (or the only one) from a layout whose index was
/// read once ([`LayoutIndex::read`]), and resolves it.
pub(crate) fn resolve_in(
    store: &dyn BlobStore,
    index: &LayoutIndex,
    selector: Option<&str>,
    ctx: &Ctx,
) -> Result<Resolved> {
    let entry = select(index, selector, store, ctx)?;
    resolve_root(store, entry, ctx)
}

fn select<'a>(
    index: &'a LayoutIndex,
    selector: Option<&str>,
    store: &dyn BlobStore,
    ctx: &Ctx,
) -> Result<&'a Descriptor> {
    let entries = index.entries.as_slice();
    let loc = store.location().display();
    let label = |d: &Descriptor| {
        let names = entry_names(&d.annotations);
        if names.is_empty() {
            format!("(unnamed {})", d.digest)
        } else {
            names.join(" = ")
        }
    };
    let list = || entries.iter().map(label).collect::<Vec<_>>().join(", ");
    match selector {
        None => match entries {
            [only] => Ok(only),
            [] => Err(Error::corrupt(ctx.subject(), format!("index.json of {loc} lists no images"))
                .with_hint("copy the image again with skopeo")),
            _ => Err(Error::input(ctx.subject(), format!("{loc} holds {} images: {}", entries.len(), list()))
                .with_hint(format!("choose one: `{}:NAME`", store.syntax()))),
        },
        Some(sel) => {
            let hits = index.named(sel);
            match hits.as_slice() {
                [] => Err(Error::input(
                    ctx.subject(),
                    format!(
                        "{loc} has no image named `{sel}`; it has {}",
                        if entries.is_empty() { "none".to_string() } else { list() }
                    ),
                )
                .with_hint(format!("use one of those names: `{}:NAME`", store.syntax()))),
                [first, rest @ ..] if rest.iter().all(|d| d.digest == first.digest) => Ok(first),
                _ => {
                    Err(Error::input(ctx.subject(), format!("`{sel}` names {} different images in {loc}", hits.len()))
                        .with_hint("use the exact name from index.json"))
                }
            }
        }
    }
}

/// What a JSON document is, from its descriptor, its own `mediaType`, or its shape.
enum Kind {
    Index,
    Manifest,
}

fn kind_of(desc_type: &str, doc: &serde_json::Value) -> Option<(Kind, String)> {
    let doc_type = doc.get("mediaType").and_then(|v| v.as_str()).unwrap_or("");
    let declared = if desc_type.is_empty() { doc_type } else { desc_type };
    if is_index_type(declared) {
        return Some((Kind::Index, declared.to_string()));
    }
    if is_manifest_type(declared) {
        return Some((Kind::Manifest, declared.to_string()));
    }
    if !declared.is_empty() {
        return None;
    }
    // No media type anywhere (umoci writes manifests without one): go by shape.
    if doc.get("manifests").is_some() {
        Some((Kind::Index, MEDIA_TYPE_OCI_INDEX.to_string()))
    } else if doc.get("config").is_some() && doc.get("layers").is_some() {
        Some((Kind::Manifest, MEDIA_TYPE_OCI_MANIFEST.to_string()))
    } else {
        None
    }
}

/// Reads a small blob, checking it exists, has the descriptor's size and digest.
/// `Err(Problem { missing: true })` when absent.
fn read_verified(
    store: &dyn BlobStore,
    desc: &Descriptor,
    what: &str,
    named_by: &str,
    ctx: &Ctx,
) -> std::result::Result<(Content, Vec<u8>), Problem> {
    let loc = store.location().display();
    let (content, stored) = match store.blob(&desc.digest) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err(Problem {
                missing: true,
                error: Error::corrupt(
                    ctx.subject(),
                    format!("{named_by} names {what} {} which is missing from {loc}", desc.digest),
                )
                .with_hint(
                    "the source is incomplete; copy the image again (skopeo copy --all … to keep every platform)",
                ),
            })
        }
        Err(e) => return Err(Problem { missing: false, error: e.within(ctx.subject()) }),
    };
    if stored != desc.size {
        return Err(size_mismatch(ctx, store, named_by, what, desc, stored));
    }
    if desc.size > MAX_JSON_BYTES {
        return Err(Problem {
            missing: false,
            error: Error::input(
                ctx.subject(),
                format!(
                    "{what} {} is {} bytes, over the {MAX_JSON_BYTES}-byte limit for JSON documents",
                    desc.digest, desc.size
                ),
            ),
        });
    }
    let bytes = read_content(&content, MAX_JSON_BYTES)
        .map_err(|e| Problem { missing: false, error: e.within(ctx.subject()) })?;
    let actual = Sha256Digest::of(&bytes);
    if actual != desc.digest {
        return Err(Problem {
            missing: false,
            error: Error::corrupt(ctx.subject(), format!("{what} {} in {loc} has digest {actual}", desc.digest))
                .with_hint("the blob is damaged or was modified; copy the image again"),
        });
    }
    // The bundle carries the bytes just checked: the SBOM and the writer take them
    // from memory instead of opening the file twice more (for thousands of images the
    // opens cost more than the bytes). Documents are a few KiB; a large one stays a file.
    let content = if bytes.len() as u64 <= KEEP_JSON_MAX { Content::Bytes(bytes.clone()) } else { content };
    Ok((content, bytes))
}

/// Manifests, indexes and configs up to this size are kept in memory once read.
const KEEP_JSON_MAX: u64 = 256 << 10;

fn size_mismatch(
    ctx: &Ctx,
    store: &dyn BlobStore,
    named_by: &str,
    what: &str,
    desc: &Descriptor,
    stored: u64,
) -> Problem {
    Problem {
        missing: false,
        error: Error::corrupt(
            ctx.subject(),
            format!(
                "{named_by} says {what} {} is {} bytes, but it is {stored} bytes in {}",
                desc.digest,
                desc.size,
                store.location().display()
            ),
        )
        .with_hint("the blob is truncated or damaged; copy the image again"),
    }
}

pub(crate) fn resolve_root(store: &dyn BlobStore, desc: &Descriptor, ctx: &Ctx) -> Result<Resolved> {
    let (content, bytes) = read_verified(store, desc, "image", "index.json", ctx).map_err(|p| p.error)?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(ctx.subject(), format!("{} is not JSON: {e}", desc.digest)).with_source(e))?;
    let Some((kind, media_type)) = kind_of(&desc.media_type, &doc) else {
        return Err(not_an_image(ctx, desc, &doc));
    };
    let mut root = desc.clone();
    root.media_type = media_type.clone();
    match kind {
        Kind::Manifest => {
            // A lone manifest has no other platform to fall back on: fail now.
            let ManifestEntry { descriptor, platform, outcome } = resolve_manifest(store, root, content, &bytes, ctx);
            let blobs = outcome.map_err(|p| p.error)?;
            Ok(Resolved::Manifest(ManifestEntry { descriptor, platform, outcome: Ok(blobs) }))
        }
        Kind::Index => {
            let index: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(ctx.subject(), format!("index {} is not a valid OCI index: {e}", desc.digest))
                    .with_source(e)
            })?;
            check_declared(ctx, desc, &index.media_type, &media_type)?;
            let named_by = format!("index {}", desc.digest);
            let mut manifests = Vec::new();
            for child in &index.manifests {
                manifests.push(resolve_child(store, child, &named_by, ctx)?);
            }
            if manifests.is_empty() {
                return Err(Error::corrupt(ctx.subject(), format!("index {} lists no manifests", desc.digest)));
            }
            let blob = Blob { digest: desc.digest, size: desc.size, media_type, content };
            Ok(Resolved::Index { descriptor: root, blob, manifests })
        }
    }
}

fn not_an_image(ctx: &Ctx, desc: &Descriptor, doc: &serde_json::Value) -> Error {
    let declared = if desc.media_type.is_empty() {
        doc.get("mediaType").and_then(|v| v.as_str()).unwrap_or("(none)").to_string()
    } else {
        desc.media_type.clone()
    };
    if doc.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Error::input(
            ctx.subject(),
            format!("{} is a Docker schema 1 manifest, which containerd no longer imports", desc.digest),
        )
        .with_hint("convert it: skopeo copy --format oci … oci-archive:FILE");
    }
    Error::input(ctx.subject(), format!("{} is not an image manifest or index (media type {declared})", desc.digest))
        .with_hint("only container images can be bundled as images; charts go under `charts:`")
}

/// A document's own `mediaType`, when present, must agree with the descriptor's.
fn check_declared(ctx: &Ctx, desc: &Descriptor, doc_type: &str, resolved: &str) -> Result<()> {
    if !doc_type.is_empty() && doc_type != resolved {
        return Err(Error::corrupt(
            ctx.subject(),
            format!("{} is described as {resolved} but says it is {doc_type}", desc.digest),
        )
        .with_hint("the layout is inconsistent; copy the image again with skopeo"));
    }
    Ok(())
}

/// One entry of an index: a platform manifest. Problems are recorded, not raised, so
/// the caller can decide (a missing platform matters only if it is kept).
fn resolve_child(store: &dyn BlobStore, child: &Descriptor, named_by: &str, ctx: &Ctx) -> Result<ManifestEntry> {
    if is_index_type(&child.media_type) {
        return Err(Error::input(
            ctx.subject(),
            format!("{named_by} contains another index ({}); nested indexes are not supported", child.digest),
        )
        .with_hint(
            "copy one platform index with `skopeo copy` (or select platforms) so the root index lists manifests",
        ));
    }
    let descriptor_platform = child.platform.as_ref().map(Platform::from_json);
    let fail = |p: Problem| ManifestEntry {
        descriptor: child.clone(),
        platform: descriptor_platform.clone(),
        outcome: Err(p),
    };
    let (content, bytes) = match read_verified(store, child, "manifest", named_by, ctx) {
        Ok(x) => x,
        Err(p) => return Ok(fail(p)),
    };
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Ok(fail(Problem {
                missing: false,
                error: Error::corrupt(ctx.subject(), format!("manifest {} is not JSON: {e}", child.digest)),
            }))
        }
    };
    match kind_of(&child.media_type, &doc) {
        Some((Kind::Manifest, media_type)) => {
            let mut d = child.clone();
            d.media_type = media_type;
            Ok(resolve_manifest(store, d, content, &bytes, ctx))
        }
        Some((Kind::Index, _)) => Err(Error::input(
            ctx.subject(),
            format!("{named_by} contains another index ({}); nested indexes are not supported", child.digest),
        )
        .with_hint("copy one platform index with `skopeo copy` so the root index lists manifests")),
        None => Err(not_an_image(ctx, child, &doc)),
    }
}

/// Checks one image manifest: config read and verified, every layer present with the
/// right size.
pub(crate) fn resolve_manifest(
    store: &dyn BlobStore,
    descriptor: Descriptor,
    content: Content,
    bytes: &[u8],
    ctx: &Ctx,
) -> ManifestEntry {
    let mut platform = descriptor.platform.as_ref().map(Platform::from_json);
    let outcome = (|| {
        let broken = |cause: String| Problem { missing: false, error: Error::corrupt(ctx.subject(), cause) };
        let doc: ManifestDoc = serde_json::from_slice(bytes)
            .map_err(|e| broken(format!("manifest {} is not a valid image manifest: {e}", descriptor.digest)))?;
        check_declared(ctx, &descriptor, &doc.media_type, &descriptor.media_type)
            .map_err(|error| Problem { missing: false, error })?;
        if !IMAGE_CONFIG_TYPES.contains(&doc.config.media_type.as_str()) {
            return Err(Problem {
                missing: false,
                error: Error::input(
                    ctx.subject(),
                    format!(
                        "manifest {} is not a container image (config media type `{}`)",
                        descriptor.digest, doc.config.media_type
                    ),
                )
                .with_hint("only container images can be bundled as images; charts go under `charts:`"),
            });
        }
        let named_by = format!("manifest {}", descriptor.digest);
        let (config_content, config_bytes) = read_verified(store, &doc.config, "config", &named_by, ctx)?;
        let config: ConfigDoc = serde_json::from_slice(&config_bytes)
            .map_err(|e| broken(format!("config {} is not a valid image config: {e}", doc.config.digest)))?;
        if platform.is_none() {
            platform = config.platform();
        }
        let mut blobs = vec![
            Blob {
                digest: descriptor.digest,
                size: descriptor.size,
                media_type: descriptor.media_type.clone(),
                content,
            },
            Blob {
                digest: doc.config.digest,
                size: doc.config.size,
                media_type: doc.config.media_type.clone(),
                content: config_content,
            },
        ];
        for layer in &doc.layers {
            match store.blob(&layer.digest) {
                Ok(Some((c, stored))) if stored == layer.size => blobs.push(Blob {
                    digest: layer.digest,
                    size: layer.size,
                    media_type: layer.media_type.clone(),
                    content: c,
                }),
                Ok(Some((_, stored))) => return Err(size_mismatch(ctx, store, &named_by, "blob", layer, stored)),
                Ok(None) => return Err(Problem {
                    missing: true,
                    error: Error::corrupt(
                        ctx.subject(),
                        format!(
                            "{named_by} names blob {} which is missing from {}",
                            layer.digest,
                            store.location().display()
                        ),
                    )
                    .with_hint(
                        "the source is incomplete; copy the image again (skopeo copy --all … to keep every platform)",
                    ),
                }),
                Err(e) => return Err(Problem { missing: false, error: e.within(ctx.subject()) }),
            }
        }
        Ok(blobs)
    })();
    ManifestEntry { descriptor, platform, outcome }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{load_image, ImageSpec, LoadedImage};
    use super::*;
    use airlock_format::ErrorKind;

    fn with_platforms(mut s: ImageSpec, p: &[&str]) -> ImageSpec {
        s.platforms = Some(p.iter().map(|x| x.to_string()).collect());
        s
    }

    fn blob_digests(img: &LoadedImage) -> Vec<Sha256Digest> {
        img.blobs.iter().map(|b| b.digest).collect()
    }

    #[test]
    fn umoci_style_manifest_without_media_type_is_accepted() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout { umoci_style: true, ..Layout::new() };
        let img = l.image("linux", "amd64", None, &[b"one", b"two"]);
        l.name(&img, "busybox");
        let dir = l.write_dir(t.path(), "layout");
        let got = load_image(&spec("docker.io/lab/busybox:1.35", "oci:layout"), t.path()).unwrap();
        assert_eq!(got.reference, "docker.io/lab/busybox:1.35");
        assert_eq!(got.media_type, MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!((got.digest, got.size), (img.digest, img.size));
        assert_eq!(got.platforms, vec!["linux/amd64"]);
        let mut want = vec![img.digest, img.config, img.layers[0], img.layers[1]];
        want.sort();
        assert_eq!(blob_digests(&got), want);
        // Layers are read from their files while the bundle is written; the JSON
        // documents, read and checked already, from those bytes.
        for b in &got.blobs {
            let file = dir.join("blobs/sha256").join(b.digest.hex());
            if img.layers.contains(&b.digest) {
                assert_eq!(b.content, Content::File(file));
            } else {
                assert_eq!(b.content, Content::Bytes(std::fs::read(&file).unwrap()));
            }
        }
        let layer = got.blobs.iter().find(|b| b.digest == img.layers[0]).unwrap();
        assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(layer.size, 3);
    }

    #[test]
    fn a_layout_blob_that_links_out_of_the_layout_is_refused_and_one_inside_is_followed() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"layer"]);
        l.name(&img, "busybox");
        let dir = l.write_dir(t.path(), "layout");
        let blob = dir.join("blobs/sha256").join(img.layers[0].hex());
        // Inside: the blob moved to another name in the layout, linked back.
        std::fs::rename(&blob, dir.join("moved")).unwrap();
        std::os::unix::fs::symlink("../../moved", &blob).unwrap();
        load_image(&spec("docker.io/lab/busybox:1", "oci:layout"), t.path()).expect("a link inside is followed");
        // Outside: the same bytes, but beside the layout.
        std::fs::rename(dir.join("moved"), t.path().join("outside")).unwrap();
        std::fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), &blob).unwrap();
        let e = load_image(&spec("docker.io/lab/busybox:1", "oci:layout"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsafe, "{e}");
        assert!(e.subject.ends_with(&img.layers[0].hex()) && e.cause.contains("outside"), "{e}");
    }

    fn three_images(t: &Path) -> (Img, Img, Img) {
        let mut l = Layout::new();
        let a = l.image("linux", "amd64", None, &[b"a"]);
        let b = l.image("linux", "amd64", None, &[b"b"]);
        let c = l.image("linux", "amd64", None, &[b"c"]);
        l.name(&a, "a");
        l.name(&b, "docker.io/lab/b:1");
        l.name_with(&c, &[("io.containerd.image.name", "ghcr.io/x/c:2"), ("org.opencontainers.image.ref.name", "2")]);
        l.write_dir(t, "multi");
        l.write_archive(t, "multi.tar", true);
        (a, b, c)
    }

    #[test]
    fn multi_image_layout_selects_by_ref_name_or_containerd_name() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = three_images(t.path());
        for from in ["oci:multi", "oci-archive:multi.tar"] {
            let load = |sel: &str| load_image(&spec("x", &format!("{from}:{sel}")), t.path()).unwrap().digest;
            assert_eq!(load("a"), a.digest);
            assert_eq!(load("docker.io/lab/b:1"), b.digest);
            assert_eq!(load("lab/b:1"), b.digest, "matched after normalization");
            assert_eq!(load("ghcr.io/x/c:2"), c.digest);
            assert_eq!(load("2"), c.digest);

            let e = load_image(&spec("x", from), t.path()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Input);
            assert!(
                e.cause.contains("3 images")
                    && e.cause.contains("docker.io/lab/b:1")
                    && e.cause.contains("ghcr.io/x/c:2"),
                "{e}"
            );
            assert!(e.hint.as_deref().unwrap().contains(":NAME"), "{e}");
            let e = load_image(&spec("x", &format!("{from}:nope")), t.path()).unwrap_err();
            assert!(e.cause.contains("no image named `nope`") && e.cause.contains("docker.io/lab/b:1"), "{e}");
        }
    }

    #[test]
    fn exact_name_wins_over_a_normalized_match() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let short = l.image("linux", "amd64", None, &[b"short"]);
        let full = l.image("linux", "amd64", None, &[b"full"]);
        l.name(&short, "nginx");
        l.name(&full, "docker.io/library/nginx:latest");
        l.write_dir(t.path(), "l");
        let load = |sel: &str| load_image(&spec("x", &format!("oci:l:{sel}")), t.path());
        assert_eq!(load("nginx").unwrap().digest, short.digest);
        assert_eq!(load("docker.io/library/nginx:latest").unwrap().digest, full.digest);
        let e = load("nginx:latest").unwrap_err();
        assert!(e.cause.contains("names 2 different images"), "{e}");
    }

    #[test]
    fn missing_blob_is_corrupt_and_names_manifest_blob_and_dir() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"present", b"gone"]);
        l.name(&img, "x");
        l.blobs.remove(&img.layers[1]);
        let dir = l.write_dir(t.path(), "l");
        let e = load_image(&spec("lab/x:1", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.subject.contains("docker.io/lab/x:1") && e.subject.contains("oci:"), "{e}");
        assert_eq!(
            e.cause,
            format!("manifest {} names blob {} which is missing from {}", img.digest, img.layers[1], dir.display())
        );
        assert!(e.hint.is_some());
    }

    #[test]
    fn size_mismatch_is_corrupt() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"twelve bytes"]);
        l.name(&img, "x");
        l.blobs.insert(img.layers[0], b"twelve bytes and more".to_vec());
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.cause.contains("is 12 bytes, but it is 21 bytes"), "{e}");
    }

    #[test]
    fn tampered_config_fails_its_digest_check() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"l"]);
        l.name(&img, "x");
        let mut cfg = l.blobs[&img.config].clone();
        let i = cfg.iter().position(|&c| c == b'6').unwrap(); // "amd64" -> "amd65"
        cfg[i + 1] = b'5';
        l.blobs.insert(img.config, cfg);
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.cause.contains(&format!("config {}", img.config)) && e.cause.contains("has digest"), "{e}");
    }

    /// An index of amd64, arm64/v8 and arm/v7 images.
    fn multi_arch(l: &mut Layout) -> (Img, Img, Img, Img) {
        let amd = l.image("linux", "amd64", None, &[b"shared", b"amd"]);
        let arm64 = l.image("linux", "arm64", Some("v8"), &[b"shared", b"arm64"]);
        let arm = l.image("linux", "arm", Some("v7"), &[b"shared", b"arm"]);
        let idx = l.index_of(&[&amd, &arm64, &arm]);
        l.name(&idx, "docker.io/lab/multi:1");
        (idx, amd, arm64, arm)
    }

    #[test]
    fn whole_index_keeps_every_platform() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let (idx, amd, arm64, arm) = multi_arch(&mut l);
        l.write_dir(t.path(), "l");
        let got = load_image(&spec("lab/multi:1", "oci:l"), t.path()).unwrap();
        assert_eq!((got.digest, got.media_type.as_str()), (idx.digest, MEDIA_TYPE_OCI_INDEX));
        assert_eq!(got.platforms, vec!["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]);
        // Shared layer once; index + 3 × (manifest + config + own layer) + shared.
        assert_eq!(got.blobs.len(), 1 + 3 * 3 + 1);
        for d in [amd.digest, arm64.digest, arm.digest, amd.layers[0], arm.layers[1]] {
            assert!(got.blobs.iter().any(|b| b.digest == d));
        }
        assert!(got.blobs.windows(2).all(|w| w[0].digest < w[1].digest), "sorted, unique");
    }

    #[test]
    fn partial_index_is_refused_unless_platforms_are_selected() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let (_, amd, arm64, arm) = multi_arch(&mut l);
        l.blobs.remove(&arm64.layers[1]);
        l.blobs.remove(&arm.digest);
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(
            e.cause.starts_with("partial index: platform linux/arm64/v8, linux/arm/v7 blobs missing; K3s imports all platforms and would fail"),
            "{e}"
        );
        assert!(e.hint.as_deref().unwrap().contains("platforms: [linux/amd64]"), "{e}");

        let got = load_image(&with_platforms(spec("x", "oci:l"), &["linux/amd64"]), t.path()).unwrap();
        assert_eq!(got.digest, amd.digest);
        let e = load_image(&with_platforms(spec("x", "oci:l"), &["linux/arm64"]), t.path()).unwrap_err();
        assert!(e.cause.contains("platform linux/arm64/v8 blobs missing"), "{e}");
    }

    #[test]
    fn one_selected_platform_becomes_the_root_manifest() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let (_, _, arm64, _) = multi_arch(&mut l);
        l.write_dir(t.path(), "l");
        // linux/arm64 matches linux/arm64/v8, as in containerd.
        let got = load_image(&with_platforms(spec("x", "oci:l"), &["linux/arm64"]), t.path()).unwrap();
        assert_eq!(
            (got.digest, got.size, got.media_type.as_str()),
            (arm64.digest, arm64.size, MEDIA_TYPE_OCI_MANIFEST)
        );
        assert_eq!(got.platforms, vec!["linux/arm64/v8"]);
        let mut want = vec![arm64.digest, arm64.config, arm64.layers[0], arm64.layers[1]];
        want.sort();
        assert_eq!(blob_digests(&got), want);
    }

    #[test]
    fn several_selected_platforms_get_a_new_deterministic_index() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let (idx, amd, arm64, arm) = multi_arch(&mut l);
        l.write_dir(t.path(), "l");
        let s = with_platforms(spec("x", "oci:l"), &["linux/arm/v7", "linux/amd64"]);
        let got = load_image(&s, t.path()).unwrap();
        assert_eq!(got.media_type, MEDIA_TYPE_OCI_INDEX);
        assert_ne!(got.digest, idx.digest);
        // Source order is kept, whatever the order asked for.
        assert_eq!(got.platforms, vec!["linux/amd64", "linux/arm/v7"]);
        let root = got.blobs.iter().find(|b| b.digest == got.digest).unwrap();
        let bytes = read_blob(&root.content);
        assert!(matches!(root.content, Content::Bytes(_)));
        assert_eq!(Sha256Digest::of(&bytes), got.digest);
        assert_eq!(bytes.len() as u64, got.size);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                concat!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},"#,
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#
                ),
                amd.digest, amd.size, arm.digest, arm.size
            )
        );
        assert!(!got.blobs.iter().any(|b| b.digest == arm64.digest || b.digest == idx.digest));
        assert_eq!(load_image(&s, t.path()).unwrap(), got, "deterministic");

        // Selecting every platform keeps the source index as it is.
        let all =
            load_image(&with_platforms(spec("x", "oci:l"), &["linux/amd64", "linux/arm64", "linux/arm"]), t.path())
                .unwrap();
        assert_eq!(all.digest, idx.digest);
    }

    #[test]
    fn with_platforms_an_unreadable_index_entry_is_reported_as_without_them() {
        // An index whose descriptors carry no platform (the config says it): when a
        // manifest is damaged or gone, its platform is unknown, and its error is the
        // cause whether or not `platforms:` asks for one.
        for damage in ["tampered", "missing"] {
            let t = tempfile::tempdir().unwrap();
            let mut l = Layout::new();
            let mut amd = l.image("linux", "amd64", None, &[b"amd"]);
            let mut arm = l.image("linux", "arm64", None, &[b"arm"]);
            amd.platform = None;
            arm.platform = None;
            let idx = l.index_of(&[&amd, &arm]);
            l.name(&idx, "x");
            if damage == "tampered" {
                l.blobs.get_mut(&amd.digest).unwrap().push(b' ');
            } else {
                l.blobs.remove(&amd.digest);
            }
            l.write_dir(t.path(), "l");
            let plain = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
            let picked = load_image(&with_platforms(spec("x", "oci:l"), &["linux/amd64"]), t.path()).unwrap_err();
            assert!(!picked.cause.contains("is not in this image"), "{damage}: {picked}");
            assert!(picked.cause.contains(&amd.digest.to_string()), "{damage}: names the manifest: {picked}");
            assert!(
                plain.cause.contains(&picked.cause),
                "{damage}: same cause as without platforms:\n{plain}\n{picked}"
            );
            assert!(picked.hint.is_some(), "{damage}: {picked}");
        }
    }

    #[test]
    fn unknown_platform_lists_the_available_ones() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        multi_arch(&mut l);
        l.write_dir(t.path(), "l");
        let e = load_image(&with_platforms(spec("x", "oci:l"), &["linux/amd64", "linux/s390x"]), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert_eq!(
            e.cause,
            "platform linux/s390x is not in this image; it has linux/amd64, linux/arm64/v8, linux/arm/v7"
        );
        let e = load_image(&with_platforms(spec("x", "oci:l"), &["linux"]), t.path()).unwrap_err();
        assert!(e.subject.contains("platform `linux`"), "{e}");
        let e = load_image(&with_platforms(spec("x", "oci:l"), &[]), t.path()).unwrap_err();
        assert!(e.cause.contains("empty"), "{e}");
    }

    #[test]
    fn nested_index_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let a = l.image("linux", "amd64", None, &[b"a"]);
        let inner = l.index_of(&[&a]);
        let outer = l.index_of(&[&inner]);
        l.name(&outer, "x");
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("nested indexes are not supported"), "{e}");
    }

    #[test]
    fn digest_pinned_reference_must_match_the_root() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"a"]);
        l.name(&img, "x");
        l.write_dir(t.path(), "l");
        let pinned = format!("lab/x:1@{}", img.digest);
        let got = load_image(&spec(&pinned, "oci:l"), t.path()).unwrap();
        assert_eq!(got.reference, format!("docker.io/lab/x:1@{}", img.digest));
        let wrong = format!("lab/x@{}", Sha256Digest::of(b"other"));
        let e = load_image(&spec(&wrong, "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("pins"), "{e}");
    }

    #[test]
    fn non_image_artifact_is_rejected() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let (cd, cs) = l.add_blob(b"{}".to_vec());
        let (ld, ls) = l.add_blob(b"chart".to_vec());
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cd.to_string(), "size": cs},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": ld.to_string(), "size": ls}]});
        let (md, ms) = l.add_blob(serde_json::to_vec(&m).unwrap());
        let img = Img {
            digest: md,
            size: ms,
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            config: cd,
            layers: vec![ld],
            platform: None,
        };
        l.name(&img, "chart");
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("not a container image"), "{e}");
    }

    #[test]
    fn missing_layout_dir_and_file_errors() {
        let t = tempfile::tempdir().unwrap();
        let e = load_image(&spec("x", "oci:nowhere"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("nowhere") && e.hint.as_deref().unwrap().contains("check the path"), "{e}");
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"a"]);
        l.name(&img, "x");
        l.blobs.remove(&img.digest);
        l.write_dir(t.path(), "l");
        let e = load_image(&spec("x", "oci:l"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.cause.contains(&format!("index.json names image {} which is missing", img.digest)), "{e}");
    }
}
