//! The one seam through which the installer reads and changes the host.
//!
//! Every file write, link, directory, user, unit and command goes through [`Host`];
//! nothing else in the installer calls `std::process`, mutates through `nix::` or
//! writes outside staging. Paths given to a host are absolute *target* paths
//! (`/etc/rancher/k3s/config.yaml`); a host rooted at a target root maps them below it,
//! the way `rpm --root` and `pacstrap` do, so tests and golden images need no real `/`.
//!
//! - [`RootedHost`]: the real file system under a root (`/` on a live host).
//! - [`RecordingHost`]: a test double that records every call as a [`HostCall`] and
//!   answers commands from a script, while doing file work on a temporary root.
//! - [`Kube`]: the one place kubectl command lines are built (with a request
//!   timeout), run through [`Host::run`].
//! - [`list_files`] (`walk.rs`): every regular file below a target directory, links
//!   skipped and never followed (the support bundle, status' certificates).
//! - [`HostLock`], [`LockHolder`]: the lock a run holds on the site and who holds it.
//!
//! Code outside this module that must hand a directory under the root to something
//! that works with host paths (the verifying extractor writing staging, a reader of
//! staged content) asks [`Host::resolve_dir`] or [`Host::real_path`] for it: the path
//! comes out of the same symlink-safe resolution as every other change.
//!
//! Users and units are edited as files under a root (what `useradd --prefix` and
//! `systemctl --root` would leave behind) and through `useradd`/`systemctl` on a live
//! host; both live in `system.rs`, written against `&dyn Host`, so the recording double
//! runs exactly the code a real host runs.

mod kube;
mod recording;
mod rooted;
pub mod ssh;
mod system;
mod walk;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub use kube::{ready_condition, Kube, KUBE_REQUEST_TIMEOUT};
pub use recording::{Effects, HostCall, RecordingHost};
pub use rooted::{is_temp_name, RootedHost};

/// Target path `target` as the operator finds it from where airlock runs: below the
/// target root with the root in front (`/mnt/new/var/lib/airlock/report.json`), as it
/// is on a live host. For messages and hints only: reads and writes go through a
/// [`Host`], which resolves links safely.
/// The standard `PATH` of a root shell, where K3s' `install.sh` looks (`command -v`)
/// before it links a tool.
pub const STANDARD_PATH: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Whether the name of the tool link `link` (-> `target`) is already on the standard
/// `PATH` as something other than that very link: at the link's own place as a file
/// or a link elsewhere, or in another directory. Such a link is not made (as K3s'
/// installer skips it), so its absence is no drift either.
pub fn name_on_path(host: &dyn Host, link: &std::path::Path, target: &std::path::Path) -> Result<bool> {
    let Some(name) = link.file_name() else { return Ok(false) };
    for dir in STANDARD_PATH {
        let candidate = std::path::Path::new(dir).join(name);
        let Some(m) = host.metadata(&candidate)? else { continue };
        if candidate == link {
            let ours = m.kind == FileKind::Symlink && host.read_link(link)?.as_deref() == Some(target);
            if !ours {
                return Ok(true);
            }
        } else if m.kind != FileKind::Dir {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn shown_path(root: &std::path::Path, target: &std::path::Path) -> std::path::PathBuf {
    root.join(target.strip_prefix("/").unwrap_or(target))
}
pub use walk::{list_files, remove_temp_files, Listing, Skipped};

/// Where the host keeps enabled-unit links and unit files; see [`Host::enable_unit`].
pub const SYSTEMD_SYSTEM_DIR: &str = "/etc/systemd/system";

/// What kind of thing a path is (without following a final symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Sockets, devices, fifos: never something an install lays down.
    Other,
}

/// The facts about a path the engine decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub kind: FileKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    pub len: u64,
    /// Hard links to the file (1 for a file nothing else links to).
    pub nlink: u64,
}

/// One entry of a directory listing ([`Host::list_dir`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: String,
    pub kind: FileKind,
}

/// How a file is written: its mode, and whether its content is a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perms {
    pub mode: u32,
    /// A secret is written 0600 whatever `mode` says, and its content is never
    /// recorded, logged or shown.
    pub secret: bool,
}

impl Perms {
    pub fn mode(mode: u32) -> Self {
        Self { mode, secret: false }
    }
    pub fn secret() -> Self {
        Self { mode: 0o600, secret: true }
    }
    /// The mode the file really gets.
    pub fn effective_mode(&self) -> u32 {
        if self.secret {
            0o600
        } else {
            self.mode & 0o7777
        }
    }
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit code; -1 when the command was killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// A successful run that printed `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self { status: 0, stdout: stdout.into(), stderr: String::new() }
    }
    /// A run that exited with `status` and printed `stderr`.
    pub fn exit(status: i32, stderr: impl Into<String>) -> Self {
        Self { status, stdout: String::new(), stderr: stderr.into() }
    }
    pub fn success(&self) -> bool {
        self.status == 0
    }
    /// This output if the command succeeded, else an error naming the command and
    /// what it printed on stderr.
    pub fn checked(self, argv: &[&str]) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let said = self.stderr.trim();
        Err(Error::new(
            airlock_format::error::ErrorKind::Io,
            argv.join(" "),
            format!(
                "exited with status {}{}",
                self.status,
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ),
        ))
    }
}

