//! `airlock` as a library: everything the installer does, without printing. The
//! binary (`main.rs`) parses flags, prompts, draws progress and renders reports.
//!
//! - [`trust`]: which vendor keys are trusted.
//! - [`keys`]: key statements (rotation, revocation) applied to the site's key store.
//! - [`verify`]: full bundle verification with a per-artifact report.
//! - [`inspect`]: a bundle's contents from its manifest.
//! - [`staging`]: the verifying extractor into a staging directory.
//! - [`images`]: the image archive K3s/RKE2 import.
//! - [`layout`]: what an install lays down, as data.
//! - [`host`]: the one seam through which the host is read and changed.
//! - [`engine`]: plan, then apply with a journal, a lock and resume.
//! - [`answers`], [`profile`]: what the site answered, and how to install.
//! - [`ldap`]: the site's LDAP/AD settings, presets and their live check.
//! - [`preflight`]: whether the host can take the platform.
//! - [`distribution`]: K3s and RKE2 laid out as their own installers would.
//! - [`pki`]: the site CA and the platform's TLS certificates.
//! - [`install`]: verify, stage and plan an install (what `airlock install` runs).
//! - [`uninstall`]: remove what an install recorded, and nothing else.
//! - [`status`], [`support`]: day 2 — what is installed and whether it is as installed; a
//!   redacted support bundle.
//! - [`live`]: on the running system, start the distribution and wait for the platform.
//! - [`platform`]: Keycloak, MinIO and the reference app: chart values and the manifests they need.
//!
//! Reading the bundle itself is `airlock_format::read`.

pub mod answers;
pub mod delta;
pub mod distribution;
pub mod engine;
pub mod host;
pub mod images;
pub mod inspect;
pub mod install;
pub mod keys;
pub mod layout;
pub mod ldap;
pub mod live;
pub mod pki;
pub mod platform;
pub mod preflight;
pub mod profile;
pub mod staging;
pub mod status;
pub mod support;
pub mod trust;
pub mod uninstall;
pub mod upgrade;
pub mod verify;
