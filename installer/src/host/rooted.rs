//! The real file system below a target root.
//!
//! Path safety: target paths must be absolute and free of `..`. They are resolved one
//! component at a time with `lstat`, the way `chroot(2)` would see them (systemd's
//! `chase()` with a root prefix works the same way): a symlink met on the way is
//! followed *inside* the root — an absolute link target starts again at the root, a
//! relative one from the link's directory — and a link whose `..` would climb above
//! the root is refused. So a link `<root>/etc/x -> /tmp/outside` means
//! `<root>/tmp/outside`, never the host's `/tmp/outside`, and real roots with
//! `/lib -> usr/lib` or `/var/run -> /run` still work. The final component is not
//! followed when it is changed: a write or link replaces a symlink there rather than
//! writing through it. This guards against mistakes in layouts and hostile bundle
//! content, not against another root process racing us inside the root.
//!
//! Writes are atomic: a temp file in the same directory, fsync, rename over the
//! target, fsync the directory; a crash leaves either the old or the new file.

// The host seam itself: the one module allowed the file and process calls that
// clippy.toml refuses everywhere else.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_format::error::{Error, ErrorKind, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::PlannedUser;
use super::{system, CommandOutput, DirEntry, FileKind, Host, HostLock, LockHolder, Metadata, Perms};

/// Symlinks followed while resolving one path before we call it a loop (as Linux).
const MAX_SYMLINK_HOPS: u32 = 40;

/// The real file system, with target paths mapped below `root`.
#[derive(Debug)]
pub struct RootedHost {
    root: PathBuf,
    live: bool,
    /// Inside [`Host::durable_together`]: the host directories changed since it began,
    /// whose filesystems are synced once at its end instead of an fsync per change.
    deferred: std::sync::Mutex<Option<std::collections::BTreeSet<PathBuf>>>,
}

