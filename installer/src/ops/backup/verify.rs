//! `airlock backup verify`: opens a backup with a recovery key and checks all of it,
//! changing nothing.
//!
//! The archive is read once, as a stream: each part is decrypted (the age format
//! authenticates every chunk), decompressed and hashed; each database dump is also
//! handed to `pg_restore --list` on its way through, which reads its table of contents
//! as a restore would. The manifest comes last; then every part is compared with it
//! (size, SHA-256, none missing, none extra). The first problem is an error that names
//! the part.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Hasher;
use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::report::{Event, Reporter};
use serde::Serialize;

use super::{BackupManifest, PartKind, Skipped, FORMAT_VERSION, MANIFEST_ENTRY};
use crate::host::Host;
use crate::state::ReleaseRecord;

/// What `airlock backup verify` is asked.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The backup file.
    pub file: PathBuf,
    /// An age identity file (`age-keygen -o`) holding a recovery key.
    pub identity: PathBuf,
    /// Now, seconds since the epoch (the backup's age is measured against it).
    pub now_unix: i64,
}

/// One part as verified.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedPart {
    pub name: String,
    pub kind: PartKind,
    pub source: String,
    /// The file's mode on the site, for putting it back.
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
    /// Database dumps: the entries of their table of contents (`pg_restore --list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc_entries: Option<usize>,
    /// Database dumps: how many tables' data they hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    /// Bucket objects: which object, to put back as what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<super::buckets::ObjectRef>,
}

/// What a restore of this backup would bring back, and from when.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub file: PathBuf,
    /// When the backup was taken (RFC 3339).
    pub created: String,
    /// Its age in seconds, now.
    pub age_secs: u64,
    pub node: String,
    pub distribution: String,
    pub release: Option<ReleaseRecord>,
    pub parts: Vec<CheckedPart>,
    /// What the backup left out, and why (a restore cannot bring these back).
    pub skipped: Vec<Skipped>,
    /// The MinIO buckets it holds, with the objects and bytes verified of each.
    pub buckets: Vec<super::buckets::BucketEntry>,
}

impl VerifyReport {
    /// The parts of one kind.
    pub fn parts_of(&self, kind: PartKind) -> impl Iterator<Item = &CheckedPart> {
        self.parts.iter().filter(move |p| p.kind == kind)
    }
}

/// Reads the identities in an age identity file.
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let hint = "pass the recovery key file `age-keygen -o` made (its public key is in backup.recipients)";
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e).with_hint(hint))?;
    let ids = age::IdentityFile::from_buffer(BufReader::new(file))
        .map_err(|e| {
            Error::input(path.display().to_string(), format!("is not an age identity file: {e}")).with_hint(hint)
        })?
        .into_identities()
        .map_err(|e| {
            Error::input(path.display().to_string(), format!("holds no usable identity: {e}")).with_hint(hint)
        })?;
    if ids.is_empty() {
        return Err(Error::input(path.display().to_string(), "holds no age identity").with_hint(hint));
    }
    Ok(ids)
}

/// Decrypts the backup at `file` with `identities`: a stream of the tar inside.
pub(super) fn open(file: &Path, identities: &[Box<dyn age::Identity + Send + Sync>]) -> Result<impl Read> {
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, e).with_hint("name the backup file"))?;
    let subject = file.display().to_string();
    let decryptor = age::Decryptor::new_buffered(BufReader::new(f)).map_err(|e| {
        Error::corrupt(&subject, format!("is not an Airlock backup (an age file): {e}"))
            .with_hint("name a file `airlock backup create` wrote")
    })?;
    let plain = decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => Error::new(
            ErrorKind::Input,
            &subject,
            "was not encrypted to the given identity: none of its keys opens it",
        )
        .with_hint("use a recovery key whose public key was in backup.recipients when the backup was taken (`age-keygen -y KEYFILE` prints it)"),
        other => Error::corrupt(&subject, format!("could not be decrypted: {other}"))
            .with_hint("the file is damaged or was changed; take another backup, or use an older one"),
    })?;
    // age on a thread of its own, zstd here (see `super::pipe`).
    zstd::Decoder::new(super::pipe::Decrypting::start(plain)).map_err(|e| Error::io(file, e))
}

/// A part as read, before the manifest says what it should be.
struct Seen {
    name: String,
    size: u64,
    sha256: String,
    toc: Option<(usize, usize)>,
}

