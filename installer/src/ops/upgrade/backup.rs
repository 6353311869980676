//! The backup taken before an upgrade changes anything.
//!
//! Under `/var/lib/airlock/backups/<timestamp>-<from>-to-<to>/` (0700):
//! - `datastore/`: live, an etcd snapshot (`k3s|rke2 etcd-snapshot save`) when the
//!   cluster runs embedded etcd, else a copy of the SQLite datastore directory taken
//!   with the unit stopped (a copy of a live SQLite file may be torn);
//! - `app-db.sql` (0600): live, `pg_dump` of the app's PostgreSQL through `kubectl exec`;
//! - `files/`: `/etc/rancher`, the auto-deploy manifests, `/etc/airlock/pki` and the
//!   installer's state (inventory, release, report, kept answers, secrets), with their
//!   modes (secrets stay 0600);
//! - `backup.json`: what was saved, the commands run, and what was skipped and why.
//!
//! Every command goes through the host's `run`, so the recording double records them;
//! under a target root nothing runs and each command is skipped with a note.

use crate::state;
use std::path::{Path, PathBuf};

use airlock_format::error::Result;
use airlock_format::manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::host::{FileKind, Host, Perms};
use crate::state::Inventory;

/// What `backup.json` records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Target path of the backup directory.
    pub dir: PathBuf,
    /// `etcd-snapshot`, `sqlite-copy` or `none`.
    pub datastore: String,
    /// The directory the datastore came from (for the restore command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_source: Option<PathBuf>,
    /// Target paths copied into `files/`.
    pub files: Vec<PathBuf>,
    /// Each command run, as argv joined by spaces (no secrets: names and paths only).
    pub commands: Vec<String>,
    /// What was not backed up, and why.
    pub skipped: Vec<String>,
}

/// Where the installer's state and site config live, besides the datastore.
fn trees(inv: &Inventory) -> Vec<PathBuf> {
    let mut t = vec![PathBuf::from("/etc/rancher")];
    if let Some(data) = inv.runtime_dirs.first() {
        t.push(data.join("server/manifests"));
    }
    t.push(PathBuf::from(crate::state::PKI_DIR));
    // The keys the site trusts: not rolled back (a revocation must outlive a failed
    // upgrade), but worth having when restoring by hand.
    t.push(PathBuf::from(crate::state::KEY_DIR));
    for f in crate::state::BACKED_UP_RECORDS {
        t.push(PathBuf::from(f));
    }
    t
}

/// The backup directory's name: `<timestamp>-<from>-to-<to>`.
pub fn backup_dir(from_version: &str, to: &Manifest) -> PathBuf {
    let stamp: String = crate::state::now_rfc3339().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    Path::new(state::BACKUPS_DIR).join(format!("{stamp}-{from_version}-to-{}", to.version))
}

/// Takes the backup into `dir` (see the module docs).
pub fn take(host: &dyn Host, inv: &Inventory, app_db: Option<(&str, &str)>, dir: &Path) -> Result<BackupRecord> {
    host.create_dir(Path::new(state::BACKUPS_DIR), 0o700)?;
    host.create_dir(dir, 0o700)?;
    let mut rec = BackupRecord { dir: dir.to_path_buf(), datastore: "none".into(), ..Default::default() };
    datastore(host, inv, dir, &mut rec)?;
    app_database(host, inv, app_db, dir, &mut rec)?;
    for tree in trees(inv) {
        copy_tree(host, &tree, Path::new("/"), &dir.join("files"), &mut rec)?;
    }
    let mut json = serde_json::to_vec_pretty(&rec).expect("a backup record serialises");
    json.push(b'\n');
    host.write_file(&dir.join("backup.json"), &mut json.as_slice(), Perms::mode(0o600))?;
    Ok(rec)
}

fn run(host: &dyn Host, argv: &[&str], rec: &mut BackupRecord) -> Result<crate::host::CommandOutput> {
    rec.commands.push(argv.join(" "));
    host.run(argv)?
        .checked(argv)
        .map_err(|e| e.with_hint("the upgrade changed nothing yet; fix the cause and run it again"))
}