impl RootedHost {
    /// A host rooted at `root` (which must exist). `live` means this is the running
    /// system: commands run and units are enabled with `systemctl`; it requires the
    /// root to be `/`, since a command would not see files laid out anywhere else.
    pub fn new(root: PathBuf, live: bool) -> Result<Self> {
        if !root.is_absolute() {
            return Err(Error::input(root.display().to_string(), "the target root must be an absolute path")
                .with_hint("pass --root with an absolute directory"));
        }
        // Canonical once, so every mapped path starts with exactly this prefix.
        let root = fs::canonicalize(&root).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::new(ErrorKind::Io, root.display().to_string(), "the target root does not exist").with_hint(
                    "check the --root path; `airlock install` and `airlock join` create a missing root, \
                     a dry run or another command does not",
                )
            }
            _ => Error::io(&root, e),
        })?;
        if !root.is_dir() {
            return Err(Error::input(root.display().to_string(), "the target root is not a directory"));
        }
        if live && root != Path::new("/") {
            return Err(Error::input(
                root.display().to_string(),
                "a live install changes the running system, so its root must be /",
            )
            .with_hint("drop --root to install onto this host, or install under the root without starting anything"));
        }
        Ok(Self { root, live, deferred: Default::default() })
    }

    /// [`RootedHost::new`], making the root directory first (0755, with its parents)
    /// when it is missing: what `airlock install --root /mnt/new` expects.
    pub fn create(root: PathBuf, live: bool) -> Result<Self> {
        if root.is_absolute() && fs::symlink_metadata(&root).is_err() {
            // The root itself is where the seam starts, so it is made here, not through it.
            #[allow(clippy::disallowed_methods)]
            fs::DirBuilder::new().recursive(true).mode(0o755).create(&root).map_err(|e| {
                Error::io(&root, e).with_hint("create the target root yourself, or pass another --root")
            })?;
            log::info!(target: LOG, "created the target root {}", root.display());
        }
        Self::new(root, live)
    }

    /// Opens an existing target file for reading, never through a symlink in its last
    /// component (the others resolved under the root); `None` when it is not there.
    fn open_existing(&self, path: &Path) -> Result<Option<File>> {
        let host = self.resolve(path, true)?;
        match OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC).open(&host) {
            Ok(f) => Ok(Some(f)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    /// How errors name a target path: with the root when there is one.
    fn shown(&self, target: &Path) -> String {
        if self.root == Path::new("/") {
            target.display().to_string()
        } else {
            format!("{} (under root {})", target.display(), self.root.display())
        }
    }

    fn io_err(&self, target: &Path, e: io::Error) -> Error {
        Error::io(self.shown(target), e)
    }

    /// The target path of a host path below the root (for messages).
    fn target_of(&self, host: &Path) -> PathBuf {
        Path::new("/").join(host.strip_prefix(&self.root).unwrap_or(host))
    }

    fn unsafe_path(&self, target: &Path, cause: impl Into<String>) -> Error {
        Error::unsafe_entry(self.shown(target), cause)
            .with_hint("target paths are absolute paths inside the target root; fix the layout that produced it")
    }

    /// Maps a target path below the root; see the module docs for the rules.
    fn resolve(&self, target: &Path, follow_last: bool) -> Result<PathBuf> {
        let mut todo: VecDeque<OsString> = VecDeque::new();
        if !target.has_root() {
            return Err(self.unsafe_path(target, "a target path must be absolute"));
        }
        for c in target.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(s) => todo.push_back(s.to_os_string()),
                Component::ParentDir => return Err(self.unsafe_path(target, "`..` is not allowed in a target path")),
                Component::Prefix(_) => return Err(self.unsafe_path(target, "not a Unix path")),
            }
        }
        let mut done = self.root.clone();
        let mut depth = 0usize;
        let mut hops = 0u32;
        // The last symlink followed, to name it when it leads out of the root.
        let mut via: Option<PathBuf> = None;
        // Once a component is missing nothing below it exists, so nothing there can be
        // a symlink and nothing needs a look. But a link's target may climb back out of
        // the missing part with `..` (`l -> missing/../x`): from there on components
        // exist again and must be looked at, or `x` being a link would be followed by
        // the kernel, unchecked, wherever it leads. `missing_from` is the depth of the
        // first missing component.
        let mut exists = true;
        let mut missing_from = usize::MAX;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                if depth == 0 {
                    let cause = match &via {
                        Some(link) => format!(
                            "the symlink {} on the way leads out of the target root",
                            self.target_of(link).display()
                        ),
                        None => "a symlink on the way leads out of the target root".to_string(),
                    };
                    return Err(self.unsafe_path(target, cause));
                }
                done.pop();
                depth -= 1;
                if depth < missing_from {
                    exists = true;
                    missing_from = usize::MAX;
                }
                continue;
            }
            let next = done.join(&c);
            if exists && (!todo.is_empty() || follow_last) {
                match fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(self.unsafe_path(target, "too many levels of symbolic links"));
                        }
                        let link = fs::read_link(&next).map_err(|e| self.io_err(target, e))?;
                        via = Some(next.clone());
                        if link.has_root() {
                            done = self.root.clone();
                            depth = 0;
                        }
                        for part in link.components().rev() {
                            match part {
                                Component::Normal(s) => todo.push_front(s.to_os_string()),
                                Component::ParentDir => todo.push_front(OsString::from("..")),
                                _ => {}
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if is_missing(&e) => {
                        exists = false;
                        missing_from = depth + 1;
                    }
                    Err(e) => return Err(self.io_err(target, e)),
                }
            }
            done.push(c);
            depth += 1;
        }
        Ok(done)
    }

    /// As [`Self::resolve`], for paths about to change: the root itself never is.
    fn resolve_for_change(&self, target: &Path) -> Result<PathBuf> {
        let host = self.resolve(target, false)?;
        if host == self.root {
            return Err(self.unsafe_path(target, "the target root itself cannot be replaced or removed"));
        }
        Ok(host)
    }

    /// Creates the missing parents of `host` (0755, whatever the umask), refusing a
    /// non-directory in the way.
    fn make_parents(&self, target: &Path, host: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut dir = host.parent();
        while let Some(d) = dir {
            match fs::symlink_metadata(d) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(Error::input(
                        self.shown(target),
                        format!("{} is in the way: it exists and is not a directory", self.target_of(d).display()),
                    )
                    .with_hint("move it aside, then run the command again"))
                }
                Err(e) if is_missing(&e) => missing.push(d.to_path_buf()),
                Err(e) => return Err(self.io_err(target, e)),
            }
            dir = d.parent();
        }
        for d in missing.iter().rev() {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
                Err(e) => return Err(self.io_err(&self.target_of(d), e)),
            }
            fs::set_permissions(d, Permissions::from_mode(0o755)).map_err(|e| self.io_err(&self.target_of(d), e))?;
            self.sync_parent(d).map_err(|e| self.io_err(&self.target_of(d), e))?;
        }
        Ok(())
    }

    /// Places a staged file at a target path that does not exist yet by hard-linking
    /// it, when both are on one filesystem: the image archive and the distribution's
    /// binaries are gigabytes that would otherwise be written a second time. Staged
    /// files are never written again (a new run removes staging and extracts anew), so
    /// sharing the inode is safe. A file that has other names already (a placed file
    /// and its kept copy in the release store) is linked only when it has the mode
    /// asked for, because the mode belongs to the inode and so to every name.
    /// `None`: not possible here, copy instead.
    fn link_fresh(&self, source: &Path, target: &Path, perms: Perms) -> Result<Option<u64>> {
        let dest = self.resolve_for_change(target)?;
        let fresh = matches!(fs::symlink_metadata(&dest), Err(e) if is_missing(&e));
        let Ok(meta) = fs::symlink_metadata(source) else { return Ok(None) };
        let shared_mode_kept = meta.nlink() == 1 || meta.mode() & 0o7777 == perms.effective_mode();
        if !fresh || !meta.is_file() || !shared_mode_kept {
            return Ok(None);
        }
        self.make_parents(target, &dest)?;
        let tmp = temp_path(&dest);
        if fs::hard_link(source, &tmp).is_err() {
            return Ok(None); // another filesystem (EXDEV) or links not allowed: copy
        }
        let placed = (|| -> io::Result<()> {
            let f = File::open(&tmp)?;
            f.set_permissions(Permissions::from_mode(perms.effective_mode()))?;
            // The data must be on disk before the name is, as for a written file.
            self.sync_file(&f)?;
            fs::rename(&tmp, &dest)
        })();
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(self.io_err(target, e));
        }
        self.sync_parent(&dest).map_err(|e| self.io_err(target, e))?;
        Ok(Some(meta.len()))
    }

    /// The shared body of every file write: `fill` streams the content into a temp
    /// file next to the target, which then replaces the target.
    fn atomic_write(
        &self,
        target: &Path,
        perms: Perms,
        fill: &mut dyn FnMut(&mut File) -> io::Result<u64>,
    ) -> Result<u64> {
        let dest = self.resolve_for_change(target)?;
        self.make_parents(target, &dest)?;
        let previous = match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => {
                return Err(Error::input(self.shown(target), "a directory is in the way of this file")
                    .with_hint("move the directory aside, then run the command again"))
            }
            Ok(m) => Some(m),
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(self.io_err(target, e)),
        };
        let tmp = temp_path(&dest);
        let written = (|| -> io::Result<u64> {
            // 0600 while the content streams in; the final mode is set once it is all there.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&tmp)?;
            let n = fill(&mut f)?;
            // Replacing /etc/shadow (root:shadow) or a service's config must not hand it
            // to root:root; secrets stay with the installing user. Failing to chown (not
            // running as root) keeps our own ownership, which is all we could give.
            if let Some(old) = previous.as_ref().filter(|m| m.is_file() && !perms.secret) {
                let _ = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()));
            }
            f.set_permissions(Permissions::from_mode(perms.effective_mode()))?;
            self.sync_file(&f)?;
            Ok(n)
        })();
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(self.io_err(target, e));
            }
        };
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io_err(target, e));
        }
        self.sync_parent(&dest).map_err(|e| self.io_err(target, e))?;
        Ok(n)
    }
}

