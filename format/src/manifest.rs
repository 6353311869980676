//! The bundle manifest: the one signed document that says what a bundle holds.
//!
//! It is the first entry of every bundle and is signed (minisign) as a whole, so every
//! size and digest in it is as trustworthy as the vendor's key. Parsing is strict
//! (`deny_unknown_fields`) and [`Manifest::validate`] re-checks everything a reader
//! relies on (safe paths, sorted unique entries, artifacts pointing at real entries),
//! so a reader never has to trust the bundle's own tar headers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::key_statement::{KeyAction, KeyStatement, STATEMENTS_DIR};

/// The `format` value of every v1 manifest.
pub const FORMAT_V1: &str = "airlock.bundle/v1";
/// Tar path of the manifest, always the first entry.
pub const MANIFEST_PATH: &str = "airlock/manifest.json";
/// Tar path of the manifest's minisign signature, always the second entry.
pub const SIGNATURE_PATH: &str = "airlock/manifest.json.minisig";
/// Upper bound on the manifest size, checked before anything is buffered: a reader
/// holds the manifest in memory until its signature is verified.
pub const MAX_MANIFEST_BYTES: u64 = 32 << 20;
/// Upper bound on the signature entry.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Where the OCI image layout lives inside the bundle.
pub const OCI_DIR: &str = "oci";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub version: String,
    /// Creation time, RFC 3339 UTC (from `SOURCE_DATE_EPOCH` when set).
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<Installer>,
    pub components: Vec<Component>,
    pub images: Vec<Image>,
    pub charts: Vec<Chart>,
    pub files: Vec<FileArtifact>,
    pub profiles: Vec<Profile>,
    /// Vendor key rotation and revocation, in sequence order (see
    /// [`crate::key_statement`]). Absent when empty, so bundles without statements are
    /// byte for byte what they were before statements existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_statements: Vec<KeyStatementRef>,
    /// Every tar entry after the manifest and its signature, in stream order (sorted
    /// by path).
    pub entries: Vec<Entry>,
    /// Set on a delta bundle: the release this bundle builds on. The site must run
    /// exactly that release (its `release.json` `manifest_sha256`) before the delta
    /// is accepted. Absent on full bundles, which stay byte for byte as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Delta bundles only: every entry of the whole release that this bundle does NOT
    /// carry, because the base has it with the same path and digest (sorted by path,
    /// disjoint from `entries`). The installer takes these from the installed base
    /// and checks each against the digest here, so they are as trustworthy as the
    /// carried entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_entries: Vec<Entry>,
    /// Which installed releases this one may upgrade (`airlock upgrade`). Absent when
    /// the spec has no `upgrade:` section, so such bundles stay byte for byte what they
    /// were before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradePolicy>,
    /// The monitoring content (alert rule files, dashboards) the installer renders
    /// for the prometheus and grafana charts. Absent in bundles without it, which stay
    /// byte for byte what they were before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringContent>,
    /// The vendor's consistency checks for `airlock restore --drill`: paths of SQL
    /// files among `files` (`files/<component>/<name>.sql`), each one query that returns
    /// no row when the restored data is consistent. Signed with the rest; absent when the
    /// spec names none, so such bundles stay byte for byte what they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drill_checks: Vec<String>,
}

/// The entries holding a bundle's monitoring content (see [`crate::monitoring`]),
/// each list sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringContent {
    /// Prometheus rule files, `monitoring/rules/<file>`.
    pub rules: Vec<String>,
    /// Grafana dashboards, `monitoring/dashboards/<file>.json`.
    pub dashboards: Vec<String>,
}

/// The release a delta bundle needs on the site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub name: String,
    pub version: String,
    /// SHA-256 (64 hex) of the base release's manifest as [`Manifest::full_release`]
    /// serializes it: what the site's `release.json` `manifest_sha256` says.
    pub manifest_sha256: String,
}

impl BaseRef {
    /// `name version (manifest sha256 0123456789ab…)`, for messages.
    pub fn label(&self) -> String {
        format!("{} {} (manifest sha256 {})", self.name, self.version, short_sha(&self.manifest_sha256))
    }
}

/// The first 12 hex digits of a digest, as release ids use them.
pub fn short_sha(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// The version policy a release carries for `airlock upgrade`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradePolicy {
    /// A semver requirement (`>=1.0.0, <2.0.0`) the installed version must meet;
    /// absent: any older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Releases that may not be skipped: an upgrade from below one of these versions
    /// to above it is refused (install that release first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DistributionKind {
    K3s,
    Rke2,
}

impl std::fmt::Display for DistributionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DistributionKind::K3s => "k3s",
            DistributionKind::Rke2 => "rke2",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    pub kind: DistributionKind,
    pub version: String,
    pub arch: String,
    pub artifacts: Vec<DistributionArtifact>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributionArtifact {
    pub name: String,
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installer {
    pub path: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// Image references.
    pub images: Vec<String>,
    /// Chart names.
    pub charts: Vec<String>,
    /// File names.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Full normalized reference, e.g. `docker.io/library/nginx:1.27`.
    pub reference: String,
    pub component: String,
    /// Media type of the root descriptor (manifest or index).
    pub media_type: String,
    pub digest: Sha256Digest,
    /// Size of the root document.
    pub size: u64,
    pub platforms: Vec<String>,
    /// Every blob the image needs, root included.
    pub blobs: Vec<Sha256Digest>,
    /// The upstream cosign signature check the spec asked for (docs/bundle-spec.md):
    /// what the bundler verified, carried so the installer checks it again offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosign: Option<CosignCheck>,
}

/// An image's cosign signature as the bundler checked it at create time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignCheck {
    /// The spec required a signature: one missing here is refused at install.
    pub required: bool,
    /// The signature that verified; `None`: the image had none (and none was required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<CosignSignature>,
    /// The cosign objects carried in the OCI layout beside the image, so that a push or
    /// `registry serve` offers them where `cosign verify` looks: the signature manifest
    /// (`sha256-<hex>.sig`) and, when the upstream has one, the attestation manifest
    /// (`.att`). Absent in bundles made before they were carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<CosignObject>,
    /// The image's OCI 1.1 referrers (manifests whose `subject` is the image: cosign
    /// signatures and attestations in OCI 1.1 mode, SBOMs), carried in the layout so a
    /// push or `registry serve` offers them through the referrers API or its fallback
    /// tag (`sha256-<hex>`). Absent when the image has none, and in bundles made
    /// before they were carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Referrer>,
}

