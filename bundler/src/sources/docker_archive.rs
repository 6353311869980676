//! Docker archives (`docker-archive:FILE[:REFERENCE|:@INDEX]`), as `docker save` and
//! `skopeo copy … docker-archive:` write them, converted to an OCI image manifest.
//!
//! A docker-archive has no manifest in registry form: `manifest.json` lists, per image,
//! a config file, its `RepoTags` and its layer files. So the manifest is built here
//! (deterministic JSON; OCI media types, because containerd and K3s take them as they
//! are), and because nothing in the archive records the layers' digests in their
//! stored form, each layer is hashed once here (the one place loading hashes big
//! blobs). Layers stay where they are, as byte ranges of the archive; the legacy
//! `<id>/layer.tar` names are often symlinks to `<diffid>.tar`, which the member index
//! follows. Docker 25+ also writes an OCI layout (`oci-layout` + `index.json`) into
//! the same tar; such archives are read as OCI archives, keeping Docker's own manifests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use airlock_format::error::{Error, IoContext, Result};
use airlock_format::oci::{MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST};
use airlock_format::write::Content;
use airlock_format::Sha256Digest;
use serde::{Deserialize, Serialize};

use super::oci_archive::{sniff_compression, ArchiveStore, Member, TarIndex};
use super::oci_layout;
use super::{name_matches, read_content, Blob, Ctx, Descriptor, ManifestEntry, Platform, Resolved, MAX_JSON_BYTES};

pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

