//! The terminal side of Airlock's two binaries, `airlock` and `airlock-bundler`: the
//! flags every command has ([`GlobalArgs`]), what reaches stdout in text mode
//! ([`say!`], silenced by `--quiet`), progress bars ([`Progress`]), the `--verbose` log
//! ([`verbose`]), and shell completions and man pages ([`docs`]).
//!
//! Only the binaries depend on this crate. The libraries never print: they report
//! through `airlock_format::report::Reporter` and, for `--verbose`, the `log` facade;
//! this crate decides how either reaches a terminal. docs/cli.md is the user's side.

pub mod args;
pub mod docs;
mod progress;
pub mod verbose;

use std::sync::atomic::{AtomicBool, Ordering};

pub use args::{parse, GlobalArgs, Output};
pub use progress::Progress;

static QUIET: AtomicBool = AtomicBool::new(false);

/// What the global flags decided for this run; made once in `main` by [`Ui::init`].
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub output: Output,
    pub quiet: bool,
    progress: bool,
}

impl Ui {
    /// Applies the global flags: `--quiet` for [`say!`], and `--verbose` starts the log
    /// on stderr with `redact` applied to every line.
    pub fn init(g: &GlobalArgs, redact: verbose::Redact) -> Self {
        QUIET.store(g.quiet, Ordering::Relaxed);
        if g.verbose {
            verbose::init(redact);
        }
        Self { output: g.output, quiet: g.quiet, progress: !g.quiet && !g.no_progress }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Progress bars for one phase of work: drawn only for text output on a terminal
    /// (stderr), and neither with `--quiet` nor `--no-progress`.
    pub fn progress(&self) -> Progress {
        Progress::new(self.progress && self.output == Output::Text)
    }

    /// The report as JSON on stdout (always, `--quiet` or not: it was asked for), or as
    /// text through `text`, whose lines [`say!`] drops under `--quiet`.
    pub fn show<T: serde::Serialize + ?Sized>(&self, value: &T, text: impl FnOnce(&T)) {
        match self.output {
            Output::Json => print_json(value),
            Output::Text => text(value),
        }
    }
}

/// Whether `--quiet` was given: text reports and informational lines are dropped.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A report as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    let text = serde_json::to_string_pretty(value).expect("reports always serialise");
    out(format_args!("{text}\n"));
}

/// A line of a text report or an informational line on stdout; nothing under
/// `--quiet`. Errors and warnings go to stderr with `eprintln!` and are never dropped.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::quiet() {
            $crate::out(format_args!("{}\n", format_args!($($arg)*)));
        }
    };
}

/// `n` and the noun that goes with it, for report lines: "1 file", "3 files".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Writes to stdout, ignoring a reader that went away (`airlock status | head`): the
/// report is lost, not the run. `println!` would panic there, mid-install.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_fmt(text);
}

#[cfg(test)]
mod count_tests {
    #[test]
    fn one_takes_the_singular_every_other_number_the_plural() {
        assert_eq!(super::count(1, "file", "files"), "1 file");
        assert_eq!(super::count(0, "file", "files"), "0 files");
        assert_eq!(super::count(2, "value", "values"), "2 values");
    }
}