/// An exclusive lock on a file, held until dropped (`flock(2)`: the kernel drops it
/// when the process dies, so a crashed run never leaves a stale lock behind).
#[derive(Debug)]
pub struct HostLock {
    _lock: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl HostLock {
    /// The target path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds a lock, as its holder writes it into the lock file: `pid`, `started`
/// (RFC 3339) and `command` lines, so the run that is refused can say which run is
/// working on the site. A lock file of an older airlock holds only the pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: Option<u32>,
    pub started: Option<String>,
    pub command: Option<String>,
}

impl LockHolder {
    /// This process: its pid, now, and its command line.
    pub fn this_process() -> Self {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let command = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
        Self {
            pid: Some(std::process::id()),
            started: Some(airlock_format::manifest::rfc3339(secs)),
            command: Some(command),
        }
    }

    /// Reads what [`LockHolder`]'s `Display` wrote (or an older bare pid); what cannot
    /// be read stays `None`.
    pub fn parse(text: &str) -> Self {
        let mut holder = Self { pid: None, started: None, command: None };
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => holder.pid = v.trim().parse().ok(),
                Some(("started", v)) => holder.started = Some(v.trim().to_string()),
                Some(("command", v)) => holder.command = Some(v.trim().to_string()),
                _ => holder.pid = holder.pid.or_else(|| line.trim().parse().ok()),
            }
        }
        holder
    }
}

impl std::fmt::Display for LockHolder {
    /// The lock file's text when written with `{}`; with `{:#}`, how a refusal names
    /// the holder: "another airlock run (pid N, started T, command C)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !f.alternate() {
            if let Some(pid) = self.pid {
                writeln!(f, "pid {pid}")?;
            }
            if let Some(t) = &self.started {
                writeln!(f, "started {t}")?;
            }
            if let Some(c) = &self.command {
                // One line: the command is shown, never parsed.
                writeln!(f, "command {}", c.replace('\n', " "))?;
            }
            return Ok(());
        }
        let parts: Vec<String> = [
            self.pid.map(|p| format!("pid {p}")),
            self.started.as_ref().map(|t| format!("started {t}")),
            self.command.as_ref().map(|c| format!("command {c}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            write!(f, "another airlock run")
        } else {
            write!(f, "another airlock run ({})", parts.join(", "))
        }
    }
}

/// A system user (and its group of the same name) that must exist, e.g. RKE2's
/// `etcd` user for the CIS profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedUser {
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// Everything the installer may do to a host. Object safe: the engine holds a
/// `&dyn Host`. All paths are absolute target paths; relative paths and `..` are
/// refused.
pub trait Host {
    /// The target root the paths are mapped below (`/` on a live host).
    fn root(&self) -> &Path;
    /// Whether this is the running host: commands run, services may start. Under
    /// `--root` it is false and only files change.
    fn live(&self) -> bool;

    // --- reading -------------------------------------------------------------------
    /// The path's metadata, without following a final symlink; `None` when missing.
    fn metadata(&self, path: &Path) -> Result<Option<Metadata>>;
    /// A streaming reader over a file's content; `None` when missing.
    fn open_file(&self, path: &Path) -> Result<Option<Box<dyn Read>>>;
    /// A whole (small) file; `None` when missing.
    fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>>;
    /// A symlink's target as stored; `None` when missing, an error when not a link.
    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>>;
    /// A directory's entries, sorted by name, without following symlinks in it;
    /// `None` when missing, an error when not a directory. Names that are not UTF-8
    /// are refused: nothing Airlock lays down has one.
    fn list_dir(&self, path: &Path) -> Result<Option<Vec<DirEntry>>>;
    /// The host path a target path resolves to (every symlink followed *inside* the
    /// root, the final one too); nothing is created. For handing something under the
    /// root to code that reads host paths: staged bundle content, the source of
    /// [`Host::copy_file`].
    fn real_path(&self, path: &Path) -> Result<PathBuf>;

