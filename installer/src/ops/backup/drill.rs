//! `airlock restore --drill`: proves on the running site that a backup restores,
//! changing nothing else there.
//!
//! The backup is verified whole first (as `airlock backup verify`). Then each database
//! dump is restored into a temporary database beside the live one
//! (`<part>_drill_<yyyymmddhhmmss>`), through the same command paths a restore uses (the
//! app's PostgreSQL through `kubectl exec -i`, Keycloak's external database from the
//! node); every table the dump holds data for must be there; the consistency checks
//! (SQL that must return no row) run against the app's copy; and each temporary
//! database is dropped whatever happened. The outcome goes to
//! `/var/lib/airlock/restore-drill.json` (0644, no secret), which `airlock report`
//! reads.

use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use airlock_format::report::{Event, Reporter};
use serde::{Deserialize, Serialize};

use super::restore::{each_part, RestoreOptions};
use super::verify::load_identities;
use super::{PartKind, VerifyReport};
use crate::host::{Host, Perms};
use crate::site::answers::keycloak_db::KeycloakDatabaseAnswers;
use crate::state::Inventory;

/// The record of the last drill.
pub const RECORD_PATH: &str = "/var/lib/airlock/restore-drill.json";

/// A consistency check: SQL run against the restored copy of the app's database that
/// must return no row (each row it returns is an inconsistency).
#[derive(Clone, Debug)]
pub struct ConsistencyCheck {
    /// Its name in the record (the file's name without `.sql`).
    pub name: String,
    pub sql: String,
}

impl ConsistencyCheck {
    /// Reads a check from an SQL file.
    pub fn load(path: &Path) -> Result<Self> {
        let sql = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, e).with_hint("name an SQL file whose query returns no row when consistent"))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "check".into());
        Ok(Self { name, sql })
    }
}

/// The vendor's checks the installed release carries: the `drill_checks` of its signed
/// manifest, read from the release's kept bundle (verified content, in the 0700 state
/// directory). None when no release is installed or it ships none.
pub fn release_checks(host: &dyn Host) -> Result<Vec<ConsistencyCheck>> {
    use crate::state::releases;
    let Some(id) = releases::pointer(host, "current")? else { return Ok(Vec::new()) };
    let Some(m) = releases::kept_manifest(host, &id)? else { return Ok(Vec::new()) };
    m.drill_checks
        .iter()
        .map(|entry| {
            let file = releases::release_dir(&id).join("bundle").join(entry);
            let hint = "install or upgrade to the release again: its bundle is kept on the site";
            let bytes = host.read_file(&file)?.ok_or_else(|| {
                Error::input(file.display().to_string(), "is missing from the installed release's bundle")
                    .with_hint(hint)
            })?;
            let sql = String::from_utf8(bytes).map_err(|_| {
                Error::corrupt(file.display().to_string(), "is not UTF-8 text, so not an SQL check").with_hint(hint)
            })?;
            let name = Path::new(entry).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(ConsistencyCheck { name, sql })
        })
        .collect()
}

/// What `airlock restore --drill` is asked.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub file: PathBuf,
    pub identity: PathBuf,
    pub checks: Vec<ConsistencyCheck>,
    pub now_unix: i64,
}

/// One database restored into a temporary copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillDatabase {
    /// The dump's part (`databases/app.dump`).
    pub part: String,
    /// The temporary database it was restored into (dropped since).
    pub temporary: String,
    pub ok: bool,
    /// Tables found in the copy, with their rows.
    pub tables: Vec<(String, u64)>,
    /// Tables the dump holds data for (its table of contents).
    pub dump_tables: usize,
    pub error: Option<String>,
    /// Whether the temporary database was dropped.
    pub dropped: bool,
}

/// One consistency check's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheck {
    pub name: String,
    pub ok: bool,
    /// Rows the query returned (inconsistencies).
    pub rows: usize,
    pub error: Option<String>,
}

