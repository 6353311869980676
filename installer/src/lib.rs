//! `airlock` as a library: everything the installer does, without printing. The
//! binary (`main.rs`) parses flags, prompts, draws progress and renders reports.
//!
//! The rooms, from the commands down to the host (arrows point one way):
//!
//! - [`ops`]: one entry per command (install, join, upgrade, uninstall, status,
//!   support bundle).
//! - [`render`]: pure renderers from answers and bundle to what the host gets.
//! - [`bundle`]: trust, verify, inspect, and the verifying extractor into staging.
//! - [`site`]: the site's answers, profile, LDAP/AD, PKI and preflight.
//! - [`state`]: everything Airlock keeps on a site, and where.
//! - [`engine`]: plan, then apply with a journal, a lock and resume; the layout it applies.
//! - [`live`]: on the running system, start the distribution and wait for the platform.
//! - [`host`]: the one seam through which the host is read and changed.
//!
//! Reading the bundle itself is `airlock_format::read`.

// A library reports through its Reporter and its return values; only a binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod bundle;
pub mod engine;
pub mod host;
pub mod live;
pub mod ops;
pub mod render;
pub mod site;
pub mod state;
