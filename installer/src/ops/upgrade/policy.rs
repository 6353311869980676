//! The version policy: which installed release a bundle may replace.
//!
//! No downgrade and no reinstall of the same version under another manifest; the
//! bundle's `upgrade.from` requirement must match the installed version; and no
//! release named in `upgrade.required` may be skipped (from below it to above it).
//! Every refusal can be overridden only with `--allow-policy-override`, which the
//! caller journals and reports.

use airlock_format::error::{Error, Result};
use airlock_format::manifest::Manifest;
use semver::{Version, VersionReq};
use serde::Serialize;

/// What the check decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// The exact bundle that is installed: nothing to do.
    AlreadyInstalled,
    Allowed,
    /// Refused, but the operator overrode it; `violations` say what was overridden.
    Overridden {
        violations: Vec<String>,
    },
}

fn version(v: &str, what: &str) -> Result<Version> {
    Version::parse(v.trim_start_matches('v')).map_err(|e| {
        Error::input(what, format!("version `{v}` is not a semver version: {e}"))
            .with_hint("an upgrade compares versions; bundles are versioned like `1.2.0`")
    })
}

/// Checks replacing the installed release (`installed_version`, whose manifest has
/// digest `installed_sha256`) with `m`. `Err` when refused and not overridden.
pub fn check(installed_version: &str, installed_sha256: &str, m: &Manifest, allow_override: bool) -> Result<Decision> {
    if installed_sha256 == crate::state::releases::manifest_sha256(m) {
        return Ok(Decision::AlreadyInstalled);
    }
    let subject = format!("bundle {} {}", m.name, m.version);
    let from = version(installed_version, "the installed release (release.json)")?;
    let to = version(&m.version, &subject)?;
    let mut violations = Vec::new();
    let mut hint = "use a bundle this release may upgrade to; to accept it anyway (journaled and reported), pass \
                    --allow-policy-override"
        .to_string();
    if to < from {
        violations.push(format!("{} is older than the installed {} (no downgrades)", m.version, installed_version));
    } else if to == from {
        let short = |sha: &str| sha[..12.min(sha.len())].to_string();
        violations.push(format!(
            "{} is installed already, from another bundle (installed manifest sha256 {}, this bundle's {})",
            m.version,
            short(installed_sha256),
            short(&crate::state::releases::manifest_sha256(m))
        ));
        // The usual cause: the release was built again (another creation time, a
        // changed file) without a new version.
        hint = format!(
            "a bundle built again is another bundle, even with the same version. Use the bundle that installed {v} \
             (`airlock status` shows its manifest sha256), or have the vendor give the rebuilt release a new \
             version; to replace the installed {v} with this bundle anyway (journaled and reported), pass \
             --allow-policy-override",
            v = m.version
        );
    }
    if let Some(policy) = &m.upgrade {
        if let Some(req) = &policy.from {
            let req = VersionReq::parse(req).map_err(|e| {
                Error::corrupt(&subject, format!("upgrade.from `{req}` is not a semver requirement: {e}"))
            })?;
            if !req.matches(&from) {
                violations
                    .push(format!("{} upgrades only from versions {req}, not from {installed_version}", m.version));
            }
        }
        for r in &policy.required {
            let required = version(r, &subject)?;
            if from < required && required < to {
                violations.push(format!(
                    "{r} is a required release: upgrade {installed_version} to {r} first, then to {}",
                    m.version
                ));
            }
        }
    }
    if violations.is_empty() {
        return Ok(Decision::Allowed);
    }
    if allow_override {
        return Ok(Decision::Overridden { violations });
    }
    Err(Error::input(subject, format!("the upgrade policy refuses it: {}", violations.join("; "))).with_hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_format::manifest::UpgradePolicy;

    fn manifest(version: &str, policy: Option<UpgradePolicy>) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": "airlock-bundle/v1", "name": "demo", "version": version, "created": "2026-01-01T00:00:00Z",
            "components": [], "images": [], "charts": [], "files": [], "profiles": [], "entries": []
        }))
        .unwrap();
        m.upgrade = policy;
        m
    }

    #[test]
    fn a_newer_version_without_policy_is_allowed() {
        assert_eq!(check("1.0.0", "x", &manifest("1.1.0", None), false).unwrap(), Decision::Allowed);
    }

    #[test]
    fn a_downgrade_is_refused_naming_both_versions_unless_overridden() {
        let e = check("1.1.0", "x", &manifest("1.0.0", None), false).unwrap_err();
        assert!(e.cause.contains("older than the installed 1.1.0"), "{e}");
        assert!(e.hint.unwrap().contains("--allow-policy-override"));
        assert!(matches!(check("1.1.0", "x", &manifest("1.0.0", None), true).unwrap(), Decision::Overridden { .. }));
    }

    #[test]
    fn the_same_manifest_is_already_installed() {
        let m = manifest("1.0.0", None);
        let sha = crate::state::releases::manifest_sha256(&m);
        assert_eq!(check("1.0.0", &sha, &m, false).unwrap(), Decision::AlreadyInstalled);
        let e = check("1.0.0", &"ab".repeat(32), &m, false).unwrap_err();
        assert!(e.cause.contains("installed already, from another bundle (installed manifest sha256 abababababab"));
        let hint = e.hint.unwrap();
        assert!(hint.contains("a bundle built again is another bundle"), "{hint}");
        assert!(hint.contains("`airlock status`") && hint.contains("new version"), "{hint}");
        assert!(hint.contains("--allow-policy-override"), "{hint}");
    }

    #[test]
    fn skipping_a_required_release_is_refused_and_landing_on_it_is_not() {
        let p = UpgradePolicy { from: None, required: vec!["1.5.0".into()] };
        let e = check("1.0.0", "x", &manifest("2.0.0", Some(p.clone())), false).unwrap_err();
        assert!(e.cause.contains("1.5.0 is a required release"), "{e}");
        assert_eq!(check("1.0.0", "x", &manifest("1.5.0", Some(p.clone())), false).unwrap(), Decision::Allowed);
        assert_eq!(check("1.5.0", "x", &manifest("2.0.0", Some(p)), false).unwrap(), Decision::Allowed);
    }

    #[test]
    fn an_installed_version_outside_from_is_refused() {
        let p = UpgradePolicy { from: Some(">=1.2.0, <2.0.0".into()), required: vec![] };
        let e = check("1.0.0", "x", &manifest("1.3.0", Some(p.clone())), false).unwrap_err();
        assert!(e.cause.contains("upgrades only from versions"), "{e}");
        assert_eq!(check("1.2.5", "x", &manifest("1.3.0", Some(p)), false).unwrap(), Decision::Allowed);
    }
}
