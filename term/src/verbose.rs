//! `--verbose`: a log on stderr of what a run does to the machine, fed by the `log`
//! records the libraries emit under targets `airlock::…` (the installer's host seam:
//! commands started, files written, linked and removed; the bundler: files written and
//! registry requests). Other crates' records (rustls, ureq) are left out.
//!
//! The libraries log names, never contents: a secret file is logged by its path. Every
//! line still passes through the binary's redaction before it is printed, so a value
//! that should not be there (a credential in a command line) is replaced.

use log::{Level, LevelFilter, Log, Metadata, Record};

/// What each line passes through before it reaches stderr.
pub type Redact = Box<dyn Fn(&str) -> String + Send + Sync>;

struct VerboseLog {
    redact: Redact,
}

impl Log for VerboseLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= Level::Info && m.target().starts_with("airlock")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // `airlock::host` → `host:`.
        let topic = record.target().rsplit("::").next().unwrap_or("airlock");
        let line = (self.redact)(&format!("{topic}: {}", record.args()));
        crate::progress::eprint_line(&line);
    }

    fn flush(&self) {}
}

/// Starts the log (once per process; a second call changes nothing).
pub fn init(redact: Redact) {
    if log::set_boxed_logger(Box::new(VerboseLog { redact })).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// A redaction that replaces each of `values` (non-empty ones) with `[REDACTED]`.
pub fn replace_values(values: Vec<String>) -> Redact {
    let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    Box::new(move |line: &str| values.iter().fold(line.to_string(), |l, v| l.replace(v.as_str(), "[REDACTED]")))
}
