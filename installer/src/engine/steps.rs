//! Generic steps for what a [`Layout`] lays down: directories, files, links, users
//! and unit enables.
//!
//! Each step remembers, for this run only, what it found before changing anything, so
//! `rollback` can put it back: a file it replaced is copied to the run's backup
//! directory first and restored byte for byte; a path that did not exist is removed
//! again, with the parent directories this run created for it. Users are not removed
//! on rollback: a user may already own files or processes, and a left-over system user
//! is harmless (the next run finds it satisfied).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use airlock_format::error::{Error, Result};

use super::{RunContext, Step, StepState};
use crate::engine::layout::{
    FileSource, Layout, PlannedCommand, PlannedDir, PlannedFile, PlannedLink, PlannedUser, StepGroup,
};
use crate::host::{FileKind, Host, Perms};

/// The steps for one component's layout, in the order they must run: users (files
/// may belong to them), directories, files, links (to files), then units (their files
/// must exist). `staging` is the verified staging directory staged files come from.
pub fn layout_steps(component: &str, layout: &Layout, staging: &Path) -> Vec<Box<dyn Step>> {
    let mut steps: Vec<Box<dyn Step>> = Vec::new();
    for user in &layout.users {
        steps.push(Box::new(UserStep { id: format!("{component}/user/{}", user.name), user: user.clone() }));
    }
    for dir in &layout.dirs {
        steps.push(Box::new(DirStep { id: id(component, "dir", &dir.path), dir: dir.clone(), undo: Mutex::default() }));
    }
    for file in &layout.files {
        steps.push(Box::new(FileStep {
            id: id(component, "file", &file.path),
            file: file.clone(),
            staging: staging.to_path_buf(),
            backup_dir: Mutex::default(),
            undo: Mutex::default(),
        }));
    }
    for link in &layout.links {
        steps.push(Box::new(LinkStep {
            id: id(component, "link", &link.link),
            link: link.clone(),
            undo: Mutex::default(),
        }));
    }
    for command in &layout.commands {
        steps.push(Box::new(CommandStep { id: format!("{component}/run/{}", command.name), command: command.clone() }));
    }
    for unit in &layout.units {
        steps.push(Box::new(UnitStep {
            id: format!("{component}/unit/{unit}"),
            unit: unit.clone(),
            enabled_here: Mutex::default(),
        }));
    }
    steps
}

/// `k3s/file/etc/rancher/k3s/config.yaml`: the path is unique in a plan, so is the id.
fn id(component: &str, kind: &str, path: &Path) -> String {
    let p = path.display().to_string();
    if p.starts_with('/') {
        format!("{component}/{kind}{p}")
    } else {
        format!("{component}/{kind}/{p}")
    }
}

/// A poisoned lock only means another step panicked; the data is still what it was.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ancestors of `path` that do not exist yet, deepest first: what this run will
/// have created, and may remove again on rollback.
fn missing_parents(host: &dyn Host, path: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
        if host.metadata(d)?.is_some() {
            break;
        }
        out.push(d.to_path_buf());
        dir = d.parent();
    }
    Ok(out)
}