    // --- changing files ------------------------------------------------------------
    /// Writes a file atomically (temp file in the same directory, fsync, rename,
    /// fsync the directory), streaming from `content`; missing parents are created
    /// 0755. Returns the bytes written.
    fn write_file(&self, path: &Path, content: &mut dyn Read, perms: Perms) -> Result<u64>;
    /// Copies a file from a *host* path (staging; not mapped under the root) to a
    /// target path, atomically and streaming, as [`Host::write_file`]. The source must
    /// be a staged file nothing writes to again: a target that does not exist yet may
    /// become a hard link to it when both are on one filesystem.
    fn copy_file(&self, source: &Path, path: &Path, perms: Perms) -> Result<u64>;
    /// Makes sure a directory exists with exactly `mode`; missing parents are created
    /// 0755.
    fn create_dir(&self, path: &Path, mode: u32) -> Result<()>;
    /// Creates or replaces a symlink atomically; `target` is stored as given.
    fn symlink(&self, path: &Path, target: &Path) -> Result<()>;
    /// Removes a file or symlink; a missing path is fine.
    fn remove(&self, path: &Path) -> Result<()>;
    /// Removes an empty directory. `Ok(false)` when it is not empty (it stays); a
    /// missing directory is fine.
    fn remove_dir(&self, path: &Path) -> Result<bool>;
    /// Removes a directory tree without following symlinks; a missing path is fine.
    fn remove_all(&self, path: &Path) -> Result<()>;
    /// Renames `from` to `to` within the root, atomically, replacing a file or an empty
    /// directory at `to`; neither final component is followed. Missing parents of `to`
    /// are created 0755.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Runs `work`, whose changes through this host stay atomic as always (temp file,
    /// rename) but are not made durable one by one: instead of an fsync of every file
    /// and of every directory it changes, one `syncfs(2)` per filesystem it wrote to
    /// makes all of them durable when `work` returns. For many changes that only count
    /// once a later write commits them (a release snapshot, complete only with its
    /// `snapshot.json` written after this returns): a crash before that leaves an
    /// uncommitted batch, never a committed one whose files are not on disk.
    fn durable_together(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()>;
    /// Makes sure a directory exists with `mode` as [`Host::create_dir`] does (a
    /// symlink in its place is refused, not followed) and returns its host path: the
    /// one directory code outside the seam (the verifying extractor) may write below.
    fn resolve_dir(&self, path: &Path, mode: u32) -> Result<PathBuf>;

    // --- system --------------------------------------------------------------------
    /// Whether a user of that name exists.
    fn user_exists(&self, name: &str) -> Result<bool>;
    /// Makes sure a system user and its group of the same name exist. Returns whether
    /// the user was created.
    fn ensure_user(&self, user: &PlannedUser) -> Result<bool>;
    /// Whether a unit is enabled (`systemctl is-enabled`, or its `.wants` links under
    /// a root). A unit whose file does not exist yet is not enabled.
    fn unit_enabled(&self, unit: &str) -> Result<bool>;
    /// Enables a unit: `systemctl enable` live; under a root, the links `systemctl
    /// enable` makes: `/etc/systemd/system/<target>.wants/<unit>` → the unit file,
    /// for each `WantedBy=` target of its `[Install]` section.
    fn enable_unit(&self, unit: &str) -> Result<()>;
    /// Undoes [`Host::enable_unit`].
    fn disable_unit(&self, unit: &str) -> Result<()>;
    /// Runs a command on a live host and returns its output whatever its exit status;
    /// an error under a root, where nothing is started.
    fn run(&self, argv: &[&str]) -> Result<CommandOutput>;
    /// Runs a command on a live host as [`Host::run`], with binary streams: its
    /// standard input read from `stdin` (none: empty) and, with `stdout_to`, its
    /// standard output written to that target file (0600, atomically: only a command
    /// that exits 0 leaves the file) instead of returned. For database dumps and
    /// restores, whose data is binary and as large as the database. An error under a
    /// root, where nothing is started.
    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: Option<&mut dyn Read>,
        stdout_to: Option<&Path>,
    ) -> Result<CommandOutput>;
    /// Takes an exclusive lock on `path` (created 0600) without waiting; an error
    /// naming the holder ("another airlock run (pid N, started T, command C)") when
    /// another process holds it.
    fn lock(&self, path: &Path) -> Result<HostLock>;
    /// Who holds the lock at `path` now, if anyone; changes nothing (for the commands
    /// that only read the site: status, support-bundle).
    fn lock_holder(&self, path: &Path) -> Result<Option<LockHolder>>;
}

/// The error every host gives for a command under `--root`.
pub(crate) fn not_started_under_root(argv: &[&str], root: &Path) -> Error {
    Error::input(
        argv.join(" "),
        format!("nothing is started under --root (target root {}): commands run only on a live host", root.display()),
    )
    .with_hint("files and enabled units are laid out under the root; services start when the image boots")
}

/// SHA-256 of a file on the target, streaming; `None` when it is missing. What drift
/// checks (`status`, `uninstall`) compare with the digests the install recorded.
pub fn file_sha256(host: &dyn Host, path: &Path) -> Result<Option<airlock_format::digest::Sha256Digest>> {
    let Some(mut r) = host.open_file(path)? else { return Ok(None) };
    let mut h = airlock_format::digest::Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(h.finish()))
}
