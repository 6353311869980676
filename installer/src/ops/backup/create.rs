//! `airlock backup create`: every part of the site into one encrypted archive.
//!
//! Order: the site's lock is taken (no upgrade changes the site mid-backup); the
//! release, inventory and kept answers are read and the recovery keys checked before
//! anything is written; then the archive is opened as `FILE.partial` and each part
//! streams into it (datastore, databases, PKI, answers, secrets, release record), the
//! manifest last; the file is synced and renamed to `FILE`. A failure removes the
//! partial file and the staged dumps: no archive ever appears under the final name
//! unless it is complete.
//!
//! Dumps and snapshots are written by their tools into [`super::STAGING`] (inside the
//! 0700 state directory, through the host) and removed once archived: the tar format
//! needs each part's size before its bytes, and a dump's size is known only at its end.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, ErrorKind, Result};
use airlock_format::report::{Event, Reporter};
use serde::Serialize;

use super::{BackupManifest, Part, PartKind, Skipped, FORMAT_VERSION, MANIFEST_ENTRY, STAGING};
use crate::host::{FileKind, Host, Perms};
use crate::ops::upgrade::backup::{app_dump_argv, datastore_of, etcd_snapshot_argv, Datastore};
use crate::site::answers::keycloak_db::KeycloakDatabaseAnswers;
use crate::site::answers::Answers;
use crate::state::{self, Inventory, ReleaseRecord};

/// What `airlock backup create` is asked.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// A file, or an existing directory to put the file in (named by node and time);
    /// `None`: the site's backups directory, [`super::DEFAULT_DIR`].
    pub output: Option<PathBuf>,
    /// Keep only this many backups in the archive's directory, the newest (retention
    /// for scheduled backups); `None`: remove none.
    pub keep: Option<usize>,
    /// How the site's S3 API is reached (the defaults are the site's).
    pub s3: super::buckets::S3Options,
}

/// What `airlock backup create` made.
#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// The archive, as the machine running airlock sees it.
    pub file: PathBuf,
    /// Its size in bytes (encrypted and compressed).
    pub size: u64,
    /// How many recovery keys can open it.
    pub recipients: usize,
    /// Older backups removed by `keep`.
    pub pruned: Vec<PathBuf>,
    pub manifest: BackupManifest,
}

/// Takes a backup of the site on `host` (see the module docs) and records how it went
/// for `airlock status` ([`super::schedule::LAST_PATH`]), a failure too.
pub fn create(host: &dyn Host, opts: &CreateOptions, reporter: &dyn Reporter) -> Result<CreateReport> {
    let result = take(host, opts, reporter);
    let run = super::schedule::BackupRun {
        finished: state::now_rfc3339(),
        ok: result.is_ok(),
        file: result.as_ref().ok().map(|r| r.file.clone()),
        size: result.as_ref().ok().map(|r| r.size),
        error: result.as_ref().err().map(|e| format!("{}: {}", e.subject, e.cause)),
    };
    // A failed run's record is best effort: the error itself is what matters then.
    let recorded = super::schedule::record_run(host, run);
    let mut report = result?;
    recorded?;
    if let Some(keep) = opts.keep {
        let dir = report.file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        report.pruned = super::schedule::prune(dir, keep)?;
    }
    Ok(report)
}

fn take(host: &dyn Host, opts: &CreateOptions, reporter: &dyn Reporter) -> Result<CreateReport> {
    let _lock = state::lock_site(host)?;
    let release = ReleaseRecord::load(host)?.ok_or_else(|| {
        Error::input(state::RELEASE_PATH, "no release is installed here, so there is nothing to back up")
            .with_hint("run `airlock backup create` on an installed site (or pass --root of one)")
    })?;
    let inv = Inventory::load(host)?;
    let answers = crate::site::answers::kept::load_kept(host)?.ok_or_else(|| {
        Error::input(state::KEPT_ANSWERS_PATH, "the site kept no answers")
            .with_hint("run the install again with --answers; it keeps them")
    })?;
    let recipients = recipients(&answers)?;
    let created = state::now_rfc3339();
    let out = output_path(host, opts, &answers.node.name, &created)?;

    let mut manifest = BackupManifest {
        format: FORMAT_VERSION,
        created,
        node: answers.node.name.clone(),
        distribution: inv.distribution.clone(),
        release: Some(release),
        parts: Vec::new(),
        skipped: Vec::new(),
        buckets: Vec::new(),
        commands: Vec::new(),
    };
    // Leftovers of a killed run hold unencrypted dumps: gone before anything else.
    host.remove_all(Path::new(STAGING))?;
    host.create_dir(Path::new(STAGING), 0o700)?;
    let result = write_archive(&out, &recipients, |w| {
        datastore(host, &inv, w, &mut manifest, reporter)?;
        app_database(host, &inv, w, &mut manifest, reporter)?;
        keycloak_database(host, answers.keycloak_database.as_ref(), w, &mut manifest, reporter)?;
        buckets(host, &answers, &opts.s3, w, &mut manifest, reporter)?;
        for (tree, kind) in file_parts() {
            files(host, Path::new(tree), kind, w, &mut manifest, reporter)?;
        }
        let mut json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
        json.push(b'\n');
        w.append(MANIFEST_ENTRY, 0o600, json.len() as u64, &mut json.as_slice(), reporter)
            .map_err(|e| Error::io(out.display().to_string(), e))?;
        Ok(())
    });
    let cleaned = host.remove_all(Path::new(STAGING));
    let size = result?;
    cleaned?;
    Ok(CreateReport { file: out, size, recipients: recipients.len(), pruned: Vec::new(), manifest })
}

