//! The terminal: the wizard's prompts, confirmations and progress bars. Only the
//! binary draws; the library reports through `Prompter` and `Reporter`.

use std::io::IsTerminal;
use std::sync::Mutex;

use airlock_format::error::{Error, Result};
use airlock_format::report::{Event, Reporter, Silent};

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

/// Progress on a TTY (stderr); nothing otherwise.
pub struct Progress {
    bar: Option<Mutex<Option<indicatif::ProgressBar>>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self { bar: (enabled && std::io::stderr().is_terminal()).then(|| Mutex::new(None)) }
    }
    pub fn reporter(&self) -> &dyn Reporter {
        if self.bar.is_some() {
            self
        } else {
            &Silent
        }
    }
    pub fn finish(&self) {
        if let Some(m) = &self.bar {
            if let Some(b) = m.lock().expect("progress lock").take() {
                b.finish_and_clear();
            }
        }
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event<'_>) {
        let Some(m) = &self.bar else { return };
        let mut g = m.lock().expect("progress lock");
        match event {
            Event::Phase { name, total } => {
                if let Some(b) = g.take() {
                    b.finish_and_clear();
                }
                let b = indicatif::ProgressBar::new(total.unwrap_or(0)).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:20} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                b.set_message(name.to_string());
                *g = Some(b);
            }
            Event::Progress { bytes } => {
                if let Some(b) = g.as_ref() {
                    b.inc(bytes)
                }
            }
            Event::Warning(w) => eprintln!("warning: {w}"),
            // The installer downloads nothing; transfers are the bundler's.
            Event::Entry { .. }
            | Event::TransferStart { .. }
            | Event::TransferProgress { .. }
            | Event::TransferDone { .. } => {}
        }
    }
}
