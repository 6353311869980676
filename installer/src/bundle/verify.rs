//! `airlock verify`: check a bundle completely and say, per artifact, what is wrong.
//!
//! The report is built for support tickets: every artifact (image, chart, file,
//! distribution artifact, profile, installer) with its status, the bundle files with
//! their checksums from the signed sidecar, and — when verification stopped — the
//! error with its kind and exit code.

use std::collections::BTreeSet;
use std::fs;

use airlock_format::checksums;
use airlock_format::digest::sha256_file;
use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::manifest::{Entry, Manifest};
use airlock_format::minisign::{self, PublicKey, Signature};
use airlock_format::parts::BundleFiles;
use airlock_format::read::{read_bundle, EntrySink};
use airlock_format::report::Reporter;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Corrupt,
    Unsafe,
    /// Verification stopped before this was reached.
    NotChecked,
    /// A delta bundle does not carry it: it comes from the base release, whose files
    /// the installer checks against the signed manifest when it stages the delta.
    FromBase,
}

/// What a delta bundle builds on (absent for full bundles).
#[derive(Debug, Serialize)]
pub struct DeltaReport {
    pub base_name: String,
    pub base_version: String,
    /// The base release's manifest SHA-256: the site's `release.json` must say this.
    pub base_manifest_sha256: String,
    /// Entries of the release the bundle does not carry: expected from the base on
    /// the site, not checked here.
    pub entries_from_base: usize,
    pub bytes_from_base: u64,
}

