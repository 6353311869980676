//! The bundle's software bill of materials: a CycloneDX 1.5 JSON document stored as
//! the `sbom.cdx.json` entry, so the signed manifest covers it like every other entry.
//!
//! It lists every image (reference, digest, platforms), chart (name, version, digest),
//! distribution artifact, file and the installer (name, version, SHA-256), and the OS
//! packages found in each image's layers: Debian's `var/lib/dpkg/status` and Alpine's
//! `lib/apk/db/installed`, with `etc/os-release` naming the distribution.
//!
//! Layers are read in order and whiteouts applied (`.wh.NAME` removes a path from the
//! layers below, `.wh..wh..opq` empties a directory), so a package database that a
//! later layer deleted or replaced is not reported. Each layer is scanned once per
//! build however many images share it. Nothing here depends on the clock or on map
//! order: the same inputs give the same bytes.
//!
//! What a layer holds follows from its digest alone, so the findings of each scanned
//! layer are kept in the user cache ([`LayerCache`], `sbom-layers/` next to the blob
//! cache) and the next build reads them instead of unpacking the layer again: most
//! layers of a release are the ones the previous release had. Findings are stored
//! only after the bundle was written, that is after the writer checked every layer's
//! bytes against its digest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;

use airlock_format::digest::Sha256Digest;
use airlock_format::error::{Error, Result};
use airlock_format::write::Content;
use serde_json::{json, Value};

use crate::sources::Blob;

/// Where the SBOM lives in the bundle.
pub const SBOM_ENTRY: &str = "sbom.cdx.json";

/// Files the scanner keeps from the layers (paths relative to the image root).
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const APK_INSTALLED: &str = "lib/apk/db/installed";
const OS_RELEASE: &str = "etc/os-release";
const OS_RELEASE_USR: &str = "usr/lib/os-release";
const TRACKED: [&str; 4] = [DPKG_STATUS, APK_INSTALLED, OS_RELEASE, OS_RELEASE_USR];
/// A package database larger than this is not a package database: refuse to buffer it.
const MAX_TRACKED_FILE: u64 = 64 << 20;

/// One image as the SBOM describes it.
pub struct SbomImage<'a> {
    pub reference: &'a str,
    pub component: &'a str,
    pub digest: Sha256Digest,
    pub media_type: &'a str,
    pub platforms: &'a [String],
    /// Every blob of the image, the root manifest or index included.
    pub blobs: Vec<&'a Blob>,
    /// Which charts asked for the image (image discovery), as `chart: where` lines.
    pub requested_by: Vec<String>,
}

/// A chart, artifact, file or the installer: something with a name, a version and bytes.
pub struct SbomFile<'a> {
    /// `chart`, `distribution`, `file`, `installer`, `profile`.
    pub kind: &'a str,
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub component: Option<&'a str>,
    /// The entry path inside the bundle.
    pub path: &'a str,
    pub sha256: Sha256Digest,
}

/// What the SBOM describes.
pub struct SbomInput<'a> {
    pub bundle_name: &'a str,
    pub bundle_version: &'a str,
    /// RFC 3339, the bundle's creation time.
    pub created: &'a str,
    pub images: Vec<SbomImage<'a>>,
    pub files: Vec<SbomFile<'a>>,
    /// Findings of layers scanned by earlier builds; layers scanned now are added to it.
    pub cache: Option<&'a LayerCache>,
}

/// An OS package found in an image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OsPackage {
    /// `deb` or `apk`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// Source package (Debian `Source:`, Alpine `o:`), when it differs from the name.
    pub source: Option<String>,
    pub license: Option<String>,
}

/// The OS an image's layers describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsFindings {
    /// `ID` from os-release (`debian`, `ubuntu`, `alpine`, ...).
    pub os_id: Option<String>,
    /// `VERSION_ID` from os-release.
    pub os_version: Option<String>,
    pub packages: Vec<OsPackage>,
    /// Layers that are not tar archives (OCI artifacts, foreign or opaque layers): their
    /// digests were verified, but there are no files in them to read packages from.
    pub unscanned: Vec<Sha256Digest>,
}

