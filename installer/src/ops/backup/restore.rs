//! `airlock restore`: a backup onto an empty node (which may have another name and
//! address), as the same release with the same PKI and secrets.
//!
//! Plan first: the backup is verified whole (every part's digest, each dump listed)
//! before anything is written, and the steps are shown; `--dry-run` stops there. Then, in
//! order, each step journaled in `/var/lib/airlock/restore.json` once done, so a run
//! that stops anywhere is resumed by the same command and skips what is done:
//!
//! 1. `state`: the PKI (CA key included) and the generated secrets from the backup, with
//!    their modes, before the install: the install keeps a CA, keys and secrets it finds,
//!    so the platform comes back with exactly the old ones (and the cluster token, which
//!    an etcd snapshot needs on new hosts).
//! 2. `install`: the release the backup names, from `--bundle` (refused when the
//!    bundle's manifest digest differs), with `--answers` (the new node's name and
//!    address); live, it waits until the platform is healthy.
//! 3. `datastore`: an etcd snapshot into `<data>/server/db/snapshots/`, then, live, the
//!    unit stopped, `<distribution> server --cluster-reset
//!    --cluster-reset-restore-path=<snapshot>`, the unit started; SQLite files back into
//!    `<data>/server/db` with the unit stopped.
//! 4. `databases`: live, each dump streamed into `pg_restore --clean --if-exists` (the
//!    app's through `kubectl exec -i` into its PostgreSQL, Keycloak's to its external
//!    database); under a target root nothing runs, and the report says so.
//! 5. `buckets`: live, each MinIO bucket made if missing and each object streamed back
//!    into it over S3 (see `buckets.rs`), marked with its SHA-256; a re-run skips each
//!    object the server already has with that mark and size.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use airlock_format::digest::Sha256Hasher;
use airlock_format::error::{Error, Result};
use airlock_format::report::{Event, Reporter};
use serde::{Deserialize, Serialize};

use super::verify::{load_identities, open};
use super::{PartKind, VerifyReport};
use crate::host::{Host, Perms};
use crate::ops::install::{self, InstallOptions};
use crate::site::answers::wizard::Prompter;
use crate::state::{self, Inventory};

/// The restore journal.
pub const JOURNAL_PATH: &str = "/var/lib/airlock/restore.json";
/// Test-only crash injection: `AIRLOCK_TEST_RESTORE_CRASH_AFTER=<step>` aborts the
/// process right after that step is journaled.
pub const CRASH_AFTER_ENV: &str = "AIRLOCK_TEST_RESTORE_CRASH_AFTER";

/// Test-only fault injection: `AIRLOCK_TEST_RESTORE_FAIL_AFTER_OBJECTS=<n>` fails the
/// buckets step after it has put `n` objects, as a broken connection would.
pub const FAIL_AFTER_OBJECTS_ENV: &str = "AIRLOCK_TEST_RESTORE_FAIL_AFTER_OBJECTS";

/// The steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreStep {
    State,
    Install,
    Datastore,
    Databases,
    Buckets,
}

impl RestoreStep {
    pub const ALL: [RestoreStep; 5] = [
        RestoreStep::State,
        RestoreStep::Install,
        RestoreStep::Datastore,
        RestoreStep::Databases,
        RestoreStep::Buckets,
    ];

    pub fn id(self) -> &'static str {
        match self {
            RestoreStep::State => "state",
            RestoreStep::Install => "install",
            RestoreStep::Datastore => "datastore",
            RestoreStep::Databases => "databases",
            RestoreStep::Buckets => "buckets",
        }
    }
}

/// What `airlock restore` is asked.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub file: PathBuf,
    pub identity: PathBuf,
    /// The install of the release (bundle, keys, `--answers`, root, timeout, dry run).
    pub install: InstallOptions,
    pub now_unix: i64,
    /// How the site's S3 API is reached (the defaults are the site's).
    pub s3: super::buckets::S3Options,
}

/// `restore.json`: which backup is being restored and what is done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreJournal {
    /// The backup's `created` and node: a journal of another backup is not resumed.
    pub backup_created: String,
    pub backup_node: String,
    pub done: Vec<RestoreStep>,
    /// What a step could not do, and why (nothing runs under a target root).
    pub notes: Vec<String>,
    /// Each command run, as argv joined by spaces.
    pub commands: Vec<String>,
}

/// One step of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    pub step: RestoreStep,
    pub what: String,
    pub done: bool,
}

/// What `airlock restore` did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub backup: VerifyReport,
    pub steps: Vec<PlannedStep>,
    pub dry_run: bool,
    pub journal: RestoreJournal,
}