/// Verifies the backup (see the module docs). `host` runs `pg_restore --list`: the
/// machine airlock runs on, live; nothing is written.
pub fn verify(host: &dyn Host, opts: &VerifyOptions, reporter: &dyn Reporter) -> Result<VerifyReport> {
    let identities = load_identities(&opts.identity)?;
    let file = opts.file.display().to_string();
    let damaged = |part: &str, e: io::Error| {
        Error::corrupt(
            format!("{file}: part {part}"),
            format!("could not be read: {e} (the archive is damaged or was changed)"),
        )
        .with_hint("take another backup, or use an older one")
    };
    let mut archive = tar::Archive::new(open(&opts.file, &identities)?);
    let mut seen: Vec<Seen> = Vec::new();
    let mut manifest: Option<BackupManifest> = None;
    let hasher = super::pipe::hasher();
    let entries = archive.entries().map_err(|e| damaged("(archive start)", e))?;
    for entry in entries {
        let last = seen.last().map(|s| s.name.clone()).unwrap_or_else(|| "(archive start)".into());
        let entry = entry.map_err(|e| damaged(&format!("after {last}"), e))?;
        let name = entry.path().map_err(|e| damaged(&format!("after {last}"), e))?.to_string_lossy().into_owned();
        if manifest.is_some() {
            return Err(Error::corrupt(format!("{file}: part {name}"), "follows the manifest, which must be last")
                .with_hint("the archive was changed; use another backup"));
        }
        if name == MANIFEST_ENTRY {
            let mut bytes = Vec::new();
            entry.take(16 << 20).read_to_end(&mut bytes).map_err(|e| damaged(MANIFEST_ENTRY, e))?;
            let m: BackupManifest = serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(format!("{file}: {MANIFEST_ENTRY}"), format!("cannot be read: {e}"))
                    .with_hint("the archive was changed or made by another program")
            })?;
            if m.format != FORMAT_VERSION {
                return Err(Error::input(
                    format!("{file}: {MANIFEST_ENTRY}"),
                    format!("has layout version {}, this airlock reads {FORMAT_VERSION}", m.format),
                )
                .with_hint("verify it with the airlock release that took it"));
            }
            manifest = Some(m);
            continue;
        }
        reporter.event(Event::Phase { name: &format!("checking {name}"), total: Some(entry.size()) });
        if name.starts_with("databases/") && name.ends_with(".dump") {
            // pg_restore reads the dump's table of contents on its way through.
            let mut h = super::Counted { inner: entry, hasher: Sha256Hasher::new(), len: 0, reporter };
            let toc = Some(list_dump(host, &file, &name, &mut h)?);
            io::copy(&mut h, &mut io::sink()).map_err(|e| damaged(&name, e))?;
            reporter.event(Event::Entry { path: &name, size: h.len });
            seen.push(Seen { name, size: h.len, sha256: h.hasher.finish().to_string(), toc });
        } else {
            let mut entry = entry;
            let (len, sha256) = super::pipe::copy_hashed(&hasher, &mut entry, &mut io::sink(), u64::MAX, reporter)
                .map_err(|e| damaged(&name, e))?;
            reporter.event(Event::Entry { path: &name, size: len });
            seen.push(Seen { name, size: len, sha256: sha256.to_string(), toc: None });
        }
    }
    let manifest = manifest.ok_or_else(|| {
        Error::corrupt(&file, format!("ends without its {MANIFEST_ENTRY}: it is incomplete"))
            .with_hint("the backup was cut short (a full disk, a copy that stopped); use another backup")
    })?;
    let mut parts = Vec::new();
    for s in &seen {
        let Some(p) = manifest.part(&s.name) else {
            return Err(Error::corrupt(format!("{file}: part {}", s.name), "is not in the manifest")
                .with_hint("the archive was changed; use another backup"));
        };
        if p.size != s.size || p.sha256 != s.sha256 {
            return Err(Error::corrupt(
                format!("{file}: part {}", s.name),
                format!(
                    "does not match the manifest: {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                    s.size, s.sha256, p.size, p.sha256
                ),
            )
            .with_hint("the part was damaged or changed; use another backup"));
        }
        parts.push(CheckedPart {
            name: p.name.clone(),
            kind: p.kind,
            source: p.source.clone(),
            mode: p.mode,
            size: p.size,
            sha256: p.sha256.clone(),
            toc_entries: s.toc.map(|t| t.0),
            tables: s.toc.map(|t| t.1),
            object: p.object.clone(),
        });
    }
    if let Some(p) = manifest.parts.iter().find(|p| !seen.iter().any(|s| s.name == p.name)) {
        return Err(Error::corrupt(format!("{file}: part {}", p.name), "is in the manifest but not in the archive")
            .with_hint("the archive was changed; use another backup"));
    }
    // Each bucket as verified: its objects counted from the parts that matched.
    let mut buckets = manifest.buckets.clone();
    for b in &mut buckets {
        let objects = parts.iter().filter(|p| p.object.as_ref().is_some_and(|o| o.bucket == b.name));
        let (count, bytes) = objects.fold((0, 0), |(n, s), p| (n + 1, s + p.size));
        if (count, bytes) != (b.objects, b.bytes) {
            return Err(Error::corrupt(
                format!("{file}: bucket {}", b.name),
                format!("holds {count} objects ({bytes} bytes), the manifest says {} ({} bytes)", b.objects, b.bytes),
            )
            .with_hint("the archive was changed; use another backup"));
        }
    }
    let now = u64::try_from(opts.now_unix).unwrap_or(0);
    let created_unix = super::unix_of(&manifest.created).unwrap_or(now);
    Ok(VerifyReport {
        file: opts.file.clone(),
        age_secs: now.saturating_sub(created_unix),
        created: manifest.created,
        node: manifest.node,
        distribution: manifest.distribution,
        release: manifest.release,
        parts,
        skipped: manifest.skipped,
        buckets,
    })
}

/// `pg_restore --list` over the dump streaming through `r`: its table-of-contents
/// entries and how many tables' data it holds. pg_restore reads the table of contents
/// at the start of a custom-format dump and stops; the caller reads the rest.
fn list_dump(host: &dyn Host, file: &str, name: &str, r: &mut dyn Read) -> Result<(usize, usize)> {
    let argv = ["pg_restore", "--list"];
    let out = host.run_streaming(&argv, Some(r), None).map_err(|e| e.within(format!("{file}: part {name}")))?;
    if !out.success() {
        return Err(Error::corrupt(
            format!("{file}: part {name}"),
            format!("is not a dump pg_restore can read: {}", out.stderr.trim()),
        )
        .with_hint("the dump was damaged before it was archived; take another backup"));
    }
    let entries: Vec<&str> =
        out.stdout.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    let tables = entries.iter().filter(|l| l.contains(" TABLE DATA ")).count();
    Ok((entries.len(), tables))
}