/// What one layer contributes: the tracked files it writes, and what it deletes from
/// the layers below.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LayerFindings {
    files: BTreeMap<String, Vec<u8>>,
    /// Paths removed by `.wh.NAME` (the path and everything beneath it).
    removed: Vec<String>,
    /// Directories emptied by `.wh..wh..opq`.
    opaque: Vec<String>,
    /// The blob is not a (compressed) tar archive.
    unreadable: bool,
}

/// Builds the CycloneDX document. Layers are read from their blobs' content (the same
/// content the bundle will carry).
pub fn build(input: &SbomInput<'_>) -> Result<Vec<u8>> {
    let per_image = input.images.iter().map(platform_layers).collect::<Result<Vec<_>>>()?;
    let mut layer_cache = scan_layers_in_parallel(&per_image, input.cache);
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for (img, platforms) in input.images.iter().zip(per_image) {
        let image_ref = format!("image:{}", img.reference);
        let mut props = vec![prop("airlock:reference", img.reference), prop("airlock:component", img.component)];
        props.push(prop("airlock:mediaType", img.media_type));
        for p in img.platforms {
            props.push(prop("airlock:platform", p));
        }
        for r in &img.requested_by {
            props.push(prop("airlock:requestedBy", r));
        }
        let (name, tag) = split_reference(img.reference);
        components.push(json!({
            "type": "container",
            "bom-ref": image_ref,
            "name": name,
            "version": tag.unwrap_or_else(|| img.digest.to_string()),
            "hashes": [{"alg": "SHA-256", "content": img.digest.hex()}],
            "purl": oci_purl(img.reference, img.digest, None),
            "properties": props,
        }));
        let image_index = components.len() - 1;
        let mut depends = Vec::new();
        for (platform, layers) in platforms {
            let found = scan_image(&layers, &mut layer_cache).map_err(|e| e.within(img.reference))?;
            for d in &found.unscanned {
                let p = prop("airlock:unscannedLayer", &format!("{platform} {d}: not a tar archive, no packages read"));
                if let Some(props) = components[image_index]["properties"].as_array_mut() {
                    props.push(p);
                }
            }
            let arch = platform.split('/').nth(1).map(str::to_string);
            for pkg in &found.packages {
                let purl = package_purl(pkg, &found, arch.as_deref());
                let bom_ref = format!("{image_ref}|{platform}|{purl}");
                let mut props = vec![prop("airlock:image", img.reference), prop("airlock:platform", &platform)];
                if let Some(s) = &pkg.source {
                    props.push(prop("airlock:sourcePackage", s));
                }
                let mut c = json!({
                    "type": "library",
                    "bom-ref": bom_ref,
                    "name": pkg.name,
                    "version": pkg.version,
                    "purl": purl,
                    "properties": props,
                });
                if let Some(l) = &pkg.license {
                    c["licenses"] = json!([{"expression": l}]);
                }
                components.push(c);
                depends.push(Value::String(bom_ref));
            }
        }
        dependencies.push(json!({"ref": image_ref, "dependsOn": depends}));
    }
    for f in &input.files {
        let mut props = vec![prop("airlock:kind", f.kind), prop("airlock:path", f.path)];
        if let Some(c) = f.component {
            props.push(prop("airlock:component", c));
        }
        let mut c = json!({
            "type": if f.kind == "chart" { "application" } else { "file" },
            "bom-ref": format!("{}:{}", f.kind, f.path),
            "name": f.name,
            "hashes": [{"alg": "SHA-256", "content": f.sha256.hex()}],
            "properties": props,
        });
        if let Some(v) = f.version {
            c["version"] = json!(v);
        }
        components.push(c);
    }
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": input.created,
            "tools": {"components": [{
                "type": "application",
                "name": "airlock-bundler",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "application",
                "bom-ref": "bundle",
                "name": input.bundle_name,
                "version": input.bundle_version,
            },
        },
        "components": components,
        "dependencies": dependencies,
    });
    // A serial number is required to be unique per BOM, and a build must repeat byte
    // for byte: derive it from the content instead of drawing a random one.
    let body = serde_json::to_vec(&doc).expect("JSON values serialize");
    let h = Sha256Digest::of(&body).hex();
    doc["serialNumber"] =
        json!(format!("urn:uuid:{}-{}-5{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32]));
    let mut out = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
    out.push(b'\n');
    Ok(out)
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// `registry/path/name` and the tag of a full reference (`@digest` dropped).
fn split_reference(reference: &str) -> (String, Option<String>) {
    let no_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => (no_digest[..last_slash + i].to_string(), Some(no_digest[last_slash + i + 1..].to_string())),
        None => (no_digest.to_string(), None),
    }
}

/// purl-spec percent-encoding: everything but unreserved characters.
fn enc(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:oci/NAME@sha256%3AHEX?repository_url=REPO&tag=TAG` (purl-spec's oci type).
fn oci_purl(reference: &str, digest: Sha256Digest, arch: Option<&str>) -> String {
    let (repo, tag) = split_reference(reference);
    let name = repo.rsplit('/').next().unwrap_or(&repo).to_ascii_lowercase();
    let mut q = Vec::new();
    if let Some(a) = arch {
        q.push(format!("arch={}", enc(a, false)));
    }
    q.push(format!("repository_url={}", enc(&repo, true)));
    if let Some(t) = tag {
        q.push(format!("tag={}", enc(&t, false)));
    }
    format!("pkg:oci/{}@{}?{}", enc(&name, false), enc(&digest.to_string(), false), q.join("&"))
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`, `pkg:apk/alpine/...`.
fn package_purl(p: &OsPackage, os: &OsFindings, image_arch: Option<&str>) -> String {
    let default_ns = if p.kind == "apk" { "alpine" } else { "debian" };
    let ns = os.os_id.as_deref().unwrap_or(default_ns).to_ascii_lowercase();
    let mut q = Vec::new();
    if let Some(a) = p.arch.as_deref().or(image_arch) {
        q.push(format!("arch={}", enc(a, false)));
    }
    if let (Some(id), Some(v)) = (&os.os_id, &os.os_version) {
        q.push(format!("distro={}", enc(&format!("{id}-{v}"), false)));
    }
    let mut s = format!("pkg:{}/{}/{}@{}", p.kind, enc(&ns, false), enc(&p.name, false), enc(&p.version, false));
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q.join("&"));
    }
    s
}