/// Which datastore a server keeps: what the upgrade's backup and `airlock backup`
/// take, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Datastore {
    /// Embedded etcd (`<db>/etcd` exists): saved with `<distribution> etcd-snapshot save`.
    Etcd { db: PathBuf },
    /// The SQLite datastore in `<db>`: copied with the unit stopped (a copy of a live
    /// SQLite file may be torn).
    Sqlite { db: PathBuf },
    /// Nothing to save, and why.
    None(String),
}

/// The datastore of the node `inv` describes. Under a target root a missing `<db>` is
/// still SQLite (nothing ran there yet to make it).
pub(crate) fn datastore_of(host: &dyn Host, inv: &Inventory) -> Result<Datastore> {
    let Some(data) = inv.runtime_dirs.first() else {
        return Ok(Datastore::None("the inventory names no data directory".into()));
    };
    let db = data.join("server/db");
    if host.metadata(&db)?.is_none() && host.live() {
        return Ok(Datastore::None(format!("{} does not exist (an agent keeps no datastore)", db.display())));
    }
    if host.metadata(&db.join("etcd"))?.is_some_and(|m| m.kind == FileKind::Dir) {
        Ok(Datastore::Etcd { db })
    } else {
        Ok(Datastore::Sqlite { db })
    }
}

/// The command that saves an etcd snapshot named `name` into the directory `dir`.
pub(crate) fn etcd_snapshot_argv<'a>(distribution: &'a str, name: &'a str, dir: &'a str) -> [&'a str; 7] {
    [distribution, "etcd-snapshot", "save", "--name", name, "--dir", dir]
}

/// The `kubectl exec` into the app chart's PostgreSQL that runs `pg_dump` with
/// `pg_dump_args`. The container's own environment names the user and database, so
/// the dump needs no password and none appears in the command. The dump streams for
/// as long as the database is large: no request timeout (0) cuts it short.
pub(crate) fn app_dump_argv(
    kube: crate::host::Kube,
    namespace: &str,
    release: &str,
    pg_dump_args: &str,
) -> Vec<String> {
    let target = format!("statefulset/{release}-postgresql");
    let script = format!("pg_dump {pg_dump_args} -U \"$POSTGRES_USER\" \"$POSTGRES_DB\"");
    kube.with_timeout(std::time::Duration::ZERO).argv(&[
        "-n",
        namespace,
        "exec",
        &target,
        "-c",
        "postgresql",
        "--",
        "sh",
        "-c",
        &script,
    ])
}

fn datastore(host: &dyn Host, inv: &Inventory, dir: &Path, rec: &mut BackupRecord) -> Result<()> {
    let (db, etcd) = match datastore_of(host, inv)? {
        Datastore::None(why) => {
            rec.skipped.push(format!("datastore: {why}"));
            return Ok(());
        }
        Datastore::Etcd { db } => (db, true),
        Datastore::Sqlite { db } => (db, false),
    };
    let out = dir.join("datastore");
    if !host.live() {
        rec.skipped.push(format!(
            "datastore: not live (target root), so no `{} etcd-snapshot save` and no copy of {} with the unit stopped",
            inv.distribution,
            db.display()
        ));
        return Ok(());
    }
    host.create_dir(&out, 0o700)?;
    rec.datastore_source = Some(db.clone());
    if etcd {
        let out_s = out.to_string_lossy();
        run(host, &etcd_snapshot_argv(&inv.distribution, "airlock-upgrade", &out_s), rec)?;
        rec.datastore = "etcd-snapshot".into();
    } else {
        run(host, &["systemctl", "stop", &inv.unit], rec)?;
        let copied = copy_tree(host, &db, Path::new("/"), &out, rec);
        // Started again whatever the copy did: a failed backup must not leave the site down.
        let started = run(host, &["systemctl", "start", &inv.unit], rec);
        copied?;
        started?;
        rec.datastore = "sqlite-copy".into();
    }
    Ok(())
}

fn app_database(
    host: &dyn Host,
    inv: &Inventory,
    app_db: Option<(&str, &str)>,
    dir: &Path,
    rec: &mut BackupRecord,
) -> Result<()> {
    let Some((namespace, release)) = app_db else {
        rec.skipped.push("app database: this bundle installs no app chart".into());
        return Ok(());
    };
    let Some(kube) = inv.kube() else {
        rec.skipped.push("app database: no kubectl on this node (an agent)".into());
        return Ok(());
    };
    let argv = app_dump_argv(kube, namespace, release, "--clean --if-exists");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    if !host.live() {
        rec.skipped.push(format!("app database: not live (target root), so no `{}`", argv.join(" ")));
        return Ok(());
    }
    let out = run(host, &argv, rec)?;
    host.write_file(&dir.join("app-db.sql"), &mut out.stdout.as_bytes(), Perms::secret())?;
    Ok(())
}

