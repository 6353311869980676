//! The way to the other nodes of a cluster: the system's OpenSSH client.
//!
//! `ssh` itself, not a library, so what the operator set up for it works unchanged:
//! `~/.ssh/config` (or `--ssh-config`), the agent, `ProxyJump` bastions and
//! `known_hosts`. Every run is non-interactive (`BatchMode=yes`: a missing key or an
//! unknown host fails instead of prompting) and checks host keys strictly
//! (`StrictHostKeyChecking=yes`) unless the operator asked to accept new ones
//! (`accept-new`: a *changed* key is still refused).
//!
//! The remote side gets one `sh` script as the command; anything secret (the join
//! token, answers holding passwords) travels on the channel's stdin, never in the
//! command line, which `ps` on either end shows and this module's callers journal.
//!
//! [`Remote`] is the seam: [`SystemSsh`] runs the real client; a test can put a double
//! in its place. Like [`super::Host::run`] it is the only place a process is started
//! for it.

// This module is the seam that starts the ssh client, as `rooted.rs` is for commands.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use airlock_format::error::{Error, Result};
use serde::Serialize;

use super::CommandOutput;

/// How to reach one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SshTarget {
    /// The node's name, for messages.
    pub name: String,
    /// What `ssh` connects to (an IP, a name, or a `Host` alias of the ssh config).
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
}

/// Options for every connection of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SshOptions {
    /// `StrictHostKeyChecking=accept-new` instead of `yes` (journaled by the caller).
    pub accept_new_host_keys: bool,
    /// An ssh config file instead of `~/.ssh/config` (`ssh -F`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Seconds to wait for the TCP connection (`ConnectTimeout`); 0: 10.
    pub connect_timeout: u32,
}

/// Runs a shell script on a node, feeding `stdin` to it.
pub trait Remote: Sync {
    fn exec(&self, target: &SshTarget, script: &str, stdin: &mut (dyn Read + Send)) -> Result<CommandOutput>;
}

/// The system's `ssh` client, found on `PATH`.
pub struct SystemSsh {
    pub options: SshOptions,
}

impl SystemSsh {
    /// The command line for `script` on `target`: options, then `--`, the address and
    /// the script as one word (ssh hands it to the remote user's shell). The address
    /// and every option value were refused by the answers' validators if they began
    /// with `-`; `--` keeps ssh from reading the address as an option anyway.
    pub fn argv(&self, target: &SshTarget, script: &str) -> Vec<String> {
        let o = &self.options;
        let mut a: Vec<String> = vec!["ssh".into()];
        if let Some(f) = &o.config_file {
            a.extend(["-F".into(), f.display().to_string()]);
        }
        let strict = if o.accept_new_host_keys { "accept-new" } else { "yes" };
        let timeout = if o.connect_timeout == 0 { 10 } else { o.connect_timeout };
        for opt in [
            "BatchMode=yes".to_string(),
            format!("StrictHostKeyChecking={strict}"),
            format!("ConnectTimeout={timeout}"),
            // A dead link ends the run instead of hanging it: 3 missed probes 10 s apart.
            "ServerAliveInterval=10".to_string(),
            "ServerAliveCountMax=3".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            a.extend(["-o".into(), opt]);
        }
        if let Some(u) = &target.user {
            a.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = target.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(i) = &target.identity_file {
            a.extend(["-i".into(), i.display().to_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        if let Some(j) = &target.jump {
            a.extend(["-J".into(), j.clone()]);
        }
        a.extend(["-T".into(), "--".into(), target.address.clone(), script.to_string()]);
        a
    }
}

/// The ciphers asked for when the operator's ssh configuration chooses none: AES-GCM
/// first. OpenSSH's own first choice, ChaCha20-Poly1305, costs both ends of a bundle
/// transfer about twice the CPU of AES-GCM on a CPU with AES instructions (measured
/// over loopback: 5.8 against 3.2 s of CPU per GiB, client and server together), and
/// the cluster run sends the bundle to every node at once. `^` puts them at the head of
/// the client's default list, so a server without them still gets what it offers.
const PREFERRED_CIPHERS: &str = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com";

/// Per ssh command line (without the script): the `-o Ciphers=` to add, if any.
static CIPHER_CHOICE: std::sync::Mutex<Vec<(Vec<String>, Option<String>)>> = std::sync::Mutex::new(Vec::new());

impl SystemSsh {
    /// `Ciphers=...` when the configuration ssh reads for `target` (`-F`, or
    /// `~/.ssh/config` and `/etc/ssh/ssh_config`) sets no `Ciphers` of its own: what
    /// `ssh -G` resolves for it equals the client's built-in default. Whatever the
    /// operator chose is left alone, and so is a client too old for `^` lists.
    fn cipher_option(&self, target: &SshTarget) -> Option<String> {
        let mut base = self.argv(target, "");
        base.pop();
        let mut known = CIPHER_CHOICE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, choice)) = known.iter().find(|(k, _)| *k == base) {
            return choice.clone();
        }
        let resolved = |extra: &[&str], argv: &[String]| -> Option<String> {
            let out = Command::new(&argv[0])
                .arg("-G")
                .args(extra)
                .args(&argv[1..])
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().find_map(|l| l.strip_prefix("ciphers ")).map(str::to_string)
        };
        let bare: Vec<String> =
            vec!["ssh".into(), "-F".into(), "/dev/null".into(), "--".into(), target.address.clone()];
        let wanted = format!("Ciphers={PREFERRED_CIPHERS}");
        let choice = match (resolved(&[], &base), resolved(&[], &bare), resolved(&["-o", &wanted], &bare)) {
            (Some(theirs), Some(default), Some(_)) if theirs == default => Some(wanted),
            _ => None,
        };
        known.push((base, choice.clone()));
        choice
    }
}

impl Remote for SystemSsh {
    fn exec(&self, target: &SshTarget, script: &str, stdin: &mut (dyn Read + Send)) -> Result<CommandOutput> {
        let mut argv = self.argv(target, script);
        if let Some(c) = self.cipher_option(target) {
            // Before the others: for ssh the first value given for an option counts.
            argv.splice(1..1, ["-o".to_string(), c]);
        }
        let shown = format!("ssh {}", target.address);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(&shown, e).with_hint("install the OpenSSH client (Debian: openssh-client) on this node")
            })?;
        // stdin on a thread of its own: a remote side that writes much before it
        // reads (or fails early) must not deadlock against a full pipe.
        let mut sink = child.stdin.take().expect("stdin is piped");
        let out = std::thread::scope(|s| {
            let feeder = s.spawn(move || -> std::io::Result<u64> {
                let n = std::io::copy(stdin, &mut sink)?;
                sink.flush()?;
                drop(sink);
                Ok(n)
            });
            let out = child.wait_with_output();
            // A broken pipe means the remote side ended early: its exit status says why.
            let _ = feeder.join();
            out
        })
        .map_err(|e| Error::io(&shown, e))?;
        Ok(CommandOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Why ssh itself failed (exit status 255), in the operator's words, with the fix.
pub fn ssh_failure(stderr: &str) -> (&'static str, &'static str) {
    let s = stderr.to_ascii_lowercase();
    if s.contains("host key verification failed") || s.contains("remote host identification has changed") {
        (
            "host key not trusted",
            "check the node's host key (ssh-keyscan on the node's console) and add it to known_hosts; \
             for a node never connected before, --accept-new-host-keys accepts its key (journaled)",
        )
    } else if s.contains("permission denied") || s.contains("too many authentication failures") {
        (
            "SSH authentication refused",
            "check nodes[].ssh_user and the key (nodes[].ssh_identity_file or the agent): `ssh NODE true` must work without a prompt",
        )
    } else if s.contains("could not resolve hostname") {
        ("address not resolved", "check nodes[].address, or add the node to /etc/hosts or the ssh config")
    } else if s.contains("connection refused") {
        ("SSH connection refused", "start sshd on the node, or set nodes[].ssh_port")
    } else {
        ("node unreachable", "check the node is up and reachable from this one (`ssh NODE true`)")
    }
}

/// `s` as one word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            name: "s2".into(),
            address: "s2.site.example".into(),
            user: Some("admin".into()),
            port: Some(2222),
            identity_file: Some("/root/.ssh/site".into()),
            jump: Some("ops@bastion".into()),
        }
    }

