//! The terminal: the wizard's prompts and confirmations. Only the binary asks; the
//! library asks through `Prompter`. Progress bars are airlock-term's, shared with the
//! bundler.

use std::io::IsTerminal;

use airlock_format::error::{Error, Result};

/// The host name to suggest for `node.name` (read, not changed).
pub fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty())
}

/// Asks `question` (default: no). An input error when no terminal is there to ask on,
/// with the hint to review with `--dry-run` and pass `--yes`.
pub fn confirm(command: &str, what: &str, question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::input(command, format!("{what} needs confirming and there is no terminal to ask on"))
            .with_hint("review it with --dry-run, then pass --yes"));
    }
    Ok(dialoguer::Confirm::new().with_prompt(question).default(false).interact().unwrap_or(false))
}

/// The wizard's front end: dialoguer prompts on the terminal. Validation is the
/// library's (the same as for answers files); this only draws and reads.
pub struct TerminalPrompter;

impl airlock_installer::site::answers::Prompter for TerminalPrompter {
    fn answer(&mut self, p: &airlock_installer::site::answers::Prompt<'_>) -> Result<String> {
        let io = |e: dialoguer::Error| Error::input(p.key.clone(), format!("reading the answer failed: {e}"));
        if !p.help.is_empty() {
            println!("  {}", p.help);
        }
        if !p.choices.is_empty() {
            let default = p.default.as_ref().and_then(|d| p.choices.iter().position(|c| c == d)).unwrap_or(0);
            let i = dialoguer::Select::new()
                .with_prompt(&p.text)
                .items(&p.choices)
                .default(default)
                .interact()
                .map_err(io)?;
            return Ok(p.choices[i].clone());
        }
        if p.secret {
            return dialoguer::Password::new()
                .with_prompt(&p.text)
                .allow_empty_password(!p.required)
                .interact()
                .map_err(io);
        }
        let mut input = dialoguer::Input::<String>::new().with_prompt(&p.text).allow_empty(true);
        if let Some(d) = &p.default {
            input = input.default(d.clone());
        }
        input.interact_text().map_err(io)
    }

    fn rejected(&mut self, problem: &airlock_installer::site::answers::Problem) {
        eprintln!("  not taken: {problem}");
    }

    fn note(&mut self, text: &str) {
        for line in text.lines() {
            println!("  {line}");
        }
    }
}

/// What Ctrl-C prints before the run exits (130): set by [`say_resume_on_interrupt`].
static RESUME_NOTE: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();

extern "C" fn interrupted(_: nix::libc::c_int) {
    // Only async-signal-safe calls here: write(2) of bytes made beforehand, _exit(2).
    if let Some(note) = RESUME_NOTE.get() {
        // SAFETY: `note` is a live, immutable buffer of `note.len()` bytes.
        unsafe { nix::libc::write(2, note.as_ptr().cast(), note.len()) };
    }
    // SAFETY: _exit ends the process without running anything else.
    unsafe { nix::libc::_exit(130) }
}

/// From now on, Ctrl-C (SIGINT) or SIGTERM ends the run saying how to resume it: the
/// engine journals every step before and after it, so stopping anywhere leaves the site
/// resumable, and the same command line continues where it stopped. Not while the
/// wizard asks (a prompt owns the terminal then; Ctrl-C there ends as it always did).
pub fn say_resume_on_interrupt(command: &str) {
    let line: Vec<String> = std::env::args().map(|a| shell_word(&a)).collect();
    let note = format!(
        "\ninterrupted: the {command} stopped; what it did is journaled and nothing is lost\n  \
         hint: run the same command again to continue where it stopped: {}\n",
        line.join(" ")
    );
    if RESUME_NOTE.set(note.into_bytes().into_boxed_slice()).is_err() {
        return;
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(interrupted),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        // SAFETY: the handler above only calls async-signal-safe functions.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

/// Set by the first Ctrl-C or SIGTERM of a `registry push`.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn stop_requested(_: nix::libc::c_int) {
    // An atomic store is async-signal-safe.
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// From now on, the first Ctrl-C (SIGINT) or SIGTERM asks the push to stop at the next
/// chunk boundary: the registry then holds whole chunks only, and the next run
/// continues each upload from there (a cut inside a chunk makes registries built on
/// distribution, Harbor among them, drop the whole upload). A second signal ends the
/// process at once (the handler resets itself).
pub fn stop_at_chunk_boundary_on_interrupt() -> &'static std::sync::atomic::AtomicBool {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(stop_requested),
        SaFlags::SA_RESETHAND | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
    &STOP
}

/// `word` as a shell reads it back: quoted unless it is plain.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