impl Host for RootedHost {
    fn root(&self) -> &Path {
        &self.root
    }

    fn live(&self) -> bool {
        self.live
    }

    fn metadata(&self, path: &Path) -> Result<Option<Metadata>> {
        let host = self.resolve(path, false)?;
        match fs::symlink_metadata(&host) {
            Ok(m) => Ok(Some(Metadata {
                kind: kind_of(m.file_type()),
                mode: m.mode() & 0o7777,
                len: m.len(),
                nlink: m.nlink(),
            })),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    fn open_file(&self, path: &Path) -> Result<Option<Box<dyn Read>>> {
        let Some(f) = self.open_existing(path)? else { return Ok(None) };
        if !f.metadata().map_err(|e| self.io_err(path, e))?.is_file() {
            return Err(Error::input(self.shown(path), "is not a regular file"));
        }
        Ok(Some(Box::new(f)))
    }

    fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let Some(mut r) = self.open_file(path)? else { return Ok(None) };
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).map_err(|e| self.io_err(path, e))?;
        Ok(Some(buf))
    }

    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>> {
        let host = self.resolve(path, false)?;
        match fs::read_link(&host) {
            Ok(t) => Ok(Some(t)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                Err(Error::input(self.shown(path), "is not a symbolic link"))
            }
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    fn list_dir(&self, path: &Path) -> Result<Option<Vec<DirEntry>>> {
        let host = self.resolve(path, true)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::input(self.shown(path), "is not a directory")),
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(self.io_err(path, e)),
        }
        let mut entries = Vec::new();
        for e in fs::read_dir(&host).map_err(|e| self.io_err(path, e))? {
            let e = e.map_err(|e| self.io_err(path, e))?;
            let kind = kind_of(e.file_type().map_err(|err| self.io_err(&path.join(e.file_name()), err))?);
            let name = e.file_name().into_string().map_err(|name| {
                Error::input(self.shown(&path.join(&name)), "the name is not UTF-8")
                    .with_hint("rename or remove it, then run the command again")
            })?;
            entries.push(DirEntry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(entries))
    }

    fn real_path(&self, path: &Path) -> Result<PathBuf> {
        self.resolve(path, true)
    }

    fn write_file(&self, path: &Path, content: &mut dyn Read, perms: Perms) -> Result<u64> {
        let n = self.atomic_write(path, perms, &mut |f| {
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let n = io::copy(content, &mut w)?;
            w.flush()?;
            Ok(n)
        })?;
        log_write(path, n, perms);
        Ok(n)
    }

    fn copy_file(&self, source: &Path, path: &Path, perms: Perms) -> Result<u64> {
        let n = match self.link_fresh(source, path, perms)? {
            Some(n) => n,
            None => {
                let mut src = File::open(source).map_err(|e| Error::io(source, e))?;
                // File to File: io::copy uses copy_file_range, streaming inside the kernel.
                self.atomic_write(path, perms, &mut |f| io::copy(&mut src, f))?
            }
        };
        log_write(path, n, perms);
        Ok(n)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        let host = self.resolve_for_change(path)?;
        let mode = mode & 0o7777;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {
                if m.mode() & 0o7777 != mode {
                    fs::set_permissions(&host, Permissions::from_mode(mode)).map_err(|e| self.io_err(path, e))?;
                }
                return Ok(());
            }
            Ok(_) => {
                return Err(Error::input(self.shown(path), "exists and is not a directory")
                    .with_hint("move it aside, then run the command again"))
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(self.io_err(path, e)),
        }
        self.make_parents(path, &host)?;
        match fs::create_dir(&host) {
            Ok(()) => {}
            // Another process made it between the look and the make (two runs starting
            // at once, before either holds the site's lock): as if it had been found.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return self.create_dir(path, mode),
            Err(e) => return Err(self.io_err(path, e)),
        }
        fs::set_permissions(&host, Permissions::from_mode(mode)).map_err(|e| self.io_err(path, e))?;
        self.sync_parent(&host).map_err(|e| self.io_err(path, e))?;
        log::info!(target: LOG, "created {} ({mode:04o})", path.display());
        Ok(())
    }

    fn symlink(&self, path: &Path, target: &Path) -> Result<()> {
        if target.as_os_str().is_empty() {
            return Err(Error::input(self.shown(path), "a symlink needs a target"));
        }
        let host = self.resolve_for_change(path)?;
        self.make_parents(path, &host)?;
        if fs::symlink_metadata(&host).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::input(self.shown(path), "a directory is in the way of this link")
                .with_hint("move the directory aside, then run the command again"));
        }
        let tmp = temp_path(&host);
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| self.io_err(path, e))?;
        if let Err(e) = fs::rename(&tmp, &host) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io_err(path, e));
        }
        self.sync_parent(&host).map_err(|e| self.io_err(path, e))?;
        log::info!(target: LOG, "linked {} -> {}", path.display(), target.display());
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let host = self.resolve_for_change(path)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Err(Error::input(self.shown(path), "is a directory, not a file or link")),
            Ok(_) => {
                fs::remove_file(&host).map_err(|e| self.io_err(path, e))?;
                self.sync_parent(&host).map_err(|e| self.io_err(path, e))?;
                log::info!(target: LOG, "removed {}", path.display());
                Ok(())
            }
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    fn remove_dir(&self, path: &Path) -> Result<bool> {
        let host = self.resolve_for_change(path)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::input(self.shown(path), "is not a directory")),
            Err(e) if is_missing(&e) => return Ok(true),
            Err(e) => return Err(self.io_err(path, e)),
        }
        match fs::remove_dir(&host) {
            Ok(()) => {
                self.sync_parent(&host).map_err(|e| self.io_err(path, e))?;
                log::info!(target: LOG, "removed {}", path.display());
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) || e.kind() == io::ErrorKind::AlreadyExists => {
                Ok(false)
            }
            Err(e) => Err(self.io_err(path, e)),
        }
    }

    fn remove_all(&self, path: &Path) -> Result<()> {
        let host = self.resolve_for_change(path)?;
        let result = match fs::symlink_metadata(&host) {
            // remove_dir_all never follows symlinks inside the tree.
            Ok(m) if m.is_dir() => fs::remove_dir_all(&host),
            Ok(_) => fs::remove_file(&host),
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => Err(e),
        };
        result.and_then(|()| self.sync_parent(&host)).map_err(|e| self.io_err(path, e))?;
        log::info!(target: LOG, "removed {}", path.display());
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let src = self.resolve_for_change(from)?;
        let dest = self.resolve_for_change(to)?;
        if let Err(e) = fs::symlink_metadata(&src) {
            return Err(self.io_err(from, e));
        }
        self.make_parents(to, &dest)?;
        fs::rename(&src, &dest).map_err(|e| {
            Error::new(ErrorKind::Io, self.shown(to), format!("cannot be renamed from {}: {e}", from.display()))
        })?;
        self.sync_parent(&dest).map_err(|e| self.io_err(to, e))?;
        if src.parent() != dest.parent() {
            self.sync_parent(&src).map_err(|e| self.io_err(from, e))?;
        }
        Ok(())
    }

    fn durable_together(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        {
            let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
            if deferred.is_some() {
                // Nested: the outer call syncs everything at its end.
                drop(deferred);
                return work();
            }
            *deferred = Some(Default::default());
        }
        let result = work();
        let dirs = self.deferred.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        // Synced on failure too: what was changed is then as durable as it would have
        // been with an fsync per change.
        let synced = self.sync_filesystems(&dirs);
        result.and(synced)
    }

    fn resolve_dir(&self, path: &Path, mode: u32) -> Result<PathBuf> {
        self.create_dir(path, mode)?;
        // create_dir refused a symlink in the final place, so this is the directory.
        self.resolve(path, false)
    }

    fn user_exists(&self, name: &str) -> Result<bool> {
        if self.live {
            system::live_user_exists(self, name)
        } else {
            system::rooted_user_exists(self, name)
        }
    }

    fn ensure_user(&self, user: &PlannedUser) -> Result<bool> {
        if self.live {
            system::live_ensure_user(self, user)
        } else {
            system::rooted_ensure_user(self, user)
        }
    }

    fn unit_enabled(&self, unit: &str) -> Result<bool> {
        if self.live {
            system::live_unit_enabled(self, unit)
        } else {
            system::rooted_unit_enabled(self, unit)
        }
    }

    fn enable_unit(&self, unit: &str) -> Result<()> {
        if self.live {
            system::live_enable_unit(self, unit)
        } else {
            system::rooted_enable_unit(self, unit)
        }
    }

    fn disable_unit(&self, unit: &str) -> Result<()> {
        if self.live {
            system::live_disable_unit(self, unit)
        } else {
            system::rooted_disable_unit(self, unit)
        }
    }

    fn run(&self, argv: &[&str]) -> Result<CommandOutput> {
        if !self.live {
            return Err(super::not_started_under_root(argv, &self.root));
        }
        let (program, args) =
            argv.split_first().ok_or_else(|| Error::input("command", "an empty command line cannot be run"))?;
        log::info!(target: LOG, "run {}", argv.join(" "));
        // LC_ALL=C: the installer reads what tools print; it must not be translated.
        let out = Command::new(program).args(args).env("LC_ALL", "C").stdin(Stdio::null()).output().map_err(|e| {
            let missing = e.kind() == io::ErrorKind::NotFound;
            let err = Error::new(ErrorKind::Io, argv.join(" "), format!("could not be started: {e}"));
            if missing {
                err.with_hint(format!("`{program}` is not installed on this host; install it and run again"))
            } else {
                err
            }
        })?;
        Ok(CommandOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: Option<&mut dyn Read>,
        stdout_to: Option<&Path>,
    ) -> Result<CommandOutput> {
        if !self.live {
            return Err(super::not_started_under_root(argv, &self.root));
        }
        let (program, args) =
            argv.split_first().ok_or_else(|| Error::input("command", "an empty command line cannot be run"))?;
        log::info!(target: LOG, "run {} (streaming)", argv.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let err = Error::new(ErrorKind::Io, argv.join(" "), format!("could not be started: {e}"));
                if e.kind() == io::ErrorKind::NotFound {
                    err.with_hint(format!("`{program}` is not installed on this host; install it and run again"))
                } else {
                    err
                }
            })?;
        let child_in = child.stdin.take();
        let mut child_out = child.stdout.take().expect("stdout is piped");
        let mut child_err = child.stderr.take().expect("stderr is piped");
        // Input, output and stderr move at once: a command that writes while it reads
        // (pg_restore's messages, a dump's progress) must never block on a full pipe.
        // The input is fed from this thread (a reader over an archive need not be Send).
        let (fed, stdout, stderr, written) = std::thread::scope(|s| {
            let errs = s.spawn(move || {
                let mut text = Vec::new();
                let _ = child_err.read_to_end(&mut text);
                text
            });
            let outs = s.spawn(move || match stdout_to {
                Some(path) => {
                    // A temp name first: the final name appears only for a command that
                    // succeeded (renamed below).
                    let tmp = temp_path(path);
                    let w = self.write_file(&tmp, &mut child_out, Perms::secret());
                    (Vec::new(), Some(w.map(|_| tmp)))
                }
                None => {
                    let mut out = Vec::new();
                    let _ = child_out.read_to_end(&mut out);
                    (out, None)
                }
            });
            let mut fed = Ok(());
            if let (Some(input), Some(mut pipe)) = (stdin, child_in) {
                match io::copy(input, &mut pipe) {
                    // The command may stop reading early (it is done, or failed): its
                    // status says which.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    Err(e) => fed = Err(e),
                    Ok(_) => {}
                }
                // Dropped here: end of input.
            }
            let (stdout, written) = outs.join().expect("the output reader does not panic");
            (fed, stdout, errs.join().expect("the stderr reader does not panic"), written)
        });
        let status = child.wait().map_err(|e| Error::io(argv.join(" "), e))?;
        let out = CommandOutput {
            status: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        if let Some(written) = written {
            let tmp = written?;
            let path = stdout_to.expect("written only with a path");
            if out.success() {
                self.rename(&tmp, path)?;
            } else {
                self.remove(&tmp)?;
            }
        }
        if out.success() {
            fed.map_err(|e| Error::io(argv.join(" "), e).with_hint("the command's input could not be read"))?;
        }
        Ok(out)
    }

    fn lock(&self, path: &Path) -> Result<HostLock> {
        let host = self.resolve_for_change(path)?;
        self.make_parents(path, &host)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&host)
            .map_err(|e| self.io_err(path, e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                // The holder writes who it is right after it takes the lock: a run
                // refused in that instant reads again before it names it.
                let mut holder = LockHolder::parse("");
                for _ in 0..10 {
                    let mut text = String::new();
                    let _ = file.seek(io::SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
                    holder = LockHolder::parse(&text);
                    if holder.command.is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                return Err(Error::new(
                    ErrorKind::Io,
                    self.shown(path),
                    format!("{holder:#} is working on this site; two runs must not change it at once"),
                )
                .with_hint(
                    "wait for that run to finish, then run the command again (the lock goes with its process)",
                ));
            }
            Err((_, errno)) => return Err(self.io_err(path, io::Error::from(errno))),
        };
        let mut f: &File = &lock;
        let me = LockHolder::this_process().to_string();
        f.set_len(0).and_then(|()| f.write_all(me.as_bytes())).map_err(|e| self.io_err(path, e))?;
        Ok(HostLock { _lock: lock, path: path.to_path_buf() })
    }

    fn lock_holder(&self, path: &Path) -> Result<Option<LockHolder>> {
        let Some(file) = self.open_existing(path)? else { return Ok(None) };
        // A shared lock, taken and dropped at once: granted exactly when no run holds
        // the exclusive one.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => Ok(None),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Ok(Some(LockHolder::parse(&text)))
            }
            Err((_, errno)) => Err(self.io_err(path, io::Error::from(errno))),
        }
    }
}

