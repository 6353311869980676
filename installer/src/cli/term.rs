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
