//! Pulling images from OCI Distribution registries (`docker://` sources).
//!
//! The pull fills a local content-addressed cache (`cache`), laid out like the blob
//! directory of an OCI layout, and the ordinary layout resolution then reads the image
//! from there: platform selection, the "no partial index" rule and every size and
//! digest check are the same code as for local sources.
//!
//! - [`client`], [`auth`], [`challenge`]: the OCI Distribution client, shared with
//!   the installer (`airlock-registry`), re-exported here.
//! - [`cache`]: the blob cache shared across builds.
//! - [`pull`]: resolving every registry image of a spec and downloading the blobs the
//!   selected platforms need, in parallel.
//! - [`charts`]: Helm charts from HTTP repositories and `oci://`.

pub mod cache;
pub mod charts;
pub mod pull;

use std::path::PathBuf;

pub use airlock_registry::{auth, challenge, client, ClientOptions, Credentials, RegistryTls};
pub use cache::Cache;
pub use pull::{fetch_images, PullRequest, Pulled};

/// Everything a pull needs besides the images: the client's options and where the
/// blob cache lives.
#[derive(Clone, Debug)]
pub struct PullOptions {
    pub cache_dir: PathBuf,
    pub client: ClientOptions,
}

impl PullOptions {
    /// Defaults: the given cache directory, 4 parallel downloads, 5 retries.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self { cache_dir, client: ClientOptions::new(concat!("airlock-bundler/", env!("CARGO_PKG_VERSION"))) }
    }
}

// A pull's options read as the client's (`options.registries`, `options.retries`).
impl std::ops::Deref for PullOptions {
    type Target = ClientOptions;
    fn deref(&self) -> &ClientOptions {
        &self.client
    }
}

impl std::ops::DerefMut for PullOptions {
    fn deref_mut(&mut self) -> &mut ClientOptions {
        &mut self.client
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