/// For each platform manifest of the image: its platform (`os/arch[/variant]`) and its
/// layer blobs in order.
fn platform_layers<'a>(img: &SbomImage<'a>) -> Result<PlatformLayers<'a>> {
    let by_digest: BTreeMap<Sha256Digest, &Blob> = img.blobs.iter().map(|b| (b.digest, *b)).collect();
    let read_json = |d: &Sha256Digest| -> Result<Option<Value>> {
        let Some(b) = by_digest.get(d) else { return Ok(None) };
        let bytes = read_all(&b.content, b.size)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(format!("{} blob {d}", img.reference), format!("not valid JSON: {e}")))
    };
    let root = read_json(&img.digest)?.ok_or_else(|| {
        Error::corrupt(img.reference, format!("the root blob {} is not among the image's blobs", img.digest))
            .with_hint("this is a bundler bug; report it with the image source")
    })?;
    let mut manifests: Vec<(Option<String>, Value)> = Vec::new();
    if let Some(list) = root.get("manifests").and_then(Value::as_array) {
        for m in list {
            let Some(d) = m.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Sha256Digest>().ok()) else {
                continue;
            };
            let platform = m.get("platform").map(platform_string);
            // Attestation manifests (buildx writes them as unknown/unknown) hold no rootfs.
            if platform.as_deref().is_some_and(|p| p.starts_with("unknown")) {
                continue;
            }
            // Platforms filtered out of the bundle have no blobs here.
            if let Some(v) = read_json(&d)? {
                manifests.push((platform, v));
            }
        }
    } else {
        manifests.push((None, root));
    }
    let mut out = Vec::new();
    for (platform, m) in manifests {
        let config_digest =
            m.pointer("/config/digest").and_then(Value::as_str).and_then(|d| d.parse::<Sha256Digest>().ok());
        let platform = match platform {
            Some(p) => p,
            None => match config_digest.map(|d| read_json(&d)).transpose()?.flatten() {
                Some(cfg) => platform_string(&cfg),
                None => "unknown".to_string(),
            },
        };
        let mut layers = Vec::new();
        for l in m.get("layers").and_then(Value::as_array).into_iter().flatten() {
            if let Some(b) = l
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Sha256Digest>().ok())
                .and_then(|d| by_digest.get(&d))
            {
                layers.push(*b);
            }
        }
        out.push((platform, layers));
    }
    Ok(out)
}

