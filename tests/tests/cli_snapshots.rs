//! Snapshots of what users read from the real `airlock` and `airlock-bundler`: the
//! `--help` of every command, the install plan of the embedded example, `status` and
//! `verify` in text and JSON, and each error class of docs/exit-codes.md that can be
//! produced without a cluster, each with its exit code, stdout and stderr.
//!
//! A change of any of these shows as a failing test naming the snapshot and the diff.
//! When the change is intended, update the snapshots with one command and review them
//! (`cargo test -p airlock-tests` alone does not rebuild the binaries it runs, hence
//! the build first):
//!
//! ```sh
//! cargo build --workspace --bins && INSTA_UPDATE=always cargo test -p airlock-tests --test cli_snapshots
//! git diff tests/tests/snapshots/
//! ```
//!
//! With `CI=true` nothing is written: a difference or a missing snapshot fails.
//!
//! What varies from run to run or machine to machine is replaced before comparing
//! ([`normalise`], [`FILTERS`]): the temp directory (`[TMP]`), the checkout
//! (`[WORKSPACE]`), timestamps, durations, run ids (time and PID), the days left and
//! the sizes of certificates made at install time, the free disk space. The bundles
//! are built with a fixed `SOURCE_DATE_EPOCH`, so their sizes and digests (and the
//! manifest digest `status` shows) are kept: they are the same on every run.
//!
//! Exit codes covered here: 0, 1 input, 2 usage, 3 signature, 4 corrupt, 5 unsafe,
//! 6 input/output, 7 pending, 8 preflight, 9 ldap, 11 needs attention, 12 policy. Covered
//! elsewhere: 5 for every unsafe entry kind (format/tests/bad_bundles.rs), 10 expired
//! (tests/tests/pki.rs, needs openssl), 13 rolled back and 14 rollback failed
//! (tests/tests/upgrade.rs: they need the live recording double).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use airlock_tests::{build_demo_bundle, build_demo_variant, cargo_bin, demo_dir, workspace_root};

/// Built once for every test of this file, under `target/tmp`.
struct Fixture {
    /// Every path of this run is under here (`[TMP]` in the snapshots).
    dir: PathBuf,
    /// The embedded example's bundle, 1.0.0.
    bundle: PathBuf,
    /// The same spec at version 0.9.0: a downgrade from the installed 1.0.0.
    older: PathBuf,
    /// The example installed from `bundle`; no test changes it.
    installed: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // A static is never dropped: earlier runs' files go when their process is gone.
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("cli-snapshots-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["genuine", "older"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let copy = dir.join("answers.yaml");
            std::fs::copy(demo_dir().join("answers.yaml"), &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let spec = std::fs::read_to_string(demo_dir().join("bundle.yaml")).unwrap();
        let older_spec = spec.replace("version: 1.0.0\n", "version: 0.9.0\n");
        assert_ne!(older_spec, spec);
        let older = std::thread::spawn({
            let d = dir.join("older");
            move || build_demo_variant(&older_spec, &d, &[])
        });
        let bundle = build_demo_bundle(&dir.join("genuine"), &[]);
        let installed = dir.join("installed");
        install(&bundle, &installed);
        Fixture { older: older.join().unwrap(), dir, bundle, installed }
    })
}

