//! What an install lays down on the target, as data.
//!
//! Renderers (the distribution, PKI, charts) describe files, links, directories and
//! units; the engine turns them into steps that check and apply them through the host
//! seam. Keeping this plain data is what lets `--dry-run` print exactly what a real run
//! would do, and lets tests compare a plan against golden files.

use std::path::PathBuf;

use serde::Serialize;

/// Where a step belongs when an upgrade replaces a running release, in this order:
/// what the rest needs in place first (directories, the PKI, generated secrets), the
/// images (imported before the new binary starts), the distribution itself, the charts
/// it deploys, and last the records that say what is installed. The renderer that adds
/// a file knows which it is; nothing guesses it from a path later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepGroup {
    Secrets,
    Images,
    #[default]
    Distribution,
    Charts,
    Records,
}

/// Where a file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileSource {
    /// Rendered content (configs, units, manifests).
    Inline(#[serde(skip)] Vec<u8>),
    /// A verified file in the staging directory, by its bundle entry path
    /// (`distribution/k3s`), copied when applied.
    Staged(String),
}

/// One file on the target. `path` is absolute as seen on the target host
/// (`/etc/rancher/k3s/config.yaml`); the host seam maps it under `--root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub source: FileSource,
    /// Holds a secret (token, key, password): written 0600 whatever `mode` says, and
    /// its content never appears in plans, logs or reports.
    pub secret: bool,
    /// Where an upgrade applies it ([`StepGroup`]); not part of the plan's output.
    #[serde(skip)]
    pub group: StepGroup,
}

/// A symbolic link on the target (`/usr/local/bin/kubectl -> k3s`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedLink {
    pub link: PathBuf,
    pub target: PathBuf,
    /// A convenience link to a tool (`kubectl`, `crictl`, `ctr`): as K3s' `install.sh`
    /// does, it is not created when the name already exists there or elsewhere on the
    /// standard `PATH` (the operator's own kubectl stays the one that runs).
    pub skip_if_on_path: bool,
}

/// A directory on the target that must exist with this mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedDir {
    pub path: PathBuf,
    pub mode: u32,
}

/// A command run on the running system once the files are in place (never under a
/// target root): `restorecon`, `fagenrules`. Idempotent, so a resumed run may run it
/// again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedCommand {
    /// Stable and unique in the layout (`restorecon`), part of the step id.
    pub name: String,
    /// For the plan: what it does and why.
    pub describe: String,
    /// Looks without changing anything: exit 0 with no output means nothing to do
    /// (`restorecon -n -v`). `None`: always run.
    pub check: Option<Vec<String>>,
    /// Run in order, each must succeed.
    pub run: Vec<Vec<String>>,
}

/// Users are created by the host seam itself, so their type lives there.
pub use crate::host::PlannedUser;

/// Everything one component wants on the target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub dirs: Vec<PlannedDir>,
    pub files: Vec<PlannedFile>,
    pub links: Vec<PlannedLink>,
    /// systemd units to enable (`k3s.service`); enabling under `--root` is a symlink
    /// in `multi-user.target.wants`, in live mode `systemctl enable`.
    pub units: Vec<String>,
    pub users: Vec<PlannedUser>,
    /// Commands for the running system, after files and links, before units.
    pub commands: Vec<PlannedCommand>,
}

impl Layout {
    pub fn file(&mut self, path: impl Into<PathBuf>, mode: u32, content: impl Into<Vec<u8>>) {
        self.files.push(PlannedFile {
            path: path.into(),
            mode,
            source: FileSource::Inline(content.into()),
            secret: false,
            group: StepGroup::default(),
        });
    }
    pub fn secret_file(&mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) {
        self.files.push(PlannedFile {
            path: path.into(),
            mode: 0o600,
            source: FileSource::Inline(content.into()),
            secret: true,
            group: StepGroup::default(),
        });
    }
    pub fn staged(&mut self, path: impl Into<PathBuf>, mode: u32, entry: impl Into<String>) {
        self.files.push(PlannedFile {
            path: path.into(),
            mode,
            source: FileSource::Staged(entry.into()),
            secret: false,
            group: StepGroup::default(),
        });
    }
    pub fn link(&mut self, link: impl Into<PathBuf>, target: impl Into<PathBuf>) {
        self.links.push(PlannedLink { link: link.into(), target: target.into(), skip_if_on_path: false });
    }
    /// A tool link, skipped when the name is already on `PATH` ([`PlannedLink::skip_if_on_path`]).
    pub fn tool_link(&mut self, link: impl Into<PathBuf>, target: impl Into<PathBuf>) {
        self.links.push(PlannedLink { link: link.into(), target: target.into(), skip_if_on_path: true });
    }
    pub fn dir(&mut self, path: impl Into<PathBuf>, mode: u32) {
        self.dirs.push(PlannedDir { path: path.into(), mode });
    }
    /// Appends another layout.
    /// Runs `add` and puts every file it adds into `group`.
    pub fn in_group<R>(&mut self, group: StepGroup, add: impl FnOnce(&mut Layout) -> R) -> R {
        let first = self.files.len();
        let r = add(self);
        for f in &mut self.files[first..] {
            f.group = group;
        }
        r
    }

    /// This layout with every file in `group`.
    pub fn grouped(mut self, group: StepGroup) -> Self {
        for f in &mut self.files {
            f.group = group;
        }
        self
    }

    pub fn extend(&mut self, other: Layout) {
        self.dirs.extend(other.dirs);
        self.files.extend(other.files);
        self.links.extend(other.links);
        self.units.extend(other.units);
        self.users.extend(other.users);
        self.commands.extend(other.commands);
    }
}
