//! `airlock backup schedule`, the record of the last backup, and what `airlock status`
//! and `airlock report` say about backups.
//!
//! The schedule is a systemd service and timer (`airlock-backup.service|.timer`) written
//! and enabled through the host, so a target root gets them as files and the running
//! system through `systemctl`. Every `airlock backup create`, scheduled or not, records
//! its outcome in [`LAST_PATH`]; `status` compares the last good one's age with the
//! recovery point objective (`backup.rpo` in the answers, else the schedule's interval)
//! and calls a missed backup a problem (exit 11).

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::host::{Host, Perms, SYSTEMD_SYSTEM_DIR};

/// The schedule (`airlock backup schedule`).
pub const SCHEDULE_PATH: &str = "/var/lib/airlock/backup-schedule.json";
/// The outcome of the last `airlock backup create`, and the last good one.
pub const LAST_PATH: &str = "/var/lib/airlock/backup-last.json";
/// The units.
pub const SERVICE: &str = "airlock-backup.service";
pub const TIMER: &str = "airlock-backup.timer";
/// Where the service finds airlock (`packaging/install-docs.sh`'s default prefix).
pub const DEFAULT_AIRLOCK_PATH: &str = "/usr/local/bin/airlock";

/// What `airlock backup schedule` keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    pub every_secs: u64,
    /// How many backups to keep in `to` (the oldest beyond go).
    pub keep: usize,
    /// Where the backups go (on the node).
    pub to: PathBuf,
}

/// One run of `airlock backup create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    /// When it ended (RFC 3339).
    pub finished: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why it failed (the error's first line; no secret is ever in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`LAST_PATH`]: the last run and the last good one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub last: Option<BackupRun>,
    pub last_ok: Option<BackupRun>,
}

