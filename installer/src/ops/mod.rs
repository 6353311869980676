//! The commands, one library entry each: they plan, ask the host seam to change things
//! and return a report. They never print; the binary renders what they return.
//!
//! - [`backup`]: an encrypted backup of the site for disaster recovery, and its check.
//! - [`install`]: verify, stage, plan and apply an install (`airlock install`, `join`).
//! - [`preflight`]: whether a host can take a bundle's platform.
//! - [`push`]: a verified bundle's images into the site's registry.
//! - [`report`]: the signed readiness report, each checklist line with its evidence.
//! - [`uninstall`]: remove what an install recorded, and nothing else.
//! - [`status`], [`support`]: day 2 — what is installed and whether it is as installed;
//!   a redacted support bundle.
//! - [`upgrade`]: replace the installed release whole, with backup and rollback.

pub mod backup;
pub mod cluster;
pub mod install;
pub mod preflight;
pub mod push;
pub mod report;
pub mod serve;
pub mod status;
pub mod support;
pub mod uninstall;
pub mod upgrade;
