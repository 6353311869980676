//! The conventions both binaries share (docs/cli.md), through the real binaries:
//! `--output` is the format and `-o`/`--output-file` the file, old spellings still
//! parse (`create --output FILE` with a warning naming the new one; `support-bundle
//! --output FILE`, never a file spelling, fails with that tip), the
//! global flags `--quiet`, `--no-progress` and `--verbose` work before or after the
//! command, `--verbose` never shows a secret, and completions and man pages cover every
//! command. The text of `--help` is pinned in cli_snapshots.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use airlock_tests::{build_demo_bundle, cargo_bin, create_command, demo_dir, require_tool};

const BINS: [&str; 2] = ["airlock", "airlock-bundler"];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(cargo_bin(bin))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("AIRLOCK_KEY_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shown(o: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The demo bundle, built once for the tests of this file.
fn bundle() -> &'static Path {
    static B: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, b) = B.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let b = build_demo_bundle(d.path(), &[]);
        (d, b)
    });
    b
}

/// The commands `bin --help` lists (clap's `help` left out).
fn commands(bin: &str) -> Vec<String> {
    let help = text(&run(bin, &["--help"]).stdout);
    help.split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn support_bundle_output_with_a_file_name_is_a_usage_error_whose_tip_names_output_file() {
    let o = run("airlock", &["support-bundle", "--output", "support.tar.gz"]);
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
    let err = text(&o.stderr);
    assert!(err.contains("tip: --output is the format (text or json)"), "{err}");
    assert!(err.contains("-o FILE (long form --output-file FILE)"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn create_output_with_a_file_name_still_names_the_bundle_file_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let spec = demo_dir().join("bundle.yaml");
    let key = demo_dir().join("keys/demo.key");
    for (flags, name) in [(vec!["--output"], "old.airlock"), (vec![], "old-eq.airlock")] {
        let out = d.path().join(name);
        let mut args =
            vec!["create".to_string(), s(&spec).to_string(), "--key".into(), s(&key).to_string(), "-q".into()];
        if flags.is_empty() {
            args.push(format!("--output={}", out.display()));
        } else {
            args.extend(["--output".to_string(), s(&out).to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run("airlock-bundler", &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", shown(&o));
        assert!(out.is_file(), "{args:?} wrote no bundle at {}", out.display());
        let err = text(&o.stderr);
        assert!(err.contains("`create --output FILE` is an old spelling; write -o FILE"), "{err}");
    }
}

#[test]
fn old_and_new_spellings_of_the_file_and_format_flags_all_parse() {
    let missing = "/nonexistent/bundle.yaml";
    // Past parsing, every spelling meets the same missing spec: exit 6, not 2 (usage).
    for flags in [
        &["-o", "out.airlock", "--output-format", "json"][..],
        &["--output-file", "out.airlock", "--output", "json"],
        &["-o", "out.airlock", "-q", "--no-progress"],
        &["-o", "out.airlock", "-v"],
    ] {
        let mut args = vec!["create", missing, "--key", "k"];
        args.extend(flags);
        let o = run("airlock-bundler", &args);
        assert_eq!(o.status.code(), Some(6), "{args:?}: {}", shown(&o));
    }
    // Global flags before the command, too.
    let o = run("airlock-bundler", &["--output", "json", "-q", "create", missing, "-o", "x", "--key", "k"]);
    assert_eq!(o.status.code(), Some(6), "{}", shown(&o));
    for file in [["-o", "s.tar.gz"], ["--output-file", "s.tar.gz"]] {
        let o = run("airlock", &["--no-progress", "support-bundle", file[0], file[1], "--root", "/nonexistent"]);
        assert_eq!(o.status.code(), Some(6), "{}", shown(&o));
    }
    assert_eq!(
        run("airlock", &["-q", "-v", "status"]).status.code(),
        Some(2),
        "--quiet and --verbose exclude each other"
    );
}

#[test]
fn quiet_prints_no_report_but_keeps_the_exit_code_json_and_errors() {
    let b = s(bundle());
    let pubkey = demo_dir().join("keys/demo.pub");
    let loud = run("airlock", &["verify", b, "--pubkey", s(&pubkey)]);
    assert_eq!(loud.status.code(), Some(0), "{}", shown(&loud));
    assert!(!loud.stdout.is_empty());
    let quiet = run("airlock", &["verify", b, "--pubkey", s(&pubkey), "-q"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", shown(&quiet));
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty(), "{}", shown(&quiet));
    let json = run("airlock", &["-q", "--output", "json", "verify", b, "--pubkey", s(&pubkey)]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON under --quiet");
    assert_eq!(v["exit_code"], 0);

    // Another vendor's key: exit 3 and the error still on stderr.
    let d = tempfile::tempdir().unwrap();
    let (public, secret) = (d.path().join("other.pub"), d.path().join("other.key"));
    let k = run("airlock-bundler", &["keygen", "-W", "-p", s(&public), "-s", s(&secret), "--output", "json"]);
    let key: serde_json::Value = serde_json::from_slice(&k.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&k)));
    assert_eq!(key["public"], s(&public));
    let bad = run("airlock", &["verify", b, "--pubkey", s(&public), "--quiet"]);
    assert_eq!(bad.status.code(), Some(3), "{}", shown(&bad));
    assert!(bad.stdout.is_empty(), "{}", shown(&bad));
    assert!(text(&bad.stderr).contains("error"), "{}", shown(&bad));
}

/// `airlock install` of the demo bundle into `root` (made here) with `extra` flags.
fn install_into(root: &Path, extra: &[&str]) -> Output {
    std::fs::create_dir_all(root).unwrap();
    let (pubkey, answers) = (demo_dir().join("keys/demo.pub"), demo_dir().join("answers.yaml"));
    let mut args = vec!["install", s(bundle()), "--pubkey", s(&pubkey), "--answers", s(&answers), "--root", s(root)];
    args.extend(extra);
    run("airlock", &args)
}

#[test]
fn verbose_install_logs_the_files_it_writes_and_never_a_generated_secret() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let o = install_into(&root, &["--yes", "-v"]);
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
    let log = text(&o.stderr);
    assert!(log.lines().any(|l| l.starts_with("host: wrote /etc/")), "{log}");
    assert!(log.lines().any(|l| l.starts_with("host: created /")), "{log}");
    let secrets = root.join("var/lib/airlock/secrets");
    let mut checked = 0;
    for e in walkdir::WalkDir::new(&secrets).into_iter().map(|e| e.unwrap()).filter(|e| e.file_type().is_file()) {
        let target = Path::new("/").join(e.path().strip_prefix(&root).unwrap());
        assert!(
            log.contains(&format!("host: wrote {} (", target.display())) && log.contains(", secret)"),
            "the write of {} is logged as a secret:\n{log}",
            target.display()
        );
        let value = std::fs::read_to_string(e.path()).unwrap();
        let value = value.trim();
        if !value.is_empty() {
            assert!(!log.contains(value), "{} appears in the --verbose log", target.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "the install generated secrets under {}", secrets.display());
    // Without -v, none of it.
    let o = install_into(&d.path().join("root2"), &["--dry-run"]);
    assert!(!text(&o.stderr).contains("host: "), "{}", shown(&o));
}

#[test]
fn verbose_create_logs_the_files_it_writes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("v.airlock");
    let o = create_command(&demo_dir().join("bundle.yaml"), &out, &demo_dir().join("keys/demo.key"))
        .arg("--verbose")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
    let log = text(&o.stderr);
    assert!(log.contains(&format!("bundler: wrote {} (", out.display())), "{log}");
    assert!(log.contains(&format!("bundler: wrote {}.sha256", out.display())), "{log}");
}

#[test]
fn bash_completions_parse_and_name_every_command() {
    let Some(bash) = require_tool("bash") else { return };
    let d = tempfile::tempdir().unwrap();
    for bin in BINS {
        let o = run(bin, &["completions", "bash"]);
        assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
        let script = d.path().join(format!("{bin}.bash"));
        std::fs::write(&script, &o.stdout).unwrap();
        let check = Command::new(&bash).arg("-n").arg(&script).output().unwrap();
        assert!(check.status.success(), "bash -n {bin}: {}", text(&check.stderr));
        let script = text(&o.stdout);
        for c in commands(bin) {
            assert!(script.contains(&c), "{bin} completions lack `{c}`");
        }
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let o = run(bin, &["completions", shell]);
            assert!(o.status.success() && !o.stdout.is_empty(), "{bin} completions {shell}: {}", shown(&o));
        }
    }
}

#[test]
fn man_pages_render_and_cover_every_command() {
    let d = tempfile::tempdir().unwrap();
    for bin in BINS {
        let o = run(bin, &["man", s(d.path())]);
        assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
        let mut pages = vec![bin.to_string()];
        pages.extend(commands(bin).iter().map(|c| format!("{bin}-{c}")));
        for page in pages {
            let path = d.path().join(format!("{page}.1"));
            let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(roff.starts_with(".ie \\n(.g .ds Aq") || roff.contains(".TH"), "{page}: {roff}");
            assert!(roff.contains(&format!(".TH {page} 1")), "{page}: no .TH header");
        }
        let page = d.path().join(format!("{bin}.1"));
        if let Some(groff) = require_tool("groff") {
            let r = Command::new(groff).args(["-man", "-Tutf8", "-P-cbou"]).arg(&page).output().unwrap();
            assert!(r.status.success(), "{}", text(&r.stderr));
            let shown = text(&r.stdout);
            assert!(shown.contains("NAME") && shown.contains("SYNOPSIS"), "{shown}");
            for c in commands(bin) {
                assert!(shown.contains(&format!("{bin}-{c}(1)")) || shown.contains(&c), "{bin}.1 lacks `{c}`");
            }
        }
    }
}

#[test]
fn packaging_installs_man_pages_and_completions_of_both_binaries() {
    let d = tempfile::tempdir().unwrap();
    let bin_dir = cargo_bin("airlock").parent().unwrap().to_path_buf();
    let script = airlock_tests::workspace_root().join("packaging/install-docs.sh");
    if let Some(shellcheck) = require_tool("shellcheck") {
        let o = Command::new(shellcheck).arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", shown(&o));
    }
    let o = Command::new("bash")
        .arg(&script)
        .arg("/usr")
        .env("DESTDIR", d.path())
        .env("AIRLOCK_BIN_DIR", &bin_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    let share = d.path().join("usr/share");
    for bin in BINS {
        assert!(share.join(format!("man/man1/{bin}.1.gz")).is_file(), "{bin}.1.gz");
        for c in commands(bin) {
            assert!(share.join(format!("man/man1/{bin}-{c}.1.gz")).is_file(), "{bin}-{c}.1.gz");
        }
        assert!(share.join(format!("bash-completion/completions/{bin}")).is_file());
        assert!(share.join(format!("zsh/site-functions/_{bin}")).is_file());
        assert!(share.join(format!("fish/vendor_completions.d/{bin}.fish")).is_file());
    }
}

/// Every entry of a help text's `Commands:`, `Arguments:` and options sections, with
/// whether it has a description (on its line, or indented on the next one).
fn help_entries(help: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') {
            in_list = line.ends_with(':') && !line.starts_with("Usage");
            continue;
        }
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if !in_list || indent > 6 || body.is_empty() {
            continue;
        }
        let (spec, rest) = body.split_once("  ").unwrap_or((body, ""));
        let next = lines.get(i + 1).copied().unwrap_or("");
        // "[default: /]" alone is not a description.
        let said = |t: &str| !t.trim().is_empty() && !t.trim().starts_with('[');
        let described = said(rest) || (next.starts_with("          ") && said(next));
        out.push((spec.trim().to_string(), described));
    }
    out
}

#[test]
fn every_command_flag_and_argument_in_help_has_a_description() {
    let mut seen = 0;
    for bin in BINS {
        let mut todo: Vec<Vec<String>> = vec![Vec::new()];
        while let Some(path) = todo.pop() {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            let o = run(bin, &args);
            assert_eq!(o.status.code(), Some(0), "{bin} {args:?}: {}", shown(&o));
            let help = text(&o.stdout);
            let mut in_commands = false;
            for line in help.lines() {
                if !line.starts_with(' ') {
                    in_commands = line == "Commands:";
                } else if in_commands {
                    let name = line.split_whitespace().next().unwrap().to_string();
                    if name != "help" {
                        let mut sub = path.clone();
                        sub.push(name);
                        todo.push(sub);
                    }
                }
            }
            for (entry, described) in help_entries(&help) {
                seen += 1;
                assert!(described, "`{bin} {}` --help: `{entry}` has no description", path.join(" "));
            }
        }
    }
    assert!(seen > 100, "only {seen} help entries found: the parser no longer reads the help format");
}

#[test]
fn a_relative_root_is_taken_against_the_working_directory_and_named_absolute() {
    let d = tempfile::tempdir().unwrap();
    let (pubkey, answers) = (demo_dir().join("keys/demo.pub"), demo_dir().join("answers.yaml"));
    let o = Command::new(cargo_bin("airlock"))
        .args(["install", s(bundle()), "--pubkey", s(&pubkey), "--answers", s(&answers), "--root", "site/s1", "--yes"])
        .current_dir(d.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
    let root = d.path().join("site/s1");
    assert!(root.join("var/lib/airlock/installed.json").is_file(), "{}", shown(&o));
    assert!(text(&o.stdout).contains(&format!("into {}:", root.display())), "{}", shown(&o));
    let o = Command::new(cargo_bin("airlock"))
        .args(["status", "--root", "site/s1"])
        .current_dir(d.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", shown(&o));
}