/// One OCI 1.1 referrer of an image carried in the bundle: a manifest whose
/// `subject` is the image, checked at create, with what the referrers index lists for
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referrer {
    pub media_type: String,
    /// The manifest's `artifactType` (else its config's media type), as the referrers
    /// API lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest itself, a blob of the layout.
    pub digest: Sha256Digest,
    pub size: u64,
    /// The manifest's annotations, as the referrers API lists them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Its config and layers (blobs of the layout).
    pub blobs: Vec<Sha256Digest>,
}

/// One cosign object (a manifest under cosign's tag scheme) carried in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignObject {
    /// `sha256-<hex of the image's digest>.sig` or `.att`.
    pub tag: String,
    pub media_type: String,
    /// The manifest itself, a blob of the layout.
    pub digest: Sha256Digest,
    pub size: u64,
    /// Its config and layers (blobs of the layout).
    pub blobs: Vec<Sha256Digest>,
}

/// The suffixes of cosign's tag scheme the bundle carries.
pub const COSIGN_TAG_SUFFIXES: [&str; 2] = [".sig", ".att"];

impl Image {
    /// The reference without tag or digest (`docker.io/library/nginx`).
    pub fn name(&self) -> &str {
        let name_tag = self.reference.split_once('@').map(|(n, _)| n).unwrap_or(&self.reference);
        match name_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => n,
            _ => name_tag,
        }
    }

    /// The image's carried cosign objects as images of their own: the same
    /// repository, tagged by cosign's scheme (`NAME:sha256-<hex>.sig`), root and blobs
    /// as for any image. Push and serve offer them like the image itself.
    pub fn cosign_images(&self) -> Vec<Image> {
        let Some(c) = &self.cosign else { return vec![] };
        c.objects
            .iter()
            .map(|o| Image {
                reference: format!("{}:{}", self.name(), o.tag),
                component: self.component.clone(),
                media_type: o.media_type.clone(),
                digest: o.digest,
                size: o.size,
                platforms: vec![],
                blobs: std::iter::once(o.digest).chain(o.blobs.iter().copied()).collect(),
                cosign: None,
            })
            .collect()
    }

    /// The image's carried OCI 1.1 referrers as images of their own, named by digest
    /// in the same repository (`NAME@sha256:…`): push and serve offer them like any
    /// manifest, and the fallback tag lists them ([`Image::referrers_index`]).
    pub fn referrer_images(&self) -> Vec<Image> {
        let Some(c) = &self.cosign else { return vec![] };
        c.referrers
            .iter()
            .map(|r| Image {
                reference: format!("{}@{}", self.name(), r.digest),
                component: self.component.clone(),
                media_type: r.media_type.clone(),
                digest: r.digest,
                size: r.size,
                platforms: vec![],
                blobs: std::iter::once(r.digest).chain(r.blobs.iter().copied()).collect(),
                cosign: None,
            })
            .collect()
    }

    /// An image index listing no referrers.
    pub fn empty_referrers_index() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::MEDIA_TYPE_OCI_INDEX,
            "manifests": [],
        }))
        .expect("index serializes")
    }

    /// The OCI 1.1 referrers index of this image (what `GET /v2/<name>/referrers/<digest>`
    /// answers and the fallback tag `sha256-<hex>` holds): one descriptor per carried
    /// referrer with its artifact type and annotations, those of `artifact_type` only
    /// when given. `extra`: descriptors to keep beside them (a registry's own, by digest).
    pub fn referrers_index(&self, artifact_type: Option<&str>, extra: &[serde_json::Value]) -> Vec<u8> {
        let mut manifests: Vec<serde_json::Value> = Vec::new();
        let carried = self.cosign.iter().flat_map(|c| &c.referrers);
        for r in carried.filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type) {
            let mut d = serde_json::json!({"mediaType": r.media_type, "digest": r.digest.to_string(), "size": r.size});
            if let Some(t) = &r.artifact_type {
                d["artifactType"] = t.clone().into();
            }
            if !r.annotations.is_empty() {
                d["annotations"] = serde_json::to_value(&r.annotations).expect("annotations serialize");
            }
            manifests.push(d);
        }
        for e in extra {
            if !manifests.iter().any(|m| m.get("digest") == e.get("digest")) {
                manifests.push(e.clone());
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::MEDIA_TYPE_OCI_INDEX,
            "manifests": manifests,
        });
        serde_json::to_vec(&index).expect("index serializes")
    }
}

/// The tag a registry without the referrers API keeps an image's referrers index
/// under (OCI Distribution 1.1, "referrers tag schema").
pub fn referrers_tag(image: &Sha256Digest) -> String {
    format!("sha256-{}", image.hex())
}

/// One verified cosign signature, with the key it verified with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignSignature {
    /// The key's name in the spec (`keys/upstream.pub`) and its PEM text.
    pub key: String,
    pub key_pem: String,
    /// The `sha256-<digest>.sig` manifest the signature came from.
    pub manifest: Sha256Digest,
    /// The simple signing payload (base64) and its signature (base64 of ASN.1 DER).
    pub payload: String,
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    pub component: String,
    pub path: String,
    /// Values the vendor set in the bundle spec (image references, sizes), a YAML
    /// mapping kept as JSON. The installer merges its generated values over them.
    /// Absent in bundles made before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArtifact {
    pub name: String,
    pub component: String,
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub path: String,
}