/// The trees and files backed up as they are, and what each holds.
fn file_parts() -> [(&'static str, PartKind); 4] {
    [
        (state::PKI_DIR, PartKind::Pki),
        (state::KEPT_ANSWERS_PATH, PartKind::Answers),
        (state::SECRETS_DIR, PartKind::Secret),
        (state::RELEASE_PATH, PartKind::Release),
    ]
}

// X25519 on purpose (see `super::parse_recipient`).
#[allow(deprecated)]
fn recipients(answers: &Answers) -> Result<Vec<age::x25519::Recipient>> {
    if answers.backup.recipients.is_empty() {
        return Err(Error::input(
            format!("{} (backup.recipients)", state::KEPT_ANSWERS_PATH),
            "no recovery public key is configured, so the backup could not be encrypted",
        )
        .with_hint(
            "make a recovery key off the site with `age-keygen -o recovery.key`, add the public key it prints \
             under backup.recipients in the answers and run `airlock upgrade` or the install again (docs/backup.md)",
        ));
    }
    answers
        .backup
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| super::parse_recipient(r).map_err(|cause| Error::input(format!("backup.recipients[{i}]"), cause)))
        .collect()
}

/// The archive's path on the machine running airlock: `-o FILE`, a file named by node
/// and time in `-o DIR`, or in the site's backups directory.
fn output_path(host: &dyn Host, opts: &CreateOptions, node: &str, created: &str) -> Result<PathBuf> {
    let name = super::file_name(node, created);
    match &opts.output {
        None => Ok(host.resolve_dir(Path::new(super::DEFAULT_DIR), 0o700)?.join(name)),
        Some(p) if p.is_dir() => Ok(p.join(name)),
        Some(p) => Ok(p.clone()),
    }
}

/// The tar inside the archive, and the thread that hashes each part's bytes.
pub(super) struct ArchiveWriter<'w> {
    tar: tar::Builder<Box<dyn Write + 'w>>,
    hasher: airlock_format::digest::BackgroundHasher,
    mtime: u64,
}

impl ArchiveWriter<'_> {
    /// Appends one entry of `size` bytes read from `r`: the bytes read (fewer when `r`
    /// ends early, which leaves the archive unusable: the caller must fail), whether `r`
    /// had more than `size` (the caller fails too), and their SHA-256.
    fn append(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        r: &mut dyn Read,
        reporter: &dyn Reporter,
    ) -> io::Result<(u64, bool, airlock_format::digest::Sha256Digest)> {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(mode & 0o7777);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        // The header (with a long-name entry before it when the name needs one) through
        // the tar crate, the body in 1 MiB chunks here: the crate copies 8 KiB at a time.
        self.tar.append_data(&mut h, name, io::empty())?;
        let out = self.tar.get_mut();
        let (n, digest) = super::pipe::copy_hashed(&self.hasher, r, out, size, reporter)?;
        let pad = (512 - n % 512) % 512;
        out.write_all(&[0u8; 512][..pad as usize])?;
        let more = n == size && super::pipe::read_full(r, &mut [0u8; 1])? > 0;
        Ok((n, more, digest))
    }
}

