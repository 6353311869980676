//! The flags both binaries take on every command (docs/cli.md), and parsing that
//! explains the one spelling whose meaning changed: `--output FILE`.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, ValueEnum};

/// The format of what a command prints on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `--output`, `--quiet`, `--no-progress`, `--verbose`: accepted before or after the
/// command, the same in `airlock` and `airlock-bundler`.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The format of what is printed on stdout (files are -o/--output-file).
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = Output::Text, alias = "output-format")]
    pub output: Output,
    /// No progress, no text report: the exit code tells. Errors, warnings and JSON still print.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No progress bars (drawn only when stderr is a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Log on stderr what runs: commands and files written, secrets redacted.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
}

/// The hint for `--output` given something other than a format: until the flags were
/// made the same in both binaries, `airlock-bundler create --output FILE` named the
/// bundle file.
pub const OUTPUT_FILE_TIP: &str =
    "--output is the format (text or json); the file to write is -o FILE (long form --output-file FILE)";

/// `C::parse()`, except that `--output` given a file name fails (exit 2, a usage
/// error) with [`OUTPUT_FILE_TIP`] instead of only listing the formats.
pub fn parse<C: Parser>() -> C {
    C::try_parse().unwrap_or_else(|e| with_output_tip(e).exit())
}

/// `C::parse()` for a binary in which `COMMAND --output FILE` once named the file the
/// command writes (`airlock-bundler create`, before the flags were made the same in
/// both binaries). That spelling keeps working: given something other than a format
/// on that command, `--output` is read as `--output-file`, with a warning on stderr.
/// Anywhere else it fails as [`parse`] does.
pub fn parse_keeping_output_file<C: Parser>(command: &str) -> C {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match C::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => match output_as_file(&args, command) {
            Some(fixed) if is_bad_output(&e) => {
                let c = C::try_parse_from(&fixed).unwrap_or_else(|e| with_output_tip(e).exit());
                #[allow(clippy::print_stderr)] // the binaries' terminal side
                {
                    eprintln!("warning: `{command} --output FILE` is an old spelling; write -o FILE (--output is the format, text or json)");
                }
                c
            }
            _ => with_output_tip(e).exit(),
        },
    }
}

fn is_bad_output(e: &clap::Error) -> bool {
    e.kind() == ErrorKind::InvalidValue
        && matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::String(a)) if a.starts_with("--output "))
}

/// `args` with every `--output X` / `--output=X` whose X is not a format turned into
/// `--output-file X`, when `command` is among them; `None` when nothing changes.
fn output_as_file(args: &[std::ffi::OsString], command: &str) -> Option<Vec<std::ffi::OsString>> {
    if !args.iter().skip(1).any(|a| a == command) {
        return None;
    }
    let is_format = |v: &str| Output::from_str(v, true).is_ok();
    let mut out = Vec::with_capacity(args.len());
    let mut changed = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--output") => match it.next() {
                Some(v) if !v.to_str().is_some_and(is_format) => {
                    out.extend(["--output-file".into(), v.clone()]);
                    changed = true;
                }
                Some(v) => out.extend([a.clone(), v.clone()]),
                None => out.push(a.clone()),
            },
            Some(s) if s.starts_with("--output=") && !is_format(&s["--output=".len()..]) => {
                out.push(format!("--output-file={}", &s["--output=".len()..]).into());
                changed = true;
            }
            _ => out.push(a.clone()),
        }
    }
    changed.then_some(out)
}

/// Adds [`OUTPUT_FILE_TIP`] to an invalid value of `--output`.
pub fn with_output_tip(mut e: clap::Error) -> clap::Error {
    let on_output =
        matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::String(a)) if a.starts_with("--output "));
    if e.kind() == ErrorKind::InvalidValue && on_output {
        e.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![OUTPUT_FILE_TIP.into()]));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
    }

    #[test]
    fn output_takes_a_format_and_its_old_bundler_spelling() {
        assert_eq!(Cli::try_parse_from(["x", "--output", "json"]).unwrap().global.output, Output::Json);
        assert_eq!(Cli::try_parse_from(["x", "--output-format", "json"]).unwrap().global.output, Output::Json);
        assert_eq!(Cli::try_parse_from(["x"]).unwrap().global.output, Output::Text);
    }

    #[test]
    fn old_output_file_spelling_becomes_output_file_on_its_command_only() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            output_as_file(&args(&["b", "create", "s.yaml", "--output", "app.airlock", "--output", "json"]), "create"),
            Some(args(&["b", "create", "s.yaml", "--output-file", "app.airlock", "--output", "json"]))
        );
        assert_eq!(
            output_as_file(&args(&["b", "create", "--output=app.airlock"]), "create"),
            Some(args(&["b", "create", "--output-file=app.airlock"]))
        );
        assert_eq!(output_as_file(&args(&["b", "create", "--output", "json"]), "create"), None);
        assert_eq!(output_as_file(&args(&["b", "verify", "--output", "x.airlock"]), "create"), None);
    }

    #[test]
    fn output_given_a_file_name_fails_with_a_tip_naming_output_file() {
        let e = with_output_tip(Cli::try_parse_from(["x", "--output", "app.airlock"]).err().unwrap());
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(OUTPUT_FILE_TIP), "{e}");
        let other = with_output_tip(Cli::try_parse_from(["x", "--nope"]).err().unwrap());
        assert!(!other.to_string().contains(OUTPUT_FILE_TIP), "{other}");
    }
}