fn kind_of(t: fs::FileType) -> FileKind {
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// The `log` target of `airlock --verbose`'s lines about the host (airlock-term).
const LOG: &str = "airlock::host";

/// A file written: its path, size and mode; a secret's content is never logged.
fn log_write(path: &Path, bytes: u64, perms: Perms) {
    let secret = if perms.secret { ", secret" } else { "" };
    log::info!(target: LOG, "wrote {} ({bytes} bytes, {:04o}{secret})", path.display(), perms.effective_mode());
}

/// "Not there": missing, or a parent is not a directory (so it cannot exist).
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::ENOTDIR as i32)
}

/// Whether `name` is one `temp_path` makes (`.NAME.airlock-PID-N.tmp`): what a run
/// killed mid-write leaves behind.
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { return false };
    let Some((_, tail)) = rest.rsplit_once(".airlock-") else { return false };
    let Some((pid, n)) = tail.split_once('-') else { return false };
    !pid.is_empty() && !n.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && n.bytes().all(|b| b.is_ascii_digit())
}

/// A fresh name next to `dest`, hidden, unique within this process and across
/// processes (pid), so concurrent writers never share a temp file.
fn temp_path(dest: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.airlock-{}-{n}.tmp", std::process::id()))
}

impl RootedHost {
    /// fsync the directory holding `path`; inside [`Host::durable_together`] only noted,
    /// for the one `syncfs` at its end.
    fn sync_parent(&self, path: &Path) -> io::Result<()> {
        if let Some(dirs) = self.deferred.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_path_buf());
            }
            return Ok(());
        }
        sync_parent(path)
    }

    /// fsync a file written before it is renamed into place; inside
    /// [`Host::durable_together`] its data is synced with the rest at the end (the
    /// `sync_parent` that follows every write notes its filesystem).
    fn sync_file(&self, f: &File) -> io::Result<()> {
        if self.deferred.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(());
        }
        f.sync_all()
    }

    /// One `syncfs(2)` for each filesystem holding one of `dirs` (a directory removed
    /// since counts by its nearest existing ancestor, still on that filesystem unless
    /// a mount point lies in between, which a removal never crosses).
    fn sync_filesystems(&self, dirs: &std::collections::BTreeSet<PathBuf>) -> Result<()> {
        let mut synced = std::collections::BTreeSet::new();
        for dir in dirs {
            let Some(existing) = dir.ancestors().find(|a| a.is_dir()) else { continue };
            let d = File::open(existing).map_err(|e| self.io_err(&self.target_of(existing), e))?;
            let dev = d.metadata().map_err(|e| self.io_err(&self.target_of(existing), e))?.dev();
            if synced.insert(dev) {
                nix::unistd::syncfs(d.as_raw_fd())
                    .map_err(|e| self.io_err(&self.target_of(existing), io::Error::from(e)))?;
            }
        }
        Ok(())
    }
}