/// Parses `30m`, `24h`, `7d` (or plain seconds).
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not an interval (e.g. 30m, 24h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}` is not an interval: the unit is s, m, h or d")),
    };
    if secs < 60 {
        return Err(format!("`{s}` is shorter than a minute"));
    }
    Ok(Duration::from_secs(secs))
}

fn read_json<T: serde::de::DeserializeOwned>(host: &dyn Host, path: &str) -> Result<Option<T>> {
    let Some(bytes) = host.read_file(Path::new(path))? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::corrupt(path, format!("cannot be read: {e}"))
            .with_hint("remove it; the next backup or schedule writes it again")
    })
}

fn write_json<T: Serialize>(host: &dyn Host, path: &str, v: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(v).expect("records serialise");
    json.push(b'\n');
    host.write_file(Path::new(path), &mut json.as_slice(), Perms::mode(0o644)).map(|_| ())
}

/// Records the outcome of a `backup create` run (best effort for a failed run: the
/// failure itself is what the operator sees).
pub fn record_run(host: &dyn Host, run: BackupRun) -> Result<()> {
    let mut rec: BackupRecord = read_json(host, LAST_PATH).ok().flatten().unwrap_or_default();
    if run.ok {
        rec.last_ok = Some(run.clone());
    }
    rec.last = Some(run);
    write_json(host, LAST_PATH, &rec)
}

/// The schedule and the last runs, as kept.
pub fn load(host: &dyn Host) -> Result<(Option<BackupSchedule>, BackupRecord)> {
    Ok((read_json(host, SCHEDULE_PATH)?, read_json(host, LAST_PATH)?.unwrap_or_default()))
}

/// What `airlock backup schedule` is asked.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    pub every: Duration,
    pub keep: usize,
    pub to: PathBuf,
    pub airlock: PathBuf,
}

/// What it wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleReport {
    pub schedule: BackupSchedule,
    pub units: Vec<PathBuf>,
}

/// The service: one `backup create` into `to`, keeping `keep`.
pub fn service_unit(opts: &ScheduleOptions) -> String {
    format!(
        "[Unit]\n\
         Description=Airlock backup of this site (airlock backup create)\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={} --quiet backup create --output-file {} --keep {}\n\
         # The archive holds the site's keys, encrypted; nothing else may read what it writes.\n\
         UMask=0077\n\
         Nice=10\n\
         IOSchedulingClass=idle\n",
        opts.airlock.display(),
        opts.to.display(),
        opts.keep
    )
}

/// The timer: every `every`, the first one `every` after boot; a run missed while the
/// node was off is not made up at boot (the status shows it as missed instead).
pub fn timer_unit(opts: &ScheduleOptions) -> String {
    format!(
        "[Unit]\n\
         Description=Airlock backup every {}s\n\
         \n\
         [Timer]\n\
         OnBootSec={}s\n\
         OnUnitActiveSec={}s\n\
         RandomizedDelaySec=300\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        opts.every.as_secs(),
        opts.every.as_secs(),
        opts.every.as_secs()
    )
}

/// Writes and enables the units and keeps the schedule.
pub fn schedule(host: &dyn Host, opts: &ScheduleOptions) -> Result<ScheduleReport> {
    if !opts.to.is_absolute() {
        return Err(Error::input(opts.to.display().to_string(), "is not an absolute path")
            .with_hint("give --to an absolute directory on the node, e.g. /srv/backups"));
    }
    if opts.keep == 0 {
        return Err(Error::input("--keep", "0 would delete every backup").with_hint("keep at least 1"));
    }
    let _lock = crate::state::lock_site(host)?;
    let dir = Path::new(SYSTEMD_SYSTEM_DIR);
    let service = dir.join(SERVICE);
    let timer = dir.join(TIMER);
    host.write_file(&service, &mut service_unit(opts).as_bytes(), Perms::mode(0o644))?;
    host.write_file(&timer, &mut timer_unit(opts).as_bytes(), Perms::mode(0o644))?;
    host.create_dir(&opts.to, 0o700)?;
    if host.live() {
        host.run(&["systemctl", "daemon-reload"])?.checked(&["systemctl", "daemon-reload"])?;
    }
    host.enable_unit(TIMER)?;
    if host.live() {
        host.run(&["systemctl", "start", TIMER])?.checked(&["systemctl", "start", TIMER])?;
    }
    let schedule = BackupSchedule { every_secs: opts.every.as_secs(), keep: opts.keep, to: opts.to.clone() };
    write_json(host, SCHEDULE_PATH, &schedule)?;
    Ok(ScheduleReport { schedule, units: vec![service, timer] })
}

/// What `status` shows about backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<BackupSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BackupRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<BackupRun>,
    /// The last good backup's age, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
    /// The recovery point objective, in seconds (answers' `backup.rpo`, else the
    /// schedule's interval); `None`: neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_secs: Option<u64>,
}

impl BackupStatus {
    /// The backup's state for `status`; `problem` when a backup was missed or failed.
    pub fn read(host: &dyn Host, rpo: Option<Duration>, now_unix: i64) -> Result<(Option<Self>, Option<String>)> {
        let (schedule, rec) = load(host)?;
        if schedule.is_none() && rec.last.is_none() && rpo.is_none() {
            return Ok((None, None));
        }
        let rpo_secs = rpo.map(|d| d.as_secs()).or(schedule.as_ref().map(|s| s.every_secs));
        let now = u64::try_from(now_unix).unwrap_or(0);
        let age_secs = rec.last_ok.as_ref().and_then(|r| super::unix_of(&r.finished)).map(|t| now.saturating_sub(t));
        let problem = match (rpo_secs, age_secs, &rec.last) {
            (Some(_), _, Some(last)) if !last.ok => Some(format!(
                "the last backup failed ({}): {}",
                last.finished,
                last.error.as_deref().unwrap_or("no cause recorded")
            )),
            (Some(rpo), None, _) => Some(format!("no backup was taken yet (recovery point objective {})", human(rpo))),
            (Some(rpo), Some(age), _) if age > rpo => Some(format!(
                "the last backup is {} old, more than the recovery point objective of {}: a backup was missed",
                human(age),
                human(rpo)
            )),
            _ => None,
        };
        Ok((Some(Self { schedule, last: rec.last, last_ok: rec.last_ok, age_secs, rpo_secs }), problem))
    }
}

/// The readiness report's evidence for "backup/restore tested": the last backup and the
/// last good one, from what `status` read.
pub fn evidence(st: &crate::ops::status::StatusReport) -> Vec<String> {
    let Some(b) = &st.backup else { return Vec::new() };
    let mut ev = Vec::new();
    if let Some(ok) = &b.last_ok {
        let file = ok.file.as_ref().map(|f| format!(": {}", f.display())).unwrap_or_default();
        ev.push(format!("last good backup (airlock backup create) {}{file}", ok.finished));
    }
    if let Some(last) = b.last.as_ref().filter(|l| !l.ok) {
        ev.push(format!("the last backup failed {}: {}", last.finished, last.error.as_deref().unwrap_or("")));
    }
    if let Some(s) = &b.schedule {
        ev.push(format!("scheduled every {} into {}, {} kept", human(s.every_secs), s.to.display(), s.keep));
    }
    ev
}

/// `90000` -> `25h`, `7200` -> `2h`, `300` -> `5m`.
pub fn human(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}m", secs / 60)
    }
}

/// Removes the oldest `*.airlock-backup` files in the directory `dir` (a path on the
/// machine running airlock, as `-o` names it) beyond the newest `keep`, by modification
/// time. Returns what was removed.
// The directory is the operator's `-o` (or the one the host resolved), not a target
// path: as the archive is written there, the retention works there.
#[allow(clippy::disallowed_methods)]
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let mut backups: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(super::FILE_SUFFIX))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (_, p) in backups.into_iter().take(excess) {
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_intervals_read_as_operators_write_them() {
        assert_eq!(parse_interval("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_interval("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_interval("5s").is_err());
        assert!(parse_interval("1w").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn backup_missed_beyond_the_rpo_is_a_status_problem() {
        let host = crate::host::RecordingHost::new(false).unwrap();
        let at = |t: u64| BackupRun {
            finished: airlock_format::manifest::rfc3339(t),
            ok: true,
            file: None,
            size: None,
            error: None,
        };
        let day = Duration::from_secs(86_400);
        assert_eq!(BackupStatus::read(&host, None, 1_000_000).unwrap().0.map(|s| s.rpo_secs), None);
        let (_, p) = BackupStatus::read(&host, Some(day), 1_000_000).unwrap();
        assert!(p.unwrap().contains("no backup was taken yet"));
        record_run(&host, at(1_000_000)).unwrap();
        let (s, p) = BackupStatus::read(&host, Some(day), 1_000_000 + 3600).unwrap();
        assert_eq!((s.unwrap().age_secs, p), (Some(3600), None));
        let (_, p) = BackupStatus::read(&host, Some(day), 1_000_000 + 90_000).unwrap();
        assert!(p.unwrap().contains("25h old, more than the recovery point objective of 24h"));
        record_run(&host, BackupRun { ok: false, error: Some("disk full".into()), ..at(1_000_000 + 100) }).unwrap();
        let (s, p) = BackupStatus::read(&host, Some(day), 1_000_000 + 200).unwrap();
        assert!(p.unwrap().contains("the last backup failed"), "a failure is a problem even within the RPO");
        assert!(s.unwrap().last_ok.is_some(), "the last good one is kept");
    }
}
