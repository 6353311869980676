//! The Airlock bundle format (v1), shared by the bundler that writes bundles and the
//! installer that reads them.
//!
//! A bundle is one tar stream compressed with zstd, optionally split into fixed-size
//! parts. Its first two entries are the manifest (`airlock/manifest.json`) and its
//! minisign signature; every later entry is listed in the manifest with its size and
//! SHA-256, in the order the manifest gives. Readers check the signature before they
//! read anything else and check every entry while it streams past, so nothing
//! unverified is ever handed on.
//!
//! Where things live:
//! - [`manifest`]: what a bundle says about itself (the signed document).
//! - [`minisign`]: keys and signatures, compatible with stock `minisign`.
//! - [`key_statement`]: signed statements that introduce, retire or revoke vendor keys.
//! - [`write`]: the streaming writer (bundler side).
//! - [`read`]: the streaming, verifying reader (installer and support side).
//! - [`parts`]: splitting into parts and reading parts in place.
//! - [`readahead`]: the reader's input, read ahead on the hashing thread's idle time.
//! - [`checksums`]: the `sha256sum --tag` sidecar and its signature.
//! - [`oci`]: the OCI image layout carried inside the bundle.
//! - [`monitoring`]: the alert rules and dashboards a bundle carries, and their checks.

// A library reports through its Reporter and its return values; only a binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod checksums;
pub mod cosign;
pub mod digest;
pub mod error;
pub mod exit;
pub mod frames;
pub mod key_statement;
pub mod manifest;
pub mod minisign;
pub mod monitoring;
pub mod oci;
pub mod parts;
pub mod read;
pub mod readahead;
pub mod report;
pub mod text;
pub mod write;

pub use digest::Sha256Digest;
pub use error::{Error, ErrorKind};