fn platform_string(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut p = format!("{}/{}", s("os"), s("architecture"));
    if !s("variant").is_empty() {
        p.push('/');
        p.push_str(&s("variant"));
    }
    p
}

fn read_all(c: &Content, size: u64) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(size.min(1 << 20) as usize);
    c.open()?.read_to_end(&mut v).map_err(|e| Error::io(c.origin(), e))?;
    Ok(v)
}

/// Every layer of every image scanned once, on every core. Unpacking gzip layers is most
/// of a build's work on real images (about 0.5 s per 100 MiB layer on one core, where
/// writing it into the bundle is a copy), and each layer is independent of the others.
/// A layer that cannot be read is left out here; [`scan_image`] reads it again in order
/// and reports it with the image it belongs to.
fn scan_layers_in_parallel(
    per_image: &[PlatformLayers<'_>],
    cache: Option<&LayerCache>,
) -> BTreeMap<Sha256Digest, LayerFindings> {
    let mut layers: BTreeMap<Sha256Digest, &Blob> = BTreeMap::new();
    for (_, ls) in per_image.iter().flatten() {
        for b in ls {
            layers.entry(b.digest).or_insert(b);
        }
    }
    let mut known = BTreeMap::new();
    if let Some(c) = cache {
        layers.retain(|d, _| match c.load(d) {
            Some(f) => {
                known.insert(*d, f);
                false
            }
            None => true,
        });
    }
    let layers: Vec<&Blob> = layers.into_values().collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(layers.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(b) = layers.get(i) else { return };
                let f = match scan_layer(b) {
                    Ok(f) => f,
                    Err(e) if e.kind == airlock_format::ErrorKind::Corrupt => {
                        LayerFindings { unreadable: true, ..LayerFindings::default() }
                    }
                    Err(_) => continue,
                };
                if let Some(c) = cache {
                    c.scanned(b.digest, &f);
                }
                found.lock().unwrap_or_else(|p| p.into_inner()).insert(b.digest, f);
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.extend(known);
    found
}

/// Layer findings kept across builds, one file per layer digest under `dir`.
///
/// The cache is the user's, like the blob cache next to it: a findings file is trusted
/// as the blobs there are once their digest matched. A file that does not parse is a
/// miss, and the layer is scanned again. The file names carry [`FINDINGS_VERSION`], so
/// a bundler that reads layers differently never uses another one's findings.
pub struct LayerCache {
    dir: PathBuf,
    /// Scanned in this build, stored by [`LayerCache::store`] once the bundle is written.
    fresh: Mutex<BTreeMap<Sha256Digest, Vec<u8>>>,
}

/// Bumped whenever what [`scan_layer`] keeps from a layer changes.
const FINDINGS_VERSION: u32 = 1;

impl LayerCache {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), fresh: Mutex::new(BTreeMap::new()) }
    }

    fn path(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join(format!("v{FINDINGS_VERSION}-{}.json", d.hex()))
    }

    fn load(&self, d: &Sha256Digest) -> Option<LayerFindings> {
        let bytes = std::fs::read(self.path(d)).ok()?;
        findings_from_json(&serde_json::from_slice(&bytes).ok()?)
    }

    fn scanned(&self, d: Sha256Digest, f: &LayerFindings) {
        let bytes = serde_json::to_vec(&findings_to_json(f)).expect("JSON values serialize");
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).insert(d, bytes);
    }

    /// Stores the findings of the layers scanned in this build whose digest is in
    /// `checked` (the layers the written bundle carries, whose bytes the writer
    /// matched against their digests). Returns how many were stored.
    pub fn store(&self, checked: &BTreeSet<Sha256Digest>) -> Result<usize> {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()));
        let mut stored = 0;
        for (d, bytes) in fresh.iter().filter(|(d, _)| checked.contains(d)) {
            if stored == 0 {
                std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
            }
            let dest = self.path(d);
            let tmp = self.dir.join(format!(".{}.{}.partial", d.hex(), std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
            stored += 1;
        }
        Ok(stored)
    }
}

