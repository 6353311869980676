//! Pure renderers: from the answers, the profile and the staged bundle to a
//! [`Layout`](crate::engine::layout::Layout) — what the host gets, as data. Nothing here
//! reads or changes a host.
//!
//! - [`distribution`]: K3s and RKE2 laid out as their own installers would.
//! - [`platform`]: Keycloak, MinIO and the reference app: chart values and the manifests
//!   they need.

pub mod distribution;
pub mod platform;