/// A key statement carried by the bundle: what it says (so `inspect` and the installer's
/// plan can show it from the manifest alone) and the two entries that hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStatementRef {
    pub sequence: u64,
    pub action: KeyAction,
    pub key_id: String,
    /// The statement JSON entry (`keys/statements/0001-introduce-<ID>.json`).
    pub path: String,
    /// Its minisign signature entry (`<path>.minisig`).
    pub signature: String,
}

impl KeyStatementRef {
    /// Checks that a statement read from the bundle is the one the manifest lists.
    pub fn check_matches(&self, s: &KeyStatement) -> Result<()> {
        if s.sequence != self.sequence || s.action != self.action || s.key_id != self.key_id {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "the statement says #{} {} {} but the manifest lists #{} {} {}",
                    s.sequence, s.action, s.key_id, self.sequence, self.action, self.key_id
                ),
            )
            .with_hint("the bundle was assembled wrongly; ask the vendor for a new one"));
        }
        Ok(())
    }

    pub fn label(&self) -> String {
        format!("#{} {} {}", self.sequence, self.action, self.key_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// Mode 0755 when true, 0644 otherwise; no other modes exist in a bundle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

impl Entry {
    pub fn mode(&self) -> u32 {
        if self.executable {
            0o755
        } else {
            0o644
        }
    }
}

/// Path of the OCI blob with this digest inside the bundle.
pub fn blob_path(digest: &Sha256Digest) -> String {
    format!("{OCI_DIR}/blobs/sha256/{}", digest.hex())
}

/// Checks that an entry path is relative, normalized and made of plain characters.
///
/// Bundles are produced by our bundler, so the allowed alphabet can be narrow; a
/// narrow alphabet rules out every trick with `..`, absolute paths, backslashes,
/// control characters and Unicode look-alikes at once.
pub fn check_entry_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.len() > 1024 {
        return Err("path longer than 1024 bytes".into());
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err("empty path component (`//` or trailing `/`)".into()),
            "." | ".." => return Err(format!("`{comp}` path component")),
            _ => {}
        }
        if let Some(c) =
            comp.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | ':' | '=')))
        {
            return Err(format!("character {c:?} is not allowed in bundle paths"));
        }
    }
    Ok(())
}

