//! Shell completions and man pages, generated from the same clap definitions that
//! parse the command line, so they cannot fall behind it. `<bin> completions SHELL`
//! prints a completion script; the hidden `<bin> man DIR` writes one page per command
//! (`airlock.1`, `airlock-install.1`, `airlock-pki-renew.1`, ...), which
//! packaging/install-docs.sh installs.

use std::path::{Path, PathBuf};

use airlock_format::error::{IoContext, Result};
use clap::{Args, CommandFactory};

/// `completions SHELL`.
#[derive(Args, Clone, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for; the script is printed on stdout.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn print<C: CommandFactory>(&self) {
        let mut cmd = C::command();
        let name = cmd.get_name().to_string();
        clap_complete::generate(self.shell, &mut cmd, name, &mut std::io::stdout());
    }
}

/// `man DIR` (hidden).
#[derive(Args, Clone, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    pub dir: PathBuf,
}

impl ManArgs {
    /// Writes a page for the command and each of its subcommands; returns their paths.
    pub fn write<C: CommandFactory>(&self) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(&self.dir).at(&self.dir)?;
        let mut cmd = C::command();
        cmd.build();
        let mut written = Vec::new();
        write_pages(&cmd, &self.dir, &mut written)?;
        Ok(written)
    }
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name())));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page).at(&path)?;
    std::fs::write(&path, page).at(&path)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