fn findings_to_json(f: &LayerFindings) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let files: serde_json::Map<String, Value> =
        f.files.iter().map(|(p, b)| (p.clone(), Value::String(b64.encode(b)))).collect();
    json!({"files": files, "removed": f.removed, "opaque": f.opaque, "unreadable": f.unreadable})
}

fn findings_from_json(v: &Value) -> Option<LayerFindings> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let strings = |k: &str| -> Option<Vec<String>> {
        v.get(k)?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
    };
    let mut files = BTreeMap::new();
    for (p, b) in v.get("files")?.as_object()? {
        files.insert(p.clone(), b64.decode(b.as_str()?).ok()?);
    }
    Some(LayerFindings {
        files,
        removed: strings("removed")?,
        opaque: strings("opaque")?,
        unreadable: v.get("unreadable")?.as_bool()?,
    })
}

/// Each platform of an image (`os/arch`) with its layers, bottom first.
type PlatformLayers<'a> = Vec<(String, Vec<&'a Blob>)>;

/// Applies the layers in order and parses what the top of the stack holds.
fn scan_image(layers: &[&Blob], cache: &mut BTreeMap<Sha256Digest, LayerFindings>) -> Result<OsFindings> {
    let mut state: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut unscanned = Vec::new();
    for b in layers {
        let f = match cache.entry(b.digest) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(match scan_layer(b) {
                    Ok(f) => f,
                    // Not a tar: nothing to list, which the SBOM says; only failing to
                    // read the bytes at all stops the build.
                    Err(e) if e.kind == airlock_format::ErrorKind::Corrupt => {
                        LayerFindings { unreadable: true, ..LayerFindings::default() }
                    }
                    Err(e) => return Err(e.within(format!("layer {}", b.digest))),
                })
            }
        };
        if f.unreadable {
            unscanned.push(b.digest);
        }
        // Whiteouts hide what the layers below hold; this layer's own files stay.
        for r in &f.removed {
            state.retain(|p, _| p != r && !p.starts_with(&format!("{r}/")));
        }
        for d in &f.opaque {
            state.retain(|p, _| !p.starts_with(&format!("{d}/")));
        }
        for (p, bytes) in &f.files {
            state.insert(p.clone(), bytes.clone());
        }
    }
    let mut found = OsFindings::default();
    if let Some(text) = state.get(OS_RELEASE).or_else(|| state.get(OS_RELEASE_USR)) {
        let text = String::from_utf8_lossy(text);
        found.os_id = os_release_field(&text, "ID");
        found.os_version = os_release_field(&text, "VERSION_ID");
    }
    if let Some(text) = state.get(DPKG_STATUS) {
        found.packages.extend(parse_dpkg_status(&String::from_utf8_lossy(text)));
    }
    if let Some(text) = state.get(APK_INSTALLED) {
        found.packages.extend(parse_apk_installed(&String::from_utf8_lossy(text)));
    }
    found.packages.sort();
    found.packages.dedup();
    found.unscanned = unscanned;
    Ok(found)
}