/// A fresh, empty directory of the test `name` (the same path on every run).
fn scratch(name: &str) -> PathBuf {
    let d = fixture().dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pubkey() -> String {
    path(&demo_dir().join("keys/demo.pub"))
}

/// The demo answers as a site keeps an answers file with passwords: 0600 (a checkout's
/// copy is as readable as the umask made it, which would add a warning to the output).
/// [`fixture`] makes the copy before anything runs.
fn answers() -> String {
    path(&fixture_dir().join("answers.yaml"))
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-snapshots-{}", std::process::id()))
}

fn path(p: &Path) -> String {
    p.to_str().expect("paths of the tests are UTF-8").to_string()
}

/// A run of `bin`: what the user typed and everything they saw.
struct Run {
    line: String,
    output: Output,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// The transcript a snapshot holds: command line, exit code, stdout, stderr.
    fn transcript(&self) -> String {
        format!(
            "$ {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
            self.line,
            self.code().map_or("signal".to_string(), |c| c.to_string()),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// Runs the workspace binary `bin` with `args`, stdin closed, in an environment that
/// does not leak into what it prints: no AIRLOCK_* or registry variables (clap shows an
/// `env` value in `--help`), no colours, a fixed width and locale.
fn run(bin: &str, args: &[&str]) -> Run {
    let mut c = Command::new(cargo_bin(bin));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AIRLOCK_") || k.starts_with("CLICOLOR") || k == "REGISTRY_AUTH_FILE" {
            c.env_remove(&*k);
        }
    }
    c.env("NO_COLOR", "1").env("COLUMNS", "100").env("LC_ALL", "C").env("TZ", "UTC").args(args).stdin(Stdio::null());
    let output = c.output().unwrap_or_else(|e| panic!("run {bin}: {e}"));
    Run { line: format!("{bin} {}", args.join(" ")), output }
}

fn airlock(args: &[&str]) -> Run {
    run("airlock", args)
}

fn install(bundle: &Path, root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let r = airlock(&[
        "install",
        &path(bundle),
        "--pubkey",
        &pubkey(),
        "--answers",
        &answers(),
        "--root",
        &path(root),
        "--yes",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.transcript());
}

/// Replaces the paths of this run with stable placeholders; [`check`] then replaces
/// what else varies (its filters).
fn normalise(text: &str) -> String {
    let text = text.replace(&path(&fixture().dir), "[TMP]").replace(&path(&workspace_root()), "[WORKSPACE]");
    host_disk_neutral(&text)
}

/// The free-disk check measures the filesystem of the machine the tests run on (a
/// target root is a directory on it): a warning there says how full that machine's
/// disk is, not what the command does. Its outcome is shown as a pass: the text line
/// and hint of a warning go (its count moves to `passed`), the JSON detail is a
/// placeholder. What the check decides is pinned by the preflight tests with facts.
fn host_disk_neutral(text: &str) -> String {
    let mut out = Vec::new();
    let (mut warned, mut in_warning) = (false, false);
    for line in text.lines() {
        if in_warning && line.trim_start().starts_with("hint:") {
            continue;
        }
        in_warning = false;
        if line.starts_with("  warn       disk-space:") {
            (warned, in_warning) = (true, true);
            continue;
        }
        out.push(line.to_string());
    }
    let mut text = out.join("\n") + if text.ends_with('\n') { "\n" } else { "" };
    if warned {
        let counts = regex::Regex::new(r"(\d+) passed, (\d+) warnings").unwrap();
        text = counts
            .replace(&text, |c: &regex::Captures| {
                let n = |i: usize| c[i].parse::<u32>().unwrap();
                format!("{} passed, {} warnings", n(1) + 1, n(2) - 1)
            })
            .into_owned();
    }
    let json = regex::Regex::new(
        r#"("id": "disk-space",\n\s*"title": "[^"]*",\n\s*"status": )"(pass|warn)",(\n\s*"detail": )"[^\n]*"(,\n\s*"hint": "[^\n]*")?"#,
    )
    .unwrap();
    json.replace_all(&text, r#"${1}"pass",${3}"[HOST DISK]""#).into_owned()
}

/// What varies from run to run in the output, as insta filters (regex, replacement).
const FILTERS: &[(&str, &str)] = &[
    // RFC 3339 timestamps, also with a space or in UTC words (journal, certificates).
    (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2}| UTC)?", "[TIMESTAMP]"),
    // Durations: "after 3 s", "in 0.41s", "12ms".
    (r"\b\d+(\.\d+)? ?(ms|s|µs)\b", "[DURATION]"),
    // Run ids: start time, PID and a counter (`20261207T062120Z-27759-0`).
    (r"\b\d{8}T\d{6}Z-\d+-\d+\b", "[RUN-ID]"),
    // Days a certificate made at install time has left: one less after midnight, and
    // ten years hold two or three leap days.
    (r"cert +\d+ days", "cert [DAYS] days"),
    (r#""days_left": \d+"#, r#""days_left": "[DAYS]""#),
    // Sizes of files holding a certificate made at install time: a random serial and
    // signature are a few bytes longer or shorter from run to run.
    (r"(write \S+(\.crt|-ca\.yaml|truststore\.yaml) \(\d{4}, )\d+ bytes\)", "${1}[SIZE] bytes)"),
    // The site's public report key, made at install: its comment line names the random
    // key id without leading zeros (as minisign writes it), so a byte more or less.
    (r"(write \S+report-signing\.pub \(\d{4}, )\d+ bytes\)", "${1}[SIZE] bytes)"),
    // Free space of the disk the test runs on.
    (r"\d+(\.\d+)? GiB free", "[SIZE] free"),
];

/// Compares `text` (normalised and filtered) with the snapshot `name`.
fn check(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_omit_expression(true);
    settings.set_prepend_module_to_snapshot(true);
    for (pattern, replacement) in FILTERS {
        settings.add_filter(pattern, *replacement);
    }
    settings.bind(|| insta::assert_snapshot!(name.to_string(), normalise(text)));
}

// ----- --help of every command -----

/// The subcommands a `--help` lists under `Commands:` (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// `--help` of `bin words...` and of every subcommand below it, depth first.
fn help_tree(bin: &str, words: &mut Vec<String>, out: &mut Vec<(String, String)>) {
    let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
    args.push("--help");
    let r = run(bin, &args);
    assert_eq!(r.code(), Some(0), "{}", r.transcript());
    assert!(r.output.stderr.is_empty(), "{}", r.transcript());
    let help = String::from_utf8_lossy(&r.output.stdout).into_owned();
    let name = std::iter::once(bin.to_string()).chain(words.iter().cloned()).collect::<Vec<_>>().join("_");
    out.push((format!("help__{name}"), help.clone()));
    for sub in subcommands(&help) {
        words.push(sub);
        help_tree(bin, words, out);
        words.pop();
    }
}

#[test]
fn cli_snapshot_help_of_every_command_of_both_binaries() {
    let mut helps = Vec::new();
    for bin in ["airlock", "airlock-bundler"] {
        help_tree(bin, &mut Vec::new(), &mut helps);
    }
    // The walk found the commands (a change of clap's layout must not make it find none).
    for expected in
        ["help__airlock_install", "help__airlock_pki_renew", "help__airlock_ldap_test", "help__airlock-bundler_create"]
    {
        assert!(helps.iter().any(|(n, _)| n == expected), "{expected} not found: {helps:?}");
    }
    for (name, help) in &helps {
        check(name, help);
    }
    // Every command has its snapshot and no snapshot is left of a command that is gone.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            f.strip_prefix("cli_snapshots__").and_then(|f| f.strip_suffix(".snap")).map(String::from)
        })
        .filter(|n| n.starts_with("help__"))
        .collect();
    let commands: BTreeSet<String> = helps.into_iter().map(|(n, _)| n).collect();
    let stale: Vec<_> = on_disk.difference(&commands).collect();
    assert!(stale.is_empty(), "snapshots of commands that no longer exist (delete them): {stale:?}");
}

// ----- the install plan, status and verify -----

#[test]
fn cli_snapshot_install_dry_run_prints_the_plan_of_the_example() {
    let f = fixture();
    let root = scratch("dry-run");
    let r = airlock(&[
        "install",
        &path(&f.bundle),
        "--pubkey",
        &pubkey(),
        "--answers",
        &answers(),
        "--root",
        &path(&root),
        "--dry-run",
    ]);
    assert_eq!(r.code(), Some(0), "{}", r.transcript());
    check("install_dry_run", &r.transcript());
}

#[test]
fn cli_snapshot_status_of_a_fresh_install_in_text_and_json() {
    let root = path(&fixture().installed);
    let text = airlock(&["status", "--root", &root]);
    assert_eq!(text.code(), Some(0), "{}", text.transcript());
    check("status_text", &text.transcript());
    let json = airlock(&["status", "--root", &root, "--output", "json"]);
    assert_eq!(json.code(), Some(0), "{}", json.transcript());
    check("status_json", &json.transcript());
}

#[test]
fn cli_snapshot_verify_of_the_genuine_bundle_in_text_and_json() {
    let bundle = path(&fixture().bundle);
    let text = airlock(&["verify", &bundle, "--pubkey", &pubkey()]);
    assert_eq!(text.code(), Some(0), "{}", text.transcript());
    check("verify_genuine_text", &text.transcript());
    let json = airlock(&["verify", &bundle, "--pubkey", &pubkey(), "--output", "json"]);
    assert_eq!(json.code(), Some(0), "{}", json.transcript());
    check("verify_genuine_json", &json.transcript());
}

/// A copy of the genuine bundle and its sidecar files in a fresh directory `name`.
fn copy_of_bundle(name: &str) -> PathBuf {
    let f = fixture();
    let dir = scratch(name);
    for e in std::fs::read_dir(f.bundle.parent().unwrap()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir.join(f.bundle.file_name().unwrap())
}

#[test]
fn cli_snapshot_verify_of_a_bundle_with_a_flipped_byte_exits_4() {
    let bundle = copy_of_bundle("flipped-byte");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bundle, bytes).unwrap();
    let text = airlock(&["verify", &path(&bundle), "--pubkey", &pubkey()]);
    assert_eq!(text.code(), Some(4), "{}", text.transcript());
    check("exit_04_verify_flipped_byte_text", &text.transcript());
    let json = airlock(&["verify", &path(&bundle), "--pubkey", &pubkey(), "--output", "json"]);
    assert_eq!(json.code(), Some(4), "{}", json.transcript());
    check("exit_04_verify_flipped_byte_json", &json.transcript());
}

// ----- error classes (docs/exit-codes.md) -----

/// Asserts the exit code and compares the transcript with `exit_<code>_<name>`.
fn check_error(name: &str, code: i32, r: &Run) {
    assert_eq!(r.code(), Some(code), "{}", r.transcript());
    check(&format!("exit_{code:02}_{name}"), &r.transcript());
}

#[test]
fn cli_snapshot_usage_errors_exit_2() {
    let bundle = path(&fixture().bundle);
    check_error("unknown_flag", 2, &airlock(&["verify", &bundle, "--no-such-flag"]));
    check_error("missing_argument", 2, &airlock(&["install"]));
    check_error("unknown_command", 2, &airlock(&["instal"]));
    check_error("bundler_missing_key", 2, &run("airlock-bundler", &["create", "bundle.yaml", "-o", "out.airlock"]));
}

#[test]
fn cli_snapshot_input_errors_exit_1() {
    let f = fixture();
    let dir = scratch("input");
    let install = |answers: &str| {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        airlock(&[
            "install",
            &path(&f.bundle),
            "--pubkey",
            &pubkey(),
            "--answers",
            answers,
            "--root",
            &path(&root),
            "--yes",
        ])
    };
    check_error(
        "install_without_answers_or_terminal",
        1,
        &airlock(&["install", &path(&f.bundle), "--pubkey", &pubkey(), "--root", &path(&dir)]),
    );
    let unknown_key = dir.join("unknown-key.yaml");
    let text = std::fs::read_to_string(demo_dir().join("answers.yaml")).unwrap();
    std::fs::write(&unknown_key, format!("{text}colour: blue\n")).unwrap();
    check_error("answers_with_an_unknown_key", 1, &install(&path(&unknown_key)));
    // A value that would steer the terminal or forge a line is shown escaped.
    let control = dir.join("control-characters.yaml");
    std::fs::write(&control, text.replace("name: demo-node", "name: \"demo\\e[2J\\rairlock: verified\"")).unwrap();
    let r = install(&path(&control));
    let err = String::from_utf8_lossy(&r.output.stderr).into_owned();
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "{err:?}");
    check_error("answers_with_control_characters", 1, &r);
    // Not text at all: the operator's input to fix (1), not an unreadable disk (6).
    let latin1 = dir.join("latin1.yaml");
    std::fs::write(&latin1, b"profile: single-node\nnode:\n  name: m\xfcller\n").unwrap();
    check_error("answers_not_utf8", 1, &install(&path(&latin1)));
    let no_ldap = dir.join("no-ldap.yaml");
    std::fs::write(
        &no_ldap,
        "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: p.example.test}\n",
    )
    .unwrap();
    check_error("ldap_test_without_an_ldap_section", 1, &airlock(&["ldap", "test", "--answers", &path(&no_ldap)]));
    // The checksum file given for the bundle: a wrong argument (1), not a damaged bundle.
    let sidecar = format!("{}.sha256", path(&f.bundle));
    check_error(
        "verify_the_checksum_file_instead_of_the_bundle",
        1,
        &airlock(&["verify", &sidecar, "--pubkey", &pubkey()]),
    );
}

#[test]
fn cli_snapshot_missing_files_exit_6() {
    let f = fixture();
    let dir = scratch("missing");
    let gone = path(&dir.join("no-such.airlock"));
    check_error("verify_missing_bundle", 6, &airlock(&["verify", &gone, "--pubkey", &pubkey()]));
    let gone_answers = path(&dir.join("no-such-answers.yaml"));
    check_error(
        "install_missing_answers_file",
        6,
        &airlock(&[
            "install",
            &path(&f.bundle),
            "--pubkey",
            &pubkey(),
            "--answers",
            &gone_answers,
            "--root",
            &path(&dir),
        ]),
    );
}

/// A vendor key that did not sign the example (made once with `airlock-bundler keygen`).
const OTHER_PUBKEY: &str =
    "untrusted comment: minisign public key C4767BDF73103B9A\nRWSaOxBz33t2xODSExL2FoRCiud2Fq/IV754IA7RiEuwmJXMsylg+aWe\n";

/// The genuine bundle's tar stream re-packed after `edit` (one zstd frame, no sidecar).
fn repacked(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let raw = zstd::decode_all(std::fs::File::open(&fixture().bundle).unwrap()).unwrap();
    let mut raw = raw;
    edit(&mut raw);
    let out = scratch(name).join("demo.airlock");
    std::fs::write(&out, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    out
}

/// Where the tar entry `name` starts (its header) and ends (its padded data).
fn entry_range(raw: &[u8], name: &str) -> std::ops::Range<usize> {
    let mut ar = tar::Archive::new(raw);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let start = e.raw_header_position() as usize;
            let end = e.raw_file_position() as usize + (e.size() as usize).div_ceil(512) * 512;
            return start..end;
        }
    }
    panic!("no entry {name} in the bundle");
}

