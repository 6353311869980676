//! The transfer to a node: the bundle's files, the installer and the keys into its
//! incoming directory, and the bundle verified there.
//!
//! What it costs per node, on the first server's cores as much as on the node's: the
//! SSH cipher on both ends, writing the file, and `airlock verify` reading it once.
//! Nothing more:
//!
//! - A bundle part is checked on the node by its size only when it arrives, not hashed
//!   again by `sha256sum` (a second full read at a third of the speed of the
//!   installer's own hashing): the SSH channel's MAC guarantees the bytes that came
//!   through it, and the node's `airlock verify` that follows checks every entry of the
//!   stream against the signed manifest. Bytes that did not come through this run's
//!   channel (a part left complete by an earlier run, or the start of a part whose
//!   transfer was cut) are hashed by that verify as well (`--check-parts`, against the
//!   signed checksum list); a part found damaged is sent again whole.
//! - A part whose transfer was cut (the link dropped, the run stopped) resumes from the
//!   bytes already on the node: nothing is sent twice.
//! - The installer goes gzip-compressed where the node has `gzip`, compressed once for
//!   every node (see [`INSTALLER_GZIP`]).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use airlock_format::error::{Error, Result};
use airlock_format::report::{Event, Reporter};

use super::{failed, prologue, sh_quote, ssh_error, tail, ClusterRun, NodeResult, INCOMING_DIR};
use crate::host::ssh::SshTarget;
use crate::site::answers::SiteNode;

/// Test-only fault injection, `NODE:BYTES[,NODE:BYTES..]`: a bundle part sent whole to NODE
/// stops after BYTES, as a stand-in for a link that drops mid-transfer (the node keeps
/// what arrived, as it does when the connection really drops).
pub const CUT_TRANSFER_ENV: &str = "AIRLOCK_TEST_CLUSTER_CUT_TRANSFER";

/// The line a node prints when it has `gzip`.
const GUNZIP_MARK: &str = "airlock-gunzip: yes";

/// How the installer binary is compressed on its way to a node. The installer is also
/// inside the bundle the node gets, but taking it out of there needs a zstd decoder
/// (and `tar`), which a node that has nothing but sshd cannot be assumed to have; the
/// installer itself is what would decode it. So it is sent beside the bundle, verified
/// here first (it comes from the verified bundle) and checked by its SHA-256 on the
/// node, and, where the node has `gzip` (part of every Linux base system; without it
/// it goes as it is), compressed: that sends it at about a third of its size, so the
/// bytes per node stay within 1 % over the bundle's own. Level 6: higher levels cost
/// seconds of one core for a few per cent.
const INSTALLER_GZIP: flate2::Compression = flate2::Compression::new(6);

/// What a file sent to the nodes is, which decides how it is checked there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A bundle file or part: checked by size on arrival, by the node's `airlock
    /// verify` against the signed manifest and checksum list; resumable.
    Part,
    /// A sidecar or key: small, checked by its SHA-256.
    Small,
    /// The installer binary: checked by its SHA-256, sent compressed.
    Installer,
}

/// One file that goes to every node: where it is here, its name there, its digest.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub local: PathBuf,
    pub name: String,
    pub size: u64,
    /// Checked on the node by `sha256sum`; none for a part (see the module's text).
    pub sha256: Option<String>,
    pub kind: Kind,
    /// The installer gzip-compressed: made once, shared by every node's thread.
    packed: Arc<OnceLock<std::result::Result<Vec<u8>, String>>>,
}

impl Outgoing {
    pub fn new(local: &Path, name: String, kind: Kind) -> Result<Self> {
        let (size, sha256) = if kind == Kind::Part {
            (std::fs::metadata(local).map_err(|e| Error::io(local, e))?.len(), None)
        } else {
            let (d, size) = airlock_format::digest::sha256_file(local).map_err(|e| Error::io(local, e))?;
            (size, Some(d.hex()))
        };
        Ok(Self { local: local.to_path_buf(), name, size, sha256, kind, packed: Arc::default() })
    }

    /// The installer binary, as `airlock` on the node.
    pub fn installer(local: &Path) -> Result<Self> {
        Self::new(local, "airlock".into(), Kind::Installer)
    }