/// `restore-drill.json`: when the last drill ran, of which backup, and how it went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// When the drill ran (RFC 3339).
    pub ran: String,
    /// The backup file's name.
    pub archive: String,
    /// When the backup was taken (empty when it could not be verified).
    pub backup_created: String,
    pub passed: bool,
    pub databases: Vec<DrillDatabase>,
    pub checks: Vec<DrillCheck>,
    /// The MinIO buckets the backup holds, each object's bytes verified against the
    /// manifest (the drill does not write them into the live MinIO: `airlock restore`
    /// does, on a new node).
    #[serde(default)]
    pub buckets: Vec<super::buckets::BucketEntry>,
    /// Why the drill failed before or beside the databases (verification, setup).
    pub error: Option<String>,
}

impl DrillRecord {
    /// What failed, in words: the parts and checks named.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self.error.iter().cloned().collect();
        for d in self.databases.iter().filter(|d| !d.ok) {
            out.push(format!("{}: {}", d.part, d.error.as_deref().unwrap_or("failed")));
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            out.push(match &c.error {
                Some(e) => format!("consistency check {}: {e}", c.name),
                None => format!("consistency check {}: returned {} row(s), expected none", c.name, c.rows),
            });
        }
        out
    }
}

/// The last drill's record on the site, if any.
pub fn load_record(host: &dyn Host) -> Result<Option<DrillRecord>> {
    let Some(bytes) = host.read_file(Path::new(RECORD_PATH))? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::corrupt(RECORD_PATH, format!("is not a restore drill record: {e}"))
            .with_hint("run `airlock restore --drill FILE --identity KEYFILE` again; it rewrites the record")
    })
}

fn save_record(host: &dyn Host, r: &DrillRecord) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(r).expect("the record serialises");
    json.push(b'\n');
    host.write_file(Path::new(RECORD_PATH), &mut json.as_slice(), Perms::mode(0o644)).map(|_| ())
}

/// Runs the drill (see the module docs) on the live site `host`; `verifier` runs
/// `pg_restore --list` during the verification. The record is written whatever the
/// outcome; an error only when it could not be.
pub fn drill(
    host: &dyn Host,
    verifier: &dyn Host,
    opts: &DrillOptions,
    reporter: &dyn Reporter,
) -> Result<DrillRecord> {
    if !host.live() {
        return Err(Error::input("--root", "a restore drill runs on the live site: nothing runs under a target root")
            .with_hint("run it on the site's first server without --root"));
    }
    // The release's own checks first, then those given with --check.
    let mut checks = release_checks(host)?;
    checks.extend(opts.checks.iter().cloned());
    let opts = &DrillOptions { checks, ..opts.clone() };
    // Not beside an upgrade or a restore of the same site: they change the databases.
    let _lock = crate::state::lock_site(host)?;
    let now = u64::try_from(opts.now_unix).unwrap_or(0);
    let ran = airlock_format::manifest::rfc3339(now);
    let archive = opts.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut record = DrillRecord { ran: ran.clone(), archive, ..Default::default() };
    let verify_opts =
        super::VerifyOptions { file: opts.file.clone(), identity: opts.identity.clone(), now_unix: opts.now_unix };
    reporter.event(Event::Phase { name: "drill: verifying the backup", total: None });
    match super::verify(verifier, &verify_opts, reporter) {
        Ok(backup) => {
            record.backup_created = backup.created.clone();
            record.buckets = backup.buckets.clone();
            if let Err(e) = restore_copies(host, opts, &backup, &ran, &mut record, reporter) {
                record.error = Some(e.to_string());
            }
        }
        Err(e) => record.error = Some(format!("verification: {e}")),
    }
    record.passed = record.error.is_none()
        && record.databases.iter().all(|d| d.ok && d.dropped)
        && record.checks.iter().all(|c| c.ok);
    save_record(host, &record)?;
    Ok(record)
}

