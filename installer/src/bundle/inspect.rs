//! `airlock inspect`: what is inside a bundle, from its manifest alone.
//!
//! Works without the vendor key (then it says the content is unverified); with a key it
//! checks the manifest's signature, which is cheap, but not the content (that is
//! `verify`).

use airlock_format::error::Result;
use airlock_format::manifest::{blob_path, Manifest};
use airlock_format::minisign::PublicKey;
use airlock_format::parts::BundleFiles;
use airlock_format::read::read_manifest;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub bundle: String,
    pub name: String,
    pub version: String,
    pub created: String,
    pub format: String,
    /// Key id of the key the manifest says signed it.
    pub signer_key_id: String,
    /// `verified` (manifest signature checked with a trusted key) or `unverified`.
    pub signature: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistributionSummary>,
    pub components: Vec<airlock_format::manifest::Component>,
    pub images: Vec<ImageSummary>,
    pub charts: Vec<ChartSummary>,
    pub files: Vec<FileSummary>,
    pub profiles: Vec<String>,
    /// Vendor key statements (rotation, revocation) the bundle carries; their own
    /// signatures are checked only when a site applies them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_statements: Vec<airlock_format::manifest::KeyStatementRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installer_version: Option<String>,
    /// Set for a delta bundle: the release it builds on and what it leaves to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<crate::bundle::verify::DeltaReport>,
    /// Entries the bundle carries (a delta: without those from the base).
    pub entries: usize,
    /// Sum of all entries, uncompressed.
    pub total_size: u64,
    /// Size of the bundle file(s) on disk.
    pub compressed_size: u64,
    pub parts: usize,
}

#[derive(Debug, Serialize)]
pub struct DistributionSummary {
    pub kind: String,
    pub version: String,
    pub arch: String,
    pub artifacts: Vec<FileSummary>,
}

#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub reference: String,
    pub component: String,
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<String>,
    /// Sum of the image's blobs (shared blobs count for every image using them).
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct ChartSummary {
    pub name: String,
    pub version: String,
    pub component: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct FileSummary {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

pub fn inspect(files: &BundleFiles, trusted: Option<&[PublicKey]>) -> Result<InspectReport> {
    let (m, sig, signer) = read_manifest(files, trusted)?;
    summarize(files, &m, sig.key_id_hex(), signer.is_some())
}

fn summarize(files: &BundleFiles, m: &Manifest, signer_key_id: String, verified: bool) -> Result<InspectReport> {
    // Sizes and digests of the whole release, including what a delta leaves to its base.
    let entry = |p: &str| m.release_entry(p).map(|e| (e.sha256, e.size));
    let file_summary = |name: &str, path: &str| {
        let (sha, size) = entry(path).unwrap_or((airlock_format::Sha256Digest([0; 32]), 0));
        FileSummary { name: name.to_string(), sha256: sha.hex(), size }
    };
    Ok(InspectReport {
        bundle: files.base.display().to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        created: m.created.clone(),
        format: m.format.clone(),
        signer_key_id,
        signature: if verified { "verified" } else { "unverified" },
        distribution: m.distribution.as_ref().map(|d| DistributionSummary {
            kind: d.kind.to_string(),
            version: d.version.clone(),
            arch: d.arch.clone(),
            artifacts: d.artifacts.iter().map(|a| file_summary(&a.name, &a.path)).collect(),
        }),
        components: m.components.clone(),
        images: m
            .images
            .iter()
            .map(|i| ImageSummary {
                reference: i.reference.clone(),
                component: i.component.clone(),
                digest: i.digest.to_string(),
                media_type: i.media_type.clone(),
                platforms: i.platforms.clone(),
                size: i.blobs.iter().filter_map(|b| entry(&blob_path(b)).map(|(_, s)| s)).sum(),
            })
            .collect(),
        charts: m
            .charts
            .iter()
            .map(|c| {
                let (sha, size) = entry(&c.path).unwrap_or((airlock_format::Sha256Digest([0; 32]), 0));
                ChartSummary {
                    name: c.name.clone(),
                    version: c.version.clone(),
                    component: c.component.clone(),
                    digest: sha.to_string(),
                    size,
                }
            })
            .collect(),
        files: m.files.iter().map(|f| file_summary(&f.name, &f.path)).collect(),
        profiles: m.profiles.iter().map(|p| p.name.clone()).collect(),
        key_statements: m.key_statements.clone(),
        installer_version: m.installer.as_ref().map(|i| i.version.clone()),
        delta: crate::bundle::verify::DeltaReport::of(m),
        entries: m.entries.len(),
        total_size: m.total_size(),
        compressed_size: files.size()?,
        parts: files.parts.len(),
    })
}

/// Where the bundler stores the CycloneDX SBOM (`airlock-bundler`'s `sbom::SBOM_ENTRY`).
pub const SBOM_ENTRY: &str = "sbom.cdx.json";

/// The bundle's SBOM bytes (`airlock inspect --sbom`), checked against the manifest's
/// digest; the manifest's signature is checked when keys are given.
pub fn sbom(files: &BundleFiles, trusted: Option<&[PublicKey]>) -> Result<Vec<u8>> {
    match airlock_format::read::read_entry(files, trusted, SBOM_ENTRY)? {
        Some((_, bytes)) => Ok(bytes),
        None => Err(airlock_format::error::Error::input(
            files.base.display().to_string(),
            format!("the bundle carries no SBOM ({SBOM_ENTRY})"),
        )
        .with_hint("it was built by an airlock-bundler older than the SBOM; rebuild it with a current bundler")),
    }
}