/// Removes directories this run created, deepest first, stopping at the first that
/// is not empty (something else lives there now).
fn remove_created_dirs(host: &dyn Host, dirs: &[PathBuf]) -> Result<bool> {
    for d in dirs {
        if !host.remove_dir(d)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn kind_in_the_way(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "a regular file",
        FileKind::Dir => "a directory",
        FileKind::Symlink => "a symlink",
        FileKind::Other => "a special file (socket, device or fifo)",
    }
}

fn blocked(reason: String, path: &Path) -> StepState {
    StepState::Blocked { reason, hint: format!("move {} aside (or fix the layout), then run again", path.display()) }
}

// --- files ---------------------------------------------------------------------------

struct FileStep {
    id: String,
    file: PlannedFile,
    staging: PathBuf,
    backup_dir: Mutex<Option<PathBuf>>,
    undo: Mutex<Option<FileUndo>>,
}

enum FileUndo {
    /// The file did not exist: remove it and the parents created for it.
    Remove { parents: Vec<PathBuf> },
    /// A file was there: its content is in `backup`.
    Restore { backup: PathBuf, mode: u32 },
    /// A symlink was there.
    Relink { target: PathBuf },
    /// A file was there but no backup could be kept (applied outside an engine run).
    Kept,
}

impl FileStep {
    fn perms(&self) -> Perms {
        if self.file.secret {
            Perms::secret()
        } else {
            Perms::mode(self.file.mode)
        }
    }

    /// The staged source, refusing an entry path that would leave staging.
    fn staged_source(&self, entry: &str) -> Option<PathBuf> {
        let p = Path::new(entry);
        let safe = !entry.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        safe.then(|| self.staging.join(p))
    }

    /// How many bytes of the target differ from the planned content (positions that
    /// differ plus the difference in length); 0 means equal. One streaming pass over
    /// both, so a 100 MiB binary is never held in memory, and it answers both "equal?"
    /// and "how much changes" for the plan.
    fn differing_bytes(&self, host: &dyn Host) -> Result<u64> {
        let path = &self.file.path;
        let Some(mut current) = host.open_file(path)? else { return Ok(u64::MAX) };
        let (mut planned, source_name): (Box<dyn Read>, String) = match &self.file.source {
            FileSource::Inline(bytes) => (Box::new(bytes.as_slice()), path.display().to_string()),
            FileSource::Staged(entry) => {
                let src = self.staged_source(entry).unwrap_or_default();
                (Box::new(File::open(&src).map_err(|e| Error::io(&src, e))?), src.display().to_string())
            }
        };
        count_differences(&mut current, &mut planned).map_err(|e| Error::io(source_name, e))
    }
}

fn count_differences(a: &mut dyn Read, b: &mut dyn Read) -> io::Result<u64> {
    const CHUNK: usize = 64 * 1024;
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut diff = 0u64;
    loop {
        let (na, nb) = (airlock_format::write::read_full(a, &mut ba)?, airlock_format::write::read_full(b, &mut bb)?);
        let common = na.min(nb);
        diff += ba[..common].iter().zip(&bb[..common]).filter(|(x, y)| x != y).count() as u64;
        diff += (na.max(nb) - common) as u64;
        if na < CHUNK && nb < CHUNK {
            return Ok(diff);
        }
    }
}

impl Step for FileStep {
    fn id(&self) -> &str {
        &self.id
    }

    fn group(&self) -> StepGroup {
        self.file.group
    }

    fn writes(&self) -> Option<&Path> {
        Some(&self.file.path)
    }

    fn describe(&self) -> String {
        let path = self.file.path.display();
        let mode = self.perms().effective_mode();
        match (&self.file.source, self.file.secret) {
            (_, true) => format!("write secret {path} ({mode:04o}, content not shown)"),
            (FileSource::Inline(bytes), false) => format!("write {path} ({mode:04o}, {} bytes)", bytes.len()),
            (FileSource::Staged(entry), false) => format!("install {path} ({mode:04o}) from staged {entry}"),
        }
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let path = &self.file.path;
        if let FileSource::Staged(entry) = &self.file.source {
            let Some(src) = self.staged_source(entry) else {
                return Ok(StepState::Blocked {
                    reason: format!("the staged entry `{entry}` is not a plain relative path"),
                    hint: "this is a bug in the layout that named it; report it".to_string(),
                });
            };
            if !src.is_file() {
                return Ok(StepState::Blocked {
                    reason: format!("the staged file {} is missing", src.display()),
                    hint: "extract and verify the bundle again, then run again".to_string(),
                });
            }
        }
        let Some(meta) = host.metadata(path)? else {
            return Ok(StepState::Pending { change: "create".to_string() });
        };
        match meta.kind {
            FileKind::File => {}
            FileKind::Symlink => {
                let target = host.read_link(path)?.unwrap_or_default();
                return Ok(StepState::Pending {
                    change: format!("replace the symlink (-> {}) with a file", target.display()),
                });
            }
            other => return Ok(blocked(format!("{} is in the way of this file", kind_in_the_way(other)), path)),
        }
        let mut changes = Vec::new();
        let diff = self.differing_bytes(host)?;
        if diff > 0 {
            // Even a count of changed bytes says something about a secret; say less.
            changes.push(if self.file.secret {
                "update (secret content differs; not shown)".to_string()
            } else {
                format!("update ({diff} bytes differ)")
            });
        }
        let want = self.perms().effective_mode();
        if meta.mode != want {
            changes.push(format!("mode {:04o} -> {want:04o}", meta.mode));
        }
        Ok(if changes.is_empty() { StepState::Satisfied } else { StepState::Pending { change: changes.join("; ") } })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        let path = &self.file.path;
        let undo = match host.metadata(path)? {
            None => FileUndo::Remove { parents: missing_parents(host, path)? },
            Some(m) if m.kind == FileKind::File => match locked(&self.backup_dir).clone() {
                Some(dir) => {
                    // Backups are 0600 and their content never recorded: the old file
                    // may hold a token, and the backup directory outlives nothing else.
                    let backup = dir.join(path.strip_prefix("/").unwrap_or(path));
                    let mut old = host
                        .open_file(path)?
                        .ok_or_else(|| Error::input(path.display().to_string(), "disappeared while being backed up"))?;
                    host.write_file(&backup, &mut old, Perms::secret())?;
                    FileUndo::Restore { backup, mode: m.mode }
                }
                None => FileUndo::Kept,
            },
            Some(m) if m.kind == FileKind::Symlink => {
                FileUndo::Relink { target: host.read_link(path)?.unwrap_or_default() }
            }
            Some(m) => {
                return Err(Error::input(
                    path.display().to_string(),
                    format!("{} is in the way of this file", kind_in_the_way(m.kind)),
                ))
            }
        };
        match &self.file.source {
            FileSource::Inline(bytes) => host.write_file(path, &mut bytes.as_slice(), self.perms())?,
            FileSource::Staged(entry) => {
                let src = self
                    .staged_source(entry)
                    .ok_or_else(|| Error::unsafe_entry(entry, "a staged entry must be a plain relative path"))?;
                host.copy_file(&src, path, self.perms())?
            }
        };
        *locked(&self.undo) = Some(undo);
        Ok(())
    }

    fn rollback(&self, host: &dyn Host) -> Result<bool> {
        let path = &self.file.path;
        match locked(&self.undo).take() {
            None | Some(FileUndo::Kept) => Ok(false),
            Some(FileUndo::Remove { parents }) => {
                host.remove(path)?;
                remove_created_dirs(host, &parents)?;
                Ok(true)
            }
            Some(FileUndo::Restore { backup, mode }) => {
                let mut saved = host.open_file(&backup)?.ok_or_else(|| {
                    Error::input(
                        path.display().to_string(),
                        format!("cannot restore the previous content: its backup {} is missing", backup.display()),
                    )
                })?;
                // A secret path stays 0600 even if what was there before was not.
                let perms = Perms { mode, secret: self.file.secret };
                host.write_file(path, &mut saved, perms)?;
                Ok(true)
            }
            Some(FileUndo::Relink { target }) => {
                host.symlink(path, &target)?;
                Ok(true)
            }
        }
    }

    fn begin(&self, run: &RunContext) {
        *locked(&self.backup_dir) = Some(run.backup_dir.clone());
        *locked(&self.undo) = None;
    }
}

// --- directories ---------------------------------------------------------------------

struct DirStep {
    id: String,
    dir: PlannedDir,
    undo: Mutex<Option<DirUndo>>,
}

enum DirUndo {
    /// Created by this run: the directory, then its created parents, deepest first.
    Remove(Vec<PathBuf>),
    /// It existed with another mode.
    Chmod(u32),
}

impl Step for DirStep {
    fn id(&self) -> &str {
        &self.id
    }

    /// Directories first: everything else is placed into them.
    fn group(&self) -> StepGroup {
        StepGroup::Secrets
    }

    fn describe(&self) -> String {
        format!("directory {} ({:04o})", self.dir.path.display(), self.dir.mode)
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let path = &self.dir.path;
        Ok(match host.metadata(path)? {
            None => StepState::Pending { change: "create".to_string() },
            Some(m) if m.kind == FileKind::Dir && m.mode == self.dir.mode & 0o7777 => StepState::Satisfied,
            Some(m) if m.kind == FileKind::Dir => {
                StepState::Pending { change: format!("mode {:04o} -> {:04o}", m.mode, self.dir.mode & 0o7777) }
            }
            Some(m) => blocked(format!("{} is in the way of this directory", kind_in_the_way(m.kind)), path),
        })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        let path = &self.dir.path;
        let undo = match host.metadata(path)? {
            None => {
                let mut created = vec![path.clone()];
                created.extend(missing_parents(host, path)?);
                DirUndo::Remove(created)
            }
            Some(m) => DirUndo::Chmod(m.mode),
        };
        host.create_dir(path, self.dir.mode)?;
        *locked(&self.undo) = Some(undo);
        Ok(())
    }

    fn rollback(&self, host: &dyn Host) -> Result<bool> {
        match locked(&self.undo).take() {
            None => Ok(false),
            Some(DirUndo::Remove(created)) => remove_created_dirs(host, &created),
            Some(DirUndo::Chmod(mode)) => host.create_dir(&self.dir.path, mode).map(|()| true),
        }
    }

    fn begin(&self, _run: &RunContext) {
        *locked(&self.undo) = None;
    }
}

// --- links ---------------------------------------------------------------------------

struct LinkStep {
    id: String,
    link: PlannedLink,
    undo: Mutex<Option<LinkUndo>>,
}

enum LinkUndo {
    Remove { parents: Vec<PathBuf> },
    Relink { target: PathBuf },
}

impl LinkStep {
    fn found_on_path(&self, host: &dyn Host) -> Result<bool> {
        crate::host::name_on_path(host, &self.link.link, &self.link.target)
    }
}

impl Step for LinkStep {
    fn id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        let skip = if self.link.skip_if_on_path { " (unless the name is already on PATH)" } else { "" };
        format!("link {} -> {}{skip}", self.link.link.display(), self.link.target.display())
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let (path, want) = (&self.link.link, &self.link.target);
        if self.link.skip_if_on_path && self.found_on_path(host)? {
            // Nothing to do: the name resolves to the operator's own tool.
            return Ok(StepState::Satisfied);
        }
        Ok(match host.metadata(path)? {
            None => StepState::Pending { change: format!("create -> {}", want.display()) },
            Some(m) if m.kind == FileKind::Symlink => match host.read_link(path)? {
                Some(t) if &t == want => StepState::Satisfied,
                t => StepState::Pending {
                    change: format!("retarget {} -> {}", t.unwrap_or_default().display(), want.display()),
                },
            },
            // K3s's installer also refuses to replace a kubectl it did not put there.
            Some(m) => blocked(format!("{} is in the way of this link", kind_in_the_way(m.kind)), path),
        })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        let path = &self.link.link;
        let undo = match host.metadata(path)? {
            None => LinkUndo::Remove { parents: missing_parents(host, path)? },
            Some(m) if m.kind == FileKind::Symlink => {
                LinkUndo::Relink { target: host.read_link(path)?.unwrap_or_default() }
            }
            Some(m) => {
                return Err(Error::input(
                    path.display().to_string(),
                    format!("{} is in the way of this link", kind_in_the_way(m.kind)),
                ))
            }
        };
        host.symlink(path, &self.link.target)?;
        *locked(&self.undo) = Some(undo);
        Ok(())
    }

    fn rollback(&self, host: &dyn Host) -> Result<bool> {
        let path = &self.link.link;
        match locked(&self.undo).take() {
            None => Ok(false),
            Some(LinkUndo::Remove { parents }) => {
                host.remove(path)?;
                remove_created_dirs(host, &parents)?;
                Ok(true)
            }
            Some(LinkUndo::Relink { target }) => host.symlink(path, &target).map(|()| true),
        }
    }

    fn begin(&self, _run: &RunContext) {
        *locked(&self.undo) = None;
    }
}