    #[test]
    fn ssh_runs_in_batch_mode_with_strict_host_keys_and_the_address_after_a_double_dash() {
        let ssh = SystemSsh { options: SshOptions::default() };
        let a = ssh.argv(&target(), "true");
        let joined = a.join(" ");
        assert!(joined.contains("-o BatchMode=yes -o StrictHostKeyChecking=yes"), "{joined}");
        assert!(joined.contains("-l admin -p 2222 -i /root/.ssh/site -o IdentitiesOnly=yes -J ops@bastion"));
        assert_eq!(&a[a.len() - 3..], ["--", "s2.site.example", "true"]);
        let accept = SystemSsh { options: SshOptions { accept_new_host_keys: true, ..SshOptions::default() } };
        assert!(accept.argv(&target(), "true").contains(&"StrictHostKeyChecking=accept-new".to_string()));
    }

    /// Needs the OpenSSH client; `ssh -G` only resolves the configuration, it connects
    /// nowhere.
    #[test]
    #[allow(clippy::disallowed_methods)] // config files of the test's own, outside any root
    fn aes_gcm_is_preferred_only_when_the_ssh_config_chooses_no_ciphers() {
        if Command::new("ssh").arg("-V").output().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let chosen = dir.path().join("chosen");
        std::fs::write(&plain, "Host *\n  User root\n").unwrap();
        std::fs::write(&chosen, "Host s2.site.example\n  Ciphers chacha20-poly1305@openssh.com\n").unwrap();
        let t = SshTarget { port: None, identity_file: None, jump: None, ..target() };
        let with = |config: &std::path::Path| SystemSsh {
            options: SshOptions { config_file: Some(config.to_path_buf()), ..SshOptions::default() },
        };
        assert_eq!(with(&plain).cipher_option(&t).as_deref(), Some(&*format!("Ciphers={PREFERRED_CIPHERS}")));
        assert_eq!(with(&chosen).cipher_option(&t), None, "the operator's Ciphers was overridden");
    }

    #[test]
    fn ssh_failures_are_told_apart_by_what_ssh_printed() {
        assert_eq!(ssh_failure("Host key verification failed.\r\n").0, "host key not trusted");
        assert_eq!(ssh_failure("root@10.0.0.2: Permission denied (publickey).").0, "SSH authentication refused");
        assert_eq!(
            ssh_failure("ssh: connect to host 10.0.0.2 port 22: Connection refused").0,
            "SSH connection refused"
        );
        assert_eq!(ssh_failure("ssh: connect to host 10.0.0.9 port 22: Connection timed out").0, "node unreachable");
    }

    #[test]
    fn shell_quoting_keeps_quotes_inside_one_word() {
        assert_eq!(sh_quote("a'b c"), r"'a'\''b c'");
    }
}