/// Writes `FILE.partial` (0600, never following a link there) through age, zstd and
/// tar, lets `fill` append the parts, finishes every layer explicitly (so a write error
/// is not lost on drop), syncs and renames to `out`. The partial file is removed on
/// any failure. Returns the archive's size.
// The archive goes to the operator's `-o` path on the machine running airlock (or the
// backups directory the host resolved), not to a target path, so it is written here
// rather than through the host, as the support bundle is.
#[allow(clippy::disallowed_methods, deprecated)]
fn write_archive(
    out: &Path,
    recipients: &[age::x25519::Recipient],
    fill: impl FnOnce(&mut ArchiveWriter<'_>) -> Result<()>,
) -> Result<u64> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::input(out.display().to_string(), "is not a file name")
            .with_hint("pass -o FILE or -o DIR, e.g. -o /srv/backups"));
    }
    let partial = out.with_file_name(format!("{name}.partial"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(|e| Error::io(&partial, e).with_hint("choose a writable place with -o"))?;
    let result = (|| -> Result<()> {
        // An earlier partial file may have had looser bits.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(&partial, e))?;
        let io_err = |e: io::Error| {
            Error::io(&partial, e).with_hint("free space or choose another place with -o, then run it again")
        };
        let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::input("backup.recipients", e.to_string()))?;
        std::thread::scope(|scope| -> Result<()> {
            // age and the file writes on a thread of their own (see `super::pipe`).
            let mut encrypted = super::pipe::Encrypting::start(scope, encryptor, &file);
            let filled = (|| -> Result<()> {
                let mut zstd = zstd::Encoder::new(&mut encrypted, 3).map_err(io_err)?;
                // Dumps are compressed already, snapshots and keys are not: level 3 on every
                // core costs little and keeps the archive small.
                let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
                zstd.multithread(threads).map_err(io_err)?;
                let mtime = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                {
                    let mut w = ArchiveWriter {
                        tar: tar::Builder::new(Box::new(&mut zstd) as Box<dyn Write + '_>),
                        hasher: super::pipe::hasher(),
                        mtime,
                    };
                    fill(&mut w)?;
                    w.tar.into_inner().map_err(io_err)?.flush().map_err(io_err)?;
                }
                zstd.finish().map_err(io_err)?;
                Ok(())
            })();
            // The writing thread's own error (a full disk) explains a failed write here.
            let written = encrypted.finish().map_err(io_err);
            written.and(filled)
        })?;
        file.sync_all().map_err(io_err)
    })();
    drop(file);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, out).map_err(|e| Error::io(out, e))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory is.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Ok(fs::metadata(out).map_err(|e| Error::io(out, e))?.len())
}

/// Streams the target file `path` into the archive as part `name`.
// What the part is (path, name, kind, source) and where it goes (the archive, its
// manifest, progress): each caller has all of them at hand.
#[allow(clippy::too_many_arguments)]
fn add_file(
    host: &dyn Host,
    path: &Path,
    name: String,
    kind: PartKind,
    source: String,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let meta = host.metadata(path)?.ok_or_else(|| Error::io(path, io::ErrorKind::NotFound.into()))?;
    let r = host.open_file(path)?.ok_or_else(|| Error::io(path, io::ErrorKind::NotFound.into()))?;
    reporter.event(Event::Phase { name: &format!("backing up {name}"), total: Some(meta.len) });
    let mut r = r;
    let (len, more, sha256) = w.append(&name, 0o600, meta.len, &mut r, reporter).map_err(|e| {
        Error::new(ErrorKind::Io, format!("part {name} ({})", path.display()), e.to_string())
            .with_hint("a file that changes while it is backed up cannot be archived: run the backup again")
    })?;
    if len != meta.len || more {
        let then = if more { "more".to_string() } else { len.to_string() };
        return Err(Error::new(
            ErrorKind::Io,
            format!("part {name} ({})", path.display()),
            format!("changed while it was read ({} bytes, then {then})", meta.len),
        )
        .with_hint("run the backup again"));
    }
    reporter.event(Event::Entry { path: &name, size: meta.len });
    manifest.parts.push(Part {
        name,
        kind,
        source,
        mode: meta.mode,
        size: meta.len,
        sha256: sha256.to_string(),
        object: None,
    });
    Ok(())
}