    fn packed(&self) -> Result<&[u8]> {
        let packed = self.packed.get_or_init(|| {
            let file = std::fs::File::open(&self.local).map_err(|e| e.to_string())?;
            let mut gz = flate2::read::GzEncoder::new(std::io::BufReader::new(file), INSTALLER_GZIP);
            let mut out = Vec::new();
            gz.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        });
        packed.as_deref().map_err(|e| {
            Error::input(self.local.display().to_string(), format!("cannot be read: {e}"))
                .with_hint("the installer comes from the verified bundle's staging: run the command again")
        })
    }
}

/// What a node's incoming directory holds, as far as a run needs to know.
struct Incoming {
    /// The names of the files there complete: the right size, and the right digest
    /// where [`Outgoing::sha256`] has one.
    have: Vec<String>,
    /// Bytes of a part's `.NAME.partial` left by a transfer that was cut.
    partial: HashMap<String, u64>,
    /// The node has `gzip`.
    gunzip: bool,
}

impl ClusterRun<'_> {
    /// Sends what of `files` is not on the node yet, then checks on the node that
    /// everything arrived.
    pub(super) fn send_missing(
        &self,
        n: &SiteNode,
        t: &SshTarget,
        files: &[Outgoing],
        sent: &mut u64,
        ids: &AtomicU64,
        reporter: &dyn Reporter,
    ) -> std::result::Result<(), NodeResult> {
        self.send_files(n, t, files, sent, ids, reporter).map(drop)
    }

    /// [`Self::send_missing`]; true when a bundle part on the node holds bytes that did
    /// not come through this run's channel (kept from an earlier run, or resumed), which
    /// the verify must then hash against the signed checksum list.
    fn send_files(
        &self,
        n: &SiteNode,
        t: &SshTarget,
        files: &[Outgoing],
        sent: &mut u64,
        ids: &AtomicU64,
        reporter: &dyn Reporter,
    ) -> std::result::Result<bool, NodeResult> {
        let there = self.present(t, files).map_err(|e| failed("connect", e))?;
        let mut unchecked = false;
        for f in files {
            if there.have.contains(&f.name) {
                unchecked |= f.kind == Kind::Part;
                continue;
            }
            let offset = match there.partial.get(&f.name) {
                Some(&b) if f.kind == Kind::Part && b < f.size => b,
                _ => 0,
            };
            unchecked |= offset > 0;
            self.send_one(n, t, f, offset, there.gunzip, sent, ids, reporter).map_err(|e| failed("send", e))?;
        }
        // Everything arrived whole: sizes (and the small files' digests) again, there.
        let have = self.present(t, files).map_err(|e| failed("send", e))?.have;
        if let Some(f) = files.iter().find(|f| !have.contains(&f.name)) {
            return Err(failed(
                "send",
                Error::corrupt(f.name.clone(), "differs on the node from what was sent")
                    .with_hint("run the command again: what is intact is not sent again"),
            ));
        }
        Ok(unchecked)
    }

    /// Sends the bundle to the node and verifies it there.
    pub(super) fn send_and_verify(
        &self,
        n: &SiteNode,
        t: &SshTarget,
        files: &[Outgoing],
        sent: &mut u64,
        ids: &AtomicU64,
        reporter: &dyn Reporter,
    ) -> std::result::Result<(), NodeResult> {
        let mut check_parts = self.send_files(n, t, files, sent, ids, reporter)?;
        let mut resent = false;
        loop {
            let script = format!(
                "{}cd \"$D\" && ./airlock verify {} {}{}",
                prologue(),
                self.remote_bundle(),
                self.pubkey_args(),
                if check_parts { " --check-parts" } else { "" }
            );
            let out = self.remote.exec(t, &script, &mut std::io::empty()).map_err(|e| failed("verify", e))?;
            if out.status == 255 {
                return Err(failed("verify", ssh_error(t, &out.stderr)));
            }
            if out.status == 0 {
                return Ok(());
            }
            // A failed verify hashes every part against the signed checksum list and
            // names the ones that differ: bytes kept from before (or damaged on the
            // node's disk) that are sent again whole, once.
            let damaged: Vec<&Outgoing> =
                files.iter().filter(|f| f.kind == Kind::Part && mismatched(&out.stdout).contains(&f.name)).collect();
            if resent || damaged.is_empty() {
                return Err(NodeResult::Failed {
                    step: "verify".into(),
                    cause: format!("`airlock verify` on the node exited with {}", out.status),
                    hint: tail(&format!("{}{}", out.stdout, out.stderr), 15),
                });
            }
            for f in damaged {
                self.send_one(n, t, f, 0, false, sent, ids, reporter).map_err(|e| failed("send", e))?;
            }
            (resent, check_parts) = (true, true);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_one(
        &self,
        n: &SiteNode,
        t: &SshTarget,
        f: &Outgoing,
        offset: u64,
        gunzip: bool,
        sent: &mut u64,
        ids: &AtomicU64,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let gzip = gunzip && f.kind == Kind::Installer;
        let total = if gzip { f.packed()?.len() as u64 } else { f.size - offset };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}: {}", n.name, f.name);
        reporter.event(Event::TransferStart { id, name: &label, total: Some(total) });
        let r = self.send(t, f, offset, gzip, sent, id, reporter);
        reporter.event(Event::TransferDone { id });
        r
    }

    /// The names of `files` already on the node (see [`Incoming`]), what is left of
    /// cut transfers, and whether the node can unpack a gzip stream.
    fn present(&self, t: &SshTarget, files: &[Outgoing]) -> Result<Incoming> {
        // The first thing written on a node: a symbolic link at the incoming directory
        // or its parent would take every file sent (and the removal after a success)
        // somewhere else, possibly outside the node's target root. Refused, not followed.
        let mut script = format!(
            "{}for p in \"$R/var/lib/airlock\" \"$D\"; do if [ -L \"$p\" ]; then \
             echo \"$p is a symbolic link: refusing to write through it\" >&2; exit 3; fi; done\n\
             mkdir -p \"$D\" && cd \"$D\" || exit 1\ncommand -v gzip >/dev/null 2>&1 && echo {GUNZIP_MARK}\n",
            prologue()
        );
        for (i, f) in files.iter().enumerate() {
            let q = sh_quote(&f.name);
            // Size first: a partial or stale file is not hashed at all.
            let complete = format!("[ -f {q} ] && [ \"$(wc -c < {q})\" -eq {} ]", f.size);
            match f.sha256 {
                Some(_) => script.push_str(&format!("{complete} && sha256sum -- {q}\n")),
                None => script.push_str(&format!("{complete} && echo \"sized {i}\"\n")),
            }
            if f.kind == Kind::Part {
                let p = sh_quote(&partial_name(f));
                script.push_str(&format!("[ -f {p} ] && echo \"partial {i} $(wc -c < {p})\"\n"));
            }
        }
        script.push_str("true\n");
        let out = self.remote.exec(t, &script, &mut std::io::empty())?;
        if out.status == 255 {
            return Err(ssh_error(t, &out.stderr));
        }
        let out = out.checked(&["ssh", &t.address, "(check incoming files)"])?;
        let mut there = Incoming { have: Vec::new(), partial: HashMap::new(), gunzip: false };
        for line in out.stdout.lines() {
            let mut words = line.split_whitespace();
            let (first, second, third) = (words.next(), words.next(), words.next());
            let file = |w: Option<&str>| w.and_then(|i| i.parse::<usize>().ok()).and_then(|i| files.get(i));
            match first {
                Some("sized") => there.have.extend(file(second).map(|f| f.name.clone())),
                Some("partial") => {
                    if let (Some(f), Some(b)) = (file(second), third.and_then(|b| b.parse().ok())) {
                        there.partial.insert(f.name.clone(), b);
                    }
                }
                _ if line == GUNZIP_MARK => there.gunzip = true,
                _ => {
                    let hit = files.iter().find(|f| {
                        f.sha256.as_deref().is_some_and(|d| line.split_once("  ") == Some((d, f.name.as_str())))
                    });
                    there.have.extend(hit.map(|f| f.name.clone()));
                }
            }
        }
        Ok(there)
    }

    /// Sends one file into the node's incoming directory, from `offset` on (appended to
    /// the partial file, which holds exactly that many bytes), into a partial file
    /// renamed once it has the whole size. `gzip`: the file goes gzip-compressed and the
    /// node's `gzip` unpacks it (see [`INSTALLER_GZIP`]); what lands is checked by its
    /// SHA-256 all the same.
    /// `sent` counts the bytes that went, also when the transfer fails.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        t: &SshTarget,
        f: &Outgoing,
        offset: u64,
        gzip: bool,
        sent: &mut u64,
        id: u64,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let q = sh_quote(&f.name);
        let partial = sh_quote(&partial_name(f));
        let mode = if f.kind == Kind::Installer { "755" } else { "644" };
        let size = f.size;
        let receive = match (gzip, offset) {
            (true, _) => format!("gzip -dc > {partial} || exit 1"),
            (false, 0) => format!("cat > {partial} || exit 1"),
            // The bytes there must be the ones measured: appended to, not rewritten.
            (false, _) => format!(
                "[ \"$(wc -c < {partial})\" -eq {offset} ] || {{ echo \"{name}: the partial file changed while resuming\" >&2; exit 5; }}\n\
                 cat >> {partial} || exit 1",
                name = f.name
            ),
        };
        // A cut link ends `cat` as if the file were complete: the size tells.
        let script = format!(
            "{}cd \"$D\" || exit 1\n{receive}\nn=$(wc -c < {partial})\n\
             [ \"$n\" -eq {size} ] || {{ echo \"received $n of {size} bytes\" >&2; exit 4; }}\n\
             chmod {mode} {partial} && mv -f {partial} {q}",
            prologue()
        );
        let (out, bytes) = if gzip {
            let mut c = Counting { inner: f.packed()?, id, reporter, bytes: 0 };
            (self.remote.exec(t, &script, &mut c), c.bytes)
        } else {
            let mut file = std::fs::File::open(&f.local).map_err(|e| Error::io(&f.local, e))?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&f.local, e))?;
            let limit = match cut_at(&t.name) {
                Some(b) if f.kind == Kind::Part && offset == 0 => b,
                _ => u64::MAX,
            };
            let mut c = Counting { inner: file.take(limit), id, reporter, bytes: 0 };
            (self.remote.exec(t, &script, &mut c), c.bytes)
        };
        *sent += bytes;
        let out = out?;
        if out.status == 255 {
            return Err(ssh_error(t, &out.stderr));
        }
        if out.status == 4 {
            return Err(Error::io(
                format!("{} on node {}", f.name, t.name),
                std::io::Error::other(format!("the transfer ended early: {}", out.stderr.trim())),
            )
            .with_hint(
                "check the link to the node and run the command again: the transfer resumes from the bytes that \
                 arrived, which are trusted only once the whole part matches the signed checksum list",
            ));
        }
        out.checked(&["ssh", &t.address, "(receive file)"])
            .map_err(|e| e.with_hint(format!("{}: is the disk under {INCOMING_DIR} full?", f.name)))?;
        Ok(())
    }
}

