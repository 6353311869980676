//! `airlock-bundler` as a library: read a bundle spec, load its sources, and write a
//! signed bundle. The binary (`main.rs`) only parses flags, asks for passphrases and
//! draws progress.
//!
//! - [`spec`]: the `bundle.yaml` the vendor writes.
//! - [`sources`]: where images and charts come from (OCI layouts, archives, chart dirs).
//! - [`fetch`]: the spec's registry images and repository charts, each fetched once
//!   and pinned in the lock.
//! - [`plan`]: the bundle as data (manifest and where each entry's bytes come from),
//!   built from the spec.
//! - [`create`]: plan, statements, delta, then write the signed bundle and sidecar.
//! - [`registry`]: pulling `docker://` images into a local cache.
//! - [`lock`]: `bundle.lock`, the digests registry images are pinned to.
//! - [`deps`]: chart dependencies vendored at build time.
//! - [`discover`]: images found by rendering charts with helm.
//! - [`statements`]: vendor key rotation and revocation statements.
//! - [`delta`]: delta bundles that leave out what the previous release has.
//! - [`monitoring`]: the alert rules and dashboards the bundle carries.

// A library reports through its Reporter and its return values; only a binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod chart_lock;
pub mod create;
pub mod delta;
pub mod deps;
pub mod discover;
pub mod fetch;
mod gunzip;
pub mod lock;
pub mod monitoring;
pub mod plan;
pub mod registry;
pub mod release;
pub mod sbom;
pub mod sources;
pub mod spec;
pub mod statements;