#[derive(Deserialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl ArchiveEntry {
    fn tags(&self) -> &[String] {
        self.repo_tags.as_deref().unwrap_or(&[])
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The OCI image manifest written for a docker-archive image (field order = output).
#[derive(Serialize)]
struct ManifestOut {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A docker-archive read once: its members, its `manifest.json` and, when it is also an
/// OCI layout that lists its images, that layout's index — for every image taken from it.
pub(crate) struct DockerArchive {
    store: ArchiveStore,
    entries: Option<Vec<ArchiveEntry>>,
    oci: Option<oci_layout::LayoutIndex>,
}

/// Indexes the archive and reads what names its images.
pub(crate) fn open(file: &std::path::Path, ctx: &Ctx) -> Result<DockerArchive> {
    let tar = TarIndex::open(file).map_err(|e| e.within(ctx.subject()))?;
    let loc = file.display().to_string();
    let entries = match tar.file("manifest.json") {
        Some(m) => {
            let bytes = read_content(&tar.content(m), MAX_JSON_BYTES).map_err(|e| e.within(ctx.subject()))?;
            Some(serde_json::from_slice::<Vec<ArchiveEntry>>(&bytes).map_err(|e| {
                Error::corrupt(ctx.subject(), format!("manifest.json of {loc} is not a docker-archive manifest: {e}"))
                    .with_source(e)
            })?)
        }
        None => None,
    };

    // Docker 25+: the archive is also an OCI layout, whose index names each image by
    // its full reference (io.containerd.image.name); read it as such. Docker 25.0.0 to
    // 25.0.2 wrote `"manifests": null` for an image saved by digest or ID
    // (moby/moby#47210); manifest.json is still right there, so such an archive (and
    // any whose index lists nothing) is read through it, as skopeo reads it.
    let index_lists_images = match tar.file("index.json") {
        Some(m) if entries.is_some() => index_lists_images(&tar, m, ctx)?,
        Some(_) => true,
        None => false,
    };
    let oci_layout = tar.file("oci-layout").is_some() && index_lists_images;
    let store = ArchiveStore { tar, transport: "docker-archive" };
    let oci = if oci_layout { Some(oci_layout::LayoutIndex::read(&store, ctx)?) } else { None };
    Ok(DockerArchive { store, entries, oci })
}

/// The image `selector` names (or the only one) in an opened archive.
pub(crate) fn resolve(archive: &DockerArchive, selector: Option<&str>, ctx: &Ctx) -> Result<Resolved> {
    let tar = &archive.store.tar;
    let loc = tar.path.display().to_string();
    let syntax = format!("docker-archive:{loc}");
    if let Some(index) = &archive.oci {
        let selector = match (selector, &archive.entries) {
            (Some(s), Some(list)) if s.starts_with('@') => {
                let e = pick_by_position(s, list, ctx, &syntax)?;
                Some(e.tags().first().cloned().ok_or_else(|| {
                    Error::input(
                        ctx.subject(),
                        format!("image {s} in {loc} has no RepoTags to find it in index.json by"),
                    )
                })?)
            }
            (s, _) => s.map(str::to_string),
        };
        return oci_layout::resolve_in(&archive.store, index, selector.as_deref(), ctx);
    }

    let Some(entries) = &archive.entries else {
        let cause = if tar.has("repositories") {
            format!("{loc} is a legacy (pre-Docker 1.10) archive without manifest.json")
        } else {
            format!("{loc} is not a docker-archive: it has no manifest.json")
        };
        let hint = if tar.has("index.json") {
            format!("it looks like an OCI archive: use `from: oci-archive:{loc}`")
        } else {
            "write it again with a current `docker save` or `skopeo copy … docker-archive:FILE:REF`".to_string()
        };
        return Err(Error::input(ctx.subject(), cause).with_hint(hint));
    };
    let entry = select(entries, selector, ctx, &syntax)?;
    convert(tar, entry, ctx)
}

/// Whether a Docker 25+ archive's `index.json` names any image. One that is not even
/// JSON counts as naming some, so the OCI reader reports what is wrong with it.
fn index_lists_images(tar: &TarIndex, index: &Member, ctx: &Ctx) -> Result<bool> {
    let bytes = read_content(&tar.content(index), MAX_JSON_BYTES).map_err(|e| e.within(ctx.subject()))?;
    Ok(match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => match v.get("manifests") {
            Some(serde_json::Value::Array(list)) => !list.is_empty(),
            Some(serde_json::Value::Null) | None => false,
            Some(_) => true,
        },
        Err(_) => true,
    })
}

fn describe(list: &[ArchiveEntry]) -> String {
    list.iter()
        .enumerate()
        .map(
            |(i, e)| {
                if e.tags().is_empty() {
                    format!("@{i} (untagged)")
                } else {
                    format!("@{i} {}", e.tags().join(" "))
                }
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

fn pick_by_position<'a>(sel: &str, list: &'a [ArchiveEntry], ctx: &Ctx, syntax: &str) -> Result<&'a ArchiveEntry> {
    sel[1..].parse::<usize>().ok().and_then(|i| list.get(i)).ok_or_else(|| {
        Error::input(ctx.subject(), format!("`{sel}` is not an image of {syntax}; it has {}", describe(list)))
            .with_hint(format!("use `{syntax}:REFERENCE` or `:@N` with N from 0 to {}", list.len().saturating_sub(1)))
    })
}

fn select<'a>(list: &'a [ArchiveEntry], selector: Option<&str>, ctx: &Ctx, syntax: &str) -> Result<&'a ArchiveEntry> {
    match selector {
        None => match list {
            [only] => Ok(only),
            [] => Err(Error::corrupt(ctx.subject(), format!("manifest.json of {syntax} lists no images"))),
            _ => Err(Error::input(ctx.subject(), format!("{syntax} holds {} images: {}", list.len(), describe(list)))
                .with_hint(format!("choose one: `{syntax}:REFERENCE` (a RepoTags entry) or `{syntax}:@N`"))),
        },
        Some(s) if s.starts_with('@') => pick_by_position(s, list, ctx, syntax),
        Some(s) => {
            // An exact tag wins over one that only normalizes to the same reference.
            let find = |exact: bool| -> Vec<&ArchiveEntry> {
                list.iter()
                    .filter(|e| e.tags().iter().any(|t| if exact { t == s } else { name_matches(s, t) }))
                    .collect()
            };
            let mut hits = find(true);
            if hits.is_empty() {
                hits = find(false);
            }
            match hits.as_slice() {
                [one] => Ok(one),
                [] => Err(Error::input(
                    ctx.subject(),
                    format!("{syntax} has no image tagged `{s}`; it has {}", describe(list)),
                )
                .with_hint(format!("use one of its RepoTags, or `{syntax}:@N`"))),
                _ => Err(Error::input(ctx.subject(), format!("`{s}` tags {} images in {syntax}", hits.len()))
                    .with_hint(format!("pick one by position: `{syntax}:@N` ({})", describe(list)))),
            }
        }
    }
}