/// Reads one layer tar (gzip, zstd or plain, told by magic bytes, not by media type,
/// which Docker archives often get wrong) and keeps the tracked files and whiteouts.
fn scan_layer(b: &Blob) -> Result<LayerFindings> {
    let mut raw = BufReader::new(b.content.open()?);
    let mut magic = [0u8; 4];
    let n = airlock_format::write::read_full(&mut raw, &mut magic).map_err(|e| Error::io(b.content.origin(), e))?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(raw);
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        // Parallel gzip writers (umoci, pigz) emit several members: read them all.
        Box::new(crate::gunzip::MultiGzReader::new(BufReader::with_capacity(1 << 16, head)))
    } else if n == 4 && magic == [0x28, 0xB5, 0x2F, 0xFD] {
        Box::new(zstd::stream::read::Decoder::new(head).map_err(|e| Error::io(b.content.origin(), e))?)
    } else {
        Box::new(head)
    };
    let corrupt = |e: std::io::Error| {
        Error::corrupt(b.content.origin(), format!("the layer is not a readable tar archive: {e}"))
            .with_hint("the image source is damaged; pull or export the image again")
    };
    let mut out = LayerFindings::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = match entry {
            Ok(e) => e,
            // umoci 0.4 `insert` writes layers that end after the last member without
            // padding or end marker (GNU tar says "Unexpected EOF" too); runtimes
            // unpack them, so the members read so far are the layer.
            // The tar crate reports that as an `Other` error "unexpected EOF ...".
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof || e.to_string().contains("unexpected EOF") => {
                break
            }
            Err(e) => return Err(corrupt(e)),
        };
        let raw_path = entry.path().map_err(corrupt)?.to_string_lossy().into_owned();
        let path = normalize(&raw_path);
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            out.opaque.push(dir);
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            out.removed.push(if dir.is_empty() { hidden.to_string() } else { format!("{dir}/{hidden}") });
            continue;
        }
        if !TRACKED.contains(&path.as_str()) {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            // A link or directory at a tracked path replaces the file below it; a
            // symlinked os-release is read from its usual target instead.
            out.removed.push(path);
            continue;
        }
        if entry.size() > MAX_TRACKED_FILE {
            return Err(Error::corrupt(
                format!("{} in {}", path, b.content.origin()),
                format!("{} bytes, more than a package database holds", entry.size()),
            )
            .with_hint("the image layer is not what it claims to be; check the image source"));
        }
        let mut v = Vec::new();
        entry.read_to_end(&mut v).map_err(corrupt)?;
        out.files.insert(path, v);
    }
    Ok(out)
}

fn normalize(p: &str) -> String {
    p.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string()).filter(|v| !v.is_empty())
    })
}

/// Installed packages from a dpkg status file (`Status: install ok installed` only;
/// packages that were removed but left config files behind are not installed).
pub fn parse_dpkg_status(text: &str) -> Vec<OsPackage> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let fields = deb_fields(&para);
        let get = |k: &str| fields.get(&k.to_ascii_lowercase()).cloned();
        let installed = get("Status").is_some_and(|s| s.split_whitespace().last() == Some("installed"));
        let (Some(name), Some(version)) = (get("Package"), get("Version")) else { continue };
        if !installed {
            continue;
        }
        // `Source: name (version)` when the source version differs.
        let source = get("Source").and_then(|s| s.split_whitespace().next().map(str::to_string)).filter(|s| *s != name);
        out.push(OsPackage { kind: "deb", name, version, arch: get("Architecture"), source, license: None });
    }
    out
}