fn crash_point(step: RestoreStep) {
    if std::env::var(CRASH_AFTER_ENV).ok().as_deref() == Some(step.id()) {
        std::process::abort();
    }
}

/// Restores the backup (see the module docs). `verifier` runs `pg_restore --list`
/// during the verification (the machine airlock runs on).
pub fn restore(
    opts: &RestoreOptions,
    verifier: &dyn Host,
    prompter: &mut dyn Prompter,
    clock: &dyn crate::live::Clock,
    reporter: &dyn Reporter,
) -> Result<RestoreReport> {
    let identities = load_identities(&opts.identity)?;
    let verify_opts =
        super::VerifyOptions { file: opts.file.clone(), identity: opts.identity.clone(), now_unix: opts.now_unix };
    let backup = super::verify(verifier, &verify_opts, reporter)?;
    let root = &opts.install.root;
    let live = root == Path::new("/");
    let host = if opts.install.dry_run { None } else { Some(crate::host::RootedHost::create(root.clone(), live)?) };
    let mut journal = match &host {
        Some(h) => load_journal(h, &backup)?,
        None => RestoreJournal::default(),
    };
    // A restore replaces the site's CA, keys and secrets: only onto a node that has no
    // site yet, or to finish a restore that started there.
    let target = crate::host::RootedHost::new(root.clone(), false).ok();
    let installed =
        target.as_ref().map(|t| t.metadata(Path::new(state::RELEASE_PATH))).transpose()?.flatten().is_some();
    if journal.done.is_empty() && installed {
        return Err(Error::input(
            crate::host::shown_path(root, Path::new(state::RELEASE_PATH)).display().to_string(),
            "a release is installed here already: a restore would replace this site's CA, keys and secrets",
        )
        .with_hint(
            "restore onto an empty node (or --root); to go back to an earlier state of this site, uninstall it first",
        ));
    }
    let steps = plan(&backup, &journal);
    if opts.install.dry_run {
        return Ok(RestoreReport { backup, steps, dry_run: true, journal });
    }
    let host = host.expect("made unless a dry run");
    journal.backup_created = backup.created.clone();
    journal.backup_node = backup.node.clone();
    for step in RestoreStep::ALL {
        if journal.done.contains(&step) {
            continue;
        }
        reporter.event(Event::Phase { name: &format!("restore: {}", step.id()), total: None });
        match step {
            RestoreStep::State => {
                let _lock = state::lock_site(&host)?;
                put_parts(&host, opts, &identities, &backup, &[PartKind::Pki, PartKind::Secret], &|p| p.to_path_buf())?;
            }
            RestoreStep::Install => install_release(opts, &backup, prompter, clock, reporter)?,
            RestoreStep::Datastore => {
                let _lock = state::lock_site(&host)?;
                restore_datastore(&host, opts, &identities, &backup, &mut journal)?;
            }
            RestoreStep::Databases => {
                let _lock = state::lock_site(&host)?;
                restore_databases(&host, opts, &identities, &backup, &mut journal)?;
            }
            RestoreStep::Buckets => {
                let _lock = state::lock_site(&host)?;
                restore_buckets(&host, opts, &identities, &backup, &mut journal)?;
            }
        }
        journal.done.push(step);
        save_journal(&host, &journal)?;
        crash_point(step);
    }
    let steps = plan(&backup, &journal);
    Ok(RestoreReport { backup, steps, dry_run: false, journal })
}

fn plan(backup: &VerifyReport, journal: &RestoreJournal) -> Vec<PlannedStep> {
    let rel = backup.release.as_ref().map(|r| format!("{} {}", r.bundle, r.version)).unwrap_or_default();
    let count = |k: PartKind| backup.parts_of(k).count();
    RestoreStep::ALL
        .into_iter()
        .map(|step| PlannedStep {
            step,
            what: match step {
                RestoreStep::State => format!(
                    "put back the PKI ({} files, the CA key included) and {} generated secrets",
                    count(PartKind::Pki),
                    count(PartKind::Secret)
                ),
                RestoreStep::Install => format!("install {rel} from the bundle with the given answers"),
                RestoreStep::Datastore => match backup.parts.iter().find(|p| p.kind.is_datastore()) {
                    Some(p) if p.kind == PartKind::EtcdSnapshot => {
                        "restore the etcd snapshot (--cluster-reset --cluster-reset-restore-path)".into()
                    }
                    Some(_) => "put back the SQLite datastore with the unit stopped".into(),
                    None => "nothing: the backup holds no datastore".into(),
                },
                RestoreStep::Databases => {
                    let dbs: Vec<&str> = backup.parts_of(PartKind::Database).map(|p| p.name.as_str()).collect();
                    if dbs.is_empty() {
                        "nothing: the backup holds no database dump".into()
                    } else {
                        format!("pg_restore {} once the platform is healthy", dbs.join(", "))
                    }
                }
                RestoreStep::Buckets => {
                    if backup.buckets.is_empty() {
                        "nothing: the backup holds no bucket".into()
                    } else {
                        let b: Vec<String> = backup
                            .buckets
                            .iter()
                            .map(|b| format!("{} ({} objects, {} bytes)", b.name, b.objects, b.bytes))
                            .collect();
                        format!("put the objects back into MinIO: {}", b.join(", "))
                    }
                }
            },
            done: journal.done.contains(&step),
        })
        .collect()
}