impl DeltaReport {
    pub fn of(m: &Manifest) -> Option<Self> {
        let b = m.base.as_ref()?;
        Some(Self {
            base_name: b.name.clone(),
            base_version: b.version.clone(),
            base_manifest_sha256: b.manifest_sha256.clone(),
            entries_from_base: m.base_entries.len(),
            bytes_from_base: m.base_entries.iter().map(|e| e.size).sum(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ArtifactReport {
    pub kind: &'static str,
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Images whose bundle carries a cosign check: what checking it again found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosign: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartReport {
    pub path: String,
    pub size: u64,
    /// The digest listed in the signed checksum sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed_sha256: Option<String>,
    /// `ok`, `mismatch`, `missing`, `not-listed`, or `not-checked` (hashing the parts
    /// is only needed to locate damage; the content itself is checked either way).
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub subject: String,
    pub cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        Self { kind: e.kind, subject: e.subject.clone(), cause: e.cause.clone(), hint: e.hint.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    pub ok: bool,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Key id of the trusted key that signed the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Set for a delta bundle: the release it builds on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaReport>,
    pub artifacts: Vec<ArtifactReport>,
    pub parts: Vec<PartReport>,
    /// Whether the checksum sidecar exists and its signature is good.
    pub checksums: &'static str,
    /// Every problem found; the first decides the exit code.
    pub errors: Vec<ErrorReport>,
}

/// Records which entries were verified, so a stopped run can say what was fine.
#[derive(Default)]
struct Tracker {
    manifest: Option<Manifest>,
    signer: Option<PublicKey>,
    good: BTreeSet<String>,
    bad: BTreeSet<String>,
}

impl EntrySink for Tracker {
    fn manifest(&mut self, m: &Manifest, signer: &PublicKey) -> Result<()> {
        self.manifest = Some(m.clone());
        self.signer = Some(*signer);
        Ok(())
    }
    fn finish(&mut self, e: &Entry, verified: bool) -> Result<()> {
        if verified {
            self.good.insert(e.path.clone());
        } else {
            self.bad.insert(e.path.clone());
        }
        Ok(())
    }
}

pub struct VerifyOptions {
    /// Hash every bundle file against the signed sidecar even when the content is
    /// fine (the content check already covers every byte that matters).
    pub check_parts: bool,
}

/// Verifies everything and builds the report. Never fails itself: problems go into
/// the report and its exit code.
pub fn verify(
    files: &BundleFiles,
    trusted: &[PublicKey],
    opts: &VerifyOptions,
    reporter: &dyn Reporter,
) -> VerifyReport {
    let mut tracker = Tracker::default();
    let mut errors: Vec<ErrorReport> = vec![];
    let mut stopped: Option<Error> = None;
    match read_bundle(files, trusted, &mut tracker, reporter) {
        Ok(outcome) => {
            let labels = outcome.manifest.artifacts_by_entry();
            for m in &outcome.mismatches {
                let what = labels.get(&m.path).map(|l| l.join(", ")).unwrap_or_default();
                errors.push(ErrorReport {
                    kind: ErrorKind::Corrupt,
                    subject: m.path.clone(),
                    cause: format!(
                        "content does not match the signed manifest ({what}): expected {}, got {}",
                        m.expected, m.actual
                    ),
                    hint: Some("the bundle is damaged or was altered; copy it again from the original medium".into()),
                });
            }
        }
        Err(e) => {
            errors.push(ErrorReport::from(&e));
            // Entries that failed their digest before the stop were found too.
            if let Some(m) = &tracker.manifest {
                let labels = m.artifacts_by_entry();
                for p in &tracker.bad {
                    let what = labels.get(p).map(|l| l.join(", ")).unwrap_or_default();
                    errors.push(ErrorReport {
                        kind: ErrorKind::Corrupt,
                        subject: p.clone(),
                        cause: format!("content does not match the signed manifest ({what})"),
                        hint: Some(
                            "the bundle is damaged or was altered; copy it again from the original medium".into(),
                        ),
                    });
                }
            }
            stopped = Some(e);
        }
    }

    // Artifact statuses.
    let mut artifacts = vec![];
    if let Some(m) = &tracker.manifest {
        for a in m.artifacts() {
            let mut status = Status::Ok;
            let mut problems = vec![];
            // A delta's base entries are not in the bundle: only what it carries is checked.
            let carried: Vec<&String> = a.entries.iter().filter(|p| m.base_entry(p).is_none()).collect();
            if carried.is_empty() && !a.entries.is_empty() {
                artifacts.push(ArtifactReport {
                    kind: a.kind,
                    name: a.name,
                    status: Status::FromBase,
                    problems,
                    cosign: None,
                });
                continue;
            }
            for p in carried {
                if tracker.bad.contains(p) {
                    status = Status::Corrupt;
                    problems.push(format!("{p}: content does not match the signed manifest"));
                } else if !tracker.good.contains(p) {
                    if let Some(e) = stopped.as_ref().filter(|e| &e.subject == p) {
                        status = if e.kind == ErrorKind::Unsafe { Status::Unsafe } else { Status::Corrupt };
                        problems.push(format!("{p}: {}", e.cause));
                    } else if status == Status::Ok {
                        status = Status::NotChecked;
                    }
                }
            }
            // The upstream cosign signature the bundler checked, checked again offline.
            let mut cosign = None;
            if let Some((i, c)) = m
                .images
                .iter()
                .find(|i| a.kind == "image" && i.reference == a.name)
                .and_then(|i| Some((i, i.cosign.as_ref()?)))
            {
                cosign = Some(match airlock_format::cosign::check_carried(&i.reference, &i.digest, c) {
                    Ok(Some(key)) => format!("cosign signature good, key {key} (checked offline)"),
                    Ok(None) => "no cosign signature (none required)".to_string(),
                    Err(e) => {
                        status = Status::Corrupt;
                        problems.push(e.cause.clone());
                        errors.push(ErrorReport::from(&e));
                        "cosign signature BAD".to_string()
                    }
                });
                // The carried referrers are listed; their blobs were checked with the
                // image's entries above.
                if !c.referrers.is_empty() {
                    let kinds: Vec<String> = c
                        .referrers
                        .iter()
                        .map(|r| format!("{} {}", r.artifact_type.as_deref().unwrap_or("(no artifact type)"), r.digest))
                        .collect();
                    if let Some(text) = cosign.as_mut() {
                        text.push_str(&format!("; OCI referrers carried: {}", kinds.join(", ")));
                    }
                }
            }
            artifacts.push(ArtifactReport { kind: a.kind, name: a.name, status, problems, cosign });
        }
    }

    // Bundle files against the signed sidecar: always the signature and sizes; the
    // digests when asked or when something is wrong (to name the damaged part).
    let hash_parts = opts.check_parts || !errors.is_empty();
    let (checksums_state, parts, sidecar_errors) = check_parts(files, trusted, hash_parts);
    errors.extend(sidecar_errors);

    let exit_code = errors.first().map(|e| e.kind.exit_code()).unwrap_or(0);
    let m = tracker.manifest.as_ref();
    VerifyReport {
        bundle: files.base.display().to_string(),
        ok: errors.is_empty(),
        exit_code,
        name: m.map(|m| m.name.clone()),
        version: m.map(|m| m.version.clone()),
        created: m.map(|m| m.created.clone()),
        signer: tracker.signer.map(|k| k.key_id_hex()),
        delta: m.and_then(DeltaReport::of),
        artifacts,
        parts,
        checksums: checksums_state,
        errors,
    }
}

fn check_parts(
    files: &BundleFiles,
    trusted: &[PublicKey],
    hash: bool,
) -> (&'static str, Vec<PartReport>, Vec<ErrorReport>) {
    let mut errors = vec![];
    let sums_path = files.checksums_path();
    let sig_path = checksums::signature_path(&files.base);
    let listed = match (fs::read_to_string(&sums_path), fs::read_to_string(&sig_path)) {
        (Ok(text), Ok(sig)) => {
            let verified = Signature::parse(&sig)
                .and_then(|s| minisign::verify(trusted, &s, text.as_bytes()))
                .map_err(|e| e.within(sig_path.display()))
                .and_then(|_| checksums::parse(&text, &sums_path));
            match verified {
                Ok(list) => Some(list),
                Err(e) => {
                    errors.push(ErrorReport::from(&e));
                    None
                }
            }
        }
        (Err(_), _) => None,
        (Ok(_), Err(_)) => {
            errors.push(ErrorReport::from(
                &Error::signature(sig_path.display().to_string(), "the checksum list has no signature")
                    .with_hint("copy the .sha256.minisig file that came with the bundle"),
            ));
            None
        }
    };
    // From the files, not from `errors`: a list without its signature file is
    // "unsigned" even though that is reported as an error too.
    let state = match (&listed, sums_path.exists(), sig_path.exists()) {
        (Some(_), _, _) => "signed",
        (None, false, _) => "absent",
        (None, true, false) => "unsigned",
        (None, true, true) => "bad-signature",
    };
    let mut reports = vec![];
    for p in &files.parts {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let size = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let want = listed.as_ref().and_then(|l| l.iter().find(|(n, _)| *n == name).map(|(_, d)| *d));
        let status = match (&listed, want) {
            (None, _) => "not-checked",
            (Some(_), None) => "not-listed",
            (Some(_), Some(_)) if !hash => "not-checked",
            (Some(_), Some(d)) => match sha256_file(p) {
                Ok((got, _)) if got == d => "ok",
                Ok(_) => "mismatch",
                Err(_) => "missing",
            },
        };
        if status == "mismatch" || status == "not-listed" {
            errors.push(ErrorReport {
                kind: ErrorKind::Corrupt,
                subject: p.display().to_string(),
                cause: if status == "mismatch" {
                    "file does not match its digest in the signed checksum list".into()
                } else {
                    "file is not in the signed checksum list".into()
                },
                hint: Some("copy this file again from the original medium".into()),
            });
        }
        reports.push(PartReport { path: p.display().to_string(), size, listed_sha256: want.map(|d| d.hex()), status });
    }
    if let Some(list) = &listed {
        for (n, _) in list {
            if !reports.iter().any(|r| r.path.ends_with(&format!("/{n}")) || r.path == *n) {
                errors.push(ErrorReport {
                    kind: ErrorKind::Corrupt,
                    subject: files.base.with_file_name(n).display().to_string(),
                    cause: "listed in the signed checksum list but missing".into(),
                    hint: Some("copy every file of the bundle into the same directory".into()),
                });
            }
        }
    }
    (state, reports, errors)
}