/// Installed packages from Alpine's `lib/apk/db/installed` (`P:` name, `V:` version,
/// `A:` arch, `o:` origin, `L:` license).
pub fn parse_apk_installed(text: &str) -> Vec<OsPackage> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let mut f: BTreeMap<char, String> = BTreeMap::new();
        for l in para.lines() {
            let mut cs = l.chars();
            if let (Some(k), Some(':')) = (cs.next(), cs.next()) {
                f.entry(k).or_insert_with(|| cs.as_str().to_string());
            }
        }
        let (Some(name), Some(version)) = (f.get(&'P').cloned(), f.get(&'V').cloned()) else { continue };
        let source = f.get(&'o').cloned().filter(|o| *o != name);
        out.push(OsPackage {
            kind: "apk",
            name,
            version,
            arch: f.get(&'A').cloned(),
            source,
            license: f.get(&'L').cloned().filter(|l| !l.is_empty()),
        });
    }
    out
}

fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        if l.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(l);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// deb822 fields of one paragraph, names lower-cased; continuation lines are dropped
/// (only single-line fields are used).
fn deb_fields(para: &str) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    for l in para.lines() {
        if l.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = l.split_once(':') {
            f.entry(k.trim().to_ascii_lowercase()).or_insert_with(|| v.trim().to_string());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Blob {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let bytes = gz.finish().unwrap();
        Blob {
            digest: Sha256Digest::of(&bytes),
            size: bytes.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            content: Content::Bytes(bytes),
        }
    }

    const STATUS: &[u8] = b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\n\
Version: 2.36-9+deb12u4\nDescription: GNU C Library\n continuation line\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n";

    #[test]
    fn a_layer_that_is_not_a_tar_is_listed_as_unscanned_instead_of_failing_the_build() {
        let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let l = Blob {
            digest: Sha256Digest::of(&random),
            size: random.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            content: Content::Bytes(random),
        };
        let found = scan_image(&[&l], &mut BTreeMap::new()).unwrap();
        assert!(found.packages.is_empty());
        assert_eq!(found.unscanned, vec![l.digest]);
    }

    /// One image of `layers`, as `build` sees it.
    fn scan_with_cache(layers: &[&Blob], cache: &LayerCache) -> BTreeMap<Sha256Digest, LayerFindings> {
        scan_layers_in_parallel(&[vec![("linux/amd64".to_string(), layers.to_vec())]], Some(cache))
    }

    #[test]
    fn a_cached_layer_is_not_unpacked_again_and_gives_the_same_findings() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = layer(&[("var/lib/dpkg/status", STATUS), ("etc/.wh.gone", b"")]);
        let l2 = layer(&[("var/lib/.wh..wh..opq", b"")]);
        let cache = LayerCache::new(&dir.path().join("sbom-layers"));
        let first = scan_with_cache(&[&l1, &l2], &cache);
        assert_eq!(cache.store(&[l1.digest, l2.digest].into()).unwrap(), 2);
        // The same digests with bytes that are no tar at all: only the cache can give
        // the packages back.
        let stale = |l: &Blob| Blob { content: Content::Bytes(b"not a layer".to_vec()), ..l.clone() };
        let again = scan_with_cache(&[&stale(&l1), &stale(&l2)], &LayerCache::new(&dir.path().join("sbom-layers")));
        assert_eq!(again, first);
        assert_eq!(again[&l1.digest].files[DPKG_STATUS], STATUS);
        assert_eq!(again[&l1.digest].removed, ["etc/gone"]);
        assert_eq!(again[&l2.digest].opaque, ["var/lib"]);
    }

    #[test]
    fn only_layers_the_written_bundle_checked_are_kept_and_a_damaged_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2) = (layer(&[("var/lib/dpkg/status", STATUS)]), layer(&[("etc/os-release", b"ID=debian\n")]));
        let cache = LayerCache::new(dir.path());
        scan_with_cache(&[&l1, &l2], &cache);
        assert_eq!(cache.store(&[l2.digest].into()).unwrap(), 1);
        assert!(cache.load(&l1.digest).is_none(), "l1 was not written, so not checked");
        assert!(cache.load(&l2.digest).is_some());
        std::fs::write(cache.path(&l2.digest), b"{\"files\": 3}").unwrap();
        assert!(cache.load(&l2.digest).is_none());
        let rescanned = scan_with_cache(&[&l2], &cache);
        assert_eq!(rescanned[&l2.digest].files[OS_RELEASE], b"ID=debian\n");
    }

    #[test]
    fn dpkg_status_lists_only_installed_packages_with_source() {
        let p = parse_dpkg_status(std::str::from_utf8(STATUS).unwrap());
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, [("libc6", "2.36-9+deb12u4"), ("base-files", "12.4+deb12u5")]);
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
    }

    #[test]
    fn apk_database_gives_name_version_arch_license() {
        let p = parse_apk_installed("C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\n");
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str(), p[0].arch.as_deref()),
            ("musl", "1.2.5-r0", Some("x86_64"))
        );
        assert_eq!(p[0].source, None, "origin equal to the name is not repeated");
        assert_eq!(p[1].license.as_deref(), Some("GPL-2.0-only"));
    }

    #[test]
    fn whiteout_in_a_later_layer_hides_the_package_database() {
        let l1 = layer(&[("var/lib/dpkg/status", STATUS)]);
        let l2 = layer(&[("var/lib/dpkg/.wh.status", b"")]);
        let mut cache = BTreeMap::new();
        assert_eq!(scan_image(&[&l1], &mut cache).unwrap().packages.len(), 2);
        assert!(scan_image(&[&l1, &l2], &mut cache).unwrap().packages.is_empty());
    }

    #[test]
    fn opaque_directory_hides_lower_files_but_keeps_its_own() {
        let l1 = layer(&[("./var/lib/dpkg/status", STATUS)]);
        let l2 = layer(&[
            ("var/lib/dpkg/status", b"Package: only\nStatus: install ok installed\nVersion: 9\n"),
            ("var/lib/dpkg/.wh..wh..opq", b""),
        ]);
        let p = scan_image(&[&l1, &l2], &mut BTreeMap::new()).unwrap().packages;
        assert_eq!(p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["only"]);
        let l3 = layer(&[("var/lib/.wh..wh..opq", b"")]);
        assert!(scan_image(&[&l1, &l3], &mut BTreeMap::new()).unwrap().packages.is_empty());
    }

    #[test]
    fn later_layer_replaces_the_database_and_os_release_sets_the_namespace() {
        let l1 = layer(&[("var/lib/dpkg/status", STATUS)]);
        let l2 = layer(&[
            ("var/lib/dpkg/status", b"Package: bash\nStatus: install ok installed\nVersion: 1:5.2-1\n"),
            ("etc/os-release", b"ID=ubuntu\nVERSION_ID=\"24.04\"\n"),
        ]);
        let found = scan_image(&[&l1, &l2], &mut BTreeMap::new()).unwrap();
        assert_eq!(found.packages.len(), 1);
        assert_eq!(
            package_purl(&found.packages[0], &found, Some("amd64")),
            "pkg:deb/ubuntu/bash@1%3A5.2-1?arch=amd64&distro=ubuntu-24.04"
        );
    }

    #[test]
    fn oci_purl_names_repository_and_tag() {
        let d = Sha256Digest([0xab; 32]);
        let p = oci_purl("registry.local:5000/team/api:1.0", d, None);
        assert_eq!(
            p,
            format!("pkg:oci/api@sha256%3A{}?repository_url=registry.local%3A5000/team/api&tag=1.0", d.hex())
        );
        assert_eq!(split_reference("docker.io/library/nginx@sha256:00"), ("docker.io/library/nginx".into(), None));
    }
}