/// Where a file grows on the node until it is complete.
fn partial_name(f: &Outgoing) -> String {
    format!(".{}.partial", f.name)
}

/// The file names `airlock verify` lists as not matching the signed checksum list.
fn mismatched(verify_stdout: &str) -> Vec<String> {
    verify_stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("mismatch "))
        .filter_map(|rest| rest.trim_start().rsplit_once(" (").map(|(path, _)| path))
        .filter_map(|path| Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// The byte at which [`CUT_TRANSFER_ENV`] cuts the transfer to `node`, if it names it.
fn cut_at(node: &str) -> Option<u64> {
    let v = std::env::var(CUT_TRANSFER_ENV).ok()?;
    v.split(',').filter_map(|e| e.split_once(':')).find(|(name, _)| *name == node)?.1.parse().ok()
}

/// Counts what is read through it, for the report and the progress bars.
struct Counting<'a, R> {
    inner: R,
    id: u64,
    reporter: &'a dyn Reporter,
    bytes: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.reporter.event(Event::TransferProgress { id: self.id, bytes: n as u64 });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_output_names_the_parts_that_do_not_match_the_checksum_list() {
        let out = "checksum list: signed\n  mismatch    ./b.airlock.part001 (10 bytes)\n  ok          ./b.airlock.part002 (4 bytes)\n";
        assert_eq!(mismatched(out), ["b.airlock.part001"]);
        assert!(mismatched("  not-checked demo.airlock (10 bytes)\n").is_empty());
    }
}