/// fsync the directory holding `path`, so a rename or create in it survives a crash.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod temp_name_tests {
    use super::*;

    #[test]
    fn the_names_temp_path_makes_are_recognised_and_nothing_else() {
        let made = temp_path(Path::new("/etc/rancher/k3s/config.yaml"));
        assert!(is_temp_name(&made.file_name().unwrap().to_string_lossy()), "{}", made.display());
        for other in [
            "config.yaml",
            ".config.yaml",
            ".config.yaml.tmp",
            ".x.airlock-1-.tmp",
            ".x.airlock--1.tmp",
            ".x.airlock-a-1.tmp",
            "x.airlock-1-2.tmp",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }
}

#[cfg(test)]
mod durable_together_tests {
    use super::*;

    fn read(host: &RootedHost, p: &str) -> Vec<u8> {
        host.read_file(Path::new(p)).unwrap().unwrap()
    }

    #[test]
    fn changes_in_a_batch_land_atomically_and_their_directories_wait_for_one_sync_at_its_end() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let source = root.path().join("staged");
        fs::write(&source, b"staged bytes").unwrap();
        let real_root = host.root().to_path_buf();
        host.durable_together(&mut || {
            host.write_file(Path::new("/var/lib/x/a"), &mut &b"rendered"[..], Perms::mode(0o644))?;
            host.copy_file(&source, Path::new("/var/lib/x/b"), Perms::mode(0o600))?;
            // Nested: the outer batch syncs it.
            host.durable_together(&mut || {
                host.write_file(Path::new("/etc/y/c"), &mut &b"nested"[..], Perms::mode(0o640)).map(drop)
            })?;
            let noted = host.deferred.lock().unwrap().clone().expect("inside a batch");
            for dir in ["var/lib/x", "etc/y", "var/lib"] {
                assert!(noted.contains(&real_root.join(dir)), "{dir} not noted: {noted:?}");
            }
            Ok(())
        })
        .unwrap();
        assert!(host.deferred.lock().unwrap().is_none(), "after the batch every change is synced again");
        assert_eq!(read(&host, "/var/lib/x/a"), b"rendered");
        assert_eq!(read(&host, "/var/lib/x/b"), b"staged bytes");
        assert_eq!(read(&host, "/etc/y/c"), b"nested");
        assert_eq!(host.metadata(Path::new("/etc/y/c")).unwrap().unwrap().mode, 0o640);
        let names: Vec<String> =
            host.list_dir(Path::new("/var/lib/x")).unwrap().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "b"], "no temporary file is left");
    }

    #[test]
    fn a_failing_batch_returns_its_error_and_leaves_the_host_syncing_each_change() {
        let root = tempfile::tempdir().unwrap();
        let host = RootedHost::new(root.path().to_path_buf(), false).unwrap();
        let err = host
            .durable_together(&mut || {
                host.write_file(Path::new("/a"), &mut &b"x"[..], Perms::mode(0o644))?;
                Err(Error::input("/b", "refused"))
            })
            .unwrap_err();
        assert_eq!(err.cause, "refused");
        assert!(host.deferred.lock().unwrap().is_none());
        assert_eq!(read(&host, "/a"), b"x", "what was written before the failure stays");
    }
}