/// Copies the tree at target path `src` below `into`, each path as it is below `strip`,
/// through the host, without following symlinks in it (they are copied as links);
/// parents before children, siblings by name.
fn copy_tree(host: &dyn Host, src: &Path, strip: &Path, into: &Path, rec: &mut BackupRecord) -> Result<()> {
    let Some(meta) = host.metadata(src)? else { return Ok(()) };
    let rel = src.strip_prefix("/").unwrap_or(src);
    let dest = into.join(src.strip_prefix(strip).unwrap_or(rel));
    match meta.kind {
        FileKind::Dir => {
            host.create_dir(&dest, meta.mode | 0o700)?;
            for e in host.list_dir(src)?.unwrap_or_default() {
                copy_tree(host, &src.join(&e.name), strip, into, rec)?;
            }
        }
        FileKind::Symlink => {
            let t = host.read_link(src)?.expect("a link");
            host.symlink(&dest, &t)?;
        }
        FileKind::File => {
            let secret = meta.mode & 0o077 == 0;
            let perms = if secret { Perms::secret() } else { Perms::mode(meta.mode) };
            let mut r = host.open_file(src)?.expect("looked at just now");
            host.write_file(&dest, &mut r, perms)?;
            rec.files.push(src.to_path_buf());
        }
        FileKind::Other => rec.skipped.push(format!("{}: not a file, link or directory", src.display())),
    }
    Ok(())
}

/// The command that puts the backed-up datastore back (printed when the operator did
/// not consent with `--restore-datastore`).
pub fn restore_datastore_command(rec: &BackupRecord, inv: &Inventory) -> Option<String> {
    let src = rec.datastore_source.as_ref()?;
    let out = rec.dir.join("datastore");
    match rec.datastore.as_str() {
        "etcd-snapshot" => Some(format!(
            "systemctl stop {unit} && {d} server --cluster-reset --cluster-reset-restore-path=$(ls {out}/airlock-upgrade* | head -n1) && systemctl start {unit}",
            unit = inv.unit,
            d = inv.distribution,
            out = out.display()
        )),
        "sqlite-copy" => Some(format!(
            "systemctl stop {unit} && rm -rf {src} && cp -a {out}{src} {src} && systemctl start {unit}",
            unit = inv.unit,
            src = src.display(),
            out = out.display()
        )),
        _ => None,
    }
}

/// Restores the datastore from the backup (only with the operator's consent).
pub fn restore_datastore(host: &dyn Host, rec: &BackupRecord, inv: &Inventory) -> Result<Vec<String>> {
    let mut done = BackupRecord::default();
    let Some(src) = rec.datastore_source.as_ref() else { return Ok(Vec::new()) };
    let out = rec.dir.join("datastore");
    match rec.datastore.as_str() {
        "etcd-snapshot" => {
            let snapshot = host
                .list_dir(&out)
                .ok()
                .flatten()
                .and_then(|entries| entries.into_iter().map(|e| e.name).find(|n| n.starts_with("airlock-upgrade")))
                .map(|n| out.join(n))
                .unwrap_or_else(|| out.join("airlock-upgrade"));
            let restore = format!("--cluster-reset-restore-path={}", snapshot.display());
            run(host, &["systemctl", "stop", &inv.unit], &mut done)?;
            run(host, &[&inv.distribution, "server", "--cluster-reset", &restore], &mut done)?;
            run(host, &["systemctl", "start", &inv.unit], &mut done)?;
        }
        "sqlite-copy" => {
            run(host, &["systemctl", "stop", &inv.unit], &mut done)?;
            host.remove_all(src)?;
            let mut ignored = BackupRecord::default();
            copy_tree(host, &out.join(src.strip_prefix("/").unwrap_or(src)), &out, Path::new("/"), &mut ignored)
                .map_err(|e| e.within("restoring the datastore"))?;
            run(host, &["systemctl", "start", &inv.unit], &mut done)?;
        }
        _ => {}
    }
    Ok(done.commands)
}