/// Every regular file below the target path `tree` (or `tree` itself), as its own
/// part `files/<target path>`; links and other kinds are recorded as skipped.
fn files(
    host: &dyn Host,
    tree: &Path,
    kind: PartKind,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let Some(meta) = host.metadata(tree)? else {
        manifest
            .skipped
            .push(Skipped { part: tree.display().to_string(), reason: "does not exist on this site".into() });
        return Ok(());
    };
    match meta.kind {
        FileKind::Dir => {
            for e in host.list_dir(tree)?.unwrap_or_default() {
                files(host, &tree.join(&e.name), kind, w, manifest, reporter)?;
            }
        }
        FileKind::File => {
            let rel = tree.strip_prefix("/").unwrap_or(tree);
            let name = format!("files/{}", rel.display());
            add_file(host, tree, name, kind, tree.display().to_string(), w, manifest, reporter)?;
        }
        FileKind::Symlink | FileKind::Other => manifest.skipped.push(Skipped {
            part: tree.display().to_string(),
            reason: "not a regular file (links are made again by the install)".into(),
        }),
    }
    Ok(())
}

fn run(host: &dyn Host, argv: &[&str], manifest: &mut BackupManifest) -> Result<()> {
    manifest.commands.push(argv.join(" "));
    host.run(argv)?
        .checked(argv)
        .map(|_| ())
        .map_err(|e| e.with_hint("the site is unchanged; fix the cause and run the backup again"))
}

fn datastore(
    host: &dyn Host,
    inv: &Inventory,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    match datastore_of(host, inv)? {
        Datastore::None(why) => manifest.skipped.push(Skipped { part: "datastore".into(), reason: why }),
        Datastore::Etcd { .. } if !host.live() => manifest.skipped.push(Skipped {
            part: "datastore".into(),
            reason: format!("not live (target root): no `{} etcd-snapshot save` runs there", inv.distribution),
        }),
        Datastore::Etcd { db } => {
            let dir = Path::new(STAGING).join("datastore");
            host.create_dir(&dir, 0o700)?;
            let dir_s = dir.to_string_lossy();
            run(host, &etcd_snapshot_argv(&inv.distribution, "airlock-backup", &dir_s), manifest)?;
            // The distribution appends the node name and time to the name it is given.
            let snapshot = host
                .list_dir(&dir)?
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.kind == FileKind::File && e.name.starts_with("airlock-backup"))
                .map(|e| dir.join(e.name))
                .ok_or_else(|| {
                    Error::io(&dir, io::ErrorKind::NotFound.into()).with_hint(format!(
                        "`{} etcd-snapshot save` left no snapshot there; look at its log (journalctl -u {})",
                        inv.distribution, inv.unit
                    ))
                })?;
            add_file(
                host,
                &snapshot,
                "datastore/etcd-snapshot".into(),
                PartKind::EtcdSnapshot,
                db.display().to_string(),
                w,
                manifest,
                reporter,
            )?;
            host.remove(&snapshot)?;
        }
        Datastore::Sqlite { db } => {
            if host.metadata(&db)?.is_none() {
                manifest.skipped.push(Skipped {
                    part: "datastore".into(),
                    reason: format!("{} does not exist yet (the distribution never ran here)", db.display()),
                });
                return Ok(());
            }
            // Under a target root nothing runs, so the files are at rest already.
            let live = host.live();
            if live {
                run(host, &["systemctl", "stop", &inv.unit], manifest)?;
            }
            let copied = sqlite_files(host, &db, w, manifest, reporter);
            // Started again whatever the copy did: a failed backup must not leave the site down.
            let started = if live { run(host, &["systemctl", "start", &inv.unit], manifest) } else { Ok(()) };
            copied?;
            started?;
        }
    }
    Ok(())
}

fn sqlite_files(
    host: &dyn Host,
    db: &Path,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    for e in host.list_dir(db)?.unwrap_or_default() {
        if e.kind != FileKind::File {
            continue;
        }
        let path = db.join(&e.name);
        let name = format!("datastore/sqlite/{}", e.name);
        add_file(host, &path, name, PartKind::SqliteFile, path.display().to_string(), w, manifest, reporter)?;
    }
    Ok(())
}

/// Streams a dump the command `argv` writes on its standard output into the archive as
/// `databases/<name>.dump`, through a 0600 file in staging.
fn dump(
    host: &dyn Host,
    argv: &[&str],
    name: &str,
    source: String,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let staged = Path::new(STAGING).join(format!("{name}.dump"));
    reporter.event(Event::Phase { name: &format!("dumping the {name} database"), total: None });
    manifest.commands.push(argv.join(" "));
    host.run_streaming(argv, None, Some(&staged))?.checked(argv).map_err(|e| {
        e.within(format!("part databases/{name}.dump"))
            .with_hint("the site is unchanged; fix the cause and run the backup again")
    })?;
    add_file(host, &staged, format!("databases/{name}.dump"), PartKind::Database, source, w, manifest, reporter)?;
    host.remove(&staged)
}

