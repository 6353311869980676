//! A recording test double for [`Host`] (youki's recording `Syscall`, for a host).
//!
//! Every call is recorded, in order, as a serialisable [`HostCall`], so a test can
//! assert exactly which writes and commands were requested. File work is real: it is
//! delegated to a [`RootedHost`] on a (temporary) root, so tests look at real files.
//! Commands are answered from a script ([`RecordingHost::expect_command`]); a command
//! nobody scripted fails loudly instead of pretending to succeed. In live mode, users
//! and units go through the same `getent`/`useradd`/`systemctl` code a live host runs,
//! so those commands show up in the record too.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use serde::{Deserialize, Serialize};

use super::PlannedUser;
use super::{system, CommandOutput, DirEntry, Host, HostLock, LockHolder, Metadata, Perms, RootedHost};

/// Content larger than this is recorded by length only.
const MAX_RECORDED_CONTENT: usize = 64 * 1024;

/// One call made through a [`RecordingHost`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum HostCall {
    Metadata {
        path: PathBuf,
    },
    OpenFile {
        path: PathBuf,
    },
    ReadFile {
        path: PathBuf,
    },
    ReadLink {
        path: PathBuf,
    },
    ListDir {
        path: PathBuf,
    },
    RealPath {
        path: PathBuf,
    },
    /// `mode` is the mode the file really got; `content` is the text written, absent
    /// for secrets (`note: "secret"`), binary or large content.
    WriteFile {
        path: PathBuf,
        mode: u32,
        len: u64,
        content: Option<String>,
        note: Option<String>,
    },
    CopyFile {
        source: PathBuf,
        path: PathBuf,
        mode: u32,
        len: u64,
        note: Option<String>,
    },
    CreateDir {
        path: PathBuf,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Remove {
        path: PathBuf,
    },
    RemoveDir {
        path: PathBuf,
    },
    RemoveAll {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    ResolveDir {
        path: PathBuf,
        mode: u32,
    },
    UserExists {
        name: String,
    },
    EnsureUser {
        name: String,
        home: PathBuf,
        shell: PathBuf,
    },
    UnitEnabled {
        unit: String,
    },
    EnableUnit {
        unit: String,
    },
    DisableUnit {
        unit: String,
    },
    Run {
        argv: Vec<String>,
    },
    Lock {
        path: PathBuf,
    },
}

impl HostCall {
    /// Whether the call changes the host (as opposed to looking at it).
    pub fn changes_host(&self) -> bool {
        !matches!(
            self,
            HostCall::Metadata { .. }
                | HostCall::OpenFile { .. }
                | HostCall::ReadFile { .. }
                | HostCall::ReadLink { .. }
                | HostCall::ListDir { .. }
                | HostCall::RealPath { .. }
                | HostCall::UserExists { .. }
                | HostCall::UnitEnabled { .. }
        )
    }
}

/// A scripted answer: argv prefix, the output, uses left (`None`: for ever).
type Scripted = (Vec<String>, CommandOutput, Option<usize>);

/// What a scripted command leaves behind, as the real tool would: the binary
/// standard output a [`Host::run_streaming`] caller gets in its file, and files it
/// writes (an etcd snapshot in the directory named on its command line).
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub stdout: Vec<u8>,
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// The recording double; see the module docs.
pub struct RecordingHost {
    files: RootedHost,
    live: bool,
    calls: Mutex<Vec<HostCall>>,
    script: Mutex<Vec<Scripted>>,
    effects: Mutex<Vec<(Vec<String>, Effects)>>,
    /// What each streaming command was given on its standard input, by argv.
    inputs: Mutex<Vec<(Vec<String>, Vec<u8>)>>,
    _temp: Option<tempfile::TempDir>,
}

impl RecordingHost {
    /// A recorder whose files live on a fresh temporary root (removed on drop).
    /// `live` selects live-mode behaviour: commands are answered from the script.
    pub fn new(live: bool) -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("airlock-recording-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let mut host = Self::with_root(temp.path().to_path_buf(), live)?;
        host._temp = Some(temp);
        Ok(host)
    }

    /// A recorder whose files live under an existing `root`.
    pub fn with_root(root: PathBuf, live: bool) -> Result<Self> {
        Ok(Self {
            files: RootedHost::new(root, false)?,
            live,
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(Vec::new()),
            effects: Mutex::new(Vec::new()),
            inputs: Mutex::new(Vec::new()),
            _temp: None,
        })
    }

    /// Answers every command whose argv starts with `argv_prefix` with `output`. The
    /// most recent matching expectation wins; expectations are not used up.
    pub fn expect_command(&self, argv_prefix: &[&str], output: CommandOutput) {
        let prefix = argv_prefix.iter().map(|s| s.to_string()).collect();
        self.script.lock().unwrap_or_else(|p| p.into_inner()).push((prefix, output, None));
    }

    /// As [`RecordingHost::expect_command`], but used up after `times` answers; then
    /// older expectations answer again. Scripts a changing state (a node that becomes
    /// Ready on the third look) by pushing the final answer first.
    pub fn expect_command_times(&self, argv_prefix: &[&str], output: CommandOutput, times: usize) {
        let prefix = argv_prefix.iter().map(|s| s.to_string()).collect();
        self.script.lock().unwrap_or_else(|p| p.into_inner()).push((prefix, output, Some(times)));
    }

    /// As [`RecordingHost::expect_command`], and the command leaves `effects` behind
    /// each time it answers (its binary output, files it writes under the root).
    pub fn expect_command_with(&self, argv_prefix: &[&str], output: CommandOutput, effects: Effects) {
        self.expect_command(argv_prefix, output);
        let prefix = argv_prefix.iter().map(|s| s.to_string()).collect();
        self.effects.lock().unwrap_or_else(|p| p.into_inner()).push((prefix, effects));
    }

    /// What each streaming command read on its standard input, in order.
    pub fn inputs(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn effects_for(&self, argv: &[&str]) -> Effects {
        let effects = self.effects.lock().unwrap_or_else(|p| p.into_inner());
        effects
            .iter()
            .rev()
            .find(|(prefix, _)| prefix.len() <= argv.len() && prefix.iter().zip(argv).all(|(w, g)| w == g))
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<HostCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The calls so far, clearing the record.
    pub fn take_calls(&self) -> Vec<HostCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, call: HostCall) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }
}

/// Counts what passes through and keeps the first bytes, for the record.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    seen: Vec<u8>,
    len: u64,
    keep: bool,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.len += n as u64;
        if self.keep && self.seen.len() <= MAX_RECORDED_CONTENT {
            self.seen.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl Host for RecordingHost {
    fn root(&self) -> &Path {
        self.files.root()
    }

    fn live(&self) -> bool {
        self.live
    }

    fn metadata(&self, path: &Path) -> Result<Option<Metadata>> {
        self.record(HostCall::Metadata { path: path.to_path_buf() });
        self.files.metadata(path)
    }

    fn open_file(&self, path: &Path) -> Result<Option<Box<dyn Read>>> {
        self.record(HostCall::OpenFile { path: path.to_path_buf() });
        self.files.open_file(path)
    }

    fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        self.record(HostCall::ReadFile { path: path.to_path_buf() });
        self.files.read_file(path)
    }

    fn read_link(&self, path: &Path) -> Result<Option<PathBuf>> {
        self.record(HostCall::ReadLink { path: path.to_path_buf() });
        self.files.read_link(path)
    }

    fn list_dir(&self, path: &Path) -> Result<Option<Vec<DirEntry>>> {
        self.record(HostCall::ListDir { path: path.to_path_buf() });
        self.files.list_dir(path)
    }

    fn real_path(&self, path: &Path) -> Result<PathBuf> {
        self.record(HostCall::RealPath { path: path.to_path_buf() });
        self.files.real_path(path)
    }

    fn write_file(&self, path: &Path, content: &mut dyn Read, perms: Perms) -> Result<u64> {
        let mut tee = Tee { inner: content, seen: Vec::new(), len: 0, keep: !perms.secret };
        let result = self.files.write_file(path, &mut tee, perms);
        let (content, note) = if perms.secret {
            (None, Some("secret".to_string()))
        } else if tee.seen.len() > MAX_RECORDED_CONTENT {
            (None, Some("larger than 64 KiB".to_string()))
        } else {
            match String::from_utf8(tee.seen) {
                Ok(text) => (Some(text), None),
                Err(_) => (None, Some("binary".to_string())),
            }
        };
        let mode = perms.effective_mode();
        self.record(HostCall::WriteFile { path: path.to_path_buf(), mode, len: tee.len, content, note });
        result
    }

    fn copy_file(&self, source: &Path, path: &Path, perms: Perms) -> Result<u64> {
        let result = self.files.copy_file(source, path, perms);
        self.record(HostCall::CopyFile {
            source: source.to_path_buf(),
            path: path.to_path_buf(),
            mode: perms.effective_mode(),
            len: *result.as_ref().unwrap_or(&0),
            note: perms.secret.then(|| "secret".to_string()),
        });
        result
    }

    fn durable_together(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        // The calls `work` makes are recorded one by one as always; how they reach
        // the disk is the file system's business, not a host call.
        self.files.durable_together(work)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        self.record(HostCall::CreateDir { path: path.to_path_buf(), mode });
        self.files.create_dir(path, mode)
    }

    fn symlink(&self, path: &Path, target: &Path) -> Result<()> {
        self.record(HostCall::Symlink { path: path.to_path_buf(), target: target.to_path_buf() });
        self.files.symlink(path, target)
    }

    fn remove(&self, path: &Path) -> Result<()> {
        self.record(HostCall::Remove { path: path.to_path_buf() });
        self.files.remove(path)
    }

    fn remove_dir(&self, path: &Path) -> Result<bool> {
        self.record(HostCall::RemoveDir { path: path.to_path_buf() });
        self.files.remove_dir(path)
    }

    fn remove_all(&self, path: &Path) -> Result<()> {
        self.record(HostCall::RemoveAll { path: path.to_path_buf() });
        self.files.remove_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.record(HostCall::Rename { from: from.to_path_buf(), to: to.to_path_buf() });
        self.files.rename(from, to)
    }

    fn resolve_dir(&self, path: &Path, mode: u32) -> Result<PathBuf> {
        self.record(HostCall::ResolveDir { path: path.to_path_buf(), mode });
        self.files.resolve_dir(path, mode)
    }

    fn user_exists(&self, name: &str) -> Result<bool> {
        self.record(HostCall::UserExists { name: name.to_string() });
        if self.live {
            system::live_user_exists(self, name)
        } else {
            self.files.user_exists(name)
        }
    }

    fn ensure_user(&self, user: &PlannedUser) -> Result<bool> {
        self.record(HostCall::EnsureUser {
            name: user.name.clone(),
            home: user.home.clone(),
            shell: user.shell.clone(),
        });
        if self.live {
            system::live_ensure_user(self, user)
        } else {
            self.files.ensure_user(user)
        }
    }

    fn unit_enabled(&self, unit: &str) -> Result<bool> {
        self.record(HostCall::UnitEnabled { unit: unit.to_string() });
        if self.live {
            system::live_unit_enabled(self, unit)
        } else {
            self.files.unit_enabled(unit)
        }
    }

    fn enable_unit(&self, unit: &str) -> Result<()> {
        self.record(HostCall::EnableUnit { unit: unit.to_string() });
        if self.live {
            system::live_enable_unit(self, unit)
        } else {
            self.files.enable_unit(unit)
        }
    }

    fn disable_unit(&self, unit: &str) -> Result<()> {
        self.record(HostCall::DisableUnit { unit: unit.to_string() });
        if self.live {
            system::live_disable_unit(self, unit)
        } else {
            self.files.disable_unit(unit)
        }
    }

    fn run(&self, argv: &[&str]) -> Result<CommandOutput> {
        self.record(HostCall::Run { argv: argv.iter().map(|s| s.to_string()).collect() });
        if !self.live {
            return Err(super::not_started_under_root(argv, self.root()));
        }
        let mut script = self.script.lock().unwrap_or_else(|p| p.into_inner());
        let answer = script.iter_mut().rev().find(|(prefix, _, left)| {
            *left != Some(0) && prefix.len() <= argv.len() && prefix.iter().zip(argv).all(|(want, got)| want == got)
        });
        match answer {
            Some((_, output, left)) => {
                if let Some(n) = left {
                    *n -= 1;
                }
                let output = output.clone();
                drop(script);
                if output.success() {
                    for (path, content) in &self.effects_for(argv).files {
                        self.files.write_file(path, &mut content.as_slice(), Perms::secret())?;
                    }
                }
                Ok(output)
            }
            None => Err(Error::input(argv.join(" "), "the recording host has no scripted result for this command")
                .with_hint("script it with RecordingHost::expect_command(argv_prefix, output)")),
        }
    }

    fn run_streaming(
        &self,
        argv: &[&str],
        stdin: Option<&mut dyn Read>,
        stdout_to: Option<&Path>,
    ) -> Result<CommandOutput> {
        let out = self.run(argv)?;
        if let Some(input) = stdin {
            let mut seen = Vec::new();
            input.read_to_end(&mut seen).map_err(|e| Error::io(argv.join(" "), e))?;
            self.inputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((argv.iter().map(|a| a.to_string()).collect(), seen));
        }
        if !out.success() {
            return Ok(out);
        }
        // `run` left the files behind already; the binary output goes where asked.
        if let Some(path) = stdout_to {
            self.files.write_file(path, &mut self.effects_for(argv).stdout.as_slice(), Perms::secret())?;
        }
        Ok(out)
    }

    fn lock(&self, path: &Path) -> Result<HostLock> {
        self.record(HostCall::Lock { path: path.to_path_buf() });
        self.files.lock(path)
    }

    fn lock_holder(&self, path: &Path) -> Result<Option<LockHolder>> {
        self.files.lock_holder(path)
    }
}