impl Manifest {
    /// Serializes the manifest exactly as it is signed and stored: indented JSON (so
    /// support can read it after `tar -x`) with a trailing newline; the field order is
    /// fixed by the structs, so output is stable.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parses and validates manifest bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            let text = e.to_string();
            // The compatibility rule of v1 (docs/bundle-format.md, "Compatibility"): new
            // keys are optional and left out when unused, and a reader refuses keys it
            // does not know instead of ignoring what the vendor signed. Such a bundle
            // needs a newer installer, not a new copy.
            if text.starts_with("unknown field") {
                Error::corrupt(
                    MANIFEST_PATH,
                    format!("uses a feature this installer does not know ({text}): it was made by a newer bundler"),
                )
                .with_hint(
                    "use an installer at least as new as the bundler that made this bundle; the bundle carries one as installer/airlock (docs/bundle-format.md, \"Checking a bundle with stock tools\")",
                )
            } else {
                Error::corrupt(MANIFEST_PATH, format!("not a valid bundle manifest: {e}"))
            }
        })?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every invariant readers rely on.
    pub fn validate(&self) -> Result<()> {
        let bad = |cause: String| Err(Error::corrupt(MANIFEST_PATH, cause));
        if self.format != FORMAT_V1 {
            return Err(Error::corrupt(
                MANIFEST_PATH,
                format!("format `{}` is not supported (this installer reads `{FORMAT_V1}`)", self.format),
            )
            .with_hint("use an installer at least as new as the bundler that made this bundle"));
        }
        self.validate_shown_names()?;
        // Every size sum readers take (the whole release, what is carried, what comes
        // from the base, the images for the disk preflight) is a part of this one, so
        // none of them can overflow once this fits.
        if self.entries.iter().chain(&self.base_entries).try_fold(0u64, |t, e| t.checked_add(e.size)).is_none() {
            return bad("the entries' sizes add up to more than 2^64 bytes".to_string());
        }
        let mut by_path: BTreeMap<&str, &Entry> = BTreeMap::new();
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            if let Err(why) = check_entry_path(&e.path) {
                return Err(Error::unsafe_entry(&e.path, format!("unsafe path in the manifest: {why}")));
            }
            if e.path.starts_with("airlock/") {
                return bad(format!("entry `{}` uses the reserved airlock/ directory", e.path));
            }
            if let Some(p) = prev {
                if p >= e.path.as_str() {
                    return bad(format!("entries are not sorted and unique at `{}`", e.path));
                }
            }
            prev = Some(&e.path);
            by_path.insert(&e.path, e);
        }
        // A file may not also be a directory of other entries (`a` and `a/b`).
        for w in self.entries.windows(2) {
            if w[1].path.starts_with(&format!("{}/", w[0].path)) {
                return bad(format!("entry `{}` is both a file and a directory", w[0].path));
            }
        }
        self.validate_base_entries()?;
        // An artifact may live in the bundle or, in a delta, in the base release.
        let need = |path: &str, what: &str| -> Result<()> {
            if by_path.contains_key(path) || self.base_entry(path).is_some() {
                Ok(())
            } else {
                Err(Error::corrupt(MANIFEST_PATH, format!("{what} points at `{path}`, which is not an entry")))
            }
        };
        for img in &self.images {
            need(&blob_path(&img.digest), &format!("image {}", img.reference))?;
            for b in &img.blobs {
                let p = blob_path(b);
                need(&p, &format!("image {}", img.reference))?;
            }
            self.validate_cosign_objects(img, &need)?;
        }
        // Blob entries are content-addressed: the name must be the digest.
        for e in self.entries.iter().chain(&self.base_entries) {
            if let Some(hex) = e.path.strip_prefix(&format!("{OCI_DIR}/blobs/sha256/")) {
                if hex != e.sha256.hex() {
                    return bad(format!("blob entry `{}` has digest {}", e.path, e.sha256));
                }
            }
        }
        for c in &self.charts {
            need(&c.path, &format!("chart {} {}", c.name, c.version))?;
        }
        for f in &self.files {
            need(&f.path, &format!("file {}", f.name))?;
        }
        for p in &self.profiles {
            need(&p.path, &format!("profile {}", p.name))?;
        }
        if let Some(mc) = &self.monitoring {
            for (list, dir, what) in [
                (&mc.rules, crate::monitoring::RULES_DIR, "monitoring rule file"),
                (&mc.dashboards, crate::monitoring::DASHBOARDS_DIR, "monitoring dashboard"),
            ] {
                for (i, path) in list.iter().enumerate() {
                    need(path, what)?;
                    let name = path.strip_prefix(&format!("{dir}/")).unwrap_or_default();
                    // The file name becomes a ConfigMap key (dashboards) or a file name
                    // in messages: one plain name, under its directory.
                    if !crate::monitoring::config_map_key_ok(name) {
                        return bad(format!("{what} `{path}` is not a plain file under {dir}/"));
                    }
                    if i > 0 && list[i - 1] >= *path {
                        return bad(format!("{what}s are not sorted and unique at `{path}`"));
                    }
                }
            }
        }
        if let Some(d) = &self.distribution {
            for a in &d.artifacts {
                need(&a.path, &format!("distribution artifact {}", a.name))?;
            }
        }
        if let Some(i) = &self.installer {
            need(&i.path, "installer")?;
        }
        let mut last_sequence = 0;
        for k in &self.key_statements {
            let what = format!("key statement {}", k.label());
            if k.sequence <= last_sequence {
                return bad(format!("{what} is out of order: sequences must strictly increase"));
            }
            last_sequence = k.sequence;
            if let Err(why) = crate::key_statement::parse_key_id(&k.key_id) {
                return bad(format!("{what}: {why}"));
            }
            if !k.path.starts_with(&format!("{STATEMENTS_DIR}/"))
                || k.signature != crate::key_statement::signature_entry_path(&k.path)
            {
                return bad(format!("{what} must live in {STATEMENTS_DIR}/ with its .minisig beside it"));
            }
            need(&k.path, &what)?;
            need(&k.signature, &what)?;
        }
        for c in &self.drill_checks {
            if !self.files.iter().any(|f| &f.path == c) || !c.ends_with(".sql") {
                return bad(format!("drill check `{c}` is not an .sql file of the bundle's files"));
            }
        }
        let names: BTreeSet<&str> = self.components.iter().map(|c| c.name.as_str()).collect();
        if names.len() != self.components.len() {
            return bad("component names are not unique".into());
        }
        Ok(())
    }

    /// A carried cosign object is named by cosign's tag for this very image, once per
    /// tag, and its `.sig` is the manifest the checked signature came from.
    fn validate_cosign_objects(&self, img: &Image, need: &dyn Fn(&str, &str) -> Result<()>) -> Result<()> {
        let Some(c) = &img.cosign else { return Ok(()) };
        let what = format!("image {}", img.reference);
        let bad = |cause: String| Err(Error::corrupt(MANIFEST_PATH, format!("{what}: {cause}")));
        let mut tags = BTreeSet::new();
        for o in &c.objects {
            let base = format!("sha256-{}", img.digest.hex());
            let ok = COSIGN_TAG_SUFFIXES.iter().any(|s| o.tag == format!("{base}{s}"));
            if !ok || !tags.insert(o.tag.as_str()) {
                return bad(format!("cosign object tag `{}` is not one of {base}.sig / .att, once each", o.tag));
            }
            if o.tag.ends_with(".sig") && c.signature.as_ref().map(|s| s.manifest) != Some(o.digest) {
                return bad(format!("the carried {} is not the signature manifest that was checked", o.tag));
            }
            for d in std::iter::once(&o.digest).chain(&o.blobs) {
                need(&blob_path(d), &what)?;
            }
        }
        // A referrer is a manifest of its own (never the image itself), listed once;
        // that its `subject` is this image was checked at create.
        let mut referrers = BTreeSet::new();
        for r in &c.referrers {
            if r.digest == img.digest || !referrers.insert(r.digest) {
                return bad(format!("referrer {} is listed twice or is the image itself", r.digest));
            }
            for d in std::iter::once(&r.digest).chain(&r.blobs) {
                need(&blob_path(d), &what)?;
            }
        }
        Ok(())
    }

    /// Every name and version the manifest gives for people to read (and every entry
    /// path) is free of control characters: a vendor key vouches for the content, not
    /// for what a terminal would make of a newline or an escape sequence in a name.
    fn validate_shown_names(&self) -> Result<()> {
        let mut shown: Vec<(&str, &str)> =
            vec![("name", &self.name), ("version", &self.version), ("created", &self.created)];
        if let Some(d) = &self.distribution {
            shown.extend([("distribution version", d.version.as_str()), ("distribution arch", d.arch.as_str())]);
            shown.extend(d.artifacts.iter().map(|a| ("distribution artifact", a.name.as_str())));
        }
        if let Some(i) = &self.installer {
            shown.push(("installer version", &i.version));
        }
        if let Some(b) = &self.base {
            shown.extend([("base name", b.name.as_str()), ("base version", b.version.as_str())]);
        }
        for c in &self.components {
            shown.push(("component", &c.name));
            shown.extend(c.images.iter().chain(&c.charts).chain(&c.files).map(|n| ("component member", n.as_str())));
        }
        for i in &self.images {
            shown.extend([("image", i.reference.as_str()), ("image component", i.component.as_str())]);
            shown.extend(i.platforms.iter().map(|p| ("image platform", p.as_str())));
        }
        for c in &self.charts {
            shown.extend([("chart", c.name.as_str()), ("chart version", c.version.as_str())]);
            shown.extend(c.app_version.iter().map(|v| ("chart app version", v.as_str())));
        }
        shown.extend(self.files.iter().map(|f| ("file", f.name.as_str())));
        shown.extend(self.profiles.iter().map(|p| ("profile", p.name.as_str())));
        shown.extend(self.entries.iter().chain(&self.base_entries).map(|e| ("entry", e.path.as_str())));
        for (what, value) in shown {
            if value.chars().any(crate::text::is_shown_escaped) {
                return Err(Error::corrupt(
                    MANIFEST_PATH,
                    format!("the {what} `{}` holds a control character", crate::text::escape_controls(value)),
                )
                .with_hint("names and versions in a bundle are plain text; the bundle was made wrongly or tampered with before signing: ask the vendor for a corrected bundle"));
            }
        }
        Ok(())
    }

    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.entries[i])
    }

    /// A delta's entry that comes from the base release.
    pub fn base_entry(&self, path: &str) -> Option<&Entry> {
        self.base_entries.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.base_entries[i])
    }

    /// An entry of the whole release: carried by this bundle or, in a delta, by the base.
    pub fn release_entry(&self, path: &str) -> Option<&Entry> {
        self.entry(path).or_else(|| self.base_entry(path))
    }

    pub fn is_delta(&self) -> bool {
        self.base.is_some()
    }

    /// The manifest of the full bundle of the same release: a delta's manifest with
    /// its base entries merged back (sorted) and the base dropped. The bundler makes a
    /// delta by moving entries of exactly that manifest to `base_entries`, so this is
    /// byte for byte the full bundle's manifest; a full manifest is returned as is.
    /// Its SHA-256 identifies the release whichever way it was delivered.
    pub fn full_release(&self) -> Manifest {
        let mut m = self.clone();
        if m.base.take().is_some() {
            m.entries.append(&mut m.base_entries);
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        }
        m
    }

    /// SHA-256 (64 hex) of [`Manifest::full_release`]: what `release.json` records as
    /// `manifest_sha256` and what a delta names as its base.
    pub fn release_sha256(&self) -> String {
        crate::digest::Sha256Digest::of(&self.full_release().to_bytes()).hex()
    }

    /// Base entries: only with a base, safe paths, sorted and unique, disjoint from
    /// the carried entries, and no file that is also a directory of the release.
    fn validate_base_entries(&self) -> Result<()> {
        let bad = |cause: String| Err(Error::corrupt(MANIFEST_PATH, cause));
        match &self.base {
            None if !self.base_entries.is_empty() => {
                return bad("base_entries are listed but the manifest names no base release".into())
            }
            None => return Ok(()),
            Some(b) => {
                if crate::digest::Sha256Digest::from_hex(&b.manifest_sha256).is_err() {
                    return bad(format!("base manifest_sha256 `{}` is not 64 lowercase hex digits", b.manifest_sha256));
                }
            }
        }
        let mut prev: Option<&str> = None;
        for e in &self.base_entries {
            if let Err(why) = check_entry_path(&e.path) {
                return Err(Error::unsafe_entry(&e.path, format!("unsafe base entry path in the manifest: {why}")));
            }
            if e.path.starts_with("airlock/") {
                return bad(format!("base entry `{}` uses the reserved airlock/ directory", e.path));
            }
            if let Some(p) = prev {
                if p >= e.path.as_str() {
                    return bad(format!("base_entries are not sorted and unique at `{}`", e.path));
                }
            }
            prev = Some(&e.path);
            if self.entry(&e.path).is_some() {
                return bad(format!("`{}` is listed both as an entry and as a base entry", e.path));
            }
        }
        let mut all: Vec<&str> = self.entries.iter().chain(&self.base_entries).map(|e| e.path.as_str()).collect();
        all.sort_unstable();
        for w in all.windows(2) {
            if w[1].starts_with(&format!("{}/", w[0])) {
                return bad(format!("release entry `{}` is both a file and a directory", w[0]));
            }
        }
        Ok(())
    }

    /// Total uncompressed size of all entries.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// For each entry path, the artifacts it belongs to (`image docker.io/x:1`,
    /// `chart hello 0.1.0`, …), so a bad entry can be reported by what it breaks.
    pub fn artifacts_by_entry(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in self.artifacts() {
            for p in &a.entries {
                map.entry(p.clone()).or_default().push(a.label());
            }
        }
        for e in &self.entries {
            if e.path.starts_with(&format!("{OCI_DIR}/")) && !e.path.starts_with(&format!("{OCI_DIR}/blobs/")) {
                map.entry(e.path.clone()).or_default().push("OCI layout".into());
            }
        }
        map
    }

    /// Every artifact with the entries it consists of.
    pub fn artifacts(&self) -> Vec<Artifact> {
        let mut out = Vec::new();
        if let Some(d) = &self.distribution {
            for a in &d.artifacts {
                out.push(Artifact { kind: "distribution", name: a.name.clone(), entries: vec![a.path.clone()] });
            }
        }
        if let Some(i) = &self.installer {
            out.push(Artifact {
                kind: "installer",
                name: format!("airlock {}", i.version),
                entries: vec![i.path.clone()],
            });
        }
        for img in &self.images {
            // The carried cosign objects belong to their image: damage to one names it.
            let cosign: Vec<Image> = img.cosign_images().into_iter().chain(img.referrer_images()).collect();
            let blobs = img.blobs.iter().chain(cosign.iter().flat_map(|c| &c.blobs));
            let mut entries: Vec<String> = blobs.map(blob_path).collect();
            let mut seen = BTreeSet::new();
            entries.retain(|p| seen.insert(p.clone()));
            out.push(Artifact { kind: "image", name: img.reference.clone(), entries });
        }
        for c in &self.charts {
            out.push(Artifact {
                kind: "chart",
                name: format!("{} {}", c.name, c.version),
                entries: vec![c.path.clone()],
            });
        }
        for f in &self.files {
            out.push(Artifact { kind: "file", name: f.name.clone(), entries: vec![f.path.clone()] });
        }
        for p in &self.profiles {
            out.push(Artifact { kind: "profile", name: p.name.clone(), entries: vec![p.path.clone()] });
        }
        for k in &self.key_statements {
            out.push(Artifact {
                kind: "key-statement",
                name: k.label(),
                entries: vec![k.path.clone(), k.signature.clone()],
            });
        }
        out
    }

    /// The trusted comment signed with the manifest: it names the bundle so that
    /// `minisign -V` shows what was signed.
    pub fn trusted_comment(&self) -> String {
        format!("airlock bundle: {} {}\tcreated:{}\tformat:{}", self.name, self.version, self.created, self.format)
    }
}