/// The app chart's namespace and release, when the installed profile has it: as the
/// upgrade's backup finds them, from the kept release's manifest and the chart's
/// auto-deploy manifest in the inventory.
fn app_release(host: &dyn Host, inv: &Inventory) -> Result<Option<(String, String)>> {
    let Some(id) = crate::state::releases::pointer(host, "current")? else { return Ok(None) };
    let Some(m) = crate::state::releases::kept_manifest(host, &id)? else { return Ok(None) };
    let Some(chart) = m.charts.iter().find(|c| c.name == crate::render::platform::wiring::APP_CHART) else {
        return Ok(None);
    };
    let deployed = format!("airlock-{}.yaml", chart.name);
    let installed = inv.files.iter().any(|f| f.path.file_name().is_some_and(|n| n.to_string_lossy() == deployed));
    Ok(installed.then(|| (chart.component.clone(), chart.name.clone())))
}

fn app_database(
    host: &dyn Host,
    inv: &Inventory,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let skip = |manifest: &mut BackupManifest, reason: String| {
        manifest.skipped.push(Skipped { part: "databases/app.dump".into(), reason })
    };
    let Some((namespace, release)) = app_release(host, inv)? else {
        skip(manifest, "the installed profile has no app chart".into());
        return Ok(());
    };
    let Some(kube) = inv.kube() else {
        skip(manifest, "no kubectl on this node (an agent)".into());
        return Ok(());
    };
    let argv = app_dump_argv(kube, &namespace, &release, "-Fc");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    if !host.live() {
        skip(manifest, "not live (target root): the app's PostgreSQL runs in the cluster".into());
        return Ok(());
    }
    dump(host, &argv, "app", format!("{namespace}/statefulset/{release}-postgresql"), w, manifest, reporter)
}

/// Whether the installed release has the platform's MinIO.
fn has_minio(host: &dyn Host) -> Result<bool> {
    let Some(id) = crate::state::releases::pointer(host, "current")? else { return Ok(false) };
    let Some(m) = crate::state::releases::kept_manifest(host, &id)? else { return Ok(false) };
    Ok(m.charts.iter().any(|c| c.name == crate::render::platform::wiring::MINIO_CHART))
}

/// Every object of every bucket the app uses, each streamed from its GET answer into
/// the archive as part `buckets/<bucket>/<n>` (n counts from 1 in listing order; the key
/// is in the manifest, since a key may hold what a tar name cannot).
fn buckets(
    host: &dyn Host,
    answers: &Answers,
    opts: &super::buckets::S3Options,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    use super::buckets::{app_buckets, BucketEntry, ObjectRef, S3};
    let names = app_buckets();
    let skip = |manifest: &mut BackupManifest, reason: &str| {
        for b in &names {
            manifest.skipped.push(Skipped { part: format!("buckets/{b}"), reason: reason.to_string() });
        }
    };
    if !has_minio(host)? {
        manifest.skipped.push(Skipped { part: "buckets".into(), reason: "the installed release has no MinIO".into() });
        return Ok(());
    }
    if !host.live() {
        skip(manifest, "not live (target root): MinIO runs in the cluster");
        return Ok(());
    }
    let s3 = S3::connect(host, &answers.cluster.ingress_domain, answers.node.ip, opts)?;
    for bucket in &names {
        reporter.event(Event::Phase { name: &format!("listing bucket {bucket}"), total: None });
        let mut entry = BucketEntry { name: bucket.clone(), endpoint: s3.shown().to_string(), objects: 0, bytes: 0 };
        // Page by page: one page of keys (1,000 by default) is held at a time, not the
        // whole listing.
        let mut n = 0usize;
        s3.list_pages(bucket, &mut |page| {
            for o in &page {
                n += 1;
                let name = format!("buckets/{bucket}/{n:06}");
                let subject = || format!("part {name} (object {:?} of bucket {bucket} at {})", o.key, s3.shown());
                reporter.event(Event::Phase { name: &format!("backing up {bucket}/{}", o.key), total: Some(o.size) });
                let super::buckets::Fetched { body: r, content_type, len } = s3.get(bucket, &o.key)?;
                if len.is_some_and(|l| l != o.size) {
                    return Err(Error::new(
                        ErrorKind::Io,
                        subject(),
                        format!(
                            "changed while it was backed up (listed with {} bytes, read with {})",
                            o.size,
                            len.unwrap_or(0)
                        ),
                    )
                    .with_hint("the app wrote to it meanwhile: run the backup again"));
                }
                let mut r = r;
                let (read, more, sha256) = w.append(&name, 0o600, o.size, &mut r, reporter).map_err(|e| {
                    Error::new(ErrorKind::Io, subject(), e.to_string()).with_hint(
                        "check the network to MinIO and the space for the archive, then run the backup again",
                    )
                })?;
                if read != o.size || more {
                    let read = if more { "more".to_string() } else { read.to_string() };
                    return Err(Error::new(
                        ErrorKind::Io,
                        subject(),
                        format!("changed while it was read ({} bytes listed, {read} read)", o.size),
                    )
                    .with_hint("run the backup again"));
                }
                reporter.event(Event::Entry { path: &name, size: o.size });
                manifest.parts.push(Part {
                    name,
                    kind: PartKind::Object,
                    source: format!("s3://{bucket}/{}", o.key),
                    mode: 0o600,
                    size: o.size,
                    sha256: sha256.to_string(),
                    object: Some(ObjectRef { bucket: bucket.clone(), key: o.key.clone(), content_type }),
                });
                entry.objects += 1;
                entry.bytes += o.size;
            }
            Ok(())
        })?;
        manifest.buckets.push(entry);
    }
    Ok(())
}