/// How a database of the site is reached: the app's PostgreSQL in its pod, or the
/// external database Keycloak uses, from this node.
enum Target<'a> {
    App { kube: crate::host::Kube, namespace: String, statefulset: String },
    External { env: Vec<String>, db: &'a KeycloakDatabaseAnswers },
}

impl Target<'_> {
    /// The command line running `tool args` connected to database `db` (the live one
    /// when `None`).
    fn argv(&self, tool: &str, args: &[&str], db: Option<&str>) -> Vec<String> {
        match self {
            Target::App { kube, namespace, statefulset } => {
                // Names of our own making only (no quoting needed): the SQL goes on stdin.
                let db = db.map(str::to_string).unwrap_or_else(|| "\"$POSTGRES_DB\"".into());
                let script = format!("{tool} -U \"$POSTGRES_USER\" {} -d {db}", args.join(" "));
                kube.clone().with_timeout(std::time::Duration::ZERO).argv(&[
                    "-n",
                    namespace,
                    "exec",
                    "-i",
                    &format!("statefulset/{statefulset}"),
                    "-c",
                    "postgresql",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ])
            }
            Target::External { env, db: kc } => {
                let mut argv = env.clone();
                argv.push(tool.into());
                argv.extend(args.iter().map(|a| a.to_string()));
                argv.extend(
                    ["-h", &kc.host.to_string(), "-p", &kc.port.to_string(), "-U", &kc.username].map(String::from),
                );
                argv.extend(["-d".to_string(), db.unwrap_or(&kc.name).to_string()]);
                argv
            }
        }
    }

    /// Runs SQL through psql (on stdin, never on a command line); its unaligned output.
    fn psql(&self, host: &dyn Host, sql: &str, db: Option<&str>) -> Result<String> {
        let argv = self.argv("psql", &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"], db);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = host.run_streaming(&argv, Some(&mut sql.as_bytes()), None)?;
        if !out.success() {
            return Err(Error::input(db.unwrap_or("the live database"), out.stderr.trim().to_string()));
        }
        Ok(out.stdout)
    }
}

/// Every user table of the database with its rows, counted in one query.
const TABLES_SQL: &str = "SELECT format('%I.%I', schemaname, tablename) || '|' || \
     (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text \
     FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;\n";

