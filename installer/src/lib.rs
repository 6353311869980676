//! `airlock` as a library: everything the installer does, without printing. The
//! binary (`main.rs`) parses flags, prompts, draws progress and renders reports.
//!
//! - [`trust`]: which vendor keys are trusted.
//! - [`verify`]: full bundle verification with a per-artifact report.
//! - [`inspect`]: a bundle's contents from its manifest.
//! - [`staging`]: the verifying extractor into a staging directory.
//! - [`images`]: the image archive K3s/RKE2 import.
//!
//! Reading the bundle itself is `airlock_format::read`.

pub mod images;
pub mod inspect;
pub mod staging;
pub mod trust;
pub mod verify;
