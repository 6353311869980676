//! Pulling images from OCI Distribution registries (`docker://` sources).
//!
//! The pull fills a local content-addressed cache (`cache`), laid out like the blob
//! directory of an OCI layout, and the ordinary layout resolution then reads the image
//! from there: platform selection, the "no partial index" rule and every size and
//! digest check are the same code as for local sources.
//!
//! - [`challenge`]: `WWW-Authenticate` parsing (Basic and the Bearer token flow).
//! - [`client`]: HTTP with per-registry TLS, credentials, retries and resumable blob
//!   downloads that hash while they stream.
//! - [`cache`]: the blob cache shared across builds.
//! - [`pull`]: resolving every registry image of a spec and downloading the blobs the
//!   selected platforms need, in parallel.
//! - [`auth`]: credentials from docker `config.json` files and the command line.
//! - [`charts`]: Helm charts from HTTP repositories and `oci://`.

pub mod auth;
pub mod cache;
pub mod challenge;
pub mod charts;
pub mod client;
pub mod pull;

use std::path::PathBuf;

pub use auth::Credentials;
pub use cache::Cache;
pub use pull::{fetch_images, PullRequest, Pulled};

/// How to reach one registry (from the spec's `registries:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM file with the CA(s) that sign the registry's certificate, trusted in
    /// addition to the system's.
    pub ca: Option<PathBuf>,
    /// Lab registries only: do not verify the certificate, and fall back to plain HTTP
    /// when the registry does not speak TLS at all.
    pub insecure: bool,
}

/// Everything a pull needs besides the images.
#[derive(Clone, Debug)]
pub struct PullOptions {
    pub cache_dir: PathBuf,
    /// Blob downloads running at once.
    pub concurrency: usize,
    /// Attempts after the first for one request or blob (with exponential backoff).
    pub retries: u32,
    /// First backoff delay; doubles with each retry.
    pub backoff: std::time::Duration,
    /// Bytes per second per transfer (`--limit-rate`), for thin uplinks.
    pub limit_rate: Option<u64>,
    pub credentials: Credentials,
    /// Per registry host (`127.0.0.1:5000`, `ghcr.io`).
    pub registries: std::collections::BTreeMap<String, RegistryTls>,
}

impl PullOptions {
    /// Defaults: the user cache directory, 4 parallel downloads, 5 retries.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            concurrency: 4,
            retries: 5,
            backoff: std::time::Duration::from_millis(500),
            limit_rate: None,
            credentials: Credentials::default(),
            registries: Default::default(),
        }
    }
}

/// `$XDG_CACHE_HOME/airlock`, else `~/.cache/airlock`, else a directory under the
/// system temp dir (no home: a CI user), so a build never fails for want of a cache.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("airlock");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/airlock");
    }
    std::env::temp_dir().join("airlock-cache")
}