fn restore_copies(
    host: &dyn Host,
    opts: &DrillOptions,
    backup: &VerifyReport,
    ran: &str,
    record: &mut DrillRecord,
    reporter: &dyn Reporter,
) -> Result<()> {
    let stamp: String = ran.chars().filter(char::is_ascii_digit).collect();
    let identities = load_identities(&opts.identity)?;
    let inv = Inventory::load(host)?;
    let answers = crate::site::answers::kept::load_kept(host)?;
    let pgpass = Path::new(super::STAGING).join("pgpass");
    let ropts = RestoreOptions {
        file: opts.file.clone(),
        identity: opts.identity.clone(),
        install: Default::default(),
        now_unix: opts.now_unix,
        s3: Default::default(),
    };
    let mut app_copy: Option<(String, bool)> = None;
    let result = each_part(&ropts, &identities, backup, &[PartKind::Database], &mut |part, r| {
        let stem = part.name.trim_start_matches("databases/").trim_end_matches(".dump").replace(['-', '.'], "_");
        let temporary = format!("{stem}_drill_{stamp}");
        reporter.event(Event::Phase { name: &format!("drill: {} into {temporary}", part.name), total: None });
        let mut d = DrillDatabase {
            part: part.name.clone(),
            temporary: temporary.clone(),
            dump_tables: part.tables.unwrap_or(0),
            ..Default::default()
        };
        let target = if part.name == "databases/app.dump" {
            let (namespace, release) = part
                .source
                .split_once("/statefulset/")
                .ok_or_else(|| Error::corrupt(&part.name, format!("names no statefulset: {}", part.source)))?;
            let kube = inv.kube().ok_or_else(|| {
                Error::input(&part.name, "this node has no kubectl (an agent)")
                    .with_hint("run the drill on the first server")
            })?;
            Target::App { kube, namespace: namespace.to_string(), statefulset: release.to_string() }
        } else {
            let db = answers.as_ref().and_then(|a| a.keycloak_database.as_ref()).ok_or_else(|| {
                Error::input(&part.name, "the site's answers name no keycloak_database to restore a copy into")
            })?;
            // Any database of the server: the temporary copy too, not only the live one.
            let any = KeycloakDatabaseAnswers { name: "*".into(), ..db.clone() };
            super::create::write_pgpass(host, &pgpass, &any)?;
            Target::External { env: super::create::pg_env(host, &pgpass, db)?, db }
        };
        let outcome = restore_one(host, &target, &temporary, r, &mut d);
        if outcome.is_ok() && part.name == "databases/app.dump" && !opts.checks.is_empty() {
            for c in &opts.checks {
                record.checks.push(match target.psql(host, &c.sql, Some(&temporary)) {
                    Ok(out) => {
                        let rows = out.lines().filter(|l| !l.trim().is_empty()).count();
                        DrillCheck { name: c.name.clone(), ok: rows == 0, rows, error: None }
                    }
                    Err(e) => DrillCheck { name: c.name.clone(), ok: false, rows: 0, error: Some(e.to_string()) },
                });
            }
        }
        // Dropped whatever happened: the drill leaves nothing behind on the site.
        let drop = format!("DROP DATABASE IF EXISTS {temporary};\n");
        match target.psql(host, &drop, None) {
            Ok(_) => d.dropped = true,
            Err(e) => {
                d.dropped = false;
                let msg = format!("the temporary database {temporary} could not be dropped: {e}");
                d.error = Some(d.error.take().map(|x| format!("{x}; {msg}")).unwrap_or(msg));
            }
        }
        if let Err(e) = outcome {
            d.error = Some(d.error.take().map(|x| format!("{e}; {x}")).unwrap_or_else(|| e.to_string()));
        }
        d.ok = d.error.is_none();
        if part.name == "databases/app.dump" {
            app_copy = Some((temporary, d.ok));
        }
        record.databases.push(d);
        Ok(())
    });
    let _ = host.remove_all(Path::new(super::STAGING));
    result?;
    if !opts.checks.is_empty() && app_copy.is_none() {
        for c in &opts.checks {
            record.checks.push(DrillCheck {
                name: c.name.clone(),
                ok: false,
                rows: 0,
                error: Some("the backup holds no app database to run it against".into()),
            });
        }
    }
    Ok(())
}

/// Creates `temporary`, restores the dump streaming through `r` into it, and compares
/// its tables with the dump's table of contents.
fn restore_one(
    host: &dyn Host,
    target: &Target<'_>,
    temporary: &str,
    r: &mut dyn std::io::Read,
    d: &mut DrillDatabase,
) -> Result<()> {
    target
        .psql(host, &format!("CREATE DATABASE {temporary};\n"), None)
        .map_err(|e| e.with_hint("the drill's database user needs CREATEDB (the live database is not touched)"))?;
    let argv = target.argv("pg_restore", &["--no-owner", "--exit-on-error"], Some(temporary));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = host.run_streaming(&argv, Some(r), None)?;
    if !out.success() {
        return Err(Error::corrupt(format!("into {temporary}"), format!("pg_restore failed: {}", out.stderr.trim())));
    }
    let listed = target.psql(host, TABLES_SQL, Some(temporary))?;
    d.tables = listed
        .lines()
        .filter_map(|l| l.rsplit_once('|'))
        .map(|(t, n)| (t.to_string(), n.trim().parse().unwrap_or(0)))
        .collect();
    if d.tables.len() < d.dump_tables {
        return Err(Error::corrupt(
            format!("into {temporary}"),
            format!("{} table(s) restored, the dump holds data for {}", d.tables.len(), d.dump_tables),
        ));
    }
    Ok(())
}