// --- users and units -----------------------------------------------------------------

struct UserStep {
    id: String,
    user: PlannedUser,
}

impl Step for UserStep {
    fn id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!(
            "system user and group {} (home {}, shell {})",
            self.user.name,
            self.user.home.display(),
            self.user.shell.display()
        )
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        Ok(if host.user_exists(&self.user.name)? {
            StepState::Satisfied
        } else {
            StepState::Pending { change: format!("create system user and group {}", self.user.name) }
        })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        host.ensure_user(&self.user).map(|_| ())
    }

    fn rollback(&self, _host: &dyn Host) -> Result<bool> {
        // See the module docs: a user is never removed behind the operator's back.
        Ok(false)
    }
}

struct CommandStep {
    id: String,
    command: PlannedCommand,
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Step for CommandStep {
    fn id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        self.command.describe.clone()
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        let pending = || {
            let cmds: Vec<String> = self.command.run.iter().map(|r| r.join(" ")).collect();
            Ok(StepState::Pending { change: format!("run `{}`", cmds.join("`, `")) })
        };
        if !host.live() {
            // Never planned under a root; were it, there is nothing to run there.
            return Ok(StepState::Satisfied);
        }
        let Some(check) = &self.command.check else { return pending() };
        let out = host.run(&argv(check))?;
        if out.success() && out.stdout.trim().is_empty() {
            Ok(StepState::Satisfied)
        } else {
            pending()
        }
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        for run in &self.command.run {
            let a = argv(run);
            host.run(&a)?.checked(&a)?;
        }
        Ok(())
    }

