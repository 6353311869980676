//! The bundle on the site side: which vendor keys are trusted, verifying and inspecting a
//! bundle, and the verifying extractor into staging.
//!
//! - [`trust`]: which vendor keys are trusted.
//! - [`keys`]: key statements (rotation, revocation) applied to the site's key store.
//! - [`verify`]: full bundle verification with a per-artifact report.
//! - [`inspect`]: a bundle's contents from its manifest.
//! - [`profiles`]: the install profiles a bundle carries.
//! - [`staging`]: the verifying extractor into a staging directory.
//! - [`base`]: the installed release a delta builds on, merged into staging.
//! - [`delta`]: a delta bundle staged over the installed release.
//! - [`images`]: the image archive K3s/RKE2 import.
//!
//! Reading the bundle itself is `airlock_format::read`.

pub mod base;
pub mod delta;
pub mod images;
pub mod inspect;
pub mod keys;
pub mod profiles;
pub mod staging;
pub mod trust;
pub mod verify;
