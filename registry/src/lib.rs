//! The OCI Distribution client both Airlock binaries use: the bundler pulls
//! `docker://` images and `oci://` charts with it, the installer pushes a verified
//! bundle's images into a site registry (`airlock registry push`).
//!
//! - [`challenge`]: `WWW-Authenticate` parsing (Basic and the Bearer token flow).
//! - [`auth`]: credentials from docker `config.json` files, flags and the environment.
//! - [`client`]: HTTP with per-registry TLS, credentials, retries, resumable blob
//!   downloads that hash while they stream, and the push side: blob existence checks,
//!   cross-repository mounts, chunked uploads that resume where the registry says it
//!   stopped, and manifest uploads.
//!
//! Kept hand-written on blocking `ureq` rather than taking the `oci-client` crate
//! (docs/registry.md, "Why our own client"): both binaries are synchronous, a push
//! must resume an upload after a broken connection and across runs (its session
//! URL and the offset the registry reports), and blobs stream from files with a
//! bounded buffer, never whole in memory.

pub mod auth;
pub mod challenge;
pub mod client;
pub mod push;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{Credentials, Login};
pub use client::{Client, Repo};
pub use push::{Mount, UploadStatus};

/// How to reach one registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryTls {
    /// PEM file with the CA(s) that sign the registry's certificate, trusted in
    /// addition to the system's.
    pub ca: Option<PathBuf>,
    /// Lab registries only: do not verify the certificate, and fall back to plain HTTP
    /// when the registry does not speak TLS at all.
    pub insecure: bool,
    /// Speak plain HTTP to this registry (a lab registry without TLS). Never implied:
    /// only an explicit `--plain-http` sets it.
    pub plain_http: bool,
}

/// What every request of a [`Client`] follows.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Transfers running at once.
    pub concurrency: usize,
    /// Attempts after the first for one request or blob (with exponential backoff).
    pub retries: u32,
    /// First backoff delay; doubles with each retry.
    pub backoff: Duration,
    /// Bytes per second per transfer (`--limit-rate`), for thin links.
    pub limit_rate: Option<u64>,
    pub credentials: Credentials,
    /// Per registry host (`127.0.0.1:5000`, `ghcr.io`).
    pub registries: BTreeMap<String, RegistryTls>,
    /// The `User-Agent` product, e.g. `airlock-bundler/0.1.0`.
    pub user_agent: String,
}

impl ClientOptions {
    /// Defaults: 4 parallel transfers, 5 retries starting at 500 ms.
    pub fn new(user_agent: impl Into<String>) -> Self {
        Self {
            concurrency: 4,
            retries: 5,
            backoff: Duration::from_millis(500),
            limit_rate: None,
            credentials: Credentials::default(),
            registries: BTreeMap::new(),
            user_agent: user_agent.into(),
        }
    }
}

/// The largest manifest, index or tag list accepted (16 MiB): real ones are a few KiB.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