/// Builds the OCI manifest for one archive entry.
fn convert(tar: &TarIndex, entry: &ArchiveEntry, ctx: &Ctx) -> Result<Resolved> {
    let loc = tar.path.display();
    let missing = |what: &str, name: &str| {
        Error::corrupt(ctx.subject(), format!("manifest.json names {what} {name} which is missing from {loc}"))
            .with_hint("the archive is incomplete; write it again with docker save or skopeo copy")
    };
    let config_member = tar.file(&entry.config).ok_or_else(|| missing("config", &entry.config))?;
    let config_content = tar.content(config_member);
    let config_bytes = read_content(&config_content, MAX_JSON_BYTES).map_err(|e| e.within(ctx.subject()))?;
    let config: DockerConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        Error::corrupt(ctx.subject(), format!("config {} in {loc} is not an image config: {e}", entry.config))
            .with_source(e)
    })?;
    let config_digest = Sha256Digest::of(&config_bytes);
    let diff_ids = config.rootfs.as_ref().map(|r| r.diff_ids.as_slice()).unwrap_or(&[]);
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::corrupt(
            ctx.subject(),
            format!(
                "config {} lists {} layers but manifest.json lists {}",
                entry.config,
                diff_ids.len(),
                entry.layers.len()
            ),
        )
        .with_hint("the archive is inconsistent; write it again"));
    }

    let mut blobs = vec![Blob {
        digest: config_digest,
        size: config_bytes.len() as u64,
        media_type: MEDIA_TYPE_OCI_CONFIG.to_string(),
        content: config_content,
    }];
    let mut layers = Vec::new();
    let mut hashed: BTreeMap<u64, (Sha256Digest, &'static str)> = BTreeMap::new();
    for (i, name) in entry.layers.iter().enumerate() {
        let m = tar.file(name).ok_or_else(|| missing("layer", name))?;
        let (digest, media_type) = match hashed.get(&m.offset) {
            Some(x) => *x,
            None => {
                let x = hash_member(tar, m)?;
                hashed.insert(m.offset, x);
                x
            }
        };
        // An uncompressed layer's digest is its diff ID: a free integrity check.
        if media_type == MEDIA_TYPE_LAYER_TAR && diff_ids[i] != digest.to_string() {
            return Err(Error::corrupt(
                ctx.subject(),
                format!(
                    "layer {name} in {loc} has digest {digest}, but the config says its diff ID is {}",
                    diff_ids[i]
                ),
            )
            .with_hint("the layer is damaged; write the archive again"));
        }
        layers.push(Descriptor::new(media_type, digest, m.size));
        blobs.push(Blob { digest, size: m.size, media_type: media_type.to_string(), content: tar.content(m) });
    }
    let manifest = ManifestOut {
        schema_version: 2,
        media_type: MEDIA_TYPE_OCI_MANIFEST,
        config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_digest, config_bytes.len() as u64),
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
    let digest = Sha256Digest::of(&bytes);
    let size = bytes.len() as u64;
    blobs.push(Blob { digest, size, media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(), content: Content::Bytes(bytes) });
    let platform = (!config.os.is_empty() && !config.architecture.is_empty()).then(|| Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone().filter(|v| !v.is_empty()),
    });
    Ok(Resolved::Manifest(ManifestEntry {
        descriptor: Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, digest, size),
        platform,
        outcome: Ok(blobs),
    }))
}