fn load_journal(host: &dyn Host, backup: &VerifyReport) -> Result<RestoreJournal> {
    let Some(bytes) = host.read_file(Path::new(JOURNAL_PATH))? else { return Ok(RestoreJournal::default()) };
    let j: RestoreJournal = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(JOURNAL_PATH, format!("is not a restore journal: {e}"))
            .with_hint("remove it and run the restore again")
    })?;
    if j.backup_created != backup.created || j.backup_node != backup.node {
        return Err(Error::input(
            JOURNAL_PATH,
            format!(
                "records a restore of another backup (taken {} on {}); this one was taken {} on {}",
                j.backup_created, j.backup_node, backup.created, backup.node
            ),
        )
        .with_hint("finish that restore with its backup, or restore onto an empty root"));
    }
    Ok(j)
}

fn save_journal(host: &dyn Host, j: &RestoreJournal) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(j).expect("the journal serialises");
    json.push(b'\n');
    host.write_file(Path::new(JOURNAL_PATH), &mut json.as_slice(), Perms::mode(0o600)).map(|_| ())
}

/// Streams the archive once and hands each part of `kinds` to `put` with a reader over
/// its bytes that checks them against the verified manifest when they end.
pub(super) fn each_part(
    opts: &RestoreOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    backup: &VerifyReport,
    kinds: &[PartKind],
    put: &mut dyn FnMut(&super::verify::CheckedPart, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let file = opts.file.display().to_string();
    let mut archive = tar::Archive::new(open(&opts.file, identities)?);
    let damaged = |name: &str, e: io::Error| {
        Error::corrupt(format!("{file}: part {name}"), format!("could not be read: {e}"))
            .with_hint("the file changed since it was verified; verify it again")
    };
    for entry in archive.entries().map_err(|e| damaged("(archive start)", e))? {
        let entry = entry.map_err(|e| damaged("(next)", e))?;
        let name = entry.path().map_err(|e| damaged("(next)", e))?.to_string_lossy().into_owned();
        let Some(part) = backup.parts.iter().find(|p| p.name == name && kinds.contains(&p.kind)) else { continue };
        let mut checked =
            Checked { inner: entry, hasher: Sha256Hasher::new(), len: 0, want: part, file: &file, checked: false };
        put(part, &mut checked)?;
        io::copy(&mut checked, &mut io::sink()).map_err(|e| damaged(&name, e))?;
    }
    Ok(())
}

/// Fails the last read of a part whose bytes are not those verified.
struct Checked<'a, R> {
    inner: R,
    hasher: Sha256Hasher,
    len: u64,
    want: &'a super::verify::CheckedPart,
    file: &'a str,
    checked: bool,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        // Checked at the part's last byte, before a writer sees the end and keeps it.
        if !self.checked && (n == 0 || self.len >= self.want.size) {
            self.checked = true;
            let got = std::mem::replace(&mut self.hasher, Sha256Hasher::new()).finish().to_string();
            if self.len != self.want.size || got != self.want.sha256 {
                return Err(io::Error::other(format!(
                    "{}: part {} changed since it was verified",
                    self.file, self.want.name
                )));
            }
        }
        Ok(n)
    }
}

/// Writes each part of `kinds` to the target path `to(source)`, with the mode it had.
fn put_parts(
    host: &dyn Host,
    opts: &RestoreOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    backup: &VerifyReport,
    kinds: &[PartKind],
    to: &dyn Fn(&Path) -> PathBuf,
) -> Result<()> {
    each_part(opts, identities, backup, kinds, &mut |part, r| {
        let path = to(Path::new(&part.source));
        let perms = if part.mode & 0o077 == 0 { Perms::secret() } else { Perms::mode(part.mode) };
        host.write_file(&path, r, perms).map(|_| ())
    })
}