#[test]
fn cli_snapshot_signature_errors_exit_3() {
    let f = fixture();
    let dir = scratch("signature");
    let other = dir.join("other.pub");
    std::fs::write(&other, OTHER_PUBKEY).unwrap();
    check_error(
        "verify_with_another_vendors_key",
        3,
        &airlock(&["verify", &path(&f.bundle), "--pubkey", &path(&other)]),
    );
    check_error(
        "install_with_another_vendors_key",
        3,
        &airlock(&[
            "install",
            &path(&f.bundle),
            "--pubkey",
            &path(&other),
            "--answers",
            &answers(),
            "--root",
            &path(&dir),
        ]),
    );
    let unsigned = repacked("unsigned", |raw| {
        let sig = entry_range(raw, airlock_format::manifest::SIGNATURE_PATH);
        raw.drain(sig);
    });
    check_error("verify_unsigned_bundle", 3, &airlock(&["verify", &path(&unsigned), "--pubkey", &pubkey()]));
}

#[test]
fn cli_snapshot_unsafe_entry_exits_5() {
    // A symbolic link right after the signature, where an entry of the manifest belongs.
    let bundle = repacked("unsafe", |raw| {
        let sig = entry_range(raw, airlock_format::manifest::SIGNATURE_PATH);
        let mut h = tar::Header::new_ustar();
        h.set_path("files/README.txt").unwrap();
        h.set_link_name("/etc/passwd").unwrap();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        raw.splice(sig.end..sig.end, h.as_bytes().iter().copied());
    });
    check_error("verify_symlink_entry", 5, &airlock(&["verify", &path(&bundle), "--pubkey", &pubkey()]));
}