/// Keycloak's external PostgreSQL, dumped from this node with `pg_dump`; the password
/// goes in a 0600 password file in staging, never on the command line.
fn keycloak_database(
    host: &dyn Host,
    db: Option<&KeycloakDatabaseAnswers>,
    w: &mut ArchiveWriter<'_>,
    manifest: &mut BackupManifest,
    reporter: &dyn Reporter,
) -> Result<()> {
    let skip = |manifest: &mut BackupManifest, reason: String| {
        manifest.skipped.push(Skipped { part: "databases/keycloak.dump".into(), reason })
    };
    let Some(db) = db else {
        skip(
            manifest,
            "Keycloak keeps its file database in its pod's volume (no keycloak_database answers): \
             its realm comes back from the bundle, users from the directory"
                .into(),
        );
        return Ok(());
    };
    if db.vendor != "postgres" {
        skip(manifest, format!("{} databases are not dumped (PostgreSQL only)", db.vendor));
        return Ok(());
    }
    if !host.live() {
        skip(manifest, "not live (target root): nothing is dumped there".into());
        return Ok(());
    }
    let pgpass = Path::new(STAGING).join("pgpass");
    write_pgpass(host, &pgpass, db)?;
    let env = pg_env(host, &pgpass, db)?;
    let host_s = db.host.to_string();
    let port = db.port.to_string();
    let mut argv: Vec<&str> = env.iter().map(String::as_str).collect();
    argv.extend(["pg_dump", "-Fc", "-h", &host_s, "-p", &port, "-U", &db.username, "-d", &db.name]);
    let source = format!("{}:{}/{}", db.host.for_url(), db.port, db.name);
    let dumped = dump(host, &argv, "keycloak", source, w, manifest, reporter);
    let removed = host.remove(&pgpass);
    dumped?;
    removed
}

/// A 0600 libpq password file at the target path `path` for the database `db`: the
/// password reaches `pg_dump`/`pg_restore` through it, never on a command line.
pub(super) fn write_pgpass(host: &dyn Host, path: &Path, db: &KeycloakDatabaseAnswers) -> Result<()> {
    // pgpass escapes `:` and `\` in its fields.
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    let line = format!(
        "{}:{}:{}:{}:{}\n",
        esc(&db.host.to_string()),
        db.port,
        esc(&db.name),
        esc(&db.username),
        esc(db.password.expose())
    );
    host.write_file(path, &mut line.as_bytes(), Perms::secret()).map(|_| ())
}

/// `env PGPASSFILE=... PGSSLMODE=... [PGSSLROOTCERT=...]`: how a PostgreSQL client on
/// this node reaches `db` as Keycloak does (verify-full against its CA when given).
pub(super) fn pg_env(host: &dyn Host, pgpass: &Path, db: &KeycloakDatabaseAnswers) -> Result<Vec<String>> {
    let mut env = vec!["env".to_string(), format!("PGPASSFILE={}", host.real_path(pgpass)?.display())];
    match &db.ca_file {
        Some(ca) => {
            env.push("PGSSLMODE=verify-full".into());
            env.push(format!("PGSSLROOTCERT={}", ca.display()));
        }
        None => env.push("PGSSLMODE=prefer".into()),
    }
    Ok(env)
}
