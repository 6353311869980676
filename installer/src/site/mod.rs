//! What the site is: its answers, the install profile, its directory (LDAP/AD), its PKI,
//! and whether its hosts can take the platform.
//!
//! - [`answers`]: what the site answered (file or wizard), checked.
//! - [`profile`]: how to install (distribution, topology, sizing).
//! - [`ldap`]: the site's LDAP/AD settings, presets and their live check.
//! - [`database`]: the live check of Keycloak's external database.
//! - [`pki`]: the site CA and the platform's TLS certificates.
//! - [`preflight`]: whether the host can take the platform.

pub mod answers;
pub mod database;
pub mod ldap;
pub mod pki;
pub mod preflight;
pub mod profile;