fn install_release(
    opts: &RestoreOptions,
    backup: &VerifyReport,
    prompter: &mut dyn Prompter,
    clock: &dyn crate::live::Clock,
    reporter: &dyn Reporter,
) -> Result<()> {
    let ready = install::plan_install(&opts.install, prompter, reporter)?;
    let bundle_digest = crate::state::releases::manifest_sha256(&ready.prepared.staged.manifest);
    if let Some(rel) = &backup.release {
        if rel.manifest_sha256 != bundle_digest {
            return Err(Error::input(
                opts.install.bundle.display().to_string(),
                format!(
                    "is {} {} (manifest {}), but the backup was taken of {} {} (manifest {})",
                    ready.prepared.staged.manifest.name,
                    ready.prepared.staged.manifest.version,
                    &bundle_digest[..12],
                    rel.bundle,
                    rel.version,
                    &rel.manifest_sha256[..12.min(rel.manifest_sha256.len())]
                ),
            )
            .with_hint("restore with the bundle of the release the backup names (airlock backup verify shows it), then upgrade"));
        }
    }
    if !ready.preflight.may_proceed() {
        let failed: Vec<&str> = ready.preflight.failed().map(|c| c.id.as_str()).collect();
        return Err(Error::input("preflight", format!("{} failed; the install was not started", failed.join(", ")))
            .with_hint("fix what `airlock preflight` says and run the restore again (it resumes)"));
    }
    install::apply_install(ready, &opts.install, clock, reporter).map(|_| ())
}

fn run(host: &dyn Host, argv: &[&str], journal: &mut RestoreJournal) -> Result<()> {
    journal.commands.push(argv.join(" "));
    host.run(argv)?
        .checked(argv)
        .map(|_| ())
        .map_err(|e| e.with_hint("fix the cause and run the restore again: it resumes at this step"))
}

/// The datastore step (see the module docs); public for the recording-host tests.
pub fn restore_datastore(
    host: &dyn Host,
    opts: &RestoreOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    backup: &VerifyReport,
    journal: &mut RestoreJournal,
) -> Result<()> {
    let Some(kind) = backup.parts.iter().find(|p| p.kind.is_datastore()).map(|p| p.kind) else {
        journal.notes.push("datastore: the backup holds none".into());
        return Ok(());
    };
    let inv = Inventory::load(host)?;
    let data = inv.runtime_dirs.first().cloned().ok_or_else(|| {
        Error::input(state::INVENTORY_PATH, "names no data directory")
            .with_hint("run the restore again; the install records it")
    })?;
    let db = data.join("server/db");
    let live = host.live();
    if live {
        run(host, &["systemctl", "stop", &inv.unit], journal)?;
    }
    if kind == PartKind::EtcdSnapshot {
        let snapshot = db.join("snapshots").join(format!("airlock-restore-{}", backup.node));
        put_parts(host, opts, identities, backup, &[PartKind::EtcdSnapshot], &|_| snapshot.clone())?;
        let restore = format!("--cluster-reset-restore-path={}", snapshot.display());
        if live {
            run(host, &[&inv.distribution, "server", "--cluster-reset", &restore], journal)?;
        } else {
            journal.notes.push(format!(
                "datastore: not live (target root): the snapshot is at {}; at first boot run `{} server --cluster-reset {restore}`",
                snapshot.display(),
                inv.distribution
            ));
        }
    } else {
        put_parts(host, opts, identities, backup, &[PartKind::SqliteFile], &|source| {
            db.join(source.file_name().unwrap_or_default())
        })?;
    }
    if live {
        run(host, &["systemctl", "start", &inv.unit], journal)?;
    }
    Ok(())
}