/// One artifact and the entries it is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artifact {
    pub kind: &'static str,
    pub name: String,
    pub entries: Vec<String>,
}

impl Artifact {
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// Formats unix seconds as RFC 3339 UTC (`2026-11-22T10:00:00Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for all dates we meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_reject_traversal_absolute_and_odd_characters() {
        assert!(check_entry_path("oci/blobs/sha256/ab").is_ok());
        assert!(check_entry_path("charts/hello-0.1.0.tgz").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/", "./a", "a\\b", "a b", "a\nb", "é"] {
            assert!(check_entry_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn entry(path: &str, content: &[u8]) -> Entry {
        Entry { path: path.into(), size: content.len() as u64, sha256: Sha256Digest::of(content), executable: false }
    }

    /// A release of one chart and one file; `in_base` names the paths a delta leaves
    /// to its base.
    fn release(in_base: &[&str]) -> Manifest {
        let all = vec![entry("charts/a-1.tgz", b"chart"), entry("files/c/readme", b"read me")];
        let (base_entries, entries): (Vec<Entry>, Vec<Entry>) =
            all.into_iter().partition(|e| in_base.contains(&e.path.as_str()));
        Manifest {
            format: FORMAT_V1.into(),
            name: "demo".into(),
            version: "2".into(),
            created: rfc3339(0),
            distribution: None,
            installer: None,
            components: vec![],
            images: vec![],
            charts: vec![Chart {
                name: "a".into(),
                version: "1".into(),
                app_version: None,
                component: "c".into(),
                path: "charts/a-1.tgz".into(),
                values: None,
            }],
            files: vec![FileArtifact { name: "readme".into(), component: "c".into(), path: "files/c/readme".into() }],
            profiles: vec![],
            key_statements: vec![],
            entries,
            base: (!in_base.is_empty()).then(|| BaseRef {
                name: "demo".into(),
                version: "1".into(),
                manifest_sha256: "ab".repeat(32),
            }),
            base_entries,
            upgrade: None,
            monitoring: None,
            drill_checks: Vec::new(),
        }
    }

    /// The v1 compatibility rule: a key this reader does not know (a newer bundler's
    /// feature) is refused, saying that a newer installer is needed, not a new copy.
    #[test]
    fn a_key_from_a_newer_bundler_is_refused_asking_for_a_newer_installer() {
        let mut v: serde_json::Value = serde_json::to_value(release(&[])).unwrap();
        v["charts"][0]["provenance"] = "x".into();
        let e = Manifest::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.cause.contains("made by a newer bundler") && e.cause.contains("`provenance`"), "{e}");
        assert!(e.hint.as_deref().unwrap_or("").contains("installer at least as new"), "{e}");
        // Broken JSON stays what it is.
        let e = Manifest::from_bytes(b"{").unwrap_err();
        assert!(e.cause.contains("not a valid bundle manifest") && e.hint.is_none(), "{e}");
    }

    fn signed_image(objects: Vec<CosignObject>, sig_manifest: Sha256Digest) -> (Manifest, Image) {
        let mut m = release(&[]);
        let root = entry(&blob_path(&Sha256Digest::of(b"root")), b"root");
        let image = Image {
            reference: "example.com/app:1".into(),
            component: "c".into(),
            media_type: crate::oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            digest: root.sha256,
            size: 4,
            platforms: vec![],
            blobs: vec![root.sha256],
            cosign: Some(CosignCheck {
                required: true,
                signature: Some(CosignSignature {
                    key: "k.pub".into(),
                    key_pem: String::new(),
                    manifest: sig_manifest,
                    payload: String::new(),
                    signature: String::new(),
                }),
                objects,
                referrers: vec![],
            }),
        };
        m.entries.push(root);
        for b in [&b"sig"[..], b"cfg", b"layer"] {
            m.entries.push(entry(&blob_path(&Sha256Digest::of(b)), b));
        }
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        m.images.push(image.clone());
        (m, image)
    }

    #[test]
    fn carried_cosign_objects_are_tagged_by_cosigns_scheme_and_belong_to_their_image() {
        let sig = Sha256Digest::of(b"sig");
        let object = |tag: String, digest| CosignObject {
            tag,
            media_type: crate::oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            digest,
            size: 3,
            blobs: vec![Sha256Digest::of(b"cfg"), Sha256Digest::of(b"layer")],
        };
        let hex = Sha256Digest::of(b"root").hex();
        let (m, image) = signed_image(vec![object(format!("sha256-{hex}.sig"), sig)], sig);
        m.validate().expect("a well-formed .sig object");
        let as_images = image.cosign_images();
        assert_eq!(as_images[0].reference, format!("example.com/app:sha256-{hex}.sig"));
        assert_eq!(as_images[0].blobs.len(), 3);
        // Damage to a carried object's blob names the image.
        let layer = blob_path(&Sha256Digest::of(b"layer"));
        assert_eq!(m.artifacts_by_entry().get(&layer).cloned(), Some(vec!["image example.com/app:1".to_string()]));

        for (tag, digest, why) in [
            (format!("sha256-{hex}.sbom"), sig, "is not one of"),
            (format!("sha256-{}.sig", "0".repeat(64)), sig, "is not one of"),
            (format!("sha256-{hex}.sig"), Sha256Digest::of(b"cfg"), "not the signature manifest"),
            (format!("sha256-{hex}.att"), Sha256Digest::of(b"missing"), "not an entry"),
        ] {
            let (m, _) = signed_image(vec![object(tag, digest)], sig);
            let e = m.validate().unwrap_err();
            assert!(e.cause.contains(why) && e.cause.contains("example.com/app:1"), "{e}");
        }
    }

    fn referrer(digest: Sha256Digest, artifact_type: &str) -> Referrer {
        Referrer {
            media_type: crate::oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            artifact_type: Some(artifact_type.into()),
            digest,
            size: 3,
            annotations: BTreeMap::from([("created".to_string(), "now".to_string())]),
            blobs: vec![Sha256Digest::of(b"cfg"), Sha256Digest::of(b"layer")],
        }
    }

    #[test]
    fn carried_referrers_belong_to_their_image_and_are_listed_once() {
        let sig = Sha256Digest::of(b"sig");
        let with = |referrers: Vec<Referrer>| {
            let (mut m, mut image) = signed_image(vec![], sig);
            image.cosign.as_mut().unwrap().referrers = referrers;
            m.images[0] = image.clone();
            (m, image)
        };
        let (m, image) = with(vec![referrer(sig, "application/vnd.dev.sigstore.bundle.v0.3+json")]);
        m.validate().expect("a well-formed referrer");
        let as_images = image.referrer_images();
        assert_eq!(as_images[0].reference, format!("example.com/app@{sig}"));
        assert_eq!(as_images[0].blobs, [sig, Sha256Digest::of(b"cfg"), Sha256Digest::of(b"layer")]);
        // Damage to a referrer's blob names the image.
        let layer = blob_path(&Sha256Digest::of(b"layer"));
        assert_eq!(m.artifacts_by_entry().get(&layer).cloned(), Some(vec!["image example.com/app:1".to_string()]));

        let root = Sha256Digest::of(b"root");
        for (referrers, why) in [
            (vec![referrer(sig, "a"), referrer(sig, "b")], "listed twice"),
            (vec![referrer(root, "a")], "the image itself"),
            (vec![referrer(Sha256Digest::of(b"missing"), "a")], "not an entry"),
        ] {
            let (m, _) = with(referrers);
            let e = m.validate().unwrap_err();
            assert!(e.cause.contains(why) && e.cause.contains("example.com/app:1"), "{e}");
        }
        // Bundles without referrers keep their bytes: the key is left out.
        let (_, plain) = with(vec![]);
        assert!(!serde_json::to_string(&plain).unwrap().contains("referrers"));
    }

    #[test]
    fn the_referrers_index_lists_artifact_types_filters_by_one_and_keeps_what_the_site_had() {
        let (sig, att) = (Sha256Digest::of(b"sig"), Sha256Digest::of(b"att"));
        let (_, mut image) = signed_image(vec![], sig);
        image.cosign.as_mut().unwrap().referrers = vec![referrer(sig, "sig-type"), referrer(att, "att-type")];
        let listed = |bytes: Vec<u8>| -> Vec<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["mediaType"], crate::oci::MEDIA_TYPE_OCI_INDEX);
            v["manifests"].as_array().unwrap().clone()
        };
        let all = listed(image.referrers_index(None, &[]));
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0]["artifactType"].as_str(), all[0]["annotations"]["created"].as_str()),
            (Some("sig-type"), Some("now"))
        );
        let only = listed(image.referrers_index(Some("att-type"), &[]));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0]["digest"], att.to_string());
        // The site's own entry stays; one it shares with the bundle is listed once.
        let site = serde_json::json!({"mediaType": "x", "digest": Sha256Digest::of(b"site").to_string(), "size": 1});
        let merged = listed(image.referrers_index(None, &[site.clone(), all[0].clone()]));
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[2], site);
        assert!(listed(Image::empty_referrers_index()).is_empty());
        assert_eq!(referrers_tag(&sig), format!("sha256-{}", sig.hex()));
    }

    #[test]
    fn delta_manifest_accepts_an_artifact_whose_entry_comes_from_the_base() {
        let m = release(&["charts/a-1.tgz"]);
        m.validate().expect("the chart is a base entry");
        assert!(m.entry("charts/a-1.tgz").is_none());
        assert_eq!(m.release_entry("charts/a-1.tgz").map(|e| e.size), Some(5));
    }

    /// Found while writing the `manifest` fuzz target's property (every accessor of a
    /// valid manifest works): sizes that add past 2^64 passed validation, and
    /// `total_size` (the verify progress, `inspect`) and the disk preflight's sum of
    /// image sizes overflowed (a panic in debug builds, a wrapped, too small total in
    /// release ones). Validation bounds the sum of carried and base entries together.
    #[test]
    fn entry_sizes_that_add_past_u64_are_refused() {
        for (carried, base) in [(u64::MAX, 1), (u64::MAX / 2 + 1, u64::MAX / 2 + 1)] {
            let mut m = release(&["charts/a-1.tgz"]);
            m.entries[0].size = carried;
            m.base_entries[0].size = base;
            let e = m.validate().unwrap_err();
            assert!(e.cause.contains("add up to more than 2^64 bytes"), "{e}");
        }
        let mut m = release(&["charts/a-1.tgz"]);
        m.entries[0].size = u64::MAX - 5;
        m.validate().expect("a sum that fits is fine");
        assert_eq!(m.total_size(), u64::MAX - 5);
    }

    #[test]
    fn drill_checks_must_be_sql_files_of_the_bundle_and_are_absent_when_none() {
        let mut m = release(&[]);
        assert!(!String::from_utf8(m.to_bytes()).unwrap().contains("drill_checks"));
        m.files.push(FileArtifact {
            name: "orphans.sql".into(),
            component: "c".into(),
            path: "files/c/orphans.sql".into(),
        });
        m.entries.push(entry("files/c/orphans.sql", b"SELECT 1 WHERE false"));
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        m.drill_checks = vec!["files/c/orphans.sql".into()];
        m.validate().expect("an .sql file of the bundle");
        for bad in ["files/c/readme", "files/c/missing.sql", "charts/a-1.tgz"] {
            m.drill_checks = vec![bad.into()];
            let e = m.validate().unwrap_err();
            assert!(e.cause.contains(&format!("drill check `{bad}`")), "{e}");
        }
    }

    #[test]
    fn base_entries_overlapping_carried_entries_are_rejected() {
        let mut m = release(&["charts/a-1.tgz"]);
        m.entries.insert(0, m.base_entries[0].clone());
        let e = m.validate().unwrap_err();
        assert!(e.cause.contains("`charts/a-1.tgz` is listed both as an entry and as a base entry"), "{e}");
    }

    #[test]
    fn an_unsafe_base_entry_path_is_rejected_as_unsafe() {
        let mut m = release(&["charts/a-1.tgz"]);
        m.base_entries[0].path = "../etc/passwd".into();
        assert_eq!(m.validate().unwrap_err().kind, crate::ErrorKind::Unsafe);
    }

    #[test]
    fn a_control_character_in_any_shown_name_is_refused_and_shown_escaped() {
        type Spoil = fn(&mut Manifest);
        let cases: Vec<(&str, Spoil)> = vec![
            ("name", |m| m.name = "demo\nairlock-demo 9.9.9: verified".into()),
            ("version", |m| m.version = "2\u{1b}[2J".into()),
            ("chart", |m| m.charts[0].name = "a\r".into()),
            ("chart app version", |m| m.charts[0].app_version = Some("1\u{9b}31m".into())),
            ("file", |m| m.files[0].name = "read\u{7f}me".into()),
            ("base version", |m| m.base.as_mut().unwrap().version = "1\n".into()),
        ];
        for (what, spoil) in cases {
            let mut m = release(&["charts/a-1.tgz"]);
            spoil(&mut m);
            let e = m.validate().unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::Corrupt, "{what}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(&format!("the {what} `")) && shown.contains("holds a control character"), "{shown}");
            assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{what}: {shown:?}");
            assert_eq!(shown.lines().count(), 2, "{what}: one line and the hint: {shown:?}");
        }
    }

    #[test]
    fn base_entries_without_a_base_are_rejected() {
        let mut m = release(&["charts/a-1.tgz"]);
        m.base = None;
        assert!(m.validate().unwrap_err().cause.contains("names no base release"));
    }

    #[test]
    fn unsorted_base_entries_and_a_malformed_base_digest_are_rejected() {
        let mut m = release(&["charts/a-1.tgz", "files/c/readme"]);
        m.base_entries.reverse();
        assert!(m.validate().unwrap_err().cause.contains("not sorted"));
        let mut m = release(&["charts/a-1.tgz"]);
        m.base.as_mut().unwrap().manifest_sha256 = "xyz".into();
        assert!(m.validate().unwrap_err().cause.contains("not 64 lowercase hex"));
    }

    #[test]
    fn an_artifact_in_neither_entries_nor_base_entries_is_rejected() {
        let mut m = release(&["charts/a-1.tgz"]);
        m.base_entries.clear();
        assert!(m.validate().unwrap_err().cause.contains("chart a 1 points at `charts/a-1.tgz`"));
    }

    #[test]
    fn monitoring_content_must_be_entries_directly_under_its_directory() {
        let with = |rules: &[&str], dashboards: &[&str]| {
            let mut m = release(&[]);
            for p in rules.iter().chain(dashboards) {
                m.entries.push(entry(p, b"x"));
            }
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
            m.monitoring = Some(MonitoringContent {
                rules: rules.iter().map(|s| s.to_string()).collect(),
                dashboards: dashboards.iter().map(|s| s.to_string()).collect(),
            });
            m
        };
        with(&["monitoring/rules/a.yaml"], &["monitoring/dashboards/b.json"]).validate().unwrap();
        let e = with(&["monitoring/rules/a.yaml"], &["monitoring/dashboards/x/b.json"]).validate().unwrap_err();
        assert!(e.to_string().contains("monitoring/dashboards/x/b.json"), "{e}");
        let e = with(&["monitoring/dashboards/a.yaml"], &[]).validate().unwrap_err();
        assert!(e.to_string().contains("not a plain file under monitoring/rules/"), "{e}");
        let mut missing = with(&["monitoring/rules/a.yaml"], &[]);
        missing.entries.retain(|e| !e.path.starts_with("monitoring/"));
        let e = missing.validate().unwrap_err();
        assert!(e.to_string().contains("monitoring rule file points at `monitoring/rules/a.yaml`"), "{e}");
    }

    #[test]
    fn full_release_of_a_delta_is_the_full_manifest_byte_for_byte() {
        let full = release(&[]);
        let delta = release(&["files/c/readme"]);
        assert_eq!(delta.full_release().to_bytes(), full.to_bytes());
        assert_eq!(delta.release_sha256(), full.release_sha256());
        assert_eq!(full.full_release(), full);
        // A full manifest says nothing about deltas, so full bundles read as before.
        let text = String::from_utf8(full.to_bytes()).unwrap();
        assert!(!text.contains("base"), "{text}");
    }

    #[test]
    fn a_manifest_without_an_upgrade_policy_has_no_upgrade_key_and_one_with_it_round_trips() {
        let json = r#"{"format":"airlock.bundle/v1","name":"a","version":"1.0.0","created":"x","components":[],"images":[],"charts":[],"files":[],"profiles":[],"entries":[]}"#;
        let mut m: Manifest = serde_json::from_str(json).unwrap();
        assert!(!String::from_utf8(m.to_bytes()).unwrap().contains("upgrade"));
        m.upgrade = Some(UpgradePolicy { from: Some(">=1.0.0".into()), required: vec!["1.5.0".into()] });
        let back: Manifest = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(back.upgrade, m.upgrade);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
        assert_eq!(rfc3339(1_778_580_915), "2026-05-12T10:15:15Z");
    }
}