/// SHA-256 of a member's bytes, and its layer media type by content magic.
fn hash_member(tar: &TarIndex, m: &Member) -> Result<(Sha256Digest, &'static str)> {
    let path = &tar.path;
    let mut f = File::open(path).at(path)?;
    f.seek(SeekFrom::Start(m.offset)).at(path)?;
    let mut r = f.take(m.size);
    let mut h = airlock_format::digest::Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut magic = Vec::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        if magic.len() < 8 {
            magic.extend_from_slice(&buf[..n.min(8 - magic.len())]);
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != m.size {
        return Err(Error::corrupt(
            path.display().to_string(),
            format!("a layer at offset {} ends after {total} of {} bytes", m.offset, m.size),
        )
        .with_hint("the archive is truncated; write it again"));
    }
    let media_type = match sniff_compression(&magic) {
        Some("gzip") => MEDIA_TYPE_LAYER_GZIP,
        Some("zstd") => MEDIA_TYPE_LAYER_ZSTD,
        _ => MEDIA_TYPE_LAYER_TAR,
    };
    Ok((h.finish(), media_type))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{load_image, LoadedImage};
    use super::*;
    use airlock_format::ErrorKind;
    use std::path::{Path, PathBuf};

    struct DockerImage {
        tags: Vec<String>,
        os: &'static str,
        arch: &'static str,
        layers: Vec<Vec<u8>>,
        /// Name layers `<id>/layer.tar` as symlinks to `<diffid>.tar` (skopeo style).
        legacy_links: bool,
    }

    fn config_json(img: &DockerImage) -> Vec<u8> {
        let diff_ids: Vec<String> = img.layers.iter().map(|l| Sha256Digest::of(&uncompressed(l)).to_string()).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": img.arch, "os": img.os, "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap()
    }

    fn uncompressed(l: &[u8]) -> Vec<u8> {
        if l.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(l).read_to_end(&mut out).unwrap();
            out
        } else {
            l.to_vec()
        }
    }

    fn write_docker_archive(dir: &Path, name: &str, images: &[DockerImage]) -> PathBuf {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let mut manifest = Vec::new();
        for img in images {
            let config = config_json(img);
            let config_name = format!("{}.json", Sha256Digest::of(&config).hex());
            files.insert(config_name.clone(), config);
            let mut layer_names = Vec::new();
            for l in &img.layers {
                let real = format!("{}.tar", Sha256Digest::of(l).hex());
                files.insert(real.clone(), l.clone());
                if img.legacy_links {
                    let id = Sha256Digest::of(format!("id{real}").as_bytes()).hex();
                    let link = format!("{id}/layer.tar");
                    links.push((link.clone(), format!("../{real}")));
                    layer_names.push(link);
                } else {
                    layer_names.push(real);
                }
            }
            manifest.push(serde_json::json!({"Config": config_name, "RepoTags": img.tags, "Layers": layer_names}));
        }
        files.insert("manifest.json".into(), serde_json::to_vec(&manifest).unwrap());
        let path = dir.join(name);
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (n, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o444);
            h.set_cksum();
            b.append_data(&mut h, n, data.as_slice()).unwrap();
        }
        for (n, target) in &links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, n, target).unwrap();
        }
        b.finish().unwrap();
        path
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    fn manifest_of(img: &LoadedImage) -> serde_json::Value {
        let root = img.blobs.iter().find(|b| b.digest == img.digest).unwrap();
        serde_json::from_slice(&read_blob(&root.content)).unwrap()
    }

    #[test]
    fn single_image_converts_to_an_oci_manifest_with_layers_in_place() {
        let t = tempfile::tempdir().unwrap();
        let layers = vec![b"uncompressed layer bytes".to_vec(), gz(b"gzipped layer")];
        let img = DockerImage {
            tags: vec!["registry.example:5000/lab/bb:1".into()],
            os: "linux",
            arch: "amd64",
            layers: layers.clone(),
            legacy_links: true,
        };
        let archive = write_docker_archive(t.path(), "d.tar", &[img]);
        let got = load_image(&spec("registry.example:5000/lab/bb:1", "docker-archive:d.tar"), t.path()).unwrap();
        assert_eq!(got.media_type, MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(got.platforms, vec!["linux/amd64"]);
        let m = manifest_of(&got);
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MEDIA_TYPE_OCI_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_TAR);
        assert_eq!(m["layers"][1]["mediaType"], MEDIA_TYPE_LAYER_GZIP);
        assert_eq!(m["layers"][0]["digest"], Sha256Digest::of(&layers[0]).to_string());
        assert_eq!(m["layers"][1]["digest"], Sha256Digest::of(&layers[1]).to_string());
        // The manifest's JSON is exactly what its digest says, and stable.
        let root = got.blobs.iter().find(|b| b.digest == got.digest).unwrap();
        assert!(matches!(root.content, Content::Bytes(_)));
        assert_eq!(
            String::from_utf8(read_blob(&root.content)).unwrap(),
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{MEDIA_TYPE_OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"{MEDIA_TYPE_OCI_CONFIG}\",\"digest\":\"{}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"{MEDIA_TYPE_LAYER_TAR}\",\"digest\":\"{}\",\"size\":{}}},{{\"mediaType\":\"{MEDIA_TYPE_LAYER_GZIP}\",\"digest\":\"{}\",\"size\":{}}}]}}",
                m["config"]["digest"].as_str().unwrap(),
                m["config"]["size"],
                Sha256Digest::of(&layers[0]),
                layers[0].len(),
                Sha256Digest::of(&layers[1]),
                layers[1].len()
            )
        );
        // Config and layers are byte ranges of the archive with the right bytes.
        for b in got.blobs.iter().filter(|b| b.digest != got.digest) {
            assert!(matches!(&b.content, Content::FileRange { path, .. } if *path == archive));
            assert_eq!(Sha256Digest::of(&read_blob(&b.content)), b.digest);
        }
        assert_eq!(got.blobs.len(), 4);
        // Same input, same output.
        let again = load_image(&spec("registry.example:5000/lab/bb:1", "docker-archive:d.tar"), t.path()).unwrap();
        assert_eq!(again, got);
    }

    #[test]
    fn zstd_layer_is_typed_by_its_magic() {
        let t = tempfile::tempdir().unwrap();
        let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
        zst.extend_from_slice(b"not really zstd but the magic decides");
        let img = DockerImage {
            tags: vec!["x:1".into()],
            os: "linux",
            arch: "arm64",
            layers: vec![zst],
            legacy_links: false,
        };
        write_docker_archive(t.path(), "d.tar", &[img]);
        let got = load_image(&spec("x:1", "docker-archive:d.tar"), t.path()).unwrap();
        assert_eq!(manifest_of(&got)["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(got.platforms, vec!["linux/arm64"]);
    }

    fn two_images(t: &Path) {
        let a = DockerImage {
            tags: vec!["lab/a:1".into(), "lab/a:latest".into()],
            os: "linux",
            arch: "amd64",
            layers: vec![b"a-layer".to_vec()],
            legacy_links: true,
        };
        let b = DockerImage {
            tags: vec!["ghcr.io/lab/b:2".into()],
            os: "linux",
            arch: "amd64",
            layers: vec![b"b-layer".to_vec(), b"shared".to_vec()],
            legacy_links: false,
        };
        write_docker_archive(t, "multi.tar", &[a, b]);
    }

    #[test]
    fn multi_image_archive_selects_by_tag_or_position() {
        let t = tempfile::tempdir().unwrap();
        two_images(t.path());
        // RepoTags are matched after normalization.
        let a = load_image(&spec("docker.io/lab/a:1", "docker-archive:multi.tar:docker.io/lab/a:1"), t.path()).unwrap();
        let a2 = load_image(&spec("docker.io/lab/a:1", "docker-archive:multi.tar:lab/a"), t.path()).unwrap();
        let a3 = load_image(&spec("docker.io/lab/a:1", "docker-archive:multi.tar:@0"), t.path()).unwrap();
        assert_eq!(a.digest, a2.digest);
        assert_eq!(a.digest, a3.digest);
        let b = load_image(&spec("ghcr.io/lab/b:2", "docker-archive:multi.tar:ghcr.io/lab/b:2"), t.path()).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_eq!(manifest_of(&b)["layers"].as_array().unwrap().len(), 2);
        assert_eq!(manifest_of(&a)["layers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn an_archive_is_indexed_once_however_many_images_come_from_it() {
        use super::super::oci_archive::TAR_INDEXES;
        let t = tempfile::tempdir().unwrap();
        two_images(t.path());
        let mut cache = super::super::SourceCache::default();
        let before = TAR_INDEXES.with(|c| c.get());
        for _ in 0..10 {
            for (reference, from) in [
                ("docker.io/lab/a:1", "docker-archive:multi.tar:@0"),
                ("ghcr.io/lab/b:2", "docker-archive:multi.tar:@1"),
            ] {
                super::super::load_image_with(&spec(reference, from), t.path(), &mut cache).unwrap();
            }
        }
        assert_eq!(TAR_INDEXES.with(|c| c.get()) - before, 1, "the archive's members were listed again per image");
    }

    #[test]
    fn multi_image_archive_without_selector_lists_the_images() {
        let t = tempfile::tempdir().unwrap();
        two_images(t.path());
        let e = load_image(&spec("x", "docker-archive:multi.tar"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("lab/a:1") && e.cause.contains("ghcr.io/lab/b:2"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("@N"), "{e}");
        let e = load_image(&spec("x", "docker-archive:multi.tar:lab/c:1"), t.path()).unwrap_err();
        assert!(e.cause.contains("no image tagged `lab/c:1`") && e.cause.contains("ghcr.io/lab/b:2"), "{e}");
        let e = load_image(&spec("x", "docker-archive:multi.tar:@7"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
    }

    #[test]
    fn missing_layer_and_diff_id_mismatch_are_corrupt() {
        let t = tempfile::tempdir().unwrap();
        let img = DockerImage {
            tags: vec!["x:1".into()],
            os: "linux",
            arch: "amd64",
            layers: vec![b"abc".to_vec()],
            legacy_links: true,
        };
        let path = write_docker_archive(t.path(), "d.tar", &[img]);
        // Drop the real layer file: the symlink now dangles.
        let bytes = rewrite_tar(
            &path,
            |name, data| {
                if name.ends_with(".tar") && !name.contains('/') {
                    None
                } else {
                    Some(data)
                }
            },
        );
        std::fs::write(t.path().join("missing.tar"), bytes).unwrap();
        let e = load_image(&spec("x:1", "docker-archive:missing.tar"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.cause.contains("missing from") && e.cause.contains("layer.tar"), "{e}");
        assert!(e.subject.contains("docker.io/library/x:1"), "{e}");
        // Same size, other bytes: the diff ID check catches it.
        let bytes =
            rewrite_tar(&path, |name, data| if name.ends_with(".tar") { Some(b"xyz".to_vec()) } else { Some(data) });
        std::fs::write(t.path().join("changed.tar"), bytes).unwrap();
        let e = load_image(&spec("x:1", "docker-archive:changed.tar"), t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.cause.contains("diff ID"), "{e}");
    }

    /// Copies a tar, passing each regular file through `f` (None drops it).
    fn rewrite_tar(path: &Path, f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
        let mut a = tar::Archive::new(File::open(path).unwrap());
        let mut b = tar::Builder::new(Vec::new());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut h = e.header().clone();
            if h.entry_type().is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                if let Some(d) = f(&name, data) {
                    h.set_size(d.len() as u64);
                    b.append_data(&mut h, &name, d.as_slice()).unwrap();
                }
            } else if h.entry_type().is_dir() {
                b.append_data(&mut h, &name, std::io::empty()).unwrap();
            } else {
                let target = e.link_name().unwrap().unwrap().into_owned();
                b.append_link(&mut h, &name, target).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn docker_25_archive_with_oci_layout_is_read_as_oci() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"layer"]);
        l.name_with(
            &img,
            &[
                ("io.containerd.image.name", "docker.io/library/busybox:latest"),
                ("org.opencontainers.image.ref.name", "latest"),
            ],
        );
        let manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", img.config.hex()),
            "RepoTags": ["busybox:latest"],
            "Layers": img.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }]);
        l.extra_files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
        l.write_archive(t.path(), "d25.tar", false);
        for from in ["docker-archive:d25.tar", "docker-archive:d25.tar:busybox", "docker-archive:d25.tar:@0"] {
            let got = load_image(&spec("busybox", from), t.path()).unwrap_or_else(|e| panic!("{from}: {e}"));
            // Docker's own manifest is kept, not converted.
            assert_eq!(got.digest, img.digest, "{from}");
        }
    }

    #[test]
    fn a_docker_25_archive_whose_index_lists_nothing_is_read_through_manifest_json() {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layout::new();
        let img = l.image("linux", "amd64", None, &[b"layer"]);
        l.name(&img, "latest");
        let manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", img.config.hex()),
            "RepoTags": null,
            "Layers": img.layers.iter().map(|d| format!("blobs/sha256/{}", d.hex())).collect::<Vec<_>>(),
        }]);
        l.extra_files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
        let path = l.write_archive(t.path(), "d25.tar", false);
        for (name, index) in [
            ("null.tar", r#"{"schemaVersion":2,"manifests":null}"#),
            ("empty.tar", r#"{"schemaVersion":2,"manifests":[]}"#),
        ] {
            let bytes =
                rewrite_tar(&path, |n, data| Some(if n == "index.json" { index.as_bytes().to_vec() } else { data }));
            std::fs::write(t.path().join(name), bytes).unwrap();
            let got = load_image(&spec("x:1", &format!("docker-archive:{name}")), t.path())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let root = got.blobs.iter().find(|b| b.digest == got.digest).unwrap();
            let m: serde_json::Value =
                serde_json::from_slice(&super::super::testutil::read_blob(&root.content)).unwrap();
            assert_eq!(m["config"]["digest"], img.config.to_string(), "{name}");
            assert_eq!(m["layers"][0]["digest"], img.layers[0].to_string(), "{name}");
        }
        // An index.json that is not even JSON is still reported by the OCI reader.
        let bytes = rewrite_tar(&path, |n, data| Some(if n == "index.json" { b"{".to_vec() } else { data }));
        std::fs::write(t.path().join("broken.tar"), bytes).unwrap();
        let e = load_image(&spec("x:1", "docker-archive:broken.tar"), t.path()).unwrap_err();
        assert!(e.cause.contains("index.json"), "{e}");
    }

    #[test]
    fn platform_filter_on_a_single_image() {
        let t = tempfile::tempdir().unwrap();
        let img = DockerImage {
            tags: vec!["x:1".into()],
            os: "linux",
            arch: "amd64",
            layers: vec![b"l".to_vec()],
            legacy_links: false,
        };
        write_docker_archive(t.path(), "d.tar", &[img]);
        let mut s = spec("x:1", "docker-archive:d.tar");
        s.platforms = Some(vec!["linux/amd64".into()]);
        assert!(load_image(&s, t.path()).is_ok());
        s.platforms = Some(vec!["linux/arm64".into()]);
        let e = load_image(&s, t.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.cause.contains("linux/arm64") && e.cause.contains("it has linux/amd64"), "{e}");
    }
}