/// The databases step (see the module docs); public for the recording-host tests.
pub fn restore_databases(
    host: &dyn Host,
    opts: &RestoreOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    backup: &VerifyReport,
    journal: &mut RestoreJournal,
) -> Result<()> {
    if backup.parts_of(PartKind::Database).next().is_none() {
        journal.notes.push("databases: the backup holds none".into());
        return Ok(());
    }
    if !host.live() {
        journal.notes.push("databases: not live (target root): nothing runs there, no dump was restored".into());
        return Ok(());
    }
    let inv = Inventory::load(host)?;
    let answers = crate::site::answers::kept::load_kept(host)?;
    let mut commands = Vec::new();
    each_part(opts, identities, backup, &[PartKind::Database], &mut |part, r| {
        let argv: Vec<String> = if part.name == "databases/app.dump" {
            let (namespace, release) = part
                .source
                .split_once("/statefulset/")
                .map(|(ns, sts)| (ns.to_string(), sts.trim_end_matches("-postgresql").to_string()))
                .ok_or_else(|| Error::corrupt(&part.name, format!("names no statefulset: {}", part.source)))?;
            let kube = inv.kube().ok_or_else(|| {
                Error::input(&part.name, "this node has no kubectl (an agent)").with_hint("restore on the first server")
            })?;
            let script = "pg_restore --clean --if-exists --no-owner -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"";
            kube.with_timeout(std::time::Duration::ZERO).argv(&[
                "-n",
                &namespace,
                "exec",
                "-i",
                &format!("statefulset/{release}-postgresql"),
                "-c",
                "postgresql",
                "--",
                "sh",
                "-c",
                script,
            ])
        } else {
            let db = answers.as_ref().and_then(|a| a.keycloak_database.as_ref()).ok_or_else(|| {
                Error::input(&part.name, "the answers name no keycloak_database to restore it into")
                    .with_hint("give --answers with the keycloak_database section of the site")
            })?;
            let pgpass = Path::new(super::STAGING).join("pgpass");
            super::create::write_pgpass(host, &pgpass, db)?;
            let mut argv = super::create::pg_env(host, &pgpass, db)?;
            argv.extend(
                [
                    "pg_restore",
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "-h",
                    &db.host.to_string(),
                    "-p",
                    &db.port.to_string(),
                ]
                .map(String::from),
            );
            argv.extend(["-U".to_string(), db.username.clone(), "-d".to_string(), db.name.clone()]);
            argv
        };
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        commands.push(argv.join(" "));
        let out = host.run_streaming(&argv, Some(r), None)?;
        let _ = host.remove_all(Path::new(super::STAGING));
        out.checked(&argv).map(|_| ()).map_err(|e| {
            e.within(format!("part {}", part.name))
                .with_hint("fix the cause and run the restore again: it resumes at this step")
        })
    })?;
    journal.commands.extend(commands);
    Ok(())
}

/// The buckets step (see the module docs); public for the tests against a real S3 server.
pub fn restore_buckets(
    host: &dyn Host,
    opts: &RestoreOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    backup: &VerifyReport,
    journal: &mut RestoreJournal,
) -> Result<()> {
    if backup.buckets.is_empty() {
        journal.notes.push("buckets: the backup holds none".into());
        return Ok(());
    }
    if !host.live() {
        journal.notes.push("buckets: not live (target root): MinIO runs in the cluster, no object was put back".into());
        return Ok(());
    }
    let answers = crate::site::answers::kept::load_kept(host)?.ok_or_else(|| {
        Error::input(state::KEPT_ANSWERS_PATH, "the site kept no answers")
            .with_hint("run the restore again with --answers; its install step keeps them")
    })?;
    let s3 = super::buckets::S3::connect(host, &answers.cluster.ingress_domain, answers.node.ip, &opts.s3)?;
    for b in &backup.buckets {
        if s3.ensure_bucket(&b.name)? {
            journal.notes.push(format!("buckets: made bucket {} (it was missing)", b.name));
        }
    }
    let fail_after: Option<u64> = std::env::var(FAIL_AFTER_OBJECTS_ENV).ok().and_then(|v| v.parse().ok());
    let (mut put, mut kept) = (0u64, 0u64);
    each_part(opts, identities, backup, &[PartKind::Object], &mut |part, r| {
        let o = part.object.as_ref().ok_or_else(|| {
            Error::corrupt(&part.name, "is a bucket object without its bucket and key in the manifest")
                .with_hint("the backup was made by another program; use another backup")
        })?;
        let sha256 = part.sha256.strip_prefix("sha256:").unwrap_or(&part.sha256);
        // Put back by an earlier run of this step (or any restore of the same bytes).
        let stored = s3.stored(&o.bucket, &o.key).map_err(|e| e.within(format!("part {}", part.name)))?;
        if stored.is_some_and(|(size, mark)| size == part.size && mark.as_deref() == Some(sha256)) {
            kept += 1;
            return Ok(());
        }
        if fail_after == Some(put) {
            return Err(Error::new(
                airlock_format::error::ErrorKind::Io,
                format!("part {}", part.name),
                format!("test fault ({FAIL_AFTER_OBJECTS_ENV}): stopped after {put} objects"),
            ));
        }
        s3.put(&o.bucket, &o.key, part.size, sha256, o.content_type.as_deref(), r)
            .map_err(|e| e.within(format!("part {}", part.name)))?;
        put += 1;
        Ok(())
    })?;
    journal.notes.push(format!(
        "buckets: {put} objects put back at {}, {kept} already there with the same size and SHA-256",
        s3.shown()
    ));
    Ok(())
}