    fn rollback(&self, _host: &dyn Host) -> Result<bool> {
        // Labels and loaded rules of files that rollback removes again do no harm.
        Ok(false)
    }
}

struct UnitStep {
    id: String,
    unit: String,
    enabled_here: Mutex<bool>,
}

impl Step for UnitStep {
    fn id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!("enable unit {}", self.unit)
    }

    fn check(&self, host: &dyn Host) -> Result<StepState> {
        Ok(if host.unit_enabled(&self.unit)? {
            StepState::Satisfied
        } else {
            StepState::Pending { change: format!("enable {}", self.unit) }
        })
    }

    fn apply(&self, host: &dyn Host) -> Result<()> {
        host.enable_unit(&self.unit)?;
        *locked(&self.enabled_here) = true;
        Ok(())
    }

    fn rollback(&self, host: &dyn Host) -> Result<bool> {
        if !std::mem::take(&mut *locked(&self.enabled_here)) {
            return Ok(false);
        }
        host.disable_unit(&self.unit).map(|()| true)
    }

    fn begin(&self, _run: &RunContext) {
        *locked(&self.enabled_here) = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_count_changed_bytes_and_the_length_difference() {
        let count = |a: &[u8], b: &[u8]| count_differences(&mut &a[..], &mut &b[..]).unwrap();
        assert_eq!(count(b"same", b"same"), 0);
        assert_eq!(count(b"same", b"sane"), 1);
        assert_eq!(count(b"short", b"shorter"), 2);
        assert_eq!(count(b"", b"abc"), 3);
        let big = vec![7u8; 200_000];
        let mut other = big.clone();
        other[150_000] = 8;
        assert_eq!(count(&big, &other), 1);
    }

    #[test]
    fn distribution_tool_links_are_skipped_where_the_name_is_on_path_instead_of_blocking() {
        use crate::host::{Perms, RecordingHost};
        let host = RecordingHost::new(false).unwrap();
        let mut layout = Layout::default();
        layout.tool_link("/usr/local/bin/kubectl", "k3s");
        layout.tool_link("/usr/local/bin/crictl", "k3s");
        layout.tool_link("/usr/local/bin/ctr", "k3s");
        layout.link("/usr/local/bin/plain", "k3s");
        // The site's own kubectl elsewhere on PATH, its own crictl where ours would go.
        host.write_file(Path::new("/usr/bin/kubectl"), &mut &b"site kubectl"[..], Perms::mode(0o755)).unwrap();
        host.write_file(Path::new("/usr/local/bin/crictl"), &mut &b"site crictl"[..], Perms::mode(0o755)).unwrap();
        host.write_file(Path::new("/usr/local/bin/plain"), &mut &b"in the way"[..], Perms::mode(0o755)).unwrap();
        let steps = layout_steps("k3s", &layout, Path::new("/staging"));
        let state = |id: &str| steps.iter().find(|s| s.id() == id).unwrap().check(&host).unwrap();
        assert_eq!(state("k3s/link/usr/local/bin/kubectl"), StepState::Satisfied);
        assert_eq!(state("k3s/link/usr/local/bin/crictl"), StepState::Satisfied);
        assert!(matches!(state("k3s/link/usr/local/bin/ctr"), StepState::Pending { .. }));
        assert!(matches!(state("k3s/link/usr/local/bin/plain"), StepState::Blocked { .. }), "other links still block");
        // Once made, our own link is satisfied as such.
        let ctr = steps.iter().find(|s| s.id() == "k3s/link/usr/local/bin/ctr").unwrap();
        ctr.apply(&host).unwrap();
        assert_eq!(ctr.check(&host).unwrap(), StepState::Satisfied);
        assert_eq!(host.read_link(Path::new("/usr/local/bin/ctr")).unwrap(), Some(PathBuf::from("k3s")));
    }

    #[test]
    fn step_ids_name_component_kind_and_path() {
        let mut layout = Layout::default();
        layout.file("/etc/rancher/k3s/config.yaml", 0o600, "x");
        layout.dir("/var/lib/rancher/k3s", 0o755);
        layout.link("/usr/local/bin/kubectl", "k3s");
        layout.units.push("k3s.service".into());
        let ids: Vec<String> =
            layout_steps("k3s", &layout, Path::new("/staging")).iter().map(|s| s.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "k3s/dir/var/lib/rancher/k3s",
                "k3s/file/etc/rancher/k3s/config.yaml",
                "k3s/link/usr/local/bin/kubectl",
                "k3s/unit/k3s.service"
            ]
        );
    }
}
