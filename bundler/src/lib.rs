//! `airlock-bundler` as a library: read a bundle spec, load its sources, and write a
//! signed bundle. The binary (`main.rs`) only parses flags, asks for passphrases and
//! draws progress.
//!
//! - [`spec`]: the `bundle.yaml` the vendor writes.
//! - [`sources`]: where images and charts come from (OCI layouts, archives, chart dirs).
//! - [`create`]: planning and writing the bundle.
//! - [`registry`]: pulling `docker://` images into a local cache.
//! - [`lock`]: `bundle.lock`, the digests registry images are pinned to.
//! - [`statements`]: vendor key rotation and revocation statements.
//! - [`delta`]: delta bundles that leave out what the previous release has.

// A library reports through its Reporter and its return values; only a binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod create;
pub mod delta;
pub mod deps;
pub mod discover;
pub mod lock;
pub mod registry;
pub mod release;
pub mod sbom;
pub mod sources;
pub mod spec;
pub mod statements;
