//! Charts from Helm repositories: HTTP(S) repositories (`index.yaml` plus `.tgz`) and
//! OCI registries (`oci://`, as `helm push` stores them). The packaged chart lands in
//! the same blob cache as image layers, named by its SHA-256, which is also what the
//! lock pins; the ordinary `.tgz` loader then checks it (metadata, vendored
//! dependencies) as for a local chart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use airlock_format::error::{Error, Result};
use airlock_format::report::Reporter;
use airlock_format::Sha256Digest;
use serde::Deserialize;

use super::cache::Cache;
use super::client::{Client, Repo};

/// Helm's OCI media types.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Charts are small; anything bigger is not a chart.
const MAX_CHART_BYTES: u64 = 64 << 20;
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// One chart to fetch.
#[derive(Clone, Debug)]
pub struct ChartRequest {
    /// `https://charts.example.com` or `oci://registry.example.com/charts`.
    pub repo: String,
    pub name: String,
    pub version: String,
    /// The chart archive's digest from the lock.
    pub pinned: Option<Sha256Digest>,
}

impl ChartRequest {
    fn what(&self) -> String {
        format!("chart {} {} (from {})", self.name, self.version, self.repo)
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    #[serde(default)]
    version: Option<serde_yaml::Value>,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
struct OciManifest {
    #[serde(default)]
    layers: Vec<OciLayer>,
}

#[derive(Deserialize)]
struct OciLayer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Sha256Digest,
    size: u64,
}

/// Fetches the chart into the cache; returns its path there and digest.
pub fn fetch_chart(
    client: &Client,
    cache: &Cache,
    req: &ChartRequest,
    reporter: &dyn Reporter,
) -> Result<(PathBuf, Sha256Digest)> {
    if let Some(pin) = req.pinned {
        if cache.blob_path(&pin).is_file() {
            return Ok((cache.blob_path(&pin), pin));
        }
    }
    let what = req.what();
    let digest = if let Some(rest) = req.repo.strip_prefix("oci://") {
        fetch_oci(client, cache, req, rest, &what, reporter)?
    } else if req.repo.starts_with("http://") || req.repo.starts_with("https://") {
        fetch_http(client, cache, req, &what)?
    } else {
        return Err(Error::input(&what, format!("repository `{}` is neither http(s):// nor oci://", req.repo))
            .with_hint("write the Helm repository URL (https://…) or the OCI location (oci://HOST/PATH)"));
    };
    if let Some(pin) = req.pinned {
        if pin != digest {
            return Err(Error::input(&what, format!("the repository now serves {digest}, but bundle.lock pins {pin}"))
                .with_hint(
                    "the chart was republished under the same version; check why, then run with --update-lock",
                ));
        }
    }
    Ok((cache.blob_path(&digest), digest))
}

fn fetch_http(client: &Client, cache: &Cache, req: &ChartRequest, what: &str) -> Result<Sha256Digest> {
    let base = req.repo.trim_end_matches('/');
    let index_url = format!("{base}/index.yaml");
    let bytes = client.get_url(&index_url, MAX_INDEX_BYTES, what)?;
    let (url, want) = chart_in_index(&bytes, base, &req.name, &req.version, what)?;
    let tgz = client.get_url(&url, MAX_CHART_BYTES, what)?;
    let digest = Sha256Digest::of(&tgz);
    if let Some(want) = want.as_deref() {
        if want.trim_start_matches("sha256:") != digest.hex() {
            return Err(Error::corrupt(what, format!("{url} has digest {digest}, but {index_url} says sha256:{want}"))
                .with_hint("the chart or the index is damaged or was replaced; tell the repository's maintainer"));
        }
    }
    cache.put(&digest, &tgz)?;
    Ok(digest)
}

/// Looks `name` `version` up in the bytes of a Helm repository's `index.yaml` served
/// at `base`: the chart's URL (made absolute) and the digest the index gives for it,
/// if any. Public for the fuzz targets; the bundler calls it from [`fetch_chart`].
#[doc(hidden)]
pub fn chart_in_index(
    bytes: &[u8],
    base: &str,
    name: &str,
    version: &str,
    what: &str,
) -> Result<(String, Option<String>)> {
    let index_url = format!("{base}/index.yaml");
    let index: Index = serde_yaml::from_slice(bytes).map_err(|e| {
        Error::input(what, format!("{index_url} is not a Helm repository index: {e}"))
            .with_hint("check the repository URL; `helm repo index DIR` writes a valid index.yaml")
    })?;
    let Some(versions) = index.entries.get(name) else {
        let names: Vec<&str> = index.entries.keys().map(String::as_str).take(20).collect();
        return Err(Error::input(what, format!("{index_url} has no chart `{}`; it has: {}", name, names.join(", ")))
            .with_hint("check the chart name"));
    };
    let version_of = |e: &IndexEntry| match &e.version {
        Some(serde_yaml::Value::String(s)) => s.clone(),
        Some(v) => serde_yaml::to_string(v).unwrap_or_default().trim().to_string(),
        None => String::new(),
    };
    let Some(entry) = versions.iter().find(|e| version_of(e) == version) else {
        let have: Vec<String> = versions.iter().map(version_of).take(20).collect();
        return Err(Error::input(
            what,
            format!("{index_url} has no version {} of {}; it has: {}", version, name, have.join(", ")),
        )
        .with_hint("check the version"));
    };
    let Some(url) = entry.urls.first() else {
        return Err(Error::input(what, format!("{index_url} lists no URL for {} {}", name, version))
            .with_hint("the repository index is broken; tell its maintainer"));
    };
    // Relative URLs are relative to the repository.
    let url = if url.contains("://") { url.clone() } else { format!("{base}/{}", url.trim_start_matches("./")) };
    Ok((url, entry.digest.clone().filter(|d| !d.is_empty())))
}

fn fetch_oci(
    client: &Client,
    cache: &Cache,
    req: &ChartRequest,
    location: &str,
    what: &str,
    reporter: &dyn Reporter,
) -> Result<Sha256Digest> {
    let (registry, path) = location.split_once('/').ok_or_else(|| {
        Error::input(what, format!("`{}` has no repository path", req.repo)).with_hint("write it as oci://HOST/PATH")
    })?;
    let repo =
        Repo { registry: registry.to_string(), repository: format!("{}/{}", path.trim_end_matches('/'), req.name) };
    // OCI tags cannot hold `+`; helm push writes it as `_`.
    let tag = req.version.replace('+', "_");
    let m = client.manifest(&repo, &tag, what)?;
    let doc: OciManifest = serde_json::from_slice(&m.bytes)
        .map_err(|e| Error::input(what, format!("{repo}:{tag} is not an OCI manifest: {e}")))?;
    let Some(layer) = doc.layers.iter().find(|l| l.media_type == HELM_CHART_LAYER) else {
        return Err(Error::input(what, format!("{repo}:{tag} is not a Helm chart (no {HELM_CHART_LAYER} layer)"))
            .with_hint("point `repo:` at where `helm push` stored the chart"));
    };
    if layer.size > MAX_CHART_BYTES {
        return Err(Error::input(what, format!("the chart layer is {} bytes, over {MAX_CHART_BYTES}", layer.size)));
    }
    if !cache.has(&layer.digest, layer.size) {
        client.download_blob(
            &repo,
            &layer.digest,
            layer.size,
            &cache.partial_path(&layer.digest),
            &cache.blob_path(&layer.digest),
            what,
            reporter,
        )?;
    }
    Ok(layer.digest)
}