#[test]
fn cli_snapshot_install_check_on_a_fresh_root_exits_7() {
    let f = fixture();
    let root = scratch("pending");
    let r = airlock(&[
        "install",
        &path(&f.bundle),
        "--pubkey",
        &pubkey(),
        "--answers",
        &answers(),
        "--root",
        &path(&root),
        "--check",
    ]);
    check_error("install_check_fresh_root", 7, &r);
}

#[test]
fn cli_snapshot_failing_preflight_exits_8() {
    let f = fixture();
    let root = scratch("preflight");
    // Leftovers of an RKE2 install, which a K3s install must not mix with.
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::write(root.join("usr/local/bin/rke2"), "leftover\n").unwrap();
    let args = ["preflight", &path(&f.bundle), "--pubkey", &pubkey(), "--answers", &answers(), "--root", &path(&root)];
    check_error("preflight_foreign_install_text", 8, &airlock(&args));
    let mut json = args.to_vec();
    json.extend(["--output", "json"]);
    check_error("preflight_foreign_install_json", 8, &airlock(&json));
}

#[test]
fn cli_snapshot_ldap_test_against_a_closed_port_exits_9() {
    let dir = scratch("ldap");
    let file = dir.join("answers.yaml");
    // Port 1 on the loopback: nothing listens there, the connection is refused at once.
    std::fs::write(
        &file,
        "profile: single-node\nnode: {name: n1, ip: 192.0.2.10}\ncluster: {ingress_domain: p.example.test}\n\
         ldap:\n  url: ldap://127.0.0.1:1\n  bind_dn: cn=keycloak,dc=example,dc=test\n  bind_password: not-printed\n  \
         users_dn: ou=people,dc=example,dc=test\n  preset: openldap\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = airlock(&["ldap", "test", "--answers", &path(&file)]);
    check_error("ldap_test_closed_port_text", 9, &text);
    let json = airlock(&["ldap", "test", "--answers", &path(&file), "--output", "json"]);
    check_error("ldap_test_closed_port_json", 9, &json);
    for r in [&text, &json] {
        assert!(!r.transcript().contains("not-printed"), "the bind password leaked: {}", r.transcript());
    }
}

#[test]
fn cli_snapshot_an_older_release_is_refused_and_a_changed_file_needs_attention() {
    let f = fixture();
    let root = scratch("day2").join("root");
    install(&f.bundle, &root);
    let upgrade = airlock(&["upgrade", &path(&f.older), "--pubkey", &pubkey(), "--root", &path(&root), "--yes"]);
    check_error("upgrade_to_an_older_release", 12, &upgrade);

    std::fs::write(root.join("usr/local/bin/k3s-killall.sh"), "#!/bin/sh\n# edited on site\n").unwrap();
    std::fs::remove_file(root.join("var/lib/rancher/k3s/server/manifests/airlock-notes.yaml")).unwrap();
    check_error("status_drift_text", 11, &airlock(&["status", "--root", &path(&root)]));
    check_error("status_drift_json", 11, &airlock(&["status", "--root", &path(&root), "--output", "json"]));
}

#[test]
fn a_full_test_machine_disk_reads_as_a_pass_in_the_snapshots() {
    let warned = "  warn       disk-space: 1 GiB free, but the filesystem would then be 91% full\n             hint: free space there\n  FAIL       existing-install: found rke2\n             hint: remove it\npreflight (Install, k3s): 3 passed, 3 warnings, 1 failed, 0 overridden, 12 skipped\n";
    let passed = "  FAIL       existing-install: found rke2\n             hint: remove it\npreflight (Install, k3s): 4 passed, 2 warnings, 1 failed, 0 overridden, 12 skipped\n";
    assert_eq!(host_disk_neutral(warned), passed);
    assert_eq!(host_disk_neutral(passed), passed);
    let json = |status: &str, extra: &str| {
        format!("    {{\n      \"id\": \"disk-space\",\n      \"title\": \"Free disk\",\n      \"status\": \"{status}\",\n      \"detail\": \"1 GiB free\"{extra}\n    }},\n")
    };
    let want = "    {\n      \"id\": \"disk-space\",\n      \"title\": \"Free disk\",\n      \"status\": \"pass\",\n      \"detail\": \"[HOST DISK]\"\n    },\n";
    assert_eq!(host_disk_neutral(&json("warn", ",\n      \"hint\": \"free space\"")), want);
    assert_eq!(host_disk_neutral(&json("pass", "")), want);
}
